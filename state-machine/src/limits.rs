//! Every bound the ledger enforces, in one place.
//!
//! The limits are part of the replicated behaviour: every replica of a shard must run
//! with the same `Limits`, so they come from the cluster file, not from a node's own
//! flags. `Limits::validate` refuses a configuration that could not work.
//!
//! Append-only format: `LimitName` is stored inside rejections (RocksDB, snapshots) with
//! the codec's positional encoding: a new name goes at the end of the enum.
//! `tests/golden.rs` checks its bytes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which limit a request exceeded; carried by `Rejection::LimitExceeded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitName {
    SeatsPerLock,
    LockTtlMin,
    LockTtlMax,
    LockLife,
    SeatsPerUserPerShow,
    SeatsPerScreen,
    ScreensPerTheater,
    RowsPerScreen,
    TextLength,
    PageSize,
    ShowDuration,
    ExpireBatch,
    TicketMessages,
    TicketMessageBytes,
    OpenTicketsPerCustomer,
}

impl fmt::Display for LimitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            LimitName::SeatsPerLock => "seats_per_lock_max",
            LimitName::LockTtlMin => "lock_ttl_ms_min",
            LimitName::LockTtlMax => "lock_ttl_ms_max",
            LimitName::LockLife => "lock_life_ms_max",
            LimitName::SeatsPerUserPerShow => "seats_per_user_per_show_max",
            LimitName::SeatsPerScreen => "seats_per_screen_max",
            LimitName::ScreensPerTheater => "screens_per_theater_max",
            LimitName::RowsPerScreen => "rows_per_screen_max",
            LimitName::TextLength => "text_length_max",
            LimitName::PageSize => "page_size_max",
            LimitName::ShowDuration => "show_duration_ms_max",
            LimitName::ExpireBatch => "expire_batch_max",
            LimitName::TicketMessages => "ticket_messages_max",
            LimitName::TicketMessageBytes => "ticket_message_bytes_max",
            LimitName::OpenTicketsPerCustomer => "open_tickets_per_customer_max",
        };
        f.write_str(name)
    }
}

/// The bounds of one shard's ledger. Field names put the unit and qualifier last.
/// Fields missing from a configuration file take their defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Seats one lock may hold: a group booking, not a block purchase.
    pub seats_per_lock_max: u32,
    /// Shortest lock a client may ask for; shorter ones only churn the log.
    pub lock_ttl_ms_min: u64,
    /// Longest lock a client may ask for in one request.
    pub lock_ttl_ms_max: u64,
    /// The TTL used when the client names none (five minutes, as in the product design).
    pub lock_ttl_ms_default: u64,
    /// Total life of a lock including extensions, so a bot cannot hold seats forever.
    pub lock_life_ms_max: u64,
    /// Seats one user may hold (locked or booked) per show: bot protection by consensus.
    pub seats_per_user_per_show_max: u32,
    /// Seats in one screen's layout; bounds the work of one show's commands.
    pub seats_per_screen_max: u32,
    /// Rows in one screen's layout.
    pub rows_per_screen_max: u32,
    /// Screens in one theater.
    pub screens_per_theater_max: u32,
    /// Longest name, title, address, payment reference or request id, in bytes.
    pub text_length_max: u32,
    /// Largest page a query returns.
    pub page_size_max: u32,
    /// Longest show.
    pub show_duration_ms_max: u64,
    /// Locks one `ExpireLocks` command may free, so a sweep is a bounded amount of work.
    pub expire_batch_max: u32,
    /// Idempotency records kept (on disk under a store). A full table refuses new keys
    /// (`Rejection::RequestTableFull`) rather than forget one younger than the window.
    /// Every live record costs about 140 bytes of disk on each replica and travels in
    /// each snapshot (40 to 70 bytes, `benches/requests.rs`); snapshots stream through
    /// files, so the ceiling is what a catching-up replica installs in minutes.
    pub request_ids_max: u32,
    /// How long an idempotency record is kept, on the shard clock (the contract says at
    /// least 24 hours).
    pub request_id_retention_ms: u64,
    /// Log indexes of history kept readable in the event stream.
    pub event_retention_indexes: u64,
    /// Messages one support ticket holds; a longer conversation needs a new ticket.
    pub ticket_messages_max: u32,
    /// Longest support message, in bytes.
    pub ticket_message_bytes_max: u32,
    /// Tickets one customer may have that are not closed.
    pub open_tickets_per_customer_max: u32,
    /// A paid booking cancelled at least this long before its show is refunded in
    /// full; cancelled later (but before the start), nothing is refunded.
    pub cancel_refund_cutoff_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        const MINUTE_MS: u64 = 60_000;
        Limits {
            seats_per_lock_max: 10,
            lock_ttl_ms_min: 10_000,
            lock_ttl_ms_max: 15 * MINUTE_MS,
            lock_ttl_ms_default: 5 * MINUTE_MS,
            lock_life_ms_max: 20 * MINUTE_MS,
            seats_per_user_per_show_max: 10,
            seats_per_screen_max: 10_000,
            rows_per_screen_max: 200,
            screens_per_theater_max: 32,
            text_length_max: 200,
            page_size_max: 100,
            show_duration_ms_max: 24 * 60 * MINUTE_MS,
            expire_batch_max: 1_000,
            request_ids_max: 10_000_000,
            request_id_retention_ms: 24 * 60 * MINUTE_MS,
            event_retention_indexes: 1_000_000,
            ticket_messages_max: 200,
            ticket_message_bytes_max: 4_000,
            open_tickets_per_customer_max: 20,
            cancel_refund_cutoff_ms: 2 * 60 * MINUTE_MS,
        }
    }
}

/// A `Limits` value that cannot work, with the field to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ledger limits: {field} {problem}")]
pub struct InvalidLimits {
    pub field: &'static str,
    pub problem: &'static str,
}

/// The largest `request_ids_max` (see the field).
pub const REQUEST_IDS_MAX_CEILING: u32 = 100_000_000;

impl Limits {
    /// Refuses limits that are zero where zero would block every request, or that
    /// contradict each other.
    pub fn validate(&self) -> Result<(), InvalidLimits> {
        let positive: [(&'static str, u64); 15] = [
            ("seats_per_lock_max", self.seats_per_lock_max.into()),
            ("lock_ttl_ms_min", self.lock_ttl_ms_min),
            (
                "seats_per_user_per_show_max",
                self.seats_per_user_per_show_max.into(),
            ),
            ("seats_per_screen_max", self.seats_per_screen_max.into()),
            ("rows_per_screen_max", self.rows_per_screen_max.into()),
            (
                "screens_per_theater_max",
                self.screens_per_theater_max.into(),
            ),
            ("text_length_max", self.text_length_max.into()),
            ("page_size_max", self.page_size_max.into()),
            ("show_duration_ms_max", self.show_duration_ms_max),
            ("expire_batch_max", self.expire_batch_max.into()),
            ("request_ids_max", self.request_ids_max.into()),
            ("event_retention_indexes", self.event_retention_indexes),
            ("ticket_messages_max", self.ticket_messages_max.into()),
            (
                "ticket_message_bytes_max",
                self.ticket_message_bytes_max.into(),
            ),
            (
                "open_tickets_per_customer_max",
                self.open_tickets_per_customer_max.into(),
            ),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(InvalidLimits {
                    field,
                    problem: "must be greater than zero",
                });
            }
        }
        let ordered = [
            (
                "lock_ttl_ms_max",
                self.lock_ttl_ms_min <= self.lock_ttl_ms_max,
            ),
            (
                "lock_ttl_ms_default",
                (self.lock_ttl_ms_min..=self.lock_ttl_ms_max).contains(&self.lock_ttl_ms_default),
            ),
            (
                "lock_life_ms_max",
                self.lock_life_ms_max >= self.lock_ttl_ms_max,
            ),
            (
                "seats_per_lock_max",
                self.seats_per_lock_max <= self.seats_per_user_per_show_max,
            ),
            ("seats_per_screen_max", self.seats_per_screen_max <= 100_000),
        ];
        for (field, ok) in ordered {
            if !ok {
                return Err(InvalidLimits {
                    field,
                    problem: "contradicts another limit (ttl_min <= default <= ttl_max <= \
                              life_max, seats_per_lock <= seats_per_user_per_show, \
                              seats_per_screen <= 100000)",
                });
            }
        }
        if self.request_ids_max > REQUEST_IDS_MAX_CEILING {
            return Err(InvalidLimits {
                field: "request_ids_max",
                problem: "at most 100000000: every live request id costs about 140 bytes \
                          of disk on each replica and travels in each snapshot",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_valid() {
        Limits::default().validate().unwrap();
    }

    #[test]
    fn more_request_ids_than_the_ceiling_are_refused() {
        let many = Limits {
            request_ids_max: REQUEST_IDS_MAX_CEILING + 1,
            ..Limits::default()
        };
        assert_eq!(many.validate().unwrap_err().field, "request_ids_max");
        let most = Limits {
            request_ids_max: REQUEST_IDS_MAX_CEILING,
            ..Limits::default()
        };
        most.validate().unwrap();
    }

    #[test]
    fn zero_and_contradicting_limits_are_refused() {
        let zero = Limits {
            seats_per_lock_max: 0,
            ..Limits::default()
        };
        assert_eq!(zero.validate().unwrap_err().field, "seats_per_lock_max");
        let ttl = Limits {
            lock_ttl_ms_min: 60_000,
            lock_ttl_ms_max: 1_000,
            ..Limits::default()
        };
        assert_eq!(ttl.validate().unwrap_err().field, "lock_ttl_ms_max");
        let life = Limits {
            lock_life_ms_max: 1,
            ..Limits::default()
        };
        assert_eq!(life.validate().unwrap_err().field, "lock_life_ms_max");
        let huge = Limits {
            seats_per_screen_max: 1_000_000,
            ..Limits::default()
        };
        assert_eq!(huge.validate().unwrap_err().field, "seats_per_screen_max");
    }
}
