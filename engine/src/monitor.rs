//! Monitors: a one-shot notice, with the exit reason, when a process dies. Usable from
//! threads (blocking `recv`) and from any async runtime (`Monitor` is a `Future`).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::process::Pid;

/// Why a process died.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExitReason {
    /// [`Process::exit`](crate::Process::exit) with a normal end.
    Normal,
    /// [`Process::exit`](crate::Process::exit) with an error the agent reports.
    Error(Arc<str>),
    /// The owner guard was dropped without an explicit exit.
    Dropped,
    /// The owner guard was dropped while its thread was panicking.
    Panicked,
    /// A leased process was not kept alive within its TTL.
    LeaseExpired,
    /// The pid was already dead (or never existed) when the monitor was set up.
    NoProc,
    /// The registry shut down while the process was still alive.
    Shutdown,
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Error(e) => write!(f, "error: {e}"),
            ExitReason::Dropped => f.write_str("guard dropped"),
            ExitReason::Panicked => f.write_str("panicked"),
            ExitReason::LeaseExpired => f.write_str("lease expired"),
            ExitReason::NoProc => f.write_str("no such process"),
            ExitReason::Shutdown => f.write_str("registry shut down"),
        }
    }
}

/// A death notice: which process died and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    /// The monitored process.
    pub pid: Pid,
    /// Why it died.
    pub reason: ExitReason,
}

#[derive(Default)]
struct State {
    reason: Option<ExitReason>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<State>,
    ready: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fire(&self, reason: ExitReason) {
        let mut s = self.lock();
        if s.reason.is_none() {
            s.reason = Some(reason);
        }
        let waker = s.waker.take();
        drop(s);
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A pending death notice for one process, from
/// [`Registry::monitor`](crate::Registry::monitor). Wait with [`Monitor::recv`] on a
/// thread, or `.await` it in async code (any runtime). Dropping it cancels the monitor.
///
/// # Examples
///
/// ```
/// use roster::{ExitReason, Registry};
///
/// let registry = Registry::builder().shards(1).build()?;
/// let worker = registry.spawn();
/// let monitor = registry.monitor(worker.pid());
/// worker.exit(ExitReason::Normal);
/// assert_eq!(monitor.recv().reason, ExitReason::Normal);
/// # Ok::<(), roster::Error>(())
/// ```
pub struct Monitor {
    pid: Pid,
    slot: Arc<Slot>,
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor").field("pid", &self.pid).finish()
    }
}

impl Monitor {
    /// The monitored process.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn();
    /// let monitor = registry.monitor(p.pid());
    /// assert_eq!(monitor.pid(), p.pid());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn pid(&self) -> Pid {
        self.pid
    }

    fn down(&self, reason: ExitReason) -> Down {
        Down {
            pid: self.pid,
            reason,
        }
    }

    /// The notice, if the process has died.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn();
    /// let monitor = registry.monitor(p.pid());
    /// assert!(monitor.try_recv().is_none());
    /// p.exit(ExitReason::Normal);
    /// assert_eq!(monitor.try_recv().map(|d| d.reason), Some(ExitReason::Normal));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn try_recv(&self) -> Option<Down> {
        self.slot.lock().reason.clone().map(|r| self.down(r))
    }

    /// Blocks until the process dies.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn();
    /// let monitor = registry.monitor(p.pid());
    /// drop(p);
    /// assert_eq!(monitor.recv().reason, ExitReason::Dropped);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn recv(self) -> Down {
        let mut s = self.slot.lock();
        loop {
            if let Some(r) = s.reason.clone() {
                return self.down(r);
            }
            s = self.slot.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Blocks until the process dies or `timeout` passes (a timeout too long for the
    /// clock, such as `Duration::MAX`, waits as long as it takes).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn();
    /// let monitor = registry.monitor(p.pid());
    /// assert!(monitor.recv_timeout(Duration::from_millis(10)).is_none());
    /// drop(p);
    /// assert!(monitor.recv_timeout(Duration::from_secs(5)).is_some());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Down> {
        let deadline = Instant::now().checked_add(timeout);
        let mut s = self.slot.lock();
        loop {
            if let Some(r) = s.reason.clone() {
                return Some(self.down(r));
            }
            let Some(deadline) = deadline else {
                s = self.slot.ready.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let left = deadline.checked_duration_since(Instant::now())?;
            s = self
                .slot
                .ready
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Future for Monitor {
    type Output = Down;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Down> {
        let mut s = self.slot.lock();
        match s.reason.clone() {
            Some(r) => Poll::Ready(self.down(r)),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

const LOCKS: usize = 64;

/// The monitors of the pids one lock covers.
type MonitorMap = HashMap<Pid, Vec<Arc<Slot>>>;

/// Registered monitors by pid, spread over `LOCKS` mutexes by pid index.
pub(crate) struct Monitors {
    maps: Box<[Mutex<MonitorMap>]>,
    /// Monitor slots registered (or being registered); while 0, a death takes no lock.
    /// `add` counts itself before it checks liveness and `fire` loads this after the pid
    /// was marked dead, both `SeqCst`: a `fire` that reads 0 is ordered before the `add`'s
    /// liveness check, which therefore sees the death.
    watched: AtomicUsize,
    /// Set by [`Monitors::fire_all`] before it drains any map. `add` checks it under its
    /// map's lock, and `fire_all` takes every map's lock after setting it, so a monitor
    /// is either drained by `fire_all` or sees the flag and fires itself.
    closed: AtomicBool,
}

impl Monitors {
    pub(crate) fn new() -> Monitors {
        Monitors {
            maps: (0..LOCKS).map(|_| Mutex::new(HashMap::new())).collect(),
            watched: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn map(&self, pid: Pid) -> MutexGuard<'_, MonitorMap> {
        self.maps[pid.index() as usize % LOCKS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a monitor of `pid`; `alive` is checked under the map's lock, so a death that
    /// happens concurrently either sees this monitor or this call sees the death.
    pub(crate) fn add(&self, pid: Pid, alive: impl FnOnce() -> bool) -> Monitor {
        let slot = Arc::new(Slot::default());
        self.watched.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let mut map = self.map(pid);
        if self.closed.load(Ordering::SeqCst) {
            drop(map);
            self.watched.fetch_sub(1, Ordering::Relaxed);
            slot.fire(ExitReason::Shutdown);
        } else if alive() {
            let list = map.entry(pid).or_default();
            // Forget cancelled monitors (their `Monitor` was dropped) as the list grows.
            if list.len() >= 8 && list.len().is_power_of_two() {
                let before = list.len();
                list.retain(|s| Arc::strong_count(s) > 1);
                self.watched
                    .fetch_sub(before - list.len(), Ordering::Relaxed);
            }
            list.push(slot.clone());
        } else {
            drop(map);
            self.watched.fetch_sub(1, Ordering::Relaxed);
            slot.fire(ExitReason::NoProc);
        }
        Monitor { pid, slot }
    }

    /// Delivers `reason` to every monitor of `pid`. Called after `pid` was marked dead.
    pub(crate) fn fire(&self, pid: Pid, reason: &ExitReason) {
        // A monitor added after this load saw the pid dead (it checks under the lock).
        if self.watched.load(Ordering::SeqCst) == 0 {
            return;
        }
        let slots = self.map(pid).remove(&pid).unwrap_or_default();
        self.watched.fetch_sub(slots.len(), Ordering::Relaxed);
        for s in slots {
            s.fire(reason.clone());
        }
    }

    /// Delivers [`ExitReason::Shutdown`] to every remaining monitor.
    pub(crate) fn fire_all(&self, reason: &ExitReason) {
        self.closed.store(true, Ordering::SeqCst);
        for m in self.maps.iter() {
            let all: Vec<_> = m
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .drain()
                .collect();
            for (_, slots) in all {
                for s in slots {
                    s.fire(reason.clone());
                }
            }
        }
    }

    /// Monitors not yet fired (including cancelled ones not yet forgotten).
    pub(crate) fn pending(&self) -> usize {
        self.maps
            .iter()
            .map(|m| {
                m.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }
}
