//! `loadgen`: drives a Roster registry and reports latency percentiles against SPEC.md's
//! targets. This first version runs two workloads on embedded defaults:
//!
//! - `lookup` (P1): uniform random lookups of prefilled keys, on `--threads` threads, while
//!   one writer thread keeps registering and unregistering other keys.
//! - `register` (P2): synchronous register round trips of fresh keys, one thread.
//! - `death-storm` (P6): `--deaths` processes, one entry each, all killed at once from two
//!   threads while readers look their keys up; reports the time until every entry is
//!   reclaimed, per-death cleanup lag, and stale reads (an entry returned for a process
//!   whose death had completed before the lookup began; must be 0).
//!
//! Latency here is closed-loop (each op timed from its own start). The full tool (open-loop
//! schedules, HDR reports, verdict files, compare, plots) is its own issue.
#![forbid(unsafe_code)]

mod stats;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use roster::{Health, Key, Metadata, Namespace, Registry};

use stats::{Report, Row};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Roster load generator (first version: lookup + register workloads).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Entries registered before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Lookup threads (default: available parallelism).
    #[arg(long)]
    threads: Option<usize>,
    /// Shards (default: available parallelism, rounded up to a power of two).
    #[arg(long)]
    shards: Option<usize>,
    /// Seconds to run the lookup workload.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Register round trips to time.
    #[arg(long, default_value_t = 50_000)]
    registers: u64,
    /// Yielding polls an idle shard writer makes before parking (see
    /// `RegistryBuilder::writer_idle_polls`).
    #[arg(long, default_value_t = 64)]
    writer_idle_polls: u32,
    /// Processes killed at once by the death-storm workload.
    #[arg(long, default_value_t = 100_000)]
    deaths: u64,
    /// Reader threads looking up keys during the death storm.
    #[arg(long, default_value_t = 2)]
    storm_readers: u64,
    /// Workloads to run (default: all).
    #[arg(long, value_delimiter = ',', value_parser = ["lookup", "register", "death-storm"])]
    only: Vec<String>,
    /// Seed for key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// SplitMix64: a tiny, fast, seedable generator for key choice.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

/// Metadata as SPEC P4 sizes it: 3 capabilities and 32 bytes of attributes.
fn agent_meta(i: u64) -> Metadata {
    Metadata::new()
        .capability("plan")
        .capability(if i % 2 == 0 { "search" } else { "code" })
        .capability(format!("shard-{}", i % 16))
        .health(Health::Healthy)
        .attribute("region", "eu-west-1-az2")
        .attribute("load", (i % 100) as i64)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn main() {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.threads.unwrap_or(cores).max(1);
    let mut builder = Registry::builder()
        .capacity(args.entries as usize + 100_000)
        .writer_idle_polls(args.writer_idle_polls);
    if let Some(s) = args.shards {
        builder = builder.shards(s);
    }
    let registry = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadgen: cannot build registry: {e}");
            std::process::exit(2);
        }
    };
    let ns = registry.namespace("loadgen").expect("valid namespace");
    eprintln!(
        "loadgen: {} shards, {} lookup threads, {} cores; prefilling {} entries...",
        registry.shard_count(),
        threads,
        cores,
        args.entries
    );

    let start = Instant::now();
    let owners = prefill(&registry, ns, args.entries, cores);
    eprintln!(
        "loadgen: prefilled in {:.2?} ({:.0} registrations/s)",
        start.elapsed(),
        args.entries as f64 / start.elapsed().as_secs_f64()
    );

    let wants = |w: &str| args.only.is_empty() || args.only.iter().any(|o| o == w);
    let mut report = Report::default();
    if wants("lookup") {
        report
            .rows
            .push(lookup_workload(&registry, ns, &args, threads));
    }
    if wants("register") {
        report.rows.push(register_workload(&registry, ns, &args));
    }
    if wants("death-storm") {
        report.storms.push(death_storm(&registry, &args, false));
        report.storms.push(death_storm(&registry, &args, true));
    }
    drop(owners);
    println!("{}", report.table());
}

/// P6: `args.deaths` processes die at once while readers look their keys up: dropped
/// one by one from two threads, or (`batch`) ended by one `exit_all` call.
fn death_storm(registry: &Registry, args: &Args, batch: bool) -> stats::Storm {
    let mode = if batch { "batch" } else { "drops" };
    let ns = registry
        .namespace(&format!("death-storm-{mode}"))
        .expect("valid namespace");
    let n = args.deaths.max(1);
    const KILLERS: u64 = 2;
    eprintln!("loadgen: death-storm: spawning {n} processes with one entry each...");
    // Process i is killed by killer i % KILLERS, as its (i / KILLERS)-th victim.
    let mut victims: Vec<Vec<roster::Process>> = (0..KILLERS).map(|_| Vec::new()).collect();
    for i in 0..n {
        let p = registry.spawn();
        registry
            .register(&p, &Key::new(ns, i), &agent_meta(i))
            .expect("storm register");
        victims[(i % KILLERS) as usize].push(p);
    }
    let killed: Vec<AtomicU64> = (0..KILLERS).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    let (stale, lookups) = (AtomicU64::new(0), AtomicU64::new(0));
    let lag_before = registry.cleanup_lag();
    let barrier = Barrier::new(KILLERS as usize + 1);
    let (kill_time, reclaim_time) = std::thread::scope(|s| {
        for t in 0..args.storm_readers {
            let (killed, stop, stale, lookups) = (&killed, &stop, &stale, &lookups);
            s.spawn(move || {
                let mut rng = Rng(args.seed ^ 0xdead ^ t);
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.below(n);
                    // Dead before this lookup began: its killer had moved past it.
                    let dead = killed[(i % KILLERS) as usize].load(Ordering::Acquire) > i / KILLERS;
                    let found = registry.lookup(&Key::new(ns, i)).expect("lookup").is_some();
                    if dead && found {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        if batch {
            let (killed, barrier) = (&killed, &barrier);
            s.spawn(move || {
                barrier.wait();
                let sizes: Vec<u64> = victims.iter().map(|v| v.len() as u64).collect();
                registry.exit_all(victims.into_iter().flatten(), roster::ExitReason::Shutdown);
                for (k, len) in killed.iter().zip(sizes) {
                    k.store(len, Ordering::Release);
                }
            });
            // The barrier counts KILLERS waiters besides this thread.
            for _ in 1..KILLERS {
                s.spawn(move || barrier.wait());
            }
        } else {
            for (t, list) in victims.into_iter().enumerate() {
                let (killed, barrier) = (&killed, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    for (j, p) in list.into_iter().enumerate() {
                        drop(p);
                        killed[t].store(j as u64 + 1, Ordering::Release);
                    }
                });
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        barrier.wait();
        let t0 = Instant::now();
        // Poll with short sleeps: a spinning observer would steal a core from the writers.
        while killed
            .iter()
            .map(|k| k.load(Ordering::Relaxed))
            .sum::<u64>()
            < n
        {
            std::thread::sleep(Duration::from_micros(100));
        }
        let kill_time = t0.elapsed();
        while registry.count(ns) > 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
        let reclaim_time = t0.elapsed();
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        (kill_time, reclaim_time)
    });
    let lag = registry.cleanup_lag().since(&lag_before);
    eprintln!(
        "loadgen: death-storm ({mode}): {n} deaths issued in {kill_time:.2?}, all reclaimed after {reclaim_time:.2?}; {} lookups, {} stale",
        lookups.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed)
    );
    stats::Storm {
        mode,
        deaths: n,
        kill_time,
        reclaim_time,
        lag_p50: lag.quantile(0.5),
        lag_p99: lag.quantile(0.99),
        lag_max: lag.max(),
        over_window: lag.over(registry.cleanup_window()),
        window: registry.cleanup_window(),
        lookups: lookups.load(Ordering::Relaxed),
        stale: stale.load(Ordering::Relaxed),
    }
}

/// Registers `n` entries from `threads` threads; returns the owning processes.
fn prefill(registry: &Registry, ns: Namespace, n: u64, threads: usize) -> Vec<roster::Process> {
    let per = n.div_ceil(threads as u64);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                s.spawn(move || {
                    let p = registry.spawn();
                    for i in t * per..((t + 1) * per).min(n) {
                        registry
                            .register(&p, &Key::new(ns, i), &agent_meta(i))
                            .expect("prefill register");
                    }
                    p
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("prefill thread"))
            .collect()
    })
}

fn lookup_workload(registry: &Registry, ns: Namespace, args: &Args, threads: usize) -> Row {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let duration = Duration::from_secs_f64(args.secs);
    let (hist, ops, elapsed, writes) = std::thread::scope(|s| {
        // One writer churns keys outside the looked-up range: concurrent writes for P1.
        let writer = s.spawn(|| {
            let p = registry.spawn();
            let mut writes = 0u64;
            let mut i = 0u64;
            barrier.wait();
            while !stop.load(Ordering::Relaxed) {
                let key = Key::new(ns, u64::MAX - (i % 1024));
                registry
                    .register(&p, &key, &agent_meta(i))
                    .expect("churn register");
                registry.unregister(&p, &key).expect("churn unregister");
                writes += 2;
                i += 1;
            }
            writes
        });
        let readers: Vec<_> = (0..threads as u64)
            .map(|t| {
                let (barrier, stop) = (&barrier, &stop);
                s.spawn(move || {
                    let mut rng = Rng(args.seed ^ (t + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
                    let mut hist = histogram();
                    let mut entry = roster::Entry::new();
                    let mut ops = 0u64;
                    barrier.wait();
                    while !stop.load(Ordering::Relaxed) {
                        let key = Key::new(ns, rng.below(args.entries));
                        let t0 = Instant::now();
                        let found = registry.lookup_into(&key, &mut entry).expect("lookup");
                        let ns_taken = t0.elapsed().as_nanos() as u64;
                        assert!(found, "prefilled key missing");
                        hist.saturating_record(ns_taken.max(1));
                        ops += 1;
                    }
                    (hist, ops)
                })
            })
            .collect();
        let t0 = Instant::now();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let mut hist = histogram();
        let mut ops = 0;
        for r in readers {
            let (h, n) = r.join().expect("reader thread");
            hist.add(&h).expect("same bounds");
            ops += n;
        }
        let elapsed = t0.elapsed();
        (hist, ops, elapsed, writer.join().expect("writer thread"))
    });
    eprintln!(
        "loadgen: lookup: {ops} ops on {threads} threads, {writes} concurrent writes, in {elapsed:.2?}"
    );
    Row::new("lookup", "P1", &hist, ops, elapsed)
}

fn register_workload(registry: &Registry, ns: Namespace, args: &Args) -> Row {
    let p = registry.spawn();
    let mut hist = histogram();
    let base = args.entries + 1_000_000;
    let t0 = Instant::now();
    for i in 0..args.registers {
        let key = Key::new(ns, base + i);
        let meta = agent_meta(i);
        let s = Instant::now();
        registry.register(&p, &key, &meta).expect("register");
        hist.saturating_record((s.elapsed().as_nanos() as u64).max(1));
    }
    let elapsed = t0.elapsed();
    eprintln!(
        "loadgen: register: {} round trips in {elapsed:.2?}",
        args.registers
    );
    Row::new("register", "P2", &hist, args.registers, elapsed)
}
