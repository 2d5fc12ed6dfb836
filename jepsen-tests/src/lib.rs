//! Jepsen-style testing of the seat ledger: record what concurrent clients saw while
//! faults were injected, then judge the history with checkers.
//!
//! It knows the system only from outside: clients speak the REST contract, the
//! nemesis acts on real node processes (signals, network namespaces, the nodes' admin
//! API), and the final `read-bookings` uses raft-node's client protocol. Nothing here
//! reaches into a ledger's state.
//!
//! # Layout
//! - `history`: the operation format (Jepsen-shaped JSON lines), recorder, reader.
//! - `checker`: one module per property; each answers `true`, `false` or `unknown`.
//! - `workload`: what clients do (`register`, `bookings`) and how each REST answer
//!   becomes `ok`, `fail` or `info`.
//! - `procs`: a cluster of `jepsen-node` processes on loopback or in network
//!   namespaces, and its controls (kill, pause, partition, clock, transfer, membership,
//!   a node's own cluster file, snapshots, backups, status with ledger digests).
//! - `nemesis`: the seeded fault schedule over those controls.
//! - `runner`: one bounded run: cluster, API, clients, nemesis, final reads, checkers,
//!   `history.jsonl`, `results.json` and `report.html` in a run directory.
//! - `report`: the HTML report with its SVG latency plot.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod procs;
pub mod report;
pub mod runner;
pub mod workload;
