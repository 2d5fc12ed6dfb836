//! Durable positions of event-stream consumers (the `global` shard): where a consumer
//! such as the notifications worker has processed a shard's stream up to, so that a
//! restarted worker resumes there instead of losing or repeating everything.
//!
//! A cursor only moves forward; `replay_from` is the oldest index the consumer must
//! read again on restart to rebuild its working state (e.g. locks it still watches),
//! without delivering anything before the cursor a second time.
//!
//! Append-only format: consumer cursors and their keys are stored in RocksDB and in
//! snapshots with the codec's positional encoding, and later releases read them back. A
//! new enum variant goes at the end of its enum; any other change to these types (a
//! field added, even at the end, removed, reordered or retyped; a variant inserted or
//! moved) needs a new store format version (`store::FORMAT_VERSION`) with a migration.
//! `tests/golden.rs` checks their bytes.

use crate::ids::Millis;
use crate::ledger::Ledger;
use crate::outcome::{Applied, Rejection};
use serde::{Deserialize, Serialize};

/// Consumers one shard may track; a bound on the table.
pub const CURSORS_MAX: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerCursor {
    /// The next event to process: `(log index, position within the entry)`.
    pub index: u64,
    pub seq: u32,
    /// The oldest index to replay (without delivering) to rebuild working state.
    pub replay_from: u64,
    pub updated_at: Millis,
}

/// `(consumer name, stream shard)`.
pub type CursorKey = (String, String);

impl Ledger {
    pub(crate) fn advance_cursor(
        &mut self,
        consumer: &str,
        stream: &str,
        cursor: ConsumerCursor,
    ) -> Result<Applied, Rejection> {
        self.check_text("consumer", consumer, false)?;
        self.check_text("stream", stream, false)?;
        if cursor.replay_from > cursor.index {
            return Err(Rejection::invalid(
                "replay_from",
                "must not be after the cursor's index",
            ));
        }
        let key = (consumer.to_owned(), stream.to_owned());
        match self.state.cursors.get(&key) {
            Some(old) if (cursor.index, cursor.seq) < (old.index, old.seq) => {
                return Err(Rejection::invalid(
                    "index",
                    "a consumer cursor never moves backwards; read it again and resume",
                ));
            }
            None if self.state.cursors.len() >= CURSORS_MAX => {
                return Err(Rejection::invalid("consumer", "too many consumers"));
            }
            _ => {}
        }
        let stored = ConsumerCursor {
            updated_at: self.state.clock,
            ..cursor
        };
        self.state.cursors.insert(key.clone(), stored);
        if let Some(changes) = self.changes.as_mut() {
            changes.cursors.insert(key);
        }
        Ok(Applied::CursorAdvanced {
            index: cursor.index,
            seq: cursor.seq,
        })
    }
}

impl Ledger {
    /// Cursors are bounded in number and never replay past their own position.
    pub(crate) fn check_cursor_invariants(&self) -> Result<(), String> {
        if self.state.cursors.len() > CURSORS_MAX {
            return Err("consumer cursor table is over its bound".into());
        }
        for ((consumer, stream), cursor) in &self.state.cursors {
            if cursor.replay_from > cursor.index {
                return Err(format!(
                    "cursor {consumer}/{stream} replays past its position"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, CommandKind};
    use crate::limits::Limits;
    use crate::query::{Query, QueryResponse};

    fn advance(index: u64, seq: u32, replay_from: u64) -> Command {
        Command {
            request_id: None,
            at_ms: 5,
            kind: CommandKind::AdvanceCursor {
                consumer: "notify".into(),
                stream: "mumbai".into(),
                index,
                seq,
                replay_from,
            },
        }
    }

    #[test]
    fn cursors_move_forward_only_and_are_queryable() {
        let mut ledger = Ledger::new(Limits::default());
        assert!(ledger.apply(1, &advance(10, 2, 4)).outcome.is_applied());
        assert!(ledger.apply(2, &advance(10, 2, 4)).outcome.is_applied());
        assert!(!ledger.apply(3, &advance(10, 1, 4)).outcome.is_applied());
        assert!(!ledger.apply(4, &advance(20, 0, 21)).outcome.is_applied());
        assert!(ledger.apply(5, &advance(30, 0, 25)).outcome.is_applied());
        let query = Query::ConsumerCursor {
            consumer: "notify".into(),
            stream: "mumbai".into(),
        };
        match ledger.query(&query).unwrap() {
            QueryResponse::ConsumerCursor(Some(cursor)) => {
                assert_eq!((cursor.index, cursor.seq, cursor.replay_from), (30, 0, 25));
            }
            other => panic!("{other:?}"),
        }
        let other = Query::ConsumerCursor {
            consumer: "analytics".into(),
            stream: "mumbai".into(),
        };
        assert_eq!(
            ledger.query(&other).unwrap(),
            QueryResponse::ConsumerCursor(None)
        );
        ledger.check_invariants().unwrap();
    }
}
