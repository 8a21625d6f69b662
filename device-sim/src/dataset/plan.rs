//! The run plan: which runs the dataset holds, under which conditions, with which fault, and in
//! which split. Pure and seeded: the same options give the same plan.

use pump_map::Measurement;
use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::DatasetOptions;
use crate::plant::FaultKind;

/// The classes a row can carry, in the order models number them: `normal`, then the fault kinds
/// in [`FaultKind::ALL`] order.
pub const CLASSES: [&str; 5] = ["normal", "bearing_wear", "cavitation", "overheating", "stuck_sensor"];

/// Runs per class that a dataset needs at least: one each for train, validation and test.
pub const MIN_RUNS_PER_CLASS: usize = 3;

/// Share of each class's runs held out for validation, and again for test.
const HOLDOUT_SHARE: f64 = 0.2;
/// Speeds a run operates at (rpm): the plant delivers water from about 1675 rpm, and the speed
/// setpoint register stops at 3000.
const SPEED_RPM: (f64, f64) = (1700.0, 3000.0);
/// Chance that a run starts with the bypass open.
const BYPASS_OPEN_P: f64 = 0.3;
/// Ambient temperatures (°C): every temperature's baseline moves with it.
const AMBIENT_C: (f64, f64) = (15.0, 35.0);
/// Static lifts (m): the load. Above 20 m the pump would not deliver at 1700 rpm.
const STATIC_HEAD_M: (f64, f64) = (17.0, 20.0);
/// Fault severities (bearing wear, cavitation, overheating).
const SEVERITY: (f64, f64) = (0.15, 1.0);
/// Fault onset, as a share of the run (and never before the first window is full).
const ONSET_SHARE: (f64, f64) = (0.25, 0.6);
/// Chance that the operator changes something during the run (speed or bypass), at a time in
/// [`CHANGE_SHARE`] of the run, unrelated to any fault: normal transients the model must not
/// take for faults. Most of them change the load, and a load change moves the temperatures for
/// minutes as an overheating does: the model needs many of them to tell the two apart.
const CHANGE_P: f64 = 0.7;
/// When an operating change can happen, as a share of the run.
const CHANGE_SHARE: (f64, f64) = (0.1, 0.9);
/// Share of operating changes that toggle the bypass (the others change the speed).
const CHANGE_BYPASS_P: f64 = 0.3;
/// Chance that a normal run's operating change is instead a stop and a start-up: the run coil
/// cleared at a time in [`STOP_SHARE`] of the run and set again [`STOP_FOR_SHARE`] of the run
/// later. A pump warming up after a restart climbs as an overheating one does; only normal runs
/// stop, so a fault's onset never falls while its pump is stopped.
const STOP_P: f64 = 0.35;
/// When a stop can happen, as a share of the run: early, so the run ends with minutes at speed.
const STOP_SHARE: (f64, f64) = (0.02, 0.1);
/// How long a stop lasts, as a share of the run.
const STOP_FOR_SHARE: (f64, f64) = (0.12, 0.5);

/// The three datasets a model meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Fits the model.
    Train,
    /// Chooses hyperparameters and reports the model card's metrics.
    Validation,
    /// Held out for the final evaluation.
    Test,
}

impl Split {
    /// Every split, in file order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Validation, Split::Test];

    /// The split's name: its directory, its file's stem and its SageMaker channel.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// The fault a run gets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlannedFault {
    /// What is injected.
    pub kind: FaultKind,
    /// Simulated seconds from the run's start; a whole number of poll periods.
    pub onset_s: f64,
    /// Injected severity (no effect for `stuck_sensor`, recorded as 1).
    pub severity: f64,
    /// The frozen measurement of a `stuck_sensor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sensor: Option<Measurement>,
}

/// What the operator changes during a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A new speed setpoint (rpm).
    SpeedRpm(f64),
    /// The bypass valve toggled to this state (`true` = open).
    BypassOpen(bool),
    /// The pump stopped by its run coil for this many seconds (a whole number of poll periods),
    /// then started again at the speed it had.
    StopS(f64),
}

/// An operating change at a time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlannedChange {
    /// Simulated seconds from the run's start; a whole number of poll periods.
    pub at_s: f64,
    /// What changes.
    pub change: Change,
}

/// One simulated run: a plant from its own seed under its own conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    /// 0-based, unique in the dataset.
    pub run_id: u32,
    /// Where its rows go.
    pub split: Split,
    /// The plant's noise seed (below 2^53).
    pub plant_seed: u64,
    /// Speed setpoint at the start (rpm; the plant starts there, thermally settled).
    pub speed_rpm: f64,
    /// Bypass valve at the start.
    pub bypass_open: bool,
    /// Ambient temperature (°C).
    pub ambient_c: f64,
    /// Static lift of the system (m).
    pub static_head_m: f64,
    /// The fault, if any.
    pub fault: Option<PlannedFault>,
    /// The operating change, if any.
    pub change: Option<PlannedChange>,
}

impl RunPlan {
    /// The class of the row whose window ends with the reading taken at `t_s`: the run's fault
    /// once the newest reading was taken after the injection (`t_s > onset_s`), `normal` before
    /// that and in runs without a fault.
    pub fn label_at(&self, t_s: f64) -> &'static str {
        match self.fault {
            Some(f) if t_s > f.onset_s => f.kind.name(),
            _ => CLASSES[0],
        }
    }
}

/// How many runs `options` asks for: its hours cut into runs of its run length, rounded.
pub fn run_count(options: &DatasetOptions) -> usize {
    (options.hours * 3600.0 / options.run_s()).round() as usize
}

/// Plans every run. Run `i` has class `CLASSES[i % 5]` (a fault run for every class but
/// `normal`), so the classes are balanced by run; each class's runs are shuffled and dealt to
/// test and validation (20 % each, at least one) and train (the rest), so no run is in two
/// splits and every split holds every class. Every run draws the same random numbers in the same
/// order whatever its class, so a plan is stable.
pub fn plan(options: &DatasetOptions) -> Vec<RunPlan> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(options.seed);
    let run_s = options.run_s();
    let window_s = options.window_s();
    // Times on the poll grid, computed as the simulation computes reading times, so they compare
    // exactly.
    let on_poll = |t: f64| ((t * 1000.0 / options.poll_ms as f64).round() as u64 * options.poll_ms) as f64 / 1000.0;
    let mut runs: Vec<RunPlan> = (0..run_count(options))
        .map(|i| {
            // 53 bits: every JSON reader holds the seed exactly (the manifest lists it).
            let plant_seed: u64 = rng.random::<u64>() >> 11;
            let speed_rpm = rng.random_range(SPEED_RPM.0..=SPEED_RPM.1).round();
            let bypass_open = rng.random_bool(BYPASS_OPEN_P);
            let ambient_c = round2(rng.random_range(AMBIENT_C.0..=AMBIENT_C.1));
            let static_head_m = round2(rng.random_range(STATIC_HEAD_M.0..=STATIC_HEAD_M.1));
            let severity = round2(rng.random_range(SEVERITY.0..=SEVERITY.1));
            let sensor = Measurement::ALL[rng.random_range(0..Measurement::ALL.len())];
            let onset_lo = (ONSET_SHARE.0 * run_s).max(window_s);
            let onset_hi = (ONSET_SHARE.1 * run_s).max(onset_lo);
            let onset_s = on_poll(rng.random_range(onset_lo..=onset_hi));
            let changes = rng.random_bool(CHANGE_P);
            let change_at = on_poll(rng.random_range(CHANGE_SHARE.0 * run_s..=CHANGE_SHARE.1 * run_s));
            let toggles_bypass = rng.random_bool(CHANGE_BYPASS_P);
            let new_speed = rng.random_range(SPEED_RPM.0..=SPEED_RPM.1).round();
            let stops = rng.random_bool(STOP_P);
            let stop_at = on_poll(rng.random_range(STOP_SHARE.0 * run_s..=STOP_SHARE.1 * run_s));
            let stop_for = on_poll(rng.random_range(STOP_FOR_SHARE.0 * run_s..=STOP_FOR_SHARE.1 * run_s));

            let fault = match i % CLASSES.len() {
                0 => None,
                k => {
                    let kind = FaultKind::ALL[k - 1];
                    let stuck = kind == FaultKind::StuckSensor;
                    Some(PlannedFault {
                        kind,
                        onset_s,
                        severity: if stuck { 1.0 } else { severity },
                        sensor: stuck.then_some(sensor),
                    })
                }
            };
            let change = if fault.is_none() && stops {
                Some(PlannedChange { at_s: stop_at, change: Change::StopS(stop_for) })
            } else {
                changes.then_some(PlannedChange {
                    at_s: change_at,
                    change: if toggles_bypass { Change::BypassOpen(!bypass_open) } else { Change::SpeedRpm(new_speed) },
                })
            };
            RunPlan {
                run_id: i as u32,
                split: Split::Train,
                plant_seed,
                speed_rpm,
                bypass_open,
                ambient_c,
                static_head_m,
                fault,
                change,
            }
        })
        .collect();
    for class in 0..CLASSES.len() {
        let mut ids: Vec<usize> = (class..runs.len()).step_by(CLASSES.len()).collect();
        shuffle(&mut ids, &mut rng);
        let holdout = ((ids.len() as f64 * HOLDOUT_SHARE).round() as usize).max(1);
        for (n, &id) in ids.iter().enumerate() {
            runs[id].split = match n {
                n if n < holdout => Split::Test,
                n if n < 2 * holdout => Split::Validation,
                _ => Split::Train,
            };
        }
    }
    runs
}

/// Fisher–Yates with our own seeded generator, so the order depends on nothing but the seed.
fn shuffle<T>(items: &mut [T], rng: &mut Xoshiro256PlusPlus) {
    for i in (1..items.len()).rev() {
        let j = rng.random_range(0..=i);
        items.swap(i, j);
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
