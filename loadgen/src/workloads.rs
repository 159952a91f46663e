//! The workloads: each measures and adds to the run's [`Findings`]; `targets.rs` turns
//! those into the P1-P7 verdicts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use roster::{ExitReason, Health, Key, Metadata, Namespace, Process, Registry};

use crate::recorder::{histogram, MonoClock, Pace, Recorder};
use crate::report::OpData;
use crate::rng::{Keys, Rng, Zipf};
use crate::Progress;

/// A validated run configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub entries: u64,
    pub threads: usize,
    pub shards: Option<usize>,
    pub duration: Duration,
    /// Per-thread open-loop rate, ops/s; `None` = the workload's default; 0 = closed loop.
    pub rate: Option<f64>,
    pub poisson: bool,
    pub zipf: Option<f64>,
    pub pin: bool,
    pub huge_pages: bool,
    pub line_cache: bool,
    pub max_load: u8,
    pub seed: u64,
    pub read_ratio: f64,
    pub write_rate: f64,
    pub deaths: u64,
    pub churn_cycles: u32,
    pub churn_entries: u64,
}

impl Config {
    pub fn as_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put("entries", self.entries.to_string());
        put("threads", self.threads.to_string());
        put(
            "shards",
            self.shards.map_or("auto".into(), |s| s.to_string()),
        );
        put("duration_s", format!("{}", self.duration.as_secs_f64()));
        put(
            "rate_per_thread",
            self.rate
                .map_or("workload default".into(), |r| r.to_string()),
        );
        put(
            "arrivals",
            if self.poisson { "poisson" } else { "fixed" }.into(),
        );
        put(
            "keys",
            self.zipf
                .map_or("uniform".into(), |s| format!("zipf(s={s})")),
        );
        put("pin", self.pin.to_string());
        put("huge_pages", self.huge_pages.to_string());
        put("line_cache", self.line_cache.to_string());
        put("max_load", self.max_load.to_string());
        put("seed", self.seed.to_string());
        put("read_ratio", self.read_ratio.to_string());
        put("write_rate", self.write_rate.to_string());
        put("deaths", self.deaths.to_string());
        put("churn_cycles", self.churn_cycles.to_string());
        put("churn_entries", self.churn_entries.to_string());
        m
    }

    fn pace(&self, default_rate: f64) -> Pace {
        Pace::for_rate(self.rate.unwrap_or(default_rate), self.poisson)
    }

    fn keys(&self) -> Keys {
        match self.zipf {
            Some(s) => Keys::Zipf(Zipf::new(self.entries, s)),
            None => Keys::Uniform(self.entries),
        }
    }

    pub fn registry(&self) -> Result<Registry, String> {
        // Writes are measured to completion: with the default 10 ms deadline a stalled
        // write would end as a `Timeout` and drop out of the histogram, hiding the very
        // tail the loadgen exists to show.
        let mut b = Registry::builder()
            .capacity(self.entries as usize + 100_000)
            .pin_writers(self.pin)
            .huge_pages(self.huge_pages)
            .line_cache(self.line_cache)
            .max_load(self.max_load)
            .write_deadline(Duration::from_secs(60));
        if let Some(s) = self.shards {
            b = b.shards(s);
        }
        b.build().map_err(|e| format!("cannot build registry: {e}"))
    }
}

/// Default per-thread open-loop rates, sized for a small machine.
pub const LOOKUP_RATE: f64 = 200_000.0;
pub const REGISTER_RATE: f64 = 20_000.0;
pub const MIXED_RATE: f64 = 100_000.0;
pub const CHURN_RATE: f64 = 10_000.0;

/// Metadata as SPEC P4 sizes it: 3 capabilities and 32 bytes of attributes.
pub fn agent_meta(i: u64) -> Metadata {
    Metadata::new()
        .capability("plan")
        .capability(if i % 2 == 0 { "search" } else { "code" })
        .capability(format!("shard-{}", i % 16))
        .health(Health::Healthy)
        .attribute("region", "eu-west-1-az2")
        .attribute("load", (i % 100) as i64)
}

/// What the workloads measured, beyond per-op histograms.
#[derive(Default)]
pub struct Findings {
    pub ops: Vec<OpData>,
    pub prefill_bytes_per_entry: Option<(f64, f64)>,
    pub churn_growth: Option<(f64, f64, u32)>,
    pub scaling: Option<Vec<(usize, f64)>>,
    pub p99_writers: Option<(u64, u64)>,
    /// P2's batched rate: registrations per second through `register_many`, and the
    /// entries and threads it was measured with.
    pub batched_registrations: Option<(f64, u64, usize)>,
    pub storms: Vec<Storm>,
    /// Entries at which P3 was measured: smaller first.
    pub query_sizes: Vec<u64>,
    /// The cluster workload's node death: until its names were gone elsewhere, and its
    /// lease TTL.
    pub cluster_death: Option<(Duration, Duration)>,
    pub notes: Vec<String>,
}

pub struct Storm {
    pub mode: &'static str,
    pub deaths: u64,
    pub issued: Duration,
    pub reclaimed: Duration,
    pub lag_p50: Duration,
    pub lag_p99: Duration,
    pub stale: u64,
    pub lookups: u64,
}

/// Shared run context.
pub struct Run<'a> {
    pub cfg: &'a Config,
    pub origin: Instant,
    pub progress: &'a Progress,
}

impl Run<'_> {
    fn clock(&self) -> MonoClock {
        MonoClock::new(self.origin)
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn op(
        &self,
        name: &str,
        hist: Histogram<u64>,
        elapsed: Duration,
        threads: usize,
        pace: Pace,
        started: Duration,
    ) -> OpData {
        let rate_per_thread = match pace {
            Pace::Closed => None,
            Pace::Fixed { interval_ns } => Some(1e9 / interval_ns),
            Pace::Poisson { mean_ns } => Some(1e9 / mean_ns),
        };
        OpData {
            name: name.to_string(),
            hist,
            elapsed,
            threads,
            rate_per_thread,
            started,
        }
    }

    /// Runs `body` on `threads` threads for the configured duration (or until every
    /// thread returns), showing progress; returns the elapsed time and their results.
    fn timed<T: Send>(
        &self,
        label: &str,
        threads: usize,
        duration: Duration,
        body: impl Fn(usize, &AtomicBool) -> T + Sync,
    ) -> (Duration, Vec<T>) {
        let stop = AtomicBool::new(false);
        let barrier = Barrier::new(threads + 1);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (stop, barrier, body) = (&stop, &barrier, &body);
                    s.spawn(move || {
                        barrier.wait();
                        body(t, stop)
                    })
                })
                .collect();
            barrier.wait();
            let t0 = Instant::now();
            self.progress
                .phase(label, duration, || stop.load(Ordering::Relaxed));
            stop.store(true, Ordering::Relaxed);
            let out = handles
                .into_iter()
                .map(|h| h.join().expect("workload thread"))
                .collect();
            (t0.elapsed(), out)
        })
    }
}

/// Registers `cfg.entries` P4-shaped entries from all cores; returns the owners.
pub fn prefill(run: &Run, r: &Registry, ns: Namespace) -> Vec<Process> {
    let n = run.cfg.entries;
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get()) as u64;
    let per = n.div_ceil(threads);
    let done = AtomicU64::new(0);
    let bar = run.progress.counter("prefill", n);
    let owners = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let done = &done;
                s.spawn(move || {
                    let p = r.spawn();
                    for i in t * per..((t + 1) * per).min(n) {
                        r.register(&p, &Key::new(ns, i), &agent_meta(i))
                            .expect("prefill register");
                        if i % 4096 == 0 {
                            done.fetch_add(4096, Ordering::Relaxed);
                        }
                    }
                    p
                })
            })
            .collect();
        bar.join(hs, &done, "prefill")
    });
    bar.finish();
    owners
}

/// P1: lookups on `threads` threads (open loop) while one writer churns other keys.
pub fn lookup(
    run: &Run,
    r: &Registry,
    ns: Namespace,
    with_writer: bool,
    label: &str,
) -> Vec<OpData> {
    let cfg = run.cfg;
    let pace = cfg.pace(LOOKUP_RATE);
    let keys = cfg.keys();
    let start = run.now_ns() + 1_000_000;
    let started = Duration::from_nanos(start);
    let writer_pace = Pace::for_rate(cfg.write_rate, cfg.poisson);
    let workers = cfg.threads + usize::from(with_writer);
    let (elapsed, results) = run.timed(label, workers, cfg.duration, |t, stop| {
        if t == cfg.threads {
            // The writer: register + unregister of keys outside the looked-up range.
            let p = r.spawn();
            let mut rec = Recorder::new(run.clock(), writer_pace, cfg.seed ^ 0x77, start);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = Key::new(ns, u64::MAX - (i / 2) % 4096);
                let from = rec.begin();
                if i % 2 == 0 {
                    r.register(&p, &key, &agent_meta(i))
                        .expect("churn register");
                } else {
                    r.unregister(&p, &key).expect("churn unregister");
                }
                rec.end(from);
                i += 1;
            }
            return ("write", rec.hist);
        }
        let mut rng = Rng::new(cfg.seed ^ ((t as u64 + 1) * 0x2545_f491));
        let mut rec = Recorder::new(run.clock(), pace, cfg.seed + t as u64, start);
        let mut entry = roster::Entry::new();
        while !stop.load(Ordering::Relaxed) {
            let key = Key::new(ns, keys.pick(&mut rng));
            let from = rec.begin();
            let found = r.lookup_into(&key, &mut entry).expect("lookup");
            rec.end(from);
            assert!(found, "a prefilled key is missing");
        }
        ("lookup", rec.hist)
    });
    merge(
        run,
        results,
        elapsed,
        &[
            (label, cfg.threads, pace),
            (&format!("{label}-writer"), 1, writer_pace),
        ],
        started,
    )
}

/// Merges per-thread histograms by op kind ("lookup" / "write") into named ops.
fn merge(
    run: &Run,
    results: Vec<(&'static str, Histogram<u64>)>,
    elapsed: Duration,
    names: &[(&str, usize, Pace)],
    started: Duration,
) -> Vec<OpData> {
    let mut read = histogram();
    let mut write = histogram();
    for (kind, h) in results {
        let into = if kind == "lookup" {
            &mut read
        } else {
            &mut write
        };
        into.add(&h).expect("same histogram bounds");
    }
    let mut out = vec![run.op(names[0].0, read, elapsed, names[0].1, names[0].2, started)];
    if !write.is_empty() {
        out.push(run.op(names[1].0, write, elapsed, names[1].1, names[1].2, started));
    }
    out
}

/// P2: synchronous register round trips of fresh keys, one thread, open loop.
pub fn register(run: &Run, r: &Registry) -> Vec<OpData> {
    let cfg = run.cfg;
    let ns = r.namespace("loadgen-register").expect("namespace");
    let pace = cfg.pace(REGISTER_RATE);
    let start = run.now_ns() + 1_000_000;
    let p = r.spawn();
    let (elapsed, mut hists) = run.timed("register", 1, cfg.duration, |_, stop| {
        let mut rec = Recorder::new(run.clock(), pace, cfg.seed, start);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let meta = agent_meta(i);
            let from = rec.begin();
            r.register(&p, &Key::new(ns, i), &meta).expect("register");
            rec.end(from);
            i += 1;
        }
        rec.hist
    });
    // Leave the registry as it was: one kill removes them all.
    p.exit(ExitReason::Normal);
    vec![run.op(
        "register",
        hists.remove(0),
        elapsed,
        1,
        pace,
        Duration::from_nanos(start),
    )]
}

/// Items per `register_many` call in P2's batched measurement.
pub const REGISTER_BATCH: usize = 1024;

/// P2's batched rate: every core registers fresh P4-shaped entries through
/// `register_many` in batches of [`REGISTER_BATCH`] (one round trip per shard per
/// batch), closed loop, until a quarter of `cfg.entries` (at least 100k) are in; then
/// they are removed again, and the workload waits for that cleanup so the next workload
/// does not run behind it. Metadata is built before the clock starts, as a caller's
/// would be.
pub fn register_batched(run: &Run, r: &Registry) -> (f64, u64, usize) {
    let total = (run.cfg.entries / 4).max(100_000);
    let before = r.len();
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
    let ns = r.namespace("loadgen-batched").expect("namespace");
    let per = total.div_ceil(threads as u64);
    let metas: Vec<Metadata> = (0..REGISTER_BATCH as u64).map(agent_meta).collect();
    let bar = run.progress.counter("P2 batched", total);
    let done = AtomicU64::new(0);
    let t0 = Instant::now();
    let owners: Vec<Process> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads as u64)
            .map(|t| {
                let (done, metas) = (&done, &metas);
                s.spawn(move || {
                    let p = r.spawn();
                    let keys = (t * per..((t + 1) * per).min(total)).collect::<Vec<_>>();
                    for chunk in keys.chunks(REGISTER_BATCH) {
                        let items = chunk.iter().zip(metas).map(|(&k, m)| (Key::new(ns, k), m));
                        let results = r.register_many(&p, items).expect("register_many");
                        if let Some(e) = results.into_iter().find_map(Result::err) {
                            panic!("batched register: {e}");
                        }
                        done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    p
                })
            })
            .collect();
        bar.join(hs, &done, "batched register")
    });
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    bar.finish();
    for p in owners {
        p.exit(ExitReason::Normal);
    }
    let cleanup = Instant::now();
    while r.len() > before && cleanup.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(2));
    }
    (rate, total, threads)
}

/// Reads and writes mixed by `read_ratio` on every thread's one schedule.
pub fn mixed(run: &Run, r: &Registry, ns: Namespace) -> Vec<OpData> {
    let cfg = run.cfg;
    let pace = cfg.pace(MIXED_RATE);
    let keys = cfg.keys();
    let start = run.now_ns() + 1_000_000;
    let wns = r.namespace("loadgen-mixed").expect("namespace");
    let (elapsed, results) = run.timed("mixed", cfg.threads, cfg.duration, |t, stop| {
        let p = r.spawn();
        let mut rng = Rng::new(cfg.seed ^ 0x3131 ^ t as u64);
        let mut rec = Recorder::new(run.clock(), pace, cfg.seed + t as u64, start);
        let (mut look, mut reg, mut unreg) = (histogram(), histogram(), histogram());
        let mut entry = roster::Entry::new();
        let mut mine = std::collections::VecDeque::new();
        let mut next = (t as u64) << 40;
        while !stop.load(Ordering::Relaxed) {
            let read = rng.unit() <= cfg.read_ratio;
            let from = rec.begin();
            let hist = if read {
                r.lookup_into(&Key::new(ns, keys.pick(&mut rng)), &mut entry)
                    .expect("lookup");
                &mut look
            } else if mine.len() < 64 {
                r.register(&p, &Key::new(wns, next), &agent_meta(next))
                    .expect("register");
                mine.push_back(next);
                next += 1;
                &mut reg
            } else {
                let k = mine.pop_front().expect("non-empty");
                r.unregister(&p, &Key::new(wns, k)).expect("unregister");
                &mut unreg
            };
            let latency = rec.end(from);
            hist.saturating_record(latency);
        }
        (look, reg, unreg)
    });
    let (mut look, mut reg, mut unreg) = (histogram(), histogram(), histogram());
    for (a, b, c) in results {
        look.add(a).expect("bounds");
        reg.add(b).expect("bounds");
        unreg.add(c).expect("bounds");
    }
    let started = Duration::from_nanos(start);
    let t = cfg.threads;
    vec![
        run.op("mixed-lookup", look, elapsed, t, pace, started),
        run.op("mixed-register", reg, elapsed, t, pace, started),
        run.op("mixed-unregister", unreg, elapsed, t, pace, started),
    ]
}

/// Register + unregister cycles on every thread, open loop.
pub fn churn(run: &Run, r: &Registry) -> Vec<OpData> {
    let cfg = run.cfg;
    let pace = cfg.pace(CHURN_RATE);
    let start = run.now_ns() + 1_000_000;
    let ns = r.namespace("loadgen-churn").expect("namespace");
    let (elapsed, results) = run.timed("churn", cfg.threads, cfg.duration, |t, stop| {
        let p = r.spawn();
        let mut rec = Recorder::new(run.clock(), pace, cfg.seed ^ 0x99 ^ t as u64, start);
        let (mut reg, mut unreg) = (histogram(), histogram());
        let mut i = (t as u64) << 40;
        while !stop.load(Ordering::Relaxed) {
            let key = Key::new(ns, i);
            let from = rec.begin();
            r.register(&p, &key, &agent_meta(i)).expect("register");
            reg.saturating_record(rec.end(from));
            let from = rec.begin();
            r.unregister(&p, &key).expect("unregister");
            unreg.saturating_record(rec.end(from));
            i += 1;
        }
        (reg, unreg)
    });
    let (mut reg, mut unreg) = (histogram(), histogram());
    for (a, b) in results {
        reg.add(a).expect("bounds");
        unreg.add(b).expect("bounds");
    }
    let started = Duration::from_nanos(start);
    vec![
        run.op("churn-register", reg, elapsed, cfg.threads, pace, started),
        run.op(
            "churn-unregister",
            unreg,
            elapsed,
            cfg.threads,
            pace,
            started,
        ),
    ]
}

/// P5: closed-loop lookup throughput at 1, 2, 4 .. `threads` threads, and the open-loop
/// lookup p99 with the churn writer off and on.
pub fn scaling(run: &Run, r: &Registry, ns: Namespace, f: &mut Findings) {
    let cfg = run.cfg;
    let keys = cfg.keys();
    // P5 is about scaling up to all cores, whatever the other workloads' thread count.
    let top = cfg
        .threads
        .max(std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut counts: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n < top)
        .collect();
    counts.push(top);
    let secs = (cfg.duration / 2).max(Duration::from_millis(200));
    let mut points = Vec::new();
    for &n in &counts {
        let (elapsed, ops) = run.timed(&format!("scaling x{n}"), n, secs, |t, stop| {
            let mut rng = Rng::new(cfg.seed ^ 0x5ca1e ^ t as u64);
            let mut entry = roster::Entry::new();
            let mut ops = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    r.lookup_into(&Key::new(ns, keys.pick(&mut rng)), &mut entry)
                        .expect("lookup");
                }
                ops += 64;
            }
            ops
        });
        points.push((n, ops.iter().sum::<u64>() as f64 / elapsed.as_secs_f64()));
    }
    f.scaling = Some(points);
    let quiet = Config {
        duration: secs,
        ..cfg.clone()
    };
    let quiet_run = Run {
        cfg: &quiet,
        origin: run.origin,
        progress: run.progress,
    };
    let off = lookup(&quiet_run, r, ns, false, "lookup-writers-off");
    let on = lookup(&quiet_run, r, ns, true, "lookup-writers-on");
    f.p99_writers = Some((
        off[0].hist.value_at_quantile(0.99),
        on[0].hist.value_at_quantile(0.99),
    ));
    f.ops.extend(off);
    f.ops.extend(on);
}

/// Resident set size of this process, bytes (Linux; 0 elsewhere).
pub fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// P4, second part: `churn_cycles` fills and empties of a fresh registry; memory at each
/// full point, the last against the first.
pub fn memory_churn(run: &Run, f: &mut Findings) -> Result<(), String> {
    let cfg = run.cfg;
    let r = Config {
        entries: cfg.churn_entries,
        ..cfg.clone()
    }
    .registry()?;
    let ns = r.namespace("loadgen-memory").expect("namespace");
    let n = cfg.churn_entries;
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get()) as u64;
    let bar = run
        .progress
        .counter("memory churn", cfg.churn_cycles as u64);
    let (mut first, mut last) = ((0.0, 0.0), (0.0, 0.0));
    let rss0 = rss();
    for cycle in 0..cfg.churn_cycles {
        let owners: Vec<Process> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let r = &r;
                    s.spawn(move || {
                        let p = r.spawn();
                        for i in (t..n).step_by(threads as usize) {
                            r.register(&p, &Key::new(ns, i), &agent_meta(i))
                                .expect("fill");
                        }
                        p
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("fill thread"))
                .collect()
        });
        let point = (r.memory().total() as f64, rss().saturating_sub(rss0) as f64);
        if cycle == 0 {
            first = point;
        }
        last = point;
        r.exit_all(owners, ExitReason::Normal);
        let t0 = Instant::now();
        while !r.is_empty() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        bar.set(cycle as u64 + 1);
    }
    bar.finish();
    let audit = r.audit().map_err(|e| e.to_string())?;
    if audit.entries != 0 || audit.block_bytes != 0 {
        f.notes.push(format!(
            "memory churn: registry not empty after the last cycle: {audit:?}"
        ));
    }
    f.churn_growth = Some((
        last.0 / first.0.max(1.0),
        last.1 / first.1.max(1.0),
        cfg.churn_cycles,
    ));
    Ok(())
}

/// P6: `deaths` processes with one entry each die at once while readers look them up:
/// dropped one by one from two threads, or (`batch`) ended by one `exit_all` call.
pub fn death_storm(run: &Run, r: &Registry, batch: bool) -> (Storm, OpData) {
    let cfg = run.cfg;
    let mode = if batch { "batch" } else { "drops" };
    let ns = r
        .namespace(&format!("loadgen-storm-{mode}"))
        .expect("namespace");
    let n = cfg.deaths.max(1);
    const KILLERS: u64 = 2;
    let bar = run
        .progress
        .counter(&format!("death-storm ({mode}) setup"), n);
    let mut victims: Vec<Vec<Process>> = (0..KILLERS).map(|_| Vec::new()).collect();
    for i in 0..n {
        let p = r.spawn();
        r.register(&p, &Key::new(ns, i), &agent_meta(i))
            .expect("storm register");
        victims[(i % KILLERS) as usize].push(p);
        if i % 8192 == 0 {
            bar.set(i);
        }
    }
    bar.finish();
    let killed: Vec<AtomicU64> = (0..KILLERS).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    let (stale, lookups) = (AtomicU64::new(0), AtomicU64::new(0));
    let lag_before = r.cleanup_lag();
    let barrier = Barrier::new(KILLERS as usize + 1);
    let started = run.origin.elapsed();
    let readers = 2u64;
    let (issued, reclaimed, hists) = std::thread::scope(|s| {
        let readers: Vec<_> = (0..readers)
            .map(|t| {
                let (killed, stop, stale, lookups) = (&killed, &stop, &stale, &lookups);
                s.spawn(move || {
                    let mut rng = Rng::new(cfg.seed ^ 0xdead ^ t);
                    let mut rec = Recorder::new(run.clock(), Pace::Closed, 0, 0);
                    while !stop.load(Ordering::Relaxed) {
                        let i = rng.below(n);
                        // Dead before this lookup began: its killer had moved past it.
                        let dead =
                            killed[(i % KILLERS) as usize].load(Ordering::Acquire) > i / KILLERS;
                        let from = rec.begin();
                        let found = r.lookup(&Key::new(ns, i)).expect("lookup").is_some();
                        rec.end(from);
                        if dead && found {
                            stale.fetch_add(1, Ordering::Relaxed);
                        }
                        lookups.fetch_add(1, Ordering::Relaxed);
                    }
                    rec.hist
                })
            })
            .collect();
        if batch {
            let (killed, barrier) = (&killed, &barrier);
            s.spawn(move || {
                barrier.wait();
                let sizes: Vec<u64> = victims.iter().map(|v| v.len() as u64).collect();
                r.exit_all(victims.into_iter().flatten(), ExitReason::Shutdown);
                for (k, len) in killed.iter().zip(sizes) {
                    k.store(len, Ordering::Release);
                }
            });
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
        let issued = t0.elapsed();
        while r.count(ns).is_ok_and(|n| n > 0) && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_micros(100));
        }
        let reclaimed = t0.elapsed();
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        let hists: Vec<Histogram<u64>> = readers
            .into_iter()
            .map(|h| h.join().expect("reader"))
            .collect();
        (issued, reclaimed, hists)
    });
    let elapsed = run.origin.elapsed() - started;
    let mut hist = histogram();
    for h in hists {
        hist.add(h).expect("bounds");
    }
    let lag = r.cleanup_lag().since(&lag_before);
    let storm = Storm {
        mode,
        deaths: n,
        issued,
        reclaimed,
        lag_p50: lag.quantile(0.5),
        lag_p99: lag.quantile(0.99),
        stale: stale.load(Ordering::Relaxed),
        lookups: lookups.load(Ordering::Relaxed),
    };
    let op = run.op(
        &format!("storm-{mode}-lookup"),
        hist,
        elapsed,
        readers as usize,
        Pace::Closed,
        started,
    );
    (storm, op)
}

/// Queries per second (per thread) of the query workload's open-loop schedule.
pub const QUERY_RATE: f64 = 500.0;
/// Holders of the "rare" capability the query workload looks for.
pub const RARE: u64 = 1000;

/// Adds `RARE` holders of capability "rare" to `ns` (keys above `base`), and interns
/// capability "vacant" with no holder left, for P3's 1,000-match and 0-match queries.
pub fn add_rare(r: &Registry, ns: Namespace, base: u64) -> Process {
    let p = r.spawn();
    for i in 0..RARE {
        let meta = agent_meta(i).capability("rare");
        r.register(&p, &Key::new(ns, base + i), &meta)
            .expect("rare register");
    }
    let ghost = Key::new(ns, base + RARE);
    r.register(&p, &ghost, &Metadata::new().capability("vacant"))
        .expect("vacant register");
    r.unregister(&p, &ghost).expect("vacant unregister");
    p
}

/// P3: open-loop queries for the 1,000 holders of "rare" and for the holderless "vacant"
/// in `ns`, one thread; ops named `{label}-1000` and `{label}-empty`.
pub fn queries(run: &Run, r: &Registry, ns: Namespace, label: &str) -> Vec<OpData> {
    let cfg = run.cfg;
    let pace = cfg.pace(QUERY_RATE);
    let mut out = Vec::new();
    for (name, cap, want) in [("1000", "rare", RARE as usize), ("empty", "vacant", 0)] {
        let q = roster::Query::new(ns).capability(cap);
        let start = run.now_ns() + 1_000_000;
        let op = format!("{label}-{name}");
        let (elapsed, mut hists) = run.timed(&op, 1, cfg.duration, |_, stop| {
            let mut rec = Recorder::new(run.clock(), pace, cfg.seed, start);
            while !stop.load(Ordering::Relaxed) {
                let from = rec.begin();
                let n = r.query_count(&q).expect("query");
                rec.end(from);
                assert_eq!(n, want, "{op} found {n} entries");
            }
            rec.hist
        });
        out.push(run.op(
            &op,
            hists.remove(0),
            elapsed,
            1,
            pace,
            Duration::from_nanos(start),
        ));
    }
    out
}

/// P3 at two sizes ten times apart: `small` entries in a fresh registry, and the
/// `big_registry` (already holding ten times as many) or, without one, a fresh registry
/// of `10 * small`. Both get the same 1,000 "rare" holders.
pub fn query_scaling(
    run: &Run,
    small: u64,
    big_registry: Option<(&Registry, Namespace)>,
    f: &mut Findings,
) -> Result<(), String> {
    let mut sizes = vec![(small, None)];
    sizes.push((small * 10, big_registry));
    for (i, (n, existing)) in sizes.into_iter().enumerate() {
        let label = if i == 0 { "query-small" } else { "query" };
        let owned;
        let _owners;
        let (r, ns) = match existing {
            Some(pair) => pair,
            None => {
                let c = Config {
                    entries: n,
                    ..run.cfg.clone()
                };
                owned = c.registry()?;
                let ns = owned.namespace("loadgen").expect("namespace");
                let sub = Run {
                    cfg: &c,
                    origin: run.origin,
                    progress: run.progress,
                };
                _owners = prefill(&sub, &owned, ns);
                (&owned, ns)
            }
        };
        let _rare = add_rare(r, ns, u64::MAX / 2);
        f.ops.extend(queries(run, r, ns, label));
        f.query_sizes.push(n);
    }
    Ok(())
}
