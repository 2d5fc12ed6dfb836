//! Users' notification channels (the `global` shard): where the notifications worker
//! sends a user's notifications besides the operator's webhook: the user's own
//! webhook (signed with a secret the api generated for it) and whether to email them.
//!
//! Append-only format: notification channels are stored in RocksDB and in snapshots
//! with the codec's positional encoding, and later releases read them back. A new enum
//! variant goes at the end of its enum; any other change to these types (a field added,
//! even at the end, removed, reordered or retyped; a variant inserted or moved) needs a
//! new store format version (`store::FORMAT_VERSION`) with a migration.
//! `tests/golden.rs` checks their bytes.

use crate::ids::{Millis, UserId};
use crate::ledger::Ledger;
use crate::outcome::{Applied, Rejection};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channels {
    /// An `http(s)://` URL that receives the user's notifications, if any.
    pub webhook_url: Option<String>,
    /// The HMAC key the worker signs this user's webhook deliveries with (made by the
    /// api; the ledger only stores it).
    pub webhook_secret: Option<String>,
    /// Whether notifications are emailed to the account's address.
    pub email: bool,
    pub updated_at: Millis,
}

impl Default for Channels {
    /// Without a choice of their own, users get email only.
    fn default() -> Self {
        Channels {
            webhook_url: None,
            webhook_secret: None,
            email: true,
            updated_at: 0,
        }
    }
}

impl Ledger {
    pub(crate) fn set_channels(
        &mut self,
        user: UserId,
        webhook_url: Option<&str>,
        webhook_secret: Option<&str>,
        email: bool,
    ) -> Result<Applied, Rejection> {
        if !self.state.users.contains_key(&user) {
            return Err(Rejection::UnknownUser { user });
        }
        if let Some(url) = webhook_url {
            self.check_text("webhook_url", url, false)?;
            let scheme = url.starts_with("https://") || url.starts_with("http://");
            if !scheme || url.contains(char::is_whitespace) {
                return Err(Rejection::invalid(
                    "webhook_url",
                    "an http:// or https:// URL without spaces",
                ));
            }
        }
        match (webhook_url, webhook_secret) {
            (Some(_), Some(secret)) if secret.len() >= 16 => {
                self.check_text("webhook_secret", secret, false)?;
            }
            (Some(_), _) => {
                return Err(Rejection::invalid(
                    "webhook_secret",
                    "a webhook needs a signing secret of at least 16 characters",
                ))
            }
            (None, Some(_)) => {
                return Err(Rejection::invalid(
                    "webhook_secret",
                    "a secret without a webhook URL",
                ))
            }
            (None, None) => {}
        }
        let channels = Channels {
            webhook_url: webhook_url.map(str::to_owned),
            webhook_secret: webhook_secret.map(str::to_owned),
            email,
            updated_at: self.state.clock,
        };
        self.state.channels.insert(user, channels);
        if let Some(changes) = self.changes.as_mut() {
            changes.channels.insert(user);
        }
        Ok(Applied::ChannelsSet { user })
    }

    /// Every channel record belongs to a known user.
    pub(crate) fn check_channel_invariants(&self) -> Result<(), String> {
        for user in self.state.channels.keys() {
            if !self.state.users.contains_key(user) {
                return Err(format!("channels of unknown user {user}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::Role;
    use crate::command::{Command, CommandKind};
    use crate::limits::Limits;
    use crate::outcome::Outcome;
    use crate::query::{Query, QueryResponse};

    fn run(ledger: &mut Ledger, index: u64, kind: CommandKind) -> Outcome {
        let outcome = ledger
            .apply(
                index,
                &Command {
                    request_id: None,
                    at_ms: 100,
                    kind,
                },
            )
            .outcome;
        ledger.check_invariants().unwrap();
        outcome
    }

    fn set(url: Option<&str>, secret: Option<&str>) -> CommandKind {
        CommandKind::SetNotificationChannels {
            user: UserId(1),
            webhook_url: url.map(str::to_owned),
            webhook_secret: secret.map(str::to_owned),
            email: false,
        }
    }

    #[test]
    fn channels_are_validated_stored_and_default_to_email() {
        let mut ledger = Ledger::new(Limits::default());
        assert!(
            !run(&mut ledger, 1, set(None, None)).is_applied(),
            "unknown user"
        );
        let register = CommandKind::RegisterUser {
            email: "a@b.example".into(),
            phone: "+911234567".into(),
            name: "A".into(),
            password_hash: "h".into(),
            role: Role::Customer,
        };
        assert!(run(&mut ledger, 1, register).is_applied());
        let query = Query::NotificationChannels { user: UserId(1) };
        assert_eq!(
            ledger.query(&query).unwrap(),
            QueryResponse::NotificationChannels(Channels::default())
        );
        let secret = Some("0123456789abcdef");
        for (url, secret) in [
            (Some("ftp://x"), secret),
            (Some("https://a b"), secret),
            (Some("https://hooks.example/me"), None),
            (Some("https://hooks.example/me"), Some("short")),
            (None, secret),
        ] {
            let outcome = run(&mut ledger, 2, set(url, secret));
            assert!(!outcome.is_applied(), "{url:?} {secret:?} was accepted");
        }
        let good = set(Some("https://hooks.example/me"), secret);
        assert!(run(&mut ledger, 3, good).is_applied());
        let QueryResponse::NotificationChannels(channels) = ledger.query(&query).unwrap() else {
            panic!()
        };
        assert_eq!(
            channels.webhook_url.as_deref(),
            Some("https://hooks.example/me")
        );
        assert!(!channels.email);
    }
}
