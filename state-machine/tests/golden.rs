//! Golden bytes of everything the ledger writes: Raft log commands, outcomes, events,
//! stored records and the snapshot frame. Each sample value is encoded with the crate's
//! codec and compared with the hex checked in under `tests/golden/`.
//!
//! Why: the codec is positional bincode. A variant inserted in the middle of an enum,
//! or a field added, removed, reordered or retyped anywhere (even at the end of a
//! struct), makes the new code read old logs, stores and snapshots as something else,
//! and nothing else would notice. The format is append-only: a new enum variant goes
//! at the end of its enum (a command that needs a new field becomes a new variant such
//! as `LockSeatsV2 { .. }`); any other change needs a new format version
//! (`store::FORMAT_VERSION`, `snapshot`'s `VERSION`) with a migration that reads the
//! old bytes.
//!
//! Every enum has a label function with one arm per variant and no wildcard, so a new
//! variant does not compile until it is named here; `every_variant_has_a_sample` then
//! fails until its sample is added, in declaration order.
//!
//! Regenerating: `GOLDEN_UPDATE=1 cargo test -p state-machine --test golden` writes the
//! goldens of samples that have none (a new variant or record type) and leaves every
//! existing line as it is: a changed line still fails. Changing an existing golden is a
//! format break; only with a new format version and its migration, delete the line by
//! hand and regenerate it. A normal run never writes.

use serde::de::DeserializeOwned;
use serde::Serialize;
use state_machine::cursors::{ConsumerCursor, CursorKey};
use state_machine::ledger::RequestRecord;
use state_machine::referrals::Referral;
use state_machine::snapshot::{self, SnapshotBody};
use state_machine::*;
use state_machine::{channels::Channels, codec};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;

// ----- samples --------------------------------------------------------------------
//
// Every field of a sample holds a value distinct from its neighbours of the same type,
// so that swapping two fields changes the bytes.

fn screen() -> Screen {
    Screen {
        name: "Audi 1".into(),
        rows: vec![
            RowSpec {
                label: "A".into(),
                seats: 4,
                category: Category::Normal,
            },
            RowSpec {
                label: "B".into(),
                seats: 3,
                category: Category::Vip,
            },
        ],
    }
}

fn prices() -> Prices {
    Prices {
        normal_minor: 20_000,
        premium_minor: 35_000,
        vip_minor: 60_000,
    }
}

fn actor() -> Actor {
    Actor {
        user: UserId(8),
        agent: true,
    }
}

/// Names a command kind. No wildcard: a new variant must be named (and sampled in
/// `command_kinds`) before this compiles.
fn command_kind_label(kind: &CommandKind) -> &'static str {
    match kind {
        CommandKind::CreateTheater { .. } => "CreateTheater",
        CommandKind::PublishShow { .. } => "PublishShow",
        CommandKind::CancelShow { .. } => "CancelShow",
        CommandKind::LockSeats { .. } => "LockSeats",
        CommandKind::ExtendLock { .. } => "ExtendLock",
        CommandKind::ReleaseLock { .. } => "ReleaseLock",
        CommandKind::ConfirmBooking { .. } => "ConfirmBooking",
        CommandKind::ExpireLocks { .. } => "ExpireLocks",
        CommandKind::CancelBooking { .. } => "CancelBooking",
        CommandKind::RegisterUser { .. } => "RegisterUser",
        CommandKind::SetRole { .. } => "SetRole",
        CommandKind::IssueRefreshToken { .. } => "IssueRefreshToken",
        CommandKind::RotateRefreshToken { .. } => "RotateRefreshToken",
        CommandKind::RecordAudit { .. } => "RecordAudit",
        CommandKind::OpenTicket { .. } => "OpenTicket",
        CommandKind::PostTicketMessage { .. } => "PostTicketMessage",
        CommandKind::SetTicketStatus { .. } => "SetTicketStatus",
        CommandKind::AdvanceCursor { .. } => "AdvanceCursor",
        CommandKind::StartPayment { .. } => "StartPayment",
        CommandKind::RecordGatewayState { .. } => "RecordGatewayState",
        CommandKind::RateBooking { .. } => "RateBooking",
        CommandKind::CreateCoupon { .. } => "CreateCoupon",
        CommandKind::ReserveCoupon { .. } => "ReserveCoupon",
        CommandKind::SettleCouponUse { .. } => "SettleCouponUse",
        CommandKind::RegisterReferral { .. } => "RegisterReferral",
        CommandKind::RewardReferral { .. } => "RewardReferral",
        CommandKind::SetNotificationChannels { .. } => "SetNotificationChannels",
        CommandKind::SetLimits { .. } => "SetLimits",
    }
}

/// One sample of every command kind, in declaration order.
fn command_kinds() -> Vec<CommandKind> {
    vec![
        CommandKind::CreateTheater {
            city: "mumbai".into(),
            name: "PVR Juhu".into(),
            address: "1 Juhu Road".into(),
            lat_micro_deg: 19_076_000,
            lon_micro_deg: -72_877_000,
            owner: UserId(7),
            screens: vec![screen()],
        },
        CommandKind::PublishShow {
            theater: TheaterId(1),
            screen: ScreenIndex(2),
            title: "Jawan".into(),
            genre: "action".into(),
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_010_800_000,
            prices: prices(),
            currency: "INR".into(),
        },
        CommandKind::CancelShow { show: ShowId(3) },
        CommandKind::LockSeats {
            show: ShowId(3),
            user: UserId(7),
            seats: vec![SeatId(1), SeatId(2), SeatId(300)],
            ttl_ms: Some(120_000),
        },
        CommandKind::ExtendLock {
            lock: LockId(4),
            user: UserId(7),
            ttl_ms: 60_000,
        },
        CommandKind::ReleaseLock {
            lock: LockId(4),
            user: UserId(7),
        },
        CommandKind::ConfirmBooking {
            lock: LockId(4),
            user: UserId(7),
            payment_ref: "pay-4".into(),
        },
        CommandKind::ExpireLocks { max_locks: 500 },
        CommandKind::CancelBooking {
            booking: BookingId(4),
            user: UserId(7),
        },
        CommandKind::RegisterUser {
            email: "asha@example.com".into(),
            phone: "+919800000001".into(),
            name: "Asha".into(),
            password_hash: "$argon2id$v=19$hash".into(),
            role: Role::TheaterOwner,
        },
        CommandKind::SetRole {
            user: UserId(7),
            role: Role::Support,
        },
        CommandKind::IssueRefreshToken {
            user: UserId(7),
            token_hash: "hash-1".into(),
            expires_at: 1_700_086_400_000,
        },
        CommandKind::RotateRefreshToken {
            old_hash: "hash-1".into(),
            new_hash: "hash-2".into(),
            expires_at: 1_700_172_800_000,
        },
        CommandKind::RecordAudit {
            actor: "user:1 (admin)".into(),
            action: "set_role".into(),
            target: "user:7".into(),
            detail: "requested role=support".into(),
        },
        CommandKind::OpenTicket {
            customer: UserId(7),
            booking: "mumbai-4".into(),
            subject: "Refund".into(),
            body: "Where is my refund?".into(),
        },
        CommandKind::PostTicketMessage {
            ticket: TicketId(9),
            actor: actor(),
            body: "On its way.".into(),
        },
        CommandKind::SetTicketStatus {
            ticket: TicketId(9),
            actor: actor(),
            status: TicketStatus::Resolved,
        },
        CommandKind::AdvanceCursor {
            consumer: "notify".into(),
            stream: "mumbai".into(),
            index: 40,
            seq: 2,
            replay_from: 30,
        },
        CommandKind::StartPayment {
            booking: BookingId(4),
            user: UserId(7),
            method: "card".into(),
            discount_minor: 5_000,
            coupon: Some("DIWALI-50".into()),
        },
        CommandKind::RecordGatewayState {
            booking: BookingId(4),
            gateway_ref: "gw-11".into(),
            payment_url: "https://pay.example/gw-11".into(),
            status: GatewayStatus::Succeeded,
            version: 3,
            amount_minor: 75_000,
            reason: Some("approved".into()),
        },
        CommandKind::RateBooking {
            booking: BookingId(4),
            user: UserId(7),
            stars: 5,
            message: "Loved it".into(),
        },
        CommandKind::CreateCoupon {
            code: "DIWALI-50".into(),
            percent: 50,
            max_discount_minor: 15_000,
            valid_from: 1_600_000_000_000,
            valid_until: 1_800_000_000_000,
            max_uses: 100,
        },
        CommandKind::ReserveCoupon {
            code: "DIWALI-50".into(),
            booking: "mumbai-4".into(),
            user: UserId(7),
            price_minor: 80_000,
        },
        CommandKind::SettleCouponUse {
            code: "DIWALI-50".into(),
            booking: "mumbai-4".into(),
            confirmed: true,
        },
        CommandKind::RegisterReferral {
            referee: UserId(12),
            code: "REF7".into(),
        },
        CommandKind::RewardReferral {
            referee: UserId(12),
            booking: "mumbai-4".into(),
        },
        CommandKind::SetNotificationChannels {
            user: UserId(7),
            webhook_url: Some("https://hooks.example/asha".into()),
            webhook_secret: Some("0123456789abcdef".into()),
            email: false,
        },
        CommandKind::SetLimits {
            limits: sample_limits(),
        },
    ]
}

/// Every field a different value, so that swapping two fields changes the bytes.
fn sample_limits() -> Limits {
    Limits {
        seats_per_lock_max: 11,
        lock_ttl_ms_min: 12_000,
        lock_ttl_ms_max: 13_000,
        lock_ttl_ms_default: 12_500,
        lock_life_ms_max: 14_000,
        seats_per_user_per_show_max: 15,
        seats_per_screen_max: 16_000,
        rows_per_screen_max: 170,
        screens_per_theater_max: 18,
        text_length_max: 190,
        page_size_max: 20,
        show_duration_ms_max: 21_000_000,
        expire_batch_max: 220,
        request_ids_max: 230_000,
        request_id_retention_ms: 24_000_000,
        event_retention_indexes: 250_000,
        ticket_messages_max: 26,
        ticket_message_bytes_max: 2_700,
        open_tickets_per_customer_max: 28,
        cancel_refund_cutoff_ms: 29_000_000,
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Applied(_) => "Applied",
        Outcome::Rejected(_) => "Rejected",
    }
}

fn outcomes() -> Vec<Outcome> {
    vec![
        Outcome::Applied(Applied::LockReleased { lock: LockId(4) }),
        Outcome::Rejected(Rejection::NotOwner),
    ]
}

fn applied_label(applied: &Applied) -> &'static str {
    match applied {
        Applied::TheaterCreated { .. } => "TheaterCreated",
        Applied::ShowPublished { .. } => "ShowPublished",
        Applied::ShowCancelled { .. } => "ShowCancelled",
        Applied::SeatsLocked { .. } => "SeatsLocked",
        Applied::LockExtended { .. } => "LockExtended",
        Applied::LockReleased { .. } => "LockReleased",
        Applied::BookingConfirmed { .. } => "BookingConfirmed",
        Applied::LocksExpired { .. } => "LocksExpired",
        Applied::BookingCancelled { .. } => "BookingCancelled",
        Applied::UserRegistered { .. } => "UserRegistered",
        Applied::RoleSet { .. } => "RoleSet",
        Applied::RefreshTokenIssued { .. } => "RefreshTokenIssued",
        Applied::RefreshTokenRotated { .. } => "RefreshTokenRotated",
        Applied::RefreshFamilyRevoked { .. } => "RefreshFamilyRevoked",
        Applied::AuditRecorded { .. } => "AuditRecorded",
        Applied::TicketOpened { .. } => "TicketOpened",
        Applied::TicketUpdated { .. } => "TicketUpdated",
        Applied::CursorAdvanced { .. } => "CursorAdvanced",
        Applied::PaymentStarted { .. } => "PaymentStarted",
        Applied::PaymentRecorded { .. } => "PaymentRecorded",
        Applied::BookingRated { .. } => "BookingRated",
        Applied::CouponCreated { .. } => "CouponCreated",
        Applied::CouponReserved { .. } => "CouponReserved",
        Applied::CouponUseSettled { .. } => "CouponUseSettled",
        Applied::ReferralRegistered { .. } => "ReferralRegistered",
        Applied::ReferralRewarded { .. } => "ReferralRewarded",
        Applied::ChannelsSet { .. } => "ChannelsSet",
        Applied::LimitsSet => "LimitsSet",
    }
}

fn applieds() -> Vec<Applied> {
    vec![
        Applied::TheaterCreated {
            theater: TheaterId(1),
        },
        Applied::ShowPublished { show: ShowId(3) },
        Applied::ShowCancelled {
            show: ShowId(3),
            locks_released: 2,
            bookings_cancelled: 5,
        },
        Applied::SeatsLocked {
            lock: LockId(4),
            booking: BookingId(5),
            seats: vec![SeatId(1), SeatId(2)],
            expires_at: 1_700_000_120_000,
            total_price_minor: 40_000,
        },
        Applied::LockExtended {
            lock: LockId(4),
            expires_at: 1_700_000_180_000,
        },
        Applied::LockReleased { lock: LockId(4) },
        Applied::BookingConfirmed {
            booking: BookingId(4),
            total_price_minor: 40_000,
        },
        Applied::LocksExpired {
            locks: vec![LockId(4), LockId(6)],
        },
        Applied::BookingCancelled {
            booking: BookingId(4),
            refund_due_minor: 30_000,
        },
        Applied::UserRegistered { user: UserId(7) },
        Applied::RoleSet {
            user: UserId(7),
            role: Role::Admin,
        },
        Applied::RefreshTokenIssued {
            user: UserId(7),
            family: 21,
        },
        Applied::RefreshTokenRotated {
            user: UserId(7),
            family: 22,
        },
        Applied::RefreshFamilyRevoked {
            user: UserId(7),
            family: 23,
        },
        Applied::AuditRecorded { entry: 31 },
        Applied::TicketOpened {
            ticket: TicketId(9),
        },
        Applied::TicketUpdated {
            ticket: TicketId(9),
            status: TicketStatus::AwaitingCustomer,
        },
        Applied::CursorAdvanced { index: 40, seq: 2 },
        Applied::PaymentStarted {
            booking: BookingId(4),
            amount_minor: 75_000,
            currency: "INR".into(),
        },
        Applied::PaymentRecorded {
            booking: BookingId(4),
            status: PaymentStatus::Captured,
            changed: true,
        },
        Applied::BookingRated {
            booking: BookingId(4),
        },
        Applied::CouponCreated {
            code: "DIWALI-50".into(),
        },
        Applied::CouponReserved {
            code: "DIWALI-50".into(),
            discount_minor: 15_000,
        },
        Applied::CouponUseSettled {
            code: "DIWALI-50".into(),
            status: CouponUseStatus::Used,
        },
        Applied::ReferralRegistered {
            referee: UserId(12),
            referrer: UserId(7),
        },
        Applied::ReferralRewarded {
            referee: UserId(12),
            rewarded: true,
        },
        Applied::ChannelsSet { user: UserId(7) },
        Applied::LimitsSet,
    ]
}

fn rejection_label(rejection: &Rejection) -> &'static str {
    match rejection {
        Rejection::SeatsTaken { .. } => "SeatsTaken",
        Rejection::UnknownSeats { .. } => "UnknownSeats",
        Rejection::UnknownTheater { .. } => "UnknownTheater",
        Rejection::UnknownScreen { .. } => "UnknownScreen",
        Rejection::UnknownShow { .. } => "UnknownShow",
        Rejection::UnknownLock { .. } => "UnknownLock",
        Rejection::UnknownBooking { .. } => "UnknownBooking",
        Rejection::LockExpired { .. } => "LockExpired",
        Rejection::NotOwner => "NotOwner",
        Rejection::ShowStarted { .. } => "ShowStarted",
        Rejection::ShowCancelled { .. } => "ShowCancelled",
        Rejection::ScreenBusy { .. } => "ScreenBusy",
        Rejection::WrongBookingStatus { .. } => "WrongBookingStatus",
        Rejection::LimitExceeded { .. } => "LimitExceeded",
        Rejection::InvalidInput { .. } => "InvalidInput",
        Rejection::RequestIdReused => "RequestIdReused",
        Rejection::EmailTaken => "EmailTaken",
        Rejection::PhoneTaken => "PhoneTaken",
        Rejection::UnknownUser { .. } => "UnknownUser",
        Rejection::RefreshTokenInvalid => "RefreshTokenInvalid",
        Rejection::UnknownTicket { .. } => "UnknownTicket",
        Rejection::TicketClosed { .. } => "TicketClosed",
        Rejection::PaymentExists { .. } => "PaymentExists",
        Rejection::NoPayment { .. } => "NoPayment",
        Rejection::NotAttended { .. } => "NotAttended",
        Rejection::AlreadyRated { .. } => "AlreadyRated",
        Rejection::CouponExists => "CouponExists",
        Rejection::CouponUnavailable { .. } => "CouponUnavailable",
        Rejection::ApplyFailed => "ApplyFailed",
        Rejection::RequestTableFull { .. } => "RequestTableFull",
    }
}

fn rejections() -> Vec<Rejection> {
    vec![
        Rejection::SeatsTaken {
            seats: vec![SeatId(1), SeatId(2)],
        },
        Rejection::UnknownSeats {
            seats: vec![SeatId(900)],
        },
        Rejection::UnknownTheater {
            theater: TheaterId(1),
        },
        Rejection::UnknownScreen {
            theater: TheaterId(1),
            screen: 2,
        },
        Rejection::UnknownShow { show: ShowId(3) },
        Rejection::UnknownLock { lock: LockId(4) },
        Rejection::UnknownBooking {
            booking: BookingId(5),
        },
        Rejection::LockExpired {
            lock: LockId(4),
            expired_at: 1_700_000_120_000,
        },
        Rejection::NotOwner,
        Rejection::ShowStarted {
            show: ShowId(3),
            start_ms: 1_700_000_000_000,
        },
        Rejection::ShowCancelled { show: ShowId(3) },
        Rejection::ScreenBusy {
            conflicting_show: ShowId(6),
        },
        Rejection::WrongBookingStatus {
            booking: BookingId(4),
            status: BookingStatus::Expired,
        },
        Rejection::LimitExceeded {
            limit: LimitName::SeatsPerLock,
            max: 10,
            requested: 12,
        },
        Rejection::InvalidInput {
            field: Cow::Borrowed("email"),
            reason: Cow::Borrowed("an address like name@example.com"),
        },
        Rejection::RequestIdReused,
        Rejection::EmailTaken,
        Rejection::PhoneTaken,
        Rejection::UnknownUser { user: UserId(7) },
        Rejection::RefreshTokenInvalid,
        Rejection::UnknownTicket {
            ticket: TicketId(9),
        },
        Rejection::TicketClosed {
            ticket: TicketId(10),
        },
        Rejection::PaymentExists {
            booking: BookingId(4),
            status: PaymentStatus::Pending,
        },
        Rejection::NoPayment {
            booking: BookingId(5),
        },
        Rejection::NotAttended {
            booking: BookingId(6),
        },
        Rejection::AlreadyRated {
            booking: BookingId(7),
        },
        Rejection::CouponExists,
        Rejection::CouponUnavailable {
            code: "DIWALI-50".into(),
            reason: Cow::Borrowed("expired"),
        },
        Rejection::ApplyFailed,
        Rejection::RequestTableFull {
            retry_after_ms: 86_400_000,
        },
    ]
}

fn event_label(event: &Event) -> &'static str {
    match event {
        Event::UserRegistered { .. } => "UserRegistered",
        Event::TheaterCreated { .. } => "TheaterCreated",
        Event::ShowPublished { .. } => "ShowPublished",
        Event::ShowCancelled { .. } => "ShowCancelled",
        Event::SeatsLocked { .. } => "SeatsLocked",
        Event::LockExtended { .. } => "LockExtended",
        Event::LockReleased { .. } => "LockReleased",
        Event::LockExpired { .. } => "LockExpired",
        Event::BookingConfirmed { .. } => "BookingConfirmed",
        Event::BookingCancelled { .. } => "BookingCancelled",
        Event::TicketOpened { .. } => "TicketOpened",
        Event::TicketMessagePosted { .. } => "TicketMessagePosted",
        Event::TicketStatusChanged { .. } => "TicketStatusChanged",
        Event::PaymentStarted { .. } => "PaymentStarted",
        Event::PaymentChanged { .. } => "PaymentChanged",
        Event::BookingRated { .. } => "BookingRated",
    }
}

fn events() -> Vec<Event> {
    vec![
        Event::UserRegistered { user: UserId(7) },
        Event::TheaterCreated {
            theater: TheaterId(1),
            city: "mumbai".into(),
        },
        Event::ShowPublished {
            show: ShowId(3),
            theater: TheaterId(1),
            start_ms: 1_700_000_000_000,
        },
        Event::ShowCancelled { show: ShowId(3) },
        Event::SeatsLocked {
            show: ShowId(3),
            lock: LockId(4),
            user: UserId(7),
            seats: vec![SeatId(1), SeatId(2)],
            expires_at: 1_700_000_120_000,
        },
        Event::LockExtended {
            show: ShowId(3),
            lock: LockId(4),
            expires_at: 1_700_000_180_000,
        },
        Event::LockReleased {
            show: ShowId(3),
            lock: LockId(4),
            user: UserId(7),
            seats: vec![SeatId(1)],
        },
        Event::LockExpired {
            show: ShowId(3),
            lock: LockId(5),
            user: UserId(8),
            seats: vec![SeatId(2)],
        },
        Event::BookingConfirmed {
            show: ShowId(3),
            booking: BookingId(4),
            user: UserId(7),
            seats: vec![SeatId(1), SeatId(2)],
            total_price_minor: 40_000,
        },
        Event::BookingCancelled {
            show: ShowId(3),
            booking: BookingId(4),
            user: UserId(7),
            seats: vec![SeatId(1), SeatId(2)],
            refund_due_minor: 30_000,
        },
        Event::TicketOpened {
            ticket: TicketId(9),
            customer: UserId(7),
        },
        Event::TicketMessagePosted {
            ticket: TicketId(9),
            author: UserId(8),
            from_agent: true,
        },
        Event::TicketStatusChanged {
            ticket: TicketId(9),
            status: TicketStatus::Closed,
        },
        Event::PaymentStarted {
            show: ShowId(3),
            booking: BookingId(4),
            user: UserId(7),
            amount_minor: 75_000,
        },
        Event::PaymentChanged {
            show: ShowId(3),
            booking: BookingId(4),
            user: UserId(7),
            status: PaymentStatus::RefundDue,
            refund_minor: 75_000,
        },
        Event::BookingRated {
            show: ShowId(3),
            theater: TheaterId(1),
            booking: BookingId(4),
            stars: 4,
        },
    ]
}

// The small enums that records and commands carry: each variant once.

fn categories() -> Vec<Category> {
    let all = [Category::Normal, Category::Premium, Category::Vip];
    for value in all {
        match value {
            Category::Normal | Category::Premium | Category::Vip => {}
        }
    }
    all.into()
}

fn show_statuses() -> Vec<ShowStatus> {
    let all = [ShowStatus::Published, ShowStatus::Cancelled];
    for value in all {
        match value {
            ShowStatus::Published | ShowStatus::Cancelled => {}
        }
    }
    all.into()
}

fn seat_states() -> Vec<SeatState> {
    let all = [
        SeatState::Available,
        SeatState::Locked(LockId(4)),
        SeatState::Booked(BookingId(5)),
    ];
    for value in all {
        match value {
            SeatState::Available | SeatState::Locked(_) | SeatState::Booked(_) => {}
        }
    }
    all.into()
}

fn booking_statuses() -> Vec<BookingStatus> {
    let all = [
        BookingStatus::PendingPayment,
        BookingStatus::Confirmed,
        BookingStatus::Expired,
        BookingStatus::Released,
        BookingStatus::Cancelled,
    ];
    for value in all {
        match value {
            BookingStatus::PendingPayment
            | BookingStatus::Confirmed
            | BookingStatus::Expired
            | BookingStatus::Released
            | BookingStatus::Cancelled => {}
        }
    }
    all.into()
}

fn roles() -> Vec<Role> {
    let all = [
        Role::Customer,
        Role::TheaterOwner,
        Role::Admin,
        Role::Sre,
        Role::Support,
    ];
    for value in all {
        match value {
            Role::Customer | Role::TheaterOwner | Role::Admin | Role::Sre | Role::Support => {}
        }
    }
    all.into()
}

fn payment_statuses() -> Vec<PaymentStatus> {
    let all = [
        PaymentStatus::Creating,
        PaymentStatus::Pending,
        PaymentStatus::Captured,
        PaymentStatus::Failed,
        PaymentStatus::RefundDue,
        PaymentStatus::Refunded,
    ];
    for value in all {
        match value {
            PaymentStatus::Creating
            | PaymentStatus::Pending
            | PaymentStatus::Captured
            | PaymentStatus::Failed
            | PaymentStatus::RefundDue
            | PaymentStatus::Refunded => {}
        }
    }
    all.into()
}

fn gateway_statuses() -> Vec<GatewayStatus> {
    let all = [
        GatewayStatus::Pending,
        GatewayStatus::Succeeded,
        GatewayStatus::Failed,
        GatewayStatus::Canceled,
        GatewayStatus::Refunded,
    ];
    for value in all {
        match value {
            GatewayStatus::Pending
            | GatewayStatus::Succeeded
            | GatewayStatus::Failed
            | GatewayStatus::Canceled
            | GatewayStatus::Refunded => {}
        }
    }
    all.into()
}

fn ticket_statuses() -> Vec<TicketStatus> {
    let all = [
        TicketStatus::Open,
        TicketStatus::AwaitingCustomer,
        TicketStatus::Resolved,
        TicketStatus::Closed,
    ];
    for value in all {
        match value {
            TicketStatus::Open
            | TicketStatus::AwaitingCustomer
            | TicketStatus::Resolved
            | TicketStatus::Closed => {}
        }
    }
    all.into()
}

fn coupon_use_statuses() -> Vec<CouponUseStatus> {
    let all = [
        CouponUseStatus::Reserved,
        CouponUseStatus::Used,
        CouponUseStatus::Returned,
    ];
    for value in all {
        match value {
            CouponUseStatus::Reserved | CouponUseStatus::Used | CouponUseStatus::Returned => {}
        }
    }
    all.into()
}

fn limit_names() -> Vec<LimitName> {
    let all = [
        LimitName::SeatsPerLock,
        LimitName::LockTtlMin,
        LimitName::LockTtlMax,
        LimitName::LockLife,
        LimitName::SeatsPerUserPerShow,
        LimitName::SeatsPerScreen,
        LimitName::ScreensPerTheater,
        LimitName::RowsPerScreen,
        LimitName::TextLength,
        LimitName::PageSize,
        LimitName::ShowDuration,
        LimitName::ExpireBatch,
        LimitName::TicketMessages,
        LimitName::TicketMessageBytes,
        LimitName::OpenTicketsPerCustomer,
    ];
    for value in all {
        match value {
            LimitName::SeatsPerLock
            | LimitName::LockTtlMin
            | LimitName::LockTtlMax
            | LimitName::LockLife
            | LimitName::SeatsPerUserPerShow
            | LimitName::SeatsPerScreen
            | LimitName::ScreensPerTheater
            | LimitName::RowsPerScreen
            | LimitName::TextLength
            | LimitName::PageSize
            | LimitName::ShowDuration
            | LimitName::ExpireBatch
            | LimitName::TicketMessages
            | LimitName::TicketMessageBytes
            | LimitName::OpenTicketsPerCustomer => {}
        }
    }
    all.into()
}

// Stored records, one sample each (their enums are covered above).

fn theater() -> Theater {
    Theater {
        id: TheaterId(1),
        city: "mumbai".into(),
        name: "PVR Juhu".into(),
        address: "1 Juhu Road".into(),
        lat_micro_deg: 19_076_000,
        lon_micro_deg: -72_877_000,
        owner: UserId(7),
        screens: vec![screen()],
        created_at: 1_690_000_000_000,
    }
}

fn show() -> Show {
    Show {
        id: ShowId(3),
        theater: TheaterId(1),
        screen: ScreenIndex(0),
        title: "Jawan".into(),
        genre: "action".into(),
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_010_800_000,
        prices: prices(),
        currency: "INR".into(),
        status: ShowStatus::Published,
        published_at: 1_690_000_000_001,
    }
}

fn booking() -> Booking {
    Booking {
        id: BookingId(4),
        show: ShowId(3),
        user: UserId(7),
        seats: vec![SeatId(1), SeatId(5)],
        total_price_minor: 80_000,
        currency: "INR".into(),
        status: BookingStatus::Confirmed,
        created_at: 1_690_000_000_002,
        expires_at: 1_690_000_120_002,
        payment_ref: Some("pay-4".into()),
        refund_due_minor: 0,
        updated_at: 1_690_000_000_003,
    }
}

fn request_record() -> RequestRecord {
    RequestRecord {
        at_ms: 1_690_000_000_002,
        fingerprint: *b"0123456789abcdef",
        outcome: Outcome::Applied(Applied::SeatsLocked {
            lock: LockId(4),
            booking: BookingId(4),
            seats: vec![SeatId(1), SeatId(5)],
            expires_at: 1_690_000_120_002,
            total_price_minor: 80_000,
        }),
    }
}

fn user() -> User {
    User {
        id: UserId(7),
        email: "asha@example.com".into(),
        phone: "+919800000001".into(),
        name: "Asha".into(),
        password_hash: "$argon2id$v=19$hash".into(),
        role: Role::Customer,
        created_at: 1_680_000_000_000,
    }
}

fn refresh_token() -> RefreshToken {
    RefreshToken {
        user: UserId(7),
        family: 21,
        expires_at: 1_700_086_400_000,
        used: true,
        revoked: false,
    }
}

fn audit_entry() -> AuditEntry {
    AuditEntry {
        id: 31,
        at_ms: 1_690_000_000_004,
        actor: "user:1 (admin)".into(),
        action: "set_role".into(),
        target: "user:7".into(),
        detail: "applied role=support".into(),
    }
}

fn ticket() -> Ticket {
    Ticket {
        id: TicketId(9),
        customer: UserId(7),
        booking: "mumbai-4".into(),
        subject: "Refund".into(),
        status: TicketStatus::AwaitingCustomer,
        agent: Some(UserId(8)),
        messages: vec![
            TicketMessage {
                author: UserId(7),
                from_agent: false,
                body: "Where is my refund?".into(),
                at_ms: 1_690_000_000_005,
            },
            TicketMessage {
                author: UserId(8),
                from_agent: true,
                body: "On its way.".into(),
                at_ms: 1_690_000_000_006,
            },
        ],
        created_at: 1_690_000_000_005,
        updated_at: 1_690_000_000_006,
    }
}

fn cursor_key() -> CursorKey {
    ("notify".into(), "mumbai".into())
}

fn consumer_cursor() -> ConsumerCursor {
    ConsumerCursor {
        index: 40,
        seq: 2,
        replay_from: 30,
        updated_at: 1_690_000_000_007,
    }
}

fn channels() -> Channels {
    Channels {
        webhook_url: Some("https://hooks.example/asha".into()),
        webhook_secret: Some("0123456789abcdef".into()),
        email: false,
        updated_at: 1_690_000_000_008,
    }
}

fn payment() -> Payment {
    Payment {
        booking: BookingId(4),
        user: UserId(7),
        method: "card".into(),
        amount_minor: 65_000,
        discount_minor: 15_000,
        coupon: Some("DIWALI-50".into()),
        currency: "INR".into(),
        status: PaymentStatus::Captured,
        gateway_ref: Some("gw-11".into()),
        payment_url: Some("https://pay.example/gw-11".into()),
        gateway_version: 3,
        refund_minor: 0,
        failure: None,
        created_at: 1_690_000_000_009,
        updated_at: 1_690_000_000_010,
    }
}

fn rating() -> Rating {
    Rating {
        booking: BookingId(4),
        show: ShowId(3),
        theater: TheaterId(1),
        user: UserId(7),
        stars: 5,
        message: "Loved it".into(),
        at_ms: 1_700_020_000_000,
    }
}

fn coupon() -> Coupon {
    Coupon {
        code: "DIWALI-50".into(),
        percent: 50,
        max_discount_minor: 15_000,
        valid_from: 1_600_000_000_000,
        valid_until: 1_800_000_000_000,
        max_uses: 100,
        reserved: 2,
        used: 3,
        created_at: 1_590_000_000_000,
    }
}

fn coupon_use() -> CouponUse {
    CouponUse {
        code: "DIWALI-50".into(),
        booking: "mumbai-4".into(),
        user: UserId(7),
        discount_minor: 15_000,
        status: CouponUseStatus::Reserved,
        updated_at: 1_690_000_000_011,
    }
}

fn referral() -> Referral {
    Referral {
        referee: UserId(12),
        referrer: UserId(7),
        rewarded_for: Some("mumbai-4".into()),
        at_ms: 1_690_000_000_012,
    }
}

fn event_record() -> EventRecord {
    EventRecord {
        index: 4,
        seq: 1,
        at_ms: 1_690_000_000_002,
        event: Event::LockReleased {
            show: ShowId(3),
            lock: LockId(4),
            user: UserId(7),
            seats: vec![SeatId(1)],
        },
    }
}

/// A state with one entry in every map: its encoding is what `Ledger::digest` hashes.
fn state() -> State {
    let mut seats = vec![SeatState::Available; 7];
    seats[1] = SeatState::Booked(BookingId(4));
    seats[5] = SeatState::Booked(BookingId(4));
    State {
        clock: 1_700_020_000_000,
        theaters: BTreeMap::from([(TheaterId(1), theater())]),
        shows: BTreeMap::from([(ShowId(3), show())]),
        seats: BTreeMap::from([(ShowId(3), seats)]),
        bookings: BTreeMap::from([(BookingId(4), booking())]),
        requests: BTreeMap::from([(RequestId("r-4".into()), request_record())]),
        users: BTreeMap::from([(UserId(7), user())]),
        refresh_tokens: BTreeMap::from([("hash-1".into(), refresh_token())]),
        audit: BTreeMap::from([(31, audit_entry())]),
        tickets: BTreeMap::from([(TicketId(9), ticket())]),
        cursors: BTreeMap::from([(cursor_key(), consumer_cursor())]),
        payments: BTreeMap::from([(BookingId(4), payment())]),
        ratings: BTreeMap::from([(BookingId(4), rating())]),
        coupons: BTreeMap::from([("DIWALI-50".into(), coupon())]),
        coupon_uses: BTreeMap::from([("DIWALI-50/mumbai-4".into(), coupon_use())]),
        referrals: BTreeMap::from([(UserId(12), referral())]),
        channels: BTreeMap::from([(UserId(7), channels())]),
    }
}

fn snapshot_body() -> SnapshotBody {
    SnapshotBody {
        marker: vec![0xde, 0xad, 0xbe, 0xef],
        state: state(),
        events: vec![event_record()],
        events_kept_from: 3,
        rules: Some(sample_limits()),
    }
}

// ----- checking -------------------------------------------------------------------

/// Whether bytes decode back to the sample, and if not, what they decode to.
type DecodeCheck = Box<dyn Fn(&[u8]) -> Result<(), String>>;

/// One value and its encoding, with a check that bytes decode back to it.
struct Golden {
    name: String,
    bytes: Vec<u8>,
    decodes_to_sample: DecodeCheck,
}

fn golden<T>(name: impl Into<String>, value: T) -> Golden
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    Golden {
        name: name.into(),
        bytes: codec::encode(&value),
        decodes_to_sample: Box::new(move |bytes| match codec::decode::<T>(bytes) {
            Ok(decoded) if decoded == value => Ok(()),
            Ok(decoded) => Err(format!("they decode as {decoded:?}")),
            Err(error) => Err(format!("they no longer decode: {error}")),
        }),
    }
}

/// Goldens of every variant of an enum, named `Enum::Variant`.
fn variants<T>(enum_name: &str, samples: Vec<T>, label: fn(&T) -> String) -> Vec<Golden>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + 'static,
{
    samples
        .into_iter()
        .map(|sample| golden(format!("{enum_name}::{}", label(&sample)), sample))
        .collect()
}

fn debug_label<T: Debug>(value: &T) -> String {
    format!("{value:?}")
}

fn commands() -> Vec<Golden> {
    let mut goldens = vec![
        golden(
            "Command(request id)",
            Command {
                request_id: Some(RequestId("u7:checkout-1".into())),
                at_ms: 1_690_000_000_002,
                kind: CommandKind::ExpireLocks { max_locks: 7 },
            },
        ),
        golden(
            "Command(system)",
            Command {
                request_id: None,
                at_ms: 1_690_000_000_003,
                kind: CommandKind::ExpireLocks { max_locks: 8 },
            },
        ),
    ];
    goldens.extend(variants("CommandKind", command_kinds(), |kind| {
        command_kind_label(kind).into()
    }));
    goldens
}

fn outcome_goldens() -> Vec<Golden> {
    let mut goldens = variants("Outcome", outcomes(), |o| outcome_label(o).into());
    goldens.extend(variants("Applied", applieds(), |a| applied_label(a).into()));
    goldens.extend(variants("Rejection", rejections(), |r| {
        rejection_label(r).into()
    }));
    goldens
}

fn event_goldens() -> Vec<Golden> {
    let mut goldens = variants("Event", events(), |e| event_label(e).into());
    goldens.push(golden("EventRecord", event_record()));
    goldens
}

fn enum_goldens() -> Vec<Golden> {
    let mut goldens = variants("Category", categories(), debug_label);
    goldens.extend(variants("ShowStatus", show_statuses(), debug_label));
    goldens.extend(variants("SeatState", seat_states(), debug_label));
    goldens.extend(variants("BookingStatus", booking_statuses(), debug_label));
    goldens.extend(variants("Role", roles(), debug_label));
    goldens.extend(variants("PaymentStatus", payment_statuses(), debug_label));
    goldens.extend(variants("GatewayStatus", gateway_statuses(), debug_label));
    goldens.extend(variants("TicketStatus", ticket_statuses(), debug_label));
    goldens.extend(variants(
        "CouponUseStatus",
        coupon_use_statuses(),
        debug_label,
    ));
    goldens.extend(variants("LimitName", limit_names(), debug_label));
    goldens.extend(variants("RequestKind", request_kinds(), debug_label));
    goldens
}

fn request_kinds() -> Vec<RequestKind> {
    let all = [RequestKind::Client, RequestKind::Auto];
    for value in all {
        match value {
            RequestKind::Client | RequestKind::Auto => {}
        }
    }
    all.into()
}

fn record_goldens() -> Vec<Golden> {
    let empty_snapshot = SnapshotBody {
        marker: vec![1, 2, 3],
        state: State::default(),
        events: vec![],
        events_kept_from: 0,
        rules: None,
    };
    let mut keyed = State::default();
    for id in ["7:a", "auto:7:b"] {
        keyed
            .requests
            .insert(RequestId(id.into()), request_record());
    }
    let keyed_snapshot = SnapshotBody {
        marker: vec![4, 5],
        state: keyed,
        events: vec![],
        events_kept_from: 0,
        rules: None,
    };
    vec![
        golden("Theater", theater()),
        golden("Show", show()),
        golden("Booking", booking()),
        golden("RequestRecord", request_record()),
        golden(
            "BucketSum",
            state_machine::requests::BucketSum {
                count: 4_000,
                hash: [1, u64::MAX, 3, 1 << 40],
            },
        ),
        golden("User", user()),
        golden("RefreshToken", refresh_token()),
        golden("AuditEntry", audit_entry()),
        golden("Ticket", ticket()),
        golden("CursorKey", cursor_key()),
        golden("ConsumerCursor", consumer_cursor()),
        golden("Channels", channels()),
        golden("Payment", payment()),
        golden("Rating", rating()),
        golden("Coupon", coupon()),
        golden("CouponUse", coupon_use()),
        golden("Referral", referral()),
        golden("State", state()),
        golden("SnapshotBody", snapshot_body()),
        Golden {
            name: "SnapshotFrame v4(two request records)".into(),
            bytes: snapshot::encode(&keyed_snapshot),
            decodes_to_sample: Box::new(move |bytes| {
                let decoded = snapshot::decode(bytes, &Limits::default())
                    .map_err(|error| format!("they no longer decode: {error}"))?;
                let same = decoded.marker == keyed_snapshot.marker
                    && decoded.ledger.full_state() == keyed_snapshot.state;
                if same {
                    Ok(())
                } else {
                    Err("they decode as another snapshot".into())
                }
            }),
        },
        Golden {
            name: "SnapshotFrame(empty state)".into(),
            // The version 3 frame: still read, no longer written.
            bytes: snapshot::frame_payload(&codec::encode(&empty_snapshot)),
            decodes_to_sample: Box::new(move |bytes| {
                let decoded = snapshot::decode(bytes, &Limits::default())
                    .map_err(|error| format!("they no longer decode: {error}"))?;
                let same = decoded.marker == empty_snapshot.marker
                    && decoded.ledger.state() == &empty_snapshot.state
                    && decoded.events == empty_snapshot.events
                    && decoded.events_kept_from == empty_snapshot.events_kept_from;
                if same {
                    Ok(())
                } else {
                    Err("they decode as another snapshot".into())
                }
            }),
        },
    ]
}

const APPEND_ONLY: &str = "The serialized format of the Raft log, the RocksDB store and \
snapshots is append-only: old bytes are read by new code, by position. Add a new enum \
variant only at the END of its enum (a command that needs another field becomes a new \
variant, e.g. `LockSeatsV2`); any other change (a variant moved, removed or inserted, a \
field added, removed, reordered or retyped, even at the end of a struct) needs a new \
format version (store::FORMAT_VERSION, snapshot VERSION) with a migration that reads the \
old bytes. Only then delete the golden line by hand and regenerate it with \
GOLDEN_UPDATE=1 (see tests/golden.rs).";

fn golden_path(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{family}.golden"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            text.get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("not hex at {at}"))
        })
        .collect()
}

/// The checked-in goldens of a family: header comment lines, then `name = hex` lines
/// in file order.
fn read_goldens(family: &str) -> (Vec<String>, Vec<(String, String)>) {
    let path = golden_path(family);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut header = Vec::new();
    let mut entries = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            if entries.is_empty() {
                header.push(line.to_owned());
            }
            continue;
        }
        let (name, hex) = line
            .rsplit_once(" = ")
            .unwrap_or_else(|| panic!("{}: malformed line {line:?}", path.display()));
        entries.push((name.to_owned(), hex.to_owned()));
    }
    (header, entries)
}

fn header_for(family: &str) -> Vec<String> {
    vec![
        format!("# Golden bytes of the ledger's {family} (state-machine/tests/golden.rs)."),
        "# Append-only: never edit a line; see the test's module doc before deleting one.".into(),
    ]
}

/// Compares a family's samples with its golden file; with `GOLDEN_UPDATE=1`, first
/// appends the goldens of samples that have none.
fn check_family(family: &str, goldens: Vec<Golden>) {
    let mut names = std::collections::BTreeSet::new();
    for golden in &goldens {
        assert!(
            names.insert(golden.name.as_str()),
            "two samples are named {}",
            golden.name
        );
    }
    let (mut header, mut entries) = read_goldens(family);
    let missing: Vec<&Golden> = goldens
        .iter()
        .filter(|golden| !entries.iter().any(|(name, _)| *name == golden.name))
        .collect();
    if std::env::var("GOLDEN_UPDATE").is_ok_and(|value| value == "1") && !missing.is_empty() {
        if header.is_empty() {
            header = header_for(family);
        }
        for golden in &missing {
            eprintln!("golden {family}: adding {}", golden.name);
            entries.push((golden.name.clone(), hex(&golden.bytes)));
        }
        let mut text = header.join("\n") + "\n";
        for (name, hex) in &entries {
            text.push_str(&format!("{name} = {hex}\n"));
        }
        let path = golden_path(family);
        std::fs::create_dir_all(path.parent().expect("a parent directory")).expect("mkdir");
        std::fs::write(&path, text).expect("write the golden file");
    }
    let mut failures = Vec::new();
    for golden in &goldens {
        let Some((_, checked_in)) = entries.iter().find(|(name, _)| *name == golden.name) else {
            failures.push(format!(
                "{}: no golden bytes checked in. If this is a new variant at the end of its \
                 enum or a new record type, run GOLDEN_UPDATE=1 cargo test -p state-machine \
                 --test golden and commit tests/golden/{family}.golden.",
                golden.name
            ));
            continue;
        };
        let now = hex(&golden.bytes);
        if *checked_in != now {
            let old = unhex(checked_in)
                .and_then(|bytes| (golden.decodes_to_sample)(&bytes))
                .err()
                .unwrap_or_else(|| "they still decode to the sample".into());
            failures.push(format!(
                "{}: the encoding changed.\n  checked in: {checked_in}\n  now:        {now}\n  \
                 Read with this build, the checked-in bytes: {old}.",
                golden.name
            ));
        } else if let Err(problem) = (golden.decodes_to_sample)(&golden.bytes) {
            failures.push(format!("{}: {problem}", golden.name));
        }
    }
    for (name, _) in &entries {
        if !names.contains(name.as_str()) {
            failures.push(format!(
                "{name}: checked in, but no sample has this name any more (a variant or \
                 record removed or renamed?)"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "golden bytes of tests/golden/{family}.golden do not match:\n\n{}\n\n{APPEND_ONLY}",
        failures.join("\n\n")
    );
}

/// Fails unless `samples` holds exactly one value of every variant of `T`, in
/// declaration order. The variant index is the first byte of the encoding (below 251
/// variants); a variant exists at index `n` when `[n, 0, 0, ...]` decodes (zero is a
/// valid encoding of every field type the ledger uses).
fn assert_every_variant<T: Serialize + DeserializeOwned + Debug>(enum_name: &str, samples: &[T]) {
    for (position, sample) in samples.iter().enumerate() {
        let index = codec::encode(sample)[0];
        assert_eq!(
            usize::from(index),
            position,
            "{enum_name}: sample {position} ({sample:?}) is variant {index}: keep one \
             sample per variant, in declaration order"
        );
    }
    let mut probe = vec![0u8; 256];
    probe[0] = u8::try_from(samples.len()).expect("fewer than 251 variants");
    let decoded = bincode::serde::decode_from_slice::<T, _>(&probe, bincode::config::standard());
    if let Ok((value, _)) = decoded {
        panic!(
            "{enum_name} has a variant {} ({value:?}) without a golden sample: add one at the \
             end of the samples in tests/golden.rs, and make sure the variant was added at the \
             end of its enum. {APPEND_ONLY}",
            samples.len()
        );
    }
}

#[test]
fn every_variant_has_a_sample() {
    assert_every_variant("CommandKind", &command_kinds());
    assert_every_variant("Outcome", &outcomes());
    assert_every_variant("Applied", &applieds());
    assert_every_variant("Rejection", &rejections());
    assert_every_variant("Event", &events());
    assert_every_variant("Category", &categories());
    assert_every_variant("ShowStatus", &show_statuses());
    assert_every_variant("SeatState", &seat_states());
    assert_every_variant("BookingStatus", &booking_statuses());
    assert_every_variant("Role", &roles());
    assert_every_variant("PaymentStatus", &payment_statuses());
    assert_every_variant("GatewayStatus", &gateway_statuses());
    assert_every_variant("TicketStatus", &ticket_statuses());
    assert_every_variant("CouponUseStatus", &coupon_use_statuses());
    assert_every_variant("LimitName", &limit_names());
}

#[test]
fn commands_match_their_golden_bytes() {
    check_family("commands", commands());
}

#[test]
fn outcomes_match_their_golden_bytes() {
    check_family("outcomes", outcome_goldens());
}

#[test]
fn events_match_their_golden_bytes() {
    check_family("events", event_goldens());
}

#[test]
fn records_match_their_golden_bytes() {
    check_family("records", record_goldens());
}

#[test]
fn enums_in_records_match_their_golden_bytes() {
    check_family("enums", enum_goldens());
}
