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
    bad(builder().limits(Limits {
        max_name_len: MAX_NAME_LEN + 1,
        ..Limits::default()
    }));
    let r = builder().shards(3).build().unwrap();
    assert_eq!(r.shard_count(), 4, "rounded up to a power of two");
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
