//! `sandbox-gateway`: the sandbox payment gateway as its own process.
//!
//! ```sh
//! SANDBOX_API_KEY=sk_test SANDBOX_WEBHOOK_SECRET=whsec_test \
//!   sandbox-gateway --listen 127.0.0.1:7070 --webhook-url http://127.0.0.1:8080/api/v1/payments/webhook
//! ```

use clap::Parser;
use gateway::sandbox::{self, SandboxConfig};
use gateway::wire::Behaviour;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "A sandbox payment gateway with signed webhooks and switchable failures"
)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: String,
    /// Callers authenticate with `Authorization: Bearer <key>`.
    #[arg(long, env = "SANDBOX_API_KEY")]
    api_key: String,
    /// Shared secret of the webhook signatures (HMAC-SHA256).
    #[arg(long, env = "SANDBOX_WEBHOOK_SECRET")]
    webhook_secret: String,
    /// Webhook URL of payments that name none.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Base of payment URLs (default: http://<listen address>).
    #[arg(long)]
    public_url: Option<String>,
    /// Milliseconds before an approving or declining method resolves.
    #[arg(long, default_value_t = 20)]
    result_delay_ms: u64,
    /// Extra copies of every webhook.
    #[arg(long, default_value_t = 0)]
    duplicate_webhooks: u32,
    /// Send each payment's events newest first, stale ones after.
    #[arg(long)]
    reorder_webhooks: bool,
    /// Send no webhooks (receivers must poll).
    #[arg(long)]
    drop_webhooks: bool,
    /// Milliseconds to wait before each webhook delivery.
    #[arg(long, default_value_t = 0)]
    webhook_delay_ms: u64,
    /// Attempts per webhook delivery.
    #[arg(long, default_value_t = 5)]
    delivery_attempts: u32,
    /// Deliver webhooks over kept-alive connections (default: one connection each).
    #[arg(long)]
    webhook_keep_alive: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    if args.api_key.len() < 8 || args.webhook_secret.len() < 16 {
        eprintln!("sandbox-gateway: use an api key of at least 8 and a webhook secret of at least 16 characters");
        return ExitCode::FAILURE;
    }
    let config = SandboxConfig {
        api_key: args.api_key,
        webhook_secret: args.webhook_secret.into_bytes(),
        default_webhook_url: args.webhook_url,
        public_url: args.public_url,
        behaviour: Behaviour {
            result_delay_ms: args.result_delay_ms,
            duplicate_webhooks: args.duplicate_webhooks,
            reorder_webhooks: args.reorder_webhooks,
            drop_webhooks: args.drop_webhooks,
            webhook_delay_ms: args.webhook_delay_ms,
            delivery_attempts: args.delivery_attempts,
            webhook_keep_alive: args.webhook_keep_alive,
            ..Behaviour::default()
        },
        payments_max: 1_000_000,
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("sandbox-gateway: cannot listen on {}: {error}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let running = match sandbox::start(config, listener) {
        Ok(running) => running,
        Err(error) => {
            eprintln!("sandbox-gateway: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("sandbox-gateway listening on {}", running.base_url());
    let _ = tokio::signal::ctrl_c().await;
    running.stop().await;
    ExitCode::SUCCESS
}
