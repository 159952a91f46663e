//! One cluster node in its own OS process, driven line by line on stdin: the
//! multi-process test's node, and a way to try a cluster by hand.
//!
//! ```text
//! roster-node --etcd http://127.0.0.1:2379 --node 1 [--prefix /roster] [--ttl 5]
//! ping            -> pong
//! claim N         -> won <each of 0..N this node claimed in namespace "agents">
//! lookup N        -> node <owner's node> | missing
//! leave           -> left (and exits)
//! ```

use std::time::Duration;

use roster::{Key, Metadata, Node, Registry};
use roster_cluster::{Cluster, Config};

fn usage(why: &str) -> ! {
    eprintln!("roster-node: {why}");
    eprintln!("usage: roster-node --etcd URL --node N [--prefix /roster] [--ttl SECONDS]");
    std::process::exit(2)
}

fn main() {
    let mut etcd = None;
    let mut node = None;
    let mut prefix = "/roster".to_string();
    let mut ttl = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--etcd" => etcd = Some(value()),
            "--node" => {
                node = Some(
                    value()
                        .parse()
                        .unwrap_or_else(|_| usage("--node takes a number")),
                )
            }
            "--prefix" => prefix = value(),
            "--ttl" => {
                ttl = value()
                    .parse()
                    .unwrap_or_else(|_| usage("--ttl takes whole seconds"))
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let etcd = etcd.unwrap_or_else(|| usage("--etcd is required"));
    let node = Node(node.unwrap_or_else(|| usage("--node is required")));

    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let registry = Registry::builder().shards(2).build().expect("a registry");
        let config = Config::new([etcd], node)
            .prefix(prefix)
            .lease_ttl(Duration::from_secs(ttl))
            .timeout(Duration::from_secs(1));
        let cluster = match Cluster::join(registry.clone(), config).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("roster-node: {e}");
                std::process::exit(1)
            }
        };
        let ns = cluster.namespace("agents").expect("a namespace");
        let holder = registry.spawn();
        while let Some(line) = lines.recv().await {
            let mut words = line.split_whitespace();
            let answer = match (words.next(), words.next().map(str::parse::<u64>)) {
                (Some("ping"), None) => "pong".to_string(),
                (Some("claim"), Some(Ok(n))) => {
                    let mut won = String::from("won");
                    for i in 0..n {
                        if cluster
                            .register(&holder, &Key::new(ns, i), &Metadata::new())
                            .await
                            .is_ok()
                        {
                            won.push_str(&format!(" {i}"));
                        }
                    }
                    won
                }
                (Some("lookup"), Some(Ok(n))) => match registry.lookup(&Key::new(ns, n)) {
                    Ok(Some(e)) => format!("node {}", e.node().0),
                    Ok(None) => "missing".into(),
                    Err(e) => format!("error {e}"),
                },
                (Some("leave"), None) => {
                    let _ = cluster.leave().await;
                    println!("left");
                    return;
                }
                _ => format!("error: unknown command {line:?}"),
            };
            println!("{answer}");
        }
    });
}
