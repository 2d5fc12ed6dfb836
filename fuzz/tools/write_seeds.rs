//! Writes the seed corpus of the fuzz targets (committed under `fuzz/corpus/`):
//! `scripts/fuzz.sh --seeds` (built with the targets; not a fuzz target itself).
//! Seeds are valid inputs that reach deep paths; the fuzzer mutates them.
//! It is built like a fuzz target (every binary of this crate links libFuzzer's
//! runtime), writes the seeds in its `init` and exits before fuzzing anything.
#![no_main]
// `init` exits the process, so the macro's code after it is unreachable by design.
#![allow(unreachable_code)]

use seat_ledger_fuzz::{frame_all, seeded_ledger, T0_MS};
use state_machine::snapshot::SnapshotBody;
use state_machine::testkit::command;
use state_machine::{
    Actor, BookingId, Command, CommandKind, GatewayStatus, LockId, Role, SeatId, ShowId, TicketId,
    TicketStatus, UserId,
};
use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn at(n: u64) -> u64 {
    T0_MS + 1_000 * n
}

fn write_all_seeds() {
    // The seeded ledger holds 4 commands; the first fuzzed command has log index 5.
    let lock = |id: &str, n, show, user, seats: &[u32]| {
        command(
            id,
            at(n),
            CommandKind::LockSeats {
                show: ShowId(show),
                user: UserId(user),
                seats: seats.iter().map(|s| SeatId(*s)).collect(),
                ttl_ms: Some(60_000),
            },
        )
    };
    let sequences: Vec<(&str, Vec<Command>)> = vec![
        (
            "lock-confirm-cancel",
            vec![
                lock("r1", 1, 2, 7, &[0, 1]),
                command(
                    "r2",
                    at(2),
                    CommandKind::ConfirmBooking {
                        lock: LockId(5),
                        user: UserId(7),
                        payment_ref: "pay-1".into(),
                    },
                ),
                command(
                    "r3",
                    at(3),
                    CommandKind::CancelBooking {
                        booking: BookingId(5),
                        user: UserId(7),
                    },
                ),
            ],
        ),
        (
            "lock-extend-release-relock",
            vec![
                lock("r1", 1, 2, 7, &[3]),
                command(
                    "r2",
                    at(2),
                    CommandKind::ExtendLock {
                        lock: LockId(5),
                        user: UserId(7),
                        ttl_ms: 120_000,
                    },
                ),
                command(
                    "r3",
                    at(3),
                    CommandKind::ReleaseLock {
                        lock: LockId(5),
                        user: UserId(7),
                    },
                ),
                lock("r4", 4, 2, 8, &[3, 4]),
            ],
        ),
        (
            "expiry-and-conflict",
            vec![
                lock("r1", 1, 3, 7, &[10, 11, 12]),
                lock("r2", 2, 3, 8, &[12]),
                Command {
                    request_id: None,
                    at_ms: at(200),
                    kind: CommandKind::ExpireLocks { max_locks: 10 },
                },
                lock("r1", 201, 3, 7, &[10, 11, 12]),
                lock("r3", 202, 3, 8, &[12]),
            ],
        ),
        (
            "cancel-show-with-bookings",
            vec![
                lock("r1", 1, 2, 7, &[20]),
                command(
                    "r2",
                    at(2),
                    CommandKind::ConfirmBooking {
                        lock: LockId(5),
                        user: UserId(7),
                        payment_ref: "pay-2".into(),
                    },
                ),
                lock("r3", 3, 2, 9, &[21]),
                command("r4", at(4), CommandKind::CancelShow { show: ShowId(2) }),
            ],
        ),
        (
            "accounts",
            vec![
                command(
                    "r1",
                    at(1),
                    CommandKind::RegisterUser {
                        email: "b@example.test".into(),
                        phone: "+910000000002".into(),
                        name: "B".into(),
                        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                        role: Role::Customer,
                    },
                ),
                command(
                    "r2",
                    at(2),
                    CommandKind::SetRole {
                        user: UserId(5),
                        role: Role::Sre,
                    },
                ),
                command(
                    "r3",
                    at(3),
                    CommandKind::IssueRefreshToken {
                        user: UserId(5),
                        token_hash: "h1".into(),
                        expires_at: at(10_000),
                    },
                ),
                command(
                    "r4",
                    at(4),
                    CommandKind::RotateRefreshToken {
                        old_hash: "h1".into(),
                        new_hash: "h2".into(),
                        expires_at: at(10_000),
                    },
                ),
                command(
                    "r5",
                    at(5),
                    CommandKind::RotateRefreshToken {
                        old_hash: "h1".into(),
                        new_hash: "h3".into(),
                        expires_at: at(10_000),
                    },
                ),
            ],
        ),
        (
            "payment-saga",
            vec![
                lock("r1", 1, 2, 7, &[30, 31]),
                command(
                    "r2",
                    at(2),
                    CommandKind::StartPayment {
                        booking: BookingId(5),
                        user: UserId(7),
                        method: "sandbox-approve".into(),
                        discount_minor: 0,
                        coupon: None,
                    },
                ),
                command(
                    "r3",
                    at(3),
                    CommandKind::RecordGatewayState {
                        booking: BookingId(5),
                        gateway_ref: "pay_1".into(),
                        payment_url: "http://127.0.0.1:1/pay/pay_1".into(),
                        status: GatewayStatus::Succeeded,
                        version: 2,
                        amount_minor: 40_000,
                        reason: None,
                    },
                ),
                command(
                    "r4",
                    at(4),
                    CommandKind::CancelBooking {
                        booking: BookingId(5),
                        user: UserId(7),
                    },
                ),
            ],
        ),
        (
            "coupons-referrals",
            vec![
                command(
                    "r1",
                    at(1),
                    CommandKind::CreateCoupon {
                        code: "FEST10".into(),
                        percent: 10,
                        max_discount_minor: 5_000,
                        valid_from: at(0),
                        valid_until: at(100_000),
                        max_uses: 1,
                    },
                ),
                command(
                    "r2",
                    at(2),
                    CommandKind::ReserveCoupon {
                        code: "FEST10".into(),
                        booking: "mumbai-9".into(),
                        user: UserId(7),
                        price_minor: 40_000,
                    },
                ),
                command(
                    "r3",
                    at(3),
                    CommandKind::ReserveCoupon {
                        code: "FEST10".into(),
                        booking: "mumbai-10".into(),
                        user: UserId(8),
                        price_minor: 40_000,
                    },
                ),
                command(
                    "r4",
                    at(4),
                    CommandKind::SettleCouponUse {
                        code: "FEST10".into(),
                        booking: "mumbai-9".into(),
                        confirmed: false,
                    },
                ),
                command(
                    "r5",
                    at(5),
                    CommandKind::RegisterReferral {
                        referee: UserId(8),
                        code: "REF-u4".into(),
                    },
                ),
            ],
        ),
        (
            "tickets-audit-cursor",
            vec![
                command(
                    "r1",
                    at(1),
                    CommandKind::OpenTicket {
                        customer: UserId(4),
                        booking: "mumbai-5".into(),
                        subject: "Refund".into(),
                        body: "Where is my refund?".into(),
                    },
                ),
                command(
                    "r2",
                    at(2),
                    CommandKind::PostTicketMessage {
                        ticket: TicketId(5),
                        actor: Actor {
                            user: UserId(1),
                            agent: true,
                        },
                        body: "On its way.".into(),
                    },
                ),
                command(
                    "r3",
                    at(3),
                    CommandKind::SetTicketStatus {
                        ticket: TicketId(5),
                        actor: Actor {
                            user: UserId(1),
                            agent: true,
                        },
                        status: TicketStatus::Resolved,
                    },
                ),
                command(
                    "r4",
                    at(4),
                    CommandKind::RecordAudit {
                        actor: "u1 (admin)".into(),
                        action: "set_role".into(),
                        target: "u4".into(),
                        detail: "requested sre".into(),
                    },
                ),
                command(
                    "r5",
                    at(5),
                    CommandKind::AdvanceCursor {
                        consumer: "notify".into(),
                        stream: "mumbai".into(),
                        index: 9,
                        seq: 0,
                        replay_from: 3,
                    },
                ),
            ],
        ),
    ];
    for (name, commands) in &sequences {
        write("ledger_commands", name, &frame_all(commands));
    }

    // A snapshot of the seeded ledger after the first sequence; mode byte 0 makes the
    // target frame it with a valid header and checksum.
    let (mut ledger, mut index) = seeded_ledger();
    for cmd in &sequences[0].1 {
        index += 1;
        ledger.apply(index, cmd);
    }
    let body = SnapshotBody {
        marker: index.to_le_bytes().to_vec(),
        state: ledger.full_state(),
        events: vec![],
        events_kept_from: 0,
        rules: None,
    };
    let mut seed = vec![0u8];
    seed.extend_from_slice(&state_machine::codec::encode(&body));
    write("snapshot", "seeded-ledger", &seed);

    for (i, frame) in raft_node::fuzzing::sample_frames().iter().enumerate() {
        write("peer_frame", &format!("frame-{i}"), frame);
    }
    println!("seeds written under fuzz/corpus/");
}

libfuzzer_sys::fuzz_target!(
    init: {
        write_all_seeds();
        std::process::exit(0);
    },
    |_data: &[u8]| {}
);
