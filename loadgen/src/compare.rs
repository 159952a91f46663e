//! `loadgen compare A B`: two report folders side by side.

use std::fmt::Write as _;
use std::path::Path;

use crate::report::{OpSummary, Summary};

/// A statistic of an operation, for one comparison row.
type Stat = (&'static str, fn(&OpSummary) -> f64);
use crate::targets::human_ns;

pub fn load(dir: &Path) -> Result<Summary, String> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a loadgen summary: {e}", path.display()))
}

/// The comparison table: per operation, A and B's percentiles with the ratio B/A, then
/// the verdicts side by side.
pub fn table(a: &Summary, b: &Summary, a_name: &str, b_name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A = {a_name} ({}, {}, commit {})",
        a.workload, a.machine.cpu, a.machine.commit
    );
    let _ = writeln!(
        out,
        "B = {b_name} ({}, {}, commit {})\n",
        b.workload, b.machine.cpu, b.machine.commit
    );
    let _ = writeln!(
        out,
        "{:<22} {:<7} {:>10} {:>10} {:>8}",
        "op", "stat", "A", "B", "B/A"
    );
    let names: std::collections::BTreeSet<&String> = a.ops.keys().chain(b.ops.keys()).collect();
    for name in names {
        let (oa, ob) = (a.ops.get(name), b.ops.get(name));
        let rows: [Stat; 5] = [
            ("ops/s", |o| o.throughput),
            ("p50", |o| o.p50 as f64),
            ("p99", |o| o.p99 as f64),
            ("p99.9", |o| o.p999 as f64),
            ("max", |o| o.max as f64),
        ];
        for (stat, get) in rows {
            let fmt = |o: Option<&OpSummary>| match o {
                None => "-".to_string(),
                Some(o) if stat == "ops/s" => format!("{:.0}", get(o)),
                Some(o) => human_ns(get(o)),
            };
            let ratio = match (oa, ob) {
                (Some(x), Some(y)) if get(x) > 0.0 => format!("{:.2}", get(y) / get(x)),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "{:<22} {:<7} {:>10} {:>10} {:>8}",
                name,
                stat,
                fmt(oa),
                fmt(ob),
                ratio
            );
        }
    }
    let _ = writeln!(out, "\n{:<4} {:<6} {:<6} B measured", "id", "A", "B");
    let ids: std::collections::BTreeSet<&String> = a
        .verdicts
        .iter()
        .chain(&b.verdicts)
        .map(|v| &v.id)
        .collect();
    for id in ids {
        let find = |s: &Summary| {
            s.verdicts
                .iter()
                .filter(|v| &v.id == id)
                .map(|v| v.label())
                .collect::<Vec<_>>()
                .join("/")
        };
        let measured = b
            .verdicts
            .iter()
            .filter(|v| &v.id == id)
            .map(|v| v.measured.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(out, "{:<4} {:<6} {:<6} {}", id, find(a), find(b), measured);
    }
    out
}
