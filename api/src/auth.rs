//! Authentication: EdDSA-signed access JWTs (api nodes verify with public keys only),
//! argon2id password hashes, and opaque refresh tokens whose BLAKE3 hashes live in the
//! `global` shard (rotation and reuse detection are decided there, by consensus).

use crate::problem::Problem;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use state_machine::{Role, UserId};

/// Shortest password accepted at signup.
pub const PASSWORD_CHARS_MIN: usize = 10;
/// Longest password accepted (argon2 work is bounded by it).
pub const PASSWORD_BYTES_MAX: usize = 256;
/// Access tokens whose signature this node has verified, remembered so a client's next
/// request skips the Ed25519 verification: the users active within a token's 15 minutes
/// on one api node, at ~500 bytes each (about 32 MB at most).
pub const VERIFIED_TOKENS_MAX: usize = 65_536;
/// Seconds of clock difference tolerated on `exp` and `nbf`.
const LEEWAY_S: u64 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: u64,
    pub role: String,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
}

/// Signing and verification keys. A node that only verifies has no signing key.
#[derive(Clone)]
pub struct Keys {
    signing: Option<(String, EncodingKey)>,
    /// Verification keys by `kid`, so keys can rotate.
    verifying: Vec<(String, DecodingKey)>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl_s: u64,
    pub refresh_ttl_s: u64,
    /// Tokens whose signature, algorithm, key, issuer and audience verified, with their
    /// claims. Only the time checks are repeated on a hit. Keys never change while a
    /// node runs, so an entry stays true until the token expires.
    verified: std::sync::Arc<quick_cache::sync::Cache<String, Claims>>,
}

#[derive(Debug, thiserror::Error)]
#[error("JWT key: {0}")]
pub struct KeyError(String);

impl Keys {
    pub fn from_pem(
        kid: &str,
        private_pem: Option<&[u8]>,
        public_pems: &[(String, Vec<u8>)],
        issuer: String,
        audience: String,
    ) -> Result<Keys, KeyError> {
        let signing = private_pem
            .map(|pem| EncodingKey::from_ed_pem(pem).map(|key| (kid.to_owned(), key)))
            .transpose()
            .map_err(|e| KeyError(format!("private key: {e}")))?;
        let verifying = public_pems
            .iter()
            .map(|(kid, pem)| DecodingKey::from_ed_pem(pem).map(|key| (kid.clone(), key)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| KeyError(format!("public key: {e}")))?;
        if verifying.is_empty() {
            return Err(KeyError(
                "name at least one public key to verify tokens".into(),
            ));
        }
        if signing.is_some() && !verifying.iter().any(|(k, _)| k == kid) {
            return Err(KeyError(format!(
                "the signing key's kid {kid:?} has no verification key; list its public key \
                 too, or its tokens would be refused"
            )));
        }
        Ok(Keys {
            signing,
            verifying,
            issuer,
            audience,
            access_ttl_s: 900,
            refresh_ttl_s: 30 * 86_400,
            verified: std::sync::Arc::new(quick_cache::sync::Cache::new(VERIFIED_TOKENS_MAX)),
        })
    }

    /// A fresh Ed25519 key pair (the demo and tests); returns the keys and the PEMs.
    pub fn generate(issuer: &str, audience: &str) -> Result<(Keys, String, String), KeyError> {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey, EncodePublicKey};
        let signing = ed25519_dalek::SigningKey::generate(&mut OsRng);
        let private = signing
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError(e.to_string()))?;
        let public = signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError(e.to_string()))?;
        let keys = Keys::from_pem(
            "k1",
            Some(private.as_bytes()),
            &[("k1".into(), public.as_bytes().to_vec())],
            issuer.into(),
            audience.into(),
        )?;
        Ok((keys, private.to_string(), public))
    }

    pub fn issue_access(&self, user: UserId, role: Role, now_s: u64) -> Result<String, Problem> {
        let (kid, key) = self
            .signing
            .as_ref()
            .ok_or_else(|| Problem::unavailable("this api node has no signing key"))?;
        let claims = Claims {
            sub: user.0,
            role: role.as_str().into(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now_s + self.access_ttl_s,
            iat: now_s,
            nbf: now_s,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| Problem::unavailable(format!("cannot sign a token: {e}")))
    }

    /// Verifies signature, algorithm (EdDSA only), expiry, not-before, issuer and audience.
    /// A token verified before only has its times checked again.
    pub fn verify(&self, token: &str) -> Result<Claims, Problem> {
        self.verify_at(token, now_s())
    }

    /// `verify` with the time checks of a remembered token made at `now` (seconds).
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, Problem> {
        if let Some(claims) = self.verified.get(token) {
            if now >= claims.exp.saturating_add(LEEWAY_S) {
                self.verified.remove(token);
                return Err(Problem::unauthorized(
                    "invalid token: ExpiredSignature; log in again",
                ));
            }
            if claims.nbf > now.saturating_add(LEEWAY_S) {
                return Err(Problem::unauthorized(
                    "invalid token: ImmatureSignature; log in again",
                ));
            }
            return Ok(claims);
        }
        let claims = self.verify_signed(token)?;
        self.verified.insert(token.to_owned(), claims.clone());
        Ok(claims)
    }

    fn verify_signed(&self, token: &str) -> Result<Claims, Problem> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| Problem::unauthorized(format!("malformed bearer token: {e}")))?;
        if header.alg != Algorithm::EdDSA {
            return Err(Problem::unauthorized("tokens must be signed with EdDSA"));
        }
        // Every token this service issues names its key; one that does not is refused
        // rather than tried against every key.
        let kid = header
            .kid
            .ok_or_else(|| Problem::unauthorized("the token names no key (kid); log in again"))?;
        let candidates: Vec<&DecodingKey> = self
            .verifying
            .iter()
            .filter(|(k, _)| *k == kid)
            .map(|(_, key)| key)
            .collect();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_S;
        let mut last = Problem::unauthorized("no key matches the token's kid; log in again");
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = Problem::unauthorized(format!("invalid token: {e}; log in again")),
            }
        }
        Err(last)
    }
}

/// Seconds since the Unix epoch, for token lifetimes.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An argon2id PHC string. With an idempotency key the salt is derived from it, so a
/// retried signup proposes the same command and the ledger recognises the retry.
pub fn hash_password(password: &str, idempotency: Option<&str>) -> Result<String, Problem> {
    let salt = match idempotency {
        Some(key) => {
            let derived = blake3::derive_key("seat-ledger signup salt v1", key.as_bytes());
            SaltString::encode_b64(&derived[..16])
        }
        None => {
            let mut bytes = [0u8; 16];
            OsRng.fill_bytes(&mut bytes);
            SaltString::encode_b64(&bytes)
        }
    }
    .map_err(|e| Problem::unavailable(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Problem::unavailable(format!("password hashing failed: {e}")))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A valid argon2id hash of no one's password: login verifies against it when the email
/// is unknown, so an unknown email takes as long as a wrong password.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        hash_password("no account has this password", Some("dummy")).unwrap_or_default()
    })
}

/// A new opaque refresh token and the hash the ledger stores.
pub fn new_refresh_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = refresh_token_hash(&token);
    (token, hash)
}

pub fn refresh_token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_tampering_is_refused() {
        let (keys, _, _) = Keys::generate("seat-ledger", "clients").unwrap();
        let now = now_s();
        let token = keys
            .issue_access(UserId(5), Role::Customer, now - 10)
            .unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub, claims.role.as_str()), (5, "customer"));
        // Flip the role inside the payload: the signature no longer matches.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}x.{}", parts[0], parts[1], parts[2]);
        assert!(keys.verify(&forged).is_err());
        let (other, _, _) = Keys::generate("seat-ledger", "clients").unwrap();
        assert!(
            other.verify(&token).is_err(),
            "a token from another key verified"
        );
        let old = keys.issue_access(UserId(5), Role::Customer, 1_000).unwrap();
        assert!(keys.verify(&old).is_err(), "an expired token verified");
    }

    #[test]
    fn remembered_tokens_still_expire_and_forgeries_are_not_remembered() {
        let (keys, _, _) = Keys::generate("seat-ledger", "clients").unwrap();
        let now = now_s();
        let token = keys.issue_access(UserId(9), Role::Admin, now).unwrap();
        assert_eq!(keys.verify(&token).unwrap().sub, 9);
        assert_eq!(keys.verified.len(), 1, "a verified token is remembered");
        // A remembered token is refused once it expires, and before its nbf.
        let expired = keys.verify_at(&token, now + keys.access_ttl_s + LEEWAY_S);
        assert!(expired.unwrap_err().detail.contains("Expired"));
        assert_eq!(keys.verified.len(), 0, "an expired token is forgotten");
        keys.verify(&token).unwrap();
        let early = keys.verify_at(&token, now - LEEWAY_S - 60);
        assert!(early.unwrap_err().detail.contains("Immature"));
        // A token differing by one byte from a remembered one is verified in full.
        let parts: Vec<&str> = token.split('.').collect();
        let mut signature = parts[2].as_bytes().to_vec();
        signature[3] = if signature[3] == b'A' { b'B' } else { b'A' };
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            String::from_utf8(signature).unwrap()
        );
        assert!(keys.verify(&forged).is_err());
        assert_eq!(keys.verified.len(), 1, "a forgery is never remembered");
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse battery", Some("key-1")).unwrap();
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("wrong", &hash));
        assert_eq!(
            hash,
            hash_password("correct horse battery", Some("key-1")).unwrap()
        );
    }
}
