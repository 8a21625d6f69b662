//! `--rules`: the rules engine at work, against the local cloud with the solution's cloud side
//! deployed by `provision::app::deploy_app` (tables, the two functions from their real binaries,
//! the two topic rules, one role each).
//!
//! Measured, in one run:
//! - **rule → Lambda → DynamoDB**: devices publish anomaly events (`docs/payloads.md`) on
//!   `dt/pump/{thing}/anomalies` over mTLS MQTT; the rule `pump_anomalies` adds `receivedAt`
//!   (`timestamp()`) and invokes `pump-anomaly-handler`, which writes one incident row with its
//!   own clock in `recordedAt`. Each event's publish call is stamped with the same machine clock
//!   (ms since the epoch), so publish → `recordedAt` is the chain's latency, split at
//!   `receivedAt`. First paced (a fixed rate), then a burst published as fast as QoS 1 allows,
//!   which shows the rate the chain sustains.
//! - **broker throughput with rules off and on**: the same load of telemetry batches (publishers
//!   → one subscriber, the phases of [`crate::flow`]) before the deployment, with no rule at
//!   all, and after it, with `pump_telemetry` invoking the aggregator and putting each raw batch
//!   in S3.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use aws_sdk_dynamodb::types::AttributeValue;
use bench_common::format::{mib, thousands};
use bench_common::machine::{cpu_ticks, descendants, rss_kib};
use bench_common::stats::{Latency, latency};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use provision::ClientOptions;
use provision::app::{AppClients, AppSpec};
use tokio::task::JoinHandle;

use crate::client::{Client, Incoming, Protocol, connect};
use crate::deployments::{notes_section, run_log_notes};
use crate::flow::{self, FlowResult, Phase, Stamp};
use crate::local::spawn;
use crate::plan::{FlowPlan, Plan};
use crate::stats::Clock;
use crate::target::Target;

/// The devices' IoT policy: connect as the thing, publish its own anomalies and telemetry.
const DEVICE_POLICY: &str = "BenchPumpPolicy";
/// The subscriber's IoT policy: every pump's topics.
const CONSUMER_POLICY: &str = "BenchPumpConsumerPolicy";
/// The subscriber's thing and client id.
const SUBSCRIBER: &str = "bench-pump-consumer";
/// The IoT policy of the client that watches the rules' error actions.
const OPS_POLICY: &str = "BenchPumpOpsPolicy";
/// That client's thing and client id.
const OPS: &str = "bench-pump-ops";
/// The resources' prefix (the shipped default, so the names are the documented ones).
const PREFIX: &str = "pump";
/// The raw telemetry bucket.
const BUCKET: &str = "bench-pump-landing";
/// Maintenance after this many occurrences: never within a run, so every event takes the
/// incident path (write, then the occurrence query) and none the shadow path.
const MAINTENANCE_REPEATS: u32 = 1_000_000;
/// Each function's timeout.
const FUNCTION_TIMEOUT_SECS: i32 = 10;
/// Events published before measuring: the first starts the function's process.
const WARMUP_EVENTS: usize = 5;
/// Events of the burst; below the local Lambda's queue of 1,000 asynchronous invocations per
/// function, so none is refused.
const BURST_EVENTS: usize = 500;
/// Publishers of the throughput load, each its own pump thing.
const LOAD_PUBLISHERS: usize = 10;
/// Readings per telemetry batch (what the sensor fits under one 5 KiB metering unit).
const READINGS_PER_BATCH: u64 = 15;
/// Batches per phase slot of a publisher's synthetic timeline (see [`encode_batch`]).
const SLOT_BATCHES: u64 = 10_000;
/// The first reading's time of the synthetic timeline: 2026-12-01 00:00 UTC.
const TIMELINE_START_MS: u64 = 1_796_083_200_000;
/// How often the tables and the bucket are read while waiting on them.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// Waiting for rows ends when none came for this long.
const ROWS_QUIET: Duration = Duration::from_secs(20);
/// Waiting for the rules to finish after the load ends when nothing changed for this long.
const DRAIN_QUIET: Duration = Duration::from_secs(3);
/// Longest wait for the rules to finish after the load.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Provisioning requests in flight at once.
const PROVISION_CONCURRENCY: usize = 8;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `local-cloud` binary.
    pub local_cloud_bin: PathBuf,
    /// Where `anomaly-handler` and `telemetry-aggregator` are.
    pub functions_dir: PathBuf,
    /// Anomaly events in the paced phase.
    pub events: usize,
    /// Their rate, events per second over all devices.
    pub event_rate: u32,
    /// Devices (pump things) publishing anomaly events, round-robin.
    pub devices: usize,
}

/// The throughput load: publishers, messages and rates of each phase.
pub fn load_plan() -> (Plan, FlowPlan) {
    let plan = Plan { fan_in_publishers: LOAD_PUBLISHERS, ..Plan::full() };
    let flow = FlowPlan {
        warmup_per_publisher: 10,
        saturated_per_publisher: 1_000,
        paced_rate: 200,
        paced_for: Duration::from_secs(5),
        deadline: Duration::from_secs(60),
    };
    (plan, flow)
}

/// One phase of the anomaly chain.
#[derive(Debug, Clone)]
pub struct ChainPhase {
    /// Events published.
    pub events: usize,
    /// First publish call → last publish call.
    pub published_in: Duration,
    /// Events whose row was found.
    pub rows: usize,
    /// Publish → `recordedAt`.
    pub total: Option<Latency>,
    /// Publish → `receivedAt` (broker and rules engine).
    pub ingest: Option<Latency>,
    /// `receivedAt` → `recordedAt` (the Lambda queue, the invocation, the function up to its write).
    pub handler: Option<Latency>,
    /// First publish → last `recordedAt`.
    pub span: Duration,
}

impl ChainPhase {
    /// Events per second the publishers achieved.
    pub fn publish_rate(&self) -> f64 {
        per_second(self.events, self.published_in)
    }

    /// Rows per second from the first publish to the last row.
    pub fn sustained(&self) -> f64 {
        per_second(self.rows, self.span)
    }
}

fn per_second(n: usize, d: Duration) -> f64 {
    if d.is_zero() { 0.0 } else { n as f64 / d.as_secs_f64() }
}

/// One run of the throughput load.
#[derive(Debug, Clone)]
pub struct LoadRun {
    /// The flow's phases, or why it could not run.
    pub flow: Result<FlowResult, String>,
    /// When the load started.
    pub started: Instant,
    /// Wall time of the whole load.
    pub elapsed: Duration,
    /// CPU time of the local cloud process over the load.
    pub cloud_cpu: Option<Duration>,
    /// CPU time of the function processes (the local cloud's children) over the load.
    pub functions_cpu: Option<Duration>,
    /// The local cloud's RSS after the load, KiB.
    pub rss_kib: Option<u64>,
}

/// What the telemetry rule did with the load.
#[derive(Debug, Clone)]
pub struct RuleWork {
    /// Telemetry messages published during the rules-on load.
    pub published: u64,
    /// Raw batches in the bucket when the load ended.
    pub s3_at_load_end: usize,
    /// Raw batches in the bucket at the last count (the rule's `s3` action).
    pub s3_objects: usize,
    /// Batches the aggregator folded in (`batches` over the hourly rows) at the last count.
    pub folded: u64,
    /// From the start of the load to the last change of the bucket: how long the rule's actions
    /// ran for the objects counted.
    pub busy: Duration,
    /// From the end of the load to the last count.
    pub waited: Duration,
    /// Whether the bucket and the table had stopped changing by the last count.
    pub drained: bool,
    /// The rules' error actions seen on `ops/rules/+/errors`, by rule, failed action and message.
    pub errors: BTreeMap<String, u64>,
}

impl RuleWork {
    /// Messages whose S3 action ran, per second of the load and after it.
    pub fn rate(&self) -> f64 {
        per_second(self.s3_objects, self.busy)
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct RulesResult {
    /// Policies and things.
    pub setup_in: Duration,
    /// `deploy_app`.
    pub deployed_in: Duration,
    /// The first warm-up event: publish → `recordedAt` (the function's process starts).
    pub cold: Option<Duration>,
    /// At the fixed rate.
    pub paced: ChainPhase,
    /// As fast as QoS 1 allows.
    pub burst: ChainPhase,
    /// Incident rows that asked for maintenance (none expected).
    pub maintenance_rows: usize,
    /// The load with no rule.
    pub off: LoadRun,
    /// The same load with the deployed rules.
    pub on: LoadRun,
    /// What the telemetry rule did with it.
    pub work: RuleWork,
    /// Warnings and errors the local cloud logged.
    pub log_notes: Vec<String>,
}

/// The `i`th pump thing.
pub fn pump_thing(i: usize) -> String {
    format!("bench-pump-{i:03}")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The devices' and the subscriber's IoT policies, thing-scoped as the solution's are.
fn policies(region: &str, account: &str) -> [(&'static str, String); 3] {
    let arn = |resource: &str| format!("arn:aws:iot:{region}:{account}:{resource}");
    let thing = "${iot:Connection.Thing.ThingName}";
    let connect = serde_json::json!({"Effect": "Allow", "Action": "iot:Connect",
        "Resource": arn(&format!("client/{thing}")),
        "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}});
    [
        (
            DEVICE_POLICY,
            serde_json::json!({"Version": "2012-10-17", "Statement": [connect.clone(),
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": [
                arn(&format!("topic/dt/pump/{thing}/anomalies")),
                arn(&format!("topic/dt/pump/{thing}/telemetry")),
            ]}]})
            .to_string(),
        ),
        (
            CONSUMER_POLICY,
            serde_json::json!({"Version": "2012-10-17", "Statement": [connect.clone(),
                {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": arn("topicfilter/dt/pump/*")},
                {"Effect": "Allow", "Action": "iot:Receive", "Resource": arn("topic/dt/pump/*")}]})
            .to_string(),
        ),
        (
            OPS_POLICY,
            serde_json::json!({"Version": "2012-10-17", "Statement": [connect,
                {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": arn("topicfilter/ops/rules/*")},
                {"Effect": "Allow", "Action": "iot:Receive", "Resource": arn("topic/ops/rules/*")}]})
            .to_string(),
        ),
    ]
}

/// An anomaly event as the analyzer writes it (`docs/payloads.md`, "Anomaly event").
pub fn anomaly_event(id: &str, ts: i64, seq: u64, active: bool) -> serde_json::Value {
    let (severity, reason) = if active {
        (0.52, "suction 8.6 kPa <= 10 with discharge σ 103.4 kPa >= 8")
    } else {
        (0.0, "normal for 10 consecutive readings")
    };
    serde_json::json!({
        "v": 1, "id": id, "ts": ts, "reading_seq": seq, "detector": "rules", "kind": "cavitation",
        "active": active, "severity": severity, "reason": reason,
        "features": {"discharge_pressure_kpa.std": 103.41, "suction_pressure_kpa.mean": 8.57,
                     "suction_pressure_kpa.std": 12.25, "vibration_mm_s.mean": 2.32}
    })
}

/// The position of a phase in a publisher's time: warm-up, saturated, windowed, paced.
fn slot(phase: u8) -> u64 {
    match phase {
        flow::WARMUP => 0,
        flow::SATURATED => 1,
        flow::WINDOWED => 2,
        flow::PACED => 3,
        _ => 4,
    }
}

/// A telemetry batch of [`READINGS_PER_BATCH`] readings in the documented shape, with the
/// flow's stamp in a leading `bench` member (the aggregator reads `v`, `thing` and `readings`;
/// the rule adds `thing` from the topic). Readings are one second apart on a synthetic timeline
/// per publisher, batch after batch, so every batch brings the aggregator new readings.
pub fn encode_batch(stamp: Stamp, seq: u64, _len: usize) -> Bytes {
    let first = (slot(stamp.phase) * SLOT_BATCHES + seq) * READINGS_PER_BATCH;
    let mut out = format!(r#"{{"v":1,"bench":"{}","readings":["#, flow::stamp_text(stamp));
    for i in 0..READINGS_PER_BATCH {
        let n = first + i;
        let wobble = (n % 7) as f64 * 0.1;
        if i > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"ts":{},"seq":{},"speed_rpm":{:.1},"flow_m3h":{:.1},"suction_pressure_kpa":{:.1},"#,
            TIMELINE_START_MS + n * 1_000,
            n + 1,
            2901.0 + wobble,
            99.5 + wobble,
            19.4 - wobble
        );
        let _ = write!(
            out,
            r#""discharge_pressure_kpa":{:.1},"head_m":49.78,"motor_current_a":33.23,"shaft_power_kw":18.16,"hydraulic_power_kw":13.47,"efficiency_pct":74.2,"bearing_temp_c":{:.1},"motor_temp_c":82.7,"vibration_mm_s":1.65,"running":true,"bypass_open":false}}"#,
            506.8 + wobble,
            49.7 + wobble
        );
    }
    out.push_str("]}");
    Bytes::from(out)
}

/// The stamp of a batch made by [`encode_batch`].
pub fn decode_batch(m: &crate::client::Message) -> Option<(Stamp, flow::Answer)> {
    let rest = m.payload.strip_prefix(br#"{"v":1,"bench":""#.as_slice())?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let stamp = flow::parse_stamp(std::str::from_utf8(&rest[..end]).ok()?)?;
    Some((stamp, flow::Answer::Delivered))
}

/// Telemetry batches from `publishers` pump things to one subscriber on `dt/pump/+/telemetry`.
pub fn batch_spec(publishers: usize) -> flow::Spec {
    flow::Spec {
        subscriber: (SUBSCRIBER.to_owned(), Protocol::V311),
        filters: vec!["dt/pump/+/telemetry".to_owned()],
        publishers: (0..publishers).map(|i| (pump_thing(i), Protocol::V311)).collect(),
        topic: |thing| format!("dt/pump/{thing}/telemetry"),
        encode: encode_batch,
        decode: decode_batch,
    }
}

/// Runs the benchmark in `work` (a fresh directory).
pub async fn run(options: &Options, work: &Path) -> anyhow::Result<RulesResult> {
    anyhow::ensure!(options.events > 0 && options.event_rate > 0, "--events and --event-rate must be positive");
    anyhow::ensure!(options.devices > 0, "at least one device");
    for bin in [provision::app::ANOMALY_HANDLER_BIN, provision::app::TELEMETRY_AGGREGATOR_BIN] {
        let path = options.functions_dir.join(bin);
        anyhow::ensure!(
            path.is_file(),
            "{} does not exist: build the functions (`cargo build -p pump-functions`) or pass --functions-dir",
            path.display()
        );
    }
    let data_dir = work.join("local-cloud");
    let (cloud, endpoints, ca_pem) = spawn(&options.local_cloud_bin, &data_dir).await?;
    let pid = cloud.pid();
    let client_options = ClientOptions::for_local_cloud(&endpoints)?;
    let clients = AppClients {
        iot: provision::iot_client(&client_options).await,
        iam: provision::iam_client(&client_options).await,
        lambda: provision::lambda_client(&client_options).await,
        dynamodb: provision::dynamodb_client(&client_options).await,
        s3: provision::s3_client(&client_options).await,
    };

    let started = Instant::now();
    for (name, document) in policies(&endpoints.region, &endpoints.account_id) {
        clients.iot.create_policy().policy_name(name).policy_document(document).send().await.context(name)?;
    }
    let things = options.devices.max(LOAD_PUBLISHERS);
    let wanted = (0..things)
        .map(|i| (pump_thing(i), DEVICE_POLICY))
        .chain([(SUBSCRIBER.to_owned(), CONSUMER_POLICY), (OPS.to_owned(), OPS_POLICY)]);
    let identities: HashMap<_, _> = futures::stream::iter(wanted)
        .map(|(name, policy)| crate::local::thing(&clients.iot, name, policy))
        .buffer_unordered(PROVISION_CONCURRENCY)
        .try_collect()
        .await?;
    let idle = identities[SUBSCRIBER].clone();
    let target = crate::local::target(&endpoints, ca_pem, pid, identities, idle)?;
    let setup_in = started.elapsed();
    eprintln!("{} things provisioned in {:.2} s", things + 2, setup_in.as_secs_f64());

    let (plan, flow_plan) = load_plan();
    let spec = batch_spec(LOAD_PUBLISHERS);
    let clock = Clock::new();

    eprintln!("== telemetry load, no rules");
    let off = load(&target, &spec, &plan, &flow_plan, clock).await;

    let started = Instant::now();
    let app = AppSpec {
        prefix: PREFIX.into(),
        functions_dir: options.functions_dir.clone(),
        bucket: BUCKET.into(),
        maintenance_repeats: MAINTENANCE_REPEATS,
        maintenance_window_minutes: 10,
        function_timeout_secs: FUNCTION_TIMEOUT_SECS,
        iot_data_endpoint: None,
    };
    let deployed = provision::app::deploy_app(&clients, &app).await.context("deploying the cloud side")?;
    let deployed_in = started.elapsed();
    eprintln!("cloud side deployed in {:.2} s ({} changes)", deployed_in.as_secs_f64(), deployed.changes.len());
    let incidents = deployed.names.incidents_table.clone();
    let errors = watch_errors(&target).await?;

    eprintln!("== anomaly events → rule → Lambda → DynamoDB");
    let devices = Devices::connect(&target, options.devices).await?;
    let mut chain = Chain { devices, db: clients.dynamodb.clone(), table: incidents, rows: HashMap::new() };
    let warm = chain.publish("warm", WARMUP_EVENTS, None).await?;
    let (_, warm_rows) = chain.wait_rows(&warm).await?;
    let cold = warm.first().and_then(|e| warm_rows.get(&e.key()).map(|r| ms(r.recorded_at - e.sent_ms)));
    let period = Duration::from_secs_f64(1.0 / f64::from(options.event_rate));
    let paced = chain.phase("paced", options.events, Some(period)).await?;
    eprintln!("paced: {} of {} rows, {:.1} events/s", paced.rows, paced.events, paced.sustained());
    let burst = chain.phase("burst", BURST_EVENTS, None).await?;
    eprintln!("burst: {} of {} rows, {:.1} events/s", burst.rows, burst.events, burst.sustained());
    let maintenance_rows = chain.rows.values().filter(|r| r.maintenance).count();
    chain.devices.stop().await;

    eprintln!("== telemetry load, rules on");
    let on = load(&target, &spec, &plan, &flow_plan, clock).await;
    let work = rule_work(&clients, &deployed.names.aggregates_table, &on, &errors).await?;

    let log_notes = run_log_notes(Vec::new(), &data_dir).into_iter().skip(1).collect();
    cloud.stop();
    Ok(RulesResult { setup_in, deployed_in, cold, paced, burst, maintenance_rows, off, on, work, log_notes })
}

/// CPU time of the local cloud's function processes so far, 10 ms ticks.
fn functions_ticks(pid: u32) -> u64 {
    descendants(pid).into_iter().filter_map(cpu_ticks).sum()
}

fn ticks(t: u64) -> Duration {
    Duration::from_millis(t * 10)
}

/// The throughput load once, with the CPU time of the local cloud and its children around it.
async fn load(target: &Target, spec: &flow::Spec, plan: &Plan, flow_plan: &FlowPlan, clock: Clock) -> LoadRun {
    let (cloud_before, functions_before) = (cpu_ticks(target.pid), functions_ticks(target.pid));
    let started = Instant::now();
    let flow = flow::run(target, spec, plan, flow_plan, clock).await;
    let elapsed = started.elapsed();
    LoadRun {
        flow,
        started,
        elapsed,
        cloud_cpu: cpu_ticks(target.pid).zip(cloud_before).map(|(a, b)| ticks(a.saturating_sub(b))),
        functions_cpu: Some(ticks(functions_ticks(target.pid).saturating_sub(functions_before))),
        rss_kib: rss_kib(target.pid),
    }
}

/// Messages the load published in its measured phases and warm-up.
fn published(run: &LoadRun, flow_plan: &FlowPlan) -> u64 {
    let Ok(f) = &run.flow else { return 0 };
    let warmup = flow_plan.warmup_per_publisher * LOAD_PUBLISHERS as u64;
    warmup + f.saturated.sent + f.windowed.sent + f.paced.sent
}

/// Counts what the telemetry rule's actions did: at once, then until the bucket and the
/// aggregates table stop changing (or [`DRAIN_DEADLINE`]).
async fn rule_work(clients: &AppClients, aggregates: &str, on: &LoadRun, errors: &Errors) -> anyhow::Result<RuleWork> {
    let started = Instant::now();
    let s3_at_load_end = s3_objects(&clients.s3).await?;
    let mut last = (usize::MAX, u64::MAX);
    let mut changed = Instant::now();
    loop {
        let now = (s3_objects(&clients.s3).await?, folded(&clients.dynamodb, aggregates).await?);
        if now != last {
            last = now;
            changed = Instant::now();
        }
        let drained = changed.elapsed() >= DRAIN_QUIET;
        if drained || started.elapsed() >= DRAIN_DEADLINE {
            return Ok(RuleWork {
                published: published(on, &load_plan().1),
                s3_at_load_end,
                s3_objects: last.0,
                folded: last.1,
                busy: changed.saturating_duration_since(on.started),
                waited: started.elapsed(),
                drained,
                errors: errors.lock().map(|e| e.clone()).unwrap_or_default(),
            });
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// The rules' error actions seen so far, by rule, failed action and error message.
type Errors = Arc<Mutex<BTreeMap<String, u64>>>;

/// How an error action's message is counted: the rule, each failed action and its message
/// (without what names one message: ids, ARNs, numbers).
pub fn error_kind(payload: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else { return "not JSON".into() };
    let rule = v["ruleName"].as_str().unwrap_or("?");
    let failures: Vec<String> = v["failures"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|f| {
                    let message: String = f["errorMessage"]
                        .as_str()
                        .unwrap_or("")
                        .split_whitespace()
                        .filter(|w| {
                            !w.starts_with("arn:") && !w.contains('/') && !w.chars().any(|c| c.is_ascii_digit())
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    format!("{}: {message}", f["failedAction"].as_str().unwrap_or("?"))
                })
                .collect()
        })
        .unwrap_or_default();
    format!("{rule}: {}", failures.join("; "))
}

/// A client subscribed to `ops/rules/+/errors`, counting what it receives by [`error_kind`].
async fn watch_errors(target: &Target) -> anyhow::Result<Errors> {
    let (client, mut events) = connect(target, OPS, Protocol::V311, 100).await?;
    client.subscribe(&["ops/rules/+/errors".to_owned()]).await.map_err(anyhow::Error::msg)?;
    events
        .wait_for("SUBACK", |e| if let Incoming::SubAck(r) = e { Some(r) } else { None })
        .await?
        .map_err(|codes| anyhow::anyhow!("the error topics' subscription was refused: {codes}"))?;
    let errors = Errors::default();
    let seen = errors.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = events.poll().await {
            if let Incoming::Publish(m) = event
                && let Ok(mut seen) = seen.lock()
            {
                *seen.entry(error_kind(&m.payload)).or_default() += 1;
            }
        }
    });
    Ok(errors)
}

/// Objects under `telemetry/` in the landing bucket.
async fn s3_objects(s3: &aws_sdk_s3::Client) -> anyhow::Result<usize> {
    let mut n = 0;
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix("telemetry/")
            .set_continuation_token(token.take())
            .send()
            .await
            .context("ListObjectsV2")?;
        n += page.contents().len();
        match page.next_continuation_token() {
            Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
            _ => return Ok(n),
        }
    }
}

/// Every item of `table`, page by page.
async fn scan(db: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<Vec<HashMap<String, AttributeValue>>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = db
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .with_context(|| format!("Scan {table}"))?;
        items.extend_from_slice(page.items());
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(items),
        }
    }
}

/// Batches the aggregator folded in: `batches` summed over the hourly rows.
async fn folded(db: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<u64> {
    Ok(scan(db, table).await?.iter().filter_map(|item| number(item, "batches")).map(|n| n as u64).sum())
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

fn ms(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// The devices' connections, one per pump thing.
struct Devices {
    clients: Vec<(String, Client)>,
    drivers: Vec<JoinHandle<()>>,
}

impl Devices {
    async fn connect(target: &Target, n: usize) -> anyhow::Result<Devices> {
        let names: Vec<String> = (0..n).map(pump_thing).collect();
        let connected = futures::future::join_all(names.iter().map(|t| connect(target, t, Protocol::V311, 100))).await;
        let (mut clients, mut drivers) = (Vec::new(), Vec::new());
        for (name, c) in names.into_iter().zip(connected) {
            let (client, mut events) = c?;
            drivers.push(tokio::spawn(async move { while events.poll().await.is_ok() {} }));
            clients.push((name, client));
        }
        Ok(Devices { clients, drivers })
    }

    async fn stop(self) {
        for (_, c) in &self.clients {
            c.try_disconnect();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        for d in &self.drivers {
            d.abort();
        }
    }
}

/// One published anomaly event.
#[derive(Debug, Clone)]
struct SentEvent {
    thing: String,
    id: String,
    active: bool,
    sent_ms: i64,
}

impl SentEvent {
    fn key(&self) -> (String, String, bool) {
        (self.thing.clone(), self.id.clone(), self.active)
    }
}

/// What an incident row says of its event.
#[derive(Debug, Clone, Copy)]
struct Row {
    received_at: i64,
    recorded_at: i64,
    maintenance: bool,
}

/// The anomaly chain: devices, and the incident rows read back so far.
struct Chain {
    devices: Devices,
    db: aws_sdk_dynamodb::Client,
    table: String,
    rows: HashMap<(String, String, bool), Row>,
}

impl Chain {
    /// Publishes `n` events round-robin over the devices, one per `period` (else back to back):
    /// each device raises an anomaly and clears it, in turn, with its own ids and increasing `ts`.
    async fn publish(&mut self, phase: &str, n: usize, period: Option<Duration>) -> anyhow::Result<Vec<SentEvent>> {
        let mut ticker = period.map(|p| {
            let mut t = tokio::time::interval(p);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        let devices = self.devices.clients.len();
        let mut last_ts = vec![0i64; devices];
        let mut sent = Vec::with_capacity(n);
        for k in 0..n {
            if let Some(t) = ticker.as_mut() {
                t.tick().await;
            }
            let (d, j) = (k % devices, k / devices);
            let (thing, client) = &self.devices.clients[d];
            let id = format!("bench-{phase}-{d:03}-{}", j / 2);
            let active = j.is_multiple_of(2);
            let sent_ms = now_ms();
            let ts = sent_ms.max(last_ts[d] + 1);
            last_ts[d] = ts;
            let payload = anomaly_event(&id, ts, j as u64 + 1, active).to_string();
            client
                .publish(format!("dt/pump/{thing}/anomalies"), Bytes::from(payload))
                .await
                .map_err(|e| anyhow::anyhow!("{thing}: publish: {e}"))?;
            sent.push(SentEvent { thing: thing.clone(), id, active, sent_ms });
        }
        Ok(sent)
    }

    /// Reads the incidents table until every event of `sent` has its row, or none came for
    /// [`ROWS_QUIET`]; the rows found for them.
    async fn wait_rows(&mut self, sent: &[SentEvent]) -> anyhow::Result<(usize, HashMap<(String, String, bool), Row>)> {
        let mut found = 0;
        let mut progress = Instant::now();
        loop {
            for item in scan(&self.db, &self.table).await? {
                let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
                let (Some(thing), Some(id), Some(active)) =
                    (text("thing"), text("id"), item.get("active").and_then(|v| v.as_bool().ok()).copied())
                else {
                    continue;
                };
                let (Some(received_at), Some(recorded_at)) = (number(&item, "receivedAt"), number(&item, "recordedAt"))
                else {
                    continue;
                };
                let maintenance = item.contains_key("maintenance");
                self.rows.insert((thing, id, active), Row { received_at, recorded_at, maintenance });
            }
            let now = sent.iter().filter(|e| self.rows.contains_key(&e.key())).count();
            if now > found {
                found = now;
                progress = Instant::now();
            }
            if found == sent.len() || progress.elapsed() >= ROWS_QUIET {
                let rows = sent.iter().filter_map(|e| Some((e.key(), *self.rows.get(&e.key())?))).collect();
                return Ok((found, rows));
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    }

    /// Publishes a phase's events, reads their rows back and measures the chain.
    async fn phase(&mut self, name: &str, n: usize, period: Option<Duration>) -> anyhow::Result<ChainPhase> {
        let sent = self.publish(name, n, period).await?;
        let (found, rows) = self.wait_rows(&sent).await?;
        let first = sent.first().map_or(0, |e| e.sent_ms);
        let last_sent = sent.last().map_or(0, |e| e.sent_ms);
        let (mut total, mut ingest, mut handler) = (Vec::new(), Vec::new(), Vec::new());
        let mut last_row = first;
        for e in &sent {
            if let Some(r) = rows.get(&e.key()) {
                let ns = |ms: i64| ms.max(0) as u64 * 1_000_000;
                total.push(ns(r.recorded_at - e.sent_ms));
                ingest.push(ns(r.received_at - e.sent_ms));
                handler.push(ns(r.recorded_at - r.received_at));
                last_row = last_row.max(r.recorded_at);
            }
        }
        Ok(ChainPhase {
            events: n,
            published_in: ms(last_sent - first),
            rows: found,
            total: latency(total),
            ingest: latency(ingest),
            handler: latency(handler),
            span: ms(last_row - first),
        })
    }
}

fn lat_ms(l: &Option<Latency>) -> String {
    match l {
        Some(l) => format!("{} / {} / {}", l.p50.as_millis(), l.p99.as_millis(), l.max.as_millis()),
        None => "–".into(),
    }
}

fn phase_cells(p: Option<&Phase>) -> (String, String, String) {
    match p {
        None => ("–".into(), "–".into(), "–".into()),
        Some(p) => (
            thousands(p.throughput().round() as u64),
            match &p.latency {
                Some(l) => format!("{:.1} / {:.1}", l.p50.as_secs_f64() * 1e3, l.p99.as_secs_f64() * 1e3),
                None => "–".into(),
            },
            format!("{} of {}", thousands(p.received), thousands(p.expected)),
        ),
    }
}

fn opt_secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "–".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

/// The `docs/benchmarks.md` section's body.
pub fn markdown(r: &RulesResult, o: &Options, command: &str, machine: &str, build: &str) -> String {
    let mut out = String::new();
    let (plan, flow_plan) = load_plan();
    let _ = writeln!(out, "## Rules engine: rule → Lambda → DynamoDB latency, and the broker with rules off and on\n");
    let _ = writeln!(out, "- Command: `{command}`");
    let _ = writeln!(out, "- Date: {}", bench_common::format::now_utc());
    let _ = writeln!(
        out,
        "- Machine: {machine}. The machine is shared: other processes may have been running, and the local \
         cloud, its function processes and the benchmark's clients all run on its cores."
    );
    let _ = writeln!(
        out,
        "- Builds: `local-cloud serve` and the functions `anomaly-handler` and `telemetry-aggregator` \
         (`pump-functions`), {build}s; everything on 127.0.0.1 (MQTT over mTLS, HTTP). The functions run as \
         the local Lambda runs them: one process per function, **one invocation at a time** in arrival order \
         (`cloud/local/README.md`, \"What Lambda does not do\"), so the chain's rate is one handler's rate."
    );
    let _ = writeln!(
        out,
        "- Set-up (in {:.2} s, `aws-sdk-iot`): {} pump things `bench-pump-NNN`, each with its own certificate \
         and a thing-scoped policy (connect as itself, publish on its own `dt/pump/{{thing}}/anomalies` and \
         `…/telemetry`), a subscriber thing allowed `dt/pump/*` and one allowed `ops/rules/*` (the rules' \
         error actions). The cloud side deployed with \
         `provision::app::deploy_app` (as `provision app` does) in {:.2} s after the rules-off load: the \
         tables `pump-incidents` and `pump-telemetry-hourly`, the bucket `{BUCKET}`, both functions from the \
         binaries in the functions directory, the rules `pump_anomalies` and `pump_telemetry` with their \
         error actions, one role per function and rule. `MAINTENANCE_REPEATS` is {}: no event reaches the \
         shadow path, every event takes the incident path (conditional PutItem, then the occurrence Query).\n",
        r.setup_in.as_secs_f64(),
        o.devices.max(LOAD_PUBLISHERS),
        r.deployed_in.as_secs_f64(),
        thousands(u64::from(MAINTENANCE_REPEATS))
    );

    let _ = writeln!(out, "### Anomaly event → rule → Lambda → DynamoDB row\n");
    let _ = writeln!(
        out,
        "{} devices (MQTT 3.1.1, QoS 1) publish anomaly events in the shape of `docs/payloads.md` on \
         `dt/pump/{{thing}}/anomalies`, round-robin, each device raising a cavitation anomaly and clearing it \
         in turn (distinct ids, increasing `ts`). The rule adds `receivedAt` (`timestamp()`, when the rules \
         engine took the message) and invokes `pump-anomaly-handler` asynchronously; the handler writes the \
         incident row with `recordedAt` (its clock just before its PutItem). The publish call is stamped \
         with the same machine clock (ms since the epoch): the rows are read back with Scan (paginated) and \
         each event's publish → `recordedAt` is split at `receivedAt`. Resolution 1 ms. {WARMUP_EVENTS} \
         warm-up events first (not counted; the first starts the function's process: publish → row \
         {}). Paced: {} events at {} events/s. Burst: {BURST_EVENTS} events published back to back \
         (fewer than the local Lambda's queue of 1,000 asynchronous invocations, so none is refused): the \
         rate the chain sustains.\n",
        o.devices,
        r.cold.map_or_else(|| "–".into(), |d| format!("{} ms", d.as_millis())),
        thousands(o.events as u64),
        o.event_rate
    );
    let _ = writeln!(out, "| figure | paced ({} /s) | burst |", o.event_rate);
    let _ = writeln!(out, "| --- | ---: | ---: |");
    let row = |out: &mut String, name: &str, a: String, b: String| {
        let _ = writeln!(out, "| {name} | {a} | {b} |");
    };
    let (p, b) = (&r.paced, &r.burst);
    row(
        &mut out,
        "events published / rows found",
        format!("{} / {}", thousands(p.events as u64), thousands(p.rows as u64)),
        format!("{} / {}", thousands(b.events as u64), thousands(b.rows as u64)),
    );
    row(&mut out, "publish → row (`recordedAt`), p50 / p99 / max, ms", lat_ms(&p.total), lat_ms(&b.total));
    row(
        &mut out,
        "publish → `receivedAt` (broker, rules engine), p50 / p99 / max, ms",
        lat_ms(&p.ingest),
        lat_ms(&b.ingest),
    );
    row(
        &mut out,
        "`receivedAt` → `recordedAt` (Lambda queue, invocation, handler), p50 / p99 / max, ms",
        lat_ms(&p.handler),
        lat_ms(&b.handler),
    );
    let publishing = |c: &ChainPhase| format!("{:.2} s ({:.0} /s)", c.published_in.as_secs_f64(), c.publish_rate());
    row(&mut out, "publishing took (events/s)", publishing(p), publishing(b));
    row(
        &mut out,
        "rows per second, first publish → last row",
        format!("{:.1}", p.sustained()),
        format!("{:.1}", b.sustained()),
    );

    let _ = writeln!(out, "\n### The broker with rules off and on\n");
    let publishers = plan.fan_in_publishers;
    let _ = writeln!(
        out,
        "The same load twice over the same connections' set-up: {publishers} pump things publish telemetry \
         batches (MQTT 3.1.1, QoS 1, at most {} unacknowledged each) on `dt/pump/{{thing}}/telemetry` to one \
         subscriber on `dt/pump/+/telemetry`; each batch is the documented shape with {READINGS_PER_BATCH} \
         readings, about 5 KB (the sensor's batch under one 5 KiB metering unit), and the flow's stamp in a \
         leading `bench` member. Phases as in the broker benchmark above: {} messages each to warm up, then \
         saturated ({} each, held back only by the QoS 1 window), end-to-end window (the same count, at most \
         {} published and not delivered), paced ({} msg/s in total for {} s). **Rules off**: before the \
         deployment, no rule exists. **Rules on**: after the anomaly measurements, with the deployed \
         `pump_telemetry` rule (`SELECT *, topic(3) AS thing FROM 'dt/pump/+/telemetry'`): every message \
         is evaluated, its raw batch put in S3 by date and the aggregator invoked (`Event`; a refused \
         invocation, such as one beyond the function's queue of 1,000, goes to the rule's error action on \
         `ops/rules/pump_telemetry/errors`). The broker hands every message to the rules engine's queue \
         without waiting and the engine takes them one after another beside it, so the broker's figures \
         show what the rules cost it in CPU and memory, not a wait on the actions; how far the engine \
         itself got is below the table.\n",
        plan.inflight,
        flow_plan.warmup_per_publisher,
        thousands(flow_plan.saturated_per_publisher),
        thousands(plan.e2e_window as u64),
        flow_plan.paced_rate,
        flow_plan.paced_for.as_secs()
    );
    let _ = writeln!(out, "| figure | rules off | rules on |");
    let _ = writeln!(out, "| --- | ---: | ---: |");
    let flows = [r.off.flow.as_ref().ok(), r.on.flow.as_ref().ok()];
    type PhaseOf = fn(&FlowResult) -> &Phase;
    let phases: [(&str, PhaseOf); 3] =
        [("saturated", |f| &f.saturated), ("end-to-end window", |f| &f.windowed), ("paced", |f| &f.paced)];
    for (name, pick) in phases {
        let [off, on] = flows.map(|f| phase_cells(f.map(pick)));
        if name != "paced" {
            row(&mut out, &format!("{name}: deliveries/s"), off.0.clone(), on.0.clone());
        }
        row(&mut out, &format!("{name}: publish → delivery p50 / p99, ms"), off.1, on.1);
        row(&mut out, &format!("{name}: delivered"), off.2, on.2);
    }
    let [off, on] = [&r.off, &r.on];
    row(
        &mut out,
        "whole load, s (phases and their connections)",
        format!("{:.1}", off.elapsed.as_secs_f64()),
        format!("{:.1}", on.elapsed.as_secs_f64()),
    );
    row(&mut out, "local cloud process CPU over the load, s", opt_secs(off.cloud_cpu), opt_secs(on.cloud_cpu));
    row(&mut out, "function processes' CPU over the load, s", opt_secs(off.functions_cpu), opt_secs(on.functions_cpu));
    row(
        &mut out,
        "local cloud RSS after the load, MiB",
        off.rss_kib.map_or_else(|| "–".into(), mib),
        on.rss_kib.map_or_else(|| "–".into(), mib),
    );
    let w = &r.work;
    let _ = writeln!(
        out,
        "\nWhat the telemetry rule did with the rules-on load ({} messages): when the load ended, {} raw \
         batches were in S3; {:.1} s later {} (the bucket and the aggregates table {}), and the aggregator \
         had folded {} batches into the hourly aggregates. The rule's actions ran for {} messages in {:.1} s \
         from the start of the load: **{:.0} messages/s** through the rules engine with this rule (an S3 \
         put, then the asynchronous invoke, one message after another){}. Error actions received on \
         `ops/rules/+/errors` during the anomaly measurements and the load, by rule, failed action and \
         message: {}.",
        thousands(w.published),
        thousands(w.s3_at_load_end as u64),
        w.waited.as_secs_f64(),
        thousands(w.s3_objects as u64),
        if w.drained {
            format!("no longer changing for {} s", DRAIN_QUIET.as_secs())
        } else {
            "still changing: the run stopped waiting".to_owned()
        },
        thousands(w.folded),
        thousands(w.s3_objects as u64),
        w.busy.as_secs_f64(),
        w.rate(),
        if w.s3_objects < w.published as usize {
            format!(
                "; the other {} messages were still queued for the rules engine when the run ended",
                thousands(w.published - w.s3_objects as u64)
            )
        } else {
            String::new()
        },
        if w.errors.is_empty() {
            "none".to_owned()
        } else {
            w.errors.iter().map(|(k, n)| format!("{} × `{k}`", thousands(*n))).collect::<Vec<_>>().join("; ")
        }
    );
    let mut notes: Vec<String> = Vec::new();
    for (name, run) in [("rules off", &r.off), ("rules on", &r.on)] {
        match &run.flow {
            Err(e) => notes.push(format!("{name}: the load did not run: {e}")),
            Ok(f) => notes.extend(f.errors.iter().map(|e| format!("{name}: {e}"))),
        }
    }
    if r.maintenance_rows > 0 {
        notes.push(format!("{} incident rows asked for maintenance", r.maintenance_rows));
    }
    notes.extend(r.log_notes.iter().cloned());
    notes_section(&mut out, &notes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Message;

    #[test]
    fn a_batch_is_the_documented_shape_about_5_kb_and_carries_its_stamp() {
        let stamp = Stamp { phase: flow::WINDOWED, sent_ns: 123_456_789 };
        let payload = encode_batch(stamp, 7, 0);
        assert!((4_500..5_120).contains(&payload.len()), "{} bytes", payload.len());
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["v"], 1);
        let readings = v["readings"].as_array().unwrap();
        assert_eq!(readings.len() as u64, READINGS_PER_BATCH);
        assert!(readings.windows(2).all(|w| w[1]["ts"].as_u64() > w[0]["ts"].as_u64()));
        let m = Message { topic: "dt/pump/bench-pump-000/telemetry".into(), payload };
        assert_eq!(decode_batch(&m), Some((stamp, flow::Answer::Delivered)));
    }

    #[test]
    fn a_publishers_batches_follow_each_other_in_time_across_phases() {
        let ts = |phase, seq| {
            let v: serde_json::Value =
                serde_json::from_slice(&encode_batch(Stamp { phase, sent_ns: 1 }, seq, 0)).unwrap();
            let r = v["readings"].as_array().unwrap().clone();
            (r[0]["ts"].as_u64().unwrap(), r[r.len() - 1]["ts"].as_u64().unwrap())
        };
        let order =
            [(flow::WARMUP, 9), (flow::SATURATED, 0), (flow::SATURATED, 1), (flow::WINDOWED, 0), (flow::PACED, 0)];
        for w in order.windows(2) {
            assert!(ts(w[0].0, w[0].1).1 < ts(w[1].0, w[1].1).0, "{w:?}");
        }
        let (_, flow_plan) = load_plan();
        assert!(flow_plan.saturated_per_publisher < SLOT_BATCHES);
    }

    #[test]
    fn anomaly_events_have_the_documented_fields() {
        let e = anomaly_event("bench-paced-001-0", 1_795_698_052_126, 3, true);
        for field in ["v", "id", "ts", "reading_seq", "detector", "kind", "active", "severity", "reason", "features"] {
            assert!(e.get(field).is_some(), "{field}");
        }
        assert_eq!(anomaly_event("x", 1, 1, false)["severity"], 0.0);
    }

    #[test]
    fn error_actions_are_counted_by_rule_action_and_message_without_ids() {
        let msg = |id: &str| {
            serde_json::json!({"ruleName": "pump_telemetry", "topic": "dt/pump/x/telemetry",
                "failures": [{"failedAction": "LambdaAction", "failedResource": "arn:aws:lambda:f",
                    "errorMessage": format!("Event queue of function arn:aws:lambda:x full ({id})")}]})
            .to_string()
        };
        assert_eq!(error_kind(msg("1").as_bytes()), error_kind(msg("2").as_bytes()));
        assert_eq!(error_kind(msg("1").as_bytes()), "pump_telemetry: LambdaAction: Event queue of function full");
        let queued = serde_json::json!({"ruleName": "r", "failures": [{"failedAction": "LambdaAction",
            "errorMessage": "Rate Exceeded: the function has 1000 invocations queued"}]});
        assert_eq!(
            error_kind(queued.to_string().as_bytes()),
            "r: LambdaAction: Rate Exceeded: the function has invocations queued"
        );
        assert_eq!(error_kind(b"x"), "not JSON");
    }

    #[test]
    fn policies_scope_devices_to_their_own_topics() {
        let [(_, device), (_, consumer), (_, ops)] = policies("us-east-1", "000000000000");
        assert!(ops.contains("topicfilter/ops/rules/*"));
        assert!(device.contains("topic/dt/pump/${iot:Connection.Thing.ThingName}/anomalies"));
        assert!(consumer.contains("topicfilter/dt/pump/*"));
        for doc in [device, consumer] {
            let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
            assert_eq!(v["Version"], "2012-10-17");
        }
    }
}
