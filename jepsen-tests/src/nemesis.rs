//! The fault schedule. Each round waits (0.5x to 1.5x the interval), picks one of the
//! requested fault classes with the run's seeded random stream, injects it, holds it
//! for 0.2x to 0.5x the interval, and heals it. Every action is a nemesis line in the
//! history (`invoke` when it starts, `info` when it took effect or failed), so the
//! report can shade fault periods.
//!
//! Classes: `kill` (SIGKILL the leader or a random node, restart it), `pause`
//! (SIGSTOP/SIGCONT), `partition` (isolate the leader, isolate a random node, a
//! majorities ring, or a bridge; network namespaces only), `clock` (shift a node's clock
//! by up to +-2 s through the fault-injection control), `transfer` (a storm of leader
//! transfers), `membership` (remove a follower from the voters, then add it back as a
//! learner and promote it), `gateway` (saga workload: the sandbox gateway loses the
//! answer to every create that makes a payment, refuses every retry of such a create
//! with 429, 401, 503 or 422, and sometimes loses webhooks too, so that only the api
//! nodes' key lookups and pollers can find the payments; the saga checker then holds
//! every charge against a confirmed booking or a refund).
//!
//! The nemesis hands the cluster back healed: every node running, no partition, clocks
//! reset, every node a voter, the gateway behaving.
//!
//! `clock-restart` combines clock trouble with restarts: every node is killed and
//! started again, one of them with its clock minutes to hours off (either way) from its
//! first instant, as after a power event where one machine boots with a wrong clock.
//! Until its clock has been compared with a majority's, that node must stamp nothing.
//!
//! `divergent-config` restarts one node with a cluster file whose ledger limits differ
//! from everyone else's (much smaller or much larger seat caps and lock TTL floor), and
//! moves the city shard's leadership to it. The rules travel through the log
//! (`CommandKind::SetLimits`), so every replica must keep applying the replicated ones;
//! the runner's digest comparison (`checker::replicas`) is what shows they did. Healing
//! restarts the node on the shared file.
//!
//! `snapshot-catchup` stops a follower of the city shard, waits while the clients'
//! writes go on until the leader, asked to snapshot, has purged its log past the
//! follower's applied index, and restarts the follower: it can only catch up through a
//! (chunked) snapshot, with writes continuing. Healing waits (bounded) until it has
//! applied past the purge point; the digest comparison and the history checkers judge
//! the rest.
//!
//! `wrong-restore` takes an online backup of a follower, kills it, moves its data
//! directory aside and restores the backup into a fresh one (`raft_node::backup::
//! restore`, as `bookingctl restore` does, but without the tool's voter check) while it
//! is still a voter: the node must refuse to start (its restore marker, `fence`), or
//! the run fails. Then the runbook's order: remove it from every shard's voters, restore
//! again, start it, and (healing) add it back as a learner and promote it; it catches up
//! from the backup's index and the digest comparison judges it.

use crate::history::{OpType, Process, Recorder, F};
use crate::procs::{NetMode, ProcCluster};
use gateway::wire::Behaviour;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which faults to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NemesisKind {
    None,
    /// kill -9 the city shard's leader or a random node, restart it later.
    Kill,
    /// SIGSTOP a node (the leader or a random one), SIGCONT it later.
    Pause,
    /// Network partitions (root: network namespaces).
    Partition,
    /// Shift a node's clock (needs the fault-injection feature).
    Clock,
    /// Leader transfer storms.
    Transfer,
    /// Remove a follower from the voters and add it back.
    Membership,
    /// Restart every node, one with its clock minutes to hours off from its start.
    #[value(name = "clock-restart")]
    #[serde(rename = "clock-restart")]
    ClockRestart,
    /// The payment gateway loses create answers and refuses retries (saga workload).
    Gateway,
    /// Restart a node with ledger limits of its own in its cluster file.
    #[value(name = "divergent-config")]
    #[serde(rename = "divergent-config")]
    DivergentConfig,
    /// Stop a follower until the leader's log is purged past it, restart it so that it
    /// catches up through a snapshot.
    #[value(name = "snapshot-catchup")]
    #[serde(rename = "snapshot-catchup")]
    SnapshotCatchup,
    /// Restore a follower's backup while it is still a voter (it must refuse to start),
    /// then the safe way: remove, restore, start, re-add.
    #[value(name = "wrong-restore")]
    #[serde(rename = "wrong-restore")]
    WrongRestore,
}

impl NemesisKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NemesisKind::None => "none",
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Clock => "clock",
            NemesisKind::Transfer => "transfer",
            NemesisKind::Membership => "membership",
            NemesisKind::ClockRestart => "clock-restart",
            NemesisKind::Gateway => "gateway",
            NemesisKind::DivergentConfig => "divergent-config",
            NemesisKind::SnapshotCatchup => "snapshot-catchup",
            NemesisKind::WrongRestore => "wrong-restore",
        }
    }

    pub const FAULTS: [NemesisKind; 10] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Clock,
        NemesisKind::Transfer,
        NemesisKind::Membership,
        NemesisKind::ClockRestart,
        NemesisKind::DivergentConfig,
        NemesisKind::SnapshotCatchup,
        NemesisKind::WrongRestore,
    ];
}

/// The offsets of `clock-restart`: one minute to two hours.
const CLOCK_JUMP_MS: std::ops::RangeInclusive<i64> = 60_000..=7_200_000;

/// The largest clock offset the nemesis applies: four times the leaders' skew bound, so
/// both "within bound" and "beyond bound" happen.
const CLOCK_OFFSET_MS_MAX: i64 = 2_000;
/// How long to wait for a leader before a fault that needs one.
const LEADER_WITHIN: Duration = Duration::from_secs(10);
/// How long `snapshot-catchup` waits for the leader to purge its log past the stopped
/// follower (the clients' writes must carry it past `keep_entries_after_snapshot`).
const PURGE_WITHIN: Duration = Duration::from_secs(10);
/// How long a node restarted by `snapshot-catchup` may take to apply past the purge.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(30);

/// What the nemesis did, for the report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NemesisStats {
    pub kills: usize,
    pub pauses: usize,
    pub partitions: usize,
    pub clock_skews: usize,
    pub transfers: usize,
    pub membership_changes: usize,
    /// Whole-cluster restarts with one node's clock far off (`clock-restart`).
    #[serde(default)]
    pub clock_restarts: usize,
    #[serde(default)]
    pub gateway_faults: usize,
    /// Nodes restarted with ledger limits of their own (`divergent-config`).
    #[serde(default)]
    pub divergent_configs: usize,
    /// Followers that caught up through a snapshot past the leader's purged log
    /// (`snapshot-catchup`).
    #[serde(default)]
    pub snapshot_catchups: usize,
    /// Backups restored into a node that was still a voter, which it refused to start
    /// on, then restored the safe way (`wrong-restore`).
    #[serde(default)]
    pub wrong_restores: usize,
    /// Faults that could not be injected (e.g. no leader to kill); each is in the history.
    pub skipped: usize,
}

impl NemesisStats {
    pub fn faults(&self) -> usize {
        self.kills
            + self.pauses
            + self.partitions
            + self.clock_skews
            + self.transfers
            + self.membership_changes
            + self.clock_restarts
            + self.gateway_faults
            + self.divergent_configs
            + self.snapshot_catchups
            + self.wrong_restores
    }
}

pub struct Nemesis {
    recorder: Arc<Recorder>,
    shard: String,
    kinds: Vec<NemesisKind>,
    rng: fastrand::Rng,
    pub stats: NemesisStats,
    /// The sandbox gateway of the saga workload, for the `gateway` class.
    gateway: Option<Arc<api::payment::SandboxGateway>>,
}

/// A fault in force, and how to undo it.
enum Fault {
    Killed(u64),
    Paused(u64),
    Partitioned,
    Skewed(u64),
    Removed(u64),
    Gateway,
    /// A node on a cluster file of its own.
    Divergent(u64),
    /// A follower stopped past the leader's purged log: restart it, wait until it
    /// applied past `purged`.
    Behind {
        id: u64,
        purged: u64,
    },
    /// A node restored from a backup and out of every shard's voters: re-add it.
    Restored(u64),
    Nothing,
}

impl Nemesis {
    pub fn new(recorder: Arc<Recorder>, shard: &str, kinds: &[NemesisKind], seed: u64) -> Nemesis {
        Nemesis {
            recorder,
            shard: shard.into(),
            kinds: kinds
                .iter()
                .copied()
                .filter(|k| *k != NemesisKind::None)
                .collect(),
            // Offset by "nemesis" in ASCII so its stream differs from every client's.
            rng: fastrand::Rng::with_seed(seed.wrapping_add(0x006E_656D_6573_6973)),
            stats: NemesisStats::default(),
            gateway: None,
        }
    }

    /// The gateway the `gateway` class switches.
    pub fn with_gateway(mut self, gateway: Arc<api::payment::SandboxGateway>) -> Nemesis {
        self.gateway = Some(gateway);
        self
    }

    /// Whether the requested classes can run on this cluster.
    pub fn check(kinds: &[NemesisKind], net: NetMode) -> Result<(), String> {
        if kinds.contains(&NemesisKind::Partition) && net != NetMode::Netns {
            return Err(
                "the partition nemesis needs network namespaces: run as root with iproute2".into(),
            );
        }
        Ok(())
    }

    fn log(&self, kind: OpType, f: F, node: Option<u64>, note: impl Into<String>) {
        let mut value = ProcCluster::value(node, note);
        value.shard = self.shard.clone();
        let value = serde_json::to_value(value).unwrap_or_default();
        self.recorder.record(Process::Nemesis, kind, f, value, None);
    }

    /// Injects and heals faults until `until`.
    pub async fn run(
        &mut self,
        cluster: &mut ProcCluster,
        until: Instant,
        interval: Duration,
    ) -> Result<(), String> {
        if self.kinds.is_empty() {
            return Ok(());
        }
        loop {
            let wait = interval.mul_f64(0.5 + self.rng.f64());
            if Instant::now() + wait >= until {
                break;
            }
            tokio::time::sleep(wait).await;
            let kind = self.kinds[self.rng.usize(0..self.kinds.len())];
            let hold = interval.mul_f64(0.2 + 0.3 * self.rng.f64());
            let hold = hold.min(until.saturating_duration_since(Instant::now()));
            let fault = self.inject(cluster, kind, hold).await?;
            if !matches!(fault, Fault::Nothing) {
                tokio::time::sleep(hold).await;
            }
            self.heal(cluster, fault).await?;
        }
        Ok(())
    }

    /// The leader, or a random node when `random` (or when there is no leader).
    async fn target(&mut self, cluster: &ProcCluster, random: bool) -> Option<u64> {
        let up = cluster.up();
        if up.is_empty() {
            return None;
        }
        if !random {
            if let Some(leader) = cluster.wait_leader(&self.shard, LEADER_WITHIN).await {
                return Some(leader);
            }
        }
        Some(up[self.rng.usize(0..up.len())])
    }

    async fn inject(
        &mut self,
        cluster: &mut ProcCluster,
        kind: NemesisKind,
        hold: Duration,
    ) -> Result<Fault, String> {
        match kind {
            NemesisKind::None => Ok(Fault::Nothing),
            NemesisKind::Kill => {
                let random = self.rng.bool();
                let Some(id) = self.target(cluster, random).await else {
                    return Ok(self.skip(F::Kill, "no node to kill"));
                };
                self.log(OpType::Invoke, F::Kill, Some(id), "kill -9");
                cluster.kill(id).await?;
                self.stats.kills += 1;
                self.log(OpType::Info, F::Kill, Some(id), "killed");
                Ok(Fault::Killed(id))
            }
            NemesisKind::Pause => {
                let random = self.rng.bool();
                let Some(id) = self.target(cluster, random).await else {
                    return Ok(self.skip(F::Pause, "no node to pause"));
                };
                self.log(OpType::Invoke, F::Pause, Some(id), "SIGSTOP");
                cluster.pause(id)?;
                self.stats.pauses += 1;
                self.log(OpType::Info, F::Pause, Some(id), "paused");
                Ok(Fault::Paused(id))
            }
            NemesisKind::Partition => self.partition(cluster).await,
            NemesisKind::Clock => {
                let random = self.rng.bool();
                let Some(id) = self.target(cluster, random).await else {
                    return Ok(self.skip(F::Clock, "no node to skew"));
                };
                let magnitude = self.rng.i64(100..=CLOCK_OFFSET_MS_MAX);
                let offset = if self.rng.bool() {
                    magnitude
                } else {
                    -magnitude
                };
                self.log(
                    OpType::Invoke,
                    F::Clock,
                    Some(id),
                    format!("offset {offset} ms"),
                );
                cluster.set_clock_offset(id, offset).await?;
                self.stats.clock_skews += 1;
                self.log(
                    OpType::Info,
                    F::Clock,
                    Some(id),
                    format!("offset {offset} ms"),
                );
                Ok(Fault::Skewed(id))
            }
            NemesisKind::Transfer => {
                self.transfer_storm(cluster, hold).await;
                Ok(Fault::Nothing)
            }
            NemesisKind::Membership => self.remove_member(cluster).await,
            NemesisKind::ClockRestart => self.clock_restart(cluster).await,
            NemesisKind::Gateway => Ok(self.misbehave()),
            NemesisKind::DivergentConfig => self.divergent_config(cluster).await,
            NemesisKind::SnapshotCatchup => self.stop_for_snapshot(cluster).await,
            NemesisKind::WrongRestore => self.wrong_restore(cluster).await,
        }
    }

    /// Backs up a follower, restores the backup into it while it is still a voter (it
    /// must refuse to start), then removes it from every shard's voters, restores again
    /// and starts it; the heal adds it back.
    async fn wrong_restore(&mut self, cluster: &mut ProcCluster) -> Result<Fault, String> {
        let Some(leader) = cluster.wait_leader(&self.shard, LEADER_WITHIN).await else {
            return Ok(self.skip(F::Restore, "no leader"));
        };
        if cluster.up().len() < cluster.ids().len() || cluster.ids().len() < 3 {
            return Ok(self.skip(F::Restore, "a node is down, or fewer than 3 nodes"));
        }
        let Some(id) = self.random_other(cluster, leader) else {
            return Ok(self.skip(F::Restore, "no follower"));
        };
        let name = format!(
            "jepsen-{}-{:08x}",
            self.stats.wrong_restores,
            self.rng.u32(..)
        );
        self.log(
            OpType::Invoke,
            F::Restore,
            Some(id),
            format!("backup {name}"),
        );
        let written = cluster.backup(id, &name).await?;
        let data_dir = cluster
            .data_dir(id)
            .ok_or(format!("node {id} is not in this cluster"))?;
        // Out of the data directory, which a restore must find empty.
        let backup = cluster.dir().join(format!("backup-node-{id}-{name}"));
        rename(&written, &backup)?;
        self.log(
            OpType::Info,
            F::Restore,
            Some(id),
            format!("backup {name} taken"),
        );
        self.log(OpType::Invoke, F::Kill, Some(id), "kill -9 to restore");
        cluster.kill(id).await?;
        self.log(OpType::Info, F::Kill, Some(id), "killed");
        let aside = cluster.dir().join(format!("node-{id}-before-{name}"));
        rename(&data_dir, &aside)?;
        // The wrong order: the node still votes in every shard.
        self.log(
            OpType::Invoke,
            F::Restore,
            Some(id),
            "restore while still a voter",
        );
        restore(&backup, &data_dir).await?;
        match cluster.restart(id).await {
            Ok(()) => {
                return Err(format!(
                    "node {id} started on a backup restored while it was still a voter: a \
                     restored voter rejoins with an older log and vote (its restore marker \
                     should have refused the start)"
                ))
            }
            Err(error) => {
                cluster.reap(id).await;
                if !error.contains("removed from the voters") {
                    return Err(format!(
                        "node {id}, restored while a voter, did not start, but not because \
                         of its restore marker: {error}"
                    ));
                }
                self.log(
                    OpType::Info,
                    F::Restore,
                    Some(id),
                    "refused to start: still a voter",
                );
            }
        }
        // The runbook's order: out of the voters of every shard, restore, start.
        for shard in crate::procs::SHARDS {
            self.log(
                OpType::Invoke,
                F::Membership,
                Some(id),
                format!("remove from {shard}"),
            );
            self.remove_from(cluster, shard, id).await?;
            self.log(
                OpType::Info,
                F::Membership,
                Some(id),
                format!("removed from {shard}"),
            );
        }
        std::fs::remove_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
        self.log(
            OpType::Invoke,
            F::Restore,
            Some(id),
            "restore after leaving the voters",
        );
        restore(&backup, &data_dir).await?;
        self.log(OpType::Invoke, F::Restart, Some(id), "restart restored");
        cluster.restart(id).await?;
        self.log(OpType::Info, F::Restart, Some(id), "started");
        self.stats.wrong_restores += 1;
        self.log(
            OpType::Info,
            F::Restore,
            Some(id),
            "restored and started as a non-voter",
        );
        Ok(Fault::Restored(id))
    }

    /// Makes `shard`'s voters every current voter but `id` (retried while leaders move).
    async fn remove_from(
        &mut self,
        cluster: &ProcCluster,
        shard: &str,
        id: u64,
    ) -> Result<(), String> {
        on_leader(cluster, shard, |leader| async move {
            let voters = cluster.voters(shard, leader).await?;
            if !voters.contains(&id) {
                return Ok(());
            }
            let keep: Vec<u64> = voters.into_iter().filter(|v| *v != id).collect();
            cluster.set_voters(shard, leader, &keep).await
        })
        .await
        .map_err(|last| format!("node {id} could not be removed from {shard}: {last}"))
    }

    /// Restarts a random node with ledger limits of its own (every seat cap and the
    /// lock TTL floor much smaller, or much larger, than the shared file's), then moves
    /// the city shard's leadership to it.
    async fn divergent_config(&mut self, cluster: &mut ProcCluster) -> Result<Fault, String> {
        let up = cluster.up();
        if up.len() < cluster.ids().len() {
            return Ok(self.skip(F::Config, "a node is down"));
        }
        let id = up[self.rng.usize(0..up.len())];
        let shared = cluster.file.limits.clone();
        let limits = if self.rng.bool() {
            state_machine::Limits {
                seats_per_lock_max: 1,
                seats_per_user_per_show_max: 1,
                lock_ttl_ms_min: shared.lock_ttl_ms_min.max(10_000),
                ..shared
            }
        } else {
            state_machine::Limits {
                seats_per_lock_max: shared.seats_per_lock_max.saturating_mul(4),
                seats_per_user_per_show_max: shared.seats_per_user_per_show_max.saturating_mul(4),
                lock_ttl_ms_min: (shared.lock_ttl_ms_min / 2).max(1),
                ..shared
            }
        };
        let note = format!(
            "own limits: seats_per_lock_max {}, seats_per_user_per_show_max {}, \
             lock_ttl_ms_min {}",
            limits.seats_per_lock_max, limits.seats_per_user_per_show_max, limits.lock_ttl_ms_min
        );
        self.log(OpType::Invoke, F::Config, Some(id), note.clone());
        cluster.kill(id).await?;
        cluster.restart_with_limits(id, Some(limits)).await?;
        self.stats.divergent_configs += 1;
        self.log(
            OpType::Info,
            F::Config,
            Some(id),
            format!("running with {note}"),
        );
        // Leading, it proposes and stamps the city shard's commands.
        if let Some(leader) = cluster.wait_leader(&self.shard, LEADER_WITHIN).await {
            if leader != id {
                self.transfer(cluster, leader, id).await;
            }
        }
        Ok(Fault::Divergent(id))
    }

    /// Stops a follower of the city shard and waits (bounded) until the leader, asked
    /// for snapshots while the clients write, has purged its log past the follower's
    /// applied index.
    async fn stop_for_snapshot(&mut self, cluster: &mut ProcCluster) -> Result<Fault, String> {
        let Some(leader) = cluster.wait_leader(&self.shard, LEADER_WITHIN).await else {
            return Ok(self.skip(F::Snapshot, "no leader"));
        };
        let all_up = cluster.up().len() == cluster.ids().len();
        let Some(id) = all_up.then(|| self.random_other(cluster, leader)).flatten() else {
            return Ok(self.skip(F::Snapshot, "no follower to stop, or a node is down"));
        };
        self.log(OpType::Invoke, F::Kill, Some(id), "kill -9 a follower");
        cluster.kill(id).await?;
        // What it had applied is at most what the leader had committed now.
        let behind = cluster
            .shard_status(leader, &self.shard)
            .await
            .ok()
            .and_then(|s| s.committed_index)
            .unwrap_or(0);
        self.log(
            OpType::Info,
            F::Kill,
            Some(id),
            format!("killed; at most index {behind}"),
        );
        self.log(
            OpType::Invoke,
            F::Snapshot,
            None,
            format!("purge past {behind}"),
        );
        let deadline = Instant::now() + PURGE_WITHIN;
        let mut last = String::from("no leader answered");
        let keep = cluster.timing().keep_entries_after_snapshot;
        let mut asked: Option<Instant> = None;
        loop {
            if let Some(leader) = cluster.wait_leader(&self.shard, LEADER_WITHIN).await {
                match cluster.shard_status(leader, &self.shard).await {
                    Ok(status) if status.purged_index.is_some_and(|p| p > behind) => {
                        let purged = status.purged_index.unwrap_or_default();
                        self.log(
                            OpType::Info,
                            F::Snapshot,
                            Some(leader),
                            format!("leader {leader} purged its log to {purged}, past {behind}"),
                        );
                        return Ok(Fault::Behind { id, purged });
                    }
                    Ok(status) => {
                        last = format!(
                            "leader {leader}: applied {:?}, snapshot {:?}, purged {:?}",
                            status.applied_index, status.snapshot_index, status.purged_index
                        );
                        // A snapshot purges the log up to `keep` entries behind it: ask for
                        // one once that is past the follower, and again every second.
                        let far_enough = status
                            .applied_index
                            .is_some_and(|a| a > behind.saturating_add(keep));
                        let due = asked.is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
                        if far_enough && due {
                            asked = Some(Instant::now());
                            if let Err(error) = cluster.trigger_snapshot(&self.shard, leader).await
                            {
                                last = format!("snapshot on {leader}: {error}");
                            }
                        }
                    }
                    Err(error) => last = error,
                }
            }
            if Instant::now() >= deadline {
                self.log(
                    OpType::Info,
                    F::Snapshot,
                    None,
                    format!("not purged past {behind} within {PURGE_WITHIN:?}: {last}"),
                );
                // Still a kill: the heal restarts it (it catches up by the log).
                return Ok(Fault::Behind { id, purged: 0 });
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Restarts the follower `snapshot-catchup` stopped and waits (bounded) until it
    /// applied past the leader's purge point: it cannot have done so from the log.
    async fn catch_up(
        &mut self,
        cluster: &mut ProcCluster,
        id: u64,
        purged: u64,
    ) -> Result<(), String> {
        self.log(OpType::Invoke, F::Restart, Some(id), "restart");
        cluster.restart(id).await?;
        self.log(OpType::Info, F::Restart, Some(id), "started");
        if purged == 0 {
            return Ok(());
        }
        let deadline = Instant::now() + CATCH_UP_WITHIN;
        loop {
            let status = cluster.shard_status(id, &self.shard).await;
            if let Ok(status) = &status {
                if status.applied_index.is_some_and(|a| a > purged) {
                    self.stats.snapshot_catchups += 1;
                    self.log(
                        OpType::Info,
                        F::Snapshot,
                        Some(id),
                        format!(
                            "node {id} caught up past the purged log ({purged}): snapshot \
                             {:?}, applied {:?}",
                            status.snapshot_index, status.applied_index
                        ),
                    );
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {id} did not catch up past the leader's purged log ({purged}) \
                     within {CATCH_UP_WITHIN:?}: {status:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills every node and starts them again, one (random) with its clock off by a
    /// minute to two hours from its start.
    async fn clock_restart(&mut self, cluster: &mut ProcCluster) -> Result<Fault, String> {
        let ids = cluster.ids();
        let skewed = ids[self.rng.usize(0..ids.len())];
        let magnitude = self.rng.i64(CLOCK_JUMP_MS);
        let offset = if self.rng.bool() {
            magnitude
        } else {
            -magnitude
        };
        let note = format!("restart all, node {skewed} with offset {offset} ms");
        self.log(OpType::Invoke, F::Kill, None, note.clone());
        for id in cluster.up() {
            cluster.kill(id).await?;
        }
        self.log(OpType::Info, F::Kill, None, "all killed");
        // The skewed node first: it is alone for a moment, then elects with the next.
        let mut order = ids.clone();
        order.retain(|id| *id != skewed);
        order.insert(0, skewed);
        self.log(OpType::Invoke, F::Restart, None, note.clone());
        for id in order {
            let offset = if id == skewed { offset } else { 0 };
            cluster.restart_with_clock_offset(id, offset).await?;
        }
        self.stats.clock_restarts += 1;
        self.log(OpType::Info, F::Restart, Some(skewed), note);
        Ok(Fault::Skewed(skewed))
    }

    /// Switches the gateway to losing create answers and refusing their retries.
    fn misbehave(&mut self) -> Fault {
        let Some(gateway) = self.gateway.clone() else {
            return self.skip(F::Gateway, "no gateway (not the saga workload)");
        };
        let refusal = [429, 401, 503, 422][self.rng.usize(0..4)];
        let drop_webhooks = self.rng.bool();
        let note = format!(
            "lost create answers, retries refused {refusal}, webhooks lost {drop_webhooks}"
        );
        self.log(OpType::Invoke, F::Gateway, None, note.clone());
        gateway.server().set_behaviour(Behaviour {
            lose_create_responses: true,
            repeat_create_status: refusal,
            repeat_create_from: 2,
            drop_webhooks,
            ..Behaviour::default()
        });
        self.stats.gateway_faults += 1;
        self.log(OpType::Info, F::Gateway, None, note);
        Fault::Gateway
    }

    /// A node up other than `leader`, drawn at random.
    fn random_other(&mut self, cluster: &ProcCluster, leader: u64) -> Option<u64> {
        let others: Vec<u64> = cluster
            .up()
            .into_iter()
            .filter(|id| *id != leader)
            .collect();
        (!others.is_empty()).then(|| others[self.rng.usize(0..others.len())])
    }

    fn skip(&mut self, f: F, why: &str) -> Fault {
        self.stats.skipped += 1;
        self.log(OpType::Info, f, None, format!("skipped: {why}"));
        Fault::Nothing
    }

    async fn partition(&mut self, cluster: &mut ProcCluster) -> Result<Fault, String> {
        let ids = cluster.ids();
        let leader = cluster.leader(&self.shard).await;
        let shape = self.rng.u32(0..4);
        let (note, groups, links): (String, Vec<Vec<u64>>, Vec<(u64, u64)>) = match shape {
            // The leader alone on one side.
            0 if leader.is_some() => {
                let leader = leader.unwrap_or_default();
                let rest = ids.iter().copied().filter(|id| *id != leader).collect();
                (
                    format!("isolate leader {leader}"),
                    vec![vec![leader], rest],
                    vec![],
                )
            }
            // Random halves: a random minority against the rest.
            0 | 1 => {
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let minority = shuffled.split_off(shuffled.len().div_ceil(2));
                (
                    format!("halves {shuffled:?} | {minority:?}"),
                    vec![shuffled, minority],
                    vec![],
                )
            }
            // Majorities ring: each node cut from one neighbour only, so every node sees
            // a majority but no two see the same one.
            2 => {
                let mut ring = ids.clone();
                self.rng.shuffle(&mut ring);
                let n = ring.len();
                let links: Vec<(u64, u64)> = if n < 3 {
                    vec![]
                } else {
                    (0..n)
                        .filter(|i| n > 3 || *i == 0)
                        .map(|i| (ring[i], ring[(i + n / 2) % n]))
                        .collect()
                };
                (format!("majorities ring {ring:?}"), vec![], links)
            }
            // Bridge: two sides that reach only one node in the middle.
            _ => {
                let mut order = ids.clone();
                self.rng.shuffle(&mut order);
                let bridge = order[0];
                let (left, right) = order[1..].split_at((order.len() - 1) / 2);
                let links = left
                    .iter()
                    .flat_map(|a| right.iter().map(move |b| (*a, *b)))
                    .collect();
                (format!("bridge through {bridge}"), vec![], links)
            }
        };
        self.log(OpType::Invoke, F::Partition, None, note.clone());
        let netns = cluster.netns()?;
        if groups.is_empty() {
            netns.cut_links(&links)?;
        } else {
            netns.partition(&groups)?;
        }
        self.stats.partitions += 1;
        self.log(OpType::Info, F::Partition, None, note);
        Ok(Fault::Partitioned)
    }

    /// Transfers leadership to a random other voter every 150-400 ms for `hold`.
    async fn transfer_storm(&mut self, cluster: &ProcCluster, hold: Duration) {
        let until = Instant::now() + hold;
        while Instant::now() < until {
            let Some(leader) = cluster.wait_leader(&self.shard, LEADER_WITHIN).await else {
                self.skip(F::Transfer, "no leader");
                return;
            };
            let Some(to) = self.random_other(cluster, leader) else {
                self.skip(F::Transfer, "no other node");
                return;
            };
            self.transfer(cluster, leader, to).await;
            tokio::time::sleep(Duration::from_millis(self.rng.u64(150..400))).await;
        }
    }

    /// Moves the city shard's leadership from `leader` to `to`, logged as a transfer.
    async fn transfer(&mut self, cluster: &ProcCluster, leader: u64, to: u64) {
        self.log(
            OpType::Invoke,
            F::Transfer,
            Some(to),
            format!("{leader} -> {to}"),
        );
        let note = match cluster.transfer_leader(&self.shard, leader, to).await {
            Ok(()) => {
                self.stats.transfers += 1;
                format!("{leader} -> {to}")
            }
            Err(error) => format!("refused: {error}"),
        };
        self.log(OpType::Info, F::Transfer, Some(to), note);
    }

    async fn remove_member(&mut self, cluster: &ProcCluster) -> Result<Fault, String> {
        let Some(leader) = cluster.wait_leader(&self.shard, LEADER_WITHIN).await else {
            return Ok(self.skip(F::Membership, "no leader"));
        };
        let voters = cluster.voters(&self.shard, leader).await?;
        let followers: Vec<u64> = voters.iter().copied().filter(|v| *v != leader).collect();
        if voters.len() < 3 || followers.is_empty() {
            return Ok(self.skip(F::Membership, "too few voters to remove one"));
        }
        let removed = followers[self.rng.usize(0..followers.len())];
        let keep: Vec<u64> = voters.iter().copied().filter(|v| *v != removed).collect();
        self.log(
            OpType::Invoke,
            F::Membership,
            Some(removed),
            format!("voters {keep:?}"),
        );
        match cluster.set_voters(&self.shard, leader, &keep).await {
            Ok(()) => {
                self.stats.membership_changes += 1;
                self.log(
                    OpType::Info,
                    F::Membership,
                    Some(removed),
                    format!("removed; voters {keep:?}"),
                );
                Ok(Fault::Removed(removed))
            }
            Err(error) => {
                self.log(
                    OpType::Info,
                    F::Membership,
                    Some(removed),
                    format!("refused: {error}"),
                );
                Ok(Fault::Nothing)
            }
        }
    }

    /// Adds a removed node back: learner first, then voter; retried while leaders move.
    async fn re_add(&mut self, cluster: &ProcCluster, id: u64) -> Result<(), String> {
        let shard = self.shard.clone();
        self.re_add_to(cluster, &shard, id).await
    }

    /// `re_add` for any shard.
    async fn re_add_to(
        &mut self,
        cluster: &ProcCluster,
        shard: &str,
        id: u64,
    ) -> Result<(), String> {
        on_leader(cluster, shard, |leader| async move {
            let mut voters = cluster.voters(shard, leader).await?;
            if voters.contains(&id) {
                return Ok(());
            }
            cluster.add_learner(shard, leader, id).await?;
            voters.push(id);
            voters.sort_unstable();
            cluster.set_voters(shard, leader, &voters).await
        })
        .await
        .map_err(|last| format!("node {id} could not be re-added to {shard}: {last}"))?;
        self.log(OpType::Info, F::Membership, Some(id), "re-added as voter");
        Ok(())
    }

    async fn heal(&mut self, cluster: &mut ProcCluster, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::Nothing => Ok(()),
            Fault::Killed(id) => {
                self.log(OpType::Invoke, F::Restart, Some(id), "restart");
                cluster.restart(id).await?;
                self.log(OpType::Info, F::Restart, Some(id), "started");
                Ok(())
            }
            Fault::Paused(id) => {
                self.log(OpType::Invoke, F::Resume, Some(id), "SIGCONT");
                cluster.resume(id)?;
                self.log(OpType::Info, F::Resume, Some(id), "resumed");
                Ok(())
            }
            Fault::Partitioned => {
                self.log(OpType::Invoke, F::Heal, None, "heal");
                cluster.netns()?.heal()?;
                self.log(OpType::Info, F::Heal, None, "healed");
                Ok(())
            }
            Fault::Skewed(id) => {
                self.log(OpType::Invoke, F::Clock, Some(id), "offset 0 ms");
                cluster.set_clock_offset(id, 0).await?;
                self.log(OpType::Info, F::Clock, Some(id), "offset 0 ms");
                Ok(())
            }
            Fault::Removed(id) => {
                self.log(OpType::Invoke, F::Membership, Some(id), "re-add");
                self.re_add(cluster, id).await
            }
            Fault::Divergent(id) => {
                self.log(OpType::Invoke, F::Config, Some(id), "shared config");
                cluster.kill(id).await?;
                cluster.restart_with_limits(id, None).await?;
                self.log(
                    OpType::Info,
                    F::Config,
                    Some(id),
                    "back on the shared cluster file",
                );
                Ok(())
            }
            Fault::Behind { id, purged } => self.catch_up(cluster, id, purged).await,
            Fault::Restored(id) => {
                for shard in crate::procs::SHARDS {
                    self.log(OpType::Invoke, F::Membership, Some(id), "re-add");
                    self.re_add_to(cluster, shard, id).await?;
                }
                Ok(())
            }
            Fault::Gateway => {
                self.log(OpType::Invoke, F::Gateway, None, "behave");
                if let Some(gateway) = &self.gateway {
                    gateway.server().set_behaviour(Behaviour::default());
                }
                self.log(OpType::Info, F::Gateway, None, "behaving");
                Ok(())
            }
        }
    }
}

fn rename(from: &std::path::Path, to: &std::path::Path) -> Result<(), String> {
    std::fs::rename(from, to)
        .map_err(|e| format!("move {} to {}: {e}", from.display(), to.display()))
}

/// `raft_node::backup::restore` of `backup` into `data_dir` as one node rejoining (the
/// library call `bookingctl restore` makes after its checks), off the async threads.
async fn restore(backup: &std::path::Path, data_dir: &std::path::Path) -> Result<(), String> {
    let (backup, data_dir) = (backup.to_path_buf(), data_dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        raft_node::backup::restore(&backup, &data_dir, raft_node::backup::Rejoin::AsNewLearner)
    })
    .await
    .map_err(|e| format!("restore stopped: {e}"))?
    .map(|_| ())
    .map_err(|e| format!("restore: {e}"))
}

/// Runs `step` against `shard`'s current leader until it succeeds: up to 20 tries,
/// 250 ms apart, since leaders move meanwhile. The last error otherwise.
async fn on_leader<Fut>(
    cluster: &ProcCluster,
    shard: &str,
    mut step: impl FnMut(u64) -> Fut,
) -> Result<(), String>
where
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for _ in 0..20 {
        let Some(leader) = cluster.wait_leader(shard, LEADER_WITHIN).await else {
            last = "no leader".into();
            continue;
        };
        match step(leader).await {
            Ok(()) => return Ok(()),
            Err(error) => last = error,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last)
}
