//! Scenario tests of `apply`: each command's success path, each rejection, and each
//! limit exceeded. The property tests in `tests/model.rs` cover random interleavings.

use crate::testkit::{command, create_theater, publish_show, screen};
use crate::*;

const HOUR_MS: u64 = 3_600_000;
const ALICE: UserId = UserId(1);
const BOB: UserId = UserId(2);

struct Fixture {
    ledger: Ledger,
    index: LogIndex,
    now: Millis,
    show: ShowId,
    theater: TheaterId,
}

impl Fixture {
    fn new() -> Fixture {
        let mut fixture = Fixture {
            ledger: Ledger::new(Limits::default()),
            index: 0,
            now: 1_000_000,
            show: ShowId(0),
            theater: TheaterId(0),
        };
        let theater = fixture.ok(create_theater(
            "mumbai",
            UserId(9),
            vec![screen("Audi 1", 6, 10)],
        ));
        let Applied::TheaterCreated { theater } = theater else {
            panic!("{theater:?}")
        };
        fixture.theater = theater;
        let start = fixture.now + 10 * HOUR_MS;
        let show = fixture.ok(publish_show(theater, 0, start, "Avengers"));
        let Applied::ShowPublished { show } = show else {
            panic!("{show:?}")
        };
        fixture.show = show;
        fixture
    }

    fn run(&mut self, kind: CommandKind) -> ApplyResult {
        self.index += 1;
        let request = format!("req-{}", self.index);
        let result = self
            .ledger
            .apply(self.index, &command(&request, self.now, kind));
        self.ledger.check_invariants().unwrap();
        result
    }

    fn ok(&mut self, kind: CommandKind) -> Applied {
        match self.run(kind).outcome {
            Outcome::Applied(applied) => applied,
            Outcome::Rejected(rejection) => panic!("unexpected rejection: {rejection}"),
        }
    }

    fn rejected(&mut self, kind: CommandKind) -> Rejection {
        let before = self.ledger.state().clone();
        let result = self.run(kind);
        assert!(result.events.is_empty());
        assert_eq!(
            before.seats,
            self.ledger.state().seats,
            "a rejection changed seats"
        );
        assert_eq!(
            before.bookings,
            self.ledger.state().bookings,
            "a rejection changed bookings"
        );
        match result.outcome {
            Outcome::Rejected(rejection) => rejection,
            Outcome::Applied(applied) => panic!("expected a rejection, got {applied:?}"),
        }
    }

    fn lock(&mut self, user: UserId, seats: &[u32]) -> LockId {
        let kind = lock_kind(self.show, user, seats, None);
        let Applied::SeatsLocked { lock, .. } = self.ok(kind) else {
            panic!()
        };
        lock
    }
}

fn lock_kind(show: ShowId, user: UserId, seats: &[u32], ttl_ms: Option<u64>) -> CommandKind {
    CommandKind::LockSeats {
        show,
        user,
        seats: seats.iter().map(|s| SeatId(*s)).collect(),
        ttl_ms,
    }
}

fn confirm(lock: LockId, user: UserId) -> CommandKind {
    CommandKind::ConfirmBooking {
        lock,
        user,
        payment_ref: "pay-1".into(),
    }
}

#[test]
fn lock_confirm_cancel_round_trip() {
    let mut f = Fixture::new();
    let lock = f.lock(ALICE, &[3, 1]);
    let Applied::BookingConfirmed {
        booking,
        total_price_minor,
    } = f.ok(confirm(lock, ALICE))
    else {
        panic!()
    };
    assert_eq!(total_price_minor, 40_000);
    assert_eq!(f.ledger.seat_counts(f.show).booked, 2);
    let cancelled = f.ok(CommandKind::CancelBooking {
        booking,
        user: ALICE,
    });
    assert_eq!(
        cancelled,
        Applied::BookingCancelled {
            booking,
            refund_due_minor: 40_000
        }
    );
    assert_eq!(f.ledger.seat_counts(f.show).available, 60);
}

#[test]
fn seats_taken_names_the_seats_and_is_all_or_nothing() {
    let mut f = Fixture::new();
    f.lock(ALICE, &[1, 2]);
    let rejection = f.rejected(lock_kind(f.show, BOB, &[0, 2, 5], None));
    assert_eq!(
        rejection,
        Rejection::SeatsTaken {
            seats: vec![SeatId(2)]
        }
    );
    assert_eq!(f.ledger.seat_counts(f.show).locked, 2);
}

#[test]
fn a_lock_is_dead_at_expiry_even_before_the_sweep() {
    let mut f = Fixture::new();
    let lock = f.lock(ALICE, &[1]);
    f.now += Limits::default().lock_ttl_ms_default;
    let rejection = f.rejected(confirm(lock, ALICE));
    assert!(
        matches!(rejection, Rejection::LockExpired { .. }),
        "{rejection:?}"
    );
    // Another user may take the seat at once; the stale lock ends as expired.
    let result = f.run(lock_kind(f.show, BOB, &[1], None));
    assert!(result.outcome.is_applied());
    assert!(matches!(result.events[0], Event::LockExpired { .. }));
}

#[test]
fn the_clock_never_runs_backwards() {
    let mut f = Fixture::new();
    let lock = f.lock(ALICE, &[1]);
    f.now += Limits::default().lock_ttl_ms_default;
    f.run(CommandKind::ExpireLocks { max_locks: 10 });
    let clock = f.ledger.clock();
    f.now -= 4 * 60_000;
    f.run(CommandKind::ExpireLocks { max_locks: 10 });
    assert_eq!(f.ledger.clock(), clock);
    let rejection = f.rejected(confirm(lock, ALICE));
    assert!(matches!(rejection, Rejection::LockExpired { .. }));
}

#[test]
fn sweep_frees_in_bounded_batches() {
    let mut f = Fixture::new();
    for user in 0..5 {
        f.lock(UserId(100 + user), &[user as u32]);
    }
    f.now += Limits::default().lock_ttl_ms_default;
    let Applied::LocksExpired { locks } = f.ok(CommandKind::ExpireLocks { max_locks: 3 }) else {
        panic!()
    };
    assert_eq!(locks.len(), 3);
    let Applied::LocksExpired { locks } = f.ok(CommandKind::ExpireLocks { max_locks: 3 }) else {
        panic!()
    };
    assert_eq!(locks.len(), 2);
    let over = f.rejected(CommandKind::ExpireLocks { max_locks: 1_001 });
    assert!(matches!(
        over,
        Rejection::LimitExceeded {
            limit: LimitName::ExpireBatch,
            ..
        }
    ));
}

#[test]
fn only_the_owner_may_confirm_release_or_cancel() {
    let mut f = Fixture::new();
    let lock = f.lock(ALICE, &[1]);
    assert_eq!(f.rejected(confirm(lock, BOB)), Rejection::NotOwner);
    assert_eq!(
        f.rejected(CommandKind::ReleaseLock { lock, user: BOB }),
        Rejection::NotOwner
    );
    let booking = BookingId::of_lock(lock);
    assert_eq!(
        f.rejected(CommandKind::CancelBooking { booking, user: BOB }),
        Rejection::NotOwner
    );
    f.ok(CommandKind::ReleaseLock { lock, user: ALICE });
    let again = f.rejected(confirm(lock, ALICE));
    assert!(matches!(
        again,
        Rejection::WrongBookingStatus {
            status: BookingStatus::Released,
            ..
        }
    ));
}

#[test]
fn extend_is_capped_by_the_lock_life() {
    let mut f = Fixture::new();
    let limits = Limits::default();
    let lock = f.lock(ALICE, &[1]);
    f.now += 4 * 60_000;
    let Applied::LockExtended { expires_at, .. } = f.ok(CommandKind::ExtendLock {
        lock,
        user: ALICE,
        ttl_ms: limits.lock_ttl_ms_max,
    }) else {
        panic!()
    };
    assert_eq!(expires_at, f.now + limits.lock_ttl_ms_max);
    f.now += limits.lock_ttl_ms_max - 1;
    let capped = f.ok(CommandKind::ExtendLock {
        lock,
        user: ALICE,
        ttl_ms: limits.lock_ttl_ms_max,
    });
    let life_end = 1_000_000 + limits.lock_life_ms_max;
    assert_eq!(
        capped,
        Applied::LockExtended {
            lock,
            expires_at: life_end
        }
    );
    let over = f.rejected(CommandKind::ExtendLock {
        lock,
        user: ALICE,
        ttl_ms: limits.lock_ttl_ms_max,
    });
    assert!(matches!(
        over,
        Rejection::LimitExceeded {
            limit: LimitName::LockLife,
            ..
        }
    ));
}

#[test]
fn duplicate_request_ids_return_the_first_outcome() {
    let mut f = Fixture::new();
    let kind = lock_kind(f.show, ALICE, &[7], None);
    let first = f.ledger.apply(100, &command("dup", f.now, kind.clone()));
    let second = f.ledger.apply(101, &command("dup", f.now + 5, kind));
    assert_eq!(first.outcome, second.outcome);
    assert!(second.events.is_empty());
    assert_eq!(f.ledger.seat_counts(f.show).locked, 1);
    let other = lock_kind(f.show, ALICE, &[8], None);
    let reused = f.ledger.apply(102, &command("dup", f.now, other));
    assert_eq!(
        reused.outcome,
        Outcome::Rejected(Rejection::RequestIdReused)
    );
}

#[test]
fn request_ids_are_forgotten_by_the_second_and_never_before_the_window() {
    let limits = Limits {
        request_ids_max: 3,
        ..Limits::default()
    };
    let retention = limits.request_id_retention_ms;
    let mut ledger = Ledger::new(limits.clone());
    let expire =
        |id: &str, at_ms: u64| command(id, at_ms, CommandKind::ExpireLocks { max_locks: 1 });
    for n in 0..3u64 {
        let outcome = ledger
            .apply(n + 1, &expire(&format!("r{n}"), 10_000 + n * 1_000))
            .outcome;
        assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
    }
    assert_eq!(ledger.requests().len(), 3);
    // Full of keys younger than the window: a new key is refused, with the time until
    // the oldest second (10 s) has left the window.
    let refused = ledger.apply(4, &expire("r3", 12_500)).outcome;
    assert_eq!(
        refused,
        Outcome::Rejected(Rejection::RequestTableFull {
            retry_after_ms: 11_000 + retention - 12_500
        })
    );
    // A known key is still answered.
    assert!(matches!(
        ledger.apply(5, &expire("r0", 12_600)).outcome,
        Outcome::Applied(_)
    ));
    // The first second leaves the window only once all of it has: not at 10 s +
    // retention, but at 11 s + retention.
    let digest_before = ledger.digest();
    ledger.apply(6, &expire("r4", 10_999 + retention));
    assert!(ledger.requests().find(&RequestId("r0".into())).is_some());
    assert_ne!(ledger.digest(), digest_before, "the clock moved");
    let outcome = ledger.apply(7, &expire("r4", 11_000 + retention)).outcome;
    assert!(matches!(outcome, Outcome::Applied(_)), "{outcome:?}");
    assert!(ledger.requests().find(&RequestId("r0".into())).is_none());
    assert_eq!(ledger.requests().len(), 3);
    ledger.check_invariants().unwrap();
    let late = 20_000 + 2 * retention;
    ledger.apply(
        9,
        &Command {
            request_id: None,
            at_ms: late,
            kind: CommandKind::ExpireLocks { max_locks: 1 },
        },
    );
    assert!(ledger.requests().is_empty());
    ledger.check_invariants().unwrap();
}

#[test]
fn ids_made_by_the_api_are_kept_minutes_and_clients_keys_the_whole_window() {
    let mut ledger = Ledger::new(Limits::default());
    let expire =
        |id: &str, at_ms: u64| command(id, at_ms, CommandKind::ExpireLocks { max_locks: 1 });
    ledger.apply(1, &expire("auto:7:00ff", 1_000));
    ledger.apply(2, &expire("7:my-key", 1_000));
    ledger.apply(
        3,
        &expire("7:later", 2_000 + crate::requests::AUTO_RETENTION_MS),
    );
    assert!(ledger
        .requests()
        .find(&RequestId("auto:7:00ff".into()))
        .is_none());
    assert!(ledger
        .requests()
        .find(&RequestId("7:my-key".into()))
        .is_some());
    ledger.check_invariants().unwrap();
}

#[test]
fn per_user_seat_cap_counts_locks_and_bookings() {
    let mut f = Fixture::new();
    let limits = Limits::default();
    let lock = f.lock(ALICE, &[0, 1, 2, 3, 4, 5]);
    f.ok(confirm(lock, ALICE));
    f.lock(ALICE, &[10, 11, 12, 13]);
    let over = f.rejected(lock_kind(f.show, ALICE, &[20], None));
    assert_eq!(
        over,
        Rejection::LimitExceeded {
            limit: LimitName::SeatsPerUserPerShow,
            max: limits.seats_per_user_per_show_max.into(),
            requested: 11
        }
    );
}

#[test]
fn lock_limits_and_bad_seats_are_refused() {
    let mut f = Fixture::new();
    let show = f.show;
    let too_many: Vec<u32> = (0..11).collect();
    let r = f.rejected(lock_kind(show, ALICE, &too_many, None));
    assert!(matches!(
        r,
        Rejection::LimitExceeded {
            limit: LimitName::SeatsPerLock,
            max: 10,
            requested: 11
        }
    ));
    let r = f.rejected(lock_kind(show, ALICE, &[1], Some(1_000)));
    assert!(matches!(
        r,
        Rejection::LimitExceeded {
            limit: LimitName::LockTtlMin,
            ..
        }
    ));
    let r = f.rejected(lock_kind(show, ALICE, &[1], Some(3_600_000)));
    assert!(matches!(
        r,
        Rejection::LimitExceeded {
            limit: LimitName::LockTtlMax,
            ..
        }
    ));
    let r = f.rejected(lock_kind(show, ALICE, &[1, 1], None));
    assert!(r.is_invalid("seats"), "{r:?}");
    let r = f.rejected(lock_kind(show, ALICE, &[], None));
    assert!(r.is_invalid("seats"), "{r:?}");
    let r = f.rejected(lock_kind(show, ALICE, &[59, 60, 61], None));
    assert_eq!(
        r,
        Rejection::UnknownSeats {
            seats: vec![SeatId(60), SeatId(61)]
        }
    );
    let r = f.rejected(lock_kind(ShowId(999), ALICE, &[1], None));
    assert_eq!(r, Rejection::UnknownShow { show: ShowId(999) });
}

#[test]
fn shows_cannot_overlap_on_a_screen_or_start_in_the_past() {
    let mut f = Fixture::new();
    let start = f.now + 10 * HOUR_MS;
    let theater = f.theater;
    let busy = f.rejected(publish_show(theater, 0, start + HOUR_MS, "Dune"));
    assert_eq!(
        busy,
        Rejection::ScreenBusy {
            conflicting_show: f.show
        }
    );
    let earlier = f.rejected(publish_show(theater, 0, start - 2 * HOUR_MS, "Dune"));
    assert_eq!(
        earlier,
        Rejection::ScreenBusy {
            conflicting_show: f.show
        }
    );
    f.ok(publish_show(theater, 0, start + 3 * HOUR_MS, "Dune"));
    let past = f.rejected(publish_show(theater, 0, f.now - 1, "Old"));
    assert!(past.is_invalid("start_time"), "{past:?}");
    let screen = f.rejected(publish_show(theater, 5, start + 9 * HOUR_MS, "Dune"));
    assert!(matches!(screen, Rejection::UnknownScreen { .. }));
}

#[test]
fn theater_limits_are_enforced() {
    let mut f = Fixture::new();
    let huge = f.rejected(create_theater("pune", ALICE, vec![screen("Big", 101, 100)]));
    assert!(matches!(
        huge,
        Rejection::LimitExceeded {
            limit: LimitName::SeatsPerScreen,
            ..
        }
    ));
    let screens = vec![screen("S", 1, 1); 33];
    let many = f.rejected(create_theater("pune", ALICE, screens));
    assert!(matches!(
        many,
        Rejection::LimitExceeded {
            limit: LimitName::ScreensPerTheater,
            ..
        }
    ));
    let rows = f.rejected(create_theater("pune", ALICE, vec![screen("Tall", 201, 1)]));
    assert!(matches!(
        rows,
        Rejection::LimitExceeded {
            limit: LimitName::RowsPerScreen,
            ..
        }
    ));
    let city = f.rejected(create_theater("Pune City", ALICE, vec![screen("S", 1, 1)]));
    assert!(city.is_invalid("city"), "{city:?}");
    let mut long = create_theater("pune", ALICE, vec![screen("S", 1, 1)]);
    if let CommandKind::CreateTheater { name, .. } = &mut long {
        *name = "x".repeat(201);
    }
    let text = f.rejected(long);
    assert!(matches!(
        text,
        Rejection::LimitExceeded {
            limit: LimitName::TextLength,
            ..
        }
    ));
}

#[test]
fn cancelling_a_show_releases_locks_and_refunds_bookings() {
    let mut f = Fixture::new();
    let paid = f.lock(ALICE, &[1, 2]);
    f.ok(confirm(paid, ALICE));
    f.lock(BOB, &[3]);
    let cancelled = f.ok(CommandKind::CancelShow { show: f.show });
    assert_eq!(
        cancelled,
        Applied::ShowCancelled {
            show: f.show,
            locks_released: 1,
            bookings_cancelled: 1
        }
    );
    let booking = &f.ledger.state().bookings[&BookingId::of_lock(paid)];
    assert_eq!(booking.refund_due_minor, 40_000);
    let r = f.rejected(lock_kind(f.show, BOB, &[5], None));
    assert_eq!(r, Rejection::ShowCancelled { show: f.show });
}

#[test]
fn after_the_show_starts_seats_cannot_change_hands() {
    let mut f = Fixture::new();
    let lock = f.lock(ALICE, &[1]);
    f.ok(confirm(lock, ALICE));
    f.now += 11 * HOUR_MS;
    let r = f.rejected(lock_kind(f.show, BOB, &[2], None));
    assert!(matches!(r, Rejection::ShowStarted { .. }));
    let r = f.rejected(CommandKind::CancelBooking {
        booking: BookingId::of_lock(lock),
        user: ALICE,
    });
    assert!(matches!(r, Rejection::ShowStarted { .. }));
}

#[test]
fn queries_page_and_search() {
    let mut f = Fixture::new();
    for seat in 0..3 {
        f.lock(ALICE, &[seat]);
    }
    let page = f
        .ledger
        .query(&Query::UserBookings {
            user: ALICE,
            before: None,
            limit: 2,
        })
        .unwrap();
    let QueryResponse::Bookings { items, next } = page else {
        panic!()
    };
    assert_eq!(items.len(), 2);
    assert!(items[0].id > items[1].id, "newest first");
    let rest = f
        .ledger
        .query(&Query::UserBookings {
            user: ALICE,
            before: next,
            limit: 2,
        })
        .unwrap();
    let QueryResponse::Bookings { items, next } = rest else {
        panic!()
    };
    assert_eq!((items.len(), next), (1, None));
    let too_big = f.ledger.query(&Query::UserBookings {
        user: ALICE,
        before: None,
        limit: 101,
    });
    assert!(matches!(
        too_big,
        Err(Rejection::LimitExceeded {
            limit: LimitName::PageSize,
            ..
        })
    ));
    let search = Query::CityShows {
        city: "mumbai".into(),
        from_ms: 0,
        to_ms: u64::MAX,
        text: Some("aVeNg".into()),
        after: None,
        limit: 10,
    };
    let QueryResponse::Shows { items, .. } = f.ledger.query(&search).unwrap() else {
        panic!()
    };
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].counts.locked, 3);
    let QueryResponse::SeatMap(map) = f.ledger.query(&Query::SeatMap { show: f.show }).unwrap()
    else {
        panic!()
    };
    assert_eq!(map.seats.len(), 60);
    assert_eq!((map.seats[11].row.as_str(), map.seats[11].number), ("B", 2));
    assert_eq!(map.seats[0].status, SeatStatus::Locked);
    let QueryResponse::Cities(cities) = f.ledger.query(&Query::Cities).unwrap() else {
        panic!()
    };
    assert_eq!(cities, vec!["mumbai".to_string()]);
}

fn seat_map_digest(f: &Fixture) -> u64 {
    let QueryResponse::SeatMap(map) = f.ledger.query(&Query::SeatMap { show: f.show }).unwrap()
    else {
        panic!()
    };
    map.digest()
}

fn if_changed(f: &Fixture, digest: u64) -> QueryResponse {
    let query = Query::SeatMapIfChanged {
        show: f.show,
        digest,
    };
    f.ledger.query(&query).unwrap()
}

#[test]
fn a_seat_map_digest_changes_exactly_when_the_map_does() {
    let mut f = Fixture::new();
    let fresh = seat_map_digest(&f);
    assert_eq!(
        if_changed(&f, fresh),
        QueryResponse::SeatMapUnchanged { digest: fresh }
    );
    // A lock changes it, and a reader with the old digest gets the whole map.
    f.lock(ALICE, &[4]);
    let locked = seat_map_digest(&f);
    assert_ne!(locked, fresh);
    let QueryResponse::SeatMap(map) = if_changed(&f, fresh) else {
        panic!("an old digest must get the map")
    };
    assert_eq!(map.digest(), locked);
    assert_eq!(map.seats[4].status, SeatStatus::Locked);
    // A command elsewhere in the shard leaves it alone...
    f.now += 1_000;
    f.ok(create_theater(
        "mumbai",
        UserId(9),
        vec![screen("Audi 2", 2, 2)],
    ));
    assert_eq!(seat_map_digest(&f), locked);
    // ...until the shard clock passes the lock's expiry: the seat shows as available
    // again before any sweep, and the digest is the unlocked map's again.
    f.now += Limits::default().lock_ttl_ms_default;
    f.ok(create_theater(
        "mumbai",
        UserId(9),
        vec![screen("Audi 3", 2, 2)],
    ));
    assert_eq!(seat_map_digest(&f), fresh);
    assert!(matches!(
        if_changed(&f, locked),
        QueryResponse::SeatMap(map) if map.seats[4].status == SeatStatus::Available
    ));
    let unknown = Query::SeatMapIfChanged {
        show: ShowId(99),
        digest: fresh,
    };
    assert!(matches!(
        f.ledger.query(&unknown),
        Err(Rejection::UnknownShow { .. })
    ));
}

fn hash(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn register(ledger: &mut Ledger, index: LogIndex, email: &str, phone: &str) -> Outcome {
    let kind = CommandKind::RegisterUser {
        email: email.into(),
        phone: phone.into(),
        name: "Asha".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role: Role::Customer,
    };
    ledger
        .apply(index, &command(&format!("reg-{index}"), 1_000, kind))
        .outcome
}

#[test]
fn accounts_have_unique_emails_and_phones() {
    let mut ledger = Ledger::new(Limits::default());
    let first = register(&mut ledger, 1, "Asha@Example.com", "+91 98200 00001");
    assert_eq!(
        first,
        Outcome::Applied(Applied::UserRegistered { user: UserId(1) })
    );
    let again = register(&mut ledger, 2, "asha@example.com", "+91 98200 00002");
    assert_eq!(again, Outcome::Rejected(Rejection::EmailTaken));
    let phone = register(&mut ledger, 3, "other@example.com", "+91 98200 00001");
    assert_eq!(phone, Outcome::Rejected(Rejection::PhoneTaken));
    let bad = register(&mut ledger, 4, "not-an-email", "+91 98200 00003");
    assert!(matches!(bad, Outcome::Rejected(ref r) if r.is_invalid("email")));
    let found = ledger
        .query(&Query::UserByEmail {
            email: "ASHA@example.com".into(),
        })
        .unwrap();
    assert!(matches!(found, QueryResponse::User(user) if user.id == UserId(1)));
    ledger.check_invariants().unwrap();
}

#[test]
fn refresh_tokens_rotate_once_and_reuse_revokes_the_family() {
    let mut ledger = Ledger::new(Limits::default());
    register(&mut ledger, 1, "a@example.com", "9820000001");
    let issue = CommandKind::IssueRefreshToken {
        user: UserId(1),
        token_hash: hash(1),
        expires_at: 99_000,
    };
    let issued = ledger.apply(2, &command("i", 1_000, issue)).outcome;
    assert_eq!(
        issued,
        Outcome::Applied(Applied::RefreshTokenIssued {
            user: UserId(1),
            family: 2
        })
    );
    let rotate = |old: u8, new: u8| CommandKind::RotateRefreshToken {
        old_hash: hash(old),
        new_hash: hash(new),
        expires_at: 99_000,
    };
    let rotated = ledger.apply(3, &command("r1", 1_000, rotate(1, 2))).outcome;
    assert_eq!(
        rotated,
        Outcome::Applied(Applied::RefreshTokenRotated {
            user: UserId(1),
            family: 2
        })
    );
    // The old token presented again: the family (including the new token) is revoked.
    let reused = ledger.apply(4, &command("r2", 1_000, rotate(1, 3))).outcome;
    assert_eq!(
        reused,
        Outcome::Applied(Applied::RefreshFamilyRevoked {
            user: UserId(1),
            family: 2
        })
    );
    let after = ledger.apply(5, &command("r3", 1_000, rotate(2, 4))).outcome;
    assert_eq!(after, Outcome::Rejected(Rejection::RefreshTokenInvalid));
    let expired = ledger
        .apply(6, &command("r4", 100_000, rotate(9, 5)))
        .outcome;
    assert_eq!(expired, Outcome::Rejected(Rejection::RefreshTokenInvalid));
    // The next login forgets the expired tokens.
    let issue = CommandKind::IssueRefreshToken {
        user: UserId(1),
        token_hash: hash(7),
        expires_at: 500_000,
    };
    ledger.apply(7, &command("i2", 100_000, issue));
    assert_eq!(
        ledger
            .state()
            .refresh_tokens
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec![hash(7)]
    );
}

#[test]
fn a_show_longer_than_the_limit_is_refused() {
    let mut f = Fixture::new();
    let start = f.now + 20 * HOUR_MS;
    let mut long = publish_show(f.theater, 0, start, "Marathon");
    if let CommandKind::PublishShow { end_ms, .. } = &mut long {
        *end_ms = start + Limits::default().show_duration_ms_max + 1;
    }
    let r = f.rejected(long);
    assert!(
        matches!(
            r,
            Rejection::LimitExceeded {
                limit: LimitName::ShowDuration,
                ..
            }
        ),
        "{r:?}"
    );
}

/// Found by the `snapshot` fuzz target (fuzz/regressions/snapshot/): a snapshot whose
/// booking is filed under another key made the invariant check itself panic (the
/// indexes are built from record ids, then looked up by key). It must be refused.
#[test]
fn snapshot_with_a_record_under_another_key_is_refused() {
    let mut f = Fixture::new();
    f.lock(ALICE, &[3, 1]);
    let mut state = f.ledger.state().clone();
    let (id, booking) = state.bookings.pop_first().expect("a booking");
    state.bookings.insert(BookingId(id.0 + 1000), booking);
    let bytes = crate::snapshot::encode(&crate::snapshot::SnapshotBody {
        marker: vec![],
        state,
        events: vec![],
        events_kept_from: 0,
        rules: None,
    });
    match crate::snapshot::decode(&bytes, &Limits::default()) {
        Err(crate::snapshot::SnapshotError::Inconsistent(why)) => {
            assert!(why.contains("filed under the key"), "{why}")
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a snapshot with a misfiled booking was accepted"),
    }
}

#[test]
fn text_refuses_controls_and_bidi_overrides_but_keeps_any_script() {
    let mut f = Fixture::new();
    let start = f.now + 20 * HOUR_MS;
    for bad in ["A\u{0}B", "evil\u{202E}gnp.exe", "x\u{2066}y", "tab\there"] {
        let rejection = f.rejected(publish_show(f.theater, 0, start, bad));
        assert!(rejection.is_invalid("title"), "{bad:?}: {rejection}");
    }
    // Right-to-left letters, emoji and combining marks are ordinary text.
    for (n, good) in ["שלום עולם", "مرحبا", "🎬🍿 Premiere", "Ame\u{301}lie"]
        .iter()
        .enumerate()
    {
        let at = start + n as u64 * 4 * HOUR_MS;
        f.ok(publish_show(f.theater, 0, at, good));
    }
}
#[test]
fn shows_page_by_id_whatever_their_status() {
    let mut f = Fixture::new();
    let start = f.now + 20 * HOUR_MS;
    for hour in 0..4 {
        f.ok(publish_show(
            f.theater,
            0,
            start + hour * 4 * HOUR_MS,
            "Jawan",
        ));
    }
    f.ok(CommandKind::CancelShow { show: f.show });
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..10 {
        let page = f
            .ledger
            .query(&Query::ShowsById { after, limit: 2 })
            .unwrap();
        let QueryResponse::ShowPage { items, next } = page else {
            panic!("{page:?}")
        };
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|view| view.show.id));
        match next {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    let all: Vec<ShowId> = f.ledger.state().shows.keys().copied().collect();
    assert_eq!(seen, all);
    assert_eq!(all.len(), 5);
    assert!(f
        .ledger
        .query(&Query::ShowsById {
            after: None,
            limit: 1_000
        })
        .is_err());
}

/// Issue #26, item 0: the per-user cap check once walked every booking the user ever had
/// for the show, so an account locking and releasing in a loop made each later lock (and
/// every replica's apply, and a snapshot install's invariant check) slower. It must
/// visit only what the user holds now.
#[test]
fn the_cap_check_visits_only_live_holds_whatever_the_history() {
    let mut f = Fixture::new();
    let show = f.show;
    // Without the fixture's invariant check after every step (itself linear in the
    // history).
    let step = |f: &mut Fixture, kind: CommandKind| {
        f.index += 1;
        let request = format!("req-{}", f.index);
        f.ledger
            .apply(f.index, &command(&request, f.now, kind))
            .outcome
    };
    // Released, expired and cancelled bookings: history that holds nothing.
    for n in 0..3_000u32 {
        let Outcome::Applied(Applied::SeatsLocked { lock, .. }) =
            step(&mut f, lock_kind(show, ALICE, &[n % 50], Some(10_000)))
        else {
            panic!("lock {n} refused")
        };
        match n % 3 {
            0 => {
                step(&mut f, CommandKind::ReleaseLock { lock, user: ALICE });
            }
            1 => {
                f.now += 10_001;
                step(&mut f, CommandKind::ExpireLocks { max_locks: 64 });
            }
            _ => {
                step(&mut f, confirm(lock, ALICE));
                let booking = BookingId::of_lock(lock);
                step(
                    &mut f,
                    CommandKind::CancelBooking {
                        booking,
                        user: ALICE,
                    },
                );
            }
        }
    }
    f.ledger.check_invariants().unwrap();
    let held = f.lock(ALICE, &[7, 8]);
    f.ok(confirm(held, ALICE));
    f.lock(ALICE, &[9]);
    let visited = f.ledger.bookings_visited_for_cap(ALICE, f.show);
    assert!(
        visited <= 2,
        "the cap check visits {visited} bookings for a user who holds 2 (3,000 ended ones \
        behind them)"
    );
    assert_eq!(f.ledger.seats_held(ALICE, f.show), 3);
}

/// Issue #26, item 6: the shard's rules come from the log, not from each replica's file.
#[test]
fn replicated_rules_replace_the_configured_ones_on_every_replica() {
    let mut f = Fixture::new();
    let strict = Limits {
        seats_per_user_per_show_max: 2,
        seats_per_lock_max: 2,
        ..Limits::default()
    };
    let before = f.ledger.digest();
    assert_eq!(f.ledger.rules(), None);
    assert_eq!(
        f.ok(CommandKind::SetLimits {
            limits: strict.clone()
        }),
        Applied::LimitsSet
    );
    assert_ne!(
        f.ledger.digest(),
        before,
        "the rules are part of the digest"
    );
    assert_eq!(f.ledger.rules(), Some(&strict));
    assert_eq!(f.ledger.limits().seats_per_user_per_show_max, 2);
    let refused = f.rejected(lock_kind(f.show, ALICE, &[1, 2, 3], None));
    assert!(
        matches!(refused, Rejection::LimitExceeded { max: 2, .. }),
        "{refused:?}"
    );
    let broken = Limits {
        seats_per_lock_max: 0,
        ..Limits::default()
    };
    let refused = f.rejected(CommandKind::SetLimits { limits: broken });
    assert!(
        matches!(refused, Rejection::InvalidInput { .. }),
        "{refused:?}"
    );
    assert_eq!(
        f.ledger.rules(),
        Some(&strict),
        "a refused change keeps the rules"
    );
}
