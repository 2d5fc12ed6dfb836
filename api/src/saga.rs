//! The booking saga's driver: moves each booking's payment along from what the ledger
//! recorded, so any api node can take over a saga another node started.
//!
//! Steps (every one is a replicated command; the ledger decides what a gateway result
//! means for the booking, from its own clock):
//! `StartPayment` (intent) -> gateway create (idempotency key from the booking) ->
//! `RecordGatewayState` (pending) -> webhook or poll -> `RecordGatewayState`
//! (succeeded: confirmed, or refund due if the lock ended; failed: released) ->
//! gateway refund -> `RecordGatewayState` (refunded).
//!
//! `advance` does the next step of one payment; the webhook handler, the pay and cancel
//! handlers and the reconciliation poller (`spawn_reconciler`) all call it. Every step
//! is safe to repeat or to race: the gateway dedupes by idempotency key, and the ledger
//! ignores reports not newer than the last (`gw:<booking>:<version>:<status>` request
//! ids make concurrent reports of the same version one write).
//!
//! What the saga never does, and why that keeps money and bookings together:
//! - It never ends a payment on an answer that may change: a gateway that did not
//!   answer, timed out, is rushed (429) or rotating its keys (401/403) leaves the
//!   payment open for the poller (`payment::is_transient`).
//! - It ends a payment the gateway refused (a 4xx about the create itself) only once the
//!   gateway says it holds no payment under the booking's key (`find_by_key`): a retry
//!   is refused for reasons of its own (this node's webhook URL, a validation run before
//!   the key lookup) while an earlier create, whose answer was lost, made the payment.
//!   The failure it records names a made-up reference
//!   (`state_machine::payments::MADE_UP_REF_PREFIX`), which the ledger lets a real
//!   payment replace: a create still in flight that lands afterwards and succeeds is
//!   owed back, never lost.
//! - It decides whether a lock is over by the ledger's clock (`lock_over`), never by
//!   this node's: a node whose clock runs ahead would otherwise cancel payments inside
//!   live locks, and the ledger would release seats the customer is paying for.
//! - It creates no gateway payment for a lock that is over: that payment could only be
//!   charged and refunded. It ends the payment through the ledger instead, after asking
//!   the gateway whether an earlier create made one (then that payment is cancelled or
//!   refunded like any other).

use crate::app::{Shared, Written};
use crate::payment::{GatewayError, GatewayPayment, NewPayment};
use crate::problem::Problem;
use crate::views::ext_id;
use axum::http::StatusCode;
use raft_node::protocol::Consistency;
use state_machine::payments::MADE_UP_REF_PREFIX;
use state_machine::{
    Booking, BookingId, BookingStatus, CommandKind, GatewayStatus, Payment, PaymentStatus, Query,
    QueryResponse,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

/// A booking with its payment as a read found them, and where the read was answered.
pub type FoundPayment = (Booking, Option<Payment>, crate::app::ReadMeta);

/// Wakes `pay` requests waiting for their payment to settle when this api node records
/// a newer state of the payment (usually the gateway's webhook), so a payer is answered
/// as soon as the ledger has the result instead of at the next poll. A result recorded
/// by another api node is still found by `settle`'s backed-off polling.
#[derive(Default)]
pub struct SettleWaiters {
    waiting: Mutex<HashMap<(String, u64), watch::Sender<Seen>>>,
}

/// What this node last recorded of a waited-for payment.
#[derive(Clone, Default)]
struct Seen {
    /// The highest log index at which this node recorded the payment.
    index: u64,
    /// The settled payment as read back after the write at `index`, when the recorder
    /// read it (the waiter then needs no read of its own).
    settled: Option<Arc<FoundPayment>>,
}

/// One request's registration; unregisters when dropped.
pub struct SettleWait<'a> {
    waiters: &'a SettleWaiters,
    key: (String, u64),
    recorded: Option<watch::Receiver<Seen>>,
}

impl SettleWaiters {
    /// Registers interest in `booking`'s payment. Register before the step whose
    /// result is awaited, so a webhook that arrives during the step is not missed.
    pub fn register(&self, shard: &str, booking: BookingId) -> SettleWait<'_> {
        let key = (shard.to_owned(), booking.0);
        let recorded = self.waiting.lock().ok().map(|mut waiting| {
            waiting
                .entry(key.clone())
                .or_insert_with(|| watch::channel(Seen::default()).0)
                .subscribe()
        });
        SettleWait {
            waiters: self,
            key,
            recorded,
        }
    }

    /// This node recorded a state of `booking`'s payment at `index`.
    pub fn recorded(&self, shard: &str, booking: BookingId, index: u64) {
        self.publish(shard, booking, index, None);
    }

    /// This node recorded `booking`'s payment as settled at `index` and read it back
    /// (`found`, at `index` or later).
    pub fn settled(&self, shard: &str, booking: BookingId, index: u64, found: FoundPayment) {
        self.publish(shard, booking, index, Some(Arc::new(found)));
    }

    fn publish(
        &self,
        shard: &str,
        booking: BookingId,
        index: u64,
        settled: Option<Arc<FoundPayment>>,
    ) {
        let Ok(waiting) = self.waiting.lock() else {
            return;
        };
        if let Some(sender) = waiting.get(&(shard.to_owned(), booking.0)) {
            sender.send_if_modified(|known| {
                // An older record never replaces a newer one; a newer one without a
                // read-back makes the older read-back stale.
                if index < known.index || (index == known.index && settled.is_none()) {
                    return false;
                }
                known.index = index;
                known.settled = settled;
                true
            });
        }
    }

    /// Payments waited for right now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.lock().map_or(0, |waiting| waiting.len())
    }
}

impl SettleWait<'_> {
    /// What this node recorded of the payment since registering, marked as seen (so
    /// `next` waits for something newer).
    fn latest(&mut self) -> Seen {
        self.recorded
            .as_mut()
            .map_or_else(Seen::default, |rx| rx.borrow_and_update().clone())
    }

    /// Waits until this node records the payment again, at most `pause`.
    async fn next(&mut self, pause: Duration) {
        match self.recorded.as_mut() {
            Some(rx) => {
                let _ = tokio::time::timeout(pause, rx.changed()).await;
            }
            None => tokio::time::sleep(pause).await,
        }
    }
}

impl Drop for SettleWait<'_> {
    fn drop(&mut self) {
        drop(self.recorded.take());
        if let Ok(mut waiting) = self.waiters.waiting.lock() {
            if waiting
                .get(&self.key)
                .is_some_and(|sender| sender.receiver_count() == 0)
            {
                waiting.remove(&self.key);
            }
        }
    }
}

/// This api node's wall clock. The saga decides nothing with it (whether a lock is over
/// is the ledger's clock's call, `lock_over`); it only paces the poller, which leaves
/// payments younger than `reconcile_min_age_ms` to their live request. A clock that is
/// off makes the poller early or late there, never wrong: every step is safe to repeat.
/// Tests shift it (`set_offset_ms`) to show that nothing else depends on it.
#[derive(Debug, Default)]
pub struct WallClock {
    offset_ms: AtomicI64,
}

impl WallClock {
    /// Milliseconds since the Unix epoch, shifted by the offset.
    pub fn now_ms(&self) -> u64 {
        let offset = self.offset_ms.load(Ordering::Relaxed);
        gateway::sandbox::now_ms().saturating_add_signed(offset)
    }

    /// Runs this clock `offset_ms` ahead of the system's (behind when negative).
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }
}

pub fn gateway_problem(error: GatewayError) -> Problem {
    match error {
        GatewayError::Unavailable(detail) => Problem::unavailable(format!(
            "the payment gateway did not answer ({detail}); the payment continues in the \
             background, follow its status"
        )),
        GatewayError::Refused(detail) => Problem::new(
            StatusCode::BAD_GATEWAY,
            "payment-gateway",
            "The payment gateway refused the request",
            detail,
        ),
    }
}

/// The gateway's idempotency key of a booking's payment: one payment per booking.
pub fn payment_key(shard: &str, booking: BookingId) -> String {
    format!("booking-{}", ext_id(shard, booking.0))
}

fn refund_key(shard: &str, booking: BookingId) -> String {
    format!("refund-{}", ext_id(shard, booking.0))
}

/// A booking with its payment, read from its shard.
pub async fn read_payment(
    state: &Shared,
    shard: &str,
    booking: BookingId,
    consistency: Consistency,
    min_index: Option<u64>,
) -> Result<(Booking, Option<Payment>, crate::app::ReadMeta), Problem> {
    let (response, meta) = state
        .read(shard, Query::Payment { booking }, consistency, min_index)
        .await?;
    match response {
        QueryResponse::Payment { booking, payment } => Ok((*booking, payment.map(|p| *p), meta)),
        _ => Err(Problem::unavailable(
            "the cluster answered with an unexpected response type",
        )),
    }
}

/// A gateway report recorded in the ledger, and what followed it.
pub struct Reported {
    /// The report's own write.
    pub written: Written,
    /// What followed (`follow_up`): the refund's write when one was issued. An error
    /// leaves the report recorded; the pollers retry the refund.
    pub follow_up: Result<Option<Written>, Problem>,
}

impl Reported {
    /// The last write of the step: the refund's, else the report's.
    fn last(self) -> Result<Written, Problem> {
        Ok(self.follow_up?.unwrap_or(self.written))
    }
}

/// Records what the gateway reported about `booking`'s payment, wakes the payer waiting
/// for it on this node, and does what follows (`follow_up`).
pub async fn record(
    state: &Shared,
    shard: &str,
    booking: BookingId,
    report: &GatewayPayment,
) -> Result<Reported, Problem> {
    let command = CommandKind::RecordGatewayState {
        booking,
        gateway_ref: report.id.clone(),
        payment_url: report.payment_url.clone(),
        status: report.status,
        version: report.version,
        amount_minor: report.amount_minor,
        reason: report.failure_reason.clone(),
    };
    let request = format!(
        "gw:{}:{}:{}",
        ext_id(shard, booking.0),
        report.version,
        report.status.as_str()
    );
    metrics::counter!("seat_ledger_api_saga_reports_total", "status" => report.status.as_str())
        .increment(1);
    let written = state.write(shard, &request, command).await?;
    let follow_up = follow_up(state, shard, booking, &written).await;
    Ok(Reported { written, follow_up })
}

/// Whether the booking's lock is over as the ledger sees it: the booking was released
/// or cancelled, or the shard clock is more than `grace_ms` past its expiry.
///
/// The shard clock is read from any replica, at once: every replica's clock is a time
/// the leader stamped and the clock never goes back, so a replica that says "past" is
/// right, and one that lags only moves the answer to a later round. The clock moves
/// with every write to the shard; the expiry sweep writes once a lock expires, and the
/// poller's own reports of a pending payment keep it moving while one is open.
async fn lock_over(
    state: &Shared,
    shard: &str,
    booking: &Booking,
    grace_ms: u64,
) -> Result<bool, Problem> {
    if matches!(
        booking.status,
        BookingStatus::Released | BookingStatus::Cancelled
    ) {
        return Ok(true);
    }
    let clock = shard_clock(state, shard).await?;
    Ok(clock > booking.expires_at.saturating_add(grace_ms))
}

/// The shard clock as a replica (this region's first) has it now: a lower bound of the
/// ledger's time, which only grows (see `lock_over`).
pub async fn shard_clock(state: &Shared, shard: &str) -> Result<u64, Problem> {
    let (response, _) = state
        .read(shard, Query::Clock, Consistency::Stale, None)
        .await?;
    match response {
        QueryResponse::Clock(clock) => Ok(clock),
        _ => Err(Problem::unavailable(
            "the cluster answered with an unexpected response type",
        )),
    }
}

/// Does the next step of a payment's saga. Returns the write that recorded it, if any.
pub async fn advance(
    state: &Shared,
    shard: &str,
    booking: &Booking,
    payment: &Payment,
) -> Result<Option<Written>, Problem> {
    let gateway = &state.gateway;
    let id = booking.id;
    let grace_ms = state.config.payment.lock_grace_ms;
    let report = match (payment.status, payment.gateway_ref.as_deref()) {
        // No customer is paying a payment not yet created, so no grace: the lock is
        // over once it expired on the shard clock.
        (PaymentStatus::Creating, _) if lock_over(state, shard, booking, 0).await? => {
            metrics::counter!("seat_ledger_api_saga_creates_skipped_total").increment(1);
            end_uncreated(state, shard, id, payment.amount_minor).await?
        }
        (PaymentStatus::Creating, _) => {
            let (amount_minor, currency) = (payment.amount_minor, &payment.currency);
            create(state, shard, id, amount_minor, currency, &payment.method).await?
        }
        (PaymentStatus::Pending, Some(reference)) => {
            let mut report = gateway.fetch(reference).await.map_err(gateway_problem)?;
            if report.status == GatewayStatus::Pending
                && lock_over(state, shard, booking, grace_ms).await?
            {
                // The customer never finished paying: cancel, so nothing is charged.
                // If it succeeded meanwhile, the gateway says so and a refund follows.
                report = gateway.cancel(reference).await.map_err(gateway_problem)?;
                metrics::counter!("seat_ledger_api_saga_cancels_total").increment(1);
            }
            report
        }
        (PaymentStatus::RefundDue, Some(reference)) => {
            let key = refund_key(shard, id);
            let report = gateway
                .refund(reference, payment.refund_minor, &key)
                .await
                .map_err(gateway_problem)?;
            metrics::counter!("seat_ledger_api_saga_refunds_total").increment(1);
            report
        }
        _ => return Ok(None),
    };
    record(state, shard, id, &report).await?.last().map(Some)
}

/// The first step of a payment that `StartPayment` just created (`amount_minor` is its
/// outcome's): the gateway's create call and its recorded answer. This is `advance` of a
/// `Creating` payment without reading the payment back: a `PaymentStarted` outcome
/// means the ledger holds exactly the payment these arguments describe (a request id
/// reused with another body is refused), and a payment that moved on since is safe to
/// create again (the gateway dedupes by the booking's key; the ledger ignores reports
/// not newer than its last).
pub async fn begin(
    state: &Shared,
    shard: &str,
    booking: BookingId,
    amount_minor: u64,
    currency: &str,
    method: &str,
) -> Result<Written, Problem> {
    let report = create(state, shard, booking, amount_minor, currency, method).await?;
    record(state, shard, booking, &report).await?.last()
}

/// The gateway's create call for a booking's payment (idempotent by the booking's key).
/// A transient answer is an error (the payment stays open for the poller). A refusal
/// ends the payment only if the gateway holds none under the key (`no_payment_under_key`).
async fn create(
    state: &Shared,
    shard: &str,
    id: BookingId,
    amount_minor: u64,
    currency: &str,
    method: &str,
) -> Result<GatewayPayment, Problem> {
    let created = state
        .gateway
        .create(NewPayment {
            booking: ext_id(shard, id.0),
            amount_minor,
            currency: currency.to_owned(),
            method: method.to_owned(),
            idempotency_key: payment_key(shard, id),
            webhook_url: Some(webhook_url(state)),
        })
        .await;
    match created {
        Ok(report) => Ok(report),
        Err(GatewayError::Refused(reason)) => {
            metrics::counter!("seat_ledger_api_saga_create_refusals_total").increment(1);
            no_payment_under_key(state, shard, id, amount_minor, &reason).await
        }
        Err(error) => Err(gateway_problem(error)),
    }
}

/// Ends a `Creating` payment whose lock is over without creating it: a create sent
/// earlier (by a node that died, or whose answer was lost) may have made the payment,
/// so the gateway is asked first, and that payment is reported if it exists (the
/// poller then cancels it, or refunds it if it succeeded).
async fn end_uncreated(
    state: &Shared,
    shard: &str,
    id: BookingId,
    amount_minor: u64,
) -> Result<GatewayPayment, Problem> {
    let reason = "the lock ended before the payment was created";
    no_payment_under_key(state, shard, id, amount_minor, reason).await
}

/// The payment the gateway holds under the booking's key if it holds one, else (on the
/// gateway's explicit word) a failure with a made-up reference, so that the ledger
/// releases the lock now rather than at its expiry. A lookup that does not answer
/// leaves the payment open: nothing is concluded from silence.
async fn no_payment_under_key(
    state: &Shared,
    shard: &str,
    id: BookingId,
    amount_minor: u64,
    reason: &str,
) -> Result<GatewayPayment, Problem> {
    let key = payment_key(shard, id);
    match state.gateway.find_by_key(&key).await {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Ok(GatewayPayment {
            id: format!("{MADE_UP_REF_PREFIX}{}", ext_id(shard, id.0)),
            status: GatewayStatus::Failed,
            version: 1,
            amount_minor,
            payment_url: String::new(),
            failure_reason: Some(reason.to_owned()),
            booking: None,
        }),
        Err(error) => Err(gateway_problem(error)),
    }
}

/// What follows a recorded gateway report (`written`). The payer waiting on this node
/// is woken; a payment that settled is read back once, for that payer and to settle its
/// coupon use and reward a referrer (best effort: the pollers settle coupon uses left
/// over); a success that came after the lock ended owes a refund, issued at once, whose
/// write is returned.
async fn follow_up(
    state: &Shared,
    shard: &str,
    id: BookingId,
    written: &Written,
) -> Result<Option<Written>, Problem> {
    let waiters = &state.settle_waiters;
    let state_machine::Applied::PaymentRecorded {
        status,
        changed: true,
        ..
    } = written.applied
    else {
        waiters.recorded(shard, id, written.index);
        return Ok(None);
    };
    if status.is_open() {
        waiters.recorded(shard, id, written.index);
        if status != PaymentStatus::RefundDue {
            return Ok(None);
        }
        let (booking, payment, _) =
            read_payment(state, shard, id, Consistency::Session, Some(written.index)).await?;
        return match payment {
            Some(payment) => Box::pin(advance(state, shard, &booking, &payment)).await,
            None => Ok(None),
        };
    }
    match read_payment(state, shard, id, Consistency::Session, Some(written.index)).await {
        Ok((booking, Some(payment), meta)) => {
            waiters.settled(
                shard,
                id,
                written.index,
                (booking.clone(), Some(payment.clone()), meta),
            );
            crate::coupons::after_payment(state, shard, &booking, &payment).await;
        }
        _ => waiters.recorded(shard, id, written.index),
    }
    Ok(None)
}

/// This node's webhook endpoint as the gateway reaches it.
pub fn webhook_url(state: &Shared) -> String {
    let base = state
        .config
        .payment
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", state.config.listen));
    format!("{}/api/v1/payments/webhook", base.trim_end_matches('/'))
}

/// Waits (bounded by `payment.wait_ms`) until the payment leaves creating/pending, and
/// returns the booking and payment as they are then. `wait` (registered before the
/// step that started the wait) wakes it when this node records the payment, and hands
/// over the settled payment when the recorder read it back. `pending` says the last
/// write the caller saw (at `min_index`) left the payment pending: then the first read
/// waits for news (at most the first pause), since it would find the same.
pub async fn settle(
    state: &Shared,
    shard: &str,
    booking: BookingId,
    min_index: u64,
    pending: bool,
    wait: &mut SettleWait<'_>,
) -> Result<FoundPayment, Problem> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(state.config.payment.wait_ms);
    // Without a wake-up (the result went to another api node), reads back off (25, 50,
    // 100, 200 ms, ...) so that many waiting payers do not flood the replicas.
    let mut pause = Duration::from_millis(25);
    let mut read_now = !pending;
    loop {
        let seen = wait.latest();
        if let Some(found) = seen.settled.filter(|_| seen.index >= min_index) {
            return Ok(found.as_ref().clone());
        }
        let now = tokio::time::Instant::now();
        if read_now || seen.index > min_index || now >= deadline {
            // Read at least as far as this node recorded the payment, so a replica
            // that has not applied the webhook's write yet waits for it.
            let at_least = min_index.max(seen.index);
            let found =
                read_payment(state, shard, booking, Consistency::Session, Some(at_least)).await?;
            let waiting = found.1.as_ref().is_some_and(|p| {
                matches!(p.status, PaymentStatus::Creating | PaymentStatus::Pending)
            });
            if !waiting || tokio::time::Instant::now() >= deadline {
                return Ok(found);
            }
        }
        read_now = true;
        let now = tokio::time::Instant::now();
        wait.next(pause.min(deadline.saturating_duration_since(now)))
            .await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Aborts the task it holds when dropped (the reconciler lives as long as the server).
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pages of open payments one reconciliation round visits per shard.
const RECONCILE_PAGES_MAX: usize = 10;
const RECONCILE_PAGE: u32 = 100;

/// The reconciliation poller: every `payment.reconcile_interval_ms`, advances every
/// open payment of every city shard that has not changed for
/// `payment.reconcile_min_age_ms` (younger ones are in the hands of a live request or
/// an arriving webhook). It resolves payments whose webhook never came, cancels
/// payments of expired locks, issues due refunds and resumes sagas of dead api nodes.
pub fn spawn_reconciler(state: Shared) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let interval = Duration::from_millis(state.config.payment.reconcile_interval_ms.max(50));
        loop {
            tokio::time::sleep(interval).await;
            for city in state.config.cities.clone() {
                if let Err(problem) = reconcile_shard(&state, &city.shard).await {
                    tracing::debug!(shard = %city.shard, detail = %problem.detail, "reconciliation round incomplete");
                }
            }
            if let Err(problem) = crate::coupons::reconcile(&state).await {
                tracing::debug!(detail = %problem.detail, "coupon reconciliation incomplete");
            }
        }
    }))
}

async fn reconcile_shard(state: &Shared, shard: &str) -> Result<(), Problem> {
    let min_age = state.config.payment.reconcile_min_age_ms;
    let mut after = None;
    for _ in 0..RECONCILE_PAGES_MAX {
        let query = Query::OpenPayments {
            after,
            limit: RECONCILE_PAGE,
        };
        let (response, _) = state
            .read(shard, query, Consistency::Linearizable, None)
            .await?;
        let QueryResponse::Payments { items, next } = response else {
            return Err(Problem::unavailable("unexpected answer to open payments"));
        };
        for (booking, payment) in items {
            // Paced by this node's clock against the shard's stamp: a skew only makes
            // the poller early or late (see `WallClock`).
            if state.wall_clock.now_ms() < payment.updated_at.saturating_add(min_age) {
                continue;
            }
            let span = tracing::info_span!(
                "reconcile",
                booking = %ext_id(shard, booking.id.0),
                status = payment.status.as_str()
            );
            match advance(state, shard, &booking, &payment)
                .instrument(span)
                .await
            {
                Ok(Some(_)) => {
                    metrics::counter!("seat_ledger_api_saga_reconciled_total").increment(1);
                }
                Ok(None) => {}
                Err(problem) => {
                    tracing::info!(detail = %problem.detail, "saga step failed; retried next round")
                }
            }
        }
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod settle_waiter_tests {
    use super::*;
    use state_machine::{SeatId, ShowId, UserId};

    #[tokio::test]
    async fn a_recorded_payment_wakes_its_waiter_and_the_entry_goes_away() {
        let waiters = SettleWaiters::default();
        let mut wait = waiters.register("city-a", BookingId(7));
        assert_eq!(wait.latest().index, 0);
        // Another booking's record neither wakes nor moves this one.
        waiters.recorded("city-a", BookingId(8), 40);
        waiters.recorded("city-b", BookingId(7), 41);
        assert_eq!(wait.latest().index, 0);
        // A record before the wait starts is not lost.
        waiters.recorded("city-a", BookingId(7), 42);
        let started = std::time::Instant::now();
        wait.next(Duration::from_secs(10)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the waiter slept"
        );
        assert_eq!(wait.latest().index, 42);
        // An older index never moves it back.
        waiters.recorded("city-a", BookingId(7), 30);
        assert_eq!(wait.latest().index, 42);
        let second = waiters.register("city-a", BookingId(7));
        assert_eq!(waiters.len(), 1);
        drop(wait);
        assert_eq!(waiters.len(), 1, "a second waiter still holds the entry");
        drop(second);
        assert_eq!(waiters.len(), 0);
        // Nobody waits: recording creates nothing.
        waiters.recorded("city-a", BookingId(9), 50);
        assert_eq!(waiters.len(), 0);
    }

    #[tokio::test]
    async fn without_a_record_the_wait_ends_after_its_pause() {
        let waiters = SettleWaiters::default();
        let mut wait = waiters.register("city-a", BookingId(1));
        let started = std::time::Instant::now();
        wait.next(Duration::from_millis(30)).await;
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(wait.latest().index, 0);
    }

    fn found(index: u64) -> FoundPayment {
        let booking = Booking {
            id: BookingId(7),
            show: ShowId(1),
            user: UserId(2),
            seats: vec![SeatId(3)],
            total_price_minor: 100,
            currency: "INR".into(),
            status: BookingStatus::Confirmed,
            created_at: 0,
            expires_at: 0,
            payment_ref: None,
            refund_due_minor: 0,
            updated_at: 0,
        };
        let meta = crate::app::ReadMeta {
            shard: "city-a".into(),
            node: 1,
            index,
            consistency: Consistency::Session,
        };
        (booking, None, meta)
    }

    #[tokio::test]
    async fn a_read_back_is_handed_over_only_while_it_is_the_newest_record() {
        let waiters = SettleWaiters::default();
        let mut wait = waiters.register("city-a", BookingId(7));
        waiters.recorded("city-a", BookingId(7), 40);
        waiters.settled("city-a", BookingId(7), 50, found(51));
        let started = std::time::Instant::now();
        wait.next(Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(5), "not woken");
        let seen = wait.latest();
        assert_eq!(seen.index, 50);
        assert_eq!(seen.settled.expect("the read-back").2.index, 51);
        // The same write recorded again without a read-back keeps it.
        waiters.recorded("city-a", BookingId(7), 50);
        assert!(wait.latest().settled.is_some());
        // An older read-back never replaces it.
        waiters.settled("city-a", BookingId(7), 45, found(46));
        assert_eq!(wait.latest().settled.expect("kept").2.index, 51);
        // A newer write makes it stale.
        waiters.recorded("city-a", BookingId(7), 60);
        let seen = wait.latest();
        assert_eq!(seen.index, 60);
        assert!(seen.settled.is_none(), "a stale read-back was handed over");
    }
}
