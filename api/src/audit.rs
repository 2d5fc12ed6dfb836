//! The audit trail as the api writes and serves it (`state_machine::audit`): admin
//! actions that pass through the api (role changes, show cancellations with their
//! refunds, an admin's cancellation of a customer's booking with its refund
//! (`routes::cancel`), coupon creation (`coupons::create_coupon`)) are recorded in
//! the `global` shard with who (the caller's user id and the role its token carried),
//! when (the log entry's leader-stamped time) and what.
//!
//! An action is recorded twice: `requested ...` before it runs, so nothing happens
//! unrecorded (if the trail cannot be written, the action is refused with 503), and
//! `applied ...` or `rejected: ...` after. Both entries reuse the action's request id
//! (from its Idempotency-Key), so a retried request records nothing twice.
//! Cluster operations (leader transfers, membership) go through the nodes' admin API
//! (`bookingctl`) and are recorded by the nodes (`raft_node::audit`).
//!
//! `GET /api/v1/audit` (roles admin, sre) pages the trail, newest first.

use crate::app::{AuthUser, Params, Shared};
use crate::problem::Problem;
use crate::views::{self, ext_id, parse_ext_id};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_node::protocol::Consistency;
use serde::Deserialize;
use serde_json::{json, Value};
use state_machine::{Applied, AuditEntry, CommandKind, Query, QueryResponse, Role, ShowId, UserId};

/// The caller with the role the `global` shard holds now, checked against `allowed`.
/// Access tokens carry the role they were issued with for their whole lifetime; the
/// actions here re-read it, so a demoted admin's older token cannot use them.
pub async fn current(
    state: &Shared,
    caller: AuthUser,
    allowed: &[Role],
) -> Result<AuthUser, Problem> {
    caller.require(allowed)?;
    let user = state.user(caller.id).await.map_err(|problem| {
        if problem.status == StatusCode::NOT_FOUND {
            Problem::unauthorized("the token's user no longer exists; log in again")
        } else {
            problem
        }
    })?;
    let now = AuthUser {
        id: caller.id,
        role: user.role,
    };
    now.require(allowed)?;
    Ok(now)
}

/// `user:<id> (<role>)`, the actor of an api caller.
pub fn actor(caller: &AuthUser) -> String {
    format!("user:{} ({})", caller.id.0, caller.role.as_str())
}

/// `detail` without control characters and within the ledger's bound (a rejection's
/// detail can be long, e.g. a list of seats).
fn bounded(detail: &str) -> String {
    let mut out = String::new();
    for c in detail.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > state_machine::audit::AUDIT_DETAIL_BYTES_MAX - 3 {
            out.push_str("...");
            break;
        }
        out.push(c);
    }
    out
}

/// Writes one audit entry under `request_id`; returns its id.
pub async fn record(
    state: &Shared,
    request_id: &str,
    actor: String,
    action: &str,
    target: &str,
    detail: String,
) -> Result<u64, Problem> {
    let global = state.config.global_shard.clone();
    let command = CommandKind::RecordAudit {
        actor,
        action: action.to_owned(),
        target: target.to_owned(),
        detail: bounded(&detail),
    };
    let written = state
        .write(&global, request_id, command)
        .await
        .map_err(|problem| {
            metrics::counter!("seat_ledger_audit_failures_total").increment(1);
            if problem.status.is_server_error() {
                Problem::unavailable(format!(
                    "the audit trail cannot be written ({}); nothing was done, retry with the \
                 same Idempotency-Key",
                    problem.detail
                ))
            } else {
                problem
            }
        })?;
    match written.applied {
        Applied::AuditRecorded { entry } => Ok(entry),
        _ => Err(Problem::unavailable("unexpected answer to an audit record")),
    }
}

/// Records `requested`, runs `action`, records its result; returns the action's result.
pub async fn audited<T>(
    state: &Shared,
    caller: &AuthUser,
    request_id: &str,
    action: &str,
    target: &str,
    requested: String,
    run: impl std::future::Future<Output = Result<(T, String), Problem>>,
) -> Result<T, Problem> {
    let who = actor(caller);
    record(
        state,
        &format!("{request_id}:audit-requested"),
        who.clone(),
        action,
        target,
        format!("requested: {requested}"),
    )
    .await?;
    let result = run.await;
    let detail = match &result {
        Ok((_, applied)) => format!("applied: {applied}"),
        Err(problem) => format!("rejected: {} ({})", problem.detail, problem.status.as_u16()),
    };
    if let Err(problem) = record(
        state,
        &format!("{request_id}:audit-result"),
        who,
        action,
        target,
        detail,
    )
    .await
    {
        // The request is already recorded; the action's own answer matters more.
        tracing::warn!(action, detail = problem.detail, "audit result not recorded");
    }
    result.map(|(value, _)| value)
}

fn entry(entry: &AuditEntry) -> Value {
    json!({
        "id": entry.id,
        "at": views::rfc3339(entry.at_ms),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
    })
}

#[derive(Deserialize, Default)]
pub struct AuditParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// `GET /api/v1/audit`: the trail, newest first (admin, sre).
pub async fn audit_log(
    State(state): State<Shared>,
    caller: AuthUser,
    Params(params): Params<AuditParams>,
) -> Result<Response, Problem> {
    current(&state, caller, &[Role::Admin, Role::Sre]).await?;
    let limit = match params.limit.unwrap_or(50) {
        0 => return Err(Problem::invalid("limit", "at least 1")),
        n if n > 100 => return Err(Problem::invalid("limit", "at most 100")),
        n => n,
    };
    let before = match &params.cursor {
        Some(cursor) => Some(
            cursor
                .parse::<u64>()
                .map_err(|_| Problem::invalid("cursor", "use next_cursor of the previous page"))?,
        ),
        None => None,
    };
    let global = state.config.global_shard.clone();
    let (response, meta) = state
        .read(
            &global,
            Query::AuditLog { before, limit },
            Consistency::Linearizable,
            None,
        )
        .await?;
    let QueryResponse::AuditLog { items, next } = response else {
        return Err(Problem::unavailable("unexpected answer to the audit query"));
    };
    let items = items.iter().map(entry).collect();
    Ok((
        StatusCode::OK,
        meta.headers(),
        Json(views::page(items, next.map(|id| id.to_string()))),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct RoleBody {
    pub role: String,
}

/// `POST /api/v1/users/{id}/role`: an admin changes a user's role (audited).
pub async fn set_role(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    crate::app::Body(body): crate::app::Body<RoleBody>,
) -> Result<Response, Problem> {
    let caller = current(&state, caller, &[Role::Admin]).await?;
    let user: u64 = id.parse().map_err(|_| Problem::not_found("no such user"))?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| Problem::invalid("role", "customer, theater_owner, admin or sre"))?;
    let request = caller.request_id(&headers)?;
    let target = format!("user:{user}");
    let global = state.config.global_shard.clone();
    let run = async {
        let written = state
            .write(
                &global,
                &request,
                CommandKind::SetRole {
                    user: UserId(user),
                    role,
                },
            )
            .await?;
        Ok((written, format!("role={}", role.as_str())))
    };
    let written = audited(
        &state,
        &caller,
        &request,
        "set_role",
        &target,
        format!("role={}", role.as_str()),
        run,
    )
    .await?;
    let account = state
        .read_after(&written, Query::User { user: UserId(user) })
        .await?;
    let QueryResponse::User(account) = account else {
        return Err(Problem::unavailable("unexpected answer to a user query"));
    };
    Ok((
        StatusCode::OK,
        written.headers(),
        Json(views::user(&account)),
    )
        .into_response())
}

/// `POST /api/v1/shows/{id}/cancel`: the theater's owner or an admin cancels a show;
/// live locks are released and paid bookings cancelled with their refunds due (audited).
pub async fn cancel_show(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let caller = current(&state, caller, &[Role::TheaterOwner, Role::Admin]).await?;
    let (shard, number) = parse_ext_id(&id).ok_or_else(|| {
        Problem::not_found(format!("show {id:?} is not an id this service issued"))
    })?;
    state.city_shard(&shard)?;
    let (response, _) = state
        .read(
            &shard,
            Query::Show {
                show: ShowId(number),
            },
            Consistency::Linearizable,
            None,
        )
        .await?;
    let QueryResponse::Show(view) = response else {
        return Err(Problem::unavailable("unexpected answer to a show query"));
    };
    let (response, _) = state
        .read(
            &shard,
            Query::Theater {
                theater: view.show.theater,
            },
            Consistency::Linearizable,
            None,
        )
        .await?;
    let QueryResponse::Theater(theater) = response else {
        return Err(Problem::unavailable("unexpected answer to a theater query"));
    };
    if theater.owner != caller.id && !caller.is_admin() {
        // Another owner's show is reported as absent, like other users' bookings.
        return Err(Problem::not_found(format!(
            "no show {id} among your theaters' shows"
        )));
    }
    let request = caller.request_id(&headers)?;
    let target = format!("show:{}", ext_id(&shard, number));
    let run = async {
        let written = state
            .write(
                &shard,
                &request,
                CommandKind::CancelShow {
                    show: ShowId(number),
                },
            )
            .await?;
        let Applied::ShowCancelled {
            locks_released,
            bookings_cancelled,
            ..
        } = written.applied
        else {
            return Err(Problem::unavailable(
                "unexpected answer to a show cancellation",
            ));
        };
        let summary = format!(
            "{locks_released} locks released, {bookings_cancelled} paid bookings cancelled \
             with their refunds due"
        );
        Ok(((written, locks_released, bookings_cancelled), summary))
    };
    let (written, locks_released, bookings_cancelled) = audited(
        &state,
        &caller,
        &request,
        "cancel_show",
        &target,
        format!(
            "cancel {:?} starting {}",
            view.show.title,
            views::rfc3339(view.show.start_ms)
        ),
        run,
    )
    .await?;
    Ok((
        StatusCode::OK,
        written.headers(),
        Json(json!({
            "show_id": ext_id(&shard, number),
            "status": "cancelled",
            "locks_released": locks_released,
            "bookings_cancelled": bookings_cancelled,
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::bounded;
    use state_machine::audit::AUDIT_DETAIL_BYTES_MAX;

    #[test]
    fn details_are_cut_to_the_ledger_bound_without_controls() {
        assert_eq!(bounded("a\nb\u{0}c"), "abc");
        let long = "é".repeat(AUDIT_DETAIL_BYTES_MAX);
        let cut = bounded(&long);
        assert!(cut.len() <= AUDIT_DETAIL_BYTES_MAX && cut.ends_with("..."));
    }
}
