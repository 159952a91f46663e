//! The writer's allocator for arena blocks: a bump pointer over [`AtomicWords`] plus free
//! lists by size class. Writer-private: only the shard thread touches it.
//!
//! Size classes: up to 32 words (256 bytes, which covers a typical entry) every size is its
//! own class; above that sizes round up to an eighth of their power of two (so at most
//! 12.5% is lost to rounding). A freed block goes
//! back to its class and is handed out again for the same class only, so a block's head
//! word sits at the same offset in every reuse (readers read a block's words, its head
//! word included, only inside an optimistic section that the slot's sequence number
//! validates, or as `Shard::read_posting`'s unvalidated hint; see `raw`).
//! A block never straddles two arena chunks; the tail of a chunk too short for the next
//! block is left unused (at most one block's worth per chunk).

use hashbrown::HashMap;

use crate::raw::AtomicWords;

/// Block lengths, in words, up to which every length is its own class.
const EXACT_CLASSES: usize = 32;

/// Rounds a block length up to its size class.
pub(crate) fn class_words(n: usize) -> usize {
    if n <= EXACT_CLASSES {
        return n.max(1);
    }
    let step = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros() - 3);
    (n + step - 1) & !(step - 1)
}

#[derive(Debug, Default)]
pub(crate) struct ArenaAlloc {
    /// Next never-used word.
    next: u64,
    /// Free blocks by class length (offsets in 32 bits, see `alloc`).
    free: HashMap<usize, Vec<u32>>,
    /// Words in live blocks, counted at their class length.
    live_words: u64,
    /// Words in free lists.
    free_words: u64,
}

impl ArenaAlloc {
    /// A block of at least `n` words (its class), backed by memory in one chunk.
    pub(crate) fn alloc(&mut self, arena: &AtomicWords, n: usize) -> u64 {
        let c = class_words(n);
        self.live_words += c as u64;
        if let Some(off) = self.free.get_mut(&c).and_then(Vec::pop) {
            self.free_words -= c as u64;
            return u64::from(off);
        }
        let mut off = self.next;
        while off + c as u64 > arena.chunk_end(off) {
            off = arena.chunk_end(off);
        }
        self.next = off + c as u64;
        // Postings name blocks in 32 bits (see `raw/postings.rs`).
        assert!(
            self.next <= crate::raw::postings::MAX_ARENA_WORDS,
            "shard arena full: {} words",
            self.next
        );
        // Past the reservation (16 GiB of one shard's blocks) the writer cannot go on.
        assert!(
            arena.ensure(self.next),
            "shard arena full: {} words",
            self.next
        );
        off
    }

    /// Returns a block of `n` words (as passed to `alloc`) to its class.
    pub(crate) fn free(&mut self, off: u64, n: usize) {
        let c = class_words(n);
        self.live_words -= c as u64;
        self.free_words += c as u64;
        // Offsets fit 32 bits: `alloc` stops at `MAX_ARENA_WORDS`.
        debug_assert!(off < crate::raw::postings::MAX_ARENA_WORDS);
        self.free.entry(c).or_default().push(off as u32);
    }

    /// Bytes in live blocks.
    pub(crate) fn live_bytes(&self) -> u64 {
        self.live_words * 8
    }

    /// Bytes in free lists, ready for reuse.
    #[cfg(all(test, not(roster_loom)))]
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free_words * 8
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_by_at_most_an_eighth() {
        for n in 1..5000 {
            let c = class_words(n);
            assert!(c >= n, "{n}");
            assert!(
                n <= EXACT_CLASSES && c == n || c - n <= n / 8 + 1,
                "{n} -> {c}"
            );
            assert_eq!(class_words(c), c, "classes are fixed points");
        }
    }

    #[test]
    fn freed_blocks_are_reused_by_their_class_only() {
        let arena = AtomicWords::new(4);
        let mut a = ArenaAlloc::default();
        let x = a.alloc(&arena, 5);
        let y = a.alloc(&arena, 7);
        assert_ne!(x, y);
        a.free(x, 5);
        assert_ne!(a.alloc(&arena, 6), x, "other class");
        assert_eq!(a.alloc(&arena, 5), x, "same class");
        assert_eq!(a.free_bytes(), 0);
    }

    #[test]
    fn blocks_never_straddle_chunks() {
        let arena = AtomicWords::new(3);
        let mut a = ArenaAlloc::default();
        for n in [3, 7, 5, 9, 20, 2, 40, 1] {
            let off = a.alloc(&arena, n);
            let c = class_words(n) as u64;
            assert!(arena.range(off, c).is_some(), "block {off}+{c}");
        }
    }
}
