//! The node binary the Jepsen-style runs start: `raft_node::cli` built with this
//! crate's features (`fault-injection` for the clock control, `planted-bugs` for the
//! switchable faults). The production `raft-node` binary is built without them.

/// mimalloc rather than glibc's malloc (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    raft_node::cli::main()
}
