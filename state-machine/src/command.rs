//! The commands that change a shard's ledger. Each is stamped by the shard leader with
//! its time `at_ms` and carries the client's `request_id`, which makes retries safe.
//!
//! Append-only format: commands are stored in the Raft log with the codec's positional
//! encoding and replayed by later releases. A new command is a new variant at the end
//! of `CommandKind` (a command that needs another field becomes a new variant, e.g.
//! `LockSeatsV2`); never insert, move or remove a variant or change a variant's
//! fields, or old logs replay as other commands. `tests/golden.rs` checks the bytes of
//! every variant.

use crate::accounts::Role;
use crate::ids::UserId;
use crate::ids::{BookingId, LockId, Millis, RequestId, ScreenIndex, SeatId, ShowId, TheaterId};
use crate::model::{Prices, Screen};
use crate::payments::GatewayStatus;
use serde::{Deserialize, Serialize};

/// One write to the ledger, as it travels in the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The client's idempotency key. `None` only for commands the system makes itself
    /// (the expiry sweep), which are harmless to repeat.
    pub request_id: Option<RequestId>,
    /// The leader's clock when it proposed the command; the shard clock becomes
    /// `max(previous, at_ms)`.
    pub at_ms: Millis,
    pub kind: CommandKind,
}

/// What a command asks for. The verbs are the ledger's one vocabulary: lock, extend,
/// release, confirm, expire, cancel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandKind {
    CreateTheater {
        city: String,
        name: String,
        address: String,
        lat_micro_deg: i32,
        lon_micro_deg: i32,
        owner: UserId,
        screens: Vec<Screen>,
    },
    PublishShow {
        theater: TheaterId,
        screen: ScreenIndex,
        title: String,
        genre: String,
        start_ms: Millis,
        end_ms: Millis,
        prices: Prices,
        currency: String,
    },
    /// Cancels a show: live locks are released and confirmed bookings cancelled with
    /// their refund recorded.
    CancelShow {
        show: ShowId,
    },
    /// Locks all of `seats` for `user`, or none of them. `ttl_ms: None` takes the default.
    LockSeats {
        show: ShowId,
        user: UserId,
        seats: Vec<SeatId>,
        ttl_ms: Option<u64>,
    },
    /// Moves a live lock's expiry to `now + ttl_ms`, capped by the lock's total life.
    ExtendLock {
        lock: LockId,
        user: UserId,
        ttl_ms: u64,
    },
    ReleaseLock {
        lock: LockId,
        user: UserId,
    },
    /// Turns the user's live lock into a confirmed booking paid by `payment_ref`.
    ConfirmBooking {
        lock: LockId,
        user: UserId,
        payment_ref: String,
    },
    /// Frees up to `max_locks` locks whose expiry has passed on the shard clock.
    ExpireLocks {
        max_locks: u32,
    },
    /// Cancels a booking of `user` before its show starts.
    CancelBooking {
        booking: BookingId,
        user: UserId,
    },
    /// `global` shard: a new account; the email and phone must be unused.
    RegisterUser {
        email: String,
        phone: String,
        name: String,
        password_hash: String,
        role: Role,
    },
    /// `global` shard: changes a user's role (admins only; the api checks).
    SetRole {
        user: UserId,
        role: Role,
    },
    /// `global` shard: starts a refresh-token family at login.
    IssueRefreshToken {
        user: UserId,
        token_hash: String,
        expires_at: Millis,
    },
    /// `global` shard: exchanges a refresh token for the next one of its family.
    RotateRefreshToken {
        old_hash: String,
        new_hash: String,
        expires_at: Millis,
    },
    /// `global` shard: appends an entry to the audit trail (`audit.rs`).
    RecordAudit {
        actor: String,
        action: String,
        target: String,
        detail: String,
    },
    /// `global` shard: a customer opens a support ticket about one of their bookings
    /// (the api checked the booking is theirs).
    OpenTicket {
        customer: UserId,
        booking: String,
        subject: String,
        body: String,
    },
    /// `global` shard: a message on a ticket from its customer or an agent.
    PostTicketMessage {
        ticket: crate::support::TicketId,
        actor: crate::support::Actor,
        body: String,
    },
    /// `global` shard: an agent sets a ticket's status, or its customer closes it.
    SetTicketStatus {
        ticket: crate::support::TicketId,
        actor: crate::support::Actor,
        status: crate::support::TicketStatus,
    },
    /// `global` shard: a stream consumer (e.g. the notifications worker) records how
    /// far it has processed `stream`; never backwards.
    AdvanceCursor {
        consumer: String,
        stream: String,
        index: u64,
        seq: u32,
        replay_from: u64,
    },
    /// Booking saga, step 1: records the intent to pay the user's live lock, before the
    /// gateway is asked, so any api node can resume the saga. `discount_minor` comes
    /// from a coupon reserved in the `global` shard.
    StartPayment {
        booking: BookingId,
        user: UserId,
        method: String,
        discount_minor: u64,
        coupon: Option<String>,
    },
    /// Booking saga: what the gateway reports about the booking's payment (its answer,
    /// a verified webhook, a poll). Reports not newer than `version` change nothing.
    RecordGatewayState {
        booking: BookingId,
        gateway_ref: String,
        payment_url: String,
        status: GatewayStatus,
        version: u64,
        amount_minor: u64,
        reason: Option<String>,
    },
    /// Rates a confirmed booking whose show has ended, once.
    RateBooking {
        booking: BookingId,
        user: UserId,
        stars: u8,
        message: String,
    },
    /// `global` shard: a coupon (admins only; the api checks).
    CreateCoupon {
        code: String,
        percent: u8,
        max_discount_minor: u64,
        valid_from: Millis,
        valid_until: Millis,
        max_uses: u32,
    },
    /// `global` shard: holds one use of a coupon for a city booking (by external id)
    /// while its payment settles; the discount is computed from `price_minor`.
    ReserveCoupon {
        code: String,
        booking: String,
        user: UserId,
        price_minor: u64,
    },
    /// `global` shard: the booking confirmed (the use counts) or did not (given back).
    SettleCouponUse {
        code: String,
        booking: String,
        confirmed: bool,
    },
    /// `global` shard: `referee` was referred by the owner of `code`.
    RegisterReferral {
        referee: UserId,
        code: String,
    },
    /// `global` shard: `referee` has a confirmed booking; rewards their referrer once.
    RewardReferral {
        referee: UserId,
        booking: String,
    },
    /// `global` shard: where a user's notifications go (the api checked the caller).
    SetNotificationChannels {
        user: UserId,
        webhook_url: Option<String>,
        webhook_secret: Option<String>,
        email: bool,
    },
    /// The shard's rules from now on, the same on every replica whatever its own
    /// configuration file says (`Ledger::limits`). Proposed by a leader from its file
    /// when the shard has none yet, and by operators (`POST /admin/shards/{s}/limits`).
    SetLimits {
        limits: crate::limits::Limits,
    },
}

impl CommandKind {
    /// The verb, as used in metrics and logs.
    pub fn verb(&self) -> &'static str {
        match self {
            CommandKind::CreateTheater { .. } => "create_theater",
            CommandKind::PublishShow { .. } => "publish_show",
            CommandKind::CancelShow { .. } => "cancel_show",
            CommandKind::LockSeats { .. } => "lock",
            CommandKind::ExtendLock { .. } => "extend",
            CommandKind::ReleaseLock { .. } => "release",
            CommandKind::ConfirmBooking { .. } => "confirm",
            CommandKind::ExpireLocks { .. } => "expire",
            CommandKind::CancelBooking { .. } => "cancel",
            CommandKind::RegisterUser { .. } => "register_user",
            CommandKind::SetRole { .. } => "set_role",
            CommandKind::IssueRefreshToken { .. } => "issue_refresh_token",
            CommandKind::RotateRefreshToken { .. } => "rotate_refresh_token",
            CommandKind::RecordAudit { .. } => "record_audit",
            CommandKind::OpenTicket { .. } => "open_ticket",
            CommandKind::PostTicketMessage { .. } => "post_ticket_message",
            CommandKind::SetTicketStatus { .. } => "set_ticket_status",
            CommandKind::AdvanceCursor { .. } => "advance_cursor",
            CommandKind::StartPayment { .. } => "start_payment",
            CommandKind::RecordGatewayState { .. } => "record_gateway_state",
            CommandKind::RateBooking { .. } => "rate",
            CommandKind::CreateCoupon { .. } => "create_coupon",
            CommandKind::ReserveCoupon { .. } => "reserve_coupon",
            CommandKind::SettleCouponUse { .. } => "settle_coupon_use",
            CommandKind::RegisterReferral { .. } => "register_referral",
            CommandKind::RewardReferral { .. } => "reward_referral",
            CommandKind::SetNotificationChannels { .. } => "set_notification_channels",
            CommandKind::SetLimits { .. } => "set_limits",
        }
    }
}
