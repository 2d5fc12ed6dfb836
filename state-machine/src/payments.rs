//! Payments of bookings: the ledger's record of every step of the booking saga, and
//! ratings of attended shows.
//!
//! The saga is `lock -> payment started -> gateway holds the payment -> gateway result
//! -> confirm | release | refund`. Each step is a replicated command, so any api node
//! can resume a saga another node started: the ledger is the saga's log. The gateway
//! is outside the ledger; the api reports what the gateway says with
//! `RecordGatewayState`, and the ledger decides, from its own clock only, what that
//! means for the booking:
//!
//! - success while the lock is live: the booking is confirmed and the payment captured;
//! - success after the lock ended (expired, released, cancelled): the seats stay free
//!   and the whole amount is due back (`RefundDue`) — the booking is expired-refunded;
//! - decline or cancellation at the gateway: the lock is released at once;
//! - a report whose gateway version is not newer than the last one recorded
//!   (a duplicated or reordered webhook, a slow poller) changes nothing;
//! - a report naming another gateway payment than the one recorded is refused, except
//!   over a made-up reference (`is_made_up_ref`): the api records one when it ends a
//!   payment the gateway said it never took, and that word can be overtaken by a create
//!   sent earlier whose answer was lost. The real payment then replaces it, and a
//!   success of it is owed back like any success of a failed payment.
//!
//! A cancelled paid booking is refunded in full until `cancel_refund_cutoff_ms` before
//! its show starts, and not at all after (the cancel itself is allowed until the
//! start). This module must not know how the gateway is reached; it knows only what
//! the gateway reported.
//!
//! Append-only format: `Payment`, `Rating` and their statuses are stored in RocksDB and
//! in snapshots with the codec's positional encoding, and later releases read them
//! back. A new enum variant goes at the end of its enum; any other change to these
//! types (a field added, even at the end, removed, reordered or retyped; a variant
//! inserted or moved) needs a new store format version (`store::FORMAT_VERSION`) with a
//! migration. `tests/golden.rs` checks their bytes.

use crate::event::Event;
use crate::ids::{BookingId, Millis, ShowId, TheaterId, UserId};
use crate::ledger::{Ledger, State};
use crate::model::{BookingStatus, SeatState};
use crate::outcome::{Applied, Rejection};
use serde::{Deserialize, Serialize};

/// How a `gateway_ref` made up by the api starts: the api reports such a failure when
/// the gateway confirmed it holds no payment for the booking's key (it refused the
/// create), or when it ended a payment whose lock was over before any create was sent.
pub const MADE_UP_REF_PREFIX: &str = "refused-";

/// Whether `gateway_ref` was made up by the api (`MADE_UP_REF_PREFIX`) rather than
/// named by the gateway. A payment failed under such a reference may still turn out to
/// exist at the gateway: a report of the real payment replaces it.
pub fn is_made_up_ref(gateway_ref: &str) -> bool {
    gateway_ref.starts_with(MADE_UP_REF_PREFIX)
}

/// Where a booking's payment stands in the saga.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// The ledger recorded the intent; the gateway may or may not hold the payment yet
    /// (the api node may have crashed before or after asking it).
    Creating,
    /// The gateway holds the payment and its result is awaited.
    Pending,
    /// Charged, and the booking confirmed (or cancelled after the refund cut-off).
    Captured,
    /// Declined or cancelled at the gateway: nothing was charged.
    Failed,
    /// Charged, but the booking did not keep its seats: `refund_minor` must go back.
    RefundDue,
    /// The gateway reported the refund done.
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Creating => "creating",
            PaymentStatus::Pending => "pending",
            PaymentStatus::Captured => "captured",
            PaymentStatus::Failed => "failed",
            PaymentStatus::RefundDue => "refund_due",
            PaymentStatus::Refunded => "refunded",
        }
    }

    /// Whether the saga still has work to do for this payment (the reconciliation
    /// poller visits exactly these).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            PaymentStatus::Creating | PaymentStatus::Pending | PaymentStatus::RefundDue
        )
    }
}

/// What the gateway says about a payment, as reported by a webhook, a poll or the
/// answer to a create, cancel or refund call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GatewayStatus {
    Pending,
    Succeeded,
    Failed,
    Canceled,
    Refunded,
}

impl GatewayStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayStatus::Pending => "pending",
            GatewayStatus::Succeeded => "succeeded",
            GatewayStatus::Failed => "failed",
            GatewayStatus::Canceled => "canceled",
            GatewayStatus::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<GatewayStatus> {
        [
            GatewayStatus::Pending,
            GatewayStatus::Succeeded,
            GatewayStatus::Failed,
            GatewayStatus::Canceled,
            GatewayStatus::Refunded,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// The payment of one booking. A booking has at most one: a declined payment releases
/// the lock, so a second attempt needs a new lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub booking: BookingId,
    pub user: UserId,
    /// The payment method the customer chose (the sandbox decides by it).
    pub method: String,
    /// What is charged: the booking's price less `discount_minor`.
    pub amount_minor: u64,
    pub discount_minor: u64,
    /// The coupon that gave the discount, if any (reserved in the `global` shard).
    pub coupon: Option<String>,
    pub currency: String,
    pub status: PaymentStatus,
    /// The gateway's id of the payment, once a report named it.
    pub gateway_ref: Option<String>,
    /// Where the customer completes the payment.
    pub payment_url: Option<String>,
    /// The gateway's version of its last report applied; older reports are ignored.
    pub gateway_version: u64,
    /// What must be (or was) paid back; zero unless `RefundDue` or `Refunded`.
    pub refund_minor: u64,
    /// Why the gateway declined or cancelled the payment.
    pub failure: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A customer's rating of a show they attended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    pub booking: BookingId,
    pub show: ShowId,
    pub theater: TheaterId,
    pub user: UserId,
    /// 1 to 5.
    pub stars: u8,
    pub message: String,
    pub at_ms: Millis,
}

/// Ratings of a show or a theater: the average is `stars_sum / count`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatingSummary {
    pub count: u64,
    pub stars_sum: u64,
}

/// Indexes of this module, rebuilt from `State` on load.
#[derive(Clone, Debug, Default)]
pub(crate) struct PaymentIndexes {
    /// Payments the saga has not finished, for the reconciliation poller.
    pub open: std::collections::BTreeSet<BookingId>,
    pub show_ratings: std::collections::BTreeMap<ShowId, RatingSummary>,
    pub theater_ratings: std::collections::BTreeMap<TheaterId, RatingSummary>,
}

impl PaymentIndexes {
    pub(crate) fn rebuild(state: &State) -> PaymentIndexes {
        let mut indexes = PaymentIndexes::default();
        for payment in state.payments.values() {
            if payment.status.is_open() {
                indexes.open.insert(payment.booking);
            }
        }
        for rating in state.ratings.values() {
            indexes.add_rating(rating);
        }
        indexes
    }

    fn add_rating(&mut self, rating: &Rating) {
        for summary in [
            self.show_ratings.entry(rating.show).or_default(),
            self.theater_ratings.entry(rating.theater).or_default(),
        ] {
            summary.count += 1;
            summary.stars_sum += u64::from(rating.stars);
        }
    }
}

/// The fields of a `RecordGatewayState` command.
pub struct GatewayReport<'a> {
    pub booking: BookingId,
    pub gateway_ref: &'a str,
    pub payment_url: &'a str,
    pub status: GatewayStatus,
    pub version: u64,
    pub amount_minor: u64,
    pub reason: Option<&'a str>,
}

impl Ledger {
    pub(crate) fn start_payment(
        &mut self,
        booking_id: BookingId,
        user: UserId,
        method: &str,
        discount_minor: u64,
        coupon: Option<&str>,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        self.check_text("method", method, false)?;
        if let Some(code) = coupon {
            self.check_text("coupon", code, false)?;
        }
        self.own_booking(booking_id, user)?;
        if let Some(payment) = self.state.payments.get(&booking_id) {
            return Err(Rejection::PaymentExists {
                booking: booking_id,
                status: payment.status,
            });
        }
        let booking = match self.live_lock(booking_id.lock(), user) {
            #[cfg(feature = "planted-bugs")]
            Err(Rejection::LockExpired { .. }) if self.planted_confirm_after_expiry(booking_id) => {
                &self.state.bookings[&booking_id]
            }
            result => result?,
        };
        if discount_minor >= booking.total_price_minor {
            return Err(Rejection::invalid(
                "discount_minor",
                "a discount must leave something to pay",
            ));
        }
        let amount_minor = booking.total_price_minor - discount_minor;
        let clock = self.state.clock;
        let payment = Payment {
            booking: booking_id,
            user,
            method: method.to_owned(),
            amount_minor,
            discount_minor,
            coupon: coupon.map(str::to_owned),
            currency: booking.currency.clone(),
            status: PaymentStatus::Creating,
            gateway_ref: None,
            payment_url: None,
            gateway_version: 0,
            refund_minor: 0,
            failure: None,
            created_at: clock,
            updated_at: clock,
        };
        events.push(Event::PaymentStarted {
            show: booking.show,
            booking: booking_id,
            user,
            amount_minor,
        });
        let currency = payment.currency.clone();
        self.put_payment(payment);
        Ok(Applied::PaymentStarted {
            booking: booking_id,
            amount_minor,
            currency,
        })
    }

    pub(crate) fn record_gateway_state(
        &mut self,
        report: GatewayReport<'_>,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        let booking_id = report.booking;
        self.check_text("gateway_ref", report.gateway_ref, false)?;
        self.check_text("payment_url", report.payment_url, true)?;
        if let Some(reason) = report.reason {
            self.check_text("reason", reason, true)?;
        }
        if report.version == 0 {
            return Err(Rejection::invalid("version", "gateway versions start at 1"));
        }
        let payment = self
            .state
            .payments
            .get(&booking_id)
            .ok_or(Rejection::NoPayment {
                booking: booking_id,
            })?;
        // A failure the api made up (no payment at the gateway, as far as it said) is
        // replaced by a real payment reported later: its versions start afresh.
        let replaces_made_up = payment.status == PaymentStatus::Failed
            && payment.gateway_ref.as_deref().is_some_and(is_made_up_ref)
            && !is_made_up_ref(report.gateway_ref);
        if !replaces_made_up
            && payment
                .gateway_ref
                .as_deref()
                .is_some_and(|known| known != report.gateway_ref)
        {
            return Err(Rejection::invalid(
                "gateway_ref",
                "the report names another payment than the one recorded for this booking",
            ));
        }
        if report.amount_minor != payment.amount_minor {
            return Err(Rejection::invalid(
                "amount_minor",
                "the gateway's amount differs from the amount the ledger asked for",
            ));
        }
        let before = payment.status;
        let last_version = if replaces_made_up {
            0
        } else {
            payment.gateway_version
        };
        if report.version <= last_version {
            return Ok(Applied::PaymentRecorded {
                booking: booking_id,
                status: before,
                changed: false,
            });
        }
        let after = self.next_status(booking_id, before, report.status)?;
        // Nothing can fail from here on.
        let clock = self.state.clock;
        let booking = &self.state.bookings[&booking_id];
        let (show, user, amount) = (booking.show, booking.user, report.amount_minor);
        let pending = booking.status == BookingStatus::PendingPayment;
        let lock_live = booking.is_live_lock(clock);
        match (before, after) {
            (PaymentStatus::Creating | PaymentStatus::Pending, PaymentStatus::Captured) => {
                self.confirm_paid(booking_id, report.gateway_ref, events);
            }
            (_, PaymentStatus::RefundDue) if before != PaymentStatus::RefundDue => {
                if pending {
                    self.end_booking(booking_id, BookingStatus::Expired, true, events);
                }
                self.update_booking(booking_id, |b| {
                    b.refund_due_minor = amount;
                    b.updated_at = clock;
                });
            }
            // Declined inside the lock: released at once. Cancelled because the lock
            // ran out: expired (the sweep may not have come by yet).
            (_, PaymentStatus::Failed) if before != PaymentStatus::Failed && pending => {
                let ended = if lock_live {
                    BookingStatus::Released
                } else {
                    BookingStatus::Expired
                };
                self.end_booking(booking_id, ended, true, events);
            }
            _ => {}
        }
        let refund_minor = match after {
            PaymentStatus::RefundDue if before != PaymentStatus::RefundDue => amount,
            _ => self.state.payments[&booking_id].refund_minor,
        };
        let reason = report.reason.map(str::to_owned);
        let (gateway_ref, url) = (report.gateway_ref.to_owned(), report.payment_url);
        self.change_payment(booking_id, |p| {
            p.status = after;
            p.gateway_ref = Some(gateway_ref);
            if !url.is_empty() {
                p.payment_url = Some(url.to_owned());
            }
            p.gateway_version = report.version;
            p.refund_minor = refund_minor;
            if after == PaymentStatus::Failed && p.failure.is_none() {
                p.failure = Some(reason.unwrap_or_else(|| "declined by the gateway".into()));
            }
            p.updated_at = clock;
        });
        if after != before {
            events.push(Event::PaymentChanged {
                show,
                booking: booking_id,
                user,
                status: after,
                refund_minor,
            });
        }
        Ok(Applied::PaymentRecorded {
            booking: booking_id,
            status: after,
            changed: after != before,
        })
    }

    /// The payment status a gateway report leads to, or why the report cannot be true.
    fn next_status(
        &self,
        booking_id: BookingId,
        before: PaymentStatus,
        reported: GatewayStatus,
    ) -> Result<PaymentStatus, Rejection> {
        use GatewayStatus as G;
        use PaymentStatus as P;
        let booking = &self.state.bookings[&booking_id];
        let lock_live = booking.is_live_lock(self.state.clock);
        #[cfg(feature = "planted-bugs")]
        let lock_live = lock_live || self.planted_confirm_after_expiry(booking_id);
        let impossible = |what: &'static str| Err(Rejection::invalid("status", what));
        Ok(match (before, reported) {
            (P::Creating | P::Pending, G::Pending) => P::Pending,
            (P::Creating | P::Pending, G::Succeeded) if lock_live => P::Captured,
            (P::Creating | P::Pending, G::Succeeded) => P::RefundDue,
            (P::Creating | P::Pending, G::Failed | G::Canceled) => P::Failed,
            (P::Creating | P::Pending, G::Refunded) => {
                return impossible("the gateway reports a refund of a payment never captured")
            }
            (P::Captured, G::Pending | G::Succeeded) => P::Captured,
            (P::Captured, G::Failed | G::Canceled) => {
                return impossible("the gateway reports a captured payment as not charged")
            }
            (P::Captured, G::Refunded) => {
                return impossible("the gateway reports a refund the ledger did not ask for")
            }
            // A payment the ledger counted as not charged turns out charged: the
            // booking is gone, so the money goes back.
            (P::Failed, G::Succeeded) => P::RefundDue,
            (P::Failed, _) => P::Failed,
            (P::RefundDue, G::Refunded) => P::Refunded,
            (P::RefundDue, _) => P::RefundDue,
            (P::Refunded, _) => P::Refunded,
        })
    }

    /// The planted confirm-after-expiry bug (Jepsen-style suite only): the saga treats
    /// an expired lock whose seats it still holds as live.
    #[cfg(feature = "planted-bugs")]
    fn planted_confirm_after_expiry(&self, booking_id: BookingId) -> bool {
        crate::planted::is_enabled(crate::planted::PlantedBug::ConfirmIgnoresExpiry)
            && self.seats_held_by(booking_id.lock())
    }

    /// Confirms the live lock of `booking_id`, paid by `payment_ref`.
    fn confirm_paid(&mut self, booking_id: BookingId, payment_ref: &str, events: &mut Vec<Event>) {
        let booking = &self.state.bookings[&booking_id];
        let (show, user, seats) = (booking.show, booking.user, booking.seats.clone());
        let total_price_minor = booking.total_price_minor;
        self.indexes
            .lock_expiry
            .remove(&(booking.expires_at, booking_id.lock()));
        self.set_seats(show, &seats, SeatState::Booked(booking_id));
        let clock = self.state.clock;
        self.update_booking(booking_id, |b| {
            b.status = BookingStatus::Confirmed;
            b.payment_ref = Some(payment_ref.to_owned());
            b.updated_at = clock;
        });
        events.push(Event::BookingConfirmed {
            show,
            booking: booking_id,
            user,
            seats,
            total_price_minor,
        });
    }

    /// What the customer paid for a booking through the saga (its captured payment).
    pub(crate) fn paid_minor(&self, booking_id: BookingId) -> Option<u64> {
        self.state
            .payments
            .get(&booking_id)
            .filter(|p| p.status == PaymentStatus::Captured)
            .map(|p| p.amount_minor)
    }

    /// Called when a confirmed booking ends with `refund_minor` due: its captured
    /// payment, if the saga made one, now owes that refund.
    pub(crate) fn payment_after_cancel(&mut self, booking_id: BookingId, refund_minor: u64) {
        let captured = self
            .state
            .payments
            .get(&booking_id)
            .is_some_and(|p| p.status == PaymentStatus::Captured);
        if !captured || refund_minor == 0 {
            return;
        }
        let clock = self.state.clock;
        self.change_payment(booking_id, |p| {
            p.status = PaymentStatus::RefundDue;
            p.refund_minor = refund_minor.min(p.amount_minor);
            p.updated_at = clock;
        });
    }

    pub(crate) fn rate_booking(
        &mut self,
        booking_id: BookingId,
        user: UserId,
        stars: u8,
        message: &str,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        if !(1..=5).contains(&stars) {
            return Err(Rejection::invalid("stars", "1 to 5"));
        }
        self.check_text("message", message, true)?;
        let booking = self.own_booking(booking_id, user)?;
        let show = self.show(booking.show)?;
        if booking.status != BookingStatus::Confirmed || self.state.clock < show.end_ms {
            return Err(Rejection::NotAttended {
                booking: booking_id,
            });
        }
        if self.state.ratings.contains_key(&booking_id) {
            return Err(Rejection::AlreadyRated {
                booking: booking_id,
            });
        }
        let rating = Rating {
            booking: booking_id,
            show: show.id,
            theater: show.theater,
            user,
            stars,
            message: message.to_owned(),
            at_ms: self.state.clock,
        };
        events.push(Event::BookingRated {
            show: show.id,
            theater: show.theater,
            booking: booking_id,
            stars,
        });
        self.indexes.payments.add_rating(&rating);
        self.state.ratings.insert(booking_id, rating);
        self.touch(|c| {
            c.ratings.insert(booking_id);
        });
        Ok(Applied::BookingRated {
            booking: booking_id,
        })
    }

    fn put_payment(&mut self, payment: Payment) {
        let id = payment.booking;
        if payment.status.is_open() {
            self.indexes.payments.open.insert(id);
        }
        self.state.payments.insert(id, payment);
        self.touch(|c| {
            c.payments.insert(id);
        });
    }

    fn change_payment(&mut self, id: BookingId, change: impl FnOnce(&mut Payment)) {
        if let Some(mut payment) = self.state.payments.remove(&id) {
            change(&mut payment);
            self.indexes.payments.open.remove(&id);
            self.put_payment(payment);
        }
    }

    /// Open payments with their bookings, from `after` on (exclusive), at most `limit`.
    pub(crate) fn open_payments(
        &self,
        after: Option<BookingId>,
        limit: usize,
    ) -> (Vec<(crate::model::Booking, Payment)>, Option<BookingId>) {
        let low = after.map_or(BookingId(0), |id| BookingId(id.0.saturating_add(1)));
        let mut items: Vec<_> = self
            .indexes
            .payments
            .open
            .range(low..)
            .take(limit + 1)
            .map(|id| {
                (
                    self.state.bookings[id].clone(),
                    self.state.payments[id].clone(),
                )
            })
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|(booking, _)| booking.id)
        } else {
            None
        };
        (items, next)
    }

    pub(crate) fn show_rating(&self, show: ShowId) -> RatingSummary {
        self.indexes
            .payments
            .show_ratings
            .get(&show)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn theater_rating(&self, theater: TheaterId) -> RatingSummary {
        self.indexes
            .payments
            .theater_ratings
            .get(&theater)
            .copied()
            .unwrap_or_default()
    }

    /// The invariants of payments and ratings (part of `check_invariants`):
    /// - every payment belongs to an existing booking of the same user;
    /// - a captured payment's booking is confirmed, or cancelled with nothing refunded;
    /// - a confirmed booking with a payment has it captured;
    /// - a payment in flight never has a confirmed booking;
    /// - a refund is positive, at most the amount, and only for a booking that holds
    ///   no seats;
    /// - the open index is exactly the open payments; ratings are of confirmed
    ///   bookings and the summaries add up.
    pub(crate) fn check_payment_invariants(&self) -> Result<(), String> {
        let state = &self.state;
        for (id, payment) in &state.payments {
            let booking = state
                .bookings
                .get(id)
                .ok_or(format!("payment of unknown booking {id}"))?;
            if payment.booking != *id || payment.user != booking.user {
                return Err(format!("payment of {id} names another booking or user"));
            }
            let status = booking.status;
            let fine = match payment.status {
                PaymentStatus::Captured => {
                    status == BookingStatus::Confirmed
                        || (status == BookingStatus::Cancelled && booking.refund_due_minor == 0)
                }
                PaymentStatus::Creating | PaymentStatus::Pending | PaymentStatus::Failed => {
                    status != BookingStatus::Confirmed
                }
                PaymentStatus::RefundDue | PaymentStatus::Refunded => {
                    !matches!(
                        status,
                        BookingStatus::Confirmed | BookingStatus::PendingPayment
                    ) && payment.refund_minor > 0
                        && payment.refund_minor <= payment.amount_minor
                }
            };
            if !fine {
                return Err(format!(
                    "payment of {id} is {} (refund {}) but its booking is {}",
                    payment.status.as_str(),
                    payment.refund_minor,
                    status.as_str()
                ));
            }
            if payment.amount_minor + payment.discount_minor != booking.total_price_minor {
                return Err(format!("payment of {id} does not add up to its price"));
            }
            if payment.status.is_open() != self.indexes.payments.open.contains(id) {
                return Err(format!("open-payment index disagrees about {id}"));
            }
        }
        if self.indexes.payments.open.len()
            != state
                .payments
                .values()
                .filter(|p| p.status.is_open())
                .count()
        {
            return Err("open-payment index lists a payment that is not open".into());
        }
        let mut summaries = PaymentIndexes::default();
        for (id, rating) in &state.ratings {
            let confirmed = state
                .bookings
                .get(id)
                .is_some_and(|b| b.status == BookingStatus::Confirmed && b.user == rating.user);
            if !confirmed || !(1..=5).contains(&rating.stars) {
                return Err(format!("rating of {id} is not of a confirmed own booking"));
            }
            summaries.add_rating(rating);
        }
        if summaries.show_ratings != self.indexes.payments.show_ratings
            || summaries.theater_ratings != self.indexes.payments.theater_ratings
        {
            return Err("rating summaries disagree with the ratings".into());
        }
        Ok(())
    }
}

/// Whether a paid booking cancelled at `clock` gets its money back: until
/// `cutoff_ms` before the show starts.
pub(crate) fn refund_in_full(clock: Millis, show_start_ms: Millis, cutoff_ms: u64) -> bool {
    clock < show_start_ms.saturating_sub(cutoff_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandKind;
    use crate::ids::{LockId, LogIndex, SeatId};
    use crate::limits::Limits;
    use crate::outcome::Outcome;
    use crate::testkit::{command, create_theater, publish_show, screen};

    const HOUR_MS: u64 = 3_600_000;
    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);

    struct Saga {
        ledger: Ledger,
        index: LogIndex,
        now: Millis,
        show: ShowId,
        show_start: Millis,
    }

    impl Saga {
        fn new(show_in_ms: u64) -> Saga {
            let mut saga = Saga {
                ledger: Ledger::new(Limits::default()),
                index: 0,
                now: 1_000_000,
                show: ShowId(0),
                show_start: 0,
            };
            saga.ok(create_theater(
                "mumbai",
                UserId(9),
                vec![screen("A", 4, 10)],
            ));
            saga.show_start = saga.now + show_in_ms;
            let Applied::ShowPublished { show } = saga.ok(publish_show(
                crate::ids::TheaterId(1),
                0,
                saga.show_start,
                "X",
            )) else {
                panic!("no show")
            };
            saga.show = show;
            saga
        }

        fn run(&mut self, kind: CommandKind) -> Outcome {
            self.index += 1;
            let id = format!("r{}", self.index);
            let result = self.ledger.apply(self.index, &command(&id, self.now, kind));
            self.ledger.check_invariants().unwrap();
            result.outcome
        }

        fn ok(&mut self, kind: CommandKind) -> Applied {
            match self.run(kind) {
                Outcome::Applied(applied) => applied,
                Outcome::Rejected(rejection) => panic!("rejected: {rejection}"),
            }
        }

        fn rejected(&mut self, kind: CommandKind) -> Rejection {
            let before = self.ledger.state().clone();
            match self.run(kind) {
                Outcome::Rejected(rejection) => {
                    let mut after = self.ledger.state().clone();
                    after.requests = before.requests.clone();
                    after.clock = before.clock;
                    assert_eq!(before, after, "a rejection changed the state");
                    rejection
                }
                Outcome::Applied(applied) => panic!("applied: {applied:?}"),
            }
        }

        /// Locks `seats` for Alice with a 60 s lock; returns its booking.
        fn lock(&mut self, seats: &[u32]) -> BookingId {
            let Applied::SeatsLocked { booking, .. } = self.ok(CommandKind::LockSeats {
                show: self.show,
                user: ALICE,
                seats: seats.iter().map(|s| SeatId(*s)).collect(),
                ttl_ms: Some(60_000),
            }) else {
                panic!("no lock")
            };
            booking
        }

        /// Locks `seats` for Alice with a 60 s lock and starts paying it.
        fn lock_and_start(&mut self, seats: &[u32]) -> BookingId {
            let booking = self.lock(seats);
            self.ok(start(booking, 0));
            booking
        }

        fn payment(&self, booking: BookingId) -> Payment {
            self.ledger.state().payments[&booking].clone()
        }

        fn booking_status(&self, booking: BookingId) -> BookingStatus {
            self.ledger.state().bookings[&booking].status
        }
    }

    fn start(booking: BookingId, discount_minor: u64) -> CommandKind {
        CommandKind::StartPayment {
            booking,
            user: ALICE,
            method: "sandbox-approve".into(),
            discount_minor,
            coupon: None,
        }
    }

    fn report(booking: BookingId, status: GatewayStatus, version: u64, amount: u64) -> CommandKind {
        CommandKind::RecordGatewayState {
            booking,
            gateway_ref: "pay_1".into(),
            payment_url: "http://gw/pay/pay_1".into(),
            status,
            version,
            amount_minor: amount,
            reason: None,
        }
    }

    #[test]
    fn success_while_the_lock_lives_confirms_and_repeats_change_nothing() {
        let mut s = Saga::new(10 * HOUR_MS);
        let booking = s.lock_and_start(&[0, 1]);
        assert_eq!(s.payment(booking).status, PaymentStatus::Creating);
        let amount = s.payment(booking).amount_minor;
        assert_eq!(amount, 40_000);
        s.ok(report(booking, GatewayStatus::Pending, 1, amount));
        assert_eq!(s.payment(booking).status, PaymentStatus::Pending);
        let applied = s.ok(report(booking, GatewayStatus::Succeeded, 2, amount));
        assert_eq!(
            applied,
            Applied::PaymentRecorded {
                booking,
                status: PaymentStatus::Captured,
                changed: true
            }
        );
        assert_eq!(s.booking_status(booking), BookingStatus::Confirmed);
        assert_eq!(s.ledger.seat_counts(s.show).booked, 2);
        // A duplicated webhook and a reordered older one change nothing.
        let digest = s.ledger.state().payments.clone();
        for (status, version) in [(GatewayStatus::Succeeded, 2), (GatewayStatus::Pending, 1)] {
            let applied = s.ok(report(booking, status, version, amount));
            assert!(matches!(
                applied,
                Applied::PaymentRecorded { changed: false, .. }
            ));
        }
        assert_eq!(digest, s.ledger.state().payments);
        assert!(s.ledger.open_payments(None, 10).0.is_empty());
    }

    fn report_of(
        booking: BookingId,
        gateway_ref: &str,
        status: GatewayStatus,
        version: u64,
        amount: u64,
    ) -> CommandKind {
        let mut kind = report(booking, status, version, amount);
        if let CommandKind::RecordGatewayState { gateway_ref: r, .. } = &mut kind {
            *r = gateway_ref.into();
        }
        kind
    }

    /// The api records a made-up failure when the gateway refused a retried create and
    /// said it held no payment for the key; the first create, whose answer was lost,
    /// lands after all. Its reports replace the made-up reference (versions afresh),
    /// and its success, on seats released meanwhile, is owed back in full.
    #[test]
    fn a_real_payment_replaces_a_made_up_failure_and_its_success_is_refunded() {
        let mut s = Saga::new(10 * HOUR_MS);
        let booking = s.lock_and_start(&[0]);
        let amount = s.payment(booking).amount_minor;
        s.ok(report_of(
            booking,
            "refused-mumbai-1",
            GatewayStatus::Failed,
            1,
            amount,
        ));
        assert_eq!(s.payment(booking).status, PaymentStatus::Failed);
        assert_eq!(s.booking_status(booking), BookingStatus::Released);
        // The real payment's "pending" has the made-up failure's version: recorded.
        s.ok(report(booking, GatewayStatus::Pending, 1, amount));
        let payment = s.payment(booking);
        assert_eq!(payment.status, PaymentStatus::Failed);
        assert_eq!(payment.gateway_ref.as_deref(), Some("pay_1"));
        // Once real, the reference is fixed: neither another payment nor a made-up
        // failure replaces it.
        assert!(s
            .rejected(report_of(
                booking,
                "pay_2",
                GatewayStatus::Succeeded,
                2,
                amount
            ))
            .is_invalid("gateway_ref"));
        assert!(s
            .rejected(report_of(
                booking,
                "refused-mumbai-1",
                GatewayStatus::Failed,
                5,
                amount
            ))
            .is_invalid("gateway_ref"));
        s.ok(report(booking, GatewayStatus::Succeeded, 2, amount));
        let payment = s.payment(booking);
        assert_eq!(
            (payment.status, payment.refund_minor),
            (PaymentStatus::RefundDue, amount)
        );
        assert_eq!(s.booking_status(booking), BookingStatus::Released);
        assert_eq!(s.ledger.state().bookings[&booking].refund_due_minor, amount);
        assert_eq!(s.ledger.seat_counts(s.show).available, 40);
        s.ok(report(booking, GatewayStatus::Refunded, 3, amount));
        assert_eq!(s.payment(booking).status, PaymentStatus::Refunded);

        // A success reported first, at version 1, is not mistaken for a repeat of the
        // made-up failure's version.
        let other = s.lock_and_start(&[1]);
        s.ok(report_of(
            other,
            "refused-mumbai-2",
            GatewayStatus::Failed,
            1,
            amount,
        ));
        s.ok(report(other, GatewayStatus::Succeeded, 1, amount));
        assert_eq!(s.payment(other).status, PaymentStatus::RefundDue);
        assert!(s.ledger.open_payments(None, 10).0.len() == 1);
    }

    #[test]
    fn a_decline_releases_the_seats_at_once() {
        let mut s = Saga::new(10 * HOUR_MS);
        let booking = s.lock_and_start(&[3]);
        let amount = s.payment(booking).amount_minor;
        s.ok(report(booking, GatewayStatus::Failed, 2, amount));
        assert_eq!(s.payment(booking).status, PaymentStatus::Failed);
        assert_eq!(s.booking_status(booking), BookingStatus::Released);
        assert_eq!(s.ledger.seat_counts(s.show).available, 40);
        // The late "pending" of version 1 arrives after the decline: ignored.
        s.ok(report(booking, GatewayStatus::Pending, 1, amount));
        assert_eq!(s.payment(booking).status, PaymentStatus::Failed);
        // A second payment of the booking is refused; so is the old confirm path.
        assert!(matches!(
            s.rejected(start(booking, 0)),
            Rejection::PaymentExists { .. }
        ));
    }

    #[test]
    fn success_after_expiry_keeps_the_seats_free_and_owes_a_refund() {
        let mut s = Saga::new(10 * HOUR_MS);
        let booking = s.lock_and_start(&[5]);
        let amount = s.payment(booking).amount_minor;
        s.ok(report(booking, GatewayStatus::Pending, 1, amount));
        s.now += 61_000;
        // Bob takes the seat after the lock expired, before the late success.
        s.ok(CommandKind::LockSeats {
            show: s.show,
            user: BOB,
            seats: vec![SeatId(5)],
            ttl_ms: None,
        });
        s.ok(report(booking, GatewayStatus::Succeeded, 2, amount));
        let payment = s.payment(booking);
        assert_eq!(
            (payment.status, payment.refund_minor),
            (PaymentStatus::RefundDue, amount)
        );
        assert_eq!(s.booking_status(booking), BookingStatus::Expired);
        assert_eq!(s.ledger.state().bookings[&booking].refund_due_minor, amount);
        assert_eq!(s.ledger.open_payments(None, 10).0.len(), 1);
        s.ok(report(booking, GatewayStatus::Refunded, 3, amount));
        assert_eq!(s.payment(booking).status, PaymentStatus::Refunded);
        assert!(s.ledger.open_payments(None, 10).0.is_empty());
    }

    #[test]
    fn a_pending_payment_of_an_expired_lock_is_cancelled_without_charge() {
        let mut s = Saga::new(10 * HOUR_MS);
        let booking = s.lock_and_start(&[7]);
        let amount = s.payment(booking).amount_minor;
        s.now += 61_000;
        s.ok(CommandKind::ExpireLocks { max_locks: 10 });
        assert_eq!(s.booking_status(booking), BookingStatus::Expired);
        s.ok(report(booking, GatewayStatus::Canceled, 2, amount));
        let payment = s.payment(booking);
        assert_eq!(
            (payment.status, payment.refund_minor),
            (PaymentStatus::Failed, 0)
        );
        assert_eq!(s.booking_status(booking), BookingStatus::Expired);
    }

    #[test]
    fn reports_that_cannot_be_true_are_refused_and_change_nothing() {
        let mut s = Saga::new(10 * HOUR_MS);
        let booking = s.lock_and_start(&[0]);
        let amount = s.payment(booking).amount_minor;
        assert!(s
            .rejected(report(booking, GatewayStatus::Succeeded, 1, amount + 1))
            .is_invalid("amount_minor"));
        assert!(s
            .rejected(report(booking, GatewayStatus::Refunded, 1, amount))
            .is_invalid("status"));
        assert!(s
            .rejected(report(booking, GatewayStatus::Pending, 0, amount))
            .is_invalid("version"));
        s.ok(report(booking, GatewayStatus::Succeeded, 1, amount));
        let mut other = report(booking, GatewayStatus::Succeeded, 2, amount);
        if let CommandKind::RecordGatewayState { gateway_ref, .. } = &mut other {
            *gateway_ref = "pay_2".into();
        }
        assert!(s.rejected(other).is_invalid("gateway_ref"));
        assert!(s
            .rejected(report(booking, GatewayStatus::Failed, 3, amount))
            .is_invalid("status"));
        assert!(matches!(
            s.rejected(report(BookingId(999), GatewayStatus::Pending, 1, 1)),
            Rejection::UnknownBooking { .. } | Rejection::NoPayment { .. }
        ));
        // The confirm path outside the saga may not touch a saga's booking.
        assert!(matches!(
            s.rejected(CommandKind::ConfirmBooking {
                lock: LockId(booking.0),
                user: ALICE,
                payment_ref: "x".into()
            }),
            Rejection::PaymentExists { .. }
        ));
    }

    #[test]
    fn starting_needs_a_live_own_lock_and_a_sane_discount() {
        let mut s = Saga::new(10 * HOUR_MS);
        let booking = s.lock(&[0]);
        let mut bob = start(booking, 0);
        if let CommandKind::StartPayment { user, .. } = &mut bob {
            *user = BOB;
        }
        assert_eq!(s.rejected(bob), Rejection::NotOwner);
        assert!(s
            .rejected(start(booking, 20_000))
            .is_invalid("discount_minor"));
        s.ok(start(booking, 5_000));
        assert_eq!(s.payment(booking).amount_minor, 15_000);
        let mut late = Saga::new(10 * HOUR_MS);
        let Applied::SeatsLocked { booking, .. } = late.ok(CommandKind::LockSeats {
            show: late.show,
            user: ALICE,
            seats: vec![SeatId(0)],
            ttl_ms: Some(60_000),
        }) else {
            panic!()
        };
        late.now += 60_000;
        assert!(matches!(
            late.rejected(start(booking, 0)),
            Rejection::LockExpired { .. }
        ));
    }

    #[test]
    fn cancelling_refunds_in_full_until_the_cutoff_and_nothing_after() {
        for (cancel_before_start, refunded) in [(3 * HOUR_MS, true), (HOUR_MS, false)] {
            let mut s = Saga::new(10 * HOUR_MS);
            let booking = s.lock_and_start(&[2]);
            let amount = s.payment(booking).amount_minor;
            s.ok(report(booking, GatewayStatus::Succeeded, 1, amount));
            s.now = s.show_start - cancel_before_start;
            let Applied::BookingCancelled {
                refund_due_minor, ..
            } = s.ok(CommandKind::CancelBooking {
                booking,
                user: ALICE,
            })
            else {
                panic!()
            };
            let payment = s.payment(booking);
            if refunded {
                assert_eq!(refund_due_minor, amount);
                assert_eq!(
                    (payment.status, payment.refund_minor),
                    (PaymentStatus::RefundDue, amount)
                );
            } else {
                assert_eq!(refund_due_minor, 0);
                assert_eq!(payment.status, PaymentStatus::Captured);
            }
            assert_eq!(s.ledger.seat_counts(s.show).available, 40);
        }
    }

    #[test]
    fn a_discounted_booking_cancelled_refunds_what_was_paid() {
        let mut s = Saga::new(10 * HOUR_MS);
        let booking = s.lock(&[0]);
        s.ok(start(booking, 4_000));
        s.ok(report(booking, GatewayStatus::Succeeded, 1, 16_000));
        let Applied::BookingCancelled {
            refund_due_minor, ..
        } = s.ok(CommandKind::CancelBooking {
            booking,
            user: ALICE,
        })
        else {
            panic!()
        };
        assert_eq!(refund_due_minor, 16_000);
        assert_eq!(s.payment(booking).refund_minor, 16_000);
    }

    #[test]
    fn ratings_are_for_attended_shows_once_and_average_per_show_and_theater() {
        let mut s = Saga::new(HOUR_MS);
        let booking = s.lock_and_start(&[1]);
        let amount = s.payment(booking).amount_minor;
        s.ok(report(booking, GatewayStatus::Succeeded, 1, amount));
        let rate = |stars: u8| CommandKind::RateBooking {
            booking,
            user: ALICE,
            stars,
            message: "great".into(),
        };
        assert_eq!(s.rejected(rate(4)), Rejection::NotAttended { booking });
        s.now = s.show_start + 4 * HOUR_MS;
        assert!(s.rejected(rate(6)).is_invalid("stars"));
        assert!(s.rejected(rate(0)).is_invalid("stars"));
        s.ok(rate(4));
        assert_eq!(s.rejected(rate(5)), Rejection::AlreadyRated { booking });
        let summary = RatingSummary {
            count: 1,
            stars_sum: 4,
        };
        assert_eq!(s.ledger.show_rating(s.show), summary);
        assert_eq!(s.ledger.theater_rating(crate::ids::TheaterId(1)), summary);
        // Indexes rebuilt from state agree (the snapshot and reopen path).
        let rebuilt = Ledger::from_state(Limits::default(), s.ledger.state().clone());
        rebuilt.check_invariants().unwrap();
        assert_eq!(rebuilt.show_rating(s.show), summary);
    }
}
