//! The notifications worker (the design's fan-out service): consumes city shards'
//! event streams and delivers booking confirmed, booking cancelled, refund issued and
//! lock about to expire to signed webhooks and to the user's email over SMTP.
//!
//! "Refund issued" means the money is on its way back: for a booking paid through the
//! payment saga it is sent when the gateway's refund is recorded (`PaymentChanged` to
//! refunded, once per payment, whether the refund followed a cancellation or a payment
//! that succeeded after its lock ended), not when the cancellation merely made it due.
//! Only a booking paid outside the saga (the node protocol's confirm, which has no
//! gateway) has its refund announced with its cancellation.
//!
//! Delivery is at least once, and each notification carries an id derived from its
//! event (`shard-index-seq-kind`, or `shard-lock-lock_expiring-expiry`), sent as
//! `Idempotency-Key` / `X-Notification-Id` to webhooks and as the email's `Message-ID`:
//! a receiver that keeps the ids it has seen sees each notification exactly once, even
//! when the worker crashes between delivering and recording that it did.
//!
//! The worker's position per shard is a durable cursor in the ledger (`global` shard,
//! `AdvanceCursor`), written after each page is delivered. The cursor also records
//! `replay_from`, the oldest lock the worker still watches, so that a restarted worker
//! re-reads from there to rebuild its reminders without delivering anything before the
//! cursor again. Failed deliveries are retried with exponential backoff and jitter;
//! after `attempts_max` they go to the dead-letter file (JSON lines) and the worker
//! moves on.

use crate::app::Shared;
use crate::events::{event_id, Position};
use crate::problem::Problem;
use crate::readmodel::now_ms;
use crate::views::{ext_id, rfc3339};
use hmac::{Hmac, Mac};
use raft_node::protocol::Consistency;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use state_machine::channels::Channels;
use state_machine::{
    BookingId, CommandKind, Event, EventRecord, PaymentStatus, Query, QueryResponse, UserId,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Events read per page.
const PAGE_EVENTS: usize = 100;
/// Locks watched for reminders per worker; the oldest are dropped beyond it.
const WATCHED_LOCKS_MAX: usize = 100_000;
/// Email addresses and channel choices remembered.
const EMAIL_CACHE_MAX: usize = 100_000;
/// How long a user's channel choice is used before it is read again.
const CHANNELS_TTL: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// HMAC-SHA256 key shared with the receiver.
    pub secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// The sender address, e.g. `tickets@bookings.example`.
    pub from: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// The consumer's name: its cursors in the ledger are kept under it.
    pub consumer: String,
    /// City shards to follow (default: every city of the api configuration).
    pub shards: Vec<String>,
    pub webhook: Option<WebhookConfig>,
    pub smtp: Option<SmtpConfig>,
    /// Delivery attempts per notification and channel before it is dead-lettered.
    pub attempts_max: u32,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// One delivery attempt's deadline.
    pub attempt_timeout_ms: u64,
    /// A reminder goes out this long before a pending lock expires.
    pub lock_reminder_lead_ms: u64,
    pub dead_letter_path: PathBuf,
    pub poll_interval_ms: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            consumer: "notifications".into(),
            shards: Vec::new(),
            webhook: None,
            smtp: None,
            attempts_max: 6,
            backoff_min_ms: 200,
            backoff_max_ms: 30_000,
            attempt_timeout_ms: 5_000,
            lock_reminder_lead_ms: 60_000,
            dead_letter_path: PathBuf::from("notifications-dead-letter.jsonl"),
            poll_interval_ms: 250,
        }
    }
}

impl NotifyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.consumer.is_empty() || self.consumer.len() > 100 {
            return Err("consumer: 1-100 characters".into());
        }
        if self.attempts_max == 0 || self.attempts_max > 100 {
            return Err("attempts_max: 1-100".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_min_ms > self.backoff_max_ms {
            return Err("backoff: 0 < backoff_min_ms <= backoff_max_ms".into());
        }
        if self.attempt_timeout_ms == 0 || self.poll_interval_ms == 0 {
            return Err("attempt_timeout_ms and poll_interval_ms must be positive".into());
        }
        if let Some(webhook) = &self.webhook {
            if !webhook.url.starts_with("http://") && !webhook.url.starts_with("https://") {
                return Err("webhook.url: an http(s) URL".into());
            }
            if webhook.secret.len() < 16 {
                return Err("webhook.secret: at least 16 characters".into());
            }
        }
        Ok(())
    }
}

/// `X-Signature: t=<unix ms>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn sign(secret: &[u8], timestamp_ms: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp_ms},v1={hex}")
}

/// A receiver's check of `X-Signature` (constant-time compare of the MAC).
pub fn verify(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => signature = Some(value),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return false;
    };
    let Some(bytes) = (0..signature.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(signature.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// One notification to deliver.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    pub id: String,
    pub kind: &'static str,
    pub user_id: u64,
    pub shard: String,
    pub body: Value,
}

/// The notifications an event causes. `paid_through_saga` matters only for a
/// cancellation with a refund due: whether the booking has a saga payment, whose
/// refund is announced when the gateway's refund is recorded instead.
pub fn notifications_of(
    shard: &str,
    record: &EventRecord,
    paid_through_saga: bool,
) -> Vec<Notification> {
    let make = |kind: &'static str, user: UserId, body: Value| Notification {
        id: format!("{shard}-{}-{kind}", event_id(record.index, record.seq)),
        kind,
        user_id: user.0,
        shard: shard.to_owned(),
        body,
    };
    let seats =
        |seats: &[state_machine::SeatId]| json!(seats.iter().map(|s| s.0).collect::<Vec<_>>());
    match &record.event {
        Event::BookingConfirmed {
            show,
            booking,
            user,
            seats: list,
            total_price_minor,
        } => vec![make(
            "booking_confirmed",
            *user,
            json!({ "booking_id": ext_id(shard, booking.0), "show_id": ext_id(shard, show.0),
                    "seats": seats(list), "total_price_minor": total_price_minor }),
        )],
        Event::BookingCancelled {
            show,
            booking,
            user,
            seats: list,
            refund_due_minor,
        } => {
            let body = json!({ "booking_id": ext_id(shard, booking.0),
                               "show_id": ext_id(shard, show.0), "seats": seats(list),
                               "refund_minor": refund_due_minor });
            let mut all = vec![make("booking_cancelled", *user, body.clone())];
            if *refund_due_minor > 0 && !paid_through_saga {
                all.push(make("refund_issued", *user, body));
            }
            all
        }
        // The gateway's refund is recorded: the payment reaches refunded only once.
        Event::PaymentChanged {
            show,
            booking,
            user,
            status: PaymentStatus::Refunded,
            refund_minor,
        } if *refund_minor > 0 => vec![make(
            "refund_issued",
            *user,
            json!({ "booking_id": ext_id(shard, booking.0), "show_id": ext_id(shard, show.0),
                    "refund_minor": refund_minor, "payment_status": "refunded" }),
        )],
        _ => Vec::new(),
    }
}

/// A pending lock the worker watches for its reminder.
#[derive(Clone, Debug)]
struct Watched {
    user: UserId,
    show: u64,
    expires_at: u64,
    reminded: bool,
}

pub struct Worker {
    state: Shared,
    config: NotifyConfig,
    shards: Vec<String>,
    http: reqwest::Client,
    smtp: Option<lettre::AsyncSmtpTransport<lettre::Tokio1Executor>>,
    /// Next event to process per shard.
    positions: BTreeMap<String, Position>,
    /// `(shard, lock number)` -> pending lock.
    watched: BTreeMap<(String, u64), Watched>,
    emails: BTreeMap<UserId, Option<String>>,
    /// Users' channels as last read, and when.
    channels: BTreeMap<UserId, (std::time::Instant, Option<Channels>)>,
}

impl Worker {
    pub fn new(state: Shared, config: NotifyConfig) -> Result<Worker, String> {
        config.validate()?;
        let shards = if config.shards.is_empty() {
            state
                .config
                .cities
                .iter()
                .map(|c| c.shard.clone())
                .collect()
        } else {
            config.shards.clone()
        };
        let smtp = config.smtp.as_ref().map(|smtp| {
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous(&smtp.host)
                .port(smtp.port)
                .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
                    "seat-ledger".into(),
                ))
                .timeout(Some(Duration::from_millis(config.attempt_timeout_ms)))
                .build()
        });
        Ok(Worker {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))?,
            state,
            config,
            shards,
            smtp,
            positions: BTreeMap::new(),
            watched: BTreeMap::new(),
            emails: BTreeMap::new(),
            channels: BTreeMap::new(),
        })
    }

    /// Runs until `shutdown` completes: resume from the durable cursors, then follow.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), String> {
        tokio::pin!(shutdown);
        loop {
            let resumed = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                resumed = self.resume() => resumed,
            };
            match resumed {
                Ok(()) => break,
                Err(problem) => {
                    tracing::warn!(
                        detail = problem.detail,
                        "notifications: cannot read cursors yet"
                    );
                    tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)).await;
                }
            }
        }
        loop {
            let worked = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                worked = self.round() => worked,
            };
            if !worked {
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)) => {}
                }
            }
        }
    }

    /// Reads the durable cursors and replays (without delivering) what rebuilds the
    /// watched locks.
    async fn resume(&mut self) -> Result<(), Problem> {
        let global = self.state.config.global_shard.clone();
        for shard in self.shards.clone() {
            let query = Query::ConsumerCursor {
                consumer: self.config.consumer.clone(),
                stream: shard.clone(),
            };
            let (response, _) = self
                .state
                .read(&global, query, Consistency::Linearizable, None)
                .await?;
            let QueryResponse::ConsumerCursor(cursor) = response else {
                return Err(Problem::unavailable("unexpected answer reading a cursor"));
            };
            let Some(cursor) = cursor else {
                self.positions.insert(shard, Position { index: 0, seq: 0 });
                continue;
            };
            let until = Position {
                index: cursor.index,
                seq: cursor.seq,
            };
            let mut at = Position {
                index: cursor.replay_from,
                seq: 0,
            };
            while at < until {
                let reply = self.fetch(&shard, at).await?;
                let Some(last) = reply.last() else { break };
                for record in reply.iter().filter(|r| {
                    Position {
                        index: r.index,
                        seq: r.seq,
                    } < until
                }) {
                    self.watch(&shard, record);
                }
                at = Position::after(last.index, last.seq);
            }
            self.positions.insert(shard, until);
        }
        Ok(())
    }

    async fn fetch(&self, shard: &str, at: Position) -> Result<Vec<EventRecord>, Problem> {
        let reply = self
            .state
            .cluster
            .events(
                shard,
                at.index,
                at.seq,
                PAGE_EVENTS,
                self.state.read_preference(),
                self.state.timeout(),
            )
            .await
            .map_err(|error| Problem::unavailable(error.to_string()))?;
        if at.index > 0 && at.index < reply.kept_from {
            // Events were dropped before this worker read them: say so loudly, go on.
            tracing::error!(
                shard,
                from = at.index,
                kept_from = reply.kept_from,
                "notifications: behind the retention window, some notifications were lost"
            );
            metrics::counter!("seat_ledger_notify_lost_windows_total").increment(1);
        }
        Ok(reply.events)
    }

    /// Tracks pending locks for reminders.
    fn watch(&mut self, shard: &str, record: &EventRecord) {
        match &record.event {
            Event::SeatsLocked {
                show,
                lock,
                user,
                expires_at,
                ..
            } => {
                if self.watched.len() >= WATCHED_LOCKS_MAX {
                    self.watched.pop_first();
                }
                self.watched.insert(
                    (shard.to_owned(), lock.0),
                    Watched {
                        user: *user,
                        show: show.0,
                        expires_at: *expires_at,
                        reminded: false,
                    },
                );
            }
            Event::LockExtended {
                lock, expires_at, ..
            } => {
                if let Some(watched) = self.watched.get_mut(&(shard.to_owned(), lock.0)) {
                    watched.expires_at = *expires_at;
                    watched.reminded = false;
                }
            }
            Event::LockReleased { lock, .. } | Event::LockExpired { lock, .. } => {
                self.watched.remove(&(shard.to_owned(), lock.0));
            }
            Event::BookingConfirmed { booking, .. } | Event::BookingCancelled { booking, .. } => {
                self.watched.remove(&(shard.to_owned(), booking.lock().0));
            }
            _ => {}
        }
    }

    /// One pass over every shard and the reminders; `true` when anything happened.
    async fn round(&mut self) -> bool {
        let mut worked = false;
        for shard in self.shards.clone() {
            match self.shard_page(&shard).await {
                Ok(progress) => worked |= progress,
                Err(problem) => {
                    tracing::warn!(shard, detail = problem.detail, "notifications: page failed");
                }
            }
        }
        worked | self.reminders().await
    }

    async fn shard_page(&mut self, shard: &str) -> Result<bool, Problem> {
        let at = self
            .positions
            .get(shard)
            .copied()
            .unwrap_or(Position { index: 0, seq: 0 });
        let page = self.fetch(shard, at).await?;
        let Some(last) = page.last() else {
            return Ok(false);
        };
        let next = Position::after(last.index, last.seq);
        for record in &page {
            self.watch(shard, record);
            let paid_through_saga = match &record.event {
                Event::BookingCancelled {
                    booking,
                    refund_due_minor,
                    ..
                } if *refund_due_minor > 0 => {
                    self.paid_through_saga(shard, *booking, record.index)
                        .await?
                }
                _ => false,
            };
            for notification in notifications_of(shard, record, paid_through_saga) {
                self.deliver(&notification).await;
            }
        }
        // Every event of the page is delivered (or dead-lettered): record it.
        let replay_from = self
            .watched
            .keys()
            .filter(|(s, _)| s == shard)
            .map(|(_, lock)| *lock)
            .min()
            .unwrap_or(next.index)
            .min(next.index);
        let command = CommandKind::AdvanceCursor {
            consumer: self.config.consumer.clone(),
            stream: shard.to_owned(),
            index: next.index,
            seq: next.seq,
            replay_from,
        };
        let request = format!(
            "notify:{}:{shard}:{}:{replay_from}",
            self.config.consumer,
            next.cursor()
        );
        let global = self.state.config.global_shard.clone();
        match self.state.write(&global, &request, command).await {
            Ok(_) => {
                self.positions.insert(shard.to_owned(), next);
                Ok(true)
            }
            // Another worker of the same consumer is further on: follow it rather than
            // delivering this stretch again and again.
            Err(problem) if problem.extra.get("field").is_some_and(|f| f == "index") => {
                tracing::warn!(shard, "notifications: another worker moved the cursor on");
                self.jump_to_ledger_cursor(shard).await?;
                Ok(true)
            }
            Err(problem) => Err(problem),
        }
    }

    /// Whether `booking` has a saga payment, read from a replica that has applied
    /// the event at `index` (payments are never removed; an unknown booking has none).
    /// A failed read fails the page, which is retried from its start.
    async fn paid_through_saga(
        &self,
        shard: &str,
        booking: BookingId,
        index: u64,
    ) -> Result<bool, Problem> {
        match crate::saga::read_payment(
            &self.state,
            shard,
            booking,
            Consistency::Session,
            Some(index),
        )
        .await
        {
            Ok((_, payment, _)) => Ok(payment.is_some()),
            Err(problem) if problem.status == axum::http::StatusCode::NOT_FOUND => Ok(false),
            Err(problem) => Err(problem),
        }
    }

    async fn jump_to_ledger_cursor(&mut self, shard: &str) -> Result<(), Problem> {
        let global = self.state.config.global_shard.clone();
        let query = Query::ConsumerCursor {
            consumer: self.config.consumer.clone(),
            stream: shard.to_owned(),
        };
        let (response, _) = self
            .state
            .read(&global, query, Consistency::Linearizable, None)
            .await?;
        if let QueryResponse::ConsumerCursor(Some(cursor)) = response {
            self.positions.insert(
                shard.to_owned(),
                Position {
                    index: cursor.index,
                    seq: cursor.seq,
                },
            );
        }
        Ok(())
    }

    async fn reminders(&mut self) -> bool {
        let now = now_ms();
        let lead = self.config.lock_reminder_lead_ms;
        let due: Vec<((String, u64), Watched)> = self
            .watched
            .iter()
            .filter(|(_, w)| {
                !w.reminded && w.expires_at.saturating_sub(lead) <= now && w.expires_at > now
            })
            .map(|(key, w)| (key.clone(), w.clone()))
            .collect();
        for ((shard, lock), watched) in &due {
            let notification = Notification {
                id: format!("{shard}-{lock}-lock_expiring-{}", watched.expires_at),
                kind: "lock_expiring",
                user_id: watched.user.0,
                shard: shard.clone(),
                body: json!({
                    "lock_id": ext_id(shard, *lock),
                    "booking_id": ext_id(shard, BookingId(*lock).0),
                    "show_id": ext_id(shard, watched.show),
                    "expires_at": rfc3339(watched.expires_at),
                }),
            };
            self.deliver(&notification).await;
            if let Some(entry) = self.watched.get_mut(&(shard.clone(), *lock)) {
                entry.reminded = true;
            }
        }
        !due.is_empty()
    }

    /// Delivers on every configured channel, retrying each with backoff; a channel
    /// that keeps failing dead-letters the notification.
    async fn deliver(&mut self, notification: &Notification) {
        if self.config.webhook.is_some() {
            self.with_retries("webhook", notification).await;
        }
        let channels = self.channels_of(UserId(notification.user_id)).await;
        if channels.as_ref().is_some_and(|c| c.webhook_url.is_some()) {
            self.with_retries("user_webhook", notification).await;
        }
        // Unknown channels (the global shard did not answer) fall back to the default.
        let email = channels.is_none_or(|c| c.email);
        if self.smtp.is_some() && email {
            self.with_retries("email", notification).await;
        }
    }

    /// The user's channels (cached for `CHANNELS_TTL`); `None` when unknown.
    async fn channels_of(&mut self, user: UserId) -> Option<Channels> {
        if let Some((at, known)) = self.channels.get(&user) {
            if at.elapsed() < CHANNELS_TTL {
                return known.clone();
            }
        }
        let global = self.state.config.global_shard.clone();
        let query = Query::NotificationChannels { user };
        let known = match self
            .state
            .read(&global, query, Consistency::Stale, None)
            .await
        {
            Ok((QueryResponse::NotificationChannels(channels), _)) => Some(channels),
            // No account: only the operator's webhook hears of it.
            Err(problem) if problem.status == axum::http::StatusCode::NOT_FOUND => Some(Channels {
                email: false,
                ..Channels::default()
            }),
            _ => None,
        };
        if self.channels.len() >= EMAIL_CACHE_MAX {
            self.channels.pop_first();
        }
        self.channels
            .insert(user, (std::time::Instant::now(), known.clone()));
        known
    }

    async fn with_retries(&mut self, channel: &'static str, notification: &Notification) {
        let mut last_error = String::new();
        for attempt in 0..self.config.attempts_max {
            let result = match channel {
                "webhook" => match &self.config.webhook {
                    Some(webhook) => {
                        let (url, secret) = (webhook.url.clone(), webhook.secret.clone());
                        self.webhook(&url, &secret, notification).await
                    }
                    None => Ok(()),
                },
                "user_webhook" => {
                    let channels = self.channels_of(UserId(notification.user_id)).await;
                    match channels.and_then(|c| Some((c.webhook_url?, c.webhook_secret?))) {
                        Some((url, secret)) => self.webhook(&url, &secret, notification).await,
                        None => Ok(()),
                    }
                }
                _ => self.email(notification).await,
            };
            match result {
                Ok(()) => {
                    metrics::counter!("seat_ledger_notify_delivered_total", "channel" => channel, "kind" => notification.kind).increment(1);
                    return;
                }
                Err(error) => {
                    metrics::counter!("seat_ledger_notify_failed_attempts_total", "channel" => channel).increment(1);
                    tracing::info!(
                        id = notification.id,
                        channel,
                        attempt,
                        error,
                        "notification attempt failed"
                    );
                    last_error = error;
                }
            }
            if attempt + 1 < self.config.attempts_max {
                let base = self
                    .config
                    .backoff_min_ms
                    .saturating_mul(1 << attempt.min(20))
                    .min(self.config.backoff_max_ms);
                let jittered = base / 2 + fastrand::u64(0..=base / 2);
                tokio::time::sleep(Duration::from_millis(jittered)).await;
            }
        }
        self.dead_letter(channel, notification, &last_error);
    }

    async fn webhook(
        &self,
        url: &str,
        secret: &str,
        notification: &Notification,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(&json!({
            "id": notification.id,
            "kind": notification.kind,
            "user_id": notification.user_id,
            "shard": notification.shard,
            "data": notification.body,
        }))
        .map_err(|e| e.to_string())?;
        let signature = sign(secret.as_bytes(), now_ms(), &body);
        let response = self
            .http
            .post(url)
            .timeout(Duration::from_millis(self.config.attempt_timeout_ms))
            .header("content-type", "application/json")
            .header("x-notification-id", &notification.id)
            .header("idempotency-key", &notification.id)
            .header("x-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("webhook answered {}", response.status()))
        }
    }

    async fn email_of(&mut self, user: UserId) -> Result<Option<String>, String> {
        if let Some(known) = self.emails.get(&user) {
            return Ok(known.clone());
        }
        let global = self.state.config.global_shard.clone();
        let address = match self
            .state
            .read(&global, Query::User { user }, Consistency::Stale, None)
            .await
        {
            Ok((QueryResponse::User(account), _)) => Some(account.email),
            Ok(_) => None,
            Err(problem) if problem.status == axum::http::StatusCode::NOT_FOUND => None,
            Err(problem) => return Err(problem.detail),
        };
        if self.emails.len() >= EMAIL_CACHE_MAX {
            self.emails.pop_first();
        }
        self.emails.insert(user, address.clone());
        Ok(address)
    }

    async fn email(&mut self, notification: &Notification) -> Result<(), String> {
        let (Some(smtp), Some(transport)) = (self.config.smtp.clone(), self.smtp.clone()) else {
            return Ok(());
        };
        let Some(address) = self.email_of(UserId(notification.user_id)).await? else {
            // No account with an address: nothing to send on this channel.
            return Ok(());
        };
        use lettre::AsyncTransport;
        let subject = match notification.kind {
            "booking_confirmed" => "Your booking is confirmed",
            "booking_cancelled" => "Your booking is cancelled",
            "refund_issued" => "Your refund is on its way",
            _ => "Your seats are about to be released",
        };
        let text = format!(
            "{subject}.\n\n{}\n\nNotification {}\n",
            serde_json::to_string_pretty(&notification.body).unwrap_or_default(),
            notification.id
        );
        let message = lettre::Message::builder()
            .from(
                smtp.from
                    .parse()
                    .map_err(|e| format!("from address: {e}"))?,
            )
            .to(address
                .parse()
                .map_err(|e| format!("address {address}: {e}"))?)
            .subject(subject)
            .message_id(Some(format!("<{}@seat-ledger>", notification.id)))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| e.to_string())?;
        transport.send(message).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    fn dead_letter(&self, channel: &str, notification: &Notification, error: &str) {
        metrics::counter!("seat_ledger_notify_dead_lettered_total", "channel" => channel.to_owned()).increment(1);
        tracing::error!(
            id = notification.id,
            channel,
            error,
            "notification dead-lettered"
        );
        let line = json!({
            "id": notification.id,
            "channel": channel,
            "kind": notification.kind,
            "user_id": notification.user_id,
            "shard": notification.shard,
            "data": notification.body,
            "error": error,
            "attempts": self.config.attempts_max,
            "at": rfc3339(now_ms()),
        });
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.config.dead_letter_path)
            .and_then(|mut file| {
                writeln!(file, "{line}")?;
                file.sync_data()
            });
        if let Err(error) = written {
            tracing::error!(%error, path = %self.config.dead_letter_path.display(),
                "cannot write the dead-letter file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let header = sign(b"0123456789abcdef", 1_700_000_000_000, b"{\"id\":1}");
        assert!(verify(b"0123456789abcdef", &header, b"{\"id\":1}"));
        assert!(!verify(b"0123456789abcdef", &header, b"{\"id\":2}"));
        assert!(!verify(b"another secret!!", &header, b"{\"id\":1}"));
        assert!(!verify(b"0123456789abcdef", "t=1,v1=zz", b"{\"id\":1}"));
        assert!(!verify(b"0123456789abcdef", "garbage", b""));
    }

    #[test]
    fn events_map_to_notifications_with_stable_ids() {
        let record = EventRecord {
            index: 12,
            seq: 1,
            at_ms: 5,
            event: Event::BookingCancelled {
                show: state_machine::ShowId(3),
                booking: BookingId(9),
                user: UserId(4),
                seats: vec![state_machine::SeatId(1)],
                refund_due_minor: 500,
            },
        };
        // Paid outside the saga: the cancellation is the refund's only record.
        let all = notifications_of("mumbai", &record, false);
        let ids: Vec<&str> = all.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            ["mumbai-12-1-booking_cancelled", "mumbai-12-1-refund_issued"]
        );
        assert_eq!(notifications_of("mumbai", &record, false)[1].id, all[1].id);
        // Paid through the saga: the refund waits for the gateway's.
        let kinds: Vec<&str> = notifications_of("mumbai", &record, true)
            .iter()
            .map(|n| n.kind)
            .collect();
        assert_eq!(kinds, ["booking_cancelled"]);
        let payment = |status, refund_minor| EventRecord {
            index: 14,
            seq: 0,
            at_ms: 6,
            event: Event::PaymentChanged {
                show: state_machine::ShowId(3),
                booking: BookingId(9),
                user: UserId(4),
                status,
                refund_minor,
            },
        };
        for status in [PaymentStatus::RefundDue, PaymentStatus::Captured] {
            assert!(notifications_of("mumbai", &payment(status, 500), true).is_empty());
        }
        let refunded = notifications_of("mumbai", &payment(PaymentStatus::Refunded, 500), false);
        assert_eq!(refunded.len(), 1);
        assert_eq!(
            (
                refunded[0].id.as_str(),
                refunded[0].kind,
                refunded[0].user_id
            ),
            ("mumbai-14-0-refund_issued", "refund_issued", 4)
        );
        assert_eq!(refunded[0].body["refund_minor"], 500);
        assert_eq!(refunded[0].body["booking_id"], "mumbai-9");
        let config = NotifyConfig {
            attempts_max: 0,
            ..NotifyConfig::default()
        };
        assert!(
            config.validate().is_err(),
            "a worker that never tries is refused"
        );
    }
}

/// Body of `POST /api/v1/users/{userId}/notification-channels`.
#[derive(Debug, Deserialize, Serialize)]
pub struct ChannelsBody {
    /// Where to POST this user's notifications; `null` for none.
    pub webhook_url: Option<String>,
    /// Whether to email the account's address.
    #[serde(default = "yes")]
    pub email: bool,
}

fn yes() -> bool {
    true
}

/// `GET /api/v1/users/{userId}/notification-channels` (self or admin).
pub async fn get_channels(
    axum::extract::State(state): axum::extract::State<Shared>,
    caller: crate::app::AuthUser,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    let user = caller.own_or_admin(&id)?;
    let global = state.config.global_shard.clone();
    let query = Query::NotificationChannels { user };
    let (response, meta) = state
        .read(&global, query, Consistency::Linearizable, None)
        .await?;
    let QueryResponse::NotificationChannels(channels) = response else {
        return Err(Problem::unavailable(
            "unexpected answer from the global shard",
        ));
    };
    let body = json!({
        "user_id": user.0,
        "webhook_url": channels.webhook_url,
        "webhook_signed": channels.webhook_secret.is_some(),
        "email": channels.email,
    });
    Ok((meta.headers(), axum::Json(body)).into_response())
}

/// `POST /api/v1/users/{userId}/notification-channels`: sets the user's webhook and
/// email choice. A new webhook gets a fresh signing secret, returned once.
pub async fn set_channels(
    axum::extract::State(state): axum::extract::State<Shared>,
    caller: crate::app::AuthUser,
    headers: axum::http::HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
    crate::app::Body(body): crate::app::Body<ChannelsBody>,
) -> Result<axum::response::Response, Problem> {
    use axum::response::IntoResponse;
    let user = caller.own_or_admin(&id)?;
    let secret = body
        .webhook_url
        .as_ref()
        .map(|_| crate::auth::new_refresh_token().0);
    let command = CommandKind::SetNotificationChannels {
        user,
        webhook_url: body.webhook_url.clone(),
        webhook_secret: secret.clone(),
        email: body.email,
    };
    let global = state.config.global_shard.clone();
    let written = state
        .write(&global, &caller.request_id(&headers)?, command)
        .await?;
    let mut answer = json!({
        "user_id": user.0,
        "webhook_url": body.webhook_url,
        "webhook_signed": secret.is_some(),
        "email": body.email,
    });
    if let Some(secret) = secret {
        // Shown once: deliveries carry X-Signature, HMAC-SHA256 with it (see `verify`).
        answer["webhook_secret"] = json!(secret);
    }
    Ok((
        axum::http::StatusCode::OK,
        written.headers(),
        axum::Json(answer),
    )
        .into_response())
}
