//! `local-cloud serve`: AWS IoT Core on this machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use local_cloud::server::{Config, LocalCloud};

#[derive(Parser)]
#[command(
    version,
    about = "AWS IoT Core in one process: mTLS MQTT broker, registry, Device Shadow service, AWS HTTP API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve until SIGINT or SIGTERM.
    Serve {
        /// Data directory: CA, database, endpoints.json.
        #[arg(long)]
        data_dir: PathBuf,
        /// MQTT over TLS listener (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:8883")]
        mqtt_addr: SocketAddr,
        /// HTTP listener (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:4566")]
        http_addr: SocketAddr,
        /// Region in ARNs.
        #[arg(long, default_value = "us-east-1")]
        region: String,
        /// Account id in ARNs.
        #[arg(long, default_value = "000000000000")]
        account_id: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,rustls=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("local-cloud: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { data_dir, mqtt_addr, http_addr, region, account_id } => {
            let config = Config { data_dir, mqtt_addr, http_addr, region, account_id };
            let cloud = LocalCloud::start(config).await.context("starting the local cloud")?;
            tracing::info!(mqtt = %cloud.endpoints.mqtt, http = %cloud.endpoints.http, ca = %cloud.endpoints.ca_file.display(), "local cloud ready");
            wait_for_signal().await?;
            tracing::info!("stopping");
            cloud.shutdown().await;
            Ok(())
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
