//! The api binary: `api serve --config api.toml`, or `api demo` for an embedded
//! three-node cluster with sample cities, shows and seats on 127.0.0.1:8080.

use api::app::AppState;
use api::config::ApiConfig;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// mimalloc rather than glibc's malloc (see the workspace Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Run with TLS everywhere: a development CA made for this run, mutual TLS
        /// between the nodes and from the api to them, HTTPS on the listener (the CA
        /// certificate is written next to the data, for curl --cacert).
        #[arg(long)]
        tls: bool,
    },
}

fn read_config(path: &PathBuf) -> Result<ApiConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Cluster access for the worker and the export: they issue no tokens, so the JWT keys
/// are throwaway ones; they take no payments, but the state holds the configured gateway.
async fn client_state(config: ApiConfig) -> Result<api::app::Shared, String> {
    let (keys, _, _) = api::auth::Keys::generate(&config.jwt.issuer, &config.jwt.audience)
        .map_err(|e| e.to_string())?;
    let gateway = payment_gateway(&config).await?;
    Ok(Arc::new(AppState::new(config, keys, gateway)?))
}

async fn notify(config: PathBuf, notify: PathBuf) -> Result<(), String> {
    let state = client_state(read_config(&config)?).await?;
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
    let state = client_state(config).await?;
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

/// The configured gateway, or a sandbox inside this process when none is configured.
async fn payment_gateway(
    config: &ApiConfig,
) -> Result<Arc<dyn api::payment::PaymentGateway>, String> {
    let payment = &config.payment;
    if payment.gateway_url.is_empty() {
        eprintln!(
            "api: no payment.gateway_url configured; using a sandbox gateway in this process"
        );
        return Ok(Arc::new(api::payment::SandboxGateway::start().await?));
    }
    let read = |what: &str, path: &Option<String>| -> Result<String, String> {
        let path = path.as_deref().ok_or(format!(
            "payment.{what} must name a file when gateway_url is set"
        ))?;
        std::fs::read_to_string(path)
            .map(|text| text.trim().to_owned())
            .map_err(|e| format!("cannot read {path}: {e}"))
    };
    let api_key = read("api_key_file", &payment.api_key_file)?;
    let secret = read("webhook_secret_file", &payment.webhook_secret_file)?;
    Ok(Arc::new(api::payment::HttpGateway::new(
        &payment.gateway_url,
        &api_key,
        secret.as_bytes(),
        payment.webhook_tolerance_ms,
    )?))
}

async fn serve(path: PathBuf) -> Result<(), String> {
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config: ApiConfig =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let keys = api::secrets::jwt_keys(&config.jwt, &raft_node::secrets::process_env)?;
    let listener_tls = match config.tls.as_ref().and_then(|tls| tls.listener.as_ref()) {
        Some(files) => {
            let read = |path: &std::path::Path, what: &str| {
                std::fs::read(path)
                    .map_err(|e| format!("cannot read the TLS {what} {}: {e}", path.display()))
            };
            Some(raft_node::tls::public_server_config(
                &read(&files.cert_file, "certificate")?,
                &read(&files.key_file, "key")?,
            )?)
        }
        None => None,
    };
    let cluster_tls = config.tls.as_ref().is_some_and(|tls| tls.cluster.is_some());
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let gateway = payment_gateway(&config).await?;
    let state = Arc::new(AppState::new(config, keys, gateway)?);
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    match &listener_tls {
        Some(_) => println!("api listening on https://{local}"),
        None => println!("api listening on http://{local} (TLS OFF on the public listener)"),
    }
    if !cluster_tls {
        println!("api: TLS OFF to the raft-nodes (plain HTTP client protocol)");
    }
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match listener_tls {
        Some(tls) => api::serve_tls(listener, tls, state, shutdown).await,
        None => api::serve(listener, state, shutdown).await,
    }
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
    if let Err(error) = raft_node::secrets::refuse_secret_arguments(std::env::args().skip(1)) {
        eprintln!("api: {error}");
        return ExitCode::from(2);
    }
    let result = match Args::parse().command {
        Mode::Serve { config } => serve(config).await,
        Mode::Demo {
            listen,
            data_dir,
            tls,
        } => api::demo::run(&listen, data_dir, tls).await,
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
