//! A `device-sim core` process with the benchmark's components, stopped by its pid whatever
//! happens (end of the run, an error, a panic), and the files its components write.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ipc_bench::recipes::{Component, VERSION};
use ipc_bench::report::Memory;
use rustix::process::{Pid, Signal, kill_process};

/// How long the core gets to stop its components and exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(20);
/// How long a component may outlive its stopped core before it is killed.
const COMPONENT_GRACE: Duration = Duration::from_secs(3);

/// Where the artifacts come from.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The Rust component binary.
    pub rust: PathBuf,
    /// The Python component script.
    pub python: PathBuf,
}

/// A running simulated core.
#[derive(Debug)]
pub struct CoreRun {
    name: String,
    child: Child,
    root: PathBuf,
    log: PathBuf,
    /// Component processes we learnt of from their `ready.json`: ended too if the core left them.
    component_pids: Vec<u32>,
}

impl CoreRun {
    /// Lays out recipes and artifacts under `dir` and starts `device-sim core` on them, with
    /// `path` as its `PATH` (which its components inherit).
    pub fn start(
        device_sim: &Path,
        dir: &Path,
        name: &str,
        components: &[Component],
        artifacts: &Artifacts,
        path: &std::ffi::OsStr,
    ) -> anyhow::Result<CoreRun> {
        let recipes = dir.join("recipes");
        let artifact_dir = dir.join("artifacts");
        std::fs::create_dir_all(&recipes)?;
        let mut merges = Vec::new();
        for c in components {
            let file = recipes.join(format!("{}-{VERSION}.json", c.name));
            std::fs::write(&file, serde_json::to_vec_pretty(&c.recipe)?)
                .with_context(|| format!("writing {}", file.display()))?;
            let to = artifact_dir.join(&c.name).join(VERSION);
            std::fs::create_dir_all(&to)?;
            let from = if c.artifact.ends_with(".py") { &artifacts.python } else { &artifacts.rust };
            std::fs::copy(from, to.join(c.artifact))
                .with_context(|| format!("copying {} for {}", from.display(), c.name))?;
            merges.push(format!("{}={VERSION}", c.name));
        }
        let root = dir.join("root");
        let log = dir.join("core.log");
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(device_sim);
        command
            .arg("core")
            .arg("--root")
            .arg(&root)
            .args(["--thing", "ipc-bench"])
            .arg("--recipe-dir")
            .arg(&recipes)
            .arg("--artifact-dir")
            .arg(&artifact_dir);
        for m in &merges {
            command.args(["--merge", m]);
        }
        command.env("PATH", path).env("RUST_LOG", "warn").stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        let child = command.spawn().with_context(|| format!("starting {}", device_sim.display()))?;
        eprintln!("core '{name}' started (pid {}) with {} components", child.id(), components.len());
        Ok(CoreRun { name: name.into(), child, root, log, component_pids: Vec::new() })
    }

    /// The core's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The core's memory now.
    pub fn memory(&self) -> Memory {
        Memory {
            rss_kib: bench_common::machine::rss_kib(self.pid()),
            hwm_kib: bench_common::machine::hwm_kib(self.pid()),
        }
    }

    /// A component's work directory (`{root}/work/{Component}`).
    pub fn work(&self, component: &str) -> PathBuf {
        self.root.join("work").join(component)
    }

    /// Tells a component to start measuring.
    pub fn go(&self, component: &str) -> anyhow::Result<()> {
        let go = self.work(component).join("go");
        std::fs::write(&go, b"").with_context(|| format!("creating {}", go.display()))
    }

    /// Waits for `file` in `component`'s work directory and reads it as JSON; fails early, with
    /// the end of the core's and the component's logs, if the core exits.
    pub fn wait_json<T: serde::de::DeserializeOwned>(
        &mut self,
        component: &str,
        file: &str,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let path = self.work(component).join(file);
        let until = Instant::now() + timeout;
        loop {
            if let Ok(bytes) = std::fs::read(&path) {
                return serde_json::from_slice(&bytes).with_context(|| format!("{component} wrote a bad {file}"));
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("the core exited ({status}) before {component} wrote {file}{}", self.logs(component));
            }
            if Instant::now() > until {
                anyhow::bail!("{component} wrote no {file} within {timeout:?}{}", self.logs(component));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Remembers a component's pid, to end it should the core leave it behind.
    pub fn track(&mut self, pid: u32) {
        self.component_pids.push(pid);
    }

    fn logs(&self, component: &str) -> String {
        let tail = |p: &Path| {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(8)..].join("\n    ")
        };
        let component_log = self.root.join("logs").join(format!("{component}.log"));
        format!(
            "\n  core log ({}):\n    {}\n  component log ({}):\n    {}",
            self.log.display(),
            tail(&self.log),
            component_log.display(),
            tail(&component_log)
        )
    }

    /// SIGTERM (the core stops its components), SIGKILL after a grace period; then ends any
    /// component process the core left behind.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
                let _ = kill_process(pid, Signal::TERM);
            }
            let until = Instant::now() + TERM_GRACE;
            while self.child.try_wait().ok().flatten().is_none() {
                if Instant::now() > until {
                    eprintln!("core '{}' did not stop within {TERM_GRACE:?} of SIGTERM; killing it", self.name);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The core signals its components' process groups and returns once their shells have
        // exited; the components themselves may take a moment longer to exit.
        let until = Instant::now() + COMPONENT_GRACE;
        for pid in self.component_pids.drain(..) {
            while alive(pid) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid)
                && let Some(p) = Pid::from_raw(pid as i32)
            {
                eprintln!("component pid {pid} outlived core '{}' by {COMPONENT_GRACE:?}; ending it", self.name);
                let _ = kill_process(p, Signal::KILL);
            }
        }
    }
}

/// True while `pid` runs (a zombie, waiting to be reaped by its new parent, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

impl Drop for CoreRun {
    fn drop(&mut self) {
        self.terminate();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_is_alive_and_a_missing_one_is_not() {
        assert!(alive(std::process::id()));
        // Pids are at most 2^22 on Linux, so this one never exists.
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn a_reaped_child_is_not_alive() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
