//! The `sandbox-gateway` binary as its own process: it serves on the port it was given,
//! refuses callers without the API key, dedupes creates by idempotency key, and
//! delivers webhooks signed with the shared secret, which verify, and a refund after.
//! The process is killed when the test ends, whatever happens.

use gateway::signature;
use gateway::wire::{PaymentObject, WebhookEvent};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const API_KEY: &str = "sk_process_test";
const SECRET: &str = "whsec_process_test_secret";

/// Kills the child on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_process_signs_its_webhooks_and_dedupes_by_key() {
    // The webhook receiver: records every delivery (header, body).
    let (sender, mut deliveries) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", receiver.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sender = sender.clone();
                async move {
                    let header = headers
                        .get(signature::HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let _ = sender.send((header, body.to_vec()));
                    "ok"
                }
            },
        ),
    );
    let server = tokio::spawn(async move { axum::serve(receiver, app).await });

    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_sandbox-gateway"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--webhook-url",
            &hook,
        ])
        .env("SANDBOX_API_KEY", API_KEY)
        .env("SANDBOX_WEBHOOK_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the sandbox-gateway binary starts");
    let _process = Process(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http
        .get(format!("{base}/health/live"))
        .send()
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let body = serde_json::json!({
        "amount_minor": 25_000, "currency": "INR", "method": "sandbox-approve",
        "metadata": { "booking_id": "mumbai-7" },
    });
    let refused = http
        .post(format!("{base}/v1/payments"))
        .header("idempotency-key", "k1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "no API key, no payment");
    let create = || {
        http.post(format!("{base}/v1/payments"))
            .bearer_auth(API_KEY)
            .header("idempotency-key", "k1")
            .json(&body)
            .send()
    };
    let first: PaymentObject = create().await.unwrap().json().await.unwrap();
    let again: PaymentObject = create().await.unwrap().json().await.unwrap();
    assert_eq!(first.id, again.id, "the same key is the same payment");
    assert_eq!(first.status, "pending");
    let other = http
        .post(format!("{base}/v1/payments"))
        .bearer_auth(API_KEY)
        .header("idempotency-key", "k1")
        .json(&serde_json::json!({ "amount_minor": 1, "currency": "INR", "method": "sandbox-approve" }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 422, "the same key with another body");

    // pending (v1), then succeeded (v2), each signed with the shared secret.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (header, bytes) = tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
            .await
            .expect("a webhook within 10 s")
            .unwrap();
        let now = gateway::sandbox::now_ms();
        signature::verify(SECRET.as_bytes(), &header, &bytes, now, 60_000)
            .expect("a valid signature");
        assert!(signature::verify(b"wrong", &header, &bytes, now, 60_000).is_err());
        let event: WebhookEvent = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(event.payment.id, first.id);
        seen.push((event.payment.version, event.payment.status));
    }
    assert_eq!(
        seen,
        vec![(1, "pending".to_owned()), (2, "succeeded".to_owned())]
    );
    let refund = |key: &'static str| {
        http.post(format!("{base}/v1/payments/{}/refunds", first.id))
            .bearer_auth(API_KEY)
            .header("idempotency-key", key)
            .json(&serde_json::json!({ "amount_minor": 25_000 }))
            .send()
    };
    let refunded: PaymentObject = refund("r1").await.unwrap().json().await.unwrap();
    assert_eq!(
        (refunded.status.as_str(), refunded.refunded_minor),
        ("refunded", 25_000)
    );
    let repeated: PaymentObject = refund("r1").await.unwrap().json().await.unwrap();
    assert_eq!(
        repeated.version, refunded.version,
        "a repeated refund is the same refund"
    );
    assert_eq!(
        refund("r2").await.unwrap().status(),
        409,
        "nothing left to refund"
    );
    server.abort();
}
