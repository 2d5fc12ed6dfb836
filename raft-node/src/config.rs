//! Node configuration: the cluster file shared by every node, and this node's own
//! settings. Everything is validated before the node starts; a bad file gives an error
//! that names the field, and nothing starts.

use crate::types::{NodeId, NodeInfo};
use serde::{Deserialize, Serialize};
use state_machine::Limits;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Largest number of shards one node hosts.
pub const SHARDS_PER_NODE_MAX: usize = 256;

/// The bootstrap description of a cluster. After bootstrap, membership lives in Raft and
/// changes only through the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub cluster_id: String,
    pub nodes: Vec<NodeEntry>,
    pub shards: Vec<ShardEntry>,
    /// Ledger limits; part of the replicated behaviour, so they live here, not per node.
    #[serde(default)]
    pub limits: Limits,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub id: NodeId,
    pub peer_addr: String,
    pub client_addr: String,
    #[serde(default)]
    pub region: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    pub name: String,
    pub members: Vec<NodeId>,
}

/// Raft timing, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one. Building pins
    /// the shard's RocksDB image and syncs it (it is encoded only for a follower that
    /// needs it); until the next one, RocksDB keeps the versions that image sees. When
    /// every snapshot exported the whole shard, 20,000 cost a 256-client on-sale ~10% of
    /// its CPU; 100,000 keeps ~10 MB of log per shard (entries are ~100 bytes).
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, for followers slightly behind.
    pub keep_entries_after_snapshot: u64,
    /// MiB written into each of a new node's first two Raft-log WAL files, so that its
    /// syncs overwrite from the start as a long-running node's do (RocksDB recycles WAL
    /// files; see `log_store::open_db`): 0 to 32. Only a new log database is prefilled.
    pub log_wal_prefill_mib: u64,
    /// Snapshots go to followers in chunks of this many KiB (`snapshot_transfer`):
    /// 1 to 16,384, well under the peer frame limit; each chunk waits for its answer, so
    /// other shards' heartbeats on the same connection wait behind one chunk at most.
    pub snapshot_chunk_kib: u64,
    /// Pace of a snapshot sent to one follower, MiB/s (0: no limit), so a replica
    /// catching up cannot take the leader's disk and network from its writes.
    pub snapshot_send_mib_per_s: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_after_entries: 100_000,
            keep_entries_after_snapshot: 1_000,
            log_wal_prefill_mib: 32,
            snapshot_chunk_kib: 1024,
            snapshot_send_mib_per_s: 200,
        }
    }
}

/// Everything one node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub cluster: ClusterFile,
    /// Shared by all nodes of the cluster; peers that cannot prove it are refused.
    pub cluster_secret: Vec<u8>,
    pub raft: RaftTiming,
    /// Mutual TLS on the peer transport and the client listener (cluster CA); `None`
    /// runs both in plain TCP (peers still prove the cluster secret).
    pub tls: Option<crate::tls::ClusterTls>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(message.into()))
}

/// Shard names become directory names and key prefixes: keep them plain.
pub fn check_shard_name(name: &str) -> Result<(), ConfigError> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !plain {
        return fail(format!("shard name {name:?}: use 1-64 of a-z, 0-9 and '-'"));
    }
    Ok(())
}

impl ClusterFile {
    pub fn node(&self, id: NodeId) -> Option<&NodeEntry> {
        self.nodes.iter().find(|node| node.id == id)
    }

    pub fn node_info(entry: &NodeEntry) -> NodeInfo {
        NodeInfo {
            peer_addr: entry.peer_addr.clone(),
            client_addr: entry.client_addr.clone(),
            region: entry.region.clone(),
        }
    }

    /// The initial members of a shard with their addresses.
    pub fn members(&self, shard: &ShardEntry) -> BTreeMap<NodeId, NodeInfo> {
        shard
            .members
            .iter()
            .filter_map(|id| self.node(*id).map(|entry| (*id, Self::node_info(entry))))
            .collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_id.is_empty() {
            return fail("cluster_id must not be empty");
        }
        if self.nodes.is_empty() {
            return fail("nodes: name at least one node");
        }
        let mut ids = BTreeSet::new();
        for node in &self.nodes {
            if !ids.insert(node.id) {
                return fail(format!("nodes: id {} appears twice", node.id));
            }
            for (field, addr) in [
                ("peer_addr", &node.peer_addr),
                ("client_addr", &node.client_addr),
            ] {
                if split_host_port(addr).is_none() {
                    return fail(format!(
                        "node {}: {field} {addr:?} is not host:port (an IP address or a DNS \
                         name, and a port 1-65535)",
                        node.id
                    ));
                }
            }
        }
        if self.shards.is_empty() {
            return fail("shards: name at least one shard (and a `global` shard for users)");
        }
        if self.shards.len() > SHARDS_PER_NODE_MAX {
            return fail(format!("shards: at most {SHARDS_PER_NODE_MAX} shards"));
        }
        let mut names = BTreeSet::new();
        for shard in &self.shards {
            check_shard_name(&shard.name)?;
            if !names.insert(shard.name.as_str()) {
                return fail(format!("shards: {} appears twice", shard.name));
            }
            if shard.members.is_empty() {
                return fail(format!("shard {}: name at least one member", shard.name));
            }
            if let Some(unknown) = shard.members.iter().find(|id| !ids.contains(id)) {
                return fail(format!(
                    "shard {}: member {unknown} is not in nodes",
                    shard.name
                ));
            }
        }
        self.limits
            .validate()
            .map_err(|e| ConfigError(e.to_string()))
    }
}

impl RaftTiming {
    /// What [`log_store::open_db`](crate::log_store::open_db) prefills, in bytes.
    pub fn log_wal_prefill_bytes(&self) -> u64 {
        self.log_wal_prefill_mib.saturating_mul(1 << 20)
    }

    /// How this node sends snapshots.
    pub fn snapshot_sending(&self) -> crate::network::SnapshotSending {
        crate::network::SnapshotSending {
            chunk_bytes: (self.snapshot_chunk_kib.clamp(1, 16_384) * 1024) as usize,
            bytes_per_s: self.snapshot_send_mib_per_s.saturating_mul(1 << 20),
        }
    }

    pub fn to_openraft(&self) -> Result<openraft::Config, ConfigError> {
        if !(1..=16_384).contains(&self.snapshot_chunk_kib) {
            return Err(ConfigError(format!(
                "raft timing: snapshot_chunk_kib = {} is outside 1..=16384",
                self.snapshot_chunk_kib
            )));
        }
        let max_mib = crate::log_store::WAL_PREFILL_BYTES_MAX >> 20;
        if self.log_wal_prefill_mib > max_mib {
            return fail(format!(
                "raft timing: log_wal_prefill_mib = {} is more than {max_mib} (half the Raft \
                 log's WAL cap); lower it, or 0 to prefill nothing",
                self.log_wal_prefill_mib
            ));
        }
        let config = openraft::Config {
            cluster_name: "seat-ledger".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_after_entries),
            max_in_snapshot_log_to_keep: self.keep_entries_after_snapshot,
            enable_pre_vote: Some(true),
            ..Default::default()
        };
        config
            .validate()
            .map_err(|e| ConfigError(format!("raft timing: {e}")))
    }
}

impl NodeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cluster.validate()?;
        if self.cluster.node(self.node_id).is_none() {
            return fail(format!(
                "node_id {} is not in the cluster file",
                self.node_id
            ));
        }
        if self.cluster_secret.len() < 16 {
            return fail("cluster secret: use at least 16 bytes");
        }
        self.raft.to_openraft().map(|_| ())
    }
}

/// Splits `host:port` where host is an IP address (IPv6 in brackets) or a DNS name
/// (letters, digits, `-`, `.`), as Kubernetes gives each StatefulSet pod. `None` when it
/// is neither.
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return Some((host, port));
    }
    let name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    name.then_some((host, port))
}

/// Where to listen for an address of the cluster file: the address itself when its host
/// is an IP address, else every interface on its port (a DNS name is how the others
/// reach this node, not an interface of it).
pub fn listen_addr(addr: &str) -> Option<String> {
    let (host, port) = split_host_port(addr)?;
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    Some(if ip.parse::<std::net::IpAddr>().is_ok() {
        addr.to_owned()
    } else {
        format!("0.0.0.0:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ips_or_dns_names_with_a_port() {
        for good in [
            "127.0.0.1:7001",
            "[::1]:7001",
            "raft-node-0.raft-node.seat-ledger.svc.cluster.local:7000",
            "localhost:8000",
        ] {
            assert!(split_host_port(good).is_some(), "{good}");
        }
        for bad in [
            "nowhere",
            "host:0",
            "host:70000",
            ":7000",
            "bad_name:7000",
            "-lead.example:7000",
            "a..b:7000",
            "127.0.0.1:0",
        ] {
            assert!(split_host_port(bad).is_none(), "{bad}");
        }
        assert_eq!(
            listen_addr("127.0.0.1:7001").as_deref(),
            Some("127.0.0.1:7001")
        );
        assert_eq!(listen_addr("[::1]:7001").as_deref(), Some("[::1]:7001"));
        assert_eq!(
            listen_addr("raft-node-0.raft-node:7000").as_deref(),
            Some("0.0.0.0:7000")
        );
    }

    fn cluster() -> ClusterFile {
        toml::from_str(
            r#"
            cluster_id = "test"
            [[nodes]]
            id = 1
            peer_addr = "127.0.0.1:7001"
            client_addr = "127.0.0.1:8001"
            region = "south"
            [[shards]]
            name = "mumbai"
            members = [1]
            [limits]
            seats_per_lock_max = 6
            "#,
        )
        .unwrap()
    }

    #[test]
    fn a_good_cluster_file_parses_and_validates() {
        let cluster = cluster();
        cluster.validate().unwrap();
        assert_eq!(cluster.limits.seats_per_lock_max, 6);
        assert_eq!(
            cluster.limits.lock_ttl_ms_default,
            Limits::default().lock_ttl_ms_default
        );
    }

    #[test]
    fn bad_cluster_files_name_the_problem() {
        let mut bad = cluster();
        bad.shards[0].members = vec![7];
        assert!(bad.validate().unwrap_err().0.contains("member 7"));
        let mut bad = cluster();
        bad.shards[0].name = "../etc".into();
        assert!(bad.validate().unwrap_err().0.contains("shard name"));
        let mut bad = cluster();
        bad.nodes[0].peer_addr = "nowhere".into();
        assert!(bad.validate().unwrap_err().0.contains("peer_addr"));
        let mut bad = cluster();
        bad.limits.seats_per_lock_max = 0;
        assert!(bad.validate().is_err());
        let unknown =
            toml::from_str::<ClusterFile>("cluster_id = \"x\"\nnodes = []\nshards = []\nextra = 1");
        assert!(unknown.is_err());
    }

    #[test]
    fn the_shipped_raft_timing_file_parses_and_a_prefill_past_its_bound_is_refused() {
        let shipped: RaftTiming =
            toml::from_str(include_str!("../../deploy/config/raft-timing.toml")).unwrap();
        shipped.to_openraft().unwrap();
        assert_eq!(shipped.log_wal_prefill_bytes(), 32 << 20);
        let too_much = RaftTiming {
            log_wal_prefill_mib: 33,
            ..RaftTiming::default()
        };
        let error = too_much.to_openraft().unwrap_err().0;
        assert!(error.contains("log_wal_prefill_mib = 33"), "{error}");
        assert!(error.contains("lower it"), "{error}");
    }
}
