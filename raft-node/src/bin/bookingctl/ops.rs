//! Leadership, membership, snapshots, backup and restore.

use crate::admin::Admin;
use indicatif::{ProgressBar, ProgressStyle};
use raft_node::types::NodeId;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a leadership transfer may take before bookingctl gives up waiting.
const TRANSFER_WAIT: Duration = Duration::from_secs(10);
/// Adding a learner waits for it to catch up; a large shard takes a while.
const LEARNER_WAIT: Duration = Duration::from_secs(300);
const BACKUP_WAIT: Duration = Duration::from_secs(600);

pub fn spinner(message: impl Into<String>) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message.into());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

pub struct Transferred {
    pub from: NodeId,
    pub to: NodeId,
    /// From the request until the target reported itself leader.
    pub took: Duration,
}

/// The voter (other than `leader`) with the least lag in the leader's view, among
/// reachable nodes.
pub fn best_target(
    admin: &Admin,
    view: &crate::admin::ClusterView,
    shard: &str,
    leader: NodeId,
) -> Option<NodeId> {
    let (_, status) = view.leader(shard)?;
    status
        .members
        .iter()
        .filter(|m| m.voter && m.id != leader)
        .filter(|m| {
            view.nodes.get(&m.id).is_some_and(|r| r.is_ok()) && admin.nodes.contains_key(&m.id)
        })
        .min_by_key(|m| (m.lag.unwrap_or(u64::MAX), m.id))
        .map(|m| m.id)
}

/// Transfers `shard`'s leadership and waits until the target leads.
pub async fn transfer_quiet(
    admin: &Admin,
    shard: &str,
    to: Option<NodeId>,
) -> Result<Transferred, String> {
    let view = admin.view(false).await;
    let (leader, status) = view.leader(shard).ok_or_else(|| {
        format!("shard {shard} has no leader right now (or its leader is not among the nodes given); wait for an election and check `bookingctl status --shard {shard}`")
    })?;
    let target = match to {
        Some(to) => {
            if !status.members.iter().any(|m| m.id == to && m.voter) {
                return Err(format!(
                    "node {to} is not a voter of {shard}; voters: {}",
                    status
                        .members
                        .iter()
                        .filter(|m| m.voter)
                        .map(|m| m.id.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            to
        }
        None => best_target(admin, &view, shard, leader)
            .ok_or_else(|| format!("shard {shard} has no other reachable voter to lead it"))?,
    };
    if target == leader {
        return Ok(Transferred {
            from: leader,
            to: target,
            took: Duration::ZERO,
        });
    }
    admin.addr(target)?;
    let started = Instant::now();
    admin
        .post(
            leader,
            &format!("/admin/shards/{shard}/transfer-leader"),
            &json!({ "to": target }),
            admin.timeout,
        )
        .await?;
    while started.elapsed() < TRANSFER_WAIT {
        if let Ok(status) = admin.status(target, false).await {
            if status
                .shards
                .iter()
                .any(|s| s.shard == shard && s.state == "Leader")
            {
                return Ok(Transferred {
                    from: leader,
                    to: target,
                    took: started.elapsed(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(format!(
        "node {target} did not become leader of {shard} within {TRANSFER_WAIT:?}; it may lag or be cut off: `bookingctl status --shard {shard}`"
    ))
}

pub async fn transfer(
    admin: &Admin,
    shard: &str,
    to: Option<NodeId>,
) -> Result<Transferred, String> {
    let done = transfer_quiet(admin, shard, to).await?;
    if done.from == done.to {
        println!("node {} already leads {shard}", done.to);
    } else {
        println!(
            "{shard}: leadership moved from node {} to node {} in {} ms",
            done.from,
            done.to,
            done.took.as_millis()
        );
    }
    Ok(done)
}

pub async fn drain(admin: &Admin, node: NodeId) -> Result<(), String> {
    admin.addr(node)?;
    let view = admin.view(false).await;
    let led: Vec<String> = view
        .shard_names()
        .into_iter()
        .filter(|s| view.leader(s).is_some_and(|(id, _)| id == node))
        .collect();
    if led.is_empty() {
        println!("node {node} leads no shard");
        return Ok(());
    }
    let bar = ProgressBar::new(led.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut failures = Vec::new();
    for shard in &led {
        bar.set_message(shard.clone());
        match transfer_quiet(admin, shard, None).await {
            Ok(done) => bar.println(format!(
                "{shard}: node {} -> node {} in {} ms",
                done.from,
                done.to,
                done.took.as_millis()
            )),
            Err(error) => failures.push(format!("{shard}: {error}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if failures.is_empty() {
        println!("node {node} leads nothing now ({} shards moved)", led.len());
        Ok(())
    } else {
        Err(format!(
            "node {node} still leads some shards:\n  {}",
            failures.join("\n  ")
        ))
    }
}

async fn leader_of(
    admin: &Admin,
    shard: &str,
) -> Result<(NodeId, Vec<raft_node::http::MemberStatus>), String> {
    let view = admin.view(false).await;
    let (leader, status) = view.leader(shard).ok_or_else(|| {
        format!("shard {shard} has no reachable leader; check `bookingctl status --shard {shard}`")
    })?;
    Ok((leader, status.members.clone()))
}

pub async fn member_add(
    admin: &Admin,
    shard: &str,
    node: NodeId,
    peer_addr: String,
    client_addr: String,
    region: String,
) -> Result<(), String> {
    let (leader, members) = leader_of(admin, shard).await?;
    if members.iter().any(|m| m.id == node) {
        return Err(format!(
            "node {node} is already a member of {shard}; `bookingctl member promote` makes a learner a voter"
        ));
    }
    let mut nodes: Vec<(Option<NodeId>, String)> = admin
        .nodes
        .iter()
        .map(|(id, a)| (Some(*id), a.clone()))
        .collect();
    if !admin.nodes.contains_key(&node) {
        nodes.push((Some(node), client_addr.clone()));
    }
    let with_new = Admin::connect(nodes, admin.timeout, admin.tls.clone())
        .await
        .map(|mut with_new| {
            with_new.operator = admin.operator.clone();
            with_new
        })?;
    with_new
        .post(
            node,
            "/admin/shards",
            &json!({ "name": shard, "members": {} }),
            admin.timeout,
        )
        .await
        .map_err(|e| format!("creating the replica on node {node}: {e}"))?;
    let bar = spinner(format!(
        "node {node} joins {shard} as a learner and catches up"
    ));
    let result = with_new
        .post(
            leader,
            &format!("/admin/shards/{shard}/learners"),
            &json!({
                "node_id": node,
                "info": { "peer_addr": peer_addr, "client_addr": client_addr, "region": region }
            }),
            LEARNER_WAIT,
        )
        .await;
    bar.finish_and_clear();
    let answer = result?;
    println!(
        "node {node} is a learner of {shard} (membership entry {}); promote it when its lag is small: bookingctl member promote --shard {shard} --node {node}",
        answer.get("index").map_or("?".into(), |v| v.to_string())
    );
    Ok(())
}

async fn change_voters(
    admin: &Admin,
    shard: &str,
    leader: NodeId,
    voters: Vec<NodeId>,
) -> Result<u64, String> {
    let answer = admin
        .post(
            leader,
            &format!("/admin/shards/{shard}/membership"),
            &json!({ "voters": voters }),
            LEARNER_WAIT,
        )
        .await?;
    Ok(answer.get("index").and_then(|v| v.as_u64()).unwrap_or(0))
}

pub async fn member_promote(admin: &Admin, shard: &str, node: NodeId) -> Result<(), String> {
    let (leader, members) = leader_of(admin, shard).await?;
    let Some(member) = members.iter().find(|m| m.id == node) else {
        return Err(format!(
            "node {node} is not a member of {shard}; add it first: bookingctl member add --shard {shard} --node {node} ..."
        ));
    };
    if member.voter {
        println!("node {node} already votes in {shard}");
        return Ok(());
    }
    if let Some(lag) = member.lag.filter(|lag| *lag > 1_000) {
        return Err(format!(
            "node {node} is {lag} entries behind the leader of {shard}; wait until it catches up (bookingctl status --shard {shard}) and retry"
        ));
    }
    let mut voters: Vec<NodeId> = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    voters.push(node);
    voters.sort();
    let index = change_voters(admin, shard, leader, voters.clone()).await?;
    println!("{shard}: voters are now {voters:?} (membership entry {index})");
    if voters.len().is_multiple_of(2) {
        println!(
            "note: {} voters tolerate no more failures than {}; add or remove one",
            voters.len(),
            voters.len() - 1
        );
    }
    Ok(())
}

pub async fn member_remove(admin: &Admin, shard: &str, node: NodeId) -> Result<(), String> {
    let (leader, members) = leader_of(admin, shard).await?;
    if !members.iter().any(|m| m.id == node && m.voter) {
        return Err(format!("node {node} is not a voter of {shard}"));
    }
    if node == leader {
        return Err(format!(
            "node {node} leads {shard}; move leadership first: bookingctl leader transfer --shard {shard}"
        ));
    }
    let voters: Vec<NodeId> = members
        .iter()
        .filter(|m| m.voter && m.id != node)
        .map(|m| m.id)
        .collect();
    if voters.is_empty() {
        return Err(format!(
            "removing node {node} would leave {shard} without voters"
        ));
    }
    let index = change_voters(admin, shard, leader, voters.clone()).await?;
    println!("{shard}: node {node} removed; voters are now {voters:?} (membership entry {index})");
    Ok(())
}

pub async fn snapshot(
    admin: &Admin,
    shard: Option<&str>,
    node: Option<NodeId>,
) -> Result<(), String> {
    let view = admin.view(false).await;
    let shards: Vec<String> = match shard {
        Some(shard) => vec![shard.to_owned()],
        None => view.shard_names(),
    };
    let mut done = 0;
    let mut failures = Vec::new();
    for shard in &shards {
        let hosts: Vec<NodeId> = view
            .replicas(shard)
            .map(|(id, _)| id)
            .filter(|id| node.is_none_or(|n| n == *id))
            .collect();
        if hosts.is_empty() {
            failures.push(format!("{shard}: no reachable node hosts it"));
        }
        for host in hosts {
            match admin
                .post(
                    host,
                    &format!("/admin/shards/{shard}/snapshot"),
                    &json!({}),
                    admin.timeout,
                )
                .await
            {
                Ok(_) => {
                    done += 1;
                    println!("{shard}: snapshot triggered on node {host}");
                }
                Err(error) => failures.push(error),
            }
        }
    }
    if failures.is_empty() {
        println!("{done} snapshots triggered (they build in the background; each node's `/admin/status` shows the shards' `snapshot_index`)");
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

pub async fn backup(
    admin: &Admin,
    node: NodeId,
    name: Option<String>,
    json: bool,
) -> Result<(), String> {
    let name = name.unwrap_or_else(|| format!("backup-{node}-{}", raft_node::node::now_ms()));
    raft_node::backup::check_name(&name).map_err(|e| e.to_string())?;
    let bar = spinner(format!(
        "node {node}: checkpoint and ledger snapshots into backups/{name}"
    ));
    let result = admin
        .post(node, "/admin/backup", &json!({ "name": name }), BACKUP_WAIT)
        .await;
    bar.finish_and_clear();
    let answer = result?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let manifest: raft_node::backup::BackupManifest = serde_json::from_value(
        answer.get("manifest").cloned().unwrap_or_default(),
    )
    .map_err(|e| format!("node {node} answered a backup this bookingctl cannot read: {e}"))?;
    let path = answer.get("path").and_then(|p| p.as_str()).unwrap_or("?");
    println!("backup {name} of node {node} written on its host at {path}");
    println!(
        "(applying paused {} ms while the cut was taken; verified by digest on the node)",
        manifest.pause_ms
    );
    for shard in &manifest.shards {
        println!(
            "  {:<12} applied {:>8}  digest {}  {} bytes",
            shard.shard,
            shard.applied_index,
            &shard.digest[..16],
            shard.bytes
        );
    }
    println!("copy it off the host; restore with: bookingctl restore --from <copy> --data-dir <empty dir of the stopped node>");
    Ok(())
}

/// Checks a backup offline (digests, files); writes nothing and needs no cluster.
pub fn verify(from: &Path) -> Result<(), String> {
    let bar = spinner(format!("verifying {}", from.display()));
    let result = raft_node::backup::verify(from);
    bar.finish_and_clear();
    let manifest = result.map_err(|e| e.to_string())?;
    print_manifest(&manifest, "verified");
    Ok(())
}

/// Restores a backup into a stopped node's data directory once the cluster confirms the
/// node votes in none of the backup's shards (or, with `whole_cluster`, once no node
/// answers at all).
pub async fn restore(
    admin: &Admin,
    from: &Path,
    data_dir: &Path,
    whole_cluster: bool,
) -> Result<(), String> {
    let manifest = raft_node::backup::read_manifest(from).map_err(|e| e.to_string())?;
    let rejoin = rejoin_allowed(admin, &manifest, whole_cluster).await?;
    let bar = spinner(format!(
        "restoring {} into {}",
        from.display(),
        data_dir.display()
    ));
    let from_owned = from.to_path_buf();
    let data_dir_owned = data_dir.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        raft_node::backup::restore(&from_owned, &data_dir_owned, rejoin)
    })
    .await
    .map_err(|e| format!("restore stopped: {e}"))?;
    bar.finish_and_clear();
    let manifest = result.map_err(|e| e.to_string())?;
    print_manifest(&manifest, "restored and verified");
    match rejoin {
        raft_node::backup::Rejoin::AsNewLearner => println!(
            "start node {} on {}: it starts as a non-voter (it refuses while any shard counts \
             it a voter); then for every shard: bookingctl member add, then bookingctl member \
             promote (deploy/runbooks/restore-from-backup.md)",
            manifest.node_id,
            data_dir.display()
        ),
        raft_node::backup::Rejoin::WholeCluster => println!(
            "start node {} on {} once every node is restored from the same backup set",
            manifest.node_id,
            data_dir.display()
        ),
    }
    Ok(())
}

/// Asks every node given whether the backup's node still votes in any of its shards.
async fn rejoin_allowed(
    admin: &Admin,
    manifest: &raft_node::backup::BackupManifest,
    whole_cluster: bool,
) -> Result<raft_node::backup::Rejoin, String> {
    let node = manifest.node_id;
    let view = admin.view(false).await;
    let answering: Vec<NodeId> = view.reachable().map(|status| status.node).collect();
    if answering.contains(&node) {
        return Err(format!(
            "node {node} answers at {}: stop it before restoring into its data directory",
            admin.addr(node)?
        ));
    }
    if whole_cluster {
        if !answering.is_empty() {
            return Err(format!(
                "--whole-cluster, but nodes {answering:?} answer: a whole-cluster restore is \
                 for when every node is lost and restored from one backup set. To restore \
                 node {node} alone, remove it from every shard's voters (bookingctl member \
                 remove) and restore without --whole-cluster"
            ));
        }
        return Ok(raft_node::backup::Rejoin::WholeCluster);
    }
    if answering.is_empty() {
        return Err(format!(
            "no node of the cluster answers, so none can confirm that node {node} was removed \
             from the voters; if the whole cluster is being restored from one backup set, add \
             --whole-cluster"
        ));
    }
    let mut voter_of = Vec::new();
    for shard in &manifest.shards {
        let Some((leader, status)) = view.leader(&shard.shard) else {
            return Err(format!(
                "shard {} has no reachable leader, so none can confirm that node {node} was \
                 removed from its voters; restore once it has one",
                shard.shard
            ));
        };
        if status.members.iter().any(|m| m.id == node && m.voter) {
            voter_of.push(format!("{} (says its leader, node {leader})", shard.shard));
        }
    }
    if !voter_of.is_empty() {
        let first = &manifest.shards[0].shard;
        return Err(format!(
            "node {node} is still a voter of {}: a restored voter rejoins with an older log \
             and vote and can lose acknowledged writes. Remove it first, for every shard: \
             bookingctl member remove --shard {first} --node {node}; then restore, start it, \
             bookingctl member add and bookingctl member promote \
             (deploy/runbooks/restore-from-backup.md)",
            voter_of.join(", ")
        ));
    }
    Ok(raft_node::backup::Rejoin::AsNewLearner)
}

fn print_manifest(manifest: &raft_node::backup::BackupManifest, what: &str) {
    println!(
        "backup of node {} (cluster {}) {what}: {} shards",
        manifest.node_id,
        manifest.cluster_id,
        manifest.shards.len()
    );
    for shard in &manifest.shards {
        println!(
            "  {:<12} applied {:>8}  digest {}  ok",
            shard.shard,
            shard.applied_index,
            &shard.digest[..shard.digest.len().min(16)]
        );
    }
}
