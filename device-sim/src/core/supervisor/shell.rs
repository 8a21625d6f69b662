//! The thin process shell under the lifecycle machine: runs lifecycle scripts with `sh -c` in
//! the component's work directory, each in its own process group, with the environment a
//! nucleus gives (see [`super`]), and appends their output to `logs/{Component}.log`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::recipe::Step;

/// The process groups each component has running, so they can be signalled as a whole and
/// killed when the supervisor goes away.
#[derive(Debug, Default)]
pub(crate) struct ProcessTable {
    groups: Mutex<HashMap<String, Vec<i32>>>,
}

impl ProcessTable {
    fn add(&self, component: &str, pgid: i32) {
        self.lock().entry(component.to_owned()).or_default().push(pgid);
    }

    fn remove(&self, component: &str, pgid: i32) {
        if let Some(v) = self.lock().get_mut(component) {
            v.retain(|p| *p != pgid);
        }
    }

    /// The live process groups of `component`.
    pub(crate) fn of(&self, component: &str) -> Vec<i32> {
        self.lock().get(component).cloned().unwrap_or_default()
    }

    /// Kills every process group of every component (the supervisor is going away).
    pub(crate) fn kill_everything(&self) {
        for pgid in self.lock().values().flatten() {
            signal_group(*pgid, rustix::process::Signal::KILL);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<i32>>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn signal_group(pgid: i32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        // The group may be gone already; nothing to do then.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Appends timestamped lines to a log file.
pub(crate) fn append_line(path: &Path, line: &str) {
    let stamp =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        // One write per line keeps concurrent writers' lines whole.
        let _ = f.write_all(format!("{stamp} {line}\n").as_bytes());
    }
}

/// A script ready to run: expanded text, environment, where.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) component: String,
    pub(crate) step: Step,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) work_dir: PathBuf,
    pub(crate) log: PathBuf,
}

/// A running script.
pub(crate) struct Running {
    child: Child,
    pgid: i32,
    component: String,
    /// The tasks copying stdout and stderr into the log.
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

/// How long an exit waits for the output its process wrote last to reach the log (a background
/// process that inherited the pipes can keep them open for ever).
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);

impl Running {
    /// Waits for the exit; `None` when killed by a signal.
    pub(crate) async fn wait(mut self, table: &ProcessTable) -> Option<i32> {
        let status = self.child.wait().await;
        // What the process printed before it exited is in the log before its exit counts.
        let _ = tokio::time::timeout(OUTPUT_DRAIN, join_all(std::mem::take(&mut self.pumps))).await;
        table.remove(&self.component, self.pgid);
        status.ok().and_then(|s| s.code())
    }

    /// The process group id.
    pub(crate) fn pgid(&self) -> i32 {
        self.pgid
    }
}

/// Starts `script` with `sh -c` in its own process group, its output going to the log.
pub(crate) fn spawn(script: &Script, table: &ProcessTable) -> std::io::Result<Running> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&script.step.script)
        .current_dir(&script.work_dir)
        .envs(script.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pgid = child.id().map(|p| p as i32).unwrap_or_default();
    table.add(&script.component, pgid);
    let step = script.step.kind.key();
    append_line(&script.log, &format!("[lifecycle] {step}: started (pid {pgid})"));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(pump(out, script.log.clone(), format!("[stdout] {step}:")));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(pump(err, script.log.clone(), format!("[stderr] {step}:")));
    }
    Ok(Running { child, pgid, component: script.component.clone(), pumps })
}

/// Waits for every task (their results do not matter: a pump that failed has nothing left).
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        let _ = task.await;
    }
}

fn pump(
    stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    log: PathBuf,
    tag: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            append_line(&log, &format!("{tag} {line}"));
        }
    })
}

/// How a foreground step (Install, Shutdown, Recover) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StepEnd {
    /// Exited with this code (`None`: signal).
    Exited(Option<i32>),
    /// Ran past its timeout and was killed.
    TimedOut,
    /// Could not be started.
    SpawnFailed(String),
}

impl StepEnd {
    pub(crate) fn ok(&self) -> bool {
        *self == StepEnd::Exited(Some(0))
    }
}

/// Runs a step to its end, killing its process group at the timeout.
pub(crate) async fn run_to_end(script: &Script, table: &ProcessTable) -> StepEnd {
    let running = match spawn(script, table) {
        Ok(r) => r,
        Err(e) => {
            append_line(&script.log, &format!("[lifecycle] {}: cannot start: {e}", script.step.kind.key()));
            return StepEnd::SpawnFailed(e.to_string());
        }
    };
    let pgid = running.pgid();
    let end = match script.step.timeout() {
        Some(limit) => {
            let wait = running.wait(table);
            tokio::pin!(wait);
            tokio::select! {
                code = &mut wait => StepEnd::Exited(code),
                _ = tokio::time::sleep(limit) => {
                    signal_group(pgid, rustix::process::Signal::KILL);
                    let _ = wait.await;
                    StepEnd::TimedOut
                }
            }
        }
        None => StepEnd::Exited(running.wait(table).await),
    };
    append_line(&script.log, &format!("[lifecycle] {}: {}", script.step.kind.key(), describe(&end)));
    end
}

/// Describes how a step ended, for logs.
pub(crate) fn describe(end: &StepEnd) -> String {
    match end {
        StepEnd::Exited(Some(c)) => format!("exited with code {c}"),
        StepEnd::Exited(None) => "killed by a signal".to_owned(),
        StepEnd::TimedOut => "timed out and was killed".to_owned(),
        StepEnd::SpawnFailed(e) => format!("could not start: {e}"),
    }
}

/// Stops every process of `component`: SIGTERM, then SIGKILL to each group after `grace`.
///
/// The SIGTERM goes to the programs the script's `sh` started, not to the `sh` itself, as the
/// nucleus signals a component's children first: the shell would die of it at once and leave
/// its program, still finishing its own shutdown (sending what it queued), orphaned and
/// uncounted. The shell exits when its program has, and the component is stopped then. A
/// script with no child process (the shell's own loop) gets the SIGTERM itself.
pub(crate) async fn terminate_all(component: &str, table: &ProcessTable, grace: Duration) {
    let groups = table.of(component);
    for pgid in &groups {
        let children: Vec<i32> = group_members(*pgid).into_iter().filter(|pid| pid != pgid).collect();
        if children.is_empty() {
            signal_group(*pgid, rustix::process::Signal::TERM);
        }
        for pid in children {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
    }
    let deadline = tokio::time::Instant::now() + grace;
    while !table.of(component).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What is left of those groups (background processes, a script that went on): killed.
    for pgid in groups {
        signal_group(pgid, rustix::process::Signal::KILL);
    }
}

/// The processes of group `pgid`, from `/proc/{pid}/stat` (empty where `/proc` is not there).
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|stat| stat_pgrp(&stat)) == Some(pgid)
        })
        .collect()
}

/// The process group in a `/proc/{pid}/stat` line: the third field after the command name in
/// parentheses (which may itself hold spaces and parentheses).
fn stat_pgrp(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// `Skipif: onpath X`: an executable `X` in one of `path`'s directories.
pub(crate) fn on_path(name: &str, path: Option<&str>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if name.contains('/') {
        return is_exec(Path::new(name));
    }
    path.unwrap_or_default().split(':').filter(|d| !d.is_empty()).any(|d| is_exec(&Path::new(d).join(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Component `c`'s Run step: `script`, in `dir`, logging to `log`.
    fn run_script(dir: &std::path::Path, log: PathBuf, script: String) -> Script {
        Script {
            component: "c".into(),
            step: Step {
                kind: crate::recipe::StepKind::Run,
                requires_privilege: false,
                skip_if: None,
                timeout: None,
                setenv: Vec::new(),
                script,
            },
            env: Vec::new(),
            work_dir: dir.to_owned(),
            log,
        }
    }

    #[test]
    fn the_process_group_is_read_after_a_command_name_with_spaces_and_parentheses() {
        assert_eq!(stat_pgrp("4242 (pump-analyzer) S 4241 4241 4241 0 -1 4194560"), Some(4241));
        assert_eq!(stat_pgrp("77 (a) b (c)) R 1 90 90 0"), Some(90));
        assert_eq!(stat_pgrp("77 no parentheses"), None);
    }

    #[tokio::test]
    async fn a_stop_waits_for_the_program_the_shell_started_and_not_only_for_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        let table = std::sync::Arc::new(ProcessTable::default());
        let done = dir.path().join("done");
        // The program takes its time over SIGTERM (it writes a file first), as a component
        // sending its queue does; the shell would die of a SIGTERM at once.
        let script = run_script(
            dir.path(),
            dir.path().join("c.log"),
            format!(
                "python3 -c 'import signal,sys,time\ndef stop(*_):\n    time.sleep(0.3); open(\"{}\", \"w\").close(); sys.exit(0)\nsignal.signal(signal.SIGTERM, stop)\nprint(\"ready\", flush=True)\ntime.sleep(60)'",
                done.display()
            ),
        );
        let running = spawn(&script, &table).unwrap();
        assert!(group_members(running.pgid()).contains(&running.pgid()), "the shell leads its group");
        // The core's wait on the shell, which takes the group out of the table when it exits.
        let shared = std::sync::Arc::clone(&table);
        let waiter = tokio::spawn(async move { running.wait(&shared).await });
        // Started: the program says so once its handler is in place.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&script.log).unwrap_or_default().contains("ready") {
            assert!(tokio::time::Instant::now() < deadline, "the program never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        terminate_all("c", &table, Duration::from_secs(10)).await;
        assert!(done.exists(), "the stop returned before the program finished its shutdown");
        assert_eq!(waiter.await.unwrap(), Some(0), "the shell ended with its program, not of the signal");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_a_process_prints_last_is_in_the_log_when_its_exit_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let table = ProcessTable::default();
        for round in 0..20 {
            let log = dir.path().join(format!("c{round}.log"));
            // Many lines, so the copy into the log is still going when the shell exits.
            let script = run_script(dir.path(), log.clone(), "seq 1 2000; echo stopping >&2; exit 3".into());
            let code = spawn(&script, &table).unwrap().wait(&table).await;
            assert_eq!(code, Some(3));
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(text.contains("[stdout] Run: 2000"), "round {round}: stdout's last line is missing");
            assert!(text.contains("[stderr] Run: stopping"), "round {round}: stderr's last line is missing");
        }
    }
}
