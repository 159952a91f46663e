//! Instructions per lookup, for callgrind: prefills `KEYS` keys (the peers' metadata:
//! three capabilities, health, two attributes; one process per 16 keys, or per key with
//! `solo`), then runs
//! `LOOKUPS` hits through `lookup_into` in one function that callgrind counts alone.
//!
//! ```sh
//! cargo build --release -p roster-benches --bin lookup_cost
//! valgrind --tool=callgrind --toggle-collect='*lookup_cost*hits*' \
//!     ./target/release/lookup_cost 100000 1000000
//! ```
//!
//! Instructions per lookup = the run's `Ir` total / `LOOKUPS`. Without valgrind it prints
//! the lookups per second of the same loop. Options after the counts: `huge` builds the
//! registry on huge pages (`RegistryBuilder::huge_pages`); `lines` gives it a line cache
//! (`RegistryBuilder::line_cache`); `batch` looks the keys up
//! through `lookup_many`, 16 at a time (`batch=N`: N at a time; instructions per lookup then include the batch's
//! share of building its key slice); `owned` looks them up through `lookup`, which returns
//! an owned `Entry`; `short` and `long` use string names of at most 8 bytes (two key
//! words, as an integer's) and of 20 bytes. `batch` and `owned` use integer names.
//! `solo` gives every key a process of its own (a million keys, a million processes),
//! where the owners' state words no longer stay cached. `random` looks up keys drawn at
//! random into an array before the loop (as a standalone probe does), instead of the
//! walk; `empty` registers every key with empty metadata (the smallest block, no
//! postings), to see what the arena's footprint costs a lookup; `mixed` gives half the
//! keys (drawn by a hash) an attribute more, 7 metadata words where the rest take 5, to
//! see what a mix of shapes costs the read path's branches; `chain` makes each key depend
//! on the last lookup's answer, so lookups run one at a time: the latency of one lookup,
//! where the default loop measures throughput with lookups overlapping (`chain random`:
//! the same over the random order); `grown` builds the registry at the default capacity
//! instead of presizing it for the keys, so its tables (and line cache) grow as the
//! prefill runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use roster::{Entry, Health, Key, Metadata, Namespace, Process, Registry};

/// The keys of every loop: all of `0..keys` in a multiplicative walk, so consecutive
/// lookups touch unrelated slots.
struct Walk {
    k: u64,
    step: u64,
    keys: u64,
}

impl Walk {
    fn new(keys: u64) -> Walk {
        Walk {
            k: 0,
            step: 0x9E37_79B9 % keys,
            keys,
        }
    }

    /// The next key. The step is below `keys`, so one compare wraps the walk (a `%`
    /// would cost a division).
    #[inline(always)]
    fn next_key(&mut self) -> u64 {
        self.k += self.step;
        if self.k >= self.keys {
            self.k -= self.keys;
        }
        self.k
    }
}

/// The timed loop: `n` lookups of keys spread over `0..keys` by a [`Walk`].
#[inline(never)]
fn hits(registry: &Registry, ns: Namespace, keys: u64, n: u64) -> u64 {
    let mut walk = Walk::new(keys);
    count_hits(registry, ns, (0..n).map(|_| walk.next_key()))
}

/// [`hits`] over the keys of `order`, in its order (built before the loop): random
/// order, for comparing with programs that look keys up from a shuffled array.
#[inline(never)]
fn hits_in_order(registry: &Registry, ns: Namespace, order: &[u64]) -> u64 {
    count_hits(registry, ns, order.iter().copied())
}

/// The loop of [`hits`] and [`hits_in_order`]: looks up each of `keys` into one reused
/// entry and counts the hits.
#[inline(always)]
fn count_hits(registry: &Registry, ns: Namespace, keys: impl Iterator<Item = u64>) -> u64 {
    let mut entry = Entry::new();
    let mut found = 0;
    for k in keys {
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

/// `n` keys of `0..keys` drawn at random (xorshift, fixed seed), for [`hits_in_order`].
fn random_order(keys: u64, n: u64) -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % keys
        })
        .collect()
}

/// [`hits`] (or, given `order`, [`hits_in_order`]) with each key depending on the last
/// lookup's answer (a zero taken from its pid), so no two lookups overlap: the time of
/// one lookup alone, where the other loops time throughput with as many lookups in
/// flight as the core overlaps.
#[inline(never)]
fn hits_chain(registry: &Registry, ns: Namespace, keys: u64, n: u64, order: &[u64]) -> u64 {
    if order.is_empty() {
        let mut walk = Walk::new(keys);
        chain(registry, ns, (0..n).map(|_| walk.next_key()))
    } else {
        chain(registry, ns, order.iter().copied())
    }
}

/// The loop of [`hits_chain`].
#[inline(always)]
fn chain(registry: &Registry, ns: Namespace, keys: impl Iterator<Item = u64>) -> u64 {
    let mut entry = Entry::new();
    let mut found = 0;
    // Zero at run time; the compiler cannot see it, so the dependency stays.
    let zero = black_box(0u64);
    let mut carry = 0u64;
    for k in keys {
        if registry
            .lookup_into(&Key::new(ns, k + carry), &mut entry)
            .unwrap_or(false)
        {
            found += 1;
        }
        carry = entry.pid().as_u64() & zero;
    }
    found
}

/// [`hits`] through `lookup`, which returns an owned entry per hit (what a new user
/// writes first).
#[inline(never)]
fn hits_owned(registry: &Registry, ns: Namespace, keys: u64, n: u64) -> u64 {
    let mut found = 0;
    let mut walk = Walk::new(keys);
    for _ in 0..n {
        let k = walk.next_key();
        if let Ok(Some(entry)) = registry.lookup(&Key::new(ns, black_box(k))) {
            black_box(entry.pid());
            found += 1;
        }
    }
    found
}

/// [`hits`] with string names (`names[k]`, built before the loop).
#[inline(never)]
fn hits_str(registry: &Registry, ns: Namespace, names: &[String], n: u64) -> u64 {
    let mut entry = Entry::new();
    let mut found = 0;
    let mut walk = Walk::new(names.len() as u64);
    for _ in 0..n {
        let k = walk.next_key();
        let name = black_box(names[k as usize].as_str());
        if registry
            .lookup_into(&Key::new(ns, name), &mut entry)
            .unwrap_or(false)
        {
            found += 1;
        }
        black_box(entry.pid());
    }
    found
}

/// [`hits`] through `lookup_many`, in batches of `size` keys of the same walk.
#[inline(never)]
fn hits_many(registry: &Registry, ns: Namespace, keys: u64, n: u64, size: usize) -> u64 {
    let mut found = 0;
    let mut walk = Walk::new(keys);
    let mut batch = Vec::with_capacity(size);
    for _ in 0..n.div_ceil(size as u64) {
        batch.clear();
        for _ in 0..size {
            batch.push(Key::new(ns, black_box(walk.next_key())));
        }
        registry
            .lookup_many(&batch, |_, e| {
                if let Some(e) = e {
                    black_box(e.pid());
                    found += 1;
                }
            })
            .expect("lookup_many");
    }
    found
}

/// Keys per `lookup_many` call in batch mode unless `batch=N` says (the peers'
/// `roster-batch` uses 16 too).
const BATCH: usize = 16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let keys = args.next().transpose()?.unwrap_or(100_000);
    let lookups = args.next().transpose()?.unwrap_or(1_000_000);
    let (mut huge, mut batch, mut owned, mut short, mut long) = (false, false, false, false, false);
    let (mut lines, mut grown) = (false, false);
    let (mut random, mut empty, mut mixed, mut chain) = (false, false, false, false);
    let mut per_process = 16;
    let mut batch_size = BATCH;
    for option in std::env::args().skip(3) {
        if let Some(n) = option.strip_prefix("batch=") {
            batch = true;
            batch_size = n.parse()?;
            if batch_size == 0 {
                return Err("`batch=N` needs at least one key a batch".into());
            }
            continue;
        }
        match option.as_str() {
            "huge" => huge = true,
            "lines" => lines = true,
            "grown" => grown = true,
            "batch" => batch = true,
            "owned" => owned = true,
            "short" => short = true,
            "long" => long = true,
            "solo" => per_process = 1,
            "random" => random = true,
            "empty" => empty = true,
            "mixed" => mixed = true,
            "chain" => chain = true,
            other => {
                return Err(format!(
                    "unknown option {other:?}: expected `huge`, `lines`, `grown`, `batch`, `batch=N`, `owned`, `short`, `long`, `solo`, `random`, `empty`, `mixed` or `chain`"
                )
                .into())
            }
        }
    }
    if [batch, owned, short, long, random || chain]
        .iter()
        .filter(|&&on| on)
        .count()
        > 1
    {
        return Err(
            "`batch`, `owned`, `short`, `long` and `random` exclude each other (`chain` combines with `random` only)".into(),
        );
    }
    // Prefill runs to completion under valgrind too, where 10 ms deadlines do not hold.
    let mut builder = Registry::builder();
    if !grown {
        builder = builder.capacity(keys as usize);
    }
    let registry = builder
        .write_deadline(Duration::from_secs(60))
        .huge_pages(huge)
        .line_cache(lines)
        .build()?;
    let ns = registry.namespace("cost")?;
    let meta = if empty {
        Metadata::new()
    } else {
        Metadata::new()
            .capability("plan")
            .capability("search")
            .capability("shard-1")
            .health(Health::Healthy)
            .attribute("region", "eu-west-1-az2")
            .attribute("load", 7i64)
    };
    // Two words more (a 7-word block where `meta` takes 5), for `mixed`.
    let longer = meta.clone().attribute("zone", "us-east-2b");
    let meta_of = |k: u64| {
        // Half the keys, drawn by a hash, so no walk sees a pattern.
        if mixed && k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63 == 1 {
            &longer
        } else {
            &meta
        }
    };
    let mut owners: Vec<Process> = Vec::new();
    // String names when asked: `short` ones fit 8 bytes (two key words, as integers do),
    // `long` ones take 20 or more.
    let names: Vec<String> = match (short, long) {
        (true, _) => (0..keys).map(|k| format!("a{k:x}")).collect(),
        (_, true) => (0..keys).map(|k| format!("agent-planner-{k:06}")).collect(),
        _ => Vec::new(),
    };
    for chunk in (0..keys).collect::<Vec<_>>().chunks(per_process) {
        let p = registry.spawn();
        let items = chunk.iter().map(|&k| match names.get(k as usize) {
            Some(name) => (Key::new(ns, name.as_str()), meta_of(k)),
            None => (Key::new(ns, k), meta_of(k)),
        });
        // Every registration must land, or the loop would time misses as hits' work.
        for r in registry.register_many(&p, items)? {
            r?;
        }
        owners.push(p);
    }
    let order = if random {
        random_order(keys, lookups)
    } else {
        Vec::new()
    };
    let start = Instant::now();
    let lookups = if batch {
        lookups.next_multiple_of(batch_size as u64)
    } else {
        lookups
    };
    let found = if batch {
        hits_many(&registry, ns, keys, lookups, batch_size)
    } else if owned {
        hits_owned(&registry, ns, keys, lookups)
    } else if chain {
        hits_chain(&registry, ns, keys, lookups, &order)
    } else if random {
        hits_in_order(&registry, ns, &order)
    } else if !names.is_empty() {
        hits_str(&registry, ns, &names, lookups)
    } else {
        hits(&registry, ns, keys, lookups)
    };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(found, lookups, "every lookup hits");
    println!(
        "{lookups} lookups over {keys} keys: {:.2} Mops/s",
        lookups as f64 / secs / 1e6
    );
    Ok(())
}
