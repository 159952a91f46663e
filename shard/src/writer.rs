//! The shard's writer thread: the only code that changes a shard's tables and arena.
//!
//! It drains two channels: owner-death notices (unbounded, always served first: SPEC L6)
//! and ordinary commands (bounded, taken in batches of up to `batch`). Each command is
//! applied and published before its caller is answered, so a caller that sees `Ok` can
//! read its own write from any thread.
//!
//! Entries live in arena blocks whose layout is `block.rs`'s; posting lists live in
//! `index.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, TryRecvError};

use crate::arena::{class_words, ArenaAlloc};
use crate::block::{block_of, BlockHead, MAX_TERMS};
use crate::owners::OwnerLists;
use crate::raw::lines::LineAt;
use crate::raw::{
    hash_of_tag, tag, Loc, Published, RawTable, SlotView, Which, WriterToken, HEADER_WORDS,
    MAX_KEY_WORDS, MAX_META_WORDS, OWNER_WORD,
};
use crate::reply::Reply;
use crate::sync::{AtomicU64, Ordering};
use crate::{entry_charge, Event, EventKind, Gauges, Hooks, Refusal, WriteError};

/// One change to the shard's entries (see [`crate::Shard::submit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Store `key -> (owner, meta)` if the key is absent or held by a dead owner, indexed
    /// under the terms [`Hooks::index_terms`] gives for them.
    Insert {
        /// The key's hash.
        hash: u64,
        /// The key's words.
        key: Vec<u64>,
        /// The owner word.
        owner: u64,
        /// The metadata words.
        meta: Vec<u64>,
    },
    /// Remove `key` if `owner` holds it.
    Remove {
        /// The key's hash.
        hash: u64,
        /// The key's words.
        key: Vec<u64>,
        /// The owner word.
        owner: u64,
    },
    /// Replace the metadata (and so the index terms) of `key` if `owner` holds it.
    Update {
        /// The key's hash.
        hash: u64,
        /// The key's words.
        key: Vec<u64>,
        /// The owner word.
        owner: u64,
        /// The metadata words.
        meta: Vec<u64>,
    },
}

/// The charge of the entry whose block header is `bh` (see [`entry_charge`]).
fn head_charge(bh: BlockHead) -> u64 {
    entry_charge(bh.key_words, bh.meta_words, bh.terms)
}

/// What a caller asks the writer to do. Each carries its own [`Reply`]; writes are
/// claimed before they are applied (see `reply.rs`).
pub(crate) enum Command {
    Write {
        op: Op,
        reply: Reply<Result<(), WriteError>>,
    },
    /// Several writes, claimed and applied together, answered item by item.
    Batch {
        ops: Vec<Op>,
        reply: Reply<Result<Vec<Result<(), WriteError>>, WriteError>>,
    },
    /// Check the writer's own state (see [`crate::Audit`]).
    Audit { reply: Reply<crate::Audit> },
    /// A reader's fallback after too many optimistic retries.
    Read {
        hash: u64,
        key: Vec<u64>,
        reply: Reply<Option<(u64, Vec<u64>, u64)>>,
    },
    /// A query's fallback: the postings of one term.
    Postings { term: u64, reply: Reply<Vec<u64>> },
    /// Fault injection (tests of SPEC S6): the writer thread panics.
    Panic,
}

/// Served ahead of every [`Command`].
pub(crate) enum Notice {
    /// Remove every entry of each of these owners (one death, or a mass death sent as one
    /// message).
    Died(Deaths),
    /// Leave the loop; queued commands are dropped, so their callers see the shard closed.
    Stop,
}

/// Owners whose entries a shard must remove. [`Hooks::detached`] is called for them
/// exactly once: by the writer after it removed their entries, or, if the notice is never
/// served (the writer stopped or panicked first, or the send failed), when it is dropped.
/// So a dead owner's pending cleanup always completes, and its pid index is reused.
pub(crate) struct Deaths {
    pub(crate) owners: Vec<u64>,
    pub(crate) hooks: Arc<dyn Hooks>,
    pub(crate) shard: usize,
}

impl Drop for Deaths {
    fn drop(&mut self) {
        if !self.owners.is_empty() {
            self.hooks.detached(&self.owners, self.shard);
        }
    }
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Published>,
    pub(crate) token: WriterToken,
    pub(crate) alloc: ArenaAlloc,
    /// Owner -> arena offsets of its blocks; each block's tail keeps its index here.
    pub(crate) owners: OwnerLists,
    /// Terms in the term table (see `index.rs`).
    pub(crate) term_count: usize,
    pub(crate) hooks: Arc<dyn Hooks>,
    pub(crate) batch: usize,
    /// Yielding polls of the queues before an idle writer parks.
    pub(crate) idle_polls: u32,
    /// The load (percent) at which the writer grows a table
    /// ([`ShardConfig::max_load`](crate::ShardConfig::max_load)).
    pub(crate) max_load: u8,
    /// Reused buffer for keys handed to `Hooks::removed`.
    pub(crate) scratch: Vec<u64>,
    /// Reused buffers for entries' terms and their key and metadata words: the entry
    /// being written, the one being unlinked, and the one a posting swap moved.
    pub(crate) terms_buf: Vec<u64>,
    pub(crate) unindex_terms: Vec<u64>,
    pub(crate) unindex_words: Vec<u64>,
    pub(crate) fix_terms: Vec<u64>,
    pub(crate) fix_words: Vec<u64>,
    /// Arena bytes and charges, shared with readers of the shard's stats.
    pub(crate) gauges: Arc<Gauges>,
    /// Sum of the live entries' charges (the writer's own copy of `gauges.charged`).
    pub(crate) charged: u64,
    /// The death notices, for serving them while a refused write waits for reclamation
    /// (see [`Hooks::reclaiming`]); set by `run`.
    notices: Option<Receiver<Notice>>,
    /// A `Stop` notice was served outside the loop: leave it.
    stopping: bool,
    /// The deadline of the write being applied.
    until: Option<Instant>,
    /// Per table ([`Which`] as index), while it migrates: the next source slot to move.
    migrated: [usize; 2],
}

/// Source slots moved after each insert during a migration (see `Writer::migrate_some`).
/// (One under loom, so its models see migrations half done.)
pub(crate) const MIGRATE_PER_INSERT: usize = if cfg!(roster_loom) { 1 } else { 8 };
/// Source slots an idle writer moves in one step (a few microseconds of work).
pub(crate) const MIGRATE_IDLE: usize = 1024;

/// What [`Writer::admit_reclaiming`] decided.
enum Admission {
    /// Admitted: go on.
    Granted,
    /// Refused for good.
    Refused(Refusal),
    /// Death notices were served meanwhile; nothing is reserved: start the write over.
    Restart,
}

/// How long a refused write without a deadline waits for dead owners' entries to go.
const RECLAIM_WAIT: Duration = Duration::from_millis(100);

impl Writer {
    /// A writer over `shared`, whose token it owns.
    pub(crate) fn new(
        shared: Arc<Published>,
        token: WriterToken,
        hooks: Arc<dyn Hooks>,
        batch: usize,
        idle_polls: u32,
    ) -> Writer {
        Writer {
            shared,
            token,
            alloc: ArenaAlloc::default(),
            owners: OwnerLists::default(),
            term_count: 0,
            hooks,
            batch: batch.max(1),
            idle_polls,
            max_load: crate::DEFAULT_MAX_LOAD,
            scratch: Vec::new(),
            terms_buf: Vec::new(),
            unindex_terms: Vec::new(),
            unindex_words: Vec::new(),
            fix_terms: Vec::new(),
            fix_words: Vec::new(),
            gauges: Arc::new(Gauges::default()),
            charged: 0,
            notices: None,
            stopping: false,
            until: None,
            migrated: [0; 2],
        }
    }

    pub(crate) fn run(mut self, cmds: Receiver<Command>, notices: Receiver<Notice>) {
        self.notices = Some(notices.clone());
        'serve: loop {
            if self.stopping {
                return;
            }
            loop {
                match notices.try_recv() {
                    Ok(n) => {
                        if !self.notice(n) {
                            return;
                        }
                    }
                    Err(TryRecvError::Disconnected) => return,
                    Err(TryRecvError::Empty) => break,
                }
            }
            let mut served = 0;
            while served < self.batch {
                match cmds.try_recv() {
                    Ok(c) => self.apply(c),
                    Err(_) => break,
                }
                if self.stopping {
                    return;
                }
                served += 1;
            }
            if served > 0 {
                continue;
            }
            // Idle: a running migration goes on in bigger steps, one per round, so a
            // command that arrives waits for one step at most.
            let migrating = [Which::Entries, Which::Terms]
                .into_iter()
                .find(|&which| self.shared.source(&self.token, which).is_some());
            if let Some(which) = migrating {
                self.migrate_some(which, MIGRATE_IDLE);
                continue;
            }
            // Idle. Poll a while before parking: a parked writer costs every synchronous
            // caller a futex wake-up (tens of microseconds on a busy machine). Yielding
            // keeps the poll polite where cores are scarce.
            for _ in 0..self.idle_polls {
                if !cmds.is_empty() || !notices.is_empty() {
                    continue 'serve;
                }
                std::thread::yield_now();
            }
            let go_on = select! {
                recv(notices) -> n => n.is_ok_and(|n| self.notice(n)),
                recv(cmds) -> c => c.map(|c| self.apply(c)).is_ok(),
            };
            if !go_on {
                return;
            }
        }
    }

    /// Serves a notice; `false` means stop.
    fn notice(&mut self, n: Notice) -> bool {
        match n {
            Notice::Died(mut deaths) => {
                deaths.owners.iter().for_each(|&o| self.owner_died(o));
                // Taken only now: a panic above still reports them detached (on drop).
                let owners = std::mem::take(&mut deaths.owners);
                self.hooks.detached(&owners, self.token.shard);
            }
            Notice::Stop => return false,
        }
        true
    }

    pub(crate) fn apply(&mut self, c: Command) {
        match c {
            Command::Write { op, reply } => {
                if reply.claim() {
                    self.until = reply.deadline();
                    let r = self.write(&op);
                    reply.send(r);
                }
            }
            Command::Batch { ops, reply } => {
                if reply.claim() {
                    self.until = reply.deadline();
                    let r = ops.iter().map(|op| self.write(op)).collect();
                    reply.send(Ok(r));
                }
            }
            Command::Read { hash, key, reply } => reply.send(self.read(hash, &key)),
            Command::Audit { reply } => {
                self.finish_migration(Which::Entries);
                reply.send(self.audit());
            }
            Command::Postings { term, reply } => reply.send(self.postings_of(term)),
            Command::Panic => panic!("fault injected into shard {}", self.token.shard),
        }
    }

    /// Applies one write.
    fn write(&mut self, op: &Op) -> Result<(), WriteError> {
        match op {
            Op::Insert {
                hash,
                key,
                owner,
                meta,
            } => self.insert(*hash, key, *owner, meta),
            Op::Remove { hash, key, owner } => {
                let r = self.remove(*hash, key, *owner);
                // Keep migrations moving under a load without inserts too, so readers'
                // misses stop probing two tables soon.
                self.migrate_both(MIGRATE_PER_INSERT);
                r
            }
            Op::Update {
                hash,
                key,
                owner,
                meta,
            } => {
                let r = self.update(*hash, key, *owner, meta);
                self.migrate_both(MIGRATE_PER_INSERT);
                r
            }
        }
    }

    pub(crate) fn table(&self) -> &RawTable {
        self.shared.table()
    }

    fn block(&self, loc: Loc) -> &[AtomicU64] {
        self.block_at(loc.offset(), self.block_head(loc.offset()))
    }

    /// Head, owner, key and metadata of the block at `off`, whose head is `bh`.
    fn block_at(&self, off: u64, bh: BlockHead) -> &[AtomicU64] {
        block_of(&self.shared, off, bh.tail())
    }

    /// The head word of the entry block at `off`.
    pub(crate) fn block_head(&self, off: u64) -> BlockHead {
        BlockHead::unpack(
            self.shared
                .arena()
                .get(off)
                .map_or(0, |w| w.load(Ordering::Relaxed)),
        )
    }

    /// The owner of the entry whose block `loc` names (its [`OWNER_WORD`]).
    fn owner_at(&self, loc: Loc) -> u64 {
        self.shared
            .arena()
            .get(loc.offset() + OWNER_WORD as u64)
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    fn key_matches(&self, loc: Loc, key: &[u64]) -> bool {
        let bh = self.block_head(loc.offset());
        bh.key_words == key.len()
            && self.block_at(loc.offset(), bh)[HEADER_WORDS..HEADER_WORDS + key.len()]
                .iter()
                .zip(key)
                .all(|(s, k)| s.load(Ordering::Relaxed) == *k)
    }

    /// The slot of the current table `which` that `hit` accepts, among the entries with
    /// hash `hash`. While a migration runs, an entry still in the source is moved over
    /// first (so every change happens in the current table, and readers find a changed
    /// entry where they look first).
    pub(crate) fn seek_current(
        &self,
        which: Which,
        hash: u64,
        mut hit: impl FnMut(SlotView) -> bool,
    ) -> Option<usize> {
        let t = self.shared.current(which);
        if let Some(i) = t.seek(&self.token, hash, &mut hit) {
            return Some(i);
        }
        let source = self.shared.source(&self.token, which)?;
        let j = source.seek(&self.token, hash, &mut hit)?;
        Some(t.migrate_slot(&self.token, source, j))
    }

    /// The view of the slot that `hit` accepts in table `which`, in whichever of the
    /// current table and its migration source holds it; nothing moves (for reads and
    /// audits).
    pub(crate) fn seek_either(
        &self,
        which: Which,
        hash: u64,
        mut hit: impl FnMut(SlotView) -> bool,
    ) -> Option<SlotView> {
        self.shared
            .tables(&self.token, which)
            .find_map(|t| Some(t.view(&self.token, t.seek(&self.token, hash, &mut hit)?)))
    }

    /// The slot holding `key`, if any.
    fn find(&self, hash: u64, key: &[u64]) -> Option<usize> {
        let want = tag(hash);
        self.seek_current(Which::Entries, hash, |v| {
            v.tag == want && self.key_matches(v.loc, key)
        })
    }

    /// The slot whose block starts at `off` (the block's head holds its tag, so its home).
    fn find_block(&self, off: u64) -> Option<usize> {
        let hash = hash_of_tag(self.block_head(off).tag);
        self.seek_current(Which::Entries, hash, |v| v.loc.offset() == off)
    }

    fn account(&self) {
        self.gauges
            .live_bytes
            .store(self.alloc.live_bytes(), Ordering::Relaxed);
        self.gauges.charged.store(self.charged, Ordering::Relaxed);
    }

    /// Stores `key -> (owner, meta)` if the key is absent or held by a dead owner,
    /// indexed under the terms the hooks give for it ([`Op::Insert`]).
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        key: &[u64],
        owner: u64,
        meta: &[u64],
    ) -> Result<(), WriteError> {
        self.with_entry_terms(key, meta, |w, terms| {
            w.insert_indexed(hash, key, owner, meta, terms)
        })
    }

    /// Runs `f` with the index terms the hooks give for an entry with `key` and `meta`,
    /// held in the reused `terms_buf`.
    fn with_entry_terms<R>(
        &mut self,
        key: &[u64],
        meta: &[u64],
        f: impl FnOnce(&mut Writer, &[u64]) -> R,
    ) -> R {
        let mut terms = std::mem::take(&mut self.terms_buf);
        terms.clear();
        self.hooks.index_terms(key, meta, &mut terms);
        let r = f(self, &terms);
        self.terms_buf = terms;
        r
    }

    /// [`Writer::insert`] under `terms`.
    fn insert_indexed(
        &mut self,
        hash: u64,
        key: &[u64],
        owner: u64,
        meta: &[u64],
        terms: &[u64],
    ) -> Result<(), WriteError> {
        if key.len() > MAX_KEY_WORDS || meta.len() > MAX_META_WORDS || terms.len() > MAX_TERMS {
            return Err(WriteError::TooLarge);
        }
        let charge = entry_charge(key.len(), meta.len(), terms.len());
        loop {
            // A dead caller is refused before the key is looked at (see `owned_slot`);
            // the SeqCst check in `attach` below stays the one that orders against `kill`.
            if !self.hooks.is_alive(owner) {
                return Err(WriteError::OwnerDead);
            }
            if let Some(i) = self.find(hash, key) {
                let holder = self.owner_at(self.table().view(&self.token, i).loc);
                if self.hooks.is_alive(holder) {
                    return Err(WriteError::Exists { owner: holder });
                }
                // The holder is dead and awaiting cleanup: reclaim its entry now.
                self.remove_slot(i, true, EventKind::Died);
            }
            if !self.hooks.attach(owner, self.token.shard) {
                return Err(WriteError::OwnerDead);
            }
            let shard = self.token.shard;
            let undo = |h: &dyn Hooks| h.removed(key, charge, shard);
            match self.admit_reclaiming(|h| h.admit(key, charge), undo) {
                Admission::Granted => break,
                Admission::Refused(r) => return Err(WriteError::Refused(r)),
                Admission::Restart => continue,
            }
        }
        self.charged += charge;
        if self.shared.len.load(Ordering::Relaxed) as usize + 1
            > self.table().max_len(self.max_load)
        {
            self.grow(Which::Entries);
        }
        let bh = BlockHead {
            tag: tag(hash),
            terms: terms.len(),
            key_words: key.len(),
            meta_words: meta.len(),
        };
        let off = self.alloc.alloc(self.shared.arena(), bh.block_words());
        let list = self.owners.list(owner);
        let owner_index = list.len();
        // Offsets fit 32 bits: `ArenaAlloc::alloc` stops at `MAX_ARENA_WORDS`.
        list.push(off as u32);
        // Postings first: a query that meets one before the entry exists finds no entry
        // under its key and skips it.
        let tail = self.index(terms, off, owner_index);
        let loc = Loc::new(off, key.len(), meta.len(), owner);
        let t = self.table();
        let i = t.free_slot(&self.token, hash);
        let block = block_of(&self.shared, off, bh.block_words());
        let v = SlotView {
            tag: tag(hash),
            loc,
        };
        t.write(&self.token, i, v, || {
            block[0].store(bh.pack(), Ordering::Relaxed);
            block[OWNER_WORD].store(owner, Ordering::Relaxed);
            let words = key.iter().chain(meta).chain(&tail);
            for (w, x) in block[HEADER_WORDS..].iter().zip(words) {
                w.store(*x, Ordering::Relaxed);
            }
        });
        if let Some(lines) = self.shared.lines() {
            lines.insert(&self.token, hash, key, owner, meta);
        }
        self.shared.len.fetch_add(1, Ordering::Relaxed);
        self.account();
        if self.hooks.watching() {
            self.notify(EventKind::Inserted, key, owner, meta);
        }
        self.migrate_some(Which::Entries, MIGRATE_PER_INSERT);
        Ok(())
    }

    /// Asks `admit`; while it refuses and deaths that had begun at the first refusal
    /// are not all reclaimed ([`Hooks::deaths`]), serves this shard's death notices and
    /// asks again, until the write's deadline (or [`RECLAIM_WAIT`] for writes without
    /// one). So a refusal is not caused by owners that were already dead, unless their
    /// cleanup outlasts the deadline. Other commands wait meanwhile: their order is kept.
    ///
    /// Serving a notice can change anything the caller looked up before asking (remove
    /// its slot, shift it, kill its owner), so once one was served the answer is
    /// [`Admission::Restart`]: a grant is given back through `undo`, and the caller starts
    /// the write over.
    fn admit_reclaiming(
        &mut self,
        mut admit: impl FnMut(&dyn Hooks) -> Result<(), Refusal>,
        undo: impl FnOnce(&dyn Hooks),
    ) -> Admission {
        let mut until = None;
        let mut target = None;
        let mut served = false;
        loop {
            // Sampled before asking: a death reclaimed between the two returned its
            // charges before it was counted (`SeqCst`), so this admission sees them.
            let (started, reclaimed) = self.hooks.deaths();
            let r = admit(&*self.hooks);
            let refusal = match r {
                Ok(()) if served => {
                    undo(&*self.hooks);
                    return Admission::Restart;
                }
                Ok(()) => return Admission::Granted,
                Err(refusal) => refusal,
            };
            let target = *target.get_or_insert(started);
            let until = *until
                .get_or_insert_with(|| self.until.unwrap_or_else(|| Instant::now() + RECLAIM_WAIT));
            if reclaimed >= target || self.stopping || Instant::now() >= until {
                return if served {
                    Admission::Restart
                } else {
                    Admission::Refused(refusal)
                };
            }
            if self.serve_notices() {
                served = true;
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Serves the death notices queued now, without waiting; `true` if there were any.
    fn serve_notices(&mut self) -> bool {
        let Some(notices) = self.notices.clone() else {
            return false;
        };
        let mut served = false;
        while let Ok(n) = notices.try_recv() {
            served = true;
            if !self.notice(n) {
                self.stopping = true;
                break;
            }
        }
        served
    }

    /// Looks `key` up for an owner-checked change. A dead holder's entry counts as absent.
    /// A dead caller is refused whatever the key holds (SPEC L6): its death happened
    /// before this write was sent, so the death notice may still be queued behind it.
    fn owned_slot(&self, hash: u64, key: &[u64], owner: u64) -> Result<usize, WriteError> {
        if !self.hooks.is_alive(owner) {
            return Err(WriteError::OwnerDead);
        }
        let i = self.find(hash, key).ok_or(WriteError::NotFound)?;
        let holder = self.owner_at(self.table().view(&self.token, i).loc);
        if holder == owner {
            Ok(i)
        } else if self.hooks.is_alive(holder) {
            Err(WriteError::NotOwner { owner: holder })
        } else {
            Err(WriteError::NotFound)
        }
    }

    pub(crate) fn remove(&mut self, hash: u64, key: &[u64], owner: u64) -> Result<(), WriteError> {
        let i = self.owned_slot(hash, key, owner)?;
        self.remove_slot(i, true, EventKind::Removed);
        Ok(())
    }

    /// Replaces the metadata and index terms of `key`. The entry's postings are removed
    /// and re-added (a query racing the update may miss the entry meanwhile); the block
    /// is rewritten in place when its size class allows, else moved.
    pub(crate) fn update(
        &mut self,
        hash: u64,
        key: &[u64],
        owner: u64,
        meta: &[u64],
    ) -> Result<(), WriteError> {
        self.with_entry_terms(key, meta, |w, terms| {
            w.update_indexed(hash, key, owner, meta, terms)
        })
    }

    /// [`Writer::update`] under `terms`.
    fn update_indexed(
        &mut self,
        hash: u64,
        key: &[u64],
        owner: u64,
        meta: &[u64],
        terms: &[u64],
    ) -> Result<(), WriteError> {
        if meta.len() > MAX_META_WORDS || terms.len() > MAX_TERMS {
            return Err(WriteError::TooLarge);
        }
        let (i, v, old, bh, was, now) = loop {
            let i = self.owned_slot(hash, key, owner)?;
            let v = self.table().view(&self.token, i);
            let old = self.block_head(v.loc.offset());
            let bh = BlockHead {
                terms: terms.len(),
                meta_words: meta.len(),
                ..old
            };
            let (was, now) = (head_charge(old), head_charge(bh));
            let undo = |h: &dyn Hooks| {
                // Shrinking back is never refused.
                let _ = h.readmit(key, now, was);
            };
            match self.admit_reclaiming(|h| h.readmit(key, was, now), undo) {
                Admission::Granted => break (i, v, old, bh, was, now),
                Admission::Refused(r) => return Err(WriteError::Refused(r)),
                Admission::Restart => continue,
            }
        };
        let old_off = v.loc.offset();
        self.charged = self.charged - was + now;
        let owner_index = self.owner_index(old_off, old);
        self.unindex(old_off, old);
        let off = if class_words(bh.block_words()) == class_words(old.block_words()) {
            old_off
        } else {
            self.alloc.alloc(self.shared.arena(), bh.block_words())
        };
        let tail = self.index(terms, off, owner_index);
        let loc = Loc::new(off, key.len(), meta.len(), owner);
        // The cached copy's section brackets the slot's write (`lines.rs`, L2).
        let line = self.open_line(hash, key);
        let src = block_of(&self.shared, old_off, old.block_words());
        let dst = block_of(&self.shared, off, bh.block_words());
        self.table()
            .write(&self.token, i, SlotView { loc, ..v }, || {
                if off != old_off {
                    for (d, s) in dst.iter().zip(&src[..HEADER_WORDS + key.len()]) {
                        d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                }
                dst[0].store(bh.pack(), Ordering::Relaxed);
                for (w, x) in dst[HEADER_WORDS + key.len()..]
                    .iter()
                    .zip(meta.iter().chain(&tail))
                {
                    w.store(*x, Ordering::Relaxed);
                }
            });
        if let Some(lines) = self.shared.lines() {
            match line {
                Some(at) => lines.close(&self.token, at, Some((key, owner, meta))),
                None => lines.insert(&self.token, hash, key, owner, meta),
            }
        }
        if off != old_off {
            self.alloc.free(old_off, old.block_words());
            if let Some(list) = self.owners.get_mut(owner) {
                list[owner_index] = off as u32;
            }
        }
        self.account();
        if self.hooks.watching() {
            self.notify(EventKind::Updated, key, owner, meta);
        }
        Ok(())
    }

    /// The owner, metadata and block offset of `key` (the readers' fallback).
    pub(crate) fn read(&self, hash: u64, key: &[u64]) -> Option<(u64, Vec<u64>, u64)> {
        let i = self.find(hash, key)?;
        let v = self.table().view(&self.token, i);
        let meta = self.block(v.loc)[HEADER_WORDS + key.len()..]
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .collect();
        Some((self.owner_at(v.loc), meta, v.loc.offset()))
    }

    /// Checks the table against the owner lists (SPEC I5) and the posting lists (I2), the
    /// probe invariant T1, the entry count and the byte accounting (S4).
    /// O(capacity + entries x terms).
    pub(crate) fn audit(&self) -> crate::Audit {
        let mut a = crate::Audit::default();
        let mut bytes = 0u64;
        let mut charged = 0u64;
        let mut postings = 0usize;
        // While a migration runs, entries sit in both tables (each in exactly one).
        for (t, j) in self
            .shared
            .tables(&self.token, Which::Entries)
            .flat_map(|t| (0..t.capacity()).map(move |j| (t, j)))
        {
            let v = t.view(&self.token, j);
            if !v.is_entry() {
                continue;
            }
            a.entries += 1;
            let owner = self.owner_at(v.loc);
            if !self.hooks.is_alive(owner) {
                a.dead_entries += 1;
            }
            let off = v.loc.offset();
            let bh = self.block_head(off);
            bytes += class_words(bh.block_words()) as u64 * 8;
            charged += head_charge(bh);
            if Loc::new(off, bh.key_words, bh.meta_words, owner) != v.loc {
                a.problems.push(format!(
                    "slot {j}: its loc disagrees with its block's lengths or owner"
                ));
            }
            if bh.tag != v.tag {
                a.problems
                    .push(format!("slot {j}: tag disagrees with its block's head"));
            }
            let listed = self
                .owners
                .get(owner)
                .and_then(|l| l.get(self.owner_index(off, bh)));
            if listed.map(|&o| u64::from(o)) != Some(off) {
                a.problems.push(format!(
                    "I5: slot {j} (owner {owner:#x}) is missing from its owner's list"
                ));
            }
            postings += bh.terms;
            self.audit_postings(off, bh, &mut a.problems);
            let mut i = t.home(hash_of_tag(v.tag));
            while i != j {
                if t.view(&self.token, i).tag == 0 {
                    a.problems
                        .push(format!("T1: empty slot {i} before entry at {j}"));
                    break;
                }
                i = t.next(i);
            }
        }
        a.owners = self.owners.len();
        let listed: usize = self.owners.values().map(Vec::len).sum();
        if listed != a.entries {
            a.problems.push(format!(
                "I5: owner lists hold {listed} entries, the table {}",
                a.entries
            ));
        }
        if self.owners.values().any(Vec::is_empty) {
            a.problems
                .push("I5: an owner with an empty list was kept".into());
        }
        let (indexed, index_bytes) = self.index_totals(&mut a.problems);
        if indexed != postings {
            a.problems.push(format!(
                "I2: posting lists hold {indexed} postings, the entries {postings}"
            ));
        }
        a.postings = indexed;
        let len = self.shared.len.load(Ordering::Relaxed) as usize;
        if len != a.entries {
            a.problems
                .push(format!("len says {len}, the table holds {}", a.entries));
        }
        if charged != self.charged {
            a.problems.push(format!(
                "S4: charges add up to {charged}, the writer counts {}",
                self.charged
            ));
        }
        a.block_bytes = self.alloc.live_bytes();
        if bytes + index_bytes != a.block_bytes {
            a.problems.push(format!(
                "S4: accounting says {} block bytes, the tables hold {}",
                a.block_bytes,
                bytes + index_bytes
            ));
        }
        self.audit_lines(&mut a.problems);
        a
    }

    /// Checks that every line of the line cache copies its entry exactly (`lines.rs`).
    fn audit_lines(&self, problems: &mut Vec<String>) {
        let Some(lines) = self.shared.lines() else {
            return;
        };
        let mut entries = std::collections::HashMap::new();
        for t in self.shared.tables(&self.token, Which::Entries) {
            for j in 0..t.capacity() {
                let v = t.view(&self.token, j);
                if !v.is_entry() {
                    continue;
                }
                let bh = self.block_head(v.loc.offset());
                let words: Vec<u64> = self.block(v.loc)[HEADER_WORDS..]
                    .iter()
                    .take(bh.key_words + bh.meta_words)
                    .map(|w| w.load(Ordering::Relaxed))
                    .collect();
                let (key, meta) = words.split_at(bh.key_words);
                entries.insert(key.to_vec(), (self.owner_at(v.loc), meta.to_vec()));
            }
        }
        lines.audit(&self.token, |key| entries.get(key).cloned(), problems);
    }

    /// Removes every entry of a dead owner (the caller then tells the hooks).
    pub(crate) fn owner_died(&mut self, owner: u64) {
        for off in self.owners.remove(owner).unwrap_or_default() {
            if let Some(i) = self.find_block(u64::from(off)) {
                self.remove_slot(i, false, EventKind::Died);
            } else {
                debug_assert!(false, "owner list names block {off} that no slot holds");
            }
        }
    }

    /// Opens the section of the line caching `key`, if the shard keeps a line cache and
    /// it holds the key: the caller changes the entry's slot, then closes the line.
    fn open_line(&self, hash: u64, key: &[u64]) -> Option<LineAt<'_>> {
        let lines = self.shared.lines()?;
        let at = lines.find(&self.token, hash, key)?;
        lines.open(&self.token, at);
        Some(at)
    }

    /// Empties slot `i` of `t` with a backward shift, keeping probe invariant T1.
    pub(crate) fn vacate(&self, t: &RawTable, i: usize) {
        t.vacate(&self.token, i);
    }

    /// Removes the entry in slot `i`: the slot (backward shift), its postings, its block,
    /// and (if `unlink`) its place in its owner's list.
    fn remove_slot(&mut self, i: usize, unlink: bool, why: EventKind) {
        let gone = self.table().view(&self.token, i);
        let owner = self.owner_at(gone.loc);
        let off = gone.loc.offset();
        let bh = self.block_head(off);
        self.scratch.clear();
        self.scratch.extend(
            block_of(&self.shared, off, bh.block_words())[HEADER_WORDS..][..bh.key_words]
                .iter()
                .map(|w| w.load(Ordering::Relaxed)),
        );
        // The cached copy's section brackets the slot's removal (`lines.rs`, L2).
        let line = self.open_line(hash_of_tag(gone.tag), &self.scratch);
        self.vacate(self.shared.table(), i);
        if let (Some(lines), Some(l)) = (self.shared.lines(), line) {
            lines.close(&self.token, l, None);
        }
        let index = self.owner_index(off, bh);
        self.unindex(off, bh);
        let block = block_of(&self.shared, off, bh.block_words());
        if unlink {
            if let Some(list) = self.owners.get_mut(owner) {
                list.swap_remove(index);
                let moved = list.get(index).map(|&o| u64::from(o));
                if list.is_empty() {
                    self.owners.remove(owner);
                }
                if let Some(moved) = moved {
                    self.set_owner_index(moved, self.block_head(moved), index);
                }
            }
        }
        self.alloc.free(off, bh.block_words());
        self.shared.len.fetch_sub(1, Ordering::Relaxed);
        let charge = head_charge(bh);
        self.charged -= charge;
        self.account();
        self.hooks.removed(&self.scratch, charge, self.token.shard);
        if self.hooks.watching() {
            // The block is free but not yet reused: its metadata words are still there.
            let meta: Vec<u64> = block[HEADER_WORDS + bh.key_words..][..bh.meta_words]
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
                .collect();
            self.notify(why, &self.scratch, owner, &meta);
        }
    }

    /// Tells the hooks about a published change of the entry with `key`.
    fn notify(&self, kind: EventKind, key: &[u64], owner: u64, meta: &[u64]) {
        let event = Event {
            kind,
            key,
            owner,
            meta,
        };
        self.hooks.event(self.token.shard, event);
    }

    /// Doubles table `which` without a stall (SPEC L7): publishes an empty table twice
    /// the size that takes the current one's entries over a few at a time (see
    /// `table.rs`, "Migration"). A migration still running is finished first; pacing
    /// makes that rare (see [`Writer::migrate_some`]).
    pub(crate) fn grow(&mut self, which: Which) {
        self.finish_migration(which);
        let new = self
            .shared
            .new_table(self.shared.current(which).capacity() * 2);
        self.shared
            .begin_migration(&self.token, which, Box::new(new));
        self.migrated[which as usize] = 0;
    }

    /// Moves the entries of the next `slots` slots of table `which`'s migration source,
    /// if one runs, and ends the migration when the source is drained. Called after every
    /// insert into the table with [`MIGRATE_PER_INSERT`] slots: a migration starts with
    /// the source at the max load `L` (at least 1/4, `MAX_LOAD_RANGE`), and the new
    /// table, twice the size, has room for `L` times the source's capacity more before it
    /// must grow; moving the source's slots takes 1/8 of its capacity in inserts, so it
    /// ends well before then. An idle writer moves bigger steps.
    pub(crate) fn migrate_some(&mut self, which: Which, slots: usize) {
        let Some(source) = self.shared.source(&self.token, which) else {
            return;
        };
        let t = self.shared.current(which);
        let next = &mut self.migrated[which as usize];
        *next = t.migrate(&self.token, source, *next, slots);
        if *next == source.capacity() {
            self.shared.end_migration(&self.token, which);
        }
    }

    /// [`Writer::migrate_some`] of both tables: after a write that may insert into
    /// neither, so migrations keep moving under any load.
    fn migrate_both(&mut self, slots: usize) {
        self.migrate_some(Which::Entries, slots);
        self.migrate_some(Which::Terms, slots);
    }

    /// Runs the migration of table `which`, if any, to its end.
    pub(crate) fn finish_migration(&mut self, which: Which) {
        while self.shared.source(&self.token, which).is_some() {
            self.migrate_some(which, MIGRATE_IDLE);
        }
    }
}

#[cfg(test)]
impl Writer {
    /// `insert` of metadata the test hooks give no index terms (see
    /// [`crate::test_terms`]).
    pub(crate) fn insert_plain(
        &mut self,
        hash: u64,
        key: &[u64],
        owner: u64,
        meta: &[u64],
    ) -> Result<(), WriteError> {
        debug_assert!(meta.first().is_none_or(|m| m >> 56 == 0));
        self.insert(hash, key, owner, meta)
    }

    /// `update` of metadata the test hooks give no index terms.
    pub(crate) fn update_plain(
        &mut self,
        hash: u64,
        key: &[u64],
        owner: u64,
        meta: &[u64],
    ) -> Result<(), WriteError> {
        debug_assert!(meta.first().is_none_or(|m| m >> 56 == 0));
        self.update(hash, key, owner, meta)
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use std::collections::HashMap as StdMap;
    use std::sync::Mutex;

    use proptest::prelude::*;

    use super::*;
    use crate::raw::lines::LINE_META;
    use crate::raw::{Attempt, OWNER_HINT_BITS};
    use crate::with_terms;

    /// Owners below 1000 are alive; the test kills others by listing them.
    #[derive(Default)]
    struct TestHooks {
        dead: Mutex<Vec<u64>>,
        detached: Mutex<Vec<(u64, usize)>>,
    }

    impl Hooks for TestHooks {
        fn index_terms(&self, _: &[u64], meta: &[u64], out: &mut Vec<u64>) {
            crate::test_terms(meta, out);
        }
        fn is_alive(&self, owner: u64) -> bool {
            !self.dead.lock().unwrap().contains(&owner)
        }
        fn attach(&self, owner: u64, _shard: usize) -> bool {
            self.is_alive(owner)
        }
        fn detached(&self, owners: &[u64], shard: usize) {
            let mut log = self.detached.lock().unwrap();
            log.extend(owners.iter().map(|&o| (o, shard)));
        }
    }

    fn writer(capacity: usize) -> (Writer, Arc<TestHooks>) {
        writer_with(capacity, false)
    }

    /// [`writer`], with a line cache if `line_cache`.
    fn writer_with(capacity: usize, line_cache: bool) -> (Writer, Arc<TestHooks>) {
        let hooks = Arc::new(TestHooks::default());
        let (p, token) =
            Published::try_new(3, capacity, 2, false, line_cache.then_some(0)).unwrap();
        let w = Writer::new(Arc::new(p), token, hooks.clone(), 8, 0);
        (w, hooks)
    }

    /// A hash whose top bits (the home slot) come from `home` and whose rest from `k`, so
    /// tests can force collisions.
    fn hash(home: u64, k: u64) -> u64 {
        home << 58 | k << 33
    }

    fn read(w: &Writer, h: u64, key: &[u64]) -> Option<(u64, Vec<u64>)> {
        let mut out = [0u64; 64];
        let got = w.shared.try_read(h, key, &mut out);
        answer(got, &out).expect("no concurrent writer, yet asked to retry")
    }

    /// [`read`] through the inlined fast path (`try_read_quick`), which tries the line
    /// cache first and answers `Retry` while a migration runs.
    fn read_quick(w: &Writer, h: u64, key: &[u64]) -> Option<(u64, Vec<u64>)> {
        let mut out = [0u64; 64];
        let got = w.shared.try_read_quick(h, key, &mut out);
        answer(got, &out).unwrap_or_else(|| read(w, h, key))
    }

    /// A read's answer: the owner and metadata of a hit (its hint checked), `Some(None)`
    /// for a miss, `None` for `Retry`.
    fn answer(got: Attempt, out: &[u64]) -> Option<Option<(u64, Vec<u64>)>> {
        match got {
            Attempt::Found {
                owner,
                owner_hint,
                meta_words,
                ..
            } => {
                assert_eq!(owner_hint, owner & ((1 << OWNER_HINT_BITS) - 1), "hint");
                Some(Some((owner, out[..meta_words].to_vec())))
            }
            Attempt::NotFound => Some(None),
            Attempt::Retry => None,
        }
    }

    /// Checks invariant T1 (no empty slot between an entry's home and its slot) directly.
    fn assert_probe_invariant(w: &Writer) {
        let t = w.table();
        for j in 0..t.capacity() {
            let v = t.view(&w.token, j);
            if v.tag != 0 {
                let mut i = t.home(hash_of_tag(v.tag));
                while i != j {
                    assert_ne!(t.view(&w.token, i).tag, 0, "gap before slot {j}");
                    i = t.next(i);
                }
            }
        }
    }

    /// A list thousands of postings long grows chunk by chunk (its head moving twice
    /// the directory's size) and shrinks back to nothing, every tail and chunk exact.
    #[test]
    fn long_posting_lists_grow_and_shrink_by_chunks() {
        // Still five chunks under Miri (100 postings), where every audit walks the
        // whole table slowly; 1237 is prime to both sizes.
        let (n, every) = if cfg!(miri) {
            (100, 50)
        } else {
            (3000u64, 250)
        };
        let (mut w, _) = writer(n as usize * 2);
        for k in 0..n {
            w.insert(
                hash(k % 64, k),
                &[k],
                1,
                &with_terms(&[77, 78 + k % 3], &[k]),
            )
            .unwrap();
        }
        let mut list = Vec::new();
        let read = w.shared.try_read_postings(77, Some(&mut list));
        assert!(matches!(read, Attempt::Found { meta_words, .. } if meta_words == n as usize));
        assert_eq!(list, w.postings_of(77));
        let mut distinct = list.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), n as usize);
        assert!(w.audit().problems.is_empty());
        // Removed in a scattered order: swaps from every chunk.
        let mut k = 0;
        for step in 1..=n {
            k = (k + 1237) % n;
            w.remove(hash(k % 64, k), &[k], 1).unwrap();
            if step % every == 0 {
                let a = w.audit();
                assert!(a.problems.is_empty(), "after {step}: {:?}", a.problems);
                let left = (n - step) as usize;
                match w.shared.try_read_postings(77, Some(&mut list)) {
                    Attempt::Found { meta_words, .. } => {
                        assert_eq!((meta_words, list.len()), (left, left));
                        assert_eq!(list, w.postings_of(77));
                    }
                    other => assert!(left == 0 && other == Attempt::NotFound, "{other:?}"),
                }
            }
        }
        let a = w.audit();
        assert_eq!((a.entries, a.postings, a.block_bytes), (0, 0, 0));
    }

    /// The term table grows by migration, like the entry table: while terms move over,
    /// every list reads whole from whichever table holds its term, changes go to moved
    /// terms, and audits (which walk both tables) stay clean, up and back down.
    #[test]
    fn term_table_grows_by_migration_and_every_list_stays_readable() {
        let (n, every) = if cfg!(miri) {
            (60u64, 20)
        } else {
            (2000u64, 97)
        };
        let (mut w, _) = writer(n as usize * 2);
        let first = w.shared.terms().capacity();
        let mut migrating = 0;
        let mut list = Vec::new();
        let lists = |w: &Writer, upto: u64, list: &mut Vec<u64>| {
            for k in (0..upto).step_by(7) {
                match w.shared.try_read_postings(1000 + k, Some(list)) {
                    Attempt::Found { meta_words: 1, .. } => assert_eq!(list.len(), 1),
                    other => panic!("term of key {k} of {upto}: {other:?}"),
                }
            }
        };
        for k in 0..n {
            // A term of its own, and one shared term whose list changes every time.
            w.insert(hash(k % 64, k), &[k], 1, &with_terms(&[77, 1000 + k], &[k]))
                .unwrap();
            migrating += w.shared.source(&w.token, Which::Terms).is_some() as u32;
            if k % every == 0 {
                lists(&w, k + 1, &mut list);
                assert!(w.audit().problems.is_empty(), "after {k} inserts");
            }
        }
        assert!(migrating > 0, "no insert saw a term migration");
        assert!(w.shared.terms().capacity() >= first * 8);
        let read = w.shared.try_read_postings(77, Some(&mut list));
        assert!(matches!(read, Attempt::Found { meta_words, .. } if meta_words == n as usize));
        let mut k = 0;
        for step in 1..=n {
            k = (k + 1237) % n;
            w.remove(hash(k % 64, k), &[k], 1).unwrap();
            assert_eq!(
                w.shared.try_read_postings(1000 + k, None),
                Attempt::NotFound
            );
            if step % every == 0 {
                assert!(w.audit().problems.is_empty(), "after {step} removals");
            }
        }
        w.finish_migration(Which::Entries);
        let a = w.audit();
        assert_eq!((a.entries, a.postings, a.block_bytes), (0, 0, 0));
        assert!(a.problems.is_empty(), "{:?}", a.problems);
    }

    /// The line cache splits its segments as entries come, a segment at a time: every
    /// short entry is read from its line all along, and the audit holds.
    #[test]
    fn a_line_cache_splits_as_entries_come_and_keeps_every_short_entry_cached() {
        let (mut w, _) = writer_with(16, true);
        // (Fewer under Miri, where each audit takes seconds.)
        let (n, every): (u64, usize) = if cfg!(miri) { (300, 100) } else { (5000, 97) };
        let keys: Vec<(u64, [u64; 2])> = (0..n)
            .map(|k| (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 32, [k % 3, k]))
            .collect();
        let shared = w.shared.clone();
        let lines = shared.lines().unwrap();
        for (n, &(h, key)) in keys.iter().enumerate() {
            let meta = vec![n as u64; n % 7];
            w.insert_plain(h, &key, 1, &meta).unwrap();
            if n % every == 0 {
                let a = w.audit();
                assert!(a.problems.is_empty(), "{:?}", a.problems);
            }
        }
        assert!(lines.segment_count() > 1, "no segment split");
        // (The slot table too: `try_read_quick` answers `Retry` while it migrates.)
        w.finish_migration(Which::Entries);
        for (n, &(h, key)) in keys.iter().enumerate() {
            let mut out = [0u64; 64];
            let got = w.shared.try_read_quick(h, &key, &mut out);
            let (block, meta_words) = match got {
                Attempt::Found {
                    block, meta_words, ..
                } => (block, meta_words),
                other => panic!("key {n}: {other:?}"),
            };
            // Metadata of up to five words is read from the line, which reads no block.
            assert_eq!(block == 0, n % 7 <= LINE_META, "key {n}");
            assert_eq!(out[..meta_words], vec![n as u64; n % 7][..], "key {n}");
        }
        let a = w.audit();
        assert!(a.problems.is_empty(), "{:?}", a.problems);
        let cached = keys.iter().enumerate().filter(|(n, _)| n % 7 <= LINE_META);
        assert_eq!(lines.len(), cached.count());
    }

    /// Churn at a steady count of entries keeps the line cache's memory steady: segments
    /// retired by splits and rebuilds are made again, and deleted lines are cleared, so
    /// the cache holds what the live entries need.
    #[test]
    #[cfg_attr(miri, ignore = "a hundred thousand writes take Miri too long")]
    fn churn_keeps_the_line_cache_at_the_size_its_entries_need() {
        let (mut w, _) = writer_with(16, true);
        let hash = |k: u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 32;
        let shared = w.shared.clone();
        let lines = shared.lines().unwrap();
        let live = 20_000;
        for k in 0..live {
            w.insert_plain(hash(k), &[0, k], 1, &[k]).unwrap();
        }
        let grown = lines.bytes();
        let segments = lines.segment_count();
        for k in live..6 * live {
            w.insert_plain(hash(k), &[0, k], 1, &[k]).unwrap();
            w.remove(hash(k - live), &[0, k - live], 1).unwrap();
        }
        assert_eq!(lines.len() as u64, live);
        // Each churned-through segment is split or rebuilt at most as its entries need.
        assert!(
            lines.segment_count() <= segments * 2 && lines.bytes() <= 2 * grown,
            "{} segments and {} bytes, from {segments} and {grown}",
            lines.segment_count(),
            lines.bytes()
        );
        w.finish_migration(Which::Entries);
        for k in 5 * live..6 * live {
            let mut out = [0u64; 64];
            match w.shared.try_read_quick(hash(k), &[0, k], &mut out) {
                Attempt::Found {
                    meta_words: 1,
                    block: 0,
                    ..
                } => assert_eq!(out[0], k),
                other => panic!("key {k}: {other:?}"),
            }
        }
        let a = w.audit();
        assert!(a.problems.is_empty(), "{:?}", a.problems);
    }

    #[test]
    fn backward_shift_keeps_colliding_keys_reachable() {
        let (mut w, _) = writer(8);
        for k in 0..5 {
            w.insert_plain(hash(1, k), &[k], 1, &[k * 10]).unwrap();
        }
        w.remove(hash(1, 0), &[0], 1).unwrap();
        w.remove(hash(1, 2), &[2], 1).unwrap();
        assert_probe_invariant(&w);
        for k in [1, 3, 4] {
            assert_eq!(
                read(&w, hash(1, k), &[k]),
                Some((1, vec![k * 10])),
                "key {k}"
            );
        }
        assert_eq!(read(&w, hash(1, 0), &[0]), None);
        assert_eq!(w.shared.len.load(Ordering::Relaxed), 3);
    }

    /// An entry may hold a term more than once: unlinking it, with the swaps that move
    /// its own postings meanwhile, leaves every position right (the last term goes
    /// first, so a fix-up never lands on a copy already removed). Entries of one to
    /// three copies of two terms, inserted and removed in scrambled orders.
    #[test]
    fn entries_holding_a_term_many_times_unlink_cleanly() {
        // Under Miri, 6 seeds (each still mixes one to three copies, with and without
        // the second term): the 40 took six minutes of CI there.
        let seeds: u64 = if cfg!(miri) { 6 } else { 40 };
        for seed in 0..seeds {
            let (mut w, _) = writer(64);
            let n = 12u64;
            let terms = |k: u64| -> Vec<u64> {
                let x = (k + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed.wrapping_mul(31);
                let copies = 1 + (x >> 7) % 3;
                let mut t = vec![5; copies as usize];
                if x & 1 == 1 {
                    t.insert((x >> 3) as usize % t.len(), 6);
                }
                t
            };
            for k in 0..n {
                let k = (k * 5 + seed) % n;
                w.insert(hash(k % 4, k), &[k], 1, &with_terms(&terms(k), &[k]))
                    .unwrap();
            }
            for step in 0..n {
                let k = (step * 7 + seed * 3) % n;
                w.remove(hash(k % 4, k), &[k], 1).unwrap();
                let a = w.audit();
                assert!(
                    a.problems.is_empty(),
                    "seed {seed}, removing {k}: {:?}",
                    a.problems
                );
            }
            assert!(w.postings_of(5).is_empty() && w.postings_of(6).is_empty());
        }
    }

    #[test]
    fn growth_keeps_every_entry_and_retires_the_old_table() {
        let (mut w, _) = writer(4);
        let first = w.table().capacity();
        for k in 0..100u64 {
            w.insert_plain(k.wrapping_mul(0x9e37_79b9_7f4a_7c15), &[k, k], 7, &[k; 3])
                .unwrap();
        }
        assert!(w.table().capacity() > first);
        assert!(w.table().max_len(w.max_load) >= 100);
        for k in 0..100u64 {
            let h = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(read(&w, h, &[k, k]), Some((7, vec![k; 3])));
        }
        assert_probe_invariant(&w);
    }

    #[test]
    fn dead_holder_counts_as_absent_and_live_holder_is_named() {
        let (mut w, hooks) = writer(8);
        w.insert_plain(hash(0, 1), &[1], 10, &[]).unwrap();
        assert_eq!(
            w.insert_plain(hash(0, 1), &[1], 11, &[]),
            Err(WriteError::Exists { owner: 10 })
        );
        assert_eq!(
            w.remove(hash(0, 1), &[1], 11),
            Err(WriteError::NotOwner { owner: 10 })
        );
        assert_eq!(
            w.update_plain(hash(0, 1), &[1], 11, &[]),
            Err(WriteError::NotOwner { owner: 10 })
        );
        hooks.dead.lock().unwrap().push(10);
        assert_eq!(w.remove(hash(0, 1), &[1], 11), Err(WriteError::NotFound));
        w.insert_plain(hash(0, 1), &[1], 11, &[5]).unwrap();
        assert_eq!(read(&w, hash(0, 1), &[1]), Some((11, vec![5])));
        assert_eq!(
            w.insert_plain(hash(0, 2), &[2], 10, &[]),
            Err(WriteError::OwnerDead)
        );
        // The dead owner's notice finds nothing left.
        w.owner_died(10);
        assert_eq!(w.shared.len.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn owner_death_removes_exactly_its_entries() {
        let (mut w, _) = writer(8);
        for k in 0..40u64 {
            w.insert_plain(hash(k % 4, k), &[k], k % 3, &[k]).unwrap();
        }
        // Relocate some blocks first, so the owner lists must follow them.
        for k in (0..40u64).step_by(5) {
            w.update_plain(hash(k % 4, k), &[k], k % 3, &[k; 30])
                .unwrap();
        }
        w.owner_died(1);
        assert_probe_invariant(&w);
        for k in 0..40u64 {
            let got = read(&w, hash(k % 4, k), &[k]);
            assert_eq!(got.is_some(), k % 3 != 1, "key {k}");
        }
        assert!(w.owners.get(1).is_none());
        w.owner_died(0);
        w.owner_died(2);
        assert_eq!(w.shared.len.load(Ordering::Relaxed), 0);
        assert!(w.owners.is_empty());
        assert_eq!(
            w.alloc.live_bytes(),
            0,
            "every block back in the free lists"
        );
    }

    #[test]
    fn update_in_place_and_relocated() {
        let (mut w, _) = writer(8);
        w.insert_plain(hash(2, 1), &[1], 4, &[1, 2, 3]).unwrap();
        w.update_plain(hash(2, 1), &[1], 4, &[9, 9, 9]).unwrap();
        assert_eq!(read(&w, hash(2, 1), &[1]), Some((4, vec![9, 9, 9])));
        w.update_plain(hash(2, 1), &[1], 4, &[7; 40]).unwrap();
        assert_eq!(read(&w, hash(2, 1), &[1]), Some((4, vec![7; 40])));
        w.update_plain(hash(2, 1), &[1], 4, &[]).unwrap();
        assert_eq!(read(&w, hash(2, 1), &[1]), Some((4, vec![])));
        w.remove(hash(2, 1), &[1], 4).unwrap();
        assert_eq!(w.alloc.live_bytes(), 0);
        assert!(w.owners.is_empty());
    }

    /// Logs inserts and removals in the order the writer made them.
    #[derive(Default)]
    struct OrderHooks {
        log: Mutex<Vec<(&'static str, u64)>>,
    }

    impl Hooks for OrderHooks {
        fn index_terms(&self, _: &[u64], meta: &[u64], out: &mut Vec<u64>) {
            crate::test_terms(meta, out);
        }
        fn is_alive(&self, _: u64) -> bool {
            true
        }
        fn attach(&self, _: u64, _: usize) -> bool {
            true
        }
        fn watching(&self) -> bool {
            true
        }
        fn event(&self, _: usize, e: Event<'_>) {
            if e.kind == EventKind::Inserted {
                self.log.lock().unwrap().push(("insert", e.key[0]));
            }
        }
        fn removed(&self, key: &[u64], _: u64, _: usize) {
            self.log.lock().unwrap().push(("remove", key[0]));
        }
    }

    /// Counts `detached` calls per owner.
    #[derive(Default)]
    struct DetachLog(Mutex<Vec<u64>>);

    impl Hooks for DetachLog {
        fn index_terms(&self, _: &[u64], meta: &[u64], out: &mut Vec<u64>) {
            crate::test_terms(meta, out);
        }
        fn is_alive(&self, _: u64) -> bool {
            true
        }
        fn attach(&self, _: u64, _: usize) -> bool {
            true
        }
        fn detached(&self, owners: &[u64], _: usize) {
            self.0.lock().unwrap().extend_from_slice(owners);
        }
    }

    /// A death notice the writer never serves (it stopped first) still reports its
    /// owners detached, exactly once, so their pid indexes do not leak; one it serves
    /// reports them once too.
    #[test]
    fn unserved_death_notices_detach_their_owners_once() {
        let hooks = Arc::new(DetachLog::default());
        let (p, token) = Published::new(0, 64, 4);
        let w = Writer::new(Arc::new(p), token, hooks.clone(), 4, 0);
        let (_cmd_tx, cmd_rx) = crossbeam_channel::bounded::<Command>(4);
        let (notice_tx, notice_rx) = crossbeam_channel::unbounded();
        let deaths = |owners: Vec<u64>| {
            Notice::Died(Deaths {
                owners,
                hooks: hooks.clone(),
                shard: 0,
            })
        };
        notice_tx.send(deaths(vec![1])).unwrap();
        notice_tx.send(Notice::Stop).unwrap();
        notice_tx.send(deaths(vec![2, 3])).unwrap();
        std::thread::spawn(move || w.run(cmd_rx, notice_rx))
            .join()
            .unwrap();
        // The writer is gone: its receivers dropped, the channel discarded the rest.
        let mut log = hooks.0.lock().unwrap().clone();
        log.sort_unstable();
        assert_eq!(log, [1, 2, 3]);
        // A send to a writer that has ended fails and detaches at once.
        assert!(notice_tx.send(deaths(vec![4])).is_err());
        assert_eq!(hooks.0.lock().unwrap().len(), 4);
    }

    /// Owner 7 is alive and its charges block admissions until its death notice has been
    /// served (as a quota full of a dying owner's entries does).
    #[derive(Default)]
    struct DyingHooks {
        served: std::sync::atomic::AtomicBool,
    }

    impl Hooks for DyingHooks {
        fn index_terms(&self, _: &[u64], meta: &[u64], out: &mut Vec<u64>) {
            crate::test_terms(meta, out);
        }
        fn is_alive(&self, owner: u64) -> bool {
            owner != 7 || !self.served.load(Ordering::SeqCst)
        }
        fn attach(&self, owner: u64, _: usize) -> bool {
            self.is_alive(owner)
        }
        fn detached(&self, owners: &[u64], _: usize) {
            if owners.contains(&7) {
                self.served.store(true, Ordering::SeqCst);
            }
        }
        fn deaths(&self) -> (u64, u64) {
            (1, u64::from(self.served.load(Ordering::SeqCst)))
        }
        fn admit(&self, key: &[u64], _: u64) -> Result<(), Refusal> {
            // The two entries that set the scene always fit.
            if key[0] < 100 || self.served.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(Refusal { code: 1, limit: 1 })
            }
        }
        fn readmit(&self, _: &[u64], old: u64, new: u64) -> Result<(), Refusal> {
            if new <= old || self.served.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(Refusal { code: 1, limit: 1 })
            }
        }
    }

    /// A writer over `DyingHooks` holding owner 7's entry at slot 1 and owner 1's entry
    /// (key 2) right behind it in the same cluster, with 7's death notice queued.
    fn dying_scene() -> (Writer, Arc<DyingHooks>, crossbeam_channel::Sender<Notice>) {
        let hooks = Arc::new(DyingHooks::default());
        let (p, token) = Published::new(0, 64, 4);
        let mut w = Writer::new(Arc::new(p), token, hooks.clone(), 4, 0);
        w.insert_plain(hash(1, 1), &[1], 7, &[10]).unwrap();
        w.insert_plain(hash(1, 2), &[2], 1, &[20]).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        w.notices = Some(rx);
        tx.send(Notice::Died(Deaths {
            owners: vec![7],
            hooks: hooks.clone(),
            shard: 0,
        }))
        .unwrap();
        (w, hooks, tx)
    }

    /// An update refused while a death is reclaimed, whose notice (served meanwhile)
    /// shifts the updated entry to another slot, starts over on the entry's new slot
    /// instead of writing into its old one.
    #[test]
    fn a_write_waiting_for_reclamation_starts_over_after_serving_deaths() {
        let (mut w, _hooks, _tx) = dying_scene();
        w.update_plain(
            hash(1, 2),
            &[2],
            1,
            &[21, 22, 23, 24, 25, 26, 27, 28, 29, 30],
        )
        .unwrap();
        assert_eq!(read(&w, hash(1, 2), &[2]).unwrap().1.len(), 10);
        assert!(read(&w, hash(1, 1), &[1]).is_none());
        let audit = w.audit();
        assert!(audit.problems.is_empty(), "{:?}", audit.problems);
        assert_eq!(audit.entries, 1);
    }

    /// An insert by an owner whose own death is served while the insert waits for
    /// admission is refused: no entry of a dead owner is stored after its cleanup.
    #[test]
    fn an_owner_that_dies_while_its_insert_waits_is_refused() {
        let (mut w, _hooks, _tx) = dying_scene();
        assert_eq!(
            w.insert_plain(hash(3, 100), &[100], 7, &[1]),
            Err(WriteError::OwnerDead)
        );
        let audit = w.audit();
        assert!(audit.problems.is_empty(), "{:?}", audit.problems);
        assert_eq!((audit.entries, audit.owners), (1, 1));
    }

    /// SPEC L6: a death notice queued behind ordinary writes is served before them.
    #[test]
    fn l6_death_notices_go_ahead_of_queued_writes() {
        let hooks = Arc::new(OrderHooks::default());
        let (p, token) = Published::new(0, 64, 4);
        let mut w = Writer::new(Arc::new(p), token, hooks.clone(), 4, 0);
        for k in 100..103 {
            w.insert_plain(hash(1, k), &[k], 7, &[]).unwrap();
        }
        hooks.log.lock().unwrap().clear();
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded(64);
        let (notice_tx, notice_rx) = crossbeam_channel::unbounded();
        let mut replies = Vec::new();
        for k in 0..10u64 {
            let (reply, pending) = crate::reply::pair(None);
            let op = crate::writer::Op::Insert {
                hash: hash(2, k),
                key: vec![k],
                owner: 1,
                meta: Vec::new(),
            };
            cmd_tx.send(Command::Write { op, reply }).unwrap();
            replies.push(pending);
        }
        notice_tx
            .send(Notice::Died(Deaths {
                owners: vec![7],
                hooks: hooks.clone(),
                shard: 0,
            }))
            .unwrap();
        let writer = std::thread::spawn(move || w.run(cmd_rx, notice_rx));
        for pending in replies {
            pending.wait(0).unwrap().unwrap();
        }
        notice_tx.send(Notice::Stop).unwrap();
        writer.join().unwrap();
        let log = hooks.log.lock().unwrap();
        let first_insert = log.iter().position(|(op, _)| *op == "insert").unwrap();
        let last_remove = log.iter().rposition(|(op, _)| *op == "remove").unwrap();
        assert!(last_remove < first_insert, "deaths must go first: {log:?}");
        assert_eq!(log.len(), 13);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u64, u8),
        Remove(u64, u64),
        Update(u64, u64, u8),
        Die(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few keys, few homes, few owners: lots of collisions, shifts and conflicts.
        prop_oneof![
            (0..24u64, 0..4u64, 0..20u8).prop_map(|(k, o, m)| Op::Insert(k, o, m)),
            (0..24u64, 0..4u64).prop_map(|(k, o)| Op::Remove(k, o)),
            (0..24u64, 0..4u64, 0..20u8).prop_map(|(k, o, m)| Op::Update(k, o, m)),
            (0..4u64).prop_map(Op::Die),
        ]
    }

    /// Most operations in one oracle case: fewer under Miri, where three cases of up to
    /// 200 took three and a half minutes of CI.
    const ORACLE_OPS: usize = if cfg!(miri) { 80 } else { 200 };

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if cfg!(miri) { 3 } else { 256 },
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Differential test of the writer and the reader protocol against a `HashMap`.
        #[test]
        fn writer_matches_hashmap_oracle(
            ops in proptest::collection::vec(op(), 1..ORACLE_OPS),
            line_cache in any::<bool>(),
        ) {
            let (mut w, _) = writer_with(4, line_cache);
            // key -> (owner, metadata, index terms)
            let mut oracle: StdMap<u64, (u64, Vec<u64>, Vec<u64>)> = StdMap::new();
            let h = |k: u64| hash(k % 3, k);
            // Distinct terms from a small set, so lists share, grow, shrink and vanish.
            let terms = |seed: u64| -> Vec<u64> {
                let mut t: Vec<u64> = (0..seed % 4).map(|i| 1 + (seed / 4 + i) % 5).collect();
                t.sort_unstable();
                t.dedup();
                t
            };
            for op in ops {
                match op {
                    Op::Insert(k, o, m) => {
                        let t = terms(k + m as u64);
                        let meta = with_terms(&t, &vec![k ^ o; m as usize]);
                        let want = match oracle.get(&k) {
                            Some((holder, ..)) => Err(WriteError::Exists { owner: *holder }),
                            None => { oracle.insert(k, (o, meta.clone(), t.clone())); Ok(()) }
                        };
                        prop_assert_eq!(w.insert(h(k), &[k, 1], o, &meta), want);
                    }
                    Op::Remove(k, o) => {
                        let want = match oracle.get(&k) {
                            None => Err(WriteError::NotFound),
                            Some((holder, ..)) if *holder != o => Err(WriteError::NotOwner { owner: *holder }),
                            Some(_) => { oracle.remove(&k); Ok(()) }
                        };
                        prop_assert_eq!(w.remove(h(k), &[k, 1], o), want);
                    }
                    Op::Update(k, o, m) => {
                        let t = terms(k * 7 + m as u64);
                        let meta = with_terms(&t, &vec![k + m as u64; m as usize]);
                        let want = match oracle.get_mut(&k) {
                            None => Err(WriteError::NotFound),
                            Some((holder, ..)) if *holder != o => Err(WriteError::NotOwner { owner: *holder }),
                            Some((_, old, old_t)) => { *old = meta.clone(); *old_t = t.clone(); Ok(()) }
                        };
                        prop_assert_eq!(w.update(h(k), &[k, 1], o, &meta), want);
                    }
                    Op::Die(o) => {
                        oracle.retain(|_, (holder, ..)| *holder != o);
                        w.owner_died(o);
                    }
                }
                assert_probe_invariant(&w);
                for k in 0..24u64 {
                    let want = oracle.get(&k).map(|(o, m, _)| (*o, m.clone()));
                    prop_assert_eq!(read(&w, h(k), &[k, 1]), want.clone(), "key {}", k);
                    prop_assert_eq!(read_quick(&w, h(k), &[k, 1]), want, "key {} (fast path)", k);
                }
                // Every term's postings resolve to exactly the keys that hold it (I2).
                for term in 1..=5u64 {
                    let mut list = Vec::new();
                    prop_assert!(!matches!(w.shared.try_read_postings(term, Some(&mut list)), Attempt::Retry));
                    let mut got: Vec<u64> = list
                        .iter()
                        .map(|&p| w.shared.arena().get(p + HEADER_WORDS as u64).unwrap().load(Ordering::Relaxed))
                        .collect();
                    got.sort_unstable();
                    let mut want: Vec<u64> = oracle.iter().filter(|(_, (.., t))| t.contains(&term)).map(|(k, _)| *k).collect();
                    want.sort_unstable();
                    prop_assert_eq!(got, want, "term {}", term);
                }
                let audit = w.audit();
                prop_assert!(audit.problems.is_empty(), "{:?}", audit.problems);
                prop_assert_eq!(w.shared.len.load(Ordering::Relaxed) as usize, oracle.len());
            }
            // Emptied, the index and the arena accounting are back to nothing (S4).
            for o in 0..4 {
                w.owner_died(o);
            }
            let audit = w.audit();
            prop_assert_eq!((audit.entries, audit.postings, audit.block_bytes), (0, 0, 0));
        }
    }
}
