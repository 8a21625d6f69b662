//! Build, publish and deploy against the local cloud with the library and the `provision`
//! binary: the GDK layout with digests, artifacts in S3 under `{Name}/{Version}/`, recipes
//! rewritten in the Greengrass service, re-publishing as a no-op or an error naming the changed
//! artifact, and thing-group deployments followed to the end while the test plays a core over
//! MQTT (the namespaced job, job execution updates with the failure cause, fleet status).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_greengrassv2::types::{EffectiveDeploymentExecutionStatus, RecipeOutputFormat};
use provision::component::{
    BuildSpec, PUMP_COMPONENTS, PublishOptions, PublishOutcome, build_components, publish_build,
};
use provision::deploy::{DeploySpec, FollowOptions, create_group_deployment, follow_deployment};
use provision::policy::{AccountScope, PolicySource};
use provision::{ClientOptions, ProvisionError};
use rumqttc::{Event, Incoming, QoS};
use serde_json::{Value, json};
use site_testkit::mqtt::Client;
use tokio::sync::{mpsc, oneshot};

use crate::common::TestCloud;

const CORE: &str = "pump-core-1";
const GROUP: &str = "pump-cores";
const BUCKET: &str = "pump-artifacts";
const SENSOR: &str = "com.example.pump.Sensor";
const MODEL: &str = "com.example.pump.Model";
const NS: &str = "namespace-aws-gg-deployment";
/// How long a played core or a followed deployment may take here.
const DEADLINE: Duration = Duration::from_secs(20);

/// The administrator's key pair: every HTTP API of the local cloud verifies signatures against it.
fn options(cloud: &TestCloud) -> ClientOptions {
    let admin = cloud.endpoints().credentials.clone().expect("the local cloud's administrator key pair");
    ClientOptions {
        endpoint_url: Some(cloud.endpoints().http.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(Credentials::new(admin.access_key_id, admin.secret_access_key, None, None, "test")),
    }
}

struct Clients {
    iot: aws_sdk_iot::Client,
    gg: aws_sdk_greengrassv2::Client,
    s3: aws_sdk_s3::Client,
}

async fn clients(cloud: &TestCloud) -> Clients {
    let o = options(cloud);
    Clients {
        iot: provision::iot_client(&o).await,
        gg: provision::greengrass_client(&o).await,
        s3: provision::s3_client(&o).await,
    }
}

fn components_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../components")
}

/// Builds the shipped recipes of the pump's components, with `sensor` as the sensor's binary.
fn build(dir: &Path, sensor: &[u8]) -> Result<Vec<provision::component::BuiltComponent>, ProvisionError> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("pump-sensor"), sensor).unwrap();
    std::fs::write(bin.join("pump-analyzer"), b"analyzer binary").unwrap();
    std::fs::write(bin.join("pump-controller"), b"controller binary").unwrap();
    build_components(&BuildSpec {
        component_dirs: PUMP_COMPONENTS.iter().map(|c| components_dir().join(c)).collect(),
        bin_dir: bin,
        out: dir.to_path_buf(),
    })
}

fn publish_options() -> PublishOptions {
    PublishOptions { wait: DEADLINE, poll: Duration::from_millis(50), ..PublishOptions::new(BUCKET) }
}

fn sha256_b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

async fn stored_recipe(gg: &aws_sdk_greengrassv2::Client, arn: &str) -> Value {
    let got = gg.get_component().arn(arn).recipe_output_format(RecipeOutputFormat::Json).send().await.unwrap();
    serde_json::from_slice(got.recipe().as_ref()).unwrap()
}

/// Runs the binary against `cloud` with the administrator's key pair from the environment.
async fn run_binary(args: &[&str], cloud: &TestCloud, home: &Path) -> Output {
    let admin = cloud.endpoints().credentials.clone().unwrap();
    let mut cmd = command(home);
    cmd.args(args)
        .args(["--endpoint-url", &cloud.endpoints().http])
        .env("AWS_ACCESS_KEY_ID", admin.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", admin.secret_access_key);
    output(cmd).await
}

/// The binary with nothing from this machine's AWS settings: no files, no instance metadata.
fn command(home: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_provision"));
    cmd.env_clear()
        .env("HOME", home)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .kill_on_drop(true);
    cmd
}

async fn output(mut cmd: tokio::process::Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("the binary finishes").expect("it runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn components_publish_to_s3_and_greengrass_once_and_changed_content_is_refused() {
    let cloud = TestCloud::start().await;
    let c = clients(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    let built = build(dir.path(), b"sensor binary v1").unwrap();
    let root = dir.path().join("greengrass-build");
    assert!(root.join("recipes/com.example.pump.Sensor-1.0.0.yaml").is_file());
    assert!(root.join("artifacts/com.example.pump.Model/2.0.0/model.onnx").is_file());

    // The binary builds the same.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = command(home.path());
    let (sensor, model) = (components_dir().join("sensor"), components_dir().join("model"));
    let (bin, out) = (dir.path().join("bin"), home.path().join("out"));
    cmd.args(["component", "build", "--bin-dir", bin.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args([sensor.to_str().unwrap(), model.to_str().unwrap()]);
    let run = output(cmd).await;
    assert!(run.status.success(), "{}", text(&run));
    assert!(
        text(&run).contains(&format!("pump-sensor  16 bytes  sha256 {}", built[0].artifacts[0].digest)),
        "{}",
        text(&run)
    );
    let recipe = "greengrass-build/recipes/com.example.pump.Sensor-1.0.0.yaml";
    assert_eq!(std::fs::read(out.join(recipe)).unwrap(), std::fs::read(dir.path().join(recipe)).unwrap());

    let published = publish_build(&c.gg, &c.s3, &root, &publish_options()).await.expect("publish");
    assert_eq!(published.len(), 4, "the four shipped recipes are accepted: {published:?}");
    for component in &published {
        let key_of = |file: &str| format!("{}/{}/{file}", component.name, component.version);
        let built = built.iter().find(|b| b.name == component.name).unwrap();
        let expected: Vec<String> = built.artifacts.iter().map(|a| key_of(&a.file_name)).collect();
        assert_eq!(component.outcome, PublishOutcome::Created { uploaded: expected });

        // The objects are in S3 under {Name}/{Version}/{file}, with the content that was built.
        for artifact in &built.artifacts {
            let object = c.s3.get_object().bucket(BUCKET).key(key_of(&artifact.file_name)).send().await.unwrap();
            let body = object.body.collect().await.unwrap().into_bytes();
            assert_eq!(sha256_b64(&body), artifact.digest);
        }
        // The service holds the rewritten URIs and the digests.
        let recipe = stored_recipe(&c.gg, &component.arn).await;
        let artifact = &recipe["Manifests"][0]["Artifacts"][0];
        let file = &built.artifacts[0].file_name;
        assert_eq!(artifact["URI"], format!("s3://{BUCKET}/{}", key_of(file)));
        assert_eq!(artifact["Digest"], built.artifacts[0].digest.as_str());
        assert_eq!(artifact["Algorithm"], "SHA-256");
    }
    let sensor = built.iter().find(|b| b.name == SENSOR).unwrap();
    let sensor_digest = sensor.artifacts[0].digest.clone();
    assert_eq!(sensor_digest, sha256_b64(b"sensor binary v1"));

    // The same build again: nothing to do.
    let again = publish_build(&c.gg, &c.s3, &root, &publish_options()).await.expect("publish again");
    assert!(again.iter().all(|p| p.outcome == PublishOutcome::AlreadyPublished), "{again:?}");
    let out = run_binary(
        &["component", "publish", "--bucket", BUCKET, "--build-dir", root.to_str().unwrap()],
        &cloud,
        home.path(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("com.example.pump.Sensor 1.0.0 already published"), "{}", text(&out));

    // Other content under the same version: refused, naming the artifact; S3 keeps the old object.
    build(dir.path(), b"sensor binary v2").unwrap();
    let err = publish_build(&c.gg, &c.s3, &root, &publish_options()).await.unwrap_err();
    match &err {
        ProvisionError::DigestMismatch { component, artifact, stored, .. } => {
            assert_eq!((component.as_str(), artifact.as_str()), (SENSOR, "pump-sensor"));
            assert_eq!(stored.as_deref(), Some(sensor_digest.as_str()));
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("pump-sensor") && err.to_string().contains("new version"), "{err}");
    let key = format!("{SENSOR}/1.0.0/pump-sensor");
    let object = c.s3.get_object().bucket(BUCKET).key(&key).send().await.unwrap();
    assert_eq!(object.body.collect().await.unwrap().into_bytes().as_ref(), b"sensor binary v1");

    // A build whose artifact went missing.
    std::fs::remove_file(root.join("artifacts/com.example.pump.Model/2.0.0/model.onnx")).unwrap();
    let err = publish_build(&c.gg, &c.s3, &root, &publish_options()).await.unwrap_err();
    assert!(matches!(err, ProvisionError::ArtifactNotFound { .. }) && err.to_string().contains("model.onnx"), "{err}");
    cloud.stop().await;
}

#[tokio::test]
async fn build_refuses_a_missing_binary_and_a_recipe_that_does_not_parse() {
    let dir = tempfile::tempdir().unwrap();
    let spec = BuildSpec {
        component_dirs: vec![components_dir().join("sensor")],
        bin_dir: dir.path().join("empty"),
        out: dir.path().to_path_buf(),
    };
    let err = build_components(&spec).unwrap_err();
    assert!(matches!(err, ProvisionError::ArtifactNotFound { .. }), "{err}");
    assert!(err.to_string().contains("pump-sensor") && err.to_string().contains("cargo build"), "{err}");

    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("recipe.yaml"), "ComponentName: {unclosed").unwrap();
    let spec = BuildSpec { component_dirs: vec![broken], ..spec };
    let err = build_components(&spec).unwrap_err();
    assert!(err.to_string().contains("does not parse") && err.is_configuration(), "{err}");
}

/// What the played core answers to the next deployment.
enum Answer {
    Succeed,
    Fail(&'static str),
}

/// Plays a Greengrass core by the documented contract: announces itself with fleet status,
/// takes each deployment from the `aws-gg-deployment` job namespace, answers it as told, and
/// reports fleet status after it. Signals `ready` once subscribed. Publishes are queued on the
/// event loop rather than awaited one by one, so no notification is skipped while a PUBACK is
/// awaited.
async fn play_core(mut mqtt: Client, mut answers: mpsc::UnboundedReceiver<Answer>, ready: oneshot::Sender<()>) {
    let jobs = format!("$aws/things/{CORE}/jobs");
    let notify = format!("{jobs}/notify-next-{NS}");
    mqtt.subscribe(&[(notify.as_str(), QoS::AtLeastOnce)]).await.expect("SUBACK");
    let mut seq = 0u64;
    let mut fleet_status = |trigger: &str, deployment: Option<(&str, &str)>| {
        seq += 1;
        let mut status = json!({"ggcVersion": "2.14.0", "platform": "linux", "architecture": "amd64", "thing": CORE,
            "overallDeviceStatus": if matches!(deployment, Some((_, "FAILED"))) { "UNHEALTHY" } else { "HEALTHY" },
            "sequenceNumber": seq, "timestamp": 1_700_000_000_000_u64 + seq, "messageType": "COMPLETE",
            "trigger": trigger, "components": []});
        if let Some((id, outcome)) = deployment {
            status["deploymentInformation"] = json!({"deploymentId": id, "status": outcome});
        }
        status.to_string()
    };
    let health = format!("$aws/things/{CORE}/greengrassv2/health/json");
    mqtt.client.publish(&health, QoS::AtLeastOnce, false, fleet_status("NUCLEUS_LAUNCH", None)).await.unwrap();
    let _ = ready.send(());
    let mut handled = std::collections::HashSet::new();
    loop {
        let Ok(next) = mqtt
            .wait_for(Duration::from_secs(120), |ev| match ev {
                Event::Incoming(Incoming::Publish(p)) if p.topic == notify => {
                    serde_json::from_slice::<Value>(&p.payload).ok()
                }
                _ => None,
            })
            .await
        else {
            return;
        };
        let execution = &next["execution"];
        let (Some(job_id), Some(deployment_id)) =
            (execution["jobId"].as_str(), execution["jobDocument"]["deploymentId"].as_str())
        else {
            continue;
        };
        if !handled.insert(job_id.to_owned()) {
            continue;
        }
        let Some(answer) = answers.recv().await else { return };
        let update = format!("{jobs}/{job_id}/{NS}/update");
        let progress = json!({"status": "IN_PROGRESS", "statusDetails": {}});
        mqtt.client.publish(&update, QoS::AtLeastOnce, false, progress.to_string()).await.unwrap();
        let (status, details) = match answer {
            Answer::Succeed => ("SUCCEEDED", json!({"detailed-deployment-status": "SUCCESSFUL"})),
            Answer::Fail(cause) => (
                "FAILED",
                json!({"detailed-deployment-status": "FAILED_NO_STATE_CHANGE", "deployment-failure-cause": cause}),
            ),
        };
        let done = json!({"status": status, "statusDetails": details});
        mqtt.client.publish(&update, QoS::AtLeastOnce, false, done.to_string()).await.unwrap();
        let report = fleet_status("THING_GROUP_DEPLOYMENT", Some((deployment_id, status)));
        mqtt.client.publish(&health, QoS::AtLeastOnce, false, report).await.unwrap();
    }
}

/// A local cloud where the sensor 1.0.0 and the model 2.0.0 are published.
async fn cloud_with_published_components() -> (TestCloud, Clients) {
    let cloud = TestCloud::start().await;
    let c = clients(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    build(dir.path(), b"sensor").unwrap();
    publish_build(&c.gg, &c.s3, &dir.path().join("greengrass-build"), &publish_options()).await.unwrap();
    (cloud, c)
}

/// A shipped policy file rendered for the local cloud's account.
fn rendered(source: PolicySource) -> String {
    let scope = AccountScope { partition: "aws".into(), region: "us-east-1".into(), account_id: "000000000000".into() };
    source.render(&scope, false).unwrap().document
}

#[tokio::test]
async fn deployments_are_followed_until_the_played_core_succeeds_or_fails_with_its_cause() {
    let (cloud, c) = cloud_with_published_components().await;

    // A core in the group, under both shipped policies, played by this test.
    let device = cloud.device(CORE, &rendered(PolicySource::shipped()));
    let deployments = rendered(PolicySource::greengrass_deployments());
    c.iot.create_policy().policy_name("GreengrassCoreDeployments").policy_document(deployments).send().await.unwrap();
    c.iot
        .attach_policy()
        .policy_name("GreengrassCoreDeployments")
        .target(&device.certificate_arn)
        .send()
        .await
        .unwrap();
    c.iot.create_thing_group().thing_group_name(GROUP).send().await.unwrap();
    c.iot.add_thing_to_thing_group().thing_group_name(GROUP).thing_name(CORE).send().await.unwrap();
    let (mqtt, _) = Client::connect(cloud.options(CORE, &device)).await.expect("the core connects");
    let (answers, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready) = oneshot::channel();
    let core = tokio::spawn(play_core(mqtt, rx, ready_tx));
    tokio::time::timeout(DEADLINE, ready).await.expect("the core subscribes").unwrap();

    // The library: create, then follow to SUCCEEDED.
    answers.send(Answer::Succeed).unwrap();
    let spec = DeploySpec {
        thing_group: GROUP.into(),
        components: vec![(SENSOR.into(), "1.0.0".into()), (MODEL.into(), "2.0.0".into())],
        merges: vec![(SENSOR.into(), r#"{"pollPeriodMs": 500}"#.into())],
        rollout_max_per_minute: Some(10),
        abort_failure_percent: Some(50.0),
        update_timeout_secs: Some(30),
        rollback: Some(true),
        notify: Some(true),
        ..DeploySpec::default()
    };
    let created = create_group_deployment(&c.iot, &c.gg, &spec).await.expect("CreateDeployment");
    let asked = c.gg.get_deployment().deployment_id(&created.deployment_id).send().await.unwrap();
    let policies = asked.deployment_policies().unwrap();
    assert_eq!(policies.component_update_policy().and_then(|p| p.timeout_in_seconds()), Some(30));
    let job = asked.iot_job_configuration().unwrap();
    assert_eq!(job.job_executions_rollout_config().and_then(|r| r.maximum_per_minute()), Some(10));
    assert_eq!(
        asked.components().unwrap()[SENSOR].configuration_update().unwrap().merge(),
        Some(r#"{"pollPeriodMs": 500}"#)
    );
    let mut seen = Vec::new();
    let follow = FollowOptions { timeout: DEADLINE, poll: Duration::from_millis(50) };
    let outcome = follow_deployment(&c.gg, &created.target_arn, &created.deployment_id, follow, &mut |s| {
        seen.push(s.status_text().to_owned())
    })
    .await
    .unwrap();
    assert!(outcome.succeeded(), "{outcome:?}");
    assert_eq!(outcome.cores.len(), 1);
    assert_eq!(outcome.cores[0].status, Some(EffectiveDeploymentExecutionStatus::Succeeded));
    assert_eq!(seen.last().map(String::as_str), Some("SUCCEEDED"), "{seen:?}");

    // The binary: a deployment that succeeds exits 0 ...
    let home = tempfile::tempdir().unwrap();
    let deploy = ["deploy", "--thing-group", GROUP, "--component", "com.example.pump.Sensor=1.0.0", "--poll-ms", "50"];
    answers.send(Answer::Succeed).unwrap();
    let out = run_binary(&[&deploy[..], &["--timeout", "20", "--skip-notify"]].concat(), &cloud, home.path()).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("{CORE}: SUCCEEDED")), "{}", text(&out));

    // ... one the core fails exits 1 and prints the core's cause.
    let cause = "com.example.pump.Sensor errored: exit code 3";
    answers.send(Answer::Fail(cause)).unwrap();
    let args = [&deploy[..], &["--timeout", "20", "--failure-handling", "DO_NOTHING"]].concat();
    let out = run_binary(&args, &cloud, home.path()).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&format!("{CORE}: FAILED ({cause})")), "{}", text(&out));
    assert!(text(&out).contains("failed on 1 of 1 core(s)"), "{}", text(&out));

    // A deployment nobody answers ends at the deadline, non-zero.
    let out = run_binary(&[&deploy[..], &["--timeout", "1"]].concat(), &cloud, home.path()).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("did not finish within 1 s"), "{}", text(&out));

    core.abort();
    cloud.stop().await;
}

#[tokio::test]
async fn deploy_refuses_unknown_versions_groups_and_malformed_merges_before_creating_anything() {
    let (cloud, c) = cloud_with_published_components().await;
    let spec = |version: &str, merge: Option<&str>| DeploySpec {
        thing_group: GROUP.into(),
        components: vec![(SENSOR.into(), version.into())],
        merges: merge.map(|m| vec![(SENSOR.into(), m.to_owned())]).unwrap_or_default(),
        ..DeploySpec::default()
    };

    let err = create_group_deployment(&c.iot, &c.gg, &spec("9.9.9", None)).await.unwrap_err();
    assert!(err.to_string().contains("com.example.pump.Sensor version 9.9.9 is not published"), "{err}");
    let err = create_group_deployment(&c.iot, &c.gg, &spec("1.0.0", Some("{\"pollPeriodMs\":"))).await.unwrap_err();
    assert!(err.to_string().contains("malformed JSON") && err.is_configuration(), "{err}");
    let err = create_group_deployment(&c.iot, &c.gg, &spec("1.0.0", None)).await.unwrap_err();
    assert!(err.to_string().contains("--create-group"), "{err}");
    let deployments = c.gg.list_deployments().send().await.unwrap();
    assert!(deployments.deployments().is_empty(), "nothing was deployed");

    // Through the binary, a malformed merge is a configuration error (exit 78).
    let home = tempfile::tempdir().unwrap();
    let out = run_binary(
        &[
            "deploy",
            "--thing-group",
            GROUP,
            "--component",
            "com.example.pump.Sensor=1.0.0",
            "--merge",
            "com.example.pump.Sensor={oops",
        ],
        &cloud,
        home.path(),
    )
    .await;
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("malformed JSON"), "{}", text(&out));

    // --create-group makes the group; the deployment then exists (no core to follow yet).
    let mut with_group = spec("1.0.0", None);
    with_group.create_group = true;
    let created = create_group_deployment(&c.iot, &c.gg, &with_group).await.expect("created with its group");
    assert!(created.target_arn.ends_with(&format!(":thinggroup/{GROUP}")), "{}", created.target_arn);
    let follow = FollowOptions { timeout: Duration::from_millis(300), poll: Duration::from_millis(50) };
    let outcome =
        follow_deployment(&c.gg, &created.target_arn, &created.deployment_id, follow, &mut |_| {}).await.unwrap();
    assert!(outcome.timed_out && outcome.cores.is_empty() && !outcome.succeeded());
    cloud.stop().await;
}

#[tokio::test]
async fn a_large_artifact_goes_up_in_parts_and_keeps_its_digest() {
    let cloud = TestCloud::start().await;
    let c = clients(&cloud).await;
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("big");
    std::fs::create_dir_all(&component).unwrap();
    let recipe = r#"{"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.Big", "ComponentVersion": "1.0.0",
        "ComponentDescription": "a large artifact", "ComponentPublisher": "Example",
        "Manifests": [{"Platform": {"os": "linux"}, "Artifacts": [{"URI": "s3://DOC-EXAMPLE-BUCKET/big.bin"}],
            "Lifecycle": {"Run": "cat {artifacts:path}/big.bin"}}]}"#;
    std::fs::write(component.join("recipe.yaml"), recipe).unwrap();
    let content: Vec<u8> = (0..11 * 1024 * 1024 + 17).map(|i: u32| (i % 251) as u8).collect();
    std::fs::write(component.join("big.bin"), &content).unwrap();
    let spec = BuildSpec { component_dirs: vec![component], bin_dir: dir.path().join("bin"), out: dir.path().into() };
    build_components(&spec).unwrap();
    let options =
        PublishOptions { multipart_threshold: 5 * 1024 * 1024, part_size: 5 * 1024 * 1024, ..publish_options() };
    let published = publish_build(&c.gg, &c.s3, &dir.path().join("greengrass-build"), &options).await.expect("publish");
    assert!(matches!(published[0].outcome, PublishOutcome::Created { .. }));
    let object = c.s3.get_object().bucket(BUCKET).key("com.example.Big/1.0.0/big.bin").send().await.unwrap();
    assert!(object.e_tag().is_some_and(|e| e.trim_matches('"').ends_with("-3")), "three parts: {:?}", object.e_tag());
    let body = object.body.collect().await.unwrap().into_bytes();
    assert_eq!(sha256_b64(&body), sha256_b64(&content));
    let recipe = stored_recipe(&c.gg, &published[0].arn).await;
    assert_eq!(recipe["Manifests"][0]["Artifacts"][0]["Digest"], sha256_b64(&content));
    cloud.stop().await;
}

#[tokio::test]
async fn a_version_the_service_stores_failed_is_an_error_with_its_errors() {
    let cloud = TestCloud::start().await;
    let c = clients(&cloud).await;
    // A recipe whose artifact is in no bucket, and which this build did not produce.
    let uri = "s3://nobody-has-this-bucket/com.example.Broken/1.0.0/missing";
    let recipe = json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.Broken",
        "ComponentVersion": "1.0.0", "ComponentDescription": "broken", "ComponentPublisher": "Example",
        "Manifests": [{"Platform": {"os": "linux"}, "Artifacts": [{"URI": uri}], "Lifecycle": {"Run": "true"}}]});
    let component = provision::component::BuiltComponent {
        name: "com.example.Broken".into(),
        version: "1.0.0".into(),
        recipe_path: PathBuf::from("recipes/com.example.Broken-1.0.0.yaml"),
        recipe,
        artifacts: vec![],
    };
    let err = provision::component::publish_component(&c.gg, &c.s3, &component, &publish_options()).await.unwrap_err();
    match &err {
        ProvisionError::ComponentFailed { component, errors, .. } => {
            assert_eq!(component, "com.example.Broken");
            assert!(errors.contains_key(uri), "{errors:?}");
        }
        other => panic!("expected ComponentFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("FAILED") && err.to_string().contains(uri), "{err}");
    cloud.stop().await;
}
