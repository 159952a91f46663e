//! Posting lists: an append in place and a swap-remove are never seen half done.

use loom::thread;

use super::{hash, writer};
use crate::raw::Attempt;

#[test]
fn loom_postings_are_read_whole() {
    loom::model(|| {
        let mut w = writer(4);
        w.insert(hash(0, 1), &[1], 1, &[1], &[7]).unwrap();
        let a = w.postings_of(7)[0];
        let p = w.shared.clone();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || {
                    let mut list = Vec::new();
                    for _ in 0..3 {
                        match p.try_read_postings(7, Some(&mut list)) {
                            Attempt::Found { meta_words, .. } => {
                                assert_eq!(meta_words, list.len());
                                // [a], then [a, b] after the append, then [b] after the
                                // swap-remove of a: never a mix.
                                let ok = list == [a]
                                    || (list.len() == 2 && list[0] == a && list[1] != a)
                                    || (list.len() == 1 && list[0] != a);
                                assert!(ok, "torn postings {list:?} (a = {a})");
                                return;
                            }
                            Attempt::NotFound => panic!("term 7 always has a posting"),
                            Attempt::Retry => loom::thread::yield_now(),
                        }
                    }
                })
            })
            .collect();
        w.insert(hash(1, 2), &[2], 1, &[2], &[7]).unwrap();
        w.remove(hash(0, 1), &[1], 1).unwrap();
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(w.postings_of(7).len(), 1);
    });
}
