//! The writer's owner lists: owner -> arena offsets of its entry blocks, so an owner's
//! death removes exactly its entries, and each block's tail keeps its place here.
//!
//! One map of every owner rehashes them all when it grows: with a process per entry, a
//! registration at 917,504 owners in one shard waited 35-52 ms for it, past the 10 ms
//! deadline (`bulk_load 2000000 owners`). So the lists live in [`MAPS`] maps picked by
//! the owner's hash, and a growth rehashes 1/64th of the owners. Offsets are kept in 32
//! bits, as postings keep them (the arena holds at most 2^32 words): 4 bytes an entry.

use hashbrown::HashMap;

/// Maps the owners spread over; a power of two.
const MAPS: usize = 64;

/// See the module docs.
pub(crate) struct OwnerLists {
    maps: Box<[HashMap<u64, Vec<u32>>]>,
}

impl Default for OwnerLists {
    fn default() -> Self {
        OwnerLists {
            maps: (0..MAPS).map(|_| HashMap::new()).collect(),
        }
    }
}

/// The map `owner` lives in: the top bits of a multiplicative hash, so dense owners
/// (pids count up) and sparse ones spread alike.
fn map_of(owner: u64) -> usize {
    (owner.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - MAPS.trailing_zeros())) as usize
}

impl OwnerLists {
    /// `owner`'s list, made empty if it has none.
    pub(crate) fn list(&mut self, owner: u64) -> &mut Vec<u32> {
        self.maps[map_of(owner)].entry(owner).or_default()
    }

    pub(crate) fn get(&self, owner: u64) -> Option<&Vec<u32>> {
        self.maps[map_of(owner)].get(&owner)
    }

    pub(crate) fn get_mut(&mut self, owner: u64) -> Option<&mut Vec<u32>> {
        self.maps[map_of(owner)].get_mut(&owner)
    }

    pub(crate) fn remove(&mut self, owner: u64) -> Option<Vec<u32>> {
        self.maps[map_of(owner)].remove(&owner)
    }

    /// Owners with a list.
    pub(crate) fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }

    #[cfg(all(test, not(roster_loom)))]
    pub(crate) fn is_empty(&self) -> bool {
        self.maps.iter().all(HashMap::is_empty)
    }

    /// Every list.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Vec<u32>> {
        self.maps.iter().flat_map(HashMap::values)
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    #[test]
    fn lists_are_per_owner_across_maps() {
        let mut o = OwnerLists::default();
        for owner in 0..1000u64 {
            for k in 0..=owner % 3 {
                o.list(owner).push((owner * 10 + k) as u32);
            }
        }
        assert_eq!(o.len(), 1000);
        assert_eq!(o.get(7), Some(&vec![70, 71]));
        assert_eq!(
            o.values().map(Vec::len).sum::<usize>(),
            333 * 3 + 334 + 333 * 2
        );
        assert!(
            o.maps.iter().all(|m| m.len() > 5),
            "owners spread over the maps"
        );
        assert_eq!(o.remove(7), Some(vec![70, 71]));
        assert_eq!(o.get(7), None);
        assert_eq!(o.remove(7), None);
        o.get_mut(8).unwrap().clear();
        for owner in 0..1000 {
            o.remove(owner);
        }
        assert!(o.is_empty());
    }
}
