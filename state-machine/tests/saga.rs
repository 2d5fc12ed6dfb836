//! Property test of the booking saga in the ledger: random interleavings of locks,
//! payment starts, gateway reports (any status, any version: duplicated, stale,
//! reordered, impossible), failures the api made up for a refused create (which later
//! reports of the real payment replace), expiry, releases and cancels. After every step the ledger's
//! invariants hold (a seat is booked exactly when its payment is captured; refunds only
//! for bookings without seats), and in the end every payment that the gateway last
//! reported as charged is either the booking's captured payment or owed back in full.
//!
//! Replay a failure with the seed it prints: `LEDGER_SEED=<n> cargo test -p
//! state-machine --test saga`.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use state_machine::testkit::{command, create_theater, publish_show, screen};
use state_machine::*;

const USERS: u64 = 3;
const SEATS: u32 = 6;

#[derive(Clone, Debug)]
enum Step {
    Lock {
        user: u64,
        seat: u32,
    },
    Start {
        pick: usize,
    },
    Report {
        pick: usize,
        status: u8,
        version: u64,
    },
    /// The api's made-up failure of a create the gateway refused.
    Refused {
        pick: usize,
    },
    Release {
        pick: usize,
    },
    Cancel {
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    Expire,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..USERS, 0..SEATS).prop_map(|(user, seat)| Step::Lock { user, seat }),
        3 => (0..8usize).prop_map(|pick| Step::Start { pick }),
        6 => (0..8usize, 0..5u8, 0..5u64)
            .prop_map(|(pick, status, version)| Step::Report { pick, status, version }),
        1 => (0..8usize).prop_map(|pick| Step::Refused { pick }),
        1 => (0..8usize).prop_map(|pick| Step::Release { pick }),
        1 => (0..8usize).prop_map(|pick| Step::Cancel { pick }),
        2 => (1..40_000u64).prop_map(|ms| Step::Advance { ms }),
        1 => Just(Step::Expire),
    ]
}

const STATUSES: [GatewayStatus; 5] = [
    GatewayStatus::Pending,
    GatewayStatus::Succeeded,
    GatewayStatus::Failed,
    GatewayStatus::Canceled,
    GatewayStatus::Refunded,
];

fn run_case(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut ledger = Ledger::new(Limits::default());
    let mut now = 1_000_000u64;
    let mut index = 0u64;
    let mut apply = |ledger: &mut Ledger, now: u64, kind: CommandKind| {
        index += 1;
        ledger.apply(index, &command(&format!("r{index}"), now, kind))
    };
    apply(
        &mut ledger,
        now,
        create_theater("mumbai", UserId(9), vec![screen("A", 1, SEATS as u16)]),
    );
    // The show starts in 90 minutes: cancels fall after the refund cut-off too.
    let start = now + 90 * 60_000;
    apply(&mut ledger, now, publish_show(TheaterId(1), 0, start, "X"));
    let show = ShowId(2);
    let mut bookings: Vec<(BookingId, UserId)> = Vec::new();
    for step in steps {
        let pick = |n: usize| bookings.get(n % bookings.len().max(1)).copied();
        let kind = match step {
            Step::Lock { user, seat } => CommandKind::LockSeats {
                show,
                user: UserId(*user),
                seats: vec![SeatId(*seat)],
                ttl_ms: Some(30_000),
            },
            Step::Start { pick: n } => match pick(*n) {
                Some((booking, user)) => CommandKind::StartPayment {
                    booking,
                    user,
                    method: "card".into(),
                    discount_minor: 0,
                    coupon: None,
                },
                None => continue,
            },
            Step::Report {
                pick: n,
                status,
                version,
            } => match pick(*n) {
                Some((booking, _)) => {
                    let Some(payment) = ledger.state().payments.get(&booking) else {
                        continue;
                    };
                    let status = STATUSES[*status as usize];
                    let version = payment.gateway_version + version;
                    CommandKind::RecordGatewayState {
                        booking,
                        gateway_ref: format!("pay_{}", booking.0),
                        payment_url: String::new(),
                        status,
                        version,
                        amount_minor: payment.amount_minor,
                        reason: None,
                    }
                }
                None => continue,
            },
            Step::Refused { pick: n } => match pick(*n) {
                Some((booking, _)) => {
                    let Some(payment) = ledger.state().payments.get(&booking) else {
                        continue;
                    };
                    CommandKind::RecordGatewayState {
                        booking,
                        gateway_ref: format!("{}{}", payments::MADE_UP_REF_PREFIX, booking.0),
                        payment_url: String::new(),
                        status: GatewayStatus::Failed,
                        version: 1,
                        amount_minor: payment.amount_minor,
                        reason: Some("refused".into()),
                    }
                }
                None => continue,
            },
            Step::Release { pick: n } => match pick(*n) {
                Some((booking, user)) => CommandKind::ReleaseLock {
                    lock: booking.lock(),
                    user,
                },
                None => continue,
            },
            Step::Cancel { pick: n } => match pick(*n) {
                Some((booking, user)) => CommandKind::CancelBooking { booking, user },
                None => continue,
            },
            Step::Advance { ms } => {
                now += ms;
                continue;
            }
            Step::Expire => CommandKind::ExpireLocks { max_locks: 10 },
        };
        let before = ledger.state().clone();
        let result = apply(&mut ledger, now, kind);
        match &result.outcome {
            Outcome::Applied(Applied::SeatsLocked { booking, .. }) => {
                bookings.push((*booking, before_user(step)));
            }
            Outcome::Rejected(_) => {
                prop_assert_eq!(&before.payments, &ledger.state().payments);
                prop_assert_eq!(&before.bookings, &ledger.state().bookings);
            }
            _ => {}
        }
        if let Err(broken) = ledger.check_invariants() {
            return Err(TestCaseError::fail(format!("after {step:?}: {broken}")));
        }
    }
    // Money: a captured payment belongs to a confirmed (or late-cancelled) booking; a
    // booking without seats that was charged is owed (or was paid) a refund.
    for (booking, payment) in &ledger.state().payments {
        let status = ledger.state().bookings[booking].status;
        match payment.status {
            PaymentStatus::Captured => prop_assert!(matches!(
                status,
                BookingStatus::Confirmed | BookingStatus::Cancelled
            )),
            PaymentStatus::RefundDue | PaymentStatus::Refunded => {
                prop_assert!(!matches!(
                    status,
                    BookingStatus::Confirmed | BookingStatus::PendingPayment
                ));
                prop_assert!(payment.refund_minor > 0);
            }
            _ => prop_assert!(status != BookingStatus::Confirmed),
        }
    }
    Ok(())
}

fn before_user(step: &Step) -> UserId {
    match step {
        Step::Lock { user, .. } => UserId(*user),
        _ => UserId(u64::MAX),
    }
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

#[test]
fn the_saga_keeps_seats_and_money_consistent_under_any_report_order() {
    let seed = seed();
    let cases = std::env::var("LEDGER_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    eprintln!(
        "saga test seed {seed}; replay: LEDGER_SEED={seed} cargo test -p state-machine --test saga"
    );
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let result = runner.run(&prop::collection::vec(step(), 1..120), |steps| {
        run_case(&steps)
    });
    if let Err(error) = result {
        panic!("{error}\nreplay: LEDGER_SEED={seed} cargo test -p state-machine --test saga");
    }
}
