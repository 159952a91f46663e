//! Statistics: what `stats()` reports, and operation latency histograms.

use roster::{Key, Metadata, OpKind, Query};

use super::common::{builder, eventually};

#[test]
fn stats_report_entries_shards_memory_and_cleanup_lag() {
    let r = builder().shards(4).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let p = r.spawn();
    for i in 0..100u64 {
        r.register(&p, &Key::new(ns, i), &Metadata::new().capability("c"))
            .unwrap();
    }
    let s = r.stats();
    assert_eq!(s.entries, 100);
    assert_eq!(s.processes, 1);
    assert_eq!(s.shards.len(), 4);
    assert_eq!(s.shards.iter().map(|sh| sh.entries).sum::<usize>(), 100);
    assert_eq!(
        s.shards.iter().map(|sh| sh.charged).sum::<u64>(),
        s.memory.charged
    );
    assert!(s.shards.iter().all(|sh| !sh.failed && sh.queue_depth == 0));
    assert!(s.memory.charged > 0 && s.memory.total() >= s.memory.charged);
    assert!(s.ops.is_none(), "off by default");
    drop(p);
    eventually("cleanup", || r.is_empty());
    let s = r.stats();
    assert_eq!((s.entries, s.processes, s.memory.charged), (0, 0, 0));
    assert_eq!(s.cleanup_lag.count(), 1);
}

#[test]
fn op_stats_count_every_operation_by_kind() {
    let r = builder().shards(2).op_stats(true).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let p = r.spawn();
    for i in 0..10u64 {
        r.register(&p, &Key::new(ns, i), &Metadata::new().capability("c"))
            .unwrap();
    }
    r.update_metadata(&p, &Key::new(ns, 0u64), &Metadata::new())
        .unwrap();
    r.unregister(&p, &Key::new(ns, 9u64)).unwrap();
    for i in 0..20u64 {
        r.lookup(&Key::new(ns, i)).unwrap();
    }
    let keys: Vec<_> = (0..5u64).map(|i| Key::new(ns, i)).collect();
    r.lookup_many(&keys, |_, _| {}).unwrap();
    r.query_count(&Query::new(ns).capability("c")).unwrap();
    r.query(&Query::new(ns).capability("c")).unwrap();
    let items = (100..110u64).map(|i| (Key::new(ns, i), Metadata::new()));
    r.register_many(&p, items).unwrap();
    // Failed operations count too: they took time.
    r.register(&p, &Key::new(ns, 1u64), &Metadata::new())
        .unwrap_err();
    let ops = r.stats().ops.expect("enabled");
    let count = |k| ops.get(k).len();
    assert_eq!(count(OpKind::Register), 11);
    assert_eq!(count(OpKind::Update), 1);
    assert_eq!(count(OpKind::Unregister), 1);
    assert_eq!(count(OpKind::Lookup), 20);
    assert_eq!(count(OpKind::LookupMany), 1);
    assert_eq!(count(OpKind::Query), 2);
    assert_eq!(count(OpKind::Batch), 1);
    let (lookup, register) = (ops.get(OpKind::Lookup), ops.get(OpKind::Register));
    assert!(lookup.min() > 0 && lookup.value_at_quantile(0.5) < register.max());
    assert_eq!(ops.iter().count(), OpKind::ALL.len());
}

#[cfg(feature = "metrics")]
#[test]
fn metrics_feature_reports_latencies_and_gauges_through_the_facade() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let r = builder().shards(2).op_stats(true).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let p = r.spawn();
    metrics::with_local_recorder(&recorder, || {
        for i in 0..7u64 {
            r.register(&p, &Key::new(ns, i), &Metadata::new()).unwrap();
            r.lookup(&Key::new(ns, i)).unwrap();
        }
        r.export_metrics();
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, label: Option<(&str, &str)>| {
        snapshot
            .iter()
            .find(|(k, _, _, _)| {
                let key = k.key();
                key.name() == name
                    && label.is_none_or(|(l, v)| {
                        key.labels().any(|lab| lab.key() == l && lab.value() == v)
                    })
            })
            .map(|(_, _, _, v)| v)
            .unwrap_or_else(|| panic!("no {name} {label:?}"))
    };
    match find("roster_op_seconds", Some(("op", "lookup"))) {
        DebugValue::Histogram(v) => assert_eq!(v.len(), 7),
        other => panic!("{other:?}"),
    }
    match find("roster_entries", None) {
        DebugValue::Gauge(v) => assert_eq!(v.into_inner(), 7.0),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        find("roster_queue_depth", Some(("shard", "1"))),
        DebugValue::Gauge(_)
    ));
}
