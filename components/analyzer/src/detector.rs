//! The `Detector` trait: what every detector (the rules, the ONNX model) answers for
//! each reading, and nothing about when an event is raised: [`crate::hysteresis`] decides that,
//! the same way for every detector.
//!
//! The model detector ([`crate::model::ModelDetector`]) plugs in behind the same trait: it reads
//! [`Features::vector`] (the fixed feature order of [`Features::names`]), runs the model, and
//! turns its per-class probabilities into [`Finding`]s (`Raise` above one score, `Sustain` above
//! a lower one).

use std::collections::BTreeMap;

use pump_types::{AnomalyKind, Reading};

use crate::features::Features;

/// Every kind of anomaly, in a fixed order.
pub const ALL_KINDS: [AnomalyKind; 4] =
    [AnomalyKind::BearingWear, AnomalyKind::Cavitation, AnomalyKind::Overheating, AnomalyKind::StuckSensor];

/// The name of a kind as it appears in payloads (`bearing_wear`, ...).
pub fn kind_name(kind: AnomalyKind) -> &'static str {
    match kind {
        AnomalyKind::BearingWear => "bearing_wear",
        AnomalyKind::Cavitation => "cavitation",
        AnomalyKind::Overheating => "overheating",
        AnomalyKind::StuckSensor => "stuck_sensor",
    }
}

/// How strongly one assessment points at a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Enough to raise the anomaly (after the configured number of consecutive ones).
    Raise,
    /// Not enough to raise it, but enough to keep a raised one from clearing.
    Sustain,
    /// The detector cannot judge now (pump stopped, window not full): neither counts toward
    /// raising nor toward clearing.
    Inconclusive,
}

/// A detector's opinion about one kind for one reading. A kind the detector returns no finding
/// for is normal.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// What is wrong.
    pub kind: AnomalyKind,
    /// How strongly.
    pub evidence: Evidence,
    /// 0..1, how bad (carried into the raised event).
    pub severity: f64,
    /// Which threshold or feature decided, for a human.
    pub reason: String,
    /// The features that decided, by name.
    pub features: BTreeMap<String, f64>,
}

impl Finding {
    /// A finding that the detector could not judge `kind`, with the reason why.
    pub fn inconclusive(kind: AnomalyKind, reason: impl Into<String>) -> Self {
        Finding {
            kind,
            evidence: Evidence::Inconclusive,
            severity: 0.0,
            reason: reason.into(),
            features: BTreeMap::new(),
        }
    }
}

/// Turns the features of the current window (and the reading that completed it) into findings.
///
/// Implementations keep whatever state they need (`&mut self`) but do no I/O and read no clock.
pub trait Detector: Send {
    /// The detector's name, carried in every event it causes (`rules`, `model`).
    fn name(&self) -> &str;

    /// Assesses one reading: at most one finding per kind; kinds left out are normal.
    fn assess(&mut self, features: &Features, reading: &Reading) -> Vec<Finding>;
}
