//! The notifications worker against a real cluster, a webhook receiver and an SMTP
//! server started by the test (both on loopback port 0): every notification arrives
//! with one stable id even when the worker is killed mid-delivery and restarted from
//! its durable cursor; lock reminders; signatures; retries ending in the dead-letter
//! file.

mod harness;

use api::notify::{NotifyConfig, SmtpConfig, WebhookConfig, Worker};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use harness::Harness;
use serde_json::{json, Value};
use state_machine::{Query, QueryResponse, Role};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const SECRET: &str = "a shared webhook secret";

/// One webhook request as the receiver saw it.
#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    kind: String,
    body: Value,
    signed: bool,
    /// The `X-Signature` header and the raw body, to check other secrets.
    signature: String,
    raw: Vec<u8>,
}

#[derive(Default)]
struct Receiver {
    deliveries: Mutex<Vec<Delivery>>,
    /// Take the next booking_confirmed and never answer (the worker dies meanwhile).
    hang_confirmed: AtomicBool,
    arrived: tokio::sync::Notify,
    /// Answer every request with 500.
    fail_all: AtomicBool,
}

async fn webhook_server(receiver: Arc<Receiver>) -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let receiver = receiver.clone();
            async move {
                let value: Value = serde_json::from_slice(&body).unwrap_or_default();
                let signature = headers
                    .get("x-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let delivery = Delivery {
                    id: headers["idempotency-key"].to_str().unwrap().to_owned(),
                    kind: value["kind"].as_str().unwrap_or("").to_owned(),
                    signed: api::notify::verify(SECRET.as_bytes(), signature, &body),
                    body: value,
                    signature: signature.to_owned(),
                    raw: body.to_vec(),
                };
                let hang = delivery.kind == "booking_confirmed"
                    && receiver.hang_confirmed.swap(false, Ordering::SeqCst);
                receiver.deliveries.lock().unwrap().push(delivery);
                receiver.arrived.notify_waiters();
                if hang {
                    std::future::pending::<()>().await;
                }
                if receiver.fail_all.load(Ordering::SeqCst) {
                    AxumStatus::INTERNAL_SERVER_ERROR
                } else {
                    AxumStatus::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

/// A minimal SMTP server: accepts every message and keeps its text.
async fn smtp_server(messages: Arc<Mutex<Vec<String>>>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let messages = messages.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test-smtp ready\r\n").await.ok();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "DATA" => {
                            write
                                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                                .await
                                .ok();
                            let mut text = String::new();
                            while let Ok(Some(line)) = lines.next_line().await {
                                if line == "." {
                                    break;
                                }
                                text.push_str(&line);
                                text.push('\n');
                            }
                            messages.lock().unwrap().push(text);
                            b"250 queued\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 bye\r\n").await.ok();
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    if write.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn config(
    consumer: &str,
    url: &str,
    smtp_port: Option<u16>,
    dead: &std::path::Path,
) -> NotifyConfig {
    NotifyConfig {
        consumer: consumer.into(),
        shards: vec!["mumbai".into()],
        webhook: Some(WebhookConfig {
            url: url.into(),
            secret: SECRET.into(),
        }),
        smtp: smtp_port.map(|port| SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            from: "tickets@seat-ledger.test".into(),
        }),
        attempts_max: 3,
        backoff_min_ms: 20,
        backoff_max_ms: 100,
        attempt_timeout_ms: 30_000,
        lock_reminder_lead_ms: 9_600,
        dead_letter_path: dead.to_path_buf(),
        poll_interval_ms: 50,
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn message_ids(messages: &[String]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("Message-ID: ").map(str::to_owned))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_notification_arrives_once_per_id_despite_a_worker_crash() {
    let h = Harness::start().await;
    let receiver = Arc::new(Receiver::default());
    let url = webhook_server(receiver.clone()).await;
    let mail = Arc::new(Mutex::new(Vec::new()));
    let smtp_port = smtp_server(mail.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let user = api::demo::create_account(
        &h.cluster.client(),
        "meera@example.test",
        "+919800000777",
        "a long passphrase",
        Role::Customer,
    )
    .await
    .unwrap();
    let show = h.show(4, 10).await;

    // The first worker delivers until the receiver swallows booking_confirmed; then the
    // worker is killed with the delivery in flight and its cursor not yet advanced.
    receiver.hang_confirmed.store(true, Ordering::SeqCst);
    let first = tokio::spawn(
        Worker::new(
            h.state.clone(),
            config("notify-test", &url, Some(smtp_port), &dead),
        )
        .unwrap()
        .run(std::future::pending()),
    );
    let (booking, _) = h.lock(user.0, &show, &[0, 1]).await;
    h.pay(user.0, &booking).await;
    let deliveries = || receiver.deliveries.lock().unwrap().clone();
    wait_until("the first booking_confirmed delivery", || {
        deliveries().iter().any(|d| d.kind == "booking_confirmed")
    })
    .await;
    first.abort();
    let _ = first.await;

    // A new worker resumes from the durable cursor and delivers it again, same id.
    let second = tokio::spawn(
        Worker::new(
            h.state.clone(),
            config("notify-test", &url, Some(smtp_port), &dead),
        )
        .unwrap()
        .run(std::future::pending()),
    );
    wait_until("the redelivery", || {
        deliveries()
            .iter()
            .filter(|d| d.kind == "booking_confirmed")
            .count()
            >= 2
    })
    .await;
    h.cancel(user.0, &booking).await;
    let token = h.token(user.0, Role::Customer);
    // A short lock gets its reminder before it expires.
    let token_body = json!({ "seats": [5], "ttl_seconds": 10 });
    let (status, lock) = h
        .call(
            "POST",
            &format!("/api/v1/shows/{show}/seats/lock"),
            Some(&token),
            Some(token_body),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{lock}");
    let expected_kinds = [
        "booking_cancelled",
        "booking_confirmed",
        "lock_expiring",
        "refund_issued",
    ];
    wait_until("every kind of notification by webhook and email", || {
        let kinds: BTreeSet<String> = deliveries().into_iter().map(|d| d.kind).collect();
        kinds.len() == 4 && message_ids(&mail.lock().unwrap()).len() >= 4
    })
    .await;
    second.abort();

    let all = deliveries();
    assert!(
        all.iter().all(|d| d.signed),
        "an unsigned or badly signed delivery"
    );
    // Receivers keep the ids they have seen: each notification is one id, so each is
    // visible exactly once, although booking_confirmed was sent twice.
    let mut ids_per_kind: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for delivery in &all {
        ids_per_kind
            .entry(delivery.kind.clone())
            .or_default()
            .insert(delivery.id.clone());
    }
    assert_eq!(
        ids_per_kind.keys().cloned().collect::<Vec<_>>(),
        expected_kinds
    );
    for (kind, ids) in &ids_per_kind {
        assert_eq!(ids.len(), 1, "{kind} arrived under several ids: {ids:?}");
    }
    let confirmed: Vec<&Delivery> = all
        .iter()
        .filter(|d| d.kind == "booking_confirmed")
        .collect();
    assert_eq!(
        confirmed.len(),
        2,
        "sent before the crash and after the restart"
    );
    assert_eq!(confirmed[0].body, confirmed[1].body);
    assert_eq!(confirmed[0].body["data"]["booking_id"], booking.as_str());
    let refund = all.iter().find(|d| d.kind == "refund_issued").unwrap();
    assert_eq!(refund.body["data"]["refund_minor"], 50_000);
    assert_eq!(refund.body["user_id"], user.0);

    // Email went to the account's address, one message per notification id.
    let texts = mail.lock().unwrap().clone();
    let ids = message_ids(&texts);
    assert_eq!(
        ids.len(),
        ids.iter().collect::<BTreeSet<_>>().len(),
        "{ids:?}"
    );
    assert!(texts.iter().all(|t| t.contains("meera@example.test")));
    assert!(!dead.exists(), "nothing should be dead-lettered");

    // The durable cursor moved past everything delivered.
    let query = Query::ConsumerCursor {
        consumer: "notify-test".into(),
        stream: "mumbai".into(),
    };
    let (answer, _) = h
        .state
        .read(
            "global",
            query,
            raft_node::protocol::Consistency::Linearizable,
            None,
        )
        .await
        .unwrap();
    let QueryResponse::ConsumerCursor(Some(cursor)) = answer else {
        panic!("no cursor: {answer:?}");
    };
    let last = all
        .iter()
        .filter_map(|d| d.body["data"]["booking_id"].as_str())
        .count();
    assert!(last > 0 && cursor.index > 1, "{cursor:?}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_webhooks_are_retried_then_dead_lettered_and_the_worker_moves_on() {
    let h = Harness::start().await;
    let receiver = Arc::new(Receiver::default());
    receiver.fail_all.store(true, Ordering::SeqCst);
    let url = webhook_server(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let show = h.show(4, 10).await;
    let worker = tokio::spawn(
        Worker::new(h.state.clone(), config("notify-dead", &url, None, &dead))
            .unwrap()
            .run(std::future::pending()),
    );
    for (user, seat) in [(9_001u64, 0u32), (9_002, 1)] {
        let (booking, _) = h.lock(user, &show, &[seat]).await;
        h.pay(user, &booking).await;
    }
    let dead_lines = || {
        std::fs::read_to_string(&dead)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .collect::<Vec<_>>()
    };
    wait_until("two dead letters", || dead_lines().len() >= 2).await;
    worker.abort();
    let lines = dead_lines();
    assert!(lines
        .iter()
        .all(|l| l["kind"] == "booking_confirmed" && l["attempts"] == 3));
    assert!(lines[0]["error"].as_str().unwrap().contains("500"));
    let attempts = receiver.deliveries.lock().unwrap().clone();
    for line in &lines {
        let tries = attempts
            .iter()
            .filter(|d| d.id == line["id"].as_str().unwrap())
            .count();
        assert_eq!(tries, 3, "{line}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_of_one_consumer_do_not_loop_on_each_others_cursor() {
    let h = Harness::start().await;
    let receiver = Arc::new(Receiver::default());
    let url = webhook_server(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let show = h.show(4, 10).await;
    let workers: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(
                Worker::new(h.state.clone(), config("notify-pair", &url, None, &dead))
                    .unwrap()
                    .run(std::future::pending()),
            )
        })
        .collect();
    for (user, seat) in [(9_101u64, 0u32), (9_102, 1), (9_103, 2)] {
        let (booking, _) = h.lock(user, &show, &[seat]).await;
        h.pay(user, &booking).await;
    }
    let ids = || {
        receiver
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.id.clone())
            .collect::<BTreeSet<_>>()
    };
    wait_until("three confirmations", || ids().len() == 3).await;
    // Both workers may deliver the same notification (same id), but neither keeps
    // delivering once the cursor is past it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let settled = receiver.deliveries.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.deliveries.lock().unwrap().len(), settled);
    assert!(settled <= 6, "{settled} deliveries of 3 notifications");
    assert_eq!(ids().len(), 3);
    for worker in workers {
        worker.abort();
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_users_own_webhook_is_signed_with_their_secret_and_email_can_be_off() {
    let h = Harness::start().await;
    let operator = Arc::new(Receiver::default());
    let operator_url = webhook_server(operator.clone()).await;
    let personal = Arc::new(Receiver::default());
    let personal_url = webhook_server(personal.clone()).await;
    let mail = Arc::new(Mutex::new(Vec::new()));
    let smtp_port = smtp_server(mail.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let client = h.cluster.client();
    let user = api::demo::create_account(
        &client,
        "kiran@example.test",
        "+919800000888",
        "a long passphrase",
        Role::Customer,
    )
    .await
    .unwrap();
    let other = api::demo::create_account(
        &client,
        "dev@example.test",
        "+919800000999",
        "a long passphrase",
        Role::Customer,
    )
    .await
    .unwrap();
    let token = h.token(user.0, Role::Customer);
    let path = format!("/api/v1/users/{}/notification-channels", user.0);

    let (status, body) = h.call("GET", &path, Some(&token), None).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(
        (body["email"].clone(), body["webhook_url"].clone()),
        (json!(true), Value::Null)
    );
    let (status, _) = h
        .call(
            "POST",
            &path,
            Some(&token),
            Some(json!({"webhook_url": "ftp://nope"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let stranger = h.token(other.0, Role::Customer);
    let (status, _) = h
        .call(
            "POST",
            &path,
            Some(&stranger),
            Some(json!({"webhook_url": personal_url})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    let (status, _) = h.call("GET", &path, Some(&stranger), None).await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);
    let (status, set) = h
        .call(
            "POST",
            &path,
            Some(&token),
            Some(json!({"webhook_url": personal_url, "email": false})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{set}");
    let secret = set["webhook_secret"].as_str().unwrap().to_owned();
    let (_, shown) = h.call("GET", &path, Some(&token), None).await;
    assert_eq!(shown["webhook_signed"], true);
    assert!(
        shown.get("webhook_secret").is_none(),
        "the secret is shown once: {shown}"
    );

    let worker = tokio::spawn(
        Worker::new(
            h.state.clone(),
            config("notify-own", &operator_url, Some(smtp_port), &dead),
        )
        .unwrap()
        .run(std::future::pending()),
    );
    let show = h.show(4, 10).await;
    let (booking, _) = h.lock(user.0, &show, &[3]).await;
    h.pay(user.0, &booking).await;
    let got = || personal.deliveries.lock().unwrap().clone();
    wait_until("the user's own webhook", || {
        got().iter().any(|d| d.kind == "booking_confirmed")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.abort();
    let mine = got()
        .into_iter()
        .find(|d| d.kind == "booking_confirmed")
        .unwrap();
    assert!(api::notify::verify(
        secret.as_bytes(),
        &mine.signature,
        &mine.raw
    ));
    assert!(
        !mine.signed,
        "signed with the operator's secret instead of the user's"
    );
    let theirs = operator.deliveries.lock().unwrap().clone();
    assert!(theirs.iter().any(|d| d.id == mine.id && d.signed));
    assert!(mail.lock().unwrap().is_empty(), "email was turned off");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refund_issued_is_sent_once_when_the_gateway_refund_is_recorded() {
    // A quick reconciliation poller, so a held refund is retried soon after release.
    let h = Harness::start_configured(
        state_machine::Limits::default(),
        harness::timing(),
        |config| {
            config.payment.reconcile_interval_ms = 200;
            config.payment.reconcile_min_age_ms = 300;
        },
    )
    .await;
    let receiver = Arc::new(Receiver::default());
    let url = webhook_server(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let user = 9_301u64;
    let show = h.show(4, 10).await;
    let worker = tokio::spawn(
        Worker::new(h.state.clone(), config("notify-refund", &url, None, &dead))
            .unwrap()
            .run(std::future::pending()),
    );
    let deliveries = || receiver.deliveries.lock().unwrap().clone();
    let of_kind = |kind: &str| {
        deliveries()
            .into_iter()
            .filter(|d| d.kind == kind)
            .collect::<Vec<_>>()
    };
    let (booking, _) = h.lock(user, &show, &[0, 1]).await;
    h.pay(user, &booking).await;
    wait_until("booking_confirmed", || {
        !of_kind("booking_confirmed").is_empty()
    })
    .await;

    // The gateway does not answer refunds: the cancellation leaves the refund due, and
    // nothing may claim it was issued.
    h.gateway.hold_refunds.store(true, Ordering::SeqCst);
    let cancelled = h.cancel(user, &booking).await;
    assert_eq!(cancelled["payment_status"], "refund_pending", "{cancelled}");
    wait_until("booking_cancelled", || {
        !of_kind("booking_cancelled").is_empty()
    })
    .await;
    // Notifications of one event go out together; give the poller a few rounds too.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(
        of_kind("refund_issued").is_empty(),
        "refund announced before the gateway refunded: {:?}",
        of_kind("refund_issued")
    );

    // The gateway answers again: the poller refunds, the ledger records it, and the
    // customer hears of it once, under the id of the event that recorded it.
    h.gateway.hold_refunds.store(false, Ordering::SeqCst);
    wait_until("refund_issued", || !of_kind("refund_issued").is_empty()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    worker.abort();
    let refunds = of_kind("refund_issued");
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    let refund = &refunds[0];
    assert!(refund.signed);
    assert_eq!(refund.body["user_id"], user);
    assert_eq!(refund.body["data"]["booking_id"], booking.as_str());
    assert_eq!(refund.body["data"]["refund_minor"], 50_000);
    let admin = h.token(900_000, Role::Admin);
    let (status, page) = h
        .call(
            "GET",
            &format!("/api/v1/events?city=mumbai&show={show}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{page}");
    let recorded = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "payment_changed" && e["status"] == "refunded")
        .unwrap_or_else(|| panic!("no refunded payment event: {page}"))
        .clone();
    assert_eq!(
        refund.id,
        format!("mumbai-{}-refund_issued", recorded["id"].as_str().unwrap())
    );
    assert_eq!(of_kind("booking_cancelled").len(), 1);
    assert!(!dead.exists(), "nothing should be dead-lettered");
    h.stop().await;
}
