//! A small agent system on tokio, with Roster as its registry.
//!
//! - Agents are tasks with mpsc mailboxes. Each spawns a Roster process whose handle is
//!   its mailbox, and registers under a name with a capability.
//! - A router sends jobs by capability: it queries healthy holders of the capability,
//!   picks one round-robin and sends to the mailbox the registry hands back.
//! - Some agents crash (panic) on their third job. Their process guard dies with the task,
//!   so their entries vanish from queries at once; the router retries the job elsewhere.
//! - A watcher task logs the change feed: registrations and deaths.
//!
//! `cargo run -p roster --example agents`; `cargo test -p roster --example agents` runs
//! it as a test (CI does).

use std::collections::HashMap;
use std::time::Duration;

use roster::{
    ChangeKind, Health, Key, Metadata, Namespace, Query, Registry, Spawn, WatchFilter, Watched,
};
use tokio::sync::{mpsc, oneshot};

/// A unit of work and where to send its result.
struct Job {
    id: u64,
    text: String,
    done: oneshot::Sender<String>,
}

type Mailbox = mpsc::Sender<Job>;

const CAPABILITIES: [&str; 2] = ["summarize", "translate"];

/// One agent: registers, then serves its mailbox until it is closed or it crashes.
async fn agent(registry: Registry, ns: Namespace, name: String, capability: &str, crashes: bool) {
    let (tx, mut rx) = mpsc::channel::<Job>(16);
    // The guard lives in this task: when the task ends, or unwinds, the process dies.
    let process = registry.spawn_with(Spawn::new().handle::<Mailbox>(tx));
    let meta = Metadata::new()
        .capability(capability)
        .health(Health::Healthy)
        .attribute("name", name.as_str());
    registry
        .register_async(&process, &Key::new(ns, name.as_str()), &meta)
        .await
        .expect("register");
    // The registry keeps the mailbox; holding the registry here too would keep the
    // mailbox open forever. When the last handle goes, mailboxes close and agents end.
    drop(registry);
    let mut served = 0;
    while let Some(job) = rx.recv().await {
        served += 1;
        if crashes && served == 3 {
            panic!("{name} crashed on job {}", job.id);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let _ = job
            .done
            .send(format!("{name} did {capability} of {:?}", job.text));
    }
    drop(process);
}

/// Sends `job` to a healthy holder of `capability`, trying others if the chosen one has
/// died meanwhile. Returns the result.
async fn route(
    registry: &Registry,
    ns: Namespace,
    capability: &str,
    turn: &mut usize,
    id: u64,
    text: &str,
) -> String {
    let q = Query::new(ns)
        .capability(capability)
        .health(Health::Healthy);
    loop {
        let holders = registry.query(&q).expect("query");
        assert!(!holders.is_empty(), "nobody left for {capability}");
        *turn += 1;
        let pick = &holders[*turn % holders.len()];
        let Some(mailbox) = registry.handle::<Mailbox>(pick.pid()) else {
            continue; // died between the query and now
        };
        let (done, result) = oneshot::channel();
        let job = Job {
            id,
            text: text.to_string(),
            done,
        };
        if mailbox.send(job).await.is_err() {
            continue; // its task has ended
        }
        match result.await {
            Ok(r) => return r,
            Err(_) => continue, // it crashed on this job: send it elsewhere
        }
    }
}

/// The whole system; returns (jobs done, deaths the watcher saw).
pub async fn run() -> (usize, usize) {
    let registry = Registry::builder().shards(2).build().expect("registry");
    let ns = registry.namespace("agents").expect("namespace");

    // The watcher logs the feed until it has seen every registration and crash.
    let mut feed = registry.watch(WatchFilter::namespace(ns)).expect("watch");
    let agents = 6;
    let crashers = 2;
    let watcher = tokio::spawn(async move {
        let (mut registered, mut died) = (0, 0);
        while registered < agents || died < crashers {
            match feed.recv_async().await {
                Some(Watched::Change(c)) => {
                    println!("feed: {:?} {} ({})", c.kind, c.key.as_key(), c.pid);
                    match c.kind {
                        ChangeKind::Registered => registered += 1,
                        ChangeKind::Died => died += 1,
                        _ => {}
                    }
                }
                Some(Watched::Lagged(n)) => println!("feed: lagged, {n} changes lost"),
                None => break,
            }
        }
        died
    });

    let mut tasks = Vec::new();
    for i in 0..agents {
        let capability = CAPABILITIES[i % 2];
        // One crasher per capability, so each keeps a survivor.
        let crashes = i < crashers;
        let name = format!("{capability}-{i}");
        tasks.push(tokio::spawn(agent(
            registry.clone(),
            ns,
            name,
            capability,
            crashes,
        )));
    }
    for c in CAPABILITIES {
        let q = Query::new(ns).capability(c);
        while registry.query_count(&q).expect("query") < agents / 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    let mut turns: HashMap<&str, usize> = HashMap::new();
    let mut done = 0;
    for id in 0..40u64 {
        let capability = CAPABILITIES[id as usize % 2];
        let turn = turns.entry(capability).or_default();
        let result = route(&registry, ns, capability, turn, id, "hello").await;
        println!("job {id}: {result}");
        done += 1;
    }

    let died = watcher.await.expect("watcher");
    let crashed = {
        let mut n = 0;
        for t in tasks.drain(..crashers) {
            n += usize::from(t.await.is_err_and(|e| e.is_panic()));
        }
        n
    };
    assert_eq!(crashed, crashers, "the crashers crashed");
    println!(
        "{done} jobs done by {} agents; {died} crashed and vanished from the registry",
        agents - died
    );
    assert_eq!(registry.count(ns).unwrap(), agents - crashers);
    // Dropping the registry drops the mailboxes it holds: the survivors end cleanly.
    drop(registry);
    for t in tasks {
        t.await.expect("survivors end when the registry goes");
    }
    (done, died)
}

fn main() {
    // Crashes are expected here: report them in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("agent panic: {info}")));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime");
    let (done, died) = runtime.block_on(run());
    assert_eq!((done, died), (40, 2));
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_agent_system_routes_every_job_and_logs_the_crashes() {
        super::main();
    }
}
