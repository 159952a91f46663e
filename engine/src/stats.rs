//! Statistics: what the registry holds ([`Registry::stats`]) and, when enabled with
//! [`RegistryBuilder::op_stats`](crate::RegistryBuilder::op_stats), how long each kind of
//! operation takes (HdrHistograms of nanoseconds).
//!
//! Disabled (the default), the read path pays one predictable branch on a field it loads
//! anyway. Enabled, each operation reads the clock twice and records into one of a few
//! striped histograms, picked per thread, so threads rarely share a lock or a cache line.
//! With the `metrics` feature, the recorded latencies also go to the `metrics` crate's
//! facade (histogram `roster_op_seconds`, label `op`), and [`Registry::export_metrics`]
//! publishes the gauges.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::lag::CleanupLag;
use crate::registry::{Memory, Registry};

/// A kind of operation whose latency [`OpStats`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// [`Registry::lookup`], [`Registry::lookup_into`].
    Lookup,
    /// One [`Registry::lookup_many`] call (all its keys).
    LookupMany,
    /// [`Registry::register`] and its async form.
    Register,
    /// [`Registry::unregister`] and its async form.
    Unregister,
    /// [`Registry::update_metadata`] and its async form.
    Update,
    /// One batch write call ([`Registry::register_many`], [`Registry::unregister_many`]).
    Batch,
    /// [`Registry::query`], [`Registry::query_count`], [`Registry::query_each`].
    Query,
}

impl OpKind {
    /// Every kind, in [`OpStats::iter`] order.
    pub const ALL: [OpKind; 7] = [
        OpKind::Lookup,
        OpKind::LookupMany,
        OpKind::Register,
        OpKind::Unregister,
        OpKind::Update,
        OpKind::Batch,
        OpKind::Query,
    ];

    /// Its name in reports and metrics labels.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, OpKind, Registry};
    ///
    /// let registry = Registry::builder().shards(1).op_stats(true).build()?;
    /// let ns = registry.namespace("agents")?;
    /// registry.lookup(&Key::new(ns, 1))?;
    /// let ops = registry.stats().ops.expect("op_stats is on");
    /// assert_eq!(OpKind::Lookup.name(), "lookup");
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Lookup => "lookup",
            OpKind::LookupMany => "lookup_many",
            OpKind::Register => "register",
            OpKind::Unregister => "unregister",
            OpKind::Update => "update",
            OpKind::Batch => "batch",
            OpKind::Query => "query",
        }
    }
}

/// One shard's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardStats {
    /// Entries in the shard (including those of dead processes awaiting cleanup).
    pub entries: usize,
    /// Commands waiting for the shard's writer.
    pub queue_depth: usize,
    /// Bytes charged to the shard's entries.
    pub charged: u64,
    /// Whether the writer thread died of a fault (SPEC S6).
    pub failed: bool,
}

/// Latency histograms (nanoseconds) per [`OpKind`], since the registry started.
#[derive(Clone, Debug)]
pub struct OpStats {
    hists: Vec<Histogram<u64>>,
}

impl OpStats {
    /// The histogram of `op`.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, OpKind, Registry};
    ///
    /// let registry = Registry::builder().shards(1).op_stats(true).build()?;
    /// let ns = registry.namespace("agents")?;
    /// registry.lookup(&Key::new(ns, 1))?;
    /// let ops = registry.stats().ops.expect("op_stats is on");
    /// assert_eq!(ops.get(OpKind::Lookup).len(), 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn get(&self, op: OpKind) -> &Histogram<u64> {
        &self.hists[op as usize]
    }

    /// Every kind with its histogram.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, OpKind, Registry};
    ///
    /// let registry = Registry::builder().shards(1).op_stats(true).build()?;
    /// let ns = registry.namespace("agents")?;
    /// registry.lookup(&Key::new(ns, 1))?;
    /// let ops = registry.stats().ops.expect("op_stats is on");
    /// let total: u64 = ops.iter().map(|(_, h)| h.len()).sum();
    /// assert_eq!(total, 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = (OpKind, &Histogram<u64>)> + '_ {
        OpKind::ALL.into_iter().zip(&self.hists)
    }
}

/// A snapshot of the registry's state: [`Registry::stats`].
#[derive(Clone, Debug)]
pub struct Stats {
    /// Entries over all shards ([`Registry::len`]).
    pub entries: usize,
    /// Live processes.
    pub processes: u64,
    /// Memory held and charged ([`Registry::memory`]).
    pub memory: Memory,
    /// Per shard, in shard order.
    pub shards: Vec<ShardStats>,
    /// Death-to-reclaimed lag of every death so far ([`Registry::cleanup_lag`]).
    pub cleanup_lag: CleanupLag,
    /// Operation latencies, if enabled
    /// ([`RegistryBuilder::op_stats`](crate::RegistryBuilder::op_stats)).
    pub ops: Option<OpStats>,
}

/// Histogram stripes: enough that concurrent threads rarely share one.
const STRIPES: usize = 16;

/// The enabled recorder: `STRIPES` sets of one histogram per kind.
pub(crate) struct OpRecorder {
    stripes: Box<[Mutex<Vec<Histogram<u64>>>]>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds")
}

/// This thread's stripe, assigned round-robin on first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

impl OpRecorder {
    pub(crate) fn new() -> OpRecorder {
        OpRecorder {
            stripes: (0..STRIPES)
                .map(|_| Mutex::new(OpKind::ALL.iter().map(|_| histogram()).collect()))
                .collect(),
        }
    }

    /// Records an operation of kind `op` that started at `started`.
    pub(crate) fn record(&self, op: OpKind, started: Instant) {
        let ns = started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        let mut s = self.stripes[stripe()]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        s[op as usize].saturating_record(ns.max(1));
        drop(s);
        #[cfg(feature = "metrics")]
        metrics::histogram!("roster_op_seconds", "op" => op.name()).record(ns as f64 / 1e9);
    }

    pub(crate) fn snapshot(&self) -> OpStats {
        let mut hists: Vec<Histogram<u64>> = OpKind::ALL.iter().map(|_| histogram()).collect();
        for s in self.stripes.iter() {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            for (h, part) in hists.iter_mut().zip(s.iter()) {
                h.add(part).expect("same bounds");
            }
        }
        OpStats { hists }
    }
}

/// Records the operation it was made for when dropped (see `Registry::op_timer`);
/// holds nothing when op stats are off.
pub(crate) struct OpTimer<'r>(pub(crate) Option<(&'r OpRecorder, OpKind, Instant)>);

impl Drop for OpTimer<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some((rec, op, started)) = self.0 {
            rec.record(op, started);
        }
    }
}

/// [`OpTimer`] for futures, which must be `'static`: holds a registry handle, and only
/// when op stats are on.
pub(crate) struct OwnedTimer(Option<(Registry, OpKind, Instant)>);

impl OwnedTimer {
    pub(crate) fn new(r: &Registry, op: OpKind) -> OwnedTimer {
        OwnedTimer(r.op_recorder().map(|_| (r.clone(), op, Instant::now())))
    }
}

impl Drop for OwnedTimer {
    fn drop(&mut self) {
        if let Some((r, op, started)) = &self.0 {
            if let Some(rec) = r.op_recorder() {
                rec.record(*op, *started);
            }
        }
    }
}

impl Registry {
    /// What the registry holds and how it is doing: entries, processes, memory, each
    /// shard's entries, queue depth, charges and health, the cleanup lag, and operation
    /// latencies if [`RegistryBuilder::op_stats`](crate::RegistryBuilder::op_stats) is on.
    /// Cheap (a few loads per shard) unless op stats are on, which merges histograms.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, OpKind, Registry};
    ///
    /// let registry = Registry::builder().shards(2).op_stats(true).build()?;
    /// let ns = registry.namespace("ns")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1u64), &Metadata::new())?;
    /// registry.lookup(&Key::new(ns, 1u64))?;
    /// let stats = registry.stats();
    /// assert_eq!((stats.entries, stats.shards.len()), (1, 2));
    /// let ops = stats.ops.expect("enabled");
    /// assert_eq!(ops.get(OpKind::Register).len(), 1);
    /// assert!(ops.get(OpKind::Lookup).value_at_quantile(0.5) > 0);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let shards = self
            .shards()
            .iter()
            .map(|s| ShardStats {
                entries: s.len(),
                queue_depth: s.queue_len(),
                charged: s.memory().charged,
                failed: s.failed(),
            })
            .collect();
        Stats {
            entries: self.len(),
            processes: self.process_count(),
            memory: self.memory(),
            shards,
            cleanup_lag: self.cleanup_lag(),
            ops: self.op_recorder().map(OpRecorder::snapshot),
        }
    }

    /// Publishes the registry's gauges through the `metrics` facade: `roster_entries`,
    /// `roster_processes`, `roster_charged_bytes`, `roster_memory_bytes`, and per shard
    /// (label `shard`) `roster_shard_entries`, `roster_queue_depth`; plus
    /// `roster_cleanup_lag_seconds` (label `quantile`: 0.5, 0.99, 1). Call it
    /// periodically; operation latencies are recorded as they happen.
    #[cfg(feature = "metrics")]
    pub fn export_metrics(&self) {
        use metrics::gauge;
        let s = self.stats();
        gauge!("roster_entries").set(s.entries as f64);
        gauge!("roster_processes").set(s.processes as f64);
        gauge!("roster_charged_bytes").set(s.memory.charged as f64);
        gauge!("roster_memory_bytes").set(s.memory.total() as f64);
        for (i, sh) in s.shards.iter().enumerate() {
            let shard = i.to_string();
            gauge!("roster_shard_entries", "shard" => shard.clone()).set(sh.entries as f64);
            gauge!("roster_queue_depth", "shard" => shard).set(sh.queue_depth as f64);
        }
        for (q, label) in [(0.5, "0.5"), (0.99, "0.99"), (1.0, "1")] {
            gauge!("roster_cleanup_lag_seconds", "quantile" => label)
                .set(s.cleanup_lag.quantile(q).as_secs_f64());
        }
    }
}
