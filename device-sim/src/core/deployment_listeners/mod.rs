//! How cloud deployments reach the core, as the nucleus receives them: thing-group
//! deployments through IoT jobs in the `aws-gg-deployment` namespace ([`jobs`]),
//! thing deployments through the `AWSManagedGreengrassV2Deployment` shadow
//! ([`shadow`]). Both are pure: they take MQTT messages and the deployment
//! engine's events and return [`Action`]s; the caller does the MQTT (QoS 1) and
//! runs the deployments.

pub mod jobs;
pub mod shadow;

use cloud_api::greengrass::DeploymentDocument;

/// What the caller must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Publish at QoS 1.
    Publish {
        /// Topic.
        topic: String,
        /// JSON payload.
        payload: Vec<u8>,
    },
    /// Start a cloud deployment (its id: the job id, or the configuration ARN of a thing deployment).
    Deploy {
        /// The deployment id.
        deployment_id: String,
        /// The deployment document.
        document: Box<DeploymentDocument>,
    },
    /// The cloud cancelled this deployment: cancel it if it has not applied yet.
    Cancel {
        /// The deployment id.
        deployment_id: String,
    },
}
