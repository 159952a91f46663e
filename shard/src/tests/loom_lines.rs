//! The line cache (`raw/lines.rs`): a reader that tries a key's line first, then the slot
//! table, never sees a torn copy, and never an older state than one it saw before (L2).

use std::sync::Arc;

use loom::thread;

use super::{hash, read, Seen};
use crate::raw::lines::LineCell;
use crate::raw::{Attempt, Published, WriterToken};
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
    let (owner, n) = cell.get(h, 0, k1, &mut out)?;
    Some((owner, out[..n].to_vec()))
}

/// The key's update in the cache alone (the slot table's part in a change, L2, is the
/// models' above).
fn update(cell: &LineCell, token: &WriterToken, h: u64, k1: u64, meta: &[u64]) {
    let at = cell.find(token, h, &[0, k1]).expect("cached");
    cell.open(token, at);
    cell.close(token, at, Some((&[0, k1], 1, meta)));
}

/// A hash of directory bits `dir` (40 up) and tag byte `k`, home group 0.
fn line_hash(dir: u64, k: u64) -> u64 {
    dir << 40 | (k & 0x7f) << 33
}

#[test]
fn loom_a_line_cache_that_splits_mid_read_answers_no_torn_or_undone_entry() {
    loom::model(|| {
        let cell = Arc::new(LineCell::try_new(1, 0, false).expect("lines"));
        let token = WriterToken::new(0);
        let (h, k1) = (line_hash(1, 4), 4);
        cell.insert(&token, h, &[0, k1], 1, &[10, 10]);
        let reader = {
            let cell = cell.clone();
            thread::spawn(move || (line_read(&cell, h, k1), line_read(&cell, h, k1)))
        };
        // The segment splits (S1: copies, repointing, its lines killed); then the key changes in
        // the segment that took it over, while the retired one keeps the old copy.
        assert!(cell.split_for(&token, h));
        update(&cell, &token, h, k1, &[20, 20]);
        let (first, second) = reader.join().unwrap();
        let (old, new) = (Some((1, vec![10, 10])), Some((1, vec![20, 20])));
        for seen in [&first, &second] {
            assert!(
                *seen == old || *seen == new || seen.is_none(),
                "torn: {seen:?}"
            );
        }
        assert!(!(first == new && second == old), "undone");
        assert_eq!(line_read(&cell, h, k1), new);
    });
}

#[test]
fn loom_a_segment_made_again_mid_read_answers_no_old_copy() {
    loom::model(|| {
        let cell = Arc::new(LineCell::try_new(1, 0, false).expect("lines"));
        let token = WriterToken::new(0);
        // Key `a` (directory bits 0) and key `b` (bits 0b01), both in the first segment.
        let (ha, hb) = (line_hash(0, 5), line_hash(1, 6));
        cell.insert(&token, ha, &[0, 5], 1, &[5]);
        cell.insert(&token, hb, &[0, 6], 1, &[6]);
        let reader = {
            let cell = cell.clone();
            thread::spawn(move || (line_read(&cell, hb, 6), line_read(&cell, hb, 6)))
        };
        // The first segment splits and its lines die (S1): `b` goes to the high side.
        // Then the high side splits, which makes the first segment again (S2) as its low
        // side, for bits 0b01: `b` is copied back into it, over its own dead line, and
        // reached through a current directory entry; then `b` changes there.
        assert!(cell.split_for(&token, ha));
        assert!(cell.split_for(&token, hb));
        update(&cell, &token, hb, 6, &[7]);
        let (first, second) = reader.join().unwrap();
        let (old, new) = (Some((1, vec![6])), Some((1, vec![7])));
        for seen in [&first, &second] {
            assert!(
                *seen == old || *seen == new || seen.is_none(),
                "torn: {seen:?}"
            );
        }
        assert!(!(first == new && second == old), "undone");
        assert_eq!(line_read(&cell, hb, 6), new);
        assert_eq!(line_read(&cell, ha, 5), Some((1, vec![5])));
    });
}
