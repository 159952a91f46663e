//! Instructions per lookup, for callgrind: prefills `KEYS` keys (the peers' metadata:
//! three capabilities, health, two attributes; one process per 16 keys), then runs
//! `LOOKUPS` hits through `lookup_into` in one function that callgrind counts alone.
//!
//! ```sh
//! cargo build --release -p roster-benches --bin lookup_cost
//! valgrind --tool=callgrind --toggle-collect='*lookup_cost*hits*' \
//!     ./target/release/lookup_cost 100000 1000000
//! ```
//!
//! Instructions per lookup = the run's `Ir` total / `LOOKUPS`. Without valgrind it prints
//! the lookups per second of the same loop. A third argument `huge` builds the registry
//! on huge pages (`RegistryBuilder::huge_pages`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use roster::{Entry, Health, Key, Metadata, Namespace, Process, Registry};

/// The timed loop: `n` lookups of keys spread over `0..keys` (a multiplicative walk, so
/// consecutive lookups touch unrelated slots).
#[inline(never)]
fn hits(registry: &Registry, ns: Namespace, keys: u64, n: u64) -> u64 {
    let mut entry = Entry::new();
    let mut found = 0;
    let mut k = 0u64;
    // A step below `keys`, so one compare wraps the walk (a `%` would cost a division).
    let step = 0x9E37_79B9 % keys;
    for _ in 0..n {
        k += step;
        if k >= keys {
            k -= keys;
        }
        if registry
            .lookup_into(&Key::new(ns, black_box(k)), &mut entry)
            .unwrap_or(false)
        {
            found += 1;
        }
        black_box(entry.pid());
    }
    found
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let keys = args.next().transpose()?.unwrap_or(100_000);
    let lookups = args.next().transpose()?.unwrap_or(1_000_000);
    let huge = match std::env::args().nth(3).as_deref() {
        None => false,
        Some("huge") => true,
        Some(other) => return Err(format!("unknown option {other:?}: expected `huge`").into()),
    };
    // Prefill runs to completion under valgrind too, where 10 ms deadlines do not hold.
    let registry = Registry::builder()
        .capacity(keys as usize)
        .write_deadline(Duration::from_secs(60))
        .huge_pages(huge)
        .build()?;
    let ns = registry.namespace("cost")?;
    let meta = Metadata::new()
        .capability("plan")
        .capability("search")
        .capability("shard-1")
        .health(Health::Healthy)
        .attribute("region", "eu-west-1-az2")
        .attribute("load", 7i64);
    let mut owners: Vec<Process> = Vec::new();
    for chunk in (0..keys).collect::<Vec<_>>().chunks(16) {
        let p = registry.spawn();
        let items = chunk.iter().map(|&k| (Key::new(ns, k), &meta));
        // Every registration must land, or the loop would time misses as hits' work.
        for r in registry.register_many(&p, items)? {
            r?;
        }
        owners.push(p);
    }
    let start = Instant::now();
    let found = hits(&registry, ns, keys, lookups);
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(found, lookups, "every lookup hits");
    println!(
        "{lookups} lookups over {keys} keys: {:.2} Mops/s",
        lookups as f64 / secs / 1e6
    );
    Ok(())
}
