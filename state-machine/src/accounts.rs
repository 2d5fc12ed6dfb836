//! Accounts of the `global` shard: users with their password hashes and roles, and
//! rotating refresh tokens grouped in families.
//!
//! Hashing happens in the api before a command is proposed (it needs randomness); the
//! ledger only stores hashes, enforces unique emails and phones, and decides token
//! rotation deterministically: a refresh token works once; presenting a used one again
//! revokes its whole family, because a thief and the real user now both hold one.
//!
//! Append-only format: `User`, `Role` and `RefreshToken` are stored in RocksDB and in
//! snapshots with the codec's positional encoding, and later releases read them back. A
//! new enum variant goes at the end of its enum; any other change to these types (a
//! field added, even at the end, removed, reordered or retyped; a variant inserted or
//! moved) needs a new store format version (`store::FORMAT_VERSION`) with a migration.
//! `tests/golden.rs` checks their bytes.

use crate::ids::{Millis, UserId};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Customer,
    TheaterOwner,
    Admin,
    Sre,
    /// Support agents: answer customers' tickets.
    Support,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::TheaterOwner => "theater_owner",
            Role::Admin => "admin",
            Role::Sre => "sre",
            Role::Support => "support",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        [
            Role::Customer,
            Role::TheaterOwner,
            Role::Admin,
            Role::Sre,
            Role::Support,
        ]
        .into_iter()
        .find(|role| role.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    /// Lower-cased.
    pub email: String,
    pub phone: String,
    pub name: String,
    /// A PHC string (argon2id) made by the api.
    pub password_hash: String,
    pub role: Role,
    pub created_at: Millis,
}

/// A refresh token, known only by its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshToken {
    pub user: UserId,
    /// Tokens rotated from one login share a family; reuse revokes the family.
    pub family: u64,
    pub expires_at: Millis,
    pub used: bool,
    pub revoked: bool,
}
