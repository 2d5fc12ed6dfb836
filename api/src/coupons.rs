//! Coupons: admin endpoints, quotes, and the cross-shard saga of redeeming one for a
//! city booking; referrals (code per user, the referrer rewarded once per referee when
//! a payment of the referee is captured).
//!
//! The saga: reserve a use in `global` (`ReserveCoupon`, keyed by the booking, so a
//! retry is the same reservation) -> start the payment in the city shard with the
//! discount -> when the payment settles, confirm the use (captured) or give it back
//! (failed, refunded, or the payment never started and the lock ended on the ledger's
//! clock). The reserve counts against the limit, so a coupon is never used beyond it; a
//! reservation whose booking is gone is given back by the reconciliation poller
//! (`reconcile`), whichever api node started it.

use crate::app::{AuthUser, Body, Shared};
use crate::problem::Problem;
use crate::views::{self, ext_id, parse_ext_id};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_node::protocol::Consistency;
use serde::Deserialize;
use serde_json::{json, Value};
use state_machine::{
    Applied, Booking, BookingId, BookingStatus, CommandKind, Coupon, CouponUse, Payment,
    PaymentStatus, Query, QueryResponse, Role,
};

type Result<T> = std::result::Result<T, Problem>;

fn unexpected() -> Problem {
    Problem::unavailable("the cluster answered with an unexpected response type")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponBody {
    pub code: String,
    pub percent: u8,
    pub max_discount_minor: u64,
    /// RFC 3339; default now.
    #[serde(default)]
    pub valid_from: Option<String>,
    pub valid_until: String,
    pub max_uses: u32,
}

fn coupon_view(coupon: &Coupon) -> Value {
    json!({
        "id": coupon.code,
        "code": coupon.code,
        "percent": coupon.percent,
        "max_discount_minor": coupon.max_discount_minor,
        "valid_from": views::rfc3339(coupon.valid_from),
        "valid_until": views::rfc3339(coupon.valid_until),
        "max_uses": coupon.max_uses,
        "reserved": coupon.reserved,
        "used": coupon.used,
        "remaining": coupon.max_uses - coupon.reserved - coupon.used,
    })
}

/// `POST /api/v1/coupons` (admin; audited).
pub async fn create_coupon(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Body(body): Body<CouponBody>,
) -> Result<Response> {
    caller.require(&[Role::Admin])?;
    let valid_from = match &body.valid_from {
        Some(text) => views::parse_rfc3339(text)
            .ok_or_else(|| Problem::invalid("valid_from", "an RFC 3339 time"))?,
        None => 0,
    };
    let valid_until = views::parse_rfc3339(&body.valid_until)
        .ok_or_else(|| Problem::invalid("valid_until", "an RFC 3339 time"))?;
    let command = CommandKind::CreateCoupon {
        code: body.code.clone(),
        percent: body.percent,
        max_discount_minor: body.max_discount_minor,
        valid_from,
        valid_until,
        max_uses: body.max_uses,
    };
    let global = state.config.global_shard.clone();
    let request = caller.request_id(&headers)?;
    let terms = format!(
        "{}% off, at most {} minor units, {} uses, valid {} to {}",
        body.percent,
        body.max_discount_minor,
        body.max_uses,
        views::rfc3339(valid_from),
        views::rfc3339(valid_until)
    );
    // An admin action: recorded in the audit trail (requested, then applied/rejected).
    let run = async {
        let written = state.write(&global, &request, command).await?;
        Ok((written, terms.clone()))
    };
    let target = format!("coupon:{}", body.code);
    let written = crate::audit::audited(
        &state,
        &caller,
        &request,
        "create_coupon",
        &target,
        terms.clone(),
        run,
    )
    .await?;
    let coupon = read_coupon(&state, &body.code, Some(written.index)).await?;
    Ok((
        StatusCode::CREATED,
        written.headers(),
        Json(coupon_view(&coupon)),
    )
        .into_response())
}

/// `GET /api/v1/coupons/{code}`: any signed-in user may look a code up.
pub async fn get_coupon(
    State(state): State<Shared>,
    _caller: AuthUser,
    Path(code): Path<String>,
) -> Result<Response> {
    let coupon = read_coupon(&state, &code, None).await?;
    Ok(Json(coupon_view(&coupon)).into_response())
}

async fn read_coupon(state: &Shared, code: &str, min_index: Option<u64>) -> Result<Coupon> {
    let global = state.config.global_shard.clone();
    let consistency = match min_index {
        Some(_) => Consistency::Session,
        None => Consistency::Linearizable,
    };
    let query = Query::Coupon {
        code: code.to_owned(),
    };
    match state.read(&global, query, consistency, min_index).await?.0 {
        QueryResponse::Coupon(coupon) => Ok(coupon),
        _ => Err(unexpected()),
    }
}

/// The discount `code` would give on `price_minor` now, for quotes (nothing reserved).
pub async fn quote(state: &Shared, code: &str, price_minor: u64) -> Result<u64> {
    let coupon = read_coupon(state, code, None).await?;
    let now = gateway::sandbox::now_ms();
    if now < coupon.valid_from || now >= coupon.valid_until {
        return Err(state_machine::Rejection::CouponUnavailable {
            code: code.to_owned(),
            reason: "outside its validity".into(),
        }
        .into());
    }
    if coupon.reserved + coupon.used >= coupon.max_uses {
        return Err(state_machine::Rejection::CouponUnavailable {
            code: code.to_owned(),
            reason: "all its uses are taken".into(),
        }
        .into());
    }
    Ok(state_machine::coupons::discount(&coupon, price_minor))
}

/// Saga step 1: reserves a use of `code` for `booking` in `global`; the discount.
pub async fn reserve(state: &Shared, shard: &str, booking: &Booking, code: &str) -> Result<u64> {
    let booking_id = ext_id(shard, booking.id.0);
    let command = CommandKind::ReserveCoupon {
        code: code.to_owned(),
        booking: booking_id.clone(),
        user: booking.user,
        price_minor: booking.total_price_minor,
    };
    let global = state.config.global_shard.clone();
    let request = format!("coupon:{booking_id}:{code}");
    match state.write(&global, &request, command).await?.applied {
        Applied::CouponReserved { discount_minor, .. } => Ok(discount_minor),
        _ => Err(unexpected()),
    }
}

/// Confirms or gives back the use of `code` for the booking `booking_id` (external).
pub async fn settle_use(
    state: &Shared,
    code: &str,
    booking_id: &str,
    confirmed: bool,
) -> Result<()> {
    let command = CommandKind::SettleCouponUse {
        code: code.to_owned(),
        booking: booking_id.to_owned(),
        confirmed,
    };
    let global = state.config.global_shard.clone();
    let verb = if confirmed { "confirm" } else { "return" };
    let request = format!("coupon:{booking_id}:{code}:{verb}");
    state.write(&global, &request, command).await?;
    metrics::counter!("seat_ledger_api_coupon_uses_settled_total", "verb" => verb).increment(1);
    Ok(())
}

/// How a use of `code` by a booking of `shard` ends, from the booking and its payment:
/// `Some(true)` confirm, `Some(false)` give back, `None` not decided yet.
pub async fn decide(
    state: &Shared,
    shard: &str,
    code: &str,
    booking: &Booking,
    payment: Option<&Payment>,
) -> Option<bool> {
    match payment.filter(|p| p.coupon.as_deref() == Some(code)) {
        Some(payment) => match payment.status {
            PaymentStatus::Captured => Some(true),
            PaymentStatus::Failed | PaymentStatus::RefundDue | PaymentStatus::Refunded => {
                Some(false)
            }
            PaymentStatus::Creating | PaymentStatus::Pending => None,
        },
        // Another payment was made without it (one payment per booking): never used.
        None if payment.is_some() => Some(false),
        // No payment yet: once the lock is over, none will come (a payment starts only
        // in a live lock). Over on the ledger's clock, not this node's: one running ahead
        // would give the use back while the payment may still start with its discount.
        // A clock that cannot be read decides nothing.
        None => {
            let grace = state.config.payment.lock_grace_ms;
            let over = booking.status != BookingStatus::PendingPayment
                || crate::saga::shard_clock(state, shard)
                    .await
                    .is_ok_and(|clock| clock > booking.expires_at.saturating_add(grace));
            over.then_some(false)
        }
    }
}

/// After a payment settled: settles its coupon use and rewards a referrer for a
/// captured payment (best effort: the poller settles coupon uses left over).
pub async fn after_payment(state: &Shared, shard: &str, booking: &Booking, payment: &Payment) {
    if payment.status == PaymentStatus::Captured {
        reward_referrer(state, shard, booking).await;
    }
    settle_coupon(state, shard, booking, payment).await;
}

/// Confirms or gives back the coupon use of a settled payment, if it used a coupon
/// (best effort: the poller settles what is left).
pub async fn settle_coupon(state: &Shared, shard: &str, booking: &Booking, payment: &Payment) {
    let Some(code) = payment.coupon.as_deref() else {
        return;
    };
    if let Some(confirmed) = decide(state, shard, code, booking, Some(payment)).await {
        let booking_id = ext_id(shard, booking.id.0);
        if let Err(problem) = settle_use(state, code, &booking_id, confirmed).await {
            tracing::info!(detail = %problem.detail, "coupon use left to the poller");
        }
    }
}

const RECONCILE_PAGES_MAX: usize = 10;

/// The coupon half of the reconciliation poller: settles every reserved use whose
/// booking has settled.
pub async fn reconcile(state: &Shared) -> Result<()> {
    let global = state.config.global_shard.clone();
    let mut after = None;
    for _ in 0..RECONCILE_PAGES_MAX {
        let query = Query::ReservedCouponUses {
            after: after.clone(),
            limit: 100,
        };
        let (response, _) = state
            .read(&global, query, Consistency::Linearizable, None)
            .await?;
        let QueryResponse::CouponUses { items, next } = response else {
            return Err(unexpected());
        };
        for coupon_use in items {
            if let Err(problem) = reconcile_use(state, &coupon_use).await {
                tracing::info!(detail = %problem.detail, "coupon use not settled yet");
            }
        }
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(())
}

async fn reconcile_use(state: &Shared, coupon_use: &CouponUse) -> Result<()> {
    let min_age = state.config.payment.reconcile_min_age_ms;
    // Paced by this node's clock (see `saga::WallClock`); decided by the ledger's.
    if state.wall_clock.now_ms() < coupon_use.updated_at.saturating_add(min_age) {
        return Ok(());
    }
    let Some((shard, number)) = parse_ext_id(&coupon_use.booking) else {
        // Not a booking id this service issued: nothing will ever use it.
        return settle_use(state, &coupon_use.code, &coupon_use.booking, false).await;
    };
    let (booking, payment, _) = crate::saga::read_payment(
        state,
        &shard,
        BookingId(number),
        Consistency::Linearizable,
        None,
    )
    .await?;
    match decide(state, &shard, &coupon_use.code, &booking, payment.as_ref()).await {
        Some(confirmed) => {
            settle_use(state, &coupon_use.code, &coupon_use.booking, confirmed).await
        }
        None => Ok(()),
    }
}

// ----- referrals ---------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferralBody {
    pub code: String,
}

/// `POST /api/v1/referrals`: the caller names the code of the user who referred them.
pub async fn register_referral(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Body(body): Body<ReferralBody>,
) -> Result<Response> {
    let command = CommandKind::RegisterReferral {
        referee: caller.id,
        code: body.code.trim().to_owned(),
    };
    let global = state.config.global_shard.clone();
    let written = state
        .write(&global, &caller.request_id(&headers)?, command)
        .await?;
    let summary = referral_summary(&state, caller.id, Some(written.index)).await?;
    Ok((StatusCode::CREATED, written.headers(), Json(summary)).into_response())
}

/// `GET /api/v1/users/{id}/referral` (self or admin): code, referrer and rewards.
pub async fn get_referral(
    State(state): State<Shared>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let user = caller.own_or_admin(&id)?;
    let summary = referral_summary(&state, user, None).await?;
    Ok(Json(summary).into_response())
}

async fn referral_summary(
    state: &Shared,
    user: state_machine::UserId,
    min_index: Option<u64>,
) -> Result<Value> {
    let global = state.config.global_shard.clone();
    let consistency = match min_index {
        Some(_) => Consistency::Session,
        None => Consistency::Linearizable,
    };
    let response = state
        .read(&global, Query::Referrals { user }, consistency, min_index)
        .await?
        .0;
    let QueryResponse::Referrals(summary) = response else {
        return Err(unexpected());
    };
    Ok(json!({
        "code": summary.code,
        "referred_by": summary.referred_by.map(|u| u.0),
        "referees": summary.referees,
        "rewarded": summary.rewarded,
        "reward_minor": summary.reward_minor,
    }))
}

/// A confirmed booking may be its user's first: reward their referrer (the ledger
/// rewards each referee once). Best effort; a confirmed booking is never undone for it.
pub async fn reward_referrer(state: &Shared, shard: &str, booking: &Booking) {
    // Most customers were referred by nobody: a read (no log write) says so.
    let global = state.config.global_shard.clone();
    let query = Query::Referrals { user: booking.user };
    match state
        .read(&global, query, Consistency::Linearizable, None)
        .await
    {
        Ok((QueryResponse::Referrals(summary), _)) if summary.referred_by.is_some() => {}
        _ => return,
    }
    let command = CommandKind::RewardReferral {
        referee: booking.user,
        booking: ext_id(shard, booking.id.0),
    };
    let global = state.config.global_shard.clone();
    let request = format!("referral:{}", ext_id(shard, booking.id.0));
    if let Err(problem) = state.write(&global, &request, command).await {
        tracing::info!(detail = %problem.detail, "referral reward not recorded");
    }
}
