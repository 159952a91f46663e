//! Concurrent stress, sized for CI (set `ROSTER_STRESS=10` to scale up).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use roster::{ErrorKind, Key, Metadata, ValueRef};

use super::common::{eventually, scaled, with_registry};

fn scale(n: usize) -> usize {
    let k = std::env::var("ROSTER_STRESS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    scaled(n * k)
}

#[test]
fn s1_concurrent_registrations_of_a_key_have_exactly_one_winner() {
    with_registry(|r| {
        let ns = r.namespace("race").unwrap();
        let threads = 4;
        let keys = scale(300) as u64;
        let barrier = Arc::new(Barrier::new(threads));
        let results: Vec<_> = (0..threads)
            .map(|_| {
                let (r, barrier) = (r.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let p = r.spawn();
                    barrier.wait();
                    let outcome: Vec<_> = (0..keys)
                        .map(|k| r.register(&p, &Key::new(ns, k), &Metadata::new()))
                        .collect();
                    (p, outcome)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        for k in 0..keys as usize {
            let winners: Vec<_> = results.iter().filter(|(_, o)| o[k].is_ok()).collect();
            assert_eq!(winners.len(), 1, "key {k}");
            let winner = winners[0].0.pid();
            for (_, o) in &results {
                if let Err(e) = &o[k] {
                    assert_eq!(e.kind(), &ErrorKind::AlreadyRegistered { owner: winner });
                }
            }
            assert_eq!(
                r.lookup(&Key::new(ns, k as u64)).unwrap().unwrap().pid(),
                winner
            );
        }
    });
}

/// Metadata whose attributes check each other: a torn read would break the sum.
fn versioned(v: i64) -> Metadata {
    Metadata::new()
        .attribute("v", v)
        .attribute("pad", "x".repeat((v % 50) as usize))
        .attribute("sum", v.wrapping_mul(31).wrapping_add(7))
}

#[test]
fn readers_never_see_torn_metadata_and_writers_read_their_writes() {
    with_registry(|r| {
        let ns = r.namespace("torn").unwrap();
        let keys = 16u64;
        let writes = scale(400);
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let owner = r.spawn();
        for k in 0..keys {
            r.register(&owner, &Key::new(ns, k), &versioned(0)).unwrap();
        }
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (r, stop, reads) = (r.clone(), stop.clone(), reads.clone());
                std::thread::spawn(move || {
                    let mut last = vec![0i64; keys as usize];
                    while !stop.load(Ordering::Relaxed) {
                        for k in 0..keys {
                            let e = r.lookup(&Key::new(ns, k)).unwrap().expect("always present");
                            let (Some(ValueRef::Int(v)), Some(ValueRef::Int(sum))) =
                                (e.attribute("v"), e.attribute("sum"))
                            else {
                                panic!("torn or missing attributes: {e:?}");
                            };
                            assert_eq!(sum, v.wrapping_mul(31).wrapping_add(7), "torn read");
                            assert_eq!(
                                e.attribute("pad"),
                                Some(ValueRef::Str(&"x".repeat((v % 50) as usize)))
                            );
                            // One writer per key, so versions never go backwards.
                            assert!(
                                v >= last[k as usize],
                                "key {k} went back from {} to {v}",
                                last[k as usize]
                            );
                            last[k as usize] = v;
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        // Writes race readers that are already running, and readers keep reading after.
        eventually("readers started", || reads.load(Ordering::Relaxed) > 0);
        for v in 1..=writes as i64 {
            let k = v as u64 % keys;
            r.update_metadata(&owner, &Key::new(ns, k), &versioned(v))
                .unwrap();
            // Read-your-writes: the `Ok` means every reader can see it now.
            let e = r.lookup(&Key::new(ns, k)).unwrap().unwrap();
            assert_eq!(e.attribute("v"), Some(ValueRef::Int(v)));
        }
        let after = reads.load(Ordering::Relaxed);
        eventually("readers read after the writes", || {
            reads.load(Ordering::Relaxed) > after
        });
        stop.store(true, Ordering::Relaxed);
        for h in readers {
            h.join().unwrap();
        }
    });
}

#[test]
fn i1_no_lookup_returns_a_process_after_its_death_was_observed() {
    with_registry(|r| {
        let ns = r.namespace("deaths").unwrap();
        let rounds = scale(200);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<(u64, roster::Pid)>();
        let checker = {
            let (r, stop) = (r.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut dead = Vec::new();
                while !stop.load(Ordering::Relaxed) || !dead.is_empty() {
                    while let Ok(d) = rx.try_recv() {
                        dead.push(d);
                    }
                    for &(k, pid) in &dead {
                        if let Some(e) = r.lookup(&Key::new(ns, k)).unwrap() {
                            assert_ne!(e.pid(), pid, "a dead process's entry was returned");
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            })
        };
        for round in 0..rounds as u64 {
            let k = round % 8;
            let p = r.spawn();
            // The key may still be held by a dead process awaiting cleanup: that's free.
            r.register(&p, &Key::new(ns, k), &Metadata::new()).unwrap();
            let pid = p.pid();
            drop(p);
            tx.send((k, pid)).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        checker.join().unwrap();
    });
}
