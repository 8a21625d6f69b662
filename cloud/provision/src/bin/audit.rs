//! `audit`: the service-delivery audit of a live deployment against AWS's Service Delivery
//! validation checklist for AWS IoT Greengrass (see `provision::audit::checklist`).
//!
//! - `audit run --out DIR`: reads the deployment (AWS or the local cloud, the same client setup as
//!   `provision`) and the run's figures, writes `CHECKLIST.md`, `checklist.json`, `CASE-STUDY.md`,
//!   `architecture.svg`, `evidence/` and `manifest.json`.
//! - `audit verify DIR`: re-collects as the run did and names every line and file that no longer
//!   matches.
//! - `audit init-input FILE`: writes the case study's input template.
//!
//! Exit codes: 0 success; 2 when `verify` found differences; 78 (`EX_CONFIG`) for bad input
//! (files, options, credentials, region); 64 for bad command-line syntax; 1 when AWS or the network
//! failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use provision::ProvisionError;
use provision::audit::collect::AuditClients;
use provision::audit::output::{self, RunOptions};
use provision::client::Target;

/// The exit code when `verify` found the audit no longer matches.
const DIFFERS_EXIT_CODE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "audit",
    version,
    about = "Audit a live Greengrass deployment against AWS's service delivery checklist",
    after_help = "Credentials, region and endpoint are resolved as for `provision`: the AWS default chain, \
                  --endpoint-url, else AWS_ENDPOINT_URL_IOT / AWS_ENDPOINT_URL or the profile's endpoint_url."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read the deployment and write the audit directory.
    Run(RunArgs),
    /// Check that a written audit directory still matches the deployment.
    Verify(VerifyArgs),
    /// Write the case study's input template (the partner's own fields, as placeholders).
    InitInput {
        /// The file to write (refused if it exists).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The audit directory to write.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The case study's input file (`audit init-input` writes a template).
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// The demo's report (default: target/demo/report.json under --workspace, when it exists).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Only the functions, tables, rules and alarms named with this prefix.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// Only the things and core devices of this thing group.
    #[arg(long, value_name = "GROUP")]
    thing_group: Option<String>,
    /// The model card (default: under --workspace, the card of the release the report's model
    /// version names, components/model/releases/VERSION/model-card.json, else
    /// components/model/model-card.json, when it exists).
    #[arg(long, value_name = "FILE")]
    model_card: Option<PathBuf>,
    /// The price list (default: docs/prices.json under --workspace, when it exists).
    #[arg(long, value_name = "FILE")]
    prices: Option<PathBuf>,
    /// The project's workspace: third-party packages, and where the defaults above are found.
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The audit directory `audit run` wrote.
    dir: PathBuf,
    #[command(flatten)]
    target: Target,
}

/// Every client of the audit for the `--endpoint-url`/`--region` flags.
async fn clients(target: &Target) -> AuditClients {
    AuditClients::new(&target.options()).await
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let options = RunOptions {
        thing_group: args.thing_group,
        prefix: args.prefix,
        input: args.input.map(|p| std::path::absolute(&p).unwrap_or(p)),
        ..RunOptions::with_workspace_defaults(&args.workspace, args.report, args.model_card, args.prices)
    };
    let clients = clients(&args.target).await;
    let audit = output::audit(&clients, &options, now()).await.context("reading the deployment")?;
    let lines = output::write(&args.out, &audit).context("writing the audit")?;
    let met = lines.iter().filter(|l| l.met).count();
    println!("audit written to {}: {met} of {} lines met", args.out.display(), lines.len());
    for l in lines.iter().filter(|l| !l.met) {
        let why: Vec<&str> = l.checks.iter().filter(|c| c.starts_with('✗')).map(String::as_str).collect();
        println!("- {} not met: {}", l.id, why.join("; "));
    }
    Ok(())
}

/// `verify` found differences.
#[derive(Debug, thiserror::Error)]
#[error("the audit no longer matches the deployment: {0} difference(s)")]
struct Differs(usize);

async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let options = output::read_options(&args.dir).context("reading the audit directory")?;
    let clients = clients(&args.target).await;
    let audit = output::audit(&clients, &options, now()).await.context("reading the deployment")?;
    let differences = output::verify(&args.dir, &audit).context("comparing")?;
    if differences.is_empty() {
        println!("{}: every line and file still matches the deployment", args.dir.display());
        return Ok(());
    }
    for d in &differences {
        println!("- {d}");
    }
    Err(Differs(differences.len()).into())
}

fn init_input(file: PathBuf) -> anyhow::Result<()> {
    if file.exists() {
        return Err(ProvisionError::InvalidInput(format!("{} exists: not overwritten", file.display())).into());
    }
    provision::output::write_atomic(&file, provision::audit::case_study::TEMPLATE.as_bytes(), 0o644)?;
    println!("wrote {}: replace every TODO, then `audit run --input {}`", file.display(), file.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = match cli_shell::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    cli_shell::init_logging("warn");
    let result = cli_shell::block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Verify(args) => verify(args).await,
            Command::InitInput { file } => init_input(file),
        }
    });
    if let Err(e) = &result
        && let Some(d) = e.downcast_ref::<Differs>()
    {
        eprintln!("audit: {d}");
        return ExitCode::from(DIFFERS_EXIT_CODE);
    }
    cli_shell::exit_code("audit", result, |e| cli_shell::caused_by(e, ProvisionError::is_configuration))
}
