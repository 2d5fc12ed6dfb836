//! The sandbox gateway's server: payments kept in memory (a sandbox forgets them on
//! restart), outcomes decided by the payment method, and webhook delivery with the
//! switchable misbehaviours of `Behaviour`.
//!
//! Every change of a payment raises its `version` and makes one event; events go to
//! the payment's webhook URL, signed (`signature`), retried a bounded number of times.
//! Writes take an `Idempotency-Key`: the same key with the same body answers the first
//! result again, with another body 422. `GET /v1/payment-keys?key=` says which payment a
//! create key made, or that none was made, so a caller whose retry was refused can tell
//! "never made" from "made, answer lost".

use crate::signature;
use crate::wire::{
    Behaviour, CreatePayment, CreateRefund, ErrorBody, PaymentKeyLookup, PaymentObject,
    PaymentPage, WebhookEvent,
};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Longest `sandbox-delay-<ms>`, so a test cannot park a task for hours.
pub const DELAY_MS_MAX: u64 = 600_000;
/// Largest amount of one payment, in minor units.
const AMOUNT_MINOR_MAX: u64 = 1_000_000_000_000;
const METADATA_ENTRIES_MAX: usize = 16;
const TEXT_BYTES_MAX: usize = 200;
const URL_BYTES_MAX: usize = 500;
const PAGE_MAX: usize = 500;

#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Callers send `Authorization: Bearer <api_key>`.
    pub api_key: String,
    /// Signs every webhook; receivers share it.
    pub webhook_secret: Vec<u8>,
    /// Webhook URL of payments that name none.
    pub default_webhook_url: Option<String>,
    /// Base of `payment_url`s; the listening address when absent.
    pub public_url: Option<String>,
    pub behaviour: Behaviour,
    /// Payments kept; creating more is refused (a sandbox, not a ledger).
    pub payments_max: usize,
}

impl SandboxConfig {
    /// A configuration with fresh random credentials.
    pub fn generated() -> SandboxConfig {
        let random = |n: usize| -> String {
            (0..n)
                .map(|_| format!("{:016x}", fastrand::u64(..)))
                .collect()
        };
        SandboxConfig {
            api_key: format!("sk_sandbox_{}", random(2)),
            webhook_secret: format!("whsec_{}", random(4)).into_bytes(),
            default_webhook_url: None,
            public_url: None,
            behaviour: Behaviour::default(),
            payments_max: 1_000_000,
        }
    }
}

/// Counters of webhook delivery, for tests and the operator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryStats {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub abandoned: u64,
}

struct Entry {
    object: PaymentObject,
    webhook_url: Option<String>,
    /// Every event of this payment so far, oldest first (for reordered delivery).
    events: Vec<WebhookEvent>,
}

#[derive(Default)]
struct Book {
    next_payment: u64,
    next_event: u64,
    payments: BTreeMap<String, Entry>,
    /// Idempotency key -> what its first create made.
    create_keys: BTreeMap<String, KeyRecord>,
    /// (payment id, key) -> body fingerprint.
    refund_keys: BTreeMap<(String, String), String>,
}

/// The payment a create's Idempotency-Key made.
struct KeyRecord {
    /// The first create's body without its webhook URL: a repeat must match it.
    fingerprint: String,
    payment: String,
    /// Creates with this key so far, the first included (`Behaviour::repeat_create_from`).
    creates: u32,
}

struct Inner {
    config: SandboxConfig,
    /// Distinguishes this process's ids from an earlier run's.
    instance: String,
    base_url: String,
    book: Mutex<Book>,
    behaviour: Mutex<Behaviour>,
    stats: Mutex<DeliveryStats>,
    /// Webhook deliveries, one connection each.
    http: reqwest::Client,
    /// Webhook deliveries over kept-alive connections (`Behaviour::webhook_keep_alive`).
    http_kept_alive: reqwest::Client,
    shutdown: watch::Receiver<bool>,
}

type Shared = Arc<Inner>;

/// A running sandbox gateway; dropping it stops the server and its timers.
pub struct Running {
    pub addr: SocketAddr,
    inner: Shared,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://<addr>`: the base of the API.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.inner.config.api_key
    }

    pub fn webhook_secret(&self) -> &[u8] {
        &self.inner.config.webhook_secret
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.inner.behaviour) = behaviour;
    }

    pub fn behaviour(&self) -> Behaviour {
        lock(&self.inner.behaviour).clone()
    }

    pub fn stats(&self) -> DeliveryStats {
        *lock(&self.inner.stats)
    }

    /// Every payment, oldest first.
    pub fn payments(&self) -> Vec<PaymentObject> {
        lock(&self.inner.book)
            .payments
            .values()
            .map(|entry| entry.object.clone())
            .collect()
    }

    /// Creates sent with the Idempotency-Key `key` so far, the first included (0 for a
    /// key never used).
    pub fn creates_with_key(&self, key: &str) -> u32 {
        lock(&self.inner.book)
            .create_keys
            .get(key)
            .map_or(0, |record| record.creates)
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-made change: every critical
    // section below finishes its change before anything can fail.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serves the sandbox on `listener` until the returned handle is stopped or dropped.
pub fn start(config: SandboxConfig, listener: tokio::net::TcpListener) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let base_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let inner = Arc::new(Inner {
        instance: format!("{:06x}", fastrand::u32(..0xff_ffff)),
        base_url,
        behaviour: Mutex::new(config.behaviour.clone()),
        config,
        book: Mutex::new(Book::default()),
        stats: Mutex::new(DeliveryStats::default()),
        // One connection per delivery unless `webhook_keep_alive`: a receiver that died
        // is seen as dead at once, never reached through a kept-alive connection to what
        // is left of it.
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(0)
            .build()
            .map_err(std::io::Error::other)?,
        http_kept_alive: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(std::io::Error::other)?,
        shutdown: shutdown_rx.clone(),
    });
    let app = router(inner.clone());
    let mut stop = shutdown_rx;
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        });
        if let Err(error) = serve.await {
            tracing::warn!(%error, "sandbox gateway stopped");
        }
    });
    Ok(Running {
        addr,
        inner,
        shutdown,
        task,
    })
}

fn router(inner: Shared) -> Router {
    let api = Router::new()
        .route("/v1/payments", post(create).get(list))
        .route("/v1/payments/{id}", get(fetch))
        .route("/v1/payments/{id}/cancel", post(cancel))
        .route("/v1/payments/{id}/refunds", post(refund))
        .route("/v1/payment-keys", get(lookup_key))
        .route("/admin/behaviour", get(get_behaviour).post(set_behaviour))
        .route("/admin/stats", get(stats))
        .layer(axum::middleware::from_fn_with_state(
            inner.clone(),
            authorize,
        ));
    Router::new()
        .merge(api)
        .route("/pay/{id}", get(pay_page))
        .route("/health/live", get(|| async { "ok" }))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(inner)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
        payment: None,
    };
    (status, Json(body)).into_response()
}

async fn authorize(State(inner): State<Shared>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let expected = inner.config.api_key.as_bytes();
    // Length then bytes, without an early exit on the first difference.
    let fine = presented.is_some_and(|key| {
        let key = key.as_bytes();
        key.len() == expected.len()
            && key
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    if !fine {
        return error(
            StatusCode::UNAUTHORIZED,
            "send Authorization: Bearer <sandbox api key>",
        );
    }
    next.run(request).await
}

fn idempotency_key(headers: &HeaderMap) -> Result<String, Box<Response>> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    check_key(key)
}

fn check_key(key: &str) -> Result<String, Box<Response>> {
    if key.is_empty()
        || key.len() > TEXT_BYTES_MAX
        || !key.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return Err(Box::new(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "send an Idempotency-Key of 1-200 printable characters",
        )));
    }
    Ok(key.to_owned())
}

/// Refuses a method the sandbox does not know, naming the ones it does.
pub fn validate_method(method: &str) -> Result<(), String> {
    parse_method(method).map(|_| ())
}

enum Method {
    Approve,
    Decline,
    Never,
    Delay(u64),
}

fn parse_method(method: &str) -> Result<Method, String> {
    match method {
        "sandbox-approve" => Ok(Method::Approve),
        "sandbox-decline" => Ok(Method::Decline),
        "sandbox-timeout" => Ok(Method::Never),
        other => match other
            .strip_prefix("sandbox-delay-")
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            Some(ms) if ms <= DELAY_MS_MAX => Ok(Method::Delay(ms)),
            _ => Err(format!(
                "unknown payment method {other:?}: use sandbox-approve, sandbox-decline, \
                 sandbox-timeout or sandbox-delay-<ms> (ms <= {DELAY_MS_MAX})"
            )),
        },
    }
}

enum Outcome {
    Succeed,
    Decline,
    Never,
}

fn outcome_of(inner: &Inner, method: &str) -> Result<(Outcome, u64), String> {
    let delay = lock(&inner.behaviour).result_delay_ms;
    Ok(match parse_method(method)? {
        Method::Approve => (Outcome::Succeed, delay),
        Method::Decline => (Outcome::Decline, delay),
        Method::Never => (Outcome::Never, 0),
        Method::Delay(ms) => (Outcome::Succeed, ms),
    })
}

fn check_create(body: &CreatePayment) -> Result<(), String> {
    if body.amount_minor == 0 || body.amount_minor > AMOUNT_MINOR_MAX {
        return Err(format!("amount_minor must be 1..={AMOUNT_MINOR_MAX}"));
    }
    if body.currency.len() != 3 || !body.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("currency: an ISO 4217 code such as INR".into());
    }
    if body.metadata.len() > METADATA_ENTRIES_MAX
        || body
            .metadata
            .iter()
            .any(|(k, v)| k.len() > TEXT_BYTES_MAX || v.len() > TEXT_BYTES_MAX)
    {
        return Err(format!(
            "metadata: at most {METADATA_ENTRIES_MAX} entries of at most {TEXT_BYTES_MAX} bytes"
        ));
    }
    if let Some(url) = &body.webhook_url {
        let well_formed = url.len() <= URL_BYTES_MAX
            && (url.starts_with("http://") || url.starts_with("https://"));
        if !well_formed {
            return Err("webhook_url: an http(s) URL of at most 500 bytes".into());
        }
    }
    Ok(())
}

async fn create(
    State(inner): State<Shared>,
    headers: HeaderMap,
    body: Result<Json<CreatePayment>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::UNPROCESSABLE_ENTITY, rejection.body_text()),
    };
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    if let Err(reason) = check_create(&body) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, reason);
    }
    let (outcome, delay_ms) = match outcome_of(&inner, &body.method) {
        Ok(found) => found,
        Err(reason) => return error(StatusCode::UNPROCESSABLE_ENTITY, reason),
    };
    // The webhook URL routes deliveries; it is not part of what is paid, so another
    // api node may resume a payment with its own URL under the same key.
    let fingerprint = serde_json::to_string(&CreatePayment {
        webhook_url: None,
        ..body.clone()
    })
    .unwrap_or_default();
    let (object, event) = {
        let mut book = lock(&inner.book);
        if let Some(record) = book.create_keys.get_mut(&key) {
            record.creates = record.creates.saturating_add(1);
            let behaviour = lock(&inner.behaviour).clone();
            if let Some(status) = repeat_refusal(&behaviour, record.creates) {
                return error(status, "refused (sandbox repeat_create_status)");
            }
            if record.fingerprint != fingerprint {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this Idempotency-Key was used with another body",
                );
            }
            let id = record.payment.clone();
            let object = book.payments[&id].object.clone();
            return (StatusCode::OK, Json(object)).into_response();
        }
        if book.payments.len() >= inner.config.payments_max {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the sandbox holds its maximum of payments; restart it",
            );
        }
        book.next_payment += 1;
        let id = format!("pay_{}_{:08}", inner.instance, book.next_payment);
        let now = now_ms();
        let object = PaymentObject {
            id: id.clone(),
            status: "pending".into(),
            version: 1,
            amount_minor: body.amount_minor,
            currency: body.currency.clone(),
            method: body.method.clone(),
            metadata: body.metadata.clone(),
            payment_url: format!("{}/pay/{id}", inner.base_url),
            refunded_minor: 0,
            failure_reason: None,
            created_ms: now,
            updated_ms: now,
        };
        let url = body
            .webhook_url
            .clone()
            .or(inner.config.default_webhook_url.clone());
        book.payments.insert(
            id.clone(),
            Entry {
                object: object.clone(),
                webhook_url: url,
                events: Vec::new(),
            },
        );
        book.create_keys.insert(
            key,
            KeyRecord {
                fingerprint,
                payment: id.clone(),
                creates: 1,
            },
        );
        let event = record_event(&mut book, &id);
        (object, event)
    };
    tracing::info!(payment = %object.id, method = %object.method, "payment created");
    dispatch(&inner, event);
    let settle = match outcome {
        Outcome::Succeed => Some(("succeeded", None)),
        Outcome::Decline => Some(("failed", Some("card declined (sandbox)"))),
        Outcome::Never => None,
    };
    if let Some((status, reason)) = settle {
        let inner = inner.clone();
        let id = object.id.clone();
        let mut stop = inner.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            let event = {
                let mut book = lock(&inner.book);
                let pending = book
                    .payments
                    .get(&id)
                    .is_some_and(|e| e.object.status == "pending");
                if !pending {
                    return;
                }
                change(&mut book, &id, status, reason.map(str::to_owned), None)
            };
            dispatch(&inner, event);
        });
    }
    if lock(&inner.behaviour).lose_create_responses {
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            "the answer was lost (sandbox lose_create_responses)",
        );
    }
    (StatusCode::CREATED, Json(object)).into_response()
}

/// The status `Behaviour::repeat_create_status` answers to the `creates`-th create of a
/// known key, if it refuses that one.
fn repeat_refusal(behaviour: &Behaviour, creates: u32) -> Option<StatusCode> {
    if behaviour.repeat_create_status == 0 || creates < behaviour.repeat_create_from.max(2) {
        return None;
    }
    // Only an error status is a refusal; anything else is a switch set by mistake.
    StatusCode::from_u16(behaviour.repeat_create_status)
        .ok()
        .filter(|status| status.is_client_error() || status.is_server_error())
}

#[derive(serde::Deserialize)]
struct KeyParams {
    key: Option<String>,
}

/// The payment a create with this Idempotency-Key made, or `null`: the gateway's
/// word that no create with the key has been accepted. The answer holds until the next
/// create with the key; a caller that acts on `null` must tolerate a create it sent
/// earlier arriving later (the api's ledger refunds such a payment).
async fn lookup_key(State(inner): State<Shared>, Query(params): Query<KeyParams>) -> Response {
    let key = match check_key(params.key.as_deref().unwrap_or("")) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let book = lock(&inner.book);
    let payment = book
        .create_keys
        .get(&key)
        .and_then(|record| book.payments.get(&record.payment))
        .map(|entry| entry.object.clone());
    Json(PaymentKeyLookup { key, payment }).into_response()
}

/// Moves a payment to `status`, raises its version, and records the event.
fn change(
    book: &mut Book,
    id: &str,
    status: &str,
    reason: Option<String>,
    refunded_minor: Option<u64>,
) -> Option<Delivery> {
    let entry = book.payments.get_mut(id)?;
    entry.object.status = status.to_owned();
    entry.object.version += 1;
    entry.object.updated_ms = now_ms();
    if reason.is_some() {
        entry.object.failure_reason = reason;
    }
    if let Some(refunded) = refunded_minor {
        entry.object.refunded_minor = refunded;
    }
    record_event(book, id)
}

/// What one change asks the deliverer to send.
struct Delivery {
    url: String,
    /// The new event first, then (when reordering) the older ones newest first.
    events: Vec<WebhookEvent>,
    newest_is_first_event: bool,
}

fn record_event(book: &mut Book, id: &str) -> Option<Delivery> {
    book.next_event += 1;
    let event_id = format!("evt_{:08}", book.next_event);
    let entry = book.payments.get_mut(id)?;
    let event = WebhookEvent {
        id: format!("{event_id}_{}", entry.object.id),
        kind: format!("payment.{}", entry.object.status),
        created_ms: now_ms(),
        payment: entry.object.clone(),
    };
    entry.events.push(event);
    let url = entry.webhook_url.clone()?;
    let events: Vec<WebhookEvent> = entry.events.iter().rev().cloned().collect();
    let newest_is_first_event = events.len() == 1;
    Some(Delivery {
        url,
        events,
        newest_is_first_event,
    })
}

fn dispatch(inner: &Shared, delivery: Option<Delivery>) {
    let Some(delivery) = delivery else { return };
    let behaviour = lock(&inner.behaviour).clone();
    if behaviour.drop_webhooks {
        return;
    }
    let events: Vec<WebhookEvent> = if behaviour.reorder_webhooks {
        // The first event is held back and sent, stale, after the next one.
        if delivery.newest_is_first_event {
            return;
        }
        delivery.events
    } else {
        delivery.events.into_iter().take(1).collect()
    };
    let copies = 1 + behaviour.duplicate_webhooks.min(10) as usize;
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut stop = inner.shutdown.clone();
        for event in events {
            for _ in 0..copies {
                tokio::select! {
                    _ = deliver(&inner, &delivery.url, &event, &behaviour) => {}
                    _ = stop.wait_for(|stopped| *stopped) => return,
                }
            }
        }
    });
}

async fn deliver(inner: &Inner, url: &str, event: &WebhookEvent, behaviour: &Behaviour) {
    if behaviour.webhook_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(
            behaviour.webhook_delay_ms.min(DELAY_MS_MAX),
        ))
        .await;
    }
    let body = serde_json::to_vec(event).unwrap_or_default();
    let attempts = behaviour.delivery_attempts.clamp(1, 20);
    for attempt in 1..=attempts {
        let header = signature::sign(&inner.config.webhook_secret, now_ms(), &body);
        let http = if behaviour.webhook_keep_alive {
            &inner.http_kept_alive
        } else {
            &inner.http
        };
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .header(signature::HEADER, header)
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                lock(&inner.stats).delivered += 1;
                return;
            }
            Ok(response) => {
                tracing::info!(event = %event.id, status = %response.status(), attempt, "webhook refused");
            }
            Err(error) => {
                tracing::info!(event = %event.id, %error, attempt, "webhook not delivered");
            }
        }
        lock(&inner.stats).failed_attempts += 1;
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
    lock(&inner.stats).abandoned += 1;
}

async fn fetch(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    match lock(&inner.book).payments.get(&id) {
        Some(entry) => (StatusCode::OK, Json(entry.object.clone())).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no payment {id}")),
    }
}

#[derive(serde::Deserialize)]
struct ListParams {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list(State(inner): State<Shared>, Query(params): Query<ListParams>) -> Response {
    let limit = params.limit.unwrap_or(100).clamp(1, PAGE_MAX);
    let book = lock(&inner.book);
    let range = match &params.after {
        Some(after) => book
            .payments
            .range::<String, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
        None => book.payments.range::<String, _>(..),
    };
    let mut items: Vec<PaymentObject> = range
        .take(limit + 1)
        .map(|(_, entry)| entry.object.clone())
        .collect();
    let next_after = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|p| p.id.clone())
    } else {
        None
    };
    Json(PaymentPage { items, next_after }).into_response()
}

/// Conflict: the payment is not in a state that allows the call; the body carries it.
fn conflict(message: String, object: PaymentObject) -> Response {
    let body = ErrorBody {
        error: message,
        payment: Some(object),
    };
    (StatusCode::CONFLICT, Json(body)).into_response()
}

async fn cancel(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    let (object, event) = {
        let mut book = lock(&inner.book);
        let Some(entry) = book.payments.get(&id) else {
            return error(StatusCode::NOT_FOUND, format!("no payment {id}"));
        };
        match entry.object.status.as_str() {
            "pending" => {}
            "canceled" => return (StatusCode::OK, Json(entry.object.clone())).into_response(),
            status => {
                return conflict(
                    format!("payment {id} is {status}; only a pending payment can be canceled"),
                    entry.object.clone(),
                )
            }
        }
        let event = change(
            &mut book,
            &id,
            "canceled",
            Some("canceled by the merchant".into()),
            None,
        );
        (book.payments[&id].object.clone(), event)
    };
    dispatch(&inner, event);
    (StatusCode::OK, Json(object)).into_response()
}

async fn refund(
    State(inner): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<CreateRefund>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(rejection) => return error(StatusCode::UNPROCESSABLE_ENTITY, rejection.body_text()),
    };
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(response) => return *response,
    };
    let fingerprint = body.amount_minor.to_string();
    let (object, event) = {
        let mut book = lock(&inner.book);
        let Some(entry) = book.payments.get(&id) else {
            return error(StatusCode::NOT_FOUND, format!("no payment {id}"));
        };
        let object = entry.object.clone();
        if let Some(known) = book.refund_keys.get(&(id.clone(), key.clone())) {
            if *known != fingerprint {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "this Idempotency-Key was used with another body",
                );
            }
            return (StatusCode::OK, Json(object)).into_response();
        }
        if object.status != "succeeded" {
            return conflict(
                format!(
                    "payment {id} is {}; only a succeeded payment can be refunded",
                    object.status
                ),
                object,
            );
        }
        if body.amount_minor == 0 || body.amount_minor > object.amount_minor {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("amount_minor must be 1..={}", object.amount_minor),
            );
        }
        book.refund_keys.insert((id.clone(), key), fingerprint);
        let event = change(&mut book, &id, "refunded", None, Some(body.amount_minor));
        (book.payments[&id].object.clone(), event)
    };
    tracing::info!(payment = %id, amount = body.amount_minor, "refunded");
    dispatch(&inner, event);
    (StatusCode::OK, Json(object)).into_response()
}

/// The page a customer is sent to (`payment_url`): the sandbox shows the status.
async fn pay_page(State(inner): State<Shared>, Path(id): Path<String>) -> Response {
    match lock(&inner.book).payments.get(&id) {
        Some(entry) => format!(
            "Sandbox payment {id}: {} {} minor units, {}\n",
            entry.object.currency, entry.object.amount_minor, entry.object.status
        )
        .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no payment {id}")),
    }
}

async fn get_behaviour(State(inner): State<Shared>) -> Json<Behaviour> {
    Json(lock(&inner.behaviour).clone())
}

async fn set_behaviour(
    State(inner): State<Shared>,
    body: Result<Json<Behaviour>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match body {
        Ok(Json(behaviour)) => {
            *lock(&inner.behaviour) = behaviour.clone();
            Json(behaviour).into_response()
        }
        Err(rejection) => error(StatusCode::UNPROCESSABLE_ENTITY, rejection.body_text()),
    }
}

async fn stats(State(inner): State<Shared>) -> Json<DeliveryStats> {
    Json(*lock(&inner.stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> CreatePayment {
        CreatePayment {
            amount_minor: 100,
            currency: "INR".into(),
            method: "sandbox-approve".into(),
            metadata: BTreeMap::new(),
            webhook_url: None,
        }
    }

    #[test]
    fn every_bound_of_a_create_is_enforced() {
        assert!(check_create(&body()).is_ok());
        let cases: Vec<CreatePayment> = vec![
            CreatePayment {
                amount_minor: 0,
                ..body()
            },
            CreatePayment {
                amount_minor: AMOUNT_MINOR_MAX + 1,
                ..body()
            },
            CreatePayment {
                currency: "inr".into(),
                ..body()
            },
            CreatePayment {
                metadata: (0..=METADATA_ENTRIES_MAX)
                    .map(|n| (n.to_string(), String::new()))
                    .collect(),
                ..body()
            },
            CreatePayment {
                metadata: BTreeMap::from([("k".into(), "v".repeat(TEXT_BYTES_MAX + 1))]),
                ..body()
            },
            CreatePayment {
                webhook_url: Some("ftp://example".into()),
                ..body()
            },
            CreatePayment {
                webhook_url: Some(format!("http://{}", "a".repeat(URL_BYTES_MAX))),
                ..body()
            },
        ];
        for case in cases {
            assert!(check_create(&case).is_err(), "{case:?}");
        }
    }

    #[test]
    fn methods_are_known_or_refused_by_name() {
        for fine in [
            "sandbox-approve",
            "sandbox-decline",
            "sandbox-timeout",
            "sandbox-delay-0",
            "sandbox-delay-600000",
        ] {
            assert!(validate_method(fine).is_ok(), "{fine}");
        }
        for bad in ["card", "sandbox-delay-600001", "sandbox-delay-x", ""] {
            let error = validate_method(bad).unwrap_err();
            assert!(error.contains("sandbox-approve"), "{error}");
        }
    }
}
