//! The line cache (`raw/lines.rs`): a reader that tries a key's line first, then the slot
//! table, never sees a torn copy, and never an older state than one it saw before (L2).

use std::sync::Arc;

use loom::thread;

use super::{hash, read, Seen};
use crate::raw::lines::LineCell;
use crate::raw::{Attempt, Published, WriterToken};
use crate::sync::{AtomicBool, Ordering};
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

/// A line-only read of `[0, k1]`: the hit's owner and metadata, or `None` (not cached
/// there, or being written).
fn line_read(cell: &LineCell, h: u64, k1: u64) -> Option<(u64, Vec<u64>)> {
    let mut out = [0u64; 7];
    let (owner, n) = cell.get().get(h, 0, k1, &mut out)?;
    Some((owner, out[..n].to_vec()))
}

#[test]
fn loom_a_line_cache_that_grows_mid_read_answers_no_torn_or_undone_entry() {
    loom::model(|| {
        // The cache alone (the slot table's part in a change, L2, is the models' above).
        let cell = Arc::new(LineCell::try_new(4, 0, false).expect("lines"));
        let token = WriterToken::new(0);
        let (h, k1) = (hash(0, 4), 4);
        cell.insert(&token, h, &[0, k1], 1, &[10, 10]);
        let reader = {
            let cell = cell.clone();
            thread::spawn(move || (line_read(&cell, h, k1), line_read(&cell, h, k1)))
        };
        // A new table, readers sent to it; the change of the key moves its line first
        // (G2), then changes it there.
        assert!(cell.grow(&token));
        let i = cell.find(&token, h, &[0, k1]).expect("moved");
        cell.get().open(&token, i);
        cell.get().close(&token, i, Some((&[0, k1], 1, &[20, 20])));
        let (first, second) = reader.join().unwrap();
        let (old, new) = (Some((1, vec![10, 10])), Some((1, vec![20, 20])));
        for seen in [&first, &second] {
            assert!(
                *seen == old || *seen == new || seen.is_none(),
                "torn: {seen:?}"
            );
        }
        assert!(!(first == new && second == old), "undone");
        cell.finish(&token);
        assert_eq!(line_read(&cell, h, k1), new);
    });
}

#[test]
fn loom_a_key_removed_while_its_line_moves_is_never_read_after() {
    loom::model(|| {
        let cell = Arc::new(LineCell::try_new(4, 0, false).expect("lines"));
        let token = WriterToken::new(0);
        // Two keys in two groups: the sweep moves the first, then the second.
        let (ha, hb) = (hash(0, 5), hash(1, 6));
        cell.insert(&token, ha, &[0, 5], 1, &[5]);
        cell.insert(&token, hb, &[0, 6], 1, &[6]);
        // Set once the removal is done: a read that begins after it sees it gone.
        let removed = Arc::new(AtomicBool::new(false));
        let reader = {
            let (cell, removed) = (cell.clone(), removed.clone());
            thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..2 {
                    let after = removed.load(Ordering::Acquire);
                    seen.push((after, line_read(&cell, hb, 6)));
                }
                seen
            })
        };
        // The sweep moves a group a step (one line a step under loom, rounded up): the
        // first key's. The second is still in the old table when it is removed, so the
        // removal moves it first (G2), and the sweep must not bring it back.
        assert!(cell.grow(&token));
        cell.migrate_some(&token, 1);
        // Removed from the slot table: its line killed inside the removal (L2).
        let i = cell.find(&token, hb, &[0, 6]).expect("moved");
        cell.get().open(&token, i);
        cell.get().close(&token, i, None);
        removed.store(true, Ordering::Release);
        for (after, got) in reader.join().unwrap() {
            assert!(got == Some((1, vec![6])) || got.is_none(), "torn: {got:?}");
            assert!(!(after && got.is_some()), "read after its removal");
        }
        cell.finish(&token);
        assert_eq!(line_read(&cell, hb, 6), None);
        assert_eq!(line_read(&cell, ha, 5), Some((1, vec![5])));
    });
}
