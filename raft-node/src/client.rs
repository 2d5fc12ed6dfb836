//! A client of the node's client protocol, shared by `api`, the Jepsen-style suite and
//! the tests: it routes writes to shard leaders (caching them per shard, refreshing on
//! "not leader"), retries with jittered backoff within a deadline, and reads from a
//! preferred replica with failover.
//!
//! It never changes a write's request id between attempts, which makes every retry
//! safe: the ledger returns the first outcome of a request id again.
//!
//! Writes and reads travel in the protocol's binary form; a node that answers "415
//! unsupported media type" (an older version) is spoken to in JSON from then on.

use crate::protocol::{
    Binary, EventsReply, LeaderHint, ReadReply, ReadRequest, WriteReply, WriteRequest,
    BINARY_MEDIA_TYPE,
};
use crate::types::NodeId;
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use state_machine::{CommandKind, Outcome};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// First retry delay; doubles up to `BACKOFF_MAX`, with jitter.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The deadline passed without a definite answer. For a write the outcome is
    /// unknown: retry with the same request id.
    #[error(
        "no definite answer within the deadline ({last_problem}); retry with the same request id"
    )]
    Unknown { last_problem: String },
    /// The request itself was refused by the node (malformed, unknown shard, ...).
    #[error("refused by the node: {0}")]
    Refused(String),
}

/// A committed write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteDone {
    pub outcome: Outcome,
    pub index: u64,
    pub node: NodeId,
}

#[derive(Clone)]
pub struct ClusterClient {
    http: reqwest::Client,
    /// Client addresses of every node, by id.
    nodes: Arc<BTreeMap<NodeId, String>>,
    /// Last known leader per shard.
    leaders: Arc<Mutex<BTreeMap<String, NodeId>>>,
    /// `http`, or `https` with mutual TLS against the cluster CA.
    scheme: &'static str,
    /// Addresses of nodes that refused the binary form (older versions): JSON for them.
    json_only: Arc<Mutex<BTreeSet<String>>>,
}

/// A request body in both forms: binary, and the value for JSON.
struct Body<'a, B> {
    value: &'a B,
    binary: Bytes,
}

impl<'a, B: Binary + Clone> Body<'a, B> {
    fn new(value: &'a B) -> Self {
        Body {
            value,
            binary: Bytes::from(value.clone().into_binary()),
        }
    }
}

enum Attempt<T> {
    Done(T),
    Retry(String),
}

impl ClusterClient {
    pub fn new(nodes: BTreeMap<NodeId, String>) -> ClusterClient {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap_or_default();
        ClusterClient {
            http,
            nodes: Arc::new(nodes),
            leaders: Arc::default(),
            scheme: "http",
            json_only: Arc::default(),
        }
    }

    /// A client that speaks HTTPS to the nodes, trusting only the cluster CA and
    /// presenting the certificate of `tls` (nodes with TLS refuse any other client).
    pub fn with_tls(
        nodes: BTreeMap<NodeId, String>,
        tls: &crate::tls::ClusterTls,
    ) -> Result<ClusterClient, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_max_idle_per_host(256)
            .use_preconfigured_tls((*tls.client).clone())
            .build()
            .map_err(|e| format!("TLS client for the nodes: {e}"))?;
        Ok(ClusterClient {
            http,
            nodes: Arc::new(nodes),
            leaders: Arc::default(),
            scheme: "https",
            json_only: Arc::default(),
        })
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, String> {
        &self.nodes
    }

    fn cached_leader(&self, shard: &str) -> Option<NodeId> {
        self.leaders.lock().ok()?.get(shard).copied()
    }

    fn remember_leader(&self, shard: &str, hint: Option<&LeaderHint>) {
        let Ok(mut leaders) = self.leaders.lock() else {
            return;
        };
        match hint {
            Some(hint) => leaders.insert(shard.to_owned(), hint.node),
            None => leaders.remove(shard),
        };
    }

    /// The node to try on attempt `n`: the cached leader first, then round robin.
    /// The node to try: the cached leader, else round robin from `start`, so a dead node
    /// is not always tried first.
    fn pick(&self, shard: &str, start: usize, attempt: usize) -> Option<(NodeId, String)> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let id = match self.cached_leader(shard) {
            Some(leader) => leader,
            None => *ids.get((start + attempt) % ids.len().max(1))?,
        };
        self.nodes.get(&id).map(|addr| (id, addr.clone()))
    }

    async fn backoff(attempt: usize, deadline: Instant) {
        let exponent = attempt.min(8) as u32;
        let base = (BACKOFF_MIN * 2u32.pow(exponent)).min(BACKOFF_MAX);
        let jittered = base.mul_f64(0.5 + fastrand::f64());
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(jittered.min(left)).await;
    }

    /// Sends a write to the shard's leader, retrying within `timeout`.
    pub async fn write(
        &self,
        shard: &str,
        request_id: &str,
        command: CommandKind,
        timeout: Duration,
    ) -> Result<WriteDone, ClientError> {
        let deadline = Instant::now() + timeout;
        let request = WriteRequest {
            request_id: Some(request_id.to_owned()),
            command,
        };
        let body = Body::new(&request);
        let mut last_problem = String::from("no node answered");
        let start = fastrand::usize(..);
        for attempt in 0.. {
            if Instant::now() >= deadline {
                break;
            }
            let Some((node, addr)) = self.pick(shard, start, attempt) else {
                break;
            };
            match self.write_once(shard, &addr, &body, deadline).await? {
                Attempt::Done(WriteReply::Done {
                    outcome,
                    index,
                    node,
                }) => {
                    // The node that committed the write led the shard: remember it.
                    if let Ok(mut leaders) = self.leaders.lock() {
                        leaders.insert(shard.to_owned(), node);
                    }
                    return Ok(WriteDone {
                        outcome,
                        index,
                        node,
                    });
                }
                Attempt::Done(WriteReply::NotLeader { leader, .. }) => {
                    last_problem = format!("node {node} is not the leader");
                    let hinted = leader.as_ref().is_some_and(|hint| hint.node != node);
                    self.remember_leader(shard, leader.as_ref().filter(|_| hinted));
                    if hinted {
                        continue;
                    }
                }
                Attempt::Done(
                    WriteReply::Unknown { reason, .. } | WriteReply::Unavailable { reason, .. },
                ) => {
                    last_problem = reason;
                    self.remember_leader(shard, None);
                }
                Attempt::Retry(problem) => {
                    last_problem = format!("node {node}: {problem}");
                    self.remember_leader(shard, None);
                    // An unreachable node says nothing about the others: try each once
                    // before backing off.
                    if attempt + 1 < self.nodes.len() {
                        continue;
                    }
                }
            }
            Self::backoff(attempt, deadline).await;
        }
        Err(ClientError::Unknown { last_problem })
    }

    async fn write_once(
        &self,
        shard: &str,
        addr: &str,
        body: &Body<'_, WriteRequest>,
        deadline: Instant,
    ) -> Result<Attempt<WriteReply>, ClientError> {
        self.post(addr, &format!("/v1/shards/{shard}/write"), body, deadline)
            .await
    }

    fn speaks_binary(&self, addr: &str) -> bool {
        self.json_only
            .lock()
            .map_or(true, |json_only| !json_only.contains(addr))
    }

    /// Posts `body` to `path` on the node at `addr`: in the binary form, or in JSON to a
    /// node that does not take it (found out here, on its "415", and remembered).
    async fn post<B: serde::Serialize, R: serde::de::DeserializeOwned + Binary>(
        &self,
        addr: &str,
        path: &str,
        body: &Body<'_, B>,
        deadline: Instant,
    ) -> Result<Attempt<R>, ClientError> {
        let url = format!("{}://{addr}{path}", self.scheme);
        if self.speaks_binary(addr) {
            let request = self
                .http
                .post(&url)
                .header(CONTENT_TYPE, BINARY_MEDIA_TYPE)
                .header(ACCEPT, BINARY_MEDIA_TYPE)
                .body(body.binary.clone());
            let response = match Self::send(request, deadline).await {
                Ok(response) => response,
                Err(problem) => return Ok(Attempt::Retry(problem)),
            };
            if response.status() != reqwest::StatusCode::UNSUPPORTED_MEDIA_TYPE {
                return Self::receive(response).await;
            }
            tracing::info!(
                node = addr,
                "the node does not take binary bodies: JSON from now on"
            );
            if let Ok(mut json_only) = self.json_only.lock() {
                json_only.insert(addr.to_owned());
            }
        }
        self.exchange(self.http.post(&url).json(body.value), deadline)
            .await
    }

    async fn send(
        request: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<reqwest::Response, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        request
            .timeout(left)
            .send()
            .await
            .map_err(|error| error.to_string())
    }

    /// Sends `request` within `deadline`. A 4xx is the node refusing the request itself
    /// (final); any other failure is worth trying again, here or elsewhere.
    async fn exchange<R: serde::de::DeserializeOwned + Binary>(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
    ) -> Result<Attempt<R>, ClientError> {
        match Self::send(request, deadline).await {
            Ok(response) => Self::receive(response).await,
            Err(problem) => Ok(Attempt::Retry(problem)),
        }
    }

    /// Reads a node's answer, JSON or binary as its `content-type` says.
    async fn receive<R: serde::de::DeserializeOwned + Binary>(
        response: reqwest::Response,
    ) -> Result<Attempt<R>, ClientError> {
        let status = response.status();
        if status.is_client_error() {
            let text = response.text().await.unwrap_or_default();
            return Err(ClientError::Refused(format!("{status}: {text}")));
        }
        if !status.is_success() {
            return Ok(Attempt::Retry(format!("HTTP {status}")));
        }
        let binary = response
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes() == BINARY_MEDIA_TYPE.as_bytes());
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return Ok(Attempt::Retry(format!("unreadable reply: {error}"))),
        };
        let decoded = if binary {
            R::from_binary(&bytes)
        } else {
            serde_json::from_slice(&bytes).map_err(|error| error.to_string())
        };
        match decoded {
            Ok(reply) => Ok(Attempt::Done(reply)),
            Err(error) => Ok(Attempt::Retry(format!("unreadable reply: {error}"))),
        }
    }

    /// Asks the replicas, `prefer` first and then the others, going round them with
    /// backoff until one answers or `timeout` passes. `ask(node, address, deadline)`
    /// gives the answer, or the problem to report if none answers.
    async fn ask_replicas<T, F, Fut>(
        &self,
        prefer: &[NodeId],
        timeout: Duration,
        mut ask: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(NodeId, String, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<Result<T, String>, ClientError>>,
    {
        let deadline = Instant::now() + timeout;
        let mut order: Vec<NodeId> = prefer.to_vec();
        order.extend(self.nodes.keys().filter(|id| !prefer.contains(id)));
        order.retain(|id| self.nodes.contains_key(id));
        let mut last_problem = String::from("no node answered");
        for attempt in 0.. {
            if Instant::now() >= deadline || order.is_empty() {
                break;
            }
            let node = order[attempt % order.len()];
            let addr = self.nodes.get(&node).cloned().unwrap_or_default();
            match ask(node, addr, deadline).await? {
                Ok(answer) => return Ok(answer),
                Err(problem) => last_problem = problem,
            }
            if attempt % order.len() == order.len() - 1 {
                Self::backoff(attempt / order.len(), deadline).await;
            }
        }
        Err(ClientError::Unknown { last_problem })
    }

    /// Reads from `prefer` (or any node) and fails over to the others within `timeout`.
    pub async fn read(
        &self,
        shard: &str,
        request: &ReadRequest,
        prefer: &[NodeId],
        timeout: Duration,
    ) -> Result<ReadReply, ClientError> {
        let body = Body::new(request);
        let body = &body;
        self.ask_replicas(prefer, timeout, |node, addr, deadline| async move {
            let path = format!("/v1/shards/{shard}/read");
            Ok(
                match self
                    .post::<_, ReadReply>(&addr, &path, body, deadline)
                    .await?
                {
                    Attempt::Done(reply @ ReadReply::Done { .. }) => Ok(reply),
                    Attempt::Done(ReadReply::Unavailable { reason, .. }) => Err(reason),
                    Attempt::Retry(problem) => Err(format!("node {node}: {problem}")),
                },
            )
        })
        .await
    }

    /// A page of `shard`'s events from position `(from, from_seq)` on, read from the
    /// first replica of `prefer` (then the others) that answers within `timeout`. Any
    /// replica will do: each serves a prefix of the same stream.
    pub async fn events(
        &self,
        shard: &str,
        from: u64,
        from_seq: u32,
        limit: usize,
        prefer: &[NodeId],
        timeout: Duration,
    ) -> Result<EventsReply, ClientError> {
        self.ask_replicas(prefer, timeout, |node, addr, deadline| async move {
            let url = format!(
                "{}://{addr}/v1/shards/{shard}/events?from={from}&seq={from_seq}&limit={limit}",
                self.scheme
            );
            Ok(
                match self
                    .exchange::<EventsReply>(self.http.get(&url), deadline)
                    .await?
                {
                    Attempt::Done(reply) => Ok(reply),
                    Attempt::Retry(problem) => Err(format!("node {node}: {problem}")),
                },
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Consistency;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use state_machine::{Query, QueryResponse};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A node of an older version: JSON only, "415" to the binary form.
    async fn json_only_node(binary_tries: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().route(
            "/v1/shards/{shard}/read",
            axum::routing::post(move |headers: HeaderMap| {
                let binary_tries = binary_tries.clone();
                async move {
                    if headers["content-type"] == BINARY_MEDIA_TYPE {
                        binary_tries.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
                    }
                    axum::Json(ReadReply::Done {
                        result: Ok(QueryResponse::Cities(vec!["pune".into()])),
                        node: 1,
                        applied_index: 3,
                        consistency: Consistency::Stale,
                        lag: None,
                    })
                    .into_response()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn a_node_that_refuses_the_binary_form_is_spoken_to_in_json() {
        let binary_tries = Arc::new(AtomicUsize::new(0));
        let addr = json_only_node(binary_tries.clone()).await;
        let client = ClusterClient::new(BTreeMap::from([(1, addr)]));
        let request = ReadRequest {
            query: Query::Cities,
            consistency: Consistency::Stale,
            min_index: None,
        };
        for _ in 0..3 {
            let reply = client
                .read("city", &request, &[1], Duration::from_secs(5))
                .await
                .unwrap();
            assert!(
                matches!(reply, ReadReply::Done { result: Ok(QueryResponse::Cities(ref c)), .. } if c == &["pune"]),
                "{reply:?}"
            );
        }
        assert_eq!(
            binary_tries.load(Ordering::SeqCst),
            1,
            "the binary form was tried again after the node refused it"
        );
    }
}
