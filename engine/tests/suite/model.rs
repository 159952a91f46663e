//! Differential model test: random register / lookup / unregister / update / exit
//! sequences against a `HashMap` oracle, compared after every step, across shard counts.

use std::collections::HashMap;

use proptest::prelude::*;
use roster::{ErrorKind, Health, Key, Metadata, Node, Process, Value};

use super::common::builder;

#[derive(Clone, Debug)]
enum Op {
    Spawn,
    Exit(usize),
    Register(usize, u32, u64, u8),
    Unregister(usize, u32, u64),
    Update(usize, u32, u64, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Spawn),
        1 => (0..8usize).prop_map(Op::Exit),
        4 => (0..8usize, 0..2u32, 0..12u64, any::<u8>()).prop_map(|(p, n, k, m)| Op::Register(p, n, k, m)),
        2 => (0..8usize, 0..2u32, 0..12u64).prop_map(|(p, n, k)| Op::Unregister(p, n, k)),
        2 => (0..8usize, 0..2u32, 0..12u64, any::<u8>()).prop_map(|(p, n, k, m)| Op::Update(p, n, k, m)),
    ]
}

/// Metadata derived from a seed: varying capabilities, health, node and attributes.
fn meta(seed: u8) -> Metadata {
    let mut m = Metadata::new()
        .health(
            [
                Health::Unknown,
                Health::Healthy,
                Health::Degraded,
                Health::Unhealthy,
            ][seed as usize % 4],
        )
        .node(Node(seed as u32 % 3));
    for c in 0..seed % 4 {
        m = m.capability(format!("cap{}", (seed / 4 + c) % 6));
    }
    if seed % 2 == 0 {
        m = m.attribute("s", "v".repeat(seed as usize % 40));
    }
    if seed % 3 == 0 {
        m = m.attribute("i", seed as i64);
    }
    m
}

/// The error kind of a result, if it failed.
fn kind(r: Result<(), roster::Error>) -> Option<ErrorKind> {
    r.err().map(|e| e.kind().clone())
}

/// What a lookup shows, in a comparable form.
type View = (roster::Pid, Health, Node, Vec<String>, Vec<(String, Value)>);

fn normalize(pid: roster::Pid, m: &Metadata) -> View {
    let mut caps: Vec<String> = m.capabilities().map(str::to_owned).collect();
    caps.sort();
    let attrs = m
        .attributes()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (pid, m.get_health(), m.get_node(), caps, attrs)
}

fn run(shards: usize, line_cache: bool, ops: &[Op]) -> Result<(), TestCaseError> {
    let r = builder()
        .shards(shards)
        .read_attempts(2)
        .line_cache(line_cache)
        .build()
        .unwrap();
    let ns = [r.namespace("a").unwrap(), r.namespace("b").unwrap()];
    let mut procs: Vec<Option<Process>> = Vec::new();
    let mut oracle: HashMap<(u32, u64), (roster::Pid, Metadata)> = HashMap::new();
    let live =
        |procs: &Vec<Option<Process>>, i: usize| procs.get(i).and_then(|p| p.as_ref()).is_some();

    for op in ops {
        match *op {
            Op::Spawn => procs.push(Some(r.spawn())),
            Op::Exit(i) => {
                if let Some(p) = procs.get_mut(i).and_then(Option::take) {
                    oracle.retain(|_, (pid, _)| *pid != p.pid());
                }
            }
            Op::Register(i, n, k, m) if live(&procs, i) => {
                let p = procs[i].as_ref().unwrap();
                let got = r.register(p, &Key::new(ns[n as usize], k), &meta(m));
                match oracle.get(&(n, k)) {
                    Some((owner, _)) => prop_assert_eq!(
                        kind(got),
                        Some(ErrorKind::AlreadyRegistered { owner: *owner })
                    ),
                    None => {
                        prop_assert!(got.is_ok(), "{:?}", got);
                        oracle.insert((n, k), (p.pid(), meta(m)));
                    }
                }
            }
            Op::Unregister(i, n, k) if live(&procs, i) => {
                let p = procs[i].as_ref().unwrap();
                let got = r.unregister(p, &Key::new(ns[n as usize], k));
                match oracle.get(&(n, k)) {
                    None => prop_assert_eq!(kind(got), Some(ErrorKind::NotFound)),
                    Some((owner, _)) if *owner != p.pid() => {
                        prop_assert_eq!(kind(got), Some(ErrorKind::NotOwner { owner: *owner }))
                    }
                    Some(_) => {
                        prop_assert!(got.is_ok());
                        oracle.remove(&(n, k));
                    }
                }
            }
            Op::Update(i, n, k, m) if live(&procs, i) => {
                let p = procs[i].as_ref().unwrap();
                let got = r.update_metadata(p, &Key::new(ns[n as usize], k), &meta(m));
                match oracle.get_mut(&(n, k)) {
                    None => prop_assert_eq!(kind(got), Some(ErrorKind::NotFound)),
                    Some((owner, _)) if *owner != p.pid() => {
                        prop_assert_eq!(kind(got), Some(ErrorKind::NotOwner { owner: *owner }))
                    }
                    Some((_, old)) => {
                        prop_assert!(got.is_ok());
                        *old = meta(m);
                    }
                }
            }
            _ => {}
        }
        for n in 0..2u32 {
            for k in 0..12u64 {
                let got = r
                    .lookup(&Key::new(ns[n as usize], k))
                    .unwrap()
                    .map(|e| normalize(e.pid(), &e.to_metadata(&r)));
                let want = oracle.get(&(n, k)).map(|(pid, m)| normalize(*pid, m));
                prop_assert_eq!(got, want, "ns {} key {} after {:?}", n, k, op);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 2 } else { 64 }, ..ProptestConfig::default() })]

    #[test]
    fn model_matches_hashmap_oracle(shards in prop::sample::select(vec![1usize, 2, 4, 8]),
                                    line_cache in any::<bool>(),
                                    ops in prop::collection::vec(op(), 1..120)) {
        run(shards, line_cache, &ops)?;
    }
}
