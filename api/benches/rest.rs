//! The api tier's cost: 1-seat locks through REST (api -> client protocol -> leader)
//! against the same cluster driven through the client protocol directly, at 64 and 256
//! concurrent clients, in one process. Prints figures; asserts nothing about speed.
//!
//! `cargo bench -p api --bench rest` (add `-- --quick` for a short run).

use api::app::AppState;
use api::auth::Keys;
use api::demo::DemoCluster;
use raft_node::config::RaftTiming;
use state_machine::{Applied, CommandKind, Outcome, Role, SeatId, ShowId, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sorted latencies and the count of acknowledged locks in one measured window.
struct Row {
    latencies_us: Vec<u64>,
    seconds: f64,
}

impl Row {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let rank = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[rank] as f64 / 1_000.0
    }

    fn rate(&self) -> f64 {
        self.latencies_us.len() as f64 / self.seconds
    }
}

/// Runs `clients` loops for `window`, each issuing `lock(n)` with a fresh n.
async fn drive<F, Fut>(clients: usize, window: Duration, lock: F) -> Row
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let lock = Arc::new(lock);
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (lock, counter) = (lock.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                if lock(n).await {
                    latencies.push(sent.elapsed().as_micros() as u64);
                }
            }
            latencies
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.unwrap_or_default());
    }
    latencies_us.sort_unstable();
    Row {
        latencies_us,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Shows with 10,000 seats each; lock n takes seat n % 10,000 of show n / 10,000, so no
/// lock ever conflicts and every user stays under the per-show cap.
async fn publish_shows(cluster: &DemoCluster, count: u64) -> Vec<ShowId> {
    let client = cluster.client();
    let screen = state_machine::Screen {
        name: "Big".into(),
        rows: (0..100)
            .map(|row| state_machine::RowSpec {
                label: format!("R{row}"),
                seats: 100,
                category: state_machine::Category::Normal,
            })
            .collect(),
    };
    let theater = CommandKind::CreateTheater {
        city: "mumbai".into(),
        name: "Bench Hall".into(),
        address: String::new(),
        lat_micro_deg: 0,
        lon_micro_deg: 0,
        owner: UserId(1),
        screens: vec![screen],
    };
    let timeout = Duration::from_secs(10);
    let done = client
        .write("mumbai", "bench:theater", theater, timeout)
        .await
        .expect("theater");
    let Outcome::Applied(Applied::TheaterCreated { theater }) = done.outcome else {
        panic!("{done:?}")
    };
    let start = (api::auth::now_s() + 86_400) * 1_000;
    let mut shows = Vec::new();
    for n in 0..count {
        let kind = CommandKind::PublishShow {
            theater,
            screen: state_machine::ScreenIndex(0),
            title: "Bench".into(),
            genre: String::new(),
            start_ms: start + n * 4 * 3_600_000,
            end_ms: start + n * 4 * 3_600_000 + 3_600_000,
            prices: state_machine::Prices {
                normal_minor: 100,
                premium_minor: 100,
                vip_minor: 100,
            },
            currency: "INR".into(),
        };
        let done = client
            .write("mumbai", &format!("bench:show:{n}"), kind, timeout)
            .await
            .expect("show");
        let Outcome::Applied(Applied::ShowPublished { show }) = done.outcome else {
            panic!("{done:?}")
        };
        shows.push(show);
    }
    shows
}

fn print_row(name: &str, clients: usize, row: &Row) {
    println!(
        "{name:<16} {clients:>4} clients {:>9.0} locks/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} locks)",
        row.rate(),
        row.percentile(0.50),
        row.percentile(0.99),
        row.latencies_us.len()
    );
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let window = Duration::from_secs(if quick { 3 } else { 8 });
    let cluster = DemoCluster::start(None, RaftTiming::default())
        .await
        .expect("cluster");
    let shows = Arc::new(publish_shows(&cluster, 40).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (keys, _, _) = Keys::generate("seat-ledger", "seat-ledger-clients").expect("keys");
    let mut config = cluster.api_config(&addr);
    config.limits.requests_per_second = 1_000_000;
    config.limits.burst = 1_000_000;
    let gateway = api::payment::SandboxGateway::start()
        .await
        .expect("gateway");
    let state = AppState::new(config, keys.clone(), Arc::new(gateway)).expect("state");
    tokio::spawn(api::serve(
        listener,
        Arc::new(state),
        std::future::pending(),
    ));
    // Tokens are minted before measuring: signing is the client's cost, not the api's.
    const USERS: u64 = 5_000;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..USERS)
            .map(|u| {
                let user = UserId(1_000_000 + u);
                keys.issue_access(user, Role::Customer, api::auth::now_s())
                    .expect("token")
            })
            .collect(),
    );
    println!(
        "api tier cost: 1-seat locks, 3 in-process raft-nodes (synced log), {window:?} per row"
    );
    let next_seat = Arc::new(AtomicU64::new(0));
    let mut summary = Vec::new();
    for clients in [64usize, 256] {
        let protocol = {
            let (client, shows, next) = (cluster.client(), shows.clone(), next_seat.clone());
            drive(clients, window, move |_| {
                let (client, shows) = (client.clone(), shows.clone());
                let n = next.fetch_add(1, Ordering::Relaxed);
                async move {
                    let show = shows[(n / 10_000) as usize % shows.len()];
                    let kind = CommandKind::LockSeats {
                        show,
                        user: UserId(1_000_000 + n % USERS),
                        seats: vec![SeatId((n % 10_000) as u32)],
                        ttl_ms: None,
                    };
                    let done = client
                        .write("mumbai", &format!("p{n}"), kind, Duration::from_secs(10))
                        .await;
                    matches!(done, Ok(d) if d.outcome.is_applied())
                }
            })
            .await
        };
        print_row("client protocol", clients, &protocol);
        let rest = {
            let (http, shows, next, tokens, base) = (
                reqwest::Client::new(),
                shows.clone(),
                next_seat.clone(),
                tokens.clone(),
                format!("http://{addr}"),
            );
            drive(clients, window, move |_| {
                let (http, shows, tokens, base) =
                    (http.clone(), shows.clone(), tokens.clone(), base.clone());
                let n = next.fetch_add(1, Ordering::Relaxed);
                async move {
                    let show = shows[(n / 10_000) as usize % shows.len()];
                    let token = tokens[(n % USERS) as usize].clone();
                    let url = format!("{base}/api/v1/shows/mumbai-{}/seats/lock", show.0);
                    let body = serde_json::json!({ "seats": [n % 10_000] });
                    let sent = http.post(url).bearer_auth(token).json(&body).send().await;
                    matches!(sent, Ok(r) if r.status() == reqwest::StatusCode::CREATED)
                }
            })
            .await
        };
        print_row("REST (api)", clients, &rest);
        summary.push((
            clients,
            rest.rate() / protocol.rate().max(1.0),
            rest.percentile(0.99),
            protocol.percentile(0.99),
        ));
    }
    println!("\nsummary (target: the REST tier costs < 30% of throughput, i.e. ratio >= 0.70)");
    for (clients, ratio, rest_p99, protocol_p99) in summary {
        println!(
            "  {clients:>4} clients: REST/protocol throughput {ratio:.2}  (cost {:.0}%), p99 REST {rest_p99:.2} ms vs protocol {protocol_p99:.2} ms",
            (1.0 - ratio) * 100.0
        );
    }
    cluster.stop().await;
}
