//! The one place the shard takes its atomics from: `std` normally, loom's model-checked
//! versions under `cfg(roster_loom)`, except for words only the writer stores.
//! Nothing else in the crate names `std::sync::atomic`.

#[cfg(roster_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, Ordering};
#[cfg(not(roster_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU64, Ordering};

/// Atomics for words only the shard's writer stores (counts, bookkeeping beside a table):
/// std's under loom too. No reader's answer depends on them (a reader may load one as a
/// hint, such as whether to prefetch, or as a gauge), so they take no part in any
/// protocol, and modelling them would only slow the models down.
pub(crate) use std::sync::atomic::{AtomicU32 as OwnU32, AtomicU64 as OwnU64};

// The reply cell's lock, condition variable and shared pointer (see `reply.rs`), so loom
// can model the claim/abandon decision.
#[cfg(roster_loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(roster_loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Tells the CPU (or loom's scheduler) that this thread is waiting for another one.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(roster_loom)]
    loom::thread::yield_now();
    #[cfg(not(roster_loom))]
    std::hint::spin_loop();
}
