//! Zeroed memory from the OS, and huge pages for big mappings.
//!
//! [`Zeroed`] is an array of atomics in one zeroed allocation, never moved or resized:
//! the slot tables' and the line cache's. Zeroed memory comes from the OS untouched, so
//! a big table costs its page faults as it fills, not one pass of stores while the
//! writer holds a write (SPEC L7). The global allocator zeroes with a pass of stores for
//! alignments above 16, so arrays of 1 MiB or more are mapped from the OS directly where
//! it has `mmap`.
//!
//! Huge pages are a hint to the OS, never a requirement.
//!
//! A lookup at a million keys touches a random slot and a random arena block; with 4 KiB
//! pages each touch is also a TLB miss whose page walk may itself miss the cache, so a
//! hit costs up to four dependent memory accesses instead of two. Linux's transparent
//! huge pages back a region with 2 MiB pages when asked (`madvise(MADV_HUGEPAGE)`; most
//! distributions ship THP in `madvise` mode, where nothing is backed so unless asked).
//! Small regions stay on small pages, so a small registry keeps its small footprint (huge
//! pages round a region's resident size up to 2 MiB): the arena is advised past its first
//! [`HUGE_FROM`] bytes, and a [`Zeroed`] array of at least [`HUGE_FROM`] bytes is advised
//! whole, mapped to start on a huge page's boundary (smaller ones are not advised).
//!
//! Elsewhere, under Miri and loom, and when the kernel refuses (THP off), this does
//! nothing, and everything works the same, only slower at scale.
//!
//! It is opt-in (`ShardConfig::huge_pages`, for slot tables, the arena and the line
//! cache's slabs after its first): lookups may gain, writes pay. The line cache gains
//! most, since a hit reads one random line and nothing else: in `peers` at a million
//! keys, one thread, 9.6-10.2 against 7.2-7.7 Mops/s without huge pages (its doubling
//! tables of then); but `bulk_load 2000000 lines` had its p99.99 at 2.8-4.0 ms against
//! 0.28-0.51 ms, and 3 and 11 calls past the 10 ms deadline against none, the writer
//! taking each huge page's fault (zeroing 2 MiB). For slot tables, measured on a
//! 2-core KVM guest, `lookup_cost 1000000 20000000` ran at 5.06 against 4.47 Mops/s
//! (medians of four alternating rounds) in one set and 4.39 against 4.38 in another,
//! and `peers` showed no gain; but the writer takes the faults, each zeroing 2 MiB (and,
//! with THP's `defrag` at `madvise`, compacting memory first when no huge page is free),
//! and `bulk_load 2000000`'s p99.99 went from 0.35-1.8 ms to 1.7-5.6 ms. Write deadlines
//! (SPEC L1) come first by default.

use crate::sync::{AtomicPtr, AtomicU64, OwnU32};

/// Bytes of a huge page (x86-64 and most arm64 Linux kernels).
pub const HUGE_PAGE: usize = 2 << 20;

/// The arena is advised from this many bytes into it, and arrays of fewer bytes not at
/// all: below it, small pages.
pub const HUGE_FROM: usize = 4 << 20;

/// Advises the OS to back the 2 MiB-aligned part of `[ptr + from, ptr + len)` with huge
/// pages. `ptr` must start a mapping of `len` bytes that the caller owns.
#[cfg(all(target_os = "linux", not(miri), not(roster_loom)))]
pub fn advise_huge(ptr: *mut u8, len: usize, from: usize) {
    let base = ptr as usize;
    let (Some(start), Some(end)) = (
        base.checked_add(from)
            .and_then(|a| a.checked_next_multiple_of(HUGE_PAGE)),
        base.checked_add(len).map(|e| e / HUGE_PAGE * HUGE_PAGE),
    ) else {
        return;
    };
    if end <= start {
        return;
    }
    // SAFETY: `[start, end)` lies inside the caller's mapping `[ptr, ptr + len)` (start is
    // rounded up past `ptr`, end down below `ptr + len`, both without overflow, checked
    // above) and is page-aligned. MADV_HUGEPAGE
    // changes how the kernel backs the pages, never their contents or protection, so it
    // cannot invalidate any reference into them. A refusal (EINVAL where THP is off) is
    // harmless and ignored.
    unsafe {
        libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
    }
}

/// No huge-page advice off Linux, under Miri or under loom.
#[cfg(not(all(target_os = "linux", not(miri), not(roster_loom))))]
pub fn advise_huge(ptr: *mut u8, len: usize, from: usize) {
    let _ = (ptr, len, from);
}

/// A type whose all-zero bytes are a valid value: atomics, and `repr(C)` structs and
/// arrays of them.
///
/// # Safety
///
/// All-zero bytes must be a valid value of the type, and the type must need no drop.
pub unsafe trait Zeroable: Sized {
    /// The all-zero value, built field by field (loom's atomics are not plain words).
    #[cfg(roster_loom)]
    fn zero() -> Self;
}

// SAFETY: an atomic pointer's all-zero bytes are the null pointer, and it needs no drop.
unsafe impl<T> Zeroable for AtomicPtr<T> {
    #[cfg(roster_loom)]
    fn zero() -> AtomicPtr<T> {
        AtomicPtr::new(std::ptr::null_mut())
    }
}

// SAFETY: an atomic integer's all-zero bytes are the value 0, and it needs no drop.
unsafe impl Zeroable for AtomicU64 {
    #[cfg(roster_loom)]
    fn zero() -> AtomicU64 {
        AtomicU64::new(0)
    }
}

// SAFETY: as for `AtomicU64`.
unsafe impl Zeroable for OwnU32 {
    #[cfg(roster_loom)]
    fn zero() -> OwnU32 {
        OwnU32::new(0)
    }
}

/// `len` zero-valued `T`s in one allocation, never moved or resized (see the module
/// docs).
#[cfg(not(roster_loom))]
pub struct Zeroed<T: Zeroable> {
    /// Start of the array: a live allocation of `len` values (see `Zeroed::new`).
    ptr: std::ptr::NonNull<T>,
    len: usize,
    /// The mapping `ptr` lies in, if it came from `mmap` (else from the global
    /// allocator): its start and length.
    map: Option<(std::ptr::NonNull<u8>, usize)>,
}

// SAFETY: `Zeroed` owns its values like a `Box<[T]>` does, so it may move to or be
// shared with another thread when a `Box<[T]>` may.
#[cfg(not(roster_loom))]
unsafe impl<T: Zeroable + Send> Send for Zeroed<T> {}
// SAFETY: as for `Send`: shared access only hands out `&[T]`.
#[cfg(not(roster_loom))]
unsafe impl<T: Zeroable + Sync> Sync for Zeroed<T> {}

#[cfg(not(roster_loom))]
impl<T: Zeroable> Zeroed<T> {
    const MAP_AT_LEAST: usize = 1 << 20;

    /// `len` zero values (on huge pages past [`HUGE_FROM`] if `huge`), or `None` if the
    /// size overflows or is zero, or the memory cannot be had.
    pub fn new(len: usize, huge: bool) -> Option<Zeroed<T>> {
        Self::make(len, huge, HUGE_FROM)
    }

    /// `len` zero values on huge pages whole (from a huge page's boundary, the last huge
    /// page's rest unused) if they take 1 MiB or more, as [`Zeroed::new`] puts arrays
    /// of [`HUGE_FROM`] bytes or more: for an array that is worth a huge page of its
    /// own (the line cache's slabs).
    pub fn new_on_huge_pages(len: usize) -> Option<Zeroed<T>> {
        Self::make(len, true, Self::MAP_AT_LEAST)
    }

    /// [`Zeroed::new`], arrays of `whole_from` bytes or more on huge pages whole if
    /// `huge`.
    fn make(len: usize, huge: bool, whole_from: usize) -> Option<Zeroed<T>> {
        let layout = std::alloc::Layout::array::<T>(len).ok()?;
        if layout.size() == 0 {
            return None;
        }
        #[cfg(unix)]
        if layout.size() >= Self::MAP_AT_LEAST && layout.align() <= 4096 {
            // An array of `whole_from` bytes or more on huge pages goes on them whole:
            // mapped with a huge page's slack, it starts on a huge page's boundary, and
            // its whole huge pages (the last one's rest included) lie in the mapping.
            let whole = huge && layout.size() >= whole_from;
            // The whole huge pages an array on them takes.
            let span = if whole {
                layout.size().checked_next_multiple_of(HUGE_PAGE)?
            } else {
                layout.size()
            };
            let map_len = if whole {
                span.checked_add(HUGE_PAGE)?
            } else {
                span
            };
            // SAFETY: an anonymous private mapping of a non-zero size at an address of the
            // kernel's choosing has no preconditions; the result is checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            let base = std::ptr::NonNull::new(p.cast::<u8>())?;
            let skip = if whole {
                (p as usize).next_multiple_of(HUGE_PAGE) - p as usize
            } else {
                0
            };
            // `skip < HUGE_PAGE` (the slack) when `whole`, else 0: the array's `size`
            // bytes from `p + skip` (and, when `whole`, `span` bytes) lie inside the
            // mapping.
            let start = p.cast::<u8>().wrapping_add(skip);
            if whole {
                advise_huge(start, span, 0);
            } else if huge {
                advise_huge(start, layout.size(), HUGE_FROM);
            }
            // Page-aligned (so aligned for `T`, checked above) and zero-filled by the
            // kernel.
            let ptr = std::ptr::NonNull::new(start.cast::<T>())?;
            return Some(Zeroed {
                ptr,
                len,
                map: Some((base, map_len)),
            });
        }
        let _ = huge;
        // SAFETY: `layout` has a non-zero size (checked above), as `alloc_zeroed` requires.
        let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
        let ptr = std::ptr::NonNull::new(p)?;
        Some(Zeroed {
            ptr,
            len,
            map: None,
        })
    }

    /// Bytes of the array.
    pub fn bytes(&self) -> u64 {
        (std::mem::size_of::<T>() * self.len) as u64
    }

    /// Faults in every page of a mapped array now (`madvise(MADV_POPULATE_WRITE)`,
    /// Linux 5.14 and later), as zero pages of its own, on huge pages where it was
    /// advised onto them: for an array no other thread uses yet, so that the thread
    /// that will write it takes none of its faults. A refusal (an older kernel) leaves
    /// the pages to fault as they are touched: whether it did (`true` for an array not
    /// mapped, whose memory came zeroed and touched from the allocator).
    pub fn populate(&self) -> bool {
        #[cfg(all(target_os = "linux", not(miri)))]
        if self.map.is_some() {
            // SAFETY: `[ptr, ptr + bytes())` lies in the private anonymous mapping `new`
            // made, still mapped (unmapped only in `Drop`), and `ptr` is page-aligned.
            // MADV_POPULATE_WRITE faults pages in as a write would, without writing:
            // every value keeps its contents (zero, for pages not touched before), so no
            // reference into the array is invalidated and no value changes.
            return unsafe {
                libc::madvise(
                    self.ptr.as_ptr().cast(),
                    self.bytes() as usize,
                    libc::MADV_POPULATE_WRITE,
                ) == 0
            };
        }
        self.map.is_none()
    }

    /// The array's start, with the allocation's own provenance (it may reach every
    /// value, as no pointer made through a reference to some of them would).
    pub fn as_mut_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

#[cfg(not(roster_loom))]
impl<T: Zeroable> std::ops::Deref for Zeroed<T> {
    type Target = [T];

    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY:
        // 1. `ptr` is a live allocation of `len` values, aligned for `T` (a page
        //    boundary, checked to suffice in `new`, or the allocator honouring
        //    `Layout::array::<T>`), freed only in `Drop`, which needs `&mut self`.
        // 2. Every value is initialised: the memory was zero-filled, and all-zero bytes
        //    are a valid `T` (`Zeroable`).
        // 3. Only shared references are made, so the values are mutated only through
        //    what `T` allows through `&T` (atomics).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(not(roster_loom))]
impl<T: Zeroable> Drop for Zeroed<T> {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::array::<T>(self.len).expect("made from it");
        #[cfg(unix)]
        if let Some((base, map_len)) = self.map {
            // SAFETY: `base` and `map_len` are exactly those `mmap` returned and was asked
            // for, mapped once and unmapped only here; `&mut self` proves no borrow of
            // the values is alive. `T` needs no drop (`Zeroable`).
            unsafe { libc::munmap(base.as_ptr().cast(), map_len) };
            return;
        }
        // SAFETY: `ptr` came from `alloc_zeroed` with this same layout (`map` is
        // `None`), and is freed once, here, with no borrow alive (`&mut self`); `T` needs
        // no drop (`Zeroable`).
        unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), layout) };
    }
}

/// Loom's atomics are not plain words: a boxed slice, built value by value.
#[cfg(roster_loom)]
pub struct Zeroed<T: Zeroable>(Box<[T]>);

#[cfg(roster_loom)]
impl<T: Zeroable> Zeroed<T> {
    /// `len` zero values (`None` if `len` is zero).
    pub fn new(len: usize, huge: bool) -> Option<Zeroed<T>> {
        let _ = huge;
        (len > 0).then(|| Zeroed((0..len).map(|_| T::zero()).collect()))
    }

    /// [`Zeroed::new`]: no huge pages under loom.
    pub fn new_on_huge_pages(len: usize) -> Option<Zeroed<T>> {
        Self::new(len, true)
    }

    /// Bytes of the array.
    pub fn bytes(&self) -> u64 {
        std::mem::size_of_val(&*self.0) as u64
    }

    /// The array's start.
    pub fn as_mut_ptr(&self) -> *mut T {
        self.0.as_ptr().cast_mut()
    }

    /// Nothing to fault in under loom.
    pub fn populate(&self) -> bool {
        true
    }
}

#[cfg(roster_loom)]
impl<T: Zeroable> std::ops::Deref for Zeroed<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;
    use crate::sync::Ordering;

    #[test]
    fn zeroed_arrays_read_zero_and_keep_what_is_stored() {
        // (Under Miri, the allocator's case only: a million atomic loads take minutes.)
        let cases: &[(usize, bool)] = if cfg!(miri) {
            &[(1000, false)]
        } else {
            &[(1000, false), (1 << 17, false), (1 << 20, true)]
        };
        for &(len, huge) in cases {
            let a = Zeroed::<AtomicU64>::new(len, huge).expect("memory");
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|w| w.load(Ordering::Relaxed) == 0));
            if huge && cfg!(all(target_os = "linux", not(miri))) {
                // 8 MiB on huge pages: mapped to start on a huge page's boundary.
                assert_eq!(a.as_ptr() as usize % HUGE_PAGE, 0);
            }
            a[len - 1].store(7, Ordering::Relaxed);
            a[0].store(7, Ordering::Relaxed);
            assert_eq!(a[0].load(Ordering::Relaxed), 7);
            assert_eq!(a[len - 1].load(Ordering::Relaxed), 7);
        }
    }
}
