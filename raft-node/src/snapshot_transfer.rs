//! Snapshots sent in bounded chunks over the peer transport (`method::SNAPSHOT_CHUNK`).
//!
//! A busy shard's snapshot (every booking, the request ids, the kept events) outgrows
//! any single frame within minutes of an on-sale; sent whole, it was refused by the
//! frame limit and openraft retried forever, so a follower behind the purge point could
//! never catch up. Now the leader sends it in chunks of `snapshot_chunk_kib`, one at a
//! time (each waits for its answer, so heartbeats, votes and clock samples of every
//! shard on the shared connection wait behind at most one chunk), at most
//! `snapshot_send_mib_per_s` (a catching-up replica cannot starve the leader).
//!
//! The receiver keeps one transfer per shard (`Inbox`), named by the BLAKE3 hash of the
//! whole snapshot: a sender that lost its connection, or a new leader sending the same
//! snapshot, first asks where to resume (a chunk with no data) and goes on from there.
//! A chunk of another transfer replaces the one held. When the last byte arrives the
//! assembled bytes must hash to the transfer's name, then they are installed (and the
//! snapshot format checks its own frame, checksum and invariants); bad chunks are
//! refused with an error and change nothing else.

use crate::network::Vote;
use crate::types::{SnapshotMeta, TypeConfig};
use openraft::raft::SnapshotResponse;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Largest snapshot a receiver assembles: the codec's own decode limit.
pub const SNAPSHOT_BYTES_MAX: u64 = state_machine::codec::DECODE_BYTES_MAX as u64;

/// One piece of a snapshot. A chunk with no data asks where to resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    /// The transfer's name: the first 16 bytes of the BLAKE3 hash of the whole snapshot.
    pub transfer: [u8; 16],
    pub total: u64,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The receiver's answer to a chunk.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChunkReply {
    /// Send from this offset next.
    Next(u64),
    /// The last chunk arrived and the snapshot was installed.
    Installed(SnapshotResponse<TypeConfig>),
}

/// The name of a transfer of `bytes`.
pub fn transfer_name(bytes: &[u8]) -> [u8; 16] {
    let hash = blake3::hash(bytes);
    let mut name = [0u8; 16];
    name.copy_from_slice(&hash.as_bytes()[..16]);
    name
}

/// What a received chunk leads to.
#[derive(Debug)]
pub enum Received {
    /// Ask the sender for this offset next.
    Next(u64),
    /// Every byte is here and hashes to the transfer's name: install it.
    Complete {
        vote: Vote,
        meta: SnapshotMeta,
        bytes: Vec<u8>,
    },
}

struct Partial {
    transfer: [u8; 16],
    total: u64,
    bytes: Vec<u8>,
}

/// A shard's snapshot transfer in progress, on the receiving side.
#[derive(Default)]
pub struct Inbox {
    partial: Mutex<Option<Partial>>,
}

impl Inbox {
    /// Takes one chunk. Errors name what is wrong with the chunk; a refused chunk leaves
    /// the transfer held as it was, except that a complete transfer whose bytes do not
    /// hash to its name is dropped (it must start again).
    pub fn receive(&self, chunk: SnapshotChunk) -> Result<Received, String> {
        let SnapshotChunk {
            vote,
            meta,
            transfer,
            total,
            offset,
            data,
        } = chunk;
        if total == 0 || total > SNAPSHOT_BYTES_MAX {
            return Err(format!(
                "snapshot chunk: a total of {total} bytes is outside 1..={SNAPSHOT_BYTES_MAX}"
            ));
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= total)
            .ok_or_else(|| {
                format!(
                    "snapshot chunk: {} bytes at offset {offset} pass the total of {total}",
                    data.len()
                )
            })?;
        let mut slot = self
            .partial
            .lock()
            .map_err(|_| "snapshot inbox poisoned by a panic".to_owned())?;
        let same = slot
            .as_ref()
            .is_some_and(|p| p.transfer == transfer && p.total == total);
        if !same {
            // Another snapshot (or the first chunk of one): it replaces what was held.
            *slot = Some(Partial {
                transfer,
                total,
                bytes: Vec::new(),
            });
        }
        let Some(partial) = slot.as_mut() else {
            return Err("snapshot inbox lost its transfer".into());
        };
        let held = partial.bytes.len() as u64;
        if offset != held || data.is_empty() {
            // A probe, a repeat or a gap: say where to go on.
            return Ok(Received::Next(held));
        }
        partial.bytes.extend_from_slice(&data);
        if end < total {
            return Ok(Received::Next(end));
        }
        let Some(Partial { bytes, .. }) = slot.take() else {
            return Err("snapshot inbox lost its transfer".into());
        };
        if transfer_name(&bytes) != transfer {
            return Err(
                "snapshot transfer: the assembled bytes do not match their hash; \
                        it starts again"
                    .into(),
            );
        }
        Ok(Received::Complete { vote, meta, bytes })
    }

    /// Bytes held of the transfer in progress (status and tests).
    pub fn held_bytes(&self) -> u64 {
        self.partial
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|p| p.bytes.len() as u64))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bytes: &[u8], transfer: [u8; 16], offset: usize, len: usize) -> SnapshotChunk {
        SnapshotChunk {
            vote: Vote::new(1, 1),
            meta: SnapshotMeta::default(),
            transfer,
            total: bytes.len() as u64,
            offset: offset as u64,
            data: bytes[offset..offset + len].to_vec(),
        }
    }

    fn next(received: Result<Received, String>) -> u64 {
        match received {
            Ok(Received::Next(offset)) => offset,
            other => panic!("expected Next, got {other:?}"),
        }
    }

    #[test]
    fn chunks_assemble_and_resume_where_the_receiver_is() {
        let bytes: Vec<u8> = (0..10_000u32).map(|n| (n * 7) as u8).collect();
        let name = transfer_name(&bytes);
        let inbox = Inbox::default();
        assert_eq!(next(inbox.receive(chunk(&bytes, name, 0, 0))), 0, "probe");
        assert_eq!(next(inbox.receive(chunk(&bytes, name, 0, 4_000))), 4_000);
        // The connection dropped; the sender starts over and is told where to resume.
        assert_eq!(next(inbox.receive(chunk(&bytes, name, 0, 4_000))), 4_000);
        assert_eq!(next(inbox.receive(chunk(&bytes, name, 0, 0))), 4_000);
        assert_eq!(
            next(inbox.receive(chunk(&bytes, name, 8_000, 2_000))),
            4_000,
            "gap"
        );
        assert_eq!(
            next(inbox.receive(chunk(&bytes, name, 4_000, 4_000))),
            8_000
        );
        match inbox.receive(chunk(&bytes, name, 8_000, 2_000)) {
            Ok(Received::Complete { bytes: got, .. }) => assert_eq!(got, bytes),
            other => panic!("{other:?}"),
        }
        assert_eq!(inbox.held_bytes(), 0, "a finished transfer is not held");
    }

    #[test]
    fn another_snapshot_replaces_the_transfer_held() {
        let first = vec![1u8; 1_000];
        let second = vec![2u8; 1_000];
        let inbox = Inbox::default();
        next(inbox.receive(chunk(&first, transfer_name(&first), 0, 500)));
        assert_eq!(inbox.held_bytes(), 500);
        let name = transfer_name(&second);
        assert_eq!(next(inbox.receive(chunk(&second, name, 0, 0))), 0);
        next(inbox.receive(chunk(&second, name, 0, 500)));
        assert!(matches!(
            inbox.receive(chunk(&second, name, 500, 500)),
            Ok(Received::Complete { .. })
        ));
    }

    #[test]
    fn bad_chunks_are_refused() {
        let bytes = vec![3u8; 100];
        let name = transfer_name(&bytes);
        let inbox = Inbox::default();
        let mut past_end = chunk(&bytes, name, 50, 50);
        past_end.offset = 60;
        assert!(inbox
            .receive(past_end)
            .unwrap_err()
            .contains("pass the total"));
        let mut huge = chunk(&bytes, name, 0, 10);
        huge.total = SNAPSHOT_BYTES_MAX + 1;
        assert!(inbox.receive(huge).unwrap_err().contains("outside"));
        let mut overflow = chunk(&bytes, name, 0, 10);
        overflow.offset = u64::MAX;
        assert!(inbox.receive(overflow).is_err());
        // Bytes that do not hash to the transfer's name are never installed.
        let forged = [9u8; 16];
        next(inbox.receive(chunk(&bytes, forged, 0, 50)));
        let error = inbox.receive(chunk(&bytes, forged, 50, 50)).unwrap_err();
        assert!(error.contains("do not match"), "{error}");
        assert_eq!(inbox.held_bytes(), 0);
    }
}
