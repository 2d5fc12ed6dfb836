//! The ledger of one shard: its canonical state, the indexes derived from it, and the
//! deterministic `apply` that every replica runs on every command.
//!
//! Append-only format: `State` and `RequestRecord` are stored in RocksDB and snapshots
//! with the codec's positional encoding, and `State`'s bytes are what `digest` hashes. A
//! field added (even at the end), removed, reordered or retyped needs a new store format
//! version (`store::FORMAT_VERSION`) with a migration; `tests/golden.rs` checks the bytes.
//!
//! `apply` reads nothing but its inputs: time is the command's leader-stamped `at_ms`,
//! ids are derived from the log index, and every map is ordered. It never returns
//! `Err`: a command is either applied or rejected, and a rejection changes nothing
//! but the shard clock.

use crate::accounts::{RefreshToken, Role, User};
use crate::command::{Command, CommandKind};
use crate::coupons::{Coupon, CouponUse, NewCoupon};
use crate::event::Event;
use crate::ids::{BookingId, LockId, LogIndex, Millis, RequestId, ScreenIndex, SeatId, ShowId};
use crate::ids::{TheaterId, UserId};
use crate::limits::{LimitName, Limits};
use crate::model::{Booking, BookingStatus, Prices, Screen, SeatState, Show, ShowStatus, Theater};
use crate::outcome::{Applied, Outcome, Rejection};
use crate::payments::{GatewayReport, Payment, Rating};
use crate::requests::{RequestChanges, RequestTable};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The stored answer to a request id, returned again to a retry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Shard clock when the request was first applied; retention counts from here.
    pub at_ms: Millis,
    /// Hash of the command, so that a reused id with another body is told apart.
    pub fingerprint: [u8; 16],
    pub outcome: Outcome,
}

/// The canonical state of a shard: what is persisted, snapshotted and digested.
/// Everything else in `Ledger` is derived from it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The shard clock: the largest `at_ms` applied so far.
    pub clock: Millis,
    pub theaters: BTreeMap<TheaterId, Theater>,
    pub shows: BTreeMap<ShowId, Show>,
    /// Seat states per show, indexed by `SeatId`.
    pub seats: BTreeMap<ShowId, Vec<SeatState>>,
    pub bookings: BTreeMap<BookingId, Booking>,
    /// Idempotency records. Always empty in a `Ledger`'s state, which keeps them in its
    /// `RequestTable` (`requests.rs`; on disk under a store); filled in snapshot bodies
    /// and in [`Ledger::full_state`].
    pub requests: BTreeMap<RequestId, RequestRecord>,
    /// Accounts (`global` shard only).
    pub users: BTreeMap<UserId, User>,
    /// Refresh tokens by hash (`global` shard only).
    pub refresh_tokens: BTreeMap<String, RefreshToken>,
    /// The audit trail by entry id (`global` shard only; `audit.rs`).
    pub audit: BTreeMap<LogIndex, crate::audit::AuditEntry>,
    /// Support tickets (`global` shard only).
    pub tickets: BTreeMap<crate::support::TicketId, crate::support::Ticket>,
    /// Event-stream consumers' positions (`global` shard only).
    pub cursors: BTreeMap<crate::cursors::CursorKey, crate::cursors::ConsumerCursor>,
    /// The payment of each booking that has one (the booking saga's record).
    pub payments: BTreeMap<BookingId, Payment>,
    /// Ratings by the booking they rate.
    pub ratings: BTreeMap<BookingId, Rating>,
    /// Coupons by code (`global` shard only).
    pub coupons: BTreeMap<String, Coupon>,
    /// Coupon uses by `code/booking` (`global` shard only).
    pub coupon_uses: BTreeMap<String, CouponUse>,
    /// Referrals by referee (`global` shard only).
    pub referrals: BTreeMap<UserId, crate::referrals::Referral>,
    /// Users' notification channels (`global` shard only).
    pub channels: BTreeMap<UserId, crate::channels::Channels>,
}

/// Lookup structures rebuilt from `State` on load; never persisted.
#[derive(Clone, Debug, Default)]
pub(crate) struct Indexes {
    /// Pending locks by expiry, for the sweep.
    pub lock_expiry: BTreeSet<(Millis, LockId)>,
    /// Bookings per user, for the history page (newest = highest id last).
    pub by_user: BTreeSet<(UserId, BookingId)>,
    /// Bookings that hold seats (pending or confirmed) per user and show, for the
    /// per-user seat cap: an ended booking leaves it, so the cap check costs what the
    /// user holds now, not the user's history.
    pub holding: BTreeSet<(UserId, ShowId, BookingId)>,
    /// Published shows per screen by start time; they never overlap.
    pub screen_shows: BTreeSet<(TheaterId, ScreenIndex, Millis, ShowId)>,
    /// All shows per theater by start time.
    pub theater_shows: BTreeSet<(TheaterId, Millis, ShowId)>,
    /// Theaters per city.
    pub city_theaters: BTreeSet<(String, TheaterId)>,
    pub users_by_email: BTreeMap<String, UserId>,
    pub users_by_phone: BTreeMap<String, UserId>,
    /// Refresh tokens per family, to revoke a family at once.
    pub token_families: BTreeSet<(u64, String)>,
    /// Refresh tokens by expiry, to forget expired ones.
    pub token_expiry: BTreeSet<(Millis, String)>,
    /// Tickets per customer, for "my tickets" and the open-ticket cap.
    pub customer_tickets: BTreeSet<(UserId, crate::support::TicketId)>,
    /// Open payments and rating summaries (`payments`).
    pub payments: crate::payments::PaymentIndexes,
    /// Coupon uses still reserved (`coupons`), for the saga driver.
    pub reserved_coupon_uses: BTreeSet<String>,
    /// (referrer, referee) of every referral.
    pub referees: BTreeSet<(UserId, UserId)>,
}

/// Keys touched since the store last persisted, so that a batch writes only what
/// changed. `None` when the ledger runs without persistence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub clock: bool,
    /// The replicated rules changed.
    pub rules: bool,
    pub theaters: BTreeSet<TheaterId>,
    pub shows: BTreeSet<ShowId>,
    pub seats: BTreeSet<(ShowId, SeatId)>,
    pub bookings: BTreeSet<BookingId>,
    pub requests: RequestChanges,
    pub users: BTreeSet<UserId>,
    pub refresh_tokens: BTreeSet<String>,
    pub audit: BTreeSet<LogIndex>,
    pub tickets: BTreeSet<crate::support::TicketId>,
    pub cursors: BTreeSet<crate::cursors::CursorKey>,
    pub payments: BTreeSet<BookingId>,
    pub ratings: BTreeSet<BookingId>,
    pub coupons: BTreeSet<String>,
    pub coupon_uses: BTreeSet<String>,
    pub referrals: BTreeSet<UserId>,
    pub channels: BTreeSet<UserId>,
}

fn state_hasher(state: &State, rules: Option<&Limits>) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&crate::codec::encode(state));
    if let Some(rules) = rules {
        hasher.update(b"rules");
        hasher.update(&crate::codec::encode(rules));
    }
    hasher
}

/// `Ledger::full_digest` of a state that holds its request records.
pub(crate) fn full_digest(state: &State, rules: Option<&Limits>) -> [u8; 32] {
    *state_hasher(state, rules).finalize().as_bytes()
}

/// What one applied command produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyResult {
    pub outcome: Outcome,
    pub events: Vec<Event>,
}

/// A shard's seat ledger.
#[derive(Clone, Debug)]
pub struct Ledger {
    /// The rules applied: the replicated ones (`rules`) once set, else the
    /// configuration's.
    pub(crate) limits: Limits,
    /// The rules set through the log, stored and snapshotted beside `State`.
    pub(crate) rules: Option<Limits>,
    pub(crate) state: State,
    /// The idempotency records (`requests.rs`).
    pub(crate) requests: RequestTable,
    pub(crate) indexes: Indexes,
    pub(crate) changes: Option<Changes>,
}

impl Ledger {
    /// An empty ledger under `limits` until the log sets the shard's rules.
    pub fn new(limits: Limits) -> Ledger {
        Ledger {
            limits,
            rules: None,
            state: State::default(),
            requests: RequestTable::default(),
            indexes: Indexes::default(),
            changes: None,
        }
    }

    /// A ledger over existing state, with its indexes rebuilt; the state's request
    /// records move into the ledger's (resident) request table.
    pub fn from_state(limits: Limits, mut state: State) -> Ledger {
        let requests = RequestTable::resident(std::mem::take(&mut state.requests));
        let mut ledger = Ledger {
            limits,
            rules: None,
            state,
            requests,
            indexes: Indexes::default(),
            changes: None,
        };
        ledger.rebuild_indexes();
        ledger
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn clock(&self) -> Millis {
        self.state.clock
    }

    /// The idempotency table.
    pub fn requests(&self) -> &RequestTable {
        &self.requests
    }

    pub(crate) fn requests_mut(&mut self) -> &mut RequestTable {
        &mut self.requests
    }

    /// The state with its request records, as snapshots carry it. Only a ledger whose
    /// records are in memory has them all; under a store, ask the store
    /// (`LedgerStore::full_state`).
    pub fn full_state(&self) -> State {
        let mut state = self.state.clone();
        state.requests = self
            .requests
            .resident_records()
            .map(|(id, record)| (id.clone(), record.clone()))
            .collect();
        state
    }

    /// The earliest expiry among pending locks, live or not; the sweeper proposes
    /// `ExpireLocks` once the leader's clock passes it.
    pub fn next_lock_expiry(&self) -> Option<Millis> {
        self.indexes
            .lock_expiry
            .first()
            .map(|(expires_at, _)| *expires_at)
    }

    /// Starts recording touched keys for a persistence layer.
    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_with(Changes::default);
    }

    /// Hands over the keys touched since the last call.
    pub fn take_changes(&mut self) -> Changes {
        self.changes
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Hash of the canonical state, for comparing replicas.
    /// Replicated rules count once set (a ledger that never had them hashes as before).
    /// Live request records count through the table's hash (the sum of their hashes,
    /// kept per bucket), so the digest costs the same whether they are in memory or on
    /// disk.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = state_hasher(&self.state, self.rules.as_ref());
        if !self.requests.is_empty() {
            hasher.update(b"requests");
            for lane in self.requests.hash() {
                hasher.update(&lane.to_le_bytes());
            }
        }
        *hasher.finalize().as_bytes()
    }

    /// The digest as releases before store format 3 computed it: the encoding of the
    /// whole state, request records included. Costs the whole table: for fixtures and
    /// audits of old releases' images, not for routine comparisons. Only a ledger
    /// whose records are in memory has them all (`LedgerStore::full_digest` otherwise).
    pub fn full_digest(&self) -> [u8; 32] {
        full_digest(&self.full_state(), self.rules.as_ref())
    }

    fn rebuild_indexes(&mut self) {
        let mut indexes = Indexes::default();
        for theater in self.state.theaters.values() {
            indexes
                .city_theaters
                .insert((theater.city.clone(), theater.id));
        }
        for show in self.state.shows.values() {
            indexes
                .theater_shows
                .insert((show.theater, show.start_ms, show.id));
            if show.status == ShowStatus::Published {
                indexes
                    .screen_shows
                    .insert((show.theater, show.screen, show.start_ms, show.id));
            }
        }
        for booking in self.state.bookings.values() {
            indexes.by_user.insert((booking.user, booking.id));
            if booking.status.holds_seats() {
                indexes
                    .holding
                    .insert((booking.user, booking.show, booking.id));
            }
            if booking.status == BookingStatus::PendingPayment {
                indexes
                    .lock_expiry
                    .insert((booking.expires_at, booking.lock_id()));
            }
        }
        for user in self.state.users.values() {
            indexes.users_by_email.insert(user.email.clone(), user.id);
            indexes.users_by_phone.insert(user.phone.clone(), user.id);
        }
        for (hash, token) in &self.state.refresh_tokens {
            indexes.token_families.insert((token.family, hash.clone()));
            indexes
                .token_expiry
                .insert((token.expires_at, hash.clone()));
        }
        for ticket in self.state.tickets.values() {
            indexes
                .customer_tickets
                .insert((ticket.customer, ticket.id));
        }
        indexes.payments = crate::payments::PaymentIndexes::rebuild(&self.state);
        indexes.reserved_coupon_uses = self
            .state
            .coupon_uses
            .iter()
            .filter(|(_, u)| u.status == crate::coupons::CouponUseStatus::Reserved)
            .map(|(key, _)| key.clone())
            .collect();
        indexes.referees = self
            .state
            .referrals
            .values()
            .map(|r| (r.referrer, r.referee))
            .collect();
        self.indexes = indexes;
    }

    /// Applies the command at log position `index`.
    pub fn apply(&mut self, index: LogIndex, command: &Command) -> ApplyResult {
        self.enter(command);
        let fingerprint = fingerprint(&command.kind);
        if let Some(request_id) = &command.request_id {
            if let Err(rejection) = self.check_text("request_id", &request_id.0, false) {
                return ApplyResult {
                    outcome: Outcome::Rejected(rejection),
                    events: vec![],
                };
            }
            #[cfg(feature = "planted-bugs")]
            let skip = crate::planted::is_enabled(crate::planted::PlantedBug::SkipIdempotency);
            #[cfg(not(feature = "planted-bugs"))]
            let skip = false;
            if let Some(record) = self.requests.get(request_id).filter(|_| !skip) {
                let outcome = if record.fingerprint == fingerprint {
                    record.outcome.clone()
                } else {
                    Outcome::Rejected(Rejection::RequestIdReused)
                };
                return ApplyResult {
                    outcome,
                    events: vec![],
                };
            }
            // Full of keys younger than the window: refuse rather than forget one.
            if let Err(retry_after_ms) = self.requests.room(self.state.clock, &self.limits) {
                return ApplyResult {
                    outcome: Outcome::Rejected(Rejection::RequestTableFull { retry_after_ms }),
                    events: vec![],
                };
            }
        }
        let mut events = Vec::new();
        let outcome = match self.execute(index, &command.kind, &mut events) {
            Ok(applied) => Outcome::Applied(applied),
            Err(rejection) => {
                debug_assert!(events.is_empty(), "a rejection must not emit events");
                Outcome::Rejected(rejection)
            }
        };
        if let Some(request_id) = &command.request_id {
            self.remember(request_id.clone(), fingerprint, outcome.clone());
        }
        ApplyResult { outcome, events }
    }

    /// Records the command at `index` as failed (`Rejection::ApplyFailed`) without
    /// executing it: what `apply` does up to the execution (the clock, the request id's
    /// record), on a ledger that does not hold any of the failed attempt's changes
    /// (`LedgerStore::apply_batch` reloads before calling this).
    pub fn apply_failed(&mut self, command: &Command) -> ApplyResult {
        self.enter(command);
        let outcome = Outcome::Rejected(Rejection::ApplyFailed);
        if let Some(request_id) = &command.request_id {
            let known = self.requests.get(request_id).is_some();
            if !known && self.requests.room(self.state.clock, &self.limits).is_ok() {
                let fingerprint = fingerprint(&command.kind);
                self.remember(request_id.clone(), fingerprint, outcome.clone());
            }
        }
        ApplyResult {
            outcome,
            events: vec![],
        }
    }

    /// What every command does first, applied or not: the shard clock moves to its
    /// stamp (never back), and idempotency records past retention are forgotten.
    fn enter(&mut self, command: &Command) {
        if command.at_ms > self.state.clock {
            self.state.clock = command.at_ms;
            self.touch(|c| c.clock = true);
        }
        self.forget_old_requests();
    }

    fn execute(
        &mut self,
        index: LogIndex,
        kind: &CommandKind,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        match kind {
            CommandKind::CreateTheater {
                city,
                name,
                address,
                lat_micro_deg,
                lon_micro_deg,
                owner,
                screens,
            } => {
                let theater = Theater {
                    id: TheaterId(index),
                    city: city.clone(),
                    name: name.clone(),
                    address: address.clone(),
                    lat_micro_deg: *lat_micro_deg,
                    lon_micro_deg: *lon_micro_deg,
                    owner: *owner,
                    screens: screens.clone(),
                    created_at: self.state.clock,
                };
                let applied = self.create_theater(theater, events);
                #[cfg(test)]
                if name == crate::store::tests::PANIC_AFTER_A_CHANGE {
                    panic!("a defect planted by a test, after the theater was stored");
                }
                applied
            }
            CommandKind::PublishShow {
                theater,
                screen,
                title,
                genre,
                start_ms,
                end_ms,
                prices,
                currency,
            } => {
                let show = Show {
                    id: ShowId(index),
                    theater: *theater,
                    screen: *screen,
                    title: title.clone(),
                    genre: genre.clone(),
                    start_ms: *start_ms,
                    end_ms: *end_ms,
                    prices: *prices,
                    currency: currency.clone(),
                    status: ShowStatus::Published,
                    published_at: self.state.clock,
                };
                self.publish_show(show, events)
            }
            CommandKind::CancelShow { show } => self.cancel_show(*show, events),
            CommandKind::LockSeats {
                show,
                user,
                seats,
                ttl_ms,
            } => self.lock_seats(LockId(index), *show, *user, seats, *ttl_ms, events),
            CommandKind::ExtendLock { lock, user, ttl_ms } => {
                self.extend_lock(*lock, *user, *ttl_ms, events)
            }
            CommandKind::ReleaseLock { lock, user } => self.release_lock(*lock, *user, events),
            CommandKind::ConfirmBooking {
                lock,
                user,
                payment_ref,
            } => self.confirm_booking(*lock, *user, payment_ref, events),
            CommandKind::ExpireLocks { max_locks } => self.expire_locks(*max_locks, events),
            CommandKind::CancelBooking { booking, user } => {
                self.cancel_booking(*booking, *user, events)
            }
            CommandKind::RegisterUser {
                email,
                phone,
                name,
                password_hash,
                role,
            } => {
                let user = User {
                    id: UserId(index),
                    email: email.to_lowercase(),
                    phone: phone.clone(),
                    name: name.clone(),
                    password_hash: password_hash.clone(),
                    role: *role,
                    created_at: self.state.clock,
                };
                self.register_user(user, events)
            }
            CommandKind::SetRole { user, role } => self.set_role(*user, *role),
            CommandKind::IssueRefreshToken {
                user,
                token_hash,
                expires_at,
            } => self.issue_refresh_token(index, *user, token_hash, *expires_at),
            CommandKind::RotateRefreshToken {
                old_hash,
                new_hash,
                expires_at,
            } => self.rotate_refresh_token(old_hash, new_hash, *expires_at),
            CommandKind::RecordAudit {
                actor,
                action,
                target,
                detail,
            } => self.record_audit(index, actor, action, target, detail),
            CommandKind::OpenTicket {
                customer,
                booking,
                subject,
                body,
            } => self.open_ticket(
                crate::support::TicketId(index),
                *customer,
                booking,
                subject,
                body,
                events,
            ),
            CommandKind::PostTicketMessage {
                ticket,
                actor,
                body,
            } => self.post_ticket_message(*ticket, *actor, body, events),
            CommandKind::SetTicketStatus {
                ticket,
                actor,
                status,
            } => self.set_ticket_status(*ticket, *actor, *status, events),
            CommandKind::AdvanceCursor {
                consumer,
                stream,
                index,
                seq,
                replay_from,
            } => self.advance_cursor(
                consumer,
                stream,
                crate::cursors::ConsumerCursor {
                    index: *index,
                    seq: *seq,
                    replay_from: *replay_from,
                    updated_at: 0,
                },
            ),
            CommandKind::StartPayment {
                booking,
                user,
                method,
                discount_minor,
                coupon,
            } => self.start_payment(
                *booking,
                *user,
                method,
                *discount_minor,
                coupon.as_deref(),
                events,
            ),
            CommandKind::RecordGatewayState {
                booking,
                gateway_ref,
                payment_url,
                status,
                version,
                amount_minor,
                reason,
            } => self.record_gateway_state(
                GatewayReport {
                    booking: *booking,
                    gateway_ref,
                    payment_url,
                    status: *status,
                    version: *version,
                    amount_minor: *amount_minor,
                    reason: reason.as_deref(),
                },
                events,
            ),
            CommandKind::RateBooking {
                booking,
                user,
                stars,
                message,
            } => self.rate_booking(*booking, *user, *stars, message, events),
            CommandKind::CreateCoupon {
                code,
                percent,
                max_discount_minor,
                valid_from,
                valid_until,
                max_uses,
            } => self.create_coupon(NewCoupon {
                code,
                percent: *percent,
                max_discount_minor: *max_discount_minor,
                valid_from: *valid_from,
                valid_until: *valid_until,
                max_uses: *max_uses,
            }),
            CommandKind::ReserveCoupon {
                code,
                booking,
                user,
                price_minor,
            } => self.reserve_coupon(code, booking, *user, *price_minor),
            CommandKind::SettleCouponUse {
                code,
                booking,
                confirmed,
            } => self.settle_coupon_use(code, booking, *confirmed),
            CommandKind::RegisterReferral { referee, code } => {
                self.register_referral(*referee, code)
            }
            CommandKind::RewardReferral { referee, booking } => {
                self.reward_referral(*referee, booking)
            }
            CommandKind::SetNotificationChannels {
                user,
                webhook_url,
                webhook_secret,
                email,
            } => self.set_channels(
                *user,
                webhook_url.as_deref(),
                webhook_secret.as_deref(),
                *email,
            ),
            CommandKind::SetLimits { limits } => self.set_limits(limits),
        }
    }

    /// Makes `limits` the shard's rules on every replica.
    fn set_limits(&mut self, limits: &Limits) -> Result<Applied, Rejection> {
        if let Err(invalid) = limits.validate() {
            return Err(Rejection::InvalidInput {
                field: invalid.field.into(),
                reason: invalid.problem.into(),
            });
        }
        self.limits = limits.clone();
        self.rules = Some(limits.clone());
        self.touch(|c| c.rules = true);
        Ok(Applied::LimitsSet)
    }

    /// The rules replicated through the log (`CommandKind::SetLimits`), if any were
    /// set; until then every replica applies its own configuration's.
    pub fn rules(&self) -> Option<&Limits> {
        self.rules.as_ref()
    }

    /// Adopts replicated rules read back from storage or a snapshot.
    pub(crate) fn adopt_rules(&mut self, rules: Option<Limits>) {
        if let Some(rules) = &rules {
            self.limits = rules.clone();
        }
        self.rules = rules;
    }

    // ----- catalog -------------------------------------------------------------------

    fn create_theater(
        &mut self,
        theater: Theater,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        self.check_city(&theater.city)?;
        self.check_text("name", &theater.name, false)?;
        self.check_text("address", &theater.address, true)?;
        if !(-90_000_000..=90_000_000).contains(&theater.lat_micro_deg) {
            return Err(invalid("lat", "latitude must be within -90..90 degrees"));
        }
        if !(-180_000_000..=180_000_000).contains(&theater.lon_micro_deg) {
            return Err(invalid(
                "long",
                "longitude must be within -180..180 degrees",
            ));
        }
        if theater.screens.is_empty() {
            return Err(invalid("screens", "a theater needs at least one screen"));
        }
        self.check_limit(
            LimitName::ScreensPerTheater,
            self.limits.screens_per_theater_max.into(),
            theater.screens.len() as u64,
        )?;
        for screen in &theater.screens {
            self.check_screen(screen)?;
        }
        let id = theater.id;
        events.push(Event::TheaterCreated {
            theater: id,
            city: theater.city.clone(),
        });
        self.indexes
            .city_theaters
            .insert((theater.city.clone(), id));
        self.state.theaters.insert(id, theater);
        self.touch(|c| {
            c.theaters.insert(id);
        });
        Ok(Applied::TheaterCreated { theater: id })
    }

    fn check_screen(&self, screen: &Screen) -> Result<(), Rejection> {
        self.check_text("screen.name", &screen.name, false)?;
        if screen.rows.is_empty() {
            return Err(invalid("screen.rows", "a screen needs at least one row"));
        }
        self.check_limit(
            LimitName::RowsPerScreen,
            self.limits.rows_per_screen_max.into(),
            screen.rows.len() as u64,
        )?;
        let mut labels = BTreeSet::new();
        for row in &screen.rows {
            self.check_text("row.label", &row.label, false)?;
            if row.label.len() > 8 {
                return Err(invalid("row.label", "a row label has at most 8 bytes"));
            }
            if !labels.insert(row.label.as_str()) {
                return Err(invalid(
                    "row.label",
                    "row labels must be unique within a screen",
                ));
            }
            if row.seats == 0 {
                return Err(invalid("row.seats", "a row needs at least one seat"));
            }
        }
        self.check_limit(
            LimitName::SeatsPerScreen,
            self.limits.seats_per_screen_max.into(),
            screen.seat_count().into(),
        )
    }

    fn publish_show(&mut self, show: Show, events: &mut Vec<Event>) -> Result<Applied, Rejection> {
        let theater = self
            .state
            .theaters
            .get(&show.theater)
            .ok_or(Rejection::UnknownTheater {
                theater: show.theater,
            })?;
        let screen =
            theater
                .screens
                .get(usize::from(show.screen.0))
                .ok_or(Rejection::UnknownScreen {
                    theater: show.theater,
                    screen: show.screen.0,
                })?;
        let seat_count = screen.seat_count() as usize;
        self.check_text("title", &show.title, false)?;
        self.check_text("genre", &show.genre, true)?;
        check_currency(&show.currency)?;
        check_prices(&show.prices)?;
        if show.start_ms <= self.state.clock {
            return Err(invalid("start_time", "a show must start in the future"));
        }
        if show.end_ms <= show.start_ms {
            return Err(invalid("end_time", "a show must end after it starts"));
        }
        self.check_limit(
            LimitName::ShowDuration,
            self.limits.show_duration_ms_max,
            show.end_ms - show.start_ms,
        )?;
        if let Some(conflicting_show) = self.overlapping_show(&show) {
            return Err(Rejection::ScreenBusy { conflicting_show });
        }
        let id = show.id;
        events.push(Event::ShowPublished {
            show: id,
            theater: show.theater,
            start_ms: show.start_ms,
        });
        self.indexes
            .screen_shows
            .insert((show.theater, show.screen, show.start_ms, id));
        self.indexes
            .theater_shows
            .insert((show.theater, show.start_ms, id));
        self.state.shows.insert(id, show);
        self.state
            .seats
            .insert(id, vec![SeatState::Available; seat_count]);
        self.touch(|c| {
            c.shows.insert(id);
        });
        Ok(Applied::ShowPublished { show: id })
    }

    /// Published shows on one screen never overlap, so they are ordered by end as well
    /// as by start: only the last show starting before `show` ends can overlap it.
    fn overlapping_show(&self, show: &Show) -> Option<ShowId> {
        let low = (show.theater, show.screen, 0, ShowId(0));
        let high = (show.theater, show.screen, show.end_ms, ShowId(0));
        let (_, _, _, candidate) = *self.indexes.screen_shows.range(low..high).next_back()?;
        let other = &self.state.shows[&candidate];
        (other.end_ms > show.start_ms).then_some(candidate)
    }

    fn cancel_show(
        &mut self,
        show_id: ShowId,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        let show = self.show(show_id)?;
        if show.status == ShowStatus::Cancelled {
            return Err(Rejection::ShowCancelled { show: show_id });
        }
        if self.state.clock >= show.start_ms {
            return Err(Rejection::ShowStarted {
                show: show_id,
                start_ms: show.start_ms,
            });
        }
        let key = (show.theater, show.screen, show.start_ms, show_id);
        let holders: BTreeSet<BookingId> = self.state.seats[&show_id]
            .iter()
            .filter_map(|seat| match seat {
                SeatState::Available => None,
                SeatState::Locked(lock) => Some(BookingId::of_lock(*lock)),
                SeatState::Booked(booking) => Some(*booking),
            })
            .collect();
        let (mut locks_released, mut bookings_cancelled) = (0, 0);
        for booking in holders {
            if self.state.bookings[&booking].status == BookingStatus::Confirmed {
                self.end_booking(booking, BookingStatus::Cancelled, true, events);
                bookings_cancelled += 1;
            } else {
                self.end_booking(booking, BookingStatus::Released, true, events);
                locks_released += 1;
            }
        }
        self.indexes.screen_shows.remove(&key);
        if let Some(show) = self.state.shows.get_mut(&show_id) {
            show.status = ShowStatus::Cancelled;
        }
        self.touch(|c| {
            c.shows.insert(show_id);
        });
        events.push(Event::ShowCancelled { show: show_id });
        Ok(Applied::ShowCancelled {
            show: show_id,
            locks_released,
            bookings_cancelled,
        })
    }

    // ----- seats -----------------------------------------------------------------------

    fn lock_seats(
        &mut self,
        lock: LockId,
        show_id: ShowId,
        user: UserId,
        seats: &[SeatId],
        ttl_ms: Option<u64>,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        let clock = self.state.clock;
        let show = self.show(show_id)?;
        if show.status == ShowStatus::Cancelled {
            return Err(Rejection::ShowCancelled { show: show_id });
        }
        if clock >= show.start_ms {
            return Err(Rejection::ShowStarted {
                show: show_id,
                start_ms: show.start_ms,
            });
        }
        if seats.is_empty() {
            return Err(invalid("seats", "name at least one seat"));
        }
        self.check_limit(
            LimitName::SeatsPerLock,
            self.limits.seats_per_lock_max.into(),
            seats.len() as u64,
        )?;
        let ttl_ms = ttl_ms.unwrap_or(self.limits.lock_ttl_ms_default);
        self.check_ttl(ttl_ms)?;
        let mut sorted = seats.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != seats.len() {
            return Err(invalid("seats", "a seat is named twice"));
        }
        let states = &self.state.seats[&show_id];
        let unknown: Vec<SeatId> = sorted
            .iter()
            .copied()
            .filter(|seat| seat.0 as usize >= states.len())
            .collect();
        if !unknown.is_empty() {
            return Err(Rejection::UnknownSeats { seats: unknown });
        }
        let held = self.seats_held(user, show_id);
        let cap = u64::from(self.limits.seats_per_user_per_show_max);
        if held + sorted.len() as u64 > cap {
            return Err(Rejection::LimitExceeded {
                limit: LimitName::SeatsPerUserPerShow,
                max: cap,
                requested: held + sorted.len() as u64,
            });
        }
        let mut taken = Vec::new();
        let mut stale_locks = BTreeSet::new();
        for seat in &sorted {
            match states[seat.0 as usize] {
                SeatState::Available => {}
                SeatState::Booked(_) => taken.push(*seat),
                SeatState::Locked(other) => {
                    if self.state.bookings[&BookingId::of_lock(other)].is_live_lock(clock) {
                        taken.push(*seat);
                    } else {
                        stale_locks.insert(other);
                    }
                }
            }
        }
        if !taken.is_empty() {
            return Err(Rejection::SeatsTaken { seats: taken });
        }
        // Nothing can fail from here on.
        for stale in stale_locks {
            self.end_booking(
                BookingId::of_lock(stale),
                BookingStatus::Expired,
                true,
                events,
            );
        }
        let show = &self.state.shows[&show_id];
        let screen = &self.state.theaters[&show.theater].screens[usize::from(show.screen.0)];
        let total_price_minor = price_of(screen, &show.prices, &sorted);
        let booking = Booking {
            id: BookingId::of_lock(lock),
            show: show_id,
            user,
            seats: sorted.clone(),
            total_price_minor,
            currency: show.currency.clone(),
            status: BookingStatus::PendingPayment,
            created_at: clock,
            expires_at: clock + ttl_ms,
            payment_ref: None,
            refund_due_minor: 0,
            updated_at: clock,
        };
        let expires_at = booking.expires_at;
        self.set_seats(show_id, &sorted, SeatState::Locked(lock));
        self.indexes.lock_expiry.insert((expires_at, lock));
        self.indexes.by_user.insert((user, booking.id));
        self.put_booking(booking);
        events.push(Event::SeatsLocked {
            show: show_id,
            lock,
            user,
            seats: sorted.clone(),
            expires_at,
        });
        Ok(Applied::SeatsLocked {
            lock,
            booking: BookingId::of_lock(lock),
            seats: sorted,
            expires_at,
            total_price_minor,
        })
    }

    fn extend_lock(
        &mut self,
        lock: LockId,
        user: UserId,
        ttl_ms: u64,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        self.check_ttl(ttl_ms)?;
        let booking = self.live_lock(lock, user)?;
        let life_end = booking.created_at + self.limits.lock_life_ms_max;
        let wanted = self.state.clock + ttl_ms;
        let expires_at = wanted.min(life_end);
        if expires_at <= booking.expires_at {
            return Err(Rejection::LimitExceeded {
                limit: LimitName::LockLife,
                max: self.limits.lock_life_ms_max,
                requested: wanted - booking.created_at,
            });
        }
        let (show, old_expiry) = (booking.show, booking.expires_at);
        self.indexes.lock_expiry.remove(&(old_expiry, lock));
        self.indexes.lock_expiry.insert((expires_at, lock));
        let clock = self.state.clock;
        self.update_booking(BookingId::of_lock(lock), |b| {
            b.expires_at = expires_at;
            b.updated_at = clock;
        });
        events.push(Event::LockExtended {
            show,
            lock,
            expires_at,
        });
        Ok(Applied::LockExtended { lock, expires_at })
    }

    fn release_lock(
        &mut self,
        lock: LockId,
        user: UserId,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        self.live_lock(lock, user)?;
        self.end_booking(
            BookingId::of_lock(lock),
            BookingStatus::Released,
            true,
            events,
        );
        Ok(Applied::LockReleased { lock })
    }

    fn confirm_booking(
        &mut self,
        lock: LockId,
        user: UserId,
        payment_ref: &str,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        self.check_text("payment_ref", payment_ref, false)?;
        if let Some(payment) = self.state.payments.get(&BookingId::of_lock(lock)) {
            // The saga owns this booking: only its gateway reports may confirm it.
            return Err(Rejection::PaymentExists {
                booking: BookingId::of_lock(lock),
                status: payment.status,
            });
        }
        let booking = match self.live_lock(lock, user) {
            #[cfg(feature = "planted-bugs")]
            Err(Rejection::LockExpired { .. })
                if crate::planted::is_enabled(crate::planted::PlantedBug::ConfirmIgnoresExpiry)
                    && self.seats_held_by(lock) =>
            {
                &self.state.bookings[&BookingId::of_lock(lock)]
            }
            result => result?,
        };
        let (id, show, seats) = (booking.id, booking.show, booking.seats.clone());
        let total_price_minor = booking.total_price_minor;
        self.indexes.lock_expiry.remove(&(booking.expires_at, lock));
        self.set_seats(show, &seats, SeatState::Booked(id));
        let clock = self.state.clock;
        self.update_booking(id, |b| {
            b.status = BookingStatus::Confirmed;
            b.payment_ref = Some(payment_ref.to_owned());
            b.updated_at = clock;
        });
        events.push(Event::BookingConfirmed {
            show,
            booking: id,
            user,
            seats,
            total_price_minor,
        });
        Ok(Applied::BookingConfirmed {
            booking: id,
            total_price_minor,
        })
    }

    fn expire_locks(
        &mut self,
        max_locks: u32,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        if max_locks == 0 {
            return Err(invalid("max_locks", "expire at least one lock"));
        }
        self.check_limit(
            LimitName::ExpireBatch,
            self.limits.expire_batch_max.into(),
            max_locks.into(),
        )?;
        let clock = self.state.clock;
        let due: Vec<LockId> = self
            .indexes
            .lock_expiry
            .iter()
            .take_while(|(expires_at, _)| *expires_at <= clock)
            .take(max_locks as usize)
            .map(|(_, lock)| *lock)
            .collect();
        for lock in &due {
            self.end_booking(
                BookingId::of_lock(*lock),
                BookingStatus::Expired,
                true,
                events,
            );
        }
        Ok(Applied::LocksExpired { locks: due })
    }

    /// `user`'s booking `booking_id`: unknown ids and other users' bookings are refused.
    pub(crate) fn own_booking(
        &self,
        booking_id: BookingId,
        user: UserId,
    ) -> Result<&Booking, Rejection> {
        let booking = self
            .state
            .bookings
            .get(&booking_id)
            .ok_or(Rejection::UnknownBooking {
                booking: booking_id,
            })?;
        if booking.user != user {
            return Err(Rejection::NotOwner);
        }
        Ok(booking)
    }

    fn cancel_booking(
        &mut self,
        booking_id: BookingId,
        user: UserId,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        let booking = self.own_booking(booking_id, user)?;
        let show = &self.state.shows[&booking.show];
        let cutoff_ms = self.limits.cancel_refund_cutoff_ms;
        let refund_full =
            crate::payments::refund_in_full(self.state.clock, show.start_ms, cutoff_ms);
        match booking.status {
            BookingStatus::Confirmed => {
                if self.state.clock >= show.start_ms {
                    return Err(Rejection::ShowStarted {
                        show: show.id,
                        start_ms: show.start_ms,
                    });
                }
            }
            BookingStatus::PendingPayment => {
                self.live_lock(booking_id.lock(), user)?;
            }
            status => {
                return Err(Rejection::WrongBookingStatus {
                    booking: booking_id,
                    status,
                })
            }
        }
        let refund_due_minor =
            self.end_booking(booking_id, BookingStatus::Cancelled, refund_full, events);
        Ok(Applied::BookingCancelled {
            booking: booking_id,
            refund_due_minor,
        })
    }

    // ----- accounts (global shard) -------------------------------------------------------

    fn register_user(&mut self, user: User, events: &mut Vec<Event>) -> Result<Applied, Rejection> {
        let well_formed_email = user.email.len() >= 3
            && user.email.contains('@')
            && !user.email.starts_with('@')
            && !user.email.ends_with('@');
        if !well_formed_email {
            return Err(invalid("email", "an address like name@example.com"));
        }
        self.check_text("email", &user.email, false)?;
        let phone_digits = user.phone.bytes().filter(u8::is_ascii_digit).count();
        let phone_chars = user
            .phone
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'+' || b == b' ');
        if !(6..=20).contains(&phone_digits) || !phone_chars {
            return Err(invalid("phone", "6-20 digits, optionally with a leading +"));
        }
        self.check_text("name", &user.name, false)?;
        self.check_text("password_hash", &user.password_hash, false)?;
        if self.indexes.users_by_email.contains_key(&user.email) {
            return Err(Rejection::EmailTaken);
        }
        if self.indexes.users_by_phone.contains_key(&user.phone) {
            return Err(Rejection::PhoneTaken);
        }
        let id = user.id;
        self.indexes.users_by_email.insert(user.email.clone(), id);
        self.indexes.users_by_phone.insert(user.phone.clone(), id);
        self.state.users.insert(id, user);
        self.touch(|c| {
            c.users.insert(id);
        });
        events.push(Event::UserRegistered { user: id });
        Ok(Applied::UserRegistered { user: id })
    }

    fn set_role(&mut self, user: UserId, role: Role) -> Result<Applied, Rejection> {
        let account = self
            .state
            .users
            .get_mut(&user)
            .ok_or(Rejection::UnknownUser { user })?;
        account.role = role;
        self.touch(|c| {
            c.users.insert(user);
        });
        Ok(Applied::RoleSet { user, role })
    }

    fn check_token_hash(&self, hash: &str) -> Result<(), Rejection> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                "token_hash",
                "64 hexadecimal digits (a BLAKE3 hash)",
            ));
        }
        Ok(())
    }

    fn issue_refresh_token(
        &mut self,
        family: u64,
        user: UserId,
        hash: &str,
        expires_at: Millis,
    ) -> Result<Applied, Rejection> {
        self.check_token_hash(hash)?;
        if !self.state.users.contains_key(&user) {
            return Err(Rejection::UnknownUser { user });
        }
        if expires_at <= self.state.clock || self.state.refresh_tokens.contains_key(hash) {
            return Err(invalid("token", "a fresh token that expires in the future"));
        }
        self.forget_expired_tokens();
        self.put_token(
            hash,
            RefreshToken {
                user,
                family,
                expires_at,
                used: false,
                revoked: false,
            },
        );
        Ok(Applied::RefreshTokenIssued { user, family })
    }

    fn rotate_refresh_token(
        &mut self,
        old_hash: &str,
        new_hash: &str,
        expires_at: Millis,
    ) -> Result<Applied, Rejection> {
        self.check_token_hash(old_hash)?;
        self.check_token_hash(new_hash)?;
        let old = self
            .state
            .refresh_tokens
            .get(old_hash)
            .ok_or(Rejection::RefreshTokenInvalid)?;
        if old.revoked || old.expires_at <= self.state.clock {
            return Err(Rejection::RefreshTokenInvalid);
        }
        let (user, family) = (old.user, old.family);
        if old.used {
            // Reuse of a rotated token: someone else holds this family. Revoke it all.
            let members: Vec<String> = self
                .indexes
                .token_families
                .range((family, String::new())..)
                .take_while(|(f, _)| *f == family)
                .map(|(_, hash)| hash.clone())
                .collect();
            for hash in members {
                if let Some(token) = self.state.refresh_tokens.get_mut(&hash) {
                    token.revoked = true;
                }
                self.touch(|c| {
                    c.refresh_tokens.insert(hash);
                });
            }
            return Ok(Applied::RefreshFamilyRevoked { user, family });
        }
        if expires_at <= self.state.clock || self.state.refresh_tokens.contains_key(new_hash) {
            return Err(invalid("token", "a fresh token that expires in the future"));
        }
        if let Some(token) = self.state.refresh_tokens.get_mut(old_hash) {
            token.used = true;
        }
        self.touch(|c| {
            c.refresh_tokens.insert(old_hash.to_owned());
        });
        self.forget_expired_tokens();
        self.put_token(
            new_hash,
            RefreshToken {
                user,
                family,
                expires_at,
                used: false,
                revoked: false,
            },
        );
        Ok(Applied::RefreshTokenRotated { user, family })
    }

    fn put_token(&mut self, hash: &str, token: RefreshToken) {
        self.indexes
            .token_families
            .insert((token.family, hash.to_owned()));
        self.indexes
            .token_expiry
            .insert((token.expires_at, hash.to_owned()));
        self.state.refresh_tokens.insert(hash.to_owned(), token);
        self.touch(|c| {
            c.refresh_tokens.insert(hash.to_owned());
        });
    }

    /// Forgets a bounded number of expired refresh tokens per call, so the table stays
    /// bounded by the logins of one token lifetime.
    fn forget_expired_tokens(&mut self) {
        const PER_CALL: usize = 64;
        let clock = self.state.clock;
        for _ in 0..PER_CALL {
            let Some((expires_at, hash)) = self.indexes.token_expiry.first().cloned() else {
                break;
            };
            if expires_at > clock {
                break;
            }
            self.indexes.token_expiry.pop_first();
            if let Some(token) = self.state.refresh_tokens.remove(&hash) {
                self.indexes
                    .token_families
                    .remove(&(token.family, hash.clone()));
            }
            self.touch(|c| {
                c.refresh_tokens.insert(hash);
            });
        }
    }

    // ----- shared steps ----------------------------------------------------------------

    /// The user's lock, if it is live; otherwise the precise reason it cannot be used.
    /// Whether a pending booking's seats are all still marked as held by its lock (the
    /// planted confirm-after-expiry bug confirms only such locks, so that it breaks the
    /// expiry promise without corrupting the seat map).
    #[cfg(feature = "planted-bugs")]
    pub(crate) fn seats_held_by(&self, lock: LockId) -> bool {
        let id = BookingId::of_lock(lock);
        let Some(booking) = self.state.bookings.get(&id) else {
            return false;
        };
        booking.status == BookingStatus::PendingPayment
            && self.state.seats.get(&booking.show).is_some_and(|states| {
                booking.seats.iter().all(|seat| {
                    states.get(seat.0 as usize).copied() == Some(SeatState::Locked(lock))
                })
            })
    }

    pub(crate) fn live_lock(&self, lock: LockId, user: UserId) -> Result<&Booking, Rejection> {
        let booking = self
            .state
            .bookings
            .get(&BookingId::of_lock(lock))
            .ok_or(Rejection::UnknownLock { lock })?;
        if booking.user != user {
            return Err(Rejection::NotOwner);
        }
        match booking.status {
            BookingStatus::PendingPayment if booking.is_live_lock(self.state.clock) => Ok(booking),
            BookingStatus::PendingPayment | BookingStatus::Expired => Err(Rejection::LockExpired {
                lock,
                expired_at: booking.expires_at,
            }),
            status => Err(Rejection::WrongBookingStatus {
                booking: booking.id,
                status,
            }),
        }
    }

    /// Ends a pending or confirmed booking with `status`, freeing its seats. Returns the
    /// refund now due (the price of a paid booking that is cancelled, when
    /// `refund_full`; nothing after the refund cut-off).
    pub(crate) fn end_booking(
        &mut self,
        booking_id: BookingId,
        status: BookingStatus,
        refund_full: bool,
        events: &mut Vec<Event>,
    ) -> u64 {
        let booking = &self.state.bookings[&booking_id];
        let was_paid = booking.status == BookingStatus::Confirmed;
        let (show, user, seats) = (booking.show, booking.user, booking.seats.clone());
        if booking.status == BookingStatus::PendingPayment {
            self.indexes
                .lock_expiry
                .remove(&(booking.expires_at, booking_id.lock()));
        }
        let refund_due_minor = if was_paid && refund_full {
            // What was paid: the price less a coupon's discount when the saga paid it.
            self.paid_minor(booking_id)
                .unwrap_or(booking.total_price_minor)
        } else {
            0
        };
        self.set_seats(show, &seats, SeatState::Available);
        let clock = self.state.clock;
        self.update_booking(booking_id, |b| {
            b.status = status;
            b.refund_due_minor = refund_due_minor;
            b.updated_at = clock;
        });
        let lock = booking_id.lock();
        events.push(match (status, was_paid) {
            (BookingStatus::Expired, _) => Event::LockExpired {
                show,
                lock,
                user,
                seats,
            },
            (_, false) => Event::LockReleased {
                show,
                lock,
                user,
                seats,
            },
            (_, true) => Event::BookingCancelled {
                show,
                booking: booking_id,
                user,
                seats,
                refund_due_minor,
            },
        });
        if was_paid {
            self.payment_after_cancel(booking_id, refund_due_minor);
        }
        refund_due_minor
    }

    /// Seats of `show` held by `user` right now (live locks and confirmed bookings).
    pub(crate) fn seats_held(&self, user: UserId, show: ShowId) -> u64 {
        let low = (user, show, BookingId(0));
        let high = (user, show, BookingId(u64::MAX));
        self.indexes
            .holding
            .range(low..=high)
            .filter_map(|(_, _, id)| self.state.bookings.get(id))
            .filter(|booking| booking.holds_seats(self.state.clock))
            .map(|booking| booking.seats.len() as u64)
            .sum()
    }

    /// How many bookings `seats_held` visits for `user` and `show`: the cap check must
    /// cost what the user holds now, not the user's whole history of the show.
    #[cfg(test)]
    pub(crate) fn bookings_visited_for_cap(&self, user: UserId, show: ShowId) -> usize {
        let low = (user, show, BookingId(0));
        let high = (user, show, BookingId(u64::MAX));
        self.indexes.holding.range(low..=high).count()
    }

    pub(crate) fn set_seats(&mut self, show: ShowId, seats: &[SeatId], state: SeatState) {
        if let Some(states) = self.state.seats.get_mut(&show) {
            for seat in seats {
                states[seat.0 as usize] = state;
            }
        }
        self.touch(|c| c.seats.extend(seats.iter().map(|seat| (show, *seat))));
    }

    fn put_booking(&mut self, booking: Booking) {
        let id = booking.id;
        self.index_holding(
            (booking.user, booking.show, id),
            booking.status.holds_seats(),
        );
        self.state.bookings.insert(id, booking);
        self.touch(|c| {
            c.bookings.insert(id);
        });
    }

    /// Files `booking` in the `holding` index by its status.
    fn index_holding(&mut self, key: (UserId, ShowId, BookingId), holds: bool) {
        if holds {
            self.indexes.holding.insert(key);
        } else {
            self.indexes.holding.remove(&key);
        }
    }

    pub(crate) fn update_booking(&mut self, id: BookingId, change: impl FnOnce(&mut Booking)) {
        if let Some(booking) = self.state.bookings.get_mut(&id) {
            change(booking);
            let key = (booking.user, booking.show, booking.id);
            let holds = booking.status.holds_seats();
            self.index_holding(key, holds);
        }
        self.touch(|c| {
            c.bookings.insert(id);
        });
    }

    fn remember(&mut self, id: RequestId, fingerprint: [u8; 16], outcome: Outcome) {
        let record = RequestRecord {
            at_ms: self.state.clock,
            fingerprint,
            outcome,
        };
        let changes = self.changes.as_mut().map(|c| &mut c.requests);
        self.requests.remember(id, record, changes);
    }

    /// Forgets the request records whose second has left the retention window.
    fn forget_old_requests(&mut self) {
        let changes = self.changes.as_mut().map(|c| &mut c.requests);
        self.requests
            .forget_old(self.state.clock, &self.limits, changes);
    }

    pub(crate) fn touch_audit(&mut self, id: LogIndex) {
        self.touch(|c| {
            c.audit.insert(id);
        });
    }

    pub(crate) fn touch(&mut self, record: impl FnOnce(&mut Changes)) {
        if let Some(changes) = self.changes.as_mut() {
            record(changes);
        }
    }

    pub(crate) fn show(&self, show: ShowId) -> Result<&Show, Rejection> {
        self.state
            .shows
            .get(&show)
            .ok_or(Rejection::UnknownShow { show })
    }

    fn check_ttl(&self, ttl_ms: u64) -> Result<(), Rejection> {
        if ttl_ms < self.limits.lock_ttl_ms_min {
            return Err(Rejection::LimitExceeded {
                limit: LimitName::LockTtlMin,
                max: self.limits.lock_ttl_ms_min,
                requested: ttl_ms,
            });
        }
        self.check_limit(LimitName::LockTtlMax, self.limits.lock_ttl_ms_max, ttl_ms)
    }

    pub(crate) fn check_limit(
        &self,
        limit: LimitName,
        max: u64,
        requested: u64,
    ) -> Result<(), Rejection> {
        if requested > max {
            return Err(Rejection::LimitExceeded {
                limit,
                max,
                requested,
            });
        }
        Ok(())
    }

    pub(crate) fn check_text(
        &self,
        field: &'static str,
        value: &str,
        may_be_empty: bool,
    ) -> Result<(), Rejection> {
        if value.is_empty() && !may_be_empty {
            return Err(invalid(field, "must not be empty"));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(field, "must not contain control characters"));
        }
        // Right-to-left scripts are welcome; the invisible controls that reorder what
        // follows them (and can make a name or title display as something else) are not.
        if value.chars().any(is_bidi_control) {
            return Err(invalid(
                field,
                "must not contain bidirectional control characters (U+202A-U+202E, \
                 U+2066-U+2069)",
            ));
        }
        self.check_limit(
            LimitName::TextLength,
            self.limits.text_length_max.into(),
            value.len() as u64,
        )
    }

    fn check_city(&self, city: &str) -> Result<(), Rejection> {
        let well_formed = !city.is_empty()
            && city.len() <= 64
            && city
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            return Err(invalid("city", "a city id is 1-64 of a-z, 0-9 and '-'"));
        }
        Ok(())
    }
}

/// Unicode's explicit bidirectional embeddings, overrides and isolates (refused in
/// ledger text, and by the api in text it matches without the ledger).
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn invalid(field: &'static str, reason: &'static str) -> Rejection {
    Rejection::invalid(field, reason)
}

/// Largest price of one seat, in minor units; keeps every total far from overflow.
const SEAT_PRICE_MINOR_MAX: u64 = 1_000_000_000;

fn check_prices(prices: &Prices) -> Result<(), Rejection> {
    let all = [prices.normal_minor, prices.premium_minor, prices.vip_minor];
    if all.iter().any(|price| *price > SEAT_PRICE_MINOR_MAX) {
        return Err(invalid(
            "prices",
            "a seat price is at most 1000000000 minor units",
        ));
    }
    Ok(())
}

fn check_currency(currency: &str) -> Result<(), Rejection> {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(invalid(
            "currency",
            "an ISO 4217 code of three capital letters, e.g. INR",
        ));
    }
    Ok(())
}

fn price_of(screen: &Screen, prices: &Prices, seats: &[SeatId]) -> u64 {
    seats
        .iter()
        .filter_map(|seat| screen.place(*seat))
        .map(|place| prices.of(place.category))
        .sum()
}

fn fingerprint(kind: &CommandKind) -> [u8; 16] {
    let hash = blake3::hash(&crate::codec::encode(kind));
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash.as_bytes()[..16]);
    out
}
