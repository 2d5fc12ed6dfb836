//! The multi-raft host: one process, many shards. It owns each shard's Raft handle and
//! ledger store, routes peer RPCs to the right shard, runs each shard's expiry sweeper,
//! and answers the client protocol's writes and reads.
//!
//! It must not interpret ledger commands (that is `state-machine`'s job) nor speak HTTP
//! (that is `http.rs`).

use crate::clock::{ClockVerdict, ClusterClock, StampBound};
use crate::config::{check_shard_name, ConfigError, NodeConfig};
use crate::fence::{Fence, FenceRecord, RestoredMarker, ShardMembership};
use crate::ledger_sm::{LedgerStateMachine, SharedStore};
use crate::log_store::LogStore;
use crate::network::{decode, method, NetworkFactory};
use crate::protocol::{Consistency, LeaderHint, ReadReply, ReadRequest, WriteReply};
use crate::transport::{PeerClient, RequestHandler, TransportConfig};
use crate::types::{NodeId, NodeInfo, Raft, ShardCommand, TypeConfig};
use futures_util::future::BoxFuture;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::vote::RaftLeaderId;
use openraft::{RaftMetrics, ReadPolicy, ServerState};
use state_machine::codec;
#[cfg(feature = "planted-bugs")]
use state_machine::planted::{self, PlantedBug};
use state_machine::{Command, CommandKind, Durability, LedgerStore, Limits, RequestId};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How long a read waits for the local replica to catch up before giving up.
pub const READ_WAIT: Duration = Duration::from_secs(2);
/// How long a read-index request to the leader may take.
pub const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(2);
/// How often every peer's clock is sampled, and how long a sample may take.
const CLOCK_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);
const CLOCK_SAMPLE_TIMEOUT: Duration = Duration::from_millis(300);
/// Least time between two leadership hand-offs because of clock skew.
const SKEW_TRANSFER_INTERVAL: Duration = Duration::from_secs(2);
/// How often each shard's sweeper and metrics refresher runs.
const SWEEP_INTERVAL: Duration = Duration::from_millis(1_000);
/// How often the fence's log sequence number is raised and the restore marker checked.
const FENCE_INTERVAL: Duration = Duration::from_millis(1_000);
/// How long a restored node's question to one peer about memberships may take, and how
/// many rounds it asks before it gives up when some shard has no answer.
const MEMBERSHIPS_TIMEOUT: Duration = Duration::from_secs(2);
const MEMBERSHIPS_ROUNDS: u32 = 3;

/// The leader's clock, which stamps every command. Replicas never read it in `apply`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("unknown shard {0:?}; GET /admin/status lists the shards of this node")]
    UnknownShard(String),
    /// The node must not start with the data it has (`fence`): the message names why and
    /// the safe order.
    #[error("refusing to start: {0}")]
    Refused(String),
}

/// One shard replica on this node.
pub struct Shard {
    pub name: String,
    pub raft: Raft,
    pub store: SharedStore,
    /// How far this replica, as leader, may move the shard clock (`clock.rs`).
    pub stamp_bound: Arc<StampBound>,
    /// A snapshot being received in chunks.
    pub snapshot_inbox: Arc<crate::snapshot_transfer::Inbox>,
    /// Whether the shard's replicated rules are known to be set (they never unset).
    rules_set: std::sync::atomic::AtomicBool,
}

impl Shard {
    pub fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }

    fn leader_hint(&self) -> Option<LeaderHint> {
        let metrics = self.metrics();
        let leader = metrics.current_leader?;
        let info = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .clone();
        Some(LeaderHint {
            node: leader,
            client_addr: info.client_addr,
        })
    }

    pub fn applied_index(&self) -> u64 {
        self.metrics().last_applied.map_or(0, |log_id| log_id.index)
    }
}

struct Inner {
    id: NodeId,
    info: NodeInfo,
    config: NodeConfig,
    raft_config: Arc<openraft::Config>,
    peers: PeerClient,
    log_db: crate::log_store::LogDb,
    /// Raised as votes and the log move on; checked at open (`fence`).
    fence: Arc<Fence>,
    /// The restore marker while this restored node has not been re-added to every shard
    /// it was restored with.
    restored: std::sync::Mutex<Option<RestoredMarker>>,
    shards: RwLock<BTreeMap<String, Arc<Shard>>>,
    shutdown: watch::Sender<bool>,
    clock: Arc<ClusterClock>,
}

/// The environment variable that shifts a fault-injection build's clock from its
/// first instant, in ms (the Jepsen-style `clock-restart` nemesis); the production
/// build ignores it.
pub const FAULT_CLOCK_OFFSET_VAR: &str = "SEAT_LEDGER_FAULT_CLOCK_OFFSET_MS";

/// A running raft-node: cheap to clone, shared by the HTTP and peer servers.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl Node {
    /// Opens every shard of the cluster file that names this node, bootstrapping the
    /// ones never initialised. Restarting never re-initialises.
    pub async fn open(config: NodeConfig) -> Result<Node, NodeError> {
        config.validate()?;
        let entry = config
            .cluster
            .node(config.node_id)
            .cloned()
            .ok_or_else(|| {
                ConfigError(format!(
                    "node {} missing from the cluster file",
                    config.node_id
                ))
            })?;
        let raft_config = Arc::new(config.raft.to_openraft()?);
        let mut transport = TransportConfig::new(
            config.cluster.cluster_id.clone(),
            config.cluster_secret.clone(),
        );
        transport.tls = config.tls.clone();
        std::fs::create_dir_all(config.data_dir.join("shards"))
            .map_err(|e| NodeError::Storage(format!("{}: {e}", config.data_dir.display())))?;
        // Blocking: RocksDB's open and, for a new node, the WAL prefill (~0.1 s).
        let log_path = config.data_dir.join("raft-log");
        let prefill = config.raft.log_wal_prefill_bytes();
        let log_db =
            tokio::task::spawn_blocking(move || crate::log_store::open_db(log_path, prefill))
                .await
                .map_err(|e| NodeError::Storage(format!("opening the raft log: {e}")))?
                .map_err(|e| NodeError::Storage(e.to_string()))?;
        let fence = open_fence(&config, &log_db).await?;
        let peers = PeerClient::new(transport, config.node_id);
        let restored = check_restored(&config, &peers).await?;
        let (shutdown, _) = watch::channel(false);
        let clock = Arc::new(ClusterClock::default());
        #[cfg(feature = "fault-injection")]
        if let Ok(value) = std::env::var(FAULT_CLOCK_OFFSET_VAR) {
            let offset: i64 = value.parse().map_err(|_| {
                ConfigError(format!("{FAULT_CLOCK_OFFSET_VAR}={value:?}: expected ms"))
            })?;
            tracing::warn!(offset, "clock offset from the start (fault injection)");
            clock.set_fault_offset_ms(offset);
        }
        let node = Node {
            inner: Arc::new(Inner {
                id: config.node_id,
                info: crate::config::ClusterFile::node_info(&entry),
                peers,
                raft_config,
                log_db,
                fence,
                restored: std::sync::Mutex::new(restored),
                shards: RwLock::new(BTreeMap::new()),
                shutdown,
                clock,
                config,
            }),
        };
        let shards = node.inner.config.cluster.shards.clone();
        for shard in shards {
            if shard.members.contains(&node.inner.id) {
                let members = node.inner.config.cluster.members(&shard);
                node.add_shard(&shard.name, members).await?;
            }
        }
        tokio::spawn(node.clone().sample_clocks());
        tokio::spawn(node.clone().keep_fence());
        Ok(node)
    }

    /// Raises the fence's log sequence number to what the log has made durable, and
    /// removes the restore marker once this node has been re-added to every shard it was
    /// restored with, every `FENCE_INTERVAL` until shutdown.
    async fn keep_fence(self) {
        let mut shutdown = self.shutdown_signal();
        loop {
            let inner = &self.inner;
            if inner.log_db.latest_sequence() > inner.fence.log_sequence() {
                let raised = match inner.log_db.durable_sequence().await {
                    Ok(sequence) => inner.fence.raise_sequence(sequence),
                    Err(error) => Err(error.to_string()),
                };
                if let Err(error) = raised {
                    tracing::error!(%error, "cannot raise the fence");
                }
            }
            self.clear_restored_when_readded();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(FENCE_INTERVAL) => {}
            }
        }
    }

    /// Removes the restore marker once, for every shard of the marker, this replica holds
    /// a membership naming this node at an index after the backup's: it was re-added.
    fn clear_restored_when_readded(&self) {
        let Ok(mut restored) = self.inner.restored.lock() else {
            return;
        };
        let Some(marker) = restored.as_ref() else {
            return;
        };
        let readded = marker.shards.iter().all(|(name, &backup_index)| {
            self.shard(name).is_ok_and(|shard| {
                let metrics = shard.metrics();
                let config = &metrics.membership_config;
                let index = config.log_id().as_ref().map_or(0, |id| id.index);
                index > backup_index && config.membership().get_node(&self.id()).is_some()
            })
        });
        if !readded {
            return;
        }
        match crate::fence::clear_marker(self.data_dir()) {
            Ok(()) => {
                tracing::info!(
                    backup = marker.backup,
                    "re-added after the restore; marker removed"
                );
                *restored = None;
            }
            Err(error) => tracing::error!(%error, "cannot remove the restore marker"),
        }
    }

    /// This node's view of every hosted shard's membership (the `MEMBERSHIPS` peer method).
    fn memberships(&self) -> Vec<ShardMembership> {
        self.shards()
            .iter()
            .map(|shard| {
                let metrics = shard.metrics();
                let config = &metrics.membership_config;
                ShardMembership {
                    shard: shard.name.clone(),
                    membership_index: config.log_id().as_ref().map_or(0, |id| id.index),
                    voters: config.membership().voter_ids().collect(),
                }
            })
            .collect()
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This node's configuration (cluster file, TLS); never prints the secret.
    pub fn config(&self) -> &crate::config::NodeConfig {
        &self.inner.config
    }

    pub fn info(&self) -> &NodeInfo {
        &self.inner.info
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.config.cluster.limits
    }

    /// Where this node keeps its Raft log and ledger stores.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.inner.config.data_dir
    }

    pub fn cluster_id(&self) -> &str {
        &self.inner.config.cluster.cluster_id
    }

    /// The RocksDB instance holding every shard's Raft log and vote (backups checkpoint it).
    pub fn log_db(&self) -> &Arc<rocksdb::DB> {
        self.inner.log_db.db()
    }

    pub fn transport_config(&self) -> TransportConfig {
        let mut transport = TransportConfig::new(
            self.inner.config.cluster.cluster_id.clone(),
            self.inner.config.cluster_secret.clone(),
        );
        transport.tls = self.inner.config.tls.clone();
        transport
    }

    /// The TLS settings of this node, if it runs with TLS.
    pub fn tls(&self) -> Option<&crate::tls::ClusterTls> {
        self.inner.config.tls.as_ref()
    }

    pub fn shard(&self, name: &str) -> Result<Arc<Shard>, NodeError> {
        let shards = self
            .inner
            .shards
            .read()
            .map_err(|_| NodeError::Storage("poisoned".into()))?;
        shards
            .get(name)
            .cloned()
            .ok_or_else(|| NodeError::UnknownShard(name.to_owned()))
    }

    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.inner
            .shards
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Opens a shard replica on this node. When `members` includes this node and the
    /// shard has never been initialised, the lowest-numbered member initialises it; a
    /// replica added later as a learner passes no members.
    pub async fn add_shard(
        &self,
        name: &str,
        members: BTreeMap<NodeId, NodeInfo>,
    ) -> Result<Arc<Shard>, NodeError> {
        check_shard_name(name)?;
        if let Ok(existing) = self.shard(name) {
            return Ok(existing);
        }
        if self.shards().len() >= crate::config::SHARDS_PER_NODE_MAX {
            return Err(ConfigError("this node hosts the maximum number of shards".into()).into());
        }
        let inner = &self.inner;
        let path = inner.config.data_dir.join("shards").join(name);
        let limits = inner.config.cluster.limits.clone();
        // Blocking: RocksDB's open, loading the state and checking its invariants take
        // seconds for a large shard, which must not stall the runtime's other shards.
        let store = tokio::task::spawn_blocking(move || {
            LedgerStore::open(&path, limits, Durability::Buffered)
        })
        .await
        .map_err(|e| NodeError::Storage(format!("shard {name}: {e}")))?
        .map_err(|e| NodeError::Storage(format!("shard {name}: {e}")))?;
        if let Some(file) = store.redone_install() {
            tracing::warn!(
                shard = name,
                file = %file.display(),
                "finished a snapshot install that a stopped process left half done"
            );
        }
        // Snapshot files of an earlier process (sent, being received, or the one just
        // redone) are of no use now.
        let snapshot_dir = inner.config.data_dir.join("snapshots").join(name);
        if let Err(error) = std::fs::remove_dir_all(&snapshot_dir) {
            if error.kind() != std::io::ErrorKind::NotFound {
                return Err(NodeError::Storage(format!(
                    "shard {name}: clearing {}: {error}",
                    snapshot_dir.display()
                )));
            }
        }
        let store: SharedStore = Arc::new(RwLock::new(store));
        let stamp_bound = Arc::new(StampBound::default());
        let state_machine = LedgerStateMachine::new(store.clone(), snapshot_dir.join("out"))
            .map_err(|e| NodeError::Storage(format!("shard {name}: {e}")))?
            .with_stamp_bound(stamp_bound.clone(), inner.clock.clone());
        let fence = inner.fence.clone();
        let log = LogStore::new(inner.log_db.clone(), name)
            .map_err(|e| NodeError::Storage(format!("shard {name}: {e}")))?
            .with_vote_hook(Arc::new(move |shard: &str, vote: &crate::network::Vote| {
                fence
                    .raise_term(shard, vote.leader_id().term())
                    .map_err(std::io::Error::other)
            }));
        let network = NetworkFactory {
            shard: name.to_owned(),
            client: inner.peers.clone(),
            snapshots: inner.config.raft.snapshot_sending(),
        };
        let raft = Raft::new(
            inner.id,
            inner.raft_config.clone(),
            network,
            log,
            state_machine,
        )
        .await
        .map_err(|e| NodeError::Raft(format!("shard {name}: {e}")))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let bootstrapper = members.keys().next() == Some(&inner.id);
        if !initialized && bootstrapper {
            tracing::info!(shard = name, node = inner.id, "initialising shard");
            if let Err(error) = raft.initialize(members).await {
                // Another process may have initialised it meanwhile; that is fine.
                tracing::warn!(shard = name, %error, "initialise refused");
            }
        }
        let shard = Arc::new(Shard {
            name: name.to_owned(),
            raft,
            store,
            stamp_bound,
            snapshot_inbox: Arc::new(crate::snapshot_transfer::Inbox::new(
                snapshot_dir.join("in"),
            )),
            rules_set: Default::default(),
        });
        inner
            .shards
            .write()
            .map_err(|_| NodeError::Storage("poisoned".into()))?
            .insert(name.to_owned(), shard.clone());
        tokio::spawn(sweep(self.clone(), shard.clone()));
        Ok(shard)
    }

    /// Proposes a command on the shard if this node leads it; the leader stamps the
    /// time.
    ///
    /// A shard without replicated rules gets this leader's configured ones first
    /// (`CommandKind::SetLimits`), so no command is applied under per-replica rules.
    pub async fn write(
        &self,
        shard_name: &str,
        request_id: Option<String>,
        kind: CommandKind,
    ) -> Result<WriteReply, NodeError> {
        let shard = self.shard(shard_name)?;
        if !matches!(kind, CommandKind::SetLimits { .. }) && !self.rules_set(&shard) {
            let limits = self.limits().clone();
            let set = CommandKind::SetLimits { limits };
            // Committed before the command is proposed (no planted bug skips that).
            match self.write_stamped(shard.clone(), None, set, false).await? {
                WriteReply::Done { .. } => {}
                other => return Ok(other),
            }
        }
        self.write_stamped(shard, request_id, kind, true).await
    }

    /// Whether `shard` has replicated rules (cached once seen).
    fn rules_set(&self, shard: &Shard) -> bool {
        use std::sync::atomic::Ordering;
        if shard.rules_set.load(Ordering::Relaxed) {
            return true;
        }
        let set = shard
            .store
            .read()
            .map(|s| s.ledger().rules().is_some())
            .unwrap_or(false);
        shard.rules_set.store(set, Ordering::Relaxed);
        set
    }

    /// `write` after the rules check; `planted` lets a planted bug (test builds) act.
    async fn write_stamped(
        &self,
        shard: Arc<Shard>,
        request_id: Option<String>,
        kind: CommandKind,
        planted: bool,
    ) -> Result<WriteReply, NodeError> {
        #[cfg(not(feature = "planted-bugs"))]
        let _ = planted;
        let shard_name = shard.name.as_str();
        let node = self.inner.id;
        if !shard.raft.is_leader() {
            return Ok(WriteReply::NotLeader {
                leader: shard.leader_hint(),
                node,
            });
        }
        if let Some(reason) = self.clock_verdict(&shard).refusal() {
            metrics::counter!("seat_ledger_clock_refusals_total", "shard" => shard.name.clone(), "reason" => "quorum")
                .increment(1);
            return Ok(WriteReply::Unavailable { reason, node });
        }
        let at_ms = self.inner.clock.now_ms();
        if let Some(reason) = shard.stamp_bound.refusal(at_ms) {
            metrics::counter!("seat_ledger_clock_refusals_total", "shard" => shard.name.clone(), "reason" => "jump")
                .increment(1);
            return Ok(WriteReply::Unavailable { reason, node });
        }
        let command = Command {
            request_id: request_id.map(RequestId),
            at_ms,
            kind,
        };
        let verb = command.kind.verb();
        #[cfg(feature = "planted-bugs")]
        if planted && planted::is_enabled(PlantedBug::AckBeforeCommit) {
            return self.ack_before_commit(shard, command);
        }
        let started = Instant::now();
        let result = shard.raft.client_write(ShardCommand(command)).await;
        let labels = [("shard", shard_name.to_owned()), ("verb", verb.to_owned())];
        metrics::histogram!("seat_ledger_write_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("seat_ledger_proposals_total", &labels).increment(1);
        Ok(match result {
            Ok(response) => match response.data.outcome {
                Some(outcome) => WriteReply::Done {
                    outcome,
                    index: response.log_id.index,
                    node,
                },
                None => WriteReply::Unknown {
                    reason: "the entry carried no command".into(),
                    node,
                },
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                WriteReply::NotLeader {
                    leader: shard.leader_hint(),
                    node,
                }
            }
            Err(error) => WriteReply::Unknown {
                reason: error.to_string(),
                node,
            },
        })
    }

    /// Answers a query at the requested consistency from this replica.
    pub async fn read(
        &self,
        shard_name: &str,
        request: ReadRequest,
    ) -> Result<ReadReply, NodeError> {
        let shard = self.shard(shard_name)?;
        let node = self.inner.id;
        let unavailable = |reason: String| ReadReply::Unavailable {
            reason,
            node,
            leader: shard.leader_hint(),
        };
        let wait_for = match request.consistency {
            Consistency::Stale => None,
            Consistency::Session => request.min_index,
            #[cfg(feature = "planted-bugs")]
            Consistency::Linearizable
                if planted::is_enabled(PlantedBug::StaleFollowerRead)
                    && !shard.raft.is_leader() =>
            {
                None
            }
            Consistency::Linearizable => {
                let started = Instant::now();
                let leading = shard.raft.is_leader();
                let role = if leading { "leader" } else { "follower" };
                let index = self.read_index(&shard, leading).await;
                metrics::histogram!("seat_ledger_read_index_seconds", "role" => role)
                    .record(started.elapsed().as_secs_f64());
                match index {
                    Ok(index) => Some(index),
                    Err(reason) => return Ok(unavailable(reason)),
                }
            }
        };
        if let Some(index) = wait_for {
            let started = Instant::now();
            let waited = shard
                .raft
                .wait(Some(READ_WAIT))
                .applied_index_at_least(Some(index), "read")
                .await;
            metrics::histogram!("seat_ledger_read_apply_wait_seconds")
                .record(started.elapsed().as_secs_f64());
            if waited.is_err() {
                return Ok(unavailable(format!(
                    "this replica did not apply index {index} within {READ_WAIT:?}"
                )));
            }
        }
        let metrics = shard.metrics();
        let applied_index = metrics.last_applied.map_or(0, |log_id| log_id.index);
        let lag = metrics
            .local_committed
            .map(|c| c.index.saturating_sub(applied_index));
        let store = shard
            .store
            .read()
            .map_err(|_| NodeError::Storage("poisoned".into()))?;
        let result = store
            .query(&request.query)
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        Ok(ReadReply::Done {
            result,
            node,
            applied_index,
            consistency: request.consistency,
            lag,
        })
    }

    /// The planted ack-before-commit bug: answers with the outcome the leader's current
    /// state predicts and proposes the command in the background.
    #[cfg(feature = "planted-bugs")]
    fn ack_before_commit(
        &self,
        shard: Arc<Shard>,
        command: Command,
    ) -> Result<WriteReply, NodeError> {
        let next = shard.metrics().last_log_index.unwrap_or(0) + 1;
        let outcome = shard
            .store
            .read()
            .map_err(|_| NodeError::Storage("poisoned".into()))?
            .predict(next, &command)
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        tokio::spawn(async move {
            let _ = shard.raft.client_write(ShardCommand(command)).await;
        });
        Ok(WriteReply::Done {
            outcome,
            index: next,
            node: self.inner.id,
        })
    }

    /// The leader's read index: confirmed by a quorum round (ReadIndex), obtained locally
    /// when `leading` (as the caller last saw it) or over the peer transport otherwise; a
    /// stale `leading` only makes the attempt fail, never answer wrongly.
    ///
    /// A follower first reads its own vote from its Raft core and sends it along
    /// (`READ_INDEX_ACKED`). Holding that vote when it sends, the follower has not moved to
    /// a later term, which is what its answer to a leader's heartbeat would have said; so
    /// when the leader, in its core, still holds the same vote and the two of them are a
    /// quorum of its (single, not joint) configuration, it answers with its committed index
    /// without a heartbeat round. Any leader of a later term elected before the read began
    /// needed a vote of one of the two, so none exists; entries of earlier terms lie below
    /// the leader's first entry, which its commit index has passed (checked). Otherwise the
    /// leader runs the ordinary ReadIndex round.
    async fn read_index(&self, shard: &Shard, leading: bool) -> Result<u64, String> {
        if leading {
            return leader_read_index(&shard.raft).await;
        }
        let vote = shard
            .raft
            .with_raft_state(|state| {
                (state.server_state == ServerState::Follower && state.vote_ref().is_committed())
                    .then(|| *state.vote_ref())
            })
            .await
            .map_err(|e| e.to_string())?;
        let metrics = shard.metrics();
        let leader = match &vote {
            Some(vote) => Some(*vote.leader_id().node_id()),
            None => metrics.current_leader,
        }
        .ok_or("no leader is known for this shard")?;
        let info = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or("the leader is not in the membership")?;
        let call = |method: u8, payload: Vec<u8>| {
            self.inner.peers.call(
                leader,
                &info.peer_addr,
                &shard.name,
                method,
                payload,
                READ_INDEX_TIMEOUT,
            )
        };
        let answer = match vote {
            Some(vote) => match call(method::READ_INDEX_ACKED, codec::encode(&vote)).await {
                // A leader that does not know the method (an older version) refuses it;
                // the ordinary request is then still correct.
                Err(crate::transport::TransportError::Remote(_)) => {
                    call(method::READ_INDEX, Vec::new()).await
                }
                other => other,
            },
            None => call(method::READ_INDEX, Vec::new()).await,
        };
        let bytes = answer.map_err(|e| format!("read index from leader {leader}: {e}"))?;
        let answer: Result<u64, String> = decode("read index", &bytes)?;
        answer
    }

    /// Events of `shard` from position `(from, from_seq)` on, as far as this replica
    /// has applied them, with the edge of its retention window.
    pub fn events(
        &self,
        shard_name: &str,
        from: u64,
        from_seq: u32,
        limit: usize,
    ) -> Result<crate::protocol::EventsReply, NodeError> {
        let shard = self.shard(shard_name)?;
        let store = shard
            .store
            .read()
            .map_err(|_| NodeError::Storage("poisoned".into()))?;
        let events = store
            .events_from_position(from, from_seq, limit)
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        let oldest_index = store
            .oldest_event_index()
            .map_err(|e| NodeError::Storage(e.to_string()))?;
        Ok(crate::protocol::EventsReply {
            events,
            oldest_index,
            kept_from: store.events_kept_from(),
            node: self.inner.id,
            applied_index: shard.applied_index(),
        })
    }

    /// Whether this node's clock may stamp for `shard`: it agrees with its voters',
    /// is skewed, or too few of their clocks are known (fail closed).
    pub fn clock_verdict(&self, shard: &Shard) -> ClockVerdict {
        let voters: BTreeSet<NodeId> = shard
            .metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        self.inner.clock.verdict(self.inner.id, &voters)
    }

    /// This node's clock (the one that stamps commands when it leads).
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Shifts this node's clock (clock-skew tests and the Jepsen-style nemesis only).
    #[cfg(feature = "fault-injection")]
    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.inner.clock.set_fault_offset_ms(offset_ms);
    }

    /// Peer addresses known from the cluster file and every hosted shard's membership.
    fn peers(&self) -> BTreeMap<NodeId, String> {
        let mut peers: BTreeMap<NodeId, String> = self
            .inner
            .config
            .cluster
            .nodes
            .iter()
            .map(|n| (n.id, n.peer_addr.clone()))
            .collect();
        for shard in self.shards() {
            let metrics = shard.metrics();
            for (id, info) in metrics.membership_config.membership().nodes() {
                peers.insert(*id, info.peer_addr.clone());
            }
        }
        peers.remove(&self.inner.id);
        peers
    }

    /// Samples every peer's clock every `CLOCK_SAMPLE_INTERVAL` until shutdown.
    async fn sample_clocks(self) {
        let mut shutdown = self.shutdown_signal();
        loop {
            for (peer, addr) in self.peers() {
                let sent = self.inner.clock.now_ms();
                let answer = self
                    .inner
                    .peers
                    .call(
                        peer,
                        &addr,
                        "",
                        method::CLOCK,
                        Vec::new(),
                        CLOCK_SAMPLE_TIMEOUT,
                    )
                    .await;
                let received = self.inner.clock.now_ms();
                let peer_ms = answer
                    .ok()
                    .and_then(|bytes| decode::<Result<u64, String>>("clock", &bytes).ok())
                    .and_then(Result::ok);
                // A failed sample leaves the last one to age out (`CLOCK_SAMPLE_FRESH`).
                if let Some(peer_ms) = peer_ms {
                    self.inner.clock.record(peer, sent, peer_ms, received);
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(CLOCK_SAMPLE_INTERVAL) => {}
            }
        }
    }

    /// A receiver that turns true when the node shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    /// Stops every shard's Raft and background task.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        for shard in self.shards() {
            if let Err(error) = shard.raft.shutdown().await {
                tracing::warn!(shard = shard.name, %error, "raft shutdown");
            }
            if let Ok(store) = shard.store.read() {
                let _ = store.sync_to_disk();
            }
        }
    }

    /// The handler of peer RPCs for the transport server.
    pub fn peer_handler(&self) -> Arc<dyn RequestHandler> {
        Arc::new(PeerHandler { node: self.clone() })
    }
}

struct PeerHandler {
    node: Node,
}

/// Checks the log database against the data directory's fence and returns the live fence
/// (made from the database when the directory has none: a new node, a node upgraded from
/// a release without fences, or one restored by bookingctl).
async fn open_fence(
    config: &NodeConfig,
    log_db: &crate::log_store::LogDb,
) -> Result<Arc<Fence>, NodeError> {
    use openraft::RaftLogReader;
    let data_dir = &config.data_dir;
    let stored = crate::fence::read_fence(data_dir).map_err(NodeError::Refused)?;
    let mut shards: BTreeSet<String> = config
        .cluster
        .shards
        .iter()
        .filter(|s| s.members.contains(&config.node_id))
        .map(|s| s.name.clone())
        .collect();
    if let Some(fence) = &stored {
        shards.extend(fence.terms.keys().cloned());
    }
    let mut terms = BTreeMap::new();
    for shard in shards {
        let mut log = LogStore::<TypeConfig>::new(log_db.clone(), &shard)
            .map_err(|e| NodeError::Storage(format!("shard {shard}: {e}")))?;
        let vote = log
            .read_vote()
            .await
            .map_err(|e| NodeError::Storage(format!("shard {shard}: {e}")))?;
        if let Some(vote) = vote {
            terms.insert(shard, vote.leader_id().term());
        }
    }
    let sequence = log_db.latest_sequence();
    let record = match stored {
        Some(fence) => {
            crate::fence::check_log(&fence, config.node_id, &terms, sequence)
                .map_err(NodeError::Refused)?;
            fence
        }
        None => FenceRecord {
            format: crate::fence::FORMAT,
            node_id: config.node_id,
            log_sequence: sequence,
            terms,
        },
    };
    let data_dir = data_dir.clone();
    let fence = tokio::task::spawn_blocking(move || Fence::create(&data_dir, record))
        .await
        .map_err(|e| NodeError::Storage(format!("writing the fence: {e}")))?
        .map_err(NodeError::Storage)?;
    Ok(Arc::new(fence))
}

/// A node restored by bookingctl starts only once its peers say it votes in none of the
/// restored shards (`fence::restored_voter_shards`); returns the marker, kept until it
/// has been re-added.
async fn check_restored(
    config: &NodeConfig,
    peers: &PeerClient,
) -> Result<Option<RestoredMarker>, NodeError> {
    let Some(marker) = crate::fence::read_marker(&config.data_dir).map_err(NodeError::Refused)?
    else {
        return Ok(None);
    };
    if marker.node_id != config.node_id {
        return Err(NodeError::Refused(format!(
            "{} names node {}, this is node {}: a backup of another node was restored here",
            crate::fence::RESTORED_FILE,
            marker.node_id,
            config.node_id
        )));
    }
    let others: Vec<(NodeId, String)> = config
        .cluster
        .nodes
        .iter()
        .filter(|n| n.id != config.node_id)
        .map(|n| (n.id, n.peer_addr.clone()))
        .collect();
    let mut refused = Vec::new();
    for round in 0..MEMBERSHIPS_ROUNDS {
        if round > 0 {
            tokio::time::sleep(MEMBERSHIPS_TIMEOUT).await;
        }
        let calls = others.iter().map(|(id, addr)| async move {
            let answer = peers
                .call(
                    *id,
                    addr,
                    "",
                    method::MEMBERSHIPS,
                    Vec::new(),
                    MEMBERSHIPS_TIMEOUT,
                )
                .await
                .ok()?;
            decode::<Result<Vec<ShardMembership>, String>>("memberships", &answer)
                .ok()?
                .ok()
        });
        let answers: Vec<ShardMembership> = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        refused = crate::fence::restored_voter_shards(&marker, config.node_id, &answers);
        // A voter stays a voter until an operator acts: only silence is worth asking again.
        if refused
            .iter()
            .all(|(_, why)| *why != "no peer answered for it")
        {
            break;
        }
    }
    if refused.is_empty() {
        tracing::info!(
            backup = marker.backup,
            "restored node: no shard counts it a voter"
        );
        return Ok(Some(marker));
    }
    let shards: Vec<String> = refused
        .iter()
        .map(|(shard, why)| format!("{shard} ({why})"))
        .collect();
    Err(NodeError::Refused(format!(
        "node {} was restored from backup {} ({}), and the cluster does not confirm it was          removed from the voters of: {}. A restored voter rejoins with an older log and          vote, which can lose acknowledged writes; use {}",
        config.node_id,
        marker.backup,
        crate::fence::RESTORED_FILE,
        shards.join(", "),
        crate::fence::SAFE_ORDER
    )))
}

/// The read index on this node as leader, after a quorum round (ReadIndex).
async fn leader_read_index(raft: &Raft) -> Result<u64, String> {
    metrics::counter!("seat_ledger_read_index_total", "round" => "quorum").increment(1);
    let linearizer = raft
        .get_read_linearizer(ReadPolicy::ReadIndex)
        .await
        .map_err(|e| e.to_string())?;
    Ok(linearizer.read_log_id().index())
}

/// The read index this leader may answer `follower` with, counting the follower's `vote`
/// as its acknowledgement (see [`Node::read_index`]); `None` when the ordinary round is
/// needed. Runs inside the Raft core, so the state cannot change while it looks.
fn acked_read_index(
    state: &openraft::RaftState<TypeConfig>,
    follower: NodeId,
    vote: &crate::network::Vote,
) -> Option<u64> {
    acked_index(
        state.server_state == ServerState::Leader,
        state.vote_ref(),
        state
            .membership_state
            .effective()
            .membership()
            .get_joint_config(),
        state.local_committed(),
        follower,
        vote,
    )
}

/// [`acked_read_index`] over the parts of the leader's state it reads.
fn acked_index(
    leading: bool,
    own: &crate::network::Vote,
    configs: &[BTreeSet<NodeId>],
    committed: Option<&openraft::alias::LogIdOf<TypeConfig>>,
    follower: NodeId,
    vote: &crate::network::Vote,
) -> Option<u64> {
    if !leading || !own.is_committed() || own != vote {
        return None;
    }
    // One configuration (not joint) of at most three voters holding both: then this
    // leader and the follower are a majority of it.
    let [voters] = configs else {
        return None;
    };
    let leader = *own.leader_id().node_id();
    if voters.len() > 3
        || follower == leader
        || !voters.contains(&follower)
        || !voters.contains(&leader)
    {
        return None;
    }
    // The commit index must have reached this term's first entry, which lies above every
    // entry of earlier terms; until then only the ordinary round may answer.
    let committed = committed?;
    (committed.committed_leader_id() == &own.leader_id().to_committed()).then_some(committed.index)
}

/// Hands a snapshot chunk to the shard's inbox, which writes it to disk: on the
/// blocking pool.
async fn receive_chunk(
    shard: &Arc<Shard>,
    chunk: crate::snapshot_transfer::SnapshotChunk,
) -> Result<crate::snapshot_transfer::Received, String> {
    let inbox = shard.snapshot_inbox.clone();
    tokio::task::spawn_blocking(move || inbox.receive(chunk))
        .await
        .map_err(|e| format!("snapshot chunk: {e}"))?
}

/// Installs a snapshot received whole in `file` (deleted once installed or refused).
async fn install_received(
    raft: &Raft,
    vote: crate::network::Vote,
    meta: crate::types::SnapshotMeta,
    file: crate::ledger_sm::SnapshotFile,
) -> Result<openraft::raft::SnapshotResponse<TypeConfig>, String> {
    metrics::counter!("seat_ledger_snapshot_received_bytes_total").increment(file.bytes());
    let snapshot = crate::network::Snapshot {
        meta,
        snapshot: crate::ledger_sm::LedgerImage::File(Arc::new(file)),
    };
    raft.install_full_snapshot(vote, snapshot)
        .await
        .map_err(|e| e.to_string())
}

fn reply<T: serde::Serialize, E: std::fmt::Display>(result: Result<T, E>) -> Vec<u8> {
    codec::encode(&result.map_err(|e| e.to_string()))
}

impl RequestHandler for PeerHandler {
    fn handle(
        &self,
        from_node: u64,
        shard: String,
        method: u8,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let node = self.node.clone();
        Box::pin(async move {
            if method == method::CLOCK {
                return Ok(reply::<u64, String>(Ok(node.now_ms())));
            }
            if method == method::MEMBERSHIPS {
                return Ok(reply::<_, String>(Ok(node.memberships())));
            }
            let shard = node.shard(&shard).map_err(|e| e.to_string())?;
            let raft = shard.raft.clone();
            tracing::trace!(shard = shard.name, from_node, method, "peer request");
            Ok(match method {
                method::APPEND_ENTRIES => {
                    reply(raft.append_entries(decode("append", &payload)?).await)
                }
                method::VOTE => reply(raft.vote(decode("vote", &payload)?).await),
                method::PRE_VOTE => reply(raft.pre_vote(decode("pre-vote", &payload)?).await),
                method::FULL_SNAPSHOT => {
                    // A sender from before chunked transfers: the whole snapshot in one
                    // frame, put through the inbox as a single chunk.
                    use crate::snapshot_transfer::{transfer_name, Received, SnapshotChunk};
                    let (vote, meta, data): (
                        crate::network::Vote,
                        crate::types::SnapshotMeta,
                        Vec<u8>,
                    ) = decode("snapshot", &payload)?;
                    let chunk = SnapshotChunk {
                        vote,
                        meta,
                        transfer: transfer_name(&data),
                        total: data.len() as u64,
                        offset: 0,
                        data,
                    };
                    match receive_chunk(&shard, chunk).await? {
                        Received::Complete { vote, meta, file } => {
                            reply(install_received(&raft, vote, meta, file).await)
                        }
                        Received::Next(_) => {
                            return Err("a whole snapshot arrived incomplete".into())
                        }
                    }
                }
                method::SNAPSHOT_CHUNK => {
                    use crate::snapshot_transfer::{ChunkReply, Received};
                    let chunk = decode("snapshot chunk", &payload)?;
                    match receive_chunk(&shard, chunk).await? {
                        Received::Next(offset) => {
                            reply::<ChunkReply, String>(Ok(ChunkReply::Next(offset)))
                        }
                        Received::Complete { vote, meta, file } => {
                            let installed = install_received(&raft, vote, meta, file).await;
                            reply(installed.map(ChunkReply::Installed))
                        }
                    }
                }
                method::TRANSFER_LEADER => reply(
                    raft.handle_transfer_leader(decode("transfer", &payload)?)
                        .await,
                ),
                method::READ_INDEX => reply(leader_read_index(&raft).await),
                method::READ_INDEX_ACKED => {
                    let vote: crate::network::Vote = decode("read index vote", &payload)?;
                    let acked = raft
                        .with_raft_state(move |state| acked_read_index(state, from_node, &vote))
                        .await
                        .map_err(|e| e.to_string())?;
                    let index = match acked {
                        Some(index) => {
                            metrics::counter!("seat_ledger_read_index_total", "round" => "acked")
                                .increment(1);
                            Ok(index)
                        }
                        None => leader_read_index(&raft).await,
                    };
                    reply(index)
                }
                other => return Err(format!("unknown peer method {other}")),
            })
        })
    }
}

/// Per-shard background work: the expiry sweep on the leader, and metrics.
async fn sweep(node: Node, shard: Arc<Shard>) {
    let mut shutdown = node.shutdown_signal();
    let mut last_leader = None;
    let mut last_skew_transfer: Option<Instant> = None;
    let mut rules_differ_said = false;
    let labels = [
        ("shard", shard.name.clone()),
        ("node", node.id().to_string()),
    ];
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
        let metrics = shard.metrics();
        if metrics.current_leader != last_leader {
            metrics::counter!("seat_ledger_leader_changes_total", &labels).increment(1);
            last_leader = metrics.current_leader;
        }
        let applied = metrics.last_applied.map_or(0, |l| l.index);
        let committed = metrics.local_committed.map_or(0, |l| l.index);
        metrics::gauge!("seat_ledger_term", &labels).set(metrics.current_term as f64);
        metrics::gauge!("seat_ledger_applied_index", &labels).set(applied as f64);
        metrics::gauge!("seat_ledger_apply_lag", &labels)
            .set(committed.saturating_sub(applied) as f64);
        let leading = metrics.state == ServerState::Leader;
        metrics::gauge!("seat_ledger_is_leader", &labels).set(if leading { 1.0 } else { 0.0 });
        // One look at the store for its gauges (the lock is the one apply takes).
        let (failed, differs, request_ids) = match shard.store.read() {
            Ok(store) => {
                let ledger = store.ledger();
                (
                    store.is_poisoned(),
                    ledger.rules().is_some_and(|rules| rules != node.limits()),
                    Some((ledger.requests().len(), ledger.limits().request_ids_max)),
                )
            }
            Err(_) => (true, false, None),
        };
        // A failed store refuses all work until the node restarts (apply errors).
        metrics::gauge!("seat_ledger_store_failed", &labels).set(if failed { 1.0 } else { 0.0 });
        // The idempotency table: live keys against the bound that refuses new ones.
        if let Some((held, max)) = request_ids {
            metrics::gauge!("seat_ledger_request_ids", &labels).set(held as f64);
            metrics::gauge!("seat_ledger_request_ids_max", &labels).set(f64::from(max));
        }
        // The shard's replicated rules win over this node's file; say when they differ.
        if differs && !rules_differ_said {
            tracing::warn!(
                shard = shard.name,
                "this node's configured ledger limits differ from the shard's replicated \
                 rules; it applies the replicated ones (change them with \
                 POST /admin/shards/{{shard}}/limits)"
            );
        }
        rules_differ_said = differs;
        metrics::gauge!("seat_ledger_rules_differ_from_file", &labels).set(if differs {
            1.0
        } else {
            0.0
        });
        if !leading {
            continue;
        }
        // Follower lag in entries, as the leader sees it (matched index vs its last).
        if let Some(replication) = metrics.replication.as_ref() {
            let last = metrics.last_log_index.unwrap_or(0);
            for (follower, matched) in replication.iter() {
                if *follower == node.id() {
                    continue;
                }
                let lag = last.saturating_sub(matched.as_ref().map_or(0, |l| l.index));
                metrics::gauge!(
                    "seat_ledger_replication_lag",
                    "shard" => shard.name.clone(),
                    "node" => node.id().to_string(),
                    "follower" => follower.to_string()
                )
                .set(lag as f64);
            }
        }
        let verdict = node.clock_verdict(&shard);
        if let ClockVerdict::Unknown { .. } | ClockVerdict::Split { .. } = verdict {
            // No voter is known to be better: no stamping (no sweep) until clocks agree.
            continue;
        }
        if let ClockVerdict::Skewed { skew_ms: skew } = verdict {
            metrics::counter!("seat_ledger_clock_skew_refusals_total", &labels).increment(1);
            let due =
                last_skew_transfer.is_none_or(|at: Instant| at.elapsed() >= SKEW_TRANSFER_INTERVAL);
            let voters: BTreeSet<NodeId> =
                metrics.membership_config.membership().voter_ids().collect();
            if let (true, Some(to)) = (due, node.inner.clock.best_other_voter(node.id(), &voters)) {
                tracing::warn!(
                    shard = shard.name,
                    skew,
                    to,
                    "clock off the quorum's: handing over leadership"
                );
                last_skew_transfer = Some(Instant::now());
                if let Err(error) = shard.raft.trigger().transfer_leader(to).await {
                    tracing::warn!(shard = shard.name, %error, "leader transfer failed");
                }
            }
            continue;
        }
        // The shard's rules bound a sweep (replicated once set, `Node::write`).
        let (next_expiry, expire_batch_max) = match shard.store.read() {
            Ok(store) => (
                store.ledger().next_lock_expiry(),
                store.ledger().limits().expire_batch_max,
            ),
            Err(_) => continue,
        };
        if next_expiry.is_some_and(|expiry| expiry <= node.now_ms()) {
            let max_locks = expire_batch_max;
            let kind = CommandKind::ExpireLocks { max_locks };
            if let Err(error) = node.write(&shard.name, None, kind).await {
                tracing::warn!(shard = shard.name, %error, "expiry sweep failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::vote::{RaftLeaderIdExt, RaftVote};
    use openraft::RaftTypeConfig;

    type LeaderId = <TypeConfig as RaftTypeConfig>::LeaderId;

    fn vote(term: u64, leader: NodeId, committed: bool) -> crate::network::Vote {
        crate::network::Vote::from_leader_id(LeaderId::new(term, leader), committed)
    }

    fn log_id(term: u64, leader: NodeId, index: u64) -> openraft::alias::LogIdOf<TypeConfig> {
        openraft::LogId {
            leader_id: LeaderId::new_committed(term, leader),
            index,
        }
    }

    fn voters(ids: &[NodeId]) -> Vec<BTreeSet<NodeId>> {
        vec![ids.iter().copied().collect()]
    }

    #[test]
    fn a_follower_holding_the_leaders_vote_acknowledges_the_read() {
        let own = vote(5, 1, true);
        let committed = log_id(5, 1, 42);
        let answer = acked_index(true, &own, &voters(&[1, 2, 3]), Some(&committed), 2, &own);
        assert_eq!(answer, Some(42));
        // Two voters: the pair is the whole configuration.
        let answer = acked_index(true, &own, &voters(&[1, 2]), Some(&committed), 2, &own);
        assert_eq!(answer, Some(42));
    }

    #[test]
    fn anything_short_of_a_proven_majority_takes_the_ordinary_round() {
        let own = vote(5, 1, true);
        let committed = log_id(5, 1, 42);
        let three = voters(&[1, 2, 3]);
        let cases: Vec<(&str, Option<u64>)> = vec![
            (
                "not leading",
                acked_index(false, &own, &three, Some(&committed), 2, &own),
            ),
            (
                "follower moved to a later term",
                acked_index(true, &own, &three, Some(&committed), 2, &vote(6, 3, true)),
            ),
            (
                "follower still on an earlier term",
                acked_index(true, &own, &three, Some(&committed), 2, &vote(4, 1, true)),
            ),
            (
                "follower's vote for this leader not yet committed",
                acked_index(true, &own, &three, Some(&committed), 2, &vote(5, 1, false)),
            ),
            (
                "own vote not committed",
                acked_index(
                    true,
                    &vote(5, 1, false),
                    &three,
                    Some(&committed),
                    2,
                    &vote(5, 1, false),
                ),
            ),
            (
                "five voters need a third acknowledgement",
                acked_index(
                    true,
                    &own,
                    &voters(&[1, 2, 3, 4, 5]),
                    Some(&committed),
                    2,
                    &own,
                ),
            ),
            (
                "joint configuration",
                acked_index(
                    true,
                    &own,
                    &[
                        [1, 2, 3].into_iter().collect(),
                        [1, 2, 4].into_iter().collect(),
                    ],
                    Some(&committed),
                    2,
                    &own,
                ),
            ),
            (
                "requester is not a voter",
                acked_index(true, &own, &three, Some(&committed), 4, &own),
            ),
            (
                "requester claims to be the leader",
                acked_index(true, &own, &three, Some(&committed), 1, &own),
            ),
            (
                "leader is not a voter of its configuration",
                acked_index(true, &own, &voters(&[2, 3, 4]), Some(&committed), 2, &own),
            ),
            (
                "nothing of this term committed yet",
                acked_index(true, &own, &three, Some(&log_id(4, 2, 40)), 2, &own),
            ),
            (
                "nothing committed at all",
                acked_index(true, &own, &three, None, 2, &own),
            ),
        ];
        for (case, answer) in cases {
            assert_eq!(answer, None, "{case}");
        }
    }
}
