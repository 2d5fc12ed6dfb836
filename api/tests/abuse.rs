//! Hostile clients against a real cluster (three in-process raft-nodes on loopback
//! port 0, the api on port 0): forged and replayed tokens, other users' resources,
//! hostile bodies and text, password guessing, and a seat-hoarding bot. Every case
//! asserts the exact status and that nothing changed.

use api::auth::Keys;
use api::config::ApiLimits;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use state_machine::{Limits, Role, UserId};
use std::time::Duration;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

mod harness;

harness::local_harness!();

impl Harness {
    async fn start(limits: Limits, api: impl FnOnce(&mut ApiLimits)) -> Harness {
        Harness(
            harness::Harness::start_configured(limits, harness::timing(), |config| {
                config.limits.requests_per_second = 1_000;
                config.limits.burst = 1_000;
                api(&mut config.limits);
            })
            .await,
        )
    }

    /// A token signed with the real key, over any claims and header.
    fn signed(&self, header: jsonwebtoken::Header, claims: &Value) -> String {
        let key = jsonwebtoken::EncodingKey::from_ed_pem(self.private_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = request.send().await.expect("request");
        let (status, value, is_problem) = harness::read_answer(response).await;
        if status.is_client_error() || status.is_server_error() {
            assert!(is_problem, "{status} without problem+json: {value}");
        }
        assert!(!status.is_server_error(), "{status}: {value}");
        (status, value)
    }

    fn request(&self, method: &str, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.base);
        harness::request(&self.http, method, url, token, None)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        self.send(harness::request(&self.http, method, url, token, body))
            .await
    }

    /// A theater owned by `owner` (a theater_owner or admin token's user).
    async fn theater(&self, owner: &str, rows: u16, seats: u16) -> String {
        let theater = json!({
            "city": "mumbai", "name": "Test Talkies", "address": "Juhu", "lat": 19.1, "long": 72.8,
            "screens": [{ "name": "One", "rows": (0..rows).map(|r| json!({"label": format!("R{r}"), "seats": seats})).collect::<Vec<_>>() }],
        });
        let (status, theater) = self
            .call("POST", "/api/v1/theaters", Some(owner), Some(theater))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{theater}");
        theater["id"].as_str().unwrap().to_owned()
    }

    fn show_body(theater: &str, title: &str, offset_hours: u64) -> Value {
        let start_s = api::auth::now_s() + 86_400 * 3 + offset_hours * 3_600;
        json!({
            "theater_id": theater, "screen": 0, "title": title, "genre": "action",
            "start_time": api::views::rfc3339(start_s * 1_000),
            "end_time": api::views::rfc3339((start_s + 3_000) * 1_000),
            "prices": { "normal_minor": 25_000, "premium_minor": 40_000, "vip_minor": 70_000 },
        })
    }

    /// A published show in Mumbai, made through the API by an admin.
    async fn show(&self, rows: u16, seats: u16) -> String {
        let admin = self.token(900_000, Role::Admin);
        let theater = self.theater(&admin, rows, seats).await;
        let (status, show) = self
            .call(
                "POST",
                "/api/v1/shows",
                Some(&admin),
                Some(Self::show_body(&theater, "Avengers", 0)),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{show}");
        show["id"].as_str().unwrap().to_owned()
    }

    /// The show's seat counts, read linearizably.
    async fn counts(&self, show: &str) -> Value {
        let (status, view) = self
            .call(
                "GET",
                &format!("/api/v1/shows/{show}?consistency=linearizable"),
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{view}");
        view["seat_counts"].clone()
    }

    async fn signup(&self, email: &str, phone: &str, password: &str) -> Value {
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/signup",
                None,
                Some(json!({"email": email, "phone": phone, "password": password, "name": "Test"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn login(&self, email: &str, password: &str) -> (StatusCode, Value, Option<String>) {
        let response = self
            .request("POST", "/api/v1/login", None)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body, retry_after)
    }
}

fn claims(role: &str, iss: &str, aud: &str, exp: u64, nbf: u64) -> Value {
    json!({"sub": 41_001, "role": role, "iss": iss, "aud": aud, "exp": exp, "iat": nbf, "nbf": nbf})
}

fn kid(kid: &str) -> jsonwebtoken::Header {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid.into());
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_and_stale_tokens_are_refused_with_401_and_change_nothing() {
    let h = Harness::start(Limits::default(), |_| {}).await;
    let show = h.show(2, 10).await;
    let lock_path = format!("/api/v1/shows/{show}/seats/lock");
    let now = api::auth::now_s();
    let (iss, aud) = ("seat-ledger", "seat-ledger-clients");
    let good = h.token(41_001, Role::Customer);
    let parts: Vec<&str> = good.split('.').collect();
    // The genuine token works (so each refusal below is about the forgery).
    let (status, _) = h.call("GET", "/api/v1/bookings", Some(&good), None).await;
    assert_eq!(status, StatusCode::OK);

    let mut forged: Vec<(&str, String)> = Vec::new();
    // alg: none, with and without a signature.
    let none_header = B64.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
    let admin_claims = B64.encode(claims("admin", iss, aud, now + 600, now).to_string());
    forged.push(("alg none", format!("{none_header}.{admin_claims}.")));
    forged.push((
        "alg none with signature",
        format!("{none_header}.{admin_claims}.{}", parts[2]),
    ));
    // HS256 keyed with the public key (the classic RS/HS confusion, here EdDSA/HS).
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some("k1".into());
    forged.push((
        "HS256 keyed with the public key",
        jsonwebtoken::encode(
            &hs,
            &claims("admin", iss, aud, now + 600, now),
            &jsonwebtoken::EncodingKey::from_secret(h.public_pem.as_bytes()),
        )
        .unwrap(),
    ));
    // Header alg swapped to HS256 on a real EdDSA signature.
    let hs_header = B64.encode(br#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#);
    forged.push((
        "alg swapped",
        format!("{hs_header}.{}.{}", parts[1], parts[2]),
    ));
    // Right key, wrong claims.
    forged.push((
        "expired",
        h.signed(
            kid("k1"),
            &claims("customer", iss, aud, now - 60, now - 1_000),
        ),
    ));
    forged.push((
        "not yet valid",
        h.signed(
            kid("k1"),
            &claims("customer", iss, aud, now + 7_200, now + 3_600),
        ),
    ));
    forged.push((
        "wrong issuer",
        h.signed(
            kid("k1"),
            &claims("customer", "someone-else", aud, now + 600, now),
        ),
    ));
    forged.push((
        "wrong audience",
        h.signed(
            kid("k1"),
            &claims("customer", iss, "other-service", now + 600, now),
        ),
    ));
    forged.push((
        "unknown role",
        h.signed(kid("k1"), &claims("root", iss, aud, now + 600, now)),
    ));
    forged.push((
        "no kid",
        h.signed(
            jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &claims("customer", iss, aud, now + 600, now),
        ),
    ));
    forged.push((
        "unknown kid",
        h.signed(kid("k9"), &claims("customer", iss, aud, now + 600, now)),
    ));
    // Role escalation: the payload says admin, the signature is the customer token's.
    let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    payload["role"] = json!("admin");
    let escalated = B64.encode(payload.to_string());
    forged.push((
        "role escalated in the payload",
        format!("{}.{escalated}.{}", parts[0], parts[2]),
    ));
    // Another key with our kid.
    let (foreign, _, _) = Keys::generate(iss, aud).unwrap();
    forged.push((
        "foreign key, our kid",
        foreign
            .issue_access(UserId(41_001), Role::Admin, now)
            .unwrap(),
    ));
    forged.push(("garbage", "not.a.token".into()));
    forged.push(("empty", String::new()));

    for (case, token) in &forged {
        for (method, path, body) in [
            ("POST", lock_path.as_str(), Some(json!({"seats": [1]}))),
            ("GET", "/api/v1/users/41001", None),
            ("GET", "/api/v1/cluster", None),
        ] {
            let (status, problem) = h.call(method, path, Some(token), body).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{case}: {method} {path}: {problem}"
            );
            assert_eq!(problem["type"], json!("/problems/unauthorized"), "{case}");
        }
        println!("abuse: token {case:?}: 401");
    }
    // A customer's genuine token does not reach admin routes either.
    let (status, _) = h.call("GET", "/api/v1/cluster", Some(&good), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.counts(&show).await,
        json!({"available": 20, "locked": 0, "booked": 0})
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reused_refresh_token_revokes_its_whole_family() {
    let h = Harness::start(Limits::default(), |_| {}).await;
    let signup = h
        .signup(
            "refresh@test.example",
            "+919800000001",
            "correct horse battery",
        )
        .await;
    let first = signup["refresh_token"].as_str().unwrap().to_owned();
    // Mass assignment: extra fields in a signup (a role, an id) are ignored.
    let (status, sneaky) = h
        .call(
            "POST",
            "/api/v1/signup",
            None,
            Some(
                json!({"email": "sneaky@test.example", "phone": "+919800000002",
                "password": "a long enough password", "name": "S", "role": "admin", "id": 1}),
            ),
        )
        .await;
    assert_eq!(
        (status, sneaky["user"]["role"].clone()),
        (StatusCode::CREATED, json!("customer"))
    );
    assert_ne!(sneaky["user"]["id"], json!(1));
    let refresh = |token: String| {
        let h = &h;
        async move {
            h.call(
                "POST",
                "/api/v1/auth/refresh-token",
                None,
                Some(json!({ "refresh_token": token })),
            )
            .await
        }
    };
    let (status, rotated) = refresh(first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    // The thief replays the first token: refused, and the family is revoked...
    let (status, problem) = refresh(first.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("revoked"));
    // ...so the rotated token the real user holds no longer works either.
    let (status, _) = refresh(second.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = refresh(first).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown and malformed tokens are 401 as well.
    for bogus in [
        "0".repeat(64),
        "not hex".into(),
        String::new(),
        "é".repeat(40),
    ] {
        let (status, _) = refresh(bogus.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bogus:?}");
    }
    // Logging in again starts a fresh family that works.
    let (status, login, _) = h
        .login("refresh@test.example", "correct horse battery")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = refresh(login["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, StatusCode::OK);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn other_users_resources_are_404_and_stay_unchanged() {
    let h = Harness::start(Limits::default(), |_| {}).await;
    let alice_account = h
        .signup(
            "alice@test.example",
            "+919800000011",
            "alice's long password",
        )
        .await;
    let mallory_account = h
        .signup(
            "mallory@test.example",
            "+919800000012",
            "mallory's long password",
        )
        .await;
    let alice_id = alice_account["user"]["id"].as_u64().unwrap();
    let alice = alice_account["access_token"].as_str().unwrap().to_owned();
    let mallory = mallory_account["access_token"].as_str().unwrap().to_owned();
    let show = h.show(2, 10).await;
    let (status, lock) = h
        .call(
            "POST",
            &format!("/api/v1/shows/{show}/seats/lock"),
            Some(&alice),
            Some(json!({"seats": [3, 4]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lock}");
    let booking = lock["booking_id"].as_str().unwrap().to_owned();
    let lock_id = lock["lock_id"].as_str().unwrap().to_owned();
    let before = h
        .call(
            "GET",
            &format!("/api/v1/bookings/{booking}"),
            Some(&alice),
            None,
        )
        .await
        .1;

    let attacks: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/api/v1/bookings/{booking}"), None),
        ("DELETE", format!("/api/v1/bookings/{booking}"), None),
        ("DELETE", format!("/api/v1/locks/{lock_id}"), None),
        (
            "POST",
            format!("/api/v1/bookings/{booking}/payment"),
            Some(json!({"method": "sandbox-approve"})),
        ),
        (
            "GET",
            format!("/api/v1/bookings/{booking}/payment/status"),
            None,
        ),
        ("GET", format!("/api/v1/users/{alice_id}"), None),
        (
            "POST",
            format!("/api/v1/users/{alice_id}/bookings/init"),
            Some(json!({"show_id": show, "seats": [5]})),
        ),
    ];
    for (method, path, body) in &attacks {
        let (status, problem) = h.call(method, path, Some(&mallory), body.clone()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {problem}");
        println!("abuse: IDOR {method} {path}: 404");
    }
    // Mallory's own list does not show Alice's booking.
    let (status, list) = h
        .call("GET", "/api/v1/bookings", Some(&mallory), None)
        .await;
    assert_eq!((status, list["items"].clone()), (StatusCode::OK, json!([])));
    // Nothing changed: the booking is still Alice's pending booking, seats still locked.
    let after = h
        .call(
            "GET",
            &format!("/api/v1/bookings/{booking}"),
            Some(&alice),
            None,
        )
        .await
        .1;
    assert_eq!(before, after);
    assert_eq!(after["status"], json!("pending_payment"));
    assert_eq!(
        h.counts(&show).await,
        json!({"available": 18, "locked": 2, "booked": 0})
    );
    // Idempotency keys are scoped by caller: Mallory reusing Alice's key gets her own
    // lock, never Alice's stored answer.
    let lock_path = format!("/api/v1/shows/{show}/seats/lock");
    let mut answers = Vec::new();
    for (token, seat) in [(&alice, 7), (&mallory, 8)] {
        let (status, lock) = h
            .send(
                h.request("POST", &lock_path, Some(token))
                    .header("idempotency-key", "shared-key-1")
                    .json(&json!({ "seats": [seat] })),
            )
            .await;
        assert_eq!(
            (status, lock["seats"].clone()),
            (StatusCode::CREATED, json!([seat]))
        );
        answers.push(lock["lock_id"].clone());
    }
    assert_ne!(answers[0], answers[1]);
    assert_eq!(
        h.counts(&show).await,
        json!({"available": 16, "locked": 4, "booked": 0})
    );
    // A theater owner may not publish shows in another owner's theater.
    let owner_a = h.token(42_001, Role::TheaterOwner);
    let owner_b = h.token(42_002, Role::TheaterOwner);
    let theater = h.theater(&owner_a, 1, 5).await;
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/shows",
            Some(&owner_b),
            Some(Harness::show_body(&theater, "Hijack", 10)),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let day = api::views::rfc3339((api::auth::now_s() + 86_400 * 3 + 10 * 3_600) * 1_000);
    let (status, view) = h
        .call(
            "GET",
            &format!(
                "/api/v1/theaters/{theater}?date={}&consistency=linearizable",
                &day[..10]
            ),
            None,
            None,
        )
        .await;
    assert_eq!((status, view["shows"].clone()), (StatusCode::OK, json!([])));
    // The owner of each resource (and an admin) still gets it: the 404s are about access.
    let admin = h.token(900_001, Role::Admin);
    for token in [&alice, &admin] {
        let (status, _) = h
            .call(
                "GET",
                &format!("/api/v1/bookings/{booking}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_bodies_and_text_are_refused_and_change_nothing() {
    let h = Harness::start(Limits::default(), |_| {}).await;
    let show = h.show(2, 10).await;
    let customer = h.token(43_001, Role::Customer);
    let admin = h.token(900_002, Role::Admin);
    let lock_path = format!("/api/v1/shows/{show}/seats/lock");
    let raw = |body: String| {
        h.request("POST", &lock_path, Some(&customer))
            .header("content-type", "application/json")
            .body(body)
    };
    // Oversized: 100 000 seats is ~590 KB, above the 64 KiB body limit.
    let huge: Vec<u32> = (0..100_000).collect();
    let (status, _) = h.send(raw(json!({ "seats": huge }).to_string())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // Deep JSON (10 000 levels, under the body limit) where a number or a list of
    // numbers belongs: refused at the first bracket, no recursion.
    let nest = |inner: &str| format!("{}{inner}{}", "[".repeat(10_000), "]".repeat(10_000));
    for deep in [
        format!("{{\"seats\": {}}}", nest("1")),
        format!("{{\"seats\": [1], \"ttl_seconds\": {}}}", nest("")),
        nest(""),
    ] {
        let (status, problem) = h.send(raw(deep)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    }
    // Unclosed deep nesting is a syntax error.
    let (status, _) = h
        .send(raw(format!(
            "{{\"seats\": [1], \"x\": {}",
            "[".repeat(10_000)
        )))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // In a field the api does not read, deep nesting is skipped without recursion (an
    // explicit stack in serde_json) and the request does exactly what it says.
    let (status, lock) = h
        .send(raw(format!("{{\"seats\": [1], \"x\": {}}}", nest("{}"))))
        .await;
    assert_eq!(
        (status, lock["seats"].clone()),
        (StatusCode::CREATED, json!([1]))
    );
    // A huge seat list that fits the body limit: the per-lock limit refuses it.
    let many: Vec<u32> = (0..9_000).collect();
    let (status, problem) = h
        .call(
            "POST",
            &lock_path,
            Some(&customer),
            Some(json!({ "seats": many })),
        )
        .await;
    assert_eq!(
        (status, problem["limit"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("seats_per_lock_max")
        )
    );
    // Wrong shapes and out-of-range numbers.
    for body in [
        json!({"seats": [4_294_967_296u64]}),
        json!({"seats": [-1]}),
        json!({"seats": "1,2"}),
        json!({"seats": [1.5]}),
        json!({"seats": [1], "ttl_seconds": u64::MAX}),
        json!({}),
        json!([]),
    ] {
        let (status, problem) = h
            .call("POST", &lock_path, Some(&customer), Some(body.clone()))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
    }
    for body in [json!({"seats": [1, 1]}), json!({"seats": []})] {
        let (status, _) = h
            .call("POST", &lock_path, Some(&customer), Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (status, _) = h
            .call(
                "POST",
                "/api/v1/users/43001/bookings/init",
                Some(&customer),
                Some(json!({"show_id": show, "seats": body["seats"]})),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "quote of {body}");
    }
    // Not JSON at all, and JSON with the wrong content type.
    let (status, _) = h.send(raw("{\"seats\": [1".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = h
        .send(
            h.request("POST", &lock_path, Some(&customer))
                .header("content-type", "text/plain")
                .body("{\"seats\": [1]}"),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // An Idempotency-Key that is not printable ASCII.
    let (status, _) = h
        .send(
            h.request("POST", &lock_path, Some(&customer))
                .header(
                    "idempotency-key",
                    reqwest::header::HeaderValue::from_bytes("clé-🎬".as_bytes()).unwrap(),
                )
                .json(&json!({"seats": [1]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Unicode in every string field. Controls and bidi overrides are refused; any
    // script, emoji and combining marks are kept byte for byte.
    const HOSTILE: &[(&str, &str)] = &[
        ("NUL", "Inox\u{0}Mall"),
        ("RTL override", "Inox \u{202E}llaM"),
        ("isolate", "Inox \u{2066}x\u{2069}"),
        ("newline", "Inox\nMall"),
    ];
    const FRIENDLY: &str = "סינמה 🎬 Ame\u{301}lie ملتي";
    for (case, text) in HOSTILE {
        for field in ["name", "address"] {
            let mut theater = json!({
                "city": "mumbai", "name": "Plain", "address": "Plain", "lat": 1.0, "long": 1.0,
                "screens": [{"name": "One", "rows": [{"label": "A", "seats": 2}]}],
            });
            theater[field] = json!(text);
            let (status, problem) = h
                .call("POST", "/api/v1/theaters", Some(&admin), Some(theater))
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "theater {field} {case}: {problem}"
            );
        }
        let mut theater = json!({
            "city": "mumbai", "name": "Plain", "lat": 1.0, "long": 1.0,
            "screens": [{"name": text, "rows": [{"label": "A", "seats": 2}]}],
        });
        let (status, _) = h
            .call(
                "POST",
                "/api/v1/theaters",
                Some(&admin),
                Some(theater.clone()),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "screen name {case}"
        );
        theater["screens"][0] = json!({"name": "One", "rows": [{"label": text, "seats": 2}]});
        let (status, _) = h
            .call("POST", "/api/v1/theaters", Some(&admin), Some(theater))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "row label {case}");
        let (status, _) = h
            .call(
                "POST",
                "/api/v1/signup",
                None,
                Some(json!({"email": "u@test.example", "phone": "+919800000021", "password": "long enough pass", "name": text})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "signup name {case}"
        );
        let (status, _) = h
            .call(
                "POST",
                "/api/v1/signup",
                None,
                Some(json!({"email": format!("u{text}@test.example"), "phone": "+919800000021", "password": "long enough pass", "name": "U"})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "signup email {case}"
        );
    }
    // Non-ASCII digits are not a phone number; an unknown payment method is refused.
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/signup",
            None,
            Some(json!({"email": "v@test.example", "phone": "٩١٩٨٠٠٠٠٠٠٢٢", "password": "long enough pass", "name": "V"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // No account was created by any of the refused signups.
    let (status, _, _) = h.login("u@test.example", "long enough pass").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Friendly text round-trips exactly through every field that stores text.
    let (status, theater) = h
        .call(
            "POST",
            "/api/v1/theaters",
            Some(&admin),
            Some(json!({
                "city": "mumbai", "name": FRIENDLY, "address": FRIENDLY, "lat": 1.0, "long": 1.0,
                "screens": [{"name": FRIENDLY, "rows": [{"label": "🎬", "seats": 2}]}],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{theater}");
    assert_eq!(
        (
            theater["name"].clone(),
            theater["address"].clone(),
            theater["screens"][0]["name"].clone(),
            theater["screens"][0]["rows"][0]["label"].clone()
        ),
        (
            json!(FRIENDLY),
            json!(FRIENDLY),
            json!(FRIENDLY),
            json!("🎬")
        )
    );
    let theater_id = theater["id"].as_str().unwrap().to_owned();
    let mut body = Harness::show_body(&theater_id, FRIENDLY, 0);
    body["genre"] = json!("दृश्य");
    let (status, created) = h
        .call("POST", "/api/v1/shows", Some(&admin), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        (created["title"].clone(), created["genre"].clone()),
        (json!(FRIENDLY), json!("दृश्य"))
    );
    for (case, text) in HOSTILE {
        for field in ["title", "genre"] {
            let mut body = Harness::show_body(&theater_id, "Fine", 20);
            body[field] = json!(text);
            let (status, _) = h
                .call("POST", "/api/v1/shows", Some(&admin), Some(body))
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "show {field} {case}"
            );
        }
    }
    let mut body = Harness::show_body(&theater_id, "Fine", 20);
    body["currency"] = json!("₹₹₹");
    let (status, _) = h
        .call("POST", "/api/v1/shows", Some(&admin), Some(body))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let account = h
        .signup("unicode@test.example", "+919800000031", "पासवर्ड 🔑 long")
        .await;
    let (status, _, _) = h.login("UNICODE@test.example", "पासवर्ड 🔑 long").await;
    assert_eq!(status, StatusCode::OK, "email case and a unicode password");
    let token = account["access_token"].as_str().unwrap();
    let id = account["user"]["id"].as_u64().unwrap();
    let (_, me) = h
        .call("GET", &format!("/api/v1/users/{id}"), Some(token), None)
        .await;
    assert_eq!(me["name"], json!("Test"));

    // Hostile text in queries and paths is a clean 4xx or an empty answer.
    for (search, expected) in [
        ("\u{0}", StatusCode::UNPROCESSABLE_ENTITY),
        ("\u{202E}", StatusCode::UNPROCESSABLE_ENTITY),
        ("🎬", StatusCode::OK),
        ("' OR 1=1 --", StatusCode::OK),
        ("%", StatusCode::OK),
    ] {
        let (status, page) = h
            .send(
                h.request("GET", "/api/v1/shows", None)
                    .query(&[("location", "mumbai"), ("search", search)]),
            )
            .await;
        assert_eq!(status, expected, "search {search:?}: {page}");
    }
    for path in [
        "/api/v1/shows/%E2%80%AEmumbai-1",
        "/api/v1/shows/mumbai-%00",
        "/api/v1/theaters/%F0%9F%8E%AC-1",
        "/api/v1/shows/..%2F..%2Fetc-1",
    ] {
        let (status, _) = h.call("GET", path, None, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = h
        .send(
            h.request("GET", "/api/v1/shows", None)
                .query(&[("location", "mumbai\u{0}")]),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A lock, then a payment with a hostile method: refused before any charge.
    let (status, lock) = h
        .call(
            "POST",
            &lock_path,
            Some(&customer),
            Some(json!({"seats": [7]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let booking = lock["booking_id"].as_str().unwrap();
    for method in ["sandbox-approve\u{0}", "\u{202E}evorppa-xobdnas", "🎬"] {
        let (status, _) = h
            .call(
                "POST",
                &format!("/api/v1/bookings/{booking}/payment"),
                Some(&customer),
                Some(json!({ "method": method })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method:?}");
    }
    let (_, now) = h
        .call(
            "GET",
            &format!("/api/v1/bookings/{booking}"),
            Some(&customer),
            None,
        )
        .await;
    assert_eq!(now["status"], json!("pending_payment"));
    // Nothing but the two good locks changed the show.
    assert_eq!(
        h.counts(&show).await,
        json!({"available": 18, "locked": 2, "booked": 0})
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_guessing_is_slowed_per_account_and_per_ip_but_never_locks_out() {
    let h = Harness::start(Limits::default(), |limits| {
        limits.login_failures_free_per_account = 3;
        limits.login_failures_free_per_ip = 6;
        limits.login_backoff_base_ms = 400;
        limits.login_backoff_account_max_ms = 800;
        limits.login_backoff_ip_max_ms = 1_600;
        limits.login_failures_forget_ms = 10_000;
    })
    .await;
    let (email, password) = ("victim@test.example", "the real long password");
    h.signup(email, "+919800000041", password).await;
    for guess in ["123456", "password", "qwerty12345"] {
        let (status, _, _) = h.login(email, guess).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{guess}");
    }
    // The account is now slowed: even the right password waits (nothing is checked).
    let (status, problem, retry_after) = h.login(email, password).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(problem["type"], json!("/problems/login-throttled"));
    assert_eq!(retry_after.as_deref(), Some("1"));
    let (status, _, _) = h.login(email, "another guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // After the delay the real user logs in: slowed, never locked out.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (status, _, _) = h.login(email, password).await;
    assert_eq!(status, StatusCode::OK);
    // Spraying other accounts from the same address: the IP throttle takes over.
    for n in 0..3 {
        let (status, _, _) = h.login(&format!("nobody{n}@test.example"), "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, _) = h.login("nobody9@test.example", "guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "per-IP throttle");
    // The cap bounds the wait; then the right password works again.
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let (status, _, _) = h.login(email, password).await;
    assert_eq!(status, StatusCode::OK);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_seat_hoarding_bot_is_capped_rate_limited_and_its_locks_expire() {
    let limits = Limits {
        lock_ttl_ms_min: 1_000,
        seats_per_lock_max: 4,
        seats_per_user_per_show_max: 4,
        ..Limits::default()
    };
    let h = Harness::start(limits, |limits| {
        limits.requests_per_second = 5;
        limits.burst = 12;
    })
    .await;
    let show = h.show(2, 10).await;
    let bot = h.token(44_001, Role::Customer);
    let lock_path = format!("/api/v1/shows/{show}/seats/lock");
    let (status, lock) = h
        .call(
            "POST",
            &lock_path,
            Some(&bot),
            // Long enough that the hammering below ends before it, even on a loaded machine.
            Some(json!({"seats": [0, 1, 2, 3], "ttl_seconds": 8})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{lock}");
    // The per-user cap holds across locks.
    let (status, problem) = h
        .call("POST", &lock_path, Some(&bot), Some(json!({"seats": [4]})))
        .await;
    assert_eq!(
        (status, problem["limit"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("seats_per_user_per_show_max")
        )
    );
    // Hammering: the rate limit answers 429 with Retry-After well before 40 requests.
    let mut limited = None;
    for n in 0..40u32 {
        let response = h
            .request("POST", &lock_path, Some(&bot))
            .json(&json!({"seats": [5 + n % 10]}))
            .send()
            .await
            .unwrap();
        match response.status() {
            StatusCode::TOO_MANY_REQUESTS => {
                limited = Some(response);
                break;
            }
            StatusCode::UNPROCESSABLE_ENTITY => {}
            other => panic!("bot request {n}: {other}"),
        }
    }
    let limited = limited.expect("no 429 within 40 rapid requests at 5/s, burst 12");
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        h.counts(&show).await,
        json!({"available": 16, "locked": 4, "booked": 0})
    );
    // The bot's locks expire on the ledger clock; the sweeper frees the seats.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        let counts = h.counts(&show).await;
        if counts["locked"] == json!(0) {
            assert_eq!(counts["available"], json!(20));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "locks did not expire: {counts}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // A real customer gets the seats the bot held.
    let fan = h.token(44_002, Role::Customer);
    let (status, _) = h
        .call(
            "POST",
            &lock_path,
            Some(&fan),
            Some(json!({"seats": [0, 1]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    h.stop().await;
}
