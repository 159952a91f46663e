//! The raw core: the only code in Roster with `unsafe`, and the seqlock protocol.
//!
//! # Algorithm
//!
//! A shard publishes two tables (each a [`TableCell`]: an `AtomicPtr` to the current
//! [`RawTable`]) and one arena ([`AtomicWords`]): the entry table (key -> entry) and the
//! term table (index term -> posting list, see `index.rs`), read with the same protocol.
//! Each slot is a seqlock over two atomic words (the first holds the sequence number
//! and the tag, see `table.rs`); the owner, key and metadata live in an arena block that
//! the slot's `loc` word points at. One writer thread (holding the shard's [`WriterToken`])
//! changes both; any number of readers read both with plain loads, no lock, no RMW, no
//! store to shared memory.
//!
//! A shard may also keep a line cache (`lines.rs`, opt-in): one-line copies of short
//! entries that [`Published::try_read_quick`] tries before the entry table. A line hit
//! answers; anything else reads the entry table as below, which stays the record of
//! every entry. The cache's own rules (L1, L2: the writer changes a cached entry inside
//! its line's section; S1-S3: its segments) and why a hit is right are in `lines.rs`.
//!
//! Reader ([`Published::try_read`]), one attempt (while a migration runs, see R5):
//! 1. `t = current.load(Acquire)`; `m1 = t.moves.load(Acquire)`; either flag set
//!    (`MOVES_OPEN`, a section open, or `MOVES_MIGRATING`, R5) sends the read to the slow
//!    path, which reloads `moves` and retries while a section is open, and reads both
//!    tables while a migration runs. One test covers both.
//! 2. Probe from the key's home. First the head: `s1 = word.load(Acquire)` of the home
//!    slot and of the one after it (the sequence number and the tag in one word), and
//!    whichever's tag matches, home first, goes to 3 (odd sequence number: retry); a hit
//!    there ends the read, and anything else (no tag matched, or the key differed)
//!    probes again from home, slot by slot. The head never answers a miss. For each
//!    slot: `s1` as above; tag matches: odd sequence number means retry, else go to 3.
//!    Empty: go to 4. Otherwise: next slot (a slot passed or stopped at needs no stable
//!    `seq`; R3).
//! 3. Tag matches: load `loc`, then the block's owner word, key words and (into the
//!    caller's buffer) its metadata words, all `Relaxed` (a block that `loc` does not
//!    mark short gives its lengths in its head word, loaded first, `Relaxed` too); then
//!    `fence(Acquire)` and `word.load(Relaxed)`: changed means retry; else a key match
//!    is a hit (with the owner read from the block and `loc`'s owner hint), and a
//!    mismatch moves on. The owner and the head are block words like the key, so R1 and
//!    R2 cover them as they cover the key and the metadata.
//! 4. Miss: `fence(Acquire)`, then `moves.load(Relaxed)` must still equal `m1`.
//!
//! Writer rules:
//! - W1: every store into a slot or into the arena happens inside a write section
//!   (`seq := odd, tag kept; fence(Release); stores; seq := even with the new tag
//!   (Release)`), after its fence. (`seq` and the tag are one word's halves, so the
//!   section's first and last stores are to that word, and the tag changes only in the
//!   last.)
//! - W2: a retired table gets all its `seq` words and its `moves` word made odd, followed
//!   by a `fence(Release)`, before the writer stores anything else. (Both tables now grow
//!   by migration, W6, whose drained sources need only `moves`; the whole-table swap
//!   that W2 covers is left to the tests of retirement.)
//! - W3: a backward shift runs between `moves := odd; fence(Release)` and
//!   `moves := even (Release)`.
//! - W4: a table is published with a `Release` store of `current` after it is filled, and
//!   it is never freed before the shard's [`Published`] drops.
//! - W5: arena memory is reused freely; W1 makes every reuse visible to validation.
//!   Stated exactly: every store into an arena block that a slot may still name comes
//!   after (in the writer's program order) the opening `fence(Release)` of a write
//!   section of that slot which changed it to name something else. Stores into a fresh
//!   block, not yet named by any slot, need no section of their own; they are covered
//!   by the section that publishes the slot naming it.
//! - W6: a migration (see "Growth" below) moves an entry by writing its new slot and then
//!   marking its source slot [`MOVED`](table::MOVED), both between
//!   `source.moves := odd; fence(Release)` and `source.moves := even (Release)`; a
//!   source gets no other change, and its end is `table.source := null (Release)`,
//!   then `table.moves &= !MOVES_MIGRATING (Release)`, then `source.moves := odd` for
//!   good and a `fence(Release)`. The new table's `moves` holds `MOVES_MIGRATING` from
//!   before it is published until that store; sections add 1 as they open and 3 as they
//!   close, so they never change the flag.
//!
//! # Invariants and why a validated read is right
//!
//! - R1 (no torn hit): if a reader's `Relaxed` load in step 3 returned a value stored by a
//!   write section that began after the reader's `s1` was stored, then that section's
//!   opening `fence(Release)` synchronises with the reader's `fence(Acquire)` (fence-fence
//!   synchronisation through the `Relaxed` load), so the section's odd `seq` store happens
//!   before the reader's second `seq` load, which therefore differs from `s1`. Arena
//!   stores for *another* slot that reuse this block are covered by W1 the same way: their
//!   section's fence comes after (in the writer's order) the store that freed the block,
//!   which changed this slot's `seq`. A retired table is covered by W2.
//! - R2 (no stale hit): `s1` is loaded `Acquire` and pairs with the `Release` that closed
//!   the section which wrote it, so the payload read is at least that new.
//! - R3 (no false miss): by the probe invariant T1, a key present for the whole read is
//!   found unless a shift moved it; a shift's stores are after `moves` turned odd (W3),
//!   so the same fence argument as R1 makes the miss validation in step 4 fail.
//! - R3 in happens-before terms, and why a probe may read slots it does not validate: a
//!   reader validates only the slot whose tag matched and, on a miss, the table's
//!   `moves`. An unvalidated slot can only make it skip (tag mismatch) or stop (empty).
//!   A skip is harmless: a torn or stale tag that mismatches a present key's slot would
//!   need that slot to hold another entry, so the key is further on. A stop at an empty
//!   slot while the key was present for the whole read would need the key to lie beyond
//!   that slot, which T1 forbids at every instant outside a shift; if the reader's
//!   `Relaxed` load of that slot read a value stored by a shift (the only way an entry
//!   leaves a slot of a table while staying present in it; a migration's moves are
//!   R5's), the shift's opening `fence(Release)` synchronises with the reader's
//!   `fence(Acquire)` before its second `moves` load, so that load sees the odd (or a
//!   later) value and the miss is retried. Slots the probe passes are therefore read
//!   without checking their `seq` (an open section there changes nothing above); only
//!   the slot whose payload is used must have an even, unchanged one. The head's hit
//!   one past home rests on that slot's validation alone (R1, R2), so it needs no path
//!   of occupied slots before it (a home read empty in a stale view is no obstacle);
//!   every miss comes from the slot-by-slot probe, which R3 covers as stated.
//! - R5' (the fast path needs no `source`): a reader whose `m1` lacks `MOVES_MIGRATING`
//!   read either the table's first value (then `t` never had a source: a migration's
//!   target is published with the flag set, before the `Release` store of `current`
//!   that the reader's `Acquire` load read) or a value stored at or after the flag's
//!   clearing, every one of them a `Release` store (the clearing itself, or a section's
//!   close; the `Relaxed` stores, a section's open and `retire`/`retire_source` once
//!   `t` itself is replaced, all set `MOVES_OPEN` and send the read to the slow path).
//!   Either way the `Acquire` load synchronises with a store that the writer made after
//!   `source := null` and after every move of the migration, so all of its entries are
//!   in `t` for this read, which R3 then covers alone. The flag is set only on a table
//!   not yet published (`mark_migrating` takes `&mut`), so no value after the clearing
//!   has it again. (The clearing's `Release` is belt and braces: every move already
//!   precedes the `fence(Release)` that opened the last migration step's section.)
//! - R5 (no false miss during a migration): a reader that finds `t.source` set loads
//!   `source.moves` (`Acquire`) first, probes `t`, then the source, and validates a miss
//!   in both with `fence(Acquire)` and a second load of `source.moves`. A key present
//!   throughout is in `t` or in the source at every instant (it is written to `t` before
//!   its source slot is marked moved, W6). If the probe of `t` missed it, it was not yet
//!   in `t` then (R3 for `t`); if the probe of the source then missed it too, that probe
//!   read the `MOVED` mark (or a later value) of its slot, stored inside a `moves` section
//!   of the source that began after the first `source.moves` load, and the R1 argument
//!   applied to `moves` makes the second load differ. A hit in either table is validated
//!   by its slot as always; a hit in the source is current because a write to a key
//!   still in the source first moves it (the writer never changes an entry in place
//!   there). A reader still on the drained source (it loaded `current` or `source`
//!   before the migration ended) finds `moves` odd and retries, reloading `current`.
//! - R6 (no false miss on a table that became a source): a reader that loaded `current`
//!   before a migration began treats the source as the current table. Its probe may then
//!   read `MOVED` marks; if it read one stored after its first `moves` load, R1's fence
//!   argument on `moves` retries it; if its first `moves` load itself read the end of a
//!   migration step (`Acquire`, pairing with that step's `Release`), the publication of
//!   the new table happened before the rest of its read. Either way the migration began
//!   before the reader's `fence(Acquire)` in the happens-before sense, so a `Relaxed`
//!   reload of `current` after it sees the new table, and a miss whose table is no longer
//!   current is retried. (Hits need no such check: a source entry is never changed in
//!   place, only marked moved, which its slot's validation sees.)
//! - R4 (memory safety): tables and arena chunks are never freed while `&Published` is
//!   borrowed (W4, and [`AtomicWords`]' invariants); every word is an atomic; offsets read
//!   from racy words are bounds-checked before use. Nothing a reader does can be UB, even on
//!   garbage it later discards.
//!
//! Sequence numbers are 32-bit and grow by 2 per write, so one slot's wraps after 2^31
//! writes of it; R1 (and the posting lists' use of it) assumes no reader stalls between
//! its two loads of a slot's word that long (see `table.rs`). `moves` counts sections
//! in 62 bits, which never wrap.
//!
//! # Growth and reclamation
//!
//! When the entry table passes its max load (`ShardConfig::max_load`, 3/4 by default,
//! at most 1/2 for tables of up to `SMALL_TABLE_SLOTS`) the writer publishes an empty table of twice the size whose `source` is the full one,
//! and moves the source's entries over a few slots after each insert and in bigger
//! steps while idle (W6; see `table.rs`, "Migration"), so no write waits for a
//! whole-table copy (SPEC L7). Any write that touches a key still in the source moves it
//! first. Its slots come zeroed from the OS, so its page faults are
//! spread over the inserts that fill it too. The term table (a slot per distinct index
//! term) grows the same way, paced by the terms it takes in, and its readers
//! ([`Published::try_read_postings`]) consult both tables the same way (R5, R6): a
//! term's posting list changes only in a write section of its slot in the current
//! table, so a term still in the source is moved before its list changes, and a reader
//! that read the list through the source slot sees that slot's `seq` changed by the
//! move (R1's fence argument: the move's section precedes, in the writer's order, the
//! opening fence of the section that changed the list). Posting lists never copy their
//! postings to grow (`postings.rs`).
//! Tables that were replaced are kept, chained through `prev`, until the shard drops:
//! readers pay no RMW and no store for reclamation. Because tables only double (no
//! tombstones means no same-size rebuilds), they together hold fewer slots than the
//! current one.
//!
//! # Sources
//!
//! The seqlock with fences follows crossbeam-utils' `atomic/seq_lock.rs` and Boehm, "Can
//! seqlocks get along with programming language memory models?" (MSPC 2012), which is the
//! argument R1 uses; retiring instead of freeing follows the "leak until drop" option of
//! crossbeam-epoch's docs on deferred destruction.

pub(crate) mod lines;
mod masked;
mod pages;
pub(crate) mod postings;
mod prefetch;
mod table;
mod words;

pub use prefetch::prefetch;

use lines::LineCell;
use table::{Slot, MOVES_OPEN, SEQ_ONE};

/// Bytes of one table slot.
pub const SLOT_BYTES: u64 = std::mem::size_of::<Slot>() as u64;

pub use masked::MaskedSlice;
pub use table::{
    hash_of_tag, slots_for, tag, Loc, RawTable, SlotView, WriterToken, DEFAULT_MAX_LOAD,
    HEADER_WORDS, MAX_KEY_WORDS, MAX_LOAD_RANGE, MAX_META_WORDS, OWNER_HINT_BITS, OWNER_WORD,
    SMALL_TABLE_LOAD, SMALL_TABLE_SLOTS,
};
pub use words::AtomicWords;

use crate::block::BlockHead;
use crate::sync::{fence, AtomicPtr, AtomicU64, Ordering};

/// The hash of an index term in the term table (SplitMix64's finalizer: a bijection, so
/// distinct terms get distinct hashes).
#[inline]
pub fn term_hash(term: u64) -> u64 {
    let mut z = term;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One optimistic read's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The key is present: its owner and metadata length. The metadata was copied into the
    /// caller's buffer only if it fit (`meta_words <= out.len()`); words of the buffer
    /// past `meta_words` (up to `FAST_META`, 7) may have been overwritten with other
    /// arena words.
    Found {
        /// The owner word.
        owner: u64,
        /// The owner word's low [`OWNER_HINT_BITS`] bits, as the slot holds them: equal
        /// to `owner`'s, but known as soon as the slot is, so what a caller loads keyed by
        /// them need not wait for the block's words.
        owner_hint: u64,
        /// Metadata length, in words.
        meta_words: usize,
        /// Arena offset of the entry's block; 0 for a hit in the line cache (the fast
        /// path of `Shard::try_read`), which reads no block.
        block: u64,
    },
    /// The key was absent at some moment during the read.
    NotFound,
    /// A write overlapped the read; nothing can be concluded.
    Retry,
}

/// Words of address space each shard's arena reserves (16 GiB; pages are used only as
/// the arena fills): the most one shard's entries, index and free blocks may take, about
/// 80 million entries of the P4 shape. (Not more: tools such as valgrind refuse
/// reservations much larger, and the registry then falls back to chunked arenas.)
pub const ARENA_RESERVE_WORDS: u64 = 1 << 31;

/// The migration source `t` names, if a migration runs.
#[inline]
fn source_of(t: &RawTable) -> Option<&RawTable> {
    let p = t.source.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY:
    // 1. A non-null `source` is the table `t` replaced (`install_migrating` stores the
    //    same pointer in `prev`), so it came from `Box::into_raw` and is owned by the
    //    `prev` chain, which frees it only in `Drop for TableCell`, with `&mut` (W4):
    //    it outlives the borrow of `t` the result is tied to.
    // 2. The caller's `Acquire` load of `current` pairs with the `Release` store that
    //    published `t`, whose `source` was set (and the source's slots last changed
    //    outside a `moves` section) before it, so the source's fields are visible.
    // 3. Every field reached through `&RawTable` is an atomic or immutable.
    Some(unsafe { &*p })
}

/// One of a shard's two published tables. Both grow the same way (see "Growth and
/// reclamation"); the writer names the one it grows or migrates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Key -> entry.
    Entries = 0,
    /// Index term -> posting list.
    Terms = 1,
}

/// One published table: the current one, with every table it replaced chained behind it
/// until the cell drops (W4).
pub struct TableCell {
    /// The current table: from `Box::into_raw`, never null, freed only in `Drop`.
    current: AtomicPtr<RawTable>,
}

impl TableCell {
    fn new(table: RawTable) -> TableCell {
        TableCell {
            current: AtomicPtr::new(Box::into_raw(Box::new(table))),
        }
    }

    /// The current table.
    #[inline]
    pub fn get(&self) -> &RawTable {
        let p = self.current.load(Ordering::Acquire);
        // SAFETY:
        // 1. `p` is non-null: it is set in `new` and `install` from `Box::into_raw`.
        // 2. The `Acquire` load pairs with the `Release` store that published it (W4), so
        //    the table's contents as filled before publication are visible.
        // 3. Tables are freed only in `Drop for TableCell` (W4), which needs `&mut self`,
        //    so the table outlives the `&self` borrow the result is tied to.
        // 4. Every field reached through `&RawTable` is an atomic or immutable.
        unsafe { &*p }
    }

    /// The current table's address, for a reader's miss validation (R6): a `Relaxed`
    /// load, ordered by the `fence(Acquire)` the validation already ran.
    #[inline]
    fn current(&self) -> *const RawTable {
        self.current.load(Ordering::Relaxed)
    }

    /// Publishes `new` and retires the table it replaces (W2, W4); the old table stays
    /// allocated, chained from `new`, until the cell drops. (Tables grow by migration;
    /// this whole-table swap remains for tests of retirement.)
    #[cfg(all(test, not(roster_loom)))]
    fn install(&self, t: &WriterToken, new: Box<RawTable>) {
        let old = self.current.load(Ordering::Relaxed);
        new.prev.store(old, Ordering::Relaxed);
        let new = Box::into_raw(new);
        self.current.store(new, Ordering::Release);
        // SAFETY: `old` was the current table: non-null and alive until `self` drops (W4);
        // `new` now owns it through `prev`, and nothing frees it before `Drop`.
        unsafe { &*old }.retire(t);
    }

    /// Ends the running migration of this cell's table, whose source must hold no entry
    /// any more: readers stop consulting it (W6).
    fn end_migration(&self, t: &WriterToken) {
        let table = self.get();
        let Some(source) = source_of(table) else {
            return;
        };
        debug_assert!((0..source.capacity()).all(|j| !source.view(t, j).is_entry()));
        // Release: a reader that sees no source sees every entry that moved. The flag
        // after it: a reader that sees it clear takes the fast path, which never loads
        // `source`.
        table.source.store(std::ptr::null_mut(), Ordering::Release);
        table.clear_migrating(t);
        source.retire_source(t);
    }

    /// Publishes the empty `new` with the current table as its migration source (W6):
    /// the source stays as it is, readers consult both until the migration ends.
    fn install_migrating(&self, mut new: Box<RawTable>) {
        let old = self.current.load(Ordering::Relaxed);
        new.prev.store(old, Ordering::Relaxed);
        new.source.store(old, Ordering::Relaxed);
        new.mark_migrating();
        // Release: a reader that finds `new` also finds its `source` and the source's
        // slots as they were when it stopped taking inserts.
        self.current.store(Box::into_raw(new), Ordering::Release);
    }
}

impl Drop for TableCell {
    fn drop(&mut self) {
        let mut p = self.current.load(Ordering::Acquire);
        while !p.is_null() {
            // SAFETY: every table in the `prev` chain came from `Box::into_raw` (in `new`
            // or `install`), appears in the chain exactly once, and `&mut self` proves no
            // reader holds a borrow (W4).
            let table = unsafe { Box::from_raw(p) };
            p = table.prev.load(Ordering::Acquire);
        }
    }
}

/// A shard's memory as readers see it: the entry table, the term (index) table, and the
/// arena both point into.
pub struct Published {
    /// Key -> entry.
    entries: TableCell,
    /// Index term -> posting list (see `Published::try_read_postings`).
    terms: TableCell,
    /// Arena of atomic words holding every entry's `[head | owner | key | metadata | tail]`
    /// block (`block.rs`) and the posting lists.
    arena: AtomicWords,
    /// [`Loc::short_mask`] for the blocks `read_block` reads as a fixed window with no
    /// bounds check: short ones whose window lies in the arena's reserved range
    /// ([`AtomicWords::window_bits`]); 0 (which no `loc` passes: [`Loc::SHORT`] is not
    /// 0) for a chunked arena. Set with `arena`, and only with it.
    short_mask: u64,
    /// Live entries, stored by the writer after each change.
    pub len: AtomicU64,
    /// Bytes of slot tables (current and retired), stored by the writer (see
    /// [`Published::table_bytes`]).
    table_bytes: AtomicU64,
    /// Whether big tables and the arena go on huge pages (`pages.rs`).
    huge_pages: bool,
    /// One-line copies of short entries, read first (`lines.rs`), if the shard keeps them.
    lines: Option<LineCell>,
}

impl Published {
    /// Makes the published state of shard `shard` with a first entry table of at least
    /// `capacity` slots, and its one writer token.
    #[cfg(test)]
    pub fn new(shard: usize, capacity: usize, arena_base_bits: u32) -> (Published, WriterToken) {
        Self::try_new(shard, capacity, arena_base_bits, false, None).expect("slot table allocation")
    }

    /// [`Published::new`], or `None` if the first entry table cannot be allocated; with a
    /// line cache of at first `capacity` lines if `line_cache` is `Some(high)`, for
    /// two-word keys whose first word's high half is `high`.
    pub fn try_new(
        shard: usize,
        capacity: usize,
        arena_base_bits: u32,
        huge_pages: bool,
        line_cache: Option<u32>,
    ) -> Option<(Published, WriterToken)> {
        let arena = AtomicWords::reserved(ARENA_RESERVE_WORDS, arena_base_bits, huge_pages);
        let p = Published {
            entries: TableCell::new(RawTable::try_with_pages(capacity, huge_pages)?),
            terms: TableCell::new(RawTable::with_capacity(RawTable::MIN_CAPACITY)),
            short_mask: short_mask_of(&arena),
            arena,
            len: AtomicU64::new(0),
            table_bytes: AtomicU64::new(0),
            huge_pages,
            lines: match line_cache {
                Some(high) => Some(LineCell::try_new(capacity, high, huge_pages)?),
                None => None,
            },
        };
        let bytes = p.entries.get().bytes() + p.terms.get().bytes();
        p.table_bytes.store(bytes, Ordering::Relaxed);
        Some((p, WriterToken::new(shard)))
    }

    /// The arena every table's slots point into.
    #[inline]
    pub fn arena(&self) -> &AtomicWords {
        &self.arena
    }

    /// Replaces the arena (tests of its shapes: a short range, chunks).
    #[cfg(test)]
    fn set_arena(&mut self, arena: AtomicWords) {
        self.short_mask = short_mask_of(&arena);
        self.arena = arena;
    }

    /// The current entry table.
    #[inline]
    pub fn table(&self) -> &RawTable {
        self.entries.get()
    }

    fn cell(&self, which: Which) -> &TableCell {
        match which {
            Which::Entries => &self.entries,
            Which::Terms => &self.terms,
        }
    }

    /// The current table `which`.
    #[inline]
    pub fn current(&self, which: Which) -> &RawTable {
        self.cell(which).get()
    }

    /// The migration source of table `which`, while a migration runs (the writer's view;
    /// readers go through [`Published::try_read`] and [`Published::try_read_postings`]).
    pub fn source(&self, t: &WriterToken, which: Which) -> Option<&RawTable> {
        let _ = t;
        source_of(self.current(which))
    }

    /// Table `which` and, while it migrates, its source: every table holding its entries
    /// (each entry in exactly one), for the writer's walks and lookups that move nothing.
    pub fn tables(&self, t: &WriterToken, which: Which) -> impl Iterator<Item = &RawTable> {
        [Some(self.current(which)), self.source(t, which)]
            .into_iter()
            .flatten()
    }

    /// Starts a migration of table `which` into `new` (empty, at least as large as the
    /// current table); see `table.rs`. The writer then calls [`RawTable::migrate`] until
    /// the source is drained, and [`Published::end_migration`].
    pub fn begin_migration(&self, t: &WriterToken, which: Which, new: Box<RawTable>) {
        debug_assert!(self.source(t, which).is_none(), "one migration at a time");
        self.add_bytes(&new);
        self.cell(which).install_migrating(new);
    }

    /// Ends the running migration of table `which`, whose source must hold no entry any
    /// more: readers stop consulting it (W6).
    pub fn end_migration(&self, t: &WriterToken, which: Which) {
        self.cell(which).end_migration(t);
    }

    /// An empty table for a migration to grow into, with at least `capacity` slots, on
    /// huge pages if this shard's are.
    ///
    /// # Panics
    ///
    /// If the memory cannot be had, as `Vec` does.
    pub fn new_table(&self, capacity: usize) -> RawTable {
        RawTable::try_with_pages(capacity, self.huge_pages).expect("slot table allocation")
    }

    /// The current term table.
    #[inline]
    pub fn terms(&self) -> &RawTable {
        self.terms.get()
    }

    fn add_bytes(&self, new: &RawTable) {
        let bytes = self.table_bytes.load(Ordering::Relaxed) + new.bytes();
        self.table_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Publishes `new` as the entry table and retires the old one (W2, W4).
    #[cfg(all(test, not(roster_loom)))]
    pub fn install(&self, t: &WriterToken, new: Box<RawTable>) {
        self.add_bytes(&new);
        self.entries.install(t, new);
    }

    /// One optimistic read of `key` (hash `hash`); metadata is copied into `out` when it
    /// fits. Never blocks, never writes to shared memory. The hot path, written flat:
    /// one table load, one probe, key and metadata from one arena lookup (steps 1-4 of
    /// the module docs).
    #[inline(always)]
    pub fn try_read(&self, hash: u64, key: &[u64], out: &mut [u64]) -> Attempt {
        let t = self.table();
        // One load and one test for both of the slow cases: a section open (the probe
        // would retry) and a migration that may still run (MOVES_MIGRATING, W6).
        match t.quiet_moves() {
            Some(m1) => self.try_read_in(t, m1, hash, key, out),
            None => self.try_read_migrating(t, hash, key, out),
        }
    }

    /// [`Published::try_read`] for callers that inline it into a hot loop, after the line
    /// cache if the shard keeps one (a hit there reads no block: the answer's `block` is
    /// 0, and `out` gets at most five words). While a migration runs it answers
    /// [`Attempt::Retry`] without reading the entry table, so that the caller's fallback
    /// (which calls `try_read`) reads both tables. No call is left on this path, so its
    /// answer stays in registers.
    #[inline(always)]
    pub fn try_read_quick(&self, hash: u64, key: &[u64], out: &mut [u64]) -> Attempt {
        if let Some(read) = self.try_read_line(hash, key, out) {
            return read;
        }
        let t = self.table();
        match t.quiet_moves() {
            Some(m1) => self.try_read_in(t, m1, hash, key, out),
            None => Attempt::Retry,
        }
    }

    /// A hit in the line cache, if the shard keeps one and it holds `key` (`lines.rs`);
    /// `None`: read the slot table.
    #[inline(always)]
    fn try_read_line(&self, hash: u64, key: &[u64], out: &mut [u64]) -> Option<Attempt> {
        let lines = self.lines.as_ref()?;
        let (Ok(&[k0, k1]), Some(out)) = (<&[u64; 2]>::try_from(key), out.first_chunk_mut()) else {
            return None;
        };
        let (owner, meta_words) = lines.get(hash, k0, k1, out)?;
        Some(Attempt::Found {
            owner,
            owner_hint: owner & ((1 << OWNER_HINT_BITS) - 1),
            meta_words,
            // No block was read; callers of `try_read_quick` do not use it.
            block: 0,
        })
    }

    /// The line cache, if the shard keeps one.
    pub(crate) fn lines(&self) -> Option<&LineCell> {
        self.lines.as_ref()
    }

    /// Bytes of the tables that hold memory: slot tables (current and retired) and the
    /// line cache's.
    pub fn table_bytes(&self) -> u64 {
        let lines = self.lines.as_ref().map_or(0, LineCell::bytes);
        self.table_bytes.load(Ordering::Relaxed) + lines
    }

    /// [`Published::try_read`] in `t`, whose `moves` word read `m1` (`Acquire`): even, and
    /// without [`MOVES_MIGRATING`](table::MOVES_MIGRATING), so `t` has no migration source (W6: the flag is cleared
    /// only after `source` is null, with `Release`, and a table gets it only before it is
    /// published).
    #[inline(always)]
    fn try_read_in(
        &self,
        t: &RawTable,
        m1: u64,
        hash: u64,
        key: &[u64],
        out: &mut [u64],
    ) -> Attempt {
        // Inlined always, as `probe` is: as a call it would cost the lookup a dozen
        // instructions and the caller's registers, and LLVM's budget alone does not
        // keep it in line once the lookup is inlined at more than one place.
        let read = self.probe_from(
            t,
            m1,
            hash,
            #[inline(always)]
            |loc| self.read_entry_block(loc, key, out),
        );
        self.current_miss(t, read)
    }

    /// A miss must also be a miss of the current table (R6): `t` may have become a
    /// migration source since it was loaded, its entries moving on.
    #[inline(always)]
    fn current_miss(&self, t: &RawTable, read: Attempt) -> Attempt {
        if matches!(read, Attempt::NotFound) && !std::ptr::eq(self.entries.current(), t) {
            return Attempt::Retry;
        }
        read
    }

    /// [`Published::try_read`] while the current table `t` may take entries over from its
    /// source (R5), or has a section open (the probe answers `Retry`).
    #[cold]
    #[inline(never)]
    fn try_read_migrating(&self, t: &RawTable, hash: u64, key: &[u64], out: &mut [u64]) -> Attempt {
        let found = |loc| self.read_entry_block(loc, key, out);
        let read = self.probe_with_source(t, hash, found);
        self.current_miss(t, read)
    }

    /// A probe of `t`, and of its migration source too while one runs (R5).
    fn probe_with_source(
        &self,
        t: &RawTable,
        hash: u64,
        found: impl FnMut(Loc) -> Option<Attempt>,
    ) -> Attempt {
        match source_of(t) {
            None => self.probe(t, hash, found),
            Some(source) => self.probe_migrating(t, source, hash, found),
        }
    }

    /// A probe of `t` and then of its migration `source` (R5): the source's `moves` is
    /// read first and validated last, so an entry that moved from `source` to `t`
    /// between the two probes makes the miss retry.
    fn probe_migrating(
        &self,
        t: &RawTable,
        source: &RawTable,
        hash: u64,
        mut found: impl FnMut(Loc) -> Option<Attempt>,
    ) -> Attempt {
        let m1 = source.moves.load(Ordering::Acquire);
        if m1 & MOVES_OPEN != 0 {
            return Attempt::Retry;
        }
        match self.probe(t, hash, &mut found) {
            Attempt::NotFound => {}
            other => return other,
        }
        match self.probe(source, hash, &mut found) {
            Attempt::NotFound => {}
            other => return other,
        }
        fence(Ordering::Acquire);
        if source.moves.load(Ordering::Relaxed) != m1 {
            return Attempt::Retry;
        }
        Attempt::NotFound
    }

    /// Prefetches the home slot of `hash` in the entry table: the first step of a batched
    /// read, which overlaps the cache misses of many keys. A hint; reads nothing racy.
    #[inline]
    pub fn prefetch_home(&self, hash: u64, key_words: usize) {
        // A key the line cache may hold is read from its line: its group word is what
        // the next step peeks at.
        if let Some(lines) = self.lines.as_ref().filter(|_| key_words == 2) {
            lines.prefetch_group(hash);
            return;
        }
        let t = self.table();
        // One line: a 16-byte slot never crosses one.
        prefetch(&t.ring().slot(t.home(hash)).word);
    }

    /// The second step of a batched read, once the home slot is cached: peeks (without
    /// validation) at the home slot and the one after it and, for the first whose tag
    /// matches `hash`, prefetches the lines of the fixed window `read_block`'s fast case
    /// reads (the owner word, a two-word key and `FAST_META` words; in a reserved arena
    /// only). Returns the slot's owner hint seen there (the owner's low
    /// [`OWNER_HINT_BITS`] bits), a hint the caller may use to prefetch what it checks
    /// next; the real read ([`Published::try_read`]) validates everything.
    #[inline]
    pub fn prefetch_block(&self, hash: u64) -> Option<u64> {
        // A cached key's read takes its line, not the block.
        if self.lines.as_ref().is_some_and(|l| l.prefetch_line(hash)) {
            return None;
        }
        let loc = self.peek_loc(hash)?;
        // The lines `read_block`'s fast case reads: the owner, a two-word key and
        // `FAST_META` words, 80 bytes. The arena is line-aligned, so they span two lines,
        // or three when the window starts in a line's last word; its first, middle and
        // last words cover them all. Longer blocks get the same lines (their copy costs
        // more than the misses saved). A window past the reserved range (or any in a
        // chunked arena) prefetches nothing.
        let start = loc.offset() + OWNER_WORD as u64;
        if let Some(w) = self
            .arena
            .reserved_array::<{ KEY_AT + 2 + FAST_META }>(start)
        {
            prefetch(&w[0]);
            prefetch(&w[KEY_AT + 2 + FAST_META / 2]);
            prefetch(&w[KEY_AT + 1 + FAST_META]);
        }
        Some(loc.owner_hint())
    }

    /// The `loc` of the first of the home slot of `hash` and the one after it (usually
    /// in the same cache line) whose tag matches, unvalidated.
    #[inline]
    fn peek_loc(&self, hash: u64) -> Option<Loc> {
        let t = self.table();
        let want = tag(hash);
        let ring = t.ring();
        let (slot, w) = ring.head(hash, want, Ordering::Relaxed);
        (w as u32 == want).then(|| Loc(slot.loc.load(Ordering::Relaxed)))
    }

    /// One optimistic read of the posting list of index term `term` into `out` (cleared
    /// first; `None` reads the length only): `Found { meta_words }` gives its length.
    /// The list's layout is `postings.rs`'s: a head block, then its chunks.
    /// While the term table migrates, both tables are read as the entry table's are
    /// (R5, R6): the writer moves a term to the new table before it changes its list.
    pub fn try_read_postings(&self, term: u64, mut out: Option<&mut Vec<u64>>) -> Attempt {
        let t = self.terms();
        let hash = term_hash(term);
        let found = |loc: Loc| {
            let head = self.arena.range(loc.offset(), postings::DIR as u64)?;
            if head[postings::TERM].load(Ordering::Relaxed) != term {
                return None;
            }
            // Every word here is racy: a stale `loc` into a reused block can make any of
            // them any value, so each is bounds-checked, without overflow (R4). A list
            // cannot hold more postings than the arena has halves of words.
            let len = head[postings::LEN].load(Ordering::Relaxed);
            if len > self.arena.capacity().saturating_mul(2) {
                return None;
            }
            let chunks = postings::chunks_for(len)?;
            let dir = self
                .arena
                .range(loc.offset() + postings::DIR as u64, chunks as u64)?;
            if let Some(out) = out.as_deref_mut() {
                out.clear();
                for (k, c) in dir.iter().enumerate() {
                    let n = (len - postings::chunk_start(k)).min(postings::chunk_len(k) as u64);
                    let words = self.arena.range(c.load(Ordering::Relaxed), n.div_ceil(2))?;
                    for (i, w) in words.iter().enumerate() {
                        let w = w.load(Ordering::Relaxed);
                        out.push(postings::half(w, 0));
                        if 2 * i as u64 + 1 < n {
                            out.push(postings::half(w, 1));
                        }
                    }
                }
            }
            Some(Attempt::Found {
                owner: 0,
                owner_hint: 0,
                meta_words: len as usize,
                block: loc.offset(),
            })
        };
        let read = self.probe_with_source(t, hash, found);
        // R6: a miss must also be one of the current term table.
        if read == Attempt::NotFound && !std::ptr::eq(self.terms.current(), t) {
            return Attempt::Retry;
        }
        read
    }

    /// Probes `t` for `hash` under the seqlock protocol. `matched` reads the candidate
    /// slot's block (`Relaxed` loads only, any `loc` tolerated) and says whether it is the
    /// one; its answer counts only if the slot validates afterwards. Always inlined, and
    /// callers mark their `matched` closure `#[inline(always)]` as well (LLVM's budget
    /// may outline a closure once the lookup is inlined at several places): the lookup
    /// path pays no call.
    #[inline(always)]
    fn probe(
        &self,
        t: &RawTable,
        hash: u64,
        matched: impl FnMut(Loc) -> Option<Attempt>,
    ) -> Attempt {
        let m1 = t.moves.load(Ordering::Acquire);
        if m1 & MOVES_OPEN != 0 {
            return Attempt::Retry;
        }
        self.probe_from(t, m1, hash, matched)
    }

    /// [`Published::probe`] after its first load of `t.moves`, which read `m1` (`Acquire`,
    /// with no section open).
    #[inline(always)]
    fn probe_from(
        &self,
        t: &RawTable,
        m1: u64,
        hash: u64,
        mut matched: impl FnMut(Loc) -> Option<Attempt>,
    ) -> Attempt {
        debug_assert!(m1 & MOVES_OPEN == 0);
        let want = tag(hash);
        // The table's fields are loaded again after each `Acquire` load below (it orders
        // later loads after it); in registers instead, they cost more spills than the
        // 1.3 slots a hit probes reload.
        let home = t.home(hash);
        // The head first (`Ring::head`): the home slot or the one after it, picked
        // without a branch. A branch on "is it at home" mispredicts on every hit that is
        // not, and in a loop of lookups each mispredict throws away the next lookups'
        // work in flight: 10k cached keys are looked up 8-20% faster this way, though a
        // hit runs 7 instructions more. The slot not chosen is only read, as a probe's
        // passed slots are (R3).
        let (slot, w1) = t.ring().head(hash, want, Ordering::Acquire);
        if w1 as u32 == want {
            if let Some(read) = read_slot(slot, w1, &mut matched) {
                return read;
            }
        }
        // Everything else (a miss, a hit two or more slots on, a tag whose key differed)
        // probes from home one slot at a time, the head's slots again included.
        let mut i = home;
        // Slots after this one the probe may still pass: it passes each at most once,
        // so it ends even if it never met an empty slot (a torn view of a full table).
        let mut left = t.capacity() - 1;
        loop {
            let slot = t.ring().slot(i);
            // `seq:32 | tag:32`, one load (see `table.rs`).
            let w1 = slot.word.load(Ordering::Acquire);
            let h = w1 as u32;
            if h == want {
                if let Some(read) = read_slot(slot, w1, &mut matched) {
                    return read;
                }
            } else if h == 0 {
                break;
            }
            if left == 0 {
                break;
            }
            left -= 1;
            i = t.next(i);
        }
        fence(Ordering::Acquire);
        if t.moves.load(Ordering::Relaxed) != m1 {
            return Attempt::Retry;
        }
        Attempt::NotFound
    }

    /// A probe's `matched` for the entry table: [`Published::read_block`] as an
    /// [`Attempt::Found`].
    #[inline(always)]
    fn read_entry_block(&self, loc: Loc, key: &[u64], out: &mut [u64]) -> Option<Attempt> {
        let (owner, meta_words) = self.read_block(loc, key, out)?;
        Some(Attempt::Found {
            owner,
            owner_hint: loc.owner_hint(),
            meta_words,
            block: loc.offset(),
        })
    }

    /// Compares the block's key with `key` and, on a match, copies its metadata into `out`
    /// if it fits and answers its owner word and its length in words. Any `loc` is
    /// answered (torn ones are out of range or mismatch).
    #[inline(always)]
    fn read_block(&self, loc: Loc, key: &[u64], out: &mut [u64]) -> Option<(u64, usize)> {
        // Owner, key and metadata in one arena lookup; the head word is read only for a
        // block that `loc` does not mark short, for its lengths.
        let start = loc.offset() + OWNER_WORD as u64;
        // The common shape, a two-word key (integer names, string names of up to 8 bytes)
        // with short metadata, is one compare of `loc` and then arrays: every index is a
        // constant, so nothing is bounds-checked, and the metadata is copied as a fixed
        // `FAST_META` words with no loop. The words past it are the block's own tail or
        // its neighbour's atomics, harmless to read; the caller uses only the first `mw`.
        if let (Ok(key), Some(out)) = (
            <&[u64; 2]>::try_from(key),
            out.first_chunk_mut::<FAST_META>(),
        ) {
            // Not near the arena's end, nor in a chunked arena: those are read exactly.
            // One mask checks the block's shape and that its window is in range.
            if loc.0 & self.short_mask == Loc::SHORT {
                // SAFETY: `short_mask` is `Loc::short_mask(b)` for the arena's
                // `window_bits()` of `Some(b)` (`short_mask_of`; it changes only with
                // `arena`), and `loc` passed it, so `offset < 2^b` and
                // `start = offset + OWNER_WORD = offset + 1 <= 2^b` (`OWNER_WORD` is 1,
                // asserted at `KEY_AT`), as `window` asks.
                let words = unsafe { self.arena.window::<{ KEY_AT + 2 + FAST_META }>(start) };
                if words[KEY_AT].load(Ordering::Relaxed) != key[0]
                    || words[KEY_AT + 1].load(Ordering::Relaxed) != key[1]
                {
                    return None;
                }
                for (o, m) in out.iter_mut().zip(&words[KEY_AT + 2..]) {
                    *o = m.load(Ordering::Relaxed);
                }
                // `loc.short_meta_words()`, at most `FAST_META`: written so, the
                // caller's "does it fit" test folds away on this path.
                let owner = words[0].load(Ordering::Relaxed);
                return Some((owner, loc.short_meta_words()));
            }
        }
        // Keys of 3 and 4 words (string names of 9 to 24 bytes): arrays too, once the
        // head word has given the lengths.
        if let Some(out) = out.first_chunk_mut::<FAST_META>() {
            let fixed = match key.len() {
                3 => self.read_fixed::<3, { KEY_AT + 3 + FAST_META }>(loc, key, out),
                4 => self.read_fixed::<4, { KEY_AT + 4 + FAST_META }>(loc, key, out),
                _ => None,
            };
            if let Some(read) = fixed {
                return read;
            }
        }
        // Any other block's lengths are in its head word (`block.rs`), racy like the
        // rest: garbage lengths are out of range or mismatch (R4).
        let head = BlockHead::unpack(self.arena.get(loc.offset())?.load(Ordering::Relaxed));
        let (kw, mw) = (head.key_words, head.meta_words);
        if kw != key.len() {
            return None;
        }
        let words = self.arena.range(start, (KEY_AT + kw + mw) as u64)?;
        let (owner, words) = words.split_first()?;
        let (stored, meta) = words.split_at(kw);
        if !key_eq(stored, key) {
            return None;
        }
        if let Some(out) = out.get_mut(..mw) {
            for (o, m) in out.iter_mut().zip(meta) {
                *o = m.load(Ordering::Relaxed);
            }
        }
        Some((owner.load(Ordering::Relaxed), mw))
    }
}

impl Published {
    /// [`Published::read_block`] of an `N`-word key (`key.len()` is `N`) whose block has
    /// at most `FAST_META` metadata words (its head word says, racy like the rest): the
    /// owner, the key and `FAST_META` words as one array of `W` (`KEY_AT + N +
    /// FAST_META`) words in the reserved range, compared and copied with no loop and no
    /// bounds check past the one of `reserved_array`. The words past the metadata are
    /// the block's own tail or its neighbour's atomics, harmless to read. `Some(None)`:
    /// not this key; `Some(Some(..))`: as `read_block`; `None`: not this shape (more
    /// metadata, or a window past the reserved range), for the exact read.
    #[inline(always)]
    fn read_fixed<const N: usize, const W: usize>(
        &self,
        loc: Loc,
        key: &[u64],
        out: &mut [u64; FAST_META],
    ) -> Option<Option<(u64, usize)>> {
        const { assert!(W == KEY_AT + N + FAST_META) };
        let key = <&[u64; N]>::try_from(key).ok()?;
        let head = BlockHead::unpack(self.arena.get(loc.offset())?.load(Ordering::Relaxed));
        if head.key_words != N {
            return Some(None);
        }
        let mw = head.meta_words;
        if mw > FAST_META {
            return None;
        }
        let words = self
            .arena
            .reserved_array::<W>(loc.offset() + OWNER_WORD as u64)?;
        let (owner, rest) = words.split_first()?;
        let (stored, meta) = rest.split_at(N);
        if stored
            .iter()
            .zip(key)
            .any(|(s, k)| s.load(Ordering::Relaxed) != *k)
        {
            return Some(None);
        }
        for (o, m) in out.iter_mut().zip(meta) {
            *o = m.load(Ordering::Relaxed);
        }
        Some(Some((owner.load(Ordering::Relaxed), mw)))
    }
}

/// The read of a probe's slot whose word `w1` (loaded `Acquire`) holds the wanted tag:
/// `matched` on its `loc`, then the slot's validation (`fence(Acquire)`, the word
/// reloaded). `Some(Retry)` if `seq` was odd or changed, `Some` of `matched`'s answer if
/// it had one, `None` (the key differed: probe on) otherwise. Only a slot whose payload
/// is used needs a stable `seq`; one the probe passes or stops at is covered by the
/// miss validation (R3).
#[inline(always)]
fn read_slot(
    slot: &Slot,
    w1: u64,
    matched: &mut impl FnMut(Loc) -> Option<Attempt>,
) -> Option<Attempt> {
    if w1 & SEQ_ONE != 0 {
        return Some(Attempt::Retry);
    }
    let loc = Loc(slot.loc.load(Ordering::Relaxed));
    let found = matched(loc);
    fence(Ordering::Acquire);
    if slot.word.load(Ordering::Relaxed) != w1 {
        return Some(Attempt::Retry);
    }
    found
}

/// [`Published`]'s `short_mask` for `arena`: short blocks whose head word lies below the
/// arena's window bound `2^b`, so the window just after it (from the owner word, see
/// [`KEY_AT`]) starts at most at `2^b`; 0 (no block) for an arena with no reserved range.
fn short_mask_of(arena: &AtomicWords) -> u64 {
    match arena.window_bits() {
        Some(b) => Loc::short_mask(b),
        None => 0,
    }
}

/// Metadata words a hit copies as a fixed block (see `Published::read_block`): one less
/// than a power of two, so that [`Loc::short_mask`] is one mask.
const FAST_META: usize = Loc::SHORT_META;

/// Where the key starts in the run of block words a reader reads, which begins at the
/// owner word: the owner is the word just before the key, and the first word after the
/// head (the fast path's window bound and `read_block`'s `split_first` rely on both).
const KEY_AT: usize = HEADER_WORDS - OWNER_WORD;
const _: () = assert!(OWNER_WORD == 1 && KEY_AT == 1);

/// Whether the stored key words equal `key` (of the same length): two-word keys (integer
/// names, short string names) compare without a loop.
#[inline(always)]
fn key_eq(stored: &[AtomicU64], key: &[u64]) -> bool {
    if let ([s0, s1], [k0, k1]) = (stored, key) {
        return s0.load(Ordering::Relaxed) == *k0 && s1.load(Ordering::Relaxed) == *k1;
    }
    stored
        .iter()
        .zip(key)
        .all(|(s, k)| s.load(Ordering::Relaxed) == *k)
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    /// Writes an entry into slot `i` of the current table with its block at `off`.
    fn put(
        p: &Published,
        t: &WriterToken,
        i: usize,
        hash: u64,
        key: &[u64],
        meta: &[u64],
        off: u64,
    ) {
        let loc = Loc::new(off, key.len(), meta.len(), 9);
        let words = (HEADER_WORDS + key.len() + meta.len()) as u64;
        p.arena.ensure(off + words);
        let block = p.arena.range(off, words).unwrap();
        let v = SlotView {
            tag: tag(hash),
            loc,
        };
        let head = BlockHead {
            tag: tag(hash),
            terms: 0,
            key_words: key.len(),
            meta_words: meta.len(),
        };
        p.table().write(t, i, v, || {
            block[0].store(head.pack(), Ordering::Relaxed);
            block[OWNER_WORD].store(9, Ordering::Relaxed);
            for (w, x) in block[HEADER_WORDS..].iter().zip(key.iter().chain(meta)) {
                w.store(*x, Ordering::Relaxed);
            }
        });
    }

    /// A shard whose arena is a reserved range of 64 words, all usable; `None` under
    /// Miri, which reserves no range (the arena then falls back to chunks).
    fn reserved_64() -> Option<(Published, WriterToken)> {
        let (mut p, t) = Published::new(0, 8, 4);
        p.set_arena(AtomicWords::reserved(64, 2, false));
        assert!(
            p.arena.is_reserved() || cfg!(miri),
            "a 64-word range is reserved"
        );
        if !p.arena.is_reserved() {
            return None;
        }
        assert!(p.arena.ensure(64));
        Some((p, t))
    }

    #[test]
    fn read_finds_written_entry_and_copies_metadata() {
        let (p, t) = Published::new(0, 8, 4);
        let hash = 0xdead_beef_0000_0000;
        let i = p.table().home(hash);
        put(&p, &t, i, hash, &[1, 2], &[10, 20, 30], 0);
        let mut out = [0u64; 4];
        assert_eq!(
            p.try_read(hash, &[1, 2], &mut out),
            Attempt::Found {
                owner: 9,
                owner_hint: 9,
                meta_words: 3,
                block: 0
            }
        );
        assert_eq!(&out[..3], &[10, 20, 30]);
        // Same hash, other key: a miss. Other hash: a miss.
        assert_eq!(p.try_read(hash, &[1, 3], &mut out), Attempt::NotFound);
        assert_eq!(p.try_read(0, &[1, 2], &mut out), Attempt::NotFound);
    }

    #[test]
    fn small_buffer_reports_length_without_copying() {
        let (p, t) = Published::new(0, 8, 4);
        put(&p, &t, 0, 5, &[7], &[1, 2, 3, 4, 5], 0);
        let mut out = [0u64; 2];
        assert_eq!(
            p.try_read(5, &[7], &mut out),
            Attempt::Found {
                owner: 9,
                owner_hint: 9,
                meta_words: 5,
                block: 0
            }
        );
        assert_eq!(out, [0, 0]);
    }

    /// Short metadata of a two-word key is copied as a fixed `FAST_META` words where
    /// `out` and the reserved arena have the room (the words past the metadata are the
    /// caller's to ignore, `AtomicWords::reserved_array`), and exactly where the block
    /// ends the range, the arena is chunked, `out` is shorter or the key is not two words.
    #[test]
    fn short_metadata_copies_a_fixed_block_only_where_there_is_room() {
        let meta = [10, 20, 30, 40, 50];
        let read = |p: &Published, hash, key: &[u64], out: &mut [u64]| {
            assert!(matches!(
                p.try_read(hash, key, out),
                Attempt::Found { meta_words: 5, .. }
            ));
        };
        for key_words in 1..=4 {
            let key = |k: u64| [k, k * 10, k * 100, k * 1000][..key_words].to_vec();
            // A reserved arena of 64 words: a key of two to four words gets `FAST_META`
            // (7) words where they fit, the two past the block read as the zeroes they
            // are; a one-word key gets the exact copy. (Under Miri only the chunked half
            // below runs.)
            if let Some((p, t)) = reserved_64() {
                put(&p, &t, 0, 5, &key(7), &meta, 20);
                let mut out = [u64::MAX; 8];
                read(&p, 5, &key(7), &mut out);
                let tail = if key_words >= 2 { 0 } else { u64::MAX };
                assert_eq!(out, [10, 20, 30, 40, 50, tail, tail, u64::MAX]);
                // A buffer too short for the fixed block gets the exact copy.
                let mut out = [u64::MAX; 6];
                read(&p, 5, &key(7), &mut out);
                assert_eq!(out, [10, 20, 30, 40, 50, u64::MAX]);
                // A wrong key copies nothing, nor does a key one word longer whose
                // first words are the stored key's.
                let mut out = [u64::MAX; 8];
                assert_eq!(p.try_read(5, &key(9), &mut out), Attempt::NotFound);
                let longer = [7, 70, 700, 7000, 70000];
                assert_eq!(
                    p.try_read(5, &longer[..=key_words], &mut out),
                    Attempt::NotFound
                );
                assert_eq!(out, [u64::MAX; 8]);
                // A block ending at the range's end: the fixed words would cross it.
                let end = 64 - (HEADER_WORDS + key_words + meta.len()) as u64;
                put(&p, &t, 1, 6, &key(8), &meta, end);
                let mut out = [u64::MAX; 8];
                read(&p, 6, &key(8), &mut out);
                assert_eq!(out, [10, 20, 30, 40, 50, u64::MAX, u64::MAX, u64::MAX]);
            }

            // A chunked arena (chunks of 4, 8, 16 and 32 words, at 0, 4, 12 and 28): every
            // read is exact, at a chunk's end too.
            let (mut p, t) = Published::new(0, 8, 4);
            p.set_arena(AtomicWords::new(2));
            let fill_end = 28 - (HEADER_WORDS + key_words + meta.len()) as u64;
            put(&p, &t, 0, 5, &key(7), &meta, fill_end);
            put(&p, &t, 1, 6, &key(8), &meta, 28);
            for hash in [5, 6] {
                let mut out = [u64::MAX; 8];
                let k = key(hash + 2);
                read(&p, hash, &k, &mut out);
                assert_eq!(out, [10, 20, 30, 40, 50, u64::MAX, u64::MAX, u64::MAX]);
            }
        }
    }

    #[test]
    fn prefetch_block_peeks_at_a_tag_at_its_home_or_one_past() {
        // Hashes below 2^61 all have home 0 in an 8-slot table; tags are the high halves
        // (| 1), so these three differ.
        let (at_home, one_past, neither) = (2 << 32, 4 << 32, 8 << 32);
        let check = |p: &Published, t: &WriterToken, first: u64, end: u64| {
            put(p, t, 0, at_home, &[7, 70], &[1, 2, 3], first);
            put(p, t, 1, one_past, &[8, 80], &[1, 2, 3], end);
            assert_eq!(
                p.peek_loc(at_home).map(Loc::offset),
                Some(first),
                "at its home"
            );
            assert_eq!(p.peek_loc(one_past).map(Loc::offset), Some(end), "one past");
            assert_eq!(p.peek_loc(neither), None, "a tag in neither slot");
            // Hints only: each is safe to ask, whatever the slot names, and gives the
            // slot's owner hint (`put` writes owner 9).
            assert_eq!(p.prefetch_block(at_home), Some(9));
            assert_eq!(p.prefetch_block(one_past), Some(9));
            assert_eq!(p.prefetch_block(neither), None);
        };
        // A reserved range whose second block ends at its end: the fixed window would
        // cross it, so nothing is prefetched there.
        if let Some((p, t)) = reserved_64() {
            check(&p, &t, 0, 64 - 7);
        }
        // A chunked arena (chunks of 4, 8, 16 and 32 words, at 0, 4, 12 and 28)
        // prefetches no block.
        let (mut p, t) = Published::new(0, 8, 4);
        p.set_arena(AtomicWords::new(2));
        check(&p, &t, 4, 28);
    }

    /// The one metadata word of `key`'s entry, or `None` for a miss; any other answer
    /// fails the test.
    fn read_one_word(p: &Published, hash: u64, key: &[u64]) -> Option<u64> {
        let mut out = [0u64; 8];
        match p.try_read(hash, key, &mut out) {
            Attempt::Found { meta_words: 1, .. } => Some(out[0]),
            Attempt::NotFound => None,
            other => panic!("{key:?}: {other:?}"),
        }
    }

    /// The probe's head (home and the slot after it, chosen without a branch) and the
    /// loop it falls back to: hits at home, one past (behind another tag, and behind the
    /// same tag with another key), two past and across the table's end; and misses of a
    /// key whose tag is in both head slots, and of one whose home is empty while the slot
    /// after it is not.
    #[test]
    fn the_probe_head_and_its_fallback_find_every_slot() {
        let (p, t) = Published::new(0, 8, 4);
        let cap = p.table().capacity() as u64;
        // Home `h` of a table of `cap` slots: the hash's top bits; the low bits tell the
        // hashes (and, through the tag, the high half) apart.
        let at = |h: u64, low: u64| h << (64 - cap.trailing_zeros()) | low << 32;
        let same = at(2, 1);
        put(&p, &t, 2, same, &[1, 1], &[11], 0);
        put(&p, &t, 3, same, &[1, 2], &[12], 8);
        put(&p, &t, 4, same, &[1, 3], &[13], 16);
        // Home is the last slot; one past wraps to slot 0.
        let last = at(cap - 1, 2);
        put(&p, &t, cap as usize - 1, last, &[2, 1], &[21], 24);
        put(&p, &t, 0, last, &[2, 2], &[22], 32);
        let read = |hash, key: &[u64]| read_one_word(&p, hash, key);
        assert_eq!(read(same, &[1, 1]), Some(11), "at home");
        assert_eq!(
            read(same, &[1, 2]),
            Some(12),
            "one past, behind the same tag"
        );
        assert_eq!(read(same, &[1, 3]), Some(13), "two past");
        assert_eq!(read(same, &[1, 4]), None, "the tag in both head slots");
        assert_eq!(read(last, &[2, 1]), Some(21), "at the last slot");
        assert_eq!(read(last, &[2, 2]), Some(22), "one past, wrapped");
        assert_eq!(read(last, &[2, 3]), None);
        // Home 5 is empty; slot 6 holds an entry of home 6 (another tag): a miss.
        put(&p, &t, 6, at(6, 3), &[3, 1], &[31], 40);
        assert_eq!(read(at(5, 3), &[3, 1]), None, "an empty home");
        assert_eq!(read(at(6, 3), &[3, 1]), Some(31));
        // A key one past home behind another tag of the same home (the head's second
        // slot, chosen and validated there; a wrong choice would fail its validation and
        // answer `Retry`), and the same across the table's end.
        let (p, t) = Published::new(0, 8, 4);
        put(&p, &t, 2, at(2, 1), &[5, 1], &[51], 0);
        put(&p, &t, 3, at(2, 4), &[5, 2], &[52], 8);
        put(&p, &t, cap as usize - 1, at(cap - 1, 1), &[6, 1], &[61], 16);
        put(&p, &t, 0, at(cap - 1, 4), &[6, 2], &[62], 24);
        let read = |hash, key: &[u64]| read_one_word(&p, hash, key);
        assert_eq!(
            read(at(2, 4), &[5, 2]),
            Some(52),
            "one past, another tag at home"
        );
        assert_eq!(read(at(2, 1), &[5, 1]), Some(51));
        assert_eq!(read(at(cap - 1, 4), &[6, 2]), Some(62), "one past, wrapped");
        assert_eq!(read(at(2, 5), &[5, 3]), None, "a third tag of the home");
    }

    #[test]
    fn odd_seq_or_moves_forces_retry() {
        let (p, t) = Published::new(0, 8, 4);
        put(&p, &t, 0, 5, &[7], &[1], 0);
        p.table().begin_moves(&t);
        assert_eq!(p.try_read(5, &[8], &mut []), Attempt::Retry);
        p.table().end_moves(&t);
        assert_eq!(p.try_read(5, &[8], &mut []), Attempt::NotFound);
        let w = p.table().slots[0].word.load(Ordering::Relaxed);
        p.table().slots[0]
            .word
            .store(w | SEQ_ONE, Ordering::Relaxed);
        assert_eq!(p.try_read(5, &[7], &mut []), Attempt::Retry);
    }

    #[test]
    fn install_retires_the_old_table_and_readers_follow() {
        let (p, t) = Published::new(0, 8, 4);
        put(&p, &t, 0, 5, &[7], &[1], 0);
        let old: *const RawTable = p.table();
        p.install(&t, Box::new(RawTable::with_capacity(16)));
        assert!(!std::ptr::eq(old, p.table()));
        assert_eq!(p.table().capacity(), 16);
        // The new table is empty, so the key is gone; the old one is retired, not freed.
        assert_eq!(p.try_read(5, &[7], &mut []), Attempt::NotFound);
        // Entry tables of 8 and 16 slots, and the first term table, each with its guard.
        assert_eq!(
            p.table_bytes(),
            (8 + 16 + RawTable::MIN_CAPACITY as u64 + 3) * SLOT_BYTES
        );
    }

    /// R4: a term block whose length word is garbage (a stale `loc` into a reused
    /// block) is answered, never a panic, also with overflow checks on.
    #[test]
    fn garbage_posting_length_is_answered_not_trusted() {
        let (p, t) = Published::new(0, 8, 4);
        let term = 77;
        let home = p.terms().home(term_hash(term));
        p.arena.ensure(64);
        let block = p.arena.range(0, 8).unwrap();
        let v = SlotView {
            tag: tag(term_hash(term)),
            loc: Loc::new(0, 1, 1, 0),
        };
        p.terms().write(&t, home, v, || {
            block[postings::TERM].store(term, Ordering::Relaxed);
            block[postings::LEN].store(u64::MAX, Ordering::Relaxed);
        });
        let mut out = Vec::new();
        assert_eq!(p.try_read_postings(term, Some(&mut out)), Attempt::NotFound);
        block[postings::LEN].store(u64::MAX - 1, Ordering::Relaxed);
        assert_eq!(p.try_read_postings(term, None), Attempt::NotFound);
    }

    /// R4 for the lengths a read of a block that is not short takes from its head word:
    /// garbage there (a stale `loc` into a reused block) is answered, never trusted.
    #[test]
    fn garbage_block_head_is_answered_not_trusted() {
        let (p, t) = Published::new(0, 8, 4);
        put(&p, &t, 0, 5, &[7], &[1, 2, 3], 0);
        let mut out = [0u64; 4];
        assert!(matches!(
            p.try_read(5, &[7], &mut out),
            Attempt::Found { .. }
        ));
        let head = p.arena.get(0).unwrap();
        // Every length at its largest: the key length mismatches.
        head.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(p.try_read(5, &[7], &mut out), Attempt::NotFound);
        // The right key length with the most metadata a head can name: answered from the
        // range (a miss where it passes the arena's end, else a length the caller's
        // buffer does not fit, so nothing is copied), never a panic.
        let bh = BlockHead {
            tag: tag(5),
            terms: 0,
            key_words: 1,
            meta_words: MAX_META_WORDS,
        };
        head.store(bh.pack(), Ordering::Relaxed);
        out = [u64::MAX; 4];
        let read = p.try_read(5, &[7], &mut out);
        assert!(
            matches!(
                read,
                Attempt::NotFound
                    | Attempt::Found {
                        meta_words: MAX_META_WORDS,
                        ..
                    }
            ),
            "{read:?}"
        );
        assert_eq!(out, [u64::MAX; 4]);
    }

    #[test]
    fn torn_loc_is_answered_not_trusted() {
        let (p, t) = Published::new(0, 8, 4);
        // A slot whose loc points far outside the arena: the read must not fault.
        let v = SlotView {
            tag: tag(5),
            loc: Loc::new((1 << 32) - 1, 1, 1, 0),
        };
        p.table().write(&t, 0, v, || {});
        assert_eq!(p.try_read(5, &[7], &mut [0; 1]), Attempt::NotFound);
    }
}
