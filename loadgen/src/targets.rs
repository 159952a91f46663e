//! SPEC's P1-P7 targets (`targets.toml`) and the verdicts measured against them.

use serde::{Deserialize, Serialize};

/// The embedded targets file.
pub const EMBEDDED: &str = include_str!("../targets.toml");

#[derive(Clone, Debug, Deserialize)]
pub struct Targets {
    #[serde(rename = "P1")]
    pub p1: P1,
    #[serde(rename = "P2")]
    pub p2: P2,
    #[serde(rename = "P3")]
    pub p3: P3,
    #[serde(rename = "P4")]
    pub p4: P4,
    #[serde(rename = "P5")]
    pub p5: P5,
    #[serde(rename = "P6")]
    pub p6: P6,
    /// Absent from targets files older than the cluster layer.
    #[serde(rename = "P7", default)]
    pub p7: Option<P7>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct P1 {
    pub what: String,
    pub lookup_p50_ns: u64,
    pub lookup_p99_ns: u64,
    pub lookup_p999_ns: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct P2 {
    pub what: String,
    pub register_p50_ns: u64,
    pub register_p99_ns: u64,
    pub batched_registrations_per_sec: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct P3 {
    pub what: String,
    pub query_p99_ns: u64,
    pub empty_query_p99_ns: u64,
    pub ten_x_entries_ratio: f64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct P4 {
    pub what: String,
    pub bytes_per_entry: f64,
    pub churn_growth_ratio: f64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct P5 {
    pub what: String,
    pub read_scaling_per_thread: f64,
    pub read_p99_with_writers_ratio: f64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct P6 {
    pub what: String,
    pub reclaim_ms: f64,
    pub stale_reads: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct P7 {
    pub what: String,
    pub register_p99_ns: u64,
    pub propagation_p99_ns: u64,
    /// How long after the lease TTL a dead node's names may still be visible.
    pub death_after_ttl_ms: f64,
}

impl Targets {
    /// Parses a targets file.
    pub fn parse(text: &str) -> Result<Targets, String> {
        toml::from_str(text).map_err(|e| format!("invalid targets file: {e}"))
    }
}

/// One target checked against one measurement.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// "P1" .. "P6".
    pub id: String,
    /// What the target is about.
    pub what: String,
    /// The target, as text ("p50 <= 200 ns, p99 <= 1 us").
    pub target: String,
    /// What was measured, as text; "not measured: ..." when the workload did not run.
    pub measured: String,
    /// Whether the measurement meets the target (false when not measured).
    pub pass: bool,
}

impl Verdict {
    /// "pass", "MISS", or "-" when the target was not measured.
    pub fn label(&self) -> &'static str {
        if self.pass {
            "pass"
        } else if self.measured.starts_with("not measured") {
            "-"
        } else {
            "MISS"
        }
    }
}

/// Nanoseconds for people.
pub fn human_ns(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000_000.0 {
        format!("{:.1} us", ns / 1e3)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_targets_parse_and_match_spec() {
        let t = Targets::parse(EMBEDDED).unwrap();
        assert_eq!(t.p1.lookup_p50_ns, 200);
        assert_eq!(t.p2.register_p99_ns, 100_000);
        assert_eq!(t.p6.reclaim_ms, 100.0);
        assert!(Targets::parse("[P1]\nwhat = 1")
            .unwrap_err()
            .contains("invalid targets"));
    }
}
