//! Checkers: each judges a prepared history and answers `valid: true | false |
//! "unknown"` with the anomalies it found. None of them ever passes a history it could
//! not fully judge: a search that runs out of its budget, or a check that lacks its
//! evidence, answers `unknown`.
//!
//! # Layout
//! - `calls`: pairs invokes with completions into typed calls (shared by all checkers).
//! - `linearizable`: per-seat linearizability (Wing-Gong/Lowe search, bounded).
//! - `double_booking`: no seat confirmed for two bookings.
//! - `lost_confirm`: every acknowledged confirm is booked in the final read.
//! - `lock_expiry`: no confirm accepted after its lock expired on the log clock, and
//!   locks live for their TTL on the log clock.
//! - `counts`: seat counts never negative, never over capacity, always adding up.
//! - `reads`: linearizable reads are never stale; session reads see their own writes.
//! - `saga`: every booking confirmed and paid once, or not confirmed and charged
//!   nothing (final state and the gateway's books; saga workload only).
//! - `replicas`: replicas of a shard at one applied index hold equal ledger digests
//!   (sampled from every node after the run).

pub mod calls;
pub mod counts;
pub mod double_booking;
pub mod linearizable;
pub mod lock_expiry;
pub mod lost_confirm;
pub mod reads;
pub mod replicas;
pub mod saga;
#[cfg(test)]
pub(crate) mod testkit;

use crate::history::{HistoryError, Op};
pub use calls::{Action, Call, Outcome, Prepared};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// A checker's verdict. Serialised as Jepsen does: `true`, `false` or `"unknown"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker could not decide (budget exhausted, evidence missing). Never a pass.
    Unknown,
}

impl Validity {
    /// The verdict of several checks: any anomaly wins, then any unknown.
    pub fn combine(verdicts: impl IntoIterator<Item = Validity>) -> Validity {
        let mut combined = Validity::Valid;
        for verdict in verdicts {
            combined = match (combined, verdict) {
                (Validity::Invalid, _) | (_, Validity::Invalid) => Validity::Invalid,
                (Validity::Unknown, _) | (_, Validity::Unknown) => Validity::Unknown,
                _ => Validity::Valid,
            };
        }
        combined
    }
}

impl Serialize for Validity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => serializer.serialize_bool(true),
            Validity::Invalid => serializer.serialize_bool(false),
            Validity::Unknown => serializer.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Validity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Bool(true) => Ok(Validity::Valid),
            serde_json::Value::Bool(false) => Ok(Validity::Invalid),
            serde_json::Value::String(s) if s == "unknown" => Ok(Validity::Unknown),
            other => Err(serde::de::Error::custom(format!(
                "valid must be true, false or \"unknown\", not {other}"
            ))),
        }
    }
}

/// One thing a checker found wrong, with the history indexes that show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// A short stable name, e.g. `double-booking`, `stale-read`.
    pub kind: String,
    pub detail: String,
    /// History indexes of the operations involved.
    pub ops: Vec<u64>,
}

impl Anomaly {
    pub fn new(kind: &str, detail: impl Into<String>, ops: Vec<u64>) -> Anomaly {
        Anomaly {
            kind: kind.into(),
            detail: detail.into(),
            ops,
        }
    }
}

/// What one checker concluded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub checker: String,
    pub valid: Validity,
    /// At most `CheckOptions::anomalies_max` of them; `anomaly_count` has the total.
    pub anomalies: Vec<Anomaly>,
    pub anomaly_count: usize,
    /// Why the verdict is unknown, what evidence was used, how much was searched.
    pub notes: Vec<String>,
}

impl CheckResult {
    pub fn new(checker: &str) -> CheckResult {
        CheckResult {
            checker: checker.into(),
            valid: Validity::Valid,
            anomalies: Vec::new(),
            anomaly_count: 0,
            notes: Vec::new(),
        }
    }

    /// Records an anomaly; the verdict becomes `false`.
    pub fn anomaly(&mut self, anomaly: Anomaly, options: &CheckOptions) {
        self.valid = Validity::Invalid;
        self.anomaly_count += 1;
        if self.anomalies.len() < options.anomalies_max {
            self.anomalies.push(anomaly);
        }
    }

    /// The verdict becomes `unknown` unless an anomaly already made it `false`.
    pub fn unknown(&mut self, why: impl Into<String>) {
        if self.valid == Validity::Valid {
            self.valid = Validity::Unknown;
        }
        self.notes.push(why.into());
    }

    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }
}

/// Bounds and tolerances of the checkers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Search states the linearizability checker may explore per seat before it gives
    /// up with `unknown`.
    pub max_states: u64,
    /// Calls a history may have; larger histories are `unknown` for every checker, which
    /// keeps the quadratic checks bounded.
    pub max_calls: usize,
    /// Tolerance between the recorder's wall clock and the leaders' clock. In-process
    /// runs share one clock, so this only covers millisecond truncation and small
    /// adjustments of the system clock.
    pub clock_slack_ms: u64,
    /// Anomalies listed per checker (all are counted).
    pub anomalies_max: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_states: 500_000,
            max_calls: 50_000,
            clock_slack_ms: 20,
            anomalies_max: 20,
        }
    }
}

/// Every checker's result and the combined verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub valid: Validity,
    pub checkers: Vec<CheckResult>,
}

/// Prepares the history and runs every checker on it.
pub fn check_all(ops: &[Op], options: &CheckOptions) -> Result<Summary, HistoryError> {
    let prepared = Prepared::from_ops(ops)?;
    Ok(check_prepared(&prepared, options))
}

pub fn check_prepared(prepared: &Prepared, options: &CheckOptions) -> Summary {
    let checkers = vec![
        linearizable::check(prepared, options),
        double_booking::check(prepared, options),
        lost_confirm::check(prepared, options),
        lock_expiry::check(prepared, options),
        counts::check(prepared, options),
        reads::check(prepared, options),
    ];
    Summary {
        valid: Validity::combine(checkers.iter().map(|c| c.valid)),
        checkers,
    }
}

/// The common guard of every checker: a history over the size bound is `unknown`.
pub(crate) fn too_large(prepared: &Prepared, options: &CheckOptions) -> Option<String> {
    (prepared.calls.len() > options.max_calls).then(|| {
        format!(
            "the history has {} calls, more than max_calls {}",
            prepared.calls.len(),
            options.max_calls
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_serialise_as_jepsen_does() {
        let text = serde_json::to_string(&[Validity::Valid, Validity::Invalid, Validity::Unknown])
            .unwrap();
        assert_eq!(text, r#"[true,false,"unknown"]"#);
        let back: Vec<Validity> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back,
            vec![Validity::Valid, Validity::Invalid, Validity::Unknown]
        );
        assert!(serde_json::from_str::<Validity>("\"maybe\"").is_err());
        use Validity::*;
        assert_eq!(Validity::combine([Valid, Unknown, Valid]), Unknown);
        assert_eq!(Validity::combine([Unknown, Invalid]), Invalid);
        assert_eq!(Validity::combine([]), Valid);
    }

    #[test]
    fn a_history_written_to_a_file_is_checked_the_same() {
        let mut h = testkit::Builder::new();
        let l = h.invoke_lock(0, "s", &[0], 10_000);
        h.ok_lock(l, "l1");
        let r = h.invoke_read(1, "s");
        h.ok_read(r, "a");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        crate::history::write_jsonl(&path, &h.ops()).unwrap();
        let ops = crate::history::read_jsonl(&path).unwrap();
        let summary = check_all(&ops, &CheckOptions::default()).unwrap();
        assert_eq!(summary.valid, Validity::Invalid, "{summary:#?}");
        let invalid: Vec<&str> = summary
            .checkers
            .iter()
            .filter(|c| c.valid == Validity::Invalid)
            .map(|c| c.checker.as_str())
            .collect();
        assert_eq!(invalid, vec!["linearizable", "reads"]);
    }
}
