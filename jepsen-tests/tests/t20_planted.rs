//! Planted bugs: each switchable fault of the `planted-bugs` build, run against a short
//! seeded schedule, must be reported by the checkers. This is the evidence that the
//! suite can fail: a checker that passes these histories would pass broken systems.
//!
//! Each bug gets up to `ATTEMPTS` runs with different seeds (a race-dependent bug may
//! hide in one short run); the test fails if no run reports it. Every run prints its
//! seed and replay command.

#![cfg(feature = "planted-bugs")]

use jepsen_tests::checker::Validity;
use jepsen_tests::nemesis::NemesisKind;
use jepsen_tests::procs::NetMode;
use jepsen_tests::runner::{run, RunConfig};
use jepsen_tests::workload::Workload;
use std::path::PathBuf;
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const ATTEMPTS: u64 = 3;

/// Runs until a run is invalid; returns the checkers that said `false`.
async fn caught(
    bug: &str,
    workload: Workload,
    nemesis: &[NemesisKind],
    rate: u32,
    seed: u64,
) -> Vec<String> {
    let _serial = SERIAL.lock().await;
    for attempt in 0..ATTEMPTS {
        let out = tempfile::tempdir().unwrap();
        let seed = seed + attempt;
        let config = RunConfig {
            time_limit: Duration::from_secs(10),
            clients: 8,
            seed,
            workload,
            nemesis: nemesis.to_vec(),
            nemesis_interval: Duration::from_secs(2),
            rate,
            out: out.path().to_path_buf(),
            node_bin: PathBuf::from(env!("CARGO_BIN_EXE_jepsen-node")),
            planted_bugs: vec![bug.to_owned()],
            ..RunConfig::default()
        };
        eprintln!(
            "planted {bug}, attempt {attempt}, seed {seed}; replay: cargo run -p jepsen-tests \
             --features planted-bugs -- --time-limit 10 --clients 8 --rate {rate} --seed {seed} \
             --workload {} --nemesis {} --nemesis-interval 2 --planted-bug {bug}",
            workload.as_str(),
            config.nemesis_names()
        );
        let report = run(&config).await.expect("the run completes");
        eprintln!("{}", report.text());
        if report.valid() == Validity::Invalid {
            return report
                .summary
                .checkers
                .iter()
                .filter(|c| c.valid == Validity::Invalid)
                .map(|c| c.checker.clone())
                .collect();
        }
    }
    panic!("planted bug {bug} was not caught in {ATTEMPTS} runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t20_stale_follower_read_is_caught() {
    if NetMode::detect() != NetMode::Netns {
        eprintln!("NOT RUN: this bug shows under partitions, which need root");
        return;
    }
    let checkers = caught(
        "stale-follower-read",
        Workload::Register,
        &[NemesisKind::Partition],
        150,
        20,
    )
    .await;
    assert!(checkers.iter().any(|c| c == "linearizable"), "{checkers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t21_ack_before_commit_is_caught() {
    let checkers = caught("ack-before-commit", Workload::Register, &[], 300, 21).await;
    assert!(!checkers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t22_skipped_idempotency_is_caught() {
    let checkers = caught("skip-idempotency", Workload::Register, &[], 150, 22).await;
    assert!(!checkers.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t23_confirm_after_expiry_is_caught() {
    let checkers = caught("confirm-ignores-expiry", Workload::Expiry, &[], 150, 23).await;
    assert!(checkers.iter().any(|c| c == "lock-expiry"), "{checkers:?}");
}
