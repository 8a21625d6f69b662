//! The telemetry aggregator's arithmetic, pure: a telemetry batch (`docs/payloads.md`) folded
//! into per-pump, per-hour aggregates (count, sum, minimum, maximum of every measurement).
//!
//! A batch's readings may fall in two hours (a batch spans up to its `maxDelayMs`); each reading
//! goes to the hour of its own `ts` (UTC). IoT rules and Lambda's asynchronous invocations deliver
//! at least once and in no particular order, so each hour remembers the parts of batches it
//! counted — a part is named by its first reading's `ts` and its number of readings — and a part
//! seen before is not counted again, whenever it comes.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::{Map, Value};

/// What the telemetry rule hands the function: the device's batch, plus `topic(3) AS thing`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Batch {
    /// Payload version (1).
    pub v: u8,
    /// The core thing (the rule's `topic(3)`, which wins over what the device wrote).
    pub thing: String,
    /// The readings, each `{ts, seq, <measurement>: number, running, bypass_open}`; fields a
    /// deadband left out are simply absent.
    pub readings: Vec<Map<String, Value>>,
}

/// Why a batch cannot be aggregated (the invocation fails with it; nothing is written).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    /// Not the JSON shape the rule sends.
    #[error("not a telemetry batch from the telemetry rule: {0}")]
    Shape(String),
    /// A payload version this function does not know.
    #[error("telemetry batch version {0} is not supported (expected 1)")]
    Version(u8),
    /// A reading without a usable `ts`.
    #[error("reading {index} has no ts (epoch milliseconds)")]
    NoTimestamp {
        /// Its position in the batch.
        index: usize,
    },
}

impl Batch {
    /// Parses the function's input.
    pub fn parse(input: Value) -> Result<Batch, BatchError> {
        let batch: Batch = serde_json::from_value(input).map_err(|e| BatchError::Shape(e.to_string()))?;
        if batch.v != 1 {
            return Err(BatchError::Version(batch.v));
        }
        if batch.thing.is_empty() {
            return Err(BatchError::Shape("empty thing".into()));
        }
        if let Some(index) = batch.readings.iter().position(|r| timestamp(r).is_none()) {
            return Err(BatchError::NoTimestamp { index });
        }
        Ok(batch)
    }

    /// The batch's readings grouped by the UTC hour of their `ts` (`2026-12-07T17`), in time
    /// order.
    pub fn by_hour(&self) -> BTreeMap<String, Vec<&Map<String, Value>>> {
        let mut hours: BTreeMap<String, Vec<&Map<String, Value>>> = BTreeMap::new();
        for reading in &self.readings {
            let ts = timestamp(reading).unwrap_or_default();
            hours.entry(hour_of(ts)).or_default().push(reading);
        }
        for readings in hours.values_mut() {
            readings.sort_by_key(|r| timestamp(r).unwrap_or_default());
        }
        hours
    }
}

fn timestamp(reading: &Map<String, Value>) -> Option<i64> {
    reading.get("ts").and_then(Value::as_i64).filter(|ts| *ts >= 0)
}

/// The UTC hour of `ts` (ms) as the aggregate's sort key: `YYYY-MM-DDTHH`.
pub fn hour_of(ts: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "invalid".into())
}

/// Count, sum, minimum and maximum of one measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// How many readings carried it.
    pub n: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Stat {
    fn one(x: f64) -> Stat {
        Stat { n: 1, sum: x, min: x, max: x }
    }

    fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// The mean, or `None` when nothing was counted.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// One pump's hour.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HourAggregate {
    /// Readings counted.
    pub readings: u64,
    /// Of those, readings with the pump running.
    pub running: u64,
    /// Batches that added at least one reading.
    pub batches: u64,
    /// The earliest and latest reading's `ts`.
    pub first_ts: Option<i64>,
    /// See `first_ts`.
    pub last_ts: Option<i64>,
    /// Per measurement.
    pub fields: BTreeMap<String, Stat>,
    /// The batch parts counted (`{first ts}+{readings}`), so a second delivery is not.
    pub parts: BTreeSet<String>,
}

/// Fields of a reading that are not measurements.
const NOT_MEASURED: &[&str] = &["ts", "seq"];

impl HourAggregate {
    /// Folds one batch's `readings` of this hour in; returns how many were counted (0 when
    /// this part of the batch was counted before).
    pub fn absorb(&mut self, readings: &[&Map<String, Value>]) -> usize {
        let Some(first) = readings.iter().filter_map(|r| timestamp(r)).min() else { return 0 };
        if !self.parts.insert(format!("{first}+{}", readings.len())) {
            return 0;
        }
        for reading in readings {
            let Some(ts) = timestamp(reading) else { continue };
            self.readings += 1;
            self.first_ts = Some(self.first_ts.map_or(ts, |f| f.min(ts)));
            self.last_ts = Some(self.last_ts.map_or(ts, |l| l.max(ts)));
            if reading.get("running").and_then(Value::as_bool) == Some(true) {
                self.running += 1;
            }
            for (name, value) in reading.iter() {
                let Some(x) = value.as_f64().filter(|x| x.is_finite()) else { continue };
                if NOT_MEASURED.contains(&name.as_str()) {
                    continue;
                }
                match self.fields.get_mut(name) {
                    Some(stat) => stat.add(x),
                    None => {
                        self.fields.insert(name.clone(), Stat::one(x));
                    }
                }
            }
        }
        self.batches += 1;
        readings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-12-07T17:59:59.000Z.
    const T: i64 = 1_796_666_399_000;

    fn batch(readings: Value) -> Batch {
        Batch::parse(json!({"v": 1, "thing": "pump-1", "readings": readings})).unwrap()
    }

    #[test]
    fn readings_fall_into_the_utc_hour_of_their_own_timestamp() {
        assert_eq!(hour_of(T), "2026-12-07T17");
        assert_eq!(hour_of(T + 1_000), "2026-12-07T18");
        let b = batch(json!([
            {"ts": T + 1_000, "seq": 3, "flow_m3h": 90.0},
            {"ts": T, "seq": 2, "flow_m3h": 100.0},
        ]));
        let hours = b.by_hour();
        assert_eq!(hours.keys().collect::<Vec<_>>(), ["2026-12-07T17", "2026-12-07T18"]);
        assert_eq!(hours["2026-12-07T17"].len(), 1);
    }

    #[test]
    fn an_hour_counts_sums_and_bounds_every_measurement() {
        let b = batch(json!([
            {"ts": T - 2_000, "seq": 1, "flow_m3h": 100.0, "motor_temp_c": 80.0, "running": true},
            {"ts": T - 1_000, "seq": 2, "flow_m3h": 90.0, "running": false},
            {"ts": T, "seq": 3, "flow_m3h": 110.0, "motor_temp_c": 84.0, "running": true, "bypass_open": false},
        ]));
        let mut hour = HourAggregate::default();
        assert_eq!(hour.absorb(&b.by_hour()["2026-12-07T17"]), 3);
        assert_eq!((hour.readings, hour.running, hour.batches), (3, 2, 1));
        assert_eq!((hour.first_ts, hour.last_ts), (Some(T - 2_000), Some(T)));
        let flow = hour.fields["flow_m3h"];
        assert_eq!((flow.n, flow.sum, flow.min, flow.max), (3, 300.0, 90.0, 110.0));
        assert_eq!(flow.mean(), Some(100.0));
        // A field a deadband left out of one reading counts only where present.
        assert_eq!(hour.fields["motor_temp_c"].n, 2);
        assert!(!hour.fields.contains_key("seq") && !hour.fields.contains_key("ts"));
        assert!(!hour.fields.contains_key("running"));
    }

    #[test]
    fn a_batch_delivered_twice_is_counted_once() {
        let b = batch(json!([{"ts": T - 1_000, "flow_m3h": 1.0}, {"ts": T, "flow_m3h": 2.0}]));
        let mut hour = HourAggregate::default();
        let readings = &b.by_hour()["2026-12-07T17"];
        assert_eq!(hour.absorb(readings), 2);
        assert_eq!(hour.absorb(readings), 0);
        assert_eq!((hour.readings, hour.batches), (2, 1));
    }

    #[test]
    fn batches_delivered_out_of_order_are_all_counted() {
        let later = batch(json!([{"ts": T - 1_000, "flow_m3h": 3.0}, {"ts": T, "flow_m3h": 4.0}]));
        let earlier = batch(json!([{"ts": T - 3_000, "flow_m3h": 1.0}, {"ts": T - 2_000, "flow_m3h": 2.0}]));
        let mut hour = HourAggregate::default();
        assert_eq!(hour.absorb(&later.by_hour()["2026-12-07T17"]), 2);
        assert_eq!(hour.absorb(&earlier.by_hour()["2026-12-07T17"]), 2);
        assert_eq!((hour.readings, hour.batches), (4, 2));
        assert_eq!((hour.first_ts, hour.last_ts), (Some(T - 3_000), Some(T)));
        assert_eq!(hour.fields["flow_m3h"].sum, 10.0);
        assert_eq!(hour.parts.len(), 2);
    }

    #[test]
    fn bad_batches_are_refused_with_what_is_wrong() {
        assert!(matches!(Batch::parse(json!({"thing": "p"})), Err(BatchError::Shape(_))));
        assert_eq!(Batch::parse(json!({"v": 2, "thing": "p", "readings": []})), Err(BatchError::Version(2)));
        assert_eq!(
            Batch::parse(json!({"v": 1, "thing": "p", "readings": [{"ts": 1}, {"seq": 2}]})),
            Err(BatchError::NoTimestamp { index: 1 })
        );
        assert!(matches!(Batch::parse(json!({"v": 1, "thing": "", "readings": []})), Err(BatchError::Shape(_))));
    }
}
