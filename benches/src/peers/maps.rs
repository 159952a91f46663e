//! The maps under comparison, behind one small interface, each storing the same thing.
//!
//! Every map maps a `u64` key to a process id and a small metadata record, and every
//! lookup copies that out (Roster into a reused [`Entry`], the peers by copying a
//! [`Value`]), so every map does the same work per operation. Peers hash with ahash, as
//! Roster does, so no map pays for SipHash. Roster writes go through its shard writer
//! threads as synchronous round trips; the peers write in place under their own locks.

use std::collections::HashMap as StdHashMap;
use std::hint::black_box;
use std::sync::{Mutex, RwLock};

use ahash::RandomState;
use roster::{Entry, Health, Key, Metadata, Namespace, Process, Registry};

/// What a peer map stores per key: 64 bytes, about what Roster copies per hit for the
/// same metadata (3 capabilities, health, a 13-byte and an integer attribute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value {
    pub pid: u64,
    pub capabilities: [u32; 3],
    pub health: u8,
    pub node: u32,
    pub load: i64,
    pub region: [u8; 16],
}

/// Whether Roster's registries go on huge pages (`peers --huge-pages`); set once, before
/// any map is built.
pub static HUGE_PAGES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether Roster's registries keep a line cache (`peers --line-cache`); set once, before
/// any map is built.
pub static LINE_CACHE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The load Roster's tables grow at (`peers --max-load`); set once, before any map is
/// built.
pub static MAX_LOAD: std::sync::atomic::AtomicU8 =
    std::sync::atomic::AtomicU8::new(roster::DEFAULT_MAX_LOAD);

/// Number of distinct values (and Roster metadata) writes cycle through; built once, so
/// no map pays for building strings inside the timed loop.
pub const VARIANTS: usize = 16;

/// The values the workloads write, and the same records as Roster metadata.
pub struct Values {
    pub values: [Value; VARIANTS],
    pub metadata: Vec<Metadata>,
}

impl Values {
    pub fn new() -> Values {
        let values = std::array::from_fn(|i| Value {
            pid: 1000 + i as u64,
            capabilities: [1, 2 + (i % 2) as u32, 4 + i as u32],
            health: 0,
            node: 0,
            load: i as i64,
            region: *b"eu-west-1-az2\0\0\0",
        });
        let metadata = (0..VARIANTS)
            .map(|i| {
                Metadata::new()
                    .capability("plan")
                    .capability(if i % 2 == 0 { "search" } else { "code" })
                    .capability(format!("shard-{i}"))
                    .health(Health::Healthy)
                    .attribute("region", "eu-west-1-az2")
                    .attribute("load", i as i64)
            })
            .collect();
        Values { values, metadata }
    }
}

/// A map under test. `Local` is one thread's handle (Roster's holds the thread's process
/// guard, which owns what the thread writes, and a reusable entry).
pub trait Map: Sync + Sized {
    type Local<'a>: Local
    where
        Self: 'a;
    /// Makes an empty map sized for `capacity` keys.
    fn with_capacity(capacity: usize) -> Self;
    /// One thread's handle.
    fn local<'a>(&'a self, values: &'a Values) -> Self::Local<'a>;
}

/// One thread's operations. Each returns whether it found (or changed) the key.
pub trait Local {
    /// Copies the key's value out.
    fn get(&mut self, key: u64) -> bool;
    /// Looks up every key of `keys`; returns how many were found. Only Roster overrides
    /// this (with `lookup_many`); for the peers it is the loop of single lookups.
    fn get_many(&mut self, keys: &[u64]) -> usize {
        keys.iter().filter(|&&k| self.get(k)).count()
    }
    /// Inserts if absent.
    fn insert(&mut self, key: u64, variant: usize) -> bool;
    /// Removes if present (and, for Roster, owned by this thread's process).
    fn remove(&mut self, key: u64) -> bool;
    /// Inserts every key of `keys` (value by key); returns how many went in. Only Roster
    /// overrides this (with `register_many`: one round trip per shard).
    fn insert_many(&mut self, keys: &[u64]) -> usize {
        keys.iter()
            .filter(|&&k| self.insert(k, k as usize % VARIANTS))
            .count()
    }
    /// Removes every key of `keys`; returns how many went. Only Roster overrides this
    /// (with `unregister_many`).
    fn remove_many(&mut self, keys: &[u64]) -> usize {
        keys.iter().filter(|&&k| self.remove(k)).count()
    }
    /// Replaces the value if present.
    fn update(&mut self, key: u64, variant: usize) -> bool;
    /// Ends the handle, keeping what it wrote in the map.
    fn finish(self)
    where
        Self: Sized,
    {
    }
}

/// The maps, by name, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Roster,
    /// Roster's batch paths: `lookup_many` (batches of 16) for lookups,
    /// `register_many` / `unregister_many` (batches of 64) for the churn workload.
    RosterMany,
    Papaya,
    DashMap,
    Scc,
    RwLock,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Roster,
        Kind::RosterMany,
        Kind::Papaya,
        Kind::DashMap,
        Kind::Scc,
        Kind::RwLock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Roster => "roster",
            Kind::RosterMany => "roster-batch",
            Kind::Papaya => "papaya",
            Kind::DashMap => "dashmap",
            Kind::Scc => "scc",
            Kind::RwLock => "rwlock-std",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn is_peer(self) -> bool {
        !matches!(self, Kind::Roster | Kind::RosterMany)
    }
}

// ---------------------------------------------------------------------------------------
// Roster

pub struct RosterMap {
    registry: Registry,
    ns: Namespace,
    /// Process guards of finished thread handles: what they registered stays, as the
    /// peers' inserts stay.
    owners: Mutex<Vec<Process>>,
}

impl Map for RosterMap {
    type Local<'a> = RosterLocal<'a>;

    fn with_capacity(capacity: usize) -> Self {
        // Writes run to completion, as the peers' do: the default 10 ms deadline would
        // turn a write stalled behind table growth into a refused one.
        let registry = Registry::builder()
            .capacity(capacity)
            .write_deadline(std::time::Duration::from_secs(60))
            .huge_pages(HUGE_PAGES.load(std::sync::atomic::Ordering::Relaxed))
            .line_cache(LINE_CACHE.load(std::sync::atomic::Ordering::Relaxed))
            .max_load(MAX_LOAD.load(std::sync::atomic::Ordering::Relaxed))
            .build()
            .expect("registry");
        let ns = registry.namespace("peers").expect("namespace");
        RosterMap {
            registry,
            ns,
            owners: Mutex::new(Vec::new()),
        }
    }

    fn local<'a>(&'a self, values: &'a Values) -> RosterLocal<'a> {
        RosterLocal {
            map: self,
            values,
            process: self.registry.spawn(),
            entry: Entry::new(),
            keys: Vec::with_capacity(16),
        }
    }
}

pub struct RosterLocal<'a> {
    map: &'a RosterMap,
    values: &'a Values,
    /// Owns what this thread registers; handed to the map by `finish`, since dropping it
    /// would kill the process and so its entries.
    process: Process,
    entry: Entry,
    keys: Vec<Key<'static>>,
}

impl Local for RosterLocal<'_> {
    #[inline]
    fn get(&mut self, key: u64) -> bool {
        let found = self
            .map
            .registry
            .lookup_into(&Key::new(self.map.ns, key), &mut self.entry)
            .expect("lookup");
        black_box(self.entry.pid());
        found
    }

    fn get_many(&mut self, keys: &[u64]) -> usize {
        self.keys.clear();
        self.keys
            .extend(keys.iter().map(|&k| Key::new(self.map.ns, k)));
        let mut found = 0;
        self.map
            .registry
            .lookup_many(&self.keys, |_, e| {
                if let Some(e) = e {
                    black_box(e.pid());
                    found += 1;
                }
            })
            .expect("lookup_many");
        found
    }

    fn insert(&mut self, key: u64, variant: usize) -> bool {
        let meta = &self.values.metadata[variant];
        let key = Key::new(self.map.ns, key);
        self.map
            .registry
            .register(&self.process, &key, meta)
            .is_ok()
    }

    fn remove(&mut self, key: u64) -> bool {
        let key = Key::new(self.map.ns, key);
        self.map.registry.unregister(&self.process, &key).is_ok()
    }

    fn insert_many(&mut self, keys: &[u64]) -> usize {
        let (ns, metas) = (self.map.ns, &self.values.metadata);
        let items = keys
            .iter()
            .map(|&k| (Key::new(ns, k), &metas[k as usize % VARIANTS]));
        let results = self.map.registry.register_many(&self.process, items);
        results.map_or(0, |r| r.iter().filter(|r| r.is_ok()).count())
    }

    fn remove_many(&mut self, keys: &[u64]) -> usize {
        self.keys.clear();
        self.keys
            .extend(keys.iter().map(|&k| Key::new(self.map.ns, k)));
        let results = self.map.registry.unregister_many(&self.process, &self.keys);
        results.map_or(0, |r| r.iter().filter(|r| r.is_ok()).count())
    }

    fn update(&mut self, key: u64, variant: usize) -> bool {
        let meta = &self.values.metadata[variant];
        let key = Key::new(self.map.ns, key);
        self.map
            .registry
            .update_metadata(&self.process, &key, meta)
            .is_ok()
    }

    fn finish(self) {
        let mut owners = self.map.owners.lock().unwrap();
        owners.push(self.process);
    }
}

// ---------------------------------------------------------------------------------------
// Peers: one generic handle, the map-specific part in `Peer`.

/// A peer map's own operations; values are copied in and out.
pub trait Peer: Sync + Sized {
    fn with_capacity(capacity: usize) -> Self;
    fn get(&self, key: u64) -> Option<Value>;
    fn insert(&self, key: u64, value: Value) -> bool;
    fn remove(&self, key: u64) -> bool;
    fn update(&self, key: u64, value: Value) -> bool;
}

pub struct PeerLocal<'a, P> {
    map: &'a P,
    values: &'a Values,
}

impl<P: Peer> Map for P {
    type Local<'a>
        = PeerLocal<'a, P>
    where
        P: 'a;

    fn with_capacity(capacity: usize) -> Self {
        <P as Peer>::with_capacity(capacity)
    }

    fn local<'a>(&'a self, values: &'a Values) -> PeerLocal<'a, P> {
        PeerLocal { map: self, values }
    }
}

impl<P: Peer> Local for PeerLocal<'_, P> {
    #[inline]
    fn get(&mut self, key: u64) -> bool {
        black_box(self.map.get(key)).is_some()
    }
    fn insert(&mut self, key: u64, variant: usize) -> bool {
        self.map.insert(key, self.values.values[variant])
    }
    fn remove(&mut self, key: u64) -> bool {
        self.map.remove(key)
    }
    fn update(&mut self, key: u64, variant: usize) -> bool {
        self.map.update(key, self.values.values[variant])
    }
}

pub struct Papaya(papaya::HashMap<u64, Value, RandomState>);

impl Peer for Papaya {
    fn with_capacity(capacity: usize) -> Self {
        Papaya(papaya::HashMap::with_capacity_and_hasher(
            capacity,
            RandomState::new(),
        ))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<Value> {
        self.0.pin().get(&key).copied()
    }
    fn insert(&self, key: u64, value: Value) -> bool {
        self.0.pin().try_insert(key, value).is_ok()
    }
    fn remove(&self, key: u64) -> bool {
        self.0.pin().remove(&key).is_some()
    }
    fn update(&self, key: u64, value: Value) -> bool {
        self.0.pin().update(key, |_| value).is_some()
    }
}

pub struct DashMap(dashmap::DashMap<u64, Value, RandomState>);

impl Peer for DashMap {
    fn with_capacity(capacity: usize) -> Self {
        DashMap(dashmap::DashMap::with_capacity_and_hasher(
            capacity,
            RandomState::new(),
        ))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<Value> {
        self.0.get(&key).map(|v| *v)
    }
    fn insert(&self, key: u64, value: Value) -> bool {
        match self.0.entry(key) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(v) => {
                v.insert(value);
                true
            }
        }
    }
    fn remove(&self, key: u64) -> bool {
        self.0.remove(&key).is_some()
    }
    fn update(&self, key: u64, value: Value) -> bool {
        self.0.get_mut(&key).map(|mut v| *v = value).is_some()
    }
}

pub struct Scc(scc::HashMap<u64, Value, RandomState>);

impl Peer for Scc {
    fn with_capacity(capacity: usize) -> Self {
        Scc(scc::HashMap::with_capacity_and_hasher(
            capacity,
            RandomState::new(),
        ))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<Value> {
        self.0.read_sync(&key, |_, v| *v)
    }
    fn insert(&self, key: u64, value: Value) -> bool {
        self.0.insert_sync(key, value).is_ok()
    }
    fn remove(&self, key: u64) -> bool {
        self.0.remove_sync(&key).is_some()
    }
    fn update(&self, key: u64, value: Value) -> bool {
        self.0.update_sync(&key, |_, v| *v = value).is_some()
    }
}

pub struct Locked(RwLock<StdHashMap<u64, Value, RandomState>>);

impl Peer for Locked {
    fn with_capacity(capacity: usize) -> Self {
        Locked(RwLock::new(StdHashMap::with_capacity_and_hasher(
            capacity,
            RandomState::new(),
        )))
    }
    #[inline]
    fn get(&self, key: u64) -> Option<Value> {
        self.0.read().unwrap().get(&key).copied()
    }
    fn insert(&self, key: u64, value: Value) -> bool {
        match self.0.write().unwrap().entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(value);
                true
            }
        }
    }
    fn remove(&self, key: u64) -> bool {
        self.0.write().unwrap().remove(&key).is_some()
    }
    fn update(&self, key: u64, value: Value) -> bool {
        self.0
            .write()
            .unwrap()
            .get_mut(&key)
            .map(|v| *v = value)
            .is_some()
    }
}
