//! Leases: processes that die unless kept alive within their TTL.
//!
//! Each leased pid has a deadline word in the process table. A min-heap of
//! `(deadline, pid)` drives expiry; renewal only moves the word forward (one CAS), and
//! the reaper, popping an entry that is due, re-queues it if the word moved on. Nothing
//! scans all processes: expiry costs O(log n) per lease per renewal period at most.
//!
//! Renewal and expiry decide under the pid index's lease lock (see `process.rs`, "Leases
//! against reuse"): the reaper swaps a due deadline for `EXPIRED` before it kills, a
//! renewal only replaces a deadline still in the future, so exactly one of them wins, and
//! neither acts on a pid that died (or on the next process of its index).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::process::Pid;

/// Where leases read the time. The default is the system's monotonic clock; tests (and
/// simulations) use a [`ManualClock`].
pub trait Clock: Send + Sync + 'static {
    /// Time since the clock's epoch. Must never go backwards.
    fn now(&self) -> Duration;
}

/// The monotonic system clock.
#[derive(Debug)]
pub struct SystemClock {
    epoch: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            epoch: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// A clock that moves only when told to, for deterministic lease tests.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use roster::{ManualClock, Registry};
///
/// let clock = Arc::new(ManualClock::new());
/// let registry = Registry::builder().shards(1).clock(clock.clone()).build()?;
/// let agent = registry.spawn_leased(Duration::from_secs(5));
/// clock.advance(Duration::from_secs(4));
/// agent.keepalive()?; // renewed: now lives until t = 9 s
/// clock.advance(Duration::from_secs(4));
/// assert!(registry.is_alive(agent.pid()));
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A clock at time zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use roster::{ManualClock, Registry};
    ///
    /// let clock = Arc::new(ManualClock::new());
    /// let registry = Registry::builder().shards(1).clock(clock.clone()).build()?;
    /// let agent = registry.spawn_leased(Duration::from_secs(5));
    /// assert!(registry.is_alive(agent.pid()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `by`; it stops at its largest time (about 584 years)
    /// instead of wrapping.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use roster::{ManualClock, Registry};
    ///
    /// let clock = Arc::new(ManualClock::new());
    /// let registry = Registry::builder().shards(1).clock(clock.clone()).build()?;
    /// let agent = registry.spawn_leased(Duration::from_secs(5));
    /// clock.advance(Duration::from_secs(6)); // past the TTL: the lease expires
    /// let t = std::time::Instant::now();
    /// while registry.is_alive(agent.pid()) && t.elapsed() < Duration::from_secs(5) {
    ///     std::thread::sleep(Duration::from_millis(1));
    /// }
    /// assert!(!registry.is_alive(agent.pid()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn advance(&self, by: Duration) {
        let by = by.as_nanos().min(u64::MAX as u128) as u64;
        let _ = self
            .nanos
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// Deadline word value of a lease that expired (the reaper or a late renewal won).
pub(crate) const EXPIRED: u64 = u64::MAX;

/// The longest the reaper sleeps while leases exist: bounds how late an expiry is noticed
/// (also when a manual clock jumps).
const TICK: Duration = Duration::from_millis(5);

pub(crate) struct Leases {
    clock: Arc<dyn Clock>,
    heap: Mutex<BinaryHeap<Reverse<(u64, Pid)>>>,
    wake: Condvar,
    /// Set (under `heap`'s lock, so the reaper cannot miss it) when the registry stops.
    stopped: AtomicBool,
}

impl fmt::Debug for Leases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leases")
            .field("queued", &self.lock().len())
            .finish()
    }
}

impl Leases {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Leases {
        Leases {
            clock,
            heap: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
            stopped: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BinaryHeap<Reverse<(u64, Pid)>>> {
        self.heap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lease clock's time in nanoseconds, plus one: never 0 or `EXPIRED`, so
    /// deadlines stay distinct from "no lease" and "expired".
    pub(crate) fn now(&self) -> u64 {
        let ns = self.clock.now().as_nanos().min(EXPIRED as u128 - 2) as u64;
        ns + 1
    }

    /// The deadline `ttl` from now.
    pub(crate) fn deadline(&self, ttl: Duration) -> u64 {
        self.now()
            .saturating_add(ttl.as_nanos().min(u64::MAX as u128) as u64)
            .min(EXPIRED - 1)
    }

    /// Queues `pid` to be checked at `deadline`.
    pub(crate) fn schedule(&self, pid: Pid, deadline: u64) {
        let mut heap = self.lock();
        let earliest = heap.peek().is_none_or(|Reverse((d, _))| deadline < *d);
        heap.push(Reverse((deadline, pid)));
        drop(heap);
        if earliest {
            self.wake.notify_all();
        }
    }

    /// Pops every entry due at `now`.
    pub(crate) fn due(&self, now: u64) -> Vec<(u64, Pid)> {
        let mut heap = self.lock();
        let mut out = Vec::new();
        while let Some(&Reverse((d, pid))) = heap.peek() {
            if d > now {
                break;
            }
            heap.pop();
            out.push((d, pid));
        }
        out
    }

    /// Sleeps until the next deadline may be due (at most `TICK` while leases exist), or
    /// until [`Leases::stop`]. Returns `false` once stopped.
    pub(crate) fn wait(&self) -> bool {
        let heap = self.lock();
        if self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        if heap.is_empty() {
            drop(self.wake.wait(heap).unwrap_or_else(|e| e.into_inner()));
        } else {
            drop(
                self.wake
                    .wait_timeout(heap, TICK)
                    .unwrap_or_else(|e| e.into_inner()),
            );
        }
        !self.stopped.load(Ordering::Relaxed)
    }

    /// Stops the reaper: its `wait` returns `false` from now on.
    pub(crate) fn stop(&self) {
        let _heap = self.lock();
        self.stopped.store(true, Ordering::Relaxed);
        self.wake.notify_all();
    }

    /// Leases queued (live, expired-but-unpopped and renewed ones alike).
    pub(crate) fn queued(&self) -> usize {
        self.lock().len()
    }
}
