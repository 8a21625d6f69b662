//! `pump-station latency-bench`: the two control-loop latencies over enough samples to give a
//! p99, on a running site (the same site the demo starts: local cloud, provisioned core device,
//! plant, simulated core running the components from their recipes).
//!
//! 1. **Desired change → setpoint at the plant**: the operator's `UpdateThingShadow` (IoT data
//!    plane over HTTP) until the plant's speed setpoint register holds the new value, read over
//!    Modbus. The path: the local cloud's shadow → `update/delta` over MQTT → the core's bridge
//!    and ShadowManager → the controller's delta subscription over IPC → a Modbus write.
//! 2. **Anomaly event → protective action at the plant**: an anomaly event published on local
//!    pub/sub (`pump/anomalies`) over the core's IPC socket, exactly as the analyzer publishes
//!    one, until the plant's setpoint drops to the safe speed. The event is injected by this
//!    command as its own IPC client with its own token and access policy, so every event is
//!    counted and the detection delay (which depends on the fault's physics, not on the
//!    software) is left out; the demo measures fault → action separately.
//!
//! 3. **Credentials from the token exchange service**: a component's `GET` of
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` with its token, as the SDKs' container credentials
//!    providers send it, answered from the core's cache (what every component's SDK call costs
//!    after the first).
//! 4. **The core's fetch from the credentials provider**: `GET /role-aliases/{alias}/credentials`
//!    over mutual TLS with the core's certificate (a new connection each time), as the token
//!    exchange service fetches when its cache runs out.
//!
//! Each sample waits for the previous one to finish (setpoint written, reported, protection
//! released by the operator), so samples never overlap. The plant is polled every millisecond,
//! which bounds each sample's resolution.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use kit::ipc::IpcClient;
use kit::ipc::model::{PubSubMessage, PublishToTopicRequest};
use pump_types::{ANOMALIES_TOPIC, AnomalyEvent, AnomalyKind};
use serde::Serialize;
use serde_json::{Value, json};

use crate::site::{ModbusProbe, Site, SiteOptions, THING};

/// The IPC client this command is on the core (its token and access policy are its own).
const BENCH_CLIENT: &str = "com.example.pump.LatencyBench";
/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(30);
/// How often the plant is read while waiting for a change.
const POLL: Duration = Duration::from_millis(1);
/// The speeds the operator alternates between (each differs from the one before).
const SPEEDS: [f64; 4] = [2400.0, 2600.0, 2300.0, 2500.0];
/// The identity the credential samples use on the core (a component's token of its own).
const CREDENTIALS_CLIENT: &str = "com.example.pump.LatencyBenchCredentials";
/// The anomaly events' id prefix; an event without it came from the analyzer.
const EVENT_PREFIX: &str = "latency-bench-";

/// The goals: p99 of each path, milliseconds.
pub const DESIRED_GOAL_P99_MS: f64 = 20.0;
/// See [`DESIRED_GOAL_P99_MS`].
pub const ANOMALY_GOAL_P99_MS: f64 = 50.0;
/// See [`DESIRED_GOAL_P99_MS`]: a cached answer on loopback.
pub const CREDENTIALS_GOAL_P99_MS: f64 = 5.0;
/// See [`DESIRED_GOAL_P99_MS`]: a TLS handshake and a new session in the local cloud.
pub const PROVIDER_GOAL_P99_MS: f64 = 100.0;

/// `pump-station latency-bench` flags.
#[derive(Debug, clap::Args)]
pub struct LatencyBenchArgs {
    /// Desired-speed changes the operator makes.
    #[arg(long, default_value_t = 200)]
    pub speed_changes: usize,
    /// Anomaly events published on local pub/sub, each followed by its clearing event and the
    /// operator's resume.
    #[arg(long, default_value_t = 200)]
    pub anomalies: usize,
    /// Credential requests to the core's token exchange service (cached answers).
    #[arg(long, default_value_t = 200)]
    pub credential_fetches: usize,
    /// Requests from the core's identity to the credentials provider (each a new session).
    #[arg(long, default_value_t = 50)]
    pub provider_fetches: usize,
    /// The plant's noise seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// A directory with the components' own binaries (`pump-sensor`, `pump-analyzer`,
    /// `pump-controller`); without it this executable is staged under each name.
    #[arg(long)]
    pub component_bins: Option<PathBuf>,
    /// Where the run's files and `latency.json` go.
    #[arg(long, default_value = "target/latency-bench")]
    pub out: PathBuf,
    /// The Markdown file whose section between the `pump-station-latency` markers is replaced
    /// (created if missing); without it the section is only printed.
    #[arg(long)]
    pub benchmarks: Option<PathBuf>,
}

/// One path's samples, milliseconds, in the order taken.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Samples {
    /// What was measured.
    pub path: String,
    /// The goal for p99, ms.
    pub goal_p99_ms: f64,
    /// Every sample, ms.
    pub samples_ms: Vec<f64>,
}

impl Samples {
    /// p50, p99 and max, ms (nearest rank); `None` without samples.
    pub fn summary(&self) -> Option<(f64, f64, f64)> {
        let ns = self.samples_ms.iter().map(|ms| (ms * 1e6) as u64).collect();
        let l = bench_common::stats::latency(ns)?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Some((ms(l.p50), ms(l.p99), ms(l.max)))
    }

    /// Whether p99 is under the goal.
    pub fn met(&self) -> bool {
        self.summary().is_some_and(|(_, p99, _)| p99 < self.goal_p99_ms)
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    /// Desired change → setpoint at the plant.
    pub desired: Samples,
    /// Anomaly event → protective action at the plant.
    pub anomaly: Samples,
    /// A component's credential request to the token exchange service (cached).
    pub credentials: Samples,
    /// The core's credential request to the credentials provider.
    pub provider: Samples,
    /// Anomaly events the analyzer itself raised during the run (none are expected: no fault
    /// is injected); each would have interfered with a sample.
    pub analyzer_events: usize,
}

/// Runs the benchmark; the process's exit code.
pub fn main(args: LatencyBenchArgs) -> ExitCode {
    cli_shell::init_logging("error");
    let machine = bench_common::machine::Machine::describe();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pump-station latency-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = match runtime.block_on(execute(&args)) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("pump-station latency-bench: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let profile = if cfg!(debug_assertions) { "" } else { " --release" };
    let rest: Vec<String> = std::env::args().skip(1).collect();
    let command = format!("cargo run{profile} -- {}", rest.join(" "));
    let section = section(&run, &command, &bench_common::format::now_utc(), &machine.summary());
    match &args.benchmarks {
        Some(path) => {
            if let Err(e) = bench_common::section::write_section(path, &section, &markers()) {
                eprintln!("pump-station latency-bench: {e}");
                return ExitCode::FAILURE;
            }
            eprintln!("latency: {}", path.display());
        }
        None => println!("{section}"),
    }
    ExitCode::SUCCESS
}

/// Starts the site, takes the samples, stops the site, and keeps `latency.json` in `--out`.
pub async fn execute(args: &LatencyBenchArgs) -> anyhow::Result<Run> {
    let dir = args.out.join("run");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let mut site = Site::start_cloud_and_device(&dir).await?;
    let options = SiteOptions {
        seed: args.seed,
        detector: "both",
        bins: args.component_bins.as_deref(),
        footprint_period: Duration::from_secs(1),
        wait: Duration::from_secs(60),
    };
    let result = match site.start_site(&options).await {
        Ok(_) => measure(&site, args).await,
        Err(e) => Err(e),
    };
    site.stop().await;
    let run = result?;
    let file = args.out.join("latency.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&run)?).with_context(|| format!("writing {}", file.display()))?;
    Ok(run)
}

async fn measure(site: &Site, args: &LatencyBenchArgs) -> anyhow::Result<Run> {
    let core = site.core()?;
    let mut probe = ModbusProbe::connect(site.plant().modbus_addr()).await?;
    probe.poll = POLL;
    // The analyzer's own anomaly events, counted while the bench runs.
    let mut analyzer_events = core
        .pubsub()
        .subscribe(BENCH_CLIENT, ANOMALIES_TOPIC, None)
        .map_err(|e| anyhow::anyhow!("subscribing to {ANOMALIES_TOPIC}: {e}"))?;
    // The controller has reported and follows the shadow before the first sample.
    // One cycle through every sample: consecutive speeds always differ, so each set is a change.
    let mut speeds = SPEEDS.iter().copied().cycle();
    operator_sets(site, &mut probe, speeds.next().expect("speeds")).await?;

    let mut run = Run {
        desired: Samples {
            path: "desired change (UpdateThingShadow) → setpoint at the plant".into(),
            goal_p99_ms: DESIRED_GOAL_P99_MS,
            samples_ms: Vec::new(),
        },
        anomaly: Samples {
            path: "anomaly event (PublishToTopic pump/anomalies) → protective action at the plant".into(),
            goal_p99_ms: ANOMALY_GOAL_P99_MS,
            samples_ms: Vec::new(),
        },
        credentials: Samples {
            path: "credentials: a component's GET of the token exchange service (cached) → AWS credentials".into(),
            goal_p99_ms: CREDENTIALS_GOAL_P99_MS,
            samples_ms: Vec::new(),
        },
        provider: Samples {
            path: "credentials: the core's GET of the credentials provider over mTLS (new connection, new session)"
                .into(),
            goal_p99_ms: PROVIDER_GOAL_P99_MS,
            samples_ms: Vec::new(),
        },
        analyzer_events: 0,
    };
    eprintln!("latency-bench: {} credential requests …", args.credential_fetches);
    run.credentials.samples_ms = credential_samples(site, args.credential_fetches).await?;
    eprintln!("latency-bench: {} credentials provider requests …", args.provider_fetches);
    run.provider.samples_ms = provider_samples(site, args.provider_fetches).await?;
    eprintln!("latency-bench: {} desired changes …", args.speed_changes);
    for _ in 0..args.speed_changes {
        run.desired.samples_ms.push(operator_sets(site, &mut probe, speeds.next().expect("speeds")).await?);
    }

    eprintln!("latency-bench: {} anomaly events …", args.anomalies);
    let token = core.tokens().issue(BENCH_CLIENT);
    core.access().set_component(
        BENCH_CLIENT,
        &json!({"accessControl": {"aws.greengrass.ipc.pubsub": {"latency-bench:pubsub:1": {
            "policyDescription": "Injects anomaly events as the analyzer publishes them.",
            "operations": ["aws.greengrass#PublishToTopic"],
            "resources": [ANOMALIES_TOPIC]
        }}}}),
    );
    let ipc = IpcClient::connect(core.socket_path(), token).await.context("connecting to the core's IPC socket")?;
    let mut changes = core.shadows().changes();
    for i in 0..args.anomalies {
        let before = probe.read().await?;
        let id = format!("{EVENT_PREFIX}{i}");
        let started = Instant::now();
        publish(&ipc, &anomaly(&id, true)).await?;
        probe
            .wait_for("a protective action", WAIT, |s| {
                s.setpoint_rpm < before.setpoint_rpm - 1.0 || !s.run || (s.bypass_open && !before.bypass_open)
            })
            .await?;
        run.anomaly.samples_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        // Cleared, the controller holds the action until the operator changes a desired value;
        // it says so in `reported.protection` before the operator resumes.
        publish(&ipc, &anomaly(&id, false)).await?;
        wait_local_reported(&mut changes, "the protection holding after the clear", |reported| {
            reported.pointer("/protection/reason").and_then(Value::as_str).is_some_and(|r| r.contains("holding"))
        })
        .await?;
        operator_sets(site, &mut probe, speeds.next().expect("speeds")).await?;
    }
    while let Ok(message) = analyzer_events.receiver.try_recv() {
        let id = match &message {
            PubSubMessage::Json(m) => m.message["id"].as_str().unwrap_or_default().to_owned(),
            PubSubMessage::Binary(_) => String::new(),
        };
        if !id.starts_with(EVENT_PREFIX) {
            run.analyzer_events += 1;
        }
    }
    Ok(run)
}

/// `n` credential requests as a component's SDK sends them (its token in `Authorization`), each
/// checked to carry credentials; ms each.
async fn credential_samples(site: &Site, n: usize) -> anyhow::Result<Vec<f64>> {
    let core = site.core()?;
    let uri = core.token_exchange().uri().to_owned();
    let rest = uri.strip_prefix("http://").context("the token exchange service's URL")?;
    let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let token = core.tokens().issue(CREDENTIALS_CLIENT);
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = crate::site::http_request(addr, "GET", path, &[("Authorization", &token)], "").await?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let creds: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if status != 200 || creds["AccessKeyId"].as_str().is_none_or(str::is_empty) {
            bail!("the token exchange service answered {status}: {body}");
        }
        samples.push(elapsed);
    }
    Ok(samples)
}

/// `n` requests to the credentials provider with the core's certificate, each on a new TLS
/// connection, each checked to carry credentials; ms each.
async fn provider_samples(site: &Site, n: usize) -> anyhow::Result<Vec<f64>> {
    let device = &site.device;
    let base = device
        .endpoints
        .credentials_provider
        .clone()
        .context("the device's endpoints.json names no credentials provider")?;
    let url = format!("{}/role-aliases/{}/credentials", base.trim_end_matches('/'), crate::site::ROLE_ALIAS);
    let key = device_sim::core::key_store::DeviceKey::File(device.files.private_key.clone());
    let tls = device_sim::core::bridge::device_tls_config(&device.endpoints.ca_file, &device.files.certificate, &key)?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        // A new client each time: a new connection and handshake, as after the cache runs out.
        let client = sdk_mtls::MtlsHttpClient::new(tls.clone());
        let started = Instant::now();
        let (status, body) = client.get(&url, &[("x-amzn-iot-thingname", THING)], 64 * 1024).await?;
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        let creds: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 || creds.pointer("/credentials/accessKeyId").and_then(Value::as_str).is_none() {
            bail!("the credentials provider answered {status}: {}", String::from_utf8_lossy(&body));
        }
        samples.push(elapsed);
    }
    Ok(samples)
}

/// The operator sets `speed` (auto mode) and the plant follows: the time until the setpoint
/// register holds it, ms; returns once the cloud shadow reports it too.
async fn operator_sets(site: &Site, probe: &mut ModbusProbe, speed: f64) -> anyhow::Result<f64> {
    let started = Instant::now();
    site.set_desired(json!({"speedRpm": speed as i64, "mode": "auto"})).await?;
    probe
        .wait_for(&format!("running at setpoint {speed}"), WAIT, |s| (s.setpoint_rpm - speed).abs() < 0.5 && s.run)
        .await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    site.wait_cloud_shadow(&format!("reported speedRpm {speed}"), WAIT, |d| {
        d.pointer("/state/reported/speedRpm").and_then(Value::as_f64).is_some_and(|r| (r - speed).abs() < 0.5)
    })
    .await?;
    Ok(elapsed)
}

/// An anomaly event as the analyzer sends it: cavitation, whose configured action is
/// `reduce_speed`.
fn anomaly(id: &str, active: bool) -> AnomalyEvent {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    AnomalyEvent {
        v: pump_types::PAYLOAD_VERSION,
        id: id.to_owned(),
        ts,
        reading_seq: 0,
        detector: "rules".into(),
        kind: AnomalyKind::Cavitation,
        active,
        severity: 0.8,
        reason: "injected by pump-station latency-bench".into(),
        features: Default::default(),
    }
}

async fn publish(ipc: &IpcClient, event: &AnomalyEvent) -> anyhow::Result<()> {
    let request = PublishToTopicRequest {
        topic: ANOMALIES_TOPIC.into(),
        publish_message: PubSubMessage::json(serde_json::to_value(event)?),
    };
    ipc.publish_to_topic(&request).await.context("PublishToTopic pump/anomalies")?;
    Ok(())
}

/// Waits until an accepted update of the local `pump` shadow reports what `pred` wants.
async fn wait_local_reported(
    changes: &mut tokio::sync::broadcast::Receiver<device_sim::core::local_shadow::ShadowChange>,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Err(_) => bail!("the local shadow never showed {what} within {WAIT:?}"),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => bail!("the local shadow's changes ended: {e}"),
            Ok(Ok(change)) => {
                if change.key.0 == THING
                    && change.key.1 == pump_types::SHADOW_NAME
                    && change.accepted.pointer("/state/reported").is_some_and(&pred)
                {
                    return Ok(());
                }
            }
        }
    }
}

/// The markers of the section this command writes.
pub fn markers() -> bench_common::section::Markers {
    bench_common::section::Markers::new("pump-station-latency")
}

/// The "Control-loop latency" section of `docs/benchmarks.md`, between its markers.
pub fn section(run: &Run, command: &str, date: &str, machine: &str) -> String {
    let m = markers();
    let mut rows = String::new();
    for s in [&run.desired, &run.anomaly, &run.credentials, &run.provider] {
        let (p50, p99, max) = s.summary().map_or(("–".into(), "–".into(), "–".into()), |(a, b, c)| {
            (format!("{a:.1}"), format!("{b:.1}"), format!("{c:.1}"))
        });
        let met = if s.met() { "met" } else { "**not met**" };
        rows.push_str(&format!(
            "| {} | {} | {p50} | {p99} | {max} | under {:.0}: {met} |\n",
            s.path,
            s.samples_ms.len(),
            s.goal_p99_ms
        ));
    }
    format!(
        "{}\n## Control-loop and credential latency: desired change and anomaly event to the plant, AWS credentials to a component\n\n\
         - Command: `{command}`\n\
         - Date: {date}\n\
         - Machine: {machine}. The machine is shared: other processes may have been running.\n\
         - Run: the demo's site (local cloud, provisioned core device, plant, simulated core running the components from their recipes); every sample waits for the one before to finish.\n\n\
         | path | samples | p50, ms | p99, ms | max, ms | p99 goal, ms |\n| --- | ---: | ---: | ---: | ---: | --- |\n{rows}\n\
         Anomaly events the analyzer raised by itself during the run (none expected, no fault was injected): {}.\n\n\
         ### How to read these figures\n\n\
         - Desired change: from the operator's `UpdateThingShadow` call (IoT data plane over HTTP) until the plant's speed setpoint register, read over Modbus TCP, holds the new speed. It includes the HTTP call, the cloud's `update/delta` over MQTT, the core's bridge and ShadowManager, the controller's IPC delta subscription and its Modbus write.\n\
         - Anomaly event: from the `PublishToTopic` call on `pump/anomalies` over the core's IPC socket (as the analyzer publishes) until the setpoint drops to the safe speed. The detection delay before an event (a fault's physics over the analyzer's window) is not in it; the demo's report gives fault → action for a real fault.\n\
         - Credentials: a component's request to the core's token exchange service with its token, answered from the core's cache (the first request of the run fills it and is the max; the SDKs cache too, so a component asks about once per credential lifetime); and the core's own request to the AWS IoT credentials provider with its certificate on a new mutual-TLS connection, which the local cloud answers with a new role session — what the token exchange service pays when its cache runs out (five minutes before expiry).\n\
         - The plant is read every 1 ms: a sample is at most about 1 ms (one Modbus round trip) late. Nearest-rank percentiles.\n\
         {}\n",
        m.begin, run.analyzer_events, m.end
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_is_nearest_rank_and_the_goal_is_checked_on_p99() {
        let mut s = Samples { path: "p".into(), goal_p99_ms: 20.0, samples_ms: (1..=200).map(f64::from).collect() };
        let (p50, p99, max) = s.summary().unwrap();
        assert_eq!((p50, p99, max), (100.0, 198.0, 200.0));
        assert!(!s.met());
        s.samples_ms = vec![5.0; 199];
        s.samples_ms.push(300.0);
        assert!(s.met(), "one slow sample in 200 is above p99");
        s.samples_ms.clear();
        assert!(!s.met(), "no samples meet nothing");
    }

    #[test]
    fn the_section_names_each_path_its_figures_and_whether_the_goal_was_met() {
        let run = Run {
            desired: Samples { path: "desired".into(), goal_p99_ms: 20.0, samples_ms: vec![3.0, 4.0] },
            anomaly: Samples { path: "anomaly".into(), goal_p99_ms: 50.0, samples_ms: vec![60.0] },
            credentials: Samples { path: "credentials".into(), goal_p99_ms: 5.0, samples_ms: vec![0.5] },
            provider: Samples { path: "provider".into(), goal_p99_ms: 100.0, samples_ms: vec![] },
            analyzer_events: 0,
        };
        let text = section(&run, "cargo run -- latency-bench", "today", "a machine");
        assert!(text.contains("| desired | 2 | 3.0 | 4.0 | 4.0 | under 20: met |"), "{text}");
        assert!(text.contains("| anomaly | 1 | 60.0 | 60.0 | 60.0 | under 50: **not met** |"), "{text}");
        assert!(text.contains("| credentials | 1 | 0.5 | 0.5 | 0.5 | under 5: met |"), "{text}");
        assert!(text.contains("| provider | 0 | – | – | – | under 100: **not met** |"), "{text}");
        let m = markers();
        assert!(text.starts_with(&m.begin) && text.trim_end().ends_with(&m.end));
    }
}
