//! Bad input gets its own clear error and leaves every other entry intact (SPEC I4, S6).

use roster::{ErrorKind, Key, Limits, Metadata, MAX_NAME_LEN};

use super::common::{builder, with_registry};

fn field(err: roster::Error) -> &'static str {
    match err.kind() {
        ErrorKind::InvalidMetadata { field, .. } => field,
        other => panic!("expected InvalidMetadata, got {other:?}"),
    }
}

#[test]
fn i4_bad_input_is_rejected_with_named_errors_and_nothing_is_lost() {
    with_registry(|r| {
        let ns = r.namespace("ns").unwrap();
        let p = r.spawn();
        let keep = Key::new(ns, "keep");
        r.register(&p, &keep, &Metadata::new().capability("c"))
            .unwrap();

        // Keys.
        let err = r
            .register(&p, &Key::new(ns, ""), &Metadata::new())
            .unwrap_err();
        assert!(matches!(
            err.kind(),
            ErrorKind::InvalidKey {
                reason: "empty name",
                ..
            }
        ));
        let long = "n".repeat(r.limits().max_name_len + 1);
        let err = r
            .register(&p, &Key::new(ns, long.as_str()), &Metadata::new())
            .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::InvalidKey {
                    limit: 1024,
                    actual: 1025,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("limit 1024"), "{err}");
        // A lookup of an impossible key is an error too, not a silent miss.
        assert!(r.lookup(&Key::new(ns, "")).is_err());

        // Metadata.
        let too_many = (0..40).fold(Metadata::new(), |m, i| m.capability(format!("c{i}")));
        assert_eq!(
            field(r.register(&p, &Key::new(ns, "a"), &too_many).unwrap_err()),
            "capabilities"
        );
        let oversized = Metadata::new().attribute("blob", vec![0u8; 5000]);
        assert_eq!(
            field(r.register(&p, &Key::new(ns, "b"), &oversized).unwrap_err()),
            "attribute value"
        );
        let err = r.update_metadata(&p, &keep, &too_many).unwrap_err();
        assert_eq!(field(err), "capabilities");

        // Unknown key, non-owner.
        let q = r.spawn();
        assert_eq!(
            r.unregister(&p, &Key::new(ns, "nope")).unwrap_err().kind(),
            &ErrorKind::NotFound
        );
        assert_eq!(
            r.unregister(&q, &keep).unwrap_err().kind(),
            &ErrorKind::NotOwner { owner: p.pid() }
        );
        assert_eq!(
            r.update_metadata(&q, &keep, &Metadata::new())
                .unwrap_err()
                .kind(),
            &ErrorKind::NotOwner { owner: p.pid() }
        );

        // A process of another registry.
        let other = builder().shards(1).build().unwrap();
        let stranger = other.spawn();
        assert_eq!(
            r.register(&stranger, &Key::new(ns, "x"), &Metadata::new())
                .unwrap_err()
                .kind(),
            &ErrorKind::ForeignProcess
        );

        // Namespaces.
        assert!(matches!(
            r.namespace("").unwrap_err().kind(),
            ErrorKind::InvalidNamespace { .. }
        ));
        assert!(r.namespace(&"n".repeat(300)).is_err());

        // Everything else is intact.
        let e = r.lookup(&keep).unwrap().expect("kept");
        assert_eq!(e.pid(), p.pid());
        assert!(e.has_capability(r.capability("c").unwrap()));
        assert_eq!(r.len(), 1);
        assert_eq!(r.count(ns).unwrap(), 1);
    });
}

#[test]
fn s6_calls_after_shutdown_get_shutting_down() {
    let r = builder().shards(2).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let p = r.spawn();
    r.register(&p, &Key::new(ns, 1), &Metadata::new()).unwrap();
    r.shutdown();
    r.shutdown();
    let down = |e: roster::Error| assert_eq!(e.kind(), &ErrorKind::ShuttingDown, "{e}");
    down(
        r.register(&p, &Key::new(ns, 2), &Metadata::new())
            .unwrap_err(),
    );
    down(r.unregister(&p, &Key::new(ns, 1)).unwrap_err());
    down(
        r.update_metadata(&p, &Key::new(ns, 1), &Metadata::new())
            .unwrap_err(),
    );
    down(r.lookup(&Key::new(ns, 1)).unwrap_err());
    // Dropping a guard after shutdown is fine too.
    drop(p);
}

#[test]
fn builder_rejects_impossible_settings() {
    let bad = |b: roster::RegistryBuilder| match b.build() {
        Err(e) => assert!(matches!(e.kind(), ErrorKind::InvalidConfig { .. }), "{e}"),
        Ok(_) => panic!("built"),
    };
    bad(builder().shards(0));
    bad(builder().queue_capacity(0));
    bad(builder().max_load(24));
    bad(builder().max_load(91));
    bad(builder().limits(Limits {
        max_name_len: MAX_NAME_LEN + 1,
        ..Limits::default()
    }));
    let r = builder().shards(3).build().unwrap();
    assert_eq!(r.shard_count(), 4, "rounded up to a power of two");
}

/// Every max load in range keeps every entry through growth; a lower one keeps bigger
/// tables for the same entries (small tables are at most half full at any).
#[test]
fn every_max_load_keeps_its_entries_and_lower_ones_take_bigger_tables() {
    // 3500 entries: a table small enough to be at most half full at 75% and 90% (8192
    // slots), a quarter full at 25% (16384 slots).
    let n = 3500u64;
    let tables = |load: u8| {
        let r = builder()
            .shards(1)
            .capacity(16)
            .max_load(load)
            .build()
            .unwrap();
        let ns = r.namespace("load").unwrap();
        let p = r.spawn();
        let meta = Metadata::new().capability("c");
        for res in r
            .register_many(&p, (0..n).map(|k| (Key::new(ns, k), &meta)))
            .unwrap()
        {
            res.unwrap();
        }
        for k in 0..n {
            assert_eq!(r.lookup(&Key::new(ns, k)).unwrap().unwrap().pid(), p.pid());
        }
        assert!(r.lookup(&Key::new(ns, n)).unwrap().is_none());
        let q = roster::Query::new(ns).capability("c");
        assert_eq!(r.query_count(&q).unwrap(), n as usize);
        let bytes = r.memory().tables;
        let keys: Vec<Key> = (0..n).map(|k| Key::new(ns, k)).collect();
        for res in r.unregister_many(&p, &keys).unwrap() {
            res.unwrap();
        }
        assert!(r.is_empty());
        bytes
    };
    let (low, default, high) = (tables(25), tables(roster::DEFAULT_MAX_LOAD), tables(90));
    // Small tables are at most half full at 75 and at 90 alike.
    assert!(low > default && default == high, "{low} {default} {high}");
}

#[test]
fn names_up_to_the_maximum_work() {
    let r = builder()
        .shards(2)
        .limits(Limits {
            max_name_len: MAX_NAME_LEN,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let ns = r.namespace("long").unwrap();
    let p = r.spawn();
    for len in [1, 7, 8, 9, 255, 256, 1000, MAX_NAME_LEN] {
        let name = "k".repeat(len);
        r.register(&p, &Key::new(ns, name.as_str()), &Metadata::new())
            .unwrap();
        assert!(
            r.lookup(&Key::new(ns, name.as_str())).unwrap().is_some(),
            "len {len}"
        );
    }
}

/// Every extreme a builder option or a duration can take gets a registry or a named
/// `InvalidConfig`, never a panic (SPEC S6). Shard counts stay small or invalid here:
/// each valid one starts that many threads.
mod builder_battery {
    use std::time::Duration;

    use proptest::prelude::*;
    use roster::{ErrorKind, Key, Metadata, Registry};

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            Just(Duration::from_nanos(1)),
            (0u64..u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            (1u64..10_000_000).prop_map(Duration::from_nanos),
        ]
    }

    fn size() -> impl Strategy<Value = usize> {
        prop_oneof![
            Just(0usize),
            Just(usize::MAX),
            Just(1usize << 40),
            Just(roster::MAX_QUEUE + 1),
            1usize..5000,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 48 }))]

        #[test]
        fn builder_settings_build_or_say_why(
            shards in prop_oneof![0usize..=3, Just(1usize << 17), Just(usize::MAX)],
            capacity in size(),
            queue in size(),
            deadline in duration(),
            window in duration(),
            attempts in any::<u32>(),
            polls in prop_oneof![0u32..100, Just(u32::MAX)],
        ) {
            // Huge valid capacities would really allocate: keep those out of the run.
            let capacity = if capacity > 1 << 20 && capacity <= roster::MAX_CAPACITY {
                1 << 20
            } else {
                capacity
            };
            let built = Registry::builder()
                .shards(shards)
                .capacity(capacity)
                .queue_capacity(queue)
                .write_deadline(deadline)
                .cleanup_window(window)
                .read_attempts(attempts)
                .writer_idle_polls(polls.min(64))
                .build();
            match built {
                Ok(r) => {
                    // Usable: a write and a lookup under these settings.
                    let ns = r.namespace("ns").unwrap();
                    let p = r.spawn();
                    let key = Key::new(ns, 1u64);
                    match r.register(&p, &key, &Metadata::new()) {
                        Ok(()) => prop_assert!(r.lookup(&key).unwrap().is_some()),
                        Err(e) => prop_assert!(
                            matches!(e.kind(), ErrorKind::Timeout { .. }),
                            "{e}"
                        ),
                    }
                }
                Err(e) => prop_assert!(
                    matches!(e.kind(), ErrorKind::InvalidConfig { .. }),
                    "{e}"
                ),
            }
        }

        #[test]
        fn durations_are_taken_or_refused_never_panic(d in duration()) {
            let r = super::builder().shards(1).build().unwrap();
            let ns = r.namespace("ns").unwrap();
            let p = r.spawn();
            let key = Key::new(ns, 1u64);
            r.register(&p, &key, &Metadata::new()).unwrap();
            match r.with_deadline(d) {
                Ok(h) => {
                    let res = h.update_metadata(&p, &key, &Metadata::new());
                    let fine = match &res {
                        Ok(()) => true,
                        Err(e) => matches!(e.kind(), ErrorKind::Timeout { .. }),
                    };
                    prop_assert!(fine, "{:?}", res);
                }
                Err(e) => {
                    let refused_zero = d.is_zero() && matches!(e.kind(), ErrorKind::InvalidConfig { .. });
                    prop_assert!(refused_zero, "{}", e);
                }
            }
            // Waits that end at once whatever their timeout.
            prop_assert_eq!(r.await_key(&key, d).unwrap().pid(), p.pid());
            let q = r.spawn();
            let m = r.monitor(q.pid());
            drop(q);
            prop_assert!(m.recv_timeout(d).is_some());
            let w = r.watch(roster::WatchFilter::namespace(ns)).unwrap();
            r.unregister(&p, &key).unwrap();
            prop_assert!(w.recv_timeout(d).is_some());
        }
    }
}

/// Names of up to 8 bytes take the lookups' two-word fast path: it must check the name
/// limit as the full path does (a name past it is refused, never a miss), and find what
/// was registered under every length, alongside longer names.
#[test]
fn short_names_are_found_and_checked_on_the_fast_path_under_a_small_limit() {
    // With op stats on, lookups take `lookup_plain`, which checks two-word names too.
    for stats in [false, true] {
        let r = builder()
            .op_stats(stats)
            .limits(Limits {
                max_name_len: 5,
                ..Limits::default()
            })
            .build()
            .unwrap();
        let ns = r.namespace("ns").unwrap();
        let p = r.spawn();
        let names = ["a", "ab", "abc", "abcd", "abcde"];
        for n in names {
            r.register(&p, &Key::new(ns, n), &Metadata::new().attribute("name", n))
                .unwrap();
        }
        for n in names {
            let e = r.lookup(&Key::new(ns, n)).unwrap().expect(n);
            assert_eq!(e.attribute("name"), Some(roster::ValueRef::Str(n)));
        }
        assert!(r.lookup(&Key::new(ns, "abcdx")).unwrap().is_none());
        for n in ["abcdef", "abcdefgh"] {
            let err = r.lookup(&Key::new(ns, n)).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::InvalidKey { limit: 5, .. }),
                "{n}: {err}"
            );
            let keys = [Key::new(ns, "a"), Key::new(ns, n)];
            let err = r.lookup_many(&keys, |_, _| panic!("answered")).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::InvalidKey { limit: 5, .. }));
        }
        let keys: Vec<Key> = names.iter().map(|n| Key::new(ns, *n)).collect();
        let mut found = 0;
        r.lookup_many(&keys, |i, e| {
            assert_eq!(
                e.unwrap().attribute("name"),
                Some(roster::ValueRef::Str(names[i]))
            );
            found += 1;
        })
        .unwrap();
        assert_eq!(found, names.len());
    }
}
