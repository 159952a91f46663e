//! The workloads: closed-loop throughput cells and one latency cell, run on any [`Map`].
//!
//! Mixes follow bustle's (the harness of conc-map-bench, where papaya, dashmap and scc are
//! usually compared): read-heavy 98/1/1/0 (read / insert / remove / update), exchange
//! 10/40/40/10, rapid-grow 5/80/5/10. Reads in read-heavy and exchange hit the prefilled
//! keys; each thread inserts fresh keys of its own and removes and updates only keys it
//! inserted itself (so Roster's ownership rule is met and the map keeps its size when
//! inserts and removes balance). Rapid-grow starts from an empty map and reads the
//! thread's own keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use roster_benches::Rng;

use crate::maps::{Local, Map, Values, VARIANTS};

/// A workload of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Uniform lookups of prefilled keys, nothing else.
    Lookup,
    ReadHeavy,
    Exchange,
    RapidGrow,
    /// Writes only: each thread inserts fresh keys and removes its oldest, half and
    /// half, keeping the map's size (batched by 64 for Roster's batch column).
    Churn,
}

impl Workload {
    pub const ALL: [Workload; 5] = [
        Workload::Lookup,
        Workload::ReadHeavy,
        Workload::Exchange,
        Workload::RapidGrow,
        Workload::Churn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Lookup => "lookup",
            Workload::ReadHeavy => "read-heavy",
            Workload::Exchange => "exchange",
            Workload::RapidGrow => "rapid-grow",
            Workload::Churn => "churn",
        }
    }

    /// Percent of reads, inserts, removes (updates are the rest).
    fn mix(self) -> (u64, u64, u64) {
        match self {
            Workload::Lookup => (100, 0, 0),
            Workload::ReadHeavy => (98, 1, 1),
            Workload::Exchange => (10, 40, 40),
            Workload::RapidGrow => (5, 80, 5),
            Workload::Churn => (0, 50, 50),
        }
    }

    /// Whether Roster's batch column runs it (lookups and churn).
    pub fn batched(self) -> bool {
        matches!(self, Workload::Lookup | Workload::Churn)
    }

    /// Whether the map starts with the prefilled keys.
    pub fn prefilled(self) -> bool {
        self != Workload::RapidGrow
    }
}

/// Fills `map` with keys `0..keys` from `threads` threads.
pub fn prefill<M: Map>(map: &M, values: &Values, keys: u64, threads: usize) {
    let threads = threads.max(1) as u64;
    std::thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut local = map.local(values);
                for k in (t..keys).step_by(threads as usize) {
                    assert!(local.insert(k, k as usize % VARIANTS), "prefill {k}");
                }
                local.finish();
            });
        }
    });
}

/// First key of thread `t`'s own key space, far above the prefilled keys.
fn own_base(t: usize) -> u64 {
    (t as u64 + 1) << 40
}

/// Operations a thread runs between looks at the stop flag.
const ROUND: u64 = 64;
/// Keys per `get_many` call in batched lookups.
pub const BATCH: usize = 16;
/// Keys per `insert_many` / `remove_many` call in the batched churn.
pub const WRITE_BATCH: usize = 64;

/// A throughput cell's result.
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    pub ops: u64,
    pub seconds: f64,
}

impl Throughput {
    pub fn mops(&self) -> f64 {
        self.ops as f64 / self.seconds / 1e6
    }
}

/// Runs `workload` on `threads` threads for `duration`, closed-loop; `batched` makes
/// lookups go through [`Local::get_many`] in batches of [`BATCH`].
pub fn throughput<M: Map>(
    map: &M,
    values: &Values,
    workload: Workload,
    keys: u64,
    threads: usize,
    duration: Duration,
    batched: bool,
) -> Throughput {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(threads + 1);
    let (read, insert, remove) = workload.mix();
    let results: Vec<(u64, Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    let mut local = map.local(values);
                    let mut rng = Rng::new(t as u64 + 1);
                    let base = own_base(t);
                    let (mut lo, mut hi) = (base, base);
                    let mut batch = [0u64; BATCH];
                    let mut ops = 0u64;
                    barrier.wait();
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if workload == Workload::Lookup && batched {
                            for _ in 0..ROUND as usize / BATCH {
                                batch.iter_mut().for_each(|k| *k = rng.below(keys));
                                local.get_many(&batch);
                            }
                            ops += ROUND;
                            continue;
                        }
                        if workload == Workload::Churn && batched {
                            // One batch in, then the oldest batch out.
                            let fresh: Vec<u64> = (hi..hi + WRITE_BATCH as u64).collect();
                            local.insert_many(&fresh);
                            hi += WRITE_BATCH as u64;
                            if hi - lo > 4 * WRITE_BATCH as u64 {
                                let old: Vec<u64> = (lo..lo + WRITE_BATCH as u64).collect();
                                local.remove_many(&old);
                                lo += WRITE_BATCH as u64;
                            }
                            ops += 2 * WRITE_BATCH as u64;
                            continue;
                        }
                        for _ in 0..ROUND {
                            let r = rng.below(100);
                            if r < read {
                                let k = if workload.prefilled() {
                                    rng.below(keys)
                                } else {
                                    lo + rng.below((hi - lo).max(1))
                                };
                                local.get(k);
                            } else if r < read + insert {
                                local.insert(hi, hi as usize % VARIANTS);
                                hi += 1;
                            } else if r < read + insert + remove {
                                if lo < hi {
                                    local.remove(lo);
                                    lo += 1;
                                }
                            } else if lo < hi {
                                let k = lo + rng.below(hi - lo);
                                local.update(k, (k + 1) as usize % VARIANTS);
                            }
                        }
                        ops += ROUND;
                    }
                    let elapsed = start.elapsed();
                    local.finish();
                    (ops, elapsed)
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    Throughput {
        ops: results.iter().map(|r| r.0).sum(),
        seconds: results
            .iter()
            .map(|r| r.1.as_secs_f64())
            .fold(0.0, f64::max),
    }
}

/// A latency cell's result: every read timed, under a paced writer.
pub struct Latency {
    pub reads: Histogram<u64>,
    pub read_seconds: f64,
    pub writes: u64,
    pub write_seconds: f64,
}

/// Times every lookup of `readers` threads (uniform prefilled keys) while one more thread
/// inserts and removes keys of its own at `write_rate` per second, paced by sleeping (a
/// write that falls behind schedule runs at once, so the rate holds on average).
pub fn latency<M: Map>(
    map: &M,
    values: &Values,
    keys: u64,
    readers: usize,
    duration: Duration,
    write_rate: u64,
) -> Latency {
    let stop = AtomicBool::new(false);
    let barrier = Barrier::new(readers + 2);
    std::thread::scope(|s| {
        let reader_handles: Vec<_> = (0..readers)
            .map(|t| {
                let (stop, barrier) = (&stop, &barrier);
                s.spawn(move || {
                    let mut local = map.local(values);
                    let mut rng = Rng::new(100 + t as u64);
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
                    barrier.wait();
                    let start = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..ROUND {
                            let k = rng.below(keys);
                            let t0 = Instant::now();
                            local.get(k);
                            h.saturating_record(t0.elapsed().as_nanos() as u64);
                        }
                    }
                    let elapsed = start.elapsed();
                    local.finish();
                    (h, elapsed)
                })
            })
            .collect();
        let writer = {
            let (stop, barrier) = (&stop, &barrier);
            s.spawn(move || {
                let mut local = map.local(values);
                let base = own_base(1 << 10);
                let (mut lo, mut hi) = (base, base);
                let interval = Duration::from_secs_f64(1.0 / write_rate.max(1) as f64);
                barrier.wait();
                let start = Instant::now();
                let mut next = start;
                let mut writes = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    // Keep about a thousand keys of its own: insert, then alternate.
                    if hi - lo < 1024 || writes % 2 == 0 {
                        local.insert(hi, hi as usize % VARIANTS);
                        hi += 1;
                    } else {
                        local.remove(lo);
                        lo += 1;
                    }
                    writes += 1;
                }
                let elapsed = start.elapsed();
                local.finish();
                (writes, elapsed)
            })
        };
        barrier.wait();
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let mut reads = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        let mut read_seconds = 0.0f64;
        for h in reader_handles {
            let (h, elapsed) = h.join().unwrap();
            reads.add(&h).unwrap();
            read_seconds = read_seconds.max(elapsed.as_secs_f64());
        }
        let (writes, elapsed) = writer.join().unwrap();
        Latency {
            reads,
            read_seconds,
            writes,
            write_seconds: elapsed.as_secs_f64(),
        }
    })
}
