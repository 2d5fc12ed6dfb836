//! JSON shapes of the REST contract and their conversion from ledger values. External
//! ids carry their shard (`mumbai-42`) so any api node can route them; times are RFC
//! 3339 UTC strings; money is integer minor units with a currency code.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use state_machine::{Booking, BookingStatus, SeatMap, SeatStatus, ShowView, Theater, User};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `shard-number`, the external form of every shard-local id.
pub fn ext_id(shard: &str, number: u64) -> String {
    format!("{shard}-{number}")
}

/// Splits an external id into shard and number; `None` when malformed.
pub fn parse_ext_id(id: &str) -> Option<(String, u64)> {
    let (shard, number) = id.rsplit_once('-')?;
    let number = number.parse().ok()?;
    (!shard.is_empty()).then(|| (shard.to_owned(), number))
}

pub fn rfc3339(ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The UTC day `YYYY-MM-DD` as `[start, end)` in ms.
pub fn day_range(date: &str) -> Option<(u64, u64)> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(date, &format).ok()?;
    let start = day.midnight().assume_utc().unix_timestamp();
    let start_ms = u64::try_from(start).ok()? * 1_000;
    Some((start_ms, start_ms + 86_400_000))
}

pub fn booking_status(status: BookingStatus) -> &'static str {
    match status {
        // A lock released before payment is, to clients, a cancelled booking.
        BookingStatus::Released => "cancelled",
        other => other.as_str(),
    }
}

pub fn booking(shard: &str, b: &Booking) -> Value {
    let id = ext_id(shard, b.id.0);
    json!({
        "id": id,
        "booking_id": id,
        "lock_id": ext_id(shard, b.lock_id().0),
        "status": booking_status(b.status),
        "show_id": ext_id(shard, b.show.0),
        "user_id": b.user.0,
        "seats": b.seats.iter().map(|s| s.0).collect::<Vec<_>>(),
        "total_price_minor": b.total_price_minor,
        "currency": b.currency,
        "created_at": rfc3339(b.created_at),
        "expires_at": rfc3339(b.expires_at),
        "payment_ref": b.payment_ref,
        "refund_due_minor": b.refund_due_minor,
    })
}

pub fn theater(shard: &str, t: &Theater) -> Value {
    json!({
        "id": ext_id(shard, t.id.0),
        "city": t.city,
        "name": t.name,
        "address": t.address,
        "lat": f64::from(t.lat_micro_deg) / 1e6,
        "long": f64::from(t.lon_micro_deg) / 1e6,
        "owner_id": t.owner.0,
        "screens": t.screens.iter().enumerate().map(|(index, screen)| json!({
            "index": index,
            "name": screen.name,
            "seat_count": screen.seat_count(),
            "rows": screen.rows.iter().map(|row| json!({
                "label": row.label, "seats": row.seats, "category": row.category.as_str(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

pub fn show(shard: &str, view: &ShowView) -> Value {
    let s = &view.show;
    json!({
        "id": ext_id(shard, s.id.0),
        "title": s.title,
        "genre": s.genre,
        "theater_id": ext_id(shard, s.theater.0),
        "theater_name": view.theater_name,
        "city": view.city,
        "screen": s.screen.0,
        "start_time": rfc3339(s.start_ms),
        "end_time": rfc3339(s.end_ms),
        "currency": s.currency,
        "prices": {
            "normal_minor": s.prices.normal_minor,
            "premium_minor": s.prices.premium_minor,
            "vip_minor": s.prices.vip_minor,
        },
        "status": match s.status { state_machine::ShowStatus::Published => "published", _ => "cancelled" },
        "seat_counts": {
            "available": view.counts.available,
            "locked": view.counts.locked,
            "booked": view.counts.booked,
        },
    })
}

/// `GET /shows/{id}/seats`: written as typed fields rather than through a JSON value
/// tree, since a seat map is the largest and most frequent answer (hundreds of seats
/// per read).
#[derive(Serialize)]
pub struct SeatMapBody<'a> {
    show_id: String,
    currency: &'a str,
    seats: Vec<SeatBody<'a>>,
}

#[derive(Serialize)]
struct SeatBody<'a> {
    id: u32,
    seat_id: u32,
    row: &'a str,
    number: u16,
    category: &'static str,
    price_minor: u64,
    status: &'static str,
}

pub fn seat_map<'a>(shard: &str, map: &'a SeatMap) -> SeatMapBody<'a> {
    SeatMapBody {
        show_id: ext_id(shard, map.show.0),
        currency: &map.currency,
        seats: map
            .seats
            .iter()
            .map(|seat| SeatBody {
                id: seat.seat.0,
                seat_id: seat.seat.0,
                row: &seat.row,
                number: seat.number,
                category: seat.category.as_str(),
                price_minor: seat.price_minor,
                status: match seat.status {
                    SeatStatus::Available => "available",
                    SeatStatus::Locked => "locked",
                    SeatStatus::Booked => "booked",
                },
            })
            .collect(),
    }
}

pub fn user(u: &User) -> Value {
    json!({ "id": u.id.0, "email": u.email, "phone": u.phone, "name": u.name, "role": u.role.as_str() })
}

/// `{ "items": [...], "next_cursor": ... }`
pub fn page(items: Vec<Value>, next_cursor: Option<String>) -> Value {
    json!({ "items": items, "next_cursor": next_cursor })
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct SignupBody {
    pub email: String,
    pub phone: String,
    pub password: String,
    pub name: String,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct RefreshBody {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct RowBody {
    pub label: String,
    pub seats: u16,
    #[serde(default = "normal")]
    pub category: String,
}

fn normal() -> String {
    "normal".into()
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ScreenBody {
    pub name: String,
    pub rows: Vec<RowBody>,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct TheaterBody {
    pub city: String,
    pub name: String,
    #[serde(default)]
    pub address: String,
    pub lat: f64,
    pub long: f64,
    pub screens: Vec<ScreenBody>,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PricesBody {
    pub normal_minor: u64,
    pub premium_minor: u64,
    pub vip_minor: u64,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct ShowBody {
    pub theater_id: String,
    #[serde(default)]
    pub screen: u16,
    pub title: String,
    #[serde(default)]
    pub genre: String,
    pub start_time: String,
    pub end_time: String,
    pub prices: PricesBody,
    #[serde(default = "inr")]
    pub currency: String,
}

fn inr() -> String {
    "INR".into()
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct LockBody {
    pub seats: Vec<u32>,
    pub ttl_seconds: Option<u64>,
    /// The `request_id` of `bookings/init`, used as the Idempotency-Key when no header
    /// names one.
    #[serde(default)]
    pub request_id: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct InitBody {
    pub show_id: String,
    pub seats: Vec<u32>,
    pub promocode: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
pub struct PaymentBody {
    pub method: String,
    pub promocode: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_and_times_round_trip() {
        assert_eq!(
            parse_ext_id(&ext_id("new-delhi", 42)),
            Some(("new-delhi".into(), 42))
        );
        assert_eq!(parse_ext_id("nodash"), None);
        assert_eq!(parse_ext_id("-5"), None);
        assert_eq!(
            parse_rfc3339(&rfc3339(1_700_000_000_123)),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            day_range("2026-11-24").map(|(s, e)| e - s),
            Some(86_400_000)
        );
        assert!(day_range("24/11/2026").is_none());
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatingBody {
    pub booking_id: String,
    pub stars: u8,
    #[serde(default)]
    pub message: Option<String>,
}

/// A rating summary: count and average stars (two decimals), `null` without ratings.
pub fn rating(summary: &state_machine::RatingSummary) -> Value {
    let average = (summary.count > 0).then(|| {
        let hundredths = summary.stars_sum * 100 / summary.count;
        hundredths as f64 / 100.0
    });
    json!({ "count": summary.count, "average_stars": average })
}
