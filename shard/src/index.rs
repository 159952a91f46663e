//! Secondary indexes: per index term (an opaque `u64` from the engine), the list of entry
//! blocks holding it, published in the shard's term table.
//!
//! The term table is a [`RawTable`] like the entry table, with the same seqlock read
//! protocol; a term's "entry" is its posting list's head block, which points at chunks of
//! 32-bit postings (the layout is `raw/postings.rs`'s, shared with readers). A posting is
//! an entry block's arena offset. Adding appends in place, in the last chunk or in a new
//! one twice the size of the last; removing swaps the last posting into the gap and drops
//! the last chunk once it empties. No posting is ever copied to grow a list, so a write
//! costs O(1) however long the list (SPEC L7). Every store happens inside the term slot's
//! write section, so a reader's copy of a list is validated as a whole; a chunk or head
//! that leaves the list is freed after the section that unlinked it (W5).
//! Each entry block's tail records, per term, the entry's 32-bit position in that term's
//! list, two to a word, in the order of the entry's terms, and after them the block's
//! place in its owner's list (see `block.rs`). The terms themselves are not
//! stored: the writer asks [`Hooks::index_terms`](crate::Hooks::index_terms) for them
//! again from the block's key and metadata, so removing an entry's postings and fixing
//! the one a swap moved are O(1) each in the lists' lengths (the fix-up reads the moved
//! entry's key and metadata and asks for its terms), at 4 bytes a term.
//! Queries read a list, then look each posting's key up through the entry table, which
//! validates it: a stale posting can only lead to a miss or to a live entry whose
//! metadata the engine then checks.

use crate::arena::class_words;
use crate::block::{block_of, tail_words, BlockHead};
use crate::raw::postings::{self as list, DIR, FIRST_HEAD_WORDS, LEN, TERM};
use crate::raw::{tag, term_hash, Loc, RawTable, SlotView, Which, HEADER_WORDS};
use crate::sync::{AtomicU64, Ordering};
use crate::writer::Writer;

/// Head word 1 (writer-only; readers never read it): the head's length in words.
fn head_word(words: usize) -> u64 {
    words as u64
}

/// The head's length, from head word 1.
fn head_words(w: u64) -> usize {
    w as u32 as usize
}

impl Writer {
    fn terms_table(&self) -> &RawTable {
        self.shared.terms()
    }

    /// The slot of `term` in the current term table, for a change to its list: while the
    /// term table migrates, a term still in the source is moved over first (a list
    /// changes only through its slot in the current table; see `raw`'s "Growth").
    fn term_slot(&self, term: u64) -> Option<usize> {
        let hash = term_hash(term);
        self.seek_current(Which::Terms, hash, |v| self.is_term(v, hash, term))
    }

    /// The list head of `term`, wherever its slot is (read-only: nothing moves).
    fn term_head(&self, term: u64) -> Option<u64> {
        let hash = term_hash(term);
        let v = self.seek_either(Which::Terms, hash, |v| self.is_term(v, hash, term))?;
        Some(v.loc.offset())
    }

    /// Whether the term-table slot `v` holds `term` (of hash `hash`).
    fn is_term(&self, v: SlotView, hash: u64, term: u64) -> bool {
        v.tag == tag(hash) && self.word(v.loc.offset() + TERM as u64) == term
    }

    pub(crate) fn word(&self, at: u64) -> u64 {
        self.shared
            .arena()
            .get(at)
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// The word of chunk `k` holding its posting `i`, in the list whose head block is
    /// `head` (`(k, i)` from [`list::locate`]).
    #[inline]
    fn chunk_word<'a>(&'a self, head: &[AtomicU64], (k, i): (usize, usize)) -> &'a AtomicU64 {
        let chunk = head[DIR + k].load(Ordering::Relaxed);
        &block_of(&self.shared, chunk + (i / 2) as u64, 1)[0]
    }

    /// The posting at position `pos` of the list whose head block is `head`.
    #[inline]
    fn posting(&self, head: &[AtomicU64], pos: u64) -> u64 {
        let at = list::locate(pos).expect("positions of a stored list");
        list::half(self.chunk_word(head, at).load(Ordering::Relaxed), at.1)
    }

    /// The head block of the list whose head is at `off`.
    #[inline]
    fn head_block(&self, off: u64) -> &[AtomicU64] {
        block_of(&self.shared, off, head_words(self.word(off + 1)))
    }

    /// Adds `posting` to `term`'s list; returns its position there, which the entry keeps
    /// in its tail.
    pub(crate) fn postings_add(&mut self, term: u64, posting: u64) -> u64 {
        debug_assert!(posting < list::MAX_ARENA_WORDS);
        let Some(i) = self.term_slot(term) else {
            self.new_list(term, posting);
            return 0;
        };
        let v = self.terms_table().view(&self.token, i);
        let old_head = v.loc.offset();
        let old = self.head_block(old_head);
        let len = old[LEN].load(Ordering::Relaxed);
        let (k, at) = list::locate(len).expect("a list below the arena's size");
        if at != 0 {
            // Room in the last chunk: one word and the length, in place.
            let w = self.chunk_word(old, (k, at));
            self.terms_table().write(&self.token, i, v, || {
                let word = list::with_half(w.load(Ordering::Relaxed), at, posting);
                w.store(word, Ordering::Relaxed);
                old[LEN].store(len + 1, Ordering::Relaxed);
            });
            return len;
        }
        // Past the last chunk's end: a new chunk, and a new head if the directory is
        // full. Both are fresh blocks, filled inside the section that links them (W5).
        let words = old.len();
        let (mut head, mut head_words) = (old_head, words);
        if DIR + k >= words {
            head_words = DIR + 2 * (words - DIR);
            head = self.alloc.alloc(self.shared.arena(), head_words);
        }
        let chunk = self.alloc.alloc(self.shared.arena(), list::chunk_words(k));
        // Taken again: the allocations above needed `self` mutably.
        let old = block_of(&self.shared, old_head, words);
        let block = block_of(&self.shared, head, head_words);
        let first = &block_of(&self.shared, chunk, 1)[0];
        let loc = Loc::new(head, 1, 0, 0);
        self.terms_table()
            .write(&self.token, i, SlotView { loc, ..v }, || {
                if head != old_head {
                    for (d, s) in block.iter().zip(old) {
                        d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
                    }
                    block[1].store(head_word(head_words), Ordering::Relaxed);
                }
                block[DIR + k].store(chunk, Ordering::Relaxed);
                first.store(list::with_half(0, 0, posting), Ordering::Relaxed);
                block[LEN].store(len + 1, Ordering::Relaxed);
            });
        if head != old_head {
            // Unlinked by the section above (W5).
            self.alloc.free(old_head, words);
        }
        len
    }

    /// Adds the entry block at `off` to the lists of its `terms`; returns its tail: the
    /// positions in the terms' order, then `owner_index`, two halves to a word.
    pub(crate) fn index(&mut self, terms: &[u64], off: u64, owner_index: usize) -> Vec<u64> {
        let mut tail = vec![0; tail_words(terms.len())];
        for (k, &term) in terms.iter().enumerate() {
            let pos = self.postings_add(term, off);
            tail[k / 2] = list::with_half(tail[k / 2], k, pos);
        }
        let k = terms.len();
        tail[k / 2] = list::with_half(tail[k / 2], k, owner_index as u64);
        tail
    }

    /// The place of the entry block at `off` (head `bh`) in its owner's list.
    pub(crate) fn owner_index(&self, off: u64, bh: BlockHead) -> usize {
        self.tail_position(off, bh, bh.terms) as usize
    }

    /// Records that the entry block at `off` (head `bh`) sits at `index` of its owner's list.
    pub(crate) fn set_owner_index(&self, off: u64, bh: BlockHead, index: usize) {
        // Readers never use tail words (the fixed `FAST_META`-word copy may load some,
        // and drops them): no write section is needed.
        let w = self.tail_word(off, bh, bh.terms);
        w.store(
            list::with_half(w.load(Ordering::Relaxed), bh.terms, index as u64),
            Ordering::Relaxed,
        );
    }

    /// Makes `term`'s list, holding `posting` only, and its slot in the term table.
    fn new_list(&mut self, term: u64, posting: u64) {
        if self.term_count + 1 > self.terms_table().max_len(self.max_load) {
            self.grow(Which::Terms);
        }
        let head = self.alloc.alloc(self.shared.arena(), FIRST_HEAD_WORDS);
        let chunk = self.alloc.alloc(self.shared.arena(), list::chunk_words(0));
        let hash = term_hash(term);
        let t = self.terms_table();
        let i = t.free_slot(&self.token, hash);
        let block = block_of(&self.shared, head, FIRST_HEAD_WORDS);
        let first = block_of(&self.shared, chunk, 1);
        let v = SlotView {
            tag: tag(hash),
            loc: Loc::new(head, 1, 0, 0),
        };
        t.write(&self.token, i, v, || {
            let words = [hash, head_word(FIRST_HEAD_WORDS), term, 1, chunk, 0];
            for (w, x) in block.iter().zip(words) {
                w.store(x, Ordering::Relaxed);
            }
            first[0].store(list::with_half(0, 0, posting), Ordering::Relaxed);
        });
        self.term_count += 1;
        self.migrate_some(Which::Terms, crate::writer::MIGRATE_PER_INSERT);
    }

    /// The index terms of the entry block at `off` (header `bh`), in the order its tail
    /// keeps their positions: asked of the hooks again from its key and metadata, with
    /// `words` as room for those. At most `bh.terms` of them.
    pub(crate) fn block_terms(
        &self,
        off: u64,
        bh: BlockHead,
        words: &mut Vec<u64>,
        terms: &mut Vec<u64>,
    ) {
        let block = block_of(&self.shared, off, bh.tail());
        words.clear();
        words.extend(
            block[HEADER_WORDS..]
                .iter()
                .map(|w| w.load(Ordering::Relaxed)),
        );
        let (key, meta) = words.split_at(bh.key_words);
        terms.clear();
        self.hooks.index_terms(key, meta, terms);
        terms.truncate(bh.terms);
    }

    /// The word of the entry at `off` holding its tail half `k`: the position of its term
    /// `k`, or for `k == bh.terms` its owner list index.
    fn tail_word(&self, off: u64, bh: BlockHead, k: usize) -> &AtomicU64 {
        &block_of(&self.shared, off + (bh.tail() + k / 2) as u64, 1)[0]
    }

    /// The entry at `off`'s position in the list of its term `k`.
    fn tail_position(&self, off: u64, bh: BlockHead, k: usize) -> u64 {
        list::half(self.tail_word(off, bh, k).load(Ordering::Relaxed), k)
    }

    /// Removes the postings of the entry block at `off` (header `bh`) from every list.
    pub(crate) fn unindex(&mut self, off: u64, bh: BlockHead) {
        let (mut words, mut terms) = (
            std::mem::take(&mut self.unindex_words),
            std::mem::take(&mut self.unindex_terms),
        );
        self.block_terms(off, bh, &mut words, &mut terms);
        debug_assert_eq!(terms.len(), bh.terms, "the hooks gave other terms");
        // Last term first: a removal's swap may move this entry's own posting of a term
        // it holds more than once, and the fix-up then finds the first match, which is
        // one not yet removed. Each position is read only when its turn comes, for the
        // same reason.
        for (k, &term) in terms.iter().enumerate().rev() {
            let pos = self.tail_position(off, bh, k);
            self.postings_remove(term, pos as usize);
        }
        (self.unindex_words, self.unindex_terms) = (words, terms);
    }

    /// Removes position `pos` from the list of `term`, moving the last posting into the
    /// gap and fixing that entry's tail; drops the last chunk once it empties, and the
    /// term once its list does.
    pub(crate) fn postings_remove(&mut self, term: u64, pos: usize) {
        let Some(i) = self.term_slot(term) else {
            debug_assert!(false, "term {term:#x} has no list");
            return;
        };
        let t = self.terms_table();
        let v = t.view(&self.token, i);
        let head = v.loc.offset();
        let block = self.head_block(head);
        let len = block[LEN].load(Ordering::Relaxed);
        debug_assert!((pos as u64) < len, "position {pos} past list of {len}");
        if len <= 1 {
            let (chunk, words) = (block[DIR].load(Ordering::Relaxed), block.len());
            self.vacate(self.shared.terms(), i);
            self.alloc.free(chunk, list::chunk_words(0));
            self.alloc.free(head, words);
            self.term_count -= 1;
            return;
        }
        let last = len - 1;
        let at_last = list::locate(last).expect("positions of a stored list");
        let moved = list::half(
            self.chunk_word(block, at_last).load(Ordering::Relaxed),
            at_last.1,
        );
        let at_pos = list::locate(pos as u64).expect("positions of a stored list");
        let pw = self.chunk_word(block, at_pos);
        t.write(&self.token, i, v, || {
            if pos as u64 != last {
                let word = list::with_half(pw.load(Ordering::Relaxed), at_pos.1, moved);
                pw.store(word, Ordering::Relaxed);
            }
            block[LEN].store(last, Ordering::Relaxed);
        });
        // The section above took the last chunk out of the list if `last` was its first
        // position: free it now (W5).
        if let (k, 0) = at_last {
            let chunk = block[DIR + k].load(Ordering::Relaxed);
            self.alloc.free(chunk, list::chunk_words(k));
        }
        if pos as u64 != last {
            // The moved posting's entry records its position in its tail: fix it, at the
            // term that is `term` and sat at `last` (an entry may hold a term twice).
            let bh = self.block_head(moved);
            if bh.terms == 0 {
                // Not an entry block (only the loom models make such postings).
                return;
            }
            let (mut words, mut terms) = (
                std::mem::take(&mut self.fix_words),
                std::mem::take(&mut self.fix_terms),
            );
            self.block_terms(moved, bh, &mut words, &mut terms);
            let k = (0..terms.len())
                .find(|&k| terms[k] == term && self.tail_position(moved, bh, k) == last);
            debug_assert!(
                k.is_some(),
                "entry {moved} does not hold {term:#x} at {last}"
            );
            if let Some(k) = k {
                // Readers never use tail words (see `set_owner_index`).
                let w = self.tail_word(moved, bh, k);
                w.store(
                    list::with_half(w.load(Ordering::Relaxed), k, pos as u64),
                    Ordering::Relaxed,
                );
            }
            (self.fix_words, self.fix_terms) = (words, terms);
        }
    }

    /// The arena offset of `term`'s list head (the loom models check block reuse with it).
    #[cfg(all(test, roster_loom))]
    pub(crate) fn list_head(&self, term: u64) -> Option<u64> {
        self.term_head(term)
    }

    /// The postings of `term` (the query fallback path).
    pub(crate) fn postings_of(&self, term: u64) -> Vec<u64> {
        let Some(head) = self.term_head(term) else {
            return Vec::new();
        };
        let head = self.head_block(head);
        let len = head[LEN].load(Ordering::Relaxed);
        (0..len).map(|p| self.posting(head, p)).collect()
    }

    /// Audit: each term of the entry at `off` has a list holding `off` at the position its
    /// tail keeps.
    pub(crate) fn audit_postings(&self, off: u64, bh: BlockHead, problems: &mut Vec<String>) {
        let (mut words, mut terms) = (Vec::new(), Vec::new());
        self.block_terms(off, bh, &mut words, &mut terms);
        if terms.len() != bh.terms {
            problems.push(format!(
                "I2: entry {off} has {} terms, the hooks give {}",
                bh.terms,
                terms.len()
            ));
        }
        for (k, &term) in terms.iter().enumerate() {
            let pos = self.tail_position(off, bh, k);
            let at = self.term_head(term).and_then(|head| {
                let head = self.head_block(head);
                (pos < head[LEN].load(Ordering::Relaxed)).then(|| self.posting(head, pos))
            });
            if at != Some(off) {
                problems.push(format!(
                    "I2: entry {off} expects posting {pos} of term {term:#x}, found {at:?}"
                ));
            }
        }
    }

    /// Audit: (postings in all lists, bytes of posting blocks), checking each list's
    /// head. With [`Writer::audit_postings`] (every tail position finds its entry at its
    /// position) and equal totals, every posting names the entry that expects it.
    pub(crate) fn index_totals(&self, problems: &mut Vec<String>) -> (usize, u64) {
        let (mut postings, mut bytes, mut terms) = (0, 0, 0);
        // While the term table migrates, terms sit in both tables (each in exactly one).
        for (t, i) in self
            .shared
            .tables(&self.token, Which::Terms)
            .flat_map(|t| (0..t.capacity()).map(move |i| (t, i)))
        {
            let v = t.view(&self.token, i);
            if !v.is_entry() {
                continue;
            }
            terms += 1;
            let head = v.loc.offset();
            let words = head_words(self.word(head + 1));
            let term = self.word(head + TERM as u64);
            let len = self.word(head + LEN as u64);
            let chunks = list::chunks_for(len).unwrap_or(usize::MAX);
            if len == 0 || chunks > words.saturating_sub(DIR) || self.term_head(term) != Some(head)
            {
                problems.push(format!("I2: term {term:#x} list of {len} in {words} words"));
                continue;
            }
            postings += len as usize;
            let chunk_words: usize = (0..chunks).map(|k| class_words(list::chunk_words(k))).sum();
            bytes += (class_words(words) + chunk_words) as u64 * 8;
        }
        if terms != self.term_count {
            problems.push(format!(
                "I2: {terms} terms in the table, {} counted",
                self.term_count,
            ));
        }
        (postings, bytes)
    }
}
