//! Raft replication for the seat booking ledger: each city shard is a Raft group
//! (openraft) whose state machine is the `state-machine` ledger; one process hosts many.
//!
//! # Layout
//! - `types`: the openraft type configuration and `NodeInfo`.
//! - `log_store`: the RocksDB Raft log (vote, entries, purge point), shared by shards.
//! - `ledger_sm`: the openraft state machine over `state_machine::LedgerStore`.
//! - `transport`: framed, authenticated, multiplexed peer RPC over TCP (knows no Raft).
//! - `network`: openraft network traits over `transport`.
//! - `node`: the multi-raft host, client writes and reads, expiry sweeper.
//! - `protocol`: the client protocol types used by `api`.
//! - `client`: a routing, retrying client of that protocol (leader cache, failover).
//! - `http`: client protocol, admin API, health and metrics over HTTP.
//! - `clock`: cluster time; a leader whose clock is off its quorum's stops stamping.
//! - `config`: cluster file and node settings, validated.
//! - `server`: binding listeners and running a node.
//! - `backup`: online backups of a node (log checkpoint + ledger snapshots, verified by
//!   digest) and offline restores; used by the admin API and `bookingctl`.
//! - `fence`: the node's fence (highest vote term per shard, durable log sequence) beside
//!   the data a restore replaces, and the restore marker: a node whose log went
//!   backwards, or a restored node still a voter, refuses to start.
//! - `tls`: rustls configurations (mutual TLS against the cluster CA on the peer
//!   transport and the client listener), a TLS listener for axum, dev certificates.
//! - `secrets`: secrets from files or the environment, never from arguments.
//! - `audit`: records the admin API's cluster operations in the `global` audit trail.
//! - `cli`: the `raft-node` command line (also built by the Jepsen-style suite with its
//!   test features).
//! - `fuzzing` (feature `fuzzing` only): the decoders of peer bytes, for `fuzz/`.

pub mod audit;
pub mod backup;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod fence;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod group_commit;
pub mod http;
pub mod ledger_sm;
pub mod log_store;
pub mod network;
pub mod node;
pub mod protocol;
pub mod secrets;
pub mod server;
pub mod snapshot_transfer;
pub mod tls;
pub mod transport;
pub mod types;
