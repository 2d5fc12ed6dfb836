//! Our system: three raft-nodes in this process on loopback (RocksDB log whose appends are
//! acknowledged only after a group-committed fsync), one shard per city plus `global`, driven through the node
//! client protocol (`ClusterClient`) or through the REST api served in the same
//! process. Setup (theaters, shows) always goes through the client protocol and is not
//! measured.

use super::{LockOutcome, Target};
use crate::scenario::{ReadKind, ScenarioSpec, USERS, USER_BASE};
use api::app::AppState;
use api::auth::Keys;
use api::config::{ApiConfig, City};
use api::demo::DemoCluster;
use raft_node::client::ClusterClient;
use raft_node::config::RaftTiming;
use raft_node::protocol::{Consistency, ReadReply, ReadRequest};
use raft_node::server::RunningNode;
use raft_node::types::NodeId;
use state_machine::{
    Applied, BookingId, Category, CommandKind, GatewayStatus, Limits, LockId, Outcome, Prices,
    Query, QueryResponse, Rejection, Role, RowSpec, Screen, ScreenIndex, SeatId, ShowId, TheaterId,
    UserId,
};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long setup writes may take before the run is abandoned.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Shows published at once during setup.
const PUBLISH_CONCURRENCY: usize = 4;
const HOUR_MS: u64 = 3_600_000;

/// The shard of city `index` (from 0).
pub fn city_shard(index: usize) -> String {
    format!("city{}", index + 1)
}

/// Three in-process raft-nodes hosting `cities` city shards and `global` (the api's
/// embedded cluster with the generator's shards).
pub struct OurCluster {
    cluster: DemoCluster,
    pub client: ClusterClient,
    /// Kept so the data directory lives exactly as long as the cluster.
    _dir: tempfile::TempDir,
}

impl OurCluster {
    /// Starts the nodes with data under `data_root` and waits for every shard's leader.
    pub async fn start(cities: usize, data_root: &Path) -> Result<OurCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("loadgen-cluster-")
            .tempdir_in(data_root)
            .map_err(|e| format!("data directory in {}: {e}", data_root.display()))?;
        let shards: Vec<String> = (0..cities).map(city_shard).collect();
        let cluster = DemoCluster::start_with_shards(
            Some(dir.path().to_path_buf()),
            RaftTiming::default(),
            Limits::default(),
            &shards,
        )
        .await?;
        let client = cluster.client();
        Ok(OurCluster {
            cluster,
            client,
            _dir: dir,
        })
    }

    /// The node leading `shard` now, as its replicas see it.
    pub fn leader(&self, shard: &str) -> Option<NodeId> {
        self.cluster
            .nodes
            .iter()
            .find(|n| n.node.shard(shard).is_ok_and(|s| s.raft.is_leader()))
            .and_then(|n| self.node_id(n))
    }

    /// A node that hosts `shard` and does not lead it.
    pub fn follower(&self, shard: &str) -> Option<NodeId> {
        self.cluster
            .nodes
            .iter()
            .find(|n| n.node.shard(shard).is_ok_and(|s| !s.raft.is_leader()))
            .and_then(|n| self.node_id(n))
    }

    fn node_id(&self, node: &RunningNode) -> Option<NodeId> {
        let addr = node.client_addr.to_string();
        self.cluster
            .file
            .nodes
            .iter()
            .find(|entry| entry.client_addr == addr)
            .map(|entry| entry.id)
    }

    /// An api configuration for this cluster, in node 1's region, with rate limits
    /// out of the way (the generator is one client address making many requests).
    fn api_config(&self, listen: &str, cities: usize) -> ApiConfig {
        let mut config = self.cluster.api_config(listen);
        config.cities = (0..cities)
            .map(|index| City {
                id: city_shard(index),
                name: format!("City {}", index + 1),
                shard: city_shard(index),
            })
            .collect();
        config.limits.requests_per_second = 10_000_000;
        config.limits.burst = 10_000_000;
        config
    }

    /// One theater per city with one screen of the scenario's size, and
    /// `shows_per_city` one-hour shows on it, four hours apart from tomorrow on.
    pub async fn publish_shows(
        &self,
        spec: &ScenarioSpec,
        shows_per_city: usize,
    ) -> Result<Vec<Vec<OurShow>>, String> {
        let mut all = Vec::new();
        for city in 0..spec.cities {
            let shard = city_shard(city);
            let theater = self.create_theater(&shard, spec).await?;
            let first_ms = (api::auth::now_s() + 86_400) * 1_000;
            let mut shows = Vec::with_capacity(shows_per_city);
            let numbers: Vec<u64> = (0..shows_per_city as u64).collect();
            for chunk in numbers.chunks(PUBLISH_CONCURRENCY) {
                let publishing = chunk.iter().map(|n| {
                    let start_ms = first_ms + n * 4 * HOUR_MS;
                    self.publish_show(&shard, theater, start_ms)
                });
                for show in futures_util::future::join_all(publishing).await {
                    shows.push(OurShow {
                        shard: shard.clone(),
                        show: show?,
                    });
                }
            }
            all.push(shows);
        }
        Ok(all)
    }

    async fn create_theater(&self, shard: &str, spec: &ScenarioSpec) -> Result<TheaterId, String> {
        let screen = Screen {
            name: "Hall".into(),
            rows: (0..spec.rows)
                .map(|row| RowSpec {
                    label: format!("R{row}"),
                    seats: spec.seats_per_row,
                    category: Category::Normal,
                })
                .collect(),
        };
        let command = CommandKind::CreateTheater {
            city: shard.into(),
            name: format!("Loadgen {shard}"),
            address: String::new(),
            lat_micro_deg: 0,
            lon_micro_deg: 0,
            owner: UserId(1),
            screens: vec![screen],
        };
        let request = format!("loadgen:theater:{shard}:{:016x}", fastrand::u64(..));
        match self.setup_write(shard, &request, command).await? {
            Applied::TheaterCreated { theater } => Ok(theater),
            other => Err(format!("create theater answered {other:?}")),
        }
    }

    async fn publish_show(
        &self,
        shard: &str,
        theater: TheaterId,
        start_ms: u64,
    ) -> Result<ShowId, String> {
        let command = CommandKind::PublishShow {
            theater,
            screen: ScreenIndex(0),
            title: "Loadgen".into(),
            genre: String::new(),
            start_ms,
            end_ms: start_ms + HOUR_MS,
            prices: Prices {
                normal_minor: 100,
                premium_minor: 100,
                vip_minor: 100,
            },
            currency: "INR".into(),
        };
        let request = format!("loadgen:show:{shard}:{start_ms}");
        match self.setup_write(shard, &request, command).await? {
            Applied::ShowPublished { show } => Ok(show),
            other => Err(format!("publish show answered {other:?}")),
        }
    }

    async fn setup_write(
        &self,
        shard: &str,
        request: &str,
        command: CommandKind,
    ) -> Result<Applied, String> {
        let done = self
            .client
            .write(shard, request, command, SETUP_TIMEOUT)
            .await
            .map_err(|e| format!("setup write {request}: {e}"))?;
        match done.outcome {
            Outcome::Applied(applied) => Ok(applied),
            Outcome::Rejected(rejection) => Err(format!("setup write {request}: {rejection}")),
        }
    }

    pub async fn stop(self) {
        self.cluster.stop().await;
    }
}

/// A show of our ledger and the shard that holds it.
#[derive(Clone, Debug)]
pub struct OurShow {
    pub shard: String,
    pub show: ShowId,
}

/// A lock of our ledger.
#[derive(Debug)]
pub struct OurLock {
    shard: String,
    lock: LockId,
    booking: BookingId,
    price_minor: u64,
}

/// Request ids unique within a process: a random run prefix and a counter.
struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    fn new(kind: &str) -> RequestIds {
        RequestIds {
            prefix: format!("lg-{kind}-{:08x}", fastrand::u32(..)),
            next: AtomicU64::new(0),
        }
    }

    fn next(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Our cluster through the node client protocol.
pub struct Ours {
    cluster: OurCluster,
    op_timeout: Duration,
    ids: RequestIds,
    /// Confirm with the payment saga's commands instead of `ConfirmBooking`.
    saga: bool,
}

impl Ours {
    pub async fn start(
        cities: usize,
        data_root: &Path,
        op_timeout: Duration,
        saga: bool,
    ) -> Result<Ours, String> {
        Ok(Ours {
            cluster: OurCluster::start(cities, data_root).await?,
            op_timeout,
            ids: RequestIds::new(if saga { "ours-saga" } else { "ours" }),
            saga,
        })
    }

    async fn write(
        &self,
        session: &ClusterClient,
        shard: &str,
        command: CommandKind,
    ) -> Result<Applied, String> {
        let done = session
            .write(shard, &self.ids.next(), command, self.op_timeout)
            .await
            .map_err(|e| e.to_string())?;
        match done.outcome {
            Outcome::Applied(applied) => Ok(applied),
            other => Err(format!("answered {other:?}")),
        }
    }

    /// The ledger writes of a REST payment that the gateway approves: the intent, the
    /// gateway's "pending" answer to create, then its "succeeded" webhook, which
    /// confirms the booking.
    async fn pay(&self, session: &ClusterClient, lock: &OurLock, user: u64) -> Result<(), String> {
        let start = CommandKind::StartPayment {
            booking: lock.booking,
            user: UserId(user),
            method: "sandbox-approve".into(),
            discount_minor: 0,
            coupon: None,
        };
        self.write(session, &lock.shard, start).await?;
        for (version, status) in [(1, GatewayStatus::Pending), (2, GatewayStatus::Succeeded)] {
            let report = CommandKind::RecordGatewayState {
                booking: lock.booking,
                gateway_ref: format!("loadgen-{}-{}", lock.shard, lock.booking.0),
                payment_url: String::new(),
                status,
                version,
                amount_minor: lock.price_minor,
                reason: None,
            };
            match self.write(session, &lock.shard, report).await? {
                Applied::PaymentRecorded { .. } => {}
                other => return Err(format!("payment report answered {other:?}")),
            }
        }
        Ok(())
    }
}

impl Target for Ours {
    type Session = ClusterClient;
    type Show = OurShow;
    type Lock = OurLock;

    fn describe(&self) -> String {
        let confirm = if self.saga {
            "confirm = the REST payment saga's ledger writes (StartPayment, gateway state \
             pending, succeeded) without gateway or reads"
        } else {
            "confirm = ConfirmBooking"
        };
        format!(
            "seat-ledger, 3 replicas in one process on loopback, RocksDB log with \
             group-committed fsync before an append counts (fsync on), node client protocol \
             (bincode bodies over HTTP); {confirm}"
        )
    }

    async fn prepare(
        &self,
        spec: &ScenarioSpec,
        shows_per_city: usize,
    ) -> Result<Vec<Vec<OurShow>>, String> {
        self.cluster.publish_shows(spec, shows_per_city).await
    }

    async fn session(&self, _index: usize) -> Result<ClusterClient, String> {
        Ok(self.cluster.client.clone())
    }

    async fn lock(
        &self,
        session: &mut ClusterClient,
        show: &OurShow,
        seats: &[u32],
        user: u64,
    ) -> Result<LockOutcome<OurLock>, String> {
        let command = CommandKind::LockSeats {
            show: show.show,
            user: UserId(user),
            seats: seats.iter().map(|s| SeatId(*s)).collect(),
            ttl_ms: None,
        };
        let done = session
            .write(&show.shard, &self.ids.next(), command, self.op_timeout)
            .await
            .map_err(|e| e.to_string())?;
        match done.outcome {
            Outcome::Applied(Applied::SeatsLocked {
                lock,
                booking,
                total_price_minor,
                ..
            }) => Ok(LockOutcome::Locked(OurLock {
                shard: show.shard.clone(),
                lock,
                booking,
                price_minor: total_price_minor,
            })),
            Outcome::Rejected(Rejection::SeatsTaken { .. }) => Ok(LockOutcome::Taken),
            other => Err(format!("lock answered {other:?}")),
        }
    }

    async fn confirm(
        &self,
        session: &mut ClusterClient,
        lock: OurLock,
        user: u64,
    ) -> Result<(), String> {
        if self.saga {
            return self.pay(session, &lock, user).await;
        }
        let command = CommandKind::ConfirmBooking {
            lock: lock.lock,
            user: UserId(user),
            payment_ref: "loadgen".into(),
        };
        let done = session
            .write(&lock.shard, &self.ids.next(), command, self.op_timeout)
            .await
            .map_err(|e| e.to_string())?;
        match done.outcome {
            Outcome::Applied(Applied::BookingConfirmed { .. }) => Ok(()),
            other => Err(format!("confirm answered {other:?}")),
        }
    }

    async fn read(
        &self,
        session: &mut ClusterClient,
        show: &OurShow,
        kind: ReadKind,
    ) -> Result<usize, String> {
        let (consistency, prefer) = match kind {
            ReadKind::Stale => (Consistency::Stale, self.cluster.follower(&show.shard)),
            ReadKind::Linearizable { on_leader: true } => {
                (Consistency::Linearizable, self.cluster.leader(&show.shard))
            }
            ReadKind::Linearizable { on_leader: false } => (
                Consistency::Linearizable,
                self.cluster.follower(&show.shard),
            ),
        };
        let request = ReadRequest {
            query: Query::SeatMap { show: show.show },
            consistency,
            min_index: None,
        };
        let prefer: Vec<NodeId> = prefer.into_iter().collect();
        let reply = session
            .read(&show.shard, &request, &prefer, self.op_timeout)
            .await
            .map_err(|e| e.to_string())?;
        match reply {
            ReadReply::Done {
                result: Ok(QueryResponse::SeatMap(map)),
                ..
            } => Ok(map.seats.len()),
            other => Err(format!("seat map read answered {other:?}")),
        }
    }

    fn read_label(&self, kind: ReadKind) -> &'static str {
        match kind {
            ReadKind::Stale => "read_stale",
            ReadKind::Linearizable { on_leader: true } => "read_linearizable_leader",
            ReadKind::Linearizable { on_leader: false } => "read_linearizable_follower",
        }
    }

    async fn close(self) {
        self.cluster.stop().await;
    }
}

/// Our cluster through the REST api (served in this process on a loopback port).
pub struct Rest {
    cluster: OurCluster,
    base: String,
    keys: Keys,
    http: reqwest::Client,
    /// Access tokens of the generator's users, minted during `prepare` so signing is
    /// not part of any measured operation.
    tokens: std::sync::OnceLock<Arc<Vec<String>>>,
    ids: RequestIds,
    server: tokio::task::JoinHandle<()>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Rest {
    pub async fn start(
        cities: usize,
        data_root: &Path,
        op_timeout: Duration,
    ) -> Result<Rest, String> {
        let cluster = OurCluster::start(cities, data_root).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind loopback: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let (keys, _, _) = Keys::generate("seat-ledger", "seat-ledger-clients")
            .map_err(|e| format!("api signing keys: {e}"))?;
        let config = cluster.api_config(&addr, cities);
        let gateway = api::payment::SandboxGateway::start().await?;
        // The sandbox approves at once: the figures are our cost, not a bank's (its
        // default simulates 20 ms of processing before the webhook). It keeps its webhook
        // connections alive, as a production gateway does (by default it opens one per
        // delivery, for tests that stop api nodes).
        gateway.server().set_behaviour(gateway::wire::Behaviour {
            result_delay_ms: 0,
            webhook_keep_alive: true,
            ..Default::default()
        });
        let state = AppState::new(config, keys.clone(), Arc::new(gateway))?;
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let stopped = async move {
                let _ = stopped.await;
            };
            if let Err(error) = api::serve(listener, Arc::new(state), stopped).await {
                tracing::error!(%error, "api server stopped");
            }
        });
        let http = reqwest::Client::builder()
            .timeout(op_timeout)
            .pool_max_idle_per_host(1_024)
            .build()
            .map_err(|e| format!("http client: {e}"))?;
        Ok(Rest {
            cluster,
            base: format!("http://{addr}/api/v1"),
            keys,
            http,
            tokens: std::sync::OnceLock::new(),
            ids: RequestIds::new("rest"),
            server,
            shutdown: Some(shutdown),
        })
    }

    fn token(&self, user: u64) -> Result<&str, String> {
        let tokens = self.tokens.get().ok_or("tokens are minted in prepare")?;
        let index = (user.wrapping_sub(USER_BASE) % USERS) as usize;
        tokens
            .get(index)
            .map(String::as_str)
            .ok_or_else(|| format!("no token for user {user}"))
    }

    /// The response if it has the `expected` status, else an error quoting its body.
    async fn expect_status(
        response: reqwest::Response,
        expected: reqwest::StatusCode,
    ) -> Result<reqwest::Response, String> {
        let status = response.status();
        if status != expected {
            let text = response.text().await.unwrap_or_default();
            let excerpt: String = text.chars().take(200).collect();
            return Err(format!("HTTP {status}: {excerpt}"));
        }
        Ok(response)
    }

    async fn expect_json<T: serde::de::DeserializeOwned>(
        response: reqwest::Response,
        expected: reqwest::StatusCode,
    ) -> Result<T, String> {
        Self::expect_status(response, expected)
            .await?
            .json()
            .await
            .map_err(|e| format!("unreadable body: {e}"))
    }
}

/// What the generator needs of a REST seat map: how many seats it lists.
#[derive(serde::Deserialize)]
struct SeatMapReply {
    seats: Vec<serde::de::IgnoredAny>,
}

/// A lock through REST: its booking, which the payment confirms.
#[derive(Debug)]
pub struct RestLock {
    booking_id: String,
}

impl Target for Rest {
    type Session = reqwest::Client;
    type Show = OurShow;
    type Lock = RestLock;

    fn describe(&self) -> String {
        "seat-ledger through the REST api (axum, JWT auth) -> client protocol -> leader; \
         same 3-replica cluster, fsync on; confirm = the payment saga against the in-process \
         sandbox gateway approving at once (StartPayment, gateway create, \
         RecordGatewayState pending and succeeded via the webhook, a session read of the \
         settled payment, the referral check on global)"
            .into()
    }

    async fn prepare(
        &self,
        spec: &ScenarioSpec,
        shows_per_city: usize,
    ) -> Result<Vec<Vec<OurShow>>, String> {
        if self.tokens.get().is_none() {
            let keys = self.keys.clone();
            let now = api::auth::now_s();
            let minted = tokio::task::spawn_blocking(move || {
                (0..USERS)
                    .map(|n| {
                        keys.issue_access(UserId(USER_BASE + n), Role::Customer, now)
                            .map_err(|p| p.detail)
                    })
                    .collect::<Result<Vec<String>, String>>()
            })
            .await
            .map_err(|e| format!("minting tokens: {e}"))??;
            let _ = self.tokens.set(Arc::new(minted));
        }
        self.cluster.publish_shows(spec, shows_per_city).await
    }

    async fn session(&self, _index: usize) -> Result<reqwest::Client, String> {
        Ok(self.http.clone())
    }

    async fn lock(
        &self,
        session: &mut reqwest::Client,
        show: &OurShow,
        seats: &[u32],
        user: u64,
    ) -> Result<LockOutcome<RestLock>, String> {
        let url = format!(
            "{}/shows/{}-{}/seats/lock",
            self.base, show.shard, show.show.0
        );
        let response = session
            .post(url)
            .bearer_auth(self.token(user)?)
            .header("Idempotency-Key", self.ids.next())
            .json(&serde_json::json!({ "seats": seats }))
            .send()
            .await
            .map_err(|e| format!("lock request: {e}"))?;
        if response.status() == reqwest::StatusCode::CONFLICT {
            return Ok(LockOutcome::Taken);
        }
        let body: serde_json::Value =
            Self::expect_json(response, reqwest::StatusCode::CREATED).await?;
        let booking_id = body["booking_id"]
            .as_str()
            .ok_or("lock answer without booking_id")?
            .to_owned();
        Ok(LockOutcome::Locked(RestLock { booking_id }))
    }

    async fn confirm(
        &self,
        session: &mut reqwest::Client,
        lock: RestLock,
        user: u64,
    ) -> Result<(), String> {
        let url = format!("{}/bookings/{}/payment", self.base, lock.booking_id);
        let response = session
            .post(url)
            .bearer_auth(self.token(user)?)
            .header("Idempotency-Key", self.ids.next())
            .json(&serde_json::json!({ "method": "sandbox-approve" }))
            .send()
            .await
            .map_err(|e| format!("payment request: {e}"))?;
        let body: serde_json::Value =
            Self::expect_json(response, reqwest::StatusCode::ACCEPTED).await?;
        match body["status"].as_str() {
            Some("completed") => Ok(()),
            other => Err(format!("payment status {other:?}")),
        }
    }

    async fn read(
        &self,
        session: &mut reqwest::Client,
        show: &OurShow,
        kind: ReadKind,
    ) -> Result<usize, String> {
        let consistency = match kind {
            ReadKind::Stale => "stale",
            ReadKind::Linearizable { .. } => "linearizable",
        };
        let url = format!(
            "{}/shows/{}-{}/seats?consistency={consistency}",
            self.base, show.shard, show.show.0
        );
        let response = session
            .get(url)
            .send()
            .await
            .map_err(|e| format!("seat map request: {e}"))?;
        // Typed, not a JSON value tree: the generator's own parsing is not what is
        // measured, and a value tree of hundreds of seats costs more than the api's work.
        let body: SeatMapReply = Self::expect_json(response, reqwest::StatusCode::OK).await?;
        Ok(body.seats.len())
    }

    async fn close(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        self.server.abort();
        self.cluster.stop().await;
    }
}
