//! Payment gateways behind one trait, reached over HTTP.
//!
//! `PaymentGateway` is what the booking saga (`saga`) needs from a provider: create a
//! payment (idempotently), find the payment an idempotency key made, fetch it, cancel
//! it, refund it, and verify a webhook.
//! `HttpGateway` speaks the sandbox gateway's API (`gateway` crate, run as its own
//! process: `sandbox-gateway`); a real provider plugs in as another implementation.
//! `SandboxGateway` starts that same sandbox server inside this process on a loopback
//! port (the demo and the tests) and talks to it through `HttpGateway`, so the saga
//! always goes over HTTP and webhooks.
//!
//! Answers are classified here, once, by what they allow the saga to conclude:
//! `Refused` only for an answer that says the gateway looked at this request and will
//! never take it (a 4xx about the request itself). Anything that may change on a retry
//! is `Unavailable`: no answer, a timeout (408, or the client's own), a rush (429),
//! credentials being rotated (401, 403), a server error (5xx), or an answer that cannot
//! be read. Even `Refused` says nothing about an earlier call with the same idempotency
//! key whose answer was lost; the saga asks `find_by_key` before it concludes that no
//! payment exists.

use futures_util::future::BoxFuture;
use gateway::wire::{
    CreatePayment, CreateRefund, ErrorBody, PaymentKeyLookup, PaymentObject, WebhookEvent,
};
use state_machine::GatewayStatus;
use std::collections::BTreeMap;
use std::time::Duration;

/// A payment as the gateway reports it, in the saga's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayPayment {
    pub id: String,
    pub status: GatewayStatus,
    /// Grows with every change; the ledger ignores reports not newer than the last.
    pub version: u64,
    pub amount_minor: u64,
    pub payment_url: String,
    pub failure_reason: Option<String>,
    /// The booking's external id, as given at creation.
    pub booking: Option<String>,
}

/// A verified webhook: the event id and the payment as it stood when it was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayEvent {
    pub id: String,
    pub payment: GatewayPayment,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The gateway refused this call for a reason that retrying will not change (a 4xx
    /// about the request, other than the transient ones of `is_transient`).
    #[error("the payment gateway refused: {0}")]
    Refused(String),
    /// The call's outcome is unknown or the gateway asked to come back later (no
    /// answer, timeout, 429, 401/403, 5xx, an unreadable answer); retry with the same
    /// key.
    #[error("the payment gateway did not answer: {0}")]
    Unavailable(String),
}

/// Whether an HTTP status from the gateway may change on a retry: timeouts (408), a
/// rush (429), credentials being rotated or propagated (401, 403), server errors. Such
/// an answer never ends a payment.
pub fn is_transient(status: reqwest::StatusCode) -> bool {
    use reqwest::StatusCode as S;
    status.is_server_error()
        || matches!(
            status,
            S::REQUEST_TIMEOUT | S::TOO_MANY_REQUESTS | S::UNAUTHORIZED | S::FORBIDDEN
        )
}

/// What the saga asks to create.
#[derive(Clone, Debug)]
pub struct NewPayment {
    /// The booking's external id (`mumbai-12`), sent as metadata and echoed back.
    pub booking: String,
    pub amount_minor: u64,
    pub currency: String,
    pub method: String,
    /// Same key, same payment: the saga derives it from the booking.
    pub idempotency_key: String,
    /// Where this payment's webhooks go (this api node's webhook endpoint).
    pub webhook_url: Option<String>,
}

pub trait PaymentGateway: Send + Sync + 'static {
    /// Refuses a payment method the gateway does not offer, before anything is
    /// recorded (so a typo does not cost the customer their lock).
    fn validate_method(&self, method: &str) -> Result<(), String>;
    fn create(&self, payment: NewPayment) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>>;
    /// The payment a create with `idempotency_key` made. `Ok(None)` is the gateway's
    /// explicit word that no create with the key was accepted so far; any doubt is an
    /// error.
    fn find_by_key(
        &self,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<GatewayPayment>, GatewayError>>;
    fn fetch(&self, id: &str) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>>;
    /// Cancels a pending payment. A payment that already resolved is returned as it is.
    fn cancel(&self, id: &str) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>>;
    fn refund(
        &self,
        id: &str,
        amount_minor: u64,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>>;
    /// Checks a webhook's signature and freshness and parses it.
    fn verify_webhook(
        &self,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<GatewayEvent, String>;
}

/// The sandbox gateway's HTTP API.
pub struct HttpGateway {
    base_url: String,
    api_key: String,
    webhook_secret: Vec<u8>,
    /// How far a webhook's signed timestamp may be from now (replay window).
    tolerance_ms: u64,
    http: reqwest::Client,
}

impl HttpGateway {
    pub fn new(
        base_url: &str,
        api_key: &str,
        webhook_secret: &[u8],
        tolerance_ms: u64,
    ) -> Result<HttpGateway, String> {
        Ok(HttpGateway {
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            webhook_secret: webhook_secret.to_vec(),
            tolerance_ms,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(3))
                .build()
                .map_err(|e| format!("gateway HTTP client: {e}"))?,
        })
    }

    /// Sends `request` and returns the status with the body of a success; any other
    /// answer is classified (`is_transient`). A conflict that carries the payment as it
    /// is counts as a success: the caller learns its state.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, String), GatewayError> {
        let response = request
            .bearer_auth(&self.api_key)
            .send()
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| GatewayError::Unavailable(e.to_string()))?;
        if status.is_success() {
            return Ok((status, text));
        }
        let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
        if status == reqwest::StatusCode::CONFLICT {
            if let Some(object) = body.as_ref().and_then(|b| b.payment.as_ref()) {
                return Ok((status, serde_json::to_string(object).unwrap_or_default()));
            }
        }
        let message = body.map(|b| b.error).unwrap_or(text);
        if is_transient(status) {
            Err(GatewayError::Unavailable(format!("{status}: {message}")))
        } else {
            Err(GatewayError::Refused(format!("{status}: {message}")))
        }
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<GatewayPayment, GatewayError> {
        let (_, text) = self.send(request).await?;
        let object: PaymentObject = serde_json::from_str(&text)
            .map_err(|e| GatewayError::Unavailable(format!("unreadable answer: {e}")))?;
        // A status this client does not know says nothing certain about the payment.
        convert(object).map_err(GatewayError::Unavailable)
    }

    async fn lookup(&self, key: &str) -> Result<Option<GatewayPayment>, GatewayError> {
        let request = self
            .http
            .get(format!("{}/v1/payment-keys", self.base_url))
            .query(&[("key", key)]);
        let (status, text) = self.send(request).await?;
        let unsure = |why: String| GatewayError::Unavailable(format!("key lookup: {why}"));
        if status != reqwest::StatusCode::OK {
            return Err(unsure(format!("answered {status}")));
        }
        let lookup: PaymentKeyLookup =
            serde_json::from_str(&text).map_err(|e| unsure(format!("unreadable answer: {e}")))?;
        if lookup.key != key {
            return Err(unsure(format!("answered about key {:?}", lookup.key)));
        }
        lookup
            .payment
            .map(convert)
            .transpose()
            .map_err(GatewayError::Unavailable)
    }
}

fn convert(object: PaymentObject) -> Result<GatewayPayment, String> {
    let status = GatewayStatus::parse(&object.status)
        .ok_or_else(|| format!("unknown payment status {:?}", object.status))?;
    Ok(GatewayPayment {
        booking: object.metadata.get("booking_id").cloned(),
        id: object.id,
        status,
        version: object.version,
        amount_minor: object.amount_minor,
        payment_url: object.payment_url,
        failure_reason: object.failure_reason,
    })
}

impl PaymentGateway for HttpGateway {
    fn validate_method(&self, method: &str) -> Result<(), String> {
        gateway::sandbox::validate_method(method)
    }

    fn create(&self, payment: NewPayment) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        let body = CreatePayment {
            amount_minor: payment.amount_minor,
            currency: payment.currency,
            method: payment.method,
            metadata: BTreeMap::from([("booking_id".to_owned(), payment.booking)]),
            webhook_url: payment.webhook_url,
        };
        let request = self
            .http
            .post(format!("{}/v1/payments", self.base_url))
            .header("idempotency-key", payment.idempotency_key)
            .json(&body);
        Box::pin(self.call(request))
    }

    fn find_by_key(
        &self,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<GatewayPayment>, GatewayError>> {
        let key = idempotency_key.to_owned();
        Box::pin(async move { self.lookup(&key).await })
    }

    fn fetch(&self, id: &str) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        let request = self.http.get(format!("{}/v1/payments/{id}", self.base_url));
        Box::pin(self.call(request))
    }

    fn cancel(&self, id: &str) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        let request = self
            .http
            .post(format!("{}/v1/payments/{id}/cancel", self.base_url));
        Box::pin(self.call(request))
    }

    fn refund(
        &self,
        id: &str,
        amount_minor: u64,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        let request = self
            .http
            .post(format!("{}/v1/payments/{id}/refunds", self.base_url))
            .header("idempotency-key", idempotency_key)
            .json(&CreateRefund { amount_minor });
        Box::pin(self.call(request))
    }

    fn verify_webhook(
        &self,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<GatewayEvent, String> {
        let header = headers
            .get(gateway::signature::HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or("the webhook has no Sandbox-Signature header")?;
        let now = gateway::sandbox::now_ms();
        gateway::signature::verify(&self.webhook_secret, header, body, now, self.tolerance_ms)
            .map_err(|e| e.to_string())?;
        let event: WebhookEvent =
            serde_json::from_slice(body).map_err(|e| format!("unreadable webhook: {e}"))?;
        Ok(GatewayEvent {
            id: event.id,
            payment: convert(event.payment)?,
        })
    }
}

/// The sandbox gateway served inside this process on a loopback port, reached over
/// HTTP like the separate `sandbox-gateway` process.
pub struct SandboxGateway {
    client: HttpGateway,
    server: gateway::sandbox::Running,
}

impl SandboxGateway {
    /// Starts a sandbox with fresh credentials on 127.0.0.1:0.
    pub async fn start() -> Result<SandboxGateway, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("sandbox gateway: cannot bind loopback: {e}"))?;
        let config = gateway::sandbox::SandboxConfig::generated();
        let server = gateway::sandbox::start(config, listener).map_err(|e| e.to_string())?;
        let client = HttpGateway::new(
            &server.base_url(),
            server.api_key(),
            server.webhook_secret(),
            WEBHOOK_TOLERANCE_MS,
        )?;
        Ok(SandboxGateway { client, server })
    }

    /// The running server (tests switch its behaviours and read its payments).
    pub fn server(&self) -> &gateway::sandbox::Running {
        &self.server
    }
}

/// Default replay window of webhook signatures.
pub const WEBHOOK_TOLERANCE_MS: u64 = 300_000;

impl PaymentGateway for SandboxGateway {
    fn validate_method(&self, method: &str) -> Result<(), String> {
        self.client.validate_method(method)
    }
    fn create(&self, payment: NewPayment) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        self.client.create(payment)
    }
    fn find_by_key(
        &self,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<GatewayPayment>, GatewayError>> {
        self.client.find_by_key(idempotency_key)
    }
    fn fetch(&self, id: &str) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        self.client.fetch(id)
    }
    fn cancel(&self, id: &str) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        self.client.cancel(id)
    }
    fn refund(
        &self,
        id: &str,
        amount_minor: u64,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<GatewayPayment, GatewayError>> {
        self.client.refund(id, amount_minor, idempotency_key)
    }
    fn verify_webhook(
        &self,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<GatewayEvent, String> {
        self.client.verify_webhook(headers, body)
    }
}
