//! The rules engine at work: every message the broker publishes (a device's over MQTT, an HTTP
//! Publish, what the shadow service and lifecycle events publish) is offered to the enabled
//! rules; a rule whose FROM filter matches the topic — or whose name a Basic Ingest topic
//! `$aws/rules/{ruleName}/…` addresses — runs its SQL on the message and, when its WHERE clause
//! holds, hands the result to each of its actions ("Rules for AWS IoT", "Basic Ingest",
//! "Error action" in the AWS IoT Core Developer Guide).
//!
//! Actions run with the role they name: the role must trust `iot.amazonaws.com` and allow what
//! the action does (`iot:Publish` on the topic for `republish`, `s3:PutObject` on the object for
//! `s3`, `dynamodb:PutItem` on the table for `dynamoDBv2`, `cloudwatch:PutMetricData` for
//! `cloudwatchMetric`, `cloudwatch:SetAlarmState` on the alarm for `cloudwatchAlarm`), else the
//! action fails as IoT Core's
//! does when it cannot assume the role or is denied. Parameters take substitution templates
//! (`${topic(3)}`), evaluated on the original message. A `dynamoDBv2` action puts the rule's
//! result as one item, each top-level attribute an attribute of the item ("DynamoDBv2 action");
//! a result that is not a JSON object, or lacks the table's key attributes, fails the action.
//! A `lambda` action invokes the function asynchronously (`Event`), as IoT Core does, through a
//! [`FunctionSink`] (the Lambda service): it fails with "Function not found" when the function
//! does not exist, and when the function's resource-based policy does not allow
//! `iot.amazonaws.com` to invoke it.
//!
//! A `cloudwatchMetric` action ("CloudWatch metrics" rule action) puts one datum through a
//! [`CloudWatchSink`] (CloudWatch), its namespace, name, value, unit and timestamp rendered as
//! templates; a value or timestamp that does not read as a number fails the action, as does
//! whatever PutMetricData refuses. A `cloudwatchAlarm` action ("CloudWatch alarms") sets an
//! alarm's state the same way.
//!
//! The engine counts AWS IoT's rule metrics in [`IotMetrics`] (`TopicMatch`, `ParseError`,
//! `RuleNotFound`, `RulesExecuted`, `Success`/`Failure` and `ErrorActionSuccess`/
//! `ErrorActionFailure` per `RuleName` and `ActionType`; see [`crate::iot_metrics`]).
//!
//! When an action fails, the rule's `errorAction` (if any) runs with IoT Core's error message:
//! `{ruleName, topic, cloudwatchTraceId, clientId, base64OriginalPayload, failures: [{failedAction,
//! failedResource, errorMessage}]}`. A failing error action is counted and logged, not retried.
//!
//! A `republish` to a service's request topic (`$$aws/things/{thing}/shadow/update`) reaches the
//! service as well as the subscribers, as a device's publish does, so a rule can update a shadow
//! (the "Republish" action's `topic`: `$$` for a reserved topic such as a shadow's).
//!
//! Messages the engine itself republishes are not offered to the rules again: a rule cannot feed
//! itself (on AWS they are, and a loop is the rule author's to avoid).
//!
//! The tap ([`RulesTap`], a [`ServiceHandler`] that only observes) queues each message without
//! blocking the broker; one task evaluates them in arrival order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use cloud_api::policy::Decision;
use cloud_api::rules::{Output, Statement, Template};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{TopicRule, TopicRules};
use crate::bus::{Bus, BusMessage, Publisher, ServiceHandler};
use crate::dynamodb::DynamoDb;
use crate::iam::Iam;
use crate::iam::roles::RULES_ENGINE_PRINCIPAL;
use crate::iot_metrics::{self, IotMetrics, RuleMetric};
use crate::s3::LocalS3;
use crate::time::SharedClock;

/// The client id a `republish` action's request reaches a service with (its in-flight requests
/// are counted under it).
pub const RULES_PUBLISHER_CLIENT_ID: &str = "iot-rules-engine";

/// A message offered to the rules.
#[derive(Debug)]
struct Incoming {
    topic: String,
    payload: Bytes,
    client_id: Option<String>,
    principal: Option<String>,
    received_ms: u64,
}

/// How many messages may wait for the engine. A fleet publishing faster than the rules' actions
/// run fills it; what does not fit is dropped and counted ([`RuleStats::dropped`]) rather than
/// held in memory without end.
pub const QUEUE_LIMIT: usize = 10_000;

/// The broker's side: queues every message for the engine.
#[derive(Debug)]
pub struct RulesTap {
    tx: mpsc::Sender<Incoming>,
    clock: SharedClock,
    rules: TopicRules,
    stats: Arc<RuleStats>,
    metrics: Arc<IotMetrics>,
}

impl ServiceHandler for RulesTap {
    fn wants(&self, _topic: &str) -> bool {
        false
    }

    fn handle(&self, _from: &Publisher, _topic: &str, _payload: Bytes) {}

    fn observe(&self, from: Option<&Publisher>, topic: &str, payload: &Bytes) {
        // Without an enabled rule nothing is queued (the rules are cached between changes).
        // A Basic Ingest topic is queued anyway: a missing rule is counted (`RuleNotFound`).
        if self.rules.snapshot().is_ok_and(|rules| rules.iter().all(|r| r.rule_disabled))
            && cloud_api::topic::basic_ingest_rule(topic).is_none()
        {
            return;
        }
        let queued = self.tx.try_send(Incoming {
            topic: topic.to_owned(),
            payload: payload.clone(),
            client_id: from.map(|p| p.client_id.clone()),
            principal: from.map(|p| p.certificate_id.clone()),
            received_ms: self.clock.now_millis(),
        });
        if let Err(mpsc::error::TrySendError::Full(_)) = queued {
            // Logged at the first drop and every thousandth after, not for each message.
            let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            // Counted against each enabled rule the message would have reached, as AWS IoT
            // counts `RuleMessageThrottled`, so an alarm can watch it.
            let ingest = cloud_api::topic::basic_ingest_rule(topic);
            for rule in self.rules.snapshot().iter().flat_map(|rules| rules.iter()) {
                let reached = ingest.map_or_else(
                    || cloud_api::topic::matches(&rule.topic_pattern, topic),
                    |name| name == rule.rule_name,
                );
                if reached && !rule.rule_disabled {
                    self.metrics.rule(RuleMetric::RuleMessageThrottled, &rule.rule_name, None);
                }
            }
            if dropped.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = dropped + 1,
                    limit = QUEUE_LIMIT,
                    "rules engine: queue full, messages dropped before the rules saw them"
                );
            }
        }
    }
}

/// What the engine has done since it started.
#[derive(Debug, Default)]
pub struct RuleStats {
    /// Messages a rule matched (its WHERE clause held).
    pub matched: AtomicU64,
    /// Actions that succeeded.
    pub actions_ok: AtomicU64,
    /// Actions that failed (each sent to the error action, if the rule has one).
    pub actions_failed: AtomicU64,
    /// Messages whose SQL could not be evaluated (logged; no action runs).
    pub evaluation_errors: AtomicU64,
    /// Error actions that failed in turn.
    pub error_actions_failed: AtomicU64,
    /// Messages dropped because [`QUEUE_LIMIT`] messages were already waiting (also counted
    /// as `RuleMessageThrottled` in `AWS/IoT` for each rule they would have reached).
    pub dropped: AtomicU64,
}

/// Where `lambda` actions go: the Lambda service, seen from the rules engine.
pub trait FunctionSink: Send + Sync + std::fmt::Debug {
    /// Queues an asynchronous (`Event`) invocation of `function_arn` by IoT Core with
    /// `payload`; `Err` says why not ("Function not found: …", or IoT Core is not allowed to
    /// invoke it).
    fn invoke_event(&self, function_arn: &str, payload: Bytes) -> Result<(), String>;
}

/// Where `cloudwatchMetric` and `cloudwatchAlarm` actions go: CloudWatch, seen from the rules
/// engine. Synchronous (the engine calls it from the blocking pool).
pub trait CloudWatchSink: Send + Sync + std::fmt::Debug {
    /// PutMetricData of one datum (`MetricName`, `Value`, `Unit`, `Timestamp` as on the wire) in
    /// `namespace`, checked as PutMetricData checks it; `Err` says why not.
    fn put_metric_datum(&self, namespace: &str, datum: Value) -> Result<(), String>;

    /// SetAlarmState; `Err` says why not (no such alarm, a state that is not one).
    fn change_alarm_state(&self, alarm_name: &str, state_value: &str, state_reason: &str) -> Result<(), String>;

    /// The ARN of an alarm (what a `cloudwatchAlarm` action's role must be allowed on).
    fn alarm_arn(&self, alarm_name: &str) -> String;
}

/// The engine: the rules, and what their actions reach.
#[derive(Debug, Clone)]
pub struct RulesEngine {
    rules: TopicRules,
    bus: Bus,
    s3: LocalS3,
    dynamodb: DynamoDb,
    iam: Iam,
    functions: Option<Arc<dyn FunctionSink>>,
    cloudwatch: Option<Arc<dyn CloudWatchSink>>,
    requests: RequestServices,
    stats: Arc<RuleStats>,
    metrics: Arc<IotMetrics>,
}

/// Services that own request topics a `republish` may address (the shadow service).
#[derive(Clone, Default)]
struct RequestServices(Vec<Arc<dyn ServiceHandler>>);

impl std::fmt::Debug for RequestServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestServices({} services)", self.0.len())
    }
}

/// Why one action failed, as the error action reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `RepublishAction`, `S3Action`, `LambdaAction`, `DynamoDBv2Action`.
    pub failed_action: &'static str,
    /// The topic, bucket, function or table.
    pub failed_resource: String,
    /// What went wrong.
    pub error_message: String,
}

impl RulesEngine {
    /// The engine over `rules`, republishing through `bus`, writing to `s3` and `dynamodb`,
    /// authorizing with `iam`; and the tap to give the broker (among its services).
    pub fn new(
        rules: TopicRules,
        bus: Bus,
        s3: LocalS3,
        dynamodb: DynamoDb,
        iam: Iam,
        clock: SharedClock,
        metrics: Arc<IotMetrics>,
    ) -> (Self, Arc<RulesTap>, RulesQueue) {
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        let stats: Arc<RuleStats> = Arc::default();
        let tap =
            Arc::new(RulesTap { tx, clock, rules: rules.clone(), stats: stats.clone(), metrics: metrics.clone() });
        let engine = RulesEngine {
            rules,
            bus,
            s3,
            dynamodb,
            iam,
            functions: None,
            cloudwatch: None,
            requests: RequestServices::default(),
            stats,
            metrics,
        };
        (engine, tap, RulesQueue(rx))
    }

    /// The engine with `lambda` actions invoking functions of `functions`.
    pub fn with_functions(mut self, functions: Arc<dyn FunctionSink>) -> Self {
        self.functions = Some(functions);
        self
    }

    /// The engine with `cloudwatchMetric` and `cloudwatchAlarm` actions reaching `cloudwatch`.
    pub fn with_cloudwatch(mut self, cloudwatch: Arc<dyn CloudWatchSink>) -> Self {
        self.cloudwatch = Some(cloudwatch);
        self
    }

    /// The engine counting AWS IoT's rule metrics (`TopicMatch`, `Success`, …) in `metrics`.
    /// The engine with `republish` actions also handing requests on the topics `service` owns
    /// (its [`ServiceHandler::wants`]) to it, as the broker does with a client's publish.
    pub fn with_request_service(mut self, service: Arc<dyn ServiceHandler>) -> Self {
        self.requests.0.push(service);
        self
    }

    /// What the engine has done.
    pub fn stats(&self) -> Arc<RuleStats> {
        self.stats.clone()
    }

    /// Evaluates queued messages until `stop`.
    pub async fn run(self, mut queue: RulesQueue, stop: CancellationToken) {
        let mut statements: HashMap<String, (String, Arc<Statement>)> = HashMap::new();
        loop {
            let incoming = tokio::select! {
                _ = stop.cancelled() => return,
                m = queue.0.recv() => match m {
                    Some(m) => m,
                    None => return,
                },
            };
            let rules = match self.rules.snapshot() {
                Ok(rules) => rules,
                Err(e) => {
                    tracing::warn!(error = %e, "rules engine: cannot read the rules");
                    continue;
                }
            };
            if let Some(name) = cloud_api::topic::basic_ingest_rule(&incoming.topic)
                && !rules.iter().any(|r| r.rule_name == name)
            {
                self.metrics.rule(RuleMetric::RuleNotFound, name, None);
            }
            for rule in rules.iter().filter(|r| !r.rule_disabled) {
                let Some(statement) = compiled(&mut statements, rule) else { continue };
                if reaches(rule, &statement, &incoming.topic) {
                    self.metrics.rule(RuleMetric::TopicMatch, &rule.rule_name, None);
                    self.apply(rule, &statement, &incoming).await;
                }
            }
        }
    }

    /// Runs one rule on one message.
    async fn apply(&self, rule: &TopicRule, statement: &Statement, incoming: &Incoming) {
        let (region, account) = self.rules.account();
        let trace_id = uuid::Uuid::new_v4().to_string();
        let message = cloud_api::rules::Message {
            topic: &incoming.topic,
            payload: &incoming.payload,
            client_id: incoming.client_id.as_deref(),
            principal: incoming.principal.as_deref(),
            timestamp_ms: i64::try_from(incoming.received_ms).unwrap_or(i64::MAX),
            account_id: Some(account),
            trace_id: Some(&trace_id),
            random_seed: rand_seed(),
        };
        let output = match cloud_api::rules::evaluate(statement, &message) {
            Ok(Some(output)) => output,
            Ok(None) => return,
            Err(e) => {
                self.stats.evaluation_errors.fetch_add(1, Ordering::Relaxed);
                if matches!(e, cloud_api::rules::EvalError::PayloadNotJson { .. }) {
                    self.metrics.rule(RuleMetric::ParseError, &rule.rule_name, None);
                }
                tracing::info!(rule = %rule.rule_name, topic = %incoming.topic, error = %e, "rule not evaluated");
                return;
            }
        };
        self.stats.matched.fetch_add(1, Ordering::Relaxed);
        self.metrics.rule(RuleMetric::RulesExecuted, &rule.rule_name, None);
        let mut failures = Vec::new();
        for action in &rule.actions {
            let action_type = action_kind(action).and_then(iot_metrics::action_type);
            match self.act(action, &output, &message, region, account).await {
                Ok(()) => {
                    self.stats.actions_ok.fetch_add(1, Ordering::Relaxed);
                    self.metrics.rule(RuleMetric::Success, &rule.rule_name, action_type);
                }
                Err(failure) => {
                    self.stats.actions_failed.fetch_add(1, Ordering::Relaxed);
                    self.metrics.rule(RuleMetric::Failure, &rule.rule_name, action_type);
                    tracing::info!(rule = %rule.rule_name, action = failure.failed_action, error = %failure.error_message, "rule action failed");
                    failures.push(failure);
                }
            }
        }
        if failures.is_empty() {
            return;
        }
        let Some(error_action) = &rule.error_action else { return };
        let report = Output::Json(error_message(rule, incoming, &trace_id, &failures));
        let action_type = action_kind(error_action).and_then(iot_metrics::action_type);
        match self.act(error_action, &report, &message, region, account).await {
            Ok(()) => self.metrics.rule(RuleMetric::ErrorActionSuccess, &rule.rule_name, action_type),
            Err(failure) => {
                self.stats.error_actions_failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.rule(RuleMetric::ErrorActionFailure, &rule.rule_name, action_type);
                tracing::warn!(rule = %rule.rule_name, error = %failure.error_message, "rule error action failed");
            }
        }
    }

    /// Runs one action with `output` as its payload.
    async fn act(
        &self,
        action: &Value,
        output: &Output,
        message: &cloud_api::rules::Message<'_>,
        region: &str,
        account: &str,
    ) -> Result<(), Failure> {
        let (kind, body) = action
            .as_object()
            .and_then(|o| o.iter().find(|(_, v)| !v.is_null()))
            .ok_or_else(|| failure("UnknownAction", "", "the action names no kind"))?;
        let text = |name: &str| member(body, name).to_owned();
        match kind.as_str() {
            "republish" => {
                let topic = render(&text("topic"), message, "RepublishAction")?;
                // `$$` stands for a `$` topic (a shadow or Basic Ingest topic).
                let topic = topic.strip_prefix('$').filter(|t| t.starts_with('$')).unwrap_or(&topic).to_owned();
                let qos = body.get("qos").and_then(Value::as_u64).unwrap_or(0).min(1) as u8;
                let resource = format!("arn:aws:iot:{region}:{account}:topic/{topic}");
                self.authorize(&text("roleArn"), "iot:Publish", &resource, "RepublishAction", &topic)?;
                cloud_api::topic::validate_topic_name(&topic)
                    .map_err(|e| failure("RepublishAction", &topic, &format!("invalid topic {topic:?}: {e}")))?;
                let payload = Bytes::from(output.to_bytes());
                // Subscribers see the request before the service's answer, as over MQTT.
                if !self.bus.publish(BusMessage::republished(topic.clone(), payload.clone(), qos)) {
                    return Err(failure("RepublishAction", &topic, "the broker has stopped"));
                }
                if let Some(service) = self.requests.0.iter().find(|s| s.wants(&topic)) {
                    let from = Publisher { client_id: RULES_PUBLISHER_CLIENT_ID.into(), certificate_id: String::new() };
                    service.handle(&from, &topic, payload);
                }
                Ok(())
            }
            "s3" => {
                let bucket = render(&text("bucketName"), message, "S3Action")?;
                let key = render(&text("key"), message, "S3Action")?;
                let resource = format!("arn:aws:s3:::{bucket}/{key}");
                self.authorize(&text("roleArn"), "s3:PutObject", &resource, "S3Action", &bucket)?;
                let bytes = Bytes::from(output.to_bytes());
                let content = crate::s3::storage::NewObject {
                    content_type: output.as_json().map(|_| "application/json".to_owned()),
                    ..Default::default()
                };
                self.s3.objects().put_bytes(&bucket, &key, bytes, content).await.map_err(|e| {
                    failure(
                        "S3Action",
                        &bucket,
                        &format!("Failed to put S3 object. {e}. Message arrived on: {}, Key: {key:?}", message.topic),
                    )
                })?;
                Ok(())
            }
            "lambda" => {
                let arn = render(&text("functionArn"), message, "LambdaAction")?;
                let Some(functions) = &self.functions else {
                    return Err(failure("LambdaAction", &arn, &format!("Function not found: {arn}")));
                };
                functions
                    .invoke_event(&arn, Bytes::from(output.to_bytes()))
                    .map_err(|e| failure("LambdaAction", &arn, &e))
            }
            "dynamoDBv2" => {
                let table =
                    render(body["putItem"]["tableName"].as_str().unwrap_or_default(), message, "DynamoDBv2Action")?;
                let resource = self.dynamodb.table_arn(&table);
                self.authorize(&text("roleArn"), "dynamodb:PutItem", &resource, "DynamoDBv2Action", &table)?;
                let Some(Value::Object(item)) = output.as_json() else {
                    return Err(failure(
                        "DynamoDBv2Action",
                        &table,
                        "the rule's result is not a JSON object: a DynamoDBv2 action writes its attributes as the item's",
                    ));
                };
                let (dynamodb, item) = (self.dynamodb.clone(), item.clone());
                let put = table.clone();
                let written = tokio::task::spawn_blocking(move || dynamodb.put_json_item(&put, &item)).await;
                match written {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(failure("DynamoDBv2Action", &table, &format!("PutItem on table {table}: {e}"))),
                    Err(_) => Err(failure("DynamoDBv2Action", &table, "the DynamoDB write failed")),
                }
            }
            "cloudwatchMetric" => self.put_metric(body, message).await,
            "cloudwatchAlarm" => self.set_alarm(body, message).await,
            other => Err(failure("UnknownAction", other, &format!("the local cloud does not run {other} actions"))),
        }
    }

    /// A `cloudwatchMetric` action: one datum, its members rendered on the message; the value
    /// (and the timestamp, in epoch seconds, if given) must read as numbers.
    async fn put_metric(&self, body: &Value, message: &cloud_api::rules::Message<'_>) -> Result<(), Failure> {
        const KIND: &str = "CloudwatchMetricAction";
        let rendered = |name: &str| render(member(body, name), message, KIND);
        let namespace = rendered("metricNamespace")?;
        let (name, value, unit) = (rendered("metricName")?, rendered("metricValue")?, rendered("metricUnit")?);
        let timestamp = match member(body, "metricTimestamp") {
            "" => None,
            _ => Some(rendered("metricTimestamp")?),
        };
        self.authorize(member(body, "roleArn"), "cloudwatch:PutMetricData", "*", KIND, &namespace)?;
        let not_a_number = |what: String| failure(KIND, &namespace, &what);
        let value = metric_number(&value).ok_or_else(|| {
            not_a_number(format!("metricValue {value:?} is not a number: a CloudWatch metric's value must be one"))
        })?;
        let mut datum = json!({"MetricName": name, "Value": value, "Unit": unit});
        if let Some(t) = timestamp {
            let seconds = metric_number(&t).ok_or_else(|| {
                not_a_number(format!("metricTimestamp {t:?} is not a time in seconds since the Unix epoch"))
            })?;
            datum["Timestamp"] = json!(seconds);
        }
        let (what, ns) = (format!("PutMetricData in namespace {namespace}"), namespace.clone());
        self.on_cloudwatch(KIND, &namespace, what, move |cw| cw.put_metric_datum(&ns, datum)).await
    }

    /// A `cloudwatchAlarm` action: SetAlarmState with the members rendered on the message.
    async fn set_alarm(&self, body: &Value, message: &cloud_api::rules::Message<'_>) -> Result<(), Failure> {
        const KIND: &str = "CloudwatchAlarmAction";
        let rendered = |name: &str| render(member(body, name), message, KIND);
        let (alarm, state, reason) = (rendered("alarmName")?, rendered("stateValue")?, rendered("stateReason")?);
        let arn = self.cloudwatch.as_ref().map(|cw| cw.alarm_arn(&alarm)).unwrap_or_default();
        self.authorize(member(body, "roleArn"), "cloudwatch:SetAlarmState", &arn, KIND, &alarm)?;
        let (what, name) = (format!("SetAlarmState on alarm {alarm}"), alarm.clone());
        self.on_cloudwatch(KIND, &alarm, what, move |cw| cw.change_alarm_state(&name, &state, &reason)).await
    }

    /// Runs `call` on CloudWatch on the blocking pool; a refusal fails the action, its reason
    /// after `what`.
    async fn on_cloudwatch(
        &self,
        kind: &'static str,
        resource: &str,
        what: String,
        call: impl FnOnce(Arc<dyn CloudWatchSink>) -> Result<(), String> + Send + 'static,
    ) -> Result<(), Failure> {
        let Some(cloudwatch) = self.cloudwatch.clone() else {
            return Err(failure(kind, resource, "CloudWatch is not available"));
        };
        match tokio::task::spawn_blocking(move || call(cloudwatch)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(failure(kind, resource, &format!("{what}: {e}"))),
            Err(_) => Err(failure(kind, resource, "the CloudWatch call failed")),
        }
    }

    /// The action's role may do `action` on `resource` (assumed by the rules engine).
    fn authorize(
        &self,
        role_arn: &str,
        action: &str,
        resource: &str,
        kind: &'static str,
        failed_resource: &str,
    ) -> Result<(), Failure> {
        match self.iam.service_decides(role_arn, RULES_ENGINE_PRINCIPAL, action, resource) {
            Ok(Decision::Allow) => Ok(()),
            Ok(_) => Err(failure(
                kind,
                failed_resource,
                &format!("The role {role_arn} is not authorized to perform {action} on {resource}"),
            )),
            Err(e) => Err(failure(kind, failed_resource, &format!("Unable to assume role {role_arn}: {e}"))),
        }
    }
}

/// The broker-facing queue, taken by [`RulesEngine::run`].
#[derive(Debug)]
pub struct RulesQueue(mpsc::Receiver<Incoming>);

/// The rule's statement, parsed once per SQL text.
fn compiled(cache: &mut HashMap<String, (String, Arc<Statement>)>, rule: &TopicRule) -> Option<Arc<Statement>> {
    if let Some((sql, statement)) = cache.get(&rule.rule_name)
        && *sql == rule.sql
    {
        return Some(statement.clone());
    }
    match cloud_api::rules::parse(&rule.sql) {
        Ok(statement) => {
            let statement = Arc::new(statement);
            cache.insert(rule.rule_name.clone(), (rule.sql.clone(), statement.clone()));
            Some(statement)
        }
        Err(e) => {
            tracing::warn!(rule = %rule.rule_name, error = %e, "stored rule does not parse");
            None
        }
    }
}

/// Whether a message on `topic` reaches `rule`: a Basic Ingest topic reaches only the rule it
/// names; any other topic, the rules whose FROM filter matches it.
pub fn reaches(rule: &TopicRule, statement: &Statement, topic: &str) -> bool {
    match cloud_api::topic::basic_ingest_rule(topic) {
        Some(name) => name == rule.rule_name,
        None => statement.matches_topic(topic),
    }
}

/// An action's text member (empty when absent).
fn member<'a>(body: &'a Value, name: &str) -> &'a str {
    body.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// The kind an action names (`republish`, `cloudwatchMetric`, …).
fn action_kind(action: &Value) -> Option<&str> {
    action.as_object()?.iter().find(|(_, v)| !v.is_null()).map(|(k, _)| k.as_str())
}

/// A `cloudwatchMetric` member rendered to text, read as a finite number.
pub fn metric_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// IoT Core's error action message.
fn error_message(rule: &TopicRule, incoming_topic: &Incoming, trace_id: &str, failures: &[Failure]) -> Value {
    json!({
        "ruleName": rule.rule_name,
        "topic": incoming_topic.topic,
        "cloudwatchTraceId": trace_id,
        "clientId": incoming_topic.client_id.as_deref().unwrap_or("N/A"),
        "base64OriginalPayload": base64::engine::general_purpose::STANDARD.encode(&incoming_topic.payload),
        "failures": failures.iter().map(|f| json!({
            "failedAction": f.failed_action,
            "failedResource": f.failed_resource,
            "errorMessage": f.error_message,
        })).collect::<Vec<_>>(),
    })
}

fn render(template: &str, message: &cloud_api::rules::Message<'_>, kind: &'static str) -> Result<String, Failure> {
    let parsed =
        Template::parse(template).map_err(|e| failure(kind, template, &format!("template {template:?}: {e}")))?;
    parsed.render(message).map_err(|e| failure(kind, template, &format!("template {template:?}: {e}")))
}

fn failure(kind: &'static str, resource: &str, message: &str) -> Failure {
    Failure { failed_action: kind, failed_resource: resource.to_owned(), error_message: message.to_owned() }
}

fn rand_seed() -> u64 {
    let mut bytes = [0u8; 8];
    use ring::rand::SecureRandom as _;
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn metric_values_read_as_finite_numbers_only() {
        let cases = [
            ("1450", Some(1450.0)),
            (" 21.5 ", Some(21.5)),
            ("-3e2", Some(-300.0)),
            ("running", None),
            ("", None),
            ("NaN", None),
            ("inf", None),
            ("12 rpm", None),
        ];
        for (text, want) in cases {
            assert_eq!(metric_number(text), want, "{text:?}");
        }
    }

    #[test]
    fn messages_beyond_the_queue_limit_are_dropped_and_counted() {
        let rules = TopicRules::new(Store::in_memory().unwrap(), crate::time::system(), "us-east-1", "123456789012");
        let payload = super::super::TopicRulePayload {
            sql: "SELECT * FROM 'dt/#'".into(),
            actions: vec![json!({"republish": {"roleArn": "arn:aws:iam::123456789012:role/r", "topic": "out"}})],
            ..Default::default()
        };
        rules.create("r", payload).unwrap();
        let (tx, mut rx) = mpsc::channel(QUEUE_LIMIT);
        let stats: Arc<RuleStats> = Arc::default();
        let metrics: Arc<IotMetrics> = Arc::default();
        let tap = RulesTap { tx, clock: crate::time::system(), rules, stats: stats.clone(), metrics: metrics.clone() };
        for _ in 0..QUEUE_LIMIT + 5 {
            tap.observe(None, "dt/pump/p/telemetry", &Bytes::from_static(b"{}"));
        }
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 5);
        let throttled: Vec<_> = metrics
            .take()
            .into_iter()
            .filter(|s| s.name == "RuleMessageThrottled")
            .map(|s| (s.dimensions, s.count))
            .collect();
        assert_eq!(throttled, vec![(vec![("RuleName", "r".to_owned())], 5)], "one per message it would have reached");
        let mut queued = 0;
        while rx.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, QUEUE_LIMIT);
    }
}
