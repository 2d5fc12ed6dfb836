//! Support tickets over HTTP against a real cluster: a customer opens a ticket about
//! their booking, talks with an agent, and never sees (or learns of) anyone else's.

mod harness;

use harness::Harness;
use reqwest::StatusCode;
use serde_json::json;
use state_machine::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ticket_permissions_and_conversation() {
    let h = Harness::start().await;
    let show = h.show(4, 10).await;
    let (asha_booking, _) = h.lock(7_001, &show, &[0]).await;
    h.pay(7_001, &asha_booking).await;
    let (ravi_booking, _) = h.lock(7_002, &show, &[1]).await;
    let asha = h.token(7_001, Role::Customer);
    let ravi = h.token(7_002, Role::Customer);
    let agent = h.token(7_100, Role::Support);
    let admin = h.token(900_000, Role::Admin);

    // A customer may open tickets only about their own bookings.
    let (status, body) = h
        .call(
            "POST",
            "/api/v1/support/tickets",
            Some(&asha),
            Some(json!({"booking_id": ravi_booking, "subject": "x", "message": "y"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, ticket) = h
        .call(
            "POST",
            "/api/v1/support/tickets",
            Some(&asha),
            Some(json!({"booking_id": asha_booking, "subject": "Wrong seats",
                        "message": "I booked A1 but the ticket says A2"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ticket}");
    assert_eq!(ticket["status"], "open");
    assert_eq!(ticket["booking_id"], asha_booking.as_str());
    let id = ticket["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("global-"));
    let (status, _) = h
        .call(
            "POST",
            "/api/v1/support/tickets",
            Some(&ravi),
            Some(json!({"booking_id": ravi_booking, "subject": "Ravi's", "message": "help"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // Another customer cannot read, write, close or list it: it does not exist for them.
    let path = format!("/api/v1/support/tickets/{id}");
    let (status, _) = h.call("GET", &path, Some(&ravi), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(
            "POST",
            &format!("{path}/messages"),
            Some(&ravi),
            Some(json!({"message": "hi"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = h
        .call(
            "POST",
            &format!("{path}/status"),
            Some(&ravi),
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = h
        .call("GET", "/api/v1/support/tickets", Some(&ravi), None)
        .await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert!(items.iter().all(|t| t["customer_id"] == 7_002));
    let (status, _) = h.call("GET", "/api/v1/support/tickets", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Agents see every ticket and answer; the customer answers back; statuses follow.
    let (_, all) = h
        .call("GET", "/api/v1/support/tickets", Some(&agent), None)
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2, "{all}");
    let (_, open_only) = h
        .call(
            "GET",
            "/api/v1/support/tickets?status=open&limit=1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(open_only["items"].as_array().unwrap().len(), 1);
    assert!(open_only["next_cursor"].is_string(), "{open_only}");
    let (status, answered) = h
        .call(
            "POST",
            &format!("{path}/messages"),
            Some(&agent),
            Some(json!({"message": "Fixed: your ticket now says A1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answered}");
    assert_eq!(answered["status"], "awaiting_customer");
    assert_eq!(answered["agent_id"], 7_100);
    let (status, _) = h
        .call(
            "POST",
            &format!("{path}/status"),
            Some(&asha),
            Some(json!({"status": "resolved"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, thanked) = h
        .call(
            "POST",
            &format!("{path}/messages"),
            Some(&asha),
            Some(json!({"message": "Thanks!"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(thanked["status"], "open");
    let (status, resolved) = h
        .call(
            "POST",
            &format!("{path}/status"),
            Some(&agent),
            Some(json!({"status": "resolved"})),
        )
        .await;
    assert_eq!(
        (status, resolved["status"].as_str()),
        (StatusCode::OK, Some("resolved"))
    );
    let (status, closed) = h
        .call(
            "POST",
            &format!("{path}/status"),
            Some(&asha),
            Some(json!({"status": "closed"})),
        )
        .await;
    assert_eq!(
        (status, closed["status"].as_str()),
        (StatusCode::OK, Some("closed"))
    );
    let (status, body) = h
        .call(
            "POST",
            &format!("{path}/messages"),
            Some(&agent),
            Some(json!({"message": "?"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, final_view) = h.call("GET", &path, Some(&asha), None).await;
    let messages: Vec<(bool, &str)> = final_view["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["from_agent"].as_bool().unwrap(),
                m["body"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            (false, "I booked A1 but the ticket says A2"),
            (true, "Fixed: your ticket now says A1"),
            (false, "Thanks!"),
        ]
    );

    // Bad input is refused with what to fix.
    let (status, body) = h
        .call(
            "POST",
            &format!("{path}/status"),
            Some(&agent),
            Some(json!({"status": "done"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = h
        .call(
            "GET",
            "/api/v1/support/tickets/mumbai-3",
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = h
        .call(
            "POST",
            "/api/v1/support/tickets",
            Some(&asha),
            Some(
                json!({"booking_id": asha_booking, "subject": "big", "message": "x".repeat(5_000)}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["limit"], "ticket_message_bytes_max");
    h.stop().await;
}
