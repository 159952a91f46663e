//! Batched lookups: `lookup_many` answers exactly what `lookup` answers, key by key.

use roster::{ErrorKind, Key, Metadata, Pid};

use super::common::{scaled, with_registry};

/// Every key's answer from `lookup_many`, as (pid, capability count) pairs.
fn many(r: &roster::Registry, keys: &[Key<'_>]) -> Vec<Option<(Pid, usize)>> {
    let mut out = vec![Some((Pid::NONE, usize::MAX)); keys.len()];
    let mut seen = vec![false; keys.len()];
    r.lookup_many(keys, |i, e| {
        assert!(!seen[i], "key {i} answered twice");
        seen[i] = true;
        out[i] = e.map(|e| (e.pid(), e.capabilities().count()));
    })
    .unwrap();
    assert!(seen.iter().all(|&s| s), "every key is answered");
    out
}

fn single(r: &roster::Registry, keys: &[Key<'_>]) -> Vec<Option<(Pid, usize)>> {
    keys.iter()
        .map(|k| {
            r.lookup(k)
                .unwrap()
                .map(|e| (e.pid(), e.capabilities().count()))
        })
        .collect()
}

#[test]
fn i1_lookup_many_matches_lookup_for_hits_misses_and_dead_owners() {
    matches_lookup_after(0);
}

/// As above, past the size up to which a batch takes the registry to be in cache and
/// reads key by key (16384 entries): here it prefetches, group by group.
#[test]
fn i1_lookup_many_of_a_registry_past_the_cache_matches_lookup() {
    matches_lookup_after(scaled(20_000));
}

/// The test above, after `filler` entries of a namespace of their own.
fn matches_lookup_after(filler: usize) {
    with_registry(|r| {
        let fill = r.namespace("fill").unwrap();
        let p = r.spawn();
        let meta = Metadata::new();
        for res in r
            .register_many(&p, (0..filler as u64).map(|k| (Key::new(fill, k), &meta)))
            .unwrap()
        {
            res.unwrap();
        }
        assert_eq!(r.len(), filler);
        let ns = r.namespace("ns").unwrap();
        let other = r.namespace("other").unwrap();
        let (a, b) = (r.spawn(), r.spawn());
        let n = scaled(300) as u64;
        let long = "x".repeat(r.limits().max_name_len);
        for k in 0..n {
            let owner = if k % 2 == 0 { &a } else { &b };
            let meta = Metadata::new().capability(format!("c{}", k % 4));
            r.register(owner, &Key::new(ns, k), &meta).unwrap();
        }
        r.register(&a, &Key::new(ns, long.as_str()), &Metadata::new())
            .unwrap();
        // Hits, misses, another namespace, and long string keys that close groups early.
        let names: Vec<String> = (0..n + 40).map(|k| format!("s{k}")).collect();
        let mut keys: Vec<Key> = (0..n + 40).map(|k| Key::new(ns, k)).collect();
        keys.extend((0..20).map(|k| Key::new(other, k)));
        keys.extend(names.iter().map(|s| Key::new(ns, s.as_str())));
        let spots: Vec<usize> = (0..keys.len()).step_by(7).collect();
        for &i in spots.iter().rev() {
            keys.insert(i, Key::new(ns, long.as_str()));
        }
        let before = many(&r, &keys);
        assert_eq!(before, single(&r, &keys));
        assert_eq!(before.iter().flatten().count(), n as usize + spots.len());
        // Entries of a dead process vanish from batches at once, as from lookups.
        drop(b);
        let after = many(&r, &keys);
        assert_eq!(after, single(&r, &keys));
        assert!(after.iter().flatten().all(|(pid, _)| *pid == a.pid()));
        assert!(after.iter().flatten().count() < before.iter().flatten().count());
        // Empty input: nothing to answer.
        r.lookup_many(&[], |_, _| panic!("no keys")).unwrap();
    });
}

#[test]
fn lookup_many_rejects_an_invalid_key_before_answering_any() {
    with_registry(|r| {
        let ns = r.namespace("ns").unwrap();
        let too_long = "y".repeat(r.limits().max_name_len + 1);
        let keys = [
            Key::new(ns, 1u64),
            Key::new(ns, ""),
            Key::new(ns, too_long.as_str()),
        ];
        let err = r.lookup_many(&keys, |_, _| panic!("answered")).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::InvalidKey { limit: 1, .. }),
            "{err}"
        );
        r.shutdown();
        let err = r
            .lookup_many(&keys[..1], |_, _| panic!("answered"))
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::ShuttingDown);
    });
}

#[test]
fn lookup_many_refuses_an_integer_key_of_another_registry_before_answering_any() {
    // Two-word keys (integer names) take the batch's fast path, which trusts the check
    // of every key's namespace before the first group: a key of another registry's
    // namespace must still be refused, not read.
    with_registry(|r| {
        let elsewhere = roster::Registry::builder().shards(1).build().unwrap();
        let foreign = elsewhere.namespace("ns").unwrap();
        let ns = r.namespace("ns").unwrap();
        let p = r.spawn();
        r.register(&p, &Key::new(ns, 7u64), &Metadata::new())
            .unwrap();
        let keys = [Key::new(ns, 7u64), Key::new(foreign, 7u64)];
        let err = r.lookup_many(&keys, |_, _| panic!("answered")).unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::ForeignNamespace { .. }),
            "{err}"
        );
        // Mixed integer and string names in one group answer as single lookups do.
        r.register(&p, &Key::new(ns, "seven"), &Metadata::new())
            .unwrap();
        let keys: Vec<Key> = (0..40u64)
            .flat_map(|i| [Key::new(ns, i), Key::new(ns, "seven"), Key::new(ns, "six")])
            .collect();
        assert_eq!(many(&r, &keys), single(&r, &keys));
        assert_eq!(many(&r, &keys).iter().flatten().count(), 41);
    });
}

#[test]
fn lookup_many_refuses_a_foreign_key_in_a_later_group_before_answering_any() {
    // Groups hold 16 keys; a foreign key far into the slice, integer or string name,
    // is refused before the first group is answered.
    with_registry(|r| {
        let elsewhere = roster::Registry::builder().shards(1).build().unwrap();
        let foreign = elsewhere.namespace("ns").unwrap();
        let ns = r.namespace("ns").unwrap();
        // A foreign key with an invalid name too: the error `lookup` gives it.
        let strangers = [
            Key::new(foreign, 3u64),
            Key::new(foreign, "three"),
            Key::new(foreign, ""),
        ];
        for stranger in strangers {
            let mut keys: Vec<Key> = (0..100u64).map(|i| Key::new(ns, i)).collect();
            keys.insert(70, stranger);
            let err = r.lookup_many(&keys, |_, _| panic!("answered")).unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::ForeignNamespace { .. }),
                "{err}"
            );
            assert_eq!(err.kind(), r.lookup(&stranger).unwrap_err().kind());
        }
    });
}
