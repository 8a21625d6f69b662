//! The telemetry agent: the device's health metrics on
//! `$aws/things/{thing}/greengrass/health/json` ([`cloud_api::greengrass::telemetry`]).
//!
//! Follows the nucleus's `TelemetryAgent`, `MetricsAggregator`, `SystemMetricsEmitter` and
//! `KernelMetricsEmitter` (aws-greengrass-nucleus, `telemetry/`):
//!
//! - every aggregation interval (`telemetry.periodicAggregateMetricsIntervalSeconds`, default
//!   and minimum 3600), starting at once, the core samples `SystemMetrics` (`CpuUsage` in
//!   Percent since the previous sample, `SystemMemUsage` in Megabytes as total less available,
//!   `TotalNumberOfFDs` as the operating system's open file descriptors) and
//!   `GreengrassComponents` (`NumberOfComponents{Starting, Installed, Stateless, Stopping,
//!   Broken, Running, Errored, New, Finished}`, the core's components counted by state);
//! - one interval after the start, and every interval after that, the samples taken since the
//!   last aggregation are averaged into one data point per namespace, stamped with the
//!   aggregation time;
//! - every publish interval (`telemetry.periodicPublishMetricsIntervalSeconds`, default and
//!   minimum 86400), the first one after a random delay of up to one aggregation interval,
//!   the data points aggregated since the last publish go out, with one more
//!   `GreengrassComponents` point (stamped with the publish time) averaging them; every value
//!   under `Sum`. Nothing aggregated, nothing sent: a core that just started publishes
//!   nothing until its first aggregation. While the connection is down the publish is
//!   skipped and the points wait for the next one. Messages stay under 128,000 bytes; more
//!   points go into more messages.
//!
//! [`Aggregator`] decides with no I/O and an injected clock; [`SystemSampler`] reads `/proc`;
//! [`run`] drives them and publishes through the IoT Core bridge at QoS 1, as the nucleus's
//! chunked publisher does (the developer guide says QoS 0). Differences from the nucleus: the
//! samples and data points live in memory (the nucleus keeps them in files under
//! `telemetry/`, so a restart keeps what was not yet published), no
//! `PutComponentMetric` namespaces, and no OS and kernel data point (nucleus 2.15 adds one).

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cloud_api::greengrass::telemetry::{
    self, AggregatedMetric, AggregatedNamespaceData, GREENGRASS_COMPONENTS, MAX_PAYLOAD_BYTES, MetricsPayload,
    SYSTEM_METRICS,
};
use cloud_api::ipc::model::Qos;
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use super::ComponentState;
use super::fleet_status::SnapshotSource;
use super::options::CoreOptions;
use super::services::IotCoreBridge;
use crate::recipe::{ComponentVersion, ConfigurationUpdate};

/// The service's name in the nucleus.
pub const SERVICE_NAME: &str = "TelemetryAgent";
/// Default, and least, `periodicAggregateMetricsIntervalSeconds`.
pub const DEFAULT_AGGREGATE_INTERVAL: Duration = Duration::from_secs(3_600);
/// Default, and least, `periodicPublishMetricsIntervalSeconds`.
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(86_400);
/// The first nucleus version that writes [`telemetry::SCHEMA`] (earlier ones write
/// [`telemetry::SCHEMA_2020`]).
pub const SCHEMA_2022_SINCE: &str = "2.8.0";

pub use super::options::TelemetryIntervals as Intervals;

/// The nucleus's `telemetry` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `enabled` (default true): false stops the agent.
    pub enabled: bool,
    /// `periodicAggregateMetricsIntervalSeconds`.
    pub aggregate: Duration,
    /// `periodicPublishMetricsIntervalSeconds`.
    pub publish: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self { enabled: true, aggregate: DEFAULT_AGGREGATE_INTERVAL, publish: DEFAULT_PUBLISH_INTERVAL }
    }
}

impl Settings {
    /// The settings under `telemetry` in the `--update-config` of `aws.greengrass.Nucleus`.
    /// A value of the wrong type, or an interval under its minimum, is refused with its key.
    pub fn from_nucleus(update: Option<&ConfigurationUpdate>) -> Result<Self, String> {
        let nucleus = super::recipe_store::builtin_configuration(update)?;
        let mut settings = Self::default();
        let telemetry = match nucleus.get("telemetry") {
            None | Some(Value::Null) => return Ok(settings),
            Some(Value::Object(t)) => t,
            Some(other) => return Err(format!("{NUCLEUS_KEY}telemetry must be an object, not {other}")),
        };
        match telemetry.get("enabled") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => settings.enabled = *b,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => settings.enabled = true,
            Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => settings.enabled = false,
            Some(other) => return Err(format!("{NUCLEUS_KEY}telemetry.enabled must be true or false, not {other}")),
        }
        if let Some(d) = interval(telemetry, "periodicAggregateMetricsInterval", DEFAULT_AGGREGATE_INTERVAL)? {
            settings.aggregate = d;
        }
        if let Some(d) = interval(telemetry, "periodicPublishMetricsInterval", DEFAULT_PUBLISH_INTERVAL)? {
            settings.publish = d;
        }
        Ok(settings)
    }

    /// The settings of a core: its nucleus configuration, with the test intervals of its cloud
    /// options over it.
    pub fn from_options(options: &CoreOptions) -> Result<Self, String> {
        let mut settings = Self::from_nucleus(options.update_config.get(super::nucleus_update::NUCLEUS))?;
        if let Some(i) = options.cloud.as_ref().and_then(|c| c.telemetry_intervals) {
            settings.aggregate = i.aggregate.max(Duration::from_millis(1));
            settings.publish = i.publish.max(Duration::from_millis(1));
        }
        Ok(settings)
    }
}

const NUCLEUS_KEY: &str = "aws.greengrass.Nucleus: ";

/// An interval under `{stem}Seconds` (the documented key) or `{stem}Sec` (the key the nucleus's
/// code reads): a whole number of seconds, a number or a numeric string, at least `least`.
fn interval(
    telemetry: &serde_json::Map<String, Value>,
    stem: &str,
    least: Duration,
) -> Result<Option<Duration>, String> {
    let found = [format!("{stem}Seconds"), format!("{stem}Sec")]
        .into_iter()
        .find_map(|k| telemetry.get(&k).filter(|v| !v.is_null()).map(|v| (k, v)));
    let Some((key, value)) = found else { return Ok(None) };
    value
        .as_u64()
        .or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()))
        .filter(|n| *n >= least.as_secs())
        .map(|n| Some(Duration::from_secs(n)))
        .ok_or_else(|| {
            format!(
                "{NUCLEUS_KEY}telemetry.{key} must be a whole number of seconds of at least {} (the nucleus \
                 ignores a smaller one), not {value}",
                least.as_secs()
            )
        })
}

/// The schema a nucleus of `version` writes.
pub fn schema_for(version: &ComponentVersion) -> &'static str {
    let since = ComponentVersion::parse(SCHEMA_2022_SINCE).unwrap_or_else(|_| unreachable!("a valid constant"));
    if *version >= since { telemetry::SCHEMA } else { telemetry::SCHEMA_2020 }
}

/// One emitted value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Namespace.
    pub namespace: &'static str,
    /// Metric name.
    pub name: &'static str,
    /// Unit.
    pub unit: &'static str,
    /// The value.
    pub value: f64,
    /// When it was taken (epoch milliseconds).
    pub timestamp: i64,
}

/// Samples in, aggregated data points and messages out; the clock is the caller's. Every
/// metric the agent emits is averaged, as the nucleus defines them.
#[derive(Debug, Clone)]
pub struct Aggregator {
    schema: &'static str,
    samples: Vec<Sample>,
    points: Vec<AggregatedNamespaceData>,
    last_aggregation: i64,
    last_publish: i64,
}

impl Aggregator {
    /// An aggregator started at `now` (epoch milliseconds), writing `schema`.
    pub fn new(schema: &'static str, now: i64) -> Self {
        Self { schema, samples: Vec::new(), points: Vec::new(), last_aggregation: now, last_publish: now }
    }

    /// Keeps samples for the next aggregation.
    pub fn record(&mut self, samples: impl IntoIterator<Item = Sample>) {
        self.samples.extend(samples);
    }

    /// The data points waiting to be published.
    pub fn pending(&self) -> &[AggregatedNamespaceData] {
        &self.points
    }

    /// Averages the samples taken from the last aggregation up to (not including) `now` into
    /// one data point per namespace stamped `now`; a namespace with no sample gets none.
    pub fn aggregate(&mut self, now: i64) {
        let (window, later): (Vec<Sample>, Vec<Sample>) =
            std::mem::take(&mut self.samples).into_iter().partition(|s| s.timestamp < now);
        self.samples = later;
        let since = self.last_aggregation;
        self.last_aggregation = now;
        let window: Vec<Sample> = window.into_iter().filter(|s| s.timestamp >= since).collect();
        for namespace in first_seen(window.iter().map(|s| s.namespace)) {
            let metrics =
                average(window.iter().filter(|s| s.namespace == namespace).map(|s| (s.name, s.unit, s.value)));
            self.points.push(AggregatedNamespaceData { timestamp: now, namespace: namespace.to_owned(), metrics });
        }
    }

    /// The messages to publish at `now`: the points aggregated since the last publish and
    /// before `now`, one more `GreengrassComponents` point averaging theirs, split to stay under
    /// [`MAX_PAYLOAD_BYTES`]. Empty when nothing was aggregated. The points are gone afterwards:
    /// call it only when the messages can be sent.
    pub fn publish(&mut self, now: i64) -> Vec<MetricsPayload> {
        let since = self.last_publish;
        self.last_publish = now;
        let (mut due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.points).into_iter().partition(|p| p.timestamp < now);
        self.points = later;
        due.retain(|p| p.timestamp >= since);
        if due.is_empty() {
            return Vec::new();
        }
        let components: Vec<&AggregatedNamespaceData> =
            due.iter().filter(|p| p.namespace == GREENGRASS_COMPONENTS).collect();
        if !components.is_empty() {
            let metrics = average(
                components.iter().flat_map(|p| p.metrics.iter().map(|m| (m.name.as_str(), m.unit.as_str(), m.sum))),
            );
            due.push(AggregatedNamespaceData { timestamp: now, namespace: GREENGRASS_COMPONENTS.to_owned(), metrics });
        }
        chunk(self.schema, due, MAX_PAYLOAD_BYTES)
    }
}

fn first_seen<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for n in names {
        if !seen.contains(&n) {
            seen.push(n);
        }
    }
    seen
}

/// The average of each metric's values, metrics in the order first seen.
fn average<'a>(values: impl Iterator<Item = (&'a str, &'a str, f64)>) -> Vec<AggregatedMetric> {
    let mut order = Vec::new();
    let mut sums: BTreeMap<&str, (&str, f64, u32)> = BTreeMap::new();
    for (name, unit, value) in values {
        let entry = sums.entry(name).or_insert_with(|| {
            order.push(name);
            (unit, 0.0, 0)
        });
        entry.1 += value;
        entry.2 += 1;
    }
    order
        .into_iter()
        .map(|name| {
            let (unit, sum, n) = sums[name];
            AggregatedMetric { name: name.to_owned(), sum: sum / f64::from(n), unit: unit.to_owned() }
        })
        .collect()
}

fn size(schema: &str, points: &[AggregatedNamespaceData]) -> usize {
    let message = MetricsPayload { thing_name: None, schema: schema.to_owned(), aggregated: points.to_vec() };
    serde_json::to_vec(&message).map(|b| b.len()).unwrap_or(usize::MAX)
}

/// Splits `points` into messages under `limit` bytes as the nucleus's chunked publisher does:
/// all in one when they fit, else each point into the first message it fits in, or a new one;
/// a point that does not fit even alone is dropped.
pub fn chunk(schema: &'static str, points: Vec<AggregatedNamespaceData>, limit: usize) -> Vec<MetricsPayload> {
    let message = |aggregated| MetricsPayload { thing_name: None, schema: schema.to_owned(), aggregated };
    if size(schema, &points) < limit {
        return vec![message(points)];
    }
    let mut chunks: Vec<Vec<AggregatedNamespaceData>> = Vec::new();
    for point in points {
        if size(schema, std::slice::from_ref(&point)) >= limit {
            tracing::warn!(namespace = %point.namespace, "a telemetry data point over the size limit is dropped");
            continue;
        }
        let fits = chunks.iter_mut().find_map(|c| {
            c.push(point.clone());
            if size(schema, c) < limit {
                Some(())
            } else {
                c.pop();
                None
            }
        });
        if fits.is_none() {
            chunks.push(vec![point]);
        }
    }
    chunks.into_iter().map(message).collect()
}

/// The `GreengrassComponents` samples of components in `states`, in the nucleus's order.
pub fn component_samples(states: &[ComponentState], now: i64) -> Vec<Sample> {
    let count = |s: Option<ComponentState>| states.iter().filter(|c| Some(**c) == s).count() as f64;
    [
        ("NumberOfComponentsStarting", Some(ComponentState::Starting)),
        ("NumberOfComponentsInstalled", Some(ComponentState::Installed)),
        // The core has no stateless components (the nucleus's STATELESS is for its own services).
        ("NumberOfComponentsStateless", None),
        ("NumberOfComponentsStopping", Some(ComponentState::Stopping)),
        ("NumberOfComponentsBroken", Some(ComponentState::Broken)),
        ("NumberOfComponentsRunning", Some(ComponentState::Running)),
        ("NumberOfComponentsErrored", Some(ComponentState::Errored)),
        ("NumberOfComponentsNew", Some(ComponentState::New)),
        ("NumberOfComponentsFinished", Some(ComponentState::Finished)),
    ]
    .into_iter()
    .map(|(name, state)| Sample {
        namespace: GREENGRASS_COMPONENTS,
        name,
        unit: "Count",
        value: count(state),
        timestamp: now,
    })
    .collect()
}

/// CPU time counters of `/proc/stat`'s `cpu` line, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTicks {
    /// Every tick counted (user, nice, system, idle, iowait, irq, softirq, steal).
    pub total: u64,
    /// Idle and iowait ticks.
    pub idle: u64,
}

/// The `cpu` line of `/proc/stat`.
pub fn parse_cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    Some(CpuTicks { total: fields.iter().sum(), idle: fields[3] + fields.get(4).copied().unwrap_or(0) })
}

/// The share of CPU time spent busy between two readings, in percent (0 when no time passed).
pub fn cpu_usage(before: CpuTicks, after: CpuTicks) -> f64 {
    let total = after.total.saturating_sub(before.total);
    let idle = after.idle.saturating_sub(before.idle);
    if total == 0 { 0.0 } else { total.saturating_sub(idle) as f64 * 100.0 / total as f64 }
}

/// Memory in use in whole megabytes (MiB), total less available, from `/proc/meminfo`.
pub fn parse_mem_usage(meminfo: &str) -> Option<u64> {
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    Some(kib("MemTotal:")?.saturating_sub(kib("MemAvailable:")?) / 1024)
}

/// Open file descriptors of the whole system: the first number of `/proc/sys/fs/file-nr`.
pub fn parse_file_nr(file_nr: &str) -> Option<u64> {
    file_nr.split_whitespace().next()?.parse().ok()
}

/// Reads the `SystemMetrics` of this machine from `/proc`, as the nucleus reads the OS.
#[derive(Debug, Default)]
pub struct SystemSampler {
    previous: CpuTicks,
}

impl SystemSampler {
    /// This machine's metrics now; a metric whose file is unreadable is left out.
    pub fn sample(&mut self, now: i64) -> Vec<Sample> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let sample = |name, unit, value| Sample { namespace: SYSTEM_METRICS, name, unit, value, timestamp: now };
        let mut out = Vec::new();
        // Since the previous sample; the first one covers the time since boot, as in the nucleus.
        if let Some(ticks) = read("/proc/stat").as_deref().and_then(parse_cpu_ticks) {
            out.push(sample("CpuUsage", "Percent", cpu_usage(self.previous, ticks)));
            self.previous = ticks;
        }
        if let Some(fds) = read("/proc/sys/fs/file-nr").as_deref().and_then(parse_file_nr) {
            out.push(sample("TotalNumberOfFDs", "Count", fds as f64));
        }
        if let Some(mb) = read("/proc/meminfo").as_deref().and_then(parse_mem_usage) {
            out.push(sample("SystemMemUsage", "Megabytes", mb as f64));
        }
        out
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A delay of up to `most`, different from core to core and start to start, so a fleet does not
/// publish all at once.
fn jitter(thing: &str, most: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    thing.hash(&mut h);
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0).hash(&mut h);
    let most_ms = u64::try_from(most.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(h.finish() % most_ms.saturating_add(1))
}

/// Runs the agent until the bridge's connection state closes: samples, aggregates and
/// publishes through `bridge` as the module docs say. Returns at once when disabled.
pub async fn run(
    settings: Settings,
    thing: String,
    schema: &'static str,
    bridge: Arc<dyn IotCoreBridge>,
    mut connection: watch::Receiver<bool>,
    components: SnapshotSource,
) {
    if !settings.enabled {
        return;
    }
    let topic = telemetry::topic(&thing);
    let mut aggregator = Aggregator::new(schema, now_ms());
    let mut system = SystemSampler::default();
    let start = Instant::now();
    let every = |first: Instant, period: Duration| {
        let mut i = tokio::time::interval_at(first, period);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    };
    let mut sample = every(start, settings.aggregate);
    let mut aggregate = every(start + settings.aggregate, settings.aggregate);
    let mut publish = every(start + jitter(&thing, settings.aggregate), settings.publish);
    loop {
        tokio::select! {
            _ = sample.tick() => {
                let now = now_ms();
                aggregator.record(system.sample(now));
                let states: Vec<ComponentState> = components().iter().map(|c| c.state).collect();
                aggregator.record(component_samples(&states, now));
            }
            _ = aggregate.tick() => aggregator.aggregate(now_ms()),
            _ = publish.tick() => {
                if !*connection.borrow() {
                    tracing::debug!("telemetry not published: the connection is down");
                    continue;
                }
                for message in aggregator.publish(now_ms()) {
                    let payload = match serde_json::to_vec(&message) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!(error = %e, "encoding telemetry");
                            continue;
                        }
                    };
                    match bridge.publish(&topic, Qos::AtLeastOnce, payload, false).await {
                        Ok(()) => tracing::debug!(points = message.aggregated.len(), "telemetry published"),
                        Err(e) => tracing::warn!(error = %e, "telemetry not published"),
                    }
                }
            }
            changed = connection.changed() => if changed.is_err() {
                return;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(merge: Value) -> ConfigurationUpdate {
        ConfigurationUpdate::from_deployment(Some(&merge.to_string()), Vec::new()).unwrap()
    }

    fn sample(namespace: &'static str, name: &'static str, value: f64, timestamp: i64) -> Sample {
        Sample { namespace, name, unit: "Count", value, timestamp }
    }

    fn metric(points: &[AggregatedNamespaceData], i: usize, name: &str) -> f64 {
        points[i].metrics.iter().find(|m| m.name == name).unwrap().sum
    }

    #[test]
    fn the_settings_default_to_an_hour_and_a_day_and_read_both_spellings_of_the_keys() {
        assert_eq!(Settings::from_nucleus(None).unwrap(), Settings::default());
        let cases = [
            (serde_json::json!({}), Settings::default()),
            (serde_json::json!({"telemetry": {"enabled": false}}), Settings { enabled: false, ..Settings::default() }),
            (
                serde_json::json!({"telemetry": {"enabled": "FALSE"}}),
                Settings { enabled: false, ..Settings::default() },
            ),
            (
                serde_json::json!({"telemetry": {"periodicAggregateMetricsIntervalSeconds": 7200,
                    "periodicPublishMetricsIntervalSeconds": "172800"}}),
                Settings { enabled: true, aggregate: Duration::from_secs(7200), publish: Duration::from_secs(172_800) },
            ),
            (
                serde_json::json!({"telemetry": {"periodicAggregateMetricsIntervalSec": 3601}}),
                Settings { aggregate: Duration::from_secs(3601), ..Settings::default() },
            ),
        ];
        for (merge, want) in cases {
            assert_eq!(Settings::from_nucleus(Some(&update(merge.clone()))).unwrap(), want, "{merge}");
        }
    }

    #[test]
    fn bad_telemetry_settings_are_refused_with_their_key() {
        let cases = [
            (serde_json::json!({"telemetry": 5}), "telemetry must be an object"),
            (serde_json::json!({"telemetry": {"enabled": "yes"}}), "telemetry.enabled must be true or false"),
            (
                serde_json::json!({"telemetry": {"periodicAggregateMetricsIntervalSeconds": 60}}),
                "telemetry.periodicAggregateMetricsIntervalSeconds must be a whole number of seconds of at least 3600",
            ),
            (
                serde_json::json!({"telemetry": {"periodicPublishMetricsIntervalSeconds": "daily"}}),
                "telemetry.periodicPublishMetricsIntervalSeconds must be a whole number of seconds of at least 86400",
            ),
            (
                serde_json::json!({"telemetry": {"periodicPublishMetricsIntervalSec": -1}}),
                "telemetry.periodicPublishMetricsIntervalSec must be",
            ),
        ];
        for (merge, want) in cases {
            let err = Settings::from_nucleus(Some(&update(merge.clone()))).unwrap_err();
            assert!(err.starts_with("aws.greengrass.Nucleus: ") && err.contains(want), "{merge}: {err}");
        }
    }

    #[test]
    fn nuclei_from_2_8_write_the_2022_schema() {
        let v = |s| ComponentVersion::parse(s).unwrap();
        assert_eq!(schema_for(&v("2.7.9")), telemetry::SCHEMA_2020);
        assert_eq!(schema_for(&v("2.8.0")), telemetry::SCHEMA);
        assert_eq!(schema_for(&v("2.14.0")), telemetry::SCHEMA);
    }

    #[test]
    fn an_aggregation_averages_each_metric_of_the_window_into_one_point_per_namespace() {
        let mut a = Aggregator::new(telemetry::SCHEMA, 1_000);
        a.record([
            sample(SYSTEM_METRICS, "CpuUsage", 10.0, 1_000),
            sample(GREENGRASS_COMPONENTS, "NumberOfComponentsRunning", 2.0, 1_000),
            sample(SYSTEM_METRICS, "CpuUsage", 30.0, 1_500),
            sample(GREENGRASS_COMPONENTS, "NumberOfComponentsRunning", 3.0, 1_500),
            sample(SYSTEM_METRICS, "CpuUsage", 99.0, 2_000),
        ]);
        a.aggregate(2_000);
        let points = a.pending();
        assert_eq!(points.len(), 2);
        assert_eq!((points[0].namespace.as_str(), points[0].timestamp), (SYSTEM_METRICS, 2_000));
        assert_eq!(metric(points, 0, "CpuUsage"), 20.0, "the sample taken at the aggregation time waits");
        assert_eq!(metric(points, 1, "NumberOfComponentsRunning"), 2.5);
        a.aggregate(3_000);
        assert_eq!(metric(a.pending(), 2, "CpuUsage"), 99.0);
        assert_eq!(a.pending().len(), 3, "a namespace with no sample in the window gets no point");
        a.aggregate(4_000);
        assert_eq!(a.pending().len(), 3, "an empty window adds nothing");
    }

    #[test]
    fn nothing_is_published_before_the_first_aggregation() {
        let mut a = Aggregator::new(telemetry::SCHEMA, 0);
        a.record(component_samples(&[ComponentState::Running], 0));
        assert!(a.publish(500).is_empty());
        a.aggregate(1_000);
        assert!(a.publish(1_000).is_empty(), "a point stamped at the publish time waits for the next publish");
        assert_eq!(a.publish(1_001).len(), 1);
        assert!(a.publish(2_000).is_empty(), "published points go out once");
    }

    #[test]
    fn a_publish_adds_a_components_point_averaging_the_interval_and_every_value_is_a_sum() {
        let mut a = Aggregator::new(telemetry::SCHEMA, 0);
        for (t, running, cpu) in [(0, 2.0, 10.0), (1_000, 4.0, 20.0)] {
            a.record([
                sample(GREENGRASS_COMPONENTS, "NumberOfComponentsRunning", running, t),
                sample(SYSTEM_METRICS, "CpuUsage", cpu, t),
            ]);
            a.aggregate(t + 1_000);
        }
        let messages = a.publish(5_000);
        assert_eq!(messages.len(), 1);
        let m = &messages[0];
        assert_eq!((m.schema.as_str(), m.thing_name.as_deref()), (telemetry::SCHEMA, None));
        let shape: Vec<(i64, &str)> = m.aggregated.iter().map(|p| (p.timestamp, p.namespace.as_str())).collect();
        assert_eq!(
            shape,
            [
                (1_000, GREENGRASS_COMPONENTS),
                (1_000, SYSTEM_METRICS),
                (2_000, GREENGRASS_COMPONENTS),
                (2_000, SYSTEM_METRICS),
                (5_000, GREENGRASS_COMPONENTS)
            ]
        );
        assert_eq!(metric(&m.aggregated, 4, "NumberOfComponentsRunning"), 3.0);
        assert_eq!(m.latest(SYSTEM_METRICS, "CpuUsage"), Some(20.0), "system metrics get no interval point");
        let json = serde_json::to_value(m).unwrap();
        assert_eq!(
            json["ADP"][0]["M"][0],
            serde_json::json!({"N": "NumberOfComponentsRunning", "Sum": 2.0, "U": "Count"})
        );
    }

    #[test]
    fn components_are_counted_by_state_in_the_nucleus_order() {
        use ComponentState::*;
        let samples = component_samples(&[Running, Running, Broken, Finished, New], 7);
        let got: Vec<(&str, f64)> = samples.iter().map(|s| (s.name, s.value)).collect();
        assert_eq!(
            got,
            [
                ("NumberOfComponentsStarting", 0.0),
                ("NumberOfComponentsInstalled", 0.0),
                ("NumberOfComponentsStateless", 0.0),
                ("NumberOfComponentsStopping", 0.0),
                ("NumberOfComponentsBroken", 1.0),
                ("NumberOfComponentsRunning", 2.0),
                ("NumberOfComponentsErrored", 0.0),
                ("NumberOfComponentsNew", 1.0),
                ("NumberOfComponentsFinished", 1.0),
            ]
        );
        assert!(samples.iter().all(|s| s.unit == "Count" && s.timestamp == 7 && s.namespace == GREENGRASS_COMPONENTS));
    }

    fn point(ts: i64, metrics: usize) -> AggregatedNamespaceData {
        AggregatedNamespaceData {
            timestamp: ts,
            namespace: GREENGRASS_COMPONENTS.into(),
            metrics: (0..metrics)
                .map(|i| AggregatedMetric { name: format!("Metric{i:04}"), sum: i as f64, unit: "Count".into() })
                .collect(),
        }
    }

    #[test]
    fn messages_are_split_under_the_limit_and_a_point_too_big_alone_is_dropped() {
        let one = size(telemetry::SCHEMA, &[point(1, 10)]);
        let cases: [(&str, Vec<AggregatedNamespaceData>, usize, Vec<usize>); 4] = [
            ("all fit in one", vec![point(1, 10), point(2, 10)], 10_000, vec![2]),
            ("two per message", vec![point(1, 10), point(2, 10), point(3, 10)], one * 2 + 10, vec![2, 1]),
            (
                "a bigger one goes alone, a later small one fills the first",
                vec![point(1, 10), point(2, 15), point(3, 10)],
                one * 2 + 10,
                vec![2, 1],
            ),
            ("too big alone", vec![point(1, 10), point(2, 500)], one * 2 + 10, vec![1]),
        ];
        for (what, points, limit, want) in cases {
            let messages = chunk(telemetry::SCHEMA, points, limit);
            assert_eq!(messages.iter().map(|m| m.aggregated.len()).collect::<Vec<_>>(), want, "{what}");
            for m in &messages {
                assert!(serde_json::to_vec(m).unwrap().len() < limit, "{what}");
            }
        }
        let big: Vec<_> = (0..160).map(|i| point(i, 20)).collect();
        let messages = chunk(telemetry::SCHEMA, big, MAX_PAYLOAD_BYTES);
        assert!(messages.len() > 1);
        assert_eq!(messages.iter().map(|m| m.aggregated.len()).sum::<usize>(), 160, "nothing lost");
    }

    #[test]
    fn proc_files_read_as_the_nucleus_reads_the_os() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        let t0 = parse_cpu_ticks(stat).unwrap();
        assert_eq!(t0, CpuTicks { total: 1_000, idle: 850 });
        let t1 = parse_cpu_ticks("cpu  200 0 100 1100 100 0 0 0\n").unwrap();
        assert_eq!(cpu_usage(t0, t1), 30.0, "150 busy of 500 ticks");
        assert_eq!(cpu_usage(CpuTicks::default(), t0), 15.0, "the first sample covers the time since boot");
        assert_eq!(cpu_usage(t1, t1), 0.0);
        assert_eq!(parse_cpu_ticks("intr 1 2\n"), None);
        let meminfo = "MemTotal:       16303428 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\n";
        assert_eq!(parse_mem_usage(meminfo), Some((16_303_428 - 12_000_000) / 1024));
        assert_eq!(parse_mem_usage("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_file_nr("4583\t0\t9223372036854775807\n"), Some(4583));
        assert_eq!(parse_file_nr(""), None);
    }

    #[test]
    fn this_machine_reports_its_system_metrics() {
        let mut s = SystemSampler::default();
        let samples = s.sample(1);
        if std::path::Path::new("/proc/meminfo").exists() {
            let names: Vec<&str> = samples.iter().map(|s| s.name).collect();
            assert_eq!(names, ["CpuUsage", "TotalNumberOfFDs", "SystemMemUsage"]);
            assert!(samples.iter().all(|s| s.value >= 0.0 && s.namespace == SYSTEM_METRICS));
        }
    }
}
