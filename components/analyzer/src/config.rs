//! The component's configuration: one schema, read from the recipe's `DefaultConfiguration`
//! (merged by the deployment) over IPC GetConfiguration. [`Config::default`] equals the recipe's
//! `DefaultConfiguration`; a test keeps the two in step.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::upload::UploadConfig;

/// A configuration the analyzer cannot run with: the deployment must change it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not the expected shape (unknown key, wrong type).
    #[error("invalid analyzer configuration: {0}")]
    Shape(String),
    /// Anomaly window uploads that cannot work.
    #[error("invalid analyzer configuration: {0}")]
    Upload(String),
    /// A value outside what makes sense.
    #[error("invalid analyzer configuration: {key} = {value}: {why}")]
    Value {
        /// The key, as a JSON pointer into the configuration.
        key: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Which detectors run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorChoice {
    /// The rule-based detector ([`crate::rules::RulesDetector`]).
    Rules,
    /// The trained model ([`crate::model::ModelDetector`]); the rules run instead while no model
    /// is loaded.
    Model,
    /// Both, each with its own events.
    Both,
}

impl DetectorChoice {
    /// The name as configured (`rules`, `model`, `both`).
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorChoice::Rules => "rules",
            DetectorChoice::Model => "model",
            DetectorChoice::Both => "both",
        }
    }
}

/// The analyzer's configuration (recipe keys in camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Config {
    /// Which detectors run.
    pub detector: DetectorChoice,
    /// Readings in the sliding window.
    pub window_samples: usize,
    /// Consecutive raising assessments before an anomaly is raised.
    pub raise_after: u32,
    /// Consecutive normal assessments before a raised anomaly is cleared.
    pub clear_after: u32,
    /// The rule-based detector's thresholds.
    pub rules: RulesConfig,
    /// The model detector's thresholds.
    pub model: ModelConfig,
    /// Where the readings around each anomaly go ([`crate::upload`]); off by default.
    pub anomaly_upload: UploadConfig,
    /// Part of every component's configuration; read by the nucleus, not by the analyzer.
    #[serde(rename = "accessControl", skip_serializing_if = "Option::is_none")]
    pub access_control: Option<Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            detector: DetectorChoice::Rules,
            window_samples: 60,
            raise_after: 3,
            clear_after: 10,
            rules: RulesConfig::default(),
            model: ModelConfig::default(),
            anomaly_upload: UploadConfig::default(),
            access_control: None,
        }
    }
}

/// The thresholds of the rule-based detector (see the README for the physics behind each).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct RulesConfig {
    /// Below this speed (anywhere in the window) the pump is not assessed, rpm.
    pub min_running_rpm: f64,
    /// Bearing wear and cavitation: mean vibration at or above this raises, mm/s RMS.
    pub vibration_high_mm_s: f64,
    /// Bearing wear stays raised while mean vibration is at or above this, mm/s RMS.
    pub vibration_clear_mm_s: f64,
    /// Bearing wear severity reaches 1 at this vibration, mm/s RMS.
    pub vibration_alarm_mm_s: f64,
    /// Bearing thermal time constant used to project its temperature, s.
    pub bearing_tau_s: f64,
    /// Bearing wear: projected bearing temperature at or above this (with high vibration) raises, °C.
    pub bearing_temp_projected_high_c: f64,
    /// Bearing wear severity reaches 1 at this projected bearing temperature, °C.
    pub bearing_temp_alarm_c: f64,
    /// Cavitation: mean suction pressure at or below this raises (with fluctuation or vibration), kPa.
    pub suction_low_kpa: f64,
    /// Cavitation stays raised while the suction pressure's standard deviation is at or above this, kPa.
    pub suction_std_clear_kpa: f64,
    /// Cavitation severity reaches 1 at this mean suction pressure, kPa.
    pub suction_alarm_kpa: f64,
    /// Cavitation: discharge pressure standard deviation at or above this counts as fluctuating, kPa.
    pub discharge_std_high_kpa: f64,
    /// Motor thermal time constant used to project its temperature, s.
    pub motor_tau_s: f64,
    /// Overheating: projected motor temperature at or above this raises, °C.
    pub motor_temp_projected_high_c: f64,
    /// Overheating stays raised while the projected motor temperature is at or above this, °C.
    pub motor_temp_projected_clear_c: f64,
    /// Overheating: mean motor temperature at or above this raises, however steady, °C.
    pub motor_temp_high_c: f64,
    /// Overheating severity reaches 1 at this temperature (projected or mean), °C.
    pub motor_temp_alarm_c: f64,
    /// Stuck sensor: this many consecutive identical readings of one measurement raise.
    pub stuck_samples: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            min_running_rpm: 300.0,
            vibration_high_mm_s: 2.8,
            vibration_clear_mm_s: 2.0,
            vibration_alarm_mm_s: 7.1,
            bearing_tau_s: 240.0,
            bearing_temp_projected_high_c: 58.0,
            bearing_temp_alarm_c: 85.0,
            suction_low_kpa: 10.0,
            suction_std_clear_kpa: 1.5,
            suction_alarm_kpa: -20.0,
            discharge_std_high_kpa: 8.0,
            motor_tau_s: 300.0,
            motor_temp_projected_high_c: 100.0,
            motor_temp_projected_clear_c: 95.0,
            motor_temp_high_c: 110.0,
            motor_temp_alarm_c: 130.0,
            stuck_samples: 10,
        }
    }
}

/// The model detector's thresholds: how a class probability becomes evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ModelConfig {
    /// A fault class with a probability at or above this is evidence to raise it (0..1].
    pub raise_score: f64,
    /// A raised fault class with a probability at or above this stays raised (0..raiseScore].
    pub sustain_score: f64,
    /// Below this speed (anywhere in the window) the model is not run, rpm: it was trained on
    /// pumps running at 1700 rpm and more, and takes a pump slowing down to a stop for cavitation.
    pub min_running_rpm: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { raise_score: 0.5, sustain_score: 0.3, min_running_rpm: 1650.0 }
    }
}

impl ModelConfig {
    /// `0 < sustainScore <= raiseScore <= 1`, `minRunningRpm >= 0`, all finite.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, value: f64, why| Err(ConfigError::Value { key, value: value.to_string(), why });
        if !(self.raise_score.is_finite() && self.raise_score > 0.0 && self.raise_score <= 1.0) {
            return bad("/model/raiseScore", self.raise_score, "must be > 0 and <= 1");
        }
        if !(self.sustain_score.is_finite() && self.sustain_score > 0.0 && self.sustain_score <= self.raise_score) {
            return bad("/model/sustainScore", self.sustain_score, "must be > 0 and <= raiseScore");
        }
        if !(self.min_running_rpm.is_finite() && self.min_running_rpm >= 0.0) {
            return bad("/model/minRunningRpm", self.min_running_rpm, "must be a finite number >= 0");
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates the component's configuration (the whole object GetConfiguration
    /// returns; keys left out take their defaults).
    pub fn from_value(value: &Value) -> Result<Config, ConfigError> {
        let config: Config = serde_json::from_value(value.clone()).map_err(|e| ConfigError::Shape(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The answer to a configuration a deployment proposes (SubscribeToValidateConfigurationUpdates):
    /// the same parsing and checks the analyzer runs with, so what the validator accepts the
    /// analyzer can load, and what it rejects carries the loader's reason.
    pub fn check_proposed(proposed: &Value) -> Result<(), String> {
        Config::from_value(proposed).map(drop).map_err(|e| e.to_string())
    }

    /// Checks every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, value: String, why| Err(ConfigError::Value { key, value, why });
        if !(3..=3600).contains(&self.window_samples) {
            return bad("/windowSamples", self.window_samples.to_string(), "must be 3..=3600");
        }
        if !(1..=1000).contains(&self.raise_after) {
            return bad("/raiseAfter", self.raise_after.to_string(), "must be 1..=1000");
        }
        if !(1..=1000).contains(&self.clear_after) {
            return bad("/clearAfter", self.clear_after.to_string(), "must be 1..=1000");
        }
        self.rules.validate()?;
        self.anomaly_upload.check().map_err(ConfigError::Upload)?;
        self.model.validate()
    }
}

impl RulesConfig {
    /// Every value finite, time constants positive, each clear level on the normal side of its
    /// raise level and each alarm level beyond it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = self;
        let numbers: [(&'static str, f64); 16] = [
            ("/rules/minRunningRpm", r.min_running_rpm),
            ("/rules/vibrationHighMmS", r.vibration_high_mm_s),
            ("/rules/vibrationClearMmS", r.vibration_clear_mm_s),
            ("/rules/vibrationAlarmMmS", r.vibration_alarm_mm_s),
            ("/rules/bearingTauS", r.bearing_tau_s),
            ("/rules/bearingTempProjectedHighC", r.bearing_temp_projected_high_c),
            ("/rules/bearingTempAlarmC", r.bearing_temp_alarm_c),
            ("/rules/suctionLowKpa", r.suction_low_kpa),
            ("/rules/suctionStdClearKpa", r.suction_std_clear_kpa),
            ("/rules/suctionAlarmKpa", r.suction_alarm_kpa),
            ("/rules/dischargeStdHighKpa", r.discharge_std_high_kpa),
            ("/rules/motorTauS", r.motor_tau_s),
            ("/rules/motorTempProjectedHighC", r.motor_temp_projected_high_c),
            ("/rules/motorTempProjectedClearC", r.motor_temp_projected_clear_c),
            ("/rules/motorTempHighC", r.motor_temp_high_c),
            ("/rules/motorTempAlarmC", r.motor_temp_alarm_c),
        ];
        for (key, value) in numbers {
            if !value.is_finite() {
                return Err(ConfigError::Value { key, value: value.to_string(), why: "must be a finite number" });
            }
        }
        let checks: [(&'static str, f64, bool, &'static str); 12] = [
            ("/rules/minRunningRpm", r.min_running_rpm, r.min_running_rpm >= 0.0, "must be >= 0"),
            ("/rules/bearingTauS", r.bearing_tau_s, r.bearing_tau_s > 0.0, "must be > 0"),
            ("/rules/motorTauS", r.motor_tau_s, r.motor_tau_s > 0.0, "must be > 0"),
            ("/rules/vibrationHighMmS", r.vibration_high_mm_s, r.vibration_high_mm_s > 0.0, "must be > 0"),
            (
                "/rules/vibrationClearMmS",
                r.vibration_clear_mm_s,
                r.vibration_clear_mm_s <= r.vibration_high_mm_s,
                "must be <= vibrationHighMmS",
            ),
            (
                "/rules/vibrationAlarmMmS",
                r.vibration_alarm_mm_s,
                r.vibration_alarm_mm_s > r.vibration_high_mm_s,
                "must be > vibrationHighMmS",
            ),
            (
                "/rules/bearingTempAlarmC",
                r.bearing_temp_alarm_c,
                r.bearing_temp_alarm_c > r.bearing_temp_projected_high_c,
                "must be > bearingTempProjectedHighC",
            ),
            (
                "/rules/suctionAlarmKpa",
                r.suction_alarm_kpa,
                r.suction_alarm_kpa < r.suction_low_kpa,
                "must be < suctionLowKpa",
            ),
            ("/rules/suctionStdClearKpa", r.suction_std_clear_kpa, r.suction_std_clear_kpa > 0.0, "must be > 0"),
            ("/rules/dischargeStdHighKpa", r.discharge_std_high_kpa, r.discharge_std_high_kpa > 0.0, "must be > 0"),
            (
                "/rules/motorTempProjectedClearC",
                r.motor_temp_projected_clear_c,
                r.motor_temp_projected_clear_c <= r.motor_temp_projected_high_c,
                "must be <= motorTempProjectedHighC",
            ),
            (
                "/rules/motorTempAlarmC",
                r.motor_temp_alarm_c,
                r.motor_temp_alarm_c > r.motor_temp_projected_high_c && r.motor_temp_alarm_c > r.motor_temp_high_c,
                "must be > motorTempProjectedHighC and > motorTempHighC",
            ),
        ];
        for (key, value, ok, why) in checks {
            if !ok {
                return Err(ConfigError::Value { key, value: value.to_string(), why });
            }
        }
        if !(2..=100_000).contains(&r.stuck_samples) {
            return Err(ConfigError::Value {
                key: "/rules/stuckSamples",
                value: r.stuck_samples.to_string(),
                why: "must be 2..=100000",
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_proposed_configuration_is_judged_by_the_loader() {
        let good = serde_json::to_value(Config::default()).unwrap();
        assert_eq!(Config::check_proposed(&good), Ok(()));
        let mut with_acl = good.clone();
        with_acl["accessControl"] = serde_json::json!({"aws.greengrass.ipc.pubsub": {}});
        assert_eq!(Config::check_proposed(&with_acl), Ok(()), "accessControl belongs to the nucleus");
        let cases: [(&str, Value, &str); 5] = [
            ("/rules/motorTauS", serde_json::json!(-1.0), "motorTauS"),
            ("/rules/vibrationClearMmS", serde_json::json!(9.0), "must be <= vibrationHighMmS"),
            ("/model/sustainScore", serde_json::json!(0.9), "must be > 0 and <= raiseScore"),
            ("/detector", serde_json::json!("magic"), "unknown variant"),
            ("/windowSamples", serde_json::json!(1), "must be 3..=3600"),
        ];
        for (pointer, value, expect) in cases {
            let mut proposed = good.clone();
            *proposed.pointer_mut(pointer).unwrap() = value.clone();
            let why = Config::check_proposed(&proposed).unwrap_err();
            assert!(why.contains(expect), "{pointer} = {value}: {why}");
            assert!(Config::from_value(&proposed).is_err(), "the loader refuses it too");
        }
        let mut unknown = good.clone();
        unknown["thresholdz"] = serde_json::json!(1);
        assert!(Config::check_proposed(&unknown).unwrap_err().contains("unknown field"));
    }
    use super::*;
    use serde_json::json;

    #[test]
    fn an_empty_configuration_takes_every_default() {
        assert_eq!(Config::from_value(&json!({})).unwrap(), Config::default());
    }

    #[test]
    fn the_recipe_default_configuration_equals_the_built_in_defaults() {
        let recipe: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(include_str!("../recipe.yaml")).expect("recipe.yaml parses");
        let defaults = &recipe["ComponentConfiguration"]["DefaultConfiguration"];
        let defaults: Value = serde_json::to_value(defaults).unwrap();
        let mut parsed = Config::from_value(&defaults).unwrap();
        assert!(parsed.access_control.is_some(), "the recipe declares accessControl");
        parsed.access_control = None;
        assert_eq!(parsed, Config::default());
        // Every knob is spelled out in the recipe, not left to the built-in default.
        let built_in = serde_json::to_value(Config::default()).unwrap();
        for (section, want) in [("", &built_in), ("rules", &built_in["rules"]), ("model", &built_in["model"])] {
            let got = if section.is_empty() { &defaults } else { &defaults[section] };
            for key in want.as_object().unwrap().keys() {
                assert!(got.get(key).is_some(), "the recipe's DefaultConfiguration lacks {section}/{key}");
            }
        }
        assert!(defaults.get("accessControl").is_some());
    }

    #[test]
    fn bad_configurations_name_the_key_at_fault() {
        let cases = [
            (json!({"windowSamples": 1}), "/windowSamples"),
            (json!({"raiseAfter": 0}), "/raiseAfter"),
            (json!({"clearAfter": 0}), "/clearAfter"),
            (json!({"rules": {"motorTauS": 0}}), "/rules/motorTauS"),
            (json!({"rules": {"vibrationClearMmS": 3.0}}), "/rules/vibrationClearMmS"),
            (json!({"rules": {"vibrationAlarmMmS": 2.0}}), "/rules/vibrationAlarmMmS"),
            (json!({"rules": {"suctionAlarmKpa": 11.0}}), "/rules/suctionAlarmKpa"),
            (json!({"rules": {"motorTempProjectedClearC": 101.0}}), "/rules/motorTempProjectedClearC"),
            (json!({"rules": {"stuckSamples": 1}}), "/rules/stuckSamples"),
            (json!({"rules": {"minRunningRpm": -1}}), "/rules/minRunningRpm"),
            (json!({"model": {"raiseScore": 0}}), "/model/raiseScore"),
            (json!({"model": {"raiseScore": 1.5}}), "/model/raiseScore"),
            (json!({"model": {"sustainScore": 0.9}}), "/model/sustainScore"),
            (json!({"model": {"minRunningRpm": -1}}), "/model/minRunningRpm"),
        ];
        for (doc, key) in cases {
            let err = Config::from_value(&doc).unwrap_err();
            assert!(matches!(&err, ConfigError::Value { key: k, .. } if *k == key), "{doc}: {err}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let cases = [
            json!({"windowSample": 30}),
            json!({"rules": {"vibrationHigh": 3}}),
            json!({"windowSamples": "thirty"}),
            json!({"detector": "magic"}),
            json!({"rules": 5}),
            json!({"model": {"raise": 0.5}}),
            json!([1, 2]),
        ];
        for doc in cases {
            assert!(matches!(Config::from_value(&doc), Err(ConfigError::Shape(_))), "{doc}");
        }
    }

    #[test]
    fn detector_choices_parse() {
        for (text, want) in
            [("rules", DetectorChoice::Rules), ("model", DetectorChoice::Model), ("both", DetectorChoice::Both)]
        {
            assert_eq!(Config::from_value(&json!({ "detector": text })).unwrap().detector, want);
        }
    }
}
