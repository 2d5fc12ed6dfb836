//! `bookingctl`: the operator's tool for a seat-ledger cluster. It speaks to the nodes'
//! admin API and client protocol (`raft-node/src/http.rs`), never to their storage,
//! except `restore`, which writes a stopped node's empty data directory once the cluster
//! confirms that node votes in none of the backup's shards.
//!
//! ```text
//! bookingctl --nodes 1=127.0.0.1:8001,2=127.0.0.1:8002 status
//! bookingctl --cluster cluster.toml leader transfer --shard mumbai --to 2
//! bookingctl --cluster cluster.toml drill transfer-leader --shard drill
//! ```

mod admin;
mod drill;
mod ops;
mod status;

use admin::Admin;
use clap::{Parser, Subcommand};
use raft_node::types::NodeId;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Operate a seat-ledger cluster: status, leadership, membership, snapshots, backups and failover drills"
)]
struct Cli {
    /// The nodes' client addresses: `ID=HOST:PORT,...` (or `HOST:PORT,...`, asking each
    /// node its id).
    #[arg(long, env = "BOOKINGCTL_NODES", value_delimiter = ',', global = true)]
    nodes: Vec<String>,
    /// A cluster file (TOML, as the nodes use) to take the nodes' client addresses from.
    #[arg(long, env = "BOOKINGCTL_CLUSTER", global = true)]
    cluster: Option<PathBuf>,
    /// How long one admin request may take, in seconds.
    #[arg(long, default_value_t = 5, global = true)]
    timeout_s: u64,
    /// The cluster CA certificate (PEM), for nodes that run with TLS; with the two
    /// options below bookingctl talks mutual TLS to them.
    #[arg(long, env = "SEAT_LEDGER_TLS_CA_FILE", global = true)]
    tls_ca_file: Option<PathBuf>,
    /// bookingctl's certificate (PEM), signed by the cluster CA.
    #[arg(long, env = "SEAT_LEDGER_TLS_CERT_FILE", global = true)]
    tls_cert_file: Option<PathBuf>,
    /// bookingctl's private key (PEM).
    #[arg(long, env = "SEAT_LEDGER_TLS_KEY_FILE", global = true)]
    tls_key_file: Option<PathBuf>,
    /// Your name in the audit trail of cluster operations (default: $USER).
    #[arg(long, env = "BOOKINGCTL_OPERATOR", global = true)]
    operator: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per shard: leader, term, members with region, role, applied index and lag.
    Status {
        /// Only this shard.
        #[arg(long)]
        shard: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Also each replica's ledger digest (equal digests at equal applied index mean
        /// identical replicas; costs a hash of each ledger).
        #[arg(long)]
        digest: bool,
    },
    /// Leadership: move a shard's leader, or every leadership off a node.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Membership of a shard: add a learner, promote it to voter, remove a voter.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Ask nodes to build a Raft snapshot now (purges the log behind it).
    Snapshot {
        #[arg(long)]
        shard: Option<String>,
        /// Only on this node (default: every node hosting the shard).
        #[arg(long)]
        node: Option<NodeId>,
    },
    /// Take an online backup of one node: a RocksDB checkpoint of its Raft log and each
    /// shard's ledger snapshot, verified by ledger digest. Written on the node's host
    /// under <data dir>/backups/<name>.
    Backup {
        #[arg(long)]
        node: NodeId,
        /// Backup name (default: backup-<node>-<unix ms>).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Verify a backup and restore it into the empty data directory of a stopped node
    /// (run it on that node's host). The node must first be removed from every shard's
    /// voters (`member remove`): bookingctl asks the cluster (--nodes/--cluster) and
    /// refuses otherwise. The restored node starts only as a non-voter; add it back with
    /// `member add`, then `member promote`.
    Restore {
        /// The backup directory (with manifest.json).
        #[arg(long)]
        from: PathBuf,
        /// The node's data directory: missing, empty, or holding only its fence.json.
        #[arg(long, required_unless_present = "verify_only")]
        data_dir: Option<PathBuf>,
        /// Only check the backup (digests, files), write nothing; needs no cluster.
        #[arg(long)]
        verify_only: bool,
        /// Every node of the cluster is being restored from the same backup set (all
        /// were lost): refused while any node of --nodes/--cluster answers.
        #[arg(long, conflicts_with = "verify_only")]
        whole_cluster: bool,
    },
    /// Failure drills: write continuously, act, then report unavailability, the new
    /// leader, and whether every acknowledged write survived.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// Measure write and read latency from where this runs (used by multi-region.sh).
    Probe(drill::ProbeArgs),
}

#[derive(Subcommand)]
enum LeaderCommand {
    /// Transfer a shard's leadership (to the most caught-up other voter by default).
    Transfer {
        #[arg(long)]
        shard: String,
        #[arg(long)]
        to: Option<NodeId>,
    },
    /// Transfer every shard the node leads to other voters (before maintenance).
    Drain {
        #[arg(long)]
        node: NodeId,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Create the shard's replica on a node and add it as a learner (it catches up).
    Add {
        #[arg(long)]
        shard: String,
        #[arg(long)]
        node: NodeId,
        #[arg(long)]
        peer_addr: String,
        #[arg(long)]
        client_addr: String,
        #[arg(long, default_value = "")]
        region: String,
    },
    /// Make a caught-up learner a voter.
    Promote {
        #[arg(long)]
        shard: String,
        #[arg(long)]
        node: NodeId,
    },
    /// Remove a voter (move its leadership away first).
    Remove {
        #[arg(long)]
        shard: String,
        #[arg(long)]
        node: NodeId,
    },
}

#[derive(Subcommand)]
enum DrillCommand {
    /// Planned leadership transfer under writes (target: <= 100 ms without writes).
    TransferLeader {
        #[command(flatten)]
        common: drill::DrillArgs,
        /// The new leader (default: the most caught-up other voter).
        #[arg(long)]
        to: Option<NodeId>,
    },
    /// SIGKILL the leader's process under writes (local clusters: the pid comes from
    /// /admin/status; target: p99 <= 1.5 s without writes).
    KillLeader {
        #[command(flatten)]
        common: drill::DrillArgs,
    },
    /// Cut a whole region off under writes with your commands (netns clusters, e.g.
    /// deploy/multi-region.sh cut REGION / heal REGION).
    IsolateRegion {
        #[command(flatten)]
        common: drill::DrillArgs,
        #[arg(long)]
        region: String,
        /// Shell command that cuts the region off.
        #[arg(long)]
        cut: String,
        /// Shell command that heals it (run at the end, also after a failure).
        #[arg(long)]
        heal: String,
    },
}

fn parse_nodes(cli: &Cli) -> Result<Vec<(Option<NodeId>, String)>, String> {
    let mut nodes = Vec::new();
    if let Some(path) = &cli.cluster {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the cluster file {}: {e}", path.display()))?;
        let file: raft_node::config::ClusterFile =
            toml::from_str(&text).map_err(|e| format!("cluster file {}: {e}", path.display()))?;
        for node in file.nodes {
            nodes.push((Some(node.id), node.client_addr));
        }
    }
    for item in &cli.nodes {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        match item.split_once('=') {
            Some((id, addr)) => {
                let id = id.trim().parse::<NodeId>().map_err(|_| {
                    format!("--nodes: {item:?}: the part before '=' must be a node id")
                })?;
                nodes.push((Some(id), addr.trim().to_owned()));
            }
            None => nodes.push((None, item.to_owned())),
        }
    }
    if nodes.is_empty() {
        return Err(
            "no nodes: pass --nodes ID=HOST:PORT,... or --cluster cluster.toml (or set BOOKINGCTL_NODES)"
                .into(),
        );
    }
    for (_, addr) in &nodes {
        if !addr.contains(':') || addr.contains('/') {
            return Err(format!(
                "node address {addr:?}: give the client address as HOST:PORT, without http://"
            ));
        }
    }
    Ok(nodes)
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Command::Restore {
        from,
        data_dir: None,
        ..
    }
    | Command::Restore {
        from,
        verify_only: true,
        ..
    } = &cli.command
    {
        return ops::verify(from);
    }
    let timeout = Duration::from_secs(cli.timeout_s.max(1));
    let tls = match (&cli.tls_ca_file, &cli.tls_cert_file, &cli.tls_key_file) {
        (Some(ca_file), Some(cert_file), Some(key_file)) => Some(
            raft_node::tls::ClusterTls::from_files(&raft_node::tls::TlsFiles {
                ca_file: ca_file.clone(),
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            })?,
        ),
        (None, None, None) => None,
        _ => {
            return Err(
                "TLS: give all of --tls-ca-file, --tls-cert-file and --tls-key-file, \
                 or none"
                    .into(),
            )
        }
    };
    let mut admin = Admin::connect(parse_nodes(&cli)?, timeout, tls).await?;
    if let Some(operator) = &cli.operator {
        admin.operator = operator.clone();
    }
    match cli.command {
        Command::Status {
            shard,
            json,
            digest,
        } => status::run(&admin, shard.as_deref(), json, digest).await,
        Command::Leader(LeaderCommand::Transfer { shard, to }) => {
            ops::transfer(&admin, &shard, to).await.map(|_| ())
        }
        Command::Leader(LeaderCommand::Drain { node }) => ops::drain(&admin, node).await,
        Command::Member(MemberCommand::Add {
            shard,
            node,
            peer_addr,
            client_addr,
            region,
        }) => ops::member_add(&admin, &shard, node, peer_addr, client_addr, region).await,
        Command::Member(MemberCommand::Promote { shard, node }) => {
            ops::member_promote(&admin, &shard, node).await
        }
        Command::Member(MemberCommand::Remove { shard, node }) => {
            ops::member_remove(&admin, &shard, node).await
        }
        Command::Snapshot { shard, node } => ops::snapshot(&admin, shard.as_deref(), node).await,
        Command::Backup { node, name, json } => ops::backup(&admin, node, name, json).await,
        Command::Drill(DrillCommand::TransferLeader { common, to }) => {
            drill::run(&admin, common, drill::Action::Transfer { to }).await
        }
        Command::Drill(DrillCommand::KillLeader { common }) => {
            drill::run(&admin, common, drill::Action::KillLeader).await
        }
        Command::Drill(DrillCommand::IsolateRegion {
            common,
            region,
            cut,
            heal,
        }) => {
            drill::run(
                &admin,
                common,
                drill::Action::IsolateRegion { region, cut, heal },
            )
            .await
        }
        Command::Probe(args) => drill::probe(&admin, args).await,
        Command::Restore {
            from,
            data_dir: Some(data_dir),
            whole_cluster,
            ..
        } => ops::restore(&admin, &from, &data_dir, whole_cluster).await,
        Command::Restore { from, .. } => ops::verify(&from),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bookingctl: {error}");
            ExitCode::FAILURE
        }
    }
}
