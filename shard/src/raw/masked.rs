//! A slice whose length is a power of two, indexed by a mask with no bounds check: how a
//! registry picks a key's shard from its hash on every lookup.

use std::ops::Deref;

/// A boxed slice of a power-of-two length; [`MaskedSlice::masked`] indexes it with
/// `i & (len - 1)`, which is always in bounds, so no check is compiled. Derefs to the
/// slice for everything else.
pub struct MaskedSlice<T> {
    /// Never empty, its length a power of two, never changed after `new`.
    items: Box<[T]>,
    /// `items.len() - 1`.
    mask: u64,
}

impl<T> MaskedSlice<T> {
    /// The slice of `items`, or `items` back if its length is not a power of two (zero
    /// included).
    pub fn new(items: Vec<T>) -> Result<MaskedSlice<T>, Vec<T>> {
        if !items.len().is_power_of_two() {
            return Err(items);
        }
        let mask = items.len() as u64 - 1;
        Ok(MaskedSlice {
            items: items.into_boxed_slice(),
            mask,
        })
    }

    /// `len - 1`: the bits of an index that [`MaskedSlice::masked`] keeps.
    #[inline]
    pub fn mask(&self) -> u64 {
        self.mask
    }

    /// The item at `i mod len`.
    #[inline(always)]
    pub fn masked(&self, i: u64) -> &T {
        // SAFETY: `items.len()` is a power of two, `mask = len - 1`, and neither changes
        // after `new` (both fields are private and only `new` writes them), so
        // `i & mask <= len - 1`, an index in bounds; `len - 1` fits `usize` (it is a
        // length minus one), so the cast keeps every bit.
        unsafe { self.items.get_unchecked((i & self.mask) as usize) }
    }
}

impl<T> Deref for MaskedSlice<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.items
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    #[test]
    fn masked_wraps_and_only_powers_of_two_are_taken() {
        let s = MaskedSlice::new(vec![10, 11, 12, 13]).unwrap();
        assert_eq!(s.mask(), 3);
        assert_eq!([0, 1, 5, u64::MAX].map(|i| *s.masked(i)), [10, 11, 11, 13]);
        assert_eq!(s.len(), 4);
        assert_eq!(*MaskedSlice::new(vec![7]).unwrap().masked(9), 7);
        assert_eq!(MaskedSlice::new(vec![1, 2, 3]).err(), Some(vec![1, 2, 3]));
        assert!(MaskedSlice::<u8>::new(Vec::new()).is_err());
    }
}
