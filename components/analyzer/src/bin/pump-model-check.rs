//! `pump-model-check DIR`: the analyzer's model checks ([`pump_analyzer::model::Model::load`])
//! as a program of their own, small enough to ship with every released version of the
//! `com.example.pump.Model` component. The component's Install step runs it on the version's
//! artifacts before it moves the `current` link: a model the analyzer would refuse fails the
//! Install, and so the deployment, which the nucleus then rolls back. `provision model release`
//! runs the same program on a model directory before it publishes anything.
//!
//! Prints one line: `model ok: NAME VERSION sha256 HEX` (exit 0), or `model refused: REASON`
//! naming the failed check (exit 1); 64 on bad command-line syntax.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pump_analyzer::model::Model;

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "pump-model-check", about = "Checks a model directory as the pump analyzer loads it.")]
struct Args {
    /// The model directory (`model-card.json` and the model file it names).
    dir: PathBuf,
}

fn main() -> ExitCode {
    let args = match cli_shell::parse_args::<Args>() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match Model::load(&args.dir) {
        Ok(model) => {
            println!("model ok: {} {} sha256 {}", model.card().name, model.version(), model.sha256());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("model refused: {e}");
            ExitCode::FAILURE
        }
    }
}
