//! The ledger as an event stream: `GET /api/v1/events?city=&from_index=`.
//!
//! Each city shard's domain events are read back in log order from any replica (the
//! api's region first), as a paged JSON list or, when the client accepts
//! `text/event-stream`, as Server-Sent Events. Every event carries its address
//! `index-seq` (log index, position within the entry) as its `id`, so a consumer that
//! reconnects with `Last-Event-ID` (or `?cursor=`) resumes right after the last event
//! it saw: nothing skipped, nothing doubled.
//!
//! Access: admin and sre see every event; anyone else sees the events of their own
//! bookings in full (their payments and ratings too), catalog events, and other
//! people's seat changes only as anonymous `seat_status` events (what a live seat map
//! needs); other people's payments and ratings not at all, and the public seat stream
//! never shows a payment or rating. The `global` shard is for admin and sre only.
//!
//! Retention: replicas keep a bounded window of events (`event_retention_indexes` in
//! the cluster's ledger limits) in the state machine's store, so events outlive log
//! compaction; a consumer asking for a position older than the window gets 410 with
//! the oldest index still available.
//!
//! This module owns no state beyond a cap on open streams; it knows nothing of how
//! replicas store events.

use crate::app::{AuthUser, Params, Shared};
use crate::problem::Problem;
use crate::views::{ext_id, parse_ext_id, rfc3339};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use raft_node::protocol::{Consistency, EventsReply};
use serde::Deserialize;
use serde_json::{json, Value};
use state_machine::{BookingId, Event, EventRecord, Query, QueryResponse, Role, ShowId, UserId};
use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Largest page of events one JSON request or one SSE fetch reads.
pub const EVENTS_PAGE_MAX: u32 = 100;
/// Open SSE streams one api node serves at once; more get 503.
pub const STREAMS_MAX: usize = 1_024;
/// How often an idle stream asks its replica for new events.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Consecutive failed fetches after which a stream gives up (the client reconnects).
const STREAM_FAILURES_MAX: u32 = 25;
/// Booking owners remembered per stream (for `lock_extended` and `booking_rated`,
/// which name no user).
const OWNER_CACHE_MAX: usize = 4_096;

/// Shared by every request of this api node.
pub struct EventsHub {
    /// Caps open SSE streams: each holds a connection and polls a replica.
    streams: Arc<Semaphore>,
    /// Search index, trending and user activity, built from the stream.
    pub models: crate::readmodel::ReadModels,
}

impl Default for EventsHub {
    fn default() -> Self {
        EventsHub {
            streams: Arc::new(Semaphore::new(STREAMS_MAX)),
            models: Default::default(),
        }
    }
}

/// The next event to read: `(log index, position within the entry)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub index: u64,
    pub seq: u32,
}

impl Position {
    /// The position right after the event `index-seq`.
    pub fn after(index: u64, seq: u32) -> Position {
        match seq.checked_add(1) {
            Some(seq) => Position { index, seq },
            None => Position {
                index: index.saturating_add(1),
                seq: 0,
            },
        }
    }

    /// The position a cursor names (`index.seq`, from `next_cursor`).
    pub fn parse_cursor(text: &str) -> Option<Position> {
        let (index, seq) = text.split_once('.')?;
        Some(Position {
            index: index.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    pub fn cursor(&self) -> String {
        format!("{}.{}", self.index, self.seq)
    }
}

/// An event's id, `index-seq`.
pub fn event_id(index: u64, seq: u32) -> String {
    format!("{index}-{seq}")
}

/// Parses an event id `index-seq`.
pub fn parse_event_id(text: &str) -> Option<(u64, u32)> {
    let (index, seq) = text.trim().split_once('-')?;
    Some((index.parse().ok()?, seq.parse().ok()?))
}

#[derive(Deserialize, Default)]
pub struct EventParams {
    /// A city id, or the global shard's name (admin, sre).
    pub city: Option<String>,
    /// First log index to read (inclusive); default: the oldest index still kept.
    pub from_index: Option<u64>,
    /// `next_cursor` of the previous page; wins over `from_index`.
    pub cursor: Option<String>,
    /// Events read (at most 100); a filtered view may return fewer, never skips any:
    /// follow `next_cursor`.
    pub limit: Option<u32>,
    /// Only events of this show (an external show id).
    pub show: Option<String>,
}

/// Who reads the stream, and so what they may see.
#[derive(Clone, Copy, Debug)]
enum Viewer {
    Everything,
    Customer(UserId),
    /// Anyone, without a token: one show's catalog and anonymous seat changes.
    Public,
}

/// What one consumer reads: shard, access, filter, and lock owners learnt so far.
struct Reader {
    state: Shared,
    shard: String,
    viewer: Viewer,
    show: Option<ShowId>,
    /// Bookings (and their locks) known to be the viewer's or not.
    owners: BTreeMap<BookingId, bool>,
}

/// One fetched page, shaped for the viewer.
struct Page {
    items: Vec<(EventRecord, Value)>,
    next: Position,
    reply: EventsReply,
}

impl Reader {
    fn new(state: &Shared, caller: AuthUser, params: &EventParams) -> Result<Reader, Problem> {
        let city = params
            .city
            .as_deref()
            .ok_or_else(|| Problem::invalid("city", "name a city id (GET /api/v1/cities)"))?;
        let viewer = match caller.role {
            Role::Admin | Role::Sre => Viewer::Everything,
            _ => Viewer::Customer(caller.id),
        };
        let shard = if city == state.config.global_shard {
            if matches!(viewer, Viewer::Customer(_)) {
                return Err(Problem::forbidden(
                    "the global shard's events are for the roles admin and sre",
                ));
            }
            city.to_owned()
        } else {
            state.shard_of_city(city)?
        };
        let show = match &params.show {
            Some(id) => {
                let (_, number) = parse_ext_id(id)
                    .filter(|(s, _)| *s == shard)
                    .ok_or_else(|| Problem::invalid("show", "a show id of this city"))?;
                Some(ShowId(number))
            }
            None => None,
        };
        Ok(Reader {
            state: state.clone(),
            shard,
            viewer,
            show,
            owners: BTreeMap::new(),
        })
    }

    /// The anonymous reader of one show's seat changes (live seat maps).
    fn public(state: &Shared, show_id: &str) -> Result<Reader, Problem> {
        let (shard, number) = parse_ext_id(show_id)
            .filter(|(shard, _)| state.city_shard(shard).is_ok())
            .ok_or_else(|| Problem::not_found(format!("unknown show {show_id}")))?;
        Ok(Reader {
            state: state.clone(),
            shard,
            viewer: Viewer::Public,
            show: Some(ShowId(number)),
            owners: BTreeMap::new(),
        })
    }

    /// Reads from `from` (or the oldest kept event) and shapes what the viewer may see.
    /// A `from` older than the replica's retention window is refused with 410.
    async fn fetch(&mut self, from: Option<Position>, limit: u32) -> Result<Page, Problem> {
        let start = from.unwrap_or(Position { index: 0, seq: 0 });
        let reply = self
            .state
            .cluster
            .events(
                &self.shard,
                start.index,
                start.seq,
                limit as usize,
                self.state.read_preference(),
                self.state.timeout(),
            )
            .await
            .map_err(|error| Problem::unavailable(error.to_string()))?;
        if from.is_some() && start.index < reply.kept_from {
            return Err(behind_window(start, &reply));
        }
        // Without a start the consumer begins at the window's edge, so the cursor it
        // gets back is never behind the window even when no event was returned.
        let mut next = match from {
            Some(start) => start,
            None => start.max(Position {
                index: reply.kept_from,
                seq: 0,
            }),
        };
        let mut items = Vec::new();
        for record in &reply.events {
            next = Position::after(record.index, record.seq);
            if let Some(view) = self.view(record).await? {
                items.push((record.clone(), view));
            }
        }
        Ok(Page { items, next, reply })
    }

    /// The viewer's view of one event, or `None` when they may not see it.
    async fn view(&mut self, record: &EventRecord) -> Result<Option<Value>, Problem> {
        let show = event_show(&record.event);
        if self.show.is_some() && show != self.show {
            return Ok(None);
        }
        let full = event_json(&self.shard, record);
        let me = match self.viewer {
            Viewer::Everything => return Ok(Some(full)),
            Viewer::Customer(me) => Some(me),
            Viewer::Public => None,
        };
        let view = match &record.event {
            Event::TheaterCreated { .. } | Event::ShowPublished { .. } => Some(full),
            Event::ShowCancelled { .. } => Some(full),
            Event::SeatsLocked {
                user, seats, show, ..
            } => Some(if Some(*user) == me {
                full
            } else {
                seat_status(&self.shard, record, *show, seats, "locked")
            }),
            Event::LockReleased {
                user, seats, show, ..
            }
            | Event::LockExpired {
                user, seats, show, ..
            }
            | Event::BookingCancelled {
                user, seats, show, ..
            } => Some(if Some(*user) == me {
                full
            } else {
                seat_status(&self.shard, record, *show, seats, "available")
            }),
            Event::BookingConfirmed {
                user, seats, show, ..
            } => Some(if Some(*user) == me {
                full
            } else {
                seat_status(&self.shard, record, *show, seats, "booked")
            }),
            Event::LockExtended { lock, .. } => match me {
                Some(me) => self
                    .owns(BookingId::of_lock(*lock), me, record.index)
                    .await?
                    .then_some(full),
                None => None,
            },
            // Payments are private like the booking they pay for: the payer sees them,
            // nobody else (not even anonymously: amounts and refunds say too much).
            Event::PaymentStarted { user, .. } | Event::PaymentChanged { user, .. } => {
                (Some(*user) == me).then_some(full)
            }
            // A rating names the booking, not its author: only the author sees it.
            Event::BookingRated { booking, .. } => match me {
                Some(me) => self.owns(*booking, me, record.index).await?.then_some(full),
                None => None,
            },
            // Accounts and anything newer are not for customers.
            #[allow(unreachable_patterns)]
            _ => None,
        };
        Ok(view)
    }

    /// Whether `booking` (or the lock of the same number) is `me`'s, asked once per
    /// stream from a replica that has applied the event that names it.
    async fn owns(&mut self, booking: BookingId, me: UserId, index: u64) -> Result<bool, Problem> {
        if let Some(owned) = self.owners.get(&booking) {
            return Ok(*owned);
        }
        let query = Query::Booking { booking };
        let owned = match self
            .state
            .read(&self.shard, query, Consistency::Session, Some(index))
            .await
        {
            Ok((QueryResponse::Booking(booking), _)) => booking.user == me,
            Ok(_) => false,
            Err(problem) if problem.status == StatusCode::NOT_FOUND => false,
            Err(problem) => return Err(problem),
        };
        if self.owners.len() >= OWNER_CACHE_MAX {
            self.owners.pop_first();
        }
        self.owners.insert(booking, owned);
        Ok(owned)
    }
}

fn behind_window(start: Position, reply: &EventsReply) -> Problem {
    Problem::new(
        StatusCode::GONE,
        "events-expired",
        "Events no longer kept",
        format!(
            "position {} is older than the retention window; events from index {} on are \
             kept: restart from from_index={} (and rebuild what depends on the missed events)",
            start.cursor(),
            reply.kept_from,
            reply.kept_from
        ),
    )
    .with("oldest_index", json!(reply.kept_from))
    .with("oldest_event_index", json!(reply.oldest_index))
    .with("requested_index", json!(start.index))
}

/// The show an event is about, if any.
pub fn event_show(event: &Event) -> Option<ShowId> {
    match event {
        Event::ShowPublished { show, .. }
        | Event::ShowCancelled { show }
        | Event::SeatsLocked { show, .. }
        | Event::LockExtended { show, .. }
        | Event::LockReleased { show, .. }
        | Event::LockExpired { show, .. }
        | Event::BookingConfirmed { show, .. }
        | Event::BookingCancelled { show, .. }
        | Event::PaymentStarted { show, .. }
        | Event::PaymentChanged { show, .. }
        | Event::BookingRated { show, .. } => Some(*show),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The user an event is about, if any.
pub fn event_user(event: &Event) -> Option<UserId> {
    match event {
        Event::UserRegistered { user }
        | Event::SeatsLocked { user, .. }
        | Event::LockReleased { user, .. }
        | Event::LockExpired { user, .. }
        | Event::BookingConfirmed { user, .. }
        | Event::BookingCancelled { user, .. }
        | Event::PaymentStarted { user, .. }
        | Event::PaymentChanged { user, .. } => Some(*user),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

fn seats_json(seats: &[state_machine::SeatId]) -> Value {
    json!(seats.iter().map(|seat| seat.0).collect::<Vec<_>>())
}

/// The anonymous view of someone else's seat change.
fn seat_status(
    shard: &str,
    record: &EventRecord,
    show: ShowId,
    seats: &[state_machine::SeatId],
    status: &str,
) -> Value {
    let mut value = json!({
        "type": "seat_status",
        "show_id": ext_id(shard, show.0),
        "seats": seats_json(seats),
        "status": status,
    });
    address(&mut value, shard, record);
    value
}

fn address(value: &mut Value, shard: &str, record: &EventRecord) {
    value["id"] = json!(event_id(record.index, record.seq));
    value["index"] = json!(record.index);
    value["seq"] = json!(record.seq);
    value["shard"] = json!(shard);
    value["at"] = json!(rfc3339(record.at_ms));
}

/// The full JSON of an event, with its address.
pub fn event_json(shard: &str, record: &EventRecord) -> Value {
    let id = |number: u64| ext_id(shard, number);
    let mut value = match &record.event {
        Event::UserRegistered { user } => json!({ "type": "user_registered", "user_id": user.0 }),
        Event::TheaterCreated { theater, city } => {
            json!({ "type": "theater_created", "theater_id": id(theater.0), "city": city })
        }
        Event::ShowPublished {
            show,
            theater,
            start_ms,
        } => json!({
            "type": "show_published", "show_id": id(show.0), "theater_id": id(theater.0),
            "start_time": rfc3339(*start_ms),
        }),
        Event::ShowCancelled { show } => json!({ "type": "show_cancelled", "show_id": id(show.0) }),
        Event::SeatsLocked {
            show,
            lock,
            user,
            seats,
            expires_at,
        } => json!({
            "type": "seats_locked", "show_id": id(show.0), "lock_id": id(lock.0),
            "booking_id": id(BookingId::of_lock(*lock).0), "user_id": user.0,
            "seats": seats_json(seats), "expires_at": rfc3339(*expires_at),
        }),
        Event::LockExtended {
            show,
            lock,
            expires_at,
        } => json!({
            "type": "lock_extended", "show_id": id(show.0), "lock_id": id(lock.0),
            "booking_id": id(BookingId::of_lock(*lock).0), "expires_at": rfc3339(*expires_at),
        }),
        Event::LockReleased {
            show,
            lock,
            user,
            seats,
        }
        | Event::LockExpired {
            show,
            lock,
            user,
            seats,
        } => {
            let kind = match &record.event {
                Event::LockExpired { .. } => "lock_expired",
                _ => "lock_released",
            };
            json!({
                "type": kind, "show_id": id(show.0), "lock_id": id(lock.0),
                "booking_id": id(BookingId::of_lock(*lock).0), "user_id": user.0,
                "seats": seats_json(seats),
            })
        }
        Event::BookingConfirmed {
            show,
            booking,
            user,
            seats,
            total_price_minor,
        } => json!({
            "type": "booking_confirmed", "show_id": id(show.0), "booking_id": id(booking.0),
            "user_id": user.0, "seats": seats_json(seats),
            "total_price_minor": total_price_minor,
        }),
        Event::BookingCancelled {
            show,
            booking,
            user,
            seats,
            refund_due_minor,
        } => json!({
            "type": "booking_cancelled", "show_id": id(show.0), "booking_id": id(booking.0),
            "user_id": user.0, "seats": seats_json(seats),
            "refund_due_minor": refund_due_minor,
        }),
        Event::TicketOpened { ticket, customer } => json!({
            "type": "ticket_opened", "ticket_id": id(ticket.0), "customer_id": customer.0,
        }),
        Event::TicketMessagePosted {
            ticket,
            author,
            from_agent,
        } => json!({
            "type": "ticket_message_posted", "ticket_id": id(ticket.0), "author_id": author.0,
            "from_agent": from_agent,
        }),
        Event::TicketStatusChanged { ticket, status } => json!({
            "type": "ticket_status_changed", "ticket_id": id(ticket.0), "status": status.as_str(),
        }),
        Event::PaymentStarted {
            show,
            booking,
            user,
            amount_minor,
        } => json!({
            "type": "payment_started", "show_id": id(show.0), "booking_id": id(booking.0),
            "user_id": user.0, "amount_minor": amount_minor,
        }),
        Event::PaymentChanged {
            show,
            booking,
            user,
            status,
            refund_minor,
        } => json!({
            "type": "payment_changed", "show_id": id(show.0), "booking_id": id(booking.0),
            "user_id": user.0, "status": status.as_str(), "refund_minor": refund_minor,
        }),
        Event::BookingRated {
            show,
            theater,
            booking,
            stars,
        } => json!({
            "type": "booking_rated", "show_id": id(show.0), "theater_id": id(theater.0),
            "booking_id": id(booking.0), "stars": stars,
        }),
        // Variants added later appear in their serde form until they get a shape here.
        #[allow(unreachable_patterns)]
        other => {
            json!({ "type": "other", "event": serde_json::to_value(other).unwrap_or_default() })
        }
    };
    address(&mut value, shard, record);
    value
}

/// Where to start: `Last-Event-ID` (SSE reconnect), `cursor`, `from_index`, or the
/// oldest kept event.
fn start_position(headers: &HeaderMap, params: &EventParams) -> Result<Option<Position>, Problem> {
    if let Some(value) = headers.get("last-event-id") {
        let (index, seq) = value
            .to_str()
            .ok()
            .and_then(parse_event_id)
            .ok_or_else(|| Problem::invalid("Last-Event-ID", "the id of an event, index-seq"))?;
        return Ok(Some(Position::after(index, seq)));
    }
    if let Some(cursor) = &params.cursor {
        return Position::parse_cursor(cursor)
            .map(Some)
            .ok_or_else(|| Problem::invalid("cursor", "use next_cursor of the previous page"));
    }
    Ok(params.from_index.map(|index| Position { index, seq: 0 }))
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/event-stream"))
}

/// `GET /api/v1/events`: a page of JSON, or Server-Sent Events when the client
/// accepts `text/event-stream`.
pub async fn events(
    State(state): State<Shared>,
    caller: AuthUser,
    headers: HeaderMap,
    Params(params): Params<EventParams>,
) -> Result<Response, Problem> {
    let reader = Reader::new(&state, caller, &params)?;
    serve(reader, &headers, &params).await
}

/// `GET /api/v1/shows/{id}/seats/events`: one show's seat changes for anyone (no
/// token; browsers' `EventSource` cannot send one), as anonymous `seat_status` events
/// plus the show's own catalog events; same paging, resume and 410 as `/events`.
pub async fn show_seat_events(
    State(state): State<Shared>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
    Params(params): Params<EventParams>,
) -> Result<Response, Problem> {
    let reader = Reader::public(&state, &id)?;
    serve(reader, &headers, &params).await
}

async fn serve(
    mut reader: Reader,
    headers: &HeaderMap,
    params: &EventParams,
) -> Result<Response, Problem> {
    let limit = match params.limit.unwrap_or(EVENTS_PAGE_MAX) {
        0 => return Err(Problem::invalid("limit", "at least 1")),
        n if n > EVENTS_PAGE_MAX => {
            return Err(Problem::invalid(
                "limit",
                format!("at most {EVENTS_PAGE_MAX}"),
            ))
        }
        n => n,
    };
    let start = start_position(headers, params)?;
    if wants_stream(headers) {
        return stream(reader, start).await;
    }
    let page = reader.fetch(start, limit).await?;
    metrics::counter!("seat_ledger_api_events_read_total", "shard" => reader.shard.clone())
        .increment(page.items.len() as u64);
    let mut response_headers = HeaderMap::new();
    for (name, value) in [
        ("x-shard", reader.shard.clone()),
        ("x-replica", page.reply.node.to_string()),
        ("x-index", page.reply.applied_index.to_string()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(name, value);
        }
    }
    let body = json!({
        "items": page.items.into_iter().map(|(_, view)| view).collect::<Vec<_>>(),
        "next_cursor": page.next.cursor(),
        "oldest_index": page.reply.kept_from,
        "applied_index": page.reply.applied_index,
        "replica": page.reply.node,
    });
    Ok((StatusCode::OK, response_headers, axum::Json(body)).into_response())
}

/// The SSE response: checks the start position once (410 before any byte is sent),
/// then polls the replica and sends what the viewer may see, each event with its id.
async fn stream(mut reader: Reader, start: Option<Position>) -> Result<Response, Problem> {
    let permit = reader
        .state
        .events
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            let mut problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-streams",
                "Too many event streams",
                format!("this api node serves at most {STREAMS_MAX} streams; retry later"),
            );
            problem.retry_after_s = Some(5);
            problem
        })?;
    let first = reader.fetch(start, EVENTS_PAGE_MAX).await?;
    let shard = reader.shard.clone();
    metrics::gauge!("seat_ledger_api_event_streams").increment(1.0);
    struct Streaming {
        reader: Reader,
        next: Position,
        ready: VecDeque<SseEvent>,
        failures: u32,
        finished: bool,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    impl Drop for Streaming {
        fn drop(&mut self) {
            metrics::gauge!("seat_ledger_api_event_streams").decrement(1.0);
        }
    }
    let mut ready: VecDeque<SseEvent> = VecDeque::new();
    ready.push_back(
        SseEvent::default()
            .retry(Duration::from_secs(1))
            .comment("stream"),
    );
    ready.extend(
        first
            .items
            .iter()
            .map(|(record, view)| sse_event(record, view)),
    );
    let initial = Streaming {
        reader,
        next: first.next,
        ready,
        failures: 0,
        finished: false,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(initial, move |mut streaming| {
        let shard = shard.clone();
        async move {
            loop {
                if let Some(event) = streaming.ready.pop_front() {
                    return Some((Ok::<_, Infallible>(event), streaming));
                }
                if streaming.finished {
                    return None;
                }
                match streaming
                    .reader
                    .fetch(Some(streaming.next), EVENTS_PAGE_MAX)
                    .await
                {
                    Ok(page) => {
                        streaming.failures = 0;
                        let idle = page.reply.events.is_empty();
                        streaming.next = page.next;
                        metrics::counter!("seat_ledger_api_events_streamed_total", "shard" => shard.clone())
                            .increment(page.items.len() as u64);
                        let sent = page
                            .items
                            .iter()
                            .map(|(record, view)| sse_event(record, view));
                        streaming.ready.extend(sent);
                        if idle {
                            tokio::time::sleep(POLL_INTERVAL).await;
                        }
                    }
                    Err(problem) if problem.status == StatusCode::GONE => {
                        streaming.ready.push_back(problem_event(&problem));
                        streaming.finished = true;
                    }
                    Err(problem) => {
                        streaming.failures += 1;
                        if streaming.failures >= STREAM_FAILURES_MAX {
                            streaming.ready.push_back(problem_event(&problem));
                            streaming.finished = true;
                        } else {
                            tokio::time::sleep(POLL_INTERVAL * streaming.failures.min(10)).await;
                        }
                    }
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn sse_event(record: &EventRecord, view: &Value) -> SseEvent {
    SseEvent::default()
        .id(event_id(record.index, record.seq))
        .data(view.to_string())
}

/// A stream that must stop says why, as problem+json in a `problem` event.
fn problem_event(problem: &Problem) -> SseEvent {
    let mut body = problem.extra.clone();
    body.insert("type".into(), json!(format!("/problems/{}", problem.kind)));
    body.insert("title".into(), json!(problem.title));
    body.insert("status".into(), json!(problem.status.as_u16()));
    body.insert("detail".into(), json!(problem.detail));
    SseEvent::default()
        .event("problem")
        .data(Value::Object(body).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_machine::LockId;

    #[test]
    fn positions_and_ids_round_trip() {
        assert_eq!(parse_event_id(&event_id(42, 3)), Some((42, 3)));
        assert_eq!(parse_event_id("42"), None);
        assert_eq!(parse_event_id("x-1"), None);
        assert_eq!(Position::after(42, 3), Position { index: 42, seq: 4 });
        assert_eq!(
            Position::after(42, u32::MAX),
            Position { index: 43, seq: 0 }
        );
        let position = Position { index: 7, seq: 2 };
        assert_eq!(Position::parse_cursor(&position.cursor()), Some(position));
        assert_eq!(Position::parse_cursor("7-2"), None);
    }

    #[test]
    fn released_and_expired_locks_differ_only_in_their_type() {
        let record = |event| EventRecord {
            index: 9,
            seq: 0,
            at_ms: 1_700_000_000_000,
            event,
        };
        let (show, lock, user, seats) = (
            ShowId(3),
            LockId(9),
            UserId(77),
            vec![state_machine::SeatId(4)],
        );
        let released = event_json(
            "city-a",
            &record(Event::LockReleased {
                show,
                lock,
                user,
                seats: seats.clone(),
            }),
        );
        let mut expired = event_json(
            "city-a",
            &record(Event::LockExpired {
                show,
                lock,
                user,
                seats,
            }),
        );
        assert_eq!(released["type"], "lock_released");
        assert_eq!(expired["type"], "lock_expired");
        assert_eq!(released["user_id"], 77);
        assert_eq!(released["lock_id"], ext_id("city-a", 9));
        expired["type"] = released["type"].clone();
        assert_eq!(expired, released);
    }

    #[test]
    fn customers_never_see_who_holds_other_seats() {
        let record = EventRecord {
            index: 9,
            seq: 1,
            at_ms: 1_700_000_000_000,
            event: Event::SeatsLocked {
                show: ShowId(3),
                lock: LockId(9),
                user: UserId(77),
                seats: vec![state_machine::SeatId(4)],
                expires_at: 1_700_000_300_000,
            },
        };
        let public = seat_status(
            "mumbai",
            &record,
            ShowId(3),
            &[state_machine::SeatId(4)],
            "locked",
        );
        assert_eq!(public["id"], "9-1");
        assert_eq!(public["show_id"], "mumbai-3");
        assert!(public.get("user_id").is_none() && public.get("lock_id").is_none());
        let full = event_json("mumbai", &record);
        assert_eq!(full["user_id"], 77);
        assert_eq!(full["type"], "seats_locked");
    }

    #[test]
    fn payment_and_rating_events_have_their_own_shapes() {
        let record = |event| EventRecord {
            index: 20,
            seq: 2,
            at_ms: 1_700_000_000_000,
            event,
        };
        let started = event_json(
            "mumbai",
            &record(Event::PaymentStarted {
                show: ShowId(3),
                booking: BookingId(9),
                user: UserId(77),
                amount_minor: 45_000,
            }),
        );
        assert_eq!(
            started,
            json!({
                "type": "payment_started", "show_id": "mumbai-3", "booking_id": "mumbai-9",
                "user_id": 77, "amount_minor": 45_000, "id": "20-2", "index": 20, "seq": 2,
                "shard": "mumbai", "at": rfc3339(1_700_000_000_000),
            })
        );
        let changed = event_json(
            "mumbai",
            &record(Event::PaymentChanged {
                show: ShowId(3),
                booking: BookingId(9),
                user: UserId(77),
                status: state_machine::PaymentStatus::Refunded,
                refund_minor: 45_000,
            }),
        );
        assert_eq!(changed["type"], "payment_changed");
        assert_eq!(changed["status"], "refunded");
        assert_eq!(changed["refund_minor"], 45_000);
        assert_eq!(changed["user_id"], 77);
        let rated = event_json(
            "mumbai",
            &record(Event::BookingRated {
                show: ShowId(3),
                theater: state_machine::TheaterId(1),
                booking: BookingId(9),
                stars: 4,
            }),
        );
        assert_eq!(
            (rated["type"].clone(), rated["theater_id"].clone()),
            (json!("booking_rated"), json!("mumbai-1"))
        );
        assert_eq!(rated["stars"], 4);
        for event in [&started, &changed, &rated] {
            assert_eq!(event["show_id"], "mumbai-3");
        }
        // Show filters and per-user views know whose payment it is.
        let payment = Event::PaymentStarted {
            show: ShowId(3),
            booking: BookingId(9),
            user: UserId(77),
            amount_minor: 1,
        };
        assert_eq!(event_show(&payment), Some(ShowId(3)));
        assert_eq!(event_user(&payment), Some(UserId(77)));
    }
}
