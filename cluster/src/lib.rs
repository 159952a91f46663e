//! Roster across machines: one registry per node, names unique cluster-wide, lookups
//! still local.
//!
//! A [`Cluster`] joins a node's [`roster::Registry`] to an etcd cluster. A namespace is
//! either local (as always: each node has its own) or cluster-wide
//! ([`Cluster::namespace`]): a name in it is held by one process in the whole cluster.
//! etcd decides who: a registration is one etcd transaction that creates the name's key
//! only if it does not exist, attached to this node's lease. Every node follows etcd's
//! revision-ordered watch into its local registry, so [`Registry::lookup`],
//! `lookup_many` and `query` answer for remote entries through the same lock-free path
//! as for local ones, without a network round trip.
//!
//! ```no_run
//! # async fn demo() -> Result<(), roster_cluster::Error> {
//! use roster::{Key, Metadata, Node, Registry};
//! use roster_cluster::{Cluster, Config, Owner};
//!
//! let registry = Registry::new()?;
//! let cluster = Cluster::join(registry.clone(), Config::new(["http://127.0.0.1:2379"], Node(1))).await?;
//! let agents = cluster.namespace("agents")?;
//! let planner = registry.spawn();
//! cluster.register(&planner, &Key::new(agents, "planner"), &Metadata::new().capability("plan")).await?;
//!
//! // On any other node, after its watch has delivered the claim:
//! if let Some(entry) = registry.lookup(&Key::new(agents, "planner"))? {
//!     assert_eq!(entry.node(), Node(1));
//!     assert!(matches!(cluster.owner(&entry), Owner::Local(_) | Owner::Remote { .. }));
//! }
//! # Ok(()) }
//! ```
//!
//! # What a reader observes
//!
//! - **Registration is linearizable**: etcd's transaction decides; of concurrent claims
//!   of one name on any nodes exactly one returns `Ok`, the others
//!   [`Error::AlreadyRegistered`] naming the holder's node and pid.
//! - **A node reads its own writes**: when `register` returns `Ok`, the local registry
//!   has the entry.
//! - **Other nodes see it after their watch lag** ([`ClusterStats::watch_lag`]; the
//!   loadgen's `cluster` workload measures it). Each node applies etcd revisions in
//!   order, so no node sees a later state of a name before an earlier one.
//! - **Death**: a local process's death deletes its names in etcd (batched); a node's
//!   death is its lease running out, after which etcd deletes its names and every node
//!   drops them.
//! - **Fencing**: a node that cannot renew its lease releases all its cluster names
//!   locally (its processes stay alive) before the lease can expire, refuses cluster
//!   writes with [`Error::Fenced`], and rejoins when etcd answers again (see
//!   `session.rs` for the argument). Two live holders of one name never coexist.
//!
//! # Where it stops
//!
//! Every node holds a full replica of the cluster-wide namespaces, and every claim is
//! one etcd write: the cluster is bounded by etcd's write rate (thousands to tens of
//! thousands of transactions per second) and its watch fan-out to every node. See
//! `DESIGN.md` in the repository.

mod cluster;
mod codec;
mod config;
mod error;
mod replica;
mod session;

pub use cluster::{Cluster, ClusterStats, LeaseState};
pub use config::Config;
pub use error::{Error, Owner};

#[cfg(doc)]
use roster::Registry;
