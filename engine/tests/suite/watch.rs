//! The change feed and await_key.

use std::collections::HashMap;
use std::time::Duration;

use roster::{ChangeKind, ErrorKind, Key, Metadata, OwnedName, WatchFilter, Watched};

use super::common::{builder, eventually};

/// Every change of a shard arrives in the shard's order, numbered 1, 2, 3 ... per shard
/// with no gap while the watcher keeps up; kinds and pids are right.
#[test]
fn changes_arrive_in_shard_order_with_gapless_sequence_numbers() {
    let r = builder().shards(4).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let w = r
        .watch(WatchFilter::namespace(ns).capacity(100_000))
        .unwrap();
    let p = r.spawn();
    let n = 200u64;
    for i in 0..n {
        r.register(&p, &Key::new(ns, i), &Metadata::new()).unwrap();
    }
    for i in 0..n / 2 {
        r.update_metadata(&p, &Key::new(ns, i), &Metadata::new().capability("x"))
            .unwrap();
        r.unregister(&p, &Key::new(ns, i)).unwrap();
    }
    let pid = p.pid();
    drop(p);
    eventually("cleanup", || r.is_empty());
    let mut last_seq: HashMap<usize, u64> = HashMap::new();
    let mut last_kind: HashMap<u64, ChangeKind> = HashMap::new();
    let mut counts: HashMap<ChangeKind, u64> = HashMap::new();
    while let Some(x) = w.try_recv() {
        let Watched::Change(c) = x else {
            panic!("no lag expected: {x:?}")
        };
        let prev = last_seq.insert(c.shard, c.seq).unwrap_or(0);
        assert_eq!(c.seq, prev + 1, "gap without lag in shard {}", c.shard);
        assert_eq!(c.pid, pid);
        let OwnedName::Int(k) = c.key.name else {
            panic!("int keys")
        };
        // Per key, the shard's order is the order the writes were made in.
        let before = last_kind.insert(k, c.kind);
        let expect_before = match c.kind {
            ChangeKind::Registered => None,
            ChangeKind::Updated => Some(ChangeKind::Registered),
            ChangeKind::Unregistered => Some(ChangeKind::Updated),
            ChangeKind::Died => Some(ChangeKind::Registered),
        };
        assert_eq!(before, expect_before, "key {k}: {:?}", c.kind);
        *counts.entry(c.kind).or_default() += 1;
    }
    assert_eq!(counts[&ChangeKind::Registered], n);
    assert_eq!(counts[&ChangeKind::Updated], n / 2);
    assert_eq!(counts[&ChangeKind::Unregistered], n / 2);
    assert_eq!(counts[&ChangeKind::Died], n / 2);
}

/// A slow watcher's memory stays bounded: it is told how many changes it lost, and the
/// sequence numbers jump by exactly that many.
#[test]
fn a_slow_watcher_gets_lagged_and_gaps_match_it() {
    let r = builder().shards(1).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let w = r.watch(WatchFilter::namespace(ns).capacity(10)).unwrap();
    let p = r.spawn();
    for i in 0..35u64 {
        r.register(&p, &Key::new(ns, i), &Metadata::new()).unwrap();
    }
    // The ten that fit, then a marker in place of the 25 lost, then what comes next.
    for seq in 1..=10 {
        let Some(Watched::Change(c)) = w.try_recv() else {
            panic!("change {seq}")
        };
        assert_eq!(c.seq, seq);
    }
    assert_eq!(w.try_recv(), Some(Watched::Lagged(25)));
    assert_eq!(w.try_recv(), None);
    r.register(&p, &Key::new(ns, 100u64), &Metadata::new())
        .unwrap();
    let Some(Watched::Change(c)) = w.try_recv() else {
        panic!("the next change")
    };
    assert_eq!(c.seq, 10 + 25 + 1, "the gap is the lag");
    assert!(w.try_recv().is_none());
}

#[test]
fn filters_select_namespace_capability_and_key() {
    let r = builder().shards(2).build().unwrap();
    let (a, b) = (r.namespace("a").unwrap(), r.namespace("b").unwrap());
    let in_b = r.watch(WatchFilter::namespace(b)).unwrap();
    let planners = r
        .watch(WatchFilter::namespace(a).capability("plan"))
        .unwrap();
    let one = r.watch(WatchFilter::key(&Key::new(a, "one"))).unwrap();
    let all = r.watch(WatchFilter::all()).unwrap();
    let p = r.spawn();
    r.register(&p, &Key::new(a, "one"), &Metadata::new().capability("plan"))
        .unwrap();
    r.register(&p, &Key::new(a, "two"), &Metadata::new().capability("code"))
        .unwrap();
    r.register(&p, &Key::new(b, "one"), &Metadata::new().capability("plan"))
        .unwrap();
    // Updating away the capability is reported (it had it before); later changes are not.
    r.update_metadata(&p, &Key::new(a, "one"), &Metadata::new())
        .unwrap();
    r.unregister(&p, &Key::new(a, "one")).unwrap();
    let drain = |w: &roster::Watch| {
        let mut v = Vec::new();
        while let Some(Watched::Change(c)) = w.try_recv() {
            v.push((c.key.namespace, c.key.name, c.kind));
        }
        v
    };
    let name = |s: &str| OwnedName::Str(s.to_string());
    assert_eq!(drain(&in_b), [(b, name("one"), ChangeKind::Registered)]);
    assert_eq!(drain(&planners), [(a, name("one"), ChangeKind::Registered)]);
    assert_eq!(
        drain(&one),
        [
            (a, name("one"), ChangeKind::Registered),
            (a, name("one"), ChangeKind::Updated),
            (a, name("one"), ChangeKind::Unregistered)
        ]
    );
    assert_eq!(drain(&all).len(), 5);
    // A bad key filter is refused.
    let err = r.watch(WatchFilter::key(&Key::new(a, ""))).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidKey { .. }));
    // Shutdown ends a blocked receiver.
    let t = std::thread::scope(|s| {
        let h = s.spawn(|| in_b.recv());
        std::thread::sleep(Duration::from_millis(20));
        r.shutdown();
        h.join().unwrap()
    });
    assert_eq!(t, None);
}

#[test]
fn await_key_returns_when_the_key_appears_or_times_out() {
    let r = builder().shards(2).build().unwrap();
    let ns = r.namespace("svc").unwrap();
    let err = r
        .await_key(&Key::new(ns, "db"), Duration::from_millis(20))
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Timeout { .. }));
    let got = std::thread::scope(|s| {
        let h = s.spawn(|| r.await_key(&Key::new(ns, "db"), Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        let p = r.spawn();
        r.register(&p, &Key::new(ns, "db"), &Metadata::new())
            .unwrap();
        (h.join().unwrap().unwrap(), p)
    });
    assert_eq!(got.0.pid(), got.1.pid());
    // Already there: at once.
    let e = r.await_key(&Key::new(ns, "db"), Duration::ZERO).unwrap();
    assert_eq!(e.pid(), got.1.pid());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_key_async_and_watch_next_work_on_tokio() {
    let r = builder().shards(2).build().unwrap();
    let ns = r.namespace("svc").unwrap();
    let mut w = r.watch(WatchFilter::namespace(ns)).unwrap();
    let waiting = tokio::spawn(r.await_key_async(&Key::new(ns, "cache")));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let p = r.spawn();
    r.register_async(&p, &Key::new(ns, "cache"), &Metadata::new())
        .await
        .unwrap();
    let entry = waiting.await.unwrap().unwrap();
    assert_eq!(entry.pid(), p.pid());
    let Some(Watched::Change(c)) = w.recv_async().await else {
        panic!("a change")
    };
    assert_eq!(c.kind, ChangeKind::Registered);
}
