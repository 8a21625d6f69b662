//! The rule-based detector: one rule per [`AnomalyKind`], thresholds from [`RulesConfig`].
//!
//! The signatures are those of the plant's fault models (`docs/plant.md`, "Faults"):
//!
//! | kind | raise | sustain (keeps a raised one) |
//! | --- | --- | --- |
//! | bearing wear | mean vibration ≥ `vibrationHighMmS` and projected bearing temperature ≥ `bearingTempProjectedHighC` | mean vibration ≥ `vibrationClearMmS` |
//! | cavitation | mean suction ≤ `suctionLowKpa` and (discharge σ ≥ `dischargeStdHighKpa` or mean vibration ≥ `vibrationHighMmS`) | mean suction ≤ `suctionLowKpa` or suction σ ≥ `suctionStdClearKpa` |
//! | overheating | projected motor temperature ≥ `motorTempProjectedHighC` or mean motor temperature ≥ `motorTempHighC` | projected ≥ `motorTempProjectedClearC` or mean ≥ `motorTempHighC` |
//! | stuck sensor | a measurement exactly unchanged for `stuckSamples` readings (not at 0 or a range end) | — |
//!
//! "Projected" is where a first-order thermal lag is heading: `T + τ·dT/dt` from the window's
//! mean and fitted slope ([`Stats::projected`]). It rises at once when cooling is lost or friction grows, and it
//! does not rise when a temperature merely catches up with a higher speed, so a speed change
//! is not taken for overheating.
//!
//! Nothing is judged while the pump is stopped or below `minRunningRpm` anywhere in the window;
//! the window rules also wait for a full window. Severity is 0.5 at the raise threshold, rising
//! linearly to 1 at the kind's alarm level.

use std::collections::BTreeMap;

use pump_map::Measurement;
use pump_types::{AnomalyKind, Reading};

use crate::config::RulesConfig;
use crate::detector::{ALL_KINDS, Detector, Evidence, Finding};
use crate::features::{Features, Stats};

/// The rule-based detector.
#[derive(Debug, Clone)]
pub struct RulesDetector {
    config: RulesConfig,
}

impl RulesDetector {
    /// The detector's name in events.
    pub const NAME: &'static str = "rules";

    /// A detector with these thresholds (validated by the caller).
    pub fn new(config: RulesConfig) -> Self {
        RulesDetector { config }
    }

    /// Its thresholds.
    pub fn config(&self) -> &RulesConfig {
        &self.config
    }
}

/// 0.5 at `threshold`, 1 at `alarm`, linear between (either direction).
fn severity(value: f64, threshold: f64, alarm: f64) -> f64 {
    let span = alarm - threshold;
    if span == 0.0 {
        return 1.0;
    }
    0.5 + 0.5 * ((value - threshold) / span).clamp(0.0, 1.0)
}

fn finding(
    kind: AnomalyKind,
    evidence: Evidence,
    severity: f64,
    reason: String,
    features: &[(String, f64)],
) -> Finding {
    let features: BTreeMap<String, f64> = features.iter().cloned().collect();
    Finding { kind, evidence, severity, reason, features }
}

fn name(m: Measurement, stat: &str) -> String {
    format!("{}.{stat}", m.name())
}

impl RulesDetector {
    fn bearing_wear(&self, f: &Features) -> Option<Finding> {
        let c = &self.config;
        let vib = f.get(Measurement::VibrationMmS).mean;
        let bearing = f.get(Measurement::BearingTempC).projected(c.bearing_tau_s);
        let features =
            [(name(Measurement::VibrationMmS, "mean"), vib), (name(Measurement::BearingTempC, "projected"), bearing)];
        if vib >= c.vibration_high_mm_s && bearing >= c.bearing_temp_projected_high_c {
            let sev = severity(vib, c.vibration_high_mm_s, c.vibration_alarm_mm_s).max(severity(
                bearing,
                c.bearing_temp_projected_high_c,
                c.bearing_temp_alarm_c,
            ));
            let reason = format!(
                "vibration {vib:.2} mm/s >= {} and bearing temperature heading for {bearing:.1} °C >= {}",
                c.vibration_high_mm_s, c.bearing_temp_projected_high_c
            );
            return Some(finding(AnomalyKind::BearingWear, Evidence::Raise, sev, reason, &features));
        }
        if vib >= c.vibration_clear_mm_s {
            let reason = format!("vibration {vib:.2} mm/s still >= {}", c.vibration_clear_mm_s);
            let sev = severity(vib, c.vibration_high_mm_s, c.vibration_alarm_mm_s);
            return Some(finding(AnomalyKind::BearingWear, Evidence::Sustain, sev, reason, &features));
        }
        None
    }

    fn cavitation(&self, f: &Features) -> Option<Finding> {
        let c = &self.config;
        let suction = f.get(Measurement::SuctionPressureKpa);
        let discharge_std = f.get(Measurement::DischargePressureKpa).std;
        let vib = f.get(Measurement::VibrationMmS).mean;
        let features = [
            (name(Measurement::SuctionPressureKpa, "mean"), suction.mean),
            (name(Measurement::SuctionPressureKpa, "std"), suction.std),
            (name(Measurement::DischargePressureKpa, "std"), discharge_std),
            (name(Measurement::VibrationMmS, "mean"), vib),
        ];
        let low = suction.mean <= c.suction_low_kpa;
        let sev = severity(suction.mean, c.suction_low_kpa, c.suction_alarm_kpa);
        let fluctuating = discharge_std >= c.discharge_std_high_kpa;
        let vibrating = vib >= c.vibration_high_mm_s;
        if low && (fluctuating || vibrating) {
            let mut with = Vec::new();
            if fluctuating {
                with.push(format!("discharge σ {discharge_std:.1} kPa >= {}", c.discharge_std_high_kpa));
            }
            if vibrating {
                with.push(format!("vibration {vib:.2} mm/s >= {}", c.vibration_high_mm_s));
            }
            let reason =
                format!("suction {:.1} kPa <= {} with {}", suction.mean, c.suction_low_kpa, with.join(" and "));
            return Some(finding(AnomalyKind::Cavitation, Evidence::Raise, sev, reason, &features));
        }
        if low || suction.std >= c.suction_std_clear_kpa {
            let reason = format!(
                "suction {:.1} kPa (σ {:.2} kPa) still low or fluctuating (limits {}, σ {})",
                suction.mean, suction.std, c.suction_low_kpa, c.suction_std_clear_kpa
            );
            return Some(finding(AnomalyKind::Cavitation, Evidence::Sustain, sev, reason, &features));
        }
        None
    }

    fn overheating(&self, f: &Features) -> Option<Finding> {
        let c = &self.config;
        let motor = f.get(Measurement::MotorTempC);
        let projected = motor.projected(c.motor_tau_s);
        let features = [
            (name(Measurement::MotorTempC, "mean"), motor.mean),
            (name(Measurement::MotorTempC, "slope"), motor.slope),
            (name(Measurement::MotorTempC, "projected"), projected),
        ];
        let hot = motor.mean >= c.motor_temp_high_c;
        let sev = severity(projected.max(motor.mean), c.motor_temp_projected_high_c, c.motor_temp_alarm_c);
        if hot || projected >= c.motor_temp_projected_high_c {
            let reason = if hot {
                format!("motor temperature {:.1} °C >= {}", motor.mean, c.motor_temp_high_c)
            } else {
                format!(
                    "motor temperature {:.1} °C rising {:.3} K/s, heading for {projected:.1} °C >= {}",
                    motor.fit_last, motor.slope, c.motor_temp_projected_high_c
                )
            };
            return Some(finding(AnomalyKind::Overheating, Evidence::Raise, sev, reason, &features));
        }
        if projected >= c.motor_temp_projected_clear_c {
            let reason =
                format!("motor temperature still heading for {projected:.1} °C >= {}", c.motor_temp_projected_clear_c);
            return Some(finding(AnomalyKind::Overheating, Evidence::Sustain, sev, reason, &features));
        }
        None
    }

    fn stuck_sensor(&self, f: &Features) -> Option<Finding> {
        let c = &self.config;
        // The longest-frozen measurement decides; a value at 0 or at a transmitter's range end
        // is left out, because a clipped transmitter legitimately repeats it.
        let (m, stats): (Measurement, &Stats) = Measurement::ALL
            .iter()
            .map(|m| (*m, f.get(*m)))
            .filter(|(m, s)| s.last != 0.0 && s.last > m.spec().min && s.last < m.spec().max)
            .max_by_key(|(_, s)| s.unchanged)?;
        if stats.unchanged < c.stuck_samples {
            return None;
        }
        let n = c.stuck_samples as f64;
        let sev = severity(stats.unchanged as f64, n, 2.0 * n);
        let reason = format!(
            "{} unchanged at {} for {} readings (limit {})",
            m.name(),
            stats.last,
            stats.unchanged,
            c.stuck_samples
        );
        let features = [(name(m, "unchanged"), stats.unchanged as f64), (name(m, "last"), stats.last)];
        Some(finding(AnomalyKind::StuckSensor, Evidence::Raise, sev, reason, &features))
    }
}

impl Detector for RulesDetector {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn assess(&mut self, features: &Features, reading: &Reading) -> Vec<Finding> {
        let speed_min = features.get(Measurement::SpeedRpm).min;
        if !reading.running || features.samples == 0 || speed_min < self.config.min_running_rpm {
            let why = format!(
                "pump not running steadily (running {}, lowest speed in the window {speed_min:.0} rpm < {})",
                reading.running, self.config.min_running_rpm
            );
            return ALL_KINDS.iter().map(|k| Finding::inconclusive(*k, why.clone())).collect();
        }
        let mut out = Vec::new();
        if features.full {
            out.extend(self.bearing_wear(features));
            out.extend(self.cavitation(features));
            out.extend(self.overheating(features));
        } else {
            let why = format!("window filling ({} readings)", features.samples);
            for kind in [AnomalyKind::BearingWear, AnomalyKind::Cavitation, AnomalyKind::Overheating] {
                out.push(Finding::inconclusive(kind, why.clone()));
            }
        }
        out.extend(self.stuck_sensor(features));
        out
    }
}

#[cfg(test)]
mod tests;
