//! What applying a command produced: an `Applied` result or a typed `Rejection`.
//!
//! Rejections are values, not errors: they are replicated, stored under the request id
//! and returned again to a retry. `Err` is kept for I/O and corruption.
//!
//! Append-only format: outcomes are stored under their request id (RocksDB, snapshots)
//! with the codec's positional encoding and answered again after an upgrade. A new
//! `Applied` or `Rejection` goes at the end of its enum; inserting, moving or removing
//! a variant or changing its fields needs a new store format version
//! (`store::FORMAT_VERSION`) with a migration. `tests/golden.rs` checks the bytes of
//! every variant.

use crate::accounts::Role;
use crate::ids::{BookingId, LockId, Millis, SeatId, ShowId, TheaterId, UserId};
use crate::limits::LimitName;
use crate::model::BookingStatus;
use crate::payments::PaymentStatus;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Applied(Applied),
    Rejected(Rejection),
}

impl Outcome {
    pub fn is_applied(&self) -> bool {
        matches!(self, Outcome::Applied(_))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    TheaterCreated {
        theater: TheaterId,
    },
    ShowPublished {
        show: ShowId,
    },
    ShowCancelled {
        show: ShowId,
        locks_released: u32,
        bookings_cancelled: u32,
    },
    SeatsLocked {
        lock: LockId,
        booking: BookingId,
        seats: Vec<SeatId>,
        expires_at: Millis,
        total_price_minor: u64,
    },
    LockExtended {
        lock: LockId,
        expires_at: Millis,
    },
    LockReleased {
        lock: LockId,
    },
    BookingConfirmed {
        booking: BookingId,
        total_price_minor: u64,
    },
    LocksExpired {
        locks: Vec<LockId>,
    },
    BookingCancelled {
        booking: BookingId,
        refund_due_minor: u64,
    },
    UserRegistered {
        user: UserId,
    },
    RoleSet {
        user: UserId,
        role: Role,
    },
    RefreshTokenIssued {
        user: UserId,
        family: u64,
    },
    RefreshTokenRotated {
        user: UserId,
        family: u64,
    },
    /// A used refresh token was presented again: its whole family is now revoked.
    RefreshFamilyRevoked {
        user: UserId,
        family: u64,
    },
    /// An audit entry was recorded under this id (its log index).
    AuditRecorded {
        entry: u64,
    },
    TicketOpened {
        ticket: crate::support::TicketId,
    },
    TicketUpdated {
        ticket: crate::support::TicketId,
        status: crate::support::TicketStatus,
    },
    CursorAdvanced {
        index: u64,
        seq: u32,
    },
    /// The payment intent is recorded; the gateway is asked next (for `amount_minor` in
    /// the booking's `currency`).
    PaymentStarted {
        booking: BookingId,
        amount_minor: u64,
        currency: String,
    },
    /// A gateway report was applied; `changed` is false for a stale or repeated one.
    PaymentRecorded {
        booking: BookingId,
        status: PaymentStatus,
        changed: bool,
    },
    BookingRated {
        booking: BookingId,
    },
    CouponCreated {
        code: String,
    },
    CouponReserved {
        code: String,
        discount_minor: u64,
    },
    CouponUseSettled {
        code: String,
        status: crate::coupons::CouponUseStatus,
    },
    ReferralRegistered {
        referee: UserId,
        referrer: UserId,
    },
    /// `rewarded` is false when there is no referral or it was rewarded already.
    ReferralRewarded {
        referee: UserId,
        rewarded: bool,
    },
    ChannelsSet {
        user: UserId,
    },
    /// The shard's replicated rules changed (`CommandKind::SetLimits`).
    LimitsSet,
}

/// Why a command changed nothing. Each variant names what was wrong; the api maps each
/// to one HTTP status and problem type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// Some requested seats are locked or booked by someone else.
    SeatsTaken {
        seats: Vec<SeatId>,
    },
    /// Some requested seats do not exist in the show's screen.
    UnknownSeats {
        seats: Vec<SeatId>,
    },
    UnknownTheater {
        theater: TheaterId,
    },
    UnknownScreen {
        theater: TheaterId,
        screen: u16,
    },
    UnknownShow {
        show: ShowId,
    },
    UnknownLock {
        lock: LockId,
    },
    UnknownBooking {
        booking: BookingId,
    },
    /// The lock's expiry passed on the shard clock.
    LockExpired {
        lock: LockId,
        expired_at: Millis,
    },
    /// The lock or booking belongs to another user.
    NotOwner,
    /// The show has started (or ended); its seats can no longer change hands.
    ShowStarted {
        show: ShowId,
        start_ms: Millis,
    },
    ShowCancelled {
        show: ShowId,
    },
    /// Another show overlaps on the same screen.
    ScreenBusy {
        conflicting_show: ShowId,
    },
    /// The booking is in a state that does not allow the command.
    WrongBookingStatus {
        booking: BookingId,
        status: BookingStatus,
    },
    LimitExceeded {
        limit: LimitName,
        max: u64,
        requested: u64,
    },
    InvalidInput {
        field: Cow<'static, str>,
        reason: Cow<'static, str>,
    },
    /// The request id was used before for a different command.
    RequestIdReused,
    EmailTaken,
    PhoneTaken,
    UnknownUser {
        user: UserId,
    },
    /// The refresh token is unknown, expired or revoked.
    RefreshTokenInvalid,
    /// No such ticket, or it belongs to another customer.
    UnknownTicket {
        ticket: crate::support::TicketId,
    },
    /// The ticket is closed and takes no more messages or status changes.
    TicketClosed {
        ticket: crate::support::TicketId,
    },
    /// The booking already has a payment (one per booking; a declined one released
    /// the lock).
    PaymentExists {
        booking: BookingId,
        status: PaymentStatus,
    },
    /// The booking has no payment to report on.
    NoPayment {
        booking: BookingId,
    },
    /// Only a confirmed booking whose show has ended may be rated.
    NotAttended {
        booking: BookingId,
    },
    AlreadyRated {
        booking: BookingId,
    },
    CouponExists,
    /// The coupon cannot be used for this booking, and why.
    CouponUnavailable {
        code: String,
        reason: Cow<'static, str>,
    },
    /// Applying the command failed inside the ledger (a defect, not the input's fault):
    /// every replica undid what it had begun and answers this, so none of them stops on
    /// the entry and their states stay equal.
    ApplyFailed,
    /// The idempotency table holds `request_ids_max` keys, all younger than the
    /// retention window: a new key is refused rather than an old one forgotten early.
    /// Room frees in `retry_after_ms`.
    RequestTableFull {
        retry_after_ms: u64,
    },
}

impl Rejection {
    pub fn invalid(field: &'static str, reason: &'static str) -> Rejection {
        Rejection::InvalidInput {
            field: Cow::Borrowed(field),
            reason: Cow::Borrowed(reason),
        }
    }

    /// True when this is an `InvalidInput` about `field`.
    pub fn is_invalid(&self, field: &str) -> bool {
        matches!(self, Rejection::InvalidInput { field: f, .. } if f == field)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::SeatsTaken { seats } => write!(f, "seats already taken: {seats:?}"),
            Rejection::UnknownSeats { seats } => write!(f, "no such seats in this show: {seats:?}"),
            Rejection::UnknownTheater { theater } => write!(f, "unknown theater {theater}"),
            Rejection::UnknownScreen { theater, screen } => {
                write!(f, "theater {theater} has no screen {screen}")
            }
            Rejection::UnknownShow { show } => write!(f, "unknown show {show}"),
            Rejection::UnknownLock { lock } => write!(f, "unknown lock {lock}"),
            Rejection::UnknownBooking { booking } => write!(f, "unknown booking {booking}"),
            Rejection::LockExpired { lock, expired_at } => {
                write!(
                    f,
                    "lock {lock} expired at {expired_at} ms; lock the seats again"
                )
            }
            Rejection::NotOwner => f.write_str("this lock or booking belongs to another user"),
            Rejection::ShowStarted { show, start_ms } => {
                write!(f, "show {show} started at {start_ms} ms")
            }
            Rejection::ShowCancelled { show } => write!(f, "show {show} is cancelled"),
            Rejection::ScreenBusy { conflicting_show } => {
                write!(
                    f,
                    "the screen is busy with show {conflicting_show} at that time"
                )
            }
            Rejection::WrongBookingStatus { booking, status } => {
                write!(f, "booking {booking} is {}", status.as_str())
            }
            Rejection::LimitExceeded {
                limit,
                max,
                requested,
            } => {
                write!(f, "{limit} is {max}, the request asked for {requested}")
            }
            Rejection::InvalidInput { field, reason } => write!(f, "{field}: {reason}"),
            Rejection::EmailTaken => f.write_str("an account with this email exists; log in"),
            Rejection::PhoneTaken => f.write_str("an account with this phone exists; log in"),
            Rejection::UnknownUser { user } => write!(f, "unknown user {user}"),
            Rejection::RefreshTokenInvalid => {
                f.write_str("the refresh token is unknown, expired or revoked; log in again")
            }
            Rejection::RequestIdReused => {
                f.write_str("this request id was used for a different request; use a new one")
            }
            Rejection::UnknownTicket { ticket } => write!(f, "unknown ticket {ticket}"),
            Rejection::TicketClosed { ticket } => {
                write!(f, "ticket {ticket} is closed; open a new ticket")
            }
            Rejection::PaymentExists { booking, status } => write!(
                f,
                "booking {booking} already has a payment ({}); follow its status",
                status.as_str()
            ),
            Rejection::NoPayment { booking } => write!(f, "booking {booking} has no payment"),
            Rejection::NotAttended { booking } => write!(
                f,
                "booking {booking} is not a confirmed booking of a show that has ended"
            ),
            Rejection::AlreadyRated { booking } => write!(f, "booking {booking} is rated already"),
            Rejection::CouponExists => f.write_str("a coupon with this code exists; pick another"),
            Rejection::CouponUnavailable { code, reason } => {
                write!(f, "coupon {code} cannot be used: {reason}")
            }
            Rejection::ApplyFailed => f.write_str(
                "the ledger failed to apply this request and changed nothing; this is a \
                 defect, reported to the operators (retrying gives the same answer)",
            ),
            Rejection::RequestTableFull { retry_after_ms } => write!(
                f,
                "this shard remembers as many request ids as it may, all younger than the \
                 retention window; retry in {} s",
                retry_after_ms.div_ceil(1000)
            ),
        }
    }
}
