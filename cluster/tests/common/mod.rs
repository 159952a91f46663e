//! A real etcd for the tests: members started on free loopback ports with temporary data
//! directories, stopped when dropped; and a TCP proxy that can cut a node off from it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The `etcd` binary, or a panic that says how to get one: a test that needs etcd never
/// passes without it.
fn etcd_binary() -> PathBuf {
    if let Ok(p) = std::env::var("ROSTER_ETCD_BIN") {
        return p.into();
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = PathBuf::from(dir).join("etcd");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "the cluster tests need a real etcd and found no `etcd` binary on PATH: install it \
         (Debian/Ubuntu: `apt-get install etcd-server`) or point ROSTER_ETCD_BIN at one"
    );
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// One etcd at a time in a test process. The tests run in parallel threads, and on a
/// 2-core machine several etcds, their nodes and the tests' own waits starved each
/// other: a keepalive answered late fenced a node that the test expects to stay live
/// (`losing_an_etcd_member_changes_nothing_visible` failed so, one CI run in four).
/// Each test holds this while its etcd runs.
static ONE_ETCD: Mutex<()> = Mutex::new(());

/// An etcd cluster of one or more members on loopback.
pub struct Etcd {
    members: Vec<Member>,
    initial_cluster: String,
    /// Last, so it is released after the members are stopped.
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Etcd {
    /// A one-member etcd.
    pub fn start() -> Etcd {
        Etcd::start_members(1)
    }

    /// An etcd of `n` members.
    pub fn start_members(n: usize) -> Etcd {
        // A test that failed while holding it poisons it; the next one may still run.
        let one_at_a_time = ONE_ETCD.lock().unwrap_or_else(|e| e.into_inner());
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                dir: tempfile::tempdir().expect("a temporary directory"),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut etcd = Etcd {
            members,
            initial_cluster,
            _one_at_a_time: one_at_a_time,
        };
        for i in 0..n {
            etcd.spawn(i);
        }
        for i in 0..n {
            etcd.wait_ready(i);
        }
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let bin = etcd_binary();
        let m = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new(bin)
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(m.dir.path())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "roster-test"])
            // Fast elections keep member-loss tests short.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        m.child = Some(child);
    }

    fn wait_ready(&self, i: usize) {
        let port = self.members[i].client_port;
        let start = Instant::now();
        loop {
            // /health answers {"health":"true"} once the member serves requests.
            if health(port) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd member {i} did not become healthy in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client URL of member `i`.
    pub fn url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL.
    pub fn urls(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.url(i)).collect()
    }

    /// The client port of member `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// Kills member `i` (SIGKILL: no goodbye).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data directory.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// Whether the member at `port` says it is healthy (plain HTTP/1.0 on std, no client).
fn health(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"health\":\"true\"")
}

/// A TCP proxy in front of an etcd member: a node that connects through it can be cut
/// off (every connection closed, new ones refused) and let back in.
pub struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `127.0.0.1:upstream`; call from inside a tokio runtime.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (c, cs) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::SeqCst) {
                    let _ = down.shutdown().await;
                    continue;
                }
                let task = tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                });
                cs.lock().unwrap().push(task);
            }
        });
        Proxy {
            port,
            cut,
            conns,
            accept,
        }
    }

    /// The URL a node connects to.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Polls `f` every 10 ms until it is true or `limit` passes: how long it took.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
