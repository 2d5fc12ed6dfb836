//! Drills: writers lock seats of a fresh drill show continuously (one seat per write,
//! each with its own request id) while the drill acts on the cluster; afterwards a
//! linearizable read of the seat map checks that every acknowledged lock is there.
//!
//! Unavailability is the longest time without an acknowledged write in the part of the
//! run from the action on; the same measure before the action is the baseline (what
//! normal latency and scheduling alone produce).

use crate::admin::Admin;
use crate::ops;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use raft_node::client::{ClientError, ClusterClient};
use raft_node::protocol::{Consistency, ReadReply, ReadRequest};
use raft_node::types::NodeId;
use serde::Serialize;
use state_machine::{
    Applied, Category, CommandKind, Outcome, Prices, Query, QueryResponse, RowSpec, Screen,
    ScreenIndex, SeatId, SeatStatus, ShowId, UserId,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One write attempt may take this long before the writer retries it (same request id).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// A write is given up (outcome unknown) after this long.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// Seats in a drill show: rows x seats per row.
const ROWS: u16 = 100;
const SEATS_PER_ROW: u16 = 100;
/// Drill user ids start here (far from real ones; each write has its own user, so the
/// per-user seat cap never applies).
const DRILL_USER_BASE: u64 = 9_000_000_000;
const DRILL_OWNER: UserId = UserId(8_999_999_999);

#[derive(Args, Clone)]
pub struct DrillArgs {
    /// The shard to drill (a dedicated one: the drill creates a theater and a show in it).
    #[arg(long, default_value = "drill")]
    pub shard: String,
    /// How long the writers run, in seconds (the action happens at 40% of it).
    #[arg(long, default_value_t = 8.0)]
    pub seconds: f64,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Exit non-zero when the measured unavailability exceeds this many ms.
    #[arg(long)]
    pub max_unavailable_ms: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub enum Action {
    Transfer {
        to: Option<NodeId>,
    },
    KillLeader,
    IsolateRegion {
        region: String,
        cut: String,
        heal: String,
    },
}

#[derive(Clone, Copy)]
enum Result3 {
    Acked,
    Rejected,
    Unknown,
}

struct Record {
    seat: u32,
    started: Duration,
    finished: Duration,
    result: Result3,
    /// Attempts with a definite failure or timeout before the answer.
    retries: u32,
}

#[derive(Serialize, Default)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn latency(mut samples: Vec<Duration>) -> Latency {
    if samples.is_empty() {
        return Latency::default();
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e3
    };
    Latency {
        count: samples.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: samples.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    }
}

#[derive(Serialize)]
pub struct DrillReport {
    pub drill: String,
    pub shard: String,
    pub show: u64,
    pub old_leader: NodeId,
    pub new_leader: Option<NodeId>,
    /// From the action's start until a new leader was seen (by polling /admin/status).
    pub leader_change_ms: Option<f64>,
    pub action_at_s: f64,
    /// Longest time without an acknowledged write from the action on.
    pub unavailability_ms: f64,
    /// The same measure before the action.
    pub baseline_gap_ms: f64,
    pub writes_acknowledged: usize,
    pub writes_rejected: usize,
    pub writes_unknown: usize,
    pub unknown_that_landed: usize,
    pub retried_writes: usize,
    pub latency: Latency,
    pub verified_present: usize,
    pub lost_acknowledged: Vec<u32>,
    pub phantom_seats: Vec<u32>,
    pub notes: Vec<String>,
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

async fn setup_show(
    client: &ClusterClient,
    shard: &str,
    run: u64,
) -> Result<(ShowId, u32), String> {
    let screen = Screen {
        name: "drill".into(),
        rows: (0..ROWS)
            .map(|row| RowSpec {
                label: format!("R{row}"),
                seats: SEATS_PER_ROW,
                category: Category::Normal,
            })
            .collect(),
    };
    let theater = CommandKind::CreateTheater {
        city: "drill".into(),
        name: format!("bookingctl drill {run}"),
        address: "nowhere".into(),
        lat_micro_deg: 0,
        lon_micro_deg: 0,
        owner: DRILL_OWNER,
        screens: vec![screen],
    };
    let done = client
        .write(
            shard,
            &format!("drill-{run}-theater"),
            theater,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| setup_error(shard, e))?;
    let theater = match done.outcome {
        Outcome::Applied(Applied::TheaterCreated { theater }) => theater,
        other => return Err(format!("creating the drill theater in {shard}: {other:?}")),
    };
    let start_ms = raft_node::node::now_ms() + 7 * 86_400_000;
    let show = CommandKind::PublishShow {
        theater,
        screen: ScreenIndex(0),
        title: format!("bookingctl drill {run}"),
        genre: "drill".into(),
        start_ms,
        end_ms: start_ms + 3_600_000,
        prices: Prices {
            normal_minor: 100,
            premium_minor: 100,
            vip_minor: 100,
        },
        currency: "INR".into(),
    };
    let done = client
        .write(
            shard,
            &format!("drill-{run}-show"),
            show,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| setup_error(shard, e))?;
    match done.outcome {
        Outcome::Applied(Applied::ShowPublished { show }) => {
            Ok((show, u32::from(ROWS) * u32::from(SEATS_PER_ROW)))
        }
        other => Err(format!("publishing the drill show in {shard}: {other:?}")),
    }
}

fn setup_error(shard: &str, error: ClientError) -> String {
    match error {
        ClientError::Refused(reason) if reason.contains("unknown shard") => format!(
            "the cluster has no shard {shard:?}: add `[[shards]] name = \"drill\"` with all nodes as members to the cluster file (deploy/config/cluster.toml has one), or pass --shard"
        ),
        other => format!("setting up the drill show in {shard}: {other}"),
    }
}

/// Writes one seat lock until it has a definite answer or the deadline passes; every
/// attempt carries the same request id.
async fn write_seat(
    client: &ClusterClient,
    shard: &str,
    run: u64,
    show: ShowId,
    seat: u32,
) -> (Result3, u32) {
    let started = Instant::now();
    let mut retries = 0;
    let command = CommandKind::LockSeats {
        show,
        user: UserId(DRILL_USER_BASE + u64::from(seat)),
        seats: vec![SeatId(seat)],
        ttl_ms: None,
    };
    let request_id = format!("drill-{run}-seat-{seat}");
    while started.elapsed() < WRITE_DEADLINE {
        match client
            .write(shard, &request_id, command.clone(), ATTEMPT_TIMEOUT)
            .await
        {
            Ok(done) => {
                return match done.outcome {
                    Outcome::Applied(Applied::SeatsLocked { .. }) => (Result3::Acked, retries),
                    _ => (Result3::Rejected, retries),
                }
            }
            Err(ClientError::Refused(_)) => return (Result3::Rejected, retries),
            Err(ClientError::Unknown { .. }) => retries += 1,
        }
    }
    (Result3::Unknown, retries)
}

struct Writers {
    records: Arc<Mutex<Vec<Record>>>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    next_seat: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn start_writers(
    client: &ClusterClient,
    shard: &str,
    run: u64,
    show: ShowId,
    capacity: u32,
    count: usize,
    origin: Instant,
) -> Writers {
    let writers = Writers {
        records: Arc::default(),
        acked: Arc::default(),
        failed: Arc::default(),
        next_seat: Arc::default(),
        stop: Arc::default(),
        tasks: Vec::new(),
    };
    let mut tasks = Vec::new();
    for _ in 0..count.max(1) {
        let (client, shard) = (client.clone(), shard.to_owned());
        let (records, acked, failed, next_seat, stop) = (
            writers.records.clone(),
            writers.acked.clone(),
            writers.failed.clone(),
            writers.next_seat.clone(),
            writers.stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let seat = next_seat.fetch_add(1, Ordering::Relaxed);
                if seat >= u64::from(capacity) {
                    break;
                }
                let seat = seat as u32;
                let started = origin.elapsed();
                let (result, retries) = write_seat(&client, &shard, run, show, seat).await;
                let finished = origin.elapsed();
                match result {
                    Result3::Acked => acked.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                if let Ok(mut records) = records.lock() {
                    records.push(Record {
                        seat,
                        started,
                        finished,
                        result,
                        retries,
                    });
                }
            }
        }));
    }
    Writers { tasks, ..writers }
}

/// The new leader of `shard` other than `old` (or in a later term), as reported by the
/// nodes other than `skip`; polls until `within`.
async fn wait_new_leader(
    admin: &Admin,
    shard: &str,
    old: NodeId,
    old_term: u64,
    skip: &[NodeId],
    within: Duration,
) -> Option<NodeId> {
    let started = Instant::now();
    while started.elapsed() < within {
        for (&id, _) in admin.nodes.iter().filter(|(id, _)| !skip.contains(id)) {
            if let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_millis(300), admin.status(id, false)).await
            {
                if let Some(s) = status.shards.iter().find(|s| s.shard == shard) {
                    if s.state == "Leader" && (id != old || s.term > old_term) {
                        return Some(id);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn run_shell(command: &str) -> Result<(), String> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}

fn kill_local(pid: u32, node: NodeId) -> Result<(), String> {
    if pid == 0 {
        return Err(format!(
            "node {node} did not report its pid in /admin/status; is it an older raft-node?"
        ));
    }
    if pid == std::process::id() {
        return Err(format!(
            "node {node} runs inside this bookingctl process; nothing to kill"
        ));
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|_| {
        format!("node {node}'s pid {pid} is not a process on this host: kill-leader drills only local clusters (run bookingctl on the leader's host)")
    })?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if !cmdline.contains("raft-node") {
        return Err(format!(
            "pid {pid} on this host is {cmdline:?}, not a raft-node: refusing to kill it (is node {node} on another host?)"
        ));
    }
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "kill -9 {pid} failed ({status}); run bookingctl as the nodes' user"
        ))
    }
}

async fn verify(
    client: &ClusterClient,
    shard: &str,
    show: ShowId,
) -> Result<Vec<SeatStatus>, String> {
    let request = ReadRequest {
        query: Query::SeatMap { show },
        consistency: Consistency::Linearizable,
        min_index: None,
    };
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        match client
            .read(shard, &request, &[], Duration::from_secs(5))
            .await
        {
            Ok(ReadReply::Done {
                result: Ok(QueryResponse::SeatMap(map)),
                ..
            }) => return Ok(map.seats.iter().map(|s| s.status).collect()),
            Ok(other) => last = format!("{other:?}"),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "could not read the drill show back linearizably within 30 s: {last}"
    ))
}

pub async fn run(admin: &Admin, args: DrillArgs, action: Action) -> Result<(), String> {
    let shard = args.shard.clone();
    let name = match &action {
        Action::Transfer { .. } => "transfer-leader".to_string(),
        Action::KillLeader => "kill-leader".into(),
        Action::IsolateRegion { region, .. } => format!("isolate-region {region}"),
    };
    if !(1.0..=600.0).contains(&args.seconds) {
        return Err("--seconds: give 1 to 600".into());
    }
    if !(1..=64).contains(&args.writers) {
        return Err("--writers: give 1 to 64".into());
    }
    let view = admin.view(false).await;
    let (old_leader, status) = view.leader(&shard).ok_or_else(|| {
        format!("shard {shard} has no reachable leader; check `bookingctl status --shard {shard}` (drill shard missing? see deploy/config/cluster.toml)")
    })?;
    let old_term = status.term;
    let old_region = status
        .members
        .iter()
        .find(|m| m.id == old_leader)
        .map(|m| m.region.clone())
        .unwrap_or_default();
    let leader_pid = view
        .nodes
        .get(&old_leader)
        .and_then(|r| r.as_ref().ok())
        .map_or(0, |n| n.pid);
    if let Action::IsolateRegion { region, .. } = &action {
        if !status.members.iter().any(|m| &m.region == region) {
            return Err(format!("no member of {shard} is in region {region:?}"));
        }
    }
    let client = admin.client();
    let run = raft_node::node::now_ms();
    let (show, capacity) = setup_show(&client, &shard, run).await?;
    let total = Duration::from_secs_f64(args.seconds);
    let action_at = total.mul_f64(0.4);
    let origin = Instant::now();
    let writers = start_writers(&client, &shard, run, show, capacity, args.writers, origin);

    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total.as_millis() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {elapsed:>3} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let ticker = {
        let (bar, acked, failed) = (bar.clone(), writers.acked.clone(), writers.failed.clone());
        tokio::spawn(async move {
            loop {
                bar.set_position(origin.elapsed().as_millis() as u64);
                bar.set_message(format!(
                    "{} acknowledged, {} failed",
                    acked.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut notes = Vec::new();
    tokio::time::sleep(action_at.saturating_sub(origin.elapsed())).await;
    let acted = origin.elapsed();
    bar.println(format!(
        "t+{:.2}s {name}: acting on shard {shard} (leader node {old_leader}, region {old_region})",
        seconds(acted)
    ));
    let mut heal: Option<String> = None;
    let outcome: Result<(Option<NodeId>, Option<Duration>), String> = match &action {
        Action::Transfer { to } => match ops::transfer_quiet(admin, &shard, *to).await {
            Ok(done) => Ok((Some(done.to), Some(done.took))),
            Err(error) => Err(error),
        },
        Action::KillLeader => match kill_local(leader_pid, old_leader) {
            Ok(()) => {
                bar.println(format!(
                    "t+{:.2}s killed node {old_leader} (pid {leader_pid}) with SIGKILL",
                    seconds(origin.elapsed())
                ));
                let new = wait_new_leader(
                    admin,
                    &shard,
                    old_leader,
                    old_term,
                    &[old_leader],
                    Duration::from_secs(20),
                )
                .await;
                Ok((new, new.map(|_| origin.elapsed() - acted)))
            }
            Err(error) => Err(error),
        },
        Action::IsolateRegion {
            region,
            cut,
            heal: heal_command,
        } => {
            heal = Some(heal_command.clone());
            match run_shell(cut) {
                Ok(()) => {
                    bar.println(format!(
                        "t+{:.2}s region {region} cut off",
                        seconds(origin.elapsed())
                    ));
                    let inside: Vec<NodeId> = status
                        .members
                        .iter()
                        .filter(|m| &m.region == region)
                        .map(|m| m.id)
                        .collect();
                    let new = wait_new_leader(
                        admin,
                        &shard,
                        old_leader,
                        old_term,
                        &inside,
                        Duration::from_secs(30),
                    )
                    .await;
                    Ok((new, new.map(|_| origin.elapsed() - acted)))
                }
                Err(error) => Err(error),
            }
        }
    };
    let (new_leader, leader_change) = match outcome {
        Ok(found) => found,
        Err(error) => {
            writers.stop.store(true, Ordering::Relaxed);
            for task in writers.tasks {
                let _ = task.await;
            }
            ticker.abort();
            bar.finish_and_clear();
            if let Some(heal) = heal {
                let _ = run_shell(&heal);
            }
            return Err(format!("{name} drill: {error}"));
        }
    };
    match new_leader {
        Some(leader) => bar.println(format!(
            "t+{:.2}s node {leader} leads {shard}",
            seconds(origin.elapsed())
        )),
        None => notes.push("no new leader was seen while the drill ran".to_string()),
    }
    tokio::time::sleep(total.saturating_sub(origin.elapsed())).await;
    writers.stop.store(true, Ordering::Relaxed);
    for task in writers.tasks {
        let _ = task.await;
    }
    ticker.abort();
    bar.finish_and_clear();
    if let Some(heal) = heal {
        if let Err(error) = run_shell(&heal) {
            notes.push(format!("healing failed: {error}; heal the region by hand"));
        }
    }
    let written = writers
        .next_seat
        .load(Ordering::Relaxed)
        .min(u64::from(capacity)) as usize;
    if written >= capacity as usize {
        notes.push(format!("the drill show's {capacity} seats ran out before the time was up; use fewer --seconds or --writers"));
    }
    let records = std::mem::take(
        &mut *writers
            .records
            .lock()
            .map_err(|_| "writer records poisoned")?,
    );
    let statuses = verify(&client, &shard, show).await?;
    let report = analyse(
        &name,
        &shard,
        show,
        old_leader,
        new_leader,
        leader_change,
        acted,
        &records,
        &statuses,
        notes,
    );
    // Release the drill's locks (best effort; they expire anyway).
    let _ = client
        .write(
            &shard,
            &format!("drill-{run}-cancel"),
            CommandKind::CancelShow { show },
            Duration::from_secs(5),
        )
        .await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render(&report));
    }
    if !report.lost_acknowledged.is_empty() || !report.phantom_seats.is_empty() {
        return Err(format!(
            "{} acknowledged writes lost, {} seats locked that no write asked for: keep this output and the nodes' logs",
            report.lost_acknowledged.len(),
            report.phantom_seats.len()
        ));
    }
    if let Some(max) = args.max_unavailable_ms {
        if report.unavailability_ms > max as f64 {
            return Err(format!(
                "unavailability {:.0} ms exceeds --max-unavailable-ms {max}",
                report.unavailability_ms
            ));
        }
    }
    Ok(())
}

/// Longest gap between consecutive acknowledgements, among the gaps that end at or after
/// `from` (`after`) or before it (the baseline).
fn longest_gap(acks: &[Duration], from: Duration, after: bool) -> Duration {
    let mut longest = Duration::ZERO;
    for pair in acks.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let relevant = if after { b >= from } else { b < from };
        if relevant {
            longest = longest.max(b - a);
        }
    }
    longest
}

#[allow(clippy::too_many_arguments)]
fn analyse(
    name: &str,
    shard: &str,
    show: ShowId,
    old_leader: NodeId,
    new_leader: Option<NodeId>,
    leader_change: Option<Duration>,
    acted: Duration,
    records: &[Record],
    statuses: &[SeatStatus],
    notes: Vec<String>,
) -> DrillReport {
    let mut acks: Vec<Duration> = records
        .iter()
        .filter(|r| matches!(r.result, Result3::Acked))
        .map(|r| r.finished)
        .collect();
    acks.sort();
    let held = |seat: u32| {
        statuses
            .get(seat as usize)
            .is_some_and(|s| *s != SeatStatus::Available)
    };
    let mut lost: Vec<u32> = records
        .iter()
        .filter(|r| matches!(r.result, Result3::Acked) && !held(r.seat))
        .map(|r| r.seat)
        .collect();
    lost.sort();
    let written: std::collections::BTreeSet<u32> = records.iter().map(|r| r.seat).collect();
    let phantom: Vec<u32> = (0..statuses.len() as u32)
        .filter(|s| held(*s) && !written.contains(s))
        .collect();
    DrillReport {
        drill: name.to_owned(),
        shard: shard.to_owned(),
        show: show.0,
        old_leader,
        new_leader,
        leader_change_ms: leader_change.map(|d| d.as_secs_f64() * 1e3),
        action_at_s: acted.as_secs_f64(),
        unavailability_ms: longest_gap(&acks, acted, true).as_secs_f64() * 1e3,
        baseline_gap_ms: longest_gap(&acks, acted, false).as_secs_f64() * 1e3,
        writes_acknowledged: acks.len(),
        writes_rejected: records
            .iter()
            .filter(|r| matches!(r.result, Result3::Rejected))
            .count(),
        writes_unknown: records
            .iter()
            .filter(|r| matches!(r.result, Result3::Unknown))
            .count(),
        unknown_that_landed: records
            .iter()
            .filter(|r| matches!(r.result, Result3::Unknown) && held(r.seat))
            .count(),
        retried_writes: records.iter().filter(|r| r.retries > 0).count(),
        latency: latency(
            records
                .iter()
                .filter(|r| matches!(r.result, Result3::Acked))
                .map(|r| r.finished - r.started)
                .collect(),
        ),
        verified_present: records
            .iter()
            .filter(|r| matches!(r.result, Result3::Acked) && held(r.seat))
            .count(),
        lost_acknowledged: lost,
        phantom_seats: phantom,
        notes,
    }
}

pub fn render(r: &DrillReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "drill {} on shard {} (show {})\n",
        r.drill, r.shard, r.show
    ));
    out.push_str(&format!(
        "  leader:          node {} -> {}{}\n",
        r.old_leader,
        r.new_leader
            .map_or("none seen".into(), |n| format!("node {n}")),
        r.leader_change_ms
            .map_or(String::new(), |ms| format!(" after {ms:.0} ms"))
    ));
    out.push_str(&format!(
        "  unavailability:  {:.0} ms without an acknowledged write (baseline before acting: {:.0} ms)\n",
        r.unavailability_ms, r.baseline_gap_ms
    ));
    out.push_str(&format!(
        "  writes:          {} acknowledged, {} rejected, {} unknown ({} of them landed), {} needed retries\n",
        r.writes_acknowledged, r.writes_rejected, r.writes_unknown, r.unknown_that_landed, r.retried_writes
    ));
    out.push_str(&format!(
        "  latency:         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
        r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms
    ));
    if r.lost_acknowledged.is_empty() {
        out.push_str(&format!(
            "  verification:    {}/{} acknowledged writes present (linearizable read of the seat map); 0 lost\n",
            r.verified_present, r.writes_acknowledged
        ));
    } else {
        out.push_str(&format!(
            "  verification:    LOST {} acknowledged writes: seats {:?}\n",
            r.lost_acknowledged.len(),
            &r.lost_acknowledged[..r.lost_acknowledged.len().min(20)]
        ));
    }
    if !r.phantom_seats.is_empty() {
        out.push_str(&format!(
            "  PHANTOM locks on seats never written: {:?}\n",
            &r.phantom_seats[..r.phantom_seats.len().min(20)]
        ));
    }
    for note in &r.notes {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}

#[derive(Args, Clone)]
pub struct ProbeArgs {
    #[arg(long, default_value = "drill")]
    pub shard: String,
    /// The replica near this client (its region's node) for the local reads.
    #[arg(long)]
    pub local_node: NodeId,
    #[arg(long, default_value_t = 50)]
    pub writes: usize,
    #[arg(long, default_value_t = 50)]
    pub reads: usize,
    /// A label for the output (e.g. the region).
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Serialize)]
pub struct ProbeReport {
    pub label: String,
    pub local_node: NodeId,
    pub leader: Option<NodeId>,
    pub write: Latency,
    pub stale_local: Latency,
    pub linearizable_local: Latency,
    pub linearizable_leader: Latency,
    /// Reads that another replica than the one asked for answered (failover).
    pub answered_elsewhere: usize,
}

async fn timed_reads(
    client: &ClusterClient,
    shard: &str,
    node: NodeId,
    consistency: Consistency,
    count: usize,
    elsewhere: &mut usize,
) -> Result<Latency, String> {
    let request = ReadRequest {
        query: Query::Clock,
        consistency,
        min_index: None,
    };
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        match client
            .read(shard, &request, &[node], Duration::from_secs(5))
            .await
        {
            Ok(ReadReply::Done { node: answered, .. }) => {
                samples.push(started.elapsed());
                if answered != node {
                    *elsewhere += 1;
                }
            }
            Ok(other) => return Err(format!("read at node {node}: {other:?}")),
            Err(error) => return Err(format!("read at node {node}: {error}")),
        }
    }
    Ok(latency(samples))
}

/// Write and read latencies as seen from where bookingctl runs; JSON on stdout.
pub async fn probe(admin: &Admin, args: ProbeArgs) -> Result<(), String> {
    admin.addr(args.local_node)?;
    if args.writes > 10_000 || args.reads > 10_000 {
        return Err("--writes/--reads: at most 10000".into());
    }
    let client = admin.client();
    let run = raft_node::node::now_ms();
    let (show, capacity) = setup_show(&client, &args.shard, run).await?;
    let mut writes = Vec::new();
    for seat in 0..(args.writes as u32).min(capacity) {
        let started = Instant::now();
        match write_seat(&client, &args.shard, run, show, seat).await {
            (Result3::Acked, _) => writes.push(started.elapsed()),
            _ => return Err(format!("probe write of seat {seat} failed")),
        }
    }
    let view = admin.view(false).await;
    let leader = view.leader(&args.shard).map(|(id, _)| id);
    let mut elsewhere = 0;
    let stale_local = timed_reads(
        &client,
        &args.shard,
        args.local_node,
        Consistency::Stale,
        args.reads,
        &mut elsewhere,
    )
    .await?;
    let linearizable_local = timed_reads(
        &client,
        &args.shard,
        args.local_node,
        Consistency::Linearizable,
        args.reads,
        &mut elsewhere,
    )
    .await?;
    let linearizable_leader = match leader {
        Some(leader) => {
            timed_reads(
                &client,
                &args.shard,
                leader,
                Consistency::Linearizable,
                args.reads,
                &mut elsewhere,
            )
            .await?
        }
        None => Latency::default(),
    };
    let _ = client
        .write(
            &args.shard,
            &format!("drill-{run}-cancel"),
            CommandKind::CancelShow { show },
            Duration::from_secs(5),
        )
        .await;
    let report = ProbeReport {
        label: args.label,
        local_node: args.local_node,
        leader,
        write: latency(writes),
        stale_local,
        linearizable_local,
        linearizable_leader,
        answered_elsewhere: elsewhere,
    };
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| e.to_string())?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_split_at_the_action() {
        let ms = Duration::from_millis;
        let acks = vec![ms(0), ms(10), ms(20), ms(500), ms(510)];
        assert_eq!(longest_gap(&acks, ms(100), true), ms(480));
        assert_eq!(longest_gap(&acks, ms(100), false), ms(10));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = latency(samples);
        assert_eq!(l.count, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
    }
}
