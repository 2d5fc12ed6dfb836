//! TLS end to end: three raft-nodes with mutual TLS between them and on their client
//! listeners (a development CA made for the test), the api reaching them over mutual
//! TLS and serving HTTPS, and the refusals: plain text to each TLS listener, a client
//! without a certificate, a certificate from another CA. Refusals are counted in
//! `seat_ledger_tls_handshake_failures_total{listener, kind="refused"}`.

use api::app::AppState;
use api::auth::Keys;
use api::demo::{DemoCluster, DemoTls, CITIES};
use raft_node::config::RaftTiming;
use reqwest::StatusCode;
use serde_json::{json, Value};
use state_machine::{Limits, Role, UserId};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn timing() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        log_wal_prefill_mib: 1,
        ..RaftTiming::default()
    }
}

fn refusals(listener: &str) -> u64 {
    let rendered = raft_node::http::prometheus().render();
    let prefix = format!(
        "seat_ledger_tls_handshake_failures_total{{listener=\"{listener}\",kind=\"refused\"}} "
    );
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Sends a plain-text HTTP request to `addr` and returns whatever comes back before
/// the server closes (a TLS server sends an alert or nothing, never an HTTP answer).
async fn plain_text_answer(addr: &str) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = stream
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    answer
}

async fn wait_for(listener: &str, above: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while refusals(listener) <= above {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal counted for {listener}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tls_cluster_serves_the_api_end_to_end_and_refuses_strangers() {
    raft_node::http::prometheus();
    let tls = Arc::new(DemoTls::generate().unwrap());
    let cities: Vec<String> = CITIES.iter().map(|(c, _)| c.to_string()).collect();
    // Raft elections and replication below run over mutual TLS between the nodes.
    let cluster = DemoCluster::start_with_tls(
        None,
        timing(),
        Limits::default(),
        &cities,
        Some(tls.clone()),
    )
    .await
    .expect("TLS cluster");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (keys, _, _) = Keys::generate("seat-ledger", "seat-ledger-clients").unwrap();
    let state = Arc::new(
        AppState::with_cluster_tls(
            cluster.api_config(&addr),
            keys.clone(),
            Arc::new(
                api::payment::SandboxGateway::start()
                    .await
                    .expect("sandbox gateway"),
            ),
            cluster.api_cluster_tls(),
        )
        .unwrap(),
    );
    let server = tokio::spawn(api::serve_tls(
        listener,
        tls.listener.clone(),
        state,
        std::future::pending(),
    ));
    let ca = reqwest::Certificate::from_pem(tls.ca.cert_pem().as_bytes()).unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    let base = format!("https://{addr}");

    // A whole booking over HTTPS, through nodes that talk mutual TLS.
    let signup: Value = https
        .post(format!("{base}/api/v1/signup"))
        .json(&json!({"email": "tls@test.example", "phone": "+919811111111", "password": "a long tls password", "name": "T"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let customer = signup["access_token"]
        .as_str()
        .expect("signup over TLS")
        .to_owned();
    let admin = keys
        .issue_access(UserId(900_000), Role::Admin, api::auth::now_s())
        .unwrap();
    let theater: Value = https
        .post(format!("{base}/api/v1/theaters"))
        .bearer_auth(&admin)
        .json(
            &json!({"city": "mumbai", "name": "TLS Talkies", "lat": 1.0, "long": 1.0,
            "screens": [{"name": "One", "rows": [{"label": "A", "seats": 4}]}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let start_s = api::auth::now_s() + 86_400 * 2;
    let show: Value = https
        .post(format!("{base}/api/v1/shows"))
        .bearer_auth(&admin)
        .json(&json!({"theater_id": theater["id"], "title": "Secure", "start_time": api::views::rfc3339(start_s * 1_000),
            "end_time": api::views::rfc3339((start_s + 7_200) * 1_000),
            "prices": {"normal_minor": 100, "premium_minor": 200, "vip_minor": 300}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = https
        .post(format!(
            "{base}/api/v1/shows/{}/seats/lock",
            show["id"].as_str().unwrap()
        ))
        .bearer_auth(&customer)
        .json(&json!({"seats": [0, 1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let lock: Value = response.json().await.unwrap();
    let response = https
        .post(format!(
            "{base}/api/v1/bookings/{}/payment",
            lock["booking_id"].as_str().unwrap()
        ))
        .bearer_auth(&customer)
        .json(&json!({"method": "sandbox-approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // The event stream is read from the nodes over mutual TLS too.
    let response = https
        .get(format!("{base}/api/v1/events?city=mumbai&limit=50"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    assert!(page.to_string().contains("seats_locked"), "{page}");
    // The cluster page gathers every node's admin status over mutual TLS.
    let status: Value = https
        .get(format!("{base}/api/v1/cluster"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = status.to_string();
    assert!(
        !text.contains("unreachable") && !text.contains("no answer"),
        "{text}"
    );

    // Plain text to the api's TLS listener: no HTTP answer, a counted refusal.
    let before = refusals("api");
    let answer = plain_text_answer(&addr).await;
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was served");
    wait_for("api", before).await;
    let plain = reqwest::Client::new();
    assert!(plain
        .get(format!("http://{addr}/health/live"))
        .send()
        .await
        .is_err());

    // The nodes' client listeners: plain text and a client certificate from another CA
    // are refused; the api's certificate is served.
    let node = cluster.file.nodes[0].client_addr.clone();
    let before = refusals("node-client");
    assert!(!plain_text_answer(&node).await.starts_with(b"HTTP/"));
    wait_for("node-client", before).await;
    // Without a client certificate a node serves health and metrics (probes,
    // Prometheus) and nothing else.
    let no_cert = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    let live = no_cert
        .get(format!("https://{node}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    for (method, path) in [("GET", "/admin/status"), ("POST", "/v1/shards/global/read")] {
        let request = match method {
            "POST" => no_cert
                .post(format!("https://{node}{path}"))
                .json(&json!({})),
            _ => no_cert.get(format!("https://{node}{path}")),
        };
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{path} without a certificate"
        );
    }
    let rogue_ca = raft_node::tls::dev::DevCa::new("rogue CA").unwrap();
    let rogue = rogue_ca.issue("rogue", &["127.0.0.1"]).unwrap();
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", rogue.cert_pem, rogue.key_pem).as_bytes())
            .unwrap();
    let rogue_client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(identity)
        .build()
        .unwrap();
    let before = refusals("node-client");
    assert!(
        rogue_client
            .get(format!("https://{node}/health/live"))
            .send()
            .await
            .is_err(),
        "a node served a client certificate from another CA"
    );
    wait_for("node-client", before).await;
    let genuine = cluster.client();
    let read = genuine
        .read(
            "global",
            &raft_node::protocol::ReadRequest {
                query: state_machine::Query::Clock,
                consistency: raft_node::protocol::Consistency::Stale,
                min_index: None,
            },
            &[1],
            Duration::from_secs(5),
        )
        .await;
    assert!(read.is_ok(), "{read:?}");

    server.abort();
    let _ = server.await;
    cluster.stop().await;
}

/// The api binary refuses secret values on its command line, naming what to use.
#[test]
fn the_api_refuses_secrets_on_the_command_line() {
    for flag in ["--jwt-signing-key", "--webhook-key=abc", "--secret"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_api"))
            .args(["serve", "--config", "/nonexistent.toml", flag, "value"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag}: {stderr}");
        assert!(
            stderr.contains("never taken from the command line"),
            "{stderr}"
        );
    }
}
