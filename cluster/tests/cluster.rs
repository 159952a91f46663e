//! The cluster layer against a real etcd: several nodes (registries) in one process,
//! and one test with nodes in separate OS processes.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, Etcd, Proxy};
use roster::{Health, Key, Metadata, Node, Query, Registry};
use roster_cluster::{Cluster, Config, Error, LeaseState, Owner};

const SLACK: Duration = Duration::from_secs(10);

fn config(urls: &[String], node: u32, prefix: &str) -> Config {
    Config::new(urls.iter().cloned(), Node(node))
        .prefix(prefix)
        .lease_ttl(Duration::from_secs(3))
        .timeout(Duration::from_secs(1))
}

async fn node(urls: &[String], node: u32, prefix: &str) -> Cluster {
    let registry = Registry::builder().shards(2).build().unwrap();
    Cluster::join(registry, config(urls, node, prefix))
        .await
        .expect("join")
}

fn visible(c: &Cluster, key: &Key<'_>) -> bool {
    visible_in(c.registry(), key)
}

fn visible_in(r: &Registry, key: &Key<'_>) -> bool {
    r.lookup(key).unwrap().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_exactly_one_winner() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let nodes = [
        node(&urls, 1, "/t").await,
        node(&urls, 2, "/t").await,
        node(&urls, 3, "/t").await,
    ];
    for round in 0..25u64 {
        let procs: Vec<_> = nodes.iter().map(|n| n.registry().spawn()).collect();
        let claims = nodes.iter().zip(&procs).map(|(n, p)| async move {
            let ns = n.namespace("leaders").unwrap();
            n.register(p, &Key::new(ns, round), &Metadata::new()).await
        });
        let results = futures_join(claims).await;
        let winners: Vec<usize> = (0..3).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let w = winners[0];
        for (i, r) in results.iter().enumerate() {
            if i == w {
                continue;
            }
            let expect = Owner::Remote {
                node: Node(w as u32 + 1),
                pid: procs[w].pid().as_u64(),
            };
            assert_eq!(
                r,
                &Err(Error::AlreadyRegistered { owner: expect }),
                "round {round}"
            );
        }
        // The winner's own node names its own process as local.
        let ns = nodes[w].namespace("leaders").unwrap();
        let again = nodes[w]
            .register(
                &nodes[w].registry().spawn(),
                &Key::new(ns, round),
                &Metadata::new(),
            )
            .await;
        assert_eq!(
            again,
            Err(Error::AlreadyRegistered {
                owner: Owner::Local(procs[w].pid())
            })
        );
        // Keep the processes alive until every node has seen the winner.
        for n in &nodes {
            let ns = n.namespace("leaders").unwrap();
            let key = Key::new(ns, round);
            assert!(eventually(SLACK, || visible(n, &key)).await.is_some());
        }
        std::mem::forget(procs);
    }
}

/// Runs futures concurrently on the current task, results in order.
async fn futures_join<F: std::future::Future>(fs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..handles.len()).map(|_| None).collect();
    let mut handles: Vec<_> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (h, o) in handles.iter_mut().zip(out.iter_mut()) {
            if let Some(f) = h {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *o = Some(v);
                        *h = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_entries_are_read_locally_and_follow_updates() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let (a, b) = (node(&urls, 1, "/t").await, node(&urls, 2, "/t").await);
    let (ns_a, ns_b) = (
        a.namespace("agents").unwrap(),
        b.namespace("agents").unwrap(),
    );
    let searcher = a.registry().spawn();
    let meta = Metadata::new()
        .capability("search")
        .health(Health::Healthy)
        .attribute("region", "eu-west");
    a.register(&searcher, &Key::new(ns_a, "searcher"), &meta)
        .await
        .unwrap();
    // A reads its own write at once.
    let local = a
        .registry()
        .lookup(&Key::new(ns_a, "searcher"))
        .unwrap()
        .unwrap();
    assert_eq!(local.pid(), searcher.pid());
    assert_eq!(local.node(), Node(1));

    let key_b = Key::new(ns_b, "searcher");
    let lag = eventually(SLACK, || visible(&b, &key_b))
        .await
        .expect("B sees A's entry");
    let entry = b.registry().lookup(&key_b).unwrap().unwrap();
    assert_eq!(entry.node(), Node(1));
    assert_eq!(entry.health(), Health::Healthy);
    assert_eq!(
        entry.attribute("region"),
        Some(roster::ValueRef::Str("eu-west"))
    );
    assert_eq!(
        b.owner(&entry),
        Owner::Remote {
            node: Node(1),
            pid: searcher.pid().as_u64()
        }
    );
    let hits = b
        .registry()
        .query(&Query::new(ns_b).capability("search"))
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert!(lag < SLACK);

    // B cannot change or remove what A holds.
    let intruder = b.registry().spawn();
    let remote = Owner::Remote {
        node: Node(1),
        pid: searcher.pid().as_u64(),
    };
    assert_eq!(
        b.unregister(&intruder, &key_b).await,
        Err(Error::NotOwner { owner: remote })
    );
    assert_eq!(
        b.update_metadata(&intruder, &key_b, &Metadata::new()).await,
        Err(Error::NotOwner { owner: remote })
    );

    // An update propagates.
    a.update_metadata(
        &searcher,
        &Key::new(ns_a, "searcher"),
        &meta.clone().health(Health::Degraded),
    )
    .await
    .unwrap();
    assert!(eventually(SLACK, || {
        b.registry()
            .lookup(&key_b)
            .unwrap()
            .is_some_and(|e| e.health() == Health::Degraded)
    })
    .await
    .is_some());

    // So does an unregister; then B may take the name.
    a.unregister(&searcher, &Key::new(ns_a, "searcher"))
        .await
        .unwrap();
    assert!(!visible(&a, &Key::new(ns_a, "searcher")));
    assert!(eventually(SLACK, || !visible(&b, &key_b)).await.is_some());
    b.register(&intruder, &key_b, &Metadata::new())
        .await
        .unwrap();
    let key_a = Key::new(ns_a, "searcher");
    assert!(eventually(SLACK, || a
        .registry()
        .lookup(&key_a)
        .unwrap()
        .is_some_and(|e| e.node() == Node(2)))
    .await
    .is_some());

    let stats = b.stats();
    assert!(matches!(stats.lease, LeaseState::Live { .. }));
    assert!(stats.applied_revision > 0);
    assert_eq!(stats.local_claims, 1);
    assert!(
        eventually(SLACK, || b.stats().watch_lag.is_some())
            .await
            .is_some(),
        "B's own claim comes back on its watch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_namespaces_stay_local_and_invalid_writes_claim_nothing() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let (a, b) = (node(&urls, 1, "/t").await, node(&urls, 2, "/t").await);
    let local_a = a.registry().namespace("scratch").unwrap();
    let local_b = b.registry().namespace("scratch").unwrap();
    let p = a.registry().spawn();
    a.register(&p, &Key::new(local_a, 1), &Metadata::new())
        .await
        .unwrap();
    let q = b.registry().spawn();
    // The same name in a local namespace on another node is another key.
    b.register(&q, &Key::new(local_b, 1), &Metadata::new())
        .await
        .unwrap();

    let ns = a.namespace("agents").unwrap();
    let err = a
        .register(&p, &Key::new(ns, ""), &Metadata::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Local(_)), "{err:?}");
    // A dead process's claim is released again: the name stays free.
    let dead = a.registry().spawn();
    let authority = dead.authority();
    drop(dead);
    assert!(a
        .register(&authority, &Key::new(ns, "x"), &Metadata::new())
        .await
        .is_err());
    let ns_b = b.namespace("agents").unwrap();
    b.register(&q, &Key::new(ns_b, "x"), &Metadata::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn death_of_a_process_and_of_a_node_propagate() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let (a, b) = (node(&urls, 1, "/t").await, node(&urls, 2, "/t").await);
    let ns_a = a.namespace("agents").unwrap();
    let ns_b = b.namespace("agents").unwrap();

    // A process's death: its names go in etcd and then on every node.
    let worker = a.registry().spawn();
    let items: Vec<_> = (0..300u64)
        .map(|i| (Key::new(ns_a, i), Metadata::new()))
        .collect();
    let results = a.register_many(&worker, &items).await.unwrap();
    assert!(
        results.iter().all(|r| r.is_ok()),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    assert!(
        eventually(SLACK, || b.registry().count(ns_b).unwrap() == 300)
            .await
            .is_some()
    );
    drop(worker);
    assert!(a.registry().lookup(&Key::new(ns_a, 7)).unwrap().is_none());
    assert!(eventually(SLACK, || b.registry().count(ns_b).unwrap() == 0)
        .await
        .is_some());
    assert!(eventually(SLACK, || a.stats().local_claims == 0)
        .await
        .is_some());

    // A clean leave: its names vanish elsewhere at once (no TTL to wait for).
    let p = a.registry().spawn();
    a.register(&p, &Key::new(ns_a, "leaver"), &Metadata::new())
        .await
        .unwrap();
    let key_b = Key::new(ns_b, "leaver");
    assert!(eventually(SLACK, || visible(&b, &key_b)).await.is_some());
    let start = Instant::now();
    a.leave().await.unwrap();
    assert!(eventually(SLACK, || !visible(&b, &key_b)).await.is_some());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        a.register(&p, &Key::new(ns_a, "again"), &Metadata::new())
            .await,
        Err(Error::Left)
    );

    // A node's death: no goodbye, its lease expires, its names go.
    let c = node(&urls, 3, "/t").await;
    let ns_c = c.namespace("agents").unwrap();
    let q = c.registry().spawn();
    c.register(&q, &Key::new(ns_c, "crasher"), &Metadata::new())
        .await
        .unwrap();
    let key_b = Key::new(ns_b, "crasher");
    assert!(eventually(SLACK, || visible(&b, &key_b)).await.is_some());
    let c_registry = c.registry().clone();
    let start = Instant::now();
    drop(c); // stops its tasks: no keepalive, no revoke
             // Once the last handle is gone (a finished write's task may hold one a moment).
    let released = eventually(Duration::from_secs(1), || {
        !visible_in(&c_registry, &Key::new(ns_c, "crasher"))
    });
    assert!(
        released.await.is_some(),
        "a dropped node lets go of its names locally"
    );
    let took = eventually(SLACK, || !visible(&b, &key_b))
        .await
        .expect("the name expires");
    assert!(
        took + Duration::from_millis(100) >= Duration::from_secs(2),
        "{took:?}: before the lease ran out"
    );
    assert!(start.elapsed() < Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_etcd_fences_itself_and_rejoins() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let proxy = Proxy::start(etcd.port(0)).await;
    let a = node(&[proxy.url()], 1, "/t").await;
    let b = node(&urls, 2, "/t").await;
    let (ns_a, ns_b) = (
        a.namespace("agents").unwrap(),
        b.namespace("agents").unwrap(),
    );
    let p = a.registry().spawn();
    a.register(&p, &Key::new(ns_a, "leader"), &Metadata::new())
        .await
        .unwrap();
    let q = b.registry().spawn();
    b.register(&q, &Key::new(ns_b, "other"), &Metadata::new())
        .await
        .unwrap();
    assert!(eventually(SLACK, || visible(&a, &Key::new(ns_a, "other")))
        .await
        .is_some());

    let LeaseState::Live { id: lease, .. } = a.stats().lease else {
        panic!("A is live")
    };
    proxy.cut();
    let cut_at = Instant::now();
    // The fence is complete once it has recorded its margin.
    assert!(eventually(SLACK, || a.stats().fence_margin.is_some())
        .await
        .is_some());
    let fenced_after = cut_at.elapsed();
    assert_eq!(a.stats().lease, LeaseState::Fenced);
    // Fenced before the 3 s lease could run out, and nothing is presented as held.
    assert!(
        fenced_after < Duration::from_secs(3),
        "fenced after {fenced_after:?}"
    );
    let stats = a.stats();
    assert_eq!(stats.late_fences, 0, "margin {:?}", stats.fence_margin);
    // The real check: etcd itself still held A's lease when A had let go of its names.
    let mut direct = etcd_client::Client::connect([etcd.url(0)], None)
        .await
        .unwrap();
    // Whole seconds left, rounded down; -1 once expired.
    let left = direct.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(left >= 0, "etcd expired A's lease ({left}) before A fenced");
    assert!(!visible(&a, &Key::new(ns_a, "leader")));
    assert!(
        !visible(&a, &Key::new(ns_a, "other")),
        "the stale replica is dropped too"
    );
    assert!(a.registry().is_alive(p.pid()), "its processes live on");
    assert_eq!(
        a.register(&p, &Key::new(ns_a, "x"), &Metadata::new()).await,
        Err(Error::Fenced)
    );

    // Once A's lease has expired, B may take the name.
    let r = q.authority();
    let mut taken = false;
    for _ in 0..100 {
        if b.register(&r, &Key::new(ns_b, "leader"), &Metadata::new())
            .await
            .is_ok()
        {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(taken, "B never got the name A lost");

    // Let A back in: it rejoins by itself and sees B's claim as remote.
    proxy.restore();
    assert!(
        eventually(SLACK, || matches!(a.stats().lease, LeaseState::Live { .. }))
            .await
            .is_some()
    );
    let key = Key::new(ns_a, "leader");
    assert!(eventually(SLACK, || a
        .registry()
        .lookup(&key)
        .unwrap()
        .is_some_and(|e| e.node() == Node(2)))
    .await
    .is_some());
    a.register(&p, &Key::new(ns_a, "fresh"), &Metadata::new())
        .await
        .unwrap();
    assert!(a.stats().fences >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_compaction_a_lagging_node_resyncs_from_a_snapshot() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let proxy = Proxy::start(etcd.port(0)).await;
    let registry = Registry::builder().shards(2).build().unwrap();
    // A long lease: the cut must break A's watch without fencing it.
    let a = Cluster::join(
        registry,
        config(&[proxy.url()], 1, "/t").lease_ttl(Duration::from_secs(20)),
    )
    .await
    .unwrap();
    let b = node(&urls, 2, "/t").await;
    let (ns_a, ns_b) = (
        a.namespace("agents").unwrap(),
        b.namespace("agents").unwrap(),
    );
    let q = b.registry().spawn();
    b.register(&q, &Key::new(ns_b, "stays"), &Metadata::new())
        .await
        .unwrap();
    b.register(&q, &Key::new(ns_b, "goes"), &Metadata::new())
        .await
        .unwrap();
    assert!(eventually(SLACK, || visible(&a, &Key::new(ns_a, "goes")))
        .await
        .is_some());
    let resyncs = a.stats().resyncs;

    let reconnects = a.stats().reconnects;
    proxy.cut();
    // Only once A's watch has noticed the cut is it sure to miss what follows.
    assert!(eventually(SLACK, || a.stats().reconnects > reconnects)
        .await
        .is_some());
    b.unregister(&q, &Key::new(ns_b, "goes")).await.unwrap();
    b.register(&q, &Key::new(ns_b, "new"), &Metadata::new())
        .await
        .unwrap();
    let mut client = etcd_client::Client::connect([etcd.url(0)], None)
        .await
        .unwrap();
    let rev = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.compact(rev, None).await.unwrap();
    proxy.restore();

    assert!(eventually(SLACK, || visible(&a, &Key::new(ns_a, "new")))
        .await
        .is_some());
    assert!(
        !visible(&a, &Key::new(ns_a, "goes")),
        "no ghost of the entry deleted meanwhile"
    );
    assert!(visible(&a, &Key::new(ns_a, "stays")));
    assert!(
        a.stats().resyncs > resyncs,
        "the watch could not resume: a snapshot was needed"
    );
    assert_eq!(a.stats().fences, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_an_etcd_member_changes_nothing_visible() {
    let mut etcd = Etcd::start_members(3);
    let urls = etcd.urls();
    let (a, b) = (node(&urls, 1, "/t").await, node(&urls, 2, "/t").await);
    let (ns_a, ns_b) = (
        a.namespace("agents").unwrap(),
        b.namespace("agents").unwrap(),
    );
    let p = a.registry().spawn();
    a.register(&p, &Key::new(ns_a, "before"), &Metadata::new())
        .await
        .unwrap();
    etcd.kill(0);
    let mut ok = false;
    for _ in 0..50 {
        match a
            .register(&p, &Key::new(ns_a, "after"), &Metadata::new())
            .await
        {
            Ok(()) => {
                ok = true;
                break;
            }
            Err(Error::Unreachable { .. } | Error::Etcd(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(ok, "writes go on with two of three members");
    for name in ["before", "after"] {
        assert!(
            eventually(SLACK, || visible(&b, &Key::new(ns_b, name)))
                .await
                .is_some(),
            "{name}"
        );
    }
    tokio::time::sleep(Duration::from_secs(4)).await; // more than a lease TTL
    assert!(matches!(a.stats().lease, LeaseState::Live { .. }));
    assert!(matches!(b.stats().lease, LeaseState::Live { .. }));
    assert_eq!((a.stats().fences, b.stats().fences), (0, 0));
    assert!(visible(&b, &Key::new(ns_b, "before")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_ends_with_every_node_converged() {
    let mut etcd = Etcd::start();
    let urls = etcd.urls();
    let slow = |n| {
        let registry = Registry::builder().shards(2).build().unwrap();
        Cluster::join(
            registry,
            config(&urls, n, "/t").lease_ttl(Duration::from_secs(15)),
        )
    };
    let (a, b) = (slow(1).await.unwrap(), slow(2).await.unwrap());
    let (ns_a, ns_b) = (
        a.namespace("agents").unwrap(),
        b.namespace("agents").unwrap(),
    );
    let p = a.registry().spawn();
    let q = b.registry().spawn();
    a.register(&p, &Key::new(ns_a, "a1"), &Metadata::new())
        .await
        .unwrap();
    b.register(&q, &Key::new(ns_b, "b1"), &Metadata::new())
        .await
        .unwrap();
    a.register(&p, &Key::new(ns_a, "a-goes"), &Metadata::new())
        .await
        .unwrap();
    assert!(eventually(SLACK, || visible(&b, &Key::new(ns_b, "a-goes")))
        .await
        .is_some());

    etcd.restart(0);
    // Writes after the restart, on both nodes (retried while the clients reconnect).
    macro_rules! retry {
        ($write:expr) => {{
            let mut done = false;
            for _ in 0..100 {
                if $write.await.is_ok() {
                    done = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(done, "a write never went through after the restart");
        }};
    }
    retry!(a.register(&p, &Key::new(ns_a, "a2"), &Metadata::new()));
    retry!(b.register(&q, &Key::new(ns_b, "b2"), &Metadata::new()));
    retry!(a.unregister(&p, &Key::new(ns_a, "a-goes")));
    for name in ["a1", "a2", "b1", "b2"] {
        assert!(
            eventually(SLACK, || visible(&a, &Key::new(ns_a, name))
                && visible(&b, &Key::new(ns_b, name)))
            .await
            .is_some(),
            "{name}"
        );
    }
    assert!(
        eventually(SLACK, || !visible(&b, &Key::new(ns_b, "a-goes")))
            .await
            .is_some(),
        "no ghost"
    );
    // Counts include entries of dead processes until their shard removes them (see
    // `Registry::count`): a stand-in killed with its last entry is hidden at once, counted
    // until the cleanup, so the counts converge a moment after visibility does.
    for (name, node, ns) in [("a", &a, ns_a), ("b", &b, ns_b)] {
        let took = eventually(SLACK, || node.registry().count(ns).unwrap() == 4).await;
        assert!(
            took.is_some(),
            "node {name} counts {} entries, 4 live",
            node.registry().count(ns).unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_clear_error_within_the_timeout() {
    // Nothing listens on a port we just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registry = Registry::new().unwrap();
    let start = Instant::now();
    let err = Cluster::join(
        registry.clone(),
        Config::new([format!("http://127.0.0.1:{port}")], Node(1))
            .timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(err, Error::Unreachable { .. } | Error::Etcd(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("etcd"), "{err}");

    let bad = Cluster::join(registry.clone(), Config::new(["not a url"], Node(1))).await;
    assert!(bad.is_err());
    let bad = Cluster::join(registry, Config::new(Vec::<String>::new(), Node(1))).await;
    assert!(matches!(bad, Err(Error::InvalidConfig(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_in_separate_processes_agree_on_every_name() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let etcd = Etcd::start();
    let url = etcd.url(0);
    let spawn = |node: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_roster-node"))
            .args([
                "--etcd", &url, "--node", node, "--prefix", "/procs", "--ttl", "3",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("roster-node starts")
    };
    let mut children = [spawn("1"), spawn("2")];
    let mut io: Vec<_> = children
        .iter_mut()
        .map(|c| {
            (
                c.stdin.take().unwrap(),
                BufReader::new(c.stdout.take().unwrap()).lines(),
            )
        })
        .collect();
    async fn ask(
        io: &mut (
            tokio::process::ChildStdin,
            tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        ),
        line: &str,
    ) -> String {
        io.0.write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        tokio::time::timeout(SLACK, io.1.next_line())
            .await
            .expect("an answer")
            .unwrap()
            .expect("a line")
    }
    for node in io.iter_mut() {
        assert_eq!(ask(node, "ping").await, "pong");
    }
    // Both claim the same 50 names at once: each name has exactly one winner.
    let (first, second) = io.split_at_mut(1);
    let (r1, r2) = tokio::join!(
        ask(&mut first[0], "claim 50"),
        ask(&mut second[0], "claim 50")
    );
    let won = |r: &str| -> Vec<u64> {
        r.strip_prefix("won")
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let (w1, w2) = (won(&r1), won(&r2));
    assert_eq!(w1.len() + w2.len(), 50, "{r1} / {r2}");
    assert!(w1.iter().all(|n| !w2.contains(n)));
    // Each sees the other's names, owned by the other's node.
    for (i, theirs, node) in [(0, &w2, 2), (1, &w1, 1)] {
        for n in theirs.iter().take(5) {
            let mut ok = false;
            for _ in 0..200 {
                if ask(&mut io[i], &format!("lookup {n}")).await == format!("node {node}") {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(ok, "node {} never saw name {n} of node {node}", i + 1);
        }
    }
    // Kill node 2 outright: its names expire with its lease, and node 1 drops them.
    children[1].kill().await.unwrap();
    if let Some(&n) = w2.first() {
        let mut gone = false;
        for _ in 0..100 {
            if ask(&mut io[0], &format!("lookup {n}")).await == "missing" {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(gone, "node 2's names outlived it");
    }
    assert_eq!(ask(&mut io[0], "leave").await, "left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_caller_gave_up_never_blocks_its_name() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let (a, b) = (node(&urls, 1, "/t").await, node(&urls, 2, "/t").await);
    let (ns_a, ns_b) = (
        a.namespace("agents").unwrap(),
        b.namespace("agents").unwrap(),
    );
    let p = a.registry().spawn();
    let q = b.registry().spawn();
    let mut abandoned = 0;
    for i in 0..30u64 {
        // Cancelled at every point of its way: before the transaction, while etcd
        // commits it, after etcd answered.
        let give_up = Duration::from_micros(100 * i);
        let r = tokio::time::timeout(
            give_up,
            a.register(&p, &Key::new(ns_a, i), &Metadata::new()),
        )
        .await;
        if matches!(r, Ok(Ok(()))) {
            continue; // A holds it, properly.
        }
        abandoned += 1;
        // Whatever etcd committed for the abandoned claim, it is undone: B gets the
        // name soon.
        let mut got = false;
        for _ in 0..100 {
            match b.register(&q, &Key::new(ns_b, i), &Metadata::new()).await {
                Ok(()) => {
                    got = true;
                    break;
                }
                Err(Error::AlreadyRegistered { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(got, "name {i} stayed blocked by an abandoned claim");
        assert!(
            !visible(&a, &Key::new(ns_a, i))
                || a.registry()
                    .lookup(&Key::new(ns_a, i))
                    .unwrap()
                    .unwrap()
                    .node()
                    == Node(2)
        );
    }
    assert!(
        abandoned > 0,
        "no claim was abandoned: the test proved nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_larger_than_one_grpc_message_loads_in_pages() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let a = node(&urls, 1, "/t").await;
    let ns = a.namespace("agents").unwrap();
    let p = a.registry().spawn();
    // 5,000 claims of about 1.1 KB: more than gRPC's 4 MiB in one response.
    let blob = "x".repeat(1000);
    let items: Vec<_> = (0..5_000u64)
        .map(|i| {
            (
                Key::new(ns, i),
                Metadata::new().attribute("blob", blob.as_str()),
            )
        })
        .collect();
    for chunk in items.chunks(500) {
        let results = a.register_many(&p, chunk).await.unwrap();
        assert!(results.iter().all(|r| r.is_ok()));
    }
    let b = node(&urls, 2, "/t").await;
    let ns_b = b.namespace("agents").unwrap();
    assert_eq!(
        b.registry().count(ns_b).unwrap(),
        5_000,
        "the join's snapshot has them all"
    );
    let e = b
        .registry()
        .lookup(&Key::new(ns_b, 4_999))
        .unwrap()
        .unwrap();
    assert_eq!(
        e.attribute("blob"),
        Some(roster::ValueRef::Str(blob.as_str()))
    );
}

#[path = "../examples/two_nodes.rs"]
mod two_nodes;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_two_node_example_runs() {
    let etcd = Etcd::start();
    two_nodes::run(&etcd.url(0))
        .await
        .expect("the example runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_later_knows_every_cluster_wide_namespace() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let a = node(&urls, 1, "/t").await;
    // Declared from a plain thread, outside the runtime; nothing registered in it.
    let a2 = a.clone();
    std::thread::spawn(move || a2.namespace("jobs").unwrap())
        .join()
        .unwrap();
    let mut direct = etcd_client::Client::connect([etcd.url(0)], None)
        .await
        .unwrap();
    let mut declared = false;
    for _ in 0..100 {
        let r = direct.get("/t/namespaces/jobs", None).await.unwrap();
        if !r.kvs().is_empty() {
            declared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(declared, "the namespace marker reaches etcd");
    let b = node(&urls, 2, "/t").await;
    // B takes the namespace from its registry, not from the cluster: still cluster-wide.
    let jobs = b.registry().namespace("jobs").unwrap();
    let p = b.registry().spawn();
    b.register(&p, &Key::new(jobs, "nightly"), &Metadata::new())
        .await
        .unwrap();
    let claim = direct.get("/t/names/jobs/0/s/nightly", None).await.unwrap();
    assert_eq!(claim.kvs().len(), 1, "the registration was claimed in etcd");
    let ns_a = a.namespace("jobs").unwrap();
    assert!(
        eventually(SLACK, || visible(&a, &Key::new(ns_a, "nightly")))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_given_up_midway_leaves_nothing_behind() {
    let etcd = Etcd::start();
    let urls = etcd.urls();
    let a = node(&urls, 1, "/t").await;
    let ns = a.namespace("agents").unwrap();
    let p = a.registry().spawn();
    let items: Vec<_> = (0..2_000u64)
        .map(|i| (Key::new(ns, i), Metadata::new()))
        .collect();
    assert!(a
        .register_many(&p, &items)
        .await
        .unwrap()
        .iter()
        .all(|r| r.is_ok()));

    let registry = Registry::builder().shards(2).build().unwrap();
    for give_up in [1u64, 5, 20] {
        let joining = Cluster::join(registry.clone(), config(&urls, 2, "/t"));
        let _ = tokio::time::timeout(Duration::from_millis(give_up), joining).await;
    }
    // Whatever those joins got to, they undo: their leases are revoked (only A's is left)
    // and the registry ends empty.
    // (A join's detached task starts within milliseconds; give any a moment to take its
    // lease before counting them.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut direct = etcd_client::Client::connect([etcd.url(0)], None)
        .await
        .unwrap();
    let mut leases = usize::MAX;
    for _ in 0..200 {
        leases = direct.leases().await.unwrap().leases().len();
        if leases == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leases, 1, "an abandoned join kept its lease");
    let ns_b = registry.namespace("agents").unwrap();
    assert!(eventually(SLACK, || registry.count(ns_b).unwrap() == 0)
        .await
        .is_some());
    let b = Cluster::join(registry.clone(), config(&urls, 2, "/t"))
        .await
        .unwrap();
    assert_eq!(registry.count(ns_b).unwrap(), 2_000);
    assert_eq!(b.stats().conflicts, 0);
}
