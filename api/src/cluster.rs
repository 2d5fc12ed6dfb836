//! The cluster's health as one document for SREs (`GET /api/v1/cluster`, roles sre and
//! admin): every raft-node's `/admin/status` is fetched concurrently, and the reports
//! are merged per shard (leader, term, members by region, each member's applied index
//! and the leader's view of its lag). Leader changes are those this api node has seen
//! between two gatherings; the history is bounded and lives in memory only.
//!
//! It reads the nodes' admin status and never changes the cluster.

use crate::app::{AuthUser, Shared};
use crate::problem::Problem;
use crate::views;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use state_machine::Role;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How long one node may take to report before it is shown as unreachable.
pub const NODE_STATUS_TIMEOUT: Duration = Duration::from_millis(1_500);
/// Leader changes kept for the page, newest first.
pub const LEADER_CHANGES_MAX: usize = 50;

/// The part of a raft-node's `/admin/status` this page uses (unknown fields ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct NodeReport {
    pub node: u64,
    pub region: String,
    pub shards: Vec<ShardReport>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShardReport {
    pub shard: String,
    pub state: String,
    pub leader: Option<u64>,
    pub term: u64,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberReport>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MemberReport {
    pub id: u64,
    pub region: String,
    pub voter: bool,
    /// Entries behind the leader; only the leader's report knows it.
    pub lag: Option<u64>,
}

/// A leader (or term) change seen between two gatherings.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LeaderChange {
    pub at: String,
    pub shard: String,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub term: u64,
}

/// What this api node last saw, to notice changes.
#[derive(Default)]
pub struct LeaderWatch {
    /// Shard -> (leader, term) at the previous gathering.
    last: BTreeMap<String, (Option<u64>, u64)>,
    /// Newest first, at most `LEADER_CHANGES_MAX`.
    changes: VecDeque<LeaderChange>,
}

impl LeaderWatch {
    /// Records the shards' current leaders; returns the history, newest first. A shard
    /// seen for the first time is not a change.
    pub fn observe(
        &mut self,
        now: &str,
        shards: &[(String, Option<u64>, u64)],
    ) -> Vec<LeaderChange> {
        for (shard, leader, term) in shards {
            let before = self.last.insert(shard.clone(), (*leader, *term));
            if let Some((from, old_term)) = before {
                if from != *leader || old_term != *term {
                    self.changes.push_front(LeaderChange {
                        at: now.to_owned(),
                        shard: shard.clone(),
                        from,
                        to: *leader,
                        term: *term,
                    });
                    self.changes.truncate(LEADER_CHANGES_MAX);
                }
            }
        }
        self.changes.iter().cloned().collect()
    }
}

/// One node's answer: its report or why there is none.
pub struct Fetched {
    pub id: u64,
    pub region: String,
    pub address: String,
    pub report: Result<NodeReport, String>,
}

async fn fetch(http: &reqwest::Client, scheme: &str, address: &str) -> Result<NodeReport, String> {
    let response = http
        .get(format!("{scheme}://{address}/admin/status"))
        .timeout(NODE_STATUS_TIMEOUT)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    response
        .json::<NodeReport>()
        .await
        .map_err(|e| format!("unreadable status: {e}"))
}

/// Fetches every node's status concurrently.
pub async fn gather(state: &Shared) -> Vec<Fetched> {
    let requests = state.config.nodes.iter().map(|node| async move {
        Fetched {
            id: node.id,
            region: node.region.clone(),
            address: node.client_addr.clone(),
            report: fetch(
                state.admin_http(),
                state.cluster.scheme(),
                &node.client_addr,
            )
            .await,
        }
    });
    futures_util::future::join_all(requests).await
}

/// The leader a shard's reports agree on: a node that says it leads at the highest
/// term, else the leader most reports at the highest term name.
fn leader_of(reports: &[(u64, &ShardReport)]) -> (Option<u64>, u64) {
    let term = reports.iter().map(|(_, r)| r.term).max().unwrap_or(0);
    let at_term = || reports.iter().filter(move |(_, r)| r.term == term);
    if let Some((node, _)) = at_term().find(|(_, r)| r.state == "Leader") {
        return (Some(*node), term);
    }
    let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
    for leader in at_term().filter_map(|(_, r)| r.leader) {
        *votes.entry(leader).or_default() += 1;
    }
    let leader = votes
        .into_iter()
        .max_by_key(|(id, count)| (*count, std::cmp::Reverse(*id)))
        .map(|(id, _)| id);
    (leader, term)
}

/// Merges the nodes' reports into the page's document (without leader changes).
pub fn summarize(fetched: &[Fetched]) -> (Value, Vec<(String, Option<u64>, u64)>) {
    let mut by_shard: BTreeMap<&str, Vec<(u64, &ShardReport)>> = BTreeMap::new();
    for node in fetched {
        if let Ok(report) = &node.report {
            for shard in &report.shards {
                by_shard
                    .entry(&shard.shard)
                    .or_default()
                    .push((node.id, shard));
            }
        }
    }
    let region_of: BTreeMap<u64, &str> =
        fetched.iter().map(|n| (n.id, n.region.as_str())).collect();
    let mut leaders = Vec::new();
    let mut shards = Vec::new();
    for (name, reports) in &by_shard {
        let (leader, term) = leader_of(reports);
        leaders.push((name.to_string(), leader, term));
        let leader_report = reports
            .iter()
            .find(|(id, _)| Some(*id) == leader)
            .map(|(_, r)| *r);
        let membership = leader_report.unwrap_or(reports[0].1);
        let members: Vec<Value> = membership
            .members
            .iter()
            .map(|member| {
                let own = reports
                    .iter()
                    .find(|(id, _)| *id == member.id)
                    .map(|(_, r)| *r);
                let lag = leader_report
                    .and_then(|r| r.members.iter().find(|m| m.id == member.id))
                    .and_then(|m| m.lag);
                json!({
                    "id": member.id,
                    "region": member.region,
                    "voter": member.voter,
                    "reachable": own.is_some(),
                    "state": own.map_or("unreachable", |r| r.state.as_str()),
                    "applied_index": own.and_then(|r| r.applied_index),
                    "lag": lag,
                })
            })
            .collect();
        let mut regions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for member in &membership.members {
            regions
                .entry(member.region.as_str())
                .or_default()
                .push(member.id);
        }
        shards.push(json!({
            "shard": name,
            "leader": leader,
            "leader_region": leader.and_then(|id| region_of.get(&id).copied()),
            "term": term,
            "committed_index": leader_report.and_then(|r| r.committed_index),
            "members": members,
            "regions": regions,
        }));
    }
    let nodes: Vec<Value> = fetched
        .iter()
        .map(|node| {
            json!({
                "id": node.id,
                "region": node.region,
                "address": node.address,
                "reachable": node.report.is_ok(),
                "error": node.report.as_ref().err(),
                "leads": by_shard.iter()
                    .filter(|(_, reports)| leader_of(reports).0 == Some(node.id))
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    (json!({ "nodes": nodes, "shards": shards }), leaders)
}

/// `GET /api/v1/cluster`: shards, leaders, members by region, lag, leader changes.
pub async fn cluster_status(
    State(state): State<Shared>,
    caller: AuthUser,
) -> Result<Response, Problem> {
    caller.require(&[Role::Sre, Role::Admin])?;
    let fetched = gather(&state).await;
    if fetched.iter().all(|node| node.report.is_err()) {
        let reasons: Vec<String> = fetched
            .iter()
            .map(|n| {
                format!(
                    "node {}: {}",
                    n.id,
                    n.report.as_ref().err().map_or("", |e| e)
                )
            })
            .collect();
        return Err(Problem::new(
            axum::http::StatusCode::BAD_GATEWAY,
            "cluster-unreachable",
            "No raft-node answered",
            format!("no node reported its status ({})", reasons.join("; ")),
        ));
    }
    let now = views::rfc3339(crate::auth::now_s() * 1_000);
    let (mut body, leaders) = summarize(&fetched);
    body["leader_changes"] = json!(state.observe_leaders(&now, &leaders));
    body["gathered_at"] = json!(now);
    Ok(axum::Json(body).into_response())
}

/// The watch shared by requests, behind a mutex held only to update it.
pub fn observe(
    watch: &Mutex<LeaderWatch>,
    now: &str,
    leaders: &[(String, Option<u64>, u64)],
) -> Vec<LeaderChange> {
    match watch.lock() {
        Ok(mut watch) => watch.observe(now, leaders),
        Err(poisoned) => poisoned.into_inner().observe(now, leaders),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(
        name: &str,
        state: &str,
        leader: Option<u64>,
        term: u64,
        lags: &[(u64, Option<u64>)],
    ) -> ShardReport {
        ShardReport {
            shard: name.into(),
            state: state.into(),
            leader,
            term,
            committed_index: Some(10),
            applied_index: Some(9),
            members: lags
                .iter()
                .map(|(id, lag)| MemberReport {
                    id: *id,
                    region: format!("r{id}"),
                    voter: true,
                    lag: *lag,
                })
                .collect(),
        }
    }

    fn node(id: u64, shards: Vec<ShardReport>) -> Fetched {
        Fetched {
            id,
            region: format!("r{id}"),
            address: format!("127.0.0.1:{id}"),
            report: Ok(NodeReport {
                node: id,
                region: format!("r{id}"),
                shards,
            }),
        }
    }

    #[test]
    fn the_leaders_report_gives_lag_and_an_unreachable_node_is_shown_as_such() {
        let members = [(1, Some(0)), (2, Some(3)), (3, None)];
        let fetched = vec![
            node(1, vec![shard("mumbai", "Leader", Some(1), 4, &members)]),
            node(
                2,
                vec![shard(
                    "mumbai",
                    "Follower",
                    Some(1),
                    4,
                    &[(1, None), (2, None), (3, None)],
                )],
            ),
            Fetched {
                id: 3,
                region: "r3".into(),
                address: "x".into(),
                report: Err("no answer".into()),
            },
        ];
        let (body, leaders) = summarize(&fetched);
        assert_eq!(leaders, vec![("mumbai".to_string(), Some(1), 4)]);
        let mumbai = &body["shards"][0];
        assert_eq!(mumbai["leader"], json!(1));
        assert_eq!(mumbai["leader_region"], json!("r1"));
        assert_eq!(mumbai["members"][1]["lag"], json!(3));
        assert_eq!(mumbai["members"][1]["state"], json!("Follower"));
        assert_eq!(mumbai["members"][2]["state"], json!("unreachable"));
        assert_eq!(body["nodes"][2]["reachable"], json!(false));
        assert_eq!(body["nodes"][0]["leads"], json!(["mumbai"]));
    }

    #[test]
    fn without_a_self_declared_leader_the_highest_terms_majority_is_taken() {
        let stale = shard("delhi", "Follower", Some(3), 2, &[]);
        let a = shard("delhi", "Follower", Some(2), 5, &[]);
        let b = shard("delhi", "Candidate", Some(2), 5, &[]);
        assert_eq!(leader_of(&[(1, &stale), (2, &a), (3, &b)]), (Some(2), 5));
        assert_eq!(leader_of(&[]), (None, 0));
    }

    #[test]
    fn a_change_of_leader_or_term_is_recorded_once_and_the_history_is_bounded() {
        let mut watch = LeaderWatch::default();
        assert!(watch.observe("t0", &[("m".into(), Some(1), 1)]).is_empty());
        assert!(watch.observe("t1", &[("m".into(), Some(1), 1)]).is_empty());
        let changes = watch.observe("t2", &[("m".into(), Some(2), 2)]);
        assert_eq!(
            changes,
            vec![LeaderChange {
                at: "t2".into(),
                shard: "m".into(),
                from: Some(1),
                to: Some(2),
                term: 2
            }]
        );
        for term in 3..100 {
            watch.observe("t", &[("m".into(), Some(term % 3), term)]);
        }
        let changes = watch.observe("t", &[("m".into(), Some(1), 100)]);
        assert_eq!(changes.len(), LEADER_CHANGES_MAX);
        assert_eq!(changes[0].term, 100);
    }
}
