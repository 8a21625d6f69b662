//! Monitoring of the fleet from the cloud: the CloudWatch alarms an operator of the pump
//! stations wants, and what feeds them, deployed with the AWS SDK for Rust (`aws-sdk-iot`,
//! `aws-sdk-iam`, `aws-sdk-cloudwatch`), the same code for AWS and the local cloud.
//!
//! | alarm (prefix `pump`) | metric | fed by |
//! | --- | --- | --- |
//! | `pump-core-disconnected` | `IoTFleetMetrics` `pump-disconnected-cores` ≥ 1 for the whole period | a fleet metric: fleet indexing with thing connectivity, counting the group's disconnected things |
//! | `pump-core-unhealthy` | `PumpFleet` `UnhealthyCoreReports` ≥ 1 | rule `pump_core_health` on Greengrass fleet status (`$aws/things/+/greengrassv2/health/json`): 1 for an `UNHEALTHY` core (a component `BROKEN` or `ERRORED`), 0 for a `HEALTHY` one |
//! | `pump-telemetry-gap` | `PumpFleet` `TelemetryBatches` < 1 for the whole period | rule `pump_telemetry_flow` on `dt/pump/+/telemetry`, 1 per batch |
//! | `pump-rule-errors-{rule}-{ActionType}` | `AWS/IoT` `Failure` of the rule's actions of that type ≥ 1 | IoT Core's own rule metrics |
//! | `pump-rule-throttled-{rule}` | `AWS/IoT` `RuleMessageThrottled` of the rule ≥ 1 | IoT Core's own rule metrics: messages the rules engine dropped instead of running the rule |
//! | `pump-connect-auth-failures` | `AWS/IoT` `Connection.AuthNError` ≥ N in 5 minutes | IoT Core's authentication metrics |
//! | `pump-publish-authz-failures` | `AWS/IoT` `PublishIn.AuthError` ≥ N in 5 minutes | IoT Core's protocol metrics |
//! | `pump-certificate-expiring` | `PumpFleet` `CertificateDaysLeft` < D | [`publish_certificate_expiry`], run daily |
//!
//! The two rules run under one role allowed `cloudwatch:PutMetricData` and publishing their own
//! errors to `ops/rules/{rule}/errors` (as the application's rules do). CloudWatch gives
//! `PutMetricData` no resource-level permission; on AWS a `cloudwatch:namespace` condition
//! narrows it further, which the local cloud's IAM does not evaluate, so the role goes without.
//!
//! What the alarms do not tell: which core. The disconnected count comes from fleet indexing, so
//! `SearchIndex` with the fleet metric's query names the cores; an unhealthy core is named by
//! Greengrass's `ListCoreDevices --status UNHEALTHY`. `pump-core-unhealthy` follows the latest
//! fleet status reports (missing data keeps its state): a healthy report of another core in a
//! period of its own clears it while a broken core stays broken, until that core's next report —
//! the nucleus repeats its fleet status on a cadence, which bounds the gap. The certificate alarm
//! needs [`publish_certificate_expiry`] on a schedule (EventBridge Scheduler on AWS, cron here);
//! on AWS, Device Defender's `DEVICE_CERTIFICATE_EXPIRING_CHECK` is the managed alternative.
//! No alarm action is set unless given (an SNS topic ARN on AWS; the local cloud has no SNS).

use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, MetricAlarm, MetricDatum, StandardUnit, Statistic};
use aws_sdk_iot::types::{
    Action, AggregationType, AggregationTypeName, CloudwatchMetricAction, FleetMetricUnit,
    ThingConnectivityIndexingMode, ThingIndexingConfiguration, ThingIndexingMode,
};
use serde_json::json;

use crate::app::{IOT, ROLE_POLICY_NAME, build_error, ensure_rule, error_topic, rule_payload, trust};
use crate::audit::checks::{CertificateSnapshot, not_after};
use crate::error::{ProvisionError, aws, is_code};
use crate::policy::AccountScope;
use crate::token_exchange::{ensure_role, ensure_role_policy};

/// The CloudWatch namespace of the metrics the rules and the certificate check publish.
pub const NAMESPACE: &str = "PumpFleet";
/// The namespace AWS IoT publishes fleet metrics in.
pub const FLEET_METRICS_NAMESPACE: &str = "IoTFleetMetrics";
/// The dimension of a fleet metric's datapoints naming the aggregation value (`count`, …).
pub const FLEET_METRIC_DIMENSION: &str = "Aggregation Type";
/// The namespace of AWS IoT's own metrics.
pub const IOT_NAMESPACE: &str = "AWS/IoT";
/// The fleet index of things.
pub const THINGS_INDEX: &str = "AWS_Things";
/// The fleet metric's period: AWS's shortest (a fleet metric's period is 60 s to a day).
pub const FLEET_METRIC_PERIOD_SECS: i32 = 60;
/// The period of the authorization-failure alarms: a burst is counted over five minutes.
pub const AUTH_FAILURE_PERIOD_SECS: i32 = 300;

/// What to watch and how soon to raise the alarm.
#[derive(Debug, Clone)]
pub struct MonitoringSpec {
    /// Prefix of every resource name (letters, digits, `-`).
    pub prefix: String,
    /// The thing group of the cores.
    pub group: String,
    /// The period of the alarms, seconds: 10, 30 or a multiple of 60 (CloudWatch's rule).
    pub period_secs: i32,
    /// A core disconnected this long raises `…-core-disconnected`.
    pub disconnected_secs: i32,
    /// No telemetry batch from the whole fleet for this long raises `…-telemetry-gap`.
    pub telemetry_gap_secs: i32,
    /// Rules whose action failures raise `…-rule-errors-{rule}`.
    pub watched_rules: Vec<String>,
    /// Authentication or authorization failures in five minutes that make a burst.
    pub auth_failures: u32,
    /// A certificate of a core expiring within this many days raises `…-certificate-expiring`.
    pub certificate_days: u32,
    /// Alarm actions (SNS topic ARNs on AWS), for ALARM and back to OK.
    pub alarm_actions: Vec<String>,
}

impl MonitoringSpec {
    fn validate(&self) -> Result<(), ProvisionError> {
        crate::app::validate_prefix(&self.prefix)?;
        if self.group.is_empty() {
            return Err(ProvisionError::InvalidInput("the thing group of the cores is needed".into()));
        }
        if !(matches!(self.period_secs, 10 | 30) || (self.period_secs >= 60 && self.period_secs % 60 == 0)) {
            return Err(ProvisionError::InvalidInput(format!(
                "an alarm period is 10, 30 or a multiple of 60 seconds, not {}",
                self.period_secs
            )));
        }
        for (what, secs) in [("disconnected", self.disconnected_secs), ("telemetry gap", self.telemetry_gap_secs)] {
            if secs < self.period_secs || periods(secs, self.period_secs) * self.period_secs > 86_400 {
                return Err(ProvisionError::InvalidInput(format!(
                    "the {what} time is at least one period ({} s) and at most a day, not {secs} s",
                    self.period_secs
                )));
            }
        }
        if self.auth_failures == 0 || self.certificate_days == 0 {
            return Err(ProvisionError::InvalidInput(
                "the authorization-failure burst and the certificate-expiry days are at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The names of the resources.
    pub fn names(&self) -> MonitoringNames {
        let p = &self.prefix;
        MonitoringNames {
            fleet_metric: format!("{p}-disconnected-cores"),
            health_rule: crate::app::rule_name(p, "core_health"),
            telemetry_rule: crate::app::rule_name(p, "telemetry_flow"),
            rule_role: format!("{p}-monitoring-rules"),
            disconnected_alarm: format!("{p}-core-disconnected"),
            unhealthy_alarm: format!("{p}-core-unhealthy"),
            telemetry_gap_alarm: format!("{p}-telemetry-gap"),
            certificate_alarm: format!("{p}-certificate-expiring"),
        }
    }
}

/// The names of the monitoring resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitoringNames {
    /// The fleet metric counting the group's disconnected cores.
    pub fleet_metric: String,
    /// The rule turning fleet status into `UnhealthyCoreReports`.
    pub health_rule: String,
    /// The rule counting telemetry batches.
    pub telemetry_rule: String,
    /// The role of both rules.
    pub rule_role: String,
    /// Alarm: a core disconnected.
    pub disconnected_alarm: String,
    /// Alarm: a core unhealthy.
    pub unhealthy_alarm: String,
    /// Alarm: no telemetry.
    pub telemetry_gap_alarm: String,
    /// Alarm: a certificate expiring.
    pub certificate_alarm: String,
}

/// The query of the things of `group` that are not connected.
pub fn disconnected_query(group: &str) -> String {
    format!("thingGroupNames:{group} AND connectivity.connected:false")
}

/// The alarm on the failures of one kind of action of a rule (IoT Core counts `Failure` by rule
/// and action type).
pub fn rule_errors_alarm(prefix: &str, rule: &str, action_type: &str) -> String {
    format!("{prefix}-rule-errors-{rule}-{action_type}")
}

/// The alarm on messages the rules engine dropped (throttled) instead of running a rule.
pub fn rule_throttled_alarm(prefix: &str, rule: &str) -> String {
    format!("{prefix}-rule-throttled-{rule}")
}

/// The alarm on a burst of one of IoT Core's authentication or authorization errors.
pub fn auth_failures_alarm(prefix: &str, metric: &str) -> String {
    let what = if metric.starts_with("Connection.") { "connect-auth-failures" } else { "publish-authz-failures" };
    format!("{prefix}-{what}")
}

/// The `ActionType` dimension IoT Core counts an action under, for the actions this solution
/// uses and a few common others; `None` for one not known here.
pub fn action_type(action: &Action) -> Option<&'static str> {
    let kinds = [
        (action.republish().is_some(), "Republish"),
        (action.lambda().is_some(), "Lambda"),
        (action.dynamo_dbv2().is_some(), "DynamoDBv2"),
        (action.dynamo_db().is_some(), "DynamoDB"),
        (action.s3().is_some(), "S3"),
        (action.cloudwatch_metric().is_some(), "CloudwatchMetric"),
        (action.cloudwatch_alarm().is_some(), "CloudwatchAlarm"),
        (action.cloudwatch_logs().is_some(), "CloudwatchLogs"),
        (action.sns().is_some(), "SNS"),
        (action.sqs().is_some(), "SQS"),
        (action.kinesis().is_some(), "Kinesis"),
        (action.firehose().is_some(), "Firehose"),
        (action.http().is_some(), "HTTP"),
    ];
    kinds.into_iter().find_map(|(set, name)| set.then_some(name))
}

/// A rule whose failures are alarmed, with the action types it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedRule {
    /// The rule's name.
    pub rule: String,
    /// Its actions' types, each once.
    pub action_types: Vec<&'static str>,
}

/// Whole periods covering `secs`.
fn periods(secs: i32, period: i32) -> i32 {
    (secs + period - 1) / period
}

/// One alarm as it is put.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmSpec {
    /// Name.
    pub name: String,
    /// What it means for an operator.
    pub description: String,
    /// Metric namespace.
    pub namespace: String,
    /// Metric name.
    pub metric: String,
    /// Dimensions, name and value.
    pub dimensions: Vec<(String, String)>,
    /// Statistic over each period.
    pub statistic: Statistic,
    /// Period, seconds.
    pub period: i32,
    /// Periods evaluated, all of which must breach.
    pub evaluation_periods: i32,
    /// The threshold.
    pub threshold: f64,
    /// How the statistic compares with it.
    pub comparison: ComparisonOperator,
    /// `breaching`, `notBreaching`, `ignore` or `missing`.
    pub treat_missing_data: &'static str,
}

/// Every alarm of the spec, pure.
pub fn alarms(spec: &MonitoringSpec, watched: &[WatchedRule]) -> Vec<AlarmSpec> {
    let names = spec.names();
    let p = spec.period_secs;
    let alarm = |name: &str, description: String, namespace: &str, metric: &str| AlarmSpec {
        name: name.to_owned(),
        description,
        namespace: namespace.to_owned(),
        metric: metric.to_owned(),
        dimensions: Vec::new(),
        statistic: Statistic::Maximum,
        period: p,
        evaluation_periods: 1,
        threshold: 1.0,
        comparison: ComparisonOperator::GreaterThanOrEqualToThreshold,
        treat_missing_data: "notBreaching",
    };
    let mut out = vec![
        AlarmSpec {
            dimensions: vec![(FLEET_METRIC_DIMENSION.into(), "count".into())],
            evaluation_periods: periods(spec.disconnected_secs, p),
            treat_missing_data: "missing",
            ..alarm(
                &names.disconnected_alarm,
                format!(
                    "A core of {} has been disconnected for {} s or more: SearchIndex \"{}\" names it.",
                    spec.group,
                    spec.disconnected_secs,
                    disconnected_query(&spec.group)
                ),
                FLEET_METRICS_NAMESPACE,
                &names.fleet_metric,
            )
        },
        AlarmSpec {
            treat_missing_data: "ignore",
            ..alarm(
                &names.unhealthy_alarm,
                "A core reported UNHEALTHY fleet status (a component BROKEN or ERRORED): Greengrass \
                 ListCoreDevices with status UNHEALTHY names it."
                    .into(),
                NAMESPACE,
                "UnhealthyCoreReports",
            )
        },
        AlarmSpec {
            statistic: Statistic::SampleCount,
            evaluation_periods: periods(spec.telemetry_gap_secs, p),
            comparison: ComparisonOperator::LessThanThreshold,
            treat_missing_data: "breaching",
            ..alarm(
                &names.telemetry_gap_alarm,
                format!("No pump telemetry has reached IoT Core for {} s.", spec.telemetry_gap_secs),
                NAMESPACE,
                "TelemetryBatches",
            )
        },
        AlarmSpec {
            statistic: Statistic::Minimum,
            period: 86_400,
            comparison: ComparisonOperator::LessThanThreshold,
            threshold: f64::from(spec.certificate_days),
            treat_missing_data: "missing",
            ..alarm(
                &names.certificate_alarm,
                format!(
                    "A core's certificate expires within {} days: `provision rotate --expiring-within {}` rotates it.",
                    spec.certificate_days, spec.certificate_days
                ),
                NAMESPACE,
                "CertificateDaysLeft",
            )
        },
    ];
    for WatchedRule { rule, action_types } in watched {
        out.push(AlarmSpec {
            dimensions: vec![("RuleName".into(), rule.clone())],
            statistic: Statistic::Sum,
            ..alarm(
                &rule_throttled_alarm(&spec.prefix, rule),
                format!(
                    "Messages for rule {rule} were dropped (throttled) before the rule ran: data the rule \
                     should have delivered is lost."
                ),
                IOT_NAMESPACE,
                "RuleMessageThrottled",
            )
        });
        for action_type in action_types {
            out.push(AlarmSpec {
                dimensions: vec![("ActionType".into(), (*action_type).into()), ("RuleName".into(), rule.clone())],
                statistic: Statistic::Sum,
                ..alarm(
                    &rule_errors_alarm(&spec.prefix, rule, action_type),
                    format!(
                        "Rule {rule} failed its {action_type} action: its error action publishes the details to {}.",
                        error_topic(rule)
                    ),
                    IOT_NAMESPACE,
                    "Failure",
                )
            });
        }
    }
    for metric in ["Connection.AuthNError", "PublishIn.AuthError"] {
        out.push(AlarmSpec {
            dimensions: vec![("Protocol".into(), "MQTT".into())],
            statistic: Statistic::Sum,
            period: AUTH_FAILURE_PERIOD_SECS,
            threshold: f64::from(spec.auth_failures),
            ..alarm(
                &auth_failures_alarm(&spec.prefix, metric),
                format!(
                    "{} or more {metric} in five minutes: a device with a bad certificate or a policy that \
                     refuses it, or someone trying.",
                    spec.auth_failures
                ),
                IOT_NAMESPACE,
                metric,
            )
        });
    }
    out
}

/// The rules' role: metric data, and their own error topics.
pub fn monitoring_rule_policy(scope: &AccountScope, rules: &[&str]) -> String {
    let topics: Vec<String> = rules
        .iter()
        .map(|rule| {
            format!("arn:{}:iot:{}:{}:topic/{}", scope.partition, scope.region, scope.account_id, error_topic(rule))
        })
        .collect();
    json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "FleetMetrics", "Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"},
        {"Sid": "ErrorAction", "Effect": "Allow", "Action": "iot:Publish", "Resource": topics},
    ]})
    .to_string()
}

/// The least whole days left before any of `certificates` attached to one of `things` expires
/// (ACTIVE ones only); `None` when there is none. An expired certificate counts as 0 days, one
/// whose expiry cannot be read as well: it cannot be trusted to last.
pub fn days_left(certificates: &[CertificateSnapshot], things: &[String], now: i64) -> Option<f64> {
    certificates
        .iter()
        .filter(|c| c.status == "ACTIVE" && c.things.iter().any(|t| things.contains(t)))
        .map(|c| match not_after(c) {
            Ok(end) => ((end - now).max(0) / 86_400) as f64,
            Err(_) => 0.0,
        })
        .min_by(f64::total_cmp)
}

/// The clients monitoring uses.
#[derive(Debug, Clone)]
pub struct MonitoringClients {
    /// IoT control plane (indexing, fleet metric, rules, groups, certificates).
    pub iot: aws_sdk_iot::Client,
    /// IAM (the rules' role).
    pub iam: aws_sdk_iam::Client,
    /// CloudWatch (alarms, the certificate metric).
    pub cloudwatch: aws_sdk_cloudwatch::Client,
}

/// What a deployment left.
#[derive(Debug, Clone)]
pub struct MonitoringDeployment {
    /// The names.
    pub names: MonitoringNames,
    /// Every alarm's name.
    pub alarms: Vec<String>,
    /// What this run changed, one line each; empty when everything was in place.
    pub changes: Vec<String>,
}

/// Deploys (or brings up to date) the monitoring of the fleet.
pub async fn deploy_monitoring(
    clients: &MonitoringClients,
    spec: &MonitoringSpec,
) -> Result<MonitoringDeployment, ProvisionError> {
    spec.validate()?;
    let names = spec.names();
    let mut changes = Vec::new();

    let group = clients
        .iot
        .describe_thing_group()
        .thing_group_name(&spec.group)
        .send()
        .await
        .map_err(aws("DescribeThingGroup"))?;
    let group_arn = group.thing_group_arn().unwrap_or_default();
    let scope = AccountScope::from_arn(group_arn).ok_or_else(|| {
        ProvisionError::unexpected("DescribeThingGroup", format!("thing group ARN {group_arn:?} is not an ARN"))
    })?;

    ensure_connectivity_indexing(&clients.iot, &mut changes).await?;
    ensure_fleet_metric(&clients.iot, &names.fleet_metric, &disconnected_query(&spec.group), &mut changes).await?;

    let rules = [
        (
            &names.health_rule,
            "SELECT topic(3) AS thing, overallDeviceStatus FROM '$aws/things/+/greengrassv2/health/json'",
            "Greengrass fleet status to the UnhealthyCoreReports metric: 1 for an UNHEALTHY core, 0 for a HEALTHY one",
            "UnhealthyCoreReports",
            "${CASE overallDeviceStatus WHEN 'UNHEALTHY' THEN 1 ELSE 0 END}",
        ),
        (
            &names.telemetry_rule,
            "SELECT topic(3) AS thing FROM 'dt/pump/+/telemetry'",
            "Each pump telemetry batch counted in the TelemetryBatches metric",
            "TelemetryBatches",
            "1",
        ),
    ];
    let role = ensure_role(
        &clients.iam,
        &names.rule_role,
        &trust(IOT),
        "Pump fleet monitoring rules: metric data, their error actions",
        &mut changes,
    )
    .await?;
    if ensure_role_policy(
        &clients.iam,
        &names.rule_role,
        ROLE_POLICY_NAME,
        &monitoring_rule_policy(&scope, &rules.map(|r| r.0.as_str())),
    )
    .await?
    {
        changes.push(format!("role {} allows only what its rules do", names.rule_role));
    }
    let metric_action = |metric: &str, value: &str| -> Result<Action, ProvisionError> {
        Ok(Action::builder()
            .cloudwatch_metric(
                CloudwatchMetricAction::builder()
                    .role_arn(&role)
                    .metric_namespace(NAMESPACE)
                    .metric_name(metric)
                    .metric_value(value)
                    .metric_unit("Count")
                    .build()
                    .map_err(build_error)?,
            )
            .build())
    };
    for (rule, sql, description, metric, value) in rules {
        let payload = rule_payload(sql, description, vec![metric_action(metric, value)?], &role, rule)?;
        ensure_rule(&clients.iot, rule, payload, &mut changes).await?;
    }

    let mut watched = Vec::new();
    for rule in &spec.watched_rules {
        let got = clients.iot.get_topic_rule().rule_name(rule).send().await.map_err(aws("GetTopicRule"));
        // IoT Core answers GetTopicRule for a missing rule with UnauthorizedException.
        if is_code(&got, "UnauthorizedException") {
            return Err(ProvisionError::InvalidInput(format!(
                "rule {rule} does not exist: deploy it first (provision app), or do not watch it"
            )));
        }
        let actions = got?.rule.map(|r| r.actions().to_vec()).unwrap_or_default();
        let mut action_types: Vec<&'static str> = actions.iter().filter_map(action_type).collect();
        action_types.sort_unstable();
        action_types.dedup();
        watched.push(WatchedRule { rule: rule.clone(), action_types });
    }
    let wanted = alarms(spec, &watched);
    let existing = clients
        .cloudwatch
        .describe_alarms()
        .alarm_name_prefix(format!("{}-", spec.prefix))
        .max_records(100)
        .send()
        .await
        .map_err(aws("DescribeAlarms"))?;
    for alarm in &wanted {
        let current = existing.metric_alarms().iter().find(|a| a.alarm_name() == Some(alarm.name.as_str()));
        if current.is_some_and(|c| same_alarm(c, alarm, &spec.alarm_actions)) {
            continue;
        }
        put_alarm(&clients.cloudwatch, alarm, &spec.alarm_actions).await?;
        changes.push(format!("alarm {} {}", alarm.name, if current.is_some() { "updated" } else { "created" }));
    }
    Ok(MonitoringDeployment { names, alarms: wanted.into_iter().map(|a| a.name).collect(), changes })
}

fn same_alarm(current: &MetricAlarm, wanted: &AlarmSpec, actions: &[String]) -> bool {
    let dimensions: Vec<(String, String)> = current
        .dimensions()
        .iter()
        .map(|d| (d.name().unwrap_or_default().to_owned(), d.value().unwrap_or_default().to_owned()))
        .collect();
    current.alarm_description() == Some(wanted.description.as_str())
        && current.namespace() == Some(wanted.namespace.as_str())
        && current.metric_name() == Some(wanted.metric.as_str())
        && dimensions == wanted.dimensions
        && current.statistic() == Some(&wanted.statistic)
        && current.period() == Some(wanted.period)
        && current.evaluation_periods() == Some(wanted.evaluation_periods)
        && current.threshold() == Some(wanted.threshold)
        && current.comparison_operator() == Some(&wanted.comparison)
        && current.treat_missing_data() == Some(wanted.treat_missing_data)
        && current.alarm_actions() == actions
        && current.ok_actions() == actions
}

async fn put_alarm(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    alarm: &AlarmSpec,
    actions: &[String],
) -> Result<(), ProvisionError> {
    let dimensions = alarm
        .dimensions
        .iter()
        .map(|(name, value)| Dimension::builder().name(name).value(value).build())
        .collect::<Vec<_>>();
    cloudwatch
        .put_metric_alarm()
        .alarm_name(&alarm.name)
        .alarm_description(&alarm.description)
        .namespace(&alarm.namespace)
        .metric_name(&alarm.metric)
        .set_dimensions(Some(dimensions))
        .statistic(alarm.statistic.clone())
        .period(alarm.period)
        .evaluation_periods(alarm.evaluation_periods)
        .datapoints_to_alarm(alarm.evaluation_periods)
        .threshold(alarm.threshold)
        .comparison_operator(alarm.comparison.clone())
        .treat_missing_data(alarm.treat_missing_data)
        .actions_enabled(!actions.is_empty())
        .set_alarm_actions(Some(actions.to_vec()))
        .set_ok_actions(Some(actions.to_vec()))
        .send()
        .await
        .map_err(aws("PutMetricAlarm"))?;
    Ok(())
}

/// Thing indexing on (the registry, at least) with connectivity status, keeping what is already
/// indexed beyond it.
async fn ensure_connectivity_indexing(
    iot: &aws_sdk_iot::Client,
    changes: &mut Vec<String>,
) -> Result<(), ProvisionError> {
    let current = iot.get_indexing_configuration().send().await.map_err(aws("GetIndexingConfiguration"))?;
    let things = current.thing_indexing_configuration();
    let mode = things.map(|t| t.thing_indexing_mode().clone()).unwrap_or(ThingIndexingMode::Off);
    let connectivity = things.and_then(|t| t.thing_connectivity_indexing_mode().cloned());
    if mode != ThingIndexingMode::Off && connectivity == Some(ThingConnectivityIndexingMode::Status) {
        return Ok(());
    }
    let mode = if mode == ThingIndexingMode::Off { ThingIndexingMode::Registry } else { mode };
    let mut wanted = ThingIndexingConfiguration::builder()
        .thing_indexing_mode(mode)
        .thing_connectivity_indexing_mode(ThingConnectivityIndexingMode::Status);
    if let Some(t) = things {
        wanted = wanted
            .set_device_defender_indexing_mode(t.device_defender_indexing_mode().cloned())
            .set_named_shadow_indexing_mode(t.named_shadow_indexing_mode().cloned())
            .set_filter(t.filter().cloned())
            .set_managed_fields(Some(t.managed_fields().to_vec()))
            .set_custom_fields(Some(t.custom_fields().to_vec()));
    }
    iot.update_indexing_configuration()
        .thing_indexing_configuration(wanted.build().map_err(build_error)?)
        .send()
        .await
        .map_err(aws("UpdateIndexingConfiguration"))?;
    changes.push("fleet indexing: things with connectivity status".into());
    Ok(())
}

async fn ensure_fleet_metric(
    iot: &aws_sdk_iot::Client,
    name: &str,
    query: &str,
    changes: &mut Vec<String>,
) -> Result<(), ProvisionError> {
    let count = || AggregationType::builder().name(AggregationTypeName::Statistics).values("count").build();
    let described = iot.describe_fleet_metric().metric_name(name).send().await.map_err(aws("DescribeFleetMetric"));
    if is_code(&described, "ResourceNotFoundException") {
        iot.create_fleet_metric()
            .metric_name(name)
            .query_string(query)
            .aggregation_type(count().map_err(build_error)?)
            .aggregation_field("registry.version")
            .period(FLEET_METRIC_PERIOD_SECS)
            .index_name(THINGS_INDEX)
            .unit(FleetMetricUnit::Count)
            .description("Disconnected cores of the group")
            .send()
            .await
            .map_err(aws("CreateFleetMetric"))?;
        changes.push(format!("fleet metric {name} created"));
        return Ok(());
    }
    let current = described?;
    if current.query_string() != Some(query) || current.period() != Some(FLEET_METRIC_PERIOD_SECS) {
        iot.update_fleet_metric()
            .metric_name(name)
            .query_string(query)
            .aggregation_type(count().map_err(build_error)?)
            .aggregation_field("registry.version")
            .period(FLEET_METRIC_PERIOD_SECS)
            .index_name(THINGS_INDEX)
            .send()
            .await
            .map_err(aws("UpdateFleetMetric"))?;
        changes.push(format!("fleet metric {name} updated"));
    }
    Ok(())
}

/// Publishes the least days left on the certificates of the group's things
/// (`CertificateDaysLeft`), which `…-certificate-expiring` watches; returns it (`None` when no
/// thing of the group has an active certificate, and nothing is published).
pub async fn publish_certificate_expiry(
    clients: &MonitoringClients,
    group: &str,
) -> Result<Option<f64>, ProvisionError> {
    let things = crate::device::things_in_group(&clients.iot, group).await?;
    let certificates = crate::audit::read_certificates(&clients.iot).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let Some(days) = days_left(&certificates, &things, now) else { return Ok(None) };
    clients
        .cloudwatch
        .put_metric_data()
        .namespace(NAMESPACE)
        .metric_data(
            MetricDatum::builder().metric_name("CertificateDaysLeft").value(days).unit(StandardUnit::Count).build(),
        )
        .send()
        .await
        .map_err(aws("PutMetricData"))?;
    Ok(Some(days))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> MonitoringSpec {
        MonitoringSpec {
            prefix: "pump".into(),
            group: "pump-sites".into(),
            period_secs: 60,
            disconnected_secs: 300,
            telemetry_gap_secs: 600,
            watched_rules: vec!["pump_anomalies".into(), "pump_telemetry".into()],
            auth_failures: 20,
            certificate_days: 30,
            alarm_actions: Vec::new(),
        }
    }

    fn watched() -> Vec<WatchedRule> {
        vec![
            WatchedRule { rule: "pump_anomalies".into(), action_types: vec!["Lambda"] },
            WatchedRule { rule: "pump_telemetry".into(), action_types: vec!["Lambda", "S3"] },
        ]
    }

    fn alarm<'a>(all: &'a [AlarmSpec], name: &str) -> &'a AlarmSpec {
        all.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no alarm {name}"))
    }

    #[test]
    fn a_core_disconnected_for_five_minutes_takes_five_breaching_minutes() {
        let all = alarms(&spec(), &watched());
        let a = alarm(&all, "pump-core-disconnected");
        assert_eq!((a.namespace.as_str(), a.metric.as_str()), (FLEET_METRICS_NAMESPACE, "pump-disconnected-cores"));
        assert_eq!((a.period, a.evaluation_periods, a.threshold), (60, 5, 1.0));
        assert!(a.description.contains("thingGroupNames:pump-sites AND connectivity.connected:false"));
        let mut odd = spec();
        odd.disconnected_secs = 90;
        assert_eq!(
            alarm(&alarms(&odd, &[]), "pump-core-disconnected").evaluation_periods,
            2,
            "rounded up to whole periods"
        );
    }

    #[test]
    fn a_telemetry_gap_is_missing_data_breaching_and_an_unhealthy_core_latches() {
        let all = alarms(&spec(), &watched());
        let gap = alarm(&all, "pump-telemetry-gap");
        assert_eq!((gap.treat_missing_data, gap.evaluation_periods), ("breaching", 10));
        assert_eq!(gap.comparison, ComparisonOperator::LessThanThreshold);
        let unhealthy = alarm(&all, "pump-core-unhealthy");
        assert_eq!(unhealthy.treat_missing_data, "ignore", "no report keeps the last state");
        assert_eq!(unhealthy.statistic, Statistic::Maximum);
    }

    #[test]
    fn every_action_of_a_watched_rule_and_both_auth_errors_have_an_alarm() {
        let all = alarms(&spec(), &watched());
        let rule = alarm(&all, "pump-rule-errors-pump_telemetry-S3");
        assert_eq!((rule.namespace.as_str(), rule.metric.as_str()), (IOT_NAMESPACE, "Failure"));
        assert_eq!(
            rule.dimensions,
            vec![("ActionType".to_owned(), "S3".to_owned()), ("RuleName".to_owned(), "pump_telemetry".to_owned())]
        );
        alarm(&all, "pump-rule-errors-pump_telemetry-Lambda");
        alarm(&all, "pump-rule-errors-pump_anomalies-Lambda");
        let connect = alarm(&all, "pump-connect-auth-failures");
        assert_eq!((connect.metric.as_str(), connect.period, connect.threshold), ("Connection.AuthNError", 300, 20.0));
        assert_eq!(alarm(&all, "pump-publish-authz-failures").metric, "PublishIn.AuthError");
        let throttled = alarm(&all, "pump-rule-throttled-pump_telemetry");
        assert_eq!((throttled.metric.as_str(), throttled.statistic.clone()), ("RuleMessageThrottled", Statistic::Sum));
        assert_eq!(throttled.dimensions, vec![("RuleName".to_owned(), "pump_telemetry".to_owned())]);
        alarm(&all, "pump-rule-throttled-pump_anomalies");
        assert_eq!(all.len(), 4 + 3 + 2 + 2);
        let names: std::collections::BTreeSet<_> = all.iter().map(|a| &a.name).collect();
        assert_eq!(names.len(), all.len(), "names are distinct");
    }

    #[test]
    fn an_actions_type_is_what_iot_core_counts_it_under() {
        let lambda = Action::builder()
            .lambda(aws_sdk_iot::types::LambdaAction::builder().function_arn("f").build().unwrap())
            .build();
        assert_eq!(action_type(&lambda), Some("Lambda"));
        let s3 = Action::builder()
            .s3(aws_sdk_iot::types::S3Action::builder().role_arn("r").bucket_name("b").key("k").build().unwrap())
            .build();
        assert_eq!(action_type(&s3), Some("S3"));
        assert_eq!(action_type(&Action::builder().build()), None);
    }

    #[test]
    fn bad_specs_are_refused_before_anything_is_created() {
        type Change = fn(&mut MonitoringSpec);
        let cases: [(&str, Change); 6] = [
            ("prefix", |s| s.prefix = "9".into()),
            ("group", |s| s.group.clear()),
            ("period", |s| s.period_secs = 45),
            ("disconnected", |s| s.disconnected_secs = 5),
            ("telemetry gap", |s| s.telemetry_gap_secs = 200_000),
            ("at least 1", |s| s.auth_failures = 0),
        ];
        for (what, change) in cases {
            let mut s = spec();
            change(&mut s);
            match s.validate() {
                Err(ProvisionError::InvalidInput(m)) => assert!(m.contains(what), "{what}: {m}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        assert!(spec().validate().is_ok());
        let mut fast = spec();
        fast.period_secs = 10;
        fast.disconnected_secs = 10;
        fast.telemetry_gap_secs = 30;
        assert!(fast.validate().is_ok(), "high-resolution periods are CloudWatch's too");
    }

    #[test]
    fn the_rules_role_puts_metrics_and_publishes_only_their_errors() {
        let scope =
            AccountScope { partition: "aws".into(), region: "eu-west-1".into(), account_id: "111122223333".into() };
        let doc: serde_json::Value =
            serde_json::from_str(&monitoring_rule_policy(&scope, &["pump_core_health", "pump_telemetry_flow"]))
                .unwrap();
        assert_eq!(doc["Statement"][0]["Action"], "cloudwatch:PutMetricData");
        assert_eq!(
            doc["Statement"][1]["Resource"],
            json!([
                "arn:aws:iot:eu-west-1:111122223333:topic/ops/rules/pump_core_health/errors",
                "arn:aws:iot:eu-west-1:111122223333:topic/ops/rules/pump_telemetry_flow/errors"
            ])
        );
    }

    #[test]
    fn days_left_is_the_least_over_the_groups_active_certificates() {
        let now = 1_000_000_000;
        let cert = |id: &str, status: &str, days: i64, thing: &str| CertificateSnapshot {
            id: id.into(),
            status: status.into(),
            not_after: Some(now + days * 86_400 + 3_600),
            pem: None,
            things: vec![thing.into()],
        };
        let certs = vec![
            cert("a", "ACTIVE", 90, "core-1"),
            cert("b", "ACTIVE", 12, "core-2"),
            cert("c", "INACTIVE", 1, "core-1"),
            cert("d", "ACTIVE", 3, "elsewhere"),
        ];
        let group = vec!["core-1".to_owned(), "core-2".to_owned()];
        assert_eq!(days_left(&certs, &group, now), Some(12.0));
        assert_eq!(days_left(&certs, &["core-1".to_owned()], now), Some(90.0));
        assert_eq!(days_left(&certs, &["nobody".to_owned()], now), None);
        let expired = vec![cert("e", "ACTIVE", -3, "core-1")];
        assert_eq!(days_left(&expired, &group, now), Some(0.0));
    }
}
