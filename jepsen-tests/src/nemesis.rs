//! The fault schedule: `kill` crashes the leader of the city shard (the in-process
//! analogue of kill -9: servers and Raft tasks aborted with no orderly shutdown), keeps
//! it down for a while, and restarts it on its old addresses and data. Waits and
//! downtimes come from the run's seed.
//!
//! The nemesis owns the cluster while it runs and hands it back healed: every node
//! restarted, so the final reads see the whole cluster.

use crate::history::{NemesisValue, OpType, Process, Recorder, F};
use api::demo::DemoCluster;
use raft_node::config::NodeConfig;
use raft_node::server::RunningNode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Which faults to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NemesisKind {
    None,
    /// Crash the city shard's leader and restart it, over and over.
    Kill,
}

/// Attempts to get a restarted node's ports and RocksDB back; a crashed node's tasks
/// may hold them for a moment.
const RESTART_ATTEMPTS: u32 = 40;
const RESTART_RETRY: Duration = Duration::from_millis(250);

pub struct Nemesis {
    pub cluster: DemoCluster,
    /// How to start each node again: the same configuration it first ran with.
    configs: BTreeMap<u64, NodeConfig>,
    recorder: Arc<Recorder>,
    shard: String,
    rng: fastrand::Rng,
    /// Nodes crashed and not yet restarted.
    down: Vec<u64>,
    pub kills: usize,
}

impl Nemesis {
    /// `data_dir` is where `DemoCluster::start` put the nodes (`node-{id}` under it).
    pub fn new(
        cluster: DemoCluster,
        data_dir: &Path,
        timing: raft_node::config::RaftTiming,
        recorder: Arc<Recorder>,
        shard: &str,
        seed: u64,
    ) -> Nemesis {
        let configs = cluster
            .nodes
            .iter()
            .map(|running| {
                let id = running.node.id();
                let config = NodeConfig {
                    node_id: id,
                    data_dir: data_dir.join(format!("node-{id}")),
                    cluster: cluster.file.clone(),
                    cluster_secret: running.node.transport_config().secret,
                    raft: timing.clone(),
                };
                (id, config)
            })
            .collect();
        Nemesis {
            cluster,
            configs,
            recorder,
            shard: shard.into(),
            // Offset by "nemesis" in ASCII so its stream differs from every client's.
            rng: fastrand::Rng::with_seed(seed.wrapping_add(0x006E_656D_6573_6973)),
            down: Vec::new(),
            kills: 0,
        }
    }

    /// The node that leads the shard now, if any.
    pub fn leader(&self) -> Option<u64> {
        self.cluster
            .nodes
            .iter()
            .find(|n| {
                n.node
                    .shard(&self.shard)
                    .is_ok_and(|shard| shard.raft.is_leader())
            })
            .map(|n| n.node.id())
    }

    /// Waits up to `within` for the shard to have a leader.
    pub async fn wait_leader(&self, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills and restarts the leader until `until`: wait `interval` (0.5x to 1.5x), kill,
    /// stay down for a third of that, restart.
    pub async fn run_kills(&mut self, until: Instant, interval: Duration) -> Result<(), String> {
        loop {
            let wait = interval.mul_f64(0.5 + self.rng.f64());
            if Instant::now() + wait >= until {
                break;
            }
            tokio::time::sleep(wait).await;
            let Some(leader) = self.leader() else {
                self.log(F::Kill, None, Some("no leader to kill".into()));
                continue;
            };
            self.kill(leader).await;
            let downtime = interval.mul_f64(0.2 + 0.3 * self.rng.f64());
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(downtime.min(left)).await;
            self.restart(leader).await?;
        }
        Ok(())
    }

    fn log(&self, f: F, node: Option<u64>, note: Option<String>) {
        let value = NemesisValue {
            node,
            shard: self.shard.clone(),
            note,
        };
        let value = serde_json::to_value(value).unwrap_or_default();
        self.recorder
            .record(Process::Nemesis, OpType::Info, f, value, None);
    }

    pub async fn kill(&mut self, id: u64) {
        let Some(position) = self.cluster.nodes.iter().position(|n| n.node.id() == id) else {
            return;
        };
        let value = NemesisValue {
            node: Some(id),
            shard: self.shard.clone(),
            note: None,
        };
        let value = serde_json::to_value(value).unwrap_or_default();
        self.recorder
            .record(Process::Nemesis, OpType::Invoke, F::Kill, value, None);
        let node = self.cluster.nodes.remove(position);
        node.crash().await;
        self.down.push(id);
        self.kills += 1;
        self.log(F::Kill, Some(id), Some("crashed".into()));
    }

    /// Starts a crashed node again on its addresses and data.
    pub async fn restart(&mut self, id: u64) -> Result<(), String> {
        let config = self
            .configs
            .get(&id)
            .cloned()
            .ok_or(format!("node {id} is not in this cluster"))?;
        let value = NemesisValue {
            node: Some(id),
            shard: self.shard.clone(),
            note: None,
        };
        let value = serde_json::to_value(value).unwrap_or_default();
        self.recorder
            .record(Process::Nemesis, OpType::Invoke, F::Restart, value, None);
        let entry = config
            .cluster
            .node(id)
            .cloned()
            .ok_or(format!("node {id} is not in the cluster file"))?;
        let mut last_error = String::new();
        for _ in 0..RESTART_ATTEMPTS {
            match start(&config, &entry.peer_addr, &entry.client_addr).await {
                Ok(node) => {
                    self.cluster.nodes.push(node);
                    self.down.retain(|down| *down != id);
                    self.log(F::Restart, Some(id), Some("started".into()));
                    return Ok(());
                }
                Err(error) => last_error = error,
            }
            tokio::time::sleep(RESTART_RETRY).await;
        }
        self.log(F::Restart, Some(id), Some(format!("failed: {last_error}")));
        Err(format!("node {id} did not restart: {last_error}"))
    }

    /// Restarts every node still down.
    pub async fn heal(&mut self) -> Result<(), String> {
        for id in self.down.clone() {
            self.restart(id).await?;
        }
        Ok(())
    }

    /// Hands the cluster back.
    pub fn into_cluster(self) -> DemoCluster {
        self.cluster
    }
}

async fn start(config: &NodeConfig, peer: &str, client: &str) -> Result<RunningNode, String> {
    let peer = TcpListener::bind(peer)
        .await
        .map_err(|e| format!("bind {peer}: {e}"))?;
    let client = TcpListener::bind(client)
        .await
        .map_err(|e| format!("bind {client}: {e}"))?;
    RunningNode::start(config.clone(), peer, client)
        .await
        .map_err(|e| e.to_string())
}
