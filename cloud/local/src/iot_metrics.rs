//! AWS IoT Core's own CloudWatch metrics, in the `AWS/IoT` namespace ("AWS IoT metrics and
//! dimensions" in the AWS IoT Core Developer Guide): what the broker and the rules engine count,
//! and the task that hands the counts to CloudWatch once per interval (AWS: every minute).
//!
//! This is the narrow interface between IoT Core and CloudWatch: the broker and the rules engine
//! see only [`IotMetrics`] (counters), and the flush sees only a [`ServiceMetricStore`] (which
//! CloudWatch implements). Counting is cheap on the broker's hot path: one relaxed atomic add per
//! operation for the protocol metrics; the rule metrics, counted by the engine's single task, go
//! into a small map behind a mutex.
//!
//! Every metric is a `Count` with statistic `Sum`, one datapoint per metric and dimension set per
//! flush in which it happened (nothing is written for a metric that did not happen, as on AWS).
//!
//! | metric | dimensions | counted when |
//! | --- | --- | --- |
//! | `Connect.Success` | `Protocol` | a CONNECT is accepted |
//! | `Connect.AuthError` | `Protocol` | a CONNECT is refused by the policies (`iot:Connect`, the will's `iot:Publish`) |
//! | `Connect.ClientError` | `Protocol` | a CONNECT breaks IoT Core's rules (client id, will topic, QoS 2 will, enhanced auth, bad CONNECT) |
//! | `Connection.AuthNError` | `Protocol` | a client certificate fails authentication (not from the CA, not registered, not ACTIVE) |
//! | `PublishIn.Success` | `Protocol` | a client's PUBLISH (MQTT) or a data-plane Publish (HTTP) is accepted |
//! | `PublishIn.AuthError` | `Protocol` | a PUBLISH is denied by the policies |
//! | `PublishIn.ClientError` | `Protocol` | a PUBLISH breaks IoT Core's limits (topic, payload size, QoS 2) |
//! | `Subscribe.Success` | `Protocol` | a SUBSCRIBE whose every filter was granted |
//! | `Subscribe.AuthError` | `Protocol` | a SUBSCRIBE with a filter the policies deny |
//! | `Subscribe.ClientError` | `Protocol` | a SUBSCRIBE with an invalid filter or over the subscription limit |
//! | `Unsubscribe.Success` | `Protocol` | an UNSUBSCRIBE |
//! | `Ping.Success` | `Protocol` | a PINGREQ |
//! | `TopicMatch` | `RuleName` | a message reaches a rule (its FROM filter matches, or Basic Ingest names it) |
//! | `ParseError` | `RuleName` | the rule reads a key of a payload that is not JSON |
//! | `RuleNotFound` | `RuleName` | a Basic Ingest topic names a rule that does not exist |
//! | `RuleMessageThrottled` | `RuleName` | a message for the rule was dropped because the rules engine's queue was full (once per enabled rule it would have reached) |
//! | `RulesExecuted` | none | a rule's WHERE clause held and its actions ran |
//! | `Success`, `Failure` | `RuleName`, `ActionType` | a rule action succeeded or failed |
//! | `ErrorActionSuccess`, `ErrorActionFailure` | `RuleName`, `ActionType` | a rule's error action succeeded or failed |

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::time::SharedClock;

/// The namespace AWS IoT publishes its metrics in.
pub const NAMESPACE: &str = "AWS/IoT";

/// The protocol a broker metric's `Protocol` dimension names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT (3.1.1 or 5) over TLS.
    Mqtt,
    /// HTTPS (the data plane's Publish).
    Http,
}

impl Protocol {
    const ALL: [Protocol; 2] = [Protocol::Mqtt, Protocol::Http];

    /// The dimension's value, as AWS writes it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Mqtt => "MQTT",
            Protocol::Http => "HTTP",
        }
    }
}

/// A message broker or authentication metric (dimension `Protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerMetric {
    /// `Connect.Success`.
    ConnectSuccess,
    /// `Connect.AuthError`: the policies refuse the connection.
    ConnectAuthError,
    /// `Connect.ClientError`: the CONNECT breaks IoT Core's rules.
    ConnectClientError,
    /// `Connection.AuthNError`: the certificate fails authentication.
    ConnectionAuthNError,
    /// `PublishIn.Success`.
    PublishInSuccess,
    /// `PublishIn.AuthError`.
    PublishInAuthError,
    /// `PublishIn.ClientError`.
    PublishInClientError,
    /// `Subscribe.Success`.
    SubscribeSuccess,
    /// `Subscribe.AuthError`.
    SubscribeAuthError,
    /// `Subscribe.ClientError`.
    SubscribeClientError,
    /// `Unsubscribe.Success`.
    UnsubscribeSuccess,
    /// `Ping.Success`.
    PingSuccess,
}

impl BrokerMetric {
    const ALL: [BrokerMetric; 12] = [
        BrokerMetric::ConnectSuccess,
        BrokerMetric::ConnectAuthError,
        BrokerMetric::ConnectClientError,
        BrokerMetric::ConnectionAuthNError,
        BrokerMetric::PublishInSuccess,
        BrokerMetric::PublishInAuthError,
        BrokerMetric::PublishInClientError,
        BrokerMetric::SubscribeSuccess,
        BrokerMetric::SubscribeAuthError,
        BrokerMetric::SubscribeClientError,
        BrokerMetric::UnsubscribeSuccess,
        BrokerMetric::PingSuccess,
    ];

    /// The metric's name in `AWS/IoT`.
    pub fn name(self) -> &'static str {
        match self {
            BrokerMetric::ConnectSuccess => "Connect.Success",
            BrokerMetric::ConnectAuthError => "Connect.AuthError",
            BrokerMetric::ConnectClientError => "Connect.ClientError",
            BrokerMetric::ConnectionAuthNError => "Connection.AuthNError",
            BrokerMetric::PublishInSuccess => "PublishIn.Success",
            BrokerMetric::PublishInAuthError => "PublishIn.AuthError",
            BrokerMetric::PublishInClientError => "PublishIn.ClientError",
            BrokerMetric::SubscribeSuccess => "Subscribe.Success",
            BrokerMetric::SubscribeAuthError => "Subscribe.AuthError",
            BrokerMetric::SubscribeClientError => "Subscribe.ClientError",
            BrokerMetric::UnsubscribeSuccess => "Unsubscribe.Success",
            BrokerMetric::PingSuccess => "Ping.Success",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A rule or rule action metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleMetric {
    /// `TopicMatch` (`RuleName`).
    TopicMatch,
    /// `ParseError` (`RuleName`).
    ParseError,
    /// `RuleNotFound` (`RuleName`).
    RuleNotFound,
    /// `RuleMessageThrottled` (`RuleName`).
    RuleMessageThrottled,
    /// `RulesExecuted` (no dimension).
    RulesExecuted,
    /// `Success` (`RuleName`, `ActionType`).
    Success,
    /// `Failure` (`RuleName`, `ActionType`).
    Failure,
    /// `ErrorActionSuccess` (`RuleName`, `ActionType`).
    ErrorActionSuccess,
    /// `ErrorActionFailure` (`RuleName`, `ActionType`).
    ErrorActionFailure,
}

impl RuleMetric {
    /// The metric's name in `AWS/IoT`.
    pub fn name(self) -> &'static str {
        match self {
            RuleMetric::TopicMatch => "TopicMatch",
            RuleMetric::ParseError => "ParseError",
            RuleMetric::RuleNotFound => "RuleNotFound",
            RuleMetric::RuleMessageThrottled => "RuleMessageThrottled",
            RuleMetric::RulesExecuted => "RulesExecuted",
            RuleMetric::Success => "Success",
            RuleMetric::Failure => "Failure",
            RuleMetric::ErrorActionSuccess => "ErrorActionSuccess",
            RuleMetric::ErrorActionFailure => "ErrorActionFailure",
        }
    }
}

/// The `ActionType` dimension's value for a rule action kind as it is written in a topic rule
/// (`dynamoDBv2` → `DynamoDBv2`); `None` for a kind this local cloud does not know.
pub fn action_type(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "republish" => "Republish",
        "lambda" => "Lambda",
        "dynamoDBv2" => "DynamoDBv2",
        "s3" => "S3",
        "cloudwatchMetric" => "CloudwatchMetric",
        "cloudwatchAlarm" => "CloudwatchAlarm",
        _ => return None,
    })
}

/// Which rule and action a rule metric is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RuleKey {
    metric: RuleMetric,
    rule: Option<String>,
    action_type: Option<&'static str>,
}

const BROKER_METRICS: usize = BrokerMetric::ALL.len();

/// The counts since the last flush.
#[derive(Debug)]
pub struct IotMetrics {
    broker: [[AtomicU64; BROKER_METRICS]; 2],
    rules: Mutex<HashMap<RuleKey, u64>>,
}

impl Default for IotMetrics {
    fn default() -> Self {
        IotMetrics {
            broker: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            rules: Mutex::default(),
        }
    }
}

/// One metric's count over a flush interval, ready for CloudWatch.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric's name.
    pub name: &'static str,
    /// Its dimensions, as (name, value).
    pub dimensions: Vec<(&'static str, String)>,
    /// How many times it happened.
    pub count: u64,
}

impl IotMetrics {
    /// Counts one broker operation.
    pub fn count(&self, protocol: Protocol, metric: BrokerMetric) {
        self.broker[protocol as usize][metric.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a rule metric with `RuleName` (and `ActionType` for action metrics).
    pub fn rule(&self, metric: RuleMetric, rule: &str, action_type: Option<&'static str>) {
        let rule = (metric != RuleMetric::RulesExecuted).then(|| rule.to_owned());
        let key = RuleKey { metric, rule, action_type };
        *self.rules.lock().unwrap_or_else(|e| e.into_inner()).entry(key).or_default() += 1;
    }

    /// Takes every count since the last call (which start again from zero), sorted by metric
    /// name then dimensions.
    pub fn take(&self) -> Vec<Sample> {
        let mut samples = Vec::new();
        for protocol in Protocol::ALL {
            for metric in BrokerMetric::ALL {
                let count = self.broker[protocol as usize][metric.index()].swap(0, Ordering::Relaxed);
                if count > 0 {
                    samples.push(Sample {
                        name: metric.name(),
                        dimensions: vec![("Protocol", protocol.name().to_owned())],
                        count,
                    });
                }
            }
        }
        let rules = std::mem::take(&mut *self.rules.lock().unwrap_or_else(|e| e.into_inner()));
        for (key, count) in rules {
            let mut dimensions = Vec::new();
            if let Some(action_type) = key.action_type {
                dimensions.push(("ActionType", action_type.to_owned()));
            }
            if let Some(rule) = key.rule {
                dimensions.push(("RuleName", rule));
            }
            samples.push(Sample { name: key.metric.name(), dimensions, count });
        }
        samples.sort_by(|a, b| (a.name, &a.dimensions).cmp(&(b.name, &b.dimensions)));
        samples
    }
}

/// Where the counts go: CloudWatch's metric store, seen from IoT Core.
pub trait ServiceMetricStore: Send + Sync {
    /// Stores `samples` as `Count` datapoints of `namespace` at `timestamp_ms` (a namespace
    /// reserved for AWS, which PutMetricData refuses, is what this is for).
    fn put_service_metrics(&self, namespace: &str, timestamp_ms: i64, samples: &[Sample]) -> Result<(), String>;
}

/// Hands what `metrics` counted to `store` every `interval`, and once more at `shutdown`.
pub async fn flush_every(
    metrics: Arc<IotMetrics>,
    store: Arc<dyn ServiceMetricStore>,
    clock: SharedClock,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = ticks.tick() => false,
        };
        let samples = metrics.take();
        if !samples.is_empty() {
            let (store, now) = (store.clone(), clock.now_millis() as i64);
            let written =
                tokio::task::spawn_blocking(move || store.put_service_metrics(NAMESPACE, now, &samples)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "writing AWS/IoT metrics to CloudWatch"),
                Err(e) => tracing::error!(error = %e, "writing AWS/IoT metrics to CloudWatch failed"),
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &'static str, dimensions: &[(&'static str, &str)], count: u64) -> Sample {
        Sample { name, dimensions: dimensions.iter().map(|(n, v)| (*n, (*v).to_owned())).collect(), count }
    }

    #[test]
    fn counts_are_taken_once_per_metric_and_dimension_set_then_start_again() {
        let m = IotMetrics::default();
        m.count(Protocol::Mqtt, BrokerMetric::PublishInSuccess);
        m.count(Protocol::Mqtt, BrokerMetric::PublishInSuccess);
        m.count(Protocol::Http, BrokerMetric::PublishInSuccess);
        m.count(Protocol::Mqtt, BrokerMetric::ConnectionAuthNError);
        m.rule(RuleMetric::TopicMatch, "r1", None);
        m.rule(RuleMetric::Failure, "r1", Some("Lambda"));
        m.rule(RuleMetric::Failure, "r1", Some("Lambda"));
        m.rule(RuleMetric::Success, "r1", Some("S3"));
        m.rule(RuleMetric::RulesExecuted, "r1", None);
        m.rule(RuleMetric::RulesExecuted, "r2", None);
        let want = vec![
            sample("Connection.AuthNError", &[("Protocol", "MQTT")], 1),
            sample("Failure", &[("ActionType", "Lambda"), ("RuleName", "r1")], 2),
            sample("PublishIn.Success", &[("Protocol", "HTTP")], 1),
            sample("PublishIn.Success", &[("Protocol", "MQTT")], 2),
            sample("RulesExecuted", &[], 2),
            sample("Success", &[("ActionType", "S3"), ("RuleName", "r1")], 1),
            sample("TopicMatch", &[("RuleName", "r1")], 1),
        ];
        assert_eq!(m.take(), want);
        assert!(m.take().is_empty(), "a flushed count is not written again");
    }

    /// A store that passes on what it was given.
    struct Recorded(tokio::sync::mpsc::UnboundedSender<(String, i64, Vec<Sample>)>);

    impl ServiceMetricStore for Recorded {
        fn put_service_metrics(&self, namespace: &str, timestamp_ms: i64, samples: &[Sample]) -> Result<(), String> {
            let _ = self.0.send((namespace.to_owned(), timestamp_ms, samples.to_vec()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn counts_are_flushed_each_interval_and_at_shutdown_never_empty() {
        let metrics = Arc::new(IotMetrics::default());
        let (tx, mut written) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let every = Duration::from_millis(20);
        let task = tokio::spawn(flush_every(
            metrics.clone(),
            Arc::new(Recorded(tx)),
            crate::time::system(),
            every,
            stop.clone(),
        ));
        metrics.count(Protocol::Mqtt, BrokerMetric::ConnectSuccess);
        let deadline = Duration::from_secs(5);
        let (ns, ts, first) = tokio::time::timeout(deadline, written.recv()).await.unwrap().unwrap();
        assert_eq!((ns.as_str(), first), (NAMESPACE, vec![sample("Connect.Success", &[("Protocol", "MQTT")], 1)]));
        assert!(ts > 0);
        metrics.rule(RuleMetric::Failure, "r", Some("S3"));
        stop.cancel();
        task.await.unwrap();
        let (_, _, last) = written.recv().await.unwrap();
        assert_eq!(last, vec![sample("Failure", &[("ActionType", "S3"), ("RuleName", "r")], 1)]);
        assert!(written.recv().await.is_none(), "an interval with nothing counted writes nothing");
    }

    #[test]
    fn action_kinds_map_to_aws_action_types() {
        let cases = [
            ("republish", Some("Republish")),
            ("lambda", Some("Lambda")),
            ("dynamoDBv2", Some("DynamoDBv2")),
            ("s3", Some("S3")),
            ("cloudwatchMetric", Some("CloudwatchMetric")),
            ("cloudwatchAlarm", Some("CloudwatchAlarm")),
            ("sqs", None),
        ];
        for (kind, want) in cases {
            assert_eq!(action_type(kind), want, "{kind}");
        }
    }

    #[test]
    fn every_broker_metric_has_its_own_counter() {
        let m = IotMetrics::default();
        for metric in BrokerMetric::ALL {
            m.count(Protocol::Mqtt, metric);
        }
        let names: Vec<&str> = m.take().iter().map(|s| s.name).collect();
        assert_eq!(names.len(), BrokerMetric::ALL.len());
        let mut unique = names.clone();
        unique.dedup();
        assert_eq!(unique, names);
    }
}
