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
//! - Writes ([`Shard::insert`], [`Shard::remove`], [`Shard::update`]) go through a bounded
//!   channel to the writer thread, which applies and publishes them before replying.
//! - Owner deaths ([`Shard::owner_died`]) use a separate unbounded channel that the writer
//!   always drains first.
//!
//! All `unsafe` code lives in `src/raw/`; its module docs hold the protocol and the proof.
#![warn(missing_docs)]

mod arena;
mod index;
mod raw;
mod sync;
mod writer;

#[cfg(all(test, roster_loom))]
mod tests;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};

use raw::{Attempt, Published};
use sync::{AtomicU64, Ordering};
use writer::{Command, Notice, Writer};

pub use raw::{prefetch, AtomicWords, MAX_KEY_WORDS, MAX_META_WORDS};
pub use writer::MAX_TERMS;

/// What the engine tells a shard about owners. Called on the writer thread only.
pub trait Hooks: Send + Sync + 'static {
    /// Whether `owner` is alive. Entries of dead owners count as absent.
    fn is_alive(&self, owner: u64) -> bool;
    /// Called before shard `shard` stores an entry of `owner`. Returning `false` (the owner
    /// is dead) refuses the insert. The engine records the shard so the owner's death
    /// notifies it.
    fn attach(&self, owner: u64, shard: usize) -> bool;
    /// Called after shard `shard` removed every entry of each of `owners` on their
    /// death notice (one call per notice, so a mass death is one call).
    fn detached(&self, owners: &[u64], shard: usize) {
        let _ = (owners, shard);
    }
    /// Called after shard `shard` stored an entry with `key`.
    fn inserted(&self, key: &[u64], shard: usize) {
        let _ = (key, shard);
    }
    /// Called after shard `shard` removed an entry with `key` (by any path).
    fn removed(&self, key: &[u64], shard: usize) {
        let _ = (key, shard);
    }
}

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
    /// The shard's writer has stopped.
    Closed,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Exists { owner } => write!(f, "key held by owner {owner:#x}"),
            WriteError::OwnerDead => f.write_str("owner is dead"),
            WriteError::NotFound => f.write_str("no such key"),
            WriteError::NotOwner { owner } => write!(f, "key held by other owner {owner:#x}"),
            WriteError::TooLarge => f.write_str("key or metadata too large"),
            WriteError::Closed => f.write_str("shard writer stopped"),
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
}

/// A running shard. Dropping it stops and joins its writer.
pub struct Shard {
    shared: Arc<Published>,
    cmds: Sender<Command>,
    notices: Sender<Notice>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Never carries a message; disconnects when the writer thread ends (returns or
    /// unwinds), which wakes every caller still waiting for a reply.
    writer_gone: Receiver<()>,
    read_attempts: u32,
    /// Yielding polls of a reply before the caller parks (the writer's `idle_polls`).
    reply_polls: u32,
    live_bytes: Arc<AtomicU64>,
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
    /// Fails only if the OS refuses to start a thread.
    pub fn spawn(config: ShardConfig, hooks: Arc<dyn Hooks>) -> std::io::Result<Shard> {
        let slots = config.capacity.saturating_mul(4) / 3 + 1;
        let (published, token) = Published::new(config.index, slots, ARENA_BASE_BITS);
        let shared = Arc::new(published);
        let (cmd_tx, cmd_rx) = bounded(config.queue.max(1));
        let (notice_tx, notice_rx) = unbounded();
        let live_bytes = Arc::new(AtomicU64::new(0));
        let mut writer = Writer::new(
            shared.clone(),
            token,
            hooks,
            config.batch,
            config.idle_polls,
        );
        writer.live_bytes = live_bytes.clone();
        let core = config.core;
        let (gone_tx, gone_rx) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name(format!("roster-shard-{}", config.index))
            .spawn(move || {
                // Dropped when this closure ends, by return or by unwinding.
                let _gone = gone_tx;
                if let Some(core) = core {
                    pin_to(core);
                }
                writer.run(cmd_rx, notice_rx);
            })?;
        Ok(Shard {
            shared,
            cmds: cmd_tx,
            notices: notice_tx,
            thread: Mutex::new(Some(thread)),
            writer_gone: gone_rx,
            read_attempts: config.read_attempts.max(1),
            reply_polls: config.idle_polls,
            live_bytes,
        })
    }

    /// Reads `key` (whose hash is `hash`), copying its metadata into `out` if it fits.
    ///
    /// Lock-free: it retries optimistically up to `read_attempts` times while the writer
    /// changes what it reads, then asks the writer (the only path that allocates).
    #[inline]
    pub fn read(&self, hash: u64, key: &[u64], out: &mut [u64]) -> Read {
        self.read_at(hash, key, out).0
    }

    /// First step of a batched read: prefetches the slot `hash` starts probing at. Issue it
    /// for every key of a batch, then [`Shard::prefetch_entry`] for each, then read each:
    /// the batch's cache misses overlap instead of adding up. Hints only; never blocks.
    #[inline]
    pub fn prefetch_slot(&self, hash: u64) {
        self.shared.prefetch_home(hash);
    }

    /// Second step of a batched read (after [`Shard::prefetch_slot`]): prefetches the
    /// entry's key and metadata if its slot is in the home slot's cache line. Returns the
    /// owner word seen, unvalidated: a hint for prefetching the owner's state, never an
    /// answer (only [`Shard::read`] answers).
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
                } => return (Read::Found { owner, meta_words }, block),
                Attempt::NotFound => return (Read::NotFound, 0),
                Attempt::Retry => sync::spin_hint(),
            }
        }
        self.read_slow(hash, key, out)
    }

    #[cold]
    fn read_slow(&self, hash: u64, key: &[u64], out: &mut [u64]) -> (Read, u64) {
        let (reply, rx) = bounded(1);
        let cmd = Command::Read {
            hash,
            key: key.to_vec(),
            reply,
        };
        if self.cmds.send(cmd).is_err() {
            return (Read::Closed, 0);
        }
        match self.reply(rx) {
            Some(Some((owner, meta, block))) => {
                if let Some(out) = out.get_mut(..meta.len()) {
                    out.copy_from_slice(&meta);
                }
                let found = Read::Found {
                    owner,
                    meta_words: meta.len(),
                };
                (found, block)
            }
            Some(None) => (Read::NotFound, 0),
            None => (Read::Closed, 0),
        }
    }

    /// Waits for the writer's reply to a sent command; `None` if the writer ended without
    /// answering. Commands still queued when the writer stops stay in the channel's buffer
    /// (crossbeam frees a bounded channel's messages only when both sides are gone), so
    /// waiting on the reply alone could hang: the writer's end is watched too. A reply
    /// sent before the writer ended is still taken, so an applied write never reads as
    /// failed.
    fn reply<T>(&self, rx: Receiver<T>) -> Option<T> {
        // A reply usually comes within microseconds: poll (yielding) before parking, so a
        // synchronous write does not pay a thread wake-up on top of the writer's work.
        for _ in 0..self.reply_polls {
            if let Ok(r) = rx.try_recv() {
                return Some(r);
            }
            std::thread::yield_now();
        }
        select! {
            recv(rx) -> r => r.ok(),
            recv(self.writer_gone) -> _ => rx.try_recv().ok(),
        }
    }

    fn call(
        &self,
        make: impl FnOnce(Sender<Result<(), WriteError>>) -> Command,
    ) -> Result<(), WriteError> {
        let (reply, rx) = bounded(1);
        self.cmds
            .send(make(reply))
            .map_err(|_| WriteError::Closed)?;
        self.reply(rx).ok_or(WriteError::Closed)?
    }

    /// Stores `key -> (owner, meta)` if the key is absent or held by a dead owner, and
    /// indexes it under each of `terms` (distinct, non-zero opaque words; see
    /// [`Shard::postings`]).
    ///
    /// # Errors
    ///
    /// [`WriteError::Exists`] with the live holder, [`WriteError::OwnerDead`],
    /// [`WriteError::TooLarge`], or [`WriteError::Closed`].
    pub fn insert(
        &self,
        hash: u64,
        key: Vec<u64>,
        owner: u64,
        meta: Vec<u64>,
        terms: Vec<u64>,
    ) -> Result<(), WriteError> {
        self.call(|reply| Command::Insert {
            hash,
            key,
            owner,
            meta,
            terms,
            reply,
        })
    }

    /// Removes `key` if `owner` holds it.
    ///
    /// # Errors
    ///
    /// [`WriteError::NotFound`], [`WriteError::NotOwner`] with the live holder, or
    /// [`WriteError::Closed`].
    pub fn remove(&self, hash: u64, key: Vec<u64>, owner: u64) -> Result<(), WriteError> {
        self.call(|reply| Command::Remove {
            hash,
            key,
            owner,
            reply,
        })
    }

    /// Replaces the metadata and index terms of `key` if `owner` holds it.
    ///
    /// # Errors
    ///
    /// As [`Shard::remove`], plus [`WriteError::TooLarge`].
    pub fn update(
        &self,
        hash: u64,
        key: Vec<u64>,
        owner: u64,
        meta: Vec<u64>,
        terms: Vec<u64>,
    ) -> Result<(), WriteError> {
        self.call(|reply| Command::Update {
            hash,
            key,
            owner,
            meta,
            terms,
            reply,
        })
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
        let (reply, rx) = bounded(1);
        self.cmds
            .send(Command::Postings { term, reply })
            .map_err(|_| WriteError::Closed)?;
        *out = self.reply(rx).ok_or(WriteError::Closed)?;
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
        let arena = &self.shared.arena;
        let Some(head) = arena.range(posting, 2) else {
            return Read::NotFound;
        };
        // Hints only (the writer may be reusing the block): the read below validates.
        let hash = head[0].load(Ordering::Relaxed);
        let w1 = writer::W1::unpack(head[1].load(Ordering::Relaxed));
        let Some(words) = arena.range(posting + 2, w1.key_words as u64) else {
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
        let (reply, rx) = bounded(1);
        self.cmds
            .send(Command::Audit { reply })
            .map_err(|_| WriteError::Closed)?;
        self.reply(rx).ok_or(WriteError::Closed)
    }

    /// Tells the writer that `owner` died; it removes the owner's entries ahead of any
    /// queued command, then calls [`Hooks::detached`]. Returns `false` if the writer has
    /// stopped (nothing will be removed).
    pub fn owner_died(&self, owner: u64) -> bool {
        self.notices.send(Notice::Died(owner)).is_ok()
    }

    /// [`Shard::owner_died`] for many owners in one message (a mass death).
    pub fn owners_died(&self, owners: Vec<u64>) -> bool {
        self.notices.send(Notice::DiedMany(owners)).is_ok()
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
            tables: self.shared.table_bytes.load(Ordering::Relaxed),
            arena: self.shared.arena.allocated_bytes(),
            live_blocks: self.live_bytes.load(Ordering::Relaxed),
        }
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

    fn check(m: &[u64]) {
        let v = m[0];
        assert_eq!(m[1], v.wrapping_mul(3) + 1, "torn: {m:?}");
        assert_eq!(m.len(), 2 + (v % 9) as usize, "torn length: {m:?}");
        assert!(m[2..].iter().all(|&x| x == v ^ 0x55), "torn tail: {m:?}");
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
            Arc::new(AllAlive),
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
                    }
                });
            }
            for i in 0..ops {
                let k = i % keys;
                let v = i / keys + k;
                match i % 3 {
                    0 => drop(shard.insert(hash(k), vec![k], k + 100, meta(v), vec![k % 3 + 1])),
                    1 => drop(shard.update(
                        hash(k),
                        vec![k],
                        k + 100,
                        meta(v + 1),
                        vec![(k + v) % 3 + 1],
                    )),
                    _ => drop(shard.remove(hash(k), vec![k], k + 100)),
                }
            }
            stop.store(true, O::Relaxed);
        });
        assert!(shard.memory().tables > 0);
        shard.shutdown();
        assert_eq!(
            shard.insert(1, vec![1], 1, vec![], vec![]),
            Err(WriteError::Closed)
        );
        assert_eq!(shard.read(1, &[1], &mut []), Read::NotFound);
    }

    /// Commands still queued when the writer stops are answered `Closed`, never hang.
    #[test]
    fn shutdown_answers_queued_callers() {
        let shard = Arc::new(Shard::spawn(ShardConfig::default(), Arc::new(AllAlive)).unwrap());
        let callers: Vec<_> = (0..4u64)
            .map(|t| {
                let shard = shard.clone();
                std::thread::spawn(move || {
                    for k in 0..50 {
                        match shard.insert(k * 4 + t, vec![k * 4 + t], 1, vec![], vec![]) {
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
