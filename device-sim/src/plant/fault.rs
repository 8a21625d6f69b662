//! Injectable faults: what can be injected, and the checks a request passes first.

use pump_map::Measurement;
use serde::{Deserialize, Serialize};

/// The kinds of fault the plant can simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A damaged rolling bearing: vibration and bearing temperature rise; the damage grows.
    BearingWear,
    /// Suction starved (blocked strainer, low tank): suction pressure falls, head breaks down.
    Cavitation,
    /// Loss of cooling: motor and bearing temperatures climb.
    Overheating,
    /// One transmitter freezes at its last value.
    StuckSensor,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 4] =
        [FaultKind::BearingWear, FaultKind::Cavitation, FaultKind::Overheating, FaultKind::StuckSensor];

    /// The kind's name (`snake_case`), as used in the control interface.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::BearingWear => "bearing_wear",
            FaultKind::Cavitation => "cavitation",
            FaultKind::Overheating => "overheating",
            FaultKind::StuckSensor => "stuck_sensor",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Result<Self, FaultError> {
        Self::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| FaultError::UnknownKind(name.to_owned()))
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a fault request was refused. Each is the caller's input to fix; the plant is unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    /// The kind is not one of [`FaultKind::ALL`].
    #[error("unknown fault kind {0:?}; expected one of bearing_wear, cavitation, overheating, stuck_sensor")]
    UnknownKind(String),
    /// Severity must be a number in 0.0..=1.0.
    #[error("severity {0} is outside 0.0..=1.0")]
    SeverityOutOfRange(f64),
    /// `stuck_sensor` needs the name of the measurement to freeze.
    #[error("stuck_sensor needs \"sensor\": the name of a measurement (e.g. \"flow_m3h\")")]
    MissingSensor,
    /// The sensor name is not a measurement of the register map.
    #[error("unknown sensor {0:?}; expected a measurement name of the register map")]
    UnknownSensor(String),
    /// A sensor was named for a kind that does not take one.
    #[error("\"sensor\" applies to stuck_sensor only, not to {0}")]
    SensorNotAllowed(FaultKind),
}

/// A validated fault to inject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    kind: FaultKind,
    severity: f64,
    sensor: Option<Measurement>,
}

impl Fault {
    /// A fault of `kind` with `severity` in 0..=1.
    ///
    /// For [`FaultKind::StuckSensor`] `sensor` is required and the severity is recorded but has
    /// no effect (a stuck transmitter is frozen exactly); for the other kinds `sensor` must be
    /// `None`.
    pub fn new(kind: FaultKind, severity: f64, sensor: Option<Measurement>) -> Result<Self, FaultError> {
        if !(0.0..=1.0).contains(&severity) {
            return Err(FaultError::SeverityOutOfRange(severity));
        }
        match (kind, sensor) {
            (FaultKind::StuckSensor, None) => Err(FaultError::MissingSensor),
            (FaultKind::StuckSensor, Some(_)) | (_, None) => Ok(Fault { kind, severity, sensor }),
            (_, Some(_)) => Err(FaultError::SensorNotAllowed(kind)),
        }
    }

    /// Bearing wear of `severity`.
    pub fn bearing_wear(severity: f64) -> Result<Self, FaultError> {
        Self::new(FaultKind::BearingWear, severity, None)
    }

    /// Cavitation of `severity`.
    pub fn cavitation(severity: f64) -> Result<Self, FaultError> {
        Self::new(FaultKind::Cavitation, severity, None)
    }

    /// Loss of cooling of `severity`.
    pub fn overheating(severity: f64) -> Result<Self, FaultError> {
        Self::new(FaultKind::Overheating, severity, None)
    }

    /// `sensor` frozen at its last value.
    pub fn stuck_sensor(sensor: Measurement) -> Self {
        Fault { kind: FaultKind::StuckSensor, severity: 1.0, sensor: Some(sensor) }
    }

    /// The kind.
    pub fn kind(&self) -> FaultKind {
        self.kind
    }

    /// The injected severity.
    pub fn severity(&self) -> f64 {
        self.severity
    }

    /// The frozen measurement of a stuck sensor.
    pub fn sensor(&self) -> Option<Measurement> {
        self.sensor
    }
}

/// A fault in effect, as reported by the plant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ActiveFault {
    /// The kind.
    pub kind: FaultKind,
    /// The severity given at injection.
    pub severity: f64,
    /// The severity acting now: bearing damage grows from the injected severity; the other kinds
    /// keep theirs.
    pub effective_severity: f64,
    /// The frozen measurement (stuck sensor only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor: Option<Measurement>,
    /// The value the stuck sensor shows (stuck sensor only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_value: Option<f64>,
    /// Simulated time of the injection, in seconds.
    pub since_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_requests_are_checked_before_they_reach_the_plant() {
        let flow = Some(Measurement::FlowM3h);
        type Case = (FaultKind, f64, Option<Measurement>, Result<(), FaultError>);
        let table: &[Case] = &[
            (FaultKind::BearingWear, 0.0, None, Ok(())),
            (FaultKind::Cavitation, 1.0, None, Ok(())),
            (FaultKind::Overheating, 0.5, None, Ok(())),
            (FaultKind::StuckSensor, 1.0, flow, Ok(())),
            (FaultKind::BearingWear, 1.01, None, Err(FaultError::SeverityOutOfRange(1.01))),
            (FaultKind::BearingWear, -0.1, None, Err(FaultError::SeverityOutOfRange(-0.1))),
            (FaultKind::StuckSensor, 0.5, None, Err(FaultError::MissingSensor)),
            (FaultKind::Cavitation, 0.5, flow, Err(FaultError::SensorNotAllowed(FaultKind::Cavitation))),
        ];
        for (kind, severity, sensor, expect) in table {
            assert_eq!(Fault::new(*kind, *severity, *sensor).map(|_| ()), *expect, "{kind} {severity}");
        }
        assert!(matches!(Fault::new(FaultKind::Overheating, f64::NAN, None), Err(FaultError::SeverityOutOfRange(_))));
    }

    #[test]
    fn kinds_are_named_as_in_the_control_interface() {
        for kind in FaultKind::ALL {
            assert_eq!(FaultKind::from_name(kind.name()), Ok(kind));
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
        let err = FaultKind::from_name("meltdown").unwrap_err();
        assert!(err.to_string().contains("meltdown") && err.to_string().contains("stuck_sensor"), "{err}");
    }
}
