//! Local deployments while the core runs: the Greengrass CLI's `CreateLocalDeployment`,
//! `GetLocalDeploymentStatus` and `ListLocalDeployments` (service `aws.greengrass.Cli`).
//!
//! Follows the nucleus's `CLIEventStreamAgent` (requests, ids, statuses), `DeploymentService`
//! (one deployment at a time, in the order received) and `DeploymentConfigMerger` (what
//! happens to the components; the pure part is [`plan`]). A deployment:
//!
//! 1. is QUEUED with a UUID (`deploymentId`), then IN_PROGRESS when its turn comes;
//! 2. adds the recipes of `recipeDirectoryPath` to the core's recipe store, takes the core's
//!    root components, removes `rootComponentsToRemove`, adds `rootComponentVersionsToAdd`,
//!    and resolves versions and dependencies as the start does;
//! 3. computes each component's configuration (`componentToConfiguration`'s `MERGE`/`RESET`
//!    applied to what the component has; a new version's defaults merged in) and plans
//!    ([`plan::plan`]) which components to stop, install again and start;
//! 4. stages the artifacts of every component that installs again — from
//!    `artifactsDirectoryPath/{Name}/{Version}/`, else from the core's own store — with
//!    digests checked, **before anything is stopped**: a bad recipe, an unresolvable
//!    version or a digest mismatch fails the deployment with nothing changed
//!    (`FAILED_NO_STATE_CHANGE`);
//! 5. stops what the plan stops (dependents first, Shutdown steps run), writes the new
//!    configurations (SubscribeToConfigurationUpdate streams are notified), swaps the
//!    component set, starts what the plan starts (dependencies first; Install runs for new
//!    versions), and waits until each of those is RUNNING or FINISHED and stays so for
//!    [`SETTLE_CHECK`] (the nucleus looks once a second, so a Run that fails at once is caught);
//! 6. fails if one of them becomes BROKEN (three errors: Install failing, Run exiting
//!    non-zero…) or does not get there within [`SETTLE_TIMEOUT`]. With the failure policy
//!    ROLLBACK (the default) the previous components, versions and configurations are then
//!    restored the same way (`FAILED_ROLLBACK_COMPLETE`); with DO_NOTHING they stay as the
//!    deployment left them (`FAILED_ROLLBACK_NOT_REQUESTED`).
//!
//! Cloud deployments (thing-group jobs, thing shadows; [`Origin`]) go through the same steps:
//! each deployment sets the root components of its group, the core runs the union of the
//! groups, and before step 2 [`cloud`] resolves what the cloud groups need with the Greengrass
//! data plane and downloads it, digests checked.
//!
//! Between 4 and 5, the component update gate ([`super::update_gate`], the nucleus's
//! `DeploymentConfigMerger` order): with the policy NOTIFY_COMPONENTS the subscribed
//! components get preUpdateEvent (`isGgcRestarting` when the deployment brings another
//! nucleus) and may defer ([`Deployments::deferrals`] lists who did); then the components
//! whose configuration changes at the same version validate it
//! (SubscribeToValidateConfigurationUpdates): a rejection, or no report in time, fails the
//! deployment with nothing changed (`FAILED_NO_STATE_CHANGE`,
//! `COMPONENT_CONFIGURATION_NOT_VALID`). postUpdateEvent follows once the deployment is done
//! on this core, however it ended (not when the core restarts into a new nucleus). The
//! notices go out even when the plan changes nothing that runs (the nucleus notifies for every
//! deployment with NOTIFY_COMPONENTS). Cloud deployments take both policies from their
//! document; local deployments skip the notices and give validation 20 s, as the nucleus's do
//! ([`local_update_policy`], [`LOCAL_VALIDATION_TIMEOUT`]); other policies come through
//! [`Deployments::create_with_policies`].
//!
//! Differences from the nucleus: no cancellation, `groupName` is
//! ignored (every local deployment targets the one local group), `componentToRunWithInfo`
//! is refused (steps run as the core's user), the ShadowManager's configuration is only
//! taken at start, and statuses are kept in memory (not across a core restart). A component
//! whose configuration is recomputed (new version, or a configuration update) loses values
//! it wrote itself with UpdateConfiguration.

pub mod cloud;
pub mod plan;
pub mod state;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use cloud_api::greengrass::DeploymentDocument;
use cloud_api::ipc::model::{
    CreateLocalDeploymentRequest, DeploymentStatus, DeploymentStatusDetails, DetailedDeploymentStatus,
    FailureHandlingPolicy, LocalDeployment,
};

use self::plan::{ComponentFacts, Plan};
use super::ComponentState;
use super::access::AccessControl;
use super::access::SHADOW_MANAGER;
use super::config_store::ConfigStore;
use super::error::CoreError;
use super::nucleus_update;
use super::options::CoreOptions;
use super::recipe_store::{
    RecipeOrigins, access_configuration, load_catalog, load_catalog_of_builtins, load_recipes, parse_update_config,
    store_recipes,
};
use super::services::{ComponentUpdateGate, Deferral, LocalDeploymentService, RequestError, RestartRequest};
use super::supervisor::{ComponentSpec, Supervisor};
use crate::recipe::{
    Catalog, ConfigurationUpdate, DevicePlatform, EffectiveConfiguration, Resolution, RootRequirement, resolve,
};
use cloud_api::greengrass::deployment::{ComponentUpdateAction, ComponentUpdatePolicy};

/// How long the components a deployment starts get to reach RUNNING or FINISHED (ours: the
/// nucleus waits without a limit).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the components a deployment starts must stay RUNNING or FINISHED before it counts
/// as applied (the nucleus looks at them once a second).
pub const SETTLE_CHECK: Duration = Duration::from_secs(1);
/// How long the components a deployment stops get (Shutdown has 15 s, then a kill).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Finished deployments kept for GetLocalDeploymentStatus / ListLocalDeployments.
const KEEP_FINISHED: usize = 100;

/// The group of what local deployments (and the core's start) bring, as the nucleus names it.
pub const LOCAL_DEPLOYMENT_GROUP: &str = "LOCAL_DEPLOYMENT";

/// Where a deployment comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// The Greengrass CLI (CreateLocalDeployment).
    #[default]
    Local,
    /// A thing-group deployment: an IoT job in the `aws-gg-deployment` namespace.
    ThingGroup {
        /// The deployment's configuration ARN (`…:configuration:thinggroup/NAME:REVISION`).
        configuration_arn: String,
        /// The Greengrass deployment id.
        deployment_id: String,
    },
    /// A thing deployment: the `AWSManagedGreengrassV2Deployment` shadow.
    Thing {
        /// The deployment's configuration ARN (`…:configuration:thing/NAME:REVISION`).
        configuration_arn: String,
        /// The Greengrass deployment id.
        deployment_id: String,
    },
}

impl Origin {
    /// The group the deployment sets the root components of: `LOCAL_DEPLOYMENT`,
    /// `thinggroup/NAME` or `thing/NAME` (the resource of the configuration ARN, as the nucleus
    /// names groups).
    pub fn group(&self) -> String {
        match self {
            Origin::Local => LOCAL_DEPLOYMENT_GROUP.to_owned(),
            Origin::ThingGroup { configuration_arn, .. } | Origin::Thing { configuration_arn, .. } => {
                group_of(configuration_arn)
            }
        }
    }

    /// The Greengrass deployment id of a cloud deployment (CreateDeployment's `deploymentId`).
    pub fn greengrass_deployment_id(&self) -> Option<&str> {
        match self {
            Origin::Local => None,
            Origin::ThingGroup { deployment_id, .. } | Origin::Thing { deployment_id, .. } => Some(deployment_id),
        }
    }

    /// The configuration ARN of a cloud deployment.
    pub fn configuration_arn(&self) -> Option<&str> {
        match self {
            Origin::Local => None,
            Origin::ThingGroup { configuration_arn, .. } | Origin::Thing { configuration_arn, .. } => {
                Some(configuration_arn)
            }
        }
    }
}

/// `thinggroup/NAME` of `arn:aws:greengrass:REGION:ACCOUNT:configuration:thinggroup/NAME:REVISION`.
fn group_of(configuration_arn: &str) -> String {
    let resource = configuration_arn.split_once(":configuration:").map_or(configuration_arn, |(_, r)| r);
    resource.rsplit_once(':').map_or(resource, |(group, _revision)| group).to_owned()
}

/// How long components get to validate a local deployment's configuration (the nucleus's
/// `DynamicComponentConfigurationValidator.DEFAULT_TIMEOUT_SECOND`, which
/// `DeploymentDocumentConverter` gives local deployments).
pub const LOCAL_VALIDATION_TIMEOUT: Duration = Duration::from_secs(20);

/// The component update policy of a local deployment: SKIP_NOTIFY_COMPONENTS, timeout 0, as
/// the nucleus's `DeploymentDocumentConverter` sets it.
pub fn local_update_policy() -> ComponentUpdatePolicy {
    ComponentUpdatePolicy { timeout: 0, action: ComponentUpdateAction::SkipNotifyComponents }
}

/// A deployment as the runner takes it.
#[derive(Debug, Clone, Default)]
struct Request {
    id: String,
    origin: Origin,
    recipe_dir: Option<PathBuf>,
    artifact_dir: Option<PathBuf>,
    /// The group's roots are replaced by `add` (cloud deployments) rather than changed.
    replace_roots: bool,
    add: BTreeMap<String, String>,
    remove: Vec<String>,
    configuration: HashMap<String, ConfigurationUpdate>,
    policy: FailureHandlingPolicy,
    /// Notify components (who may defer) or not, and how long each round waits.
    update_policy: ComponentUpdatePolicy,
    /// How long components get to validate their new configuration.
    validation_timeout: Duration,
}

/// What the core has deployed: the state a deployment starts from.
#[derive(Debug, Clone)]
pub(crate) struct Deployed {
    /// Every recipe the core knows (the recipe store), built-ins included.
    pub catalog: Catalog,
    /// Where each recipe's file is.
    pub origins: RecipeOrigins,
    /// Each group's root components and their versions (`LOCAL_DEPLOYMENT`,
    /// `thinggroup/NAME`, `thing/NAME`); the core runs their union.
    pub groups: BTreeMap<String, BTreeMap<String, String>>,
    /// Each cloud group's configuration ARN (what fleet status reports as `fleetConfigArns`).
    pub group_arns: BTreeMap<String, String>,
    /// The components the core provides itself.
    pub builtins: BTreeSet<String>,
    /// Each component's configuration with its origins (defaults vs deployment).
    pub configs: HashMap<String, EffectiveConfiguration>,
    /// The resolved set.
    pub resolution: Resolution,
}

impl Deployed {
    /// The deployment the core starts with (`--recipe-dir`, `--merge`, `--update-config`): the
    /// recipe directory loaded next to the `builtins` (name, version), the roots resolved, and
    /// each component's effective configuration. Returns it with the components to run (in
    /// start order) and the recipe warnings; changes nothing on disk.
    pub(crate) fn initial(
        options: &CoreOptions,
        builtins: &[(&str, &str)],
    ) -> Result<(Self, Vec<ComponentSpec>, Vec<String>), CoreError> {
        if options.merges.is_empty() && options.cloud.is_none() {
            return Err(CoreError::NothingToRun);
        }
        let parsed = options.merges.iter().map(|m| RootRequirement::parse_merge(m)).collect::<Result<Vec<_>, _>>();
        parsed.map_err(CoreError::Resolve)?;
        let local: BTreeMap<String, String> = options
            .merges
            .iter()
            .filter_map(|m| m.split_once('='))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        // A core that starts with no local roots waits for cloud deployments: no recipe
        // directory to read.
        let (mut catalog, mut warnings, mut origins) = if local.is_empty() {
            load_catalog_of_builtins(builtins)
        } else {
            load_catalog(&options.recipe_dir, builtins)?
        };
        // What cloud deployments brought before a restart, with the recipes kept of them.
        let kept =
            state::load(&options.root).map_err(|e| CoreError::KeptDeployments(e.to_string()))?.unwrap_or_default();
        if !kept.groups.is_empty() {
            let (recipes, more, kept_origins) = load_recipes(&super::layout::Layout::new(&options.root).recipes_dir())?;
            warnings.extend(more);
            for recipe in recipes {
                let key = (recipe.name.clone(), recipe.version.to_string());
                if catalog.recipe(&recipe.name, &recipe.version).is_none() {
                    catalog.add(recipe);
                    if let Some(file) = kept_origins.get(&key) {
                        origins.insert(key, file.clone());
                    }
                }
            }
        }
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let mut groups = kept.groups;
        if !local.is_empty() {
            groups.insert(LOCAL_DEPLOYMENT_GROUP.to_owned(), local);
        }
        let builtins = builtins.iter().map(|(n, _)| (*n).to_owned()).collect();
        let mut deployed = Self {
            catalog,
            origins,
            groups,
            group_arns: kept.group_arns,
            builtins,
            configs: HashMap::new(),
            resolution: Resolution { components: Vec::new() },
        };
        let roots = deployed.roots().map_err(CoreError::KeptDeployments)?;
        let roots = roots
            .iter()
            .map(|(n, v)| RootRequirement::parse_merge(&format!("{n}={v}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CoreError::Resolve)?;
        deployed.resolution = resolve(&deployed.catalog, &roots).map_err(CoreError::Resolve)?;
        let specs = ComponentSpec::from_resolution(&deployed.catalog, &deployed.resolution, &options.platform)
            .map_err(CoreError::Supervisor)?;
        for name in options.update_config.keys() {
            // Built-in components (the nucleus, ShadowManager, TES) take `--update-config` too.
            if !deployed.builtins.contains(name) && !specs.iter().any(|s| &s.recipe.name == name) {
                return Err(CoreError::UpdateConfig(format!("{name} is not part of this deployment")));
            }
        }
        for spec in &specs {
            let name = &spec.recipe.name;
            let update = options.update_config.get(name).cloned().unwrap_or_default();
            let previous = kept.configurations.get(name).and_then(EffectiveConfiguration::from_stored);
            let applied = EffectiveConfiguration::apply(previous.as_ref(), &spec.recipe.default_configuration, &update)
                .map_err(|e| CoreError::UpdateConfig(format!("{name}: {e}")))?;
            for w in &applied.warnings {
                tracing::warn!(component = %name, "{w}");
            }
            deployed.configs.insert(name.clone(), applied.configuration);
        }
        Ok((deployed, specs, warnings))
    }

    /// What is kept of the cloud groups across a restart ([`state`]).
    fn kept(&self) -> state::Kept {
        let groups: BTreeMap<_, _> = self
            .groups
            .iter()
            .filter(|(g, _)| *g != LOCAL_DEPLOYMENT_GROUP)
            .map(|(g, r)| (g.clone(), r.clone()))
            .collect();
        let arns: BTreeSet<&String> = groups.keys().filter_map(|g| self.group_arns.get(g)).collect();
        let configurations = self
            .membership()
            .into_iter()
            .filter(|(_, m)| m.groups.iter().any(|g| arns.contains(g)))
            .filter_map(|(name, _)| self.configs.get(&name).map(|c| (name, c.to_stored())))
            .collect();
        state::Kept { group_arns: self.group_arns.clone(), groups, configurations }
    }

    /// The root components of every group, each with the version its group requires; a
    /// component two groups require at different versions is an error.
    fn roots(&self) -> Result<BTreeMap<String, String>, String> {
        let mut roots: BTreeMap<String, (String, &str)> = BTreeMap::new();
        for (group, members) in &self.groups {
            for (name, version) in members {
                match roots.get(name) {
                    Some((v, other)) if v != version => {
                        return Err(format!("{name} is required at {v} by {other} and at {version} by {group}"));
                    }
                    _ => {
                        roots.insert(name.clone(), (version.clone(), group));
                    }
                }
            }
        }
        Ok(roots.into_iter().map(|(n, (v, _))| (n, v)).collect())
    }

    /// Each deployed component's membership: root or not, and the groups (configuration ARNs
    /// for cloud groups, `LOCAL_DEPLOYMENT`) whose roots reach it.
    fn membership(&self) -> BTreeMap<String, Membership> {
        let mut out: BTreeMap<String, Membership> = BTreeMap::new();
        for (group, roots) in &self.groups {
            let label = self.group_arns.get(group).cloned().unwrap_or_else(|| group.clone());
            let mut queue: Vec<&str> = roots.keys().map(String::as_str).collect();
            for name in &queue {
                out.entry((*name).to_owned()).or_default().is_root = true;
            }
            let mut seen = BTreeSet::new();
            while let Some(name) = queue.pop() {
                if !seen.insert(name) {
                    continue;
                }
                let entry = out.entry(name.to_owned()).or_default();
                if !entry.groups.contains(&label) {
                    entry.groups.push(label.clone());
                }
                if let Some(c) = self.resolution.get(name) {
                    queue.extend(c.dependencies.iter().map(|(d, _)| d.as_str()));
                }
            }
        }
        out
    }

    /// Writes every component's configuration and its `accessControl` (`{iot:thingName}`
    /// expanded) as the deployment computed them.
    pub(crate) fn write_configuration(&self, config: &ConfigStore, access: &AccessControl, thing: &str) {
        for (name, configuration) in &self.configs {
            write_component(config, access, thing, name, &configuration.to_value());
        }
    }
}

/// One component's configuration into the store, its policies into access control.
fn write_component(config: &ConfigStore, access: &AccessControl, thing: &str, name: &str, value: &Value) {
    access.set_component(name, &access_configuration(value, thing));
    config.set_component(name, value.clone());
}

/// How a deployed component belongs to the deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// A root component of some group.
    pub is_root: bool,
    /// The groups that hold it: configuration ARNs of cloud groups, `LOCAL_DEPLOYMENT`.
    pub groups: Vec<String>,
}

/// A deployment's status change, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentEvent {
    /// Its status as the Greengrass CLI shows local deployments.
    pub deployment: LocalDeployment,
    /// Where it came from.
    pub origin: Origin,
}

/// The core's pieces a deployment works on.
pub(crate) struct Context {
    /// The supervisor; weak so that dropping the core kills its components at once.
    pub supervisor: Weak<Supervisor>,
    /// Component configuration.
    pub config: ConfigStore,
    /// accessControl.
    pub access: AccessControl,
    /// `{iot:thingName}` for policy resources.
    pub thing: String,
    /// The device platform (manifest selection).
    pub platform: DevicePlatform,
    /// The core's root.
    pub root: PathBuf,
    /// The cloud's component store, when the core has a cloud connection.
    pub cloud: Option<cloud::CloudComponents>,
    /// The nucleus version this core runs as.
    pub nucleus_version: String,
    /// How the engine asks for the core to restart into a staged nucleus.
    pub restart: RestartRequest,
    /// Component update notices and configuration validation.
    pub gate: Arc<dyn ComponentUpdateGate>,
}

impl Context {
    /// The context of a core started with `options`, running `supervisor`'s components.
    pub(crate) fn new(
        options: &CoreOptions,
        supervisor: &Arc<Supervisor>,
        config: &ConfigStore,
        access: &AccessControl,
        gate: Arc<dyn ComponentUpdateGate>,
    ) -> Self {
        Self {
            supervisor: Arc::downgrade(supervisor),
            config: config.clone(),
            access: access.clone(),
            thing: options.thing.clone(),
            platform: options.platform.clone(),
            root: options.root.clone(),
            cloud: None,
            nucleus_version: options.nucleus_version.to_string(),
            restart: RestartRequest::default(),
            gate,
        }
    }
}

#[derive(Debug, Clone)]
struct Record {
    id: String,
    origin: Origin,
    created_on: String,
    status: DeploymentStatus,
    details: Option<DeploymentStatusDetails>,
    /// Components that deferred it (component update notices).
    deferrals: Vec<Deferral>,
    /// Bytes of artifacts a cloud deployment downloaded.
    bytes_downloaded: Option<u64>,
}

impl Record {
    fn to_model(&self) -> LocalDeployment {
        LocalDeployment {
            deployment_id: self.id.clone(),
            status: self.status,
            created_on: Some(self.created_on.clone()),
            deployment_status_details: self.details.clone(),
        }
    }
}

/// The deployment queue and its statuses. Cheap to clone.
#[derive(Clone)]
pub struct Deployments {
    recorder: Recorder,
    queue: mpsc::UnboundedSender<Request>,
    store_root: PathBuf,
}

impl std::fmt::Debug for Deployments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployments").finish_non_exhaustive()
    }
}

impl Deployments {
    /// Starts the runner task; it ends when every handle is dropped or the supervisor is gone.
    pub(crate) fn start(ctx: Context, deployed: Deployed) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(256);
        let membership = Arc::new(Mutex::new(deployed.membership()));
        let recorder = Recorder { records: Arc::default(), events, membership };
        let store_root = ctx.root.join("packages").join("artifacts");
        let runner = tokio::spawn(run(recorder.clone(), ctx, deployed, rx));
        (Self { recorder, queue, store_root }, runner)
    }

    /// How each deployed component belongs to the deployment (root or not, its groups).
    pub fn membership(&self) -> BTreeMap<String, Membership> {
        self.recorder.membership.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Bytes of artifacts cloud deployment `id` downloaded (artifacts already in the store with
    /// their digest are not downloaded again); `None` before it fetched anything.
    pub fn downloaded(&self, id: &str) -> Option<u64> {
        let records = self.recorder.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().find(|r| r.id == id).and_then(|r| r.bytes_downloaded)
    }

    /// Every status change from now on, of local and cloud deployments alike.
    pub fn subscribe(&self) -> broadcast::Receiver<DeploymentEvent> {
        self.recorder.events.subscribe()
    }

    /// The status of deployment `id`, local or cloud.
    pub fn record(&self, id: &str) -> Option<LocalDeployment> {
        let records = self.recorder.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().find(|r| r.id == id).map(Record::to_model)
    }

    /// Queues a cloud deployment (`origin` is not [`Origin::Local`]) under `id` (the job id, or
    /// the configuration ARN of a thing deployment). A deployment queued or in progress under
    /// `id` is not queued again; a finished one is (a job retried by the cloud).
    pub fn submit_cloud(&self, id: &str, origin: Origin, document: &DeploymentDocument) -> Result<(), RequestError> {
        if self.record(id).is_some_and(|d| !is_final(d.status)) {
            return Ok(());
        }
        let request = cloud_request(id, origin, document)?;
        self.enqueue(request)
    }

    /// Queues a deployment like CreateLocalDeployment, but with these policies instead of a
    /// local deployment's ([`local_update_policy`], [`LOCAL_VALIDATION_TIMEOUT`]).
    pub fn create_with_policies(
        &self,
        request: CreateLocalDeploymentRequest,
        update_policy: ComponentUpdatePolicy,
        validation_timeout: Duration,
    ) -> Result<String, RequestError> {
        let request = Request { update_policy, validation_timeout, ..self.validate(request)? };
        let id = request.id.clone();
        self.enqueue(request)?;
        Ok(id)
    }

    /// The components that deferred deployment `id`, and for how long (empty until its
    /// notices are done).
    pub fn deferrals(&self, id: &str) -> Option<Vec<Deferral>> {
        let records = self.recorder.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().find(|r| r.id == id).map(|r| r.deferrals.clone())
    }

    /// Cancels deployment `id` if it has not started; true when it was cancelled.
    pub fn cancel_queued(&self, id: &str) -> bool {
        if self.record(id).is_some_and(|d| d.status == DeploymentStatus::Queued) {
            self.recorder.set(id, DeploymentStatus::Canceled, None);
            return true;
        }
        false
    }

    /// Records `request` as QUEUED and hands it to the runner.
    fn enqueue(&self, request: Request) -> Result<(), RequestError> {
        let id = request.id.clone();
        self.recorder.insert(Record {
            id: id.clone(),
            origin: request.origin.clone(),
            created_on: created_on_now(),
            status: DeploymentStatus::Queued,
            details: None,
            deferrals: Vec::new(),
            bytes_downloaded: None,
        });
        if self.queue.send(request).is_err() {
            let cause = "the core is shutting down";
            self.recorder.finish(&id, failure(DetailedDeploymentStatus::FailedNoStateChange, cause, &[]));
            return Err(RequestError::Closed);
        }
        tracing::info!(deployment = %id, "deployment queued");
        Ok(())
    }

    /// Waits until deployment `id` has finished (SUCCEEDED or FAILED), or `timeout` passes;
    /// returns its last known status.
    pub async fn wait_finished(&self, id: &str, timeout: Duration) -> Option<LocalDeployment> {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self.record(id);
            if now.as_ref().is_none_or(|d| is_final(d.status)) {
                return now;
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
                _ => return self.record(id),
            }
        }
    }

    fn validate(&self, request: CreateLocalDeploymentRequest) -> Result<Request, RequestError> {
        if request.component_to_run_with_info.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(RequestError::InvalidArguments(
                "componentToRunWithInfo is not supported by the simulated core: steps run as the core's user".into(),
            ));
        }
        let dir = |path: Option<String>, what: &str| -> Result<Option<PathBuf>, String> {
            match path.filter(|p| !p.is_empty()) {
                None => Ok(None),
                Some(p) if Path::new(&p).is_absolute() => Ok(Some(PathBuf::from(p))),
                Some(p) => Err(format!("{what} {p:?} must be an absolute path")),
            }
        };
        let recipe_dir =
            dir(request.recipe_directory_path, "recipeDirectoryPath").map_err(RequestError::InvalidRecipeDirectory)?;
        let artifact_dir = dir(request.artifacts_directory_path, "artifactsDirectoryPath")
            .map_err(RequestError::InvalidArtifactsDirectory)?;
        if let Some(a) = &artifact_dir
            && self.store_root.starts_with(a)
        {
            return Err(RequestError::InvalidArtifactsDirectory(
                "Requested artifacts directory path is parent of kernel artifacts directory path. Specify another \
                 path to avoid recursive copy"
                    .into(),
            ));
        }
        let configuration = match request.component_to_configuration {
            None => HashMap::new(),
            Some(map) => {
                let doc = Value::Object(map.into_iter().collect());
                parse_update_config(&doc)
                    .map_err(|e| RequestError::InvalidArguments(format!("componentToConfiguration: {e}")))?
            }
        };
        let add = request.root_component_versions_to_add.unwrap_or_default();
        for (name, version) in &add {
            RootRequirement::parse_merge(&format!("{name}={version}"))
                .map_err(|e| RequestError::InvalidArguments(format!("rootComponentVersionsToAdd: {e}")))?;
        }
        Ok(Request {
            id: new_uuid(),
            origin: Origin::Local,
            replace_roots: false,
            recipe_dir,
            artifact_dir,
            add,
            remove: request.root_components_to_remove.unwrap_or_default(),
            configuration,
            policy: request.failure_handling_policy.unwrap_or_default(),
            update_policy: local_update_policy(),
            validation_timeout: LOCAL_VALIDATION_TIMEOUT,
        })
    }
}

impl LocalDeploymentService for Deployments {
    fn create(&self, request: CreateLocalDeploymentRequest) -> Result<String, RequestError> {
        let request = self.validate(request)?;
        let id = request.id.clone();
        self.enqueue(request)?;
        Ok(id)
    }

    fn status(&self, deployment_id: &str) -> Option<LocalDeployment> {
        let records = self.recorder.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().find(|r| r.id == deployment_id && r.origin == Origin::Local).map(Record::to_model)
    }

    fn list(&self) -> Vec<LocalDeployment> {
        let records = self.recorder.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().filter(|r| r.origin == Origin::Local).map(Record::to_model).collect()
    }
}

/// The request a cloud deployment document makes: the group's roots replaced by the
/// document's components, their configuration updates, its failure handling policy.
fn cloud_request(id: &str, origin: Origin, document: &DeploymentDocument) -> Result<Request, RequestError> {
    let mut updates = serde_json::Map::new();
    for (name, component) in &document.components {
        RootRequirement::parse_merge(&format!("{name}={}", component.version))
            .map_err(|e| RequestError::InvalidArguments(format!("components: {e}")))?;
        if let Some(update) = &component.configuration_update {
            let mut u = serde_json::Map::new();
            if let Some(merge) = &update.merge {
                u.insert("MERGE".into(), Value::Object(merge.clone()));
            }
            if !update.reset.is_empty() {
                u.insert("RESET".into(), json!(update.reset));
            }
            updates.insert(name.clone(), Value::Object(u));
        }
    }
    let configuration = parse_update_config(&Value::Object(updates))
        .map_err(|e| RequestError::InvalidArguments(format!("configurationUpdate: {e}")))?;
    let policy = match document.failure_handling_policy {
        cloud_api::greengrass::deployment::FailureHandlingPolicy::Rollback => FailureHandlingPolicy::Rollback,
        cloud_api::greengrass::deployment::FailureHandlingPolicy::DoNothing => FailureHandlingPolicy::DoNothing,
    };
    Ok(Request {
        id: id.to_owned(),
        origin,
        recipe_dir: None,
        artifact_dir: None,
        replace_roots: true,
        add: document.components.iter().map(|(n, c)| (n.clone(), c.version.clone())).collect(),
        remove: Vec::new(),
        configuration,
        policy,
        update_policy: document.component_update_policy.clone(),
        validation_timeout: Duration::from_secs(
            u64::try_from(document.configuration_validation_policy.timeout).unwrap_or(0),
        ),
    })
}

/// True for SUCCEEDED, FAILED and CANCELED.
pub fn is_final(status: DeploymentStatus) -> bool {
    matches!(status, DeploymentStatus::Succeeded | DeploymentStatus::Failed | DeploymentStatus::Canceled)
}

fn new_uuid() -> String {
    // Version 4 (random) and the RFC 4122 variant, over 16 random bytes.
    let hex = super::random_token();
    let variant = ["8", "9", "a", "b"][usize::from(hex.as_bytes()[16] % 4)];
    format!("{}-{}-4{}-{}{}-{}", &hex[..8], &hex[8..12], &hex[13..16], variant, &hex[17..20], &hex[20..])
}

/// Now as the nucleus writes `createdOn`: UTC, `dd-MM-yyyy HH:mm:ss z`.
fn created_on_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:02}-{:02}-{:04} {:02}:{:02}:{:02} UTC",
        t.day(),
        u8::from(t.month()),
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn failure(detail: DetailedDeploymentStatus, cause: &str, stack: &[&str]) -> DeploymentStatusDetails {
    let mut error_stack = vec!["DEPLOYMENT_FAILURE".to_owned()];
    error_stack.extend(stack.iter().map(|s| (*s).to_owned()));
    DeploymentStatusDetails {
        detailed_deployment_status: detail,
        deployment_error_stack: Some(error_stack),
        deployment_error_types: None,
        deployment_failure_cause: Some(cause.to_owned()),
    }
}

/// A failure caused by a component of the deployment (one that went BROKEN): the nucleus adds the
/// error type of the component's owner, `USER_COMPONENT_ERROR` for every component not published
/// by AWS (`DeploymentErrorCodeUtils.classifyComponentError`; a local deployment's components
/// count as the user's too).
fn component_failure(detail: DetailedDeploymentStatus, cause: &str, stack: &[&str]) -> DeploymentStatusDetails {
    DeploymentStatusDetails {
        deployment_error_types: Some(vec!["USER_COMPONENT_ERROR".to_owned()]),
        ..failure(detail, cause, stack)
    }
}

fn success() -> DeploymentStatusDetails {
    DeploymentStatusDetails {
        detailed_deployment_status: DetailedDeploymentStatus::Successful,
        deployment_error_stack: None,
        deployment_error_types: None,
        deployment_failure_cause: None,
    }
}

/// Writes statuses and tells subscribers.
#[derive(Clone)]
struct Recorder {
    records: Arc<Mutex<Vec<Record>>>,
    events: broadcast::Sender<DeploymentEvent>,
    /// How each deployed component belongs (the fleet status service reports it).
    membership: Arc<Mutex<BTreeMap<String, Membership>>>,
}

impl Recorder {
    fn status(&self, id: &str) -> Option<DeploymentStatus> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.iter().find(|r| r.id == id).map(|r| r.status)
    }

    fn insert(&self, record: Record) {
        let event = DeploymentEvent { deployment: record.to_model(), origin: record.origin.clone() };
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.retain(|r| r.id != record.id);
        records.push(record);
        let finished = records.iter().filter(|r| is_final(r.status)).count();
        if finished > KEEP_FINISHED
            && let Some(i) = records.iter().position(|r| is_final(r.status))
        {
            records.remove(i);
        }
        drop(records);
        let _ = self.events.send(event);
    }

    fn set(&self, id: &str, status: DeploymentStatus, details: Option<DeploymentStatusDetails>) {
        let event = {
            let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
            let Some(r) = records.iter_mut().find(|r| r.id == id) else { return };
            r.status = status;
            r.details = details;
            DeploymentEvent { deployment: r.to_model(), origin: r.origin.clone() }
        };
        let _ = self.events.send(event);
    }

    fn set_observed(&self, id: &str, observed: Observed) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = records.iter_mut().find(|r| r.id == id) {
            r.deferrals = observed.deferrals;
            r.bytes_downloaded = observed.bytes_downloaded;
        }
    }

    fn finish(&self, id: &str, details: DeploymentStatusDetails) {
        let status = if details.detailed_deployment_status == DetailedDeploymentStatus::Successful {
            DeploymentStatus::Succeeded
        } else {
            DeploymentStatus::Failed
        };
        self.set(id, status, Some(details));
    }
}

async fn run(recorder: Recorder, ctx: Context, mut deployed: Deployed, mut rx: mpsc::UnboundedReceiver<Request>) {
    // Whether this core is a nucleus update on probation, or the one it was rolled back to.
    let mut activation = nucleus_update::Activation::at_start(&ctx.root);
    if activation != nucleus_update::Activation::Normal {
        tracing::info!(?activation, "the core starts within a nucleus update");
    }
    while let Some(request) = rx.recv().await {
        let Some(supervisor) = ctx.supervisor.upgrade() else { return };
        if recorder.status(&request.id) == Some(DeploymentStatus::Canceled) {
            continue;
        }
        recorder.set(&request.id, DeploymentStatus::InProgress, None);
        tracing::info!(deployment = %request.id, origin = ?request.origin, "deployment in progress");
        let wanted_nucleus = request.add.get(nucleus_update::NUCLEUS).cloned();
        let mut observed = Observed::default();
        let details = match (&activation, &wanted_nucleus) {
            // The deployment that brought a nucleus that did not come up: report it, once.
            (nucleus_update::Activation::RolledBack { broken_version }, Some(wanted)) if wanted == broken_version => {
                let cause = format!(
                    "{} {broken_version} did not come up healthy (it stopped, or did not prove itself before the \
                     launcher's deadline); the core went back to {}",
                    nucleus_update::NUCLEUS,
                    ctx.nucleus_version
                );
                if let Err(e) = nucleus_update::rollback_reported(&ctx.root) {
                    tracing::warn!("cannot clear the rolled-back nucleus: {e}");
                }
                activation = nucleus_update::Activation::Normal;
                Outcome::Finished(failure(
                    DetailedDeploymentStatus::FailedRollbackComplete,
                    &cause,
                    &["NUCLEUS_UPDATE", "NUCLEUS_ROLLBACK"],
                ))
            }
            _ => {
                // The deployment that brought this core, carried on by it on probation.
                let carrying_on = matches!(activation, nucleus_update::Activation::OnProbation { .. })
                    && wanted_nucleus.as_deref() == Some(ctx.nucleus_version.as_str());
                deploy(&ctx, &supervisor, &mut deployed, &request, carrying_on, &mut observed).await
            }
        };
        let details = match details {
            Outcome::Finished(details) => details,
            Outcome::Restarting => {
                // The deployment goes on in the new core: the cloud hands it over again.
                tracing::info!(deployment = %request.id, "restarting into the new nucleus");
                ctx.restart.request();
                return;
            }
        };
        recorder.set_observed(&request.id, observed);
        let proved = details.detailed_deployment_status == DetailedDeploymentStatus::Successful
            && wanted_nucleus.as_deref() == Some(ctx.nucleus_version.as_str());
        if proved && matches!(activation, nucleus_update::Activation::OnProbation { .. }) {
            match nucleus_update::activation_succeeded(&ctx.root) {
                Ok(()) => tracing::info!(version = %ctx.nucleus_version, "the new nucleus proved itself"),
                Err(e) => tracing::warn!("cannot end the nucleus's probation: {e}"),
            }
            activation = nucleus_update::Activation::Normal;
        }
        match &details.deployment_failure_cause {
            None => tracing::info!(deployment = %request.id, "deployment succeeded"),
            Some(cause) => tracing::warn!(deployment = %request.id, %cause, "deployment failed"),
        }
        *recorder.membership.lock().unwrap_or_else(|e| e.into_inner()) = deployed.membership();
        if let Err(e) = state::store(&ctx.root, &deployed.kept()) {
            tracing::warn!("cannot keep the deployed components for a restart: {e}");
        }
        recorder.finish(&request.id, details);
    }
}

/// What a deployment would run: specs, configurations to write, plan.
struct Prepared {
    /// Bytes of artifacts a cloud deployment downloaded.
    bytes_downloaded: Option<u64>,
    /// A new nucleus to restart into instead of applying the plan: its version and core binary.
    nucleus: Option<(String, PathBuf)>,
    deployed: Deployed,
    specs: Vec<ComponentSpec>,
    /// Configurations to write (components whose configuration is recomputed).
    configs: BTreeMap<String, Value>,
    /// Components that leave.
    removed: Vec<String>,
    plan: Plan,
}

/// A failure before anything changed: why, and the error code for the stack.
pub(crate) type Refusal = (String, &'static str);

/// How a deployment ended on this core.
enum Outcome {
    /// Done: its status details.
    Finished(DeploymentStatusDetails),
    /// A new nucleus is staged: the core restarts into it, which carries the deployment on.
    Restarting,
}

/// What a deployment's record keeps besides its status.
#[derive(Default)]
struct Observed {
    /// Who put the update off.
    deferrals: Vec<Deferral>,
    /// Bytes of artifacts a cloud deployment downloaded.
    bytes_downloaded: Option<u64>,
}

/// Runs one deployment to its end; `observed` gets who put it off and what it downloaded.
async fn deploy(
    ctx: &Context,
    supervisor: &Supervisor,
    deployed: &mut Deployed,
    request: &Request,
    carrying_on: bool,
    observed: &mut Observed,
) -> Outcome {
    let prepared = match fetch_and_prepare(ctx, supervisor, deployed, request).await {
        Ok(p) => {
            observed.bytes_downloaded = p.bytes_downloaded;
            p
        }
        Err((cause, code)) => {
            return Outcome::Finished(failure(DetailedDeploymentStatus::FailedNoStateChange, &cause, &[code]));
        }
    };
    // ---- component update gate: notices, deferral, validation (see `update_gate`) ----
    // The deployment that brought this core, carried on by it on probation, went through the gate
    // in the core before (the nucleus's KERNEL_ACTIVATION stage notifies and validates nothing).
    if carrying_on {
        tracing::info!(deployment = %request.id, "carrying on the nucleus update: no notices, no validation");
        return Outcome::Finished(apply_prepared(ctx, supervisor, deployed, request, prepared).await);
    }
    // As the nucleus: the notices name the Greengrass deployment (`DeploymentDocument`'s id), the
    // validation the deployment as the core took it (job id, configuration ARN, local id).
    let notice_id = request.origin.greengrass_deployment_id().unwrap_or(&request.id);
    let post_update = match request.update_policy.action {
        ComponentUpdateAction::NotifyComponents => {
            let timeout = Duration::from_secs(u64::try_from(request.update_policy.timeout).unwrap_or(0));
            let ggc_restarting = prepared.nucleus.is_some();
            observed.deferrals = ctx.gate.pre_update(notice_id, ggc_restarting, timeout).await;
            Some(PostUpdate(ctx.gate.as_ref(), notice_id))
        }
        ComponentUpdateAction::SkipNotifyComponents => None,
    };
    let proposed = configurations_to_validate(ctx, supervisor, &prepared);
    if let Err(rejected) = ctx.gate.validate(&request.id, proposed, request.validation_timeout).await {
        let (detail, cause) = (DetailedDeploymentStatus::FailedNoStateChange, rejected.to_string());
        return Outcome::Finished(failure(detail, &cause, &["COMPONENT_CONFIGURATION_NOT_VALID"]));
    }
    if prepared.nucleus.is_some() {
        // The core goes down into the new nucleus: no postUpdateEvent from this one.
        std::mem::forget(post_update);
    }
    // ---- end of the component update gate ----
    if let Some((version, binary)) = &prepared.nucleus {
        // The nucleus's bootstrap: the new core binary goes in place, the core restarts into it
        // and applies the deployment there; nothing running changes before.
        return match nucleus_update::stage(&ctx.root, version, binary) {
            Ok(()) => Outcome::Restarting,
            Err(e) => Outcome::Finished(failure(
                DetailedDeploymentStatus::FailedNoStateChange,
                &format!("cannot install {} {version}: {e}", nucleus_update::NUCLEUS),
                &["NUCLEUS_UPDATE"],
            )),
        };
    }
    Outcome::Finished(apply_prepared(ctx, supervisor, deployed, request, prepared).await)
}

/// Applies a prepared deployment: stop, configure, start, and roll back on failure.
async fn apply_prepared(
    ctx: &Context,
    supervisor: &Supervisor,
    deployed: &mut Deployed,
    request: &Request,
    prepared: Prepared,
) -> DeploymentStatusDetails {
    // The recipe store keeps the new recipes whatever happens, as the nucleus's does.
    deployed.catalog = prepared.deployed.catalog.clone();
    deployed.origins = prepared.deployed.origins.clone();
    let previous_specs = supervisor.components();
    let previous_configs: BTreeMap<String, Value> = previous_specs
        .iter()
        .map(|s| (s.name().to_owned(), ctx.config.get(s.name(), &[]).unwrap_or_else(|| json!({}))))
        .collect();
    tracing::info!(changes = ?prepared.plan.changes, "deployment plan");
    let outcome =
        apply(ctx, supervisor, &prepared.plan, prepared.specs.clone(), &prepared.configs, &prepared.removed).await;
    let cause = match outcome {
        Ok(()) => {
            let recipes = ctx.root.join("packages").join("recipes");
            if let Err(e) = store_recipes(&recipes, &prepared.deployed.resolution, &deployed.origins) {
                tracing::warn!("cannot keep a copy of the deployed recipes: {e}");
            }
            *deployed = prepared.deployed;
            return success();
        }
        Err(cause) => cause,
    };
    let stack = ["COMPONENT_UPDATE_ERROR", "COMPONENT_BROKEN"];
    if request.policy == FailureHandlingPolicy::DoNothing {
        *deployed = prepared.deployed;
        return component_failure(DetailedDeploymentStatus::FailedRollbackNotRequested, &cause, &stack);
    }
    // Roll back: the same steps towards the previous set.
    let current = facts(supervisor, &prepared.specs, &|n| ctx.config.get(n, &[]).unwrap_or_else(|| json!({})));
    let target = facts(supervisor, &previous_specs, &|n| previous_configs.get(n).cloned().unwrap_or_else(|| json!({})));
    let back = plan::plan(&current, &target, &broken_components(supervisor));
    let restore: BTreeMap<String, Value> = previous_configs
        .iter()
        .filter(|(n, _)| prepared.configs.contains_key(*n) || prepared.removed.contains(*n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let gone: Vec<String> =
        prepared.specs.iter().map(|s| s.name().to_owned()).filter(|n| !previous_configs.contains_key(n)).collect();
    match apply(ctx, supervisor, &back, previous_specs, &restore, &gone).await {
        Ok(()) => component_failure(
            DetailedDeploymentStatus::FailedRollbackComplete,
            &format!("{cause}; the previous components were restored"),
            &stack,
        ),
        Err(rollback) => component_failure(
            DetailedDeploymentStatus::FailedRollbackComplete,
            &format!("{cause}; the rollback did not complete either: {rollback}"),
            &["COMPONENT_UPDATE_ERROR", "ROLLBACK_FAILURE"],
        ),
    }
}

/// The groups after `request`: its group's roots changed (local) or replaced (cloud).
fn next_groups(deployed: &Deployed, request: &Request) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut groups = deployed.groups.clone();
    let group = request.origin.group();
    let roots = groups.entry(group.clone()).or_default();
    if request.replace_roots {
        roots.clear();
    }
    for name in &request.remove {
        roots.remove(name);
    }
    roots.extend(request.add.iter().map(|(n, v)| (n.clone(), v.clone())));
    if roots.is_empty() {
        groups.remove(&group);
    }
    groups
}

/// For a cloud deployment, resolves and downloads what it needs ([`cloud::fetch`]); then
/// [`prepare`]s it. Changes nothing that runs.
async fn fetch_and_prepare(
    ctx: &Context,
    supervisor: &Supervisor,
    deployed: &Deployed,
    request: &Request,
) -> Result<Prepared, Refusal> {
    let groups = next_groups(deployed, request);
    let fetched = match (&request.origin, &ctx.cloud) {
        (Origin::Local, _) => None,
        (_, None) => return Err(("the core has no cloud connection to fetch components".into(), "REQUEST_ERROR")),
        (_, Some(cloud)) => {
            let cloud_groups: BTreeSet<String> =
                groups.keys().filter(|g| *g != LOCAL_DEPLOYMENT_GROUP).cloned().collect();
            let running = supervisor.components().iter().map(|s| (s.name().to_owned(), s.version())).collect();
            let layout = super::layout::Layout::new(&ctx.root);
            let fetched = cloud::fetch(
                cloud,
                &layout,
                &ctx.platform,
                &groups,
                &cloud_groups,
                &running,
                &deployed.builtins,
                &ctx.nucleus_version,
            )
            .await?;
            tracing::info!(
                deployment = %request.id,
                components = fetched.recipes.len(),
                bytes = fetched.bytes_downloaded,
                kept = fetched.artifacts_kept,
                "components resolved and artifacts downloaded"
            );

            Some(fetched)
        }
    };
    prepare(ctx, supervisor, deployed, request, groups, fetched)
}

/// Sends postUpdateEvent when the deployment is done, however it ends (the nucleus sends it
/// after the update action whatever its outcome).
struct PostUpdate<'a>(&'a dyn ComponentUpdateGate, &'a str);

impl Drop for PostUpdate<'_> {
    fn drop(&mut self) {
        self.0.post_update(self.1);
    }
}

/// The configurations components are asked to validate: those that change for a component
/// that keeps its version (a new version validates nothing: it starts with its configuration,
/// as `DynamicComponentConfigurationValidator` decides).
fn configurations_to_validate(ctx: &Context, supervisor: &Supervisor, prepared: &Prepared) -> BTreeMap<String, Value> {
    let running: HashMap<String, String> =
        supervisor.components().iter().map(|s| (s.name().to_owned(), s.version())).collect();
    let same_version =
        |name: &str| prepared.specs.iter().any(|s| s.name() == name && running.get(name) == Some(&s.version()));
    prepared
        .configs
        .iter()
        .filter(|(name, value)| same_version(name) && ctx.config.get(name, &[]).as_ref() != Some(*value))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// Loads, resolves, configures, plans and stages; changes nothing that runs.
fn prepare(
    ctx: &Context,
    supervisor: &Supervisor,
    deployed: &Deployed,
    request: &Request,
    groups: BTreeMap<String, BTreeMap<String, String>>,
    fetched: Option<cloud::Fetched>,
) -> Result<Prepared, Refusal> {
    let mut next = deployed.clone();
    next.groups = groups;
    if let Some(arn) = request.origin.configuration_arn() {
        next.group_arns.insert(request.origin.group(), arn.to_owned());
    }
    next.group_arns.retain(|g, _| next.groups.contains_key(g));
    // The cloud's choices are pinned, so the local resolver picks the same versions.
    let mut pins = BTreeMap::new();
    let mut nucleus = None;
    let bytes_downloaded = fetched.as_ref().map(|f| f.bytes_downloaded);
    if let Some(fetched) = fetched {
        if let Some((version, binary)) = fetched.nucleus {
            // The set must resolve with the new nucleus before the core restarts into it.
            let parsed =
                crate::recipe::ComponentVersion::parse(&version).map_err(|e| (e.to_string(), "REQUEST_ERROR"))?;
            next.catalog.add_builtin(nucleus_update::NUCLEUS, parsed);
            nucleus = Some((version, binary));
        }
        for recipe in fetched.recipes {
            pins.insert(recipe.name.clone(), recipe.version.to_string());
            next.catalog.add(recipe);
        }
        next.origins.extend(fetched.origins);
    }
    if let Some(dir) = &request.recipe_dir {
        let (recipes, warnings, origins) =
            load_recipes(dir).map_err(|e| (error_chain(&e), "COMPONENT_RECIPE_ERROR"))?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        for recipe in recipes {
            next.catalog.add(recipe);
        }
        next.origins.extend(origins);
    }
    let mut roots = next.roots().map_err(|why| (why, "NO_AVAILABLE_COMPONENT_VERSION"))?;
    for (name, version) in pins {
        roots.entry(name).or_insert(version);
    }
    let roots = roots
        .iter()
        .map(|(n, v)| RootRequirement::parse_merge(&format!("{n}={v}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (error_chain(&e), "REQUEST_ERROR"))?;
    next.resolution =
        resolve(&next.catalog, &roots).map_err(|e| (error_chain(&e), "NO_AVAILABLE_COMPONENT_VERSION"))?;
    let specs = ComponentSpec::from_resolution(&next.catalog, &next.resolution, &ctx.platform)
        .map_err(|e| (error_chain(&e), "COMPONENT_RECIPE_ERROR"))?;
    for name in request.configuration.keys() {
        if name == SHADOW_MANAGER {
            let why = format!("the simulated core takes the {SHADOW_MANAGER} configuration only at start");
            return Err((why, "REQUEST_ERROR"));
        }
        if !specs.iter().any(|s| s.name() == name) {
            let why = format!("componentToConfiguration names {name}, which is not part of this deployment");
            return Err((why, "REQUEST_ERROR"));
        }
    }

    let current_specs = supervisor.components();
    let running: HashMap<&str, String> = current_specs.iter().map(|s| (s.name(), s.version())).collect();
    let mut configs = BTreeMap::new();
    for spec in &specs {
        let name = spec.name();
        let update = request.configuration.get(name);
        let same_version = running.get(name).is_some_and(|v| *v == spec.version());
        if same_version && update.is_none() {
            continue;
        }
        let previous = running.contains_key(name).then(|| deployed.configs.get(name)).flatten();
        let update = update.cloned().unwrap_or_default();
        let applied = EffectiveConfiguration::apply(previous, &spec.recipe.default_configuration, &update)
            .map_err(|e| (format!("{name}: {e}"), "REQUEST_ERROR"))?;
        for w in &applied.warnings {
            tracing::warn!(component = %name, "{w}");
        }
        configs.insert(name.to_owned(), applied.configuration.to_value());
        next.configs.insert(name.to_owned(), applied.configuration);
    }
    let removed: Vec<String> =
        current_specs.iter().map(|s| s.name().to_owned()).filter(|n| !specs.iter().any(|s| s.name() == n)).collect();
    for name in &removed {
        next.configs.remove(name);
    }

    let store = &ctx.config;
    let current = facts(supervisor, &current_specs, &|n| store.get(n, &[]).unwrap_or_else(|| json!({})));
    let target = facts(supervisor, &specs, &|n| {
        configs.get(n).cloned().or_else(|| store.get(n, &[])).unwrap_or_else(|| json!({}))
    });
    let plan = plan::plan(&current, &target, &broken_components(supervisor));

    for spec in specs.iter().filter(|s| plan.fresh.iter().any(|f| f == s.name())) {
        let source = artifact_source(request.artifact_dir.as_deref(), &ctx.root, spec);
        supervisor.stage(spec, &source).map_err(|e| (error_chain(&e), "ARTIFACT_CHECKSUM_MISMATCH"))?;
    }
    Ok(Prepared { bytes_downloaded, nucleus, deployed: next, specs, configs, removed, plan })
}

/// Where a component's artifacts are staged from: the deployment's directory when it holds
/// `{Name}/{Version}/`, else the core's own store (a version deployed before, e.g. on rollback).
fn artifact_source(deployment_dir: Option<&Path>, root: &Path, spec: &ComponentSpec) -> PathBuf {
    let store = root.join("packages").join("artifacts");
    match deployment_dir {
        Some(dir) if dir.join(spec.name()).join(spec.version()).is_dir() => dir.to_path_buf(),
        Some(dir) if !store.join(spec.name()).join(spec.version()).is_dir() => dir.to_path_buf(),
        _ => store,
    }
}

fn facts(
    supervisor: &Supervisor,
    specs: &[ComponentSpec],
    configuration: &dyn Fn(&str) -> Value,
) -> Vec<ComponentFacts> {
    let lifecycles = supervisor.expanded_lifecycles(specs, configuration);
    specs
        .iter()
        .map(|s| ComponentFacts {
            name: s.name().to_owned(),
            version: s.version(),
            dependencies: s.dependencies.clone(),
            lifecycle: lifecycles.get(s.name()).cloned().unwrap_or_default(),
            artifacts: s.manifest.artifacts.clone(),
        })
        .collect()
}

fn broken_components(supervisor: &Supervisor) -> BTreeSet<String> {
    supervisor.states().into_iter().filter(|(_, s)| *s == ComponentState::Broken).map(|(n, _)| n).collect()
}

/// Carries out a plan: stop, configure, swap, start, wait. `Err` says why it did not settle.
async fn apply(
    ctx: &Context,
    supervisor: &Supervisor,
    plan: &Plan,
    specs: Vec<ComponentSpec>,
    configs: &BTreeMap<String, Value>,
    removed: &[String],
) -> Result<(), String> {
    let pending = supervisor.stop_components(&plan.stop, STOP_TIMEOUT).await;
    if !pending.is_empty() {
        tracing::warn!(components = ?pending, "components did not stop in time");
    }
    for name in removed {
        ctx.config.remove_component(name);
        ctx.access.remove_component(name);
    }
    for (name, value) in configs {
        write_component(&ctx.config, &ctx.access, &ctx.thing, name, value);
    }
    let versions: HashMap<String, String> = specs.iter().map(|s| (s.name().to_owned(), s.version())).collect();
    let mut events = supervisor.subscribe();
    supervisor.reconfigure(specs, &plan.fresh).await;
    supervisor.start_components(&plan.start);
    // A restarted component is FINISHED until its Start is handled: it counts as settled only
    // once it has been seen on its way (a state change after the stop).
    let mut moving: BTreeSet<String> = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    // When everything got there, and until when it must stay there.
    let mut confirm_until: Option<tokio::time::Instant> = None;
    loop {
        loop {
            match events.try_recv() {
                Ok(e) => {
                    moving.insert(e.component);
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        let states = supervisor.states();
        let mut waiting = Vec::new();
        for name in &plan.start {
            match states.get(name) {
                Some(ComponentState::Broken) => {
                    let version = versions.get(name).cloned().unwrap_or_default();
                    return Err(format!(
                        "{name} {version} is BROKEN: it errored three times (Install, Startup or Run failed; see \
                         logs/{name}.log)"
                    ));
                }
                Some(ComponentState::Running | ComponentState::Finished) if moving.contains(name) => {}
                Some(s) => waiting.push(format!("{name} ({s:?})")),
                None => return Err(format!("{name} is not part of the core after the update")),
            }
        }
        if waiting.is_empty() {
            // The nucleus checks its started services once a second: one that fails within its
            // first second is caught failing, not counted as running.
            let until = *confirm_until.get_or_insert_with(|| tokio::time::Instant::now() + SETTLE_CHECK);
            match tokio::time::timeout_at(until, events.recv()).await {
                Ok(Ok(e)) => {
                    if plan.start.contains(&e.component)
                        && matches!(e.new, ComponentState::Errored | ComponentState::Broken)
                    {
                        confirm_until = None;
                    }
                    moving.insert(e.component);
                }
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => confirm_until = None,
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err("the core is shutting down".into()),
                Err(_) => return Ok(()),
            }
            continue;
        }
        confirm_until = None;
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) => {
                moving.insert(e.component);
            }
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => return Err("the core is shutting down".into()),
            Err(_) => {
                return Err(format!("not RUNNING after {}s: {}", SETTLE_TIMEOUT.as_secs(), waiting.join(", ")));
            }
        }
    }
}

/// An error and its sources, one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::services::is_uuid;

    #[test]
    fn ids_are_uuids_and_only_uuids_pass_the_check() {
        let id = new_uuid();
        assert!(is_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4", "version 4");
        assert_ne!(new_uuid(), id);
        for bad in ["", "1234", "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "12345678-1234-1234-1234-1234567890123"] {
            assert!(!is_uuid(bad), "{bad}");
        }
    }

    #[test]
    fn cloud_deployments_take_their_update_policies_and_local_ones_the_nucleus_defaults() {
        let document = DeploymentDocument::parse(
            br#"{"deploymentId": "d", "configurationArn": "arn:aws:greengrass:us-east-1:1:configuration:thinggroup/g:1",
                "creationTimestamp": 1, "components": {"com.example.A": {"version": "1.0.0"}},
                "componentUpdatePolicy": {"timeout": 45, "action": "NOTIFY_COMPONENTS"},
                "configurationValidationPolicy": {"timeout": 15}}"#,
        )
        .unwrap();
        let request = cloud_request("d", Origin::Local, &document).unwrap();
        assert_eq!(request.update_policy.action, ComponentUpdateAction::NotifyComponents);
        assert_eq!(request.update_policy.timeout, 45);
        assert_eq!(request.validation_timeout, Duration::from_secs(15));
        assert_eq!(local_update_policy().action, ComponentUpdateAction::SkipNotifyComponents);
        assert_eq!(LOCAL_VALIDATION_TIMEOUT, Duration::from_secs(20));
    }

    #[test]
    fn created_on_has_the_nucleus_format() {
        let text = created_on_now();
        let re = regex::Regex::new(r"^\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2} UTC$").unwrap();
        assert!(re.is_match(&text), "{text}");
    }
}
