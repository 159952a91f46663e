//! [`Entry`]: the owned copy of an entry that a lookup returns.
//!
//! A lookup copies the entry's encoded metadata words into the entry's inline buffer
//! ([`INLINE_WORDS`] words, enough for a dozen capabilities and a few short attributes)
//! and allocates nothing; larger metadata spills into a heap buffer that
//! [`Registry::lookup_into`](crate::Registry::lookup_into) reuses across calls. Accessors
//! decode from the words on demand.

use std::fmt;

use crate::key::Node;
use crate::metadata::{read_attribute, CapIds, Capability, Health, Metadata, ValueRef};
use crate::process::Pid;
use crate::Registry;

/// Metadata words an [`Entry`] holds without allocating.
pub const INLINE_WORDS: usize = 16;

/// A registered process's entry, as read by a lookup: its pid and metadata.
#[derive(Clone)]
pub struct Entry {
    pid: Pid,
    len: usize,
    inline: [u64; INLINE_WORDS],
    /// Used instead of `inline` once a lookup needed more room; kept for reuse.
    spill: Vec<u64>,
}

impl Default for Entry {
    fn default() -> Self {
        Entry::new()
    }
}

impl Entry {
    /// An empty entry, to pass to [`Registry::lookup_into`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Entry, Key, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let mut entry = Entry::new();
    /// assert!(!registry.lookup_into(&Key::new(ns, 1), &mut entry)?);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn new() -> Entry {
        Entry {
            pid: Pid::NONE,
            len: 0,
            inline: [0; INLINE_WORDS],
            spill: Vec::new(),
        }
    }

    /// The inline buffer, which a lookup's fast path copies into; a read into it is
    /// settled with [`Entry::set_inline`].
    #[inline(always)]
    pub(crate) fn inline_buffer(&mut self) -> &mut [u64; INLINE_WORDS] {
        &mut self.inline
    }

    /// The buffer a read copies into: the inline one until metadata larger than it was
    /// met, then the (reused) heap one. A read into it is settled with [`Entry::set`].
    pub(crate) fn buffer(&mut self) -> &mut [u64] {
        if self.spill.is_empty() {
            &mut self.inline
        } else {
            &mut self.spill
        }
    }

    /// Makes the buffer hold at least `words`.
    pub(crate) fn reserve(&mut self, words: usize) {
        if words > self.buffer().len() {
            self.spill.resize(words, 0);
        }
    }

    /// Settles a read of `len` words into [`Entry::buffer`]. The words live inline
    /// exactly when they fit there, so a read that landed in the heap buffer but fits
    /// inline moves in.
    pub(crate) fn set(&mut self, pid: Pid, len: usize) {
        if len <= INLINE_WORDS && !self.spill.is_empty() {
            self.inline[..len].copy_from_slice(&self.spill[..len]);
        }
        self.pid = pid;
        self.len = len;
    }

    /// Settles a read of `len <= INLINE_WORDS` words into [`Entry::inline_buffer`].
    #[inline(always)]
    pub(crate) fn set_inline(&mut self, pid: Pid, len: usize) {
        debug_assert!(len <= INLINE_WORDS);
        self.pid = pid;
        self.len = len;
    }

    fn words(&self) -> &[u64] {
        if self.len <= INLINE_WORDS {
            &self.inline[..self.len]
        } else {
            &self.spill[..self.len.min(self.spill.len())]
        }
    }

    fn head(&self) -> u64 {
        self.words().first().copied().unwrap_or(0)
    }

    /// The process that registered the entry.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new().capability("search").health(Health::Healthy).node(Node(2)).attribute("region", "eu");
    /// registry.register(&p, &Key::new(ns, 1), &meta)?;
    /// let entry = registry.lookup(&Key::new(ns, 1))?.unwrap();
    /// assert_eq!(entry.pid(), p.pid());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The health it reported.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new().capability("search").health(Health::Healthy).node(Node(2)).attribute("region", "eu");
    /// registry.register(&p, &Key::new(ns, 1), &meta)?;
    /// let entry = registry.lookup(&Key::new(ns, 1))?.unwrap();
    /// assert_eq!(entry.health(), Health::Healthy);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn health(&self) -> Health {
        Health::from_bits(self.head())
    }

    /// The node it runs on.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new().capability("search").health(Health::Healthy).node(Node(2)).attribute("region", "eu");
    /// registry.register(&p, &Key::new(ns, 1), &meta)?;
    /// let entry = registry.lookup(&Key::new(ns, 1))?.unwrap();
    /// assert_eq!(entry.node(), Node(2));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn node(&self) -> Node {
        Node((self.head() >> 32) as u32)
    }

    /// Its capabilities, in id order. Names come from
    /// [`Registry::capability_name`](crate::Registry::capability_name).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use roster::{Health, Key, Metadata, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new().capability("search").health(Health::Healthy).node(Node(2)).attribute("region", "eu");
    /// registry.register(&p, &Key::new(ns, 1), &meta)?;
    /// let entry = registry.lookup(&Key::new(ns, 1))?.unwrap();
    /// let names: Vec<_> = entry.capabilities().filter_map(|c| registry.capability_name(c)).collect();
    /// assert_eq!(names, vec!["search".into()]);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn capabilities(&self) -> impl Iterator<Item = Capability> + '_ {
        CapIds::of(self.words()).map(Capability)
    }

    /// Whether it has capability `c`.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new().capability("search").health(Health::Healthy).node(Node(2)).attribute("region", "eu");
    /// registry.register(&p, &Key::new(ns, 1), &meta)?;
    /// let entry = registry.lookup(&Key::new(ns, 1))?.unwrap();
    /// let search = registry.capability("search").unwrap();
    /// assert!(entry.has_capability(search));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn has_capability(&self, c: Capability) -> bool {
        self.capabilities().any(|x| x == c)
    }

    /// Whether it has the capability called `name` in `registry` (false for a name no
    /// entry ever registered: unlike `registry.capability(name).unwrap()`, it cannot
    /// panic).
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, "a"), &Metadata::new().capability("search"))?;
    /// let entry = registry.lookup(&Key::new(ns, "a"))?.unwrap();
    /// assert!(entry.has_capability_named(&registry, "search"));
    /// assert!(!entry.has_capability_named(&registry, "plan")); // never registered
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn has_capability_named(&self, registry: &Registry, name: &str) -> bool {
        registry
            .capability(name)
            .is_some_and(|c| self.has_capability(c))
    }

    /// Its attributes, sorted by key.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Registry, ValueRef};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new().capability("search").health(Health::Healthy).node(Node(2)).attribute("region", "eu");
    /// registry.register(&p, &Key::new(ns, 1), &meta)?;
    /// let entry = registry.lookup(&Key::new(ns, 1))?.unwrap();
    /// let attrs: Vec<_> = entry.attributes().collect();
    /// assert_eq!(attrs, vec![("region", ValueRef::Str("eu"))]);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn attributes(&self) -> Attributes<'_> {
        Attributes {
            bytes: CapIds::of(self.words()).rest(),
            left: (self.head() >> 16) as usize & 0xff,
        }
    }

    /// The value of attribute `key`, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Registry, ValueRef};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new().capability("search").health(Health::Healthy).node(Node(2)).attribute("region", "eu");
    /// registry.register(&p, &Key::new(ns, 1), &meta)?;
    /// let entry = registry.lookup(&Key::new(ns, 1))?.unwrap();
    /// assert_eq!(entry.attribute("region"), Some(ValueRef::Str("eu")));
    /// assert_eq!(entry.attribute("missing"), None);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn attribute(&self, key: &str) -> Option<ValueRef<'_>> {
        self.attributes().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The metadata this entry was registered with, capability names resolved through
    /// `registry` (the one it was read from).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Key, Metadata, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new().capability("search").health(Health::Healthy).node(Node(2)).attribute("region", "eu");
    /// registry.register(&p, &Key::new(ns, 1), &meta)?;
    /// let entry = registry.lookup(&Key::new(ns, 1))?.unwrap();
    /// // Round trip: the entry's metadata, owned again.
    /// assert_eq!(entry.to_metadata(&registry), meta);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn to_metadata(&self, registry: &Registry) -> Metadata {
        let mut m = Metadata::new().health(self.health()).node(self.node());
        for c in self.capabilities() {
            if let Some(name) = registry.capability_name(c) {
                m = m.capability(&*name);
            }
        }
        for (k, v) in self.attributes() {
            m = m.attribute(k, v.to_owned());
        }
        m
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("pid", &self.pid)
            .field("health", &self.health())
            .field("node", &self.node())
            .field("capabilities", &self.capabilities().collect::<Vec<_>>())
            .field("attributes", &self.attributes().collect::<Vec<_>>())
            .finish()
    }
}

/// Iterator over an entry's attributes; see [`Entry::attributes`].
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    /// The encoded attributes not yet read (see `metadata`'s docs), then padding.
    bytes: &'a [u8],
    left: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (&'a str, ValueRef<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some((attribute, rest)) = read_attribute(self.bytes) else {
            self.left = 0;
            return None;
        };
        self.bytes = rest;
        Some(attribute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Health, Key};

    #[test]
    fn a_dozen_capabilities_and_a_few_short_attributes_stay_inline() {
        let registry = Registry::builder().shards(1).build().unwrap();
        let ns = registry.namespace("agents").unwrap();
        let p = registry.spawn();
        let meta = (0..12)
            .fold(Metadata::new(), |m, i| m.capability(format!("skill-{i}")))
            .health(Health::Healthy)
            .attribute("region", "eu-west-1")
            .attribute("zone", "az-2")
            .attribute("load", 7)
            .attribute("slots", 16);
        let key = Key::new(ns, "planner");
        registry.register(&p, &key, &meta).unwrap();
        let mut entry = Entry::new();
        assert!(registry.lookup_into(&key, &mut entry).unwrap());
        assert!(entry.len <= INLINE_WORDS, "{} words", entry.len);
        assert!(entry.spill.is_empty());
        assert_eq!(entry.capabilities().count(), 12);
        assert_eq!(entry.attributes().count(), 4);
    }
}
