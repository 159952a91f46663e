//! Software prefetch: a hint that the caller will soon read the cache line holding a value.
//!
//! Batched lookups (`Registry::lookup_many`) issue these for many keys before reading any,
//! so the cache misses of a batch overlap instead of queueing one after another. A prefetch
//! is only a hint: it has no architectural effect, cannot fault, and is not a memory access
//! in the language's memory model, so it cannot race with the writer.
//!
//! On x86-64 it is `prefetcht0`; elsewhere (and under loom and Miri, which model no caches)
//! it compiles to nothing.

/// Hints the CPU to bring the cache line holding `*value` into L1.
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(all(target_arch = "x86_64", not(miri), not(roster_loom)))]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = (value as *const T).cast::<i8>();
        // SAFETY: `_mm_prefetch` needs SSE, which every x86-64 CPU has. It takes a raw
        // pointer but never dereferences it architecturally: prefetching any address,
        // valid or not, cannot fault or change memory. `p` comes from a live reference
        // anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p) }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri), not(roster_loom))))]
    let _ = value;
}

#[cfg(all(test, not(roster_loom)))]
mod tests {
    use super::*;

    #[test]
    fn prefetch_is_a_hint_with_no_effect() {
        let words = [1u64, 2, 3];
        for w in &words {
            prefetch(w);
        }
        assert_eq!(words, [1, 2, 3]);
    }
}
