//! Huge pages for big mappings: a hint to the OS, never a requirement.
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
