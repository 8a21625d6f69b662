//! Metrics, pure: what a PutMetricData datum means (validated as CloudWatch does), and the
//! statistics of a period. No storage here; [`super::store`] keeps the datapoints.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::CwError;

/// The five statistics CloudWatch computes for every period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Statistic {
    /// How many values.
    SampleCount,
    /// Their mean.
    Average,
    /// Their sum.
    Sum,
    /// The least.
    Minimum,
    /// The greatest.
    Maximum,
}

impl Statistic {
    /// Every statistic, in the order GetMetricStatistics lists them.
    pub const ALL: [Statistic; 5] =
        [Statistic::SampleCount, Statistic::Average, Statistic::Sum, Statistic::Minimum, Statistic::Maximum];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Statistic::SampleCount => "SampleCount",
            Statistic::Average => "Average",
            Statistic::Sum => "Sum",
            Statistic::Minimum => "Minimum",
            Statistic::Maximum => "Maximum",
        }
    }

    /// The statistic a wire name names; percentiles and the other extended statistics are refused.
    pub fn parse(name: &str) -> Result<Self, CwError> {
        Self::ALL.into_iter().find(|s| s.name() == name).ok_or_else(|| {
            CwError::invalid_value(format!(
                "The statistic {name:?} is not served by the local cloud: use SampleCount, Average, Sum, Minimum or Maximum (no percentiles or other extended statistics)"
            ))
        })
    }
}

/// The summary of some values: what a datapoint stores and a period aggregates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// How many values (a `Counts` entry may weigh one value several times).
    pub count: f64,
    /// Their sum.
    pub sum: f64,
    /// The least.
    pub min: f64,
    /// The greatest.
    pub max: f64,
}

impl Stats {
    /// One value.
    pub fn one(value: f64) -> Self {
        Stats { count: 1.0, sum: value, min: value, max: value }
    }

    /// Both summaries together.
    pub fn merge(self, other: Stats) -> Stats {
        Stats {
            count: self.count + other.count,
            sum: self.sum + other.sum,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }

    /// The value of a statistic.
    pub fn value(&self, statistic: Statistic) -> f64 {
        match statistic {
            Statistic::SampleCount => self.count,
            Statistic::Average => {
                if self.count > 0.0 {
                    self.sum / self.count
                } else {
                    0.0
                }
            }
            Statistic::Sum => self.sum,
            Statistic::Minimum => self.min,
            Statistic::Maximum => self.max,
        }
    }
}

/// The start (epoch milliseconds) of the period of `period_s` seconds that holds `ts_ms`;
/// periods are aligned to the epoch, so one minute starts on the minute.
pub fn period_start(ts_ms: i64, period_s: u32) -> i64 {
    let period_ms = i64::from(period_s) * 1000;
    ts_ms.div_euclid(period_ms) * period_ms
}

/// Datapoints `(epoch ms, summary)` aggregated per period, keyed by the period's start.
pub fn aggregate(points: impl IntoIterator<Item = (i64, Stats)>, period_s: u32) -> BTreeMap<i64, Stats> {
    let mut periods: BTreeMap<i64, Stats> = BTreeMap::new();
    for (ts, stats) in points {
        periods.entry(period_start(ts, period_s)).and_modify(|s| *s = s.merge(stats)).or_insert(stats);
    }
    periods
}

/// The units CloudWatch knows (`StandardUnit`).
pub const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks a unit name.
pub fn check_unit(unit: &str) -> Result<(), CwError> {
    if UNITS.contains(&unit) {
        Ok(())
    } else {
        Err(CwError::invalid_value(format!("The parameter Unit has the invalid value {unit:?}")))
    }
}

/// A dimension, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Dimension {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// Most dimensions a metric may have.
pub const MAX_DIMENSIONS: usize = 30;

/// Checks dimensions and sorts them by name (a metric is the same whatever order they came in).
pub fn canonical_dimensions(mut dimensions: Vec<Dimension>) -> Result<Vec<Dimension>, CwError> {
    if dimensions.len() > MAX_DIMENSIONS {
        return Err(CwError::invalid_value(format!(
            "The collection Dimensions must not have more than {MAX_DIMENSIONS} members"
        )));
    }
    for d in &dimensions {
        check_length("Dimension Name", &d.name, 255)?;
        check_length("Dimension Value", &d.value, 1024)?;
    }
    dimensions.sort();
    if dimensions.windows(2).any(|w| w[0].name == w[1].name) {
        return Err(CwError::invalid_combination("No metric may have two dimensions of the same name"));
    }
    Ok(dimensions)
}

/// Checks a name's length (1 to `max` characters).
pub fn check_length(what: &str, value: &str, max: usize) -> Result<(), CwError> {
    let n = value.chars().count();
    if n == 0 || n > max {
        return Err(CwError::invalid_value(format!(
            "The parameter {what} must be between 1 and {max} characters long (it has {n})"
        )));
    }
    Ok(())
}

/// A PutMetricData datum, as on the wire.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Datum {
    /// The metric's name.
    pub metric_name: Option<String>,
    /// Its dimensions.
    #[serde(default)]
    pub dimensions: Vec<Dimension>,
    /// When (epoch seconds); absent: when received.
    pub timestamp: Option<f64>,
    /// One value.
    pub value: Option<f64>,
    /// A summary of values.
    pub statistic_values: Option<StatisticSet>,
    /// Several values.
    pub values: Option<Vec<f64>>,
    /// How often each of `values` occurred.
    pub counts: Option<Vec<f64>>,
    /// The unit.
    pub unit: Option<String>,
    /// 1 (high resolution) or 60; kept for nothing else than validation.
    pub storage_resolution: Option<i64>,
}

/// A `StatisticSet`, as on the wire.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatisticSet {
    /// How many values.
    pub sample_count: f64,
    /// Their sum.
    pub sum: f64,
    /// The least.
    pub minimum: f64,
    /// The greatest.
    pub maximum: f64,
}

/// A datum, checked: what to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The metric's name.
    pub metric_name: String,
    /// Its dimensions, sorted by name.
    pub dimensions: Vec<Dimension>,
    /// When, in epoch milliseconds.
    pub timestamp_ms: i64,
    /// The unit (`None` when not given).
    pub unit: String,
    /// The summary of its values.
    pub stats: Stats,
}

/// Most values (or counts) in one datum.
pub const MAX_VALUES: usize = 150;
/// How far in the past a datum may be (two weeks).
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// How far in the future a datum may be (two hours).
pub const MAX_AHEAD_MS: i64 = 2 * 3600 * 1000;
/// CloudWatch refuses magnitudes above 2^360 (and below 2^-260, other than zero).
const MAX_MAGNITUDE: f64 = 2.348_542_582_773_833e108;
const MIN_MAGNITUDE: f64 = 5.397_605_346_934_028e-79;

fn check_value(what: &str, v: f64) -> Result<f64, CwError> {
    let a = v.abs();
    if !v.is_finite() || a > MAX_MAGNITUDE || (a != 0.0 && a < MIN_MAGNITUDE) {
        return Err(CwError::invalid_value(format!(
            "The value {v} for parameter {what} is invalid: values must be between -2^360 and 2^360, and zero or at least 2^-260 in magnitude"
        )));
    }
    Ok(v)
}

impl Datum {
    /// Checks the datum as CloudWatch does; `now_ms` stands in for a missing timestamp.
    pub fn check(self, index: usize, now_ms: i64) -> Result<Checked, CwError> {
        let at = |what: &str| format!("MetricData.member.{}.{what}", index + 1);
        let metric_name = self.metric_name.ok_or_else(|| CwError::missing(&at("MetricName")))?;
        check_length(&at("MetricName"), &metric_name, 255)?;
        let dimensions = canonical_dimensions(self.dimensions)?;
        let timestamp_ms = match self.timestamp {
            Some(t) if t.is_finite() => (t * 1000.0).round() as i64,
            Some(_) => return Err(CwError::invalid_value(format!("The parameter {} is invalid", at("Timestamp")))),
            None => now_ms,
        };
        if timestamp_ms < now_ms - MAX_AGE_MS || timestamp_ms > now_ms + MAX_AHEAD_MS {
            return Err(CwError::invalid_value(format!(
                "The parameter {} must specify a time no more than two weeks in the past or two hours in the future",
                at("Timestamp")
            )));
        }
        let unit = self.unit.unwrap_or_else(|| "None".into());
        check_unit(&unit)?;
        if let Some(r) = self.storage_resolution
            && r != 1
            && r != 60
        {
            return Err(CwError::invalid_value(format!("The parameter {} must be 1 or 60", at("StorageResolution"))));
        }
        let given = [self.value.is_some(), self.statistic_values.is_some(), self.values.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(CwError::invalid_combination(format!(
                "The parameters {}, {} and {} are mutually exclusive",
                at("Value"),
                at("StatisticValues"),
                at("Values")
            )));
        }
        if self.counts.is_some() && self.values.is_none() {
            return Err(CwError::invalid_combination(format!("The parameter {} needs {}", at("Counts"), at("Values"))));
        }
        let stats = if let Some(v) = self.value {
            Stats::one(check_value(&at("Value"), v)?)
        } else if let Some(s) = self.statistic_values {
            for (name, v) in
                [("SampleCount", s.sample_count), ("Sum", s.sum), ("Minimum", s.minimum), ("Maximum", s.maximum)]
            {
                check_value(&at(&format!("StatisticValues.{name}")), v)?;
            }
            if s.sample_count <= 0.0 || s.minimum > s.maximum {
                return Err(CwError::invalid_value(format!(
                    "The parameter {} must have a positive SampleCount and a Minimum no greater than its Maximum",
                    at("StatisticValues")
                )));
            }
            Stats { count: s.sample_count, sum: s.sum, min: s.minimum, max: s.maximum }
        } else if let Some(values) = self.values {
            if values.is_empty() || values.len() > MAX_VALUES {
                return Err(CwError::invalid_value(format!(
                    "The collection {} must have between 1 and {MAX_VALUES} members",
                    at("Values")
                )));
            }
            let counts = self.counts.unwrap_or_else(|| vec![1.0; values.len()]);
            if counts.len() != values.len() {
                return Err(CwError::invalid_combination(format!(
                    "The collections {} and {} must have the same number of members",
                    at("Values"),
                    at("Counts")
                )));
            }
            let mut total: Option<Stats> = None;
            for (v, c) in values.into_iter().zip(counts) {
                let v = check_value(&at("Values"), v)?;
                if !(c.is_finite() && c > 0.0) {
                    return Err(CwError::invalid_value(format!("Every member of {} must be positive", at("Counts"))));
                }
                let s = Stats { count: c, sum: v * c, min: v, max: v };
                total = Some(total.map_or(s, |t| t.merge(s)));
            }
            total.unwrap_or(Stats::one(0.0))
        } else {
            return Err(CwError::missing(&at("Value")));
        };
        Ok(Checked { metric_name, dimensions, timestamp_ms, unit, stats })
    }
}

/// Checks a period: 1, 5, 10, 30 or a multiple of 60 seconds.
pub fn check_period(what: &str, period: i64) -> Result<u32, CwError> {
    if matches!(period, 1 | 5 | 10 | 30) || (period > 0 && period % 60 == 0 && period <= 86_400 * 455) {
        Ok(period as u32)
    } else {
        Err(CwError::invalid_value(format!(
            "The parameter {what} must be 1, 5, 10, 30 or a multiple of 60 seconds (it is {period})"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn datum(json: serde_json::Value) -> Result<Checked, CwError> {
        serde_json::from_value::<Datum>(json).unwrap().check(0, NOW)
    }

    #[test]
    fn each_period_aggregates_its_datapoints_for_every_statistic() {
        let points = [
            (NOW, Stats::one(10.0)),
            (NOW + 20_000, Stats::one(30.0)),
            (NOW + 59_000, Stats { count: 2.0, sum: 4.0, min: 1.0, max: 3.0 }),
            (NOW + 60_000, Stats::one(100.0)),
        ];
        let periods = aggregate(points, 60);
        // NOW is 20 s into its minute: its period runs from NOW - 20 s to NOW + 40 s.
        assert_eq!(period_start(NOW, 60), NOW - 20_000);
        assert_eq!(periods.len(), 2);
        let first = periods[&(NOW - 20_000)];
        assert_eq!(first.value(Statistic::SampleCount), 2.0);
        assert_eq!(first.value(Statistic::Sum), 40.0);
        assert_eq!(first.value(Statistic::Average), 20.0);
        assert_eq!(first.value(Statistic::Minimum), 10.0);
        assert_eq!(first.value(Statistic::Maximum), 30.0);
        let second = periods[&(NOW + 40_000)];
        assert_eq!(second.value(Statistic::SampleCount), 3.0, "a StatisticSet counts its samples");
        assert_eq!(second.value(Statistic::Average), 104.0 / 3.0);
        assert_eq!((second.value(Statistic::Minimum), second.value(Statistic::Maximum)), (1.0, 100.0));
        assert_eq!(aggregate([(NOW, Stats::one(1.0))], 1).keys().copied().collect::<Vec<_>>(), [NOW]);
    }

    #[test]
    fn values_with_counts_weigh_each_value() {
        let c = datum(serde_json::json!({"MetricName": "rpm", "Values": [1.0, 3.0], "Counts": [3.0, 1.0]})).unwrap();
        assert_eq!(c.stats, Stats { count: 4.0, sum: 6.0, min: 1.0, max: 3.0 });
        assert_eq!(c.stats.value(Statistic::Average), 1.5);
        assert_eq!(c.timestamp_ms, NOW, "a datum without a timestamp is stamped on arrival");
        assert_eq!(c.unit, "None");
    }

    #[test]
    fn datums_are_checked_as_cloudwatch_does() {
        let refused = [
            (serde_json::json!({"Value": 1}), "MissingParameter"),
            (serde_json::json!({"MetricName": "m"}), "MissingParameter"),
            (serde_json::json!({"MetricName": "m", "Value": 1, "Values": [1]}), "InvalidParameterCombination"),
            (serde_json::json!({"MetricName": "m", "Values": [1, 2], "Counts": [1]}), "InvalidParameterCombination"),
            (serde_json::json!({"MetricName": "m", "Value": 1, "Unit": "Furlongs"}), "InvalidParameterValue"),
            (serde_json::json!({"MetricName": "m", "Value": 1e200}), "InvalidParameterValue"),
            (serde_json::json!({"MetricName": "m", "Value": 1, "Timestamp": 1_600_000_000}), "InvalidParameterValue"),
            (serde_json::json!({"MetricName": "m", "Value": 1, "Timestamp": 1_700_010_000}), "InvalidParameterValue"),
            (serde_json::json!({"MetricName": "", "Value": 1}), "InvalidParameterValue"),
            (
                serde_json::json!({"MetricName": "m", "Value": 1, "Dimensions": [{"Name": "a", "Value": "1"}, {"Name": "a", "Value": "2"}]}),
                "InvalidParameterCombination",
            ),
            (
                serde_json::json!({"MetricName": "m", "StatisticValues": {"SampleCount": 0, "Sum": 0, "Minimum": 0, "Maximum": 0}}),
                "InvalidParameterValue",
            ),
        ];
        for (json, code) in refused {
            let e = datum(json.clone()).unwrap_err();
            assert_eq!(e.code, code, "{json}: {e}");
        }
        let d = datum(serde_json::json!({"MetricName": "m", "Value": 1,
            "Dimensions": [{"Name": "b", "Value": "2"}, {"Name": "a", "Value": "1"}]}))
        .unwrap();
        assert_eq!(d.dimensions[0].name, "a", "dimensions are kept sorted by name");
    }

    #[test]
    fn periods_and_statistics_are_the_ones_cloudwatch_accepts() {
        for ok in [1, 5, 10, 30, 60, 300, 86_400] {
            assert_eq!(check_period("Period", ok).unwrap(), ok as u32);
        }
        for bad in [0, -60, 2, 45, 90] {
            assert!(check_period("Period", bad).is_err(), "{bad}");
        }
        assert_eq!(Statistic::parse("Average").unwrap(), Statistic::Average);
        assert!(Statistic::parse("p99").unwrap_err().message.contains("percentiles"));
    }
}
