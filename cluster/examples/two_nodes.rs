//! Two nodes of one cluster (in one process here; normally one per machine): unique
//! names across them, remote entries read locally, a death that propagates.
//!
//! ```sh
//! etcd --data-dir /tmp/etcd-demo &   # serves http://127.0.0.1:2379
//! ROSTER_ETCD=http://127.0.0.1:2379 cargo run -p roster-cluster --example two_nodes
//! ```
//!
//! The cluster tests run [`run`] against an etcd they start.

use std::time::Duration;

use roster::{Key, Metadata, Node, Registry};
use roster_cluster::{Cluster, Config, Error, Owner};

/// The README's example, against the etcd at `etcd`.
pub async fn run(etcd: &str) -> Result<(), Box<dyn std::error::Error>> {
    let config = |node| Config::new([etcd], Node(node)).prefix("/two-nodes");
    let a = Cluster::join(Registry::new()?, config(1)).await?;
    let b = Cluster::join(Registry::new()?, config(2)).await?;
    let (agents_a, agents_b) = (a.namespace("agents")?, b.namespace("agents")?);

    // A claims "planner"; B's claim of the same name loses, naming A's process.
    let planner = a.registry().spawn();
    let meta = Metadata::new().capability("plan");
    a.register(&planner, &Key::new(agents_a, "planner"), &meta)
        .await?;
    let rival = b.registry().spawn();
    let lost = b
        .register(&rival, &Key::new(agents_b, "planner"), &Metadata::new())
        .await;
    let owner = Owner::Remote {
        node: Node(1),
        pid: planner.pid().as_u64(),
    };
    assert_eq!(lost, Err(Error::AlreadyRegistered { owner }));

    // B reads A's entry locally, lock-free, once its watch has delivered it.
    let key = Key::new(agents_b, "planner");
    let entry = loop {
        if let Some(e) = b.registry().lookup(&key)? {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(entry.node(), Node(1));
    assert_eq!(b.owner(&entry), owner);

    // A's process dies: its names go from etcd, then from every node.
    drop(planner);
    while b.registry().lookup(&key)?.is_some() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    a.leave().await?;
    b.leave().await?;
    Ok(())
}

#[allow(dead_code)] // the tests include this file for `run`
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = std::env::var("ROSTER_ETCD").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    run(&etcd).await?;
    println!("two nodes agreed on every name through {etcd}");
    Ok(())
}
