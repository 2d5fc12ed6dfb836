//! Payment gateways behind one trait, and the built-in sandbox that decides by
//! `method`: `sandbox-approve`, `sandbox-decline`, `sandbox-timeout` (never answers),
//! `sandbox-delay-<ms>` (approves after that delay).

use futures_util::future::BoxFuture;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    Approved {
        payment_ref: String,
    },
    Declined {
        reason: String,
    },
    /// The gateway answers later (or never); the ledger lock's expiry bounds the wait.
    Pending {
        after: Option<Duration>,
    },
}

pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges `amount_minor` for `booking`; `idempotency` makes a retried charge the
    /// same charge.
    fn charge(
        &self,
        booking: &str,
        amount_minor: u64,
        method: &str,
        idempotency: &str,
    ) -> BoxFuture<'static, Result<Charge, String>>;
}

/// Longest delay the sandbox accepts, so a test cannot park a task for hours.
const SANDBOX_DELAY_MS_MAX: u64 = 600_000;

pub struct SandboxGateway;

impl PaymentGateway for SandboxGateway {
    fn charge(
        &self,
        booking: &str,
        _amount_minor: u64,
        method: &str,
        idempotency: &str,
    ) -> BoxFuture<'static, Result<Charge, String>> {
        let payment_ref = format!(
            "sandbox-{booking}-{}",
            &blake3::hash(idempotency.as_bytes()).to_hex()[..12]
        );
        let result = match method {
            "sandbox-approve" => Ok(Charge::Approved { payment_ref }),
            "sandbox-decline" => Ok(Charge::Declined {
                reason: "the sandbox declines this method".into(),
            }),
            "sandbox-timeout" => Ok(Charge::Pending { after: None }),
            other => match other
                .strip_prefix("sandbox-delay-")
                .and_then(|ms| ms.parse::<u64>().ok())
            {
                Some(ms) if ms <= SANDBOX_DELAY_MS_MAX => Ok(Charge::Pending {
                    after: Some(Duration::from_millis(ms)),
                }),
                _ => Err(format!(
                    "unknown payment method {other:?}: use sandbox-approve, sandbox-decline, \
                     sandbox-timeout or sandbox-delay-<ms> (ms <= {SANDBOX_DELAY_MS_MAX})"
                )),
            },
        };
        Box::pin(async move { result })
    }
}
