//! A new model version reaches the running analyzer without a restart.
//!
//! The simulated core runs the model component (`components/model`, its own recipe and
//! artifacts) and the analyzer (its own recipe and binary, `detector: model`). The model
//! component's Install points `{work:path}/current` at its version's artifacts. New model
//! versions are deployed to the running core as an operator deploys them with the Greengrass
//! CLI (CreateLocalDeployment). The analyzer (a SOFT dependent reading that link) must not be
//! restarted, must load the new version in place, and must refuse a broken one while keeping
//! the one that runs: its model status on local `pump/model` says what runs.
//!
//! `ota`: the same through the cloud, as an operator ships a release to a thing group, with the
//! rollback of a version the cores refuse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use cloud_api::ipc::model::{CreateLocalDeploymentRequest, DeploymentStatus, PubSubMessage, SubscribeToTopicRequest};
use cloud_api::ipc::operation as op;
use device_sim::core::runtime::Core;
use kit::ipc::IpcClient;
use pump_types::{MODEL_TOPIC, ModelStatus};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use site_testkit::WAIT;
use site_testkit::site::{self as testkit, Site};
use tokio::sync::mpsc;

#[path = "model_reload/ota.rs"]
mod ota;

const NAME: &str = "com.example.pump.Analyzer";
const MODEL: &str = "com.example.pump.Model";
const LISTENER: &str = "com.example.pump.TestListener";

fn model_component() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model")
}

fn model_recipe() -> String {
    std::fs::read_to_string(model_component().join("recipe.yaml")).unwrap()
}

/// Deploys model `version` to the running core the way an operator would with the Greengrass
/// CLI (CreateLocalDeployment): the committed recipe at `version`, with the committed card and
/// model file edited by `card` and `model`, and the recipe's digests of what is shipped. Returns
/// once the deployment succeeded.
async fn deploy_version(
    site: &Site,
    core: &Core,
    version: &str,
    card: impl FnOnce(&mut Value),
    model: impl FnOnce(Vec<u8>) -> Vec<u8>,
) {
    let dir = site.path().join(format!("deployment-{version}"));
    let artifacts = dir.join("artifacts").join(MODEL).join(version);
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::create_dir_all(dir.join("recipes")).unwrap();
    let mut doc: Value =
        serde_json::from_slice(&std::fs::read(model_component().join("model-card.json")).unwrap()).unwrap();
    doc["version"] = json!(version);
    card(&mut doc);
    let files = [
        ("model-card.json", serde_json::to_vec_pretty(&doc).unwrap()),
        ("model.onnx", model(std::fs::read(model_component().join("model.onnx")).unwrap())),
    ];
    let mut recipe: Value = serde_yaml_ng::from_str(&model_recipe()).unwrap();
    recipe["ComponentVersion"] = json!(version);
    for artifact in recipe["Manifests"][0]["Artifacts"].as_array_mut().unwrap() {
        let uri = artifact["URI"].as_str().unwrap().replace("/2.0.0/", &format!("/{version}/"));
        let (name, bytes) = files.iter().find(|(name, _)| uri.ends_with(name)).expect("an artifact the test ships");
        std::fs::write(artifacts.join(name), bytes).unwrap();
        artifact["Digest"] = json!(BASE64.encode(Sha256::digest(bytes)));
        artifact["URI"] = json!(uri);
    }
    let recipe_file = dir.join("recipes").join(format!("{MODEL}-{version}.yaml"));
    std::fs::write(recipe_file, serde_yaml_ng::to_string(&recipe).unwrap()).unwrap();

    let info = device_sim::core::cli::read_ipc_info(&site.core_root()).unwrap();
    let cli = IpcClient::connect(info.domain_socket_path, info.cli_auth_token).await.unwrap();
    let request = CreateLocalDeploymentRequest {
        root_component_versions_to_add: Some(BTreeMap::from([(MODEL.to_owned(), version.to_owned())])),
        recipe_directory_path: Some(dir.join("recipes").display().to_string()),
        artifacts_directory_path: Some(dir.join("artifacts").display().to_string()),
        ..Default::default()
    };
    let id = cli.call::<op::CreateLocalDeployment>(&request).await.unwrap().deployment_id;
    let done = core.deployments().wait_finished(&id, WAIT).await.expect("the deployment finishes");
    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");
}

/// Collects the analyzer's model status messages.
async fn listen(core: &Core) -> mpsc::UnboundedReceiver<ModelStatus> {
    let ipc = IpcClient::connect(core.socket_path(), core.tokens().issue(LISTENER)).await.unwrap();
    let mut sub = ipc
        .subscribe_to_topic(&SubscribeToTopicRequest { topic: MODEL_TOPIC.into(), receive_mode: None })
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ipc = ipc;
        while let Some(Ok(message)) = sub.next_event().await {
            let status = match message {
                PubSubMessage::Json(m) => serde_json::from_value(m.message),
                PubSubMessage::Binary(m) => serde_json::from_slice(m.message.as_bytes()),
            };
            let _ = tx.send(status.expect("a ModelStatus on pump/model"));
        }
    });
    rx
}

/// Waits for a status that satisfies `pred` (statuses arrive on every change and every 30 s).
async fn wait_status(
    rx: &mut mpsc::UnboundedReceiver<ModelStatus>,
    what: &str,
    pred: impl Fn(&ModelStatus) -> bool,
) -> ModelStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) if pred(&s) => return s,
            Ok(Some(_)) => {}
            _ => panic!("no model status {what}"),
        }
    }
}

fn version_of(s: &ModelStatus) -> Option<&str> {
    s.model.as_ref().map(|m| m.version.as_str())
}

#[tokio::test]
async fn a_new_model_version_is_loaded_in_place_and_a_broken_one_is_refused_keeping_the_last() {
    let mut site = Site::new("core-1");
    site.deploy(MODEL, "2.0.0", &model_recipe());
    for file in ["model.onnx", "model-card.json"] {
        site.add_artifact(MODEL, "2.0.0", model_component().join(file));
    }
    site.deploy(NAME, "1.0.0", &testkit::crate_recipe(env!("CARGO_MANIFEST_DIR")));
    site.add_artifact(NAME, "1.0.0", env!("CARGO_BIN_EXE_pump-analyzer"));
    site.deploy_idle(
        LISTENER,
        json!({"aws.greengrass.ipc.pubsub": {"com.example.pump.TestListener:pubsub:1": {
            "operations": ["aws.greengrass#SubscribeToTopic"], "resources": [MODEL_TOPIC]}}}),
    );
    let core = site.start_core(&json!({NAME: {"MERGE": {"detector": "model"}}})).await;
    site.wait_log(NAME, "running: reading pump/readings").await;
    let mut statuses = listen(&core).await;

    // The status published at start went out before the listener subscribed: the log says it.
    // (At start, or a moment later if the analyzer started before the model's Install made the
    // link: the dependency is SOFT.)
    let log = site.wait_log(NAME, r#"running=["model"]"#).await;
    assert!(log.contains("version=2.0.0") && log.contains("running=[\"model\"]"), "{log}");

    deploy_version(&site, &core, "2.1.0", |_| {}, |bytes| bytes).await;
    let second = wait_status(&mut statuses, "with 2.1.0", |s| version_of(s) == Some("2.1.0")).await;
    assert_eq!((second.running.as_slice(), second.error.as_deref()), (&["model".to_owned()][..], None));

    // A truncated model file fails its digest: refused, and 2.1.0 keeps running.
    deploy_version(&site, &core, "2.2.0", |_| {}, |bytes| bytes[..bytes.len() / 2].to_vec()).await;
    let third = wait_status(&mut statuses, "refusing 2.2.0", |s| s.error.is_some()).await;
    assert_eq!(version_of(&third), Some("2.1.0"));
    assert_eq!(third.running, ["model"]);
    let error = third.error.unwrap();
    assert!(error.contains("keeping version 2.1.0") && error.contains("SHA-256"), "{error}");

    // A card for other features (an input the analyzer does not compute) is refused as well.
    deploy_version(&site, &core, "2.3.0", |card| card["input"]["features"][0] = json!("speed_rpm.median"), |b| b).await;
    let fourth = wait_status(&mut statuses, "refusing 2.3.0", |s| {
        s.error.as_deref().is_some_and(|e| e.contains("speed_rpm.median"))
    })
    .await;
    assert_eq!(version_of(&fourth), Some("2.1.0"));

    // One process all along: the analyzer logs its configuration once per start.
    assert!(core.components().contains(&(MODEL.to_owned(), "2.3.0".to_owned())));
    let log = site.log(NAME);
    assert_eq!(log.matches("configured").count(), 1, "the analyzer restarted; log:\n{log}");
    core.shutdown(WAIT).await;
}
