//! One short run of the real thing: the bookings workload through REST against the
//! in-process three-node cluster while the kill nemesis crashes and restarts the city
//! shard's leader. Every checker must answer `true` (not `unknown`), and the run must
//! leave its history and results behind. That the checkers can answer `false` is the
//! unit tests' part (`src/checker/*`).

use jepsen_tests::checker::Validity;
use jepsen_tests::history::{read_jsonl, OpType, Process, F};
use jepsen_tests::nemesis::NemesisKind;
use jepsen_tests::runner::{run, RunConfig};
use jepsen_tests::workload::Workload;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_bookings_under_leader_kills_check_valid() {
    let out = tempfile::tempdir().unwrap();
    let seed = std::env::var("JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!(
        "seed {seed} (JEPSEN_SEED sets it); replay: cargo run -p jepsen-tests -- \
         --time-limit 10 --clients 4 --seed {seed} --workload bookings --nemesis kill \
         --nemesis-interval 3"
    );
    let config = RunConfig {
        time_limit: Duration::from_secs(10),
        clients: 4,
        seed,
        workload: Workload::Bookings,
        nemesis: NemesisKind::Kill,
        nemesis_interval: Duration::from_secs(3),
        out: out.path().to_path_buf(),
        ..RunConfig::default()
    };
    let report = run(&config).await.expect("the run completes");
    eprintln!("{}", report.text());
    assert_eq!(report.valid(), Validity::Valid, "{}", report.text());
    for checker in &report.summary.checkers {
        assert_eq!(checker.valid, Validity::Valid, "{checker:?}");
    }
    assert!(report.kills >= 1, "the nemesis killed nothing");

    let history = read_jsonl(&report.dir.join("history.jsonl")).expect("a readable history");
    let count = |f: F, kind: OpType| {
        history
            .iter()
            .filter(|op| op.f == f && op.kind == kind && op.process != Process::Nemesis)
            .count()
    };
    assert!(count(F::Lock, OpType::Ok) > 0, "no lock succeeded");
    assert!(count(F::Read, OpType::Ok) > 0, "no read succeeded");
    assert_eq!(
        count(F::ReadBookings, OpType::Ok),
        1,
        "no final bookings read"
    );
    let restarts = history
        .iter()
        .filter(|op| op.f == F::Restart && op.kind == OpType::Info)
        .count();
    assert_eq!(restarts, report.kills, "every killed node restarted");
    let results = std::fs::read_to_string(report.dir.join("results.json")).unwrap();
    let results: serde_json::Value = serde_json::from_str(&results).unwrap();
    assert_eq!(results["summary"]["valid"], serde_json::json!(true));
}
