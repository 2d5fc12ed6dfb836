//! Command-line options of the benchmarks (`#[path = "common/args.rs"] mod args;`, and
//! from raft-node's benches by path too).

/// The number after `name` on the command line, if given.
pub fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}
