//! Identifier newtypes of the ledger.
//!
//! Every identifier the ledger hands out is derived from the log index of the command
//! that created it, never from randomness, so every replica derives the same ids.
//! A lock and the booking it may become are created by the same command and therefore
//! share that index: `BookingId::of_lock(lock)` is the booking a lock belongs to.
//!
//! Append-only format: identifiers are stored inside every record and command as their
//! inner number or string; changing an identifier's type is a format change that needs
//! a new store format version (`store::FORMAT_VERSION`) with a migration.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_u64 {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_u64!(
    /// A theater, derived from the log index of the command that created it.
    TheaterId,
    "t"
);
id_u64!(
    /// A show, derived from the log index of the command that published it.
    ShowId,
    "s"
);
id_u64!(
    /// A seat lock, derived from the log index of the command that took it.
    LockId,
    "l"
);
id_u64!(
    /// A booking; it shares the log index of the lock it started as.
    BookingId,
    "b"
);
id_u64!(
    /// A user, as assigned by the `global` shard; the city ledger only compares them.
    UserId,
    "u"
);

impl BookingId {
    /// The booking that a lock becomes when it is confirmed.
    pub fn of_lock(lock: LockId) -> BookingId {
        BookingId(lock.0)
    }

    /// The lock that a booking started as.
    pub fn lock(self) -> LockId {
        LockId(self.0)
    }
}

/// A seat's position in its screen's layout (0-based, row-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SeatId(pub u32);

impl fmt::Display for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A screen's position in its theater (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ScreenIndex(pub u16);

/// The client's idempotency key for one write; the api namespaces it by user so two
/// users can never collide.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub String);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Milliseconds since the Unix epoch on the shard clock (leader-stamped, never read
/// from a local clock inside the ledger).
pub type Millis = u64;

/// A position in the replicated log; the ledger only uses it to derive ids and to
/// order events.
pub type LogIndex = u64;
