//! Amazon CloudWatch metrics and alarms, the subset the solution uses (the `monitoring` service
//! model, API version 2010-08-01).
//!
//! The wire protocol is Smithy RPC v2 CBOR, which current SDKs and boto3 pick for CloudWatch:
//! `POST /service/GraniteServiceVersion20100801/operation/{Operation}` with
//! `smithy-protocol: rpc-v2-cbor` and a CBOR body, answered in `application/cbor`; an error carries
//! `__type` (`com.amazonaws.cloudwatch#{Shape}`) and `message` in its CBOR body, and, because the
//! service is AWS-query compatible, `x-amzn-query-error: {Code};Sender`, from which the clients take
//! the error code they raise (`InvalidParameterValue`, `ResourceNotFound`, …). The same handlers also
//! answer AWS JSON 1.0 (`POST /` with `X-Amz-Target: GraniteServiceVersion20100801.{Operation}`).
//! [`http`] serves both on the local cloud's HTTP endpoint; requests are SigV4-signed for
//! `monitoring` and authorized as `cloudwatch:{Operation}` on `*` (metrics) or on
//! `arn:aws:cloudwatch:{region}:{account}:alarm:{AlarmName}` (alarms).
//!
//! # Layout
//! - [`wire`]: the two encodings over one request and answer form.
//! - [`metrics`]: datums and per-period statistics, pure.
//! - [`alarms`]: alarm rules and their evaluation, pure.
//! - [`http`]: the layer on the HTTP endpoint.
//! - here: the state (datapoints and metrics in tables of `state.sqlite`, alarms and their
//!   history as records) and the operations, and [`CloudWatch::run`], which evaluates the alarms
//!   every few seconds; and CloudWatch as other services see it: the store IoT Core writes its
//!   `AWS/IoT` metrics to ([`crate::iot_metrics::ServiceMetricStore`], which may write an `AWS/`
//!   namespace, unlike PutMetricData) and the rules engine's `cloudwatchMetric` and
//!   `cloudwatchAlarm` actions ([`crate::rules::engine::CloudWatchSink`], through the same checks
//!   as PutMetricData and SetAlarmState).

pub mod alarms;
pub mod http;
pub mod metrics;
pub mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::iam::{Principal, actions};
use crate::store::{Store, StoreError};
use crate::time::SharedClock;
use alarms::{Comparison, Rule, StateValue, TreatMissing};
use metrics::{Dimension, Statistic, Stats};
use wire::Out;

/// What every `X-Amz-Target` of this API starts with, and the service's name in RPC v2 paths.
pub const TARGET_PREFIX: &str = "GraniteServiceVersion20100801";

/// The operations served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// PutMetricData.
    PutMetricData,
    /// GetMetricData.
    GetMetricData,
    /// GetMetricStatistics.
    GetMetricStatistics,
    /// ListMetrics.
    ListMetrics,
    /// PutMetricAlarm.
    PutMetricAlarm,
    /// DescribeAlarms.
    DescribeAlarms,
    /// DeleteAlarms.
    DeleteAlarms,
    /// SetAlarmState.
    SetAlarmState,
    /// DescribeAlarmHistory.
    DescribeAlarmHistory,
}

impl Operation {
    const ALL: [Operation; 9] = [
        Operation::PutMetricData,
        Operation::GetMetricData,
        Operation::GetMetricStatistics,
        Operation::ListMetrics,
        Operation::PutMetricAlarm,
        Operation::DescribeAlarms,
        Operation::DeleteAlarms,
        Operation::SetAlarmState,
        Operation::DescribeAlarmHistory,
    ];

    /// The operation's name, as on the wire and in the IAM action.
    pub fn name(self) -> &'static str {
        match self {
            Operation::PutMetricData => "PutMetricData",
            Operation::GetMetricData => "GetMetricData",
            Operation::GetMetricStatistics => "GetMetricStatistics",
            Operation::ListMetrics => "ListMetrics",
            Operation::PutMetricAlarm => "PutMetricAlarm",
            Operation::DescribeAlarms => "DescribeAlarms",
            Operation::DeleteAlarms => "DeleteAlarms",
            Operation::SetAlarmState => "SetAlarmState",
            Operation::DescribeAlarmHistory => "DescribeAlarmHistory",
        }
    }

    /// The operation a name names.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// A CloudWatch error, as the clients read it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{shape}: {message}")]
pub struct CwError {
    /// HTTP status.
    pub status: u16,
    /// The error shape (`InvalidParameterValueException`), in `__type`.
    pub shape: &'static str,
    /// The query-protocol code (`InvalidParameterValue`), in `x-amzn-query-error`: what clients raise.
    pub code: &'static str,
    /// What went wrong.
    pub message: String,
}

impl CwError {
    /// An error of a shape.
    pub fn new(status: u16, shape: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        CwError { status, shape, code, message: message.into() }
    }

    /// `InvalidParameterValue`: fix the value.
    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterValueException", "InvalidParameterValue", message)
    }

    /// `InvalidParameterCombination`: fix which parameters are given together.
    pub fn invalid_combination(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameterCombinationException", "InvalidParameterCombination", message)
    }

    /// `MissingParameter`: a required parameter is absent.
    pub fn missing(what: &str) -> Self {
        Self::new(
            400,
            "MissingRequiredParameterException",
            "MissingParameter",
            format!("The parameter {what} is required."),
        )
    }

    /// `ResourceNotFound`: no such alarm.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "ResourceNotFound", "ResourceNotFound", message)
    }

    /// `AccessDenied`: the caller's policies do not allow it.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new(403, "AccessDeniedException", "AccessDenied", message)
    }

    /// `SerializationException`: the body is not the operation's input.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(400, "SerializationException", "SerializationException", message)
    }

    /// `InternalServiceError`: the local cloud's own failure; retry.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalServiceFault", "InternalServiceError", message)
    }

    /// `__type` and `message`, the error body in either encoding.
    pub fn body(&self) -> Out {
        Out::object([
            ("__type", Some(Out::Str(format!("com.amazonaws.cloudwatch#{}", self.shape)))),
            ("message", Some(Out::str(self.message.clone()))),
        ])
    }
}

impl From<StoreError> for CwError {
    fn from(e: StoreError) -> Self {
        CwError::internal(e.to_string())
    }
}

/// Alarm records in `state.sqlite`.
const ALARM_KIND: &str = "cloudwatch-alarm";
/// Alarm history records, keyed `{alarm}\n{epoch ms, 15 digits}\n{uuid}`.
const HISTORY_KIND: &str = "cloudwatch-alarm-history";
/// How many alarms an account may have here.
pub const MAX_ALARMS: usize = 5000;
/// Most history items kept per alarm (the oldest go first).
const MAX_HISTORY: usize = 100;

/// The local cloud's CloudWatch: metrics and alarms, shared by the HTTP layer and the evaluator.
#[derive(Clone)]
pub struct CloudWatch {
    store: Store,
    clock: SharedClock,
    region: String,
    account: String,
}

impl std::fmt::Debug for CloudWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudWatch").field("region", &self.region).finish_non_exhaustive()
    }
}

/// A stored alarm.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Alarm {
    alarm_name: String,
    alarm_description: Option<String>,
    actions_enabled: bool,
    #[serde(rename = "OKActions")]
    ok_actions: Vec<String>,
    alarm_actions: Vec<String>,
    insufficient_data_actions: Vec<String>,
    metric_name: String,
    namespace: String,
    statistic: Statistic,
    dimensions: Vec<Dimension>,
    period: u32,
    unit: Option<String>,
    evaluation_periods: u32,
    datapoints_to_alarm: u32,
    threshold: f64,
    comparison_operator: Comparison,
    treat_missing_data: TreatMissing,
    state_value: StateValue,
    state_reason: String,
    state_reason_data: Option<String>,
    state_updated_ms: i64,
    state_transitioned_ms: i64,
    configuration_updated_ms: i64,
}

impl Alarm {
    fn rule(&self) -> Rule {
        Rule {
            comparison: self.comparison_operator,
            threshold: self.threshold,
            evaluation_periods: self.evaluation_periods as usize,
            datapoints_to_alarm: self.datapoints_to_alarm as usize,
            treat_missing: self.treat_missing_data,
        }
    }

    fn to_out(&self, region: &str, account: &str) -> Out {
        let list = |v: &[String]| Some(Out::List(v.iter().cloned().map(Out::Str).collect()));
        Out::object([
            ("AlarmName", Some(Out::str(&self.alarm_name))),
            ("AlarmArn", Some(Out::Str(alarm_arn(region, account, &self.alarm_name)))),
            ("AlarmDescription", self.alarm_description.clone().map(Out::Str)),
            ("AlarmConfigurationUpdatedTimestamp", Some(Out::millis(self.configuration_updated_ms))),
            ("ActionsEnabled", Some(Out::Bool(self.actions_enabled))),
            ("OKActions", list(&self.ok_actions)),
            ("AlarmActions", list(&self.alarm_actions)),
            ("InsufficientDataActions", list(&self.insufficient_data_actions)),
            ("StateValue", Some(Out::str(self.state_value.name()))),
            ("StateReason", Some(Out::str(&self.state_reason))),
            ("StateReasonData", self.state_reason_data.clone().map(Out::Str)),
            ("StateUpdatedTimestamp", Some(Out::millis(self.state_updated_ms))),
            ("MetricName", Some(Out::str(&self.metric_name))),
            ("Namespace", Some(Out::str(&self.namespace))),
            ("Statistic", Some(Out::str(self.statistic.name()))),
            ("Dimensions", Some(dimensions_out(&self.dimensions))),
            ("Period", Some(Out::Int(self.period.into()))),
            ("Unit", self.unit.clone().map(Out::Str)),
            ("EvaluationPeriods", Some(Out::Int(self.evaluation_periods.into()))),
            ("DatapointsToAlarm", Some(Out::Int(self.datapoints_to_alarm.into()))),
            ("Threshold", Some(Out::Float(self.threshold))),
            ("ComparisonOperator", Some(Out::str(self.comparison_operator.name()))),
            ("TreatMissingData", Some(Out::str(self.treat_missing_data.name()))),
            ("StateTransitionedTimestamp", Some(Out::millis(self.state_transitioned_ms))),
        ])
    }
}

fn dimensions_out(dimensions: &[Dimension]) -> Out {
    Out::List(
        dimensions
            .iter()
            .map(|d| Out::object([("Name", Some(Out::str(&d.name))), ("Value", Some(Out::str(&d.value)))]))
            .collect(),
    )
}

/// The ARN of an alarm.
pub fn alarm_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:cloudwatch:{region}:{account}:alarm:{name}")
}

fn parse<R: serde::de::DeserializeOwned>(request: Value) -> Result<R, CwError> {
    serde_json::from_value(request)
        .map_err(|e| CwError::serialization(format!("the request does not fit the operation's input: {e}")))
}

/// A metric as GetMetricData and ListMetrics name it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricId {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutMetricDataInput {
    namespace: Option<String>,
    #[serde(default)]
    metric_data: Vec<metrics::Datum>,
    entity_metric_data: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetMetricStatisticsInput {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    start_time: Option<f64>,
    end_time: Option<f64>,
    period: Option<i64>,
    statistics: Option<Vec<String>>,
    extended_statistics: Option<Vec<String>>,
    unit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricStat {
    metric: MetricId,
    period: i64,
    stat: String,
    unit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MetricDataQuery {
    id: String,
    metric_stat: Option<MetricStat>,
    expression: Option<String>,
    label: Option<String>,
    return_data: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetMetricDataInput {
    #[serde(default)]
    metric_data_queries: Vec<MetricDataQuery>,
    start_time: Option<f64>,
    end_time: Option<f64>,
    scan_by: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DimensionFilter {
    name: String,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMetricsInput {
    namespace: Option<String>,
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<DimensionFilter>,
    next_token: Option<String>,
    recently_active: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutMetricAlarmInput {
    alarm_name: Option<String>,
    alarm_description: Option<String>,
    actions_enabled: Option<bool>,
    #[serde(rename = "OKActions", default)]
    ok_actions: Vec<String>,
    #[serde(default)]
    alarm_actions: Vec<String>,
    #[serde(default)]
    insufficient_data_actions: Vec<String>,
    metric_name: Option<String>,
    namespace: Option<String>,
    statistic: Option<String>,
    extended_statistic: Option<String>,
    #[serde(default)]
    dimensions: Vec<Dimension>,
    period: Option<i64>,
    unit: Option<String>,
    evaluation_periods: Option<i64>,
    datapoints_to_alarm: Option<i64>,
    threshold: Option<f64>,
    comparison_operator: Option<String>,
    treat_missing_data: Option<String>,
    metrics: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeAlarmsInput {
    alarm_names: Option<Vec<String>>,
    alarm_name_prefix: Option<String>,
    alarm_types: Option<Vec<String>>,
    state_value: Option<String>,
    action_prefix: Option<String>,
    max_records: Option<i64>,
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteAlarmsInput {
    #[serde(default)]
    alarm_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetAlarmStateInput {
    alarm_name: Option<String>,
    state_value: Option<String>,
    state_reason: Option<String>,
    state_reason_data: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeAlarmHistoryInput {
    alarm_name: Option<String>,
    history_item_type: Option<String>,
    start_date: Option<f64>,
    end_date: Option<f64>,
    max_records: Option<i64>,
    scan_by: Option<String>,
}

/// A history item as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HistoryItem {
    alarm_name: String,
    timestamp_ms: i64,
    history_item_type: String,
    history_summary: String,
    history_data: String,
}

fn seconds_to_ms(what: &str, t: Option<f64>) -> Result<i64, CwError> {
    match t {
        Some(t) if t.is_finite() => Ok((t * 1000.0).round() as i64),
        Some(_) => Err(CwError::invalid_value(format!("The parameter {what} is not a valid time"))),
        None => Err(CwError::missing(what)),
    }
}

fn check_namespace(namespace: Option<String>) -> Result<String, CwError> {
    let namespace = namespace.ok_or_else(|| CwError::missing("Namespace"))?;
    metrics::check_length("Namespace", &namespace, 255)?;
    Ok(namespace)
}

/// The rows of one period's statistics for a metric.
type Periods = BTreeMap<i64, (Stats, Option<String>)>;

impl CloudWatch {
    /// CloudWatch over `store` (tables of its own in the same database).
    pub fn open(store: Store, clock: SharedClock, region: &str, account: &str) -> Result<Self, StoreError> {
        store.transaction(|tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS cloudwatch_metrics (
                    id INTEGER PRIMARY KEY,
                    namespace TEXT NOT NULL,
                    name TEXT NOT NULL,
                    dimensions TEXT NOT NULL,
                    UNIQUE (namespace, name, dimensions)
                );
                CREATE TABLE IF NOT EXISTS cloudwatch_datapoints (
                    metric INTEGER NOT NULL,
                    ts_ms INTEGER NOT NULL,
                    unit TEXT NOT NULL,
                    count REAL NOT NULL,
                    sum REAL NOT NULL,
                    min REAL NOT NULL,
                    max REAL NOT NULL
                );
                CREATE INDEX IF NOT EXISTS cloudwatch_datapoints_by_time ON cloudwatch_datapoints (metric, ts_ms);",
            )
        })?;
        Ok(CloudWatch { store, clock, region: region.to_owned(), account: account.to_owned() })
    }

    /// The IAM action and resources of a request: `cloudwatch:{Operation}` on `*` for metrics, on
    /// each named alarm's ARN for alarms.
    pub fn action_and_resources(&self, op: Operation, request: &Value) -> (String, Vec<String>) {
        let action = format!("cloudwatch:{}", op.name());
        let arn = |name: &str| alarm_arn(&self.region, &self.account, name);
        let resources = match op {
            Operation::PutMetricAlarm | Operation::SetAlarmState => {
                vec![arn(request.get("AlarmName").and_then(Value::as_str).unwrap_or_default())]
            }
            Operation::DeleteAlarms => request
                .get("AlarmNames")
                .and_then(Value::as_array)
                .map(|names| names.iter().filter_map(Value::as_str).map(arn).collect())
                .unwrap_or_default(),
            Operation::DescribeAlarms | Operation::DescribeAlarmHistory => vec![arn("*")],
            _ => vec!["*".into()],
        };
        (action, resources)
    }

    /// Authorizes `principal` for a request.
    pub fn authorize(&self, principal: &Principal, op: Operation, request: &Value) -> Result<(), CwError> {
        let (action, resources) = self.action_and_resources(op, request);
        for resource in resources {
            actions::authorize_named(principal, &action, &resource).map_err(CwError::access_denied)?;
        }
        Ok(())
    }

    /// Runs an operation on its request. Synchronous (SQLite): call it from the blocking pool.
    pub fn call(&self, op: Operation, request: Value) -> Result<Out, CwError> {
        if !request.is_object() {
            return Err(CwError::serialization("the body is not a structure"));
        }
        match op {
            Operation::PutMetricData => self.put_metric_data(parse(request)?),
            Operation::GetMetricData => self.get_metric_data(parse(request)?),
            Operation::GetMetricStatistics => self.get_metric_statistics(parse(request)?),
            Operation::ListMetrics => self.list_metrics(parse(request)?),
            Operation::PutMetricAlarm => self.put_metric_alarm(parse(request)?),
            Operation::DescribeAlarms => self.describe_alarms(parse(request)?),
            Operation::DeleteAlarms => self.delete_alarms(parse(request)?),
            Operation::SetAlarmState => self.set_alarm_state(parse(request)?),
            Operation::DescribeAlarmHistory => self.describe_alarm_history(parse(request)?),
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_millis() as i64
    }

    fn put_metric_data(&self, input: PutMetricDataInput) -> Result<Out, CwError> {
        let namespace = check_namespace(input.namespace)?;
        if namespace.starts_with("AWS/") {
            return Err(CwError::invalid_value(
                "The value AWS/ for parameter Namespace is invalid: it is reserved for AWS's own metrics",
            ));
        }
        if input.entity_metric_data.is_some_and(|e| !e.is_empty()) {
            return Err(CwError::invalid_value("EntityMetricData is not served by the local cloud: use MetricData"));
        }
        if input.metric_data.is_empty() {
            return Err(CwError::missing("MetricData"));
        }
        if input.metric_data.len() > 1000 {
            return Err(CwError::invalid_value("The collection MetricData must not have more than 1000 members"));
        }
        let now = self.now_ms();
        let checked: Vec<metrics::Checked> =
            input.metric_data.into_iter().enumerate().map(|(i, d)| d.check(i, now)).collect::<Result<_, _>>()?;
        self.store_datums(&namespace, &checked)?;
        Ok(Out::Map(Vec::new()))
    }

    /// Stores checked datums of `namespace` (any namespace, `AWS/` ones included).
    fn store_datums(&self, namespace: &str, checked: &[metrics::Checked]) -> Result<(), CwError> {
        self.store.transaction(|tx| {
            for d in checked {
                let dims = serde_json::to_string(&d.dimensions).unwrap_or_default();
                tx.execute(
                    "INSERT OR IGNORE INTO cloudwatch_metrics (namespace, name, dimensions) VALUES (?1, ?2, ?3)",
                    (&namespace, &d.metric_name, &dims),
                )?;
                let id: i64 = tx.query_row(
                    "SELECT id FROM cloudwatch_metrics WHERE namespace = ?1 AND name = ?2 AND dimensions = ?3",
                    (&namespace, &d.metric_name, &dims),
                    |r| r.get(0),
                )?;
                tx.execute(
                    "INSERT INTO cloudwatch_datapoints (metric, ts_ms, unit, count, sum, min, max) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    (id, d.timestamp_ms, &d.unit, d.stats.count, d.stats.sum, d.stats.min, d.stats.max),
                )?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The statistics of a metric per period, for periods starting in `[from_ms, to_ms)`.
    #[allow(clippy::too_many_arguments)]
    fn periods(
        &self,
        namespace: &str,
        name: &str,
        dimensions: &[Dimension],
        unit: Option<&str>,
        period: u32,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Periods, CwError> {
        let dims = serde_json::to_string(dimensions).unwrap_or_default();
        let from = metrics::period_start(from_ms, period);
        let rows: Vec<(i64, String, Stats)> = self.store.transaction(|tx| {
            let mut stmt = tx.prepare(
                "SELECT d.ts_ms, d.unit, d.count, d.sum, d.min, d.max FROM cloudwatch_datapoints d
                 JOIN cloudwatch_metrics m ON m.id = d.metric
                 WHERE m.namespace = ?1 AND m.name = ?2 AND m.dimensions = ?3 AND d.ts_ms >= ?4 AND d.ts_ms < ?5
                   AND (?6 IS NULL OR d.unit = ?6)",
            )?;
            let rows = stmt.query_map((namespace, name, &dims, from, to_ms, unit), |r| {
                Ok((r.get(0)?, r.get(1)?, Stats { count: r.get(2)?, sum: r.get(3)?, min: r.get(4)?, max: r.get(5)? }))
            })?;
            rows.collect()
        })?;
        let mut periods: Periods = BTreeMap::new();
        for (ts, row_unit, stats) in rows {
            let start = metrics::period_start(ts, period);
            match periods.get_mut(&start) {
                Some((s, u)) => {
                    *s = s.merge(stats);
                    if u.as_deref() != Some(row_unit.as_str()) {
                        *u = None;
                    }
                }
                None => {
                    periods.insert(start, (stats, Some(row_unit)));
                }
            }
        }
        Ok(periods)
    }

    fn get_metric_statistics(&self, input: GetMetricStatisticsInput) -> Result<Out, CwError> {
        let namespace = check_namespace(input.namespace)?;
        let name = input.metric_name.ok_or_else(|| CwError::missing("MetricName"))?;
        let start = seconds_to_ms("StartTime", input.start_time)?;
        let end = seconds_to_ms("EndTime", input.end_time)?;
        let period = metrics::check_period("Period", input.period.ok_or_else(|| CwError::missing("Period"))?)?;
        if start >= end {
            return Err(CwError::invalid_value("The parameter StartTime must be less than the parameter EndTime."));
        }
        if input.extended_statistics.is_some_and(|e| !e.is_empty()) {
            return Err(CwError::invalid_value(
                "ExtendedStatistics (percentiles) are not served by the local cloud: use Statistics",
            ));
        }
        let statistics = input.statistics.unwrap_or_default();
        if statistics.is_empty() || statistics.len() > 5 {
            return Err(CwError::invalid_value("The collection Statistics must have between 1 and 5 members"));
        }
        let statistics: Vec<Statistic> = statistics.iter().map(|s| Statistic::parse(s)).collect::<Result<_, _>>()?;
        if let Some(unit) = &input.unit {
            metrics::check_unit(unit)?;
        }
        let dimensions = metrics::canonical_dimensions(input.dimensions)?;
        let count = (end - metrics::period_start(start, period)) / (i64::from(period) * 1000) + 1;
        if count > 1440 {
            return Err(CwError::invalid_combination(format!(
                "You have requested up to {count} datapoints, which exceeds the limit of 1,440. You may reduce the datapoints requested by increasing Period, or decreasing the time range."
            )));
        }
        let periods = self.periods(&namespace, &name, &dimensions, input.unit.as_deref(), period, start, end)?;
        let datapoints = periods
            .iter()
            .map(|(ts, (stats, unit))| {
                let mut members = vec![("Timestamp".to_owned(), Out::millis(*ts))];
                for s in &statistics {
                    members.push((s.name().to_owned(), Out::Float(stats.value(*s))));
                }
                let unit = input.unit.clone().or_else(|| unit.clone()).unwrap_or_else(|| "None".into());
                members.push(("Unit".to_owned(), Out::Str(unit)));
                Out::Map(members)
            })
            .collect();
        Ok(Out::object([("Label", Some(Out::Str(name))), ("Datapoints", Some(Out::List(datapoints)))]))
    }

    fn get_metric_data(&self, input: GetMetricDataInput) -> Result<Out, CwError> {
        let start = seconds_to_ms("StartTime", input.start_time)?;
        let end = seconds_to_ms("EndTime", input.end_time)?;
        if start >= end {
            return Err(CwError::invalid_value("The parameter StartTime must be less than the parameter EndTime."));
        }
        if input.metric_data_queries.is_empty() || input.metric_data_queries.len() > 500 {
            return Err(CwError::invalid_value("The collection MetricDataQueries must have between 1 and 500 members"));
        }
        let descending = match input.scan_by.as_deref() {
            None | Some("TimestampDescending") => true,
            Some("TimestampAscending") => false,
            Some(other) => {
                return Err(CwError::invalid_value(format!("The parameter ScanBy has the invalid value {other:?}")));
            }
        };
        let mut results = Vec::new();
        for query in input.metric_data_queries {
            let id_ok = query.id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && query.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !id_ok || query.id.len() > 255 {
                return Err(CwError::invalid_value(format!(
                    "The value {:?} for parameter MetricDataQueries.Id is invalid: it must start with a lowercase letter and hold only letters, digits and underscores",
                    query.id
                )));
            }
            if query.expression.is_some() {
                return Err(CwError::invalid_value(format!(
                    "Query {}: metric math expressions and Metrics Insights queries are not served by the local cloud; use MetricStat",
                    query.id
                )));
            }
            let Some(stat) = query.metric_stat else {
                return Err(CwError::invalid_combination(format!(
                    "Query {} must have exactly one of MetricStat or Expression",
                    query.id
                )));
            };
            let period = metrics::check_period("MetricStat.Period", stat.period)?;
            let statistic = Statistic::parse(&stat.stat)?;
            if let Some(unit) = &stat.unit {
                metrics::check_unit(unit)?;
            }
            let namespace = check_namespace(stat.metric.namespace)?;
            let name = stat.metric.metric_name.ok_or_else(|| CwError::missing("MetricStat.Metric.MetricName"))?;
            let dimensions = metrics::canonical_dimensions(stat.metric.dimensions)?;
            if query.return_data == Some(false) {
                continue;
            }
            let periods = self.periods(&namespace, &name, &dimensions, stat.unit.as_deref(), period, start, end)?;
            let mut points: Vec<(i64, f64)> = periods.iter().map(|(ts, (s, _))| (*ts, s.value(statistic))).collect();
            if descending {
                points.reverse();
            }
            results.push(Out::object([
                ("Id", Some(Out::Str(query.id))),
                ("Label", Some(Out::Str(query.label.unwrap_or(name)))),
                ("Timestamps", Some(Out::List(points.iter().map(|(t, _)| Out::millis(*t)).collect()))),
                ("Values", Some(Out::List(points.iter().map(|(_, v)| Out::Float(*v)).collect()))),
                ("StatusCode", Some(Out::str("Complete"))),
                ("Messages", Some(Out::List(Vec::new()))),
            ]));
        }
        Ok(Out::object([("MetricDataResults", Some(Out::List(results))), ("Messages", Some(Out::List(Vec::new())))]))
    }

    fn list_metrics(&self, input: ListMetricsInput) -> Result<Out, CwError> {
        const PAGE: usize = 500;
        let recent_since = match input.recently_active.as_deref() {
            None => None,
            Some("PT3H") => Some(self.now_ms() - 3 * 3600 * 1000),
            Some(other) => {
                return Err(CwError::invalid_value(format!(
                    "The parameter RecentlyActive must be PT3H (not {other:?})"
                )));
            }
        };
        let offset: usize = match &input.next_token {
            None => 0,
            Some(t) => t.parse().map_err(|_| {
                CwError::new(400, "InvalidNextToken", "InvalidNextToken", "The NextToken is not one this service gave")
            })?,
        };
        let rows: Vec<(String, String, String)> = self.store.transaction(|tx| {
            let mut stmt = tx.prepare(
                "SELECT namespace, name, dimensions FROM cloudwatch_metrics m
                 WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR name = ?2)
                   AND (?3 IS NULL OR EXISTS (SELECT 1 FROM cloudwatch_datapoints d WHERE d.metric = m.id AND d.ts_ms >= ?3))
                 ORDER BY namespace, name, dimensions",
            )?;
            let rows = stmt.query_map((&input.namespace, &input.metric_name, recent_since), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
            rows.collect()
        })?;
        let matching: Vec<(String, String, Vec<Dimension>)> =
            rows.into_iter()
                .map(|(ns, name, dims)| (ns, name, serde_json::from_str(&dims).unwrap_or_default()))
                .filter(|(_, _, dims): &(String, String, Vec<Dimension>)| {
                    input.dimensions.iter().all(|f| {
                        dims.iter().any(|d| d.name == f.name && f.value.as_ref().is_none_or(|v| *v == d.value))
                    })
                })
                .collect();
        let page: Vec<Out> = matching
            .iter()
            .skip(offset)
            .take(PAGE)
            .map(|(ns, name, dims)| {
                Out::object([
                    ("Namespace", Some(Out::str(ns))),
                    ("MetricName", Some(Out::str(name))),
                    ("Dimensions", Some(dimensions_out(dims))),
                ])
            })
            .collect();
        let next = (offset + PAGE < matching.len()).then(|| Out::Str((offset + PAGE).to_string()));
        Ok(Out::object([("Metrics", Some(Out::List(page))), ("NextToken", next)]))
    }

    fn load_alarm(&self, name: &str) -> Result<Option<Alarm>, CwError> {
        Ok(self.store.get(ALARM_KIND, name)?.and_then(|v| serde_json::from_str(&v).ok()))
    }

    fn alarms(&self) -> Result<Vec<Alarm>, CwError> {
        Ok(self.store.all(ALARM_KIND)?.into_iter().filter_map(|(_, v)| serde_json::from_str(&v).ok()).collect())
    }

    fn history_op(&self, alarm: &str, ts_ms: i64, kind: &str, summary: String, data: Value) -> crate::store::Op {
        let item = HistoryItem {
            alarm_name: alarm.to_owned(),
            timestamp_ms: ts_ms,
            history_item_type: kind.to_owned(),
            history_summary: summary,
            history_data: data.to_string(),
        };
        crate::store::Op::Put {
            kind: HISTORY_KIND,
            key: format!("{alarm}\n{ts_ms:015}\n{}", uuid::Uuid::new_v4()),
            value: serde_json::to_string(&item).unwrap_or_default(),
        }
    }

    /// Saves an alarm with a history item, and drops its oldest history beyond [`MAX_HISTORY`].
    fn save_alarm(&self, alarm: &Alarm, history: crate::store::Op) -> Result<(), CwError> {
        let mut ops = vec![
            crate::store::Op::Put {
                kind: ALARM_KIND,
                key: alarm.alarm_name.clone(),
                value: serde_json::to_string(alarm).map_err(|e| CwError::internal(e.to_string()))?,
            },
            history,
        ];
        let old = self.store.with_prefix(HISTORY_KIND, &format!("{}\n", alarm.alarm_name))?;
        let excess = (old.len() + 1).saturating_sub(MAX_HISTORY);
        ops.extend(old.into_iter().take(excess).map(|(key, _)| crate::store::Op::Delete { kind: HISTORY_KIND, key }));
        self.store.apply(&ops)?;
        Ok(())
    }

    fn put_metric_alarm(&self, input: PutMetricAlarmInput) -> Result<Out, CwError> {
        let name = input.alarm_name.ok_or_else(|| CwError::missing("AlarmName"))?;
        metrics::check_length("AlarmName", &name, 255)?;
        if input.metrics.is_some_and(|m| !m.is_empty()) {
            return Err(CwError::invalid_value(
                "Alarms on metric math (Metrics) are not served by the local cloud: give MetricName, Namespace and Statistic",
            ));
        }
        if input.extended_statistic.is_some() {
            return Err(CwError::invalid_value(
                "ExtendedStatistic (percentiles) is not served by the local cloud: use Statistic",
            ));
        }
        let metric_name = input.metric_name.ok_or_else(|| CwError::missing("MetricName"))?;
        metrics::check_length("MetricName", &metric_name, 255)?;
        let namespace = check_namespace(input.namespace)?;
        let statistic = Statistic::parse(&input.statistic.ok_or_else(|| CwError::missing("Statistic"))?)?;
        let period = metrics::check_period("Period", input.period.ok_or_else(|| CwError::missing("Period"))?)?;
        if period < 10 {
            return Err(CwError::invalid_value("The parameter Period must be 10, 30 or a multiple of 60 for an alarm"));
        }
        let evaluation_periods = input.evaluation_periods.ok_or_else(|| CwError::missing("EvaluationPeriods"))?;
        if evaluation_periods < 1 || evaluation_periods * i64::from(period) > 7 * 86_400 {
            return Err(CwError::invalid_value(
                "The parameter EvaluationPeriods must be at least 1, and Period times EvaluationPeriods at most seven days",
            ));
        }
        let datapoints_to_alarm = input.datapoints_to_alarm.unwrap_or(evaluation_periods);
        if !(1..=evaluation_periods).contains(&datapoints_to_alarm) {
            return Err(CwError::invalid_value(
                "The parameter DatapointsToAlarm must be between 1 and EvaluationPeriods",
            ));
        }
        let threshold = input.threshold.ok_or_else(|| CwError::missing("Threshold"))?;
        let comparison =
            Comparison::parse(&input.comparison_operator.ok_or_else(|| CwError::missing("ComparisonOperator"))?)?;
        let treat_missing = TreatMissing::parse(input.treat_missing_data.as_deref().unwrap_or("missing"))?;
        if let Some(unit) = &input.unit {
            metrics::check_unit(unit)?;
        }
        let dimensions = metrics::canonical_dimensions(input.dimensions)?;
        for actions in [&input.ok_actions, &input.alarm_actions, &input.insufficient_data_actions] {
            if actions.len() > 5 || actions.iter().any(|a| !a.starts_with("arn:")) {
                return Err(CwError::invalid_value("Each list of actions holds at most 5 ARNs"));
            }
        }
        let now = self.now_ms();
        let existing = self.load_alarm(&name)?;
        if existing.is_none() && self.store.all(ALARM_KIND)?.len() >= MAX_ALARMS {
            return Err(CwError::new(
                400,
                "LimitExceededFault",
                "LimitExceeded",
                format!("The local cloud keeps at most {MAX_ALARMS} alarms"),
            ));
        }
        // An update keeps the alarm's state; a new alarm has not been evaluated yet.
        let (state_value, state_reason, state_reason_data, state_updated_ms, state_transitioned_ms) = match &existing {
            Some(a) => (
                a.state_value,
                a.state_reason.clone(),
                a.state_reason_data.clone(),
                a.state_updated_ms,
                a.state_transitioned_ms,
            ),
            None => (StateValue::INSUFFICIENT_DATA, "Unchecked: Initial alarm creation".to_owned(), None, now, now),
        };
        let alarm = Alarm {
            alarm_name: name.clone(),
            alarm_description: input.alarm_description,
            actions_enabled: input.actions_enabled.unwrap_or(true),
            ok_actions: input.ok_actions,
            alarm_actions: input.alarm_actions,
            insufficient_data_actions: input.insufficient_data_actions,
            metric_name,
            namespace,
            statistic,
            dimensions,
            period,
            unit: input.unit,
            evaluation_periods: evaluation_periods as u32,
            datapoints_to_alarm: datapoints_to_alarm as u32,
            threshold,
            comparison_operator: comparison,
            treat_missing_data: treat_missing,
            state_value,
            state_reason,
            state_reason_data,
            state_updated_ms,
            state_transitioned_ms,
            configuration_updated_ms: now,
        };
        let verb = if existing.is_some() { "updated" } else { "created" };
        let history = self.history_op(
            &name,
            now,
            "ConfigurationUpdate",
            format!("Alarm \"{name}\" {verb}"),
            serde_json::json!({"version": "1.0", "type": if existing.is_some() { "Update" } else { "Create" }}),
        );
        self.save_alarm(&alarm, history)?;
        Ok(Out::Map(Vec::new()))
    }

    fn describe_alarms(&self, input: DescribeAlarmsInput) -> Result<Out, CwError> {
        let state = input.state_value.as_deref().map(StateValue::parse).transpose()?;
        let max = input.max_records.unwrap_or(50);
        if !(1..=100).contains(&max) {
            return Err(CwError::invalid_value("The parameter MaxRecords must be between 1 and 100"));
        }
        if let Some(names) = &input.alarm_names
            && names.len() > 100
        {
            return Err(CwError::invalid_value("The collection AlarmNames must not have more than 100 members"));
        }
        let offset: usize = match &input.next_token {
            None => 0,
            Some(t) => t.parse().map_err(|_| {
                CwError::new(400, "InvalidNextToken", "InvalidNextToken", "The NextToken is not one this service gave")
            })?,
        };
        let metric_alarms_wanted =
            input.alarm_types.as_ref().is_none_or(|types| types.iter().any(|t| t == "MetricAlarm"));
        let matching: Vec<Alarm> = if metric_alarms_wanted { self.alarms()? } else { Vec::new() }
            .into_iter()
            .filter(|a| input.alarm_names.as_ref().is_none_or(|names| names.contains(&a.alarm_name)))
            .filter(|a| input.alarm_name_prefix.as_ref().is_none_or(|p| a.alarm_name.starts_with(p.as_str())))
            .filter(|a| state.is_none_or(|s| a.state_value == s))
            .filter(|a| {
                input.action_prefix.as_ref().is_none_or(|p| {
                    a.alarm_actions
                        .iter()
                        .chain(&a.ok_actions)
                        .chain(&a.insufficient_data_actions)
                        .any(|x| x.starts_with(p.as_str()))
                })
            })
            .collect();
        let page: Vec<Out> =
            matching.iter().skip(offset).take(max as usize).map(|a| a.to_out(&self.region, &self.account)).collect();
        let next = (offset + (max as usize) < matching.len()).then(|| Out::Str((offset + max as usize).to_string()));
        Ok(Out::object([
            ("MetricAlarms", Some(Out::List(page))),
            ("CompositeAlarms", Some(Out::List(Vec::new()))),
            ("NextToken", next),
        ]))
    }

    fn delete_alarms(&self, input: DeleteAlarmsInput) -> Result<Out, CwError> {
        if input.alarm_names.is_empty() || input.alarm_names.len() > 100 {
            return Err(CwError::invalid_value("The collection AlarmNames must have between 1 and 100 members"));
        }
        let mut ops = Vec::new();
        for name in &input.alarm_names {
            if self.load_alarm(name)?.is_none() {
                return Err(CwError::not_found(format!("Alarm {name} does not exist; no alarm was deleted")));
            }
            ops.push(crate::store::Op::Delete { kind: ALARM_KIND, key: name.clone() });
            for (key, _) in self.store.with_prefix(HISTORY_KIND, &format!("{name}\n"))? {
                ops.push(crate::store::Op::Delete { kind: HISTORY_KIND, key });
            }
        }
        self.store.apply(&ops)?;
        Ok(Out::Map(Vec::new()))
    }

    fn set_alarm_state(&self, input: SetAlarmStateInput) -> Result<Out, CwError> {
        let name = input.alarm_name.ok_or_else(|| CwError::missing("AlarmName"))?;
        let state = StateValue::parse(&input.state_value.ok_or_else(|| CwError::missing("StateValue"))?)?;
        let reason = input.state_reason.ok_or_else(|| CwError::missing("StateReason"))?;
        if reason.chars().count() > 1023 {
            return Err(CwError::invalid_value("The parameter StateReason must be at most 1023 characters long"));
        }
        if let Some(data) = &input.state_reason_data
            && serde_json::from_str::<Value>(data).is_err()
        {
            return Err(CwError::new(400, "InvalidFormatFault", "InvalidFormat", "StateReasonData is not valid JSON"));
        }
        let mut alarm =
            self.load_alarm(&name)?.ok_or_else(|| CwError::not_found(format!("Alarm {name} does not exist")))?;
        let history = self.transition(&mut alarm, state, reason, input.state_reason_data, self.now_ms());
        self.save_alarm(&alarm, history)?;
        Ok(Out::Map(Vec::new()))
    }

    /// Moves an alarm to a state; the history item that records it.
    fn transition(
        &self,
        alarm: &mut Alarm,
        state: StateValue,
        reason: String,
        reason_data: Option<String>,
        now: i64,
    ) -> crate::store::Op {
        let old = alarm.state_value;
        let data = serde_json::json!({
            "version": "1.0",
            "oldState": {"stateValue": old.name(), "stateReason": alarm.state_reason},
            "newState": {"stateValue": state.name(), "stateReason": reason},
        });
        if old != state {
            alarm.state_transitioned_ms = now;
        }
        alarm.state_value = state;
        alarm.state_reason = reason;
        alarm.state_reason_data = reason_data;
        alarm.state_updated_ms = now;
        let summary = format!("Alarm updated from {} to {}", old.name(), state.name());
        self.history_op(&alarm.alarm_name, now, "StateUpdate", summary, data)
    }

    fn describe_alarm_history(&self, input: DescribeAlarmHistoryInput) -> Result<Out, CwError> {
        let max = input.max_records.unwrap_or(100);
        if !(1..=100).contains(&max) {
            return Err(CwError::invalid_value("The parameter MaxRecords must be between 1 and 100"));
        }
        let from = input.start_date.map(|t| (t * 1000.0) as i64).unwrap_or(i64::MIN);
        let to = input.end_date.map(|t| (t * 1000.0) as i64).unwrap_or(i64::MAX);
        let records = match &input.alarm_name {
            Some(name) => self.store.with_prefix(HISTORY_KIND, &format!("{name}\n"))?,
            None => self.store.all(HISTORY_KIND)?,
        };
        let mut items: Vec<HistoryItem> = records
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_str::<HistoryItem>(&v).ok())
            .filter(|h| input.history_item_type.as_ref().is_none_or(|t| *t == h.history_item_type))
            .filter(|h| (from..=to).contains(&h.timestamp_ms))
            .collect();
        items.sort_by_key(|h| h.timestamp_ms);
        if input.scan_by.as_deref() != Some("TimestampAscending") {
            items.reverse();
        }
        let items: Vec<Out> = items
            .into_iter()
            .take(max as usize)
            .map(|h| {
                Out::object([
                    ("AlarmName", Some(Out::Str(h.alarm_name))),
                    ("AlarmType", Some(Out::str("MetricAlarm"))),
                    ("Timestamp", Some(Out::millis(h.timestamp_ms))),
                    ("HistoryItemType", Some(Out::Str(h.history_item_type))),
                    ("HistorySummary", Some(Out::Str(h.history_summary))),
                    ("HistoryData", Some(Out::Str(h.history_data))),
                ])
            })
            .collect();
        Ok(Out::object([("AlarmHistoryItems", Some(Out::List(items)))]))
    }

    /// Evaluates every alarm at the clock's time, saving those whose state changed; how many changed.
    pub fn evaluate_alarms(&self) -> Result<usize, CwError> {
        let now = self.now_ms();
        let mut changed = 0;
        for alarm in self.alarms()? {
            let period = alarm.period;
            let period_ms = i64::from(period) * 1000;
            let range = alarm.evaluation_periods as usize + alarms::EXTRA_PERIODS;
            let current = metrics::period_start(now, period);
            let first = current - (range as i64 - 1) * period_ms;
            let stats = self.periods(
                &alarm.namespace,
                &alarm.metric_name,
                &alarm.dimensions,
                alarm.unit.as_deref(),
                period,
                first,
                current + period_ms,
            )?;
            let periods: Vec<alarms::Period> = (0..range as i64)
                .map(|i| {
                    let start_ms = first + i * period_ms;
                    alarms::Period { start_ms, value: stats.get(&start_ms).map(|(s, _)| s.value(alarm.statistic)) }
                })
                .collect();
            let Some(verdict) = alarms::evaluate(&alarm.rule(), &periods) else { continue };
            // A new alarm's first evaluation replaces "Unchecked" even when the state stays.
            if verdict.state == alarm.state_value && !alarm.state_reason.starts_with("Unchecked") {
                continue;
            }
            // Saved only if the alarm was not changed or deleted meanwhile.
            let Some(mut latest) = self.load_alarm(&alarm.alarm_name)? else { continue };
            if latest.configuration_updated_ms != alarm.configuration_updated_ms
                || latest.state_updated_ms != alarm.state_updated_ms
            {
                continue;
            }
            let recent: Vec<f64> =
                periods.iter().rev().filter_map(|p| p.value).take(alarm.evaluation_periods as usize).collect();
            let data = serde_json::json!({
                "version": "1.0",
                "queryDate": time_text(now),
                "startDate": time_text(first),
                "statistic": alarm.statistic.name(),
                "period": period,
                "recentDatapoints": recent,
                "threshold": alarm.threshold,
            });
            tracing::info!(alarm = %alarm.alarm_name, from = alarm.state_value.name(), to = verdict.state.name(), reason = %verdict.reason, "alarm state changed");
            let history = self.transition(&mut latest, verdict.state, verdict.reason, Some(data.to_string()), now);
            self.save_alarm(&latest, history)?;
            changed += 1;
        }
        Ok(changed)
    }

    /// Evaluates the alarms every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {
                    let cw = self.clone();
                    match tokio::task::spawn_blocking(move || cw.evaluate_alarms()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "evaluating CloudWatch alarms"),
                        Err(e) => tracing::error!(error = %e, "evaluating CloudWatch alarms failed"),
                    }
                }
            }
        }
    }
}

impl crate::iot_metrics::ServiceMetricStore for CloudWatch {
    fn put_service_metrics(
        &self,
        namespace: &str,
        timestamp_ms: i64,
        samples: &[crate::iot_metrics::Sample],
    ) -> Result<(), String> {
        let checked: Vec<metrics::Checked> = samples
            .iter()
            .map(|s| metrics::Checked {
                metric_name: s.name.to_owned(),
                dimensions: s
                    .dimensions
                    .iter()
                    .map(|(name, value)| Dimension { name: (*name).to_owned(), value: value.clone() })
                    .collect(),
                timestamp_ms,
                unit: "Count".to_owned(),
                stats: Stats { count: 1.0, sum: s.count as f64, min: s.count as f64, max: s.count as f64 },
            })
            .collect();
        self.store_datums(namespace, &checked).map_err(|e| e.to_string())
    }
}

impl crate::rules::engine::CloudWatchSink for CloudWatch {
    fn put_metric_datum(&self, namespace: &str, datum: Value) -> Result<(), String> {
        let request = serde_json::json!({"Namespace": namespace, "MetricData": [datum]});
        self.call(Operation::PutMetricData, request).map(|_| ()).map_err(|e| e.message)
    }

    fn change_alarm_state(&self, alarm_name: &str, state_value: &str, state_reason: &str) -> Result<(), String> {
        let request =
            serde_json::json!({"AlarmName": alarm_name, "StateValue": state_value, "StateReason": state_reason});
        self.call(Operation::SetAlarmState, request).map(|_| ()).map_err(|e| e.message)
    }

    fn alarm_arn(&self, alarm_name: &str) -> String {
        alarm_arn(&self.region, &self.account, alarm_name)
    }
}

/// A time as ISO 8601 with milliseconds, as AWS writes it in `StateReasonData`.
fn time_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
