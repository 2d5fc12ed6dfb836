//! The load generator of the [perf] issue: the seat ledger (through its client protocol
//! and through REST) side by side with the seed design's PostgreSQL and Redis answers,
//! driven by the same scenarios on the same machine.
//!
//! Layout:
//! - `scenario`: the workloads (stampede, multi-city, browsing), their operations and
//!   the pool of shows each city sells;
//! - `target`: the systems under test behind one trait (`ours`, `postgres`, `redis`);
//! - `runner`: closed-loop and open-loop drivers with warm-up and bounded windows;
//! - `schedule`: open-loop arrival times (latency from the intended send time);
//! - `histogram`: HDR latency histograms per operation and their merge;
//! - `probe`: the machine's fsync and loopback round-trip latency;
//! - `report`: JSON records, the Markdown report and the SVG plots;
//! - `cli`: the `loadgen` command line.

pub mod cli;
pub mod histogram;
pub mod probe;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod schedule;
pub mod target;
