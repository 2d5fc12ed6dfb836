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
        }
    }

    pub const FAULTS: [NemesisKind; 7] = [
        NemesisKind::Kill,
        NemesisKind::Pause,
        NemesisKind::Partition,
        NemesisKind::Clock,
        NemesisKind::Transfer,
        NemesisKind::Membership,
        NemesisKind::ClockRestart,
    ];
}

/// The offsets of `clock-restart`: one minute to two hours.
const CLOCK_JUMP_MS: std::ops::RangeInclusive<i64> = 60_000..=7_200_000;

/// The largest clock offset the nemesis applies: four times the leaders' skew bound, so
/// both "within bound" and "beyond bound" happen.
const CLOCK_OFFSET_MS_MAX: i64 = 2_000;
/// How long to wait for a leader before a fault that needs one.
const LEADER_WITHIN: Duration = Duration::from_secs(10);

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
            let others: Vec<u64> = cluster
                .up()
                .into_iter()
                .filter(|id| *id != leader)
                .collect();
            if others.is_empty() {
                self.skip(F::Transfer, "no other node");
                return;
            }
            let to = others[self.rng.usize(0..others.len())];
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
            tokio::time::sleep(Duration::from_millis(self.rng.u64(150..400))).await;
        }
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
        let mut last = String::new();
        for _ in 0..20 {
            let Some(leader) = cluster.wait_leader(&self.shard, LEADER_WITHIN).await else {
                last = "no leader".into();
                continue;
            };
            let result = async {
                let mut voters = cluster.voters(&self.shard, leader).await?;
                if voters.contains(&id) {
                    return Ok(());
                }
                cluster.add_learner(&self.shard, leader, id).await?;
                voters.push(id);
                voters.sort_unstable();
                cluster.set_voters(&self.shard, leader, &voters).await
            }
            .await;
            match result {
                Ok(()) => {
                    self.log(OpType::Info, F::Membership, Some(id), "re-added as voter");
                    return Ok(());
                }
                Err(error) => last = error,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "node {id} could not be re-added to {}: {last}",
            self.shard
        ))
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
