//! Greengrass IPC operation shapes: requests, responses and stream events, with AWS's JSON
//! member names (`awsiot/greengrasscoreipc/model.py`, `_to_payload`/`_from_payload`).
//!
//! Wire rules the types encode:
//! - blobs (`payload`, `message` of a binary message, `correlationData`) are base64 strings
//!   ([`Blob`]);
//! - timestamps (`UpdateConfigurationRequest.timestamp`, `ListNamedShadowsForThingResponse.timestamp`)
//!   are epoch seconds as a JSON number, possibly fractional (Python `datetime.timestamp()`,
//!   Java `InstantSerializerDeserializer`);
//! - `qos` and `payloadFormat` are the strings `"0"`/`"1"`;
//! - unions (`publishMessage`, SubscribeToTopic events, component update events) hold
//!   exactly one member, so they are Rust enums;
//! - absent members are omitted, never `null`; received `null`s read as absent.
//!
//! Members the nucleus requires are plain fields, so a server reading a request without
//! them fails to deserialise it and answers `InvalidArgumentsError`. Unknown members are
//! ignored, as AWS's clients do.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Binary data, base64 (standard alphabet, padded) in JSON. Decoding accepts missing padding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Blob(pub Vec<u8>);

const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

impl Blob {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Self {
        Self(v.to_vec())
    }
}

impl From<&str> for Blob {
    fn from(v: &str) -> Self {
        Self(v.as_bytes().to_vec())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes()).map(Blob).map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
    }
}

/// Reads `null` as the type's default (for members that have one).
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

// ---- enums ----

/// `ReportedLifecycleState`: what a component may report with UpdateState.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReportedLifecycleState {
    /// `RUNNING`.
    Running,
    /// `ERRORED`.
    Errored,
}

/// `QOS`: MQTT quality of service, `"0"` or `"1"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Qos {
    /// `"0"`.
    #[serde(rename = "0")]
    AtMostOnce,
    /// `"1"`.
    #[serde(rename = "1")]
    AtLeastOnce,
}

/// `PayloadFormat` (MQTT 5), `"0"` bytes or `"1"` UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayloadFormat {
    /// `"0"`.
    #[serde(rename = "0")]
    Bytes,
    /// `"1"`.
    #[serde(rename = "1")]
    Utf8,
}

/// `ReceiveMode` of SubscribeToTopic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReceiveMode {
    /// `RECEIVE_ALL_MESSAGES`: include the subscriber's own publishes (the default).
    ReceiveAllMessages,
    /// `RECEIVE_MESSAGES_FROM_OTHERS`: skip them.
    ReceiveMessagesFromOthers,
}

/// `RequestStatus` of RestartComponent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RequestStatus {
    /// `SUCCEEDED`.
    Succeeded,
    /// `FAILED`.
    Failed,
}

// ---- shared structures ----

/// `UserProperty` (MQTT 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProperty {
    /// `key`.
    pub key: String,
    /// `value`.
    pub value: String,
}

/// `MessageContext`: where a local pub/sub message was published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageContext {
    /// `topic`.
    #[serde(default, deserialize_with = "nullable")]
    pub topic: String,
}

/// `JsonMessage`: a local pub/sub message whose body is JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonMessage {
    /// `message`: any JSON (AWS's model types it as a document map).
    #[serde(default)]
    pub message: Value,
    /// `context`, set on received messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<MessageContext>,
}

/// `BinaryMessage`: a local pub/sub message with a binary body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryMessage {
    /// `message`, base64.
    #[serde(default, deserialize_with = "nullable")]
    pub message: Blob,
    /// `context`, set on received messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<MessageContext>,
}

/// `PublishMessage`, and the `SubscriptionResponseMessage` event: a union of
/// `jsonMessage` and `binaryMessage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PubSubMessage {
    /// `{"jsonMessage": {...}}`.
    #[serde(rename = "jsonMessage")]
    Json(JsonMessage),
    /// `{"binaryMessage": {...}}`.
    #[serde(rename = "binaryMessage")]
    Binary(BinaryMessage),
}

/// `PublishMessage`, the body of PublishToTopic.
pub type PublishMessage = PubSubMessage;

/// `SubscriptionResponseMessage`, the SubscribeToTopic stream event (with `context` set).
pub type SubscriptionResponseMessage = PubSubMessage;

impl PubSubMessage {
    /// A JSON message to publish.
    pub fn json(message: Value) -> Self {
        Self::Json(JsonMessage { message, context: None })
    }

    /// A binary message to publish.
    pub fn binary(message: impl Into<Blob>) -> Self {
        Self::Binary(BinaryMessage { message: message.into(), context: None })
    }

    /// The topic a received message was published on.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Self::Json(m) => m.context.as_ref(),
            Self::Binary(m) => m.context.as_ref(),
        }
        .map(|c| c.topic.as_str())
    }
}

/// The members `MQTTMessage` and `PublishToIoTCoreRequest` share: `retain` and the MQTT 5
/// properties, each omitted when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishProperties {
    /// `retain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain: Option<bool>,
    /// `userProperties`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_properties: Option<Vec<UserProperty>>,
    /// `messageExpiryIntervalSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_expiry_interval_seconds: Option<u64>,
    /// `correlationData`, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<Blob>,
    /// `responseTopic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<String>,
    /// `payloadFormat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_format: Option<PayloadFormat>,
    /// `contentType`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// `MQTTMessage`: a message received from IoT Core.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MqttMessage {
    /// `topicName`.
    #[serde(default, deserialize_with = "nullable")]
    pub topic_name: String,
    /// `payload`, base64.
    #[serde(default, deserialize_with = "nullable")]
    pub payload: Blob,
    /// `retain` and the MQTT 5 properties, members of this shape on the wire.
    #[serde(flatten)]
    pub properties: PublishProperties,
}

// ---- UpdateState ----

/// `UpdateStateRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStateRequest {
    /// `state`.
    pub state: ReportedLifecycleState,
}

/// `UpdateStateResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStateResponse {}

// ---- configuration ----

/// `GetConfigurationRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetConfigurationRequest {
    /// `componentName`; absent means the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_name: Option<String>,
    /// `keyPath`; empty means the whole configuration.
    #[serde(default, deserialize_with = "nullable")]
    pub key_path: Vec<String>,
}

/// `GetConfigurationResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetConfigurationResponse {
    /// `componentName`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_name: Option<String>,
    /// `value`: the configuration at the key path.
    #[serde(default)]
    pub value: Value,
}

/// `UpdateConfigurationRequest`: merges `valueToMerge` at `keyPath` of the caller's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateConfigurationRequest {
    /// `keyPath`; empty means the root.
    #[serde(default, deserialize_with = "nullable")]
    pub key_path: Vec<String>,
    /// `timestamp`: epoch seconds; the update is refused if the stored value is newer.
    pub timestamp: f64,
    /// `valueToMerge`.
    pub value_to_merge: Value,
}

/// `UpdateConfigurationResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConfigurationResponse {}

/// `SubscribeToConfigurationUpdateRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeToConfigurationUpdateRequest {
    /// `componentName`; absent means the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_name: Option<String>,
    /// `keyPath`; empty means any key.
    #[serde(default, deserialize_with = "nullable")]
    pub key_path: Vec<String>,
}

/// `SubscribeToConfigurationUpdateResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeToConfigurationUpdateResponse {}

/// `ConfigurationUpdateEvent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationUpdateEvent {
    /// `componentName`.
    #[serde(default, deserialize_with = "nullable")]
    pub component_name: String,
    /// `keyPath` of the changed value.
    #[serde(default, deserialize_with = "nullable")]
    pub key_path: Vec<String>,
}

/// `ConfigurationUpdateEvents`: the SubscribeToConfigurationUpdate stream event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationUpdateEvents {
    /// `configurationUpdateEvent`.
    pub configuration_update_event: ConfigurationUpdateEvent,
}

// ---- local pub/sub ----

/// `PublishToTopicRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishToTopicRequest {
    /// `topic`.
    pub topic: String,
    /// `publishMessage`.
    pub publish_message: PubSubMessage,
}

/// `PublishToTopicResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishToTopicResponse {}

/// `SubscribeToTopicRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeToTopicRequest {
    /// `topic`: a topic filter with MQTT wildcards.
    pub topic: String,
    /// `receiveMode`; absent means RECEIVE_ALL_MESSAGES.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_mode: Option<ReceiveMode>,
}

/// `SubscribeToTopicResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeToTopicResponse {
    /// `topicName` (deprecated by AWS, may be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
}

// ---- IoT Core ----

/// `PublishToIoTCoreRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishToIoTCoreRequest {
    /// `topicName`.
    pub topic_name: String,
    /// `qos`.
    pub qos: Qos,
    /// `payload`, base64; omitted when empty.
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Blob::is_empty")]
    pub payload: Blob,
    /// `retain` and the MQTT 5 properties, members of this shape on the wire.
    #[serde(flatten)]
    pub properties: PublishProperties,
}

impl PublishToIoTCoreRequest {
    /// A plain publish: topic, QoS and payload, no MQTT 5 properties.
    pub fn new(topic_name: impl Into<String>, qos: Qos, payload: impl Into<Blob>) -> Self {
        Self { topic_name: topic_name.into(), qos, payload: payload.into(), properties: PublishProperties::default() }
    }
}

/// `PublishToIoTCoreResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishToIoTCoreResponse {}

/// `SubscribeToIoTCoreRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeToIoTCoreRequest {
    /// `topicName`: a topic filter with MQTT wildcards.
    pub topic_name: String,
    /// `qos`.
    pub qos: Qos,
}

/// `SubscribeToIoTCoreResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeToIoTCoreResponse {}

/// `IoTCoreMessage`: the SubscribeToIoTCore stream event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoTCoreMessage {
    /// `message`.
    pub message: MqttMessage,
}

// ---- shadows ----

/// `GetThingShadowRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetThingShadowRequest {
    /// `thingName`.
    pub thing_name: String,
    /// `shadowName`; absent or empty means the classic shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_name: Option<String>,
}

/// `GetThingShadowResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetThingShadowResponse {
    /// `payload`: the shadow document as JSON bytes, base64 on the wire.
    #[serde(default, deserialize_with = "nullable")]
    pub payload: Blob,
}

/// `UpdateThingShadowRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateThingShadowRequest {
    /// `thingName`.
    pub thing_name: String,
    /// `shadowName`; absent or empty means the classic shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_name: Option<String>,
    /// `payload`: the update document as JSON bytes, base64 on the wire.
    pub payload: Blob,
}

/// `UpdateThingShadowResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateThingShadowResponse {
    /// `payload`: the accepted document (as `update/accepted`).
    #[serde(default, deserialize_with = "nullable")]
    pub payload: Blob,
}

/// `DeleteThingShadowRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteThingShadowRequest {
    /// `thingName`.
    pub thing_name: String,
    /// `shadowName`; absent or empty means the classic shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_name: Option<String>,
}

/// `DeleteThingShadowResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteThingShadowResponse {
    /// `payload` (as `delete/accepted`).
    #[serde(default, deserialize_with = "nullable")]
    pub payload: Blob,
}

/// `ListNamedShadowsForThingRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListNamedShadowsForThingRequest {
    /// `thingName`.
    pub thing_name: String,
    /// `nextToken` from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// `pageSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
}

/// `ListNamedShadowsForThingResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListNamedShadowsForThingResponse {
    /// `results`: shadow names.
    #[serde(default, deserialize_with = "nullable")]
    pub results: Vec<String>,
    /// `timestamp`: epoch seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    /// `nextToken`, when more pages follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

// ---- component lifecycle ----

/// `SubscribeToComponentUpdatesRequest` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeToComponentUpdatesRequest {}

/// `SubscribeToComponentUpdatesResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeToComponentUpdatesResponse {}

/// `PreComponentUpdateEvent`: a deployment is about to update or restart components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreComponentUpdateEvent {
    /// `deploymentId`.
    #[serde(default, deserialize_with = "nullable")]
    pub deployment_id: String,
    /// `isGgcRestarting`: the nucleus itself will restart.
    #[serde(default, deserialize_with = "nullable")]
    pub is_ggc_restarting: bool,
}

/// `PostComponentUpdateEvent`: the deployment finished updating components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostComponentUpdateEvent {
    /// `deploymentId`.
    #[serde(default, deserialize_with = "nullable")]
    pub deployment_id: String,
}

/// `ComponentUpdatePolicyEvents`: the SubscribeToComponentUpdates stream event, a union.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentUpdatePolicyEvents {
    /// `{"preUpdateEvent": {...}}`.
    #[serde(rename = "preUpdateEvent")]
    PreUpdate(PreComponentUpdateEvent),
    /// `{"postUpdateEvent": {...}}`.
    #[serde(rename = "postUpdateEvent")]
    PostUpdate(PostComponentUpdateEvent),
}

/// `DeferComponentUpdateRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeferComponentUpdateRequest {
    /// `deploymentId` from the PreUpdate event.
    pub deployment_id: String,
    /// `message`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `recheckAfterMs`: ask again after this long; 0 lets the update go ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck_after_ms: Option<u64>,
}

/// `DeferComponentUpdateResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferComponentUpdateResponse {}

// ---- configuration validation ----

/// `SubscribeToValidateConfigurationUpdatesRequest` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeToValidateConfigurationUpdatesRequest {}

/// `SubscribeToValidateConfigurationUpdatesResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeToValidateConfigurationUpdatesResponse {}

/// `ValidateConfigurationUpdateEvent`: a deployment proposes this configuration for the
/// subscriber. AWS's model has no `componentName` member: the event goes to the component
/// whose configuration it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateConfigurationUpdateEvent {
    /// `configuration`: the whole proposed configuration of the component (a JSON object).
    #[serde(default)]
    pub configuration: Value,
    /// `deploymentId`: to quote in the report.
    #[serde(default, deserialize_with = "nullable")]
    pub deployment_id: String,
}

/// `ValidateConfigurationUpdateEvents`: the SubscribeToValidateConfigurationUpdates stream
/// event, a union with one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateConfigurationUpdateEvents {
    /// `validateConfigurationUpdateEvent`.
    pub validate_configuration_update_event: ValidateConfigurationUpdateEvent,
}

/// `ConfigurationValidityStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConfigurationValidityStatus {
    /// `ACCEPTED`: the component can run with it.
    Accepted,
    /// `REJECTED`: it cannot; the deployment fails with nothing changed.
    Rejected,
}

/// `ConfigurationValidityReport`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationValidityReport {
    /// `status`.
    pub status: ConfigurationValidityStatus,
    /// `deploymentId` of the validation event answered.
    pub deployment_id: String,
    /// `message`: why the configuration is not valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `SendConfigurationValidityReportRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendConfigurationValidityReportRequest {
    /// `configurationValidityReport`.
    pub configuration_validity_report: ConfigurationValidityReport,
}

/// `SendConfigurationValidityReportResponse` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendConfigurationValidityReportResponse {}

/// `RestartComponentRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartComponentRequest {
    /// `componentName`.
    pub component_name: String,
}

/// `RestartComponentResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestartComponentResponse {
    /// `restartStatus`.
    pub restart_status: RequestStatus,
    /// `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

// ---- local deployments (the Greengrass CLI's operations, service `aws.greengrass.Cli`) ----

/// `DeploymentStatus` of a local deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStatus {
    /// Waiting behind another deployment.
    Queued,
    /// Being applied.
    InProgress,
    /// Applied: every component of it is running (or finished).
    Succeeded,
    /// Not applied (see the status details).
    Failed,
    /// Cancelled before it ran.
    Canceled,
}

/// `DetailedDeploymentStatus`: how a finished local deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DetailedDeploymentStatus {
    /// Applied.
    Successful,
    /// Failed before anything on the device changed.
    FailedNoStateChange,
    /// Failed; the policy was DO_NOTHING, so the device keeps what the deployment left.
    FailedRollbackNotRequested,
    /// Failed; the previous components were restored.
    FailedRollbackComplete,
    /// Refused (by a component deferring, or an invalid configuration).
    Rejected,
}

/// `FailureHandlingPolicy` of a deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureHandlingPolicy {
    /// Restore the components that ran before (the default).
    #[default]
    Rollback,
    /// Leave the device as the failed deployment left it.
    DoNothing,
}

/// `SystemResourceLimits` of `RunWithInfo`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemResourceLimits {
    /// `memory`: KB of RAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// `cpus`: CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

/// `RunWithInfo`: the user and limits a component runs with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunWithInfo {
    /// `posixUser`: `user[:group]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub posix_user: Option<String>,
    /// `windowsUser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_user: Option<String>,
    /// `systemResourceLimits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_resource_limits: Option<SystemResourceLimits>,
}

/// `CreateLocalDeploymentRequest`: every member is optional; an empty request redeploys what
/// the device has with the recipes it already holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateLocalDeploymentRequest {
    /// `groupName`: the thing group the deployment stands for (the nucleus's default group
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// `rootComponentVersionsToAdd`: component name → exact version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_component_versions_to_add: Option<std::collections::BTreeMap<String, String>>,
    /// `rootComponentsToRemove`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_components_to_remove: Option<Vec<String>>,
    /// `componentToConfiguration`: component name → `{"MERGE": {...}, "RESET": ["/pointer"]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_to_configuration: Option<std::collections::BTreeMap<String, Value>>,
    /// `componentToRunWithInfo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_to_run_with_info: Option<std::collections::BTreeMap<String, RunWithInfo>>,
    /// `recipeDirectoryPath`: recipes to add to the device's store (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe_directory_path: Option<String>,
    /// `artifactsDirectoryPath`: artifacts laid out `{dir}/{Name}/{Version}/` (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts_directory_path: Option<String>,
    /// `failureHandlingPolicy` (ROLLBACK when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_handling_policy: Option<FailureHandlingPolicy>,
}

/// `CreateLocalDeploymentResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateLocalDeploymentResponse {
    /// `deploymentId`: a UUID.
    pub deployment_id: String,
}

/// `DeploymentStatusDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatusDetails {
    /// `detailedDeploymentStatus`.
    pub detailed_deployment_status: DetailedDeploymentStatus,
    /// `deploymentErrorStack`: error codes, most general first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_error_stack: Option<Vec<String>>,
    /// `deploymentErrorTypes`: error categories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_error_types: Option<Vec<String>>,
    /// `deploymentFailureCause`: what went wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_failure_cause: Option<String>,
}

/// `LocalDeployment`: one local deployment and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalDeployment {
    /// `deploymentId`.
    pub deployment_id: String,
    /// `status`.
    pub status: DeploymentStatus,
    /// `createdOn`: UTC, `dd-MM-yyyy HH:mm:ss z` as the nucleus writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_on: Option<String>,
    /// `deploymentStatusDetails`, once the deployment has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_status_details: Option<DeploymentStatusDetails>,
}

/// `GetLocalDeploymentStatusRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLocalDeploymentStatusRequest {
    /// `deploymentId` (a UUID).
    pub deployment_id: String,
}

/// `GetLocalDeploymentStatusResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLocalDeploymentStatusResponse {
    /// `deployment`.
    pub deployment: LocalDeployment,
}

/// `ListLocalDeploymentsRequest` (no members).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListLocalDeploymentsRequest {}

/// `ListLocalDeploymentsResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListLocalDeploymentsResponse {
    /// `localDeployments`.
    #[serde(default, deserialize_with = "nullable")]
    pub local_deployments: Vec<LocalDeployment>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).unwrap()
    }

    fn back<T: for<'de> Deserialize<'de>>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn requests_use_aws_member_names() {
        let cases: Vec<(Value, Value)> = vec![
            (wire(&UpdateStateRequest { state: ReportedLifecycleState::Running }), json!({"state": "RUNNING"})),
            (
                wire(&GetConfigurationRequest { component_name: Some("c".into()), key_path: vec!["a".into()] }),
                json!({"componentName": "c", "keyPath": ["a"]}),
            ),
            (
                wire(&UpdateConfigurationRequest { key_path: vec![], timestamp: 1.5, value_to_merge: json!({"k": 1}) }),
                json!({"keyPath": [], "timestamp": 1.5, "valueToMerge": {"k": 1}}),
            ),
            (
                wire(&PublishToTopicRequest {
                    topic: "t".into(),
                    publish_message: PubSubMessage::json(json!({"a": 1})),
                }),
                json!({"topic": "t", "publishMessage": {"jsonMessage": {"message": {"a": 1}}}}),
            ),
            (
                wire(&PublishToTopicRequest { topic: "t".into(), publish_message: PubSubMessage::binary("hi") }),
                json!({"topic": "t", "publishMessage": {"binaryMessage": {"message": "aGk="}}}),
            ),
            (
                wire(&SubscribeToTopicRequest {
                    topic: "t/#".into(),
                    receive_mode: Some(ReceiveMode::ReceiveMessagesFromOthers),
                }),
                json!({"topic": "t/#", "receiveMode": "RECEIVE_MESSAGES_FROM_OTHERS"}),
            ),
            (
                wire(&PublishToIoTCoreRequest::new("dt/x", Qos::AtLeastOnce, "{}")),
                json!({"topicName": "dt/x", "qos": "1", "payload": "e30="}),
            ),
            (
                wire(&SubscribeToIoTCoreRequest { topic_name: "a/+".into(), qos: Qos::AtMostOnce }),
                json!({"topicName": "a/+", "qos": "0"}),
            ),
            (
                wire(&UpdateThingShadowRequest {
                    thing_name: "T".into(),
                    shadow_name: Some("pump".into()),
                    payload: Blob::from("{}"),
                }),
                json!({"thingName": "T", "shadowName": "pump", "payload": "e30="}),
            ),
            (
                wire(&ListNamedShadowsForThingRequest {
                    thing_name: "T".into(),
                    next_token: None,
                    page_size: Some(10),
                }),
                json!({"thingName": "T", "pageSize": 10}),
            ),
            (
                wire(&DeferComponentUpdateRequest {
                    deployment_id: "d".into(),
                    message: Some("busy".into()),
                    recheck_after_ms: Some(1000),
                }),
                json!({"deploymentId": "d", "message": "busy", "recheckAfterMs": 1000}),
            ),
            (wire(&RestartComponentRequest { component_name: "c".into() }), json!({"componentName": "c"})),
            (wire(&SubscribeToComponentUpdatesRequest {}), json!({})),
            (wire(&SubscribeToValidateConfigurationUpdatesRequest {}), json!({})),
            (
                wire(&SendConfigurationValidityReportRequest {
                    configuration_validity_report: ConfigurationValidityReport {
                        status: ConfigurationValidityStatus::Rejected,
                        deployment_id: "d".into(),
                        message: Some("threshold < 0".into()),
                    },
                }),
                json!({"configurationValidityReport":
                    {"status": "REJECTED", "deploymentId": "d", "message": "threshold < 0"}}),
            ),
            (
                wire(&SendConfigurationValidityReportRequest {
                    configuration_validity_report: ConfigurationValidityReport {
                        status: ConfigurationValidityStatus::Accepted,
                        deployment_id: "d".into(),
                        message: None,
                    },
                }),
                json!({"configurationValidityReport": {"status": "ACCEPTED", "deploymentId": "d"}}),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn events_and_responses_read_aws_payloads() {
        let e: IoTCoreMessage = back(json!({"message": {"topicName": "a/b", "payload": "aGk=", "retain": false}}));
        assert_eq!(e.message.topic_name, "a/b");
        assert_eq!(e.message.payload.as_bytes(), b"hi");

        let e: PubSubMessage = back(json!({"jsonMessage": {"message": {"x": 1}, "context": {"topic": "t"}}}));
        assert_eq!(e.topic(), Some("t"));

        let e: ComponentUpdatePolicyEvents =
            back(json!({"preUpdateEvent": {"deploymentId": "d", "isGgcRestarting": true}}));
        assert_eq!(
            e,
            ComponentUpdatePolicyEvents::PreUpdate(PreComponentUpdateEvent {
                deployment_id: "d".into(),
                is_ggc_restarting: true
            })
        );

        let e: ComponentUpdatePolicyEvents = back(json!({"postUpdateEvent": {"deploymentId": "d"}}));
        assert_eq!(e, ComponentUpdatePolicyEvents::PostUpdate(PostComponentUpdateEvent { deployment_id: "d".into() }));

        let e: ValidateConfigurationUpdateEvents = back(json!({"validateConfigurationUpdateEvent":
            {"configuration": {"threshold": 3}, "deploymentId": "d"}}));
        assert_eq!(e.validate_configuration_update_event.configuration, json!({"threshold": 3}));
        assert_eq!(e.validate_configuration_update_event.deployment_id, "d");
        assert_eq!(
            wire(&e),
            json!({"validateConfigurationUpdateEvent": {"configuration": {"threshold": 3}, "deploymentId": "d"}})
        );

        let e: ConfigurationUpdateEvents =
            back(json!({"configurationUpdateEvent": {"componentName": "c", "keyPath": ["a", "b"]}}));
        assert_eq!(e.configuration_update_event.key_path, ["a", "b"]);

        let r: ListNamedShadowsForThingResponse =
            back(json!({"results": ["pump"], "timestamp": 1700000000.25, "nextToken": null}));
        assert_eq!((r.results.len(), r.timestamp, r.next_token), (1, Some(1700000000.25), None));

        let r: RestartComponentResponse = back(json!({"restartStatus": "SUCCEEDED"}));
        assert_eq!(r.restart_status, RequestStatus::Succeeded);

        // Java's empty responses, unknown members and nulls.
        let _: UpdateStateResponse = back(json!({}));
        let _: PublishToTopicResponse = back(json!({"somethingNew": 1}));
        let r: GetConfigurationResponse = back(json!({"componentName": "c", "value": {"k": "v"}}));
        assert_eq!(r.value, json!({"k": "v"}));
        let r: GetThingShadowResponse = back(json!({"payload": null}));
        assert!(r.payload.is_empty());
    }

    #[test]
    fn blobs_are_base64_and_bad_base64_is_rejected() {
        assert_eq!(wire(&Blob(vec![0xff, 0, 1])), json!("/wAB"));
        assert_eq!(back::<Blob>(json!("/wAB")), Blob(vec![0xff, 0, 1]));
        assert_eq!(back::<Blob>(json!("aGk")), Blob(b"hi".to_vec()), "missing padding is accepted");
        assert!(serde_json::from_value::<Blob>(json!("not base64!")).is_err());
    }

    #[test]
    fn retain_and_mqtt5_properties_are_members_of_both_shapes() {
        let properties = PublishProperties {
            retain: Some(true),
            user_properties: Some(vec![UserProperty { key: "k".into(), value: "v".into() }]),
            message_expiry_interval_seconds: Some(60),
            correlation_data: Some(Blob::from(b"id".to_vec())),
            response_topic: Some("r/t".into()),
            payload_format: Some(PayloadFormat::Utf8),
            content_type: Some("application/json".into()),
        };
        let members = json!({
            "retain": true, "userProperties": [{"key": "k", "value": "v"}],
            "messageExpiryIntervalSeconds": 60, "correlationData": "aWQ=", "responseTopic": "r/t",
            "payloadFormat": "1", "contentType": "application/json"
        });
        let mut request = PublishToIoTCoreRequest::new("a/b", Qos::AtLeastOnce, b"hi".to_vec());
        request.properties = properties.clone();
        let mut expected = json!({"topicName": "a/b", "qos": "1", "payload": "aGk="});
        expected.as_object_mut().unwrap().extend(members.as_object().unwrap().clone());
        assert_eq!(wire(&request), expected);
        assert_eq!(back::<PublishToIoTCoreRequest>(expected.clone()), request);

        let mut message = members.clone();
        message["topicName"] = json!("a/b");
        message["payload"] = json!("aGk=");
        let m: MqttMessage = back(message.clone());
        assert_eq!(m.properties, properties);
        assert_eq!(wire(&m), message);
        // Absent properties are left out, not written as null.
        assert_eq!(
            wire(&PublishToIoTCoreRequest::new("a/b", Qos::AtMostOnce, Vec::new())),
            json!({"topicName": "a/b", "qos": "0"})
        );
    }

    #[test]
    fn requests_missing_required_members_do_not_parse() {
        assert!(serde_json::from_value::<UpdateStateRequest>(json!({})).is_err());
        assert!(serde_json::from_value::<UpdateStateRequest>(json!({"state": "BROKEN"})).is_err());
        assert!(serde_json::from_value::<PublishToIoTCoreRequest>(json!({"topicName": "t", "qos": "2"})).is_err());
        assert!(serde_json::from_value::<GetThingShadowRequest>(json!({"shadowName": "s"})).is_err());
        // A report needs its status and deployment; the status is one of two words.
        let report = |r: Value| json!({"configurationValidityReport": r});
        for bad in [
            json!({"deploymentId": "d"}),
            json!({"status": "ACCEPTED"}),
            json!({"status": "MAYBE", "deploymentId": "d"}),
        ] {
            assert!(serde_json::from_value::<SendConfigurationValidityReportRequest>(report(bad)).is_err());
        }
        assert!(serde_json::from_value::<DeferComponentUpdateRequest>(json!({"recheckAfterMs": 5})).is_err());
        // A union with both members set is not a valid publishMessage.
        let both =
            json!({"topic": "t", "publishMessage": {"jsonMessage": {"message": 1}, "binaryMessage": {"message": ""}}});
        assert!(serde_json::from_value::<PublishToTopicRequest>(both).is_err());
    }
    #[test]
    fn local_deployment_shapes_use_the_cli_member_names() {
        let req = CreateLocalDeploymentRequest {
            root_component_versions_to_add: Some([("com.example.A".to_owned(), "1.1.0".to_owned())].into()),
            root_components_to_remove: Some(vec!["com.example.B".into()]),
            component_to_configuration: Some([("com.example.A".to_owned(), json!({"MERGE": {"x": 1}}))].into()),
            recipe_directory_path: Some("/r".into()),
            artifacts_directory_path: Some("/a".into()),
            failure_handling_policy: Some(FailureHandlingPolicy::DoNothing),
            ..Default::default()
        };
        assert_eq!(
            wire(&req),
            json!({
                "rootComponentVersionsToAdd": {"com.example.A": "1.1.0"},
                "rootComponentsToRemove": ["com.example.B"],
                "componentToConfiguration": {"com.example.A": {"MERGE": {"x": 1}}},
                "recipeDirectoryPath": "/r",
                "artifactsDirectoryPath": "/a",
                "failureHandlingPolicy": "DO_NOTHING"
            })
        );
        let _: CreateLocalDeploymentRequest = back(json!({}));
        let r: GetLocalDeploymentStatusResponse = back(json!({"deployment": {
            "deploymentId": "d", "status": "FAILED", "createdOn": "01-02-2024 10:00:00 UTC",
            "deploymentStatusDetails": {"detailedDeploymentStatus": "FAILED_ROLLBACK_COMPLETE",
                "deploymentErrorStack": ["DEPLOYMENT_FAILURE"], "deploymentFailureCause": "boom"}}}));
        assert_eq!(r.deployment.status, DeploymentStatus::Failed);
        let details = r.deployment.deployment_status_details.unwrap();
        assert_eq!(details.detailed_deployment_status, DetailedDeploymentStatus::FailedRollbackComplete);
        assert_eq!(details.deployment_failure_cause.as_deref(), Some("boom"));
        let l: ListLocalDeploymentsResponse =
            back(json!({"localDeployments": [{"deploymentId": "d", "status": "IN_PROGRESS"}]}));
        assert_eq!(l.local_deployments[0].status, DeploymentStatus::InProgress);
        assert!(serde_json::from_value::<GetLocalDeploymentStatusRequest>(json!({})).is_err());
        assert!(
            serde_json::from_value::<CreateLocalDeploymentRequest>(json!({"failureHandlingPolicy": "MAYBE"})).is_err()
        );
    }
}
