//! The interfaces the core's services reach each other through. They sit below every
//! service: a service implements one of them or holds an `Arc<dyn …>` of one, and only the
//! composition root ([`super::runtime`]) knows which implementation is behind it.

use std::future::Future;
use std::pin::Pin;

use cloud_api::ipc::model::{CreateLocalDeploymentRequest, LocalDeployment, MqttMessage, Qos};
use tokio::sync::mpsc;

/// A boxed future, for the object-safe bridge trait.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why the IoT Core bridge could not do it (answered as `ServiceError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BridgeError(pub String);

/// The core's one MQTT connection to AWS IoT Core, shared by all components'
/// PublishToIoTCore / SubscribeToIoTCore and by the shadow sync. Implemented by the MQTT
/// bridge ([`super::bridge::MqttBridge`]).
pub trait IotCoreBridge: Send + Sync {
    /// Publishes a message.
    fn publish(&self, topic: &str, qos: Qos, payload: Vec<u8>, retain: bool) -> BoxFuture<'_, Result<(), BridgeError>>;
    /// Subscribes to a filter; messages arrive on the receiver until it is dropped.
    fn subscribe(&self, filter: &str, qos: Qos) -> BoxFuture<'_, Result<mpsc::Receiver<MqttMessage>, BridgeError>>;
}

/// Why a CreateLocalDeployment request is refused outright (answered as an IPC error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request is malformed (`InvalidArgumentsError`).
    #[error("{0}")]
    InvalidArguments(String),
    /// `recipeDirectoryPath` is not usable (`InvalidRecipeDirectoryPathError`).
    #[error("{0}")]
    InvalidRecipeDirectory(String),
    /// `artifactsDirectoryPath` is not usable (`InvalidArtifactsDirectoryPathError`).
    #[error("{0}")]
    InvalidArtifactsDirectory(String),
    /// The core is shutting down (`ServiceError`).
    #[error("the deployment queue is closed: the core is shutting down")]
    Closed,
}

/// The local deployment queue, as the IPC server serves it (the Greengrass CLI's operations).
/// Implemented by [`super::deployment::Deployments`].
pub trait LocalDeploymentService: Send + Sync {
    /// CreateLocalDeployment: queues a deployment, returns its id.
    fn create(&self, request: CreateLocalDeploymentRequest) -> Result<String, RequestError>;
    /// GetLocalDeploymentStatus.
    fn status(&self, deployment_id: &str) -> Option<LocalDeployment>;
    /// ListLocalDeployments.
    fn list(&self) -> Vec<LocalDeployment>;
}

/// True when `id` reads as a UUID (8-4-4-4-12 hex digits), as the nucleus requires of ids.
pub fn is_uuid(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Test doubles of these interfaces, shared by the unit tests here and the integration tests
/// (`tests/support/`), which include the same file.
#[cfg(test)]
#[path = "../../tests/support/fake_bridge.rs"]
pub(crate) mod fake_bridge;

#[cfg(test)]
mod tests {
    use super::fake_bridge::FakeIotCoreBridge;
    use super::*;

    #[tokio::test]
    async fn the_fake_bridge_records_publishes_and_delivers_to_matching_subscriptions() {
        let bridge = FakeIotCoreBridge::default();
        let mut sub = bridge.subscribe("dt/pump/+", Qos::AtLeastOnce).await.unwrap();
        bridge.wait_for_subscription().await;
        assert_eq!(bridge.inject("dt/pump/1", b"x"), 1);
        assert_eq!(bridge.inject("other", b"y"), 0);
        assert_eq!(sub.recv().await.unwrap().topic_name, "dt/pump/1");
        bridge.publish("up", Qos::AtMostOnce, b"p".to_vec(), false).await.unwrap();
        assert_eq!(bridge.published(), [("up".to_owned(), Qos::AtMostOnce, b"p".to_vec(), false)]);
    }
}
