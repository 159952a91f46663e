//! Memory accounting, the memory limit and namespace quotas (SPEC S4, P4).

use std::sync::atomic::{AtomicBool, Ordering};

use roster::{ErrorKind, Health, Key, Metadata, Quota, Usage};

use super::common::{builder, eventually, scaled};

fn meta(i: u64) -> Metadata {
    Metadata::new()
        .capability("work")
        .capability(format!("c{}", i % 7))
        .health(Health::Healthy)
        .attribute("region", "eu-west-1-az2")
}

/// S4: the limit is never passed, also while four threads register at once on four
/// shards; every refusal names it; freeing room lets writes succeed again.
#[test]
fn s4_memory_limit_holds_under_concurrent_writers() {
    let limit = 64 * 1024;
    let r = builder().shards(4).memory_limit(limit).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let stop = AtomicBool::new(false);
    let owners = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(r.memory().charged);
                std::thread::yield_now();
            }
            peak
        });
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let r = &r;
                s.spawn(move || {
                    let p = r.spawn();
                    let (mut ok, mut full) = (Vec::new(), 0);
                    for i in 0..scaled(2000) as u64 {
                        match r.register(&p, &Key::new(ns, t << 32 | i), &meta(i)) {
                            Ok(()) => ok.push(t << 32 | i),
                            Err(e) => {
                                assert_eq!(e.kind(), &ErrorKind::RegistryFull { limit }, "{e}");
                                full += 1;
                            }
                        }
                    }
                    (p, ok, full)
                })
            })
            .collect();
        let owners: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        assert!(watcher.join().unwrap() <= limit);
        owners
    });
    let m = r.memory();
    assert!(m.charged <= limit && m.charged > limit / 2, "{m:?}");
    assert_eq!(m.limit, Some(limit));
    // Every call was answered, some fitted and some did not (which thread got which is
    // the scheduler's business).
    let n = scaled(2000);
    assert!(owners.iter().all(|(_, ok, full)| ok.len() + full == n));
    let total: u64 = owners.iter().map(|(_, ok, _)| ok.len() as u64).sum();
    assert!(total > 0 && owners.iter().any(|(_, _, full)| *full > 0));
    assert_eq!(r.usage(ns).unwrap().entries, total);
    assert_eq!(r.usage(ns).unwrap().bytes, m.charged);
    // Free one writer's entries; the same entries fit again.
    let (p, ok, _) = owners.iter().max_by_key(|(_, ok, _)| ok.len()).unwrap();
    let keys: Vec<_> = ok.iter().map(|&k| Key::new(ns, k)).collect();
    assert!(r
        .unregister_many(p, &keys)
        .unwrap()
        .iter()
        .all(Result::is_ok));
    assert!(r.memory().charged < m.charged);
    let items = ok.iter().map(|&k| (Key::new(ns, k), meta(k & 0xffff_ffff)));
    assert!(r.register_many(p, items).unwrap().iter().all(Result::is_ok));
    assert!(r.audit().unwrap().problems.is_empty());
}

/// Entry and byte quotas are exact under concurrency and isolated per namespace.
#[test]
fn quotas_are_exact_under_concurrency_and_per_namespace() {
    let r = builder().shards(4).build().unwrap();
    let (a, b) = (r.namespace("a").unwrap(), r.namespace("b").unwrap());
    r.set_quota(a, Quota::new().max_entries(100)).unwrap();
    assert_eq!(r.quota(a).unwrap().max_entries, Some(100));
    assert_eq!(r.quota(b).unwrap(), Quota::new());
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let r = &r;
                s.spawn(move || {
                    let p = r.spawn();
                    let res: Vec<_> = (0..60u64)
                        .map(|i| r.register(&p, &Key::new(a, t * 1000 + i), &meta(i)))
                        .collect();
                    (p, res)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results
        .iter()
        .flat_map(|(_, v)| v)
        .filter(|r| r.is_ok())
        .count();
    assert_eq!(ok, 100);
    for e in results
        .iter()
        .flat_map(|(_, v)| v)
        .filter_map(|r| r.as_ref().err())
    {
        assert_eq!(
            e.kind(),
            &ErrorKind::QuotaExceeded {
                namespace: a,
                what: "entries",
                limit: 100
            }
        );
        assert!(e.to_string().contains("at most 100 entries"), "{e}");
    }
    assert_eq!(r.count(a).unwrap(), 100);
    // Namespace b is not limited by a's quota.
    let p = r.spawn();
    for i in 0..150u64 {
        r.register(&p, &Key::new(b, i), &meta(i)).unwrap();
    }
    // A byte quota: the sum of charges stays under it.
    let per = r.usage(b).unwrap().bytes / 150;
    r.set_quota(
        b,
        Quota::new().max_bytes(r.usage(b).unwrap().bytes + 10 * per),
    )
    .unwrap();
    let mut extra = 0;
    for i in 150..200u64 {
        match r.register(&p, &Key::new(b, i), &meta(i)) {
            Ok(()) => extra += 1,
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::QuotaExceeded { what: "bytes", .. }),
                "{e}"
            ),
        }
    }
    assert!((9..=10).contains(&extra), "{extra}");
    assert!(r.usage(b).unwrap().bytes <= r.quota(b).unwrap().max_bytes.unwrap());
    // An update that grows past the byte quota is refused and changes nothing.
    let big = meta(1).attribute("blob", "x".repeat(200));
    let err = r.update_metadata(&p, &Key::new(b, 1u64), &big).unwrap_err();
    assert!(matches!(
        err.kind(),
        ErrorKind::QuotaExceeded { what: "bytes", .. }
    ));
    assert_eq!(
        r.lookup(&Key::new(b, 1u64))
            .unwrap()
            .unwrap()
            .attribute("blob"),
        None
    );
    assert!(r.audit().unwrap().problems.is_empty());
}

/// S4: ten cycles of fill and empty (by unregistering and by deaths) bring the charged
/// bytes back to 0 each time, and the memory the shards hold stops growing after the
/// first fill.
#[test]
fn s4_churn_returns_accounting_to_steady_state() {
    let r = builder().shards(2).build().unwrap();
    let ns = r.namespace("churn").unwrap();
    let n = scaled(3000) as u64;
    let mut after_first = None;
    for cycle in 0..10 {
        let p = r.spawn();
        let items = (0..n).map(|i| (Key::new(ns, i), meta(i + cycle)));
        assert!(r
            .register_many(&p, items)
            .unwrap()
            .iter()
            .all(Result::is_ok));
        assert!(r.memory().charged > 0);
        if cycle % 2 == 0 {
            let keys: Vec<_> = (0..n).map(|i| Key::new(ns, i)).collect();
            assert!(r
                .unregister_many(&p, &keys)
                .unwrap()
                .iter()
                .all(Result::is_ok));
        } else {
            drop(p);
            eventually("death cleanup", || r.is_empty());
        }
        assert_eq!(r.memory().charged, 0, "cycle {cycle}");
        assert_eq!(r.usage(ns).unwrap(), Usage::default(), "cycle {cycle}");
        let held = r.memory().total();
        let first = *after_first.get_or_insert(held);
        assert!(
            held <= first + first / 10,
            "cycle {cycle}: {held} vs {first}"
        );
        let audit = r.audit().unwrap();
        assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    }
}
