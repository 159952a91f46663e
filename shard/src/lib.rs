//! One Roster shard: a single writer thread and the seqlock-published tables it owns.
//!
//! This crate is Roster's internal core and knows nothing of namespaces, capabilities or
//! processes: a key is a slice of `u64` words with a caller-computed hash, an entry's owner
//! is an opaque `u64`, and metadata is a slice of words. The engine (`roster`) gives them
//! meaning and implements [`Hooks`] to answer "is this owner alive?".
//!
//! - Reads ([`Shard::read`]) take no lock, perform no read-modify-write and store nothing
//!   to shared memory; after [`ShardConfig::read_attempts`] failed optimistic attempts under
//!   a hot writer they ask the writer, which cannot starve.
//! - Writes ([`Shard::submit`], [`Shard::submit_batch`]: inserts, removals, updates) go through a bounded
//!   channel to the writer thread, which applies and publishes them before replying.
//! - Owner deaths ([`Shard::owner_died`]) use a separate unbounded channel that the writer
//!   always drains first.
//!
//! All `unsafe` code lives in `src/raw/`; its module docs hold the protocol and the proof.
#![warn(missing_docs)]

mod arena;
mod block;
mod index;
mod owners;
mod raw;
mod reply;
mod sync;
mod writer;

#[cfg(all(test, roster_loom))]
mod tests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, Receiver, SendTimeoutError, Sender};

use raw::Published;
use reply::{NoReply, Pending, Reply};
use sync::{fence, AtomicBool, AtomicU64, Ordering};
use writer::{Command, Deaths, Notice, Writer};

pub use block::MAX_TERMS;
pub use raw::{
    prefetch, AtomicWords, Attempt, MaskedSlice, DEFAULT_MAX_LOAD, MAX_KEY_WORDS, MAX_LOAD_RANGE,
    MAX_META_WORDS, OWNER_HINT_BITS, SMALL_TABLE_LOAD, SMALL_TABLE_SLOTS,
};
pub use writer::Op;

/// What the engine tells a shard about owners. Called on the writer thread only.
pub trait Hooks: Send + Sync + 'static {
    /// Whether `owner` is alive. Entries of dead owners count as absent.
    fn is_alive(&self, owner: u64) -> bool;
    /// Called before shard `shard` stores an entry of `owner`. Returning `false` (the owner
    /// is dead) refuses the insert. The engine records the shard so the owner's death
    /// notifies it.
    fn attach(&self, owner: u64, shard: usize) -> bool;
    /// Called after shard `shard` removed every entry of each of `owners` on their
    /// death notice (one call per notice, so a mass death is one call); also, with
    /// nothing removed, for a notice the writer never serves because it ended first.
    /// Exactly once per notice either way.
    fn detached(&self, owners: &[u64], shard: usize) {
        let _ = (owners, shard);
    }
    /// Called before an entry with `key` is stored, with its [`entry_charge`]: `Err`
    /// refuses the insert (a memory limit or quota), and nothing is stored. An `Ok`
    /// reserves the charge until [`Hooks::removed`] returns it.
    fn admit(&self, key: &[u64], charge: u64) -> Result<(), Refusal> {
        let _ = (key, charge);
        Ok(())
    }
    /// Deaths so far whose entries had to be removed, and how many of them are done
    /// (their charges returned), both counting up. A writer whose [`Hooks::admit`] or
    /// [`Hooks::readmit`] was refused while deaths were pending serves its own death
    /// notices and asks again, until as many deaths are done as had begun at the first
    /// refusal, or the write's deadline: a refusal is not caused by the charges of owners
    /// that were already dead when the write was refused.
    fn deaths(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Called before an update changes the charge of the entry with `key` from `old` to
    /// `new`: `Err` refuses the update, and nothing changes.
    fn readmit(&self, key: &[u64], old: u64, new: u64) -> Result<(), Refusal> {
        let _ = (key, old, new);
        Ok(())
    }
    /// Whether anyone listens to [`Hooks::event`]; when not, the writer skips the work
    /// of describing removals.
    fn watching(&self) -> bool {
        false
    }
    /// A change shard `shard` has just published (so a reader already sees it), in the
    /// writer's order. Called only while [`Hooks::watching`]; must not block.
    fn event(&self, shard: usize, event: Event<'_>) {
        let _ = (shard, event);
    }
    /// Called after shard `shard` removed an entry with `key` (by any path), with the
    /// charge it was admitted with.
    fn removed(&self, key: &[u64], charge: u64, shard: usize) {
        let _ = (key, charge, shard);
    }
    /// Appends to `out` the index terms of an entry with `key` and metadata `meta`
    /// (distinct, non-zero opaque words, at most [`MAX_TERMS`]; see [`Shard::postings`]).
    /// The writer asks when it stores an entry and again whenever it unlinks one, so the
    /// answer must depend on `key` and `meta` only: an entry's block keeps its position
    /// in each term's postings, not the terms. The default indexes nothing.
    fn index_terms(&self, key: &[u64], meta: &[u64], out: &mut Vec<u64>) {
        let _ = (key, meta, out);
    }
}

/// The test hooks' index terms: metadata whose first word's top byte is `n` is indexed
/// under its next `n` words (see [`with_terms`]); other metadata under none.
#[cfg(test)]
pub(crate) fn test_terms(meta: &[u64], out: &mut Vec<u64>) {
    let n = meta.first().map_or(0, |m| (m >> 56) as usize);
    out.extend(meta.iter().skip(1).take(n));
}

/// Metadata the test hooks index under `terms`: a first word counting them, the terms,
/// then `rest`.
#[cfg(test)]
pub(crate) fn with_terms(terms: &[u64], rest: &[u64]) -> Vec<u64> {
    let mut m = vec![(terms.len() as u64) << 56];
    m.extend_from_slice(terms);
    m.extend_from_slice(rest);
    m
}

/// A published change, for [`Hooks::event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// What happened.
    pub kind: EventKind,
    /// The entry's key words.
    pub key: &'a [u64],
    /// Its owner.
    pub owner: u64,
    /// Its metadata words: the new ones for inserts and updates, the last ones for
    /// removals.
    pub meta: &'a [u64],
}

/// What a published change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An entry was stored.
    Inserted,
    /// An entry's metadata was replaced.
    Updated,
    /// Its owner removed it.
    Removed,
    /// It was removed because its owner died (cleanup, or a new registration of the key).
    Died,
}

/// Why [`Hooks::admit`] refused a write: a limit the engine defines (`code` is the
/// engine's), and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Which limit, in the engine's numbering.
    pub code: u32,
    /// The limit's value.
    pub limit: u64,
}

/// Bytes an entry is charged against memory limits and quotas, and counted in
/// [`ShardMemory::charged`]: its arena block at its size class (head word, owner word, key,
/// metadata, a 4-byte index position per term and 4 bytes of owner-list index), one 4-byte
/// posting per index term, and one 16-byte slot. Table slack (slots kept free for probing), the unused room of posting chunks and
/// free arena space are not charged; [`Shard::memory`] reports them.
pub fn entry_charge(key_words: usize, meta_words: usize, terms: usize) -> u64 {
    let block = arena::class_words(block::block_words(key_words, meta_words, terms));
    block as u64 * 8 + terms as u64 * POSTING_BYTES + raw::SLOT_BYTES
}

/// Bytes of one posting.
const POSTING_BYTES: u64 = 4;

/// Why a write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The key is held by the live owner `owner`.
    Exists {
        /// The current holder.
        owner: u64,
    },
    /// The writing owner is dead.
    OwnerDead,
    /// No live entry has this key.
    NotFound,
    /// The key is held by another live owner.
    NotOwner {
        /// The current holder.
        owner: u64,
    },
    /// Key or metadata exceed [`MAX_KEY_WORDS`] / [`MAX_META_WORDS`].
    TooLarge,
    /// The engine's [`Hooks::admit`] refused it.
    Refused(Refusal),
    /// The deadline passed before the writer reached the write: it was not applied.
    Timeout,
    /// The shard's writer has stopped (shutdown).
    Closed,
    /// The shard's writer thread died of a fault (a panic); the shard serves no writes.
    Failed,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Exists { owner } => write!(f, "key held by owner {owner:#x}"),
            WriteError::OwnerDead => f.write_str("owner is dead"),
            WriteError::NotFound => f.write_str("no such key"),
            WriteError::NotOwner { owner } => write!(f, "key held by other owner {owner:#x}"),
            WriteError::TooLarge => f.write_str("key or metadata too large"),
            WriteError::Refused(r) => write!(f, "refused by limit {} ({})", r.code, r.limit),
            WriteError::Timeout => f.write_str("deadline passed before the write was applied"),
            WriteError::Closed => f.write_str("shard writer stopped"),
            WriteError::Failed => f.write_str("shard writer thread failed"),
        }
    }
}

impl std::error::Error for WriteError {}

/// A read's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// Present, held by `owner`, with `meta_words` words of metadata. They were copied
    /// into the caller's buffer only if it was long enough; if not, read again with one of
    /// at least `meta_words`.
    Found {
        /// The owner word.
        owner: u64,
        /// Metadata length, in words.
        meta_words: usize,
    },
    /// Absent.
    NotFound,
    /// The reader fell back to the writer and the writer has stopped.
    Closed,
}

/// How to build a shard.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    /// This shard's index (passed back in [`Hooks`] calls and used in the thread name).
    pub index: usize,
    /// Entries to make room for before the first growth.
    pub capacity: usize,
    /// Bound of the command channel.
    pub queue: usize,
    /// Most commands served between two checks of the death channel.
    pub batch: usize,
    /// Optimistic read attempts before a reader asks the writer.
    pub read_attempts: u32,
    /// Yielding polls an idle writer makes before it parks (0 parks at once); callers
    /// waiting for a reply poll as often.
    pub idle_polls: u32,
    /// Pin the writer thread to this core (an index into `core_affinity::get_core_ids`).
    pub core: Option<usize>,
    /// Put big slot tables and the arena on transparent huge pages where the OS offers
    /// them: fewer TLB misses for lookups at scale, while the writer takes each fault
    /// (2 MiB zeroed, maybe compacted first) inside some write. Off by default.
    pub huge_pages: bool,
    /// The load, in percent of a slot table's slots, at which the writer grows the
    /// table (twice the size, without a stall): within [`MAX_LOAD_RANGE`], default
    /// [`DEFAULT_MAX_LOAD`] (75), and at most [`SMALL_TABLE_LOAD`] for tables of up to
    /// [`SMALL_TABLE_SLOTS`]. Tables then run between half this load and this load (a
    /// quarter, just after a table outgrows the small size).
    /// Lower is faster to read (a hit probes fewer slots past its home) and costs more
    /// memory: 16 bytes a slot.
    pub max_load: u8,
    /// `Some(high)`: keep one-line copies of short entries (two-word keys whose first
    /// word's high half is `high`, at most five metadata words) in a line cache that
    /// lookups try first: a hit reads one cache line where the slot table's read takes
    /// two in series. It starts with room for as many entries as the first slot table
    /// has slots (at most 64 segments of 512 lines where a helper thread makes the
    /// later ones) and grows a segment at a time, each split copying at most 448 lines
    /// (`raw/lines.rs`); it costs about 70 bytes a line, lines 7/16 to 7/8 taken, beside
    /// the slot table. `None` (the default): no cache.
    pub line_cache: Option<u32>,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            index: 0,
            capacity: 1024,
            queue: 4096,
            batch: 64,
            read_attempts: 64,
            idle_polls: 64,
            core: None,
            huge_pages: false,
            max_load: DEFAULT_MAX_LOAD,
            line_cache: None,
        }
    }
}

/// What a shard's writer found when it checked its own state ([`Shard::audit`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// Entries in the table.
    pub entries: usize,
    /// Entries whose owner is dead (awaiting cleanup).
    pub dead_entries: usize,
    /// Owners with at least one entry.
    pub owners: usize,
    /// Postings in the index (one per entry and term).
    pub postings: usize,
    /// Arena bytes in live blocks, as accounted.
    pub block_bytes: u64,
    /// Broken invariants, described; empty when all hold.
    pub problems: Vec<String>,
}

/// Memory a shard holds, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardMemory {
    /// Slot tables, current and retired.
    pub tables: u64,
    /// Arena chunks allocated (live blocks, free blocks and unused tail).
    pub arena: u64,
    /// Arena bytes in live blocks.
    pub live_blocks: u64,
    /// Sum of the live entries' [`entry_charge`]s.
    pub charged: u64,
}

/// A running shard. Dropping it stops and joins its writer.
pub struct Shard {
    shared: Arc<Published>,
    /// The engine's hooks, carried by death notices (see [`Shard::owner_died`]).
    hooks: Arc<dyn Hooks>,
    /// This shard's index.
    index: usize,
    cmds: Sender<Command>,
    notices: Sender<Notice>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Whether the writer has ended, and why (shared with the writer thread's exit guard).
    status: Arc<Status>,
    read_attempts: u32,
    /// Yielding polls of a reply before the caller parks (the writer's `idle_polls`).
    reply_polls: u32,
    gauges: Arc<Gauges>,
}

/// What the writer publishes about its state besides the tables: stored after each
/// change, read by anyone (`Relaxed`: statistics, not synchronisation).
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    /// Bytes of arena blocks in use.
    pub(crate) live_bytes: AtomicU64,
    /// Sum of live entries' charges.
    pub(crate) charged: AtomicU64,
}

/// Set once by the writer thread's exit guard.
struct Status {
    /// The writer has ended: commands sent from now on may never be served.
    closed: AtomicBool,
    /// It ended by a panic (a fault), not by a stop request.
    failed: AtomicBool,
}

impl Status {
    /// Why a command went unanswered. A reply dropped while the writer has not yet ended
    /// can only be one its stack dropped while unwinding from a panic (the writer answers
    /// every command it takes, and the exit guard drops the queued ones only after
    /// setting `closed`): that is a fault too.
    fn error(&self) -> WriteError {
        if self.closed.load(Ordering::SeqCst) && !self.failed.load(Ordering::Relaxed) {
            WriteError::Closed
        } else {
            WriteError::Failed
        }
    }
}

/// Runs when the writer thread ends, by return or by unwinding: records why, then drops
/// every command still queued, which answers their callers `Closed` (a bounded crossbeam
/// channel frees its buffer only when both ends are gone, so nobody else would).
struct ExitGuard {
    status: Arc<Status>,
    cmds: Receiver<Command>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.status
            .failed
            .store(std::thread::panicking(), Ordering::Relaxed);
        self.status.closed.store(true, Ordering::SeqCst);
        // Pairs with the fence in `Shard::submit`: a caller that sent a command and then
        // read `closed == false` sent it before this drain looks (store-buffer pattern,
        // both sides SeqCst-fenced), so the drain answers it.
        fence(Ordering::SeqCst);
        while let Ok(c) = self.cmds.try_recv() {
            drop(c);
        }
    }
}

/// A submitted write's answer, to wait for (blocking, [`Ticket::wait`]) or to `.await`
/// (any runtime). Dropping it before the writer reached the write cancels the write.
#[must_use = "a ticket does nothing unless waited for or awaited"]
pub struct Ticket<T> {
    pending: Pending<Result<T, WriteError>>,
    status: Arc<Status>,
    polls: u32,
}

impl<T> fmt::Debug for Ticket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

impl<T> Ticket<T> {
    fn settle(status: &Status, r: Result<Result<T, WriteError>, NoReply>) -> Result<T, WriteError> {
        match r {
            Ok(r) => r,
            Err(NoReply::Timeout) => Err(WriteError::Timeout),
            Err(NoReply::Closed) => Err(status.error()),
        }
    }

    /// Blocks until the writer answers, or until the deadline if the writer has not
    /// reached the write by then ([`WriteError::Timeout`]: it was not applied).
    ///
    /// # Errors
    ///
    /// The write's own error, [`WriteError::Timeout`], [`WriteError::Closed`] or
    /// [`WriteError::Failed`].
    pub fn wait(self) -> Result<T, WriteError> {
        let Ticket {
            pending,
            status,
            polls,
        } = self;
        Self::settle(&status, pending.wait(polls))
    }
}

impl<T> Future for Ticket<T> {
    type Output = Result<T, WriteError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.pending.poll(cx).map(|r| Self::settle(&this.status, r))
    }
}

impl fmt::Debug for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("len", &self.len())
            .field("queue", &self.queue_len())
            .finish_non_exhaustive()
    }
}

/// Number of 64-bit words in each shard's first arena chunk, as a power of two (32 KiB).
const ARENA_BASE_BITS: u32 = 12;

impl Shard {
    /// Starts a shard and its writer thread.
    ///
    /// # Errors
    ///
    /// Fails if the OS refuses to start a thread ([`std::io::ErrorKind::OutOfMemory`] if
    /// the first table cannot be allocated), or with [`std::io::ErrorKind::InvalidInput`]
    /// for a [`ShardConfig::max_load`] outside [`MAX_LOAD_RANGE`].
    pub fn spawn(config: ShardConfig, hooks: Arc<dyn Hooks>) -> std::io::Result<Shard> {
        if !MAX_LOAD_RANGE.contains(&config.max_load) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "max_load {} is outside {}..={} percent",
                    config.max_load,
                    MAX_LOAD_RANGE.start(),
                    MAX_LOAD_RANGE.end()
                ),
            ));
        }
        // Room for `capacity` entries below the load that grows the table.
        let slots = raw::slots_for(config.capacity, config.max_load).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("no table holds {} entries", config.capacity),
            )
        })?;
        let (published, token) = Published::try_new(
            config.index,
            slots,
            ARENA_BASE_BITS,
            config.huge_pages,
            config.line_cache,
        )
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("cannot allocate a table of {slots} slots"),
            )
        })?;
        let shared = Arc::new(published);
        let (cmd_tx, cmd_rx) = bounded(config.queue.max(1));
        let (notice_tx, notice_rx) = unbounded();
        let gauges = Arc::new(Gauges::default());
        let mut writer = Writer::new(
            shared.clone(),
            token,
            hooks.clone(),
            config.batch,
            config.idle_polls,
        );
        writer.gauges = gauges.clone();
        writer.max_load = config.max_load;
        let core = config.core;
        let status = Arc::new(Status {
            closed: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        let guard = ExitGuard {
            status: status.clone(),
            cmds: cmd_rx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("roster-shard-{}", config.index))
            .spawn(move || {
                // Dropped when this closure ends, by return or by unwinding.
                let _guard = guard;
                if let Some(core) = core {
                    pin_to(core);
                }
                writer.run(cmd_rx, notice_rx);
            })?;
        Ok(Shard {
            shared,
            hooks,
            index: config.index,
            cmds: cmd_tx,
            notices: notice_tx,
            thread: Mutex::new(Some(thread)),
            status,
            read_attempts: config.read_attempts.max(1),
            reply_polls: config.idle_polls,
            gauges,
        })
    }

    /// Reads `key` (whose hash is `hash`), copying its metadata into `out` if it fits
    /// (the words of `out` past the metadata, up to 7, may be overwritten too).
    ///
    /// Lock-free: it retries optimistically up to `read_attempts` times while the writer
    /// changes what it reads, then asks the writer (the only path that allocates).
    #[inline]
    pub fn read(&self, hash: u64, key: &[u64], out: &mut [u64]) -> Read {
        self.read_at(hash, key, out).0
    }

    /// One optimistic attempt of [`Shard::read`], for a caller that inlines the common
    /// answers and sends [`Attempt::Retry`] (a write overlapped) to [`Shard::read`].
    /// Never blocks, never writes to shared memory.
    /// While the shard's table grows it answers `Retry`, and [`Shard::read`] reads.
    #[inline(always)]
    pub fn try_read(&self, hash: u64, key: &[u64], out: &mut [u64]) -> Attempt {
        self.shared.try_read_quick(hash, key, out)
    }

    /// First step of a batched read of a key of `key_words` words: prefetches the slot
    /// `hash` starts probing at (or, for a key the line cache may hold, its tag group).
    /// Issue it for every key of a batch, then [`Shard::prefetch_entry`] for each, then
    /// read each: the batch's cache misses overlap instead of adding up. Hints only;
    /// never blocks.
    #[inline]
    pub fn prefetch_slot(&self, hash: u64, key_words: usize) {
        self.shared.prefetch_home(hash, key_words);
    }

    /// Second step of a batched read (after [`Shard::prefetch_slot`]): prefetches the
    /// lines of the entry's owner word, key and first metadata words (all of a short
    /// entry's), in a reserved arena, if its slot is the home slot or the one after it.
    /// Returns the slot's owner hint (the owner's low [`OWNER_HINT_BITS`] bits) seen
    /// there, unvalidated: a hint for prefetching the owner's state, never an answer
    /// (only [`Shard::read`] answers). Never blocks.
    #[inline]
    pub fn prefetch_entry(&self, hash: u64) -> Option<u64> {
        self.shared.prefetch_block(hash)
    }

    /// [`Shard::read`], also giving the entry's block offset (0 if not found).
    #[inline]
    fn read_at(&self, hash: u64, key: &[u64], out: &mut [u64]) -> (Read, u64) {
        for _ in 0..self.read_attempts {
            match self.shared.try_read(hash, key, out) {
                Attempt::Found {
                    owner,
                    meta_words,
                    block,
                    ..
                } => return (Read::Found { owner, meta_words }, block),
                Attempt::NotFound => return (Read::NotFound, 0),
                Attempt::Retry => sync::spin_hint(),
            }
        }
        self.read_slow(hash, key, out)
    }

    #[cold]
    fn read_slow(&self, hash: u64, key: &[u64], out: &mut [u64]) -> (Read, u64) {
        let asked = self.ask(|reply| Command::Read {
            hash,
            key: key.to_vec(),
            reply,
        });
        match asked {
            Ok(Some((owner, meta, block))) => {
                if let Some(out) = out.get_mut(..meta.len()) {
                    out.copy_from_slice(&meta);
                }
                let found = Read::Found {
                    owner,
                    meta_words: meta.len(),
                };
                (found, block)
            }
            Ok(None) => (Read::NotFound, 0),
            Err(_) => (Read::Closed, 0),
        }
    }

    /// Sends a command and returns its caller's end, unless the writer has ended. A
    /// command that is still queued at `deadline` is not sent ([`WriteError::Timeout`]).
    fn send<T>(
        &self,
        deadline: Option<Instant>,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<Pending<T>, WriteError> {
        let (reply, pending) = reply::pair(deadline);
        let cmd = make(reply);
        match deadline {
            Some(d) => self.cmds.send_deadline(cmd, d).map_err(|e| match e {
                SendTimeoutError::Timeout(_) => WriteError::Timeout,
                SendTimeoutError::Disconnected(_) => self.status.error(),
            })?,
            None => self.cmds.send(cmd).map_err(|_| self.status.error())?,
        }
        // Pairs with the fence in `ExitGuard::drop`: if the writer has ended and its
        // drain may have missed this command, take it back.
        fence(Ordering::SeqCst);
        if self.status.closed.load(Ordering::Relaxed) && pending.abandon() {
            return Err(self.status.error());
        }
        Ok(pending)
    }

    /// Asks the writer something (no deadline) and waits for the answer.
    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, WriteError> {
        let pending = self.send(None, make)?;
        pending
            .wait(self.reply_polls)
            .map_err(|_| self.status.error())
    }

    /// Queues `op` for the writer and returns its [`Ticket`] at once: wait for it, or
    /// `.await` it. The writer applies the write only if it reaches it before `deadline`
    /// (none: whenever it does); a write it did not apply answers [`WriteError::Timeout`].
    ///
    /// # Errors
    ///
    /// [`WriteError::Timeout`] if the queue stayed full until `deadline`;
    /// [`WriteError::Closed`] or [`WriteError::Failed`] if the writer has ended.
    pub fn submit(&self, op: Op, deadline: Option<Instant>) -> Result<Ticket<()>, WriteError> {
        let pending = self.send(deadline, |reply| Command::Write { op, reply })?;
        Ok(self.ticket(pending))
    }

    /// Queues several writes as one command: one round trip for all of them, claimed
    /// (and so applied, or timed out) together, answered item by item in order.
    ///
    /// # Errors
    ///
    /// As [`Shard::submit`].
    pub fn submit_batch(
        &self,
        ops: Vec<Op>,
        deadline: Option<Instant>,
    ) -> Result<Ticket<Vec<Result<(), WriteError>>>, WriteError> {
        let pending = self.send(deadline, |reply| Command::Batch { ops, reply })?;
        Ok(self.ticket(pending))
    }

    fn ticket<T>(&self, pending: Pending<Result<T, WriteError>>) -> Ticket<T> {
        Ticket {
            pending,
            status: self.status.clone(),
            polls: self.reply_polls,
        }
    }

    /// Stores `key -> (owner, meta)` if the key is absent or held by a dead owner, and
    /// indexes it under each of its [`Hooks::index_terms`] (see [`Shard::postings`]).
    ///
    /// # Errors
    ///
    /// [`WriteError::Exists`] with the live holder, [`WriteError::OwnerDead`],
    /// [`WriteError::TooLarge`], or [`WriteError::Closed`].
    #[cfg(test)]
    pub(crate) fn insert(
        &self,
        hash: u64,
        key: Vec<u64>,
        owner: u64,
        meta: Vec<u64>,
    ) -> Result<(), WriteError> {
        let op = Op::Insert {
            hash,
            key,
            owner,
            meta,
        };
        self.submit(op, None)?.wait()
    }

    /// Removes `key` if `owner` holds it.
    ///
    /// # Errors
    ///
    /// [`WriteError::NotFound`], [`WriteError::NotOwner`] with the live holder, or
    /// [`WriteError::Closed`].
    #[cfg(test)]
    pub(crate) fn remove(&self, hash: u64, key: Vec<u64>, owner: u64) -> Result<(), WriteError> {
        self.submit(Op::Remove { hash, key, owner }, None)?.wait()
    }

    /// Replaces the metadata (and so the index terms) of `key` if `owner` holds it.
    ///
    /// # Errors
    ///
    /// As [`Shard::remove`], plus [`WriteError::TooLarge`].
    #[cfg(test)]
    pub(crate) fn update(
        &self,
        hash: u64,
        key: Vec<u64>,
        owner: u64,
        meta: Vec<u64>,
    ) -> Result<(), WriteError> {
        let op = Op::Update {
            hash,
            key,
            owner,
            meta,
        };
        self.submit(op, None)?.wait()
    }

    /// The postings (entry references) of index term `term`, into `out`: lock-free,
    /// validated as a whole, with the same bounded retries and writer fallback as
    /// [`Shard::read`]. Resolve each with [`Shard::read_posting`].
    ///
    /// # Errors
    ///
    /// [`WriteError::Closed`] if the fallback found the writer stopped.
    pub fn postings(&self, term: u64, out: &mut Vec<u64>) -> Result<(), WriteError> {
        for _ in 0..self.read_attempts {
            match self.shared.try_read_postings(term, Some(out)) {
                Attempt::Found { .. } => return Ok(()),
                Attempt::NotFound => {
                    out.clear();
                    return Ok(());
                }
                Attempt::Retry => sync::spin_hint(),
            }
        }
        *out = self.ask(|reply| Command::Postings { term, reply })?;
        Ok(())
    }

    /// How many postings `term` has (0 if none); `usize::MAX` if a hot writer kept every
    /// optimistic attempt from concluding (callers use it to pick the shortest list).
    pub fn postings_len(&self, term: u64) -> usize {
        for _ in 0..self.read_attempts {
            match self.shared.try_read_postings(term, None) {
                Attempt::Found { meta_words, .. } => return meta_words,
                Attempt::NotFound => return 0,
                Attempt::Retry => sync::spin_hint(),
            }
        }
        usize::MAX
    }

    /// Reads the entry a posting refers to: its key into `key`, then a validated read of
    /// that key (as [`Shard::read`]). A posting that went stale meanwhile reads as
    /// `NotFound`, or as whichever live entry now has the key it points at.
    pub fn read_posting(&self, posting: u64, key: &mut Vec<u64>, out: &mut [u64]) -> Read {
        let arena = self.shared.arena();
        let Some(head) = arena.get(posting) else {
            return Read::NotFound;
        };
        // A hint only (the writer may be reusing the block): the read below validates.
        let head = block::BlockHead::unpack(head.load(Ordering::Relaxed));
        let hash = raw::hash_of_tag(head.tag);
        let start = posting + raw::HEADER_WORDS as u64;
        let Some(words) = arena.range(start, head.key_words as u64) else {
            return Read::NotFound;
        };
        key.clear();
        key.extend(words.iter().map(|w| w.load(Ordering::Relaxed)));
        match self.read_at(hash, key, out) {
            // Found under its key but in another block: the posting went stale (the block
            // was reused); that entry is reached through its own posting.
            (Read::Found { .. }, block) if block != posting => Read::NotFound,
            (read, _) => read,
        }
    }

    /// Asks the writer to check its state: the owner lists against the table (SPEC I5),
    /// the probe invariant, the entry count and the byte accounting. O(entries); the
    /// writer serves nothing else meanwhile, so this is a test and debugging aid.
    ///
    /// # Errors
    ///
    /// [`WriteError::Closed`] if the writer has stopped.
    pub fn audit(&self) -> Result<Audit, WriteError> {
        self.ask(|reply| Command::Audit { reply })
    }

    /// Tells the writer that `owner` died; it removes the owner's entries ahead of any
    /// queued command, then calls [`Hooks::detached`]. Returns `false` if the writer has
    /// stopped (nothing will be removed). Either way [`Hooks::detached`] is called for
    /// `owner` exactly once: after the removal, or at once if the writer has ended or
    /// ends before it serves the notice.
    pub fn owner_died(&self, owner: u64) -> bool {
        self.owners_died(vec![owner])
    }

    /// [`Shard::owner_died`] for many owners in one message (a mass death).
    pub fn owners_died(&self, owners: Vec<u64>) -> bool {
        let deaths = Deaths {
            owners,
            hooks: self.hooks.clone(),
            shard: self.index,
        };
        // A notice that is never served (refused here, or dropped with the channel when
        // the writer ends) calls `Hooks::detached` as it drops.
        self.notices.send(Notice::Died(deaths)).is_ok()
    }

    /// Live entries (including those of dead owners not yet removed).
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed) as usize
    }

    /// Whether the shard holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Commands waiting for the writer.
    pub fn queue_len(&self) -> usize {
        self.cmds.len()
    }

    /// Memory the shard holds.
    pub fn memory(&self) -> ShardMemory {
        ShardMemory {
            tables: self.shared.table_bytes(),
            arena: self.shared.arena().allocated_bytes(),
            live_blocks: self.gauges.live_bytes.load(Ordering::Relaxed),
            charged: self.gauges.charged.load(Ordering::Relaxed),
        }
    }

    /// Whether the writer thread died of a fault (SPEC S6): its callers get
    /// [`WriteError::Failed`]; optimistic reads still answer from what it published.
    pub fn failed(&self) -> bool {
        self.status.closed.load(Ordering::Acquire) && self.status.failed.load(Ordering::Relaxed)
    }

    /// Fault injection for tests of SPEC S6: the writer thread panics when it reaches
    /// this command, as a bug in it would.
    #[doc(hidden)]
    pub fn inject_fault(&self) {
        let _ = self.cmds.send(Command::Panic);
    }

    /// Stops the writer after the command it is applying and joins it. Commands still
    /// queued are dropped: their callers get [`WriteError::Closed`]. Idempotent.
    pub fn shutdown(&self) {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            let _ = self.notices.send(Notice::Stop);
            // A writer that panicked has already dropped its channels; nothing to report.
            let _ = handle.join();
        }
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Test hooks: every owner is alive.
#[cfg(test)]
pub(crate) struct AllAlive;

#[cfg(test)]
impl Hooks for AllAlive {
    fn is_alive(&self, _: u64) -> bool {
        true
    }
    fn attach(&self, _: u64, _: usize) -> bool {
        true
    }
    fn index_terms(&self, _: &[u64], meta: &[u64], out: &mut Vec<u64>) {
        test_terms(meta, out);
    }
}

fn pin_to(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids() {
        if !ids.is_empty() {
            core_affinity::set_for_current(ids[core % ids.len()]);
        }
    }
}

#[cfg(all(test, not(roster_loom)))]
mod shard_tests {
    use std::sync::atomic::{AtomicBool, Ordering as O};

    use super::*;

    /// Metadata whose words check each other: `[v, v * 3 + 1, v ^ 0x55, ...]`.
    fn meta(v: u64) -> Vec<u64> {
        let mut m = vec![v, v.wrapping_mul(3) + 1];
        m.extend(std::iter::repeat_n(v ^ 0x55, (v % 9) as usize));
        m
    }

    /// Every owner alive; an entry is indexed under one term of three, by its first word.
    struct Indexed;

    impl Hooks for Indexed {
        fn is_alive(&self, _: u64) -> bool {
            true
        }
        fn attach(&self, _: u64, _: usize) -> bool {
            true
        }
        fn index_terms(&self, _: &[u64], meta: &[u64], out: &mut Vec<u64>) {
            out.extend(meta.first().map(|v| v % 3 + 1));
        }
    }

    fn check(m: &[u64]) {
        let v = m[0];
        assert_eq!(m[1], v.wrapping_mul(3) + 1, "torn: {m:?}");
        assert_eq!(m.len(), 2 + (v % 9) as usize, "torn length: {m:?}");
        assert!(m[2..].iter().all(|&x| x == v ^ 0x55), "torn tail: {m:?}");
    }

    #[test]
    fn max_load_outside_its_range_is_refused_and_inside_it_sets_growth() {
        for bad in [0, *MAX_LOAD_RANGE.start() - 1, *MAX_LOAD_RANGE.end() + 1] {
            let config = ShardConfig {
                max_load: bad,
                ..ShardConfig::default()
            };
            let Err(err) = Shard::spawn(config, Arc::new(Indexed)) else {
                panic!("max_load {bad} accepted");
            };
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{bad}: {err}");
        }
        // Presized for `capacity` entries below the load. Small tables (up to 2^16
        // slots) are at most half full: 100 entries take 256 slots at 50 and at 90 alike.
        // Big ones follow `max_load`: 100k entries take 2^17 slots at 90 (117964 fit)
        // and 2^18 at 75 (98304 would).
        // At 25, 512 slots hold 128: the same growth point, reached through `max_load`.
        let mut cases = vec![(100, 50, 256), (100, 90, 256), (100, 25, 512)];
        if !cfg!(miri) {
            cases.extend([(100_000, 90, 1 << 17), (100_000, 75, 1 << 18)]);
        }
        for (capacity, load, slots) in cases {
            let shard = Shard::spawn(
                ShardConfig {
                    capacity,
                    max_load: load,
                    ..ShardConfig::default()
                },
                Arc::new(Indexed),
            )
            .unwrap();
            assert_eq!(
                shard.shared.table().capacity(),
                slots,
                "{capacity} at {load}"
            );
            // Not under Miri, where 129 round trips to the writer take minutes (the
            // growth they reach is Miri-checked by the tests of `writer.rs`).
            if capacity == 100 && !cfg!(miri) {
                // 128 entries fit; the 129th grows the table.
                for k in 0..129u64 {
                    let h = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    shard.insert(h, vec![k], 1, meta(k)).unwrap();
                    let grown = shard.shared.table().capacity() > slots;
                    assert_eq!(grown, k == 128, "{load}: after {} entries", k + 1);
                }
            }
            shard.shutdown();
        }
    }

    /// The writer thread and two reader threads run the real protocol concurrently
    /// (under Miri this is what its data-race detector checks); every read is either a
    /// miss or one whole written value, through growth, updates and removals.
    #[test]
    fn concurrent_readers_see_only_whole_writes() {
        let ops = if cfg!(miri) { 40 } else { 20_000 };
        let keys = 24u64;
        let shard = Shard::spawn(
            ShardConfig {
                capacity: 4,
                read_attempts: 2,
                ..ShardConfig::default()
            },
            Arc::new(Indexed),
        )
        .unwrap();
        let hash = |k: u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    let mut out = [0u64; 16];
                    while !stop.load(O::Relaxed) {
                        for k in 0..keys {
                            if let Read::Found { owner, meta_words } =
                                shard.read(hash(k), &[k], &mut out)
                            {
                                assert_eq!(owner, k + 100);
                                check(&out[..meta_words]);
                            }
                        }
                        // On 2 cores, two spinning readers would starve the writer and
                        // the caller of every hand-off (tens of seconds in all).
                        std::thread::yield_now();
                    }
                });
            }
            for i in 0..ops {
                let k = i % keys;
                let v = i / keys + k;
                match i % 3 {
                    0 => drop(shard.insert(hash(k), vec![k], k + 100, meta(v))),
                    1 => drop(shard.update(hash(k), vec![k], k + 100, meta(v + 1))),
                    _ => drop(shard.remove(hash(k), vec![k], k + 100)),
                }
            }
            stop.store(true, O::Relaxed);
        });
        assert!(shard.memory().tables > 0);
        shard.shutdown();
        assert_eq!(shard.insert(1, vec![1], 1, vec![]), Err(WriteError::Closed));
        assert_eq!(shard.read(1, &[1], &mut []), Read::NotFound);
    }

    /// Commands still queued when the writer stops are answered `Closed`, never hang.
    #[test]
    fn shutdown_answers_queued_callers() {
        let shard = Arc::new(Shard::spawn(ShardConfig::default(), Arc::new(AllAlive)).unwrap());
        // Under Miri, 10 writes a caller: 50 took it 135 s, most of Miri's run over this
        // crate, and the callers still queue behind the shutdown.
        let writes = if cfg!(miri) { 10 } else { 50 };
        let callers: Vec<_> = (0..4u64)
            .map(|t| {
                let shard = shard.clone();
                std::thread::spawn(move || {
                    for k in 0..writes {
                        match shard.insert(k * 4 + t, vec![k * 4 + t], 1, vec![]) {
                            Ok(()) => {}
                            Err(WriteError::Closed) => return,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        shard.shutdown();
        for c in callers {
            c.join().unwrap();
        }
    }
}
