//! Open-loop latency recording.
//!
//! Each operation has an intended start time on a schedule (fixed rate or Poisson
//! arrivals); its latency runs from that intended start to its end. A stall therefore
//! shows up in every operation scheduled while it lasted, not just the one that stalled
//! (no coordinated omission). A closed-loop mode (each op timed from its actual start, as
//! fast as possible) exists for maximum-throughput runs and is labelled as such.
//!
//! Timestamps: one clock read per operation when the thread is on or behind schedule (the
//! end of one op is the "now" that decides whether to wait for the next); a thread ahead
//! of schedule reads the clock while it waits, which costs nothing it would not idle
//! anyway. The cost of one read is measured at start-up and written into every report
//! (`timer_ns`), so a reader can see what share of a ~100 ns lookup it is.

use std::time::Instant;

use hdrhistogram::Histogram;

use crate::rng::Rng;

/// A source of nanosecond timestamps.
pub trait Clock {
    /// Nanoseconds since an arbitrary, fixed origin.
    fn now_ns(&self) -> u64;
    /// Returns once `now_ns() >= t`.
    fn wait_until(&self, t: u64) {
        while self.now_ns() < t {
            std::hint::spin_loop();
        }
    }
}

/// The monotonic clock, from a shared origin so threads' schedules line up.
#[derive(Clone, Copy, Debug)]
pub struct MonoClock {
    origin: Instant,
}

impl MonoClock {
    pub fn new(origin: Instant) -> MonoClock {
        MonoClock { origin }
    }
}

impl Clock for MonoClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn wait_until(&self, t: u64) {
        loop {
            let now = self.now_ns();
            if now >= t {
                return;
            }
            // Spin only for the last couple of microseconds: a thread spinning between
            // ops would take its core from the registry's writer threads, and on a small
            // machine that shows up as their latency, not as the load's.
            if t - now > 200_000 {
                std::thread::sleep(std::time::Duration::from_nanos(t - now - 100_000));
            } else if t - now > 2_000 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// How operations are scheduled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as possible; latency from each op's actual start (closed loop).
    Closed,
    /// A fixed interval between intended starts.
    Fixed { interval_ns: f64 },
    /// Poisson arrivals: exponential gaps with this mean.
    Poisson { mean_ns: f64 },
}

impl Pace {
    /// The pace for `rate` ops/s per thread (0 = closed loop).
    pub fn for_rate(rate: f64, poisson: bool) -> Pace {
        if rate <= 0.0 {
            Pace::Closed
        } else if poisson {
            Pace::Poisson {
                mean_ns: 1e9 / rate,
            }
        } else {
            Pace::Fixed {
                interval_ns: 1e9 / rate,
            }
        }
    }
}

/// Latency histogram with SPEC's range: 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records one thread's operations of one type.
pub struct Recorder<C: Clock> {
    clock: C,
    pace: Pace,
    rng: Rng,
    /// Intended start of the next op, in ns (open loop).
    next: f64,
    /// The last timestamp read.
    last: u64,
    pub hist: Histogram<u64>,
    pub ops: u64,
}

impl<C: Clock> Recorder<C> {
    /// A recorder whose schedule starts at `start_ns`.
    pub fn new(clock: C, pace: Pace, seed: u64, start_ns: u64) -> Recorder<C> {
        Recorder {
            clock,
            pace,
            rng: Rng::new(seed),
            next: start_ns as f64,
            last: start_ns,
            hist: histogram(),
            ops: 0,
        }
    }

    /// Waits for the next op's intended start and returns the time its latency counts
    /// from (the intended start, or the actual start in closed loop).
    #[inline]
    pub fn begin(&mut self) -> u64 {
        match self.pace {
            Pace::Closed => {
                self.last = self.clock.now_ns();
                self.last
            }
            _ => {
                let intended = self.next as u64;
                if self.last < intended {
                    self.clock.wait_until(intended);
                }
                intended
            }
        }
    }

    /// Ends the op that `begin` returned `from` for; returns its latency in ns.
    #[inline]
    pub fn end(&mut self, from: u64) -> u64 {
        let now = self.clock.now_ns();
        self.last = now;
        let latency = now.saturating_sub(from).max(1);
        self.hist.saturating_record(latency);
        self.ops += 1;
        match self.pace {
            Pace::Closed => {}
            Pace::Fixed { interval_ns } => self.next += interval_ns,
            Pace::Poisson { mean_ns } => self.next += self.rng.exponential(mean_ns),
        }
        latency
    }
}

/// Measures the cost of one monotonic clock read, in ns (median of a few batches).
pub fn timer_cost_ns() -> f64 {
    let clock = MonoClock::new(Instant::now());
    let mut batches: Vec<f64> = (0..5)
        .map(|_| {
            let n = 200_000;
            let t = Instant::now();
            let mut x = 0;
            for _ in 0..n {
                x ^= clock.now_ns();
            }
            std::hint::black_box(x);
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    batches.sort_by(|a, b| a.total_cmp(b));
    batches[2]
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A clock that moves only when the test says (or when a recorder waits on it).
    struct FakeClock<'a>(&'a Cell<u64>);

    impl Clock for FakeClock<'_> {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
        fn wait_until(&self, t: u64) {
            if self.0.get() < t {
                self.0.set(t);
            }
        }
    }

    /// 200 ops scheduled every 1 us, each taking 100 ns, except op 10, which stalls for
    /// 100 us. Returns how many ops were recorded slower than 50 us.
    fn run(pace: Pace) -> u64 {
        let now = Cell::new(0);
        let mut r = Recorder::new(FakeClock(&now), pace, 1, 0);
        for i in 0..200 {
            let from = r.begin();
            now.set(now.get() + if i == 10 { 100_000 } else { 100 });
            r.end(from);
        }
        r.hist
            .iter_recorded()
            .filter(|v| v.value_iterated_to() >= 50_000)
            .map(|v| v.count_at_value())
            .sum()
    }

    #[test]
    fn open_loop_charges_a_stall_to_every_op_scheduled_during_it() {
        // Ops 10..~60 were due while op 10 stalled: each waited, and each is charged.
        let slow = run(Pace::Fixed {
            interval_ns: 1000.0,
        });
        assert!(
            (45..=60).contains(&slow),
            "open loop recorded {slow} slow ops"
        );
        // A closed loop hides the stall in one sample: coordinated omission.
        assert_eq!(run(Pace::Closed), 1);
    }

    #[test]
    fn poisson_gaps_average_to_the_rate() {
        let now = Cell::new(0);
        let mut r = Recorder::new(FakeClock(&now), Pace::for_rate(1e6, true), 7, 0);
        for _ in 0..20_000 {
            let from = r.begin();
            r.end(from);
        }
        let mean = now.get() as f64 / 20_000.0;
        assert!((900.0..1100.0).contains(&mean), "mean gap {mean} ns");
    }
}
