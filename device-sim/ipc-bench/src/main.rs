//! `ipc-bench`: Greengrass IPC figures for the simulated core. Starts `device-sim core`
//! processes with measuring components (see the crate README), reads their results and the
//! processes' memory, and prints (or, with `--out`, writes) a section of `docs/benchmarks.md`.

mod core_run;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use core_run::{Artifacts, CoreRun};
use ipc_bench::plan::Plan;
use ipc_bench::recipes::{self, PUBLISHER, PYTHON_RTT, RUST_RTT, SUBSCRIBER};
use ipc_bench::report::{self, Memory, Outcome, Results};
use ipc_bench::wire::{PublisherResult, Ready, RttResult, SubscriberResult};

/// How long a component has to connect and write `ready.json`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a round-trip component has for its calls.
const RTT_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Parser)]
#[command(version, about = "Greengrass IPC figures for the simulated core: Rust kit::ipc vs AWS's Python clientv2")]
struct Cli {
    /// Small counts for a smoke run (well under a minute).
    #[arg(long)]
    quick: bool,
    /// Write (or replace) the results section in this Markdown file, e.g. docs/benchmarks.md.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The `device-sim` binary; default: `device-sim` next to this binary (build it with
    /// `cargo build --release -p device-sim`).
    #[arg(long)]
    device_sim_bin: Option<PathBuf>,
    /// The Python virtual environment with awsiotsdk; default: `target/venv` of the workspace,
    /// created or updated with `scripts/python-env.sh`.
    #[arg(long)]
    python_venv: Option<PathBuf>,
    /// Leave out the Python client.
    #[arg(long)]
    no_python: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipc-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The workspace this crate was built in (for `scripts/python-env.sh` and `target/venv`).
fn workspace_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    dir.canonicalize().unwrap_or(dir)
}

/// A binary next to this one (same cargo target directory and profile).
fn sibling(name: &str, explicit: Option<&Path>, hint: &str) -> anyhow::Result<PathBuf> {
    let bin = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().context("locating this binary")?.with_file_name(name),
    };
    anyhow::ensure!(bin.is_file(), "{} not found: {hint}", bin.display());
    Ok(bin)
}

/// Prepares the Python environment; `Ok((venv, description))` or why Python is left out.
fn python_env(cli: &Cli) -> Result<(PathBuf, String), String> {
    if cli.no_python {
        return Err("not run (--no-python)".into());
    }
    let venv = match &cli.python_venv {
        Some(v) => v.clone(),
        None => {
            let script = workspace_dir().join("scripts/python-env.sh");
            eprintln!("preparing the Python environment ({})", script.display());
            let status = Command::new("bash").arg(&script).status().map_err(|e| format!("not run: {e}"))?;
            if !status.success() {
                return Err(format!("not run: scripts/python-env.sh failed ({status})"));
            }
            workspace_dir().join("target/venv")
        }
    };
    let python = venv.join("bin/python3");
    let probe = Command::new(&python)
        .args([
            "-c",
            "import sys, importlib.metadata as m, awsiot.greengrasscoreipc.clientv2; \
             print('Python %s, awsiotsdk %s, awscrt %s' % (sys.version.split()[0], m.version('awsiotsdk'), m.version('awscrt')))",
        ])
        .output()
        .map_err(|e| format!("not run: {}: {e}", python.display()))?;
    if !probe.status.success() {
        return Err(format!("not run: awsiotsdk not importable: {}", String::from_utf8_lossy(&probe.stderr).trim()));
    }
    Ok((venv, String::from_utf8_lossy(&probe.stdout).trim().to_owned()))
}

/// `PATH` with the venv's `bin` first, so a recipe's `python3` is the venv's.
fn path_with(venv: Option<&Path>) -> anyhow::Result<OsString> {
    let mut dirs: Vec<PathBuf> = venv.map(|v| vec![v.join("bin")]).unwrap_or_default();
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    Ok(std::env::join_paths(dirs)?)
}

struct Env {
    device_sim: PathBuf,
    artifacts: Artifacts,
    path: OsString,
    dir: tempfile::TempDir,
    plan: Plan,
    python: bool,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let plan = if cli.quick { Plan::quick() } else { Plan::full() };
    let machine = bench_common::machine::Machine::describe();
    let mut results = Results::new(report::command_line(cli.quick, cli.out.as_deref()), machine, plan.clone());
    let device_sim = sibling(
        "device-sim",
        cli.device_sim_bin.as_deref(),
        "build it with `cargo build --release -p device-sim` (same CARGO_TARGET_DIR) or pass --device-sim-bin",
    )?;
    let rust = sibling("ipc-bench-component", None, "build it with `cargo build --release -p ipc-bench`")?;
    let python_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python").join(recipes::PYTHON_ARTIFACT);
    let venv = match python_env(&cli) {
        Ok((venv, about)) => {
            results.python = format!("{about} (`clientv2`), from `scripts/python-env.sh`'s pinned requirements");
            Some(venv)
        }
        Err(why) => {
            eprintln!("Python client left out: {why}");
            results.python = why.clone();
            results.rtt_python = Err(why.clone());
            results.python_rtt_ready = Err(why);
            None
        }
    };
    let env = Env {
        device_sim,
        artifacts: Artifacts { rust, python: python_script },
        path: path_with(venv.as_deref())?,
        dir: tempfile::Builder::new().prefix("ipc-bench-").tempdir()?,
        python: venv.is_some(),
        plan,
    };

    idle_cores(&env, &mut results);
    bench_core(&env, &mut results);

    let markdown = results.markdown();
    println!("{markdown}");
    if let Some(out) = &cli.out {
        bench_common::section::write_section(out, &markdown, &report::markers())
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("section written to {}", out.display());
    }
    Ok(())
}

/// Memory of a core with one idle component, then with `plan.idle_components`.
fn idle_cores(env: &Env, results: &mut Results) {
    let n = env.plan.idle_components;
    results.core_one = idle_core(env, 1).map(|(core, _)| core);
    match idle_core(env, n) {
        Ok((core, component)) => {
            results.core_many = Ok(core);
            results.rust_idle = Ok(component);
        }
        Err(e) => {
            results.core_many = Err(e.clone());
            results.rust_idle = Err(e);
        }
    }
}

/// Starts a core with `n` idle components, waits until each is connected, lets it settle and
/// reads its memory and the first component's.
fn idle_core(env: &Env, n: usize) -> Outcome<(Memory, Memory)> {
    let attempt = || -> anyhow::Result<(Memory, Memory)> {
        let components: Vec<_> = (1..=n).map(recipes::idle).collect();
        let dir = env.dir.path().join(format!("idle-{n}"));
        let mut core =
            CoreRun::start(&env.device_sim, &dir, &format!("idle-{n}"), &components, &env.artifacts, &env.path)?;
        let mut first = None;
        for c in &components {
            let ready: Ready = core.wait_json(&c.name, "ready.json", READY_TIMEOUT)?;
            core.track(ready.pid);
            first.get_or_insert(ready);
        }
        std::thread::sleep(env.plan.settle);
        let memory = core.memory();
        // The component's memory after the settle time too, not when it wrote ready.json.
        let component = first.map(|r| Memory {
            rss_kib: bench_common::machine::rss_kib(r.pid),
            hwm_kib: bench_common::machine::hwm_kib(r.pid),
        });
        core.stop();
        Ok((memory, component.unwrap_or_default()))
    };
    attempt().map_err(|e| format!("{e:#}"))
}

/// The benchmark core: round trips with both clients, then pub/sub.
fn bench_core(env: &Env, results: &mut Results) {
    let plan = &env.plan;
    let mut components = vec![recipes::rust_rtt(plan)];
    if env.python {
        components.push(recipes::python_rtt(plan));
    }
    components.extend([recipes::publisher(plan), recipes::subscriber()]);
    let dir = env.dir.path().join("bench");
    let mut core = match CoreRun::start(&env.device_sim, &dir, "bench", &components, &env.artifacts, &env.path) {
        Ok(core) => core,
        Err(e) => {
            let e = format!("{e:#}");
            (results.rtt_rust, results.pubsub) = (Err(e.clone()), Err(e.clone()));
            results.core_bench_ready = Err(e);
            return;
        }
    };
    let ready = |core: &mut CoreRun, name: &str| -> Outcome<Memory> {
        let r: Ready = core.wait_json(name, "ready.json", READY_TIMEOUT).map_err(|e| format!("{e:#}"))?;
        core.track(r.pid);
        Ok(Memory::from(&r))
    };
    results.rust_rtt_ready = ready(&mut core, RUST_RTT);
    if env.python {
        results.python_rtt_ready = ready(&mut core, PYTHON_RTT);
    }
    let publisher_ready = ready(&mut core, PUBLISHER);
    let subscriber_ready = ready(&mut core, SUBSCRIBER);
    std::thread::sleep(plan.settle);
    results.core_bench_ready = Ok(core.memory());

    if results.rust_rtt_ready.is_ok() {
        results.rtt_rust = rtt(&mut core, RUST_RTT);
    }
    if env.python && results.python_rtt_ready.is_ok() {
        results.rtt_python = rtt(&mut core, PYTHON_RTT);
    }
    results.pubsub = match (publisher_ready, subscriber_ready) {
        (Ok(_), Ok(_)) => pubsub(&mut core, plan),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    results.core_bench_after = Ok(core.memory());
    core.stop();
}

fn rtt(core: &mut CoreRun, component: &str) -> Outcome<RttResult> {
    eprintln!("round trips: {component}");
    let mut attempt = || -> anyhow::Result<RttResult> {
        core.go(component)?;
        core.wait_json(component, "result.json", RTT_TIMEOUT)
    };
    attempt().map_err(|e| format!("{e:#}"))
}

fn pubsub(core: &mut CoreRun, plan: &Plan) -> Outcome<(PublisherResult, SubscriberResult)> {
    eprintln!("pub/sub: {PUBLISHER} → {SUBSCRIBER}");
    let mut attempt = || -> anyhow::Result<(PublisherResult, SubscriberResult)> {
        core.go(PUBLISHER)?;
        let deadline = plan.pubsub_deadline();
        let publisher = core.wait_json(PUBLISHER, "result.json", deadline)?;
        let subscriber = core.wait_json(SUBSCRIBER, "result.json", Duration::from_secs(10))?;
        Ok((publisher, subscriber))
    };
    attempt().map_err(|e| format!("{e:#}"))
}
