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

fn main() -> std::process::ExitCode {
    let cli = match cli_shell::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli_shell::init_logging("info,rustls=error");
    let result = cli_shell::block_on(run(cli));
    // Every failure here is the machine's (a port in use, a data directory it cannot write): 1.
    cli_shell::exit_code("local-cloud", result, |_| false)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { data_dir, mqtt_addr, http_addr, region, account_id } => {
            let config = Config { data_dir, mqtt_addr, http_addr, region, account_id };
            let cloud = LocalCloud::start(config).await.context("starting the local cloud")?;
            tracing::info!(mqtt = %cloud.endpoints.mqtt, http = %cloud.endpoints.http, ca = %cloud.endpoints.ca_file.display(), "local cloud ready");
            let signal = cli_shell::shutdown_signal()?.await;
            tracing::info!("{signal} received; stopping");
            cloud.shutdown().await;
            Ok(())
        }
    }
}
