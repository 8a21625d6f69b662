//! The command line of the `com.example.pump.Analyzer` component: the `pump-analyzer` binary, or
//! the `pump-station` multi-call binary run under that name.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::service::{self, Options, Stop};
use crate::verify::{self, VerifyError};
use clap::{Parser, Subcommand};

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "pump-analyzer",
    about = "Turns pump readings into anomaly events (Greengrass component).",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// The durable outbox for IoT Core (SQLite), e.g. in the component's work directory.
    #[arg(long, value_name = "FILE", required = true)]
    outbox: Option<PathBuf>,
    /// The core device's thing name.
    #[arg(long, env = "AWS_IOT_THING_NAME", required = true)]
    thing: Option<String>,
    /// The model component's directory (`model-card.json`, `model.onnx`); without it
    /// `detector: model|both` runs the rules and reports why.
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Loads a model directory with every check the component makes, compares tract's outputs
    /// with the reference outputs of its `test-vectors.json`, times loading and inference, and
    /// prints one JSON line. Exits 0 when the model loads and every vector agrees, 1 otherwise.
    VerifyModel {
        /// The model directory (`model-card.json`, `model.onnx`, optionally `test-vectors.json`).
        dir: PathBuf,
        /// Inference runs to time, one feature vector each.
        #[arg(long, default_value_t = 10_000)]
        runs: usize,
    },
}

fn verify_model(dir: PathBuf, runs: usize) -> ExitCode {
    match verify::verify(&dir, runs) {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            match &report.parity {
                Some(p) if !p.ok() => {
                    eprintln!("pump-analyzer: tract disagrees with the reference outputs: {}", p.mismatches.join("; "));
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(VerifyError::Model(e)) => {
            eprintln!("pump-analyzer: model refused: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pump-analyzer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line, runs until SIGTERM, returns the exit code.
#[tokio::main(flavor = "current_thread")]
pub async fn main() -> ExitCode {
    let args = match cli_shell::parse_args::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    cli_shell::init_logging("info");
    if let Some(Command::VerifyModel { dir, runs }) = args.command {
        return verify_model(dir, runs);
    }
    // clap requires both without a subcommand.
    let (Some(outbox), Some(thing)) = (args.outbox, args.thing) else {
        return ExitCode::from(cli_shell::EX_USAGE);
    };
    match service::run(Options { thing, outbox, model_dir: args.model_dir }).await {
        Ok(()) => {
            tracing::info!("pump-analyzer: stopping");
            ExitCode::SUCCESS
        }
        Err(Stop::Config(e)) => {
            tracing::error!("pump-analyzer: {e}");
            ExitCode::from(cli_shell::EX_CONFIG)
        }
        Err(Stop::Other(e)) => {
            tracing::error!("pump-analyzer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
