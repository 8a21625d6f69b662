//! The lifecycle supervisor running real shell-script components from small recipes.
//! Every wait has a deadline and waits on state events (or, for files a script writes, polls
//! with a deadline); dropping the supervisor kills every process group it started.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use device_sim::core::supervisor::{ComponentSpec, StateEvent, Supervisor, SupervisorConfig, SupervisorError};
use device_sim::core::{ComponentState as S, LifecycleControl, Tokens};
use device_sim::recipe::{DevicePlatform, RecipeFormat, RecipeLoader};
use serde_json::json;
use tokio::sync::broadcast;

const DEADLINE: Duration = Duration::from_secs(20);

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    artifacts: PathBuf,
    tokens: Tokens,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let artifacts = dir.path().join("artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        Self { _dir: dir, root, artifacts, tokens: Tokens::default() }
    }

    fn artifact(&self, component: &str, version: &str, file: &str, bytes: &[u8]) {
        let dir = self.artifacts.join(component).join(version);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), bytes).unwrap();
    }

    fn config(&self) -> SupervisorConfig {
        SupervisorConfig {
            root: self.root.clone(),
            artifact_dir: self.artifacts.clone(),
            thing_name: "pump-core-1".into(),
            region: "us-east-1".into(),
            root_ca_path: Some(self.root.join("rootCA.pem")),
            ipc_socket: self.root.join("ipc.socket"),
            ggc_version: device_sim::core::supervisor::GGC_VERSION.into(),
            credentials_uri: None,
        }
    }

    fn supervisor(&self, recipes: &[&str]) -> Result<Supervisor, SupervisorError> {
        let specs = recipes.iter().map(|r| spec(r)).collect();
        let configuration = Arc::new(|component: &str| match component {
            "com.example.Env" => json!({"greeting": "hello", "nested": {"n": 7}}),
            _ => json!({}),
        });
        Supervisor::new(self.config(), specs, self.tokens.clone(), configuration)
    }

    fn work(&self, component: &str) -> PathBuf {
        self.root.join("work").join(component)
    }
}

fn spec(yaml: &str) -> ComponentSpec {
    let loaded = RecipeLoader::without_schema("tests").load_str(yaml, RecipeFormat::Yaml, None).unwrap();
    ComponentSpec::from_recipe(loaded.recipe, &DevicePlatform::new("linux", "amd64")).unwrap()
}

fn recipe(name: &str, extra: &str, lifecycle: &str) -> String {
    format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: {name}\nComponentVersion: '1.0.0'\n{extra}\nManifests:\n  - Platform:\n      os: linux\n    Lifecycle:\n{lifecycle}"
    )
}

/// Waits for `component` to reach `state`; returns every event seen on the way.
async fn wait_for(rx: &mut broadcast::Receiver<StateEvent>, component: &str, state: S) -> Vec<StateEvent> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) => {
                let done = e.component == component && e.new == state;
                seen.push(e);
                if done {
                    return seen;
                }
            }
            Ok(Err(e)) => panic!("event stream: {e}; seen {seen:?}"),
            Err(_) => panic!("{component} did not reach {state:?} in {DEADLINE:?}; seen {seen:?}"),
        }
    }
}

/// Waits until a file a script writes contains `needle`.
async fn wait_file(path: &Path, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} never contained {needle:?}: {text:?}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn states_of(events: &[StateEvent], component: &str) -> Vec<(S, S)> {
    events.iter().filter(|e| e.component == component).map(|e| (e.old, e.new)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn install_runs_before_run_shutdown_runs_on_stop_and_logs_hold_both() {
    let fx = Fixture::new();
    let r = recipe(
        "com.example.Order",
        "",
        "      Install: echo install >> order.txt\n      Run: |\n        echo run >> order.txt\n        echo run-output\n        echo oops >&2\n        exec sleep 60\n      Shutdown: echo shutdown >> order.txt\n",
    );
    let sup = fx.supervisor(&[&r]).unwrap();
    let mut rx = sup.subscribe();
    sup.start();
    let events = wait_for(&mut rx, "com.example.Order", S::Running).await;
    assert_eq!(
        states_of(&events, "com.example.Order"),
        [(S::New, S::Installed), (S::Installed, S::Starting), (S::Starting, S::Running)]
    );
    let order = fx.work("com.example.Order").join("order.txt");
    wait_file(&order, "run").await;
    assert!(sup.stop_all(DEADLINE).await.is_empty());
    assert_eq!(std::fs::read_to_string(&order).unwrap(), "install\nrun\nshutdown\n");
    assert_eq!(sup.state("com.example.Order"), Some(S::Finished));

    // stdout and stderr are read by separate tasks: wait for each line, not for one then the other.
    let log = fx.root.join("logs/com.example.Order.log");
    wait_file(&log, "[stdout] Run: run-output").await;
    wait_file(&log, "[stderr] Run: oops").await;
    let gg = std::fs::read_to_string(fx.root.join("logs/greengrass.log")).unwrap();
    assert!(gg.contains("com.example.Order: Starting -> Running"), "{gg}");
    assert!(gg.contains("com.example.Order: Stopping -> Finished"), "{gg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_setenv_and_recipe_variables_reach_the_script() {
    let fx = Fixture::new();
    let r = recipe(
        "com.example.Env",
        "",
        "      Setenv:\n        GLOBAL_VAR: from-lifecycle\n        OVERRIDE_ME: lifecycle\n      Install:\n        Script: touch skipped-install\n        Skipif: onpath sh\n      Run:\n        Script: |\n          env > env.txt\n          echo '{configuration:/greeting}|{configuration:/nested}|{artifacts:path}|{work:path}|{iot:thingName}|{kernel:rootPath}' > vars.txt\n        Setenv:\n          OVERRIDE_ME: step\n          STEP_VAR: '{iot:thingName}'\n",
    );
    let sup = fx.supervisor(&[&r]).unwrap();
    let mut rx = sup.subscribe();
    sup.start();
    wait_for(&mut rx, "com.example.Env", S::Finished).await;
    let work = fx.work("com.example.Env");
    assert!(!work.join("skipped-install").exists(), "Skipif onpath sh skips Install");

    let env = std::fs::read_to_string(work.join("env.txt")).unwrap();
    let var = |k: &str| env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(str::to_owned);
    let svcuid = var("SVCUID").expect("SVCUID");
    assert_eq!(fx.tokens.component(&svcuid).as_deref(), Some("com.example.Env"));
    assert_eq!(var("AWS_CONTAINER_AUTHORIZATION_TOKEN"), Some(svcuid));
    assert_eq!(var("AWS_IOT_THING_NAME").as_deref(), Some("pump-core-1"));
    assert_eq!(var("AWS_REGION").as_deref(), Some("us-east-1"));
    assert_eq!(var("AWS_DEFAULT_REGION").as_deref(), Some("us-east-1"));
    assert_eq!(var("GGC_VERSION").as_deref(), Some("2.14.0"));
    let ca = fx.root.join("rootCA.pem").display().to_string();
    assert_eq!(var("GG_ROOT_CA_PATH"), Some(ca));
    let socket = fx.root.join("ipc.socket").display().to_string();
    assert_eq!(var("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT").as_deref(), Some(socket.as_str()));
    assert_eq!(var("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH").as_deref(), Some(socket.as_str()));
    assert_eq!(var("GLOBAL_VAR").as_deref(), Some("from-lifecycle"));
    assert_eq!(var("OVERRIDE_ME").as_deref(), Some("step"));
    assert_eq!(var("STEP_VAR").as_deref(), Some("pump-core-1"));
    assert_eq!(var("PWD").map(PathBuf::from), Some(work.clone()));

    let vars = std::fs::read_to_string(work.join("vars.txt")).unwrap();
    let artifacts = fx.root.join("packages/artifacts/com.example.Env/1.0.0");
    let expected =
        format!("hello|{{\"n\":7}}|{}|{}|pump-core-1|{}\n", artifacts.display(), work.display(), fx.root.display());
    assert_eq!(vars, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_component_restarts_then_is_broken_after_three_errors_while_another_keeps_running() {
    let fx = Fixture::new();
    let good = recipe("com.example.Good", "", "      Run: exec sleep 60\n");
    let bad = recipe(
        "com.example.Bad",
        "",
        "      Run: echo run >> runs.txt; exit 3\n      Recover: echo recover >> recovers.txt\n",
    );
    let sup = fx.supervisor(&[&good, &bad]).unwrap();
    let mut rx = sup.subscribe();
    sup.start();
    let events = wait_for(&mut rx, "com.example.Bad", S::Broken).await;
    let bad_states = states_of(&events, "com.example.Bad");
    let errored = bad_states.iter().filter(|(_, n)| *n == S::Errored).count();
    assert_eq!(errored, 2, "{bad_states:?}");
    assert_eq!(bad_states.last(), Some(&(S::Running, S::Broken)));
    let work = fx.work("com.example.Bad");
    assert_eq!(std::fs::read_to_string(work.join("runs.txt")).unwrap(), "run\nrun\nrun\n");
    assert_eq!(std::fs::read_to_string(work.join("recovers.txt")).unwrap(), "recover\nrecover\n");

    assert_eq!(sup.state("com.example.Good"), Some(S::Running));
    assert!(
        !states_of(&events, "com.example.Good")
            .iter()
            .any(|(_, n)| *n != S::Installed && *n != S::Starting && *n != S::Running)
    );
    let handle = sup.handle();
    assert!(handle.restart("com.example.Bad").is_err(), "a BROKEN component needs a deployment");
    assert!(handle.restart("com.example.Nope").is_err());
    assert!(sup.stop_all(DEADLINE).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_that_exits_zero_is_running_and_one_that_times_out_is_errored() {
    let fx = Fixture::new();
    let ok = recipe("com.example.StartOk", "", "      Startup: echo started\n");
    let slow =
        recipe("com.example.StartSlow", "", "      Startup:\n        Script: exec sleep 30\n        Timeout: 1\n");
    let sup = fx.supervisor(&[&ok, &slow]).unwrap();
    let mut rx = sup.subscribe();
    sup.start();
    let events = wait_for(&mut rx, "com.example.StartSlow", S::Errored).await;
    let ok_states = states_of(&events, "com.example.StartOk");
    assert!(ok_states.contains(&(S::Starting, S::Running)), "{ok_states:?}");
    assert!(states_of(&events, "com.example.StartSlow").contains(&(S::Starting, S::Errored)));
    assert_eq!(sup.state("com.example.StartOk"), Some(S::Running), "an exited Startup leaves the component RUNNING");
    sup.stop_all(DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn startup_component_reporting_running_over_ipc_is_running() {
    let fx = Fixture::new();
    let r = recipe("com.example.Reporter", "", "      Startup: exec sleep 60\n");
    let sup = fx.supervisor(&[&r]).unwrap();
    let mut rx = sup.subscribe();
    sup.start();
    wait_for(&mut rx, "com.example.Reporter", S::Starting).await;
    sup.handle().report_state("com.example.Reporter", device_sim::core::ReportedState::Running);
    wait_for(&mut rx, "com.example.Reporter", S::Running).await;
    sup.handle().report_state("com.example.Reporter", device_sim::core::ReportedState::Errored);
    wait_for(&mut rx, "com.example.Reporter", S::Errored).await;
    sup.stop_all(DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dependent_waits_for_its_hard_dependency_and_restarts_with_it() {
    let fx = Fixture::new();
    let a = recipe("com.example.A", "", "      Startup: sleep 0.5; touch '{kernel:rootPath}/a-ready'\n");
    let b = recipe(
        "com.example.B",
        "ComponentDependencies:\n  com.example.A:\n    VersionRequirement: '>=1.0.0'\n    DependencyType: HARD\n",
        "      Run: |\n        test -f '{kernel:rootPath}/a-ready' && echo saw-a >> seen.txt\n        exec sleep 60\n",
    );
    let sup = fx.supervisor(&[&a, &b]).unwrap();
    let mut rx = sup.subscribe();
    sup.start();
    let events = wait_for(&mut rx, "com.example.B", S::Running).await;
    let pos = |c: &str, s: S| events.iter().position(|e| e.component == c && e.new == s).unwrap();
    assert!(pos("com.example.A", S::Running) < pos("com.example.B", S::Starting), "{events:?}");
    wait_file(&fx.work("com.example.B").join("seen.txt"), "saw-a").await;

    sup.handle().restart("com.example.A").unwrap();
    let events = wait_for(&mut rx, "com.example.B", S::Stopping).await;
    assert!(states_of(&events, "com.example.A").contains(&(S::Running, S::Stopping)));
    wait_for(&mut rx, "com.example.B", S::Running).await;
    assert_eq!(sup.state("com.example.A"), Some(S::Running));
    assert!(sup.stop_all(DEADLINE).await.is_empty());
}

fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn zip_artifact_is_unarchived_and_decompressed_path_points_at_it() {
    let fx = Fixture::new();
    let bytes = zip_bytes(&[("hello/greeting.txt", b"hi from zip\n")]);
    fx.artifact("com.example.Zip", "1.0.0", "pkg.zip", &bytes);
    let digest = device_sim::core::layout::sha256_digest(&bytes);
    let r = format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.Zip\nComponentVersion: '1.0.0'\nManifests:\n  - Platform:\n      os: linux\n    Artifacts:\n      - URI: s3://bucket/pkg.zip\n        Unarchive: ZIP\n        Digest: '{digest}'\n        Algorithm: SHA-256\n        Permission:\n          Read: ALL\n    Lifecycle:\n      Run: cat '{{artifacts:decompressedPath}}/pkg/hello/greeting.txt' > out.txt\n"
    );
    let sup = fx.supervisor(&[&r]).unwrap();
    let mut rx = sup.subscribe();
    sup.start();
    wait_for(&mut rx, "com.example.Zip", S::Finished).await;
    assert_eq!(std::fs::read_to_string(fx.work("com.example.Zip").join("out.txt")).unwrap(), "hi from zip\n");
    let staged = fx.root.join("packages/artifacts/com.example.Zip/1.0.0/pkg.zip");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(staged).unwrap().permissions().mode() & 0o777, 0o644);
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_mismatch_and_zip_slip_are_refused_with_clear_errors() {
    let fx = Fixture::new();
    fx.artifact("com.example.Bad", "1.0.0", "tool.sh", b"echo tampered\n");
    let wrong = device_sim::core::layout::sha256_digest(b"echo original\n");
    let r = format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.Bad\nComponentVersion: '1.0.0'\nManifests:\n  - Platform:\n      os: linux\n    Artifacts:\n      - URI: s3://bucket/tool.sh\n        Digest: '{wrong}'\n        Algorithm: SHA-256\n    Lifecycle:\n      Run: echo never\n"
    );
    let err = fx.supervisor(&[&r]).err().expect("refused").to_string();
    assert!(err.contains("digest mismatch") && err.contains("com.example.Bad") && err.contains(&wrong), "{err}");

    let evil = zip_bytes(&[("../../escape.txt", b"x")]);
    fx.artifact("com.example.Slip", "1.0.0", "evil.zip", &evil);
    let r = "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.Slip\nComponentVersion: '1.0.0'\nManifests:\n  - Platform:\n      os: linux\n    Artifacts:\n      - URI: s3://bucket/evil.zip\n        Unarchive: ZIP\n    Lifecycle:\n      Run: echo never\n";
    let err = fx.supervisor(&[r]).err().expect("refused").to_string();
    assert!(err.contains("bad ZIP archive") && err.contains("outside"), "{err}");
    assert!(!fx.root.join("packages/artifacts-unarchived/escape.txt").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn soft_dependency_does_not_hold_back_the_dependent() {
    let fx = Fixture::new();
    let a = recipe("com.example.SlowA", "", "      Startup:\n        Script: exec sleep 60\n        Timeout: 60\n");
    let b = recipe(
        "com.example.SoftB",
        "ComponentDependencies:\n  com.example.SlowA:\n    VersionRequirement: '>=1.0.0'\n    DependencyType: SOFT\n",
        "      Run: exec sleep 60\n",
    );
    let sup = fx.supervisor(&[&a, &b]).unwrap();
    let mut rx = sup.subscribe();
    sup.start();
    wait_for(&mut rx, "com.example.SoftB", S::Running).await;
    assert_eq!(sup.state("com.example.SlowA"), Some(S::Starting));
    assert!(sup.stop_all(DEADLINE).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_past_its_timeout_is_cut_short_and_the_process_group_killed() {
    let fx = Fixture::new();
    let r = recipe(
        "com.example.Stubborn",
        "",
        "      Run: |\n        trap '' TERM\n        echo $$ > run.pid\n        sleep 60 & echo $! > child.pid\n        wait\n      Shutdown:\n        Script: exec sleep 60\n        Timeout: 1\n",
    );
    let sup = fx.supervisor(&[&r]).unwrap();
    let mut rx = sup.subscribe();
    sup.start();
    wait_for(&mut rx, "com.example.Stubborn", S::Running).await;
    let work = fx.work("com.example.Stubborn");
    wait_file(&work.join("child.pid"), "\n").await;
    let started = std::time::Instant::now();
    assert!(sup.stop_all(DEADLINE).await.is_empty());
    let events = wait_for(&mut rx, "com.example.Stubborn", S::Finished).await;
    assert!(states_of(&events, "com.example.Stubborn").contains(&(S::Stopping, S::Errored)), "{events:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "stop took {:?}", started.elapsed());
    for file in ["run.pid", "child.pid"] {
        let pid = std::fs::read_to_string(work.join(file)).unwrap().trim().to_owned();
        let deadline = std::time::Instant::now() + DEADLINE;
        // The group got SIGKILL; the orphaned child is reaped by init shortly after.
        while Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z")
        {
            assert!(std::time::Instant::now() < deadline, "{file} {pid} still alive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
