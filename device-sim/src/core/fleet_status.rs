//! The fleet status service: what the core tells the cloud about itself and its
//! components, on `$aws/things/{thing}/greengrassv2/health/json` at QoS 1, so
//! the cloud's GetCoreDevice, ListInstalledComponents and
//! ListEffectiveDeployments show the truth.
//!
//! Follows the nucleus's `FleetStatusService` (aws-greengrass-nucleus,
//! `status/`): the first message after the core connects is a complete
//! `NUCLEUS_LAUNCH`; later connections send a partial `RECONNECT` with what
//! changed while offline; a component going ERRORED, or BROKEN or every
//! component settling while no deployment runs, sends a partial
//! `COMPONENT_STATUS_CHANGE`; a finished deployment sends a partial with its
//! trigger (`LOCAL_DEPLOYMENT`, `THING_DEPLOYMENT`, `THING_GROUP_DEPLOYMENT`) and
//! `deploymentInformation` (for a cloud deployment: its configuration ARN, deployment id and
//! status details); a complete
//! `CADENCE` goes out every `periodicUpdateIntervalSec` (default one day). The
//! core is `UNHEALTHY` while a component is BROKEN. The sequence number
//! survives restarts (`{root}/work/FleetStatusService/sequenceNumber`).
//!
//! [`Reporter`] decides, with no I/O; [`run`] feeds it the core's events and
//! publishes through the IoT Core bridge. Differences from the nucleus: no
//! chunking (a message is split only past 128 KB, which a handful of components
//! never reach), no `statusCodes` (the supervisor does not classify failures
//! yet). Components carry the groups that hold them: the configuration ARN of each cloud
//! deployment, `LOCAL_DEPLOYMENT` for what a local deployment brought.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloud_api::greengrass::JobStatusDetails;
use cloud_api::greengrass::deployment::ShadowStatusDetails;
use cloud_api::greengrass::fleet_status::{
    self, ComponentDetails, ComponentStatusDetails, DeploymentInformation, FleetStatus, OverallStatus, Trigger,
};
use cloud_api::ipc::model::{DeploymentStatus, LocalDeployment, Qos};
use tokio::sync::{broadcast, watch};

use super::ComponentState;
use super::deployment::{DeploymentEvent, Origin};
use super::services::IotCoreBridge;
use super::supervisor::StateEvent;

/// The service's name (its work directory).
pub const SERVICE_NAME: &str = "FleetStatusService";
/// Default `periodicUpdateIntervalSec`.
pub const DEFAULT_CADENCE: Duration = Duration::from_secs(86_400);
pub use super::deployment::LOCAL_DEPLOYMENT_GROUP;

/// A component as the core sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Name.
    pub name: String,
    /// Running version.
    pub version: String,
    /// Lifecycle state.
    pub state: ComponentState,
    /// Deployed as a root component.
    pub is_root: bool,
    /// Provided by the core itself (the nucleus): reported with every group and never as a root.
    pub builtin: bool,
    /// Groups whose deployments hold it.
    pub groups: Vec<String>,
    /// Why it is ERRORED or BROKEN, when known.
    pub status_reason: Option<String>,
}

/// Decides when the core reports and what it says. No I/O.
#[derive(Debug, Clone)]
pub struct Reporter {
    thing: String,
    ggc_version: String,
    platform: String,
    architecture: String,
    sequence: u64,
    launched: bool,
    changed: BTreeSet<String>,
    deployment_in_progress: bool,
}

impl Reporter {
    /// A reporter for `thing` whose next message has sequence number `next_sequence`.
    pub fn new(thing: &str, ggc_version: &str, platform: &str, architecture: &str, next_sequence: u64) -> Self {
        Reporter {
            thing: thing.to_owned(),
            ggc_version: ggc_version.to_owned(),
            platform: platform.to_owned(),
            architecture: architecture.to_owned(),
            sequence: next_sequence,
            launched: false,
            changed: BTreeSet::new(),
            deployment_in_progress: false,
        }
    }

    /// The sequence number the next message will carry.
    pub fn next_sequence(&self) -> u64 {
        self.sequence
    }

    /// The core connected to IoT Core.
    pub fn connected(&self) -> Trigger {
        if self.launched { Trigger::Reconnect } else { Trigger::NucleusLaunch }
    }

    /// A component changed state; `all_settled` when every component is RUNNING,
    /// FINISHED or BROKEN. Returns the trigger to publish now, if any.
    pub fn state_changed(&mut self, component: &str, new: ComponentState, all_settled: bool) -> Option<Trigger> {
        self.changed.insert(component.to_owned());
        match new {
            ComponentState::Errored => Some(Trigger::ComponentStatusChange),
            _ if self.deployment_in_progress => None,
            ComponentState::Broken => Some(Trigger::ComponentStatusChange),
            _ if all_settled => Some(Trigger::ComponentStatusChange),
            _ => None,
        }
    }

    /// A deployment started: status changes wait for its outcome.
    pub fn deployment_started(&mut self) {
        self.deployment_in_progress = true;
    }

    /// A deployment finished; its report follows.
    pub fn deployment_finished(&mut self) {
        self.deployment_in_progress = false;
    }

    /// The message for `trigger`, or `None` when there is nothing to say: before
    /// the launch message nothing else goes out, and a status change or
    /// reconnect with no changed component is not sent.
    pub fn message(
        &mut self,
        trigger: Trigger,
        snapshot: &[Snapshot],
        deployment: Option<DeploymentInformation>,
        now_ms: i64,
    ) -> Option<FleetStatus> {
        if !self.launched && trigger != Trigger::NucleusLaunch {
            return None;
        }
        let complete = trigger.message_type() == fleet_status::MessageType::Complete;
        let included: Vec<&Snapshot> = snapshot.iter().filter(|c| complete || self.changed.contains(&c.name)).collect();
        if included.is_empty() && matches!(trigger, Trigger::ComponentStatusChange | Trigger::Reconnect) {
            return None;
        }
        let all_groups: BTreeSet<&String> = snapshot.iter().filter(|c| !c.builtin).flat_map(|c| &c.groups).collect();
        let components = included
            .iter()
            .map(|c| ComponentDetails {
                component_name: c.name.clone(),
                version: c.version.clone(),
                fleet_config_arns: if c.builtin {
                    all_groups.iter().map(|g| (*g).clone()).collect()
                } else {
                    c.groups.clone()
                },
                component_status_details: matches!(c.state, ComponentState::Errored | ComponentState::Broken).then(
                    || ComponentStatusDetails { status_codes: Vec::new(), status_reason: c.status_reason.clone() },
                ),
                is_root: c.is_root && !c.builtin,
                status: c.state.as_str().to_owned(),
            })
            .collect();
        let deployment = deployment.map(|mut info| {
            info.unchanged_root_components = snapshot
                .iter()
                .filter(|c| c.is_root && !c.builtin && !self.changed.contains(&c.name))
                .map(|c| c.name.clone())
                .collect();
            info
        });
        let unhealthy = snapshot.iter().any(|c| c.state == ComponentState::Broken);
        let message = FleetStatus {
            ggc_version: self.ggc_version.clone(),
            platform: self.platform.clone(),
            architecture: self.architecture.clone(),
            thing: self.thing.clone(),
            overall_device_status: if unhealthy { OverallStatus::Unhealthy } else { OverallStatus::Healthy },
            sequence_number: self.sequence,
            timestamp: now_ms,
            message_type: trigger.message_type(),
            trigger,
            chunk_info: None,
            components,
            deployment_information: deployment,
        };
        self.sequence += 1;
        self.launched = true;
        self.changed.clear();
        Some(message)
    }
}

/// Whether every component has settled (the nucleus's "all services in terminal state").
pub fn all_settled(snapshot: &[Snapshot]) -> bool {
    snapshot
        .iter()
        .all(|c| matches!(c.state, ComponentState::Running | ComponentState::Finished | ComponentState::Broken))
}

/// What a finished deployment reports, and with which trigger.
pub fn deployment_information(event: &DeploymentEvent) -> (Trigger, DeploymentInformation) {
    let mut info = local_deployment_information(&event.deployment);
    let trigger = match &event.origin {
        Origin::Local => return (Trigger::LocalDeployment, info),
        Origin::ThingGroup { .. } => Trigger::ThingGroupDeployment,
        Origin::Thing { .. } => Trigger::ThingDeployment,
    };
    let (Origin::ThingGroup { configuration_arn, deployment_id } | Origin::Thing { configuration_arn, deployment_id }) =
        &event.origin
    else {
        unreachable!("local deployments returned above")
    };
    info.fleet_configuration_arn_for_status = Some(configuration_arn.clone());
    info.deployment_id = Some(deployment_id.clone());
    info.status_details = event
        .deployment
        .deployment_status_details
        .as_ref()
        .map(|d| ShadowStatusDetails::from(&JobStatusDetails::from(d)));
    (trigger, info)
}

/// What a finished local deployment reports.
pub fn local_deployment_information(deployment: &LocalDeployment) -> DeploymentInformation {
    let status = match deployment.status {
        DeploymentStatus::Succeeded => "SUCCEEDED",
        DeploymentStatus::Failed => "FAILED",
        DeploymentStatus::Canceled => "CANCELED",
        DeploymentStatus::Queued | DeploymentStatus::InProgress => "IN_PROGRESS",
    };
    DeploymentInformation {
        status: status.to_owned(),
        status_details: None,
        fleet_configuration_arn_for_status: None,
        deployment_id: Some(deployment.deployment_id.clone()),
        unchanged_root_components: Vec::new(),
    }
}

/// Where the sequence number is kept.
pub fn sequence_file(root: &Path) -> PathBuf {
    root.join("work").join(SERVICE_NAME).join("sequenceNumber")
}

/// The next sequence number kept under `root` (0 when none was kept or it is unreadable).
pub fn load_sequence(root: &Path) -> u64 {
    std::fs::read_to_string(sequence_file(root)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn store_sequence(root: &Path, next: u64) -> std::io::Result<()> {
    super::layout::write_durably(&sequence_file(root), next.to_string().as_bytes())
}

/// The core's current components, as [`Snapshot`]s.
pub type SnapshotSource = Arc<dyn Fn() -> Vec<Snapshot> + Send + Sync>;

/// What [`run`] listens to.
pub struct Inputs {
    /// The bridge's connection state.
    pub connection: watch::Receiver<bool>,
    /// Component state changes.
    pub states: broadcast::Receiver<StateEvent>,
    /// Local deployment status changes.
    pub deployments: broadcast::Receiver<DeploymentEvent>,
}

/// Runs the service until the inputs close: reports through `bridge`, keeps
/// the sequence number under `root`.
pub async fn run(
    mut reporter: Reporter,
    bridge: Arc<dyn IotCoreBridge>,
    mut inputs: Inputs,
    snapshot: SnapshotSource,
    cadence: Duration,
    root: PathBuf,
) {
    let topic = fleet_status::topic(&reporter.thing);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + cadence, cadence);
    // A connection that is already up counts as the launch.
    let mut pending = inputs.connection.borrow_and_update().then(|| reporter.connected());
    loop {
        if let Some(trigger) = pending.take() {
            publish(&mut reporter, &*bridge, &topic, trigger, &snapshot(), None, &root).await;
        }
        tokio::select! {
            changed = inputs.connection.changed() => {
                if changed.is_err() {
                    return;
                }
                if *inputs.connection.borrow_and_update() {
                    pending = Some(reporter.connected());
                }
            }
            event = inputs.states.recv() => match event {
                Ok(event) => {
                    let now = snapshot();
                    pending = reporter.state_changed(&event.component, event.new, all_settled(&now));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => pending = Some(Trigger::ComponentStatusChange),
                Err(broadcast::error::RecvError::Closed) => return,
            },
            deployment = inputs.deployments.recv() => match deployment {
                Ok(d) if d.deployment.status == DeploymentStatus::InProgress => reporter.deployment_started(),
                Ok(d) if matches!(d.deployment.status, DeploymentStatus::Succeeded | DeploymentStatus::Failed) => {
                    reporter.deployment_finished();
                    let (trigger, info) = deployment_information(&d);
                    publish(&mut reporter, &*bridge, &topic, trigger, &snapshot(), Some(info), &root).await;
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => pending = Some(Trigger::Cadence),
        }
    }
}

async fn publish(
    reporter: &mut Reporter,
    bridge: &dyn IotCoreBridge,
    topic: &str,
    trigger: Trigger,
    snapshot: &[Snapshot],
    deployment: Option<DeploymentInformation>,
    root: &Path,
) {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
    let Some(message) = reporter.message(trigger, snapshot, deployment, now) else { return };
    if let Err(e) = store_sequence(root, reporter.next_sequence()) {
        tracing::warn!(error = %e, "keeping the fleet status sequence number");
    }
    let payload = match serde_json::to_vec(&message) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "encoding fleet status");
            return;
        }
    };
    match bridge.publish(topic, Qos::AtLeastOnce, payload, false).await {
        Ok(()) => tracing::debug!(?trigger, sequence = message.sequence_number, "fleet status published"),
        Err(e) => tracing::warn!(?trigger, error = %e, "fleet status not published"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(name: &str, state: ComponentState, root: bool) -> Snapshot {
        Snapshot {
            name: name.into(),
            version: "1.0.0".into(),
            state,
            is_root: root,
            builtin: false,
            groups: vec![LOCAL_DEPLOYMENT_GROUP.into()],
            status_reason: None,
        }
    }

    fn nucleus() -> Snapshot {
        Snapshot {
            name: "aws.greengrass.Nucleus".into(),
            version: "2.14.0".into(),
            state: ComponentState::Running,
            is_root: false,
            builtin: true,
            groups: Vec::new(),
            status_reason: None,
        }
    }

    fn reporter() -> Reporter {
        Reporter::new("core-1", "2.14.0", "linux", "amd64", 7)
    }

    #[test]
    fn the_first_message_is_a_complete_launch_and_nothing_goes_out_before_it() {
        let mut r = reporter();
        let snapshot = [nucleus(), component("a", ComponentState::Running, true)];
        assert_eq!(r.state_changed("a", ComponentState::Running, true), Some(Trigger::ComponentStatusChange));
        assert_eq!(r.message(Trigger::ComponentStatusChange, &snapshot, None, 1), None, "not before the launch");
        assert_eq!(r.connected(), Trigger::NucleusLaunch);
        let m = r.message(Trigger::NucleusLaunch, &snapshot, None, 2).unwrap();
        assert_eq!((m.sequence_number, m.components.len()), (7, 2));
        assert_eq!(m.message_type, fleet_status::MessageType::Complete);
        let n = &m.components[0];
        assert!(!n.is_root, "the nucleus is never a root");
        assert_eq!(n.fleet_config_arns, vec![LOCAL_DEPLOYMENT_GROUP], "the nucleus carries every group");
        assert_eq!(r.next_sequence(), 8);
        assert_eq!(r.connected(), Trigger::Reconnect);
        assert_eq!(r.message(Trigger::Reconnect, &snapshot, None, 3), None, "nothing changed while away");
    }

    #[test]
    fn status_changes_follow_the_nucleus_rules() {
        let mut r = reporter();
        let mut snapshot =
            vec![component("a", ComponentState::Running, true), component("b", ComponentState::Starting, true)];
        r.message(Trigger::NucleusLaunch, &snapshot, None, 1).unwrap();
        assert_eq!(r.state_changed("b", ComponentState::Starting, false), None, "still settling");
        assert_eq!(r.state_changed("a", ComponentState::Errored, false), Some(Trigger::ComponentStatusChange));
        snapshot[0].state = ComponentState::Errored;
        snapshot[0].status_reason = Some("exit 3".into());
        let m = r.message(Trigger::ComponentStatusChange, &snapshot, None, 2).unwrap();
        assert_eq!(m.components.iter().map(|c| c.component_name.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(m.components[0].component_status_details.as_ref().unwrap().status_reason.as_deref(), Some("exit 3"));
        assert!(m.components[1].component_status_details.is_none());
        assert_eq!(m.overall_device_status, OverallStatus::Healthy, "ERRORED is not yet unhealthy");

        r.deployment_started();
        assert_eq!(r.state_changed("a", ComponentState::Broken, true), None, "a deployment's outcome reports it");
        r.deployment_finished();
        assert_eq!(r.state_changed("a", ComponentState::Broken, true), Some(Trigger::ComponentStatusChange));
        snapshot[0].state = ComponentState::Broken;
        let m = r.message(Trigger::ComponentStatusChange, &snapshot, None, 3).unwrap();
        assert_eq!(m.overall_device_status, OverallStatus::Unhealthy);
        assert_eq!(m.components[0].status, "BROKEN");
    }

    #[test]
    fn a_deployment_report_names_its_deployment_and_the_roots_it_left_alone() {
        let mut r = reporter();
        let snapshot = [component("a", ComponentState::Running, true), component("b", ComponentState::Running, true)];
        r.message(Trigger::NucleusLaunch, &snapshot, None, 1).unwrap();
        r.deployment_started();
        r.state_changed("b", ComponentState::Running, true);
        r.deployment_finished();
        let d = LocalDeployment {
            deployment_id: "d-1".into(),
            status: DeploymentStatus::Succeeded,
            created_on: None,
            deployment_status_details: None,
        };
        let m = r.message(Trigger::LocalDeployment, &snapshot, Some(local_deployment_information(&d)), 2).unwrap();
        assert_eq!(m.components.iter().map(|c| c.component_name.as_str()).collect::<Vec<_>>(), vec!["b"]);
        let info = m.deployment_information.unwrap();
        assert_eq!((info.status.as_str(), info.deployment_id.as_deref()), ("SUCCEEDED", Some("d-1")));
        assert_eq!(info.unchanged_root_components, vec!["a"]);
    }

    #[test]
    fn the_cloud_reads_what_the_core_writes() {
        let mut r = reporter();
        let snapshot = [nucleus(), component("a", ComponentState::Running, true)];
        let m = r.message(Trigger::NucleusLaunch, &snapshot, None, 5).unwrap();
        let bytes = serde_json::to_vec(&m).unwrap();
        let mut core = cloud_api::greengrass::CoreDevice::new("core-1");
        let parsed = FleetStatus::parse(&bytes).unwrap();
        assert_eq!(core.apply_report(&parsed, 9), cloud_api::greengrass::ReportOutcome::Applied);
        assert_eq!(core.installed(true).map(|c| c.component_name.as_str()).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(core.core_version, "2.14.0");
    }

    #[test]
    fn the_sequence_number_survives_a_restart_and_a_bad_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_sequence(dir.path()), 0);
        store_sequence(dir.path(), 42).unwrap();
        assert_eq!(load_sequence(dir.path()), 42);
        std::fs::write(sequence_file(dir.path()), "not a number").unwrap();
        assert_eq!(load_sequence(dir.path()), 0);
    }
}
