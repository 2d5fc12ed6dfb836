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
//!
//! The check fails closed: a leader stamps only when a majority of its voters (itself
//! included) has a sample younger than `CLOCK_SAMPLE_FRESH`, right after a restart too
//! (`ClockVerdict::Unknown`). The shard clock is `max(previous, at)`, so one stamp from
//! an unchecked clock would move it forward for good: every lock would expire at once,
//! and a jump past a day would forget the request ids.
//!
//! A second guard bounds each stamp by the shard's own history (`StampBound`): a
//! replica remembers when it applied an entry stamped live (near its own checked
//! clock), and as leader it refuses a stamp beyond that entry's time plus the time
//! passed since (monotonic) plus `CLOCK_JUMP_MS_MAX`. The quorum check cannot see a
//! majority whose clocks jumped together; this guard does, for as long as the process
//! has watched the shard live.

use crate::types::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest difference between a leader's clock and its quorum's before it stops
/// stamping.
pub const CLOCK_SKEW_MS_MAX: i64 = 500;

/// How long a peer's clock sample counts. Peers are sampled every 500 ms; a sample
/// delayed behind a large frame on the shared connection, or one lost, must not stop
/// every leader at once, but a peer silent for this long says nothing about now.
pub const CLOCK_SAMPLE_FRESH: Duration = Duration::from_secs(3);

/// How far one stamp may go past the last live stamp this replica applied plus the
/// (monotonic) time since: two clocks each within `CLOCK_SKEW_MS_MAX` of the quorum,
/// plus slack for a sample's age.
pub const CLOCK_JUMP_MS_MAX: u64 = 2_000;

/// Whether this node may stamp commands for a shard, by its voters' clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockVerdict {
    /// Our clock is within `CLOCK_SKEW_MS_MAX` of the voters' median.
    Agrees,
    /// Ours minus the quorum's, beyond the bound.
    Skewed { skew_ms: i64 },
    /// Fewer than a majority of the voters have a fresh sample (ours counts).
    Unknown { fresh: usize, voters: usize },
    /// An even number of clocks is known and the two in the middle disagree, ours with
    /// one of them: nobody can tell which is wrong, so nothing is stamped (and no other
    /// voter is known to be better).
    Split { spread_ms: i64 },
}

impl ClockVerdict {
    /// Why stamping is refused, or `None` when it is allowed.
    pub fn refusal(self) -> Option<String> {
        match self {
            ClockVerdict::Agrees => None,
            ClockVerdict::Skewed { skew_ms } => Some(format!(
                "the leader's clock is {skew_ms} ms off its quorum's (limit \
                 {CLOCK_SKEW_MS_MAX} ms); it stamps nothing until they agree"
            )),
            ClockVerdict::Unknown { fresh, voters } => Some(format!(
                "the leader knows the clocks of {fresh} of {voters} voters (itself included); \
                 it stamps nothing until a majority is sampled"
            )),
            ClockVerdict::Split { spread_ms } => Some(format!(
                "the voters' clocks known to the leader split {spread_ms} ms apart with no \
                 majority on either side; it stamps nothing until they agree"
            )),
        }
    }
}

/// One sample of a peer's clock.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// `peer clock - our clock`, in ms, when taken.
    offset_ms: i64,
    /// Our `drift_ms` when taken.
    drift_ms: i64,
    taken: Instant,
}

pub struct ClusterClock {
    /// Added to the system clock: zero except under fault injection (clock-skew tests).
    fault_offset_ms: AtomicI64,
    /// Latest sample per peer.
    offsets: Mutex<BTreeMap<NodeId, Sample>>,
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
        let sample = Sample {
            offset_ms: peer_ms as i64 - midpoint,
            drift_ms: self.drift_ms(),
            taken: Instant::now(),
        };
        if let Ok(mut offsets) = self.offsets.lock() {
            offsets.insert(peer, sample);
        }
    }

    /// Each peer's offset now, from samples younger than `CLOCK_SAMPLE_FRESH`: the
    /// sample corrected by our drift since.
    fn current_offsets(&self) -> Option<BTreeMap<NodeId, i64>> {
        let drift = self.drift_ms();
        let offsets = self.offsets.lock().ok()?;
        Some(
            offsets
                .iter()
                .filter(|(_, sample)| sample.taken.elapsed() < CLOCK_SAMPLE_FRESH)
                .map(|(id, sample)| (*id, sample.offset_ms - (drift - sample.drift_ms)))
                .collect(),
        )
    }

    /// Ages every sample by `by`, as if it had been taken that much earlier (tests).
    #[cfg(test)]
    fn age_samples(&self, by: Duration) {
        if let Ok(mut offsets) = self.offsets.lock() {
            for sample in offsets.values_mut() {
                sample.taken = sample.taken.checked_sub(by).unwrap_or(sample.taken);
            }
        }
    }

    /// The fresh offsets of `voters`' clocks from ours (ours is 0), unsorted.
    fn known_offsets(&self, me: NodeId, voters: &BTreeSet<NodeId>) -> Vec<i64> {
        let offsets = self.current_offsets().unwrap_or_default();
        voters
            .iter()
            .filter_map(|id| {
                if *id == me {
                    Some(0)
                } else {
                    offsets.get(id).copied()
                }
            })
            .collect()
    }

    /// Whether `me` may stamp for a shard with `voters`: fails closed when too few
    /// voters' clocks are known.
    pub fn verdict(&self, me: NodeId, voters: &BTreeSet<NodeId>) -> ClockVerdict {
        let mut known = self.known_offsets(me, voters);
        if known.len() * 2 <= voters.len() {
            return ClockVerdict::Unknown {
                fresh: known.len(),
                voters: voters.len(),
            };
        }
        known.sort_unstable();
        let within = |offset: i64| offset.abs() <= CLOCK_SKEW_MS_MAX;
        let upper = known[known.len() / 2];
        if known.len() % 2 == 1 {
            // The quorum's clock minus ours: positive means ours is behind.
            return if within(upper) {
                ClockVerdict::Agrees
            } else {
                ClockVerdict::Skewed { skew_ms: -upper }
            };
        }
        let lower = known[known.len() / 2 - 1];
        match (within(lower), within(upper)) {
            (true, true) => ClockVerdict::Agrees,
            (false, false) => {
                let nearer = if lower.abs() <= upper.abs() {
                    lower
                } else {
                    upper
                };
                ClockVerdict::Skewed { skew_ms: -nearer }
            }
            _ => ClockVerdict::Split {
                spread_ms: upper - lower,
            },
        }
    }

    /// The median offset of `voters`' clocks from ours (ours counts as 0), when a
    /// majority of the voters has a fresh sample; `None` when too few do.
    pub fn quorum_offset_ms(&self, me: NodeId, voters: &BTreeSet<NodeId>) -> Option<i64> {
        let mut known = self.known_offsets(me, voters);
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

/// A shard's bound on the next stamp: the last entry this replica applied whose stamp
/// was live (within `CLOCK_JUMP_MS_MAX` of its own clock when applied), and when. Entries
/// replayed at start are old and anchor nothing, so after a restart (or a shard idle for
/// hours) only the quorum check applies; the anchor's age is measured on the monotonic
/// clock, which no clock step moves.
#[derive(Debug, Default)]
pub struct StampBound {
    anchor: Mutex<Option<(u64, Instant)>>,
}

impl StampBound {
    /// Records that the shard clock is `shard_clock` after an apply, when this node's
    /// own clock read `own_ms`.
    pub fn applied(&self, shard_clock: u64, own_ms: u64) {
        if shard_clock.abs_diff(own_ms) > CLOCK_JUMP_MS_MAX {
            return;
        }
        if let Ok(mut anchor) = self.anchor.lock() {
            if anchor.is_none_or(|(clock, _)| shard_clock > clock) {
                *anchor = Some((shard_clock, Instant::now()));
            }
        }
    }

    /// The largest stamp allowed now, if this replica has watched the shard live.
    pub fn limit_ms(&self) -> Option<u64> {
        let anchor = *self.anchor.lock().ok()?;
        let (clock, at) = anchor?;
        Some(clock + at.elapsed().as_millis() as u64 + CLOCK_JUMP_MS_MAX)
    }

    /// Why `at_ms` may not be stamped, if it goes past the bound.
    pub fn refusal(&self, at_ms: u64) -> Option<String> {
        let limit = self.limit_ms()?;
        (at_ms > limit).then(|| {
            format!(
                "the leader's clock is {} ms ahead of the shard clock's last live stamp plus \
                 the time since (limit {CLOCK_JUMP_MS_MAX} ms); it stamps nothing that would \
                 jump the shard clock",
                at_ms - limit + CLOCK_JUMP_MS_MAX
            )
        })
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
        clock.age_samples(CLOCK_SAMPLE_FRESH);
        assert_eq!(clock.quorum_offset_ms(1, &voters), None);
    }

    /// Issue #26, item 4: with fewer than a majority of fresh samples (right after a
    /// restart, or when samples time out) the guard answered "no skew" and the leader
    /// stamped unchecked.
    #[test]
    fn too_few_fresh_samples_refuse_stamping() {
        let clock = ClusterClock::default();
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let verdict = clock.verdict(1, &voters);
        assert_eq!(
            verdict,
            ClockVerdict::Unknown {
                fresh: 1,
                voters: 3
            }
        );
        assert!(verdict.refusal().is_some(), "no samples: no stamping");
        let now = clock.now_ms();
        clock.record(2, now, now + 10, now);
        assert_eq!(clock.verdict(1, &voters), ClockVerdict::Agrees);
        clock.record(2, now, now + 60_000, now);
        assert!(
            matches!(clock.verdict(1, &voters), ClockVerdict::Split { spread_ms } if spread_ms > 59_000),
            "{{0, 60 s}}: two clocks known, one of them wrong; neither may stamp"
        );
        clock.record(3, now, now + 60_000, now);
        assert!(matches!(
            clock.verdict(1, &voters),
            ClockVerdict::Skewed { skew_ms } if (-60_100..=-59_900).contains(&skew_ms)
        ));
        clock.age_samples(CLOCK_SAMPLE_FRESH);
        assert_eq!(
            clock.verdict(1, &voters),
            ClockVerdict::Unknown {
                fresh: 1,
                voters: 3
            },
            "stale samples count for nothing"
        );
        let alone: BTreeSet<NodeId> = [1].into();
        assert_eq!(
            clock.verdict(1, &alone),
            ClockVerdict::Agrees,
            "a single voter"
        );
    }

    #[test]
    fn a_stamp_may_not_jump_past_the_last_live_one_plus_the_time_since() {
        let bound = StampBound::default();
        assert_eq!(bound.refusal(u64::MAX), None, "nothing watched: no bound");
        bound.applied(1_000_000, 5_000_000);
        assert_eq!(
            bound.limit_ms(),
            None,
            "a replayed old entry anchors nothing"
        );
        bound.applied(5_000_000, 5_000_100);
        let limit = bound.limit_ms().unwrap();
        assert!((5_002_000..5_002_500).contains(&limit), "{limit}");
        assert_eq!(bound.refusal(5_001_000), None);
        let refusal = bound.refusal(5_000_000 + 3_600_000).unwrap();
        assert!(refusal.contains("ahead"), "{refusal}");
        bound.applied(4_999_000, 4_999_000);
        assert_eq!(
            bound.limit_ms().map(|l| l >= limit),
            Some(true),
            "never backwards"
        );
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
