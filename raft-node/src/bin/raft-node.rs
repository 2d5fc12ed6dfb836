//! The raft-node binary: see `raft_node::cli`.

/// mimalloc rather than glibc's malloc (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    raft_node::cli::main()
}
