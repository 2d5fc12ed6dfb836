//! Soak: a shard's state over a long life of shows that start and end (issue #26,
//! item 2). Prints figures and writes a plot; asserts nothing.
//!
//! `cargo bench -p state-machine --bench soak -- --minutes 30` (default 30; `--quick`
//! runs one minute; `--out DIR` for the plot, default the workspace's `target/soak`).
//!
//! One store (as a replica runs it) lives through simulated days on the shard clock:
//! every simulated hour a theater of 4 screens publishes a show per screen, starting a
//! day later; customers lock seats of the shows on sale (with a client's
//! Idempotency-Key, as apps send it), then confirm most, release some, let some expire,
//! and cancel a few confirmed bookings; the leader's sweep expires locks; shows end. Each
//! simulated hour adds about 1,200 commands. The run stops after `--minutes` of wall
//! time. Every simulated 6 hours it samples what the shard holds: heap bytes (counted by
//! the allocator), snapshot bytes, bookings in the hot state, live request ids, kept
//! events. Level means bounded state; a line that keeps rising is state that grows with
//! history.

use state_machine::testkit::{create_theater, publish_show, screen};
use state_machine::*;
use std::time::{Duration, Instant};

#[path = "common/counting.rs"]
mod counting;

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

const HOUR_MS: Millis = 3_600_000;
const SCREENS: u16 = 4;
/// 10 rows of 20 seats.
const SEATS: u32 = 200;
const SAMPLE_EVERY_HOURS: u64 = 6;

struct Shard {
    store: LedgerStore,
    index: LogIndex,
    clock: Millis,
    rng: u64,
    keys: u64,
}

impl Shard {
    fn random(&mut self, below: u64) -> u64 {
        // xorshift64*: deterministic, so runs compare.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % below.max(1)
    }

    fn apply(&mut self, kinds: Vec<CommandKind>) -> Vec<Outcome> {
        let batch: Vec<_> = kinds
            .into_iter()
            .map(|kind| {
                self.index += 1;
                self.keys += 1;
                let command = Command {
                    request_id: Some(RequestId(format!("{}:k-{}", self.keys % 5_000, self.keys))),
                    at_ms: self.clock,
                    kind,
                };
                (self.index, command)
            })
            .collect();
        self.store
            .apply_batch(&batch, b"soak")
            .expect("apply")
            .into_iter()
            .map(|result| result.outcome)
            .collect()
    }
}

struct Sample {
    hours: u64,
    heap_mib: f64,
    snapshot_mib: f64,
    bookings: usize,
    request_ids: u64,
    events: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let minutes: f64 = if args.iter().any(|a| a == "--quick") {
        1.0
    } else {
        value("--minutes")
            .and_then(|m| m.parse().ok())
            .unwrap_or(30.0)
    };
    let out = value("--out").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/soak"),
        std::path::PathBuf::from,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LedgerStore::open(dir.path(), Limits::default(), Durability::Buffered)
        .expect("open a store");
    let mut shard = Shard {
        store,
        index: 0,
        clock: 1_700_000_000_000,
        rng: 0x5eed,
        keys: 0,
    };
    let screens = (0..SCREENS)
        .map(|n| screen(&format!("Audi {n}"), 10, 20))
        .collect();
    shard.apply(vec![create_theater("pune", UserId(1), screens)]);

    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let started = Instant::now();
    let mut on_sale: Vec<(ShowId, Millis)> = Vec::new();
    let mut samples = Vec::new();
    let mut hours = 0u64;
    while Instant::now() < deadline {
        hours += 1;
        shard.clock += HOUR_MS;
        // New shows, a day ahead, one per screen.
        let publish = (0..SCREENS)
            .map(|screen| {
                let start = shard.clock + 24 * HOUR_MS + u64::from(screen) * 60_000;
                publish_show(TheaterId(1), screen, start, "Soak")
            })
            .collect();
        let first = shard.index + 1;
        for (n, outcome) in shard.apply(publish).into_iter().enumerate() {
            if outcome.is_applied() {
                let start = shard.clock + 24 * HOUR_MS + n as u64 * 60_000;
                on_sale.push((ShowId(first + n as u64), start));
            }
        }
        on_sale.retain(|(_, start)| *start > shard.clock);
        // Customers: 300 locks of one or two seats across the shows on sale.
        let mut locks = Vec::new();
        for _ in 0..300 {
            let (show, _) = on_sale[shard.random(on_sale.len() as u64) as usize];
            let user = UserId(10_000 + shard.random(50_000));
            let seat = shard.random(u64::from(SEATS) - 1) as u32;
            let seats =
                vec![SeatId(seat), SeatId(seat + 1)][..1 + shard.random(2) as usize].to_vec();
            locks.push((
                user,
                CommandKind::LockSeats {
                    show,
                    user,
                    seats,
                    ttl_ms: Some(600_000),
                },
            ));
        }
        let outcomes = shard.apply(locks.iter().map(|(_, kind)| kind.clone()).collect());
        let mut follow_ups = Vec::new();
        let mut confirmed = Vec::new();
        for ((user, _), outcome) in locks.iter().zip(outcomes) {
            let Outcome::Applied(Applied::SeatsLocked { lock, booking, .. }) = outcome else {
                continue;
            };
            match shard.random(10) {
                0..=6 => {
                    follow_ups.push(CommandKind::ConfirmBooking {
                        lock,
                        user: *user,
                        payment_ref: format!("pay-{}", booking.0),
                    });
                    confirmed.push((booking, *user));
                }
                7 | 8 => follow_ups.push(CommandKind::ReleaseLock { lock, user: *user }),
                _ => {} // left to expire
            }
        }
        shard.clock += 60_000;
        shard.apply(follow_ups);
        // A few cancellations, and the sweep of expired locks.
        shard.clock += 11 * 60_000;
        let mut later: Vec<CommandKind> = confirmed
            .iter()
            .filter(|_| shard.random(20) == 0)
            .map(|(booking, user)| CommandKind::CancelBooking {
                booking: *booking,
                user: *user,
            })
            .collect();
        later.push(CommandKind::ExpireLocks { max_locks: 1_000 });
        shard.apply(later);
        if hours.is_multiple_of(SAMPLE_EVERY_HOURS) {
            let store = &shard.store;
            samples.push(Sample {
                hours,
                heap_mib: counting::held() as f64 / (1 << 20) as f64,
                snapshot_mib: store.export_snapshot().expect("snapshot").len() as f64
                    / (1 << 20) as f64,
                bookings: store.ledger().state().bookings.len(),
                request_ids: store.ledger().requests().len(),
                events: store.events_from(0, usize::MAX).expect("events").len(),
            });
        }
    }
    println!(
        "soak: {:.1} min of wall time, {} simulated days, {} commands\n",
        started.elapsed().as_secs_f64() / 60.0,
        hours / 24,
        shard.index
    );
    println!(
        "| simulated days | heap MiB | snapshot MiB | bookings (hot) | request ids | events kept |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let step = (samples.len() / 12).max(1);
    for sample in samples.iter().step_by(step).chain(samples.last()) {
        println!(
            "| {:.2} | {:.1} | {:.1} | {} | {} | {} |",
            sample.hours as f64 / 24.0,
            sample.heap_mib,
            sample.snapshot_mib,
            sample.bookings,
            sample.request_ids,
            sample.events
        );
    }
    if let Err(error) = write_plot(&out, &samples) {
        eprintln!("plot not written: {error}");
    }
}

/// An SVG of heap and snapshot MiB against simulated days.
fn write_plot(out: &std::path::Path, samples: &[Sample]) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    let (width, height, margin) = (720.0, 360.0, 50.0);
    let max_x = samples
        .last()
        .map_or(1.0, |s| s.hours as f64 / 24.0)
        .max(1e-9);
    let max_y = samples
        .iter()
        .map(|s| s.heap_mib.max(s.snapshot_mib))
        .fold(1.0, f64::max);
    let point = |days: f64, mib: f64| {
        (
            margin + days / max_x * (width - 2.0 * margin),
            height - margin - mib / max_y * (height - 2.0 * margin),
        )
    };
    let line = |value: &dyn Fn(&Sample) -> f64| {
        samples
            .iter()
            .map(|s| {
                let (x, y) = point(s.hours as f64 / 24.0, value(s));
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<line x1="{margin}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>
<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{bottom}" stroke="black"/>
<text x="{margin}" y="{label_y}">0</text><text x="{right}" y="{label_y}" text-anchor="end">{max_x:.1} simulated days</text>
<text x="5" y="{margin}">{max_y:.1} MiB</text>
<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{heap}"/>
<polyline fill="none" stroke="#2471a3" stroke-width="2" points="{snapshot}"/>
<text x="{legend_x}" y="20" fill="#c0392b">heap</text><text x="{legend_x2}" y="20" fill="#2471a3">snapshot</text>
</svg>
"##,
        bottom = height - margin,
        right = width - margin,
        label_y = height - margin + 16.0,
        heap = line(&|s| s.heap_mib),
        snapshot = line(&|s| s.snapshot_mib),
        legend_x = width - 200.0,
        legend_x2 = width - 140.0,
    );
    let path = out.join("soak.svg");
    std::fs::write(&path, svg)?;
    println!("\nplot: {}", path.display());
    Ok(())
}
