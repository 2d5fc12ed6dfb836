//! The one-command demo: an embedded cluster of three raft-nodes (in this process, on
//! real loopback sockets, with RocksDB in a directory), shards for three cities plus
//! `global`, sample theaters and shows for the next seven days, an admin and a
//! customer account, and the API on 127.0.0.1:8080. The tests start the same cluster.

use crate::app::AppState;
use crate::auth::{self, Keys};
use crate::config::{ApiConfig, ApiLimits, City, JwtConfig, NodeAddr};
use raft_node::client::ClusterClient;
use raft_node::config::{ClusterFile, NodeConfig, NodeEntry, RaftTiming, ShardEntry};
use raft_node::server::RunningNode;
use state_machine::{Applied, Limits, TheaterId, UserId};
use state_machine::{Category, CommandKind, Outcome, Prices, Role, RowSpec, Screen, ScreenIndex};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub const CITIES: &[(&str, &str)] = &[
    ("mumbai", "Mumbai"),
    ("delhi", "Delhi"),
    ("bengaluru", "Bengaluru"),
];

/// Development TLS material for an embedded cluster: a CA made for this run, a
/// certificate per node (for 127.0.0.1 and localhost), one for the api as the nodes'
/// client, and one for the api's public listener.
pub struct DemoTls {
    pub ca: raft_node::tls::dev::DevCa,
    /// The api's mutual-TLS settings towards the nodes.
    pub api_client: raft_node::tls::ClusterTls,
    /// The api's public listener (server certificate only).
    pub listener: Arc<raft_node::tls::rustls::ServerConfig>,
}

impl DemoTls {
    pub fn generate() -> Result<DemoTls, String> {
        let ca = raft_node::tls::dev::DevCa::new("seat-ledger demo CA")?;
        let names = ["127.0.0.1", "localhost"];
        let api = ca.issue("api", &names)?;
        let api_client = raft_node::tls::ClusterTls::from_pem(
            ca.cert_pem().as_bytes(),
            api.cert_pem.as_bytes(),
            api.key_pem.as_bytes(),
        )?;
        let listener =
            raft_node::tls::public_server_config(api.cert_pem.as_bytes(), api.key_pem.as_bytes())?;
        Ok(DemoTls {
            ca,
            api_client,
            listener,
        })
    }

    /// Mutual-TLS settings for node `id`, with a certificate of its own.
    pub fn node(&self, id: u64) -> Result<raft_node::tls::ClusterTls, String> {
        let issued = self
            .ca
            .issue(&format!("raft-node-{id}"), &["127.0.0.1", "localhost"])?;
        raft_node::tls::ClusterTls::from_pem(
            self.ca.cert_pem().as_bytes(),
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )
    }
}

/// A running embedded cluster.
pub struct DemoCluster {
    pub nodes: Vec<RunningNode>,
    pub file: ClusterFile,
    /// The TLS material when the cluster runs with TLS.
    pub tls: Option<Arc<DemoTls>>,
    /// Kept so a temporary data directory lives as long as the cluster.
    _temp: Option<tempfile::TempDir>,
}

impl DemoCluster {
    /// Starts three nodes hosting every city shard and `global`, and waits for leaders.
    pub async fn start(
        data_dir: Option<PathBuf>,
        timing: RaftTiming,
    ) -> Result<DemoCluster, String> {
        DemoCluster::start_with_limits(data_dir, timing, Limits::default()).await
    }

    /// `start` with other ledger limits (tests use short lock TTLs, for example).
    pub async fn start_with_limits(
        data_dir: Option<PathBuf>,
        timing: RaftTiming,
        limits: Limits,
    ) -> Result<DemoCluster, String> {
        let cities: Vec<String> = CITIES.iter().map(|(city, _)| city.to_string()).collect();
        DemoCluster::start_with_shards(data_dir, timing, limits, &cities).await
    }

    /// Three nodes hosting the city shards `cities` and `global` (benchmarks and load
    /// generators choose their own shards), with leaders elected.
    pub async fn start_with_shards(
        data_dir: Option<PathBuf>,
        timing: RaftTiming,
        limits: Limits,
        cities: &[String],
    ) -> Result<DemoCluster, String> {
        DemoCluster::start_with_tls(data_dir, timing, limits, cities, None).await
    }

    /// `start_with_shards`, with mutual TLS between the nodes and on their client
    /// listeners when `tls` is given.
    pub async fn start_with_tls(
        data_dir: Option<PathBuf>,
        timing: RaftTiming,
        limits: Limits,
        cities: &[String],
        tls: Option<Arc<DemoTls>>,
    ) -> Result<DemoCluster, String> {
        limits.validate().map_err(|e| e.to_string())?;
        let (temp, dir) = match data_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let mut listeners = Vec::new();
        let mut entries = Vec::new();
        for id in 1..=3u64 {
            let peer = bind_any().await?;
            let client = bind_any().await?;
            entries.push(NodeEntry {
                id,
                peer_addr: addr(&peer)?,
                client_addr: addr(&client)?,
                region: format!("region-{id}"),
            });
            listeners.push((id, peer, client));
        }
        let shards = cities
            .iter()
            .cloned()
            .chain(["global".to_string()])
            .map(|name| ShardEntry {
                name,
                members: vec![1, 2, 3],
            })
            .collect();
        let file = ClusterFile {
            cluster_id: "demo".into(),
            nodes: entries,
            shards,
            limits,
        };
        let secret = auth::new_refresh_token().0.into_bytes();
        let mut nodes = Vec::new();
        for (id, peer, client) in listeners {
            let tls = tls.as_ref().map(|tls| tls.node(id)).transpose()?;
            let config = NodeConfig {
                node_id: id,
                data_dir: dir.join(format!("node-{id}")),
                cluster: file.clone(),
                cluster_secret: secret.clone(),
                raft: timing.clone(),
                tls: tls.clone(),
            };
            nodes.push(
                RunningNode::start(config, peer, client)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let cluster = DemoCluster {
            nodes,
            file,
            tls,
            _temp: temp,
        };
        cluster.wait_for_leaders(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    async fn wait_for_leaders(&self, within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        for shard in &self.file.shards {
            loop {
                let led = self
                    .nodes
                    .iter()
                    .any(|n| n.node.shard(&shard.name).is_ok_and(|s| s.raft.is_leader()));
                if led {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(format!(
                        "shard {} elected no leader within {within:?}",
                        shard.name
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    pub fn client(&self) -> ClusterClient {
        let nodes = self
            .file
            .nodes
            .iter()
            .map(|n| (n.id, n.client_addr.clone()))
            .collect();
        match &self.tls {
            Some(tls) => ClusterClient::with_tls(nodes, &tls.api_client)
                .unwrap_or_else(|_| ClusterClient::new(BTreeMap::new())),
            None => ClusterClient::new(nodes),
        }
    }

    /// The api's TLS settings towards the nodes, when the cluster runs with TLS.
    pub fn api_cluster_tls(&self) -> Option<raft_node::tls::ClusterTls> {
        self.tls.as_ref().map(|tls| tls.api_client.clone())
    }

    /// An api configuration pointing at this cluster.
    pub fn api_config(&self, listen: &str) -> ApiConfig {
        ApiConfig {
            listen: listen.into(),
            region: "region-1".into(),
            nodes: self
                .file
                .nodes
                .iter()
                .map(|n| NodeAddr {
                    id: n.id,
                    client_addr: n.client_addr.clone(),
                    region: n.region.clone(),
                })
                .collect(),
            cities: CITIES
                .iter()
                .map(|(id, name)| City {
                    id: (*id).into(),
                    name: (*name).into(),
                    shard: (*id).into(),
                })
                .collect(),
            global_shard: "global".into(),
            limits: ApiLimits::default(),
            jwt: JwtConfig::default(),
            tls: None,
            payment: crate::config::PaymentConfig::default(),
        }
    }

    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
    }
}

async fn bind_any() -> Result<TcpListener, String> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot bind loopback: {e}"))
}

fn addr(listener: &TcpListener) -> Result<String, String> {
    listener
        .local_addr()
        .map(|a| a.to_string())
        .map_err(|e| e.to_string())
}

const SEED_TIMEOUT: Duration = Duration::from_secs(10);

async fn write(
    client: &ClusterClient,
    shard: &str,
    id: &str,
    command: CommandKind,
) -> Result<Applied, String> {
    let done = client
        .write(shard, id, command, SEED_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    match done.outcome {
        Outcome::Applied(applied) => Ok(applied),
        Outcome::Rejected(rejection) => Err(format!("seeding {id}: {rejection}")),
    }
}

/// Creates an account directly in the `global` shard (the demo's bootstrap admin).
pub async fn create_account(
    client: &ClusterClient,
    email: &str,
    phone: &str,
    password: &str,
    role: Role,
) -> Result<UserId, String> {
    let password_hash = auth::hash_password(password, Some(email)).map_err(|p| p.detail)?;
    let command = CommandKind::RegisterUser {
        email: email.into(),
        phone: phone.into(),
        name: email.into(),
        password_hash,
        role,
    };
    match write(client, "global", &format!("seed:user:{email}"), command).await? {
        Applied::UserRegistered { user } => Ok(user),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

fn screen(name: &str, rows: u16, seats: u16) -> Screen {
    let rows = (0..rows)
        .map(|row| RowSpec {
            label: char::from(b'A' + (row % 26) as u8).to_string(),
            seats,
            category: if row + 2 >= rows {
                Category::Vip
            } else if row * 2 >= rows {
                Category::Premium
            } else {
                Category::Normal
            },
        })
        .collect();
    Screen {
        name: name.into(),
        rows,
    }
}

/// Two theaters per city, two screens each (192 and 300 seats), three shows a day per
/// screen for the next seven days, starting at the next UTC midnight.
pub async fn seed(client: &ClusterClient, owner: UserId, now_ms: u64) -> Result<usize, String> {
    const DAY_MS: u64 = 86_400_000;
    const HOUR_MS: u64 = 3_600_000;
    let titles = [
        "Jawan",
        "Pathaan",
        "Dunki",
        "Animal",
        "Kalki 2898 AD",
        "Stree 2",
    ];
    let first_day = (now_ms / DAY_MS + 1) * DAY_MS;
    let mut shows = 0;
    for (city, name) in CITIES {
        for number in 1..=2u64 {
            let command = CommandKind::CreateTheater {
                city: (*city).into(),
                name: format!("{name} Cineplex {number}"),
                address: format!("{number} Film City Road, {name}"),
                lat_micro_deg: 19_000_000 + number as i32 * 10_000,
                lon_micro_deg: 72_800_000,
                owner,
                screens: vec![screen("Audi 1", 12, 16), screen("Audi 2", 15, 20)],
            };
            let Applied::TheaterCreated { theater } =
                write(client, city, &format!("seed:{city}:t{number}"), command).await?
            else {
                return Err("unexpected answer to create theater".into());
            };
            shows += seed_shows(client, city, theater, first_day, &titles).await?;
        }
    }
    let _ = HOUR_MS;
    Ok(shows)
}

async fn seed_shows(
    client: &ClusterClient,
    city: &str,
    theater: TheaterId,
    first_day: u64,
    titles: &[&str],
) -> Result<usize, String> {
    const DAY_MS: u64 = 86_400_000;
    const HOUR_MS: u64 = 3_600_000;
    let mut count = 0;
    for day in 0..7u64 {
        for screen_index in 0..2u16 {
            for (slot, hour) in [4u64, 9, 14].iter().enumerate() {
                let start_ms = first_day + day * DAY_MS + hour * HOUR_MS;
                let title = titles[(day as usize + slot + screen_index as usize) % titles.len()];
                let command = CommandKind::PublishShow {
                    theater,
                    screen: ScreenIndex(screen_index),
                    title: title.into(),
                    genre: "drama".into(),
                    start_ms,
                    end_ms: start_ms + 3 * HOUR_MS,
                    prices: Prices {
                        normal_minor: 20_000,
                        premium_minor: 35_000,
                        vip_minor: 60_000,
                    },
                    currency: "INR".into(),
                };
                let id = format!("seed:{city}:{}:{day}:{screen_index}:{slot}", theater.0);
                write(client, city, &id, command).await?;
                count += 1;
            }
        }
    }
    Ok(count)
}

/// `api demo`: cluster, data, API; stops cleanly on Ctrl-C.
pub async fn run(listen: &str, data_dir: Option<PathBuf>, tls: bool) -> Result<(), String> {
    let started = std::time::Instant::now();
    let reuse = data_dir
        .as_deref()
        .is_some_and(|dir: &Path| dir.join("node-1").exists());
    let tls = if tls {
        Some(Arc::new(DemoTls::generate()?))
    } else {
        None
    };
    let cities: Vec<String> = CITIES.iter().map(|(city, _)| city.to_string()).collect();
    let cluster = DemoCluster::start_with_tls(
        data_dir,
        RaftTiming::default(),
        Limits::default(),
        &cities,
        tls.clone(),
    )
    .await?;
    let client = cluster.client();
    let admin_password = format!("admin-{}", &auth::new_refresh_token().0[..12]);
    let customer_password = format!("customer-{}", &auth::new_refresh_token().0[..12]);
    let now_ms = auth::now_s() * 1_000;
    if !reuse {
        let admin = create_account(
            &client,
            "admin@demo.example",
            "+910000000001",
            &admin_password,
            Role::Admin,
        )
        .await?;
        create_account(
            &client,
            "customer@demo.example",
            "+910000000002",
            &customer_password,
            Role::Customer,
        )
        .await?;
        let shows = seed(&client, admin, now_ms).await?;
        println!(
            "demo: seeded {} cities, 6 theaters, {shows} shows",
            CITIES.len()
        );
    } else {
        println!(
            "demo: reusing the data in the given directory (accounts keep their old passwords)"
        );
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let (keys, _, _) =
        Keys::generate("seat-ledger", "seat-ledger-clients").map_err(|e| e.to_string())?;
    let state = Arc::new(AppState::with_cluster_tls(
        cluster.api_config(listen),
        keys,
        Arc::new(crate::payment::SandboxGateway::start().await?),
        cluster.api_cluster_tls(),
    )?);
    let scheme = if tls.is_some() { "https" } else { "http" };
    match &tls {
        Some(tls) => {
            let ca_path = std::env::temp_dir()
                .join(format!("seat-ledger-demo-ca-{}.pem", std::process::id()));
            std::fs::write(&ca_path, tls.ca.cert_pem())
                .map_err(|e| format!("cannot write {}: {e}", ca_path.display()))?;
            println!(
                "demo: TLS ON: mutual TLS between nodes and from the api to them, HTTPS on the \
                 listener; development CA made for this run: curl --cacert {}",
                ca_path.display()
            );
        }
        None => println!(
            "demo: TLS is OFF (plain HTTP and plain peer TCP on loopback; `api demo --tls` \
             turns it on); JWT signing key generated for this run"
        ),
    }
    if !reuse {
        println!("demo: admin    admin@demo.example / {admin_password}");
        println!("demo: customer customer@demo.example / {customer_password}");
    }
    for node in &cluster.nodes {
        println!(
            "demo: raft-node {} clients on {} (admin API: /admin/status)",
            node.node.id(),
            node.client_addr
        );
    }
    println!("demo: web pages: booking on {scheme}://{listen}/, cluster (sre, admin) on {scheme}://{listen}/cluster");
    println!(
        "demo: ready in {:.1} s: API on {scheme}://{listen}/api/v1/cities (Ctrl-C stops)",
        started.elapsed().as_secs_f64()
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let served = match &tls {
        Some(tls) => crate::serve_tls(listener, tls.listener.clone(), state, shutdown).await,
        None => crate::serve(listener, state, shutdown).await,
    };
    println!("demo: stopping");
    cluster.stop().await;
    served.map_err(|e| e.to_string())
}
