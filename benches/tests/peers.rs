//! The `peers` binary, run with tiny sizes: every map and workload reports, bad input is
//! refused with a message.

use std::process::{Command, Output};

fn peers(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_peers"))
        .args(args)
        .output()
        .expect("peers runs")
}

#[test]
fn every_map_and_workload_reports_a_row_and_the_tables_show_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("rows.json");
    let o = peers(&[
        "--keys",
        "2000",
        "--seconds",
        "0.05",
        "--threads",
        "1,2",
        "--write-rate",
        "2000",
        "--json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let maps = ["roster", "papaya", "dashmap", "scc", "rwlock-std"];
    for workload in ["lookup", "read-heavy", "exchange", "rapid-grow", "churn"] {
        for map in maps {
            for threads in [1, 2] {
                let row = rows
                    .iter()
                    .find(|r| {
                        r["workload"] == workload && r["map"] == map && r["threads"] == threads
                    })
                    .unwrap_or_else(|| panic!("no row for {workload} {map} {threads}"));
                assert!(row["mops"].as_f64().unwrap() > 0.0, "{row}");
                assert!(row["ops"].as_u64().unwrap() > 0, "{row}");
            }
        }
    }
    // Roster's batch paths are a column of their own, for lookups and churn only.
    let batch: Vec<_> = rows.iter().filter(|r| r["map"] == "roster-batch").collect();
    assert_eq!(batch.len(), 4);
    assert!(batch
        .iter()
        .all(|r| r["workload"] == "lookup" || r["workload"] == "churn"));
    // One latency row per map, with its percentiles in order.
    for map in maps {
        let r = rows
            .iter()
            .find(|r| r["workload"] == "latency" && r["map"] == map)
            .unwrap_or_else(|| panic!("no latency row for {map}"));
        let p = |k: &str| r[k].as_u64().unwrap();
        assert!(0 < p("p50_ns") && p("p50_ns") <= p("p99_ns") && p("p99_ns") <= p("p999_ns"));
        assert!(p("p999_ns") <= p("max_ns"));
        assert!(r["writes_per_s"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(rows.len(), 5 * 5 * 2 + 4 + 5);
    assert!(
        stdout.contains("| threads | roster | roster-batch | papaya |"),
        "{stdout}"
    );
    assert!(stdout.contains("roster / dashmap"), "{stdout}");
    assert!(stdout.contains("batch / single"), "{stdout}");
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    for (args, expect) in [
        (&["--maps", "nope"][..], "unknown map"),
        (&["--workloads", "sideways"][..], "unknown workload"),
        (&["--threads", "0"][..], "at least 1"),
        (&["--seconds", "0"][..], "--seconds"),
        (&["--keys", "0"][..], "--keys"),
    ] {
        let o = peers(args);
        assert!(!o.status.success(), "{args:?} was accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
