//! The command line: `ml-eval --dataset DIR --model-dir DIR [--split test|validation]
//! [--out FILE.json] [--markdown FILE.md]`.
//!
//! Exit codes: 0 after writing the report; 78 (`EX_CONFIG`) when the command line is wrong (an
//! unknown or missing option, a bad value); 1 for everything else: a dataset without a valid
//! manifest, a model the analyzer refuses, a replay that does not reproduce the dataset, an
//! unwritable output.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use device_sim::dataset::plan::Split;
use pump_analyzer::config::DetectorChoice;

use crate::replay::{self, Dataset};
use crate::report;

/// Exit code for a wrong command line (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: u8 = 78;

/// The split to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    /// The held-out runs: the evaluation.
    Test,
    /// The runs that chose the hyperparameters: for tuning without looking at the test runs.
    Validation,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Split {
        match s {
            SplitArg::Test => Split::Test,
            SplitArg::Validation => Split::Validation,
        }
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "ml-eval",
    about = "Scores the analyzer's rules, model and both on a device-sim dataset's held-out runs: per-class \
             precision, recall, F1 and detection delay.",
    after_long_help = "Writes the JSON report to --out (default: standard output) and the markdown tables to \
                       --markdown. Exit codes: 0 done, 78 wrong command line, 1 anything else (no valid manifest, \
                       a model the analyzer refuses, a dataset the replay does not reproduce, unwritable output)."
)]
pub struct Args {
    /// A directory written by `device-sim dataset` (its `manifest.json` is read; the runs are
    /// simulated again from their plans).
    #[arg(long, value_name = "DIR")]
    pub dataset: PathBuf,
    /// The model directory (`model-card.json`, `model.onnx`), checked as the analyzer checks it.
    #[arg(long, value_name = "DIR")]
    pub model_dir: PathBuf,
    /// The split whose runs are scored.
    #[arg(long, value_enum, default_value = "test")]
    pub split: SplitArg,
    /// Where the JSON report goes (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Where the markdown tables go.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

/// The training digest a model card records (`training_data.digest`), if any.
fn card_training_digest(model_dir: &Path) -> Option<String> {
    let card = std::fs::read(model_dir.join(pump_analyzer::model::CARD_FILE)).ok()?;
    let card: serde_json::Value = serde_json::from_slice(&card).ok()?;
    card.pointer("/training_data/digest")?.as_str().map(str::to_owned)
}

/// Runs the evaluation `args` asks for and returns the report.
pub fn evaluate(args: &Args) -> anyhow::Result<report::Report> {
    let dataset = Dataset::load(&args.dataset)?;
    let model = replay::load_model(&args.model_dir, &dataset)?;
    let split = Split::from(args.split);
    let replayed = replay::replay(&dataset, split, &model)?;
    // Every setting shares these; only `detector` differs.
    let config = replay::config_for(DetectorChoice::Rules, &dataset);
    Ok(report::build(&dataset, split, &model, card_training_digest(&args.model_dir), &config, &replayed))
}

/// Writes `text` to `path` (through a temporary file and a rename, so a reader never sees half).
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Evaluates and writes the outputs.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let report = evaluate(args)?;
    let mut json = serde_json::to_string_pretty(&report).context("cannot serialize the report")?;
    json.push('\n');
    match &args.out {
        Some(path) => write_file(path, &json)?,
        None => std::io::stdout().write_all(json.as_bytes()).context("cannot write the report to standard output")?,
    }
    if let Some(path) = &args.markdown {
        write_file(path, &report::markdown(&report))?;
    }
    let summary: Vec<String> =
        report.results.iter().map(|r| format!("{} macro F1 {:.3}", r.detector, r.windows.macro_f1)).collect();
    eprintln!(
        "ml-eval: {} split, {} runs, {} windows: {}",
        report.dataset.split,
        report.dataset.runs,
        report.dataset.windows,
        summary.join(", ")
    );
    Ok(())
}

/// Parses the command line, runs, returns the exit code.
pub fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_CONFIG) } else { ExitCode::SUCCESS };
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ml-eval: {e:#}");
            ExitCode::FAILURE
        }
    }
}
