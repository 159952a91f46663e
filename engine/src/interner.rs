//! Capability names and their dense ids, interned without a stall.
//!
//! One map behind one lock rehashes every name when it grows: at 1.8M distinct names
//! that held a registration (and every other interning caller) for 360 ms, past any
//! write deadline (SPEC L1, L7; `bulk_load 2000000 distinct`). Here the name -> id maps
//! are [`SHARDS`] small ones, picked by the name's hash, so a growth rehashes 1/256th of
//! the names; and id -> name is an append-only [`boxcar::Vec`], whose buckets never move,
//! so a lookup of a name by id takes no lock and growth copies nothing. An id is the
//! name's index there, so ids stay dense from 0.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Name -> id maps; a power of two.
const SHARDS: usize = 256;

/// One shard of the name -> id map.
type Ids = RwLock<HashMap<Arc<str>, u32>>;

/// The interner; see the module docs.
pub(crate) struct Interner {
    ids: Box<[Ids]>,
    names: boxcar::Vec<Arc<str>>,
    hasher: ahash::RandomState,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            ids: (0..SHARDS).map(|_| RwLock::default()).collect(),
            names: boxcar::Vec::new(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl Interner {
    fn shard(&self, name: &str) -> &Ids {
        &self.ids[self.hasher.hash_one(name) as usize & (SHARDS - 1)]
    }

    /// The id of `name`, if it was interned.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        let ids = self.shard(name).read().unwrap_or_else(|e| e.into_inner());
        ids.get(name).copied()
    }

    /// The id of `name`, interning it if it is new and `admit` agrees (`admit` runs
    /// only for a new name, with the shard's lock held, so a name is charged once).
    pub(crate) fn intern<E>(
        &self,
        name: &str,
        admit: impl FnOnce() -> Result<(), E>,
    ) -> Result<u32, E> {
        if let Some(id) = self.get(name) {
            return Ok(id);
        }
        let mut ids = self.shard(name).write().unwrap_or_else(|e| e.into_inner());
        if let Some(&id) = ids.get(name) {
            return Ok(id);
        }
        admit()?;
        let name: Arc<str> = name.into();
        let id = u32::try_from(self.names.push(name.clone())).expect("fewer than 2^32 names");
        ids.insert(name, id);
        Ok(id)
    }

    /// The name of id `id`.
    pub(crate) fn name(&self, id: u32) -> Option<Arc<str>> {
        self.names.get(id as usize).cloned()
    }

    /// Names interned.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.names.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_stable_and_charged_once() {
        let i = Interner::default();
        let mut charged = 0;
        for round in 0..2 {
            for k in 0..1000 {
                let id = i
                    .intern(&format!("cap-{k}"), || {
                        charged += 1;
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                assert_eq!(i.name(id).as_deref(), Some(format!("cap-{k}").as_str()));
                if round == 0 {
                    assert_eq!(id, k, "ids follow first use");
                }
            }
        }
        assert_eq!((charged, i.len()), (1000, 1000));
        assert_eq!(i.get("cap-7"), Some(7));
        assert_eq!(i.get("nope"), None);
        assert_eq!(i.name(1000), None);
    }

    #[test]
    fn a_refused_name_is_not_interned() {
        let i = Interner::default();
        assert_eq!(i.intern("x", || Err("full")), Err("full"));
        assert_eq!((i.get("x"), i.len()), (None, 0));
        assert_eq!(i.intern("x", || Ok::<(), ()>(())), Ok(0));
    }

    #[test]
    fn concurrent_interning_gives_one_id_per_name() {
        let i = Arc::new(Interner::default());
        let ids: Vec<Vec<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let i = &i;
                    s.spawn(move || {
                        (0..500)
                            .map(|k| i.intern(&format!("n{k}"), || Ok::<(), ()>(())).unwrap())
                            .collect()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.windows(2).all(|w| w[0] == w[1]));
        let mut all = ids[0].clone();
        all.sort_unstable();
        assert_eq!(all, (0..500).collect::<Vec<u32>>());
    }
}
