//! Local deployments to a running simulated core, the way the Greengrass CLI makes them: a
//! CLI client reads `{root}/cli_ipc_info/`, connects to the IPC socket and calls
//! CreateLocalDeployment; the core updates the components while the others keep running.
//! The components are small shell scripts that record their Install runs and their PIDs.
//! Every wait has a deadline and waits on events (state changes, deployment statuses), or
//! polls a file a script writes with a deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_api::greengrass::deployment::{ComponentUpdateAction, ComponentUpdatePolicy};
use cloud_api::ipc::error::ErrorCode;
use cloud_api::ipc::model::{
    ComponentUpdatePolicyEvents, ConfigurationValidityReport, ConfigurationValidityStatus,
    CreateLocalDeploymentRequest, DeferComponentUpdateRequest, DeploymentStatus, DetailedDeploymentStatus,
    GetLocalDeploymentStatusRequest, ListLocalDeploymentsRequest, LocalDeployment, PostComponentUpdateEvent,
    SendConfigurationValidityReportRequest, SubscribeToComponentUpdatesRequest,
    SubscribeToValidateConfigurationUpdatesRequest,
};
use cloud_api::ipc::operation as op;
use device_sim::core::ComponentState as S;
use device_sim::core::cli;
use device_sim::core::runtime::{Core, CoreOptions};
use device_sim::core::services::{Deferral, LocalDeploymentService};
use device_sim::recipe::DevicePlatform;
use kit::ipc::IpcClient;
use serde_json::json;

/// Nucleus updates through `device-sim launcher` (its own file: a different fixture).
#[path = "deployments/nucleus_update.rs"]
mod nucleus_update;

const DEADLINE: Duration = Duration::from_secs(60);

const LIB: &str = "com.example.Lib";
const SOFT: &str = "com.example.SoftUser";
const HARD: &str = "com.example.HardUser";

/// A component that logs its Install (with its version) and its Run's PID.
fn lib_recipe(version: &str, install: &str, artifacts: &str) -> String {
    format!(
        r#"RecipeFormatVersion: "2020-01-25"
ComponentName: {LIB}
ComponentVersion: "{version}"
ComponentConfiguration:
  DefaultConfiguration:
    level: 1
Manifests:
  - Lifecycle:
      Install: "echo install-{version} >> installs.log; {install}"
      Run: "echo $$ > run.pid; exec sleep 600"
{artifacts}"#
    )
}

/// A component depending on the library with `kind`, logging its PID.
fn user_recipe(name: &str, kind: &str) -> String {
    format!(
        r#"RecipeFormatVersion: "2020-01-25"
ComponentName: {name}
ComponentVersion: "1.0.0"
ComponentConfiguration:
  DefaultConfiguration:
    threshold: 5
ComponentDependencies:
  {LIB}:
    VersionRequirement: ">=1.0.0"
    DependencyType: {kind}
Manifests:
  - Lifecycle:
      Install: "echo install >> installs.log"
      Run: "echo model at {{{LIB}:work:path}}; echo $$ > run.pid; exec sleep 600"
"#
    )
}

struct Fixture {
    dir: tempfile::TempDir,
    core: Core,
}

impl Fixture {
    /// A core running the library 1.0.0 and both users.
    async fn start() -> Self {
        let recipes = [
            ("recipes/lib.yaml".to_owned(), lib_recipe("1.0.0", "true", "")),
            ("recipes/soft.yaml".to_owned(), user_recipe(SOFT, "SOFT")),
            ("recipes/hard.yaml".to_owned(), user_recipe(HARD, "HARD")),
        ];
        let fx = Self::with(&recipes, &[LIB, SOFT, HARD]).await;
        for c in [LIB, SOFT, HARD] {
            fx.wait_state(c, S::Running).await;
        }
        fx
    }

    /// A core started with `files` (path under the test directory → content) in place,
    /// deploying `roots` at version 1.0.0 from `recipes/` and `artifacts/`.
    async fn with(files: &[(String, String)], roots: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["recipes", "artifacts"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        write_files(dir.path(), files);
        let core = Core::start(CoreOptions {
            root: dir.path().join("root"),
            thing: "core".into(),
            recipe_dir: dir.path().join("recipes"),
            artifact_dir: dir.path().join("artifacts"),
            merges: roots.iter().map(|r| format!("{r}=1.0.0")).collect(),
            region: "us-east-1".into(),
            root_ca_path: None,
            platform: DevicePlatform::current(),
            update_config: Default::default(),
            cloud: None,
            nucleus_version: CoreOptions::default_nucleus_version(),
        })
        .await
        .unwrap();
        Self { dir, core }
    }

    async fn wait_state(&self, component: &str, state: S) {
        let got = self.core.wait_for_state(component, &[state, S::Broken], DEADLINE).await;
        assert_eq!(got, Some(state), "{component}");
    }

    fn work(&self, component: &str) -> PathBuf {
        self.dir.path().join("root/work").join(component)
    }

    /// A directory of new recipes (and artifacts) for a deployment.
    fn new_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(d.join("recipes")).unwrap();
        std::fs::create_dir_all(d.join("artifacts")).unwrap();
        d
    }

    /// A connected Greengrass CLI client, as `greengrass-cli` connects.
    async fn cli(&self) -> IpcClient {
        let info = cli::read_ipc_info(&self.dir.path().join("root")).unwrap();
        IpcClient::connect(info.domain_socket_path, info.cli_auth_token).await.unwrap()
    }

    async fn deploy(&self, request: CreateLocalDeploymentRequest) -> LocalDeployment {
        let id = self.cli().await.call::<op::CreateLocalDeployment>(&request).await.unwrap().deployment_id;
        let done = self.core.deployments().wait_finished(&id, DEADLINE).await.unwrap();
        assert!(matches!(done.status, DeploymentStatus::Succeeded | DeploymentStatus::Failed), "{done:?}");
        done
    }

    fn version_of(&self, component: &str) -> Option<String> {
        self.core.components().into_iter().find(|(n, _)| n == component).map(|(_, v)| v)
    }
}

/// Writes each file (path under `dir` → content), creating its directory.
fn write_files(dir: &Path, files: &[(String, String)]) {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

fn add(dir: &Path, roots: &[(&str, &str)]) -> CreateLocalDeploymentRequest {
    CreateLocalDeploymentRequest {
        root_component_versions_to_add: Some(roots.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect()),
        recipe_directory_path: Some(dir.join("recipes").display().to_string()),
        artifacts_directory_path: Some(dir.join("artifacts").display().to_string()),
        ..Default::default()
    }
}

/// The PID a component's Run wrote, once it is there and non-empty.
async fn pid(work: &Path) -> String {
    let file = work.join("run.pid");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if !text.trim().is_empty() {
            return text.trim().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "{} never written", file.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

fn installs(work: &Path) -> Vec<String> {
    std::fs::read_to_string(work.join("installs.log")).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_version_is_installed_and_started_while_soft_dependents_keep_running_and_hard_ones_restart() {
    let fx = Fixture::start().await;
    let (lib_pid, soft_pid, hard_pid) =
        (pid(&fx.work(LIB)).await, pid(&fx.work(SOFT)).await, pid(&fx.work(HARD)).await);
    let dir = fx.new_dir("v2");
    std::fs::write(dir.join("recipes/lib.yaml"), lib_recipe("2.0.0", "true", "")).unwrap();
    std::fs::remove_file(fx.work(LIB).join("run.pid")).unwrap();
    std::fs::remove_file(fx.work(HARD).join("run.pid")).unwrap();
    let mut statuses = fx.core.deployments().subscribe();

    let done = fx.deploy(add(&dir, &[(LIB, "2.0.0")])).await;

    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
    let details = done.deployment_status_details.unwrap();
    assert_eq!(details.detailed_deployment_status, DetailedDeploymentStatus::Successful);
    let mut seen = Vec::new();
    while let Ok(d) = statuses.try_recv() {
        seen.push(d.deployment.status);
    }
    assert_eq!(seen, [DeploymentStatus::Queued, DeploymentStatus::InProgress, DeploymentStatus::Succeeded]);

    assert_eq!(fx.version_of(LIB).as_deref(), Some("2.0.0"));
    assert_eq!(installs(&fx.work(LIB)), ["install-1.0.0", "install-2.0.0"], "the new version's Install ran");
    let new_lib = pid(&fx.work(LIB)).await;
    assert_ne!(new_lib, lib_pid, "the library was restarted");
    assert!(!alive(&lib_pid), "the old version's process is gone");

    let new_hard = pid(&fx.work(HARD)).await;
    assert_ne!(new_hard, hard_pid, "a HARD dependent restarts");
    assert_eq!(installs(&fx.work(HARD)), ["install"], "a restart is not a reinstall");

    assert_eq!(pid(&fx.work(SOFT)).await, soft_pid, "a SOFT dependent keeps its process");
    assert!(alive(&soft_pid));
    assert_eq!(installs(&fx.work(SOFT)), ["install"]);
    for c in [LIB, SOFT, HARD] {
        assert_eq!(fx.core.states()[c], S::Running, "{c}");
    }
    let stored = fx.dir.path().join("root/packages/recipes").join(format!("{LIB}-2.0.0.recipe.yaml"));
    assert!(stored.exists(), "the deployed recipe is kept");
    fx.core.shutdown(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_merge_reaches_subscribers_without_a_restart() {
    let fx = Fixture::start().await;
    let soft_pid = pid(&fx.work(SOFT)).await;
    let mut changes = fx.core.config().subscribe(SOFT, &[]).unwrap();
    let request = CreateLocalDeploymentRequest {
        component_to_configuration: Some(BTreeMap::from([(SOFT.to_owned(), json!({"MERGE": {"threshold": 9}}))])),
        ..Default::default()
    };

    let done = fx.deploy(request).await;

    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
    let change = tokio::time::timeout(DEADLINE, changes.recv()).await.unwrap().unwrap();
    assert_eq!(change.key_path, ["threshold"]);
    assert_eq!(fx.core.config().get(SOFT, &["threshold".into()]), Some(json!(9)));
    assert_eq!(pid(&fx.work(SOFT)).await, soft_pid, "a configuration change alone does not restart");
    assert!(alive(&soft_pid));
    fx.core.shutdown(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_artifact_digest_fails_the_deployment_and_changes_nothing() {
    let fx = Fixture::start().await;
    let lib_pid = pid(&fx.work(LIB)).await;
    let dir = fx.new_dir("bad");
    let artifacts = "    Artifacts:\n      - URI: s3://bucket/model.bin\n        Digest: \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n        Algorithm: SHA-256\n";
    std::fs::write(dir.join("recipes/lib.yaml"), lib_recipe("2.0.0", "true", artifacts)).unwrap();
    std::fs::create_dir_all(dir.join(format!("artifacts/{LIB}/2.0.0"))).unwrap();
    std::fs::write(dir.join(format!("artifacts/{LIB}/2.0.0/model.bin")), b"not what the digest says").unwrap();

    let done = fx.deploy(add(&dir, &[(LIB, "2.0.0")])).await;

    assert_eq!(done.status, DeploymentStatus::Failed);
    let details = done.deployment_status_details.unwrap();
    assert_eq!(details.detailed_deployment_status, DetailedDeploymentStatus::FailedNoStateChange);
    let cause = details.deployment_failure_cause.unwrap();
    assert!(cause.contains("digest"), "{cause}");
    assert_eq!(fx.version_of(LIB).as_deref(), Some("1.0.0"));
    assert_eq!(pid(&fx.work(LIB)).await, lib_pid, "nothing was stopped");
    assert!(alive(&lib_pid));
    assert_eq!(installs(&fx.work(LIB)), ["install-1.0.0"]);
    assert_eq!(fx.core.states()[LIB], S::Running);
    fx.core.shutdown(Duration::from_secs(20)).await;
}

/// An IPC client that speaks for `component` (a running component's name), as its own
/// process would.
async fn client_as(fx: &Fixture, component: &str) -> IpcClient {
    IpcClient::connect(fx.core.socket_path(), fx.core.tokens().issue(component)).await.unwrap()
}

/// The next component update event, within the deadline.
async fn next_update(sub: &mut kit::ipc::Subscription<op::SubscribeToComponentUpdates>) -> ComponentUpdatePolicyEvents {
    tokio::time::timeout(DEADLINE, sub.next_event()).await.expect("an event in time").unwrap().unwrap()
}

fn notify(timeout_s: i64) -> ComponentUpdatePolicy {
    ComponentUpdatePolicy { timeout: timeout_s, action: ComponentUpdateAction::NotifyComponents }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_that_notifies_is_held_while_a_component_defers() {
    let fx = Fixture::start().await;
    let lib = client_as(&fx, LIB).await;
    let mut updates = lib.subscribe_to_component_updates(&SubscribeToComponentUpdatesRequest {}).await.unwrap();
    let dir = fx.new_dir("v2");
    std::fs::write(dir.join("recipes/lib.yaml"), lib_recipe("2.0.0", "true", "")).unwrap();
    let id = fx
        .core
        .deployments()
        .create_with_policies(add(&dir, &[(LIB, "2.0.0")]), notify(60), Duration::from_secs(20))
        .unwrap();

    let ComponentUpdatePolicyEvents::PreUpdate(pre) = next_update(&mut updates).await else {
        panic!("preUpdateEvent first")
    };
    assert_eq!((pre.deployment_id.as_str(), pre.is_ggc_restarting), (id.as_str(), false));
    let defer = |ms| DeferComponentUpdateRequest {
        deployment_id: id.clone(),
        message: Some("ramping".into()),
        recheck_after_ms: Some(ms),
    };
    lib.defer_component_update(&defer(200)).await.unwrap();
    // Asked again after the recheck: nothing has been touched in between.
    let ComponentUpdatePolicyEvents::PreUpdate(_) = next_update(&mut updates).await else { panic!("a second notice") };
    assert_eq!(fx.core.deployments().status(&id).unwrap().status, DeploymentStatus::InProgress);
    assert_eq!(fx.version_of(LIB).as_deref(), Some("1.0.0"), "held while deferred");
    assert_eq!(installs(&fx.work(LIB)), ["install-1.0.0"]);
    lib.defer_component_update(&defer(0)).await.unwrap();

    let done = fx.core.deployments().wait_finished(&id, DEADLINE).await.unwrap();
    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
    assert_eq!(fx.version_of(LIB).as_deref(), Some("2.0.0"));
    let deferrals = fx.core.deployments().deferrals(&id).unwrap();
    assert_eq!(
        deferrals,
        [Deferral { component: LIB.into(), message: Some("ramping".into()), deferred_for: Duration::from_millis(200) }]
    );
    assert_eq!(
        next_update(&mut updates).await,
        ComponentUpdatePolicyEvents::PostUpdate(PostComponentUpdateEvent { deployment_id: id.clone() })
    );
    fx.core.shutdown(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_that_never_answers_holds_the_update_only_for_the_policy_timeout() {
    let fx = Fixture::start().await;
    let soft = client_as(&fx, SOFT).await;
    let mut updates = soft.subscribe_to_component_updates(&SubscribeToComponentUpdatesRequest {}).await.unwrap();
    let request = CreateLocalDeploymentRequest {
        component_to_configuration: Some(BTreeMap::from([(HARD.to_owned(), json!({"MERGE": {"threshold": 7}}))])),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let id = fx.core.deployments().create_with_policies(request, notify(1), Duration::from_secs(20)).unwrap();
    let ComponentUpdatePolicyEvents::PreUpdate(_) = next_update(&mut updates).await else { panic!("preUpdateEvent") };
    // No answer.
    let done = fx.core.deployments().wait_finished(&id, DEADLINE).await.unwrap();
    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "the round waited for the timeout: {:?}", started.elapsed());
    assert_eq!(fx.core.deployments().deferrals(&id).unwrap(), []);
    assert_eq!(fx.core.config().get(HARD, &["threshold".into()]), Some(json!(7)));
    fx.core.shutdown(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_its_component_rejects_fails_the_deployment_with_nothing_changed() {
    let fx = Fixture::start().await;
    let soft_pid = pid(&fx.work(SOFT)).await;
    let soft = client_as(&fx, SOFT).await;
    let mut proposals = soft
        .subscribe_to_validate_configuration_updates(&SubscribeToValidateConfigurationUpdatesRequest {})
        .await
        .unwrap();
    let request = CreateLocalDeploymentRequest {
        component_to_configuration: Some(BTreeMap::from([(SOFT.to_owned(), json!({"MERGE": {"threshold": -4}}))])),
        ..Default::default()
    };
    // A plain local deployment, as the Greengrass CLI makes it: validation applies to it too.
    let cli = fx.cli().await;
    let id = cli.call::<op::CreateLocalDeployment>(&request).await.unwrap().deployment_id;
    let event = tokio::time::timeout(DEADLINE, proposals.next_event()).await.unwrap().unwrap().unwrap();
    let event = event.validate_configuration_update_event;
    assert_eq!((event.deployment_id.as_str(), &event.configuration["threshold"]), (id.as_str(), &json!(-4)));
    let report = ConfigurationValidityReport {
        status: ConfigurationValidityStatus::Rejected,
        deployment_id: id.clone(),
        message: Some("threshold must not be negative".into()),
    };
    soft.send_configuration_validity_report(&SendConfigurationValidityReportRequest {
        configuration_validity_report: report,
    })
    .await
    .unwrap();

    let done = fx.core.deployments().wait_finished(&id, DEADLINE).await.unwrap();
    assert_eq!(done.status, DeploymentStatus::Failed, "{done:?}");
    let details = done.deployment_status_details.unwrap();
    assert_eq!(details.detailed_deployment_status, DetailedDeploymentStatus::FailedNoStateChange);
    let cause = details.deployment_failure_cause.unwrap();
    assert!(cause.contains(SOFT) && cause.contains("threshold must not be negative"), "{cause}");
    assert!(details.deployment_error_stack.unwrap().contains(&"COMPONENT_CONFIGURATION_NOT_VALID".to_owned()));
    assert_eq!(fx.core.config().get(SOFT, &["threshold".into()]), Some(json!(5)), "the old configuration stays");
    assert_eq!(pid(&fx.work(SOFT)).await, soft_pid, "still running as before");
    assert!(alive(&soft_pid));
    fx.core.shutdown(Duration::from_secs(20)).await;
}

const PROBE: &str = "com.example.Probe";

/// A recipe as AWS's local-development examples write them: the Run step calls a script of
/// the component's artifact directory, and there is no `Artifacts` list.
fn probe_recipe(version: &str) -> String {
    format!(
        r#"RecipeFormatVersion: "2020-01-25"
ComponentName: {PROBE}
ComponentVersion: "{version}"
Manifests:
  - Platform:
      os: linux
    Lifecycle:
      Run: "sh {{artifacts:path}}/probe.sh {version}"
"#
    )
}

/// The probe's script and a data file beside it, in `artifacts/{PROBE}/{version}/`: the script
/// writes its argument and the data file's content to `probe.out` in its work directory.
fn probe_artifacts(version: &str) -> [(String, String); 2] {
    let dir = format!("artifacts/{PROBE}/{version}");
    let script = "echo \"$1 $(cat \"$(dirname \"$0\")/data/greeting.txt\")\" > probe.out\n";
    [(format!("{dir}/probe.sh"), script.to_owned()), (format!("{dir}/data/greeting.txt"), format!("hello {version}"))]
}

#[tokio::test(flavor = "multi_thread")]
async fn undeclared_artifacts_are_copied_at_start_and_by_a_local_deployment() {
    let mut files = vec![("recipes/probe.yaml".to_owned(), probe_recipe("1.0.0"))];
    files.extend(probe_artifacts("1.0.0"));
    let fx = Fixture::with(&files, &[PROBE]).await;
    fx.wait_state(PROBE, S::Finished).await;
    let out = || std::fs::read_to_string(fx.work(PROBE).join("probe.out")).unwrap();
    assert_eq!(out(), "1.0.0 hello 1.0.0\n");

    let dir = fx.new_dir("v2");
    let mut update = vec![("recipes/probe.yaml".to_owned(), probe_recipe("2.0.0"))];
    update.extend(probe_artifacts("2.0.0"));
    write_files(&dir, &update);
    let done = fx.deploy(add(&dir, &[(PROBE, "2.0.0")])).await;

    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
    assert_eq!(fx.version_of(PROBE).as_deref(), Some("2.0.0"));
    // The deployment settles once 2.0.0 runs; FINISHED from now on is its Run's end.
    fx.wait_state(PROBE, S::Finished).await;
    assert_eq!(out(), "2.0.0 hello 2.0.0\n");
    let staged = fx.dir.path().join(format!("root/packages/artifacts/{PROBE}/2.0.0/data/greeting.txt"));
    assert_eq!(std::fs::read_to_string(staged).unwrap(), "hello 2.0.0");
    fx.core.shutdown(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_install_that_fails_is_rolled_back_to_the_previous_version() {
    let fx = Fixture::start().await;
    let dir = fx.new_dir("broken");
    std::fs::write(dir.join("recipes/lib.yaml"), lib_recipe("3.0.0", "exit 1", "")).unwrap();

    let done = fx.deploy(add(&dir, &[(LIB, "3.0.0")])).await;

    assert_eq!(done.status, DeploymentStatus::Failed);
    let details = done.deployment_status_details.unwrap();
    assert_eq!(details.detailed_deployment_status, DetailedDeploymentStatus::FailedRollbackComplete);
    let cause = details.deployment_failure_cause.unwrap();
    assert!(cause.contains(LIB) && cause.contains("BROKEN"), "{cause}");
    assert_eq!(fx.version_of(LIB).as_deref(), Some("1.0.0"), "the previous version is back");
    let log = installs(&fx.work(LIB));
    assert_eq!(log.iter().filter(|l| *l == "install-3.0.0").count(), 3, "three Install attempts: {log:?}");
    assert_eq!(log.last().map(String::as_str), Some("install-1.0.0"), "the old version was installed again");
    for c in [LIB, SOFT, HARD] {
        fx.wait_state(c, S::Running).await;
    }
    fx.core.shutdown(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deployments_run_one_at_a_time_in_the_order_received() {
    let fx = Fixture::start().await;
    let dir = fx.new_dir("v2");
    // The first deployment's Install waits for a go-ahead, so the second arrives while it runs.
    let go = fx.dir.path().join("go");
    let wait_for_go = format!("while [ ! -e {} ]; do sleep 0.05; done", go.display());
    std::fs::write(dir.join("recipes/lib.yaml"), lib_recipe("2.0.0", &wait_for_go, "")).unwrap();
    let mut statuses = fx.core.deployments().subscribe();
    let client = fx.cli().await;
    let first = client.call::<op::CreateLocalDeployment>(&add(&dir, &[(LIB, "2.0.0")])).await.unwrap().deployment_id;
    let second = client.call::<op::CreateLocalDeployment>(&add(&dir, &[(LIB, "1.0.0")])).await.unwrap().deployment_id;
    assert_ne!(first, second);
    let queued = client
        .call::<op::GetLocalDeploymentStatus>(&GetLocalDeploymentStatusRequest { deployment_id: second.clone() })
        .await
        .unwrap();
    assert_eq!(queued.deployment.status, DeploymentStatus::Queued, "the second waits for the first");
    std::fs::write(&go, b"").unwrap();
    let done = fx.core.deployments().wait_finished(&second, DEADLINE).await.unwrap();
    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");

    let mut seen = Vec::new();
    while let Ok(d) = statuses.try_recv() {
        seen.push((if d.deployment.deployment_id == first { 1 } else { 2 }, d.deployment.status));
    }
    use DeploymentStatus::{InProgress, Queued, Succeeded};
    for n in [1, 2] {
        let of: Vec<_> = seen.iter().filter(|(d, _)| *d == n).map(|(_, s)| *s).collect();
        assert_eq!(of, [Queued, InProgress, Succeeded], "deployment {n}: {seen:?}");
    }
    let at = |x: (i32, DeploymentStatus)| seen.iter().position(|y| *y == x).unwrap();
    assert!(at((2, Queued)) < at((1, Succeeded)), "the second was queued while the first ran: {seen:?}");
    assert!(at((1, Succeeded)) < at((2, InProgress)), "one at a time, in order: {seen:?}");
    assert_eq!(fx.version_of(LIB).as_deref(), Some("1.0.0"));

    let status = client
        .call::<op::GetLocalDeploymentStatus>(&GetLocalDeploymentStatusRequest { deployment_id: first.clone() })
        .await
        .unwrap();
    assert_eq!(status.deployment.status, Succeeded);
    let listed = client.call::<op::ListLocalDeployments>(&ListLocalDeploymentsRequest {}).await.unwrap();
    let ids: Vec<_> = listed.local_deployments.iter().map(|d| d.deployment_id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    let unknown = "00000000-0000-4000-8000-000000000000".to_owned();
    let err = client
        .call::<op::GetLocalDeploymentStatus>(&GetLocalDeploymentStatusRequest { deployment_id: unknown })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::ResourceNotFoundError), "{err}");
    let err = client
        .call::<op::GetLocalDeploymentStatus>(&GetLocalDeploymentStatusRequest { deployment_id: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InvalidArgumentsError), "{err}");
    fx.core.shutdown(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn components_without_an_aws_greengrass_cli_policy_are_refused() {
    let fx = Fixture::start().await;
    let socket = fx.core.socket_path().to_owned();
    // A component's own token, as its SVCUID holds it.
    let component = IpcClient::connect(&socket, fx.core.tokens().issue(SOFT)).await.unwrap();
    let err = component.call::<op::CreateLocalDeployment>(&CreateLocalDeploymentRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::UnauthorizedError), "{err}");
    let err = component.call::<op::ListLocalDeployments>(&ListLocalDeploymentsRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::UnauthorizedError), "{err}");
    assert!(fx.core.deployments().list().is_empty(), "nothing was queued");

    // A policy on aws.greengrass.Cli grants exactly the operations it lists.
    let policy = json!({"accessControl": {"aws.greengrass.Cli": {"p:list": {
        "operations": ["aws.greengrass#ListLocalDeployments"], "resources": ["*"]}}}});
    fx.core.access().set_component(SOFT, &policy);
    assert!(component.call::<op::ListLocalDeployments>(&ListLocalDeploymentsRequest {}).await.is_ok());
    let err = component.call::<op::CreateLocalDeployment>(&CreateLocalDeploymentRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::UnauthorizedError), "{err}");

    // Malformed requests from the CLI are refused with a clear error, not queued.
    let bad = CreateLocalDeploymentRequest { recipe_directory_path: Some("relative/dir".into()), ..Default::default() };
    let err = fx.cli().await.call::<op::CreateLocalDeployment>(&bad).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InvalidRecipeDirectoryPathError), "{err}");
    let bad = CreateLocalDeploymentRequest {
        component_to_configuration: Some(BTreeMap::from([(SOFT.to_owned(), json!({"MERGE": [1]}))])),
        ..Default::default()
    };
    let err = fx.cli().await.call::<op::CreateLocalDeployment>(&bad).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::InvalidArgumentsError), "{err}");
    assert!(fx.core.deployments().list().is_empty());
    fx.core.shutdown(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_device_sim_deployment_commands_reach_a_running_core() {
    let fx = Fixture::start().await;
    let dir = fx.new_dir("v2");
    std::fs::write(dir.join("recipes/lib.yaml"), lib_recipe("2.0.0", "true", "")).unwrap();
    let root = fx.dir.path().join("root");
    fn run(args: Vec<String>) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_device-sim")).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }
    fn s(p: &Path) -> String {
        p.display().to_string()
    }
    let out = tokio::task::spawn_blocking({
        let (root, dir) = (root.clone(), dir.clone());
        move || {
            run(vec![
                "deployment".into(),
                "create".into(),
                "--root".into(),
                s(&root),
                "--recipe-dir".into(),
                s(&dir.join("recipes")),
                "--artifact-dir".into(),
                s(&dir.join("artifacts")),
                "--merge".into(),
                format!("{LIB}=2.0.0"),
                "--update-config".into(),
                format!(r#"{{"{LIB}": {{"MERGE": {{"level": 2}}}}}}"#),
            ])
        }
    })
    .await
    .unwrap();
    let id = out.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(out.starts_with("Local deployment submitted! Deployment Id: "), "{out}");
    let done = fx.core.deployments().wait_finished(&id, DEADLINE).await.unwrap();
    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
    assert_eq!(fx.core.config().get(LIB, &["level".into()]), Some(json!(2)));

    let out = tokio::task::spawn_blocking(move || {
        run(vec!["deployment".into(), "status".into(), "--root".into(), s(&root), id])
    })
    .await
    .unwrap();
    assert!(out.contains(": SUCCEEDED") && out.contains("Detailed Status: SUCCESSFUL"), "{out}");
    fx.core.shutdown(Duration::from_secs(20)).await;
}
