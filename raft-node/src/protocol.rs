//! The client protocol that `api` nodes speak to raft-nodes (JSON over HTTP on the
//! node's client listener). These types are the contract between the two tiers; they
//! carry ledger commands and queries and say nothing of openraft.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use state_machine::{CommandKind, Outcome, Query, QueryResponse, Rejection};

/// `POST /v1/shards/{shard}/write`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WriteRequest {
    /// The idempotency key (namespaced by the api); required for client commands.
    pub request_id: Option<String>,
    pub command: CommandKind,
}

/// Where the shard's leader is, as far as the answering node knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    pub node: NodeId,
    pub client_addr: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum WriteReply {
    /// Committed and applied at `index`; `outcome` may still be a rejection.
    Done {
        outcome: Outcome,
        index: u64,
        node: NodeId,
    },
    /// This node is not the leader; retry at the hinted one (unknown during elections).
    NotLeader {
        leader: Option<LeaderHint>,
        node: NodeId,
    },
    /// The entry may or may not commit (leadership lost mid-write): retry with the same
    /// request id, which is always safe.
    Unknown { reason: String, node: NodeId },
    /// The leader proposed nothing (its clock disagrees with its quorum's); retry later,
    /// possibly at another leader.
    Unavailable { reason: String, node: NodeId },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Read index from the leader, wait until applied, answer locally.
    #[default]
    Linearizable,
    /// Wait until applied at least `min_index` (the client's last write).
    Session,
    /// Answer from local state now.
    Stale,
}

/// `POST /v1/shards/{shard}/read`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadRequest {
    pub query: Query,
    #[serde(default)]
    pub consistency: Consistency,
    /// For `session`: the index of the client's last write.
    #[serde(default)]
    pub min_index: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReadReply {
    Done {
        result: Result<QueryResponse, Rejection>,
        /// The replica that answered and how far it had applied.
        node: NodeId,
        applied_index: u64,
        consistency: Consistency,
        /// Entries the leader has committed that this replica had not applied, when known.
        lag: Option<u64>,
    },
    /// A linearizable read needs a leader and none is reachable, or the session index was
    /// not reached in time: try another replica or later.
    Unavailable {
        reason: String,
        node: NodeId,
        leader: Option<LeaderHint>,
    },
}

/// `GET /v1/shards/{shard}/events?from=&seq=&limit=`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventsReply {
    pub events: Vec<state_machine::EventRecord>,
    /// The oldest index still kept; a consumer behind it has missed events.
    pub oldest_index: Option<u64>,
    /// Every event at or after this index is kept: a consumer asking for an older
    /// position has missed events dropped by the retention window.
    #[serde(default)]
    pub kept_from: u64,
    /// The replica that answered and how far it had applied (the stream's head there).
    #[serde(default)]
    pub node: NodeId,
    #[serde(default)]
    pub applied_index: u64,
}
