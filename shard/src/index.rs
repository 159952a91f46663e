//! Secondary indexes: per index term (an opaque `u64` from the engine), the list of entry
//! blocks holding it, published in the shard's term table.
//!
//! The term table is a [`RawTable`] like the entry table, with the same seqlock read
//! protocol; a term's "entry" is a posting block:
//!
//! ```text
//! [ term_hash | capacity words | term | len | posting 0 | posting 1 | ... ]
//! ```
//!
//! A posting is an entry block's arena offset. Adding appends in place (doubling into a
//! new block when full); removing swaps the last posting into the gap. Both happen inside
//! the term slot's write section, so a reader's copy of a list is validated as a whole.
//! Each entry block's tail records, per term, `term_id:32 | position:32`, so removing an
//! entry's postings and fixing the one a swap moved are O(1) each.
//! Queries read a list, then look each posting's key up through the entry table, which
//! validates it: a stale posting can only lead to a miss or to a live entry whose
//! metadata the engine then checks.

use hashbrown::HashMap;

use crate::arena::class_words;
use crate::raw::{tag, term_hash, Loc, RawTable, SlotView, HEADER_WORDS};
use crate::sync::Ordering;
use crate::writer::{block_of, copy_into, Writer, W1};

/// Words before the postings in a posting block: header, term, len.
const LIST: usize = HEADER_WORDS + 2;

/// The writer's term ids: dense, so a tail word can name a term in 32 bits.
#[derive(Debug, Default)]
pub(crate) struct Terms {
    ids: HashMap<u64, u32>,
    /// Id -> term (0 for a free id).
    of: Vec<u64>,
    free: Vec<u32>,
    /// Terms in the term table.
    len: usize,
}

impl Terms {
    fn id(&mut self, term: u64) -> u32 {
        if let Some(&id) = self.ids.get(&term) {
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.of[id as usize] = term;
                id
            }
            None => {
                self.of.push(term);
                self.of.len() as u32 - 1
            }
        };
        self.ids.insert(term, id);
        id
    }

    fn release(&mut self, id: u32) {
        let term = std::mem::take(&mut self.of[id as usize]);
        self.ids.remove(&term);
        self.free.push(id);
    }
}

impl Writer {
    fn terms_table(&self) -> &RawTable {
        self.shared.terms()
    }

    /// The term table slot of `term`.
    fn term_slot(&self, term: u64) -> Option<usize> {
        let hash = term_hash(term);
        let want = tag(hash);
        self.seek(self.terms_table(), hash, |v| {
            v.hash == want && self.word(v.loc.offset() + HEADER_WORDS as u64) == term
        })
    }

    fn word(&self, at: u64) -> u64 {
        self.shared
            .arena
            .get(at)
            .map_or(0, |w| w.load(Ordering::Relaxed))
    }

    /// Adds `posting` to `term`'s list; returns the tail word (`term_id:32 | position:32`)
    /// the entry keeps for it.
    pub(crate) fn postings_add(&mut self, term: u64, posting: u64) -> u64 {
        let id = self.terms.id(term);
        let Some(i) = self.term_slot(term) else {
            if self.terms.len + 1 > self.terms_table().max_len() {
                let old = self.terms_table();
                let new = RawTable::with_capacity(old.capacity() * 2);
                copy_into(&self.token, old, &new);
                self.shared.install_terms(&self.token, Box::new(new));
            }
            let words = class_words(LIST + 4);
            let off = self.alloc.alloc(&self.shared.arena, words);
            let hash = term_hash(term);
            let t = self.terms_table();
            let mut i = t.home(hash);
            while t.view(&self.token, i).hash != 0 {
                i = t.next(i);
            }
            let block = block_of(&self.shared, off, words);
            let v = SlotView {
                hash: tag(hash),
                owner: 0,
                loc: Loc::new(off, 1, 0),
            };
            t.write(&self.token, i, v, || {
                for (w, x) in block.iter().zip([hash, words as u64, term, 1, posting]) {
                    w.store(x, Ordering::Relaxed);
                }
            });
            self.terms.len += 1;
            return (id as u64) << 32;
        };
        let t = self.terms_table();
        let v = t.view(&self.token, i);
        let off = v.loc.offset();
        let cap = self.word(off + 1) as usize;
        let len = self.word(off + LIST as u64 - 1) as usize;
        if LIST + len < cap {
            let block = block_of(&self.shared, off, cap);
            t.write(&self.token, i, v, || {
                block[LIST + len].store(posting, Ordering::Relaxed);
                block[LIST - 1].store(len as u64 + 1, Ordering::Relaxed);
            });
        } else {
            let words = class_words(LIST + 2 * len.max(2));
            let new_off = self.alloc.alloc(&self.shared.arena, words);
            let (src, dst) = (
                block_of(&self.shared, off, cap),
                block_of(&self.shared, new_off, words),
            );
            let t = self.terms_table();
            let loc = Loc::new(new_off, 1, 0);
            t.write(&self.token, i, SlotView { loc, ..v }, || {
                for (d, s) in dst.iter().zip(&src[..LIST + len]) {
                    d.store(s.load(Ordering::Relaxed), Ordering::Relaxed);
                }
                dst[1].store(words as u64, Ordering::Relaxed);
                dst[LIST + len].store(posting, Ordering::Relaxed);
                dst[LIST - 1].store(len as u64 + 1, Ordering::Relaxed);
            });
            self.alloc.free(off, cap);
        }
        (id as u64) << 32 | len as u64
    }

    /// Removes the postings of the entry block at `off` (header `w1`) from every list.
    pub(crate) fn unindex(&mut self, off: u64, w1: W1) {
        for k in 0..w1.terms {
            let tail = self.word(off + (w1.tail() + k) as u64);
            self.postings_remove((tail >> 32) as u32, tail as u32 as usize);
        }
    }

    /// Removes position `pos` from the list of term `id`, moving the last posting into
    /// the gap and fixing that entry's tail; drops the term when its list empties.
    pub(crate) fn postings_remove(&mut self, id: u32, pos: usize) {
        let term = self.terms.of[id as usize];
        let Some(i) = self.term_slot(term) else {
            debug_assert!(false, "term {term:#x} has no list");
            return;
        };
        let t = self.terms_table();
        let v = t.view(&self.token, i);
        let off = v.loc.offset();
        let cap = self.word(off + 1) as usize;
        let len = self.word(off + LIST as u64 - 1) as usize;
        debug_assert!(pos < len, "position {pos} past list of {len}");
        if len <= 1 {
            self.vacate(self.shared.terms(), i);
            self.alloc.free(off, cap);
            self.terms.len -= 1;
            self.terms.release(id);
            return;
        }
        let last = len - 1;
        let block = block_of(&self.shared, off, cap);
        let moved = block[LIST + last].load(Ordering::Relaxed);
        t.write(&self.token, i, v, || {
            block[LIST + pos].store(moved, Ordering::Relaxed);
            block[LIST - 1].store(last as u64, Ordering::Relaxed);
        });
        if pos != last {
            // The moved posting's entry records its position in its tail: fix it.
            let w1 = self.w1(moved);
            for k in 0..w1.terms {
                let at = moved + (w1.tail() + k) as u64;
                if self.word(at) == (id as u64) << 32 | last as u64 {
                    if let Some(w) = self.shared.arena.get(at) {
                        // Tail words are never read by readers.
                        w.store((id as u64) << 32 | pos as u64, Ordering::Relaxed);
                    }
                    break;
                }
            }
        }
    }

    /// The postings of `term` (the query fallback path).
    pub(crate) fn postings_of(&self, term: u64) -> Vec<u64> {
        let Some(i) = self.term_slot(term) else {
            return Vec::new();
        };
        let off = self.terms_table().view(&self.token, i).loc.offset();
        let len = self.word(off + LIST as u64 - 1) as usize;
        (0..len)
            .map(|k| self.word(off + (LIST + k) as u64))
            .collect()
    }

    /// Audit: each tail word of the entry at `off` names a list holding `off` there.
    pub(crate) fn audit_postings(&self, off: u64, w1: W1, problems: &mut Vec<String>) {
        for k in 0..w1.terms {
            let tail = self.word(off + (w1.tail() + k) as u64);
            let (id, pos) = ((tail >> 32) as usize, tail as u32 as usize);
            let term = self.terms.of.get(id).copied().unwrap_or(0);
            let at = self.postings_of(term).get(pos).copied();
            if at != Some(off) {
                problems.push(format!(
                    "I2: entry {off} expects posting {pos} of term {term:#x}, found {at:?}"
                ));
            }
        }
    }

    /// Audit: (postings in all lists, bytes of posting blocks), checking each list's
    /// header and that every posting names a live entry block.
    pub(crate) fn index_totals(&self, problems: &mut Vec<String>) -> (usize, u64) {
        let t = self.terms_table();
        let (mut postings, mut bytes, mut terms) = (0, 0, 0);
        for i in 0..t.capacity() {
            let v = t.view(&self.token, i);
            if v.hash == 0 {
                continue;
            }
            terms += 1;
            let off = v.loc.offset();
            let cap = self.word(off + 1) as usize;
            let term = self.word(off + HEADER_WORDS as u64);
            let len = self.word(off + LIST as u64 - 1) as usize;
            if len == 0 || LIST + len > cap || self.terms.ids.get(&term).is_none() {
                problems.push(format!("I2: term {term:#x} list of {len} in {cap} words"));
            }
            postings += len;
            bytes += cap as u64 * 8;
        }
        if terms != self.terms.len || terms != self.terms.ids.len() {
            problems.push(format!(
                "I2: {terms} terms in the table, {} counted, {} ids",
                self.terms.len,
                self.terms.ids.len()
            ));
        }
        (postings, bytes)
    }
}
