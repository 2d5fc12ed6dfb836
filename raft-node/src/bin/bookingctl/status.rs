//! `bookingctl status`: one row per shard member, from every node's `/admin/status`.

use crate::admin::{Admin, ClusterView};
use raft_node::types::NodeId;
use serde::Serialize;

#[derive(Serialize)]
pub struct MemberRow {
    pub node: NodeId,
    pub region: String,
    /// leader, follower, learner, candidate, ... as the member reports itself; `down`
    /// when it did not answer.
    pub role: String,
    pub voter: bool,
    pub applied_index: Option<u64>,
    /// Entries behind the leader's last log entry (leader's view).
    pub lag: Option<u64>,
    pub term: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Serialize)]
pub struct ShardRow {
    pub shard: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub committed_index: Option<u64>,
    pub members: Vec<MemberRow>,
}

#[derive(Serialize)]
pub struct Report {
    pub shards: Vec<ShardRow>,
    /// Nodes that did not answer, with the reason.
    pub unreachable: Vec<(NodeId, String)>,
}

pub fn report(view: &ClusterView, only: Option<&str>) -> Report {
    let mut shards = Vec::new();
    for name in view.shard_names() {
        if only.is_some_and(|only| only != name) {
            continue;
        }
        let leader = view.leader(&name);
        // Membership as the leader sees it, else as any replica sees it.
        let source = leader
            .map(|(_, s)| s)
            .or_else(|| view.replicas(&name).map(|(_, s)| s).next());
        let Some(source) = source else { continue };
        let replicas: std::collections::BTreeMap<NodeId, _> = view.replicas(&name).collect();
        let members = source
            .members
            .iter()
            .map(|m| {
                let own = replicas.get(&m.id);
                let reachable = view.nodes.get(&m.id).is_some_and(|r| r.is_ok());
                MemberRow {
                    node: m.id,
                    region: m.region.clone(),
                    role: match own {
                        Some(s) => s.state.to_lowercase(),
                        None if reachable => "missing".into(),
                        None if view.nodes.contains_key(&m.id) => "down".into(),
                        None => "not-given".into(),
                    },
                    voter: m.voter,
                    applied_index: own.and_then(|s| s.applied_index),
                    lag: m.lag,
                    term: own.map(|s| s.term),
                    digest: own.and_then(|s| s.digest.clone()),
                }
            })
            .collect();
        shards.push(ShardRow {
            shard: name.clone(),
            leader: leader.map(|(id, _)| id),
            term: leader.map_or(source.term, |(_, s)| s.term),
            committed_index: leader.and_then(|(_, s)| s.committed_index),
            members,
        });
    }
    let unreachable = view
        .nodes
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| (*id, e.clone())))
        .collect();
    Report {
        shards,
        unreachable,
    }
}

fn opt(value: Option<u64>) -> String {
    value.map_or("-".into(), |v| v.to_string())
}

pub fn render(report: &Report) -> String {
    let mut rows = vec![vec![
        "SHARD".to_string(),
        "LEADER".into(),
        "TERM".into(),
        "MEMBER".into(),
        "REGION".into(),
        "ROLE".into(),
        "VOTER".into(),
        "APPLIED".into(),
        "LAG".into(),
    ]];
    let with_digest = report
        .shards
        .iter()
        .any(|s| s.members.iter().any(|m| m.digest.is_some()));
    if with_digest {
        rows[0].push("DIGEST".into());
    }
    for shard in &report.shards {
        for (i, m) in shard.members.iter().enumerate() {
            let first = i == 0;
            let mut row = vec![
                if first {
                    shard.shard.clone()
                } else {
                    String::new()
                },
                if first {
                    opt(shard.leader)
                } else {
                    String::new()
                },
                if first {
                    shard.term.to_string()
                } else {
                    String::new()
                },
                m.node.to_string(),
                if m.region.is_empty() {
                    "-".into()
                } else {
                    m.region.clone()
                },
                m.role.clone(),
                if m.voter {
                    "yes".into()
                } else {
                    "learner".into()
                },
                opt(m.applied_index),
                opt(m.lag),
            ];
            if with_digest {
                row.push(
                    m.digest
                        .as_deref()
                        .map_or("-".into(), |d| d[..16.min(d.len())].to_owned()),
                );
            }
            rows.push(row);
        }
        if shard.leader.is_none() {
            rows.push(vec![format!(
                "  ! {} has no leader: writes fail until a majority of its voters is up",
                shard.shard
            )]);
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| {
            rows.iter()
                .filter(|r| r.len() > 1)
                .map(|r| r[c].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        if row.len() == 1 {
            out.push_str(&row[0]);
        } else {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
        }
        out.push('\n');
    }
    for (id, problem) in &report.unreachable {
        out.push_str(&format!("node {id} unreachable: {problem}\n"));
    }
    out
}

pub async fn run(
    admin: &Admin,
    shard: Option<&str>,
    json: bool,
    digest: bool,
) -> Result<(), String> {
    let view = admin.view(digest).await;
    if view.reachable().next().is_none() {
        let problems: Vec<String> = view
            .nodes
            .iter()
            .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("node {id}: {e}")))
            .collect();
        return Err(format!("no node answered:\n  {}", problems.join("\n  ")));
    }
    let report = report(&view, shard);
    if let Some(shard) = shard {
        if report.shards.is_empty() {
            return Err(format!(
                "no reachable node hosts shard {shard:?}; shards: {}",
                view.shard_names().join(", ")
            ));
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}
