//! Cluster benchmark for the [raft] issue: one shard on three in-process replicas over
//! loopback, fsync on (the Raft log appends with `sync = true`), driven through the
//! client protocol (HTTP/JSON, `ClusterClient`).
//!
//! It measures, in this order:
//! 1. baselines: fsync of a 4 KiB append in this bench's data directory, and the
//!    loopback TCP round trip;
//! 2. CPU of one node hosting 64 idle shards (three nodes, each in its own tokio
//!    runtime whose threads are named after it, so its CPU is read per thread from
//!    /proc), against a baseline with no shards;
//! 3. lock commands/s and latency at 1, 16 and 256 concurrent clients;
//! 4. linearizable read rate on the leader vs a follower;
//! 5. leader crash to first acknowledged write, over repeated trials.
//!
//! Run: `cargo bench -p raft-node --bench cluster` (about 3 minutes), or
//! `cargo bench -p raft-node --bench cluster -- --quick` (about 30 s).
//! It prints figures and asserts nothing about speed.

use hdrhistogram::Histogram;
use raft_node::client::ClusterClient;
use raft_node::config::{ClusterFile, NodeConfig, NodeEntry, RaftTiming, ShardEntry};
use raft_node::node::Shard;
use raft_node::protocol::{Consistency, ReadReply, ReadRequest};
use raft_node::server::RunningNode;
use raft_node::types::NodeId;
use state_machine::testkit::{create_theater, publish_show, screen};
use state_machine::{
    Applied, CommandKind, Limits, Outcome, Query, SeatId, ShowId, TheaterId, UserId,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

const SECRET: &[u8] = b"bench-cluster-secret-0123456789";
const SHARD: &str = "bench";
const ROWS: u16 = 100;
const SEATS_PER_ROW: u16 = 100;
const SEATS_PER_SHOW: u64 = ROWS as u64 * SEATS_PER_ROW as u64;
const USER_BASE: u64 = 1_000_000;
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const FAILOVER_WRITE_TIMEOUT: Duration = Duration::from_secs(20);
const IDLE_SHARDS: usize = 64;
const HOUR_MS: u64 = 3_600_000;
const LOCK_CLIENTS: [usize; 3] = [1, 16, 256];
const READERS: [usize; 2] = [1, 16];

/// How much of everything to do; `--quick` shrinks it to about 30 s.
struct Plan {
    quick: bool,
    fsync_samples: usize,
    rtt_samples: usize,
    lock_warmup: Duration,
    lock_measure: Duration,
    read_warmup: Duration,
    read_measure: Duration,
    failover_trials: usize,
    idle_settle: Duration,
    idle_measure: Duration,
    idle_baseline: Duration,
    /// Shows of 10,000 seats the lock runs may use up; bounds the ledger's size.
    max_shows: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                fsync_samples: 100,
                rtt_samples: 500,
                lock_warmup: Duration::from_millis(300),
                lock_measure: Duration::from_millis(1_500),
                read_warmup: Duration::from_millis(200),
                read_measure: Duration::from_secs(1),
                failover_trials: 3,
                idle_settle: Duration::from_millis(300),
                idle_measure: Duration::from_secs(2),
                idle_baseline: Duration::from_secs(1),
                max_shows: 8,
            }
        } else {
            Plan {
                quick,
                fsync_samples: 200,
                rtt_samples: 1_000,
                lock_warmup: Duration::from_secs(1),
                lock_measure: Duration::from_secs(8),
                read_warmup: Duration::from_millis(500),
                read_measure: Duration::from_secs(4),
                failover_trials: 20,
                idle_settle: Duration::from_secs(2),
                idle_measure: Duration::from_secs(10),
                idle_baseline: Duration::from_secs(5),
                max_shows: 30,
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Histograms and formatting

/// Latencies in nanoseconds, 1 ns .. 120 s, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
    histogram.saturating_record(nanos);
}

fn at(histogram: &Histogram<u64>, quantile: f64) -> Duration {
    if histogram.is_empty() {
        return Duration::ZERO;
    }
    Duration::from_nanos(histogram.value_at_quantile(quantile))
}

fn max_of(histogram: &Histogram<u64>) -> Duration {
    if histogram.is_empty() {
        return Duration::ZERO;
    }
    Duration::from_nanos(histogram.max())
}

fn show_time(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs == 0.0 {
        "-".into()
    } else if secs < 1e-3 {
        format!("{:.1} us", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{secs:.3} s")
    }
}

/// p10 .. max of a latency histogram, for distributions that are far from normal.
fn spread(histogram: &Histogram<u64>) -> String {
    let below_1ms = histogram.count_between(0, 1_000_000) as f64 / histogram.len().max(1) as f64;
    format!(
        "p10 {}, p50 {}, p90 {}, p99 {}, max {}; {:.0} % under 1 ms",
        show_time(at(histogram, 0.1)),
        show_time(at(histogram, 0.5)),
        show_time(at(histogram, 0.9)),
        show_time(at(histogram, 0.99)),
        show_time(max_of(histogram)),
        below_1ms * 100.0
    )
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count as f64 / elapsed.as_secs_f64()
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "meets"
    } else {
        "MISSES"
    }
}

// ---------------------------------------------------------------------------------
// Baselines

struct Baselines {
    fsync: Histogram<u64>,
    rocksdb: Histogram<u64>,
    rtt: Histogram<u64>,
}

impl Baselines {
    /// The single-client lock budget of the issue: 3 fsyncs + 2 round trips (p50s).
    fn lock_budget(&self) -> Duration {
        at(&self.fsync, 0.5) * 3 + at(&self.rtt, 0.5) * 2
    }
}

/// Appends 4 KiB and `sync_data`s it, `samples` times, in `dir`.
fn fsync_baseline(dir: &Path, samples: usize) -> Histogram<u64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open the fsync probe file");
    let block = vec![0x5au8; 4096];
    let mut histogram = histogram();
    for n in 0..samples + 10 {
        let started = Instant::now();
        file.write_all(&block).expect("append 4 KiB");
        file.sync_data().expect("sync_data");
        if n >= 10 {
            record(&mut histogram, started.elapsed());
        }
    }
    drop(file);
    let _ = std::fs::remove_file(path);
    histogram
}

/// Puts 4 KiB values unsynced into a fresh RocksDB in `dir`, then syncs its write-ahead
/// log: the write path of one append of the Raft log when no other append shares its
/// sync (`log_store` + `group_commit`), for comparison with the bare fsync.
fn rocksdb_baseline(dir: &Path, samples: usize) -> Histogram<u64> {
    let path = dir.join("rocksdb-probe");
    let mut options = rocksdb::Options::default();
    options.create_if_missing(true);
    let db = rocksdb::DB::open(&options, &path).expect("open the RocksDB probe");
    let mut write = rocksdb::WriteOptions::default();
    write.set_sync(false);
    let value = vec![0x5au8; 4096];
    let mut histogram = histogram();
    for n in 0..samples + 10 {
        let started = Instant::now();
        db.put_opt((n as u64).to_be_bytes(), &value, &write)
            .expect("put");
        db.flush_wal(true).expect("sync the write-ahead log");
        if n >= 10 {
            record(&mut histogram, started.elapsed());
        }
    }
    drop(db);
    let _ = std::fs::remove_dir_all(path);
    histogram
}

/// A 64-byte echo over one loopback TCP connection (nodelay), `samples` round trips.
async fn rtt_baseline(samples: usize) -> Histogram<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo address");
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept echo");
        stream.set_nodelay(true).expect("nodelay");
        let mut buffer = [0u8; 64];
        while stream.read_exact(&mut buffer).await.is_ok() {
            if stream.write_all(&buffer).await.is_err() {
                break;
            }
        }
    });
    let mut stream = TcpStream::connect(addr).await.expect("connect echo");
    stream.set_nodelay(true).expect("nodelay");
    let message = [7u8; 64];
    let mut answer = [0u8; 64];
    let mut histogram = histogram();
    for n in 0..samples + 100 {
        let started = Instant::now();
        stream.write_all(&message).await.expect("echo write");
        stream.read_exact(&mut answer).await.expect("echo read");
        if n >= 100 {
            record(&mut histogram, started.elapsed());
        }
    }
    drop(stream);
    let _ = server.await;
    histogram
}

// ---------------------------------------------------------------------------------
// An in-process cluster (adapted from tests/common/mod.rs)

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

async fn listener_pair() -> (TcpListener, TcpListener) {
    (listener().await, listener().await)
}

fn node_entry(id: NodeId, peer: &TcpListener, client: &TcpListener) -> NodeEntry {
    NodeEntry {
        id,
        peer_addr: peer.local_addr().expect("peer address").to_string(),
        client_addr: client.local_addr().expect("client address").to_string(),
        region: format!("region-{}", (id - 1) % 3),
    }
}

fn cluster_file(nodes: Vec<NodeEntry>, shards: &[String]) -> ClusterFile {
    let members: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
    ClusterFile {
        cluster_id: "bench".into(),
        nodes,
        shards: shards
            .iter()
            .map(|name| ShardEntry {
                name: name.clone(),
                members: members.clone(),
            })
            .collect(),
        limits: Limits::default(),
    }
}

fn node_config(file: &ClusterFile, dir: &Path, id: NodeId, timing: &RaftTiming) -> NodeConfig {
    NodeConfig {
        node_id: id,
        data_dir: dir.join(format!("node-{id}")),
        cluster: file.clone(),
        cluster_secret: SECRET.to_vec(),
        raft: timing.clone(),
        tls: None,
    }
}

struct BenchCluster {
    dir: tempfile::TempDir,
    file: ClusterFile,
    timing: RaftTiming,
    nodes: BTreeMap<NodeId, RunningNode>,
    client: ClusterClient,
}

impl BenchCluster {
    async fn start(node_count: u64, shards: &[String], timing: RaftTiming) -> BenchCluster {
        let mut listeners = BTreeMap::new();
        let mut entries = Vec::new();
        for id in 1..=node_count {
            let (peer, client) = listener_pair().await;
            entries.push(node_entry(id, &peer, &client));
            listeners.insert(id, (peer, client));
        }
        let file = cluster_file(entries, shards);
        let client = ClusterClient::new(
            file.nodes
                .iter()
                .map(|n| (n.id, n.client_addr.clone()))
                .collect(),
        );
        let mut cluster = BenchCluster {
            dir: tempfile::tempdir().expect("temp dir"),
            file,
            timing,
            nodes: BTreeMap::new(),
            client,
        };
        for (id, (peer, client)) in listeners {
            let node = RunningNode::start(cluster.config(id), peer, client)
                .await
                .expect("start node");
            cluster.nodes.insert(id, node);
        }
        for shard in shards {
            cluster.wait_leader(shard).await;
        }
        cluster
    }

    fn config(&self, id: NodeId) -> NodeConfig {
        node_config(&self.file, self.dir.path(), id, &self.timing)
    }

    fn client_addr(&self, id: NodeId) -> String {
        self.file
            .node(id)
            .map(|n| n.client_addr.clone())
            .expect("node entry")
    }

    /// Restarts a crashed node on its old addresses and data; retries while the old
    /// sockets or database locks are still being released.
    async fn restart(&mut self, id: NodeId) {
        let entry = self.file.node(id).cloned().expect("node entry");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let peer = TcpListener::bind(&entry.peer_addr).await;
            let client = TcpListener::bind(&entry.client_addr).await;
            let problem = match (peer, client) {
                (Ok(peer), Ok(client)) => {
                    match RunningNode::start(self.config(id), peer, client).await {
                        Ok(node) => {
                            self.nodes.insert(id, node);
                            return;
                        }
                        Err(error) => error.to_string(),
                    }
                }
                (Err(error), _) | (_, Err(error)) => error.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "cannot restart node {id}: {problem}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.crash().await;
        }
    }

    fn shard(&self, id: NodeId, shard: &str) -> Arc<Shard> {
        self.nodes[&id].node.shard(shard).expect("shard on node")
    }

    fn leader(&self, shard: &str) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|(_, node)| node.node.shard(shard).is_ok_and(|s| s.raft.is_leader()))
            .map(|(id, _)| *id)
    }

    async fn wait_leader(&self, shard: &str) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(leader) = self.leader(shard) {
                return leader;
            }
            assert!(Instant::now() < deadline, "no leader for {shard} in 30 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every running replica has applied at least `index` and they agree
    /// on the applied index (digests are compared once, at the end of the bench: on a
    /// large ledger they cost tens of milliseconds each).
    async fn wait_applied(&self, shard: &str, index: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let applied: Vec<u64> = self
                .nodes
                .keys()
                .map(|id| self.shard(*id, shard).applied_index())
                .collect();
            if applied.iter().all(|a| *a >= index) && applied.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{shard} did not converge: applied {applied:?}, want {index}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn digests_agree(&self, shard: &str) -> bool {
        let digests: Vec<[u8; 32]> = self
            .nodes
            .keys()
            .map(|id| {
                let shard = self.shard(*id, shard);
                let store = shard.store.read().expect("store lock");
                store.ledger().digest()
            })
            .collect();
        digests.windows(2).all(|w| w[0] == w[1])
    }

    async fn stop_all(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if let Some(node) = self.nodes.remove(&id) {
                node.stop().await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Seats: shows of 10,000 seats published on demand, one seat per lock, one user per
// lock (Limits::default() allows 10 seats per user per show).

struct SeatPool {
    client: ClusterClient,
    theater: TheaterId,
    first_start_ms: u64,
    max_shows: usize,
    next: AtomicU64,
    shows: tokio::sync::Mutex<Vec<ShowId>>,
}

impl SeatPool {
    async fn new(client: ClusterClient, max_shows: usize) -> Arc<SeatPool> {
        let theater = client
            .write(
                SHARD,
                "bench-theater",
                create_theater(SHARD, UserId(1), vec![screen("Audi", ROWS, SEATS_PER_ROW)]),
                WRITE_TIMEOUT,
            )
            .await
            .expect("create the theater");
        let Outcome::Applied(Applied::TheaterCreated { theater }) = theater.outcome else {
            panic!("theater not created: {:?}", theater.outcome)
        };
        Arc::new(SeatPool {
            client,
            theater,
            first_start_ms: raft_node::node::now_ms() + 48 * HOUR_MS,
            max_shows,
            next: AtomicU64::new(0),
            shows: tokio::sync::Mutex::new(Vec::new()),
        })
    }

    /// Show number `index`, publishing it (and any before it) if needed.
    async fn show(&self, index: usize) -> Option<ShowId> {
        if index >= self.max_shows {
            return None;
        }
        let mut shows = self.shows.lock().await;
        while shows.len() <= index {
            let n = shows.len();
            // Shows last 3 h: 4 h apart on the one screen never overlap.
            let start = self.first_start_ms + n as u64 * 4 * HOUR_MS;
            let done = self
                .client
                .write(
                    SHARD,
                    &format!("bench-show-{n}"),
                    publish_show(self.theater, 0, start, &format!("Bench {n}")),
                    WRITE_TIMEOUT,
                )
                .await;
            match done.map(|d| d.outcome) {
                Ok(Outcome::Applied(Applied::ShowPublished { show })) => shows.push(show),
                other => {
                    eprintln!("publishing show {n} failed: {other:?}");
                    return None;
                }
            }
        }
        Some(shows[index])
    }

    /// The next free seat as (sequence number, show, seat), or None when used up.
    async fn take(self: &Arc<Self>) -> Option<(u64, ShowId, u32)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let index = usize::try_from(n / SEATS_PER_SHOW).ok()?;
        if n % SEATS_PER_SHOW == SEATS_PER_SHOW / 2 {
            // Publish the next show in the background, before anyone waits for it.
            let pool = self.clone();
            tokio::spawn(async move { pool.show(index + 1).await });
        }
        let show = self.show(index).await?;
        Some((n, show, (n % SEATS_PER_SHOW) as u32))
    }

    fn taken(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
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

// ---------------------------------------------------------------------------------
// Load phases

#[derive(Default)]
struct Tally {
    ok: u64,
    rejected: u64,
    errors: u64,
    first_problem: Option<String>,
    last_done: Option<Instant>,
    ran_out: bool,
}

impl Tally {
    fn problem(&mut self, problem: String) {
        self.first_problem.get_or_insert(problem);
    }

    fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        self.rejected += other.rejected;
        self.errors += other.errors;
        self.ran_out |= other.ran_out;
        if self.first_problem.is_none() {
            self.first_problem = other.first_problem;
        }
        self.last_done = self.last_done.max(other.last_done);
    }
}

struct PhaseResult {
    label: String,
    tally: Tally,
    histogram: Histogram<u64>,
    elapsed: Duration,
    /// Snapshots the leader built during the phase (lock phases only).
    snapshots: u64,
}

impl PhaseResult {
    fn per_second(&self) -> f64 {
        rate(self.tally.ok, self.elapsed)
    }
}

/// Collects the workers' tallies; the measured interval runs from `measure_from` to the
/// last completion of an operation started in it.
async fn gather(
    label: String,
    tasks: Vec<tokio::task::JoinHandle<(Tally, Histogram<u64>)>>,
    measure_from: Instant,
) -> PhaseResult {
    let mut tally = Tally::default();
    let mut histogram = histogram();
    for task in tasks {
        let (worker, worker_histogram) = task.await.expect("worker panicked");
        tally.merge(worker);
        histogram
            .add(worker_histogram)
            .expect("same histogram bounds");
    }
    let elapsed = tally.last_done.map_or(Duration::ZERO, |done| {
        done.saturating_duration_since(measure_from)
    });
    PhaseResult {
        label,
        tally,
        histogram,
        elapsed,
        snapshots: 0,
    }
}

/// `clients` concurrent clients lock one seat each, back to back, for warmup + measure.
async fn lock_phase(
    client: &ClusterClient,
    pool: &Arc<SeatPool>,
    leader: Arc<Shard>,
    clients: usize,
    plan: &Plan,
) -> PhaseResult {
    let measure_from = Instant::now() + plan.lock_warmup;
    let end = measure_from + plan.lock_measure;
    // Counts the leader's snapshots: building one holds the store's read lock, and
    // applies (so acknowledgements) wait for it.
    let snapshots = tokio::spawn(async move {
        let mut last = leader.metrics().snapshot;
        let mut built = 0;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let now = leader.metrics().snapshot;
            if now != last {
                built += 1;
                last = now;
            }
        }
        built
    });
    let tasks = (0..clients)
        .map(|_| {
            let client = client.clone();
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut latencies = histogram();
                while Instant::now() < end {
                    let Some((n, show, seat)) = pool.take().await else {
                        tally.ran_out = true;
                        break;
                    };
                    let sent = Instant::now();
                    let result = client
                        .write(
                            SHARD,
                            &format!("lock-{n}"),
                            lock(show, USER_BASE + n, seat),
                            WRITE_TIMEOUT,
                        )
                        .await;
                    let done = Instant::now();
                    if sent < measure_from {
                        continue;
                    }
                    tally.last_done = tally.last_done.max(Some(done));
                    match result {
                        Ok(reply) if reply.outcome.is_applied() => {
                            tally.ok += 1;
                            record(&mut latencies, done - sent);
                        }
                        Ok(reply) => {
                            tally.rejected += 1;
                            tally.problem(format!("{:?}", reply.outcome));
                        }
                        Err(error) => {
                            tally.errors += 1;
                            tally.problem(error.to_string());
                        }
                    }
                }
                (tally, latencies)
            })
        })
        .collect();
    let mut result = gather(format!("{clients}"), tasks, measure_from).await;
    result.snapshots = snapshots.await.unwrap_or(0);
    result
}

/// `readers` concurrent readers post linearizable reads to one node for warmup + measure.
async fn read_phase(label: &str, addr: &str, readers: usize, plan: &Plan) -> PhaseResult {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(readers)
        .build()
        .expect("http client");
    let url = Arc::new(format!("http://{addr}/v1/shards/{SHARD}/read"));
    let request = ReadRequest {
        query: Query::Clock,
        consistency: Consistency::Linearizable,
        min_index: None,
    };
    let body = Arc::new(serde_json::to_vec(&request).expect("encode read"));
    let measure_from = Instant::now() + plan.read_warmup;
    let end = measure_from + plan.read_measure;
    let tasks = (0..readers)
        .map(|_| {
            let (http, url, body) = (http.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut latencies = histogram();
                while Instant::now() < end {
                    let sent = Instant::now();
                    let reply = http
                        .post(url.as_str())
                        .header("content-type", "application/json")
                        .body(body.as_ref().clone())
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let reply = match reply {
                        Ok(response) => response.json::<ReadReply>().await,
                        Err(error) => Err(error),
                    };
                    let done = Instant::now();
                    if sent < measure_from {
                        continue;
                    }
                    tally.last_done = tally.last_done.max(Some(done));
                    match reply {
                        Ok(ReadReply::Done { result: Ok(_), .. }) => {
                            tally.ok += 1;
                            record(&mut latencies, done - sent);
                        }
                        Ok(other) => {
                            tally.rejected += 1;
                            tally.problem(format!("{other:?}"));
                        }
                        Err(error) => {
                            tally.errors += 1;
                            tally.problem(error.to_string());
                        }
                    }
                }
                (tally, latencies)
            })
        })
        .collect();
    gather(format!("{label} x{readers}"), tasks, measure_from).await
}

struct FailoverResult {
    acked: Histogram<u64>,
    elected: Histogram<u64>,
    crash_call: Histogram<u64>,
    failures: Vec<String>,
}

/// Crashes the leader, times the first write acknowledged through the client (which
/// still believes in the old leader), restarts the node and waits for convergence.
async fn failover_phase(
    cluster: &mut BenchCluster,
    pool: &Arc<SeatPool>,
    trials: usize,
) -> FailoverResult {
    let mut result = FailoverResult {
        acked: histogram(),
        elected: histogram(),
        crash_call: histogram(),
        failures: Vec::new(),
    };
    for trial in 0..trials {
        let leader = cluster.wait_leader(SHARD).await;
        let survivors: Vec<Arc<Shard>> = cluster
            .nodes
            .keys()
            .filter(|id| **id != leader)
            .map(|id| cluster.shard(*id, SHARD))
            .collect();
        let Some((n, show, seat)) = pool.take().await else {
            result.failures.push("out of seats".into());
            break;
        };
        let crashed_at = Instant::now();
        let watcher = tokio::spawn(async move {
            while crashed_at.elapsed() < FAILOVER_WRITE_TIMEOUT {
                if survivors.iter().any(|shard| shard.raft.is_leader()) {
                    return Some(crashed_at.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            None
        });
        cluster.crash(leader).await;
        record(&mut result.crash_call, crashed_at.elapsed());
        let write = cluster
            .client
            .write(
                SHARD,
                &format!("lock-{n}"),
                lock(show, USER_BASE + n, seat),
                FAILOVER_WRITE_TIMEOUT,
            )
            .await;
        let acked = crashed_at.elapsed();
        if let Ok(Some(elected)) = watcher.await {
            record(&mut result.elected, elected);
        }
        let index = match write {
            Ok(done) if done.outcome.is_applied() => {
                record(&mut result.acked, acked);
                done.index
            }
            Ok(done) => {
                result
                    .failures
                    .push(format!("trial {trial}: rejected {:?}", done.outcome));
                0
            }
            Err(error) => {
                result.failures.push(format!("trial {trial}: {error}"));
                0
            }
        };
        cluster.restart(leader).await;
        cluster.wait_applied(SHARD, index).await;
    }
    result
}

// ---------------------------------------------------------------------------------
// CPU accounting from /proc

/// Clock ticks per second of /proc's utime and stime.
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<f64>().ok())
        .filter(|ticks| *ticks > 0.0)
        .unwrap_or(100.0)
}

/// (busy, all) clock ticks of the whole machine, from the first line of /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let all: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (all.saturating_sub(idle), all)
}

fn process_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t))
        .map_or(0, |(_, ticks)| ticks)
}

/// Tells how busy the rest of the machine was during a section: other processes
/// (builds, tests) compete for the 2 cores and the disk, and skew every figure.
struct Section {
    started: Instant,
    machine_busy: u64,
    process: u64,
}

impl Section {
    fn start() -> Section {
        Section {
            started: Instant::now(),
            machine_busy: machine_ticks().0,
            process: process_ticks(),
        }
    }

    /// Average cores used by (this process, other processes) since `start`.
    fn cores(&self, ticks: f64) -> (f64, f64) {
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let busy = machine_ticks().0.saturating_sub(self.machine_busy) as f64;
        let ours = process_ticks().saturating_sub(self.process) as f64;
        (
            ours / ticks / seconds,
            (busy - ours).max(0.0) / ticks / seconds,
        )
    }

    fn report(&self, ticks: f64) {
        let (ours, others) = self.cores(ticks);
        println!(
            "  [section took {}; this process used {ours:.2} cores, other processes \
             {others:.2} cores on average{}]",
            show_time(self.started.elapsed()),
            if others > 0.25 {
                " -- the machine was shared: figures are pessimistic"
            } else {
                ""
            }
        );
    }
}

/// (comm, utime + stime) of a /proc stat line.
fn parse_stat(text: &str) -> Option<(String, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

#[derive(Clone, Default)]
struct CpuSample {
    process: u64,
    threads: BTreeMap<String, u64>,
}

fn cpu_sample() -> CpuSample {
    let mut sample = CpuSample::default();
    if let Some((_, ticks)) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t))
    {
        sample.process = ticks;
    }
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat"));
            if let Some((comm, ticks)) = stat.ok().and_then(|t| parse_stat(&t)) {
                *sample.threads.entry(comm).or_default() += ticks;
            }
        }
    }
    sample
}

/// CPU used between two samples, as % of one core, per thread name and in total.
struct CpuUse {
    process: f64,
    threads: BTreeMap<String, f64>,
}

fn cpu_use(before: &CpuSample, after: &CpuSample, interval: Duration, ticks: f64) -> CpuUse {
    let percent = |delta: u64| delta as f64 / ticks / interval.as_secs_f64() * 100.0;
    let threads = after
        .threads
        .iter()
        .map(|(name, t)| {
            let was = before.threads.get(name).copied().unwrap_or(0);
            (name.clone(), percent(t.saturating_sub(was)))
        })
        .collect();
    CpuUse {
        process: percent(after.process.saturating_sub(before.process)),
        threads,
    }
}

fn measure_cpu(interval: Duration, ticks: f64) -> (CpuUse, Duration) {
    let before = cpu_sample();
    let started = Instant::now();
    std::thread::sleep(interval);
    let after = cpu_sample();
    let elapsed = started.elapsed();
    (cpu_use(&before, &after, elapsed, ticks), elapsed)
}

fn runtime_name(id: NodeId) -> String {
    format!("idle-node-{id}")
}

struct IdleRun {
    nodes: u64,
    cpu: CpuUse,
    interval: Duration,
    startup: Duration,
    settle: Duration,
    leaders: BTreeMap<NodeId, usize>,
}

struct IdleResult {
    baseline: CpuUse,
    runs: Vec<IdleRun>,
}

impl IdleResult {
    fn thread_use(cpu: &CpuUse, name: &str) -> f64 {
        cpu.threads.get(name).copied().unwrap_or(0.0)
    }

    /// % of one core used by node `id`'s runtime threads, less the 0-shard baseline.
    fn node(&self, run: &IdleRun, id: NodeId) -> f64 {
        let name = runtime_name(id);
        (Self::thread_use(&run.cpu, &name) - Self::thread_use(&self.baseline, &name)).max(0.0)
    }

    fn busiest(&self, run: &IdleRun) -> (NodeId, f64) {
        run.leaders
            .keys()
            .map(|id| (*id, self.node(run, *id)))
            .fold(
                (0, 0.0),
                |best, next| if next.1 > best.1 { next } else { best },
            )
    }

    fn rocksdb(cpu: &CpuUse) -> f64 {
        cpu.threads
            .iter()
            .filter(|(name, _)| name.starts_with("rocksdb"))
            .map(|(_, p)| p)
            .sum()
    }

    fn print(&self, run: &IdleRun) {
        println!(
            "  {} node(s): all {IDLE_SHARDS} shards had a leader {} after start; \
             measured {} after {} settling",
            run.nodes,
            show_time(run.startup),
            show_time(run.interval),
            show_time(run.settle)
        );
        for (id, leading) in &run.leaders {
            println!(
                "    node {id}: leads {leading:>2} of {IDLE_SHARDS} shards, {:5.2} % of one core",
                self.node(run, *id)
            );
        }
        println!(
            "    rocksdb background threads (shared): {:.2} %; whole process minus \
             baseline: {:.2} %",
            Self::rocksdb(&run.cpu),
            run.cpu.process - self.baseline.process,
        );
    }
}

/// Starts `count` nodes (node N on runtime N-1) hosting 64 shards that get no
/// commands, lets them settle, measures CPU, stops them.
fn idle_run(runtimes: &[(NodeId, Runtime)], count: u64, plan: &Plan, ticks: f64) -> IdleRun {
    let runtimes = &runtimes[..count as usize];
    let shards: Vec<String> = (0..IDLE_SHARDS).map(|n| format!("idle-{n:02}")).collect();
    let mut listeners = Vec::new();
    let mut entries = Vec::new();
    for (id, runtime) in runtimes {
        let (peer, client) = runtime.block_on(listener_pair());
        entries.push(node_entry(*id, &peer, &client));
        listeners.push((peer, client));
    }
    let file = cluster_file(entries, &shards);
    let dir = tempfile::tempdir().expect("temp dir");
    let timing = RaftTiming::default();
    let started = Instant::now();
    let mut nodes = Vec::new();
    for ((id, runtime), (peer, client)) in runtimes.iter().zip(listeners) {
        let config = node_config(&file, dir.path(), *id, &timing);
        let node = runtime
            .block_on(RunningNode::start(config, peer, client))
            .expect("start idle node");
        nodes.push(node);
    }
    let leaders_now = |nodes: &[RunningNode]| -> BTreeMap<NodeId, usize> {
        nodes
            .iter()
            .map(|n| {
                let shards = n.node.shards();
                let leading = shards.iter().filter(|s| s.raft.is_leader()).count();
                (n.node.id(), leading)
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while leaders_now(&nodes).values().sum::<usize>() < IDLE_SHARDS {
        assert!(
            Instant::now() < deadline,
            "64 idle shards had no leaders within 60 s: {:?}",
            leaders_now(&nodes)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let startup = started.elapsed();
    std::thread::sleep(plan.idle_settle);
    let (cpu, interval) = measure_cpu(plan.idle_measure, ticks);
    let leaders = leaders_now(&nodes);
    for ((_, runtime), node) in runtimes.iter().zip(nodes) {
        runtime.block_on(node.stop());
    }
    IdleRun {
        nodes: count,
        cpu,
        interval,
        startup,
        settle: plan.idle_settle,
        leaders,
    }
}

/// Each node on its own runtime (2 workers, threads named `idle-node-N`), so its CPU
/// is the CPU of its threads: first no node (the 0-shard baseline), then 3 nodes
/// replicating 64 idle shards, then 1 node with 64 single-replica shards (no
/// heartbeats: the cost that does not come from replication).
fn idle_phase(plan: &Plan, ticks: f64) -> IdleResult {
    let runtimes: Vec<(NodeId, Runtime)> = (1..=3)
        .map(|id| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(runtime_name(id))
                // Keep blocking threads alive so their CPU stays visible per thread.
                .thread_keep_alive(Duration::from_secs(600))
                .enable_all()
                .build()
                .expect("node runtime");
            (id, runtime)
        })
        .collect();
    let (baseline, _) = measure_cpu(plan.idle_baseline, ticks);
    println!(
        "  baseline, runtimes without nodes (0 shards): process {:.2} % of one core",
        baseline.process
    );
    let mut result = IdleResult {
        baseline,
        runs: Vec::new(),
    };
    for count in [3, 1] {
        let run = idle_run(&runtimes, count, plan, ticks);
        result.print(&run);
        result.runs.push(run);
    }
    drop(runtimes);
    result
}

// ---------------------------------------------------------------------------------
// Report

fn print_lock_header() {
    println!(
        "  {:>7} | {:>7} | {:>9} | {:>9} | {:>9} | {:>9} | {:>9} | {:>8} | {:>6} | {:>5}",
        "clients", "acked", "locks/s", "p50", "p99", "p999", "max", "rejected", "errors", "snaps"
    );
}

fn print_lock_row(r: &PhaseResult) {
    println!(
        "  {:>7} | {:>7} | {:>9.0} | {:>9} | {:>9} | {:>9} | {:>9} | {:>8} | {:>6} | {:>5}",
        r.label,
        r.tally.ok,
        r.per_second(),
        show_time(at(&r.histogram, 0.5)),
        show_time(at(&r.histogram, 0.99)),
        show_time(at(&r.histogram, 0.999)),
        show_time(max_of(&r.histogram)),
        r.tally.rejected,
        r.tally.errors,
        r.snapshots,
    );
    if let Some(problem) = &r.tally.first_problem {
        println!("          first problem: {problem}");
    }
    if r.tally.ran_out {
        println!("          (stopped early: the seat pool was used up)");
    }
}

fn print_read_header() {
    println!(
        "  {:>14} | {:>7} | {:>9} | {:>9} | {:>9} | {:>9} | {:>11} | {:>6}",
        "node x readers", "reads", "reads/s", "p50", "p99", "p999", "unavailable", "errors"
    );
}

fn print_read_row(r: &PhaseResult) {
    println!(
        "  {:>14} | {:>7} | {:>9.0} | {:>9} | {:>9} | {:>9} | {:>11} | {:>6}",
        r.label,
        r.tally.ok,
        r.per_second(),
        show_time(at(&r.histogram, 0.5)),
        show_time(at(&r.histogram, 0.99)),
        show_time(at(&r.histogram, 0.999)),
        r.tally.rejected,
        r.tally.errors,
    );
    if let Some(problem) = &r.tally.first_problem {
        println!("          first problem: {problem}");
    }
}

struct ClusterResults {
    locks: Vec<PhaseResult>,
    reads: Vec<PhaseResult>,
    failover: FailoverResult,
}

async fn cluster_phases(plan: &Plan, ticks: f64) -> ClusterResults {
    let timing = RaftTiming::default();
    let section = Section::start();
    let mut cluster = BenchCluster::start(3, &[SHARD.to_owned()], timing).await;
    let pool = SeatPool::new(cluster.client.clone(), plan.max_shows).await;
    pool.show(0).await.expect("first show");
    println!();
    println!(
        "-- lock commands: LockSeats of 1 seat (default TTL), distinct user and request id \
         per lock, one shared ClusterClient (HTTP/JSON) -> leader; {} warm-up, then {} \
         measured per row --",
        show_time(plan.lock_warmup),
        show_time(plan.lock_measure)
    );
    println!(
        "  (snaps = snapshots the leader built during the row, policy: every {} entries)",
        cluster.timing.snapshot_after_entries
    );
    print_lock_header();
    let mut locks = Vec::new();
    for clients in LOCK_CLIENTS {
        let client = cluster.client.clone();
        let leader = cluster.shard(cluster.wait_leader(SHARD).await, SHARD);
        let result = lock_phase(&client, &pool, leader, clients, plan).await;
        print_lock_row(&result);
        locks.push(result);
    }
    section.report(ticks);

    let section = Section::start();
    let leader = cluster.wait_leader(SHARD).await;
    let follower = *cluster
        .nodes
        .keys()
        .find(|id| **id != leader)
        .expect("a follower");
    println!();
    println!(
        "-- linearizable reads: Query::Clock (no ledger work: the cost is ReadIndex + HTTP), \
         POST /v1/shards/{SHARD}/read via reqwest to node {leader} (leader) or node \
         {follower} (follower); {} warm-up, then {} measured per row --",
        show_time(plan.read_warmup),
        show_time(plan.read_measure)
    );
    print_read_header();
    let mut reads = Vec::new();
    for readers in READERS {
        for (label, id) in [("leader", leader), ("follower", follower)] {
            let addr = cluster.client_addr(id);
            let result = read_phase(label, &addr, readers, plan).await;
            print_read_row(&result);
            reads.push(result);
        }
    }
    section.report(ticks);

    let section = Section::start();
    println!();
    println!(
        "-- failover: {} trials of RunningNode::crash(leader) -> first lock acknowledged \
         through the ClusterClient (its leader cache still names the crashed node), then \
         restart on the same addresses and catch-up --",
        plan.failover_trials
    );
    let failover = failover_phase(&mut cluster, &pool, plan.failover_trials).await;
    println!(
        "  acknowledged write after crash: median {}, p99 {}, min {}, max {} (n={})",
        show_time(at(&failover.acked, 0.5)),
        show_time(at(&failover.acked, 0.99)),
        show_time(Duration::from_nanos(failover.acked.min())),
        show_time(max_of(&failover.acked)),
        failover.acked.len(),
    );
    println!(
        "  of which: new leader visible in a survivor's metrics: median {}, p99 {}",
        show_time(at(&failover.elected, 0.5)),
        show_time(at(&failover.elected, 0.99)),
    );
    println!(
        "  of which: the RunningNode::crash() call itself: median {}, max {}",
        show_time(at(&failover.crash_call, 0.5)),
        show_time(max_of(&failover.crash_call)),
    );
    for failure in &failover.failures {
        println!("  failed: {failure}");
    }
    let leader = cluster.wait_leader(SHARD).await;
    let last = cluster.shard(leader, SHARD).applied_index();
    cluster.wait_applied(SHARD, last).await;
    let converged = cluster.digests_agree(SHARD);
    let (export, bytes) = {
        let shard = cluster.shard(leader, SHARD);
        let store = shard.store.read().expect("store lock");
        let started = Instant::now();
        let bytes = store.export_snapshot().map_or(0, |b| b.len());
        (started.elapsed(), bytes)
    };
    let shows_used = pool.shows.lock().await.len();
    println!(
        "  after all phases: {} seats locked over {shows_used} shows, log index {last}; \
         replica digests agree: {converged}",
        pool.taken()
    );
    println!(
        "  diagnostic: LedgerStore::export_snapshot of the final ledger on the leader takes \
         {} for {:.1} MB (a snapshot build holds the store's read lock that apply needs)",
        show_time(export),
        bytes as f64 / 1e6
    );
    cluster.stop_all().await;
    section.report(ticks);
    ClusterResults {
        locks,
        reads,
        failover,
    }
}

fn main() {
    let quick = std::env::args().skip(1).any(|arg| arg == "--quick");
    let plan = Plan::new(quick);
    let ticks = clock_ticks();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let timing = RaftTiming::default();
    let bench_dir = tempfile::tempdir().expect("temp dir");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "== raft-node cluster bench ({}) ==",
        if plan.quick { "quick" } else { "full" }
    );
    println!(
        "command: cargo bench -p raft-node --bench cluster{}",
        if plan.quick { " -- --quick" } else { "" }
    );
    println!(
        "setup: 3 replicas of one shard in this process on 127.0.0.1 (port 0), RocksDB \
         Raft log whose appends count once a (group-committed) WAL fsync covers them, data \
         under {}",
        bench_dir
            .path()
            .parent()
            .unwrap_or(bench_dir.path())
            .display()
    );
    println!(
        "raft timing: RaftTiming::default() = heartbeat {} ms, election {}-{} ms, \
         snapshot after {} entries (every phase)",
        timing.heartbeat_ms,
        timing.election_timeout_min_ms,
        timing.election_timeout_max_ms,
        timing.snapshot_after_entries
    );
    println!(
        "machine: {cpus} cpus, load average at start {}; the cluster phases share one \
         tokio runtime ({cpus} workers) with their load generators",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );

    let section = Section::start();
    println!();
    println!(
        "-- idle shards: CPU of each node's runtime threads from /proc/self/task/*/stat \
         over {}, less the same threads' CPU with 0 shards --",
        show_time(plan.idle_measure)
    );
    let idle = idle_phase(&plan, ticks);
    section.report(ticks);

    let section = Section::start();
    let fsync = fsync_baseline(bench_dir.path(), plan.fsync_samples);
    let rocksdb = rocksdb_baseline(bench_dir.path(), plan.fsync_samples);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench")
        .enable_all()
        .build()
        .expect("bench runtime");
    let rtt = runtime.block_on(rtt_baseline(plan.rtt_samples));
    let baselines = Baselines {
        fsync,
        rocksdb,
        rtt,
    };
    println!();
    println!("-- baselines (same process, same disk as the cluster's data) --");
    println!(
        "  fsync: 4 KiB append + File::sync_data, n={}: {}",
        plan.fsync_samples,
        spread(&baselines.fsync)
    );
    println!(
        "  RocksDB put 4 KiB unsynced + WAL sync (the Raft log's write path), n={}: {}",
        plan.fsync_samples,
        spread(&baselines.rocksdb)
    );
    println!(
        "  loopback TCP round trip, 64 B echo (tokio, nodelay), n={}: p50 {}, p99 {}",
        plan.rtt_samples,
        show_time(at(&baselines.rtt, 0.5)),
        show_time(at(&baselines.rtt, 0.99)),
    );
    println!(
        "  single-client lock budget 3 x fsync + 2 x RTT (p50s) = {}",
        show_time(baselines.lock_budget())
    );
    section.report(ticks);

    let results = runtime.block_on(cluster_phases(&plan, ticks));
    drop(runtime);

    // Summary against the targets.
    let failover = &results.failover;
    let single = results
        .locks
        .first()
        .map_or(Duration::ZERO, |r| at(&r.histogram, 0.5));
    let budget = baselines.lock_budget();
    let lock_ratio = single.as_secs_f64() / budget.as_secs_f64().max(1e-9);
    let read_rate = |label: &str| {
        results
            .reads
            .iter()
            .find(|r| r.label == label)
            .map_or(0.0, PhaseResult::per_second)
    };
    let failover_p99 = at(&failover.acked, 0.99);
    println!();
    println!("== summary vs targets ==");
    println!(
        "  {:<46} | {:>12} | {:>12} | {:>6} |",
        "figure", "measured", "target", "ratio"
    );
    println!(
        "  {:<46} | {:>12} | {:>12} | {:>6.2} | {}",
        "single-client lock p50 vs 3 fsync + 2 RTT",
        show_time(single),
        format!("<= {}", show_time(budget)),
        lock_ratio,
        verdict(lock_ratio <= 1.0)
    );
    println!(
        "  {:<46} | {:>12} | {:>12} | {:>6.2} | {}",
        format!(
            "failover p99, kill -> acked write (n={})",
            failover.acked.len()
        ),
        show_time(failover_p99),
        "<= 1.500 s",
        failover_p99.as_secs_f64() / 1.5,
        verdict(!failover.acked.is_empty() && failover_p99 <= Duration::from_millis(1_500))
    );
    println!(
        "  {:<46} | {:>12} | {:>12} | {:>6} |",
        "failover median",
        show_time(at(&failover.acked, 0.5)),
        "-",
        "-"
    );
    for run in &idle.runs {
        let (busiest, cpu) = idle.busiest(run);
        println!(
            "  {:<46} | {:>10.2} % | {:>12} | {:>6.2} | {}",
            format!(
                "{IDLE_SHARDS} idle shards, {} node(s): busiest (node {busiest})",
                run.nodes
            ),
            cpu,
            "< 5 % core",
            cpu / 5.0,
            verdict(cpu < 5.0)
        );
    }
    for r in &results.locks {
        println!(
            "  {:<46} | {:>10.0}/s | {:>12} | {:>6} | p99 {}",
            format!("lock throughput, {} client(s)", r.label),
            r.per_second(),
            "-",
            "-",
            show_time(at(&r.histogram, 0.99))
        );
    }
    for readers in READERS {
        let (leader, follower) = (
            read_rate(&format!("leader x{readers}")),
            read_rate(&format!("follower x{readers}")),
        );
        println!(
            "  {:<46} | {:>10.0}/s | {:>12} | {:>6.2} | follower/leader (leader {:.0}/s)",
            format!("linearizable reads on follower, {readers} reader(s)"),
            follower,
            "-",
            follower / leader.max(1e-9),
            leader
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  load average at the end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(bench_dir);
}
