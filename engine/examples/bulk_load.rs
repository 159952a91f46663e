//! Registers N entries one by one on a default registry, timing every call: the check of
//! SPEC L7 (table growth never holds a write past its deadline).
//!
//! ```sh
//! cargo run --release -p roster --example bulk_load -- 2000000
//! cargo run --release -p roster --example bulk_load -- 2000000 distinct
//! ```
//!
//! With `distinct`, every entry has a capability of its own, so the index's term table
//! and the capability interner grow with the entries too; with `owners`, every entry is
//! registered by a process of its own, so the shards' owner lists do; with `lines`, the
//! registry keeps a line cache (`RegistryBuilder::line_cache`), which grows too; with
//! `huge`, its tables go on huge pages (`RegistryBuilder::huge_pages`). Prints the timeouts and the latency percentiles of the calls; exits non-zero if any
//! write timed out.

use std::time::Instant;

use hdrhistogram::Histogram;
use roster::{ErrorKind, Key, Metadata, Registry};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse().map_err(|e| format!("N must be a count: {e}"))?,
        None => 2_000_000,
    };
    let (mut distinct, mut owners, mut lines, mut huge) = (false, false, false, false);
    for mode in std::env::args().skip(2) {
        match mode.as_str() {
            "distinct" => distinct = true,
            "owners" => owners = true,
            "lines" => lines = true,
            "huge" => huge = true,
            other => {
                return Err(format!(
                    "unknown mode {other:?}: expected `distinct`, `owners`, `lines` or `huge`"
                )
                .into())
            }
        }
    }
    let registry = Registry::builder()
        .line_cache(lines)
        .huge_pages(huge)
        .build()?;
    let ns = registry.namespace("bulk")?;
    let owner = registry.spawn();
    let mut held = Vec::new();
    let meta = Metadata::new().capability("load");
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let (mut timeouts, mut slowest_at) = (0u64, 0u64);
    let start = Instant::now();
    for i in 0..n {
        let own;
        let meta = if distinct {
            own = Metadata::new().capability(format!("c{i}"));
            &own
        } else {
            &meta
        };
        let by = if owners {
            // Kept alive (a process's entries vanish with it), spawned outside the timing.
            held.push(registry.spawn());
            held.last().expect("just pushed")
        } else {
            &owner
        };
        let t = Instant::now();
        let r = registry.register(by, &Key::new(ns, i), meta);
        let ns_taken = t.elapsed().as_nanos() as u64;
        if ns_taken > hist.max() {
            slowest_at = i;
        }
        hist.saturating_record(ns_taken.max(1));
        match r {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::Timeout { .. }) => timeouts += 1,
            Err(e) => return Err(e.into()),
        }
        if (i + 1) % 500_000 == 0 {
            eprintln!(
                "{} registered, {:.1} s",
                i + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let us = |v: u64| v as f64 / 1000.0;
    println!(
        "{n} registrations in {:.2} s on {} shards, deadline {:?}",
        start.elapsed().as_secs_f64(),
        registry.shard_count(),
        registry.write_deadline()
    );
    println!(
        "timeouts {timeouts}; p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, p99.99 {:.1} us, max {:.1} us (call {slowest_at})",
        us(hist.value_at_quantile(0.5)),
        us(hist.value_at_quantile(0.99)),
        us(hist.value_at_quantile(0.999)),
        us(hist.value_at_quantile(0.9999)),
        us(hist.max()),
    );
    println!(
        "calls over the deadline: {}",
        hist.count_between(registry.write_deadline().as_nanos() as u64, u64::MAX)
    );
    if timeouts > 0 {
        std::process::exit(1);
    }
    Ok(())
}
