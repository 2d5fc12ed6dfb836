//! The client protocol that `api` nodes speak to raft-nodes (HTTP on the node's client
//! listener). These types are the contract between the two tiers; they carry ledger
//! commands and queries and say nothing of openraft.
//!
//! Bodies are JSON by default, for people and curl. A client may send and ask for the
//! binary form instead ([`BINARY_MEDIA_TYPE`] as `content-type` and `accept`): the
//! bincode encoding (standard configuration, `state_machine::codec`) of the same request
//! types, and of the replies through serde `remote` definitions (`binary`, externally
//! tagged, since the replies' JSON form is internally tagged). It carries the same values
//! at a fraction of the cost: decoding a JSON seat map of hundreds of seats was the api's
//! largest cost.

use crate::types::NodeId;
use serde::{Deserialize, Serialize};
use state_machine::{codec, CommandKind, Outcome, Query, QueryResponse, Rejection};

/// The media type of the client protocol's binary bodies.
pub const BINARY_MEDIA_TYPE: &str = "application/x-seat-ledger-bincode";

/// A request or reply of the client protocol in its binary form.
pub trait Binary: Sized {
    fn into_binary(self) -> Vec<u8>;
    /// Decodes a value that must use up all of `bytes`; malformed bytes are an error
    /// that names what was being read.
    fn from_binary(bytes: &[u8]) -> Result<Self, String>;
}

/// `Binary` for a type whose binary form is its own serde form.
macro_rules! binary_as_itself {
    ($type:ty, $what:literal) => {
        impl Binary for $type {
            fn into_binary(self) -> Vec<u8> {
                codec::encode(&self)
            }
            fn from_binary(bytes: &[u8]) -> Result<Self, String> {
                codec::decode(bytes).map_err(|e| format!("malformed binary {}: {e}", $what))
            }
        }
    };
}

binary_as_itself!(WriteRequest, "write request");
binary_as_itself!(ReadRequest, "read request");
binary_as_itself!(EventsReply, "events reply");

impl Binary for WriteReply {
    fn into_binary(self) -> Vec<u8> {
        codec::encode(&binary::WriteReply(self))
    }
    fn from_binary(bytes: &[u8]) -> Result<Self, String> {
        codec::decode::<binary::WriteReply>(bytes)
            .map(|reply| reply.0)
            .map_err(|e| format!("malformed binary write reply: {e}"))
    }
}

impl Binary for ReadReply {
    fn into_binary(self) -> Vec<u8> {
        codec::encode(&binary::ReadReply(self))
    }
    fn from_binary(bytes: &[u8]) -> Result<Self, String> {
        codec::decode::<binary::ReadReply>(bytes)
            .map(|reply| reply.0)
            .map_err(|e| format!("malformed binary read reply: {e}"))
    }
}

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
#[serde(
    tag = "status",
    rename_all = "snake_case",
    try_from = "wire::WriteReplyFields"
)]
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
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
#[serde(
    tag = "status",
    rename_all = "snake_case",
    try_from = "wire::ReadReplyFields"
)]
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

/// Reading the replies. They are internally tagged (`"status": "done"`, ...), which
/// serde's derive reads by first buffering the whole reply in a generic tree and then
/// reading it again: with a seat map of hundreds of seats that was the largest cost of
/// a read in the profile. These flat structs read the same JSON in one pass.
mod wire {
    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum WriteStatus {
        Done,
        NotLeader,
        Unknown,
        Unavailable,
    }

    #[derive(Deserialize)]
    pub struct WriteReplyFields {
        status: WriteStatus,
        node: NodeId,
        #[serde(default)]
        outcome: Option<Outcome>,
        #[serde(default)]
        index: Option<u64>,
        #[serde(default)]
        leader: Option<LeaderHint>,
        #[serde(default)]
        reason: Option<String>,
    }

    fn missing(reply: &str, field: &str) -> String {
        format!("a {reply} reply without `{field}`")
    }

    impl TryFrom<WriteReplyFields> for WriteReply {
        type Error = String;

        fn try_from(f: WriteReplyFields) -> Result<WriteReply, String> {
            let node = f.node;
            Ok(match f.status {
                WriteStatus::Done => WriteReply::Done {
                    outcome: f.outcome.ok_or_else(|| missing("done", "outcome"))?,
                    index: f.index.ok_or_else(|| missing("done", "index"))?,
                    node,
                },
                WriteStatus::NotLeader => WriteReply::NotLeader {
                    leader: f.leader,
                    node,
                },
                WriteStatus::Unknown => WriteReply::Unknown {
                    reason: f.reason.ok_or_else(|| missing("unknown", "reason"))?,
                    node,
                },
                WriteStatus::Unavailable => WriteReply::Unavailable {
                    reason: f.reason.ok_or_else(|| missing("unavailable", "reason"))?,
                    node,
                },
            })
        }
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ReadStatus {
        Done,
        Unavailable,
    }

    #[derive(Deserialize)]
    pub struct ReadReplyFields {
        status: ReadStatus,
        node: NodeId,
        #[serde(default)]
        result: Option<Result<QueryResponse, Rejection>>,
        #[serde(default)]
        applied_index: Option<u64>,
        #[serde(default)]
        consistency: Option<Consistency>,
        #[serde(default)]
        lag: Option<u64>,
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        leader: Option<LeaderHint>,
    }

    impl TryFrom<ReadReplyFields> for ReadReply {
        type Error = String;

        fn try_from(f: ReadReplyFields) -> Result<ReadReply, String> {
            let node = f.node;
            Ok(match f.status {
                ReadStatus::Done => ReadReply::Done {
                    result: f.result.ok_or_else(|| missing("done", "result"))?,
                    node,
                    applied_index: f
                        .applied_index
                        .ok_or_else(|| missing("done", "applied_index"))?,
                    consistency: f
                        .consistency
                        .ok_or_else(|| missing("done", "consistency"))?,
                    lag: f.lag,
                },
                ReadStatus::Unavailable => ReadReply::Unavailable {
                    reason: f.reason.ok_or_else(|| missing("unavailable", "reason"))?,
                    node,
                    leader: f.leader,
                },
            })
        }
    }
}

/// The replies' binary forms: serde's `remote` definitions of the same variants and
/// fields (checked against the real enums at compile time), externally tagged, since
/// bincode cannot read serde's internally tagged form.
mod binary {
    use super::*;

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "super::WriteReply")]
    enum WriteReplyDef {
        Done {
            outcome: Outcome,
            index: u64,
            node: NodeId,
        },
        NotLeader {
            leader: Option<LeaderHint>,
            node: NodeId,
        },
        Unknown {
            reason: String,
            node: NodeId,
        },
        Unavailable {
            reason: String,
            node: NodeId,
        },
    }

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "super::ReadReply")]
    enum ReadReplyDef {
        Done {
            result: Result<QueryResponse, Rejection>,
            node: NodeId,
            applied_index: u64,
            consistency: Consistency,
            lag: Option<u64>,
        },
        Unavailable {
            reason: String,
            node: NodeId,
            leader: Option<LeaderHint>,
        },
    }

    #[derive(Serialize, Deserialize)]
    pub struct WriteReply(#[serde(with = "WriteReplyDef")] pub super::WriteReply);

    #[derive(Serialize, Deserialize)]
    pub struct ReadReply(#[serde(with = "ReadReplyDef")] pub super::ReadReply);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use state_machine::{Applied, BookingId, LockId, SeatId};

    fn hint() -> Option<LeaderHint> {
        Some(LeaderHint {
            node: 2,
            client_addr: "127.0.0.1:9".into(),
        })
    }

    fn sample_writes() -> Vec<WriteReply> {
        vec![
            WriteReply::Done {
                outcome: Outcome::Applied(Applied::SeatsLocked {
                    lock: LockId(4),
                    booking: BookingId(4),
                    seats: vec![SeatId(1), SeatId(2)],
                    expires_at: 9,
                    total_price_minor: 500,
                }),
                index: 12,
                node: 1,
            },
            WriteReply::NotLeader {
                leader: hint(),
                node: 1,
            },
            WriteReply::NotLeader {
                leader: None,
                node: 1,
            },
            WriteReply::Unknown {
                reason: "lost".into(),
                node: 3,
            },
            WriteReply::Unavailable {
                reason: "clock".into(),
                node: 3,
            },
        ]
    }

    fn sample_reads() -> Vec<ReadReply> {
        vec![
            ReadReply::Done {
                result: Ok(QueryResponse::Cities(vec!["mumbai".into()])),
                node: 1,
                applied_index: 40,
                consistency: Consistency::Session,
                lag: Some(2),
            },
            ReadReply::Done {
                result: Err(Rejection::UnknownShow {
                    show: state_machine::ShowId(3),
                }),
                node: 1,
                applied_index: 40,
                consistency: Consistency::Linearizable,
                lag: None,
            },
            ReadReply::Unavailable {
                reason: "no leader".into(),
                node: 2,
                leader: hint(),
            },
        ]
    }

    /// Every reply reads back as itself, in the same JSON shape as the derived
    /// (internally tagged) format.
    #[test]
    fn replies_round_trip_in_the_tagged_shape() {
        for reply in sample_writes() {
            let text = serde_json::to_string(&reply).unwrap();
            let back: WriteReply = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
        for reply in sample_reads() {
            let text = serde_json::to_string(&reply).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap();
            assert!(value["status"].is_string(), "{text}");
            let back: ReadReply = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
    }

    /// The binary form carries every request and reply unchanged (compared through their
    /// JSON form), and refuses truncated, extended or foreign bytes with an error.
    #[test]
    fn binary_bodies_round_trip_and_bad_bytes_are_errors() {
        for reply in sample_writes() {
            let text = serde_json::to_string(&reply).unwrap();
            let bytes = reply.into_binary();
            let back = WriteReply::from_binary(&bytes).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
            let error = WriteReply::from_binary(&bytes[..bytes.len() - 1]).unwrap_err();
            assert!(error.contains("write reply"), "{error}");
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(WriteReply::from_binary(&longer).is_err());
        }
        for reply in sample_reads() {
            let text = serde_json::to_string(&reply).unwrap();
            let bytes = reply.into_binary();
            let back = ReadReply::from_binary(&bytes).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
            assert!(ReadReply::from_binary(&bytes[..bytes.len() - 1]).is_err());
        }
        let write = WriteRequest {
            request_id: Some("r1".into()),
            command: CommandKind::ExpireLocks { max_locks: 5 },
        };
        let text = serde_json::to_string(&write).unwrap();
        let back = WriteRequest::from_binary(&write.into_binary()).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        let read = ReadRequest {
            query: Query::Cities,
            consistency: Consistency::Stale,
            min_index: Some(7),
        };
        let text = serde_json::to_string(&read).unwrap();
        let back = ReadRequest::from_binary(&read.into_binary()).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
        // JSON is not the binary form, and an unknown variant tag is refused.
        assert!(WriteRequest::from_binary(text.as_bytes()).is_err());
        assert!(ReadReply::from_binary(&[9, 0, 0]).is_err());
        assert!(WriteReply::from_binary(&[]).is_err());
    }

    #[test]
    fn incomplete_or_unknown_replies_are_errors_that_name_what_is_missing() {
        let cases = [
            (json!({"status": "done", "node": 1, "index": 3}), "outcome"),
            (json!({"status": "unknown", "node": 1}), "reason"),
            (json!({"status": "retired", "node": 1}), "retired"),
            (json!({"node": 1}), "status"),
        ];
        for (reply, named) in cases {
            let error = serde_json::from_value::<WriteReply>(reply.clone()).unwrap_err();
            assert!(error.to_string().contains(named), "{reply}: {error}");
        }
        let read = json!({"status": "done", "node": 1, "result": {"Ok": {"Cities": []}}});
        let error = serde_json::from_value::<ReadReply>(read).unwrap_err();
        assert!(error.to_string().contains("applied_index"), "{error}");
    }
}
