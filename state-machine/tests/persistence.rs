//! Persistence and determinism: a random command log applied through RocksDB stores,
//! reopened, and replayed into a replica restored from a snapshot taken at a random
//! point, ends with equal digests. Corrupt or truncated snapshot bytes are refused.
//!
//! Replay with the printed seed: `LEDGER_SEED=<n> cargo test -p state-machine --test
//! persistence`.

use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};
use state_machine::testkit::{command, create_theater, publish_show, screen};
use state_machine::*;

fn seed() -> u64 {
    std::env::var("LEDGER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::process::id())
        })
}

fn rng(seed: u64) -> TestRng {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// One of the last three locks proposed, with its user.
fn recent_lock(
    locks: &[(LockId, UserId)],
    rng: &mut TestRng,
    fallback: (LockId, UserId),
) -> (LockId, UserId) {
    locks
        .iter()
        .rev()
        .nth((rng.next_u64() % 3) as usize)
        .copied()
        .unwrap_or(fallback)
}

/// A log of `len` commands over two shows: setup, then random locks, confirms,
/// releases, cancels and sweeps with a clock that sometimes goes back, and (with
/// `saga`) payments, gateway reports, coupons and their uses.
fn command_log(seed: u64, len: usize) -> Vec<(LogIndex, Command)> {
    command_log_mixed(seed, len, true)
}

fn command_log_mixed(seed: u64, len: usize, saga: bool) -> Vec<(LogIndex, Command)> {
    let mut rng = rng(seed);
    let start = 5_000_000u64;
    let mut log = vec![
        (
            1,
            command(
                "c-1",
                start,
                create_theater(
                    "delhi",
                    UserId(1),
                    vec![screen("A", 8, 10), screen("B", 4, 5)],
                ),
            ),
        ),
        (
            2,
            command(
                "c-2",
                start,
                publish_show(TheaterId(1), 0, start + 3_600_000, "Jawan"),
            ),
        ),
        (
            3,
            command(
                "c-3",
                start,
                publish_show(TheaterId(1), 1, start + 7_200_000, "Dunki"),
            ),
        ),
    ];
    let mut clock = start as i64;
    // Locks granted so far with their users, so payments name their owner; a shadow
    // ledger tells which were granted and what each payment asks.
    let mut locks: Vec<(LockId, UserId)> = Vec::new();
    let mut shadow = Ledger::new(Limits::default());
    for (index, entry) in &log {
        shadow.apply(*index, entry);
    }
    for index in 4..len as u64 + 4 {
        clock = (clock + (rng.next_u64() % 50_000) as i64 - 10_000).max(0);
        let user = UserId(rng.next_u64() % 6);
        let earlier = LockId(4 + rng.next_u64() % (index - 3));
        let kinds = if saga { 14 } else { 10 };
        // Half the granted locks are paid for at once (the next command).
        let roll = match locks.last() {
            Some((lock, _)) if saga && lock.0 == index - 1 && rng.next_u64().is_multiple_of(2) => 9,
            // Without the saga, 9 is a sweep as it always was (same log per seed).
            _ => match rng.next_u64() % kinds {
                9 if !saga => 13,
                roll => roll,
            },
        };
        let kind = match roll {
            0..=3 => CommandKind::LockSeats {
                show: ShowId(2 + rng.next_u64() % 2),
                user,
                seats: (0..1 + rng.next_u64() % 3)
                    .map(|_| SeatId((rng.next_u64() % 80) as u32))
                    .collect(),
                ttl_ms: Some(10_000 + rng.next_u64() % 100_000),
            },
            4..=6 => CommandKind::ConfirmBooking {
                lock: earlier,
                user,
                payment_ref: format!("pay-{index}"),
            },
            7 => CommandKind::ReleaseLock {
                lock: earlier,
                user,
            },
            8 => CommandKind::CancelBooking {
                booking: BookingId::of_lock(earlier),
                user,
            },
            // The booking saga: payments and gateway reports, coupons and their uses.
            9 => {
                let recent = match locks.last() {
                    Some(last) if last.0 .0 == index - 1 => *last,
                    _ => recent_lock(&locks, &mut rng, (earlier, user)),
                };
                CommandKind::StartPayment {
                    booking: BookingId::of_lock(recent.0),
                    user: recent.1,
                    method: "sandbox-approve".into(),
                    discount_minor: 0,
                    coupon: None,
                }
            }
            10 | 11 => {
                let recent = recent_lock(&locks, &mut rng, (earlier, user));
                CommandKind::RecordGatewayState {
                    booking: BookingId::of_lock(recent.0),
                    gateway_ref: format!("pay_{}", recent.0 .0),
                    payment_url: String::new(),
                    status: [
                        GatewayStatus::Pending,
                        GatewayStatus::Succeeded,
                        GatewayStatus::Failed,
                        GatewayStatus::Canceled,
                        GatewayStatus::Refunded,
                    ][(rng.next_u64() % 5) as usize],
                    version: 1 + rng.next_u64() % 4,
                    amount_minor: shadow
                        .state()
                        .payments
                        .get(&BookingId::of_lock(recent.0))
                        .map_or(20_000, |p| p.amount_minor),
                    reason: None,
                }
            }
            12 => match rng.next_u64() % 3 {
                0 => CommandKind::CreateCoupon {
                    code: format!("SAVE-{}", rng.next_u64() % 3),
                    percent: 10,
                    max_discount_minor: 5_000,
                    valid_from: 0,
                    valid_until: u64::MAX / 2,
                    max_uses: 2,
                },
                1 => CommandKind::ReserveCoupon {
                    code: format!("SAVE-{}", rng.next_u64() % 3),
                    booking: format!("delhi-{}", earlier.0),
                    user,
                    price_minor: 20_000,
                },
                _ => CommandKind::SettleCouponUse {
                    code: format!("SAVE-{}", rng.next_u64() % 3),
                    booking: format!("delhi-{}", earlier.0),
                    confirmed: rng.next_u64().is_multiple_of(2),
                },
            },
            _ => CommandKind::ExpireLocks { max_locks: 5 },
        };
        let request = format!(
            "c-{}",
            if rng.next_u64().is_multiple_of(20) {
                index - 1
            } else {
                index
            }
        );
        let entry = command(&request, clock as u64, kind);
        if let Outcome::Applied(Applied::SeatsLocked { lock, .. }) =
            shadow.apply(index, &entry).outcome
        {
            locks.push((lock, user));
        }
        log.push((index, entry));
    }
    log
}

fn open(dir: &std::path::Path) -> LedgerStore {
    LedgerStore::open(dir, Limits::default(), Durability::Buffered).unwrap()
}

#[test]
fn replicas_restored_from_a_snapshot_reach_the_same_digest() {
    let seed = seed();
    eprintln!("persistence seed {seed}; replay: LEDGER_SEED={seed} cargo test -p state-machine --test persistence");
    let log = command_log(seed, 600);
    let mut memory = Ledger::new(Limits::default());
    let outcomes: Vec<Outcome> = log
        .iter()
        .map(|(i, c)| memory.apply(*i, c).outcome)
        .collect();
    assert!(
        outcomes.iter().filter(|o| o.is_applied()).count() > 50,
        "the log does too little"
    );
    let state = memory.state();
    assert!(
        !state.payments.is_empty() && !state.coupons.is_empty(),
        "seed {seed}: the log made no payment or coupon ({} payments, {} coupons)",
        state.payments.len(),
        state.coupons.len()
    );

    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut first = open(dirs[0].path());
    let cut = 1 + (seed as usize % (log.len() - 1));
    let mut batch_outcomes = Vec::new();
    for chunk in log[..cut].chunks(7) {
        let marker = chunk.last().unwrap().0.to_be_bytes();
        batch_outcomes.extend(
            first
                .apply_batch(chunk, &marker)
                .unwrap()
                .into_iter()
                .map(|r| r.outcome),
        );
    }
    let snapshot = first.export_snapshot().unwrap();
    // The export that reads a pinned RocksDB image instead of memory gives the same bytes.
    assert_eq!(
        LedgerStore::pin_image(&first).unwrap().encode().unwrap(),
        snapshot,
        "seed {seed}: the image on disk and the ledger in memory export differently"
    );
    let mut second = open(dirs[1].path());
    second.install_snapshot(&snapshot).unwrap();
    assert_eq!(second.marker(), first.marker());
    assert_eq!(second.ledger().digest(), first.ledger().digest());
    for (index, command) in &log[cut..] {
        let marker = index.to_be_bytes();
        let a = first
            .apply_batch(std::slice::from_ref(&(*index, command.clone())), &marker)
            .unwrap();
        let b = second
            .apply_batch(&[(*index, command.clone())], &marker)
            .unwrap();
        assert_eq!(
            a[0].outcome, b[0].outcome,
            "seed {seed}: replicas disagree at {index}"
        );
        batch_outcomes.push(a[0].outcome.clone());
    }
    assert_eq!(
        batch_outcomes, outcomes,
        "seed {seed}: persisted and in-memory ledgers disagree"
    );
    assert_eq!(first.ledger().digest(), memory.digest());
    assert_eq!(second.ledger().digest(), memory.digest());
    assert_eq!(
        first.events_from(0, usize::MAX).unwrap(),
        second.events_from(0, usize::MAX).unwrap()
    );

    // Reopening gives the same state.
    let digest = first.ledger().digest();
    drop(first);
    let reopened = open(dirs[0].path());
    assert_eq!(reopened.ledger().digest(), digest);
    assert_eq!(reopened.ledger().state(), memory.state());
    assert_eq!(reopened.marker(), &(log.last().unwrap().0).to_be_bytes());
}

#[test]
fn events_come_back_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let log = command_log(7, 200);
    store.apply_batch(&log, b"m").unwrap();
    let events = store.events_from(0, usize::MAX).unwrap();
    assert!(events.len() > 10);
    assert!(events
        .windows(2)
        .all(|w| (w[0].index, w[0].seq) < (w[1].index, w[1].seq)));
    let from = events[5].index;
    let tail = store.events_from(from, 3).unwrap();
    assert_eq!(tail.len(), 3);
    assert_eq!(tail[0].index, from);
    assert_eq!(store.oldest_event_index().unwrap(), Some(events[0].index));
}

#[test]
fn events_beyond_the_retention_window_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        event_retention_indexes: 50,
        ..Limits::default()
    };
    let mut store = LedgerStore::open(dir.path(), limits.clone(), Durability::Buffered).unwrap();
    let log = command_log_mixed(11, 300, false);
    for chunk in log.chunks(10) {
        store.apply_batch(chunk, b"m").unwrap();
    }
    let oldest = store.oldest_event_index().unwrap().unwrap();
    assert!(
        oldest >= log.last().unwrap().0 - 50,
        "oldest kept event {oldest}"
    );
    // The window's edge is exact and survives a reopen and a snapshot install, so a
    // consumer behind it is always told, even when the last entries carried no events.
    let kept_from = store.events_kept_from();
    assert_eq!(kept_from, log.last().unwrap().0 - 50);
    assert!(oldest >= kept_from);
    let snapshot = store.export_snapshot().unwrap();
    assert_eq!(
        LedgerStore::pin_image(&store).unwrap().encode().unwrap(),
        snapshot
    );
    drop(store);
    let reopened = LedgerStore::open(dir.path(), limits.clone(), Durability::Buffered).unwrap();
    assert_eq!(reopened.events_kept_from(), kept_from);
    let other = tempfile::tempdir().unwrap();
    let mut installed = LedgerStore::open(other.path(), limits, Durability::Buffered).unwrap();
    assert_eq!(installed.events_kept_from(), 0);
    installed.install_snapshot(&snapshot).unwrap();
    assert_eq!(installed.events_kept_from(), kept_from);
    assert_eq!(
        installed.events_from(0, usize::MAX).unwrap(),
        reopened.events_from(0, usize::MAX).unwrap()
    );
}

#[test]
fn a_pinned_image_encodes_what_it_pinned_while_applying_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let log = command_log_mixed(seed(), 400, true);
    let (first, rest) = log.split_at(200);
    for chunk in first.chunks(10) {
        store.apply_batch(chunk, b"first half").unwrap();
    }
    let then = store.export_snapshot().unwrap();
    let image = LedgerStore::pin_image(&store).unwrap();
    assert_eq!(image.marker(), b"first half");
    for chunk in rest.chunks(10) {
        store.apply_batch(chunk, b"second half").unwrap();
    }
    assert_ne!(
        store.export_snapshot().unwrap(),
        then,
        "the log changed nothing"
    );
    assert_eq!(image.encode().unwrap(), then);
    // What it encodes installs like any snapshot, and it can be encoded again.
    let other = tempfile::tempdir().unwrap();
    let mut installed = open(other.path());
    installed
        .install_snapshot(&image.encode().unwrap())
        .unwrap();
    assert_eq!(installed.export_snapshot().unwrap(), then);
    // The image holds the database open: dropped, the store reopens.
    drop(image);
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(reopened.marker(), b"second half");
}

#[test]
fn events_resume_inside_one_log_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.apply_batch(&command_log(7, 200), b"m").unwrap();
    let all = store.events_from(0, usize::MAX).unwrap();
    // Reading one event at a time from the position after the last one seen visits
    // every event exactly once, including entries with several events.
    let mut seen = Vec::new();
    let (mut index, mut seq) = (0, 0);
    for _ in 0..all.len() + 1 {
        let page = store.events_from_position(index, seq, 1).unwrap();
        let Some(event) = page.into_iter().next() else {
            break;
        };
        (index, seq) = (event.index, event.seq + 1);
        seen.push(event);
    }
    assert_eq!(seen, all);
    assert!(
        all.windows(2).any(|w| w[0].index == w[1].index),
        "the log should have an entry with several events"
    );
}

#[test]
fn bad_snapshot_bytes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    store.apply_batch(&command_log(3, 100), b"marker").unwrap();
    let good = store.export_snapshot().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let mut target = open(target_dir.path());
    target.apply_batch(&command_log(4, 20), b"mine").unwrap();
    let before = target.ledger().digest();

    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let mut wrong_magic = good.clone();
    wrong_magic[0] = b'X';
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("half", good[..good.len() / 2].to_vec()),
        ("flipped bit", flipped),
        ("wrong magic", wrong_magic),
        (
            "random",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (name, bytes) in cases {
        let error = target.install_snapshot(&bytes);
        assert!(error.is_err(), "{name} snapshot was accepted");
        assert_eq!(
            target.ledger().digest(),
            before,
            "{name} snapshot changed the state"
        );
        assert_eq!(target.marker(), b"mine");
    }
    target.install_snapshot(&good).unwrap();
    assert_eq!(target.ledger().digest(), store.ledger().digest());
}

#[test]
fn a_well_framed_snapshot_that_breaks_invariants_is_refused() {
    let mut ledger = Ledger::new(Limits::default());
    for (index, command) in command_log(5, 50) {
        ledger.apply(index, &command);
    }
    let mut state = ledger.state().clone();
    // Two bookings now claim the same seat.
    if let Some(seats) = state.seats.values_mut().next() {
        seats[0] = SeatState::Booked(BookingId(424242));
    }
    let bytes = state_machine::snapshot::encode(&state_machine::snapshot::SnapshotBody {
        marker: vec![],
        state,
        events: vec![],
        events_kept_from: 0,
        rules: None,
    });
    let error = state_machine::snapshot::decode(&bytes, &Limits::default())
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            state_machine::snapshot::SnapshotError::Inconsistent(_)
        ),
        "{error}"
    );
}

#[test]
fn tickets_cursors_and_channels_survive_reopen_and_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let at = |at_ms: u64, kind: CommandKind| Command {
        request_id: None,
        at_ms,
        kind,
    };
    let commands = vec![
        (
            1,
            at(
                10,
                CommandKind::OpenTicket {
                    customer: UserId(5),
                    booking: "mumbai-1".into(),
                    subject: "Refund".into(),
                    body: "Where is it?".into(),
                },
            ),
        ),
        (
            2,
            at(
                11,
                CommandKind::PostTicketMessage {
                    ticket: TicketId(1),
                    actor: Actor {
                        user: UserId(9),
                        agent: true,
                    },
                    body: "On its way".into(),
                },
            ),
        ),
        (
            3,
            at(
                12,
                CommandKind::AdvanceCursor {
                    consumer: "notifications".into(),
                    stream: "mumbai".into(),
                    index: 7,
                    seq: 1,
                    replay_from: 3,
                },
            ),
        ),
    ];
    let mut commands = commands;
    commands.push((
        4,
        at(
            13,
            CommandKind::RegisterUser {
                email: "kiran@example.test".into(),
                phone: "+919800000888".into(),
                name: "Kiran".into(),
                password_hash: "hash".into(),
                role: Role::Customer,
            },
        ),
    ));
    commands.push((
        5,
        at(
            14,
            CommandKind::SetNotificationChannels {
                user: UserId(4),
                webhook_url: Some("https://hooks.example/kiran".into()),
                webhook_secret: Some("0123456789abcdef".into()),
                email: false,
            },
        ),
    ));
    let results = store.apply_batch(&commands, b"m").unwrap();
    assert!(
        results.iter().all(|r| r.outcome.is_applied()),
        "{results:?}"
    );
    let digest = store.ledger().digest();
    let snapshot = store.export_snapshot().unwrap();
    drop(store);
    let reopened = open(dir.path());
    assert_eq!(reopened.ledger().digest(), digest);
    assert_eq!(
        reopened.ledger().state().tickets[&TicketId(1)]
            .messages
            .len(),
        2
    );
    assert_eq!(reopened.ledger().state().cursors.len(), 1);
    assert_eq!(reopened.ledger().state().channels.len(), 1);
    let other = tempfile::tempdir().unwrap();
    let mut installed = open(other.path());
    installed.install_snapshot(&snapshot).unwrap();
    assert_eq!(installed.ledger().digest(), digest);
    drop(installed);
    assert_eq!(open(other.path()).ledger().digest(), digest);
}
