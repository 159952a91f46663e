// The standalone probe behind this folder's README (a `cargo new` crate with papaya
// =0.2.5, ahash 0.8 and mimalloc 0.1; delete the two allocator lines for the system
// allocator). Fills a papaya map presized for 1M keys with peers' 40-byte value from one
// thread, then times 10M uniform lookups from the main thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;
#[derive(Clone, Copy)]
#[allow(dead_code)]
struct Value { pid: u64, caps: [u32; 3], health: u8, node: u32, load: i64 }
fn run(threads: u64, name: &str) {
    let n = 1_000_000u64;
    let m: papaya::HashMap<u64, Value, ahash::RandomState> =
        papaya::HashMap::with_capacity_and_hasher(n as usize, ahash::RandomState::new());
    std::thread::scope(|s| for t in 0..threads { let m = &m; s.spawn(move || for k in (t..n).step_by(threads as usize) {
        assert!(m.pin().try_insert(k, Value { pid: k, caps: [1, 2, 3], health: 1, node: 0, load: 0 }).is_ok());
    }); });
    let mut x = 88172645463325252u64; let mut s = 0u64;
    let t = Instant::now();
    let reps = 10_000_000;
    for _ in 0..reps { x ^= x << 13; x ^= x >> 7; x ^= x << 17; if let Some(v) = m.pin().get(&(x % n)).copied() { s += v.pid; } }
    println!("{name}: {:.2} Mops/s ({s})", reps as f64 / t.elapsed().as_secs_f64() / 1e6);
}
fn main() {
    run(1, "1-thread fill");
    run(2, "2-thread fill");
    run(1, "1-thread fill");
    run(2, "2-thread fill");
}
