//! The idempotency promise over a busy day: a request retried with the same id within
//! the retention window gets its first outcome back, however many other keyed writes
//! the shard took in between.

use state_machine::testkit::{command, create_theater, publish_show, screen};
use state_machine::*;

const BATCH: u64 = 5_000;

/// A retry after 1.5 million other keyed writes (more than the old in-memory table's
/// 1,000,000 records) is answered with the first outcome, not locked again.
#[test]
fn a_retry_after_one_and_a_half_million_keyed_writes_gets_its_first_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LedgerStore::open(dir.path(), Limits::default(), Durability::Buffered).unwrap();
    let start = 5_000_000u64;
    let setup = [
        (
            1,
            command(
                "setup-theater",
                start,
                create_theater("delhi", UserId(1), vec![screen("Audi 1", 10, 10)]),
            ),
        ),
        (
            2,
            command(
                "setup-show",
                start,
                publish_show(TheaterId(1), 0, start + 86_400_000, "Show"),
            ),
        ),
    ];
    store.apply_batch(&setup, b"m").unwrap();
    let lock = command(
        "u7:the-first-lock",
        start + 1,
        CommandKind::LockSeats {
            show: ShowId(2),
            user: UserId(7),
            seats: vec![SeatId(0)],
            ttl_ms: Some(600_000),
        },
    );
    let first = store.apply_batch(&[(3, lock.clone())], b"m").unwrap();
    let first = first[0].outcome.clone();
    assert!(matches!(first, Outcome::Applied(_)), "{first:?}");
    // The lock is released, so a lock executed again would succeed with a new booking.
    let release = command(
        "u7:release",
        start + 2,
        CommandKind::ReleaseLock {
            lock: lock_of(&first),
            user: UserId(7),
        },
    );
    store.apply_batch(&[(4, release)], b"m").unwrap();

    // 1.5 million keyed writes by other clients within ten minutes of shard time.
    let others = 1_500_000u64;
    let mut index = 5u64;
    let mut n = 0u64;
    while n < others {
        let batch: Vec<_> = (0..BATCH.min(others - n))
            .map(|k| {
                let at_ms = start + 3 + (n + k) * 600_000 / others;
                let entry = (
                    index + k,
                    command(
                        &format!("u{}:key-{}", 1_000 + (n + k) % 50_000, n + k),
                        at_ms,
                        CommandKind::ExpireLocks { max_locks: 1 },
                    ),
                );
                entry
            })
            .collect();
        index += batch.len() as u64;
        n += batch.len() as u64;
        for result in store.apply_batch(&batch, b"m").unwrap() {
            assert!(
                matches!(result.outcome, Outcome::Applied(_)),
                "keyed write {n} refused: {:?}",
                result.outcome
            );
        }
    }

    let mut retry = lock;
    retry.at_ms = start + 700_000;
    let again = store.apply_batch(&[(index, retry)], b"m").unwrap();
    assert_eq!(
        again[0].outcome, first,
        "the retry after {others} other keyed writes was executed again"
    );
    store.ledger().check_invariants().unwrap();
}

fn lock_of(outcome: &Outcome) -> LockId {
    match outcome {
        Outcome::Applied(Applied::SeatsLocked { lock, .. }) => *lock,
        other => panic!("not a lock: {other:?}"),
    }
}
