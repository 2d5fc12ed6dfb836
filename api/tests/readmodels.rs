//! Read models built from the event stream, over HTTP against a real cluster: ranked,
//! typo-tolerant, accent-insensitive show search; trending shows that reflect a booking
//! whenever the reported staleness says it is applied; personal feed and carousels.

mod harness;

use harness::Harness;
use reqwest::StatusCode;
use serde_json::Value;
use state_machine::Role;
use std::time::{Duration, Instant};

fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|show| show["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn search_finds_misspelt_and_accented_titles_ranked() {
    let h = Harness::start().await;
    let lumiere = h.theater("mumbai", "Théâtre Lumière", 4, 10).await;
    h.show_at(&lumiere, "Avengers: Endgame", "action", 2).await;
    h.show_at(&lumiere, "Amélie", "romance", 3).await;
    let hall = h.theater("mumbai", "Avengers Hall", 4, 10).await;
    h.show_at(&hall, "Jawan", "action", 4).await;
    let delhi = h.theater("delhi", "Delhi Screens", 4, 10).await;
    h.show_at(&delhi, "Avengers: Endgame", "action", 2).await;

    let search = |query: &str| {
        format!("/api/v1/shows?location=mumbai&search={query}&consistency=linearizable")
    };
    let (status, page) = h.call("GET", &search("avngers"), None, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    // The title match ranks above the theater-name match; Delhi's show is not here.
    assert_eq!(titles(&page), ["Avengers: Endgame", "Jawan"], "{page}");
    assert!(page["items"][0]["id"]
        .as_str()
        .unwrap()
        .starts_with("mumbai-"));
    assert!(
        page["items"][0]["seat_counts"]["available"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        page["staleness"]["model_index"].as_u64().is_some(),
        "{page}"
    );
    let (_, page) = h.call("GET", &search("AMELIE"), None, None).await;
    assert_eq!(titles(&page), ["Amélie"]);
    let (_, page) = h
        .call("GET", &search("theatre%20lumiere"), None, None)
        .await;
    assert_eq!(titles(&page).len(), 2, "{page}");
    let (_, page) = h.call("GET", &search("ROMANCE"), None, None).await;
    assert_eq!(titles(&page), ["Amélie"]);
    let (_, page) = h.call("GET", &search("zzzzzz"), None, None).await;
    assert!(titles(&page).is_empty());

    // A show published now is found at once by a caller asking for consistency.
    h.show_at(&hall, "Avatar", "sci-fi", 5).await;
    let (_, page) = h.call("GET", &search("avatr"), None, None).await;
    assert_eq!(titles(&page), ["Avatar"], "{page}");

    // Paging through ranked results with the cursor, one result a page, until the
    // last page has no cursor. Avatar plays at Avengers Hall too: a theater match,
    // later than Jawan.
    let mut pages = Vec::new();
    let mut query = format!("{}&limit=1", search("avengers"));
    loop {
        let (_, page) = h.call("GET", &query, None, None).await;
        pages.push(titles(&page));
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        assert!(pages.len() < 10, "the cursor never ends: {pages:?}");
        query = format!("{}&limit=1&cursor={cursor}", search("avengers"));
    }
    assert_eq!(pages, [["Avengers: Endgame"], ["Jawan"], ["Avatar"]]);
    let (status, _) = h
        .call(
            "GET",
            &format!("{}&cursor=bogus", search("avengers")),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trending_reflects_bookings_within_the_reported_staleness() {
    let h = Harness::start().await;
    let theater = h.theater("mumbai", "PVR Juhu", 4, 10).await;
    let jawan = h.show_at(&theater, "Jawan", "action", 2).await;
    let amelie = h.show_at(&theater, "Amélie", "romance", 3).await;
    let (status, feed) = h
        .call("GET", "/api/v1/home/feeds?city=mumbai", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{feed}");
    assert!(feed["trending"].as_array().unwrap().is_empty(), "{feed}");

    let (booking, _) = h.lock(8_001, &jawan, &[0, 1, 2]).await;
    h.pay(8_001, &booking).await;
    let (booking, _) = h.lock(8_002, &amelie, &[0]).await;
    h.pay(8_002, &booking).await;
    // The index of the last confirm: the model has it once it reports that index.
    let admin = h.token(900_000, Role::Admin);
    let (_, events) = h
        .call(
            "GET",
            &format!("/api/v1/events?city=mumbai&show={amelie}"),
            Some(&admin),
            None,
        )
        .await;
    let confirmed_at = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "booking_confirmed")
        .map(|e| e["index"].as_u64().unwrap())
        .max()
        .unwrap();

    let started = Instant::now();
    let mut feed = Value::Null;
    for _ in 0..500 {
        let (_, body) = h
            .call("GET", "/api/v1/home/feeds?city=mumbai", None, None)
            .await;
        feed = body;
        if feed["staleness"]["model_index"].as_u64().unwrap() >= confirmed_at {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "trending caught up with index {confirmed_at} after {} ms (stated bound {} ms)",
        started.elapsed().as_millis(),
        feed["staleness"]["bound_ms"]
    );
    assert!(
        feed["staleness"]["model_index"].as_u64().unwrap() >= confirmed_at,
        "the model never caught up: {feed}"
    );
    // Whenever the model says it has applied the bookings, trending shows them.
    let trending: Vec<(String, u64)> = feed["trending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["title"].as_str().unwrap().to_owned(),
                s["seats_booked_recently"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        trending,
        [("Jawan".to_owned(), 3), ("Amélie".to_owned(), 1)],
        "{feed}"
    );
    assert!(
        feed.get("recent_genres").is_none(),
        "anonymous feeds are not personal"
    );

    // The booker's own feed knows their city and genre and suggests more of it.
    let me = h.token(8_001, Role::Customer);
    let (_, mine) = h
        .call("GET", "/api/v1/home/feeds?city=mumbai", Some(&me), None)
        .await;
    assert_eq!(
        mine["recent_cities"],
        serde_json::json!(["mumbai"]),
        "{mine}"
    );
    assert_eq!(mine["recent_genres"], serde_json::json!(["action"]));
    assert_eq!(mine["for_you"][0]["title"], "Jawan");
    // A booking in another city joins the user's history once that city's model,
    // started by the signed-in feed, has read it.
    let delhi = h.theater("delhi", "Delhi Screens", 4, 10).await;
    let delhi_show = h.show_at(&delhi, "Stree 2", "horror", 2).await;
    let (booking, _) = h.lock(8_001, &delhi_show, &[0]).await;
    h.pay(8_001, &booking).await;
    let mut mine = Value::Null;
    for _ in 0..400 {
        let (_, body) = h
            .call("GET", "/api/v1/home/feeds?city=mumbai", Some(&me), None)
            .await;
        mine = body;
        if mine["recent_cities"]
            .as_array()
            .is_some_and(|c| c.len() == 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        mine["recent_cities"],
        serde_json::json!(["delhi", "mumbai"]),
        "{mine}"
    );
    assert_eq!(
        mine["recent_genres"],
        serde_json::json!(["horror", "action"])
    );
    let (status, _) = h
        .call(
            "GET",
            "/api/v1/home/feeds?city=mumbai",
            Some("not-a-token"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, carousels) = h
        .call("GET", "/api/v1/home/carousels?city=mumbai", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{carousels}");
    let upcoming = &carousels["carousels"][0];
    assert_eq!(upcoming["id"], "upcoming");
    assert_eq!(titles(upcoming), ["Jawan", "Amélie"]);
    let ids: Vec<&str> = carousels["carousels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"genre:action") && ids.contains(&"genre:romance"),
        "{carousels}"
    );
    let (status, _) = h
        .call("GET", "/api/v1/home/carousels?city=atlantis", None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    h.stop().await;
}
