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
    let keys = keys(&config)?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let gateway = payment_gateway(&config).await?;
    let state = Arc::new(AppState::new(config, keys, gateway)?);
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("api: {error}");
            ExitCode::FAILURE
        }
    }
}
