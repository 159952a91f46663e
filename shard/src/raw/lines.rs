//! The line cache: one-line copies of short entries, which a reader tries before the
//! slot table (opt-in: `ShardConfig::line_cache`). The first step of the v3 layout of
//! `results/2026-12-07-kvm-xeon-2c-0d228b0-v4`: a hit reads one cache line where the slot
//! table's read takes two in series (the slot, then the block).
//!
//! # Layout
//!
//! A tag array of one byte a line, eight to an atomic word (a *group*), and the lines, one
//! 64-byte aligned line each, eight atomic words:
//!
//! ```text
//! w0: seq:29 (bits 35..64, bit 35 = odd while written) | shape:3 | key word 0's low half
//! w1: the owner        w2: key word 1        w3..w7: up to five metadata words
//! ```
//!
//! `shape` is the number of metadata words, or [`DEAD`] for a line that holds no entry.
//! Tag bytes: [`EMPTY`] (never used since the table was made), [`DELETED`] (used, now free)
//! or `0x80 |` seven bits of the hash ([`tag8`]). A key's home is the group `hash >>
//! shift`; a probe walks groups from there and stops at the first group with an empty
//! byte (an insert takes the first free byte on the key's probe, so the key, if cached,
//! lies before it). A table whose lines are seven eighths taken grows (see "Growth").
//!
//! Only entries whose key is two words, whose key word 0 has the high half the table was
//! made for (the engine's local node: keys of other nodes are not cached), and whose
//! metadata is at most five words are cached. The slot table stays the record
//! of every entry; the cache holds copies.
//!
//! # Protocol
//!
//! Writer (one, holding the shard's [`WriterToken`]):
//! - L1: a line's content changes only inside its *section*: `w0 := w0 | odd` (Relaxed),
//!   `fence(Release)`, the payload's stores, then `w0 :=` the next even seq with the new
//!   shape and key half (Release). Its tag byte is stored (Release) after the section
//!   closes.
//! - L2: a cached entry's change in the slot table (an update, a removal) happens inside
//!   its line's section: the section opens before the slot table's write section does,
//!   and closes (with the new copy, or as [`DEAD`]) after it. A new entry is cached after
//!   its slot is published.
//!
//! Reader ([`LineTable::get`]): the group word (Acquire), then for each byte that matches:
//! `w0` (Acquire), the key compare and the payload (Relaxed), `fence(Acquire)`, `w0` again
//! (Relaxed). A hit needs `w0` even, unchanged, not [`DEAD`], and the key's words. Anything
//! else answers `None`, and the caller reads the slot table: a miss here is never an
//! answer, so the cache needs no miss validation.
//!
//! Why a hit is right:
//! - no torn hit (as R1): a payload load that read a store of a section begun after the
//!   reader's first `w0` load makes that section's `fence(Release)` synchronise with the
//!   reader's `fence(Acquire)`, so the reader's second `w0` load sees the odd (or a later)
//!   value, and differs;
//! - no stale hit (as R2): the first `w0` load (Acquire) reads the close of the last
//!   section before it, so the payload is that section's;
//! - no hit older than the slot table (L2): a reader that read a closed line read the
//!   close of its last section, which came after the slot table's write for that change
//!   in the writer's order. Every change of the entry after it opens the line first, so a
//!   reader whose `w0` is unchanged across its read overlapped none of them: what it
//!   answers is the entry as the slot table held it from that close until the next open.
//!   A reader that meets an open line (or a changed one) reads the slot table instead,
//!   whose own validation answers.
//! - Liveness is checked by the caller from the owner, as for a slot table hit (SPEC I1).
//!
//! # Growth
//!
//! A [`LineCell`] holds the current table. When an insert finds it full, the writer
//! publishes (`Release`) an empty table twice its size (deleted bytes do not pile up:
//! `LineTable::clear_deleted` empties those no probe needs), made of zeroed pages
//! that cost nothing until touched, and moves the old table's lines over a few after
//! each write, and in bigger steps while idle, as the slot table's migration does.
//! Readers read only the current table: a key not moved yet misses there and is read
//! from the slot table. The writer keeps, beside each line, the high half of its entry's
//! hash, which gives the line's home and tag byte in any table (see [`tag8`]), since
//! the line itself holds only the key.
//!
//! - G1: a cached entry has its line in exactly one table, the current one or the one
//!   being drained. A move writes the copy in the current table (its own section), then
//!   kills the old line (a section that closes it [`DEAD`]). The entry does not change
//!   meanwhile, so each copy is the entry as it is.
//! - G2: every change of a cached entry goes through [`LineCell::find`], which moves the
//!   entry's line first if it is still in the old table; so the change happens in the
//!   current table's line (L2 there), after the old line's kill, its last section. A
//!   reader still on the old table may read the line from before the kill after the
//!   change is done, but then its two `w0` loads both precede the kill's open (in the
//!   line's modification order), so nothing that happens after the kill, the change
//!   included, happens before the read: the read is ordered before the change, as L2's
//!   argument has it.
//! - G3: once every line of the old table has been passed, each of its lines is dead or
//!   free, and stays so: the writer never writes it again. Its pages go back to the OS
//!   (`Zeroed::release`), after a `fence(Release)`; a reader that still reads it reads
//!   the values it held or zeros. This rests on an assumption outside Rust's memory
//!   model: that the kernel's zeroing (`MADV_DONTNEED`, which shoots down every CPU's
//!   TLB entries for the pages before it returns) acts as `Relaxed` stores of zero by
//!   the writer after that fence. Granted that, a zero group word has no full byte, a
//!   zero `w0` is a dead line, and a line read whose payload load saw a zero has its
//!   second `w0` load see the kill's odd value or a later one (R1's fence argument, the
//!   kill's fence preceding the zeroing), so every read of the drained table is a miss.
//!   The table stays mapped until the cell drops, so a late load takes a minor fault at
//!   worst (of a zero page: the range is advised off huge pages first), never a trap.
//!
//! Tables of [`PREPARE_FROM`] bytes (4 MiB) and more are made off the writer's path: once
//! the current table is five eighths taken, a helper thread maps the next one's lines on
//! huge pages and faults them all in (`Zeroed::populate`, or a store into each page
//! where the kernel refuses it), and the writer publishes it when
//! it needs it, at seven eighths, if it is made (until then new entries go uncached, as
//! a cache may leave them). The table is no one else's until published: the helper's
//! only link to the writer is the join that hands it over, which orders the helper's
//! page faults (zeroing, nothing else: the table is born zero) before the writer's
//! `Release` store that publishes it, so readers see it as G1-G3 have it. A hit then
//! reads one line on a huge page (on small pages it pays a TLB miss too), and no write
//! waits for a huge page's fault. Where it cannot be done (Miri, loom, other systems),
//! or for smaller tables, the writer makes the table itself, as above; the first table
//! is kept below `PREPARE_FROM` where it can be done, so that every big one is. A made
//! table that the load has not come to need is dropped, off the writer's path too, at an
//! insert that finds the entries below half the current table's lines (`DROP_EIGHTHS`)
//! and fewer than five eighths taken; one is made again from five eighths taken.
//!
//! Sequence numbers have 29 bits and grow by 2 a section: one line's wrap after 2^28
//! writes of it, eight times fewer than a slot's (see `table.rs`). A reader stalled
//! between its two `w0` loads while one key is rewritten 2^28 times (about two minutes of
//! a writer doing nothing else) could take a changed line for an unchanged one; the
//! protocol assumes no reader does, as the slot table's does for its bound.

use super::pages::{Zeroable, Zeroed};
use super::table::WriterToken;
use crate::sync::{fence, AtomicPtr, AtomicU64, Ordering, OwnU32, OwnU64};

/// A tag byte never used since the table was made: a probe stops at its group.
pub const EMPTY: u8 = 0;
/// A tag byte whose line held an entry and is free now: probes go on past it.
pub const DELETED: u8 = 1;
/// The shape of a line that holds no entry: 0, so zeroed memory is dead lines. A line
/// holding an entry has shape `1 +` its metadata length.
pub const DEAD: u64 = 0;
/// The most metadata words a line holds.
pub const LINE_META: usize = 5;

/// The odd bit of a line's sequence number.
const ODD: u64 = 1 << 35;
/// The key half of `w0`.
const LOW: u64 = 0xffff_ffff;
/// Groups `LineTable::clear_deleted` looks at, at most, past a group it would clear.
const CLEAR_SCAN: usize = 8;
/// A line's share of a table's load, as the slot table's: at most 7 of 8 lines taken.
const MAX_LOAD_EIGHTHS: usize = 7;
/// The load at which the next table starts being made off the writer's path (5 of 8
/// lines taken), so that it is ready by [`MAX_LOAD_EIGHTHS`].
const PREPARE_EIGHTHS: usize = 5;
/// The load below which a next table made off the writer's path and not yet published
/// is dropped (4 of 8 lines holding entries), below `PREPARE_EIGHTHS` so that a load
/// that wavers around one of them neither makes nor drops a table at every write.
const DROP_EIGHTHS: usize = 4;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// One cache line of atomic words.
#[repr(C, align(64))]
pub struct Line {
    w: [AtomicU64; 8],
}

// Lines are eight atomics each with no padding, so a run of lines is a run of atomics
// (`LineTable::group` relies on it).
const _: () = assert!(std::mem::size_of::<Line>() == 8 * std::mem::size_of::<AtomicU64>());

// SAFETY: `repr(C)` of eight `AtomicU64`s: all-zero bytes are eight zero atomics (a dead
// line, `DEAD`), and no drop.
unsafe impl Zeroable for Line {
    #[cfg(roster_loom)]
    fn zero() -> Line {
        Line {
            w: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The high bits of each byte of `group` that equals `byte` (exact for the lowest match;
/// a byte above a true match may show as a false one, which the key compare rejects).
#[inline(always)]
fn matches(group: u64, byte: u8) -> u64 {
    let x = group ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// A hash's tag byte: bits 33..40, below the bits a home of up to 2^24 groups takes from
/// the top (past that they overlap, and the byte filters less: speed only), and above
/// the low half (which the caller's tag, `table::tag`, drops), so `hash`,
/// `hash_of_tag(tag(hash))` and a line's kept high half give the same byte and the same
/// home.
#[inline(always)]
pub fn tag8(hash: u64) -> u8 {
    (hash >> 33) as u8 | 0x80
}

/// What one validated read of a line found.
enum LineRead {
    /// The key's entry: its owner and metadata length (the metadata copied out).
    Hit(u64, usize),
    /// Another key's line, or a dead one, unchanged while read.
    Other,
    /// Written while read (or being written): no answer.
    Changed,
}

/// Reads `line` for the key `[k0, k1]`, whose word 0's high half the caller has checked
/// against the table's: `w0` (Acquire), the key compare and the payload (Relaxed, the
/// metadata into `out[..5]`), `fence(Acquire)`, `w0` again (the module's reader).
#[inline(always)]
fn read_line(line: &[AtomicU64; 8], k0: u64, k1: u64, out: &mut [u64; 7]) -> LineRead {
    let w0 = line[0].load(Ordering::Acquire);
    // Even, and the key's half: one compare.
    let hit = w0 & (ODD | LOW) == k0 & LOW && line[2].load(Ordering::Relaxed) == k1;
    let owner = line[1].load(Ordering::Relaxed);
    for (o, w) in out.iter_mut().zip(&line[3..]) {
        *o = w.load(Ordering::Relaxed);
    }
    fence(Ordering::Acquire);
    if line[0].load(Ordering::Relaxed) != w0 {
        return LineRead::Changed;
    }
    let shape = (w0 >> 32) & 7;
    if hit && shape != DEAD {
        LineRead::Hit(owner, shape as usize - 1)
    } else {
        LineRead::Other
    }
}

// SAFETY: `LineTable` owns everything it points at (`groups` points into its own
// `lines`), and every shared access through it is to atomics, so it may move to or be
// shared with another thread as its fields may.
unsafe impl Send for LineTable {}
// SAFETY: as for `Send`.
unsafe impl Sync for LineTable {}

/// A shard's line cache (see the module docs).
pub struct LineTable {
    /// `8 * (gmask + 1)` lines, then the `gmask + 1` groups (a power of two, at least 8),
    /// eight to a line: one allocation, so that a big table goes on huge pages whole.
    lines: Zeroed<Line>,
    /// The writer's: the high half of the hash of each line's entry, for moving it to
    /// the next table (readers never load these).
    hashes: Zeroed<OwnU32>,
    gmask: usize,
    /// The first group: `lines.as_ptr() + 8 * (gmask + 1)` (the allocation's own
    /// pointer, so it may reach every group). `lines.len() == 8 * (gmask + 1) + (gmask +
    /// 1) / 8`, with `gmask + 1` a power of two of at least 8 (`try_new`, never
    /// changed): the lines from `8 * (gmask + 1)` on are `(gmask + 1) / 8` whole `Line`s, each `repr(C)` of eight
    /// `AtomicU64`s with no padding (asserted at `Line`), so they are `gmask + 1`
    /// contiguous, aligned `AtomicU64`s from here.
    groups: std::ptr::NonNull<AtomicU64>,
    /// `64 - log2(gmask + 1)`: `hash >> shift` is a home, at most `gmask`.
    shift: u32,
    /// The high half of key word 0 that cached keys have.
    high: u64,
    /// Lines taken (entries and [`DELETED`] ones): the writer's count.
    taken: OwnU64,
    /// Lines holding entries: the writer's count.
    live: OwnU64,
    /// The table this one replaced (null for the first), owned: freed when the
    /// [`LineCell`] drops.
    prev: AtomicPtr<LineTable>,
}

impl LineTable {
    /// A table of at least `lines` lines (rounded up to a power of two of groups), for
    /// keys whose word 0 has `high` as its high half, or `None` if the memory cannot be
    /// had.
    pub fn try_new(lines: usize, high: u64, huge: bool) -> Option<LineTable> {
        let groups = Self::groups_for(lines)?;
        let gmask = groups - 1;
        // The home takes at most 31 bits of the hash (see `tag8`).
        if gmask >> 31 != 0 {
            return None;
        }
        let lines = Zeroed::<Line>::new(groups.checked_mul(8)? + groups / 8, huge)?;
        let first = std::ptr::NonNull::new(lines.as_mut_ptr().wrapping_add(groups * 8))?;
        Some(LineTable {
            groups: first.cast(),
            lines,
            hashes: Zeroed::new(groups * 8, false)?,
            gmask,
            shift: 64 - groups.trailing_zeros(),
            high,
            taken: OwnU64::new(0),
            live: OwnU64::new(0),
            prev: AtomicPtr::new(std::ptr::null_mut()),
        })
    }

    /// The groups of a table of at least `lines` lines: a power of two, at least 8.
    fn groups_for(lines: usize) -> Option<usize> {
        Some(lines.div_ceil(8).checked_next_power_of_two()?.max(8))
    }

    /// The bytes [`LineTable::try_new`]`(lines, ..)` holds (`LineTable::bytes`), or
    /// `u64::MAX` past any table's size.
    fn bytes_for(lines: usize) -> u64 {
        let Some(groups) = Self::groups_for(lines) else {
            return u64::MAX;
        };
        let groups = groups as u64;
        (8 * groups + groups / 8) * std::mem::size_of::<Line>() as u64
            + 8 * groups * std::mem::size_of::<OwnU32>() as u64
    }

    /// Faults in every page of the lines by a store of zero into one word of each (they
    /// are zero already): where `Zeroed::populate` is refused (kernels before 5.14), for
    /// a table no other thread can reach yet, by the helper that made it.
    fn touch_pages(&self) {
        let per_page = 4096 / std::mem::size_of::<Line>();
        for line in self.lines.iter().step_by(per_page) {
            line.w[0].store(0, Ordering::Relaxed);
        }
    }

    /// Bytes the table holds.
    pub fn bytes(&self) -> u64 {
        self.lines.bytes() + self.hashes.bytes()
    }

    /// Gives the memory of a drained table back to the OS where it can (`pages.rs`):
    /// every word reads as zero from then on, which is a free group and a dead line. The
    /// bytes given back.
    fn release(&self) -> u64 {
        let lines = if self.lines.release() {
            self.lines.bytes()
        } else {
            0
        };
        let hashes = if self.hashes.release() {
            self.hashes.bytes()
        } else {
            0
        };
        lines + hashes
    }

    /// How many lines the table has.
    pub fn capacity(&self) -> usize {
        8 * (self.gmask + 1)
    }

    /// Entries cached here.
    pub fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    /// The group `g` (any `g`, masked).
    #[inline(always)]
    fn group(&self, g: usize) -> &AtomicU64 {
        // SAFETY: `groups` points at `gmask + 1` contiguous, aligned `AtomicU64`s inside
        // `lines` (see the field), which lives as long as `self`; `g & gmask` indexes one
        // of them. They are only ever used as atomics (a shared reference to an atomic
        // inside a `Line` the slice also lends out as a `&Line`: both are shared, and
        // every access is atomic).
        unsafe { &*self.groups.as_ptr().add(g & self.gmask) }
    }

    /// The words of line `j` of group `g` (any `g`, masked; `j < 8`).
    #[inline(always)]
    fn line(&self, g: usize, j: usize) -> &[AtomicU64; 8] {
        debug_assert!(j < 8);
        let i = (g & self.gmask) * 8 + (j & 7);
        // SAFETY: `lines.len() > 8 * (gmask + 1)` (`try_new`, never changed), so
        // `i <= 8 * gmask + 7 < lines.len()`.
        &unsafe { self.lines.get_unchecked(i) }.w
    }

    /// Line `i`'s tag byte (the writer's view).
    fn byte(&self, i: usize) -> u8 {
        (self.group(i / 8).load(Ordering::Relaxed) >> (8 * (i % 8))) as u8
    }

    /// The home group of `hash`.
    #[inline(always)]
    fn home(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// The cached entry `key = [k0, k1]` (hash `hash`): its owner and metadata length,
    /// the metadata in `out[..5]` (`out[5..]` untouched). `None`: not cached, or being
    /// written; read the slot table. Never blocks, never writes to shared memory.
    #[inline(always)]
    pub fn get(&self, hash: u64, k0: u64, k1: u64, out: &mut [u64; 7]) -> Option<(u64, usize)> {
        if k0 >> 32 != self.high {
            return None;
        }
        let byte = tag8(hash);
        let mut g = self.home(hash);
        let mut left = self.gmask;
        loop {
            let word = self.group(g).load(Ordering::Acquire);
            let mut m = matches(word, byte);
            while m != 0 {
                let line = self.line(g, m.trailing_zeros() as usize / 8);
                m &= m - 1;
                match read_line(line, k0, k1, out) {
                    LineRead::Hit(owner, meta_words) => return Some((owner, meta_words)),
                    LineRead::Other => {}
                    LineRead::Changed => return None,
                }
            }
            if matches(word, EMPTY) != 0 || left == 0 {
                return None;
            }
            left -= 1;
            g += 1;
        }
    }

    /// Whether the table takes no more entries (seven eighths of its lines are taken).
    #[inline]
    pub fn is_full(&self) -> bool {
        self.taken.load(Ordering::Relaxed) as usize * 8 >= self.capacity() * MAX_LOAD_EIGHTHS
    }

    /// Prefetches the home group's word of `hash`: the first step of a batched read.
    #[inline]
    pub fn prefetch_group(&self, hash: u64) {
        super::prefetch::prefetch(self.group(self.home(hash)));
    }

    /// Peeks (unvalidated) at the home group of `hash` and prefetches the line of its
    /// first matching byte; whether there was one.
    #[inline]
    pub fn prefetch_line(&self, hash: u64) -> bool {
        let g = self.home(hash);
        let m = matches(self.group(g).load(Ordering::Relaxed), tag8(hash));
        if m == 0 {
            return false;
        }
        super::prefetch::prefetch(&self.line(g, m.trailing_zeros() as usize / 8)[0]);
        true
    }

    /// The line caching `key` (hash `hash`), as `group * 8 + byte`.
    pub fn find(&self, _t: &WriterToken, hash: u64, key: &[u64]) -> Option<usize> {
        let &[k0, k1] = key else { return None };
        if k0 >> 32 != self.high {
            return None;
        }
        let byte = tag8(hash);
        let home = self.home(hash);
        for g in home..=home + self.gmask {
            let word = self.group(g).load(Ordering::Relaxed);
            for j in 0..8 {
                if (word >> (8 * j)) as u8 == byte {
                    let line = self.line(g, j);
                    let w0 = line[0].load(Ordering::Relaxed);
                    if w0 & LOW == k0 & LOW
                        && (w0 >> 32) & 7 != DEAD
                        && line[2].load(Ordering::Relaxed) == k1
                    {
                        return Some((g & self.gmask) * 8 + j);
                    }
                }
            }
            if matches(word, EMPTY) != 0 {
                return None;
            }
        }
        None
    }

    /// Opens line `i`'s section (L1): readers of it read the slot table until
    /// [`LineTable::close`]. Changes of the cached entry in the slot table go after this
    /// (L2).
    pub fn open(&self, _t: &WriterToken, i: usize) {
        let w = &self.line(i / 8, i % 8)[0];
        let w0 = w.load(Ordering::Relaxed);
        debug_assert!(w0 & ODD == 0, "a line's section opened twice");
        w.store(w0 | ODD, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Closes line `i`'s open section with a copy of `key -> (owner, meta)`, or, if the
    /// entry is gone or no longer fits (`None`, or metadata past [`LINE_META`] words), as
    /// [`DEAD`], its byte [`DELETED`].
    pub fn close(&self, t: &WriterToken, i: usize, entry: Option<(&[u64], u64, &[u64])>) {
        let line = self.line(i / 8, i % 8);
        let w0 = line[0].load(Ordering::Relaxed);
        debug_assert!(w0 & ODD != 0, "a line closed that was not open");
        let next = ((w0 >> 35) + 1) << 35;
        match entry.filter(|(key, _, meta)| self.fits(key, meta)) {
            Some((key, owner, meta)) => {
                self.fill(line, key, owner, meta);
                line[0].store(
                    next | (meta.len() as u64 + 1) << 32 | key[0] & LOW,
                    Ordering::Release,
                );
            }
            None => {
                line[0].store(next | DEAD << 32 | w0 & LOW, Ordering::Release);
                self.live.fetch_sub(1, Ordering::Relaxed);
                // A group that has an empty byte already stops every probe that reaches
                // it, so no cached key lies past it on any probe, and this byte may be
                // empty again (the line untaken). A group with none keeps it so: the
                // byte is deleted, and probes go on past it, unless no cached key's
                // probe passes the group (`clear_deleted`).
                if matches(self.group(i / 8).load(Ordering::Relaxed), EMPTY) != 0 {
                    self.taken.fetch_sub(1, Ordering::Relaxed);
                    self.set_byte(t, i, EMPTY);
                } else {
                    self.set_byte(t, i, DELETED);
                }
                self.clear_deleted(t, i / 8);
            }
        }
    }

    /// Makes the deleted bytes of group `g` (or, if it has an empty byte, of the group
    /// before it), and then of the groups before that, empty again while no cached key's
    /// probe passes them, so that churn does not fill the table with deleted
    /// bytes. Exact: a cached key lies at the first free byte its probe had when it was
    /// cached, and every group from its home to its own has had no empty byte since
    /// (a group gains one only here, or in `close` when it has one already); so a key
    /// whose probe passes `g` lies in the groups after `g` up to the first with an empty
    /// byte, which are checked (the writer's hashes give each line's home). Gives up,
    /// leaving the bytes deleted, past [`CLEAR_SCAN`] groups.
    fn clear_deleted(&self, t: &WriterToken, g: usize) {
        // A group with an empty byte has nothing to clear, but the one before it may
        // (its probes may have gone on through this one only for the line just freed);
        // and clearing a group may let the one before it clear too.
        let mut g = g & self.gmask;
        if matches(self.group(g).load(Ordering::Relaxed), EMPTY) != 0 {
            g = g.wrapping_sub(1) & self.gmask;
        }
        for _ in 0..CLEAR_SCAN.min(self.gmask) {
            let word = self.group(g).load(Ordering::Relaxed);
            let deleted = (0..8).any(|j| (word >> (8 * j)) as u8 == DELETED);
            if matches(word, EMPTY) != 0 || !deleted || !self.try_clear(t, g) {
                return;
            }
            g = g.wrapping_sub(1) & self.gmask;
        }
    }

    /// [`LineTable::clear_deleted`] of group `g` alone; whether it cleared it.
    fn try_clear(&self, t: &WriterToken, g: usize) -> bool {
        for d in 1..=CLEAR_SCAN.min(self.gmask) {
            let next = (g + d) & self.gmask;
            let word = self.group(next).load(Ordering::Relaxed);
            // Full bytes are exactly those with the high bit set.
            let mut full = word & HIGHS;
            while full != 0 {
                let i = next * 8 + full.trailing_zeros() as usize / 8;
                full &= full - 1;
                let home = self.home(u64::from(self.hashes[i].load(Ordering::Relaxed)) << 32);
                // Whether `g` lies on the probe from `home` to `next` (cyclically).
                let dist = |to: usize| to.wrapping_sub(home) & self.gmask;
                if dist(g) < dist(next) {
                    return false;
                }
            }
            if matches(word, EMPTY) != 0 {
                let word = self.group(g).load(Ordering::Relaxed);
                for j in (0..8).filter(|j| (word >> (8 * j)) as u8 == DELETED) {
                    self.set_byte(t, g * 8 + j, EMPTY);
                    self.taken.fetch_sub(1, Ordering::Relaxed);
                }
                return true;
            }
        }
        false
    }

    /// Caches the new entry `key -> (owner, meta)` (hash `hash`), which the slot table
    /// has published and the cache does not hold, if it fits and a line is free; its
    /// line.
    pub fn insert(
        &self,
        t: &WriterToken,
        hash: u64,
        key: &[u64],
        owner: u64,
        meta: &[u64],
    ) -> Option<usize> {
        if !self.fits(key, meta) {
            return None;
        }
        debug_assert!(self.find(t, hash, key).is_none());
        if self.is_full() {
            return None;
        }
        let i = self.free_line(hash)?;
        let byte = self.byte(i);
        if byte == EMPTY {
            self.taken.fetch_add(1, Ordering::Relaxed);
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        self.hashes[i].store((hash >> 32) as u32, Ordering::Relaxed);
        self.open(t, i);
        self.close(t, i, Some((key, owner, meta)));
        self.set_byte(t, i, tag8(hash));
        Some(i)
    }

    /// Whether an entry of `key` and `meta` is one a line caches.
    pub fn fits(&self, key: &[u64], meta: &[u64]) -> bool {
        key.len() == 2 && meta.len() <= LINE_META && key[0] >> 32 == self.high
    }

    /// The entry line `i` holds, if any, as `(hash, key, owner, meta)`: the hash's high
    /// half (enough for its home and tag byte in any table), and the metadata in `meta`.
    fn entry(
        &self,
        _t: &WriterToken,
        i: usize,
        meta: &mut Vec<u64>,
    ) -> Option<(u64, [u64; 2], u64)> {
        let byte = self.byte(i);
        let line = self.line(i / 8, i % 8);
        let w0 = line[0].load(Ordering::Relaxed);
        let shape = (w0 >> 32) & 7;
        if byte & 0x80 == 0 || shape == DEAD {
            return None;
        }
        meta.clear();
        meta.extend(
            line[3..][..shape as usize - 1]
                .iter()
                .map(|w| w.load(Ordering::Relaxed)),
        );
        let hash = u64::from(self.hashes[i].load(Ordering::Relaxed)) << 32;
        let key = [self.high << 32 | w0 & LOW, line[2].load(Ordering::Relaxed)];
        Some((hash, key, line[1].load(Ordering::Relaxed)))
    }

    /// The first free line (empty or deleted byte) on the probe of `hash`.
    fn free_line(&self, hash: u64) -> Option<usize> {
        let home = self.home(hash);
        for g in home..=home + self.gmask {
            let word = self.group(g).load(Ordering::Relaxed);
            let free = matches(word, EMPTY) | matches(word, DELETED);
            if free != 0 {
                return Some((g & self.gmask) * 8 + free.trailing_zeros() as usize / 8);
            }
        }
        None
    }

    /// Stores the payload words of a line inside its open section.
    /// (Words past the metadata keep what they held: no one uses them.)
    fn fill(&self, line: &[AtomicU64; 8], key: &[u64], owner: u64, meta: &[u64]) {
        line[1].store(owner, Ordering::Relaxed);
        line[2].store(key[1], Ordering::Relaxed);
        for (w, &x) in line[3..].iter().zip(meta) {
            w.store(x, Ordering::Relaxed);
        }
    }

    /// Stores line `i`'s tag byte (Release: after its section's close).
    fn set_byte(&self, _t: &WriterToken, i: usize, byte: u8) {
        let group = self.group(i / 8);
        let shift = 8 * (i % 8);
        let word = group.load(Ordering::Relaxed);
        group.store(
            word & !(0xff << shift) | u64::from(byte) << shift,
            Ordering::Release,
        );
    }

    /// Checks every taken line against `present`, which answers the slot table's entry of
    /// a key (owner and metadata): a cached copy must equal it. Descriptions of what
    /// differs, for `Shard::audit`.
    pub fn audit(
        &self,
        t: &WriterToken,
        mut present: impl FnMut(&[u64]) -> Option<(u64, Vec<u64>)>,
        problems: &mut Vec<String>,
    ) -> usize {
        let mut cached = 0;
        for i in 0..self.capacity() {
            let byte = self.byte(i);
            let line = self.line(i / 8, i % 8);
            let w0 = line[0].load(Ordering::Relaxed);
            let shape = (w0 >> 32) & 7;
            if w0 & ODD != 0 {
                problems.push(format!("line {i} left open"));
            }
            if byte & 0x80 == 0 {
                if shape != DEAD {
                    problems.push(format!("line {i} is free but holds an entry"));
                }
                continue;
            }
            if shape == DEAD || shape as usize > LINE_META + 1 {
                problems.push(format!("line {i} has a tag byte but no entry"));
                continue;
            }
            let mut meta = Vec::new();
            let (hash, key, owner) = self.entry(t, i, &mut meta).expect("full and not dead");
            if tag8(hash) != byte {
                problems.push(format!("line {i}: its hash and tag byte differ"));
            }
            if present(&key) != Some((owner, meta)) {
                problems.push(format!(
                    "line {i} caches {key:x?}, which the table holds otherwise"
                ));
            }
            cached += 1;
        }
        if cached != self.len() {
            problems.push(format!(
                "{cached} lines cached, the count says {}",
                self.len()
            ));
        }
        cached
    }
}

/// A shard's line cache as readers find it: the current [`LineTable`], with every table
/// it replaced chained behind it until the cell drops, and, while the writer moves the
/// lines of a replaced table over (see "Growth" in the module docs), that table.
pub struct LineCell {
    /// The current table: from `Box::into_raw`, never null, freed only in `Drop`.
    current: AtomicPtr<LineTable>,
    /// The writer's: the table whose lines are being moved into the current one, or
    /// null.
    source: AtomicPtr<LineTable>,
    /// The writer's: the next line of `source` to move.
    next: OwnU64,
    /// Bytes of the tables that hold memory: the current one, replaced ones whose memory
    /// the OS has not taken back, and the next one while a helper makes it. Stored by
    /// the writer.
    bytes: OwnU64,
    /// Whether tables the writer makes itself go on huge pages (`ShardConfig::
    /// huge_pages`; those made off its path always do).
    huge: bool,
    /// The writer's: the next table, being made off the writer's path (see "Growth"):
    /// the helper thread that maps and faults it in, and the bytes counted for it.
    next_table: std::sync::Mutex<Option<(std::thread::JoinHandle<Option<LineTable>>, u64)>>,
    /// The writer's: 1 while `next_table` holds a helper, so that inserts from five
    /// eighths on take its lock only to hand a made table over or to drop it.
    preparing: OwnU64,
    /// The writer's: 1 once a helper thread could not be started.
    no_helper: OwnU64,
}

/// Sets the calling thread's CPU affinity to the process's main thread's (a helper made
/// by a pinned writer would otherwise share its one core). Best effort.
#[cfg(all(target_os = "linux", not(miri), not(roster_loom)))]
fn unpin() {
    // SAFETY: `set` is a plain bit array, valid zeroed; both calls take its size and a
    // pointer to it, and only read (`sched_setaffinity`) or write (`sched_getaffinity`)
    // within it. Pid 0 is the calling thread; `getpid()` names the main thread, whose
    // mask is read. A failure of either leaves the affinity as it was.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(libc::getpid(), size, &mut set) == 0 {
            libc::sched_setaffinity(0, size, &set);
        }
    }
}

/// A line cache's helper thread: named, on a 64 KiB stack (it maps, faults in or unmaps
/// a table, and needs no more).
fn helper_thread() -> std::thread::Builder {
    std::thread::Builder::new()
        .name("roster-lines".into())
        .stack_size(64 << 10)
}

/// Nothing to unpin where no helper is made.
#[cfg(not(all(target_os = "linux", not(miri), not(roster_loom))))]
fn unpin() {}

/// Tables of at least this many bytes are made off the writer's path, on huge pages: a
/// helper thread maps the next table and faults all of it in before the writer needs it.
const PREPARE_FROM: u64 = super::pages::HUGE_FROM as u64;

/// The most lines a first table has where tables are made off the writer's path: the
/// biggest table of fewer than [`PREPARE_FROM`] bytes (2.2 MiB).
const FIRST_LINES_MAX: usize = 1 << 15;

/// Whether this build can make tables off the writer's path (not under Miri or loom,
/// which model neither the helper thread's `madvise` nor huge pages).
const CAN_PREPARE: bool = cfg!(all(target_os = "linux", not(miri), not(roster_loom)));

impl LineCell {
    /// A cell whose first table has at least `lines` lines, for keys whose word 0 has
    /// `high` as its high half; `None` if the memory cannot be had.
    pub fn try_new(lines: usize, high: u32, huge: bool) -> Option<LineCell> {
        // Where tables past `PREPARE_FROM` bytes are made off the writer's path, the first
        // one is smaller than that, so that every big one is: made before it is needed,
        // faulted in whole, on huge pages.
        let lines = if CAN_PREPARE {
            lines.min(FIRST_LINES_MAX)
        } else {
            lines
        };
        let table = LineTable::try_new(lines, u64::from(high), huge)?;
        Some(LineCell {
            bytes: OwnU64::new(table.bytes()),
            current: AtomicPtr::new(Box::into_raw(Box::new(table))),
            source: AtomicPtr::new(std::ptr::null_mut()),
            next: OwnU64::new(0),
            huge,
            next_table: std::sync::Mutex::new(None),
            preparing: OwnU64::new(0),
            no_helper: OwnU64::new(0),
        })
    }

    /// The current table.
    #[inline(always)]
    pub fn get(&self) -> &LineTable {
        let p = self.current.load(Ordering::Acquire);
        // SAFETY:
        // 1. `p` is non-null: set in `try_new` and `grow` from `Box::into_raw`.
        // 2. The `Acquire` load pairs with the `Release` store that published it, so the
        //    table's fields as made before publication are visible.
        // 3. Tables are freed only in `Drop for LineCell`, which needs `&mut self`, so the
        //    table outlives the `&self` borrow the result is tied to.
        // 4. Every field reached through `&LineTable` is an atomic or immutable.
        unsafe { &*p }
    }

    /// The table whose lines are being moved, if a move runs (the writer's).
    pub fn source(&self, _t: &WriterToken) -> Option<&LineTable> {
        let p = self.source.load(Ordering::Relaxed);
        // SAFETY: a non-null `source` is a table `grow` replaced, owned by the `prev`
        // chain of the current table, which frees it only in `Drop for LineCell` (with
        // `&mut self`); only the writer stores `source`, so its own loads see what it
        // stored.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Bytes of the tables that hold memory.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The current table's line caching `key` (hash `hash`). A key still cached in the
    /// table being drained is moved over first, so every change of a cached entry
    /// happens in the current table.
    pub fn find(&self, t: &WriterToken, hash: u64, key: &[u64]) -> Option<usize> {
        let table = self.get();
        if let Some(i) = table.find(t, hash, key) {
            return Some(i);
        }
        let source = self.source(t)?;
        let j = source.find(t, hash, key)?;
        self.move_line(t, source, j, &mut Vec::new())
    }

    /// Caches the new entry `key -> (owner, meta)` (hash `hash`), which the slot table
    /// has published and the cache does not hold, if it fits; grows the cache first if
    /// it is full.
    pub fn insert(&self, t: &WriterToken, hash: u64, key: &[u64], owner: u64, meta: &[u64]) {
        let table = self.get();
        if !table.fits(key, meta) {
            return;
        }
        let taken = table.taken.load(Ordering::Relaxed) as usize * 8;
        if taken >= table.capacity() * PREPARE_EIGHTHS {
            if self.preparing.load(Ordering::Relaxed) == 0 {
                self.prepare(t);
            }
        } else if self.preparing.load(Ordering::Relaxed) != 0
            && table.len() * 8 < table.capacity() * DROP_EIGHTHS
        {
            self.drop_prepared(t);
        }
        if table.is_full() && !self.grow(t) {
            return;
        }
        self.get().insert(t, hash, key, owner, meta);
    }

    /// Starts making the next table (twice the current one) off the writer's path, if it
    /// is big enough to be worth it and none is being made: a helper thread maps it on
    /// huge pages and faults it in whole (`Zeroed::populate`), so neither the writer nor
    /// a reader ever waits for its pages. Its bytes are counted from now on.
    fn prepare(&self, _t: &WriterToken) -> bool {
        let old = self.get();
        let lines = 2 * old.capacity();
        let bytes = LineTable::bytes_for(lines);
        if !self.can_prepare(bytes) {
            return false;
        }
        let mut next = self.next_table.lock().unwrap_or_else(|e| e.into_inner());
        if next.is_some() {
            return true;
        }
        let high = old.high;
        let helper = helper_thread().spawn(move || {
            // Off a pinned writer's core: the helper inherits its creator's affinity.
            unpin();
            let table = LineTable::try_new(lines, high, true)?;
            if !table.lines.populate() {
                table.touch_pages();
            }
            table.hashes.populate();
            Some(table)
        });
        match helper {
            Ok(helper) => {
                self.bytes.store(self.bytes() + bytes, Ordering::Relaxed);
                *next = Some((helper, bytes));
                self.preparing.store(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                // No thread to be had: the writer makes its tables itself from now on.
                self.no_helper.store(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Whether a next table of `bytes` bytes is made off the writer's path: where this
    /// build can, for tables of at least [`PREPARE_FROM`] bytes, unless a helper thread
    /// could not be started once.
    fn can_prepare(&self, bytes: u64) -> bool {
        CAN_PREPARE && bytes >= PREPARE_FROM && self.no_helper.load(Ordering::Relaxed) == 0
    }

    /// The next table, if [`LineCell::prepare`] made one: `Ok(Some(table))` when made,
    /// `Ok(None)` when none was started, `Err(())` while its helper still works (or it
    /// failed), when the writer goes on without growing.
    fn take_prepared(&self, _t: &WriterToken) -> Result<Option<LineTable>, ()> {
        let mut next = self.next_table.lock().unwrap_or_else(|e| e.into_inner());
        match next.as_ref() {
            None => return Ok(None),
            Some((helper, _)) if !helper.is_finished() => return Err(()),
            Some(_) => {}
        }
        let (helper, bytes) = next.take().expect("checked above");
        self.preparing.store(0, Ordering::Relaxed);
        match helper.join().ok().flatten() {
            Some(table) => {
                debug_assert_eq!(table.bytes(), bytes, "bytes_for and try_new agree");
                Ok(Some(table))
            }
            None => {
                // The helper could not get the memory: uncounted again, and the next
                // `prepare` tries anew.
                self.bytes.store(self.bytes() - bytes, Ordering::Relaxed);
                Err(())
            }
        }
    }

    /// Drops the next table [`LineCell::prepare`] made, once made, because at an insert
    /// the current table's entries were below [`DROP_EIGHTHS`] of its lines (and its
    /// taken lines, deleted ones included, below five eighths): churn that stays below
    /// seven eighths would otherwise keep a table twice the current one resident
    /// without ever using it. One still being made is left to finish (and checked again
    /// at a later insert); one made again is made at five eighths, as the first was.
    fn drop_prepared(&self, t: &WriterToken) {
        if let Ok(Some(table)) = self.take_prepared(t) {
            self.bytes
                .store(self.bytes() - table.bytes(), Ordering::Relaxed);
            // Unmapped off the writer's path too: a faulted-in table of 2^21 lines is
            // 128 MiB. If no thread can be had, `spawn` drops the closure, and the
            // table with it, here.
            let _ = helper_thread().spawn(move || drop(table));
        }
    }

    /// Publishes an empty table twice the size of the current one and starts moving the
    /// current one's lines over (see "Growth"); a move
    /// still running is finished first (pacing makes that rare). `false` if the memory
    /// cannot be had, or the next table is still being made off the writer's path
    /// ([`LineCell::prepare`]): the cache then takes no new entries until it has room.
    pub fn grow(&self, t: &WriterToken) -> bool {
        self.finish(t);
        let old = self.get();
        let new = match self.take_prepared(t) {
            Ok(Some(new)) => new,
            // Being made (or it failed): the cache takes no new entries meanwhile.
            Err(()) => return false,
            // Big enough to be made off the writer's path, and not started yet: started
            // now (or, if no helper can be had, made below).
            Ok(None) if self.prepare(t) => return false,
            Ok(None) => {
                let Some(new) = LineTable::try_new(2 * old.capacity(), old.high, self.huge) else {
                    return false;
                };
                self.bytes
                    .store(self.bytes() + new.bytes(), Ordering::Relaxed);
                new
            }
        };
        debug_assert_eq!(new.capacity(), 2 * old.capacity());
        let old = self.current.load(Ordering::Relaxed);
        new.prev.store(old, Ordering::Relaxed);
        self.source.store(old, Ordering::Relaxed);
        self.next.store(0, Ordering::Relaxed);
        // Release: a reader that finds the new table finds it empty and made.
        self.current
            .store(Box::into_raw(Box::new(new)), Ordering::Release);
        true
    }

    /// Moves the cached entries of the next `lines` lines (rounded up to whole groups) of
    /// the table being drained, if one is, and ends the move when it is drained: the
    /// writer's step after each write.
    pub fn migrate_some(&self, t: &WriterToken, lines: usize) {
        let Some(source) = self.source(t) else {
            return;
        };
        // Whole groups: one load of a group's word says which of its lines to move.
        let from = self.next.load(Ordering::Relaxed) as usize;
        let end = from
            .saturating_add(lines.next_multiple_of(8))
            .min(source.capacity());
        let mut meta = Vec::with_capacity(LINE_META);
        for g in from / 8..end / 8 {
            let mut full = source.group(g).load(Ordering::Relaxed) & HIGHS;
            while full != 0 {
                self.move_line(
                    t,
                    source,
                    g * 8 + full.trailing_zeros() as usize / 8,
                    &mut meta,
                );
                full &= full - 1;
            }
        }
        self.next.store(end as u64, Ordering::Relaxed);
        if end == source.capacity() {
            debug_assert_eq!(source.len(), 0, "a drained table still caches entries");
            self.source.store(std::ptr::null_mut(), Ordering::Relaxed);
            // Every line of `source` is dead or free now, so a reader's use of any of its
            // words, zero included, is a miss ("Growth"); fence(Release) orders the kills
            // before the OS's zeroing, which the writer makes as if it stored zeros.
            fence(Ordering::Release);
            let freed = source.release();
            self.bytes.store(self.bytes() - freed, Ordering::Relaxed);
        }
    }

    /// Whether a move of lines runs.
    pub fn migrating(&self, t: &WriterToken) -> bool {
        self.source(t).is_some()
    }

    /// Runs the move of lines, if one runs, to its end.
    pub fn finish(&self, t: &WriterToken) {
        while self.migrating(t) {
            self.migrate_some(t, 1 << 12);
        }
    }

    /// Moves the entry of line `j` of `source`, if it holds one, to the current table: a
    /// copy there first, then the line in `source` dies, so at every moment one of the
    /// two copies is there, each of the entry as it is (the entry does not change
    /// meanwhile). Its line in the current table, if it got one.
    fn move_line(
        &self,
        t: &WriterToken,
        source: &LineTable,
        j: usize,
        meta: &mut Vec<u64>,
    ) -> Option<usize> {
        let (hash, key, owner) = source.entry(t, j, meta)?;
        let i = self.get().insert(t, hash, &key, owner, meta);
        source.open(t, j);
        source.close(t, j, None);
        i
    }

    /// Checks the lines of the current table and of one being drained against `present`
    /// (see [`LineTable::audit`]); how many entries they cache.
    pub fn audit(
        &self,
        t: &WriterToken,
        mut present: impl FnMut(&[u64]) -> Option<(u64, Vec<u64>)>,
        problems: &mut Vec<String>,
    ) -> usize {
        if let Some(source) = self.source(t) {
            // G1: a key cached in the table being drained is not in the current one.
            let mut meta = Vec::new();
            for j in 0..source.capacity() {
                if let Some((hash, key, _)) = source.entry(t, j, &mut meta) {
                    if self.get().find(t, hash, &key).is_some() {
                        problems.push(format!("G1: {key:x?} is cached in both tables"));
                    }
                }
            }
        }
        [Some(self.get()), self.source(t)]
            .into_iter()
            .flatten()
            .map(|table| table.audit(t, &mut present, problems))
            .sum()
    }
}

impl Drop for LineCell {
    fn drop(&mut self) {
        // A table still being made is waited for, and dropped with its helper's result.
        let next = self.next_table.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some((helper, _)) = next.take() {
            let _ = helper.join();
        }
        let mut p = self.current.load(Ordering::Acquire);
        while !p.is_null() {
            // SAFETY: every table in the `prev` chain came from `Box::into_raw` (in
            // `try_new` or `grow`), appears in the chain exactly once, and `&mut self`
            // proves no reader holds a borrow.
            let table = unsafe { Box::from_raw(p) };
            p = table.prev.load(Ordering::Acquire);
        }
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    /// A hash whose home group is `home` (of a table of `groups` groups) and whose tag
    /// byte comes from `k`.
    fn hash(groups: usize, home: u64, k: u64) -> u64 {
        (home << (64 - groups.trailing_zeros())) | (k & 0x7f) << 33
    }

    fn get(t: &LineTable, h: u64, key: [u64; 2]) -> Option<(u64, Vec<u64>)> {
        let mut out = [0u64; 7];
        t.get(h, key[0], key[1], &mut out)
            .map(|(owner, n)| (owner, out[..n].to_vec()))
    }

    #[test]
    fn a_line_caches_a_short_entry_and_only_its_key() {
        let t = LineTable::try_new(64, 7, false).unwrap();
        let w = WriterToken::new(0);
        let key = [7 << 32 | 0xabc, 42];
        let h = hash(8, 1, 5);
        assert_eq!(get(&t, h, key), None, "nothing cached yet");
        t.insert(&w, h, &key, 9, &[1, 2, 3]);
        assert_eq!(get(&t, h, key), Some((9, vec![1, 2, 3])));
        assert_eq!(get(&t, h, [key[0], 43]), None, "another name");
        assert_eq!(get(&t, h, [8 << 32 | 0xabc, 42]), None, "another high half");
        assert_eq!(get(&t, hash(8, 0, 5), key), None, "another home");
        // Keys of another high half, or longer metadata, are not cached.
        t.insert(&w, h, &[8 << 32, 1], 9, &[]);
        t.insert(&w, h, &[7 << 32, 1], 9, &[0; 6]);
        assert_eq!(get(&t, h, [7 << 32, 1]), None);
        let mut problems = Vec::new();
        let cached = t.audit(
            &w,
            |k| (k == key).then(|| (9, vec![1, 2, 3])),
            &mut problems,
        );
        assert_eq!((cached, problems), (1, Vec::<String>::new()));
    }

    #[test]
    fn an_open_line_sends_readers_on_and_its_close_publishes_the_change() {
        let t = LineTable::try_new(64, 0, false).unwrap();
        let w = WriterToken::new(0);
        let (h, key) = (hash(8, 0, 1), [0, 1]);
        t.insert(&w, h, &key, 3, &[10]);
        let i = t.find(&w, h, &key).unwrap();
        t.open(&w, i);
        assert_eq!(get(&t, h, key), None, "being written");
        t.close(&w, i, Some((&key, 4, &[11, 12])));
        assert_eq!(get(&t, h, key), Some((4, vec![11, 12])));
        // An update past five words drops the copy.
        t.open(&w, i);
        t.close(&w, i, Some((&key, 4, &[0; 6])));
        assert_eq!((get(&t, h, key), t.find(&w, h, &key)), (None, None));
        t.insert(&w, h, &key, 5, &[]);
        assert_eq!(
            get(&t, h, key),
            Some((5, vec![])),
            "the deleted line is reused"
        );
        assert_eq!(t.find(&w, h, &key), Some(i));
    }

    #[test]
    fn probes_pass_full_and_deleted_groups_and_stop_at_an_empty_byte() {
        // 8 groups; 20 keys of one home fill it and two more groups.
        let t = LineTable::try_new(64, 0, false).unwrap();
        let w = WriterToken::new(0);
        let keys: Vec<[u64; 2]> = (0..20).map(|k| [0, k]).collect();
        let h = |k: u64| hash(8, 3, k);
        for (k, key) in keys.iter().enumerate() {
            t.insert(&w, h(k as u64), key, k as u64, &[k as u64]);
        }
        // Remove every other key of the home group and the next.
        for k in (0..16).step_by(2) {
            let i = t.find(&w, h(k), &keys[k as usize]).unwrap();
            t.open(&w, i);
            t.close(&w, i, None);
        }
        for (k, key) in keys.iter().enumerate() {
            let want = (k % 2 == 1 || k >= 16).then(|| (k as u64, vec![k as u64]));
            assert_eq!(get(&t, h(k as u64), *key), want, "key {k}");
        }
        // A key of the same home that was never cached: the probe ends at the third group.
        assert_eq!(get(&t, h(99), [0, 99]), None);
    }

    #[test]
    fn a_full_table_caches_nothing_more() {
        // The smallest table: 8 groups, 64 lines.
        let t = LineTable::try_new(1, 0, false).unwrap();
        let w = WriterToken::new(0);
        assert_eq!(t.capacity(), 64);
        for k in 0..64u64 {
            t.insert(&w, hash(8, k % 8, k), &[0, k], k, &[]);
        }
        let cached = (0..64u64)
            .filter(|&k| get(&t, hash(8, k % 8, k), [0, k]).is_some())
            .count();
        assert_eq!(cached, 56, "seven eighths of 64 lines");
    }

    #[test]
    fn churn_frees_lines_in_groups_that_still_have_empty_bytes() {
        // 8 groups; keys come and go one at a time, far more of them than lines.
        let t = LineTable::try_new(64, 0, false).unwrap();
        let w = WriterToken::new(0);
        for k in 0..200u64 {
            let h = hash(8, k % 8, k);
            t.insert(&w, h, &[0, k], k, &[k]);
            assert_eq!(get(&t, h, [0, k]), Some((k, vec![k])), "key {k} cached");
            let i = t.find(&w, h, &[0, k]).unwrap();
            t.open(&w, i);
            t.close(&w, i, None);
            assert_eq!(get(&t, h, [0, k]), None);
        }
        assert!(!t.is_full());
    }

    /// Deleted bytes go once no probe needs them, so churn at any load short of full
    /// never fills the table (which would make it grow, or stop caching).
    #[test]
    fn deleted_bytes_no_probe_needs_become_empty_again() {
        let t = LineTable::try_new(64, 0, false).unwrap();
        let w = WriterToken::new(0);
        let remove = |h: u64, key: [u64; 2]| {
            let i = t.find(&w, h, &key).unwrap();
            t.open(&w, i);
            t.close(&w, i, None);
        };
        // 16 keys of home 0 fill groups 0 and 1; group 0's go first, and stay deleted
        // while group 1's keys probe through it; once those go too, both groups clear.
        let h = |k: u64| hash(8, 0, k);
        for k in 0..16 {
            t.insert(&w, h(k), &[0, k], k, &[]);
        }
        (0..8).for_each(|k| remove(h(k), [0, k]));
        assert_eq!(t.taken.load(Ordering::Relaxed), 16, "group 0 still needed");
        assert_eq!(
            (8..16).filter(|&k| get(&t, h(k), [0, k]).is_some()).count(),
            8
        );
        (8..16).for_each(|k| remove(h(k), [0, k]));
        assert_eq!(t.taken.load(Ordering::Relaxed), 0);
        // Random churn at 28 live keys of 64 lines, homes drawn from the keys.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut live: Vec<(u64, [u64; 2])> = Vec::new();
        let keys = if cfg!(miri) { 2_000 } else { 100_000 };
        for k in 100..keys {
            let key = (next() & !LOW, [0, k]);
            t.insert(&w, key.0, &key.1, k, &[]);
            live.push(key);
            if live.len() > 28 {
                let (h, key) = live.swap_remove((next() % live.len() as u64) as usize);
                remove(h, key);
            }
            assert!(!t.is_full(), "full after {k} keys");
        }
        for (h, key) in &live {
            assert_eq!(get(&t, *h, *key).map(|(o, _)| o), Some(key[1]));
        }
    }
}
