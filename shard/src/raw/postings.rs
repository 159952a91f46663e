//! The layout of a posting list in the arena, defined once for the writer (`index.rs`)
//! and for readers ([`Published::try_read_postings`](super::Published::try_read_postings)).
//!
//! A term's list is a *head* block, named by the term's slot in the term table, and
//! *chunks* the head points at:
//!
//! ```text
//! head:    [ term_hash | words | term | len | chunk 0 | chunk 1 | ... | chunk n-1 | spare ]
//!            `words`: the head's length in words (writer-only); `len`: postings in
//!            the list; chunk k: arena offset
//! chunk k: [ p1 : p0 | p3 : p2 | ... ]    FIRST << k postings, two to a word (even low)
//! ```
//!
//! A posting is the arena offset of an entry block, 32 bits (arenas hold at most
//! [`MAX_ARENA_WORDS`] words). Position `p` of the list lies in chunk
//! `k = log2(p / FIRST + 1)`, at index `p - FIRST * (2^k - 1)`: chunks double, so a list of
//! `n` postings has about `log2(n / FIRST)` of them, at most half of their room unused.
//! A list grows by adding a chunk, never by copying postings; only a head whose chunk
//! directory is full is copied into one twice its size (a few dozen words at most). It
//! shrinks by dropping its last chunk once that empties. So no write copies a list
//! (SPEC L7), however long.

/// Postings in chunk 0 (each later chunk holds twice its predecessor's). Two under loom,
/// so its models reach a third chunk and a moved head in few steps.
pub const FIRST: usize = if cfg!(roster_loom) { 2 } else { 4 };
// Chunks hold whole words of two postings each.
const _: () = assert!(FIRST % 2 == 0);

/// Most chunks a list may have: up to `FIRST * (2^MAX_CHUNKS - 1)` postings, more than an
/// arena of [`MAX_ARENA_WORDS`] words could hold.
pub const MAX_CHUNKS: usize = 32;

/// Largest arena, in words, whose offsets fit a posting.
pub const MAX_ARENA_WORDS: u64 = 1 << 32;

/// Head word holding the term (after `term_hash` and `words`).
pub const TERM: usize = 2;
/// Head word holding the list's length.
pub const LEN: usize = TERM + 1;
/// First word of the chunk directory.
pub const DIR: usize = LEN + 1;

/// Words of the head a new list gets: room for two chunks.
pub const FIRST_HEAD_WORDS: usize = DIR + 2;

/// Postings chunk `k` holds.
#[inline]
pub fn chunk_len(k: usize) -> usize {
    FIRST << k
}

/// Words chunk `k` spans.
#[inline]
pub fn chunk_words(k: usize) -> usize {
    chunk_len(k) / 2
}

/// Position of chunk `k`'s first posting.
#[inline]
pub fn chunk_start(k: usize) -> u64 {
    FIRST as u64 * ((1u64 << k) - 1)
}

/// The chunk holding position `p` and the index inside it, or `None` past
/// [`MAX_CHUNKS`] (any `p` is answered: readers pass racy values).
#[inline]
pub fn locate(p: u64) -> Option<(usize, usize)> {
    let q = (p / FIRST as u64).checked_add(1)?;
    let k = (63 - q.leading_zeros()) as usize;
    if k >= MAX_CHUNKS {
        return None;
    }
    Some((k, (p - chunk_start(k)) as usize))
}

/// Chunks a list of `len` postings uses, or `None` if `len` is past any list's size.
#[inline]
pub fn chunks_for(len: u64) -> Option<usize> {
    match len {
        0 => Some(0),
        _ => locate(len - 1).map(|(k, _)| k + 1),
    }
}

/// The posting at index `i` of a chunk, from the chunk word `i / 2` holds.
#[inline]
pub fn half(word: u64, i: usize) -> u64 {
    word >> (32 * (i & 1)) & 0xffff_ffff
}

/// Chunk word `word` with index `i`'s half replaced by `posting`.
#[inline]
pub fn with_half(word: u64, i: usize, posting: u64) -> u64 {
    debug_assert!(posting < MAX_ARENA_WORDS);
    let shift = 32 * (i & 1);
    word & !(0xffff_ffff << shift) | posting << shift
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    #[test]
    fn positions_walk_the_chunks_in_order() {
        let mut p = 0u64;
        for k in 0..12 {
            assert_eq!(chunk_start(k), p);
            for i in 0..chunk_len(k) {
                assert_eq!(locate(p), Some((k, i)), "position {p}");
                p += 1;
            }
        }
        assert_eq!(chunks_for(0), Some(0));
        assert_eq!(chunks_for(1), Some(1));
        assert_eq!(chunks_for(FIRST as u64), Some(1));
        assert_eq!(chunks_for(FIRST as u64 + 1), Some(2));
    }

    #[test]
    fn racy_lengths_are_answered() {
        assert_eq!(locate(u64::MAX), None);
        assert_eq!(chunks_for(u64::MAX), None);
        assert!(chunks_for(chunk_start(MAX_CHUNKS - 1)).is_some());
        assert_eq!(chunks_for(chunk_start(MAX_CHUNKS) + 1), None);
    }

    #[test]
    fn halves_pack_two_postings_to_a_word() {
        let w = with_half(with_half(0, 0, 7), 1, (1 << 32) - 1);
        assert_eq!((half(w, 0), half(w, 1)), (7, (1 << 32) - 1));
        let w = with_half(w, 0, 9);
        assert_eq!((half(w, 0), half(w, 1)), (9, (1 << 32) - 1));
    }
}
