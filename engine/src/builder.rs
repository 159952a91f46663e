//! [`RegistryBuilder`]: the settings of a registry, validated, and the start of its shards
//! and lease reaper.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use roster_shard::{MaskedSlice, Shard, ShardConfig};

use crate::error::{Error, ErrorKind};
use crate::interner::Interner;
use crate::lease::{Clock, Leases, SystemClock};
use crate::metadata::Limits;
use crate::monitor::Monitors;
use crate::process::ProcessTable;
use crate::registry::{Handles, Inner, KeyHasher, Names, Registry, NO_FAST_LOOKUP};
use crate::stats::OpRecorder;
use crate::watch::Hub;

/// Most entries [`RegistryBuilder::capacity`] may ask room for up front (2^32): beyond
/// it the first tables alone would not fit a machine's memory. Below it, first tables
/// the allocator refuses are an [`ErrorKind::InvalidConfig`] error too.
pub const MAX_CAPACITY: usize = 1 << 32;

/// Most commands [`RegistryBuilder::queue_capacity`] may queue per shard (2^24).
pub const MAX_QUEUE: usize = 1 << 24;

/// A write deadline must leave the writer some time; one too long for the clock (up to
/// `Duration::MAX`) means "no deadline": the write waits for its writer as long as it
/// takes.
pub(crate) fn check_deadline(deadline: Duration) -> Result<(), String> {
    if deadline.is_zero() {
        Err("write_deadline must be more than zero".into())
    } else {
        Ok(())
    }
}

/// Tags each registry, so namespaces of one are refused by another.
static REGISTRY_TAGS: AtomicU32 = AtomicU32::new(1);

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
#[derive(Clone)]
pub struct RegistryBuilder {
    shards: Option<usize>,
    capacity: usize,
    limits: Limits,
    pin: bool,
    huge_pages: bool,
    line_cache: bool,
    max_load: u8,
    queue: usize,
    read_attempts: u32,
    idle_polls: u32,
    clock: Option<Arc<dyn Clock>>,
    cleanup_window: Duration,
    write_deadline: Duration,
    memory_limit: Option<u64>,
    op_stats: bool,
}

impl std::fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("shards", &self.shards)
            .field("capacity", &self.capacity)
            .field("limits", &self.limits)
            .field("pin", &self.pin)
            .field("huge_pages", &self.huge_pages)
            .field("line_cache", &self.line_cache)
            .field("max_load", &self.max_load)
            .field("queue", &self.queue)
            .field("read_attempts", &self.read_attempts)
            .field("idle_polls", &self.idle_polls)
            .field("manual_clock", &self.clock.is_some())
            .field("cleanup_window", &self.cleanup_window)
            .field("write_deadline", &self.write_deadline)
            .field("memory_limit", &self.memory_limit)
            .field("op_stats", &self.op_stats)
            .finish()
    }
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        RegistryBuilder {
            shards: None,
            capacity: 1024,
            limits: Limits::default(),
            pin: false,
            huge_pages: false,
            line_cache: false,
            max_load: DEFAULT_MAX_LOAD,
            queue: 4096,
            read_attempts: 64,
            idle_polls: 64,
            clock: None,
            cleanup_window: Duration::from_millis(100),
            write_deadline: DEFAULT_WRITE_DEADLINE,
            memory_limit: None,
            op_stats: false,
        }
    }
}

/// The default of [`RegistryBuilder::max_load`]: slot tables past 2^16 slots grow at
/// 75% of their slots (smaller ones at half).
pub const DEFAULT_MAX_LOAD: u8 = roster_shard::DEFAULT_MAX_LOAD;

/// The deadline of every write unless the builder or [`Registry::with_deadline`] says
/// otherwise (SPEC L1).
pub const DEFAULT_WRITE_DEADLINE: Duration = Duration::from_millis(10);

impl RegistryBuilder {
    /// Number of shards (each one writer thread), rounded up to a power of two. Default:
    /// the available parallelism, rounded up.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(4).build()?;
    /// assert_eq!(registry.shard_count(), 4);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Entries to make room for up front (spread over the shards), so growth does not
    /// happen until then. Default 1024.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// // Room for 100k entries before the first table growth.
    /// let registry = Registry::builder().capacity(100_000).build()?;
    /// assert!(registry.is_empty());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// Size limits for keys and metadata.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Limits, Registry};
    ///
    /// let limits = Limits { max_capabilities: 4, ..Limits::default() };
    /// let registry = Registry::builder().shards(1).limits(limits).build()?;
    /// assert_eq!(registry.limits().max_capabilities, 4);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Pin shard writer `i` to core `i` (modulo the core count). Default off.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(2).pin_writers(true).build()?;
    /// assert_eq!(registry.shard_count(), 2);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn pin_writers(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Put the shards' big tables, their arenas, their line caches
    /// ([`RegistryBuilder::line_cache`]) and the process table on transparent huge pages where the OS offers them (Linux, THP in `madvise` or `always` mode).
    /// Default off.
    ///
    /// At a million entries and more, a lookup's two random memory accesses are also
    /// TLB misses on 4 KiB pages, which huge pages take away; on a 2-core guest that
    /// gained lookups at 1M keys 13% in one set of measurements and nothing in another.
    /// The price is paid by writes: the shard writer (and, for the process table, the
    /// thread that spawns) takes each page fault, which zeroes 2 MiB and may first
    /// compact memory, so the slowest writes get slower (a 2M-registration load's p99.99
    /// rose from under 2 ms to up to 5.6 ms there). Measure before turning it on, and
    /// keep it for read-heavy registries whose write deadlines have room.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).huge_pages(true).build()?;
    /// assert_eq!(registry.shard_count(), 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn huge_pages(mut self, huge: bool) -> Self {
        self.huge_pages = huge;
        self
    }

    /// Keep a line cache in each shard: one-line copies of short entries (keys of this
    /// node with integer names or string names of up to 8 bytes, and metadata of up to
    /// five words, such as three capabilities, a health and two short attributes), which
    /// lookups try first. Default off.
    ///
    /// A lookup in the slot table reads two cache lines one after the other (the slot,
    /// then the entry's block); a hit in the line cache reads one. At a million entries,
    /// where each of those reads misses the cache, that made single lookups 1.7-2.0x and
    /// batched ones 2.0x as fast on a 2-core guest (`results/2026-12-07-kvm-xeon-2c-
    /// 0d228b0-v4`). The price is memory: about 70 bytes a line, lines that are
    /// between 7/16 and 7/8 taken, so at a million entries about 146 bytes an entry
    /// beside everything the registry keeps anyway (P4's million entries took 297 bytes
    /// an entry with it against 151 without: `loadgen run memory --line-cache`).
    ///
    /// The cache is made of fixed segments of 512 lines behind a directory (extendible
    /// hashing): a full segment splits in two, copying at most 448 lines, so it grows
    /// with the entries without ever holding a write for a table's copy, and it starts
    /// with room for [`RegistryBuilder::capacity`]'s entries (up to about 28 thousand a
    /// shard on Linux, see below). On Linux, segments past the first 64 of a shard come
    /// from 2 MiB slabs that a helper thread maps on transparent huge pages where the
    /// OS has them (THP in `madvise` or `always` mode) and faults in whole before the
    /// writer needs them, so a hit pays far fewer TLB misses, and no write takes a fault
    /// of its lines; one slab is being made ahead of the writer at any time. Entries
    /// registered while a full segment waits for a slab go uncached (they are read from
    /// the slot table) until their next write: 13 of a million in a test load. Where no
    /// helper thread can be started, or elsewhere, the writer maps its slabs; with huge
    /// pages ([`RegistryBuilder::huge_pages`]) those go on huge pages too, and the
    /// writer takes their 2 MiB faults.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().capacity(10_000).line_cache(true).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 7), &Metadata::new().capability("plan"))?;
    /// let entry = registry.lookup(&Key::new(ns, 7))?.expect("registered");
    /// assert_eq!(entry.pid(), p.pid());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn line_cache(mut self, on: bool) -> Self {
        self.line_cache = on;
        self
    }

    /// The load, in percent of a shard's slots, at which its slot table grows (to twice
    /// the size, without stalling a write): 25 to 90, default 75. A table runs between
    /// half this load and this load (a quarter, just after it outgrows the small size
    /// below). Tables of up to 2^16 slots (1 MiB) grow at 50% at most, whatever this
    /// says: they stay in cache, where a lookup's cost is its probe, and the slots that
    /// costs are few. On a 2-core guest, 10k keys sat at a load of 0.61 before this rule
    /// and 0.31 with it, and `peers --keys 10000` looked them up 17-25% faster at 1
    /// thread, batches 29-44% faster.
    ///
    /// For bigger tables a lower setting costs memory: a slot is 16 bytes, so at 50 a
    /// table takes 32 to 64 bytes an entry instead of 21 to 43. At 1M keys on that guest
    /// 50 did not make lookups faster (there the misses cost more than the probe) and
    /// took 184 instead of 151 bytes an entry in all (`loadgen run memory`). Raise it
    /// where memory counts more than reads.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).max_load(50).build()?;
    /// assert!(registry.is_empty());
    /// assert!(Registry::builder().max_load(95).build().is_err());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn max_load(mut self, percent: u8) -> Self {
        self.max_load = percent;
        self
    }

    /// Commands each shard queues before writers wait for room. Default 4096.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).queue_capacity(1024).build()?;
    /// assert!(Registry::builder().queue_capacity(0).build().is_err());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// Optimistic read attempts under a busy writer before a lookup asks the writer.
    /// Default 64. (Tests set it to 1 to drive the fallback.)
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).read_attempts(16).build()?;
    /// assert_eq!(registry.shard_count(), 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn read_attempts(mut self, n: u32) -> Self {
        self.read_attempts = n;
        self
    }

    /// How many times an idle shard writer yields and re-checks its queues before it
    /// parks. Polling spares synchronous writers a thread wake-up (tens of microseconds)
    /// at the price of some CPU while writes trickle in; 0 parks at once. Default 64.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// // Writers that park sooner when idle (less spinning on a busy machine).
    /// let registry = Registry::builder().shards(1).writer_idle_polls(0).build()?;
    /// assert_eq!(registry.shard_count(), 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn writer_idle_polls(mut self, n: u32) -> Self {
        self.idle_polls = n;
        self
    }

    /// The time within which a dead process's entries must be reclaimed (SPEC I6, L3;
    /// default 100 ms). Death notices are served ahead of all other writes, so this is
    /// the bound the registry is measured against: [`Registry::cleanup_lag`] counts the
    /// deaths that took longer ([`CleanupLag::over`](crate::CleanupLag::over)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder()
    ///     .shards(1)
    ///     .cleanup_window(Duration::from_millis(50))
    ///     .build()?;
    /// assert_eq!(registry.cleanup_window(), Duration::from_millis(50));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn cleanup_window(mut self, window: Duration) -> Self {
        self.cleanup_window = window;
        self
    }

    /// How long a write may wait for its shard's writer before it gives up with
    /// [`ErrorKind::Timeout`], which guarantees it was not applied (SPEC L1). Default
    /// [`DEFAULT_WRITE_DEADLINE`], 10 ms; [`Registry::with_deadline`] overrides it per
    /// handle.
    ///
    /// The clock starts when the write is queued for its shard, after the caller has
    /// validated and encoded it (and interned its capability names, which stay interned
    /// after a `Timeout`: a timed-out write leaves no entry, index posting or charge).
    /// The deadline bounds the wait for the writer to *take* the write; a write taken in
    /// time is applied and answered. A deadline too long for the clock (`Duration::MAX`)
    /// means none. Zero is refused by [`RegistryBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder()
    ///     .shards(1)
    ///     .write_deadline(Duration::from_millis(50))
    ///     .build()?;
    /// assert_eq!(registry.write_deadline(), Duration::from_millis(50));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn write_deadline(mut self, deadline: Duration) -> Self {
        self.write_deadline = deadline;
        self
    }

    /// The most bytes the registry's entries may be charged in all ([`Memory::charged`](crate::Memory::charged):
    /// keys, names, metadata, attributes, index postings and slots). A registration or
    /// update that would pass it fails with [`ErrorKind::RegistryFull`] and stores
    /// nothing; the limit holds exactly, also under concurrent writers. Default: none.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(1).memory_limit(64 << 20).build()?;
    /// assert_eq!(registry.memory().limit, Some(64 << 20));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Keep latency histograms of every operation ([`Registry::stats`]'s `ops`; with the
    /// `metrics` feature, also reported through the `metrics` facade). Costs two clock
    /// reads and an uncontended lock per operation; off (the default), nothing but a
    /// branch.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Registry};
    ///
    /// let registry = Registry::builder().shards(1).op_stats(true).build()?;
    /// let ns = registry.namespace("agents")?;
    /// registry.lookup(&Key::new(ns, 1))?;
    /// assert!(registry.stats().ops.is_some());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn op_stats(mut self, on: bool) -> Self {
        self.op_stats = on;
        self
    }

    /// The clock leases read (default: the system's monotonic clock). Tests pass a
    /// [`ManualClock`](crate::ManualClock) to expire leases deterministically.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use roster::{ManualClock, Registry};
    ///
    /// let clock = Arc::new(ManualClock::new());
    /// let registry = Registry::builder().shards(1).clock(clock).build()?;
    /// assert_eq!(registry.shard_count(), 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Starts the shard threads.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] for impossible settings (zero or more than 65536
    /// shards, limits beyond what the encoding holds, a zero queue, a max load outside 25
    /// to 90), [`ErrorKind::ThreadStart`]
    /// if a thread cannot start.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Registry;
    ///
    /// let registry = Registry::builder().shards(2).build()?;
    /// assert_eq!(registry.shard_count(), 2);
    /// assert!(Registry::builder().shards(0).build().is_err());
    /// # Ok::<(), roster::Error>(())
    /// ```
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
        if self.queue == 0 || self.queue > MAX_QUEUE {
            return Err(config(format!(
                "queue_capacity is {}, it must be 1 to {MAX_QUEUE}",
                self.queue
            )));
        }
        if self.capacity > MAX_CAPACITY {
            return Err(config(format!(
                "capacity is {} entries, at most {MAX_CAPACITY} is supported",
                self.capacity
            )));
        }
        let loads = roster_shard::MAX_LOAD_RANGE;
        if !loads.contains(&self.max_load) {
            return Err(config(format!(
                "max_load is {}%, it must be {}% to {}%",
                self.max_load,
                loads.start(),
                loads.end()
            )));
        }
        check_deadline(self.write_deadline).map_err(config)?;
        self.limits.check().map_err(config)?;
        let tag = REGISTRY_TAGS.fetch_add(1, Ordering::Relaxed);
        let procs = Arc::new(ProcessTable::new(
            shards,
            self.memory_limit,
            Hub::new(shards, tag),
            self.huge_pages,
        ));
        let mut list = Vec::with_capacity(shards);
        for index in 0..shards {
            let shard = Shard::spawn(
                ShardConfig {
                    index,
                    capacity: self.capacity.div_ceil(shards),
                    queue: self.queue,
                    batch: 64,
                    read_attempts: self.read_attempts.max(1),
                    idle_polls: self.idle_polls,
                    core: self.pin.then_some(index),
                    huge_pages: self.huge_pages,
                    max_load: self.max_load,
                    // Keys of this node: a key's first word has its node as high half.
                    line_cache: self.line_cache.then_some(crate::key::Node::LOCAL.0),
                },
                procs.clone(),
            )
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::OutOfMemory => config(format!(
                    "capacity of {} entries cannot be allocated: {e}",
                    self.capacity
                )),
                // Checked above already; kept a configuration error if it ever is not.
                std::io::ErrorKind::InvalidInput => config(e.to_string()),
                _ => Error::new(ErrorKind::ThreadStart {
                    reason: e.to_string(),
                }),
            })?;
            list.push(shard);
        }
        let clock = self
            .clock
            .unwrap_or_else(|| Arc::new(SystemClock::default()));
        let inner = Arc::new(Inner {
            tag,
            shards: MaskedSlice::new(list)
                .unwrap_or_else(|_| unreachable!("shard count rounded to a power of two")),
            procs,
            hasher: KeyHasher::new(),
            limits: self.limits,
            names: RwLock::new(Names::default()),
            capabilities: Interner::default(),
            closed: AtomicBool::new(false),
            fast_tag: AtomicU64::new(if self.op_stats {
                NO_FAST_LOOKUP
            } else {
                u64::from(tag)
            }),
            monitors: Monitors::new(),
            leases: Arc::new(Leases::new(clock)),
            handles: Handles::new(),
            reaper: Mutex::new(None),
            cleanup_window: self.cleanup_window,
            write_deadline: self.write_deadline,
            ops: self.op_stats.then(OpRecorder::new),
        });
        let reaper = spawn_reaper(Arc::downgrade(&inner), inner.leases.clone()).map_err(|e| {
            Error::new(ErrorKind::ThreadStart {
                reason: e.to_string(),
            })
        })?;
        *inner.reaper.lock().unwrap_or_else(|e| e.into_inner()) = Some(reaper);
        Ok(Registry {
            inner,
            deadline: None,
        })
    }
}

/// The lease reaper: expires due leases, then sleeps until the next may be due. It holds
/// the registry only while it works, so dropping the last `Registry` stops it.
fn spawn_reaper(
    registry: Weak<Inner>,
    leases: Arc<Leases>,
) -> std::io::Result<(JoinHandle<()>, ThreadId)> {
    let handle = std::thread::Builder::new()
        .name("roster-leases".into())
        .spawn(move || loop {
            match registry.upgrade() {
                Some(inner) if !inner.closed.load(Ordering::Relaxed) => inner.expire_leases(),
                _ => return,
            }
            if !leases.wait() {
                return;
            }
        })?;
    let id = handle.thread().id();
    Ok((handle, id))
}
