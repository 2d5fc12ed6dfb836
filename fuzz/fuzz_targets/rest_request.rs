//! Whole REST requests through the api's router (every middleware and extractor), with
//! the cluster unreachable so that only the request parsing and validation layers run:
//! any method, route, path segment, query, token and body must get a 4xx or a 5xx that
//! names the unavailable cluster (502/503/504), never a panic or a 500.
#![no_main]
use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

#[derive(Arbitrary, Debug)]
enum Auth {
    None,
    /// A valid token for one of the roles, for one of a few users.
    Role {
        role: u8,
        user: u8,
    },
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: u8,
    route: u8,
    segments: Vec<String>,
    query: String,
    auth: Auth,
    idempotency_key: Option<String>,
    json: bool,
    body: Vec<u8>,
}

struct Target {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    keys: api::auth::Keys,
    paths: Vec<(&'static str, &'static str)>,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // The sandbox gateway serves on loopback from this runtime's tasks.
        let gateway = Arc::new(
            runtime
                .block_on(api::payment::SandboxGateway::start())
                .expect("sandbox gateway"),
        );
        let (keys, _, _) =
            api::auth::Keys::generate("seat-ledger", "seat-ledger-clients").expect("keys generate");
        let config = api::config::ApiConfig {
            listen: "127.0.0.1:0".into(),
            region: "region-1".into(),
            // Port 9 on loopback: nothing listens, so every cluster call fails at once.
            nodes: vec![api::config::NodeAddr {
                id: 1,
                client_addr: "127.0.0.1:9".into(),
                region: "region-1".into(),
            }],
            cities: vec![api::config::City {
                id: "mumbai".into(),
                name: "Mumbai".into(),
                shard: "mumbai".into(),
            }],
            global_shard: "global".into(),
            limits: api::config::ApiLimits {
                requests_per_second: 1_000_000,
                burst: 1_000_000,
                request_timeout_ms: 1,
                ..Default::default()
            },
            jwt: Default::default(),
            tls: None,
            // The pay handler waits at most this for a result, within the request's
            // 1 ms deadline.
            payment: api::config::PaymentConfig {
                wait_ms: 0,
                ..Default::default()
            },
        };
        let state = api::app::AppState::new(config, keys.clone(), gateway)
            .expect("fuzz api config is valid");
        let paths = api::routes().iter().map(|r| (r.method, r.path)).collect();
        Target {
            runtime,
            router: api::router(Arc::new(state)),
            keys,
            paths,
        }
    })
}

/// `template` with each `{name}` replaced by the next segment.
fn fill(template: &str, segments: &[String]) -> String {
    let mut out = String::new();
    let mut next = segments.iter();
    for part in template.split('/') {
        if !out.is_empty() || template.starts_with('/') {
            out.push('/');
        }
        if part.starts_with('{') {
            out.push_str(next.next().map_or("1", String::as_str));
        } else {
            out.push_str(part);
        }
    }
    out.replace("//", "/")
}

fuzz_target!(|input: Input| {
    let t = target();
    let methods = [
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::PUT,
        Method::PATCH,
    ];
    let (route_method, template) = t.paths[input.route as usize % t.paths.len()];
    let method = if input.method < 200 {
        route_method.to_uppercase().parse().unwrap_or(Method::GET)
    } else {
        methods[input.method as usize % methods.len()].clone()
    };
    let mut uri = fill(template, &input.segments);
    if !input.query.is_empty() {
        uri.push('?');
        uri.push_str(&input.query);
    }
    let mut builder = Request::builder().method(method).uri(uri.as_str());
    match &input.auth {
        Auth::None => {}
        Auth::Role { role, user } => {
            let role = [
                state_machine::Role::Customer,
                state_machine::Role::TheaterOwner,
                state_machine::Role::Admin,
                state_machine::Role::Sre,
            ][*role as usize % 4];
            let token = t
                .keys
                .issue_access(
                    state_machine::UserId(u64::from(*user) + 1),
                    role,
                    api::auth::now_s(),
                )
                .expect("token");
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        Auth::Raw(raw) => builder = builder.header("authorization", raw.as_str()),
    }
    if let Some(key) = &input.idempotency_key {
        builder = builder.header("idempotency-key", key.as_str());
    }
    if input.json {
        builder = builder.header("content-type", "application/json");
    }
    // Invalid URIs and header values are refused by the HTTP layer before the api.
    let Ok(request) = builder.body(Body::from(input.body)) else {
        return;
    };
    let response = t
        .runtime
        .block_on(t.router.clone().oneshot(request))
        .expect("the router is infallible");
    let status = response.status();
    assert!(
        status.is_success()
            || status.is_client_error()
            || status.is_redirection()
            || matches!(
                status,
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
        "{uri} answered {status}"
    );
});
