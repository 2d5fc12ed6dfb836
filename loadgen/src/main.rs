//! `loadgen`: see `loadgen --help` and the crate's README.

use clap::Parser;

/// mimalloc rather than glibc's malloc as in the api and node binaries, so the in-process cluster runs as they do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = loadgen::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the async runtime: {error}");
            std::process::exit(2);
        }
    };
    if let Err(error) = runtime.block_on(loadgen::cli::main(cli)) {
        eprintln!("loadgen: {error}");
        std::process::exit(1);
    }
}
