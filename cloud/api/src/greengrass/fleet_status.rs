//! Fleet status: what a core publishes about itself and its components.
//!
//! Topic `$aws/things/{thing}/greengrassv2/health/json`, QoS 1. The shape is
//! the nucleus's `FleetStatusDetails` (`status/model` in
//! `aws-greengrass-nucleus`): `sequenceNumber` grows by one per message and
//! survives restarts, `timestamp` is epoch milliseconds, `messageType` is
//! `COMPLETE` (every component is listed: cadence, launch, network change) or
//! `PARTIAL` (only those that changed: deployments, status changes,
//! reconnects). A message over 128 KB is split into chunks that share the
//! sequence number and carry `chunkInfo {chunkId, totalChunks}` (absent when
//! there is one chunk). Component status details carry `statusCodes`, a list.

use serde::{Deserialize, Serialize};

use super::deployment::ShadowStatusDetails;

/// The topic a core publishes fleet status on.
pub fn topic(thing: &str) -> String {
    format!("$aws/things/{thing}/greengrassv2/health/json")
}

/// The thing name in a fleet status topic, if `topic` is one.
pub fn thing_of_topic(topic: &str) -> Option<&str> {
    let thing = topic.strip_prefix("$aws/things/")?.strip_suffix("/greengrassv2/health/json")?;
    (!thing.is_empty() && !thing.contains('/')).then_some(thing)
}

/// Why a core published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Trigger {
    /// After a local (CLI) deployment.
    LocalDeployment,
    /// After a thing deployment (shadow).
    ThingDeployment,
    /// After a thing-group deployment (job).
    ThingGroupDeployment,
    /// A component changed state between deployments (e.g. went BROKEN).
    ComponentStatusChange,
    /// The MQTT connection came back.
    Reconnect,
    /// The nucleus started and connected.
    NucleusLaunch,
    /// Device configuration changed and the connection was reset.
    NetworkReconfigure,
    /// The periodic update.
    Cadence,
}

impl Trigger {
    /// The message type the nucleus sends for this trigger.
    pub fn message_type(self) -> MessageType {
        match self {
            Trigger::Cadence | Trigger::NucleusLaunch | Trigger::NetworkReconfigure => MessageType::Complete,
            _ => MessageType::Partial,
        }
    }
}

/// Whether a message lists every component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageType {
    /// Every component.
    Complete,
    /// Only what changed.
    Partial,
}

/// `HEALTHY` unless some component is BROKEN (or ERRORED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OverallStatus {
    /// Everything runs.
    Healthy,
    /// Something is broken.
    Unhealthy,
}

/// One chunk of a split message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkInfo {
    /// 1-based (the nucleus counts from 1).
    pub chunk_id: u32,
    /// How many chunks share the sequence number.
    pub total_chunks: u32,
}

/// A component as the core reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentDetails {
    /// Name.
    pub component_name: String,
    /// Running version.
    #[serde(default)]
    pub version: String,
    /// Groups (`thinggroup/NAME`, or `LOCAL_DEPLOYMENT`) whose deployments hold it.
    #[serde(default)]
    pub fleet_config_arns: Vec<String>,
    /// Status codes and reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_status_details: Option<ComponentStatusDetails>,
    /// Deployed as a root component (not only as a dependency).
    #[serde(default, rename = "isRoot")]
    pub is_root: bool,
    /// Lifecycle state: NEW, INSTALLED, STARTING, RUNNING, STOPPING, ERRORED, BROKEN, FINISHED.
    pub status: String,
}

/// `componentStatusDetails`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatusDetails {
    /// Codes such as `RUN_ERROR`, `INSTALL_ERRORED`.
    #[serde(default)]
    pub status_codes: Vec<String>,
    /// A sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
}

/// `deploymentInformation`: the deployment this message reports on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentInformation {
    /// IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, CANCELED.
    #[serde(default)]
    pub status: String,
    /// Detailed status and failure cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_details: Option<ShadowStatusDetails>,
    /// The configuration ARN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_configuration_arn_for_status: Option<String>,
    /// The Greengrass deployment id (the source of `lastInstallationSource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// Root components of the deployment left out of `components` because they did not change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged_root_components: Vec<String>,
}

/// One fleet status message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// Nucleus version.
    #[serde(default)]
    pub ggc_version: String,
    /// `linux`, `windows`, …
    #[serde(default)]
    pub platform: String,
    /// `amd64`, `aarch64`, …
    #[serde(default)]
    pub architecture: String,
    /// The core thing.
    pub thing: String,
    /// Healthy or not.
    pub overall_device_status: OverallStatus,
    /// Grows by one per message; chunks share it.
    pub sequence_number: u64,
    /// Epoch milliseconds.
    pub timestamp: i64,
    /// Complete or partial.
    pub message_type: MessageType,
    /// Why it was sent.
    pub trigger: Trigger,
    /// Present when the message was split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_info: Option<ChunkInfo>,
    /// Components (all, or those that changed).
    #[serde(default)]
    pub components: Vec<ComponentDetails>,
    /// The deployment reported on, for deployment triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_information: Option<DeploymentInformation>,
}

impl FleetStatus {
    /// Reads a message; unknown members are ignored, missing required ones are an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let status: FleetStatus =
            serde_json::from_slice(bytes).map_err(|e| format!("not a fleet status message: {e}"))?;
        if let Some(c) = status.chunk_info
            && (c.total_chunks == 0 || c.chunk_id == 0 || c.chunk_id > c.total_chunks)
        {
            return Err(format!("chunk {} of {} is not a valid chunk", c.chunk_id, c.total_chunks));
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_the_thing() {
        assert_eq!(topic("core-1"), "$aws/things/core-1/greengrassv2/health/json");
        assert_eq!(thing_of_topic("$aws/things/core-1/greengrassv2/health/json"), Some("core-1"));
        for other in [
            "$aws/things/core-1/greengrass/health/json",
            "$aws/things//greengrassv2/health/json",
            "$aws/things/a/b/greengrassv2/health/json",
        ] {
            assert_eq!(thing_of_topic(other), None, "{other}");
        }
    }

    #[test]
    fn a_message_as_the_nucleus_writes_it_parses() {
        let msg = FleetStatus::parse(
            br#"{"ggcVersion":"2.14.0","platform":"linux","architecture":"amd64","thing":"core-1",
            "overallDeviceStatus":"UNHEALTHY","sequenceNumber":42,"timestamp":1700000000123,
            "messageType":"PARTIAL","trigger":"THING_GROUP_DEPLOYMENT",
            "components":[{"componentName":"com.example.pump.Sensor","version":"2.0.0",
              "fleetConfigArns":["thinggroup/pumps"],"isRoot":true,"status":"BROKEN",
              "componentStatusDetails":{"statusCodes":["RUN_ERROR"],"statusReason":"exit 1"}}],
            "deploymentInformation":{"status":"FAILED","deploymentId":"d-1",
              "fleetConfigurationArnForStatus":"arn:aws:greengrass:us-east-1:0:configuration:thinggroup/pumps:2",
              "statusDetails":{"detailedStatus":"FAILED_ROLLBACK_COMPLETE","failureCause":"broke",
                "errorStack":["A"],"errorTypes":["B"]}},
            "futureField":1}"#,
        )
        .unwrap();
        assert_eq!(msg.trigger, Trigger::ThingGroupDeployment);
        assert_eq!(msg.components[0].component_status_details.as_ref().unwrap().status_codes, vec!["RUN_ERROR"]);
        assert!(msg.components[0].is_root);
        assert_eq!(msg.deployment_information.unwrap().deployment_id.as_deref(), Some("d-1"));
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        let cases: [&[u8]; 4] = [
            b"not json",
            br#"{"thing":"c"}"#,
            br#"{"thing":"c","overallDeviceStatus":"HEALTHY","sequenceNumber":1,"timestamp":1,
                "messageType":"COMPLETE","trigger":"SOMETHING"}"#,
            br#"{"thing":"c","overallDeviceStatus":"HEALTHY","sequenceNumber":1,"timestamp":1,
                "messageType":"COMPLETE","trigger":"CADENCE","chunkInfo":{"chunkId":3,"totalChunks":2}}"#,
        ];
        for bytes in cases {
            assert!(FleetStatus::parse(bytes).is_err(), "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn triggers_choose_the_message_type_as_the_nucleus_does() {
        assert_eq!(Trigger::Cadence.message_type(), MessageType::Complete);
        assert_eq!(Trigger::NucleusLaunch.message_type(), MessageType::Complete);
        assert_eq!(Trigger::ThingDeployment.message_type(), MessageType::Partial);
        assert_eq!(Trigger::ComponentStatusChange.message_type(), MessageType::Partial);
    }
}
