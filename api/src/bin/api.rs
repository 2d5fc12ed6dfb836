//! The api binary: `api serve --config api.toml`, or `api demo` for an embedded
//! three-node cluster with sample cities, shows and seats on 127.0.0.1:8080.

use api::app::AppState;
use api::auth::Keys;
use api::config::ApiConfig;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(version, about = "The seat-ledger REST booking service")]
struct Args {
    #[command(subcommand)]
    command: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Serve the REST API against a running cluster.
    Serve {
        /// The api configuration (TOML): listen, region, nodes, cities, jwt, limits.
        #[arg(long, env = "SEAT_LEDGER_API_CONFIG")]
        config: PathBuf,
    },
    /// Run the notifications worker: follow the city shards' event streams and deliver
    /// to the configured webhook and SMTP server, resuming from its cursor in the ledger.
    Notify {
        /// The api configuration (TOML): where the nodes are, which cities.
        #[arg(long, env = "SEAT_LEDGER_API_CONFIG")]
        config: PathBuf,
        /// The worker's configuration (TOML): consumer, webhook, smtp, retries.
        #[arg(long)]
        notify: PathBuf,
    },
    /// Write a city's events whose shard time is in [from, to) as CSV.
    ExportEvents {
        #[arg(long, env = "SEAT_LEDGER_API_CONFIG")]
        config: PathBuf,
        /// A city id, or the global shard's name.
        #[arg(long)]
        city: String,
        /// RFC 3339 start (inclusive), e.g. 2026-11-24T00:00:00Z.
        #[arg(long)]
        from: String,
        /// RFC 3339 end (exclusive).
        #[arg(long)]
        to: String,
        /// Output file; `-` for standard output.
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
    /// Start an embedded 3-node cluster with sample data and serve the API.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Keep the cluster's data here (default: a temporary directory, removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn keys(config: &ApiConfig) -> Result<Keys, String> {
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"));
    let private = config
        .jwt
        .signing_key_file
        .as_deref()
        .map(read)
        .transpose()?;
    let public = config
        .jwt
        .verifying_key_files
        .iter()
        .map(|(kid, path)| read(path).map(|pem| (kid.clone(), pem)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut keys = Keys::from_pem(
        &config.jwt.signing_kid,
        private.as_deref(),
        &public,
        config.jwt.issuer.clone(),
        config.jwt.audience.clone(),
    )
    .map_err(|e| e.to_string())?;
    keys.access_ttl_s = config.jwt.access_ttl_s;
    keys.refresh_ttl_s = config.jwt.refresh_ttl_s;
    Ok(keys)
}

fn read_config(path: &PathBuf) -> Result<ApiConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Cluster access for the worker and the export: they issue no tokens, so the JWT keys
/// are throwaway ones.
fn client_state(config: ApiConfig) -> Result<api::app::Shared, String> {
    let (keys, _, _) =
        Keys::generate(&config.jwt.issuer, &config.jwt.audience).map_err(|e| e.to_string())?;
    Ok(Arc::new(AppState::new(
        config,
        keys,
        Arc::new(api::payment::SandboxGateway),
    )?))
}

async fn notify(config: PathBuf, notify: PathBuf) -> Result<(), String> {
    let state = client_state(read_config(&config)?)?;
    let text = std::fs::read_to_string(&notify)
        .map_err(|e| format!("cannot read {}: {e}", notify.display()))?;
    let worker_config: api::notify::NotifyConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", notify.display()))?;
    let worker = api::notify::Worker::new(state, worker_config)?;
    println!("notifications worker started");
    worker
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

async fn export_events(
    config: PathBuf,
    city: String,
    from: String,
    to: String,
    out: PathBuf,
) -> Result<(), String> {
    let config = read_config(&config)?;
    let shard = if city == config.global_shard {
        city.clone()
    } else {
        config
            .city(&city)
            .map(|c| c.shard.clone())
            .ok_or_else(|| format!("unknown city {city:?}"))?
    };
    let from_ms = api::views::parse_rfc3339(&from).ok_or("--from: an RFC 3339 time")?;
    let to_ms = api::views::parse_rfc3339(&to).ok_or("--to: an RFC 3339 time")?;
    let state = client_state(config)?;
    let writer: Box<dyn std::io::Write> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::io::BufWriter::new(
            std::fs::File::create(&out).map_err(|e| format!("{}: {e}", out.display()))?,
        ))
    };
    let summary = api::export::export_csv(&state, &shard, from_ms, to_ms, writer)
        .await
        .map_err(|problem| problem.detail)?;
    eprintln!("exported {} events of {shard}", summary.rows);
    if summary.truncated_by_retention {
        eprintln!(
            "warning: events before index {} are no longer kept; the range may miss older events",
            summary.kept_from
        );
    }
    Ok(())
}

async fn serve(path: PathBuf) -> Result<(), String> {
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config: ApiConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let keys = keys(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let state = Arc::new(AppState::new(
        config,
        keys,
        Arc::new(api::payment::SandboxGateway),
    )?);
    println!(
        "api listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    api::serve(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
    let result = match Args::parse().command {
        Mode::Serve { config } => serve(config).await,
        Mode::Demo { listen, data_dir } => api::demo::run(&listen, data_dir).await,
        Mode::Notify {
            config,
            notify: path,
        } => notify(config, path).await,
        Mode::ExportEvents {
            config,
            city,
            from,
            to,
            out,
        } => export_events(config, city, from, to, out).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("api: {error}");
            ExitCode::FAILURE
        }
    }
}
