//! The telemetry agent's metrics: what a core publishes about the device's health.
//!
//! Topic `$aws/things/{thing}/greengrass/health/json` (`greengrass`, not `greengrassv2`: the
//! topic predates Greengrass v2). The shape follows the nucleus's `MetricsPayload`,
//! `AggregatedNamespaceData` and `AggregatedMetric` (aws-greengrass-nucleus, `telemetry/`) and
//! the "Telemetry events" section of the Greengrass v2 developer guide ("Gather system health
//! telemetry data"): `{"Schema", "ADP": [{"TS", "NS", "M": [{"N", "Sum", "U"}]}]}`. `TS` is
//! epoch milliseconds; every published value is under `Sum`, whatever aggregation made it
//! (the nucleus renames it so v1 consumers read it). The nucleus writes schema `2022-06-30`
//! since v2.8.0 (`2020-07-30` before) and no `ThingName`: the thing is in the topic, and AWS
//! adds `ThingName` when it forwards the message to EventBridge as the event's `detail`, which
//! this type also reads. A message is kept under [`MAX_PAYLOAD_BYTES`]; more data points go
//! out as more messages with the same shape (no chunk information, unlike fleet status).

use serde::{Deserialize, Serialize};

/// The schema the nucleus has written since v2.8.0.
pub const SCHEMA: &str = "2022-06-30";
/// The schema of nucleus versions before 2.8.0, and of the developer guide's example.
pub const SCHEMA_2020: &str = "2020-07-30";
/// The namespace of the device's memory, CPU and file descriptors.
pub const SYSTEM_METRICS: &str = "SystemMetrics";
/// The namespace of the component counts by lifecycle state.
pub const GREENGRASS_COMPONENTS: &str = "GreengrassComponents";
/// The nucleus keeps every message under this many bytes (its `MAX_PAYLOAD_LENGTH_BYTES`).
pub const MAX_PAYLOAD_BYTES: usize = 128_000;

/// The topic a core publishes telemetry on.
pub fn topic(thing: &str) -> String {
    format!("$aws/things/{thing}/greengrass/health/json")
}

/// The thing name in a telemetry topic, if `topic` is one.
pub fn thing_of_topic(topic: &str) -> Option<&str> {
    let thing = topic.strip_prefix("$aws/things/")?.strip_suffix("/greengrass/health/json")?;
    (!thing.is_empty() && !thing.contains('/')).then_some(thing)
}

/// One metric's aggregated value (`AggregatedMetric`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatedMetric {
    /// Metric name, e.g. `CpuUsage`.
    #[serde(rename = "N")]
    pub name: String,
    /// The aggregated value.
    #[serde(rename = "Sum")]
    pub sum: f64,
    /// Unit: `Count`, `Percent`, `Megabytes`, ….
    #[serde(rename = "U")]
    pub unit: String,
}

/// The metrics of one namespace aggregated at one time (`AggregatedNamespaceData`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatedNamespaceData {
    /// When it was aggregated (epoch milliseconds).
    #[serde(rename = "TS")]
    pub timestamp: i64,
    /// `SystemMetrics`, `GreengrassComponents`, ….
    #[serde(rename = "NS")]
    pub namespace: String,
    /// The metrics.
    #[serde(rename = "M")]
    pub metrics: Vec<AggregatedMetric>,
}

/// One telemetry message (`MetricsPayload`), or the `detail` of the EventBridge event AWS makes
/// of it (which adds `ThingName`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsPayload {
    /// The core thing: present in the EventBridge event, absent from what a core publishes.
    #[serde(rename = "ThingName", default, skip_serializing_if = "Option::is_none")]
    pub thing_name: Option<String>,
    /// [`SCHEMA`] or [`SCHEMA_2020`].
    #[serde(rename = "Schema")]
    pub schema: String,
    /// Aggregated data points.
    #[serde(rename = "ADP")]
    pub aggregated: Vec<AggregatedNamespaceData>,
}

impl MetricsPayload {
    /// Reads a message; unknown members are ignored, missing required ones are an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a telemetry message: {e}"))
    }

    /// The value of `name` in `namespace` in the latest data point that has it.
    pub fn latest(&self, namespace: &str, name: &str) -> Option<f64> {
        self.aggregated
            .iter()
            .filter(|d| d.namespace == namespace)
            .filter_map(|d| d.metrics.iter().find(|m| m.name == name).map(|m| (d.timestamp, m.sum)))
            .max_by_key(|(ts, _)| *ts)
            .map(|(_, sum)| sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_name_the_thing_under_greengrass_not_greengrassv2() {
        assert_eq!(topic("core-1"), "$aws/things/core-1/greengrass/health/json");
        assert_eq!(thing_of_topic("$aws/things/core-1/greengrass/health/json"), Some("core-1"));
        for other in [
            "$aws/things/core-1/greengrassv2/health/json",
            "$aws/things//greengrass/health/json",
            "$aws/things/a/b/greengrass/health/json",
        ] {
            assert_eq!(thing_of_topic(other), None, "{other}");
        }
    }

    #[test]
    fn the_developer_guides_event_detail_parses_and_writes_back_the_same() {
        let detail = serde_json::json!({
            "ThingName": "MyGreengrassCore",
            "Schema": "2020-07-30",
            "ADP": [
                {"TS": 1602186483234_i64, "NS": "SystemMetrics", "M": [
                    {"N": "TotalNumberOfFDs", "Sum": 6447.0, "U": "Count"},
                    {"N": "CpuUsage", "Sum": 15.458333333333332, "U": "Percent"},
                    {"N": "SystemMemUsage", "Sum": 10201.0, "U": "Megabytes"}]},
                {"TS": 1602186483234_i64, "NS": "GreengrassComponents", "M": [
                    {"N": "NumberOfComponentsRunning", "Sum": 7.0, "U": "Count"},
                    {"N": "NumberOfComponentsFinished", "Sum": 1.0, "U": "Count"}]}
            ]
        });
        let parsed = MetricsPayload::parse(detail.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.thing_name.as_deref(), Some("MyGreengrassCore"));
        assert_eq!(parsed.schema, SCHEMA_2020);
        assert_eq!(parsed.latest(GREENGRASS_COMPONENTS, "NumberOfComponentsRunning"), Some(7.0));
        assert_eq!(parsed.latest(SYSTEM_METRICS, "CpuUsage"), Some(15.458333333333332));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), detail);
    }

    #[test]
    fn a_cores_message_has_no_thing_name_and_round_trips() {
        let message = MetricsPayload {
            thing_name: None,
            schema: SCHEMA.into(),
            aggregated: vec![AggregatedNamespaceData {
                timestamp: 1_700_000_000_000,
                namespace: SYSTEM_METRICS.into(),
                metrics: vec![AggregatedMetric { name: "SystemMemUsage".into(), sum: 812.0, unit: "Megabytes".into() }],
            }],
        };
        let bytes = serde_json::to_vec(&message).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("ThingName"));
        assert_eq!(MetricsPayload::parse(&bytes).unwrap(), message);
    }

    #[test]
    fn the_latest_data_point_wins_and_unknown_metrics_are_none() {
        let point = |ts, sum| AggregatedNamespaceData {
            timestamp: ts,
            namespace: GREENGRASS_COMPONENTS.into(),
            metrics: vec![AggregatedMetric { name: "NumberOfComponentsBroken".into(), sum, unit: "Count".into() }],
        };
        let m =
            MetricsPayload { thing_name: None, schema: SCHEMA.into(), aggregated: vec![point(2, 1.0), point(1, 5.0)] };
        assert_eq!(m.latest(GREENGRASS_COMPONENTS, "NumberOfComponentsBroken"), Some(1.0));
        assert_eq!(m.latest(GREENGRASS_COMPONENTS, "NumberOfComponentsNew"), None);
        assert_eq!(m.latest(SYSTEM_METRICS, "NumberOfComponentsBroken"), None);
    }

    #[test]
    fn malformed_messages_are_refused_with_a_reason() {
        for bytes in [&b"not json"[..], br#"{"Schema":"2022-06-30"}"#, br#"{"Schema":"x","ADP":[{"TS":1,"NS":"n"}]}"#] {
            let err = MetricsPayload::parse(bytes).unwrap_err();
            assert!(err.starts_with("not a telemetry message"), "{err}");
        }
    }
}
