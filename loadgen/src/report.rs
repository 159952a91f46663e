//! Run reports: the summary (JSON and Markdown), one `.hgrm` percentile file per
//! operation (HdrHistogram's text format), an HdrHistogram V2 interval log, machine info,
//! and the printed tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::targets::{human_ns, Verdict};

/// One operation type's merged measurements.
pub struct OpData {
    pub name: String,
    pub hist: Histogram<u64>,
    pub elapsed: Duration,
    pub threads: usize,
    /// Per-thread rate of the open-loop schedule; `None` for closed loop.
    pub rate_per_thread: Option<f64>,
    /// When (since the run's start) the measurement began, for the interval log.
    pub started: Duration,
}

/// Where the machine, toolchain and tree came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub os: String,
    pub rustc: String,
    pub commit: String,
    /// Measured cost of one timestamp, ns.
    pub timer_ns: f64,
}

impl Machine {
    pub fn detect(timer_ns: f64) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(
                || std::env::consts::ARCH.to_string(),
                |s| s.trim().to_string(),
            );
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            rustc: env!("ROSTER_RUSTC").to_string(),
            commit: env!("ROSTER_COMMIT").to_string(),
            timer_ns,
        }
    }
}

/// Per-operation numbers, as `summary.json` holds them (nanoseconds).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct OpSummary {
    pub count: u64,
    /// Operations per second over the measured interval, all threads.
    pub throughput: f64,
    pub p50: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
    /// "open-loop" or "closed-loop".
    pub mode: String,
    pub threads: usize,
    pub rate_per_thread: Option<f64>,
    /// (percentile, ns) pairs for plots and comparisons.
    pub percentiles: Vec<(f64, u64)>,
}

impl OpSummary {
    /// p50, p99, p99.9 and max, for people.
    fn latencies(&self) -> [String; 4] {
        [self.p50, self.p99, self.p999, self.max].map(|ns| human_ns(ns as f64))
    }

    pub fn from_data(d: &OpData) -> OpSummary {
        let h = &d.hist;
        let percentiles = PLOT_QUANTILES
            .iter()
            .map(|&q| (q * 100.0, h.value_at_quantile(q)))
            .collect();
        OpSummary {
            count: h.len(),
            throughput: h.len() as f64 / d.elapsed.as_secs_f64().max(1e-9),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            mode: if d.rate_per_thread.is_some() {
                "open-loop"
            } else {
                "closed-loop"
            }
            .into(),
            threads: d.threads,
            rate_per_thread: d.rate_per_thread,
            percentiles,
        }
    }
}

/// Quantiles kept in summaries: dense in the tail, where HDR plots look.
pub const PLOT_QUANTILES: &[f64] = &[
    0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
];

/// Everything a run reports; `summary.json` is this, serialized.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub tool: String,
    pub workload: String,
    pub command: String,
    pub started_unix: f64,
    pub machine: Machine,
    pub config: BTreeMap<String, String>,
    pub ops: BTreeMap<String, OpSummary>,
    pub verdicts: Vec<Verdict>,
    pub notes: Vec<String>,
    /// What makes this run's numbers less than what they claim to be (more busy threads
    /// than cores, ...), printed above the verdicts. Absent in older reports.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl Summary {
    /// The printed table: operations, then verdicts.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<22} {:>11} {:>12} {:>10} {:>10} {:>10} {:>10}  mode",
            "op", "count", "ops/s", "p50", "p99", "p99.9", "max"
        );
        for (name, o) in &self.ops {
            let [p50, p99, p999, max] = o.latencies();
            let _ = writeln!(
                out,
                "{name:<22} {:>11} {:>12.0} {p50:>10} {p99:>10} {p999:>10} {max:>10}  {}",
                o.count, o.throughput, o.mode
            );
        }
        if !self.verdicts.is_empty() {
            let _ = writeln!(out);
            for w in &self.warnings {
                let _ = writeln!(out, "warning: {w}");
            }
            let _ = writeln!(
                out,
                "{:<4} {:<6} {:<46} measured",
                "id", "verdict", "target"
            );
            for v in &self.verdicts {
                let verdict = v.label();
                let _ = writeln!(
                    out,
                    "{:<4} {:<6} {:<46} {}",
                    v.id, verdict, v.target, v.measured
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = write!(
            out,
            "machine: {}, {} cores; timer {:.0} ns/read; commit {}",
            self.machine.cpu, self.machine.cores, self.machine.timer_ns, self.machine.commit
        );
        out
    }

    /// `summary.md`.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# Roster loadgen: `{}`\n", self.workload);
        let _ = writeln!(md, "- command: `{}`", self.command);
        let m = &self.machine;
        let _ = writeln!(
            md,
            "- machine: {}, {} cores, {:.1} GiB, {}",
            m.cpu,
            m.cores,
            m.memory_bytes as f64 / (1u64 << 30) as f64,
            m.os
        );
        let _ = writeln!(md, "- rustc: {}; commit: `{}`", m.rustc, m.commit);
        let _ = writeln!(md, "- timestamp cost: {:.1} ns per read\n", m.timer_ns);
        for w in &self.warnings {
            let _ = writeln!(md, "> **warning:** {w}\n");
        }
        if !self.verdicts.is_empty() {
            let _ = writeln!(
                md,
                "| id | target | measured | verdict |\n|---|---|---|---|"
            );
            for v in &self.verdicts {
                let verdict = match v.label() {
                    "MISS" => "**miss**",
                    other => other,
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    v.id, v.target, v.measured, verdict
                );
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(
            md,
            "| op | count | ops/s | p50 | p99 | p99.9 | max | mode |\n|---|---|---|---|---|---|---|---|"
        );
        for (name, o) in &self.ops {
            let [p50, p99, p999, max] = o.latencies();
            let _ = writeln!(
                md,
                "| {name} | {} | {:.0} | {p50} | {p99} | {p999} | {max} | {} |",
                o.count, o.throughput, o.mode
            );
        }
        for n in &self.notes {
            let _ = writeln!(md, "\n> {n}");
        }
        let _ = writeln!(md, "\n![percentiles](percentiles.svg)");
        md
    }
}

/// HdrHistogram's percentile-distribution text (`.hgrm`), values in microseconds.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# latency in microseconds (recorded in ns, divided by 1000)"
    );
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    // `TotalCount` is cumulative: the values recorded at or below the row's value, as
    // HdrHistogram's `outputPercentileDistribution` writes it (readers such as hdr-plot
    // and the Python `hdrhistogram` package take it so).
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:>14.2}", 1.0 / (1.0 - q))
        } else {
            format!("{:>14}", "inf")
        };
        let _ = writeln!(
            s,
            "{:>12.3} {:>14.12} {:>10} {}",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            total,
            inv
        );
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        s,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    s
}

/// Writes every report file into `dir`.
pub fn write_all(dir: &Path, summary: &Summary, data: &[OpData]) -> Result<(), String> {
    let io =
        |what: &str, e: std::io::Error| format!("cannot write {}: {e}", dir.join(what).display());
    std::fs::create_dir_all(dir).map_err(|e| io("", e))?;
    let json = serde_json::to_string_pretty(summary).expect("summary serializes");
    std::fs::write(dir.join("summary.json"), json + "\n").map_err(|e| io("summary.json", e))?;
    std::fs::write(dir.join("summary.md"), summary.markdown()).map_err(|e| io("summary.md", e))?;
    for d in data {
        let name = format!("{}.hgrm", d.name);
        std::fs::write(dir.join(&name), hgrm(&d.hist)).map_err(|e| io(&name, e))?;
    }
    let mut log = Vec::new();
    {
        let mut ser = V2DeflateSerializer::new();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(summary.started_unix);
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment(&format!(
                "roster-loadgen {}: {}",
                summary.workload, summary.command
            ))
            .add_comment("one interval per operation type, tagged with its name; values in ns")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut log, &mut ser)
            .map_err(|e| io("latency.hlog", e))?;
        for d in data {
            w.write_histogram(&d.hist, d.started, d.elapsed, Tag::new(&d.name))
                .map_err(|e| format!("cannot encode latency.hlog: {e:?}"))?;
        }
    }
    std::fs::File::create(dir.join("latency.hlog"))
        .and_then(|mut f| f.write_all(&log))
        .map_err(|e| io("latency.hlog", e))?;
    crate::plot::percentiles(&dir.join("percentiles.svg"), &[("", summary)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_has_the_standard_columns_and_footer() {
        let mut h = crate::recorder::histogram();
        for v in 1..=1000u64 {
            h.record(v * 100).unwrap();
        }
        let text = hgrm(&h);
        assert!(text.contains("Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(text.contains("#[Max     ="));
        assert!(text.contains("Total count    =         1000"));
        let last = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert!(last.trim_start().starts_with("100.0"), "{last}");
        // The third column counts every value up to the row's: it never falls, and the
        // last row holds them all.
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .skip(1)
            .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert_eq!(counts.last(), Some(&1000));
    }
}
