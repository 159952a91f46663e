//! CLI tests: the binary, run with tiny sizes.

use std::path::Path;
use std::process::{Command, Output};

fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .output()
        .expect("loadgen runs")
}

const TINY: &[&str] = &[
    "--entries",
    "2000",
    "--duration",
    "0.2",
    "--deaths",
    "500",
    "--churn-cycles",
    "2",
    "--churn-entries",
    "500",
    "--quiet",
];

fn run(workload: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", workload, "--out", out.to_str().unwrap()];
    args.extend_from_slice(TINY);
    args.extend_from_slice(extra);
    let o = loadgen(&args);
    assert!(
        o.status.success(),
        "run {workload} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

#[test]
fn every_workload_runs_and_writes_the_documented_reports() {
    let tmp = tempfile::tempdir().unwrap();
    for (workload, op, verdict) in [
        ("lookup", "lookup", Some("P1")),
        ("register", "register", Some("P2")),
        ("mixed", "mixed-lookup", None),
        ("churn", "churn-register", None),
        ("scaling", "lookup-writers-on", Some("P5")),
        ("query", "query-1000", Some("P3")),
        ("memory", "", Some("P4")),
        ("death-storm", "storm-batch-lookup", Some("P6")),
    ] {
        let dir = tmp.path().join(workload);
        let o = run(workload, &dir, &[]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("reports:"), "{stdout}");
        for file in [
            "summary.json",
            "summary.md",
            "latency.hlog",
            "percentiles.svg",
        ] {
            assert!(dir.join(file).is_file(), "{workload}: {file} missing");
        }
        let s = summary(&dir);
        assert!(s["machine"]["cpu"].is_string() && s["machine"]["cores"].is_u64());
        assert!(s["machine"]["rustc"].as_str().unwrap().starts_with("rustc"));
        assert!(s["command"].as_str().unwrap().contains(workload));
        if !op.is_empty() {
            let o = &s["ops"][op];
            for field in ["count", "throughput", "p50", "p99", "p99.9", "max"] {
                assert!(
                    o[field].is_number(),
                    "{workload}: ops.{op}.{field} missing: {o}"
                );
            }
            assert!(o["count"].as_u64().unwrap() > 0);
            assert!(dir.join(format!("{op}.hgrm")).is_file());
        }
        if let Some(id) = verdict {
            let v = s["verdicts"].as_array().unwrap();
            let v = v
                .iter()
                .find(|v| v["id"] == id)
                .unwrap_or_else(|| panic!("{workload}: no {id}"));
            assert!(v["target"].is_string() && v["measured"].is_string() && v["pass"].is_boolean());
        }
        let svg = std::fs::read_to_string(dir.join("percentiles.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("percentile"));
    }
}

#[test]
fn suite_reports_all_six_verdicts_and_compare_sets_two_runs_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run("suite", &a, &[]);
    run("lookup", &b, &["--keys", "zipf", "--poisson"]);
    let s = summary(&a);
    let ids: Vec<&str> = s["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    for id in ["P1", "P2", "P3", "P4", "P5", "P6"] {
        assert!(ids.contains(&id), "suite misses {id}: {ids:?}");
    }
    let md = std::fs::read_to_string(a.join("summary.md")).unwrap();
    assert!(md.contains("| P1 |") && md.contains("percentiles.svg"));

    let out = tmp.path().join("cmp");
    let o = loadgen(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("B/A") && table.contains("lookup") && table.contains("P1"),
        "{table}"
    );
    assert!(out.join("compare.svg").is_file());
}

#[test]
fn bad_arguments_get_a_clear_message_and_a_nonzero_exit() {
    let cases: [(&[&str], &str); 6] = [
        (&["run", "lookup", "--read-ratio", "2"], "--read-ratio"),
        (&["run", "lookup", "--entries", "0"], "entries"),
        (&["run", "bogus"], "invalid value 'bogus'"),
        (
            &["run", "lookup", "--rate", "10", "--closed-loop"],
            "cannot be used with",
        ),
        (&["run", "lookup", "--duration", "0"], "--duration"),
        (
            &["compare", "/nonexistent/a", "/nonexistent/b"],
            "cannot read",
        ),
    ];
    for (args, message) in cases {
        let o = loadgen(args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn fail_on_miss_and_json_output() {
    let tmp = tempfile::tempdir().unwrap();
    let targets = tmp.path().join("impossible.toml");
    let strict = loadgen_targets_with_zero_latency();
    std::fs::write(&targets, strict).unwrap();
    let dir = tmp.path().join("r");
    let mut args = vec![
        "run",
        "register",
        "--out",
        dir.to_str().unwrap(),
        "--json",
        "--fail-on-miss",
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--targets", targets.to_str().unwrap()]);
    let o = loadgen(&args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s: serde_json::Value =
        serde_json::from_slice(&o.stdout).expect("--json prints the summary");
    assert_eq!(s["verdicts"][0]["pass"], false);
    assert!(
        o.stderr.is_empty(),
        "--json is quiet: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The embedded targets with P2's latencies set to 0 ns: no run can meet them.
fn loadgen_targets_with_zero_latency() -> String {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/targets.toml")).unwrap();
    text.replace("register_p50_ns = 20_000", "register_p50_ns = 0")
}

#[cfg(feature = "cluster")]
#[test]
fn the_cluster_workload_measures_claims_propagation_and_death_on_a_real_etcd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let o = run("cluster", &dir, &["--nodes", "2", "--lease-ttl", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let s = summary(&dir);
    for op in [
        "cluster-register",
        "cluster-propagation",
        "cluster-batch-128",
        "cluster-lookup-remote",
        "cluster-lookup-local",
    ] {
        assert!(
            s["ops"][op]["count"].as_u64().unwrap() > 0,
            "{op}: {stdout}"
        );
        assert!(dir.join(format!("{op}.hgrm")).is_file());
    }
    let notes = s["notes"].to_string();
    assert!(
        notes.contains("node death (lease expiry)") && notes.contains("clean leave"),
        "{notes}"
    );
}

#[cfg(not(feature = "cluster"))]
#[test]
fn the_cluster_workload_says_how_to_get_it_when_built_without() {
    let o = loadgen(&["run", "cluster", "--quiet"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--features cluster") && err.contains("etcd"),
        "{err}"
    );
}

#[test]
fn plot_draws_a_report_again_one_panel_per_workload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mixed");
    run("mixed", &dir, &[]);
    let svg = tmp.path().join("again.svg");
    let o = loadgen(&[
        "plot",
        dir.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    // The mixed workload's three operations share one panel, captioned "mixed".
    let captions = text.matches(">\nmixed\n</text>").count();
    assert!(
        text.starts_with("<svg") && captions == 1,
        "{}",
        &text[..200]
    );
    let bad = loadgen(&["plot", tmp.path().join("nothing").to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot read"));
}
