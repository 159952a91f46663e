//! Percentile rows and the printed table, with SPEC.md's P1/P2 latency targets.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// One operation's measured latency distribution.
pub struct Row {
    pub op: &'static str,
    pub target_id: &'static str,
    pub count: u64,
    pub ops_per_sec: f64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Row {
    pub fn new(
        op: &'static str,
        target_id: &'static str,
        h: &Histogram<u64>,
        count: u64,
        elapsed: Duration,
    ) -> Row {
        Row {
            op,
            target_id,
            count,
            ops_per_sec: count as f64 / elapsed.as_secs_f64(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// SPEC.md targets for this row: (p50, p99, p99.9) in ns, `None` where none is set.
    fn targets(&self) -> [Option<u64>; 3] {
        match self.target_id {
            "P1" => [Some(200), Some(1_000), Some(10_000)],
            "P2" => [Some(20_000), Some(100_000), None],
            _ => [None; 3],
        }
    }

    fn verdict(&self) -> &'static str {
        let measured = [self.p50, self.p99, self.p999];
        let ok = self
            .targets()
            .iter()
            .zip(measured)
            .all(|(t, m)| t.is_none_or(|t| m <= t));
        if ok {
            "pass"
        } else {
            "MISS"
        }
    }
}

/// Formats nanoseconds for people.
pub fn human(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=9_999_999 => format!("{:.1} us", ns as f64 / 1e3),
        _ => format!("{:.1} ms", ns as f64 / 1e6),
    }
}

/// The death-storm workload's outcome (P6).
pub struct Storm {
    /// `drops` (guards dropped one by one) or `batch` (one `exit_all`).
    pub mode: &'static str,
    pub deaths: u64,
    pub kill_time: Duration,
    pub reclaim_time: Duration,
    pub lag_p50: Duration,
    pub lag_p99: Duration,
    pub lag_max: Duration,
    pub over_window: u64,
    pub window: Duration,
    pub lookups: u64,
    pub stale: u64,
}

impl Storm {
    /// P6: fully reclaimed within 100 ms, no stale read.
    fn verdict(&self) -> &'static str {
        if self.reclaim_time <= Duration::from_millis(100) && self.stale == 0 {
            "pass"
        } else {
            "MISS"
        }
    }
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub storms: Vec<Storm>,
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<10} {:>4} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10}  {:<32} verdict",
            "op",
            "id",
            "count",
            "ops/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "target (p50 / p99 / p99.9)"
        );
        for r in &self.rows {
            let t = r.targets().map(|t| t.map_or("-".to_string(), human));
            let _ = writeln!(
                out,
                "{:<10} {:>4} {:>10} {:>12.0} {:>10} {:>10} {:>10} {:>10}  {:<32} {}",
                r.op,
                r.target_id,
                r.count,
                r.ops_per_sec,
                human(r.p50),
                human(r.p99),
                human(r.p999),
                human(r.max),
                format!("{} / {} / {}", t[0], t[1], t[2]),
                r.verdict()
            );
        }
        for s in &self.storms {
            let ns = |d: Duration| human(d.as_nanos() as u64);
            let _ = writeln!(
                out,
                "{:<10} {:>4} {:>10} {}: reclaimed all in {} (deaths issued in {}); lag p50 {} p99 {} max {}; {} over the {} window; {} stale of {} lookups  target: <= 100.0 ms, 0 stale  {}",
                "death",
                "P6",
                s.deaths,
                s.mode,
                ns(s.reclaim_time),
                ns(s.kill_time),
                ns(s.lag_p50),
                ns(s.lag_p99),
                ns(s.lag_max),
                s.over_window,
                ns(s.window),
                s.stale,
                s.lookups,
                s.verdict()
            );
        }
        let _ = write!(
            out,
            "latency: closed-loop, per operation, timed with Instant (~20-30 ns of timer overhead included)"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_compares_each_percentile_with_its_target() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in [100, 150, 180] {
            h.record(v).unwrap();
        }
        let row = Row::new("lookup", "P1", &h, 3, Duration::from_secs(1));
        assert_eq!(row.verdict(), "pass");
        h.record(50_000).unwrap();
        let row = Row::new("lookup", "P1", &h, 4, Duration::from_secs(1));
        assert_eq!(row.verdict(), "MISS");
        assert_eq!(human(1_500), "1500 ns");
        assert_eq!(human(15_000), "15.0 us");
    }
}
