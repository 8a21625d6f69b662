//! The sensor's configuration: the JSON document GetConfiguration returns (the recipe's
//! `DefaultConfiguration` merged with the deployment's), checked whole before use. Pure.
//!
//! The built-in defaults ([`RawConfig::default`]) are the one source of truth; the recipe
//! repeats them so an operator sees every knob, and a test keeps the two equal.

use std::collections::BTreeMap;
use std::time::Duration;

use kit::batch::BatchConfig;
use pump_map::Measurement;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The configuration as written (camelCase JSON, milliseconds). Unknown keys are refused so a
/// typo is an error, not a silently ignored setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RawConfig {
    /// Where the plant is and how to talk to it.
    pub modbus: RawModbus,
    /// Time between two polls.
    pub poll_period_ms: u64,
    /// Batching and delivery of telemetry to IoT Core.
    pub telemetry: RawTelemetry,
    /// How often the summary line is logged and `stats.json` written.
    pub stats_period_ms: u64,
    /// Greengrass's own key (the recipe's IPC policies); not read by the sensor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_control: Option<Value>,
}

/// `modbus`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RawModbus {
    /// `host:port` of the plant's Modbus TCP server.
    pub address: String,
    /// Modbus unit identifier.
    pub unit_id: u8,
    /// Longest wait for a connection or an answer.
    pub timeout_ms: u64,
    /// First pause before reconnecting after a failure.
    pub reconnect_min_ms: u64,
    /// Longest pause between reconnect attempts.
    pub reconnect_max_ms: u64,
}

/// `telemetry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// Most readings in one message.
    pub max_readings: usize,
    /// Longest wait of a reading before its batch is sent.
    pub max_delay_ms: u64,
    /// Per-measurement absolute thresholds (measurement name → threshold).
    pub deadband: BTreeMap<String, f64>,
    /// Keep a reading inside the deadband when the last kept one is this old (0: never).
    pub heartbeat_ms: u64,
    /// Most bytes the outbox keeps while IoT Core is unreachable (oldest dropped beyond it).
    pub outbox_max_bytes: u64,
    /// First pause after a failed publish.
    pub publish_retry_min_ms: u64,
    /// Longest pause between publish attempts.
    pub publish_retry_max_ms: u64,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            modbus: RawModbus::default(),
            poll_period_ms: 1000,
            telemetry: RawTelemetry::default(),
            stats_period_ms: 60_000,
            access_control: None,
        }
    }
}

impl Default for RawModbus {
    fn default() -> Self {
        RawModbus {
            address: "127.0.0.1:5020".into(),
            unit_id: 1,
            timeout_ms: 1000,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
        }
    }
}

impl Default for RawTelemetry {
    fn default() -> Self {
        RawTelemetry {
            max_readings: 100,
            max_delay_ms: 30_000,
            deadband: BTreeMap::new(),
            heartbeat_ms: 0,
            outbox_max_bytes: 64 * 1024 * 1024,
            publish_retry_min_ms: 1000,
            publish_retry_max_ms: 60_000,
        }
    }
}

/// A configuration the sensor cannot run with. The operator fixes the deployment.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// Not the expected JSON shape (wrong type, unknown key).
    #[error("malformed configuration: {0}")]
    Malformed(String),
    /// A value outside what the sensor accepts.
    #[error("configuration {key}: {reason}")]
    Invalid {
        /// The key, as a JSON pointer.
        key: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },
}

/// How to reach the plant.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusConfig {
    /// `host:port`.
    pub address: String,
    /// Modbus unit identifier.
    pub unit_id: u8,
    /// Longest wait for a connection or an answer.
    pub timeout: Duration,
    /// First reconnect pause.
    pub reconnect_min: Duration,
    /// Longest reconnect pause.
    pub reconnect_max: Duration,
}

/// How telemetry is batched and delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Most readings in one message.
    pub max_readings: usize,
    /// Longest wait of a reading in the buffer.
    pub max_delay: Duration,
    /// Measurement name → threshold.
    pub deadband: BTreeMap<String, f64>,
    /// Heartbeat inside the deadband.
    pub heartbeat: Option<Duration>,
    /// Outbox bound in bytes.
    pub outbox_max_bytes: u64,
    /// First pause after a failed publish.
    pub publish_retry_min: Duration,
    /// Longest pause between publish attempts.
    pub publish_retry_max: Duration,
}

/// The checked configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorConfig {
    /// The plant connection.
    pub modbus: ModbusConfig,
    /// Time between polls.
    pub poll_period: Duration,
    /// Telemetry.
    pub telemetry: TelemetryConfig,
    /// Summary and `stats.json` period.
    pub stats_period: Duration,
}

/// The smallest outbox bound: it must hold at least one full 5 KiB batch with room to spare.
pub const MIN_OUTBOX_BYTES: u64 = 64 * 1024;
const HOUR_MS: u64 = 3_600_000;

fn ms_in(key: &'static str, value: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(Duration::from_millis(value))
    } else {
        Err(ConfigError::Invalid { key, reason: format!("{value} ms is outside {min}..={max} ms") })
    }
}

fn ordered(key: &'static str, min: Duration, max: Duration) -> Result<(), ConfigError> {
    if min <= max {
        Ok(())
    } else {
        Err(ConfigError::Invalid { key, reason: format!("{max:?} is shorter than the minimum {min:?}") })
    }
}

/// Checks `host:port`: a non-empty host and a port from 1 to 65535.
fn check_address(address: &str) -> Result<(), ConfigError> {
    let bad = |reason: &str| ConfigError::Invalid { key: "/modbus/address", reason: format!("{address:?} {reason}") };
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("is not host:port"))?;
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(bad("has no usable host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad("has no port from 1 to 65535")),
    }
}

impl RawConfig {
    /// Reads a GetConfiguration value.
    pub fn from_value(value: &Value) -> Result<Self, ConfigError> {
        RawConfig::deserialize(value).map_err(|e| ConfigError::Malformed(e.to_string()))
    }

    /// Checks every value.
    pub fn check(&self) -> Result<SensorConfig, ConfigError> {
        let m = &self.modbus;
        check_address(&m.address)?;
        let modbus = ModbusConfig {
            address: m.address.clone(),
            unit_id: m.unit_id,
            timeout: ms_in("/modbus/timeoutMs", m.timeout_ms, 1, 60_000)?,
            reconnect_min: ms_in("/modbus/reconnectMinMs", m.reconnect_min_ms, 1, HOUR_MS)?,
            reconnect_max: ms_in("/modbus/reconnectMaxMs", m.reconnect_max_ms, 1, HOUR_MS)?,
        };
        ordered("/modbus/reconnectMaxMs", modbus.reconnect_min, modbus.reconnect_max)?;

        let t = &self.telemetry;
        if !(1..=10_000).contains(&t.max_readings) {
            return Err(ConfigError::Invalid {
                key: "/telemetry/maxReadings",
                reason: format!("{} is outside 1..=10000", t.max_readings),
            });
        }
        for (name, threshold) in &t.deadband {
            if Measurement::from_name(name).is_none() {
                return Err(ConfigError::Invalid {
                    key: "/telemetry/deadband",
                    reason: format!("{name:?} is not a measurement name (see the register map)"),
                });
            }
            if !(threshold.is_finite() && *threshold >= 0.0) {
                return Err(ConfigError::Invalid {
                    key: "/telemetry/deadband",
                    reason: format!("{name}: {threshold} must be a finite number ≥ 0"),
                });
            }
        }
        if t.outbox_max_bytes < MIN_OUTBOX_BYTES {
            return Err(ConfigError::Invalid {
                key: "/telemetry/outboxMaxBytes",
                reason: format!("{} bytes is below the minimum {MIN_OUTBOX_BYTES}", t.outbox_max_bytes),
            });
        }
        let heartbeat = match t.heartbeat_ms {
            0 => None,
            ms => Some(ms_in("/telemetry/heartbeatMs", ms, 1, 24 * HOUR_MS)?),
        };
        let telemetry = TelemetryConfig {
            max_readings: t.max_readings,
            max_delay: ms_in("/telemetry/maxDelayMs", t.max_delay_ms, 0, HOUR_MS)?,
            deadband: t.deadband.clone(),
            heartbeat,
            outbox_max_bytes: t.outbox_max_bytes,
            publish_retry_min: ms_in("/telemetry/publishRetryMinMs", t.publish_retry_min_ms, 1, HOUR_MS)?,
            publish_retry_max: ms_in("/telemetry/publishRetryMaxMs", t.publish_retry_max_ms, 1, HOUR_MS)?,
        };
        ordered("/telemetry/publishRetryMaxMs", telemetry.publish_retry_min, telemetry.publish_retry_max)?;

        Ok(SensorConfig {
            modbus,
            poll_period: ms_in("/pollPeriodMs", self.poll_period_ms, 10, HOUR_MS)?,
            telemetry,
            stats_period: ms_in("/statsPeriodMs", self.stats_period_ms, 100, HOUR_MS)?,
        })
    }
}

/// The configuration GetConfiguration returned with the environment layer on top: `/modbus/address`
/// from [`pump_types::MODBUS_ADDRESS_ENV`] when the core sets it for this site.
pub fn with_environment(value: &Value) -> Value {
    kit::env_config::overlay_from_env(value, &[("/modbus/address", pump_types::MODBUS_ADDRESS_ENV)])
}

/// Reads and checks a GetConfiguration value in one step.
pub fn parse(value: &Value) -> Result<SensorConfig, ConfigError> {
    RawConfig::from_value(value)?.check()
}

impl TelemetryConfig {
    /// The batcher's configuration for telemetry of `thing` published to `topic`: the thing
    /// in the header, the topic's bytes metered with the payload.
    pub fn batch_config(&self, thing: &str, topic: &str) -> BatchConfig {
        let mut header = Map::new();
        header.insert("thing".into(), Value::String(thing.into()));
        let mut deadband = self.deadband.clone();
        if !deadband.is_empty() {
            // `seq` changes with every reading; without a threshold it would count as a move
            // and defeat the deadband. It travels with the kept readings, never decides.
            deadband.insert(crate::reading::SEQ_KEY.into(), f64::MAX);
        }
        BatchConfig {
            max_readings: self.max_readings,
            max_delay: self.max_delay,
            deadband,
            heartbeat: self.heartbeat,
            header,
            metered_extra_bytes: topic.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(patch: Value) -> Result<SensorConfig, ConfigError> {
        let mut doc = serde_json::to_value(RawConfig::default()).unwrap();
        merge(&mut doc, patch);
        parse(&doc)
    }

    fn merge(doc: &mut Value, patch: Value) {
        match (doc, patch) {
            (Value::Object(d), Value::Object(p)) => {
                for (k, v) in p {
                    merge(d.entry(k).or_insert(Value::Null), v);
                }
            }
            (d, p) => *d = p,
        }
    }

    #[test]
    fn an_empty_document_gives_the_defaults() {
        let c = parse(&json!({})).unwrap();
        assert_eq!(c.poll_period, Duration::from_secs(1));
        assert_eq!(c.modbus.address, "127.0.0.1:5020");
        assert_eq!(c.telemetry.max_delay, Duration::from_secs(30));
        assert_eq!(c.telemetry.heartbeat, None);
        assert_eq!(parse(&serde_json::to_value(RawConfig::default()).unwrap()).unwrap(), c);
    }

    #[test]
    fn the_recipe_default_configuration_equals_the_built_in_defaults() {
        let recipe = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/recipe.yaml")).unwrap();
        let recipe: Value = serde_json::to_value(parse_yaml(&recipe)).unwrap();
        let mut defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"].clone();
        assert!(defaults["accessControl"].is_object(), "the recipe declares its IPC access");
        defaults.as_object_mut().unwrap().remove("accessControl");
        assert_eq!(defaults, serde_json::to_value(RawConfig::default()).unwrap());
    }

    /// The recipe is YAML; the test reads it with the tokio-free YAML parser of the workspace.
    fn parse_yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn a_deployment_merge_overrides_single_values() {
        let c = with(json!({"pollPeriodMs": 250, "modbus": {"address": "plant.local:502", "unitId": 7},
            "telemetry": {"deadband": {"flow_m3h": 0.5}, "heartbeatMs": 60000}}))
        .unwrap();
        assert_eq!(c.poll_period, Duration::from_millis(250));
        assert_eq!((c.modbus.address.as_str(), c.modbus.unit_id), ("plant.local:502", 7));
        assert_eq!(c.modbus.timeout, Duration::from_secs(1), "untouched keys keep their defaults");
        assert_eq!(c.telemetry.deadband, BTreeMap::from([("flow_m3h".to_string(), 0.5)]));
        assert_eq!(c.telemetry.heartbeat, Some(Duration::from_secs(60)));
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let cases: &[(Value, &str)] = &[
            (json!({"pollPeriodMs": 0}), "/pollPeriodMs"),
            (json!({"pollPeriodMs": 3_600_001}), "/pollPeriodMs"),
            (json!({"modbus": {"address": "no-port"}}), "/modbus/address"),
            (json!({"modbus": {"address": "host:0"}}), "/modbus/address"),
            (json!({"modbus": {"address": ":502"}}), "/modbus/address"),
            (json!({"modbus": {"address": "host:99999"}}), "/modbus/address"),
            (json!({"modbus": {"timeoutMs": 0}}), "/modbus/timeoutMs"),
            (json!({"modbus": {"reconnectMinMs": 5000, "reconnectMaxMs": 100}}), "/modbus/reconnectMaxMs"),
            (json!({"telemetry": {"maxReadings": 0}}), "/telemetry/maxReadings"),
            (json!({"telemetry": {"deadband": {"flux_capacitor": 1.0}}}), "/telemetry/deadband"),
            (json!({"telemetry": {"deadband": {"flow_m3h": -1.0}}}), "/telemetry/deadband"),
            (json!({"telemetry": {"outboxMaxBytes": 1000}}), "/telemetry/outboxMaxBytes"),
            (json!({"telemetry": {"publishRetryMinMs": 10, "publishRetryMaxMs": 5}}), "/telemetry/publishRetryMaxMs"),
            (json!({"statsPeriodMs": 1}), "/statsPeriodMs"),
        ];
        for (patch, key) in cases {
            match with(patch.clone()) {
                Err(ConfigError::Invalid { key: k, reason }) => assert_eq!(&k, key, "{patch}: {reason}"),
                other => panic!("{patch}: expected an error on {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_malformed() {
        for doc in [
            json!({"pollPeriodMs": "fast"}),
            json!({"pollPeriodMs": -5}),
            json!({"pollPeriodMS": 100}),
            json!({"modbus": {"unitId": 300}}),
            json!({"modbus": "127.0.0.1:502"}),
            json!({"telemetry": {"deadband": {"flow_m3h": "x"}}}),
            json!([1, 2]),
        ] {
            assert!(matches!(parse(&doc), Err(ConfigError::Malformed(_))), "{doc}");
        }
    }

    #[test]
    fn greengrass_access_control_is_accepted_and_ignored() {
        let c = parse(&json!({"accessControl": {"aws.greengrass.ipc.pubsub": {}}})).unwrap();
        assert_eq!(c, parse(&json!({})).unwrap());
    }

    #[test]
    fn the_batch_config_meters_the_topic_and_keeps_seq_out_of_the_deadband() {
        let c = with(json!({"telemetry": {"deadband": {"flow_m3h": 0.5}}})).unwrap();
        let topic = pump_types::telemetry_topic("pump-01");
        let b = c.telemetry.batch_config("pump-01", &topic);
        assert_eq!(b.metered_extra_bytes, topic.len());
        assert_eq!(b.header["thing"], "pump-01");
        assert_eq!(b.deadband["flow_m3h"], 0.5);
        assert_eq!(b.deadband["seq"], f64::MAX);
        let plain = parse(&json!({})).unwrap().telemetry.batch_config("pump-01", &topic);
        assert!(plain.deadband.is_empty(), "no deadband: every reading is kept");
    }
}
