//! `pump-controller`, the Greengrass component `com.example.pump.Controller` (act): owns the
//! named shadow `pump` of the core's thing, applies its desired state to the pump over Modbus
//! TCP, takes protective actions on anomaly events, and reports what the pump does.
//!
//! # Layout
//! - [`config`]: the configuration (GetConfiguration), checked;
//! - [`settings`]: desired values validated into the settings in effect, and the plant
//!   commands they call for (pure);
//! - [`protection`]: the protective-action policy (pure, time passed in);
//! - [`model`]: the analyzer's model status as `reported.model` (pure);
//! - [`plant`]: the Modbus TCP link to the pump;
//! - [`stats`]: latency figures and counters in `stats.json`;
//! - [`updates`]: whether to defer a deployment's component update (pure, time passed in);
//! - [`controller`]: the shell that feeds `kit::shadow::ShadowSync` and the policy, and
//!   performs what they decide.
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 78 on a configuration error (so the nucleus marks the
//! component BROKEN after its retries instead of looping), 1 when IPC fails.

mod config;
mod controller;
mod model;
mod plant;
mod protection;
mod settings;
mod stats;
mod updates;

// Public for the fuzz checks (tests/fuzz-checks), which replay arbitrary plant answers through
// `PlantState::from_answers`, the controller's only reading of Modbus data.
pub use plant::{PlantError, PlantState};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use kit::ipc::IpcClient;
use kit::ipc::model::GetConfigurationRequest;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "pump-controller", about = "Drives the pump from its named shadow and acts on anomalies.")]
struct Args {
    /// Where latency figures and counters are kept (written atomically).
    #[arg(long, value_name = "FILE", default_value = "stats.json")]
    stats: PathBuf,
}

enum Failure {
    Config(String),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

/// The component's entry point (the `pump-controller` binary, or the `pump-station` multi-call
/// binary run under that name): runs until SIGTERM, returns the exit code.
#[tokio::main(flavor = "current_thread")]
pub async fn main() -> ExitCode {
    let args = match cli_shell::parse_args::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli_shell::init_logging("info");
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("pump-controller: configuration error: {message}");
            ExitCode::from(cli_shell::EX_CONFIG)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("pump-controller: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    let thing = std::env::var("AWS_IOT_THING_NAME")
        .ok()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Failure::Config("AWS_IOT_THING_NAME is not set (the nucleus sets it)".into()))?;
    let ipc = IpcClient::connect_from_env().await.context("connecting to the nucleus over IPC")?;
    let whole = GetConfigurationRequest { component_name: None, key_path: vec![] };
    let value = ipc.get_configuration(&whole).await.context("GetConfiguration")?.value;
    let config =
        config::Config::from_json(&config::with_environment(&value)).map_err(|e| Failure::Config(e.to_string()))?;
    tracing::info!(?config, thing, "starting");

    let signal = cli_shell::shutdown_signal()?;
    let mut shutdown = Box::pin(async move {
        signal.await;
    });
    let Some(controller) = controller::Controller::start(ipc, thing, config, args.stats, &mut shutdown).await? else {
        return Ok(());
    };
    controller.run(shutdown).await?;
    Ok(())
}
