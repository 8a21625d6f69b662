//! The pump model: a pure, seeded, steppable simulation. No I/O, no clock: [`PlantModel::step`]
//! advances simulated time by the `dt` it is given.
//!
//! The equations and the meaning of every parameter are written in the project's `docs/plant.md`;
//! the comments here say only why a choice was made.

use std::collections::BTreeMap;
use std::f64::consts::LN_2;
use std::time::Duration;

use pump_map::{Coil, MapError, Measurements, Setpoint, Setpoints, Status};
use rand::{RngExt as _, SeedableRng as _};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::fault::{ActiveFault, Fault, FaultKind};

/// Gravitational acceleration, m/s².
const G: f64 = 9.81;
/// Below this speed the shaft counts as stopped (no flow, no vibration).
const STOPPED_RPM: f64 = 1.0;
/// The `running` status bit's threshold.
const RUNNING_RPM: f64 = 30.0;
/// Shaft power below which efficiency is reported as 0 (the quotient is noise).
const EFFICIENCY_MIN_POWER_KW: f64 = 0.5;

/// Standard deviations of the Gaussian noise on each transmitter.
///
/// Derived measurements (head, hydraulic power, efficiency) carry no noise of their own: they are
/// computed from the noisy primaries, as the pump's controller would.
#[derive(Debug, Clone, PartialEq)]
pub struct Noise {
    /// Encoder speed, rpm.
    pub speed_rpm: f64,
    /// Flow meter, m³/h.
    pub flow_m3h: f64,
    /// Suction pressure transmitter, kPa.
    pub suction_kpa: f64,
    /// Discharge pressure transmitter, kPa.
    pub discharge_kpa: f64,
    /// Drive line current, A.
    pub current_a: f64,
    /// Drive shaft power estimate, kW.
    pub shaft_power_kw: f64,
    /// Bearing RTD, °C.
    pub bearing_temp_c: f64,
    /// Winding RTD, °C.
    pub motor_temp_c: f64,
    /// Vibration velocity transmitter, mm/s.
    pub vibration_mm_s: f64,
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            speed_rpm: 2.0,
            flow_m3h: 0.5,
            suction_kpa: 0.5,
            discharge_kpa: 2.0,
            current_a: 0.15,
            shaft_power_kw: 0.08,
            bearing_temp_c: 0.15,
            motor_temp_c: 0.2,
            vibration_mm_s: 0.05,
        }
    }
}

/// The state the plant starts in.
#[derive(Debug, Clone, PartialEq)]
pub struct Initial {
    /// The run coil.
    pub run: bool,
    /// The bypass coil.
    pub bypass_open: bool,
    /// The speed setpoint, rpm. When `run` is set, the pump starts at this speed with its
    /// temperatures at equilibrium (a plant that has been running for a while).
    pub speed_setpoint_rpm: f64,
    /// The ramp, rpm/s.
    pub ramp_rpm_per_s: f64,
}

/// The plant's physical parameters. [`Default`] is the documented plant: an end-suction pump
/// rated 100 m³/h at 50 m and 2900 rpm on a 22 kW motor, lifting 20 m.
#[derive(Debug, Clone, PartialEq)]
pub struct PlantParams {
    /// Rated (nominal) speed, rpm: the speed the pump curve below is given at.
    pub rated_speed_rpm: f64,
    /// Shut-off head at rated speed, m.
    pub shutoff_head_m: f64,
    /// Pump curve coefficient: `H = H0 − k·Q²` at rated speed, m/(m³/h)².
    pub pump_curve_k: f64,
    /// Best-efficiency flow at rated speed, m³/h (for the off-design vibration term).
    pub bep_flow_m3h: f64,
    /// Shaft power at shut-off and rated speed, kW.
    pub shutoff_power_kw: f64,
    /// Shaft power rise per m³/h at rated speed, kW/(m³/h).
    pub power_slope_kw_per_m3h: f64,
    /// Static head of the system (tank-to-tank lift), m.
    pub static_head_m: f64,
    /// System friction coefficient: `H = Hs + ks·Q²`, m/(m³/h)².
    pub system_k: f64,
    /// Bypass line coefficient when open: `H = kb·Q²`, m/(m³/h)².
    pub bypass_k: f64,
    /// Height of the suction tank's level above the pump, m.
    pub suction_static_head_m: f64,
    /// Suction line friction coefficient, m/(m³/h)².
    pub suction_k: f64,
    /// Fluid density, kg/m³.
    pub density_kg_m3: f64,
    /// Motor rated (shaft) power, kW.
    pub motor_rated_kw: f64,
    /// Supply line voltage of the drive, V.
    pub line_voltage_v: f64,
    /// Power factor seen by the supply.
    pub power_factor: f64,
    /// Motor and drive efficiency.
    pub motor_efficiency: f64,
    /// Ambient temperature, °C.
    pub ambient_c: f64,
    /// Bearing temperature rise from speed (∝ speed²) at rated speed, K.
    pub bearing_rise_speed_k: f64,
    /// Bearing temperature rise from load (∝ shaft power) at rated power, K.
    pub bearing_rise_load_k: f64,
    /// Bearing temperature rise of a fully worn bearing, K.
    pub bearing_rise_wear_k: f64,
    /// Bearing thermal time constant with healthy cooling, s.
    pub bearing_tau_s: f64,
    /// Motor winding temperature rise at rated losses, K.
    pub motor_rise_rated_k: f64,
    /// Motor thermal time constant with healthy cooling, s.
    pub motor_tau_s: f64,
    /// Vibration from residual unbalance (∝ speed) at rated speed, mm/s RMS.
    pub vibration_unbalance_mm_s: f64,
    /// Vibration from vane pass and flow (∝ speed²) at rated speed, mm/s RMS.
    pub vibration_hydraulic_mm_s: f64,
    /// Extra vibration per squared relative distance from the best-efficiency flow, mm/s RMS.
    pub vibration_off_design_mm_s: f64,
    /// Vibration of a fully worn bearing at rated speed (∝ speed), mm/s RMS.
    pub vibration_wear_mm_s: f64,
    /// Broadband vibration of full cavitation, mm/s RMS.
    pub vibration_cavitation_mm_s: f64,
    /// Time for bearing damage to double at rated speed, s.
    pub wear_doubling_s: f64,
    /// Fraction of the pump head lost at full cavitation.
    pub cavitation_head_loss: f64,
    /// Suction pressure drop at full cavitation, kPa.
    pub cavitation_suction_drop_kpa: f64,
    /// Correlation time of the cavitation fluctuation, s.
    pub cavitation_tau_s: f64,
    /// Fraction of the motor's cooling lost at full overheating severity.
    pub overheating_motor_cooling_loss: f64,
    /// Fraction of the bearing's cooling lost at full overheating severity.
    pub overheating_bearing_cooling_loss: f64,
    /// Bearing temperature alarm limit, °C.
    pub bearing_alarm_c: f64,
    /// Motor temperature alarm limit, °C.
    pub motor_alarm_c: f64,
    /// Vibration alarm limit, mm/s RMS.
    pub vibration_alarm_mm_s: f64,
    /// Transmitter noise.
    pub noise: Noise,
    /// The starting state.
    pub initial: Initial,
}

impl Default for PlantParams {
    fn default() -> Self {
        PlantParams {
            rated_speed_rpm: 2900.0,
            shutoff_head_m: 60.0,
            pump_curve_k: 0.001,
            bep_flow_m3h: 100.0,
            shutoff_power_kw: 8.0,
            power_slope_kw_per_m3h: 0.102,
            static_head_m: 20.0,
            system_k: 0.003,
            bypass_k: 0.025,
            suction_static_head_m: 3.0,
            suction_k: 0.0001,
            density_kg_m3: 998.0,
            motor_rated_kw: 22.0,
            line_voltage_v: 400.0,
            power_factor: 0.86,
            motor_efficiency: 0.92,
            ambient_c: 25.0,
            bearing_rise_speed_k: 15.0,
            bearing_rise_load_k: 12.0,
            bearing_rise_wear_k: 35.0,
            bearing_tau_s: 240.0,
            motor_rise_rated_k: 70.0,
            motor_tau_s: 300.0,
            vibration_unbalance_mm_s: 1.0,
            vibration_hydraulic_mm_s: 1.3,
            vibration_off_design_mm_s: 1.5,
            vibration_wear_mm_s: 7.0,
            vibration_cavitation_mm_s: 4.0,
            wear_doubling_s: 3600.0,
            cavitation_head_loss: 0.25,
            cavitation_suction_drop_kpa: 45.0,
            cavitation_tau_s: 0.5,
            overheating_motor_cooling_loss: 0.75,
            overheating_bearing_cooling_loss: 0.5,
            bearing_alarm_c: 85.0,
            motor_alarm_c: 130.0,
            vibration_alarm_mm_s: 7.1,
            noise: Noise::default(),
            initial: Initial { run: true, bypass_open: false, speed_setpoint_rpm: 2900.0, ramp_rpm_per_s: 200.0 },
        }
    }
}

/// The hydraulic operating point.
#[derive(Debug, Clone, Copy, PartialEq)]
struct OperatingPoint {
    /// Flow through the pump, m³/h.
    flow_m3h: f64,
    /// Pump head, m.
    head_m: f64,
}

/// A centrifugal pump on a system with a bypass line, seeded and stepped by the caller.
///
/// Same parameters, same seed and the same sequence of calls give the same numbers, bit for bit:
/// every step draws the same count of random numbers whatever the state, so a faulted run and a
/// healthy run from one seed differ only by the fault.
#[derive(Debug, Clone)]
pub struct PlantModel {
    params: PlantParams,
    seed: u64,
    rng: Xoshiro256PlusPlus,
    time_s: f64,
    setpoints: Setpoints,
    run: bool,
    bypass_open: bool,
    /// The drive's ramp output: the true shaft speed.
    speed_rpm: f64,
    bearing_temp_c: f64,
    motor_temp_c: f64,
    /// Unit-variance Ornstein–Uhlenbeck process: the cavitation fluctuation.
    fluctuation: f64,
    faults: BTreeMap<FaultKind, ActiveFault>,
    truth: Measurements,
    published: Measurements,
}

impl PlantModel {
    /// A plant in `params.initial`'s state, with noise seeded by `seed`.
    ///
    /// # Panics
    /// If the initial setpoints are outside the register map's ranges.
    pub fn new(params: PlantParams, seed: u64) -> Self {
        let init = params.initial.clone();
        let mut setpoints = Setpoints { speed_setpoint_rpm: 0.0, ramp_rpm_per_s: 200.0 };
        setpoints.set(Setpoint::SpeedRpm, init.speed_setpoint_rpm).expect("initial speed setpoint in range");
        setpoints.set(Setpoint::RampRpmPerS, init.ramp_rpm_per_s).expect("initial ramp in range");
        let speed_rpm = if init.run { init.speed_setpoint_rpm } else { 0.0 };
        let mut model = PlantModel {
            seed,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            time_s: 0.0,
            setpoints,
            run: init.run,
            bypass_open: init.bypass_open,
            speed_rpm,
            bearing_temp_c: params.ambient_c,
            motor_temp_c: params.ambient_c,
            fluctuation: 0.0,
            faults: BTreeMap::new(),
            truth: Measurements::default(),
            published: Measurements::default(),
            params,
        };
        // Start at thermal equilibrium, then compute the first readings without advancing time.
        let (bearing_eq, _, motor_eq, _) = model.thermal_targets(model.shaft_power_kw(model.operating_point(1.0)));
        model.bearing_temp_c = bearing_eq;
        model.motor_temp_c = motor_eq;
        model.advance(0.0);
        model
    }

    /// The seed the noise was started from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The parameters.
    pub fn params(&self) -> &PlantParams {
        &self.params
    }

    /// Simulated time since the start, seconds.
    pub fn time_s(&self) -> f64 {
        self.time_s
    }

    /// Advances simulated time by `dt`. Any `dt` is stable (the dynamics are integrated exactly);
    /// the readings are sampled once at the end of the step.
    pub fn step(&mut self, dt: Duration) {
        self.advance(dt.as_secs_f64());
    }

    /// What the transmitters show: noise, derived values, stuck sensors included. This is what
    /// the input registers serve.
    pub fn measurements(&self) -> &Measurements {
        &self.published
    }

    /// The true, noise-free state of the process (derived values from true primaries). For
    /// labels and tests; no real plant offers it.
    pub fn truth(&self) -> &Measurements {
        &self.truth
    }

    /// The current setpoints.
    pub fn setpoints(&self) -> Setpoints {
        self.setpoints
    }

    /// Sets a setpoint; out-of-range values are refused and change nothing.
    pub fn set_setpoint(&mut self, s: Setpoint, value: f64) -> Result<(), MapError> {
        self.setpoints.set(s, value)
    }

    /// The state of a coil.
    pub fn coil(&self, c: Coil) -> bool {
        match c {
            Coil::Run => self.run,
            Coil::BypassOpen => self.bypass_open,
        }
    }

    /// Sets a coil; it takes effect from the next step.
    pub fn set_coil(&mut self, c: Coil, on: bool) {
        match c {
            Coil::Run => self.run = on,
            Coil::BypassOpen => self.bypass_open = on,
        }
    }

    /// A status bit, from the drive's state (running, at speed) and the transmitters (alarms).
    pub fn status(&self, s: Status) -> bool {
        let p = &self.params;
        match s {
            Status::Running => self.speed_rpm > RUNNING_RPM,
            Status::AtSpeed => self.run && (self.speed_rpm - self.setpoints.speed_setpoint_rpm).abs() < 0.5,
            Status::BearingTempHigh => self.published.bearing_temp_c > p.bearing_alarm_c,
            Status::VibrationHigh => self.published.vibration_mm_s > p.vibration_alarm_mm_s,
            Status::MotorTempHigh => self.published.motor_temp_c > p.motor_alarm_c,
        }
    }

    /// Injects a fault, replacing any fault of the same kind. A stuck sensor freezes at the value
    /// it shows now.
    pub fn inject(&mut self, fault: Fault) {
        let frozen_value = fault.sensor().map(|m| self.published.get(m));
        let active = ActiveFault {
            kind: fault.kind(),
            severity: fault.severity(),
            effective_severity: fault.severity(),
            sensor: fault.sensor(),
            frozen_value,
            since_s: self.time_s,
        };
        self.faults.insert(fault.kind(), active);
    }

    /// Clears the fault of `kind`; returns whether one was active. The process returns toward
    /// normal with its own dynamics (temperatures cool with their time constants).
    pub fn clear(&mut self, kind: FaultKind) -> bool {
        self.faults.remove(&kind).is_some()
    }

    /// Clears every fault.
    pub fn clear_all(&mut self) {
        self.faults.clear();
    }

    /// The faults in effect, by kind.
    pub fn faults(&self) -> Vec<ActiveFault> {
        self.faults.values().copied().collect()
    }

    fn severity(&self, kind: FaultKind) -> f64 {
        self.faults.get(&kind).map_or(0.0, |f| f.effective_severity)
    }

    /// Speed ratio to rated.
    fn speed_ratio(&self) -> f64 {
        if self.speed_rpm < STOPPED_RPM { 0.0 } else { self.speed_rpm / self.params.rated_speed_rpm }
    }

    /// Cavitation intensity: severity weighted by speed², because the pump's required NPSH grows
    /// with speed² and a starved suction only cavitates when the pump pulls hard.
    fn cavitation_intensity(&self) -> f64 {
        self.severity(FaultKind::Cavitation) * self.speed_ratio().powi(2).min(1.0)
    }

    /// Where the pump curve (scaled by the affinity laws and `head_factor`) meets the system
    /// curve, with the bypass in parallel when open.
    fn operating_point(&self, head_factor: f64) -> OperatingPoint {
        let p = &self.params;
        let r = self.speed_ratio();
        if r == 0.0 {
            return OperatingPoint { flow_m3h: 0.0, head_m: 0.0 };
        }
        let shutoff = head_factor * r * r * p.shutoff_head_m;
        let kp = head_factor * p.pump_curve_k;
        if !self.bypass_open {
            if shutoff <= p.static_head_m {
                // The pump cannot lift the static head: it runs dead-headed against the check valve.
                return OperatingPoint { flow_m3h: 0.0, head_m: shutoff };
            }
            let flow = ((shutoff - p.static_head_m) / (kp + p.system_k)).sqrt();
            return OperatingPoint { flow_m3h: flow, head_m: shutoff - kp * flow * flow };
        }
        // With the bypass open the outflow is the sum of two branches: solve pump(H) = out(H) for
        // H by bisection (pump flow falls and outflow rises with H, so the root is unique).
        let pump_flow = |h: f64| ((shutoff - h).max(0.0) / kp).sqrt();
        let out_flow = |h: f64| ((h - p.static_head_m).max(0.0) / p.system_k).sqrt() + (h.max(0.0) / p.bypass_k).sqrt();
        let (mut lo, mut hi) = (0.0, shutoff);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if pump_flow(mid) > out_flow(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let head = 0.5 * (lo + hi);
        OperatingPoint { flow_m3h: pump_flow(head), head_m: head }
    }

    /// Shaft power, kW: linear in flow at rated speed, scaled by speed³ along the affinity
    /// parabolas, plus the friction of a worn bearing.
    fn shaft_power_kw(&self, op: OperatingPoint) -> f64 {
        let p = &self.params;
        let r = self.speed_ratio();
        if r == 0.0 {
            return 0.0;
        }
        let pump = r.powi(3) * (p.shutoff_power_kw + p.power_slope_kw_per_m3h * op.flow_m3h / r);
        let wear_friction = 0.03 * p.motor_rated_kw * self.severity(FaultKind::BearingWear) * r;
        pump + wear_friction
    }

    /// Equilibrium temperatures and effective time constants:
    /// `(bearing_eq, bearing_tau, motor_eq, motor_tau)`.
    fn thermal_targets(&self, shaft_kw: f64) -> (f64, f64, f64, f64) {
        let p = &self.params;
        let r = self.speed_ratio();
        let overheating = self.severity(FaultKind::Overheating);
        // Losing cooling divides the conductance to ambient: the equilibrium rise and the time
        // constant both grow by 1 / cooling, so the initial rate of climb is set by the lost cooling.
        let bearing_cooling = 1.0 - p.overheating_bearing_cooling_loss * overheating;
        let motor_cooling = 1.0 - p.overheating_motor_cooling_loss * overheating;
        let bearing_rise = p.bearing_rise_speed_k * r * r
            + p.bearing_rise_load_k * shaft_kw / p.motor_rated_kw
            + p.bearing_rise_wear_k * self.severity(FaultKind::BearingWear) * r.min(1.0);
        let losses_kw = shaft_kw * (1.0 / p.motor_efficiency - 1.0);
        let rated_losses_kw = p.motor_rated_kw * (1.0 / p.motor_efficiency - 1.0);
        let motor_rise = p.motor_rise_rated_k * losses_kw / rated_losses_kw;
        (
            p.ambient_c + bearing_rise / bearing_cooling,
            p.bearing_tau_s / bearing_cooling,
            p.ambient_c + motor_rise / motor_cooling,
            p.motor_tau_s / motor_cooling,
        )
    }

    fn advance(&mut self, dt: f64) {
        let dt = dt.max(0.0);
        self.time_s += dt;

        // The drive ramps toward the setpoint while the run coil is on, and down to 0 otherwise.
        let target = if self.run { self.setpoints.speed_setpoint_rpm } else { 0.0 };
        let max_change = self.setpoints.ramp_rpm_per_s * dt;
        self.speed_rpm += (target - self.speed_rpm).clamp(-max_change, max_change);
        let r = self.speed_ratio();

        // Exact update of the unit-variance OU process; drawn every step to keep the stream aligned.
        let decay = (-dt / self.params.cavitation_tau_s).exp();
        let shock: f64 = self.rng.sample(StandardNormal);
        self.fluctuation = self.fluctuation * decay + (1.0 - decay * decay).sqrt() * shock;

        // Bearing damage grows exponentially with running time, doubling every `wear_doubling_s`.
        let growth = (LN_2 * r * dt / self.params.wear_doubling_s).exp();
        if let Some(wear) = self.faults.get_mut(&FaultKind::BearingWear) {
            wear.effective_severity = (wear.effective_severity * growth).min(1.0);
        }

        let p = self.params.clone();
        let cavitation = self.cavitation_intensity();
        let head_factor = (1.0 - cavitation * p.cavitation_head_loss * (1.0 + 0.4 * self.fluctuation)).clamp(0.3, 1.0);
        let op = self.operating_point(head_factor);
        let kpa_per_m = p.density_kg_m3 * G / 1000.0;
        let suction_kpa = kpa_per_m * (p.suction_static_head_m - p.suction_k * op.flow_m3h * op.flow_m3h)
            - cavitation * p.cavitation_suction_drop_kpa * (1.0 + 0.2 * self.fluctuation);
        let discharge_kpa = suction_kpa + kpa_per_m * op.head_m;
        let shaft_kw = self.shaft_power_kw(op);
        let current_a = line_current(&p, shaft_kw);

        let (bearing_eq, bearing_tau, motor_eq, motor_tau) = self.thermal_targets(shaft_kw);
        self.bearing_temp_c += (bearing_eq - self.bearing_temp_c) * (1.0 - (-dt / bearing_tau).exp());
        self.motor_temp_c += (motor_eq - self.motor_temp_c) * (1.0 - (-dt / motor_tau).exp());

        let vibration = if r == 0.0 {
            0.0
        } else {
            // Independent sources add in power (RMS).
            let off_design = (op.flow_m3h / r - p.bep_flow_m3h) / p.bep_flow_m3h;
            let parts = [
                p.vibration_unbalance_mm_s * r,
                p.vibration_hydraulic_mm_s * r * r,
                p.vibration_off_design_mm_s * off_design * off_design * r * r,
                p.vibration_wear_mm_s * self.severity(FaultKind::BearingWear) * r,
                p.vibration_cavitation_mm_s * cavitation * (1.0 + 0.4 * self.fluctuation).max(0.0),
            ];
            parts.iter().map(|v| v * v).sum::<f64>().sqrt()
        };

        let mut truth = Measurements {
            speed_rpm: self.speed_rpm,
            flow_m3h: op.flow_m3h,
            suction_pressure_kpa: suction_kpa,
            discharge_pressure_kpa: discharge_kpa,
            motor_current_a: current_a,
            shaft_power_kw: shaft_kw,
            bearing_temp_c: self.bearing_temp_c,
            motor_temp_c: self.motor_temp_c,
            vibration_mm_s: vibration,
            ..Measurements::default()
        };
        derive(&mut truth, kpa_per_m, p.density_kg_m3);
        self.truth = truth;

        // Always nine draws, in this order, whatever the state.
        let n = &p.noise;
        let mut noisy = |value: f64, sigma: f64| value + sigma * self.rng.sample::<f64, _>(StandardNormal);
        let mut out = Measurements {
            speed_rpm: noisy(truth.speed_rpm, n.speed_rpm).max(0.0),
            flow_m3h: noisy(truth.flow_m3h, n.flow_m3h).max(0.0),
            suction_pressure_kpa: noisy(truth.suction_pressure_kpa, n.suction_kpa),
            discharge_pressure_kpa: noisy(truth.discharge_pressure_kpa, n.discharge_kpa),
            motor_current_a: noisy(truth.motor_current_a, n.current_a).max(0.0),
            shaft_power_kw: noisy(truth.shaft_power_kw, n.shaft_power_kw).max(0.0),
            bearing_temp_c: noisy(truth.bearing_temp_c, n.bearing_temp_c),
            motor_temp_c: noisy(truth.motor_temp_c, n.motor_temp_c),
            vibration_mm_s: noisy(truth.vibration_mm_s, n.vibration_mm_s).max(0.0),
            ..Measurements::default()
        };
        // A stuck primary feeds its frozen value into the derived values, as in a real controller.
        let stuck = self.faults.get(&FaultKind::StuckSensor).and_then(|f| Some((f.sensor?, f.frozen_value?)));
        if let Some((m, v)) = stuck {
            out.set(m, v);
        }
        derive(&mut out, kpa_per_m, p.density_kg_m3);
        if let Some((m, v)) = stuck {
            out.set(m, v);
        }
        self.published = out;
    }
}

/// The drive's supply-side line current for `shaft_kw` at the motor shaft:
/// `I = P_shaft / η / (√3 · V · cos φ)`.
fn line_current(p: &PlantParams, shaft_kw: f64) -> f64 {
    let electric_w = shaft_kw * 1000.0 / p.motor_efficiency;
    electric_w / (3f64.sqrt() * p.line_voltage_v * p.power_factor)
}

/// Fills head, hydraulic power and efficiency from the pressures, flow and shaft power.
fn derive(m: &mut Measurements, kpa_per_m: f64, density: f64) {
    m.head_m = ((m.discharge_pressure_kpa - m.suction_pressure_kpa) / kpa_per_m).max(0.0);
    m.hydraulic_power_kw = density * G * (m.flow_m3h / 3600.0) * m.head_m / 1000.0;
    m.efficiency_pct = if m.shaft_power_kw > EFFICIENCY_MIN_POWER_KW {
        (100.0 * m.hydraulic_power_kw / m.shaft_power_kw).clamp(0.0, 100.0)
    } else {
        0.0
    };
}

#[cfg(test)]
mod tests;
