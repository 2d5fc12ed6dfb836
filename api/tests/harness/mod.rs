//! The test harness shared by the event-stream, support, search and notification
//! tests: a real three-node cluster (in-process, loopback port 0, RocksDB in a
//! temporary directory), the api on port 0, a plain HTTP client and a small
//! Server-Sent Events reader.

#![allow(dead_code)]

use api::app::AppState;
use api::auth::Keys;
use api::config::ApiConfig;
use api::demo::DemoCluster;
use api::payment::{GatewayError, GatewayEvent, GatewayPayment, NewPayment, PaymentGateway};
use futures_util::future::BoxFuture;
use raft_node::config::RaftTiming;
use reqwest::StatusCode;
use serde_json::{json, Value};
use state_machine::{Limits, Role, UserId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A test file's own `Harness`: the shared one, reached through `Deref`, plus the
/// file's request helpers in its own `impl Harness` (whose methods win over the shared
/// ones of the same name).
#[allow(unused_macros)] // each test crate uses a part of the harness
macro_rules! local_harness {
    () => {
        struct Harness(harness::Harness);

        impl std::ops::Deref for Harness {
            type Target = harness::Harness;

            fn deref(&self) -> &harness::Harness {
                &self.0
            }
        }

        impl std::ops::DerefMut for Harness {
            fn deref_mut(&mut self) -> &mut harness::Harness {
                &mut self.0
            }
        }

        impl Harness {
            async fn stop(self) {
                self.0.stop().await;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use local_harness;

pub struct Harness {
    pub cluster: DemoCluster,
    pub base: String,
    pub keys: Keys,
    /// The signing key's PEM, to forge tokens with the right key but wrong claims.
    pub private_pem: String,
    /// Its public half (an HS256 forgery uses it as the HMAC secret).
    pub public_pem: String,
    pub http: reqwest::Client,
    pub state: api::app::Shared,
    /// The api's payment gateway: the in-process sandbox, whose refunds a test can hold.
    pub gateway: Arc<GatedGateway>,
    server: tokio::task::JoinHandle<()>,
}

/// The sandbox gateway (over HTTP, as always) with one switch: while `hold_refunds` is
/// set, refund calls fail as if the gateway did not answer, so a refund stays due until
/// the test lets it through and the saga's poller retries it.
pub struct GatedGateway {
    pub sandbox: api::payment::SandboxGateway,
    pub hold_refunds: AtomicBool,
}

impl PaymentGateway for GatedGateway {
    fn validate_method(&self, method: &str) -> Result<(), String> {
        self.sandbox.validate_method(method)
    }
    fn create(&self, payment: NewPayment) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        self.sandbox.create(payment)
    }
    fn find_by_key(
        &self,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<GatewayPayment>, GatewayError>> {
        self.sandbox.find_by_key(idempotency_key)
    }
    fn fetch(&self, id: &str) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        self.sandbox.fetch(id)
    }
    fn cancel(&self, id: &str) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        self.sandbox.cancel(id)
    }
    fn refund(
        &self,
        id: &str,
        amount_minor: u64,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        if self.hold_refunds.load(Ordering::SeqCst) {
            return Box::pin(async {
                Err(GatewayError::Unavailable(
                    "refunds are held by the test".into(),
                ))
            });
        }
        self.sandbox.refund(id, amount_minor, idempotency_key)
    }
    fn verify_webhook(
        &self,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<GatewayEvent, String> {
        self.sandbox.verify_webhook(headers, body)
    }
}

pub fn timing() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        log_wal_prefill_mib: 1,
        ..RaftTiming::default()
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(Limits::default(), timing()).await
    }

    pub async fn start_with(limits: Limits, timing: RaftTiming) -> Harness {
        Harness::start_configured(limits, timing, |_| {}).await
    }

    /// Like `start_with`, with a last word on the api's configuration.
    pub async fn start_configured(
        limits: Limits,
        timing: RaftTiming,
        configure: impl FnOnce(&mut ApiConfig),
    ) -> Harness {
        let cluster = DemoCluster::start_with_limits(None, timing, limits)
            .await
            .expect("cluster");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (keys, private_pem, public_pem) =
            Keys::generate("seat-ledger", "seat-ledger-clients").unwrap();
        let mut config = cluster.api_config(&addr);
        config.limits.requests_per_second = 10_000;
        config.limits.burst = 10_000;
        configure(&mut config);
        let gateway = Arc::new(GatedGateway {
            sandbox: api::payment::SandboxGateway::start()
                .await
                .expect("sandbox gateway"),
            hold_refunds: AtomicBool::new(false),
        });
        let state = Arc::new(AppState::new(config, keys.clone(), gateway.clone()).unwrap());
        let served = state.clone();
        let server = tokio::spawn(async move {
            api::serve(listener, served, std::future::pending())
                .await
                .unwrap();
        });
        Harness {
            cluster,
            base: format!("http://{addr}"),
            keys,
            private_pem,
            public_pem,
            http: reqwest::Client::new(),
            state,
            gateway,
            server,
        }
    }

    /// An access token for a user id (city shards only need ids).
    pub fn token(&self, user: u64, role: Role) -> String {
        self.keys
            .issue_access(UserId(user), role, api::auth::now_s())
            .unwrap()
    }

    /// Sends a request; error answers must be problem+json. Returns status, body and
    /// the `X-Index` header when present.
    pub async fn call_full(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, Option<u64>) {
        let url = format!("{}{path}", self.base);
        let response = request(&self.http, method, url, token, body)
            .send()
            .await
            .expect("request");
        let index = response
            .headers()
            .get("x-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let (status, value, is_problem) = read_answer(response).await;
        if status.is_client_error() || status.is_server_error() {
            assert!(is_problem, "{status} without problem+json: {value}");
        }
        (status, value, index)
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (status, value, _) = self.call_full(method, path, token, body).await;
        (status, value)
    }

    /// A theater in `city` made by an admin; returns its id.
    pub async fn theater(&self, city: &str, name: &str, rows: u16, seats: u16) -> String {
        let admin = self.token(900_000, Role::Admin);
        let theater = json!({
            "city": city, "name": name, "address": "Juhu", "lat": 19.1, "long": 72.8,
            "screens": [{ "name": "One", "rows": (0..rows).map(|r| json!({"label": format!("R{r}"), "seats": seats})).collect::<Vec<_>>() }],
        });
        let (status, theater) = self
            .call("POST", "/api/v1/theaters", Some(&admin), Some(theater))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{theater}");
        theater["id"].as_str().unwrap().to_owned()
    }

    /// A show at `theater`, `days` days from now on screen 0; returns its id.
    pub async fn show_at(&self, theater: &str, title: &str, genre: &str, days: u64) -> String {
        let admin = self.token(900_000, Role::Admin);
        let start_s = api::auth::now_s() + 86_400 * days + fastrand::u64(0..3_600);
        let show = json!({
            "theater_id": theater, "screen": 0, "title": title, "genre": genre,
            "start_time": api::views::rfc3339(start_s * 1_000),
            "end_time": api::views::rfc3339((start_s + 3_000) * 1_000),
            "prices": { "normal_minor": 25_000, "premium_minor": 40_000, "vip_minor": 70_000 },
        });
        let (status, show) = self
            .call("POST", "/api/v1/shows", Some(&admin), Some(show))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{show}");
        show["id"].as_str().unwrap().to_owned()
    }

    /// A fresh Mumbai theater with one show; returns the show id.
    pub async fn show(&self, rows: u16, seats: u16) -> String {
        let theater = self.theater("mumbai", "Test Talkies", rows, seats).await;
        self.show_at(&theater, "Avengers", "action", 3).await
    }

    /// `user` locks `seats` of `show`; returns the booking id and the write's index.
    pub async fn lock(&self, user: u64, show: &str, seats: &[u32]) -> (String, u64) {
        let token = self.token(user, Role::Customer);
        let (status, lock, index) = self
            .call_full(
                "POST",
                &format!("/api/v1/shows/{show}/seats/lock"),
                Some(&token),
                Some(json!({ "seats": seats })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{lock}");
        (
            lock["booking_id"].as_str().unwrap().to_owned(),
            index.expect("x-index"),
        )
    }

    /// `user` pays for `booking` with the sandbox gateway.
    pub async fn pay(&self, user: u64, booking: &str) {
        let token = self.token(user, Role::Customer);
        let (status, paid) = self
            .call(
                "POST",
                &format!("/api/v1/bookings/{booking}/payment"),
                Some(&token),
                Some(json!({"method": "sandbox-approve"})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{paid}");
    }

    /// `user` releases the lock of `booking` (lock and booking share their number).
    pub async fn release(&self, user: u64, booking: &str) {
        let token = self.token(user, Role::Customer);
        let (status, body) = self
            .call(
                "DELETE",
                &format!("/api/v1/locks/{booking}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    /// Cancels `user`'s booking; returns the answer (200 asserted).
    pub async fn cancel(&self, user: u64, booking: &str) -> Value {
        let token = self.token(user, Role::Customer);
        let (status, body) = self
            .call(
                "DELETE",
                &format!("/api/v1/bookings/{booking}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Opens an SSE stream of `path` (with `Last-Event-ID` when given).
    pub async fn sse(&self, path: &str, token: &str, last_event_id: Option<&str>) -> SseReader {
        let mut request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("sse request");
        SseReader {
            status: response.status(),
            response,
            buffer: String::new(),
        }
    }

    pub async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        self.cluster.stop().await;
    }
}

/// A `method` request to `url` with an optional bearer token and JSON body.
pub fn request(
    http: &reqwest::Client,
    method: &str,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::RequestBuilder {
    let mut request = match method {
        "POST" => http.post(url),
        "DELETE" => http.delete(url),
        "PATCH" => http.patch(url),
        _ => http.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
}

/// A response's status, its body (JSON, or the text as a string when it is not JSON)
/// and whether it is problem+json.
pub async fn read_answer(response: reqwest::Response) -> (StatusCode, Value, bool) {
    let status = response.status();
    let is_problem = response.headers().get("content-type").is_some_and(|v| {
        v.to_str()
            .unwrap_or("")
            .starts_with("application/problem+json")
    });
    let text = response.text().await.unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value, is_problem)
}

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Value,
}

/// Reads Server-Sent Events from a streaming response.
pub struct SseReader {
    pub status: StatusCode,
    pub response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    /// The next event with data, or `None` when nothing arrives `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        id = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if !data.is_empty() {
                    let data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    return Some(SseMessage { id, event, data });
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// The body of a refused stream.
    pub async fn problem(self) -> Value {
        let text = self.response.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}
