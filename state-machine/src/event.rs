//! Domain events: what each applied command changed, in log order.
//!
//! Events are what notifications, search and analytics consume; they are addressed by
//! `(log index, position within the entry)` so a consumer can resume exactly.
//!
//! Append-only format: events are stored (RocksDB, snapshots) with the codec's positional
//! encoding and read by consumers across upgrades. A new event is a new variant at the
//! end of `Event`; inserting, moving or removing a variant or changing its fields
//! needs a new store format version (`store::FORMAT_VERSION`) with a migration.
//! `tests/golden.rs` checks the bytes of every variant.

use crate::ids::{BookingId, LockId, LogIndex, Millis, SeatId, ShowId, TheaterId, UserId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    UserRegistered {
        user: UserId,
    },
    TheaterCreated {
        theater: TheaterId,
        city: String,
    },
    ShowPublished {
        show: ShowId,
        theater: TheaterId,
        start_ms: Millis,
    },
    ShowCancelled {
        show: ShowId,
    },
    SeatsLocked {
        show: ShowId,
        lock: LockId,
        user: UserId,
        seats: Vec<SeatId>,
        expires_at: Millis,
    },
    LockExtended {
        show: ShowId,
        lock: LockId,
        expires_at: Millis,
    },
    LockReleased {
        show: ShowId,
        lock: LockId,
        user: UserId,
        seats: Vec<SeatId>,
    },
    LockExpired {
        show: ShowId,
        lock: LockId,
        user: UserId,
        seats: Vec<SeatId>,
    },
    BookingConfirmed {
        show: ShowId,
        booking: BookingId,
        user: UserId,
        seats: Vec<SeatId>,
        total_price_minor: u64,
    },
    BookingCancelled {
        show: ShowId,
        booking: BookingId,
        user: UserId,
        seats: Vec<SeatId>,
        refund_due_minor: u64,
    },
    TicketOpened {
        ticket: crate::support::TicketId,
        customer: UserId,
    },
    TicketMessagePosted {
        ticket: crate::support::TicketId,
        author: UserId,
        from_agent: bool,
    },
    TicketStatusChanged {
        ticket: crate::support::TicketId,
        status: crate::support::TicketStatus,
    },
    PaymentStarted {
        show: ShowId,
        booking: BookingId,
        user: UserId,
        amount_minor: u64,
    },
    /// The booking's payment moved to `status` (captured, failed, refund due, ...).
    PaymentChanged {
        show: ShowId,
        booking: BookingId,
        user: UserId,
        status: crate::payments::PaymentStatus,
        refund_minor: u64,
    },
    BookingRated {
        show: ShowId,
        theater: TheaterId,
        booking: BookingId,
        stars: u8,
    },
}

/// An event with its address in the shard's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub index: LogIndex,
    /// Position among the events of the same log entry.
    pub seq: u32,
    /// The shard clock when the event happened.
    pub at_ms: Millis,
    pub event: Event,
}
