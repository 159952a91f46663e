//! Metadata: capabilities (interned), health, node and a bounded map of typed attributes,
//! validated on the caller's thread (SPEC I4) and encoded into words for the shard:
//!
//! ```text
//! word 0      health:8 | capabilities:8 | attributes:8 | unused:8 | node:32
//! then bytes, packed back to back and zero-padded to a word at the end:
//! caps        capability ids, sorted and unique, as varints of their gaps (the first
//!             id, then each id less the one before)
//! attributes  each: varint(key_len << 3 | kind), varint(value_len), key bytes, value bytes
//! ```
//! Varints are LEB128. A value's bytes: bool, one byte; int, its two's complement in the
//! fewest little-endian bytes that sign-extend back (none for 0, one for -128..=127);
//! float, its 8 bits' bytes; str and bytes, themselves. So a typical attribute (a short
//! key, a small int or a short string) costs its bytes plus two, where one word of header
//! and one of padding each took 8. Capability ids are dense (interned from 0), so a gap
//! takes one byte where a `u32` took four. The peers' metadata (3 capabilities, health, a
//! 13-byte and an integer attribute) is 5 words, not 10. Attributes are sorted by key, so
//! equal metadata encodes to equal words.

use crate::error::{Error, ErrorKind};
use crate::key::{pack_bytes, words_for, Node};

/// A process's health as its owner reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Health {
    /// Not reported.
    #[default]
    Unknown,
    /// Working normally.
    Healthy,
    /// Working, with reduced capacity or quality.
    Degraded,
    /// Not working.
    Unhealthy,
}

impl std::fmt::Display for Health {
    /// `unknown`, `healthy`, `degraded` or `unhealthy`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        })
    }
}

impl Health {
    pub(crate) fn to_bits(self) -> u64 {
        match self {
            Health::Unknown => 0,
            Health::Healthy => 1,
            Health::Degraded => 2,
            Health::Unhealthy => 3,
        }
    }

    pub(crate) fn from_bits(b: u64) -> Health {
        match b & 0xff {
            1 => Health::Healthy,
            2 => Health::Degraded,
            3 => Health::Unhealthy,
            _ => Health::Unknown,
        }
    }
}

/// An interned capability name of one registry: see
/// [`Registry::capability`](crate::Registry::capability).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Capability(pub(crate) u32);

impl Capability {
    /// The capability's index in its registry's interner.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new().capability("search"))?;
    /// let c = registry.capability("search").unwrap();
    /// assert_eq!(registry.capability("search").map(|c| c.id()), Some(c.id()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn id(self) -> u32 {
        self.0
    }
}

/// A typed attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// UTF-8 text.
    Str(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// A borrowed attribute value, as read from an [`Entry`](crate::Entry).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ValueRef<'a> {
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// UTF-8 text.
    Str(&'a str),
    /// Raw bytes.
    Bytes(&'a [u8]),
}

impl ValueRef<'_> {
    /// An owned copy.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Value, ValueRef};
    ///
    /// let v = ValueRef::Str("eu");
    /// assert_eq!(v.to_owned(), Value::Str("eu".into()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn to_owned(&self) -> Value {
        match *self {
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(x) => Value::Float(x),
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}

/// Stored as the `i64` with the same bits (`v as i64`): read it back with `as u64`, so
/// every `u64` round-trips, and values above `i64::MAX` read as negative `Int`s.
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v as i64)
    }
}

/// As [`From<u64>`](#impl-From%3Cu64%3E-for-Value).
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Int(v as i64)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(v.into())
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Str(v.clone())
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

const KIND_BOOL: u64 = 0;
const KIND_INT: u64 = 1;
const KIND_FLOAT: u64 = 2;
const KIND_STR: u64 = 3;
const KIND_BYTES: u64 = 4;

/// Bytes of `i`'s shortest sign-extending little-endian form (0 for 0).
fn int_len(i: i64) -> usize {
    // Bits needed beyond the sign: a value fits `n` bytes if it survives truncation to
    // `8n` bits and sign extension back.
    let significant = 64 - (i ^ (i >> 63)).leading_zeros() as usize;
    if i == 0 {
        0
    } else {
        significant / 8 + 1
    }
}

/// `i` sign-extended from its low `len` bytes (`len <= 8`; 0 bytes is 0).
fn int_from(bytes: &[u8]) -> i64 {
    let mut le = [0u8; 8];
    le[..bytes.len()].copy_from_slice(bytes);
    let v = i64::from_le_bytes(le);
    match bytes.len() {
        0 => 0,
        n @ 1..=7 => {
            let shift = 64 - 8 * n as u32;
            v << shift >> shift
        }
        _ => v,
    }
}

/// Bytes of `v` as a LEB128 varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn push_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint from the front of `bytes`, and the bytes after it.
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

/// Bytes a capability id's gap takes at most (a `u32` as a varint): what the limit
/// check counts per name, before the names are interned.
const MAX_CAP_BYTES: usize = 5;

/// The capability ids of encoded metadata, in id order; [`CapIds::rest`] gives the
/// attribute bytes after them. Truncated or garbled bytes end the ids early.
pub(crate) struct CapIds<'a> {
    bytes: &'a [u8],
    left: usize,
    last: u32,
}

impl<'a> CapIds<'a> {
    /// The ids of the encoded metadata `meta` (its head word first).
    pub(crate) fn of(meta: &'a [u64]) -> CapIds<'a> {
        let head = meta.first().copied().unwrap_or(0);
        CapIds {
            bytes: bytemuck::cast_slice(meta.get(1..).unwrap_or(&[])),
            left: (head >> 8) as usize & 0xff,
            last: 0,
        }
    }

    /// The bytes after the ids: the attributes.
    pub(crate) fn rest(mut self) -> &'a [u8] {
        while self.next().is_some() {}
        self.bytes
    }
}

impl Iterator for CapIds<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match read_varint(self.bytes) {
            Some((gap, rest)) => {
                self.bytes = rest;
                self.last = self.last.wrapping_add(gap as u32);
                Some(self.last)
            }
            None => {
                (self.left, self.bytes) = (0, &[]);
                None
            }
        }
    }
}

/// The encoded bytes of one attribute, header included.
fn attribute_len(key: &str, value: &Value) -> usize {
    let (kind, len) = value.kind_and_len();
    varint_len((key.len() as u64) << 3 | kind) + varint_len(len as u64) + key.len() + len
}

/// Appends one attribute's encoding (see the module docs) to `out`.
fn push_attribute(key: &str, value: &Value, out: &mut Vec<u8>) {
    let (kind, len) = value.kind_and_len();
    push_varint((key.len() as u64) << 3 | kind, out);
    push_varint(len as u64, out);
    out.extend_from_slice(key.as_bytes());
    match value {
        Value::Bool(b) => out.push(*b as u8),
        Value::Int(i) => out.extend_from_slice(&i.to_le_bytes()[..len]),
        Value::Float(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        Value::Str(s) => out.extend_from_slice(s.as_bytes()),
        Value::Bytes(b) => out.extend_from_slice(b),
    }
}

/// The attribute at the front of `bytes`, and the bytes after it; `None` if they are not
/// an attribute's encoding (the engine wrote them, so only for corrupt input).
pub(crate) fn read_attribute(bytes: &[u8]) -> Option<((&str, ValueRef<'_>), &[u8])> {
    let (head, rest) = read_varint(bytes)?;
    let (len, rest) = read_varint(rest)?;
    let key_len = usize::try_from(head >> 3).ok()?;
    let len = usize::try_from(len).ok()?;
    let end = key_len.checked_add(len)?;
    let (kv, rest) = (rest.get(..end)?, rest.get(end..)?);
    let (key, val) = kv.split_at(key_len);
    let key = std::str::from_utf8(key).ok()?;
    let value = match head & 7 {
        KIND_BOOL => ValueRef::Bool(*val.first()? != 0),
        KIND_INT if len <= 8 => ValueRef::Int(int_from(val)),
        KIND_FLOAT => ValueRef::Float(f64::from_bits(u64::from_le_bytes(val.try_into().ok()?))),
        KIND_STR => ValueRef::Str(std::str::from_utf8(val).ok()?),
        KIND_BYTES => ValueRef::Bytes(val),
        _ => return None,
    };
    Some(((key, value), rest))
}

impl Value {
    /// The kind tag and the encoded value's length in bytes.
    fn kind_and_len(&self) -> (u64, usize) {
        match self {
            Value::Bool(_) => (KIND_BOOL, 1),
            Value::Int(i) => (KIND_INT, int_len(*i)),
            Value::Float(_) => (KIND_FLOAT, 8),
            Value::Str(s) => (KIND_STR, s.len()),
            Value::Bytes(b) => (KIND_BYTES, b.len()),
        }
    }

    fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(x) => ValueRef::Float(*x),
            Value::Str(s) => ValueRef::Str(s),
            Value::Bytes(b) => ValueRef::Bytes(b),
        }
    }
}

/// What a process registers with its key.
///
/// # Examples
///
/// ```
/// use roster::{Health, Metadata, Node};
///
/// let meta = Metadata::new()
///     .capability("plan")
///     .capability("search")
///     .health(Health::Healthy)
///     .node(Node(2))
///     .attribute("region", "eu-west")
///     .attribute("max_tasks", 8);
/// assert_eq!(meta.capabilities().count(), 2);
/// assert_eq!(meta.attributes().count(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    capabilities: Vec<String>,
    health: Health,
    node: Node,
    /// Sorted by key, keys unique.
    attributes: Vec<(String, Value)>,
}

impl Metadata {
    /// Empty metadata: no capability, [`Health::Unknown`], [`Node::LOCAL`], no attribute.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Metadata, Node, ValueRef};
    ///
    /// let meta = Metadata::new();
    /// assert_eq!(meta.capabilities().count(), 0);
    /// assert_eq!(meta.get_health(), Health::Unknown);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Adds a capability (a set: adding one twice keeps one).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Metadata, Node, ValueRef};
    ///
    /// let meta = Metadata::new().capability("search").capability("search");
    /// assert_eq!(meta.capabilities().collect::<Vec<_>>(), ["search"]);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn capability(mut self, name: impl Into<String>) -> Metadata {
        let name = name.into();
        if !self.capabilities.contains(&name) {
            self.capabilities.push(name);
        }
        self
    }

    /// Sets the health.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Metadata, Node, ValueRef};
    ///
    /// assert_eq!(Metadata::new().health(Health::Healthy).get_health(), Health::Healthy);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn health(mut self, health: Health) -> Metadata {
        self.health = health;
        self
    }

    /// Sets the node the process runs on.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Metadata, Node, ValueRef};
    ///
    /// assert_eq!(Metadata::new().node(Node(4)).get_node(), Node(4));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn node(mut self, node: Node) -> Metadata {
        self.node = node;
        self
    }

    /// Sets an attribute (a map: setting a key again replaces its value).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Metadata, Node, ValueRef};
    ///
    /// let meta = Metadata::new().attribute("slots", 4).attribute("slots", 8);
    /// assert_eq!(meta.attributes().collect::<Vec<_>>(), [("slots", ValueRef::Int(8))]);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn attribute(mut self, key: impl Into<String>, value: impl Into<Value>) -> Metadata {
        let key = key.into();
        let value = value.into();
        match self
            .attributes
            .binary_search_by(|(k, _)| k.as_str().cmp(&key))
        {
            Ok(i) => self.attributes[i].1 = value,
            Err(i) => self.attributes.insert(i, (key, value)),
        }
        self
    }

    /// The capability names, in the order added.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Metadata, Node, ValueRef};
    ///
    /// let meta = Metadata::new().capability("plan").capability("search");
    /// assert_eq!(meta.capabilities().collect::<Vec<_>>(), ["plan", "search"]);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn capabilities(&self) -> impl Iterator<Item = &str> + '_ {
        self.capabilities.iter().map(String::as_str)
    }

    /// The health.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Metadata, Node, ValueRef};
    ///
    /// assert_eq!(Metadata::new().get_health(), Health::Unknown);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn get_health(&self) -> Health {
        self.health
    }

    /// The node.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Metadata, Node, ValueRef};
    ///
    /// assert_eq!(Metadata::new().get_node(), Node::LOCAL);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn get_node(&self) -> Node {
        self.node
    }

    /// The attributes, sorted by key.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Health, Metadata, Node, ValueRef};
    ///
    /// let meta = Metadata::new().attribute("b", true).attribute("a", "x");
    /// let keys: Vec<_> = meta.attributes().map(|(k, _)| k).collect();
    /// assert_eq!(keys, ["a", "b"]); // sorted by key
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn attributes(&self) -> impl Iterator<Item = (&str, ValueRef<'_>)> + '_ {
        self.attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref()))
    }

    /// Checks every limit, interns the capabilities with `intern`, and encodes.
    pub(crate) fn encode(
        &self,
        limits: &Limits,
        mut intern: impl FnMut(&str) -> Result<u32, Error>,
    ) -> Result<Vec<u64>, Error> {
        let invalid = |field, limit, actual| {
            Err(Error::new(ErrorKind::InvalidMetadata {
                field,
                limit,
                actual,
            }))
        };
        if self.capabilities.len() > limits.max_capabilities {
            return invalid(
                "capabilities",
                limits.max_capabilities,
                self.capabilities.len(),
            );
        }
        if self.attributes.len() > limits.max_attributes {
            return invalid("attributes", limits.max_attributes, self.attributes.len());
        }
        let mut attr_bytes = 0;
        for c in &self.capabilities {
            if c.is_empty() || c.len() > limits.max_capability_len {
                return invalid("capability name", limits.max_capability_len, c.len());
            }
        }
        for (k, v) in &self.attributes {
            if k.is_empty() || k.len() > limits.max_attribute_key_len {
                return invalid("attribute key", limits.max_attribute_key_len, k.len());
            }
            let (_, len) = v.kind_and_len();
            if len > limits.max_attribute_value_len {
                return invalid("attribute value", limits.max_attribute_value_len, len);
            }
            attr_bytes += attribute_len(k, v);
        }
        let body = self.capabilities.len() * MAX_CAP_BYTES + attr_bytes;
        let words = 1 + words_for(body);
        if words * 8 > limits.max_metadata_bytes {
            return invalid("metadata", limits.max_metadata_bytes, words * 8);
        }

        let mut caps = self
            .capabilities
            .iter()
            .map(|c| intern(c))
            .collect::<Result<Vec<u32>, Error>>()?;
        caps.sort_unstable();
        caps.dedup();

        let mut out = Vec::with_capacity(words);
        out.push(
            self.health.to_bits()
                | (caps.len() as u64) << 8
                | (self.attributes.len() as u64) << 16
                | (self.node.0 as u64) << 32,
        );
        let mut bytes = Vec::with_capacity(body);
        let mut last = 0;
        for &c in &caps {
            push_varint(u64::from(c - last), &mut bytes);
            last = c;
        }
        let cap_bytes = bytes.len();
        for (k, v) in &self.attributes {
            push_attribute(k, v, &mut bytes);
        }
        debug_assert_eq!(bytes.len() - cap_bytes, attr_bytes);
        pack_bytes(&bytes, |w| out.push(w));
        // `words` counted each name at its most, before interning; ids can also collapse
        // (two names of one id, or `Registry::validate`'s placeholder id for all).
        debug_assert!(out.len() <= words);
        Ok(out)
    }
}

/// Size limits a registry enforces on keys and metadata. Every limit is checked on the
/// caller's thread before anything reaches a shard; a breach names the field and the limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest string name, in bytes (default 1024; at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN)).
    pub max_name_len: usize,
    /// Most capabilities per entry (default 32; at most 255).
    pub max_capabilities: usize,
    /// Longest capability name, in bytes (default 128).
    pub max_capability_len: usize,
    /// Most attributes per entry (default 32; at most 255).
    pub max_attributes: usize,
    /// Longest attribute key, in bytes (default 128; at most 65535).
    pub max_attribute_key_len: usize,
    /// Longest string or bytes attribute value, in bytes (default 1024).
    pub max_attribute_value_len: usize,
    /// Largest encoded metadata, in bytes (default 4096; at most 262136), each capability
    /// counted at the 5 bytes its id takes at most.
    pub max_metadata_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_len: 1024,
            max_capabilities: 32,
            max_capability_len: 128,
            max_attributes: 32,
            max_attribute_key_len: 128,
            max_attribute_value_len: 1024,
            max_metadata_bytes: 4096,
        }
    }
}

impl Limits {
    /// Checks the limits against what the encodings can hold.
    pub(crate) fn check(&self) -> Result<(), String> {
        let max_meta = roster_shard::MAX_META_WORDS * 8;
        let checks = [
            ("max_name_len", self.max_name_len, crate::key::MAX_NAME_LEN),
            ("max_capabilities", self.max_capabilities, 255),
            ("max_attributes", self.max_attributes, 255),
            ("max_attribute_key_len", self.max_attribute_key_len, 65535),
            (
                "max_attribute_value_len",
                self.max_attribute_value_len,
                u32::MAX as usize,
            ),
            ("max_metadata_bytes", self.max_metadata_bytes, max_meta),
        ];
        for (name, value, max) in checks {
            if value > max {
                return Err(format!("{name} is {value}, at most {max} is supported"));
            }
        }
        if self.max_name_len == 0 {
            return Err("max_name_len is 0: no string name could be registered".into());
        }
        if self.max_metadata_bytes < 8 {
            return Err(format!(
                "max_metadata_bytes is {}, at least 8 (one word) is needed",
                self.max_metadata_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(m: &Metadata) -> Result<Vec<u64>, Error> {
        let mut names: Vec<String> = Vec::new();
        m.encode(&Limits::default(), |c| {
            Ok(match names.iter().position(|n| n == c) {
                Some(i) => i as u32,
                None => {
                    names.push(c.to_owned());
                    names.len() as u32 - 1
                }
            })
        })
    }

    /// Reads back every attribute of `words` (an encoding's attribute bytes).
    fn decode_attributes(m: &Metadata) -> Vec<(String, Value)> {
        let words = encode(m).unwrap();
        let mut bytes = CapIds::of(&words).rest();
        let mut out = Vec::new();
        for _ in 0..(words[0] >> 16) & 0xff {
            let ((k, v), rest) = read_attribute(bytes).expect("an attribute");
            out.push((k.to_owned(), v.to_owned()));
            bytes = rest;
        }
        assert!(bytes.iter().all(|&b| b == 0), "only padding is left");
        out
    }

    #[test]
    fn every_value_round_trips_through_the_packed_encoding() {
        let ints = [
            0,
            1,
            -1,
            127,
            128,
            -128,
            -129,
            255,
            65_535,
            -65_536,
            1 << 40,
            i64::MAX,
            i64::MIN,
        ];
        for i in ints {
            let m = Metadata::new().attribute("n", i);
            assert_eq!(decode_attributes(&m), [("n".to_owned(), Value::Int(i))]);
            let (_, len) = Value::Int(i).kind_and_len();
            assert!(len == 8 || int_from(&i.to_le_bytes()[..len + 1]) == i);
            assert!(
                len == 0 || int_from(&i.to_le_bytes()[..len - 1]) != i,
                "{i}: {len} is the fewest"
            );
        }
        let m = Metadata::new()
            .attribute("b", true)
            .attribute("f", -2.5)
            .attribute("s", "eu-west-1-az2")
            .attribute("empty", "")
            .attribute("raw", vec![0u8, 255, 7])
            .attribute("k".repeat(120), "v".repeat(300));
        let want: Vec<_> = m
            .attributes()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(decode_attributes(&m), want);
    }

    #[test]
    fn the_peers_metadata_packs_into_five_words() {
        let m = Metadata::new()
            .capability("plan")
            .capability("search")
            .capability("shard-1")
            .health(Health::Healthy)
            .attribute("region", "eu-west-1-az2")
            .attribute("load", 7i64);
        assert_eq!(encode(&m).unwrap().len(), 5);
    }

    #[test]
    fn capability_ids_round_trip_as_gaps() {
        let m = Metadata::new()
            .capability("a")
            .capability("b")
            .capability("c")
            .capability("d")
            .attribute("k", 1i64);
        let ids = |c: &str| {
            Ok(match c {
                "a" => u32::MAX,
                "b" => 0,
                "c" => 127,
                _ => 300,
            })
        };
        let words = m.encode(&Limits::default(), ids).unwrap();
        assert_eq!(
            CapIds::of(&words).collect::<Vec<_>>(),
            [0, 127, 300, u32::MAX]
        );
        // Gaps of 1, 1, 2 and 5 bytes, then the attribute.
        let ((k, v), _) = read_attribute(CapIds::of(&words).rest()).expect("an attribute");
        assert_eq!((k, v), ("k", ValueRef::Int(1)));
        // A head that claims ids the words do not hold ends them early.
        assert_eq!(CapIds::of(&words[..1]).count(), 0);
        assert_eq!(CapIds::of(&[]).count(), 0);
    }

    /// `Registry::validate` encodes with one placeholder id for every capability: the
    /// encoding shrinks as the ids collapse, and the limits are checked on the names.
    #[test]
    fn capabilities_of_one_id_encode_as_one() {
        let m = Metadata::new()
            .capability("plan")
            .capability("search")
            .capability("shard-1")
            .attribute("region", "eu-west-1-az2");
        let words = m.encode(&Limits::default(), |_| Ok(0)).unwrap();
        assert_eq!((words[0] >> 8) & 0xff, 1, "one capability id");
        // The head, then one byte of id and the attribute's 21 bytes in 3 words.
        assert_eq!(words.len(), 1 + 3);
    }

    #[test]
    fn truncated_attributes_read_as_none() {
        let mut bytes = Vec::new();
        push_attribute("region", &Value::Str("eu".into()), &mut bytes);
        for cut in 0..bytes.len() {
            assert!(read_attribute(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        assert!(read_attribute(&bytes).is_some());
    }

    #[test]
    fn equal_metadata_encodes_equally_whatever_the_order() {
        let a = Metadata::new().attribute("b", 2).attribute("a", "x");
        let b = Metadata::new().attribute("a", "x").attribute("b", 2);
        assert_eq!(encode(&a).unwrap(), encode(&b).unwrap());
        let c = Metadata::new().attribute("a", "x").attribute("a", "y");
        assert_eq!(c.attributes().count(), 1);
    }

    #[test]
    fn each_limit_names_its_field() {
        let l = Limits::default();
        let cases = [
            (
                (0..33).fold(Metadata::new(), |m, i| m.capability(format!("c{i}"))),
                "capabilities",
            ),
            (
                Metadata::new().capability("x".repeat(129)),
                "capability name",
            ),
            (Metadata::new().capability(""), "capability name"),
            (
                (0..33).fold(Metadata::new(), |m, i| m.attribute(format!("a{i}"), i)),
                "attributes",
            ),
            (
                Metadata::new().attribute("k".repeat(129), 1),
                "attribute key",
            ),
            (
                Metadata::new().attribute("k", "v".repeat(1025)),
                "attribute value",
            ),
            (
                (0..8).fold(Metadata::new(), |m, i| {
                    m.attribute(format!("a{i}"), "v".repeat(1000))
                }),
                "metadata",
            ),
        ];
        for (m, field) in cases {
            match encode(&m).unwrap_err().kind() {
                ErrorKind::InvalidMetadata { field: f, .. } => assert_eq!(*f, field),
                other => panic!("{other:?}"),
            }
        }
        assert!(l.check().is_ok());
        let bad = Limits {
            max_capabilities: 300,
            ..Limits::default()
        };
        assert!(bad.check().unwrap_err().contains("max_capabilities"));
    }
}
