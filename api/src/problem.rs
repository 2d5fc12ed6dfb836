//! Errors as RFC 9457 problem+json, in one place: every ledger `Rejection` and every
//! api-level failure maps to exactly one HTTP status and one problem `type` here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use state_machine::Rejection;

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    /// Short machine name; the `type` URI is `/problems/{kind}`.
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    /// Machine-readable extra members (e.g. `seats`).
    pub extra: Map<String, Value>,
    pub retry_after_s: Option<u64>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            extra: Map::new(),
            retry_after_s: None,
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Problem {
        self.extra.insert(key.to_owned(), value);
        self
    }

    pub fn unauthorized(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn invalid(field: &str, detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
            "Invalid input",
            detail,
        )
        .with("field", json!(field))
    }

    pub fn unavailable(detail: impl Into<String>) -> Problem {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outcome-unknown",
            "Outcome unknown; retry with the same Idempotency-Key",
            detail,
        );
        problem.retry_after_s = Some(1);
        problem
    }

    pub fn rate_limited(retry_after_s: u64) -> Problem {
        let mut problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("slow down; retry after {retry_after_s} s"),
        );
        problem.retry_after_s = Some(retry_after_s);
        problem
    }
}

impl From<Rejection> for Problem {
    fn from(rejection: Rejection) -> Problem {
        use StatusCode as S;
        let detail = match &rejection {
            // Absent, as for an unknown id: the detail must not say that it exists.
            Rejection::NotOwner => {
                "no such lock or booking of yours: check the id, and the account you use".into()
            }
            _ => rejection.to_string(),
        };
        let (status, kind, title) = match &rejection {
            Rejection::SeatsTaken { .. } => (S::CONFLICT, "seats-taken", "Seats not available"),
            Rejection::UnknownSeats { .. } => {
                (S::UNPROCESSABLE_ENTITY, "unknown-seats", "No such seats")
            }
            Rejection::UnknownTheater { .. }
            | Rejection::UnknownScreen { .. }
            | Rejection::UnknownShow { .. }
            | Rejection::UnknownLock { .. }
            | Rejection::UnknownBooking { .. }
            | Rejection::UnknownUser { .. } => (S::NOT_FOUND, "not-found", "Not found"),
            // Another user's lock or booking is reported as absent, never as forbidden.
            Rejection::NotOwner => (S::NOT_FOUND, "not-found", "Not found"),
            Rejection::LockExpired { .. } => (S::CONFLICT, "lock-expired", "Lock expired"),
            Rejection::ShowStarted { .. } => (S::CONFLICT, "show-started", "Show already started"),
            Rejection::ShowCancelled { .. } => (S::CONFLICT, "show-cancelled", "Show cancelled"),
            Rejection::ScreenBusy { .. } => (S::CONFLICT, "screen-busy", "Screen busy"),
            Rejection::WrongBookingStatus { .. } => (
                S::CONFLICT,
                "wrong-booking-status",
                "Not possible in this booking status",
            ),
            Rejection::LimitExceeded { .. } => {
                (S::UNPROCESSABLE_ENTITY, "limit-exceeded", "Limit exceeded")
            }
            Rejection::InvalidInput { .. } => {
                (S::UNPROCESSABLE_ENTITY, "invalid-input", "Invalid input")
            }
            Rejection::ApplyFailed => (
                S::INTERNAL_SERVER_ERROR,
                "apply-failed",
                "The ledger could not apply the request",
            ),
            Rejection::RequestIdReused => (
                S::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused with a different request",
            ),
            Rejection::EmailTaken | Rejection::PhoneTaken => {
                (S::CONFLICT, "account-exists", "Account exists")
            }
            Rejection::RefreshTokenInvalid => {
                (S::UNAUTHORIZED, "unauthorized", "Authentication required")
            }
            Rejection::UnknownTicket { .. } => (S::NOT_FOUND, "not-found", "Not found"),
            Rejection::TicketClosed { .. } => (S::CONFLICT, "ticket-closed", "Ticket closed"),
            Rejection::PaymentExists { .. } => (
                S::CONFLICT,
                "payment-exists",
                "This booking already has a payment",
            ),
            Rejection::NoPayment { .. } => (S::NOT_FOUND, "not-found", "Not found"),
            Rejection::NotAttended { .. } => (
                S::CONFLICT,
                "not-attended",
                "Only a confirmed booking of a show that has ended can be rated",
            ),
            Rejection::AlreadyRated { .. } => (S::CONFLICT, "already-rated", "Already rated"),
            Rejection::CouponExists => (S::CONFLICT, "coupon-exists", "Coupon exists"),
            Rejection::CouponUnavailable { .. } => (
                S::CONFLICT,
                "coupon-unavailable",
                "The coupon cannot be used",
            ),
            // Nothing happened; the same key is safe to retry once room frees.
            Rejection::RequestTableFull { .. } => (
                S::SERVICE_UNAVAILABLE,
                "idempotency-table-full",
                "Too many recent Idempotency-Keys; retry later with the same key",
            ),
        };
        let mut problem = Problem::new(status, kind, title, detail);
        match rejection {
            Rejection::SeatsTaken { seats } | Rejection::UnknownSeats { seats } => {
                problem = problem.with(
                    "seats",
                    json!(seats.iter().map(|s| s.0).collect::<Vec<_>>()),
                );
            }
            Rejection::LimitExceeded {
                limit,
                max,
                requested,
            } => {
                problem = problem
                    .with("limit", json!(limit.to_string()))
                    .with("max", json!(max))
                    .with("requested", json!(requested));
            }
            Rejection::InvalidInput { field, .. } => problem = problem.with("field", json!(field)),
            Rejection::RequestTableFull { retry_after_ms } => {
                problem.retry_after_s = Some(retry_after_ms.div_ceil(1000).max(1));
            }
            _ => {}
        }
        problem
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = self.extra;
        body.insert("type".into(), json!(format!("/problems/{}", self.kind)));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status.as_u16()));
        body.insert("detail".into(), json!(self.detail));
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_machine::{LimitName, SeatId};

    #[test]
    fn rejections_map_to_one_status_each() {
        let taken = Problem::from(Rejection::SeatsTaken {
            seats: vec![SeatId(3)],
        });
        assert_eq!(
            (taken.status, taken.extra["seats"].clone()),
            (StatusCode::CONFLICT, json!([3]))
        );
        let limit = Problem::from(Rejection::LimitExceeded {
            limit: LimitName::SeatsPerLock,
            max: 10,
            requested: 11,
        });
        assert_eq!(limit.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(limit.extra["limit"], json!("seats_per_lock_max"));
        let not_owner = Problem::from(Rejection::NotOwner);
        assert_eq!(not_owner.status, StatusCode::NOT_FOUND);
        assert!(
            !not_owner.detail.contains("another user"),
            "a stranger learns nothing: {}",
            not_owner.detail
        );
        assert_eq!(
            Problem::from(Rejection::RequestIdReused).status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }

    #[test]
    fn a_full_idempotency_table_is_503_with_retry_after_in_whole_seconds() {
        let full = Problem::from(Rejection::RequestTableFull {
            retry_after_ms: 86_399_001,
        });
        assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.kind, "idempotency-table-full");
        assert_eq!(full.retry_after_s, Some(86_400));
        let response = full.into_response();
        assert_eq!(response.headers()["retry-after"], "86400");
        let soon = Problem::from(Rejection::RequestTableFull { retry_after_ms: 1 });
        assert_eq!(soon.retry_after_s, Some(1));
    }
}
