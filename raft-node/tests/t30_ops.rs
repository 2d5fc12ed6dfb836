//! bookingctl against real nodes: in-process clusters on loopback port 0 (see
//! `common`), driven through the `bookingctl` binary as an operator would run it.

mod common;

use common::{lock, TestCluster};
use raft_node::types::NodeId;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bookingctl");

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn nodes_arg(cluster: &TestCluster) -> String {
    cluster
        .file
        .nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.client_addr))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs bookingctl (without inheriting BOOKINGCTL_* from the environment), bounded.
async fn bookingctl(nodes: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_remove("BOOKINGCTL_NODES")
        .env_remove("BOOKINGCTL_CLUSTER")
        .kill_on_drop(true);
    if let Some(nodes) = nodes {
        command.arg("--nodes").arg(nodes);
    }
    command.args(args);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("bookingctl finished within 120 s")
        .expect("bookingctl runs");
    let run = Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    eprintln!(
        "$ bookingctl {}\n{}{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

fn json(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout))
}

fn shard_row<'a>(status: &'a Value, shard: &str) -> &'a Value {
    status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shard"] == shard)
        .unwrap_or_else(|| panic!("no {shard} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30a_status_and_leader_transfer() {
    // `status` names each shard's leader, term and members with their regions; `leader
    // transfer` moves leadership to the named voter and the cluster agrees.
    let cluster = TestCluster::start(3, &["drill", "mumbai"]).await;
    let nodes = nodes_arg(&cluster);
    let leader = cluster.wait_leader("mumbai").await;
    cluster.wait_converged("drill").await;
    cluster.wait_converged("mumbai").await;

    let run = bookingctl(Some(&nodes), &["status", "--json"]).await;
    assert!(run.ok, "{}", run.stderr);
    let status = json(&run);
    let mumbai = shard_row(&status, "mumbai");
    assert_eq!(mumbai["leader"], leader);
    assert!(mumbai["term"].as_u64().unwrap() >= 1);
    let members = mumbai["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for member in members {
        let id = member["node"].as_u64().unwrap();
        assert_eq!(member["region"], format!("region-{}", (id - 1) % 3));
        assert_eq!(member["voter"], true);
        let role = if id == leader { "leader" } else { "follower" };
        assert_eq!(member["role"], role, "{member}");
    }
    let table = bookingctl(Some(&nodes), &["status"]).await;
    assert!(table.ok);
    assert!(table.stdout.contains("SHARD") && table.stdout.contains("region-1"));

    let target: NodeId = if leader == 1 { 2 } else { 1 };
    let run = bookingctl(
        Some(&nodes),
        &[
            "leader",
            "transfer",
            "--shard",
            "mumbai",
            "--to",
            &target.to_string(),
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(run
        .stdout
        .contains(&format!("from node {leader} to node {target}")));
    assert_eq!(cluster.leader("mumbai").await, Some(target));

    // Draining the new leader moves every shard it leads elsewhere.
    let run = bookingctl(
        Some(&nodes),
        &["leader", "drain", "--node", &target.to_string()],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    for shard in ["drill", "mumbai"] {
        let now = cluster.wait_leader(shard).await;
        assert_ne!(now, target, "{shard} still led by the drained node");
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30b_errors_say_what_was_wrong_and_what_to_do() {
    let cluster = TestCluster::start(3, &["mumbai"]).await;
    let nodes = nodes_arg(&cluster);
    let run = bookingctl(None, &["status"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("--nodes"), "{}", run.stderr);

    let run = bookingctl(Some("1=127.0.0.1:1"), &["status"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("no node answered"), "{}", run.stderr);

    let run = bookingctl(Some(&nodes), &["status", "--shard", "atlantis"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("mumbai"), "{}", run.stderr);

    let run = bookingctl(
        Some(&nodes),
        &["leader", "transfer", "--shard", "mumbai", "--to", "9"],
    )
    .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("not a voter"), "{}", run.stderr);

    // The drill needs its shard, and says how to add it.
    let run = bookingctl(
        Some(&nodes),
        &["drill", "transfer-leader", "--seconds", "1"],
    )
    .await;
    assert!(!run.ok);
    assert!(run.stderr.contains("drill"), "{}", run.stderr);

    let run = bookingctl(Some(&nodes), &["backup", "--node", "1", "--name", "../x"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("backup name"), "{}", run.stderr);
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30c_backup_and_restore_verified_by_digest() {
    // A backup of node 2 under writes; more writes; node 2 loses its disk and is restored
    // from the backup; it catches up and its ledger digest equals the others'.
    let mut cluster = TestCluster::start(3, &["mumbai", "global"]).await;
    let nodes = nodes_arg(&cluster);
    let show = cluster.seed_show("mumbai").await;
    for user in 0..20u64 {
        cluster
            .write(
                "mumbai",
                &format!("before-{user}"),
                lock(show, user, &[user as u32]),
            )
            .await;
    }
    let run = bookingctl(
        Some(&nodes),
        &["backup", "--node", "2", "--name", "b1", "--json"],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let answer = json(&run);
    let path = answer["path"].as_str().unwrap().to_owned();
    let node2 = cluster.dir.path().join("node-2");
    assert!(Path::new(&path).starts_with(&node2), "{path}");
    let manifest = &answer["manifest"];
    let mumbai = manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["shard"] == "mumbai")
        .unwrap();
    let backed_up_index = mumbai["applied_index"].as_u64().unwrap();
    assert!(backed_up_index >= 22, "{mumbai}");
    assert_eq!(mumbai["digest"].as_str().unwrap().len(), 64);

    // The same name again is refused.
    let again = bookingctl(Some(&nodes), &["backup", "--node", "2", "--name", "b1"]).await;
    assert!(
        !again.ok && again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );

    for user in 20..40u64 {
        cluster
            .write(
                "mumbai",
                &format!("after-{user}"),
                lock(show, user, &[user as u32]),
            )
            .await;
    }

    // Offline verification passes; a damaged copy is refused.
    let verified = bookingctl(None, &["restore", "--from", &path, "--verify-only"]).await;
    assert!(verified.ok, "{}", verified.stderr);
    let damaged = cluster.dir.path().join("damaged");
    copy_tree(Path::new(&path), &damaged);
    let snapshot = damaged.join("shards/mumbai.snapshot");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&snapshot, bytes).unwrap();
    let refused = bookingctl(
        None,
        &[
            "restore",
            "--from",
            damaged.to_str().unwrap(),
            "--verify-only",
        ],
    )
    .await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("damaged"), "{}", refused.stderr);

    // Node 2 dies. The runbook's way back: a restored replica carries an older log and
    // vote, so it leaves the voters before it is restored (bookingctl refuses otherwise),
    // then starts as a non-voter, rejoins as a learner and is promoted.
    cluster.crash(2).await;
    let entry = cluster.entry(2);
    for shard in ["mumbai", "global"] {
        let run = bookingctl(
            Some(&nodes),
            &["member", "remove", "--shard", shard, "--node", "2"],
        )
        .await;
        assert!(run.ok, "{}", run.stderr);
    }
    // Restore refuses its non-empty directory, then restores into an empty one.
    let into_full = bookingctl(
        Some(&nodes),
        &[
            "restore",
            "--from",
            &path,
            "--data-dir",
            node2.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        !into_full.ok && into_full.stderr.contains("not empty"),
        "{}",
        into_full.stderr
    );
    let lost = cluster.dir.path().join("node-2-lost");
    std::fs::rename(&node2, &lost).unwrap();
    let backup = lost.join("backups/b1");
    let restored = bookingctl(
        Some(&nodes),
        &[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            node2.to_str().unwrap(),
        ],
    )
    .await;
    assert!(restored.ok, "{}", restored.stderr);
    assert!(restored.stdout.contains("restored and verified"));
    cluster.restart(2).await;
    assert!(cluster.applied(2, "mumbai") >= backed_up_index);
    readd_node_2(&nodes, &entry).await;
    cluster
        .write("mumbai", "after-restart", lock(show, 99, &[99]))
        .await;
    cluster.wait_converged("mumbai").await;
    let digests: Vec<[u8; 32]> = (1..=3).map(|id| cluster.digest(id, "mumbai")).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]));

    // bookingctl sees the same: equal digests at equal applied index on every replica.
    let status = bookingctl(
        Some(&nodes),
        &["status", "--digest", "--json", "--shard", "mumbai"],
    )
    .await;
    assert!(status.ok, "{}", status.stderr);
    let status = json(&status);
    let members = shard_row(&status, "mumbai")["members"]
        .as_array()
        .unwrap()
        .clone();
    let digests: Vec<&str> = members
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 3);
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    cluster.stop_all().await;
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30d_drill_transfer_leader_loses_no_acknowledged_write() {
    // The drill writes while it moves leadership, measures the gap, and reads every
    // acknowledged lock back; the report is checked here against the cluster itself.
    let cluster = TestCluster::start(3, &["drill"]).await;
    let nodes = nodes_arg(&cluster);
    let before = cluster.wait_leader("drill").await;
    let started = Instant::now();
    let run = bookingctl(
        Some(&nodes),
        &[
            "drill",
            "transfer-leader",
            "--shard",
            "drill",
            "--seconds",
            "4",
            "--writers",
            "3",
            "--json",
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let report = json(&run);
    eprintln!(
        "drill transfer-leader: unavailability {:.1} ms (baseline {:.1} ms), leader {} -> {}, {} acknowledged, p99 {:.1} ms, took {:?}",
        report["unavailability_ms"].as_f64().unwrap(),
        report["baseline_gap_ms"].as_f64().unwrap(),
        report["old_leader"],
        report["new_leader"],
        report["writes_acknowledged"],
        report["latency"]["p99_ms"].as_f64().unwrap(),
        started.elapsed()
    );
    assert_eq!(report["old_leader"], before);
    let after = report["new_leader"].as_u64().expect("a new leader");
    assert_ne!(after, before);
    assert_eq!(cluster.leader("drill").await, Some(after));
    let acknowledged = report["writes_acknowledged"].as_u64().unwrap();
    assert!(acknowledged > 10, "{report}");
    assert_eq!(report["verified_present"].as_u64().unwrap(), acknowledged);
    assert!(report["lost_acknowledged"].as_array().unwrap().is_empty());
    assert!(report["phantom_seats"].as_array().unwrap().is_empty());
    let gap = report["unavailability_ms"].as_f64().unwrap();
    assert!(gap > 0.0 && gap < 10_000.0, "{gap}");
    cluster.stop_all().await;
}

/// Real `raft-node` processes on loopback, killed (SIGKILL) when dropped.
struct Processes {
    dir: tempfile::TempDir,
    children: Vec<std::process::Child>,
    nodes: String,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for id in 1..=self.children.len() {
                let log = self.dir.path().join(format!("n{id}.err"));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "----- {} -----\n{}",
                    log.display(),
                    lines[lines.len().saturating_sub(20)..].join("\n")
                );
            }
        }
    }
}

fn start_processes(count: u64) -> Processes {
    use raft_node::config::{ClusterFile, NodeEntry, ShardEntry};
    let dir = tempfile::tempdir().unwrap();
    let listeners: Vec<std::net::TcpListener> = (0..2 * count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    drop(listeners);
    let file = ClusterFile {
        cluster_id: "t30-processes".into(),
        nodes: (1..=count)
            .map(|id| NodeEntry {
                id,
                peer_addr: format!("127.0.0.1:{}", ports[2 * (id as usize - 1)]),
                client_addr: format!("127.0.0.1:{}", ports[2 * (id as usize - 1) + 1]),
                region: format!("region-{id}"),
            })
            .collect(),
        shards: vec![ShardEntry {
            name: "drill".into(),
            members: (1..=count).collect(),
        }],
        limits: Default::default(),
    };
    let cluster = dir.path().join("cluster.toml");
    std::fs::write(&cluster, toml::to_string(&file).unwrap()).unwrap();
    let nodes = file
        .nodes
        .iter()
        .map(|n| format!("{}={}", n.id, n.client_addr))
        .collect::<Vec<_>>()
        .join(",");
    let children = (1..=count)
        .map(|id| {
            std::process::Command::new(env!("CARGO_BIN_EXE_raft-node"))
                .arg("--node-id")
                .arg(id.to_string())
                .arg("--cluster")
                .arg(&cluster)
                .arg("--data-dir")
                .arg(dir.path().join(format!("n{id}")))
                .env_remove("SEAT_LEDGER_CLUSTER_SECRET_FILE")
                .env_remove("SEAT_LEDGER_RAFT_TIMING")
                .env(
                    "SEAT_LEDGER_CLUSTER_SECRET",
                    "t30-process-secret-0123456789",
                )
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stdout(std::fs::File::create(dir.path().join(format!("n{id}.out"))).unwrap())
                .stderr(std::fs::File::create(dir.path().join(format!("n{id}.err"))).unwrap())
                .spawn()
                .expect("start raft-node")
        })
        .collect();
    Processes {
        dir,
        children,
        nodes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30e_drill_kill_leader_on_real_processes() {
    // Three raft-node processes; the drill SIGKILLs the leader's process (pid from
    // /admin/status) under writes, reports the gap and the new leader, and finds every
    // acknowledged write; the killed process really died of SIGKILL.
    let mut processes = start_processes(3);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = bookingctl(
            Some(&processes.nodes),
            &["status", "--json", "--shard", "drill"],
        )
        .await;
        if run.ok && !json(&run)["shards"][0]["leader"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let run = bookingctl(
        Some(&processes.nodes),
        &[
            "drill",
            "kill-leader",
            "--seconds",
            "6",
            "--writers",
            "3",
            "--json",
        ],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let report = json(&run);
    eprintln!(
        "drill kill-leader: unavailability {:.0} ms, leader {} -> {} after {:.0} ms, {} acknowledged",
        report["unavailability_ms"].as_f64().unwrap(),
        report["old_leader"],
        report["new_leader"],
        report["leader_change_ms"].as_f64().unwrap_or(f64::NAN),
        report["writes_acknowledged"]
    );
    let old = report["old_leader"].as_u64().unwrap() as usize;
    let new = report["new_leader"].as_u64().expect("a new leader") as usize;
    assert_ne!(old, new);
    assert!(report["lost_acknowledged"].as_array().unwrap().is_empty());
    let acknowledged = report["writes_acknowledged"].as_u64().unwrap();
    assert!(acknowledged > 10);
    assert_eq!(report["verified_present"].as_u64().unwrap(), acknowledged);
    let status = processes.children[old - 1]
        .try_wait()
        .unwrap()
        .expect("the old leader's process is gone");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    for (i, child) in processes.children.iter_mut().enumerate() {
        if i + 1 != old {
            assert!(child.try_wait().unwrap().is_none(), "node {} died", i + 1);
        }
    }
}

#[test]
fn t30f_the_compose_cluster_file_is_valid_for_the_node() {
    // deploy/config/cluster.toml passes the node's own validation (validate.sh only
    // parses it), with a drill shard that no api city maps to.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/cluster.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let file: raft_node::config::ClusterFile = toml::from_str(&text).unwrap();
    file.validate().unwrap();
    assert_eq!(file.nodes.len(), 3);
    let regions: std::collections::BTreeSet<&str> =
        file.nodes.iter().map(|n| n.region.as_str()).collect();
    assert_eq!(regions.len(), 3);
    assert!(file.shards.iter().any(|s| s.name == "drill"));
    assert!(file.shards.iter().any(|s| s.name == "global"));
}

/// Locks seat `user` for each user of `users` on `show`, one write each with request id
/// `{prefix}-{user}`; returns the acknowledged request ids.
async fn write_locks(
    cluster: &TestCluster,
    show: state_machine::ShowId,
    prefix: &str,
    users: std::ops::Range<u64>,
) -> Vec<String> {
    let mut acknowledged = Vec::new();
    for user in users {
        let request_id = format!("{prefix}-{user}");
        cluster
            .write("mumbai", &request_id, lock(show, user, &[user as u32]))
            .await;
        acknowledged.push(request_id);
    }
    acknowledged
}

/// Moves `from` to `to` (a rename: both on the test's temporary directory).
fn move_dir(from: &Path, to: &Path) {
    std::fs::rename(from, to)
        .unwrap_or_else(|e| panic!("mv {} {}: {e}", from.display(), to.display()));
}

async fn stop_node(cluster: &mut TestCluster, id: NodeId) {
    if let Some(node) = cluster.nodes.remove(&id) {
        node.stop().await;
    }
}

/// A three-node cluster with a show in `mumbai`, acknowledged writes, a backup `b1` of
/// node 2, more writes and a leader change after it (so terms move past the backup).
/// Returns the cluster, the acknowledged request ids and the backup's path relative to
/// node 2's data directory. `cold_copy`, when given, receives a copy of node 2's
/// `raft-log` and `shards` taken by hand (node stopped) right after the backup.
async fn cluster_with_backup(
    cold_copy: Option<&Path>,
) -> (
    TestCluster,
    state_machine::ShowId,
    Vec<String>,
    std::path::PathBuf,
) {
    let mut cluster = TestCluster::start(3, &["mumbai", "global"]).await;
    let nodes = nodes_arg(&cluster);
    let show = cluster.seed_show("mumbai").await;
    let mut acknowledged = write_locks(&cluster, show, "before", 0..20).await;
    let run = bookingctl(
        Some(&nodes),
        &["backup", "--node", "2", "--name", "b1", "--json"],
    )
    .await;
    assert!(run.ok, "{}", run.stderr);
    let node2 = cluster.dir.path().join("node-2");
    let backup = Path::new(json(&run)["path"].as_str().unwrap())
        .strip_prefix(&node2)
        .unwrap()
        .to_path_buf();
    if let Some(cold) = cold_copy {
        stop_node(&mut cluster, 2).await;
        for dir in ["raft-log", "shards"] {
            copy_tree(&node2.join(dir), &cold.join(dir));
        }
        cluster.restart(2).await;
    }
    acknowledged.extend(write_locks(&cluster, show, "after", 20..40).await);
    let leader = cluster.wait_leader("mumbai").await;
    let other = if leader == 1 { 3 } else { 1 };
    cluster.transfer_leader("mumbai", leader, other).await;
    acknowledged.extend(write_locks(&cluster, show, "later", 40..50).await);
    cluster.wait_converged("mumbai").await;
    (cluster, show, acknowledged, backup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30g_bookingctl_refuses_to_restore_a_voter_and_the_safe_order_converges() {
    // A hurried SRE stops node 2, moves its directory aside and restores a backup with
    // bookingctl while node 2 is still a voter of every shard: refused (the cluster says
    // node 2 still votes), also when the SRE claims a whole-cluster restore while nodes
    // answer; nothing is written. The cluster keeps serving and no acknowledged write is
    // lost; then the runbook's order (remove, restore, start, add as learner, promote)
    // brings node 2 back and every replica converges to the same digest.
    let (mut cluster, show, mut acknowledged, backup_rel) = cluster_with_backup(None).await;
    let nodes = nodes_arg(&cluster);
    let node2 = cluster.dir.path().join("node-2");
    stop_node(&mut cluster, 2).await;
    let aside = cluster.dir.path().join("node-2-aside");
    move_dir(&node2, &aside);
    let backup = aside.join(&backup_rel);
    let backup = backup.to_str().unwrap();
    let into_voter = bookingctl(
        Some(&nodes),
        &[
            "restore",
            "--from",
            backup,
            "--data-dir",
            node2.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        !into_voter.ok && into_voter.stderr.contains("still a voter"),
        "a restore into a voter must be refused: {}",
        into_voter.stderr
    );
    assert!(
        !node2.exists(),
        "a refused restore wrote {}",
        node2.display()
    );
    let whole = bookingctl(
        Some(&nodes),
        &[
            "restore",
            "--from",
            backup,
            "--data-dir",
            node2.to_str().unwrap(),
            "--whole-cluster",
        ],
    )
    .await;
    assert!(
        !whole.ok && whole.stderr.contains("answer"),
        "--whole-cluster while nodes serve must be refused: {}",
        whole.stderr
    );
    assert!(
        !node2.exists(),
        "a refused restore wrote {}",
        node2.display()
    );
    acknowledged.extend(write_locks(&cluster, show, "while-down", 50..60).await);
    cluster.assert_all_recorded("mumbai", &acknowledged).await;

    // The runbook's order: remove from the voters, restore (node 2's fence stays beside
    // the restored data), start, add as a learner, promote.
    for shard in ["mumbai", "global"] {
        let run = bookingctl(
            Some(&nodes),
            &["member", "remove", "--shard", shard, "--node", "2"],
        )
        .await;
        assert!(run.ok, "{}", run.stderr);
    }
    std::fs::create_dir_all(&node2).unwrap();
    for entry in std::fs::read_dir(&aside).unwrap() {
        let name = entry.unwrap().file_name();
        if name != "raft-log" && name != "shards" && name != "backups" {
            move_dir(&aside.join(&name), &node2.join(&name));
        }
    }
    let restored = bookingctl(
        Some(&nodes),
        &[
            "restore",
            "--from",
            backup,
            "--data-dir",
            node2.to_str().unwrap(),
        ],
    )
    .await;
    assert!(restored.ok, "{}", restored.stderr);
    let marker = node2.join("restored.json");
    assert!(marker.exists(), "restore wrote no marker");
    cluster.restart(2).await;
    let entry = cluster.entry(2);
    readd_node_2(&nodes, &entry).await;
    acknowledged.extend(write_locks(&cluster, show, "final", 60..70).await);
    // Re-added to every shard: the node removes its restore marker.
    let deadline = Instant::now() + Duration::from_secs(10);
    while marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the restore marker stayed after re-adding"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.wait_converged("mumbai").await;
    let status = bookingctl(
        Some(&nodes),
        &["status", "--digest", "--json", "--shard", "mumbai"],
    )
    .await;
    assert!(status.ok, "{}", status.stderr);
    let status = json(&status);
    let members = shard_row(&status, "mumbai")["members"]
        .as_array()
        .unwrap()
        .clone();
    let digests: Vec<&str> = members
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 3);
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    cluster.assert_all_recorded("mumbai", &acknowledged).await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30h_a_node_whose_directories_were_copied_back_by_hand_refuses_to_start() {
    // A hurried SRE replaces node 2's raft-log and shards directories with an older copy
    // taken by hand, bypassing bookingctl, while node 2 is still a voter: node 2 refuses
    // to start (its fence, which the copy did not replace, says its vote and log went
    // backwards). The cluster keeps serving and loses no acknowledged write; node 2's own
    // directories put back start again (the fence is not a false alarm) and converge.
    let cold = tempfile::tempdir().unwrap();
    let (mut cluster, show, mut acknowledged, _) = cluster_with_backup(Some(cold.path())).await;
    let node2 = cluster.dir.path().join("node-2");
    stop_node(&mut cluster, 2).await;
    let own = cluster.dir.path().join("node-2-own");
    std::fs::create_dir_all(&own).unwrap();
    for dir in ["raft-log", "shards"] {
        move_dir(&node2.join(dir), &own.join(dir));
        copy_tree(&cold.path().join(dir), &node2.join(dir));
    }
    let refused = cluster.try_restart(2).await;
    let error = refused
        .expect_err("a node whose log went backwards must refuse to start")
        .to_string();
    assert!(error.contains("went backwards"), "{error}");
    assert!(error.contains("member remove"), "{error}");
    acknowledged.extend(write_locks(&cluster, show, "refused", 50..60).await);
    cluster.assert_all_recorded("mumbai", &acknowledged).await;

    for dir in ["raft-log", "shards"] {
        std::fs::remove_dir_all(node2.join(dir)).unwrap();
        move_dir(&own.join(dir), &node2.join(dir));
    }
    cluster.restart(2).await;
    acknowledged.extend(write_locks(&cluster, show, "back", 60..70).await);
    cluster.wait_converged("mumbai").await;
    cluster.assert_all_recorded("mumbai", &acknowledged).await;
    cluster.stop_all().await;
}

/// Adds node 2 back to every shard as a learner and promotes it, through bookingctl.
async fn readd_node_2(nodes: &str, entry: &raft_node::config::NodeEntry) {
    for shard in ["mumbai", "global"] {
        let run = bookingctl(
            Some(nodes),
            &[
                "member",
                "add",
                "--shard",
                shard,
                "--node",
                "2",
                "--peer-addr",
                &entry.peer_addr,
                "--client-addr",
                &entry.client_addr,
                "--region",
                &entry.region,
            ],
        )
        .await;
        assert!(run.ok, "{}", run.stderr);
        let run = bookingctl(
            Some(nodes),
            &["member", "promote", "--shard", shard, "--node", "2"],
        )
        .await;
        assert!(run.ok, "{}", run.stderr);
    }
}
