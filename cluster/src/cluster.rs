//! The node: its handle, its state, and every write form.
//!
//! A write to a cluster-wide namespace goes to etcd first and to the local registry
//! second, so that etcd decides who holds a name (one serializable transaction per claim)
//! and the local registry only ever shows what etcd granted:
//!
//! - `register`: validate locally; claim in etcd (`create_revision == 0` → put, attached
//!   to the node's lease); record the claim; register locally. A local refusal after the
//!   claim (the process died meanwhile, a quota) releases the claim again.
//! - `unregister`: drop the local entry, then delete in etcd conditional on the claim's
//!   create revision (a release etcd could not take is retried by the lease loop).
//! - `update_metadata`: put in etcd conditional on the claim's create revision, then
//!   update locally.
//!
//! Fencing races every write: a write checks, after its local step, that the session it
//! claimed under is still live, and undoes its local step if not. The fence sets the
//! state before it takes the claims, so one of the two always removes the entry.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, PutOptions, Txn, TxnOp};
use roster::{Authority, Entry, Key, Metadata, Namespace, Node, OwnedKey, Pid, Registry};
use tokio::task::JoinHandle;

use crate::codec::{self, Claim};
use crate::replica::{RemoteOwner, Replica};
use crate::{Config, Error, Owner};

pub(crate) const LIVE: u8 = 0;
pub(crate) const FENCED: u8 = 1;
pub(crate) const LEFT: u8 = 2;

/// One node's membership in a cluster: a registry joined to etcd.
///
/// Cheap to clone (one `Arc`); every clone is the same node. Register, unregister and
/// update keys of cluster-wide namespaces through it; read through the registry as
/// always ([`Registry::lookup`], `lookup_many`, `query`): remote entries are in it,
/// owned by a local stand-in process per remote owner ([`Cluster::owner`] names the real
/// one). Writes to local namespaces pass straight to the registry.
///
/// Dropping the last handle stops the node's tasks without a goodbye (its names expire
/// with its lease); [`Cluster::leave`] releases them at once.
#[derive(Clone)]
pub struct Cluster {
    handle: Arc<Handle>,
}

/// Aborts the node's tasks when the last [`Cluster`] goes.
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Without a goodbye the lease runs out and other nodes may take these names: the
        // claimed entries go from the registry now, and so does the replica.
        let inner = &self.inner;
        inner.state.store(LEFT, Ordering::Release);
        inner.stop_tasks();
        let claims = std::mem::take(&mut lock(&inner.claims).by_key);
        for (authority, keys) in group_by_owner(claims.into_values()) {
            let keys: Vec<Key<'_>> = keys.iter().map(OwnedKey::as_key).collect();
            let _ = inner.internal.unregister_many(&authority, &keys);
        }
        if let Ok(mut replica) = inner.replica.try_lock() {
            replica.clear();
        }
    }
}

/// Claims grouped by owner, for one batch per process.
pub(crate) fn group_by_owner(
    claims: impl IntoIterator<Item = LocalClaim>,
) -> Vec<(Authority, Vec<OwnedKey>)> {
    let mut by_pid: HashMap<Pid, (Authority, Vec<OwnedKey>)> = HashMap::new();
    for c in claims {
        by_pid
            .entry(c.authority.pid())
            .or_insert_with(|| (c.authority.clone(), Vec::new()))
            .1
            .push(c.key);
    }
    by_pid.into_values().collect()
}

pub(crate) struct Inner {
    /// The runtime `join` ran on, which hosts every task of the node (so that methods
    /// called from outside it, like `namespace`, can start tasks too).
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) registry: Registry,
    /// The same registry without a write deadline, for the layer's own writes (undoing a
    /// step, fencing, applying the replica): they must happen, so they never time out.
    pub(crate) internal: Registry,
    pub(crate) config: Config,
    pub(crate) client: Client,
    /// The current session's lease id (0 before the first).
    pub(crate) lease: AtomicI64,
    /// The lease of the last session that ended (fenced, or failed to start): its
    /// keepalive stops.
    pub(crate) ended_lease: AtomicI64,
    /// [`LIVE`], [`FENCED`] or [`LEFT`].
    pub(crate) state: AtomicU8,
    /// Cluster-wide namespaces, by namespace, with their names.
    pub(crate) namespaces: RwLock<HashMap<Namespace, Arc<str>>>,
    pub(crate) claims: Mutex<Claims>,
    pub(crate) replica: tokio::sync::Mutex<Replica>,
    /// Releases etcd did not take (unreachable): retried by the sweeper.
    pub(crate) orphans: Mutex<Vec<(Vec<u8>, i64)>>,
    /// Keys with a claim on its way to etcd.
    /// (Counted: two claims of one key may be out at once.)
    pub(crate) in_flight: Mutex<HashMap<Vec<u8>, usize>>,
    /// Keys etcd may hold under this node's lease with no record here (a claim whose
    /// answer timed out or whose caller gave up): the sweeper checks and deletes them.
    pub(crate) suspects: Mutex<Vec<Vec<u8>>>,
    /// Own writes not yet seen on the watch: (revision, when etcd answered).
    pub(crate) unseen: Mutex<VecDeque<(i64, Instant)>>,
    pub(crate) counters: Counters,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The current session's watch, which fencing stops first.
    pub(crate) watch_task: Mutex<Option<JoinHandle<()>>>,
    /// Serializes fencing, rejoining and leaving.
    pub(crate) session_lock: tokio::sync::Mutex<()>,
}

/// This node's claims: names its own processes hold in etcd.
#[derive(Default)]
pub(crate) struct Claims {
    pub(crate) by_key: HashMap<Vec<u8>, LocalClaim>,
    pub(crate) by_pid: HashMap<Pid, HashSet<Vec<u8>>>,
    /// Processes whose death a task watches for.
    pub(crate) monitored: HashSet<Pid>,
}

pub(crate) struct LocalClaim {
    pub(crate) authority: Authority,
    pub(crate) key: OwnedKey,
    /// The etcd create revision of the claim: releases and updates are conditional on it.
    pub(crate) create_rev: i64,
}

/// A claim on its way to etcd: registered in `in_flight` while it lasts. Dropped before
/// [`InFlight::settled`] (the etcd answer timed out, or the caller dropped the future),
/// it leaves the key to the sweeper, which deletes it if etcd did commit the claim.
pub(crate) struct InFlight<'a> {
    inner: &'a Inner,
    key: Vec<u8>,
    settled: bool,
}

impl<'a> InFlight<'a> {
    pub(crate) fn new(inner: &'a Inner, key: &[u8]) -> InFlight<'a> {
        *lock(&inner.in_flight).entry(key.to_vec()).or_default() += 1;
        InFlight {
            inner,
            key: key.to_vec(),
            settled: false,
        }
    }

    /// The claim's outcome is known and recorded (or nothing was committed).
    pub(crate) fn settled(mut self) {
        self.settled = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut in_flight = lock(&self.inner.in_flight);
        if let Some(n) = in_flight.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.key);
            }
        }
        drop(in_flight);
        if !self.settled {
            lock(&self.inner.suspects).push(std::mem::take(&mut self.key));
        }
    }
}

impl Claims {
    pub(crate) fn insert(&mut self, etcd_key: Vec<u8>, claim: LocalClaim) {
        self.by_pid
            .entry(claim.authority.pid())
            .or_default()
            .insert(etcd_key.clone());
        self.by_key.insert(etcd_key, claim);
    }

    /// Removes the record of the claim on `etcd_key` made at `create_rev` (not a newer
    /// one of the same key).
    pub(crate) fn remove_if(&mut self, etcd_key: &[u8], create_rev: i64) -> Option<LocalClaim> {
        if self.by_key.get(etcd_key)?.create_rev != create_rev {
            return None;
        }
        self.remove(etcd_key)
    }

    pub(crate) fn remove(&mut self, etcd_key: &[u8]) -> Option<LocalClaim> {
        let claim = self.by_key.remove(etcd_key)?;
        let pid = claim.authority.pid();
        if let Some(keys) = self.by_pid.get_mut(&pid) {
            keys.remove(etcd_key);
            if keys.is_empty() {
                self.by_pid.remove(&pid);
            }
        }
        Some(claim)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) applied_revision: AtomicI64,
    pub(crate) etcd_revision: AtomicI64,
    pub(crate) pending_claims: AtomicU64,
    pub(crate) watch_lag_last_ns: AtomicU64,
    pub(crate) watch_lag_max_ns: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) resyncs: AtomicU64,
    pub(crate) fences: AtomicU64,
    pub(crate) late_fences: AtomicU64,
    pub(crate) fence_margin_ns: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    /// When the lease runs out at the earliest, in ns after `epoch`.
    pub(crate) lease_deadline_ns: AtomicU64,
    pub(crate) lease_ttl_ms: AtomicU64,
}

/// The state of a node's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Held: cluster writes are accepted.
    Live {
        /// The etcd lease id.
        id: i64,
        /// Its TTL, as etcd granted it.
        ttl: Duration,
        /// Until the lease could run out without another keepalive.
        expires_in: Duration,
    },
    /// Lost: cluster names were released; writes are refused until the node rejoins.
    Fenced,
    /// The node left the cluster.
    Left,
}

/// What a node's cluster layer is doing, from [`Cluster::stats`].
#[derive(Clone, Debug)]
pub struct ClusterStats {
    /// This node.
    pub node: Node,
    /// Its lease.
    pub lease: LeaseState,
    /// The last etcd revision applied to the local replica.
    pub applied_revision: i64,
    /// The newest etcd revision this node has heard of (from any response).
    pub etcd_revision: i64,
    /// Claims sent to etcd and not yet answered.
    pub pending_claims: u64,
    /// Names this node's processes hold.
    pub local_claims: usize,
    /// Entries of other owners in the local replica.
    pub remote_entries: usize,
    /// From etcd's answer to one of this node's writes until the watch delivered it:
    /// the latest such lag, and the largest.
    pub watch_lag: Option<Duration>,
    /// The largest watch lag seen.
    pub watch_lag_max: Duration,
    /// Watch streams re-opened after an error.
    pub reconnects: u64,
    /// Full re-syncs from a snapshot (at join, after a compaction, after a rejoin).
    pub resyncs: u64,
    /// Times this node fenced itself.
    pub fences: u64,
    /// How long before its lease could have expired the last fence had removed this
    /// node's claims (`None` before the first fence).
    pub fence_margin: Option<Duration>,
    /// Fences that completed after the lease could have expired (the node's tasks were
    /// held past the fifth-of-a-TTL margin): zero unless the machine is overloaded.
    pub late_fences: u64,
    /// Remote claims the replica could not apply because a local process held the key
    /// outside the cluster layer (registered straight through the registry).
    pub conflicts: u64,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn since_epoch(t: Instant) -> u64 {
    t.saturating_duration_since(epoch()).as_nanos() as u64
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// `f`, failing as [`Error::Unreachable`] past the configured timeout.
    pub(crate) async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.config.timeout, f).await {
            Ok(r) => r.map_err(Error::etcd),
            Err(_) => Err(Error::Unreachable {
                endpoints: self.config.endpoints.clone(),
                timeout: self.config.timeout,
            }),
        }
    }

    pub(crate) fn seen_revision(&self, rev: i64) {
        self.counters
            .etcd_revision
            .fetch_max(rev, Ordering::Relaxed);
    }

    fn check_live(&self) -> Result<i64, Error> {
        match self.state.load(Ordering::Acquire) {
            LIVE => Ok(self.lease.load(Ordering::Acquire)),
            FENCED => Err(Error::Fenced),
            _ => Err(Error::Left),
        }
    }

    /// The error for a node that is not live.
    pub(crate) fn stopped(&self) -> Error {
        match self.state.load(Ordering::Acquire) {
            LEFT => Error::Left,
            _ => Error::Fenced,
        }
    }

    /// Records the claim etcd granted at `create_rev` under `lease`, and watches its
    /// owner's death: `false` (nothing recorded) if that session has ended, which a
    /// fence decides before it takes the records, under the same lock.
    pub(crate) fn record(
        self: &Arc<Self>,
        etcd_key: &[u8],
        owner: &Authority,
        key: &Key<'_>,
        create_rev: i64,
        lease: i64,
    ) -> bool {
        let mut claims = lock(&self.claims);
        if !self.still_live(lease) {
            return false;
        }
        claims.insert(
            etcd_key.to_vec(),
            LocalClaim {
                authority: owner.clone(),
                key: OwnedKey::from(*key),
                create_rev,
            },
        );
        self.monitor(&mut claims, owner.pid());
        true
    }

    /// Whether the session that granted `lease` still holds.
    pub(crate) fn still_live(&self, lease: i64) -> bool {
        self.state.load(Ordering::Acquire) == LIVE && self.lease.load(Ordering::Acquire) == lease
    }

    /// The name of `ns` if it is cluster-wide.
    fn cluster_namespace(&self, ns: Namespace) -> Option<Arc<str>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ns)
            .cloned()
    }

    pub(crate) fn stop_tasks(&self) {
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        if let Some(w) = lock(&self.watch_task).take() {
            w.abort();
        }
    }

    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = self.runtime.spawn(task);
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Records an own write etcd answered at `rev`, for the watch-lag measurement.
    pub(crate) fn sent(&self, rev: i64) {
        let mut unseen = lock(&self.unseen);
        if self.counters.applied_revision.load(Ordering::Relaxed) >= rev {
            // The watch delivered it before etcd's answer reached us.
            self.record_lag(0);
            return;
        }
        if unseen.len() >= 4096 {
            unseen.pop_front();
        }
        unseen.push_back((rev, Instant::now()));
    }

    /// The watch delivered revisions up to `rev` (already stored as applied): settles
    /// the lag of own writes.
    pub(crate) fn delivered(&self, rev: i64) {
        let now = Instant::now();
        let mut unseen = lock(&self.unseen);
        while let Some(&(r, at)) = unseen.front() {
            if r > rev {
                break;
            }
            unseen.pop_front();
            self.record_lag(now.saturating_duration_since(at).as_nanos() as u64);
        }
    }

    fn record_lag(&self, ns: u64) {
        let c = &self.counters;
        c.watch_lag_last_ns.store(ns.max(1), Ordering::Relaxed);
        c.watch_lag_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Claims `etcd_key` for `claim` under `lease`: `Ok(create revision)`, or who holds
    /// it.
    async fn claim(&self, etcd_key: &[u8], claim: &Claim, lease: i64) -> Result<i64, Error> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                etcd_key.to_vec(),
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put(
                etcd_key.to_vec(),
                claim.to_bytes(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(etcd_key.to_vec(), None)]);
        self.counters.pending_claims.fetch_add(1, Ordering::Relaxed);
        let mut client = self.client.clone();
        let resp = self.timed(client.txn(txn)).await;
        self.counters.pending_claims.fetch_sub(1, Ordering::Relaxed);
        let resp = resp?;
        let rev = resp.header().map_or(0, |h| h.revision());
        self.seen_revision(rev);
        if resp.succeeded() {
            self.sent(rev);
            return Ok(rev);
        }
        Err(Error::AlreadyRegistered {
            owner: holder(&resp),
        })
    }

    /// Deletes `etcd_key` if its create revision is still `create_rev`; an unreachable
    /// etcd leaves it to the lease loop.
    pub(crate) async fn release(&self, etcd_key: Vec<u8>, create_rev: i64) {
        if self
            .release_batch(&[(etcd_key.clone(), create_rev)])
            .await
            .is_err()
        {
            lock(&self.orphans).push((etcd_key, create_rev));
        }
    }

    /// Deletes many claims, `max_txn_ops` per transaction, each conditional on its
    /// create revision; a transaction whose compares fail (some claim changed meanwhile)
    /// is retried key by key.
    pub(crate) async fn release_batch(&self, claims: &[(Vec<u8>, i64)]) -> Result<(), Error> {
        for chunk in claims.chunks(self.config.max_txn_ops) {
            let txn = Txn::new()
                .when(
                    chunk
                        .iter()
                        .map(|(k, rev)| Compare::create_revision(k.clone(), CompareOp::Equal, *rev))
                        .collect::<Vec<_>>(),
                )
                .and_then(
                    chunk
                        .iter()
                        .map(|(k, _)| TxnOp::delete(k.clone(), None))
                        .collect::<Vec<_>>(),
                );
            let mut client = self.client.clone();
            let resp = self.timed(client.txn(txn)).await?;
            self.seen_revision(resp.header().map_or(0, |h| h.revision()));
            if !resp.succeeded() && chunk.len() > 1 {
                for (k, rev) in chunk {
                    let txn = Txn::new()
                        .when([Compare::create_revision(k.clone(), CompareOp::Equal, *rev)])
                        .and_then([TxnOp::delete(k.clone(), None)]);
                    let mut client = self.client.clone();
                    self.timed(client.txn(txn)).await?;
                }
            }
        }
        Ok(())
    }

    /// Starts watching `pid`'s death once: its claims are released when it dies.
    fn monitor(self: &Arc<Self>, claims: &mut Claims, pid: Pid) {
        if !claims.monitored.insert(pid) {
            return;
        }
        let monitor = self.registry.monitor(pid);
        let inner = Arc::downgrade(self);
        self.spawn(async move {
            monitor.await;
            let Some(inner) = inner.upgrade() else { return };
            let released: Vec<(Vec<u8>, i64)> = {
                let mut claims = lock(&inner.claims);
                claims.monitored.remove(&pid);
                let keys = claims.by_pid.remove(&pid).unwrap_or_default();
                // Records of this pid only: `by_pid` holds no other.
                keys.into_iter()
                    .filter_map(|k| {
                        let c = claims.by_key.remove(&k)?;
                        Some((k, c.create_rev))
                    })
                    .collect()
            };
            if !released.is_empty() && inner.release_batch(&released).await.is_err() {
                lock(&inner.orphans).extend(released);
            }
        });
    }

    /// Registers a claimed entry locally; a stand-in still holding the key from before
    /// etcd granted it to us (a delete the watch has not delivered yet) gives way.
    async fn register_local(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        meta: &Metadata,
        etcd_key: &[u8],
    ) -> Result<(), roster::Error> {
        match self.registry.register_async(owner, key, meta).await {
            Err(e) if matches!(e.kind(), roster::ErrorKind::AlreadyRegistered { .. }) => {
                // Under the replica's lock: either the stand-in still holds the key and
                // gives way, or the watch removed it while we waited for the lock. Both
                // leave it free unless a local process holds it.
                let mut replica = self.replica.lock().await;
                replica.evict(&self.internal, etcd_key).await;
                drop(replica);
                self.registry.register_async(owner, key, meta).await
            }
            r => r,
        }
    }
}

/// Who holds the key, from the `get` of a failed claim (as etcd names it: a process of
/// this node shows as `Remote` with this node's id until [`Cluster::local_owner`]).
fn holder(resp: &etcd_client::TxnResponse) -> Owner {
    for op in resp.op_responses() {
        if let etcd_client::TxnOpResponse::Get(get) = op {
            if let Some(c) = get
                .kvs()
                .first()
                .and_then(|kv| Claim::from_bytes(kv.value()))
            {
                return Owner::Remote {
                    node: Node(c.node),
                    pid: c.pid,
                };
            }
        }
    }
    // Deleted between the compare and the get, or not a claim: held by nobody known.
    Owner::Remote {
        node: Node(u32::MAX),
        pid: 0,
    }
}

impl Cluster {
    /// Joins `registry` to the cluster `config` describes: connects to etcd, takes a
    /// lease for this node and keeps it alive, loads every cluster entry into the local
    /// registry (a snapshot) and follows changes from that revision on (a watch). Must
    /// run inside a tokio runtime, which hosts the node's tasks.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`]; [`Error::Unreachable`] when etcd does not answer within
    /// the configured timeout; [`Error::Etcd`] when it refuses.
    pub async fn join(registry: Registry, config: Config) -> Result<Cluster, Error> {
        config.check()?;
        let options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout);
        let connect = Client::connect(config.endpoints.clone(), Some(options));
        let client = match tokio::time::timeout(config.timeout, connect).await {
            Ok(c) => c.map_err(Error::etcd)?,
            Err(_) => {
                return Err(Error::Unreachable {
                    endpoints: config.endpoints.clone(),
                    timeout: config.timeout,
                })
            }
        };
        let internal = registry
            .with_deadline(Duration::MAX)
            .map_err(Error::Local)?;
        let inner = Arc::new(Inner {
            runtime: tokio::runtime::Handle::current(),
            registry,
            internal,
            config,
            client,
            lease: AtomicI64::new(0),
            ended_lease: AtomicI64::new(0),
            state: AtomicU8::new(FENCED),
            namespaces: RwLock::default(),
            claims: Mutex::default(),
            replica: tokio::sync::Mutex::new(Replica::default()),
            orphans: Mutex::default(),
            in_flight: Mutex::default(),
            suspects: Mutex::default(),
            unseen: Mutex::default(),
            counters: Counters::default(),
            tasks: Mutex::default(),
            watch_task: Mutex::default(),
            session_lock: tokio::sync::Mutex::new(()),
        });
        // In a task of its own: a caller who gives up mid-join (a timeout around it)
        // cannot leave a half-started session; one that finishes unwanted leaves again.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let starting = inner.clone();
        tokio::spawn(async move {
            let r = crate::session::start(&starting).await;
            if let Err(Ok(())) = tx.send(r) {
                let _ = crate::session::leave(&starting).await;
            }
        });
        rx.await.unwrap_or(Err(Error::Left))?;
        Ok(Cluster {
            handle: Arc::new(Handle { inner }),
        })
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// The joined registry: read remote and local entries through it.
    pub fn registry(&self) -> &Registry {
        &self.inner().registry
    }

    /// This node.
    pub fn node(&self) -> Node {
        self.inner().config.node
    }

    /// The cluster-wide namespace called `name` (created in the local registry on first
    /// use): its names are unique across every node of the cluster. A namespace of the
    /// same name that remote entries arrive in becomes cluster-wide by itself.
    ///
    /// # Errors
    ///
    /// As [`Registry::namespace`].
    pub fn namespace(&self, name: &str) -> Result<Namespace, Error> {
        let inner = self.inner();
        let ns = inner.registry.namespace(name)?;
        if mark_cluster_wide(inner, ns, name) {
            // The marker lets nodes that join later know the namespace from the start.
            let marker = codec::namespace_key(&inner.config.prefix, name);
            let inner = inner.clone();
            inner.runtime.clone().spawn(async move {
                while inner.state.load(Ordering::Acquire) != LEFT {
                    let mut client = inner.client.clone();
                    if inner
                        .timed(client.put(marker.clone(), "", None))
                        .await
                        .is_ok()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
        Ok(ns)
    }

    /// Registers `key` for the process `owner` is over. In a cluster-wide namespace the
    /// name is claimed in etcd first: of concurrent claims on any nodes exactly one
    /// wins. When this returns `Ok` the entry is in the local registry (this node reads
    /// its own writes) and in etcd; other nodes see it after their watch delivers it.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyRegistered`] naming the holder (local or remote);
    /// [`Error::Fenced`], [`Error::Left`]; [`Error::Unreachable`]; [`Error::Local`] for
    /// what the registry refuses (nothing stays claimed then).
    pub async fn register(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        let (this, owner, key, meta) = (
            self.clone(),
            owner.clone(),
            OwnedKey::from(*key),
            metadata.clone(),
        );
        detached(&self.inner().runtime.clone(), async move {
            let r = this.register_now(&owner, &key.as_key(), &meta).await;
            (r, move |r: Result<(), Error>| async move {
                if r.is_ok() {
                    this.undo_registration(&owner, &key.as_key()).await;
                }
            })
        })
        .await
    }

    async fn register_now(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        let inner = self.inner();
        let Some(ns_name) = inner.cluster_namespace(key.namespace()) else {
            return Ok(inner.registry.register_async(owner, key, metadata).await?);
        };
        inner.registry.validate(key, metadata)?;
        let lease = inner.check_live()?;
        let pid = owner.pid();
        let meta = metadata.clone().node(inner.config.node);
        let etcd_key = codec::claim_key(&inner.config.prefix, &ns_name, key);
        if let Some(c) = lock(&inner.claims).by_key.get(&etcd_key) {
            return Err(Error::AlreadyRegistered {
                owner: Owner::Local(c.authority.pid()),
            });
        }
        let claim = Claim::new(inner.config.node, pid.as_u64(), &meta);
        let flight = InFlight::new(inner, &etcd_key);
        let create_rev = match inner.claim(&etcd_key, &claim, lease).await {
            Ok(rev) => rev,
            Err(Error::AlreadyRegistered { owner }) => {
                flight.settled();
                return Err(Error::AlreadyRegistered {
                    owner: self.local_owner(owner),
                });
            }
            Err(e @ Error::Etcd(_)) => {
                flight.settled();
                return Err(e);
            }
            // Unreachable: etcd may have committed it; the sweeper finds out.
            Err(e) => return Err(e),
        };
        if !inner.record(&etcd_key, owner, key, create_rev, lease) {
            // Fenced (or left) while etcd answered: the claim dies with that lease.
            flight.settled();
            return Err(inner.stopped());
        }
        flight.settled();
        if let Err(e) = inner.register_local(owner, key, &meta, &etcd_key).await {
            lock(&inner.claims).remove_if(&etcd_key, create_rev);
            inner.release(etcd_key, create_rev).await;
            return Err(e.into());
        }
        if !inner.still_live(lease) {
            // Fenced while we registered: the fence may have run before our entry
            // existed, so take it out ourselves.
            let _ = inner.internal.unregister_async(owner, key).await;
            lock(&inner.claims).remove_if(&etcd_key, create_rev);
            return Err(inner.stopped());
        }
        Ok(())
    }

    /// Registers many keys for `owner`'s process: claims travel `max_txn_ops` to an
    /// etcd transaction, and the local registrations as one batch. Each item gets its
    /// own result, in order.
    ///
    /// # Errors
    ///
    /// The outer error is for the whole call ([`Error::Fenced`], [`Error::Left`]);
    /// items fail as [`Cluster::register`] does.
    pub async fn register_many(
        &self,
        owner: &Authority,
        items: &[(Key<'_>, Metadata)],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let (this, owner) = (self.clone(), owner.clone());
        let items: Vec<(OwnedKey, Metadata)> = items
            .iter()
            .map(|(k, m)| (OwnedKey::from(*k), m.clone()))
            .collect();
        detached(&self.inner().runtime.clone(), async move {
            let borrowed: Vec<(Key<'_>, Metadata)> =
                items.iter().map(|(k, m)| (k.as_key(), m.clone())).collect();
            let r = this.register_many_now(&owner, &borrowed).await;
            drop(borrowed);
            (
                r,
                move |r: Result<Vec<Result<(), Error>>, Error>| async move {
                    for ((k, _), r) in items.iter().zip(r.into_iter().flatten()) {
                        if r.is_ok() {
                            this.undo_registration(&owner, &k.as_key()).await;
                        }
                    }
                },
            )
        })
        .await
    }

    async fn register_many_now(
        &self,
        owner: &Authority,
        items: &[(Key<'_>, Metadata)],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let inner = self.inner();
        let lease = inner.check_live()?;
        let pid = owner.pid();
        let mut results: Vec<Option<Result<(), Error>>> = vec![None; items.len()];
        // Claims to make: (item index, etcd key, claim, local metadata).
        let mut todo = Vec::new();
        let mut seen = HashSet::new();
        for (i, (key, meta)) in items.iter().enumerate() {
            let Some(ns_name) = inner.cluster_namespace(key.namespace()) else {
                let r = inner.registry.register_async(owner, key, meta).await;
                results[i] = Some(r.map_err(Error::from));
                continue;
            };
            if let Err(e) = inner.registry.validate(key, meta) {
                results[i] = Some(Err(e.into()));
                continue;
            }
            let etcd_key = codec::claim_key(&inner.config.prefix, &ns_name, key);
            if !seen.insert(etcd_key.clone()) {
                // etcd refuses a transaction naming a key twice: the repeat fails alone.
                results[i] = Some(Err(Error::AlreadyRegistered {
                    owner: Owner::Local(pid),
                }));
                continue;
            }
            let meta = meta.clone().node(inner.config.node);
            let claim = Claim::new(inner.config.node, pid.as_u64(), &meta);
            todo.push((i, etcd_key, claim, meta));
        }
        // Claim in transactions of `max_txn_ops`, each creating all its keys or none; a
        // transaction that loses a compare leaves its items to `register`, one by one,
        // which says which were taken.
        let mut won = Vec::new();
        for chunk in todo.chunks(inner.config.max_txn_ops) {
            let flights: Vec<InFlight<'_>> = chunk
                .iter()
                .map(|(_, k, _, _)| InFlight::new(inner, k))
                .collect();
            let txn = Txn::new()
                .when(
                    chunk
                        .iter()
                        .map(|(_, k, _, _)| {
                            Compare::create_revision(k.clone(), CompareOp::Equal, 0)
                        })
                        .collect::<Vec<_>>(),
                )
                .and_then(
                    chunk
                        .iter()
                        .map(|(_, k, c, _)| {
                            let put = PutOptions::new().with_lease(lease);
                            TxnOp::put(k.clone(), c.to_bytes(), Some(put))
                        })
                        .collect::<Vec<_>>(),
                );
            let counters = &inner.counters;
            counters.pending_claims.fetch_add(1, Ordering::Relaxed);
            let mut client = inner.client.clone();
            let resp = inner.timed(client.txn(txn)).await;
            counters.pending_claims.fetch_sub(1, Ordering::Relaxed);
            match resp {
                Ok(resp) if resp.succeeded() => {
                    let rev = resp.header().map_or(0, |h| h.revision());
                    inner.seen_revision(rev);
                    inner.sent(rev);
                    for (i, k, _, m) in chunk {
                        if inner.record(k, owner, &items[*i].0, rev, lease) {
                            won.push((*i, k.clone(), m, rev));
                        } else {
                            results[*i] = Some(Err(inner.stopped()));
                        }
                    }
                    flights.into_iter().for_each(InFlight::settled);
                }
                Ok(_) => {
                    flights.into_iter().for_each(InFlight::settled);
                    for (i, _, _, _) in chunk {
                        let (key, meta) = &items[*i];
                        results[*i] = Some(self.register_now(owner, key, meta).await);
                    }
                }
                Err(e) => {
                    // Unreachable or refused: none of the chunk is recorded; if etcd did
                    // commit it, the sweeper (through the dropped flights) deletes it.
                    if matches!(e, Error::Etcd(_)) {
                        flights.into_iter().for_each(InFlight::settled);
                    }
                    for (i, _, _, _) in chunk {
                        results[*i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        // The won claims, registered locally as one batch.
        let local = inner
            .registry
            .register_many_async(owner, won.iter().map(|(i, _, m, _)| (items[*i].0, *m)))
            .await;
        let mut release = Vec::new();
        for (n, (i, etcd_key, meta, rev)) in won.iter().enumerate() {
            let r = match &local {
                Ok(local) => match &local[n] {
                    Err(e) if matches!(e.kind(), roster::ErrorKind::AlreadyRegistered { .. }) => {
                        inner
                            .register_local(owner, &items[*i].0, meta, etcd_key)
                            .await
                    }
                    r => r.clone(),
                },
                Err(e) => Err(e.clone()),
            };
            results[*i] = Some(match r {
                Ok(()) => Ok(()),
                Err(e) => {
                    lock(&inner.claims).remove_if(etcd_key, *rev);
                    release.push((etcd_key.clone(), *rev));
                    Err(e.into())
                }
            });
        }
        if !release.is_empty() && inner.release_batch(&release).await.is_err() {
            lock(&inner.orphans).extend(release);
        }
        if !inner.still_live(lease) {
            for (i, etcd_key, _, rev) in &won {
                if results[*i] == Some(Ok(())) {
                    let _ = inner.internal.unregister_async(owner, &items[*i].0).await;
                    lock(&inner.claims).remove_if(etcd_key, *rev);
                    results[*i] = Some(Err(inner.stopped()));
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(inner.stopped())))
            .collect())
    }

    /// Unregisters `key`, which `owner`'s process must hold: the local entry goes at
    /// once, the etcd claim right after.
    ///
    /// # Errors
    ///
    /// [`Error::NotOwner`] naming the holder, [`Error::NotFound`], [`Error::Fenced`],
    /// [`Error::Left`], [`Error::Local`].
    pub async fn unregister(&self, owner: &Authority, key: &Key<'_>) -> Result<(), Error> {
        let (this, owner, key) = (self.clone(), owner.clone(), OwnedKey::from(*key));
        detached(&self.inner().runtime.clone(), async move {
            let r = this.unregister_now(&owner, &key.as_key()).await;
            (r, |_| async {})
        })
        .await
    }

    /// Takes back a registration of `owner`'s that its caller no longer waits for: with
    /// no deadline, and only the claim `owner` holds.
    async fn undo_registration(&self, owner: &Authority, key: &Key<'_>) {
        let inner = self.inner();
        let Some(ns_name) = inner.cluster_namespace(key.namespace()) else {
            let _ = inner.internal.unregister_async(owner, key).await;
            return;
        };
        let etcd_key = codec::claim_key(&inner.config.prefix, &ns_name, key);
        let rev = match lock(&inner.claims).by_key.get(&etcd_key) {
            Some(c) if c.authority.pid() == owner.pid() => c.create_rev,
            _ => return,
        };
        let _ = inner.internal.unregister_async(owner, key).await;
        if lock(&inner.claims).remove_if(&etcd_key, rev).is_some() {
            inner.release(etcd_key, rev).await;
        }
    }

    async fn unregister_now(&self, owner: &Authority, key: &Key<'_>) -> Result<(), Error> {
        let inner = self.inner();
        let Some(ns_name) = inner.cluster_namespace(key.namespace()) else {
            return Ok(inner.registry.unregister_async(owner, key).await?);
        };
        inner.check_live()?;
        let etcd_key = codec::claim_key(&inner.config.prefix, &ns_name, key);
        let create_rev = self.owned_claim(owner, key, &etcd_key).await?;
        // Locally first (a timeout leaves both the entry and its record, to retry), then
        // the record, then etcd.
        match inner.registry.unregister_async(owner, key).await {
            Ok(()) => {}
            Err(e) if e.kind() == &roster::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        lock(&inner.claims).remove_if(&etcd_key, create_rev);
        inner.release(etcd_key, create_rev).await;
        Ok(())
    }

    /// Replaces the metadata of `key`, which `owner`'s process must hold: in etcd first
    /// (conditional on the claim), then locally.
    ///
    /// # Errors
    ///
    /// As [`Cluster::unregister`]; [`Error::Unreachable`].
    pub async fn update_metadata(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        let (this, owner, key, meta) = (
            self.clone(),
            owner.clone(),
            OwnedKey::from(*key),
            metadata.clone(),
        );
        detached(&self.inner().runtime.clone(), async move {
            let r = this.update_now(&owner, &key.as_key(), &meta).await;
            (r, |_| async {})
        })
        .await
    }

    async fn update_now(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        let inner = self.inner();
        let Some(ns_name) = inner.cluster_namespace(key.namespace()) else {
            return Ok(inner
                .registry
                .update_metadata_async(owner, key, metadata)
                .await?);
        };
        inner.registry.validate(key, metadata)?;
        let lease = inner.check_live()?;
        let etcd_key = codec::claim_key(&inner.config.prefix, &ns_name, key);
        let create_rev = self.owned_claim(owner, key, &etcd_key).await?;
        let meta = metadata.clone().node(inner.config.node);
        let claim = Claim::new(inner.config.node, owner.pid().as_u64(), &meta);
        let txn = Txn::new()
            .when([Compare::create_revision(
                etcd_key.clone(),
                CompareOp::Equal,
                create_rev,
            )])
            .and_then([TxnOp::put(
                etcd_key.clone(),
                claim.to_bytes(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let mut client = inner.client.clone();
        let resp = inner.timed(client.txn(txn)).await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        inner.seen_revision(rev);
        if !resp.succeeded() {
            // The claim is gone from etcd (expired, deleted by an operator): so is the
            // name, here too (unless a newer claim of ours has it).
            if lock(&inner.claims)
                .remove_if(&etcd_key, create_rev)
                .is_some()
            {
                let _ = inner.internal.unregister_async(owner, key).await;
            }
            return Err(Error::NotFound);
        }
        inner.sent(rev);
        // etcd has the new metadata: the local entry must follow, whatever it takes.
        inner
            .internal
            .update_metadata_async(owner, key, &meta)
            .await?;
        Ok(())
    }

    /// The create revision of `owner`'s claim on `etcd_key`, or who else holds it.
    async fn owned_claim(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        etcd_key: &[u8],
    ) -> Result<i64, Error> {
        let inner = self.inner();
        if let Some(c) = lock(&inner.claims).by_key.get(etcd_key) {
            if c.authority.pid() == owner.pid() {
                return Ok(c.create_rev);
            }
            return Err(Error::NotOwner {
                owner: Owner::Local(c.authority.pid()),
            });
        }
        if let Some(remote) = inner.replica.lock().await.owner_of(etcd_key) {
            return Err(Error::NotOwner {
                owner: Owner::Remote {
                    node: remote.node,
                    pid: remote.pid,
                },
            });
        }
        match inner.registry.lookup(key)? {
            Some(e) if e.pid() != owner.pid() => Err(Error::NotOwner {
                owner: Owner::Local(e.pid()),
            }),
            _ => Err(Error::NotFound),
        }
    }

    /// Who holds the entry `entry` (as read from the registry): a local process, or the
    /// remote process a local stand-in holds it for.
    pub fn owner(&self, entry: &Entry) -> Owner {
        self.owner_of_pid(entry.pid())
    }

    fn owner_of_pid(&self, pid: Pid) -> Owner {
        match self.inner().registry.handle::<RemoteOwner>(pid) {
            Some(r) => Owner::Remote {
                node: r.node,
                pid: r.pid,
            },
            None => Owner::Local(pid),
        }
    }

    /// An owner etcd named, as this node knows it: one of its own processes shows as
    /// `Local`.
    fn local_owner(&self, owner: Owner) -> Owner {
        match owner {
            Owner::Remote { node, pid } if node == self.node() => {
                let claims = lock(&self.inner().claims);
                claims
                    .by_pid
                    .keys()
                    .find(|p| p.as_u64() == pid)
                    .map_or(owner, |p| Owner::Local(*p))
            }
            o => o,
        }
    }

    /// The cluster layer's state and counters.
    pub fn stats(&self) -> ClusterStats {
        let inner = self.inner();
        let c = &inner.counters;
        let lease = match inner.state.load(Ordering::Acquire) {
            LIVE => {
                let deadline = c.lease_deadline_ns.load(Ordering::Relaxed);
                let now = since_epoch(Instant::now());
                LeaseState::Live {
                    id: inner.lease.load(Ordering::Acquire),
                    ttl: Duration::from_millis(c.lease_ttl_ms.load(Ordering::Relaxed)),
                    expires_in: Duration::from_nanos(deadline.saturating_sub(now)),
                }
            }
            FENCED => LeaseState::Fenced,
            _ => LeaseState::Left,
        };
        let remote_entries = inner.replica.try_lock().map_or(0, |r| r.len());
        let lag = c.watch_lag_last_ns.load(Ordering::Relaxed);
        ClusterStats {
            node: inner.config.node,
            lease,
            applied_revision: c.applied_revision.load(Ordering::Relaxed),
            etcd_revision: c.etcd_revision.load(Ordering::Relaxed),
            pending_claims: c.pending_claims.load(Ordering::Relaxed),
            local_claims: lock(&inner.claims).by_key.len(),
            remote_entries,
            watch_lag: (lag > 0).then(|| Duration::from_nanos(lag)),
            watch_lag_max: Duration::from_nanos(c.watch_lag_max_ns.load(Ordering::Relaxed)),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            fences: c.fences.load(Ordering::Relaxed),
            fence_margin: match c.fence_margin_ns.load(Ordering::Relaxed) {
                0 => None,
                ns => Some(Duration::from_nanos(ns)),
            },
            late_fences: c.late_fences.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
        }
    }

    /// Leaves the cluster: revokes the node's lease (etcd deletes its names, and every
    /// other node drops them), removes its claimed entries and the remote replica from
    /// the local registry, and stops its tasks. Local namespaces are untouched.
    ///
    /// # Errors
    ///
    /// [`Error::Unreachable`] or [`Error::Etcd`] if the revoke failed: the names then
    /// expire with the lease instead. The node has left either way.
    pub async fn leave(&self) -> Result<(), Error> {
        crate::session::leave(self.inner()).await
    }

    /// Starts a new session after this node was fenced: a new lease, a fresh snapshot
    /// of the cluster, a new watch. Names the node held before it was fenced are not
    /// restored (other nodes may hold them now); its processes claim them again.
    /// A node configured with `auto_rejoin` (the default) does this by itself.
    ///
    /// # Errors
    ///
    /// [`Error::Left`] after [`Cluster::leave`]; [`Error::Unreachable`] or
    /// [`Error::Etcd`] when etcd does not grant a lease.
    pub async fn rejoin(&self) -> Result<(), Error> {
        crate::session::rejoin(self.inner()).await
    }

    /// Fences the node now, as if its lease had been lost: for tests and for an
    /// operator who knows the node is cut off.
    pub async fn fence(&self) {
        let id = self.inner().lease.load(Ordering::Acquire);
        crate::session::fence(self.inner(), id, "requested").await;
    }
}

/// Runs a write to its end in a task of its own, so that a caller who drops the future
/// cannot split it between etcd and the local registry. `work` yields the result and
/// what to do with it if nobody is waiting any more (undo a registration). The undo
/// also runs when the caller drops the future after the result was sent but before it
/// read it (a timeout that fires in that gap): [`Waiting`]'s drop takes the result back.
async fn detached<T, W, U, UF>(runtime: &tokio::runtime::Handle, work: W) -> Result<T, Error>
where
    T: Send + 'static,
    W: Future<Output = (Result<T, Error>, U)> + Send + 'static,
    U: FnOnce(Result<T, Error>) -> UF + Send + 'static,
    UF: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<(Result<T, Error>, Undo<T>)>();
    runtime.spawn(async move {
        let (result, undo) = work.await;
        let undo: Undo<T> = Box::new(move |r| Box::pin(undo(r)));
        if let Err((unwanted, undo)) = tx.send((result, undo)) {
            undo(unwanted).await;
        }
    });
    let mut waiting = Waiting {
        rx,
        runtime: runtime.clone(),
    };
    match (&mut waiting.rx).await {
        Ok((result, _undo)) => result,
        Err(_) => Err(Error::Left),
    }
}

/// What to do with a detached write's result that nobody took.
type Undo<T> =
    Box<dyn FnOnce(Result<T, Error>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The caller's end of a [`detached`] write.
struct Waiting<T> {
    rx: tokio::sync::oneshot::Receiver<(Result<T, Error>, Undo<T>)>,
    runtime: tokio::runtime::Handle,
}

impl<T> Drop for Waiting<T> {
    fn drop(&mut self) {
        // Closed first: the task's send then either failed (it runs the undo itself) or
        // had already succeeded, and the result is still here to undo.
        self.rx.close();
        if let Ok((unwanted, undo)) = self.rx.try_recv() {
            self.runtime.spawn(undo(unwanted));
        }
    }
}

/// Records `ns` (called `name`) as cluster-wide: whether it was new.
pub(crate) fn mark_cluster_wide(inner: &Inner, ns: Namespace, name: &str) -> bool {
    let mut namespaces = inner.namespaces.write().unwrap_or_else(|e| e.into_inner());
    if namespaces.contains_key(&ns) {
        return false;
    }
    namespaces.insert(ns, name.into());
    true
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node())
            .finish_non_exhaustive()
    }
}
