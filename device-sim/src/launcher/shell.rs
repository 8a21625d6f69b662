//! The launcher's process shell: prepares the alts directory, runs the core, waits for the
//! events [`Launcher`] decides on (the core's exit, `old` going away, the deadline, a stop
//! signal) and carries out its actions. There is no notification for a removed link, so `old`
//! is looked at every [`POLL`] while a core is on probation.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::alts::{self, Link, LinkName};
use super::machine::{Action, Event, Exit, Launcher, RollbackCause, Settings};
use super::store::AltsDir;

/// How often `old` is looked at while a core is on probation.
const POLL: Duration = Duration::from_millis(100);
/// How long a core that is being killed gets between SIGTERM and SIGKILL: the simulated core
/// stops its components within 30 s.
const KILL_GRACE: Duration = Duration::from_secs(35);
/// Crashes in a row before the launcher gives up (the loader's three attempts).
const MAX_CRASHES: u32 = 3;

/// What the launcher runs (the `device-sim launcher` flags).
#[derive(Debug, Clone)]
pub struct LauncherOptions {
    /// The core's root; the alts directory is `{root}/alts`, and the core gets `--root {root}`.
    pub root: PathBuf,
    /// How long a new version has to prove itself.
    pub health_deadline: Duration,
    /// The arguments after `device-sim core --root {root}`.
    pub core_args: Vec<OsString>,
    /// The version the running executable is installed as on the first start.
    pub initial_version: String,
}

/// Runs the core until it stops for good; returns the launcher's exit code.
pub async fn run(options: LauncherOptions) -> anyhow::Result<u8> {
    let alts = AltsDir::new(&options.root);
    let running = std::env::current_exe().context("cannot find the launcher's own executable")?;
    let mut stop = std::pin::pin!(cli_shell::shutdown_signal()?);
    let mut stop_seen = false;
    let mut machine = Launcher::new(Settings { health_deadline: options.health_deadline, max_crashes: MAX_CRASHES });
    loop {
        let prepared = alts::prepare(&alts.observe()?, &options.initial_version);
        for change in &prepared.changes {
            tracing::info!(?change, "alts directory");
            alts.apply(change, &running)?;
        }
        let version = prepared.launch;
        let binary = alts.binary(&version);
        let mut child = tokio::process::Command::new(&binary)
            .arg("core")
            .arg("--root")
            .arg(&options.root)
            .args(&options.core_args)
            .arg("--nucleus-version")
            .arg(&version)
            // Its own process group, so that a kill reaches whatever it started in its group.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start the core {}", binary.display()))?;
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        tracing::info!(%version, probation_from = ?prepared.probation, pid = ?group, "core started");
        machine.launched(&version, prepared.probation.as_deref(), Instant::now());

        let mut kill_at = None;
        let mut poll = tokio::time::interval(POLL);
        let action = loop {
            let event = tokio::select! {
                status = child.wait() => {
                    let status = status.context("cannot wait for the core")?;
                    let exit = status.code().map(Exit::Code).or(status.signal().map(Exit::Signal)).unwrap_or(Exit::Code(1));
                    tracing::info!(%version, ?exit, "core ended");
                    // It may have proved itself just before it ended.
                    if machine.on_probation() && !old_present(&alts)? {
                        machine.on(Event::OldRemoved);
                    }
                    Event::CoreExited(exit)
                }
                _ = &mut stop, if !stop_seen => {
                    stop_seen = true;
                    Event::StopSignal
                }
                () = until(machine.deadline()) => Event::DeadlinePassed,
                _ = poll.tick(), if machine.on_probation() => {
                    if old_present(&alts)? { continue }
                    tracing::info!(%version, "the new core proved itself (old removed)");
                    Event::OldRemoved
                }
                () = until(kill_at) => {
                    tracing::warn!(%version, "core still running {KILL_GRACE:?} after SIGTERM; killing it");
                    signal_group(group, rustix::process::Signal::KILL);
                    kill_at = None;
                    continue;
                }
            };
            match machine.on(event) {
                Action::Wait => {}
                Action::ForwardStop => signal_group(group, rustix::process::Signal::TERM),
                Action::Kill => {
                    tracing::warn!(%version, "the new core did not prove itself in time; stopping it");
                    signal_group(group, rustix::process::Signal::TERM);
                    kill_at = Some(Instant::now() + KILL_GRACE);
                }
                other => break other,
            }
        };
        match action {
            Action::RollBack(cause) => roll_back(&alts, &running, &version, cause)?,
            Action::End(code) => {
                tracing::info!(code, "launcher ends");
                return Ok(code);
            }
            _ => {}
        }
    }
}

/// Whether `old` still leads to a version (the core on probation has not proved itself).
fn old_present(alts: &AltsDir) -> anyhow::Result<bool> {
    Ok(matches!(alts.read(LinkName::Old)?, Link::To(_)))
}

/// Rolls the alts directory back after `version` failed its probation.
fn roll_back(alts: &AltsDir, running: &Path, version: &str, cause: RollbackCause) -> anyhow::Result<()> {
    let view = alts.observe()?;
    let Some(changes) = alts::rollback(&view) else {
        tracing::error!(%version, ?cause, ?view, "cannot roll back: no previous version; starting the current one again");
        return Ok(());
    };
    tracing::warn!(%version, ?cause, "rolling back to the previous version");
    for change in &changes {
        tracing::info!(?change, "alts directory");
        alts.apply(change, running)?;
    }
    Ok(())
}

/// Resolves at `at`, never when there is none.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn signal_group(group: Option<i32>, signal: rustix::process::Signal) {
    if let Some(pid) = group.and_then(rustix::process::Pid::from_raw) {
        // The group may be gone already; nothing to do then.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}
