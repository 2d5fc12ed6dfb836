//! Cluster time, in the manner of TigerBeetle's: every node samples the clocks of the
//! others over the peer transport, and a shard leader stamps commands only while its
//! own clock is within `CLOCK_SKEW_MS_MAX` of the median of its voters' clocks.
//!
//! A clock jumped forward would expire every lock early; one jumped back would stall
//! expiry. The ledger's `max(previous, at)` only stops the second from going backwards,
//! so a leader that disagrees with its quorum refuses writes, reports unready, and
//! hands leadership to a voter that agrees.
//!
//! A step of our own clock between samples is seen at once, not at the next sample:
//! each sample remembers how far our wall clock had drifted from the monotonic clock,
//! and the offsets are corrected by the drift since (`drift_ms`).

use crate::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Largest difference between a leader's clock and its quorum's before it stops
/// stamping.
pub const CLOCK_SKEW_MS_MAX: i64 = 500;

pub struct ClusterClock {
    /// Added to the system clock: zero except under fault injection (clock-skew tests).
    fault_offset_ms: AtomicI64,
    /// Latest estimate per peer of `peer clock - our clock`, in ms, and our drift
    /// (`drift_ms`) when it was taken.
    offsets: Mutex<BTreeMap<NodeId, (i64, i64)>>,
    /// Our wall clock and the monotonic clock at start: their difference since is how
    /// far our wall clock stepped or slewed.
    anchor: (Instant, i64),
}

impl Default for ClusterClock {
    fn default() -> Self {
        ClusterClock {
            fault_offset_ms: AtomicI64::new(0),
            offsets: Mutex::new(BTreeMap::new()),
            anchor: (Instant::now(), system_ms()),
        }
    }
}

fn system_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl ClusterClock {
    /// This node's clock, which stamps commands when it leads.
    pub fn now_ms(&self) -> u64 {
        (system_ms() + self.fault_offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// Shifts this node's clock, for clock-skew tests and the Jepsen-style nemesis.
    #[cfg(feature = "fault-injection")]
    pub fn set_fault_offset_ms(&self, offset_ms: i64) {
        self.fault_offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    /// How far our wall clock (with any injected offset) has moved from the monotonic
    /// clock since start: a step of the wall clock shows here at once.
    fn drift_ms(&self) -> i64 {
        let wall = self.now_ms() as i64 - self.anchor.1;
        let monotonic = self.anchor.0.elapsed().as_millis() as i64;
        wall - monotonic
    }

    /// Records a sample: we sent at `sent_ms`, the peer said `peer_ms`, we heard back at
    /// `received_ms` (all on our clock except `peer_ms`).
    pub fn record(&self, peer: NodeId, sent_ms: u64, peer_ms: u64, received_ms: u64) {
        let midpoint = (sent_ms as i64 + received_ms as i64) / 2;
        let drift = self.drift_ms();
        if let Ok(mut offsets) = self.offsets.lock() {
            offsets.insert(peer, (peer_ms as i64 - midpoint, drift));
        }
    }

    /// Each sampled peer's offset now: the sample corrected by our drift since.
    fn current_offsets(&self) -> Option<BTreeMap<NodeId, i64>> {
        let drift = self.drift_ms();
        let offsets = self.offsets.lock().ok()?;
        Some(
            offsets
                .iter()
                .map(|(id, (offset, then))| (*id, offset - (drift - then)))
                .collect(),
        )
    }

    /// Forgets a peer that stopped answering: an old sample says nothing about now.
    pub fn forget(&self, peer: NodeId) {
        if let Ok(mut offsets) = self.offsets.lock() {
            offsets.remove(&peer);
        }
    }

    /// The median offset of `voters`' clocks from ours (ours counts as 0), when a
    /// majority of the voters has a sample; `None` when too few do.
    pub fn quorum_offset_ms(&self, me: NodeId, voters: &BTreeSet<NodeId>) -> Option<i64> {
        let offsets = self.current_offsets()?;
        let mut known: Vec<i64> = voters
            .iter()
            .filter_map(|id| {
                if *id == me {
                    Some(0)
                } else {
                    offsets.get(id).copied()
                }
            })
            .collect();
        if known.len() * 2 <= voters.len() {
            return None;
        }
        known.sort_unstable();
        let upper = known[known.len() / 2];
        if known.len() % 2 == 1 {
            return Some(upper);
        }
        // With an even count nobody can tell which middle clock is wrong: take the one
        // nearer ours, so a single disagreeing peer never makes a leader step aside.
        let lower = known[known.len() / 2 - 1];
        Some(if lower.abs() <= upper.abs() {
            lower
        } else {
            upper
        })
    }

    /// The voter whose clock is closest to the quorum's, other than `me`.
    pub fn best_other_voter(&self, me: NodeId, voters: &BTreeSet<NodeId>) -> Option<NodeId> {
        let quorum = self.quorum_offset_ms(me, voters)?;
        let offsets = self.current_offsets()?;
        voters
            .iter()
            .filter(|id| **id != me)
            .filter_map(|id| {
                offsets
                    .get(id)
                    .map(|offset| (((offset - quorum).abs()), *id))
            })
            .min()
            .map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_a_majority_decides() {
        let clock = ClusterClock::default();
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        assert_eq!(
            clock.quorum_offset_ms(1, &voters),
            None,
            "no samples, no verdict"
        );
        clock.record(2, 1_000, 6_020, 1_020);
        assert_eq!(
            clock.quorum_offset_ms(1, &voters),
            Some(0),
            "{{0, 5010}}: undecided, ours"
        );
        clock.record(3, 1_000, 6_000, 1_000);
        assert_eq!(
            clock.quorum_offset_ms(1, &voters),
            Some(5_000),
            "we are the odd one out"
        );
        assert_eq!(clock.best_other_voter(1, &voters), Some(3));
        clock.record(3, 1_000, 1_000, 1_000);
        assert_eq!(
            clock.quorum_offset_ms(1, &voters),
            Some(0),
            "one skewed follower is outvoted"
        );
        clock.forget(2);
        clock.forget(3);
        assert_eq!(clock.quorum_offset_ms(1, &voters), None);
    }

    #[cfg(feature = "fault-injection")]
    #[test]
    fn a_step_of_our_clock_shows_before_the_next_sample() {
        let clock = ClusterClock::default();
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let now = clock.now_ms();
        clock.record(2, now, now, now);
        clock.record(3, now, now, now);
        let before = clock.quorum_offset_ms(1, &voters).unwrap();
        assert!(before.abs() < 50, "{before}");
        clock.set_fault_offset_ms(2_000);
        let after = clock.quorum_offset_ms(1, &voters).unwrap();
        assert!(
            (after + 2_000).abs() < 50,
            "the quorum is now 2 s behind us: {after}"
        );
    }
}
