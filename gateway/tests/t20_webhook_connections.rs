//! How the sandbox delivers webhooks over TCP: one connection per delivery by default (a
//! receiver that died is seen dead at once), kept-alive connections when asked
//! (`Behaviour::webhook_keep_alive`, as a production gateway does). A receiver counts
//! the client ports its deliveries came from.

use gateway::sandbox::{start, SandboxConfig};
use gateway::wire::Behaviour;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// Payments made one after another; each brings two webhooks (pending, succeeded).
const PAYMENTS: usize = 3;

/// The client ports of the webhook deliveries of `PAYMENTS` sequential payments.
async fn delivery_ports(keep_alive: bool) -> Vec<u16> {
    let (sender, mut deliveries) = tokio::sync::mpsc::unbounded_channel::<u16>();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", receiver.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send(peer.port());
                    "ok"
                }
            },
        ),
    );
    let server = tokio::spawn(async move {
        axum::serve(
            receiver,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    let mut config = SandboxConfig::generated();
    config.default_webhook_url = Some(hook);
    config.behaviour = Behaviour {
        result_delay_ms: 0,
        webhook_keep_alive: keep_alive,
        ..Behaviour::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = start(config, listener).unwrap();
    let http = reqwest::Client::new();
    let mut ports = Vec::new();
    for n in 0..PAYMENTS {
        let created = http
            .post(format!("{}/v1/payments", gateway.base_url()))
            .bearer_auth(gateway.api_key())
            .header("idempotency-key", format!("k{n}"))
            .json(&serde_json::json!({
                "amount_minor": 1_000, "currency": "INR", "method": "sandbox-approve",
            }))
            .send()
            .await
            .unwrap();
        assert!(
            created.status().is_success(),
            "create: {}",
            created.status()
        );
        // Both webhooks of this payment arrive before the next payment is made.
        for _ in 0..2 {
            let port = tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
                .await
                .expect("a webhook within 10 s")
                .unwrap();
            ports.push(port);
        }
    }
    gateway.stop().await;
    server.abort();
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivery_has_its_own_connection_by_default() {
    let ports = delivery_ports(false).await;
    let distinct: BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        ports.len(),
        "deliveries shared a connection: {ports:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_deliveries_reuse_their_connection() {
    let ports = delivery_ports(true).await;
    let distinct: BTreeSet<u16> = ports.iter().copied().collect();
    assert_eq!(ports.len(), 2 * PAYMENTS);
    assert!(
        distinct.len() < ports.len(),
        "every delivery opened a connection: {ports:?}"
    );
}
