//! Criterion benches of every operation at each registry size: lookup (hit, miss, owned,
//! single against batched), register, unregister and update_metadata (synchronous round
//! trips through the shard writer), a 64-item `register_many`, and capability queries
//! (1,000 matches, 0 matches), next to SPEC P1, P2 and P3.
//!
//! `cargo bench -p roster-benches --bench registry`. Sizes default to 10k and 1M entries;
//! `ROSTER_BENCH_SIZES=10000,1000000,10000000` adds 10M where memory allows (about 7 GB).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use roster::{Entry, Health, Key, Metadata, Namespace, Process, Query, Registry};
use roster_benches::mix;

fn sizes() -> Vec<u64> {
    std::env::var("ROSTER_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| vec![10_000, 1_000_000])
}

/// Metadata as SPEC P4 sizes it: 3 capabilities and 32 bytes of attributes.
fn meta(i: u64) -> Metadata {
    Metadata::new()
        .capability("plan")
        .capability(if i % 2 == 0 { "search" } else { "code" })
        .capability(format!("shard-{}", i % 16))
        .health(Health::Healthy)
        .attribute("region", "eu-west-1-az2")
        .attribute("load", (i % 100) as i64)
}

/// A registry holding `n` entries, registered from two threads in batches.
fn filled(n: u64) -> (Registry, Namespace, Vec<Process>) {
    let r = Registry::builder()
        .capacity(n as usize * 2)
        .write_deadline(std::time::Duration::from_secs(60))
        .build()
        .expect("registry");
    let ns = r.namespace("bench").expect("namespace");
    let owners = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2u64)
            .map(|t| {
                let r = &r;
                s.spawn(move || {
                    let p = r.spawn();
                    let keys: Vec<u64> = (t..n).step_by(2).collect();
                    for chunk in keys.chunks(1024) {
                        let items = chunk.iter().map(|&i| (Key::new(ns, i), meta(i)));
                        let results = r.register_many(&p, items).expect("prefill");
                        assert!(results.iter().all(Result::is_ok), "prefill");
                    }
                    p
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    (r, ns, owners)
}

fn bench(c: &mut Criterion) {
    for n in sizes() {
        bench_size(c, n);
    }
}

fn bench_size(c: &mut Criterion, n: u64) {
    let (r, ns, _owners) = filled(n);
    let mut g = c.benchmark_group(format!("registry/{n}"));
    g.throughput(Throughput::Elements(1));

    let mut entry = Entry::new();
    let mut i = 0u64;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i += 1;
            let key = Key::new(ns, mix(i) % n);
            assert!(r.lookup_into(black_box(&key), &mut entry).unwrap());
            black_box(entry.pid())
        })
    });
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            i += 1;
            let key = Key::new(ns, n + mix(i) % n);
            assert!(!r.lookup_into(black_box(&key), &mut entry).unwrap());
        })
    });
    // Batched against single lookups, 1,024 keys an iteration, walking through a fixed
    // random sequence of 1M keys so the keys are not cache-hot (SPEC: batched >= 2x).
    let keys: Vec<Key> = (0..1u64 << 20).map(|j| Key::new(ns, mix(j) % n)).collect();
    let windows = keys.chunks(1024).cycle();
    g.throughput(Throughput::Elements(1024));
    let mut w = windows.clone();
    g.bench_function("lookup_1024_single", |b| {
        b.iter(|| {
            for key in w.next().unwrap() {
                assert!(r.lookup_into(black_box(key), &mut entry).unwrap());
            }
        })
    });
    let mut w = windows;
    g.bench_function("lookup_1024_many", |b| {
        b.iter(|| {
            r.lookup_many(black_box(w.next().unwrap()), |_, e| {
                black_box(e.expect("hit").pid());
            })
            .unwrap()
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("lookup_hit_owned", |b| {
        b.iter(|| {
            i += 1;
            black_box(r.lookup(&Key::new(ns, mix(i) % n)).unwrap())
        })
    });

    // P3: 1,000 holders of "rare" among the n entries, and "vacant", interned, held by none.
    let rare = r.spawn();
    for i in 0..1000u64 {
        r.register(&rare, &Key::new(ns, 5 * n + i), &meta(i).capability("rare"))
            .unwrap();
    }
    r.register(
        &rare,
        &Key::new(ns, 6 * n),
        &Metadata::new().capability("vacant"),
    )
    .unwrap();
    r.unregister(&rare, &Key::new(ns, 6 * n)).unwrap();
    let q = Query::new(ns).capability("rare");
    g.bench_function("query_1000_matches", |b| {
        b.iter(|| assert_eq!(r.query_count(black_box(&q)).unwrap(), 1000))
    });
    let q = Query::new(ns).capability("rare").limit(10);
    g.bench_function("query_1000_matches_collect_10", |b| {
        b.iter(|| assert_eq!(r.query(black_box(&q)).unwrap().len(), 10))
    });
    let q = Query::new(ns).capability("vacant");
    g.bench_function("query_0_matches", |b| {
        b.iter(|| assert_eq!(r.query_count(black_box(&q)).unwrap(), 0))
    });

    let p = r.spawn();
    let mut next = 10 * n;
    g.bench_function("register", |b| {
        b.iter_batched(
            || {
                next += 1;
                (next, meta(next))
            },
            |(k, m)| r.register(&p, &Key::new(ns, k), &m).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // Each one registered above, updated, then removed (until they run out; criterion
    // asks for fewer iterations than were registered).
    let mut k = 10 * n;
    let m = meta(7);
    g.bench_function("update_metadata", |b| {
        b.iter(|| {
            k = if k >= next { 10 * n + 1 } else { k + 1 };
            r.update_metadata(&p, &Key::new(ns, k), &m).unwrap()
        })
    });
    let mut k = 10 * n;
    g.bench_function("unregister", |b| {
        b.iter_batched(
            || {
                k += 1;
                if k > next {
                    next += 1;
                    r.register(&p, &Key::new(ns, next), &m).unwrap();
                    k = next;
                }
                k
            },
            |k| r.unregister(&p, &Key::new(ns, k)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // 64 fresh registrations in one call: one round trip per shard. The untimed setup
    // removes the previous call's 64, so the registry keeps its size (and no table
    // growth lands in the timing).
    let metas: Vec<Metadata> = (0..64).map(meta).collect();
    let mut last: Vec<Key> = Vec::new();
    g.throughput(Throughput::Elements(64));
    g.bench_function("register_many_64", |b| {
        b.iter_batched(
            || {
                r.unregister_many(&p, &last).unwrap();
                last = (next + 1..=next + 64).map(|k| Key::new(ns, k)).collect();
                next += 64;
                last.clone()
            },
            |keys| {
                let results = r.register_many(&p, keys.into_iter().zip(&metas)).unwrap();
                assert!(results.iter().all(Result::is_ok));
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
