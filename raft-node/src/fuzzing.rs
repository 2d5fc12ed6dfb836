//! Entry points for the cargo-fuzz targets in `fuzz/` (feature `fuzzing` only): every
//! decoder that reads bytes a peer or a client sends, reachable without a network.
//!
//! Each returns what it decoded (or the decode error) so a target can check that bad
//! bytes become errors, never panics or unbounded allocations.

use crate::network::{decode, method, Vote};
use crate::protocol::{ReadRequest, WriteRequest};
use crate::types::{SnapshotMeta, TypeConfig};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};

/// A peer frame body (after the 4-byte length prefix): the frame's kind, or why it
/// was refused.
pub fn peer_frame(body: &[u8]) -> Result<&'static str, String> {
    crate::transport::frame_kind(body)
}

/// One encoded body of each peer frame kind, for the seed corpus.
pub fn sample_frames() -> Vec<Vec<u8>> {
    crate::transport::sample_frame_bodies()
}

/// The payload of a peer `Request` frame with method code `method`, decoded into the
/// openraft message that `PeerHandler` would hand to Raft.
pub fn peer_payload(method: u8, payload: &[u8]) -> Result<(), String> {
    match method {
        method::APPEND_ENTRIES => {
            decode::<AppendEntriesRequest<TypeConfig>>("append", payload).map(drop)
        }
        method::VOTE | method::PRE_VOTE => {
            decode::<VoteRequest<TypeConfig>>("vote", payload).map(drop)
        }
        method::FULL_SNAPSHOT => {
            decode::<(Vote, SnapshotMeta, Vec<u8>)>("snapshot", payload).map(drop)
        }
        method::TRANSFER_LEADER => {
            decode::<TransferLeaderRequest<TypeConfig>>("transfer", payload).map(drop)
        }
        method::READ_INDEX | method::CLOCK => Ok(()),
        other => Err(format!("unknown peer method {other}")),
    }
}

/// A client-protocol body (`POST /v1/shards/{shard}/write` or `/read`), as JSON or in
/// the binary form.
pub fn client_body(write: bool, binary: bool, body: &[u8]) -> Result<(), String> {
    use crate::protocol::Binary;
    match (write, binary) {
        (true, true) => WriteRequest::from_binary(body).map(drop),
        (false, true) => ReadRequest::from_binary(body).map(drop),
        (true, false) => serde_json::from_slice::<WriteRequest>(body)
            .map(drop)
            .map_err(|e| e.to_string()),
        (false, false) => serde_json::from_slice::<ReadRequest>(body)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}
