//! The snapshot byte format: a framed, checksummed image of a shard's state, its
//! recent events and the caller's applied-position marker.
//!
//! Layout: `MAGIC (8) | version u32 LE | body length u64 LE | body | blake3(body) (32)`.
//! The body is the codec encoding of `SnapshotBody`. Anything that does not match the
//! frame, the checksum or the invariants is refused with an error; nothing is
//! installed from it.

use crate::codec;
use crate::event::EventRecord;
use crate::ledger::{Ledger, State};
use crate::limits::Limits;
use serde::{Deserialize, Serialize};

const MAGIC: &[u8; 8] = b"SEATSNAP";
/// Version 2 added `events_kept_from`, version 3 `rules`. Version 2 is still read (its
/// shard had no replicated rules).
const VERSION: u32 = 3;
const HEADER_BYTES: usize = 8 + 4 + 8;
const CHECKSUM_BYTES: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotBody {
    /// Opaque to the ledger: the replication layer's record of what is applied.
    pub marker: Vec<u8>,
    pub state: State,
    pub events: Vec<EventRecord>,
    /// Every event at or after this log index is in `events`; older ones were dropped
    /// by the retention window (consumers behind it are told so).
    pub events_kept_from: u64,
    /// The shard's replicated rules (`CommandKind::SetLimits`), if set.
    pub rules: Option<Limits>,
}

/// The body of a version 2 snapshot.
#[derive(Deserialize)]
struct SnapshotBodyV2 {
    marker: Vec<u8>,
    state: State,
    events: Vec<EventRecord>,
    events_kept_from: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("snapshot is truncated: {0} bytes is shorter than its frame")]
    Truncated(usize),
    #[error("not a seat-ledger snapshot (bad magic bytes)")]
    BadMagic,
    #[error("snapshot version {0} is not supported (this build reads versions 2 and 3)")]
    BadVersion(u32),
    #[error("snapshot length field says {declared} bytes but {actual} follow")]
    BadLength { declared: u64, actual: usize },
    #[error("snapshot checksum mismatch: the bytes were corrupted")]
    BadChecksum,
    #[error("snapshot body does not decode: {0}")]
    Undecodable(String),
    #[error("snapshot state breaks an invariant: {0}")]
    Inconsistent(String),
}

pub fn encode(body: &SnapshotBody) -> Vec<u8> {
    frame_payload(&codec::encode(body))
}

/// Frames encoded body bytes with the header and checksum (`encode` is this over the
/// codec encoding; the fuzz targets use it to reach the body decoder).
pub fn frame_payload(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len() + CHECKSUM_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out
}

/// A verified snapshot: the ledger rebuilt from it, with its marker and events.
pub struct Decoded {
    pub marker: Vec<u8>,
    pub events: Vec<EventRecord>,
    pub events_kept_from: u64,
    pub ledger: Ledger,
}

/// Decodes and verifies snapshot bytes; the ledger built from them satisfies every
/// invariant.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, SnapshotError> {
    if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES {
        return Err(SnapshotError::Truncated(bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if version != VERSION && version != 2 {
        return Err(SnapshotError::BadVersion(version));
    }
    let declared = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    let actual = bytes.len() - HEADER_BYTES - CHECKSUM_BYTES;
    if declared != actual as u64 {
        return Err(SnapshotError::BadLength { declared, actual });
    }
    let payload = &bytes[HEADER_BYTES..HEADER_BYTES + actual];
    if blake3::hash(payload).as_bytes() != &bytes[HEADER_BYTES + actual..] {
        return Err(SnapshotError::BadChecksum);
    }
    let body: SnapshotBody = if version == 2 {
        let v2: SnapshotBodyV2 = codec::decode(payload).map_err(SnapshotError::Undecodable)?;
        SnapshotBody {
            marker: v2.marker,
            state: v2.state,
            events: v2.events,
            events_kept_from: v2.events_kept_from,
            rules: None,
        }
    } else {
        codec::decode(payload).map_err(SnapshotError::Undecodable)?
    };
    let SnapshotBody {
        marker,
        state,
        events,
        events_kept_from,
        rules,
    } = body;
    if let Some(Err(invalid)) = rules.as_ref().map(Limits::validate) {
        return Err(SnapshotError::Inconsistent(format!(
            "replicated rules: {}: {}",
            invalid.field, invalid.problem
        )));
    }
    let mut ledger = Ledger::from_state(limits.clone(), state);
    ledger.adopt_rules(rules);
    ledger
        .check_invariants()
        .map_err(SnapshotError::Inconsistent)?;
    Ok(Decoded {
        marker,
        events,
        events_kept_from,
        ledger,
    })
}
