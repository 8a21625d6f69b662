//! The interfaces the core's services reach each other through. They sit below every
//! service: a service implements one of them or holds an `Arc<dyn …>` of one, and only the
//! composition root ([`super::runtime`]) knows which implementation is behind it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use cloud_api::ipc::model::{
    CreateLocalDeploymentRequest, LocalDeployment, MqttMessage, PayloadFormat, PublishProperties, Qos, UserProperty,
};
use tokio::sync::{mpsc, watch};

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
    /// Publishes a message with `retain` and the MQTT 5 properties of a PublishToIoTCore
    /// request. A bridge that cannot carry the properties (MQTT 3.1.1) drops them, as this
    /// default does.
    fn publish_message(
        &self,
        topic: &str,
        qos: Qos,
        payload: Vec<u8>,
        properties: &PublishProperties,
    ) -> BoxFuture<'_, Result<(), BridgeError>> {
        self.publish(topic, qos, payload, properties.retain.unwrap_or(false))
    }
    /// Subscribes to a filter; messages arrive on the receiver until it is dropped.
    fn subscribe(&self, filter: &str, qos: Qos) -> BoxFuture<'_, Result<mpsc::Receiver<MqttMessage>, BridgeError>>;
}

/// The most bytes of user properties (keys and values) one message may carry: IoT Core's
/// MQTT 5 limit on user properties.
pub const MAX_USER_PROPERTIES_BYTES: usize = 8 * 1024;
/// An MQTT string or binary field is at most this long (two-byte length prefix).
const MAX_MQTT_FIELD_BYTES: usize = u16::MAX as usize;

fn check_mqtt_string(what: &str, s: &str) -> Result<(), String> {
    if s.len() > MAX_MQTT_FIELD_BYTES {
        return Err(format!("{what} is {} bytes, over MQTT's {MAX_MQTT_FIELD_BYTES}", s.len()));
    }
    if s.contains('\0') {
        return Err(format!("{what} contains the null character, which MQTT strings may not"));
    }
    Ok(())
}

/// Checks the MQTT 5 members of a PublishToIoTCore request (with its `payload`) before
/// anything is spooled, whatever the bridge's MQTT version: a message the broker would refuse
/// as malformed must never reach the spool, or it would be sent again after every reconnect.
/// `Err` is the reason for an `InvalidArgumentsError`.
pub fn check_mqtt5_members(props: &PublishProperties, payload: &[u8]) -> Result<(), String> {
    if props.payload_format == Some(PayloadFormat::Utf8) && std::str::from_utf8(payload).is_err() {
        return Err("payloadFormat is UTF-8 but the payload is not valid UTF-8".into());
    }
    if let Some(secs) = props.message_expiry_interval_seconds
        && u32::try_from(secs).is_err()
    {
        return Err(format!("messageExpiryIntervalSeconds {secs} is over MQTT's maximum of {}", u32::MAX));
    }
    if let Some(topic) = &props.response_topic {
        cloud_api::topic::validate_topic_name(topic)
            .map_err(|e| format!("responseTopic {topic:?} is not a valid topic name: {e}"))?;
    }
    if let Some(data) = &props.correlation_data
        && data.0.len() > MAX_MQTT_FIELD_BYTES
    {
        return Err(format!("correlationData is {} bytes, over MQTT's {MAX_MQTT_FIELD_BYTES}", data.0.len()));
    }
    if let Some(content_type) = &props.content_type {
        check_mqtt_string("contentType", content_type)?;
    }
    let mut total = 0usize;
    for UserProperty { key, value } in props.user_properties.iter().flatten() {
        check_mqtt_string("a user property key", key)?;
        check_mqtt_string("a user property value", value)?;
        total += key.len() + value.len();
    }
    if total > MAX_USER_PROPERTIES_BYTES {
        return Err(format!(
            "userProperties total {total} bytes, over IoT Core's {MAX_USER_PROPERTIES_BYTES}-byte limit"
        ));
    }
    Ok(())
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

/// A request to restart the core: the `device-sim core` command waits for it, stops the core
/// properly and exits with code 100, so the launcher ([`crate::launcher`]) starts it again, into
/// a staged nucleus update when there is one (the nucleus's `REQUEST_RESTART`). Clones share
/// the request.
#[derive(Debug, Clone)]
pub struct RestartRequest {
    requested: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for RestartRequest {
    fn default() -> Self {
        Self { requested: std::sync::Arc::new(watch::Sender::new(false)) }
    }
}

impl RestartRequest {
    /// Asks for the restart; asking again changes nothing.
    pub fn request(&self) {
        self.requested.send_replace(true);
    }

    /// Whether a restart has been asked for.
    pub fn is_requested(&self) -> bool {
        *self.requested.borrow()
    }

    /// Resolves once a restart is asked for (at once if it was already); never when every
    /// handle is dropped without asking.
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.requested.subscribe();
        async move {
            if receiver.wait_for(|requested| *requested).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// A component that put an update off, and for how long in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    /// The component that deferred.
    pub component: String,
    /// The `message` of its last DeferComponentUpdate.
    pub message: Option<String>,
    /// The sum of the `recheckAfterMs` it asked for that held the update.
    pub deferred_for: Duration,
}

/// Why a proposed configuration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// The component reported REJECTED.
    Rejected,
    /// The component did not report in time (the nucleus fails the deployment then, too),
    /// or closed its validation stream without reporting.
    NoReport,
}

/// Why a configuration update was refused: the component and its message. Fails the
/// deployment with nothing changed (`FAILED_NO_STATE_CHANGE`, `COMPONENT_CONFIGURATION_NOT_VALID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationRejected {
    /// The component whose configuration it is.
    pub component: String,
    /// Its report's message, or why there was no report.
    pub message: String,
    /// Rejected, or no report.
    pub kind: RejectionKind,
}

impl std::fmt::Display for ValidationRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The nucleus's wording (`DynamicComponentConfigurationValidator`).
        match self.kind {
            RejectionKind::Rejected => write!(
                f,
                "Components reported that their to-be-deployed configuration is invalid {{ name = {}, message = {} }}",
                self.component, self.message
            ),
            RejectionKind::NoReport => write!(
                f,
                "Error while waiting for validation report for one or more components: {}: {}",
                self.component, self.message
            ),
        }
    }
}

impl std::error::Error for ValidationRejected {}

/// What a deployment asks of the components before and after it changes them: the notices of
/// SubscribeToComponentUpdates (with DeferComponentUpdate) and the validation of
/// SubscribeToValidateConfigurationUpdates (with SendConfigurationValidityReport).
/// Implemented by [`super::update_gate::UpdateGate`], which documents the exact semantics.
pub trait ComponentUpdateGate: Send + Sync {
    /// Sends a preUpdateEvent to every component subscribed to component updates and waits as
    /// the nucleus does: each round waits up to `timeout` for the answers; a
    /// DeferComponentUpdate with `recheckAfterMs` > 0 puts the update off by the longest asked
    /// for, then the notice is sent again; no answer in time, or 0, lets it go. Returns who
    /// deferred and for how long. Dropping the future abandons the wait (the caller's cap).
    fn pre_update(
        &self,
        deployment_id: &str,
        is_ggc_restarting: bool,
        timeout: Duration,
    ) -> BoxFuture<'_, Vec<Deferral>>;
    /// Sends a postUpdateEvent to the same subscribers.
    fn post_update(&self, deployment_id: &str);
    /// Sends a validateConfigurationUpdateEvent to each named component that subscribed, with
    /// its proposed configuration, and waits up to `timeout` for every report. A REJECTED
    /// report, or a subscriber that does not report in time, fails it.
    fn validate(
        &self,
        deployment_id: &str,
        configurations: BTreeMap<String, serde_json::Value>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), ValidationRejected>>;
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
    async fn a_restart_request_wakes_every_waiter_once_asked_and_nobody_otherwise() {
        let restart = RestartRequest::default();
        let before = restart.requested();
        let handle = restart.clone();
        assert!(!restart.is_requested());
        let not_yet = tokio::time::timeout(std::time::Duration::from_millis(20), restart.requested()).await;
        assert!(not_yet.is_err(), "nothing asked yet");
        handle.request();
        let soon = std::time::Duration::from_secs(5);
        tokio::time::timeout(soon, before).await.expect("a waiter from before the request is woken");
        tokio::time::timeout(soon, restart.requested()).await.expect("a waiter from after it returns at once");
        assert!(restart.is_requested());

        let unasked = RestartRequest::default();
        let waiter = unasked.requested();
        drop(unasked);
        let dropped = tokio::time::timeout(std::time::Duration::from_millis(20), waiter).await;
        assert!(dropped.is_err(), "dropping every handle is not a request");
    }

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
