//! Customer support (the design's back-office chat): tickets about a booking, messages
//! between the customer and support agents (roles `support` and `admin`), statuses.
//! Tickets live in the `global` shard; their ids are `global-<number>`.
//!
//! Who may do what: a customer opens tickets about their own bookings and reads and
//! writes only their own tickets (another customer's ticket is 404, never 403); agents
//! read every ticket, answer, and set any status; a customer may close their own.

use crate::app::{AuthUser, Body, Params, Shared};
use crate::problem::Problem;
use crate::views::{ext_id, parse_ext_id, rfc3339};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raft_node::protocol::Consistency;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use state_machine::{
    Actor, Applied, BookingId, CommandKind, Query, QueryResponse, Role, Ticket, TicketId,
    TicketStatus,
};

type Result<T> = std::result::Result<T, Problem>;

#[derive(Debug, Deserialize, Serialize)]
pub struct OpenBody {
    pub booking_id: String,
    pub subject: String,
    pub message: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct MessageBody {
    pub message: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct StatusBody {
    pub status: String,
}

#[derive(Debug, Deserialize, Default)]
pub struct ListParams {
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<u32>,
}

fn is_agent(caller: &AuthUser) -> bool {
    matches!(caller.role, Role::Admin | Role::Support)
}

fn actor(caller: &AuthUser) -> Actor {
    Actor {
        user: caller.id,
        agent: is_agent(caller),
    }
}

pub fn ticket_json(shard: &str, ticket: &Ticket) -> Value {
    let id = ext_id(shard, ticket.id.0);
    json!({
        "id": id,
        "ticket_id": id,
        "booking_id": ticket.booking,
        "customer_id": ticket.customer.0,
        "subject": ticket.subject,
        "status": ticket.status.as_str(),
        "agent_id": ticket.agent.map(|agent| agent.0),
        "messages": ticket.messages.iter().map(|m| json!({
            "author_id": m.author.0,
            "from_agent": m.from_agent,
            "body": m.body,
            "at": rfc3339(m.at_ms),
        })).collect::<Vec<_>>(),
        "created_at": rfc3339(ticket.created_at),
        "updated_at": rfc3339(ticket.updated_at),
    })
}

fn ticket_id(state: &Shared, id: &str) -> Result<TicketId> {
    parse_ext_id(id)
        .filter(|(shard, _)| *shard == state.config.global_shard)
        .map(|(_, number)| TicketId(number))
        .ok_or_else(|| {
            Problem::not_found(format!("ticket {id:?} is not an id this service issued"))
        })
}

/// The ticket if the caller may see it; another customer's ticket is 404.
async fn visible_ticket(state: &Shared, caller: &AuthUser, id: &str) -> Result<Ticket> {
    let ticket = ticket_id(state, id)?;
    let global = state.config.global_shard.clone();
    let (response, _) = state
        .read(
            &global,
            Query::Ticket { ticket },
            Consistency::Linearizable,
            None,
        )
        .await?;
    let QueryResponse::Ticket(ticket) = response else {
        return Err(Problem::unavailable(
            "unexpected answer from the global shard",
        ));
    };
    if ticket.customer != caller.id && !is_agent(caller) {
        return Err(Problem::not_found(format!("unknown ticket {id}")));
    }
    Ok(ticket)
}

async fn written_ticket(
    state: &Shared,
    written: &crate::app::Written,
    ticket: TicketId,
) -> Result<Value> {
    let response = state.read_after(written, Query::Ticket { ticket }).await?;
    let QueryResponse::Ticket(ticket) = response else {
        return Err(Problem::unavailable(
            "unexpected answer from the global shard",
        ));
    };
    Ok(ticket_json(&written.shard, &ticket))
}

/// `POST /api/v1/support/tickets`: a customer opens a ticket about their booking.
pub async fn open(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Body(body): Body<OpenBody>,
) -> Result<Response> {
    let (shard, number) = parse_ext_id(&body.booking_id)
        .filter(|(shard, _)| state.city_shard(shard).is_ok())
        .ok_or_else(|| Problem::invalid("booking_id", "the id of one of your bookings"))?;
    let query = Query::Booking {
        booking: BookingId(number),
    };
    let (response, _) = state
        .read(&shard, query, Consistency::Linearizable, None)
        .await?;
    let QueryResponse::Booking(booking) = response else {
        return Err(Problem::unavailable(
            "unexpected answer from the city shard",
        ));
    };
    if booking.user != caller.id {
        return Err(Problem::not_found(format!(
            "unknown booking {}",
            body.booking_id
        )));
    }
    let command = CommandKind::OpenTicket {
        customer: caller.id,
        booking: ext_id(&shard, number),
        subject: body.subject.trim().to_owned(),
        body: body.message,
    };
    let global = state.config.global_shard.clone();
    let written = state
        .write(&global, &caller.request_id(&headers)?, command)
        .await?;
    let Applied::TicketOpened { ticket } = written.applied else {
        return Err(Problem::unavailable(
            "unexpected answer from the global shard",
        ));
    };
    let body = written_ticket(&state, &written, ticket).await?;
    metrics::counter!("seat_ledger_api_tickets_opened_total").increment(1);
    Ok((StatusCode::CREATED, written.headers(), Json(body)).into_response())
}

/// `GET /api/v1/support/tickets`: the caller's tickets, or every ticket for agents.
pub async fn list(
    State(state): State<Shared>,
    caller: AuthUser,
    Params(params): Params<ListParams>,
) -> Result<Response> {
    let status = match &params.status {
        Some(text) => Some(TicketStatus::parse(text).ok_or_else(|| {
            Problem::invalid("status", "open, awaiting_customer, resolved or closed")
        })?),
        None => None,
    };
    let before = match &params.cursor {
        Some(cursor) => Some(TicketId(cursor.parse().map_err(|_| {
            Problem::invalid("cursor", "use next_cursor of the previous page")
        })?)),
        None => None,
    };
    let limit = match params.limit.unwrap_or(20) {
        0 => return Err(Problem::invalid("limit", "at least 1")),
        n if n > 100 => return Err(Problem::invalid("limit", "at most 100")),
        n => n,
    };
    let customer = (!is_agent(&caller)).then_some(caller.id);
    let global = state.config.global_shard.clone();
    let query = Query::Tickets {
        customer,
        status,
        before,
        limit,
    };
    let (response, meta) = state
        .read(&global, query, Consistency::Linearizable, None)
        .await?;
    let QueryResponse::Tickets { items, next } = response else {
        return Err(Problem::unavailable(
            "unexpected answer from the global shard",
        ));
    };
    let items = items.iter().map(|t| ticket_json(&global, t)).collect();
    let body = crate::views::page(items, next.map(|id| id.0.to_string()));
    Ok((StatusCode::OK, meta.headers(), Json(body)).into_response())
}

/// `GET /api/v1/support/tickets/{ticketId}`
pub async fn get(
    State(state): State<Shared>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let ticket = visible_ticket(&state, &caller, &id).await?;
    Ok(Json(ticket_json(&state.config.global_shard, &ticket)).into_response())
}

/// `POST /api/v1/support/tickets/{ticketId}/messages`
pub async fn post_message(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<MessageBody>,
) -> Result<Response> {
    let ticket = visible_ticket(&state, &caller, &id).await?;
    let command = CommandKind::PostTicketMessage {
        ticket: ticket.id,
        actor: actor(&caller),
        body: body.message,
    };
    let global = state.config.global_shard.clone();
    let written = state
        .write(&global, &caller.request_id(&headers)?, command)
        .await?;
    let body = written_ticket(&state, &written, ticket.id).await?;
    Ok((StatusCode::CREATED, written.headers(), Json(body)).into_response())
}

/// `POST /api/v1/support/tickets/{ticketId}/status`
pub async fn set_status(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<StatusBody>,
) -> Result<Response> {
    let status = TicketStatus::parse(&body.status)
        .ok_or_else(|| Problem::invalid("status", "open, awaiting_customer, resolved or closed"))?;
    let ticket = visible_ticket(&state, &caller, &id).await?;
    if !is_agent(&caller) && status != TicketStatus::Closed {
        return Err(Problem::forbidden(
            "a customer may only close a ticket; write a message to reopen it",
        ));
    }
    let command = CommandKind::SetTicketStatus {
        ticket: ticket.id,
        actor: actor(&caller),
        status,
    };
    let global = state.config.global_shard.clone();
    let written = state
        .write(&global, &caller.request_id(&headers)?, command)
        .await?;
    let body = written_ticket(&state, &written, ticket.id).await?;
    Ok((StatusCode::OK, written.headers(), Json(body)).into_response())
}
