//! The real `raft-node` binary, three processes on loopback: crash (kill -9) and
//! restart, orderly stop and restart, refusal of bad configuration, readiness and
//! metrics. Every child process lives in a `Cluster` guard whose `Drop` SIGKILLs it, so
//! nothing outlives a failed test; a failing test also prints the tail of every node's
//! log. Process tests run one at a time (`SERIAL`): the machine has two cores.
//! Set `T90_KEEP_LOGS=1` to keep every cluster's directory (node logs, data) and print
//! its path.

use raft_node::client::{ClusterClient, WriteDone};
use raft_node::config::{ClusterFile, NodeEntry, ShardEntry};
use raft_node::protocol::{Consistency, ReadReply, ReadRequest};
use raft_node::types::NodeId;
use state_machine::testkit::{create_theater, publish_show, screen};
use state_machine::*;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_raft-node");
const SECRET: &str = "process-test-secret-0123456789";
const SHARDS: &[&str] = &["mumbai", "global"];
/// Fast elections; snapshots often enough that a restarted node may need one.
const TIMING: &str = "heartbeat_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
snapshot_after_entries = 100
keep_entries_after_snapshot = 10
";
/// Every variable the binary reads, cleared so the caller's environment cannot leak in.
const ENV_VARS: &[&str] = &[
    "SEAT_LEDGER_NODE_ID",
    "SEAT_LEDGER_CLUSTER",
    "SEAT_LEDGER_DATA_DIR",
    "SEAT_LEDGER_CLUSTER_SECRET",
    "SEAT_LEDGER_CLUSTER_SECRET_FILE",
    "SEAT_LEDGER_RAFT_TIMING",
];
const START_WITHIN: Duration = Duration::from_secs(10);
const LEADER_WITHIN: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Ports that were free a moment ago: bound on port 0 together, then released.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A `raft-node` command with a clean environment; the caller adds the secret.
fn node_command(id: NodeId, cluster: &Path, data_dir: &Path, timing: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("--node-id")
        .arg(id.to_string())
        .arg("--cluster")
        .arg(cluster)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--raft-timing")
        .arg(timing)
        .env("RUST_LOG", "info,openraft=warn")
        .stdin(Stdio::null());
    for var in ENV_VARS {
        command.env_remove(var);
    }
    command
}

/// Waits for `child` to exit, SIGKILLing it (and failing) after `within`.
fn wait_exit(child: &mut Child, within: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the process did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lock(show: ShowId, user: u64, seat: u32) -> CommandKind {
    CommandKind::LockSeats {
        show,
        user: UserId(user),
        seats: vec![SeatId(seat)],
        ttl_ms: None,
    }
}

fn locked(done: &WriteDone) -> LockId {
    match &done.outcome {
        Outcome::Applied(Applied::SeatsLocked { lock, .. }) => *lock,
        other => panic!("expected a lock, got {other:?}"),
    }
}

/// Three (or more) raft-node processes sharing a cluster file, all in one temp dir.
struct Cluster {
    dir: tempfile::TempDir,
    file: ClusterFile,
    cluster_path: PathBuf,
    timing_path: PathBuf,
    children: BTreeMap<NodeId, Child>,
    /// How many times each node was started, to name its log files.
    runs: BTreeMap<NodeId, u32>,
    client: ClusterClient,
    http: reqwest::Client,
    started: Instant,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("T90_KEEP_LOGS").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            eprintln!("T90_KEEP_LOGS: kept {}", dir.keep().display());
            return;
        }
        if std::thread::panicking() {
            let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            logs.retain(|p| p.extension().is_some_and(|e| e == "out" || e == "err"));
            logs.sort();
            for log in logs {
                eprintln!("----- tail of {} -----\n{}", log.display(), tail(&log, 30));
            }
        }
    }
}

impl Cluster {
    /// Writes the cluster and timing files for `count` nodes on fresh ports.
    fn configure(count: u64) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(2 * count as usize);
        let nodes: Vec<NodeEntry> = (1..=count)
            .map(|id| NodeEntry {
                id,
                peer_addr: format!("127.0.0.1:{}", ports[2 * (id as usize - 1)]),
                client_addr: format!("127.0.0.1:{}", ports[2 * (id as usize - 1) + 1]),
                region: format!("region-{id}"),
            })
            .collect();
        let file = ClusterFile {
            cluster_id: "process-test".into(),
            nodes,
            shards: SHARDS
                .iter()
                .map(|name| ShardEntry {
                    name: (*name).into(),
                    members: (1..=count).collect(),
                })
                .collect(),
            limits: Limits::default(),
        };
        let cluster_path = dir.path().join("cluster.toml");
        std::fs::write(
            &cluster_path,
            toml::to_string(&file).expect("cluster file to TOML"),
        )
        .expect("write cluster file");
        let timing_path = dir.path().join("timing.toml");
        std::fs::write(&timing_path, TIMING).expect("write timing file");
        let client = ClusterClient::new(
            file.nodes
                .iter()
                .map(|n| (n.id, n.client_addr.clone()))
                .collect(),
        );
        Cluster {
            dir,
            file,
            cluster_path,
            timing_path,
            children: BTreeMap::new(),
            runs: BTreeMap::new(),
            client,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .expect("http client"),
            started: Instant::now(),
        }
    }

    /// Starts nodes `ids` of a `count`-node cluster and waits until they listen; picks
    /// new ports and retries when a port was taken meanwhile.
    async fn start(count: u64, ids: &[NodeId]) -> Cluster {
        for attempt in 1..=3 {
            let mut cluster = Cluster::configure(count);
            let mut problem = None;
            for id in ids {
                cluster.spawn(*id);
            }
            for id in ids {
                if let Err(error) = cluster.wait_live(*id, START_WITHIN).await {
                    problem = Some(error);
                    break;
                }
            }
            match problem {
                None => {
                    cluster.log(format!("nodes {ids:?} listening (attempt {attempt})"));
                    return cluster;
                }
                Some(error) if error.contains("cannot listen") => {
                    eprintln!("port collision, retrying with new ports: {error}");
                }
                Some(error) => panic!("{error}"),
            }
        }
        panic!("could not start the cluster: ports kept colliding");
    }

    fn log(&self, message: impl std::fmt::Display) {
        eprintln!("[{:>6.2}s] {message}", self.started.elapsed().as_secs_f64());
    }

    fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    fn log_path(&self, id: NodeId, run: u32, stream: &str) -> PathBuf {
        self.dir.path().join(format!("node-{id}.run{run}.{stream}"))
    }

    fn client_addr(&self, id: NodeId) -> String {
        self.file.node(id).expect("node").client_addr.clone()
    }

    fn spawn(&mut self, id: NodeId) {
        assert!(!self.children.contains_key(&id), "node {id} already runs");
        let run = {
            let run = self.runs.entry(id).or_insert(0);
            *run += 1;
            *run
        };
        let out = std::fs::File::create(self.log_path(id, run, "out")).expect("log file");
        let err = std::fs::File::create(self.log_path(id, run, "err")).expect("log file");
        let child = node_command(
            id,
            &self.cluster_path,
            &self.data_dir(id),
            &self.timing_path,
        )
        .env("SEAT_LEDGER_CLUSTER_SECRET", SECRET)
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn raft-node");
        self.log(format!("node {id} started (run {run}, pid {})", child.id()));
        self.children.insert(id, child);
    }

    /// Waits until node `id` answers `/health/live`; an exit is an error carrying stderr.
    async fn wait_live(&mut self, id: NodeId, within: Duration) -> Result<(), String> {
        let url = format!("http://{}/health/live", self.client_addr(id));
        let deadline = Instant::now() + within;
        loop {
            let child = self.children.get_mut(&id).expect("node runs");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.children.remove(&id);
                let run = self.runs[&id];
                return Err(format!(
                    "node {id} exited with {status}: {}",
                    tail(&self.log_path(id, run, "err"), 20)
                ));
            }
            if let Ok(response) = self.http.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("node {id} did not listen within {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Restarts a stopped node on its old ports and data; retries while a port is busy.
    async fn restart(&mut self, id: NodeId) {
        for _ in 0..10 {
            self.spawn(id);
            match self.wait_live(id, START_WITHIN).await {
                Ok(()) => return,
                Err(error) if error.contains("cannot listen") => {
                    self.log(format!("restart of node {id}: {error}; retrying"));
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Err(error) => panic!("restart of node {id}: {error}"),
            }
        }
        panic!("node {id} could not get its ports back");
    }

    /// kill -9.
    fn kill9(&mut self, id: NodeId) -> ExitStatus {
        let mut child = self.children.remove(&id).expect("node runs");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        self.log(format!("node {id} killed with SIGKILL: {status}"));
        status
    }

    /// Sends SIGTERM to every running node, then waits for each to exit.
    fn terminate_all(&mut self, within: Duration) -> BTreeMap<NodeId, ExitStatus> {
        for (id, child) in &self.children {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM node {id}: {status}");
        }
        let ids: Vec<NodeId> = self.children.keys().copied().collect();
        let mut statuses = BTreeMap::new();
        for id in ids {
            let mut child = self.children.remove(&id).expect("node runs");
            let status = wait_exit(&mut child, within, &format!("SIGTERM of node {id}"));
            self.log(format!("node {id} stopped by SIGTERM: {status}"));
            statuses.insert(id, status);
        }
        statuses
    }

    async fn get(&self, id: NodeId, path: &str) -> Option<(u16, String)> {
        let url = format!("http://{}{path}", self.client_addr(id));
        let response = self.http.get(&url).send().await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// This node's `/admin/status` entry of `shard`.
    async fn shard_status(&self, id: NodeId, shard: &str) -> Option<serde_json::Value> {
        let (code, body) = self.get(id, "/admin/status").await?;
        if code != 200 {
            return None;
        }
        let status: serde_json::Value = serde_json::from_str(&body).ok()?;
        status["shards"]
            .as_array()?
            .iter()
            .find(|s| s["shard"] == shard)
            .cloned()
    }

    async fn applied(&self, id: NodeId, shard: &str) -> Option<u64> {
        self.shard_status(id, shard).await?["applied_index"].as_u64()
    }

    /// Waits until exactly one running node leads `shard` and every running node agrees.
    async fn wait_leader(&self, shard: &str) -> NodeId {
        let deadline = Instant::now() + LEADER_WITHIN;
        loop {
            let mut leaders = Vec::new();
            let mut known = Vec::new();
            for id in self.children.keys() {
                let status = self.shard_status(*id, shard).await;
                let status = status.unwrap_or_default();
                if status["state"] == "Leader" {
                    leaders.push(*id);
                }
                known.push((*id, status["leader"].as_u64()));
            }
            if let [leader] = leaders[..] {
                if known.iter().all(|(_, l)| *l == Some(leader)) {
                    self.log(format!("{shard}: node {leader} leads"));
                    return leader;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{shard}: no agreed leader within {LEADER_WITHIN:?} \
                 (leaders {leaders:?}, each node's view {known:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn write(&self, shard: &str, request_id: &str, kind: CommandKind) -> WriteDone {
        self.client
            .write(shard, request_id, kind, WRITE_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("write {request_id}: {e}"))
    }

    /// A theater with a 20 x 25 screen and one show on `shard`.
    async fn seed_show(&self, shard: &str) -> ShowId {
        let theater = self
            .write(
                shard,
                "seed-theater",
                create_theater(shard, UserId(1), vec![screen("Audi", 20, 25)]),
            )
            .await;
        let Outcome::Applied(Applied::TheaterCreated { theater }) = theater.outcome else {
            panic!("{theater:?}")
        };
        let start = raft_node::node::now_ms() + 48 * 3_600_000;
        let show = self
            .write(
                shard,
                "seed-show",
                publish_show(theater, 0, start, "Pathaan"),
            )
            .await;
        let Outcome::Applied(Applied::ShowPublished { show }) = show.outcome else {
            panic!("{show:?}")
        };
        self.log(format!("{shard}: show {show:?} published"));
        show
    }

    /// A linearizable read answered by node `id` itself (no failover to another node).
    async fn read_on(&self, id: NodeId, shard: &str, query: Query) -> ReadReply {
        let url = format!("http://{}/v1/shards/{shard}/read", self.client_addr(id));
        let request = ReadRequest {
            query,
            consistency: Consistency::Linearizable,
            min_index: None,
        };
        let response = self
            .http
            .post(&url)
            .json(&request)
            .send()
            .await
            .unwrap_or_else(|e| panic!("read on node {id}: {e}"));
        assert!(
            response.status().is_success(),
            "read on node {id}: {response:?}"
        );
        response.json().await.expect("read reply")
    }

    /// Node `id`'s linearizable answer to `query`, retried while it is unavailable.
    async fn query_on(&self, id: NodeId, shard: &str, query: Query) -> QueryResponse {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.read_on(id, shard, query.clone()).await {
                ReadReply::Done {
                    result: Ok(response),
                    node,
                    ..
                } => {
                    assert_eq!(node, id, "the read was answered by another node");
                    return response;
                }
                ReadReply::Done { result: Err(e), .. } => panic!("query on node {id}: {e:?}"),
                ReadReply::Unavailable { reason, .. } => {
                    assert!(
                        Instant::now() < deadline,
                        "node {id} could not serve a linearizable read: {reason}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn seat_map(&self, id: NodeId, shard: &str, show: ShowId) -> SeatMap {
        match self.query_on(id, shard, Query::SeatMap { show }).await {
            QueryResponse::SeatMap(map) => map,
            other => panic!("{other:?}"),
        }
    }

    async fn locked_count(&self, id: NodeId, shard: &str, show: ShowId) -> u32 {
        match self.query_on(id, shard, Query::Show { show }).await {
            QueryResponse::Show(view) => view.counts.locked,
            other => panic!("{other:?}"),
        }
    }
}

/// Locks acknowledged by the writer: (seat, lock, when, latency of the write).
type Acks = Arc<Mutex<Vec<(u32, LockId, Instant, Duration)>>>;

/// "n writes, median m, max x" of the given latencies.
fn latency_summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    match (latencies.get(latencies.len() / 2), latencies.last()) {
        (Some(median), Some(max)) => {
            format!("{} writes, median {median:?}, max {max:?}", latencies.len())
        }
        _ => "no writes".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90a_kill_9_of_the_leader_under_load_loses_no_acknowledged_lock() {
    // A writer locks one seat per request (distinct request ids) without pause. The
    // mumbai leader is SIGKILLed mid-stream: a new leader must serve writes, every lock
    // acknowledged (before or after the kill) must be in the seat map of both
    // survivors, and the killed node, restarted on its data dir, must catch up.
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[1, 2, 3]).await;
    for shard in SHARDS {
        cluster.wait_leader(shard).await;
    }
    let show = cluster.seed_show("mumbai").await;

    let acks: Acks = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, acks, stop) = (cluster.client.clone(), acks.clone(), stop.clone());
        tokio::spawn(async move {
            let mut unknown = Vec::new();
            for seat in 0..500u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let kind = lock(show, 10_000 + u64::from(seat), seat);
                let sent = Instant::now();
                match client
                    .write("mumbai", &format!("load-{seat}"), kind, WRITE_TIMEOUT)
                    .await
                {
                    Ok(done) => acks.lock().unwrap().push((
                        seat,
                        locked(&done),
                        Instant::now(),
                        sent.elapsed(),
                    )),
                    Err(error) => {
                        eprintln!("writer: seat {seat} has no definite outcome: {error}");
                        unknown.push(seat);
                    }
                }
            }
            unknown
        })
    };
    let acked = || acks.lock().unwrap().len();

    let deadline = Instant::now() + Duration::from_secs(10);
    while acked() < 30 {
        assert!(Instant::now() < deadline, "only {} locks in 10 s", acked());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = cluster.wait_leader("mumbai").await;
    let acked_before = acked();
    let killed_at = Instant::now();
    let status = cluster.kill9(leader);
    assert_eq!(status.signal(), Some(9), "{status}");
    cluster.log(format!(
        "killed leader {leader} after {acked_before} acknowledged locks"
    ));

    let ack_after_kill = || {
        acks.lock()
            .unwrap()
            .iter()
            .find(|(_, _, at, _)| *at > killed_at)
            .map(|(_, _, at, _)| at.duration_since(killed_at))
    };
    let deadline = killed_at + Duration::from_secs(10);
    let failover = loop {
        if let Some(failover) = ack_after_kill() {
            break failover;
        }
        assert!(
            Instant::now() < deadline,
            "no write acknowledged within 10 s of the kill ({acked_before} before it)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    cluster.log(format!(
        "failover: first lock acknowledged {failover:?} after the kill"
    ));
    // Enough writes after the kill that the new leader snapshots and purges its log.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked() < acked_before + 150 {
        assert!(
            Instant::now() < deadline,
            "writes stalled after the failover: {} acknowledged, {acked_before} before the kill",
            acked()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let unknown = writer.await.expect("writer task");
    let acks: Vec<(u32, LockId, Instant, Duration)> = acks.lock().unwrap().clone();
    let (before, after): (Vec<&(u32, LockId, Instant, Duration)>, Vec<_>) =
        acks.iter().partition(|a| a.2 <= killed_at);
    cluster.log(format!(
        "write latency before the kill: {}; after: {}",
        latency_summary(before.iter().map(|a| a.3).collect()),
        latency_summary(after.iter().map(|a| a.3).collect())
    ));
    cluster.log(format!(
        "writer stopped: {} acknowledged, {} without a definite outcome",
        acks.len(),
        unknown.len()
    ));
    let new_leader = cluster.wait_leader("mumbai").await;
    assert_ne!(new_leader, leader, "the killed node still leads");

    for id in cluster.children.keys().copied().collect::<Vec<_>>() {
        let count = cluster.locked_count(id, "mumbai", show).await;
        assert!(
            count as usize >= acks.len() && count as usize <= acks.len() + unknown.len(),
            "node {id}: {count} locked seats, {} acknowledged, {} unknown",
            acks.len(),
            unknown.len()
        );
        let map = cluster.seat_map(id, "mumbai", show).await;
        for (seat, lock_id, _, _) in &acks {
            let view = &map.seats[*seat as usize];
            assert_eq!(view.seat, SeatId(*seat));
            assert_eq!(
                view.status,
                SeatStatus::Locked,
                "node {id}: acknowledged lock {lock_id:?} on seat {seat} is gone"
            );
        }
        cluster.log(format!(
            "node {id}: all {} acknowledged locks present ({count} locked)",
            acks.len()
        ));
    }

    let target = cluster
        .applied(new_leader, "mumbai")
        .await
        .expect("leader status");
    let restarted_at = Instant::now();
    cluster.restart(leader).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let applied = cluster.applied(leader, "mumbai").await;
        if applied.is_some_and(|a| a >= target) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node {leader} applied {applied:?}, leader had {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.log(format!(
        "restarted node {leader} applied index {target} in {:?}",
        restarted_at.elapsed()
    ));
    let on_restarted = cluster.seat_map(leader, "mumbai", show).await;
    let on_leader = cluster.seat_map(new_leader, "mumbai", show).await;
    assert_eq!(
        on_restarted, on_leader,
        "the restarted node's seat map differs from the leader's"
    );
    let restarted = cluster
        .shard_status(leader, "mumbai")
        .await
        .expect("status");
    let leader_status = cluster
        .shard_status(new_leader, "mumbai")
        .await
        .expect("status");
    cluster.log(format!(
        "restarted node: snapshot index {}, purged {}; leader: snapshot {}, purged {} \
         (a snapshot index on the restarted node means it caught up through a snapshot)",
        restarted["snapshot_index"],
        restarted["purged_index"],
        leader_status["snapshot_index"],
        leader_status["purged_index"]
    ));
    let done = cluster
        .write("mumbai", "after-restart", lock(show, 99_999, 499))
        .await;
    locked(&done);
    let map = cluster.seat_map(leader, "mumbai", show).await;
    assert_eq!(
        map.seats[499].status,
        SeatStatus::Locked,
        "the restarted node's linearizable read missed the latest write"
    );
    cluster.log("restarted node converged; writes still work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90b_sigterm_and_restart_keeps_data_without_reinitialising() {
    // All three nodes stop on SIGTERM (exit 0) and start again on the same data dirs:
    // nothing is re-initialised, acknowledged locks are still there, a retried request
    // id returns its first outcome, and new writes commit.
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[1, 2, 3]).await;
    for shard in SHARDS {
        cluster.wait_leader(shard).await;
    }
    let show = cluster.seed_show("mumbai").await;
    let mut locks = Vec::new();
    for seat in 0..10u32 {
        let done = cluster
            .write(
                "mumbai",
                &format!("pre-{seat}"),
                lock(show, 100 + u64::from(seat), seat),
            )
            .await;
        locks.push(locked(&done));
    }
    cluster.log("10 locks acknowledged; stopping every node with SIGTERM");
    for (id, status) in cluster.terminate_all(Duration::from_secs(10)) {
        assert!(
            status.success(),
            "node {id} exited with {status} on SIGTERM"
        );
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    for id in 1..=3 {
        if let Err(error) = cluster.wait_live(id, START_WITHIN).await {
            panic!("second start: {error}");
        }
    }
    for shard in SHARDS {
        cluster.wait_leader(shard).await;
    }
    for id in 1..=3 {
        let count = cluster.locked_count(id, "mumbai", show).await;
        assert_eq!(count, 10, "node {id} after the restart");
    }
    let again = cluster.write("mumbai", "pre-3", lock(show, 103, 3)).await;
    assert_eq!(
        locked(&again),
        locks[3],
        "a retried request id changed outcome"
    );
    for seat in 10..15u32 {
        let done = cluster
            .write(
                "mumbai",
                &format!("post-{seat}"),
                lock(show, 100 + u64::from(seat), seat),
            )
            .await;
        locked(&done);
    }
    for id in 1..=3 {
        let count = cluster.locked_count(id, "mumbai", show).await;
        assert_eq!(count, 15, "node {id} after new writes");
    }
    let first = std::fs::read_to_string(cluster.log_path(1, 1, "out")).unwrap_or_default();
    let second = std::fs::read_to_string(cluster.log_path(1, 2, "out")).unwrap_or_default();
    assert!(
        first.contains("initialising shard"),
        "the first run of node 1 did not log its bootstrap"
    );
    assert!(
        !second.contains("initialising shard") && !second.contains("initialise refused"),
        "node 1 tried to initialise again after a restart"
    );
    cluster.log("data survived the restart; no re-initialisation; writes work");
}

/// Runs the binary to completion with `secret` (if any) and returns (status, stderr).
fn run_bad(
    dir: &Path,
    name: &str,
    cluster: &str,
    node_id: NodeId,
    timing: &str,
    secret: Option<&str>,
) -> (ExitStatus, String) {
    let cluster_path = dir.join(format!("{name}.cluster.toml"));
    std::fs::write(&cluster_path, cluster).expect("write cluster file");
    let timing_path = dir.join(format!("{name}.timing.toml"));
    std::fs::write(&timing_path, timing).expect("write timing file");
    let err_path = dir.join(format!("{name}.err"));
    let mut command = node_command(node_id, &cluster_path, &dir.join(name), &timing_path);
    if let Some(secret) = secret {
        command.env("SEAT_LEDGER_CLUSTER_SECRET", secret);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn raft-node");
    let status = wait_exit(&mut child, Duration::from_secs(10), name);
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    (status, stderr)
}

/// A refused start: the inputs, and what stderr must mention.
struct BadCase<'a> {
    name: &'a str,
    cluster: &'a str,
    node_id: NodeId,
    timing: &'a str,
    secret: Option<&'a str>,
    expected: &'a [&'a str],
}

#[test]
fn t90c_bad_configuration_is_refused_with_a_clear_message() {
    // Each bad input makes the binary exit with status 2 before it binds anything, with
    // a message on stderr that names the problem.
    let dir = tempfile::tempdir().expect("temp dir");
    let good = "cluster_id = \"bad-config\"
[[nodes]]
id = 1
peer_addr = \"127.0.0.1:1\"
client_addr = \"127.0.0.1:2\"
region = \"south\"
[[nodes]]
id = 2
peer_addr = \"127.0.0.1:3\"
client_addr = \"127.0.0.1:4\"
[[shards]]
name = \"mumbai\"
members = [1, 2]
[[shards]]
name = \"global\"
members = [1, 2]
";
    let unknown_member = good.replace(
        "members = [1, 2]\n[[shards]]",
        "members = [1, 2, 7]\n[[shards]]",
    );
    assert_ne!(unknown_member, good);
    let malformed = "cluster_id = \"bad-config\"\n[[nodes]\nid = 1\n";
    let unknown_field = format!("{good}replicas = 3\n");
    let slow_heartbeat =
        "heartbeat_ms = 500\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 600\n";
    let cases = [
        BadCase {
            name: "unknown-member",
            cluster: unknown_member.as_str(),
            node_id: 1,
            timing: TIMING,
            secret: Some(SECRET),
            expected: &["shard mumbai", "member 7 is not in nodes"],
        },
        BadCase {
            name: "malformed-toml",
            cluster: malformed,
            node_id: 1,
            timing: TIMING,
            secret: Some(SECRET),
            expected: &[
                "cluster file",
                "malformed-toml.cluster.toml",
                "TOML parse error",
            ],
        },
        BadCase {
            name: "unknown-field",
            cluster: unknown_field.as_str(),
            node_id: 1,
            timing: TIMING,
            secret: Some(SECRET),
            expected: &["cluster file", "replicas"],
        },
        BadCase {
            name: "missing-secret",
            cluster: good,
            node_id: 1,
            timing: TIMING,
            secret: None,
            expected: &["SEAT_LEDGER_CLUSTER_SECRET"],
        },
        BadCase {
            name: "short-secret",
            cluster: good,
            node_id: 1,
            timing: TIMING,
            secret: Some("too-short"),
            expected: &["cluster secret", "16 bytes"],
        },
        BadCase {
            name: "unknown-node-id",
            cluster: good,
            node_id: 9,
            timing: TIMING,
            secret: Some(SECRET),
            expected: &["node_id 9 is not in the cluster file"],
        },
        BadCase {
            name: "bad-timing",
            cluster: good,
            node_id: 1,
            timing: slow_heartbeat,
            secret: Some(SECRET),
            expected: &["raft timing"],
        },
    ];
    for BadCase {
        name,
        cluster,
        node_id,
        timing,
        secret,
        expected,
    } in cases
    {
        let (status, stderr) = run_bad(dir.path(), name, cluster, node_id, timing, secret);
        eprintln!("{name}: {status}; stderr: {}", stderr.trim());
        assert_eq!(status.code(), Some(2), "{name}: {status}; stderr: {stderr}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{name}: stderr does not mention {needle:?}: {stderr}"
            );
        }
        assert!(
            !dir.path().join(name).exists(),
            "{name}: the refused node created its data dir"
        );
    }
}

/// The value of `metric{labels...}` lines carrying `label`, summed.
fn metric_sum(text: &str, metric: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90d_readiness_follows_leadership_and_metrics_are_exported() {
    // Node 1 alone cannot elect a leader: it is live but not ready (503 naming the
    // problem). With all three up, /health/ready turns 200 on every node, and /metrics
    // exports seat_ledger_ series, with exactly one mumbai leader among the nodes.
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(3, &[1]).await;
    let (code, body) = cluster
        .get(1, "/health/ready")
        .await
        .expect("ready answers");
    cluster.log(format!("node 1 alone: /health/ready {code} {body}"));
    assert_eq!(code, 503, "ready without a quorum: {body}");
    assert!(body.contains("no leader"), "{body}");

    let started = Instant::now();
    for id in [2, 3] {
        cluster.spawn(id);
    }
    for id in [2, 3] {
        if let Err(error) = cluster.wait_live(id, START_WITHIN).await {
            panic!("{error}");
        }
    }
    let deadline = Instant::now() + LEADER_WITHIN;
    for id in 1..=3 {
        loop {
            let answer = cluster.get(id, "/health/ready").await;
            if answer.as_ref().is_some_and(|(code, _)| *code == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {id} not ready within {LEADER_WITHIN:?}: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cluster.log(format!(
        "all nodes ready {:?} after nodes 2 and 3 started",
        started.elapsed()
    ));
    cluster.seed_show("mumbai").await;

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut texts = Vec::new();
        for id in 1..=3 {
            let (code, text) = cluster.get(id, "/metrics").await.expect("metrics answer");
            assert_eq!(code, 200);
            texts.push(text);
        }
        let all_have = texts.iter().all(|t| {
            [
                "seat_ledger_is_leader",
                "seat_ledger_applied_index",
                "seat_ledger_term",
            ]
            .iter()
            .all(|m| t.contains(m))
        });
        let leaders: f64 = texts
            .iter()
            .map(|t| metric_sum(t, "seat_ledger_is_leader", "shard=\"mumbai\""))
            .sum();
        let proposals = texts
            .iter()
            .any(|t| t.contains("seat_ledger_proposals_total"));
        if all_have && leaders == 1.0 && proposals {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics incomplete: every node has gauges {all_have}, mumbai leaders {leaders}, \
             proposals counted {proposals}\n{}",
            texts.join("\n-----\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.log("metrics exported by every node; one mumbai leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90e_a_failing_test_leaves_no_process_behind() {
    // The guard's Drop SIGKILLs and reaps every child even when the test panics (the
    // panic below is deliberate; the log tails it prints are expected).
    let _serial = SERIAL.lock().await;
    let pids: Arc<Mutex<Vec<u32>>> = Arc::default();
    let task = {
        let pids = pids.clone();
        tokio::spawn(async move {
            let cluster = Cluster::start(3, &[1, 2, 3]).await;
            pids.lock()
                .unwrap()
                .extend(cluster.children.values().map(Child::id));
            panic!("deliberate panic: the Cluster guard must clean up");
        })
    };
    let error = task.await.expect_err("the task panics");
    assert!(error.is_panic());
    let pids = pids.lock().unwrap().clone();
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "raft-node pid {pid} outlived its test"
        );
    }
}
