//! The lifecycle supervisor: runs components from their recipes as the Greengrass nucleus does.
//!
//! A pure state machine per component ([`machine`]) decides; one driver task feeds it events
//! and carries out its actions with the process shell (`shell`). Rules followed, with sources:
//! AWS IoT Greengrass V2 Developer Guide, "Component recipe reference" → `Lifecycle`, and the
//! open-source nucleus (`lifecyclemanager/Lifecycle.java`, `GenericExternalService.java`,
//! `GreengrassService.java`, `ShellRunner.java`):
//!
//! - lifecycle and error rules: see [`machine`];
//! - dependencies: a component leaves INSTALLED only when each HARD dependency is RUNNING,
//!   FINISHED, or STOPPING after a good start (`dependencyFinishedStarting`); a SOFT dependency
//!   may be in any state (`dependencyReady`: "Soft dependency can be in any state") — it only
//!   orders the start requests. A component STARTING or RUNNING whose HARD dependency leaves
//!   those states is restarted, so a HARD dependency's restart restarts its dependents;
//! - scripts run as `sh -c` in `work/{Component}`, in their own process group; stdout and
//!   stderr go to `logs/{Component}.log` with a timestamp and `[stdout]`/`[stderr]` tag; state
//!   transitions go to `logs/greengrass.log`;
//! - environment (`ShellRunner`, `DeviceConfiguration`, `Kernel`, `IPCEventStreamService`):
//!   `SVCUID` and `AWS_CONTAINER_AUTHORIZATION_TOKEN` (both the component's IPC token),
//!   `AWS_CONTAINER_CREDENTIALS_FULL_URI` for the components that depend on
//!   `aws.greengrass.TokenExchangeService` ([`super::token_exchange`]),
//!   `GG_ROOT_CA_PATH`, `AWS_IOT_THING_NAME`, `AWS_REGION` and `AWS_DEFAULT_REGION`,
//!   `GGC_VERSION` (the nucleus version: [`CoreOptions::nucleus_version`], by default
//!   [`GGC_VERSION`]),
//!   `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT` and the older
//!   `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH`, then the recipe's `Setenv` (lifecycle-wide, then
//!   the step's), all on top of the core's own environment;
//! - recipe variables are expanded in scripts, `Skipif` and `Setenv` with
//!   [`InterpolationContext`], `{configuration:/…}` from a configuration source the caller
//!   gives (the config store, or a snapshot);
//! - Shutdown has 15 s by default; then the component's process groups get SIGTERM and, after
//!   5 s (the nucleus's graceful shutdown timeout), SIGKILL.
//!
//! Deployments while running ([`crate::core::deployment`]) change the set of components
//! through [`Supervisor::stage`], [`Supervisor::stop_components`],
//! [`Supervisor::reconfigure`] and [`Supervisor::start_components`]: a component replaced
//! by a new version gets a fresh state machine (NEW, so its Install runs again), the others
//! keep theirs.
//!
//! Not done (differences from the nucleus): `RequiresPrivilege` and `runWith` (scripts run as
//! the core's user), `Bootstrap`, a `Timeout` on `Run`, resource limits, Windows.

pub mod machine;
mod shell;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

use self::machine::{Action, Event, Launched, Machine, Proc};
use self::shell::{ProcessTable, Script};
use super::config_store::ConfigStore;
use super::layout::{ArtifactError, Layout, stage_artifacts};
use super::options::CoreOptions;
use super::token_exchange::{FULL_URI_ENV, TOKEN_EXCHANGE_SERVICE};
use super::{ComponentState, ControlError, LifecycleControl, ReportedState, Tokens};
use crate::recipe::{
    Catalog, ComponentVariables, DependencyType, DevicePlatform, InterpolationContext, Lifecycle, Manifest, Recipe,
    Resolution, Scope, Step, StepKind,
};

pub use super::options::GGC_VERSION;

/// How long processes get between SIGTERM and SIGKILL once Shutdown is done: the nucleus's
/// default (`Exec.gracefulShutdownTimeout`, 5 s), so a component that drains a queue on SIGTERM
/// gets here the time it gets on a real core.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The core-wide settings the supervisor needs.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The core's root directory (`--root`, `{kernel:rootPath}`).
    pub root: PathBuf,
    /// Where deployment artifacts come from: `{artifact_dir}/{Name}/{Version}/`.
    pub artifact_dir: PathBuf,
    /// The core device's thing name.
    pub thing_name: String,
    /// The AWS Region (`AWS_REGION`, `AWS_DEFAULT_REGION`).
    pub region: String,
    /// The root CA file (`GG_ROOT_CA_PATH`; empty when there is none, as in the nucleus).
    pub root_ca_path: Option<PathBuf>,
    /// The IPC socket (`AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`).
    pub ipc_socket: PathBuf,
    /// The nucleus version to claim (`GGC_VERSION`).
    pub ggc_version: String,
    /// The token exchange service's URL, given in `AWS_CONTAINER_CREDENTIALS_FULL_URI` to the
    /// components that depend on `aws.greengrass.TokenExchangeService`.
    pub credentials_uri: Option<String>,
}

impl SupervisorConfig {
    /// The settings for a core started with `options`, its IPC socket at `ipc_socket`.
    pub fn from_options(options: &CoreOptions, ipc_socket: PathBuf, credentials_uri: Option<String>) -> Self {
        Self {
            root: options.root.clone(),
            artifact_dir: options.artifact_dir.clone(),
            thing_name: options.thing.clone(),
            region: options.region.clone(),
            root_ca_path: options.root_ca_path.clone(),
            ipc_socket,
            ggc_version: options.nucleus_version.to_string(),
            credentials_uri,
        }
    }
}

/// A component to run: its recipe, the manifest chosen for this platform, its dependencies.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// The recipe.
    pub recipe: Recipe,
    /// The manifest selected for the device's platform.
    pub manifest: Manifest,
    /// Direct dependencies.
    pub dependencies: Vec<(String, DependencyType)>,
}

impl ComponentSpec {
    /// A spec from a recipe, choosing the first manifest that matches `platform`.
    pub fn from_recipe(recipe: Recipe, platform: &DevicePlatform) -> Result<Self, SupervisorError> {
        let manifest = recipe.select_manifest(platform).cloned().ok_or_else(|| SupervisorError::NoManifest {
            component: recipe.name.clone(),
            platform: format!("{platform:?}"),
        })?;
        let dependencies = recipe.dependencies.iter().map(|d| (d.name.clone(), d.kind)).collect();
        Ok(Self { recipe, manifest, dependencies })
    }

    /// Specs for a resolved deployment, in start order (built-in components are left out).
    pub fn from_resolution(
        catalog: &Catalog,
        resolution: &Resolution,
        platform: &DevicePlatform,
    ) -> Result<Vec<Self>, SupervisorError> {
        resolution
            .components
            .iter()
            .filter(|c| !c.builtin)
            .map(|c| {
                let recipe = catalog
                    .recipe(&c.name, &c.version)
                    .cloned()
                    .ok_or_else(|| SupervisorError::NoRecipe { component: c.name.clone() })?;
                Self::from_recipe(recipe, platform)
            })
            .collect()
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.recipe.name
    }

    /// The component's version.
    pub fn version(&self) -> String {
        self.recipe.version.to_string()
    }
}

/// Gives a component's effective configuration (a JSON object) for `{configuration:/…}`.
pub type ConfigurationSource = Arc<dyn Fn(&str) -> serde_json::Value + Send + Sync>;

/// A state change of one component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEvent {
    /// The component.
    pub component: String,
    /// State before.
    pub old: ComponentState,
    /// State after.
    pub new: ComponentState,
}

/// Why the supervisor could not be set up. All are faults of the deployment's input: fix it
/// and deploy again.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// No manifest of the recipe matches the device.
    #[error("component {component}: no manifest matches platform {platform}")]
    NoManifest {
        /// Component name.
        component: String,
        /// The device platform.
        platform: String,
    },
    /// The resolution names a component without a recipe.
    #[error("component {component}: no recipe")]
    NoRecipe {
        /// Component name.
        component: String,
    },
    /// Two specs name the same component.
    #[error("component {component} is listed twice")]
    Duplicate {
        /// Component name.
        component: String,
    },
    /// An artifact could not be staged (missing, digest mismatch, bad archive).
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The core's root could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The components the supervisor runs now: their specs, start order and IPC tokens.
#[derive(Debug, Clone, Default)]
struct Topology {
    specs: BTreeMap<String, ComponentSpec>,
    order: Vec<String>,
    svcuids: HashMap<String, String>,
}

/// What the driver task is fed.
enum Input {
    /// A lifecycle event for one component.
    Event(String, Event),
    /// A new set of components; `fresh` ones get a new state machine.
    Reconfigure { topology: Arc<Topology>, fresh: Vec<String>, done: oneshot::Sender<()> },
}

struct Inner {
    config: SupervisorConfig,
    layout: Layout,
    topology: RwLock<Arc<Topology>>,
    tokens: Tokens,
    configuration: ConfigurationSource,
    inputs: mpsc::UnboundedSender<Input>,
    states: RwLock<HashMap<String, ComponentState>>,
    events: broadcast::Sender<StateEvent>,
    processes: ProcessTable,
}

/// Runs the components of one deployment. Dropping it kills every process it started.
pub struct Supervisor {
    inner: Arc<Inner>,
    driver: tokio::task::JoinHandle<()>,
}

/// A cheap handle for the IPC server: implements [`LifecycleControl`].
#[derive(Clone)]
pub struct SupervisorHandle {
    inner: Arc<Inner>,
}

impl Supervisor {
    /// Prepares the core's root for `components` (given in start order: dependencies first),
    /// stages their artifacts and issues each an IPC token. Nothing runs until
    /// [`Supervisor::start`]. Must be called inside a tokio runtime.
    pub fn new(
        config: SupervisorConfig,
        components: Vec<ComponentSpec>,
        tokens: Tokens,
        configuration: ConfigurationSource,
    ) -> Result<Self, SupervisorError> {
        let layout = Layout::new(&config.root);
        let mut specs = BTreeMap::new();
        let mut order = Vec::new();
        let mut svcuids = HashMap::new();
        for spec in components {
            let name = spec.name().to_owned();
            layout.prepare(&name).map_err(|source| SupervisorError::Io { path: layout.work_dir(&name), source })?;
            // A component the cloud deployed before a restart has its artifacts in the store.
            let version = spec.version();
            let given = config.artifact_dir.join(&name).join(&version);
            let source = if !given.is_dir() && layout.artifacts_dir(&name, &version).is_dir() {
                layout.artifacts_root()
            } else {
                config.artifact_dir.clone()
            };
            stage_artifacts(&layout, &source, &name, &version, &spec.manifest.artifacts)?;
            svcuids.insert(name.clone(), tokens.issue(&name));
            order.push(name.clone());
            if specs.insert(name.clone(), spec).is_some() {
                return Err(SupervisorError::Duplicate { component: name });
            }
        }
        let (inputs, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let states: HashMap<String, ComponentState> = order.iter().map(|n| (n.clone(), ComponentState::New)).collect();
        let inner = Arc::new(Inner {
            config,
            layout,
            topology: RwLock::new(Arc::new(Topology { specs, order, svcuids })),
            tokens,
            configuration,
            inputs,
            states: RwLock::new(states),
            events,
            processes: ProcessTable::default(),
        });
        let driver = tokio::spawn(drive(inner.clone(), rx));
        Ok(Self { inner, driver })
    }

    /// The supervisor of a core started with `options`, its IPC socket at `ipc_socket`: as
    /// [`Supervisor::new`], the components reading their configuration from `config`.
    pub fn from_options(
        options: &CoreOptions,
        ipc_socket: PathBuf,
        credentials_uri: Option<String>,
        components: Vec<ComponentSpec>,
        tokens: Tokens,
        config: &ConfigStore,
    ) -> Result<Self, SupervisorError> {
        let config = config.clone();
        let configuration: ConfigurationSource =
            Arc::new(move |name: &str| config.get(name, &[]).unwrap_or_else(|| serde_json::json!({})));
        Self::new(
            SupervisorConfig::from_options(options, ipc_socket, credentials_uri),
            components,
            tokens,
            configuration,
        )
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateEvent> {
        self.inner.events.subscribe()
    }

    /// A handle for the IPC server.
    pub fn handle(&self) -> SupervisorHandle {
        SupervisorHandle { inner: self.inner.clone() }
    }

    /// The core's layout.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// Asks every component to start, in start order.
    pub fn start(&self) {
        for name in &self.inner.topology().order {
            self.inner.send(name, Event::Start);
        }
    }

    /// The components run now, in start order.
    pub fn components(&self) -> Vec<ComponentSpec> {
        let topology = self.inner.topology();
        topology.order.iter().filter_map(|n| topology.specs.get(n).cloned()).collect()
    }

    /// Each component's lifecycle with its recipe variables expanded as they would be if
    /// `components` (in start order) were the deployment and `configuration` gave their
    /// configuration: what a deployment compares to decide what changed.
    pub fn expanded_lifecycles(
        &self,
        components: &[ComponentSpec],
        configuration: &dyn Fn(&str) -> serde_json::Value,
    ) -> BTreeMap<String, Lifecycle> {
        let specs: BTreeMap<String, ComponentSpec> =
            components.iter().map(|s| (s.name().to_owned(), s.clone())).collect();
        components
            .iter()
            .map(|s| {
                let lifecycle = expand_lifecycle(&self.inner.layout, &self.inner.config, &specs, configuration, s);
                (s.name().to_owned(), lifecycle)
            })
            .collect()
    }

    /// Prepares `spec`'s work directory and stages its artifacts from
    /// `{artifact_dir}/{Name}/{Version}/` (digests checked), before anything is stopped.
    pub fn stage(&self, spec: &ComponentSpec, artifact_dir: &Path) -> Result<(), SupervisorError> {
        let name = spec.name();
        let layout = &self.inner.layout;
        layout.prepare(name).map_err(|source| SupervisorError::Io { path: layout.work_dir(name), source })?;
        stage_artifacts(layout, artifact_dir, name, &spec.version(), &spec.manifest.artifacts)?;
        Ok(())
    }

    /// Stops `names` in the order given (dependents first) and waits until each is FINISHED
    /// or BROKEN, or `timeout` passes; returns those that did not stop in time.
    pub async fn stop_components(&self, names: &[String], timeout: Duration) -> Vec<String> {
        let mut rx = self.subscribe();
        for name in names {
            self.inner.send(name, Event::Stop);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let states = self.states();
            let pending: Vec<String> = names
                .iter()
                .filter(|n| {
                    states.get(*n).is_some_and(|s| !matches!(s, ComponentState::Finished | ComponentState::Broken))
                })
                .cloned()
                .collect();
            if pending.is_empty() {
                return pending;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                _ => return pending,
            }
        }
    }

    /// Makes `components` (in start order) the set the supervisor runs. Components not in
    /// it are forgotten (their IPC tokens revoked) — stop them first; new components get a
    /// token; components named in `fresh` (new versions) get a new state machine in NEW, so
    /// their Install runs at the next start. Others keep their state. Nothing is started.
    pub async fn reconfigure(&self, components: Vec<ComponentSpec>, fresh: &[String]) {
        let old = self.inner.topology();
        let mut topology = Topology::default();
        for spec in components {
            let name = spec.name().to_owned();
            let token = match old.svcuids.get(&name) {
                Some(t) => t.clone(),
                None => self.inner.tokens.issue(&name),
            };
            topology.svcuids.insert(name.clone(), token);
            topology.order.push(name.clone());
            topology.specs.insert(name, spec);
        }
        for name in old.order.iter().filter(|n| !topology.specs.contains_key(*n)) {
            self.inner.tokens.revoke(name);
        }
        let (done, wait) = oneshot::channel();
        let input = Input::Reconfigure { topology: Arc::new(topology), fresh: fresh.to_vec(), done };
        if self.inner.inputs.send(input).is_ok() {
            let _ = wait.await;
        }
    }

    /// Asks `names` to start, in the order given (dependencies first).
    pub fn start_components(&self, names: &[String]) {
        for name in names {
            self.inner.send(name, Event::Start);
        }
    }

    /// Current states of all components.
    pub fn states(&self) -> HashMap<String, ComponentState> {
        self.inner.states.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops every component (dependents first) and waits until each is FINISHED or BROKEN, or
    /// `timeout` passes; returns the components that did not stop in time.
    pub async fn stop_all(&self, timeout: Duration) -> Vec<String> {
        let order: Vec<String> = self.inner.topology().order.iter().rev().cloned().collect();
        self.stop_components(&order, timeout).await
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.driver.abort();
        self.inner.processes.kill_everything();
        for name in &self.inner.topology().order {
            self.inner.tokens.revoke(name);
        }
    }
}

impl Inner {
    fn send(&self, component: &str, event: Event) {
        // The driver only stops when the supervisor is dropped; then nobody is listening.
        let _ = self.inputs.send(Input::Event(component.to_owned(), event));
    }

    fn topology(&self) -> Arc<Topology> {
        self.topology.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn state(&self, component: &str) -> Option<ComponentState> {
        self.states.read().unwrap_or_else(|e| e.into_inner()).get(component).copied()
    }

    /// The step `kind` ready to run, or `None` if the recipe has none or its `Skipif` holds.
    fn script(&self, component: &str, kind: StepKind) -> Option<Script> {
        let topology = self.topology();
        let spec = topology.specs.get(component)?;
        let configuration = |name: &str| (self.configuration)(name);
        let lifecycle = expand_lifecycle(&self.layout, &self.config, &topology.specs, &configuration, spec);
        let step: &Step = lifecycle.step(kind)?;
        let log = self.layout.component_log(component);
        if let Some(skip) = &step.skip_if {
            let path = std::env::var("PATH").ok();
            let skipped = skip.should_skip(&|x| shell::on_path(x, path.as_deref()), &|x| Path::new(x).exists());
            if skipped {
                shell::append_line(&log, &format!("[lifecycle] {}: skipped (Skipif)", kind.key()));
                return None;
            }
        }
        let svcuid = topology.svcuids.get(component).cloned().unwrap_or_default();
        let socket = self.config.ipc_socket.display().to_string();
        let mut env = vec![
            ("SVCUID".to_owned(), svcuid.clone()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN".to_owned(), svcuid),
            (
                "GG_ROOT_CA_PATH".to_owned(),
                self.config.root_ca_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            ),
            ("AWS_IOT_THING_NAME".to_owned(), self.config.thing_name.clone()),
            ("AWS_REGION".to_owned(), self.config.region.clone()),
            ("AWS_DEFAULT_REGION".to_owned(), self.config.region.clone()),
            ("GGC_VERSION".to_owned(), self.config.ggc_version.clone()),
            ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT".to_owned(), socket.clone()),
            ("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH".to_owned(), socket),
        ];
        if let Some(uri) = &self.config.credentials_uri
            && spec.dependencies.iter().any(|(name, _)| name == TOKEN_EXCHANGE_SERVICE)
        {
            env.push((FULL_URI_ENV.to_owned(), uri.clone()));
        }
        env.extend(lifecycle.environment(step));
        Some(Script {
            component: component.to_owned(),
            step: step.clone(),
            env,
            work_dir: self.layout.work_dir(component),
            log,
        })
    }

    fn log_transition(&self, component: &str, old: ComponentState, new: ComponentState) {
        shell::append_line(&self.layout.greengrass_log(), &format!("{component}: {old:?} -> {new:?}"));
        shell::append_line(&self.layout.component_log(component), &format!("[lifecycle] state {old:?} -> {new:?}"));
    }
}

/// `spec`'s lifecycle with every recipe variable expanded, its dependencies taken from
/// `specs` and configuration from `configuration`.
fn expand_lifecycle(
    layout: &Layout,
    config: &SupervisorConfig,
    specs: &BTreeMap<String, ComponentSpec>,
    configuration: &dyn Fn(&str) -> serde_json::Value,
    spec: &ComponentSpec,
) -> Lifecycle {
    let vars = |name: &str, version: &str| ComponentVariables {
        locations: layout.locations(name, version),
        configuration: configuration(name),
    };
    let dependencies = spec
        .dependencies
        .iter()
        .filter_map(|(d, _)| specs.get(d).map(|s| (d.clone(), vars(d, &s.version()))))
        .collect();
    let ctx = InterpolationContext {
        own: vars(spec.name(), &spec.version()),
        dependencies,
        kernel_root_path: layout.root().display().to_string(),
        thing_name: config.thing_name.clone(),
    };
    spec.manifest.lifecycle.map_text(&|t| ctx.expand(t, Scope::Lifecycle))
}

/// The driver: owns the machines, applies events, starts actions, settles dependencies.
async fn drive(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Input>) {
    let mut machines: HashMap<String, Machine> =
        inner.topology().order.iter().map(|n| (n.clone(), Machine::new())).collect();
    while let Some(input) = rx.recv().await {
        match input {
            Input::Event(name, event) => {
                let Some(machine) = machines.get_mut(&name) else { continue };
                let outcome = machine.handle(event, Instant::now());
                apply(&inner, &name, outcome);
            }
            Input::Reconfigure { topology, fresh, done } => {
                machines.retain(|name, _| topology.specs.contains_key(name));
                let mut states = inner.states.write().unwrap_or_else(|e| e.into_inner());
                states.retain(|name, _| topology.specs.contains_key(name));
                let mut events = Vec::new();
                for name in &topology.order {
                    if fresh.contains(name) || !machines.contains_key(name) {
                        machines.insert(name.clone(), Machine::new());
                        if let Some(old) = states.insert(name.clone(), ComponentState::New)
                            && old != ComponentState::New
                        {
                            events.push(StateEvent { component: name.clone(), old, new: ComponentState::New });
                        }
                    }
                }
                drop(states);
                *inner.topology.write().unwrap_or_else(|e| e.into_inner()) = topology;
                for event in events {
                    inner.log_transition(&event.component, event.old, event.new);
                    let _ = inner.events.send(event);
                }
                let _ = done.send(());
            }
        }
        settle(&inner, &mut machines);
    }
}

/// Feeds dependency readiness into the machines until nothing changes.
fn settle(inner: &Arc<Inner>, machines: &mut HashMap<String, Machine>) {
    let topology = inner.topology();
    loop {
        let mut changed = false;
        for name in &topology.order {
            let Some(spec) = topology.specs.get(name) else { continue };
            let hard_ready = spec
                .dependencies
                .iter()
                .filter(|(_, kind)| *kind == DependencyType::Hard)
                .all(|(d, _)| machines.get(d).is_none_or(Machine::ready_for_dependents));
            let Some(event) = machines.get(name).and_then(|m| m.dependency_event(hard_ready)) else { continue };
            let outcome = machines.get_mut(name).map(|m| m.handle(event, Instant::now())).unwrap_or_default();
            changed |= !outcome.transitions.is_empty();
            apply(inner, name, outcome);
        }
        if !changed {
            return;
        }
    }
}

fn apply(inner: &Arc<Inner>, name: &str, outcome: machine::Outcome) {
    for (old, new) in outcome.transitions {
        inner.states.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_owned(), new);
        inner.log_transition(name, old, new);
        tracing::info!(component = name, ?old, ?new, "component state");
        let _ = inner.events.send(StateEvent { component: name.to_owned(), old, new });
    }
    for action in outcome.actions {
        let inner = inner.clone();
        let name = name.to_owned();
        match action {
            // Settled by the driver after every event.
            Action::AwaitDependencies => {}
            Action::Install { attempt } => {
                tokio::spawn(async move {
                    let ok = match inner.script(&name, StepKind::Install) {
                        Some(script) => shell::run_to_end(&script, &inner.processes).await.ok(),
                        None => true,
                    };
                    inner.send(&name, Event::InstallDone { attempt, ok });
                });
            }
            Action::Recover { attempt } => {
                tokio::spawn(async move {
                    if let Some(script) = inner.script(&name, StepKind::Recover) {
                        shell::run_to_end(&script, &inner.processes).await;
                    }
                    inner.send(&name, Event::RecoverDone { attempt });
                });
            }
            Action::Shutdown { attempt } => {
                tokio::spawn(async move {
                    let end = match inner.script(&name, StepKind::Shutdown) {
                        Some(script) => Some(shell::run_to_end(&script, &inner.processes).await),
                        None => None,
                    };
                    shell::terminate_all(&name, &inner.processes, KILL_GRACE).await;
                    let event = match end {
                        Some(shell::StepEnd::TimedOut) => Event::ShutdownTimedOut { attempt },
                        _ => Event::ShutdownDone { attempt },
                    };
                    inner.send(&name, event);
                });
            }
            Action::Launch { attempt } => launch(inner, name, attempt),
        }
    }
}

/// Starts Startup (with its timeout) or Run, and reports its exit.
fn launch(inner: Arc<Inner>, name: String, attempt: u64) {
    let (script, proc) = match inner.script(&name, StepKind::Startup) {
        Some(s) => (Some(s), Proc::Startup),
        None => (inner.script(&name, StepKind::Run), Proc::Run),
    };
    let Some(script) = script else {
        inner.send(&name, Event::Launched { attempt, what: Launched::Nothing });
        return;
    };
    let running = match shell::spawn(&script, &inner.processes) {
        Ok(r) => r,
        Err(e) => {
            shell::append_line(&script.log, &format!("[lifecycle] {}: cannot start: {e}", script.step.kind.key()));
            inner.send(&name, Event::LaunchFailed { attempt });
            return;
        }
    };
    let what = if proc == Proc::Startup { Launched::Startup } else { Launched::Run };
    inner.send(&name, Event::Launched { attempt, what });
    if proc == Proc::Startup
        && let Some(limit) = script.step.timeout()
    {
        let (inner, name) = (inner.clone(), name.clone());
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            inner.send(&name, Event::StartupTimedOut { attempt });
        });
    }
    tokio::spawn(async move {
        let code = running.wait(&inner.processes).await;
        let end = shell::StepEnd::Exited(code);
        shell::append_line(&script.log, &format!("[lifecycle] {}: {}", script.step.kind.key(), shell::describe(&end)));
        inner.send(&name, Event::Exited { attempt, proc, code });
    });
}

impl LifecycleControl for SupervisorHandle {
    fn report_state(&self, component: &str, state: ReportedState) {
        self.inner.send(component, Event::Reported(state));
    }

    fn restart(&self, component: &str) -> Result<(), ControlError> {
        match self.inner.state(component) {
            None => Err(ControlError::NotFound(component.to_owned())),
            Some(ComponentState::Broken) => Err(ControlError::Invalid(format!(
                "component {component} is BROKEN; it restarts only with a new deployment"
            ))),
            Some(_) => {
                self.inner.send(component, Event::Restart);
                Ok(())
            }
        }
    }

    fn stop(&self, component: &str) -> Result<(), ControlError> {
        match self.inner.state(component) {
            None => Err(ControlError::NotFound(component.to_owned())),
            Some(_) => {
                self.inner.send(component, Event::Stop);
                Ok(())
            }
        }
    }

    fn state(&self, component: &str) -> Option<ComponentState> {
        self.inner.state(component)
    }
}

impl LifecycleControl for Supervisor {
    fn report_state(&self, component: &str, state: ReportedState) {
        self.handle().report_state(component, state);
    }

    fn restart(&self, component: &str) -> Result<(), ControlError> {
        self.handle().restart(component)
    }

    fn stop(&self, component: &str) -> Result<(), ControlError> {
        self.handle().stop(component)
    }

    fn state(&self, component: &str) -> Option<ComponentState> {
        self.inner.state(component)
    }
}
