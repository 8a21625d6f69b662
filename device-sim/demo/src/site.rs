//! The pieces of the demo and how they start: the local cloud, the core device provisioned
//! through the AWS SDK, the plant, the simulated core with the components staged from their
//! recipes, and the operator's clients (IoT data plane over HTTP, the plant's control API,
//! a Modbus probe).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use aws_credential_types::Credentials;
use cloud_api::endpoints::Endpoints;
use device_sim::core::ComponentState;
use device_sim::core::runtime::{CloudOptions, Core, CoreOptions, parse_update_config};
use device_sim::plant::{PlantConfig, PlantHandle};
use device_sim::recipe::DevicePlatform;
use local_cloud::server::{Config as CloudConfig, LocalCloud};
use provision::{ClientOptions, CoreDeviceSpec, ProvisionedDevice};
use pump_map::{Coil, Measurement, Measurements, Setpoint};
use serde_json::{Value, json};

use crate::rollout::{self, Operator, Timeline};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_modbus::client::{Context as ModbusContext, Reader};

/// The core device's thing name.
pub const THING: &str = "pump-station-1";
/// The version every component is deployed at.
pub use device_sim::shipped::VERSION;
/// Where the nucleus's artifacts live, as AWS keeps its own components' artifacts.
const NUCLEUS_BUCKET: &str = "greengrass-nucleus-artifacts";
/// Where the analyzer uploads the readings around each anomaly (its thing's prefix only).
pub const ANOMALY_BUCKET: &str = "pump-anomaly-windows";
/// The core's token exchange role alias (`iotRoleAlias`).
pub const ROLE_ALIAS: &str = "PumpCoreTokenExchangeRoleAlias";
/// Readings after a raise that complete its window (the sensor polls every 250 ms here).
pub const ANOMALY_AFTER_SAMPLES: usize = 20;

pub use device_sim::shipped::{COMPONENTS, Component, ModelComponent};

/// Every shipped component at [`VERSION`], but those of `changed` at their version.
pub fn versions(changed: &[(&str, &str)]) -> Vec<(String, String)> {
    COMPONENTS
        .iter()
        .map(|c| {
            let version = changed.iter().find(|(n, _)| *n == c.name).map_or(VERSION, |(_, v)| v);
            (c.name.to_owned(), version.to_owned())
        })
        .collect()
}

/// The version of the retrained model the demo rolls out: [`MODEL_RETRAINED`].
pub const MODEL_RETRAINED_VERSION: &str = "2.1.0";

/// The retrained model, version 2.1.0, as shipped in `components/model/releases/2.1.0`.
pub const MODEL_RETRAINED: ModelComponent = ModelComponent {
    name: pump_types::MODEL_COMPONENT,
    recipe: include_str!("../../../components/model/releases/2.1.0/recipe.yaml"),
    artifacts: &[
        ("model.onnx", include_bytes!("../../../components/model/releases/2.1.0/model.onnx")),
        ("model-card.json", include_bytes!("../../../components/model/releases/2.1.0/model-card.json")),
    ],
};

/// The administrator's key pair the local cloud writes into `endpoints.json`: every HTTP API
/// of the local cloud verifies SigV4 signatures against it (on AWS the default credential
/// chain stands here).
pub fn credentials(endpoints: &Endpoints) -> anyhow::Result<Credentials> {
    Ok(provision::client::local_cloud_credentials(endpoints)?)
}

/// What a site is started with.
pub struct SiteOptions<'a> {
    /// The plant's noise seed.
    pub seed: u64,
    /// The analyzer's `detector` configuration (`rules`, `model`, `both`).
    pub detector: &'a str,
    /// Where the components' own binaries are ([`crate::rollout::component_bins`]); `None`:
    /// next to this executable.
    pub bins: Option<&'a Path>,
    /// How often the footprint sampler reads `/proc`.
    pub footprint_period: Duration,
    /// How long each component may take to reach RUNNING.
    pub wait: Duration,
}

/// The running site.
pub struct Site {
    /// Where everything is kept (`{out}/run`).
    pub dir: PathBuf,
    /// The local cloud, while it runs.
    pub cloud: Option<LocalCloud>,
    /// Where the cloud listens.
    pub endpoints: Endpoints,
    /// IoT control plane client (the operator).
    pub iot: aws_sdk_iot::Client,
    /// IoT data plane client (the operator).
    pub data: aws_sdk_iotdataplane::Client,
    /// What provisioning made.
    pub device: ProvisionedDevice,
    /// The plant.
    pub plant: Option<PlantHandle>,
    /// The simulated core.
    pub core: Option<Core>,
    /// Reads the core's and the components' memory and CPU time while the site runs.
    pub footprint: Option<crate::footprint::Sampler>,
    /// Where the components' own binaries are (known once the site started).
    pub bins: Option<PathBuf>,
    /// The operator's clients for publishing and deploying (once the site started).
    pub operator: Option<Operator>,
    /// The site's configuration merges ([`Site::component_merges`]), carried by every deployment
    /// to the group: a core that joins later (a replacement) gets only the latest revision, so
    /// each one must hold the whole configuration, not only what changed.
    pub merges: Vec<(String, String)>,
    /// The core running as its own process under `device-sim launcher`, once the site's core was
    /// handed over to it ([`Site::hand_core_to_launcher`]); `core` is then `None`.
    pub launched: Option<tokio::process::Child>,
}

impl Site {
    /// Starts the local cloud in `dir` and provisions the core device through the AWS SDK; the
    /// plant and the core start with [`Site::start_site`].
    pub async fn start_cloud_and_device(dir: &Path) -> anyhow::Result<Site> {
        let (cloud, endpoints) = Self::start_cloud(dir).await?;
        let (iot, data) = Self::clients(&endpoints).await?;
        let device = Self::provision(&iot, &endpoints, dir).await?;
        Ok(Site {
            dir: dir.to_owned(),
            cloud: Some(cloud),
            endpoints,
            iot,
            data,
            device,
            plant: None,
            core: None,
            footprint: None,
            bins: None,
            operator: None,
            merges: Vec::new(),
            launched: None,
        })
    }

    /// Starts the plant and the simulated core (empty: it takes cloud deployments); builds,
    /// publishes and deploys the components to the core's thing group from the cloud
    /// ([`crate::rollout`]), and waits until every component is RUNNING; the footprint sampler
    /// watches the components from then on. Returns the deployment's timeline.
    pub async fn start_site(&mut self, options: &SiteOptions<'_>) -> anyhow::Result<Timeline> {
        let bins = rollout::component_bins(options.bins)?;
        let plant = self.plant.insert(Self::start_plant(options.seed, 1.0).await?);
        let merges = Self::component_merges(plant.modbus_addr(), options.detector, &self.endpoints.http);
        let operator = self.operator.insert(Operator::new(&self.endpoints).await?);
        Self::token_exchange(operator).await?;
        let core = self.core.insert(Self::start_core(&self.dir, &self.device).await?);
        rollout::build(&self.dir, &bins)?;
        rollout::publish(operator, &self.dir).await?;
        rollout::join_group(operator, THING).await?;
        let components = COMPONENTS.iter().map(|c| (c.name.to_owned(), VERSION.to_owned())).collect();
        let purpose = "the pump station's components";
        self.merges = merges.clone();
        let timeline = rollout::deploy(operator, purpose, components, merges, options.wait)
            .await?
            .with_core_view(core.deployments());
        self.bins = Some(bins);
        if !timeline.succeeded {
            bail!(
                "the deployment {} did not succeed on the core: {:?} (logs under {})",
                timeline.deployment_id,
                timeline.last_status(THING),
                core.layout().root().join("logs").display()
            );
        }
        let watched: Vec<(&str, &str)> = COMPONENTS.iter().map(|c| (c.name, c.artifact)).collect();
        self.footprint = Some(crate::footprint::Sampler::start(&watched, true, options.footprint_period));
        for c in COMPONENTS {
            let state = core.wait_for_state(c.name, &[ComponentState::Running], options.wait).await;
            if state != Some(ComponentState::Running) {
                bail!("{} is {state:?}, not RUNNING (see {})", c.name, core.layout().root().display());
            }
        }
        Ok(timeline)
    }

    /// Deploys `components` with the site's configuration to the thing group from the cloud and
    /// follows it ([`rollout::deploy`]); the timeline carries what the core downloaded.
    pub async fn deploy(
        &self,
        purpose: &str,
        components: Vec<(String, String)>,
        wait: Duration,
    ) -> anyhow::Result<Timeline> {
        let (operator, _) = self.rollout()?;
        let timeline = rollout::deploy(operator, purpose, components, self.merges.clone(), wait).await?;
        Ok(timeline.with_core_view(self.core()?.deployments()))
    }

    /// The operator's clients and the component binaries, for a rollout.
    pub fn rollout(&self) -> anyhow::Result<(&Operator, &Path)> {
        let operator = self.operator.as_ref().context("the site has not started")?;
        Ok((operator, self.bins.as_deref().context("the site has not started")?))
    }

    /// Stops the core (its components first), the plant and the cloud, in that order.
    pub async fn stop(&mut self) {
        if let Some(core) = self.core.take() {
            core.shutdown(Duration::from_secs(20)).await;
        }
        if let Some(mut launcher) = self.launched.take() {
            // SIGTERM: the launcher stops its core, which stops the components.
            if let Some(pid) = launcher.id().and_then(|id| rustix::process::Pid::from_raw(id as i32)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            if tokio::time::timeout(Duration::from_secs(30), launcher.wait()).await.is_err() {
                let _ = launcher.kill().await;
            }
        }
        if let Some(plant) = self.plant.take() {
            plant.shutdown().await;
        }
        if let Some(cloud) = self.cloud.take() {
            cloud.shutdown().await;
        }
    }

    /// The simulated core.
    pub fn core(&self) -> anyhow::Result<&Core> {
        self.core.as_ref().context("the core is not running")
    }

    /// Starts the local cloud in `dir/cloud` on ephemeral loopback ports.
    pub async fn start_cloud(dir: &Path) -> anyhow::Result<(LocalCloud, Endpoints)> {
        let mut config = CloudConfig::ephemeral(dir.join("cloud"));
        // The dashboard reads the demo's audit when asked: it is written at the end of the run.
        config.dashboard.checklist = Some(crate::audit::checklist_file(dir));
        let cloud = LocalCloud::start(config).await.context("starting the local cloud")?;
        let endpoints = cloud.endpoints.clone();
        Ok((cloud, endpoints))
    }

    /// The SDK clients for `endpoints`, through the same code path that targets real AWS.
    pub async fn clients(endpoints: &Endpoints) -> anyhow::Result<(aws_sdk_iot::Client, aws_sdk_iotdataplane::Client)> {
        let options = ClientOptions {
            endpoint_url: Some(endpoints.http.clone()),
            region: Some(endpoints.region.clone()),
            credentials: Some(credentials(endpoints)?),
        };
        let iot = provision::iot_client(&options).await;
        let config = aws_sdk_iotdataplane::Config::builder()
            .behavior_version(aws_sdk_iotdataplane::config::BehaviorVersion::latest())
            .region(aws_sdk_iotdataplane::config::Region::new(endpoints.region.clone()))
            .credentials_provider(credentials(endpoints)?)
            .endpoint_url(endpoints.http.clone())
            .http_client(provision::client::http_client())
            .build();
        Ok((iot, aws_sdk_iotdataplane::Client::from_conf(config)))
    }

    /// Provisions the core device (thing, certificate from a local key, the shipped policy, the
    /// shipped certificate-rotation policy).
    pub async fn provision(
        iot: &aws_sdk_iot::Client,
        endpoints: &Endpoints,
        dir: &Path,
    ) -> anyhow::Result<ProvisionedDevice> {
        let mut spec = CoreDeviceSpec::new(THING, dir.join("device"), &endpoints.ca_file);
        spec.mqtt_port = endpoints.mqtt_host_port().map_err(anyhow::Error::msg)?.1;
        spec.data_plane_url = Some(endpoints.http.clone());
        // The core takes its components from the cloud: the deployments policy, the data plane.
        spec.deployments_policy = Some(provision::DEFAULT_DEPLOYMENTS_POLICY_NAME.into());
        spec.greengrass_data_plane_url = endpoints.greengrass_data_plane.clone();
        // The core's token exchange service asks the credentials provider.
        spec.credentials_provider_url = endpoints.credentials_provider.clone();
        let device = provision::provision_core_device(iot, &spec).await.context("provisioning the core device")?;
        // The core rotates its certificate on a rotation job: the shipped rotation policy on its
        // certificate too, as the fleet's template attaches it (a rotation copies the old
        // certificate's policies onto the new one).
        let rotation = provision::DEFAULT_ROTATION_POLICY_NAME;
        provision::fleet::ensure_rotation_policy(iot, &device.record.thing_arn, rotation)
            .await
            .context("the certificate-rotation policy")?;
        iot.attach_policy()
            .policy_name(rotation)
            .target(&device.record.certificate_arn)
            .send()
            .await
            .context("AttachPolicy (rotation)")?;
        Ok(device)
    }

    /// The core's token exchange role ([`provision::token_exchange`]): `s3:PutObject` under the
    /// thing's prefix of [`ANOMALY_BUCKET`] only, its alias [`ROLE_ALIAS`] (the core's
    /// `iotRoleAlias`), the alias's IoT policy on the core's certificate, and the bucket.
    pub async fn token_exchange(operator: &Operator) -> anyhow::Result<()> {
        let spec = provision::token_exchange::TokenExchangeSpec {
            thing_name: THING.into(),
            role_name: "PumpCoreTokenExchangeRole".into(),
            role_alias: ROLE_ALIAS.into(),
            policy_name: format!("{ROLE_ALIAS}Policy"),
            bucket: ANOMALY_BUCKET.into(),
        };
        provision::token_exchange::provision_token_exchange(&operator.iot, &operator.iam, &operator.s3, &spec)
            .await
            .context("setting up the core's token exchange role")?;
        Ok(())
    }

    /// Waits until the analyzer's window `key` is in [`ANOMALY_BUCKET`]; returns when it was
    /// seen there (milliseconds since the Unix epoch).
    pub async fn wait_for_window(&self, key: &str, wait: Duration) -> anyhow::Result<u64> {
        let (operator, _) = self.rollout()?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match operator.s3.head_object().bucket(ANOMALY_BUCKET).key(key).send().await {
                Ok(_) => return Ok(crate::demo::epoch_ms()),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
                Err(e) => {
                    bail!("HeadObject s3://{ANOMALY_BUCKET}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e))
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the anomaly window s3://{ANOMALY_BUCKET}/{key} did not arrive within {wait:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The anomaly windows under the core's prefix of [`ANOMALY_BUCKET`], read back.
    pub async fn anomaly_windows(&self) -> anyhow::Result<Vec<crate::report::WindowRecord>> {
        let (operator, _) = self.rollout()?;
        let prefix = format!("{THING}/anomalies/");
        let listed = operator.s3.list_objects_v2().bucket(ANOMALY_BUCKET).prefix(&prefix).send().await?;
        let mut windows = Vec::new();
        for object in listed.contents() {
            let key = object.key().unwrap_or_default();
            let got = operator.s3.get_object().bucket(ANOMALY_BUCKET).key(key).send().await?;
            let body = got.body.collect().await?.into_bytes();
            let doc: pump_analyzer::upload::WindowDocument =
                serde_json::from_slice(&body).with_context(|| format!("s3://{ANOMALY_BUCKET}/{key}"))?;
            windows.push(crate::report::WindowRecord {
                object: format!("s3://{ANOMALY_BUCKET}/{key}"),
                bytes: body.len() as u64,
                readings: doc.readings.len(),
                before_samples: doc.before_samples,
            });
        }
        Ok(windows)
    }

    /// Starts the plant on ephemeral ports.
    pub async fn start_plant(seed: u64, time_scale: f64) -> anyhow::Result<PlantHandle> {
        let config = PlantConfig {
            modbus: SocketAddr::from(([127, 0, 0, 1], 0)),
            control: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed,
            time_scale,
            ..PlantConfig::default()
        };
        device_sim::plant::serve(config).await.context("starting the plant")
    }

    /// The deployment's configuration merges, component → JSON object: where the plant is, the
    /// demo's shorter periods, the analyzer's detector and where it uploads anomaly windows.
    pub fn component_merges(plant_modbus: SocketAddr, detector: &str, s3_endpoint: &str) -> Vec<(String, String)> {
        [
            (
                pump_types::SENSOR_COMPONENT,
                json!({
                    "modbus": {"address": plant_modbus.to_string()},
                    "pollPeriodMs": 250,
                    "telemetry": {"maxDelayMs": 5000},
                    "statsPeriodMs": 5000
                }),
            ),
            (
                pump_types::ANALYZER_COMPONENT,
                json!({
                    "detector": detector,
                    "anomalyUpload": {
                        "bucket": ANOMALY_BUCKET, "endpointUrl": s3_endpoint, "afterSamples": ANOMALY_AFTER_SAMPLES
                    }
                }),
            ),
            (pump_types::CONTROLLER_COMPONENT, json!({"modbusAddress": plant_modbus.to_string()})),
        ]
        .into_iter()
        .map(|(name, merge)| (name.to_owned(), merge.to_string()))
        .collect()
    }

    /// The core's own configuration at start: the ShadowManager syncing the `pump` shadow, the
    /// token exchange role alias.
    pub fn core_config() -> anyhow::Result<HashMap<String, device_sim::recipe::ConfigurationUpdate>> {
        parse_update_config(&Self::core_config_doc()).map_err(anyhow::Error::msg)
    }

    /// [`Site::core_config`] as the Greengrass CLI's `--update-config` JSON.
    fn core_config_doc() -> Value {
        json!({
            "aws.greengrass.Nucleus": {"MERGE": {"iotRoleAlias": ROLE_ALIAS}},
            "aws.greengrass.ShadowManager": {"MERGE": {"synchronize": {
                "coreThing": {"classic": false, "namedShadows": [pump_types::SHADOW_NAME]}
            }}}
        })
    }

    /// Hands the site's core over to `device-sim launcher`, as a Greengrass core runs under its
    /// loader: the in-process core stops (its components first), and the launcher starts the
    /// core binary of `bins` on the same root, identity and configuration; the core comes back
    /// on what the cloud deployed (kept under its root). Returns once the launcher runs; the
    /// caller waits for the components.
    pub async fn hand_core_to_launcher(&mut self) -> anyhow::Result<()> {
        let bins = self.bins.clone().context("the site has not started")?;
        let binary = bins.join(device_sim::core::nucleus_update::CORE_BINARY);
        if !binary.is_file() {
            bail!("the core binary {} is missing: build it (`cargo build -p device-sim`)", binary.display());
        }
        if let Some(core) = self.core.take() {
            core.shutdown(Duration::from_secs(20)).await;
        }
        let identity: Vec<std::ffi::OsString> = vec![
            "--thing".into(),
            THING.into(),
            "--cert".into(),
            self.device.files.certificate.clone().into(),
            "--key".into(),
            self.device.files.private_key.clone().into(),
        ];
        self.spawn_launcher(&binary, &identity, "launcher.log")
    }

    /// Starts `binary` as `device-sim launcher` on the core's root with the site's endpoints,
    /// root CA and configuration, the core identified by `identity` (its flags), logging to
    /// `{dir}/{log}`.
    fn spawn_launcher(&mut self, binary: &Path, identity: &[std::ffi::OsString], log: &str) -> anyhow::Result<()> {
        let endpoints = self.dir.join("core-endpoints.json");
        std::fs::write(&endpoints, serde_json::to_vec_pretty(&self.device.endpoints)?)
            .with_context(|| format!("writing {}", endpoints.display()))?;
        let root = self.dir.join("core");
        let log = std::fs::File::create(self.dir.join(log)).with_context(|| format!("creating {log}"))?;
        let child = tokio::process::Command::new(binary)
            .arg("launcher")
            .arg("--root")
            .arg(&root)
            .args(["--health-deadline-secs", "60", "--"])
            .args(identity)
            .args(["--region", &self.device.endpoints.region])
            .arg("--cloud")
            .arg(&endpoints)
            .arg("--root-ca")
            .arg(&self.device.endpoints.ca_file)
            .arg("--update-config")
            .arg(Self::core_config_doc().to_string())
            .arg("--cloud-deployments")
            .arg("--certificate-rotation")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} launcher", binary.display()))?;
        self.launched = Some(child);
        Ok(())
    }

    /// The site's core device loses power: its launcher, the core and every component are
    /// stopped where they stand (SIGSTOP while the process tree is collected, so nothing
    /// restarts, then SIGKILL): no Shutdown step runs, nothing buffered is flushed. Returns how
    /// many processes died.
    pub async fn power_off(&mut self) -> anyhow::Result<usize> {
        use rustix::process::{Pid, Signal, kill_process};
        let mut launcher = self.launched.take().context("the core does not run under its launcher")?;
        let pid = launcher.id().context("the launcher has already ended")?;
        let signal = |pids: &[u32], signal: Signal| {
            for p in pids {
                if let Some(pid) = i32::try_from(*p).ok().and_then(Pid::from_raw) {
                    let _ = kill_process(pid, signal);
                }
            }
        };
        let mut tree = vec![pid];
        loop {
            let mut now = vec![pid];
            now.extend(bench_common::machine::descendants(pid));
            signal(&now, Signal::STOP);
            let settled = now.len() == tree.len();
            tree = now;
            if settled {
                break;
            }
        }
        signal(&tree, Signal::KILL);
        launcher.wait().await.context("waiting for the killed launcher")?;
        Ok(tree.len())
    }

    /// The replacement device starts on a new, empty disk (the core's root) from `binary`: its
    /// launcher, and a core that onboards by claim with `claim` (the plugin's configuration file)
    /// under the thing name the claim's template parameters give.
    pub fn start_replacement(&mut self, claim: &Path) -> anyhow::Result<()> {
        let bins = self.bins.clone().context("the site has not started")?;
        let binary = bins.join(device_sim::core::nucleus_update::CORE_BINARY);
        let identity: Vec<std::ffi::OsString> = vec!["--provision-by-claim".into(), claim.into()];
        self.spawn_launcher(&binary, &identity, "replacement-launcher.log")
    }

    /// Publishes nucleus `version` as AWS publishes its own components (account `aws`): its
    /// artifact is the core binary of `bins` under the name the launcher installs.
    pub async fn publish_nucleus(&self, version: &str) -> anyhow::Result<()> {
        let cloud = self.cloud.as_ref().context("the cloud is not running")?;
        let bins = self.bins.as_deref().context("the site has not started")?;
        let binary = std::fs::read(bins.join(device_sim::core::nucleus_update::CORE_BINARY))
            .context("reading the core binary")?;
        let key = format!("aws.greengrass.Nucleus/{version}/{}", device_sim::core::nucleus_update::CORE_BINARY);
        let objects = cloud.s3.objects();
        if objects.bucket_region(NUCLEUS_BUCKET).is_err() {
            objects.create_bucket(NUCLEUS_BUCKET, None).context("creating the nucleus bucket")?;
        }
        objects.put_bytes(NUCLEUS_BUCKET, &key, binary.into(), Default::default()).await.context("uploading")?;
        let recipe = json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": device_sim::core::runtime::NUCLEUS,
            "ComponentVersion": version, "ComponentType": "aws.greengrass.nucleus",
            "ComponentDescription": "The Greengrass nucleus (the simulated core).", "ComponentPublisher": "AWS",
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {},
                "Artifacts": [{"URI": format!("s3://{NUCLEUS_BUCKET}/{key}"), "Permission": {"Execute": "OWNER"}}]}]});
        cloud.greengrass.components.create_public(recipe.to_string().as_bytes()).context("publishing the nucleus")?;
        Ok(())
    }

    /// Starts the simulated core with the cloud connection and nothing deployed: it takes its
    /// components from the cloud's deployments.
    pub async fn start_core(dir: &Path, device: &ProvisionedDevice) -> anyhow::Result<Core> {
        Core::start(CoreOptions {
            root: dir.join("core"),
            thing: THING.into(),
            recipe_dir: PathBuf::new(),
            artifact_dir: PathBuf::new(),
            merges: Vec::new(),
            region: device.endpoints.region.clone(),
            root_ca_path: Some(device.endpoints.ca_file.clone()),
            platform: DevicePlatform::current(),
            update_config: Self::core_config()?,
            cloud: Some(CloudOptions {
                endpoints: device.endpoints.clone(),
                cert_file: device.files.certificate.clone(),
                key: device_sim::core::key_store::DeviceKey::File(device.files.private_key.clone()),
                fleet_status: Some(device_sim::core::fleet_status::DEFAULT_CADENCE),
                telemetry_intervals: None,
                cloud_deployments: true,
                mqtt_version: Default::default(),
                // As `device-sim core --certificate-rotation`: new keys in the core's identity directory.
                certificate_rotation: Some(device_sim::core::options::RotationOptions::new(
                    device_sim::core::key_store::KeyStore::files(device_sim::core::claim::identity_dir(
                        &dir.join("core"),
                    )),
                )),
            }),
            nucleus_version: CoreOptions::default_nucleus_version(),
        })
        .await
        .context("starting the simulated core")
    }

    /// The plant.
    pub fn plant(&self) -> &PlantHandle {
        self.plant.as_ref().expect("the plant runs for the whole demo")
    }

    /// The operator sets desired state through the IoT data plane, as a cloud application would.
    pub async fn set_desired(&self, desired: Value) -> anyhow::Result<u64> {
        let body = serde_json::to_vec(&json!({"state": {"desired": desired}}))?;
        let out = self
            .data
            .update_thing_shadow()
            .thing_name(THING)
            .shadow_name(pump_types::SHADOW_NAME)
            .payload(aws_sdk_iotdataplane::primitives::Blob::new(body))
            .send()
            .await
            .context("UpdateThingShadow")?;
        let doc: Value = serde_json::from_slice(out.payload().map(|b| b.as_ref()).unwrap_or(b"{}"))?;
        Ok(doc["version"].as_u64().unwrap_or(0))
    }

    /// The cloud shadow document (GetThingShadow), `None` when it does not exist yet.
    pub async fn cloud_shadow(&self) -> anyhow::Result<Option<Value>> {
        match self.data.get_thing_shadow().thing_name(THING).shadow_name(pump_types::SHADOW_NAME).send().await {
            Ok(out) => Ok(Some(serde_json::from_slice(out.payload().map(|b| b.as_ref()).unwrap_or(b"{}"))?)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context("GetThingShadow")),
        }
    }

    /// Waits until the cloud shadow satisfies `pred` (GetThingShadow every 20 ms).
    pub async fn wait_cloud_shadow(
        &self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(doc) = self.cloud_shadow().await?
                && pred(&doc)
            {
                return Ok(doc);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the cloud shadow never showed {what} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A plain HTTP request to the plant's control API (loopback, one connection per call).
    pub async fn plant_control(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let addr = self.plant().control_addr().to_string();
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, payload) = http_request(&addr, method, path, &[("Content-Type", "application/json")], &body)
            .await
            .context("calling the plant's control API")?;
        if !(200..300).contains(&status) {
            bail!("plant control {method} {path}: HTTP {status}: {payload}");
        }
        Ok(serde_json::from_str(&payload).unwrap_or(Value::Null))
    }
}

/// One plain HTTP/1.1 request to a loopback service (`addr` = `host:port`): the status and the
/// body. For the plant's control API and the core's token exchange service, which speak plain
/// HTTP on loopback.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let headers: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status line")?;
    Ok((status, payload.to_owned()))
}

/// What the plant does now, read over Modbus like any SCADA client would.
#[derive(Debug, Clone, Copy)]
pub struct PlantState {
    /// The speed setpoint register.
    pub setpoint_rpm: f64,
    /// The run coil.
    pub run: bool,
    /// The bypass coil.
    pub bypass_open: bool,
    /// The measurements.
    pub m: Measurements,
}

/// A Modbus TCP client of the plant.
pub struct ModbusProbe {
    ctx: ModbusContext,
    /// How often [`ModbusProbe::wait_for`] reads the plant (10 ms unless set).
    pub poll: Duration,
}

impl ModbusProbe {
    /// Connects.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let ctx = tokio_modbus::client::tcp::connect(addr).await.context("connecting to the plant over Modbus")?;
        Ok(Self { ctx, poll: Duration::from_millis(10) })
    }

    /// Reads setpoints, coils and measurements.
    pub async fn read(&mut self) -> anyhow::Result<PlantState> {
        let words = self
            .ctx
            .read_holding_registers(0, Setpoint::ALL.len() as u16)
            .await
            .context("reading holding registers")?
            .map_err(|e| anyhow::anyhow!("Modbus exception {e:?}"))?;
        let setpoint_rpm = Setpoint::SpeedRpm.spec().decode(words[Setpoint::SpeedRpm.address() as usize]);
        let coils = self
            .ctx
            .read_coils(0, Coil::ALL.len() as u16)
            .await
            .context("reading coils")?
            .map_err(|e| anyhow::anyhow!("Modbus exception {e:?}"))?;
        let inputs = self
            .ctx
            .read_input_registers(0, Measurement::ALL.len() as u16)
            .await
            .context("reading input registers")?
            .map_err(|e| anyhow::anyhow!("Modbus exception {e:?}"))?;
        let m = Measurements::from_registers(&inputs).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(PlantState {
            setpoint_rpm,
            run: coils[Coil::Run.address() as usize],
            bypass_open: coils[Coil::BypassOpen.address() as usize],
            m,
        })
    }

    /// Polls until `pred` holds (every [`ModbusProbe::poll`]), or fails after `within`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&PlantState) -> bool,
    ) -> anyhow::Result<PlantState> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let s = self.read().await?;
            if pred(&s) {
                return Ok(s);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the plant never showed {what} within {within:?} (last: {s:?})");
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_sim::shipped::MODEL;

    #[test]
    fn every_component_builds_as_its_own_artifact_with_the_digest_of_what_it_carries() {
        let dir = tempfile::tempdir().unwrap();
        let bins = dir.path().join("bins");
        std::fs::create_dir_all(&bins).unwrap();
        for c in COMPONENTS {
            std::fs::write(bins.join(c.artifact), c.artifact.as_bytes()).unwrap();
        }
        let built = rollout::build(dir.path(), &bins).unwrap();
        let names: Vec<&str> = built.iter().map(|b| b.name.as_str()).collect();
        let mut wanted: Vec<&str> = COMPONENTS.iter().map(|c| c.name).collect();
        wanted.push(MODEL.name);
        assert_eq!(names, wanted);
        for c in COMPONENTS {
            let b = built.iter().find(|b| b.name == c.name).unwrap();
            assert_eq!(b.artifacts.len(), 1, "{}: its own binary only", c.name);
            assert_eq!(std::fs::read(&b.artifacts[0].path).unwrap(), c.artifact.as_bytes());
        }
        let model = built.iter().find(|b| b.name == MODEL.name).unwrap();
        let mut files: Vec<&str> = model.artifacts.iter().map(|a| a.file_name.as_str()).collect();
        files.sort_unstable();
        let mut carried: Vec<&str> = MODEL.artifacts.iter().map(|(n, _)| *n).collect();
        carried.sort_unstable();
        assert_eq!(files, carried, "the demo carries exactly the recipe's artifacts");
        // Each digest is the one of the bytes the demo carries, as the core will check it.
        for (name, bytes) in MODEL.artifacts {
            let a = model.artifacts.iter().find(|a| a.file_name == *name).unwrap();
            let (digest, size) = provision::component::digest_file(&a.path).unwrap();
            assert_eq!((a.digest.as_str(), a.size, size), (digest.as_str(), bytes.len() as u64, bytes.len() as u64));
        }
        // Without the binaries, the demo says where it looked.
        let e = rollout::component_bins(Some(&dir.path().join("nowhere"))).unwrap_err();
        assert!(e.to_string().contains("pump-sensor"), "{e}");
    }
}
