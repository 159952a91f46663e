//! Growth: a migration into a table twice the size (moving one source slot per insert
//! under loom), its end, and then the reuse of arena blocks that a reader of the drained
//! source may still be reading.

use loom::thread;

use super::{hash, read, writer, Seen};
use crate::raw::{tag, Attempt, Which};
use crate::with_terms;

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
        // One reader: two over a migration's write sections is too large a state space
        // for CI (two-reader models are in `loom_seqlock`; a key present throughout a
        // migration is `loom_migration_never_hides_a_present_key`'s).
        let reader = thread::spawn(move || {
            // Key 1 is removed and its block reused for key 1 again, in another slot,
            // with another owner and other metadata: a hit through the old slot must
            // still carry the old owner and metadata, both read from the block.
            if let Seen::Hit(owner, meta) = read(&p, hash(0, 1), &[1]) {
                assert_eq!((owner, meta), (1, vec![1]), "reader trusted a reused block");
            }
        });
        w.insert_plain(hash(3, 4), &[4], 1, &[4]).unwrap();
        assert_eq!(w.table().capacity(), 8);
        // The rest of the migration in one idle step (half-done migrations under a
        // reader are `loom_migration_never_hides_a_present_key`'s; two readers over
        // several steps is too large a state space for CI).
        w.finish_migration(Which::Entries);
        w.remove(hash(0, 1), &[1], 1).unwrap();
        w.insert_plain(hash(2, 9), &[1], 2, &[9]).unwrap();
        reader.join().unwrap();
    });
}

/// R5: a key present for the whole read is never missed while it moves from the source
/// to the new table, one slot per step, with a removal touching the source in between.
#[test]
fn loom_migration_never_hides_a_present_key() {
    loom::model(|| {
        let mut w = writer(1);
        for k in 0..3 {
            w.insert_plain(hash(k, k + 1), &[k + 1], 1, &[k + 1])
                .unwrap();
        }
        let p = w.shared.clone();
        let reader = thread::spawn(move || read_present(&p, hash(2, 3), 3));
        // Grows: the new table is published empty with the old one as its source, and
        // one source slot (slot 0, key 1) moves.
        w.insert_plain(hash(3, 4), &[4], 1, &[4]).unwrap();
        assert!(w.shared.source(&w.token, Which::Entries).is_some());
        // Key 2 is still in the source: the removal moves it over first.
        w.remove(hash(1, 2), &[2], 1).unwrap();
        // Idle steps drain the source (slot 2, key 3, moves here) and end the migration.
        w.migrate_some(Which::Entries, 1);
        w.migrate_some(Which::Entries, 1);
        w.migrate_some(Which::Entries, 1);
        assert!(w.shared.source(&w.token, Which::Entries).is_none());
        reader.join().unwrap();
    });
}

/// R5 and R6 for the term table: a posting list present for the whole read is never
/// missed while the term table migrates (one slot per new term under loom), with the
/// list itself changing in between (its term moves over first).
#[test]
fn loom_term_migration_never_hides_a_present_list() {
    // Four lists built and one grown: more steps than loom's default allows one path.
    let mut model = loom::model::Builder::new();
    model.max_branches = 20_000;
    model.check(|| {
        // Entry table of 8 slots: only the term table grows here.
        let mut w = writer(8);
        for k in 0..3 {
            w.insert(
                hash(k, k + 1),
                &[k + 1],
                1,
                &with_terms(&[100 + k], &[k + 1]),
            )
            .unwrap();
        }
        assert_eq!(w.shared.terms().capacity(), 4);
        let p = w.shared.clone();
        let reader = thread::spawn(move || {
            let mut list = Vec::new();
            for _ in 0..3 {
                match p.try_read_postings(102, Some(&mut list)) {
                    Attempt::Found { .. } => return Some(list),
                    Attempt::NotFound => panic!("term 102 is present throughout"),
                    Attempt::Retry => thread::yield_now(),
                }
            }
            None
        });
        // A fourth term grows the term table: the new one is published empty with the
        // old one as its source, and one source slot moves.
        w.insert(hash(3, 4), &[4], 1, &with_terms(&[103], &[4]))
            .unwrap();
        assert!(w.shared.source(&w.token, Which::Terms).is_some());
        // Term 102's list grows; if its term is still in the source it moves first.
        w.insert(hash(0, 5), &[5], 1, &with_terms(&[102], &[5]))
            .unwrap();
        while w.shared.source(&w.token, Which::Terms).is_some() {
            w.migrate_some(Which::Terms, 1);
        }
        // The list read is the list at some moment: key 3's posting, then key 5's too.
        let all = w.postings_of(102);
        assert_eq!(all.len(), 2);
        if let Some(got) = reader.join().unwrap() {
            assert!(got == all[..1] || got == all, "read {got:?} of {all:?}");
        }
    });
}

/// R3 inside R5: a backward shift in the migration's target (a section of the target's
/// `moves` opened while its `MOVES_MIGRATING` flag is set) never hides a key that moves
/// there and stays present, whichever of the two tables the reader's probes find it in.
#[test]
fn loom_a_shift_in_the_target_never_hides_a_moved_key() {
    loom::model(|| {
        let mut w = writer(1);
        // Slots 1 and 2 share home 1 (home 2 of the 8-slot target); slot 0 holds key 3.
        w.insert_plain(hash(1, 1), &[1], 1, &[1]).unwrap();
        w.insert_plain(hash(1, 2), &[2], 1, &[2]).unwrap();
        w.insert_plain(hash(0, 3), &[3], 1, &[3]).unwrap();
        // Grows; source slot 0 (key 3) moves, then slot 1 (key 1) does.
        w.insert_plain(hash(3, 4), &[4], 1, &[4]).unwrap();
        w.migrate_some(Which::Entries, 1);
        // The reader starts here: the steps before are `loom_migration_never_hides_a_present_key`'s,
        // and with them the model is too large for CI.
        let p = w.shared.clone();
        let reader = thread::spawn(move || read_present(&p, hash(1, 2), 2));
        // Key 2 moves, one slot past its home in the target (key 1 holds that).
        w.migrate_some(Which::Entries, 1);
        assert!(w.shared.source(&w.token, Which::Entries).is_some());
        let key_2 = tag(hash(1, 2));
        assert_eq!(w.table().view(&w.token, 3).tag, key_2);
        // Key 1 is removed from the target: key 2 shifts back to its home there.
        w.remove(hash(1, 1), &[1], 1).unwrap();
        assert_eq!(w.table().view(&w.token, 2).tag, key_2);
        w.migrate_some(Which::Entries, 1);
        assert!(w.shared.source(&w.token, Which::Entries).is_none());
        reader.join().unwrap();
    });
}

/// R5 and R6 over a second migration: a table that was a migration's target, its flag
/// cleared, fills and becomes a source in its turn; a key present throughout is never
/// missed by a reader that may start on it. (A reader started before the first
/// migration makes the model too large for CI; that one is
/// `loom_migration_never_hides_a_present_key`'s.)
#[test]
fn loom_a_second_growth_never_hides_a_present_key() {
    loom::model(|| {
        let mut w = writer(1);
        for k in 0..3 {
            w.insert_plain(hash(k, k + 1), &[k + 1], 1, &[k + 1])
                .unwrap();
        }
        // 4 slots to 8, drained at once; then 8 to 16 (6 entries is 3/4 of 8).
        w.insert_plain(hash(3, 4), &[4], 1, &[4]).unwrap();
        w.finish_migration(Which::Entries);
        let p = w.shared.clone();
        let reader = thread::spawn(move || read_present(&p, hash(0, 1), 1));
        for k in 5..7 {
            w.insert_plain(hash(k % 4, k), &[k], 1, &[k]).unwrap();
        }
        assert_eq!(w.table().capacity(), 8);
        w.insert_plain(hash(3, 7), &[7], 1, &[7]).unwrap();
        assert_eq!(w.table().capacity(), 16);
        assert!(w.shared.source(&w.token, Which::Entries).is_some());
        w.finish_migration(Which::Entries);
        reader.join().unwrap();
    });
}

/// A read of key `[k]` (metadata `[k]`, as the models insert it), present for the whole
/// read: a hit on its metadata, or a reader that gave up; never a miss.
fn read_present(p: &crate::raw::Published, hash: u64, k: u64) {
    let got = read(p, hash, &[k]);
    assert!(
        matches!(got, Seen::Hit(1, ref m) if m == &[k]) || got == Seen::GaveUp,
        "key {k} is present throughout: {got:?}"
    );
}
