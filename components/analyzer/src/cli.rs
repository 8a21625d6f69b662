//! The command line of the `com.example.pump.Analyzer` component: the `pump-analyzer` binary, or
//! the `pump-station` multi-call binary run under that name.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::service::{self, Options, Stop};
use clap::Parser;

/// Exit code for a configuration error (sysexits `EX_CONFIG`), distinct from other failures.
const EXIT_CONFIG: u8 = 78;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "pump-analyzer", about = "Turns pump readings into anomaly events (Greengrass component).")]
struct Args {
    /// The durable outbox for IoT Core (SQLite), e.g. in the component's work directory.
    #[arg(long, value_name = "FILE")]
    outbox: PathBuf,
    /// The core device's thing name.
    #[arg(long, env = "AWS_IOT_THING_NAME")]
    thing: String,
}

/// Parses the command line, runs until SIGTERM, returns the exit code.
#[tokio::main(flavor = "current_thread")]
pub async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match service::run(Options { thing: args.thing, outbox: args.outbox }).await {
        Ok(()) => {
            tracing::info!("pump-analyzer: stopping");
            ExitCode::SUCCESS
        }
        Err(Stop::Config(e)) => {
            tracing::error!("pump-analyzer: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Stop::Other(e)) => {
            tracing::error!("pump-analyzer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
