//! A growable vector of atomic words whose memory never moves and is never freed while the
//! vector lives, so any thread may keep reading a word it found, with no lock and no RMW.
//!
//! Layout: chunk `k` holds `base << k` words and covers indexes
//! `[base * (2^k - 1), base * (2^(k+1) - 1))`. Chunk pointers live in a fixed directory of
//! [`MAX_CHUNKS`] `AtomicPtr`s, null until the chunk is allocated:
//!
//! ```text
//! chunks: [ptr0 | ptr1 | ptr2 | ... | null | null ]
//!           |      |      '-> 4*base words
//!           |      '-> 2*base words
//!           '-> base words
//! ```
//!
//! Invariants:
//! 1. A non-null `chunks[k]` came from `Box::<[AtomicU64]>::into_raw` of exactly
//!    `chunk_len(k)` zeroed words, and never changes again.
//! 2. Chunks are freed only in `Drop`, which has `&mut self`: no shared borrow outlives them.
//!
//! Ordering: a chunk is published with a `Release` CAS and found with an `Acquire` load, so
//! a reader that sees the pointer also sees the chunk's initialised words.
//!
//! # One reserved range
//!
//! Where the OS offers it ([`AtomicWords::reserved`] on Unix, outside loom and Miri), the
//! vector is instead one range of address space reserved up front (`mmap` with
//! `MAP_NORESERVE`): every word of it is mapped, reads as zero until written, and gets a
//! physical page only when first touched. An index is then an address: `get` and `range`
//! cost a bounds check and an add, where the directory costs a `log2`, shifts and a
//! dependent pointer load (the lookup path does two of them). The reservation lives as
//! long as the vector and is unmapped only in `Drop` (invariant 2 holds the same way).
//! Where it cannot be had (strict overcommit, no `mmap`), the vector is chunked.

use std::ptr;

use crate::sync::{AtomicPtr, AtomicU64, Ordering};

/// Directory size: with the smallest base (1 word) this still addresses 2^40 words.
const MAX_CHUNKS: usize = 40;

/// A growable, never-moving vector of `AtomicU64`, all zero when first reached.
pub struct AtomicWords {
    /// The reserved range (see "One reserved range"): `reserved` mapped words at `base`;
    /// dangling and 0 when the vector is chunked.
    base: *const AtomicU64,
    reserved: u64,
    /// Words asked for by [`AtomicWords::ensure`] so far, in the reserved range.
    ensured: AtomicU64,
    /// See the module docs for the chunk layout; each entry is null or a chunk (invariant 1).
    chunks: [AtomicPtr<AtomicU64>; MAX_CHUNKS],
    /// log2 of the first chunk's length.
    base_bits: u32,
}

// SAFETY: the only non-thread-safe field is `base`, the start of a private mapping that
// this vector owns (unmapped once, in `Drop`) and through which only `&AtomicU64`s are
// ever handed out; the chunks are likewise reached only as `&AtomicU64`. So sending the
// vector to another thread, or sharing it, shares nothing but atomics.
unsafe impl Send for AtomicWords {}
// SAFETY: as for `Send`.
unsafe impl Sync for AtomicWords {}

impl AtomicWords {
    /// Makes an empty vector whose first chunk (allocated on first use) has
    /// `2^base_bits` words. `base_bits` is clamped to `0..=24`.
    pub fn new(base_bits: u32) -> AtomicWords {
        AtomicWords {
            base: ptr::NonNull::dangling().as_ptr(),
            reserved: 0,
            ensured: AtomicU64::new(0),
            chunks: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            base_bits: base_bits.min(24),
        }
    }

    /// A vector of at most `words` words in one reserved range of address space (see
    /// "One reserved range"), or, where that cannot be had, [`AtomicWords::new`]`(base_bits)`.
    /// With `huge`, the range past its first 4 MiB is advised onto huge pages
    /// (`pages.rs`).
    pub fn reserved(words: u64, base_bits: u32, huge: bool) -> AtomicWords {
        let mut v = AtomicWords::new(base_bits);
        if let Some(base) = reserve(words, huge) {
            v.base = base;
            v.reserved = words;
        }
        v
    }

    /// Whether this vector is one reserved range.
    pub fn is_reserved(&self) -> bool {
        self.reserved != 0
    }

    /// Words a window read by [`AtomicWords::window`] spans at most.
    pub const WINDOW: u64 = 16;

    /// The largest `b` such that every index up to `2^b` starts [`AtomicWords::WINDOW`]
    /// words inside the reserved range; `None` for a chunked vector (or a range too short
    /// for one window). A caller that checks `i <= 2^b` with a mask may then read a
    /// window at `i` with no bounds check.
    pub fn window_bits(&self) -> Option<u32> {
        let room = self.reserved.checked_sub(Self::WINDOW)?;
        (room > 0).then(|| room.ilog2())
    }

    /// The `N` words from `start` (at most [`AtomicWords::WINDOW`]), with no bounds check.
    ///
    /// # Safety
    ///
    /// [`AtomicWords::window_bits`] is `Some(b)` and `start <= 2^b`.
    #[inline(always)]
    pub unsafe fn window<const N: usize>(&self, start: u64) -> &[AtomicU64; N] {
        const { assert!(N as u64 <= Self::WINDOW) };
        debug_assert!(self.window_bits().is_some_and(|b| start <= 1 << b));
        // SAFETY: by the caller's promise `start <= 2^b` with `2^b <= reserved - WINDOW`,
        // so `start + N <= reserved`: the run lies in the reserved range, which `get`'s
        // proof covers word by word, and an array of `N` `AtomicU64`s has their layout.
        unsafe { &*self.base.add(start as usize).cast::<[AtomicU64; N]>() }
    }

    #[inline]
    fn chunk_len(&self, k: usize) -> u64 {
        1u64 << (self.base_bits as usize + k)
    }

    /// Returns `(chunk, index inside the chunk, chunk length)` for word `i`. On the
    /// lookup path twice per lookup, so it is branch-light: chunk `k` starts at
    /// `(2^k - 1) * base` and is `2^k * base` long, so `k = log2(i / base + 1)`.
    #[inline]
    fn locate(&self, i: u64) -> Option<(usize, u64, u64)> {
        let b = self.base_bits;
        // Wraps to 0 only for `i = u64::MAX` with `b = 0`; `k` then wraps past the end.
        let q = (i >> b).wrapping_add(1);
        let k = 63u32.wrapping_sub(q.leading_zeros()) as usize;
        if k >= MAX_CHUNKS {
            return None;
        }
        let len = 1u64 << (b as usize + k);
        // The chunk starts at `(2^k - 1) << b = len - base`.
        Some((k, i - (len - (1u64 << b)), len))
    }

    /// First index past the end of the chunk holding index `i`: a run of words that must
    /// stay in one chunk (see [`AtomicWords::range`]) has to end at or before it.
    pub fn chunk_end(&self, i: u64) -> u64 {
        if self.is_reserved() {
            return self.reserved;
        }
        match self.locate(i) {
            Some((_, inner, len)) => i - inner + len,
            None => u64::MAX,
        }
    }

    #[inline]
    fn chunk(&self, k: usize) -> Option<&[AtomicU64]> {
        let p = self.chunks[k].load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY:
        // 1. `p` is non-null, so by invariant 1 it points at `chunk_len(k)` initialised
        //    `AtomicU64`s from a leaked box; the `Acquire` load pairs with the `Release` CAS
        //    that published it, so their initialisation is visible here.
        // 2. By invariant 2 the chunk lives as long as `&self`, the lifetime we hand out.
        // 3. Only shared references to atomics are ever made, so aliasing is fine.
        Some(unsafe { std::slice::from_raw_parts(p, self.chunk_len(k) as usize) })
    }

    /// The word at index `i`, or `None` if its chunk was never allocated (or it lies past
    /// the reserved range).
    #[inline]
    pub fn get(&self, i: u64) -> Option<&AtomicU64> {
        // One compare: a chunked vector has `reserved == 0`, so it always goes on below.
        if i < self.reserved {
            // SAFETY: `i < reserved`, so `base + i` lies in the reserved range: mapped for
            // the vector's life (unmapped only in `Drop`, which needs `&mut self`), zero or
            // written through atomics, aligned (page-aligned base), and only ever shared.
            return Some(unsafe { &*self.base.add(i as usize) });
        }
        self.get_chunked(i)
    }

    /// [`AtomicWords::get`] through the chunk directory: out of line, so the reserved
    /// range's two instructions are all a reader's hot path holds.
    #[cold]
    #[inline(never)]
    fn get_chunked(&self, i: u64) -> Option<&AtomicU64> {
        let (k, inner, _) = self.locate(i)?;
        self.chunk(k).map(|c| &c[inner as usize])
    }

    /// The `len` words starting at `start`, if they are allocated and lie in one chunk.
    /// Readers use this on possibly torn offsets, so any input is answered, never panics.
    #[inline]
    pub fn range(&self, start: u64, len: u64) -> Option<&[AtomicU64]> {
        // One compare, as in `get`: for a chunked vector (`reserved == 0`) only the empty
        // run at 0 passes it, and `base` is then dangling, which an empty slice allows.
        match start.checked_add(len) {
            Some(end) if end <= self.reserved => {
                // SAFETY: `start + len <= reserved` (computed without overflow), so the run
                // lies in the reserved range, which `get`'s proof covers word by word; or
                // it is empty, at the aligned, non-null `base`.
                Some(unsafe {
                    std::slice::from_raw_parts(self.base.add(start as usize), len as usize)
                })
            }
            _ => self.range_chunked(start, len),
        }
    }

    /// The `N` words from `start` as an array (indexing it needs no bounds check), if
    /// they lie in the reserved range: `None` past it, and for any `N > 0` in a chunked
    /// vector, whose callers take [`AtomicWords::range`] instead. One compare, and no
    /// chunked branch to merge with, so the caller's `Some` needs no null test.
    #[inline]
    pub fn reserved_array<const N: usize>(&self, start: u64) -> Option<&[AtomicU64; N]> {
        match start.checked_add(N as u64) {
            Some(end) if end <= self.reserved => {
                // SAFETY: as in `range`: the `N` words at `base + start` lie in the reserved
                // range (or `N` is 0 at the aligned, non-null `base`), and an array of
                // `N` `AtomicU64`s has their layout.
                Some(unsafe { &*self.base.add(start as usize).cast::<[AtomicU64; N]>() })
            }
            _ => None,
        }
    }

    /// [`AtomicWords::range`] through the chunk directory, out of line (see
    /// [`AtomicWords::get_chunked`]).
    #[cold]
    #[inline(never)]
    fn range_chunked(&self, start: u64, len: u64) -> Option<&[AtomicU64]> {
        let (k, inner, clen) = self.locate(start)?;
        // `inner < clen`, so this cannot wrap, and `inner + len <= clen` after it.
        if len > clen - inner {
            return None;
        }
        self.chunk(k)?.get(inner as usize..(inner + len) as usize)
    }

    /// Makes sure every index below `len` is backed by memory; `false` if it cannot be
    /// (past the reserved range, or the chunk directory). Safe to call from several
    /// threads: a chunk is installed by one CAS and a loser frees its own allocation.
    pub fn ensure(&self, len: u64) -> bool {
        if self.is_reserved() {
            if len > self.reserved {
                return false;
            }
            self.ensured.fetch_max(len, Ordering::Relaxed);
            return true;
        }
        if len == 0 {
            return true;
        }
        let Some((last, _, _)) = self.locate(len - 1) else {
            return false;
        };
        for k in 0..=last {
            if !self.chunks[k].load(Ordering::Acquire).is_null() {
                continue;
            }
            let n = self.chunk_len(k) as usize;
            let p = Box::into_raw(zeroed_words(n)) as *mut AtomicU64;
            if let Err(_won) = self.chunks[k].compare_exchange(
                ptr::null_mut(),
                p,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                // SAFETY: `p` came from `Box::into_raw` of a slice of `n` words just above
                // and was never published (the CAS failed), so this thread owns it alone.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, n)) });
            }
        }
        true
    }

    /// Number of words backed by allocated chunks (a prefix of the index space); for a
    /// reserved range, the words ensured so far.
    pub fn capacity(&self) -> u64 {
        if self.is_reserved() {
            return self.ensured.load(Ordering::Relaxed);
        }
        let mut total = 0;
        for k in 0..MAX_CHUNKS {
            if self.chunks[k].load(Ordering::Acquire).is_null() {
                break;
            }
            total += self.chunk_len(k);
        }
        total
    }

    /// Bytes held by allocated chunks.
    pub fn allocated_bytes(&self) -> u64 {
        self.capacity() * 8
    }
}

/// `n` zero words. Zeroed memory comes from the OS untouched, so a big chunk costs its
/// page faults as it fills, not one pass of stores while the writer holds a write.
#[cfg(not(roster_loom))]
fn zeroed_words(n: usize) -> Box<[AtomicU64]> {
    let layout = std::alloc::Layout::array::<AtomicU64>(n).expect("chunk size");
    assert!(layout.size() > 0, "chunks are never empty");
    // SAFETY: `layout` has a non-zero size (asserted above), as `alloc_zeroed` requires.
    let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<AtomicU64>();
    if p.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY:
    // 1. `p` is a live allocation of `Layout::array::<AtomicU64>(n)`: `n` aligned words.
    // 2. It is zeroed, and all-zero bytes are a valid `AtomicU64` (0): all initialised.
    // 3. `Box<[AtomicU64]>` frees with the layout of `[AtomicU64; n]`, the one
    //    allocated here, through the global allocator `alloc_zeroed` used.
    unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, n)) }
}

/// Loom's atomics are not plain words: build them one by one.
#[cfg(roster_loom)]
fn zeroed_words(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

/// Reserves `words` words of address space, mapped and zero, or `None`.
#[cfg(all(unix, not(roster_loom), not(miri)))]
fn reserve(words: u64, huge: bool) -> Option<*const AtomicU64> {
    let bytes = usize::try_from(words.checked_mul(8)?).ok()?;
    if bytes == 0 {
        return None;
    }
    // SAFETY: an anonymous private mapping of a non-zero size at an address of the
    // kernel's choosing has no preconditions; the result is checked below.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    if huge {
        super::pages::advise_huge(p.cast(), bytes, super::pages::HUGE_FROM);
    }
    Some(p.cast::<AtomicU64>().cast_const())
}

/// Loom's and Miri's runs, and systems without `mmap`, use the chunk directory.
#[cfg(not(all(unix, not(roster_loom), not(miri))))]
fn reserve(words: u64, huge: bool) -> Option<*const AtomicU64> {
    let _ = (words, huge);
    None
}

impl Drop for AtomicWords {
    fn drop(&mut self) {
        #[cfg(all(unix, not(roster_loom), not(miri)))]
        if self.is_reserved() {
            // SAFETY: `base` and the size are exactly those `reserve` mapped, unmapped
            // once, here; `&mut self` proves no borrow of a word is alive (invariant 2).
            unsafe { libc::munmap(self.base.cast_mut().cast(), self.reserved as usize * 8) };
        }
        for k in 0..MAX_CHUNKS {
            let p = self.chunks[k].load(Ordering::Acquire);
            if !p.is_null() {
                let n = self.chunk_len(k) as usize;
                // SAFETY: by invariant 1 `p` is a leaked `Box<[AtomicU64]>` of `n` words;
                // `&mut self` proves no reader borrows it (invariant 2), and each chunk is
                // freed once because the directory is dropped once.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(p, n)) });
            }
        }
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    #[test]
    fn locate_covers_index_space_without_gaps() {
        let w = AtomicWords::new(2);
        let mut expect_chunk = 0;
        let mut expect_inner = 0;
        for i in 0..200u64 {
            let (k, inner, len) = w.locate(i).unwrap();
            assert_eq!((k, inner), (expect_chunk, expect_inner), "index {i}");
            expect_inner += 1;
            if expect_inner == len {
                expect_chunk += 1;
                expect_inner = 0;
            }
        }
    }

    #[test]
    fn ensure_backs_every_index_and_words_start_zero() {
        let w = AtomicWords::new(1);
        assert!(w.get(0).is_none());
        w.ensure(37);
        for i in 0..37 {
            let word = w.get(i).expect("allocated");
            assert_eq!(word.load(Ordering::Relaxed), 0);
            word.store(i + 1, Ordering::Relaxed);
        }
        for i in 0..37 {
            assert_eq!(w.get(i).unwrap().load(Ordering::Relaxed), i + 1);
        }
        assert!(w.capacity() >= 37);
    }

    #[test]
    fn range_refuses_runs_that_cross_a_chunk_or_overflow() {
        let w = AtomicWords::new(2);
        w.ensure(64);
        let end = w.chunk_end(5);
        assert_eq!(end, 12);
        assert!(w.range(5, 7).is_some());
        assert!(w.range(5, 8).is_none());
        assert!(w.range(u64::MAX - 1, 4).is_none());
        assert!(w.range(1 << 50, 1).is_none());
    }

    #[test]
    fn concurrent_ensure_installs_each_chunk_once() {
        let w = std::sync::Arc::new(AtomicWords::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || w.ensure(100))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        w.get(99).unwrap().store(7, Ordering::Relaxed);
        assert_eq!(w.get(99).unwrap().load(Ordering::Relaxed), 7);
    }
}

#[cfg(all(test, unix, not(roster_loom), not(miri)))]
mod reserved_tests {
    use super::*;

    /// The reserved range is one mapping: words read zero until written, and nothing past
    /// the reservation is reachable.
    #[test]
    fn reserved_range_reads_zero_and_bounds_every_access() {
        let w = AtomicWords::reserved(1 << 31, 4, true);
        assert!(w.is_reserved());
        assert_eq!(w.get((1 << 31) - 1).unwrap().load(Ordering::Relaxed), 0);
        assert!(w.get(1 << 31).is_none());
        assert!(w.range((1 << 31) - 2, 3).is_none());
        assert!(w.range(u64::MAX, 2).is_none());
        assert!(w.ensure(100));
        w.get(99).unwrap().store(5, Ordering::Relaxed);
        assert_eq!(w.range(98, 2).unwrap()[1].load(Ordering::Relaxed), 5);
        assert_eq!(w.capacity(), 100);
        assert!(!w.ensure((1 << 31) + 1));
        assert_eq!(w.chunk_end(7), 1 << 31);
        // Windows at every index below 2^30 fit; 2^31 - 16 does not leave 2^31.
        assert_eq!(w.window_bits(), Some(30));
        assert_eq!(AtomicWords::reserved(64, 2, false).window_bits(), Some(5));
        assert_eq!(AtomicWords::reserved(16, 2, false).window_bits(), None);
        assert_eq!(AtomicWords::new(2).window_bits(), None);
    }
}
