//! Lock cost against history (issue #26, item 0). Prints figures; asserts nothing about
//! speed.
//!
//! `cargo bench -p state-machine --bench history` (`-- --quick` for a short run).
//!
//! One show; before measuring, one account locks and releases a seat H times (H = 1k,
//! 100k, 1M), so the shard holds H ended bookings, all of that account. Then:
//! - lock + release cycles by that account and by a new one (ns per cycle, and the ratio
//!   to the smallest history): the per-user cap check must cost what the user holds
//!   now, so both stay flat;
//! - a snapshot of the shard: its size, and the time to encode and to decode, verify and
//!   rebuild it (what a replica catching up from it spends before it can apply).

use state_machine::snapshot::{self, SnapshotBody};
use state_machine::testkit::{create_theater, publish_show, screen};
use state_machine::*;
use std::time::Instant;

const NOW: Millis = 1_000_000;
const SHOW: ShowId = ShowId(2);
const OLD_HAND: UserId = UserId(10);
const NEWCOMER: UserId = UserId(11);

fn apply(ledger: &mut Ledger, index: &mut LogIndex, kind: CommandKind) -> Outcome {
    *index += 1;
    let command = Command {
        request_id: None,
        at_ms: NOW,
        kind,
    };
    ledger.apply(*index, &command).outcome
}

fn cycle(ledger: &mut Ledger, index: &mut LogIndex, user: UserId, seat: u32) {
    let kind = CommandKind::LockSeats {
        show: SHOW,
        user,
        seats: vec![SeatId(seat)],
        ttl_ms: None,
    };
    let Outcome::Applied(Applied::SeatsLocked { lock, .. }) = apply(ledger, index, kind) else {
        panic!("lock refused")
    };
    let released = apply(ledger, index, CommandKind::ReleaseLock { lock, user });
    assert!(released.is_applied(), "release refused");
}

fn shard_with_history(history: u64) -> (Ledger, LogIndex) {
    let mut ledger = Ledger::new(Limits::default());
    let mut index = 0;
    let theater = create_theater("mumbai", UserId(1), vec![screen("IMAX", 100, 100)]);
    assert!(apply(&mut ledger, &mut index, theater).is_applied());
    let show = publish_show(TheaterId(1), 0, NOW + 3_600_000, "Stampede");
    assert!(apply(&mut ledger, &mut index, show).is_applied());
    for n in 0..history {
        cycle(&mut ledger, &mut index, OLD_HAND, (n % 10_000) as u32);
    }
    (ledger, index)
}

fn ns_per_cycle(ledger: &mut Ledger, index: &mut LogIndex, user: UserId, cycles: u32) -> f64 {
    let started = Instant::now();
    for n in 0..cycles {
        cycle(ledger, index, user, 5_000 + n % 1_000);
    }
    started.elapsed().as_nanos() as f64 / f64::from(cycles)
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let histories: &[u64] = if quick {
        &[1_000, 20_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let cycles = if quick { 5_000 } else { 50_000 };
    println!(
        "lock cost against history: one show, one account with H ended bookings of it; \
         {cycles} lock + release cycles measured"
    );
    println!(
        "{:>9} {:>16} {:>8} {:>16} {:>8} {:>12} {:>10} {:>12}",
        "H",
        "old hand ns/cyc",
        "ratio",
        "newcomer ns/cyc",
        "ratio",
        "snapshot MB",
        "encode s",
        "decode+check s"
    );
    let mut baseline: Option<(f64, f64)> = None;
    for &history in histories {
        let (mut ledger, mut index) = shard_with_history(history);
        let old_hand = ns_per_cycle(&mut ledger, &mut index, OLD_HAND, cycles);
        let newcomer = ns_per_cycle(&mut ledger, &mut index, NEWCOMER, cycles);
        let (base_old, base_new) = *baseline.get_or_insert((old_hand, newcomer));
        let started = Instant::now();
        let bytes = snapshot::encode(&SnapshotBody {
            marker: Vec::new(),
            state: ledger.state().clone(),
            events: Vec::new(),
            events_kept_from: 0,
            rules: None,
        });
        let encode_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let decoded = snapshot::decode(&bytes, &Limits::default()).expect("decode");
        let decode_s = started.elapsed().as_secs_f64();
        assert_eq!(decoded.ledger.digest(), ledger.digest());
        println!(
            "{history:>9} {old_hand:>16.0} {:>8.2} {newcomer:>16.0} {:>8.2} {:>12.1} {encode_s:>10.3} {decode_s:>12.3}",
            old_hand / base_old,
            newcomer / base_new,
            bytes.len() as f64 / 1e6,
        );
    }
    println!(
        "ratios are against H = {}: flat (about 1) means a lock costs what the user holds \
         now, not the user's or the shard's history",
        histories[0]
    );
}
