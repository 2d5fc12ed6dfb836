//! The node's HTTP listener: the client protocol (`/v1/...`) used by `api` nodes, the
//! admin API (`/admin/...`) used by SREs and bookingctl, health and Prometheus metrics.
//!
//! Handlers translate HTTP to `Node` calls and back; every failure is JSON with an
//! `error` that says what was wrong and what to do.

use crate::node::{Node, NodeError};
use crate::protocol::{Binary, ReadRequest, WriteRequest, BINARY_MEDIA_TYPE};
use crate::types::{NodeId, NodeInfo};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use openraft::ServerState;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// Largest request body the node accepts (a lock names at most a few seats; a theater
/// with a large layout is the biggest legitimate body).
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Entries a replica may have committed but not yet applied and still count as caught
/// up: a few are always in flight under load.
pub const READY_APPLY_LAG_MAX: u64 = 64;
/// Largest page of events.
pub const EVENTS_PAGE_MAX: usize = 1_000;

/// The process-wide Prometheus recorder (one per process, shared by in-process nodes).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; then our handle renders nothing,
        // which the metrics test would reveal.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(error: NodeError) -> Self {
        let status = match error {
            NodeError::UnknownShard(_) => StatusCode::NOT_FOUND,
            NodeError::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, error.to_string())
    }
}

pub fn router(node: Node) -> Router {
    prometheus();
    let router = Router::new()
        .route("/v1/shards/{shard}/write", post(write))
        .route("/v1/shards/{shard}/read", post(read))
        .route("/v1/shards/{shard}/events", get(events))
        .route("/admin/status", get(status))
        .route("/admin/shards", post(add_shard))
        .route(
            "/admin/shards/{shard}/transfer-leader",
            post(transfer_leader),
        )
        .route("/admin/shards/{shard}/learners", post(add_learner))
        .route("/admin/shards/{shard}/membership", post(change_membership))
        .route("/admin/shards/{shard}/snapshot", post(snapshot))
        .route("/admin/shards/{shard}/limits", post(set_limits))
        .route("/admin/backup", post(backup))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(ready))
        .route("/metrics", get(|| async { prometheus().render() }));
    #[cfg(feature = "fault-injection")]
    let router = router.route("/admin/fault/clock-offset", post(set_clock_offset));
    router
        .layer(axum::extract::DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(node)
}

/// Body of `POST /admin/fault/clock-offset` (builds with `fault-injection` only).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockOffset {
    offset_ms: i64,
}

/// The largest clock offset the fault control accepts: a day either way.
#[cfg(feature = "fault-injection")]
const CLOCK_OFFSET_MS_MAX: i64 = 86_400_000;

/// Shifts this node's clock by `offset_ms` (the Jepsen-style clock nemesis).
#[cfg(feature = "fault-injection")]
async fn set_clock_offset(
    State(node): State<Node>,
    Json(body): Json<ClockOffset>,
) -> Result<Response, ApiError> {
    if body.offset_ms.abs() > CLOCK_OFFSET_MS_MAX {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("offset_ms must be within +-{CLOCK_OFFSET_MS_MAX} ms"),
        ));
    }
    node.set_clock_offset_ms(body.offset_ms);
    tracing::warn!(
        node = node.id(),
        offset_ms = body.offset_ms,
        "clock offset injected"
    );
    Ok(Json(serde_json::json!({ "node": node.id(), "offset_ms": body.offset_ms })).into_response())
}

/// Reads a client-protocol request body: JSON, or the binary form (see `protocol`).
fn decode_request<T: DeserializeOwned + Binary>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if media.eq_ignore_ascii_case(BINARY_MEDIA_TYPE) {
        T::from_binary(body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))
    } else if media.eq_ignore_ascii_case("application/json") {
        serde_json::from_slice(body).map_err(|e| {
            let status = if e.is_data() {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError(status, format!("malformed JSON body: {e}"))
        })
    } else {
        Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "send the body as application/json or {BINARY_MEDIA_TYPE}, not {content_type:?}"
            ),
        ))
    }
}

/// A client-protocol reply in the form the request asked for (`accept`): binary, else
/// JSON.
fn encode_reply<T: Serialize + Binary>(headers: &HeaderMap, reply: T) -> Response {
    let binary = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains(BINARY_MEDIA_TYPE));
    if binary {
        (
            [(header::CONTENT_TYPE, BINARY_MEDIA_TYPE)],
            reply.into_binary(),
        )
            .into_response()
    } else {
        Json(reply).into_response()
    }
}

async fn write(
    State(node): State<Node>,
    Path(shard): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: WriteRequest = decode_request(&headers, &body)?;
    if request.request_id.is_none()
        && !matches!(
            request.command,
            state_machine::CommandKind::ExpireLocks { .. }
        )
    {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "request_id is required: it makes retries safe".into(),
        ));
    }
    let reply = node
        .write(&shard, request.request_id, request.command)
        .await?;
    Ok(encode_reply(&headers, reply))
}

async fn read(
    State(node): State<Node>,
    Path(shard): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: ReadRequest = decode_request(&headers, &body)?;
    Ok(encode_reply(&headers, node.read(&shard, request).await?))
}

#[derive(Deserialize)]
struct EventsParams {
    #[serde(default)]
    from: u64,
    /// Position within the entry `from` (a consumer that saw `(i, s)` asks `i`, `s+1`).
    #[serde(default)]
    seq: u32,
    limit: Option<usize>,
}

async fn events(
    State(node): State<Node>,
    Path(shard): Path<String>,
    Query(params): Query<EventsParams>,
) -> Result<Response, ApiError> {
    let limit = params.limit.unwrap_or(100).clamp(1, EVENTS_PAGE_MAX);
    Ok(Json(node.events(&shard, params.from, params.seq, limit)?).into_response())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub region: String,
    pub voter: bool,
    /// Entries the leader has that this member has not matched (leader's view only).
    pub lag: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardStatus {
    pub shard: String,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub members: Vec<MemberStatus>,
    pub ledger_clock_ms: u64,
    /// `Ledger::digest` (hex) at `digest_index`, with `?digest=true` only: replicas with
    /// equal digests at an equal index hold identical ledgers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_index: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub region: String,
    /// The node's process id, for drills on local clusters (`bookingctl drill kill-leader`).
    #[serde(default)]
    pub pid: u32,
    pub shards: Vec<ShardStatus>,
}

#[derive(Deserialize)]
struct StatusParams {
    #[serde(default)]
    digest: bool,
}

async fn status(State(node): State<Node>, Query(params): Query<StatusParams>) -> Json<NodeStatus> {
    let mut shards = Vec::new();
    for shard in node.shards() {
        let m = shard.metrics();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let members = membership
            .nodes()
            .map(|(id, info)| MemberStatus {
                id: *id,
                region: info.region.clone(),
                voter: voters.contains(id),
                lag: m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id))
                    .map(|matched| last.saturating_sub(matched.as_ref().map_or(0, |l| l.index))),
            })
            .collect();
        let clock = shard.store.read().map(|s| s.ledger().clock()).unwrap_or(0);
        let (digest, digest_index) = if params.digest {
            match crate::backup::shard_digest(&node, &shard.name) {
                Ok((digest, index)) => (Some(digest), Some(index)),
                Err(error) => (Some(format!("unavailable: {error}")), None),
            }
        } else {
            (None, None)
        };
        shards.push(ShardStatus {
            shard: shard.name.clone(),
            state: format!("{:?}", m.state),
            leader: m.current_leader,
            term: m.current_term,
            committed_index: m.local_committed.map(|l| l.index),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
            ledger_clock_ms: clock,
            digest,
            digest_index,
        });
    }
    Json(NodeStatus {
        node: node.id(),
        region: node.info().region.clone(),
        pid: std::process::id(),
        shards,
    })
}

/// Ready when every hosted shard knows a leader and has applied what it committed,
/// and no ledger store has failed.
async fn ready(State(node): State<Node>) -> Response {
    let mut problems = Vec::new();
    for shard in node.shards() {
        let m = shard.metrics();
        if m.current_leader.is_none() {
            problems.push(format!("{}: no leader", shard.name));
        }
        let applied = m.last_applied.map_or(0, |l| l.index);
        let committed = m.local_committed.map_or(0, |l| l.index);
        if committed.saturating_sub(applied) > READY_APPLY_LAG_MAX {
            problems.push(format!(
                "{}: applied {applied} < committed {committed}",
                shard.name
            ));
        }
        if shard.store.read().map(|s| s.is_poisoned()).unwrap_or(true) {
            problems.push(format!(
                "{}: ledger store failed; restart this node",
                shard.name
            ));
        }
        if m.state == ServerState::Leader {
            if let Some(refusal) = node.clock_verdict(&shard).refusal() {
                problems.push(format!("{}: {refusal}", shard.name));
            }
        }
        if m.running_state.is_err() || m.state == ServerState::Shutdown {
            problems.push(format!("{}: raft stopped", shard.name));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "problems": problems })),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct AddShard {
    name: String,
    /// Initial members with their addresses; empty for a replica that will join as a
    /// learner of an existing shard.
    #[serde(default)]
    members: BTreeMap<NodeId, NodeInfo>,
}

async fn add_shard(
    State(node): State<Node>,
    headers: axum::http::HeaderMap,
    Json(body): Json<AddShard>,
) -> Result<Response, ApiError> {
    let members: Vec<NodeId> = body.members.keys().copied().collect();
    node.add_shard(&body.name, body.members).await?;
    let audit = crate::audit::record(
        &node,
        &headers,
        "add_shard",
        format!("shard {}", body.name),
        format!("applied: members {members:?}"),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "shard": body.name, "audit": audit })),
    )
        .into_response())
}

fn leader_only(node: &Node, shard: &str) -> Result<std::sync::Arc<crate::node::Shard>, ApiError> {
    let shard = node.shard(shard)?;
    if !shard.raft.is_leader() {
        let leader = shard.metrics().current_leader;
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("this node does not lead the shard; the leader is {leader:?}, send it there"),
        ));
    }
    Ok(shard)
}

#[derive(Deserialize)]
struct TransferLeader {
    to: NodeId,
}

async fn transfer_leader(
    State(node): State<Node>,
    headers: axum::http::HeaderMap,
    Path(shard_name): Path<String>,
    Json(body): Json<TransferLeader>,
) -> Result<Response, ApiError> {
    let shard = leader_only(&node, &shard_name)?;
    let voters: BTreeSet<NodeId> = shard
        .metrics()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    if !voters.contains(&body.to) {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("node {} is not a voter of this shard", body.to),
        ));
    }
    shard
        .raft
        .trigger()
        .transfer_leader(body.to)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let audit = crate::audit::record(
        &node,
        &headers,
        "transfer_leader",
        format!("shard {shard_name}"),
        format!("applied: from node {} to node {}", node.id(), body.to),
    )
    .await;
    Ok(Json(serde_json::json!({ "transferring_to": body.to, "audit": audit })).into_response())
}

#[derive(Deserialize)]
struct AddLearner {
    node_id: NodeId,
    info: NodeInfo,
}

async fn add_learner(
    State(node): State<Node>,
    headers: axum::http::HeaderMap,
    Path(shard_name): Path<String>,
    Json(body): Json<AddLearner>,
) -> Result<Response, ApiError> {
    let shard = leader_only(&node, &shard_name)?;
    let detail = format!(
        "applied: node {} at {} ({}) as learner",
        body.node_id, body.info.client_addr, body.info.region
    );
    let result = shard.raft.add_learner(body.node_id, body.info, true).await;
    let response = result.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let audit = crate::audit::record(
        &node,
        &headers,
        "add_learner",
        format!("shard {shard_name}"),
        detail,
    )
    .await;
    Ok(Json(serde_json::json!({ "index": response.log_id.index, "audit": audit })).into_response())
}

#[derive(Deserialize)]
struct ChangeMembership {
    voters: BTreeSet<NodeId>,
}

async fn change_membership(
    State(node): State<Node>,
    headers: axum::http::HeaderMap,
    Path(shard_name): Path<String>,
    Json(body): Json<ChangeMembership>,
) -> Result<Response, ApiError> {
    if body.voters.is_empty() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "voters must name at least one node".into(),
        ));
    }
    let shard = leader_only(&node, &shard_name)?;
    let detail = format!("applied: voters {:?}", body.voters);
    let result = shard.raft.change_membership(body.voters, false).await;
    let response = result.map_err(|e| ApiError(StatusCode::CONFLICT, e.to_string()))?;
    let audit = crate::audit::record(
        &node,
        &headers,
        "change_membership",
        format!("shard {shard_name}"),
        detail,
    )
    .await;
    Ok(Json(serde_json::json!({ "index": response.log_id.index, "audit": audit })).into_response())
}

/// Sets the shard's replicated rules (`CommandKind::SetLimits`) on its leader: every
/// replica applies them from that log entry on, whatever its own file says. The body is
/// the cluster file's `[limits]` table as JSON (missing fields take their defaults).
async fn set_limits(
    State(node): State<Node>,
    headers: axum::http::HeaderMap,
    Path(shard_name): Path<String>,
    Json(limits): Json<state_machine::Limits>,
) -> Result<Response, ApiError> {
    if let Err(invalid) = limits.validate() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            invalid.to_string(),
        ));
    }
    leader_only(&node, &shard_name)?;
    let kind = state_machine::CommandKind::SetLimits { limits };
    let reply = node
        .write(&shard_name, None, kind)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let (outcome, index) = match reply {
        crate::protocol::WriteReply::Done { outcome, index, .. } => (outcome, index),
        other => {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not applied: {other:?}"),
            ))
        }
    };
    if let state_machine::Outcome::Rejected(rejection) = &outcome {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            rejection.to_string(),
        ));
    }
    let audit = crate::audit::record(
        &node,
        &headers,
        "set_limits",
        format!("shard {shard_name}"),
        format!("applied at index {index}"),
    )
    .await;
    Ok(Json(serde_json::json!({ "index": index, "audit": audit })).into_response())
}

async fn snapshot(
    State(node): State<Node>,
    Path(shard): Path<String>,
) -> Result<Response, ApiError> {
    let shard = node.shard(&shard)?;
    shard
        .raft
        .trigger()
        .snapshot()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "snapshot": "triggered" })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    name: String,
}

/// Takes an online backup of this node into `<data dir>/backups/<name>` (see
/// `crate::backup`); answers with its path and manifest once it is written and verified.
async fn backup(
    State(node): State<Node>,
    Json(body): Json<BackupRequest>,
) -> Result<Response, ApiError> {
    crate::backup::check_name(&body.name)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let name = body.name;
    let result = tokio::task::spawn_blocking(move || crate::backup::create(&node, &name))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match result {
        Ok((path, manifest)) => Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({ "path": path, "manifest": manifest })),
        )
            .into_response()),
        Err(error @ crate::backup::BackupError::Exists(_)) => {
            Err(ApiError(StatusCode::CONFLICT, error.to_string()))
        }
        Err(error) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            error.to_string(),
        )),
    }
}
