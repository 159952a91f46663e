//! The local replica: other owners' claims, applied to the local registry in etcd
//! revision order, so lookups and queries read them through the registry's lock-free
//! path like any local entry.
//!
//! Each remote owner (a node and a pid there) gets a local stand-in process, spawned
//! with a [`RemoteOwner`] handle that names the real owner. A remote entry is
//! registered under its owner's stand-in with the claim's metadata (its node set to the
//! owner's node). A stand-in is killed when its last entry goes, and all of them when the
//! node fences itself: the registry's liveness check hides every remote entry at once.
//!
//! One task applies the watch, event by event, under the replica's lock:
//!
//! - put under this session's lease: one of our own claims, already local; skipped (one
//!   with no record and no claim on its way is a claim whose caller gave up: the sweeper
//!   deletes it).
//! - put of a key this node holds, created at or before our claim: skipped; created
//!   after it: our claim was lost, the local entry goes, and the new owner's goes in.
//! - other puts: upsert under the owner's stand-in (a new owner moves the entry).
//! - delete of a key this node holds, after our claim was made: the claim was lost (an
//!   operator's delete, an expired lease); the local entry goes too. Our own releases
//!   drop the record first.
//! - other deletes: the remote entry goes.
//!
//! The layer's own registry writes have no deadline: an event is applied, never dropped
//! because a shard writer was busy.
//!
//! A snapshot (at join, after a compaction, after a rejoin) replaces the replica with
//! what etcd holds at one revision: missing entries are added, changed ones updated,
//! entries etcd no longer has removed, and lost own claims dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use etcd_client::{Event, EventType, GetOptions, KeyValue};
use roster::{Metadata, Node, OwnedKey, Process, Registry, Spawn};

use crate::cluster::{lock, Inner};
use crate::codec::{self, Claim};
use crate::Error;

/// The real owner of a remote entry, attached as the handle of its local stand-in
/// (`registry.handle::<RemoteOwner>(pid)`; [`Cluster::owner`](crate::Cluster::owner)
/// reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RemoteOwner {
    pub(crate) node: Node,
    pub(crate) pid: u64,
}

struct RemoteEntry {
    key: OwnedKey,
    owner: RemoteOwner,
    mod_rev: i64,
}

/// A new remote entry, as the watch delivered it: its etcd key, registry key,
/// metadata and mod revision.
type NewEntry = (Vec<u8>, OwnedKey, Metadata, i64);

struct StandIn {
    process: Process,
    entries: usize,
}

/// Remote entries by etcd key, and their owners' stand-ins.
#[derive(Default)]
pub(crate) struct Replica {
    entries: HashMap<Vec<u8>, RemoteEntry>,
    stand_ins: HashMap<RemoteOwner, StandIn>,
}

impl Replica {
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn owner_of(&self, etcd_key: &[u8]) -> Option<RemoteOwner> {
        self.entries.get(etcd_key).map(|e| e.owner)
    }

    /// Sets the remote entry at `etcd_key`: updated in place for the same owner, moved for
    /// a new one (through [`Replica::insert_many`]); `Ok(false)` if the registry refused it
    /// (a local process holds the key outside the cluster layer).
    async fn upsert(
        &mut self,
        registry: &Registry,
        etcd_key: &[u8],
        key: OwnedKey,
        owner: RemoteOwner,
        meta: Metadata,
        mod_rev: i64,
    ) -> Result<bool, roster::Error> {
        if let Some(e) = self.entries.get_mut(etcd_key) {
            if e.owner == owner {
                if e.mod_rev == mod_rev {
                    return Ok(true);
                }
                e.mod_rev = mod_rev;
                let stand_in = &self.stand_ins[&owner].process;
                registry
                    .update_metadata_async(stand_in, &key.as_key(), &meta)
                    .await?;
                return Ok(true);
            }
            self.remove(registry, etcd_key).await;
        }
        let conflicts = self
            .insert_many(
                registry,
                owner,
                vec![(etcd_key.to_vec(), key, meta, mod_rev)],
            )
            .await?;
        Ok(conflicts == 0)
    }

    /// Removes the remote entry at `etcd_key`, if any: whether there was one.
    async fn remove(&mut self, registry: &Registry, etcd_key: &[u8]) -> bool {
        let Some(e) = self.entries.remove(etcd_key) else {
            return false;
        };
        let stand_in = self
            .stand_ins
            .get_mut(&e.owner)
            .expect("every entry has one");
        stand_in.entries -= 1;
        if stand_in.entries == 0 {
            // Killing the stand-in hides its entry at once; the shard removes it.
            self.stand_ins.remove(&e.owner);
        } else {
            let _ = registry
                .unregister_async(&stand_in.process, &e.key.as_key())
                .await;
        }
        true
    }

    /// Removes a remote entry that etcd has already given to this node (its delete is
    /// not delivered yet), if it is still here.
    pub(crate) async fn evict(&mut self, registry: &Registry, etcd_key: &[u8]) {
        self.remove(registry, etcd_key).await;
    }

    /// Registers new remote entries of one owner as one batch (the stand-in's shards each
    /// get one command): how many a local process held already (conflicts).
    async fn insert_many(
        &mut self,
        registry: &Registry,
        owner: RemoteOwner,
        items: Vec<NewEntry>,
    ) -> Result<u64, roster::Error> {
        if let std::collections::hash_map::Entry::Vacant(v) = self.stand_ins.entry(owner) {
            let process = registry.try_spawn_with(Spawn::new().handle(owner))?;
            v.insert(StandIn {
                process,
                entries: 0,
            });
        }
        let stand_in = self.stand_ins.get_mut(&owner).expect("inserted above");
        let results = registry
            .register_many_async(
                &stand_in.process,
                items.iter().map(|(_, k, m, _)| (k.as_key(), m)),
            )
            .await;
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                if stand_in.entries == 0 {
                    self.stand_ins.remove(&owner);
                }
                return Err(e);
            }
        };
        let mut conflicts = 0;
        for ((etcd_key, key, _, mod_rev), r) in items.into_iter().zip(results.iter()) {
            if r.is_err() {
                conflicts += 1;
                continue;
            }
            stand_in.entries += 1;
            self.entries.insert(
                etcd_key,
                RemoteEntry {
                    key,
                    owner,
                    mod_rev,
                },
            );
        }
        if stand_in.entries == 0 {
            self.stand_ins.remove(&owner);
        }
        Ok(conflicts)
    }

    /// Removes many remote entries: a stand-in that loses all of them dies (which hides
    /// them at once), the others unregister theirs as one batch each.
    async fn remove_many(&mut self, registry: &Registry, etcd_keys: &[Vec<u8>]) {
        let mut by_owner: HashMap<RemoteOwner, Vec<RemoteEntry>> = HashMap::new();
        for k in etcd_keys {
            if let Some(e) = self.entries.remove(k) {
                by_owner.entry(e.owner).or_default().push(e);
            }
        }
        for (owner, gone) in by_owner {
            let stand_in = self.stand_ins.get_mut(&owner).expect("every entry has one");
            stand_in.entries -= gone.len();
            if stand_in.entries == 0 {
                self.stand_ins.remove(&owner);
            } else {
                let keys: Vec<_> = gone.iter().map(|e| e.key.as_key()).collect();
                let _ = registry
                    .unregister_many_async(&stand_in.process, &keys)
                    .await;
            }
        }
    }

    /// Drops every remote entry at once (their stand-ins die).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.stand_ins.clear();
    }
}

impl Inner {
    /// Applies one watch event (see the module docs for the rules).
    pub(crate) async fn apply(&self, replica: &mut Replica, kind: EventType, kv: &KeyValue) {
        if let Some(name) = codec::parse_namespace_key(&self.config.prefix, kv.key()) {
            if kind == EventType::Put {
                self.learn_namespace(&name);
            }
            return;
        }
        let lease = self.lease.load(Ordering::Acquire);
        let etcd_key = kv.key();
        let ours = lock(&self.claims)
            .by_key
            .get(etcd_key)
            .map(|c| c.create_rev);
        match kind {
            EventType::Put => {
                if kv.lease() == lease && lease != 0 {
                    if ours.is_none() {
                        // Under our lease with no record: a claim on its way (the sweeper
                        // waits for it to settle) or one whose answer was lost (the
                        // sweeper deletes it).
                        lock(&self.suspects).push(etcd_key.to_vec());
                    }
                    return;
                }
                match ours {
                    // An event from before our claim, or of our claim itself.
                    Some(rev) if kv.create_revision() <= rev => return,
                    // The key was created again after our claim: ours is lost.
                    Some(rev) => self.drop_lost_claim(etcd_key, rev).await,
                    None => {}
                }
                self.upsert_remote(replica, kv).await;
            }
            EventType::Delete => {
                // A delete after our claim was made deletes our claim (an operator, an
                // expired lease): the local entry goes too. Our own releases drop the
                // record first, so they do not come here.
                if let Some(rev) = ours {
                    if rev < kv.mod_revision() {
                        self.drop_lost_claim(etcd_key, rev).await;
                    }
                    return;
                }
                replica.remove(&self.internal, etcd_key).await;
            }
        }
    }

    /// Applies one watch response's events in order. Runs of plain events (new remote
    /// entries, deletes of remote entries) are applied as batches: one registry command
    /// per stand-in and shard instead of one per event, so a node's mass registration or
    /// death costs its peers a few round trips. Anything else goes through
    /// [`Inner::apply`], after the batch before it.
    pub(crate) async fn apply_events(&self, replica: &mut Replica, events: &[Event]) {
        let lease = self.lease.load(Ordering::Acquire);
        let mut puts: Vec<(RemoteOwner, Vec<u8>, OwnedKey, Metadata, i64)> = Vec::new();
        let mut deletes: Vec<Vec<u8>> = Vec::new();
        let mut batched: HashSet<Vec<u8>> = HashSet::new();
        for ev in events {
            let Some(kv) = ev.kv() else { continue };
            let key = kv.key();
            let plain = !batched.contains(key)
                && !lock(&self.claims).by_key.contains_key(key)
                && codec::parse_namespace_key(&self.config.prefix, key).is_none();
            match ev.event_type() {
                EventType::Put
                    if plain && kv.lease() != lease && !replica.entries.contains_key(key) =>
                {
                    if let Some((owner, okey, meta)) = self.parse_claim(kv) {
                        if !deletes.is_empty() {
                            replica
                                .remove_many(&self.internal, &std::mem::take(&mut deletes))
                                .await;
                        }
                        batched.insert(key.to_vec());
                        puts.push((owner, key.to_vec(), okey, meta, kv.mod_revision()));
                        continue;
                    }
                }
                EventType::Delete if plain && replica.entries.contains_key(key) => {
                    if !puts.is_empty() {
                        self.insert_puts(replica, std::mem::take(&mut puts)).await;
                    }
                    batched.insert(key.to_vec());
                    deletes.push(key.to_vec());
                    continue;
                }
                _ => {}
            }
            self.insert_puts(replica, std::mem::take(&mut puts)).await;
            replica
                .remove_many(&self.internal, &std::mem::take(&mut deletes))
                .await;
            batched.clear();
            self.apply(replica, ev.event_type(), kv).await;
        }
        self.insert_puts(replica, puts).await;
        replica.remove_many(&self.internal, &deletes).await;
    }

    /// New remote entries, registered per owner in batches.
    async fn insert_puts(
        &self,
        replica: &mut Replica,
        puts: Vec<(RemoteOwner, Vec<u8>, OwnedKey, Metadata, i64)>,
    ) {
        let mut by_owner: Vec<(RemoteOwner, Vec<NewEntry>)> = Vec::new();
        for (owner, k, okey, meta, rev) in puts {
            match by_owner.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, items)) => items.push((k, okey, meta, rev)),
                None => by_owner.push((owner, vec![(k, okey, meta, rev)])),
            }
        }
        for (owner, items) in by_owner {
            let n = items.len() as u64;
            let conflicts = replica
                .insert_many(&self.internal, owner, items)
                .await
                .unwrap_or(n);
            self.counters
                .conflicts
                .fetch_add(conflicts, Ordering::Relaxed);
        }
    }

    /// A claim's owner, key and metadata; `None` for a key or value that is not a claim.
    fn parse_claim(&self, kv: &KeyValue) -> Option<(RemoteOwner, OwnedKey, Metadata)> {
        let (ns, node, name) = codec::parse_claim_key(&self.config.prefix, kv.key())?;
        let claim = Claim::from_bytes(kv.value())?;
        let key = codec::owned_key(&self.registry, &ns, node, name).ok()?;
        crate::cluster::mark_cluster_wide(self, key.namespace, &ns);
        let owner = RemoteOwner {
            node: Node(claim.node),
            pid: claim.pid,
        };
        Some((owner, key, claim.metadata()))
    }

    /// Upserts the claim `kv` into the replica; a key or value that is not a claim is
    /// ignored.
    async fn upsert_remote(&self, replica: &mut Replica, kv: &KeyValue) {
        let Some((owner, key, meta)) = self.parse_claim(kv) else {
            return;
        };
        let applied = replica
            .upsert(
                &self.internal,
                kv.key(),
                key,
                owner,
                meta,
                kv.mod_revision(),
            )
            .await;
        if !matches!(applied, Ok(true)) {
            self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Loads every claim etcd holds into the replica (see the module docs): the
    /// revision of the snapshot.
    pub(crate) async fn resync(&self) -> Result<i64, Error> {
        let (kvs, rev) = self.snapshot().await?;
        let markers = codec::namespaces_prefix(&self.config.prefix);
        let mut client = self.client.clone();
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_revision(rev);
        for kv in self.timed(client.get(markers, Some(options))).await?.kvs() {
            if let Some(name) = codec::parse_namespace_key(&self.config.prefix, kv.key()) {
                self.learn_namespace(&name);
            }
        }
        self.seen_revision(rev);
        let lease = self.lease.load(Ordering::Acquire);
        let mut replica = self.replica.lock().await;
        let mut present = HashSet::new();
        for kv in &kvs {
            present.insert(kv.key().to_vec());
            let ours = lock(&self.claims)
                .by_key
                .get(kv.key())
                .map(|c| c.create_rev);
            match ours {
                // Our claim itself, or one made after the snapshot's revision.
                Some(c) if c == kv.create_revision() || c > rev => continue,
                Some(c) => self.drop_lost_claim(kv.key(), c).await,
                None if kv.lease() == lease && lease != 0 => {
                    lock(&self.suspects).push(kv.key().to_vec());
                    continue;
                }
                None => {}
            }
            self.upsert_remote(&mut replica, kv).await;
        }
        let gone: Vec<Vec<u8>> = replica
            .entries
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for k in gone {
            replica.remove(&self.internal, &k).await;
        }
        let lost: Vec<(Vec<u8>, i64)> = lock(&self.claims)
            .by_key
            .iter()
            .filter(|(k, c)| !present.contains(*k) && c.create_rev <= rev)
            .map(|(k, c)| (k.clone(), c.create_rev))
            .collect();
        for (k, c) in lost {
            self.drop_lost_claim(&k, c).await;
        }
        self.counters.applied_revision.store(rev, Ordering::Relaxed);
        self.counters.resyncs.fetch_add(1, Ordering::Relaxed);
        self.delivered(rev);
        Ok(rev)
    }

    /// Every claim etcd holds, at one revision, read in pages (one response must stay
    /// under gRPC's 4 MiB message limit): the claims and the revision.
    async fn snapshot(&self) -> Result<(Vec<KeyValue>, i64), Error> {
        const PAGE: i64 = 500;
        let prefix = codec::names_prefix(&self.config.prefix).into_bytes();
        let mut end = prefix.clone();
        *end.last_mut().expect("the prefix ends with '/'") += 1;
        let mut from = prefix;
        let mut rev = 0;
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if rev != 0 {
                options = options.with_revision(rev);
            }
            let mut client = self.client.clone();
            let mut resp = self.timed(client.get(from.clone(), Some(options))).await?;
            if rev == 0 {
                rev = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let page = resp.take_kvs();
            let Some(last) = page.last() else { break };
            from = last.key().to_vec();
            from.push(0);
            kvs.extend(page);
            if !more {
                break;
            }
        }
        Ok((kvs, rev))
    }

    /// Makes the namespace called `name` cluster-wide here, as another node declared it.
    fn learn_namespace(&self, name: &str) {
        if let Ok(ns) = self.registry.namespace(name) {
            crate::cluster::mark_cluster_wide(self, ns, name);
        }
    }

    /// Our claim on `etcd_key` made at `create_rev` is no longer ours in etcd: its
    /// local entry goes.
    async fn drop_lost_claim(&self, etcd_key: &[u8], create_rev: i64) {
        let claim = lock(&self.claims).remove_if(etcd_key, create_rev);
        if let Some(c) = claim {
            let _ = self
                .internal
                .unregister_async(&c.authority, &c.key.as_key())
                .await;
        }
    }
}
