//! The audit trail (`global` shard): who did what to whom, stamped with the shard clock
//! of the log entry that recorded it. Admin and SRE actions (role changes, show
//! cancellations and refunds, membership changes, leader transfers) are recorded here by
//! whoever performs them; entries are never changed or removed by any command.
//!
//! The entry's id is the log index that recorded it, so ids grow with time and every
//! replica assigns the same ones.
//!
//! Append-only format: audit entries are stored in RocksDB and in snapshots with the
//! codec's positional encoding, and later releases read them back. A new enum variant
//! goes at the end of its enum; any other change to these types (a field added, even at
//! the end, removed, reordered or retyped; a variant inserted or moved) needs a new
//! store format version (`store::FORMAT_VERSION`) with a migration. `tests/golden.rs`
//! checks their bytes.

use crate::ids::{LogIndex, Millis};
use crate::ledger::Ledger;
use crate::outcome::{Applied, Rejection};
use crate::query::QueryResponse;
use serde::{Deserialize, Serialize};

/// Longest `detail` of an entry, in bytes (names, ids and a reason fit easily).
pub const AUDIT_DETAIL_BYTES_MAX: usize = 1_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The log index that recorded it.
    pub id: LogIndex,
    /// The shard clock (leader-stamped) when it was recorded.
    pub at_ms: Millis,
    /// Who: `user:<id>` with the role the caller's token carried, or an operator name
    /// for cluster operations.
    pub actor: String,
    /// What, as a verb: `set_role`, `cancel_show`, `refund`, `transfer_leader`, ...
    pub action: String,
    /// Whom or what it was done to: a user, a show, a shard.
    pub target: String,
    /// Parameters and the result (`requested ...`, `applied ...`, `rejected: ...`).
    pub detail: String,
}

fn action_ok(action: &str) -> bool {
    !action.is_empty()
        && action.len() <= 64
        && action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Ledger {
    pub(crate) fn record_audit(
        &mut self,
        index: LogIndex,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<Applied, Rejection> {
        self.check_text("actor", actor, false)?;
        if !action_ok(action) {
            return Err(Rejection::invalid(
                "action",
                "1-64 of a-z, 0-9 and '_' (a verb such as set_role)",
            ));
        }
        self.check_text("target", target, true)?;
        if detail.len() > AUDIT_DETAIL_BYTES_MAX {
            return Err(Rejection::invalid("detail", "at most 1000 bytes"));
        }
        if detail.chars().any(char::is_control) {
            return Err(Rejection::invalid(
                "detail",
                "must not contain control characters",
            ));
        }
        let entry = AuditEntry {
            id: index,
            at_ms: self.state.clock,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        };
        self.state.audit.insert(index, entry);
        self.touch_audit(index);
        Ok(Applied::AuditRecorded { entry: index })
    }

    /// Entries newest first, before the entry `before` (exclusive) when given.
    pub(crate) fn audit_log(
        &self,
        before: Option<LogIndex>,
        limit: u32,
    ) -> Result<QueryResponse, Rejection> {
        let limit = limit.clamp(1, self.limits.page_size_max) as usize;
        let end = before.unwrap_or(LogIndex::MAX);
        let mut items: Vec<AuditEntry> = self
            .state
            .audit
            .range(..end)
            .rev()
            .take(limit + 1)
            .map(|(_, entry)| entry.clone())
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|entry| entry.id)
        } else {
            None
        };
        Ok(QueryResponse::AuditLog { items, next })
    }

    /// Every entry sits under its own id.
    pub(crate) fn check_audit(&self) -> Result<(), String> {
        for (id, entry) in &self.state.audit {
            if *id != entry.id {
                return Err(format!("audit entry {} stored under {id}", entry.id));
            }
            if entry.at_ms > self.state.clock {
                return Err(format!("audit entry {id} is stamped after the shard clock"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testkit::command;
    use crate::*;

    fn record(ledger: &mut Ledger, index: u64, at_ms: u64, action: &str) -> Outcome {
        let kind = CommandKind::RecordAudit {
            actor: "user:1 (admin)".into(),
            action: action.into(),
            target: "user:7".into(),
            detail: "requested role=sre".into(),
        };
        let outcome = ledger
            .apply(index, &command(&format!("a{index}"), at_ms, kind))
            .outcome;
        ledger.check_invariants().unwrap();
        outcome
    }

    #[test]
    fn entries_are_stamped_kept_in_order_and_paged_newest_first() {
        let mut ledger = Ledger::new(Limits::default());
        for index in 1..=5 {
            assert_eq!(
                record(&mut ledger, index, 1_000 * index, "set_role"),
                Outcome::Applied(Applied::AuditRecorded { entry: index })
            );
        }
        let page = ledger
            .query(&Query::AuditLog {
                before: None,
                limit: 2,
            })
            .unwrap();
        let QueryResponse::AuditLog { items, next } = page else {
            panic!("{page:?}")
        };
        assert_eq!(items.iter().map(|e| e.id).collect::<Vec<_>>(), vec![5, 4]);
        assert_eq!(items[0].at_ms, 5_000);
        assert_eq!(next, Some(4));
        let page = ledger
            .query(&Query::AuditLog {
                before: next,
                limit: 10,
            })
            .unwrap();
        let QueryResponse::AuditLog { items, next } = page else {
            panic!("{page:?}")
        };
        assert_eq!(
            items.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![3, 2, 1]
        );
        assert_eq!(next, None);
    }

    #[test]
    fn malformed_entries_are_refused_and_change_nothing() {
        let mut ledger = Ledger::new(Limits::default());
        for (n, action) in ["", "Set Role", "drop table;", &"x".repeat(65)]
            .into_iter()
            .enumerate()
        {
            assert!(
                matches!(record(&mut ledger, n as u64 + 1, 0, action), Outcome::Rejected(r) if r.is_invalid("action")),
                "{action:?}"
            );
        }
        let kind = CommandKind::RecordAudit {
            actor: "evil\u{202E}".into(),
            action: "set_role".into(),
            target: String::new(),
            detail: String::new(),
        };
        let outcome = ledger.apply(9, &command("b", 0, kind)).outcome;
        assert!(matches!(outcome, Outcome::Rejected(r) if r.is_invalid("actor")));
        assert!(ledger.state().audit.is_empty());
    }

    #[test]
    fn entries_survive_reopen_and_snapshot_install() {
        let dir = tempfile::tempdir().unwrap();
        let open = |path: &std::path::Path| {
            LedgerStore::open(path, Limits::default(), Durability::Buffered).unwrap()
        };
        let kind = CommandKind::RecordAudit {
            actor: "operator alice".into(),
            action: "transfer_leader".into(),
            target: "shard mumbai".into(),
            detail: "applied: node 1 -> node 2".into(),
        };
        let mut store = open(&dir.path().join("a"));
        store
            .apply_batch(&[(7, command("t", 5_000, kind))], b"m7")
            .unwrap();
        let expected = store.ledger().state().audit.clone();
        assert_eq!(expected.len(), 1);
        let snapshot = store.export_snapshot().unwrap();
        drop(store);
        let reopened = open(&dir.path().join("a"));
        assert_eq!(reopened.ledger().state().audit, expected);
        let mut other = open(&dir.path().join("b"));
        other.install_snapshot(&snapshot).unwrap();
        drop(other);
        let installed = open(&dir.path().join("b"));
        assert_eq!(installed.ledger().state().audit, expected);
        assert_eq!(installed.ledger().digest(), reopened.ledger().digest());
    }
}
