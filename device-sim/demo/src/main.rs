//! `pump-station`: the project's main job.
//!
//! - `pump-station demo [--out DIR] [--keep-running]` runs the whole story offline in one
//!   process tree: the local cloud, provisioning through the AWS SDK, the plant, the simulated
//!   core running the three components from their recipes, and the four scenario steps; it exits
//!   0 when every step held and writes `report.json` and `report.md` (see [`demo`]).
//! - `pump-station footprint --component-bins DIR [--benchmarks FILE]` runs the demo with the
//!   components' own binaries and writes the "Edge footprint" section of `docs/benchmarks.md`
//!   (see [`footprint`]).
//! - `pump-station latency-bench [--speed-changes N] [--anomalies N] [--benchmarks FILE]`
//!   measures desired change → setpoint and anomaly event → protective action over hundreds of
//!   samples on a running site (see [`latency_bench`]).
//! - Run under a component's binary name (`pump-sensor`, …) it *is* that component: the demo
//!   stages this one executable as every component's artifact, so `cargo run` builds one binary
//!   and the recipes stay the real ones.
//!
//! # Layout
//! - [`demo`]: the scenario and its steps.
//! - [`observer`]: an MQTT client in the cloud that measures every message it sees.
//! - [`site`]: starting and stopping the pieces (cloud, plant, core) and staging the components.
//! - [`report`]: `report.json` and `report.md`.
//! - [`recovery`]: the core device dies with its disk; a replacement onboards by claim under its thing name.
//! - [`footprint`]: the core's and the components' binary size, memory and CPU time, from `/proc`.
//! - [`latency_bench`]: the control loop's latencies over enough samples for a p99.
//! - [`cost`]: what a pump site costs in AWS a month, this design against a naive one.
//! - [`rotation`]: the core's certificate rotated once through a rotation job.
//! - [`audit`]: the audit of the demo's own cloud, written under its output directory.

mod audit;
mod cost;
mod demo;
mod footprint;
mod latency_bench;
mod observer;
mod reaction;
mod recovery;
mod report;
mod rollout;
mod rotation;
mod site;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A component's entry point.
type ComponentMain = fn() -> ExitCode;

/// The components this binary can be, by the artifact name their recipe runs.
const COMPONENTS: &[(&str, ComponentMain)] = &[
    ("pump-sensor", pump_sensor::main),
    ("pump-analyzer", pump_analyzer::cli::main),
    ("pump-controller", pump_controller::main),
];

#[derive(Debug, Parser)]
#[command(name = "pump-station", version, about = "The pump station reference solution: the offline demo.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole story offline and writes the evidence.
    Demo(demo::DemoArgs),
    /// Benchmark: runs the demo with the components' own binaries and writes the edge
    /// footprint (binary sizes, memory, CPU time) as a section of a Markdown file.
    Footprint(footprint::FootprintArgs),
    /// Benchmark: desired change → setpoint and anomaly event → protective action at the plant,
    /// hundreds of samples each, on a running site; writes its section of a Markdown file.
    LatencyBench(latency_bench::LatencyBenchArgs),
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    let name = argv0.as_deref().and_then(|p| p.file_name()).and_then(|n| n.to_str()).unwrap_or_default();
    if let Some((_, component)) = COMPONENTS.iter().find(|(n, _)| *n == name) {
        return component();
    }
    let cli = match cli_shell::parse_args::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli.command {
        Command::Demo(args) => demo::main(args),
        Command::Footprint(args) => footprint::main(args),
        Command::LatencyBench(args) => latency_bench::main(args),
    }
}
