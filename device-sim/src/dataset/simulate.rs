//! One run: the plant stepped as the served plant steps it, polled as the sensor polls it (through
//! the register map, so quantized like Modbus values), and the readings fed to the analyzer's own
//! feature window (`pump-features`).

use std::time::Duration;

use pump_features::Window;
use pump_map::{Coil, Measurements, Setpoint, Status};
use pump_types::Reading;

use super::plan::{Change, RunPlan};
use super::{DatasetError, DatasetOptions};
use crate::plant::{Fault, Initial, PlantModel, PlantParams};

/// The served plant's tick: the model is stepped at most this far at once.
const TICK: Duration = Duration::from_millis(100);
/// The readings' clock starts here (epoch ms); features only use differences of it.
const EPOCH_MS: u64 = 1_700_000_000_000;

/// One row: the window that ends with the reading taken at `t_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Simulated seconds from the run's start to the window's newest reading.
    pub t_s: f64,
    /// [`RunPlan::label_at`] of `t_s`.
    pub label: &'static str,
    /// `Features::vector()` of the window.
    pub features: Vec<f64>,
}

/// Simulates `run` and returns its rows: one per `stride` readings once the window is full.
pub fn simulate(run: &RunPlan, options: &DatasetOptions) -> Result<Vec<Row>, DatasetError> {
    let defaults = PlantParams::default();
    let params = PlantParams {
        ambient_c: run.ambient_c,
        static_head_m: run.static_head_m,
        initial: Initial {
            speed_setpoint_rpm: run.speed_rpm,
            bypass_open: run.bypass_open,
            ..defaults.initial.clone()
        },
        ..defaults
    };
    let mut plant = PlantModel::new(params, run.plant_seed);
    let mut window = Window::new(options.window);
    let poll = Duration::from_millis(options.poll_ms);
    let polls = (options.run_s() * 1000.0 / options.poll_ms as f64).round() as u64;
    let mut fault = run.fault;
    let mut change = run.change;
    let mut rows = Vec::new();
    for k in 1..=polls {
        // Events planned for the time of the previous reading happen right after it was taken.
        // Counted in polls, not read from the plant's float clock, so an event on a poll time is
        // never missed by rounding.
        let now_s = ((k - 1) * options.poll_ms) as f64 / 1000.0;
        if let Some(f) = fault.filter(|f| f.onset_s <= now_s) {
            let injected =
                Fault::new(f.kind, f.severity, f.sensor).map_err(|e| DatasetError::Internal(e.to_string()))?;
            plant.inject(injected);
            fault = None;
        }
        if let Some(c) = change.filter(|c| c.at_s <= now_s) {
            match c.change {
                Change::SpeedRpm(rpm) => {
                    plant.set_setpoint(Setpoint::SpeedRpm, rpm).map_err(|e| DatasetError::Internal(e.to_string()))?
                }
                Change::BypassOpen(open) => plant.set_coil(Coil::BypassOpen, open),
            }
            change = None;
        }
        let mut left = poll;
        while left > Duration::ZERO {
            let dt = left.min(TICK);
            plant.step(dt);
            left -= dt;
        }
        let m = Measurements::from_registers(&plant.measurements().to_registers())
            .map_err(|e| DatasetError::Internal(format!("the register table does not decode: {e}")))?;
        let reading = Reading {
            v: pump_types::PAYLOAD_VERSION,
            seq: k,
            ts: EPOCH_MS + k * options.poll_ms,
            m,
            running: plant.status(Status::Running),
            bypass_open: plant.coil(Coil::BypassOpen),
        };
        window.push(&reading);
        let k = k as usize;
        if k >= options.window && (k - options.window).is_multiple_of(options.stride) {
            let t_s = (k as u64 * options.poll_ms) as f64 / 1000.0;
            let features = window.features().vector();
            if let Some(bad) = features.iter().position(|v| !v.is_finite()) {
                return Err(DatasetError::Internal(format!(
                    "run {} at {t_s} s: feature {} is {}",
                    run.run_id,
                    pump_features::Features::names()[bad],
                    features[bad]
                )));
            }
            rows.push(Row { t_s, label: run.label_at(t_s), features });
        }
    }
    Ok(rows)
}
