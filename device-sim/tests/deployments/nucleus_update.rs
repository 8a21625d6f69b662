//! Nucleus updates through the real `device-sim launcher`: the installed versions are small
//! shell scripts standing in for the core (one script; what it does depends on the
//! `--nucleus-version` the launcher passes). Each records what it does in `{root}/events`; the
//! test stages versions with the core's own [`nucleus_update::stage`] and asks for restarts by
//! writing `{root}/restart`. Every wait polls a file or a process with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use device_sim::core::nucleus_update::{self, Activation};
use device_sim::launcher::alts::{Link, LinkName};
use device_sim::launcher::store::AltsDir;

const WAIT: Duration = Duration::from_secs(30);

/// The stand-in core. 1.x and 2.x idle until asked to restart; 2.x proves itself at start
/// (removes `old`); 3.x crashes at start; 4.x idles without proving itself. Every version
/// reports a rollback it finds (`broken`) and clears it, as a real core does once reported.
/// A script left behind by a failed test ends once the test's directory is gone.
const CORE_SCRIPT: &str = r#"#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --root) R="$2"; shift ;;
    --nucleus-version) V="$2"; shift ;;
  esac
  shift
done
A="$R/alts"
log() { echo "$V $*" >> "$R/events"; }
log start
trap 'log stopped; exit 0' TERM
if [ -L "$A/broken" ]; then log "saw broken $(readlink "$A/broken")"; rm "$A/broken"; fi
case "$V" in
  2.*) if [ -L "$A/old" ]; then rm "$A/old"; log proved; fi ;;
  3.*) exit 1 ;;
esac
while :; do
  [ -d "$A" ] || exit 0
  if [ -e "$R/restart" ]; then rm "$R/restart"; log restarting; exit 100; fi
  sleep 0.05
done
"#;

struct Launcher {
    root: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Launcher {
    /// A root with version 1.0.0 of the script installed as `current`, and a launcher on it.
    fn start(health_deadline_secs: u64) -> Self {
        Self::with_links(&[(LinkName::Current, "1.0.0")], health_deadline_secs)
    }

    /// A root whose links are `links` (each version installed), and a launcher on it.
    fn with_links(links: &[(LinkName, &str)], health_deadline_secs: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let alts = AltsDir::new(&root);
        for (link, version) in links {
            alts.install(version, &script(dir.path())).unwrap();
            alts.point(*link, version).unwrap();
        }
        let child = launcher(&root, health_deadline_secs, &["--thing", "t"]);
        Self { root, child, _dir: dir }
    }

    /// SIGTERM to the launcher; returns its exit code once it has ended.
    fn stop(&mut self) -> Option<i32> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        wait_exit(&mut self.child).code()
    }

    fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.root.join("events")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Waits until the last event is `line`.
    fn wait_for(&mut self, line: &str) {
        let deadline = Instant::now() + WAIT;
        while self.events().last().map(String::as_str) != Some(line) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the launcher ended ({status}) before {line:?}: {:?}\n{}", self.events(), self.log());
            }
            assert!(Instant::now() < deadline, "no {line:?} after {WAIT:?}: {:?}\n{}", self.events(), self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stages `version` of the script and asks the running core to restart into it.
    fn update_to(&mut self, version: &str) {
        let script = script(self.root.parent().unwrap());
        nucleus_update::stage(&self.root, version, &script).unwrap();
        std::fs::write(self.root.join("restart"), "").unwrap();
    }

    fn link(&self, name: LinkName) -> Link {
        AltsDir::new(&self.root).read(name).unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.parent().unwrap().join("launcher.log")).unwrap_or_default()
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn script(dir: &Path) -> PathBuf {
    let path = dir.join("core.sh");
    std::fs::write(&path, CORE_SCRIPT).unwrap();
    path
}

/// `device-sim launcher --root {root} --health-deadline-secs N -- {core_args}`, its output in
/// `launcher.log` beside the root.
fn launcher(root: &Path, health_deadline_secs: u64, core_args: &[&str]) -> Child {
    std::fs::create_dir_all(root).unwrap();
    let log = std::fs::File::create(root.parent().unwrap().join("launcher.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_device-sim"))
        .arg("launcher")
        .arg("--root")
        .arg(root)
        .args(["--health-deadline-secs", &health_deadline_secs.to_string(), "--"])
        .args(core_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the launcher did not end within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_launcher_updates_keeps_a_proven_version_and_rolls_back_a_crash_and_a_hang() {
    let mut launcher = Launcher::start(3);
    launcher.wait_for("1.0.0 start");

    // An update that proves itself: 2.0.0 removes old and keeps running.
    launcher.update_to("2.0.0");
    launcher.wait_for("2.0.0 proved");
    assert_eq!(launcher.link(LinkName::Current), Link::To("2.0.0".into()));
    assert_eq!(launcher.link(LinkName::Old), Link::Absent);
    assert_eq!(Activation::at_start(&launcher.root), Activation::Normal);

    // An update that crashes: back to 2.0.0, which learns of it from broken.
    launcher.update_to("3.0.0");
    launcher.wait_for("2.0.0 saw broken 3.0.0");
    assert_eq!(launcher.link(LinkName::Current), Link::To("2.0.0".into()));

    // An update that never proves itself: stopped at the deadline, back to 2.0.0.
    launcher.update_to("4.0.0");
    launcher.wait_for("2.0.0 saw broken 4.0.0");
    assert_eq!(launcher.link(LinkName::Current), Link::To("2.0.0".into()));

    // SIGTERM reaches the core; the launcher ends with it.
    assert_eq!(launcher.stop(), Some(0), "{}", launcher.log());
    assert_eq!(
        launcher.events(),
        [
            "1.0.0 start",
            "1.0.0 restarting",
            "2.0.0 start",
            "2.0.0 proved",
            "2.0.0 restarting",
            "3.0.0 start",
            "2.0.0 start",
            "2.0.0 saw broken 3.0.0",
            "2.0.0 restarting",
            "4.0.0 start",
            "4.0.0 stopped",
            "2.0.0 start",
            "2.0.0 saw broken 4.0.0",
            "2.0.0 stopped",
        ]
    );
}

/// What a launcher killed in the middle of a flip or of a probation left behind: the next
/// launcher finishes the flip, and keeps the probation (with a deadline of its own).
#[test]
fn a_launcher_started_on_what_a_killed_one_left_finishes_the_flip_or_the_probation() {
    // Killed after `old` = current, before `current` = new.
    let flip = [(LinkName::Current, "1.0.0"), (LinkName::Old, "1.0.0"), (LinkName::New, "2.0.0")];
    let mut launcher = Launcher::with_links(&flip, 30);
    launcher.wait_for("2.0.0 proved");
    assert_eq!(launcher.link(LinkName::Current), Link::To("2.0.0".into()));
    assert_eq!(launcher.link(LinkName::New), Link::Absent);
    assert_eq!(launcher.stop(), Some(0), "{}", launcher.log());
    assert_eq!(launcher.events(), ["2.0.0 start", "2.0.0 proved", "2.0.0 stopped"]);

    // Killed while 4.0.0 (which never proves itself) was on probation.
    let probation = [(LinkName::Current, "4.0.0"), (LinkName::Old, "2.0.0")];
    let mut launcher = Launcher::with_links(&probation, 1);
    launcher.wait_for("2.0.0 saw broken 4.0.0");
    assert_eq!(launcher.link(LinkName::Current), Link::To("2.0.0".into()));
    assert_eq!(launcher.stop(), Some(0), "{}", launcher.log());
    assert_eq!(
        launcher.events(),
        ["4.0.0 start", "4.0.0 stopped", "2.0.0 start", "2.0.0 saw broken 4.0.0", "2.0.0 stopped"]
    );
}

#[test]
fn a_first_launch_installs_the_running_executable_and_ends_with_the_cores_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let missing = dir.path().join("missing").display().to_string();
    let core_args = ["--thing", "t", "--recipe-dir", &missing, "--artifact-dir", &missing, "--merge", "A=1.0.0"];
    let mut child = launcher(&root, 120, &core_args);
    let status = wait_exit(&mut child);
    let log = std::fs::read_to_string(dir.path().join("launcher.log")).unwrap();
    // 78: the real core parsed `--root` and `--nucleus-version` and refused the recipe
    // directory; a configuration error is not retried.
    assert_eq!(status.code(), Some(78), "{log}");
    let alts = AltsDir::new(&root);
    let version = device_sim::core::supervisor::GGC_VERSION;
    assert_eq!(alts.read(LinkName::Current).unwrap(), Link::To(version.into()));
    assert_eq!(std::fs::read(alts.binary(version)).unwrap(), std::fs::read(env!("CARGO_BIN_EXE_device-sim")).unwrap());
    assert_eq!(log.matches("core started").count(), 1, "{log}");

    let mut child = launcher(&root, 120, &["--root", "/elsewhere"]);
    assert_eq!(wait_exit(&mut child).code(), Some(78), "--root belongs before `--`");
}

/// A component that needs nucleus 2.15.0 or later and checks the `GGC_VERSION` it is given.
const NEEDS_NUCLEUS_2_15: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.example.NeedsNucleus
ComponentVersion: "1.0.0"
ComponentDependencies:
  aws.greengrass.Nucleus:
    VersionRequirement: ">=2.15.0"
Manifests:
  - Lifecycle:
      Run: test "$GGC_VERSION" = 2.15.0
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_core_claims_the_nucleus_version_it_was_installed_as_and_can_be_asked_to_restart() {
    use device_sim::core::ComponentState;
    use device_sim::core::runtime::{Core, CoreError, CoreOptions};
    use device_sim::recipe::{ComponentVersion, DevicePlatform};

    let dir = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::create_dir_all(dir.path().join("artifacts")).unwrap();
    std::fs::write(recipes.join("needs.yaml"), NEEDS_NUCLEUS_2_15).unwrap();
    let options = |version: ComponentVersion| CoreOptions {
        root: dir.path().join("root"),
        thing: "core".into(),
        recipe_dir: recipes.clone(),
        artifact_dir: dir.path().join("artifacts"),
        merges: vec!["com.example.NeedsNucleus=1.0.0".into()],
        region: "us-east-1".into(),
        root_ca_path: None,
        platform: DevicePlatform::current(),
        update_config: Default::default(),
        cloud: None,
        nucleus_version: version,
    };
    let err = Core::start(options(CoreOptions::default_nucleus_version())).await.unwrap_err();
    assert!(matches!(err, CoreError::Resolve(_)), "the default nucleus is older: {err}");

    let core = Core::start(options(ComponentVersion::parse("2.15.0").unwrap())).await.unwrap();
    let wanted = [ComponentState::Finished, ComponentState::Broken];
    let state = core.wait_for_state("com.example.NeedsNucleus", &wanted, WAIT).await;
    assert_eq!(state, Some(ComponentState::Finished), "GGC_VERSION is the claimed version");

    let restart = core.restart_requested();
    core.restart_request().request();
    tokio::time::timeout(WAIT, restart).await.expect("the restart request reaches the core's owner");
    core.shutdown(WAIT).await;
}
