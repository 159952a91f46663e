//! The entry block: its layout in the arena (`loc` in the slot points at word 0), and the
//! one type that packs and unpacks its head word.
//!
//! ```text
//! [ head | owner | key words ... | metadata words ... | tail: 32-bit halves ]
//!   head  = tag:32 | terms:9 | key_words:8 | meta_words:15
//!           (readers take a block's lengths from it when the slot's `loc` does not
//!           mark the block short; `Shard::read_posting` reads it as an unvalidated hint)
//!   owner = the entry's owner word (opaque; the engine stores a pid)
//!   tail half k < terms = where this entry sits in the postings of its term k
//!   tail half terms     = the block's place in its owner's list
//! ```
//!
//! Readers read the owner, key and metadata, and the head's lengths for a block that is
//! not short; the rest of the head and the tail are the writer's bookkeeping: the tag
//! leads back to the entry's slot (its home, see
//! [`hash_of_tag`](crate::raw::hash_of_tag)) from an owner list or a posting, the owner
//! list index makes unlinking O(1), and the postings positions make index removal O(1).
//! An entry's terms come from [`Hooks::index_terms`](crate::Hooks::index_terms), asked
//! again when they are needed, so the tail names no term. Posting lists live in
//! `index.rs`. Only the writer thread writes blocks: `writer.rs`, and `index.rs` for the
//! tails.

use crate::raw::{Published, HEADER_WORDS, MAX_KEY_WORDS, MAX_META_WORDS};
use crate::sync::AtomicU64;

/// Most index terms one entry may have.
pub const MAX_TERMS: usize = (1 << 9) - 1;

/// The head word of an entry block, unpacked (see the layout above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockHead {
    /// The slot tag of the entry's key.
    pub(crate) tag: u32,
    pub(crate) terms: usize,
    pub(crate) key_words: usize,
    pub(crate) meta_words: usize,
}

impl BlockHead {
    pub(crate) fn pack(self) -> u64 {
        debug_assert!(self.terms <= MAX_TERMS && self.key_words <= MAX_KEY_WORDS);
        debug_assert!(self.meta_words <= MAX_META_WORDS);
        u64::from(self.tag) << 32
            | (self.terms as u64) << 23
            | (self.key_words as u64) << 15
            | self.meta_words as u64
    }

    pub(crate) fn unpack(w: u64) -> BlockHead {
        BlockHead {
            tag: (w >> 32) as u32,
            terms: (w >> 23) as usize & MAX_TERMS,
            key_words: (w >> 15) as usize & MAX_KEY_WORDS,
            meta_words: w as usize & MAX_META_WORDS,
        }
    }

    /// Words of the whole block, tail included.
    pub(crate) fn block_words(self) -> usize {
        block_words(self.key_words, self.meta_words, self.terms)
    }

    /// Offset of the tail inside the block.
    pub(crate) fn tail(self) -> usize {
        HEADER_WORDS + self.key_words + self.meta_words
    }
}

/// Tail words for `terms` positions and the owner list index, two halves to a word.
pub(crate) fn tail_words(terms: usize) -> usize {
    (terms + 1).div_ceil(2)
}

/// Words of a block with this key, metadata and number of terms: head, owner, key,
/// metadata and tail.
pub(crate) fn block_words(key_words: usize, meta_words: usize, terms: usize) -> usize {
    HEADER_WORDS + key_words + meta_words + tail_words(terms)
}

/// The `words` words at `off`; the writer only asks for blocks it allocated.
pub(crate) fn block_of(shared: &Published, off: u64, words: usize) -> &[AtomicU64] {
    shared
        .arena()
        .range(off, words as u64)
        .expect("writer's own block is allocated")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::tag;

    #[test]
    fn block_head_round_trips_at_its_limits() {
        for bh in [
            BlockHead {
                tag: u32::MAX,
                terms: MAX_TERMS,
                key_words: MAX_KEY_WORDS,
                meta_words: MAX_META_WORDS,
            },
            BlockHead {
                tag: 1,
                terms: 0,
                key_words: 1,
                meta_words: 0,
            },
            BlockHead {
                tag: tag(0x9e37_79b9_7f4a_7c15),
                terms: 5,
                key_words: 2,
                meta_words: 7,
            },
        ] {
            assert_eq!(BlockHead::unpack(bh.pack()), bh);
        }
    }
}
