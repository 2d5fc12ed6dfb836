//! What a shard's state costs in memory, per seat, lock, booking, request id and event
//! (issue #26, item 2). Prints figures; asserts nothing.
//!
//! `cargo bench -p state-machine --bench memory` (`-- --quick` for a short run).
//!
//! A replica's ledger runs under a `LedgerStore`; this benchmark does the same and
//! counts the heap bytes the process holds (a counting global allocator: exact, unlike
//! the resident set, which the allocator's free lists blur). RocksDB's own memory
//! (memtables, block cache) is C++ allocations, not counted here: it is bounded by the
//! store's options, whatever the shard holds. Each step adds N things of one kind and
//! reports the heap growth per thing, the store's bytes on disk per thing (after a
//! flush) and the snapshot's growth per thing.

use state_machine::testkit::{create_theater, publish_show, screen};
use state_machine::*;

#[path = "common/counting.rs"]
mod counting;
#[path = "common/disk.rs"]
mod disk;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

const NOW: Millis = 1_000_000_000;
/// Seats per screen: 100 rows of 100.
const SEATS: u64 = 10_000;

struct Shard {
    store: LedgerStore,
    dir: tempfile::TempDir,
    index: LogIndex,
    at_ms: Millis,
}

impl Shard {
    fn apply(&mut self, kinds: Vec<(Option<String>, CommandKind)>) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(kinds.len());
        for chunk in kinds.chunks(256) {
            let batch: Vec<_> = chunk
                .iter()
                .map(|(id, kind)| {
                    self.index += 1;
                    self.at_ms += 1;
                    let command = Command {
                        request_id: id.clone().map(RequestId),
                        at_ms: self.at_ms,
                        kind: kind.clone(),
                    };
                    (self.index, command)
                })
                .collect();
            let results = self.store.apply_batch(&batch, b"m").expect("apply");
            outcomes.extend(results.into_iter().map(|r| r.outcome));
        }
        outcomes
    }

    fn disk(&self) -> u64 {
        self.store.sync_to_disk().expect("sync");
        disk::dir_bytes(self.dir.path())
    }

    fn snapshot(&self) -> u64 {
        self.store.export_snapshot().expect("snapshot").len() as u64
    }
}

/// The commands `make` builds for each lock in `outcomes` (of `lock_kinds`: the n-th
/// lock is user 1,000 + n's), unkeyed.
fn follow_up(
    outcomes: &[Outcome],
    make: impl Fn(LockId, UserId, usize) -> CommandKind,
) -> Vec<(Option<String>, CommandKind)> {
    outcomes
        .iter()
        .enumerate()
        .filter_map(|(n, outcome)| match outcome {
            Outcome::Applied(Applied::SeatsLocked { lock, .. }) => {
                Some((None, make(*lock, UserId(1_000 + n as u64), n)))
            }
            _ => None,
        })
        .collect()
}

struct Row {
    what: &'static str,
    count: u64,
    heap: isize,
    snapshot: i64,
}

fn measure(
    shard: &mut Shard,
    what: &'static str,
    count: u64,
    step: impl FnOnce(&mut Shard),
) -> Row {
    let (heap, snapshot) = (counting::held(), shard.snapshot() as i64);
    step(shard);
    Row {
        what,
        count,
        heap: counting::held() - heap,
        snapshot: shard.snapshot() as i64 - snapshot,
    }
}

fn main() {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let shows: u64 = if quick { 4 } else { 40 };
    let locks: u64 = if quick { 5_000 } else { 50_000 };
    let keys: u64 = if quick { 20_000 } else { 200_000 };
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LedgerStore::open(dir.path(), Limits::default(), Durability::Buffered)
        .expect("open a store");
    let mut shard = Shard {
        store,
        dir,
        index: 0,
        at_ms: NOW,
    };
    let screens = (0..shows.min(20))
        .map(|n| screen(&format!("Audi {n}"), 100, 100))
        .collect();
    let theater = create_theater("mumbai", UserId(1), screens);
    shard.apply(vec![(None, theater)]);
    let mut rows = Vec::new();

    rows.push(measure(
        &mut shard,
        "seat (published, free)",
        shows * SEATS,
        |shard| {
            let kinds = (0..shows)
                .map(|n| {
                    let start = NOW + 86_400_000 + (n / 20) * 4 * 3_600_000;
                    let kind = publish_show(TheaterId(1), (n % 20) as u16, start, "Film");
                    (None, kind)
                })
                .collect();
            shard.apply(kinds);
        },
    ));
    let first_show = 2;
    // Each lock: one seat, its own user, no request id.
    let lock_kinds = |shard_show: u64| -> Vec<(Option<String>, CommandKind)> {
        (0..locks)
            .map(|n| {
                let kind = CommandKind::LockSeats {
                    show: ShowId(shard_show + n / SEATS),
                    user: UserId(1_000 + n),
                    seats: vec![SeatId((n % SEATS) as u32)],
                    ttl_ms: Some(600_000),
                };
                (None, kind)
            })
            .collect()
    };
    let mut locked = Vec::new();
    rows.push(measure(
        &mut shard,
        "lock (pending booking)",
        locks,
        |shard| {
            locked = shard.apply(lock_kinds(first_show));
        },
    ));
    rows.push(measure(
        &mut shard,
        "booking (the lock confirmed)",
        locks,
        |shard| {
            let kinds = follow_up(&locked, |lock, user, n| CommandKind::ConfirmBooking {
                lock,
                user,
                payment_ref: format!("pay-{n}"),
            });
            shard.apply(kinds);
        },
    ));
    rows.push(measure(
        &mut shard,
        "request id (a keyed write)",
        keys,
        |shard| {
            let kinds = (0..keys)
                .map(|n| {
                    let id = format!("{}:{n:032x}", 1_000 + n % 1_000);
                    (Some(id), CommandKind::ExpireLocks { max_locks: 1 })
                })
                .collect();
            shard.apply(kinds);
        },
    ));
    // Ended bookings: locked, then released (history, kept in the hot state today).
    let next_show = first_show + locks / SEATS + 1;
    let mut fresh = Vec::new();
    rows.push(measure(
        &mut shard,
        "ended booking (locked, released)",
        locks,
        |shard| {
            fresh = shard.apply(lock_kinds(next_show));
            let kinds = follow_up(&fresh, |lock, user, _| CommandKind::ReleaseLock {
                lock,
                user,
            });
            shard.apply(kinds);
        },
    ));
    // Events alone: a live lock extended changes one expiry in place and emits one.
    let live = shard.apply(lock_kinds(next_show + locks / SEATS + 1));
    let disk_before = shard.disk();
    let events_before = shard
        .store
        .events_from(0, usize::MAX)
        .expect("events")
        .len();
    rows.push(measure(
        &mut shard,
        "event (a lock extended)",
        locks,
        |shard| {
            let kinds = follow_up(&live, |lock, user, _| CommandKind::ExtendLock {
                lock,
                user,
                ttl_ms: 600_000,
            });
            shard.apply(kinds);
        },
    ));
    let events = shard
        .store
        .events_from(0, usize::MAX)
        .expect("events")
        .len()
        - events_before;
    let event_disk = (shard.disk() as f64 - disk_before as f64) / events.max(1) as f64;

    println!("memory per thing a shard holds (heap bytes counted by the allocator)\n");
    println!("| thing | count | heap B each | snapshot B each |");
    println!("|---|---:|---:|---:|");
    for row in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} |",
            row.what,
            row.count,
            row.heap as f64 / row.count as f64,
            row.snapshot as f64 / row.count as f64
        );
    }
    println!(
        "\nevents: {events} extended-lock events on disk (RocksDB only, never in memory): \
         about {event_disk:.0} B each on disk before compaction; request ids: on disk, \
         memory holds one bucket (count and hash) per second of the window"
    );
    println!(
        "total heap now: {:.1} MiB",
        counting::held() as f64 / (1 << 20) as f64
    );
}
