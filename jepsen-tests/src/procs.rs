//! A cluster of real `raft-node` processes, and the controls a nemesis needs: kill -9
//! and restart (optionally with a cluster file of its own), SIGSTOP/SIGCONT, network
//! partitions, clock offsets, leader transfers, membership changes, snapshots, and each
//! replica's status with its ledger digest.
//!
//! The node binary is `jepsen-node` (this crate's build of `raft_node::cli`, with the
//! `fault-injection` and, on request, `planted-bugs` features).
//!
//! Two networks:
//! - `Loopback`: every node on 127.0.0.1 with its own ports. Everything but partitions.
//! - `Netns` (root only): every node in its own network namespace with its own address
//!   on a bridge; the runner reaches all of them through the bridge. Partitions are
//!   blackhole routes inside the namespaces, so they cut real peer traffic while clients
//!   still reach every node, as in Jepsen.
//!
//! Teardown is in `Drop`: children are SIGKILLed (`kill_on_drop`), namespaces, veths and
//! the bridge deleted, so a failing run leaves nothing behind. Namespaces left by a run
//! that was itself killed are removed by the next run (`Netns::sweep_stale`).

use crate::history::NemesisValue;
use raft_node::config::{ClusterFile, NodeEntry, ShardEntry};
use raft_node::http::{NodeStatus, ShardStatus};
use serde_json::{json, Value};
use state_machine::Limits;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The shards every node hosts.
pub const SHARDS: [&str; 2] = ["mumbai", "global"];
/// How long a started node may take to answer `/health/live`.
const LIVE_WITHIN: Duration = Duration::from_secs(15);
/// Admin calls are short; a node that does not answer within this is down or cut off.
const ADMIN_TIMEOUT: Duration = Duration::from_millis(800);
/// An online backup reads every shard's store; a test cluster's takes well under this.
const BACKUP_WITHIN: Duration = Duration::from_secs(20);
/// Prefix of every namespace, veth and bridge this module creates (interface names are
/// limited to 15 bytes).
const NET_PREFIX: &str = "sjt";

/// Which network the nodes live on.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    Loopback,
    Netns,
}

impl NetMode {
    /// Network namespaces when running as root with `ip` available, else loopback.
    pub fn detect() -> NetMode {
        if is_root() && run_ok("ip", &["-V"]) {
            NetMode::Netns
        } else {
            NetMode::Loopback
        }
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run_ok(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `ip` with `args`; the error names the command and its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e} (install iproute2)", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Network namespaces on a bridge: node `id` lives in `{prefix}{tag}n{id}` at
/// `10.{a}.{b}.{10 + id}`; the host side of the bridge is `.1`.
pub struct Netns {
    tag: String,
    net: (u8, u8),
    ids: Vec<u64>,
    /// Blackholed (from, to) pairs in force.
    cut: BTreeSet<(u64, u64)>,
}

impl Netns {
    fn bridge(&self) -> String {
        format!("{NET_PREFIX}{}br", self.tag)
    }

    pub fn namespace(&self, id: u64) -> String {
        format!("{NET_PREFIX}{}n{id}", self.tag)
    }

    fn veth(&self, id: u64) -> String {
        format!("{NET_PREFIX}{}v{id}", self.tag)
    }

    pub fn address(&self, id: u64) -> String {
        format!("10.{}.{}.{}", self.net.0, self.net.1, 10 + id)
    }

    /// Removes namespaces and bridges of earlier runs whose process is gone (their tag
    /// is the creating process id).
    pub fn sweep_stale() {
        let Ok(output) = std::process::Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
        else {
            return;
        };
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let namespaces = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let alive = |tag: &str| {
            tag.parse::<u32>()
                .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
        };
        for line in namespaces.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if let Some(rest) = name.strip_prefix(NET_PREFIX) {
                let tag = rest.split('n').next().unwrap_or_default();
                if !alive(tag) {
                    let _ = ip(&["netns", "del", name]);
                }
            }
        }
        for line in text.lines() {
            let name = line
                .split(':')
                .nth(1)
                .map(|n| n.trim().split('@').next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            if let Some(rest) = name.strip_prefix(NET_PREFIX) {
                let tag = rest.trim_end_matches("br");
                let tag = tag.split('v').next().unwrap_or_default();
                if !alive(tag) {
                    let _ = ip(&["link", "del", &name]);
                }
            }
        }
    }

    /// Creates the bridge and one namespace per node.
    pub fn create(ids: &[u64]) -> Result<Netns, String> {
        Netns::sweep_stale();
        let pid = std::process::id();
        // Two octets from the pid keep concurrent runs on distinct subnets.
        let net = (200 + (pid % 50) as u8, ((pid / 50) % 250) as u8 + 1);
        let mut netns = Netns {
            tag: pid.to_string(),
            net,
            ids: ids.to_vec(),
            cut: BTreeSet::new(),
        };
        if let Err(error) = netns.build() {
            netns.teardown();
            return Err(error);
        }
        Ok(netns)
    }

    fn build(&mut self) -> Result<(), String> {
        let bridge = self.bridge();
        let host = format!("10.{}.{}.1/24", self.net.0, self.net.1);
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&["addr", "add", &host, "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for &id in &self.ids.clone() {
            let ns = self.namespace(id);
            let veth = self.veth(id);
            let inner = format!("{veth}i");
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &veth, "master", &bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            let address = format!("{}/24", self.address(id));
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            ip(&["-n", &ns, "addr", "add", &address, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    /// Cuts traffic between the groups (both directions); nodes within a group, and
    /// the host, still reach each other. Replaces any earlier partition.
    pub fn partition(&mut self, groups: &[Vec<u64>]) -> Result<(), String> {
        self.heal()?;
        let group_of = |id: u64| groups.iter().position(|g| g.contains(&id));
        for from in self.ids.clone() {
            for to in self.ids.clone() {
                if from != to && group_of(from) != group_of(to) {
                    self.blackhole(from, to)?;
                }
            }
        }
        Ok(())
    }

    /// Drops every packet `from` sends to `to`.
    fn blackhole(&mut self, from: u64, to: u64) -> Result<(), String> {
        let target = format!("{}/32", self.address(to));
        let ns = self.namespace(from);
        ip(&["-n", &ns, "route", "add", "blackhole", &target])?;
        self.cut.insert((from, to));
        Ok(())
    }

    /// Cuts exactly the listed links (both directions), e.g. a ring or a bridge.
    pub fn cut_links(&mut self, links: &[(u64, u64)]) -> Result<(), String> {
        self.heal()?;
        for &(a, b) in links {
            self.blackhole(a, b)?;
            self.blackhole(b, a)?;
        }
        Ok(())
    }

    pub fn heal(&mut self) -> Result<(), String> {
        for (from, to) in std::mem::take(&mut self.cut) {
            let target = format!("{}/32", self.address(to));
            ip(&[
                "-n",
                &self.namespace(from),
                "route",
                "del",
                "blackhole",
                &target,
            ])?;
        }
        Ok(())
    }

    fn teardown(&mut self) {
        for &id in &self.ids {
            let _ = ip(&["netns", "del", &self.namespace(id)]);
            let _ = ip(&["link", "del", &self.veth(id)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// One node process.
struct ProcNode {
    entry: NodeEntry,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// A cluster file of this node's own (`divergent-config`), instead of the shared one.
    own_cluster_file: Option<PathBuf>,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// The `jepsen-node` binary.
    pub bin: PathBuf,
    pub nodes: usize,
    pub net: NetMode,
    /// Where node data and logs go.
    pub dir: PathBuf,
    pub timing: raft_node::config::RaftTiming,
    pub limits: Limits,
    /// Planted bugs to switch on in every node (`SEAT_LEDGER_PLANTED_BUGS`).
    pub planted_bugs: Vec<String>,
}

pub struct ProcCluster {
    spec: ClusterSpec,
    pub file: ClusterFile,
    cluster_path: PathBuf,
    timing_path: PathBuf,
    secret: String,
    nodes: BTreeMap<u64, ProcNode>,
    netns: Option<Netns>,
    http: reqwest::Client,
}

/// Ports that were free a moment ago (loopback mode).
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bind loopback: {e}"))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

impl ProcCluster {
    /// Writes the cluster file and starts every node; returns once each answers
    /// `/health/live` (leaders are the caller's to wait for).
    pub async fn start(spec: ClusterSpec) -> Result<ProcCluster, String> {
        if !spec.bin.is_file() {
            return Err(format!(
                "the node binary {} does not exist; build it with `cargo build -p jepsen-tests \
                 --features fault-injection --bins`",
                spec.bin.display()
            ));
        }
        if !(1..=7).contains(&spec.nodes) {
            return Err("a cluster has 1 to 7 nodes".into());
        }
        std::fs::create_dir_all(&spec.dir).map_err(|e| format!("{}: {e}", spec.dir.display()))?;
        let ids: Vec<u64> = (1..=spec.nodes as u64).collect();
        let netns = match spec.net {
            NetMode::Netns => Some(Netns::create(&ids)?),
            NetMode::Loopback => None,
        };
        let ports = free_ports(2 * ids.len())?;
        let entries: Vec<NodeEntry> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let (peer, client) = match &netns {
                    Some(netns) => (
                        format!("{}:7000", netns.address(id)),
                        format!("{}:8000", netns.address(id)),
                    ),
                    None => (
                        format!("127.0.0.1:{}", ports[2 * i]),
                        format!("127.0.0.1:{}", ports[2 * i + 1]),
                    ),
                };
                NodeEntry {
                    id,
                    peer_addr: peer,
                    client_addr: client,
                    region: format!("region-{id}"),
                }
            })
            .collect();
        let file = ClusterFile {
            cluster_id: format!("jepsen-{}", std::process::id()),
            nodes: entries.clone(),
            shards: SHARDS
                .iter()
                .map(|name| ShardEntry {
                    name: (*name).to_owned(),
                    members: ids.clone(),
                })
                .collect(),
            limits: spec.limits.clone(),
        };
        let cluster_path = spec.dir.join("cluster.toml");
        let timing_path = spec.dir.join("timing.toml");
        let text = toml::to_string(&file).map_err(|e| format!("cluster file: {e}"))?;
        std::fs::write(&cluster_path, text).map_err(|e| e.to_string())?;
        let text = toml::to_string(&spec.timing).map_err(|e| format!("timing: {e}"))?;
        std::fs::write(&timing_path, text).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .timeout(ADMIN_TIMEOUT)
            .connect_timeout(ADMIN_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let nodes = entries
            .into_iter()
            .map(|entry| {
                let id = entry.id;
                let node = ProcNode {
                    data_dir: spec.dir.join(format!("node-{id}")),
                    log: spec.dir.join(format!("node-{id}.log")),
                    entry,
                    child: None,
                    paused: false,
                    own_cluster_file: None,
                };
                (id, node)
            })
            .collect();
        let mut cluster = ProcCluster {
            spec,
            file,
            cluster_path,
            timing_path,
            secret: format!("jepsen-secret-{:032x}", fastrand::u128(..)),
            nodes,
            netns,
            http,
        };
        for id in ids {
            cluster.spawn(id, 0)?;
        }
        for id in cluster.ids() {
            cluster.wait_live(id).await?;
        }
        Ok(cluster)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn net(&self) -> NetMode {
        self.spec.net
    }

    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }

    pub fn timing(&self) -> &raft_node::config::RaftTiming {
        &self.spec.timing
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> Option<PathBuf> {
        self.nodes.get(&id).map(|n| n.data_dir.clone())
    }

    pub fn client_addr(&self, id: u64) -> Option<String> {
        self.nodes.get(&id).map(|n| n.entry.client_addr.clone())
    }

    pub fn entries(&self) -> Vec<NodeEntry> {
        self.nodes.values().map(|n| n.entry.clone()).collect()
    }

    /// Nodes whose process runs and is not paused.
    pub fn up(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.child.is_some() && !n.paused)
            .map(|(id, _)| *id)
            .collect()
    }

    fn spawn(&mut self, id: u64, clock_offset_ms: i64) -> Result<(), String> {
        let node = self
            .nodes
            .get(&id)
            .ok_or(format!("node {id} is not in this cluster"))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let cluster_path = node
            .own_cluster_file
            .clone()
            .unwrap_or_else(|| self.cluster_path.clone());
        let mut command = match &self.netns {
            Some(netns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &netns.namespace(id)])
                    .arg(&self.spec.bin);
                c
            }
            None => Command::new(&self.spec.bin),
        };
        command
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--cluster")
            .arg(&cluster_path)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--raft-timing")
            .arg(&self.timing_path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SEAT_LEDGER_CLUSTER_SECRET", &self.secret)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true);
        if !self.spec.planted_bugs.is_empty() {
            command.env("SEAT_LEDGER_PLANTED_BUGS", self.spec.planted_bugs.join(","));
        }
        if clock_offset_ms != 0 {
            command.env(
                raft_node::node::FAULT_CLOCK_OFFSET_VAR,
                clock_offset_ms.to_string(),
            );
        }
        let child = command
            .spawn()
            .map_err(|e| format!("start node {id} ({}): {e}", self.spec.bin.display()))?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.child = Some(child);
            node.paused = false;
        }
        Ok(())
    }

    async fn wait_live(&mut self, id: u64) -> Result<(), String> {
        let addr = self.client_addr(id).unwrap_or_default();
        let deadline = Instant::now() + LIVE_WITHIN;
        loop {
            let url = format!("http://{addr}/health/live");
            if let Ok(response) = self.http.get(&url).send().await {
                if response.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(child) = self.nodes.get_mut(&id).and_then(|n| n.child.as_mut()) {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "node {id} exited with {status} while starting; its log:\n{}",
                        self.log_tail(id, 20)
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {id} did not answer on {addr} within {LIVE_WITHIN:?}; its log:\n{}",
                    self.log_tail(id, 20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` lines of a node's log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let Some(node) = self.nodes.get(&id) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&node.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn pid(&self, id: u64) -> Option<nix::unistd::Pid> {
        let pid = self.nodes.get(&id)?.child.as_ref()?.id()?;
        Some(nix::unistd::Pid::from_raw(i32::try_from(pid).ok()?))
    }

    /// SIGKILL, then reap.
    pub async fn kill(&mut self, id: u64) -> Result<(), String> {
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(format!("node {id} is not in this cluster"))?;
        let Some(mut child) = node.child.take() else {
            return Err(format!("node {id} is not running"));
        };
        node.paused = false;
        child
            .kill()
            .await
            .map_err(|e| format!("kill node {id}: {e}"))?;
        Ok(())
    }

    /// Forgets a node process that may have exited by itself (e.g. refused to start),
    /// killing it if it still runs, so that it counts as down and can be started again.
    pub async fn reap(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill().await;
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused = false;
        }
    }

    /// Starts a killed node again on its addresses and data.
    pub async fn restart(&mut self, id: u64) -> Result<(), String> {
        if self.nodes.get(&id).is_some_and(|n| n.child.is_some()) {
            return Err(format!("node {id} is running"));
        }
        self.restart_with_clock_offset(id, 0).await
    }

    /// Starts a killed node again with its clock `offset_ms` off from its first instant
    /// (the fault-injection build reads it at start).
    pub async fn restart_with_clock_offset(
        &mut self,
        id: u64,
        offset_ms: i64,
    ) -> Result<(), String> {
        if self.nodes.get(&id).is_some_and(|n| n.child.is_some()) {
            return Err(format!("node {id} is running"));
        }
        self.spawn(id, offset_ms)?;
        self.wait_live(id).await
    }

    /// Starts a killed node again with the shared cluster file but `limits` as its
    /// `[limits]` (`None`: the shared file as it is). The node keeps that file across
    /// later restarts until this is called again with `None`.
    pub async fn restart_with_limits(
        &mut self,
        id: u64,
        limits: Option<Limits>,
    ) -> Result<(), String> {
        if self.nodes.get(&id).is_some_and(|n| n.child.is_some()) {
            return Err(format!("node {id} is running"));
        }
        let own = match limits {
            Some(limits) => {
                limits
                    .validate()
                    .map_err(|e| format!("node {id}'s own limits: {e}"))?;
                let file = ClusterFile {
                    limits,
                    ..self.file.clone()
                };
                let path = self.spec.dir.join(format!("cluster-node-{id}.toml"));
                let text = toml::to_string(&file).map_err(|e| format!("cluster file: {e}"))?;
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                Some(path)
            }
            None => None,
        };
        let node = self
            .nodes
            .get_mut(&id)
            .ok_or(format!("node {id} is not in this cluster"))?;
        node.own_cluster_file = own;
        self.spawn(id, 0)?;
        self.wait_live(id).await
    }

    fn signal(&mut self, id: u64, signal: nix::sys::signal::Signal) -> Result<(), String> {
        let pid = self.pid(id).ok_or(format!("node {id} is not running"))?;
        nix::sys::signal::kill(pid, signal).map_err(|e| format!("{signal} to node {id}: {e}"))
    }

    pub fn pause(&mut self, id: u64) -> Result<(), String> {
        self.signal(id, nix::sys::signal::Signal::SIGSTOP)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused = true;
        }
        Ok(())
    }

    pub fn resume(&mut self, id: u64) -> Result<(), String> {
        self.signal(id, nix::sys::signal::Signal::SIGCONT)?;
        if let Some(node) = self.nodes.get_mut(&id) {
            node.paused = false;
        }
        Ok(())
    }

    pub fn netns(&mut self) -> Result<&mut Netns, String> {
        self.netns.as_mut().ok_or_else(|| {
            "partitions need network namespaces: run as root (loopback clusters cannot be \
             partitioned)"
                .to_string()
        })
    }

    async fn admin(&self, id: u64, method: &str, path: &str, body: Value) -> Result<Value, String> {
        self.admin_within(id, method, path, body, None).await
    }

    /// `admin` with its own deadline instead of the client's.
    async fn admin_within(
        &self,
        id: u64,
        method: &str,
        path: &str,
        body: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, String> {
        let addr = self
            .client_addr(id)
            .ok_or(format!("node {id} is not in this cluster"))?;
        let url = format!("http://{addr}{path}");
        let mut request = match method {
            "POST" => self.http.post(&url).json(&body),
            _ => self.http.get(&url),
        };
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(format!("{method} {url}: {status}: {text}"));
        }
        serde_json::from_str(&text).or(Ok(Value::String(text)))
    }

    /// The node that says it leads `shard` with the highest term, asking every node that
    /// is up.
    pub async fn leader(&self, shard: &str) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for id in self.up() {
            let Ok(status) = self.admin(id, "GET", "/admin/status", Value::Null).await else {
                continue;
            };
            let Some(shards) = status["shards"].as_array() else {
                continue;
            };
            for s in shards.iter().filter(|s| s["shard"] == shard) {
                let term = s["term"].as_u64().unwrap_or(0);
                if s["state"]
                    .as_str()
                    .is_some_and(|st| st.eq_ignore_ascii_case("leader"))
                    && best.is_none_or(|(_, t)| term > t)
                {
                    best = Some((id, term));
                }
            }
        }
        best.map(|(id, _)| id)
    }

    pub async fn wait_leader(&self, shard: &str, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(leader) = self.leader(shard).await {
                return Some(leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A node's `/admin/status`; with `digest`, each shard's ledger digest and the
    /// index it was taken at.
    pub async fn status(&self, id: u64, digest: bool) -> Result<NodeStatus, String> {
        let path = if digest {
            "/admin/status?digest=true"
        } else {
            "/admin/status"
        };
        let value = self.admin(id, "GET", path, Value::Null).await?;
        serde_json::from_value(value).map_err(|e| format!("node {id}'s {path}: {e}"))
    }

    /// One shard's part of a node's `/admin/status`.
    pub async fn shard_status(&self, id: u64, shard: &str) -> Result<ShardStatus, String> {
        self.status(id, false)
            .await?
            .shards
            .into_iter()
            .find(|s| s.shard == shard)
            .ok_or(format!("node {id} does not host {shard}"))
    }

    /// Asks node `id` to build a snapshot of `shard` now (it purges its log behind it,
    /// keeping the timing's `keep_entries_after_snapshot`).
    pub async fn trigger_snapshot(&self, shard: &str, id: u64) -> Result<(), String> {
        let path = format!("/admin/shards/{shard}/snapshot");
        self.admin(id, "POST", &path, Value::Null).await.map(|_| ())
    }

    /// Takes an online backup of node `id` (`POST /admin/backup`); the directory it
    /// wrote, under the node's data directory.
    pub async fn backup(&self, id: u64, name: &str) -> Result<PathBuf, String> {
        let body = json!({ "name": name });
        let answer = self
            .admin_within(id, "POST", "/admin/backup", body, Some(BACKUP_WITHIN))
            .await?;
        answer["path"].as_str().map(PathBuf::from).ok_or(format!(
            "POST /admin/backup on node {id}: no path in {answer}"
        ))
    }

    /// Voters of `shard` as its leader reports them.
    pub async fn voters(&self, shard: &str, leader: u64) -> Result<Vec<u64>, String> {
        let status = self
            .admin(leader, "GET", "/admin/status", Value::Null)
            .await?;
        let shards = status["shards"].as_array().cloned().unwrap_or_default();
        let s = shards
            .iter()
            .find(|s| s["shard"] == shard)
            .ok_or(format!("node {leader} does not host {shard}"))?;
        Ok(s["members"]
            .as_array()
            .map(|members| {
                members
                    .iter()
                    .filter(|m| m["voter"].as_bool() == Some(true))
                    .filter_map(|m| m["id"].as_u64())
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn set_clock_offset(&self, id: u64, offset_ms: i64) -> Result<(), String> {
        self.admin(
            id,
            "POST",
            "/admin/fault/clock-offset",
            json!({ "offset_ms": offset_ms }),
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            format!("{e} (the node binary needs the fault-injection feature for clock faults)")
        })
    }

    pub async fn transfer_leader(&self, shard: &str, from: u64, to: u64) -> Result<(), String> {
        let path = format!("/admin/shards/{shard}/transfer-leader");
        self.admin(from, "POST", &path, json!({ "to": to }))
            .await
            .map(|_| ())
    }

    /// Makes `voters` the voting members of `shard`, through its leader.
    pub async fn set_voters(&self, shard: &str, leader: u64, voters: &[u64]) -> Result<(), String> {
        let path = format!("/admin/shards/{shard}/membership");
        self.admin(leader, "POST", &path, json!({ "voters": voters }))
            .await
            .map(|_| ())
    }

    /// Adds `id` back as a learner of `shard` (it catches up before it may vote).
    pub async fn add_learner(&self, shard: &str, leader: u64, id: u64) -> Result<(), String> {
        let entry = self
            .nodes
            .get(&id)
            .map(|n| n.entry.clone())
            .ok_or(format!("node {id} is not in this cluster"))?;
        let path = format!("/admin/shards/{shard}/learners");
        let body = json!({
            "node_id": id,
            "info": {
                "peer_addr": entry.peer_addr,
                "client_addr": entry.client_addr,
                "region": entry.region,
            },
        });
        self.admin(leader, "POST", &path, body).await.map(|_| ())
    }

    /// Every node running and unpaused, partitions healed, clocks reset.
    pub async fn heal_all(&mut self) -> Result<(), String> {
        if let Some(netns) = self.netns.as_mut() {
            netns.heal()?;
        }
        for id in self.ids() {
            let Some(node) = self.nodes.get(&id) else {
                continue;
            };
            if node.child.is_none() {
                self.restart(id).await?;
            } else if node.paused {
                self.resume(id)?;
            }
        }
        Ok(())
    }

    /// SIGTERM every node and wait (bounded) for it to exit; SIGKILL stragglers.
    pub async fn stop(mut self) {
        for id in self.ids() {
            let _ = self.resume(id);
            let _ = self.signal(id, nix::sys::signal::Signal::SIGTERM);
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let waited = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                if waited.is_err() {
                    let _ = child.kill().await;
                }
            }
        }
    }

    /// A nemesis line's value for node `id`.
    pub fn value(id: Option<u64>, note: impl Into<String>) -> NemesisValue {
        NemesisValue {
            node: id,
            shard: SHARDS[0].to_owned(),
            note: Some(note.into()),
        }
    }
}

/// The `jepsen-node` binary beside the running executable (`target/<profile>/`), or the
/// path in `JEPSEN_NODE_BIN`.
pub fn default_node_bin() -> PathBuf {
    if let Ok(path) = std::env::var("JEPSEN_NODE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    // Test executables live in target/<profile>/deps.
    let dir = if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    };
    dir.join("jepsen-node")
}
