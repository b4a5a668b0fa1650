#![forbid(unsafe_code)]
use clap::Parser;

/// mimalloc: the event and JSON paths allocate heavily; see ADR 0006 for the measurement.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("OCART_LOG")
                .unwrap_or_else(|_| EnvFilter::new("warn,ocart=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = ocart_api::cli::Cli::parse();
    if let Err(err) = ocart_api::cli::run(cli).await {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
