//! [`Registry`] and [`RegistryBuilder`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use roster_shard::{Read, Shard, ShardConfig, WriteError};

use crate::entry::Entry;
use crate::error::{Error, ErrorKind};
use crate::key::{Key, KeyWords, Namespace, MAX_NAMESPACES};
use crate::metadata::{Capability, Limits, Metadata};
use crate::process::{Pid, Process, ProcessTable};

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 256;

/// Configures and starts a [`Registry`].
///
/// # Examples
///
/// ```
/// use roster::{Limits, Registry};
///
/// let registry = Registry::builder()
///     .shards(4)
///     .capacity(10_000)
///     .limits(Limits { max_capabilities: 8, ..Limits::default() })
///     .build()?;
/// assert_eq!(registry.shard_count(), 4);
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RegistryBuilder {
    shards: Option<usize>,
    capacity: usize,
    limits: Limits,
    pin: bool,
    queue: usize,
    read_attempts: u32,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        RegistryBuilder {
            shards: None,
            capacity: 1024,
            limits: Limits::default(),
            pin: false,
            queue: 4096,
            read_attempts: 64,
        }
    }
}

impl RegistryBuilder {
    /// Number of shards (each one writer thread), rounded up to a power of two. Default:
    /// the available parallelism, rounded up.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Entries to make room for up front (spread over the shards), so growth does not
    /// happen until then. Default 1024.
    pub fn capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// Size limits for keys and metadata.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Pin shard writer `i` to core `i` (modulo the core count). Default off.
    pub fn pin_writers(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Commands each shard queues before writers wait for room. Default 4096.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// Optimistic read attempts under a busy writer before a lookup asks the writer.
    /// Default 64. (Tests set it to 1 to drive the fallback.)
    pub fn read_attempts(mut self, n: u32) -> Self {
        self.read_attempts = n;
        self
    }

    /// Starts the shard threads.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] for impossible settings (zero or more than 65536
    /// shards, limits beyond what the encoding holds, a zero queue), [`ErrorKind::Spawn`]
    /// if a thread cannot start.
    pub fn build(self) -> Result<Registry, Error> {
        let config = |reason: String| Error::new(ErrorKind::InvalidConfig { reason });
        let shards = match self.shards {
            Some(0) => return Err(config("shards must be at least 1".into())),
            Some(n) if n > 1 << 16 => {
                return Err(config(format!("shards is {n}, at most 65536 is supported")))
            }
            Some(n) => n.next_power_of_two(),
            None => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .next_power_of_two(),
        };
        if self.queue == 0 {
            return Err(config("queue_capacity must be at least 1".into()));
        }
        self.limits.check().map_err(config)?;
        let procs = Arc::new(ProcessTable::new(shards));
        let mut list = Vec::with_capacity(shards);
        for index in 0..shards {
            let shard = Shard::spawn(
                ShardConfig {
                    index,
                    capacity: self.capacity.div_ceil(shards),
                    queue: self.queue,
                    batch: 64,
                    read_attempts: self.read_attempts.max(1),
                    core: self.pin.then_some(index),
                },
                procs.clone(),
            )
            .map_err(|e| {
                Error::new(ErrorKind::Spawn {
                    reason: e.to_string(),
                })
            })?;
            list.push(shard);
        }
        Ok(Registry {
            inner: Arc::new(Inner {
                shards: list.into_boxed_slice(),
                mask: shards as u64 - 1,
                procs,
                hasher: ahash::RandomState::new(),
                limits: self.limits,
                names: RwLock::new(Names::default()),
                closed: AtomicBool::new(false),
            }),
        })
    }
}

/// Interned namespace and capability names.
#[derive(Default)]
struct Names {
    namespaces: HashMap<Box<str>, u32>,
    capabilities: HashMap<Arc<str>, u32>,
    capability_names: Vec<Arc<str>>,
}

pub(crate) struct Inner {
    shards: Box<[Shard]>,
    mask: u64,
    procs: Arc<ProcessTable>,
    hasher: ahash::RandomState,
    limits: Limits,
    names: RwLock<Names>,
    closed: AtomicBool,
}

impl Inner {
    /// Kills `pid` and sends its death notice to exactly the shards that may hold it.
    pub(crate) fn kill(&self, pid: Pid) {
        if let Some(shards) = self.procs.kill(pid) {
            for s in shards {
                let sent = self
                    .shards
                    .get(s)
                    .is_some_and(|sh| sh.owner_died(pid.as_u64()));
                if !sent {
                    self.procs.release(pid);
                }
            }
        }
    }

    fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for s in self.shards.iter() {
            s.shutdown();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
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
    inner: Arc<Inner>,
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
    pub fn new() -> Result<Registry, Error> {
        RegistryBuilder::default().build()
    }

    /// A builder to configure one.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The limits this registry enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn check_open(&self) -> Result<(), Error> {
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
    pub fn namespace(&self, name: &str) -> Result<Namespace, Error> {
        let invalid = |reason| Err(Error::new(ErrorKind::InvalidNamespace { reason }));
        if name.is_empty() {
            return invalid("empty name");
        }
        if name.len() > MAX_NAMESPACE_LEN {
            return invalid("name longer than 256 bytes");
        }
        if let Some(&id) = self.read_names().namespaces.get(name) {
            return Ok(Namespace(id));
        }
        let mut names = self.inner.names.write().unwrap_or_else(|e| e.into_inner());
        let next = names.namespaces.len() as u32;
        if let Some(&id) = names.namespaces.get(name) {
            return Ok(Namespace(id));
        }
        if next >= MAX_NAMESPACES {
            return invalid("too many namespaces");
        }
        self.inner.procs.ensure_namespace(next);
        names.namespaces.insert(name.into(), next);
        Ok(Namespace(next))
    }

    fn read_names(&self) -> std::sync::RwLockReadGuard<'_, Names> {
        self.inner.names.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The capability called `name`, if any entry ever registered it.
    pub fn capability(&self, name: &str) -> Option<Capability> {
        self.read_names()
            .capabilities
            .get(name)
            .map(|&id| Capability(id))
    }

    /// The name of capability `c`.
    pub fn capability_name(&self, c: Capability) -> Option<Arc<str>> {
        self.read_names()
            .capability_names
            .get(c.0 as usize)
            .cloned()
    }

    fn intern_capability(&self, name: &str) -> Result<u32, Error> {
        if let Some(&id) = self.read_names().capabilities.get(name) {
            return Ok(id);
        }
        let mut names = self.inner.names.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = names.capabilities.get(name) {
            return Ok(id);
        }
        let id = names.capability_names.len() as u32;
        let name: Arc<str> = name.into();
        names.capabilities.insert(name.clone(), id);
        names.capability_names.push(name);
        Ok(id)
    }

    /// Starts a new process and returns its owner guard.
    pub fn spawn(&self) -> Process {
        let pid = self.inner.procs.spawn();
        Process::new(pid, Arc::downgrade(&self.inner))
    }

    /// Whether `pid` is alive: one atomic load.
    pub fn is_alive(&self, pid: Pid) -> bool {
        self.inner.procs.is_alive(pid)
    }

    /// Live processes.
    pub fn process_count(&self) -> u64 {
        self.inner.procs.live()
    }

    fn owned_pid(&self, process: &Process) -> Result<Pid, Error> {
        if !std::ptr::eq(process.registry().as_ptr(), Arc::as_ptr(&self.inner)) {
            return Err(Error::new(ErrorKind::ForeignProcess));
        }
        Ok(process.pid())
    }

    #[inline]
    fn route(&self, words: &[u64]) -> (u64, &Shard) {
        let hash = self.inner.hasher.hash_one(words);
        (hash, &self.inner.shards[(hash & self.inner.mask) as usize])
    }

    fn write_error(e: WriteError, pid: Pid) -> Error {
        Error::new(match e {
            WriteError::Exists { owner } => ErrorKind::AlreadyRegistered { owner: Pid(owner) },
            WriteError::OwnerDead => ErrorKind::ProcessDead { pid },
            WriteError::NotFound => ErrorKind::NotFound,
            WriteError::NotOwner { owner } => ErrorKind::NotOwner { owner: Pid(owner) },
            WriteError::TooLarge => ErrorKind::InvalidMetadata {
                field: "metadata",
                limit: roster_shard::MAX_META_WORDS * 8,
                actual: usize::MAX,
            },
            WriteError::Closed => ErrorKind::ShuttingDown,
        })
    }

    /// Registers `key` for `process` with `metadata`, if the key is free. Of concurrent
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
        process: &Process,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        self.check_open()?;
        let pid = self.owned_pid(process)?;
        let mut words = KeyWords::new();
        key.encode(self.inner.limits.max_name_len, &mut words)?;
        let meta = metadata.encode(&self.inner.limits, |c| self.intern_capability(c))?;
        let (hash, shard) = self.route(&words);
        shard
            .insert(hash, words.to_vec(), pid.as_u64(), meta)
            .map_err(|e| Self::write_error(e, pid))
    }

    /// Removes `key`, which `process` must hold.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotFound`], [`ErrorKind::NotOwner`] naming the holder,
    /// [`ErrorKind::InvalidKey`], [`ErrorKind::ForeignProcess`], [`ErrorKind::ShuttingDown`].
    pub fn unregister(&self, process: &Process, key: &Key<'_>) -> Result<(), Error> {
        self.check_open()?;
        let pid = self.owned_pid(process)?;
        let mut words = KeyWords::new();
        key.encode(self.inner.limits.max_name_len, &mut words)?;
        let (hash, shard) = self.route(&words);
        shard
            .remove(hash, words.to_vec(), pid.as_u64())
            .map_err(|e| Self::write_error(e, pid))
    }

    /// Replaces the metadata of `key`, which `process` must hold.
    ///
    /// # Errors
    ///
    /// As [`Registry::unregister`], plus [`ErrorKind::InvalidMetadata`].
    pub fn update_metadata(
        &self,
        process: &Process,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        self.check_open()?;
        let pid = self.owned_pid(process)?;
        let mut words = KeyWords::new();
        key.encode(self.inner.limits.max_name_len, &mut words)?;
        let meta = metadata.encode(&self.inner.limits, |c| self.intern_capability(c))?;
        let (hash, shard) = self.route(&words);
        shard
            .update(hash, words.to_vec(), pid.as_u64(), meta)
            .map_err(|e| Self::write_error(e, pid))
    }

    /// Looks `key` up: lock-free, never waits for a writer (SPEC L2), never returns an
    /// entry of a dead process (I1). Allocates nothing unless the entry's metadata exceeds
    /// [`INLINE_WORDS`](crate::INLINE_WORDS).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidKey`] (no such key can exist), [`ErrorKind::ShuttingDown`].
    #[inline]
    pub fn lookup(&self, key: &Key<'_>) -> Result<Option<Entry>, Error> {
        let mut entry = Entry::new();
        Ok(self.lookup_into(key, &mut entry)?.then_some(entry))
    }

    /// Like [`Registry::lookup`], into a caller-owned entry whose buffers are reused:
    /// returns whether the key was found (`entry` is unspecified if not). Never allocates
    /// once `entry` has held the largest metadata it meets.
    ///
    /// # Errors
    ///
    /// As [`Registry::lookup`].
    #[inline]
    pub fn lookup_into(&self, key: &Key<'_>, entry: &mut Entry) -> Result<bool, Error> {
        self.check_open()?;
        let mut words = KeyWords::new();
        key.encode(self.inner.limits.max_name_len, &mut words)?;
        let (hash, shard) = self.route(&words);
        loop {
            match shard.read(hash, &words, entry.buffer()) {
                Read::Found { owner, meta_words } => {
                    if meta_words > entry.buffer().len() {
                        entry.reserve(meta_words);
                        continue;
                    }
                    let pid = Pid(owner);
                    if !self.inner.procs.is_alive(pid) {
                        return Ok(false);
                    }
                    entry.set(pid, meta_words);
                    return Ok(true);
                }
                Read::NotFound => return Ok(false),
                Read::Closed => return Err(Error::new(ErrorKind::ShuttingDown)),
            }
        }
    }

    /// Entries stored, over all namespaces (entries of dead processes count until their
    /// shard removes them, within the cleanup window).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(Shard::len).sum()
    }

    /// Whether no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries stored in namespace `ns` (counted as [`Registry::len`] counts).
    pub fn count(&self, ns: Namespace) -> usize {
        self.inner.procs.count(ns.0) as usize
    }

    /// Stops every shard writer and joins it. Calls waiting on a writer get
    /// [`ErrorKind::ShuttingDown`]; later calls too. Idempotent; dropping the last clone
    /// does the same.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}
