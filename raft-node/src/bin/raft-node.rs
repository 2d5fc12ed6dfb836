//! The raft-node binary: see `raft_node::cli`.

fn main() -> std::process::ExitCode {
    raft_node::cli::main()
}
