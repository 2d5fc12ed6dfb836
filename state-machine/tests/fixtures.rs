//! Logs and snapshots written by earlier releases still read the same way.
//!
//! Each directory under `tests/fixtures/` was written once, by the release its README
//! line names, and is never regenerated: `log.bin` is the codec encoding of a command
//! log (`Vec<(LogIndex, Command)>`), `snapshot.bin` the snapshot that release's store
//! exported after applying it, and `digest.hex` the ledger's digest at that point.
//! This build must replay the log, and install the snapshot, to the same digest: if it
//! does not, it reads old logs or snapshots as something else (see tests/golden.rs for
//! the append-only rule).
//!
//! Adding a fixture (never replacing one):
//! `FIXTURE_WRITE=<new directory name> cargo test -p state-machine --test fixtures
//! write_fixture`, then add its README line and commit it.

use state_machine::snapshot;
use state_machine::testkit::{command, create_theater, publish_show, screen};
use state_machine::*;
use std::path::{Path, PathBuf};

const T0: Millis = 1_700_000_000_000;
const MINUTE_MS: Millis = 60_000;
const HOUR_MS: Millis = 60 * MINUTE_MS;

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn register(email: &str, phone: &str, name: &str, role: Role) -> CommandKind {
    CommandKind::RegisterUser {
        email: email.into(),
        phone: phone.into(),
        name: name.into(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${name}"),
        role,
    }
}

/// A refresh token's hash (64 hex digits, as the api's BLAKE3 hashes are).
fn token(n: u8) -> String {
    format!("{n:x}").repeat(64)
}

/// A gateway report on `booking`'s payment of `amount_minor`.
fn gateway(
    booking: u64,
    amount_minor: u64,
    status: GatewayStatus,
    version: u64,
    reason: Option<&str>,
) -> CommandKind {
    CommandKind::RecordGatewayState {
        booking: BookingId(booking),
        gateway_ref: format!("gw-{booking}"),
        payment_url: format!("https://pay.example/gw-{booking}"),
        status,
        version,
        amount_minor,
        reason: reason.map(str::to_owned),
    }
}

/// The commands of the current release's fixture: accounts and tokens, a theater with
/// two shows, locks that are extended, released, expired, confirmed and cancelled,
/// paid and declined payments with a stale gateway report, coupons, a referral,
/// notification channels, a support ticket, a cursor, an audit entry, a rating, a
/// cancelled show, rejections, and a retried and a reused request id. Ids are log
/// indexes, so the comments name what each command creates.
fn release_log() -> Vec<(LogIndex, Command)> {
    let agent = Actor {
        user: UserId(4),
        agent: true,
    };
    let customer = Actor {
        user: UserId(2),
        agent: false,
    };
    let kinds: Vec<(Millis, CommandKind)> = vec![
        // 1-4: an owner, two customers and a support agent.
        (
            T0,
            register(
                "owner@example.com",
                "+919800000001",
                "Owner",
                Role::TheaterOwner,
            ),
        ),
        (
            T0,
            register("asha@example.com", "+919800000002", "Asha", Role::Customer),
        ),
        (
            T0,
            register("ravi@example.com", "+919800000003", "Ravi", Role::Customer),
        ),
        (
            T0,
            register(
                "meera@example.com",
                "+919800000004",
                "Meera",
                Role::Customer,
            ),
        ),
        (
            T0,
            CommandKind::SetRole {
                user: UserId(4),
                role: Role::Support,
            },
        ),
        (
            T0,
            CommandKind::IssueRefreshToken {
                user: UserId(2),
                token_hash: token(1),
                expires_at: T0 + 24 * HOUR_MS,
            },
        ),
        (
            T0,
            CommandKind::RotateRefreshToken {
                old_hash: token(1),
                new_hash: token(2),
                expires_at: T0 + 24 * HOUR_MS,
            },
        ),
        // 8: token 1 presented again: the family is revoked.
        (
            T0,
            CommandKind::RotateRefreshToken {
                old_hash: token(1),
                new_hash: token(3),
                expires_at: T0 + 24 * HOUR_MS,
            },
        ),
        // 9: theater t9; 10, 11: shows s10 and s11.
        (
            T0,
            create_theater(
                "pune",
                UserId(1),
                vec![screen("Audi 1", 3, 4), screen("Audi 2", 2, 3)],
            ),
        ),
        (T0, publish_show(TheaterId(9), 0, T0 + 3 * HOUR_MS, "Jawan")),
        (T0, publish_show(TheaterId(9), 1, T0 + 3 * HOUR_MS, "Dunki")),
        // 12: l12 extended and confirmed.
        (
            T0 + 1_000,
            CommandKind::LockSeats {
                show: ShowId(10),
                user: UserId(2),
                seats: vec![SeatId(0), SeatId(1)],
                ttl_ms: Some(2 * MINUTE_MS),
            },
        ),
        (
            T0 + 2_000,
            CommandKind::ExtendLock {
                lock: LockId(12),
                user: UserId(2),
                ttl_ms: 3 * MINUTE_MS,
            },
        ),
        (
            T0 + 3_000,
            CommandKind::ConfirmBooking {
                lock: LockId(12),
                user: UserId(2),
                payment_ref: "pay-12".into(),
            },
        ),
        // 15: l15 released.
        (
            T0 + 4_000,
            CommandKind::LockSeats {
                show: ShowId(10),
                user: UserId(3),
                seats: vec![SeatId(2)],
                ttl_ms: None,
            },
        ),
        (
            T0 + 5_000,
            CommandKind::ReleaseLock {
                lock: LockId(15),
                user: UserId(3),
            },
        ),
        // 17: rejected, seat 1 is booked.
        (
            T0 + 6_000,
            CommandKind::LockSeats {
                show: ShowId(10),
                user: UserId(3),
                seats: vec![SeatId(1)],
                ttl_ms: None,
            },
        ),
        // 18: l18 expires at 19's sweep.
        (
            T0 + 7_000,
            CommandKind::LockSeats {
                show: ShowId(11),
                user: UserId(3),
                seats: vec![SeatId(0), SeatId(1), SeatId(2)],
                ttl_ms: Some(2 * MINUTE_MS),
            },
        ),
        (
            T0 + 10 * MINUTE_MS,
            CommandKind::ExpireLocks { max_locks: 10 },
        ),
        (
            T0 + 10 * MINUTE_MS,
            CommandKind::CancelShow { show: ShowId(11) },
        ),
        // 21: l21 paid through the saga: pending, succeeded, then a stale report.
        (
            T0 + 11 * MINUTE_MS,
            CommandKind::LockSeats {
                show: ShowId(10),
                user: UserId(3),
                seats: vec![SeatId(4), SeatId(5)],
                ttl_ms: Some(5 * MINUTE_MS),
            },
        ),
        (
            T0 + 11 * MINUTE_MS + 1_000,
            CommandKind::StartPayment {
                booking: BookingId(21),
                user: UserId(3),
                method: "card".into(),
                discount_minor: 0,
                coupon: None,
            },
        ),
        (
            T0 + 11 * MINUTE_MS + 2_000,
            gateway(21, 70_000, GatewayStatus::Pending, 1, None),
        ),
        (
            T0 + 11 * MINUTE_MS + 3_000,
            gateway(21, 70_000, GatewayStatus::Succeeded, 2, None),
        ),
        (
            T0 + 11 * MINUTE_MS + 4_000,
            gateway(21, 70_000, GatewayStatus::Pending, 1, None),
        ),
        // 26: l26's discounted payment is declined.
        (
            T0 + 12 * MINUTE_MS,
            CommandKind::LockSeats {
                show: ShowId(10),
                user: UserId(4),
                seats: vec![SeatId(8)],
                ttl_ms: Some(5 * MINUTE_MS),
            },
        ),
        (
            T0 + 12 * MINUTE_MS + 1_000,
            CommandKind::StartPayment {
                booking: BookingId(26),
                user: UserId(4),
                method: "card".into(),
                discount_minor: 5_000,
                coupon: Some("DIWALI-50".into()),
            },
        ),
        (
            T0 + 12 * MINUTE_MS + 2_000,
            gateway(26, 55_000, GatewayStatus::Failed, 1, Some("declined")),
        ),
        (
            T0 + 13 * MINUTE_MS,
            CommandKind::CancelBooking {
                booking: BookingId(12),
                user: UserId(2),
            },
        ),
        // 30: coupon uses: one given back, one confirmed.
        (
            T0 + 13 * MINUTE_MS,
            CommandKind::CreateCoupon {
                code: "DIWALI-50".into(),
                percent: 50,
                max_discount_minor: 15_000,
                valid_from: T0,
                valid_until: T0 + 30 * 24 * HOUR_MS,
                max_uses: 10,
            },
        ),
        (
            T0 + 13 * MINUTE_MS,
            CommandKind::ReserveCoupon {
                code: "DIWALI-50".into(),
                booking: "pune-26".into(),
                user: UserId(4),
                price_minor: 20_000,
            },
        ),
        (
            T0 + 13 * MINUTE_MS,
            CommandKind::SettleCouponUse {
                code: "DIWALI-50".into(),
                booking: "pune-26".into(),
                confirmed: false,
            },
        ),
        (
            T0 + 13 * MINUTE_MS,
            CommandKind::ReserveCoupon {
                code: "DIWALI-50".into(),
                booking: "pune-21".into(),
                user: UserId(3),
                price_minor: 40_000,
            },
        ),
        (
            T0 + 13 * MINUTE_MS,
            CommandKind::SettleCouponUse {
                code: "DIWALI-50".into(),
                booking: "pune-21".into(),
                confirmed: true,
            },
        ),
        (
            T0 + 14 * MINUTE_MS,
            CommandKind::RegisterReferral {
                referee: UserId(3),
                code: "REF2".into(),
            },
        ),
        (
            T0 + 14 * MINUTE_MS,
            CommandKind::RewardReferral {
                referee: UserId(3),
                booking: "pune-21".into(),
            },
        ),
        (
            T0 + 14 * MINUTE_MS,
            CommandKind::SetNotificationChannels {
                user: UserId(2),
                webhook_url: Some("https://hooks.example/asha".into()),
                webhook_secret: Some("0123456789abcdef0123".into()),
                email: false,
            },
        ),
        // 38: ticket k38, answered by the agent and closed by its customer.
        (
            T0 + 15 * MINUTE_MS,
            CommandKind::OpenTicket {
                customer: UserId(2),
                booking: "pune-12".into(),
                subject: "Refund".into(),
                body: "When will my refund arrive?".into(),
            },
        ),
        (
            T0 + 16 * MINUTE_MS,
            CommandKind::PostTicketMessage {
                ticket: TicketId(38),
                actor: agent,
                body: "Within five days.".into(),
            },
        ),
        (
            T0 + 17 * MINUTE_MS,
            CommandKind::SetTicketStatus {
                ticket: TicketId(38),
                actor: customer,
                status: TicketStatus::Closed,
            },
        ),
        (
            T0 + 17 * MINUTE_MS,
            CommandKind::AdvanceCursor {
                consumer: "notify".into(),
                stream: "pune".into(),
                index: 30,
                seq: 1,
                replay_from: 20,
            },
        ),
        (
            T0 + 17 * MINUTE_MS,
            CommandKind::RecordAudit {
                actor: "user:1 (admin)".into(),
                action: "set_role".into(),
                target: "user:4".into(),
                detail: "applied role=support".into(),
            },
        ),
        // 43: rejected, the screen is busy then.
        (
            T0 + 18 * MINUTE_MS,
            publish_show(TheaterId(9), 0, T0 + 4 * HOUR_MS, "Pathaan"),
        ),
        // 44: after the show ended.
        (
            T0 + 7 * HOUR_MS,
            CommandKind::RateBooking {
                booking: BookingId(21),
                user: UserId(3),
                stars: 4,
                message: "Great sound".into(),
            },
        ),
    ];
    let mut log: Vec<(LogIndex, Command)> = kinds
        .into_iter()
        .enumerate()
        .map(|(position, (at_ms, kind))| {
            let index = position as LogIndex + 1;
            let mut entry = command(&format!("r{index}"), at_ms, kind);
            if matches!(entry.kind, CommandKind::ExpireLocks { .. }) {
                entry.request_id = None;
            }
            (index, entry)
        })
        .collect();
    // 45: a retry of 14 (its first outcome again); 46: 14's id with another command.
    let retry = log[13].1.clone();
    let mut reused = log[14].1.clone();
    reused.request_id = retry.request_id.clone();
    reused.at_ms = retry.at_ms;
    let last = T0 + 7 * HOUR_MS;
    for (index, mut entry) in [(45, retry), (46, reused)] {
        entry.at_ms = last;
        log.push((index, entry));
    }
    log
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn open_store(path: &Path) -> LedgerStore {
    LedgerStore::open(path, Limits::default(), Durability::Buffered).expect("open a store")
}

/// Applies `log` through a store, a few entries per batch as the Raft layer does.
fn apply_through_store(store: &mut LedgerStore, log: &[(LogIndex, Command)]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for batch in log.chunks(4) {
        let last = batch.last().map_or(0, |(index, _)| *index);
        let marker = format!("applied {last}");
        let results = store.apply_batch(batch, marker.as_bytes()).expect("apply");
        outcomes.extend(results.into_iter().map(|result| result.outcome));
    }
    outcomes
}

/// Writes a new fixture from `release_log` when `FIXTURE_WRITE` names a directory that
/// does not exist yet; does nothing otherwise.
#[test]
fn write_fixture() {
    let Ok(name) = std::env::var("FIXTURE_WRITE") else {
        return;
    };
    let dir = fixtures_dir().join(&name);
    assert!(
        !dir.exists(),
        "{} exists: fixtures are never regenerated; name a new one",
        dir.display()
    );
    let log = release_log();
    let store_dir = tempfile::tempdir().unwrap();
    let mut store = open_store(store_dir.path());
    let outcomes = apply_through_store(&mut store, &log);
    for ((index, entry), outcome) in log.iter().zip(&outcomes) {
        eprintln!("{index:>3} {:<22} {outcome:?}", entry.kind.verb());
    }
    let snapshot = store.export_snapshot().unwrap();
    let digest = hex(&store.full_digest().unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("log.bin"), codec::encode(&log)).unwrap();
    std::fs::write(dir.join("snapshot.bin"), snapshot).unwrap();
    std::fs::write(dir.join("digest.hex"), format!("{digest}\n")).unwrap();
    eprintln!(
        "wrote {}: add its line to tests/fixtures/README.md",
        dir.display()
    );
}

/// The release log exercises what it claims to: all but its three deliberate
/// rejections apply, and the retry gets the first answer again.
#[test]
fn the_release_log_applies_what_it_means_to() {
    let log = release_log();
    let mut ledger = Ledger::new(Limits::default());
    let outcomes: Vec<Outcome> = log
        .iter()
        .map(|(index, entry)| ledger.apply(*index, entry).outcome)
        .collect();
    let rejected: Vec<(LogIndex, &Rejection)> = log
        .iter()
        .zip(&outcomes)
        .filter_map(|((index, _), outcome)| match outcome {
            Outcome::Rejected(rejection) => Some((*index, rejection)),
            Outcome::Applied(_) => None,
        })
        .collect();
    assert!(
        matches!(
            rejected.as_slice(),
            [
                (17, Rejection::SeatsTaken { .. }),
                (43, Rejection::ScreenBusy { .. }),
                (46, Rejection::RequestIdReused),
            ]
        ),
        "unexpected rejections: {rejected:?}"
    );
    assert_eq!(
        outcomes[44], outcomes[13],
        "a retry answers as the first time"
    );
    ledger.check_invariants().expect("invariants hold");
}

fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures exists")
        .map(|entry| entry.expect("list tests/fixtures").path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixtures under tests/fixtures");
    dirs
}

#[test]
fn logs_of_earlier_releases_replay_to_the_same_digest() {
    for dir in fixture_dirs() {
        let expected = String::from_utf8(read(&dir, "digest.hex")).unwrap();
        let log: Vec<(LogIndex, Command)> = codec::decode(&read(&dir, "log.bin"))
            .unwrap_or_else(|error| panic!("{}: log.bin does not decode: {error}", dir.display()));

        let mut ledger = Ledger::new(Limits::default());
        for (index, entry) in &log {
            ledger.apply(*index, entry);
        }
        // `digest.hex` is the digest of the whole state (`full_digest`; since store
        // format 3 `digest` hashes the request records through their buckets' sums).
        assert_eq!(
            hex(&ledger.full_digest()),
            expected.trim(),
            "{}: the log replays to another state in memory",
            dir.display()
        );

        let store_dir = tempfile::tempdir().unwrap();
        let mut store = open_store(store_dir.path());
        apply_through_store(&mut store, &log);
        drop(store);
        let store = open_store(store_dir.path());
        assert_eq!(
            hex(&store.full_digest().unwrap()),
            expected.trim(),
            "{}: the log replays to another state through a store",
            dir.display()
        );
        assert_eq!(store.ledger().digest(), ledger.digest());

        // The snapshot of that release holds the same events as this build's replay.
        let decoded = snapshot::decode(&read(&dir, "snapshot.bin"), &Limits::default())
            .unwrap_or_else(|error| panic!("{}: snapshot.bin: {error}", dir.display()));
        let replayed = store.events_from(0, usize::MAX).unwrap();
        assert_eq!(
            decoded.events,
            replayed,
            "{}: the replay produced other events",
            dir.display()
        );
    }
}

#[test]
fn snapshots_of_earlier_releases_install_to_the_same_digest() {
    for dir in fixture_dirs() {
        let expected = String::from_utf8(read(&dir, "digest.hex")).unwrap();
        let bytes = read(&dir, "snapshot.bin");
        let store_dir = tempfile::tempdir().unwrap();
        let mut store = open_store(store_dir.path());
        store
            .install_snapshot(&bytes)
            .unwrap_or_else(|error| panic!("{}: snapshot.bin: {error}", dir.display()));
        assert_eq!(
            hex(&store.full_digest().unwrap()),
            expected.trim(),
            "{}: the snapshot installs to another state",
            dir.display()
        );
        drop(store);
        let store = open_store(store_dir.path());
        assert_eq!(
            hex(&store.full_digest().unwrap()),
            expected.trim(),
            "{}: the installed snapshot reopens to another state",
            dir.display()
        );
    }
}
