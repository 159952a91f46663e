//! `loadgen`: drives a Roster registry with open-loop load and reports latency against
//! SPEC.md's P1-P6 targets.
//!
//! - `loadgen` (no arguments) runs the whole suite on embedded defaults (about two minutes
//!   on two cores) and prints the verdict table.
//! - `loadgen run WORKLOAD [options]` runs one workload: lookup, register, mixed, churn,
//!   query, death-storm, memory, scaling, or suite.
//! - `loadgen compare A B` sets two report folders side by side, as a table and an SVG.
//! - `loadgen plot REPORT` draws a report's percentile plot again from its summary.json.
//!
//! Every run writes `summary.json`, `summary.md`, one `.hgrm` per operation, an
//! HdrHistogram V2 interval log (`latency.hlog`) and `percentiles.svg` into `--out`
//! (default `target/loadgen/<workload>-<unix time>/`).
#![forbid(unsafe_code)]

#[cfg(feature = "cluster")]
mod cluster;
mod compare;
mod plot;
mod recorder;
mod report;
mod rng;
mod targets;
mod workloads;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use report::{Machine, OpSummary, Summary};
use targets::Targets;
use workloads::{Config, Findings, Run};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Roster load generator: open-loop latency against SPEC.md's P1-P6 targets.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a workload (default: the whole suite).
    Run(RunArgs),
    /// Compare two report folders: percentiles and verdicts side by side.
    Compare(CompareArgs),
    /// Draw a report's percentile plot again from its summary.json (or from a
    /// summary.json file), e.g. for a report made by an older loadgen.
    Plot(PlotArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// P1: lookups under concurrent writes.
    Lookup,
    /// P2: synchronous register round trips.
    Register,
    /// Lookups and writes mixed by --read-ratio.
    Mixed,
    /// Register + unregister cycles.
    Churn,
    /// P3: capability queries, 1,000 matches and 0, at entries and ten times as many.
    Query,
    /// P6: 100k simultaneous deaths.
    DeathStorm,
    /// P4: bytes per entry and churn steady state.
    Memory,
    /// P5: read scaling and read p99 with writers on.
    Scaling,
    /// All of the above; P1-P6 verdicts.
    Suite,
    /// roster-cluster on etcd (not in the suite): claim latency, batched claims,
    /// propagation lag, remote lookups, node death against the lease TTL. Needs the
    /// `cluster` feature and an etcd (--etcd, or a local `etcd` binary it starts).
    Cluster,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// The workload.
    #[arg(value_enum, default_value_t = Workload::Suite)]
    workload: Workload,
    /// Entries registered before measuring.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    entries: u64,
    /// Worker threads (default: one fewer than the cores, leaving one for the shard
    /// writers and the concurrent writer; at least 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    threads: Option<u64>,
    /// Shards (default: available parallelism, rounded up to a power of two).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65536))]
    shards: Option<u64>,
    /// Seconds each timed phase runs (default: 5 for one workload, 3 in the suite).
    #[arg(long)]
    duration: Option<f64>,
    /// Open-loop rate per thread, ops/s (default: the workload's; 0 = closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: as fast as possible, each op timed from its own start (max-throughput
    /// mode; latencies then hide stalls).
    #[arg(long, conflicts_with = "rate")]
    closed_loop: bool,
    /// Poisson arrivals instead of a fixed interval.
    #[arg(long)]
    poisson: bool,
    /// Key distribution.
    #[arg(long, value_enum, default_value_t = KeyDist::Uniform)]
    keys: KeyDist,
    /// Zipf exponent for --keys zipf.
    #[arg(long, default_value_t = 0.99)]
    zipf_s: f64,
    /// Pin shard writer threads to cores.
    #[arg(long)]
    pin: bool,
    /// Build the registry on transparent huge pages (`RegistryBuilder::huge_pages`):
    /// fewer TLB misses per lookup at scale, page faults of 2 MiB for the writers.
    #[arg(long)]
    huge_pages: bool,
    /// Keep one-line copies of short entries that lookups read first
    /// (`RegistryBuilder::line_cache`): one cache line read a hit, 68 B a line more
    /// memory.
    #[arg(long)]
    line_cache: bool,
    /// The load (percent, 25 to 90) at which shard tables grow
    /// (`RegistryBuilder::max_load`): lower reads faster and takes more memory.
    #[arg(long, default_value_t = roster::DEFAULT_MAX_LOAD,
          value_parser = clap::value_parser!(u8).range(25..=90))]
    max_load: u8,
    /// Seed for key choice and arrivals.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of reads in the mixed workload (0..=1).
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Writes/s of the concurrent writer during lookups (P1, P5).
    #[arg(long, default_value_t = 10_000.0)]
    write_rate: f64,
    /// Processes killed at once by the death storm.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    deaths: u64,
    /// Fill-and-empty cycles of the memory workload.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    churn_cycles: u32,
    /// Entries per memory-churn cycle.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    churn_entries: u64,
    /// Report folder (default: `target/loadgen/<workload>-<unix time>`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print summary.json to stdout instead of the table (no progress output).
    #[arg(long)]
    json: bool,
    /// Exit with status 1 if a measured target is missed.
    #[arg(long)]
    fail_on_miss: bool,
    /// Targets file (default: the embedded loadgen/targets.toml).
    #[arg(long)]
    targets: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// cluster: an etcd client URL (default: start a local etcd from PATH).
    #[arg(long)]
    etcd: Option<String>,
    /// cluster: in-process nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=64))]
    nodes: u64,
    /// cluster: each node's lease TTL, whole seconds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_ttl: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KeyDist {
    Uniform,
    Zipf,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// The baseline report folder.
    a: PathBuf,
    /// The report folder compared with it.
    b: PathBuf,
    /// Where to write compare.svg (default: target/loadgen/compare).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct PlotArgs {
    /// A report folder, or a summary.json file.
    report: PathBuf,
    /// The SVG to write (default: percentiles.svg beside the summary).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Progress output on stderr: bars when it is a terminal, nothing otherwise.
pub struct Progress {
    on: bool,
}

impl Progress {
    /// Waits out a timed phase of `duration`, showing a bar; returns early if `done()`.
    pub fn phase(&self, label: &str, duration: Duration, done: impl Fn() -> bool) {
        let bar = self.bar(
            label,
            duration.as_millis() as u64,
            "{prefix:>18} [{bar:30}] {elapsed}/{duration}",
        );
        let t0 = Instant::now();
        while t0.elapsed() < duration && !done() {
            std::thread::sleep(
                Duration::from_millis(20).min(duration.saturating_sub(t0.elapsed())),
            );
            bar.set_position(t0.elapsed().as_millis() as u64);
        }
        bar.finish_and_clear();
    }

    /// A counter bar for `n` steps.
    pub fn counter(&self, label: &str, n: u64) -> Counter {
        Counter(self.bar(label, n, "{prefix:>18} [{bar:30}] {pos}/{len} {per_sec}"))
    }

    fn bar(&self, label: &str, len: u64, template: &str) -> ProgressBar {
        if !self.on {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len).with_prefix(label.to_string());
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    }
}

pub struct Counter(ProgressBar);

impl Counter {
    pub fn set(&self, n: u64) {
        self.0.set_position(n);
    }
    /// Joins `threads`, showing `done` (capped at the bar's length) while they run.
    pub fn join<T>(
        &self,
        threads: Vec<std::thread::ScopedJoinHandle<'_, T>>,
        done: &std::sync::atomic::AtomicU64,
        what: &str,
    ) -> Vec<T> {
        let len = self.0.length().unwrap_or(u64::MAX);
        while threads.iter().any(|h| !h.is_finished()) {
            self.set(done.load(std::sync::atomic::Ordering::Relaxed).min(len));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        threads
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("{what} thread panicked"))
            })
            .collect()
    }
    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => match Cli::parse_from(["loadgen", "run"]).command {
            Some(Command::Run(args)) => run(args),
            _ => unreachable!("`run` parses as the run command"),
        },
        Some(Command::Run(args)) => run(args),
        Some(Command::Compare(args)) => compare_cmd(args),
        Some(Command::Plot(args)) => plot_cmd(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadgen: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn config(args: &RunArgs, suite: bool) -> Result<Config, String> {
    if !(0.0..=1.0).contains(&args.read_ratio) {
        return Err(format!(
            "--read-ratio must be within 0..=1, got {}",
            args.read_ratio
        ));
    }
    if args.keys == KeyDist::Zipf && !(args.zipf_s > 0.0 && args.zipf_s.is_finite()) {
        return Err(format!(
            "--zipf-s must be a positive number, got {}",
            args.zipf_s
        ));
    }
    let duration = args.duration.unwrap_or(if suite { 3.0 } else { 5.0 });
    if !(duration > 0.0 && duration <= 86_400.0) {
        return Err(format!(
            "--duration must be within (0, 86400] seconds, got {duration}"
        ));
    }
    let rate = if args.closed_loop {
        Some(0.0)
    } else {
        args.rate
    };
    if rate.is_some_and(|r| !(r >= 0.0 && r.is_finite())) {
        return Err(format!(
            "--rate must be a non-negative number, got {}",
            args.rate.unwrap_or_default()
        ));
    }
    if !(args.write_rate > 0.0 && args.write_rate.is_finite()) {
        return Err(format!(
            "--write-rate must be positive, got {}",
            args.write_rate
        ));
    }
    Ok(Config {
        entries: args.entries,
        threads: args.threads.map_or_else(
            || {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                cores.saturating_sub(1).max(1)
            },
            |t| t as usize,
        ),
        shards: args.shards.map(|s| s as usize),
        duration: Duration::from_secs_f64(duration),
        rate,
        poisson: args.poisson,
        zipf: (args.keys == KeyDist::Zipf).then_some(args.zipf_s),
        pin: args.pin,
        huge_pages: args.huge_pages,
        line_cache: args.line_cache,
        max_load: args.max_load,
        seed: args.seed,
        read_ratio: args.read_ratio,
        write_rate: args.write_rate,
        deaths: args.deaths,
        churn_cycles: args.churn_cycles,
        churn_entries: args.churn_entries,
    })
}

fn run(args: RunArgs) -> Result<ExitCode, String> {
    let targets = match &args.targets {
        Some(p) => Targets::parse(
            &std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        )?,
        None => Targets::parse(targets::EMBEDDED)?,
    };
    let suite = args.workload == Workload::Suite;
    let cfg = config(&args, suite)?;
    let name = args
        .workload
        .to_possible_value()
        .expect("named")
        .get_name()
        .to_string();
    let progress = Progress {
        on: !args.quiet && !args.json && std::io::stderr().is_terminal(),
    };
    let say = |msg: &str| {
        if !args.json && !args.quiet {
            eprintln!("loadgen: {msg}");
        }
    };
    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let timer_ns = recorder::timer_cost_ns();
    let origin = Instant::now();
    let run = Run {
        cfg: &cfg,
        origin,
        progress: &progress,
    };
    let mut f = Findings::default();
    let w = args.workload;
    let wants = |x: Workload| suite || w == x;

    if w == Workload::Cluster {
        cluster_workload(&args, &run, &mut f, &say)?;
        return finish(
            &args,
            &cfg,
            &targets,
            &f,
            &name,
            started_unix,
            timer_ns,
            Vec::new(),
        );
    }

    let needs_prefill = [
        Workload::Lookup,
        Workload::Mixed,
        Workload::Scaling,
        Workload::Memory,
    ]
    .iter()
    .any(|&x| wants(x));
    let rss0 = workloads::rss();
    let registry = cfg.registry()?;
    say(&format!(
        "{name}: {} shards, {} threads, {} cores",
        registry.shard_count(),
        cfg.threads,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    ));
    let ns = registry.namespace("loadgen").expect("valid namespace");
    let _owners = if needs_prefill {
        say(&format!("prefilling {} entries...", cfg.entries));
        let t0 = Instant::now();
        let owners = workloads::prefill(&run, &registry, ns);
        let secs = t0.elapsed().as_secs_f64();
        say(&format!(
            "prefilled in {secs:.2} s ({:.0} registrations/s)",
            cfg.entries as f64 / secs
        ));
        let n = cfg.entries as f64;
        f.prefill_bytes_per_entry = Some((
            registry.memory().total() as f64 / n,
            workloads::rss().saturating_sub(rss0) as f64 / n,
        ));
        owners
    } else {
        Vec::new()
    };

    if wants(Workload::Lookup) {
        f.ops
            .extend(workloads::lookup(&run, &registry, ns, true, "lookup"));
    }
    if wants(Workload::Register) {
        f.ops.extend(workloads::register(&run, &registry));
        f.batched_registrations = Some(workloads::register_batched(&run, &registry));
    }
    if wants(Workload::Mixed) {
        f.ops.extend(workloads::mixed(&run, &registry, ns));
    }
    if wants(Workload::Churn) {
        f.ops.extend(workloads::churn(&run, &registry));
    }
    if wants(Workload::Query) {
        if suite {
            // The suite's registry is the big one; the small one has a tenth of it.
            workloads::query_scaling(
                &run,
                (cfg.entries / 10).max(1),
                Some((&registry, ns)),
                &mut f,
            )?;
        } else {
            workloads::query_scaling(&run, cfg.entries, None, &mut f)?;
        }
    }
    if wants(Workload::Scaling) {
        workloads::scaling(&run, &registry, ns, &mut f);
    }
    if wants(Workload::Memory) {
        workloads::memory_churn(&run, &mut f)?;
    }
    if wants(Workload::DeathStorm) {
        for batch in [false, true] {
            let (storm, op) = workloads::death_storm(&run, &registry, batch);
            f.ops.push(op);
            f.storms.push(storm);
        }
    }

    let warnings = oversubscribed(cfg.threads, registry.shard_count())
        .into_iter()
        .collect();
    finish(
        &args,
        &cfg,
        &targets,
        &f,
        &name,
        started_unix,
        timer_ns,
        warnings,
    )
}

/// Verdicts, the summary, the reports and the table of a finished run.
#[allow(clippy::too_many_arguments)]
fn finish(
    args: &RunArgs,
    cfg: &Config,
    targets: &Targets,
    f: &Findings,
    name: &str,
    started_unix: f64,
    timer_ns: f64,
    warnings: Vec<String>,
) -> Result<ExitCode, String> {
    let (w, suite) = (args.workload, args.workload == Workload::Suite);
    let ids: &[&str] = match w {
        Workload::Suite => &["P1", "P2", "P3", "P4", "P5", "P6"],
        Workload::Lookup => &["P1"],
        Workload::Register => &["P2"],
        Workload::Query => &["P3"],
        Workload::Memory => &["P4"],
        Workload::Scaling => &["P5"],
        Workload::DeathStorm => &["P6"],
        Workload::Cluster => &["P7"],
        _ => &[],
    };
    let verdicts = targets::verdicts(targets, f, ids);
    let mut notes = f.notes.clone();
    if suite {
        notes.push(format!(
            "P3's 10x ratio compares {} and {} entries (`loadgen run query` measures {} and {}).",
            (cfg.entries / 10).max(1),
            cfg.entries,
            cfg.entries,
            cfg.entries * 10
        ));
    }
    let summary = Summary {
        tool: format!("roster-loadgen {}", env!("CARGO_PKG_VERSION")),
        workload: name.to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_unix,
        machine: Machine::detect(timer_ns),
        config: cfg.as_map(),
        ops: f
            .ops
            .iter()
            .map(|d| (d.name.clone(), OpSummary::from_data(d)))
            .collect(),
        verdicts,
        notes,
        warnings,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("target/loadgen").join(format!("{name}-{}", started_unix as u64))
    });
    report::write_all(&out, &summary, &f.ops)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).expect("summary serializes")
        );
    } else {
        println!("{}", summary.table());
        println!("reports: {}", out.display());
    }
    let missed = summary
        .verdicts
        .iter()
        .any(|v| !v.pass && !v.measured.starts_with("not measured"));
    Ok(if args.fail_on_miss && missed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `loadgen run cluster`.
#[cfg(feature = "cluster")]
fn cluster_workload(
    args: &RunArgs,
    run: &Run,
    f: &mut Findings,
    say: &dyn Fn(&str),
) -> Result<(), String> {
    let opts = cluster::Options {
        etcd: args.etcd.clone(),
        nodes: args.nodes as usize,
        lease_ttl: Duration::from_secs(args.lease_ttl),
    };
    cluster::run(run, &opts, f, say)
}

/// `loadgen run cluster` in a loadgen built without it.
#[cfg(not(feature = "cluster"))]
fn cluster_workload(
    _: &RunArgs,
    _: &Run,
    _: &mut Findings,
    _: &dyn Fn(&str),
) -> Result<(), String> {
    Err(
        "this loadgen was built without the cluster workload; build it with \
         `cargo run --release -p roster-loadgen --features cluster -- run cluster` \
         (building needs protoc, running needs etcd: apt-get install protobuf-compiler \
         etcd-server)"
            .into(),
    )
}

/// A warning if the load's threads, the shard writers and the background writer some
/// workloads run outnumber the cores: latency tails then measure the OS scheduler's
/// time slices as much as Roster.
fn oversubscribed(threads: usize, shards: usize) -> Option<String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let busy = (threads + shards + 1) as u64;
    (busy > cores).then(|| {
        format!(
            "{threads} load threads + {shards} shard writers + 1 background writer on \
             {cores} cores: threads wait for a core, so tails (p99 and up) measure the \
             scheduler as much as Roster (more cores, or fewer --threads and \
             --shards, remove this)"
        )
    })
}

fn plot_cmd(args: PlotArgs) -> Result<ExitCode, String> {
    let file = if args.report.is_dir() {
        args.report.join("summary.json")
    } else {
        args.report.clone()
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let summary: Summary = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a loadgen summary: {e}", file.display()))?;
    let out = args.out.unwrap_or_else(|| {
        file.parent()
            .unwrap_or(std::path::Path::new("."))
            .join("percentiles.svg")
    });
    plot::percentiles(&out, &[("", &summary)])?;
    println!("plot: {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn compare_cmd(args: CompareArgs) -> Result<ExitCode, String> {
    let a = compare::load(&args.a)?;
    let b = compare::load(&args.b)?;
    let (an, bn) = (args.a.display().to_string(), args.b.display().to_string());
    println!("{}", compare::table(&a, &b, &an, &bn));
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("target/loadgen/compare"));
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let svg = out.join("compare.svg");
    plot::percentiles(&svg, &[("A", &a), ("B", &b)])?;
    println!("overlay: {}", svg.display());
    Ok(ExitCode::SUCCESS)
}
