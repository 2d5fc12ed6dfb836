//! Where secrets come from: files (the layout a Vault agent or a mounted Kubernetes
//! Secret produces: one file per secret) or environment variables, never the command
//! line (it shows in `ps`, shell history and process accounting) and never the repo.
//!
//! The convention for a secret named `NAME`: the environment variable `NAME` holds the
//! value, or `NAME_FILE` names a file holding it; setting both is an error. The cluster
//! secret (`SEAT_LEDGER_CLUSTER_SECRET`), the api's JWT keys
//! (`SEAT_LEDGER_JWT_SIGNING_KEY`, a directory of verification keys), TLS keys (files
//! named in the configuration) and the payment gateway's webhook key
//! (`SEAT_LEDGER_GATEWAY_WEBHOOK_KEY`) follow it. [`refuse_secret_arguments`] turns a
//! secret passed as a flag value into an error that says what to do instead.

use std::path::Path;

/// Command-line flags that would carry a secret's value, with where it must come from.
pub const SECRET_FLAGS: &[(&str, &str)] = &[
    (
        "--cluster-secret",
        "SEAT_LEDGER_CLUSTER_SECRET or --cluster-secret-file (SEAT_LEDGER_CLUSTER_SECRET_FILE)",
    ),
    (
        "--jwt-signing-key",
        "SEAT_LEDGER_JWT_SIGNING_KEY_FILE (or the [jwt] signing_key_file of the config)",
    ),
    (
        "--signing-key",
        "SEAT_LEDGER_JWT_SIGNING_KEY_FILE (or the [jwt] signing_key_file of the config)",
    ),
    (
        "--webhook-key",
        "SEAT_LEDGER_GATEWAY_WEBHOOK_KEY or SEAT_LEDGER_GATEWAY_WEBHOOK_KEY_FILE",
    ),
    ("--tls-key", "a key file named by --tls-key-file"),
    ("--password", "a file or an environment variable"),
    ("--secret", "a file or an environment variable"),
];

/// Refuses any argument that passes a secret's value (`--cluster-secret x`,
/// `--cluster-secret=x`), naming where the secret must come from instead. Flags ending
/// in `-file` or `-dir` name paths and are fine.
pub fn refuse_secret_arguments<I, S>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    for arg in args {
        let arg = arg.as_ref();
        let flag = arg.split_once('=').map_or(arg, |(flag, _)| flag);
        if let Some((_, instead)) = SECRET_FLAGS.iter().find(|(name, _)| *name == flag) {
            return Err(format!(
                "{flag}: secrets are never taken from the command line (it shows in ps and \
                 shell history); use {instead}"
            ));
        }
    }
    Ok(())
}

/// Reads a secret file; a trailing newline (as editors and `echo` leave) is not part of
/// the secret. An empty file is an error.
pub fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))?;
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(bytes)
}

/// The secret `name` from `name` (the value) or `name_FILE` (a path) in the environment
/// given by `env`; `Ok(None)` when neither is set.
pub fn from_env(
    name: &str,
    what: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Vec<u8>>, String> {
    let file_var = format!("{name}_FILE");
    match (env(name), env(&file_var)) {
        (Some(_), Some(_)) => Err(format!(
            "both {name} and {file_var} are set; set one of them for the {what}"
        )),
        (Some(value), None) => {
            let value = value.trim_end();
            if value.is_empty() {
                return Err(format!("{name} is empty; it must hold the {what}"));
            }
            Ok(Some(value.as_bytes().to_vec()))
        }
        (None, Some(path)) => read_file(Path::new(&path), what).map(Some),
        (None, None) => Ok(None),
    }
}

/// The process environment, for [`from_env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn secret_flag_values_are_refused_with_what_to_do() {
        let error = refuse_secret_arguments(["raft-node", "--cluster-secret", "hunter2hunter2xx"])
            .unwrap_err();
        assert!(error.contains("SEAT_LEDGER_CLUSTER_SECRET"), "{error}");
        assert!(refuse_secret_arguments(["api", "--jwt-signing-key=abc"]).is_err());
        assert!(refuse_secret_arguments([
            "raft-node",
            "--cluster-secret-file",
            "/run/secrets/cluster_secret",
            "--tls-key-file",
            "/etc/tls/node.key"
        ])
        .is_ok());
    }

    #[test]
    fn secrets_come_from_the_value_or_the_file_variable_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-a-file-0123456789\n").unwrap();
        let mut vars = BTreeMap::new();
        vars.insert("S_FILE".to_string(), path.display().to_string());
        let env = |name: &str| vars.get(name).cloned();
        assert_eq!(
            from_env("S", "test secret", &env).unwrap().unwrap(),
            b"from-a-file-0123456789"
        );
        let mut both = vars.clone();
        both.insert("S".into(), "value".into());
        let env = |name: &str| both.get(name).cloned();
        assert!(from_env("S", "test secret", &env)
            .unwrap_err()
            .contains("both"));
        let none = |_: &str| None;
        assert_eq!(from_env("S", "test secret", &none).unwrap(), None);
        std::fs::write(&path, "\n").unwrap();
        let env = |name: &str| vars.get(name).cloned();
        assert!(from_env("S", "test secret", &env)
            .unwrap_err()
            .contains("empty"));
    }
}
