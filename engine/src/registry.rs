//! [`Registry`]: the handle, name interning, processes' handles, the synchronous write
//! path, lookups and the audit. Its builder is in `builder.rs`.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use roster_shard::{Attempt, MaskedSlice, Op, Read, Shard, Ticket, WriteError};

use crate::budget::{self, Quota, Usage};
use crate::builder::{check_deadline, RegistryBuilder};
use crate::entry::{Entry, INLINE_WORDS};
use crate::error::{Error, ErrorKind};
use crate::interner::Interner;
use crate::key::{Key, KeyWords, Namespace, MAX_NAMESPACES};
use crate::lag::CleanupLag;
use crate::lease::Leases;
use crate::metadata::{Capability, Limits, Metadata};
use crate::monitor::{ExitReason, Monitor, Monitors};
use crate::process::{Authority, Expiry, Pid, Process, ProcessTable, Spawn};
use crate::stats::{OpKind, OpRecorder, OpTimer};
use crate::watch::Hub;

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 256;

/// Hashes encoded keys, with per-registry random keys (so the table layout cannot be
/// predicted from outside): the words are folded in pairs by 64x64->128-bit multiplies,
/// as ahash's fallback hasher and wyhash do, and the result goes through one more keyed
/// fold, so its high bits (a table's home slot) and low bits (the shard) are both mixed.
/// About a dozen instructions for a key of two words (an integer name, or a string name
/// of up to 8 bytes).
pub(crate) struct KeyHasher {
    keys: [u64; 4],
}

impl KeyHasher {
    pub(crate) fn new() -> KeyHasher {
        let random = ahash::RandomState::new();
        KeyHasher {
            keys: std::array::from_fn(|i| random.hash_one(i as u64) | 1),
        }
    }

    /// A hasher with the given keys, so a test's result does not depend on the draw.
    #[cfg(test)]
    fn with_keys(keys: [u64; 4]) -> KeyHasher {
        KeyHasher { keys }
    }

    #[inline(always)]
    fn fold(a: u64, b: u64) -> u64 {
        let r = u128::from(a) * u128::from(b);
        (r as u64) ^ ((r >> 64) as u64)
    }

    /// The hash of an encoded key.
    #[inline]
    pub(crate) fn hash(&self, words: &[u64]) -> u64 {
        let [k0, k1, k2, k3] = self.keys;
        // Two words (every integer name, and string names of up to 8 bytes) take this
        // path too, the loop unrolled to one fold. A shortcut without the length and `k3`
        // (`fold(fold(w0 ^ k1, w1 ^ k2), k0)`, 3-4 instructions fewer a lookup) passed the
        // spread test below but made the suite's churn p99 1-25 ms where this hash gives
        // about 120 us (results/2026-12-03-kvm-epyc-2c-05aa4d7); one fold alone fails the
        // test (a stride of 2^16, or namespaces, repeat its top bits).
        let mut h = k0 ^ words.len() as u64;
        let mut pairs = words.chunks_exact(2);
        for p in &mut pairs {
            h = Self::fold(p[0] ^ k1 ^ h, p[1] ^ k2);
        }
        if let [w] = pairs.remainder() {
            h = Self::fold(w ^ k1 ^ h, k2);
        }
        Self::fold(h ^ k3, k0)
    }
}

/// A stored handle, type-erased.
pub(crate) type AnyHandle = Arc<dyn Any + Send + Sync>;

/// The embedder's per-process handles (an agent's mailbox sender, an actor ref).
pub(crate) struct Handles {
    maps: Box<[RwLock<HashMap<Pid, AnyHandle>>]>,
    /// Handles stored; while 0, a death takes no lock here.
    stored: AtomicUsize,
}

impl Handles {
    const LOCKS: usize = 64;

    pub(crate) fn new() -> Handles {
        Handles {
            maps: (0..Self::LOCKS)
                .map(|_| RwLock::new(HashMap::new()))
                .collect(),
            stored: AtomicUsize::new(0),
        }
    }

    fn map(&self, pid: Pid) -> &RwLock<HashMap<Pid, AnyHandle>> {
        &self.maps[pid.index() as usize % Self::LOCKS]
    }

    fn insert(&self, pid: Pid, handle: AnyHandle) {
        let mut map = self.map(pid).write().unwrap_or_else(|e| e.into_inner());
        if map.insert(pid, handle).is_none() {
            self.stored.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self, pid: Pid) -> Option<AnyHandle> {
        self.map(pid)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&pid)
            .cloned()
    }

    fn remove(&self, pid: Pid) {
        if self.stored.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map(pid).write().unwrap_or_else(|e| e.into_inner());
        if map.remove(&pid).is_some() {
            self.stored.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn len(&self) -> usize {
        self.maps
            .iter()
            .map(|m| m.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Bytes a registry's shards hold; see [`Registry::memory`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Slot tables, current and retired.
    pub tables: u64,
    /// Arena chunks allocated (live blocks, free blocks, unused tail).
    pub arena: u64,
    /// Arena bytes in live entry blocks.
    pub live_blocks: u64,
    /// Bytes charged to the entries against the memory limit and quotas: their blocks
    /// (keys, names, metadata, attributes, index positions) at their size class, their
    /// postings and their slots. Exact: it returns to 0 when the registry empties.
    pub charged: u64,
    /// Bytes charged for interned capability names (each name's bytes plus
    /// [`NAME_CHARGE`]); they count against the memory limit with `charged` and stay
    /// for the registry's life.
    pub names: u64,
    /// The memory limit on `charged + names`, if one is set.
    pub limit: Option<u64>,
}

/// Bytes charged per interned capability name beyond its own bytes (its map entry and
/// reference count).
pub const NAME_CHARGE: u64 = 64;

impl Memory {
    /// Tables plus arena: what the shards have allocated.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// let m = registry.memory();
    /// assert!(m.total() >= m.tables + m.arena);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn total(&self) -> u64 {
        self.tables + self.arena
    }
}

/// What [`Registry::audit`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Entries in the shards' tables.
    pub entries: usize,
    /// Of those, entries of dead processes not yet removed.
    pub dead_entries: usize,
    /// Postings in the secondary indexes (one per entry and index term).
    pub postings: usize,
    /// Bytes of entry and posting blocks, as accounted.
    pub block_bytes: u64,
    /// Live processes.
    pub live_processes: u64,
    /// Monitors registered and not yet fired (dropped ones may linger until pruned).
    pub monitors: usize,
    /// Stored process handles.
    pub handles: usize,
    /// Lease deadlines queued.
    pub leases_queued: usize,
    /// Broken invariants, described; empty when all hold.
    pub problems: Vec<String>,
}

/// Interned namespace and capability names.
#[derive(Default)]
pub(crate) struct Names {
    namespaces: HashMap<Box<str>, u32>,
}

/// A lookup's answer as the calls `lookup_into` inlines return it: two scalars, which
/// come back in two registers, where a `Result<bool, Error>` (a tag, a bool and a
/// pointer) comes back through memory and makes every inlined lookup store and reload
/// its answer.
struct Answer(bool, Option<Error>);

impl From<Result<bool, Error>> for Answer {
    #[inline(always)]
    fn from(r: Result<bool, Error>) -> Answer {
        match r {
            Ok(found) => Answer(found, None),
            Err(e) => Answer(false, Some(e)),
        }
    }
}

impl From<Answer> for Result<bool, Error> {
    #[inline(always)]
    fn from(a: Answer) -> Result<bool, Error> {
        match a {
            Answer(_, Some(e)) => Err(e),
            Answer(found, None) => Ok(found),
        }
    }
}

/// [`Inner::fast_tag`] when lookups must take the checked path: wider than any tag.
pub(crate) const NO_FAST_LOOKUP: u64 = u64::MAX;

pub(crate) struct Inner {
    /// This registry's tag, carried by its namespaces.
    pub(crate) tag: u32,
    pub(crate) shards: MaskedSlice<Shard>,
    pub(crate) procs: Arc<ProcessTable>,
    pub(crate) hasher: KeyHasher,
    pub(crate) limits: Limits,
    pub(crate) names: RwLock<Names>,
    /// Capability names and ids.
    pub(crate) capabilities: Interner,
    pub(crate) closed: AtomicBool,
    /// [`Inner::tag`] while a lookup may take its inlined fast case (the registry is open
    /// and op stats are off), else [`NO_FAST_LOOKUP`], which no tag equals: the fast
    /// case's three checks in one compare with the key's namespace tag.
    pub(crate) fast_tag: AtomicU64,
    pub(crate) monitors: Monitors,
    pub(crate) leases: Arc<Leases>,
    pub(crate) handles: Handles,
    pub(crate) reaper: Mutex<Option<(JoinHandle<()>, ThreadId)>>,
    pub(crate) cleanup_window: Duration,
    pub(crate) write_deadline: Duration,
    /// Operation latency histograms, if enabled.
    pub(crate) ops: Option<OpRecorder>,
}

impl Inner {
    /// Kills `pid`: sends its death notice to exactly the shards that may hold it (they
    /// serve it ahead of other writes), drops its handle and tells its monitors. Returns
    /// whether this call killed it (only one caller ever does).
    pub(crate) fn kill(&self, pid: Pid, reason: ExitReason) -> bool {
        let Some(shards) = self.procs.kill(pid) else {
            return false;
        };
        for s in shards {
            // A notice the shard cannot serve releases the pid itself (`Hooks::detached`).
            match self.shards.get(s) {
                Some(sh) => {
                    sh.owner_died(pid.as_u64());
                }
                None => self.procs.release(pid),
            }
        }
        self.handles.remove(pid);
        self.monitors.fire(pid, &reason);
        true
    }

    /// Kills many pids at once: all are marked dead first (so all vanish from lookups
    /// together), then each shard gets one notice listing its share. Returns how many
    /// this call killed.
    pub(crate) fn kill_many(
        &self,
        pids: impl IntoIterator<Item = Pid>,
        reason: &ExitReason,
    ) -> usize {
        let mut per_shard: Vec<Vec<u64>> = vec![Vec::new(); self.shards.len()];
        let mut killed = Vec::new();
        for pid in pids {
            if let Some(shards) = self.procs.kill(pid) {
                for s in shards {
                    per_shard[s].push(pid.as_u64());
                }
                killed.push(pid);
            }
        }
        for (shard, owners) in self.shards.iter().zip(per_shard) {
            if !owners.is_empty() {
                // Unserved notices release their pids themselves (`Hooks::detached`).
                shard.owners_died(owners);
            }
        }
        for &pid in &killed {
            self.handles.remove(pid);
            self.monitors.fire(pid, reason);
        }
        killed.len()
    }

    /// Renews `pid`'s lease by `ttl`; `Err` if it is dead or just expired.
    pub(crate) fn keepalive(&self, pid: Pid, ttl: Duration) -> Result<(), ()> {
        let now = self.leases.now();
        match self.procs.renew(pid, now, self.leases.deadline(ttl)) {
            Ok(()) => Ok(()),
            Err(Expiry::Expired) => {
                self.kill(pid, ExitReason::LeaseExpired);
                Err(())
            }
            Err(_) => Err(()),
        }
    }

    /// Kills every leased pid whose deadline passed; re-queues renewed ones.
    pub(crate) fn expire_leases(&self) {
        let now = self.leases.now();
        for (_, pid) in self.leases.due(now) {
            match self.procs.expire(pid, now) {
                Expiry::Renewed(deadline) => self.leases.schedule(pid, deadline),
                Expiry::Expired => {
                    self.kill(pid, ExitReason::LeaseExpired);
                }
                Expiry::Gone => {}
            }
        }
    }

    fn shutdown(&self) {
        self.fast_tag.store(NO_FAST_LOOKUP, Ordering::SeqCst);
        self.closed.store(true, Ordering::SeqCst);
        self.procs.hub.close();
        self.leases.stop();
        let reaper = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((handle, id)) = reaper {
            // The reaper itself may drop the last `Registry`; it must not join itself.
            if id != std::thread::current().id() {
                let _ = handle.join();
            }
        }
        for s in self.shards.iter() {
            s.shutdown();
        }
        self.monitors.fire_all(&ExitReason::Shutdown);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What a write does to its key.
#[derive(Clone, Copy)]
pub(crate) enum WriteKind<'m> {
    Register(&'m Metadata),
    Unregister,
    Update(&'m Metadata),
}

impl WriteKind<'_> {
    /// The operation kind it is timed as.
    pub(crate) fn kind(&self) -> OpKind {
        match self {
            WriteKind::Register(_) => OpKind::Register,
            WriteKind::Unregister => OpKind::Unregister,
            WriteKind::Update(_) => OpKind::Update,
        }
    }
}

/// A write's owner and deadline, which its errors are reported against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteCtx {
    pub(crate) pid: Pid,
    /// The registry's tag (for namespaces named in errors).
    pub(crate) tag: u32,
    pub(crate) deadline: Duration,
}

impl WriteCtx {
    /// When the write must have been claimed by its shard's writer: the deadline is
    /// counted from now, which callers take right before they queue the write, so
    /// validation, encoding and interning do not eat into it. `None` (no deadline) when
    /// it lies past what an `Instant` holds (`Duration::MAX`, say).
    pub(crate) fn until(&self) -> Option<Instant> {
        Instant::now().checked_add(self.deadline)
    }

    /// The public error for a shard's answer to a write to shard `shard`.
    pub(crate) fn error(&self, e: WriteError, shard: usize) -> Error {
        Error::new(match e {
            WriteError::Exists { owner } => ErrorKind::AlreadyRegistered { owner: Pid(owner) },
            WriteError::OwnerDead => ErrorKind::ProcessDead { pid: self.pid },
            WriteError::NotFound => ErrorKind::NotFound,
            WriteError::NotOwner { owner } => ErrorKind::NotOwner { owner: Pid(owner) },
            WriteError::TooLarge => ErrorKind::InvalidMetadata {
                field: "metadata",
                limit: roster_shard::MAX_META_WORDS * 8,
                actual: usize::MAX,
            },
            WriteError::Timeout => ErrorKind::Timeout {
                deadline: self.deadline,
            },
            WriteError::Closed => ErrorKind::ShuttingDown,
            WriteError::Failed => ErrorKind::ShardFailed { shard },
            WriteError::Refused(r) => {
                let (limit, ns) = budget::refused(r);
                match limit {
                    budget::FULL => ErrorKind::RegistryFull { limit: r.limit },
                    budget::QUOTA_ENTRIES => ErrorKind::QuotaExceeded {
                        namespace: Namespace(ns, self.tag),
                        what: "entries",
                        limit: r.limit,
                    },
                    _ => ErrorKind::QuotaExceeded {
                        namespace: Namespace(ns, self.tag),
                        what: "bytes",
                        limit: r.limit,
                    },
                }
            }
        })
    }
}

/// A process registry: maps namespaced keys to live processes and their metadata.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`: hand a clone to every thread or
/// task. Lookups take no lock and never wait for writers; writes go to the key's shard
/// writer and are visible to every reader before they return. Dropping the last clone
/// stops and joins the shard threads.
///
/// # Examples
///
/// ```
/// use roster::{Health, Key, Metadata, Registry};
///
/// let registry = Registry::builder().shards(2).build()?;
/// let agents = registry.namespace("agents")?;
/// let planner = registry.spawn();
/// let key = Key::new(agents, "planner");
/// registry.register(&planner, &key, &Metadata::new().capability("plan").health(Health::Healthy))?;
///
/// let entry = registry.lookup(&key)?.expect("registered");
/// assert_eq!(entry.pid(), planner.pid());
/// assert!(entry.has_capability(registry.capability("plan").unwrap()));
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Clone)]
pub struct Registry {
    pub(crate) inner: Arc<Inner>,
    /// This handle's write deadline, if [`Registry::with_deadline`] set one.
    pub(crate) deadline: Option<Duration>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("shards", &self.inner.shards.len())
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// A registry with default settings.
    ///
    /// # Errors
    ///
    /// As [`RegistryBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::new()?;
    /// assert!(registry.shard_count() >= 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn new() -> Result<Registry, Error> {
        RegistryBuilder::default().build()
    }

    /// A builder to configure one.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(2).build()?;
    /// assert_eq!(registry.shard_count(), 2);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Number of shards.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(8).build()?;
    /// assert_eq!(registry.shard_count(), 8);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The limits this registry enforces.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// assert_eq!(registry.limits(), &roster::Limits::default());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub(crate) fn shards(&self) -> &[Shard] {
        &self.inner.shards
    }

    #[inline]
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Relaxed) {
            Err(Error::new(ErrorKind::ShuttingDown))
        } else {
            Ok(())
        }
    }

    /// The namespace called `name`, created on first use.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidNamespace`] for an empty name, one longer than
    /// [`MAX_NAMESPACE_LEN`] bytes, or a registry that already has 2^20 - 1 namespaces.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// // The same name gives the same namespace; another name, another one.
    /// assert_eq!(registry.namespace("agents")?, ns);
    /// assert_ne!(registry.namespace("tools")?, ns);
    /// assert!(registry.namespace("").is_err());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn namespace(&self, name: &str) -> Result<Namespace, Error> {
        let invalid = |reason| Err(Error::new(ErrorKind::InvalidNamespace { reason }));
        if name.is_empty() {
            return invalid("empty name");
        }
        if name.len() > MAX_NAMESPACE_LEN {
            return invalid("name longer than 256 bytes");
        }
        let tag = self.inner.tag;
        if let Some(&id) = self.read_names().namespaces.get(name) {
            return Ok(Namespace(id, tag));
        }
        let mut names = self.inner.names.write().unwrap_or_else(|e| e.into_inner());
        let next = names.namespaces.len() as u32;
        if let Some(&id) = names.namespaces.get(name) {
            return Ok(Namespace(id, tag));
        }
        if next >= MAX_NAMESPACES {
            return invalid("too many namespaces");
        }
        self.inner.procs.ensure_namespace(next);
        names.namespaces.insert(name.into(), next);
        Ok(Namespace(next, tag))
    }

    /// Refuses a namespace another registry made.
    #[inline]
    pub(crate) fn own(&self, ns: Namespace) -> Result<u32, Error> {
        if ns.1 == self.inner.tag {
            Ok(ns.0)
        } else {
            Err(Error::new(ErrorKind::ForeignNamespace { namespace: ns.0 }))
        }
    }

    /// This registry's tag (namespaces decoded from keys carry it).
    pub(crate) fn tag(&self) -> u32 {
        self.inner.tag
    }

    fn read_names(&self) -> std::sync::RwLockReadGuard<'_, Names> {
        self.inner.names.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The name of namespace `ns`, if it is this registry's: for messages about a
    /// namespace an error names by id ([`ErrorKind::QuotaExceeded`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// assert_eq!(registry.namespace_name(ns).as_deref(), Some("agents"));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn namespace_name(&self, ns: Namespace) -> Option<String> {
        let id = self.own(ns).ok()?;
        self.read_names()
            .namespaces
            .iter()
            .find(|(_, &i)| i == id)
            .map(|(name, _)| name.to_string())
    }

    /// The capability called `name`, if any entry ever registered it.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// assert_eq!(registry.capability("search"), None); // nobody registered it yet
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search"))?;
    /// let search = registry.capability("search").unwrap();
    /// assert!(registry.lookup(&Key::new(ns, 1))?.unwrap().has_capability(search));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn capability(&self, name: &str) -> Option<Capability> {
        self.inner.capabilities.get(name).map(Capability)
    }

    /// The name of capability `c`.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search"))?;
    /// let c = registry.capability("search").unwrap();
    /// assert_eq!(registry.capability_name(c).as_deref(), Some("search"));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn capability_name(&self, c: Capability) -> Option<Arc<str>> {
        self.inner.capabilities.name(c.0)
    }

    /// The id of capability `name`, interning it on first use. Interned names stay for
    /// the registry's life (a timed-out write may leave its names here; it leaves no
    /// entry, index term or entry charge) and are charged to the memory limit
    /// ([`Memory::names`]).
    pub(crate) fn intern_capability(&self, name: &str) -> Result<u32, Error> {
        if let Some(id) = self.inner.capabilities.get(name) {
            return Ok(id);
        }
        let max = self.inner.limits.max_capability_len;
        if name.is_empty() || name.len() > max {
            return Err(Error::new(ErrorKind::InvalidMetadata {
                field: "capability name",
                limit: max,
                actual: name.len(),
            }));
        }
        self.inner.capabilities.intern(name, || {
            let budget = &self.inner.procs.budget;
            if budget.reserve_name(name.len() as u64 + NAME_CHARGE) {
                Ok(())
            } else {
                let limit = budget.limit().unwrap_or(u64::MAX);
                Err(Error::new(ErrorKind::RegistryFull { limit }))
            }
        })
    }

    /// Starts a new process and returns its owner guard.
    ///
    /// After [`Registry::shutdown`] the guard is of a process that was never alive: its
    /// pid is [`Pid::NONE`], and every write through it fails with
    /// [`ErrorKind::ShuttingDown`].
    ///
    /// # Panics
    ///
    /// If [`MAX_PROCESSES`](crate::MAX_PROCESSES) processes are alive already;
    /// [`Registry::try_spawn_with`] returns an error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let worker = registry.spawn();
    /// registry.register(&worker, &Key::new(ns, "worker"), &Metadata::new())?;
    /// assert!(registry.is_alive(worker.pid()));
    /// drop(worker); // the process dies with its guard
    /// assert!(registry.lookup(&Key::new(ns, "worker"))?.is_none());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn spawn(&self) -> Process {
        self.spawn_with(Spawn::new())
    }

    /// Starts a leased process: it dies unless [`Process::keepalive`] renews it within
    /// `ttl` (for agents outside this process, kept alive by heartbeats).
    ///
    /// # Panics
    ///
    /// As [`Registry::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let agent = registry.spawn_leased(Duration::from_secs(30));
    /// agent.keepalive()?; // renews the lease for another 30 s
    /// assert!(registry.is_alive(agent.pid()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn spawn_leased(&self, ttl: Duration) -> Process {
        self.spawn_with(Spawn::new().lease(ttl))
    }

    /// Starts a process as `options` say (lease, handle).
    ///
    /// # Panics
    ///
    /// As [`Registry::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Registry, Spawn};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn_with(Spawn::new().handle(42u32));
    /// assert_eq!(registry.handle::<u32>(p.pid()), Some(42));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn spawn_with(&self, options: Spawn) -> Process {
        match self.try_spawn_with(options) {
            Ok(p) => p,
            Err(e) if *e.kind() == ErrorKind::ShuttingDown => {
                Process::new(Pid::NONE, Weak::new(), None)
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// Starts a process as `options` say, or says why it cannot.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TooManyProcesses`] when [`MAX_PROCESSES`](crate::MAX_PROCESSES)
    /// processes are alive (or dying) already; [`ErrorKind::ShuttingDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Registry, Spawn};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.try_spawn_with(Spawn::new())?;
    /// assert!(registry.is_alive(p.pid()));
    /// registry.shutdown();
    /// assert!(registry.try_spawn_with(Spawn::new()).is_err());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn try_spawn_with(&self, options: Spawn) -> Result<Process, Error> {
        self.check_open()?;
        let leases = &self.inner.leases;
        let deadline = options.ttl.map_or(0, |ttl| leases.deadline(ttl));
        let pid = self.inner.procs.spawn(deadline).ok_or_else(|| {
            Error::new(ErrorKind::TooManyProcesses {
                limit: crate::MAX_PROCESSES,
            })
        })?;
        // A shutdown that raced this spawn: the process must not outlive it alive.
        if self.inner.closed.load(Ordering::SeqCst) {
            self.inner.kill(pid, ExitReason::Shutdown);
            return Err(Error::new(ErrorKind::ShuttingDown));
        }
        if let Some(h) = options.handle {
            self.inner.handles.insert(pid, h);
        }
        if options.ttl.is_some() {
            leases.schedule(pid, deadline);
        }
        Ok(Process::new(pid, Arc::downgrade(&self.inner), options.ttl))
    }

    /// Ends many processes at once, telling their monitors `reason`: every pid is marked
    /// dead before any cleanup starts, and each shard gets one batched notice, so a mass
    /// death (a supervisor stopping its children, a node going away) costs one message
    /// per shard instead of one per process. Processes of another registry are dropped
    /// as usual (killed by their own registry).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{ExitReason, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(2).build()?;
    /// let ns = registry.namespace("pool")?;
    /// let workers: Vec<_> = (0..100u64)
    ///     .map(|i| {
    ///         let w = registry.spawn();
    ///         registry.register(&w, &Key::new(ns, i), &Metadata::new()).map(|()| w)
    ///     })
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(registry.exit_all(workers, ExitReason::Normal), 100);
    /// assert!(registry.lookup(&Key::new(ns, 7))?.is_none());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn exit_all(
        &self,
        processes: impl IntoIterator<Item = Process>,
        reason: ExitReason,
    ) -> usize {
        let mut processes: Vec<Process> = processes.into_iter().collect();
        let ours = |p: &Process| std::ptr::eq(p.registry().as_ptr(), Arc::as_ptr(&self.inner));
        let pids: Vec<Pid> = processes
            .iter()
            .filter(|p| ours(p))
            .map(|p| p.pid())
            .collect();
        let killed = self.inner.kill_many(pids, &reason);
        // Their pids are dead: dropping the guards needs no registry round trip.
        processes
            .iter_mut()
            .filter(|p| ours(p))
            .for_each(Process::defuse);
        killed
    }

    /// The handle stored with `pid` by [`Spawn::handle`], if `pid` is alive and the
    /// handle is an `H`. Costs a read lock and a clone; plain lookups never pay it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use roster::{Key, Metadata, Registry, Spawn};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let (mailbox, inbox) = mpsc::channel::<String>();
    /// let agent = registry.spawn_with(Spawn::new().handle(mailbox));
    /// registry.register(&agent, &Key::new(ns, "echo"), &Metadata::new())?;
    ///
    /// let entry = registry.lookup(&Key::new(ns, "echo"))?.unwrap();
    /// let to_agent = registry.handle::<mpsc::Sender<String>>(entry.pid()).unwrap();
    /// to_agent.send("hello".into()).unwrap();
    /// assert_eq!(inbox.recv().unwrap(), "hello");
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn handle<H: Clone + Send + Sync + 'static>(&self, pid: Pid) -> Option<H> {
        let h = self.inner.handles.get(pid)?.downcast_ref::<H>()?.clone();
        // Checked after the clone: a process that died meanwhile gives nothing back.
        self.is_alive(pid).then_some(h)
    }

    /// A one-shot notice of `pid`'s death, with the reason. A pid that is already dead
    /// is reported at once, with [`ExitReason::NoProc`]; after (or racing)
    /// [`Registry::shutdown`], every monitor reports [`ExitReason::Shutdown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{ExitReason, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn();
    /// let monitor = registry.monitor(p.pid());
    /// p.exit(ExitReason::Normal);
    /// assert_eq!(monitor.recv().reason, ExitReason::Normal);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn monitor(&self, pid: Pid) -> Monitor {
        self.inner.monitors.add(pid, || self.is_alive(pid))
    }

    /// The configured cleanup window.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// assert_eq!(registry.cleanup_window(), std::time::Duration::from_millis(100));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn cleanup_window(&self) -> Duration {
        self.inner.cleanup_window
    }

    /// Cleanup lag so far: for each fully reclaimed dead process, the time from its
    /// death until every shard removed its entries.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// drop(p);
    /// let lag = registry.cleanup_lag();
    /// assert!(lag.max() <= registry.cleanup_window() * 10 || lag.count() == 0);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn cleanup_lag(&self) -> CleanupLag {
        self.inner.procs.cleanup_lag()
    }

    /// Whether `pid` is alive: one atomic load.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let p = registry.spawn();
    /// let pid = p.pid();
    /// assert!(registry.is_alive(pid));
    /// drop(p);
    /// assert!(!registry.is_alive(pid));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.inner.procs.is_alive(pid)
    }

    /// Live processes.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let (a, b) = (registry.spawn(), registry.spawn());
    /// assert_eq!(registry.process_count(), 2);
    /// drop((a, b));
    /// assert_eq!(registry.process_count(), 0);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn process_count(&self) -> u64 {
        self.inner.procs.live()
    }

    fn owned_pid(&self, owner: &Authority) -> Result<Pid, Error> {
        if !std::ptr::eq(owner.registry().as_ptr(), Arc::as_ptr(&self.inner)) {
            return Err(Error::new(ErrorKind::ForeignProcess));
        }
        Ok(owner.pid())
    }

    /// The latency recorder, if op stats are on.
    #[inline]
    pub(crate) fn op_recorder(&self) -> Option<&OpRecorder> {
        self.inner.ops.as_ref()
    }

    /// Times an operation of kind `op` until the guard drops, if op stats are on.
    #[inline]
    pub(crate) fn op_timer(&self, op: OpKind) -> OpTimer<'_> {
        OpTimer(self.op_recorder().map(|rec| (rec, op, Instant::now())))
    }

    /// The change feed's hub.
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.inner.procs.hub
    }

    /// The process table (batched lookups prefetch from it).
    pub(crate) fn procs(&self) -> &ProcessTable {
        &self.inner.procs
    }

    /// The hash of an encoded key and the shard it lives in.
    #[inline]
    pub(crate) fn route(&self, words: &[u64]) -> (u64, &Shard) {
        let hash = self.key_hash(words);
        (hash, self.shard_of(hash))
    }

    /// The hash of an encoded key.
    #[inline]
    pub(crate) fn key_hash(&self, words: &[u64]) -> u64 {
        self.inner.hasher.hash(words)
    }

    /// The shard a key of hash `hash` lives in.
    #[inline]
    pub(crate) fn shard_of(&self, hash: u64) -> &Shard {
        self.inner.shards.masked(hash)
    }

    /// The shard index of an encoded key and its hash.
    #[inline]
    pub(crate) fn route_index(&self, words: &[u64]) -> (u64, usize) {
        let hash = self.key_hash(words);
        (hash, self.shard_index(hash))
    }

    /// The index of the shard a key of hash `hash` lives in.
    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        (hash & self.inner.shards.mask()) as usize
    }

    /// The deadline this handle's writes get: [`Registry::with_deadline`]'s, else the
    /// builder's [`RegistryBuilder::write_deadline`] (10 ms by default).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// assert_eq!(registry.write_deadline(), roster::DEFAULT_WRITE_DEADLINE);
    /// let patient = registry.with_deadline(std::time::Duration::from_secs(1))?;
    /// assert_eq!(patient.write_deadline(), std::time::Duration::from_secs(1));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn write_deadline(&self) -> Duration {
        self.deadline.unwrap_or(self.inner.write_deadline)
    }

    /// Another handle to the same registry whose writes have `deadline` instead (SPEC L1:
    /// a write the shard's writer has not reached within it returns
    /// [`ErrorKind::Timeout`] and is never applied). Cheap: a clone of an `Arc`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let patient = registry.with_deadline(Duration::from_secs(1))?;
    /// assert_eq!(patient.write_deadline(), Duration::from_secs(1));
    /// assert_eq!(registry.write_deadline(), Duration::from_millis(10));
    /// let ns = patient.namespace("jobs")?;
    /// let p = patient.spawn();
    /// patient.register(&p, &Key::new(ns, 1u64), &Metadata::new())?;
    /// assert!(registry.lookup(&Key::new(ns, 1u64))?.is_some());
    /// # Ok::<(), roster::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] for a zero deadline (as the builder refuses one).
    pub fn with_deadline(&self, deadline: Duration) -> Result<Registry, Error> {
        check_deadline(deadline)
            .map_err(|reason| Error::new(ErrorKind::InvalidConfig { reason }))?;
        Ok(Registry {
            inner: self.inner.clone(),
            deadline: Some(deadline),
        })
    }

    /// Validates and encodes one write of `pid`'s: its shard and the shard operation.
    pub(crate) fn encode_write(
        &self,
        pid: Pid,
        key: &Key<'_>,
        change: WriteKind<'_>,
    ) -> Result<(usize, Op), Error> {
        self.own(key.namespace())?;
        let mut words = KeyWords::new();
        key.encode(self.inner.limits.max_name_len, &mut words)?;
        let (hash, shard) = self.route_index(&words);
        let key_words = words.to_vec();
        let owner = pid.as_u64();
        let op = match change {
            WriteKind::Unregister => Op::Remove {
                hash,
                key: key_words,
                owner,
            },
            WriteKind::Register(m) | WriteKind::Update(m) => {
                let meta = m.encode(&self.inner.limits, |c| self.intern_capability(c))?;
                // The shard asks `Hooks::index_terms` for the entry's index terms.
                if matches!(change, WriteKind::Register(_)) {
                    Op::Insert {
                        hash,
                        key: key_words,
                        owner,
                        meta,
                    }
                } else {
                    Op::Update {
                        hash,
                        key: key_words,
                        owner,
                        meta,
                    }
                }
            }
        };
        Ok((shard, op))
    }

    /// Checks that the registry is open and `owner` belongs to it; the write's context.
    pub(crate) fn begin_write(&self, owner: &Authority) -> Result<WriteCtx, Error> {
        self.check_open()?;
        let pid = self.owned_pid(owner)?;
        Ok(WriteCtx {
            pid,
            tag: self.inner.tag,
            deadline: self.write_deadline(),
        })
    }

    /// Validates, encodes and queues one write; its ticket answers when it is applied.
    pub(crate) fn start_write(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        change: WriteKind<'_>,
    ) -> Result<(Ticket<()>, WriteCtx, usize), Error> {
        let ctx = self.begin_write(owner)?;
        let (shard, op) = self.encode_write(ctx.pid, key, change)?;
        let ticket = self.inner.shards[shard]
            .submit(op, ctx.until())
            .map_err(|e| ctx.error(e, shard))?;
        Ok((ticket, ctx, shard))
    }

    fn write(&self, owner: &Authority, key: &Key<'_>, change: WriteKind<'_>) -> Result<(), Error> {
        let _timer = self.op_timer(change.kind());
        let (ticket, ctx, shard) = self.start_write(owner, key, change)?;
        ticket.wait().map_err(|e| ctx.error(e, shard))
    }

    /// Checks `key` and `metadata` against this registry's limits as
    /// [`Registry::register`] would, storing nothing: for callers that must know a write
    /// will pass validation before they commit to it elsewhere (the cluster layer claims a
    /// name in etcd only for an entry this registry would accept).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidKey`], [`ErrorKind::InvalidMetadata`],
    /// [`ErrorKind::ForeignNamespace`]: what `register` would answer for them.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{ErrorKind, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("jobs")?;
    /// assert!(registry.validate(&Key::new(ns, "leader"), &Metadata::new()).is_ok());
    /// let err = registry.validate(&Key::new(ns, ""), &Metadata::new()).unwrap_err();
    /// assert!(matches!(err.kind(), ErrorKind::InvalidKey { .. }));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn validate(&self, key: &Key<'_>, metadata: &Metadata) -> Result<(), Error> {
        self.own(key.namespace())?;
        key.check(self.inner.limits.max_name_len)?;
        metadata.encode(&self.inner.limits, |_| Ok(0)).map(|_| ())
    }

    /// Registers `key` for the process `owner` is over (pass the [`Process`] guard, or
    /// an [`Authority`] from it) with `metadata`, if the key is free. Of concurrent
    /// registrations of one key exactly one succeeds (SPEC S1). A key held by a dead
    /// process counts as free. When this returns `Ok`, every lookup sees the entry.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::AlreadyRegistered`] naming the live holder; [`ErrorKind::InvalidKey`]
    /// or [`ErrorKind::InvalidMetadata`] naming the limit; [`ErrorKind::ProcessDead`];
    /// [`ErrorKind::ForeignProcess`]; [`ErrorKind::ShuttingDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{ErrorKind, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("jobs")?;
    /// let (a, b) = (registry.spawn(), registry.spawn());
    /// registry.register(&a, &Key::new(ns, "leader"), &Metadata::new())?;
    /// let err = registry.register(&b, &Key::new(ns, "leader"), &Metadata::new()).unwrap_err();
    /// assert_eq!(err.kind(), &ErrorKind::AlreadyRegistered { owner: a.pid() });
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn register(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        self.write(owner, key, WriteKind::Register(metadata))
    }

    /// Removes `key`, which the process `owner` is over must hold.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`], [`ErrorKind::NotOwner`] naming the holder,
    /// [`ErrorKind::InvalidKey`], [`ErrorKind::ForeignProcess`], [`ErrorKind::ShuttingDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{ErrorKind, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let (a, b) = (registry.spawn(), registry.spawn());
    /// let key = Key::new(ns, "leader");
    /// registry.register(&a, &key, &Metadata::new())?;
    /// // Only the holder may remove it.
    /// let err = registry.unregister(&b, &key).unwrap_err();
    /// assert_eq!(err.kind(), &ErrorKind::NotOwner { owner: a.pid() });
    /// registry.unregister(&a, &key)?;
    /// assert!(registry.lookup(&key)?.is_none());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn unregister(&self, owner: &Authority, key: &Key<'_>) -> Result<(), Error> {
        self.write(owner, key, WriteKind::Unregister)
    }

    /// Replaces the metadata of `key`, which the process `owner` is over must hold.
    ///
    /// # Errors
    ///
    /// As [`Registry::unregister`], plus [`ErrorKind::InvalidMetadata`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let key = Key::new(ns, "searcher");
    /// registry.register(&p, &key, &Metadata::new().health(Health::Healthy))?;
    /// registry.update_metadata(&p, &key, &Metadata::new().health(Health::Degraded))?;
    /// assert_eq!(registry.lookup(&key)?.unwrap().health(), Health::Degraded);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn update_metadata(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        self.write(owner, key, WriteKind::Update(metadata))
    }

    /// Looks `key` up: lock-free, never waits for a writer (SPEC L2), never returns an
    /// entry of a dead process (I1). Allocates nothing unless the entry's metadata exceeds
    /// [`INLINE_WORDS`](crate::INLINE_WORDS).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ShuttingDown`]; [`ErrorKind::ForeignNamespace`] for a key of another
    /// registry's namespace; [`ErrorKind::InvalidKey`] (no such key can exist).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, "planner"), &Metadata::new().attribute("slots", 4))?;
    /// let entry = registry.lookup(&Key::new(ns, "planner"))?.expect("registered");
    /// assert_eq!(entry.pid(), p.pid());
    /// assert_eq!(entry.attribute("slots"), Some(roster::ValueRef::Int(4)));
    /// assert!(registry.lookup(&Key::new(ns, "nobody"))?.is_none());
    /// # Ok::<(), roster::Error>(())
    /// ```
    #[inline]
    pub fn lookup(&self, key: &Key<'_>) -> Result<Option<Entry>, Error> {
        let mut entry = Entry::new();
        Ok(self.lookup_fast(key, &mut entry)?.then_some(entry))
    }

    /// Like [`Registry::lookup`], into a caller-owned entry whose buffers are reused:
    /// returns whether the key was found (`entry` is unspecified if not). Never allocates
    /// once `entry` has held the largest metadata it meets.
    ///
    /// # Errors
    ///
    /// As [`Registry::lookup`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Entry, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(2).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new();
    /// registry.register_many(&p, (0..100u64).map(|i| (Key::new(ns, i), &meta)))?;
    /// // One entry, reused for every lookup: no allocation in the loop.
    /// let mut entry = Entry::new();
    /// let mut found = 0;
    /// for i in 0..200u64 {
    ///     found += registry.lookup_into(&Key::new(ns, i), &mut entry)? as usize;
    /// }
    /// assert_eq!(found, 100);
    /// # Ok::<(), roster::Error>(())
    /// ```
    #[inline]
    pub fn lookup_into(&self, key: &Key<'_>, entry: &mut Entry) -> Result<bool, Error> {
        self.lookup_fast(key, entry)
    }

    /// [`Registry::lookup_into`], always inlined: [`Registry::lookup`] calls it too, so
    /// that a caller of either gets the two-word fast path in line, not a call (which
    /// cost `lookup` about 30 instructions a hit: saved registers, and the key rebuilt
    /// from memory).
    #[inline(always)]
    fn lookup_fast(&self, key: &Key<'_>, entry: &mut Entry) -> Result<bool, Error> {
        // The common case, inlined whole: a two-word key (an integer name, or a string
        // name of at most 8 bytes within the limit) on an open registry of its
        // namespace, stats off (one compare: `fast_tag`). A hash, one optimistic read and
        // one liveness load, with no call and no loop; every other case is one call, so
        // the key itself stays in registers here.
        if let Some(words) = key.two_words(self.inner.limits.max_name_len) {
            if self.inner.fast_tag.load(Ordering::Relaxed) == u64::from(key.namespace().1) {
                return self.read_two(words, entry);
            }
        }
        self.lookup_other(*key, entry).into()
    }

    /// [`Registry::lookup_into`] for every case but its inlined one. It takes the key by
    /// value: the copy is then made on this call's branch only, where a reference would
    /// make the caller store the key on every lookup.
    #[inline(never)]
    fn lookup_other(&self, key: Key<'_>, entry: &mut Entry) -> Answer {
        // A longer name on an open registry of its namespace, stats off (`fast_tag`, as
        // in `lookup_fast`): straight to its read, past `lookup_plain`'s checks.
        if self.inner.fast_tag.load(Ordering::Relaxed) == u64::from(key.namespace().1) {
            return self.lookup_str(&key, entry).into();
        }
        // Off, the timer would cost a drop flag and a landing pad.
        if self.inner.ops.is_some() {
            return self.lookup_timed(&key, entry).into();
        }
        self.lookup_plain(&key, entry).into()
    }

    /// [`Registry::lookup_into`] with operation stats on.
    #[inline(never)]
    fn lookup_timed(&self, key: &Key<'_>, entry: &mut Entry) -> Result<bool, Error> {
        let _timer = self.op_timer(OpKind::Lookup);
        self.lookup_plain(key, entry)
    }

    /// The lookup itself: the registry's and the key's checks, then the read.
    #[inline]
    fn lookup_plain(&self, key: &Key<'_>, entry: &mut Entry) -> Result<bool, Error> {
        if self.inner.closed.load(Ordering::Relaxed) || key.namespace().1 != self.inner.tag {
            self.lookup_refused(key)?;
        }
        if let Some(words) = key.two_words(self.inner.limits.max_name_len) {
            let (hash, shard) = self.route(&words);
            return self.read_entry(shard, hash, &words, entry);
        }
        self.lookup_str(key, entry)
    }

    /// The checks a lookup of `key` makes before it reads anything, off the hot path:
    /// reached only when one of them fails, it says which.
    #[cold]
    #[inline(never)]
    fn lookup_refused(&self, key: &Key<'_>) -> Result<(), Error> {
        self.check_open()?;
        self.own(key.namespace()).map(|_| ())
    }

    /// [`Registry::lookup_plain`] for a string name that is not two words (longer than
    /// 8 bytes, empty, or over the name limit). Up to 24 bytes it is encoded in
    /// registers ([`Key::small_words`]); anything else is encoded (and checked, so a bad
    /// name gets its error here) into a buffer on the stack first.
    #[inline(never)]
    fn lookup_str(&self, key: &Key<'_>, entry: &mut Entry) -> Result<bool, Error> {
        if let Some((small, n)) = key.small_words(self.inner.limits.max_name_len) {
            let words = &small[..n];
            let (hash, shard) = self.route(words);
            return self.read_entry(shard, hash, words, entry);
        }
        let mut words = KeyWords::new();
        key.encode(self.inner.limits.max_name_len, &mut words)?;
        let (hash, shard) = self.route(&words);
        self.read_entry(shard, hash, &words, entry)
    }

    /// Reads the encoded key `words` (hash `hash`) from `shard` into `entry`: the lookup
    /// after routing, shared by single and batched lookups. The common answers (a hit
    /// that fits the entry's buffer, a miss) are inlined; the rest is not.
    #[inline(always)]
    pub(crate) fn read_entry(
        &self,
        shard: &Shard,
        hash: u64,
        words: &[u64],
        entry: &mut Entry,
    ) -> Result<bool, Error> {
        match self.read_entry_quick(shard, hash, words, entry) {
            Some(found) => Ok(found),
            None => self.read_entry_slow(shard, hash, words, entry).into(),
        }
    }

    /// [`Registry::read_entry`]'s inlined part: `None` where the slow path must answer.
    #[inline(always)]
    fn read_entry_quick(
        &self,
        shard: &Shard,
        hash: u64,
        words: &[u64],
        entry: &mut Entry,
    ) -> Option<bool> {
        match shard.try_read(hash, words, entry.inline_buffer()) {
            Attempt::Found {
                owner,
                owner_hint,
                meta_words,
                ..
            } if meta_words <= INLINE_WORDS => {
                let pid = Pid(owner);
                let alive = self.inner.procs.is_alive_at(owner_hint, pid);
                if alive {
                    entry.set_inline(pid, meta_words);
                }
                Some(alive)
            }
            Attempt::NotFound => Some(false),
            _ => None,
        }
    }

    /// [`Registry::read_entry`] of a two-word key, for `lookup_into`'s fast case: the
    /// slow path takes the key words by value and finds the shard again, so the inlined
    /// caller keeps neither the words nor the shard in memory for it.
    #[inline(always)]
    fn read_two(&self, words: [u64; 2], entry: &mut Entry) -> Result<bool, Error> {
        let (hash, shard) = self.route(&words);
        match self.read_entry_quick(shard, hash, &words, entry) {
            Some(found) => Ok(found),
            None => self.read_two_slow(hash, words, entry).into(),
        }
    }

    #[cold]
    #[inline(never)]
    fn read_two_slow(&self, hash: u64, words: [u64; 2], entry: &mut Entry) -> Answer {
        self.read_entry_slow(self.shard_of(hash), hash, &words, entry)
    }

    /// A hit read into `entry`'s buffer counts only if its owner is alive (SPEC I1):
    /// then `entry` takes the owner and the metadata length.
    fn settle(&self, entry: &mut Entry, owner: u64, meta_words: usize) -> bool {
        let pid = Pid(owner);
        let alive = self.inner.procs.is_alive(pid);
        if alive {
            entry.set(pid, meta_words);
        }
        alive
    }

    /// [`Registry::read_entry`] after its one optimistic attempt did not answer: a write
    /// overlapped it (retried, then asked of the writer), the metadata is larger than the
    /// entry's buffer (it grows and reads again), or the shard has closed. It answers an
    /// [`Answer`], in registers, like every call a lookup inlines.
    #[cold]
    #[inline(never)]
    fn read_entry_slow(
        &self,
        shard: &Shard,
        hash: u64,
        words: &[u64],
        entry: &mut Entry,
    ) -> Answer {
        loop {
            match shard.read(hash, words, entry.buffer()) {
                Read::Found { owner, meta_words } => {
                    if meta_words > entry.buffer().len() {
                        entry.reserve(meta_words);
                        continue;
                    }
                    return Answer(self.settle(entry, owner, meta_words), None);
                }
                Read::NotFound => return Answer(false, None),
                Read::Closed => return Answer(false, Some(Error::new(ErrorKind::ShuttingDown))),
            }
        }
    }

    /// Entries stored, over all namespaces (entries of dead processes count until their
    /// shard removes them, within the cleanup window).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new())?;
    /// assert_eq!(registry.len(), 2);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(Shard::len).sum()
    }

    /// Memory the shards hold for entries: slot tables (current and retired), arena
    /// chunks, and the part of the arena in live entry blocks. Process-table, interner
    /// and index memory are not counted yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// let m = registry.memory();
    /// assert!(m.charged > 0 && m.total() >= m.charged.min(m.total()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn memory(&self) -> Memory {
        let mut m = Memory::default();
        for s in self.inner.shards.iter() {
            let sm = s.memory();
            m.tables += sm.tables;
            m.arena += sm.arena;
            m.live_blocks += sm.live_blocks;
            m.charged += sm.charged;
        }
        m.names = self.inner.procs.budget.names();
        m.limit = self.inner.procs.budget.limit();
        m
    }

    /// Whether no entry is stored.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// assert!(registry.is_empty());
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// assert!(!registry.is_empty());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets namespace `ns`'s quota (replacing any earlier one). Registrations and updates
    /// that would pass it fail with [`ErrorKind::QuotaExceeded`]; a quota lower than what
    /// the namespace holds refuses new entries until enough are gone. The quota holds
    /// exactly, also under concurrent writers on many shards.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ForeignNamespace`] for a namespace of another registry.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Quota, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// registry.set_quota(ns, Quota::new().max_entries(1))?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// assert!(registry.register(&p, &Key::new(ns, 2), &Metadata::new()).is_err());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn set_quota(&self, ns: Namespace, quota: Quota) -> Result<(), Error> {
        let ns = self.own(ns)?;
        self.inner.procs.budget.set_quota(ns, quota);
        Ok(())
    }

    /// Namespace `ns`'s quota.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ForeignNamespace`] for a namespace of another registry.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Quota, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// registry.set_quota(ns, Quota::new().max_bytes(1 << 20))?;
    /// assert_eq!(registry.quota(ns)?.max_bytes, Some(1 << 20));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn quota(&self, ns: Namespace) -> Result<Quota, Error> {
        Ok(self.inner.procs.budget.quota(self.own(ns)?))
    }

    /// What namespace `ns` holds, as its quota counts it.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ForeignNamespace`] for a namespace of another registry.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// let usage = registry.usage(ns)?;
    /// assert_eq!(usage.entries, 1);
    /// assert!(usage.bytes > 0);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn usage(&self, ns: Namespace) -> Result<Usage, Error> {
        Ok(self.inner.procs.budget.usage(self.own(ns)?))
    }

    /// Entries stored in namespace `ns` (counted as [`Registry::len`] counts).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ForeignNamespace`] for a namespace of another registry.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// assert_eq!(registry.count(ns)?, 1);
    /// assert_eq!(registry.count(registry.namespace("other")?)?, 0);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn count(&self, ns: Namespace) -> Result<usize, Error> {
        Ok(self.inner.procs.count(self.own(ns)?) as usize)
    }

    /// Checks the registry's state and reports what it holds: every shard's owner lists
    /// against its table (SPEC I5), its byte accounting (S4) and entries of dead processes
    /// still awaiting cleanup (I6 once the cleanup window has passed). O(entries), and each
    /// shard serves nothing else while it checks: a test and debugging aid.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ShuttingDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search"))?;
    /// let audit = registry.audit()?;
    /// assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    /// assert_eq!(audit.entries, 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn audit(&self) -> Result<Audit, Error> {
        self.check_open()?;
        let mut a = Audit {
            live_processes: self.inner.procs.live(),
            monitors: self.inner.monitors.pending(),
            handles: self.inner.handles.len(),
            leases_queued: self.inner.leases.queued(),
            ..Audit::default()
        };
        for (i, s) in self.inner.shards.iter().enumerate() {
            let r = s.audit().map_err(|_| Error::new(ErrorKind::ShuttingDown))?;
            a.entries += r.entries;
            a.dead_entries += r.dead_entries;
            a.postings += r.postings;
            a.block_bytes += r.block_bytes;
            a.problems
                .extend(r.problems.into_iter().map(|p| format!("shard {i}: {p}")));
        }
        // S4: the budget's reservations are exactly the shards' charges (when no write
        // is in flight).
        let budget = &self.inner.procs.budget;
        let (charged, reserved) = (self.memory().charged, budget.used() - budget.names());
        if charged != reserved {
            a.problems.push(format!(
                "S4: shards hold {charged} charged bytes, the budget has {reserved} reserved"
            ));
        }
        Ok(a)
    }

    /// Stops every shard writer and joins it. Calls waiting on a writer get
    /// [`ErrorKind::ShuttingDown`]; later calls too. Idempotent; dropping the last clone
    /// does the same.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.shutdown();
    /// let err = registry.register(&p, &Key::new(ns, 1), &Metadata::new()).unwrap_err();
    /// assert_eq!(err.kind(), &roster::ErrorKind::ShuttingDown);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::KeyHasher;

    /// Spread of `keys` two-word keys: (most keys a shard of 16 gets) / (the mean), and
    /// the share of distinct homes in a table of twice as many slots as keys, against
    /// what uniform random hashes give (1 - e^(-1/2) of the slots, about 0.39).
    fn spread(h: &KeyHasher, keys: impl Iterator<Item = [u64; 2]>) -> (f64, f64) {
        const BITS: u32 = 16;
        let mut shards = [0u32; 16];
        let mut homes = vec![false; 1 << BITS];
        let mut n = 0;
        for k in keys {
            let hash = h.hash(&k);
            shards[(hash & 15) as usize] += 1;
            homes[(hash >> (64 - BITS)) as usize] = true;
            n += 1;
        }
        let max = f64::from(*shards.iter().max().unwrap()) / (n as f64 / 16.0);
        let distinct = homes.iter().filter(|&&b| b).count() as f64;
        (max, distinct / (1 << BITS) as f64 / (1.0 - (-0.5f64).exp()))
    }

    /// A key pattern: the words of key `i`.
    type KeyOf = fn(u64) -> [u64; 2];

    /// The first word of an integer name in namespace 7 (an integer's length field is
    /// `0xfff`).
    const NS: u64 = 7 << 12 | 0xfff;

    /// The first word of an 8-byte string name in namespace 7.
    const NS_STR8: u64 = 7 << 12 | 8;

    /// `agent-` and two bytes of `i`, as an 8-byte string name's second word holds it.
    fn short_name(i: u64) -> u64 {
        u64::from_le_bytes(*b"agent-\0\0") | (i % 256) << 48 | (i / 256) << 56
    }

    #[test]
    fn two_word_keys_spread_over_shards_and_homes_in_every_pattern() {
        let n = 1u64 << 15;
        // Four fixed sets of keys (splitmix64 of the round), odd as `new` makes them: the
        // bounds are about 4.7 standard deviations from the mean, which random keys would
        // cross by chance about once in two thousand runs.
        for round in 0..4u64 {
            let mut x = round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let keys = std::array::from_fn(|_| {
                x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) | 1
            });
            let h = KeyHasher::with_keys(keys);
            let patterns: [(&str, KeyOf); 6] = [
                ("sequential", |i| [NS, i]),
                ("stride 2^16", |i| [NS, i << 16]),
                ("stride 2^40", |i| [NS, i << 40]),
                ("high bits only", |i| [NS, i << 49]),
                ("namespaces", |i| [i << 12 | 0xfff, 5]),
                ("short strings", |i| [NS_STR8, short_name(i)]),
            ];
            for (name, key) in patterns {
                let (max, homes) = spread(&h, (0..n).map(key));
                assert!(
                    max < 1.1,
                    "{name}, keys {keys:x?}: a shard got {max:.3}x its share"
                );
                assert!(
                    homes > 0.95,
                    "{name}, keys {keys:x?}: {homes:.3} of the random hashes' homes"
                );
            }
        }
    }
}
