//! One run: the plant stepped as the served plant steps it, polled as the sensor polls it (through
//! the register map, so quantized like Modbus values), and the readings fed to the analyzer's own
//! feature window (`pump-features`).

use std::time::Duration;

use pump_features::Window;
use pump_map::{Coil, Measurements, Setpoint, Status};
use pump_types::Reading;

use super::plan::{Change, PlannedChange, PlannedFault, RunPlan};
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

/// One reading of a run, as the sensor would have published it.
#[derive(Debug, Clone, PartialEq)]
pub struct Polled {
    /// Simulated seconds from the run's start to the reading.
    pub t_s: f64,
    /// The reading (`seq` counts polls from 1; `ts` is a fixed epoch plus the run's time).
    pub reading: Reading,
    /// Whether the dataset has a row for the window that ends with this reading: the window is
    /// full and a multiple of `stride` readings have followed the first full one.
    pub row: bool,
}

/// The readings of one run, in order: the plant stepped as the served plant steps it and polled
/// every `poll_ms`, with the run's planned fault and operating change applied right after the
/// reading taken at their time. [`simulate`] turns them into rows; the evaluation replays them
/// through the analyzer.
pub struct Readings {
    plant: PlantModel,
    poll: Duration,
    poll_ms: u64,
    window: usize,
    stride: usize,
    polls: u64,
    k: u64,
    fault: Option<PlannedFault>,
    change: Option<PlannedChange>,
    /// When a stopped run's pump starts again (simulated seconds).
    restart_at_s: Option<f64>,
}

impl std::fmt::Debug for Readings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readings").field("k", &self.k).field("polls", &self.polls).finish()
    }
}

/// The readings of `run` under `options` (its window, poll period and stride), in order.
pub fn readings(run: &RunPlan, options: &DatasetOptions) -> Readings {
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
    Readings {
        plant: PlantModel::new(params, run.plant_seed),
        poll: Duration::from_millis(options.poll_ms),
        poll_ms: options.poll_ms,
        window: options.window,
        stride: options.stride,
        polls: (options.run_s() * 1000.0 / options.poll_ms as f64).round() as u64,
        k: 0,
        fault: run.fault,
        change: run.change,
        restart_at_s: None,
    }
}

impl Readings {
    fn poll_once(&mut self) -> Result<Polled, DatasetError> {
        self.k += 1;
        let k = self.k;
        let plant = &mut self.plant;
        // Events planned for the time of the previous reading happen right after it was taken.
        // Counted in polls, not read from the plant's float clock, so an event on a poll time is
        // never missed by rounding.
        let now_s = ((k - 1) * self.poll_ms) as f64 / 1000.0;
        if let Some(f) = self.fault.filter(|f| f.onset_s <= now_s) {
            let injected =
                Fault::new(f.kind, f.severity, f.sensor).map_err(|e| DatasetError::Internal(e.to_string()))?;
            plant.inject(injected);
            self.fault = None;
        }
        if let Some(c) = self.change.filter(|c| c.at_s <= now_s) {
            self.change = None;
            match c.change {
                Change::SpeedRpm(rpm) => {
                    plant.set_setpoint(Setpoint::SpeedRpm, rpm).map_err(|e| DatasetError::Internal(e.to_string()))?
                }
                Change::BypassOpen(open) => plant.set_coil(Coil::BypassOpen, open),
                Change::StopS(for_s) => {
                    plant.set_coil(Coil::Run, false);
                    self.restart_at_s = Some(c.at_s + for_s);
                }
            }
        }
        if self.restart_at_s.is_some_and(|at| at <= now_s) {
            plant.set_coil(Coil::Run, true);
            self.restart_at_s = None;
        }
        let mut left = self.poll;
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
            ts: EPOCH_MS + k * self.poll_ms,
            m,
            running: plant.status(Status::Running),
            bypass_open: plant.coil(Coil::BypassOpen),
        };
        let n = k as usize;
        let row = n >= self.window && (n - self.window).is_multiple_of(self.stride);
        Ok(Polled { t_s: (k * self.poll_ms) as f64 / 1000.0, reading, row })
    }
}

impl Iterator for Readings {
    type Item = Result<Polled, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        (self.k < self.polls).then(|| self.poll_once())
    }
}

/// Simulates `run` and returns its rows: one per `stride` readings once the window is full.
pub fn simulate(run: &RunPlan, options: &DatasetOptions) -> Result<Vec<Row>, DatasetError> {
    let mut window = Window::new(options.window);
    let mut rows = Vec::new();
    for polled in readings(run, options) {
        let Polled { t_s, reading, row } = polled?;
        window.push(&reading);
        if row {
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
