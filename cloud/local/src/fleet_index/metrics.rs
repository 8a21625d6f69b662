//! Fleet metrics: CreateFleetMetric, DescribeFleetMetric, ListFleetMetrics, UpdateFleetMetric and
//! DeleteFleetMetric, and the task that computes each metric from the index every period and
//! publishes it to CloudWatch.
//!
//! Follows the AWS IoT Core Developer Guide, "Fleet metrics" and "Querying for aggregate data",
//! and the operations in `iot.json`: a period from 60 to 86,400 s in whole minutes; aggregation
//! `Statistics` with values among `count`, `sum`, `average`, `minimum`, `maximum` (the other
//! aggregation types are refused). Each value is published in the `IoTFleetMetrics` namespace
//! under the metric's name, with the dimension `Aggregation Type` naming the value (check), at
//! the moment it is computed, so a CloudWatch alarm can watch it.
//!
//! For tests, a divisor shortens every period as published (the stored period stays what the
//! caller gave): with a divisor of 60 a metric of 60 s is published every second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{FleetIndex, IndexError, Statistics, THINGS_INDEX, statistics};
use crate::store::Store;

/// The CloudWatch namespace fleet metrics are published in.
pub const NAMESPACE: &str = "IoTFleetMetrics";
/// The dimension naming the aggregation value (`count`, `average`, …).
pub const DIMENSION: &str = "Aggregation Type";

const KIND: &str = "fleet_metric";
const STATISTICS: &[&str] = &["count", "sum", "average", "minimum", "maximum"];

/// One value of a fleet metric, as published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Datapoint<'a> {
    /// The fleet metric's name.
    pub metric: &'a str,
    /// The statistic (`count`, …): the value of the [`DIMENSION`] dimension.
    pub statistic: &'a str,
    /// The value.
    pub value: f64,
    /// A CloudWatch unit.
    pub unit: Option<&'a str>,
    /// When it was computed, epoch milliseconds.
    pub timestamp_ms: u64,
}

/// Where fleet metrics are published (CloudWatch, in [`NAMESPACE`]).
pub trait MetricSink: Send + Sync {
    /// Puts one value.
    fn put(&self, point: &Datapoint<'_>) -> Result<(), String>;
}

impl MetricSink for crate::cloudwatch::CloudWatch {
    fn put(&self, point: &Datapoint<'_>) -> Result<(), String> {
        let mut datum = serde_json::json!({
            "MetricName": point.metric,
            "Dimensions": [{"Name": DIMENSION, "Value": point.statistic}],
            "Timestamp": point.timestamp_ms as f64 / 1000.0,
            "Value": point.value,
        });
        if let Some(unit) = point.unit {
            datum["Unit"] = unit.into();
        }
        let request = serde_json::json!({"Namespace": NAMESPACE, "MetricData": [datum]});
        self.call(crate::cloudwatch::Operation::PutMetricData, request).map(|_| ()).map_err(|e| e.to_string())
    }
}

/// `AggregationType`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregationType {
    /// `Statistics` (served), `Percentiles` or `Cardinality` (refused).
    pub name: String,
    /// The statistics to publish.
    #[serde(default)]
    pub values: Vec<String>,
}

/// CreateFleetMetric's and UpdateFleetMetric's body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetMetricRequest {
    /// The search query.
    pub query_string: Option<String>,
    /// The aggregation.
    pub aggregation_type: Option<AggregationType>,
    /// Seconds between emissions.
    pub period: Option<i64>,
    /// The field aggregated.
    pub aggregation_field: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The query version (kept, not interpreted).
    pub query_version: Option<String>,
    /// The index: `AWS_Things`.
    pub index_name: Option<String>,
    /// A CloudWatch unit.
    pub unit: Option<String>,
    /// UpdateFleetMetric only: the version the caller saw.
    pub expected_version: Option<i64>,
    /// CreateFleetMetric only: tags (accepted, not kept).
    pub tags: Option<serde_json::Value>,
}

/// A stored fleet metric, as DescribeFleetMetric answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetMetric {
    /// Name.
    pub metric_name: String,
    /// ARN.
    pub metric_arn: String,
    /// The search query.
    pub query_string: String,
    /// The aggregation.
    pub aggregation_type: AggregationType,
    /// Seconds between emissions.
    pub period: i64,
    /// The field aggregated.
    pub aggregation_field: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The query version.
    pub query_version: String,
    /// The index.
    pub index_name: String,
    /// A CloudWatch unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Epoch seconds.
    pub creation_date: f64,
    /// Epoch seconds.
    pub last_modified_date: f64,
    /// Starts at 1; every update adds 1.
    pub version: i64,
}

/// Fleet metrics over a [`FleetIndex`]. Cheap to clone.
#[derive(Clone)]
pub struct FleetMetrics {
    index: FleetIndex,
    store: Store,
    region: String,
    account: String,
}

impl std::fmt::Debug for FleetMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetMetrics").finish_non_exhaustive()
    }
}

fn check_metric_name(name: &str) -> Result<(), IndexError> {
    let ok = (1..=128).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(IndexError::InvalidRequest(format!("metricName {name:?} must be 1 to 128 characters of [a-zA-Z0-9_.-]")))
    }
}

/// Refuses an `expectedVersion` that is not the metric's version.
fn check_version(m: &FleetMetric, expected: Option<i64>) -> Result<(), IndexError> {
    match expected {
        Some(v) if v != m.version => Err(IndexError::VersionConflict(format!(
            "fleet metric {} is at version {}, not {v}",
            m.metric_name, m.version
        ))),
        _ => Ok(()),
    }
}

impl FleetMetrics {
    /// Fleet metrics stored in `store`, computed from `index`.
    pub fn new(index: FleetIndex, store: Store, region: &str, account: &str) -> Self {
        FleetMetrics { index, store, region: region.into(), account: account.into() }
    }

    /// The index the metrics are computed from.
    pub fn index(&self) -> &FleetIndex {
        &self.index
    }

    /// The ARN of a fleet metric.
    pub fn arn(&self, name: &str) -> String {
        format!("arn:aws:iot:{}:{}:fleetmetric/{name}", self.region, self.account)
    }

    /// Checks a metric's query, aggregation, field and period against the index.
    fn check(&self, m: &FleetMetric) -> Result<(), IndexError> {
        if !(60..=86_400).contains(&m.period) || m.period % 60 != 0 {
            return Err(IndexError::InvalidRequest(format!(
                "period must be from 60 to 86400 seconds and a multiple of 60, got {}",
                m.period
            )));
        }
        if m.index_name != THINGS_INDEX {
            return Err(IndexError::InvalidRequest(format!(
                "indexName {:?}: fleet metrics are served on {THINGS_INDEX} only",
                m.index_name
            )));
        }
        if m.aggregation_type.name != "Statistics" {
            return Err(IndexError::InvalidAggregation(format!(
                "aggregation type {:?} is not served by the local cloud: use Statistics",
                m.aggregation_type.name
            )));
        }
        if m.aggregation_type.values.is_empty() {
            return Err(IndexError::InvalidAggregation("aggregationType.values names no statistic".into()));
        }
        if let Some(v) = m.aggregation_type.values.iter().find(|v| !STATISTICS.contains(&v.as_str())) {
            return Err(IndexError::InvalidAggregation(format!(
                "statistic {v:?} is not served: use one of {}",
                STATISTICS.join(", ")
            )));
        }
        self.index.parse_query(&m.index_name, &m.query_string)?;
        let field = self.index.aggregation_field(&m.aggregation_field)?;
        if field.kind() != super::query::Kind::Number && m.aggregation_type.values.iter().any(|v| v != "count") {
            return Err(IndexError::InvalidAggregation(format!(
                "{} is not numeric: only count can be computed on it",
                m.aggregation_field
            )));
        }
        Ok(())
    }

    fn load(&self, name: &str) -> Result<Option<FleetMetric>, IndexError> {
        match self.store.get(KIND, name)? {
            Some(json) => serde_json::from_str(&json).map(Some).map_err(|e| IndexError::Internal(e.to_string())),
            None => Ok(None),
        }
    }

    fn save(&self, m: &FleetMetric) -> Result<(), IndexError> {
        let json = serde_json::to_string(m).map_err(|e| IndexError::Internal(e.to_string()))?;
        Ok(self.store.put(KIND, &m.metric_name, &json)?)
    }

    /// CreateFleetMetric: its name and ARN.
    pub fn create(&self, name: &str, req: FleetMetricRequest) -> Result<FleetMetric, IndexError> {
        check_metric_name(name)?;
        let missing = |what: &str| IndexError::InvalidRequest(format!("{what} is required"));
        let now = self.index.now_millis() as f64 / 1000.0;
        let metric = FleetMetric {
            metric_name: name.into(),
            metric_arn: self.arn(name),
            query_string: req.query_string.ok_or_else(|| missing("queryString"))?,
            aggregation_type: req.aggregation_type.ok_or_else(|| missing("aggregationType"))?,
            period: req.period.ok_or_else(|| missing("period"))?,
            aggregation_field: req.aggregation_field.ok_or_else(|| missing("aggregationField"))?,
            description: req.description,
            query_version: req.query_version.unwrap_or_else(|| "2017-09-30".into()),
            index_name: req.index_name.unwrap_or_else(|| THINGS_INDEX.into()),
            unit: req.unit,
            creation_date: now,
            last_modified_date: now,
            version: 1,
        };
        self.check(&metric)?;
        if self.load(name)?.is_some() {
            return Err(IndexError::AlreadyExists(name.into(), metric.metric_arn));
        }
        self.save(&metric)?;
        Ok(metric)
    }

    /// DescribeFleetMetric.
    pub fn describe(&self, name: &str) -> Result<FleetMetric, IndexError> {
        check_metric_name(name)?;
        self.load(name)?.ok_or_else(|| IndexError::NotFound(format!("fleet metric {name} does not exist")))
    }

    /// ListFleetMetrics: every metric, by name.
    pub fn list(&self) -> Result<Vec<FleetMetric>, IndexError> {
        self.store
            .all(KIND)?
            .into_iter()
            .map(|(_, json)| serde_json::from_str(&json).map_err(|e| IndexError::Internal(e.to_string())))
            .collect()
    }

    /// UpdateFleetMetric: changes what is given.
    pub fn update(&self, name: &str, req: FleetMetricRequest) -> Result<FleetMetric, IndexError> {
        let mut m = self.describe(name)?;
        check_version(&m, req.expected_version)?;
        if let Some(v) = req.query_string {
            m.query_string = v;
        }
        if let Some(v) = req.aggregation_type {
            m.aggregation_type = v;
        }
        if let Some(v) = req.period {
            m.period = v;
        }
        if let Some(v) = req.aggregation_field {
            m.aggregation_field = v;
        }
        if let Some(v) = req.description {
            m.description = Some(v);
        }
        if let Some(v) = req.query_version {
            m.query_version = v;
        }
        if let Some(v) = req.index_name {
            m.index_name = v;
        }
        if let Some(v) = req.unit {
            m.unit = Some(v);
        }
        self.check(&m)?;
        m.version += 1;
        m.last_modified_date = self.index.now_millis() as f64 / 1000.0;
        self.save(&m)?;
        Ok(m)
    }

    /// DeleteFleetMetric; deleting a metric that does not exist succeeds.
    pub fn delete(&self, name: &str, expected_version: Option<i64>) -> Result<(), IndexError> {
        check_metric_name(name)?;
        let Some(m) = self.load(name)? else { return Ok(()) };
        check_version(&m, expected_version)?;
        Ok(self.store.delete(KIND, name)?)
    }

    /// Computes a metric's statistics from the index now.
    pub fn compute(&self, m: &FleetMetric) -> Result<Statistics, IndexError> {
        let query = self.index.parse_query(&m.index_name, &m.query_string)?;
        let field = self.index.aggregation_field(&m.aggregation_field)?;
        Ok(statistics(&self.index.matching(&query)?, &field))
    }

    /// Computes and publishes every metric whose (divided) period has come, keeping in `due` when
    /// each is next due; the time until the next one is due.
    pub fn publish_due(&self, sink: &dyn MetricSink, divisor: u32, due: &mut HashMap<String, u64>) -> Duration {
        let now = self.index.now_millis();
        let metrics = match self.list() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "listing fleet metrics");
                return Duration::from_secs(1);
            }
        };
        due.retain(|name, _| metrics.iter().any(|m| &m.metric_name == name));
        let mut next = u64::MAX;
        for m in &metrics {
            let period_ms = (m.period as u64 * 1000 / u64::from(divisor.max(1))).max(100);
            let at = *due.entry(m.metric_name.clone()).or_insert(now);
            if at <= now {
                self.publish(sink, m, now);
                due.insert(m.metric_name.clone(), now + period_ms);
                next = next.min(now + period_ms);
            } else {
                next = next.min(at);
            }
        }
        Duration::from_millis(next.saturating_sub(now).clamp(100, 1000))
    }

    fn publish(&self, sink: &dyn MetricSink, m: &FleetMetric, now: u64) {
        let stats = match self.compute(m) {
            Ok(s) => s,
            Err(e) => {
                // The index was turned off or changed under the metric: nothing to publish.
                tracing::warn!(metric = %m.metric_name, error = %e, "computing a fleet metric");
                return;
            }
        };
        for value_name in &m.aggregation_type.values {
            let value = match value_name.as_str() {
                "count" => Some(stats.count as f64),
                "sum" => stats.sum,
                "average" => stats.average(),
                "minimum" => stats.minimum,
                "maximum" => stats.maximum,
                _ => None,
            };
            // No value (a mean of nothing): nothing is published, as for missing data.
            let Some(value) = value else { continue };
            let point = Datapoint {
                metric: &m.metric_name,
                statistic: value_name,
                value,
                unit: m.unit.as_deref(),
                timestamp_ms: now,
            };
            if let Err(e) = sink.put(&point) {
                tracing::warn!(metric = %m.metric_name, error = %e, "publishing a fleet metric");
            }
        }
    }

    /// Publishes every metric each (divided) period until `shutdown`.
    pub async fn run(self, sink: Arc<dyn MetricSink>, divisor: u32, shutdown: CancellationToken) {
        let mut due = HashMap::new();
        loop {
            let metrics = self.clone();
            let sink = sink.clone();
            let work = tokio::task::spawn_blocking(move || {
                let wait = metrics.publish_due(sink.as_ref(), divisor, &mut due);
                (wait, due)
            });
            let wait = match work.await {
                Ok((wait, d)) => {
                    due = d;
                    wait
                }
                Err(e) => {
                    tracing::error!(error = %e, "publishing fleet metrics failed");
                    due = HashMap::new();
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::fleet_index::{
        ConnectivityIndexingMode, IndexedThing, PresenceEvent, ThingIndexingConfiguration, ThingIndexingMode,
        ThingSource,
    };

    struct Things;

    impl ThingSource for Things {
        fn things(&self) -> Result<Vec<IndexedThing>, String> {
            Ok(["core-1", "core-2", "core-3"]
                .into_iter()
                .map(|n| IndexedThing {
                    name: n.into(),
                    id: n.into(),
                    type_name: None,
                    groups: Vec::new(),
                    attributes: BTreeMap::new(),
                    version: 2,
                })
                .collect())
        }
    }

    #[derive(Default)]
    struct Sink(Mutex<Vec<(String, String, f64)>>);

    impl MetricSink for Sink {
        fn put(&self, point: &Datapoint<'_>) -> Result<(), String> {
            self.0.lock().unwrap().push((point.metric.into(), point.statistic.into(), point.value));
            Ok(())
        }
    }

    fn service() -> (FleetIndex, FleetMetrics) {
        let store = Store::in_memory().unwrap();
        let index = FleetIndex::open(store.clone(), Arc::new(Things), crate::time::system()).unwrap();
        index
            .update_configuration(
                Some(ThingIndexingConfiguration {
                    thing_indexing_mode: Some(ThingIndexingMode::Registry),
                    thing_connectivity_indexing_mode: Some(ConnectivityIndexingMode::Status),
                    ..Default::default()
                }),
                None,
            )
            .unwrap();
        let metrics = FleetMetrics::new(index.clone(), store, "us-east-1", "000000000000");
        (index, metrics)
    }

    fn request(query: &str, values: &[&str], field: &str, period: i64) -> FleetMetricRequest {
        FleetMetricRequest {
            query_string: Some(query.into()),
            aggregation_type: Some(AggregationType {
                name: "Statistics".into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            }),
            period: Some(period),
            aggregation_field: Some(field.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_disconnected_count_follows_connectivity() {
        let (index, metrics) = service();
        metrics
            .create("disconnected", request("connectivity.connected:false", &["count"], "registry.version", 60))
            .unwrap();
        let sink = Sink::default();
        let mut due = HashMap::new();
        metrics.publish_due(&sink, 60, &mut due);
        index.record("core-1", PresenceEvent::Connected { timestamp: 1, session: "s".into() });
        due.clear();
        metrics.publish_due(&sink, 60, &mut due);
        let seen = sink.0.lock().unwrap().clone();
        assert_eq!(seen, [("disconnected".into(), "count".into(), 3.0), ("disconnected".into(), "count".into(), 2.0)]);
    }

    #[test]
    fn numeric_statistics_and_their_refusals() {
        let (_, metrics) = service();
        let m =
            metrics.create("versions", request("*", &["count", "sum", "average"], "registry.version", 120)).unwrap();
        let s = metrics.compute(&m).unwrap();
        assert_eq!((s.count, s.sum, s.average()), (3, Some(6.0), Some(2.0)));
        let refusals: &[(FleetMetricRequest, &str)] = &[
            (request("*", &["count"], "registry.version", 30), "period"),
            (request("*", &["count"], "registry.version", 90), "multiple of 60"),
            (request("thingName:(", &["count"], "registry.version", 60), "no value"),
            (request("*", &["p50"], "registry.version", 60), "not served"),
            (request("*", &["sum"], "thingName", 60), "not numeric"),
            (request("*", &["count"], "shadow.x", 60), "not indexed"),
        ];
        for (req, reason) in refusals {
            let e = metrics.create("bad", req.clone()).unwrap_err();
            assert!(e.to_string().contains(reason), "{req:?}: {e}");
        }
        let mut cardinality = request("*", &["count"], "registry.version", 60);
        cardinality.aggregation_type.as_mut().unwrap().name = "Cardinality".into();
        assert!(matches!(metrics.create("bad", cardinality), Err(IndexError::InvalidAggregation(_))));
        assert!(matches!(
            metrics.create("versions", request("*", &["count"], "registry.version", 60)),
            Err(IndexError::AlreadyExists(..))
        ));
        assert!(matches!(
            metrics.create("bad name", request("*", &["count"], "thingName", 60)),
            Err(IndexError::InvalidRequest(_))
        ));
    }

    #[test]
    fn updates_bump_the_version_and_check_the_expected_one() {
        let (_, metrics) = service();
        metrics.create("m", request("*", &["count"], "thingName", 60)).unwrap();
        let update = FleetMetricRequest { period: Some(120), expected_version: Some(1), ..Default::default() };
        let m = metrics.update("m", update.clone()).unwrap();
        assert_eq!((m.period, m.version), (120, 2));
        assert!(matches!(metrics.update("m", update), Err(IndexError::VersionConflict(_))));
        assert!(matches!(metrics.delete("m", Some(1)), Err(IndexError::VersionConflict(_))));
        metrics.delete("m", Some(2)).unwrap();
        assert!(matches!(metrics.describe("m"), Err(IndexError::NotFound(_))));
        metrics.delete("m", None).unwrap();
    }
}
