//! The openraft type configuration of a shard, and the node identity it replicates.

use serde::{Deserialize, Serialize};
use state_machine::{Command, Outcome};
use std::fmt;

/// A command as it travels through a shard's Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCommand(pub Command);

impl fmt::Display for ShardCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let request = self.0.request_id.as_ref().map_or("-", |id| id.0.as_str());
        write!(
            f,
            "{} at {} ms (request {request})",
            self.0.kind.verb(),
            self.0.at_ms
        )
    }
}

/// What applying a `ShardCommand` produced, returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardResponse {
    /// `None` for entries that carry no ledger command (blank and membership entries).
    pub outcome: Option<Outcome>,
}

/// Where a node can be reached and where it runs; replicated in each shard's membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Address of the peer (Raft) listener.
    pub peer_addr: String,
    /// Address of the client protocol and admin HTTP listener.
    pub client_addr: String,
    /// Region label; the api prefers replicas in its own region for reads.
    pub region: String,
}

openraft::declare_raft_types!(
    /// The type configuration shared by every shard's Raft group.
    pub TypeConfig:
        D = ShardCommand,
        R = ShardResponse,
        Node = NodeInfo,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig, crate::ledger_sm::LedgerStateMachine>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
