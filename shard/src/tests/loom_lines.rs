//! The line cache (`raw/lines.rs`): a reader that tries a key's line first, then the slot
//! table, never sees a torn copy, and never an older state than one it saw before (L2).

use std::sync::Arc;

use loom::thread;

use super::{hash, read, Seen};
use crate::raw::{Attempt, Published};
use crate::writer::Writer;
use crate::AllAlive;

/// A writer of a 4-slot table with a line cache.
fn cached_writer() -> Writer {
    let (p, token) = Published::try_new(0, 4, 3, false, Some(0)).expect("tables");
    Writer::new(Arc::new(p), token, Arc::new(AllAlive), 1, 0)
}

/// The inlined read path: the line first (`try_read_quick`), the slot table's read if it
/// does not answer.
fn read_quick(p: &Published, hash: u64, key: &[u64]) -> Seen {
    let mut out = [0u64; 8];
    match p.try_read_quick(hash, key, &mut out) {
        Attempt::Found {
            owner, meta_words, ..
        } => Seen::Hit(owner, out[..meta_words].to_vec()),
        Attempt::NotFound => Seen::Miss,
        Attempt::Retry => read(p, hash, key),
    }
}

/// Two reads one after the other, on another thread.
fn two_reads(p: &Arc<Published>, h: u64, key: [u64; 2]) -> thread::JoinHandle<(Seen, Seen)> {
    let p = p.clone();
    thread::spawn(move || (read_quick(&p, h, &key), read_quick(&p, h, &key)))
}

#[test]
fn loom_a_cached_update_is_never_seen_torn_or_undone() {
    loom::model(|| {
        let mut w = cached_writer();
        let (h, key) = (hash(0, 1), [0, 1]);
        w.insert_plain(h, &key, 1, &[10, 10]).unwrap();
        let p = w.shared.clone();
        let reader = two_reads(&p, h, key);
        w.update_plain(h, &key, 1, &[20, 20]).unwrap();
        let (first, second) = reader.join().unwrap();
        for seen in [&first, &second] {
            match seen {
                Seen::Hit(1, got) => assert!(*got == [10, 10] || *got == [20, 20], "torn: {got:?}"),
                Seen::GaveUp => {}
                other => panic!("the key is always present: {other:?}"),
            }
        }
        let (old, new) = (Seen::Hit(1, vec![10, 10]), Seen::Hit(1, vec![20, 20]));
        assert!(!(first == new && second == old), "undone");
        assert_eq!(read_quick(&p, h, &key), new);
    });
}

#[test]
fn loom_a_removed_cached_key_never_comes_back() {
    loom::model(|| {
        let mut w = cached_writer();
        let (h, key) = (hash(1, 2), [0, 2]);
        w.insert_plain(h, &key, 1, &[5]).unwrap();
        let p = w.shared.clone();
        let reader = two_reads(&p, h, key);
        w.remove(h, &key, 1).unwrap();
        let (first, second) = reader.join().unwrap();
        for seen in [&first, &second] {
            match seen {
                Seen::Hit(1, got) => assert_eq!(*got, [5], "torn"),
                Seen::Miss | Seen::GaveUp => {}
                other => panic!("{other:?}"),
            }
        }
        let back = matches!(second, Seen::Hit(..));
        assert!(!(first == Seen::Miss && back), "came back");
        assert_eq!(read_quick(&p, h, &key), Seen::Miss);
    });
}

#[test]
fn loom_a_line_hit_is_never_older_than_a_slot_table_read_before_it() {
    loom::model(|| {
        let mut w = cached_writer();
        let (h, key) = (hash(0, 3), [0, 3]);
        w.insert_plain(h, &key, 1, &[1]).unwrap();
        let p = w.shared.clone();
        // The slot table alone (as a query or the writer fallback reads), then the line.
        let reader = {
            let p = p.clone();
            thread::spawn(move || (read(&p, h, &key), read_quick(&p, h, &key)))
        };
        w.update_plain(h, &key, 1, &[2]).unwrap();
        let (first, second) = reader.join().unwrap();
        let (old, new) = (Seen::Hit(1, vec![1]), Seen::Hit(1, vec![2]));
        assert!(
            !(first == new && second == old),
            "the line undid the table's update"
        );
    });
}
