//! The slot table: an open-addressing array of 2-word slots, linear probing, backward-shift
//! deletion (no tombstones), and the writer's half of the seqlock protocol.
//!
//! Slot layout (16 bytes, four slots to a cache line, none across two):
//!
//! ```text
//! +------------+------------+-----------------------------------------------+
//! | seq:32     | tag:32     |                      loc                      |
//! +------------+------------+-----------------------------------------------+
//!  even=stable  0 = empty,    offset:32 | owner_hint:28 | short:1 | meta:3
//!  odd=writing  2 = moved,    (block in the shard's arena; see [`Loc`])
//!               else the hash's
//!               high half | 1
//! ```
//!
//! The entry's owner word lives in its block ([`OWNER_WORD`]), read with the key in the
//! block's lines; the slot keeps only its low bits, as a hint that lets a reader fetch
//! the owner's state beside the block instead of after it. A slot of two words instead
//! of three makes the table a third smaller, and a probe's slots never straddle two cache
//! lines.
//!
//! The sequence number and the tag share one word, so a probe loads one word per slot
//! passed, and a reader's validation compares the tag too. The tag is the hash's high 32
//! bits, which hold the home slot's bits for any table of at most 2^31 slots
//! ([`RawTable::MAX_CAPACITY`]), so the writer finds an entry's home from its tag alone.
//! Sequence numbers wrap after 2^31 writes of one slot: a reader stalled between its two
//! loads of a slot for that many writes of it (minutes of the writer doing nothing else)
//! could take a changed slot for an unchanged one; like the Linux kernel's 32-bit seqcounts,
//! the protocol assumes no reader does.
//!
//! Probe invariant (T1): for every entry at slot `j` with home `h`, no slot in `[h, j)`
//! (cyclically) is empty. Inserts take the first empty slot of the probe; deletes close the
//! gap by shifting later entries of the cluster back. So a reader that meets an empty slot
//! may stop: its key is not further on, unless a shift is running, which `moves` reveals.
//!
//! Migration (growth without a stall): a full table becomes the *source* of a table twice
//! its size, which is published at once and empty. The writer moves the source's entries
//! over a few slots at a time ([`RawTable::migrate`]), and any entry a write touches at
//! once ([`RawTable::migrate_slot`]); a moved entry's source slot becomes [`MOVED`], never
//! empty, so T1 keeps holding in the source, which gets no other change. Blocks do not
//! move: the new slot points at the same arena block. See `raw`'s docs for the readers.

use std::cell::Cell;
use std::marker::PhantomData;

use super::pages::{Zeroable, Zeroed};
use crate::sync::{fence, AtomicPtr, AtomicU64, Ordering};

/// Words at the start of every entry block, before the key: the head word (`block.rs`'s
/// `BlockHead` packs it; readers read its lengths, in the validated section, for a block
/// that is not short, and `Shard::read_posting` reads it as an unvalidated hint) and the
/// owner word ([`OWNER_WORD`]).
pub const HEADER_WORDS: usize = 2;
/// The block word holding the entry's owner (opaque to the shard; the engine stores a
/// pid), just before the key, so a reader reads it in the run of words it reads anyway.
pub const OWNER_WORD: usize = 1;
/// Largest key, in words.
pub const MAX_KEY_WORDS: usize = (1 << 8) - 1;

/// Largest metadata, in words (15 bits: the entry block's head word holds it beside the
/// tag).
pub const MAX_META_WORDS: usize = (1 << 15) - 1;

/// The loads, in percent of a table's slots, a shard may grow its tables at
/// ([`ShardConfig::max_load`](crate::ShardConfig::max_load)). At 90 the smallest table
/// still keeps a slot empty. From 25 up, a migration, which moves 8 source slots per
/// insert, ends with room to spare before its new table (twice the size, at half the
/// load) must grow in turn (not under loom, which moves 1 a step: there a model's
/// `grow` may finish a migration first).
pub const MAX_LOAD_RANGE: std::ops::RangeInclusive<u8> = 25..=90;

/// The default of [`ShardConfig::max_load`](crate::ShardConfig::max_load).
pub const DEFAULT_MAX_LOAD: u8 = 75;

/// Tables of at most this many slots (1 MiB) grow at [`SMALL_TABLE_LOAD`] at most.
/// Under loom none is small, so the models' 4-slot tables grow at 3/4 as they are
/// written for: when a table grows never changes how it grows (W6).
pub const SMALL_TABLE_SLOTS: usize = if cfg!(roster_loom) { 0 } else { 1 << 16 };

/// The most a small table is loaded before it grows, in percent. Small tables stay in
/// cache, where a lookup's cost is its probe: at half the load a hit probes fewer slots
/// and mispredicts less (10k keys were looked up 17-25% faster at a load of 0.31 than
/// at 0.61 on a 2-core guest, batches 29-44%), and the slots this costs are at most
/// 1 MiB a table. Big tables miss the cache anyway, and there twice the slots only add
/// to the misses.
pub const SMALL_TABLE_LOAD: u8 = 50;

/// Most entries a table of `capacity` slots takes before the writer grows it: `max_load`
/// percent of them (at most [`SMALL_TABLE_LOAD`] for a table of up to
/// [`SMALL_TABLE_SLOTS`]). At most [`MAX_LOAD_RANGE`]'s end, so a slot stays empty.
pub fn max_len_of(capacity: usize, max_load: u8) -> usize {
    debug_assert!(MAX_LOAD_RANGE.contains(&max_load));
    let load = if capacity <= SMALL_TABLE_SLOTS {
        max_load.min(SMALL_TABLE_LOAD)
    } else {
        max_load
    };
    // In u128: `capacity` may be any `usize` here.
    (capacity as u128 * u128::from(load) / 100) as usize
}

/// The slots of the smallest table (a power of two, at least [`RawTable::MIN_CAPACITY`])
/// that takes `entries` before it must grow at `max_load`; `None` if none fits a `usize`.
pub fn slots_for(entries: usize, max_load: u8) -> Option<usize> {
    let mut slots = RawTable::MIN_CAPACITY;
    while max_len_of(slots, max_load) < entries {
        slots = slots.checked_mul(2)?;
    }
    Some(slots)
}

/// Where an entry's block lives in the arena, its owner's hint and, for a short block,
/// its shape. Packed as `offset:32 | owner_hint:28 | short:1 | meta_words:3` in the
/// slot's `loc` word:
/// - `offset`: the block's first (head) word in the arena (arena offsets fit 32 bits,
///   `postings::MAX_ARENA_WORDS`);
/// - `owner_hint`: the owner word's low [`OWNER_HINT_BITS`] bits, so that a reader can
///   fetch what it keys by the owner (the engine: the process's state word) as soon as it
///   has the slot, beside the block's words instead of after them;
/// - `short`: the block has a two-word key and at most [`Loc::SHORT_META`] metadata
///   words, `meta_words` of them. Other blocks keep both bits 0, and their lengths are in
///   the block's head word only (`block.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc(pub u64);

/// Bits of the owner word a slot keeps as its hint (its low bits; see `Loc::owner_hint`):
/// a reader gets them from the slot, before the block's words, as
/// `Attempt::Found::owner_hint`.
pub const OWNER_HINT_BITS: u32 = 28;

impl Loc {
    const HINT_MASK: u64 = (1 << OWNER_HINT_BITS) - 1;
    const SHORT_BIT: u64 = 1 << 3;

    /// Packs a location; the writer checks the limits before calling.
    pub fn new(offset: u64, key_words: usize, meta_words: usize, owner: u64) -> Loc {
        debug_assert!(offset < 1 << 32 && key_words <= MAX_KEY_WORDS);
        debug_assert!(meta_words <= MAX_META_WORDS);
        let shape = if key_words == 2 && meta_words <= Loc::SHORT_META {
            Loc::SHORT_BIT | meta_words as u64
        } else {
            0
        };
        Loc(offset << 32 | (owner & Loc::HINT_MASK) << 4 | shape)
    }

    /// Arena offset of the block's first (head) word.
    #[inline]
    pub fn offset(self) -> u64 {
        self.0 >> 32
    }

    /// The owner word's low [`OWNER_HINT_BITS`] bits.
    #[inline]
    pub fn owner_hint(self) -> u64 {
        (self.0 >> 4) & Loc::HINT_MASK
    }

    /// A short block's metadata length (0 for any other block).
    #[inline]
    pub fn short_meta_words(self) -> usize {
        self.0 as usize & Loc::SHORT_META
    }

    /// At most this many metadata words make a short entry ([`Loc::short_mask`]).
    pub const SHORT_META: usize = 7;

    /// What `loc & short_mask(b)` equals for a short block (see [`Loc::short_mask`]).
    pub const SHORT: u64 = Loc::SHORT_BIT;

    /// The mask that, compared with [`Loc::SHORT`], says a block is short (a two-word key
    /// and at most [`Loc::SHORT_META`] metadata words) and its offset is below
    /// `2^offset_bits` (any offset, from 32 bits up): one `and` and one compare, for the
    /// read path's fast case.
    pub const fn short_mask(offset_bits: u32) -> u64 {
        const { assert!((Loc::SHORT_META + 1) as u64 == Loc::SHORT_BIT) };
        let high = if offset_bits >= 32 {
            0
        } else {
            u64::MAX << (32 + offset_bits)
        };
        Loc::SHORT_BIT | high
    }
}

/// One slot; every field is read by readers concurrently with the writer, so all are atomics.
/// Aligned to its size, so no slot straddles two cache lines.
#[repr(C, align(16))]
pub struct Slot {
    /// `seq:32 | tag:32`. The high half is the seqlock's sequence number: even = stable,
    /// odd = the writer is changing this slot. The low half is the tag: 0 for an empty
    /// slot, [`MOVED`], or [`tag`] of the key's hash.
    pub(crate) word: AtomicU64,
    /// A packed [`Loc`].
    pub(crate) loc: AtomicU64,
}

/// A snapshot of a slot's payload, as the writer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotView {
    /// The stored tag (0 = empty, [`MOVED`], else [`tag`] of a hash).
    pub tag: u32,
    /// The block location.
    pub loc: Loc,
}

impl SlotView {
    /// The empty slot.
    pub const EMPTY: SlotView = SlotView {
        tag: 0,
        loc: Loc(0),
    };
}

/// A table's slots as a ring: slot `i` is slot `i mod capacity`, with no bounds check.
#[derive(Clone, Copy)]
pub(crate) struct Ring<'a> {
    slots: &'a [Slot],
    /// The capacity (a power of two) - 1; `slots.len()` is the capacity + 1 (the guard).
    mask: usize,
    /// The table's `shift`, `64 - log2(capacity)`: `hash >> shift` is a home, below the
    /// capacity with no mask.
    shift: u32,
}

impl<'a> Ring<'a> {
    /// Slot `i` modulo the capacity.
    #[inline(always)]
    pub(crate) fn slot(self, i: usize) -> &'a Slot {
        // SAFETY: a `Ring` is made only by `RawTable::ring`, from a table made by
        // `try_with_pages`: its capacity is a power of two, `mask` = capacity - 1 and
        // `slots.len()` = capacity + 1 (the guard), neither changing after. So
        // `i & mask < slots.len()`.
        unsafe { self.slots.get_unchecked(i & self.mask) }
    }

    /// A probe's head: the home slot and the one after it, where most entries are (at a
    /// load of 1/2, about nine in ten), their `seq|tag` words loaded together with
    /// `order`. Answers the home slot and its word if its tag is `want`, else the next
    /// slot and its word, chosen without a branch: LLVM makes the `if` two conditional
    /// moves (checked in `lookup_cost` and `peers`; `std::hint::select_unpredictable`
    /// would pin that, from Rust 1.88, past the MSRV). The caller checks the answered
    /// word's tag; the slot not chosen is only read, never used.
    ///
    /// The slot after the last is the table's guard ([`RawTable::try_with_pages`]),
    /// always empty, not slot 0: the pair's second slot is then the first's neighbour in
    /// memory, with no wrap to compute (3 instructions a lookup), and an entry of the last
    /// home that wrapped to slot 0 is found by the caller's probe from home.
    ///
    /// It takes the hash, not a home: the home `hash >> shift` is below the capacity by
    /// construction, so it indexes with no mask (2 instructions and a load a lookup).
    #[inline(always)]
    pub(crate) fn head(self, hash: u64, want: u32, order: Ordering) -> (&'a Slot, u64) {
        let i = home_at(hash, self.shift);
        // SAFETY: a `Ring` is made only by `RawTable::ring`, from a table made by
        // `try_with_pages`, whose fields never change after: `shift` = 64 - log2(cap)
        // with `cap` = capacity, a power of two of at least `MIN_CAPACITY` and at most
        // `MAX_CAPACITY` (so `shift` is in 33..=62), and `slots.len()` = cap + 1 (the
        // guard). So `i = hash >> shift < 2^log2(cap) = cap`, and
        // `i + 1 <= cap < slots.len()`.
        let (s0, s1) = unsafe { (self.slots.get_unchecked(i), self.slots.get_unchecked(i + 1)) };
        let (w0, w1) = (s0.word.load(order), s1.word.load(order));
        if w0 as u32 == want {
            (s0, w0)
        } else {
            (s1, w1)
        }
    }
}

/// Proof that the holder is the one writer of a shard. It is `!Sync` (so it cannot be
/// shared) and not `Clone`; `Published::new` makes exactly one per shard, and the writer
/// thread owns it. Every method that stores into published memory asks for it.
pub struct WriterToken {
    pub(crate) shard: usize,
    _not_sync: PhantomData<Cell<()>>,
}

impl WriterToken {
    pub(crate) fn new(shard: usize) -> WriterToken {
        WriterToken {
            shard,
            _not_sync: PhantomData,
        }
    }
}

/// The home of `hash` in a table of `shift` ([`RawTable::home`]): its top `64 - shift`
/// bits.
#[inline(always)]
fn home_at(hash: u64, shift: u32) -> usize {
    (hash >> shift) as usize
}

/// The tag stored for a hash: its high half, never 0, so 0 can mean "empty", and odd, so
/// [`MOVED`] matches none.
#[inline]
pub fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}

/// A hash with the same home as every hash of tag `tag`, in any table of at most
/// [`RawTable::MAX_CAPACITY`] slots (homes use at most the top 31 bits).
#[inline]
pub fn hash_of_tag(tag: u32) -> u64 {
    u64::from(tag) << 32
}

/// The tag of a migration source's slot whose entry moved to the new table: not empty
/// (probes go on past it, T1 holds), matching no tag.
pub const MOVED: u32 = 2;

/// The bit of a table's `moves` word that a section holds while it is open (odd = open).
pub const MOVES_OPEN: u64 = 1;
/// The bit of a table's `moves` word that says a migration into the table may still run:
/// readers that see it consult the table's `source`.
pub const MOVES_MIGRATING: u64 = 2;

/// What one section (open, then close) adds to a table's `moves` word: a step above both
/// flag bits, so a section never changes [`MOVES_MIGRATING`].
const MOVES_SECTION: u64 = 4;

/// One in the sequence number's place of a slot word.
pub(crate) const SEQ_ONE: u64 = 1 << 32;

impl SlotView {
    /// A moved-away slot of a migration source.
    const MOVED: SlotView = SlotView {
        tag: MOVED,
        loc: Loc(0),
    };

    /// Whether the slot holds an entry (it is neither empty nor [`MOVED`]).
    #[inline]
    pub fn is_entry(&self) -> bool {
        self.tag & 1 == 1
    }
}

/// A table's slots: one zeroed allocation (`pages.rs`), never moved or resized.
type Slots = Zeroed<Slot>;

// SAFETY: two `AtomicU64`s, `repr(C)`: all-zero bytes are two zero atomics, an empty
// slot.
unsafe impl Zeroable for Slot {
    #[cfg(roster_loom)]
    fn zero() -> Slot {
        Slot {
            word: AtomicU64::new(0),
            loc: AtomicU64::new(0),
        }
    }
}

/// A fixed-capacity table. Its capacity never changes; growth builds a new one.
pub struct RawTable {
    /// `sections:62 | migrating:1 | open:1`. `open` ([`MOVES_OPEN`]): a backward shift
    /// (or a migration step, in a source) is moving entries, or (forever) the table is
    /// retired. `migrating` ([`MOVES_MIGRATING`]): the table may still have a migration
    /// `source`, so a reader must take the slow path that consults it; set before the
    /// table is published, cleared (`Release`) after `source` is nulled. Each section
    /// adds 1 as it opens and 3 as it closes, leaving `migrating` as it was, so a reader's
    /// miss is validated by comparing the whole word, and the read path's first test
    /// covers both bits.
    pub(crate) moves: AtomicU64,
    /// `64 - log2(capacity)`: a hash's home slot is `hash >> shift`, below the capacity
    /// (`Ring::head` indexes with it unmasked).
    shift: u32,
    mask: usize,
    /// `capacity + 1` slots: the last is the guard (see `try_with_pages`). Never
    /// reassigned after `try_with_pages` (`Ring::slot` relies on it with `mask`, and
    /// `Ring::head` with `shift`); not visible outside `raw`.
    pub(super) slots: Slots,
    /// The table this one replaced (null for the first). Only `Published::drop` follows it.
    pub(crate) prev: AtomicPtr<RawTable>,
    /// While a migration runs, the table it takes entries from (the same as `prev`; not
    /// owning); null otherwise. Stored `Release` (null) when the migration ends, loaded
    /// `Acquire` by readers.
    pub(crate) source: AtomicPtr<RawTable>,
}

impl RawTable {
    /// Smallest capacity handed out.
    pub const MIN_CAPACITY: usize = if cfg!(roster_loom) { 4 } else { 8 };
    /// Largest capacity: homes then use at most the top 31 bits of a hash, which its tag
    /// keeps (see [`hash_of_tag`]).
    pub const MAX_CAPACITY: usize = 1 << 31;

    /// A table with room for at least `capacity` slots (rounded up to a power of two).
    ///
    /// # Panics
    ///
    /// If the memory cannot be had (as `Vec` does); see [`RawTable::try_with_capacity`].
    pub fn with_capacity(capacity: usize) -> RawTable {
        Self::try_with_capacity(capacity).expect("slot table allocation")
    }

    /// [`RawTable::with_capacity`], or `None` if the size overflows or the allocator
    /// refuses it.
    pub fn try_with_capacity(capacity: usize) -> Option<RawTable> {
        Self::try_with_pages(capacity, false)
    }

    /// [`RawTable::try_with_capacity`], on huge pages (past the first 4 MiB) if `huge`.
    pub fn try_with_pages(capacity: usize, huge: bool) -> Option<RawTable> {
        let cap = capacity
            .max(Self::MIN_CAPACITY)
            .checked_next_power_of_two()
            .filter(|&c| c <= Self::MAX_CAPACITY)?;
        // One slot more than the capacity: the guard, after the last slot, which only
        // `Ring::head` reads (as the last home's neighbour) and no write ever touches
        // (every other index is masked), so it stays empty.
        let slots = Zeroed::new(cap.checked_add(1)?, huge)?;
        Some(RawTable {
            moves: AtomicU64::new(0),
            shift: 64 - cap.trailing_zeros(),
            mask: cap - 1,
            slots,
            prev: AtomicPtr::new(std::ptr::null_mut()),
            source: AtomicPtr::new(std::ptr::null_mut()),
        })
    }

    /// Number of slots.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Most entries the table takes before the writer grows it: [`max_len_of`] its
    /// capacity.
    pub fn max_len(&self, max_load: u8) -> usize {
        max_len_of(self.capacity(), max_load)
    }

    /// The home slot of a hash.
    #[inline]
    pub fn home(&self, hash: u64) -> usize {
        home_at(hash, self.shift)
    }

    /// The slots as a ring a probe indexes with no bounds check.
    #[inline(always)]
    pub(crate) fn ring(&self) -> Ring<'_> {
        Ring {
            slots: &self.slots,
            mask: self.mask,
            shift: self.shift,
        }
    }

    /// The slot after `i`, wrapping.
    #[inline]
    pub fn next(&self, i: usize) -> usize {
        (i + 1) & self.mask
    }

    /// Cyclic distance from slot `from` forward to slot `to`.
    #[inline]
    pub fn distance(&self, from: usize, to: usize) -> usize {
        to.wrapping_sub(from) & self.mask
    }

    /// Bytes of slot memory (the guard's included).
    pub fn bytes(&self) -> u64 {
        self.slots.bytes()
    }

    /// The payload of slot `i`. Only the writer calls this: it sees its own latest stores,
    /// so `Relaxed` loads are exact and no validation is needed.
    #[inline]
    pub fn view(&self, t: &WriterToken, i: usize) -> SlotView {
        let _ = t;
        let s = &self.slots[i];
        SlotView {
            tag: s.word.load(Ordering::Relaxed) as u32,
            loc: Loc(s.loc.load(Ordering::Relaxed)),
        }
    }

    /// Replaces slot `i` with `v` under the slot's seqlock. `before` runs inside the write
    /// section, after the opening fence: every store into the arena must happen there (or
    /// in another section), never before one, so readers validating any slot that used the
    /// same memory before see their `seq` change (rule W1 in `raw`'s docs).
    #[inline]
    pub fn write(&self, t: &WriterToken, i: usize, v: SlotView, before: impl FnOnce()) {
        let _ = t;
        let s = &self.slots[i];
        let w = s.word.load(Ordering::Relaxed);
        debug_assert!(w & SEQ_ONE == 0, "slot {i} left mid-write");
        // Odd, with the old tag: a probe passing the slot meanwhile sees what it saw.
        s.word.store(w.wrapping_add(SEQ_ONE), Ordering::Relaxed);
        fence(Ordering::Release);
        before();
        s.loc.store(v.loc.0, Ordering::Relaxed);
        let seq = (w >> 32).wrapping_add(2) << 32;
        s.word.store(seq | u64::from(v.tag), Ordering::Release);
    }

    /// Opens a shift: readers that miss while `moves` is odd or changed will retry.
    pub fn begin_moves(&self, t: &WriterToken) {
        let _ = t;
        let m = self.moves.load(Ordering::Relaxed);
        debug_assert!(m & MOVES_OPEN == 0);
        self.moves.store(m + MOVES_OPEN, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Closes a shift opened by [`RawTable::begin_moves`]: the section count goes up by
    /// one and [`MOVES_MIGRATING`] stays as it was.
    pub fn end_moves(&self, t: &WriterToken) {
        let _ = t;
        let m = self.moves.load(Ordering::Relaxed);
        debug_assert!(m & MOVES_OPEN == MOVES_OPEN);
        self.moves
            .store(m - MOVES_OPEN + MOVES_SECTION, Ordering::Release);
    }

    /// The `moves` word (`Acquire`), if it shows no section open and no migration that
    /// may still run: the read path's one test before it probes this table alone.
    #[inline(always)]
    pub(crate) fn quiet_moves(&self) -> Option<u64> {
        let m = self.moves.load(Ordering::Acquire);
        (m & (MOVES_OPEN | MOVES_MIGRATING) == 0).then_some(m)
    }

    /// Marks a table not yet published as a migration's target ([`MOVES_MIGRATING`]).
    /// `&mut`: a published table is shared, so it can never get the flag again (R5').
    pub(crate) fn mark_migrating(&mut self) {
        self.moves.store(MOVES_MIGRATING, Ordering::Relaxed);
    }

    /// Clears [`MOVES_MIGRATING`] once the migration into this table has ended and its
    /// `source` is null: `Release`, so a reader that sees the bit clear sees every entry
    /// that moved here and needs no source.
    pub(crate) fn clear_migrating(&self, t: &WriterToken) {
        let _ = t;
        let m = self.moves.load(Ordering::Relaxed);
        debug_assert!(m & MOVES_OPEN == 0);
        self.moves.store(m & !MOVES_MIGRATING, Ordering::Release);
    }

    /// The first slot of the probe for `hash` that `hit` accepts, stopping at the first
    /// empty slot (T1); [`MOVED`] slots are passed over. The writer's own view: no
    /// validation needed.
    pub fn seek(
        &self,
        t: &WriterToken,
        hash: u64,
        mut hit: impl FnMut(SlotView) -> bool,
    ) -> Option<usize> {
        let mut i = self.home(hash);
        for _ in 0..self.capacity() {
            let v = self.view(t, i);
            if v.tag == 0 {
                return None;
            }
            if v.is_entry() && hit(v) {
                return Some(i);
            }
            i = self.next(i);
        }
        None
    }

    /// The first empty slot of the probe for `hash`, where an insert goes. The writer
    /// keeps tables below their max load (at most 90%), so there is one.
    pub fn free_slot(&self, t: &WriterToken, hash: u64) -> usize {
        let mut i = self.home(hash);
        while self.view(t, i).tag != 0 {
            i = self.next(i);
        }
        i
    }

    /// Empties slot `i` with a backward shift, keeping T1. Shifted entries move under
    /// `moves` (W3), so a reader's miss that raced them is retried.
    pub fn vacate(&self, t: &WriterToken, i: usize) {
        let mut shifting = false;
        let mut hole = i;
        let mut j = self.next(i);
        loop {
            let v = self.view(t, j);
            if v.tag == 0 {
                break;
            }
            if self.distance(self.home(hash_of_tag(v.tag)), j) >= self.distance(hole, j) {
                if !shifting {
                    self.begin_moves(t);
                    shifting = true;
                }
                self.write(t, hole, v, || {});
                hole = j;
            }
            j = self.next(j);
        }
        self.write(t, hole, SlotView::EMPTY, || {});
        if shifting {
            self.end_moves(t);
        }
    }

    /// Moves the entry in slot `j` of `source` (this table's migration source) into this
    /// table and marks `j` [`MOVED`], inside one `moves` section of the source (W6): a
    /// reader that missed the entry here and then finds `j` moved is told to retry.
    /// Returns the entry's slot here. `j` must hold an entry.
    pub fn migrate_slot(&self, t: &WriterToken, source: &RawTable, j: usize) -> usize {
        source.begin_moves(t);
        let i = self.take_over(t, source, j);
        source.end_moves(t);
        i
    }

    /// Moves every entry of `source`'s slots `from..from + n` (clamped to its end) into
    /// this table, in one `moves` section of the source; returns where to go on.
    pub fn migrate(&self, t: &WriterToken, source: &RawTable, from: usize, n: usize) -> usize {
        let end = from.saturating_add(n).min(source.capacity());
        source.begin_moves(t);
        for j in from..end {
            if source.view(t, j).is_entry() {
                self.take_over(t, source, j);
            }
        }
        source.end_moves(t);
        end
    }

    /// One entry's move, inside the caller's `moves` section of `source`: written here
    /// first, then marked moved there, so at every moment one of the two copies (which
    /// share their block) is present.
    fn take_over(&self, t: &WriterToken, source: &RawTable, j: usize) -> usize {
        let v = source.view(t, j);
        debug_assert!(v.is_entry());
        let i = self.free_slot(t, hash_of_tag(v.tag));
        self.write(t, i, v, || {});
        source.write(t, j, SlotView::MOVED, || {});
        i
    }

    /// Ends a migration source's life once all its entries moved: `moves` turns odd for
    /// good, so a reader still probing it retries and reloads the current table. Its
    /// slots need no change: each is empty or [`MOVED`], and every `MOVED` store changed
    /// the slot's `seq` after any block it named was last trusted (W1).
    pub fn retire_source(&self, t: &WriterToken) {
        let _ = t;
        self.moves.store(
            self.moves.load(Ordering::Relaxed) | MOVES_OPEN,
            Ordering::Relaxed,
        );
        fence(Ordering::Release);
    }

    /// Retires the table after a newer one was published: every slot's `seq` and the
    /// `moves` word turn odd for good, so a reader still on this table retries (and reloads
    /// the current table) instead of trusting arena blocks that the writer will now reuse.
    #[cfg(all(test, not(roster_loom)))]
    pub fn retire(&self, t: &WriterToken) {
        let _ = t;
        self.moves.store(
            self.moves.load(Ordering::Relaxed) | MOVES_OPEN,
            Ordering::Relaxed,
        );
        for s in self.slots.iter() {
            s.word
                .store(s.word.load(Ordering::Relaxed) | SEQ_ONE, Ordering::Relaxed);
        }
        // Later arena stores come after this fence (and after each section's own), so a
        // reader that sees one of them also sees the odd words above (rule W2).
        fence(Ordering::Release);
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    #[test]
    fn loc_round_trips_its_fields() {
        let l = Loc::new((1 << 32) - 1, MAX_KEY_WORDS, MAX_META_WORDS, u64::MAX);
        assert_eq!(l.offset(), (1 << 32) - 1);
        assert_eq!(l.owner_hint(), (1 << OWNER_HINT_BITS) - 1);
        assert_eq!(l.0 & Loc::SHORT, 0);
        assert_eq!(l.short_meta_words(), 0);
        let l = Loc::new(12345, 2, 7, 5 << OWNER_HINT_BITS | 77);
        assert_eq!((l.offset(), l.owner_hint()), (12345, 77));
        assert_eq!(l.0 & Loc::SHORT, Loc::SHORT);
        assert_eq!(l.short_meta_words(), 7);
    }

    #[test]
    fn a_short_loc_is_a_two_word_key_with_short_metadata() {
        for offset in [0, 1, (1 << 32) - 1] {
            for kw in [0, 1, 2, 3, 130, MAX_KEY_WORDS] {
                for mw in [
                    0,
                    1,
                    Loc::SHORT_META,
                    Loc::SHORT_META + 1,
                    9,
                    16,
                    MAX_META_WORDS,
                ] {
                    for owner in [0, 1, u64::MAX] {
                        let short = kw == 2 && mw <= Loc::SHORT_META;
                        let loc = Loc::new(offset, kw, mw, owner);
                        let got = loc.0 & Loc::short_mask(32) == Loc::SHORT;
                        assert_eq!(got, short, "{kw} {mw}");
                        assert_eq!(loc.short_meta_words(), if short { mw } else { 0 });
                    }
                }
            }
        }
        // With an offset bound: short and below it, nothing else.
        for bits in [5, 30, 31] {
            for offset in [0, 1, (1 << bits) - 1, 1 << bits, (1 << 32) - 1] {
                for (kw, mw) in [(2, 3), (2, 8), (1, 3)] {
                    let loc = Loc::new(offset, kw, mw, u64::MAX);
                    let want = kw == 2 && mw <= Loc::SHORT_META && offset < 1 << bits;
                    let got = loc.0 & Loc::short_mask(bits) == Loc::SHORT;
                    assert_eq!(got, want, "{bits} bits, offset {offset}, {kw} {mw}");
                }
            }
        }
    }

    #[test]
    fn slot_is_two_words() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        assert_eq!(std::mem::align_of::<Slot>(), 16);
    }

    #[test]
    fn a_tag_keeps_its_hash_home_in_every_table() {
        for bits in [3u32, 10, 20, 31] {
            // The homes of a table of `2^bits` slots (`RawTable::home`), with no table.
            let home = |h| home_at(h, 64 - bits);
            for k in 0..1000u64 {
                let h = k.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k;
                assert_eq!(home(hash_of_tag(tag(h))), home(h), "{bits} bits, {h:#x}");
            }
        }
    }

    #[test]
    fn home_uses_high_bits_and_distance_wraps() {
        let t = RawTable::with_capacity(16);
        assert_eq!(t.capacity(), 16);
        assert_eq!(t.home(u64::MAX), 15);
        assert_eq!(t.home(1), 0);
        assert_eq!(t.distance(14, 1), 3);
        assert_eq!(t.next(15), 0);
        assert_eq!(t.max_len(75), 8, "a small table grows at half");
        assert_eq!(t.max_len(50), 8);
        assert_eq!(t.max_len(30), 4);
        let big = SMALL_TABLE_SLOTS * 2;
        assert_eq!(max_len_of(big, 75), big / 4 * 3);
        assert_eq!(max_len_of(big, 90), big * 9 / 10);
        assert_eq!(max_len_of(SMALL_TABLE_SLOTS, 90), SMALL_TABLE_SLOTS / 2);
        assert_eq!(
            max_len_of(usize::MAX, 90),
            (usize::MAX as u128 * 9 / 10) as usize
        );
        assert_eq!(slots_for(0, 75), Some(RawTable::MIN_CAPACITY));
        assert_eq!(slots_for(5000, 75), Some(16384), "small: half full at most");
        assert_eq!(
            slots_for(40_000, 75),
            Some(SMALL_TABLE_SLOTS * 2),
            "past 32768"
        );
        assert_eq!(slots_for(500_000, 75), Some(1 << 20), "big: 3/4");
        assert_eq!(slots_for(usize::MAX, 90), None);
    }

    #[test]
    fn write_bumps_seq_by_two_and_retire_makes_it_odd() {
        let tok = WriterToken::new(0);
        let t = RawTable::with_capacity(8);
        let v = SlotView {
            tag: tag(42 << 32),
            loc: Loc::new(3, 1, 1, 0),
        };
        let mut ran = false;
        t.write(&tok, 2, v, || ran = true);
        assert!(ran);
        assert_eq!(t.slots[2].word.load(Ordering::Relaxed), 2 << 32 | 43);
        assert_eq!(t.view(&tok, 2), v);
        t.begin_moves(&tok);
        assert_eq!(t.moves.load(Ordering::Relaxed), 1);
        t.end_moves(&tok);
        assert_eq!(t.moves.load(Ordering::Relaxed), 4);
        // A migration's target keeps its flag through sections, and loses only it.
        let mut u = RawTable::with_capacity(8);
        u.mark_migrating();
        u.begin_moves(&tok);
        assert_eq!(
            u.moves.load(Ordering::Relaxed),
            MOVES_MIGRATING | MOVES_OPEN
        );
        u.end_moves(&tok);
        assert_eq!(u.moves.load(Ordering::Relaxed), 4 | MOVES_MIGRATING);
        u.clear_migrating(&tok);
        assert_eq!(u.moves.load(Ordering::Relaxed), 4);
        t.retire(&tok);
        assert!(t
            .slots
            .iter()
            .all(|s| s.word.load(Ordering::Relaxed) & SEQ_ONE != 0));
        assert_eq!(t.moves.load(Ordering::Relaxed) & 1, 1);
    }
}
