//! The simulated core assembled: recipes in, running components and an IPC server out.
//!
//! [`Core::start`] does what a Greengrass nucleus does for a local deployment
//! (`greengrass-cli deployment create --recipeDir --artifactDir --merge NAME=VERSION`):
//!
//! 1. loads every recipe file (`.yaml`, `.yml`, `.json`) directly in the recipe directory,
//!    with the GDK schema when [`RecipeLoader::discover`] finds it; a recipe that does not
//!    load, or two files with the same name and version, stop the start;
//! 2. resolves the `--merge` roots and their dependencies ([`resolve`]);
//! 3. gives every component its effective configuration — its `DefaultConfiguration` with the
//!    deployment's configuration update (`--update-config`, the Greengrass CLI's
//!    `{"Name": {"MERGE": {…}, "RESET": ["/pointer"]}}`) applied — in the [`ConfigStore`], and
//!    its `accessControl` policies to
//!    [`AccessControl`], with `{iot:thingName}` in policy resources expanded as the nucleus
//!    does;
//! 4. prepares `{root}` (layout, artifacts staged from `{artifact_dir}/{Name}/{Version}/`),
//!    issues each component an IPC token, binds the IPC server on `{root}/ipc.socket`, and
//!    starts the components in dependency order;
//! 5. keeps local shadows durably (`{root}/work/aws.greengrass.ShadowManager/shadows.sqlite`)
//!    and, with [`CoreOptions::cloud`], opens the IoT Core bridge ([`MqttBridge`]) and syncs the
//!    shadows the ShadowManager configuration names ([`ShadowSync`]).
//!
//! The nucleus and the ShadowManager are built in: recipes may depend on
//! `aws.greengrass.Nucleus` ([`GGC_VERSION`]) and `aws.greengrass.ShadowManager`
//! ([`SHADOW_MANAGER_VERSION`]), and the ShadowManager takes its configuration from
//! `--update-config` like any component.
//!
//! While it runs, the core takes local deployments over IPC ([`super::deployment`]) from the
//! Greengrass CLI's clients: it writes `{root}/cli_ipc_info/user-{uid}` ([`super::cli`]) as
//! the nucleus's CLI service does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use cloud_api::endpoints::Endpoints;

use super::access::AccessControl;
use super::bridge::{BridgeConfig, BridgeSetupError, MqttBridge};
use super::cli;
use super::config_store::ConfigStore;
use super::deployment::{Context as DeploymentContext, Deployed, Deployments};
use super::ipc_server::IotCoreBridge;
use super::ipc_server::{CoreServices, IpcServer, ServerSettings};
use super::layout::Layout;
use super::local_shadow::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_DOCUMENT_BYTES, LocalShadows, RateLimits};
use super::pubsub::PubSub;
use super::shadow_store::SqliteShadowStore;
use super::shadow_sync::{SHADOW_MANAGER, ShadowSync, SyncConfig};
use super::supervisor::{
    ComponentSpec, ConfigurationSource, GGC_VERSION, StateEvent, Supervisor, SupervisorConfig, SupervisorError,
};
use super::{ComponentState, Tokens};
use crate::recipe::{
    Catalog, ComponentVersion, ConfigurationUpdate, DevicePlatform, EffectiveConfiguration, RecipeError, RecipeFormat,
    RecipeLoader, Resolution, ResolveError, RootRequirement, SchemaError, resolve,
};

/// The ShadowManager version the simulated core claims for dependency resolution.
pub const SHADOW_MANAGER_VERSION: &str = "2.3.9";
/// The nucleus component's name.
pub const NUCLEUS: &str = "aws.greengrass.Nucleus";

/// The IPC socket's file name under the core's root.
pub const IPC_SOCKET_FILE: &str = "ipc.socket";

/// The longest Unix socket path Linux accepts (`sun_path` is 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What to run and where (the `device-sim core` flags).
#[derive(Debug, Clone)]
pub struct CoreOptions {
    /// The core's root directory (`{kernel:rootPath}`); created if missing.
    pub root: PathBuf,
    /// The core device's thing name (`AWS_IOT_THING_NAME`, `{iot:thingName}`).
    pub thing: String,
    /// Where the recipes are (`--recipe-dir`).
    pub recipe_dir: PathBuf,
    /// Where the artifacts are: `{artifact_dir}/{Name}/{Version}/` (`--artifact-dir`).
    pub artifact_dir: PathBuf,
    /// The deployment's root components, `NAME=VERSION` each (`--merge`).
    pub merges: Vec<String>,
    /// The AWS Region (`AWS_REGION`).
    pub region: String,
    /// The root CA file (`GG_ROOT_CA_PATH`).
    pub root_ca_path: Option<PathBuf>,
    /// The device's platform, for manifest selection.
    pub platform: DevicePlatform,
    /// Per-component configuration updates (`--update-config`).
    pub update_config: HashMap<String, ConfigurationUpdate>,
    /// The IoT Core connection (`--cloud`, `--cert`, `--key`); `None` runs offline for good.
    pub cloud: Option<CloudOptions>,
}

/// Where the core device's IoT Core connection goes, and as whom.
#[derive(Debug, Clone)]
pub struct CloudOptions {
    /// `endpoints.json`.
    pub endpoints: Endpoints,
    /// The core device's certificate (PEM).
    pub cert_file: PathBuf,
    /// The core device's private key (PEM).
    pub key_file: PathBuf,
}

/// Parses the Greengrass CLI's `--update-config` document:
/// `{"ComponentName": {"MERGE": {…}, "RESET": ["/pointer", …]}, …}` (`merge`/`reset` in any case).
pub fn parse_update_config(doc: &Value) -> Result<HashMap<String, ConfigurationUpdate>, String> {
    let obj = doc.as_object().ok_or("the configuration update must be a JSON object of component names")?;
    let mut out = HashMap::new();
    for (name, update) in obj {
        let update = update.as_object().ok_or(format!("{name}: must be an object with MERGE and/or RESET"))?;
        let mut parsed = ConfigurationUpdate::default();
        for (k, v) in update {
            match k.to_ascii_uppercase().as_str() {
                "MERGE" => {
                    parsed.merge = Some(v.as_object().cloned().ok_or(format!("{name}.MERGE must be a JSON object"))?)
                }
                "RESET" => {
                    let list = v.as_array().ok_or(format!("{name}.RESET must be a list of JSON pointers"))?;
                    parsed.reset = list
                        .iter()
                        .map(|p| p.as_str().map(str::to_owned).ok_or(format!("{name}.RESET must hold strings")))
                        .collect::<Result<_, _>>()?;
                }
                other => return Err(format!("{name}: unknown key {other:?} (expected MERGE or RESET)")),
            }
        }
        out.insert(name.clone(), parsed);
    }
    Ok(out)
}

/// Why the core could not start.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An explicitly named GDK schema could not be loaded.
    #[error("cannot load the recipe schema")]
    Schema(#[source] SchemaError),
    /// The recipe directory could not be read.
    #[error("cannot read the recipe directory {}", path.display())]
    RecipeDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A recipe file is invalid.
    #[error("invalid recipe")]
    Recipe(#[source] RecipeError),
    /// Two recipe files declare the same component version.
    #[error("{component} {version} is declared by both {} and {}", first.display(), second.display())]
    DuplicateRecipe {
        /// Component name.
        component: String,
        /// Component version.
        version: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
    /// No `--merge` was given.
    #[error("nothing to run: give at least one --merge NAME=VERSION")]
    NothingToRun,
    /// A `--merge` is malformed, or the deployment cannot be resolved.
    #[error("cannot resolve the deployment")]
    Resolve(#[source] ResolveError),
    /// A component cannot be set up (no manifest for this platform, missing or bad artifact).
    #[error("cannot set up the components")]
    Supervisor(#[source] SupervisorError),
    /// The socket path is too long for a Unix socket.
    #[error("the IPC socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter --root", path.display())]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// The core's root could not be created.
    #[error("cannot create the core root {}", path.display())]
    Root {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration update is invalid or names a component that is not deployed.
    #[error("invalid configuration update: {0}")]
    UpdateConfig(String),
    /// The IoT Core bridge cannot be set up (endpoints, certificate or key).
    #[error("cannot set up the IoT Core connection")]
    Bridge(#[source] BridgeSetupError),
    /// The local shadow store cannot be opened.
    #[error("cannot open the local shadow store: {0}")]
    ShadowStore(String),
    /// The IPC socket could not be bound.
    #[error("cannot bind the IPC socket {}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl CoreError {
    /// True when the input (recipes, artifacts, flags) is at fault: starting again without
    /// changing it fails the same way. `device-sim` exits with `EX_CONFIG` (78) for these.
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::Schema(_)
            | Self::RecipeDir { .. }
            | Self::Recipe(_)
            | Self::DuplicateRecipe { .. }
            | Self::NothingToRun
            | Self::Resolve(_)
            | Self::Supervisor(_)
            | Self::SocketPathTooLong { .. }
            | Self::UpdateConfig(_)
            | Self::Bridge(_)
            | Self::ShadowStore(_) => true,
            Self::Root { .. } | Self::Bind { .. } => false,
        }
    }
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
    shadows: LocalShadows,
    socket: PathBuf,
    recipe_warnings: Vec<String>,
    bridge: Option<Arc<MqttBridge>>,
    _sync: Option<ShadowSync>,
    shadow_requests: tokio::task::JoinHandle<()>,
    deployments: Deployments,
    deployment_runner: tokio::task::JoinHandle<()>,
    cli_ipc_info: PathBuf,
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
        self.shadow_requests.abort();
        self.deployment_runner.abort();
        let _ = std::fs::remove_file(&self.cli_ipc_info);
    }
}

/// Recipe files directly in `dir`, sorted by path (for deterministic errors).
fn recipe_files(dir: &Path) -> Result<Vec<PathBuf>, CoreError> {
    let read_err = |source| CoreError::RecipeDir { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_file() && RecipeFormat::from_path(&path).is_some() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Where each loaded recipe came from: (name, version) → file.
pub(crate) type RecipeOrigins = HashMap<(String, String), PathBuf>;

/// Loads every recipe of `dir` into a catalog; returns the warnings to pass on and each
/// recipe's file.
pub(crate) fn load_catalog(dir: &Path) -> Result<(Catalog, Vec<String>, RecipeOrigins), CoreError> {
    let mut catalog = Catalog::new();
    for (name, version) in [(NUCLEUS, super::supervisor::GGC_VERSION), (SHADOW_MANAGER, SHADOW_MANAGER_VERSION)] {
        catalog.add_builtin(name, ComponentVersion::parse(version).unwrap_or_else(|_| unreachable!("valid constant")));
    }
    let (recipes, warnings, origin) = load_recipes(dir)?;
    for recipe in recipes {
        catalog.add(recipe);
    }
    Ok((catalog, warnings, origin))
}

/// Loads every recipe of `dir`; returns them, the warnings to pass on and each recipe's file.
pub(crate) fn load_recipes(dir: &Path) -> Result<(Vec<crate::recipe::Recipe>, Vec<String>, RecipeOrigins), CoreError> {
    let loader = RecipeLoader::discover(None).map_err(CoreError::Schema)?;
    let mut warnings = Vec::new();
    if let Some(why) = loader.schema_warning() {
        warnings.push(format!("recipes are not checked against the GDK schema: {why}"));
    }
    let mut recipes = Vec::new();
    let mut origin: RecipeOrigins = HashMap::new();
    for file in recipe_files(dir)? {
        let loaded = loader.load_file(&file).map_err(CoreError::Recipe)?;
        for w in &loaded.warnings {
            warnings.push(format!("{}: {w}", file.display()));
        }
        let key = (loaded.recipe.name.clone(), loaded.recipe.version.to_string());
        if let Some(first) = origin.get(&key) {
            return Err(CoreError::DuplicateRecipe {
                component: key.0,
                version: key.1,
                first: first.clone(),
                second: file,
            });
        }
        origin.insert(key, file);
        recipes.push(loaded.recipe);
    }
    Ok((recipes, warnings, origin))
}

/// Keeps a copy of each deployed recipe in `packages/recipes/{Name}-{Version}.recipe.{ext}`, as
/// the nucleus keeps the recipes of what it runs.
pub(crate) fn store_recipes(
    layout_dir: &Path,
    resolution: &Resolution,
    origins: &RecipeOrigins,
) -> std::io::Result<()> {
    std::fs::create_dir_all(layout_dir)?;
    for c in resolution.components.iter().filter(|c| !c.builtin) {
        let key = (c.name.clone(), c.version.to_string());
        if let Some(file) = origins.get(&key) {
            let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("yaml");
            std::fs::copy(file, layout_dir.join(format!("{}-{}.recipe.{ext}", c.name, c.version)))?;
        }
    }
    Ok(())
}

/// `accessControl` with `{iot:thingName}` expanded in policy resources (the nucleus expands
/// this one variable there, whatever `interpolateComponentConfiguration` says).
pub(crate) fn access_configuration(configuration: &Value, thing: &str) -> Value {
    let mut out = configuration.clone();
    if let Some(services) = out.get_mut("accessControl").and_then(Value::as_object_mut) {
        for policy in services.values_mut().filter_map(Value::as_object_mut).flat_map(|p| p.values_mut()) {
            if let Some(resources) = policy.get_mut("resources").and_then(Value::as_array_mut) {
                for r in resources.iter_mut() {
                    if let Value::String(s) = r {
                        *s = s.replace("{iot:thingName}", thing);
                    }
                }
            }
        }
    }
    out
}

impl Core {
    /// Loads, resolves, prepares and starts (see the module docs). Must be called inside a
    /// tokio runtime. Returns once the components have been asked to start; watch
    /// [`Core::subscribe`] or [`Core::wait_for_state`] for them to get there.
    pub async fn start(mut options: CoreOptions) -> Result<Self, CoreError> {
        // Recipe variables expand to these paths and components run in their work directories,
        // so relative paths would point nowhere: the nucleus's root is always absolute.
        for path in [&mut options.root, &mut options.recipe_dir, &mut options.artifact_dir] {
            if let Ok(absolute) = std::path::absolute(&*path) {
                *path = absolute;
            }
        }
        if options.merges.is_empty() {
            return Err(CoreError::NothingToRun);
        }
        let roots = options
            .merges
            .iter()
            .map(|m| RootRequirement::parse_merge(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CoreError::Resolve)?;
        let (catalog, recipe_warnings, recipe_origins) = load_catalog(&options.recipe_dir)?;
        for w in &recipe_warnings {
            tracing::warn!("{w}");
        }
        let resolution = resolve(&catalog, &roots).map_err(CoreError::Resolve)?;
        let specs =
            ComponentSpec::from_resolution(&catalog, &resolution, &options.platform).map_err(CoreError::Supervisor)?;

        std::fs::create_dir_all(&options.root)
            .map_err(|source| CoreError::Root { path: options.root.clone(), source })?;
        store_recipes(&options.root.join("packages").join("recipes"), &resolution, &recipe_origins)
            .map_err(|source| CoreError::Root { path: options.root.clone(), source })?;
        let socket = options.root.join(IPC_SOCKET_FILE);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(CoreError::SocketPathTooLong { path: socket });
        }

        let config = ConfigStore::new();
        let access = AccessControl::new();
        let mut effective_configs = HashMap::new();
        for name in options.update_config.keys() {
            if name != SHADOW_MANAGER && !specs.iter().any(|s| &s.recipe.name == name) {
                return Err(CoreError::UpdateConfig(format!("{name} is not part of this deployment")));
            }
        }
        for spec in &specs {
            let name = &spec.recipe.name;
            let update = options.update_config.get(name).cloned().unwrap_or_default();
            let applied = EffectiveConfiguration::apply(None, &spec.recipe.default_configuration, &update)
                .map_err(|e| CoreError::UpdateConfig(format!("{name}: {e}")))?;
            for w in &applied.warnings {
                tracing::warn!(component = %name, "{w}");
            }
            let effective = applied.configuration.to_value();
            access.set_component(name, &access_configuration(&effective, &options.thing));
            config.set_component(name, effective);
            effective_configs.insert(name.clone(), applied.configuration);
        }
        let shadow_manager_config = match options.update_config.get(SHADOW_MANAGER) {
            Some(update) => Some(
                EffectiveConfiguration::apply(None, &serde_json::Map::new(), update)
                    .map_err(|e| CoreError::UpdateConfig(format!("{SHADOW_MANAGER}: {e}")))?
                    .configuration
                    .to_value(),
            ),
            None => None,
        };
        let sync_config = SyncConfig::from_shadow_manager(shadow_manager_config.as_ref(), &options.thing)
            .map_err(|e| CoreError::UpdateConfig(format!("{SHADOW_MANAGER}: {e}")))?;
        if !sync_config.shadows.is_empty() && options.cloud.is_none() {
            tracing::warn!("shadow sync is configured but the core has no cloud connection (--cloud)");
        }

        let tokens = Tokens::default();
        let source_store = config.clone();
        let configuration: ConfigurationSource =
            Arc::new(move |name: &str| source_store.get(name, &[]).unwrap_or_else(|| json!({})));
        let supervisor = Arc::new(
            Supervisor::new(
                SupervisorConfig {
                    root: options.root.clone(),
                    artifact_dir: options.artifact_dir.clone(),
                    thing_name: options.thing.clone(),
                    region: options.region.clone(),
                    root_ca_path: options.root_ca_path.clone(),
                    ipc_socket: socket.clone(),
                    ggc_version: GGC_VERSION.to_owned(),
                },
                specs,
                tokens.clone(),
                configuration,
            )
            .map_err(CoreError::Supervisor)?,
        );
        let deployed = Deployed {
            catalog,
            origins: recipe_origins,
            roots: options
                .merges
                .iter()
                .filter_map(|m| m.split_once('='))
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                .collect(),
            configs: effective_configs,
            resolution: resolution.clone(),
        };
        let (deployments, deployment_runner) = Deployments::start(
            DeploymentContext {
                supervisor: Arc::downgrade(&supervisor),
                config: config.clone(),
                access: access.clone(),
                thing: options.thing.clone(),
                platform: options.platform.clone(),
                root: options.root.clone(),
            },
            deployed,
        );

        let pubsub = PubSub::default();
        let store_path = options.root.join("work").join(SHADOW_MANAGER).join("shadows.sqlite");
        let store = Arc::new(SqliteShadowStore::open(&store_path).map_err(CoreError::ShadowStore)?);
        let shadows = LocalShadows::with(
            Some(pubsub.clone()),
            store.clone(),
            cloud_api::shadow::ShadowLimits {
                max_state_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
                max_depth: DEFAULT_MAX_DEPTH,
            },
            RateLimits::default(),
        )
        .map_err(CoreError::ShadowStore)?;
        let shadow_requests = shadows.serve_pubsub_requests(&pubsub).map_err(CoreError::ShadowStore)?;
        let bridge = match &options.cloud {
            None => None,
            Some(cloud) => Some(Arc::new(
                MqttBridge::start(BridgeConfig::new(
                    cloud.endpoints.clone(),
                    cloud.cert_file.clone(),
                    cloud.key_file.clone(),
                    options.thing.clone(),
                ))
                .map_err(CoreError::Bridge)?,
            )),
        };
        let sync = match &bridge {
            Some(b) if !sync_config.shadows.is_empty() => Some(
                ShadowSync::start(
                    sync_config,
                    shadows.clone(),
                    store.clone(),
                    b.clone() as Arc<dyn IotCoreBridge>,
                    b.connection(),
                )
                .await
                .map_err(CoreError::ShadowStore)?,
            ),
            _ => None,
        };
        let services = CoreServices {
            tokens: tokens.clone(),
            lifecycle: Arc::new(supervisor.handle()),
            config: config.clone(),
            access: access.clone(),
            pubsub: pubsub.clone(),
            shadows: shadows.clone(),
            bridge: bridge.clone().map(|b| b as Arc<dyn IotCoreBridge>),
            deployments: Some(Arc::new(deployments.clone())),
        };
        let server = IpcServer::bind(&socket, services, ServerSettings::default())
            .await
            .map_err(|source| CoreError::Bind { path: socket.clone(), source })?;
        let cli_ipc_info = cli::write_ipc_info(&options.root, &socket, &tokens)
            .map_err(|source| CoreError::Root { path: options.root.join(cli::IPC_INFO_DIR), source })?;
        tracing::info!(
            socket = %socket.display(),
            components = ?resolution.start_order(),
            "simulated core started"
        );
        supervisor.start();
        Ok(Self {
            supervisor,
            server: Some(server),
            resolution,
            tokens,
            config,
            access,
            pubsub,
            shadows,
            socket,
            recipe_warnings,
            bridge,
            _sync: sync,
            shadow_requests,
            deployments,
            deployment_runner,
            cli_ipc_info,
        })
    }

    /// Local deployments (what CreateLocalDeployment queues).
    pub fn deployments(&self) -> &Deployments {
        &self.deployments
    }

    /// The Greengrass CLI's IPC info file this core wrote (`{root}/cli_ipc_info/user-{uid}`).
    pub fn cli_ipc_info(&self) -> &Path {
        &self.cli_ipc_info
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
        &self.shadows
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
        self.shadow_requests.abort();
        self.deployment_runner.abort();
        tracing::info!("simulated core stopped");
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_name_is_expanded_in_policy_resources_only() {
        let config = json!({
            "topic": "{iot:thingName}/x",
            "accessControl": {"aws.greengrass.ShadowManager": {"p:1": {
                "operations": ["*"],
                "resources": ["$aws/things/{iot:thingName}/shadow", 5]
            }}}
        });
        let out = access_configuration(&config, "core-1");
        assert_eq!(out["topic"], "{iot:thingName}/x");
        assert_eq!(
            out["accessControl"]["aws.greengrass.ShadowManager"]["p:1"]["resources"],
            json!(["$aws/things/core-1/shadow", 5])
        );
    }

    #[test]
    fn update_config_reads_the_greengrass_cli_shape() {
        let doc = json!({"A": {"MERGE": {"x": 1}, "RESET": ["/y"]}, "B": {"merge": {}}});
        let parsed = parse_update_config(&doc).unwrap();
        assert_eq!(parsed["A"].reset, ["/y"]);
        assert_eq!(parsed["A"].merge.as_ref().unwrap()["x"], 1);
        for (bad, says) in [
            (json!([1]), "JSON object of component names"),
            (json!({"A": {"MERGE": [1]}}), "A.MERGE must be a JSON object"),
            (json!({"A": {"RESET": "/x"}}), "A.RESET must be a list"),
            (json!({"A": {"UPDATE": {}}}), "unknown key"),
        ] {
            let err = parse_update_config(&bad).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn configuration_errors_are_told_apart() {
        assert!(CoreError::NothingToRun.is_configuration());
        let io = || std::io::Error::other("x");
        assert!(!CoreError::Bind { path: "/s".into(), source: io() }.is_configuration());
    }

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
        };
        let err = Core::start(options(vec![])).await.unwrap_err();
        assert!(matches!(err, CoreError::NothingToRun));
        let err = Core::start(options(vec!["com.example.A".into()])).await.unwrap_err();
        assert!(matches!(err, CoreError::Resolve(_)) && err.is_configuration(), "{err}");
        let err = Core::start(options(vec!["com.example.A=1.0.0".into()])).await.unwrap_err();
        assert!(matches!(err, CoreError::RecipeDir { .. }) && err.is_configuration(), "{err}");
        std::fs::create_dir(dir.path().join("recipes")).unwrap();
        let err = Core::start(options(vec!["com.example.A=1.0.0".into()])).await.unwrap_err();
        assert!(matches!(err, CoreError::Resolve(_)), "{err}");
        assert!(!root.exists());
    }
}
