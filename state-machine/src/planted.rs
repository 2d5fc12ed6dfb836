//! Planted bugs (feature `planted-bugs` only): switchable faults in the real code paths,
//! so that the Jepsen-style suite can prove its checkers catch what they claim to.
//!
//! Without the feature this module, its switches and every branch that reads them are
//! not compiled: release binaries carry no trace of them. The switches are process-wide
//! (a node process enables them at start, from its environment); two of them live in
//! this crate's `apply`, two in the node's write and read paths.

use std::sync::atomic::{AtomicU8, Ordering};

/// The faults that can be planted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// A follower answers "linearizable" reads from its own state, without a read index.
    StaleFollowerRead,
    /// The leader acknowledges a write before it commits, with the outcome its current
    /// state predicts.
    AckBeforeCommit,
    /// `apply` ignores the idempotency table: a retried request is executed again.
    SkipIdempotency,
    /// `confirm` accepts a lock whose time ran out (if its seats are still held by it).
    ConfirmIgnoresExpiry,
}

impl PlantedBug {
    pub const ALL: [PlantedBug; 4] = [
        PlantedBug::StaleFollowerRead,
        PlantedBug::AckBeforeCommit,
        PlantedBug::SkipIdempotency,
        PlantedBug::ConfirmIgnoresExpiry,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::StaleFollowerRead => "stale-follower-read",
            PlantedBug::AckBeforeCommit => "ack-before-commit",
            PlantedBug::SkipIdempotency => "skip-idempotency",
            PlantedBug::ConfirmIgnoresExpiry => "confirm-ignores-expiry",
        }
    }

    /// Parses a name given by `name()`; the error lists the valid ones.
    pub fn parse(name: &str) -> Result<PlantedBug, String> {
        PlantedBug::ALL
            .into_iter()
            .find(|bug| bug.name() == name.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = PlantedBug::ALL.iter().map(|b| b.name()).collect();
                format!("unknown planted bug {name:?}; known: {}", names.join(", "))
            })
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Switches a planted bug on for this process.
pub fn enable(bug: PlantedBug) {
    ENABLED.fetch_or(bug.bit(), Ordering::SeqCst);
}

/// Switches every planted bug off.
pub fn disable_all() {
    ENABLED.store(0, Ordering::SeqCst);
}

pub fn is_enabled(bug: PlantedBug) -> bool {
    ENABLED.load(Ordering::Relaxed) & bug.bit() != 0
}

/// Enables the comma-separated bugs named in `list` (e.g. from an environment variable).
pub fn enable_list(list: &str) -> Result<Vec<PlantedBug>, String> {
    let bugs = list
        .split(',')
        .filter(|name| !name.trim().is_empty())
        .map(PlantedBug::parse)
        .collect::<Result<Vec<_>, _>>()?;
    for bug in &bugs {
        enable(*bug);
    }
    Ok(bugs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for bug in PlantedBug::ALL {
            assert_eq!(PlantedBug::parse(bug.name()), Ok(bug));
        }
        let error = PlantedBug::parse("no-such-bug").unwrap_err();
        assert!(error.contains("stale-follower-read"), "{error}");
    }
}
