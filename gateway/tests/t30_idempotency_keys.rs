//! What a create's Idempotency-Key tells a caller who did not get the answer: the key
//! lookup names the payment a key made, or says that none was made (and only in an
//! answer about that very key); the switches that lose a create's answer and refuse
//! its retries behave as documented, so the api's tests can rely on them.

use gateway::sandbox::{start, Running, SandboxConfig};
use gateway::wire::{Behaviour, PaymentKeyLookup};
use reqwest::StatusCode;
use serde_json::json;

async fn sandbox(behaviour: Behaviour) -> Running {
    let mut config = SandboxConfig::generated();
    config.behaviour = behaviour;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(config, listener).unwrap()
}

async fn create(http: &reqwest::Client, gateway: &Running, key: &str) -> StatusCode {
    http.post(format!("{}/v1/payments", gateway.base_url()))
        .bearer_auth(gateway.api_key())
        .header("idempotency-key", key)
        .json(&json!({ "amount_minor": 1_000, "currency": "INR", "method": "sandbox-timeout" }))
        .send()
        .await
        .unwrap()
        .status()
}

async fn lookup(http: &reqwest::Client, gateway: &Running, key: &str) -> (StatusCode, String) {
    let response = http
        .get(format!("{}/v1/payment-keys", gateway.base_url()))
        .bearer_auth(gateway.api_key())
        .query(&[("key", key)])
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn the_key_lookup_names_the_payment_a_key_made_or_says_none_was_made() {
    let gateway = sandbox(Behaviour::default()).await;
    let http = reqwest::Client::new();
    let (status, body) = lookup(&http, &gateway, "booking-mumbai-1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: PaymentKeyLookup = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer,
        PaymentKeyLookup {
            key: "booking-mumbai-1".into(),
            payment: None
        }
    );
    assert_eq!(
        create(&http, &gateway, "booking-mumbai-1").await,
        StatusCode::CREATED
    );
    let (_, body) = lookup(&http, &gateway, "booking-mumbai-1").await;
    let answer: PaymentKeyLookup = serde_json::from_str(&body).unwrap();
    let made = gateway.payments().pop().unwrap();
    assert_eq!(answer.payment, Some(made));
    // A key with characters that need escaping in a query is the same key.
    let odd = "a&key=b/c?d#e%";
    assert_eq!(create(&http, &gateway, odd).await, StatusCode::CREATED);
    let (_, body) = lookup(&http, &gateway, odd).await;
    let answer: PaymentKeyLookup = serde_json::from_str(&body).unwrap();
    assert_eq!(answer.key, odd);
    assert!(answer.payment.is_some());
    // Bad keys and callers without the API key learn nothing.
    for bad in ["", &"k".repeat(201), "tab\there"] {
        let (status, _) = lookup(&http, &gateway, bad).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
    }
    let anonymous = http
        .get(format!("{}/v1/payment-keys?key=k", gateway.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_lost_answer_still_makes_the_payment_and_refused_repeats_make_nothing_more() {
    let gateway = sandbox(Behaviour {
        lose_create_responses: true,
        repeat_create_status: 429,
        repeat_create_from: 3,
        ..Behaviour::default()
    })
    .await;
    let http = reqwest::Client::new();
    assert_eq!(
        create(&http, &gateway, "k1").await,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(gateway.payments().len(), 1, "the payment exists");
    // The 2nd create answers the payment (only new payments lose their answer), the
    // 3rd and later are refused; none makes another payment.
    assert_eq!(create(&http, &gateway, "k1").await, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(
            create(&http, &gateway, "k1").await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(gateway.creates_with_key("k1"), 4);
    assert_eq!(gateway.creates_with_key("k2"), 0);
    assert_eq!(gateway.payments().len(), 1);
    // A new key's first create is never a repeat.
    assert_eq!(
        create(&http, &gateway, "k2").await,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(gateway.payments().len(), 2);
    // A status that is not an error is no refusal.
    gateway.set_behaviour(Behaviour {
        repeat_create_status: 200,
        ..Behaviour::default()
    });
    assert_eq!(create(&http, &gateway, "k2").await, StatusCode::OK);
}
