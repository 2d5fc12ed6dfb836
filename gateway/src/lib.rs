//! A payment gateway that behaves like a real provider, for the demo and the tests:
//! create a payment and get a `payment_url`; learn its result later from a webhook
//! signed with HMAC-SHA256 (timestamped, so receivers can refuse replays); cancel and
//! refund; idempotency keys on every write. Behaviours a real provider shows on bad
//! days are switchable: slow results, payments that never resolve, declines,
//! duplicated, reordered, delayed or lost webhooks, lost answers to creates and refused
//! retries of a create (429, 401, 422, ...).
//!
//! The gateway knows nothing of the ledger; the api talks to it over HTTP only.
//!
//! # Layout
//! - `wire`: the JSON shapes of its API and of webhook events.
//! - `signature`: signing and verifying webhook bodies (shared with receivers).
//! - `sandbox`: the server: payments in memory, outcomes by method, webhook delivery.
//! - `bin/sandbox-gateway.rs`: the process.

pub mod sandbox;
pub mod signature;
pub mod wire;
