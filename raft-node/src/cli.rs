//! The `raft-node` command line: hosts replicas of the shards the cluster file assigns to
//! the node. The binary is this module's `main`; the Jepsen-style suite builds the same
//! entry point with its test features (`fault-injection`, `planted-bugs`).
//!
//! `raft-node --node-id 1 --cluster cluster.toml --data-dir /var/lib/seat-ledger`
//! The cluster secret comes from `SEAT_LEDGER_CLUSTER_SECRET` or the file named by
//! `--cluster-secret-file`, never from the command line.

use crate::config::{ClusterFile, NodeConfig, RaftTiming};
use crate::server::RunningNode;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "raft-node",
    version,
    about = "A seat-ledger node hosting Raft replicas of city shards"
)]
struct Args {
    /// This node's id in the cluster file.
    #[arg(long, env = "SEAT_LEDGER_NODE_ID")]
    node_id: u64,
    /// The cluster file (TOML): nodes, shards, limits.
    #[arg(long, env = "SEAT_LEDGER_CLUSTER")]
    cluster: PathBuf,
    /// Where this node keeps its Raft log and ledger stores.
    #[arg(long, env = "SEAT_LEDGER_DATA_DIR")]
    data_dir: PathBuf,
    /// A file holding the cluster secret (alternative to SEAT_LEDGER_CLUSTER_SECRET).
    #[arg(long, env = "SEAT_LEDGER_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Optional TOML with Raft timing (heartbeat_ms, election_timeout_min_ms, ...).
    #[arg(long, env = "SEAT_LEDGER_RAFT_TIMING")]
    raft_timing: Option<PathBuf>,
    /// The cluster CA certificate (PEM). With the certificate and key files it switches
    /// on mutual TLS for peers and clients; without them the node runs without TLS and
    /// says so.
    #[arg(long, env = "SEAT_LEDGER_TLS_CA_FILE", requires_all = ["tls_cert_file", "tls_key_file"])]
    tls_ca_file: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the cluster CA.
    #[arg(long, env = "SEAT_LEDGER_TLS_CERT_FILE", requires = "tls_ca_file")]
    tls_cert_file: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, env = "SEAT_LEDGER_TLS_KEY_FILE", requires = "tls_ca_file")]
    tls_key_file: Option<PathBuf>,
}

/// The environment variable naming planted bugs to switch on (comma-separated; builds
/// with the `planted-bugs` feature only).
#[cfg(feature = "planted-bugs")]
pub const PLANTED_BUGS_VAR: &str = "SEAT_LEDGER_PLANTED_BUGS";

fn read(path: &PathBuf, what: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

fn config(args: &Args) -> Result<NodeConfig, String> {
    let cluster: ClusterFile = toml::from_str(&read(&args.cluster, "cluster file")?)
        .map_err(|e| format!("cluster file {}: {e}", args.cluster.display()))?;
    let secret = match (
        &args.cluster_secret_file,
        std::env::var("SEAT_LEDGER_CLUSTER_SECRET"),
    ) {
        (Some(_), Ok(_)) => {
            return Err(
                "both SEAT_LEDGER_CLUSTER_SECRET and a cluster secret file are set; \
                 set one of them"
                    .into(),
            )
        }
        (Some(path), Err(_)) => crate::secrets::read_file(path, "cluster secret")?,
        (None, Ok(secret)) => secret.trim_end().as_bytes().to_vec(),
        (None, Err(_)) => {
            return Err(
                "no cluster secret: set SEAT_LEDGER_CLUSTER_SECRET or --cluster-secret-file".into(),
            )
        }
    };
    let tls = match (&args.tls_ca_file, &args.tls_cert_file, &args.tls_key_file) {
        (Some(ca_file), Some(cert_file), Some(key_file)) => {
            Some(crate::tls::ClusterTls::from_files(&crate::tls::TlsFiles {
                ca_file: ca_file.clone(),
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            })?)
        }
        (None, None, None) => None,
        _ => {
            return Err(
                "TLS: name all of --tls-ca-file, --tls-cert-file and --tls-key-file \
                 (or none, to run without TLS)"
                    .into(),
            )
        }
    };
    let raft = match &args.raft_timing {
        Some(path) => toml::from_str(&read(path, "raft timing file")?)
            .map_err(|e| format!("raft timing: {e}"))?,
        None => RaftTiming::default(),
    };
    let config = NodeConfig {
        node_id: args.node_id,
        data_dir: args.data_dir.clone(),
        cluster,
        cluster_secret: secret,
        raft,
        tls,
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Parses the command line, starts the node, and runs it until SIGTERM or Ctrl-C.
/// Exit status 2 for bad arguments or configuration, 1 when the node cannot start.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    if let Err(error) = crate::secrets::refuse_secret_arguments(std::env::args().skip(1)) {
        eprintln!("raft-node: {error}");
        return ExitCode::from(2);
    }
    let args = Args::parse();
    let config = match config(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("raft-node: {error}");
            return ExitCode::from(2);
        }
    };
    #[cfg(feature = "planted-bugs")]
    if let Ok(list) = std::env::var(PLANTED_BUGS_VAR) {
        match state_machine::planted::enable_list(&list) {
            Ok(bugs) => tracing::warn!(
                ?bugs,
                "planted bugs switched on: this node is broken on purpose"
            ),
            Err(error) => {
                eprintln!("raft-node: {PLANTED_BUGS_VAR}: {error}");
                return ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("raft-node: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

async fn run(config: NodeConfig) -> ExitCode {
    let running = match RunningNode::bind_and_start(config).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("raft-node: {error}");
            return ExitCode::FAILURE;
        }
    };
    let tls = if running.node.tls().is_some() {
        "mutual TLS (cluster CA)"
    } else {
        "TLS OFF: plain TCP, peers authenticated by the cluster secret only"
    };
    println!(
        "raft-node {} ready: peers on {}, clients on {} ({tls})",
        running.node.id(),
        running.peer_addr,
        running.client_addr
    );
    wait_for_stop().await;
    tracing::info!("stopping");
    running.stop().await;
    ExitCode::SUCCESS
}

async fn wait_for_stop() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
