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
        let id = (w.postings_add(7, A) >> 32) as u32;
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
        w.postings_remove(id, 0);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(w.postings_of(7), [B]);
    });
}
