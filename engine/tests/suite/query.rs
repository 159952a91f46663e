//! Queries (SPEC I1, I2, S3, S7, L5): a differential model against a filtered `HashMap`,
//! agreement of the query forms, and queries racing writers and deaths.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use roster::{ExitReason, Health, Key, Metadata, Node, OwnedName, Pid, Process, Query, Registry};

use super::common::{builder, eventually, scaled, with_registry};

const CAPS: [&str; 4] = ["plan", "search", "code", "chat"];
const HEALTH: [Health; 4] = [
    Health::Unknown,
    Health::Healthy,
    Health::Degraded,
    Health::Unhealthy,
];

/// Metadata from a seed: some capabilities, a health, a node.
fn meta(seed: u8) -> Metadata {
    let mut m = Metadata::new()
        .health(HEALTH[seed as usize % 4])
        .node(Node((seed / 4) as u32 % 3));
    for (i, c) in CAPS.iter().enumerate() {
        if seed >> (i + 2) & 1 == 1 {
            m = m.capability(*c);
        }
    }
    m
}

/// A query from a seed: a capability subset, maybe a health set, maybe a node.
fn query(ns: roster::Namespace, seed: u16) -> Query {
    let mut q = Query::new(ns);
    for (i, c) in CAPS.iter().enumerate() {
        if seed >> i & 1 == 1 {
            q = q.capability(*c);
        }
    }
    if seed >> 4 & 1 == 1 {
        q = q
            .health(HEALTH[(seed >> 5) as usize % 4])
            .health(HEALTH[(seed >> 7) as usize % 4]);
    }
    if seed >> 9 & 1 == 1 {
        q = q.node(Node((seed >> 10) as u32 % 3));
    }
    q
}

/// Whether the oracle's metadata matches the query described by `seed`.
fn oracle_matches(m: &Metadata, seed: u16) -> bool {
    let caps: HashSet<&str> = m.capabilities().collect();
    let need_caps = CAPS
        .iter()
        .enumerate()
        .all(|(i, c)| seed >> i & 1 == 0 || caps.contains(c));
    let health = seed >> 4 & 1 == 0
        || [
            HEALTH[(seed >> 5) as usize % 4],
            HEALTH[(seed >> 7) as usize % 4],
        ]
        .contains(&m.get_health());
    let node = seed >> 9 & 1 == 0 || m.get_node() == Node((seed >> 10) as u32 % 3);
    need_caps && health && node
}

fn keys_of(r: &Registry, q: &Query) -> BTreeSet<u64> {
    r.query(q)
        .unwrap()
        .into_iter()
        .map(|h| match h.key().name {
            OwnedName::Int(n) => n,
            OwnedName::Str(_) => panic!("string key"),
        })
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    Register(usize, u64, u8),
    Update(usize, u64, u8),
    Unregister(usize, u64),
    Exit(usize),
    Spawn,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, 0..16u64, any::<u8>()).prop_map(|(p, k, m)| Op::Register(p, k, m)),
        2 => (0..6usize, 0..16u64, any::<u8>()).prop_map(|(p, k, m)| Op::Update(p, k, m)),
        1 => (0..6usize, 0..16u64).prop_map(|(p, k)| Op::Unregister(p, k)),
        1 => (0..6usize).prop_map(Op::Exit),
        1 => Just(Op::Spawn),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 2 } else { 48 }, ..ProptestConfig::default() })]

    /// After every write, a batch of random queries returns exactly what filtering the
    /// oracle gives (I2: no orphans, no misses; I1: no dead entries; S7: namespace a only).
    #[test]
    fn queries_match_the_filtered_oracle(shards in prop::sample::select(vec![1usize, 2, 4]),
                                         ops in prop::collection::vec(op(), 1..60),
                                         queries in prop::collection::vec(any::<u16>(), 8)) {
        let r = builder().shards(shards).read_attempts(2).build().unwrap();
        let (a, b) = (r.namespace("a").unwrap(), r.namespace("b").unwrap());
        let mut procs: Vec<Option<Process>> = (0..3).map(|_| Some(r.spawn())).collect();
        let mut oracle: HashMap<u64, (Pid, Metadata)> = HashMap::new();
        // Namespace b mirrors some writes: it must never leak into a's results.
        let other = r.spawn();
        for k in 0..16u64 {
            r.register(&other, &Key::new(b, k), &meta(0xff)).unwrap();
        }
        for op in ops {
            let live = |procs: &Vec<Option<Process>>, i: usize| procs.get(i).and_then(|p| p.as_ref()).is_some();
            match op {
                Op::Spawn => procs.push(Some(r.spawn())),
                Op::Exit(i) => {
                    if let Some(p) = procs.get_mut(i).and_then(Option::take) {
                        oracle.retain(|_, (pid, _)| *pid != p.pid());
                    }
                }
                Op::Register(i, k, m) if live(&procs, i) => {
                    let p = procs[i].as_ref().unwrap();
                    if r.register(p, &Key::new(a, k), &meta(m)).is_ok() {
                        prop_assert!(!oracle.contains_key(&k));
                        oracle.insert(k, (p.pid(), meta(m)));
                    }
                }
                Op::Update(i, k, m) if live(&procs, i) => {
                    let p = procs[i].as_ref().unwrap();
                    if r.update_metadata(p, &Key::new(a, k), &meta(m)).is_ok() {
                        oracle.get_mut(&k).unwrap().1 = meta(m);
                    }
                }
                Op::Unregister(i, k) if live(&procs, i) => {
                    let p = procs[i].as_ref().unwrap();
                    if r.unregister(p, &Key::new(a, k)).is_ok() {
                        oracle.remove(&k);
                    }
                }
                _ => {}
            }
            for &seed in &queries {
                let q = query(a, seed);
                let want: BTreeSet<u64> = oracle.iter().filter(|(_, (_, m))| oracle_matches(m, seed)).map(|(k, _)| *k).collect();
                prop_assert_eq!(keys_of(&r, &q), want.clone(), "query {:?}", q);
                prop_assert_eq!(r.query_count(&q).unwrap(), want.len());
            }
        }
    }
}

#[test]
fn query_forms_agree_and_respect_limits_and_namespaces() {
    with_registry(|r| {
        let (a, b) = (r.namespace("a").unwrap(), r.namespace("b").unwrap());
        let p = r.spawn();
        let n = scaled(300) as u64;
        for k in 0..n {
            let m = Metadata::new()
                .capability(if k % 3 == 0 { "rare" } else { "common" })
                .health(if k % 2 == 0 {
                    Health::Healthy
                } else {
                    Health::Degraded
                });
            r.register(&p, &Key::new(a, k), &m).unwrap();
            r.register(&p, &Key::new(b, k), &m).unwrap();
        }
        let q = Query::new(a).capability("rare").health(Health::Healthy);
        let hits = r.query(&q).unwrap();
        let want = (0..n).filter(|k| k % 6 == 0).count();
        assert_eq!(hits.len(), want);
        assert!(hits
            .iter()
            .all(|h| h.key().namespace == a && h.pid() == p.pid()));
        assert!(hits
            .iter()
            .all(|h| r.lookup(&h.key().as_key()).unwrap().is_some()));
        assert_eq!(r.query_count(&q).unwrap(), want);
        let mut streamed = 0;
        r.query_each(&q, |key, entry| {
            assert_eq!(key.namespace, a);
            assert_eq!(entry.health(), Health::Healthy);
            streamed += 1;
            true
        })
        .unwrap();
        assert_eq!(streamed, want);
        assert_eq!(r.query(&q.clone().limit(5)).unwrap().len(), 5.min(want));
        assert_eq!(r.query_count(&q.clone().limit(5)).unwrap(), 5.min(want));
        assert_eq!(r.query_count(&Query::new(a)).unwrap(), n as usize);
        assert_eq!(
            r.query_count(&Query::new(a).capability("never-registered"))
                .unwrap(),
            0
        );
        // Dead processes vanish from queries at once (I1), before any cleanup.
        p.exit(ExitReason::Normal);
        assert_eq!(r.query_count(&Query::new(a)).unwrap(), 0);
        eventually("cleanup", || r.is_empty());
        let audit = r.audit().unwrap();
        assert!(audit.problems.is_empty(), "{:?}", audit.problems);
        assert_eq!(
            (audit.postings, audit.block_bytes),
            (0, 0),
            "index emptied (S4)"
        );
    });
}

/// Queries race registers, updates, unregisters and deaths. Every hit must match the query
/// when read and belong to a process not already known dead; after quiescence the result
/// is exactly the oracle's.
#[test]
fn queries_racing_writers_and_deaths_stay_consistent() {
    let r = builder().shards(4).read_attempts(2).build().unwrap();
    let ns = r.namespace("race").unwrap();
    let dead: Arc<Mutex<HashSet<Pid>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (r, dead, stop) = (r.clone(), dead.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut queries = 0;
            while !stop.load(Ordering::Relaxed) {
                for seed in [0u16, 1, 2, 3, 17, 48, 529] {
                    let known_dead = dead.lock().unwrap().clone();
                    for h in r.query(&query(ns, seed)).unwrap() {
                        assert!(
                            !known_dead.contains(&h.pid()),
                            "I1: hit of dead {:?}",
                            h.pid()
                        );
                        let m = h.entry().to_metadata(&r);
                        assert!(
                            oracle_matches(&m, seed),
                            "I2: {m:?} does not match query {seed}"
                        );
                    }
                    queries += 1;
                }
            }
            assert!(queries > 0);
        })
    };
    let writers: Vec<_> = (0..2u64)
        .map(|t| {
            let (r, dead) = (r.clone(), dead.clone());
            std::thread::spawn(move || {
                for round in 0..scaled(40) as u64 {
                    let p = r.spawn();
                    for k in 0..20u64 {
                        let key = Key::new(ns, t * 1_000_000 + round * 100 + k);
                        r.register(&p, &key, &meta((round + k) as u8)).unwrap();
                        if k % 3 == 0 {
                            r.update_metadata(&p, &key, &meta((round * 7 + k) as u8))
                                .unwrap();
                        }
                        if k % 5 == 0 {
                            r.unregister(&p, &key).unwrap();
                        }
                    }
                    if round % 2 == 0 {
                        let pid = p.pid();
                        drop(p);
                        dead.lock().unwrap().insert(pid);
                    } else {
                        std::mem::forget(p);
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    checker.join().unwrap();
    // Quiescent: queries equal a fresh scan of lookups exactly.
    eventually("cleanup", || r.audit().unwrap().dead_entries == 0);
    for seed in [0u16, 1, 2, 3, 17, 48, 529] {
        let mut want = BTreeSet::new();
        for t in 0..2u64 {
            for round in 0..scaled(40) as u64 {
                for k in 0..20u64 {
                    let key = t * 1_000_000 + round * 100 + k;
                    if let Some(e) = r.lookup(&Key::new(ns, key)).unwrap() {
                        if oracle_matches(&e.to_metadata(&r), seed) {
                            want.insert(key);
                        }
                    }
                }
            }
        }
        assert_eq!(keys_of(&r, &query(ns, seed)), want, "query {seed}");
    }
    let audit = r.audit().unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
}
