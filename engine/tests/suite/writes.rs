//! Deadlines (SPEC L1), batch writes, async writes.

use std::sync::Arc;
use std::time::Duration;

use roster::{ErrorKind, Key, Metadata, Registry};

use super::common::{builder, scaled};

/// L1: writes racing their own deadlines. Every `Timeout` left no trace (the key is
/// absent and free), every `Ok` is visible, and both outcomes happen.
#[test]
fn l1_timeout_means_not_applied_and_ok_means_visible() {
    let r = builder().shards(1).build().unwrap();
    let ns = r.namespace("race").unwrap();
    let threads = 4u64;
    let per = scaled(2000) as u64;
    type Outcomes = Vec<(u64, Result<(), roster::Error>)>;
    let outcomes: Vec<(roster::Process, Outcomes)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let r = &r;
                s.spawn(move || {
                    let p = r.spawn();
                    let mut out = Vec::new();
                    for i in 0..per {
                        // Deadlines from 1 us to 2 ms: around the service time under load.
                        let d = Duration::from_micros([1, 5, 20, 80, 300, 2000][(i % 6) as usize]);
                        let k = t * per + i;
                        let res = r.with_deadline(d).unwrap().register(
                            &p,
                            &Key::new(ns, k),
                            &Metadata::new(),
                        );
                        out.push((k, res));
                    }
                    // The process stays alive (owning its entries) until the checks below.
                    (p, out)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (mut ok, mut timed_out) = (0, 0);
    let fixer = r.spawn();
    for (k, res) in outcomes.iter().flat_map(|(_, out)| out.iter().cloned()) {
        let key = Key::new(ns, k);
        match res {
            Ok(()) => {
                ok += 1;
                assert!(r.lookup(&key).unwrap().is_some(), "Ok but invisible: {k}");
            }
            Err(e) => {
                assert!(matches!(e.kind(), ErrorKind::Timeout { .. }), "{e}");
                timed_out += 1;
                assert!(
                    r.lookup(&key).unwrap().is_none(),
                    "timed out but applied: {k}"
                );
                // Free: nobody holds it.
                r.register(&fixer, &key, &Metadata::new()).unwrap();
            }
        }
    }
    assert!(ok > 0 && timed_out > 0, "ok {ok}, timed out {timed_out}");
    assert_eq!(r.len() as u64, threads * per);
    let audit = r.audit().unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
}

#[test]
fn a_deadline_already_passed_applies_nothing_and_says_which() {
    let r = builder().shards(2).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let p = r.spawn();
    // A nanosecond has passed before any writer can reach the write.
    let hasty = r.with_deadline(Duration::from_nanos(1)).unwrap();
    let err = hasty
        .register(&p, &Key::new(ns, 1u64), &Metadata::new())
        .unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::Timeout {
            deadline: Duration::from_nanos(1)
        }
    );
    assert!(err.to_string().contains("not applied"), "{err}");
    let items: Vec<_> = (0..50u64)
        .map(|i| (Key::new(ns, i), Metadata::new()))
        .collect();
    let results = hasty.register_many(&p, items).unwrap();
    assert!(results
        .iter()
        .all(|r| matches!(r.as_ref().unwrap_err().kind(), ErrorKind::Timeout { .. })));
    assert!(r.is_empty());
    // The builder refuses a zero default.
    let err = Registry::builder()
        .write_deadline(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidConfig { .. }),
        "{err}"
    );
}

#[test]
fn batches_answer_item_by_item_across_shards() {
    let r = builder().shards(4).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let (a, b) = (r.spawn(), r.spawn());
    r.register(&b, &Key::new(ns, 7u64), &Metadata::new())
        .unwrap();
    let mut items: Vec<_> = (0..200u64)
        .map(|i| (Key::new(ns, i), Metadata::new().capability("batch")))
        .collect();
    items.push((Key::new(ns, 3u64), Metadata::new())); // a duplicate of item 3
    items.push((Key::new(ns, ""), Metadata::new())); // invalid
    let results = r
        .register_many(&a, items.iter().map(|(k, m)| (*k, m)))
        .unwrap();
    assert_eq!(results.len(), items.len());
    for (i, res) in results.iter().enumerate() {
        let kind = res.as_ref().err().map(|e| e.kind().clone());
        match i {
            7 => assert_eq!(kind, Some(ErrorKind::AlreadyRegistered { owner: b.pid() })),
            200 => assert_eq!(kind, Some(ErrorKind::AlreadyRegistered { owner: a.pid() })),
            201 => assert!(matches!(kind, Some(ErrorKind::InvalidKey { .. }))),
            _ => assert_eq!(kind, None, "item {i}"),
        }
    }
    assert_eq!(r.count(ns).unwrap(), 200);
    let q = roster::Query::new(ns).capability("batch");
    assert_eq!(r.query_count(&q).unwrap(), 199);
    // Unregister: ours go, b's key is refused, a missing key is NotFound.
    let keys: Vec<_> = (0..210u64).map(|i| Key::new(ns, i)).collect();
    let results = r.unregister_many(&a, &keys).unwrap();
    for (i, res) in results.iter().enumerate() {
        let kind = res.as_ref().err().map(|e| e.kind().clone());
        match i {
            7 => assert_eq!(kind, Some(ErrorKind::NotOwner { owner: b.pid() })),
            200.. => assert_eq!(kind, Some(ErrorKind::NotFound)),
            _ => assert_eq!(kind, None, "item {i}"),
        }
    }
    assert_eq!(r.count(ns).unwrap(), 1);
    // A foreign process fails the whole call.
    let other = Registry::new().unwrap();
    let stranger = other.spawn();
    let err = r.register_many(&stranger, items).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::ForeignProcess);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_writes_complete_on_tokio_and_read_their_own_writes() {
    let r = Arc::new(builder().shards(2).build().unwrap());
    let ns = r.namespace("tasks").unwrap();
    let tasks: Vec<_> = (0..32u64)
        .map(|t| {
            let r = r.clone();
            tokio::spawn(async move {
                let p = r.spawn();
                for i in 0..20u64 {
                    let key = Key::new(ns, t * 100 + i);
                    let meta = Metadata::new().capability("async");
                    r.register_async(&p, &key, &meta).await.unwrap();
                    assert!(r.lookup(&key).unwrap().is_some(), "read your writes");
                    r.update_metadata_async(&p, &key, &Metadata::new())
                        .await
                        .unwrap();
                }
                let keys: Vec<_> = (0..10u64).map(|i| Key::new(ns, t * 100 + i)).collect();
                let gone = r.unregister_many_async(&p, &keys).await.unwrap();
                assert!(gone.iter().all(Result::is_ok));
                r.unregister_async(&p, &Key::new(ns, t * 100 + 10))
                    .await
                    .unwrap();
                let err = r
                    .unregister_async(&p, &Key::new(ns, t * 100 + 10))
                    .await
                    .unwrap_err();
                assert_eq!(err.kind(), &ErrorKind::NotFound);
                let items: Vec<_> = (50..55u64)
                    .map(|i| (Key::new(ns, t * 100 + i), Metadata::new()))
                    .collect();
                let made = r.register_many_async(&p, items).await.unwrap();
                assert!(made.iter().all(Result::is_ok));
                p
            })
        })
        .collect();
    let mut owners = Vec::new();
    for t in tasks {
        owners.push(t.await.unwrap());
    }
    assert_eq!(r.count(ns).unwrap(), 32 * (9 + 5));
    // Invalid input resolves at once; a passed deadline resolves to Timeout, unapplied.
    let p = &owners[0];
    let err = r
        .register_async(p, &Key::new(ns, ""), &Metadata::new())
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::InvalidKey { .. }));
    // A nanosecond has passed before any writer can reach the write.
    let hasty = r.with_deadline(Duration::from_nanos(1)).unwrap();
    let err = hasty
        .register_async(p, &Key::new(ns, 9999u64), &Metadata::new())
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Timeout { .. }));
    assert!(r.lookup(&Key::new(ns, 9999u64)).unwrap().is_none());
}

/// The futures are `Send + 'static`: they can be spawned anywhere.
#[test]
fn async_write_futures_are_send_and_static() {
    fn spawnable<F: std::future::Future + Send + 'static>(_: &F) {}
    let r = builder().shards(1).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let p = r.spawn();
    let f = r.register_async(&p, &Key::new(ns, 1u64), &Metadata::new());
    spawnable(&f);
    drop(f);
    let f = r.register_many_async(&p, [(Key::new(ns, 2u64), Metadata::new())]);
    spawnable(&f);
}
