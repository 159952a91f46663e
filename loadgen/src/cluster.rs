//! The `cluster` workload: N in-process nodes joined through a real etcd.
//!
//! Measures what a user of `roster-cluster` pays and gets: the latency of a claim (one
//! etcd transaction, then the local registration), batched claims per second, the
//! propagation lag (from `register` returning `Ok` on one node until a lookup on
//! another finds the entry), lookups of remote entries beside local ones, and how long
//! a dead node's names outlive it, against its lease TTL, beside a clean leave.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roster::{Key, Metadata, Node, Registry};
use roster_cluster::{Cluster, Config as ClusterConfig};

use crate::recorder::histogram;
use crate::workloads::{agent_meta, Findings, Run};

/// The workload's own options.
pub struct Options {
    /// etcd client URL; `None` starts a local etcd.
    pub etcd: Option<String>,
    pub nodes: usize,
    pub lease_ttl: Duration,
}

/// A one-member etcd this workload started on loopback, removed when dropped.
struct LocalEtcd {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl LocalEtcd {
    fn start() -> Result<LocalEtcd, String> {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| format!("no free loopback port: {e}"))
        };
        let (client, peer) = (free()?, free()?);
        let dir = std::env::temp_dir().join(format!("roster-loadgen-etcd-{}", std::process::id()));
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "loadgen", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("loadgen={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!(
                    "no --etcd given and cannot start a local etcd ({e}): install it \
                     (Debian/Ubuntu: apt-get install etcd-server) or pass --etcd URL"
                )
            })?;
        let mut etcd = LocalEtcd { child, dir, url };
        // Listening is not serving: a new member answers requests only once it has
        // elected itself leader and written its first WAL entries, which on a loaded
        // machine can take longer than a node's join timeout. Its `/health` says when.
        let t0 = Instant::now();
        while !healthy(client) {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(format!("the local etcd exited at startup ({status})"));
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return Err("the local etcd did not become healthy within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(etcd)
    }
}

/// Whether the etcd on loopback port `port` answers `GET /health` with
/// `"health":"true"` (it has a leader and serves reads).
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    // etcd's own health read may take up to a second before it answers.
    let timeout = Some(Duration::from_secs(2));
    if s.set_read_timeout(timeout).is_err() || s.set_write_timeout(timeout).is_err() {
        return false;
    }
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    // What arrived before an error still counts (the reply may end without a clean close).
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.replace(' ', "").contains("\"health\":\"true\"")
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn node_config(url: &str, node: u32, prefix: &str, ttl: Duration) -> ClusterConfig {
    ClusterConfig::new([url.to_string()], Node(node))
        .prefix(prefix)
        .lease_ttl(ttl)
        .timeout(Duration::from_secs(2).min(ttl / 2))
}

/// Runs the workload, adding its operations and notes to `f`.
pub fn run(run: &Run, opts: &Options, f: &mut Findings, say: &dyn Fn(&str)) -> Result<(), String> {
    if opts.nodes < 2 {
        return Err(format!("--nodes must be at least 2, got {}", opts.nodes));
    }
    let _local;
    let url = match &opts.etcd {
        Some(u) => u.clone(),
        None => {
            let etcd = LocalEtcd::start()?;
            say(&format!(
                "no --etcd given: started a local etcd at {} (its data dir is temporary)",
                etcd.url
            ));
            let url = etcd.url.clone();
            _local = etcd;
            url
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let prefix = format!(
        "/roster-loadgen/{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let join = |n: u32, ttl: Duration| {
        let registry = Registry::builder()
            .shards(2)
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(Cluster::join(registry, node_config(&url, n, &prefix, ttl)))
            .map_err(|e| format!("node {n} cannot join etcd at {url}: {e}"))
    };
    let nodes: Vec<Cluster> = (1..=opts.nodes as u32)
        .map(|n| join(n, opts.lease_ttl))
        .collect::<Result<_, _>>()?;
    say(&format!("{} nodes joined through {url}", nodes.len()));
    let ns: Vec<_> = nodes
        .iter()
        .map(|c| c.namespace("loadgen-cluster").expect("a valid namespace"))
        .collect();
    let owner = nodes[0].registry().spawn();
    let samples = ((run.cfg.duration.as_secs_f64() * 400.0) as u64).clamp(200, 20_000);
    let meta = agent_meta(0);

    // Claim latency, one at a time on node 1.
    let started = run.origin.elapsed();
    let mut hist = histogram();
    let t0 = Instant::now();
    for i in 0..samples {
        let s = Instant::now();
        rt.block_on(nodes[0].register(&owner, &Key::new(ns[0], i), &meta))
            .map_err(|e| format!("cluster register: {e}"))?;
        record(&mut hist, s.elapsed());
    }
    f.ops
        .push(op("cluster-register", hist, t0.elapsed(), started));

    // Propagation: register on node i, spin on node i+1 until it sees the entry.
    let started = run.origin.elapsed();
    let mut hist = histogram();
    let t0 = Instant::now();
    let base = 1 << 40;
    let watchers: Vec<_> = nodes.iter().map(|n| n.registry().spawn()).collect();
    for i in 0..samples.min(2_000) {
        let (from, to) = (i as usize % nodes.len(), (i as usize + 1) % nodes.len());
        let key = base + i;
        rt.block_on(nodes[from].register(&watchers[from], &Key::new(ns[from], key), &meta))
            .map_err(|e| format!("cluster register: {e}"))?;
        let ok = Instant::now();
        let seen = Key::new(ns[to], key);
        while nodes[to]
            .registry()
            .lookup(&seen)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            if ok.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "node {} never saw key {key} of node {}",
                    to + 1,
                    from + 1
                ));
            }
            std::hint::spin_loop();
        }
        record(&mut hist, ok.elapsed());
    }
    f.ops
        .push(op("cluster-propagation", hist, t0.elapsed(), started));

    // Batched claims: register_many in transactions of 128.
    let batched = (samples * 10).min(50_000);
    let started = run.origin.elapsed();
    let mut hist = histogram();
    let items: Vec<(Key<'_>, Metadata)> = (0..batched)
        .map(|i| (Key::new(ns[0], 2 * base + i), agent_meta(i)))
        .collect();
    let t0 = Instant::now();
    for chunk in items.chunks(128) {
        let s = Instant::now();
        let results = rt
            .block_on(nodes[0].register_many(&owner, chunk))
            .map_err(|e| format!("cluster register_many: {e}"))?;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            return Err(format!("cluster register_many: {e}"));
        }
        record(&mut hist, s.elapsed());
    }
    let batch_secs = t0.elapsed();
    f.ops
        .push(op("cluster-batch-128", hist, batch_secs, started));
    f.notes.push(format!(
        "cluster: {batched} batched claims at {:.0} registrations/s (128 per etcd transaction)",
        batched as f64 / batch_secs.as_secs_f64()
    ));

    // Remote lookups beside local ones, on node 2: node 1's keys against its own.
    let local_owner = nodes[1].registry().spawn();
    // As many local keys as remote ones: the same table sizes, the same cache misses.
    let local: Vec<(Key<'_>, Metadata)> = (0..batched)
        .map(|i| (Key::new(ns[1], 3 * base + i), agent_meta(i)))
        .collect();
    for chunk in local.chunks(128) {
        rt.block_on(nodes[1].register_many(&local_owner, chunk))
            .map_err(|e| format!("cluster register_many: {e}"))?;
    }
    let all_remote = Key::new(ns[1], 2 * base + batched - 1);
    let t = Instant::now();
    while nodes[1]
        .registry()
        .lookup(&all_remote)
        .map_err(|e| e.to_string())?
        .is_none()
    {
        if t.elapsed() > Duration::from_secs(30) {
            return Err("node 2 never received node 1's batch".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let phase = run
        .cfg
        .duration
        .mul_f64(0.5)
        .max(Duration::from_millis(200));
    for (label, base_key, n) in [
        ("cluster-lookup-remote", 2 * base, batched),
        ("cluster-lookup-local", 3 * base, batched),
    ] {
        let started = run.origin.elapsed();
        let mut hist = histogram();
        let mut entry = roster::Entry::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let t0 = Instant::now();
        let mut misses = 0u64;
        while t0.elapsed() < phase {
            for _ in 0..256 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = Key::new(ns[1], base_key + x % n);
                let s = Instant::now();
                let hit = nodes[1]
                    .registry()
                    .lookup_into(&key, &mut entry)
                    .map_err(|e| e.to_string())?;
                record(&mut hist, s.elapsed());
                misses += u64::from(!hit);
            }
        }
        if misses > 0 {
            return Err(format!("{label}: {misses} lookups missed present keys"));
        }
        f.ops.push(op(label, hist, t0.elapsed(), started));
    }

    // Death of a node (no goodbye: its lease runs out) and a clean leave.
    for (label, clean) in [("node death (lease expiry)", false), ("clean leave", true)] {
        let n = opts.nodes as u32 + 1 + u32::from(clean);
        let dying = join(n, opts.lease_ttl)?;
        let dns = dying
            .namespace("loadgen-cluster")
            .expect("a valid namespace");
        let p = dying.registry().spawn();
        let keys: Vec<(Key<'_>, Metadata)> = (0..1_000u64)
            .map(|i| {
                (
                    Key::new(dns, (4 + u64::from(clean)) * base + i),
                    Metadata::new(),
                )
            })
            .collect();
        rt.block_on(dying.register_many(&p, &keys))
            .map_err(|e| format!("register_many: {e}"))?;
        // Claims apply in revision order: once the last is visible, all are.
        let last = Key::new(ns[0], keys[999].0.name());
        let t = Instant::now();
        while nodes[0]
            .registry()
            .lookup(&last)
            .map_err(|e| e.to_string())?
            .is_none()
        {
            if t.elapsed() > Duration::from_secs(30) {
                return Err(format!("{label}: node 1 never saw the dying node's names"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let t0 = Instant::now();
        if clean {
            rt.block_on(dying.leave())
                .map_err(|e| format!("leave: {e}"))?;
        }
        drop(dying);
        while nodes[0]
            .registry()
            .lookup(&last)
            .map_err(|e| e.to_string())?
            .is_some()
        {
            if t0.elapsed() > opts.lease_ttl * 4 + Duration::from_secs(10) {
                return Err(format!("{label}: the dead node's names outlived it"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let gone = t0.elapsed();
        if !clean {
            f.cluster_death = Some((gone, opts.lease_ttl));
        }
        f.notes.push(format!(
            "cluster: {label}: 1,000 names gone on another node after {:.0} ms (lease TTL {:.0} ms)",
            gone.as_secs_f64() * 1e3,
            opts.lease_ttl.as_secs_f64() * 1e3
        ));
    }

    let stats = nodes[1].stats();
    f.notes.push(format!(
        "cluster: node 2 applied revision {} of {}, watch lag max {:.2} ms, {} reconnects, {} fences",
        stats.applied_revision,
        stats.etcd_revision,
        stats.watch_lag_max.as_secs_f64() * 1e3,
        stats.reconnects,
        stats.fences
    ));
    for n in &nodes {
        let _ = rt.block_on(n.leave());
    }
    Ok(())
}

fn record(hist: &mut hdrhistogram::Histogram<u64>, d: Duration) {
    let _ = hist.record((d.as_nanos() as u64).max(1));
}

fn op(
    name: &str,
    hist: hdrhistogram::Histogram<u64>,
    elapsed: Duration,
    started: Duration,
) -> crate::report::OpData {
    crate::report::OpData {
        name: name.to_string(),
        hist,
        elapsed,
        threads: 1,
        rate_per_thread: None,
        started,
    }
}
