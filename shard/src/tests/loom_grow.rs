//! Growth: publishing a new table and retiring the old one, then reusing arena blocks that
//! a reader of the retired table may still be reading.

use loom::thread;

use super::{hash, read, writer, Seen};

#[test]
fn loom_growth_then_block_reuse_is_never_seen() {
    loom::model(|| {
        let mut w = writer(1);
        // The first table holds 3 entries (3/4 of 4 slots); the 4th insert grows it.
        for k in 0..3 {
            w.insert_plain(hash(k, k + 1), &[k + 1], 1, &[k + 1])
                .unwrap();
        }
        assert_eq!(w.table().capacity(), 4);
        let p = w.shared.clone();
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let p = p.clone();
                thread::spawn(move || {
                    if r == 0 {
                        let got = read(&p, hash(1, 2), &[2]);
                        assert!(
                            matches!(got, Seen::Hit(ref m) if m == &[2]) || got == Seen::GaveUp
                        );
                    }
                    // Key 1 is removed and its block reused for key 9 with other metadata:
                    // a hit on key 1 must still carry key 1's metadata.
                    if let Seen::Hit(meta) = read(&p, hash(0, 1), &[1]) {
                        assert_eq!(meta, vec![1], "reader trusted a reused block");
                    }
                })
            })
            .collect();
        w.insert_plain(hash(3, 4), &[4], 1, &[4]).unwrap();
        assert_eq!(w.table().capacity(), 8);
        w.remove(hash(0, 1), &[1], 1).unwrap();
        w.insert_plain(hash(2, 9), &[1], 1, &[9]).unwrap();
        for r in readers {
            r.join().unwrap();
        }
    });
}
