//! What the clients do, through the REST contract only, and how each answer becomes a
//! history line.
//!
//! - `register`: one show of four seats, each seat used as a register: single-seat locks
//!   (10 s TTL), releases of the client's own locks, and linearizable seat-map reads.
//!   High contention, for the linearizability checker.
//! - `bookings`: two shows of 48 seats: locks of one or two seats with TTLs of 10 to
//!   15 s, confirms (sandbox payments that approve), releases, linearizable and session
//!   seat-map reads, and linearizable seat counts.
//! - `expiry`: one show of 16 seats, locks of 1 or 2 s, and confirms sent within
//!   +-400 ms of the lock's expiry, so that confirms race the expiry on log time.
//! - `saga`: two shows of 48 seats, locks of 2 or 3 s, and payments through the sandbox
//!   gateway with every outcome: approve, decline, never answer, and approve after
//!   0.3, 1.5 or 4 s (past the lock: refunded). A payment is followed to its end
//!   (bounded). A payment meant to succeed is a `confirm`; a declined one is a
//!   `release` (the saga releases the lock at once). The runner then waits for the saga
//!   to settle and the `saga` checker holds the ledger against the gateway's books.
//!
//! At-least-once delivery: one write in four is sent twice with the same
//! `Idempotency-Key` (as a client that lost the first answer would), and the second
//! answer is the one recorded. The api promises the same answer for the same key; if it
//! gave a different one, the checkers see an operation whose recorded outcome
//! contradicts its effect.
//!
//! An answer is `ok` on 2xx, `fail` on 4xx (a definite rejection: nothing happened),
//! and `info` on 5xx, a timeout, a lost connection or an answer that cannot be read:
//! the operation may or may not have happened. After an `info` the client continues as
//! a new process, as Jepsen's clients do.

use crate::history::{
    wall_ms, CountsValue, LockRefValue, LockValue, OpType, Process, ReadConsistency, ReadValue,
    Recorder, SeatStatus, F,
};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which workload the clients run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Register,
    Bookings,
    Expiry,
    Saga,
}

impl Workload {
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Bookings => "bookings",
            Workload::Expiry => "expiry",
            Workload::Saga => "saga",
        }
    }

    /// Shows, rows per screen and seats per row.
    pub fn layout(self) -> (usize, u16, u16) {
        match self {
            Workload::Register => (1, 1, 4),
            Workload::Bookings => (2, 3, 16),
            Workload::Expiry => (1, 2, 8),
            Workload::Saga => (2, 3, 16),
        }
    }
}

/// The ledger refuses TTLs under 10 s; short locks make expiry happen within a run.
const LOCK_TTLS_MS: [u64; 3] = [10_000, 12_000, 15_000];
/// Lock TTLs of the expiry workload (the runner's cluster allows 1 s locks).
const SHORT_TTLS_MS: [u64; 2] = [1_000, 2_000];
/// How far from a lock's expiry the expiry workload sends its confirm.
const EXPIRY_RACE_MS: i64 = 400;
/// One write in this many is sent twice with the same idempotency key.
const DUPLICATE_ONE_IN: u32 = 4;
/// Locks a client keeps at once; with two seats each this stays under the ledger's
/// per-user cap of ten seats for most of a run.
const HELD_LOCKS_MAX: usize = 4;
/// The sandbox payment method that approves at once.
const APPROVE: &str = "sandbox-approve";
/// Lock TTLs of the saga workload: short, so timeouts and late successes happen.
const SAGA_TTLS_MS: [u64; 2] = [2_000, 3_000];
/// Payment methods of the saga workload, by weight; `true` when meant to succeed.
const SAGA_METHODS: [(&str, u32, bool); 6] = [
    ("sandbox-approve", 40, true),
    ("sandbox-decline", 20, false),
    ("sandbox-timeout", 10, true),
    ("sandbox-delay-300", 10, true),
    ("sandbox-delay-1500", 10, true),
    ("sandbox-delay-4000", 10, true),
];
/// How long a client follows a pending payment before it records the outcome unknown.
const PAYMENT_FOLLOW_MS: u64 = 15_000;

/// A show the clients use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowInfo {
    /// External id, e.g. `mumbai-42`.
    pub id: String,
    pub capacity: u32,
}

/// How one client reaches the api.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub keys: api::auth::Keys,
}

/// An answer, classified.
#[derive(Debug)]
pub enum Answer {
    Ok {
        body: Value,
        headers: HeaderMap,
    },
    /// A definite rejection; `reason` is the problem type (`seats-taken`, ...).
    Fail {
        reason: String,
        body: Value,
    },
    /// Unknown outcome.
    Info {
        error: String,
    },
}

impl Api {
    /// An access token for a user id (city shards need only the id).
    pub fn token(&self, user: u64, role: state_machine::Role) -> Result<String, String> {
        self.keys
            .issue_access(state_machine::UserId(user), role, api::auth::now_s())
            .map_err(|problem| problem.detail)
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "POST" => self.http.post(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Answer::Info {
                    error: error_chain(&error),
                }
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => {
                return Answer::Info {
                    error: error_chain(&error),
                }
            }
        };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Answer::Ok { body, headers }
        } else if status.is_client_error() {
            let reason = body["type"]
                .as_str()
                .and_then(|t| t.rsplit('/').next())
                .map_or_else(|| format!("http-{}", status.as_u16()), str::to_owned);
            Answer::Fail { reason, body }
        } else {
            let detail = body["detail"].as_str().unwrap_or_default();
            Answer::Info {
                error: format!("HTTP {}: {detail}", status.as_u16()),
            }
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

fn served(headers: &HeaderMap) -> Option<ReadConsistency> {
    match headers.get("x-read-consistency")?.to_str().ok()? {
        "linearizable" => Some(ReadConsistency::Linearizable),
        "session" => Some(ReadConsistency::Session),
        "stale" => Some(ReadConsistency::Stale),
        _ => None,
    }
}

/// A lock this client holds (or held: it may have expired).
#[derive(Clone, Debug)]
struct Held {
    show: String,
    lock: String,
    booking: String,
    seats: Vec<u32>,
    expires_at_ms: u64,
}

/// What a client decided to do next.
enum Plan {
    Lock {
        show: String,
        seats: Vec<u32>,
        ttl_ms: u64,
    },
    Confirm(Held),
    /// Confirm at this wall-clock time (ms), racing the lock's expiry.
    ConfirmAt(Held, u64),
    Release(Held),
    /// Pay with a sandbox method (saga workload).
    Pay(Held, &'static str, bool),
    Read {
        show: String,
        consistency: ReadConsistency,
    },
    Counts {
        show: String,
        capacity: u32,
    },
}

/// Bounds shared by every client of a run.
pub struct Limits {
    pub deadline: Instant,
    /// Operations the whole run may start.
    pub ops_max: u64,
    pub started: AtomicU64,
    /// Mean pause between one client's operations.
    pub pause_mean: Duration,
}

/// One client: a slot that runs as process `slot`, then `slot + clients`, ... after
/// each `info`.
pub struct Client {
    slot: u64,
    clients: u64,
    process: u64,
    workload: Workload,
    shows: Vec<ShowInfo>,
    rng: fastrand::Rng,
    api: Api,
    recorder: Arc<Recorder>,
    /// Users this client has acted as: the final bookings read covers them all.
    pub users: Vec<u64>,
    token: String,
    held: VecDeque<Held>,
    /// `X-Index` of this process's last acknowledged write, for session reads.
    last_index: Option<u64>,
    /// Idempotency keys: unique per operation of the run.
    next_key: u64,
    seed: u64,
}

impl Client {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        slot: u64,
        clients: u64,
        seed: u64,
        workload: Workload,
        shows: Vec<ShowInfo>,
        api: Api,
        recorder: Arc<Recorder>,
    ) -> Result<Client, String> {
        let mut client = Client {
            slot,
            clients,
            process: slot,
            workload,
            shows,
            // Each client draws from its own stream so that the plan of one does not
            // depend on how fast the others run.
            rng: fastrand::Rng::with_seed(seed ^ (slot + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            api,
            recorder,
            users: Vec::new(),
            token: String::new(),
            held: VecDeque::new(),
            last_index: None,
            next_key: 0,
            seed,
        };
        client.next_user()?;
        Ok(client)
    }

    /// Moves to a fresh user id (at start, and when the per-user seat cap is reached).
    fn next_user(&mut self) -> Result<(), String> {
        let user = 10_000 + self.slot * 1_000 + self.users.len() as u64;
        self.token = self.api.token(user, state_machine::Role::Customer)?;
        self.users.push(user);
        self.held.clear();
        Ok(())
    }

    fn user(&self) -> u64 {
        self.users.last().copied().unwrap_or_default()
    }

    /// Runs until the deadline or the run's operation budget.
    pub async fn run(mut self, limits: Arc<Limits>) -> Result<Client, String> {
        while Instant::now() < limits.deadline {
            if limits.started.fetch_add(1, Ordering::Relaxed) >= limits.ops_max {
                break;
            }
            let plan = self.plan();
            self.perform(plan).await?;
            let mean_ms = limits.pause_mean.as_millis() as u64;
            let pause = Duration::from_millis(self.rng.u64(0..=mean_ms.saturating_mul(2)));
            let left = limits.deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(pause.min(left)).await;
        }
        Ok(self)
    }

    fn plan(&mut self) -> Plan {
        // Locks long past their expiry are of no more use, even to test refusals.
        let now = wall_ms();
        self.held.retain(|h| h.expires_at_ms + 3_000 > now);
        let show = self.shows[self.rng.usize(0..self.shows.len())].clone();
        let roll = self.rng.u32(0..100);
        let full = self.held.len() >= HELD_LOCKS_MAX;
        match self.workload {
            Workload::Register => match roll {
                0..35 => self.read(&show, ReadConsistency::Linearizable),
                35..70 if !full => self.lock(&show, 1, LOCK_TTLS_MS[0]),
                _ => match self.held.pop_front() {
                    Some(held) => Plan::Release(held),
                    None => self.lock(&show, 1, LOCK_TTLS_MS[0]),
                },
            },
            Workload::Bookings => match roll {
                0..20 if !full => {
                    let seats = if self.rng.u32(0..5) == 0 { 2 } else { 1 };
                    let ttl = LOCK_TTLS_MS[self.rng.usize(0..LOCK_TTLS_MS.len())];
                    self.lock(&show, seats, ttl)
                }
                0..32 => match self.take_held() {
                    Some(held) => Plan::Confirm(held),
                    None => self.lock(&show, 1, LOCK_TTLS_MS[0]),
                },
                32..44 => match self.take_held() {
                    Some(held) => Plan::Release(held),
                    None => self.lock(&show, 1, LOCK_TTLS_MS[0]),
                },
                44..70 => self.read(&show, ReadConsistency::Linearizable),
                70..85 if self.last_index.is_some() => self.read(&show, ReadConsistency::Session),
                70..85 => self.read(&show, ReadConsistency::Linearizable),
                _ => Plan::Counts {
                    show: show.id.clone(),
                    capacity: show.capacity,
                },
            },
            Workload::Expiry => match roll {
                0..40 if !full => {
                    let ttl = SHORT_TTLS_MS[self.rng.usize(0..SHORT_TTLS_MS.len())];
                    self.lock(&show, 1, ttl)
                }
                0..75 => match self.take_held() {
                    Some(held) => {
                        let jitter = self.rng.i64(-EXPIRY_RACE_MS..=EXPIRY_RACE_MS);
                        let at = held.expires_at_ms.saturating_add_signed(jitter);
                        Plan::ConfirmAt(held, at)
                    }
                    None => self.lock(&show, 1, SHORT_TTLS_MS[0]),
                },
                _ => self.read(&show, ReadConsistency::Linearizable),
            },
            Workload::Saga => match roll {
                0..45 if !full => {
                    let ttl = SAGA_TTLS_MS[self.rng.usize(0..SAGA_TTLS_MS.len())];
                    self.lock(&show, 1, ttl)
                }
                0..85 => match self.take_held() {
                    Some(held) => {
                        let mut pick = self.rng.u32(0..100);
                        let mut chosen = SAGA_METHODS[0];
                        for method in SAGA_METHODS {
                            if pick < method.1 {
                                chosen = method;
                                break;
                            }
                            pick -= method.1;
                        }
                        Plan::Pay(held, chosen.0, chosen.2)
                    }
                    None => self.lock(&show, 1, SAGA_TTLS_MS[0]),
                },
                _ => self.read(&show, ReadConsistency::Linearizable),
            },
        }
    }

    fn take_held(&mut self) -> Option<Held> {
        if self.held.is_empty() {
            return None;
        }
        let at = self.rng.usize(0..self.held.len());
        self.held.remove(at)
    }

    fn lock(&mut self, show: &ShowInfo, seats: usize, ttl_ms: u64) -> Plan {
        let mut chosen: Vec<u32> = Vec::new();
        while chosen.len() < seats.min(show.capacity as usize) {
            let seat = self.rng.u32(0..show.capacity);
            if !chosen.contains(&seat) {
                chosen.push(seat);
            }
        }
        chosen.sort_unstable();
        Plan::Lock {
            show: show.id.clone(),
            seats: chosen,
            ttl_ms,
        }
    }

    fn read(&self, show: &ShowInfo, consistency: ReadConsistency) -> Plan {
        Plan::Read {
            show: show.id.clone(),
            consistency,
        }
    }

    fn key(&mut self) -> String {
        self.next_key += 1;
        format!("jepsen-{}-{}-{}", self.seed, self.slot, self.next_key)
    }

    /// Records the invoke, performs the call, records the completion.
    async fn perform(&mut self, plan: Plan) -> Result<(), String> {
        match plan {
            Plan::Lock {
                show,
                seats,
                ttl_ms,
            } => self.do_lock(show, seats, ttl_ms).await,
            Plan::Confirm(held) => self.do_confirm(held).await,
            Plan::ConfirmAt(held, at_ms) => {
                let wait = Duration::from_millis(at_ms.saturating_sub(wall_ms()));
                // Bounded: an expiry is at most a TTL (2 s) away.
                tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
                self.do_confirm(held).await
            }
            Plan::Release(held) => self.do_release(held).await,
            Plan::Pay(held, method, succeeds) => self.do_pay(held, method, succeeds).await,
            Plan::Read { show, consistency } => self.do_read(show, consistency).await,
            Plan::Counts { show, capacity } => self.do_counts(show, capacity).await,
        }
    }

    /// Sends a write; one in `DUPLICATE_ONE_IN` is sent again with the same key and the
    /// second answer returned (at-least-once delivery).
    async fn send_write(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Value>,
        key: String,
    ) -> Answer {
        let token = self.token.clone();
        let headers = [("Idempotency-Key", key)];
        let first = self
            .api
            .send(method, path, Some(&token), body.clone(), &headers)
            .await;
        if self.rng.u32(0..DUPLICATE_ONE_IN) != 0 {
            return first;
        }
        self.api
            .send(method, path, Some(&token), body, &headers)
            .await
    }

    fn record(&mut self, kind: OpType, f: F, value: &impl Serialize, error: Option<String>) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        self.recorder
            .record(Process::Client(self.process), kind, f, value, error);
        if kind == OpType::Info {
            // This process's operation may still be in flight: continue as a new one.
            self.process += self.clients;
            self.last_index = None;
        }
    }

    async fn do_lock(&mut self, show: String, seats: Vec<u32>, ttl_ms: u64) -> Result<(), String> {
        let mut value = LockValue {
            show: show.clone(),
            seats: seats.clone(),
            user: self.user(),
            ttl_ms,
            lock: None,
            booking: None,
            expires_at_ms: None,
            reason: None,
            taken: None,
        };
        self.record(OpType::Invoke, F::Lock, &value, None);
        let key = self.key();
        let body = json!({"seats": seats, "ttl_seconds": ttl_ms / 1_000});
        let path = format!("/api/v1/shows/{show}/seats/lock");
        let answer = self.send_write("POST", &path, Some(body), key).await;
        match answer {
            Answer::Ok { body, headers } => {
                let lock = body["lock_id"].as_str().map(str::to_owned);
                let booking = body["booking_id"].as_str().map(str::to_owned);
                let expires = body["expires_at"]
                    .as_str()
                    .and_then(api::views::parse_rfc3339);
                let (Some(lock), Some(booking), Some(expires)) = (lock, booking, expires) else {
                    let error = format!("unreadable lock answer: {body}");
                    self.record(OpType::Info, F::Lock, &value, Some(error));
                    return Ok(());
                };
                value.lock = Some(lock.clone());
                value.booking = Some(booking.clone());
                value.expires_at_ms = Some(expires);
                self.record(OpType::Ok, F::Lock, &value, None);
                self.last_index = header_u64(&headers, "x-index").or(self.last_index);
                self.held.push_back(Held {
                    show,
                    lock,
                    booking,
                    seats,
                    expires_at_ms: expires,
                });
            }
            Answer::Fail { reason, body } => {
                if reason == "seats-taken" {
                    value.taken = Some(
                        body["seats"]
                            .as_array()
                            .map(|s| s.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
                            .into_iter()
                            .flatten()
                            .collect(),
                    );
                }
                let limit = reason == "limit-exceeded";
                value.reason = Some(reason.clone());
                self.record(OpType::Fail, F::Lock, &value, Some(reason));
                if limit {
                    self.next_user()?;
                }
            }
            Answer::Info { error } => self.record(OpType::Info, F::Lock, &value, Some(error)),
        }
        Ok(())
    }

    async fn do_confirm(&mut self, held: Held) -> Result<(), String> {
        let mut value = lock_ref(&held, self.user());
        self.record(OpType::Invoke, F::Confirm, &value, None);
        let key = self.key();
        let path = format!("/api/v1/bookings/{}/payment", held.booking);
        let body = json!({ "method": APPROVE });
        let answer = self.send_write("POST", &path, Some(body), key).await;
        match answer {
            Answer::Ok { body, headers } if body["status"] == json!("completed") => {
                self.record(OpType::Ok, F::Confirm, &value, None);
                self.last_index = header_u64(&headers, "x-index").or(self.last_index);
            }
            Answer::Ok { body, .. } => {
                let error = format!("payment not completed: {body}");
                self.record(OpType::Info, F::Confirm, &value, Some(error));
            }
            Answer::Fail { reason, .. } => {
                value.reason = Some(reason.clone());
                self.record(OpType::Fail, F::Confirm, &value, Some(reason));
            }
            Answer::Info { error } => self.record(OpType::Info, F::Confirm, &value, Some(error)),
        }
        Ok(())
    }

    /// A payment through the saga, followed until it ends (bounded). Meant to succeed, it
    /// is a `confirm`: ok when completed, fail when it failed or was refunded (the seat
    /// was never booked). A decline is a `release`: the saga released the lock.
    async fn do_pay(&mut self, held: Held, method: &str, succeeds: bool) -> Result<(), String> {
        let f = if succeeds { F::Confirm } else { F::Release };
        let mut value = lock_ref(&held, self.user());
        self.record(OpType::Invoke, f, &value, None);
        let key = self.key();
        let path = format!("/api/v1/bookings/{}/payment", held.booking);
        let answer = self
            .send_write("POST", &path, Some(json!({ "method": method })), key)
            .await;
        let mut body = match answer {
            Answer::Ok { body, headers } => {
                self.last_index = header_u64(&headers, "x-index").or(self.last_index);
                body
            }
            Answer::Fail { reason, .. } => {
                value.reason = Some(reason.clone());
                self.record(OpType::Fail, f, &value, Some(reason));
                return Ok(());
            }
            Answer::Info { error } => {
                self.record(OpType::Info, f, &value, Some(error));
                return Ok(());
            }
        };
        let deadline = Instant::now() + Duration::from_millis(PAYMENT_FOLLOW_MS);
        let status_path = format!("/api/v1/bookings/{}/payment/status", held.booking);
        let token = self.token.clone();
        while body["status"] == json!("pending") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Answer::Ok { body: now, .. } = self
                .api
                .send("GET", &status_path, Some(&token), None, &[])
                .await
            {
                body = now;
            }
        }
        let status = body["status"].as_str().unwrap_or_default().to_owned();
        match (succeeds, status.as_str()) {
            (true, "completed") | (false, "failed") => self.record(OpType::Ok, f, &value, None),
            (true, "failed" | "refund_pending" | "refunded") => {
                value.reason = Some(format!("payment-{status}"));
                self.record(OpType::Fail, f, &value, Some(status));
            }
            _ => {
                let error = format!("payment ended {status:?}: {body}");
                self.record(OpType::Info, f, &value, Some(error));
            }
        }
        Ok(())
    }

    async fn do_release(&mut self, held: Held) -> Result<(), String> {
        let mut value = lock_ref(&held, self.user());
        self.record(OpType::Invoke, F::Release, &value, None);
        let key = self.key();
        let path = format!("/api/v1/locks/{}", held.lock);
        let answer = self.send_write("DELETE", &path, None, key).await;
        match answer {
            Answer::Ok { headers, .. } => {
                self.record(OpType::Ok, F::Release, &value, None);
                self.last_index = header_u64(&headers, "x-index").or(self.last_index);
            }
            Answer::Fail { reason, .. } => {
                value.reason = Some(reason.clone());
                self.record(OpType::Fail, F::Release, &value, Some(reason));
            }
            Answer::Info { error } => self.record(OpType::Info, F::Release, &value, Some(error)),
        }
        Ok(())
    }

    async fn do_read(&mut self, show: String, consistency: ReadConsistency) -> Result<(), String> {
        let min_index = match consistency {
            ReadConsistency::Session => self.last_index,
            _ => None,
        };
        let value = ReadValue {
            show,
            consistency,
            min_index,
            served: None,
            index: None,
            seats: None,
            final_read: false,
            reason: None,
        };
        let process = Process::Client(self.process);
        let (kind, value, error) = read_seat_map(&self.api, &self.recorder, process, value).await;
        self.record(kind, F::Read, &value, error);
        Ok(())
    }

    async fn do_counts(&mut self, show: String, capacity: u32) -> Result<(), String> {
        let mut value = CountsValue {
            show: show.clone(),
            capacity: u64::from(capacity),
            available: None,
            locked: None,
            booked: None,
            reason: None,
        };
        self.record(OpType::Invoke, F::ReadCounts, &value, None);
        let path = format!("/api/v1/shows/{show}?consistency=linearizable");
        match self.api.send("GET", &path, None, None, &[]).await {
            Answer::Ok { body, .. } => {
                let counts = &body["seat_counts"];
                let (a, l, b) = (
                    counts["available"].as_i64(),
                    counts["locked"].as_i64(),
                    counts["booked"].as_i64(),
                );
                if a.is_none() || l.is_none() || b.is_none() {
                    let error = format!("unreadable counts: {body}");
                    self.record(OpType::Info, F::ReadCounts, &value, Some(error));
                    return Ok(());
                }
                (value.available, value.locked, value.booked) = (a, l, b);
                self.record(OpType::Ok, F::ReadCounts, &value, None);
            }
            Answer::Fail { reason, .. } => {
                value.reason = Some(reason.clone());
                self.record(OpType::Fail, F::ReadCounts, &value, Some(reason));
            }
            Answer::Info { error } => {
                self.record(OpType::Info, F::ReadCounts, &value, Some(error));
            }
        }
        Ok(())
    }
}

fn lock_ref(held: &Held, user: u64) -> LockRefValue {
    LockRefValue {
        show: held.show.clone(),
        lock: held.lock.clone(),
        user,
        seats: held.seats.clone(),
        reason: None,
    }
}

/// Records the invoke of a seat-map read, performs it, and returns the completion to
/// record (the caller records it, so that it can change process after an `info`).
pub async fn read_seat_map(
    api: &Api,
    recorder: &Recorder,
    process: Process,
    mut value: ReadValue,
) -> (OpType, ReadValue, Option<String>) {
    let invoke = serde_json::to_value(&value).unwrap_or(Value::Null);
    recorder.record(process, OpType::Invoke, F::Read, invoke, None);
    let level = match value.consistency {
        ReadConsistency::Linearizable => "linearizable",
        ReadConsistency::Session => "session",
        ReadConsistency::Stale => "stale",
    };
    let path = format!("/api/v1/shows/{}/seats?consistency={level}", value.show);
    let headers: Vec<(&str, String)> = value
        .min_index
        .map(|index| ("X-Min-Index", index.to_string()))
        .into_iter()
        .collect();
    match api.send("GET", &path, None, None, &headers).await {
        Answer::Ok { body, headers } => match statuses(&body) {
            Some(seats) => {
                value.seats = Some(seats);
                value.served = served(&headers);
                value.index = header_u64(&headers, "x-index");
                (OpType::Ok, value, None)
            }
            None => (
                OpType::Info,
                value,
                Some(format!("unreadable seat map: {body}")),
            ),
        },
        Answer::Fail { reason, .. } => {
            value.reason = Some(reason.clone());
            (OpType::Fail, value, Some(reason))
        }
        Answer::Info { error } => (OpType::Info, value, Some(error)),
    }
}

/// The statuses of a seat map in seat order; `None` unless seat `i` is at position `i`.
fn statuses(body: &Value) -> Option<Vec<SeatStatus>> {
    let seats = body["seats"].as_array()?;
    let mut out = Vec::with_capacity(seats.len());
    for (position, seat) in seats.iter().enumerate() {
        if seat["seat_id"].as_u64()? != position as u64 {
            return None;
        }
        out.push(match seat["status"].as_str()? {
            "available" => SeatStatus::Available,
            "locked" => SeatStatus::Locked,
            "booked" => SeatStatus::Booked,
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_maps_parse_only_in_seat_order() {
        let body = json!({"seats": [
            {"seat_id": 0, "status": "available"},
            {"seat_id": 1, "status": "booked"},
        ]});
        assert_eq!(
            statuses(&body),
            Some(vec![SeatStatus::Available, SeatStatus::Booked])
        );
        let shuffled = json!({"seats": [{"seat_id": 1, "status": "available"}]});
        assert_eq!(statuses(&shuffled), None);
        let odd = json!({"seats": [{"seat_id": 0, "status": "reserved"}]});
        assert_eq!(statuses(&odd), None);
    }
}
