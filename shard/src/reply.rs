//! One answer from the writer to one caller, and the atomic decision between the caller
//! giving up and the writer applying (SPEC L1: `Timeout` means the write was not applied).
//!
//! A command carries a [`Reply`]; its caller keeps the [`Pending`] end. Both share one
//! small state machine under a mutex (uncontended: one writer, one caller):
//!
//! ```text
//!   Waiting --claim (before the deadline)--> Claimed --send--> Done --take--> Taken
//!      |  \--claim (deadline passed)---> Abandoned
//!      |--caller gives up / drops-------> Abandoned
//!      '--writer drops the Reply--------> Closed   (also from Claimed)
//! ```
//!
//! The writer claims a write before applying it and skips it if the claim fails; the
//! caller turns its own timeout into `Abandoned` only from `Waiting`. Whoever moves first
//! wins, so a timed-out caller knows the write never happened, and a claimed write is
//! always answered (or `Closed` if the writer died applying it, never `Timeout`).
//!
//! Waiting works blocking (condition variable, after a few yielding polls: a reply
//! usually comes within microseconds) or as a future (any runtime: the writer wakes the
//! stored waker). A future has no timer: the writer enforces the deadline when it reaches
//! the command, and dropping the future abandons a write the writer has not claimed.

use std::task::{Context, Poll, Waker};
use std::time::Instant;

use crate::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Why no value came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoReply {
    /// The deadline passed before the writer reached the command: it was not applied.
    Timeout,
    /// The writer ended (shutdown, or a fault) without answering.
    Closed,
}

enum State<T> {
    Waiting,
    Claimed,
    Done(T),
    Taken,
    Abandoned,
    Closed,
}

struct Cell<T> {
    state: State<T>,
    waker: Option<Waker>,
}

struct Inner<T> {
    cell: Mutex<Cell<T>>,
    ready: Condvar,
    deadline: Option<Instant>,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, Cell<T>> {
        // No code panics while holding the lock, but stay usable if one ever did.
        self.cell.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves to a final state and wakes the caller, whichever way it waits.
    fn finish(&self, mut cell: MutexGuard<'_, Cell<T>>, state: State<T>) {
        cell.state = state;
        let waker = cell.waker.take();
        drop(cell);
        self.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A new reply pair; the writer must claim the command before applying it if `deadline`
/// is set (reads and audits pass `None`).
pub(crate) fn pair<T>(deadline: Option<Instant>) -> (Reply<T>, Pending<T>) {
    let inner = Arc::new(Inner {
        cell: Mutex::new(Cell {
            state: State::Waiting,
            waker: None,
        }),
        ready: Condvar::new(),
        deadline,
    });
    (Reply(Some(inner.clone())), Pending(inner))
}

/// The writer's end. Dropping it unanswered answers `Closed`.
pub(crate) struct Reply<T>(Option<Arc<Inner<T>>>);

impl<T> Reply<T> {
    /// Takes the command for applying. `false`: the caller gave up, or the deadline has
    /// passed (the caller is told `Timeout`); skip the command.
    pub(crate) fn claim(&self) -> bool {
        let Some(inner) = &self.0 else { return false };
        let cell = inner.lock();
        if !matches!(cell.state, State::Waiting) {
            return false;
        }
        if inner.deadline.is_some_and(|d| Instant::now() >= d) {
            inner.finish(cell, State::Abandoned);
            return false;
        }
        let mut cell = cell;
        cell.state = State::Claimed;
        true
    }

    /// The command's deadline, if it has one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.0.as_ref().and_then(|inner| inner.deadline)
    }

    /// Answers. A caller that already gave up drops the value.
    pub(crate) fn send(mut self, value: T) {
        let Some(inner) = self.0.take() else { return };
        let cell = inner.lock();
        if matches!(cell.state, State::Waiting | State::Claimed) {
            inner.finish(cell, State::Done(value));
        }
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.0.take() {
            let cell = inner.lock();
            if matches!(cell.state, State::Waiting | State::Claimed) {
                inner.finish(cell, State::Closed);
            }
        }
    }
}

/// The caller's end. Dropping it before the writer claimed the command abandons it.
pub struct Pending<T>(Arc<Inner<T>>);

impl<T> Pending<T> {
    /// Takes a final answer out of `cell`, if there is one.
    fn settled(cell: &mut Cell<T>) -> Option<Result<T, NoReply>> {
        match std::mem::replace(&mut cell.state, State::Taken) {
            State::Done(v) => Some(Ok(v)),
            State::Abandoned => Some(Err(NoReply::Timeout)),
            State::Closed | State::Taken => Some(Err(NoReply::Closed)),
            other => {
                cell.state = other;
                None
            }
        }
    }

    /// Gives up if the writer has not claimed the command yet: `true` if it never will.
    pub(crate) fn abandon(&self) -> bool {
        let mut cell = self.0.lock();
        if matches!(cell.state, State::Waiting) {
            cell.state = State::Abandoned;
            true
        } else {
            false
        }
    }

    /// Blocks for the answer: `polls` yielding polls first, then parks until the answer,
    /// or until the deadline if the writer has not claimed the command by then.
    pub(crate) fn wait(self, polls: u32) -> Result<T, NoReply> {
        for _ in 0..polls {
            if let Some(r) = Self::settled(&mut self.0.lock()) {
                return r;
            }
            std::thread::yield_now();
        }
        let mut cell = self.0.lock();
        loop {
            if let Some(r) = Self::settled(&mut cell) {
                return r;
            }
            match (&cell.state, self.0.deadline) {
                (State::Waiting, Some(deadline)) => {
                    let now = Instant::now();
                    if now >= deadline {
                        cell.state = State::Taken;
                        return Err(NoReply::Timeout);
                    }
                    cell = self
                        .0
                        .ready
                        .wait_timeout(cell, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                // Claimed (or no deadline): the writer answers or drops the reply.
                _ => cell = self.0.ready.wait(cell).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }

    /// Polls for the answer from a future; the writer wakes `cx`'s waker.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, NoReply>> {
        let mut cell = self.0.lock();
        if let Some(r) = Self::settled(&mut cell) {
            return Poll::Ready(r);
        }
        if matches!(cell.state, State::Waiting)
            && self.0.deadline.is_some_and(|d| Instant::now() >= d)
        {
            cell.state = State::Taken;
            return Poll::Ready(Err(NoReply::Timeout));
        }
        match &mut cell.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn answer_claimed_before_the_deadline_arrives() {
        let (reply, pending) = pair(Some(Instant::now() + Duration::from_secs(5)));
        assert!(reply.claim());
        assert!(!pending.abandon(), "claimed: too late to give up");
        let t = std::thread::spawn(move || reply.send(7));
        assert_eq!(pending.wait(0), Ok(7));
        t.join().unwrap();
    }

    #[test]
    fn timeout_before_the_claim_means_never_applied() {
        let (reply, pending) = pair::<u32>(Some(Instant::now() + Duration::from_millis(1)));
        assert_eq!(pending.wait(0), Err(NoReply::Timeout));
        assert!(!reply.claim(), "the writer must skip it");
    }

    #[test]
    fn writer_past_the_deadline_refuses_and_tells_the_caller() {
        let (reply, pending) = pair::<u32>(Some(Instant::now()));
        assert!(!reply.claim());
        assert_eq!(pending.wait(0), Err(NoReply::Timeout));
    }

    #[test]
    fn a_dropped_reply_closes_even_after_the_claim() {
        let (reply, pending) = pair::<u32>(Some(Instant::now() + Duration::from_secs(5)));
        assert!(reply.claim());
        drop(reply);
        assert_eq!(pending.wait(3), Err(NoReply::Closed));
        let (reply, pending) = pair::<u32>(None);
        drop(reply);
        assert_eq!(pending.wait(0), Err(NoReply::Closed));
    }

    #[test]
    fn dropping_the_caller_abandons_an_unclaimed_write() {
        let (reply, pending) = pair::<u32>(None);
        drop(pending);
        assert!(!reply.claim());
    }

    #[test]
    fn poll_registers_a_waker_that_the_answer_wakes() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::task::Wake;
        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let (reply, mut pending) = pair(None);
        assert!(pending.poll(&mut cx).is_pending());
        assert!(reply.claim());
        reply.send(5u32);
        assert!(flag.0.load(Ordering::SeqCst));
        assert_eq!(pending.poll(&mut cx), Poll::Ready(Ok(5)));
    }
}
