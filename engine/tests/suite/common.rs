//! One helper runs a test against every configuration (papaya's `with_map`).

use std::time::Duration;

use roster::{Registry, RegistryBuilder};

/// A builder for behaviour tests: writes get a deadline far beyond any stall of a busy
/// 2-core CI machine, so only the deadline tests (which set their own) can time out.
pub fn builder() -> RegistryBuilder {
    Registry::builder().write_deadline(Duration::from_secs(30))
}

/// Shard counts and read-retry bounds each test runs with. `read_attempts(1)` drives the
/// fallback path (asking the writer) whenever a read overlaps a write.
pub fn configs() -> Vec<(usize, u32)> {
    vec![(1, 64), (2, 64), (4, 1), (8, 64)]
}

/// Runs `test` against a fresh registry of each configuration, then of one with a line
/// cache (which caches the first keys of a test, up to seven eighths of its lines, and
/// reads the rest from the slot tables).
pub fn with_registry(mut test: impl FnMut(Registry)) {
    let plain = configs().into_iter().map(|(s, a)| (s, a, false));
    for (shards, attempts, line_cache) in plain.chain([(2, 64, true)]) {
        let registry = builder()
            .shards(shards)
            .read_attempts(attempts)
            .capacity(if line_cache { 256 } else { 16 })
            .line_cache(line_cache)
            .build()
            .expect("registry builds");
        test(registry);
    }
}

/// Scales a test size down under Miri.
pub fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        (n / 100).max(2)
    } else {
        n
    }
}

/// Waits (bounded, 10 s) until `f` holds: cleanup is asynchronous by design.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "never happened: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Drives a future on this thread, parking until its waker is called: the registry's
/// futures need no runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
