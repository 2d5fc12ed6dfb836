//! Records the cluster operations of the admin API (leader transfers, learners,
//! membership changes, new shards) in the audit trail of the `global` shard, through the
//! client protocol like any other client (the node may host no `global` replica, or not
//! its leader).
//!
//! Who: the operator name `bookingctl` sends in `x-seat-ledger-operator` (its
//! `--operator`, else `$USER`), with the node that served the request. The admin API
//! is trusted by network placement and, with TLS, by the client certificate the
//! cluster CA signed; the name itself is as the operator gives it.
//!
//! Recording happens after the operation, in the background, and never blocks or fails
//! it: an SRE must be able to repair a cluster whose `global` shard is down, and fault
//! drills change membership during partitions. The response names the audit request
//! id; a failure to record (after retries for up to `AUDIT_TIMEOUT`) is logged and
//! counted in `seat_ledger_audit_failures_total`.

use crate::client::ClusterClient;
use crate::node::Node;
use axum::http::HeaderMap;
use state_machine::{Applied, CommandKind, Outcome};
use std::collections::BTreeMap;
use std::time::Duration;

/// The header naming the operator.
pub const OPERATOR_HEADER: &str = "x-seat-ledger-operator";

/// How long recording may take before the admin API answers without it.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The shard holding the audit trail.
const GLOBAL_SHARD: &str = "global";

/// `operator:<name> via node <id>`; a missing or unprintable name is said so.
pub fn actor(node: &Node, headers: &HeaderMap) -> String {
    let name = headers
        .get(OPERATOR_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|name| {
            !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| (0x21..=0x7e).contains(&b))
        })
        .unwrap_or("unnamed");
    let channel = if node.tls().is_some() {
        "mutual TLS"
    } else {
        "plain HTTP"
    };
    format!(
        "operator:{name} via node {} admin API ({channel})",
        node.id()
    )
}

fn client(node: &Node) -> Result<ClusterClient, String> {
    let mut nodes: BTreeMap<u64, String> = node
        .config()
        .cluster
        .nodes
        .iter()
        .map(|entry| (entry.id, entry.client_addr.clone()))
        .collect();
    // Nodes that joined after bootstrap are known from the global shard's membership.
    if let Ok(global) = node.shard(GLOBAL_SHARD) {
        for (id, info) in global.metrics().membership_config.membership().nodes() {
            nodes.insert(*id, info.client_addr.clone());
        }
    }
    match node.tls() {
        Some(tls) => ClusterClient::with_tls(nodes, tls),
        None => Ok(ClusterClient::new(nodes)),
    }
}

/// Starts recording `action` on `target` in the audit trail; returns the JSON the admin
/// API adds to its answer: `{"request_id": ...}`.
pub async fn record(
    node: &Node,
    headers: &HeaderMap,
    action: &str,
    target: String,
    detail: String,
) -> serde_json::Value {
    let request_id = format!(
        "audit:node-{}:{action}:{:016x}",
        node.id(),
        fastrand::u64(..)
    );
    let answer = serde_json::json!({ "request_id": request_id });
    let (node, actor, action) = (node.clone(), actor(node, headers), action.to_owned());
    tokio::spawn(async move {
        write(&node, actor, &action, target, detail, &request_id).await;
    });
    answer
}

async fn write(
    node: &Node,
    actor: String,
    action: &str,
    target: String,
    detail: String,
    request_id: &str,
) {
    let command = CommandKind::RecordAudit {
        actor,
        action: action.to_owned(),
        target,
        detail,
    };
    let result = match client(node) {
        Ok(client) => client
            .write(GLOBAL_SHARD, request_id, command, AUDIT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())
            .and_then(|done| match done.outcome {
                Outcome::Applied(Applied::AuditRecorded { entry }) => Ok(entry),
                Outcome::Applied(other) => Err(format!("unexpected answer {other:?}")),
                Outcome::Rejected(rejection) => Err(rejection.to_string()),
            }),
        Err(error) => Err(error),
    };
    match result {
        Ok(entry) => tracing::info!(
            action,
            entry,
            "cluster operation recorded in the audit trail"
        ),
        Err(error) => {
            metrics::counter!("seat_ledger_audit_failures_total").increment(1);
            tracing::warn!(action, request_id, %error, "cluster operation done but not recorded in the audit trail");
        }
    }
}
