//! Sliding-window features of pump readings: per measurement, statistics over the last
//! `capacity` readings.
//!
//! This crate is the one feature extraction of the pump station: the analyzer runs it at the edge
//! and the dataset generator (`device-sim dataset`) runs it to produce training data, so a model
//! sees at the edge exactly the features it was trained on. It does no I/O.
//!
//! The window is pure: readings go in with [`Window::push`], [`Window::features`] computes the
//! statistics. Time comes from the readings' own timestamps (`ts`, epoch milliseconds), so the
//! slopes are per second of the sensor's clock whatever the poll period.
//!
//! [`Features::vector`] lays every statistic out in one fixed order ([`Features::names`]) for a
//! model that takes a feature vector: the per-measurement statistics, then the summaries over all
//! measurements ([`Features::SUMMARY_NAMES`]).
//!
//! Besides the window, a [`Window`] keeps two things about every reading it has seen: how long
//! each measurement has kept its value, and a slow exponential average of each measurement (time
//! constant [`SLOW_TAU_S`]). Temperatures follow their load over minutes, longer than a window of
//! vibration-sized length shows; the slow averages give a longer horizon for them
//! ([`Features::rise`]), which [`Features::vector`] carries for the load and the temperatures.

use std::collections::VecDeque;

use pump_map::{Measurement, Measurements};
use pump_types::Reading;

/// Time constant of the slow averages behind [`Features::rise`], seconds: the order of a motor's
/// thermal time constant, several windows long.
pub const SLOW_TAU_S: f64 = 300.0;

/// Statistics of one measurement over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Least-squares slope against time, units per second (0 with fewer than two distinct times).
    pub slope: f64,
    /// Change between the last two readings, units per second (0 with fewer than two readings).
    pub rate: f64,
    /// The latest value.
    pub last: f64,
    /// The least-squares line's value at the latest reading's time: the latest value without
    /// most of its noise.
    pub fit_last: f64,
    /// How many consecutive readings, ending with the latest, carry exactly the latest value
    /// (1 when it just changed). Counted over every reading seen, not only the window.
    pub unchanged: u64,
}

impl Stats {
    /// The statistics' names, in [`Stats::values`] order.
    pub const NAMES: [&'static str; 9] =
        ["mean", "std", "min", "max", "slope", "rate", "last", "fit_last", "unchanged"];

    /// The statistics in [`Stats::NAMES`] order.
    pub fn values(&self) -> [f64; 9] {
        [
            self.mean,
            self.std,
            self.min,
            self.max,
            self.slope,
            self.rate,
            self.last,
            self.fit_last,
            self.unchanged as f64,
        ]
    }

    /// Where a first-order lag with time constant `tau_s` is heading: `mean + tau_s · slope`.
    ///
    /// A temperature that follows `dT/dt = (T_eq − T)/τ` satisfies `T_eq = T + τ·dT/dt` at every
    /// instant. The fitted slope is the derivative at the window's middle, where the fitted line
    /// passes through the mean, so the pair is taken there: taken at the window's end it would
    /// overshoot by half the window's rise.
    pub fn projected(&self, tau_s: f64) -> f64 {
        self.mean + tau_s * self.slope
    }
}

/// The features of one window: [`Stats`] for each of the twelve measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Readings in the window.
    pub samples: usize,
    /// Whether the window holds its full capacity.
    pub full: bool,
    /// Seconds from the oldest to the newest reading.
    pub span_s: f64,
    /// Per measurement, in [`Measurement::ALL`] order.
    stats: [Stats; 12],
    /// Per measurement, the slow average of every reading seen, at the newest reading.
    slow: [f64; 12],
}

impl Features {
    /// The names of the summaries over all measurements, in the order [`Features::vector`] appends
    /// them after the per-measurement statistics.
    pub const SUMMARY_NAMES: [&'static str; 6] = [
        "all.unchanged_max",
        "speed_rpm.rise",
        "shaft_power_kw.rise",
        "bearing_temp_c.rise",
        "motor_temp_c.rise",
        "motor_minus_bearing",
    ];

    /// The measurements whose [`Features::rise`] [`Features::vector`] carries, in order: the load
    /// (speed, shaft power) and the two temperatures that follow it over minutes.
    pub const RISE_OF: [Measurement; 4] =
        [Measurement::SpeedRpm, Measurement::ShaftPowerKw, Measurement::BearingTempC, Measurement::MotorTempC];

    /// The statistics of `m`.
    pub fn get(&self, m: Measurement) -> &Stats {
        &self.stats[m as usize]
    }

    /// How far `m`'s fitted latest value ([`Stats::fit_last`]) stands above its slow average
    /// (time constant [`SLOW_TAU_S`], over every reading seen since the window was created or
    /// cleared). A steady measurement reads about 0; one climbing at a steady rate `r` per second
    /// reads about `r · SLOW_TAU_S` once it has climbed for a few time constants; after a step it
    /// decays over minutes, long after the window has forgotten the step.
    pub fn rise(&self, m: Measurement) -> f64 {
        if self.samples == 0 { 0.0 } else { self.get(m).fit_last - self.slow[m as usize] }
    }

    /// The motor's fitted temperature minus the bearing's ([`Stats::fit_last`]): both follow the
    /// ambient temperature, their difference follows the load and the cooling.
    pub fn motor_minus_bearing(&self) -> f64 {
        self.get(Measurement::MotorTempC).fit_last - self.get(Measurement::BearingTempC).fit_last
    }

    /// The longest run of unchanged readings ([`Stats::unchanged`]) among the measurements whose
    /// latest value is neither 0 nor at an end of its transmitter's range (a clipped or idle
    /// transmitter legitimately repeats those); 0 when none qualifies.
    ///
    /// Every measurement is noisy while the pump runs, so a long run of one value means a frozen
    /// transmitter, whichever it is: one number a model can learn from any stuck measurement,
    /// where the twelve counters each need their own examples.
    pub fn unchanged_max(&self) -> u64 {
        Measurement::ALL
            .iter()
            .map(|m| (m.spec(), self.get(*m)))
            .filter(|(spec, s)| s.last != 0.0 && s.last > spec.min && s.last < spec.max)
            .map(|(_, s)| s.unchanged)
            .max()
            .unwrap_or(0)
    }

    /// Every statistic as one vector, in [`Features::names`] order: measurement by measurement
    /// ([`Measurement::ALL`] order), each with the [`Stats::NAMES`] in order, then the summaries
    /// ([`Features::SUMMARY_NAMES`]): [`Features::unchanged_max`], the [`Features::rise`] of each
    /// of [`Features::RISE_OF`], and [`Features::motor_minus_bearing`]. The order is a contract
    /// with trained models: append, never reorder.
    pub fn vector(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.stats.iter().flat_map(Stats::values).collect();
        v.push(self.unchanged_max() as f64);
        v.extend(Self::RISE_OF.iter().map(|m| self.rise(*m)));
        v.push(self.motor_minus_bearing());
        v
    }

    /// The names of [`Features::vector`]'s entries: `"{measurement}.{stat}"`, then the
    /// [`Features::SUMMARY_NAMES`].
    pub fn names() -> Vec<String> {
        Measurement::ALL
            .iter()
            .flat_map(|m| Stats::NAMES.iter().map(move |s| format!("{}.{s}", m.name())))
            .chain(Self::SUMMARY_NAMES.iter().map(|s| (*s).to_owned()))
            .collect()
    }
}

/// The last `capacity` readings, with the stuck-value counters and the slow averages.
#[derive(Debug, Clone)]
pub struct Window {
    capacity: usize,
    /// `(ts in ms, measurements)`, oldest first.
    samples: VecDeque<(u64, Measurements)>,
    unchanged: [u64; 12],
    /// Exponential averages of every reading seen, time constant [`SLOW_TAU_S`].
    slow: [f64; 12],
}

impl Window {
    /// An empty window of `capacity` readings (at least 2).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Window { capacity, samples: VecDeque::with_capacity(capacity), unchanged: [0; 12], slow: [0.0; 12] }
    }

    /// How many readings the window keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Readings held now.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no reading is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The newest reading's timestamp.
    pub fn last_ts(&self) -> Option<u64> {
        self.samples.back().map(|(ts, _)| *ts)
    }

    /// Changes the capacity, dropping the oldest readings if it shrinks.
    pub fn resize(&mut self, capacity: usize) {
        self.capacity = capacity.max(2);
        while self.samples.len() > self.capacity {
            self.samples.pop_front();
        }
    }

    /// Forgets every reading (after a clock jump, say), the counters and slow averages included.
    pub fn clear(&mut self) {
        self.samples.clear();
        self.unchanged = [0; 12];
        self.slow = [0.0; 12];
    }

    /// Adds a reading, dropping the oldest when full. The caller keeps timestamps increasing.
    ///
    /// The slow averages start at the first reading's values and then move toward each reading
    /// by `1 − e^(−Δt/τ)` of the gap, `Δt` the time since the previous reading (0 for a
    /// timestamp that does not increase).
    pub fn push(&mut self, reading: &Reading) {
        let weight = match self.samples.back() {
            None => 1.0,
            Some((prev_ts, _)) => {
                let dt = reading.ts.saturating_sub(*prev_ts) as f64 / 1000.0;
                1.0 - (-dt / SLOW_TAU_S).exp()
            }
        };
        for (i, m) in Measurement::ALL.iter().enumerate() {
            let value = reading.m.get(*m);
            let same = self.samples.back().is_some_and(|(_, prev)| prev.get(*m) == value);
            self.unchanged[i] = if same { self.unchanged[i] + 1 } else { 1 };
            self.slow[i] += weight * (value - self.slow[i]);
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back((reading.ts, reading.m));
    }

    /// The statistics of the readings held now (all zero when empty).
    pub fn features(&self) -> Features {
        let mut stats = [Stats::default(); 12];
        let Some(&(first_ts, _)) = self.samples.front() else {
            return Features { samples: 0, full: false, span_s: 0.0, stats, slow: self.slow };
        };
        // Seconds since the oldest reading: small numbers keep the sums precise.
        let times: Vec<f64> = self.samples.iter().map(|(ts, _)| ts.saturating_sub(first_ts) as f64 / 1000.0).collect();
        let n = times.len() as f64;
        let t_mean = times.iter().sum::<f64>() / n;
        let t_var: f64 = times.iter().map(|t| (t - t_mean).powi(2)).sum();
        let t_last = *times.last().unwrap_or(&0.0);
        for (i, m) in Measurement::ALL.iter().enumerate() {
            let values: Vec<f64> = self.samples.iter().map(|(_, ms)| ms.get(*m)).collect();
            let mean = values.iter().sum::<f64>() / n;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let slope = if t_var > 0.0 {
                times.iter().zip(&values).map(|(t, v)| (t - t_mean) * (v - mean)).sum::<f64>() / t_var
            } else {
                0.0
            };
            let last = values[values.len() - 1];
            let rate = match values.len() {
                0 | 1 => 0.0,
                k => {
                    let dt = times[k - 1] - times[k - 2];
                    if dt > 0.0 { (last - values[k - 2]) / dt } else { 0.0 }
                }
            };
            stats[i] = Stats {
                mean,
                std,
                min,
                max,
                slope,
                rate,
                last,
                fit_last: mean + slope * (t_last - t_mean),
                unchanged: self.unchanged[i],
            };
        }
        Features {
            samples: self.samples.len(),
            full: self.samples.len() == self.capacity,
            span_s: t_last,
            stats,
            slow: self.slow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(seq: u64, ts: u64, edit: impl FnOnce(&mut Measurements)) -> Reading {
        let mut m = Measurements::default();
        edit(&mut m);
        Reading { v: 1, seq, ts, m, running: true, bypass_open: false }
    }

    fn window_of(capacity: usize, series: &[(u64, f64)]) -> Window {
        let mut w = Window::new(capacity);
        for (i, &(ts, v)) in series.iter().enumerate() {
            w.push(&reading(i as u64, ts, |m| m.motor_temp_c = v));
        }
        w
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn statistics_of_a_window_match_hand_computed_values() {
        struct Case {
            name: &'static str,
            capacity: usize,
            series: &'static [(u64, f64)],
            mean: f64,
            std: f64,
            min: f64,
            max: f64,
            slope: f64,
            rate: f64,
            fit_last: f64,
            unchanged: u64,
        }
        let cases = [
            Case {
                name: "a line rising 0.5 per second",
                capacity: 5,
                series: &[(1000, 10.0), (2000, 10.5), (3000, 11.0), (4000, 11.5), (5000, 12.0)],
                mean: 11.0,
                std: 0.5f64.sqrt(),
                min: 10.0,
                max: 12.0,
                slope: 0.5,
                rate: 0.5,
                fit_last: 12.0,
                unchanged: 1,
            },
            Case {
                name: "only the newest readings count once full",
                capacity: 3,
                series: &[(0, 100.0), (1000, 1.0), (2000, 2.0), (3000, 3.0)],
                mean: 2.0,
                std: (2.0f64 / 3.0).sqrt(),
                min: 1.0,
                max: 3.0,
                slope: 1.0,
                rate: 1.0,
                fit_last: 3.0,
                unchanged: 1,
            },
            Case {
                name: "slopes are per second of the readings' clock, not per sample",
                capacity: 3,
                series: &[(0, 0.0), (500, 1.0), (1000, 2.0)],
                mean: 1.0,
                std: (2.0f64 / 3.0).sqrt(),
                min: 0.0,
                max: 2.0,
                slope: 2.0,
                rate: 2.0,
                fit_last: 2.0,
                unchanged: 1,
            },
            Case {
                name: "a frozen value counts every unchanged reading, beyond the window",
                capacity: 3,
                series: &[(0, 1.0), (1000, 7.0), (2000, 7.0), (3000, 7.0), (4000, 7.0)],
                mean: 7.0,
                std: 0.0,
                min: 7.0,
                max: 7.0,
                slope: 0.0,
                rate: 0.0,
                fit_last: 7.0,
                unchanged: 4,
            },
            Case {
                name: "one reading: no slope, no rate",
                capacity: 3,
                series: &[(0, 4.0)],
                mean: 4.0,
                std: 0.0,
                min: 4.0,
                max: 4.0,
                slope: 0.0,
                rate: 0.0,
                fit_last: 4.0,
                unchanged: 1,
            },
            Case {
                name: "noise around a flat line: the fit removes it at the end",
                capacity: 4,
                series: &[(0, 1.0), (1000, -1.0), (2000, 1.0), (3000, -1.0)],
                mean: 0.0,
                std: 1.0,
                min: -1.0,
                max: 1.0,
                slope: -0.4,
                rate: -2.0,
                fit_last: -0.6,
                unchanged: 1,
            },
        ];
        for c in cases {
            let f = window_of(c.capacity, c.series).features();
            let s = f.get(Measurement::MotorTempC);
            assert!(close(s.mean, c.mean), "{}: mean {}", c.name, s.mean);
            assert!(close(s.std, c.std), "{}: std {}", c.name, s.std);
            assert!(close(s.min, c.min), "{}: min {}", c.name, s.min);
            assert!(close(s.max, c.max), "{}: max {}", c.name, s.max);
            assert!(close(s.slope, c.slope), "{}: slope {}", c.name, s.slope);
            assert!(close(s.rate, c.rate), "{}: rate {}", c.name, s.rate);
            assert!(close(s.fit_last, c.fit_last), "{}: fit_last {}", c.name, s.fit_last);
            assert_eq!(s.unchanged, c.unchanged, "{}", c.name);
        }
    }

    #[test]
    fn window_reports_fill_and_span() {
        let mut w = window_of(3, &[(10_000, 1.0), (11_000, 2.0)]);
        let f = w.features();
        assert_eq!((f.samples, f.full), (2, false));
        assert!(close(f.span_s, 1.0));
        w.push(&reading(3, 12_500, |_| {}));
        let f = w.features();
        assert_eq!((f.samples, f.full), (3, true));
        assert!(close(f.span_s, 2.5));
        w.resize(2);
        assert_eq!(w.features().samples, 2);
        w.clear();
        assert!(w.is_empty());
        assert_eq!(w.features().samples, 0);
    }

    #[test]
    fn projection_of_a_first_order_lag_is_its_equilibrium() {
        // T(t) = 80 - 30·e^(−t/300): heading for 80 °C with τ = 300 s.
        let series: Vec<(u64, f64)> = (0..30).map(|i| (i * 1000, 80.0 - 30.0 * (-(i as f64) / 300.0).exp())).collect();
        let s = *window_of(30, &series).features().get(Measurement::MotorTempC);
        let projected = s.projected(300.0);
        assert!((projected - 80.0).abs() < 0.05, "projected {projected}");
    }

    #[test]
    fn feature_vector_has_a_fixed_named_order() {
        let w = window_of(3, &[(0, 1.0), (1000, 3.0)]);
        let f = w.features();
        let names = Features::names();
        let vector = f.vector();
        assert_eq!(names.len(), 12 * Stats::NAMES.len() + Features::SUMMARY_NAMES.len());
        assert_eq!(vector.len(), names.len());
        assert_eq!(names[0], "speed_rpm.mean");
        let i = names.iter().position(|n| n == "motor_temp_c.mean").unwrap();
        assert!(close(vector[i], 2.0));
        let j = names.iter().position(|n| n == "motor_temp_c.slope").unwrap();
        assert!(close(vector[j], 2.0));
        // The per-measurement block keeps its place; the summaries follow it.
        assert_eq!(names[12 * Stats::NAMES.len() - 1], "vibration_mm_s.unchanged");
        assert_eq!(names[12 * Stats::NAMES.len()..], Features::SUMMARY_NAMES);
        // The thermal summaries carry the values their accessors compute.
        let at = |name: &str| vector[names.iter().position(|n| n == name).unwrap()];
        assert!(close(at("motor_temp_c.rise"), f.rise(Measurement::MotorTempC)));
        assert!(at("motor_temp_c.rise") > 0.0, "a climbing temperature rises over its slow average");
        assert!(close(at("motor_minus_bearing"), f.motor_minus_bearing()));
        assert!(close(at("motor_minus_bearing"), 3.0), "motor 3, bearing 0 at the latest reading");
        for (m, name) in Features::RISE_OF.iter().zip(&Features::SUMMARY_NAMES[1..]) {
            assert_eq!(*name, format!("{}.rise", m.name()));
        }
    }

    #[test]
    fn rise_is_the_fitted_value_over_a_slow_average_of_every_reading() {
        // α = 1 − e^(−1/300) per one-second reading; a ramp's slow average lags it by
        // r·(1 − α)/α = r · 299.500 s once the start has decayed (ten time constants here).
        let lag_s = (-1.0f64 / SLOW_TAU_S).exp() / (1.0 - (-1.0f64 / SLOW_TAU_S).exp());
        assert!((lag_s - 299.500).abs() < 1e-3, "{lag_s}");
        let ramp: Vec<(u64, f64)> = (0..3001).map(|i| (i * 1000, 20.0 + 0.01 * i as f64)).collect();
        let f = window_of(60, &ramp).features();
        assert!((f.rise(Measurement::MotorTempC) - 0.01 * lag_s).abs() < 1e-3, "{}", f.rise(Measurement::MotorTempC));

        // A step from 20 to 30 held 300 readings: the window is flat at 30, the slow average is
        // 30 − 10·(1 − α)^300 = 30 − 10/e.
        let step: Vec<(u64, f64)> = (0..601).map(|i| (i * 1000, if i <= 300 { 20.0 } else { 30.0 })).collect();
        let mut w = window_of(60, &step);
        let f = w.features();
        assert!(close(f.get(Measurement::MotorTempC).slope, 0.0));
        assert!((f.rise(Measurement::MotorTempC) - 10.0 / std::f64::consts::E).abs() < 1e-9);

        // A steady value, a single reading and an empty window: no rise.
        assert!(close(
            window_of(4, &[(0, 5.0), (1000, 5.0), (2000, 5.0)]).features().rise(Measurement::MotorTempC),
            0.0
        ));
        assert!(close(window_of(4, &[(0, 5.0)]).features().rise(Measurement::MotorTempC), 0.0));
        w.clear();
        assert!(close(w.features().rise(Measurement::MotorTempC), 0.0));
        // After a clear the average starts again at the first reading.
        w.push(&reading(1, 700_000, |m| m.motor_temp_c = 50.0));
        assert!(close(w.features().rise(Measurement::MotorTempC), 0.0));
    }

    #[test]
    fn motor_minus_bearing_is_the_difference_of_the_fitted_temperatures() {
        let mut w = Window::new(3);
        for (i, (bearing, motor)) in [(40.0, 70.0), (41.0, 72.0), (42.0, 74.0)].into_iter().enumerate() {
            w.push(&reading(i as u64, 1000 * i as u64, |m| {
                m.bearing_temp_c = bearing;
                m.motor_temp_c = motor;
            }));
        }
        let f = w.features();
        assert!(close(f.motor_minus_bearing(), 74.0 - 42.0), "{}", f.motor_minus_bearing());
    }

    /// A reading where every measurement is mid-range and differs from the previous reading's,
    /// with `edit` applied.
    fn moving(seq: u64, edit: impl FnOnce(&mut Measurements)) -> Reading {
        let mut m = Measurements::default();
        for meas in Measurement::ALL {
            let spec = meas.spec();
            m.set(*meas, spec.min + (spec.max - spec.min) * (0.3 + 0.01 * (seq % 7) as f64));
        }
        edit(&mut m);
        Reading { v: 1, seq, ts: seq * 1000, m, running: true, bypass_open: false }
    }

    #[test]
    fn unchanged_max_is_the_longest_frozen_measurement_in_range() {
        type Edit = fn(&mut Measurements);
        let cases: [(&str, Edit, u64); 4] = [
            ("every measurement moving", |_| {}, 1),
            ("flow frozen mid-range", |m| m.set(Measurement::FlowM3h, 41.3), 6),
            ("a value frozen at 0 is left out", |m| m.set(Measurement::FlowM3h, 0.0), 1),
            (
                "a value frozen at the range's end is left out",
                |m| m.set(Measurement::VibrationMmS, Measurement::VibrationMmS.spec().max),
                1,
            ),
        ];
        for (name, edit, want) in cases {
            let mut w = Window::new(4);
            for seq in 1..=6 {
                w.push(&moving(seq, edit));
            }
            let f = w.features();
            assert_eq!(f.unchanged_max(), want, "{name}");
            let at = Features::names().iter().position(|n| n == "all.unchanged_max").unwrap();
            assert_eq!(f.vector()[at], want as f64, "{name}: the vector's entry");
        }
        assert_eq!(Window::new(4).features().unchanged_max(), 0, "an empty window");
    }
}
