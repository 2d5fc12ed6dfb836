//! Webhook signatures: `Sandbox-Signature: t=<unix ms>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"` with the shared webhook secret. The timestamp inside the signed text
//! lets a receiver refuse old deliveries (replays) without trusting any other header;
//! the comparison is constant-time (`Mac::verify_slice`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "sandbox-signature";

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing or not of the form t=<ms>,v1=<hex>")]
    Malformed,
    #[error("the signature does not match the body; check the webhook secret")]
    Mismatch,
    #[error("the delivery is {age_ms} ms away from now, beyond the {tolerance_ms} ms tolerance (a replay or a skewed clock)")]
    Stale { age_ms: u64, tolerance_ms: u64 },
}

fn mac(secret: &[u8], timestamp_ms: u64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` sent at `timestamp_ms`.
pub fn sign(secret: &[u8], timestamp_ms: u64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp_ms, body).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp_ms},v1={hex}")
}

fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks `header` against `body`: well formed, signed with `secret`, and sent within
/// `tolerance_ms` of `now_ms`. Returns the signed timestamp.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_ms: u64,
    tolerance_ms: u64,
) -> Result<u64, SignatureError> {
    let mut timestamp = None;
    let mut tag = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => tag = parse_hex(value),
            _ => {}
        }
    }
    let (Some(timestamp_ms), Some(tag)) = (timestamp, tag) else {
        return Err(SignatureError::Malformed);
    };
    mac(secret, timestamp_ms, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)?;
    let age_ms = now_ms.abs_diff(timestamp_ms);
    if age_ms > tolerance_ms {
        return Err(SignatureError::Stale {
            age_ms,
            tolerance_ms,
        });
    }
    Ok(timestamp_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_secret_and_time() {
        let header = sign(b"secret", 1_000_000, b"{\"a\":1}");
        assert_eq!(
            verify(b"secret", &header, b"{\"a\":1}", 1_000_500, 1_000),
            Ok(1_000_000)
        );
        assert_eq!(
            verify(b"secret", &header, b"{\"a\":2}", 1_000_500, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, b"{\"a\":1}", 1_000_500, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(b"secret", &header, b"{\"a\":1}", 1_010_000, 1_000),
            Err(SignatureError::Stale { .. })
        ));
        // A re-signed timestamp without the secret does not verify.
        let forged = header.replace("t=1000000", "t=1010000");
        assert_eq!(
            verify(b"secret", &forged, b"{\"a\":1}", 1_010_000, 1_000),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=0g"] {
            assert_eq!(
                verify(b"secret", bad, b"", 1, 1_000),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
