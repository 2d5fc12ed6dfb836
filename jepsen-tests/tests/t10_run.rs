//! The short suite: each nemesis class once against a three-node cluster of real
//! `jepsen-node` processes (network namespaces when root, loopback otherwise), through
//! REST, with every checker required to answer `true` (not `unknown`). That the
//! checkers can answer `false` is the unit tests' part (`src/checker/*`) and the
//! planted-bug tests' (`t20_planted.rs`).
//!
//! Runs are serialised (the machine has two cores). Each prints its seed and the
//! command that replays it; `JEPSEN_SEED` overrides the seed and `JEPSEN_TIME_LIMIT`
//! (seconds) the length, for a longer soak.

use jepsen_tests::checker::Validity;
use jepsen_tests::history::{read_jsonl, Op, OpType, Process, F};
use jepsen_tests::nemesis::NemesisKind;
use jepsen_tests::procs::{NetMode, ProcCluster};
use jepsen_tests::runner::{run, RunConfig, RunReport};
use jepsen_tests::workload::Workload;
use std::path::PathBuf;
use std::time::Duration;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jepsen-node"))
}

/// Runs `workload` under `nemesis` and requires every checker to say `true`; the run
/// directory lives as long as the returned guard.
async fn suite_run(
    workload: Workload,
    nemesis: &[NemesisKind],
    seed: u64,
) -> (RunReport, tempfile::TempDir) {
    suite_run_at(workload, nemesis, seed, 100, 2).await
}

/// `suite_run` with the clients' rate (ops/s) and the mean seconds between faults.
async fn suite_run_at(
    workload: Workload,
    nemesis: &[NemesisKind],
    seed: u64,
    rate: u32,
    interval_s: u64,
) -> (RunReport, tempfile::TempDir) {
    let _serial = SERIAL.lock().await;
    let out = tempfile::tempdir().unwrap();
    let seed = env_u64("JEPSEN_SEED", seed);
    let time_limit = env_u64("JEPSEN_TIME_LIMIT", 10);
    let config = RunConfig {
        time_limit: Duration::from_secs(time_limit),
        clients: 6,
        seed,
        workload,
        nemesis: nemesis.to_vec(),
        nemesis_interval: Duration::from_secs(interval_s),
        rate,
        out: out.path().to_path_buf(),
        node_bin: node_bin(),
        ..RunConfig::default()
    };
    eprintln!(
        "seed {seed}; replay: cargo run -p jepsen-tests --features fault-injection -- \
         --time-limit {time_limit} --clients 6 --seed {seed} --workload {} --nemesis {} \
         --nemesis-interval {interval_s} --rate {rate}",
        workload.as_str(),
        config.nemesis_names()
    );
    let report = run(&config).await.expect("the run completes");
    eprintln!("{}", report.text());
    assert_eq!(report.valid(), Validity::Valid, "{}", report.text());
    for checker in &report.summary.checkers {
        assert_eq!(checker.valid, Validity::Valid, "{checker:?}");
    }
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
    for file in ["results.json", "report.html"] {
        let text = std::fs::read_to_string(report.dir.join(file)).unwrap();
        assert!(!text.is_empty(), "{file} is empty");
    }
    let html = std::fs::read_to_string(report.dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("<circle"), "no plot");
    // Every run compares the replicas' ledger digests once the faults healed.
    let replicas = report
        .summary
        .checkers
        .iter()
        .find(|c| c.checker == "replicas")
        .expect("the replicas checker ran");
    assert!(
        replicas.notes.iter().any(|n| n.contains("all 3 replicas")),
        "{replicas:?}"
    );
    (report, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_bookings_under_kills() {
    let (report, _dir) = suite_run(Workload::Bookings, &[NemesisKind::Kill], 10).await;
    assert!(report.nemesis.kills >= 1, "the nemesis killed nothing");
    let history = read_jsonl(&report.dir.join("history.jsonl")).unwrap();
    let restarts = history
        .iter()
        .filter(|op| op.f == F::Restart && op.kind == OpType::Info)
        .count();
    assert_eq!(
        restarts, report.nemesis.kills,
        "every killed node restarted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t11_register_under_pauses() {
    let (report, _dir) = suite_run(Workload::Register, &[NemesisKind::Pause], 11).await;
    assert!(report.nemesis.pauses >= 1, "the nemesis paused nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t12_bookings_under_partitions() {
    if NetMode::detect() != NetMode::Netns {
        // Partitions cut traffic between network namespaces, which needs root; CI runs
        // as root. Say so loudly rather than pass quietly.
        eprintln!("NOT RUN: partitions need root (network namespaces); run as root");
        return;
    }
    let (report, _dir) = suite_run(Workload::Bookings, &[NemesisKind::Partition], 12).await;
    assert!(report.nemesis.partitions >= 1, "no partition happened");
}

#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t13_expiry_under_clock_skew() {
    let (report, _dir) = suite_run(Workload::Expiry, &[NemesisKind::Clock], 13).await;
    assert!(report.nemesis.clock_skews >= 1, "no clock was skewed");
}

/// Issue #26, item 4: every node restarted, one with its clock a minute to two hours
/// off from its first instant. A leader stamped unchecked until a majority of clocks
/// had been sampled, and one such stamp moved the shard clock for good (locks living
/// hours, or ending at once); the lock-expiry checker sees either.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t21_bookings_under_clock_jumps_and_restarts() {
    let (report, _dir) = suite_run(Workload::Bookings, &[NemesisKind::ClockRestart], 21).await;
    assert!(
        report.nemesis.clock_restarts >= 1,
        "no clock-restart happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t14_register_under_transfer_storms() {
    let (report, _dir) = suite_run(Workload::Register, &[NemesisKind::Transfer], 14).await;
    assert!(report.nemesis.transfers >= 1, "no leader was transferred");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t15_bookings_under_membership_changes() {
    let (report, _dir) = suite_run(Workload::Bookings, &[NemesisKind::Membership], 15).await;
    assert!(
        report.nemesis.membership_changes >= 1,
        "no voter was removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t16_expiry_without_faults() {
    let _ = suite_run(Workload::Expiry, &[], 16).await;
}

/// The booking saga with every payment outcome while nodes are killed: in the end
/// every booking is confirmed and paid once or not confirmed and charged nothing
/// (the `saga` checker, against the gateway's books), besides every seat checker.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t18_saga_under_kills() {
    let (report, _dir) = suite_run(Workload::Saga, &[NemesisKind::Kill], 18).await;
    let saga = report
        .summary
        .checkers
        .iter()
        .find(|c| c.checker == "saga")
        .expect("the saga checker ran");
    assert_eq!(saga.valid, Validity::Valid, "{saga:?}");
    let history = read_jsonl(&report.dir.join("history.jsonl")).unwrap();
    let paid = history
        .iter()
        .filter(|op| op.f == F::Confirm && op.kind == OpType::Ok)
        .count();
    let declined = history
        .iter()
        .filter(|op| op.f == F::Release && op.kind == OpType::Ok)
        .count();
    assert!(paid > 0 && declined > 0, "paid {paid}, declined {declined}");
}

/// The booking saga while the gateway loses the answers to creates, refuses their
/// retries (429, 401, 503, 422) and loses webhooks: every charge still ends with a
/// confirmed booking or a refund (the `saga` checker, against the gateway's books).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t19_saga_under_gateway_faults() {
    let (report, _dir) = suite_run(Workload::Saga, &[NemesisKind::Gateway], 19).await;
    assert!(
        report.nemesis.gateway_faults >= 1,
        "the gateway never misbehaved"
    );
    let saga = report
        .summary
        .checkers
        .iter()
        .find(|c| c.checker == "saga")
        .expect("the saga checker ran");
    assert_eq!(saga.valid, Validity::Valid, "{saga:?}");
}

/// How many nemesis `f` entries of the history say `note`.
fn infos_noting(history: &[Op], f: F, note: &str) -> usize {
    history
        .iter()
        .filter(|op| op.f == f && op.kind == OpType::Info && op.value["note"] == note)
        .count()
}

/// Issue #26 (new nemeses): one node restarted with ledger limits of its own (seat caps
/// and lock TTL floor far smaller or larger) and made the city shard's leader. The
/// rules are replicated (`SetLimits`), so every replica applies the same ones: the
/// `replicas` checker finds equal digests at one index, and the clients carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t22_bookings_under_divergent_config() {
    let (report, _dir) = suite_run(Workload::Bookings, &[NemesisKind::DivergentConfig], 22).await;
    assert!(
        report.nemesis.divergent_configs >= 1,
        "no node ran with limits of its own"
    );
    let history = read_jsonl(&report.dir.join("history.jsonl")).unwrap();
    let healed = infos_noting(&history, F::Config, "back on the shared cluster file");
    assert_eq!(
        healed, report.nemesis.divergent_configs,
        "every node healed"
    );
    let confirmed = history
        .iter()
        .filter(|op| op.f == F::Confirm && op.kind == OpType::Ok)
        .count();
    assert!(confirmed > 0, "no confirm succeeded");
}

/// Issue #26 (new nemeses): a follower stopped until the leader purged its log past
/// it, restarted under load, catches up through a chunked snapshot; no acknowledged
/// write is lost (the history checkers) and it ends with the others' digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t23_bookings_under_snapshot_catchup() {
    let (report, _dir) = suite_run_at(
        Workload::Bookings,
        &[NemesisKind::SnapshotCatchup],
        23,
        200,
        3,
    )
    .await;
    assert!(
        report.nemesis.snapshot_catchups >= 1,
        "no follower caught up through a snapshot: {}",
        report.text()
    );
}

/// Issue #26 (new nemeses): a follower's online backup restored into it while it is
/// still a voter must not start (its restore marker); restored the runbook's way
/// (removed from the voters, restored, started, re-added as learner and promoted), it
/// catches up under load and ends with the others' digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t24_bookings_under_wrong_restores() {
    let (report, _dir) =
        suite_run_at(Workload::Bookings, &[NemesisKind::WrongRestore], 24, 100, 3).await;
    assert!(
        report.nemesis.wrong_restores >= 1,
        "no backup was restored: {}",
        report.text()
    );
    let history = read_jsonl(&report.dir.join("history.jsonl")).unwrap();
    let refused = infos_noting(&history, F::Restore, "refused to start: still a voter");
    assert_eq!(
        refused, report.nemesis.wrong_restores,
        "every wrong restore refused"
    );
}

/// The cluster control alone: kill, restart, pause, resume; the data survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t17_process_cluster_controls() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let spec = jepsen_tests::procs::ClusterSpec {
        bin: node_bin(),
        nodes: 3,
        net: NetMode::detect(),
        dir: dir.path().join("cluster"),
        timing: jepsen_tests::runner::timing(),
        limits: state_machine::Limits::default(),
        planted_bugs: vec![],
    };
    let mut cluster = ProcCluster::start(spec).await.expect("the cluster starts");
    let leader = cluster
        .wait_leader("mumbai", Duration::from_secs(15))
        .await
        .expect("a leader");
    cluster.kill(leader).await.unwrap();
    assert!(!cluster.up().contains(&leader));
    let next = cluster
        .wait_leader("mumbai", Duration::from_secs(15))
        .await
        .expect("a new leader after the kill");
    assert_ne!(next, leader);
    cluster.restart(leader).await.unwrap();
    cluster.pause(next).unwrap();
    assert!(!cluster.up().contains(&next));
    let after_pause = cluster
        .wait_leader("mumbai", Duration::from_secs(15))
        .await
        .expect("a leader while the old one is paused");
    assert_ne!(after_pause, next);
    cluster.heal_all().await.unwrap();
    assert_eq!(cluster.up().len(), 3);
    let error = ProcCluster::start(jepsen_tests::procs::ClusterSpec {
        bin: dir.path().join("no-such-binary"),
        nodes: 3,
        net: NetMode::Loopback,
        dir: dir.path().join("other"),
        timing: jepsen_tests::runner::timing(),
        limits: state_machine::Limits::default(),
        planted_bugs: vec![],
    })
    .await
    .err()
    .expect("a missing binary is refused");
    assert!(error.contains("cargo build"), "{error}");
    cluster.stop().await;
}
