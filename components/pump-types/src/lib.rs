//! The pump station's contracts, shared by its components (sensor, analyzer, controller), the
//! demo and the tests, so they cannot drift: topic names, the versioned JSON payloads (`"v": 1`),
//! and the shape of the `pump` named shadow. No I/O. `docs/payloads.md` shows each payload with
//! an example, its size and its rate; `docs/shadow.md` the shadow rules.
//!
//! A fork renames the component prefix and topics here, in one place.

use std::collections::BTreeMap;

pub use pump_map::Measurements;
use serde::{Deserialize, Serialize};

/// The payload version every message carries in `"v"`.
pub const PAYLOAD_VERSION: u8 = 1;
/// Component name prefix.
pub const COMPONENT_PREFIX: &str = "com.example.pump";
/// The sensor component.
pub const SENSOR_COMPONENT: &str = "com.example.pump.Sensor";
/// The analyzer component.
pub const ANALYZER_COMPONENT: &str = "com.example.pump.Analyzer";
/// The controller component.
pub const CONTROLLER_COMPONENT: &str = "com.example.pump.Controller";
/// The model component.
pub const MODEL_COMPONENT: &str = "com.example.pump.Model";
/// Local pub/sub: every reading, from the sensor.
pub const READINGS_TOPIC: &str = "pump/readings";
/// Local pub/sub: anomaly events, from the analyzer.
pub const ANOMALIES_TOPIC: &str = "pump/anomalies";
/// Local pub/sub: which detectors the analyzer runs and what became of the model
/// ([`ModelStatus`]), from the analyzer, for the controller to report as `reported.model`.
pub const MODEL_TOPIC: &str = "pump/model";
/// The environment variable that gives the sensor and the controller their pump's Modbus TCP
/// address (`host:port`) on this site, over the deployment's configuration: a thing-group
/// deployment carries one configuration for every site, the core's environment is the site's
/// own (`device-sim fleet` sets it per site).
pub const MODBUS_ADDRESS_ENV: &str = "PUMP_MODBUS_ADDRESS";
/// The named shadow of the core thing that the controller owns.
pub const SHADOW_NAME: &str = "pump";

/// IoT Core: batched telemetry of a core device.
pub fn telemetry_topic(thing: &str) -> String {
    format!("dt/pump/{thing}/telemetry")
}

/// IoT Core: anomaly events of a core device.
pub fn anomalies_topic(thing: &str) -> String {
    format!("dt/pump/{thing}/anomalies")
}

/// A payload that does not parse or has the wrong version: the sender is at fault.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON of the expected shape.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A version this code does not read.
    #[error("payload version {0} is not supported (expected {PAYLOAD_VERSION})")]
    Version(u64),
}

/// Parses a versioned payload, checking `"v"` first so a newer sender gets a clear error.
pub fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, PayloadError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(PAYLOAD_VERSION) => {}
        Some(v) => return Err(PayloadError::Version(v)),
        None => return Err(PayloadError::Malformed("missing \"v\"".into())),
    }
    serde_json::from_value(value).map_err(|e| PayloadError::Malformed(e.to_string()))
}

/// One poll of the plant, published by the sensor on [`READINGS_TOPIC`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// [`PAYLOAD_VERSION`].
    pub v: u8,
    /// The sensor's poll counter (gaps mean lost polls).
    pub seq: u64,
    /// When it was read, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The measurements, in engineering units (names as in the register map).
    pub m: Measurements,
    /// The run coil / running status.
    pub running: bool,
    /// The bypass valve coil.
    pub bypass_open: bool,
}

/// What a detector thinks is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Rising vibration and bearing temperature.
    BearingWear,
    /// Low suction pressure, falling discharge pressure, broadband vibration.
    Cavitation,
    /// Motor or bearing temperature climbing without cause.
    Overheating,
    /// A measurement that stopped moving.
    StuckSensor,
}

/// An anomaly raised or cleared by the analyzer, on [`ANOMALIES_TOPIC`] and [`anomalies_topic`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyEvent {
    /// [`PAYLOAD_VERSION`].
    pub v: u8,
    /// Unique per raised anomaly; the clearing event repeats it.
    pub id: String,
    /// When it was decided, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The [`Reading::seq`] that decided it.
    pub reading_seq: u64,
    /// Which detector: `rules` or `model`.
    pub detector: String,
    /// What is wrong.
    pub kind: AnomalyKind,
    /// `true` when raised, `false` when cleared.
    pub active: bool,
    /// 0..1, how sure or how bad.
    pub severity: f64,
    /// A human-readable reason (which threshold, which feature).
    pub reason: String,
    /// The features that decided it, by name.
    #[serde(default)]
    pub features: BTreeMap<String, f64>,
}

/// What the analyzer runs and which model it has, on [`MODEL_TOPIC`]: published when it
/// changes and again every 30 s (local pub/sub keeps no last message for a late subscriber).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// [`PAYLOAD_VERSION`].
    pub v: u8,
    /// When it was published, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The configured choice: `rules`, `model` or `both`.
    pub detector: String,
    /// The detectors that run now (`rules`, `model`): the rules stand in while the configured
    /// model cannot run.
    pub running: Vec<String>,
    /// The model that passed its checks (running, or ready for `detector: model|both`); `null`
    /// when none has.
    pub model: Option<ModelInfo>,
    /// Why the configured model does not run, or why the model offered last was refused; `null`
    /// when all is as configured.
    pub error: Option<String>,
}

/// A loaded model, as its card names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The card's `name`.
    pub name: String,
    /// The card's `version`.
    pub version: String,
    /// The ONNX file's SHA-256 (hex), checked against the card.
    pub sha256: String,
}

/// The controller's operating mode (`desired.mode` / `reported.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Run at `speedRpm`; protective actions on anomalies.
    #[default]
    Auto,
    /// Run at `speedRpm`; anomalies are reported, no protective action.
    Manual,
    /// Pump stopped.
    Off,
    /// Pump stopped and held stopped for maintenance until an operator sets another mode;
    /// anomalies are reported, no protective action. A cloud application may set it (after a
    /// fault repeats); the controller refuses it over `Manual` (`docs/shadow.md`).
    Maintenance,
}

/// What the controller does when an anomaly is raised (its configuration chooses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtectiveAction {
    /// Reduce speed to a configured safe speed.
    ReduceSpeed,
    /// Stop the pump.
    Stop,
    /// Open the bypass valve.
    OpenBypass,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_round_trip_with_their_version() {
        let r = Reading {
            v: 1,
            seq: 7,
            ts: 1_700_000_000_000,
            m: Measurements::default(),
            running: true,
            bypass_open: false,
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(parse::<Reading>(&bytes).unwrap(), r);
        let e = AnomalyEvent {
            v: 1,
            id: "a-1".into(),
            ts: 1,
            reading_seq: 7,
            detector: "rules".into(),
            kind: AnomalyKind::Cavitation,
            active: true,
            severity: 0.8,
            reason: "suction below 5 kPa".into(),
            features: BTreeMap::from([("suction_min".into(), 3.2)]),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "cavitation");
        assert_eq!(parse::<AnomalyEvent>(&serde_json::to_vec(&v).unwrap()).unwrap(), e);
    }

    #[test]
    fn a_model_status_round_trips_with_null_for_what_is_missing() {
        let status = ModelStatus {
            v: 1,
            ts: 5,
            detector: "model".into(),
            running: vec!["rules".into()],
            model: None,
            error: Some("model refused: digest".into()),
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["model"], serde_json::Value::Null);
        assert_eq!(parse::<ModelStatus>(&serde_json::to_vec(&v).unwrap()).unwrap(), status);
    }

    #[test]
    fn bad_payloads_get_clear_errors() {
        assert!(matches!(parse::<Reading>(b"nope"), Err(PayloadError::Malformed(_))));
        assert!(matches!(parse::<Reading>(br#"{"seq":1}"#), Err(PayloadError::Malformed(m)) if m.contains("\"v\"")));
        assert!(matches!(parse::<Reading>(br#"{"v":2}"#), Err(PayloadError::Version(2))));
        let missing_field = json!({"v": 1, "seq": 1});
        assert!(matches!(
            parse::<Reading>(&serde_json::to_vec(&missing_field).unwrap()),
            Err(PayloadError::Malformed(_))
        ));
    }

    /// The first JSON example after the heading that starts with `## {heading}` in
    /// `docs/payloads.md`, the document that tells integrators what goes on the wire.
    fn documented_example(heading: &str) -> serde_json::Value {
        let doc = include_str!("../../../docs/payloads.md");
        let start = doc
            .find(&format!("\n## {heading}"))
            .unwrap_or_else(|| panic!("docs/payloads.md has no section \"{heading}\""));
        let section = &doc[start + 1..];
        let section = &section[..section[1..].find("\n## ").map_or(section.len(), |end| end + 1)];
        let block = section
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .unwrap_or_else(|| panic!("no JSON example in \"{heading}\""));
        serde_json::from_str(block).unwrap_or_else(|e| panic!("the example in \"{heading}\" is not JSON: {e}"))
    }

    /// The documented example parses as `T` and serializes back to exactly the same JSON: every
    /// field name, type and value the document shows is the type's, and the type has no field
    /// the document does not show.
    fn assert_matches_the_document<T: Serialize + for<'de> Deserialize<'de>>(heading: &str) -> T {
        let example = documented_example(heading);
        let parsed: T = parse(&serde_json::to_vec(&example).unwrap())
            .unwrap_or_else(|e| panic!("the example in \"{heading}\" does not parse: {e}"));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), example, "the wire form differs from \"{heading}\"");
        parsed
    }

    #[test]
    fn the_documented_reading_is_the_wire_form() {
        let r: Reading = assert_matches_the_document("Local reading");
        assert_eq!((r.seq, r.m.speed_rpm, r.running), (1, 2901.0, true));
    }

    #[test]
    fn the_documented_anomaly_event_is_the_wire_form() {
        let e: AnomalyEvent = assert_matches_the_document("Anomaly event");
        assert_eq!((e.kind, e.active, e.reading_seq), (AnomalyKind::Cavitation, true, 62));
        // The document lists every kind by its wire name.
        let kinds =
            [AnomalyKind::BearingWear, AnomalyKind::Cavitation, AnomalyKind::Overheating, AnomalyKind::StuckSensor];
        let names: Vec<_> = kinds.iter().map(|k| serde_json::to_value(k).unwrap()).collect();
        assert_eq!(names, ["bearing_wear", "cavitation", "overheating", "stuck_sensor"]);
        let doc = include_str!("../../../docs/payloads.md");
        assert!(doc.contains("`bearing_wear`, `cavitation`, `overheating`, `stuck_sensor`"));
    }

    #[test]
    fn the_documented_model_status_is_the_wire_form() {
        let status: ModelStatus = assert_matches_the_document("Local model status");
        assert_eq!(status.model.map(|m| m.name), Some("pump-fault-classifier".to_owned()));
    }

    #[test]
    fn topics_follow_the_design_conventions() {
        assert_eq!(telemetry_topic("core-1"), "dt/pump/core-1/telemetry");
        assert_eq!(anomalies_topic("core-1"), "dt/pump/core-1/anomalies");
    }

    #[test]
    fn modes_are_spelled_as_the_shadow_spells_them() {
        let rows =
            [(Mode::Auto, "auto"), (Mode::Manual, "manual"), (Mode::Off, "off"), (Mode::Maintenance, "maintenance")];
        for (mode, name) in rows {
            assert_eq!(serde_json::to_value(mode).unwrap(), json!(name));
            assert_eq!(serde_json::from_value::<Mode>(json!(name)).unwrap(), mode);
        }
    }
}
