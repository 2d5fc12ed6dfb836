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
use std::sync::Arc;
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
    /// One chunk of a snapshot (`snapshot_transfer`); replaces `FULL_SNAPSHOT`, which
    /// is still answered for older senders.
    pub const SNAPSHOT_CHUNK: u8 = 9;
    /// Node-level: the answering node's view of every shard's membership it hosts
    /// (`fence::ShardMembership`), asked by a restored node before it starts.
    pub const MEMBERSHIPS: u8 = 10;
}

pub type Snapshot = crate::ledger_sm::Snapshot;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;

/// Decodes a peer's payload, naming what was expected on failure.
pub fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, String> {
    codec::decode(bytes).map_err(|error| format!("malformed {what}: {error}"))
}

/// How snapshots are sent (`snapshot_transfer`).
#[derive(Clone, Copy, Debug)]
pub struct SnapshotSending {
    pub chunk_bytes: usize,
    /// Bytes per second at most; 0 for no limit.
    pub bytes_per_s: u64,
}

/// Makes one shard's connections to its peers.
#[derive(Clone)]
pub struct NetworkFactory {
    pub shard: String,
    pub client: PeerClient,
    pub snapshots: SnapshotSending,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerNetwork {
        PeerNetwork {
            shard: self.shard.clone(),
            target,
            addr: node.peer_addr.clone(),
            client: self.client.clone(),
            snapshots: self.snapshots,
        }
    }
}

/// One shard's view of one peer; the TCP connection underneath is shared by all shards.
pub struct PeerNetwork {
    shard: String,
    target: NodeId,
    addr: String,
    client: PeerClient,
    snapshots: SnapshotSending,
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

    /// Sends the snapshot `file` in chunks (`snapshot_transfer`), resuming where the
    /// receiver is, paced to `bytes_per_s`; answers the receiver's install response.
    async fn send_snapshot(
        &self,
        vote: Vote,
        meta: crate::types::SnapshotMeta,
        file: Arc<crate::ledger_sm::SnapshotFile>,
        timeout: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, TransportError> {
        use crate::snapshot_transfer::{ChunkReply, SnapshotChunk};
        let transfer = file.name();
        let total = file.bytes();
        let chunk_bytes = self.snapshots.chunk_bytes.max(1) as u64;
        let started = std::time::Instant::now();
        let (mut offset, mut sent, mut probe, mut stalls) = (0u64, 0u64, true, 0);
        loop {
            let end = if probe {
                offset
            } else {
                (offset + chunk_bytes).min(total)
            };
            let reading = file.clone();
            let data = tokio::task::spawn_blocking(move || {
                reading.read_at(offset, (end - offset) as usize)
            })
            .await
            .map_err(|e| TransportError::Remote(e.to_string()))?
            .map_err(|e| {
                TransportError::Remote(format!("reading the snapshot file to send: {e}"))
            })?;
            let chunk = SnapshotChunk {
                vote,
                meta: meta.clone(),
                transfer,
                total,
                offset,
                data,
            };
            let reply: ChunkReply = self.call(method::SNAPSHOT_CHUNK, &chunk, timeout).await?;
            let next = match reply {
                ChunkReply::Installed(response) => {
                    metrics::counter!("seat_ledger_snapshot_sent_bytes_total").increment(sent);
                    return Ok(response);
                }
                ChunkReply::Next(next) if next <= total => next,
                ChunkReply::Next(next) => {
                    return Err(TransportError::Remote(format!(
                        "the receiver asked for offset {next} of a {total}-byte snapshot"
                    )))
                }
            };
            // Progress is the receiver's word; a receiver that keeps asking for what
            // it was just sent is refusing the transfer.
            stalls = if next > offset || probe {
                0
            } else {
                stalls + 1
            };
            if stalls > 3 {
                return Err(TransportError::Remote(format!(
                    "the receiver makes no progress past offset {offset}"
                )));
            }
            sent += end - offset;
            offset = next;
            probe = false;
            if self.snapshots.bytes_per_s > 0 {
                let due = Duration::from_secs_f64(sent as f64 / self.snapshots.bytes_per_s as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
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
        // Per chunk: bounded in bytes, but the receiver installs after the last one.
        let timeout = option.hard_ttl().max(Duration::from_secs(60));
        let send = async {
            // Written to a file once, from the image pinned when the snapshot was built,
            // and shared by every follower it goes to.
            let file = snapshot.snapshot.file_blocking().await.map_err(|e| {
                NetworkError::from_string(format!("writing the snapshot to send: {e}"))
            })?;
            self.send_snapshot(vote, snapshot.meta, file, timeout)
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
