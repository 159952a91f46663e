//! One test per bug a review and a new user found (issue "Correctness"): each failed on
//! the code before its fix.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roster::{
    ErrorKind, ExitReason, Key, ManualClock, Metadata, Pid, Quota, Registry, Spawn, WatchFilter,
    Watched,
};

use super::common::{builder, eventually};

/// Bug 1 (SPEC L6, S5): once `drop(process)` has returned, a write through the dead
/// process's authority fails with `ProcessDead`, even while the writer is busy with a
/// queue of other writes (it used to serve up to 64 commands before the death notice
/// and answer `Ok`).
#[test]
fn l6_writes_through_a_dead_authority_fail_whatever_is_queued() {
    let r = builder().shards(1).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Keep the one writer busy with a stream of registrations from two threads.
    let busy: Vec<_> = (0..2u64)
        .map(|t| {
            let (r, stop) = (r.clone(), stop.clone());
            std::thread::spawn(move || {
                let p = r.spawn();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let k = Key::new(ns, 1_000_000 * (t + 1) + i % 512);
                    let _ = r.register(&p, &k, &Metadata::new());
                    let _ = r.unregister(&p, &k);
                    i += 1;
                }
            })
        })
        .collect();
    let mut wrong = Vec::new();
    for i in 0..2000u64 {
        let p = r.spawn();
        let key = Key::new(ns, i);
        r.register(&p, &key, &Metadata::new().capability("c"))
            .unwrap();
        let authority = p.authority();
        drop(p);
        assert!(r.lookup(&key).unwrap().is_none());
        let write = if i % 2 == 0 {
            r.unregister(&authority, &key)
        } else {
            r.update_metadata(&authority, &key, &Metadata::new())
        };
        match write {
            Err(e) if matches!(e.kind(), ErrorKind::ProcessDead { .. }) => {}
            other => wrong.push((i, other)),
        }
        let again = r.register(&authority, &Key::new(ns, "other"), &Metadata::new());
        assert!(
            matches!(
                again.map_err(|e| e.kind().clone()),
                Err(ErrorKind::ProcessDead { .. })
            ),
            "a dead process registered"
        );
    }
    stop.store(true, Ordering::Relaxed);
    busy.into_iter().for_each(|h| h.join().unwrap());
    assert!(
        wrong.is_empty(),
        "{} writes of dead processes: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Bug 3: pid indexes are reused first in, first out, behind a reserve, so churn does
/// not spin one index through its generations; and generations are 36 bits.
#[test]
fn churn_spreads_pid_reuse_over_many_indexes() {
    let r = builder().shards(1).build().unwrap();
    let mut seen = std::collections::HashMap::<u32, u64>::new();
    for _ in 0..3000 {
        let p = r.spawn();
        *seen.entry(p.pid().index()).or_default() += 1;
    }
    // 3000 spawn-and-drop cycles: with LIFO reuse one index took all 3000.
    let most = seen.values().copied().max().unwrap();
    assert!(
        most <= 3,
        "one index was issued {most} times in 3000 spawns"
    );
}

/// Bug 4 (SPEC S6): no input panics. `Duration::MAX` saturates (no deadline, wait as
/// long as it takes); oversized names and sizes are refused with named errors.
#[test]
fn s6_extreme_durations_and_sizes_are_errors_or_saturate() {
    let r = builder()
        .shards(2)
        .write_deadline(Duration::MAX)
        .build()
        .unwrap();
    let ns = r.namespace("ns").unwrap();
    let p = r.spawn();
    let key = Key::new(ns, "k");
    r.register(&p, &key, &Metadata::new()).unwrap();
    r.with_deadline(Duration::MAX)
        .unwrap()
        .update_metadata(&p, &key, &Metadata::new().capability("x"))
        .unwrap();
    r.with_deadline(Duration::MAX)
        .unwrap()
        .register_many(&p, [(Key::new(ns, 1u64), Metadata::new())])
        .unwrap();
    assert_eq!(r.await_key(&key, Duration::MAX).unwrap().pid(), p.pid());

    let watch = r.watch(WatchFilter::namespace(ns)).unwrap();
    r.unregister(&p, &Key::new(ns, 1u64)).unwrap();
    assert!(matches!(
        watch.recv_timeout(Duration::MAX),
        Some(Watched::Change(_))
    ));

    let q = r.spawn();
    let monitor = r.monitor(q.pid());
    drop(q);
    assert!(monitor.recv_timeout(Duration::MAX).is_some());

    // A name longer than any key holds, through the paths that used to overflow.
    let long = "n".repeat(3000);
    let err = r
        .watch(WatchFilter::key(&Key::new(ns, long.as_str())))
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidKey { .. }), "{err}");
    let err = r
        .await_key(&Key::new(ns, long.as_str()), Duration::from_millis(1))
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidKey { .. }), "{err}");

    for (what, b) in [
        ("capacity", Registry::builder().capacity(usize::MAX)),
        ("capacity", Registry::builder().capacity(1 << 40)),
        (
            "queue_capacity",
            Registry::builder().queue_capacity(usize::MAX),
        ),
        ("queue_capacity", Registry::builder().queue_capacity(0)),
        ("max_load", Registry::builder().max_load(95)),
        (
            "write_deadline",
            Registry::builder().write_deadline(Duration::ZERO),
        ),
    ] {
        let err = b.build().unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidConfig { reason } if reason.contains(what)),
            "{what}: {err}"
        );
    }
}

/// Bug 6: a monitor added while (or after) the registry shuts down reports
/// `Shutdown`; it used to be able to miss `fire_all` and block forever.
#[test]
fn monitors_racing_shutdown_always_hear_of_it() {
    for _ in 0..50 {
        let r = builder().shards(1).build().unwrap();
        let p = r.spawn();
        let pid = p.pid();
        let r2 = r.clone();
        let t = std::thread::spawn(move || r2.shutdown());
        let m = r.monitor(pid);
        t.join().unwrap();
        let down = m
            .recv_timeout(Duration::from_secs(5))
            .expect("a monitor of a live pid hears of the shutdown");
        assert_eq!(down.reason, ExitReason::Shutdown);
        // Added after the shutdown: the same answer, at once.
        assert_eq!(
            r.monitor(pid).try_recv().unwrap().reason,
            ExitReason::Shutdown
        );
        drop(p);
    }
}

/// Bug 7: a death whose notice a stopped writer never served still completes its
/// cleanup bookkeeping, so the pid index is reused instead of leaking.
#[test]
fn deaths_queued_at_a_stopped_writer_release_their_pids() {
    let r = builder().shards(1).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let ps: Vec<_> = (0..50u64)
        .map(|i| {
            let p = r.spawn();
            r.register(&p, &Key::new(ns, i), &Metadata::new()).unwrap();
            p
        })
        .collect();
    let r2 = r.clone();
    let t = std::thread::spawn(move || r2.shutdown());
    drop(ps);
    t.join().unwrap();
    // Every death is accounted as reclaimed (served or released unserved).
    eventually("every death accounted", || r.cleanup_lag().count() == 50);
}

/// Bug 8 (SPEC I3): a namespace belongs to its registry; another refuses it by name.
#[test]
fn i3_namespaces_of_another_registry_are_refused() {
    let a = builder().shards(1).build().unwrap();
    let b = builder().shards(1).build().unwrap();
    let ns_a = a.namespace("tenant").unwrap();
    let _ = b.namespace("other").unwrap();
    let p = b.spawn();
    let key = Key::new(ns_a, 1u64);
    let foreign = |e: roster::Error| matches!(e.kind(), ErrorKind::ForeignNamespace { .. });
    assert!(foreign(b.register(&p, &key, &Metadata::new()).unwrap_err()));
    assert!(foreign(b.lookup(&key).unwrap_err()));
    assert!(foreign(
        b.set_quota(ns_a, Quota::new().max_entries(1)).unwrap_err()
    ));
    assert!(foreign(b.count(ns_a).unwrap_err()));
    assert!(foreign(b.query(&roster::Query::new(ns_a)).unwrap_err()));
    assert!(foreign(b.watch(WatchFilter::namespace(ns_a)).unwrap_err()));
    let err = b.lookup(&key).unwrap_err();
    assert!(err.to_string().contains("another registry"), "{err}");
    // The namespace still works where it was made.
    let q = a.spawn();
    a.register(&q, &key, &Metadata::new()).unwrap();
    assert_eq!(a.count(ns_a).unwrap(), 1);
}

/// Bug 9: a quota never refuses because of entries of processes that are already dead.
#[test]
fn quotas_do_not_count_entries_of_dead_processes() {
    let r = builder().shards(4).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    r.set_quota(ns, Quota::new().max_entries(1)).unwrap();
    for i in 0..1000u64 {
        let p = r.spawn();
        // A different key each time: the dead holder's entry sits in another shard.
        r.register(&p, &Key::new(ns, i), &Metadata::new())
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
    }
}

/// Bug 11: after `shutdown`, `spawn` gives a process that was never alive, and every
/// call agrees the registry is shut down.
#[test]
fn after_shutdown_spawn_gives_a_dead_process() {
    let r = builder().shards(1).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    r.shutdown();
    let p = r.spawn();
    assert_eq!(p.pid(), Pid::NONE);
    assert!(!r.is_alive(p.pid()));
    let err = r
        .register(&p, &Key::new(ns, 1u64), &Metadata::new())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::ShuttingDown);
    let err = r.try_spawn_with(Spawn::new()).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::ShuttingDown);
    assert_eq!(
        r.monitor(p.pid()).try_recv().unwrap().reason,
        ExitReason::Shutdown
    );
}

/// Bug 12: deadlines and clocks are consistent at their extremes.
#[test]
fn zero_deadlines_are_refused_everywhere_and_clocks_saturate() {
    let r = builder().shards(1).build().unwrap();
    let err = r.with_deadline(Duration::ZERO).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidConfig { .. }),
        "{err}"
    );
    let clock = ManualClock::new();
    clock.advance(Duration::from_secs(5));
    clock.advance(Duration::MAX);
    clock.advance(Duration::MAX);
    use roster::Clock;
    assert!(
        clock.now() >= Duration::from_secs(500 * 365 * 86_400),
        "the clock wrapped"
    );
}

/// Bug 12: interned capability names are validated and charged to the memory limit.
#[test]
fn interned_names_are_validated_and_charged() {
    let r = builder().shards(1).memory_limit(1 << 20).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let huge = "c".repeat(3 << 20);
    let err = r
        .watch(WatchFilter::namespace(ns).capability(huge))
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::InvalidMetadata {
                field: "capability name",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(r.memory().names, 0);
    r.watch(WatchFilter::namespace(ns).capability("plan"))
        .unwrap();
    assert_eq!(r.memory().names, 4 + roster::NAME_CHARGE);
    // Names fill the limit like entries do, and then are refused.
    let mut refused = None;
    for i in 0..100_000u32 {
        let name = format!("{i:0>100}");
        if let Err(e) = r.watch(WatchFilter::namespace(ns).capability(name)) {
            refused = Some(e);
            break;
        }
    }
    let err = refused.expect("names are charged until the limit refuses them");
    assert!(
        matches!(err.kind(), ErrorKind::RegistryFull { .. }),
        "{err}"
    );
    assert!(r.memory().names <= 1 << 20);
}
