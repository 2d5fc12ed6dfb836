//! The commands that change a shard's ledger. Each is stamped by the shard leader with
//! its time `at_ms` and carries the client's `request_id`, which makes retries safe.

use crate::accounts::Role;
use crate::ids::UserId;
use crate::ids::{BookingId, LockId, Millis, RequestId, ScreenIndex, SeatId, ShowId, TheaterId};
use crate::model::{Prices, Screen};
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
    /// `global` shard: where a user's notifications go (the api checked the caller).
    SetNotificationChannels {
        user: UserId,
        webhook_url: Option<String>,
        webhook_secret: Option<String>,
        email: bool,
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
            CommandKind::OpenTicket { .. } => "open_ticket",
            CommandKind::PostTicketMessage { .. } => "post_ticket_message",
            CommandKind::SetTicketStatus { .. } => "set_ticket_status",
            CommandKind::AdvanceCursor { .. } => "advance_cursor",
            CommandKind::SetNotificationChannels { .. } => "set_notification_channels",
        }
    }
}
