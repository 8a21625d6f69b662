//! Greengrass deployments and core devices: CreateDeployment and friends, and
//! what the cores report back.
//!
//! A deployment has one target, a core thing or a thing group; a new
//! deployment for a target replaces the previous one (its revision becomes
//! INACTIVE, its job is cancelled). How it reaches the cores is AWS's:
//! - a **thing group** gets a continuous IoT job in the `aws-gg-deployment`
//!   namespace whose document is the deployment document, so a core that
//!   joins the group later gets it too;
//! - a **thing** gets the document as `fleetConfig` in the desired state of
//!   its `AWSManagedGreengrassV2Deployment` shadow.
//!
//! Cores answer through job execution updates, the shadow's reported state and
//! fleet status messages; [`cloud_api::greengrass::CoreDevice`] turns those into
//! what `GetCoreDevice`, `ListInstalledComponents` and `ListEffectiveDeployments`
//! answer. Nothing there comes from what was asked, only from what a core said.
//!
//! Deployment status: ACTIVE while it is the latest for its target; INACTIVE
//! once replaced; CANCELED after CancelDeployment. A thing deployment becomes
//! COMPLETED or FAILED when its core reports the outcome (a group deployment
//! stays ACTIVE: its job is continuous).
//!
//! This service reaches Jobs and the component store only through the two
//! traits below, which the composition root implements.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cloud_api::greengrass::deployment::{ComponentDeploymentSpecification, DeploymentPolicies};
use cloud_api::greengrass::fleet_status::{self, OverallStatus};
use cloud_api::greengrass::{
    CoreDevice, CreateDeploymentRequest, DEPLOYMENT_SHADOW_NAME, DeploymentDocument, DeploymentTarget, EffectiveStatus,
    ExecutionStatus, FleetStatus, JobStatusDetails, ReportOutcome, ShadowDeploymentDesired, ShadowDeploymentReported,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::components::ComponentCatalog;
use super::error::GreengrassError;
use crate::registry::Registry;
use crate::shadows::{ShadowChange, ShadowService};
use crate::store::{Op, Store};
use crate::time::SharedClock;

const K_DEPLOYMENT: &str = "gg_deployment";
const K_CORE: &str = "gg_core_device";
const K_REVISION: &str = "gg_revision";

/// What deployments need from IoT Jobs.
pub trait DeploymentJobs: Send + Sync {
    /// Creates a continuous job in the `aws-gg-deployment` namespace that
    /// targets `group_arn` with `document`, configured by `iot_job_configuration`
    /// (`jobExecutionsRolloutConfig`, `abortConfig`, `timeoutConfig`). Returns the job ARN.
    fn create_deployment_job(
        &self,
        job_id: &str,
        group_arn: &str,
        document: Map<String, Value>,
        iot_job_configuration: &Map<String, Value>,
    ) -> Result<String, String>;

    /// Cancels the job: queued executions are cancelled, those in progress are left to finish.
    fn cancel_job(&self, job_id: &str) -> Result<(), String>;
}

fn internal(e: impl std::fmt::Display) -> GreengrassError {
    GreengrassError::Internal(format!("internal failure: {e}"))
}

fn deployment_not_found(id: &str) -> GreengrassError {
    GreengrassError::not_found(format!("Deployment {id} was not found."), id, "deployment")
}

fn core_not_found(thing: &str) -> GreengrassError {
    GreengrassError::not_found(format!("Core device {thing} was not found."), thing, "coreDevice")
}

fn conflict(id: &str, message: String) -> GreengrassError {
    GreengrassError::Conflict { message, resource_id: id.to_owned(), resource_type: "deployment".to_owned() }
}

/// `DeploymentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    /// The latest for its target.
    Active,
    /// A thing deployment its core applied.
    Completed,
    /// Cancelled.
    Canceled,
    /// A thing deployment its core failed or rejected.
    Failed,
    /// Replaced by a later revision.
    Inactive,
}

impl DeploymentStatus {
    /// AWS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Active => "ACTIVE",
            DeploymentStatus::Completed => "COMPLETED",
            DeploymentStatus::Canceled => "CANCELED",
            DeploymentStatus::Failed => "FAILED",
            DeploymentStatus::Inactive => "INACTIVE",
        }
    }
}

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Id (a UUID).
    pub deployment_id: String,
    /// Name.
    pub deployment_name: Option<String>,
    /// Target ARN.
    pub target_arn: String,
    /// Target.
    pub target: DeploymentTarget,
    /// Revision for the target, from 1.
    pub revision: u64,
    /// Status.
    pub status: DeploymentStatus,
    /// Whether it is the latest for its target: derived from the target's revision counter when
    /// read, never stored.
    #[serde(skip)]
    pub is_latest_for_target: bool,
    /// The job of a thing-group deployment.
    pub iot_job_id: Option<String>,
    /// Its ARN.
    pub iot_job_arn: Option<String>,
    /// Components as requested.
    pub components: BTreeMap<String, ComponentDeploymentSpecification>,
    /// Policies as requested.
    pub deployment_policies: Option<DeploymentPolicies>,
    /// Job configuration as requested.
    pub iot_job_configuration: Option<Map<String, Value>>,
    /// Parent group of a sub-deployment.
    pub parent_target_arn: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Epoch ms.
    pub creation_ms: i64,
    /// The configuration ARN in its document.
    pub configuration_arn: String,
    /// The idempotency token it was created with.
    pub client_token: Option<String>,
}

/// A core's effective deployment joined with the deployment it is about.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveDeployment {
    /// The core's status of it.
    pub status: EffectiveStatus,
    /// The target it was made for.
    pub target_arn: String,
    /// The deployment, unless it was deleted since.
    pub deployment: Option<Deployment>,
}

/// What CreateDeployment answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The deployment id.
    pub deployment_id: String,
    /// The job, for a thing-group target.
    pub iot_job_id: Option<String>,
    /// Its ARN.
    pub iot_job_arn: Option<String>,
}

#[derive(Default)]
struct State {
    deployments: BTreeMap<String, Deployment>,
    cores: BTreeMap<String, CoreDevice>,
    revisions: BTreeMap<String, u64>,
}

impl State {
    /// `d` as answers show it, with `is_latest_for_target` derived.
    fn view(&self, d: &Deployment) -> Deployment {
        Deployment { is_latest_for_target: self.revisions.get(&d.target_arn) == Some(&d.revision), ..d.clone() }
    }

    fn by_job(&self, job_id: &str) -> Option<&Deployment> {
        self.deployments.values().find(|d| d.iot_job_id.as_deref() == Some(job_id))
    }

    fn by_configuration(&self, arn: &str) -> Option<&Deployment> {
        self.deployments.values().find(|d| d.configuration_arn == arn)
    }
}

/// The deployment service.
#[derive(Clone)]
pub struct Deployments {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Deployments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployments").finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    registry: Arc<Registry>,
    shadows: ShadowService,
    jobs: Arc<dyn DeploymentJobs>,
    catalog: Arc<dyn ComponentCatalog>,
    clock: SharedClock,
    region: String,
    account: String,
    state: Mutex<State>,
}

/// Where the service lives and what it talks to.
pub struct DeploymentsConfig {
    /// Durable state.
    pub store: Store,
    /// Things and groups (targets, group membership).
    pub registry: Arc<Registry>,
    /// Shadows (thing deployments).
    pub shadows: ShadowService,
    /// Jobs (thing-group deployments).
    pub jobs: Arc<dyn DeploymentJobs>,
    /// Component versions.
    pub catalog: Arc<dyn ComponentCatalog>,
    /// Time.
    pub clock: SharedClock,
    /// Region in ARNs.
    pub region: String,
    /// Account in ARNs.
    pub account: String,
}

impl Deployments {
    /// Opens the service, loading deployments and core devices from the store.
    pub fn open(config: DeploymentsConfig) -> Result<Self, GreengrassError> {
        let mut state = State::default();
        for (key, value) in config.store.all(K_DEPLOYMENT).map_err(internal)? {
            let d: Deployment = serde_json::from_str(&value).map_err(internal)?;
            state.deployments.insert(key, d);
        }
        for (key, value) in config.store.all(K_CORE).map_err(internal)? {
            state.cores.insert(key, serde_json::from_str(&value).map_err(internal)?);
        }
        for (key, value) in config.store.all(K_REVISION).map_err(internal)? {
            state.revisions.insert(key, value.parse().map_err(internal)?);
        }
        let inner = Inner {
            store: config.store,
            registry: config.registry,
            shadows: config.shadows,
            jobs: config.jobs,
            catalog: config.catalog,
            clock: config.clock,
            region: config.region,
            account: config.account,
            state: Mutex::new(state),
        };
        Ok(Deployments { inner: Arc::new(inner) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now_millis() as i64
    }

    /// CreateDeployment.
    pub fn create(&self, request: CreateDeploymentRequest) -> Result<Created, GreengrassError> {
        let target =
            DeploymentTarget::parse_arn(&request.target_arn).map_err(|m| GreengrassError::field("targetArn", m))?;
        let mut state = self.state();
        if let Some(token) = &request.client_token
            && let Some(d) = state.deployments.values().find(|d| d.client_token.as_ref() == Some(token))
        {
            if d.target_arn != request.target_arn {
                return Err(conflict(&d.deployment_id, format!("clientToken {token} was used for another request")));
            }
            return Ok(Created {
                deployment_id: d.deployment_id.clone(),
                iot_job_id: d.iot_job_id.clone(),
                iot_job_arn: d.iot_job_arn.clone(),
            });
        }
        let found = match &target {
            DeploymentTarget::Thing(name) => self.inner.registry.describe_thing(name).map(|_| ()),
            DeploymentTarget::ThingGroup(name) => self.inner.registry.describe_thing_group(name).map(|_| ()),
        };
        if found.is_err() {
            return Err(GreengrassError::not_found(
                format!("The target {} does not exist.", request.target_arn),
                &request.target_arn,
                "target",
            ));
        }
        for (name, spec) in &request.components {
            let version = &spec.component_version;
            let id = format!("{name}:{version}");
            match self.inner.catalog.component_version(name, version) {
                None => {
                    return Err(GreengrassError::not_found(
                        format!("Component {name} version {version} does not exist."),
                        &id,
                        "componentVersion",
                    ));
                }
                Some(entry) if !entry.record.is_deployable() => {
                    return Err(GreengrassError::field(
                        &format!("components.{name}.componentVersion"),
                        format!(
                            "Component {name} version {version} is not deployable: {}",
                            entry.record.status.message
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        let target_arn = target.arn(&self.inner.region, &self.inner.account);
        let revision = state.revisions.get(&target_arn).copied().unwrap_or(0) + 1;
        let configuration_arn = target.configuration_arn(&self.inner.region, &self.inner.account, revision);
        let deployment_id = uuid::Uuid::new_v4().to_string();
        let now = self.now_ms();
        let document = DeploymentDocument::build(&request, &deployment_id, &configuration_arn, now)
            .map_err(|e| GreengrassError::field(&e.field, e.message))?;

        // Send it before recording it: a refused job leaves nothing behind.
        let (iot_job_id, iot_job_arn) = match &target {
            DeploymentTarget::ThingGroup(_) => {
                let job_id = uuid::Uuid::new_v4().to_string();
                let config = request.iot_job_configuration.clone().unwrap_or_default();
                let arn = self
                    .inner
                    .jobs
                    .create_deployment_job(&job_id, &target_arn, document.to_json_object(), &config)
                    .map_err(|m| GreengrassError::field("iotJobConfiguration", m))?;
                (Some(job_id), Some(arn))
            }
            DeploymentTarget::Thing(thing) => {
                let desired = ShadowDeploymentDesired::active(&document);
                self.write_deployment_shadow(thing, serde_json::to_value(&desired).map_err(internal)?)?;
                (None, None)
            }
        };

        let mut ops = Vec::new();
        // The revision this one replaces, if it is still active.
        let replaced = state
            .deployments
            .values_mut()
            .find(|d| d.target_arn == target_arn && d.revision == revision - 1 && d.status == DeploymentStatus::Active);
        if let Some(d) = replaced {
            d.status = DeploymentStatus::Inactive;
            if let Some(job) = &d.iot_job_id
                && let Err(e) = self.inner.jobs.cancel_job(job)
            {
                tracing::warn!(job, error = %e, "cancelling the job of a replaced deployment");
            }
            ops.push(put(K_DEPLOYMENT, &d.deployment_id.clone(), d)?);
        }
        let deployment = Deployment {
            deployment_id: deployment_id.clone(),
            deployment_name: request.deployment_name.clone(),
            target_arn: target_arn.clone(),
            target: target.clone(),
            revision,
            status: DeploymentStatus::Active,
            is_latest_for_target: false,
            iot_job_id: iot_job_id.clone(),
            iot_job_arn: iot_job_arn.clone(),
            components: request.components.clone(),
            deployment_policies: request.deployment_policies.clone(),
            iot_job_configuration: request.iot_job_configuration.clone(),
            parent_target_arn: request.parent_target_arn.clone(),
            tags: request.tags.clone(),
            creation_ms: now,
            configuration_arn,
            client_token: request.client_token.clone(),
        };
        ops.push(put(K_DEPLOYMENT, &deployment_id, &deployment)?);
        ops.push(Op::Put { kind: K_REVISION, key: target_arn.clone(), value: revision.to_string() });
        if let DeploymentTarget::Thing(thing) = &target {
            let core = state.cores.entry(thing.clone()).or_insert_with(|| CoreDevice::new(thing));
            core.record_deployment(
                &target_arn,
                &deployment_id,
                revision,
                ExecutionStatus::Queued,
                &JobStatusDetails::default(),
                now,
            );
            ops.push(put(K_CORE, thing, core)?);
        }
        self.inner.store.apply(&ops).map_err(internal)?;
        state.deployments.insert(deployment_id.clone(), deployment);
        state.revisions.insert(target_arn, revision);
        Ok(Created { deployment_id, iot_job_id, iot_job_arn })
    }

    fn write_deployment_shadow(&self, thing: &str, desired: Value) -> Result<(), GreengrassError> {
        let body = json!({"state": {"desired": desired}});
        self.inner
            .shadows
            .update(thing, Some(DEPLOYMENT_SHADOW_NAME), body.to_string().as_bytes())
            .map(|_| ())
            .map_err(|e| internal(format!("writing the deployment shadow of {thing}: {}", e.message)))
    }

    /// GetDeployment.
    pub fn get(&self, deployment_id: &str) -> Result<Deployment, GreengrassError> {
        let state = self.state();
        state.deployments.get(deployment_id).map(|d| state.view(d)).ok_or_else(|| deployment_not_found(deployment_id))
    }

    /// ListDeployments, oldest first: filtered by target and parent; with
    /// `latest_only` (the default `historyFilter`) only each target's latest.
    pub fn list(
        &self,
        target_arn: Option<&str>,
        parent_target_arn: Option<&str>,
        latest_only: bool,
    ) -> Vec<Deployment> {
        let state = self.state();
        let mut list: Vec<Deployment> = state
            .deployments
            .values()
            .filter(|d| target_arn.is_none_or(|t| d.target_arn == t))
            .filter(|d| parent_target_arn.is_none_or(|p| d.parent_target_arn.as_deref() == Some(p)))
            .map(|d| state.view(d))
            .filter(|d| !latest_only || d.is_latest_for_target)
            .collect();
        list.sort_by(|a, b| (a.creation_ms, &a.deployment_id).cmp(&(b.creation_ms, &b.deployment_id)));
        list
    }

    /// CancelDeployment: cores that have not received it will not; those that did keep it.
    pub fn cancel(&self, deployment_id: &str) -> Result<(), GreengrassError> {
        let mut state = self.state();
        let d = state.deployments.get(deployment_id).ok_or_else(|| deployment_not_found(deployment_id))?;
        if d.status != DeploymentStatus::Active {
            return Err(conflict(
                deployment_id,
                format!("Deployment {deployment_id} is {}, not ACTIVE: there is nothing to cancel.", d.status.as_str()),
            ));
        }
        match (&d.target, &d.iot_job_id) {
            (_, Some(job)) => self.inner.jobs.cancel_job(job).map_err(internal)?,
            (DeploymentTarget::Thing(thing), None) => {
                let document = self.inner.shadows.get(thing, Some(DEPLOYMENT_SHADOW_NAME)).ok();
                let fleet_config = document
                    .as_ref()
                    .and_then(|doc| doc.pointer("/state/desired/fleetConfig"))
                    .cloned()
                    .unwrap_or(Value::Null);
                self.write_deployment_shadow(thing, json!({"fleetConfig": fleet_config, "desiredStatus": "CANCELED"}))?;
            }
            (DeploymentTarget::ThingGroup(_), None) => {}
        }
        let Some(d) = state.deployments.get_mut(deployment_id) else { return Err(deployment_not_found(deployment_id)) };
        d.status = DeploymentStatus::Canceled;
        let op = put(K_DEPLOYMENT, deployment_id, d)?;
        self.inner.store.apply(&[op]).map_err(internal)
    }

    /// DeleteDeployment: only a deployment that is no longer active.
    pub fn delete(&self, deployment_id: &str) -> Result<(), GreengrassError> {
        let mut state = self.state();
        let d = state.deployments.get(deployment_id).ok_or_else(|| deployment_not_found(deployment_id))?;
        if d.status == DeploymentStatus::Active {
            return Err(conflict(
                deployment_id,
                format!("Deployment {deployment_id} is ACTIVE: cancel it before deleting it."),
            ));
        }
        self.inner
            .store
            .apply(&[Op::Delete { kind: K_DEPLOYMENT, key: deployment_id.to_owned() }])
            .map_err(internal)?;
        state.deployments.remove(deployment_id);
        Ok(())
    }

    /// GetCoreDevice: a core that has reported its status at least once.
    pub fn core_device(&self, thing: &str) -> Result<CoreDevice, GreengrassError> {
        self.state().cores.get(thing).filter(|c| c.has_reported()).cloned().ok_or_else(|| core_not_found(thing))
    }

    /// ListCoreDevices in thing-name order, optionally only members of a group
    /// (and its child groups) and only those with a status.
    pub fn core_devices(
        &self,
        thing_group: Option<&str>,
        status: Option<OverallStatus>,
    ) -> Result<Vec<CoreDevice>, GreengrassError> {
        let members = match thing_group {
            None => None,
            Some(group) => Some(self.inner.registry.things_in_thing_group(group, true).map_err(|_| {
                GreengrassError::not_found(format!("Thing group {group} does not exist."), group, "thingGroup")
            })?),
        };
        Ok(self
            .state()
            .cores
            .values()
            .filter(|c| c.has_reported())
            .filter(|c| members.as_ref().is_none_or(|m| m.contains(&c.thing_name)))
            .filter(|c| status.is_none_or(|s| c.status == Some(s)))
            .cloned()
            .collect())
    }

    /// ListEffectiveDeployments: each target's deployment on this core.
    pub fn effective_deployments(&self, thing: &str) -> Result<Vec<EffectiveDeployment>, GreengrassError> {
        let state = self.state();
        let core = state.cores.get(thing).filter(|c| c.has_reported()).ok_or_else(|| core_not_found(thing))?;
        Ok(core
            .effective
            .iter()
            .map(|(target, status)| EffectiveDeployment {
                status: status.clone(),
                target_arn: target.clone(),
                deployment: state.deployments.get(&status.deployment_id).cloned(),
            })
            .collect())
    }

    /// A fleet status message a core published on `topic`.
    pub fn on_fleet_status(&self, topic: &str, payload: &[u8]) {
        let Some(thing) = fleet_status::thing_of_topic(topic) else { return };
        let report = match FleetStatus::parse(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(thing, error = %e, "ignoring a malformed fleet status message");
                return;
            }
        };
        let now = self.now_ms();
        let mut state = self.state();
        let core = state.cores.entry(thing.to_owned()).or_insert_with(|| CoreDevice::new(thing));
        match core.apply_report(&report, now) {
            ReportOutcome::Applied => {}
            ReportOutcome::Stale => return,
            ReportOutcome::WrongThing(other) => {
                tracing::warn!(thing, payload_thing = %other, "ignoring fleet status naming another thing");
                return;
            }
        }
        self.save_core(core);
    }

    /// A job execution of `thing` changed (thing-group deployments).
    pub fn on_job_execution(&self, thing: &str, job_id: &str, status: &str, details: &BTreeMap<String, String>) {
        let Some(status) = ExecutionStatus::from_job_status(status) else { return };
        let now = self.now_ms();
        let mut state = self.state();
        let Some(d) = state.by_job(job_id) else { return };
        let (target, id, revision) = (d.target_arn.clone(), d.deployment_id.clone(), d.revision);
        let core = state.cores.entry(thing.to_owned()).or_insert_with(|| CoreDevice::new(thing));
        if core.record_deployment(&target, &id, revision, status, &JobStatusDetails::from_map(details), now) {
            self.save_core(core);
        }
    }

    /// A shadow changed: for a core's deployment shadow, its reported status.
    pub fn on_shadow_change(&self, change: &ShadowChange) {
        if change.shadow_name.as_deref() != Some(DEPLOYMENT_SHADOW_NAME) {
            return;
        }
        let Some(reported) = change.current.pointer("/state/reported") else { return };
        let Ok(reported) = serde_json::from_value::<ShadowDeploymentReported>(reported.clone()) else {
            tracing::warn!(thing = %change.thing_name, "ignoring a deployment shadow report of the wrong shape");
            return;
        };
        let Some(status) = ExecutionStatus::from_job_status(&reported.status) else { return };
        let now = self.now_ms();
        let thing = change.thing_name.as_str();
        let mut state = self.state();
        let Some(d) = state.by_configuration(&reported.fleet_configuration_arn_for_status) else { return };
        let (target, id, revision) = (d.target_arn.clone(), d.deployment_id.clone(), d.revision);
        let details = JobStatusDetails::from(&reported.status_details);
        let core = state.cores.entry(thing.to_owned()).or_insert_with(|| CoreDevice::new(thing));
        if !core.record_deployment(&target, &id, revision, status, &details, now) {
            return;
        }
        self.save_core(core);
        let Some(d) = state.deployments.get_mut(&id) else { return };
        if d.status == DeploymentStatus::Active {
            let next = match status {
                ExecutionStatus::Succeeded | ExecutionStatus::Completed => Some(DeploymentStatus::Completed),
                ExecutionStatus::Failed | ExecutionStatus::Rejected | ExecutionStatus::TimedOut => {
                    Some(DeploymentStatus::Failed)
                }
                _ => None,
            };
            if let Some(next) = next {
                d.status = next;
                if let Ok(op) = put(K_DEPLOYMENT, &id, d)
                    && let Err(e) = self.inner.store.apply(&[op])
                {
                    tracing::error!(error = %e, "saving a deployment's status");
                }
            }
        }
    }

    fn save_core(&self, core: &CoreDevice) {
        let saved = put(K_CORE, &core.thing_name, core).and_then(|op| self.inner.store.apply(&[op]).map_err(internal));
        if let Err(e) = saved {
            tracing::error!(thing = %core.thing_name, error = %e, "saving a core device");
        }
    }
}

/// Something a core said, however it reached the cloud.
#[derive(Debug, Clone)]
pub enum CoreEvent {
    /// A fleet status message on `topic`.
    FleetStatus {
        /// The topic (names the thing).
        topic: String,
        /// The message.
        payload: bytes::Bytes,
    },
    /// A job execution changed (thing-group deployments).
    JobExecution {
        /// The core thing.
        thing: String,
        /// The job.
        job_id: String,
        /// The execution's status (`IN_PROGRESS`, `SUCCEEDED`, …).
        status: String,
        /// Its status details.
        details: BTreeMap<String, String>,
    },
    /// A shadow was updated (thing deployments report through theirs).
    Shadow(ShadowChange),
}

impl Deployments {
    /// Applies one [`CoreEvent`]. Blocking (SQLite).
    pub fn apply(&self, event: CoreEvent) {
        match event {
            CoreEvent::FleetStatus { topic, payload } => self.on_fleet_status(&topic, &payload),
            CoreEvent::JobExecution { thing, job_id, status, details } => {
                self.on_job_execution(&thing, &job_id, &status, &details)
            }
            CoreEvent::Shadow(change) => self.on_shadow_change(&change),
        }
    }
}

/// Takes fleet status messages off the broker (they still reach subscribers).
#[derive(Debug, Clone)]
pub struct FleetStatusListener {
    events: tokio::sync::mpsc::UnboundedSender<CoreEvent>,
}

impl FleetStatusListener {
    /// A listener that queues what it hears on `events`.
    pub fn new(events: tokio::sync::mpsc::UnboundedSender<CoreEvent>) -> Self {
        FleetStatusListener { events }
    }
}

impl crate::bus::ServiceHandler for FleetStatusListener {
    fn wants(&self, topic: &str) -> bool {
        fleet_status::thing_of_topic(topic).is_some()
    }

    fn handle(&self, _from: &crate::bus::Publisher, topic: &str, payload: bytes::Bytes) {
        let _ = self.events.send(CoreEvent::FleetStatus { topic: topic.to_owned(), payload });
    }
}

fn put<T: Serialize>(kind: &'static str, key: &str, value: &T) -> Result<Op, GreengrassError> {
    Ok(Op::Put { kind, key: key.to_owned(), value: serde_json::to_string(value).map_err(internal)? })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cloud_api::greengrass::fleet_status::OverallStatus;
    use serde_json::json;

    use super::*;
    use crate::bus::Bus;
    use crate::ca::LocalCa;

    /// A job the fake was asked for: id, group ARN, document, job configuration.
    type CreatedJob = (String, String, Map<String, Value>, Map<String, Value>);

    #[derive(Default)]
    struct FakeJobs {
        created: Mutex<Vec<CreatedJob>>,
        cancelled: Mutex<Vec<String>>,
    }

    impl DeploymentJobs for FakeJobs {
        fn create_deployment_job(
            &self,
            job_id: &str,
            group_arn: &str,
            document: Map<String, Value>,
            config: &Map<String, Value>,
        ) -> Result<String, String> {
            if config.contains_key("refuse") {
                return Err("refused".into());
            }
            self.created.lock().unwrap().push((job_id.into(), group_arn.into(), document, config.clone()));
            Ok(format!("arn:aws:iot:us-east-1:000000000000:job/{job_id}"))
        }

        fn cancel_job(&self, job_id: &str) -> Result<(), String> {
            self.cancelled.lock().unwrap().push(job_id.into());
            Ok(())
        }
    }

    /// An S3 with no objects: the test components have no artifacts.
    #[derive(Debug)]
    struct NoObjects;

    impl crate::s3::ObjectStore for NoObjects {
        fn head(&self, _: &str, _: &str) -> Result<Option<crate::s3::ObjectMeta>, crate::s3::ObjectStoreError> {
            Ok(None)
        }

        fn presign_get(&self, _: &str, _: &str, _: std::time::Duration) -> Result<String, crate::s3::ObjectStoreError> {
            unreachable!("no artifacts")
        }

        fn get(&self, _: &str, _: &str) -> Result<Vec<u8>, crate::s3::ObjectStoreError> {
            unreachable!("no artifacts")
        }
    }

    /// The real component store with `com.example.pump.Sensor` 1.0.0 and 1.1.0 and
    /// `com.example.a` 1.0.0, all deployable.
    fn catalog(store: &Store) -> Arc<dyn ComponentCatalog> {
        let loader = greengrass_recipe::RecipeLoader::without_schema("unit test");
        let components = super::super::components::Components::open(
            store.clone(),
            Arc::new(NoObjects),
            loader,
            crate::time::system(),
            "us-east-1",
            "000000000000",
        )
        .unwrap();
        for (name, version) in
            [("com.example.pump.Sensor", "1.0.0"), ("com.example.pump.Sensor", "1.1.0"), ("com.example.a", "1.0.0")]
        {
            let recipe = json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": name, "ComponentVersion": version,
                "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "true"}}]});
            if components.component_version(name, version).is_none() {
                components.create(recipe.to_string().as_bytes(), BTreeMap::new(), None).unwrap();
            }
        }
        Arc::new(components)
    }

    struct Fixture {
        service: Deployments,
        jobs: Arc<FakeJobs>,
        shadows: ShadowService,
        registry: Arc<Registry>,
        store: Store,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca = Arc::new(LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
            let store = Store::open(&dir.path().join("state.sqlite")).unwrap();
            let registry = Arc::new(
                Registry::open(store.clone(), ca, crate::time::system(), "us-east-1", "000000000000").unwrap(),
            );
            let (bus, _rx) = Bus::channel();
            let shadows = ShadowService::new(store.clone(), bus, crate::time::system());
            for thing in ["core-1", "core-2"] {
                registry.create_thing(thing, None, BTreeMap::new()).unwrap();
            }
            registry.create_thing_group("pumps", None, None, BTreeMap::new()).unwrap();
            registry.add_thing_to_thing_group("pumps", "core-1").unwrap();
            let jobs = Arc::new(FakeJobs::default());
            let service = Self::open(&store, &registry, &shadows, &jobs);
            Fixture { service, jobs, shadows, registry, store, _dir: dir }
        }

        fn open(store: &Store, registry: &Arc<Registry>, shadows: &ShadowService, jobs: &Arc<FakeJobs>) -> Deployments {
            Deployments::open(DeploymentsConfig {
                store: store.clone(),
                registry: registry.clone(),
                shadows: shadows.clone(),
                jobs: jobs.clone(),
                catalog: catalog(store),
                clock: crate::time::system(),
                region: "us-east-1".into(),
                account: "000000000000".into(),
            })
            .unwrap()
        }

        fn reopen(&self) -> Deployments {
            Self::open(&self.store, &self.registry, &self.shadows, &self.jobs)
        }
    }

    const GROUP: &str = "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps";
    const THING: &str = "arn:aws:iot:us-east-1:000000000000:thing/core-2";

    fn request(target: &str, version: &str) -> CreateDeploymentRequest {
        serde_json::from_value(json!({
            "targetArn": target,
            "deploymentName": "pumps",
            "components": {"com.example.pump.Sensor": {"componentVersion": version,
                "configurationUpdate": {"merge": "{\"pollMs\":250}"}}},
            "iotJobConfiguration": {"timeoutConfig": {"inProgressTimeoutInMinutes": 30}}
        }))
        .unwrap()
    }

    fn fleet_status(thing: &str, seq: u64, trigger: &str, deployment: Option<&str>) -> Vec<u8> {
        let mut body = json!({
            "ggcVersion": "2.14.0", "platform": "linux", "architecture": "amd64", "thing": thing,
            "overallDeviceStatus": "HEALTHY", "sequenceNumber": seq, "timestamp": 1000 + seq,
            "messageType": "PARTIAL", "trigger": trigger,
            "components": [{"componentName": "com.example.pump.Sensor", "version": "1.1.0",
                "status": "RUNNING", "isRoot": true, "fleetConfigArns": ["thinggroup/pumps"]}]
        });
        if let Some(id) = deployment {
            body["deploymentInformation"] = json!({"status": "SUCCEEDED", "deploymentId": id});
        }
        serde_json::to_vec(&body).unwrap()
    }

    #[test]
    fn a_group_deployment_becomes_a_namespaced_job_and_a_new_one_replaces_it() {
        let f = Fixture::new();
        let first = f.service.create(request(GROUP, "1.0.0")).unwrap();
        let job = first.iot_job_id.clone().unwrap();
        {
            let created = f.jobs.created.lock().unwrap();
            let (job_id, target, document, config) = &created[0];
            assert_eq!((job_id, target.as_str()), (&job, GROUP));
            assert_eq!(document["deploymentId"], first.deployment_id.as_str());
            assert_eq!(
                document["configurationArn"],
                "arn:aws:greengrass:us-east-1:000000000000:configuration:thinggroup/pumps:1"
            );
            assert_eq!(
                document["components"]["com.example.pump.Sensor"]["configurationUpdate"]["merge"]["pollMs"],
                250
            );
            assert_eq!(config["timeoutConfig"]["inProgressTimeoutInMinutes"], 30);
        }
        let second = f.service.create(request(GROUP, "1.1.0")).unwrap();
        assert_eq!(*f.jobs.cancelled.lock().unwrap(), vec![job.clone()], "the replaced revision's job is cancelled");
        let old = f.service.get(&first.deployment_id).unwrap();
        assert_eq!((old.status, old.is_latest_for_target, old.revision), (DeploymentStatus::Inactive, false, 1));
        let new = f.service.get(&second.deployment_id).unwrap();
        assert_eq!((new.status, new.is_latest_for_target, new.revision), (DeploymentStatus::Active, true, 2));
        let latest: Vec<String> =
            f.service.list(Some(GROUP), None, true).into_iter().map(|d| d.deployment_id).collect();
        assert_eq!(latest, vec![second.deployment_id.clone()]);
        assert_eq!(f.service.list(None, None, false).len(), 2);
    }

    #[test]
    fn job_executions_become_the_cores_effective_deployment() {
        let f = Fixture::new();
        let first = f.service.create(request(GROUP, "1.0.0")).unwrap();
        let second = f.service.create(request(GROUP, "1.1.0")).unwrap();
        assert!(matches!(f.service.effective_deployments("core-1"), Err(GreengrassError::NotFound { .. })));
        f.service.on_fleet_status(
            "$aws/things/core-1/greengrassv2/health/json",
            &fleet_status("core-1", 1, "NUCLEUS_LAUNCH", None),
        );
        let job2 = second.iot_job_id.clone().unwrap();
        let details: BTreeMap<String, String> = [
            ("detailed-deployment-status".to_owned(), "FAILED_ROLLBACK_COMPLETE".to_owned()),
            ("deployment-failure-cause".to_owned(), "Sensor 1.1.0 broke".to_owned()),
        ]
        .into();
        f.service.on_job_execution("core-1", &job2, "FAILED", &details);
        f.service.on_job_execution("core-1", first.iot_job_id.as_deref().unwrap(), "SUCCEEDED", &BTreeMap::new());
        f.service.on_job_execution("core-1", "some-other-job", "SUCCEEDED", &BTreeMap::new());
        let effective = f.service.effective_deployments("core-1").unwrap();
        assert_eq!(effective.len(), 1);
        let e = &effective[0];
        assert_eq!(e.status.deployment_id, second.deployment_id, "late news of revision 1 changes nothing");
        assert_eq!(e.status.status, ExecutionStatus::Failed);
        assert_eq!(e.status.reason.as_deref(), Some("Sensor 1.1.0 broke"));
        assert_eq!(e.deployment.as_ref().unwrap().iot_job_id.as_deref(), Some(job2.as_str()));
    }

    #[test]
    fn a_thing_deployment_rides_the_deployment_shadow_and_completes_on_the_cores_report() {
        let f = Fixture::new();
        let mut changes = f.shadows.changes();
        let created = f.service.create(request(THING, "1.0.0")).unwrap();
        assert_eq!(created.iot_job_id, None);
        let doc = f.shadows.get("core-2", Some(DEPLOYMENT_SHADOW_NAME)).unwrap();
        assert_eq!(doc["state"]["desired"]["desiredStatus"], "ACTIVE");
        let fleet_config: Value =
            serde_json::from_str(doc["state"]["desired"]["fleetConfig"].as_str().unwrap()).unwrap();
        assert_eq!(fleet_config["deploymentId"], created.deployment_id.as_str());
        let arn = fleet_config["configurationArn"].as_str().unwrap().to_owned();
        assert_eq!(arn, "arn:aws:greengrass:us-east-1:000000000000:configuration:thing/core-2:1");

        let report = json!({"state": {"reported": {"fleetConfigurationArnForStatus": arn, "status": "SUCCEEDED",
            "statusDetails": {"detailedStatus": "SUCCESSFUL", "failureCause": "", "errorStack": [], "errorTypes": []},
            "ggcVersion": "2.14.0"}}});
        f.shadows.update("core-2", Some(DEPLOYMENT_SHADOW_NAME), report.to_string().as_bytes()).unwrap();
        while let Ok(change) = changes.try_recv() {
            f.service.on_shadow_change(&change);
        }
        assert_eq!(f.service.get(&created.deployment_id).unwrap().status, DeploymentStatus::Completed);
        f.service.on_fleet_status(
            "$aws/things/core-2/greengrassv2/health/json",
            &fleet_status("core-2", 1, "THING_DEPLOYMENT", Some(&created.deployment_id)),
        );
        let effective = f.service.effective_deployments("core-2").unwrap();
        assert_eq!(effective[0].status.status, ExecutionStatus::Succeeded);
        let core = f.service.core_device("core-2").unwrap();
        assert_eq!(
            core.components["com.example.pump.Sensor"].last_installation_source.as_deref(),
            Some(created.deployment_id.as_str())
        );
    }

    #[test]
    fn cancelling_a_thing_deployment_sets_the_shadow_to_canceled_and_only_inactive_ones_delete() {
        let f = Fixture::new();
        let created = f.service.create(request(THING, "1.0.0")).unwrap();
        let conflict = f.service.delete(&created.deployment_id).unwrap_err();
        assert!(matches!(conflict, GreengrassError::Conflict { .. }), "{conflict:?}");
        f.service.cancel(&created.deployment_id).unwrap();
        let doc = f.shadows.get("core-2", Some(DEPLOYMENT_SHADOW_NAME)).unwrap();
        assert_eq!(doc["state"]["desired"]["desiredStatus"], "CANCELED");
        assert!(doc["state"]["desired"]["fleetConfig"].is_string(), "the document stays for the core to match");
        assert!(matches!(f.service.cancel(&created.deployment_id), Err(GreengrassError::Conflict { .. })));
        f.service.delete(&created.deployment_id).unwrap();
        assert!(matches!(f.service.get(&created.deployment_id), Err(GreengrassError::NotFound { .. })));
        let group = f.service.create(request(GROUP, "1.0.0")).unwrap();
        f.service.cancel(&group.deployment_id).unwrap();
        assert_eq!(*f.jobs.cancelled.lock().unwrap(), vec![group.iot_job_id.unwrap()]);
    }

    #[test]
    fn bad_requests_are_refused_and_leave_nothing_behind() {
        let f = Fixture::new();
        let cases: Vec<(CreateDeploymentRequest, &str)> = vec![
            (request("arn:aws:iot:us-east-1:000000000000:thinggroup/nope", "1.0.0"), "not found"),
            (request("arn:aws:iot:us-east-1:000000000000:thing/nope", "1.0.0"), "not found"),
            (request(GROUP, "9.9.9"), "not found"),
            (request("not an arn", "1.0.0"), "targetArn"),
            (
                serde_json::from_value(json!({"targetArn": GROUP, "components": {"com.example.a":
                    {"componentVersion": "1.0.0", "configurationUpdate": {"merge": "[1]"}}}}))
                .unwrap(),
                "components.com.example.a.configurationUpdate.merge",
            ),
            (
                serde_json::from_value(json!({"targetArn": GROUP, "iotJobConfiguration": {"refuse": true}})).unwrap(),
                "iotJobConfiguration",
            ),
        ];
        for (req, want) in cases {
            let err = f.service.create(req.clone()).expect_err(&req.target_arn);
            match (&err, want) {
                (GreengrassError::NotFound { .. }, "not found") => {}
                (GreengrassError::Validation { fields, .. }, want) if fields[0].0 == want => {}
                _ => panic!("{req:?}: {err:?}, wanted {want}"),
            }
        }
        assert!(f.service.list(None, None, false).is_empty());
        assert!(f.jobs.created.lock().unwrap().is_empty());
        assert!(matches!(f.service.get("nope"), Err(GreengrassError::NotFound { .. })));
        assert!(matches!(f.service.cancel("nope"), Err(GreengrassError::NotFound { .. })));
        // A retried request with the same client token is the same deployment.
        let mut req = request(GROUP, "1.0.0");
        req.client_token = Some("once".into());
        let a = f.service.create(req.clone()).unwrap();
        assert_eq!(f.service.create(req.clone()).unwrap(), a);
        req.target_arn = THING.into();
        assert!(matches!(f.service.create(req), Err(GreengrassError::Conflict { .. })));
    }

    #[test]
    fn core_devices_come_only_from_reports_and_filter_by_group_and_status() {
        let f = Fixture::new();
        f.service.create(request(GROUP, "1.0.0")).unwrap();
        assert!(matches!(f.service.core_device("core-1"), Err(GreengrassError::NotFound { .. })));
        assert!(f.service.core_devices(None, None).unwrap().is_empty(), "asking is not reporting");
        f.service.on_fleet_status(
            "$aws/things/core-1/greengrassv2/health/json",
            &fleet_status("core-1", 1, "NUCLEUS_LAUNCH", None),
        );
        f.service.on_fleet_status(
            "$aws/things/core-2/greengrassv2/health/json",
            &fleet_status("core-2", 1, "NUCLEUS_LAUNCH", None),
        );
        f.service.on_fleet_status("$aws/things/core-2/greengrassv2/health/json", b"{not json");
        f.service.on_fleet_status(
            "$aws/things/core-1/greengrassv2/health/json",
            &fleet_status("core-2", 9, "CADENCE", None),
        );
        let core = f.service.core_device("core-1").unwrap();
        assert_eq!((core.core_version.as_str(), core.status), ("2.14.0", Some(OverallStatus::Healthy)));
        let names = |list: Vec<CoreDevice>| list.into_iter().map(|c| c.thing_name).collect::<Vec<_>>();
        assert_eq!(names(f.service.core_devices(None, None).unwrap()), vec!["core-1", "core-2"]);
        assert_eq!(names(f.service.core_devices(Some("pumps"), None).unwrap()), vec!["core-1"]);
        assert!(f.service.core_devices(None, Some(OverallStatus::Unhealthy)).unwrap().is_empty());
        assert!(matches!(f.service.core_devices(Some("nope"), None), Err(GreengrassError::NotFound { .. })));
    }

    #[test]
    fn the_listener_takes_fleet_status_topics_only_and_events_apply_in_order() {
        use crate::bus::{Publisher, ServiceHandler};
        let f = Fixture::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let listener = FleetStatusListener::new(tx);
        assert!(listener.wants("$aws/things/core-1/greengrassv2/health/json"));
        assert!(!listener.wants("$aws/things/core-1/greengrass/health/json"));
        assert!(!listener.wants("$aws/things/core-1/shadow/update"));
        let from = Publisher { client_id: "core-1".into(), certificate_id: "c".into() };
        for seq in [1, 2] {
            let payload = fleet_status("core-1", seq, "CADENCE", None);
            listener.handle(&from, "$aws/things/core-1/greengrassv2/health/json", payload.into());
        }
        while let Ok(event) = rx.try_recv() {
            f.service.apply(event);
        }
        let core = f.service.core_device("core-1").unwrap();
        assert_eq!(core.components.len(), 1);
    }

    #[test]
    fn deployments_and_core_devices_survive_a_restart() {
        let f = Fixture::new();
        let a = f.service.create(request(GROUP, "1.0.0")).unwrap();
        f.service.on_fleet_status(
            "$aws/things/core-1/greengrassv2/health/json",
            &fleet_status("core-1", 1, "NUCLEUS_LAUNCH", None),
        );
        f.service.on_job_execution("core-1", a.iot_job_id.as_deref().unwrap(), "IN_PROGRESS", &BTreeMap::new());
        let reopened = f.reopen();
        assert_eq!(reopened.get(&a.deployment_id).unwrap(), f.service.get(&a.deployment_id).unwrap());
        assert_eq!(reopened.core_device("core-1").unwrap(), f.service.core_device("core-1").unwrap());
        let b = reopened.create(request(GROUP, "1.1.0")).unwrap();
        assert_eq!(reopened.get(&b.deployment_id).unwrap().revision, 2, "revisions go on counting");
    }
}
