//! Posting lists: an append in place and a swap-remove are never seen half done. One
//! reader here (two, with two write sections, is too large a state space for CI); the
//! protocol itself is checked with two readers in `loom_seqlock` and `loom_grow`.

use loom::thread;

use super::writer;
use crate::raw::Attempt;

/// Postings outside the arena: the writer's tail fix-up finds no entry there and skips.
const A: u64 = 1 << 30;
const B: u64 = (1 << 30) + 64;

#[test]
fn loom_postings_are_read_whole() {
    loom::model(|| {
        let mut w = writer(4);
        w.postings_add(7, A);
        let p = w.shared.clone();
        let readers: Vec<_> = (0..1)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || {
                    let mut list = Vec::new();
                    for _ in 0..3 {
                        match p.try_read_postings(7, Some(&mut list)) {
                            Attempt::Found { meta_words, .. } => {
                                assert_eq!(meta_words, list.len());
                                // [A], then [A, B] after the append, then [B] after the
                                // swap-remove of A: never a mix.
                                let ok = list == [A] || list == [A, B] || list == [B];
                                assert!(ok, "torn postings {list:?}");
                                return;
                            }
                            Attempt::NotFound => panic!("term 7 always has a posting"),
                            Attempt::Retry => loom::thread::yield_now(),
                        }
                    }
                })
            })
            .collect();
        w.postings_add(7, B);
        w.postings_remove(7, 0);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(w.postings_of(7), [B]);
    });
}

/// A list that crosses into a new chunk and outgrows its head's directory, then gives
/// the old head back for another term's new list to reuse: a reader sees the list
/// before, after the append or after the swap-remove, never a mix, and never the
/// other term's words through the old head.
#[test]
fn loom_a_list_grows_by_chunks_and_its_old_head_is_reused() {
    // Two chunks (2 + 4 postings under loom) fill the first head's directory exactly.
    const FULL: u64 = 6;
    fn at(k: u64) -> u64 {
        A + 64 * k
    }
    let mut model = loom::model::Builder::new();
    model.max_branches = 10_000;
    model.check(|| {
        let mut w = writer(4);
        w.postings_add(7, at(0));
        for k in 1..FULL {
            w.postings_add(7, at(k));
        }
        // Term 9's head goes to the free list first, so the one term 7 gives up below is
        // on top of it when term 11 asks for a head (free lists are LIFO).
        w.postings_add(9, B);
        w.postings_remove(9, 0);
        let old_head = w.list_head(7);
        let before: Vec<u64> = (0..FULL).map(at).collect();
        let p = w.shared.clone();
        let reader = thread::spawn(move || {
            let mut list = Vec::new();
            for _ in 0..3 {
                match p.try_read_postings(7, Some(&mut list)) {
                    Attempt::Found { meta_words, .. } => {
                        assert_eq!(meta_words, list.len());
                        let mut grown = before.clone();
                        grown.push(at(FULL));
                        let mut swapped = grown.clone();
                        swapped.swap_remove(0);
                        let ok = list == before || list == grown || list == swapped;
                        assert!(ok, "torn postings {list:?}");
                        return;
                    }
                    Attempt::NotFound => panic!("term 7 always has postings"),
                    Attempt::Retry => loom::thread::yield_now(),
                }
            }
        });
        // A third chunk and a head twice the size; then a swap-remove (which frees the
        // third chunk again); then term 11's new list takes the head term 7 left.
        w.postings_add(7, at(FULL));
        assert_ne!(w.list_head(7), old_head);
        w.postings_remove(7, 0);
        w.postings_add(11, B);
        assert_eq!(
            w.list_head(11),
            old_head,
            "the model reuses term 7's old head"
        );
        reader.join().unwrap();
        let mut expect: Vec<u64> = (0..=FULL).map(at).collect();
        expect.swap_remove(0);
        assert_eq!(w.postings_of(7), expect);
        assert_eq!(w.postings_of(11), [B]);
    });
}
