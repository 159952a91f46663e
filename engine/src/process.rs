//! Processes: the registry issues [`Pid`]s and owner guards ([`Process`]).
//!
//! The process table is a vector of atomic words, `STRIDE` words per pid index:
//!
//! ```text
//! [ state | pending | deadline | killed_at | shard mask words ... ]
//!   state:     !pid while it is alive; then bit 0 flipped once dead (see `alive_word`)
//!   pending:   shards that still have to clean up after the death
//!   deadline:  lease deadline in lease-clock ns; 0 = no lease, u64::MAX = expired
//!   killed_at: when it died (ns since the table's epoch), for the cleanup-lag histogram
//!   mask:      bit s set = shard s may hold entries of this process
//! ```
//!
//! Death and registration race safely by a store-load handshake (I1): a shard writer sets
//! its mask bit, `fence(SeqCst)`, then checks that the process is alive before storing an
//! entry; a killer flips `state` to dead, `fence(SeqCst)`, then reads the mask. The two
//! fences are ordered one way or the other in the single total order of `SeqCst` fences:
//! if the writer's comes first, the killer's mask load (after its own fence) sees the bit;
//! if the killer's comes first, the writer's state load sees the dead state. So either
//! the insert is refused or the shard gets a death notice, and no entry of a dead process
//! outlives its cleanup. (`roster-shard`'s `loom_handshake.rs` models it.)
//! An index is reused (with the next generation) only after every notified shard has
//! removed the dead process's entries, so a stale `Pid` never matches a new process.
//!
//! # Pid reuse
//!
//! A [`Pid`] is `generation:36 | index:28`. Free indexes are reused first in, first out,
//! and only while at least [`REUSE_RESERVE`] of them wait, so one index comes back at
//! most once per `REUSE_RESERVE` spawns, however the process count moves. A stale pid
//! could match again only after its index was reused `2^36 - 1` times, which takes at
//! least `2^36 * 1024 ~ 7 * 10^13` spawns: over two years at a sustained million spawns a
//! second (one spawn takes a lock; this machine does a few million a second at most).
//! The table holds at most `2^28 - 1` processes at once ([`MAX_PROCESSES`]).
//!
//! # Leases against reuse
//!
//! A lease's deadline word carries no generation, so renewal and expiry (both rare next
//! to lookups) run under a per-index stripe lock, and so does [`ProcessTable::spawn`]'s
//! store of a new deadline and of the new generation. Inside the lock a pid found alive
//! stays the index's generation until the lock is released: an index is reused only by a
//! spawn, which must take the same lock first. So a stale `keepalive` or a late expiry
//! check either sees its own pid alive and acts on its own lease, or sees it dead and
//! does nothing; it can never cut short, stretch or expire the lease of the next process
//! on the index.

use std::collections::VecDeque;
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use roster_shard::{AtomicWords, Event, Hooks, Refusal};

use crate::budget::Budget;
use crate::error::{Error, ErrorKind};
use crate::lag::{CleanupLag, LagHistogram};
use crate::lease::EXPIRED;
use crate::monitor::ExitReason;
use crate::registry::AnyHandle;
use crate::registry::Inner;
use crate::watch::Hub;

/// A process identity: index and generation in its registry's process table. `Copy`, and
/// safe to keep after the process died: it then never matches again.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub(crate) u64);

impl Pid {
    /// A pid no process ever has (used by empty entries).
    pub const NONE: Pid = Pid(0);

    fn new(index: u32, generation: u64) -> Pid {
        debug_assert!(index < 1 << INDEX_BITS && generation <= MAX_GENERATION);
        Pid(generation << INDEX_BITS | index as u64)
    }

    /// The slot index in the process table (below 2^28).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let (a, b) = (registry.spawn(), registry.spawn());
    /// assert_ne!(a.pid().index(), b.pid().index());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn index(self) -> u32 {
        (self.0 & ((1 << INDEX_BITS) - 1)) as u32
    }

    /// The generation of that slot this pid was issued for (starts at 1, below 2^36).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let pid = registry.spawn().pid(); // dies at once: its index is free again
    /// let next = registry.spawn();
    /// assert!(next.pid().index() != pid.index() || next.pid().generation() != pid.generation());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn generation(self) -> u64 {
        self.0 >> INDEX_BITS
    }

    /// The packed form, as stored in shard slots.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// assert_ne!(p.pid().as_u64(), 0);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}>", self.index(), self.generation())
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Bits of a [`Pid`] that hold the index; the other 36 hold the generation.
const INDEX_BITS: u32 = 28;
// A shard slot's owner hint is a pid's index (`ProcessTable::is_alive_at`).
const _: () = assert!(INDEX_BITS == roster_shard::OWNER_HINT_BITS);
/// Largest generation; after it an index starts again at 1 (see "Pid reuse" above).
const MAX_GENERATION: u64 = (1 << (64 - INDEX_BITS)) - 1;
/// The state word of a live pid (`ProcessTable::states`): the pid's bits inverted, so a
/// liveness check is one compare of the word with the pid's complement (the lookup path
/// compares it with the block's owner word and a `not`, where `generation << 1 | 1`
/// cost a shift and an or). Distinct pids have distinct words. The word of a
/// generation-0 pid ([`Pid::NONE`]) is never stored, as generations start at 1. An index
/// never used has state 0, the word of pid `<2^28 - 1 . 2^36 - 1>`: that pid would read
/// as alive, but it is never issued (indexes stay below [`MAX_PROCESSES`]) and cannot be
/// made outside this crate, where every `Pid` is issued or read back from a stored owner
/// word (the old encoding, with odd live words, matched no pid at 0 at all).
#[inline(always)]
fn alive_word(pid: Pid) -> u64 {
    debug_assert!(
        u64::from(pid.index()) < MAX_PROCESSES,
        "never issued: {pid:?}"
    );
    !pid.0
}

/// The generation the next spawn at an index issues, from the index's state word (live,
/// dead, or 0 if never used, whose bits read as `MAX_GENERATION`): the one after it, and
/// after `MAX_GENERATION` 1 again. Generation 0 is never issued, so `Pid::NONE` never
/// matches.
fn next_generation(state: u64) -> u64 {
    match !state >> INDEX_BITS {
        MAX_GENERATION => 1,
        g => g + 1,
    }
}

/// What a death flips in its state word: (inverted) index bit 0. The word then belongs
/// to another index, so no pid of this index matches it, and its generation bits are
/// kept for the next spawn.
const DEAD: u64 = 1;

/// Most processes alive at once.
pub const MAX_PROCESSES: u64 = (1 << INDEX_BITS) - 1;
/// Free indexes kept waiting before one is reused (see "Pid reuse" above).
pub(crate) const REUSE_RESERVE: usize = 1024;
/// Stripe locks of lease renewal and expiry (see "Leases against reuse" above).
const LEASE_LOCKS: usize = 64;

struct Free {
    /// Indexes ready for reuse, oldest first.
    list: VecDeque<u32>,
    /// First never-used index.
    next: u32,
}

/// The registry's process table; also the [`Hooks`] the shard writers call.
pub(crate) struct ProcessTable {
    /// Each process's state word ([`alive_word`], [`DEAD`]), by index: one dense word a
    /// process, so the liveness check every lookup makes touches 8 bytes a process and
    /// the whole array stays in cache far longer than records would.
    states: AtomicWords,
    /// The other fields ([`PENDING`]..), `stride` words a process.
    words: AtomicWords,
    stride: u64,
    free: Mutex<Free>,
    /// Live processes.
    live: AtomicU64,
    /// Deaths begun and deaths whose cleanup is done, both counting up (see
    /// [`Hooks::deaths`]); their difference is the deaths still being reclaimed.
    deaths: AtomicU64,
    reclaimed: AtomicU64,
    /// Entries per (namespace, shard): word `ns * shards + shard`, so shard writers never
    /// share a counter's cache line.
    /// Charges, the memory limit and the namespace quotas and counts.
    pub(crate) budget: Budget,
    /// The change feed: shard writers report their changes here.
    pub(crate) hub: Arc<Hub>,
    /// Origin of `killed_at`.
    epoch: Instant,
    /// Death -> fully reclaimed.
    lag: LagHistogram,
    /// Lease stripes by pid index (see "Leases against reuse" above).
    lease_locks: Box<[Mutex<()>]>,
}

// Fields of a process's record in `words`; its state word is in `states`.
const PENDING: u64 = 0;
const DEADLINE: u64 = 1;
const KILLED_AT: u64 = 2;
const MASK: u64 = 3;

/// What the lease reaper found for a due pid.
pub(crate) enum Expiry {
    /// Renewed meanwhile: check again at this deadline.
    Renewed(u64),
    /// The lease expired and this caller won the right to kill the pid.
    Expired,
    /// Already dead or expired by someone else.
    Gone,
}

impl ProcessTable {
    pub(crate) fn new(
        shards: usize,
        memory_limit: Option<u64>,
        hub: Hub,
        huge_pages: bool,
    ) -> ProcessTable {
        ProcessTable {
            states: AtomicWords::reserved(MAX_PROCESSES + 1, 10, huge_pages),
            words: AtomicWords::reserved(
                ((MAX_PROCESSES + 1) * (MASK + shards.div_ceil(64) as u64)).min(1 << 31),
                10,
                huge_pages,
            ),
            stride: MASK + shards.div_ceil(64) as u64,
            free: Mutex::new(Free {
                list: VecDeque::new(),
                next: 0,
            }),
            live: AtomicU64::new(0),
            deaths: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
            budget: Budget::new(memory_limit),
            hub: Arc::new(hub),
            epoch: Instant::now(),
            lag: LagHistogram::new(),
            lease_locks: (0..LEASE_LOCKS).map(|_| Mutex::new(())).collect(),
        }
    }

    fn lease_lock(&self, index: u32) -> std::sync::MutexGuard<'_, ()> {
        self.lease_locks[index as usize % LEASE_LOCKS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    #[inline]
    fn word(&self, index: u32, field: u64) -> Option<&AtomicU64> {
        self.words.get(index as u64 * self.stride + field)
    }

    #[inline(always)]
    fn state(&self, index: u32) -> Option<&AtomicU64> {
        self.states.get(u64::from(index))
    }

    /// Issues a new live pid; `deadline` is its lease deadline (0 for none). `None` when
    /// [`MAX_PROCESSES`] are alive (or dying) already.
    pub(crate) fn spawn(&self, deadline: u64) -> Option<Pid> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let reuse = free.list.len() >= REUSE_RESERVE || u64::from(free.next) >= MAX_PROCESSES;
        let index = match reuse.then(|| free.list.pop_front()).flatten() {
            Some(i) => i,
            None if u64::from(free.next) < MAX_PROCESSES => {
                let i = free.next;
                if !self.words.ensure((i as u64 + 1) * self.stride)
                    || !self.states.ensure(i as u64 + 1)
                {
                    return None;
                }
                free.next += 1;
                i
            }
            None => return None,
        };
        drop(free);
        let state = self.state(index).expect("ensured");
        let generation = next_generation(state.load(Ordering::Relaxed));
        for f in PENDING..self.stride {
            self.word(index, f)
                .expect("ensured")
                .store(0, Ordering::Relaxed);
        }
        let _lease = self.lease_lock(index);
        self.word(index, DEADLINE)
            .expect("ensured")
            .store(deadline, Ordering::Relaxed);
        self.live.fetch_add(1, Ordering::Relaxed);
        let pid = Pid::new(index, generation);
        state.store(alive_word(pid), Ordering::SeqCst);
        Some(pid)
    }

    /// One atomic load.
    #[inline(always)]
    pub(crate) fn is_alive(&self, pid: Pid) -> bool {
        self.is_alive_at(u64::from(pid.index()), pid)
    }

    /// Prefetches the state word at `index`, which [`ProcessTable::is_alive_at`] reads
    /// next (a hint for batched lookups: a slot's unvalidated owner hint, maybe garbage).
    #[inline]
    pub(crate) fn prefetch(&self, index: u64) {
        if let Some(w) = self.state(index as u32) {
            roster_shard::prefetch(w);
        }
    }

    /// [`ProcessTable::is_alive`] with the state word found by `index`, which must be
    /// `pid`'s index: a hit's owner hint, which its slot holds and which equals the low
    /// bits of the block's owner word in every validated read (the writer stores both in
    /// one write section; `Shard::audit` checks them). It is known from the slot, before
    /// the block's words arrive, so the state word's load goes out beside the block's
    /// instead of after it.
    #[inline(always)]
    pub(crate) fn is_alive_at(&self, index: u64, pid: Pid) -> bool {
        debug_assert_eq!(
            u64::from(pid.index()),
            index,
            "a slot's hint is its owner's index"
        );
        self.state(index as u32)
            .is_some_and(|w| w.load(Ordering::Acquire) == alive_word(pid))
    }

    /// Marks `pid` dead; returns the shards to notify, or `None` if it was not alive.
    /// The caller must notify each returned shard (or call [`ProcessTable::release`]
    /// for those it cannot reach).
    pub(crate) fn kill(&self, pid: Pid) -> Option<Vec<usize>> {
        let state = self.state(pid.index())?;
        let alive = alive_word(pid);
        // Counted before the pid is seen dead, so a writer refused because of this death
        // waits for its cleanup; undone (by counting it reclaimed) if it was no death.
        self.deaths.fetch_add(1, Ordering::SeqCst);
        if state
            .compare_exchange(alive, alive ^ DEAD, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            self.reclaimed.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        // Pairs with the fence in `Hooks::attach`: a shard that stores an entry after
        // this saw the pid dead, or its mask bit is read below.
        fence(Ordering::SeqCst);
        self.live.fetch_sub(1, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.word(pid.index(), KILLED_AT)?
            .store(now, Ordering::Relaxed);
        let mut shards = Vec::new();
        for m in MASK..self.stride {
            let mut bits = self.word(pid.index(), m)?.load(Ordering::SeqCst);
            while bits != 0 {
                shards.push((m - MASK) as usize * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
        let pending = self.word(pid.index(), PENDING)?;
        if shards.is_empty() {
            self.reclaimed.fetch_add(1, Ordering::SeqCst);
            self.recycle(pid.index());
        } else {
            pending.store(shards.len() as u64, Ordering::SeqCst);
        }
        Some(shards)
    }

    /// One notified shard finished (or cannot run) its cleanup of `pid`.
    pub(crate) fn release(&self, pid: Pid) {
        self.release_many(&[pid.as_u64()]);
    }

    /// [`ProcessTable::release`] for many pids: indexes whose last shard finished are
    /// recycled under one lock, and their lags recorded in one pass.
    fn release_many(&self, pids: &[u64]) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let mut done = Vec::new();
        let mut lags = Vec::new();
        for &p in pids {
            let index = Pid(p).index();
            let Some(pending) = self.word(index, PENDING) else {
                continue;
            };
            if pending.fetch_sub(1, Ordering::AcqRel) == 1 {
                if let Some(at) = self.word(index, KILLED_AT) {
                    lags.push(now.saturating_sub(at.load(Ordering::Relaxed)));
                }
                done.push(index);
            }
        }
        if !done.is_empty() {
            self.reclaimed
                .fetch_add(done.len() as u64, Ordering::SeqCst);
            self.lag.record_many(&lags);
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            free.list.extend(done);
        }
    }

    fn recycle(&self, index: u32) {
        self.lag.record_many(&[0]);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        free.list.push_back(index);
    }

    pub(crate) fn cleanup_lag(&self) -> CleanupLag {
        self.lag.snapshot()
    }

    /// Moves `pid`'s lease deadline to `deadline`, if the lease has not expired by `now`.
    /// A pid without a lease is left alone. A lease found past its deadline is expired
    /// here (returns `Expired`: the caller must kill the pid). Under the index's lease
    /// stripe, so a stale pid never touches a reused index's lease.
    pub(crate) fn renew(&self, pid: Pid, now: u64, deadline: u64) -> Result<(), Expiry> {
        let word = self.word(pid.index(), DEADLINE).ok_or(Expiry::Gone)?;
        let _lease = self.lease_lock(pid.index());
        if !self.is_alive(pid) {
            return Err(Expiry::Gone);
        }
        match word.load(Ordering::Relaxed) {
            0 => Ok(()),
            EXPIRED => Err(Expiry::Gone),
            cur if cur <= now => {
                word.store(EXPIRED, Ordering::Relaxed);
                Err(Expiry::Expired)
            }
            _ => {
                word.store(deadline, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// The reaper's check of a pid whose queued deadline came due at `now` (under the
    /// index's lease stripe, as [`ProcessTable::renew`]).
    pub(crate) fn expire(&self, pid: Pid, now: u64) -> Expiry {
        let Some(word) = self.word(pid.index(), DEADLINE) else {
            return Expiry::Gone;
        };
        let _lease = self.lease_lock(pid.index());
        if !self.is_alive(pid) {
            return Expiry::Gone;
        }
        match word.load(Ordering::Relaxed) {
            0 | EXPIRED => Expiry::Gone,
            cur if cur > now => Expiry::Renewed(cur),
            _ => {
                word.store(EXPIRED, Ordering::Relaxed);
                Expiry::Expired
            }
        }
    }

    pub(crate) fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    pub(crate) fn ensure_namespace(&self, ns: u32) {
        self.budget.ensure_namespace(ns);
    }

    pub(crate) fn count(&self, ns: u32) -> u64 {
        self.budget.usage(ns).entries
    }
}

impl Hooks for ProcessTable {
    fn index_terms(&self, key: &[u64], meta: &[u64], out: &mut Vec<u64>) {
        crate::query::push_entry_terms(crate::key::namespace_of(key), meta, out);
    }

    fn is_alive(&self, owner: u64) -> bool {
        ProcessTable::is_alive(self, Pid(owner))
    }

    fn attach(&self, owner: u64, shard: usize) -> bool {
        let pid = Pid(owner);
        let Some(mask) = self.word(pid.index(), MASK + shard as u64 / 64) else {
            return false;
        };
        let bit = 1u64 << (shard % 64);
        if mask.load(Ordering::SeqCst) & bit == 0 {
            mask.fetch_or(bit, Ordering::SeqCst);
        }
        // Paired with the fence in `kill`: store, `fence(SeqCst)`, load on both sides, so
        // one of them sees the other (modelled by `loom_attach_and_kill_never_both_miss`
        // in roster-shard). The bit, if it was set already, was set by this same thread.
        fence(Ordering::SeqCst);
        self.state(pid.index())
            .is_some_and(|w| w.load(Ordering::SeqCst) == alive_word(pid))
    }

    fn detached(&self, owners: &[u64], _shard: usize) {
        self.release_many(owners);
    }

    fn admit(&self, key: &[u64], charge: u64) -> Result<(), Refusal> {
        self.budget.admit(key, charge)
    }

    fn deaths(&self) -> (u64, u64) {
        // `deaths` first: a death counted in `reclaimed` but not here cannot be seen.
        let started = self.deaths.load(Ordering::SeqCst);
        (started, self.reclaimed.load(Ordering::SeqCst))
    }

    fn readmit(&self, key: &[u64], old: u64, new: u64) -> Result<(), Refusal> {
        self.budget.readmit(key, old, new)
    }

    fn removed(&self, key: &[u64], charge: u64, _shard: usize) {
        self.budget.release(key, charge);
    }

    fn watching(&self) -> bool {
        self.hub.watching()
    }

    fn event(&self, shard: usize, event: Event<'_>) {
        self.hub.event(shard, event);
    }
}

/// Authority over a process: what [`Registry::register`](crate::Registry::register),
/// `unregister` and `update_metadata` ask for. The [`Process`] guard is one (it derefs to
/// its `Authority`); [`Process::authority`] hands out clones for other threads or tasks
/// that act on the process's behalf. It cannot be forged: the only way to get one is from
/// the guard, and it is void once the process is dead.
#[derive(Clone)]
pub struct Authority {
    pid: Pid,
    registry: Weak<Inner>,
}

impl Authority {
    /// The process this authority is over.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// assert_eq!(p.authority().pid(), p.pid());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub(crate) fn registry(&self) -> &Weak<Inner> {
        &self.registry
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority").field("pid", &self.pid).finish()
    }
}

/// The owner guard of a process: proof of authority over its pid. Only its holder (or
/// an [`Authority`] it handed out) can register under the pid or change the pid's entries.
/// Dropping it (also by unwinding from a panic) or calling [`Process::exit`] kills the
/// pid: lookups stop returning its entries at once, monitors are told, and the shards
/// remove the entries.
///
/// # Examples
///
/// ```
/// use roster::{Key, Metadata, Registry};
///
/// let registry = Registry::builder().shards(2).build()?;
/// let ns = registry.namespace("workers")?;
/// let worker = registry.spawn();
/// registry.register(&worker, &Key::new(ns, 1), &Metadata::new())?;
/// assert!(registry.lookup(&Key::new(ns, 1))?.is_some());
///
/// let pid = worker.pid();
/// drop(worker);
/// assert!(!registry.is_alive(pid));
/// assert!(registry.lookup(&Key::new(ns, 1))?.is_none());
/// # Ok::<(), roster::Error>(())
/// ```
pub struct Process {
    authority: Authority,
    /// The lease TTL, for leased processes.
    ttl: Option<Duration>,
}

impl Process {
    pub(crate) fn new(pid: Pid, registry: Weak<Inner>, ttl: Option<Duration>) -> Process {
        Process {
            authority: Authority { pid, registry },
            ttl,
        }
    }

    /// Detaches the guard from its registry, so dropping it does nothing: for callers that
    /// already killed the pid themselves (`exit_all`).
    pub(crate) fn defuse(&mut self) {
        self.authority.registry = Weak::new();
    }

    /// An authority over this process, for code acting on its behalf elsewhere.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let on_behalf = p.authority(); // for another thread or task
    /// std::thread::scope(|s| {
    ///     s.spawn(|| registry.register(&on_behalf, &Key::new(ns, 1), &Metadata::new()).unwrap());
    /// });
    /// assert_eq!(registry.lookup(&Key::new(ns, 1))?.unwrap().pid(), p.pid());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn authority(&self) -> Authority {
        self.authority.clone()
    }

    /// The lease TTL, if this is a leased process.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// assert_eq!(registry.spawn().lease_ttl(), None);
    /// assert_eq!(registry.spawn_leased(Duration::from_secs(3)).lease_ttl(), Some(Duration::from_secs(3)));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn lease_ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// Renews the lease: the process now lives until one TTL from now. A process
    /// without a lease needs no renewal (this returns `Ok`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ProcessDead`] if the process died, its lease included (a lease found
    /// past its deadline is expired by this call).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let agent = registry.spawn_leased(Duration::from_secs(10));
    /// agent.keepalive()?;
    /// assert!(registry.is_alive(agent.pid()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn keepalive(&self) -> Result<(), Error> {
        let pid = self.authority.pid;
        let dead = || Error::new(ErrorKind::ProcessDead { pid });
        let (Some(ttl), Some(inner)) = (self.ttl, self.authority.registry.upgrade()) else {
            return match self.ttl {
                Some(_) => Err(dead()),
                None => Ok(()),
            };
        };
        inner.keepalive(pid, ttl).map_err(|()| dead())
    }

    /// Ends the process now, telling monitors `reason`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{ExitReason, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let monitor = registry.monitor(p.pid());
    /// p.exit(ExitReason::Normal);
    /// assert_eq!(monitor.recv().reason, ExitReason::Normal);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn exit(self, reason: ExitReason) {
        if let Some(inner) = self.authority.registry.upgrade() {
            inner.kill(self.authority.pid, reason);
        }
    }
}

impl Deref for Process {
    type Target = Authority;

    fn deref(&self) -> &Authority {
        &self.authority
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.authority.pid)
            .field("lease_ttl", &self.ttl)
            .finish()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(inner) = self.authority.registry.upgrade() {
            let reason = if std::thread::panicking() {
                ExitReason::Panicked
            } else {
                ExitReason::Dropped
            };
            inner.kill(self.authority.pid, reason);
        }
    }
}

/// How to start a process: see [`Registry::spawn_with`](crate::Registry::spawn_with).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use roster::{Registry, Spawn};
///
/// let registry = Registry::builder().shards(1).build()?;
/// // A remote agent: a lease it must renew, and the handle used to reach it.
/// let agent = registry.spawn_with(Spawn::new().lease(Duration::from_secs(30)).handle("tcp://10.1.2.3:7000"));
/// assert_eq!(registry.handle::<&str>(agent.pid()), Some("tcp://10.1.2.3:7000"));
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Spawn {
    pub(crate) ttl: Option<Duration>,
    pub(crate) handle: Option<AnyHandle>,
}

impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawn")
            .field("ttl", &self.ttl)
            .field("handle", &self.handle.is_some())
            .finish()
    }
}

impl Spawn {
    /// A plain process: no lease, no handle.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Registry, Spawn};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn_with(Spawn::new());
    /// assert!(registry.is_alive(p.pid()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn new() -> Spawn {
        Spawn::default()
    }

    /// The process dies unless [`Process::keepalive`] renews it within `ttl`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Registry, Spawn};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn_with(Spawn::new().lease(Duration::from_secs(5)));
    /// assert_eq!(p.lease_ttl(), Some(Duration::from_secs(5)));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn lease(mut self, ttl: Duration) -> Spawn {
        self.ttl = Some(ttl);
        self
    }

    /// Stores `handle` with the process (once, however many keys it registers), for
    /// [`Registry::handle`](crate::Registry::handle) to return while the process lives.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Registry, Spawn};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn_with(Spawn::new().handle(String::from("mailbox-7")));
    /// assert_eq!(registry.handle::<String>(p.pid()).as_deref(), Some("mailbox-7"));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn handle<H: Clone + Send + Sync + 'static>(mut self, handle: H) -> Spawn {
        self.handle = Some(Arc::new(handle));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_words_match_only_their_own_live_pid() {
        let table = ProcessTable::new(1, None, Hub::new(1, 0), false);
        let never = Pid::new(1, 1);
        assert!(
            !table.is_alive(never),
            "an index never used holds no live pid"
        );
        assert!(!table.is_alive(Pid::NONE));
        let pid = table.spawn(0).expect("room");
        assert_eq!((pid.index(), pid.generation()), (0, 1));
        assert!(table.is_alive(pid));
        // Index 1 is still unused; its word is 0 in a reserved vector and in a chunked
        // one (the chunk came with index 0's), and a generation-0 pid never matches it.
        assert!(!table.is_alive(Pid::new(1, 0)));
        for other in [Pid::NONE, Pid::new(0, 2), Pid::new(1, 1), Pid(pid.0 ^ 1)] {
            assert!(!table.is_alive(other), "{other:?} is not {pid:?}");
        }
        assert!(table.kill(pid).is_some());
        assert!(!table.is_alive(pid), "dead");
        assert!(table.kill(pid).is_none(), "a second kill finds it dead");
    }

    #[test]
    fn the_next_generation_follows_every_state_word() {
        assert_eq!(next_generation(0), 1, "never used");
        for g in [1, 2, 77, MAX_GENERATION - 1, MAX_GENERATION] {
            let pid = Pid::new(5, g);
            let want = if g == MAX_GENERATION { 1 } else { g + 1 };
            assert_eq!(
                next_generation(alive_word(pid)),
                want,
                "live, generation {g}"
            );
            assert_eq!(
                next_generation(alive_word(pid) ^ DEAD),
                want,
                "dead, generation {g}"
            );
        }
    }
}
