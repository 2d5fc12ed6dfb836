//! The api node's shared state, its access to the cluster (writes to leaders, reads at
//! a consistency level from preferred replicas), the authenticated-user extractor, the
//! rate limiter, and the router with its middleware.

use crate::auth::Keys;
use crate::config::ApiConfig;
use crate::payment::PaymentGateway;
use crate::problem::Problem;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use raft_node::client::{ClientError, ClusterClient};
use raft_node::protocol::{Consistency, ReadReply, ReadRequest};
use state_machine::{Applied, CommandKind, Outcome, Query, QueryResponse, Role, UserId};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

pub struct AppState {
    pub config: ApiConfig,
    pub cluster: ClusterClient,
    pub keys: Keys,
    pub gateway: Arc<dyn PaymentGateway>,
    limiter: DefaultKeyedRateLimiter<String>,
    /// Nodes in this api's region first: reads prefer them.
    read_preference: Vec<u64>,
    /// Fetches the nodes' admin status for the cluster page (not the client protocol).
    admin_http: reqwest::Client,
    /// The leaders seen at the previous gathering, to list leader changes.
    leader_watch: std::sync::Mutex<crate::cluster::LeaderWatch>,
    /// Failed logins per account and per IP (brute-force throttle).
    pub login_guard: crate::login_guard::LoginGuard,
    /// The event stream's shared state (open-stream cap) and the read models built
    /// from the stream.
    pub events: crate::events::EventsHub,
    /// Payers waiting for their payment to settle, woken when this node records it.
    pub settle_waiters: crate::saga::SettleWaiters,
    /// This node's wall clock as the saga's poller reads it (tests shift it).
    pub wall_clock: crate::saga::WallClock,
    /// Seat maps as last rendered, served again while the replica says unchanged.
    pub seat_maps: crate::seat_maps::SeatMaps,
}

pub type Shared = Arc<AppState>;

/// Where a read was answered, for the `X-` headers of the contract.
#[derive(Clone, Debug)]
pub struct ReadMeta {
    pub shard: String,
    pub node: u64,
    pub index: u64,
    pub consistency: Consistency,
}

impl ReadMeta {
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let consistency = match self.consistency {
            Consistency::Linearizable => "linearizable",
            Consistency::Session => "session",
            Consistency::Stale => "stale",
        };
        for (name, value) in [
            ("x-shard", self.shard.clone()),
            ("x-replica", self.node.to_string()),
            ("x-index", self.index.to_string()),
            ("x-read-consistency", consistency.to_string()),
        ] {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }
        headers
    }
}

/// A committed write's result and where it committed.
pub struct Written {
    pub applied: Applied,
    pub shard: String,
    pub index: u64,
}

impl Written {
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&self.shard) {
            headers.insert("x-shard", value);
        }
        headers.insert("x-index", HeaderValue::from(self.index));
        headers
    }
}

impl AppState {
    /// The state for `config`; with a `[tls.cluster]` section the api reaches the nodes
    /// over mutual TLS with the certificate files it names.
    pub fn new(
        config: ApiConfig,
        keys: Keys,
        gateway: Arc<dyn PaymentGateway>,
    ) -> Result<AppState, String> {
        let tls = match config.tls.as_ref().and_then(|tls| tls.cluster.as_ref()) {
            Some(files) => Some(raft_node::tls::ClusterTls::from_files(files)?),
            None => None,
        };
        AppState::with_cluster_tls(config, keys, gateway, tls)
    }

    /// Like `new`, with the cluster TLS settings given (tests and the demo make them in
    /// memory); `None` speaks plain HTTP to the nodes.
    pub fn with_cluster_tls(
        config: ApiConfig,
        keys: Keys,
        gateway: Arc<dyn PaymentGateway>,
        cluster_tls: Option<raft_node::tls::ClusterTls>,
    ) -> Result<AppState, String> {
        config.validate()?;
        // Computed now, so the first login of an unknown email is not slower than later ones.
        crate::auth::dummy_password_hash();
        let rate =
            NonZeroU32::new(config.limits.requests_per_second).ok_or("rate must be positive")?;
        let burst = NonZeroU32::new(config.limits.burst).ok_or("burst must be positive")?;
        let limiter = RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst));
        let nodes = config
            .nodes
            .iter()
            .map(|n| (n.id, n.client_addr.clone()))
            .collect();
        let mut read_preference: Vec<u64> = config
            .nodes
            .iter()
            .filter(|n| n.region == config.region)
            .map(|n| n.id)
            .collect();
        read_preference.extend(
            config
                .nodes
                .iter()
                .filter(|n| n.region != config.region)
                .map(|n| n.id),
        );
        let mut admin_http = reqwest::Client::builder().connect_timeout(Duration::from_secs(1));
        let cluster = match &cluster_tls {
            Some(tls) => {
                admin_http = admin_http.use_preconfigured_tls((*tls.client).clone());
                ClusterClient::with_tls(nodes, tls)?
            }
            None => ClusterClient::new(nodes),
        };
        Ok(AppState {
            cluster,
            keys,
            gateway,
            limiter,
            read_preference,
            admin_http: admin_http
                .build()
                .map_err(|e| format!("admin HTTP client: {e}"))?,
            leader_watch: Default::default(),
            login_guard: crate::login_guard::LoginGuard::new(
                crate::login_guard::Throttle::from_limits(&config.limits),
            ),
            events: Default::default(),
            settle_waiters: Default::default(),
            wall_clock: Default::default(),
            seat_maps: crate::seat_maps::SeatMaps::new(config.limits.seat_map_cache_bytes),
            config,
        })
    }

    /// Node ids in read order: this api's region first.
    pub fn read_preference(&self) -> &[u64] {
        &self.read_preference
    }

    /// The HTTP client for the nodes' admin API.
    pub fn admin_http(&self) -> &reqwest::Client {
        &self.admin_http
    }

    /// Notes the shards' current leaders and returns the leader changes seen so far.
    pub fn observe_leaders(
        &self,
        now: &str,
        leaders: &[(String, Option<u64>, u64)],
    ) -> Vec<crate::cluster::LeaderChange> {
        crate::cluster::observe(&self.leader_watch, now, leaders)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.limits.request_timeout_ms)
    }

    pub fn shard_of_city(&self, city: &str) -> Result<String, Problem> {
        self.config
            .city(city)
            .map(|c| c.shard.clone())
            .ok_or_else(|| {
                Problem::not_found(format!(
                    "unknown city {city:?}; GET /api/v1/cities lists them"
                ))
            })
    }

    /// The shard of an external id, which must be a city shard this api knows.
    pub fn city_shard(&self, shard: &str) -> Result<(), Problem> {
        self.config
            .city_of_shard(shard)
            .map(|_| ())
            .ok_or_else(|| Problem::not_found(format!("no city is served by shard {shard:?}")))
    }

    pub async fn write(
        &self,
        shard: &str,
        request_id: &str,
        command: CommandKind,
    ) -> Result<Written, Problem> {
        let done = self
            .cluster
            .write(shard, request_id, command, self.timeout())
            .await
            .map_err(client_problem)?;
        metrics::counter!("seat_ledger_api_writes_total", "shard" => shard.to_owned()).increment(1);
        match done.outcome {
            Outcome::Applied(applied) => Ok(Written {
                applied,
                shard: shard.to_owned(),
                index: done.index,
            }),
            Outcome::Rejected(rejection) => Err(rejection.into()),
        }
    }

    pub async fn read(
        &self,
        shard: &str,
        query: Query,
        consistency: Consistency,
        min_index: Option<u64>,
    ) -> Result<(QueryResponse, ReadMeta), Problem> {
        let mut request = ReadRequest {
            query,
            consistency,
            min_index,
        };
        loop {
            let reply = self
                .cluster
                .read(shard, &request, &self.read_preference, self.timeout())
                .await
                .map_err(client_problem)?;
            let (result, node, applied_index, consistency, lag) = match reply {
                ReadReply::Done {
                    result,
                    node,
                    applied_index,
                    consistency,
                    lag,
                } => (result, node, applied_index, consistency, lag),
                ReadReply::Unavailable { reason, .. } => return Err(Problem::unavailable(reason)),
            };
            // A stale read from a replica that is too far behind is retried as a
            // linearizable one: stale answers are bounded.
            let too_stale = lag.is_some_and(|lag| lag > self.config.limits.stale_lag_entries_max);
            if consistency == Consistency::Stale && too_stale {
                request.consistency = Consistency::Linearizable;
                continue;
            }
            tracing::Span::current().record("shard", shard);
            tracing::Span::current().record("replica", node);
            let meta = ReadMeta {
                shard: shard.to_owned(),
                node,
                index: applied_index,
                consistency,
            };
            return result
                .map(|response| (response, meta))
                .map_err(Problem::from);
        }
    }

    /// Reads from a replica that has applied at least `written` (read your write).
    pub async fn read_after(
        &self,
        written: &Written,
        query: Query,
    ) -> Result<QueryResponse, Problem> {
        let session = Some(written.index);
        Ok(self
            .read(&written.shard, query, Consistency::Session, session)
            .await?
            .0)
    }

    /// The user record from the `global` shard.
    pub async fn user(&self, user: UserId) -> Result<state_machine::User, Problem> {
        let global = self.config.global_shard.clone();
        match self
            .read(
                &global,
                Query::User { user },
                Consistency::Linearizable,
                None,
            )
            .await?
            .0
        {
            QueryResponse::User(user) => Ok(user),
            _ => Err(Problem::unavailable(
                "unexpected answer from the global shard",
            )),
        }
    }
}

fn client_problem(error: ClientError) -> Problem {
    match error {
        ClientError::Unknown { last_problem } => Problem::unavailable(last_problem),
        ClientError::Refused(detail) => Problem::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The cluster refused the request",
            detail,
        ),
    }
}

/// The caller, from a valid `Authorization: Bearer` access token.
#[derive(Clone, Copy, Debug)]
pub struct AuthUser {
    pub id: UserId,
    pub role: Role,
}

impl AuthUser {
    pub fn require(&self, allowed: &[Role]) -> Result<(), Problem> {
        if allowed.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(Problem::forbidden(format!(
            "this needs one of the roles {names:?}"
        )))
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The user a `/users/{id}/...` request is about: the caller, or anyone for an
    /// admin. Another user's id, like an id that is not a number, is 404.
    pub fn own_or_admin(&self, id: &str) -> Result<state_machine::UserId, Problem> {
        let user = id
            .parse::<u64>()
            .map(state_machine::UserId)
            .map_err(|_| Problem::not_found("no such user"))?;
        if user != self.id && !self.is_admin() {
            return Err(Problem::not_found("no such user"));
        }
        Ok(user)
    }

    /// The ledger request id of this caller's write (see `request_id`).
    pub fn request_id(&self, headers: &HeaderMap) -> Result<String, Problem> {
        request_id(headers, &self.id.to_string())
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    value.strip_prefix("Bearer ").map(str::trim)
}

impl FromRequestParts<Shared> for AuthUser {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Problem> {
        let token = bearer(parts)
            .ok_or_else(|| Problem::unauthorized("send Authorization: Bearer <access token>"))?;
        let claims = state.keys.verify(token)?;
        let role = Role::parse(&claims.role)
            .ok_or_else(|| Problem::unauthorized("the token names an unknown role"))?;
        tracing::Span::current().record("user", claims.sub);
        Ok(AuthUser {
            id: UserId(claims.sub),
            role,
        })
    }
}

/// Token bucket per user (from a valid token) or per client IP.
pub async fn rate_limit(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let user = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| state.keys.verify(token).ok())
        .map(|claims| format!("user:{}", claims.sub));
    let key = user.unwrap_or_else(|| {
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string());
        format!("ip:{}", ip.unwrap_or_else(|| "unknown".into()))
    });
    if let Err(not_until) = state.limiter.check_key(&key) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        metrics::counter!("seat_ledger_api_rate_limited_total").increment(1);
        return Problem::rate_limited(wait.as_secs().max(1)).into_response();
    }
    next.run(request).await
}

/// Validates an `Idempotency-Key` and turns it into the ledger request id, namespaced
/// by the caller so two users can never collide. Without a key the api makes one.
pub fn request_id(headers: &HeaderMap, scope: &str) -> Result<String, Problem> {
    match headers.get("idempotency-key") {
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| Problem::invalid("Idempotency-Key", "use printable ASCII"))?;
            let printable = key.bytes().all(|b| (0x21..=0x7e).contains(&b));
            if key.is_empty() || key.len() > 128 || !printable {
                return Err(Problem::invalid(
                    "Idempotency-Key",
                    "1-128 printable characters without spaces",
                ));
            }
            Ok(format!("{scope}:{key}"))
        }
        // The ledger keeps ids of this form minutes, not the 24 hours of a client's key
        // (`state_machine::requests::AUTO_PREFIX`): only this request's own retries use it.
        None => Ok(format!(
            "{}{scope}:{:016x}{:016x}",
            state_machine::requests::AUTO_PREFIX,
            fastrand::u64(..),
            fastrand::u64(..)
        )),
    }
}

/// The `?consistency=` of a read, with the route's default, and `X-Min-Index`.
pub fn consistency(
    requested: Option<&str>,
    headers: &HeaderMap,
    default: Consistency,
) -> Result<(Consistency, Option<u64>), Problem> {
    let min_index = match headers.get("x-min-index") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::invalid("X-Min-Index", "the X-Index of an earlier response")
                })?,
        ),
        None => None,
    };
    let level = match requested {
        None => default,
        Some("linearizable") => Consistency::Linearizable,
        Some("session") => Consistency::Session,
        Some("stale") => Consistency::Stale,
        Some(_) => {
            return Err(Problem::invalid(
                "consistency",
                "linearizable, session or stale",
            ))
        }
    };
    Ok((level, min_index))
}

/// A JSON body whose parse errors are problem+json (422 with what was wrong).
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(Problem::new(
                rejection.status(),
                "bad-body",
                "The request body is not acceptable",
                rejection.body_text(),
            )),
        }
    }
}

/// Query parameters whose parse errors are problem+json.
pub struct Params<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(Problem::invalid("query", rejection.body_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_path_is_the_callers_own_unless_an_admin_asks() {
        let customer = AuthUser {
            id: UserId(7),
            role: Role::Customer,
        };
        let admin = AuthUser {
            id: UserId(1),
            role: Role::Admin,
        };
        assert_eq!(customer.own_or_admin("7").unwrap(), UserId(7));
        for other in ["8", "x", "", "-7", "18446744073709551616"] {
            assert_eq!(
                customer.own_or_admin(other).unwrap_err().status,
                404,
                "{other}"
            );
        }
        assert_eq!(admin.own_or_admin("8").unwrap(), UserId(8));
        assert_eq!(admin.own_or_admin("x").unwrap_err().status, 404);
    }
}
