//! `broker-bench`: the local cloud's MQTT broker side by side with Mosquitto,
//! over mutual TLS on loopback, in one run. See the crate README for what is
//! measured and how.
//!
//! # Layout
//! - `plan`: how many messages, connections and seconds each scenario gets.
//! - `machine`: what the machine is, process RSS, the open-files limit.
//! - `child`: broker processes, stopped by their pid whatever happens.
//! - `pki`: certificates for Mosquitto and TLS client configurations.
//! - `target`: a broker under test and the identities clients use with it.
//! - `mosquitto`, `local`: start and provision each broker.
//! - `client`: one MQTT client over MQTT 3.1.1 or MQTT 5 (rumqttc's `v4` and `v5` clients).
//! - `flow`: publishers → one subscriber, QoS 1 (1→1, fan-in, shadow deltas), with either version.
//! - `idle`: thousands of idle mTLS connections and the broker's RSS.
//! - `stats`, `report`: percentiles, the Markdown table and `docs/benchmarks.md`.
//! - `jobs`: `--jobs`, CreateJob → `notify-next` at many things (local cloud only).
//! - `deployments`: `--deployments`, Greengrass CreateDeployment → SUCCEEDED at many simulated
//!   cores (`device-sim core` processes), their memory and artifact download rate.
//! - `identity`: `--identity`, onboarding by claim, certificate rotation, and rotations
//!   interrupted by SIGKILL of `device-sim core` processes.
//! - `rules`: `--rules`, anomaly event → rule → Lambda → DynamoDB latency with the solution's
//!   cloud side deployed, and the broker's throughput with rules off and on.

mod child;
mod client;
mod deployments;
mod flow;
mod identity;
mod idle;
mod jobs;
mod local;
mod machine;
mod mosquitto;
mod pki;
mod plan;
mod report;
mod rules;
mod stats;
mod target;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(version, about = "Local cloud MQTT broker vs Mosquitto over mTLS on loopback")]
struct Cli {
    /// Small counts for a smoke run (seconds, not minutes).
    #[arg(long)]
    quick: bool,
    /// Write (or replace) the results section in this Markdown file, e.g. docs/benchmarks.md.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `local-cloud` binary; default: built with cargo next to this binary.
    #[arg(long)]
    local_cloud_bin: Option<PathBuf>,
    /// Benchmark the local cloud only, even if Mosquitto could be found or installed.
    #[arg(long)]
    no_mosquitto: bool,
    /// Run only the IoT Jobs benchmark: CreateJob → notify-next at `--things` subscribed things.
    #[arg(long)]
    jobs: bool,
    /// Things in the Jobs benchmark's thing group.
    #[arg(long, default_value_t = 100, requires = "jobs")]
    things: usize,
    /// Jobs created, one after another, in the Jobs benchmark.
    #[arg(long, default_value_t = 20, requires = "jobs")]
    rounds: usize,
    /// Run only the Greengrass deployments benchmark: CreateDeployment → SUCCEEDED at `--cores`
    /// simulated cores (`device-sim core` processes), their RSS, the artifact download rate.
    #[arg(long, conflicts_with = "jobs")]
    deployments: bool,
    /// Cores in the deployments benchmark's thing group (one more core gives the single-core
    /// figures), or the cores onboarded at once in the identity benchmark. Default 50.
    #[arg(long)]
    cores: Option<usize>,
    /// The deployment's IoT job rollout rate (`maximumPerMinute`); 0 for none.
    #[arg(long, default_value_t = 600, requires = "deployments")]
    rollout_per_minute: u32,
    /// Size of the deployed component's artifact, MiB.
    #[arg(long, default_value_t = 8, requires = "deployments")]
    artifact_mib: u64,
    /// Size of the large artifact the download rate is measured with, MiB.
    #[arg(long, default_value_t = 64, requires = "deployments")]
    download_mib: u64,
    /// The `device-sim` binary (`--deployments`, `--identity`); default: next to this binary.
    #[arg(long)]
    device_sim_bin: Option<PathBuf>,
    /// Run only the device identity benchmark: onboarding by claim of one core and of `--cores`
    /// at once, certificate rotations, and `--kills` rotations interrupted by SIGKILL.
    #[arg(long, conflicts_with_all = ["jobs", "deployments"])]
    identity: bool,
    /// Rotations interrupted by SIGKILL of the core (one per record write in turn).
    #[arg(long, default_value_t = 50, requires = "identity")]
    kills: usize,
    /// Rotations one after another on the core alone.
    #[arg(long, default_value_t = 10, requires = "identity")]
    rotations: usize,
    /// Run only the rules benchmark: anomaly event → rule → Lambda → DynamoDB latency with the
    /// cloud side deployed by `provision::app`, and the broker's throughput with rules off and on.
    #[arg(long, conflicts_with_all = ["jobs", "deployments", "identity"])]
    rules: bool,
    /// Where the function binaries `anomaly-handler` and `telemetry-aggregator` are; default: the
    /// local-cloud binary's directory.
    #[arg(long, requires = "rules")]
    functions_dir: Option<PathBuf>,
    /// Anomaly events in the paced phase of the rules benchmark.
    #[arg(long, default_value_t = 1_000, requires = "rules")]
    events: usize,
    /// Their rate, events per second over all devices.
    #[arg(long, default_value_t = 50, requires = "rules")]
    event_rate: u32,
    /// Devices (pump things) publishing the anomaly events, round-robin.
    #[arg(long, default_value_t = 100, requires = "rules")]
    devices: usize,
}

/// Cores when `--cores` is not given.
const DEFAULT_CORES: usize = 50;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("broker-bench: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        tokio::select! {
            r = run(cli) => r,
            // Dropping `run` drops the broker processes' guards, which stop them by pid.
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Don't wait for client tasks still parked on closed sockets.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.jobs {
        return run_jobs(cli).await;
    }
    if cli.deployments {
        return run_deployments(cli).await;
    }
    if cli.identity {
        return run_identity(cli).await;
    }
    if cli.rules {
        return run_rules(cli).await;
    }
    anyhow::ensure!(
        cli.cores.is_none() && cli.device_sim_bin.is_none(),
        "--cores and --device-sim-bin go with --deployments or --identity"
    );
    let plan = if cli.quick { plan::Plan::quick() } else { plan::Plan::full() };
    let command = report::command_line(cli.quick, cli.out.as_deref());
    let machine = machine::Machine::describe();
    let nofile = machine::raise_open_files_limit(plan.idle_steps.iter().copied().max().unwrap_or(0))
        .context("raising the open-files limit")?;
    eprintln!("open-files limit: {nofile}");

    let work = tempfile::Builder::new().prefix("broker-bench-").tempdir().context("creating a temporary directory")?;
    let clock = stats::Clock::new();

    let local_bin = local::binary(cli.local_cloud_bin.as_deref()).context("finding the local-cloud binary")?;
    let local = local::start(&local_bin, &work.path().join("local-cloud"), &plan).await.context("local cloud")?;
    let (mosquitto, mosquitto_note) = if cli.no_mosquitto {
        (None, "skipped (--no-mosquitto)".to_owned())
    } else {
        match mosquitto::locate_or_install().context("looking for Mosquitto")? {
            mosquitto::Found::Binary(bin) => {
                let m = mosquitto::start(&bin, &work.path().join("mosquitto"), &plan).await.context("Mosquitto")?;
                let version = m.version.clone();
                (Some(m), version)
            }
            mosquitto::Found::Missing(why) => {
                eprintln!("Mosquitto skipped: {why}");
                (None, format!("not run: {why}"))
            }
        }
    };

    let mut targets: Vec<&target::Target> = Vec::new();
    if let Some(m) = &mosquitto {
        targets.push(&m.target);
    }
    targets.push(&local.target);

    let mut results = report::Results::new(plan.clone(), command, machine, mosquitto_note);
    for t in &targets {
        eprintln!("== idle connections: {}", t.name);
        results.idle.push((t.kind, idle::run(t, &plan).await));
    }
    for (name, spec, flow_plan) in telemetry_scenarios(&plan) {
        let mut by_broker = Vec::new();
        for t in &targets {
            eprintln!("== {name}: {}", t.name);
            by_broker.push((t.kind, flow::run(t, &spec, &plan, flow_plan, clock).await));
        }
        results.flows.push((name, by_broker));
    }
    eprintln!("== shadow updates: {}", local.target.name);
    results.shadow = Some(flow::run(&local.target, &flow::Spec::shadow(), &plan, &plan.shadow, clock).await);

    let markdown = results.markdown();
    println!("{markdown}");
    if let Some(out) = &cli.out {
        report::write_section(out, &markdown).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    drop(mosquitto);
    local.stop();
    Ok(())
}

/// The publishers → subscriber scenarios on telemetry topics, each with MQTT 3.1.1 clients and
/// with MQTT 5 clients, and the fan-in with both versions at once: name, clients, counts.
fn telemetry_scenarios(plan: &plan::Plan) -> Vec<(String, flow::Spec, &plan::FlowPlan)> {
    use client::Protocol::{V5, V311};
    use flow::Clients::{All, Mixed};
    let n = plan.fan_in_publishers;
    let mut scenarios = Vec::new();
    for protocol in [V311, V5] {
        scenarios.push((format!("1→1 {protocol}"), flow::Spec::one_to_one(All(protocol)), &plan.one_to_one));
    }
    for protocol in [V311, V5] {
        scenarios.push((format!("{n}→1 {protocol}"), flow::Spec::fan_in(n, All(protocol)), &plan.fan_in));
    }
    scenarios.push((
        format!("{n}→1 mixed ({} × 3.1.1 + {} × 5 → 5)", n.div_ceil(2), n / 2),
        flow::Spec::fan_in(n, Mixed),
        &plan.fan_in,
    ));
    scenarios
}

async fn run_jobs(cli: Cli) -> anyhow::Result<()> {
    let work = tempfile::Builder::new().prefix("jobs-bench-").tempdir().context("creating a temporary directory")?;
    let bin = local::binary(cli.local_cloud_bin.as_deref()).context("finding the local-cloud binary")?;
    let build = if bin.components().any(|c| c.as_os_str() == "debug") { "debug build" } else { "release build" };
    let machine = bench_common::machine::Machine::describe().summary();
    let result = jobs::run(&bin, &work.path().join("local-cloud"), cli.things, cli.rounds).await?;
    let body = jobs::markdown(&result, &command_as_run(), &machine, build, cli.rounds);
    write_marked(cli.out.as_deref(), "broker-bench-jobs", &body)
}

async fn run_deployments(cli: Cli) -> anyhow::Result<()> {
    let work =
        tempfile::Builder::new().prefix("deployments-bench-").tempdir().context("creating a temporary directory")?;
    let (local_cloud_bin, device_sim_bin, build) = core_binaries(&cli)?;
    let cores = cli.cores.unwrap_or(DEFAULT_CORES);
    let options = deployments::Options {
        local_cloud_bin,
        device_sim_bin,
        cores,
        rollout_per_minute: (cli.rollout_per_minute > 0).then_some(cli.rollout_per_minute),
        artifact_mib: cli.artifact_mib,
        download_mib: cli.download_mib,
    };
    let machine = bench_common::machine::Machine::describe().summary();
    let result = deployments::run(&options, work.path()).await?;
    let body = deployments::markdown(&result, &options, &command_as_run(), &machine, build);
    // One section per group size and rollout rate, so several runs stay in the file side by side.
    let rollout = options.rollout_per_minute.map_or_else(|| "none".to_owned(), |r| r.to_string());
    write_marked(cli.out.as_deref(), &format!("broker-bench-deployments-{cores}-rollout-{rollout}"), &body)
}

/// The `local-cloud` and `device-sim` binaries, and whether they are debug or release builds.
fn core_binaries(cli: &Cli) -> anyhow::Result<(PathBuf, PathBuf, &'static str)> {
    let local_cloud_bin = local::binary(cli.local_cloud_bin.as_deref()).context("finding the local-cloud binary")?;
    let device_sim_bin = match &cli.device_sim_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("locating this binary")?.with_file_name("device-sim"),
    };
    let debug = [&local_cloud_bin, &device_sim_bin].iter().all(|b| b.components().any(|c| c.as_os_str() == "debug"));
    Ok((local_cloud_bin, device_sim_bin, if debug { "debug build" } else { "release build" }))
}

async fn run_identity(cli: Cli) -> anyhow::Result<()> {
    let work =
        tempfile::Builder::new().prefix("identity-bench-").tempdir().context("creating a temporary directory")?;
    let (local_cloud_bin, device_sim_bin, build) = core_binaries(&cli)?;
    let options = identity::Options {
        local_cloud_bin,
        device_sim_bin,
        cores: cli.cores.unwrap_or(DEFAULT_CORES),
        kills: cli.kills,
        rotations: cli.rotations,
    };
    let machine = bench_common::machine::Machine::describe().summary();
    let result = identity::run(&options, work.path()).await?;
    let body = identity::markdown(&result, &options, &command_as_run(), &machine, build);
    write_marked(cli.out.as_deref(), &format!("broker-bench-identity-{}", options.cores), &body)
}

async fn run_rules(cli: Cli) -> anyhow::Result<()> {
    anyhow::ensure!(
        cli.cores.is_none() && cli.device_sim_bin.is_none(),
        "--cores and --device-sim-bin go with --deployments or --identity"
    );
    let work = tempfile::Builder::new().prefix("rules-bench-").tempdir().context("creating a temporary directory")?;
    let local_cloud_bin = local::binary(cli.local_cloud_bin.as_deref()).context("finding the local-cloud binary")?;
    let functions_dir = match cli.functions_dir {
        Some(dir) => dir,
        None => local_cloud_bin.parent().context("the local-cloud binary has no directory")?.to_path_buf(),
    };
    let debug = [&local_cloud_bin, &functions_dir].iter().all(|p| p.components().any(|c| c.as_os_str() == "debug"));
    let build = if debug { "debug build" } else { "release build" };
    let options = rules::Options {
        local_cloud_bin,
        functions_dir,
        events: cli.events,
        event_rate: cli.event_rate,
        devices: cli.devices,
    };
    let machine = bench_common::machine::Machine::describe().summary();
    let result = rules::run(&options, work.path()).await?;
    let body = rules::markdown(&result, &options, &command_as_run(), &machine, build);
    write_marked(cli.out.as_deref(), "broker-bench-rules", &body)
}

/// The command as run: the profile this binary was built with, and its arguments.
fn command_as_run() -> String {
    let profile = if cfg!(debug_assertions) { "" } else { " --release" };
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run{profile} -p broker-bench -- {}", args.join(" "))
}

/// Prints `body` between the markers of `name`, and writes it into `out` when given.
fn write_marked(out: Option<&std::path::Path>, name: &str, body: &str) -> anyhow::Result<()> {
    let markers = bench_common::section::Markers::new(name);
    let section = format!("{}\n{}{}\n", markers.begin, body, markers.end);
    println!("{section}");
    if let Some(out) = out {
        bench_common::section::write_section(out, &section, &markers)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
