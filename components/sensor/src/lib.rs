//! `pump-sensor`, the Greengrass component `com.example.pump.Sensor` (sense): polls the pump
//! plant over Modbus TCP, publishes each reading on local pub/sub (`pump/readings`) and sends
//! batched telemetry to AWS IoT Core (`dt/pump/{thing}/telemetry`) through a durable outbox.
//!
//! # Layout
//! - [`config`]: the configuration document and its checks (pure).
//! - [`reading`]: Modbus words and bits → `pump_types::Reading` → telemetry row (pure).
//! - [`backoff`]: reconnect and retry pauses (pure).
//! - [`stats`]: the figures, their summary line, `stats.json`.
//! - [`plant`]: the Modbus TCP link (tokio-modbus), reconnecting with backoff.
//! - [`app`]: the I/O shell: IPC, the poll loop, the outbox drain.
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 78 for a configuration error (fix the deployment), 1 for
//! anything else (the core restarts the component).

mod app;
mod backoff;
mod config;
mod plant;
// Public (pure, no I/O) for the fuzz checks (tests/fuzz-checks), which replay arbitrary Modbus
// answers through `decode` and `telemetry_row`.
pub mod reading;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "pump-sensor", about = "Polls the pump over Modbus TCP; publishes readings and batched telemetry.")]
struct Args {
    /// The component's work directory (`{work:path}`): the telemetry outbox and `stats.json` live here.
    #[arg(long, value_name = "DIR", default_value = ".")]
    work_dir: PathBuf,
}

/// The component's entry point (the `pump-sensor` binary, or the `pump-station` multi-call binary
/// run under that name): parses the command line, runs until SIGTERM, returns the exit code.
pub fn main() -> ExitCode {
    let args = match cli_shell::parse_args::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli_shell::init_logging("info");
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pump-sensor: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(&args.work_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("pump-sensor: error: {e}");
            match e {
                app::Failure::Config(_) => ExitCode::from(cli_shell::EX_CONFIG),
                app::Failure::Runtime(_) => ExitCode::FAILURE,
            }
        }
    }
}
