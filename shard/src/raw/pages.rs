//! Zeroed memory from the OS, and huge pages for big mappings.
//!
//! [`Zeroed`] is an array of atomics in one zeroed allocation, never moved or resized:
//! the slot tables' and the line cache's. Zeroed memory comes from the OS untouched, so
//! a big table costs its page faults as it fills, not one pass of stores while the
//! writer holds a write (SPEC L7). The global allocator zeroes with a pass of stores for
//! alignments above 16, so arrays of 1 MiB or more are mapped from the OS directly where
//! it has `mmap`, and [`Zeroed::release`] can give their pages back while readers may
//! still read them (they read zeros).
//!
//! Huge pages are a hint to the OS, never a requirement.
//!
//! A lookup at a million keys touches a random slot and a random arena block; with 4 KiB
//! pages each touch is also a TLB miss whose page walk may itself miss the cache, so a
//! hit costs up to four dependent memory accesses instead of two. Linux's transparent
//! huge pages back a region with 2 MiB pages when asked (`madvise(MADV_HUGEPAGE)`; most
//! distributions ship THP in `madvise` mode, where nothing is backed so unless asked).
//! Only regions past [`HUGE_FROM`] bytes are advised, so a small registry keeps its small
//! footprint: huge pages round a region's resident size up to 2 MiB.
//!
//! Elsewhere, under Miri and loom, and when the kernel refuses (THP off), this does
//! nothing, and everything works the same, only slower at scale.
//!
//! It is opt-in (`ShardConfig::huge_pages`): lookups may gain, writes pay. Measured on a
//! 2-core KVM guest, `lookup_cost 1000000 20000000` ran at 5.06 against 4.47 Mops/s
//! (medians of four alternating rounds) in one set and 4.39 against 4.38 in another,
//! and `peers` showed no gain; but the writer takes the faults, each zeroing 2 MiB (and,
//! with THP's `defrag` at `madvise`, compacting memory first when no huge page is free),
//! and `bulk_load 2000000`'s p99.99 went from 0.35-1.8 ms to 1.7-5.6 ms. Write deadlines
//! (SPEC L1) come first by default.

/// Bytes of a huge page (x86-64 and most arm64 Linux kernels).
pub const HUGE_PAGE: usize = 2 << 20;

/// Regions are advised from this many bytes into them: below it, small pages.
pub const HUGE_FROM: usize = 4 << 20;

/// Advises the OS to back the 2 MiB-aligned part of `[ptr + HUGE_FROM, ptr + len)` with
/// huge pages. `ptr` must start a mapping of `len` bytes that the caller owns.
#[cfg(all(target_os = "linux", not(miri), not(roster_loom)))]
pub fn advise_huge(ptr: *mut u8, len: usize) {
    let base = ptr as usize;
    let (Some(start), Some(end)) = (
        base.checked_add(HUGE_FROM)
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
pub fn advise_huge(ptr: *mut u8, len: usize) {
    let _ = (ptr, len);
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

/// `len` zero-valued `T`s in one allocation, never moved or resized (see the module
/// docs).
#[cfg(not(roster_loom))]
pub struct Zeroed<T: Zeroable> {
    /// Start of the array: a live allocation of `len` values (see `Zeroed::new`).
    ptr: std::ptr::NonNull<T>,
    len: usize,
    /// Whether `ptr` came from `mmap` (else from the global allocator).
    mapped: bool,
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
        let layout = std::alloc::Layout::array::<T>(len).ok()?;
        if layout.size() == 0 {
            return None;
        }
        #[cfg(unix)]
        if layout.size() >= Self::MAP_AT_LEAST && layout.align() <= 4096 {
            // SAFETY: an anonymous private mapping of a non-zero size at an address of the
            // kernel's choosing has no preconditions; the result is checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    layout.size(),
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            if huge {
                advise_huge(p.cast(), layout.size());
            }
            // Page-aligned (so aligned for `T`, checked above) and zero-filled by the
            // kernel.
            let ptr = std::ptr::NonNull::new(p.cast::<T>())?;
            return Some(Zeroed {
                ptr,
                len,
                mapped: true,
            });
        }
        let _ = huge;
        // SAFETY: `layout` has a non-zero size (checked above), as `alloc_zeroed` requires.
        let p = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
        let ptr = std::ptr::NonNull::new(p)?;
        Some(Zeroed {
            ptr,
            len,
            mapped: false,
        })
    }

    /// Gives the array's pages back to the OS if it was mapped (Linux only): each value
    /// reads as zero from then on, and the pages cost nothing until touched again. Whether
    /// it did. The caller must treat this as a store of zero into every value by the
    /// thread that calls it: made where no reader's use of a value could tell zero from
    /// what the array held (see `lines.rs`, "Growth").
    pub fn release(&self) -> bool {
        #[cfg(all(target_os = "linux", not(miri)))]
        if self.mapped {
            let size = std::mem::size_of::<T>() * self.len;
            // SAFETY: `[ptr, ptr + size)` is exactly the private anonymous mapping `new`
            // made, still mapped (unmapped only in `Drop`). MADV_DONTNEED keeps the
            // mapping and its protection, so every reference into it stays valid; the
            // kernel backs the range with zero pages on the next touch, and all-zero
            // bytes are a valid `T` (`Zeroable`). What that does to readers is the
            // caller's contract above.
            unsafe {
                libc::madvise(self.ptr.as_ptr().cast(), size, libc::MADV_DONTNEED);
            }
            return true;
        }
        false
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
        // 2. Every value is initialised: the memory was zero-filled (and `release` only
        //    zeroes it again), and all-zero bytes are a valid `T` (`Zeroable`).
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
        if self.mapped {
            // SAFETY: `ptr` and the size are exactly those `mmap` returned and was asked
            // for, mapped once and unmapped only here; `&mut self` proves no borrow of
            // the values is alive. `T` needs no drop (`Zeroable`).
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), layout.size()) };
            return;
        }
        // SAFETY: `ptr` came from `alloc_zeroed` with this same layout (`mapped` is
        // false), and is freed once, here, with no borrow alive (`&mut self`); `T` needs
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

    /// Gives nothing back under loom.
    pub fn release(&self) -> bool {
        false
    }
}

#[cfg(roster_loom)]
impl<T: Zeroable> std::ops::Deref for Zeroed<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}
