//! How a node joins: where etcd is, who this node is, and the timing of its lease.

use std::time::Duration;

use roster::Node;

use crate::Error;

/// The settings of one node's membership, for [`Cluster::join`](crate::Cluster::join).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use roster::Node;
/// use roster_cluster::Config;
///
/// let config = Config::new(["http://127.0.0.1:2379"], Node(1))
///     .prefix("/my-app")
///     .lease_ttl(Duration::from_secs(5))
///     .timeout(Duration::from_secs(2));
/// assert_eq!(config.node(), Node(1));
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) endpoints: Vec<String>,
    pub(crate) node: Node,
    pub(crate) prefix: String,
    pub(crate) lease_ttl: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_txn_ops: usize,
    pub(crate) auto_rejoin: bool,
}

impl Config {
    /// A node `node` of the cluster whose etcd members answer at `endpoints`
    /// (`http://host:port`), with the defaults: prefix `/roster`, a 5 s lease, a 3 s
    /// timeout per etcd request, 128 operations per transaction (etcd's default
    /// `--max-txn-ops`), and automatic rejoin after fencing.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>, node: Node) -> Config {
        Config {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            node,
            prefix: "/roster".into(),
            lease_ttl: Duration::from_secs(5),
            timeout: Duration::from_secs(3),
            max_txn_ops: 128,
            auto_rejoin: true,
        }
    }

    /// The etcd key prefix every node of this cluster uses (no trailing `/`). Clusters
    /// with different prefixes share an etcd without seeing each other.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Config {
        self.prefix = prefix.into();
        self
    }

    /// The node's lease TTL (whole seconds, at least 2 s; etcd may raise it to its
    /// minimum). A node cut off from etcd fences itself before this runs out; a node
    /// that dies loses its names this long after its last keepalive.
    pub fn lease_ttl(mut self, ttl: Duration) -> Config {
        self.lease_ttl = ttl;
        self
    }

    /// How long any one etcd request may take before it fails as
    /// [`Error::Unreachable`].
    pub fn timeout(mut self, timeout: Duration) -> Config {
        self.timeout = timeout;
        self
    }

    /// Most operations in one etcd transaction (etcd's `--max-txn-ops`, 128 by default):
    /// batch forms split into transactions of this size.
    pub fn max_txn_ops(mut self, n: usize) -> Config {
        self.max_txn_ops = n;
        self
    }

    /// Whether a fenced node rejoins by itself once etcd answers again (default on). Off,
    /// it stays fenced until [`Cluster::rejoin`](crate::Cluster::rejoin).
    pub fn auto_rejoin(mut self, on: bool) -> Config {
        self.auto_rejoin = on;
        self
    }

    /// This node.
    pub fn node(&self) -> Node {
        self.node
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        let invalid = |why: &str| Err(Error::InvalidConfig(why.into()));
        if self.endpoints.is_empty() {
            return invalid("no etcd endpoint");
        }
        if self.lease_ttl < Duration::from_secs(2) {
            return invalid("lease TTL under 2 s");
        }
        if self.timeout.is_zero() || self.timeout >= self.lease_ttl {
            return invalid("request timeout must be above zero and below the lease TTL");
        }
        if self.prefix.is_empty() || !self.prefix.starts_with('/') || self.prefix.ends_with('/') {
            return invalid("prefix must start with '/' and not end with one");
        }
        if self.max_txn_ops == 0 {
            return invalid("max_txn_ops is 0");
        }
        Ok(())
    }
}
