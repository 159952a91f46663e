//! `loadgen`: drives a Roster registry and reports latency percentiles against SPEC.md's
//! targets. This first version runs two workloads on embedded defaults:
//!
//! - `lookup` (P1): uniform random lookups of prefilled keys, on `--threads` threads, while
//!   one writer thread keeps registering and unregistering other keys.
//! - `register` (P2): synchronous register round trips of fresh keys, one thread.
//!
//! Latency here is closed-loop (each op timed from its own start). The full tool (open-loop
//! schedules, HDR reports, verdict files, compare, plots) is its own issue.
#![forbid(unsafe_code)]

mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
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

    let mut report = Report::default();
    report
        .rows
        .push(lookup_workload(&registry, ns, &args, threads));
    report.rows.push(register_workload(&registry, ns, &args));
    drop(owners);
    println!("{}", report.table());
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
