//! Jepsen-style testing of the seat ledger: record what concurrent clients saw while
//! faults were injected, then judge the history with checkers.
//!
//! It knows the system only from outside: clients speak the REST contract, the
//! nemesis crashes and restarts nodes of the in-process demo cluster, and the final
//! `read-bookings` uses raft-node's client protocol. Nothing here reaches into a
//! ledger's state.
//!
//! # Layout
//! - `history`: the operation format (Jepsen-shaped JSON lines), recorder, reader.
//! - `checker`: one module per property; each answers `true`, `false` or `unknown`.
//! - `workload`: what clients do (`register`, `bookings`) and how each REST answer
//!   becomes `ok`, `fail` or `info`.
//! - `nemesis`: the kill-and-restart fault schedule.
//! - `runner`: one bounded run: cluster, API, clients, nemesis, final reads, checkers,
//!   `history.jsonl` and `results.json` in a run directory.

pub mod checker;
pub mod history;
pub mod nemesis;
pub mod runner;
pub mod workload;
