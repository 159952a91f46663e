//! The line cache: one-line copies of short entries, which a reader tries before the
//! slot table (opt-in: `ShardConfig::line_cache`). The first step of the v3 layout of
//! `results/2026-12-07-kvm-xeon-2c-0d228b0-v4`: a hit reads one cache line where the slot
//! table's read takes two in series (the slot, then the block).
//!
//! # Layout
//!
//! The cache is a directory of *segments* (extendible hashing). A segment is fixed: 64
//! *groups* of eight lines, a tag word per group (one byte a line), and the writer's
//! bookkeeping. A line is 64-byte aligned, eight atomic words:
//!
//! ```text
//! w0: seq:29 (bits 35..64, bit 35 = odd while written) | shape:3 | key word 0's low half
//! w1: the owner        w2: key word 1        w3..w7: up to five metadata words
//! ```
//!
//! `shape` is the number of metadata words plus one, or [`DEAD`] for a line that holds
//! no entry. Tag bytes: [`EMPTY`] (never used since the segment was made), [`DELETED`]
//! (used, now free) or `0x80 |` seven bits of the hash ([`tag8`]).
//!
//! A key's segment is the directory entry `(hash >> 40) & (2^G - 1)`, where `G` is the
//! directory's depth; its home group in the segment is the hash's top six bits. A probe
//! walks the segment's groups from home (wrapping within the segment) and stops at the
//! first group with an empty byte: an insert takes the first free byte on the key's
//! probe, so the key, if cached, lies before it. A segment has a depth `d <= G` of its
//! own and a prefix: it holds the keys whose hash bits `40..40 + d` are the prefix, and
//! the `2^(G - d)` directory entries whose low `d` bits are the prefix point at it.
//!
//! Only entries whose key is two words, whose key word 0 has the high half the cache was
//! made for (the engine's local node: keys of other nodes are not cached), and whose
//! metadata is at most five words are cached. The slot table stays the record of every
//! entry; the cache holds copies.
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
//! - S1: a segment that is full (seven eighths of its lines taken) is *split*: two
//!   segments of depth `d + 1` (after doubling the directory if `d == G`) get copies of
//!   its entries, each by its hash bit `40 + d` (sections of their own, L1, before they
//!   are published); the directory entries that pointed at it are repointed (Release)
//!   at the two; then it is *retired*: each of its entries' lines is killed, a section
//!   that closes it [`DEAD`]. One whose entries fill less than three eighths of it is
//!   rebuilt instead, into one segment of its own depth, the same way. No entry changes
//!   between its copy and its old line's kill.
//! - S2: a retired segment is made again (for a later split) by emptying its tag words
//!   (its lines are dead already); it is published only by directory stores (Release)
//!   after that. Its lines' sequence numbers go on from where they were.
//! - S3: the directory doubles in place: entries `2^G..2^(G+1)` get copies of entries
//!   `0..2^G` (Release), then the depth's mask `2^(G+1) - 1` is stored (Release).
//!
//! Reader ([`LineCell::get`]): the depth's mask (Acquire) and the key's directory entry
//! (Acquire) give its segment; then the group words (Acquire) from home, and for each
//! byte that matches: `w0` (Acquire), the key compare and the payload (Relaxed),
//! `fence(Acquire)`, `w0` again (Relaxed). A hit needs `w0` even, unchanged, not
//! [`DEAD`], and the key's words. Anything else answers `None`, and the caller reads the
//! slot table: a miss here is never an answer, so the cache needs no miss validation.
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
//! - no hit from a retired segment's old copy (S1): the entry's later changes happen in
//!   the segment that took it over, not in the old line, but each comes after the old
//!   line's kill in the writer's order. A reader whose two `w0` loads of the old line
//!   both read the close from before the kill precede the kill's open in the line's
//!   modification order, so the kill does not happen before them, and neither does any
//!   change after it: the read is ordered before the change (and before any later write
//!   the reader may have seen: had it seen one, the kill would happen before its loads,
//!   which would then read it or later). The copy it reads is the entry as it was (no
//!   change between the copy and the kill).
//! - no hit from a segment made again (S2): its lines are dead from its retirement on
//!   until a section of its new life writes one, with a copy of an entry of that life's
//!   segment, which is a current copy (L2 holds in the new life as in any), whichever
//!   way the reader came to it; a reader that reads an old tag word reads a line that is
//!   dead, or of the new life, or of the old life before its kill (as above). Sequence
//!   numbers never go back, so no section of the new life looks like the old one's.
//! - S3 and S1's repointing only decide which segment a reader reads; a reader on a stale
//!   directory entry reads a segment that is live (its hits are current copies) or
//!   retired (as above). The mask and entry loads (Acquire) make the segment's making
//!   happen before the reader's loads of it, so it reads zeroed or later tag words.
//! - Liveness is checked by the caller from the owner, as for a slot table hit (SPEC I1).
//!
//! A split copies at most seven eighths of a segment's 512 lines, whatever the cache
//! holds: no write waits for a whole table's copy. The directory's doubling copies its
//! `2^G` pointers (8 bytes each: at most 1 MiB, at 2^17 entries, against the 4.6 GiB
//! of segments that takes); a split whose keys all go to one side splits again, as
//! extendible hashing does, which random hashes make rare.
//! Segments come from *slabs* of a huge page's worth (59 segments; fewer under Miri and
//! loom). The first (64 segments) is on small pages, faulted in as it is used, so that a
//! small cache stays small. Past it, on Linux, each slab is mapped on huge pages and
//! faulted in whole by a helper thread (`LineCell::prepare`), started when the current
//! slab is half used; a full segment whose split needs a new slab while the helper
//! works does not split, and its new entries go uncached, as a cache may leave them.
//! Elsewhere, or where no helper can be started, the writer maps the slabs (on huge
//! pages if `huge`, taking their faults). Retired segments are made again before the
//! slabs give new ones, so memory follows the largest the cache has been. Segments
//! average about ln 2 of their most (seven eighths), as extendible hashing does: about
//! 120 bytes of lines, tag bytes and the writer's hash halves an entry.
//!
//! Sequence numbers have 29 bits and grow by 2 a section: one line's wrap after 2^28
//! writes of it, eight times fewer than a slot's (see `table.rs`). A reader stalled
//! between its two `w0` loads while one key is rewritten 2^28 times (about two minutes of
//! a writer doing nothing else) could take a changed line for an unchanged one; the
//! protocol assumes no reader does, as the slot table's does for its bound.

use super::pages::{Zeroable, Zeroed};
use super::table::WriterToken;
use crate::sync::{fence, AtomicPtr, AtomicU64, Ordering, OwnU32, OwnU64};

/// A tag byte never used since the segment was made: a probe stops at its group.
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
/// Groups `Segment::clear_deleted` looks at, at most, past a group it would clear.
const CLEAR_SCAN: usize = 8;
/// A segment takes at most 7 of 8 lines (entries and deleted ones), as a slot table.
const MAX_LOAD_EIGHTHS: usize = 7;
/// A full segment whose entries fill fewer than 3 of its 8 lines is rebuilt alone, at its
/// depth, rather than split (its other taken lines are deleted ones).
const REBUILD_EIGHTHS: usize = 3;

/// Groups of a segment: 64 (a 32 KiB segment of lines); 2 under loom, whose models
/// check every interleaving of every atomic they touch, and 8 under Miri, which checks
/// every access of the same code on a smaller segment.
const GROUPS: usize = if cfg!(roster_loom) {
    2
} else if cfg!(miri) {
    8
} else {
    64
};
/// Lines of a segment.
const SEG_LINES: usize = 8 * GROUPS;
/// `hash >> HOME_SHIFT` is a key's home group in its segment: the hash's top bits.
const HOME_SHIFT: u32 = 64 - GROUPS.trailing_zeros();
/// The directory is indexed by the hash's bits from here: above [`tag8`]'s byte
/// (33..40), below the home's top six.
const DIR_SHIFT: u32 = 40;
/// The directory's most bits: 18 (hash bits 40..58, up to the home's); fewer under Miri
/// and loom, which make the whole directory.
const MAX_DEPTH: u32 = if cfg!(roster_loom) {
    2
} else if cfg!(miri) {
    8
} else {
    18
};
/// Segments a slab holds: a huge page's worth (59; fewer under Miri and loom).
const SLAB: usize = if cfg!(any(miri, roster_loom)) {
    2
} else {
    super::pages::HUGE_PAGE / std::mem::size_of::<Segment>()
};

/// Segments of the first slab: 64 (2.2 MiB, on small pages, faulted in as used), so
/// that a cache of up to about 14k entries takes no huge page.
const FIRST_SLAB: usize = if cfg!(any(miri, roster_loom)) {
    SLAB
} else {
    64
};
/// Bytes of a slab.
const SLAB_BYTES: u64 = (SLAB * std::mem::size_of::<Segment>()) as u64;
/// Whether this build makes slabs off the writer's path (not under Miri or loom, which
/// model neither the helper's `madvise` nor huge pages).
const CAN_PREPARE: bool = cfg!(all(target_os = "linux", not(miri), not(roster_loom)));

/// A line cache's helper thread: named, on a 64 KiB stack (it maps and faults in a slab,
/// and needs no more).
fn helper_thread() -> std::thread::Builder {
    std::thread::Builder::new()
        .name("roster-lines".into())
        .stack_size(64 << 10)
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

/// Nothing to unpin where no helper is made.
#[cfg(not(all(target_os = "linux", not(miri), not(roster_loom))))]
fn unpin() {}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

// The home and directory bits do not overlap, nor does the tag byte's, so a segment's
// keys spread over its groups as all keys do.
const _: () = assert!(DIR_SHIFT + MAX_DEPTH <= HOME_SHIFT && 40 <= DIR_SHIFT);

/// One cache line of atomic words.
#[repr(C, align(64))]
pub struct Line {
    w: [AtomicU64; 8],
}

/// The high bits of each byte of `group` that equals `byte` (exact for the lowest match;
/// a byte above a true match may show as a false one, which the key compare rejects).
#[inline(always)]
fn matches(group: u64, byte: u8) -> u64 {
    let x = group ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// A hash's tag byte: bits 33..40, above the low half (which the caller's tag,
/// `table::tag`, drops) and below the directory's and the home's bits, so `hash`,
/// `hash_of_tag(tag(hash))` and a line's kept high half give the same byte, home and
/// segment.
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
/// against the cache's: `w0` (Acquire), the key compare and the payload (Relaxed, the
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

/// A segment: [`GROUPS`] groups of eight lines, their tag words, and the writer's
/// bookkeeping (see the module docs).
#[repr(C, align(64))]
pub struct Segment {
    lines: [Line; SEG_LINES],
    /// One tag byte a line, eight to a word.
    groups: [AtomicU64; GROUPS],
    /// The writer's: the high half of the hash of each line's entry, for its home and for
    /// splits (readers never load these).
    hashes: [OwnU32; SEG_LINES],
    /// Lines taken (entries and [`DELETED`] ones): the writer's count.
    taken: OwnU64,
    /// Lines holding entries: the writer's count.
    live: OwnU64,
    /// The writer's: the segment's depth, and its prefix (the hash bits `40..40 + depth`
    /// of its keys).
    depth: OwnU64,
    prefix: OwnU64,
    /// The writer's: where the segment lies, `slab << 32 | index`.
    id: OwnU64,
    /// The writer's: how many times the segment was made or retired (a [`LineAt`]'s
    /// check).
    lives: OwnU64,
}

// SAFETY: `repr(C)` of atomics and arrays of them (`Line`: eight `AtomicU64`s): all-zero
// bytes are zero atomics (dead lines, empty groups, counts of zero), and no drop.
unsafe impl Zeroable for Segment {
    #[cfg(roster_loom)]
    fn zero() -> Segment {
        Segment {
            lines: std::array::from_fn(|_| Line {
                w: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
            groups: std::array::from_fn(|_| AtomicU64::new(0)),
            hashes: std::array::from_fn(|_| OwnU32::new(0)),
            taken: OwnU64::new(0),
            live: OwnU64::new(0),
            depth: OwnU64::new(0),
            prefix: OwnU64::new(0),
            id: OwnU64::new(0),
            lives: OwnU64::new(0),
        }
    }
}

/// The home group of `hash` in its segment.
#[inline(always)]
fn home(hash: u64) -> usize {
    (hash >> HOME_SHIFT) as usize
}

impl Segment {
    /// Group `g` (any `g`, masked).
    #[inline(always)]
    fn group(&self, g: usize) -> &AtomicU64 {
        &self.groups[g % GROUPS]
    }

    /// The words of line `j` of group `g` (any `g`, masked; `j < 8`).
    #[inline(always)]
    fn line(&self, g: usize, j: usize) -> &[AtomicU64; 8] {
        debug_assert!(j < 8);
        &self.lines[(g % GROUPS) * 8 + (j & 7)].w
    }

    /// The words of line `i`.
    fn at(&self, i: usize) -> &[AtomicU64; 8] {
        self.line(i / 8, i % 8)
    }

    /// Line `i`'s tag byte (the writer's view).
    fn byte(&self, i: usize) -> u8 {
        (self.group(i / 8).load(Ordering::Relaxed) >> (8 * (i % 8))) as u8
    }

    /// Entries cached here.
    fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed) as usize
    }

    /// Whether the segment takes no more entries (seven eighths of its lines are taken).
    fn is_full(&self) -> bool {
        self.taken.load(Ordering::Relaxed) as usize * 8 >= SEG_LINES * MAX_LOAD_EIGHTHS
    }

    /// The cached entry `[k0, k1]` (hash `hash`) if this segment holds it: the module's
    /// reader, from the group words on.
    #[inline(always)]
    fn get(&self, hash: u64, k0: u64, k1: u64, out: &mut [u64; 7]) -> Option<(u64, usize)> {
        let byte = tag8(hash);
        let home = home(hash);
        for g in home..home + GROUPS {
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
            if matches(word, EMPTY) != 0 {
                return None;
            }
        }
        None
    }

    /// The line caching `[k0, k1]` (hash `hash`), as `group * 8 + byte` (the writer's).
    fn find(&self, hash: u64, k0: u64, k1: u64) -> Option<usize> {
        let byte = tag8(hash);
        let home = home(hash);
        for g in home..home + GROUPS {
            let word = self.group(g).load(Ordering::Relaxed);
            for j in 0..8 {
                if (word >> (8 * j)) as u8 == byte {
                    let line = self.line(g, j);
                    let w0 = line[0].load(Ordering::Relaxed);
                    if w0 & LOW == k0 & LOW
                        && (w0 >> 32) & 7 != DEAD
                        && line[2].load(Ordering::Relaxed) == k1
                    {
                        return Some((g % GROUPS) * 8 + j);
                    }
                }
            }
            if matches(word, EMPTY) != 0 {
                return None;
            }
        }
        None
    }

    /// Opens line `i`'s section (L1).
    fn open(&self, i: usize) {
        let w = &self.at(i)[0];
        let w0 = w.load(Ordering::Relaxed);
        debug_assert!(w0 & ODD == 0, "a line's section opened twice");
        w.store(w0 | ODD, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    /// Kills line `i` of a segment being retired (S1): a section that closes it
    /// [`DEAD`], its tag byte and the counts left as they are (the segment is made again
    /// before they matter).
    fn kill(&self, i: usize) {
        self.open(i);
        let w = &self.at(i)[0];
        let w0 = w.load(Ordering::Relaxed);
        w.store(
            ((w0 >> 35) + 1) << 35 | DEAD << 32 | w0 & LOW,
            Ordering::Release,
        );
    }

    /// Closes line `i`'s open section with a copy of `key -> (owner, meta)` (which the
    /// caller has checked fits a line), or, for `None`, as [`DEAD`], its byte [`DELETED`]
    /// (or [`EMPTY`], where no probe needs it).
    fn close(&self, i: usize, entry: Option<(&[u64], u64, &[u64])>) {
        let line = self.at(i);
        let w0 = line[0].load(Ordering::Relaxed);
        debug_assert!(w0 & ODD != 0, "a line closed that was not open");
        let next = ((w0 >> 35) + 1) << 35;
        match entry {
            Some((key, owner, meta)) => {
                line[1].store(owner, Ordering::Relaxed);
                line[2].store(key[1], Ordering::Relaxed);
                // (Words past the metadata keep what they held: no one uses them.)
                for (w, &x) in line[3..].iter().zip(meta) {
                    w.store(x, Ordering::Relaxed);
                }
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
                    self.set_byte(i, EMPTY);
                } else {
                    self.set_byte(i, DELETED);
                }
                self.clear_deleted(i / 8);
            }
        }
    }

    /// Makes the deleted bytes of group `g` (or, if it has an empty byte, of the group
    /// before it), and then of the groups before that, empty again while no cached key's
    /// probe passes them, so that churn does not fill the segment with deleted
    /// bytes. Exact: a cached key lies at the first free byte its probe had when it was
    /// cached, and every group from its home to its own has had no empty byte since
    /// (a group gains one only here, or in `close` when it has one already); so a key
    /// whose probe passes `g` lies in the groups after `g` up to the first with an empty
    /// byte, which are checked (the writer's hashes give each line's home). Gives up,
    /// leaving the bytes deleted, past [`CLEAR_SCAN`] groups.
    fn clear_deleted(&self, g: usize) {
        // A group with an empty byte has nothing to clear, but the one before it may
        // (its probes may have gone on through this one only for the line just freed);
        // and clearing a group may let the one before it clear too.
        let mut g = g % GROUPS;
        if matches(self.group(g).load(Ordering::Relaxed), EMPTY) != 0 {
            g = (g + GROUPS - 1) % GROUPS;
        }
        for _ in 0..CLEAR_SCAN.min(GROUPS - 1) {
            let word = self.group(g).load(Ordering::Relaxed);
            let deleted = (0..8).any(|j| (word >> (8 * j)) as u8 == DELETED);
            if matches(word, EMPTY) != 0 || !deleted || !self.try_clear(g) {
                return;
            }
            g = (g + GROUPS - 1) % GROUPS;
        }
    }

    /// [`Segment::clear_deleted`] of group `g` alone; whether it cleared it.
    fn try_clear(&self, g: usize) -> bool {
        for d in 1..=CLEAR_SCAN.min(GROUPS - 1) {
            let next = (g + d) % GROUPS;
            let word = self.group(next).load(Ordering::Relaxed);
            // Full bytes are exactly those with the high bit set.
            let mut full = word & HIGHS;
            while full != 0 {
                let i = next * 8 + full.trailing_zeros() as usize / 8;
                full &= full - 1;
                let home = home(u64::from(self.hashes[i].load(Ordering::Relaxed)) << 32);
                // Whether `g` lies on the probe from `home` to `next` (cyclically).
                let dist = |to: usize| (to + GROUPS - home) % GROUPS;
                if dist(g) < dist(next) {
                    return false;
                }
            }
            if matches(word, EMPTY) != 0 {
                let word = self.group(g).load(Ordering::Relaxed);
                for j in (0..8).filter(|j| (word >> (8 * j)) as u8 == DELETED) {
                    self.set_byte(g * 8 + j, EMPTY);
                    self.taken.fetch_sub(1, Ordering::Relaxed);
                }
                return true;
            }
        }
        false
    }

    /// Caches `key -> (owner, meta)` (hash `hash`, which fits a line and is not cached
    /// here) in the first free line of its probe, which a segment short of full has.
    fn insert(&self, hash: u64, key: &[u64], owner: u64, meta: &[u64]) {
        debug_assert!(!self.is_full() && self.find(hash, key[0], key[1]).is_none());
        let Some(i) = self.free_line(hash) else {
            debug_assert!(false, "a segment short of full has a free line");
            return;
        };
        if self.byte(i) == EMPTY {
            self.taken.fetch_add(1, Ordering::Relaxed);
        }
        self.live.fetch_add(1, Ordering::Relaxed);
        self.hashes[i].store((hash >> 32) as u32, Ordering::Relaxed);
        self.open(i);
        self.close(i, Some((key, owner, meta)));
        self.set_byte(i, tag8(hash));
    }

    /// The entry line `i` holds, if any, as `(hash, key word 0's low half, key word 1,
    /// owner)`: the hash's high half (enough for its tag byte, segment and home), and
    /// the metadata in `meta`.
    fn entry(&self, i: usize, meta: &mut Vec<u64>) -> Option<(u64, u64, u64, u64)> {
        let byte = self.byte(i);
        let line = self.at(i);
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
        let (k1, owner) = (
            line[2].load(Ordering::Relaxed),
            line[1].load(Ordering::Relaxed),
        );
        Some((hash, w0 & LOW, k1, owner))
    }

    /// The first free line (empty or deleted byte) on the probe of `hash`.
    fn free_line(&self, hash: u64) -> Option<usize> {
        let home = home(hash);
        for g in home..home + GROUPS {
            let word = self.group(g).load(Ordering::Relaxed);
            let free = matches(word, EMPTY) | matches(word, DELETED);
            if free != 0 {
                return Some((g % GROUPS) * 8 + free.trailing_zeros() as usize / 8);
            }
        }
        None
    }

    /// Stores line `i`'s tag byte (Release: after its section's close).
    fn set_byte(&self, i: usize, byte: u8) {
        let group = self.group(i / 8);
        let shift = 8 * (i % 8);
        let word = group.load(Ordering::Relaxed);
        group.store(
            word & !(0xff << shift) | u64::from(byte) << shift,
            Ordering::Release,
        );
    }
}

/// A cached entry's line, as [`LineCell::find`] gives it to the writer: good until the
/// writer's next insert (which may split its segment; debug builds check it).
#[derive(Clone, Copy)]
pub struct LineAt<'a> {
    segment: &'a Segment,
    i: usize,
    /// The segment's `lives` when found.
    life: u64,
}

/// The writer's store of segments: the slabs, how many of the last one's segments are
/// in use, and the retired segments.
struct Pool {
    slabs: Vec<Zeroed<Segment>>,
    used: usize,
    /// Whether the last slab's bytes were counted whole (one faulted in by a helper)
    /// rather than a segment at a time.
    whole: bool,
    /// Retired segments, as `Segment::id`s.
    retired: Vec<u64>,
    /// The next slab, being made off the writer's path: the helper thread that maps it on
    /// huge pages and faults it in (its bytes counted from the start).
    next: Option<std::thread::JoinHandle<Option<Zeroed<Segment>>>>,
    /// Set once a helper thread could not be started: the writer maps every slab then.
    no_helper: bool,
}

impl Pool {
    /// Segment `id` (`slab << 32 | index`), as a pointer with its slab's provenance.
    fn pointer(&self, id: u64) -> *mut Segment {
        let (slab, i) = ((id >> 32) as usize, (id & LOW) as usize);
        debug_assert!(i < self.slabs[slab].len());
        self.slabs[slab].as_mut_ptr().wrapping_add(i)
    }
}

/// A shard's line cache: a directory of segments (see the module docs).
pub struct LineCell {
    /// `2^MAX_DEPTH` segment pointers (zeroed pages that cost nothing until touched):
    /// entries `0..=dmask` are non-null, each a segment of the pool's slabs.
    dir: Zeroed<AtomicPtr<Segment>>,
    /// `2^G - 1`, where `G <= MAX_DEPTH` is the directory's depth.
    dmask: AtomicU64,
    /// The high half of key word 0 that cached keys have.
    high: u64,
    /// Whether slabs after the first go on huge pages (`ShardConfig::huge_pages`).
    huge: bool,
    /// Bytes the cache holds: the segments handed out from slabs the writer mapped,
    /// every slab a helper made (faulted in whole) and the one being made, and the
    /// directory's entries in use.
    bytes: OwnU64,
    /// The writer's (no reader takes it; a `Mutex` only to lend it out through `&self`).
    pool: std::sync::Mutex<Pool>,
}

impl LineCell {
    /// A cache with room for about `lines` entries to start with (at least one segment),
    /// for keys whose word 0 has `high` as its high half; `None` if the memory cannot be
    /// had.
    pub fn try_new(lines: usize, high: u32, huge: bool) -> Option<LineCell> {
        // Where slabs are made off the writer's path, the first (on small pages) holds
        // the first segments, and every segment past it is on a slab made so.
        let most = if CAN_PREPARE {
            FIRST_SLAB
        } else {
            1 << MAX_DEPTH
        };
        let segments = lines
            .div_ceil(SEG_LINES)
            .checked_next_power_of_two()?
            .min(most);
        let cell = LineCell {
            dir: Zeroed::new(1 << MAX_DEPTH, false)?,
            dmask: AtomicU64::new(segments as u64 - 1),
            high: u64::from(high),
            huge,
            bytes: OwnU64::new(0),
            pool: std::sync::Mutex::new(Pool {
                slabs: Vec::new(),
                used: 0,
                whole: false,
                retired: Vec::new(),
                next: None,
                no_helper: false,
            }),
        };
        {
            let mut pool = cell.pool();
            // The first slab: small and on small pages, so that a small cache stays so.
            pool.slabs
                .push(Zeroed::new(FIRST_SLAB.max(segments), false)?);
            for prefix in 0..segments {
                let s = cell.make(&mut pool, segments.trailing_zeros(), prefix as u64)?;
                cell.dir[prefix].store(s, Ordering::Relaxed);
            }
        }
        let entries = (segments * std::mem::size_of::<AtomicPtr<Segment>>()) as u64;
        cell.bytes.store(cell.bytes() + entries, Ordering::Relaxed);
        Some(cell)
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The segment of `hash` (the module's reader, its first two loads).
    #[inline(always)]
    fn segment(&self, hash: u64) -> &Segment {
        let i = (hash >> DIR_SHIFT) & self.dmask.load(Ordering::Acquire);
        debug_assert!(i < self.dir.len() as u64);
        // SAFETY: `dmask < 2^MAX_DEPTH = dir.len()` (stored only in `try_new` and
        // `double`, which keep it so), so `i` is in bounds.
        let p = unsafe { self.dir.get_unchecked(i as usize) }.load(Ordering::Acquire);
        debug_assert!(!p.is_null());
        // SAFETY:
        // 1. Entries `0..=dmask` are non-null: each is stored a segment pointer before
        //    the mask that covers it is stored (`try_new` before the cell is shared;
        //    `double`'s copies before its Release store of the mask, which the Acquire
        //    load above read or followed), and none is stored null.
        // 2. Every segment pointer is into a slab of the pool (`Pool::pointer`), with the
        //    slab's provenance, aligned and in bounds; slabs are dropped only with the
        //    cell, so the segment outlives `&self`.
        // 3. Every field reached through `&Segment` is an atomic (or a writer's count
        //    of std atomics), so any thread may read it at any time. (Which life of the
        //    segment the reader sees, if it was retired and made again since the entry
        //    was stored, is a matter of the module's proof, not of soundness.)
        unsafe { &*p }
    }

    /// The cached entry `key = [k0, k1]` (hash `hash`): its owner and metadata length,
    /// the metadata in `out[..5]` (`out[5..]` untouched). `None`: not cached, or being
    /// written; read the slot table. Never blocks, never writes to shared memory.
    #[inline(always)]
    pub fn get(&self, hash: u64, k0: u64, k1: u64, out: &mut [u64; 7]) -> Option<(u64, usize)> {
        if k0 >> 32 != self.high {
            return None;
        }
        self.segment(hash).get(hash, k0, k1, out)
    }

    /// Prefetches the home group's word of `hash`: the first step of a batched read.
    #[inline]
    pub fn prefetch_group(&self, hash: u64) {
        super::prefetch::prefetch(self.segment(hash).group(home(hash)));
    }

    /// Peeks (unvalidated) at the home group of `hash` and prefetches the line of its
    /// first matching byte; whether there was one.
    #[inline]
    pub fn prefetch_line(&self, hash: u64) -> bool {
        let segment = self.segment(hash);
        let g = home(hash);
        let m = matches(segment.group(g).load(Ordering::Relaxed), tag8(hash));
        if m == 0 {
            return false;
        }
        super::prefetch::prefetch(&segment.line(g, m.trailing_zeros() as usize / 8)[0]);
        true
    }

    /// Whether an entry of `key` and `meta` is one a line caches.
    pub fn fits(&self, key: &[u64], meta: &[u64]) -> bool {
        key.len() == 2 && meta.len() <= LINE_META && key[0] >> 32 == self.high
    }

    /// Bytes the cache holds: the segments handed out (live and retired) from slabs the
    /// writer mapped, the slabs a helper made and faulted in (whole, and from the time
    /// one is started), and the directory's entries in use.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The line caching `key` (hash `hash`).
    pub fn find(&self, _t: &WriterToken, hash: u64, key: &[u64]) -> Option<LineAt<'_>> {
        let &[k0, k1] = key else { return None };
        if k0 >> 32 != self.high {
            return None;
        }
        let segment = self.segment(hash);
        let i = segment.find(hash, k0, k1)?;
        let life = segment.lives.load(Ordering::Relaxed);
        Some(LineAt { segment, i, life })
    }

    /// Opens the section of the line `at` (L1): readers of it read the slot table until
    /// [`LineCell::close`]. Changes of the cached entry in the slot table go after this
    /// (L2).
    pub fn open(&self, _t: &WriterToken, at: LineAt<'_>) {
        debug_assert_eq!(
            at.segment.lives.load(Ordering::Relaxed),
            at.life,
            "a stale line"
        );
        at.segment.open(at.i);
    }

    /// Closes the open section of the line `at` with a copy of `key -> (owner, meta)`,
    /// or, if the entry is gone or no longer fits (`None`, or metadata past
    /// [`LINE_META`] words), as [`DEAD`], its line free.
    pub fn close(&self, _t: &WriterToken, at: LineAt<'_>, entry: Option<(&[u64], u64, &[u64])>) {
        debug_assert_eq!(
            at.segment.lives.load(Ordering::Relaxed),
            at.life,
            "a stale line"
        );
        at.segment
            .close(at.i, entry.filter(|(key, _, meta)| self.fits(key, meta)));
    }

    /// Caches the new entry `key -> (owner, meta)` (hash `hash`), which the slot table
    /// has published and the cache does not hold, if it fits; splits its segment first
    /// if it is full (S1), and leaves it uncached if the segment cannot split (the
    /// directory at its most bits, or no memory).
    pub fn insert(&self, t: &WriterToken, hash: u64, key: &[u64], owner: u64, meta: &[u64]) {
        if !self.fits(key, meta) {
            return;
        }
        loop {
            let segment = self.segment(hash);
            if !segment.is_full() {
                segment.insert(hash, key, owner, meta);
                return;
            }
            if !self.split(t, segment) {
                return;
            }
        }
    }

    /// Splits (or rebuilds) the full segment `old` (S1); whether it did.
    fn split(&self, t: &WriterToken, old: &Segment) -> bool {
        self.split_as(t, old, old.len() * 8 < SEG_LINES * REBUILD_EIGHTHS)
    }

    /// Splits `old` in two, or rebuilds it alone if `rebuild` (S1); whether it did. At
    /// the directory's most bits, a segment that holds deleted lines is rebuilt instead.
    fn split_as(&self, _t: &WriterToken, old: &Segment, rebuild: bool) -> bool {
        let depth = old.depth.load(Ordering::Relaxed) as u32;
        let prefix = old.prefix.load(Ordering::Relaxed);
        let mut pool = self.pool();
        let mask = self.dmask.load(Ordering::Relaxed);
        let mut rebuild = rebuild;
        if !rebuild && 1 << depth == mask + 1 && !self.double(mask) {
            if old.len() as u64 >= old.taken.load(Ordering::Relaxed) {
                return false;
            }
            rebuild = true;
        }
        let kids = if rebuild {
            let Some(kid) = self.make(&mut pool, depth, prefix) else {
                return false;
            };
            [kid, kid]
        } else {
            let Some(low) = self.make(&mut pool, depth + 1, prefix) else {
                return false;
            };
            let Some(high) = self.make(&mut pool, depth + 1, prefix | 1 << depth) else {
                // Back with the retired ones, to be made again.
                // SAFETY: as in `LineCell::segment`, point 2: a pointer into a live slab.
                pool.retired
                    .push(unsafe { &*low }.id.load(Ordering::Relaxed));
                return false;
            };
            [low, high]
        };
        // SAFETY: as in `LineCell::segment`, point 2: pointers into live slabs.
        let [low, high] = kids.map(|p| unsafe { &*p });
        let mut meta = Vec::with_capacity(LINE_META);
        for i in 0..SEG_LINES {
            if let Some((hash, k0, k1, owner)) = old.entry(i, &mut meta) {
                let kid = if (hash >> (DIR_SHIFT + depth)) & 1 == 0 {
                    low
                } else {
                    high
                };
                kid.insert(hash, &[self.high << 32 | k0, k1], owner, &meta);
            }
        }
        // Repointed (Release: a reader that loads an entry finds its segment made).
        let mask = self.dmask.load(Ordering::Relaxed);
        for i in (prefix..=mask).step_by(1 << depth) {
            let kid = kids[((i >> depth) & 1) as usize];
            self.dir[i as usize].store(kid, Ordering::Release);
        }
        // Retired (S1): every entry's line killed.
        let mut full = 0;
        for i in 0..SEG_LINES {
            if old.byte(i) & 0x80 != 0 {
                old.kill(i);
                full += 1;
            }
        }
        debug_assert_eq!(full, old.len());
        old.lives.fetch_add(1, Ordering::Relaxed);
        pool.retired.push(old.id.load(Ordering::Relaxed));
        true
    }

    /// Doubles the directory (S3), whose mask is `mask`; `false` at its most bits.
    fn double(&self, mask: u64) -> bool {
        let n = mask as usize + 1;
        if 2 * n > self.dir.len() {
            return false;
        }
        for i in 0..n {
            let p = self.dir[i].load(Ordering::Relaxed);
            self.dir[n + i].store(p, Ordering::Release);
        }
        self.dmask.store(2 * n as u64 - 1, Ordering::Release);
        let entries = (n * std::mem::size_of::<AtomicPtr<Segment>>()) as u64;
        self.bytes.store(self.bytes() + entries, Ordering::Relaxed);
        true
    }

    /// Makes a segment of `depth` and `prefix` (S2): a retired one made again, or a fresh
    /// one from the slabs; `None` if no memory can be had.
    fn make(&self, pool: &mut Pool, depth: u32, prefix: u64) -> Option<*mut Segment> {
        let p = match pool.retired.pop() {
            Some(id) => {
                let p = pool.pointer(id);
                // SAFETY: as in `LineCell::segment`, point 2.
                let s = unsafe { &*p };
                // Its tag words empty (S2): its lines died at its retirement.
                for group in &s.groups {
                    group.store(0, Ordering::Relaxed);
                }
                s.taken.store(0, Ordering::Relaxed);
                s.live.store(0, Ordering::Relaxed);
                p
            }
            None => {
                if pool.slabs.last().is_none_or(|slab| pool.used == slab.len()) {
                    let slab = self.next_slab(pool)?;
                    pool.slabs.push(slab);
                    pool.used = 0;
                }
                let id = ((pool.slabs.len() - 1) as u64) << 32 | pool.used as u64;
                pool.used += 1;
                let p = pool.pointer(id);
                // SAFETY: as in `LineCell::segment`, point 2 (zeroed: a dead, empty
                // segment).
                unsafe { &*p }.id.store(id, Ordering::Relaxed);
                if !pool.whole {
                    let bytes = std::mem::size_of::<Segment>() as u64;
                    self.bytes.store(self.bytes() + bytes, Ordering::Relaxed);
                }
                // From half of a slab on, the next is made off the writer's path.
                let len = pool.slabs.last().map_or(0, |slab| slab.len());
                if pool.used * 2 >= len && pool.next.is_none() {
                    self.prepare(pool);
                }
                p
            }
        };
        // SAFETY: as in `LineCell::segment`, point 2.
        let s = unsafe { &*p };
        s.depth.store(u64::from(depth), Ordering::Relaxed);
        s.prefix.store(prefix, Ordering::Relaxed);
        s.lives.fetch_add(1, Ordering::Relaxed);
        Some(p)
    }

    /// A slab for the segments to come, past the first: the one a helper made, once it
    /// is ready; where no helper makes them, one the writer maps, on huge pages if
    /// `huge` (the writer then takes its faults).
    fn next_slab(&self, pool: &mut Pool) -> Option<Zeroed<Segment>> {
        pool.whole = false;
        match pool.next.take_if(|h| h.is_finished()) {
            Some(helper) => {
                if let Some(slab) = helper.join().ok().flatten() {
                    pool.whole = true;
                    return Some(slab);
                }
                // The helper could not get the memory: uncounted again, and the writer
                // maps the slab.
                self.bytes
                    .store(self.bytes() - SLAB_BYTES, Ordering::Relaxed);
            }
            // Still being made: no new segment meanwhile (new entries go uncached, as a
            // cache may leave them), so that every segment past the first slab's is on
            // a slab faulted in off the writer's path.
            None if pool.next.is_some() => return None,
            None => {}
        }
        if self.huge {
            Zeroed::new_on_huge_pages(SLAB)
        } else {
            Zeroed::new(SLAB, false)
        }
    }

    /// Starts making the next slab off the writer's path, where this build can: a helper
    /// thread maps it on huge pages and faults it in whole (`Zeroed::populate`, or a
    /// store into each page where the kernel refuses it), so that neither the writer
    /// nor a reader waits for its pages. The slab is no one else's until the writer
    /// joins the helper, which orders the helper's faults (zeroing, nothing else) before
    /// the writer's use of it. Its bytes count from now.
    fn prepare(&self, pool: &mut Pool) {
        if !CAN_PREPARE || pool.no_helper {
            return;
        }
        let helper = helper_thread().spawn(|| {
            // Off a pinned writer's core: the helper inherits its creator's affinity.
            unpin();
            let slab = Zeroed::<Segment>::new_on_huge_pages(SLAB)?;
            if !slab.populate() {
                for segment in slab.iter() {
                    for line in segment.lines.iter().step_by(4096 / 64) {
                        line.w[0].store(0, Ordering::Relaxed);
                    }
                    segment.groups[0].store(0, Ordering::Relaxed);
                    segment.hashes[0].store(0, Ordering::Relaxed);
                    segment.hashes[SEG_LINES - 1].store(0, Ordering::Relaxed);
                }
            }
            Some(slab)
        });
        match helper {
            Ok(helper) => {
                pool.next = Some(helper);
                self.bytes
                    .store(self.bytes() + SLAB_BYTES, Ordering::Relaxed);
            }
            Err(_) => pool.no_helper = true,
        }
    }

    /// The live segments, each once (the directory's entry at its prefix).
    fn segments(&self) -> impl Iterator<Item = &Segment> + '_ {
        let mask = self.dmask.load(Ordering::Acquire);
        (0..=mask).filter_map(move |i| {
            let s = self.segment(i << DIR_SHIFT);
            (s.prefix.load(Ordering::Relaxed) == i).then_some(s)
        })
    }

    /// Entries cached.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.segments().map(Segment::len).sum()
    }

    /// Live segments.
    #[cfg(test)]
    pub fn segment_count(&self) -> usize {
        self.segments().count()
    }

    /// Checks every segment's place in the directory, and every taken line against
    /// `present`, which answers the slot table's entry of a key (owner and metadata): a
    /// cached copy must equal it. Descriptions of what differs, for `Shard::audit`; how
    /// many entries are cached.
    pub fn audit(
        &self,
        _t: &WriterToken,
        mut present: impl FnMut(&[u64]) -> Option<(u64, Vec<u64>)>,
        problems: &mut Vec<String>,
    ) -> usize {
        let mask = self.dmask.load(Ordering::Relaxed);
        let retired: std::collections::HashSet<u64> = self.pool().retired.iter().copied().collect();
        for i in 0..=mask {
            let s = self.segment(i << DIR_SHIFT);
            let depth = s.depth.load(Ordering::Relaxed);
            if (1 << depth) > mask + 1 || i & ((1 << depth) - 1) != s.prefix.load(Ordering::Relaxed)
            {
                problems.push(format!("directory entry {i} points at a segment not of it"));
            }
            if retired.contains(&s.id.load(Ordering::Relaxed)) {
                problems.push(format!("directory entry {i} points at a retired segment"));
            }
        }
        let mut cached = 0;
        for (n, s) in self.segments().enumerate() {
            let (depth, prefix) = (
                s.depth.load(Ordering::Relaxed),
                s.prefix.load(Ordering::Relaxed),
            );
            let mut live = 0;
            for i in 0..SEG_LINES {
                let byte = s.byte(i);
                let w0 = s.at(i)[0].load(Ordering::Relaxed);
                let shape = (w0 >> 32) & 7;
                if w0 & ODD != 0 {
                    problems.push(format!("segment {n}: line {i} left open"));
                }
                if byte & 0x80 == 0 {
                    if shape != DEAD {
                        problems.push(format!("segment {n}: line {i} is free but holds an entry"));
                    }
                    continue;
                }
                if shape == DEAD || shape as usize > LINE_META + 1 {
                    problems.push(format!("segment {n}: line {i} has a tag byte but no entry"));
                    continue;
                }
                let mut meta = Vec::new();
                let (hash, k0, k1, owner) = s.entry(i, &mut meta).expect("full and not dead");
                let key = [self.high << 32 | k0, k1];
                if tag8(hash) != byte {
                    problems.push(format!(
                        "segment {n}: line {i}: its hash and tag byte differ"
                    ));
                }
                if (hash >> DIR_SHIFT) & ((1 << depth) - 1) != prefix {
                    problems.push(format!("segment {n}: {key:x?} belongs to another segment"));
                }
                if present(&key) != Some((owner, meta)) {
                    problems.push(format!(
                        "segment {n}: line {i} caches {key:x?}, which the table holds otherwise"
                    ));
                }
                live += 1;
            }
            if live != s.len() {
                problems.push(format!(
                    "segment {n}: {live} lines cached, the count says {}",
                    s.len()
                ));
            }
            cached += live;
        }
        cached
    }

    /// Splits the segment of `hash` now, full or not (tests of splits).
    #[cfg(test)]
    pub fn split_for(&self, t: &WriterToken, hash: u64) -> bool {
        self.split_as(t, self.segment(hash), false)
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    /// A hash whose home group is `home`, whose directory bits (40 up) are `dir`, and
    /// whose tag byte comes from `k`.
    fn hash(home: u64, dir: u64, k: u64) -> u64 {
        home << HOME_SHIFT | dir << DIR_SHIFT | (k & 0x7f) << 33
    }

    fn get(c: &LineCell, h: u64, key: [u64; 2]) -> Option<(u64, Vec<u64>)> {
        let mut out = [0u64; 7];
        c.get(h, key[0], key[1], &mut out)
            .map(|(owner, n)| (owner, out[..n].to_vec()))
    }

    fn remove(c: &LineCell, w: &WriterToken, h: u64, key: [u64; 2]) {
        let at = c.find(w, h, &key).expect("cached");
        c.open(w, at);
        c.close(w, at, None);
    }

    /// xorshift64.
    fn rng(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    fn audit(
        c: &LineCell,
        w: &WriterToken,
        want: impl Fn(&[u64]) -> Option<(u64, Vec<u64>)>,
    ) -> usize {
        let mut problems = Vec::new();
        let cached = c.audit(w, want, &mut problems);
        assert_eq!(problems, Vec::<String>::new());
        cached
    }

    #[test]
    fn a_line_caches_a_short_entry_and_only_its_key() {
        let c = LineCell::try_new(64, 7, false).unwrap();
        let w = WriterToken::new(0);
        let key = [7 << 32 | 0xabc, 42];
        let h = hash(1, 0, 5);
        assert_eq!(get(&c, h, key), None, "nothing cached yet");
        c.insert(&w, h, &key, 9, &[1, 2, 3]);
        assert_eq!(get(&c, h, key), Some((9, vec![1, 2, 3])));
        assert_eq!(get(&c, h, [key[0], 43]), None, "another name");
        assert_eq!(get(&c, h, [8 << 32 | 0xabc, 42]), None, "another high half");
        assert_eq!(get(&c, hash(0, 0, 5), key), None, "another home");
        // Keys of another high half, or longer metadata, are not cached.
        c.insert(&w, h, &[8 << 32, 1], 9, &[]);
        c.insert(&w, h, &[7 << 32, 1], 9, &[0; 6]);
        assert_eq!(get(&c, h, [7 << 32, 1]), None);
        let cached = audit(&c, &w, |k| (k == key).then(|| (9, vec![1, 2, 3])));
        assert_eq!((cached, c.len()), (1, 1));
    }

    #[test]
    fn an_open_line_sends_readers_on_and_its_close_publishes_the_change() {
        let c = LineCell::try_new(64, 0, false).unwrap();
        let w = WriterToken::new(0);
        let (h, key) = (hash(0, 0, 1), [0, 1]);
        c.insert(&w, h, &key, 3, &[10]);
        let at = c.find(&w, h, &key).unwrap();
        c.open(&w, at);
        assert_eq!(get(&c, h, key), None, "being written");
        c.close(&w, at, Some((&key, 4, &[11, 12])));
        assert_eq!(get(&c, h, key), Some((4, vec![11, 12])));
        // An update past five words drops the copy.
        c.open(&w, at);
        c.close(&w, at, Some((&key, 4, &[0; 6])));
        assert!(get(&c, h, key).is_none() && c.find(&w, h, &key).is_none());
        c.insert(&w, h, &key, 5, &[]);
        assert_eq!(get(&c, h, key), Some((5, vec![])), "cached again");
        assert_eq!(
            c.find(&w, h, &key).map(|a| a.i),
            Some(at.i),
            "in the freed line"
        );
    }

    #[test]
    fn probes_pass_full_and_deleted_groups_and_stop_at_an_empty_byte() {
        // 20 keys of one home fill it and the next group, and four lines of the third.
        let c = LineCell::try_new(1, 0, false).unwrap();
        let w = WriterToken::new(0);
        let keys: Vec<[u64; 2]> = (0..20).map(|k| [0, k]).collect();
        let h = |k: u64| hash(3, 0, k);
        for (k, key) in keys.iter().enumerate() {
            c.insert(&w, h(k as u64), key, k as u64, &[k as u64]);
        }
        // Remove every other key of the home group and the next.
        for k in (0..16).step_by(2) {
            remove(&c, &w, h(k), keys[k as usize]);
        }
        for (k, key) in keys.iter().enumerate() {
            let want = (k % 2 == 1 || k >= 16).then(|| (k as u64, vec![k as u64]));
            assert_eq!(get(&c, h(k as u64), *key), want, "key {k}");
        }
        // A key of the same home that was never cached: the probe ends at the third group.
        assert_eq!(get(&c, h(99), [0, 99]), None);
    }

    /// Deleted bytes go once no probe needs them, so churn at any load short of full
    /// never fills a segment (which would make it split, or be rebuilt).
    #[test]
    fn deleted_bytes_no_probe_needs_become_empty_again() {
        let c = LineCell::try_new(1, 0, false).unwrap();
        let w = WriterToken::new(0);
        let s = c.segment(0);
        // 16 keys of home 0 fill groups 0 and 1; group 0's go first, and stay deleted
        // while group 1's keys probe through it; once those go too, both groups clear.
        let h = |k: u64| hash(0, 0, k);
        for k in 0..16 {
            c.insert(&w, h(k), &[0, k], k, &[]);
        }
        (0..8).for_each(|k| remove(&c, &w, h(k), [0, k]));
        assert_eq!(s.taken.load(Ordering::Relaxed), 16, "group 0 still needed");
        assert_eq!(
            (8..16).filter(|&k| get(&c, h(k), [0, k]).is_some()).count(),
            8
        );
        (8..16).for_each(|k| remove(&c, &w, h(k), [0, k]));
        assert_eq!(s.taken.load(Ordering::Relaxed), 0);
        // Random churn at 3/8 of the lines live, one directory entry.
        let mut next = rng(0x2545_f491_4f6c_dd1d);
        let mut live: Vec<(u64, [u64; 2])> = Vec::new();
        let keys = if cfg!(miri) { 2_000 } else { 100_000 };
        for k in 100..keys {
            let key = (
                next() & !LOW & !(((1 << MAX_DEPTH) - 1) << DIR_SHIFT),
                [0, k],
            );
            c.insert(&w, key.0, &key.1, k, &[]);
            live.push(key);
            if live.len() > SEG_LINES * 3 / 8 {
                let (h, key) = live.swap_remove((next() % live.len() as u64) as usize);
                remove(&c, &w, h, key);
            }
        }
        assert_eq!(c.segment_count(), 1, "churn below the load never split it");
        for (h, key) in &live {
            assert_eq!(get(&c, *h, *key).map(|(o, _)| o), Some(key[1]));
        }
    }

    /// Segments split as keys come, every key stays cached and readable, and the
    /// retired segments are made again: the cache holds about the segments it needs.
    #[test]
    fn full_segments_split_and_every_key_stays_cached() {
        let c = LineCell::try_new(1, 0, false).unwrap();
        let w = WriterToken::new(0);
        // Slabs mapped by the writer, so that no key waits for a helper's slab.
        c.pool().no_helper = true;
        let n: u64 = if cfg!(miri) { 600 } else { 200_000 };
        let mut next = rng(0x9e37_79b9_7f4a_7c15);
        let keys: Vec<(u64, [u64; 2])> = (0..n).map(|k| (next() & !LOW, [k >> 32, k])).collect();
        for (k, (h, key)) in keys.iter().enumerate() {
            c.insert(&w, *h, key, k as u64, &[k as u64, 1]);
        }
        let present = |key: &[u64]| Some((key[1], vec![key[1], 1]));
        assert_eq!(audit(&c, &w, present), n as usize);
        for (h, key) in &keys {
            assert_eq!(get(&c, *h, *key), Some((key[1], vec![key[1], 1])));
        }
        let segments = c.segment_count();
        // Each segment between 7/16 (just split) and 7/8 full.
        assert!(
            segments * SEG_LINES * 7 / 16 <= n as usize * 11 / 10,
            "{segments} segments"
        );
        assert!(
            segments * SEG_LINES * 7 / 8 >= n as usize,
            "{segments} segments"
        );
        // Retired segments are made again: at most one spare.
        let size = std::mem::size_of::<Segment>() as u64;
        let dir = 8 * (c.dmask.load(Ordering::Relaxed) + 1);
        assert!(
            c.bytes() - dir <= (segments as u64 + 1) * size,
            "{} bytes",
            c.bytes()
        );
    }

    /// Past the first slab, segments come from slabs a helper thread made and faulted
    /// in; while one is being made, full segments do not split and new keys go
    /// uncached. Every cached key reads back, and the audit holds.
    #[test]
    #[cfg_attr(miri, ignore = "Miri makes no slab off the writer's path")]
    fn segments_past_the_first_slab_come_from_slabs_made_off_the_writers_path() {
        let c = LineCell::try_new(1, 0, false).unwrap();
        let w = WriterToken::new(0);
        let mut next = rng(0x2545_f491_4f6c_dd1d);
        let mut keys = Vec::new();
        let started = std::time::Instant::now();
        while c.pool().slabs.len() < 3 {
            assert!(
                started.elapsed().as_secs() < 30,
                "no slab made off the path"
            );
            for _ in 0..1000 {
                let k = keys.len() as u64;
                let key = (next() & !LOW, [0, k]);
                c.insert(&w, key.0, &key.1, k, &[k]);
                keys.push(key);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(c.pool().whole, CAN_PREPARE, "the last slab is a helper's");
        let cached = keys
            .iter()
            .filter(|(h, key)| get(&c, *h, *key).is_some())
            .count();
        assert_eq!(audit(&c, &w, |key| Some((key[1], vec![key[1]]))), cached);
        assert!(cached > keys.len() / 2, "{cached} of {} cached", keys.len());
        // The helper's slabs count whole, and the next is being made.
        if CAN_PREPARE {
            assert!(c.bytes() >= 2 * SLAB_BYTES, "{} bytes", c.bytes());
        }
    }

    /// A full segment of deleted lines is rebuilt alone, not split.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri's 8-group segments are all within the groups `clear_deleted` looks at"
    )]
    fn a_segment_full_of_deleted_lines_is_rebuilt_at_its_depth() {
        let c = LineCell::try_new(1, 0, false).unwrap();
        let w = WriterToken::new(0);
        let filled = GROUPS * MAX_LOAD_EIGHTHS / 8;
        // Groups `0..filled` full of keys of their own home: seven eighths taken.
        let key = |g: usize, j: usize| {
            (
                hash(g as u64, 0, (g * 8 + j) as u64),
                [0, (g * 8 + j) as u64],
            )
        };
        for g in 0..filled {
            for j in 0..8 {
                let (h, k) = key(g, j);
                c.insert(&w, h, &k, k[1], &[]);
            }
        }
        // Seven of each group's keys go: the groups far from an empty byte keep them
        // as deleted bytes (`clear_deleted` looks a few groups on, no further).
        for g in 0..filled {
            for j in 1..8 {
                let (h, k) = key(g, j);
                remove(&c, &w, h, k);
            }
        }
        let before = c.segment(0) as *const Segment;
        let mut k = 10_000;
        while std::ptr::eq(c.segment(0), before) {
            assert!(k < 10_000 + SEG_LINES as u64, "never rebuilt");
            // Into a group's empty byte, so that each insert takes a line.
            let s = c.segment(0);
            let empty = |g: &usize| matches(s.group(*g).load(Ordering::Relaxed), EMPTY) != 0;
            let g = (0..GROUPS).find(empty).expect("a free line") as u64;
            c.insert(&w, hash(g, 0, k), &[0, k], k, &[]);
            k += 1;
        }
        assert_eq!(c.dmask.load(Ordering::Relaxed), 0, "rebuilt, not split");
        let cached = filled + (k - 10_000) as usize;
        assert_eq!(audit(&c, &w, |key| Some((key[1], vec![]))), cached);
    }

    /// A reader that found a segment before it was retired gets no hit from its old
    /// copies once the entry has changed in the segment that took it over (their lines
    /// are killed), and a segment made again for other keys answers for those.
    #[test]
    fn a_retired_segment_answers_no_old_copy_and_its_new_life_answers_its_own() {
        let c = LineCell::try_new(1, 0, false).unwrap();
        let w = WriterToken::new(0);
        let (h, key) = (hash(5, 1, 9), [0, 9]);
        c.insert(&w, h, &key, 1, &[10]);
        // A reader's first loads: the segment.
        let old = c.segment(h);
        let mut out = [0; 7];
        assert_eq!(old.get(h, key[0], key[1], &mut out), Some((1, 1)));
        assert!(c.split_for(&w, h));
        let at = c.find(&w, h, &key).expect("copied");
        c.open(&w, at);
        c.close(&w, at, Some((&key, 1, &[20])));
        assert_eq!(get(&c, h, key), Some((1, vec![20])));
        assert_eq!(old.find(h, key[0], key[1]), None, "killed");
        assert_eq!(old.get(h, key[0], key[1], &mut out), None, "an old copy");
        // The next split makes `old` again, for the keys of directory bits 0b00.
        assert!(c.split_for(&w, hash(0, 0, 0)));
        assert!(std::ptr::eq(c.segment(hash(0, 0, 0)), old), "made again");
        let other = (hash(5, 0, 10), [0, 10]);
        c.insert(&w, other.0, &other.1, 2, &[30]);
        assert_eq!(get(&c, other.0, other.1), Some((2, vec![30])));
        assert_eq!(old.get(other.0, 0, 10, &mut out), Some((2, 1)), "its own");
        assert_eq!(old.get(h, key[0], key[1], &mut out), None, "an old copy");
        let present = |k: &[u64]| {
            Some(if k == key {
                (1, vec![20])
            } else {
                (2, vec![30])
            })
        };
        assert_eq!(audit(&c, &w, present), 2);
    }
}
