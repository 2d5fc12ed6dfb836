//! The booking saga end to end: a real three-node cluster (in-process, loopback,
//! RocksDB), the sandbox gateway serving HTTP on a loopback port with signed webhooks,
//! and one or two api nodes on port 0, driven over HTTP like a client.
//!
//! Each failure path ends in exactly one of: confirmed and paid, or released and not
//! charged (or refunded). Every test finishes by checking that promise against the
//! gateway's own books (`assert_money_matches_bookings`).

mod harness;

use api::app::AppState;
use api::auth::Keys;
use api::demo::DemoCluster;
use api::payment::SandboxGateway;
use gateway::wire::Behaviour;
use reqwest::StatusCode;
use serde_json::{json, Value};
use state_machine::{CommandKind, Limits, Role, UserId};
use std::sync::Arc;
use std::time::Duration;

/// Bound of every wait for the saga to settle.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);

struct ApiNode {
    base: String,
    server: tokio::task::JoinHandle<()>,
}

struct Harness {
    cluster: DemoCluster,
    gateway: Arc<SandboxGateway>,
    apis: Vec<ApiNode>,
    keys: Keys,
    http: reqwest::Client,
    /// How long past its lock's expiry a pending payment is left before it is
    /// cancelled (customers may still be paying at the provider).
    lock_grace_ms: u64,
    /// How far ahead of the system's the next api nodes' wall clocks run.
    api_clock_offset_ms: i64,
    /// The next api nodes' base URL as the gateway reaches them (their listening
    /// address when `None`).
    api_public_url: Option<String>,
}

impl Harness {
    /// A cluster with locks of 1 s minimum, one gateway, and `apis` api nodes whose
    /// pay requests wait at most `wait_ms` for the result.
    async fn start(apis: usize, wait_ms: u64) -> Harness {
        let limits = Limits {
            lock_ttl_ms_min: 1_000,
            ..Limits::default()
        };
        let cluster = DemoCluster::start_with_limits(None, harness::timing(), limits)
            .await
            .expect("cluster");
        let gateway = Arc::new(SandboxGateway::start().await.expect("gateway"));
        let (keys, _, _) = Keys::generate("seat-ledger", "seat-ledger-clients").unwrap();
        let mut harness = Harness {
            cluster,
            gateway,
            apis: Vec::new(),
            keys,
            http: reqwest::Client::new(),
            lock_grace_ms: 200,
            api_clock_offset_ms: 0,
            api_public_url: None,
        };
        for _ in 0..apis {
            harness.start_api(wait_ms).await;
        }
        harness
    }

    async fn start_api(&mut self, wait_ms: u64) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut config = self.cluster.api_config(&addr);
        config.limits.requests_per_second = 10_000;
        config.limits.burst = 10_000;
        config.payment.wait_ms = wait_ms;
        config.payment.reconcile_interval_ms = 200;
        config.payment.reconcile_min_age_ms = 300;
        config.payment.lock_grace_ms = self.lock_grace_ms;
        config.payment.public_url = self.api_public_url.clone();
        let gateway: Arc<dyn api::payment::PaymentGateway> = self.gateway.clone();
        let state = Arc::new(AppState::new(config, self.keys.clone(), gateway).unwrap());
        state.wall_clock.set_offset_ms(self.api_clock_offset_ms);
        let server = tokio::spawn(async move {
            api::serve(listener, state, std::future::pending())
                .await
                .unwrap();
        });
        self.apis.push(ApiNode {
            base: format!("http://{addr}"),
            server,
        });
    }

    /// Kills api node `n` the hard way: its server and its poller stop mid-flight.
    fn kill_api(&self, n: usize) {
        self.apis[n].server.abort();
    }

    /// The node the helpers use: the newest (earlier ones may have been killed).
    fn node(&self) -> usize {
        self.apis.len() - 1
    }

    fn behave(&self, behaviour: Behaviour) {
        self.gateway.server().set_behaviour(behaviour);
    }

    fn token(&self, user: u64, role: Role) -> String {
        self.keys
            .issue_access(UserId(user), role, api::auth::now_s())
            .unwrap()
    }

    async fn call(
        &self,
        node: usize,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.apis[node].base);
        let request = harness::request(&self.http, method, url, token, body);
        let (status, value, _) = harness::read_answer(request.send().await.expect("request")).await;
        (status, value)
    }

    /// A show in Mumbai starting `start_in_s` from now, lasting `length_s`.
    async fn show(&self, start_in_s: u64, length_s: u64) -> String {
        let admin = self.token(900_000, Role::Admin);
        let theater = json!({
            "city": "mumbai", "name": "Saga Talkies", "address": "Bandra", "lat": 19.1, "long": 72.8,
            "screens": [{ "name": "One", "rows": [{"label": "A", "seats": 10}, {"label": "B", "seats": 10}] }],
        });
        let (status, theater) = self
            .call(
                self.node(),
                "POST",
                "/api/v1/theaters",
                Some(&admin),
                Some(theater),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{theater}");
        let start_ms = api::auth::now_s() * 1_000 + start_in_s * 1_000;
        let show = json!({
            "theater_id": theater["id"], "screen": 0, "title": "Saga", "genre": "drama",
            "start_time": api::views::rfc3339(start_ms),
            "end_time": api::views::rfc3339(start_ms + length_s * 1_000),
            "prices": { "normal_minor": 25_000, "premium_minor": 40_000, "vip_minor": 70_000 },
        });
        let (status, show) = self
            .call(
                self.node(),
                "POST",
                "/api/v1/shows",
                Some(&admin),
                Some(show),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{show}");
        show["id"].as_str().unwrap().to_owned()
    }

    /// Locks `seats` for the holder of `token` with a lock of `ttl_s`; returns the
    /// booking id.
    async fn lock(&self, token: &str, show: &str, seats: &[u32], ttl_s: u64) -> String {
        let (status, lock) = self
            .call(
                self.node(),
                "POST",
                &format!("/api/v1/shows/{show}/seats/lock"),
                Some(token),
                Some(json!({ "seats": seats, "ttl_seconds": ttl_s })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{lock}");
        lock["booking_id"].as_str().unwrap().to_owned()
    }

    async fn pay(&self, node: usize, token: &str, booking: &str, method: &str) -> Value {
        let (status, body) = self
            .call(
                node,
                "POST",
                &format!("/api/v1/bookings/{booking}/payment"),
                Some(token),
                Some(json!({ "method": method })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body
    }

    /// A pay request whose answer is not 202 (the gateway did not answer the create).
    async fn pay_unanswered(&self, node: usize, token: &str, booking: &str, method: &str) {
        let (status, body) = self
            .call(
                node,
                "POST",
                &format!("/api/v1/bookings/{booking}/payment"),
                Some(token),
                Some(json!({ "method": method })),
            )
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    /// The gateway's idempotency key of `booking`'s payment.
    fn payment_key(booking: &str) -> String {
        let (shard, number) = api::views::parse_ext_id(booking).unwrap();
        api::saga::payment_key(&shard, state_machine::BookingId(number))
    }

    async fn payment_status(&self, node: usize, token: &str, booking: &str) -> Value {
        let (status, body) = self
            .call(
                node,
                "GET",
                &format!("/api/v1/bookings/{booking}/payment/status"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Polls the payment status (bounded) until it is `wanted`.
    async fn wait_for_status(
        &self,
        node: usize,
        token: &str,
        booking: &str,
        wanted: &str,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
        loop {
            let body = self.payment_status(node, token, booking).await;
            if body["status"] == json!(wanted) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "payment of {booking} is still {body} after {SETTLE_WITHIN:?}, wanted {wanted}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn seat(&self, show: &str, seat: u32) -> String {
        let (_, map) = self
            .call(
                self.node(),
                "GET",
                &format!("/api/v1/shows/{show}/seats?consistency=linearizable"),
                None,
                None,
            )
            .await;
        map["seats"][seat as usize]["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn booking(&self, token: &str, booking: &str) -> Value {
        let (status, body) = self
            .call(
                self.node(),
                "GET",
                &format!("/api/v1/bookings/{booking}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Every gateway payment's net charge (captured minus refunded) is the booking's
    /// price if the booking is confirmed, and zero otherwise.
    async fn assert_money_matches_bookings(&self) {
        let admin = self.token(900_000, Role::Admin);
        for payment in self.gateway.server().payments() {
            let booking = &payment.metadata["booking_id"];
            let charged = match payment.status.as_str() {
                "succeeded" | "refunded" => payment.amount_minor - payment.refunded_minor,
                "pending" => panic!("payment {} of {booking} never resolved", payment.id),
                _ => 0,
            };
            let body = self.booking(&admin, booking).await;
            let expected = if body["status"] == json!("confirmed") {
                payment.amount_minor
            } else {
                0
            };
            assert_eq!(
                charged, expected,
                "{booking} is {} but the gateway holds {charged} of payment {payment:?}",
                body["status"]
            );
        }
    }

    async fn stop(self) {
        for api in &self.apis {
            api.server.abort();
        }
        self.cluster.stop().await;
    }
}

/// A declined payment releases the seat at once: another customer can lock it right
/// after, and nothing is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_decline_releases_the_seat_at_once_and_charges_nothing() {
    let h = Harness::start(1, 3_000).await;
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(10_001, Role::Customer);
    let booking = h.lock(&riya, &show, &[4], 60).await;
    let paid = h.pay(0, &riya, &booking, "sandbox-decline").await;
    assert_eq!(paid["status"], json!("failed"), "{paid}");
    assert_eq!(paid["booking_status"], json!("cancelled"));
    assert!(paid["reason"].as_str().unwrap().contains("declined"));
    assert_eq!(h.seat(&show, 4).await, "available");
    let arjun = h.token(10_002, Role::Customer);
    h.lock(&arjun, &show, &[4], 60).await;
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// A payment that never resolves at the gateway holds the seat only until the lock
/// expires; then the poller cancels it: nothing charged, seat free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_that_never_answers_is_cancelled_after_the_lock_expires() {
    let h = Harness::start(1, 300).await;
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(11_001, Role::Customer);
    let booking = h.lock(&riya, &show, &[2], 2).await;
    let paid = h.pay(0, &riya, &booking, "sandbox-timeout").await;
    assert_eq!(paid["status"], json!("pending"), "{paid}");
    assert_eq!(h.seat(&show, 2).await, "locked");
    let settled = h.wait_for_status(0, &riya, &booking, "failed").await;
    assert_eq!(settled["booking_status"], json!("expired"), "{settled}");
    assert_eq!(h.seat(&show, 2).await, "available");
    let payments = h.gateway.server().payments();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].status, "canceled");
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// Success inside the lock confirms; every webhook arrives three times and each
/// payment's events arrive newest first: nothing changes twice, nothing goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicated_and_reordered_webhooks_change_nothing() {
    let h = Harness::start(1, 3_000).await;
    h.behave(Behaviour {
        duplicate_webhooks: 2,
        reorder_webhooks: true,
        ..Behaviour::default()
    });
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(12_001, Role::Customer);
    let mut bookings = Vec::new();
    for seat in [0, 1, 2] {
        let booking = h.lock(&riya, &show, &[seat], 60).await;
        h.pay(0, &riya, &booking, "sandbox-approve").await;
        bookings.push(booking);
    }
    let declined = h.lock(&riya, &show, &[3], 60).await;
    h.pay(0, &riya, &declined, "sandbox-decline").await;
    for booking in &bookings {
        let body = h.wait_for_status(0, &riya, booking, "completed").await;
        assert_eq!(body["booking_status"], json!("confirmed"));
    }
    h.wait_for_status(0, &riya, &declined, "failed").await;
    // Let every duplicate and stale event land, then check nothing moved.
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    while h.gateway.server().stats().delivered < 4 * 2 * 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "webhooks delivered: {:?}",
            h.gateway.server().stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for booking in &bookings {
        let body = h.payment_status(0, &riya, booking).await;
        assert_eq!(body["status"], json!("completed"), "{body}");
    }
    assert_eq!(
        h.payment_status(0, &riya, &declined).await["status"],
        json!("failed")
    );
    for seat in [0, 1, 2] {
        assert_eq!(h.seat(&show, seat).await, "booked");
    }
    assert_eq!(h.seat(&show, 3).await, "available");
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// The gateway says yes only after the lock expired and someone else took the seat:
/// the seat stays theirs, the late payer is refunded in full, the booking is expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn success_after_the_lock_expired_is_refunded_and_the_seat_is_not_sold_twice() {
    let mut h = Harness::start(0, 300).await;
    // The customer is still paying at the provider when the lock runs out: the saga
    // does not cancel the payment yet, and the success arrives late.
    h.lock_grace_ms = 30_000;
    h.start_api(300).await;
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(13_001, Role::Customer);
    let booking = h.lock(&riya, &show, &[6], 1).await;
    let paid = h.pay(0, &riya, &booking, "sandbox-delay-3000").await;
    assert_eq!(paid["status"], json!("pending"), "{paid}");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let arjun = h.token(13_002, Role::Customer);
    let other = h.lock(&arjun, &show, &[6], 60).await;
    h.pay(0, &arjun, &other, "sandbox-approve").await;
    h.wait_for_status(0, &arjun, &other, "completed").await;
    let late = h.wait_for_status(0, &riya, &booking, "refunded").await;
    assert_eq!(late["booking_status"], json!("expired"), "{late}");
    assert_eq!(late["refund_minor"], late["amount_minor"]);
    assert_eq!(h.seat(&show, 6).await, "booked");
    let refunded: Vec<_> = h
        .gateway
        .server()
        .payments()
        .into_iter()
        .filter(|p| p.status == "refunded")
        .collect();
    assert_eq!(refunded.len(), 1);
    assert_eq!(refunded[0].refunded_minor, refunded[0].amount_minor);
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// Only the booking's owner can pay for it: a stranger's payment request (and one for
/// a booking that does not exist) is 404, starts nothing at the gateway and leaves the
/// owner free to pay; an admin may pay on the owner's behalf.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_owner_or_an_admin_pays_and_a_stranger_changes_nothing() {
    let h = Harness::start(1, 3_000).await;
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(16_001, Role::Customer);
    let booking = h.lock(&riya, &show, &[2], 60).await;
    let stranger = h.token(16_002, Role::Customer);
    let missing = format!("{}9999", booking);
    for target in [&booking, &missing] {
        let (status, body) = h
            .call(
                0,
                "POST",
                &format!("/api/v1/bookings/{target}/payment"),
                Some(&stranger),
                Some(json!({ "method": "sandbox-approve" })),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    assert!(
        h.gateway.server().payments().is_empty(),
        "nothing reached the gateway"
    );
    assert_eq!(h.seat(&show, 2).await, "locked");
    let paid = h.pay(0, &riya, &booking, "sandbox-approve").await;
    let done = match paid["status"].as_str() {
        Some("completed") => paid,
        _ => h.wait_for_status(0, &riya, &booking, "completed").await,
    };
    assert_eq!(done["booking_status"], json!("confirmed"), "{done}");
    assert_eq!(h.seat(&show, 2).await, "booked");

    let asha = h.token(16_003, Role::Customer);
    let hers = h.lock(&asha, &show, &[3], 60).await;
    let admin = h.token(900_000, Role::Admin);
    h.pay(0, &admin, &hers, "sandbox-approve").await;
    h.wait_for_status(0, &asha, &hers, "completed").await;
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// The gateway loses every webhook: the reconciliation poller asks it and settles
/// both a success and a decline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_whose_webhook_never_came_are_reconciled() {
    let h = Harness::start(1, 200).await;
    h.behave(Behaviour {
        drop_webhooks: true,
        result_delay_ms: 400,
        ..Behaviour::default()
    });
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(14_001, Role::Customer);
    let approved = h.lock(&riya, &show, &[0], 60).await;
    let declined = h.lock(&riya, &show, &[1], 60).await;
    assert_eq!(
        h.pay(0, &riya, &approved, "sandbox-approve").await["status"],
        json!("pending")
    );
    assert_eq!(
        h.pay(0, &riya, &declined, "sandbox-decline").await["status"],
        json!("pending")
    );
    h.wait_for_status(0, &riya, &approved, "completed").await;
    h.wait_for_status(0, &riya, &declined, "failed").await;
    assert_eq!(h.gateway.server().stats().delivered, 0);
    assert_eq!(h.seat(&show, 0).await, "booked");
    assert_eq!(h.seat(&show, 1).await, "available");
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// Api node A starts a payment and dies before the gateway's success arrives (the
/// webhook, addressed to A, finds nobody); node B's poller finishes the saga. A second
/// saga stops right after its intent is recorded (as if A died before asking the
/// gateway); B creates the payment under the same key and finishes it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_node_killed_between_payment_and_confirm_is_finished_by_another() {
    let h = Harness::start(2, 100).await;
    h.behave(Behaviour {
        delivery_attempts: 2,
        ..Behaviour::default()
    });
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(15_001, Role::Customer);
    let booking = h.lock(&riya, &show, &[8], 60).await;
    let paid = h.pay(0, &riya, &booking, "sandbox-delay-1500").await;
    assert_eq!(paid["status"], json!("pending"), "{paid}");
    h.kill_api(0);
    let done = h.wait_for_status(1, &riya, &booking, "completed").await;
    assert_eq!(done["booking_status"], json!("confirmed"), "{done}");
    assert!(h.gateway.server().stats().failed_attempts > 0);

    // The intent alone, written as node A would have before it crashed.
    let second = h.lock(&riya, &show, &[9], 60).await;
    let (shard, number) = api::views::parse_ext_id(&second).unwrap();
    let start = CommandKind::StartPayment {
        booking: state_machine::BookingId(number),
        user: UserId(15_001),
        method: "sandbox-approve".into(),
        discount_minor: 0,
        coupon: None,
    };
    let written = h
        .cluster
        .client()
        .write(&shard, "15001:crashed-node", start, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(written.outcome.is_applied(), "{:?}", written.outcome);
    assert_eq!(
        h.payment_status(1, &riya, &second).await["status"],
        json!("pending")
    );
    h.wait_for_status(1, &riya, &second, "completed").await;
    h.assert_money_matches_bookings().await;
    assert_eq!(h.gateway.server().payments().len(), 2);
    h.stop().await;
}

/// Webhooks with a wrong signature or an old timestamp are refused; a replay of a
/// genuine one within the window changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_stale_and_replayed_webhooks_change_nothing() {
    let h = Harness::start(1, 3_000).await;
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(16_001, Role::Customer);
    let booking = h.lock(&riya, &show, &[5], 60).await;
    h.pay(0, &riya, &booking, "sandbox-approve").await;
    h.wait_for_status(0, &riya, &booking, "completed").await;
    let payment = h.gateway.server().payments().pop().unwrap();
    // A forged "refunded" event for this payment.
    let mut forged = payment.clone();
    forged.status = "refunded".into();
    forged.version += 5;
    forged.refunded_minor = forged.amount_minor;
    let event = gateway::wire::WebhookEvent {
        id: "evt_forged".into(),
        kind: "payment.refunded".into(),
        created_ms: gateway::sandbox::now_ms(),
        payment: forged,
    };
    let body = serde_json::to_vec(&event).unwrap();
    let url = format!("{}/api/v1/payments/webhook", h.apis[0].base);
    let send = |signature: String, body: Vec<u8>| {
        h.http
            .post(url.clone())
            .header("content-type", "application/json")
            .header(gateway::signature::HEADER, signature)
            .body(body)
            .send()
    };
    let now = gateway::sandbox::now_ms();
    let secret = h.gateway.server().webhook_secret().to_vec();
    let wrong = gateway::signature::sign(b"not the secret", now, &body);
    assert_eq!(send(wrong, body.clone()).await.unwrap().status(), 401);
    let stale = gateway::signature::sign(&secret, now - 600_000, &body);
    assert_eq!(send(stale, body.clone()).await.unwrap().status(), 401);
    assert_eq!(
        send("t=1,v1=zz".into(), body.clone())
            .await
            .unwrap()
            .status(),
        401
    );
    // A genuine event (the success, re-signed now as a replay would be) is accepted
    // and changes nothing.
    let genuine = gateway::wire::WebhookEvent {
        id: "evt_replay".into(),
        kind: "payment.succeeded".into(),
        created_ms: now,
        payment: payment.clone(),
    };
    let genuine = serde_json::to_vec(&genuine).unwrap();
    for _ in 0..2 {
        let signature = gateway::signature::sign(&secret, gateway::sandbox::now_ms(), &genuine);
        let response = send(signature, genuine.clone()).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let body = h.payment_status(0, &riya, &booking).await;
    assert_eq!(body["status"], json!("completed"), "{body}");
    assert_eq!(h.seat(&show, 5).await, "booked");
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// Cancelling a paid booking refunds it in full at the gateway before the cut-off
/// (2 h before the show); after it, the cancel frees the seat but refunds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refund_on_cancel_follows_the_cutoff() {
    let h = Harness::start(1, 3_000).await;
    let early = h.show(86_400, 3_600).await;
    let riya = h.token(17_001, Role::Customer);
    let booking = h.lock(&riya, &early, &[1], 60).await;
    h.pay(0, &riya, &booking, "sandbox-approve").await;
    h.wait_for_status(0, &riya, &booking, "completed").await;
    let (status, cancelled) = h
        .call(
            0,
            "DELETE",
            &format!("/api/v1/bookings/{booking}"),
            Some(&riya),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(
        cancelled["payment_status"],
        json!("refunded"),
        "{cancelled}"
    );
    let body = h.payment_status(0, &riya, &booking).await;
    assert_eq!(body["status"], json!("refunded"));
    assert_eq!(body["refund_minor"], body["amount_minor"]);

    let soon = h.show(3_600, 3_600).await;
    let late = h.lock(&riya, &soon, &[1], 60).await;
    h.pay(0, &riya, &late, "sandbox-approve").await;
    h.wait_for_status(0, &riya, &late, "completed").await;
    let (status, cancelled) = h
        .call(
            0,
            "DELETE",
            &format!("/api/v1/bookings/{late}"),
            Some(&riya),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["refund_due_minor"], json!(0), "{cancelled}");
    assert_eq!(h.seat(&soon, 1).await, "available");
    let payments = h.gateway.server().payments();
    let kept = payments
        .iter()
        .find(|p| p.metadata["booking_id"] == late)
        .unwrap();
    assert_eq!(
        (kept.status.as_str(), kept.refunded_minor),
        ("succeeded", 0)
    );
    h.stop().await;
}

/// Only a confirmed booking of a show that has ended may be rated, once; the show's
/// and the theater's averages follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ratings_need_an_attended_show_and_average_per_show_and_theater() {
    let h = Harness::start(1, 3_000).await;
    let show = h.show(3, 1).await;
    let riya = h.token(18_001, Role::Customer);
    let arjun = h.token(18_002, Role::Customer);
    let mine = h.lock(&riya, &show, &[1], 60).await;
    let his = h.lock(&arjun, &show, &[2], 60).await;
    h.pay(0, &riya, &mine, "sandbox-approve").await;
    h.pay(0, &arjun, &his, "sandbox-approve").await;
    h.wait_for_status(0, &riya, &mine, "completed").await;
    h.wait_for_status(0, &arjun, &his, "completed").await;
    let rate = |token: String, booking: String, stars: u64| {
        let h = &h;
        async move {
            h.call(
                0,
                "POST",
                "/api/v1/rating",
                Some(&token),
                Some(json!({ "booking_id": booking, "stars": stars, "message": "fine" })),
            )
            .await
        }
    };
    let (status, body) = rate(riya.clone(), mine.clone(), 4).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let (status, body) = rate(riya.clone(), mine.clone(), 6).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = rate(arjun.clone(), mine.clone(), 4).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = rate(riya.clone(), mine.clone(), 4).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = rate(riya.clone(), mine.clone(), 5).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = rate(arjun.clone(), his.clone(), 5).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["show_rating"]["count"], json!(2), "{body}");
    assert_eq!(body["show_rating"]["average_stars"], json!(4.5), "{body}");
    let (_, theater) = h
        .call(0, "GET", &format!("/api/v1/shows/{show}"), None, None)
        .await;
    let theater_id = theater["theater_id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    loop {
        let (status, summary) = h
            .call(
                0,
                "GET",
                &format!("/api/v1/theaters/{theater_id}/rating"),
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{summary}");
        if summary["count"] == json!(2) {
            assert_eq!(summary["average_stars"], json!(4.5));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{summary}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}

impl Harness {
    async fn coupon(&self, code: &str, max_uses: u32) {
        let admin = self.token(900_000, Role::Admin);
        let until = api::views::rfc3339((api::auth::now_s() + 86_400) * 1_000);
        let (status, body) = self
            .call(
                self.node(),
                "POST",
                "/api/v1/coupons",
                Some(&admin),
                Some(json!({
                    "code": code, "percent": 20, "max_discount_minor": 4_000,
                    "valid_until": until, "max_uses": max_uses,
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    async fn coupon_state(&self, code: &str) -> Value {
        let admin = self.token(900_000, Role::Admin);
        let (status, body) = self
            .call(
                self.node(),
                "GET",
                &format!("/api/v1/coupons/{code}"),
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// Twenty customers race for the last five uses of a coupon: exactly five payments get
/// the discount, the others are told the coupon is used up and are charged nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coupon_raced_by_twenty_bookings_is_used_exactly_its_limit() {
    let h = Arc::new(Harness::start(1, 3_000).await);
    let show = h.show(86_400, 3_600).await;
    h.coupon("LAST-FIVE", 5).await;
    let mut holds = Vec::new();
    for n in 0..20u32 {
        let token = h.token(20_000 + u64::from(n), Role::Customer);
        let booking = h.lock(&token, &show, &[n], 60).await;
        holds.push((token, booking));
    }
    let mut racers = Vec::new();
    for (token, booking) in holds.clone() {
        let h = h.clone();
        racers.push(tokio::spawn(async move {
            h.call(
                0,
                "POST",
                &format!("/api/v1/bookings/{booking}/payment"),
                Some(&token),
                Some(json!({ "method": "sandbox-approve", "promocode": "LAST-FIVE" })),
            )
            .await
        }));
    }
    let mut discounted = 0;
    for racer in racers {
        let (status, body) = racer.await.unwrap();
        match status {
            StatusCode::ACCEPTED => {
                assert_eq!(body["discount_minor"], json!(4_000), "{body}");
                assert_eq!(body["amount_minor"], json!(21_000), "{body}");
                discounted += 1;
            }
            StatusCode::CONFLICT => {
                assert_eq!(
                    body["type"],
                    json!("/problems/coupon-unavailable"),
                    "{body}"
                )
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(discounted, 5);
    for (token, booking) in &holds {
        let body = h.payment_status(0, token, booking).await;
        if body["discount_minor"] == json!(4_000) {
            h.wait_for_status(0, token, booking, "completed").await;
        }
    }
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    loop {
        let coupon = h.coupon_state("LAST-FIVE").await;
        if coupon["used"] == json!(5) {
            assert_eq!(
                (coupon["reserved"].clone(), coupon["remaining"].clone()),
                (json!(0), json!(0))
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{coupon}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.gateway.server().payments().len(), 5);
    h.assert_money_matches_bookings().await;
    Arc::into_inner(h).unwrap().stop().await;
}

/// A declined payment gives its coupon use back, so the next customer can use it; a
/// quote shows the discount before anything is reserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_coupon_use_comes_back_when_the_booking_does_not_confirm() {
    let h = Harness::start(1, 3_000).await;
    let show = h.show(86_400, 3_600).await;
    h.coupon("ONLY-ONE", 1).await;
    let riya = h.token(21_001, Role::Customer);
    let (status, quote) = h
        .call(
            0,
            "POST",
            "/api/v1/users/21001/bookings/init",
            Some(&riya),
            Some(json!({ "show_id": show, "seats": [0, 1], "promocode": "ONLY-ONE" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{quote}");
    assert_eq!(
        (
            quote["estimated_price_minor"].clone(),
            quote["discount_minor"].clone()
        ),
        (json!(46_000), json!(4_000)),
        "{quote}"
    );
    // The quote's request id is the lock's idempotency key.
    let request_id = quote["request_id"].as_str().unwrap().to_owned();
    let lock_body = json!({ "seats": [0, 1], "ttl_seconds": 60, "request_id": request_id });
    let (status, first) = h
        .call(
            0,
            "POST",
            &format!("/api/v1/shows/{show}/seats/lock"),
            Some(&riya),
            Some(lock_body.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = h
        .call(
            0,
            "POST",
            &format!("/api/v1/shows/{show}/seats/lock"),
            Some(&riya),
            Some(lock_body),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(first["lock_id"], again["lock_id"]);
    let booking = first["booking_id"].as_str().unwrap().to_owned();
    let (status, declined) = h
        .call(
            0,
            "POST",
            &format!("/api/v1/bookings/{booking}/payment"),
            Some(&riya),
            Some(json!({ "method": "sandbox-decline", "promocode": "ONLY-ONE" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{declined}");
    assert_eq!(declined["status"], json!("failed"));
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    while h.coupon_state("ONLY-ONE").await["remaining"] != json!(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the use never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arjun = h.token(21_002, Role::Customer);
    let next = h.lock(&arjun, &show, &[0], 60).await;
    let (status, paid) = h
        .call(
            0,
            "POST",
            &format!("/api/v1/bookings/{next}/payment"),
            Some(&arjun),
            Some(json!({ "method": "sandbox-approve", "promocode": "ONLY-ONE" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{paid}");
    assert_eq!(paid["status"], json!("completed"), "{paid}");
    assert_eq!(paid["discount_minor"], json!(4_000));
    let coupon = h.coupon_state("ONLY-ONE").await;
    assert_eq!(
        (coupon["used"].clone(), coupon["remaining"].clone()),
        (json!(1), json!(0))
    );
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// A referee names their referrer's code; their first captured payment rewards the
/// referrer once, later ones do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_referrer_is_rewarded_once_when_the_referee_first_books() {
    let h = Harness::start(1, 3_000).await;
    let show = h.show(86_400, 3_600).await;
    let mut sessions = Vec::new();
    for (n, email) in ["asha@example.com", "bilal@example.com"].iter().enumerate() {
        let signup = json!({
            "email": email, "phone": format!("+91980000100{n}"),
            "password": "a long passphrase", "name": email,
        });
        let (status, body) = h
            .call(0, "POST", "/api/v1/signup", None, Some(signup))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        sessions.push((
            body["user"]["id"].as_u64().unwrap(),
            body["access_token"].as_str().unwrap().to_owned(),
        ));
    }
    let (asha, asha_token) = sessions[0].clone();
    let (bilal, bilal_token) = sessions[1].clone();
    let path = format!("/api/v1/users/{asha}/referral");
    let (_, mine) = h.call(0, "GET", &path, Some(&asha_token), None).await;
    let code = mine["code"].as_str().unwrap().to_owned();
    let (status, body) = h
        .call(
            0,
            "POST",
            "/api/v1/referrals",
            Some(&asha_token),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "self-referral: {body}"
    );
    let (status, body) = h
        .call(
            0,
            "POST",
            "/api/v1/referrals",
            Some(&bilal_token),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["referred_by"], json!(asha));
    for seat in [0, 1] {
        let booking = h.lock(&bilal_token, &show, &[seat], 60).await;
        h.pay(0, &bilal_token, &booking, "sandbox-approve").await;
        h.wait_for_status(0, &bilal_token, &booking, "completed")
            .await;
    }
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    loop {
        let (_, summary) = h.call(0, "GET", &path, Some(&asha_token), None).await;
        if summary["rewarded"] == json!(1) {
            assert_eq!(summary["reward_minor"], json!(5_000), "{summary}");
            assert_eq!(summary["referees"], json!(1), "{summary}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{summary}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = h
        .call(
            0,
            "GET",
            &format!("/api/v1/users/{bilal}/referral"),
            Some(&asha_token),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another user's referral is private"
    );
    h.stop().await;
}

/// The gateway makes a payment but the answer to its create is lost (504), and every
/// retry of that create under the same key is refused: 429 (a rush), 401 (API keys
/// being rotated), 422 (a check the gateway runs before it looks the key up). None of
/// those may end the payment: the gateway's success that follows confirms the booking,
/// and its books match the bookings.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_retry_of_a_create_whose_answer_was_lost_never_strands_the_charge() {
    let h = Harness::start(1, 300).await;
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(18_001, Role::Customer);
    for (seat, refusal) in [(0, 429), (1, 401), (2, 422)] {
        h.behave(Behaviour {
            lose_create_responses: true,
            repeat_create_status: refusal,
            repeat_create_from: 2,
            ..Behaviour::default()
        });
        let booking = h.lock(&riya, &show, &[seat], 60).await;
        // The pay request's own create is the one whose answer is lost; the gateway
        // approves the payment 2 s later.
        h.pay_unanswered(0, &riya, &booking, "sandbox-delay-2000")
            .await;
        // The poller retries the create before that, and is refused.
        let key = Harness::payment_key(&booking);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1_500);
        while h.gateway.server().creates_with_key(&key) < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the poller did not retry the create of {booking}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let done = h.wait_for_status(0, &riya, &booking, "completed").await;
        assert_eq!(
            done["booking_status"],
            json!("confirmed"),
            "{refusal}: {done}"
        );
        assert_eq!(h.seat(&show, seat).await, "booked");
    }
    assert_eq!(h.gateway.server().payments().len(), 3);
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// A create the gateway refuses (this node's webhook URL is longer than it accepts)
/// still ends the payment at once, because the gateway confirms it holds no payment
/// under the key: the seat is free again and nothing is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_create_with_no_payment_under_its_key_releases_the_seat() {
    let mut h = Harness::start(1, 3_000).await;
    h.api_public_url = Some(format!("http://{}.example", "a".repeat(600)));
    h.start_api(3_000).await;
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(19_001, Role::Customer);
    let booking = h.lock(&riya, &show, &[5], 60).await;
    let paid = h.pay(1, &riya, &booking, "sandbox-approve").await;
    assert_eq!(paid["status"], json!("failed"), "{paid}");
    assert_eq!(paid["booking_status"], json!("cancelled"), "{paid}");
    assert!(
        paid["reason"].as_str().unwrap().contains("webhook_url"),
        "{paid}"
    );
    assert_eq!(h.seat(&show, 5).await, "available");
    assert!(h.gateway.server().payments().is_empty());
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// An api node whose clock runs a minute ahead cancels no payment inside a live lock:
/// whether a lock is over is the ledger's clock's call. Once the lock is over on that
/// clock, the payment is cancelled as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_clock_ahead_cancels_no_payment_inside_a_live_lock() {
    let mut h = Harness::start(0, 300).await;
    h.api_clock_offset_ms = 60_000;
    h.start_api(300).await;
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(20_001, Role::Customer);
    let booking = h.lock(&riya, &show, &[7], 5).await;
    let paid = h.pay(0, &riya, &booking, "sandbox-timeout").await;
    assert_eq!(paid["status"], json!("pending"), "{paid}");
    // About ten poller rounds, all well inside the lock.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let body = h.payment_status(0, &riya, &booking).await;
    assert_eq!(body["status"], json!("pending"), "{body}");
    assert_eq!(h.seat(&show, 7).await, "locked");
    assert_eq!(h.gateway.server().payments()[0].status, "pending");
    let settled = h.wait_for_status(0, &riya, &booking, "failed").await;
    assert_eq!(settled["booking_status"], json!("expired"), "{settled}");
    assert_eq!(h.gateway.server().payments()[0].status, "canceled");
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// Two payments whose api node died while their locks lived: one's intent was
/// recorded but its create never sent, the other's create reached the gateway but the
/// answer was lost. The node that takes over only after both locks ended creates no
/// payment: it finds nothing under the first one's key and ends it through the
/// ledger, and it cancels the second one, which it finds under its key. Nothing is
/// charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_gateway_payment_is_created_for_a_lock_that_is_over() {
    let mut h = Harness::start(1, 300).await;
    let show = h.show(86_400, 3_600).await;
    let riya = h.token(22_001, Role::Customer);
    let never_sent = h.lock(&riya, &show, &[3], 2).await;
    let lost = h.lock(&riya, &show, &[4], 2).await;
    h.behave(Behaviour {
        lose_create_responses: true,
        ..Behaviour::default()
    });
    h.pay_unanswered(0, &riya, &lost, "sandbox-timeout").await;
    h.kill_api(0);
    // The intent alone, written as node 0 would have before it died.
    let (shard, number) = api::views::parse_ext_id(&never_sent).unwrap();
    let start = CommandKind::StartPayment {
        booking: state_machine::BookingId(number),
        user: UserId(22_001),
        method: "sandbox-approve".into(),
        discount_minor: 0,
        coupon: None,
    };
    let written = h
        .cluster
        .client()
        .write(&shard, "22001:crashed-node", start, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(written.outcome.is_applied(), "{:?}", written.outcome);
    // Both locks end (the expiry sweep moves the ledger's clock past them).
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    h.behave(Behaviour::default());
    h.start_api(300).await;
    let ended = h.wait_for_status(1, &riya, &never_sent, "failed").await;
    assert_eq!(ended["booking_status"], json!("expired"), "{ended}");
    let cancelled = h.wait_for_status(1, &riya, &lost, "failed").await;
    assert_eq!(cancelled["booking_status"], json!("expired"), "{cancelled}");
    assert_eq!(
        h.gateway
            .server()
            .creates_with_key(&Harness::payment_key(&never_sent)),
        0,
        "a payment was created for a lock that was over"
    );
    let payments = h.gateway.server().payments();
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].status, "canceled");
    h.assert_money_matches_bookings().await;
    h.stop().await;
}

/// A customer's coupon use is reserved but their payment never started (their api node
/// died in between). An api node whose clock runs a minute ahead does not give the use
/// back while the lock lives (the payment may still start with the discount); once the
/// lock is over on the ledger's clock, it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_api_clock_ahead_gives_back_no_coupon_use_inside_a_live_lock() {
    let mut h = Harness::start(0, 300).await;
    h.api_clock_offset_ms = 60_000;
    h.start_api(300).await;
    let show = h.show(86_400, 3_600).await;
    h.coupon("HELD", 1).await;
    let riya = h.token(23_001, Role::Customer);
    let booking = h.lock(&riya, &show, &[1], 5).await;
    // The reservation alone, written as the dead node would have.
    let reserve = CommandKind::ReserveCoupon {
        code: "HELD".into(),
        booking: booking.clone(),
        user: UserId(23_001),
        price_minor: 25_000,
    };
    let written = h
        .cluster
        .client()
        .write("global", "23001:coupon", reserve, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(written.outcome.is_applied(), "{:?}", written.outcome);
    // About ten poller rounds, all well inside the lock.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let coupon = h.coupon_state("HELD").await;
    assert_eq!(coupon["reserved"], json!(1), "{coupon}");
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    while h.coupon_state("HELD").await["remaining"] != json!(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the use never came back after the lock of {booking} ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}
