//! The systems under test, behind one trait so the same generator drives them all:
//! our cluster through its client protocol (`ours`) and through the REST tier
//! (`rest`), PostgreSQL with the seed design's optimistic update (`postgres`), and
//! Redis with `SET NX EX` per seat (`redis`). A target prepares shows, opens client
//! sessions, and performs lock, confirm and seat-map read; the runner times them.

pub mod ours;
pub mod postgres;
pub mod redis;

use crate::scenario::{ReadKind, ScenarioSpec};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// Which system a run drives.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum TargetName {
    /// Our 3-replica cluster (fsync on) through the node client protocol.
    Ours,
    /// Our cluster through the node client protocol, confirming with the ledger
    /// commands of the REST payment saga (no gateway, no reads): the baseline that
    /// isolates what the REST tier itself costs.
    OursSaga,
    /// Our 3-replica cluster through the REST api (api -> client protocol -> leader).
    Rest,
    /// PostgreSQL, seed schema, `UPDATE ... WHERE status = 'available' RETURNING id`.
    Postgres,
    /// Redis, `SET key NX EX` per seat: not durable, not replicated.
    Redis,
}

impl TargetName {
    pub const ALL: [TargetName; 5] = [
        TargetName::Ours,
        TargetName::OursSaga,
        TargetName::Rest,
        TargetName::Postgres,
        TargetName::Redis,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetName::Ours => "ours",
            TargetName::OursSaga => "ours-saga",
            TargetName::Rest => "rest",
            TargetName::Postgres => "postgres",
            TargetName::Redis => "redis",
        }
    }
}

/// A lock request's answer: the lock, or "some of these seats are taken" (a valid
/// outcome under contention, not an error).
#[derive(Debug)]
pub enum LockOutcome<L> {
    Locked(L),
    Taken,
}

/// A system the generator can drive. `Err(String)` is an error of the operation
/// (timeout, unexpected status, broken connection), counted and sampled by the runner.
pub trait Target: Send + Sync + 'static {
    /// One client's connection state (a database connection, an HTTP client, ...).
    type Session: Send + 'static;
    /// A show as this system names it.
    type Show: Send + Sync + 'static;
    /// What a successful lock returns and a confirm needs.
    type Lock: Send + 'static;

    /// Whether a show costs nothing to prepare (no rows to write), so a run may take as
    /// many as it can use.
    const SHOWS_ARE_FREE: bool = false;

    /// What ran, for the report (version and durability settings).
    fn describe(&self) -> String;

    /// Creates `shows_per_city` fresh shows of the scenario's size in every city.
    fn prepare(
        &self,
        spec: &ScenarioSpec,
        shows_per_city: usize,
    ) -> impl Future<Output = Result<Vec<Vec<Self::Show>>, String>> + Send;

    /// Opens the session of client `index`.
    fn session(&self, index: usize) -> impl Future<Output = Result<Self::Session, String>> + Send;

    /// Locks all of `seats` for `user`, or none.
    fn lock(
        &self,
        session: &mut Self::Session,
        show: &Self::Show,
        seats: &[u32],
        user: u64,
    ) -> impl Future<Output = Result<LockOutcome<Self::Lock>, String>> + Send;

    /// Turns the lock into a booking (the payment succeeded).
    fn confirm(
        &self,
        session: &mut Self::Session,
        lock: Self::Lock,
        user: u64,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Reads the show's seat map; returns the number of seats in it.
    fn read(
        &self,
        session: &mut Self::Session,
        show: &Self::Show,
        kind: ReadKind,
    ) -> impl Future<Output = Result<usize, String>> + Send;

    /// The histogram a read of `kind` is recorded in.
    fn read_label(&self, kind: ReadKind) -> &'static str {
        match kind {
            ReadKind::Stale => "read_stale",
            ReadKind::Linearizable { .. } => "read_linearizable",
        }
    }

    /// Stops what the target started.
    fn close(self) -> impl Future<Output = ()> + Send;
}
