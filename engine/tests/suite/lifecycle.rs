//! Processes, ownership and cleanup (SPEC I1, I3, S2), and entry contents.

use roster::{Entry, ErrorKind, Health, Key, Metadata, Node, Value, ValueRef, INLINE_WORDS};

use super::common::{builder, eventually, with_registry};

#[test]
fn i1_s2_dropping_the_guard_hides_entries_at_once_and_shards_remove_them() {
    with_registry(|r| {
        let ns = r.namespace("ns").unwrap();
        let p = r.spawn();
        let pid = p.pid();
        for k in 0..50u64 {
            r.register(&p, &Key::new(ns, k), &Metadata::new()).unwrap();
        }
        assert_eq!(r.count(ns).unwrap(), 50);
        drop(p);
        // No lookup returns the dead process's entries, even before cleanup ran.
        assert!(!r.is_alive(pid));
        for k in 0..50u64 {
            assert!(r.lookup(&Key::new(ns, k)).unwrap().is_none());
        }
        eventually("cleanup", || r.is_empty() && r.count(ns).unwrap() == 0);
        // The keys are free again for a new process.
        let q = r.spawn();
        r.register(&q, &Key::new(ns, 7), &Metadata::new()).unwrap();
        assert_eq!(r.lookup(&Key::new(ns, 7)).unwrap().unwrap().pid(), q.pid());
    });
}

#[test]
fn exit_and_panic_unwinding_kill_the_pid() {
    let r = builder().shards(2).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let p = r.spawn();
    let pid = p.pid();
    r.register(&p, &Key::new(ns, "a"), &Metadata::new())
        .unwrap();
    p.exit(roster::ExitReason::Normal);
    assert!(!r.is_alive(pid));

    let r2 = r.clone();
    let died = std::thread::spawn(move || {
        let p = r2.spawn();
        r2.register(&p, &Key::new(ns, "b"), &Metadata::new())
            .unwrap();
        let pid = p.pid();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = p;
            panic!("agent crashed");
        }));
        assert!(result.is_err());
        pid
    })
    .join()
    .unwrap();
    assert!(!r.is_alive(died));
    assert!(r.lookup(&Key::new(ns, "b")).unwrap().is_none());
}

#[test]
fn stale_pids_never_match_a_reused_slot() {
    let r = builder().shards(1).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let mut old = Vec::new();
    for round in 0..20u64 {
        let p = r.spawn();
        r.register(&p, &Key::new(ns, round), &Metadata::new())
            .unwrap();
        old.push(p.pid());
        drop(p);
        eventually("cleanup", || r.is_empty());
    }
    // Indexes come back first in, first out, once a reserve of free ones has built up.
    for _ in 0..1100 {
        old.push(r.spawn().pid());
    }
    let fresh = r.spawn();
    assert!(old.iter().all(|&pid| !r.is_alive(pid)));
    assert!(r.is_alive(fresh.pid()));
    // Index reuse happened, with a new generation.
    let reused = old.iter().find(|pid| pid.index() == fresh.pid().index());
    assert!(reused.is_some_and(|pid| pid.generation() < fresh.pid().generation()));
}

#[test]
fn i3_namespaces_are_isolated() {
    with_registry(|r| {
        let (a, b) = (r.namespace("a").unwrap(), r.namespace("b").unwrap());
        assert_eq!(r.namespace("a").unwrap(), a);
        let p = r.spawn();
        let q = r.spawn();
        r.register(
            &p,
            &Key::new(a, "same"),
            &Metadata::new().health(Health::Healthy),
        )
        .unwrap();
        r.register(
            &q,
            &Key::new(b, "same"),
            &Metadata::new().health(Health::Degraded),
        )
        .unwrap();
        assert_eq!(
            r.lookup(&Key::new(a, "same")).unwrap().unwrap().pid(),
            p.pid()
        );
        assert_eq!(
            r.lookup(&Key::new(b, "same")).unwrap().unwrap().pid(),
            q.pid()
        );
        r.unregister(&p, &Key::new(a, "same")).unwrap();
        assert!(r.lookup(&Key::new(a, "same")).unwrap().is_none());
        assert_eq!(
            r.lookup(&Key::new(b, "same")).unwrap().unwrap().health(),
            Health::Degraded
        );
        assert_eq!((r.count(a).unwrap(), r.count(b).unwrap()), (0, 1));
        // Nodes are part of the key too.
        r.register(&p, &Key::new(b, "same").on_node(Node(9)), &Metadata::new())
            .unwrap();
        assert_eq!(r.count(b).unwrap(), 2);
    });
}

#[test]
fn entries_carry_metadata_exactly_and_big_metadata_spills() {
    with_registry(|r| {
        let ns = r.namespace("ns").unwrap();
        let p = r.spawn();
        let meta = Metadata::new()
            .capability("plan")
            .capability("search")
            .health(Health::Unhealthy)
            .node(Node(77))
            .attribute("flag", true)
            .attribute("n", -5)
            .attribute("ratio", 0.25)
            .attribute("region", "eu-west-1")
            .attribute("raw", vec![1u8, 2, 3]);
        r.register(&p, &Key::new(ns, "x"), &meta).unwrap();
        let e = r.lookup(&Key::new(ns, "x")).unwrap().unwrap();
        assert_eq!(e.health(), Health::Unhealthy);
        assert_eq!(e.node(), Node(77));
        assert_eq!(e.attribute("n"), Some(ValueRef::Int(-5)));
        assert_eq!(e.attribute("raw"), Some(ValueRef::Bytes(&[1, 2, 3])));
        assert_eq!(e.attribute("missing"), None);
        let back = e.to_metadata(&r);
        assert_eq!(
            back.attributes().collect::<Vec<_>>(),
            meta.attributes().collect::<Vec<_>>()
        );
        let mut caps: Vec<_> = back.capabilities().collect();
        caps.sort();
        assert_eq!(caps, ["plan", "search"]);

        // Metadata larger than the inline buffer spills, and `lookup_into` reuses it.
        let big = Metadata::new().attribute("blob", "z".repeat(INLINE_WORDS * 8 + 100));
        r.update_metadata(&p, &Key::new(ns, "x"), &big).unwrap();
        let mut entry = Entry::new();
        assert!(r.lookup_into(&Key::new(ns, "x"), &mut entry).unwrap());
        assert_eq!(
            entry.attribute("blob").map(|v| v.to_owned()),
            Some(Value::Str("z".repeat(INLINE_WORDS * 8 + 100)))
        );
        r.update_metadata(&p, &Key::new(ns, "x"), &meta).unwrap();
        assert!(r.lookup_into(&Key::new(ns, "x"), &mut entry).unwrap());
        assert_eq!(entry.health(), Health::Unhealthy);
        assert!(!r.lookup_into(&Key::new(ns, "y"), &mut entry).unwrap());
        // Big, small, big again into one entry, across the inline buffer's edge: each
        // read answers its own metadata, never words a previous read left behind.
        let blob = |n: usize| Metadata::new().attribute("blob", "q".repeat(n));
        for n in [
            INLINE_WORDS * 8 + 100,
            8,
            INLINE_WORDS * 8 - 40,
            INLINE_WORDS * 8 - 16,
            1,
        ] {
            r.update_metadata(&p, &Key::new(ns, "x"), &blob(n)).unwrap();
            assert!(r.lookup_into(&Key::new(ns, "x"), &mut entry).unwrap());
            assert_eq!(
                entry.attribute("blob").map(|v| v.to_owned()),
                Some(Value::Str("q".repeat(n))),
                "a {n}-byte attribute"
            );
        }
    });
}

#[test]
fn a_dead_holders_key_is_free_before_cleanup() {
    let r = builder().shards(1).build().unwrap();
    let ns = r.namespace("ns").unwrap();
    let p = r.spawn();
    r.register(&p, &Key::new(ns, "k"), &Metadata::new())
        .unwrap();
    drop(p);
    let q = r.spawn();
    // Whether or not the shard already removed it, the key is free for q.
    r.register(&q, &Key::new(ns, "k"), &Metadata::new())
        .unwrap();
    let err = r.unregister(&r.spawn(), &Key::new(ns, "k")).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::NotOwner { owner: q.pid() });
}
