//! A lock-free log-linear histogram of nanosecond durations, for cleanup lag (death ->
//! every entry reclaimed). Recording is one `fetch_add`; values are kept within 12.5%
//! (8 linear sub-buckets per power of two).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const LINEAR: usize = 16;
const SUB_BITS: u32 = 3;
const BUCKETS: usize = LINEAR + (64 - 4) * (1 << SUB_BITS);

pub(crate) struct LagHistogram {
    counts: Box<[AtomicU64]>,
}

fn index(v: u64) -> usize {
    if v < LINEAR as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) as usize & ((1 << SUB_BITS) - 1);
    LINEAR + (e as usize - 4) * (1 << SUB_BITS) + sub
}

/// The largest value that lands in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < LINEAR {
        return i as u64;
    }
    let e = (i - LINEAR) / (1 << SUB_BITS) + 4;
    let sub = ((i - LINEAR) % (1 << SUB_BITS)) as u64;
    let base = 1u64 << e;
    let step = base >> SUB_BITS;
    (base as u128 + (sub as u128 + 1) * step as u128 - 1).min(u64::MAX as u128) as u64
}

impl LagHistogram {
    pub(crate) fn new() -> LagHistogram {
        LagHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[cfg(test)]
    fn record(&self, d: Duration) {
        self.record_many(&[d.as_nanos().min(u64::MAX as u128) as u64]);
    }

    /// Records many lags (ns), touching each bucket once: writers record whole batches
    /// of deaths, and sharing a bucket's cache line per death would slow them down.
    pub(crate) fn record_many(&self, lags: &[u64]) {
        match lags {
            [] => {}
            [one] => {
                self.counts[index(*one)].fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                let mut idx: Vec<usize> = lags.iter().map(|&v| index(v)).collect();
                idx.sort_unstable();
                for run in idx.chunk_by(|a, b| a == b) {
                    self.counts[run[0]].fetch_add(run.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }

    pub(crate) fn snapshot(&self) -> CleanupLag {
        CleanupLag {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// Cleanup lag of dead processes: from death to the last of their entries removed from
/// every shard (SPEC I6, L3). From [`Registry::cleanup_lag`](crate::Registry::cleanup_lag).
#[derive(Clone)]
pub struct CleanupLag {
    counts: Vec<u64>,
}

/// A summary (count, p50, p99, max), not the histogram's buckets.
impl std::fmt::Debug for CleanupLag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanupLag")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish()
    }
}

impl CleanupLag {
    /// Deaths fully reclaimed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let before = registry.cleanup_lag();
    /// let p = registry.spawn();
    /// let ns = registry.namespace("agents")?;
    /// registry.register(&p, &roster::Key::new(ns, 1), &roster::Metadata::new())?;
    /// drop(p);
    /// while registry.cleanup_lag().count() == before.count() {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// let lag = registry.cleanup_lag();
    /// assert_eq!(lag.count(), before.count() + 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The lag at quantile `q` (0.0..=1.0), within 12.5%; zero when nothing was recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let before = registry.cleanup_lag();
    /// let p = registry.spawn();
    /// let ns = registry.namespace("agents")?;
    /// registry.register(&p, &roster::Key::new(ns, 1), &roster::Metadata::new())?;
    /// drop(p);
    /// while registry.cleanup_lag().count() == before.count() {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// let lag = registry.cleanup_lag();
    /// assert!(lag.quantile(0.5) <= lag.max());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_nanos(upper(i));
            }
        }
        Duration::from_nanos(u64::MAX)
    }

    /// Deaths whose lag exceeded `window` (bucket precision: a lag up to 12.5% above
    /// `window` may count as within it).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let before = registry.cleanup_lag();
    /// let p = registry.spawn();
    /// let ns = registry.namespace("agents")?;
    /// registry.register(&p, &roster::Key::new(ns, 1), &roster::Metadata::new())?;
    /// drop(p);
    /// while registry.cleanup_lag().count() == before.count() {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// let lag = registry.cleanup_lag();
    /// assert_eq!(lag.over(Duration::from_secs(3600)), 0);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn over(&self, window: Duration) -> u64 {
        let w = window.as_nanos().min(u64::MAX as u128) as u64;
        let first = index(w) + 1;
        self.counts.iter().skip(first).sum()
    }

    /// What was recorded after `earlier` (a snapshot of the same registry).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let before = registry.cleanup_lag();
    /// let p = registry.spawn();
    /// let ns = registry.namespace("agents")?;
    /// registry.register(&p, &roster::Key::new(ns, 1), &roster::Metadata::new())?;
    /// drop(p);
    /// while registry.cleanup_lag().count() == before.count() {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// let lag = registry.cleanup_lag();
    /// assert_eq!(lag.since(&before).count(), 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn since(&self, earlier: &CleanupLag) -> CleanupLag {
        CleanupLag {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }

    /// The largest lag recorded (within 12.5%).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let before = registry.cleanup_lag();
    /// let p = registry.spawn();
    /// let ns = registry.namespace("agents")?;
    /// registry.register(&p, &roster::Key::new(ns, 1), &roster::Metadata::new())?;
    /// drop(p);
    /// while registry.cleanup_lag().count() == before.count() {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// let lag = registry.cleanup_lag();
    /// assert!(lag.max() >= lag.quantile(0.99));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn max(&self) -> Duration {
        self.counts
            .iter()
            .rposition(|&c| c > 0)
            .map_or(Duration::ZERO, |i| Duration::from_nanos(upper(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 40, u64::MAX]) {
            let i = index(v);
            assert!(i >= last || v == 0, "{v}");
            last = i;
            assert!(upper(i) >= v, "{v} above its bucket {}", upper(i));
            assert!(upper(i) - v <= v / 8 + 1, "{v} -> {}", upper(i));
        }
    }

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let h = LagHistogram::new();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        let p50 = s.quantile(0.5).as_secs_f64() * 1e3;
        assert!((50.0..=57.0).contains(&p50), "{p50}");
        assert!(s.max() >= Duration::from_millis(100));
        assert_eq!(
            LagHistogram::new().snapshot().quantile(0.99),
            Duration::ZERO
        );
    }
}
