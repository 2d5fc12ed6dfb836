//! One bounded run: start the in-process demo cluster and the api on port 0 (as the
//! api's end-to-end tests do), create the shows, run the clients and the nemesis until
//! the time limit, heal, take the final reads, check the history, and leave
//! `history.jsonl` and `results.json` in a run directory.
//!
//! Everything is bounded: the run's length, its operations, each request's time, the
//! setup and the final reads, and the checkers' search.

use crate::checker::{check_all, CheckOptions, Summary, Validity};
use crate::history::{
    BookingRecord, BookingsValue, OpType, Process, ReadConsistency, ReadValue, Recorder, F,
};
use crate::nemesis::{Nemesis, NemesisKind};
use crate::workload::{read_seat_map, Answer, Api, Client, Limits, ShowInfo, Workload};
use api::app::AppState;
use api::auth::Keys;
use api::demo::DemoCluster;
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
    pub nemesis: NemesisKind,
    /// Mean time between kills.
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
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            time_limit: Duration::from_secs(20),
            clients: 8,
            seed: 0,
            workload: Workload::Bookings,
            nemesis: NemesisKind::None,
            nemesis_interval: Duration::from_secs(4),
            rate: 100,
            ops_max: 20_000,
            request_timeout: Duration::from_secs(8),
            api_timeout: Duration::from_secs(2),
            out: PathBuf::from("runs"),
            check: CheckOptions::default(),
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
        if self.nemesis_interval < Duration::from_millis(500) {
            return Err("the nemesis interval must be at least 500 ms".into());
        }
        let bounded = |d: Duration| !d.is_zero() && d <= Duration::from_secs(60);
        if !bounded(self.request_timeout) || !bounded(self.api_timeout) {
            return Err("request and api timeouts must be 1 ms to 60 s".into());
        }
        Ok(())
    }
}

/// What a run did and what the checkers concluded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub dir: PathBuf,
    pub config: RunConfig,
    /// `f type` -> count, e.g. `lock ok`.
    pub counts: BTreeMap<String, usize>,
    pub kills: usize,
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
            "run {}: workload {}, nemesis {:?}, {} clients, seed {}, {:.1} s\n",
            self.dir.display(),
            c.workload.as_str(),
            c.nemesis,
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
        out.push_str(&format!("nemesis: {} kills\n", self.kills));
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
    }
}

/// Runs once and checks the history. `Err` is for runs that could not be carried out
/// (setup failed, a node would not restart); anomalies are in the report.
pub async fn run(config: &RunConfig) -> Result<RunReport, String> {
    config.validate()?;
    let started = Instant::now();
    let dir = run_dir(config)?;
    let recorder =
        Arc::new(Recorder::to_file(&dir.join("history.jsonl")).map_err(|e| e.to_string())?);
    let data = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let cluster = tokio::time::timeout(
        SETUP_WITHIN,
        DemoCluster::start(Some(data.path().to_path_buf()), timing()),
    )
    .await
    .map_err(|_| "the cluster did not start in time".to_string())??;
    let cluster_client = cluster.client();
    let (api, server, stop_server) = start_api(&cluster, config).await?;
    let shows = match tokio::time::timeout(SETUP_WITHIN, create_shows(&api, config)).await {
        Ok(Ok(shows)) => shows,
        Ok(Err(error)) => return Err(format!("setup: {error}")),
        Err(_) => return Err("setup: the shows were not created in time".into()),
    };
    let mut nemesis = Nemesis::new(
        cluster,
        data.path(),
        timing(),
        recorder.clone(),
        CITY,
        config.seed,
    );
    let users = drive(config, &shows, &api, &recorder, &mut nemesis).await?;
    let kills = nemesis.kills;
    // Every node back up, and a leader, before the final reads.
    nemesis.heal().await?;
    if nemesis.wait_leader(FINAL_WITHIN).await.is_none() {
        return Err(format!("{CITY} has no leader after healing"));
    }
    let cluster = nemesis.into_cluster();
    final_reads(&api, &recorder, &shows).await;
    read_bookings(&cluster_client, &recorder, &users).await;
    let _ = stop_server.send(());
    let _ = server.await;
    cluster.stop().await;
    drop(data);
    let ops = recorder.finish().map_err(|e| e.to_string())?;
    let summary = check_all(&ops, &config.check).map_err(|e| e.to_string())?;
    let report = RunReport {
        dir: dir.clone(),
        config: config.clone(),
        counts: op_counts(&ops),
        kills,
        elapsed_ms: started.elapsed().as_millis() as u64,
        summary,
    };
    let results = serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("results.json"), results)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(report)
}

/// Runs the clients, and the nemesis beside them, until the time limit or the operation
/// budget; returns every user the clients acted as.
async fn drive(
    config: &RunConfig,
    shows: &[ShowInfo],
    api: &Api,
    recorder: &Arc<Recorder>,
    nemesis: &mut Nemesis,
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
            api.clone(),
            recorder.clone(),
        )?;
        tasks.push(tokio::spawn(client.run(limits.clone())));
    }
    if config.nemesis == NemesisKind::Kill {
        nemesis.run_kills(deadline, config.nemesis_interval).await?;
    }
    let mut users = Vec::new();
    for task in tasks {
        let client = task
            .await
            .map_err(|e| format!("a client panicked: {e}"))??;
        users.extend(client.users.iter().copied());
    }
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
        "{}-{:?}-seed{}-{stamp}",
        config.workload.as_str(),
        config.nemesis,
        config.seed
    )
    .to_lowercase();
    let dir = config.out.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

type Server = tokio::task::JoinHandle<Result<(), std::io::Error>>;

/// The api on an ephemeral port, with rate limits far above what the clients send.
async fn start_api(
    cluster: &DemoCluster,
    config: &RunConfig,
) -> Result<(Api, Server, tokio::sync::oneshot::Sender<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind the api: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let (keys, _, _) =
        Keys::generate("seat-ledger", "seat-ledger-clients").map_err(|e| e.to_string())?;
    let mut api_config = cluster.api_config(&addr);
    api_config.limits.requests_per_second = 100_000;
    api_config.limits.burst = 100_000;
    api_config.limits.request_timeout_ms = config.api_timeout.as_millis() as u64;
    let state = Arc::new(AppState::new(
        api_config,
        keys.clone(),
        Arc::new(api::payment::SandboxGateway),
    )?);
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
        keys,
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
