//! Hand-made histories for the checkers' unit tests: a builder that numbers lines,
//! advances both clocks by a millisecond per line, and fills completion values from
//! their invokes the way the runner does.

use crate::checker::{check_prepared, CheckOptions, CheckResult, Prepared, Validity};
use crate::history::{BookingRecord, Op, OpType, Process, F};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The wall clock of the first line, in ms since the epoch.
pub const WALL_START_MS: u64 = 1_700_000_000_000;

pub struct Builder {
    ops: Vec<Op>,
    time_ns: u64,
    wall_ms: u64,
    /// Open invokes by index: process, f, value.
    open: BTreeMap<u64, (u64, F, Value)>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            ops: Vec::new(),
            time_ns: 0,
            wall_ms: WALL_START_MS,
            open: BTreeMap::new(),
        }
    }

    /// Lets `ms` pass on both clocks.
    pub fn sleep_ms(&mut self, ms: u64) {
        self.time_ns += ms * 1_000_000;
        self.wall_ms += ms;
    }

    pub fn now_ms(&self) -> u64 {
        self.wall_ms
    }

    fn push(&mut self, process: Process, kind: OpType, f: F, value: Value) -> u64 {
        self.sleep_ms(1);
        let index = self.ops.len() as u64;
        self.ops.push(Op {
            index,
            time: self.time_ns,
            process,
            kind,
            f,
            value,
            wall_ms: Some(self.wall_ms),
            error: None,
        });
        index
    }

    fn invoke(&mut self, process: u64, f: F, value: Value) -> u64 {
        let index = self.push(Process::Client(process), OpType::Invoke, f, value.clone());
        self.open.insert(index, (process, f, value));
        index
    }

    /// Completes invoke `invoke` with `kind`, adding `extra` fields to its value.
    pub fn complete(&mut self, invoke: u64, kind: OpType, extra: Value) -> u64 {
        let (process, f, mut value) = self.open.remove(&invoke).expect("an open invoke");
        if let (Some(map), Value::Object(extra)) = (value.as_object_mut(), extra) {
            map.extend(extra);
        }
        self.push(Process::Client(process), kind, f, value)
    }

    pub fn ok(&mut self, invoke: u64) -> u64 {
        self.complete(invoke, OpType::Ok, json!({}))
    }

    pub fn fail(&mut self, invoke: u64, reason: &str) -> u64 {
        self.complete(invoke, OpType::Fail, json!({ "reason": reason }))
    }

    pub fn info(&mut self, invoke: u64) -> u64 {
        self.complete(invoke, OpType::Info, json!({}))
    }

    pub fn invoke_lock(&mut self, process: u64, show: &str, seats: &[u32], ttl_ms: u64) -> u64 {
        let value = json!({"show": show, "seats": seats, "user": process, "ttl_ms": ttl_ms});
        self.invoke(process, F::Lock, value)
    }

    /// Acknowledges a lock stamped at the invoke's wall time.
    pub fn ok_lock(&mut self, invoke: u64, lock: &str) -> u64 {
        let (_, _, value) = &self.open[&invoke];
        let ttl = value["ttl_ms"].as_u64().unwrap_or(0);
        let expires = self.ops[invoke as usize].wall_ms.unwrap_or(0) + ttl;
        self.ok_lock_expiring(invoke, lock, expires)
    }

    pub fn ok_lock_expiring(&mut self, invoke: u64, lock: &str, expires_at_ms: u64) -> u64 {
        let extra = json!({"lock": lock, "booking": lock, "expires_at_ms": expires_at_ms});
        self.complete(invoke, OpType::Ok, extra)
    }

    pub fn fail_lock(&mut self, invoke: u64, taken: &[u32]) -> u64 {
        let extra = json!({"reason": "seats-taken", "taken": taken});
        self.complete(invoke, OpType::Fail, extra)
    }

    pub fn invoke_confirm(&mut self, process: u64, show: &str, lock: &str, seats: &[u32]) -> u64 {
        let value = json!({"show": show, "lock": lock, "user": process, "seats": seats});
        self.invoke(process, F::Confirm, value)
    }

    pub fn invoke_release(&mut self, process: u64, show: &str, lock: &str, seats: &[u32]) -> u64 {
        let value = json!({"show": show, "lock": lock, "user": process, "seats": seats});
        self.invoke(process, F::Release, value)
    }

    pub fn invoke_read(&mut self, process: u64, show: &str) -> u64 {
        self.invoke(
            process,
            F::Read,
            json!({"show": show, "consistency": "linearizable"}),
        )
    }

    pub fn invoke_final_read(&mut self, process: u64, show: &str) -> u64 {
        let value = json!({"show": show, "consistency": "linearizable", "final_read": true});
        self.invoke(process, F::Read, value)
    }

    pub fn invoke_session_read(&mut self, process: u64, show: &str, min_index: u64) -> u64 {
        let value = json!({"show": show, "consistency": "session", "min_index": min_index});
        self.invoke(process, F::Read, value)
    }

    /// Completes a read; `statuses` has one letter per seat: `a`, `l` or `b`.
    pub fn ok_read(&mut self, invoke: u64, statuses: &str) -> u64 {
        let seats: Vec<&str> = statuses
            .chars()
            .map(|c| match c {
                'l' => "locked",
                'b' => "booked",
                _ => "available",
            })
            .collect();
        let served = self.open[&invoke].2["consistency"].clone();
        self.complete(
            invoke,
            OpType::Ok,
            json!({"seats": seats, "served": served, "index": 1}),
        )
    }

    pub fn invoke_counts(&mut self, process: u64, show: &str, capacity: u64) -> u64 {
        self.invoke(
            process,
            F::ReadCounts,
            json!({"show": show, "capacity": capacity}),
        )
    }

    pub fn ok_counts(&mut self, invoke: u64, available: i64, locked: i64, booked: i64) -> u64 {
        let extra = json!({"available": available, "locked": locked, "booked": booked});
        self.complete(invoke, OpType::Ok, extra)
    }

    pub fn invoke_bookings(&mut self, process: u64, users: &[u64]) -> u64 {
        self.invoke(process, F::ReadBookings, json!({ "users": users }))
    }

    pub fn ok_bookings(&mut self, invoke: u64, records: &[BookingRecord]) -> u64 {
        self.complete(invoke, OpType::Ok, json!({ "bookings": records }))
    }

    pub fn nemesis(&mut self, f: F, node: u64) -> u64 {
        self.push(
            Process::Nemesis,
            OpType::Info,
            f,
            json!({"node": node, "shard": "mumbai"}),
        )
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.clone()
    }

    pub fn prepared(&self) -> Prepared {
        Prepared::from_ops(&self.ops).expect("a well-formed hand-made history")
    }

    /// Runs every checker and returns the one named `name`.
    pub fn check(&self, name: &str) -> CheckResult {
        self.check_with(name, &CheckOptions::default())
    }

    pub fn check_with(&self, name: &str, options: &CheckOptions) -> CheckResult {
        let summary = check_prepared(&self.prepared(), options);
        summary
            .checkers
            .into_iter()
            .find(|c| c.checker == name)
            .expect("a checker of that name")
    }
}

/// A confirmed (or other) booking record as the final read reports it.
pub fn record(
    lock: &str,
    seats: &[u32],
    status: &str,
    expires: u64,
    updated: u64,
) -> BookingRecord {
    BookingRecord {
        show: "s".into(),
        booking: lock.into(),
        lock: lock.into(),
        user: 0,
        seats: seats.to_vec(),
        status: status.into(),
        created_at_ms: expires.saturating_sub(10_000),
        expires_at_ms: expires,
        updated_at_ms: updated,
    }
}

/// Asserts a verdict and, for `Invalid`, that an anomaly of `kind` was found.
pub fn assert_verdict(result: &CheckResult, valid: Validity, kind: Option<&str>) {
    assert_eq!(result.valid, valid, "{result:#?}");
    if let Some(kind) = kind {
        assert!(
            result.anomalies.iter().any(|a| a.kind == kind),
            "expected a {kind} anomaly: {result:#?}"
        );
    }
}
