//! The command line: `run` drives every chosen scenario against every chosen target at
//! every load, one fresh system state per run, and writes a JSON record per run plus
//! the report; `report` renders the report again from a results directory.

use crate::report::{self, Baseline, RunRecord, Throughput};
use crate::runner::{self, Bounds, Mode};
use crate::scenario::{ScenarioName, ScenarioSpec, ShowPool};
use crate::target::ours::{Ours, Rest};
use crate::target::postgres::Postgres;
use crate::target::redis::Redis;
use crate::target::{Target, TargetName};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Load generator for the seat ledger, PostgreSQL and Redis on one machine.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run scenarios against targets and write JSON records and the report.
    Run(Box<RunArgs>),
    /// Render report.md and the SVG plots from the JSON records in a directory.
    Report {
        /// Directory holding the records (`*.json`) of earlier runs.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Targets, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ours,rest,postgres,redis"
    )]
    pub targets: Vec<TargetName>,
    /// Scenarios, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "stampede,multi-city,browsing"
    )]
    pub scenarios: Vec<ScenarioName>,
    /// Closed-loop client counts, comma-separated (one run each), or `none`.
    #[arg(long, default_value = "1,16,64,256")]
    pub clients: String,
    /// Open-loop arrival rates in operations/s, comma-separated (one run each).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Connections that serve an open-loop run (operations in flight at most).
    #[arg(long, default_value_t = 256)]
    pub open_sessions: usize,
    /// Warm-up seconds before each measured window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds one target call may take before it counts as an error.
    #[arg(long, default_value_t = 10.0)]
    pub op_timeout: f64,
    /// Share of a show's seats taken before its city moves on to a fresh show.
    #[arg(long, default_value_t = 0.5)]
    pub fill: f64,
    /// Operations/s a closed-loop run is expected to reach at most; sizes the show pool.
    #[arg(long, default_value_t = 4_000.0)]
    pub expected_rate: f64,
    /// Most shows prepared per city and run.
    #[arg(long, default_value_t = 40)]
    pub shows_max: usize,
    /// PostgreSQL connection string (tokio-postgres format).
    #[arg(
        long,
        env = "LOADGEN_POSTGRES",
        default_value = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    )]
    pub postgres_url: String,
    /// Redis URL.
    #[arg(long, env = "LOADGEN_REDIS", default_value = "redis://127.0.0.1:6379/")]
    pub redis_url: String,
    /// Where the JSON records and the report go (created if missing).
    #[arg(long, default_value = "runs/loadgen")]
    pub out: PathBuf,
    /// Where our in-process cluster keeps its data (default: the output directory);
    /// put it on the same disk as PostgreSQL's data for a fair fsync.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Seed of the operation streams.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Skip the fsync and loopback probes.
    #[arg(long)]
    pub no_baseline: bool,
}

/// Most shows per city for targets whose shows cost nothing to prepare.
const SHOWS_FREE_MAX: usize = 100_000;

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    if value.is_finite() && (0.0..=3_600.0).contains(&value) {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!(
            "--{name} must be between 0 and 3600 seconds, not {value}"
        ))
    }
}

/// `1,16,256` or `none`.
fn parse_clients(text: &str) -> Result<Vec<usize>, String> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| {
            part.trim()
                .parse::<usize>()
                .map_err(|_| format!("--clients takes counts like 1,16,256 or none, not {text:?}"))
        })
        .collect()
}

impl RunArgs {
    fn validate(&self) -> Result<(Bounds, Vec<Mode>), String> {
        let bounds = Bounds {
            warmup: seconds("warmup", self.warmup)?,
            measure: seconds("duration", self.duration)?,
            op_timeout: seconds("op-timeout", self.op_timeout)?,
            seed: self.seed,
        };
        if bounds.measure.is_zero() || bounds.op_timeout.is_zero() {
            return Err("--duration and --op-timeout must be positive".into());
        }
        if !(self.fill > 0.0 && self.fill <= 1.0) {
            return Err(format!("--fill must be in (0, 1], not {}", self.fill));
        }
        if !(self.expected_rate.is_finite() && self.expected_rate > 0.0) {
            return Err("--expected-rate must be positive".into());
        }
        if self.shows_max == 0 || self.shows_max > 1_000 {
            return Err("--shows-max must be between 1 and 1000".into());
        }
        if self.targets.is_empty() || self.scenarios.is_empty() {
            return Err("name at least one target and one scenario".into());
        }
        let mut modes = Vec::new();
        for clients in parse_clients(&self.clients)? {
            if clients == 0 || clients > runner::SESSIONS_MAX {
                return Err(format!(
                    "--clients must be 1..={}, not {clients}",
                    runner::SESSIONS_MAX
                ));
            }
            modes.push(Mode::Closed { clients });
        }
        if self.open_sessions == 0 || self.open_sessions > runner::SESSIONS_MAX {
            return Err(format!(
                "--open-sessions must be 1..={}",
                runner::SESSIONS_MAX
            ));
        }
        for &rate in &self.rates {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1e6) {
                return Err(format!("--rates must be in (0, 1e6], not {rate}"));
            }
            modes.push(Mode::Open {
                rate,
                sessions: self.open_sessions,
            });
        }
        if modes.is_empty() {
            return Err("name at least one --clients count or --rates rate".into());
        }
        Ok((bounds, modes))
    }
}

/// Runs the command; the error says what to fix.
pub async fn main(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Run(args) => run(*args).await,
        Command::Report { dir } => write_report(&dir).map(|path| {
            println!("report: {}", path.display());
        }),
    }
}

async fn run(args: RunArgs) -> Result<(), String> {
    let (bounds, modes) = args.validate()?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("create {}: {e}", args.out.display()))?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| args.out.join("data"));
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("create {}: {e}", data_dir.display()))?;
    if !args.no_baseline {
        let baseline = crate::probe::baseline(&data_dir).await?;
        println!(
            "baseline: fsync p50 {} us, loopback RTT p50 {} us, budget {} us, load {}",
            baseline.fsync_p50_us,
            baseline.loopback_rtt_p50_us,
            baseline.lock_budget_us(),
            baseline.load_average
        );
        write_json(&args.out.join("baseline.json"), &baseline)?;
    }
    let mut failures = Vec::new();
    for &scenario in &args.scenarios {
        for &target in &args.targets {
            for &mode in &modes {
                match run_one(&args, &data_dir, scenario, target, mode, bounds).await {
                    Ok(record) => {
                        print_line(&record);
                        write_json(&args.out.join(record.file_name()), &record)?;
                    }
                    Err(error) => {
                        let what = format!("{} {} {mode:?}", scenario.as_str(), target.as_str());
                        eprintln!("FAILED {what}: {error}");
                        failures.push(format!("{what}: {error}"));
                    }
                }
            }
        }
    }
    let report = write_report(&args.out)?;
    println!("report: {}", report.display());
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} run(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        ))
    }
}

fn print_line(record: &RunRecord) {
    let lock = record.latency.get("lock").cloned().unwrap_or_default();
    println!(
        "{:<10} {:<8} {:>28}: {:>8.0} ops/s {:>8.0} locks/s  lock p50 {:>7.2} ms p99 {:>7.2} ms  errors {}  load {}",
        record.scenario.as_str(),
        record.target.as_str(),
        format!("{:?}", record.mode),
        record.throughput.operations,
        record.throughput.locks,
        lock.p50_us as f64 / 1e3,
        lock.p99_us as f64 / 1e3,
        record.counts.errors,
        record.load_average
    );
}

async fn run_one(
    args: &RunArgs,
    data_dir: &Path,
    scenario: ScenarioName,
    target: TargetName,
    mode: Mode,
    bounds: Bounds,
) -> Result<RunRecord, String> {
    let spec = scenario.spec();
    let timeout = bounds.op_timeout;
    match target {
        TargetName::Ours | TargetName::OursSaga => {
            let saga = target == TargetName::OursSaga;
            let ours = Ours::start(spec.cities, data_dir, timeout, saga).await?;
            drive(ours, target, args, &spec, mode, bounds).await
        }
        TargetName::Rest => {
            let rest = Rest::start(spec.cities, data_dir, timeout).await?;
            drive(rest, target, args, &spec, mode, bounds).await
        }
        TargetName::Postgres => {
            let postgres = Postgres::connect(&args.postgres_url).await?;
            drive(postgres, target, args, &spec, mode, bounds).await
        }
        TargetName::Redis => {
            let redis = Redis::connect(&args.redis_url).await?;
            drive(redis, target, args, &spec, mode, bounds).await
        }
    }
}

/// Prepares, runs and closes one target; closes it on failure too.
async fn drive<T: Target>(
    target: T,
    name: TargetName,
    args: &RunArgs,
    spec: &ScenarioSpec,
    mode: Mode,
    bounds: Bounds,
) -> Result<RunRecord, String> {
    let seconds = (bounds.warmup + bounds.measure).as_secs_f64();
    let rate = match mode {
        Mode::Closed { .. } => args.expected_rate,
        Mode::Open { rate, .. } => rate * 1.2,
    };
    let shows_per_city = if T::SHOWS_ARE_FREE {
        // Free shows need no estimate: enough for a million operations per second.
        spec.shows_per_city(1e6 * seconds, args.fill, SHOWS_FREE_MAX)
    } else {
        spec.shows_per_city(rate * seconds, args.fill, args.shows_max)
    };
    let system = target.describe();
    let prepared = target.prepare(spec, shows_per_city).await;
    let target = Arc::new(target);
    let outcome = match prepared {
        Ok(shows) => match ShowPool::new(shows, spec.seats_per_show(), args.fill) {
            Ok(pool) => runner::run(target.clone(), spec, Arc::new(pool), mode, bounds).await,
            Err(error) => Err(error),
        },
        Err(error) => Err(format!("prepare: {error}")),
    };
    close(target, bounds).await;
    let output = outcome?;
    let measured_s = output.measured.as_secs_f64();
    Ok(RunRecord {
        scenario: spec.name,
        target: name,
        system,
        mode,
        warmup_s: bounds.warmup.as_secs_f64(),
        measured_s,
        op_timeout_s: bounds.op_timeout.as_secs_f64(),
        seed: bounds.seed,
        cities: spec.cities,
        seats_per_show: spec.seats_per_show(),
        shows_per_city,
        shows_used: output.shows_used,
        pool_exhausted: output.pool_exhausted,
        throughput: Throughput::from_counts(&output.tally.counts, measured_s),
        counts: output.tally.counts.clone(),
        latency: output.tally.latencies.summaries(),
        error_samples: output.tally.error_samples.clone(),
        load_average: crate::probe::load_average(),
        finished_unix_s: api::auth::now_s(),
    })
}

/// Closes the target once the runner's tasks have let go of it (they finish within
/// two operation timeouts); a target still shared after that is left to the process.
async fn close<T: Target>(mut target: Arc<T>, bounds: Bounds) {
    let deadline = tokio::time::Instant::now() + bounds.op_timeout * 2 + Duration::from_secs(5);
    loop {
        match Arc::try_unwrap(target) {
            Ok(target) => return target.close().await,
            Err(shared) if tokio::time::Instant::now() < deadline => {
                target = shared;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                eprintln!("warning: a target was still in use after the run; not closed");
                return;
            }
        }
    }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))
}

/// Reads every run record in `dir` (other JSON files are skipped).
pub fn read_records(dir: &Path) -> Result<(Vec<RunRecord>, Option<Baseline>), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    let mut records = Vec::new();
    let mut baseline = None;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        if path.file_name().is_some_and(|name| name == "baseline.json") {
            baseline =
                Some(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?);
        } else if let Ok(record) = serde_json::from_str::<RunRecord>(&text) {
            records.push(record);
        }
    }
    Ok((records, baseline))
}

/// Writes `report.md` and one SVG per scenario into `dir`; returns the report's path.
pub fn write_report(dir: &Path) -> Result<PathBuf, String> {
    let (records, baseline) = read_records(dir)?;
    if records.is_empty() {
        return Err(format!("no run records in {}", dir.display()));
    }
    let text = report::render_markdown(
        &records,
        baseline.as_ref(),
        "seat-ledger vs PostgreSQL vs Redis",
    );
    let path = dir.join("report.md");
    std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    for scenario in ScenarioName::ALL {
        if let Some(svg) = report::render_svg(&records, scenario) {
            let svg_path = dir.join(format!("throughput-{}.svg", scenario.as_str()));
            std::fs::write(&svg_path, svg)
                .map_err(|e| format!("write {}: {e}", svg_path.display()))?;
        }
    }
    Ok(path)
}
