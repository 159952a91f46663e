//! `peers`: Roster side by side with the best Rust concurrent maps, in one run on one
//! machine (SPEC.md's side-by-side goals).
//!
//! ```sh
//! cargo run --release -p roster-benches --bin peers                 # full run
//! cargo run --release -p roster-benches --bin peers -- --quick      # < 3 min on 2 cores
//! cargo run --release -p roster-benches --bin peers -- --json out.json --threads 1,2,4
//! ```
//!
//! Every map stores the same value per key and copies it out on lookup (see `maps.rs`).
//! Workloads (see `run.rs`): pure lookup at `--keys` prefilled keys (with Roster's batched
//! `lookup_many` as its own column), read-heavy, exchange and rapid-grow mixes, each at
//! every thread count; then lookup latency (p50 to p99.9, every lookup timed) on all but
//! one thread while the last one writes at a fixed rate.

mod maps;
mod run;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use maps::{DashMap, Kind, Locked, Map, Papaya, RosterMap, Scc, Values};
use run::Workload;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator this build runs on (the `mimalloc` feature, on by default).
const ALLOCATOR: &str = if cfg!(feature = "mimalloc") {
    "mimalloc"
} else {
    "the system allocator"
};

/// Roster against papaya, dashmap, `scc::HashMap` and `RwLock<HashMap>`, side by side.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Prefilled keys.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Thread counts, comma-separated [default: 1, 2, 4, ... up to the core count, and the
    /// core count].
    #[arg(long, value_delimiter = ',')]
    threads: Vec<usize>,
    /// Seconds per throughput cell [default: 2, or 0.5 with --quick].
    #[arg(long)]
    seconds: Option<f64>,
    /// Maps to run, comma-separated, of: roster, roster-batch, papaya, dashmap, scc,
    /// rwlock-std [default: all].
    #[arg(long, value_delimiter = ',', value_parser = parse_kind)]
    maps: Vec<Kind>,
    /// Workloads, comma-separated, of: lookup, read-heavy, exchange, rapid-grow, churn,
    /// latency [default: all].
    #[arg(long, value_delimiter = ',', value_parser = parse_workload)]
    workloads: Vec<String>,
    /// Writes per second during the latency cell.
    #[arg(long, default_value_t = 20_000)]
    write_rate: u64,
    /// Short cells: the whole run finishes within 3 minutes on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Build Roster's registries on transparent huge pages (`RegistryBuilder::huge_pages`).
    #[arg(long)]
    huge_pages: bool,
    /// Give Roster's registries a line cache (`RegistryBuilder::line_cache`).
    #[arg(long)]
    line_cache: bool,
    /// The load (percent, 25 to 90) at which Roster's tables grow
    /// (`RegistryBuilder::max_load`).
    #[arg(long, default_value_t = roster::DEFAULT_MAX_LOAD,
          value_parser = clap::value_parser!(u8).range(25..=90))]
    max_load: u8,
    /// Also write every row as a JSON array to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    Kind::parse(s).ok_or_else(|| {
        let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown map {s:?}; expected one of {}", names.join(", "))
    })
}

fn parse_workload(s: &str) -> Result<String, String> {
    let known = Workload::ALL.iter().any(|w| w.name() == s) || s == LATENCY;
    if known {
        Ok(s.to_string())
    } else {
        Err(format!(
            "unknown workload {s:?}; expected one of lookup, read-heavy, exchange, rapid-grow, churn, {LATENCY}"
        ))
    }
}

const LATENCY: &str = "latency";

/// One measured cell: a JSON row.
#[derive(Clone, Debug, Serialize)]
struct Row {
    workload: &'static str,
    threads: usize,
    map: &'static str,
    mops: f64,
    ops: u64,
    seconds: f64,
    keys: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p999_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    writes_per_s: Option<f64>,
}

/// The run's settings, resolved.
struct Plan {
    keys: u64,
    threads: Vec<usize>,
    cell: Duration,
    maps: Vec<Kind>,
    workloads: Vec<Workload>,
    latency: bool,
    write_rate: u64,
    cores: usize,
}

impl Plan {
    fn new(args: &Args) -> Result<Plan, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if args.threads.is_empty() {
            let mut t: Vec<usize> = (0..).map(|i| 1 << i).take_while(|&t| t < cores).collect();
            t.push(cores);
            t
        } else {
            args.threads.clone()
        };
        if threads.contains(&0) {
            return Err("--threads: thread counts must be at least 1".into());
        }
        let seconds = args.seconds.unwrap_or(if args.quick { 0.5 } else { 2.0 });
        if !(seconds > 0.0 && seconds < 3600.0) {
            return Err(format!("--seconds must be in (0, 3600), got {seconds}"));
        }
        if args.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        let maps = if args.maps.is_empty() {
            Kind::ALL.to_vec()
        } else {
            let mut m = args.maps.clone();
            m.sort();
            m.dedup();
            m
        };
        let all = args.workloads.is_empty();
        let wanted = |name: &str| all || args.workloads.iter().any(|w| w == name);
        Ok(Plan {
            keys: args.keys,
            threads,
            cell: Duration::from_secs_f64(seconds),
            maps,
            workloads: Workload::ALL
                .into_iter()
                .filter(|w| wanted(w.name()))
                .collect(),
            latency: wanted(LATENCY),
            write_rate: args.write_rate,
            cores,
        })
    }

    fn cells(&self) -> usize {
        let t = self.threads.len();
        let per_map = |k: &Kind| match k {
            Kind::RosterMany => self.workloads.iter().filter(|w| w.batched()).count() * t,
            _ => self.workloads.len() * t + usize::from(self.latency),
        };
        self.maps.iter().map(per_map).sum()
    }
}

/// Runs every planned cell of one map type, printing progress as cells finish.
fn run_map<M: Map>(plan: &Plan, kinds: &[Kind], values: &Values, out: &mut Progress) {
    let main = kinds[0];
    let max_threads = plan.threads.iter().copied().max().unwrap_or(1);
    let prefilled: Vec<Workload> = plan
        .workloads
        .iter()
        .copied()
        .filter(|w| w.prefilled())
        .collect();
    if !prefilled.is_empty() || plan.latency {
        let start = Instant::now();
        let map = M::with_capacity(plan.keys as usize);
        run::prefill(&map, values, plan.keys, plan.cores);
        eprintln!(
            "  {}: prefilled {} keys in {:.1} s",
            main.name(),
            plan.keys,
            start.elapsed().as_secs_f64()
        );
        if plan.latency && main != Kind::RosterMany {
            // First, on the map as prefilled, before the mixes add keys.
            out.latency(&map, values, plan, main, max_threads);
        }
        for &w in &prefilled {
            for &kind in kinds {
                if kind == Kind::RosterMany && !w.batched() {
                    continue;
                }
                for &t in &plan.threads {
                    let batched = kind == Kind::RosterMany;
                    let r = run::throughput(&map, values, w, plan.keys, t, plan.cell, batched);
                    out.throughput(w, t, kind, r, plan.keys);
                }
            }
        }
    }
    if plan.workloads.contains(&Workload::RapidGrow) && main != Kind::RosterMany {
        for &t in &plan.threads {
            let map = M::with_capacity(0);
            let r = run::throughput(
                &map,
                values,
                Workload::RapidGrow,
                plan.keys,
                t,
                plan.cell,
                false,
            );
            out.throughput(Workload::RapidGrow, t, main, r, 0);
        }
    }
}

/// Collects rows and reports each as it lands.
struct Progress {
    rows: Vec<Row>,
    total: usize,
}

impl Progress {
    fn push(&mut self, row: Row) {
        let mut line = format!(
            "[{}/{}] {:<11} {:>2} threads  {:<11} {:>8.2} Mops/s",
            self.rows.len() + 1,
            self.total,
            row.workload,
            row.threads,
            row.map,
            row.mops
        );
        if let (Some(p99), Some(p999)) = (row.p99_ns, row.p999_ns) {
            let _ = write!(line, "  p99 {p99} ns  p99.9 {p999} ns");
        }
        eprintln!("{line}");
        self.rows.push(row);
    }

    fn throughput(
        &mut self,
        w: Workload,
        threads: usize,
        kind: Kind,
        r: run::Throughput,
        keys: u64,
    ) {
        self.push(Row {
            workload: w.name(),
            threads,
            map: kind.name(),
            mops: r.mops(),
            ops: r.ops,
            seconds: r.seconds,
            keys,
            p50_ns: None,
            p99_ns: None,
            p999_ns: None,
            max_ns: None,
            writes_per_s: None,
        });
    }

    fn latency<M: Map>(
        &mut self,
        map: &M,
        values: &Values,
        plan: &Plan,
        kind: Kind,
        threads: usize,
    ) {
        let readers = threads.saturating_sub(1).max(1);
        let l = run::latency(map, values, plan.keys, readers, plan.cell, plan.write_rate);
        let q = |p: f64| l.reads.value_at_quantile(p);
        self.push(Row {
            workload: LATENCY,
            threads: readers,
            map: kind.name(),
            mops: l.reads.len() as f64 / l.read_seconds / 1e6,
            ops: l.reads.len(),
            seconds: l.read_seconds,
            keys: plan.keys,
            p50_ns: Some(q(0.5)),
            p99_ns: Some(q(0.99)),
            p999_ns: Some(q(0.999)),
            max_ns: Some(l.reads.max()),
            writes_per_s: Some(l.writes as f64 / l.write_seconds),
        });
    }
}

/// The Markdown tables: Mops/s per map, then Roster's ratio to each peer.
fn tables(plan: &Plan, rows: &[Row]) -> String {
    let mut s = String::new();
    let peers: Vec<Kind> = plan.maps.iter().copied().filter(|k| k.is_peer()).collect();
    for w in &plan.workloads {
        let maps: Vec<Kind> = plan
            .maps
            .iter()
            .copied()
            .filter(|&k| w.batched() || k != Kind::RosterMany)
            .collect();
        let _ = writeln!(s, "\n### {} (Mops/s, higher is better)\n", w.name());
        let mut head = String::from("| threads |");
        let mut rule = String::from("|---:|");
        for k in &maps {
            let _ = write!(head, " {} |", k.name());
            rule.push_str("---:|");
        }
        let roster = maps.contains(&Kind::Roster);
        if roster {
            for p in &peers {
                let _ = write!(head, " roster / {} |", p.name());
                rule.push_str("---:|");
            }
            if maps.contains(&Kind::RosterMany) {
                head.push_str(" batch / single |");
                rule.push_str("---:|");
            }
        }
        let _ = writeln!(s, "{head}\n{rule}");
        for &t in &plan.threads {
            let mops = |k: Kind| {
                rows.iter()
                    .find(|r| r.workload == w.name() && r.threads == t && r.map == k.name())
                    .map(|r| r.mops)
            };
            let _ = write!(s, "| {t} |");
            for &k in &maps {
                match mops(k) {
                    Some(m) => {
                        let _ = write!(s, " {m:.2} |");
                    }
                    None => s.push_str(" - |"),
                }
            }
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => format!(" {:.2}x |", a / b),
                _ => " - |".to_string(),
            };
            if roster {
                for &p in &peers {
                    s.push_str(&ratio(mops(Kind::Roster), mops(p)));
                }
                if maps.contains(&Kind::RosterMany) {
                    s.push_str(&ratio(mops(Kind::RosterMany), mops(Kind::Roster)));
                }
            }
            s.push('\n');
        }
    }
    let lat: Vec<&Row> = rows.iter().filter(|r| r.workload == LATENCY).collect();
    if !lat.is_empty() {
        let _ = writeln!(
            s,
            "\n### lookup latency under writes ({} keys; every lookup timed, ns)\n",
            plan.keys
        );
        let _ = writeln!(
            s,
            "| map | readers | lookups Mops/s | p50 | p99 | p99.9 | max | writes/s |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in lat {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {} | {} | {} | {} | {:.0} |",
                r.map,
                r.threads,
                r.mops,
                r.p50_ns.unwrap_or(0),
                r.p99_ns.unwrap_or(0),
                r.p999_ns.unwrap_or(0),
                r.max_ns.unwrap_or(0),
                r.writes_per_s.unwrap_or(0.0)
            );
        }
    }
    s
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

fn main() {
    let args = Args::parse();
    if args.huge_pages {
        maps::HUGE_PAGES.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("roster: on huge pages");
    }
    if args.line_cache {
        maps::LINE_CACHE.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("roster: with a line cache");
    }
    maps::MAX_LOAD.store(args.max_load, std::sync::atomic::Ordering::Relaxed);
    if args.max_load != roster::DEFAULT_MAX_LOAD {
        eprintln!("roster: tables grow at {}% load", args.max_load);
    }
    let plan = match Plan::new(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    eprintln!(
        "peers: {} keys, threads {:?}, {:.1} s per cell, {} cells, on {} ({} cores), {ALLOCATOR}",
        plan.keys,
        plan.threads,
        plan.cell.as_secs_f64(),
        plan.cells(),
        cpu_model(),
        plan.cores
    );
    let values = Values::new();
    let mut out = Progress {
        rows: Vec::new(),
        total: plan.cells(),
    };
    let has = |k: Kind| plan.maps.contains(&k);
    let roster: Vec<Kind> = [Kind::Roster, Kind::RosterMany]
        .into_iter()
        .filter(|&k| has(k))
        .collect();
    if !roster.is_empty() {
        run_map::<RosterMap>(&plan, &roster, &values, &mut out);
    }
    for k in plan.maps.iter().copied().filter(|k| k.is_peer()) {
        match k {
            Kind::Papaya => run_map::<Papaya>(&plan, &[k], &values, &mut out),
            Kind::DashMap => run_map::<DashMap>(&plan, &[k], &values, &mut out),
            Kind::Scc => run_map::<Scc>(&plan, &[k], &values, &mut out),
            Kind::RwLock => run_map::<Locked>(&plan, &[k], &values, &mut out),
            Kind::Roster | Kind::RosterMany => unreachable!("not a peer"),
        }
    }
    println!(
        "## peers: {} keys on {} ({} cores), {:.1} s per cell, on {ALLOCATOR}",
        plan.keys,
        cpu_model(),
        plan.cores,
        plan.cell.as_secs_f64()
    );
    println!("{}", tables(&plan, &out.rows));
    println!(
        "Roster writes are synchronous round trips through its shard writer threads; the \
         peers write in place. Finished in {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&out.rows).expect("rows serialize");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("error: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        eprintln!("rows written to {}", path.display());
    }
}
