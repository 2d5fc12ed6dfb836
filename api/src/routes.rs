//! The REST endpoints of the contract (`shared/api-contract.md`). Each handler checks
//! who may call it, turns the request into ledger commands or queries, and shapes the
//! answer; errors go through `Problem`.

use crate::app::{consistency, request_id, AuthUser, Body, Params, ReadMeta, Shared, Written};
use crate::auth;
use crate::problem::Problem;
use crate::views::{self, ext_id, parse_ext_id};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_node::protocol::Consistency;
use serde::Deserialize;
use serde_json::{json, Value};
use state_machine::*;

type Result<T> = std::result::Result<T, Problem>;

/// The cluster answered with a different kind of response than the query asks for: a
/// version mismatch between api and nodes, never the client's fault.
pub(crate) fn unexpected_answer() -> Problem {
    Problem::unavailable(
        "the cluster answered with an unexpected response type; \
         check that api and raft-node versions match, then retry",
    )
}

fn reply(status: StatusCode, headers: HeaderMap, body: impl serde::Serialize) -> Response {
    (status, headers, Json(body)).into_response()
}

fn read_reply(meta: &ReadMeta, body: impl serde::Serialize) -> Response {
    reply(StatusCode::OK, meta.headers(), body)
}

/// Parses an external id of a city shard.
fn shard_id(state: &Shared, id: &str, what: &str) -> Result<(String, u64)> {
    let (shard, number) = parse_ext_id(id).ok_or_else(|| {
        Problem::not_found(format!("{what} {id:?} is not an id this service issued"))
    })?;
    state.city_shard(&shard)?;
    Ok((shard, number))
}

#[derive(Deserialize, Default)]
pub struct ReadParams {
    pub consistency: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub city: Option<String>,
    pub location: Option<String>,
    pub date: Option<String>,
    pub search: Option<String>,
}

fn page_limit(limit: Option<u32>) -> Result<u32> {
    match limit.unwrap_or(20) {
        0 => Err(Problem::invalid("limit", "at least 1")),
        n if n > 100 => Err(Problem::invalid("limit", "at most 100")),
        n => Ok(n),
    }
}

// ----- accounts -----------------------------------------------------------------------

async fn tokens(state: &Shared, user: &User) -> Result<Value> {
    let (refresh, hash) = auth::new_refresh_token();
    let expires_at = (auth::now_s() + state.keys.refresh_ttl_s) * 1_000;
    let issue = CommandKind::IssueRefreshToken {
        user: user.id,
        token_hash: hash,
        expires_at,
    };
    let global = state.config.global_shard.clone();
    state
        .write(&global, &request_id(&HeaderMap::new(), "login")?, issue)
        .await?;
    let access = state.keys.issue_access(user.id, user.role, auth::now_s())?;
    Ok(json!({
        "user": { "id": user.id.0, "email": user.email, "role": user.role.as_str() },
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": state.keys.access_ttl_s,
    }))
}

pub async fn signup(
    State(state): State<Shared>,
    headers: HeaderMap,
    Body(body): Body<views::SignupBody>,
) -> Result<Response> {
    let chars = body.password.chars().count();
    if chars < auth::PASSWORD_CHARS_MIN || body.password.len() > auth::PASSWORD_BYTES_MAX {
        return Err(Problem::invalid(
            "password",
            format!(
                "use {} to {} characters",
                auth::PASSWORD_CHARS_MIN,
                auth::PASSWORD_BYTES_MAX
            ),
        ));
    }
    let request = request_id(&headers, "signup")?;
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
    let password_hash = auth::hash_password(&body.password, key)?;
    let command = CommandKind::RegisterUser {
        email: body.email.trim().to_owned(),
        phone: body.phone.trim().to_owned(),
        name: body.name.trim().to_owned(),
        password_hash,
        role: Role::Customer,
    };
    let global = state.config.global_shard.clone();
    let written = state.write(&global, &request, command).await?;
    let Applied::UserRegistered { user } = written.applied else {
        return Err(unexpected_answer());
    };
    let user = state.user(user).await?;
    Ok(reply(
        StatusCode::CREATED,
        written.headers(),
        tokens(&state, &user).await?,
    ))
}

pub async fn login(
    State(state): State<Shared>,
    crate::login_guard::ClientIp(ip): crate::login_guard::ClientIp,
    Body(body): Body<views::LoginBody>,
) -> Result<Response> {
    let account = body.email.trim().to_lowercase();
    let guard = &state.login_guard;
    // A throttled attempt is refused before any password work.
    guard
        .check(&account, ip, std::time::Instant::now())
        .map_err(crate::login_guard::throttled)?;
    let refused = || {
        guard.failed(&account, ip, std::time::Instant::now());
        Problem::unauthorized("email or password is wrong")
    };
    if body.password.len() > auth::PASSWORD_BYTES_MAX {
        return Err(refused());
    }
    let global = state.config.global_shard.clone();
    let query = Query::UserByEmail {
        email: body.email.trim().to_owned(),
    };
    let user = match state
        .read(&global, query, Consistency::Linearizable, None)
        .await
    {
        Ok((QueryResponse::User(user), _)) => user,
        Ok(_)
        | Err(Problem {
            status: StatusCode::NOT_FOUND,
            ..
        }) => {
            // As slow as a wrong password, so timing does not tell which emails exist.
            auth::verify_password(&body.password, auth::dummy_password_hash());
            return Err(refused());
        }
        Err(problem) => return Err(problem),
    };
    if !auth::verify_password(&body.password, &user.password_hash) {
        return Err(refused());
    }
    guard.succeeded(&account);
    Ok(reply(
        StatusCode::OK,
        HeaderMap::new(),
        tokens(&state, &user).await?,
    ))
}

pub async fn refresh(
    State(state): State<Shared>,
    Body(body): Body<views::RefreshBody>,
) -> Result<Response> {
    let (token, new_hash) = auth::new_refresh_token();
    let expires_at = (auth::now_s() + state.keys.refresh_ttl_s) * 1_000;
    let old_hash = auth::refresh_token_hash(&body.refresh_token);
    let command = CommandKind::RotateRefreshToken {
        old_hash,
        new_hash,
        expires_at,
    };
    let global = state.config.global_shard.clone();
    let written = state
        .write(&global, &request_id(&HeaderMap::new(), "refresh")?, command)
        .await?;
    let user = match written.applied {
        Applied::RefreshTokenRotated { user, .. } => user,
        Applied::RefreshFamilyRevoked { .. } => {
            return Err(Problem::unauthorized("this refresh token was already used; every token of this login is revoked, log in again"));
        }
        _ => return Err(unexpected_answer()),
    };
    let user = state.user(user).await?;
    let access = state.keys.issue_access(user.id, user.role, auth::now_s())?;
    Ok(reply(
        StatusCode::OK,
        HeaderMap::new(),
        json!({
            "access_token": access, "refresh_token": token, "token_type": "Bearer",
            "expires_in": state.keys.access_ttl_s,
        }),
    ))
}

pub async fn get_user(
    State(state): State<Shared>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let user = state.user(caller.own_or_admin(&id)?).await?;
    Ok(reply(StatusCode::OK, HeaderMap::new(), views::user(&user)))
}

// ----- catalog ------------------------------------------------------------------------

pub async fn cities(State(state): State<Shared>) -> Json<Value> {
    let items: Vec<Value> = state
        .config
        .cities
        .iter()
        .map(|c| json!({ "id": c.id, "name": c.name }))
        .collect();
    Json(views::page(items, None))
}

pub async fn theaters(
    State(state): State<Shared>,
    headers: HeaderMap,
    Params(params): Params<ReadParams>,
) -> Result<Response> {
    let city = params
        .city
        .clone()
        .ok_or_else(|| Problem::invalid("city", "name a city id"))?;
    let shard = state.shard_of_city(&city)?;
    let limit = page_limit(params.limit)?;
    let after = match &params.cursor {
        Some(cursor) => Some(TheaterId(cursor.parse().map_err(|_| {
            Problem::invalid("cursor", "use next_cursor of the previous page")
        })?)),
        None => None,
    };
    let (level, min) = consistency(params.consistency.as_deref(), &headers, Consistency::Stale)?;
    let (response, meta) = state
        .read(&shard, Query::Theaters { city, after, limit }, level, min)
        .await?;
    let QueryResponse::Theaters { items, next } = response else {
        return Err(unexpected_answer());
    };
    let items = items.iter().map(|t| views::theater(&shard, t)).collect();
    Ok(read_reply(
        &meta,
        views::page(items, next.map(|id| id.0.to_string())),
    ))
}

pub async fn theater(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Params(params): Params<ReadParams>,
) -> Result<Response> {
    let (shard, number) = shard_id(&state, &id, "theater")?;
    let (level, min) = consistency(params.consistency.as_deref(), &headers, Consistency::Stale)?;
    let (response, meta) = state
        .read(
            &shard,
            Query::Theater {
                theater: TheaterId(number),
            },
            level,
            min,
        )
        .await?;
    let QueryResponse::Theater(theater) = response else {
        return Err(unexpected_answer());
    };
    let mut body = views::theater(&shard, &theater);
    if let Some(date) = &params.date {
        let (from_ms, to_ms) =
            views::day_range(date).ok_or_else(|| Problem::invalid("date", "YYYY-MM-DD"))?;
        let query = Query::TheaterShows {
            theater: TheaterId(number),
            from_ms,
            to_ms,
        };
        let (shows, _) = state.read(&shard, query, level, min).await?;
        if let QueryResponse::Shows { items, .. } = shows {
            body["shows"] = json!(items
                .iter()
                .map(|s| views::show(&shard, s))
                .collect::<Vec<_>>());
        }
    }
    Ok(read_reply(&meta, body))
}

pub async fn create_theater(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Body(body): Body<views::TheaterBody>,
) -> Result<Response> {
    caller.require(&[Role::TheaterOwner, Role::Admin])?;
    let shard = state.shard_of_city(&body.city)?;
    let micro = |degrees: f64, field: &str| -> Result<i32> {
        if !degrees.is_finite() || degrees.abs() > 180.0 {
            return Err(Problem::invalid(field, "degrees within -180..180"));
        }
        Ok((degrees * 1e6).round() as i32)
    };
    let mut screens = Vec::with_capacity(body.screens.len());
    for screen in body.screens {
        let mut rows = Vec::with_capacity(screen.rows.len());
        for row in screen.rows {
            let category = match row.category.as_str() {
                "normal" => Category::Normal,
                "premium" => Category::Premium,
                "vip" => Category::Vip,
                _ => return Err(Problem::invalid("category", "normal, premium or vip")),
            };
            rows.push(RowSpec {
                label: row.label,
                seats: row.seats,
                category,
            });
        }
        screens.push(Screen {
            name: screen.name,
            rows,
        });
    }
    let command = CommandKind::CreateTheater {
        city: body.city,
        name: body.name,
        address: body.address,
        lat_micro_deg: micro(body.lat, "lat")?,
        lon_micro_deg: micro(body.long, "long")?,
        owner: caller.id,
        screens,
    };
    let written = state
        .write(&shard, &caller.request_id(&headers)?, command)
        .await?;
    let Applied::TheaterCreated { theater } = written.applied else {
        return Err(unexpected_answer());
    };
    let response = state
        .read_after(&written, Query::Theater { theater })
        .await?;
    let QueryResponse::Theater(theater) = response else {
        return Err(unexpected_answer());
    };
    Ok(reply(
        StatusCode::CREATED,
        written.headers(),
        views::theater(&shard, &theater),
    ))
}

pub async fn create_show(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Body(body): Body<views::ShowBody>,
) -> Result<Response> {
    caller.require(&[Role::TheaterOwner, Role::Admin])?;
    let (shard, number) = shard_id(&state, &body.theater_id, "theater")?;
    let (response, _) = state
        .read(
            &shard,
            Query::Theater {
                theater: TheaterId(number),
            },
            Consistency::Linearizable,
            None,
        )
        .await?;
    let QueryResponse::Theater(theater) = response else {
        return Err(unexpected_answer());
    };
    if theater.owner != caller.id && !caller.is_admin() {
        return Err(Problem::forbidden(
            "only the theater's owner or an admin may publish shows here",
        ));
    }
    let start_ms = views::parse_rfc3339(&body.start_time)
        .ok_or_else(|| Problem::invalid("start_time", "an RFC 3339 time"))?;
    let end_ms = views::parse_rfc3339(&body.end_time)
        .ok_or_else(|| Problem::invalid("end_time", "an RFC 3339 time"))?;
    let command = CommandKind::PublishShow {
        theater: theater.id,
        screen: ScreenIndex(body.screen),
        title: body.title,
        genre: body.genre,
        start_ms,
        end_ms,
        prices: Prices {
            normal_minor: body.prices.normal_minor,
            premium_minor: body.prices.premium_minor,
            vip_minor: body.prices.vip_minor,
        },
        currency: body.currency,
    };
    let written = state
        .write(&shard, &caller.request_id(&headers)?, command)
        .await?;
    let Applied::ShowPublished { show } = written.applied else {
        return Err(unexpected_answer());
    };
    let response = state.read_after(&written, Query::Show { show }).await?;
    let QueryResponse::Show(view) = response else {
        return Err(unexpected_answer());
    };
    Ok(reply(
        StatusCode::CREATED,
        written.headers(),
        views::show(&shard, &view),
    ))
}

pub async fn shows(
    State(state): State<Shared>,
    headers: HeaderMap,
    Params(params): Params<ReadParams>,
) -> Result<Response> {
    let city = params
        .location
        .clone()
        .or(params.city.clone())
        .ok_or_else(|| Problem::invalid("location", "name a city id"))?;
    let shard = state.shard_of_city(&city)?;
    let (from_ms, to_ms) = match &params.date {
        Some(date) => {
            views::day_range(date).ok_or_else(|| Problem::invalid("date", "YYYY-MM-DD"))?
        }
        None => (0, u64::MAX),
    };
    if let Some(text) = params.search.as_deref() {
        // The same text rules as the ledger's, though the search index answers here.
        if text
            .chars()
            .any(|c| c.is_control() || state_machine::is_bidi_control(c))
        {
            return Err(Problem::invalid(
                "search",
                "must not contain control or bidirectional control characters",
            ));
        }
    }
    if let Some(text) = params.search.as_deref().filter(|t| !t.trim().is_empty()) {
        let range = (from_ms, to_ms);
        return crate::home::ranked_shows(&state, &city, &shard, text, range, &params, &headers)
            .await;
    }
    let after = match &params.cursor {
        Some(cursor) => {
            let parsed = cursor
                .split_once('.')
                .and_then(|(a, b)| Some((a.parse().ok()?, ShowId(b.parse().ok()?))));
            Some(parsed.ok_or_else(|| {
                Problem::invalid("cursor", "use next_cursor of the previous page")
            })?)
        }
        None => None,
    };
    let limit = page_limit(params.limit)?;
    let (level, min) = consistency(params.consistency.as_deref(), &headers, Consistency::Stale)?;
    let query = Query::CityShows {
        city,
        from_ms,
        to_ms,
        text: params.search.clone(),
        after,
        limit,
    };
    let (response, meta) = state.read(&shard, query, level, min).await?;
    let QueryResponse::Shows { items, next } = response else {
        return Err(unexpected_answer());
    };
    let items = items.iter().map(|s| views::show(&shard, s)).collect();
    Ok(read_reply(
        &meta,
        views::page(items, next.map(|(start, id)| format!("{start}.{}", id.0))),
    ))
}

pub async fn show(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Params(params): Params<ReadParams>,
) -> Result<Response> {
    let (shard, number) = shard_id(&state, &id, "show")?;
    let (level, min) = consistency(params.consistency.as_deref(), &headers, Consistency::Stale)?;
    let (response, meta) = state
        .read(
            &shard,
            Query::Show {
                show: ShowId(number),
            },
            level,
            min,
        )
        .await?;
    let QueryResponse::Show(view) = response else {
        return Err(unexpected_answer());
    };
    Ok(read_reply(&meta, views::show(&shard, &view)))
}

pub async fn seats(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Params(params): Params<ReadParams>,
) -> Result<Response> {
    let (shard, number) = shard_id(&state, &id, "show")?;
    let (level, min) = consistency(params.consistency.as_deref(), &headers, Consistency::Stale)?;
    crate::seat_maps::read(&state, &shard, number, &headers, level, min).await
}

// ----- booking ------------------------------------------------------------------------

pub async fn init_booking(
    State(state): State<Shared>,
    caller: AuthUser,
    Path(user): Path<String>,
    Body(body): Body<views::InitBody>,
) -> Result<Response> {
    if user != caller.id.0.to_string() {
        return Err(Problem::not_found("no such user"));
    }
    // The same checks a lock makes, so a quote never prices what a lock would refuse.
    if body.seats.is_empty() {
        return Err(Rejection::invalid("seats", "name at least one seat").into());
    }
    let distinct: std::collections::BTreeSet<u32> = body.seats.iter().copied().collect();
    if distinct.len() != body.seats.len() {
        return Err(Rejection::invalid("seats", "a seat is named twice").into());
    }
    let (shard, number) = shard_id(&state, &body.show_id, "show")?;
    let (response, meta) = state
        .read(
            &shard,
            Query::SeatMap {
                show: ShowId(number),
            },
            Consistency::Linearizable,
            None,
        )
        .await?;
    let QueryResponse::SeatMap(map) = &response else {
        return Err(unexpected_answer());
    };
    let unknown: Vec<SeatId> = body
        .seats
        .iter()
        .filter(|s| **s as usize >= map.seats.len())
        .map(|s| SeatId(*s))
        .collect();
    if !unknown.is_empty() {
        return Err(Rejection::UnknownSeats { seats: unknown }.into());
    }
    let taken: Vec<SeatId> = body
        .seats
        .iter()
        .filter(|s| map.seats[**s as usize].status != SeatStatus::Available)
        .map(|s| SeatId(*s))
        .collect();
    if !taken.is_empty() {
        return Err(Rejection::SeatsTaken { seats: taken }.into());
    }
    let price: u64 = body
        .seats
        .iter()
        .map(|s| map.seats[*s as usize].price_minor)
        .sum();
    let (discount_minor, coupon_problem) = match body.promocode.as_deref() {
        Some(code) => match crate::coupons::quote(&state, code, price).await {
            Ok(discount) => (discount, None),
            Err(problem) => (0, Some(problem.detail)),
        },
        None => (0, None),
    };
    let suggested = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    Ok(read_reply(
        &meta,
        json!({
            "request_id": suggested,
            "estimated_price_minor": price - discount_minor.min(price),
            "price_before_discount_minor": price,
            "discount_minor": discount_minor,
            "currency": map.currency,
            "status": "available",
            "promocode": body.promocode,
            "promocode_problem": coupon_problem,
        }),
    ))
}

pub async fn lock(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<views::LockBody>,
) -> Result<Response> {
    caller.require(&[Role::Customer, Role::Admin])?;
    let (shard, number) = shard_id(&state, &id, "show")?;
    let ttl_ms = match body.ttl_seconds {
        Some(seconds) => Some(
            seconds
                .checked_mul(1_000)
                .ok_or_else(|| Problem::invalid("ttl_seconds", "too large"))?,
        ),
        None => None,
    };
    let command = CommandKind::LockSeats {
        show: ShowId(number),
        user: caller.id,
        seats: body.seats.iter().map(|s| SeatId(*s)).collect(),
        ttl_ms,
    };
    // The request id of `bookings/init` may stand in for an Idempotency-Key.
    let request = match (&body.request_id, headers.contains_key("idempotency-key")) {
        (Some(reused), false) => {
            let mut reuse = HeaderMap::new();
            let value = axum::http::HeaderValue::from_str(reused).map_err(|_| {
                Problem::invalid("request_id", "use the request_id of bookings/init")
            })?;
            reuse.insert("idempotency-key", value);
            caller.request_id(&reuse)?
        }
        _ => caller.request_id(&headers)?,
    };
    let written: Written = state.write(&shard, &request, command).await?;
    let Applied::SeatsLocked {
        lock,
        booking,
        seats,
        expires_at,
        total_price_minor,
    } = written.applied.clone()
    else {
        return Err(unexpected_answer());
    };
    Ok(reply(
        StatusCode::CREATED,
        written.headers(),
        json!({
            "id": ext_id(&shard, lock.0),
            "lock_id": ext_id(&shard, lock.0),
            "booking_id": ext_id(&shard, booking.0),
            "show_id": ext_id(&shard, number),
            "seats": seats.iter().map(|s| s.0).collect::<Vec<_>>(),
            "expires_at": views::rfc3339(expires_at),
            "total_price_minor": total_price_minor,
            "status": "pending_payment",
        }),
    ))
}

pub async fn release(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let (shard, number) = shard_id(&state, &id, "lock")?;
    let command = CommandKind::ReleaseLock {
        lock: LockId(number),
        user: caller.id,
    };
    let written = state
        .write(&shard, &caller.request_id(&headers)?, command)
        .await?;
    Ok((StatusCode::NO_CONTENT, written.headers()).into_response())
}

/// The caller's booking (or any booking for an admin); others' bookings are 404.
async fn own_booking(
    state: &Shared,
    caller: AuthUser,
    id: &str,
    level: Consistency,
) -> Result<(String, Booking, ReadMeta)> {
    let (shard, number) = shard_id(state, id, "booking")?;
    let (response, meta) = state
        .read(
            &shard,
            Query::Booking {
                booking: BookingId(number),
            },
            level,
            None,
        )
        .await?;
    let QueryResponse::Booking(booking) = response else {
        return Err(unexpected_answer());
    };
    if booking.user != caller.id && !caller.is_admin() {
        return Err(Problem::not_found(format!("unknown booking {id}")));
    }
    Ok((shard, booking, meta))
}

/// The contract's payment status word for a booking and its payment.
fn payment_status(booking: &Booking, payment: Option<&Payment>) -> &'static str {
    match payment.map(|p| p.status) {
        Some(PaymentStatus::Creating | PaymentStatus::Pending) => "pending",
        Some(PaymentStatus::Captured) => "completed",
        Some(PaymentStatus::Failed) => "failed",
        Some(PaymentStatus::RefundDue) => "refund_pending",
        Some(PaymentStatus::Refunded) => "refunded",
        // Bookings confirmed outside the saga (the client protocol's confirm).
        None => match booking.status {
            BookingStatus::PendingPayment => "pending",
            BookingStatus::Confirmed => "completed",
            BookingStatus::Cancelled if booking.refund_due_minor > 0 => "refunded",
            _ => "failed",
        },
    }
}

fn payment_body(shard: &str, booking: &Booking, payment: Option<&Payment>) -> Value {
    let booking_id = ext_id(shard, booking.id.0);
    let status_url = format!("/api/v1/bookings/{booking_id}/payment/status");
    json!({
        "payment_id": payment
            .and_then(|p| p.gateway_ref.clone())
            .unwrap_or_else(|| format!("pay-{booking_id}")),
        "payment_url": payment.and_then(|p| p.payment_url.clone()).unwrap_or(status_url.clone()),
        "status_url": status_url,
        "status": payment_status(booking, payment),
        "saga_step": payment.map(|p| p.status.as_str()),
        "amount_minor": payment.map_or(booking.total_price_minor, |p| p.amount_minor),
        "discount_minor": payment.map_or(0, |p| p.discount_minor),
        "refund_minor": payment.map_or(booking.refund_due_minor, |p| p.refund_minor),
        "currency": booking.currency,
        "reason": payment.and_then(|p| p.failure.clone()),
        "booking_id": booking_id,
        "booking_status": views::booking_status(booking.status),
    })
}

/// Starts (or, with the same Idempotency-Key, resumes) the booking's payment saga and
/// answers with its state after at most `payment.wait_ms`: `completed`, `failed`, or
/// `pending` (follow `status_url`; the webhook or the poller settles it).
pub async fn pay(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<views::PaymentBody>,
) -> Result<Response> {
    let (shard, number) = shard_id(&state, &id, "booking")?;
    let booking_id = BookingId(number);
    state
        .gateway
        .validate_method(&body.method)
        .map_err(|reason| Problem::invalid("method", reason))?;
    let request = request_id(&headers, &caller.id.to_string())?;
    let code = body
        .promocode
        .as_deref()
        .map(str::trim)
        .filter(|code| !code.is_empty());
    // StartPayment checks in the ledger that the payer owns the booking (another's is
    // NotOwner, answered as 404) and that its lock is live, and answers with the amount
    // and currency: a customer paying without a coupon needs no read first. A coupon
    // needs the booking's price, and an admin pays on the owner's behalf: those read
    // the booking, locally when this replica already has it (only what never changes
    // is used from it).
    let (user, discount_minor) = if code.is_some() || caller.is_admin() {
        let (_, booking, _) = match own_booking(&state, caller, &id, Consistency::Stale).await {
            Err(problem) if problem.status == StatusCode::NOT_FOUND => {
                own_booking(&state, caller, &id, Consistency::Linearizable).await?
            }
            found => found?,
        };
        // Cross-shard: a use of the coupon is reserved in `global` before the payment
        // starts in the city shard, and confirmed or given back when it settles.
        let discount_minor = match code {
            Some(code) => crate::coupons::reserve(&state, &shard, &booking, code).await?,
            None => 0,
        };
        (booking.user, discount_minor)
    } else {
        (caller.id, 0)
    };
    let command = CommandKind::StartPayment {
        booking: booking_id,
        user,
        method: body.method.clone(),
        discount_minor,
        coupon: code.map(str::to_owned),
    };
    // Registered before the gateway is called: its webhook may arrive at once.
    let mut wait = state.settle_waiters.register(&shard, booking_id);
    let started = match state.write(&shard, &request, command).await {
        Ok(started) => started,
        Err(problem) => {
            if let Some(code) = code {
                give_back_unused(&state, &shard, booking_id, code).await;
            }
            return Err(problem);
        }
    };
    let Applied::PaymentStarted {
        amount_minor,
        currency,
        ..
    } = started.applied
    else {
        return Err(unexpected_answer());
    };
    let created = crate::saga::begin(
        &state,
        &shard,
        booking_id,
        amount_minor,
        &currency,
        &body.method,
    )
    .await?;
    let index = started.index.max(created.index);
    let pending = matches!(
        created.applied,
        Applied::PaymentRecorded {
            status: PaymentStatus::Creating | PaymentStatus::Pending,
            ..
        }
    );
    // Whoever records the settling report (this request, a webhook, the poller) settles
    // the coupon use and rewards the referrer. The payer settles the coupon use too (one
    // write, the same request id), so that once a payer sees the payment settled, so is
    // the coupon's count.
    let (now, payment, meta) =
        crate::saga::settle(&state, &shard, booking_id, index, pending, &mut wait).await?;
    drop(wait);
    if let Some(payment) = &payment {
        crate::coupons::settle_coupon(&state, &shard, &now, payment).await;
    }
    Ok(reply(
        StatusCode::ACCEPTED,
        meta.headers(),
        payment_body(&shard, &now, payment.as_ref()),
    ))
}

/// Gives back a coupon use reserved for a payment that did not start, when nothing
/// will use it (best effort: the poller gives it back otherwise).
async fn give_back_unused(state: &Shared, shard: &str, booking: BookingId, code: &str) {
    let found =
        crate::saga::read_payment(state, shard, booking, Consistency::Linearizable, None).await;
    if let Ok((booking, payment, _)) = found {
        let decided = crate::coupons::decide(state, shard, code, &booking, payment.as_ref());
        if decided.await == Some(false) {
            let id = ext_id(shard, booking.id.0);
            if let Err(problem) = crate::coupons::settle_use(state, code, &id, false).await {
                tracing::info!(detail = %problem.detail, "coupon use left to the poller");
            }
        }
    }
}

pub async fn payment_status_route(
    State(state): State<Shared>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let (shard, booking, _) = own_booking(&state, caller, &id, Consistency::Linearizable).await?;
    let (booking, payment, meta) =
        crate::saga::read_payment(&state, &shard, booking.id, Consistency::Linearizable, None)
            .await?;
    Ok(read_reply(
        &meta,
        payment_body(&shard, &booking, payment.as_ref()),
    ))
}

/// The gateway's webhook: verified (HMAC over timestamp and body, constant-time,
/// within the replay window), then recorded in the booking's shard. Replays and
/// duplicates are one ledger write (the request id names the payment's version).
pub async fn payment_webhook(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response> {
    let event = state
        .gateway
        .verify_webhook(&headers, &body)
        .map_err(|reason| {
            metrics::counter!("seat_ledger_api_webhooks_total", "result" => "refused").increment(1);
            Problem::unauthorized(format!("webhook refused: {reason}"))
        })?;
    let booking = event.payment.booking.clone().ok_or_else(|| {
        Problem::invalid(
            "payment.metadata.booking_id",
            "the payment names no booking",
        )
    })?;
    let (shard, number) = shard_id(&state, &booking, "booking")?;
    if event.payment.status == GatewayStatus::Pending {
        // "Still pending" decides nothing, and the create call's answer already told
        // the ledger (or the poller will): one log write saved per payment.
        metrics::counter!("seat_ledger_api_webhooks_total", "result" => "pending").increment(1);
        return Ok(reply(
            StatusCode::OK,
            HeaderMap::new(),
            json!({ "received": event.id, "saga_step": null }),
        ));
    }
    let reported = crate::saga::record(&state, &shard, BookingId(number), &event.payment).await?;
    metrics::counter!("seat_ledger_api_webhooks_total", "result" => "recorded").increment(1);
    let status = match reported.written.applied {
        Applied::PaymentRecorded { status, .. } => Some(status.as_str()),
        _ => None,
    };
    // The report is recorded, so the gateway need not deliver again: the pollers retry
    // a refund owed or a coupon settlement that failed here (a referral reward is best
    // effort).
    if let Err(problem) = &reported.follow_up {
        tracing::info!(detail = %problem.detail, "saga follow-up deferred to the poller");
    }
    Ok(reply(
        StatusCode::OK,
        reported.written.headers(),
        json!({ "received": event.id, "saga_step": status }),
    ))
}

pub async fn rate(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Body(body): Body<views::RatingBody>,
) -> Result<Response> {
    let (shard, number) = shard_id(&state, &body.booking_id, "booking")?;
    let command = CommandKind::RateBooking {
        booking: BookingId(number),
        user: caller.id,
        stars: body.stars,
        message: body.message.unwrap_or_default(),
    };
    let written = state
        .write(&shard, &caller.request_id(&headers)?, command)
        .await?;
    let booking = state
        .read_after(
            &written,
            Query::Booking {
                booking: BookingId(number),
            },
        )
        .await?;
    let QueryResponse::Booking(booking) = booking else {
        return Err(unexpected_answer());
    };
    let summary = state
        .read_after(&written, Query::ShowRating { show: booking.show })
        .await?;
    let QueryResponse::Rating(summary) = summary else {
        return Err(unexpected_answer());
    };
    Ok(reply(
        StatusCode::CREATED,
        written.headers(),
        json!({
            "booking_id": body.booking_id,
            "stars": body.stars,
            "show_id": ext_id(&shard, booking.show.0),
            "show_rating": views::rating(&summary),
        }),
    ))
}

pub async fn show_rating(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response> {
    let (shard, number) = shard_id(&state, &id, "show")?;
    let query = Query::ShowRating {
        show: ShowId(number),
    };
    let (response, meta) = state.read(&shard, query, Consistency::Stale, None).await?;
    let QueryResponse::Rating(summary) = response else {
        return Err(unexpected_answer());
    };
    let mut body = views::rating(&summary);
    body["show_id"] = json!(id);
    Ok(read_reply(&meta, body))
}

pub async fn theater_rating(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response> {
    let (shard, number) = shard_id(&state, &id, "theater")?;
    let query = Query::TheaterRating {
        theater: TheaterId(number),
    };
    let (response, meta) = state.read(&shard, query, Consistency::Stale, None).await?;
    let QueryResponse::Rating(summary) = response else {
        return Err(unexpected_answer());
    };
    let mut body = views::rating(&summary);
    body["theater_id"] = json!(id);
    Ok(read_reply(&meta, body))
}

pub async fn booking(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Params(params): Params<ReadParams>,
) -> Result<Response> {
    let (level, _) = consistency(
        params.consistency.as_deref(),
        &headers,
        Consistency::Linearizable,
    )?;
    let (shard, booking, meta) = own_booking(&state, caller, &id, level).await?;
    Ok(read_reply(&meta, views::booking(&shard, &booking)))
}

pub async fn cancel(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let (shard, booking, _) = own_booking(&state, caller, &id, Consistency::Linearizable).await?;
    let request = caller.request_id(&headers)?;
    let command = CommandKind::CancelBooking {
        booking: booking.id,
        user: booking.user,
    };
    let run = async {
        let written = state.write(&shard, &request, command).await?;
        let (now, payment, _) = crate::saga::read_payment(
            &state,
            &shard,
            booking.id,
            Consistency::Session,
            Some(written.index),
        )
        .await?;
        let mut refund_status = payment_status(&now, payment.as_ref());
        let refund_minor = payment
            .as_ref()
            .map_or(now.refund_due_minor, |p| p.refund_minor);
        if let Some(payment) = payment.filter(|p| p.status == PaymentStatus::RefundDue) {
            // Refund at once; if the gateway does not answer, the poller retries.
            match crate::saga::advance(&state, &shard, &now, &payment).await {
                Ok(Some(_)) => refund_status = "refunded",
                Ok(None) => {}
                Err(problem) => tracing::info!(detail = %problem.detail, "refund deferred"),
            }
        }
        let mut body = views::booking(&shard, &now);
        body["payment_status"] = json!(refund_status);
        let summary =
            format!("cancelled; refund {refund_minor} minor units, payment {refund_status}");
        Ok(((written.headers(), body), summary))
    };
    let (written_headers, body) = if booking.user == caller.id {
        run.await?.0
    } else {
        // Only an admin reaches another user's booking: cancelling it (and issuing its
        // refund) on the customer's behalf is an admin action, recorded in the trail.
        let requested = format!(
            "cancel the {} booking of user:{} for show:{}, price {} minor units",
            booking.status.as_str(),
            booking.user.0,
            ext_id(&shard, booking.show.0),
            booking.total_price_minor
        );
        crate::audit::audited(
            &state,
            &caller,
            &request,
            "cancel_booking",
            &format!("booking:{}", ext_id(&shard, booking.id.0)),
            requested,
            run,
        )
        .await?
    };
    Ok(reply(StatusCode::OK, written_headers, body))
}

/// The caller's bookings across every city, newest first. The cursor lists, per
/// shard, the booking before which that shard's next page starts.
pub async fn bookings(
    State(state): State<Shared>,
    caller: AuthUser,
    Params(params): Params<ReadParams>,
) -> Result<Response> {
    let limit = page_limit(params.limit)?;
    let mut before: std::collections::BTreeMap<String, Option<u64>> = state
        .config
        .cities
        .iter()
        .map(|city| (city.shard.clone(), None))
        .collect();
    if let Some(cursor) = &params.cursor {
        before.values_mut().for_each(|v| *v = Some(0));
        for part in cursor.split(',').filter(|p| !p.is_empty()) {
            let (shard, number) = parse_ext_id(part).ok_or_else(|| {
                Problem::invalid("cursor", "use next_cursor of the previous page")
            })?;
            before.insert(shard, Some(number));
        }
    }
    let mut all: Vec<(u64, String, Booking)> = Vec::new();
    for (shard, position) in &before {
        if *position == Some(0) {
            continue;
        }
        let query = Query::UserBookings {
            user: caller.id,
            before: position.map(BookingId),
            limit,
        };
        let (response, _) = state
            .read(shard, query, Consistency::Linearizable, None)
            .await?;
        if let QueryResponse::Bookings { items, .. } = response {
            all.extend(items.into_iter().map(|b| (b.created_at, shard.clone(), b)));
        }
    }
    all.sort_by(|a, b| (b.0, &b.1, b.2.id).cmp(&(a.0, &a.1, a.2.id)));
    let more = all.len() > limit as usize;
    all.truncate(limit as usize);
    let next_cursor = more.then(|| {
        before
            .keys()
            .map(|shard| {
                let oldest = all
                    .iter()
                    .filter(|(_, s, _)| s == shard)
                    .map(|(_, _, b)| b.id.0)
                    .min();
                ext_id(shard, oldest.or(before[shard]).unwrap_or(u64::MAX))
            })
            .collect::<Vec<_>>()
            .join(",")
    });
    let items = all
        .iter()
        .map(|(_, shard, b)| views::booking(shard, b))
        .collect();
    Ok(reply(
        StatusCode::OK,
        HeaderMap::new(),
        views::page(items, next_cursor),
    ))
}
