//! The booking saga's cost: lock one seat, then pay with the sandbox gateway
//! (`sandbox-approve`, its result 20 ms after create, by signed webhook), through REST,
//! at 1, 16 and 64 concurrent customers; and how long the reconciliation poller takes
//! to settle payments whose webhook never comes. Three in-process raft-nodes, the
//! sandbox gateway on loopback. Prints figures; asserts nothing about speed.
//!
//! `cargo bench -p api --bench saga` (add `-- --quick` for a short run).

use api::app::AppState;
use api::auth::Keys;
use api::demo::DemoCluster;
use api::payment::SandboxGateway;
use gateway::wire::Behaviour;
use raft_node::config::RaftTiming;
use serde_json::{json, Value};
use state_machine::{Applied, CommandKind, Outcome, Role, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEATS_PER_SHOW: u64 = 10_000;

fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[rank] as f64 / 1_000.0
}

async fn publish_show(cluster: &DemoCluster, n: u64) -> String {
    let client = cluster.client();
    let write = |id: String, kind: CommandKind| {
        let client = client.clone();
        async move {
            let done = client
                .write("mumbai", &id, kind, Duration::from_secs(10))
                .await
                .expect("write");
            match done.outcome {
                Outcome::Applied(applied) => applied,
                Outcome::Rejected(rejection) => panic!("{rejection}"),
            }
        }
    };
    let screen = state_machine::testkit::screen("Big", 100, 100);
    let theater = write(
        format!("bench-theater-{n}"),
        state_machine::testkit::create_theater("mumbai", UserId(1), vec![screen]),
    )
    .await;
    let Applied::TheaterCreated { theater } = theater else {
        panic!("{theater:?}")
    };
    let start = api::auth::now_s() * 1_000 + 86_400_000;
    let show = write(
        format!("bench-show-{n}"),
        state_machine::testkit::publish_show(theater, 0, start, "Bench"),
    )
    .await;
    let Applied::ShowPublished { show } = show else {
        panic!("{show:?}")
    };
    api::views::ext_id("mumbai", show.0)
}

struct Api {
    base: String,
    http: reqwest::Client,
    keys: Keys,
}

impl Api {
    async fn post(&self, path: &str, user: u64, body: Value) -> Option<Value> {
        let token = self
            .keys
            .issue_access(UserId(user), Role::Customer, api::auth::now_s())
            .ok()?;
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    async fn status(&self, booking: &str, user: u64) -> Option<String> {
        let token = self
            .keys
            .issue_access(UserId(user), Role::Customer, api::auth::now_s())
            .ok()?;
        let body: Value = self
            .http
            .get(format!(
                "{}/api/v1/bookings/{booking}/payment/status",
                self.base
            ))
            .bearer_auth(token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        body["status"].as_str().map(str::to_owned)
    }

    /// Locks seat `n` for user `n` and returns its booking id.
    async fn lock(&self, show: &str, n: u64) -> Option<String> {
        let body = json!({ "seats": [n % SEATS_PER_SHOW], "ttl_seconds": 300 });
        let lock = self
            .post(
                &format!("/api/v1/shows/{show}/seats/lock"),
                1_000_000 + n,
                body,
            )
            .await?;
        lock["booking_id"].as_str().map(str::to_owned)
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let window = Duration::from_secs(if quick { 3 } else { 8 });
    let cluster = DemoCluster::start(None, RaftTiming::default())
        .await
        .expect("cluster");
    let gateway = Arc::new(SandboxGateway::start().await.expect("gateway"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (keys, _, _) = Keys::generate("seat-ledger", "seat-ledger-clients").expect("keys");
    let mut config = cluster.api_config(&addr);
    config.limits.requests_per_second = 1_000_000;
    config.limits.burst = 1_000_000;
    let dyn_gateway: Arc<dyn api::payment::PaymentGateway> = gateway.clone();
    let state = AppState::new(config, keys.clone(), dyn_gateway).expect("state");
    tokio::spawn(api::serve(
        listener,
        Arc::new(state),
        std::future::pending(),
    ));
    let api = Arc::new(Api {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
        keys,
    });
    println!("booking saga: lock + pay (sandbox-approve, result after 20 ms, signed webhook), {window:?} per row");
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>12}",
        "clients", "paid/s", "pay p50 ms", "pay p99 ms", "pay max ms"
    );
    let counter = Arc::new(AtomicU64::new(0));
    for (row, clients) in [1usize, 16, 64].into_iter().enumerate() {
        let show = Arc::new(publish_show(&cluster, row as u64).await);
        let started = Instant::now();
        let deadline = started + window;
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let (api, show, counter) = (api.clone(), show.clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let Some(booking) = api.lock(&show, n).await else {
                        continue;
                    };
                    let sent = Instant::now();
                    let path = format!("/api/v1/bookings/{booking}/payment");
                    let body = json!({ "method": "sandbox-approve" });
                    let paid = api.post(&path, 1_000_000 + n, body).await;
                    if paid.is_some_and(|b| b["status"] == json!("completed")) {
                        latencies.push(sent.elapsed().as_micros() as u64);
                    }
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.unwrap_or_default());
        }
        latencies.sort_unstable();
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{clients:>8} {:>10.1} {:>12.1} {:>12.1} {:>12.1}",
            latencies.len() as f64 / seconds,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
    }

    // Lost webhooks: the poller (every 2 s, for payments older than 1 s) settles them.
    gateway.server().set_behaviour(Behaviour {
        drop_webhooks: true,
        ..Behaviour::default()
    });
    let show = publish_show(&cluster, 99).await;
    let payments = if quick { 8 } else { 20 };
    let mut settle_us = Vec::new();
    for _ in 0..payments {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let Some(booking) = api.lock(&show, n).await else {
            continue;
        };
        let sent = Instant::now();
        let path = format!("/api/v1/bookings/{booking}/payment");
        api.post(&path, 1_000_000 + n, json!({ "method": "sandbox-approve" }))
            .await;
        let deadline = sent + Duration::from_secs(30);
        while Instant::now() < deadline {
            if api.status(&booking, 1_000_000 + n).await.as_deref() == Some("completed") {
                settle_us.push(sent.elapsed().as_micros() as u64);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    settle_us.sort_unstable();
    println!(
        "\nwebhooks lost: {} of {payments} payments settled by the poller; pay to completed p50 {:.0} ms, max {:.0} ms (poll every 2 s, min age 1 s)",
        settle_us.len(),
        percentile(&settle_us, 0.5),
        percentile(&settle_us, 1.0),
    );
    cluster.stop().await;
}
