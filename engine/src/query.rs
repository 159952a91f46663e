//! Queries by capability, health and node, answered from each shard's secondary indexes.
//!
//! Every entry is indexed under the terms its namespace and metadata imply: the namespace
//! itself, each capability, its health, and its node unless that is [`Node::LOCAL`] (the
//! local node's list would repeat the namespace's on a single node and cost every entry
//! a posting and a tail position, 8 bytes; a query for the local node walks the namespace's
//! list or a shorter one and checks each entry's node). A query picks, per shard, the shortest
//! posting list among its AND-ed terms (a health set counts as the sum of its lists), reads
//! it lock-free, and checks each posting's entry, read through the entry table exactly as
//! a lookup reads it, against the whole predicate and the process table. Cost per shard is
//! O(shortest list), never O(entries); shards are searched in parallel with rayon.
//!
//! What a query returns is always a live entry of the queried namespace that matches
//! (SPEC I1, I2, S7) at the moment it was read, and it reflects every write that returned
//! before the query began (L5). It is not a snapshot: an entry written or updated while
//! the query runs may or may not be included.

use std::fmt;

use rayon::prelude::*;
use roster_shard::{Read, Shard};

use crate::entry::Entry;
use crate::error::{Error, ErrorKind};
use crate::key::{Name, Namespace, Node, MAX_NAMESPACES};
use crate::metadata::{CapIds, Capability, Health};
use crate::process::Pid;
use crate::stats::OpKind;
use crate::Registry;

const NAMESPACE: u64 = 1;
pub(crate) const CAPABILITY: u64 = 2;
const HEALTH: u64 = 3;
const NODE: u64 = 4;

/// An index term: `kind:4 | namespace:20 | value:40`; never 0.
pub(crate) fn term(kind: u64, ns: u32, value: u64) -> u64 {
    kind << 60 | (ns as u64 & MAX_NAMESPACES as u64) << 40 | (value & ((1 << 40) - 1))
}

/// The index terms of an entry of namespace `ns` with encoded metadata `meta`.
pub(crate) fn entry_terms(ns: u32, meta: &[u64]) -> Vec<u64> {
    let mut terms = Vec::new();
    push_entry_terms(ns, meta, &mut terms);
    terms
}

/// [`entry_terms`], appended to `terms` (the shard's [`Hooks::index_terms`], which it
/// asks again whenever it unlinks the entry).
///
/// [`Hooks::index_terms`]: roster_shard::Hooks::index_terms
pub(crate) fn push_entry_terms(ns: u32, meta: &[u64], terms: &mut Vec<u64>) {
    let head = meta.first().copied().unwrap_or(0);
    let caps = (head >> 8) as usize & 0xff;
    terms.reserve(3 + caps);
    terms.push(term(NAMESPACE, ns, 0));
    terms.push(term(HEALTH, ns, head & 0xff));
    // The local node has no list (see the module docs).
    let node = head >> 32;
    if node != u64::from(Node::LOCAL.0) {
        terms.push(term(NODE, ns, node));
    }
    terms.extend(CapIds::of(meta).map(|c| term(CAPABILITY, ns, u64::from(c))));
}

/// A query: a namespace and an AND of conditions on capabilities, health and node.
///
/// # Examples
///
/// ```
/// use roster::{Health, Key, Metadata, Query, Registry};
///
/// let registry = Registry::builder().shards(2).build()?;
/// let ns = registry.namespace("agents")?;
/// for (i, caps) in [["search", "plan"], ["search", "code"], ["code", "plan"]].iter().enumerate() {
///     let agent = registry.spawn();
///     let meta = caps.iter().fold(Metadata::new().health(Health::Healthy), |m, c| m.capability(*c));
///     registry.register(&agent, &Key::new(ns, i as u64), &meta)?;
///     std::mem::forget(agent); // keep the agents alive for the example
/// }
/// let q = Query::new(ns).capability("search").capability("plan");
/// let hits = registry.query(&q)?;
/// assert_eq!(hits.len(), 1);
/// assert_eq!(registry.query_count(&Query::new(ns).capability("code"))?, 2);
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    namespace: Namespace,
    capabilities: Vec<String>,
    health: Vec<Health>,
    node: Option<Node>,
    limit: Option<usize>,
}

impl Query {
    /// All entries of `namespace`.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// assert_eq!(registry.query(&Query::new(ns))?.len(), 2);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn new(namespace: Namespace) -> Query {
        Query {
            namespace,
            capabilities: Vec::new(),
            health: Vec::new(),
            node: None,
            limit: None,
        }
    }

    /// Entries must have capability `name` (AND with the other capabilities).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// let hits = registry.query(&Query::new(ns).capability("search"))?;
    /// assert_eq!(hits.len(), 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn capability(mut self, name: impl Into<String>) -> Query {
        let name = name.into();
        if !self.capabilities.contains(&name) {
            self.capabilities.push(name);
        }
        self
    }

    /// Entries must have health `h`; calling it again adds to the accepted set (OR).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// let hits = registry.query(&Query::new(ns).health(Health::Healthy).health(Health::Degraded))?;
    /// assert_eq!(hits.len(), 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn health(mut self, h: Health) -> Query {
        if !self.health.contains(&h) {
            self.health.push(h);
        }
        self
    }

    /// Entries must run on `node`.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// let hits = registry.query(&Query::new(ns).node(Node(3)))?;
    /// assert_eq!(hits[0].entry().node(), Node(3));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn node(mut self, node: Node) -> Query {
        self.node = Some(node);
        self
    }

    /// At most `n` results.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// assert_eq!(registry.query(&Query::new(ns).limit(1))?.len(), 1);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn limit(mut self, n: usize) -> Query {
        self.limit = Some(n);
        self
    }
}

/// A query result: the entry's key and an owned copy of the entry.
#[derive(Clone)]
pub struct Hit {
    key: OwnedKey,
    entry: Entry,
}

impl Hit {
    /// The entry's key.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// let hits = registry.query(&Query::new(ns).capability("plan"))?;
    /// assert_eq!(hits[0].key().as_key(), Key::new(ns, 2));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn key(&self) -> &OwnedKey {
        &self.key
    }

    /// The entry (pid and metadata).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// let hits = registry.query(&Query::new(ns).capability("search"))?;
    /// assert_eq!(hits[0].entry().health(), Health::Healthy);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The registered process.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// let hits = registry.query(&Query::new(ns))?;
    /// assert!(hits.iter().all(|h| h.pid() == p.pid()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn pid(&self) -> Pid {
        self.entry.pid()
    }
}

impl fmt::Debug for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hit")
            .field("key", &self.key)
            .field("entry", &self.entry)
            .finish()
    }
}

/// An owned key, as query results carry it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnedKey {
    /// The namespace.
    pub namespace: Namespace,
    /// The node.
    pub node: Node,
    /// The local name.
    pub name: OwnedName,
}

/// An owned local name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OwnedName {
    /// An integer name.
    Int(u64),
    /// A string name.
    Str(String),
}

impl fmt::Display for OwnedKey {
    /// As the [`Key`](crate::Key) it owns: `ns{id}/node{n}/{name}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_key(), f)
    }
}

impl From<crate::Key<'_>> for OwnedKey {
    /// An owned copy of `key`, for a struct that keeps a key without its lifetime.
    ///
    /// ```
    /// use roster::{Key, OwnedKey, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let key = Key::new(registry.namespace("agents")?, "planner");
    /// let owned = OwnedKey::from(key);
    /// assert_eq!(owned.as_key(), key);
    /// # Ok::<(), roster::Error>(())
    /// ```
    fn from(key: crate::Key<'_>) -> OwnedKey {
        let name = match key.name() {
            Name::Int(n) => OwnedName::Int(n),
            Name::Str(s) => OwnedName::Str(s.to_owned()),
        };
        OwnedKey {
            namespace: key.namespace(),
            node: key.node(),
            name,
        }
    }
}

impl OwnedKey {
    /// Borrows it as a [`Key`](crate::Key), e.g. to look it up again.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, OwnedKey, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let owned = OwnedKey::from(Key::new(ns, "planner"));
    /// assert_eq!(owned.as_key(), Key::new(ns, "planner"));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn as_key(&self) -> crate::Key<'_> {
        let name = match &self.name {
            OwnedName::Int(n) => Name::Int(*n),
            OwnedName::Str(s) => Name::Str(s),
        };
        crate::Key::new(self.namespace, name).on_node(self.node)
    }

    /// Decodes encoded key words (see `key.rs`).
    pub(crate) fn decode(words: &[u64], tag: u32) -> Option<OwnedKey> {
        let (&head, rest) = words.split_first()?;
        let len = (head & 0xfff) as usize;
        let name = if len == 0xfff {
            OwnedName::Int(*rest.first()?)
        } else {
            let bytes = bytemuck::cast_slice::<u64, u8>(rest).get(..len)?;
            OwnedName::Str(std::str::from_utf8(bytes).ok()?.to_owned())
        };
        Some(OwnedKey {
            namespace: Namespace(crate::key::namespace_of(words), tag),
            node: Node((head >> 32) as u32),
            name,
        })
    }
}

/// A query resolved against one registry: its terms and its predicate.
#[derive(Clone, Debug)]
struct Plan {
    ns: u32,
    /// Required capabilities, sorted.
    caps: Vec<Capability>,
    /// Accepted health values (empty = any).
    health: Vec<Health>,
    node: Option<Node>,
    limit: usize,
}

impl Plan {
    /// `None` when no entry can match (a capability nobody ever registered).
    fn new(r: &Registry, q: &Query) -> Option<Plan> {
        let mut caps = q
            .capabilities
            .iter()
            .map(|c| r.capability(c))
            .collect::<Option<Vec<_>>>()?;
        caps.sort_unstable();
        Some(Plan {
            ns: q.namespace.0,
            caps,
            health: q.health.clone(),
            node: q.node,
            limit: q.limit.unwrap_or(usize::MAX),
        })
    }

    /// The posting lists to walk in `shard` (the shortest AND-ed term, or the health set)
    /// and how many postings they hold.
    fn source(&self, shard: &Shard) -> (Vec<u64>, usize) {
        let mut best = vec![term(NAMESPACE, self.ns, 0)];
        let mut best_len = shard.postings_len(best[0]);
        let mut consider = |terms: Vec<u64>| {
            let len = terms
                .iter()
                .map(|&t| shard.postings_len(t))
                .fold(0usize, usize::saturating_add);
            if len < best_len {
                best_len = len;
                best = terms;
            }
        };
        for c in &self.caps {
            consider(vec![term(CAPABILITY, self.ns, c.0 as u64)]);
        }
        if let Some(n) = self.node.filter(|&n| n != Node::LOCAL) {
            consider(vec![term(NODE, self.ns, n.0 as u64)]);
        }
        if !self.health.is_empty() {
            consider(
                self.health
                    .iter()
                    .map(|h| term(HEALTH, self.ns, h.to_bits()))
                    .collect(),
            );
        }
        (best, best_len)
    }

    fn matches(&self, key: &[u64], e: &Entry) -> bool {
        crate::key::namespace_of(key) == self.ns
            && (self.health.is_empty() || self.health.contains(&e.health()))
            && self.node.is_none_or(|n| e.node() == n)
            && self.caps.iter().all(|&c| e.has_capability(c))
    }

    /// Walks the postings of `terms` in `shard`, calling `emit` with each match until it
    /// returns false.
    fn run(
        &self,
        r: &Registry,
        shard: &Shard,
        terms: &[u64],
        mut emit: impl FnMut(&[u64], &Entry) -> bool,
    ) -> Result<(), Error> {
        let mut postings = Vec::new();
        let mut list = Vec::new();
        for &t in terms {
            shard
                .postings(t, &mut list)
                .map_err(|_| Error::new(ErrorKind::ShuttingDown))?;
            postings.extend_from_slice(&list);
        }
        postings.sort_unstable();
        postings.dedup();
        let mut key = Vec::new();
        let mut entry = Entry::new();
        for p in postings {
            let found = loop {
                match shard.read_posting(p, &mut key, entry.buffer()) {
                    Read::Found { meta_words, .. } if meta_words > entry.buffer().len() => {
                        entry.reserve(meta_words);
                    }
                    Read::Found { owner, meta_words } => break Some((owner, meta_words)),
                    Read::NotFound => break None,
                    Read::Closed => return Err(Error::new(ErrorKind::ShuttingDown)),
                }
            };
            let Some((owner, meta_words)) = found else {
                continue;
            };
            let pid = Pid(owner);
            if !r.is_alive(pid) {
                continue;
            }
            entry.set(pid, meta_words);
            if self.matches(&key, &entry) && !emit(&key, &entry) {
                break;
            }
        }
        Ok(())
    }
}

/// Below this many postings in all, a query runs on the caller's thread: waking rayon's
/// workers costs more than it saves (tens of microseconds against ~100 ns a posting).
const PARALLEL_POSTINGS: usize = 2048;

/// Runs `f` over every shard with its source lists: in parallel when there is enough
/// work, else on this thread.
fn fan_out<T: Send>(
    r: &Registry,
    plan: &Plan,
    f: impl Fn(&Shard, &[u64]) -> Result<T, Error> + Sync,
) -> Result<Vec<T>, Error> {
    let sources: Vec<(Vec<u64>, usize)> = r.shards().iter().map(|s| plan.source(s)).collect();
    let work = sources
        .iter()
        .map(|(_, n)| *n)
        .fold(0usize, usize::saturating_add);
    let jobs = r.shards().iter().zip(&sources);
    if work < PARALLEL_POSTINGS || r.shards().len() == 1 {
        jobs.map(|(s, (terms, _))| f(s, terms)).collect()
    } else {
        jobs.collect::<Vec<_>>()
            .into_par_iter()
            .map(|(s, (terms, _))| f(s, terms))
            .collect()
    }
}

impl Registry {
    /// The live entries of `q`'s namespace that match all its conditions, in no
    /// particular order, at most `q`'s limit. Cost is O(shards + entries on each shard's
    /// shortest matching list); with more than a couple of thousand postings to check,
    /// shards are searched in parallel on rayon's global pool.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ForeignNamespace`], [`ErrorKind::ShuttingDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// let hits = registry.query(&Query::new(ns).capability("search").health(Health::Healthy))?;
    /// assert_eq!(hits.len(), 1);
    /// assert_eq!(hits[0].key().as_key(), Key::new(ns, 1));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn query(&self, q: &Query) -> Result<Vec<Hit>, Error> {
        let _timer = self.op_timer(OpKind::Query);
        self.check_open()?;
        self.own(q.namespace)?;
        let Some(plan) = Plan::new(self, q) else {
            return Ok(Vec::new());
        };
        let per_shard = fan_out(self, &plan, |s, terms| {
            let mut hits = Vec::new();
            plan.run(self, s, terms, |key, entry| {
                if let Some(key) = OwnedKey::decode(key, self.tag()) {
                    hits.push(Hit {
                        key,
                        entry: entry.clone(),
                    });
                }
                hits.len() < plan.limit
            })?;
            Ok(hits)
        })?;
        let mut hits: Vec<Hit> = per_shard.into_iter().flatten().collect();
        hits.truncate(plan.limit);
        Ok(hits)
    }

    /// How many entries [`Registry::query`] would return (up to the limit), without
    /// copying them out.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ForeignNamespace`], [`ErrorKind::ShuttingDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search").health(Health::Healthy))?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("plan").node(Node(3)))?;
    /// assert_eq!(registry.query_count(&Query::new(ns))?, 2);
    /// assert_eq!(registry.query_count(&Query::new(ns).capability("nobody"))?, 0);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn query_count(&self, q: &Query) -> Result<usize, Error> {
        let _timer = self.op_timer(OpKind::Query);
        self.check_open()?;
        self.own(q.namespace)?;
        let Some(plan) = Plan::new(self, q) else {
            return Ok(0);
        };
        let counts = fan_out(self, &plan, |s, terms| {
            let mut n = 0usize;
            plan.run(self, s, terms, |_, _| {
                n += 1;
                n < plan.limit
            })?;
            Ok(n)
        })?;
        Ok(counts.into_iter().sum::<usize>().min(plan.limit))
    }

    /// Streams the results of `q`: calls `f` with each match, on this thread, shard after
    /// shard, until `f` returns `false` or the limit is reached. Nothing is collected.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ShuttingDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Query, Registry};
    ///
    /// let registry = Registry::builder().shards(2).build()?;
    /// let ns = registry.namespace("workers")?;
    /// let w = registry.spawn();
    /// for i in 0..10u64 {
    ///     registry.register(&w, &Key::new(ns, i), &Metadata::new().capability("work"))?;
    /// }
    /// let mut seen = 0;
    /// registry.query_each(&Query::new(ns).capability("work"), |_key, _entry| {
    ///     seen += 1;
    ///     seen < 3 // stop after three
    /// })?;
    /// assert_eq!(seen, 3);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn query_each(
        &self,
        q: &Query,
        mut f: impl FnMut(&OwnedKey, &Entry) -> bool,
    ) -> Result<(), Error> {
        let _timer = self.op_timer(OpKind::Query);
        self.check_open()?;
        self.own(q.namespace)?;
        let Some(plan) = Plan::new(self, q) else {
            return Ok(());
        };
        let mut left = plan.limit;
        for s in self.shards() {
            let mut stop = false;
            let (terms, _) = plan.source(s);
            plan.run(self, s, &terms, |key, entry| {
                let Some(key) = OwnedKey::decode(key, self.tag()) else {
                    return true;
                };
                left -= 1;
                stop = !f(&key, entry) || left == 0;
                !stop
            })?;
            if stop {
                break;
            }
        }
        Ok(())
    }
}
