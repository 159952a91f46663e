//! The cluster layer's errors: the local registry's, plus what etcd and fencing add.

use std::fmt;
use std::time::Duration;

use roster::{Node, Pid};

/// Who holds a name: a process of this node's registry, or one on another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A process of this node's registry.
    Local(Pid),
    /// A process on another node (or an earlier run of this one): its node and its pid
    /// there ([`Pid::as_u64`] on that node).
    Remote {
        /// The owner's node.
        node: Node,
        /// The owner's pid on its node.
        pid: u64,
    },
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Local(pid) => write!(f, "local pid {}", pid.as_u64()),
            Owner::Remote { node, pid } => write!(f, "pid {pid} on node {}", node.0),
        }
    }
}

/// An error of a cluster operation.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The name is held, on this node or another; nothing was written.
    AlreadyRegistered {
        /// The holder.
        owner: Owner,
    },
    /// The name is held by another process; only its owner may change it.
    NotOwner {
        /// The holder.
        owner: Owner,
    },
    /// No process holds the name.
    NotFound,
    /// This node lost (or never had) its etcd lease: its cluster registrations were
    /// released and cluster writes are refused until it has rejoined (see
    /// [`Cluster::rejoin`](crate::Cluster::rejoin)).
    Fenced,
    /// The node left the cluster ([`Cluster::leave`](crate::Cluster::leave)).
    Left,
    /// etcd did not answer within the configured timeout.
    Unreachable {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// How long we waited.
        timeout: Duration,
    },
    /// etcd answered with an error.
    Etcd(String),
    /// The local registry refused the operation (invalid key or metadata, quota, dead
    /// process, ...): nothing is claimed in etcd.
    Local(roster::Error),
    /// The configuration cannot work.
    InvalidConfig(String),
}

impl Error {
    pub(crate) fn etcd(e: etcd_client::Error) -> Error {
        Error::Etcd(e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AlreadyRegistered { owner } => write!(f, "name already registered by {owner}"),
            Error::NotOwner { owner } => write!(f, "name held by {owner}, not by this process"),
            Error::NotFound => f.write_str("no process holds this name"),
            Error::Fenced => f.write_str(
                "this node lost its etcd lease: its cluster names were released and cluster \
                 writes are refused until it rejoins",
            ),
            Error::Left => f.write_str("this node has left the cluster"),
            Error::Unreachable { endpoints, timeout } => write!(
                f,
                "etcd at {} did not answer within {timeout:?}",
                endpoints.join(", ")
            ),
            Error::Etcd(e) => write!(f, "etcd: {e}"),
            Error::Local(e) => write!(f, "local registry: {e:?}"),
            Error::InvalidConfig(why) => write!(f, "invalid cluster config: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<roster::Error> for Error {
    fn from(e: roster::Error) -> Error {
        Error::Local(e)
    }
}
