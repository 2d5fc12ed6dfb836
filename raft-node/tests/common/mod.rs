//! A test cluster of raft-nodes in this process, on real loopback sockets (port 0) and
//! real RocksDB in a temporary directory that is removed when the cluster drops.

#![allow(dead_code)]

use raft_node::client::ClusterClient;
use raft_node::config::{ClusterFile, NodeConfig, NodeEntry, RaftTiming, ShardEntry};
use raft_node::protocol::{Consistency, ReadReply, ReadRequest};
use raft_node::server::RunningNode;
use raft_node::types::NodeId;
use state_machine::testkit::{create_theater, publish_show, screen};
use state_machine::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub const SECRET: &[u8] = b"test-cluster-secret-0123456789";
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub fn timing() -> RaftTiming {
    RaftTiming {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_after_entries: 100,
        keep_entries_after_snapshot: 10,
        // Small: restarts then recover from recycled WAL files, and starts stay quick.
        log_wal_prefill_mib: 1,
        // Small: every snapshot a follower needs goes in many chunks.
        snapshot_chunk_kib: 4,
        snapshot_send_mib_per_s: 0,
    }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub file: ClusterFile,
    /// Every node's Raft timing (`timing()` unless started with `start_with`).
    pub timing: RaftTiming,
    /// Ledger limits of one node's cluster file where they differ from the others'
    /// (taken at the node's next start).
    pub node_limits: BTreeMap<NodeId, Limits>,
    pub nodes: BTreeMap<NodeId, RunningNode>,
    pub client: ClusterClient,
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

impl TestCluster {
    pub async fn start(node_count: u64, shards: &[&str]) -> TestCluster {
        Self::start_with(node_count, shards, timing()).await
    }

    pub async fn start_with(node_count: u64, shards: &[&str], timing: RaftTiming) -> TestCluster {
        let mut listeners = BTreeMap::new();
        let mut nodes = Vec::new();
        for id in 1..=node_count {
            let (peer, client) = (listener().await, listener().await);
            nodes.push(NodeEntry {
                id,
                peer_addr: peer.local_addr().unwrap().to_string(),
                client_addr: client.local_addr().unwrap().to_string(),
                region: format!("region-{}", (id - 1) % 3),
            });
            listeners.insert(id, (peer, client));
        }
        let members: Vec<NodeId> = (1..=node_count).collect();
        let file = ClusterFile {
            cluster_id: "test".into(),
            nodes,
            shards: shards
                .iter()
                .map(|name| ShardEntry {
                    name: (*name).into(),
                    members: members.clone(),
                })
                .collect(),
            limits: Limits::default(),
        };
        let client = ClusterClient::new(
            file.nodes
                .iter()
                .map(|n| (n.id, n.client_addr.clone()))
                .collect(),
        );
        let mut cluster = TestCluster {
            dir: tempfile::tempdir().unwrap(),
            file,
            timing,
            node_limits: BTreeMap::new(),
            nodes: BTreeMap::new(),
            client,
        };
        for (id, (peer, client)) in listeners {
            let node = RunningNode::start(cluster.config(id), peer, client)
                .await
                .expect("start node");
            cluster.nodes.insert(id, node);
        }
        for shard in shards {
            cluster.wait_leader(shard).await;
        }
        cluster
    }

    pub fn config(&self, id: NodeId) -> NodeConfig {
        let mut cluster = self.file.clone();
        if let Some(limits) = self.node_limits.get(&id) {
            cluster.limits = limits.clone();
        }
        NodeConfig {
            node_id: id,
            data_dir: self.dir.path().join(format!("node-{id}")),
            cluster,
            cluster_secret: SECRET.to_vec(),
            raft: self.timing.clone(),
            tls: None,
        }
    }

    pub fn entry(&self, id: NodeId) -> NodeEntry {
        self.file.node(id).cloned().unwrap()
    }

    /// Restarts a stopped node on its old addresses and data.
    pub async fn restart(&mut self, id: NodeId) {
        self.try_restart(id).await.expect("restart node");
    }

    /// Restarts a stopped node on its old addresses and data, returning the node's
    /// refusal to start (if it refuses) instead of failing the test.
    pub async fn try_restart(&mut self, id: NodeId) -> Result<(), raft_node::node::NodeError> {
        let entry = self.entry(id);
        let peer = bind_retrying(&entry.peer_addr).await;
        let client = bind_retrying(&entry.client_addr).await;
        let node = RunningNode::start(self.config(id), peer, client).await?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Asserts that every request id in `request_ids` has its outcome recorded in
    /// `shard`, read at linearizable consistency through the client protocol (so through
    /// the current leader): no acknowledged write was lost.
    pub async fn assert_all_recorded(&self, shard: &str, request_ids: &[String]) {
        for request_id in request_ids {
            let request = ReadRequest {
                query: Query::Request {
                    request_id: RequestId(request_id.clone()),
                },
                consistency: Consistency::Linearizable,
                min_index: None,
            };
            let reply = self
                .client
                .read(shard, &request, &[], WRITE_TIMEOUT)
                .await
                .expect("linearizable read");
            match reply {
                ReadReply::Done {
                    result: Ok(QueryResponse::Request(Some(_))),
                    ..
                } => {}
                other => panic!("acknowledged write {request_id} of {shard} is lost: {other:?}"),
            }
        }
    }

    pub async fn crash(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            node.crash().await;
        }
    }

    pub async fn leader(&self, shard: &str) -> Option<NodeId> {
        for node in self.nodes.values() {
            let shard = node.node.shard(shard).ok()?;
            if shard.raft.is_leader() {
                return Some(node.node.id());
            }
        }
        None
    }

    /// Moves `shard`'s leadership from `from` to `to` through the admin API and waits
    /// until `to` leads.
    pub async fn transfer_leader(&self, shard: &str, from: NodeId, to: NodeId) {
        self.admin_post(
            from,
            shard,
            "transfer-leader",
            serde_json::json!({ "to": to }),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.leader(shard).await != Some(to) {
            assert!(Instant::now() < deadline, "leadership did not move to {to}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Posts `body` to node `node`'s admin endpoint `/admin/shards/{shard}/{action}` and
    /// asserts it succeeded.
    pub async fn admin_post(
        &self,
        node: NodeId,
        shard: &str,
        action: &str,
        body: serde_json::Value,
    ) {
        let url = format!(
            "http://{}/admin/shards/{shard}/{action}",
            self.entry(node).client_addr
        );
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{action}: {:?}",
            response.text().await
        );
    }

    pub async fn wait_leader(&self, shard: &str) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(leader) = self.leader(shard).await {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no leader for {shard} within 15 s");
    }

    pub fn digest(&self, id: NodeId, shard: &str) -> [u8; 32] {
        let shard = self.nodes[&id].node.shard(shard).unwrap();
        let store = shard.store.read().unwrap();
        store.ledger().digest()
    }

    pub fn applied(&self, id: NodeId, shard: &str) -> u64 {
        self.nodes[&id].node.shard(shard).unwrap().applied_index()
    }

    /// Waits until every running replica of `shard` has the same digest.
    pub async fn wait_converged(&self, shard: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let digests: Vec<[u8; 32]> = self
                .nodes
                .keys()
                .map(|id| self.digest(*id, shard))
                .collect();
            let applied: Vec<u64> = self
                .nodes
                .keys()
                .map(|id| self.applied(*id, shard))
                .collect();
            if digests.windows(2).all(|w| w[0] == w[1]) && applied.windows(2).all(|w| w[0] == w[1])
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{shard} did not converge: applied {applied:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn write(
        &self,
        shard: &str,
        request_id: &str,
        command: CommandKind,
    ) -> raft_node::client::WriteDone {
        self.client
            .write(shard, request_id, command, WRITE_TIMEOUT)
            .await
            .expect("write")
    }

    pub async fn read_on(
        &self,
        node: NodeId,
        shard: &str,
        query: Query,
        consistency: Consistency,
    ) -> ReadReply {
        let request = ReadRequest {
            query,
            consistency,
            min_index: None,
        };
        self.nodes[&node]
            .node
            .read(shard, request)
            .await
            .expect("read")
    }

    /// A theater with a 10 x 20 screen and one show; returns the show.
    pub async fn seed_show(&self, shard: &str) -> ShowId {
        let theater = self
            .write(
                shard,
                &format!("{shard}-theater"),
                create_theater(shard, UserId(1), vec![screen("Audi", 10, 20)]),
            )
            .await;
        let Outcome::Applied(Applied::TheaterCreated { theater }) = theater.outcome else {
            panic!("{theater:?}")
        };
        let start = raft_node::node::now_ms() + 48 * 3_600_000;
        let show = self
            .write(
                shard,
                &format!("{shard}-show"),
                publish_show(theater, 0, start, "Pathaan"),
            )
            .await;
        let Outcome::Applied(Applied::ShowPublished { show }) = show.outcome else {
            panic!("{show:?}")
        };
        show
    }

    pub async fn stop_all(mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if let Some(node) = self.nodes.remove(&id) {
                node.stop().await;
            }
        }
    }
}

async fn bind_retrying(addr: &str) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot rebind {addr}");
}

pub fn lock(show: ShowId, user: u64, seats: &[u32]) -> CommandKind {
    CommandKind::LockSeats {
        show,
        user: UserId(user),
        seats: seats.iter().map(|s| SeatId(*s)).collect(),
        ttl_ms: None,
    }
}

impl TestCluster {
    /// Starts node `id` with no shards (it joins shards later as a learner) and adds it
    /// to `file`.
    pub async fn start_extra_node(
        cluster: &TestCluster,
        file: &mut ClusterFile,
        id: NodeId,
    ) -> RunningNode {
        let (peer, client) = (listener().await, listener().await);
        file.nodes.push(NodeEntry {
            id,
            peer_addr: peer.local_addr().unwrap().to_string(),
            client_addr: client.local_addr().unwrap().to_string(),
            region: "region-0".into(),
        });
        let mut config = cluster.config(id);
        config.cluster = file.clone();
        let node = RunningNode::start(config, peer, client)
            .await
            .expect("start extra node");
        node.node
            .add_shard("mumbai", BTreeMap::new())
            .await
            .expect("open the shard replica");
        node
    }
}
