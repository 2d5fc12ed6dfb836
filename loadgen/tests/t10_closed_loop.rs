//! End to end: the `loadgen` binary runs a tiny closed-loop stampede (4 clients, about
//! 2 s) against an in-process 3-replica cluster through the client protocol, and the
//! JSON record and report it writes are consistent: every lock is either locked or
//! refused, every locked seat set is confirmed, nothing errs, and the rates are the
//! counts over the measured window.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn tiny_stampede_against_our_cluster_writes_a_sane_record() {
    let out = tempfile::tempdir().expect("temporary directory");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "run",
            "--targets",
            "ours",
            "--scenarios",
            "stampede",
            "--clients",
            "4",
            "--warmup",
            "0.5",
            "--duration",
            "2",
            "--op-timeout",
            "5",
            "--expected-rate",
            "300",
            "--shows-max",
            "3",
            "--no-baseline",
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadgen failed\n{stdout}\n{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );

    let text = std::fs::read_to_string(out.path().join("stampede-ours-c0004.json"))
        .expect("the run's record");
    let record: serde_json::Value = serde_json::from_str(&text).expect("JSON record");
    let count = |name: &str| record["counts"][name].as_u64().expect(name);
    let (locks, locks_ok, conflicts) = (count("locks"), count("locks_ok"), count("conflicts"));
    assert_eq!(count("errors"), 0, "{text}");
    assert_eq!(count("unfinished"), 0, "{text}");
    assert!(locks > 0, "no lock answered: {text}");
    assert_eq!(locks, locks_ok + conflicts, "{text}");
    // Every booking is a lock and its confirm; with no errors each lock finished.
    assert_eq!(count("confirms_ok"), locks_ok, "{text}");
    assert_eq!(count("operations"), locks, "{text}");
    assert_eq!(count("reads_ok"), 0, "{text}");
    let lock_latency = &record["latency"]["lock"];
    assert_eq!(lock_latency["count"].as_u64(), Some(locks_ok), "{text}");
    let refused = record["latency"]["lock_refused"]["count"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(refused, conflicts, "{text}");
    assert!(record["latency"].get("lock_failed").is_none(), "{text}");
    let p50 = lock_latency["p50_us"].as_u64().unwrap();
    let p99 = lock_latency["p99_us"].as_u64().unwrap();
    assert!(p50 > 0 && p50 <= p99, "{text}");
    assert_eq!(
        record["latency"]["confirm"]["count"].as_u64(),
        Some(locks_ok)
    );
    let measured = record["measured_s"].as_f64().unwrap();
    assert!((measured - 2.0).abs() < 1e-9, "{text}");
    let rate = record["throughput"]["locks"].as_f64().unwrap();
    assert!((rate - locks as f64 / measured).abs() < 1e-6, "{text}");
    assert_eq!(record["mode"]["mode"], "closed");
    assert_eq!(record["mode"]["clients"], 4);

    let report = std::fs::read_to_string(out.path().join("report.md")).expect("report.md");
    assert!(report.contains("## Scenario `stampede`"), "{report}");
    assert!(report.contains("| ours | 4 clients |"), "{report}");
    let svg = std::fs::read_to_string(out.path().join("throughput-stampede.svg")).expect("svg");
    assert_eq!(svg.matches("<circle").count(), 1);
}
