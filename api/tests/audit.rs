//! The audit trail on a real cluster: role changes and show cancellations through the
//! api, and a leader transfer through a node's admin API, are recorded in the `global`
//! shard with who, when and what, and read back by admin and sre only.

use reqwest::StatusCode;
use serde_json::{json, Value};
use state_machine::{Limits, Role};
use std::time::Duration;

mod harness;

harness::local_harness!();

impl Harness {
    async fn start() -> Harness {
        Harness(
            harness::Harness::start_configured(Limits::default(), harness::timing(), |config| {
                config.limits.requests_per_second = 1_000;
                config.limits.burst = 1_000;
            })
            .await,
        )
    }

    /// A real account with `role` (made in the `global` shard, as the demo's bootstrap
    /// admin is) and an access token from logging in.
    async fn account(&self, name: &str, phone: &str, role: Role) -> (u64, String) {
        let email = format!("{name}@test.example");
        let password = format!("{name}'s long password");
        let id = api::demo::create_account(&self.cluster.client(), &email, phone, &password, role)
            .await
            .unwrap();
        let (status, login) = self
            .call(
                "POST",
                "/api/v1/login",
                "",
                Some(json!({"email": email, "password": password})),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{login}");
        (id.0, login["access_token"].as_str().unwrap().to_owned())
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "POST" => self.http.post(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        }
        .bearer_auth(token);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, value, _) = harness::read_answer(request.send().await.unwrap()).await;
        (status, value)
    }

    /// A theater in Delhi (one row of six seats) with one show two days ahead, both made
    /// by `owner`; returns the show's id.
    async fn delhi_show(&self, owner: &str, hall: &str, title: &str) -> String {
        let theater = json!({"city": "delhi", "name": hall, "lat": 1.0, "long": 1.0,
            "screens": [{"name": "One", "rows": [{"label": "A", "seats": 6}]}]});
        let (status, theater) = self
            .call("POST", "/api/v1/theaters", owner, Some(theater), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{theater}");
        let start_s = api::auth::now_s() + 86_400 * 2;
        let show = json!({"theater_id": theater["id"], "title": title,
            "start_time": api::views::rfc3339(start_s * 1_000),
            "end_time": api::views::rfc3339((start_s + 7_200) * 1_000),
            "prices": {"normal_minor": 500, "premium_minor": 500, "vip_minor": 500}});
        let (status, show) = self
            .call("POST", "/api/v1/shows", owner, Some(show), None)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{show}");
        show["id"].as_str().unwrap().to_owned()
    }

    async fn trail(&self, token: &str) -> Vec<Value> {
        let (status, page) = self
            .call("GET", "/api/v1/audit?limit=100", token, None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["items"].as_array().unwrap().clone()
    }
}

fn summary(entries: &[Value]) -> Vec<(String, String, String, String)> {
    entries
        .iter()
        .map(|e| {
            let detail = e["detail"].as_str().unwrap();
            let phase = detail.split(':').next().unwrap().to_owned();
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                phase,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_and_sre_actions_are_recorded_with_who_when_and_what() {
    let h = Harness::start().await;
    let (admin_id, admin) = h.account("admin", "+919833333301", Role::Admin).await;
    let admin_actor = format!("user:{admin_id} (admin)");
    let (status, signup) = h
        .call(
            "POST",
            "/api/v1/signup",
            "",
            Some(json!({"email": "ops@test.example", "phone": "+919822222222", "password": "an sre to be, long", "name": "Ops"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{signup}");
    let user = signup["user"]["id"].as_u64().unwrap();
    let customer = signup["access_token"].as_str().unwrap().to_owned();
    let role_path = format!("/api/v1/users/{user}/role");

    // Only admins change roles; only admin and sre read the trail. Refusals record nothing.
    let (status, _) = h
        .call(
            "POST",
            &role_path,
            &customer,
            Some(json!({"role": "admin"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h.call("GET", "/api/v1/audit", &customer, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h
        .call(
            "POST",
            &role_path,
            &admin,
            Some(json!({"role": "root"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(h.trail(&admin).await.is_empty());

    // A role change: recorded as requested, then applied; a retry records nothing new.
    let before_ms = api::auth::now_s() * 1_000;
    for _ in 0..2 {
        let (status, changed) = h
            .call(
                "POST",
                &role_path,
                &admin,
                Some(json!({"role": "sre"})),
                Some("promote-1"),
            )
            .await;
        assert_eq!(
            (status, changed["role"].clone()),
            (StatusCode::OK, json!("sre"))
        );
    }
    let trail = h.trail(&admin).await;
    let target = format!("user:{user}");
    assert_eq!(
        summary(&trail),
        vec![
            (
                admin_actor.clone(),
                "set_role".into(),
                target.clone(),
                "applied".into()
            ),
            (
                admin_actor.clone(),
                "set_role".into(),
                target.clone(),
                "requested".into()
            ),
        ]
    );
    assert_eq!(trail[0]["detail"], json!("applied: role=sre"));
    let at = api::views::parse_rfc3339(trail[0]["at"].as_str().unwrap()).unwrap();
    assert!(
        at + 5_000 >= before_ms && at <= api::auth::now_s() * 1_000 + 5_000,
        "{at}"
    );
    assert!(trail[0]["id"].as_u64() > trail[1]["id"].as_u64());

    // The new sre logs in again and reads the trail.
    let (status, login) = h
        .call(
            "POST",
            "/api/v1/login",
            "",
            Some(json!({"email": "ops@test.example", "password": "an sre to be, long"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let sre = login["access_token"].as_str().unwrap().to_owned();
    assert_eq!(h.trail(&sre).await.len(), 2);

    // A role change of an unknown user is refused and recorded as rejected.
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/users/424242/role",
            &admin,
            Some(json!({"role": "sre"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let trail = h.trail(&admin).await;
    assert_eq!(trail.len(), 4);
    assert!(
        trail[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("rejected:"),
        "{}",
        trail[0]
    );

    // A show cancellation by its theater's owner: a paid booking is refunded, a lock
    // released; another owner cannot cancel it (404) and nothing is recorded for that.
    let (owner_id, owner) = h
        .account("owner", "+919833333302", Role::TheaterOwner)
        .await;
    let (_, other_owner) = h
        .account("other", "+919833333303", Role::TheaterOwner)
        .await;
    let owner_actor = format!("user:{owner_id} (theater_owner)");
    let show_id = h
        .delhi_show(&owner, "Audit Hall", "Cancelled Premiere")
        .await;
    let fan = h.token(900_300, Role::Customer);
    let (_, paid) = h
        .call(
            "POST",
            &format!("/api/v1/shows/{show_id}/seats/lock"),
            &fan,
            Some(json!({"seats": [0, 1]})),
            None,
        )
        .await;
    let booking = paid["booking_id"].as_str().unwrap().to_owned();
    let (status, _) = h
        .call(
            "POST",
            &format!("/api/v1/bookings/{booking}/payment"),
            &fan,
            Some(json!({"method": "sandbox-approve"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = h
        .call(
            "POST",
            &format!("/api/v1/shows/{show_id}/seats/lock"),
            &fan,
            Some(json!({"seats": [4]})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let cancel_path = format!("/api/v1/shows/{show_id}/cancel");
    let (status, _) = h.call("POST", &cancel_path, &other_owner, None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h.call("POST", &cancel_path, &fan, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(h.trail(&admin).await.len(), 4);
    let (status, cancelled) = h.call("POST", &cancel_path, &owner, None, None).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(
        (
            cancelled["locks_released"].clone(),
            cancelled["bookings_cancelled"].clone()
        ),
        (json!(1), json!(1))
    );
    let (_, refunded) = h
        .call(
            "GET",
            &format!("/api/v1/bookings/{booking}"),
            &fan,
            None,
            None,
        )
        .await;
    assert_eq!(
        (
            refunded["status"].clone(),
            refunded["refund_due_minor"].clone()
        ),
        (json!("cancelled"), json!(1_000))
    );
    let trail = h.trail(&admin).await;
    assert_eq!(
        summary(&trail[..2]),
        vec![
            (
                owner_actor.clone(),
                "cancel_show".into(),
                format!("show:{show_id}"),
                "applied".into()
            ),
            (
                owner_actor.clone(),
                "cancel_show".into(),
                format!("show:{show_id}"),
                "requested".into()
            ),
        ]
    );
    assert!(trail[0]["detail"]
        .as_str()
        .unwrap()
        .contains("1 paid bookings cancelled"));

    // A demoted admin's older token (it still says admin) no longer changes roles, and a
    // token of a user the ledger does not know is refused.
    let (demoted_id, demoted) = h.account("demoted", "+919833333304", Role::Admin).await;
    let (status, _) = h
        .call(
            "POST",
            &format!("/api/v1/users/{demoted_id}/role"),
            &admin,
            Some(json!({"role": "customer"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let entries = h.trail(&admin).await.len();
    let (status, problem) = h
        .call(
            "POST",
            &role_path,
            &demoted,
            Some(json!({"role": "admin"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, _) = h.call("GET", "/api/v1/audit", &demoted, None, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let ghost = h.token(777_777, Role::Admin);
    let (status, _) = h
        .call(
            "POST",
            &role_path,
            &ghost,
            Some(json!({"role": "admin"})),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        h.trail(&admin).await.len(),
        entries,
        "refusals record nothing"
    );

    // A leader transfer through a node's admin API (what bookingctl does) is recorded
    // by the node, with the operator's name.
    let (leader, follower) = {
        let leader = h
            .cluster
            .nodes
            .iter()
            .find(|n| n.node.shard("mumbai").is_ok_and(|s| s.raft.is_leader()))
            .expect("mumbai has a leader");
        let follower = h
            .cluster
            .nodes
            .iter()
            .find(|n| n.node.id() != leader.node.id())
            .unwrap();
        (leader.client_addr, follower.node.id())
    };
    let response = h
        .http
        .post(format!(
            "http://{leader}/admin/shards/mumbai/transfer-leader"
        ))
        .header(raft_node::audit::OPERATOR_HEADER, "alice")
        .json(&json!({ "to": follower }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let recorded = loop {
        let trail = h.trail(&admin).await;
        if let Some(entry) = trail
            .iter()
            .find(|e| e["action"] == json!("transfer_leader"))
        {
            break entry.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "transfer never recorded: {trail:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        recorded["actor"]
            .as_str()
            .unwrap()
            .starts_with("operator:alice via node"),
        "{recorded}"
    );
    assert_eq!(recorded["target"], json!("shard mumbai"));
    assert!(recorded["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("to node {follower}")));
    h.stop().await;
}

/// Admin actions of the payment side: creating a coupon, and cancelling a customer's
/// paid booking (which issues its refund) are in the trail with who and what; a
/// customer cancelling their own booking is not an admin action and records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coupon_creation_and_refunds_on_a_customers_behalf_are_audited() {
    let h = Harness::start().await;
    let (admin_id, admin) = h.account("payadmin", "+919833333311", Role::Admin).await;
    let admin_actor = format!("user:{admin_id} (admin)");
    let customer_id = 900_400u64;
    let customer = h.token(customer_id, Role::Customer);
    let until = api::views::rfc3339((api::auth::now_s() + 86_400) * 1_000);
    let coupon = json!({"code": "AUDIT-20", "percent": 20, "max_discount_minor": 4_000,
        "valid_until": until, "max_uses": 7});

    // A customer cannot create coupons, and the refusal records nothing.
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/coupons",
            &customer,
            Some(coupon.clone()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(h.trail(&admin).await.is_empty());
    // The admin's coupon: requested, then applied; a retry records nothing new.
    for _ in 0..2 {
        let (status, created) = h
            .call(
                "POST",
                "/api/v1/coupons",
                &admin,
                Some(coupon.clone()),
                Some("coupon-1"),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let trail = h.trail(&admin).await;
    let coupon_target = "coupon:AUDIT-20".to_owned();
    assert_eq!(
        summary(&trail),
        vec![
            (
                admin_actor.clone(),
                "create_coupon".into(),
                coupon_target.clone(),
                "applied".into()
            ),
            (
                admin_actor.clone(),
                "create_coupon".into(),
                coupon_target.clone(),
                "requested".into()
            ),
        ]
    );
    let detail = trail[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("20% off") && detail.contains("7 uses"),
        "{detail}"
    );

    // Two paid bookings of one customer.
    let show_id = h
        .delhi_show(&admin, "Refund Hall", "Refunded Premiere")
        .await;
    let mut bookings = Vec::new();
    for seats in [json!([0, 1]), json!([2])] {
        let (status, lock) = h
            .call(
                "POST",
                &format!("/api/v1/shows/{show_id}/seats/lock"),
                &customer,
                Some(json!({ "seats": seats })),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{lock}");
        let booking = lock["booking_id"].as_str().unwrap().to_owned();
        let (status, paid) = h
            .call(
                "POST",
                &format!("/api/v1/bookings/{booking}/payment"),
                &customer,
                Some(json!({"method": "sandbox-approve"})),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{paid}");
        bookings.push(booking);
    }
    let entries = h.trail(&admin).await.len();

    // The customer cancels one themselves: refunded, and not in the trail.
    let (status, own) = h
        .call(
            "DELETE",
            &format!("/api/v1/bookings/{}", bookings[1]),
            &customer,
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["payment_status"], "refunded", "{own}");
    assert_eq!(h.trail(&admin).await.len(), entries);

    // The admin cancels the other on the customer's behalf: the refund is issued at
    // the gateway and the trail says who did it, to which booking, and what came of it.
    let (status, cancelled) = h
        .call(
            "DELETE",
            &format!("/api/v1/bookings/{}", bookings[0]),
            &admin,
            None,
            Some("refund-1"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(
        (
            cancelled["status"].clone(),
            cancelled["payment_status"].clone()
        ),
        (json!("cancelled"), json!("refunded"))
    );
    let trail = h.trail(&admin).await;
    assert_eq!(trail.len(), entries + 2);
    let booking_target = format!("booking:{}", bookings[0]);
    assert_eq!(
        summary(&trail[..2]),
        vec![
            (
                admin_actor.clone(),
                "cancel_booking".into(),
                booking_target.clone(),
                "applied".into()
            ),
            (
                admin_actor.clone(),
                "cancel_booking".into(),
                booking_target.clone(),
                "requested".into()
            ),
        ]
    );
    let requested = trail[1]["detail"].as_str().unwrap();
    assert!(
        requested.contains(&format!("user:{customer_id}")) && requested.contains(&show_id),
        "{requested}"
    );
    assert_eq!(
        trail[0]["detail"],
        json!("applied: cancelled; refund 1000 minor units, payment refunded")
    );

    // An admin's cancel of an already cancelled booking is refused, and recorded so.
    let (status, again) = h
        .call(
            "DELETE",
            &format!("/api/v1/bookings/{}", bookings[0]),
            &admin,
            None,
            None,
        )
        .await;
    assert!(status.is_client_error(), "{status} {again}");
    let trail = h.trail(&admin).await;
    assert_eq!(trail.len(), entries + 4);
    assert!(
        trail[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("rejected:"),
        "{}",
        trail[0]
    );
    h.stop().await;
}
