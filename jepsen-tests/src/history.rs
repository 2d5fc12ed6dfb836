//! Operation histories in the shape Jepsen uses: one JSON object per line with `index`,
//! `time` (ns since the run started), `process`, `type` (`invoke`, `ok`, `fail`,
//! `info`), `f` and `value`, plus `wall_ms` (the wall clock, which the ledger's log
//! clock is made of) and an optional `error`.
//!
//! This module owns the format: the operation type, the typed values each `f` carries,
//! the recorder that numbers and timestamps operations as clients run, and the writer
//! and reader of `history.jsonl`. It judges nothing; the checkers do.
//!
//! A client operation is an `invoke` followed by exactly one completion from the same
//! process. A completion is `ok` (it happened), `fail` (it certainly did not happen) or
//! `info` (unknown: a timeout, a lost connection, a 5xx). Only a definite rejection is
//! ever a `fail`. Nemesis events come from the process `"nemesis"` and are never paired
//! with client operations.

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A history that cannot be read or makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("history line {line}: {source}")]
    Parse {
        line: usize,
        source: serde_json::Error,
    },
    #[error("history op {index}: {reason}")]
    Shape { index: u64, reason: String },
}

impl HistoryError {
    pub fn shape(index: u64, reason: impl Into<String>) -> HistoryError {
        HistoryError::Shape {
            index,
            reason: reason.into(),
        }
    }
}

/// Jepsen's operation types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    Info,
}

/// Who performed an operation: a client process (a number) or the nemesis.
///
/// A client process that sees an `info` never issues another operation under the same
/// number, as in Jepsen: its operation may still be in flight, and a process has at most
/// one operation open at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    Client(u64),
    Nemesis,
}

impl Serialize for Process {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Process::Client(number) => serializer.serialize_u64(*number),
            Process::Nemesis => serializer.serialize_str("nemesis"),
        }
    }
}

impl<'de> Deserialize<'de> for Process {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Name(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(number) => Ok(Process::Client(number)),
            Raw::Name(name) if name == "nemesis" => Ok(Process::Nemesis),
            Raw::Name(name) => Err(de::Error::custom(format!(
                "process {name:?} is neither a number nor \"nemesis\""
            ))),
        }
    }
}

/// What an operation does. Client functions use the ledger's verbs; `read` is a seat
/// map, `read-counts` a show's seat counts, `read-bookings` the ledger's booking records
/// (with their log times) read at the end of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F {
    Lock,
    Confirm,
    Release,
    Read,
    ReadCounts,
    ReadBookings,
    /// Nemesis: a node crashed (kill -9 analogue).
    Kill,
    /// Nemesis: a node restarted on its old addresses and data.
    Restart,
    /// Nemesis: a node stopped with SIGSTOP.
    Pause,
    /// Nemesis: a paused node continued with SIGCONT.
    Resume,
    /// Nemesis: the network cut into parts.
    Partition,
    /// Nemesis: every cut link restored.
    Heal,
    /// Nemesis: a node's clock shifted (or reset).
    Clock,
    /// Nemesis: a leader transfer.
    Transfer,
    /// Nemesis: a voter removed or added back.
    Membership,
    /// Nemesis: the payment gateway misbehaves (or behaves again).
    Gateway,
    /// Nemesis: a node runs with a cluster file of its own (or the shared one again).
    Config,
    /// Nemesis: a snapshot taken (and the log purged), or a node caught up through one.
    Snapshot,
    /// Nemesis: a node's backup restored into its data directory.
    Restore,
}

impl F {
    /// Whether this is a nemesis action rather than a client operation.
    pub fn is_nemesis(self) -> bool {
        matches!(
            self,
            F::Kill
                | F::Restart
                | F::Pause
                | F::Resume
                | F::Partition
                | F::Heal
                | F::Clock
                | F::Transfer
                | F::Membership
                | F::Gateway
                | F::Config
                | F::Snapshot
                | F::Restore
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            F::Lock => "lock",
            F::Confirm => "confirm",
            F::Release => "release",
            F::Read => "read",
            F::ReadCounts => "read-counts",
            F::ReadBookings => "read-bookings",
            F::Kill => "kill",
            F::Restart => "restart",
            F::Pause => "pause",
            F::Resume => "resume",
            F::Partition => "partition",
            F::Heal => "heal",
            F::Clock => "clock",
            F::Transfer => "transfer",
            F::Membership => "membership",
            F::Gateway => "gateway",
            F::Config => "config",
            F::Snapshot => "snapshot",
            F::Restore => "restore",
        }
    }
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Op {
    /// Position in the history; strictly increasing.
    pub index: u64,
    /// Nanoseconds since the run started, on a monotonic clock: real-time order.
    pub time: u64,
    pub process: Process,
    #[serde(rename = "type")]
    pub kind: OpType,
    pub f: F,
    /// What the operation asked for and, on completions, what it got. The typed shapes
    /// are below (`LockValue`, `LockRefValue`, ...).
    #[serde(default)]
    pub value: serde_json::Value,
    /// Milliseconds since the Unix epoch when the line was recorded. The ledger's clock
    /// is the leader's wall clock, so checks about lock expiry compare against this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
    /// Why an operation failed or is unknown, for people reading the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Op {
    /// The value as one of the typed shapes; a mismatch is a history error.
    pub fn value_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, HistoryError> {
        serde_json::from_value(self.value.clone()).map_err(|error| {
            HistoryError::shape(
                self.index,
                format!("{} value does not parse: {error}", self.f.as_str()),
            )
        })
    }

    pub fn is_client(&self) -> bool {
        matches!(self.process, Process::Client(_))
    }
}

/// A seat's status as a seat map shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeatStatus {
    Available,
    Locked,
    Booked,
}

/// The consistency a read asked for, or was answered at (`X-Read-Consistency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    Linearizable,
    Session,
    Stale,
}

/// `lock`: `show`, `seats`, `user`, `ttl_ms` on invoke; `ok` adds `lock`, `booking` and
/// `expires_at_ms` (as the ledger answered them); `fail` adds `reason` (the problem type)
/// and, for `seats-taken`, `taken`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockValue {
    pub show: String,
    pub seats: Vec<u32>,
    pub user: u64,
    pub ttl_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booking: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken: Option<Vec<u32>>,
}

/// `confirm` and `release`: the lock (its booking has the same id), its owner, and the
/// seats it holds (from the lock's `ok`), so checkers know which seats it touches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRefValue {
    pub show: String,
    pub lock: String,
    pub user: u64,
    pub seats: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `read`: a seat map. `consistency` is what was asked, `served` what the answer says it
/// was (`X-Read-Consistency`), `index` its `X-Index`; `seats[i]` is seat `i`'s status.
/// `final_read` marks the read taken after every client stopped and the cluster healed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadValue {
    pub show: String,
    pub consistency: ReadConsistency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<ReadConsistency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<Vec<SeatStatus>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub final_read: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `read-counts`: a show's seat counts next to its capacity. Counts are signed so that a
/// negative count, which must never happen, can still be recorded and judged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountsValue {
    pub show: String,
    pub capacity: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booked: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One booking record as the ledger holds it. `updated_at_ms` is the log time of the
/// booking's last change: for a confirmed booking that was never cancelled, the log time
/// of its confirm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingRecord {
    pub show: String,
    pub booking: String,
    pub lock: String,
    pub user: u64,
    pub seats: Vec<u32>,
    /// The ledger's status word: `pending_payment`, `confirmed`, `expired`, `released`,
    /// `cancelled`.
    pub status: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub updated_at_ms: u64,
}

/// `read-bookings`: every booking of the run's users, read linearizably at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingsValue {
    pub users: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bookings: Option<Vec<BookingRecord>>,
}

/// `kill` and `restart`: which node, and the shard whose leader was targeted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NemesisValue {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    pub shard: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Milliseconds since the Unix epoch: the same clock the raft leaders stamp commands
/// with (`raft_node::node::now_ms`).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Numbers and timestamps operations as they happen, keeps them, and streams each line
/// to `history.jsonl` so a run that dies still leaves its history behind.
pub struct Recorder {
    started: Instant,
    inner: Mutex<RecorderInner>,
}

struct RecorderInner {
    ops: Vec<Op>,
    sink: Option<(PathBuf, BufWriter<File>)>,
    /// The first write error; reported by `finish` rather than failing a client.
    sink_error: Option<HistoryError>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder that only keeps operations in memory.
    pub fn new() -> Recorder {
        Recorder {
            started: Instant::now(),
            inner: Mutex::new(RecorderInner {
                ops: Vec::new(),
                sink: None,
                sink_error: None,
            }),
        }
    }

    /// A recorder that also appends every operation to `path` as it is recorded.
    pub fn to_file(path: &Path) -> Result<Recorder, HistoryError> {
        let file = File::create(path).map_err(|source| HistoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let recorder = Recorder::new();
        if let Ok(mut inner) = recorder.inner.lock() {
            inner.sink = Some((path.to_path_buf(), BufWriter::new(file)));
        }
        Ok(recorder)
    }

    /// Records one operation and returns it. Index and time are taken under one lock so
    /// that history order is real-time order.
    pub fn record(
        &self,
        process: Process,
        kind: OpType,
        f: F,
        value: serde_json::Value,
        error: Option<String>,
    ) -> Op {
        let Ok(mut inner) = self.inner.lock() else {
            // A poisoned lock means a recording thread panicked; keep the run going and
            // let the missing lines show in the history.
            return Op {
                index: u64::MAX,
                time: 0,
                process,
                kind,
                f,
                value,
                wall_ms: Some(wall_ms()),
                error,
            };
        };
        let op = Op {
            index: inner.ops.len() as u64,
            time: self.started.elapsed().as_nanos() as u64,
            process,
            kind,
            f,
            value,
            wall_ms: Some(wall_ms()),
            error,
        };
        let RecorderInner {
            sink, sink_error, ..
        } = &mut *inner;
        if let Some((path, writer)) = sink {
            if sink_error.is_none() {
                if let Err(source) = write_line(writer, &op) {
                    *sink_error = Some(HistoryError::Io {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        inner.ops.push(op.clone());
        op
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|inner| inner.ops.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flushes the file and returns every operation recorded.
    pub fn finish(&self) -> Result<Vec<Op>, HistoryError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| HistoryError::shape(0, "the recorder's lock is poisoned"))?;
        if let Some(error) = inner.sink_error.take() {
            return Err(error);
        }
        if let Some((path, writer)) = &mut inner.sink {
            writer.flush().map_err(|source| HistoryError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(inner.ops.clone())
    }
}

fn write_line(writer: &mut impl Write, op: &Op) -> std::io::Result<()> {
    serde_json::to_writer(&mut *writer, op)?;
    writer.write_all(b"\n")
}

/// Writes a whole history, one operation per line.
pub fn write_jsonl(path: &Path, ops: &[Op]) -> Result<(), HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = BufWriter::new(File::create(path).map_err(io)?);
    for op in ops {
        write_line(&mut writer, op).map_err(io)?;
    }
    writer.flush().map_err(io)
}

/// Reads a history file; a line that does not parse is an error naming the line.
pub fn read_jsonl(path: &Path) -> Result<Vec<Op>, HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut ops = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            line: number + 1,
            source,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Parses a history held in memory (the same format as `read_jsonl`).
pub fn parse_jsonl(text: &str) -> Result<Vec<Op>, HistoryError> {
    let mut ops = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(line).map_err(|source| HistoryError::Parse {
            line: number + 1,
            source,
        })?;
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_recorded_history_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::to_file(&path).unwrap();
        let value = json!({"show": "mumbai-7", "seats": [1], "user": 3, "ttl_ms": 10_000});
        recorder.record(
            Process::Client(0),
            OpType::Invoke,
            F::Lock,
            value.clone(),
            None,
        );
        recorder.record(
            Process::Client(0),
            OpType::Info,
            F::Lock,
            value,
            Some("timeout".into()),
        );
        recorder.record(
            Process::Nemesis,
            OpType::Info,
            F::Kill,
            json!({"node": 2, "shard": "mumbai"}),
            None,
        );
        let ops = recorder.finish().unwrap();
        let read = read_jsonl(&path).unwrap();
        assert_eq!(ops, read);
        assert_eq!(read[2].process, Process::Nemesis);
        assert_eq!(read[1].kind, OpType::Info);
        let lock: LockValue = read[0].value_as().unwrap();
        assert_eq!(lock.seats, vec![1]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""process":"nemesis""#), "{text}");
        assert!(text.contains(r#""type":"info""#), "{text}");
    }

    #[test]
    fn lines_that_do_not_parse_are_errors_not_panics() {
        let good = r#"{"index":0,"time":1,"process":0,"type":"invoke","f":"read","value":{}}"#;
        assert!(parse_jsonl(good).is_ok());
        for bad in [
            "not json",
            r#"{"index":0,"time":1,"process":"bob","type":"invoke","f":"read"}"#,
            r#"{"index":0,"time":1,"process":0,"type":"maybe","f":"read"}"#,
            r#"{"index":0,"time":1,"process":0,"type":"ok","f":"teleport"}"#,
            r#"{"index":-1,"time":1,"process":0,"type":"ok","f":"read"}"#,
        ] {
            let text = format!("{good}\n{bad}\n");
            match parse_jsonl(&text) {
                Err(HistoryError::Parse { line: 2, .. }) => {}
                other => panic!("{bad}: {other:?}"),
            }
        }
        let ops = parse_jsonl(good).unwrap();
        assert!(ops[0].value_as::<LockValue>().is_err());
    }
}
