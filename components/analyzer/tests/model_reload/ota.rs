//! A retrained model shipped over the air, as an operator ships it: `provision model release`'s
//! code path (check, build, publish to S3 and Greengrass, a revision of the thing group's
//! deployment) against the local cloud, to a group of simulated cores that take cloud
//! deployments and run the analyzer with `detector: model`.
//!
//! A good version reaches every core and every analyzer loads it in place. A bad one (built
//! past the release check) fails its Install on every core, where the model checker runs before
//! the `current` link moves; the deployment fails, ROLLBACK restores the previous version, and
//! the analyzers, which never saw the bad one, keep running the previous model.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use device_sim::core::runtime::Core;
use provision::component::{BuildSpec, PublishOptions};
use provision::deploy::{CreatedDeployment, DeploySpec, DeploymentOutcome, FollowOptions};
use provision::model_release;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use site_testkit::WAIT;
use site_testkit::cloud::{cloud_deployments_policy, register};
use site_testkit::site::{self as testkit, Site};
use tokio::sync::mpsc;
use tract_onnx::pb;

use super::{LISTENER, MODEL, NAME, listen, model_component, model_recipe, wait_status};

const GROUP: &str = "pump-cores";
const BUCKET: &str = "pump-model-releases";

/// The operator's clients, signed with the local cloud's administrator key pair.
struct Operator {
    iot: aws_sdk_iot::Client,
    gg: aws_sdk_greengrassv2::Client,
    s3: aws_sdk_s3::Client,
}

impl Operator {
    async fn new(site: &Site) -> Operator {
        let endpoints = site.cloud().endpoints();
        let options = provision::ClientOptions {
            endpoint_url: Some(endpoints.http.clone()),
            region: Some(endpoints.region.clone()),
            credentials: Some(provision::client::local_cloud_credentials(endpoints).unwrap()),
        };
        Operator {
            iot: provision::iot_client(&options).await,
            gg: provision::greengrass_client(&options).await,
            s3: provision::s3_client(&options).await,
        }
    }

    async fn follow(&self, created: &CreatedDeployment) -> DeploymentOutcome {
        let options = FollowOptions { timeout: Duration::from_secs(180), poll: Duration::from_millis(200) };
        provision::deploy::follow_deployment(
            &self.gg,
            &created.target_arn,
            &created.deployment_id,
            options,
            &mut |_| {},
        )
        .await
        .unwrap()
    }

    /// Stages, builds and publishes model `version` from `model_dir`, with no check: the release
    /// command checks first (see `check_model_dir`).
    async fn publish_model(&self, model_dir: &Path, out: &Path, version: &str) {
        let built = model_release::stage_release(model_dir, &checker_dir(), out, version).unwrap();
        provision::component::publish_component(&self.gg, &self.s3, &built, &PublishOptions::new(BUCKET))
            .await
            .unwrap();
    }
}

/// Where the model checker was built (beside this test's binaries).
fn checker_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_pump-model-check")).parent().unwrap().to_owned()
}

/// The committed model's component version and the next minor ones: never hard-coded, the
/// committed model moves on.
fn versions() -> (String, String, String) {
    let recipe: Value = serde_yaml_ng::from_str(&model_recipe()).unwrap();
    let shipped = recipe["ComponentVersion"].as_str().unwrap().to_owned();
    let parts: Vec<u64> = shipped.split('.').map(|p| p.parse().unwrap()).collect();
    let minor = |n: u64| format!("{}.{}.0", parts[0], parts[1] + n);
    (shipped, minor(1), minor(2))
}

/// A model directory like the committed one, at `version`, with its model file made by `model`
/// from the committed one and the card's digest of the result.
fn model_dir(root: &Path, version: &str, model: impl FnOnce(Vec<u8>) -> Vec<u8>) -> (PathBuf, String) {
    let dir = root.join(format!("trained-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = model(std::fs::read(model_component().join("model.onnx")).unwrap());
    let sha = hex::encode(Sha256::digest(&bytes));
    let mut card: Value =
        serde_json::from_slice(&std::fs::read(model_component().join("model-card.json")).unwrap()).unwrap();
    card["version"] = json!(version);
    card["model"]["sha256"] = json!(sha);
    std::fs::write(dir.join("model.onnx"), &bytes).unwrap();
    std::fs::write(dir.join("model-card.json"), serde_json::to_vec_pretty(&card).unwrap()).unwrap();
    (dir, sha)
}

/// The same forest in another file: the graph's documentation changed, so another SHA-256.
fn retrained(bytes: Vec<u8>) -> Vec<u8> {
    use prost::Message as _;
    let mut proto = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    proto.doc_string = "retrained for the over-the-air test".into();
    proto.encode_to_vec()
}

/// The analyzer's recipe as published for this test: the shipped one, run from the binary this
/// test was built with rather than from an uploaded copy of it (hundreds of MB in a debug build).
fn analyzer_recipe() -> Value {
    let mut recipe: Value = serde_yaml_ng::from_str(&testkit::crate_recipe(env!("CARGO_MANIFEST_DIR"))).unwrap();
    let manifest = &mut recipe["Manifests"][0];
    let run = manifest["Lifecycle"]["Run"].as_str().unwrap();
    let exe = env!("CARGO_BIN_EXE_pump-analyzer");
    manifest["Lifecycle"]["Run"] = json!(run.replace("'{artifacts:path}/pump-analyzer'", &format!("'{exe}'")));
    manifest.as_object_mut().unwrap().remove("Artifacts");
    recipe
}

/// The analyzer's statuses on `core` up to now, and the one it last published.
fn drain(rx: &mut mpsc::UnboundedReceiver<pump_types::ModelStatus>) -> Vec<pump_types::ModelStatus> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_model_reaches_every_core_in_place_and_a_bad_one_rolls_the_group_back() {
    let (shipped, good, bad) = versions();
    let mut site = Site::new("core-1");
    site.start_cloud(&cloud_deployments_policy()).await;
    site.cloud_deployments = true;
    site.fleet_status = Some(Duration::from_secs(3600));
    site.deploy_idle(
        LISTENER,
        json!({"aws.greengrass.ipc.pubsub": {"com.example.pump.TestListener:pubsub:1": {
            "operations": ["aws.greengrass#SubscribeToTopic"], "resources": [pump_types::MODEL_TOPIC]}}}),
    );
    let local = site.cloud().local();
    local.registry.create_thing_group(GROUP, None, None, Default::default()).unwrap();
    let second = register(local, site.path(), "core-2", &cloud_deployments_policy());
    let mut cores: Vec<(String, PathBuf, Core)> = Vec::new();
    for thing in ["core-1", "core-2"] {
        local.registry.add_thing_to_thing_group(GROUP, thing).unwrap();
    }
    cores.push(("core-1".into(), site.core_root(), site.start_core(&json!({})).await));
    let root = site.path().join("root-2");
    cores.push(("core-2".into(), root.clone(), site.start_other_core(&second, root, &json!({})).await));
    let mut statuses = Vec::new();
    for (_, _, core) in &cores {
        statuses.push(listen(core).await);
    }
    let operator = Operator::new(&site).await;
    let out = site.path().join("operator");

    // What the group runs first: the analyzer and the committed model, deployed as usual.
    let analyzer = out.join("analyzer");
    std::fs::create_dir_all(&analyzer).unwrap();
    std::fs::write(analyzer.join("recipe.yaml"), serde_yaml_ng::to_string(&analyzer_recipe()).unwrap()).unwrap();
    let built = provision::component::build_components(&BuildSpec {
        component_dirs: vec![analyzer],
        bin_dir: out.join("no-binaries"),
        out: out.clone(),
    })
    .unwrap();
    provision::component::publish_component(&operator.gg, &operator.s3, &built[0], &PublishOptions::new(BUCKET))
        .await
        .unwrap();
    let checked = model_release::check_model_dir(&model_component(), &checker_dir(), None).unwrap();
    assert_eq!(checked.version, shipped, "the committed card and recipe name the same version");
    operator.publish_model(&model_component(), &out, &shipped).await;
    let first = provision::deploy::create_group_deployment(
        &operator.iot,
        &operator.gg,
        &DeploySpec {
            thing_group: GROUP.into(),
            components: vec![(NAME.into(), built[0].version.clone()), (MODEL.into(), shipped.clone())],
            merges: vec![(NAME.into(), json!({"detector": "model"}).to_string())],
            rollback: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let outcome = operator.follow(&first).await;
    assert!(outcome.succeeded(), "{outcome:?}");
    let shipped_sha = hex::encode(Sha256::digest(std::fs::read(model_component().join("model.onnx")).unwrap()));
    for rx in &mut statuses {
        wait_status(rx, "with the shipped model", |s| s.model.as_ref().is_some_and(|m| m.sha256 == shipped_sha)).await;
    }

    // A good release: every core reports it, every analyzer runs it without a restart.
    let (good_dir, good_sha) = model_dir(site.path(), &good, retrained);
    let checked = model_release::check_model_dir(&good_dir, &checker_dir(), Some(&good)).unwrap();
    assert!(checked.report.contains(&good_sha), "{}", checked.report);
    operator.publish_model(&good_dir, &out, &good).await;
    let released = Instant::now();
    let created = model_release::deploy_model_version(&operator.iot, &operator.gg, GROUP, &good).await.unwrap();
    let outcome = operator.follow(&created).await;
    assert!(outcome.succeeded() && outcome.cores.len() == 2, "{outcome:?}");
    for rx in &mut statuses {
        let status = wait_status(rx, "with the released model", |s| {
            s.model.as_ref().is_some_and(|m| m.sha256 == good_sha && m.version == good)
        })
        .await;
        assert_eq!((status.running.as_slice(), status.error), (&["model".to_owned()][..], None));
    }
    eprintln!(
        "release of {MODEL} {good} to every core of a {}-core group running it: {:.1} s",
        cores.len(),
        released.elapsed().as_secs_f64()
    );
    for (_, _, core) in &cores {
        assert!(core.components().contains(&(MODEL.to_owned(), good.clone())));
        assert!(core.components().contains(&(NAME.to_owned(), built[0].version.clone())), "the analyzer stays");
    }

    // A truncated model file whose card matches it: the release check refuses it, naming the
    // check, and publishes nothing.
    let (bad_dir, _) = model_dir(site.path(), &bad, |bytes| bytes[..bytes.len() / 2].to_vec());
    let refused = model_release::check_model_dir(&bad_dir, &checker_dir(), None).unwrap_err().to_string();
    assert!(refused.contains("fails the analyzer's checks") && refused.contains("ONNX"), "{refused}");
    assert!(provision::component::component_version_arn(&operator.gg, MODEL, &bad).await.is_err());
    // Built past the check, it reaches the cores: their Install refuses it and the group rolls back.
    operator.publish_model(&bad_dir, &out, &bad).await;
    let created = model_release::deploy_model_version(&operator.iot, &operator.gg, GROUP, &bad).await.unwrap();
    let outcome = operator.follow(&created).await;
    assert!(!outcome.timed_out && outcome.cores.len() == 2, "{outcome:?}");
    let job = created.iot_job_id.clone().unwrap();
    for ((thing, root, core), rx) in cores.iter().zip(&mut statuses) {
        let status = outcome.cores.iter().find(|c| &c.thing == thing).unwrap();
        assert_eq!(status.status_text(), "FAILED", "{status:?}");
        let execution = local.jobs.describe_execution(&job, thing).unwrap();
        let details = &execution.status_details;
        assert_eq!(details["detailed-deployment-status"], "FAILED_ROLLBACK_COMPLETE", "{details:?}");
        assert!(details["deployment-error-stack"].contains("COMPONENT_BROKEN"), "{details:?}");
        assert_eq!(details["deployment-error-types"], r#"["USER_COMPONENT_ERROR"]"#, "{details:?}");
        assert!(details["deployment-failure-cause"].contains(MODEL), "{details:?}");
        assert!(core.components().contains(&(MODEL.to_owned(), good.clone())), "rolled back: {:?}", core.components());
        let install_log = std::fs::read_to_string(root.join("logs").join(format!("{MODEL}.log"))).unwrap_or_default();
        assert!(install_log.contains("model refused"), "the checker's reason in the model's log:\n{install_log}");
        // The analyzer never saw the bad version: it runs the good model as before (it says so
        // every 30 s).
        let seen = drain(rx);
        assert!(seen.iter().all(|s| s.model.as_ref().is_some_and(|m| m.sha256 == good_sha)), "{seen:?}");
        let now = wait_status(rx, "after the rollback", |_| true).await;
        assert_eq!((now.model.map(|m| m.sha256), now.error), (Some(good_sha.clone()), None));
        let log = std::fs::read_to_string(root.join("logs").join(format!("{NAME}.log"))).unwrap();
        assert_eq!(log.matches("configured").count(), 1, "{thing}: the analyzer restarted; log:\n{log}");
    }
    for (_, _, core) in cores {
        core.shutdown(WAIT).await;
    }
}
