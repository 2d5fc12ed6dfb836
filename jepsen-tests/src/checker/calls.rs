//! Turns a history's lines into calls: each client `invoke` paired with its completion,
//! with the value parsed into its typed shape. Every checker reads these, never raw
//! lines, so a malformed history is refused once, here, with the op that is wrong.
//!
//! Real-time order uses history indexes: call A precedes call B when A's completion line
//! comes before B's invoke line. An `info` call, or one never completed, may take effect
//! at any time after its invoke, so it precedes nothing.

use crate::history::{
    BookingsValue, CountsValue, HistoryError, LockRefValue, LockValue, Op, OpType, Process,
    ReadValue, F,
};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// Certainly did not happen.
    Fail,
    /// Unknown: may have happened, at any time after the invoke.
    Info,
}

/// What a call did, typed by its `f`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Lock(LockValue),
    Confirm(LockRefValue),
    Release(LockRefValue),
    Read(ReadValue),
    Counts(CountsValue),
    Bookings(BookingsValue),
}

/// One client operation from invoke to completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub process: u64,
    pub outcome: Outcome,
    pub f: F,
    pub invoke_index: u64,
    /// The completion's history index; `None` when the history ends before it.
    pub complete_index: Option<u64>,
    /// Wall clock at invoke and completion (ms since the Unix epoch).
    pub invoke_ms: u64,
    pub complete_ms: Option<u64>,
    /// The completion's value for completed calls, else the invoke's.
    pub action: Action,
}

impl Call {
    /// The last history index at which this call may take effect: its completion when it
    /// is `ok` or `fail`, otherwise never bounded.
    pub fn effect_end(&self) -> u64 {
        match (self.outcome, self.complete_index) {
            (Outcome::Info, _) | (_, None) => u64::MAX,
            (_, Some(index)) => index,
        }
    }

    /// True when this call finished before `other` was invoked.
    pub fn precedes(&self, other: &Call) -> bool {
        self.effect_end() < other.invoke_index
    }

    /// The latest wall-clock time the call may take effect at (`u64::MAX` when unknown).
    pub fn effect_end_ms(&self) -> u64 {
        match (self.outcome, self.complete_ms) {
            (Outcome::Info, _) | (_, None) => u64::MAX,
            (_, Some(ms)) => ms,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.outcome == Outcome::Ok
    }

    /// History indexes of both lines, for anomaly reports.
    pub fn indexes(&self) -> Vec<u64> {
        let mut indexes = vec![self.invoke_index];
        indexes.extend(self.complete_index);
        indexes
    }
}

/// A history ready for checking.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prepared {
    /// In invoke order.
    pub calls: Vec<Call>,
    /// Nemesis lines, as they were.
    pub nemesis: Vec<Op>,
}

impl Prepared {
    pub fn from_ops(ops: &[Op]) -> Result<Prepared, HistoryError> {
        let mut prepared = Prepared::default();
        let mut open: BTreeMap<u64, (usize, &Op)> = BTreeMap::new();
        let mut previous: Option<&Op> = None;
        for op in ops {
            if let Some(before) = previous {
                if op.index <= before.index || op.time < before.time {
                    return Err(HistoryError::shape(
                        op.index,
                        format!(
                            "out of order after op {}: indexes must increase, times not fall",
                            before.index
                        ),
                    ));
                }
            }
            previous = Some(op);
            let Process::Client(process) = op.process else {
                if !op.f.is_nemesis() {
                    return Err(HistoryError::shape(
                        op.index,
                        "the nemesis only injects and heals faults",
                    ));
                }
                prepared.nemesis.push(op.clone());
                continue;
            };
            if op.f.is_nemesis() {
                return Err(HistoryError::shape(
                    op.index,
                    "a client cannot inject faults",
                ));
            }
            if op.wall_ms.is_none() {
                return Err(HistoryError::shape(op.index, "a client op needs wall_ms"));
            }
            if op.kind == OpType::Invoke {
                if let Some((_, pending)) = open.get(&process) {
                    return Err(HistoryError::shape(
                        op.index,
                        format!("process {process} still has op {} open", pending.index),
                    ));
                }
                prepared.calls.push(placeholder(process, op)?);
                open.insert(process, (prepared.calls.len() - 1, op));
                continue;
            }
            let Some((slot, invoke)) = open.remove(&process) else {
                return Err(HistoryError::shape(
                    op.index,
                    format!("process {process} completes an op it never invoked"),
                ));
            };
            if invoke.f != op.f {
                return Err(HistoryError::shape(
                    op.index,
                    format!("completes a {} with a {}", invoke.f.as_str(), op.f.as_str()),
                ));
            }
            prepared.calls[slot] = complete(process, invoke, op)?;
        }
        Ok(prepared)
    }
}

/// An invoke that has not completed (yet): an unknown outcome.
fn placeholder(process: u64, invoke: &Op) -> Result<Call, HistoryError> {
    Ok(Call {
        process,
        outcome: Outcome::Info,
        f: invoke.f,
        invoke_index: invoke.index,
        complete_index: None,
        invoke_ms: invoke.wall_ms.unwrap_or(0),
        complete_ms: None,
        action: action(invoke)?,
    })
}

fn complete(process: u64, invoke: &Op, done: &Op) -> Result<Call, HistoryError> {
    let outcome = match done.kind {
        OpType::Ok => Outcome::Ok,
        OpType::Fail => Outcome::Fail,
        OpType::Info => Outcome::Info,
        OpType::Invoke => return Err(HistoryError::shape(done.index, "an invoke cannot complete")),
    };
    let action = action(done)?;
    check_result(done, outcome, &action)?;
    Ok(Call {
        process,
        outcome,
        f: invoke.f,
        invoke_index: invoke.index,
        complete_index: Some(done.index),
        invoke_ms: invoke.wall_ms.unwrap_or(0),
        complete_ms: done.wall_ms,
        action,
    })
}

fn parse<T: DeserializeOwned>(op: &Op) -> Result<T, HistoryError> {
    op.value_as()
}

fn action(op: &Op) -> Result<Action, HistoryError> {
    Ok(match op.f {
        F::Lock => Action::Lock(parse(op)?),
        F::Confirm => Action::Confirm(parse(op)?),
        F::Release => Action::Release(parse(op)?),
        F::Read => Action::Read(parse(op)?),
        F::ReadCounts => Action::Counts(parse(op)?),
        F::ReadBookings => Action::Bookings(parse(op)?),
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
        | F::Restore => {
            return Err(HistoryError::shape(
                op.index,
                "a client cannot inject faults",
            ))
        }
    })
}

/// An `ok` must carry its result, and a `seats-taken` failure the seats it names:
/// checkers rely on both.
fn check_result(op: &Op, outcome: Outcome, action: &Action) -> Result<(), HistoryError> {
    let missing = |what: &str| Err(HistoryError::shape(op.index, format!("missing {what}")));
    match (outcome, action) {
        (Outcome::Ok, Action::Lock(lock)) if lock.lock.is_none() => missing("lock id"),
        (Outcome::Ok, Action::Lock(lock)) if lock.expires_at_ms.is_none() => {
            missing("expires_at_ms")
        }
        (Outcome::Fail, Action::Lock(lock))
            if lock.reason.as_deref() == Some("seats-taken") && lock.taken.is_none() =>
        {
            missing("taken seats")
        }
        (Outcome::Ok, Action::Read(read)) if read.seats.is_none() => missing("seat statuses"),
        (Outcome::Ok, Action::Counts(counts))
            if counts.available.is_none() || counts.locked.is_none() || counts.booked.is_none() =>
        {
            missing("counts")
        }
        (Outcome::Ok, Action::Bookings(bookings)) if bookings.bookings.is_none() => {
            missing("booking records")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::Builder;
    use crate::history::parse_jsonl;

    #[test]
    fn invokes_pair_with_their_completions() {
        let mut h = Builder::new();
        let a = h.invoke_lock(0, "s", &[1], 10_000);
        let r = h.invoke_read(1, "s");
        h.ok_lock(a, "s-5");
        h.info(r);
        let dangling = h.invoke_read(2, "s");
        let prepared = h.prepared();
        assert_eq!(prepared.calls.len(), 3);
        assert_eq!(prepared.calls[0].outcome, Outcome::Ok);
        assert_eq!(prepared.calls[1].outcome, Outcome::Info);
        assert_eq!(prepared.calls[1].effect_end(), u64::MAX);
        assert_eq!(prepared.calls[2].invoke_index, dangling);
        assert_eq!(prepared.calls[2].complete_index, None);
        assert!(!prepared.calls[1].precedes(&prepared.calls[2]));
    }

    #[test]
    fn histories_that_make_no_sense_are_refused() {
        let line = |index: u64, process: &str, kind: &str, f: &str, value: &str| {
            let head = format!(r#""index":{index},"time":{index},"process":{process}"#);
            format!(r#"{{{head},"type":"{kind}","f":"{f}","value":{value},"wall_ms":5}}"#)
        };
        let read = r#"{"show":"s","consistency":"linearizable"}"#;
        let cases = [
            // A completion with no invoke.
            vec![line(0, "1", "ok", "read", read)],
            // Two invokes open on one process.
            vec![
                line(0, "1", "invoke", "read", read),
                line(1, "1", "invoke", "read", read),
            ],
            // An ok read without statuses.
            vec![
                line(0, "1", "invoke", "read", read),
                line(1, "1", "ok", "read", read),
            ],
            // Indexes going backwards.
            vec![
                line(3, "1", "invoke", "read", read),
                line(2, "1", "fail", "read", read),
            ],
            // A client killing nodes.
            vec![line(0, "1", "info", "kill", r#"{"shard":"x"}"#)],
            // A value of the wrong shape.
            vec![line(0, "1", "invoke", "lock", read)],
        ];
        for lines in cases {
            let ops = parse_jsonl(&lines.join("\n")).unwrap();
            assert!(Prepared::from_ops(&ops).is_err(), "{lines:?}");
        }
    }
}
