//! The JSON shapes of the gateway's API and webhook events.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `POST /v1/payments`, with an `Idempotency-Key` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    pub amount_minor: u64,
    pub currency: String,
    /// The sandbox decides the outcome by it: `sandbox-approve`, `sandbox-decline`,
    /// `sandbox-timeout` (never resolves), `sandbox-delay-<ms>` (approves after ms).
    pub method: String,
    /// Echoed in the payment and its webhooks (the api puts the booking id here).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Where this payment's webhooks go; the gateway's default when absent.
    #[serde(default)]
    pub webhook_url: Option<String>,
}

/// `POST /v1/payments/{id}/refunds`, with an `Idempotency-Key` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    pub amount_minor: u64,
}

/// A payment as the gateway reports it. `version` grows by one on every change, so a
/// receiver can drop stale or repeated reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentObject {
    pub id: String,
    /// `pending`, `succeeded`, `failed`, `canceled` or `refunded`.
    pub status: String,
    pub version: u64,
    pub amount_minor: u64,
    pub currency: String,
    pub method: String,
    pub metadata: BTreeMap<String, String>,
    pub payment_url: String,
    pub refunded_minor: u64,
    pub failure_reason: Option<String>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// The body of a webhook delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Unique per event; a redelivery or duplicate carries the same id.
    pub id: String,
    /// `payment.<status>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub created_ms: u64,
    pub payment: PaymentObject,
}

/// Error bodies of the gateway's API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// The payment as it is now, when the error is about its state (409).
    #[serde(default)]
    pub payment: Option<PaymentObject>,
}

/// `POST /admin/behaviour` and its answer: the switchable behaviours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// How long an approving or declining method takes to resolve.
    pub result_delay_ms: u64,
    /// Extra deliveries of every webhook (duplicates, same event id).
    pub duplicate_webhooks: u32,
    /// Deliver each payment's events newest first, the stale ones after.
    pub reorder_webhooks: bool,
    /// Deliver no webhooks at all (receivers must poll).
    pub drop_webhooks: bool,
    /// Wait before each delivery.
    pub webhook_delay_ms: u64,
    /// Attempts per delivery before giving up (1 = no retry).
    pub delivery_attempts: u32,
    /// Deliver webhooks over kept-alive connections, as a production gateway does. Off
    /// by default: each delivery then opens its own connection, so a receiver that died
    /// is seen dead at once (tests stop api nodes in-process, and a kept-alive connection
    /// could still reach what is left of one).
    pub webhook_keep_alive: bool,
    /// A create that makes a new payment answers 504 instead of the payment, as if the
    /// answer were lost on its way back: the payment exists, the caller does not know.
    pub lose_create_responses: bool,
    /// Status answered (without the payment) to a create whose Idempotency-Key already
    /// names a payment, from the `repeat_create_from`-th create of that key on (the
    /// first create of a key is the 1st): 429 during a rush, 401 while API keys rotate,
    /// 422 from a validation the gateway runs before its key lookup. 0: answer the
    /// payment, as a repeated create normally does.
    pub repeat_create_status: u16,
    /// See `repeat_create_status` (0 and 1 count as 2: the first create is never a
    /// repeat).
    pub repeat_create_from: u32,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            result_delay_ms: 20,
            duplicate_webhooks: 0,
            reorder_webhooks: false,
            drop_webhooks: false,
            webhook_delay_ms: 0,
            delivery_attempts: 5,
            webhook_keep_alive: false,
            lose_create_responses: false,
            repeat_create_status: 0,
            repeat_create_from: 2,
        }
    }
}

/// `GET /v1/payments?after=&limit=`: every payment, for reconciliation and checkers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentPage {
    pub items: Vec<PaymentObject>,
    pub next_after: Option<String>,
}

/// `GET /v1/payment-keys?key=<idempotency key>`: the payment a create with this key made,
/// if any. `payment: null` is the gateway's word that no create with this key was ever
/// accepted (until now): only then may a caller that was refused treat the payment as
/// never made. The key is echoed so that a reply meant for another question (a proxy's
/// page, an older gateway's list) is never read as that word.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentKeyLookup {
    pub key: String,
    pub payment: Option<PaymentObject>,
}
