//! Thing-group deployments reach a core as IoT jobs in the `aws-gg-deployment`
//! namespace; this is the core's side of that conversation, as the nucleus's
//! `IotJobsHelper` holds it (aws-greengrass-nucleus, `deployment/`).
//!
//! - It listens on `…/jobs/notify-namespace-aws-gg-deployment` and on the
//!   answers to its `$next` describe and its updates.
//! - On every connection it asks for `$next` (with the document): a job queued
//!   while the core was away is found that way.
//! - A notification listing QUEUED jobs makes it ask for `$next` again; an
//!   empty one means the job it runs was cancelled.
//! - An execution answers with the job document: a deployment is started whose
//!   id is the job id, unless it is one already taken (by `queuedAt`, then job
//!   id) or the one running. A document that does not parse is reported FAILED
//!   without touching anything.
//! - It reports IN_PROGRESS when the deployment starts and the outcome with
//!   `detailed-deployment-status` and the failure cause when it ends; updates
//!   go out one at a time, in order, each resent after a reconnect or a timeout
//!   until the service accepts or rejects it (a rejection is dropped, as the
//!   nucleus does).
//!
//! Pure: [`Listener`] takes messages and the deployment engine's events and
//! returns [`Action`]s; the caller does the MQTT and runs the deployments. The
//! deployment id is the job id, as in the nucleus.

use std::collections::{BTreeSet, VecDeque};

use cloud_api::greengrass::{DEPLOYMENT_JOB_NAMESPACE, DeploymentDocument, DetailedDeploymentStatus, JobStatusDetails};
use cloud_api::jobs::model::{
    ExecutionAccepted, JobExecutionStatus, JobExecutionsChanged, StatusDetails, UpdateRequest,
};
use cloud_api::jobs::{JobTarget, JobsRequest, JobsResponse, JobsTopic, JobsTopicKind};
use serde_json::{Value, json};

use super::Action;

/// A status update waiting to be accepted.
#[derive(Debug, Clone, PartialEq)]
struct Update {
    job_id: String,
    status: JobExecutionStatus,
    details: StatusDetails,
}

/// The core's end of the deployment jobs.
#[derive(Debug, Clone)]
pub struct Listener {
    thing: String,
    /// The newest `queuedAt` taken, and the jobs taken that were queued then: a job queued
    /// earlier, or one of these again, is a duplicate (the nucleus's `LatestQueuedJobs`).
    newest_queued_at: i64,
    taken_at_newest: BTreeSet<String>,
    /// The job whose deployment runs now.
    running: Option<String>,
    /// QUEUED notifications not answered by an execution yet.
    unanswered_queued: u32,
    /// Updates not sent yet, in order.
    pending: VecDeque<Update>,
    /// The update sent and not yet answered, with its client token.
    in_flight: Option<(String, Update)>,
    next_token: u64,
}

impl Listener {
    /// The listener of core `thing`.
    pub fn new(thing: &str) -> Self {
        Listener {
            thing: thing.to_owned(),
            newest_queued_at: i64::MIN,
            taken_at_newest: BTreeSet::new(),
            running: None,
            unanswered_queued: 0,
            pending: VecDeque::new(),
            in_flight: None,
            next_token: 0,
        }
    }

    fn ns(&self) -> Option<&str> {
        Some(DEPLOYMENT_JOB_NAMESPACE)
    }

    fn request_topic(&self, request: JobsRequest) -> String {
        JobsTopic::request(&self.thing, self.ns(), request).map(|t| t.to_topic()).unwrap_or_default()
    }

    /// The topic filters to subscribe to before [`Listener::connected`].
    pub fn subscriptions(&self) -> Vec<String> {
        let next = JobsRequest::Describe(JobTarget::Next);
        let mut filters: Vec<String> = [JobsResponse::Accepted, JobsResponse::Rejected]
            .into_iter()
            .filter_map(|r| JobsTopic::request(&self.thing, self.ns(), next.clone())?.response_topic(r))
            .map(|t| t.to_topic())
            .collect();
        if let Some(notify) = JobsTopic::notification(&self.thing, self.ns(), false) {
            filters.push(notify.to_topic());
        }
        // Every job's update answers: `$aws/things/{thing}/jobs/+/namespace-…/update/+`.
        filters.push(format!("$aws/things/{}/jobs/+/namespace-{DEPLOYMENT_JOB_NAMESPACE}/update/+", self.thing));
        filters
    }

    fn describe_next(&self) -> Action {
        let payload = json!({"includeJobDocument": true, "clientToken": "next"});
        Action::Publish {
            topic: self.request_topic(JobsRequest::Describe(JobTarget::Next)),
            payload: payload.to_string().into_bytes(),
        }
    }

    /// The core (re)connected: ask for the next job, resend an unanswered update.
    pub fn connected(&mut self) -> Vec<Action> {
        let mut actions = vec![self.describe_next()];
        if let Some((_, update)) = self.in_flight.take() {
            self.pending.push_front(update);
        }
        actions.extend(self.send_next_update());
        actions
    }

    /// An update went unanswered too long: send it again.
    pub fn update_timed_out(&mut self) -> Vec<Action> {
        match self.in_flight.take() {
            Some((_, update)) => {
                self.pending.push_front(update);
                self.send_next_update()
            }
            None => Vec::new(),
        }
    }

    /// Whether an update waits for its answer (the caller times it out).
    pub fn awaiting_answer(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The job whose deployment runs now.
    pub fn running(&self) -> Option<&str> {
        self.running.as_deref()
    }

    /// A message on one of [`Listener::subscriptions`].
    pub fn message(&mut self, topic: &str, payload: &[u8]) -> Vec<Action> {
        let Some(parsed) = JobsTopic::parse(topic) else { return Vec::new() };
        if parsed.thing_name != self.thing || parsed.namespace.as_deref() != self.ns() {
            return Vec::new();
        }
        match parsed.kind {
            JobsTopicKind::Notify => self.notified(payload),
            JobsTopicKind::Request {
                request: JobsRequest::Describe(JobTarget::Next),
                response: Some(JobsResponse::Accepted),
            } => self.next_answered(payload),
            JobsTopicKind::Request { request: JobsRequest::Update(job_id), response: Some(response) } => {
                self.update_answered(&job_id, response, payload)
            }
            _ => Vec::new(),
        }
    }

    fn notified(&mut self, payload: &[u8]) -> Vec<Action> {
        let Ok(changed) = serde_json::from_slice::<JobExecutionsChanged>(payload) else {
            tracing::warn!("ignoring a jobs notification that does not parse");
            return Vec::new();
        };
        if changed.jobs.is_empty() {
            // Nothing pending any more: the job being deployed was cancelled.
            return self
                .running
                .clone()
                .map(|job_id| vec![Action::Cancel { deployment_id: job_id }])
                .unwrap_or_default();
        }
        if changed.jobs.contains_key(&JobExecutionStatus::Queued) {
            self.unanswered_queued += 1;
            return vec![self.describe_next()];
        }
        Vec::new()
    }

    fn next_answered(&mut self, payload: &[u8]) -> Vec<Action> {
        let Ok(answer) = serde_json::from_slice::<ExecutionAccepted>(payload) else {
            tracing::warn!("ignoring a $next answer that does not parse");
            return Vec::new();
        };
        let Some(execution) = answer.execution else {
            // Nothing yet: ask again while QUEUED notifications are unanswered.
            if self.unanswered_queued > 0 {
                self.unanswered_queued -= 1;
                if self.unanswered_queued > 0 {
                    return vec![self.describe_next()];
                }
            }
            return Vec::new();
        };
        self.unanswered_queued = 0;
        if !self.take(execution.queued_at, &execution.job_id) {
            return Vec::new();
        }
        let job_id = execution.job_id;
        let document = execution
            .job_document
            .ok_or_else(|| "the execution carries no job document".to_owned())
            .and_then(|doc| DeploymentDocument::parse(Value::Object(doc).to_string().as_bytes()));
        match document {
            Ok(document) => {
                self.running = Some(job_id.clone());
                vec![Action::Deploy { deployment_id: job_id, document: Box::new(document) }]
            }
            Err(cause) => {
                let details = JobStatusDetails {
                    detailed_status: Some(DetailedDeploymentStatus::FailedNoStateChange),
                    failure_cause: Some(cause),
                    error_stack: vec!["DEPLOYMENT_FAILURE".into(), "JOB_DOCUMENT_INVALID".into()],
                    error_types: vec!["REQUEST_ERROR".into()],
                };
                self.queue_update(&job_id, JobExecutionStatus::Failed, details.to_map())
            }
        }
    }

    /// Whether the job queued at `queued_at` is new (and now taken).
    fn take(&mut self, queued_at: i64, job_id: &str) -> bool {
        if self.running.as_deref() == Some(job_id) || queued_at < self.newest_queued_at {
            return false;
        }
        if queued_at > self.newest_queued_at {
            self.newest_queued_at = queued_at;
            self.taken_at_newest.clear();
        }
        self.taken_at_newest.insert(job_id.to_owned())
    }

    fn update_answered(&mut self, job_id: &str, response: JobsResponse, payload: &[u8]) -> Vec<Action> {
        let token = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v.get("clientToken").and_then(Value::as_str).map(str::to_owned));
        let ours = self.in_flight.as_ref().is_some_and(|(t, u)| Some(t) == token.as_ref() && u.job_id == job_id);
        if !ours {
            return Vec::new();
        }
        if response == JobsResponse::Rejected {
            tracing::warn!(job_id, answer = %String::from_utf8_lossy(payload), "the service rejected a job status update");
        }
        self.in_flight = None;
        self.send_next_update()
    }

    /// The deployment of `job_id` started.
    pub fn deployment_started(&mut self, job_id: &str) -> Vec<Action> {
        self.queue_update(job_id, JobExecutionStatus::InProgress, StatusDetails::new())
    }

    /// The deployment of `job_id` ended: SUCCEEDED, FAILED or REJECTED with its details.
    pub fn deployment_finished(
        &mut self,
        job_id: &str,
        status: JobExecutionStatus,
        details: &JobStatusDetails,
    ) -> Vec<Action> {
        if self.running.as_deref() == Some(job_id) {
            self.running = None;
        }
        self.queue_update(job_id, status, details.to_map())
    }

    fn queue_update(&mut self, job_id: &str, status: JobExecutionStatus, details: StatusDetails) -> Vec<Action> {
        self.pending.push_back(Update { job_id: job_id.to_owned(), status, details });
        self.send_next_update()
    }

    fn send_next_update(&mut self) -> Vec<Action> {
        if self.in_flight.is_some() {
            return Vec::new();
        }
        let Some(update) = self.pending.pop_front() else { return Vec::new() };
        self.next_token += 1;
        let token = format!("gg-{}", self.next_token);
        let request = UpdateRequest {
            status: update.status,
            status_details: Some(update.details.clone()),
            expected_version: None,
            execution_number: None,
            include_job_execution_state: None,
            include_job_document: None,
            step_timeout_in_minutes: None,
            client_token: Some(token.clone()),
        };
        let topic = self.request_topic(JobsRequest::Update(update.job_id.clone()));
        let payload = serde_json::to_vec(&request).unwrap_or_default();
        self.in_flight = Some((token, update));
        vec![Action::Publish { topic, payload }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THING: &str = "core-1";

    fn topic(suffix: &str) -> String {
        format!("$aws/things/{THING}/jobs/{suffix}")
    }

    fn execution(job_id: &str, queued_at: i64, document: Value) -> Vec<u8> {
        json!({"execution": {"jobId": job_id, "thingName": THING, "jobDocument": document, "status": "QUEUED",
            "queuedAt": queued_at, "lastUpdatedAt": queued_at, "versionNumber": 1, "executionNumber": 1},
            "timestamp": queued_at, "clientToken": "next"})
        .to_string()
        .into_bytes()
    }

    fn document(id: &str) -> Value {
        json!({"deploymentId": id, "configurationArn": "arn:aws:greengrass:us-east-1:0:configuration:thinggroup/g:1",
            "creationTimestamp": 1, "components": {"com.example.A": {"version": "1.0.0"}}})
    }

    fn published(actions: &[Action]) -> Vec<(String, Value)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish { topic, payload } => Some((topic.clone(), serde_json::from_slice(payload).unwrap())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn it_subscribes_to_the_namespaced_topics_and_asks_for_the_next_job_on_connecting() {
        let mut l = Listener::new(THING);
        assert_eq!(
            l.subscriptions(),
            vec![
                topic("$next/namespace-aws-gg-deployment/get/accepted"),
                topic("$next/namespace-aws-gg-deployment/get/rejected"),
                topic("notify-namespace-aws-gg-deployment"),
                topic("+/namespace-aws-gg-deployment/update/+"),
            ]
        );
        let p = published(&l.connected());
        assert_eq!(p[0].0, topic("$next/namespace-aws-gg-deployment/get"));
        assert_eq!(p[0].1["includeJobDocument"], true);
    }

    #[test]
    fn a_queued_job_becomes_a_deployment_once_and_is_reported_in_order() {
        let mut l = Listener::new(THING);
        let notify = json!({"jobs": {"QUEUED": [{"jobId": "j1", "queuedAt": 10, "lastUpdatedAt": 10,
            "versionNumber": 1, "executionNumber": 1}]}, "timestamp": 10});
        let asks = published(&l.message(&topic("notify-namespace-aws-gg-deployment"), notify.to_string().as_bytes()));
        assert_eq!(asks[0].0, topic("$next/namespace-aws-gg-deployment/get"));
        let accepted = topic("$next/namespace-aws-gg-deployment/get/accepted");
        let actions = l.message(&accepted, &execution("j1", 10, document("d1")));
        let Action::Deploy { deployment_id: job_id, document: doc } = &actions[0] else { panic!("{actions:?}") };
        assert_eq!((job_id.as_str(), doc.deployment_id.as_str()), ("j1", "d1"));
        assert_eq!(l.running(), Some("j1"));
        assert!(l.message(&accepted, &execution("j1", 10, document("d1"))).is_empty(), "the same job again");

        let started = published(&l.deployment_started("j1"));
        assert_eq!(started[0].0, topic("j1/namespace-aws-gg-deployment/update"));
        assert_eq!(started[0].1["status"], "IN_PROGRESS");
        let ok = JobStatusDetails { detailed_status: Some(DetailedDeploymentStatus::Successful), ..Default::default() };
        assert!(l.deployment_finished("j1", JobExecutionStatus::Succeeded, &ok).is_empty(), "one update at a time");
        assert!(l.awaiting_answer());
        let token = started[0].1["clientToken"].as_str().unwrap();
        let answer = json!({"clientToken": token, "timestamp": 11}).to_string();
        let next = published(&l.message(&topic("j1/namespace-aws-gg-deployment/update/accepted"), answer.as_bytes()));
        assert_eq!(next[0].1["status"], "SUCCEEDED");
        assert_eq!(next[0].1["statusDetails"]["detailed-deployment-status"], "SUCCESSFUL");
        assert_eq!(l.running(), None);
        let older = l.message(&accepted, &execution("j0", 5, document("d0")));
        assert!(older.is_empty(), "a job queued before the newest taken is not taken");
        let same_second = l.message(&accepted, &execution("a0", 10, document("d2")));
        assert!(matches!(&same_second[..], [Action::Deploy { .. }]), "another job queued in the same second is new");
    }

    #[test]
    fn an_unanswered_update_is_resent_after_a_reconnect_and_a_foreign_answer_is_ignored() {
        let mut l = Listener::new(THING);
        let first = published(&l.deployment_started("j1"));
        let stranger = json!({"clientToken": "not-ours"}).to_string();
        assert!(l.message(&topic("j1/namespace-aws-gg-deployment/update/accepted"), stranger.as_bytes()).is_empty());
        assert!(l.awaiting_answer());
        let again = published(&l.connected());
        assert_eq!(again.len(), 2, "the $next ask and the update again");
        assert_eq!(again[1].0, first[0].0);
        assert_ne!(again[1].1["clientToken"], first[0].1["clientToken"], "a fresh token");
        assert_eq!(published(&l.update_timed_out())[0].1["status"], "IN_PROGRESS");
    }

    #[test]
    fn an_empty_notification_cancels_the_running_deployment() {
        let mut l = Listener::new(THING);
        let accepted = topic("$next/namespace-aws-gg-deployment/get/accepted");
        l.message(&accepted, &execution("j1", 10, document("d1")));
        let empty = json!({"jobs": {}, "timestamp": 12}).to_string();
        assert_eq!(
            l.message(&topic("notify-namespace-aws-gg-deployment"), empty.as_bytes()),
            vec![Action::Cancel { deployment_id: "j1".into() }]
        );
    }

    #[test]
    fn a_bad_document_is_reported_failed_and_bad_messages_change_nothing() {
        let mut l = Listener::new(THING);
        let accepted = topic("$next/namespace-aws-gg-deployment/get/accepted");
        let actions = published(&l.message(&accepted, &execution("j9", 10, json!({"components": "nope"}))));
        assert_eq!(actions[0].0, topic("j9/namespace-aws-gg-deployment/update"));
        assert_eq!(actions[0].1["status"], "FAILED");
        assert_eq!(actions[0].1["statusDetails"]["detailed-deployment-status"], "FAILED_NO_STATE_CHANGE");
        assert_eq!(l.running(), None);
        for (t, p) in [
            (topic("notify-namespace-aws-gg-deployment"), b"not json".as_slice()),
            (accepted.clone(), b"{".as_slice()),
            ("$aws/things/other/jobs/notify-namespace-aws-gg-deployment".to_owned(), b"{\"jobs\":{}}".as_slice()),
            (topic("notify"), b"{\"jobs\":{}}".as_slice()),
        ] {
            assert!(l.message(&t, p).is_empty(), "{t}");
        }
    }

    #[test]
    fn an_empty_answer_asks_again_only_while_queued_notifications_wait() {
        let mut l = Listener::new(THING);
        let notify = json!({"jobs": {"QUEUED": [{"jobId": "j1", "queuedAt": 10, "lastUpdatedAt": 10,
            "versionNumber": 1, "executionNumber": 1}]}, "timestamp": 10})
        .to_string();
        let n = topic("notify-namespace-aws-gg-deployment");
        l.message(&n, notify.as_bytes());
        l.message(&n, notify.as_bytes());
        let accepted = topic("$next/namespace-aws-gg-deployment/get/accepted");
        let empty = json!({"timestamp": 11}).to_string();
        assert_eq!(published(&l.message(&accepted, empty.as_bytes())).len(), 1, "one notification still waits");
        assert!(l.message(&accepted, empty.as_bytes()).is_empty(), "none waits any more");
    }
}
