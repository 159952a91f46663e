//! Loom models of the seqlock and publish protocol (`cfg(roster_loom)`): one writer, two
//! readers, tiny tables. Run with
//! `RUSTFLAGS="--cfg roster_loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p roster-shard --release`.

mod loom_grow;
mod loom_handshake;
mod loom_index;
mod loom_lines;
mod loom_reply;
mod loom_seqlock;

use std::sync::Arc;

use crate::raw::{Attempt, Published};
use crate::writer::Writer;
use crate::AllAlive;

fn writer(capacity: usize) -> Writer {
    let (p, token) = Published::new(0, capacity, 3);
    Writer::new(Arc::new(p), token, Arc::new(AllAlive), 1, 0)
}

/// What a bounded read concluded.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// A hit: the owner word and the metadata.
    Hit(u64, Vec<u64>),
    Miss,
    /// Every attempt overlapped a write; the real reader would now ask the writer.
    GaveUp,
}

/// Up to three optimistic attempts, as the real reader makes (with a larger bound) before
/// it falls back; bounding them keeps loom from feeding a spinning reader stale values
/// forever.
fn read(p: &Published, hash: u64, key: &[u64]) -> Seen {
    // Room for the hit path's fixed 7-word metadata copy.
    let mut out = [0u64; 8];
    for _ in 0..3 {
        match p.try_read(hash, key, &mut out) {
            Attempt::Found {
                owner,
                owner_hint,
                meta_words,
                ..
            } => {
                // A validated hit's hint is its owner's low bits (`Loc`).
                assert_eq!(owner_hint, owner & ((1 << crate::OWNER_HINT_BITS) - 1));
                return Seen::Hit(owner, out[..meta_words].to_vec());
            }
            Attempt::NotFound => return Seen::Miss,
            Attempt::Retry => loom::thread::yield_now(),
        }
    }
    Seen::GaveUp
}

/// A hash with home slot `home` in a 4-slot table, and a tag (its high half) distinct
/// per `k`, so keys sharing a home still differ in their slots' words.
fn hash(home: u64, k: u64) -> u64 {
    home << 62 | k << 33
}
