//! Thing deployments reach a core through its `AWSManagedGreengrassV2Deployment`
//! named shadow; this is the core's side, as the nucleus's
//! `ShadowDeploymentListener` holds it (aws-greengrass-nucleus, `deployment/`).
//!
//! - It listens on the shadow's `update/accepted`, `update/rejected` and
//!   `get/accepted`, and asks for the shadow (`get`) on every connection and
//!   after a rejected update.
//! - `update/accepted` and `get/accepted` are read alike: an older shadow
//!   version than the last seen is ignored; the desired `fleetConfig` (the
//!   deployment document as a string) with `desiredStatus` ACTIVE starts a
//!   deployment whose id is its `configurationArn`; CANCELED cancels it.
//! - The first desired state seen after a start is not deployed again when
//!   it was cancelled, or when `reported` already holds its terminal outcome,
//!   or when it is the deployment running; later, the same configuration ARN
//!   again is a duplicate.
//! - The core reports in `reported`: `fleetConfigurationArnForStatus`,
//!   `status`, `statusDetails {detailedStatus, failureCause, errorStack,
//!   errorTypes}`, `ggcVersion`; when the shadow's `reported` drifts from the
//!   last status the core sent, it sends it again.

use cloud_api::greengrass::deployment::ShadowStatusDetails;
use cloud_api::greengrass::{DEPLOYMENT_SHADOW_NAME, DeploymentDocument, JobStatusDetails, ShadowDeploymentReported};
use cloud_api::jobs::JobExecutionStatus;
use serde_json::{Value, json};

use super::Action;

/// The core's end of the deployment shadow.
#[derive(Debug, Clone)]
pub struct Listener {
    thing: String,
    ggc_version: String,
    last_version: i64,
    last_configuration_arn: Option<String>,
    running: Option<String>,
    /// The `reported` state the core sent last.
    last_reported: Option<Value>,
}

impl Listener {
    /// The listener of core `thing`, which runs nucleus version `ggc_version`.
    pub fn new(thing: &str, ggc_version: &str) -> Self {
        Listener {
            thing: thing.to_owned(),
            ggc_version: ggc_version.to_owned(),
            last_version: 0,
            last_configuration_arn: None,
            running: None,
            last_reported: None,
        }
    }

    fn topic(&self, suffix: &str) -> String {
        format!("$aws/things/{}/shadow/name/{DEPLOYMENT_SHADOW_NAME}/{suffix}", self.thing)
    }

    /// The topics to subscribe to before [`Listener::connected`].
    pub fn subscriptions(&self) -> Vec<String> {
        ["update/accepted", "update/rejected", "get/accepted"].iter().map(|s| self.topic(s)).collect()
    }

    fn get(&self) -> Action {
        Action::Publish { topic: self.topic("get"), payload: b"{}".to_vec() }
    }

    /// The core (re)connected: read the shadow.
    pub fn connected(&mut self) -> Vec<Action> {
        vec![self.get()]
    }

    /// The deployment running now (its configuration ARN).
    pub fn running(&self) -> Option<&str> {
        self.running.as_deref()
    }

    /// A message on one of [`Listener::subscriptions`].
    pub fn message(&mut self, topic: &str, payload: &[u8]) -> Vec<Action> {
        if topic == self.topic("update/rejected") {
            return vec![self.get()];
        }
        if topic != self.topic("update/accepted") && topic != self.topic("get/accepted") {
            return Vec::new();
        }
        let Ok(doc) = serde_json::from_slice::<Value>(payload) else {
            tracing::warn!(topic, "ignoring a deployment shadow message that is not JSON");
            return Vec::new();
        };
        let version = doc.get("version").and_then(Value::as_i64).unwrap_or(0);
        if version < self.last_version {
            return Vec::new();
        }
        self.last_version = version;
        let mut actions = Vec::new();
        let reported = doc.pointer("/state/reported").filter(|r| r.as_object().is_some_and(|o| !o.is_empty()));
        if let (Some(reported), Some(mine)) = (reported, &self.last_reported) {
            let drifted = ["fleetConfigurationArnForStatus", "status"].iter().any(|k| reported.get(k) != mine.get(k));
            if drifted {
                actions.push(self.report(mine.clone()));
            }
        }
        let Some(desired) = doc.pointer("/state/desired").filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
        else {
            return actions;
        };
        let Some(fleet_config) = desired.get("fleetConfig").and_then(Value::as_str) else { return actions };
        let document = match DeploymentDocument::parse(fleet_config.as_bytes()) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a deployment shadow whose fleetConfig does not parse");
                return actions;
            }
        };
        let Some(desired_status) = desired.get("desiredStatus").and_then(Value::as_str) else { return actions };
        let arn = document.configuration_arn.clone();
        let cancel = desired_status == "CANCELED";
        match &self.last_configuration_arn {
            None => {
                self.last_configuration_arn = Some(arn.clone());
                let already_reported = reported.is_some_and(|r| {
                    r.get("fleetConfigurationArnForStatus").and_then(Value::as_str) == Some(arn.as_str())
                        && r.get("status").and_then(Value::as_str) != Some("IN_PROGRESS")
                });
                if cancel || already_reported || self.running.as_deref() == Some(arn.as_str()) {
                    return actions;
                }
            }
            Some(last) if *last == arn && !cancel => return actions,
            Some(_) => self.last_configuration_arn = Some(arn.clone()),
        }
        if cancel {
            if let Some(running) = self.running.clone() {
                actions.push(Action::Cancel { deployment_id: running });
            }
        } else {
            self.running = Some(arn.clone());
            actions.push(Action::Deploy { deployment_id: arn, document: Box::new(document) });
        }
        actions
    }

    /// The deployment `configuration_arn` started.
    pub fn deployment_started(&mut self, configuration_arn: &str) -> Vec<Action> {
        self.status(configuration_arn, JobExecutionStatus::InProgress, &JobStatusDetails::default())
    }

    /// The deployment `configuration_arn` ended: SUCCEEDED, FAILED or REJECTED with its details.
    pub fn deployment_finished(
        &mut self,
        configuration_arn: &str,
        status: JobExecutionStatus,
        details: &JobStatusDetails,
    ) -> Vec<Action> {
        if self.running.as_deref() == Some(configuration_arn) {
            self.running = None;
        }
        self.status(configuration_arn, status, details)
    }

    fn status(&mut self, arn: &str, status: JobExecutionStatus, details: &JobStatusDetails) -> Vec<Action> {
        let reported = ShadowDeploymentReported {
            fleet_configuration_arn_for_status: arn.to_owned(),
            status: status.as_str().to_owned(),
            status_details: ShadowStatusDetails::from(details),
            ggc_version: Some(self.ggc_version.clone()),
        };
        let reported = serde_json::to_value(reported).unwrap_or_default();
        self.last_reported = Some(reported.clone());
        vec![self.report(reported)]
    }

    fn report(&self, reported: Value) -> Action {
        let payload = json!({"state": {"reported": reported}});
        Action::Publish { topic: self.topic("update"), payload: payload.to_string().into_bytes() }
    }
}

#[cfg(test)]
mod tests {
    use cloud_api::greengrass::DetailedDeploymentStatus;

    use super::*;

    const ARN1: &str = "arn:aws:greengrass:us-east-1:0:configuration:thing/core-1:1";
    const ARN2: &str = "arn:aws:greengrass:us-east-1:0:configuration:thing/core-1:2";

    fn shadow(version: i64, arn: &str, desired_status: &str, reported: Value) -> Vec<u8> {
        let fleet_config = json!({"deploymentId": "d", "configurationArn": arn, "creationTimestamp": 1,
            "components": {"com.example.A": {"version": "1.0.0"}}})
        .to_string();
        json!({"state": {"desired": {"fleetConfig": fleet_config, "desiredStatus": desired_status}, "reported": reported},
            "version": version})
        .to_string()
        .into_bytes()
    }

    fn accepted(l: &Listener) -> String {
        l.topic("update/accepted")
    }

    #[test]
    fn a_desired_deployment_starts_once_and_its_outcome_is_reported() {
        let mut l = Listener::new("core-1", "2.14.0");
        assert_eq!(l.subscriptions().len(), 3);
        assert!(matches!(&l.connected()[..], [Action::Publish { topic, .. }] if topic.ends_with("/get")));
        let actions = l.message(&accepted(&l), &shadow(1, ARN1, "ACTIVE", json!({})));
        let [Action::Deploy { deployment_id, document }] = &actions[..] else { panic!("{actions:?}") };
        assert_eq!((deployment_id.as_str(), document.components.len()), (ARN1, 1));
        assert!(l.message(&accepted(&l), &shadow(2, ARN1, "ACTIVE", json!({}))).is_empty(), "a duplicate");
        let ok = JobStatusDetails { detailed_status: Some(DetailedDeploymentStatus::Successful), ..Default::default() };
        let [Action::Publish { topic, payload }] = &l.deployment_finished(ARN1, JobExecutionStatus::Succeeded, &ok)[..]
        else {
            panic!()
        };
        assert!(topic.ends_with("/AWSManagedGreengrassV2Deployment/update"));
        let body: Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(body["state"]["reported"]["status"], "SUCCEEDED");
        assert_eq!(body["state"]["reported"]["statusDetails"]["detailedStatus"], "SUCCESSFUL");
        assert_eq!(body["state"]["reported"]["statusDetails"]["failureCause"], "");
        assert_eq!(l.running(), None);
    }

    #[test]
    fn at_start_a_reported_or_cancelled_deployment_is_not_run_again() {
        let done = json!({"fleetConfigurationArnForStatus": ARN1, "status": "SUCCEEDED"});
        let mut l = Listener::new("core-1", "2.14.0");
        assert!(l.message(&l.topic("get/accepted"), &shadow(5, ARN1, "ACTIVE", done)).is_empty());
        let mut l = Listener::new("core-1", "2.14.0");
        assert!(l.message(&l.topic("get/accepted"), &shadow(5, ARN1, "CANCELED", json!({}))).is_empty());
        let half = json!({"fleetConfigurationArnForStatus": ARN1, "status": "IN_PROGRESS"});
        let mut l = Listener::new("core-1", "2.14.0");
        let actions = l.message(&l.topic("get/accepted"), &shadow(5, ARN1, "ACTIVE", half));
        assert!(matches!(&actions[..], [Action::Deploy { .. }]), "an unfinished deployment runs again");
    }

    #[test]
    fn a_cancel_stops_the_running_deployment_and_older_versions_are_ignored() {
        let mut l = Listener::new("core-1", "2.14.0");
        l.message(&accepted(&l), &shadow(3, ARN1, "ACTIVE", json!({})));
        assert!(l.message(&accepted(&l), &shadow(2, ARN2, "ACTIVE", json!({}))).is_empty(), "an older version");
        assert_eq!(
            l.message(&accepted(&l), &shadow(4, ARN1, "CANCELED", json!({}))),
            vec![Action::Cancel { deployment_id: ARN1.into() }]
        );
        let next = l.message(&accepted(&l), &shadow(5, ARN2, "ACTIVE", json!({})));
        assert!(matches!(&next[..], [Action::Deploy { deployment_id, .. }] if deployment_id == ARN2));
    }

    #[test]
    fn a_drifted_report_is_sent_again_and_a_rejection_reads_the_shadow_again() {
        let mut l = Listener::new("core-1", "2.14.0");
        l.message(&accepted(&l), &shadow(1, ARN1, "ACTIVE", json!({})));
        l.deployment_started(ARN1);
        let stale = json!({"fleetConfigurationArnForStatus": "other", "status": "SUCCEEDED"});
        let actions = l.message(&accepted(&l), &shadow(2, ARN1, "ACTIVE", stale));
        let [Action::Publish { payload, .. }] = &actions[..] else { panic!("{actions:?}") };
        let body: Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(body["state"]["reported"]["status"], "IN_PROGRESS");
        let again = l.message(&l.topic("update/rejected"), b"{}");
        assert!(matches!(&again[..], [Action::Publish { topic, .. }] if topic.ends_with("/get")));
    }

    #[test]
    fn malformed_shadows_change_nothing() {
        let mut l = Listener::new("core-1", "2.14.0");
        let bad_config =
            json!({"state": {"desired": {"fleetConfig": "{not json", "desiredStatus": "ACTIVE"}}, "version": 1});
        for payload in [b"not json".to_vec(), bad_config.to_string().into_bytes(), b"{\"version\":1}".to_vec()] {
            assert!(l.message(&accepted(&l), &payload).is_empty());
        }
        assert!(
            l.message("$aws/things/core-1/shadow/name/pump/update/accepted", &shadow(9, ARN1, "ACTIVE", json!({})))
                .is_empty()
        );
        assert_eq!(l.running(), None);
    }
}
