//! Batched lookups: [`Registry::lookup_many`].
//!
//! At a million entries a single lookup is bound by memory latency, not by instructions:
//! it takes two cache misses one after the other (the slot gives the block's address; the
//! block gives the key to compare, the metadata and the owner). A batch breaks that chain
//! across keys. It checks every key first (so an invalid or foreign key is refused before
//! any is answered), then works through groups of [`GROUP`] keys in three passes:
//!
//! 1. encode and hash each key and prefetch its home slot;
//! 2. peek (unvalidated) at each now-cached slot and prefetch the entry's block and, by
//!    the slot's owner hint (a pid's index), the owner's process-table word;
//! 3. read each key exactly as [`Registry::lookup_into`] does (seqlock-validated, liveness
//!    checked), by now mostly from cache.
//!
//! The misses of a group overlap, so a batch costs about one miss latency per group pass
//! instead of two per key. (Before the slot held the owner's hint, the state word could
//! be prefetched only by a third pass peeking at each cached block's owner word, which
//! cost about a fifth of a batch's rate on a 2-core Xeon guest.) The prefetches are
//! hints: a slot that moved or a block reused between passes only costs a miss in pass
//! 3, never a wrong answer. A registry of at most [`CACHED_ENTRIES`] entries misses
//! little, and there the passes are skipped: its keys are read one by one.
//!
//! What bounds a batch at a million entries is the lines it fetches more than its passes:
//! a hit fetches the slot's line and two or three of the block's, and the 2-core guest
//! fetched 57-72 million random lines a second from arrays of 128-256 MiB (`line_rate`),
//! so there a batch of 3-line hits cannot pass about 20 million keys a second (it ran
//! 14-15). A software pipeline across keys instead of groups (stage 1 of key `i`, stage
//! 2 of key `i - d`, the read of key `i - 2d`) was slower at every distance `d` of 8, 16
//! and 32, with batches of 16 and of 256 keys (12.1-13.6 Mops/s against 14.4-15.0).

use arrayvec::ArrayVec;
use roster_shard::{Shard, MAX_KEY_WORDS};

use crate::entry::Entry;
use crate::error::Error;
use crate::key::{Key, KeyWords};
use crate::registry::Registry;
use crate::stats::OpKind;

/// Keys per group: enough misses in flight to cover the memory latency, few enough that
/// the group's lines stay in L1 between passes.
const GROUP: usize = 16;

/// Words of a group's longer names (two-word keys stay in [`Words::Two`]): room for the
/// longest name and 32 words more. A group closes early, before a name that might not
/// fit: a group of 3-word keys (string names of 9 to 16 bytes) after eleven.
const GROUP_WORDS: usize = GROUP * 2 + MAX_KEY_WORDS;

/// Entries up to which a registry is taken to be in cache, where a batch reads its keys
/// one by one ([`Registry::lookup_each`]). On a 2-core Xeon guest (2 MiB of L2 a core),
/// at 10k entries the prefetch passes were a third of a batched key's instructions
/// (264.8 a key with them, 182.5 without, callgrind) for 0-4% of its rate; at 30k
/// prefetching batches ran 1.2x single lookups, and key-by-key ones did not.
const CACHED_ENTRIES: usize = 16 * 1024;

/// One key of the group being looked up: its words, its hash and shard.
struct Pending<'r> {
    words: Words,
    hash: u64,
    shard: &'r Shard,
}

/// Where a pending key's words are.
#[derive(Clone, Copy)]
enum Words {
    /// A two-word key (an integer name, or a string name of at most 8 bytes; the common
    /// case): its words, read as [`Registry::lookup_into`]'s inlined case reads them,
    /// with no buffer and a key compare of known length.
    Two([u64; 2]),
    /// Any other key: its words' range in the group's buffer.
    Encoded(usize, usize),
}

impl Registry {
    /// Looks up every key of `keys` and calls `each(index, entry)` for each, in order,
    /// with `Some(entry)` for a live entry and `None` for a miss: the results of
    /// [`Registry::lookup`], at a fraction of the cost per key when the registry is larger
    /// than the CPU caches, because the cache misses of many keys overlap (see the module
    /// docs of `batch.rs`). Lock-free like a single lookup; allocates nothing unless an
    /// entry's metadata exceeds [`INLINE_WORDS`](crate::INLINE_WORDS). The `&Entry` is
    /// valid for the call only; clone what you keep.
    ///
    /// # Errors
    ///
    /// For the first key that is of another registry's namespace or invalid, before any
    /// key is looked up (`each` is not called), the error [`Registry::lookup`] gives it:
    /// [`ErrorKind::ForeignNamespace`](crate::ErrorKind::ForeignNamespace) or
    /// [`ErrorKind::InvalidKey`](crate::ErrorKind::InvalidKey);
    /// [`ErrorKind::ShuttingDown`](crate::ErrorKind::ShuttingDown) if the registry shuts
    /// down, possibly after `each`
    /// ran for a prefix of `keys`.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Pid, Registry};
    ///
    /// let registry = Registry::builder().shards(2).build()?;
    /// let ns = registry.namespace("workers")?;
    /// let worker = registry.spawn();
    /// for i in 0..3u64 {
    ///     registry.register(&worker, &Key::new(ns, i), &Metadata::new())?;
    /// }
    /// let keys: Vec<Key> = (0..5u64).map(|i| Key::new(ns, i)).collect();
    /// let mut pids: Vec<Option<Pid>> = vec![None; keys.len()];
    /// registry.lookup_many(&keys, |i, entry| pids[i] = entry.map(|e| e.pid()))?;
    /// let w = Some(worker.pid());
    /// assert_eq!(pids, [w, w, w, None, None]);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn lookup_many(
        &self,
        keys: &[Key<'_>],
        mut each: impl FnMut(usize, Option<&Entry>),
    ) -> Result<(), Error> {
        let _timer = self.op_timer(OpKind::LookupMany);
        self.check_open()?;
        let max_name_len = self.limits().max_name_len;
        // Every key is checked before any is answered, in `lookup`'s order: namespace,
        // then name. Pass 1 relies on it.
        for key in keys {
            self.own(key.namespace())?;
            key.check(max_name_len)?;
        }
        if self.len() <= CACHED_ENTRIES {
            return self.lookup_each(keys, each);
        }
        let mut words = ArrayVec::<u64, GROUP_WORDS>::new();
        let mut group = ArrayVec::<Pending<'_>, GROUP>::new();
        let mut entry = Entry::new();
        let mut next = 0;
        while next < keys.len() {
            let first = next;
            words.clear();
            group.clear();
            // Pass 1: encode, route, prefetch the home slots.
            while next < keys.len() && !group.is_full() {
                let key = &keys[next];
                // Every key's namespace and name were checked above: no limit here.
                let (at, hash) = match key.two_words(usize::MAX) {
                    // Two words, hashed as an array (the hasher's loop unrolls for a
                    // length of 2), as a single lookup does.
                    Some(two) => (Words::Two(two), self.key_hash(&two)),
                    // The group closes before a longer name that might not fit.
                    None if words.remaining_capacity() < MAX_KEY_WORDS => break,
                    None => {
                        let start = words.len();
                        key.encode_onto(max_name_len, &mut words)?;
                        let at = Words::Encoded(start, words.len());
                        (at, self.key_hash(&words[start..]))
                    }
                };
                // Routed once, after either arm.
                let shard = self.shard_of(hash);
                let key_words = match at {
                    Words::Two(_) => 2,
                    Words::Encoded(start, end) => end - start,
                };
                shard.prefetch_slot(hash, key_words);
                group.push(Pending {
                    words: at,
                    hash,
                    shard,
                });
                next += 1;
            }
            // Pass 2: prefetch the blocks and, by the slots' owner hints, the owners'
            // state words.
            for p in &group {
                if let Some(index) = p.shard.prefetch_entry(p.hash) {
                    self.procs().prefetch(index);
                }
            }
            // Pass 3: the validated reads.
            for (i, p) in group.iter().enumerate() {
                let found = match p.words {
                    Words::Two(two) => self.read_entry(p.shard, p.hash, &two, &mut entry)?,
                    Words::Encoded(start, end) => {
                        self.read_encoded(p.shard, p.hash, &words[start..end], &mut entry)?
                    }
                };
                each(first + i, found.then_some(&entry));
            }
        }
        Ok(())
    }

    /// [`Registry::lookup_many`] of a registry small enough to stay in cache: each key
    /// read as [`Registry::lookup_into`] reads it, with no prefetch passes, which cost
    /// more than they save where nothing misses (the keys are checked already).
    fn lookup_each(
        &self,
        keys: &[Key<'_>],
        mut each: impl FnMut(usize, Option<&Entry>),
    ) -> Result<(), Error> {
        let max_name_len = self.limits().max_name_len;
        let mut words = KeyWords::new();
        let mut entry = Entry::new();
        for (i, key) in keys.iter().enumerate() {
            // Every key's namespace and name were checked: no limit here.
            let found = match key.two_words(usize::MAX) {
                Some(two) => {
                    let (hash, shard) = self.route(&two);
                    self.read_entry(shard, hash, &two, &mut entry)?
                }
                None => {
                    key.encode(max_name_len, &mut words)?;
                    let (hash, shard) = self.route(&words);
                    self.read_encoded(shard, hash, &words, &mut entry)?
                }
            };
            each(i, found.then_some(&entry));
        }
        Ok(())
    }

    /// Pass 3 of [`Registry::lookup_many`] for a key of more than two words: out of
    /// line, so the loop inlines the two-word case alone.
    #[inline(never)]
    fn read_encoded(
        &self,
        shard: &Shard,
        hash: u64,
        words: &[u64],
        entry: &mut Entry,
    ) -> Result<bool, Error> {
        self.read_entry(shard, hash, words, entry)
    }
}
