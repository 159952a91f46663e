fn main() {
    // SAFETY: a probe that assumes its maps succeed (MAP_FAILED is not checked); granted
    // that, every address advised lies inside the anonymous mapping just made (`a` is `p`
    // rounded up to 2 MiB, within the 2 MiB of slack mapped beyond `len`), which nothing
    // else refers to, and madvise changes only how its pages are backed.
    unsafe {
        for round in 0..3 {
            let len = 64usize << 20;
            let p = libc::mmap(std::ptr::null_mut(), len + (2 << 20), libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) as usize;
            let a = (p + (2 << 20) - 1) & !((2 << 20) - 1);
            libc::madvise(a as *mut _, len, libc::MADV_HUGEPAGE);
            let t = std::time::Instant::now();
            let r = libc::madvise(a as *mut _, len, libc::MADV_POPULATE_WRITE);
            let e = t.elapsed();
            let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
            println!("round {round}: populate 64 MiB huge: {r} in {e:?}; {}", s.lines().find(|l| l.starts_with("AnonHuge")).unwrap());
            let q = libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            let t = std::time::Instant::now();
            let r = libc::madvise(q, len, libc::MADV_POPULATE_WRITE);
            println!("round {round}: populate 64 MiB small: {r} in {:?}", t.elapsed());
        }
    }
}
