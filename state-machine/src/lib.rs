//! The seat ledger of one city shard: a pure, deterministic state machine and its
//! RocksDB persistence.
//!
//! This crate knows nothing of Raft, HTTP, clocks or randomness. Time arrives as the
//! leader-stamped `at_ms` of each command; ids are derived from log indexes; every
//! collection is ordered. Replicas that apply the same commands reach the same bytes
//! (`Ledger::digest`).
//!
//! # Layout
//! - `accounts`: users, roles and refresh tokens (the `global` shard).
//! - `audit`: the audit trail of admin and SRE actions (the `global` shard).
//! - `ids`: identifier newtypes (`ShowId`, `SeatId`, `LockId`, `BookingId`, ...).
//! - `limits`: every bound the ledger enforces, validated as one value.
//! - `model`: theaters, screens, seat layouts, shows, seat states, bookings.
//! - `command`: the writes (create theater, publish/cancel show, lock, extend,
//!   release, confirm, expire, cancel booking).
//! - `coupons`: coupons of the `global` shard and the reserve / confirm / give-back
//!   steps of redeeming one for a city booking.
//! - `outcome`: `Applied` results and typed `Rejection`s.
//! - `event`: domain events, addressed by log index.
//! - `ledger`: the state and `apply`.
//! - `payments`: the booking saga's payment record (start, gateway reports, refunds,
//!   the cancellation refund cut-off) and ratings.
//! - `requests`: the idempotency table (request id -> first outcome) and its window.
//! - `referrals`: referral codes and the referrer's reward (the `global` shard).
//! - `query`: read-only questions (seat map, shows, bookings, theaters).
//! - `invariants`: `Ledger::check_invariants`, shared by tests and checkers.
//! - `store`: the RocksDB image, atomic batches, reopen.
//! - `snapshot`: the framed, checksummed snapshot format.
//! - `support`: customer support tickets (the `global` shard).
//! - `channels`: users' notification channels (the `global` shard).
//! - `cursors`: durable positions of event-stream consumers (the `global` shard).
//! - `codec`: the one binary encoding (bincode 2) with decode limits.
//! - `planted` (feature `planted-bugs` only): switchable faults for the Jepsen-style suite.
//! - `testkit` (tests and the `testkit` feature only): builders of sample commands.

pub mod accounts;
pub mod audit;
pub mod channels;
pub mod codec;
pub mod command;
pub mod coupons;
pub mod cursors;
pub mod event;
pub mod ids;
mod invariants;
pub mod ledger;
pub mod limits;
pub mod model;
pub mod outcome;
pub mod payments;
#[cfg(feature = "planted-bugs")]
pub mod planted;
pub mod query;
pub mod referrals;
pub mod requests;
pub mod snapshot;
pub mod store;
pub mod support;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use accounts::{RefreshToken, Role, User};
pub use audit::AuditEntry;
pub use command::{Command, CommandKind};
pub use coupons::{Coupon, CouponUse, CouponUseStatus};
pub use event::{Event, EventRecord};
pub use ids::*;
pub use ledger::{is_bidi_control, ApplyResult, Ledger, State};
pub use limits::{LimitName, Limits};
pub use model::*;
pub use outcome::{Applied, Outcome, Rejection};
pub use payments::{GatewayStatus, Payment, PaymentStatus, Rating, RatingSummary};
pub use query::{Query, QueryResponse, SeatCounts, SeatMap, SeatStatus, SeatView, ShowView};
pub use requests::{RequestKind, RequestTable};
pub use store::{Durability, Installing, LedgerStore, PinnedImage, PreparedInstall, StoreError};
pub use support::{Actor, Ticket, TicketId, TicketMessage, TicketStatus};
