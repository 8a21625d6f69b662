//! The simulated core assembled: recipes in, running components and an IPC server out.
//!
//! [`Core::start`] does what a Greengrass nucleus does for a local deployment
//! (`greengrass-cli deployment create --recipeDir --artifactDir --merge NAME=VERSION`):
//!
//! 1. loads every recipe file (`.yaml`, `.yml`, `.json`) directly in the recipe directory,
//!    with the GDK schema when [`RecipeLoader::discover`] finds it; a recipe that does not
//!    load, or two files with the same name and version, stop the start;
//! 2. resolves the `--merge` roots and their dependencies ([`resolve`]);
//! 3. gives every component its effective configuration — its `DefaultConfiguration`, no
//!    deployment merge yet — in the [`ConfigStore`], and its `accessControl` policies to
//!    [`AccessControl`], with `{iot:thingName}` in policy resources expanded as the nucleus
//!    does;
//! 4. prepares `{root}` (layout, artifacts staged from `{artifact_dir}/{Name}/{Version}/`),
//!    issues each component an IPC token, binds the IPC server on `{root}/ipc.socket`, and
//!    starts the components in dependency order.
//!
//! Not yet: the IoT Core bridge (PublishToIoTCore/SubscribeToIoTCore answer `ServiceError`),
//! deployment configuration merges, persisted shadows, deployments after start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::access::AccessControl;
use super::config_store::ConfigStore;
use super::ipc_server::{CoreServices, IpcServer, ServerSettings};
use super::layout::Layout;
use super::local_shadow::LocalShadows;
use super::pubsub::PubSub;
use super::supervisor::{
    ComponentSpec, ConfigurationSource, GGC_VERSION, StateEvent, Supervisor, SupervisorConfig, SupervisorError,
};
use super::{ComponentState, Tokens};
use crate::recipe::{
    Catalog, DevicePlatform, EffectiveConfiguration, RecipeError, RecipeFormat, RecipeLoader, Resolution, ResolveError,
    RootRequirement, SchemaError, resolve,
};

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
            | Self::SocketPathTooLong { .. } => true,
            Self::Root { .. } | Self::Bind { .. } => false,
        }
    }
}

/// A running simulated core. Dropping it kills every component process and closes the IPC
/// socket; [`Core::shutdown`] stops the components properly first.
pub struct Core {
    supervisor: Supervisor,
    server: Option<IpcServer>,
    resolution: Resolution,
    tokens: Tokens,
    config: ConfigStore,
    access: AccessControl,
    pubsub: PubSub,
    shadows: LocalShadows,
    socket: PathBuf,
    recipe_warnings: Vec<String>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("socket", &self.socket)
            .field("components", &self.resolution.start_order())
            .finish_non_exhaustive()
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

/// Loads every recipe of `dir` into a catalog; returns the warnings to pass on.
fn load_catalog(dir: &Path) -> Result<(Catalog, Vec<String>), CoreError> {
    let loader = RecipeLoader::discover(None).map_err(CoreError::Schema)?;
    let mut warnings = Vec::new();
    if let Some(why) = loader.schema_warning() {
        warnings.push(format!("recipes are not checked against the GDK schema: {why}"));
    }
    let mut catalog = Catalog::new();
    let mut origin: HashMap<(String, String), PathBuf> = HashMap::new();
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
        catalog.add(loaded.recipe);
    }
    Ok((catalog, warnings))
}

/// `accessControl` with `{iot:thingName}` expanded in policy resources (the nucleus expands
/// this one variable there, whatever `interpolateComponentConfiguration` says).
fn access_configuration(configuration: &Value, thing: &str) -> Value {
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
    pub async fn start(options: CoreOptions) -> Result<Self, CoreError> {
        if options.merges.is_empty() {
            return Err(CoreError::NothingToRun);
        }
        let roots = options
            .merges
            .iter()
            .map(|m| RootRequirement::parse_merge(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CoreError::Resolve)?;
        let (catalog, recipe_warnings) = load_catalog(&options.recipe_dir)?;
        for w in &recipe_warnings {
            tracing::warn!("{w}");
        }
        let resolution = resolve(&catalog, &roots).map_err(CoreError::Resolve)?;
        let specs =
            ComponentSpec::from_resolution(&catalog, &resolution, &options.platform).map_err(CoreError::Supervisor)?;

        std::fs::create_dir_all(&options.root)
            .map_err(|source| CoreError::Root { path: options.root.clone(), source })?;
        let socket = options.root.join(IPC_SOCKET_FILE);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(CoreError::SocketPathTooLong { path: socket });
        }

        let config = ConfigStore::new();
        let access = AccessControl::new();
        for spec in &specs {
            let effective = EffectiveConfiguration::from_defaults(&spec.recipe.default_configuration).to_value();
            access.set_component(&spec.recipe.name, &access_configuration(&effective, &options.thing));
            config.set_component(&spec.recipe.name, effective);
        }

        let tokens = Tokens::default();
        let source_store = config.clone();
        let configuration: ConfigurationSource =
            Arc::new(move |name: &str| source_store.get(name, &[]).unwrap_or_else(|| json!({})));
        let supervisor = Supervisor::new(
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
        .map_err(CoreError::Supervisor)?;

        let pubsub = PubSub::default();
        let shadows = LocalShadows::new(Some(pubsub.clone()));
        let services = CoreServices {
            tokens: tokens.clone(),
            lifecycle: Arc::new(supervisor.handle()),
            config: config.clone(),
            access: access.clone(),
            pubsub: pubsub.clone(),
            shadows: shadows.clone(),
            bridge: None,
        };
        let server = IpcServer::bind(&socket, services, ServerSettings::default())
            .await
            .map_err(|source| CoreError::Bind { path: socket.clone(), source })?;
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
        })
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

    /// The resolved deployment (components in start order).
    pub fn resolution(&self) -> &Resolution {
        &self.resolution
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
