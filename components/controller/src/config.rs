//! The component's configuration, read over IPC (GetConfiguration) and checked here, pure.
//!
//! Every knob lives in the recipe's `DefaultConfiguration` and nowhere else: a key missing
//! from the configuration is an error, not a silent default (one source of truth). Numbers
//! may arrive as floats (`1800.0`) after a deployment merge; whole values are accepted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use pump_types::{AnomalyKind, ProtectiveAction};
use serde_json::Value;

use crate::protection::{OnClear, PolicyConfig};
use crate::settings::{Limits, PLANT_MAX_RPM};
use crate::updates::UpdatePolicy;

/// Below this speed the pump cannot lift its static head (about 1675 rpm, `docs/plant.md`):
/// a "reduced" speed under it would stop the flow, so a safe speed must stay above it.
pub const MIN_SAFE_SPEED_RPM: u16 = 1700;

/// Every anomaly kind and its configuration key.
const KINDS: [(AnomalyKind, &str); 4] = [
    (AnomalyKind::BearingWear, "bearing_wear"),
    (AnomalyKind::Cavitation, "cavitation"),
    (AnomalyKind::Overheating, "overheating"),
    (AnomalyKind::StuckSensor, "stuck_sensor"),
];

/// The controller's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The plant's Modbus TCP address (`ip:port`).
    pub modbus_address: SocketAddr,
    /// The Modbus unit identifier.
    pub modbus_unit_id: u8,
    /// How long one Modbus request may take.
    pub modbus_timeout: Duration,
    /// How often the plant's commands are read back to notice outside changes.
    pub readback_interval: Duration,
    /// What anomalies do, and the speed a `reduce_speed` action runs at.
    pub policy: PolicyConfig,
    /// Limits in effect until desired sets others.
    pub default_limits: Limits,
    /// How deployments are deferred while the pump is busy (`updateRecheckMs`,
    /// `maxUpdateDeferralS`).
    pub updates: UpdatePolicy,
}

/// A configuration value that cannot work: fix the deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration {key}: {message}")]
pub struct ConfigError {
    /// The key path, `/`-separated.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.to_owned(), message: message.into() }
}

fn field<'a>(root: &'a Value, key: &str) -> Result<&'a Value, ConfigError> {
    let mut node = root;
    for step in key.split('/') {
        node = node
            .get(step)
            .ok_or_else(|| err(key, "missing (every key of the recipe's DefaultConfiguration is required)"))?;
    }
    Ok(node)
}

/// A whole number in `min..=max`, from an integer or an integral float.
fn whole(root: &Value, key: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let value = field(root, key)?;
    let n = match value {
        Value::Number(n) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
        }
        _ => None,
    };
    let n = n.ok_or_else(|| err(key, format!("expected a whole number, got {value}")))?;
    if !(min..=max).contains(&n) {
        return Err(err(key, format!("{n} is outside {min}..={max}")));
    }
    Ok(n)
}

fn text<'a>(root: &'a Value, key: &str) -> Result<&'a str, ConfigError> {
    let value = field(root, key)?;
    value.as_str().ok_or_else(|| err(key, format!("expected a string, got {value}")))
}

/// Parses an action name: one of [`ProtectiveAction`]'s names, or `none` (report only).
pub fn parse_action(name: &str) -> Option<Option<ProtectiveAction>> {
    match name {
        "none" => Some(None),
        other => serde_json::from_value(Value::String(other.to_owned())).ok().map(Some),
    }
}

/// The name of an action as configured (`none` for report only).
pub fn action_name(action: Option<ProtectiveAction>) -> &'static str {
    match action {
        None => "none",
        Some(ProtectiveAction::ReduceSpeed) => "reduce_speed",
        Some(ProtectiveAction::Stop) => "stop",
        Some(ProtectiveAction::OpenBypass) => "open_bypass",
    }
}

/// The configuration key (and payload name) of an anomaly kind.
pub fn kind_name(kind: AnomalyKind) -> &'static str {
    KINDS.iter().find(|(k, _)| *k == kind).map_or("unknown", |(_, name)| name)
}

impl Config {
    /// Reads the configuration from the component's whole configuration object (other keys,
    /// such as `accessControl`, are ignored).
    pub fn from_json(root: &Value) -> Result<Config, ConfigError> {
        let address = text(root, "modbusAddress")?;
        let modbus_address = address
            .parse::<SocketAddr>()
            .map_err(|_| err("modbusAddress", format!("{address:?} is not an ip:port address")))?;
        let modbus_unit_id = whole(root, "modbusUnitId", 0, 255)? as u8;
        let modbus_timeout = Duration::from_millis(whole(root, "modbusTimeoutMs", 10, 60_000)?);
        let readback_interval = Duration::from_millis(whole(root, "readbackIntervalMs", 100, 3_600_000)?);
        let safe_speed_rpm = whole(root, "safeSpeedRpm", u64::from(MIN_SAFE_SPEED_RPM), u64::from(PLANT_MAX_RPM))
            .map_err(|e| ConfigError {
                message: format!("{} (below {MIN_SAFE_SPEED_RPM} rpm the pump cannot lift its static head)", e.message),
                ..e
            })? as u16;
        let on_clear = match text(root, "onClear")? {
            "hold" => OnClear::Hold,
            "restore" => OnClear::Restore,
            other => return Err(err("onClear", format!("{other:?} is neither \"hold\" nor \"restore\""))),
        };
        let mut actions = BTreeMap::new();
        for (kind, name) in KINDS {
            let key = format!("actions/{name}");
            let configured = text(root, &key)?;
            let action = parse_action(configured).ok_or_else(|| {
                err(&key, format!("{configured:?} is not one of reduce_speed, stop, open_bypass, none"))
            })?;
            actions.insert(kind, action);
        }
        if let Some(Value::Object(map)) = root.get("actions")
            && let Some(unknown) = map.keys().find(|k| !KINDS.iter().any(|(_, name)| name == k))
        {
            return Err(err(&format!("actions/{unknown}"), "not an anomaly kind"));
        }
        let max = u64::from(PLANT_MAX_RPM);
        let default_limits = Limits {
            min_rpm: whole(root, "defaultLimits/minRpm", 0, max)? as u16,
            max_rpm: whole(root, "defaultLimits/maxRpm", 0, max)? as u16,
        };
        if default_limits.min_rpm > default_limits.max_rpm {
            return Err(err("defaultLimits", "minRpm is above maxRpm"));
        }
        let updates = UpdatePolicy {
            recheck: Duration::from_millis(whole(root, "updateRecheckMs", 1, 3_600_000)?),
            max_deferral: Duration::from_secs(whole(root, "maxUpdateDeferralS", 0, 86_400)?),
        };
        Ok(Config {
            updates,
            modbus_address,
            modbus_unit_id,
            modbus_timeout,
            readback_interval,
            policy: PolicyConfig { actions, on_clear, safe_speed_rpm },
            default_limits,
        })
    }
}

/// The configuration GetConfiguration returned with the environment layer on top: `modbusAddress`
/// from [`pump_types::MODBUS_ADDRESS_ENV`] when the core sets it for this site.
pub fn with_environment(value: &Value) -> Value {
    kit::env_config::overlay_from_env(value, &[("/modbusAddress", pump_types::MODBUS_ADDRESS_ENV)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The recipe's DefaultConfiguration, as the core hands it over.
    fn recipe_defaults() -> Value {
        let text = include_str!("../recipe.yaml");
        let recipe: Value = serde_yaml_ng::from_str(text).unwrap();
        recipe["ComponentConfiguration"]["DefaultConfiguration"].clone()
    }

    #[test]
    fn the_recipe_defaults_are_a_valid_configuration() {
        let config = Config::from_json(&recipe_defaults()).unwrap();
        assert_eq!(config.modbus_address, "127.0.0.1:5020".parse().unwrap());
        assert_eq!(config.policy.on_clear, OnClear::Hold, "the documented default");
        assert!(config.policy.safe_speed_rpm >= MIN_SAFE_SPEED_RPM);
        assert_eq!(config.policy.actions.len(), KINDS.len(), "every kind has an action");
        assert_eq!(config.default_limits.max_rpm, PLANT_MAX_RPM);
        assert_eq!(config.updates.recheck, Duration::from_secs(5));
        assert_eq!(config.updates.max_deferral, Duration::from_secs(300));
    }

    #[test]
    fn whole_floats_are_accepted_as_numbers() {
        let mut root = recipe_defaults();
        root["safeSpeedRpm"] = json!(1900.0);
        assert_eq!(Config::from_json(&root).unwrap().policy.safe_speed_rpm, 1900);
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("modbusAddress", json!("plant:502"), "not an ip:port"),
            ("modbusUnitId", json!(300), "outside 0..=255"),
            ("safeSpeedRpm", json!(1500), "cannot lift its static head"),
            ("safeSpeedRpm", json!(3500), "outside 1700..=3000"),
            ("safeSpeedRpm", json!(1800.5), "whole number"),
            ("safeSpeedRpm", json!("fast"), "whole number"),
            ("onClear", json!("later"), "neither"),
            ("readbackIntervalMs", json!(-5), "whole number"),
            ("updateRecheckMs", json!(0), "outside 1..=3600000"),
            ("maxUpdateDeferralS", json!(100_000), "outside 0..=86400"),
        ];
        for (key, value, expect) in cases {
            let mut root = recipe_defaults();
            root[key] = value.clone();
            let e = Config::from_json(&root).unwrap_err();
            assert_eq!(e.key, key, "{key}={value}: {e}");
            assert!(e.to_string().contains(expect), "{key}={value}: {e}");
        }
    }

    #[test]
    fn actions_must_name_a_known_action_for_every_kind() {
        let mut root = recipe_defaults();
        root["actions"]["cavitation"] = json!("explode");
        assert_eq!(Config::from_json(&root).unwrap_err().key, "actions/cavitation");
        let mut root = recipe_defaults();
        root["actions"].as_object_mut().unwrap().remove("overheating");
        assert_eq!(Config::from_json(&root).unwrap_err().key, "actions/overheating");
        let mut root = recipe_defaults();
        root["actions"]["leak"] = json!("stop");
        assert_eq!(Config::from_json(&root).unwrap_err().key, "actions/leak");
        let mut root = recipe_defaults();
        root["actions"]["stuck_sensor"] = json!("none");
        let config = Config::from_json(&root).unwrap();
        assert_eq!(config.policy.actions[&AnomalyKind::StuckSensor], None);
    }

    #[test]
    fn missing_keys_and_inverted_limits_are_errors() {
        let mut root = recipe_defaults();
        root.as_object_mut().unwrap().remove("modbusTimeoutMs");
        assert!(Config::from_json(&root).unwrap_err().message.contains("missing"));
        let mut root = recipe_defaults();
        root["defaultLimits"] = json!({"minRpm": 2500, "maxRpm": 2000});
        assert_eq!(Config::from_json(&root).unwrap_err().key, "defaultLimits");
    }

    #[test]
    fn action_names_round_trip() {
        for action in [
            None,
            Some(ProtectiveAction::ReduceSpeed),
            Some(ProtectiveAction::Stop),
            Some(ProtectiveAction::OpenBypass),
        ] {
            assert_eq!(parse_action(action_name(action)), Some(action));
        }
        assert_eq!(parse_action("explode"), None);
    }
}
