//! openraft's network traits over the peer transport: each shard's RPCs become
//! `transport` calls tagged with the shard's name and a method code, and the node's
//! `PeerHandler` turns them back into calls on that shard's Raft.
//!
//! Payloads are the codec (bincode) encoding of openraft's own messages. A remote
//! failure travels back as a string; nothing a peer sends can reach Raft without
//! decoding into openraft's types first.

use crate::transport::{PeerClient, TransportError};
use crate::types::{NodeId, NodeInfo, TypeConfig};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftNetworkFactory, RaftNetworkV2};
use serde::{de::DeserializeOwned, Serialize};
use state_machine::codec;
use std::future::Future;
use std::time::Duration;

/// Method codes of the peer protocol.
pub mod method {
    pub const APPEND_ENTRIES: u8 = 1;
    pub const VOTE: u8 = 2;
    pub const FULL_SNAPSHOT: u8 = 3;
    pub const TRANSFER_LEADER: u8 = 4;
    pub const READ_INDEX: u8 = 5;
    pub const PRE_VOTE: u8 = 6;
    /// Node-level, not per shard: the answering node's clock, for cluster time.
    pub const CLOCK: u8 = 7;
    /// A follower's read index request that carries the follower's own vote, which the
    /// leader may count as that follower's acknowledgement (see `Node::read_index`).
    pub const READ_INDEX_ACKED: u8 = 8;
}

pub type Snapshot = crate::ledger_sm::Snapshot;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;

/// Decodes a peer's payload, naming what was expected on failure.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, String> {
    codec::decode(bytes).map_err(|error| format!("malformed {what}: {error}"))
}

/// Makes one shard's connections to its peers.
#[derive(Clone)]
pub struct NetworkFactory {
    pub shard: String,
    pub client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerNetwork {
        PeerNetwork {
            shard: self.shard.clone(),
            target,
            addr: node.peer_addr.clone(),
            client: self.client.clone(),
        }
    }
}

/// One shard's view of one peer; the TCP connection underneath is shared by all shards.
pub struct PeerNetwork {
    shard: String,
    target: NodeId,
    addr: String,
    client: PeerClient,
}

fn rpc_error(error: TransportError) -> RPCError<TypeConfig> {
    match error {
        TransportError::Unreachable(_) | TransportError::Closed | TransportError::Rejected(_) => {
            RPCError::Unreachable(Unreachable::from_string(error))
        }
        other => RPCError::Network(NetworkError::from_string(other)),
    }
}

impl PeerNetwork {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: u8,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let payload = codec::encode(request);
        let bytes = self
            .client
            .call(
                self.target,
                &self.addr,
                &self.shard,
                method,
                payload,
                timeout,
            )
            .await?;
        let answer: Result<Resp, String> =
            decode("peer response", &bytes).map_err(TransportError::Remote)?;
        answer.map_err(TransportError::Remote)
    }
}

impl RaftNetworkV2<TypeConfig> for PeerNetwork {
    type SnapshotData = crate::ledger_sm::LedgerImage;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(method::APPEND_ENTRIES, &rpc, option.hard_ttl())
            .await
            .map_err(rpc_error)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(method::VOTE, &rpc, option.hard_ttl())
            .await
            .map_err(rpc_error)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(method::PRE_VOTE, &rpc, option.hard_ttl())
            .await
            .map_err(rpc_error)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // A snapshot may be large: allow it far longer than a heartbeat.
        let timeout = option.hard_ttl().max(Duration::from_secs(60));
        let send = async {
            // Encoded now, from the image pinned when the snapshot was built.
            let bytes = snapshot.snapshot.into_bytes_blocking().await.map_err(|e| {
                NetworkError::from_string(format!("encoding the snapshot to send: {e}"))
            })?;
            let request = (vote, snapshot.meta, bytes);
            self.call(method::FULL_SNAPSHOT, &request, timeout)
                .await
                .map_err(|error| match rpc_error(error) {
                    RPCError::Unreachable(e) => StreamingError::Unreachable(e),
                    RPCError::Network(e) => StreamingError::Network(e),
                    other => StreamingError::Network(NetworkError::from_string(other)),
                })
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = send => result,
        }
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(method::TRANSFER_LEADER, &request, option.hard_ttl())
            .await
            .map_err(rpc_error)
    }
}
