//! A core device as the cloud knows it: built only from what the core
//! reported, never from what was asked of it.
//!
//! Fleet status messages ([`super::FleetStatus`]) give the core's version,
//! platform, health and its components' states; deployment results (job
//! executions of thing-group deployments, the deployment shadow's reported
//! state for thing deployments) give the effective deployments. This is what
//! `GetCoreDevice`, `ListInstalledComponents` and `ListEffectiveDeployments`
//! answer from.
//!
//! Rules (the service's behaviour is not published; these follow the nucleus's
//! side of the contract):
//! - A message older than the last one applied (by `timestamp`, then
//!   `sequenceNumber`) changes nothing: MQTT may deliver a retry late.
//! - A `PARTIAL` message updates the components it lists; a `COMPLETE` one
//!   also removes every component it does not list, once all its chunks arrived.
//! - `lastInstallationSource` is `LOCAL` for a local deployment's report and
//!   the deployment id for a cloud deployment's report (`deploymentInformation`),
//!   for the components listed and the `unchangedRootComponents`.
//! - `lastStatusChangeTimestamp` moves only when a component's state or version
//!   changes; `lastReportedTimestamp` on every report that names it.
//! - One effective deployment per target; a later revision replaces an earlier
//!   one, and a report about an earlier revision is ignored.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::deployment::JobStatusDetails;
use super::fleet_status::{FleetStatus, MessageType, OverallStatus, Trigger};

/// The `runtime` of a core running the Java nucleus (what our simulated core stands in for).
pub const RUNTIME_NUCLEUS_CLASSIC: &str = "aws_nucleus_classic";
/// `lastInstallationSource` of a component deployed locally.
pub const LOCAL_SOURCE: &str = "LOCAL";

/// A component installed on the core (`InstalledComponent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstalledComponent {
    /// Name.
    pub component_name: String,
    /// Version.
    pub component_version: String,
    /// NEW, INSTALLED, STARTING, RUNNING, STOPPING, ERRORED, BROKEN, FINISHED.
    pub lifecycle_state: String,
    /// The status reason the core gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_state_details: Option<String>,
    /// The status codes the core gave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle_status_codes: Vec<String>,
    /// Deployed as a root component.
    pub is_root: bool,
    /// Epoch ms of the last change of state or version.
    pub last_status_change_ms: i64,
    /// Epoch ms of the last report naming it.
    pub last_reported_ms: i64,
    /// The deployment id that last brought it, or `LOCAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_installation_source: Option<String>,
}

/// `EffectiveDeploymentExecutionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    /// Waiting for the core.
    Queued,
    /// The core works on it.
    InProgress,
    /// Applied.
    Succeeded,
    /// Failed on the core.
    Failed,
    /// The core refused it.
    Rejected,
    /// A job timer ran out.
    TimedOut,
    /// Cancelled (or the core left the target).
    Canceled,
    /// Done (a status AWS lists; cores report SUCCEEDED).
    Completed,
}

impl ExecutionStatus {
    /// From an IoT job execution status (`REMOVED`, a core leaving the group, counts as cancelled).
    pub fn from_job_status(status: &str) -> Option<Self> {
        Some(match status {
            "QUEUED" => ExecutionStatus::Queued,
            "IN_PROGRESS" => ExecutionStatus::InProgress,
            "SUCCEEDED" => ExecutionStatus::Succeeded,
            "FAILED" => ExecutionStatus::Failed,
            "REJECTED" => ExecutionStatus::Rejected,
            "TIMED_OUT" => ExecutionStatus::TimedOut,
            "CANCELED" | "REMOVED" => ExecutionStatus::Canceled,
            "COMPLETED" => ExecutionStatus::Completed,
            _ => return None,
        })
    }

    /// Whether the core is done with it.
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecutionStatus::Queued | ExecutionStatus::InProgress)
    }
}

/// A deployment's status on this core (the per-core part of `EffectiveDeployment`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveStatus {
    /// The deployment.
    pub deployment_id: String,
    /// Its revision for the target; later revisions replace earlier ones.
    pub revision: u64,
    /// `coreDeviceExecutionStatus`.
    pub status: ExecutionStatus,
    /// Why it failed, in the core's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `statusDetails.errorStack`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_stack: Vec<String>,
    /// `statusDetails.errorTypes`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_types: Vec<String>,
    /// Epoch ms the deployment reached this core.
    pub created_ms: i64,
    /// Epoch ms of the last change.
    pub modified_ms: i64,
}

/// What became of a fleet status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The view changed.
    Applied,
    /// Older than what was already applied: ignored.
    Stale,
    /// The payload names another thing than the topic: ignored.
    WrongThing(String),
}

/// Chunks of a `COMPLETE` message seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingComplete {
    sequence_number: u64,
    total_chunks: u32,
    chunks: BTreeSet<u32>,
    names: BTreeSet<String>,
}

/// A core device: what `GetCoreDevice` and friends answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoreDevice {
    /// The core thing.
    pub thing_name: String,
    /// Nucleus version (`coreVersion`).
    pub core_version: String,
    /// `platform`.
    pub platform: String,
    /// `architecture`.
    pub architecture: String,
    /// `runtime`.
    pub runtime: String,
    /// HEALTHY or UNHEALTHY, as last reported; `None` before the first report.
    pub status: Option<OverallStatus>,
    /// Epoch ms of the last applied report.
    pub last_status_update_ms: i64,
    /// `(timestamp, sequenceNumber)` of the last applied report.
    #[serde(default)]
    last_report: Option<(i64, u64)>,
    #[serde(default)]
    pending_complete: Option<PendingComplete>,
    /// Installed components by name.
    #[serde(default)]
    pub components: BTreeMap<String, InstalledComponent>,
    /// Effective deployments by target ARN.
    #[serde(default)]
    pub effective: BTreeMap<String, EffectiveStatus>,
}

impl CoreDevice {
    /// A core the cloud has heard nothing from yet.
    pub fn new(thing_name: &str) -> Self {
        CoreDevice {
            thing_name: thing_name.to_owned(),
            core_version: String::new(),
            platform: String::new(),
            architecture: String::new(),
            runtime: RUNTIME_NUCLEUS_CLASSIC.to_owned(),
            status: None,
            last_status_update_ms: 0,
            last_report: None,
            pending_complete: None,
            components: BTreeMap::new(),
            effective: BTreeMap::new(),
        }
    }

    /// Whether the core has reported its status at least once.
    pub fn has_reported(&self) -> bool {
        self.status.is_some()
    }

    /// Applies a fleet status message received at `received_ms`.
    pub fn apply_report(&mut self, report: &FleetStatus, received_ms: i64) -> ReportOutcome {
        if report.thing != self.thing_name {
            return ReportOutcome::WrongThing(report.thing.clone());
        }
        let key = (report.timestamp, report.sequence_number);
        if let Some(last) = self.last_report {
            let same_message = report.chunk_info.is_some() && last == key;
            if key < last || (key == last && !same_message) {
                return ReportOutcome::Stale;
            }
        }
        self.last_report = Some(key);
        if !report.ggc_version.is_empty() {
            self.core_version = report.ggc_version.clone();
        }
        if !report.platform.is_empty() {
            self.platform = report.platform.clone();
        }
        if !report.architecture.is_empty() {
            self.architecture = report.architecture.clone();
        }
        self.status = Some(report.overall_device_status);
        self.last_status_update_ms = received_ms;

        let source = match report.trigger {
            Trigger::LocalDeployment => Some(LOCAL_SOURCE.to_owned()),
            Trigger::ThingDeployment | Trigger::ThingGroupDeployment => {
                report.deployment_information.as_ref().and_then(|d| d.deployment_id.clone())
            }
            _ => None,
        };
        for c in &report.components {
            let details = c.component_status_details.clone().unwrap_or_default();
            let entry = self.components.entry(c.component_name.clone()).or_insert_with(|| InstalledComponent {
                component_name: c.component_name.clone(),
                component_version: String::new(),
                lifecycle_state: String::new(),
                lifecycle_state_details: None,
                lifecycle_status_codes: Vec::new(),
                is_root: false,
                last_status_change_ms: received_ms,
                last_reported_ms: received_ms,
                last_installation_source: None,
            });
            if entry.lifecycle_state != c.status || entry.component_version != c.version {
                entry.last_status_change_ms = received_ms;
            }
            entry.component_version = c.version.clone();
            entry.lifecycle_state = c.status.clone();
            entry.lifecycle_state_details = details.status_reason;
            entry.lifecycle_status_codes = details.status_codes;
            entry.is_root = c.is_root;
            entry.last_reported_ms = received_ms;
            if let Some(s) = &source {
                entry.last_installation_source = Some(s.clone());
            }
        }
        if let (Some(s), Some(info)) = (&source, &report.deployment_information) {
            for name in &info.unchanged_root_components {
                if let Some(entry) = self.components.get_mut(name) {
                    entry.last_reported_ms = received_ms;
                    entry.last_installation_source = Some(s.clone());
                }
            }
        }
        if report.message_type == MessageType::Complete {
            self.complete(report);
        }
        ReportOutcome::Applied
    }

    /// Removes what a complete message did not list, once every chunk is in.
    fn complete(&mut self, report: &FleetStatus) {
        let names = report.components.iter().map(|c| c.component_name.clone());
        let listed: BTreeSet<String> = match report.chunk_info {
            None => {
                self.pending_complete = None;
                names.collect()
            }
            Some(chunk) => {
                let pending = match self.pending_complete.take() {
                    Some(p) if p.sequence_number == report.sequence_number => p,
                    _ => PendingComplete {
                        sequence_number: report.sequence_number,
                        total_chunks: chunk.total_chunks,
                        ..PendingComplete::default()
                    },
                };
                let mut pending = pending;
                pending.chunks.insert(chunk.chunk_id);
                pending.names.extend(names);
                if (1..=pending.total_chunks).any(|id| !pending.chunks.contains(&id)) {
                    self.pending_complete = Some(pending);
                    return;
                }
                pending.names
            }
        };
        self.components.retain(|name, _| listed.contains(name));
    }

    /// Records what a deployment (revision `revision` for `target_arn`) is on
    /// this core. Returns false (and changes nothing) when the core already
    /// has a later revision for that target.
    pub fn record_deployment(
        &mut self,
        target_arn: &str,
        deployment_id: &str,
        revision: u64,
        status: ExecutionStatus,
        details: &JobStatusDetails,
        now_ms: i64,
    ) -> bool {
        if let Some(current) = self.effective.get(target_arn)
            && current.revision > revision
        {
            return false;
        }
        let created_ms = match self.effective.get(target_arn) {
            Some(current) if current.deployment_id == deployment_id => current.created_ms,
            _ => now_ms,
        };
        self.effective.insert(
            target_arn.to_owned(),
            EffectiveStatus {
                deployment_id: deployment_id.to_owned(),
                revision,
                status,
                reason: details.failure_cause.clone(),
                error_stack: details.error_stack.clone(),
                error_types: details.error_types.clone(),
                created_ms,
                modified_ms: now_ms,
            },
        );
        true
    }

    /// Installed components; with `roots_only`, only root components (`topologyFilter=ROOT`).
    pub fn installed(&self, roots_only: bool) -> impl Iterator<Item = &InstalledComponent> {
        self.components.values().filter(move |c| c.is_root || !roots_only)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::greengrass::deployment::DetailedDeploymentStatus;

    fn report(body: serde_json::Value) -> FleetStatus {
        let mut base = json!({
            "ggcVersion": "2.14.0", "platform": "linux", "architecture": "amd64", "thing": "core-1",
            "overallDeviceStatus": "HEALTHY", "sequenceNumber": 1, "timestamp": 1000,
            "messageType": "COMPLETE", "trigger": "NUCLEUS_LAUNCH", "components": []
        });
        for (k, v) in body.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn component(name: &str, version: &str, status: &str, root: bool) -> serde_json::Value {
        json!({"componentName": name, "version": version, "status": status, "isRoot": root, "fleetConfigArns": []})
    }

    #[test]
    fn a_launch_report_fills_the_core_and_its_components() {
        let mut core = CoreDevice::new("core-1");
        assert!(!core.has_reported());
        let r = report(
            json!({"components": [component("a", "1.0.0", "RUNNING", true), component("b", "1.0.0", "FINISHED", false)]}),
        );
        assert_eq!(core.apply_report(&r, 5000), ReportOutcome::Applied);
        assert_eq!(core.core_version, "2.14.0");
        assert_eq!(core.status, Some(OverallStatus::Healthy));
        assert_eq!(core.last_status_update_ms, 5000);
        assert_eq!(core.installed(false).count(), 2);
        assert_eq!(core.installed(true).map(|c| c.component_name.as_str()).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(core.components["a"].last_installation_source, None);
    }

    #[test]
    fn partial_reports_update_complete_reports_also_remove() {
        let mut core = CoreDevice::new("core-1");
        core.apply_report(&report(json!({"components": [component("a", "1.0.0", "RUNNING", true), component("b", "1.0.0", "RUNNING", true)]})), 1);
        core.apply_report(
            &report(json!({"sequenceNumber": 2, "timestamp": 2000, "messageType": "PARTIAL", "trigger": "COMPONENT_STATUS_CHANGE",
                "overallDeviceStatus": "UNHEALTHY",
                "components": [{"componentName": "a", "version": "1.0.0", "status": "BROKEN", "isRoot": true,
                    "componentStatusDetails": {"statusCodes": ["RUN_ERROR"], "statusReason": "exit 3"}}]})),
            2,
        );
        assert_eq!(core.components.len(), 2, "a partial report removes nothing");
        assert_eq!(core.components["a"].lifecycle_state, "BROKEN");
        assert_eq!(core.components["a"].lifecycle_status_codes, vec!["RUN_ERROR"]);
        assert_eq!(core.components["a"].lifecycle_state_details.as_deref(), Some("exit 3"));
        assert_eq!(core.status, Some(OverallStatus::Unhealthy));
        core.apply_report(
            &report(json!({"sequenceNumber": 3, "timestamp": 3000, "trigger": "CADENCE",
                "components": [component("b", "1.0.0", "RUNNING", true)]})),
            3,
        );
        assert_eq!(core.components.keys().collect::<Vec<_>>(), vec!["b"], "a complete report removes what it omits");
    }

    #[test]
    fn a_chunked_complete_report_removes_only_once_every_chunk_arrived() {
        let mut core = CoreDevice::new("core-1");
        core.apply_report(&report(json!({"components": [component("a", "1", "RUNNING", true), component("b", "1", "RUNNING", true), component("c", "1", "RUNNING", true)]})), 1);
        let chunk = |id: u32, names: &[&str]| {
            report(json!({"sequenceNumber": 2, "timestamp": 2000, "trigger": "CADENCE",
                "chunkInfo": {"chunkId": id, "totalChunks": 2},
                "components": names.iter().map(|n| component(n, "1", "RUNNING", true)).collect::<Vec<_>>()}))
        };
        assert_eq!(core.apply_report(&chunk(2, &["b"]), 2), ReportOutcome::Applied);
        assert_eq!(core.components.len(), 3);
        assert_eq!(core.apply_report(&chunk(1, &["a"]), 3), ReportOutcome::Applied);
        assert_eq!(core.components.keys().collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn stale_and_misaddressed_reports_change_nothing() {
        let mut core = CoreDevice::new("core-1");
        core.apply_report(&report(json!({"sequenceNumber": 5, "timestamp": 5000, "components": [component("a", "2.0.0", "RUNNING", true)]})), 1);
        let before = core.clone();
        let old = report(
            json!({"sequenceNumber": 4, "timestamp": 4000, "components": [component("a", "1.0.0", "RUNNING", true)]}),
        );
        assert_eq!(core.apply_report(&old, 2), ReportOutcome::Stale);
        let again = report(json!({"sequenceNumber": 5, "timestamp": 5000, "components": []}));
        assert_eq!(core.apply_report(&again, 2), ReportOutcome::Stale, "a redelivered message");
        let other = report(json!({"thing": "core-2", "sequenceNumber": 9, "timestamp": 9000}));
        assert_eq!(core.apply_report(&other, 3), ReportOutcome::WrongThing("core-2".into()));
        assert_eq!(core, before);
    }

    #[test]
    fn deployments_set_the_installation_source_and_status_change_times() {
        let mut core = CoreDevice::new("core-1");
        core.apply_report(&report(json!({"components": [component("a", "1.0.0", "RUNNING", true)]})), 100);
        core.apply_report(
            &report(
                json!({"sequenceNumber": 2, "timestamp": 2000, "messageType": "PARTIAL", "trigger": "LOCAL_DEPLOYMENT",
                "components": [component("a", "1.0.0", "RUNNING", true)]}),
            ),
            200,
        );
        assert_eq!(core.components["a"].last_installation_source.as_deref(), Some("LOCAL"));
        assert_eq!(core.components["a"].last_status_change_ms, 100, "same state and version: no change");
        assert_eq!(core.components["a"].last_reported_ms, 200);
        core.apply_report(
            &report(json!({"sequenceNumber": 3, "timestamp": 3000, "messageType": "PARTIAL", "trigger": "THING_GROUP_DEPLOYMENT",
                "components": [component("b", "1.0.0", "RUNNING", true)],
                "deploymentInformation": {"status": "SUCCEEDED", "deploymentId": "d-9", "unchangedRootComponents": ["a"]}})),
            300,
        );
        assert_eq!(core.components["a"].last_installation_source.as_deref(), Some("d-9"));
        assert_eq!(core.components["a"].last_reported_ms, 300);
        assert_eq!(core.components["b"].last_installation_source.as_deref(), Some("d-9"));
        core.apply_report(
            &report(json!({"sequenceNumber": 4, "timestamp": 4000, "messageType": "PARTIAL", "trigger": "THING_GROUP_DEPLOYMENT",
                "components": [component("b", "2.0.0", "RUNNING", true)],
                "deploymentInformation": {"status": "SUCCEEDED", "deploymentId": "d-10"}})),
            400,
        );
        assert_eq!(core.components["b"].last_status_change_ms, 400, "a new version is a change");
    }

    #[test]
    fn one_effective_deployment_per_target_and_later_revisions_win() {
        let mut core = CoreDevice::new("core-1");
        let group = "arn:aws:iot:us-east-1:0:thinggroup/pumps";
        let none = JobStatusDetails::default();
        assert!(core.record_deployment(group, "d-1", 1, ExecutionStatus::Queued, &none, 10));
        assert!(core.record_deployment(group, "d-1", 1, ExecutionStatus::InProgress, &none, 20));
        assert_eq!(core.effective[group].created_ms, 10);
        let failed = JobStatusDetails {
            detailed_status: Some(DetailedDeploymentStatus::FailedRollbackComplete),
            failure_cause: Some("Sensor broke".into()),
            error_stack: vec!["DEPLOYMENT_FAILURE".into()],
            error_types: vec!["COMPONENT_ERROR".into()],
        };
        assert!(core.record_deployment(group, "d-2", 2, ExecutionStatus::Failed, &failed, 30));
        let e = &core.effective[group];
        assert_eq!((e.deployment_id.as_str(), e.status, e.created_ms), ("d-2", ExecutionStatus::Failed, 30));
        assert_eq!(e.reason.as_deref(), Some("Sensor broke"));
        assert!(!core.record_deployment(group, "d-1", 1, ExecutionStatus::Succeeded, &none, 40), "late news of d-1");
        assert_eq!(core.effective[group].deployment_id, "d-2");
        assert!(core.record_deployment(
            "arn:aws:iot:us-east-1:0:thing/core-1",
            "d-3",
            1,
            ExecutionStatus::Succeeded,
            &none,
            50
        ));
        assert_eq!(core.effective.len(), 2);
    }

    #[test]
    fn job_statuses_map_to_effective_statuses() {
        assert_eq!(ExecutionStatus::from_job_status("REMOVED"), Some(ExecutionStatus::Canceled));
        assert_eq!(ExecutionStatus::from_job_status("TIMED_OUT"), Some(ExecutionStatus::TimedOut));
        assert_eq!(ExecutionStatus::from_job_status("nonsense"), None);
        assert!(ExecutionStatus::Rejected.is_terminal());
        assert!(!ExecutionStatus::Queued.is_terminal());
    }

    #[test]
    fn the_view_survives_a_round_trip_through_json() {
        let mut core = CoreDevice::new("core-1");
        core.apply_report(&report(json!({"components": [component("a", "1.0.0", "RUNNING", true)]})), 1);
        let text = serde_json::to_string(&core).unwrap();
        assert_eq!(serde_json::from_str::<CoreDevice>(&text).unwrap(), core);
    }
}
