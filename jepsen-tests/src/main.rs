//! `jepsen-tests`: one bounded Jepsen-style run against a cluster of real node
//! processes, or a re-check of a recorded history.
//!
//! Exit status: 0 when every checker says `true`, 1 on any anomaly, 2 when a checker
//! could not decide (`unknown` is never a pass), 3 when the run itself failed.

use clap::Parser;
use jepsen_tests::checker::{check_all, CheckOptions, Validity};
use jepsen_tests::history::read_jsonl;
use jepsen_tests::nemesis::NemesisKind;
use jepsen_tests::procs::NetMode;
use jepsen_tests::runner::{run, RunConfig};
use jepsen_tests::workload::Workload;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Runs concurrent REST clients against a cluster of real node processes (each in its
/// own network namespace when run as root, on loopback otherwise) while a nemesis
/// injects faults, records the history, checks it, and writes history.jsonl,
/// results.json and report.html into a run directory.
///
/// Example: `cargo build -p jepsen-tests --features fault-injection --bins && cargo run
/// -p jepsen-tests --features fault-injection -- --time-limit 30 --clients 8 --seed 7
/// --workload bookings --nemesis partition,kill,pause,clock,transfer,membership`
#[derive(Parser, Debug)]
#[command(name = "jepsen-tests", version)]
struct Cli {
    /// Seconds the clients run (1 to 600).
    #[arg(long, default_value_t = 20)]
    time_limit: u64,
    /// Concurrent clients (1 to 64).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seed of the clients' and the nemesis' random choices; printed in the results so
    /// a run can be repeated.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// What the clients do: `register` (single-seat locks, releases and linearizable
    /// reads on four seats), `bookings` (locks, confirms, releases, linearizable and
    /// session reads, seat counts on two shows), `expiry` (1-2 s locks whose confirms
    /// race their expiry) or `saga` (payments with every sandbox outcome; the saga
    /// checker holds the final bookings against the gateway's books).
    #[arg(long, value_enum, default_value_t = Workload::Bookings)]
    workload: Workload,
    /// Fault classes, comma-separated; each round picks one: kill, pause, partition
    /// (root only), clock and clock-restart (need --features fault-injection), transfer,
    /// membership, gateway (saga workload), divergent-config, snapshot-catchup,
    /// wrong-restore; or none.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "none")]
    nemesis: Vec<NemesisKind>,
    /// Mean seconds between faults (at least 0.5).
    #[arg(long, default_value_t = 4.0)]
    nemesis_interval: f64,
    /// Target operations per second over all clients.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Operations the clients may start in the whole run.
    #[arg(long, default_value_t = 20_000)]
    max_ops: u64,
    /// Milliseconds a request may take before its outcome is recorded as unknown.
    #[arg(long, default_value_t = 8_000)]
    request_timeout_ms: u64,
    /// Milliseconds the api may spend on a request, its retries against the cluster
    /// included, before it answers 503 (an unknown outcome).
    #[arg(long, default_value_t = 2_000)]
    api_timeout_ms: u64,
    /// Directory under which each run gets its own directory.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Search states the linearizability checker may explore per seat; past it the
    /// verdict is `unknown`.
    #[arg(long, default_value_t = CheckOptions::default().max_states)]
    max_states: u64,
    /// Calls a history may have before every checker answers `unknown`.
    #[arg(long, default_value_t = CheckOptions::default().max_calls)]
    max_calls: usize,
    /// Tolerance in ms between the recorder's clock and the leaders' clock.
    #[arg(long, default_value_t = CheckOptions::default().clock_slack_ms)]
    clock_slack_ms: u64,
    /// Raft nodes in the cluster (1 to 7).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Network: `netns` (root) or `loopback`; default: netns when root, else loopback.
    #[arg(long, value_enum)]
    net: Option<NetMode>,
    /// The node binary; default: `jepsen-node` beside this executable.
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Planted bugs to switch on in every node, comma-separated (stale-follower-read,
    /// ack-before-commit, skip-idempotency, confirm-ignores-expiry); the node binary
    /// must be built with --features planted-bugs.
    #[arg(long, value_delimiter = ',')]
    planted_bug: Vec<String>,
    /// Keep the nodes' data directories in the run directory.
    #[arg(long)]
    keep_data: bool,
    /// Check this history.jsonl instead of running (prints the checkers' results).
    #[arg(long)]
    check: Option<PathBuf>,
}

impl Cli {
    fn check_options(&self) -> CheckOptions {
        CheckOptions {
            max_states: self.max_states,
            max_calls: self.max_calls,
            clock_slack_ms: self.clock_slack_ms,
            ..CheckOptions::default()
        }
    }

    fn run_config(&self) -> Result<RunConfig, String> {
        if !self.nemesis_interval.is_finite() || !(0.5..=600.0).contains(&self.nemesis_interval) {
            return Err("--nemesis-interval must be 0.5 to 600 seconds".into());
        }
        Ok(RunConfig {
            time_limit: Duration::from_secs(self.time_limit),
            clients: self.clients,
            seed: self.seed,
            workload: self.workload,
            nemesis: self.nemesis.clone(),
            nemesis_interval: Duration::from_secs_f64(self.nemesis_interval),
            rate: self.rate,
            ops_max: self.max_ops,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            api_timeout: Duration::from_millis(self.api_timeout_ms),
            out: self.out.clone(),
            check: self.check_options(),
            nodes: self.nodes,
            net: self.net,
            node_bin: self
                .node_bin
                .clone()
                .unwrap_or_else(jepsen_tests::procs::default_node_bin),
            planted_bugs: self.planted_bug.clone(),
            keep_data: self.keep_data,
        })
    }
}

fn exit(valid: Validity) -> ExitCode {
    match valid {
        Validity::Valid => ExitCode::SUCCESS,
        Validity::Invalid => ExitCode::from(1),
        Validity::Unknown => ExitCode::from(2),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // Crashes make openraft warn about every failed heartbeat; that is the point of the
        // run, not news. RUST_LOG overrides.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,openraft=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Some(path) = &cli.check {
        let summary = read_jsonl(path).and_then(|ops| check_all(&ops, &cli.check_options()));
        return match summary {
            Ok(summary) => {
                let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
                println!("{text}");
                exit(summary.valid)
            }
            Err(error) => {
                eprintln!("jepsen-tests: {error}");
                ExitCode::from(3)
            }
        };
    }
    let config = match cli.run_config().and_then(|c| c.validate().map(|()| c)) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("jepsen-tests: {error}");
            return ExitCode::from(3);
        }
    };
    println!(
        "jepsen-tests: replay with --time-limit {} --clients {} --seed {} --workload {} \
         --nemesis {} --nemesis-interval {} --rate {} --max-ops {} --api-timeout-ms {} \
         --nodes {}{}",
        cli.time_limit,
        cli.clients,
        cli.seed,
        cli.workload.as_str(),
        config.nemesis_names(),
        cli.nemesis_interval,
        cli.rate,
        cli.max_ops,
        cli.api_timeout_ms,
        cli.nodes,
        if cli.planted_bug.is_empty() {
            String::new()
        } else {
            format!(" --planted-bug {}", cli.planted_bug.join(","))
        }
    );
    match run(&config).await {
        Ok(report) => {
            print!("{}", report.text());
            exit(report.valid())
        }
        Err(error) => {
            eprintln!("jepsen-tests: the run failed: {error}");
            ExitCode::from(3)
        }
    }
}
