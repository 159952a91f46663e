//! Liveness: monitors, leases, exit reasons, authorities, handles, and a chaos test
//! (SPEC I1, I5, I6, S2, S4, L3, L6).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster::{Authority, ErrorKind, ExitReason, Key, ManualClock, Metadata, Pid, Spawn};

use super::common::{block_on, builder, eventually, scaled, with_registry};

#[test]
fn monitors_report_exit_reasons() {
    let r = builder().shards(2).build().unwrap();
    let cases = [
        (ExitReason::Normal, 0),
        (ExitReason::Error("out of tokens".into()), 1),
        (ExitReason::Dropped, 2),
        (ExitReason::Panicked, 3),
    ];
    for (want, how) in cases {
        let p = r.spawn();
        let m = r.monitor(p.pid());
        assert!(m.try_recv().is_none());
        match how {
            0 | 1 => p.exit(want.clone()),
            2 => drop(p),
            _ => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                    let _p = p;
                    panic!("agent crashed");
                }));
            }
        }
        assert_eq!(m.recv().reason, want);
    }
}

#[test]
fn monitoring_a_dead_pid_reports_noproc_at_once() {
    let r = builder().shards(1).build().unwrap();
    let p = r.spawn();
    let pid = p.pid();
    drop(p);
    let m = r.monitor(pid);
    assert_eq!(m.try_recv().map(|d| d.reason), Some(ExitReason::NoProc));
    assert_eq!(r.monitor(Pid::NONE).recv().reason, ExitReason::NoProc);
}

#[test]
fn a_pid_that_dies_while_monitored_wakes_waiters_on_threads_and_tasks() {
    let r = builder().shards(1).build().unwrap();
    let p = r.spawn();
    let monitors: Vec<_> = (0..100).map(|_| r.monitor(p.pid())).collect();
    let mut monitors = monitors.into_iter();
    let task = monitors.next().unwrap();
    let thread_waiter = monitors.next().unwrap();
    let waiting = std::thread::spawn(move || thread_waiter.recv());
    let awaited = std::thread::spawn(move || block_on(task));
    std::thread::sleep(Duration::from_millis(20));
    p.exit(ExitReason::Normal);
    assert_eq!(waiting.join().unwrap().reason, ExitReason::Normal);
    assert_eq!(awaited.join().unwrap().reason, ExitReason::Normal);
    // Many monitors on one pid: every one is told.
    for m in monitors {
        assert_eq!(
            m.recv_timeout(Duration::from_secs(5)).unwrap().reason,
            ExitReason::Normal
        );
    }
    assert_eq!(r.audit().unwrap().monitors, 0);
}

#[test]
fn shutdown_tells_waiting_monitors() {
    let r = builder().shards(1).build().unwrap();
    let p = r.spawn();
    let m = r.monitor(p.pid());
    r.shutdown();
    assert_eq!(m.recv().reason, ExitReason::Shutdown);
}

#[test]
fn leases_expire_without_keepalive_and_live_with_it() {
    let clock = Arc::new(ManualClock::new());
    let r = builder().shards(2).clock(clock.clone()).build().unwrap();
    let ns = r.namespace("leases").unwrap();
    let lapsing = r.spawn_leased(Duration::from_secs(10));
    let renewed = r.spawn_leased(Duration::from_secs(10));
    let plain = r.spawn();
    r.register(&lapsing, &Key::new(ns, "lapsing"), &Metadata::new())
        .unwrap();
    r.register(&renewed, &Key::new(ns, "renewed"), &Metadata::new())
        .unwrap();
    let down = r.monitor(lapsing.pid());
    for _ in 0..5 {
        clock.advance(Duration::from_secs(6));
        renewed.keepalive().unwrap();
        plain.keepalive().unwrap();
    }
    // 30 s passed: the unrenewed lease is gone, its entry invisible, then reclaimed.
    assert_eq!(
        down.recv_timeout(Duration::from_secs(5)).unwrap().reason,
        ExitReason::LeaseExpired
    );
    assert!(!r.is_alive(lapsing.pid()));
    assert!(r.lookup(&Key::new(ns, "lapsing")).unwrap().is_none());
    assert!(r.is_alive(renewed.pid()) && r.is_alive(plain.pid()));
    assert_eq!(
        lapsing.keepalive().unwrap_err().kind(),
        &ErrorKind::ProcessDead { pid: lapsing.pid() }
    );
    let err = r
        .register(&lapsing, &Key::new(ns, "again"), &Metadata::new())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::ProcessDead { pid: lapsing.pid() });
    eventually("cleanup", || r.count(ns).unwrap() == 1);
    assert_eq!(renewed.lease_ttl(), Some(Duration::from_secs(10)));
}

#[test]
fn a_late_keepalive_loses_to_expiry_exactly_once() {
    let clock = Arc::new(ManualClock::new());
    let r = builder().shards(1).clock(clock.clone()).build().unwrap();
    let p = r.spawn_leased(Duration::from_secs(1));
    let m = r.monitor(p.pid());
    clock.advance(Duration::from_secs(2));
    // Whether the reaper or this call notices first, the lease is expired, once.
    assert!(p.keepalive().is_err());
    assert_eq!(m.recv().reason, ExitReason::LeaseExpired);
}

#[test]
fn staggered_leases_expire_in_deadline_order() {
    let clock = Arc::new(ManualClock::new());
    let r = builder().shards(2).clock(clock.clone()).build().unwrap();
    let n = scaled(500) as u64;
    let procs: Vec<_> = (0..n)
        .map(|i| r.spawn_leased(Duration::from_millis(10 * (i + 1))))
        .collect();
    for step in [n / 4, n / 2, n] {
        clock.advance(Duration::from_millis(10 * step) - clock_now(&clock));
        eventually("due leases expire", || {
            procs
                .iter()
                .enumerate()
                .all(|(i, p)| r.is_alive(p.pid()) == (i as u64 + 1 > step))
        });
    }
    assert_eq!(r.process_count(), 0);
}

fn clock_now(c: &ManualClock) -> Duration {
    roster::Clock::now(c)
}

#[test]
fn authorities_act_for_their_process_only() {
    let r = builder().shards(2).build().unwrap();
    let ns = r.namespace("auth").unwrap();
    let p = r.spawn();
    let auth: Authority = p.authority();
    let r2 = r.clone();
    std::thread::spawn(move || {
        r2.register(&auth, &Key::new(ns, "delegated"), &Metadata::new())
            .unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(
        r.lookup(&Key::new(ns, "delegated")).unwrap().unwrap().pid(),
        p.pid()
    );
    let late = p.authority();
    drop(p);
    let err = r
        .register(&late, &Key::new(ns, "x"), &Metadata::new())
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::ProcessDead { .. }), "{err}");
    let other = builder().shards(1).build().unwrap();
    let foreign = other.spawn();
    let err = r
        .register(&foreign.authority(), &Key::new(ns, "y"), &Metadata::new())
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::ForeignProcess);
}

#[test]
fn handles_are_reachable_from_lookups_while_the_process_lives() {
    with_registry(|r| {
        let ns = r.namespace("h").unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<u64>();
        let p = r.spawn_with(Spawn::new().handle(tx));
        for k in 0..3u64 {
            r.register(&p, &Key::new(ns, k), &Metadata::new()).unwrap();
        }
        for k in 0..3u64 {
            let e = r.lookup(&Key::new(ns, k)).unwrap().unwrap();
            r.handle::<std::sync::mpsc::Sender<u64>>(e.pid())
                .unwrap()
                .send(k)
                .unwrap();
        }
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert!(r.handle::<String>(p.pid()).is_none(), "wrong type");
        let pid = p.pid();
        drop(p);
        assert!(r.handle::<std::sync::mpsc::Sender<u64>>(pid).is_none());
        assert_eq!(r.audit().unwrap().handles, 0);
    });
}

/// Many threads register agents and kill them by drop, exit, panic and lapsed lease,
/// renewing other leases, while readers look up continuously. No lookup may return a
/// process already known dead (I1); after quiescence no dead entry remains (I6), the
/// owner lists are the table's exact inverse (I5), and accounting is back to zero (S4).
#[test]
fn chaos_deaths_under_concurrent_lookups() {
    let clock = Arc::new(ManualClock::new());
    let r = builder()
        .shards(4)
        .read_attempts(4)
        .clock(clock.clone())
        .build()
        .unwrap();
    let ns = r.namespace("chaos").unwrap();
    let keys = 64u64;
    let rounds = scaled(300);
    // Pids whose death has been observed (the kill returned, or is_alive said false).
    let dead: Arc<Mutex<HashSet<Pid>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (r, dead, stop, lookups) = (r.clone(), dead.clone(), stop.clone(), lookups.clone());
            std::thread::spawn(move || {
                let mut k = t;
                while !stop.load(Ordering::Relaxed) {
                    k = (k + 7) % keys;
                    let known_dead = dead.lock().unwrap().clone();
                    if let Some(e) = r.lookup(&Key::new(ns, k)).unwrap() {
                        assert!(
                            !known_dead.contains(&e.pid()),
                            "I1: entry of dead {:?}",
                            e.pid()
                        );
                    }
                    lookups.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let ticker = {
        let (clock, stop) = (clock.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                clock.advance(Duration::from_millis(5));
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let (r, dead) = (r.clone(), dead.clone());
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0..rounds as u64 {
                    let leased = i % 5 == 0;
                    let p = if leased {
                        r.spawn_with(Spawn::new().lease(Duration::from_millis(20)).handle(i))
                    } else {
                        r.spawn()
                    };
                    for j in 0..3 {
                        let k = (t * 31 + i * 3 + j) % keys;
                        match r.register(
                            &p,
                            &Key::new(ns, k),
                            &Metadata::new().attribute("i", i as i64),
                        ) {
                            Ok(()) => {}
                            Err(e) => assert!(
                                matches!(
                                    e.kind(),
                                    ErrorKind::AlreadyRegistered { .. }
                                        | ErrorKind::ProcessDead { .. }
                                ),
                                "{e}"
                            ),
                        }
                    }
                    let pid = p.pid();
                    match i % 4 {
                        0 => drop(p),
                        1 => p.exit(ExitReason::Error("chaos".into())),
                        2 => {
                            let _ =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                                    let _p = p;
                                    panic!("chaos");
                                }));
                        }
                        _ => {
                            // Keep it a while; leased ones lapse unless renewed below.
                            kept.push(p);
                            continue;
                        }
                    }
                    dead.lock().unwrap().insert(pid);
                    for p in kept
                        .iter()
                        .filter(|p| i % 2 == 0 && p.lease_ttl().is_some())
                    {
                        let _ = p.keepalive();
                    }
                    for p in &kept {
                        if !r.is_alive(p.pid()) {
                            dead.lock().unwrap().insert(p.pid());
                        }
                    }
                    if kept.len() > 8 {
                        let p = kept.remove(0);
                        let pid = p.pid();
                        drop(p);
                        dead.lock().unwrap().insert(pid);
                    }
                }
                for p in kept {
                    let pid = p.pid();
                    drop(p);
                    dead.lock().unwrap().insert(pid);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for h in readers {
        h.join().unwrap();
    }
    ticker.join().unwrap();
    assert!(lookups.load(Ordering::Relaxed) > 0);

    assert_eq!(r.process_count(), 0);
    eventually("I6: every dead entry reclaimed", || r.is_empty());
    let audit = r.audit().unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(
        (audit.entries, audit.dead_entries, audit.block_bytes),
        (0, 0, 0),
        "S4: {audit:?}"
    );
    assert_eq!((audit.handles, audit.monitors), (0, 0));
    assert_eq!(r.count(ns).unwrap(), 0);
    assert!(r.cleanup_lag().count() > 0);
}

#[test]
fn exit_all_kills_in_one_batch_and_cleans_up() {
    with_registry(|r| {
        let ns = r.namespace("batch").unwrap();
        let n = scaled(2000) as u64;
        let procs: Vec<_> = (0..n)
            .map(|i| {
                let p = r.spawn();
                r.register(&p, &Key::new(ns, i), &Metadata::new()).unwrap();
                p
            })
            .collect();
        let pids: Vec<Pid> = procs.iter().map(|p| p.pid()).collect();
        let watched = r.monitor(pids[0]);
        let other = builder().shards(1).build().unwrap();
        let stranger = other.spawn();
        let stranger_pid = stranger.pid();
        let all = procs.into_iter().chain(std::iter::once(stranger));
        assert_eq!(r.exit_all(all, ExitReason::Shutdown), n as usize);
        assert!(pids.iter().all(|&p| !r.is_alive(p)));
        assert!(
            !other.is_alive(stranger_pid),
            "dropped as usual by its own registry"
        );
        assert!(r.lookup(&Key::new(ns, n / 2)).unwrap().is_none());
        assert_eq!(watched.recv().reason, ExitReason::Shutdown);
        eventually("batched cleanup", || r.is_empty());
        let audit = r.audit().unwrap();
        assert!(audit.problems.is_empty(), "{:?}", audit.problems);
        assert_eq!(r.cleanup_lag().count(), n);
    });
}
