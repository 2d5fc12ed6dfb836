//! End to end over HTTP: a real three-node cluster (in-process, loopback sockets,
//! RocksDB), the api on port 0, and a plain HTTP client, as apps and box offices see it.

use api::auth::Keys;
use reqwest::StatusCode;
use serde_json::{json, Value};
use state_machine::{Limits, Role, UserId};
use std::sync::Arc;
use std::time::Duration;

mod harness;

harness::local_harness!();

impl Harness {
    async fn start(requests_per_second: u32) -> Harness {
        Harness(
            harness::Harness::start_configured(Limits::default(), harness::timing(), |config| {
                config.limits.requests_per_second = requests_per_second;
                config.limits.burst = requests_per_second;
            })
            .await,
        )
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = harness::request(&self.http, method, url, token, body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("request");
        let (status, value, is_problem) = harness::read_answer(response).await;
        if status.is_client_error() || status.is_server_error() {
            assert!(
                is_problem || status == StatusCode::METHOD_NOT_ALLOWED,
                "{status} without problem+json: {value}"
            );
        }
        (status, value)
    }

    /// A published show in Mumbai, made through the API by an admin.
    async fn show(&self, rows: u16, seats: u16) -> String {
        let admin = self.token(900_000, Role::Admin);
        let theater = json!({
            "city": "mumbai", "name": "Test Talkies", "address": "Juhu", "lat": 19.1, "long": 72.8,
            "screens": [{ "name": "One", "rows": (0..rows).map(|r| json!({"label": format!("R{r}"), "seats": seats})).collect::<Vec<_>>() }],
        });
        let (status, theater) = self
            .call(
                "POST",
                "/api/v1/theaters",
                Some(&admin),
                Some(theater),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{theater}");
        let start = api::views::rfc3339(
            (api::auth::now_s() + 86_400 * 3) * 1_000 + fastrand::u64(0..10_000_000),
        );
        let end =
            api::views::rfc3339((api::auth::now_s() + 86_400 * 3 + 3 * 3_600) * 1_000 + 10_000_000);
        let show = json!({
            "theater_id": theater["id"], "screen": 0, "title": "Avengers", "genre": "action",
            "start_time": start, "end_time": end,
            "prices": { "normal_minor": 25_000, "premium_minor": 40_000, "vip_minor": 70_000 },
        });
        let (status, show) = self
            .call("POST", "/api/v1/shows", Some(&admin), Some(show), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{show}");
        show["id"].as_str().unwrap().to_owned()
    }
}

fn seat_status(map: &Value, seat: u64) -> String {
    map["seats"][seat as usize]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn booking_journey_from_signup_to_cancel() {
    let h = Harness::start(1_000).await;
    let signup = json!({ "email": "riya@example.com", "phone": "+919800000001", "password": "a long passphrase", "name": "Riya" });
    let (status, account) = h
        .call(
            "POST",
            "/api/v1/signup",
            None,
            Some(signup.clone()),
            Some("signup-1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{account}");
    let (status, again) = h
        .call("POST", "/api/v1/signup", None, Some(signup), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    let login = json!({ "email": "riya@example.com", "password": "a long passphrase" });
    let (status, session) = h
        .call("POST", "/api/v1/login", None, Some(login), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let token = session["access_token"].as_str().unwrap().to_owned();
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"email": "riya@example.com", "password": "wrong password"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let show = h.show(4, 10).await;
    let (status, shows) = h
        .call(
            "GET",
            "/api/v1/shows?location=mumbai&search=aveng&consistency=linearizable",
            None,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        shows["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == json!(show)),
        "{shows}"
    );
    let (status, map) = h
        .call(
            "GET",
            &format!("/api/v1/shows/{show}/seats?consistency=linearizable"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, seat_status(&map, 3)),
        (StatusCode::OK, "available".into())
    );

    let (status, lock) = h
        .call(
            "POST",
            &format!("/api/v1/shows/{show}/seats/lock"),
            Some(&token),
            Some(json!({"seats": [3, 4]})),
            Some("lock-1"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lock}");
    assert_eq!(lock["total_price_minor"], json!(50_000));
    let booking = lock["booking_id"].as_str().unwrap().to_owned();
    let (status, paid) = h
        .call(
            "POST",
            &format!("/api/v1/bookings/{booking}/payment"),
            Some(&token),
            Some(json!({"method": "sandbox-approve"})),
            Some("pay-1"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{paid}");
    assert_eq!(paid["status"], json!("completed"));
    // A retry with the same key (the client lost the answer) gets the same answer; a
    // new payment of the settled booking is refused.
    let (status, again) = h
        .call(
            "POST",
            &format!("/api/v1/bookings/{booking}/payment"),
            Some(&token),
            Some(json!({"method": "sandbox-approve"})),
            Some("pay-1"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["status"], json!("completed"));
    assert_eq!(again["payment_id"], paid["payment_id"]);
    let (status, other) = h
        .call(
            "POST",
            &format!("/api/v1/bookings/{booking}/payment"),
            Some(&token),
            Some(json!({"method": "sandbox-approve"})),
            Some("pay-2"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{other}");
    let (_, detail) = h
        .call(
            "GET",
            &format!("/api/v1/bookings/{booking}"),
            Some(&token),
            None,
            None,
        )
        .await;
    assert_eq!(detail["status"], json!("confirmed"));
    let (_, history) = h
        .call("GET", "/api/v1/bookings", Some(&token), None, None)
        .await;
    assert_eq!(
        history["items"][0]["booking_id"],
        json!(booking),
        "{history}"
    );
    let (_, map) = h
        .call(
            "GET",
            &format!("/api/v1/shows/{show}/seats?consistency=linearizable"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(seat_status(&map, 3), "booked");

    let (status, cancelled) = h
        .call(
            "DELETE",
            &format!("/api/v1/bookings/{booking}"),
            Some(&token),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(
        (
            cancelled["status"].clone(),
            cancelled["refund_due_minor"].clone()
        ),
        (json!("cancelled"), json!(50_000))
    );
    let (_, map) = h
        .call(
            "GET",
            &format!("/api/v1/shows/{show}/seats?consistency=linearizable"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(seat_status(&map, 3), "available");
    let (_, status_body) = h
        .call(
            "GET",
            &format!("/api/v1/bookings/{booking}/payment/status"),
            Some(&token),
            None,
            None,
        )
        .await;
    assert_eq!(status_body["status"], json!("refunded"));

    // Refresh rotates; the old refresh token then revokes the family.
    let refresh = session["refresh_token"].clone();
    let (status, rotated) = h
        .call(
            "POST",
            "/api/v1/auth/refresh-token",
            None,
            Some(json!({"refresh_token": refresh})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/auth/refresh-token",
            None,
            Some(json!({"refresh_token": refresh})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/auth/refresh-token",
            None,
            Some(json!({"refresh_token": rotated["refresh_token"]})),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the family was not revoked"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_users_race_for_one_seat_and_exactly_one_wins() {
    let h = Arc::new(Harness::start(1_000).await);
    let show = h.show(2, 10).await;
    let mut tasks = Vec::new();
    for user in 0..50u64 {
        let (h, show) = (h.clone(), show.clone());
        tasks.push(tokio::spawn(async move {
            let token = h.token(10_000 + user, Role::Customer);
            h.call(
                "POST",
                &format!("/api/v1/shows/{show}/seats/lock"),
                Some(&token),
                Some(json!({"seats": [7]})),
                None,
            )
            .await
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == StatusCode::CONFLICT {
            assert_eq!(body["seats"], json!([7]), "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        49,
        "{statuses:?}"
    );
    Arc::into_inner(h).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpaid_lock_expires_and_payment_is_refused() {
    let h = Harness::start(1_000).await;
    let show = h.show(2, 10).await;
    let token = h.token(20_001, Role::Customer);
    let (status, lock) = h
        .call(
            "POST",
            &format!("/api/v1/shows/{show}/seats/lock"),
            Some(&token),
            Some(json!({"seats": [1], "ttl_seconds": 10})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lock}");
    tokio::time::sleep(Duration::from_millis(11_000)).await;
    let booking = lock["booking_id"].as_str().unwrap();
    let (status, body) = h
        .call(
            "POST",
            &format!("/api/v1/bookings/{booking}/payment"),
            Some(&token),
            Some(json!({"method": "sandbox-approve"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, map) = h
        .call(
            "GET",
            &format!("/api/v1/shows/{show}/seats?consistency=linearizable"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(seat_status(&map, 1), "available");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lock_retried_with_its_key_after_the_leader_dies_applies_once() {
    let mut h = Harness::start(1_000).await;
    let show = h.show(2, 10).await;
    let token = h.token(30_001, Role::Customer);
    let path = format!("/api/v1/shows/{show}/seats/lock");
    let (status, first) = h
        .call(
            "POST",
            &path,
            Some(&token),
            Some(json!({"seats": [2, 3]})),
            Some("retry-key"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let leader = h
        .cluster
        .nodes
        .iter()
        .position(|n| n.node.shard("mumbai").is_ok_and(|s| s.raft.is_leader()))
        .unwrap();
    h.cluster.nodes.remove(leader).crash().await;
    let (status, again) = h
        .call(
            "POST",
            &path,
            Some(&token),
            Some(json!({"seats": [2, 3]})),
            Some("retry-key"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(first["lock_id"], again["lock_id"]);
    let (status, other) = h
        .call(
            "POST",
            &path,
            Some(&token),
            Some(json!({"seats": [5]})),
            Some("retry-key"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{other}");
    let (_, bookings) = h
        .call("GET", "/api/v1/bookings", Some(&token), None, None)
        .await;
    assert_eq!(bookings["items"].as_array().unwrap().len(), 1, "{bookings}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_the_right_status_and_change_nothing() {
    let h = Harness::start(1_000).await;
    let show = h.show(2, 10).await;
    let customer = h.token(40_001, Role::Customer);
    let other = h.token(40_002, Role::Customer);
    let lock_path = format!("/api/v1/shows/{show}/seats/lock");
    // 401: no token, tampered token, token from another key, wrong algorithm.
    assert_eq!(
        h.call("POST", &lock_path, None, Some(json!({"seats": [1]})), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let mut tampered = customer.clone();
    tampered.insert(tampered.len() / 2, 'x');
    assert_eq!(
        h.call(
            "POST",
            &lock_path,
            Some(&tampered),
            Some(json!({"seats": [1]})),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let (foreign_keys, _, _) = Keys::generate("seat-ledger", "seat-ledger-clients").unwrap();
    let foreign = foreign_keys
        .issue_access(UserId(40_001), Role::Admin, api::auth::now_s())
        .unwrap();
    assert_eq!(
        h.call(
            "POST",
            &lock_path,
            Some(&foreign),
            Some(json!({"seats": [1]})),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": 1, "role": "admin", "iss": "seat-ledger", "aud": "seat-ledger-clients", "exp": api::auth::now_s() + 60, "iat": 0, "nbf": 0}),
        &jsonwebtoken::EncodingKey::from_secret(b"guess"),
    ).unwrap();
    assert_eq!(
        h.call(
            "POST",
            &lock_path,
            Some(&hs256),
            Some(json!({"seats": [1]})),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    let expired = h
        .keys
        .issue_access(UserId(40_001), Role::Customer, 1_000)
        .unwrap();
    assert_eq!(
        h.call(
            "POST",
            &lock_path,
            Some(&expired),
            Some(json!({"seats": [1]})),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    // 403: a customer may not create theaters.
    let theater = json!({"city": "mumbai", "name": "X", "lat": 1.0, "long": 1.0, "screens": []});
    assert_eq!(
        h.call(
            "POST",
            "/api/v1/theaters",
            Some(&customer),
            Some(theater),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // 422: bad JSON, too many seats, bad TTL; 404: unknown show; 404: another user's booking.
    let response = h
        .http
        .post(format!("{}{lock_path}", h.base))
        .bearer_auth(&customer)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/problem+json"));
    let (status, body) = h
        .call(
            "POST",
            &lock_path,
            Some(&customer),
            Some(json!({"seats": (0..11).collect::<Vec<u32>>()})),
            None,
        )
        .await;
    assert_eq!(
        (status, body["limit"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("seats_per_lock_max")
        )
    );
    let (status, _) = h
        .call(
            "POST",
            &lock_path,
            Some(&customer),
            Some(json!({"seats": [1], "ttl_seconds": 1})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/shows/mumbai-999999/seats/lock",
            Some(&customer),
            Some(json!({"seats": [1]})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, lock) = h
        .call(
            "POST",
            &lock_path,
            Some(&customer),
            Some(json!({"seats": [9]})),
            None,
        )
        .await;
    let booking = lock["booking_id"].as_str().unwrap();
    assert_eq!(
        h.call(
            "GET",
            &format!("/api/v1/bookings/{booking}"),
            Some(&other),
            None,
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call(
            "DELETE",
            &format!("/api/v1/locks/{}", lock["lock_id"].as_str().unwrap()),
            Some(&other),
            None,
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // Nothing changed but the one good lock.
    let (_, view) = h
        .call(
            "GET",
            &format!("/api/v1/shows/{show}?consistency=linearizable"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(view["seat_counts"]["locked"], json!(1), "{view}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_limit_answers_429_with_retry_after() {
    let h = Harness::start(5).await;
    let mut limited = None;
    for _ in 0..40 {
        let response = h
            .http
            .get(format!("{}/api/v1/cities", h.base))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("no 429 after 40 rapid requests with a limit of 5/s");
    assert!(response.headers().contains_key("retry-after"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_is_in_the_openapi_document_and_every_contract_path_is_served() {
    let h = Harness::start(1_000).await;
    let (status, document) = h.call("GET", "/api/openapi.json", None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], json!("3.1.0"));
    for route in api::routes() {
        let operation = &document["paths"][route.path][route.method];
        assert!(
            operation.is_object(),
            "{} {} missing from the OpenAPI document",
            route.method,
            route.path
        );
    }
    // The contract's table, read from the shared contract document when present.
    let contract = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/api-contract.md"
    ))
    .unwrap_or_default();
    let mut checked = 0;
    for line in contract.lines().filter(|l| l.starts_with("| `")) {
        let Some(endpoint) = line.split('`').nth(1) else {
            continue;
        };
        for part in endpoint.split(", ") {
            let mut words = part.split_whitespace();
            let (Some(method), Some(path)) = (words.next(), words.next()) else {
                continue;
            };
            let path = path.split('?').next().unwrap();
            let documented = document["paths"][path][method.to_lowercase()].is_object();
            let rating = path == "/api/v1/rating";
            assert!(
                documented || rating,
                "contract endpoint {method} {path} is not served"
            );
            checked += 1;
        }
    }
    assert!(
        contract.is_empty() || checked >= 20,
        "only {checked} contract endpoints parsed"
    );
    h.stop().await;
}

/// The cluster endpoint gathers every node's admin status for SREs and admins only:
/// no token is 401, a customer 403 (problem+json both); an SRE sees every shard with a
/// leader and three members in three regions, and the pages are served from the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_status_is_for_sre_and_admin_and_names_every_shards_leader() {
    let h = Harness::start(1_000).await;
    let (status, body) = h.call("GET", "/api/v1/cluster", None, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let customer = h.token(40_001, Role::Customer);
    let (status, body) = h
        .call("GET", "/api/v1/cluster", Some(&customer), None, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["type"], json!("/problems/forbidden"));
    let owner = h.token(40_002, Role::TheaterOwner);
    let (status, _) = h
        .call("GET", "/api/v1/cluster", Some(&owner), None, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for role in [Role::Sre, Role::Admin] {
        let token = h.token(40_003, role);
        let (status, body) = h
            .call("GET", "/api/v1/cluster", Some(&token), None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let shards = body["shards"].as_array().expect("shards");
        let names: Vec<&str> = shards.iter().filter_map(|s| s["shard"].as_str()).collect();
        assert_eq!(names, ["bengaluru", "delhi", "global", "mumbai"]);
        for shard in shards {
            let leader = shard["leader"].as_u64().expect("a leader");
            assert!((1..=3).contains(&leader), "{shard}");
            assert_eq!(
                shard["members"].as_array().map(Vec::len),
                Some(3),
                "{shard}"
            );
            assert_eq!(
                shard["regions"].as_object().map(|r| r.len()),
                Some(3),
                "{shard}"
            );
            let states: Vec<&str> = shard["members"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|m| m["state"].as_str())
                .collect();
            assert_eq!(
                states.iter().filter(|s| **s == "Leader").count(),
                1,
                "{shard}"
            );
        }
        let nodes = body["nodes"].as_array().expect("nodes");
        assert!(
            nodes.iter().all(|n| n["reachable"] == json!(true)),
            "{body}"
        );
        assert!(body["leader_changes"].is_array());
    }
    // The pages come from the binary, with a policy that allows nothing from elsewhere.
    for path in ["/", "/cluster", "/assets/app.js", "/assets/style.css"] {
        let response = h
            .http
            .get(format!("{}{path}", h.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(policy.starts_with("default-src 'self'"), "{path}: {policy}");
    }
    h.stop().await;
}

/// With one node down, the cluster status still answers and shows that node as
/// unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_status_shows_a_stopped_node_as_unreachable() {
    let mut h = Harness::start(1_000).await;
    let node = h.cluster.nodes.remove(2);
    let id = node.node.id();
    node.crash().await;
    let sre = h.token(40_004, Role::Sre);
    let (status, body) = h
        .call("GET", "/api/v1/cluster", Some(&sre), None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let down = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == json!(id))
        .cloned()
        .expect("the stopped node is listed");
    assert_eq!(down["reachable"], json!(false), "{down}");
    assert!(
        down["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{down}"
    );
    for shard in body["shards"].as_array().unwrap() {
        let member = shard["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == json!(id))
            .cloned()
            .expect("the stopped node is still a member");
        assert_eq!(member["state"], json!("unreachable"), "{shard}");
    }
    h.stop().await;
}

/// A seat-map read with `If-None-Match` (absent when `tag` is `None`) and, with the
/// session level, `X-Min-Index`: status, `ETag`, `X-Index` and body.
async fn seat_map(
    h: &Harness,
    show: &str,
    query: &str,
    tag: Option<&str>,
) -> (StatusCode, String, Option<String>, String) {
    let (query, min_index) = query.split_once('@').unwrap_or((query, ""));
    let url = format!("{}/api/v1/shows/{show}/seats?{query}", h.base);
    let mut request = h.http.get(url);
    if let Some(tag) = tag {
        request = request.header("if-none-match", tag);
    }
    if !min_index.is_empty() {
        request = request.header("x-min-index", min_index);
    }
    let response = request.send().await.expect("request");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (etag, index) = (header("etag").unwrap_or_default(), header("x-index"));
    let status = response.status();
    (
        status,
        etag,
        index,
        response.text().await.unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seat_maps_carry_an_etag_and_an_unchanged_map_answers_304() {
    let h = Harness::start(1_000).await;
    let show = h.show(2, 5).await;
    let lin = "consistency=linearizable";
    let (status, first_tag, _, first) = seat_map(&h, &show, lin, None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(
        first_tag.starts_with('"') && first_tag.len() == 18,
        "{first_tag}"
    );
    // Asked again, the map is the same, byte for byte, with the same tag.
    let (status, tag, _, again) = seat_map(&h, &show, lin, None).await;
    assert_eq!((status, &tag, &again), (StatusCode::OK, &first_tag, &first));
    // The caller's own copy is still good: 304, no body, and the read's headers.
    let (status, tag, index, body) = seat_map(&h, &show, lin, Some(&first_tag)).await;
    assert_eq!(
        (status, &tag, body.as_str()),
        (StatusCode::NOT_MODIFIED, &first_tag, "")
    );
    assert!(
        index.is_some(),
        "a 304 still says where the read was answered"
    );
    for header in [
        format!("W/{first_tag}"),
        format!("\"junk\", {first_tag}"),
        "*".into(),
    ] {
        let (status, ..) = seat_map(&h, &show, lin, Some(&header)).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{header}");
    }
    // A lock changes the map: the old tag gets the new map, and so does a plain read
    // (the api's kept rendering is not served once the replica says it changed).
    let (_, locked_at) = h.lock(7, &show, &[3]).await;
    let (status, locked_tag, _, locked) = seat_map(&h, &show, lin, Some(&first_tag)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(locked_tag, first_tag);
    let map: Value = serde_json::from_str(&locked).unwrap();
    assert_eq!(seat_status(&map, 3), "locked", "{map}");
    assert_eq!(seat_status(&map, 2), "available", "{map}");
    let (_, tag, _, plain) = seat_map(&h, &show, lin, None).await;
    assert_eq!((&tag, &plain), (&locked_tag, &locked));
    // A session read at the lock's index from any replica agrees.
    let session = format!("consistency=session@{locked_at}");
    let (status, ..) = seat_map(&h, &show, &session, Some(&locked_tag)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // Tags that are not ours never match, and never fail the read.
    for header in ["\"0\"", "nonsense", "\"ffffffffffffffff\""] {
        let (status, tag, _, body) = seat_map(&h, &show, lin, Some(header)).await;
        assert_eq!(
            (status, &tag, &body),
            (StatusCode::OK, &locked_tag, &locked)
        );
    }
    let (status, ..) = seat_map(&h, "mumbai-999999", lin, Some(&locked_tag)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.stop().await;
}

/// The value of an unlabelled counter in the api's Prometheus text (0 before its first
/// increment).
async fn counter(h: &Harness, name: &str) -> u64 {
    let text = h
        .http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().expect("counter value"))
}

/// The ids of a seat map's locked seats.
fn locked_seats(map: &Value) -> Vec<u64> {
    map["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .filter(|seat| seat["status"] == "locked")
        .map(|seat| seat["id"].as_u64().expect("seat id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crowd_shares_seat_map_reads_and_no_read_misses_a_write_acknowledged_before_it() {
    use std::sync::atomic::{AtomicBool, Ordering};
    const READERS: usize = 24;
    const LOCKS: u32 = 30;
    let h = Arc::new(Harness::start(100_000).await);
    let show = h.show(3, 10).await;
    let lin = "consistency=linearizable";
    let fetches_before = counter(&h, "seat_ledger_api_seat_map_fetches_total").await;

    // A crowd refreshing the map as fast as it is answered. Each reader's linearizable
    // reads follow one another in time, so the locked seats it sees only ever grow.
    let stop = Arc::new(AtomicBool::new(false));
    let crowd: Vec<_> = (0..READERS)
        .map(|reader| {
            let (h, show, stop) = (h.clone(), show.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut reads, mut seen) = (0u64, Vec::new());
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                    let (status, _, _, body) = seat_map(&h, &show, lin, None).await;
                    assert_eq!(status, StatusCode::OK, "reader {reader}: {body}");
                    let locked = locked_seats(&serde_json::from_str(&body).unwrap());
                    assert!(
                        seen.iter().all(|seat| locked.contains(seat)),
                        "reader {reader} saw {seen:?} locked, then only {locked:?}"
                    );
                    (reads, seen) = (reads + 1, locked);
                }
                reads
            })
        })
        .collect();

    // Each lock is acknowledged, then read at once, while the crowd's reads run: the
    // read must not be answered by a replica read that started before the ack.
    let mut own_reads = 0;
    for seat in 0..LOCKS {
        h.lock(7_000 + u64::from(seat), &show, &[seat]).await;
        let (status, _, _, body) = seat_map(&h, &show, lin, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let locked = locked_seats(&serde_json::from_str(&body).unwrap());
        let expected: Vec<u64> = (0..=u64::from(seat)).collect();
        assert_eq!(locked, expected, "read right after locking seat {seat}");
        own_reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = own_reads;
    for reader in crowd {
        reads += reader.await.expect("reader");
    }

    // Shared: far fewer replica reads than reads (other tests of this binary add a few).
    let fetches = counter(&h, "seat_ledger_api_seat_map_fetches_total").await - fetches_before;
    println!("{reads} seat-map reads answered by {fetches} replica reads");
    assert!(
        fetches * 2 < reads,
        "{reads} seat-map reads made {fetches} replica reads: the crowd did not share them"
    );
    Arc::into_inner(h).expect("readers done").stop().await;
}
