//! The api's secrets: JWT signing and verification keys, from files named in the config,
//! from a directory of keys (the layout of a mounted Kubernetes Secret or a Vault agent's
//! output), or from environment variables; never from the command line or the repo
//! (see `raft_node::secrets` for the convention).
//!
//! Environment (each overrides the config):
//! - `SEAT_LEDGER_JWT_SIGNING_KEY` (PEM) or `SEAT_LEDGER_JWT_SIGNING_KEY_FILE` (path);
//! - `SEAT_LEDGER_JWT_SIGNING_KID`: the `kid` the signing key's tokens carry;
//! - `SEAT_LEDGER_JWT_VERIFYING_KEYS_DIR`: every `<kid>.pub.pem` in it verifies tokens.
//!
//! Rotation: add the new public key (`k2.pub.pem`) to every api node, then switch the
//! signing key and kid to k2; tokens signed by k1 keep verifying while `k1.pub.pem` is
//! listed, and stop verifying once it is removed (after the access-token lifetime).

use crate::auth::Keys;
use crate::config::JwtConfig;
use raft_node::secrets::{from_env, read_file};
use std::path::Path;

/// The suffix of a verification key's file in a keys directory.
pub const PUBLIC_KEY_SUFFIX: &str = ".pub.pem";

fn kid_ok(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Verification keys from a directory: `<kid>.pub.pem` each; other files are ignored
/// (a Kubernetes Secret mount also holds `..data` links).
pub fn verifying_keys_in(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list the JWT keys directory {}: {e}", dir.display()))?;
    let mut keys = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(kid) = name.strip_suffix(PUBLIC_KEY_SUFFIX) else {
            continue;
        };
        if name.starts_with('.') || !kid_ok(kid) {
            continue;
        }
        keys.push((
            kid.to_owned(),
            read_file(&entry.path(), "JWT verification key")?,
        ));
    }
    keys.sort();
    Ok(keys)
}

/// The JWT keys for `config`, with the environment given by `env`.
pub fn jwt_keys(config: &JwtConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Keys, String> {
    let signing = match from_env("SEAT_LEDGER_JWT_SIGNING_KEY", "JWT signing key", env)? {
        Some(pem) => Some(pem),
        None => config
            .signing_key_file
            .as_deref()
            .map(|path| read_file(Path::new(path), "JWT signing key"))
            .transpose()?,
    };
    let kid = env("SEAT_LEDGER_JWT_SIGNING_KID").unwrap_or_else(|| config.signing_kid.clone());
    if !kid_ok(&kid) {
        return Err(format!(
            "JWT signing kid {kid:?}: use 1-64 of letters, digits, '-', '_', '.'"
        ));
    }
    let mut public = config
        .verifying_key_files
        .iter()
        .map(|(kid, path)| {
            read_file(Path::new(path), "JWT verification key").map(|pem| (kid.clone(), pem))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dir =
        env("SEAT_LEDGER_JWT_VERIFYING_KEYS_DIR").or_else(|| config.verifying_keys_dir.clone());
    if let Some(dir) = dir {
        for (kid, pem) in verifying_keys_in(Path::new(&dir))? {
            if public.iter().any(|(known, _)| *known == kid) {
                return Err(format!(
                    "JWT kid {kid:?} is named twice (verifying_key_files and {dir})"
                ));
            }
            public.push((kid, pem));
        }
    }
    let mut keys = Keys::from_pem(
        &kid,
        signing.as_deref(),
        &public,
        config.issuer.clone(),
        config.audience.clone(),
    )
    .map_err(|e| e.to_string())?;
    keys.access_ttl_s = config.access_ttl_s;
    keys.refresh_ttl_s = config.refresh_ttl_s;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::now_s;
    use state_machine::{Role, UserId};
    use std::collections::BTreeMap;

    fn write_pair(dir: &Path, kid: &str) -> String {
        let (_, private, public) = Keys::generate("seat-ledger", "seat-ledger-clients").unwrap();
        std::fs::write(dir.join(format!("{kid}.pub.pem")), public).unwrap();
        let private_path = dir.join(format!("{kid}.key.pem"));
        std::fs::write(&private_path, private).unwrap();
        private_path.display().to_string()
    }

    /// A key rotation as an operator does it: k2 is added, signing switches to k2, then
    /// k1 is removed. Tokens signed by k1 verify while k1 is listed, not after.
    #[test]
    fn rotation_keeps_old_tokens_valid_while_their_key_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let k1_private = write_pair(dir.path(), "k1");
        let vars = |signing: String, kid: &str| {
            let mut vars = BTreeMap::new();
            vars.insert("SEAT_LEDGER_JWT_SIGNING_KEY_FILE".to_string(), signing);
            vars.insert("SEAT_LEDGER_JWT_SIGNING_KID".to_string(), kid.to_string());
            vars.insert(
                "SEAT_LEDGER_JWT_VERIFYING_KEYS_DIR".to_string(),
                dir.path().display().to_string(),
            );
            vars
        };
        let config = JwtConfig::default();
        let before = vars(k1_private.clone(), "k1");
        let keys_k1 = jwt_keys(&config, &|name| before.get(name).cloned()).unwrap();
        let old_token = keys_k1
            .issue_access(UserId(7), Role::Customer, now_s())
            .unwrap();
        // Step 1 and 2: k2 is added and becomes the signing key.
        let k2_private = write_pair(dir.path(), "k2");
        let during = vars(k2_private.clone(), "k2");
        let keys_k2 = jwt_keys(&config, &|name| during.get(name).cloned()).unwrap();
        let new_token = keys_k2
            .issue_access(UserId(7), Role::Customer, now_s())
            .unwrap();
        assert_eq!(
            keys_k2.verify(&old_token).unwrap().sub,
            7,
            "k1 still listed"
        );
        assert_eq!(keys_k2.verify(&new_token).unwrap().sub, 7);
        let header = jsonwebtoken::decode_header(&new_token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k2"));
        // Step 3: k1 is removed; its tokens no longer verify, k2's still do.
        std::fs::remove_file(dir.path().join("k1.pub.pem")).unwrap();
        let after = vars(k2_private, "k2");
        let keys_after = jwt_keys(&config, &|name| after.get(name).cloned()).unwrap();
        assert_eq!(keys_after.verify(&old_token).unwrap_err().status, 401);
        assert_eq!(keys_after.verify(&new_token).unwrap().sub, 7);
        // A signing key whose kid has no verification key is a configuration error.
        let orphan = vars(k1_private, "k1");
        let error = jwt_keys(&config, &|name| orphan.get(name).cloned())
            .err()
            .unwrap();
        assert!(error.contains("k1"), "{error}");
    }

    #[test]
    fn the_signing_key_comes_from_the_environment_value_or_file_not_both() {
        let dir = tempfile::tempdir().unwrap();
        let private = write_pair(dir.path(), "k1");
        let pem = std::fs::read_to_string(&private).unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("SEAT_LEDGER_JWT_SIGNING_KEY".to_string(), pem);
        vars.insert(
            "SEAT_LEDGER_JWT_VERIFYING_KEYS_DIR".to_string(),
            dir.path().display().to_string(),
        );
        let keys = jwt_keys(&JwtConfig::default(), &|name| vars.get(name).cloned()).unwrap();
        let token = keys.issue_access(UserId(1), Role::Admin, now_s()).unwrap();
        assert_eq!(keys.verify(&token).unwrap().role, "admin");
        vars.insert("SEAT_LEDGER_JWT_SIGNING_KEY_FILE".to_string(), private);
        let error = jwt_keys(&JwtConfig::default(), &|name| vars.get(name).cloned())
            .err()
            .unwrap();
        assert!(error.contains("both"), "{error}");
    }
}
