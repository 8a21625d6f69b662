//! The core's deployments from the cloud: thing-group deployments (IoT jobs in the
//! `aws-gg-deployment` namespace) and thing deployments (the `AWSManagedGreengrassV2Deployment`
//! shadow) reach the one deployment engine ([`super::deployment`]) that local deployments use,
//! and the engine's statuses go back the way each came.
//!
//! The nucleus's `DeploymentService` does this with its `IotJobsHelper` and
//! `ShadowDeploymentListener`; here the two listeners are pure machines
//! ([`super::deployment_listeners`]) and this task is their shell: it subscribes to their
//! topics over the IoT Core bridge (QoS 1), tells them when the connection comes up, feeds them
//! the messages and the engine's status changes, publishes what they say, queues what they
//! deploy and cancels what they cancel. A job status update unanswered for
//! [`UPDATE_ANSWER_TIMEOUT`] is sent again.
//!
//! The core device's IoT policy must allow the listeners' topics
//! (`cloud/provision/policies/greengrass-core-deployments.json`): an MQTT 3.1.1 client is
//! disconnected for a publish its policy denies.

use std::sync::Arc;
use std::time::Duration;

use cloud_api::greengrass::{DEPLOYMENT_SHADOW_NAME, DetailedDeploymentStatus, JobStatusDetails};
use cloud_api::ipc::model::{DeploymentStatus, Qos};
use cloud_api::jobs::JobExecutionStatus;
use tokio::sync::{broadcast, mpsc, watch};

use super::deployment::{DeploymentEvent, Deployments, Origin};
use super::deployment_listeners::{Action, jobs, shadow};
use super::services::IotCoreBridge;

/// How long a job status update may go unanswered before it is sent again.
pub const UPDATE_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Which listener a message or a deployment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Jobs,
    Shadow,
}

/// The two listeners.
struct Listeners {
    jobs: jobs::Listener,
    shadow: shadow::Listener,
}

impl Listeners {
    /// The deployment shadow's topics go to the shadow listener, the rest (Jobs) to the jobs one.
    fn source_of_topic(topic: &str) -> Source {
        let shadow = format!("/shadow/name/{DEPLOYMENT_SHADOW_NAME}/");
        if topic.contains(&shadow) { Source::Shadow } else { Source::Jobs }
    }

    fn connected(&mut self) -> Vec<(Source, Action)> {
        let mut out = tag(Source::Jobs, self.jobs.connected());
        out.extend(tag(Source::Shadow, self.shadow.connected()));
        out
    }

    fn message(&mut self, topic: &str, payload: &[u8]) -> Vec<(Source, Action)> {
        match Self::source_of_topic(topic) {
            Source::Jobs => tag(Source::Jobs, self.jobs.message(topic, payload)),
            Source::Shadow => tag(Source::Shadow, self.shadow.message(topic, payload)),
        }
    }

    /// The engine's status change of a cloud deployment, told to the listener it came from.
    fn deployment(&mut self, event: &DeploymentEvent) -> Vec<(Source, Action)> {
        let source = match event.origin {
            Origin::Local => return Vec::new(),
            Origin::ThingGroup { .. } => Source::Jobs,
            Origin::Thing { .. } => Source::Shadow,
        };
        let id = &event.deployment.deployment_id;
        let actions = match event.deployment.status {
            DeploymentStatus::InProgress => match source {
                Source::Jobs => self.jobs.deployment_started(id),
                Source::Shadow => self.shadow.deployment_started(id),
            },
            DeploymentStatus::Succeeded | DeploymentStatus::Failed => {
                let details =
                    event.deployment.deployment_status_details.as_ref().map(JobStatusDetails::from).unwrap_or_default();
                let status = match (event.deployment.status, details.detailed_status) {
                    (DeploymentStatus::Succeeded, _) => JobExecutionStatus::Succeeded,
                    (_, Some(DetailedDeploymentStatus::Rejected)) => JobExecutionStatus::Rejected,
                    _ => JobExecutionStatus::Failed,
                };
                match source {
                    Source::Jobs => self.jobs.deployment_finished(id, status, &details),
                    Source::Shadow => self.shadow.deployment_finished(id, status, &details),
                }
            }
            // Queued, or cancelled at the cloud's word: nothing to tell it.
            DeploymentStatus::Queued | DeploymentStatus::Canceled => Vec::new(),
        };
        tag(source, actions)
    }

    /// A deployment the engine would not take: reported as failed with nothing changed.
    fn refused(&mut self, source: Source, id: &str, cause: String) -> Vec<(Source, Action)> {
        let details = JobStatusDetails {
            detailed_status: Some(DetailedDeploymentStatus::FailedNoStateChange),
            failure_cause: Some(cause),
            error_stack: vec!["DEPLOYMENT_FAILURE".into(), "REQUEST_ERROR".into()],
            error_types: vec!["REQUEST_ERROR".into()],
        };
        let actions = match source {
            Source::Jobs => self.jobs.deployment_finished(id, JobExecutionStatus::Failed, &details),
            Source::Shadow => self.shadow.deployment_finished(id, JobExecutionStatus::Failed, &details),
        };
        tag(source, actions)
    }
}

fn tag(source: Source, actions: Vec<Action>) -> Vec<(Source, Action)> {
    actions.into_iter().map(|a| (source, a)).collect()
}

/// Runs the listeners of core `thing` (nucleus version `ggc_version`) until the bridge's
/// `connection` state or the engine's events close.
pub async fn run(
    thing: String,
    ggc_version: String,
    bridge: Arc<dyn IotCoreBridge>,
    mut connection: watch::Receiver<bool>,
    deployments: Deployments,
) {
    let mut listeners =
        Listeners { jobs: jobs::Listener::new(&thing), shadow: shadow::Listener::new(&thing, &ggc_version) };
    let (tx, mut messages) = mpsc::channel(64);
    let filters: Vec<String> =
        listeners.jobs.subscriptions().into_iter().chain(listeners.shadow.subscriptions()).collect();
    for filter in filters {
        match bridge.subscribe(&filter, Qos::AtLeastOnce).await {
            Ok(mut sub) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(m) = sub.recv().await {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(%filter, "cloud deployments: cannot subscribe: {e}"),
        }
    }
    drop(tx);
    let mut events = deployments.subscribe();
    let mut pending = if *connection.borrow_and_update() { listeners.connected() } else { Vec::new() };
    let mut answer_deadline: Option<tokio::time::Instant> = None;
    loop {
        for (source, action) in std::mem::take(&mut pending) {
            match action {
                Action::Publish { topic, payload } => {
                    if let Err(e) = bridge.publish(&topic, Qos::AtLeastOnce, payload, false).await {
                        tracing::warn!(%topic, "cloud deployments: cannot publish: {e}");
                    }
                }
                Action::Deploy { deployment_id, document } => {
                    let origin = match source {
                        Source::Jobs => Origin::ThingGroup {
                            configuration_arn: document.configuration_arn.clone(),
                            deployment_id: document.deployment_id.clone(),
                        },
                        Source::Shadow => Origin::Thing {
                            configuration_arn: document.configuration_arn.clone(),
                            deployment_id: document.deployment_id.clone(),
                        },
                    };
                    tracing::info!(id = %deployment_id, ?origin, "cloud deployment received");
                    if let Err(e) = deployments.submit_cloud(&deployment_id, origin, &document) {
                        pending.extend(listeners.refused(source, &deployment_id, e.to_string()));
                    }
                }
                Action::Cancel { deployment_id } => {
                    if deployments.cancel_queued(&deployment_id) {
                        tracing::info!(id = %deployment_id, "cloud deployment cancelled before it ran");
                    } else {
                        tracing::info!(id = %deployment_id, "the cloud cancelled a deployment already under way");
                    }
                }
            }
        }
        if !pending.is_empty() {
            continue;
        }
        if listeners.jobs.awaiting_answer() {
            answer_deadline.get_or_insert_with(|| tokio::time::Instant::now() + UPDATE_ANSWER_TIMEOUT);
        } else {
            answer_deadline = None;
        }
        let deadline = answer_deadline;
        tokio::select! {
            changed = connection.changed() => {
                if changed.is_err() {
                    return;
                }
                if *connection.borrow_and_update() {
                    answer_deadline = None;
                    pending = listeners.connected();
                }
            }
            Some(m) = messages.recv() => {
                pending = listeners.message(&m.topic_name, m.payload.as_bytes());
            }
            event = events.recv() => match event {
                Ok(event) => pending = listeners.deployment(&event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "cloud deployments: status changes were missed");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = sleep_until(deadline) => {
                answer_deadline = None;
                pending = tag(Source::Jobs, listeners.jobs.update_timed_out());
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
