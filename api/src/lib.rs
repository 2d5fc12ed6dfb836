//! The stateless REST booking service: authenticates clients, routes city requests to
//! their shard (writes to the leader, reads to a replica in this api's region) through
//! raft-node's client protocol, and answers in the contract's shapes.
//!
//! It knows nothing of RocksDB or openraft: the cluster is reached only through
//! `raft_node::client`. The demo starts nodes in-process through `raft_node::server`.
//!
//! # Layout
//! - `config`: the api node's configuration.
//! - `auth`: JWT (EdDSA), argon2id password hashes, refresh tokens.
//! - `app`: shared state, cluster access, auth extractor, rate limiting, idempotency.
//! - `problem`: the one mapping from rejections to HTTP status and problem+json.
//! - `views`: the JSON shapes of the contract, external ids, times.
//! - `routes`: the handlers; `ROUTES` in this file lists them for the router and the
//!   OpenAPI document alike.
//! - `payment`: the payment gateway trait, its HTTP client and the in-process sandbox.
//! - `coupons`: coupon endpoints and the cross-shard reserve / confirm / give-back saga.
//! - `saga`: the booking saga's driver (payment steps, reconciliation poller).
//! - `demo`: an embedded three-node cluster with sample data.
//! - `cluster`: the SRE view of the cluster, merged from the nodes' admin status.
//! - `openapi`: the OpenAPI document, generated from `routes()`.
//! - `web`: the browser pages (seat map booking, cluster), embedded in the binary.
//! - `login_guard`: login brute-force throttle per account and per IP.
//! - `audit`: the audit trail of admin actions (role changes, show cancellations).
//! - `secrets`: JWT keys from files, directories or the environment, never arguments.
//! - `support`: customer support tickets (global shard).
//! - `search`: the typo-tolerant show search index; `readmodel`: search, trending and
//!   user activity kept current from the event stream; `home`: feeds and carousels.
//! - `export`: events of a time range as CSV (`api export-events`).
//! - `notify`: the notifications worker (signed webhooks, SMTP email) with a durable
//!   cursor in the ledger.
//! - `events`: the ledger's event stream (SSE and paged JSON) with resume and access
//!   filtering.

pub mod app;
pub mod audit;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod coupons;
pub mod demo;
pub mod events;
pub mod export;
pub mod flights;
pub mod home;
pub mod login_guard;
pub mod notify;
pub mod openapi;
pub mod payment;
pub mod problem;
pub mod readmodel;
pub mod routes;
pub mod saga;
pub mod search;
pub mod seat_maps;
pub mod secrets;
pub mod support;
pub mod views;
pub mod web;

use app::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use raft_node::protocol::Consistency;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tower_http::trace::TraceLayer;

/// One endpoint: how it is routed and how the OpenAPI document describes it.
pub struct RouteSpec {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Whether a bearer token is required.
    pub auth: bool,
    pub handler: MethodRouter<Shared>,
}

fn spec(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: bool,
    handler: MethodRouter<Shared>,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        summary,
        auth,
        handler,
    }
}

/// Every endpoint of the service.
pub fn routes() -> Vec<RouteSpec> {
    use routes::*;
    vec![
        spec(
            "post",
            "/api/v1/signup",
            "Create an account and log in",
            false,
            post(signup),
        ),
        spec(
            "post",
            "/api/v1/login",
            "Log in with email and password",
            false,
            post(login),
        ),
        spec(
            "post",
            "/api/v1/auth/refresh-token",
            "Rotate a refresh token",
            false,
            post(refresh),
        ),
        spec(
            "get",
            "/api/v1/users/{userId}",
            "A user (self or admin)",
            true,
            get(get_user),
        ),
        spec("get", "/api/v1/cities", "Cities served", false, get(cities)),
        spec(
            "get",
            "/api/v1/theaters",
            "Theaters of a city (?city=)",
            false,
            get(theaters),
        ),
        spec(
            "post",
            "/api/v1/theaters",
            "Create a theater with screens and layouts",
            true,
            post(create_theater),
        ),
        spec(
            "get",
            "/api/v1/theaters/{theaterId}",
            "A theater, with its shows on ?date=",
            false,
            get(theater),
        ),
        spec(
            "post",
            "/api/v1/shows",
            "Publish a show (theater owner or admin)",
            true,
            post(create_show),
        ),
        spec(
            "get",
            "/api/v1/shows",
            "Shows by ?location=&date=&search= (search: ranked, typo-tolerant, accent-insensitive)",
            false,
            get(shows),
        ),
        spec(
            "get",
            "/api/v1/shows/{id}",
            "A show with prices and seat counts",
            false,
            get(show),
        ),
        spec(
            "get",
            "/api/v1/shows/{id}/seats",
            "The seat map of a show",
            false,
            get(seats),
        ),
        spec(
            "post",
            "/api/v1/shows/{id}/seats/lock",
            "Lock seats for a few minutes",
            true,
            post(lock),
        ),
        spec(
            "post",
            "/api/v1/users/{id}/bookings/init",
            "Quote a booking",
            true,
            post(init_booking),
        ),
        spec(
            "delete",
            "/api/v1/locks/{lock_id}",
            "Release a lock",
            true,
            delete(release),
        ),
        spec(
            "post",
            "/api/v1/bookings/{booking_id}/payment",
            "Pay for a locked booking",
            true,
            post(pay),
        ),
        spec(
            "get",
            "/api/v1/bookings/{booking_id}/payment/status",
            "Payment status",
            true,
            get(payment_status_route),
        ),
        spec(
            "get",
            "/api/v1/bookings",
            "Own bookings across cities, newest first",
            true,
            get(bookings),
        ),
        spec(
            "get",
            "/api/v1/bookings/{booking_id}",
            "A booking (owner or admin)",
            true,
            get(booking),
        ),
        spec(
            "delete",
            "/api/v1/bookings/{booking_id}",
            "Cancel a booking, refunding its payment (owner, or admin on the owner's \
             behalf: recorded in the audit trail)",
            true,
            delete(cancel),
        ),
        spec(
            "get",
            "/api/v1/cluster",
            "Shards, leaders, members by region, lag and leader changes (sre, admin)",
            true,
            get(crate::cluster::cluster_status),
        ),
        spec(
            "post",
            "/api/v1/payments/webhook",
            "Payment gateway webhook (HMAC-signed, timestamped; no bearer token)",
            false,
            post(payment_webhook),
        ),
        spec(
            "post",
            "/api/v1/rating",
            "Rate a confirmed booking of a show that has ended",
            true,
            post(rate),
        ),
        spec(
            "get",
            "/api/v1/shows/{id}/rating",
            "Average rating of a show",
            false,
            get(show_rating),
        ),
        spec(
            "get",
            "/api/v1/theaters/{theaterId}/rating",
            "Average rating of a theater",
            false,
            get(theater_rating),
        ),
        spec(
            "post",
            "/api/v1/coupons",
            "Create a coupon (admin; recorded in the audit trail)",
            true,
            post(crate::coupons::create_coupon),
        ),
        spec(
            "get",
            "/api/v1/coupons/{code}",
            "A coupon and its remaining uses",
            true,
            get(crate::coupons::get_coupon),
        ),
        spec(
            "post",
            "/api/v1/referrals",
            "Name the referral code of the user who referred you",
            true,
            post(crate::coupons::register_referral),
        ),
        spec(
            "get",
            "/api/v1/users/{userId}/referral",
            "A user's referral code, referrer and rewards (self or admin)",
            true,
            get(crate::coupons::get_referral),
        ),
        spec(
            "get",
            "/api/v1/events",
            "A city's domain events in log order (?city=&from_index=&cursor=&show=&limit=): \
             JSON page, or Server-Sent Events with Accept: text/event-stream (resume with \
             Last-Event-ID); 410 with oldest_index when behind the retention window. \
             Admin and sre see every event; customers their own bookings', payments' \
             (payment_started, payment_changed) and ratings' events, catalog events and \
             others' seat changes as anonymous seat_status",
            true,
            get(crate::events::events),
        ),
        spec(
            "post",
            "/api/v1/support/tickets",
            "Open a support ticket about one of your bookings {booking_id, subject, message}",
            true,
            post(crate::support::open),
        ),
        spec(
            "get",
            "/api/v1/shows/{id}/seats/events",
            "A show's seat changes for live seat maps, no token needed: anonymous \
             seat_status events as JSON page or Server-Sent Events (Last-Event-ID resumes)",
            false,
            get(crate::events::show_seat_events),
        ),
        spec(
            "get",
            "/api/v1/support/tickets",
            "Your tickets, or every ticket for support and admin (?status=&cursor=&limit=)",
            true,
            get(crate::support::list),
        ),
        spec(
            "get",
            "/api/v1/support/tickets/{ticketId}",
            "A ticket with its messages (its customer, support, admin)",
            true,
            get(crate::support::get),
        ),
        spec(
            "post",
            "/api/v1/support/tickets/{ticketId}/messages",
            "Write on a ticket {message} (its customer, support, admin)",
            true,
            post(crate::support::post_message),
        ),
        spec(
            "post",
            "/api/v1/support/tickets/{ticketId}/status",
            "Set a ticket's status {status} (support, admin; the customer may close)",
            true,
            post(crate::support::set_status),
        ),
        spec(
            "get",
            "/api/v1/home/feeds",
            "Trending shows of ?city= (recent confirmed bookings), and for a signed-in \
             caller their recent cities and genres; with the read model's staleness",
            false,
            get(crate::home::feeds),
        ),
        spec(
            "get",
            "/api/v1/home/carousels",
            "Upcoming shows of ?city=, and by genre; with the read model's staleness",
            false,
            get(crate::home::carousels),
        ),
        spec(
            "get",
            "/api/v1/users/{userId}/notification-channels",
            "A user's notification channels (self or admin)",
            true,
            get(crate::notify::get_channels),
        ),
        spec(
            "post",
            "/api/v1/users/{userId}/notification-channels",
            "Set a user's webhook and email choice {webhook_url, email}; a new webhook's \
             signing secret is returned once (self or admin)",
            true,
            post(crate::notify::set_channels),
        ),
        spec(
            "get",
            "/health/live",
            "Liveness",
            false,
            get(|| async { "ok" }),
        ),
        spec(
            "get",
            "/health/ready",
            "Readiness: the global shard answers",
            false,
            get(ready),
        ),
        spec(
            "get",
            "/metrics",
            "Prometheus metrics",
            false,
            get(|| async { raft_node::http::prometheus().render() }),
        ),
        spec(
            "get",
            "/api/openapi.json",
            "This document",
            false,
            get(openapi_json),
        ),
        spec(
            "get",
            "/api/v1/audit",
            "The audit trail of admin and SRE actions, newest first (admin, sre)",
            true,
            get(crate::audit::audit_log),
        ),
        spec(
            "post",
            "/api/v1/users/{id}/role",
            "Change a user's role (admin; audited)",
            true,
            post(crate::audit::set_role),
        ),
        spec(
            "post",
            "/api/v1/shows/{id}/cancel",
            "Cancel a show: locks released, paid bookings refunded (theater owner or admin; audited)",
            true,
            post(crate::audit::cancel_show),
        ),
    ]
}

/// The OpenAPI 3.1 document, generated from `routes()` (see `openapi`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi::document(&routes())
}

async fn openapi_json() -> impl IntoResponse {
    let mut document = serde_json::to_value(openapi()).unwrap_or_default();
    document["openapi"] = serde_json::json!("3.1.0");
    axum::Json(document)
}

async fn ready(State(state): State<Shared>) -> impl IntoResponse {
    let global = state.config.global_shard.clone();
    match state
        .read(
            &global,
            state_machine::Query::Clock,
            Consistency::Stale,
            None,
        )
        .await
    {
        Ok(_) => (StatusCode::OK, "ready").into_response(),
        Err(problem) => problem.into_response(),
    }
}

/// The whole service with its middleware.
pub fn router(state: Shared) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<Shared>> = BTreeMap::new();
    for route in routes() {
        let merged = match by_path.remove(route.path) {
            Some(existing) => existing.merge(route.handler),
            None => route.handler,
        };
        by_path.insert(route.path, merged);
    }
    // The browser pages are not part of the API document.
    let mut router = web::router();
    for (path, handler) in by_path {
        router = router.route(path, handler);
    }
    let body_limit = state.config.limits.body_bytes_max;
    let timeout = Duration::from_millis(state.config.limits.request_timeout_ms + 1_000);
    router
        .layer(axum::middleware::from_fn_with_state(state.clone(), app::rate_limit))
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let request_id = format!("{:016x}", fastrand::u64(..));
            tracing::info_span!("request", %request_id, method = %request.method(), path = %request.uri().path(), user = tracing::field::Empty,
                shard = tracing::field::Empty,
                replica = tracing::field::Empty)
        }))
        .with_state(state)
}

/// Serves the api on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The reconciliation poller lives exactly as long as this server.
    let _reconciler = saga::spawn_reconciler(state.clone());
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    // Answers are small and latency matters more than packet count: no Nagle delay.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves the api over TLS (rustls) on `listener` until `shutdown` completes. Handshakes
/// run in their own tasks; plain text and failed handshakes never reach the router and
/// are counted in `seat_ledger_tls_handshake_failures_total{listener="api", kind}`.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: std::sync::Arc<raft_node::tls::rustls::ServerConfig>,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::extract::ConnectInfo;
    use raft_node::tls::{PeerAddr, TlsListener};
    let listener = TlsListener::new(listener, tls, "api")?;
    // The rate limiter and the login throttle read the client's address as a SocketAddr.
    let app = router(state)
        .layer(axum::middleware::map_request(
            |mut request: axum::extract::Request| async move {
                if let Some(ConnectInfo(PeerAddr { addr, .. })) =
                    request.extensions().get::<ConnectInfo<PeerAddr>>().copied()
                {
                    request.extensions_mut().insert(ConnectInfo(addr));
                }
                request
            },
        ))
        .into_make_service_with_connect_info::<PeerAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
