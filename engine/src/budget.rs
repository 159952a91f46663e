//! Memory accounting, the global memory limit and per-namespace quotas (SPEC S4, P4).
//!
//! Every entry is charged [`roster_shard::entry_charge`] bytes: its arena block (head and
//! owner words, key, names, metadata, attributes, index positions), its postings and its
//! slot. The shard writer asks [`Budget::admit`] before it stores an entry and returns
//! the charge through [`Budget::release`] when the entry goes, by any path (unregister,
//! replacement of a dead holder's entry, death cleanup). Updates ask for the difference.
//!
//! The counters are atomics shared by all shard writers, and every reservation is a
//! compare-and-swap that only succeeds while the new total stays within the limit. So
//! the limit and the quotas are never exceeded, also while several shards admit entries
//! of one namespace at once: a reservation that would cross a limit fails, and one that
//! succeeded on the global counter but fails on a quota gives its bytes back. (While it
//! holds them, a concurrent admission elsewhere may be refused `RegistryFull` although
//! it would have fit a moment later: refusals can be conservative, never the reverse.)
//!
//! Per namespace, four words: `[max_entries + 1 | max_bytes + 1 | entries | bytes]`
//! (a stored 0 means no quota).

use std::sync::atomic::{AtomicU64, Ordering};

use roster_shard::{AtomicWords, Refusal};

use crate::key::namespace_of;

/// Per-namespace limits on entries and charged bytes. `None`: unlimited.
///
/// # Examples
///
/// ```
/// use roster::{ErrorKind, Key, Metadata, Quota, Registry};
///
/// let registry = Registry::builder().shards(2).build()?;
/// let ns = registry.namespace("tenant-a")?;
/// registry.set_quota(ns, Quota::new().max_entries(2))?;
/// let p = registry.spawn();
/// registry.register(&p, &Key::new(ns, 1u64), &Metadata::new())?;
/// registry.register(&p, &Key::new(ns, 2u64), &Metadata::new())?;
/// let err = registry.register(&p, &Key::new(ns, 3u64), &Metadata::new()).unwrap_err();
/// assert!(matches!(err.kind(), ErrorKind::QuotaExceeded { what: "entries", limit: 2, .. }));
/// // Freeing room lets writes succeed again.
/// registry.unregister(&p, &Key::new(ns, 1u64))?;
/// registry.register(&p, &Key::new(ns, 3u64), &Metadata::new())?;
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quota {
    /// Most entries. Entries of dead processes awaiting cleanup count until removed, but
    /// a registration refused by them first waits (up to its deadline) for that cleanup:
    /// no refusal is caused by processes that are already dead.
    pub max_entries: Option<u64>,
    /// Most charged bytes (see [`Registry::memory`](crate::Registry::memory)).
    pub max_bytes: Option<u64>,
}

impl Quota {
    /// No limits.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Quota;
    ///
    /// assert_eq!(Quota::new(), Quota { max_entries: None, max_bytes: None });
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn new() -> Quota {
        Quota::default()
    }

    /// At most `n` entries.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Quota;
    ///
    /// assert_eq!(Quota::new().max_entries(10).max_entries, Some(10));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn max_entries(mut self, n: u64) -> Quota {
        self.max_entries = Some(n);
        self
    }

    /// At most `bytes` charged bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::Quota;
    ///
    /// assert_eq!(Quota::new().max_bytes(1 << 20).max_bytes, Some(1 << 20));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn max_bytes(mut self, bytes: u64) -> Quota {
        self.max_bytes = Some(bytes);
        self
    }
}

/// What a namespace holds, as charged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Entries (including those of dead processes not yet cleaned up).
    pub entries: u64,
    /// Charged bytes.
    pub bytes: u64,
}

/// [`Refusal::code`]s: the limit in the low 2 bits, the namespace above them.
pub(crate) const FULL: u32 = 0;
pub(crate) const QUOTA_ENTRIES: u32 = 1;
pub(crate) const QUOTA_BYTES: u32 = 2;

fn refusal(kind: u32, ns: u32, limit: u64) -> Refusal {
    Refusal {
        code: kind | ns << 2,
        limit,
    }
}

/// The limit and namespace of a [`Refusal`] made here.
pub(crate) fn refused(r: Refusal) -> (u32, u32) {
    (r.code & 3, r.code >> 2)
}

const MAX_ENTRIES: u64 = 0;
const MAX_BYTES: u64 = 1;
const ENTRIES: u64 = 2;
const BYTES: u64 = 3;
const STRIDE: u64 = 4;

pub(crate) struct Budget {
    /// The global memory limit on charged bytes (`u64::MAX`: none).
    limit: u64,
    used: AtomicU64,
    /// Of `used`, the bytes of interned capability names (kept for the registry's life).
    names: AtomicU64,
    /// Per-namespace words, see the module docs.
    ns: AtomicWords,
}

/// Adds `delta` to `word` if the sum stays at or under `max`; never overshoots.
fn reserve(word: &AtomicU64, delta: u64, max: u64) -> bool {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        let Some(next) = cur.checked_add(delta).filter(|&n| n <= max) else {
            return false;
        };
        match word.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

impl Budget {
    pub(crate) fn new(limit: Option<u64>) -> Budget {
        Budget {
            limit: limit.unwrap_or(u64::MAX),
            used: AtomicU64::new(0),
            names: AtomicU64::new(0),
            ns: AtomicWords::new(8),
        }
    }

    /// Makes room for namespace `ns`'s words (called when the namespace is created).
    pub(crate) fn ensure_namespace(&self, ns: u32) {
        self.ns.ensure((ns as u64 + 1) * STRIDE);
    }

    fn word(&self, ns: u32, field: u64) -> Option<&AtomicU64> {
        self.ns.get(ns as u64 * STRIDE + field)
    }

    /// A namespace's quota word as a limit (`u64::MAX` when unset).
    fn max(&self, ns: u32, field: u64) -> u64 {
        self.word(ns, field)
            .map_or(0, |w| w.load(Ordering::Relaxed))
            .wrapping_sub(1)
    }

    pub(crate) fn set_quota(&self, ns: u32, quota: Quota) {
        let enc = |q: Option<u64>| q.map_or(0, |n| n.saturating_add(1));
        if let Some(w) = self.word(ns, MAX_ENTRIES) {
            w.store(enc(quota.max_entries), Ordering::Relaxed);
        }
        if let Some(w) = self.word(ns, MAX_BYTES) {
            w.store(enc(quota.max_bytes), Ordering::Relaxed);
        }
    }

    pub(crate) fn quota(&self, ns: u32) -> Quota {
        let dec = |m: u64| (m != u64::MAX).then_some(m);
        Quota {
            max_entries: dec(self.max(ns, MAX_ENTRIES)),
            max_bytes: dec(self.max(ns, MAX_BYTES)),
        }
    }

    pub(crate) fn usage(&self, ns: u32) -> Usage {
        let get = |f| self.word(ns, f).map_or(0, |w| w.load(Ordering::Relaxed));
        Usage {
            entries: get(ENTRIES),
            bytes: get(BYTES),
        }
    }

    /// Charged bytes over all namespaces, interned names included.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes charged for interned capability names.
    pub(crate) fn names(&self) -> u64 {
        self.names.load(Ordering::Relaxed)
    }

    /// Charges `bytes` for a newly interned name against the global limit (names belong
    /// to no namespace and stay for the registry's life). `false`: it does not fit.
    pub(crate) fn reserve_name(&self, bytes: u64) -> bool {
        if !reserve(&self.used, bytes, self.limit) {
            return false;
        }
        self.names.fetch_add(bytes, Ordering::Relaxed);
        true
    }

    pub(crate) fn limit(&self) -> Option<u64> {
        (self.limit != u64::MAX).then_some(self.limit)
    }

    /// Reserves an entry of `charge` bytes in the namespace of `key`, all or nothing.
    pub(crate) fn admit(&self, key: &[u64], charge: u64) -> Result<(), Refusal> {
        let ns = namespace_of(key);
        let (Some(entries), Some(bytes)) = (self.word(ns, ENTRIES), self.word(ns, BYTES)) else {
            // Keys are only made for created namespaces; refuse rather than lose count.
            return Err(refusal(QUOTA_ENTRIES, ns, 0));
        };
        if !reserve(&self.used, charge, self.limit) {
            return Err(refusal(FULL, ns, self.limit));
        }
        let max_entries = self.max(ns, MAX_ENTRIES);
        if !reserve(entries, 1, max_entries) {
            self.used.fetch_sub(charge, Ordering::Relaxed);
            return Err(refusal(QUOTA_ENTRIES, ns, max_entries));
        }
        let max_bytes = self.max(ns, MAX_BYTES);
        if !reserve(bytes, charge, max_bytes) {
            entries.fetch_sub(1, Ordering::Relaxed);
            self.used.fetch_sub(charge, Ordering::Relaxed);
            return Err(refusal(QUOTA_BYTES, ns, max_bytes));
        }
        Ok(())
    }

    /// Moves an entry's charge from `old` to `new` bytes, all or nothing.
    pub(crate) fn readmit(&self, key: &[u64], old: u64, new: u64) -> Result<(), Refusal> {
        let ns = namespace_of(key);
        let Some(bytes) = self.word(ns, BYTES) else {
            return Ok(());
        };
        if new <= old {
            self.used.fetch_sub(old - new, Ordering::Relaxed);
            bytes.fetch_sub(old - new, Ordering::Relaxed);
            return Ok(());
        }
        let grow = new - old;
        if !reserve(&self.used, grow, self.limit) {
            return Err(refusal(FULL, ns, self.limit));
        }
        let max_bytes = self.max(ns, MAX_BYTES);
        if !reserve(bytes, grow, max_bytes) {
            self.used.fetch_sub(grow, Ordering::Relaxed);
            return Err(refusal(QUOTA_BYTES, ns, max_bytes));
        }
        Ok(())
    }

    /// Returns a removed entry's charge.
    pub(crate) fn release(&self, key: &[u64], charge: u64) {
        let ns = namespace_of(key);
        self.used.fetch_sub(charge, Ordering::Relaxed);
        if let (Some(entries), Some(bytes)) = (self.word(ns, ENTRIES), self.word(ns, BYTES)) {
            entries.fetch_sub(1, Ordering::Relaxed);
            bytes.fetch_sub(charge, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_overshoot_and_give_back_on_failure() {
        let b = Budget::new(Some(1000));
        b.ensure_namespace(3);
        b.set_quota(3, Quota::new().max_entries(3).max_bytes(500));
        let key = [3u64 << 12, 7];
        assert_eq!(namespace_of(&key), 3);
        b.admit(&key, 200).unwrap();
        b.admit(&key, 200).unwrap();
        let e = b.admit(&key, 200).unwrap_err();
        assert_eq!((refused(e), e.limit), ((QUOTA_BYTES, 3), 500));
        assert_eq!(
            b.usage(3),
            Usage {
                entries: 2,
                bytes: 400
            }
        );
        assert_eq!(b.used(), 400);
        b.admit(&key, 100).unwrap();
        let e = b.admit(&key, 1).unwrap_err();
        assert_eq!((refused(e), e.limit), ((QUOTA_ENTRIES, 3), 3));
        let e = b.readmit(&key, 100, 300).unwrap_err();
        assert_eq!(refused(e).0, QUOTA_BYTES);
        b.readmit(&key, 100, 50).unwrap();
        assert_eq!(b.usage(3).bytes, 450);
        b.release(&key, 50);
        b.release(&key, 200);
        b.release(&key, 200);
        assert_eq!(b.usage(3), Usage::default());
        assert_eq!(b.used(), 0);
        b.set_quota(3, Quota::new());
        assert_eq!(b.quota(3), Quota::new());
        b.admit(&key, 1000).unwrap();
        let e = b.admit(&key, 1).unwrap_err();
        assert_eq!((refused(e), e.limit), ((FULL, 3), 1000));
    }
}
