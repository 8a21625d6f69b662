//! The simulated core assembled: recipes in, running components and an IPC server out.
//!
//! [`Core::start`] does what a Greengrass nucleus does for a local deployment
//! (`greengrass-cli deployment create --recipeDir --artifactDir --merge NAME=VERSION`):
//!
//! 1. loads every recipe file (`.yaml`, `.yml`, `.json`) directly in the recipe directory,
//!    with the GDK schema when [`crate::recipe::RecipeLoader::discover`] finds it; a recipe that does not
//!    load, or two files with the same name and version, stop the start;
//! 2. resolves the `--merge` roots and their dependencies ([`crate::recipe::resolve`]);
//! 3. gives every component its effective configuration — its `DefaultConfiguration` with the
//!    deployment's configuration update (`--update-config`, the Greengrass CLI's
//!    `{"Name": {"MERGE": {…}, "RESET": ["/pointer"]}}`) applied — in the [`ConfigStore`], and
//!    its `accessControl` policies to
//!    [`AccessControl`], with `{iot:thingName}` in policy resources expanded as the nucleus
//!    does;
//! 4. prepares `{root}` (layout; the whole `{artifact_dir}/{Name}/{Version}/` copied to the
//!    component store, declared artifacts digest-checked), issues each component an IPC token, binds the IPC server on `{root}/ipc.socket`, and
//!    starts the components in dependency order;
//! 5. keeps local shadows durably (`{root}/work/aws.greengrass.ShadowManager/shadows.sqlite`)
//!    and, with [`CoreOptions::cloud`], opens the IoT Core bridge ([`MqttBridge`]) and syncs the
//!    shadows the ShadowManager configuration names ([`ShadowManager`]); with the bridge come
//!    the fleet status service ([`super::fleet_status`]) and the telemetry agent
//!    ([`super::telemetry`], configured by the nucleus's `telemetry` keys).
//!
//! This module is the composition root: each service builds itself from the [`CoreOptions`]
//! and [`Core::start`] wires them; nothing below imports it (see the module map in
//! `device-sim/README.md`).
//!
//! The nucleus, the ShadowManager, the token exchange service and the log manager are built in:
//! recipes may depend on `aws.greengrass.Nucleus` ([`CoreOptions::nucleus_version`]),
//! `aws.greengrass.ShadowManager` ([`SHADOW_MANAGER_VERSION`]),
//! `aws.greengrass.TokenExchangeService` ([`TES_VERSION`], [`super::token_exchange`]) and
//! `aws.greengrass.LogManager` ([`LOG_MANAGER_VERSION`], [`super::log_manager`], which runs
//! only when the deployment includes it), and they
//! take their configuration from `--update-config` like any component (the nucleus's
//! `iotRoleAlias` included).
//!
//! While it runs, the core takes local deployments over IPC ([`super::deployment`]) from the
//! Greengrass CLI's clients: it writes `{root}/cli_ipc_info/user-{uid}` ([`super::cli`]) as
//! the nucleus's CLI service does.
//!
//! A service that needs the core restarted (a nucleus update, [`super::nucleus_update`]) asks
//! through [`RestartRequest`]; the `device-sim core` command waits on
//! [`Core::restart_requested`], shuts the core down and exits with code 100 for the launcher.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::access::AccessControl;
use super::bridge::MqttBridge;
use super::cli;
use super::cloud_deployments;
use super::config_store::ConfigStore;
use super::deployment::cloud::CloudComponents;
use super::deployment::{Context as DeploymentContext, Deployed, Deployments};
use super::error::MAX_SOCKET_PATH;
use super::fleet_status::{self, Reporter, Snapshot, SnapshotSource};
use super::greengrass_client::GreengrassClient;
use super::ipc_server::{CoreServices, IpcServer, ServerSettings};
use super::layout::Layout;
use super::local_shadow::LocalShadows;
use super::log_manager::{self, LOG_MANAGER, LOG_MANAGER_VERSION};
use super::pubsub::PubSub;
use super::recipe_store::store_recipes;
use super::rotation;
use super::rotation::plugin::{self, CERTIFICATE_ROTATOR, ROTATOR_VERSION};
use super::services::{IotCoreBridge, RestartRequest};
use super::shadow_manager::ShadowManager;
use super::shadow_sync::SHADOW_MANAGER;
use super::supervisor::{StateEvent, Supervisor};
use super::telemetry;
use super::token_exchange::{TES_VERSION, TOKEN_EXCHANGE_SERVICE, TokenExchange};
use super::update_gate::UpdateGate;
use super::{ComponentState, Tokens};
use crate::recipe::Resolution;

pub use super::error::CoreError;
pub use super::options::{CloudOptions, CoreOptions};
pub use super::recipe_store::parse_update_config;

/// The ShadowManager version the simulated core claims for dependency resolution.
pub const SHADOW_MANAGER_VERSION: &str = "2.3.9";
/// The nucleus component's name.
pub const NUCLEUS: &str = super::nucleus_update::NUCLEUS;

/// The IPC socket's file name under the core's root.
pub const IPC_SOCKET_FILE: &str = "ipc.socket";

/// The components built into the core, which recipes may depend on: (name, version); the
/// plugins among them are [`plugins`].
fn builtins<'a>(nucleus_version: &'a str, options: &CoreOptions) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![
        (NUCLEUS, nucleus_version),
        (SHADOW_MANAGER, SHADOW_MANAGER_VERSION),
        (TOKEN_EXCHANGE_SERVICE, TES_VERSION),
        (LOG_MANAGER, LOG_MANAGER_VERSION),
    ];
    all.extend(plugins(options));
    all
}

/// The plugin components this core runs (compiled in, present when turned on).
fn plugins(options: &CoreOptions) -> Vec<(&'static str, &'static str)> {
    let rotating = options.cloud.as_ref().is_some_and(|c| c.certificate_rotation.is_some());
    rotating.then_some((CERTIFICATE_ROTATOR, ROTATOR_VERSION)).into_iter().collect()
}

/// A running simulated core. Dropping it kills every component process and closes the IPC
/// socket; [`Core::shutdown`] stops the components properly first.
pub struct Core {
    supervisor: Arc<Supervisor>,
    server: Option<IpcServer>,
    resolution: Resolution,
    tokens: Tokens,
    config: ConfigStore,
    access: AccessControl,
    pubsub: PubSub,
    shadow_manager: ShadowManager,
    socket: PathBuf,
    recipe_warnings: Vec<String>,
    bridge: Option<Arc<MqttBridge>>,
    token_exchange: TokenExchange,
    deployments: Deployments,
    update_deferrals: UpdateGate,
    deployment_runner: tokio::task::JoinHandle<()>,
    fleet_status: Option<tokio::task::JoinHandle<()>>,
    telemetry: Option<tokio::task::JoinHandle<()>>,
    cloud_deployments: Option<tokio::task::JoinHandle<()>>,
    certificate_rotation: Option<tokio::task::JoinHandle<()>>,
    log_manager: Option<tokio::task::JoinHandle<()>>,
    cli_ipc_info: PathBuf,
    // Nucleus update: restart requests (see `Core::restart_requested`).
    restart: RestartRequest,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("socket", &self.socket)
            .field("components", &self.resolution.start_order())
            .finish_non_exhaustive()
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.deployment_runner.abort();
        for task in [
            &self.fleet_status,
            &self.telemetry,
            &self.cloud_deployments,
            &self.certificate_rotation,
            &self.log_manager,
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.cli_ipc_info);
    }
}

/// Creates the core's root, keeps the deployed recipes there and returns the IPC socket path.
fn prepare_root(options: &CoreOptions, deployed: &Deployed) -> Result<PathBuf, CoreError> {
    let root_err = |source| CoreError::Root { path: options.root.clone(), source };
    std::fs::create_dir_all(&options.root).map_err(root_err)?;
    store_recipes(&Layout::new(&options.root).recipes_dir(), &deployed.resolution, &deployed.origins)
        .map_err(root_err)?;
    let socket = options.root.join(IPC_SOCKET_FILE);
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(CoreError::SocketPathTooLong { path: socket });
    }
    Ok(socket)
}

impl Core {
    /// Loads, resolves, prepares and starts (see the module docs). Must be called inside a
    /// tokio runtime. Returns once the components have been asked to start; watch
    /// [`Core::subscribe`] or [`Core::wait_for_state`] for them to get there.
    ///
    /// The composition root: each service builds itself from the options; this wires them.
    pub async fn start(options: CoreOptions) -> Result<Self, CoreError> {
        let mut options = options.absolute();
        if let Some(rotation) = options.cloud.as_mut().and_then(|c| c.certificate_rotation.as_mut()) {
            plugin::configure(options.update_config.get(CERTIFICATE_ROTATOR), rotation)
                .map_err(CoreError::UpdateConfig)?;
        }
        // A committed certificate rotation replaced the identity the core was started with.
        let rotation = rotation::service::from_options(&mut options).map_err(CoreError::Bridge)?;
        let telemetry_settings = telemetry::Settings::from_options(&options).map_err(CoreError::UpdateConfig)?;
        let nucleus_version = options.nucleus_version.to_string();
        let restart = RestartRequest::default();
        let (deployed, specs, recipe_warnings) = Deployed::initial(&options, &builtins(&nucleus_version, &options))?;
        let socket = prepare_root(&options, &deployed)?;
        let (tokens, config, access, pubsub) =
            (Tokens::default(), ConfigStore::new(), AccessControl::new(), PubSub::default());
        deployed.write_configuration(&config, &access, &options.thing);

        let bridge = MqttBridge::from_options(&options).map_err(CoreError::Bridge)?;
        let shadow_manager = ShadowManager::start(&options, &pubsub, bridge.as_ref()).await?;
        // The HTTPS clients present the bridge's identity, so they follow a certificate rotation.
        let identity = bridge.as_ref().map(|b| b.tls_identity());
        let token_exchange =
            TokenExchange::start(&options, tokens.clone(), identity.clone()).await.map_err(CoreError::TokenExchange)?;
        let credentials_uri = Some(token_exchange.uri().to_owned());
        let log_manager = log_manager::start(&options, &deployed.resolution, token_exchange.core_credentials())
            .map_err(CoreError::UpdateConfig)?;
        let supervisor =
            Supervisor::from_options(&options, socket.clone(), credentials_uri, specs, tokens.clone(), &config)
                .map_err(CoreError::Supervisor)?;
        let supervisor = Arc::new(supervisor);
        let resolution = deployed.resolution.clone();
        let gate = UpdateGate::new();
        let mut context = DeploymentContext::new(&options, &supervisor, &config, &access, Arc::new(gate.clone()));
        context.restart = restart.clone();
        let cloud_deployments_on = options.cloud.as_ref().is_some_and(|c| c.cloud_deployments);
        if let Some(cloud) = options.cloud.as_ref().filter(|c| c.cloud_deployments) {
            let client = match identity {
                Some(identity) => GreengrassClient::following(cloud, identity),
                None => GreengrassClient::from_options(cloud),
            }
            .map_err(|e| CoreError::Greengrass(e.to_string()))?;
            context.cloud = Some(CloudComponents::new(client));
        }
        let (deployments, deployment_runner) = Deployments::start(context, deployed);

        let services = CoreServices {
            tokens: tokens.clone(),
            lifecycle: Arc::new(supervisor.handle()),
            config: config.clone(),
            access: access.clone(),
            pubsub: pubsub.clone(),
            shadows: shadow_manager.shadows().clone(),
            bridge: bridge.clone().map(|b| b as Arc<dyn IotCoreBridge>),
            deployments: Some(Arc::new(deployments.clone())),
            gate: gate.clone(),
        };
        let server = IpcServer::bind(&socket, services, ServerSettings::default())
            .await
            .map_err(|source| CoreError::Bind { path: socket.clone(), source })?;
        let cli_ipc_info = cli::write_ipc_info(&options.root, &socket, &tokens)
            .map_err(|source| CoreError::Root { path: options.root.join(cli::IPC_INFO_DIR), source })?;
        let cadence = options.cloud.as_ref().and_then(|c| c.fleet_status);
        let fleet_status = bridge.as_ref().zip(cadence).map(|(bridge, cadence)| {
            let inputs = fleet_status::Inputs {
                connection: bridge.connection(),
                states: supervisor.subscribe(),
                deployments: deployments.subscribe(),
            };
            let platform = |key| options.platform.get(key).unwrap_or("unknown").to_owned();
            let reporter = Reporter::new(
                &options.thing,
                &nucleus_version,
                &platform(crate::recipe::platform::OS),
                &platform(crate::recipe::platform::ARCHITECTURE),
                fleet_status::load_sequence(&options.root),
            );
            let snapshot = snapshot_source(&supervisor, &deployments, &nucleus_version, plugins(&options));
            let bridge = bridge.clone() as Arc<dyn IotCoreBridge>;
            let root = options.root.clone();
            tokio::spawn(fleet_status::run(reporter, bridge, inputs, snapshot, cadence, root))
        });
        let telemetry = bridge.as_ref().filter(|_| telemetry_settings.enabled).map(|bridge| {
            tokio::spawn(telemetry::run(
                telemetry_settings,
                options.thing.clone(),
                telemetry::schema_for(&options.nucleus_version),
                bridge.clone() as Arc<dyn IotCoreBridge>,
                bridge.connection(),
                snapshot_source(&supervisor, &deployments, &nucleus_version, plugins(&options)),
            ))
        });
        let certificate_rotation = bridge.as_ref().zip(rotation).map(|(bridge, (settings, record, steps))| {
            tokio::spawn(rotation::service::run(settings, bridge.clone(), record, steps))
        });
        let cloud_deployments = bridge.as_ref().filter(|_| cloud_deployments_on).map(|bridge| {
            tokio::spawn(cloud_deployments::run(
                options.thing.clone(),
                nucleus_version.clone(),
                bridge.clone() as Arc<dyn IotCoreBridge>,
                bridge.connection(),
                deployments.clone(),
            ))
        });
        tracing::info!(socket = %socket.display(), components = ?resolution.start_order(), "simulated core started");
        supervisor.start();
        Ok(Self {
            supervisor,
            server: Some(server),
            resolution,
            tokens,
            config,
            access,
            pubsub,
            shadow_manager,
            socket,
            recipe_warnings,
            bridge,
            token_exchange,
            deployments,
            update_deferrals: gate,
            deployment_runner,
            fleet_status,
            telemetry,
            cloud_deployments,
            certificate_rotation,
            log_manager,
            cli_ipc_info,
            restart,
        })
    }

    // --- Nucleus update: restart requests.

    /// The handle through which a service asks for the core to be restarted (exit code 100).
    pub fn restart_request(&self) -> &RestartRequest {
        &self.restart
    }

    /// Resolves once a restart is asked for; the caller then shuts the core down
    /// ([`Core::shutdown`]) and exits with code 100.
    pub fn restart_requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.restart.requested()
    }

    // --- End of nucleus update.

    /// Local deployments (what CreateLocalDeployment queues).
    pub fn deployments(&self) -> &Deployments {
        &self.deployments
    }

    /// Each round of component update notices that puts a deployment off (a component's
    /// DeferComponentUpdate), as it happens.
    pub fn watch_update_deferrals(&self) -> tokio::sync::broadcast::Receiver<super::update_gate::UpdateDeferred> {
        self.update_deferrals.watch_deferrals()
    }

    /// The Greengrass CLI's IPC info file this core wrote (`{root}/cli_ipc_info/user-{uid}`).
    pub fn cli_ipc_info(&self) -> &Path {
        &self.cli_ipc_info
    }

    /// The token exchange service (`aws.greengrass.TokenExchangeService`).
    pub fn token_exchange(&self) -> &TokenExchange {
        &self.token_exchange
    }

    /// The IoT Core bridge, when the core has a cloud connection.
    pub fn bridge(&self) -> Option<&Arc<MqttBridge>> {
        self.bridge.as_ref()
    }

    /// Current state of every component.
    pub fn states(&self) -> HashMap<String, ComponentState> {
        self.supervisor.states()
    }

    /// State changes from now on (check [`Core::states`] after subscribing for the present).
    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.supervisor.subscribe()
    }

    /// Waits until `component` is in one of `wanted`, or `timeout` passes; returns the state
    /// it was last seen in (`None` if the component is unknown).
    pub async fn wait_for_state(
        &self,
        component: &str,
        wanted: &[ComponentState],
        timeout: Duration,
    ) -> Option<ComponentState> {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self.states().get(component).copied();
            match now {
                Some(s) if !wanted.contains(&s) => {}
                other => return other,
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                _ => return self.states().get(component).copied(),
            }
        }
    }

    /// The deployment resolved at start (components in start order); see
    /// [`Core::components`] for what runs now.
    pub fn resolution(&self) -> &Resolution {
        &self.resolution
    }

    /// The components that run now, `(name, version)` in start order (changes with
    /// deployments).
    pub fn components(&self) -> Vec<(String, String)> {
        self.supervisor.components().iter().map(|s| (s.name().to_owned(), s.version())).collect()
    }

    /// Warnings from loading the recipes (schema skipped, unknown keys, …).
    pub fn recipe_warnings(&self) -> &[String] {
        &self.recipe_warnings
    }

    /// The IPC socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The core's layout under its root.
    pub fn layout(&self) -> &Layout {
        self.supervisor.layout()
    }

    /// The IPC tokens issued.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// Component configuration.
    pub fn config(&self) -> &ConfigStore {
        &self.config
    }

    /// accessControl policies.
    pub fn access(&self) -> &AccessControl {
        &self.access
    }

    /// Local pub/sub.
    pub fn pubsub(&self) -> &PubSub {
        &self.pubsub
    }

    /// Local shadows.
    pub fn shadows(&self) -> &LocalShadows {
        self.shadow_manager.shadows()
    }

    /// Stops every component (dependents first, running their Shutdown steps), waits up to
    /// `timeout`, then closes the IPC socket and kills whatever is left. Returns the
    /// components that had not stopped in time.
    pub async fn shutdown(mut self, timeout: Duration) -> Vec<String> {
        let pending = self.supervisor.stop_all(timeout).await;
        if !pending.is_empty() {
            tracing::warn!(components = ?pending, "components did not stop in time; killing them");
        }
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        self.shadow_manager.stop();
        self.deployment_runner.abort();
        tracing::info!("simulated core stopped");
        pending
    }
}

/// The core's components as the fleet status service reports them and the telemetry agent
/// counts them: the nucleus, then every supervised component with its state, root or not.
fn snapshot_source(
    supervisor: &Arc<Supervisor>,
    deployments: &Deployments,
    nucleus_version: &str,
    plugins: Vec<(&'static str, &'static str)>,
) -> SnapshotSource {
    let supervisor = Arc::downgrade(supervisor);
    let deployments = deployments.clone();
    let nucleus_version = nucleus_version.to_owned();
    Arc::new(move || {
        // The nucleus and its plugins run as long as the core does.
        let builtin = |name: &str, version: &str| Snapshot {
            name: name.to_owned(),
            version: version.to_owned(),
            state: ComponentState::Running,
            is_root: false,
            builtin: true,
            groups: Vec::new(),
            status_reason: None,
        };
        let mut list = vec![builtin(NUCLEUS, &nucleus_version)];
        list.extend(plugins.iter().map(|(name, version)| builtin(name, version)));
        let Some(supervisor) = supervisor.upgrade() else { return list };
        let (states, membership) = (supervisor.states(), deployments.membership());
        for spec in supervisor.components() {
            let name = spec.name().to_owned();
            let member = membership.get(&name).cloned().unwrap_or_default();
            list.push(Snapshot {
                state: states.get(&name).copied().unwrap_or(ComponentState::New),
                is_root: member.is_root,
                version: spec.version(),
                builtin: false,
                groups: member.groups,
                status_reason: None,
                name,
            });
        }
        list
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::recipe_store::RecipeStoreError;
    use crate::recipe::DevicePlatform;

    #[tokio::test]
    async fn start_refuses_bad_input_before_touching_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let options = |merges: Vec<String>| CoreOptions {
            root: root.clone(),
            thing: "core".into(),
            recipe_dir: dir.path().join("recipes"),
            artifact_dir: dir.path().join("artifacts"),
            merges,
            region: "us-east-1".into(),
            root_ca_path: None,
            platform: DevicePlatform::new("linux", "amd64"),
            update_config: HashMap::new(),
            cloud: None,
            nucleus_version: CoreOptions::default_nucleus_version(),
        };
        let err = Core::start(options(vec![])).await.unwrap_err();
        assert!(matches!(err, CoreError::NothingToRun));
        let err = Core::start(options(vec!["com.example.A".into()])).await.unwrap_err();
        assert!(matches!(err, CoreError::Resolve(_)) && err.is_configuration(), "{err}");
        let err = Core::start(options(vec!["com.example.A=1.0.0".into()])).await.unwrap_err();
        assert!(
            matches!(err, CoreError::Recipes(RecipeStoreError::RecipeDir { .. })) && err.is_configuration(),
            "{err}"
        );
        std::fs::create_dir(dir.path().join("recipes")).unwrap();
        let err = Core::start(options(vec!["com.example.A=1.0.0".into()])).await.unwrap_err();
        assert!(matches!(err, CoreError::Resolve(_)), "{err}");
        assert!(!root.exists());
    }
}
