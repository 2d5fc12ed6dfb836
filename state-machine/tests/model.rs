//! Model-based property test: random command sequences run against the real ledger
//! and against a small reference model written independently (seat holders are
//! derived by scanning bookings, not stored per seat). After every step the outcomes
//! agree, the ledger's invariants hold, every seat's status and every booking's status
//! agree, and the shard clock never goes back.
//!
//! Replay a failure with the seed it prints: `LEDGER_SEED=<n> cargo test -p
//! state-machine --test model`.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use state_machine::testkit::{command, publish_show, screen};
use state_machine::*;
use std::collections::BTreeMap;

const SEATS: u32 = 12;

fn limits() -> Limits {
    Limits {
        seats_per_lock_max: 3,
        seats_per_user_per_show_max: 4,
        lock_ttl_ms_min: 10_000,
        lock_ttl_ms_max: 60_000,
        lock_ttl_ms_default: 30_000,
        lock_life_ms_max: 90_000,
        request_ids_max: 16,
        request_id_retention_ms: 200_000,
        expire_batch_max: 4,
        ..Limits::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Lock {
        show: usize,
        user: u64,
        seats: Vec<u32>,
        ttl_ms: Option<u64>,
    },
    Extend {
        lock: usize,
        user: u64,
        ttl_ms: u64,
    },
    Release {
        lock: usize,
        user: u64,
    },
    Confirm {
        lock: usize,
        user: u64,
        paid: bool,
    },
    Cancel {
        lock: usize,
        user: u64,
    },
    Expire {
        max_locks: u32,
    },
}

#[derive(Clone, Debug)]
struct Step {
    op: Op,
    /// Leader clock movement; negative steps model a new leader with a slower clock.
    delta_ms: i64,
    /// Reuse the request id of an earlier step (by position modulo the history).
    reuse: Option<usize>,
}

fn ttl() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(5_000u64),
        Just(10_000),
        Just(30_000),
        Just(60_000),
        Just(70_000)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let user = 0u64..3;
    let lock = 0usize..12;
    let op = prop_oneof![
        4 => (0usize..3, user.clone(), prop::collection::vec(0u32..SEATS + 2, 0..5),
              prop::option::of(ttl()))
            .prop_map(|(show, user, seats, ttl_ms)| Op::Lock { show, user, seats, ttl_ms }),
        1 => (lock.clone(), user.clone(), ttl())
            .prop_map(|(lock, user, ttl_ms)| Op::Extend { lock, user, ttl_ms }),
        1 => (lock.clone(), user.clone()).prop_map(|(lock, user)| Op::Release { lock, user }),
        3 => (lock.clone(), user.clone(), prop::bool::weighted(0.9))
            .prop_map(|(lock, user, paid)| Op::Confirm { lock, user, paid }),
        1 => (lock, user).prop_map(|(lock, user)| Op::Cancel { lock, user }),
        1 => (0u32..6).prop_map(|max_locks| Op::Expire { max_locks }),
    ];
    // Coarse time steps make a command land exactly on a lock's expiry often.
    let delta = prop_oneof![
        4 => (0i64..5).prop_map(|n| n * 5_000),
        1 => (-6i64..0).prop_map(|n| n * 5_000),
        1 => 20_000i64..120_000,
    ];
    let reuse = prop::option::weighted(0.1, 0usize..64);
    (op, delta, reuse).prop_map(|(op, delta_ms, reuse)| Step {
        op,
        delta_ms,
        reuse,
    })
}

// ----- the reference model ------------------------------------------------------------

#[derive(Clone, Debug)]
struct MBooking {
    show: ShowId,
    user: UserId,
    seats: Vec<SeatId>,
    status: BookingStatus,
    created_at: u64,
    expires_at: u64,
    total: u64,
}

struct Model {
    limits: Limits,
    clock: u64,
    shows: BTreeMap<ShowId, u64>,
    prices: Vec<u64>,
    bookings: BTreeMap<u64, MBooking>,
    requests: BTreeMap<String, (u64, CommandKind, Outcome)>,
}

impl Model {
    fn live(&self, b: &MBooking) -> bool {
        b.status == BookingStatus::PendingPayment && self.clock < b.expires_at
    }

    fn holds(&self, b: &MBooking) -> bool {
        b.status == BookingStatus::Confirmed || self.live(b)
    }

    /// The booking that occupies a seat in the stored state (live or not).
    fn occupant(&self, show: ShowId, seat: SeatId) -> Option<u64> {
        self.bookings.iter().find_map(|(id, b)| {
            let occupies = matches!(
                b.status,
                BookingStatus::PendingPayment | BookingStatus::Confirmed
            );
            (occupies && b.show == show && b.seats.contains(&seat)).then_some(*id)
        })
    }

    fn seat_status(&self, show: ShowId, seat: SeatId) -> SeatStatus {
        match self.occupant(show, seat).map(|id| &self.bookings[&id]) {
            Some(b) if b.status == BookingStatus::Confirmed => SeatStatus::Booked,
            Some(b) if self.live(b) => SeatStatus::Locked,
            _ => SeatStatus::Available,
        }
    }

    /// When a record arrived at `at` is forgotten: with the rest of its second, once
    /// the whole second has left the window.
    fn forgotten_at(&self, at: u64) -> u64 {
        (at / 1000 + 1) * 1000 + self.limits.request_id_retention_ms
    }

    fn prune(&mut self) {
        let clock = self.clock;
        let limits_retention = self.limits.request_id_retention_ms;
        self.requests
            .retain(|_, (at, _, _)| (*at / 1000 + 1) * 1000 + limits_retention > clock);
    }

    /// A new key is refused, not an old one forgotten, while the table is full.
    fn room(&self) -> Result<(), Rejection> {
        if self.requests.len() < self.limits.request_ids_max as usize {
            return Ok(());
        }
        let next_free = self
            .requests
            .values()
            .map(|(at, _, _)| self.forgotten_at(*at))
            .min()
            .unwrap_or(self.clock);
        Err(Rejection::RequestTableFull {
            retry_after_ms: next_free.saturating_sub(self.clock).max(1),
        })
    }

    fn apply(&mut self, index: u64, request_id: &str, at: u64, kind: &CommandKind) -> Outcome {
        self.clock = self.clock.max(at);
        self.prune();
        if let Some((_, old_kind, outcome)) = self.requests.get(request_id) {
            return if old_kind == kind {
                outcome.clone()
            } else {
                Outcome::Rejected(Rejection::RequestIdReused)
            };
        }
        if let Err(full) = self.room() {
            return Outcome::Rejected(full);
        }
        let outcome = match self.execute(index, kind) {
            Ok(applied) => Outcome::Applied(applied),
            Err(rejection) => Outcome::Rejected(rejection),
        };
        self.requests.insert(
            request_id.to_owned(),
            (self.clock, kind.clone(), outcome.clone()),
        );
        outcome
    }

    fn live_lock(&self, lock: LockId, user: UserId) -> Result<&MBooking, Rejection> {
        let b = self
            .bookings
            .get(&lock.0)
            .ok_or(Rejection::UnknownLock { lock })?;
        if b.user != user {
            return Err(Rejection::NotOwner);
        }
        match b.status {
            BookingStatus::PendingPayment if self.live(b) => Ok(b),
            BookingStatus::PendingPayment | BookingStatus::Expired => Err(Rejection::LockExpired {
                lock,
                expired_at: b.expires_at,
            }),
            status => Err(Rejection::WrongBookingStatus {
                booking: BookingId(lock.0),
                status,
            }),
        }
    }

    fn execute(&mut self, index: u64, kind: &CommandKind) -> Result<Applied, Rejection> {
        let l = self.limits.clone();
        let clock = self.clock;
        match kind {
            CommandKind::LockSeats {
                show,
                user,
                seats,
                ttl_ms,
            } => {
                let start = *self
                    .shows
                    .get(show)
                    .ok_or(Rejection::UnknownShow { show: *show })?;
                if clock >= start {
                    return Err(Rejection::ShowStarted {
                        show: *show,
                        start_ms: start,
                    });
                }
                if seats.is_empty() {
                    return Err(Rejection::invalid("seats", "name at least one seat"));
                }
                if seats.len() as u32 > l.seats_per_lock_max {
                    return Err(Rejection::LimitExceeded {
                        limit: LimitName::SeatsPerLock,
                        max: l.seats_per_lock_max.into(),
                        requested: seats.len() as u64,
                    });
                }
                let ttl = ttl_ms.unwrap_or(l.lock_ttl_ms_default);
                if ttl < l.lock_ttl_ms_min {
                    return Err(Rejection::LimitExceeded {
                        limit: LimitName::LockTtlMin,
                        max: l.lock_ttl_ms_min,
                        requested: ttl,
                    });
                }
                if ttl > l.lock_ttl_ms_max {
                    return Err(Rejection::LimitExceeded {
                        limit: LimitName::LockTtlMax,
                        max: l.lock_ttl_ms_max,
                        requested: ttl,
                    });
                }
                let mut sorted = seats.clone();
                sorted.sort();
                sorted.dedup();
                if sorted.len() != seats.len() {
                    return Err(Rejection::invalid("seats", "a seat is named twice"));
                }
                let unknown: Vec<SeatId> =
                    sorted.iter().copied().filter(|s| s.0 >= SEATS).collect();
                if !unknown.is_empty() {
                    return Err(Rejection::UnknownSeats { seats: unknown });
                }
                let held: u64 = self
                    .bookings
                    .values()
                    .filter(|b| b.user == *user && b.show == *show && self.holds(b))
                    .map(|b| b.seats.len() as u64)
                    .sum();
                let cap = u64::from(l.seats_per_user_per_show_max);
                if held + sorted.len() as u64 > cap {
                    return Err(Rejection::LimitExceeded {
                        limit: LimitName::SeatsPerUserPerShow,
                        max: cap,
                        requested: held + sorted.len() as u64,
                    });
                }
                let taken: Vec<SeatId> = sorted
                    .iter()
                    .copied()
                    .filter(|seat| self.seat_status(*show, *seat) != SeatStatus::Available)
                    .collect();
                if !taken.is_empty() {
                    return Err(Rejection::SeatsTaken { seats: taken });
                }
                for seat in &sorted {
                    if let Some(stale) = self.occupant(*show, *seat) {
                        self.bookings.get_mut(&stale).unwrap().status = BookingStatus::Expired;
                    }
                }
                let total = sorted.iter().map(|s| self.prices[s.0 as usize]).sum();
                self.bookings.insert(
                    index,
                    MBooking {
                        show: *show,
                        user: *user,
                        seats: sorted.clone(),
                        status: BookingStatus::PendingPayment,
                        created_at: clock,
                        expires_at: clock + ttl,
                        total,
                    },
                );
                Ok(Applied::SeatsLocked {
                    lock: LockId(index),
                    booking: BookingId(index),
                    seats: sorted,
                    expires_at: clock + ttl,
                    total_price_minor: total,
                })
            }
            CommandKind::ExtendLock { lock, user, ttl_ms } => {
                if *ttl_ms < l.lock_ttl_ms_min {
                    return Err(Rejection::LimitExceeded {
                        limit: LimitName::LockTtlMin,
                        max: l.lock_ttl_ms_min,
                        requested: *ttl_ms,
                    });
                }
                if *ttl_ms > l.lock_ttl_ms_max {
                    return Err(Rejection::LimitExceeded {
                        limit: LimitName::LockTtlMax,
                        max: l.lock_ttl_ms_max,
                        requested: *ttl_ms,
                    });
                }
                let b = self.live_lock(*lock, *user)?;
                let wanted = clock + ttl_ms;
                let expires_at = wanted.min(b.created_at + l.lock_life_ms_max);
                if expires_at <= b.expires_at {
                    return Err(Rejection::LimitExceeded {
                        limit: LimitName::LockLife,
                        max: l.lock_life_ms_max,
                        requested: wanted - b.created_at,
                    });
                }
                self.bookings.get_mut(&lock.0).unwrap().expires_at = expires_at;
                Ok(Applied::LockExtended {
                    lock: *lock,
                    expires_at,
                })
            }
            CommandKind::ReleaseLock { lock, user } => {
                self.live_lock(*lock, *user)?;
                self.bookings.get_mut(&lock.0).unwrap().status = BookingStatus::Released;
                Ok(Applied::LockReleased { lock: *lock })
            }
            CommandKind::ConfirmBooking {
                lock,
                user,
                payment_ref,
            } => {
                if payment_ref.is_empty() {
                    return Err(Rejection::invalid("payment_ref", "must not be empty"));
                }
                let total = self.live_lock(*lock, *user)?.total;
                self.bookings.get_mut(&lock.0).unwrap().status = BookingStatus::Confirmed;
                Ok(Applied::BookingConfirmed {
                    booking: BookingId(lock.0),
                    total_price_minor: total,
                })
            }
            CommandKind::CancelBooking { booking, user } => {
                let b = self
                    .bookings
                    .get(&booking.0)
                    .ok_or(Rejection::UnknownBooking { booking: *booking })?;
                if b.user != *user {
                    return Err(Rejection::NotOwner);
                }
                let refund = match b.status {
                    BookingStatus::Confirmed => {
                        let start = self.shows[&b.show];
                        if clock >= start {
                            return Err(Rejection::ShowStarted {
                                show: b.show,
                                start_ms: start,
                            });
                        }
                        // Full refund until the cut-off before the show, none after.
                        let cutoff = self.limits.cancel_refund_cutoff_ms;
                        if clock < start.saturating_sub(cutoff) {
                            b.total
                        } else {
                            0
                        }
                    }
                    BookingStatus::PendingPayment => {
                        self.live_lock(booking.lock(), *user)?;
                        0
                    }
                    status => {
                        return Err(Rejection::WrongBookingStatus {
                            booking: *booking,
                            status,
                        })
                    }
                };
                self.bookings.get_mut(&booking.0).unwrap().status = BookingStatus::Cancelled;
                Ok(Applied::BookingCancelled {
                    booking: *booking,
                    refund_due_minor: refund,
                })
            }
            CommandKind::ExpireLocks { max_locks } => {
                if *max_locks == 0 {
                    return Err(Rejection::invalid("max_locks", "expire at least one lock"));
                }
                if *max_locks > l.expire_batch_max {
                    return Err(Rejection::LimitExceeded {
                        limit: LimitName::ExpireBatch,
                        max: l.expire_batch_max.into(),
                        requested: (*max_locks).into(),
                    });
                }
                let mut due: Vec<(u64, u64)> = self
                    .bookings
                    .iter()
                    .filter(|(_, b)| {
                        b.status == BookingStatus::PendingPayment && b.expires_at <= clock
                    })
                    .map(|(id, b)| (b.expires_at, *id))
                    .collect();
                due.sort();
                due.truncate(*max_locks as usize);
                for (_, id) in &due {
                    self.bookings.get_mut(id).unwrap().status = BookingStatus::Expired;
                }
                Ok(Applied::LocksExpired {
                    locks: due.into_iter().map(|(_, id)| LockId(id)).collect(),
                })
            }
            other => panic!("the model does not generate {other:?}"),
        }
    }
}

// ----- the test -----------------------------------------------------------------------

fn to_kind(op: &Op, shows: &[ShowId], locks: &[LockId]) -> CommandKind {
    let lock = |pick: usize| locks.get(pick).copied().unwrap_or(LockId(999_999));
    match op {
        Op::Lock {
            show,
            user,
            seats,
            ttl_ms,
        } => CommandKind::LockSeats {
            show: shows.get(*show).copied().unwrap_or(ShowId(777)),
            user: UserId(*user),
            seats: seats.iter().map(|s| SeatId(*s)).collect(),
            ttl_ms: *ttl_ms,
        },
        Op::Extend {
            lock: pick,
            user,
            ttl_ms,
        } => CommandKind::ExtendLock {
            lock: lock(*pick),
            user: UserId(*user),
            ttl_ms: *ttl_ms,
        },
        Op::Release { lock: pick, user } => CommandKind::ReleaseLock {
            lock: lock(*pick),
            user: UserId(*user),
        },
        Op::Confirm {
            lock: pick,
            user,
            paid,
        } => CommandKind::ConfirmBooking {
            lock: lock(*pick),
            user: UserId(*user),
            payment_ref: if *paid { "pay".into() } else { String::new() },
        },
        Op::Cancel { lock: pick, user } => CommandKind::CancelBooking {
            booking: BookingId::of_lock(lock(*pick)),
            user: UserId(*user),
        },
        Op::Expire { max_locks } => CommandKind::ExpireLocks {
            max_locks: *max_locks,
        },
    }
}

fn run_case(steps: &[Step]) -> Result<(), TestCaseError> {
    let limits = limits();
    let mut ledger = Ledger::new(limits.clone());
    let start = 1_000_000u64;
    let layout = screen("Audi", 3, 4);
    let prices: Vec<u64> = layout
        .categories()
        .map(|c| testkit::prices().of(c))
        .collect();
    ledger.apply(
        1,
        &command(
            "setup-1",
            start,
            testkit::create_theater("mumbai", UserId(9), vec![layout]),
        ),
    );
    let soon = start + 300_000;
    let later = start + 100 * 3_600_000;
    ledger.apply(
        2,
        &command(
            "setup-2",
            start,
            publish_show(TheaterId(1), 0, soon, "Soon"),
        ),
    );
    ledger.apply(
        3,
        &command(
            "setup-3",
            start,
            publish_show(TheaterId(1), 0, later, "Later"),
        ),
    );
    let shows = vec![ShowId(2), ShowId(3)];
    let mut model = Model {
        limits,
        clock: start,
        shows: [(ShowId(2), soon), (ShowId(3), later)].into(),
        prices,
        bookings: BTreeMap::new(),
        requests: BTreeMap::new(),
    };
    for id in ["setup-1", "setup-2", "setup-3"] {
        // The setup commands occupy request ids in the real ledger; mirror them.
        let record = ledger.requests().find(&RequestId(id.into())).unwrap();
        model.requests.insert(
            id.into(),
            (
                record.at_ms,
                CommandKind::ExpireLocks { max_locks: 0 },
                record.outcome.clone(),
            ),
        );
    }
    let mut locks: Vec<LockId> = Vec::new();
    let mut sent: Vec<(String, CommandKind)> = Vec::new();
    let mut leader_clock = start as i64;
    for (n, step) in steps.iter().enumerate() {
        let index = 10 + n as u64;
        leader_clock = (leader_clock + step.delta_ms).max(0);
        let (request_id, kind) = match step.reuse.filter(|_| !sent.is_empty()) {
            Some(pick) if pick % 2 == 0 => sent[pick % sent.len()].clone(),
            Some(pick) => (
                sent[pick % sent.len()].0.clone(),
                to_kind(&step.op, &shows, &locks),
            ),
            None => (format!("r{n}"), to_kind(&step.op, &shows, &locks)),
        };
        let clock_before = ledger.clock();
        let real = ledger.apply(
            index,
            &command(&request_id, leader_clock as u64, kind.clone()),
        );
        let expected = model.apply(index, &request_id, leader_clock as u64, &kind);
        prop_assert_eq!(&real.outcome, &expected, "step {} {:?}", n, kind);
        prop_assert!(ledger.clock() >= clock_before, "the clock went back");
        prop_assert_eq!(ledger.clock(), model.clock);
        if let Err(broken) = ledger.check_invariants() {
            return Err(TestCaseError::fail(format!("step {n}: {broken}")));
        }
        if let Outcome::Applied(Applied::SeatsLocked { lock, .. }) = &real.outcome {
            if !locks.contains(lock) {
                locks.push(*lock);
            }
        }
        sent.push((request_id, kind));
        for show in &shows {
            for seat in 0..SEATS {
                let real_map = ledger.query(&Query::SeatMap { show: *show }).unwrap();
                let QueryResponse::SeatMap(map) = real_map else {
                    unreachable!()
                };
                prop_assert_eq!(
                    map.seats[seat as usize].status,
                    model.seat_status(*show, SeatId(seat))
                );
            }
            let counts = ledger.seat_counts(*show);
            prop_assert_eq!(counts.available + counts.locked + counts.booked, SEATS);
        }
        for (id, booking) in &model.bookings {
            prop_assert_eq!(
                ledger.state().bookings[&BookingId(*id)].status,
                booking.status
            );
        }
    }
    Ok(())
}

fn seed() -> u64 {
    std::env::var("LEDGER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            use std::hash::{BuildHasher, RandomState};
            RandomState::new().hash_one(std::process::id())
        })
}

pub fn runner(seed: u64, cases: u32) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

#[test]
fn ledger_agrees_with_the_reference_model() {
    let seed = seed();
    let cases = std::env::var("LEDGER_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    eprintln!("model test seed {seed}; replay: LEDGER_SEED={seed} cargo test -p state-machine --test model");
    let result = runner(seed, cases).run(&prop::collection::vec(step(), 1..80), |steps| {
        run_case(&steps)
    });
    if let Err(error) = result {
        panic!("{error}\nreplay: LEDGER_SEED={seed} cargo test -p state-machine --test model");
    }
}
