//! SPEC's P1-P7 targets (`targets.toml`) and the verdicts: what the workloads measured
//! ([`Findings`]) against them.

use serde::{Deserialize, Serialize};

use crate::report::OpData;
use crate::workloads::Findings;

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

/// The verdicts `wanted` (P1-P7) from what was measured; unmeasured targets say why.
pub fn verdicts(t: &Targets, f: &Findings, wanted: &[&str]) -> Vec<Verdict> {
    let op = |name: &str| f.ops.iter().find(|o| o.name == name);
    let not = |why: &str| format!("not measured: {why}");
    let mut out = Vec::new();
    let mut add = |id: &str, what: &str, target: String, measured: String, pass: bool| {
        if wanted.contains(&id) {
            out.push(Verdict {
                id: id.into(),
                what: what.into(),
                target,
                measured,
                pass,
            });
        }
    };

    let p1 = &t.p1;
    let target = format!(
        "p50 <= {}, p99 <= {}, p99.9 <= {}",
        human_ns(p1.lookup_p50_ns as f64),
        human_ns(p1.lookup_p99_ns as f64),
        human_ns(p1.lookup_p999_ns as f64)
    );
    match op("lookup") {
        Some(o) => {
            let q = |x| o.hist.value_at_quantile(x);
            let (a, b, c) = (q(0.5), q(0.99), q(0.999));
            let pass = a <= p1.lookup_p50_ns && b <= p1.lookup_p99_ns && c <= p1.lookup_p999_ns;
            add(
                "P1",
                &p1.what,
                target,
                format!(
                    "p50 {}, p99 {}, p99.9 {}",
                    human_ns(a as f64),
                    human_ns(b as f64),
                    human_ns(c as f64)
                ),
                pass,
            );
        }
        None => add(
            "P1",
            &p1.what,
            target,
            not("run the lookup workload"),
            false,
        ),
    }

    let p2 = &t.p2;
    let target = format!(
        "p50 <= {}, p99 <= {}; batched >= {}/s",
        human_ns(p2.register_p50_ns as f64),
        human_ns(p2.register_p99_ns as f64),
        p2.batched_registrations_per_sec
    );
    match op("register") {
        Some(o) => {
            let (a, b) = (
                o.hist.value_at_quantile(0.5),
                o.hist.value_at_quantile(0.99),
            );
            let (batched, batched_pass) = match f.batched_registrations {
                Some((rate, n, threads)) => (
                    format!("batched {rate:.0}/s ({n} entries, {threads} threads)"),
                    rate >= p2.batched_registrations_per_sec as f64,
                ),
                None => ("batched: not measured".to_string(), false),
            };
            let pass = a <= p2.register_p50_ns && b <= p2.register_p99_ns && batched_pass;
            add(
                "P2",
                &p2.what,
                target,
                format!(
                    "p50 {}, p99 {}; {batched}",
                    human_ns(a as f64),
                    human_ns(b as f64)
                ),
                pass,
            );
        }
        None => add(
            "P2",
            &p2.what,
            target,
            not("run the register workload"),
            false,
        ),
    }

    let p3 = &t.p3;
    let target = format!(
        "p99 <= {}; 0 matches p99 <= {}; 10x entries <= {}x",
        human_ns(p3.query_p99_ns as f64),
        human_ns(p3.empty_query_p99_ns as f64),
        p3.ten_x_entries_ratio
    );
    match (op("query-1000"), op("query-empty"), op("query-small-1000")) {
        (Some(big), Some(empty), Some(small)) => {
            let p99 = |o: &OpData| o.hist.value_at_quantile(0.99);
            let ratio = p99(big) as f64 / p99(small).max(1) as f64;
            let sizes = &f.query_sizes;
            let pass = p99(big) <= p3.query_p99_ns
                && p99(empty) <= p3.empty_query_p99_ns
                && ratio <= p3.ten_x_entries_ratio;
            add(
                "P3",
                &p3.what,
                target,
                format!(
                    "1,000 matches at {} entries: p50 {}, p99 {}; 0 matches p99 {}; at {} entries p99 {} (x{ratio:.2} for 10x entries)",
                    sizes.get(1).copied().unwrap_or(0),
                    human_ns(big.hist.value_at_quantile(0.5) as f64),
                    human_ns(p99(big) as f64),
                    human_ns(p99(empty) as f64),
                    sizes.first().copied().unwrap_or(0),
                    human_ns(p99(small) as f64),
                ),
                pass,
            );
        }
        _ => add("P3", &p3.what, target, not("run the query workload"), false),
    }

    let p4 = &t.p4;
    let target = format!(
        "<= {} B/entry at 1M; churn within {:.0}%",
        p4.bytes_per_entry,
        (p4.churn_growth_ratio - 1.0) * 100.0
    );
    match (f.prefill_bytes_per_entry, f.churn_growth) {
        (Some((acct, rss)), Some((ga, gr, cycles))) => {
            let pass = acct.max(rss) <= p4.bytes_per_entry && ga.max(gr) <= p4.churn_growth_ratio;
            add("P4", &p4.what, target, format!("{acct:.0} B/entry accounted, {rss:.0} B/entry RSS; after {cycles} churn cycles x{ga:.3} accounted, x{gr:.3} RSS"), pass);
        }
        _ => add(
            "P4",
            &p4.what,
            target,
            not("run the memory workload"),
            false,
        ),
    }

    let p5 = &t.p5;
    let target = format!(
        "reads scale >= {} x threads; read p99 with writers <= {}x without",
        p5.read_scaling_per_thread, p5.read_p99_with_writers_ratio
    );
    match (&f.scaling, f.p99_writers) {
        (Some(points), Some((off, on))) => {
            let base = points[0].1;
            let worst = points
                .iter()
                .map(|&(n, x)| x / base / n as f64)
                .fold(f64::INFINITY, f64::min);
            let ratio = on as f64 / off.max(1) as f64;
            let curve = points
                .iter()
                .map(|(n, x)| format!("{n}t {:.2}M/s", x / 1e6))
                .collect::<Vec<_>>()
                .join(", ");
            let pass =
                worst >= p5.read_scaling_per_thread && ratio <= p5.read_p99_with_writers_ratio;
            add(
                "P5",
                &p5.what,
                target,
                format!(
                    "{curve} (worst {worst:.2} x threads); p99 {} -> {} with writers (x{ratio:.2})",
                    human_ns(off as f64),
                    human_ns(on as f64)
                ),
                pass,
            );
        }
        _ => add(
            "P5",
            &p5.what,
            target,
            not("run the scaling workload"),
            false,
        ),
    }

    let p6 = &t.p6;
    let target = format!(
        "100k deaths reclaimed <= {} ms, {} stale reads",
        p6.reclaim_ms, p6.stale_reads
    );
    if f.storms.is_empty() {
        add(
            "P6",
            &p6.what,
            target.clone(),
            not("run the death-storm workload"),
            false,
        );
    }
    for s in &f.storms {
        let ms = s.reclaimed.as_secs_f64() * 1e3;
        let pass = ms <= p6.reclaim_ms && s.stale <= p6.stale_reads;
        add(
            "P6",
            &format!("{} ({})", p6.what, s.mode),
            target.clone(),
            format!(
                "{}: {} deaths reclaimed in {ms:.1} ms (issued over {:.1} ms), lag p50 {:.1} ms p99 {:.1} ms; {} stale of {} lookups",
                s.mode,
                s.deaths,
                s.issued.as_secs_f64() * 1e3,
                s.lag_p50.as_secs_f64() * 1e3,
                s.lag_p99.as_secs_f64() * 1e3,
                s.stale,
                s.lookups
            ),
            pass,
        );
    }

    if let Some(p7) = &t.p7 {
        let target = format!(
            "register p99 <= {}, propagation p99 <= {}, dead node gone <= TTL + {} ms",
            human_ns(p7.register_p99_ns as f64),
            human_ns(p7.propagation_p99_ns as f64),
            p7.death_after_ttl_ms
        );
        match (
            op("cluster-register"),
            op("cluster-propagation"),
            f.cluster_death,
        ) {
            (Some(r), Some(p), Some((gone, ttl))) => {
                let (r99, p99) = (
                    r.hist.value_at_quantile(0.99),
                    p.hist.value_at_quantile(0.99),
                );
                let after_ttl = gone.as_secs_f64() * 1e3 - ttl.as_secs_f64() * 1e3;
                let pass = r99 <= p7.register_p99_ns
                    && p99 <= p7.propagation_p99_ns
                    && after_ttl <= p7.death_after_ttl_ms;
                add(
                    "P7",
                    &p7.what,
                    target,
                    format!(
                        "register p99 {}, propagation p99 {}, dead node gone after {:.0} ms (TTL {:.0} ms)",
                        human_ns(r99 as f64),
                        human_ns(p99 as f64),
                        gone.as_secs_f64() * 1e3,
                        ttl.as_secs_f64() * 1e3
                    ),
                    pass,
                );
            }
            _ => add(
                "P7",
                &p7.what,
                target,
                not("run the cluster workload"),
                false,
            ),
        }
    }
    out
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
