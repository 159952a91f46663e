//! The machine's ceiling for lookups that miss the cache: how many random cache lines a
//! second one thread fetches from an array far larger than the caches, with every load
//! independent (as the keys of a batch are) and, for comparison, with each op two loads
//! where the second's address comes from the first (as a hit's slot gives its block).
//!
//! ```sh
//! cargo run --release -p roster-benches --bin line_rate [MIB]
//! ```
//!
//! A lookup that fetches `n` lines of its own can run at most `lines/s / n` a second on
//! this thread, however its misses overlap: the line rate divides a map's rate into the
//! lines a lookup costs it. `MIB` (a power of two, default 128) sizes the big array; the
//! slot-like array of the second loop is a quarter of it.

use std::hint::black_box;
use std::time::Instant;

/// Ops each loop runs.
const OPS: usize = 20_000_000;

/// xorshift64: a cheap stream of random indices with no loads of its own.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Words in a cache line.
const LINE_WORDS: usize = 8;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mib: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 128,
    };
    if mib < 8 || !mib.is_power_of_two() {
        return Err("MIB must be a power of two of at least 8 (indices are masked)".into());
    }
    let words = (mib << 20) / 8;
    let (word_mask, slot_mask) = (words as u64 - 1, (words / 4) as u64 - 2);
    // Every word written first, so no load finds an unmapped page.
    let big: Vec<u64> = (0..words as u64).collect();
    let slots: Vec<u64> = {
        let mut x = 0x9E37_79B9_7F4A_7C15;
        (0..words / 4)
            .map(|_| next(&mut x) & word_mask & !(LINE_WORDS as u64 - 1))
            .collect()
    };
    let mut x = 0x2545_F491_4F6C_DD1D;
    let line_mask = word_mask & !(LINE_WORDS as u64 - 1);

    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..OPS {
        sum = sum.wrapping_add(big[(next(&mut x) & line_mask) as usize]);
    }
    let one = start.elapsed().as_secs_f64();
    black_box(sum);

    let start = Instant::now();
    for _ in 0..OPS {
        let at = slots[(next(&mut x) & slot_mask) as usize];
        sum = sum.wrapping_add(big[at as usize]);
    }
    let two = start.elapsed().as_secs_f64();
    black_box(sum);

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("line_rate: {mib} MiB array, {cores} cores, one thread");
    println!(
        "independent random lines: {:.1} M/s ({:.1} ns each)",
        OPS as f64 / one / 1e6,
        one / OPS as f64 * 1e9
    );
    println!(
        "slot -> block pairs ({} MiB of slots): {:.1} M/s ({:.1} ns each)",
        mib / 4,
        OPS as f64 / two / 1e6,
        two / OPS as f64 * 1e9
    );
    Ok(())
}
