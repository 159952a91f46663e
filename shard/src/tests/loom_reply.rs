//! The reply cell (`reply.rs`): a writer's claim against a caller's abandon decides,
//! once, whether a write is applied (SPEC L1: `Timeout` means not applied), and a claimed
//! write is always answered, with its value or `Closed`, never `Timeout`.

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

use crate::reply::{pair, NoReply};

/// The caller gives up while the writer claims: exactly one of them wins. If the caller
/// won, the write is never applied; if the writer won, the caller gets its answer.
#[test]
fn loom_claim_against_abandon_decides_once() {
    loom::model(|| {
        let (reply, pending) = pair::<u32>(None);
        let applied = Arc::new(AtomicBool::new(false));
        let writer = {
            let applied = applied.clone();
            thread::spawn(move || {
                if reply.claim() {
                    applied.store(true, Ordering::Relaxed);
                    reply.send(7);
                }
            })
        };
        let gave_up = pending.abandon();
        if gave_up {
            writer.join().unwrap();
            assert!(!applied.load(Ordering::Relaxed), "abandoned write applied");
            assert_eq!(pending.wait(0), Err(NoReply::Timeout));
        } else {
            // The writer claimed first: the answer comes, whenever it does.
            assert_eq!(pending.wait(0), Ok(7));
            writer.join().unwrap();
            assert!(applied.load(Ordering::Relaxed));
        }
    });
}

/// A writer that claims and then dies (drops the reply unanswered, as unwinding does)
/// answers `Closed`, never `Timeout`: the caller cannot conclude "not applied".
#[test]
fn loom_claimed_then_dropped_reads_closed() {
    loom::model(|| {
        let (reply, pending) = pair::<u32>(None);
        let writer = thread::spawn(move || {
            assert!(reply.claim());
            drop(reply);
        });
        let r = pending.wait(0);
        writer.join().unwrap();
        assert_eq!(r, Err(NoReply::Closed));
    });
}
