//! One bounded run: start a cluster of real node processes (in network namespaces when
//! root, on loopback otherwise), one api per region on port 0 in this process (the api
//! is stateless; clients spread over them, so reads are served by different replicas),
//! create the shows, run the clients and the nemesis until the time limit, heal, take
//! the final reads, compare the replicas' ledger digests, check the history, and leave `history.jsonl`, `results.json` and
//! `report.html` in a run directory.
//!
//! Everything is bounded: the run's length, its operations, each request's time, the
//! setup and the final reads, and the checkers' search.

use crate::checker::replicas::{ReplicaDigest, ReplicaSamples};
use crate::checker::{check_all, CheckOptions, Summary, Validity};
use crate::history::{
    BookingRecord, BookingsValue, OpType, Process, ReadConsistency, ReadValue, Recorder, F,
};
use crate::nemesis::{Nemesis, NemesisKind, NemesisStats};
use crate::procs::{ClusterSpec, NetMode, ProcCluster};
use crate::workload::{read_seat_map, Answer, Api, Client, Limits, ShowInfo, Workload};
use api::app::AppState;
use api::auth::Keys;
use api::config::{ApiConfig, ApiLimits, City, JwtConfig, NodeAddr};
use raft_node::client::ClusterClient;
use raft_node::config::RaftTiming;
use raft_node::protocol::{Consistency, ReadReply, ReadRequest};
use serde::{Deserialize, Serialize};
use serde_json::json;
use state_machine::{BookingId, Query, QueryResponse, Role, UserId};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The city whose shard the clients use and the nemesis attacks.
pub const CITY: &str = "mumbai";
/// Bounds on the configuration itself.
pub const CLIENTS_MAX: usize = 64;
pub const TIME_LIMIT_MAX: Duration = Duration::from_secs(600);
/// How long setup (cluster, shows) and the final reads may take.
const SETUP_WITHIN: Duration = Duration::from_secs(30);
const FINAL_WITHIN: Duration = Duration::from_secs(30);
/// How long the replicas' digests are sampled, waiting for every replica of a shard to
/// stand at one applied index.
const DIGESTS_WITHIN: Duration = Duration::from_secs(30);
/// Process numbers of the final reads, far above any client's.
const FINAL_PROCESS: u64 = 1 << 40;
/// Bookings fetched per page in the final bookings read.
const BOOKINGS_PAGE: u32 = 100;

/// Everything a run needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    #[serde(rename = "time_limit_ms", with = "duration_ms")]
    pub time_limit: Duration,
    pub clients: usize,
    pub seed: u64,
    pub workload: Workload,
    /// Fault classes; each nemesis round picks one.
    pub nemesis: Vec<NemesisKind>,
    /// Mean time between faults.
    #[serde(rename = "nemesis_interval_ms", with = "duration_ms")]
    pub nemesis_interval: Duration,
    /// Target operations per second over all clients.
    pub rate: u32,
    /// Operations the clients may start in the whole run.
    pub ops_max: u64,
    /// The HTTP client's deadline per request; past it the outcome is `info`.
    #[serde(rename = "request_timeout_ms", with = "duration_ms")]
    pub request_timeout: Duration,
    /// The api's own deadline per request (its retries against the cluster included);
    /// past it the api answers 503 and the outcome is `info`. Shorter than the default
    /// so that crashes leave some outcomes unknown, which the checkers must handle.
    #[serde(rename = "api_timeout_ms", with = "duration_ms")]
    pub api_timeout: Duration,
    /// Where run directories are created.
    pub out: PathBuf,
    pub check: CheckOptions,
    /// Raft nodes (3 or 5 make sense).
    pub nodes: usize,
    /// `None`: network namespaces when root, loopback otherwise.
    pub net: Option<NetMode>,
    /// The node binary (`jepsen-node`).
    pub node_bin: PathBuf,
    /// Planted bugs switched on in every node (builds with `planted-bugs` only).
    pub planted_bugs: Vec<String>,
    /// Keep the nodes' data directories after the run.
    pub keep_data: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            time_limit: Duration::from_secs(20),
            clients: 8,
            seed: 0,
            workload: Workload::Bookings,
            nemesis: vec![],
            nemesis_interval: Duration::from_secs(4),
            rate: 100,
            ops_max: 20_000,
            request_timeout: Duration::from_secs(8),
            api_timeout: Duration::from_secs(2),
            out: PathBuf::from("runs"),
            check: CheckOptions::default(),
            nodes: 3,
            net: None,
            node_bin: crate::procs::default_node_bin(),
            planted_bugs: vec![],
            keep_data: false,
        }
    }
}

impl RunConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.clients == 0 || self.clients > CLIENTS_MAX {
            return Err(format!("clients must be 1 to {CLIENTS_MAX}"));
        }
        if self.time_limit.is_zero() || self.time_limit > TIME_LIMIT_MAX {
            return Err(format!("time limit must be 1 s to {TIME_LIMIT_MAX:?}"));
        }
        if self.rate == 0 || self.ops_max == 0 {
            return Err("rate and ops_max must be positive".into());
        }
        if self.nemesis.contains(&NemesisKind::Gateway) && self.workload != Workload::Saga {
            return Err("the gateway nemesis needs the saga workload".into());
        }
        if self.nemesis_interval < Duration::from_millis(500) {
            return Err("the nemesis interval must be at least 500 ms".into());
        }
        if !(1..=7).contains(&self.nodes) {
            return Err("nodes must be 1 to 7".into());
        }
        let bounded = |d: Duration| !d.is_zero() && d <= Duration::from_secs(60);
        if !bounded(self.request_timeout) || !bounded(self.api_timeout) {
            return Err("request and api timeouts must be 1 ms to 60 s".into());
        }
        Ok(())
    }

    pub fn net_mode(&self) -> NetMode {
        self.net.unwrap_or_else(NetMode::detect)
    }

    /// The nemesis classes as `kill,pause` (or `none`).
    pub fn nemesis_names(&self) -> String {
        if self.nemesis.is_empty() {
            return "none".into();
        }
        let names: Vec<&str> = self.nemesis.iter().map(|k| k.as_str()).collect();
        names.join(",")
    }
}

/// What a run did and what the checkers concluded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub dir: PathBuf,
    pub config: RunConfig,
    /// `f type` -> count, e.g. `lock ok`.
    pub counts: BTreeMap<String, usize>,
    pub net: NetMode,
    pub nemesis: NemesisStats,
    pub elapsed_ms: u64,
    pub summary: Summary,
}

impl RunReport {
    pub fn valid(&self) -> Validity {
        self.summary.valid
    }

    /// A few lines for a terminal.
    pub fn text(&self) -> String {
        let c = &self.config;
        let mut out = format!(
            "run {}: workload {}, nemesis {}, {:?} network, {} clients, seed {}, {:.1} s\n",
            self.dir.display(),
            c.workload.as_str(),
            c.nemesis_names(),
            self.net,
            c.clients,
            c.seed,
            self.elapsed_ms as f64 / 1_000.0
        );
        let ops: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push_str(&format!("ops: {}\n", ops.join(", ")));
        let n = &self.nemesis;
        out.push_str(&format!(
            "nemesis: {} kills, {} pauses, {} partitions, {} clock skews, {} transfers, \
             {} membership changes, {} clock restarts, {} gateway faults, {} divergent \
             configs, {} snapshot catch-ups, {} wrong restores, {} skipped\n",
            n.kills,
            n.pauses,
            n.partitions,
            n.clock_skews,
            n.transfers,
            n.membership_changes,
            n.clock_restarts,
            n.gateway_faults,
            n.divergent_configs,
            n.snapshot_catchups,
            n.wrong_restores,
            n.skipped
        ));
        if !c.planted_bugs.is_empty() {
            out.push_str(&format!("planted bugs: {}\n", c.planted_bugs.join(",")));
        }
        for checker in &self.summary.checkers {
            out.push_str(&format!(
                "  {:<16} {:<8} {}\n",
                checker.checker,
                verdict(checker.valid),
                checker.notes.join("; ")
            ));
            for anomaly in &checker.anomalies {
                out.push_str(&format!(
                    "    {}: {} (ops {:?})\n",
                    anomaly.kind, anomaly.detail, anomaly.ops
                ));
            }
        }
        out.push_str(&format!("valid: {}\n", verdict(self.summary.valid)));
        out
    }
}

fn verdict(valid: Validity) -> &'static str {
    match valid {
        Validity::Valid => "true",
        Validity::Invalid => "false",
        Validity::Unknown => "unknown",
    }
}

/// Raft timing of the run: fast elections, and snapshots often enough that a restarted
/// node may have to catch up through one.
pub fn timing() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_after_entries: 500,
        keep_entries_after_snapshot: 100,
        // Small, so that crash recovery runs on recycled WAL files without slowing starts.
        log_wal_prefill_mib: 1,
        // Small, so that a snapshot a restarted node needs crosses in many chunks.
        snapshot_chunk_kib: 16,
        snapshot_send_mib_per_s: 0,
    }
}

/// Runs once and checks the history. `Err` is for runs that could not be carried out
/// (setup failed, a node would not restart); anomalies are in the report.
pub async fn run(config: &RunConfig) -> Result<RunReport, String> {
    config.validate()?;
    let net = config.net_mode();
    Nemesis::check(&config.nemesis, net)?;
    let started = Instant::now();
    let dir = run_dir(config)?;
    let recorder =
        Arc::new(Recorder::to_file(&dir.join("history.jsonl")).map_err(|e| e.to_string())?);
    // Short locks, so that the expiry workload sees locks run out within a run.
    let limits = state_machine::Limits {
        lock_ttl_ms_min: 1_000,
        ..state_machine::Limits::default()
    };
    let spec = ClusterSpec {
        bin: config.node_bin.clone(),
        nodes: config.nodes,
        net,
        dir: dir.join("cluster"),
        timing: timing(),
        limits,
        planted_bugs: config.planted_bugs.clone(),
    };
    let mut cluster = tokio::time::timeout(SETUP_WITHIN, ProcCluster::start(spec))
        .await
        .map_err(|_| "the cluster did not start in time".to_string())??;
    let outcome = run_on(config, &mut cluster, &recorder).await;
    let keep = config.keep_data || outcome.is_err();
    if outcome.is_err() {
        for id in cluster.ids() {
            eprintln!("node {id} log tail:\n{}", cluster.log_tail(id, 15));
        }
    }
    let cluster_dir = cluster.dir().to_path_buf();
    cluster.stop().await;
    if !keep {
        for entry in std::fs::read_dir(&cluster_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let (stats, extra) = outcome?;
    let ops = recorder.finish().map_err(|e| e.to_string())?;
    let mut check = config.check.clone();
    if config.nemesis.contains(&NemesisKind::Clock) {
        // A leader stamps while its clock is within the skew bound of its quorum's, so
        // log times may be that far from the recorder's clock.
        let bound = raft_node::clock::CLOCK_SKEW_MS_MAX as u64;
        check.clock_slack_ms = check.clock_slack_ms.max(bound + 20);
    }
    let mut summary = check_all(&ops, &check).map_err(|e| e.to_string())?;
    if !extra.is_empty() {
        summary.checkers.extend(extra);
        summary.valid = Validity::combine(summary.checkers.iter().map(|c| c.valid));
    }
    let report = RunReport {
        dir: dir.clone(),
        config: config.clone(),
        counts: op_counts(&ops),
        net,
        nemesis: stats,
        elapsed_ms: started.elapsed().as_millis() as u64,
        summary,
    };
    let results = serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("results.json"), results)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let html = crate::report::html(&report, &ops);
    std::fs::write(dir.join("report.html"), html).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(report)
}

/// Everything between a started cluster and the final reads; the caller stops the
/// cluster whatever happens here. Besides the nemesis' stats, the verdicts of the
/// checkers that judge more than the history (saga, replicas).
async fn run_on(
    config: &RunConfig,
    cluster: &mut ProcCluster,
    recorder: &Arc<Recorder>,
) -> Result<(NemesisStats, Vec<crate::checker::CheckResult>), String> {
    for shard in crate::procs::SHARDS {
        if cluster.wait_leader(shard, SETUP_WITHIN).await.is_none() {
            return Err(format!("{shard} elected no leader within {SETUP_WITHIN:?}"));
        }
    }
    let nodes: BTreeMap<u64, String> = cluster
        .entries()
        .into_iter()
        .map(|e| (e.id, e.client_addr))
        .collect();
    let cluster_client = ClusterClient::new(nodes);
    let (keys, _, _) =
        Keys::generate("seat-ledger", "seat-ledger-clients").map_err(|e| e.to_string())?;
    let mut apis = Vec::new();
    let mut servers = Vec::new();
    // One gateway for every api node, as one provider serves a whole deployment: any
    // api node may resume a payment another one started.
    let sandbox = Arc::new(api::payment::SandboxGateway::start().await?);
    let gateway: Arc<dyn api::payment::PaymentGateway> = sandbox.clone();
    for entry in cluster.entries() {
        let (api, server, stop) =
            start_api(cluster, &entry.region, &keys, config, gateway.clone()).await?;
        apis.push(api);
        servers.push((server, stop));
    }
    let shows = match tokio::time::timeout(SETUP_WITHIN, create_shows(&apis[0], config)).await {
        Ok(Ok(shows)) => shows,
        Ok(Err(error)) => return Err(format!("setup: {error}")),
        Err(_) => return Err("setup: the shows were not created in time".into()),
    };
    let mut nemesis = Nemesis::new(recorder.clone(), CITY, &config.nemesis, config.seed)
        .with_gateway(sandbox.clone());
    let users = drive(config, &shows, &apis, recorder, &mut nemesis, cluster).await;
    // Every node back, no partition, before the final reads (also after a failed run).
    let healed = cluster.heal_all().await;
    let users = users?;
    healed?;
    if cluster.wait_leader(CITY, FINAL_WITHIN).await.is_none() {
        return Err(format!("{CITY} has no leader after healing"));
    }
    // The saga settles in the background (webhooks, the api nodes' pollers): wait for
    // it before the final reads, so they see where every payment ended.
    let saga_settled = match config.workload {
        Workload::Saga => Some(wait_for_saga(&cluster_client, &sandbox).await),
        _ => None,
    };
    final_reads(&apis[0], recorder, &shows).await;
    read_bookings(&cluster_client, recorder, &users).await;
    let mut extra = Vec::new();
    if let Some(settled) = saga_settled {
        let bookings = fetch_bookings(&cluster_client, &users).await?;
        let payments = sandbox.server().payments();
        extra.push(crate::checker::saga::check(
            &bookings,
            &payments,
            settled,
            &config.check,
        ));
    }
    for (server, stop) in servers {
        let _ = stop.send(());
        let _ = server.await;
    }
    let samples = sample_digests(cluster, DIGESTS_WITHIN).await;
    extra.push(crate::checker::replicas::check(&samples, &config.check));
    Ok((nemesis.stats, extra))
}

/// Reads every node's ledger digest of every shard, again and again (bounded by
/// `within`), until each shard has an index at which every replica answered; keeps
/// every sample, so a divergence seen at any index counts.
pub async fn sample_digests(cluster: &ProcCluster, within: Duration) -> ReplicaSamples {
    let started = Instant::now();
    let deadline = started + within;
    let ids = cluster.ids();
    let mut observed = ReplicaSamples {
        replicas: crate::procs::SHARDS
            .iter()
            .map(|shard| ((*shard).to_owned(), ids.clone()))
            .collect(),
        ..ReplicaSamples::default()
    };
    let mut samples = std::collections::BTreeSet::new();
    // Distinct problems only, a few of them: a node that stays down repeats its error.
    let mut problems = std::collections::BTreeSet::new();
    loop {
        for &id in &ids {
            let status = match cluster.status(id, true).await {
                Ok(status) => status,
                Err(error) => {
                    if problems.len() < 20 {
                        problems.insert(format!("node {id}: {error}"));
                    }
                    continue;
                }
            };
            for shard in status.shards {
                match (shard.digest, shard.digest_index) {
                    (Some(digest), Some(index)) => {
                        samples.insert(ReplicaDigest {
                            shard: shard.shard,
                            index,
                            node: id,
                            digest,
                        });
                    }
                    (digest, _) => {
                        if problems.len() < 20 {
                            problems.insert(format!(
                                "node {id}, {}: no digest ({})",
                                shard.shard,
                                digest.unwrap_or_default()
                            ));
                        }
                    }
                }
            }
        }
        observed.samples = samples.iter().cloned().collect();
        if observed.covered() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    observed.problems = problems.into_iter().collect();
    observed.waited_ms = started.elapsed().as_millis() as u64;
    observed
}

/// How long the saga may take to settle after the clients stop: the longest lock,
/// the grace before a pending payment is cancelled, and a few poller rounds.
const SAGA_SETTLE_WITHIN: Duration = Duration::from_secs(40);

/// Waits (bounded) until the ledger has no open payment and the gateway no pending
/// one; whether it got there.
async fn wait_for_saga(client: &ClusterClient, sandbox: &api::payment::SandboxGateway) -> bool {
    let deadline = Instant::now() + SAGA_SETTLE_WITHIN;
    while Instant::now() < deadline {
        let request = ReadRequest {
            query: Query::OpenPayments {
                after: None,
                limit: 1,
            },
            consistency: Consistency::Linearizable,
            min_index: None,
        };
        let ledger_open = match client.read(CITY, &request, &[], FINAL_WITHIN).await {
            Ok(ReadReply::Done {
                result: Ok(QueryResponse::Payments { items, .. }),
                ..
            }) => !items.is_empty(),
            _ => true,
        };
        let gateway_pending = sandbox
            .server()
            .payments()
            .iter()
            .any(|payment| payment.status == "pending");
        if !ledger_open && !gateway_pending {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Runs the clients, and the nemesis beside them, until the time limit or the operation
/// budget; returns every user the clients acted as.
async fn drive(
    config: &RunConfig,
    shows: &[ShowInfo],
    apis: &[Api],
    recorder: &Arc<Recorder>,
    nemesis: &mut Nemesis,
    cluster: &mut ProcCluster,
) -> Result<Vec<u64>, String> {
    let deadline = Instant::now() + config.time_limit;
    let limits = Arc::new(Limits {
        deadline,
        ops_max: config.ops_max,
        started: AtomicU64::new(0),
        pause_mean: Duration::from_millis(
            (1_000 * config.clients as u64 / u64::from(config.rate)).max(1),
        ),
    });
    let mut tasks = Vec::new();
    for slot in 0..config.clients as u64 {
        let client = Client::new(
            slot,
            config.clients as u64,
            config.seed,
            config.workload,
            shows.to_vec(),
            apis[slot as usize % apis.len()].clone(),
            recorder.clone(),
        )?;
        tasks.push(tokio::spawn(client.run(limits.clone())));
    }
    let faults = nemesis
        .run(cluster, deadline, config.nemesis_interval)
        .await;
    let mut users = Vec::new();
    for task in tasks {
        let client = task
            .await
            .map_err(|e| format!("a client panicked: {e}"))??;
        users.extend(client.users.iter().copied());
    }
    faults?;
    Ok(users)
}

/// Completions by `f` and type, e.g. `lock ok` -> 12.
fn op_counts(ops: &[crate::history::Op]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for op in ops.iter().filter(|op| op.kind != OpType::Invoke) {
        let kind = serde_json::to_value(op.kind).unwrap_or_default();
        let key = format!("{} {}", op.f.as_str(), kind.as_str().unwrap_or_default());
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Durations as whole milliseconds in `results.json`.
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

fn run_dir(config: &RunConfig) -> Result<PathBuf, String> {
    let stamp = crate::history::wall_ms();
    let name = format!(
        "{}-{}-seed{}-{stamp}",
        config.workload.as_str(),
        config.nemesis_names().replace(',', "+"),
        config.seed
    )
    .to_lowercase();
    let dir = config.out.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

type Server = tokio::task::JoinHandle<Result<(), std::io::Error>>;

/// An api on an ephemeral port in `region` (its reads prefer that region's replica),
/// with rate limits far above what the clients send.
async fn start_api(
    cluster: &ProcCluster,
    region: &str,
    keys: &Keys,
    config: &RunConfig,
    gateway: Arc<dyn api::payment::PaymentGateway>,
) -> Result<(Api, Server, tokio::sync::oneshot::Sender<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind the api: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let api_config = ApiConfig {
        listen: addr.clone(),
        region: region.to_owned(),
        nodes: cluster
            .entries()
            .into_iter()
            .map(|n| NodeAddr {
                id: n.id,
                client_addr: n.client_addr,
                region: n.region,
            })
            .collect(),
        cities: vec![City {
            id: CITY.into(),
            name: "Mumbai".into(),
            shard: CITY.into(),
        }],
        global_shard: "global".into(),
        limits: ApiLimits {
            requests_per_second: 100_000,
            burst: 100_000,
            request_timeout_ms: config.api_timeout.as_millis() as u64,
            ..ApiLimits::default()
        },
        jwt: JwtConfig::default(),
        tls: None,
        // A quick saga: runs are short, and the saga must settle before the final reads.
        payment: api::config::PaymentConfig {
            reconcile_interval_ms: 300,
            reconcile_min_age_ms: 300,
            lock_grace_ms: 500,
            wait_ms: (config.api_timeout.as_millis() as u64 / 2).min(1_500),
            ..api::config::PaymentConfig::default()
        },
    };
    let state = Arc::new(AppState::new(api_config, keys.clone(), gateway)?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let api = Api {
        base: format!("http://{addr}"),
        http,
        keys: keys.clone(),
    };
    Ok((api, server, stop))
}

/// A theater with one screen per show, and one show per screen three days ahead.
async fn create_shows(api: &Api, config: &RunConfig) -> Result<Vec<ShowInfo>, String> {
    let (count, rows, seats) = config.workload.layout();
    let admin = api.token(900_000, Role::Admin)?;
    let screens: Vec<_> = (0..count)
        .map(|screen| {
            let rows: Vec<_> = (0..rows)
                .map(|row| json!({"label": format!("R{row}"), "seats": seats}))
                .collect();
            json!({"name": format!("Screen {screen}"), "rows": rows})
        })
        .collect();
    let theater = json!({
        "city": CITY, "name": format!("Jepsen Talkies {}", config.seed), "address": "Juhu",
        "lat": 19.1, "long": 72.8, "screens": screens,
    });
    let theater = post_retrying(api, "/api/v1/theaters", &admin, theater).await?;
    let theater_id = theater["id"]
        .as_str()
        .ok_or("theater without id")?
        .to_owned();
    let start_s = api::auth::now_s() + 3 * 86_400;
    let mut shows = Vec::new();
    for screen in 0..count {
        let show = json!({
            "theater_id": theater_id, "screen": screen, "title": "Jepsen", "genre": "test",
            "start_time": api::views::rfc3339(start_s * 1_000),
            "end_time": api::views::rfc3339((start_s + 3 * 3_600) * 1_000),
            "prices": { "normal_minor": 25_000, "premium_minor": 40_000, "vip_minor": 70_000 },
        });
        let show = post_retrying(api, "/api/v1/shows", &admin, show).await?;
        let id = show["id"].as_str().ok_or("show without id")?.to_owned();
        shows.push(ShowInfo {
            id,
            capacity: u32::from(rows) * u32::from(seats),
        });
    }
    Ok(shows)
}

/// Setup writes retry while the outcome is unknown, with one idempotency key so a
/// retry cannot create a second theater or show.
async fn post_retrying(
    api: &Api,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let key = format!("jepsen-setup-{:016x}", fastrand::u64(..));
    let mut last = String::new();
    for _ in 0..10 {
        let headers = [("Idempotency-Key", key.clone())];
        match api
            .send("POST", path, Some(token), Some(body.clone()), &headers)
            .await
        {
            Answer::Ok { body, .. } => return Ok(body),
            Answer::Fail { reason, body } => return Err(format!("{path}: {reason}: {body}")),
            Answer::Info { error } => last = error,
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("{path}: {last}"))
}

/// A linearizable seat map of each show, retried until one is `ok` (every attempt is in
/// the history).
async fn final_reads(api: &Api, recorder: &Recorder, shows: &[ShowInfo]) {
    let deadline = Instant::now() + FINAL_WITHIN;
    let mut process = FINAL_PROCESS;
    for show in shows {
        while Instant::now() < deadline {
            let value = ReadValue {
                show: show.id.clone(),
                consistency: ReadConsistency::Linearizable,
                min_index: None,
                served: None,
                index: None,
                seats: None,
                final_read: true,
                reason: None,
            };
            let (kind, value, error) =
                read_seat_map(api, recorder, Process::Client(process), value).await;
            let value = serde_json::to_value(value).unwrap_or_default();
            recorder.record(Process::Client(process), kind, F::Read, value, error);
            process += 1;
            if kind == OpType::Ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Every booking of the run's users, with log times, read linearizably from the city
/// shard through raft-node's client protocol (the REST views do not carry log times).
async fn read_bookings(client: &ClusterClient, recorder: &Recorder, users: &[u64]) {
    let process = Process::Client(FINAL_PROCESS - 1);
    let mut value = BookingsValue {
        users: users.to_vec(),
        bookings: None,
    };
    let invoke = serde_json::to_value(&value).unwrap_or_default();
    recorder.record(process, OpType::Invoke, F::ReadBookings, invoke, None);
    let (kind, error) = match fetch_bookings(client, users).await {
        Ok(records) => {
            value.bookings = Some(records);
            (OpType::Ok, None)
        }
        Err(error) => (OpType::Info, Some(error)),
    };
    let value = serde_json::to_value(&value).unwrap_or_default();
    recorder.record(process, kind, F::ReadBookings, value, error);
}

async fn fetch_bookings(
    client: &ClusterClient,
    users: &[u64],
) -> Result<Vec<BookingRecord>, String> {
    let mut records = Vec::new();
    for user in users {
        let mut before: Option<BookingId> = None;
        // Bounded: a user makes far fewer than 100 pages of bookings in a run.
        for _ in 0..100 {
            let request = ReadRequest {
                query: Query::UserBookings {
                    user: UserId(*user),
                    before,
                    limit: BOOKINGS_PAGE,
                },
                consistency: Consistency::Linearizable,
                min_index: None,
            };
            let reply = client
                .read(CITY, &request, &[], FINAL_WITHIN)
                .await
                .map_err(|e| e.to_string())?;
            let (items, next) = match reply {
                ReadReply::Done {
                    result: Ok(QueryResponse::Bookings { items, next }),
                    ..
                } => (items, next),
                other => return Err(format!("unexpected bookings answer: {other:?}")),
            };
            records.extend(items.iter().map(|b| BookingRecord {
                show: api::views::ext_id(CITY, b.show.0),
                booking: api::views::ext_id(CITY, b.id.0),
                lock: api::views::ext_id(CITY, b.lock_id().0),
                user: b.user.0,
                seats: b.seats.iter().map(|s| s.0).collect(),
                status: b.status.as_str().to_owned(),
                created_at_ms: b.created_at,
                expires_at_ms: b.expires_at,
                updated_at_ms: b.updated_at,
            }));
            match next {
                Some(cursor) => before = Some(cursor),
                None => break,
            }
        }
    }
    Ok(records)
}
