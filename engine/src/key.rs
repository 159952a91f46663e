//! Keys: a namespace, a node and a local name (an integer or a UTF-8 string).
//!
//! A key is encoded into words for the shard, on the caller's stack (no allocation):
//!
//! ```text
//! word 0: node:32 | namespace:20 | name_len:12   (name_len = 0xfff for an integer name)
//! word 1..: the name: one word for an integer, else its bytes, zero-padded to words
//! ```

use std::fmt;

use arrayvec::ArrayVec;

use crate::error::{Error, ErrorKind};

/// Longest string name any registry accepts, in bytes (what fits the shard's key words).
pub const MAX_NAME_LEN: usize = (roster_shard::MAX_KEY_WORDS - 1) * 8;

/// Most namespaces one registry holds.
pub const MAX_NAMESPACES: u32 = (1 << 20) - 1;

const INT_NAME: u64 = 0xfff;

/// A namespace of one registry, from [`Registry::namespace`](crate::Registry::namespace).
/// No operation in one namespace observes or changes another's entries. It belongs to
/// the registry that made it: any other registry refuses it
/// ([`ErrorKind::ForeignNamespace`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(pub(crate) u32, pub(crate) u32);

impl Namespace {
    /// The namespace's index in its registry.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Name, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// assert_eq!(ns.id(), registry.namespace("agents")?.id());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn id(self) -> u32 {
        self.0
    }
}

/// The node (machine, cluster member) a key or a process belongs to. Node ids are the
/// embedder's; [`Node::LOCAL`] is the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node(pub u32);

impl Node {
    /// The default node, 0.
    pub const LOCAL: Node = Node(0);
}

/// A key's local name: an integer or a UTF-8 string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Name<'a> {
    /// An integer name.
    Int(u64),
    /// A string name, 1 byte to the registry's `max_name_len`.
    Str(&'a str),
}

impl From<u64> for Name<'_> {
    fn from(n: u64) -> Self {
        Name::Int(n)
    }
}

impl From<u32> for Name<'_> {
    fn from(n: u32) -> Self {
        Name::Int(n.into())
    }
}

/// What an integer literal becomes (`Key::new(ns, 7)`): a negative value is stored as its
/// two's complement (`n as i64 as u64`), so `-1` and `u64::MAX` name the same key.
impl From<i32> for Name<'_> {
    fn from(n: i32) -> Self {
        Name::Int(n as i64 as u64)
    }
}

impl From<usize> for Name<'_> {
    fn from(n: usize) -> Self {
        Name::Int(n as u64)
    }
}

impl<'a> From<&'a str> for Name<'a> {
    fn from(s: &'a str) -> Self {
        Name::Str(s)
    }
}

impl<'a> From<&'a String> for Name<'a> {
    fn from(s: &'a String) -> Self {
        Name::Str(s)
    }
}

impl fmt::Display for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Int(n) => write!(f, "{n}"),
            Name::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A registry key: namespace + node + local name. Borrowed, so building one costs nothing.
///
/// # Examples
///
/// ```
/// use roster::{Key, Node, Registry};
///
/// let registry = Registry::builder().shards(1).build()?;
/// let agents = registry.namespace("agents")?;
/// let by_name = Key::new(agents, "planner");
/// let by_number = Key::new(agents, 42).on_node(Node(3));
/// assert_ne!(by_name, by_number);
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key<'a> {
    namespace: Namespace,
    node: Node,
    name: Name<'a>,
}

impl<'a> Key<'a> {
    /// A key on [`Node::LOCAL`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Name, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let by_name = Key::new(ns, "planner");
    /// let by_number = Key::new(ns, 7u64);
    /// assert_ne!(by_name, by_number);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn new(namespace: Namespace, name: impl Into<Name<'a>>) -> Key<'a> {
        Key {
            namespace,
            node: Node::LOCAL,
            name: name.into(),
        }
    }

    /// The same key on another node.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Name, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let here = Key::new(ns, "planner");
    /// let there = here.on_node(Node(2));
    /// assert_ne!(here, there);
    /// assert_eq!(there.node(), Node(2));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn on_node(self, node: Node) -> Key<'a> {
        Key { node, ..self }
    }

    /// The key's namespace.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Name, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// assert_eq!(Key::new(ns, 1).namespace(), ns);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn namespace(&self) -> Namespace {
        self.namespace
    }

    /// The key's node.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Name, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// assert_eq!(Key::new(ns, 1).node(), Node::LOCAL);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn node(&self) -> Node {
        self.node
    }

    /// The key's local name.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Name, Node, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// assert_eq!(Key::new(ns, "planner").name(), Name::Str("planner"));
    /// assert_eq!(Key::new(ns, 7u64).name(), Name::Int(7));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn name(&self) -> Name<'a> {
        self.name
    }

    /// The two encoded words of a key whose name needs no more: an integer, or a valid
    /// string name of at most 8 bytes (its length word and [`short_word`]), exactly as
    /// [`Key::encode`] writes them; `None` for any other name.
    #[inline]
    pub(crate) fn two_words(&self, max_name_len: usize) -> Option<[u64; 2]> {
        let head = (self.node.0 as u64) << 32 | (self.namespace.0 as u64) << 12;
        match self.name {
            Name::Int(n) => Some([head | INT_NAME, n]),
            Name::Str(s) if (1..=8).contains(&s.len()) && s.len() <= max_name_len => {
                Some([head | s.len() as u64, short_word(s.as_bytes())])
            }
            Name::Str(_) => None,
        }
    }

    /// The encoded words of a key of at most [`SMALL_WORDS`]: an integer, or a valid
    /// string name of 1 to 24 bytes, exactly as [`Key::encode`] writes them, and how many
    /// they are; `None` for any other name. No buffer and no copy through memory: whole
    /// words are loaded as words, and the last 1 to 8 bytes by [`short_word`].
    #[inline]
    pub(crate) fn small_words(&self, max_name_len: usize) -> Option<([u64; SMALL_WORDS], usize)> {
        let head = (self.node.0 as u64) << 32 | (self.namespace.0 as u64) << 12;
        match self.name {
            Name::Int(n) => Some(([head | INT_NAME, n, 0, 0], 2)),
            Name::Str(s) if (1..=SMALL_NAME).contains(&s.len()) && s.len() <= max_name_len => {
                let b = s.as_bytes();
                let mut w = [head | b.len() as u64, 0, 0, 0];
                // The words before the last (0 to 2 of them) are whole.
                let whole = (b.len() - 1) / 8;
                for (i, c) in b[..8 * whole].chunks_exact(8).enumerate() {
                    w[1 + i] = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
                }
                w[1 + whole] = short_word(&b[8 * whole..]);
                Some((w, 2 + whole))
            }
            Name::Str(_) => None,
        }
    }

    /// Encodes the key into shard words in `w` (cleared first), checking the name against
    /// `max_name_len`. The buffer is the caller's: returning a 2 KiB `ArrayVec` by value
    /// would cost a copy of all of it on every lookup.
    #[inline]
    pub(crate) fn encode(&self, max_name_len: usize, w: &mut KeyWords) -> Result<(), Error> {
        w.clear();
        self.encode_onto(max_name_len, w)
    }

    /// Checks the name against `max_name_len`: the only way a key can be invalid.
    #[inline]
    pub(crate) fn check(&self, max_name_len: usize) -> Result<(), Error> {
        match self.name {
            Name::Int(_) => Ok(()),
            Name::Str(s) => check_name(s, max_name_len),
        }
    }

    /// [`Key::encode`] appending to `w` (not cleared), which must have room for
    /// [`MAX_KEY_WORDS`](roster_shard::MAX_KEY_WORDS) more words.
    #[inline]
    pub(crate) fn encode_onto<const N: usize>(
        &self,
        max_name_len: usize,
        w: &mut ArrayVec<u64, N>,
    ) -> Result<(), Error> {
        // Never more than the words hold, whatever the caller's limit (a watch filter
        // encodes with no limit of its own).
        self.check(max_name_len.min(MAX_NAME_LEN))?;
        let head = (self.node.0 as u64) << 32 | (self.namespace.0 as u64) << 12;
        match self.name {
            Name::Int(n) => {
                w.push(head | INT_NAME);
                w.push(n);
            }
            Name::Str(s) => {
                w.push(head | s.len() as u64);
                pack_bytes(s.as_bytes(), |word| w.push(word));
            }
        }
        Ok(())
    }
}

/// [`Key::check`] of a string name, out of line: integer names are always valid.
fn check_name(s: &str, max_name_len: usize) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::new(ErrorKind::InvalidKey {
            reason: "empty name",
            limit: 1,
            actual: 0,
        }));
    }
    if s.len() > max_name_len {
        return Err(Error::new(ErrorKind::InvalidKey {
            reason: "name too long (bytes)",
            limit: max_name_len,
            actual: s.len(),
        }));
    }
    Ok(())
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ns{}/node{}/{}",
            self.namespace.0, self.node.0, self.name
        )
    }
}

/// Words of the keys [`Key::small_words`] encodes: the head and up to 3 of name.
pub(crate) const SMALL_WORDS: usize = 4;

/// Longest string name [`Key::small_words`] encodes, in bytes.
const SMALL_NAME: usize = 8 * (SMALL_WORDS - 1);

/// Encoded key words; room for the longest key, on the stack.
pub(crate) type KeyWords = ArrayVec<u64, { roster_shard::MAX_KEY_WORDS }>;

/// The namespace id stored in an encoded key's first word.
pub(crate) fn namespace_of(words: &[u64]) -> u32 {
    words
        .first()
        .map_or(0, |w| (w >> 12) as u32 & MAX_NAMESPACES)
}

/// Packs bytes into native-endian words, zero-padding the last one.
pub(crate) fn pack_bytes(bytes: &[u8], mut push: impl FnMut(u64)) {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        push(u64::from_ne_bytes(c.try_into().expect("8 bytes")));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        push(u64::from_ne_bytes(last));
    }
}

/// [`pack_bytes`] of 1 to 8 bytes, its one word, with no copy through memory: two
/// overlapping 4-byte reads for 4 to 8 bytes, three single bytes for 1 to 3 (wyhash
/// reads short inputs so).
#[inline]
pub(crate) fn short_word(b: &[u8]) -> u64 {
    debug_assert!((1..=8).contains(&b.len()));
    let n = b.len();
    let le = if n >= 4 {
        let lo = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let hi = u64::from(u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]));
        lo | hi << (8 * (n - 4))
    } else {
        let (first, mid, last) = (u64::from(b[0]), u64::from(b[n / 2]), u64::from(b[n - 1]));
        first | mid << (8 * (n / 2)) | last << (8 * (n - 1))
    };
    // Byte `i` at bits `8i`, as `from_le_bytes` puts it; `pack_bytes` reads native order.
    u64::from_ne_bytes(le.to_le_bytes())
}

/// Words needed for `len` bytes.
pub(crate) fn words_for(len: usize) -> usize {
    len.div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_word_packs_as_pack_bytes_does() {
        let text = b"agent-7\xffz";
        for n in 1..=8 {
            for start in 0..=text.len() - n {
                let b = &text[start..start + n];
                let mut packed = Vec::new();
                pack_bytes(b, |w| packed.push(w));
                assert_eq!(packed, [short_word(b)], "{b:?}");
            }
        }
    }

    #[test]
    fn small_words_encode_as_encode_does() {
        let ns = Namespace(3, 1);
        let text = "abcdefghijklmnopqrstuvwxyz0123456789";
        let mut names: Vec<Key> = (1..=text.len()).map(|n| Key::new(ns, &text[..n])).collect();
        names.push(Key::new(ns, 77u64).on_node(Node(5)));
        names.push(Key::new(ns, "ünï-cödé-näme"));
        for key in &names {
            let mut words = KeyWords::new();
            key.encode(usize::MAX, &mut words).unwrap();
            match key.small_words(usize::MAX) {
                Some((w, n)) => assert_eq!(&w[..n], &words[..], "{key}"),
                None => assert!(words.len() > SMALL_WORDS, "{key}"),
            }
        }
        // Invalid names are left to `encode`, which says why.
        assert!(Key::new(ns, "").small_words(usize::MAX).is_none());
        assert!(Key::new(ns, "abcdefghij").small_words(9).is_none());
        assert!(Key::new(ns, "abcdefghi").small_words(9).is_some());
    }

    impl Key<'_> {
        fn words(&self, max: usize) -> Result<KeyWords, Error> {
            let mut w = KeyWords::new();
            self.encode(max, &mut w).map(|()| w)
        }
    }

    #[test]
    fn int_and_string_names_never_encode_alike() {
        let ns = Namespace(5, 0);
        let a = Key::new(ns, 0x6261u64).words(64).unwrap();
        let b = Key::new(ns, "ab").words(64).unwrap();
        assert_ne!(a, b);
        assert_eq!(namespace_of(&a), 5);
        assert_eq!(namespace_of(&b), 5);
    }

    #[test]
    fn two_words_are_the_encoding_of_every_name_that_has_two() {
        let names = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "agent-1",
            "agent-12",
            "agent-123",
        ];
        for max in [0, 3, 8, 64] {
            for key in names
                .iter()
                .map(|n| Key::new(Namespace(3, 0), *n).on_node(Node(9)))
                .chain([Key::new(Namespace(4, 0), u64::MAX)])
            {
                let full = key.words(max).ok().filter(|w| w.len() == 2);
                assert_eq!(
                    key.two_words(max).map(|w| w.to_vec()),
                    full.map(|w| w.to_vec()),
                    "{key:?} under {max}"
                );
            }
        }
    }

    #[test]
    fn node_and_namespace_are_part_of_the_key() {
        let k = Key::new(Namespace(1, 0), "x");
        let e = k.words(64).unwrap();
        assert_ne!(e, k.on_node(Node(2)).words(64).unwrap());
        assert_ne!(e, Key::new(Namespace(2, 0), "x").words(64).unwrap());
    }

    #[test]
    fn name_limits_are_checked_and_named() {
        let ns = Namespace(0, 0);
        let err = Key::new(ns, "").words(64).unwrap_err();
        assert!(err.to_string().contains("empty name"), "{err}");
        let long = "x".repeat(65);
        let err = Key::new(ns, long.as_str()).words(64).unwrap_err();
        assert!(err.to_string().contains("limit 64"), "{err}");
        let max = "y".repeat(MAX_NAME_LEN);
        let w = Key::new(ns, max.as_str()).words(MAX_NAME_LEN).unwrap();
        assert_eq!(w.len(), roster_shard::MAX_KEY_WORDS);
    }

    /// S6: a name longer than any key holds is refused, whatever limit the caller asks
    /// for (it used to overflow the word buffer).
    #[test]
    fn names_past_the_word_limit_are_refused_under_any_limit() {
        let name = "z".repeat(3000);
        let err = Key::new(Namespace(0, 0), name.as_str())
            .words(usize::MAX)
            .unwrap_err();
        assert!(err.to_string().contains("limit 2032"), "{err}");
    }

    #[test]
    fn string_names_of_255_bytes_and_more_work() {
        let name = "é".repeat(200);
        let w = Key::new(Namespace(0, 0), name.as_str())
            .words(1024)
            .unwrap();
        assert_eq!(w.len(), 1 + words_for(400));
    }
}
