//! Apply-rate and memory benchmark of the ledger. Prints figures; asserts nothing
//! about speed.
//!
//! `cargo bench -p state-machine --bench apply` (add `-- --quick` for a short run).
//!
//! - lock + confirm on 10,000-seat shows: in memory, and through RocksDB in batches of
//!   1 and of 256 commands (buffered writes: the Raft log is the synced record);
//! - resident bytes per seat with 1,000,000 seats published (and half of them locked).

use state_machine::testkit::{command, create_theater, publish_show, screen};
use state_machine::*;
use std::time::Instant;

const SHOW_SEATS: u32 = 10_000;
const LOCK_TARGET_PER_SECOND: f64 = 500_000.0;
const BYTES_PER_SEAT_TARGET: f64 = 64.0;

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Setup commands: one theater with a 100 x 100 screen and `shows` shows on it.
fn setup(shows: u64) -> Vec<(LogIndex, Command)> {
    let start = 1_000_000u64;
    let mut log = vec![(
        1,
        command(
            "setup-t",
            start,
            create_theater("mumbai", UserId(1), vec![screen("IMAX", 100, 100)]),
        ),
    )];
    for n in 0..shows {
        let kind = publish_show(TheaterId(1), 0, start + 3_600_000 * (1 + 4 * n), "Stampede");
        log.push((2 + n, command(&format!("setup-s{n}"), start, kind)));
    }
    log
}

/// Lock 2 seats and confirm, for every pair of seats of every show.
fn lock_confirm_log(first_index: LogIndex, shows: u64) -> Vec<(LogIndex, Command)> {
    let mut log = Vec::new();
    let mut index = first_index;
    let at = 1_000_500;
    for show in 0..shows {
        for pair in 0..SHOW_SEATS / 2 {
            let user = UserId(10 + u64::from(pair));
            let seats = vec![SeatId(pair * 2), SeatId(pair * 2 + 1)];
            let lock = LockId(index);
            let kind = CommandKind::LockSeats {
                show: ShowId(2 + show),
                user,
                seats,
                ttl_ms: None,
            };
            log.push((index, command(&format!("l{index}"), at, kind)));
            index += 1;
            let kind = CommandKind::ConfirmBooking {
                lock,
                user,
                payment_ref: format!("p{index}"),
            };
            log.push((index, command(&format!("c{index}"), at, kind)));
            index += 1;
        }
    }
    log
}

fn report(name: &str, commands: usize, seconds: f64) {
    let rate = commands as f64 / seconds;
    println!(
        "{name:<44} {commands:>8} commands {seconds:>7.3} s {rate:>11.0} commands/s  ({:.2}x of the 500k/s target)",
        rate / LOCK_TARGET_PER_SECOND
    );
}

fn memory() {
    let before = resident_bytes();
    let mut ledger = Ledger::new(Limits::default());
    for (index, command) in setup(100) {
        assert!(ledger.apply(index, &command).outcome.is_applied());
    }
    let seats = 100 * u64::from(SHOW_SEATS);
    let published = resident_bytes() - before;
    println!(
        "memory: {seats} seats published: {:.1} bytes/seat resident  ({:.2}x of the 64 B target)",
        published as f64 / seats as f64,
        published as f64 / seats as f64 / BYTES_PER_SEAT_TARGET
    );
    let log = lock_confirm_log(200, 50);
    for (index, command) in log.iter().step_by(2) {
        ledger.apply(*index, command);
    }
    let locked = resident_bytes() - before;
    println!(
        "memory: same, half of the seats locked (2 per lock, with bookings and request ids): \
         {:.1} bytes/seat",
        locked as f64 / seats as f64
    );
}

fn in_memory(shows: u64) {
    let mut ledger = Ledger::new(Limits::default());
    for (index, command) in setup(shows) {
        ledger.apply(index, &command);
    }
    let log = lock_confirm_log(1_000, shows);
    let started = Instant::now();
    for (index, command) in &log {
        let result = ledger.apply(*index, command);
        debug_assert!(result.outcome.is_applied());
    }
    report(
        "in memory, lock + confirm",
        log.len(),
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(
        ledger.seat_counts(ShowId(2)).booked,
        SHOW_SEATS,
        "the benchmark did not book"
    );
}

fn rocksdb(shows: u64, batch: usize, durability: Durability) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store =
        LedgerStore::open(dir.path(), Limits::default(), durability).expect("open store");
    store.apply_batch(&setup(shows), b"setup").expect("setup");
    let log = lock_confirm_log(1_000, shows);
    let started = Instant::now();
    for chunk in log.chunks(batch) {
        let marker = chunk[chunk.len() - 1].0.to_be_bytes();
        store.apply_batch(chunk, &marker).expect("apply");
    }
    let name = format!("RocksDB {durability:?}, batches of {batch}");
    report(&name, log.len(), started.elapsed().as_secs_f64());
    assert_eq!(store.ledger().seat_counts(ShowId(2)).booked, SHOW_SEATS);
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let shows = if quick { 2 } else { 10 };
    println!(
        "state-machine apply benchmark ({} x {SHOW_SEATS}-seat shows, 2 seats per lock)",
        shows
    );
    memory();
    in_memory(shows);
    rocksdb(shows, 256, Durability::Buffered);
    rocksdb(shows, 1, Durability::Buffered);
    rocksdb(shows.min(2), 256, Durability::SyncEveryBatch);
    rocksdb(1, 1, Durability::SyncEveryBatch);
}
