//! The slot seqlock: readers never see a torn or unfinished write, and a backward shift
//! never hides a key that stays present.

use std::sync::Arc;

use loom::thread;

use super::{hash, read, writer, Seen};

#[test]
fn loom_update_is_never_seen_torn() {
    loom::model(|| {
        let mut w = writer(4);
        w.insert_plain(hash(0, 1), &[1], 1, &[10, 10]).unwrap();
        let p = w.shared.clone();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let p = p.clone();
                thread::spawn(move || match read(&p, hash(0, 1), &[1]) {
                    Seen::Hit(owner, got) => {
                        assert_eq!(owner, 1, "torn owner");
                        assert!(got == [10, 10] || got == [20, 20], "torn read {got:?}")
                    }
                    Seen::Miss => panic!("the key is always present"),
                    Seen::GaveUp => {}
                })
            })
            .collect();
        w.update_plain(hash(0, 1), &[1], 1, &[20, 20]).unwrap();
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(read(&p, hash(0, 1), &[1]), Seen::Hit(1, vec![20, 20]));
    });
}

#[test]
fn loom_shift_never_hides_a_present_key() {
    loom::model(|| {
        let mut w = writer(4);
        // Same home: the second key sits one slot further and shifts back on removal.
        w.insert_plain(hash(1, 1), &[1], 1, &[1]).unwrap();
        w.insert_plain(hash(1, 2), &[2], 1, &[2]).unwrap();
        let p = w.shared.clone();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let p = Arc::clone(&p);
                thread::spawn(move || {
                    assert_ne!(read(&p, hash(1, 2), &[2]), Seen::Miss, "false miss");
                })
            })
            .collect();
        w.remove(hash(1, 1), &[1], 1).unwrap();
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(read(&p, hash(1, 1), &[1]), Seen::Miss);
        assert_eq!(read(&p, hash(1, 2), &[2]), Seen::Hit(1, vec![2]));
    });
}

/// Two keys of one hash (one tag): a reader of the second meets the first's tag at home
/// (the probe's head takes it, the key differs, and the probe starts again from home)
/// while the first is removed and the second shifts back into home. It never misses.
#[test]
fn loom_a_same_tag_neighbour_shifting_away_never_hides_a_key() {
    loom::model(|| {
        let mut w = writer(4);
        w.insert_plain(hash(1, 1), &[1], 1, &[1]).unwrap();
        w.insert_plain(hash(1, 1), &[2], 1, &[2]).unwrap();
        let p = w.shared.clone();
        let reader = {
            let p = Arc::clone(&p);
            thread::spawn(move || {
                assert_ne!(read(&p, hash(1, 1), &[2]), Seen::Miss, "false miss");
            })
        };
        w.remove(hash(1, 1), &[1], 1).unwrap();
        reader.join().unwrap();
        assert_eq!(read(&p, hash(1, 1), &[1]), Seen::Miss);
        assert_eq!(read(&p, hash(1, 1), &[2]), Seen::Hit(1, vec![2]));
    });
}

/// A probe passes a slot whose write section is open (an in-place update of another
/// key, `seq` odd) without retrying, and still finds the key beyond it (R3: a passed
/// slot needs no stable `seq`; its tag can only make the probe skip it).
#[test]
fn loom_a_probe_passes_a_slot_being_written() {
    loom::model(|| {
        let mut w = writer(4);
        // Same home: the second key sits one slot past the first, whose update is in place.
        w.insert_plain(hash(1, 1), &[1], 1, &[1]).unwrap();
        w.insert_plain(hash(1, 2), &[2], 1, &[2]).unwrap();
        let p = w.shared.clone();
        let reader = {
            let p = Arc::clone(&p);
            thread::spawn(move || {
                assert_eq!(read(&p, hash(1, 2), &[2]), Seen::Hit(1, vec![2]));
                let first = read(&p, hash(1, 1), &[1]);
                assert!(
                    matches!(&first, Seen::Hit(1, m) if m == &[1] || m == &[3])
                        || first == Seen::GaveUp,
                    "{first:?}"
                );
            })
        };
        w.update_plain(hash(1, 1), &[1], 1, &[3]).unwrap();
        reader.join().unwrap();
        assert_eq!(read(&p, hash(1, 1), &[1]), Seen::Hit(1, vec![3]));
    });
}
