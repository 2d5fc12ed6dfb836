//! Replicas agree: at the end of a run (faults healed, clients stopped), every replica
//! of a shard that stands at the same applied index holds the same ledger, by its
//! digest (`/admin/status?digest=true`: `Ledger::digest` and the index it was taken
//! at). Acknowledged writes are the other checkers' part; this one catches a replica
//! that applied the same log differently (its own rules, a bad snapshot, a restore onto
//! the wrong node).
//!
//! The runner samples every node for a bounded time until each shard has one index at
//! which every replica answered. Two digests at one index are `false`; no index where
//! every replica was seen is `unknown` (never a pass).

use crate::checker::{Anomaly, CheckOptions, CheckResult};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub const NAME: &str = "replicas";

/// One replica's digest of one shard at the index it had applied.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaDigest {
    pub shard: String,
    pub index: u64,
    pub node: u64,
    /// Hex of `Ledger::digest`.
    pub digest: String,
}

/// What the runner saw: the samples, the replicas each shard should have, and what
/// could not be read (unreachable nodes, digests the node could not compute).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSamples {
    pub samples: Vec<ReplicaDigest>,
    /// Shard -> the nodes that must all be compared.
    pub replicas: BTreeMap<String, Vec<u64>>,
    pub problems: Vec<String>,
    /// How long the runner sampled.
    pub waited_ms: u64,
}

impl ReplicaSamples {
    /// The highest index of `shard` at which every one of its replicas was sampled.
    pub fn common_index(&self, shard: &str) -> Option<u64> {
        let wanted: BTreeSet<u64> = self.replicas.get(shard)?.iter().copied().collect();
        let mut seen: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for s in self.samples.iter().filter(|s| s.shard == shard) {
            seen.entry(s.index).or_default().insert(s.node);
        }
        seen.into_iter()
            .rev()
            .find(|(_, nodes)| wanted.is_subset(nodes))
            .map(|(index, _)| index)
    }

    /// Whether every shard has an index at which every replica was sampled.
    pub fn covered(&self) -> bool {
        self.replicas
            .keys()
            .all(|shard| self.common_index(shard).is_some())
    }
}

fn short(digest: &str) -> &str {
    digest.get(..16).unwrap_or(digest)
}

pub fn check(observed: &ReplicaSamples, options: &CheckOptions) -> CheckResult {
    let mut result = CheckResult::new(NAME);
    // (shard, index) -> digest -> nodes.
    let mut by_index: BTreeMap<(&str, u64), BTreeMap<&str, BTreeSet<u64>>> = BTreeMap::new();
    for s in &observed.samples {
        by_index
            .entry((s.shard.as_str(), s.index))
            .or_default()
            .entry(s.digest.as_str())
            .or_default()
            .insert(s.node);
    }
    for ((shard, index), digests) in &by_index {
        if digests.len() < 2 {
            continue;
        }
        let parts: Vec<String> = digests
            .iter()
            .map(|(digest, nodes)| {
                let nodes: Vec<u64> = nodes.iter().copied().collect();
                format!("nodes {nodes:?} have {}", short(digest))
            })
            .collect();
        let detail = format!(
            "replicas of {shard} at applied index {index} hold different ledgers: {}",
            parts.join(", ")
        );
        result.anomaly(Anomaly::new("replica-divergence", detail, vec![]), options);
    }
    for shard in observed.replicas.keys() {
        match observed.common_index(shard) {
            Some(index) => {
                let digest = observed
                    .samples
                    .iter()
                    .find(|s| s.shard == *shard && s.index == index)
                    .map_or("", |s| short(&s.digest));
                result.note(format!(
                    "{shard}: all {} replicas at index {index} ({digest})",
                    observed.replicas[shard].len()
                ));
            }
            None => {
                let mut last: BTreeMap<u64, u64> = BTreeMap::new();
                for s in observed.samples.iter().filter(|s| s.shard == *shard) {
                    let index = last.entry(s.node).or_insert(s.index);
                    *index = (*index).max(s.index);
                }
                result.unknown(format!(
                    "{shard}: the replicas {:?} never stood at one applied index within {} ms \
                     (highest index seen per node: {last:?})",
                    observed.replicas[shard], observed.waited_ms
                ));
            }
        }
    }
    if observed.replicas.is_empty() {
        result.unknown("no replicas to compare");
    }
    if !observed.problems.is_empty() && result.valid != crate::checker::Validity::Valid {
        let shown: Vec<&str> = observed
            .problems
            .iter()
            .take(5)
            .map(String::as_str)
            .collect();
        result.note(format!(
            "{} status reads failed, e.g. {}",
            observed.problems.len(),
            shown.join("; ")
        ));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testkit::assert_verdict;
    use crate::checker::Validity;

    fn sample(shard: &str, index: u64, node: u64, digest: &str) -> ReplicaDigest {
        ReplicaDigest {
            shard: shard.into(),
            index,
            node,
            digest: digest.into(),
        }
    }

    fn observed(samples: Vec<ReplicaDigest>) -> ReplicaSamples {
        ReplicaSamples {
            samples,
            replicas: [("mumbai".to_string(), vec![1, 2, 3])].into(),
            problems: vec![],
            waited_ms: 30_000,
        }
    }

    #[test]
    fn equal_digests_at_one_index_are_fine() {
        let o = observed(vec![
            sample("mumbai", 40, 1, "aa"),
            sample("mumbai", 41, 1, "ab"),
            sample("mumbai", 41, 2, "ab"),
            sample("mumbai", 41, 3, "ab"),
        ]);
        let result = check(&o, &CheckOptions::default());
        assert_verdict(&result, Validity::Valid, None);
        assert!(result.notes[0].contains("index 41"), "{result:?}");
    }

    #[test]
    fn different_digests_at_one_index_are_caught() {
        let o = observed(vec![
            sample("mumbai", 41, 1, "ab"),
            sample("mumbai", 41, 2, "ab"),
            sample("mumbai", 41, 3, "ff"),
        ]);
        let result = check(&o, &CheckOptions::default());
        assert_verdict(&result, Validity::Invalid, Some("replica-divergence"));
        let detail = &result.anomalies[0].detail;
        assert!(
            detail.contains("index 41") && detail.contains("[3]"),
            "{detail}"
        );
    }

    #[test]
    fn a_divergence_seen_by_two_replicas_only_is_caught() {
        // Node 3 was never at index 41, but 1 and 2 disagree there.
        let o = observed(vec![
            sample("mumbai", 41, 1, "ab"),
            sample("mumbai", 41, 2, "cd"),
            sample("mumbai", 42, 1, "ee"),
            sample("mumbai", 42, 2, "ee"),
            sample("mumbai", 42, 3, "ee"),
        ]);
        let result = check(&o, &CheckOptions::default());
        assert_verdict(&result, Validity::Invalid, Some("replica-divergence"));
    }

    #[test]
    fn different_digests_at_different_indexes_are_not_a_divergence() {
        let o = observed(vec![
            sample("mumbai", 41, 1, "ab"),
            sample("mumbai", 41, 2, "ab"),
            sample("mumbai", 41, 3, "ab"),
            sample("mumbai", 42, 2, "cd"),
        ]);
        assert_verdict(&check(&o, &CheckOptions::default()), Validity::Valid, None);
    }

    #[test]
    fn replicas_never_at_one_index_cannot_be_judged() {
        let mut o = observed(vec![
            sample("mumbai", 41, 1, "ab"),
            sample("mumbai", 41, 2, "ab"),
            sample("mumbai", 44, 3, "cd"),
        ]);
        o.problems.push("node 3: connection refused".into());
        let result = check(&o, &CheckOptions::default());
        assert_verdict(&result, Validity::Unknown, None);
        assert!(
            result.notes.iter().any(|n| n.contains("never stood")),
            "{result:?}"
        );
        assert!(
            result
                .notes
                .iter()
                .any(|n| n.contains("connection refused")),
            "{result:?}"
        );
        let empty = ReplicaSamples::default();
        assert_verdict(
            &check(&empty, &CheckOptions::default()),
            Validity::Unknown,
            None,
        );
    }
}
