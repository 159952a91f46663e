//! The store-load handshakes between two sides that must not both miss each other
//! (Dekker's pattern: each stores its flag, fences or uses `SeqCst`, then loads the
//! other's). Each model is the protocol exactly as its code runs it, with the surrounding
//! data reduced to one word:
//!
//! - submit / exit guard (`lib.rs`, `Shard::send` and `ExitGuard::drop`): a caller that
//!   queued a command and then saw the writer open, and a writer whose exit drain found
//!   the queue empty, cannot both happen: every command is answered.
//! - attach / kill (engine `process.rs`): a shard writer sets its mask bit and then checks
//!   the owner alive; a killer marks it dead and then reads the mask. Either the insert is
//!   refused or the shard is notified.
//! - watch hub (engine `watch.rs`, `Hub::add` and `Hub::watching`): a subscriber counts
//!   itself and then looks at the registry; a writer publishes and then checks for
//!   watchers. Either the writer reports the change or the subscriber sees it.
//!
//! The engine has no loom build of its own; its two handshakes use the same orderings as
//! modelled here, and their code points at this file.

use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

/// `Shard::send` against `ExitGuard::drop`. The queue stands for crossbeam's channel,
/// whose push and pop are a release/acquire pair (not `SeqCst`): that is why both sides
/// fence.
#[test]
fn loom_a_command_sent_as_the_writer_exits_is_answered() {
    loom::model(|| {
        let queued = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let guard = {
            let (queued, closed) = (queued.clone(), closed.clone());
            thread::spawn(move || {
                closed.store(true, Ordering::SeqCst);
                fence(Ordering::SeqCst);
                // The drain: true if it found (and so answered) the command.
                queued.load(Ordering::Acquire)
            })
        };
        queued.store(true, Ordering::Release);
        fence(Ordering::SeqCst);
        let caller_took_back = closed.load(Ordering::Relaxed);
        let drained = guard.join().unwrap();
        assert!(
            caller_took_back || drained,
            "a queued command was never answered"
        );
    });
}

/// `Hooks::attach` (mask bit `fetch_or`, `fence(SeqCst)`, a load of the state) against
/// `ProcessTable::kill` (a CAS of the state, `fence(SeqCst)`, a load of the mask). (Loom
/// models `SeqCst` loads and RMWs as acquire/release, so without the fences this model
/// fails in loom; the fences make the argument independent of that.)
#[test]
fn loom_attach_and_kill_never_both_miss() {
    loom::model(|| {
        // The state word as the process table stores it: a live pid's complement (here
        // pid `1 << 28 | 5`, generation 1 at index 5); a kill flips bit 0 (`DEAD`).
        const ALIVE: u64 = !(1 << 28 | 5);
        const DEAD: u64 = 1;
        let state = Arc::new(AtomicU64::new(ALIVE));
        let mask = Arc::new(AtomicU64::new(0));
        let killer = {
            let (state, mask) = (state.clone(), mask.clone());
            thread::spawn(move || {
                state
                    .compare_exchange(ALIVE, ALIVE ^ DEAD, Ordering::SeqCst, Ordering::SeqCst)
                    .unwrap();
                fence(Ordering::SeqCst);
                // The shards to notify.
                mask.load(Ordering::SeqCst)
            })
        };
        mask.fetch_or(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let stored = state.load(Ordering::SeqCst) == ALIVE;
        let notified = killer.join().unwrap() & 1 == 1;
        assert!(
            !stored || notified,
            "an entry of a dead owner that no notice removes"
        );
    });
}

/// `Hub::add` (a `SeqCst` store of the count, `fence(SeqCst)`, then the subscriber's lookup)
/// against a writer's publish (a `Release` store, then `Hub::watching`: `fence(SeqCst)`
/// and a `Relaxed` load of the count).
#[test]
fn loom_a_new_watcher_sees_a_change_or_is_told_of_it() {
    loom::model(|| {
        let count = Arc::new(AtomicU64::new(0));
        let published = Arc::new(AtomicBool::new(false));
        let writer = {
            let (count, published) = (count.clone(), published.clone());
            thread::spawn(move || {
                published.store(true, Ordering::Release);
                fence(Ordering::SeqCst);
                count.load(Ordering::Relaxed) > 0
            })
        };
        count.store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let saw = published.load(Ordering::Acquire);
        let told = writer.join().unwrap();
        assert!(saw || told, "await_key could miss a registration");
    });
}
