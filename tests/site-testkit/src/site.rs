//! A simulated site in a temporary directory: components staged from their recipes and
//! binaries, optionally the local cloud, and the simulated core started on them in-process.
//!
//! Layout of the directory: `recipes/`, `artifacts/{Component}/{Version}/`, the core's `root/`,
//! the cloud's `cloud/`, and the PEM files of the registered things.

use std::path::{Path, PathBuf};

use device_sim::core::ComponentState;
use device_sim::core::runtime::{CloudOptions, Core, CoreOptions, parse_update_config};
use device_sim::recipe::DevicePlatform;
use kit::ipc::IpcClient;
use kit::ipc::model::{GetThingShadowRequest, UpdateThingShadowRequest};
use serde_json::{Value, json};

use crate::cloud::{Cloud, Identity};
use crate::{WAIT, wait_until};

/// The region the simulated core reports to its components.
pub const REGION: &str = "us-east-1";

/// A temporary site: staged components, the core device's thing name, and optionally a cloud.
pub struct Site {
    dir: tempfile::TempDir,
    thing: String,
    merges: Vec<String>,
    /// The local cloud the core connects to; `None` runs the core offline. Take it out and put
    /// it back to run the core without it for a while.
    pub cloud: Option<Cloud>,
    /// The core's fleet status cadence; `None` (the default) leaves reporting off, so a
    /// test's core policy need not allow it.
    pub fleet_status: Option<std::time::Duration>,
    /// The telemetry agent's intervals, past the nucleus's minimums; `None` (the default)
    /// keeps the nucleus configuration's (an hour, a day), so nothing is published while a
    /// test runs.
    pub telemetry_intervals: Option<device_sim::core::telemetry::Intervals>,
    /// Whether the core takes deployments from the cloud (off by default, so a test's core
    /// policy need not allow the deployment topics).
    pub cloud_deployments: bool,
    /// The MQTT version of the core's IoT Core connection (MQTT 5 by default, as the nucleus).
    pub mqtt_version: device_sim::core::options::MqttVersion,
    /// How the core rotates its certificate on rotation jobs (off by default, so a test's core
    /// policy need not allow the topics); [`Site::key_files`] is its key store of files.
    pub certificate_rotation: Option<device_sim::core::options::RotationOptions>,
}

impl Site {
    /// An empty site for the core device `thing`, without a cloud.
    pub fn new(thing: &str) -> Site {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::create_dir_all(dir.path().join("recipes")).expect("the recipe directory");
        std::fs::create_dir_all(dir.path().join("artifacts")).expect("the artifact directory");
        Site {
            dir,
            thing: thing.to_owned(),
            merges: Vec::new(),
            cloud: None,
            fleet_status: None,
            telemetry_intervals: None,
            cloud_deployments: false,
            mqtt_version: Default::default(),
            certificate_rotation: None,
        }
    }

    /// Starts the local cloud for this site and registers the core device in it with
    /// `core_policy` (and the operator's application).
    pub async fn start_cloud(&mut self, core_policy: &str) {
        assert!(self.cloud.is_none(), "the site has a cloud already");
        self.cloud = Some(Cloud::start(self.dir.path(), &self.thing, core_policy).await);
    }

    /// The same, with `configure` changing the local cloud's configuration first.
    pub async fn start_cloud_with(
        &mut self,
        core_policy: &str,
        configure: impl FnOnce(&mut local_cloud::server::Config),
    ) {
        assert!(self.cloud.is_none(), "the site has a cloud already");
        self.cloud = Some(Cloud::start_with(self.dir.path(), &self.thing, core_policy, configure).await);
    }

    /// The site's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The core device's thing name.
    pub fn thing(&self) -> &str {
        &self.thing
    }

    /// The simulated core's root directory.
    pub fn core_root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The site's cloud; fails the test if it has none.
    pub fn cloud(&self) -> &Cloud {
        self.cloud.as_ref().expect("the site has a cloud")
    }

    /// The site's cloud, to stop or restart it; fails the test if it has none.
    pub fn cloud_mut(&mut self) -> &mut Cloud {
        self.cloud.as_mut().expect("the site has a cloud")
    }

    /// Stages `recipe` for `component` at `version` and deploys it (`--merge component=version`).
    pub fn deploy(&mut self, component: &str, version: &str, recipe: &str) {
        let file = self.dir.path().join("recipes").join(format!("{component}-{version}.yaml"));
        std::fs::write(&file, recipe).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        self.merges.push(format!("{component}={version}"));
    }

    /// Deploys `component` at 1.0.0 as a process that only sleeps, so that the test can speak
    /// IPC with its token (see [`ipc`]); `access_control` is its recipe's `accessControl`
    /// (IPC service → policy id → `operations` and `resources`).
    pub fn deploy_idle(&mut self, component: &str, access_control: Value) {
        let recipe = json!({
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": component,
            "ComponentVersion": "1.0.0",
            "ComponentConfiguration": {"DefaultConfiguration": {"accessControl": access_control}},
            "Manifests": [{"Lifecycle": {"Run": "exec sleep 600"}}]
        });
        // JSON is YAML too, but the core tells the formats apart by extension.
        let file = self.dir.path().join("recipes").join(format!("{component}-1.0.0.json"));
        std::fs::write(&file, recipe.to_string()).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
        self.merges.push(format!("{component}=1.0.0"));
    }

    /// Copies `file` (a built binary, say) into the artifacts of `component` at `version`,
    /// under its own file name.
    pub fn add_artifact(&self, component: &str, version: &str, file: impl AsRef<Path>) {
        let file = file.as_ref();
        let dir = self.dir.path().join("artifacts").join(component).join(version);
        std::fs::create_dir_all(&dir).expect("the artifact directory");
        let name = file.file_name().expect("an artifact file name");
        std::fs::copy(file, dir.join(name)).unwrap_or_else(|e| panic!("cannot copy {}: {e}", file.display()));
    }

    /// The core's key store of files (its identity directory).
    pub fn key_files(&self) -> device_sim::core::key_store::KeyStore {
        device_sim::core::key_store::KeyStore::files(device_sim::core::claim::identity_dir(&self.core_root()))
    }

    /// Starts the simulated core with the deployed components, `update_config` (the CLI's
    /// `--update-config` document; `{}` for none) and, if the site has one, the cloud.
    pub async fn start_core(&self, update_config: &Value) -> Core {
        let cloud = self.cloud.as_ref().map(Cloud::core_options);
        self.start_core_as(&self.thing, self.core_root(), cloud, update_config).await
    }

    /// Starts another core device of the site's cloud, `identity` (registered with
    /// [`crate::cloud::register`]), under `root`, with the same staged components and options.
    pub async fn start_other_core(&self, identity: &Identity, root: PathBuf, update_config: &Value) -> Core {
        let cloud = Some(self.cloud().options_for(identity));
        self.start_core_as(&identity.thing, root, cloud, update_config).await
    }

    async fn start_core_as(
        &self,
        thing: &str,
        root: PathBuf,
        cloud: Option<CloudOptions>,
        update_config: &Value,
    ) -> Core {
        Core::start(CoreOptions {
            root,
            thing: thing.to_owned(),
            recipe_dir: self.dir.path().join("recipes"),
            artifact_dir: self.dir.path().join("artifacts"),
            merges: self.merges.clone(),
            region: REGION.into(),
            root_ca_path: None,
            platform: DevicePlatform::current(),
            update_config: parse_update_config(update_config).expect("a valid configuration update"),
            cloud: cloud.map(|options| CloudOptions {
                fleet_status: self.fleet_status,
                telemetry_intervals: self.telemetry_intervals,
                cloud_deployments: self.cloud_deployments,
                mqtt_version: self.mqtt_version,
                certificate_rotation: self.certificate_rotation.clone(),
                ..options
            }),
            nucleus_version: CoreOptions::default_nucleus_version(),
        })
        .await
        .expect("the simulated core starts")
    }

    /// The log the core keeps of `component` (empty until it writes one).
    pub fn log(&self, component: &str) -> String {
        std::fs::read_to_string(self.core_root().join("logs").join(format!("{component}.log"))).unwrap_or_default()
    }

    /// Waits until `component` is RUNNING; fails the test with its log if it is BROKEN or does
    /// not get there within [`WAIT`].
    pub async fn wait_running(&self, core: &Core, component: &str) {
        let wanted = [ComponentState::Running, ComponentState::Broken];
        let state = core.wait_for_state(component, &wanted, WAIT).await;
        assert_eq!(state, Some(ComponentState::Running), "{component}; log:\n{}", self.log(component));
    }

    /// Waits until the log of `component` contains `text`; returns the log.
    pub async fn wait_log(&self, component: &str, text: &str) -> String {
        wait_until(
            format!("{text:?} in the log of {component}"),
            async || self.log(component),
            |log| log.contains(text),
            |log| format!("log:\n{log}"),
        )
        .await
    }
}

/// The recipe file `recipe.yaml` of the crate in `manifest_dir` (pass `env!("CARGO_MANIFEST_DIR")`).
pub fn crate_recipe(manifest_dir: &str) -> String {
    let path = Path::new(manifest_dir).join("recipe.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The `--update-config` document that makes ShadowManager sync the core thing's `named` shadows
/// (not its classic shadow) both ways.
pub fn shadow_sync(named: &[&str]) -> Value {
    json!({
        "aws.greengrass.ShadowManager": {"MERGE": {"synchronize": {
            "coreThing": {"classic": false, "namedShadows": named}
        }}}
    })
}

/// Waits until the core's IoT Core connection is up (`true`) or down (`false`).
pub async fn wait_connection(core: &Core, up: bool) {
    let mut connection = core.bridge().expect("the core has a cloud connection").connection();
    tokio::time::timeout(WAIT, connection.wait_for(|now| *now == up))
        .await
        .unwrap_or_else(|_| {
            panic!("the core's connection did not go {} within {WAIT:?}", if up { "up" } else { "down" })
        })
        .expect("the bridge is running");
}

/// An IPC client of the core, authenticated as `component`.
pub async fn ipc(core: &Core, component: &str) -> IpcClient {
    IpcClient::connect(core.socket_path(), core.tokens().issue(component)).await.expect("an IPC connection")
}

/// The local shadow `shadow` of `thing` over IPC (GetThingShadow); `None` while there is none.
pub async fn local_shadow(client: &IpcClient, thing: &str, shadow: &str) -> Option<Value> {
    let request = GetThingShadowRequest { thing_name: thing.into(), shadow_name: Some(shadow.into()) };
    match client.get_thing_shadow(&request).await {
        Ok(r) => Some(serde_json::from_slice(r.payload.as_bytes()).expect("a JSON shadow document")),
        Err(e) if e.is_not_found() => None,
        Err(e) => panic!("GetThingShadow: {e}"),
    }
}

/// Writes `doc` to the local shadow `shadow` of `thing` over IPC (UpdateThingShadow); returns
/// the accepted document.
pub async fn update_local_shadow(client: &IpcClient, thing: &str, shadow: &str, doc: &Value) -> Value {
    let request = UpdateThingShadowRequest {
        thing_name: thing.into(),
        shadow_name: Some(shadow.into()),
        payload: serde_json::to_vec(doc).expect("a JSON document").into(),
    };
    let r = client.update_thing_shadow(&request).await.expect("UpdateThingShadow");
    serde_json::from_slice(r.payload.as_bytes()).expect("a JSON accepted document")
}

/// Waits until the local shadow satisfies `pred` (`null` while there is none); returns it.
pub async fn wait_local_shadow(
    client: &IpcClient,
    thing: &str,
    shadow: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    wait_until(
        format!("the local shadow showing {what}"),
        async || local_shadow(client, thing, shadow).await.unwrap_or(Value::Null),
        pred,
        |doc| format!("{doc:#}"),
    )
    .await
}
