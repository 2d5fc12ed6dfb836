//! The event stream API over HTTP against a real three-node cluster: SSE resume after
//! a disconnect (no gap, no duplicate), paged JSON with cursors, access filtering, the
//! retention window's 410, and events outliving log compaction.

mod harness;

use harness::Harness;
use reqwest::StatusCode;
use serde_json::Value;
use state_machine::{Limits, Role};
use std::time::Duration;

/// Every event id of `city` from the start, through the paged JSON API, `limit` at a
/// time (small pages cut through entries that produced several events).
async fn all_ids(h: &Harness, token: &str, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut query = format!("/api/v1/events?city=mumbai&limit={limit}");
    for _ in 0..10_000 {
        let (status, page) = h.call("GET", &query, Some(token), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            return ids;
        }
        ids.extend(
            items
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned()),
        );
        let cursor = page["next_cursor"].as_str().unwrap();
        query = format!("/api/v1/events?city=mumbai&limit={limit}&cursor={cursor}");
    }
    panic!("the event list did not end");
}

fn index_of(id: &str) -> (u64, u32) {
    let (index, seq) = id.split_once('-').unwrap();
    (index.parse().unwrap(), seq.parse().unwrap())
}

/// Lock, then pay or release, for users `first..first + count` on seats from `seat`.
async fn bookings(h: &Harness, show: &str, first: u64, count: u64) {
    for n in 0..count {
        let user = first + n;
        let seat = (user % 200) as u32;
        let (booking, _) = h.lock(user, show, &[seat]).await;
        match user % 3 {
            0 => h.pay(user, &booking).await,
            1 => h.release(user, &booking).await,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sse_resumes_after_disconnect_without_gap_or_duplicate() {
    let h = Harness::start().await;
    let admin = h.token(900_000, Role::Admin);
    let show = h.show(10, 20).await;
    bookings(&h, &show, 1_000, 12).await;

    // First connection: read some events, then drop the connection mid-stream.
    let mut first = h.sse("/api/v1/events?city=mumbai", &admin, None).await;
    assert_eq!(first.status, StatusCode::OK);
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..9 {
        let message = first.next(Duration::from_secs(5)).await.expect("an event");
        assert_eq!(message.data["id"].as_str(), message.id.as_deref());
        seen.push(message.id.unwrap());
    }
    drop(first);

    // While the consumer is away, and while it reads again, the ledger moves on.
    bookings(&h, &show, 1_100, 6).await;
    let mut second = h
        .sse(
            "/api/v1/events?city=mumbai",
            &admin,
            seen.last().map(String::as_str),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK);
    let writer = {
        let state = h.state.clone();
        let base = h.base.clone();
        let show = show.clone();
        let keys = h.keys.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for user in 1_200..1_206u64 {
                let token = keys
                    .issue_access(
                        state_machine::UserId(user),
                        Role::Customer,
                        api::auth::now_s(),
                    )
                    .unwrap();
                let response = client
                    .post(format!("{base}/api/v1/shows/{show}/seats/lock"))
                    .bearer_auth(token)
                    .json(&serde_json::json!({ "seats": [150 + (user - 1_200) as u32] }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED);
            }
            drop(state);
        })
    };
    // Read while the writer writes.
    for _ in 0..5 {
        let message = second
            .next(Duration::from_secs(10))
            .await
            .expect("an event");
        seen.push(message.id.unwrap());
    }
    writer.await.unwrap();
    let truth = all_ids(&h, &admin, 100).await;
    let last = truth.last().unwrap().clone();
    while seen.last() != Some(&last) {
        let message = second
            .next(Duration::from_secs(10))
            .await
            .expect("the stream reaches the head");
        seen.push(message.id.unwrap());
    }
    assert_eq!(seen, truth, "resumed stream differs from the log");
    assert!(seen.windows(2).all(|w| index_of(&w[0]) < index_of(&w[1])));
    // Nothing more arrives once the head is reached.
    assert!(second.next(Duration::from_millis(600)).await.is_none());

    // Paged JSON with small pages gives the same sequence.
    assert_eq!(all_ids(&h, &admin, 7).await, truth);
    assert_eq!(all_ids(&h, &admin, 1).await, truth);
    // The stream outlives the api's request timeout (6 s here) and delivers what
    // happens next.
    tokio::time::sleep(Duration::from_millis(6_500)).await;
    let (late, _) = h.lock(1_300, &show, &[190]).await;
    let message = second
        .next(Duration::from_secs(5))
        .await
        .expect("a late event");
    assert_eq!(message.data["type"], "seats_locked");
    assert_eq!(message.data["booking_id"], late.as_str());
    assert!(index_of(message.id.as_deref().unwrap()) > index_of(&last));

    // Every replica derives the same stream: once caught up, all three serve the same
    // events, so a consumer may switch replicas at any event id.
    let head = h.cluster.nodes[0]
        .node
        .events("mumbai", 0, 0, 100_000)
        .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..200 {
        replicas = h
            .cluster
            .nodes
            .iter()
            .map(|n| n.node.events("mumbai", 0, 0, 100_000).unwrap().events)
            .collect::<Vec<_>>();
        if replicas
            .iter()
            .all(|events| events.len() == replicas[0].len())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(head.events.len() >= truth.len());
    assert!(
        replicas.windows(2).all(|w| w[0] == w[1]),
        "replicas serve different streams"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customers_see_their_own_events_and_anonymous_seat_changes() {
    let h = Harness::start().await;
    let show = h.show(4, 10).await;
    let (mine, _) = h.lock(3_001, &show, &[0, 1]).await;
    h.pay(3_001, &mine).await;
    let (theirs, _) = h.lock(3_002, &show, &[5]).await;
    h.release(3_002, &theirs).await;

    let me = h.token(3_001, Role::Customer);
    let (status, page) = h
        .call(
            "GET",
            &format!("/api/v1/events?city=mumbai&show={show}"),
            Some(&me),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    // The customer's own payment events are there too (how many depends on whether the
    // gateway's webhook beat the answer to the create call); the rest is exact.
    let types: Vec<&str> = items
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .filter(|t| !t.starts_with("payment_"))
        .collect();
    assert_eq!(
        types,
        [
            "show_published",
            "seats_locked",
            "booking_confirmed",
            "seat_status",
            "seat_status"
        ],
        "{page}"
    );
    assert!(
        items.iter().any(|i| i["type"] == "payment_started"),
        "{page}"
    );
    let items: Vec<Value> = items
        .iter()
        .filter(|i| !i["type"].as_str().unwrap().starts_with("payment_"))
        .cloned()
        .collect();
    let all_items = page["items"].as_array().unwrap();
    for item in all_items {
        assert_eq!(item["show_id"], show.as_str());
        if let Some(user) = item.get("user_id") {
            assert_eq!(user, 3_001, "another user's id leaked: {item}");
        }
    }
    assert_eq!(items[3]["status"], "locked");
    assert_eq!(items[3]["seats"], serde_json::json!([5]));
    assert!(items[3].get("lock_id").is_none() && items[3].get("booking_id").is_none());
    assert_eq!(items[4]["status"], "available");

    // The admin sees who did what.
    let admin = h.token(900_000, Role::Admin);
    let (_, page) = h
        .call(
            "GET",
            &format!("/api/v1/events?city=mumbai&show={show}"),
            Some(&admin),
            None,
        )
        .await;
    let users: Vec<Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("user_id").cloned())
        .collect();
    assert!(users.contains(&serde_json::json!(3_002)), "{page}");

    // The SSE view is filtered the same way.
    let mut stream = h
        .sse(
            &format!("/api/v1/events?city=mumbai&show={show}"),
            &me,
            None,
        )
        .await;
    let mut streamed = Vec::new();
    while let Some(message) = stream.next(Duration::from_millis(800)).await {
        streamed.push(message.data);
    }
    assert_eq!(&streamed, all_items);

    // Anyone may follow the show's seat map without a token: only anonymous changes.
    let mut public = h
        .http
        .get(format!("{}/api/v1/shows/{show}/seats/events", h.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::OK);
    let mut text = String::new();
    while text.matches("data:").count() < 5 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), public.chunk())
            .await
            .expect("public events")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(public);
    let public_items: Vec<Value> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).unwrap())
        .collect();
    let kinds: Vec<&str> = public_items
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "show_published",
            "seat_status",
            "seat_status",
            "seat_status",
            "seat_status"
        ]
    );
    assert!(
        public_items.iter().all(|i| i.get("user_id").is_none()),
        "{public_items:?}"
    );
    let (status, page) = h
        .call(
            "GET",
            &format!("/api/v1/shows/{show}/seats/events?limit=2"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // `limit` bounds the events read; a filtered view may hold fewer.
    assert!(page["items"].as_array().unwrap().len() <= 2, "{page}");
    assert!(page["next_cursor"].is_string());
    let (status, _) = h
        .call("GET", "/api/v1/shows/atlantis-1/seats/events", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Refusals: no token, the global shard, a show of another city, a bad cursor.
    let (status, _) = h
        .call("GET", "/api/v1/events?city=mumbai", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = h
        .call("GET", "/api/v1/events?city=global", Some(&me), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = h
        .call("GET", "/api/v1/events?city=global", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = h
        .call(
            "GET",
            "/api/v1/events?city=delhi&show=mumbai-1",
            Some(&me),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = h
        .call(
            "GET",
            "/api/v1/events?city=mumbai&cursor=zz",
            Some(&me),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = h
        .call(
            "GET",
            "/api/v1/events?city=mumbai&limit=101",
            Some(&me),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let stream = h
        .sse("/api/v1/events?city=mumbai", &me, Some("not-an-id"))
        .await;
    assert_eq!(stream.status, StatusCode::UNPROCESSABLE_ENTITY);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_the_window_is_410_and_events_outlive_log_compaction() {
    let limits = Limits {
        event_retention_indexes: 30,
        ..Limits::default()
    };
    // Snapshot every 10 entries and keep no log behind it: the log is compacted
    // almost to its head, so every event read below comes from the ledger's store.
    let timing = raft_node::config::RaftTiming {
        snapshot_after_entries: 10,
        keep_entries_after_snapshot: 0,
        ..harness::timing()
    };
    let h = Harness::start_with(limits, timing).await;
    let admin = h.token(900_000, Role::Admin);
    let show = h.show(4, 10).await;
    let mut locks = Vec::new();
    for user in 0..30u64 {
        let (booking, index) = h.lock(5_000 + user, &show, &[(user % 40) as u32]).await;
        locks.push(index);
        h.release(5_000 + user, &booking).await;
    }
    let leader_purged = h.cluster.nodes.iter().any(|node| {
        let metrics = node.node.shard("mumbai").unwrap().metrics();
        metrics.purged.is_some_and(|purged| purged.index > 40)
    });
    assert!(leader_purged, "the log was never compacted");

    let (status, problem) = h
        .call(
            "GET",
            "/api/v1/events?city=mumbai&from_index=1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::GONE, "{problem}");
    assert_eq!(problem["type"], "/problems/events-expired");
    let oldest = problem["oldest_index"].as_u64().unwrap();
    assert!(
        oldest > 1
            && problem["detail"]
                .as_str()
                .unwrap()
                .contains(&oldest.to_string())
    );
    let refused = h
        .sse("/api/v1/events?city=mumbai", &admin, Some("1-0"))
        .await;
    assert_eq!(refused.status, StatusCode::GONE);
    assert_eq!(refused.problem().await["type"], "/problems/events-expired");

    // From the oldest kept index on, every lock's event is there although the log
    // entries that produced them are gone.
    let (status, page) = h
        .call(
            "GET",
            &format!("/api/v1/events?city=mumbai&from_index={oldest}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert!(items.iter().all(|i| i["index"].as_u64().unwrap() >= oldest));
    let kept_locks: Vec<u64> = locks.into_iter().filter(|index| *index >= oldest).collect();
    assert!(
        kept_locks.len() >= 5,
        "the window should hold several locks"
    );
    for index in kept_locks {
        assert!(
            items
                .iter()
                .any(|i| i["index"] == index && i["type"] == "seats_locked"),
            "lock at {index} has no event: {page}"
        );
    }
    // Without a start position a consumer begins at the oldest kept event.
    let (status, page) = h
        .call(
            "GET",
            "/api/v1/events?city=mumbai&limit=1",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(page["items"][0]["index"].as_u64().unwrap() >= oldest);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analytics_export_writes_a_time_range_as_csv() {
    let h = Harness::start().await;
    let admin = h.token(900_000, Role::Admin);
    let show = h.show(4, 10).await;
    bookings(&h, &show, 3_000, 6).await;
    let (_, page) = h
        .call("GET", "/api/v1/events?city=mumbai", Some(&admin), None)
        .await;
    let items = page["items"].as_array().unwrap().clone();
    let times: Vec<u64> = items
        .iter()
        .map(|i| api::views::parse_rfc3339(i["at"].as_str().unwrap()).unwrap())
        .collect();

    // The whole range: one row per event, in log order, with the event's fields.
    let mut out = Vec::new();
    let summary = api::export::export_csv(&h.state, "mumbai", 0, u64::MAX, &mut out)
        .await
        .unwrap();
    assert_eq!(summary.rows as usize, items.len());
    assert!(!summary.truncated_by_retention);
    let mut reader = csv::Reader::from_reader(out.as_slice());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(headers.iter().collect::<Vec<_>>(), api::export::COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    for (row, item) in rows.iter().zip(&items) {
        assert_eq!(&row[0], item["id"].as_str().unwrap());
        assert_eq!(&row[5], item["type"].as_str().unwrap());
    }
    let locked = rows.iter().find(|row| &row[5] == "seats_locked").unwrap();
    assert!(locked[6].starts_with("mumbai-") && !locked[10].is_empty() && !locked[11].is_empty());

    // A range from the middle event's time on: exactly the events at or after it.
    let middle = times[times.len() / 2];
    let mut out = Vec::new();
    let summary = api::export::export_csv(&h.state, "mumbai", middle, u64::MAX, &mut out)
        .await
        .unwrap();
    let expected = times.iter().filter(|t| **t >= middle).count();
    assert_eq!(summary.rows as usize, expected);
    let mut out = Vec::new();
    let summary = api::export::export_csv(&h.state, "mumbai", 0, middle, &mut out)
        .await
        .unwrap();
    assert_eq!(summary.rows as usize, items.len() - expected);
    assert!(
        api::export::export_csv(&h.state, "mumbai", 5, 5, Vec::new())
            .await
            .is_err()
    );
    h.stop().await;
}

/// Payment events carry their own shapes (never the `other` catch-all) and are as
/// private as bookings: the payer sees theirs, admin and sre see all, other customers
/// and the public seat stream see none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_events_have_shapes_and_only_the_payer_sees_them() {
    let h = Harness::start().await;
    let show = h.show(4, 10).await;
    let (mine, _) = h.lock(4_001, &show, &[0, 1]).await;
    h.pay(4_001, &mine).await;
    let (theirs, _) = h.lock(4_002, &show, &[6]).await;
    h.pay(4_002, &theirs).await;
    let me = h.token(4_001, Role::Customer);
    let cancelled = h.cancel(4_001, &mine).await;
    assert_eq!(cancelled["payment_status"], "refunded", "{cancelled}");

    let page_of = |token: Option<String>, path: String| {
        let h = &h;
        async move {
            let (status, page) = h.call("GET", &path, token.as_deref(), None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            page["items"].as_array().unwrap().clone()
        }
    };
    let payments = |items: &[Value], booking: &str| -> Vec<Value> {
        items
            .iter()
            .filter(|i| i["type"].as_str().unwrap().starts_with("payment_"))
            .filter(|i| i["booking_id"] == booking)
            .cloned()
            .collect()
    };
    let events = format!("/api/v1/events?city=mumbai&show={show}");

    // The admin sees both payments, in full.
    let admin = h.token(900_000, Role::Admin);
    let all = page_of(Some(admin), events.clone()).await;
    assert!(
        all.iter().all(|i| i["type"] != "other"),
        "an event without a shape: {all:?}"
    );
    let my_payment = payments(&all, &mine);
    let started = &my_payment[0];
    assert_eq!(started["type"], "payment_started", "{my_payment:?}");
    assert_eq!(
        (
            started["show_id"].as_str(),
            started["user_id"].as_u64(),
            started["amount_minor"].as_u64()
        ),
        (Some(show.as_str()), Some(4_001), Some(50_000))
    );
    let statuses: Vec<&str> = my_payment[1..]
        .iter()
        .map(|i| {
            assert_eq!(i["type"], "payment_changed");
            assert_eq!(i["user_id"], 4_001);
            i["status"].as_str().unwrap()
        })
        .collect();
    assert_eq!(statuses.last(), Some(&"refunded"), "{my_payment:?}");
    assert!(statuses.contains(&"captured"), "{my_payment:?}");
    assert_eq!(my_payment.last().unwrap()["refund_minor"], 50_000);
    assert!(
        payments(&all, &theirs)
            .iter()
            .any(|i| i["status"] == "captured" && i["user_id"] == 4_002),
        "{all:?}"
    );

    // The payer sees their own payment events as the admin does, and none of the other
    // customer's.
    let own = page_of(Some(me.clone()), events.clone()).await;
    assert_eq!(payments(&own, &mine), my_payment);
    assert!(payments(&own, &theirs).is_empty(), "{own:?}");
    assert!(own
        .iter()
        .all(|i| i.get("user_id").is_none_or(|u| u == 4_001)));
    let other = page_of(Some(h.token(4_002, Role::Customer)), events.clone()).await;
    assert!(payments(&other, &mine).is_empty(), "{other:?}");
    assert_eq!(
        payments(&other, &theirs).len(),
        payments(&all, &theirs).len()
    );
    // Without a show filter too (payments are filtered by payer, not only by show).
    let unfiltered = page_of(Some(me), "/api/v1/events?city=mumbai".into()).await;
    assert!(payments(&unfiltered, &theirs).is_empty());
    assert_eq!(payments(&unfiltered, &mine), my_payment);

    // Anyone's seat stream: seat changes only, no payment of anybody.
    let public = page_of(None, format!("/api/v1/shows/{show}/seats/events")).await;
    assert!(!public.is_empty());
    assert!(
        public
            .iter()
            .all(|i| i["type"] == "show_published" || i["type"] == "seat_status"),
        "{public:?}"
    );
    h.stop().await;
}
