//! The demo: the whole story offline, step by step, with a line of progress per step. Exits 0
//! when every step held; otherwise non-zero, naming the step that failed. The evidence goes to
//! `--out` (default `target/demo`): `report.json`, `report.md`, and `run/` with everything the
//! run kept (the cloud's data directory, the device's certificate, the core's logs).
//!
//! Steps:
//! 1. start: the local cloud; the core device provisioned through `aws-sdk-iot` with the shipped
//!    least-privilege policy; the plant; the simulated core running the components from their
//!    recipes (and the model component the analyzer depends on), connected to the cloud as the
//!    device, the analyzer configured with `--detector`;
//! 2. normal operation: telemetry reaches the cloud, the `pump` shadow reports the pump and the
//!    analyzer's model (`reported.model`);
//! 3. the operator sets a new desired speed through the IoT data plane → local delta → the
//!    controller writes the setpoint at the plant → the reported state reaches the cloud;
//! 4. a fault at the plant → the analyzer's anomaly event (locally and in the cloud) → the
//!    controller's protective action at the plant → `protection` reported in the cloud;
//! 5. the fault cleared → the operator resumes → the plant runs at the desired speed again;
//! 6. the cloud reacts: the cloud side deployed (`provision app`); the same fault three times →
//!    the rule → the Lambda anomaly handler → incident rows in DynamoDB → `desired.mode`
//!    maintenance → the controller stops the pump → reported; the operator returns it to service
//!    ([`crate::reaction`]);
//! 7. over the air: a new analyzer version, deferred by the controller while its protection is
//!    active;
//! 8. the retrained model released as `provision model release` does it (checked, published with
//!    its Install-time check, the group's deployment revised), then a model for other features
//!    failing that check on the core and rolled back;
//! 9. a broken analyzer version, rolled back, its cause shown in the cloud;
//! 10. the local cloud stops for a while: nothing is lost, the shadow converges;
//! 11. the operator rotates the core's certificate with a rotation job ([`crate::rotation`]);
//! 12. the core, handed to its launcher, updates itself to a new nucleus version;
//! 13. hardware failure: the core device dies with its disk; the replacement onboards by claim
//!     under the same thing name and the site recovers ([`crate::recovery`]).
//!
//! Each step carries a stable key ([`provision::audit::steps`]). When every step held, the run
//! ends with the audit of its own cloud in `{out}/audit/` ([`crate::audit`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::cost::{Observed, Prices, SiteCost, Units};
use crate::observer::{self, Observer};
use crate::recovery;
use crate::report::{AnomalyRecord, Latency, PlantRead, Report, StepOutcome};
use crate::rollout;
use crate::site::{self, COMPONENTS, ModbusProbe, Site, SiteOptions, THING};
use provision::audit::steps as step_key;

/// How long any one wait may take before its step fails.
const WAIT: Duration = Duration::from_secs(60);

/// `pump-station demo` flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the report and the run's files go.
    #[arg(long, default_value = "target/demo")]
    pub out: PathBuf,
    /// Leave everything running at the end and print how to reach it (Ctrl-C stops).
    #[arg(long)]
    pub keep_running: bool,
    /// The plant's noise seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Desired-speed changes the operator makes (latency samples).
    #[arg(long, default_value_t = 5)]
    pub speed_changes: usize,
    /// Fault → protective action cycles (latency samples).
    #[arg(long, default_value_t = 3)]
    pub fault_cycles: usize,
    /// Seconds the local cloud is stopped in the connectivity-loss step (0 skips the step).
    #[arg(long, default_value_t = 10)]
    pub outage_seconds: u64,
    /// The analyzer's detectors (its `detector` configuration, set by the deployment).
    #[arg(long, value_enum, default_value_t = Detector::Both)]
    pub detector: Detector,
    /// A directory with the components' own binaries (`pump-sensor`, `pump-analyzer`,
    /// `pump-controller`) to stage as their artifacts; without it, this executable is staged
    /// under each name, so the figures show its size, not the components' own.
    #[arg(long)]
    pub component_bins: Option<PathBuf>,
}

/// How often the footprint reads `/proc`.
const FOOTPRINT_PERIOD: Duration = Duration::from_millis(500);

/// The analyzer's `detector` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Detector {
    /// The rule baseline only.
    Rules,
    /// The ONNX model only (the rules stand in while it cannot run).
    Model,
    /// Both, each raising its own anomalies.
    Both,
}

impl Detector {
    /// As the analyzer's configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::Rules => "rules",
            Detector::Model => "model",
            Detector::Both => "both",
        }
    }

    /// Whether an anomaly raised by `detector` is one this configuration runs.
    fn raises(self, detector: &str) -> bool {
        match self {
            Detector::Rules => detector == "rules",
            Detector::Model => detector == "model",
            Detector::Both => detector == "rules" || detector == "model",
        }
    }

    /// Whether `reported.model` says what this configuration should lead to: the model detector
    /// running for `model` and `both`; for `rules`, any status from the analyzer but an error.
    fn model_report_holds(self, model: &Value) -> bool {
        let status = model["status"].as_str().unwrap_or("unknown");
        match self {
            Detector::Rules => !matches!(status, "unknown" | "error") && model["detector"] == "rules",
            Detector::Model | Detector::Both => status == "running" && model["detector"] == self.as_str(),
        }
    }
}

/// Runs the demo; the process's exit code.
pub fn main(args: DemoArgs) -> ExitCode {
    exit_code(&execute(args))
}

/// Runs the demo on its own async runtime; the report, whether every step held or not.
pub fn execute(args: DemoArgs) -> anyhow::Result<Report> {
    cli_shell::init_logging("error");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(run(args))
}

/// The exit code for a demo's outcome, saying on stderr what failed.
pub fn exit_code(result: &anyhow::Result<Report>) -> ExitCode {
    match result {
        Ok(report) if report.passed => ExitCode::SUCCESS,
        Ok(report) => {
            let failed = report.steps.iter().find(|s| !s.passed).map_or("?".into(), |s| s.name.clone());
            eprintln!("pump-station demo: FAILED at step {failed}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pump-station demo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Steps with progress lines and their outcomes in the report.
struct Steps {
    report: Report,
    total: usize,
}

impl Steps {
    async fn run<F, Fut>(&mut self, name: &str, key: &str, description: &str, f: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<String>>,
    {
        let n = self.report.steps.len() + 1;
        eprintln!("[{n}/{}] {description} …", self.total);
        let started = Instant::now();
        let result = f().await;
        let seconds = started.elapsed().as_secs_f64();
        let (passed, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, format!("{e:#}")),
        };
        eprintln!("      {} {detail} ({seconds:.1} s)", if passed { "ok:" } else { "FAILED:" });
        self.report.steps.push(StepOutcome {
            name: name.into(),
            key: key.into(),
            description: description.into(),
            passed,
            seconds,
            detail,
        });
        passed
    }
}

fn speed_reported(doc: &Value) -> Option<f64> {
    doc.pointer("/state/reported/speedRpm").and_then(Value::as_f64)
}

/// Waits until the cloud shadow satisfies `pred`.
async fn wait_cloud_shadow(site: &Site, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    site.wait_cloud_shadow(what, WAIT, pred).await
}

async fn run(args: DemoArgs) -> anyhow::Result<Report> {
    let dir = args.out.join("run");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    // An earlier run's audit describes another cloud: gone before this one starts.
    let audit_dir = crate::audit::audit_dir(&args.out);
    if audit_dir.exists() {
        std::fs::remove_dir_all(&audit_dir).with_context(|| format!("clearing {}", audit_dir.display()))?;
    }
    let started = time::OffsetDateTime::now_utc();
    let mut steps = Steps { report: Report::default(), total: if args.outage_seconds > 0 { 13 } else { 12 } };
    steps.report.started = started.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();

    let mut site: Option<Site> = None;
    let mut obs: Option<Observer> = None;
    let mut deployments = Vec::new();
    let ok = steps
        .run("1", step_key::START, "start the local cloud, provision the core device, start the plant and the core; build, publish and deploy the components to the core's thing group", || async {
            let s = site.insert(Site::start_cloud_and_device(&dir).await?);
            // The observer listens before the core connects, so it sees every message.
            let (cert, key) = observer::provision(&s.iot, &dir.join("observer"), THING).await?;
            obs = Some(
                Observer::start(
                    &s.endpoints,
                    cert,
                    key,
                    &[
                        format!("dt/pump/{THING}/#"),
                        format!("$aws/things/{THING}/shadow/name/pump/update/documents"),
                        // Accepted updates: what each shadow operation was billed on.
                        format!("{}/accepted", shadow_update_topic()),
                    ],
                )
                .await?,
            );
            let timeline = s.start_site(&SiteOptions {
                seed: args.seed,
                detector: args.detector.as_str(),
                bins: args.component_bins.as_deref(),
                footprint_period: FOOTPRINT_PERIOD,
                wait: WAIT,
            })
            .await?;
            let detail = format!(
                "cloud MQTT {} HTTP {}; thing {THING} with policies {}, {} and {} ({} changes); plant Modbus {}; deployment {} to thing group {} converged in {} ms; {} components RUNNING",
                s.endpoints.mqtt,
                s.endpoints.http,
                s.device.record.policy_name,
                provision::DEFAULT_DEPLOYMENTS_POLICY_NAME,
                provision::DEFAULT_ROTATION_POLICY_NAME,
                s.device.changes.len(),
                s.plant().modbus_addr(),
                timeline.deployment_id,
                crate::rollout::THING_GROUP,
                timeline.converged_ms.unwrap_or_default(),
                COMPONENTS.len()
            );
            deployments.push(timeline);
            Ok(detail)
        })
        .await;
    steps.report.deployments.append(&mut deployments);
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }
    let site_ref = site.as_ref().expect("started");
    let obs_ref = obs.as_ref().expect("started");
    let mut probe = ModbusProbe::connect(site_ref.plant().modbus_addr()).await?;

    let telemetry = format!("dt/pump/{THING}/telemetry");
    let ok = steps
        .run("2", step_key::NORMAL_OPERATION, "normal operation: telemetry reaches the cloud, the shadow reports the pump and the model", || async {
            let mut rx = obs_ref.subscribe();
            for _ in obs_ref.count(&telemetry)..2 {
                observer::wait_for(&mut rx, "telemetry batch", WAIT, |s| s.topic == telemetry).await?;
            }
            let states = site_ref.core.as_ref().context("the core is not running")?.states();
            let unwell: Vec<String> = COMPONENTS
                .iter()
                .filter(|c| states.get(c.name) != Some(&device_sim::core::ComponentState::Running))
                .map(|c| format!("{} is {:?}", c.name, states.get(c.name)))
                .collect();
            if !unwell.is_empty() {
                bail!("{} (logs under {})", unwell.join(", "), site_ref.dir.join("core/logs").display());
            }
            wait_cloud_shadow(site_ref, "the pump reported", |d| speed_reported(d).is_some()).await?;
            // The analyzer says what it runs on `pump/model` at start, on each change and
            // periodically; the controller reports it. A model that could not load yet (the
            // analyzer may start before the model's Install made its link) shows as an error
            // until the analyzer picks it up.
            let detector = args.detector;
            let wanted = format!("reported.model for detector {}", detector.as_str());
            let doc = match wait_cloud_shadow(site_ref, &wanted, |d| detector.model_report_holds(&model_reported(d)))
                .await
            {
                Ok(doc) => doc,
                Err(e) => {
                    let last = site_ref.cloud_shadow().await.ok().flatten().map(|d| model_reported(&d));
                    bail!("{e:#}; last reported.model: {}", last.unwrap_or(Value::Null));
                }
            };
            let model = model_reported(&doc);
            let state = probe.read().await?;
            Ok(format!(
                "{} telemetry batches in the cloud; components RUNNING; the pump shadow reports; the plant runs at {:.0} rpm, {:.1} m3/h; detector {}: model {} {} {}, running {}",
                obs_ref.count(&telemetry),
                state.m.speed_rpm,
                state.m.flow_m3h,
                detector.as_str(),
                model["name"].as_str().unwrap_or(""),
                model["version"].as_str().unwrap_or(""),
                model["status"].as_str().unwrap_or(""),
                model["running"]
            ))
        })
        .await;
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let mut delta_samples = Vec::new();
    let mut plant_reads = Vec::new();
    let ok = steps
        .run("3", step_key::SHADOW_DESIRED, "the operator sets a desired speed in the cloud → actuation at the plant → reported", || async {
            let speeds = [2400.0, 2600.0, 2200.0, 2500.0, 2300.0, 2700.0, 2450.0, 2550.0];
            let mut last = None;
            for &speed in speeds.iter().cycle().take(args.speed_changes.max(1)) {
                let t0 = Instant::now();
                let version = site_ref.set_desired(json!({"speedRpm": speed as i64, "mode": "auto"})).await?;
                let state = probe
                    .wait_for(&format!("speed setpoint {speed}"), WAIT, |s| (s.setpoint_rpm - speed).abs() < 0.5)
                    .await?;
                delta_samples.push(t0.elapsed().as_secs_f64() * 1000.0);
                plant_reads.push(PlantRead::new("desired", Some(speed), &state));
                let doc = wait_cloud_shadow(site_ref, &format!("reported speedRpm {speed}"), |d| {
                    speed_reported(d).is_some_and(|r| (r - speed).abs() < 0.5)
                })
                .await?;
                last = Some((version, doc["version"].as_u64().unwrap_or(0)));
            }
            let (desired_version, final_version) = last.unwrap_or_default();
            Ok(format!(
                "{} desired changes applied; last desired at shadow version {desired_version}, reported at version {final_version}",
                delta_samples.len()
            ))
        })
        .await;
    steps.report.delta_to_actuation = Latency::from_samples(delta_samples);
    steps.report.facts.plant_reads.append(&mut plant_reads);
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let anomalies = format!("dt/pump/{THING}/anomalies");
    let mut fault_samples = Vec::new();
    let mut anomaly_samples = Vec::new();
    let mut window_samples = Vec::new();
    let mut resume_speed = 2500.0;
    let ok = steps
        .run(
            "4",
            step_key::FAULT_PROTECTION,
            "a fault at the plant → anomaly → protective action at the plant → reported in the cloud",
            || async {
                let mut details = Vec::new();
                for cycle in 1..=args.fault_cycles.max(1) {
                    if cycle > 1 {
                        let state = clear_and_resume(site_ref, obs_ref, &mut probe, &anomalies, resume_speed).await?;
                        plant_reads.push(PlantRead::new("resume", Some(resume_speed), &state));
                        resume_speed += 50.0;
                    }
                    let before = probe.read().await?;
                    plant_reads.push(PlantRead::new("before fault", None, &before));
                    let mut rx = obs_ref.subscribe();
                    let t0 = Instant::now();
                    site_ref
                        .plant_control("POST", "/faults", Some(json!({"kind": "cavitation", "severity": 0.8})))
                        .await?;
                    let state = probe
                        .wait_for("a protective action", WAIT, |s| {
                            s.setpoint_rpm < before.setpoint_rpm - 1.0
                                || !s.run
                                || (s.bypass_open && !before.bypass_open)
                        })
                        .await?;
                    let acted_ms = epoch_ms();
                    fault_samples.push(t0.elapsed().as_secs_f64() * 1000.0);
                    plant_reads.push(PlantRead::new("fault", None, &state));
                    let event = observer::wait_for(&mut rx, "a cavitation anomaly event in the cloud", WAIT, |m| {
                        m.topic == anomalies && m.doc["active"] == true && m.doc["kind"] == "cavitation"
                    })
                    .await?;
                    let raised_by = event.doc["detector"].as_str().unwrap_or_default();
                    if !args.detector.raises(raised_by) {
                        bail!(
                            "the anomaly was raised by the {raised_by:?} detector, not by detector {}: {}",
                            args.detector.as_str(),
                            event.doc
                        );
                    }
                    if let Some(ts) = event.doc["ts"].as_u64() {
                        anomaly_samples.push(acted_ms.saturating_sub(ts) as f64);
                    }
                    // The readings around it reach S3 with the core's scoped credentials.
                    let raised: pump_types::AnomalyEvent =
                        serde_json::from_value(event.doc.clone()).context("the anomaly event")?;
                    let key = pump_analyzer::upload::object_key(THING, &raised);
                    let stored_ms = site_ref.wait_for_window(&key, WAIT).await?;
                    window_samples.push(stored_ms.saturating_sub(raised.ts) as f64);
                    let doc = wait_cloud_shadow(site_ref, "protection.active", |d| {
                        d.pointer("/state/reported/protection/active") == Some(&json!(true))
                    })
                    .await?;
                    details.push(format!(
                        "cycle {cycle}: {} by {} → setpoint {:.0} rpm, run {}, bypass {}; reported protection: {}; window s3://{}/{key}",
                        event.doc["kind"],
                        event.doc["detector"],
                        state.setpoint_rpm,
                        state.run,
                        state.bypass_open,
                        doc.pointer("/state/reported/protection/reason").unwrap_or(&Value::Null),
                        site::ANOMALY_BUCKET
                    ));
                }
                Ok(details.join("; "))
            },
        )
        .await;
    steps.report.fault_to_action = Latency::from_samples(fault_samples);
    steps.report.anomaly_to_action = Latency::from_samples(anomaly_samples);
    steps.report.anomaly_to_window = Latency::from_samples(window_samples);
    steps.report.facts.plant_reads.append(&mut plant_reads);
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let ok = steps
        .run("5", step_key::FAULT_RESUME, "the fault is cleared → the anomaly clears → the operator resumes → the plant follows", || async {
            let state = clear_and_resume(site_ref, obs_ref, &mut probe, &anomalies, resume_speed).await?;
            plant_reads.push(PlantRead::new("resume", Some(resume_speed), &state));
            Ok(format!(
                "anomaly cleared; the operator resumed at {resume_speed:.0} rpm: setpoint {:.0} rpm, run {}, bypass {}; protection inactive in the cloud",
                state.setpoint_rpm, state.run, state.bypass_open
            ))
        })
        .await;
    steps.report.facts.plant_reads.append(&mut plant_reads);
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let mut reaction = None;
    let ok = steps
        .run("6", step_key::CLOUD_REACTION, "the cloud reacts: the cloud side is deployed (tables, Lambda functions, topic rules, roles); the same fault three times → rule → Lambda → incidents in DynamoDB → desired mode maintenance → the controller stops the pump → reported; the operator returns it to service", || async {
            let (detail, observed, mut reads) = crate::reaction::run(site_ref, obs_ref, &mut probe, resume_speed, WAIT).await?;
            plant_reads.append(&mut reads);
            reaction = Some(observed);
            Ok(detail)
        })
        .await;
    steps.report.cloud_reaction = reaction;
    steps.report.facts.plant_reads.append(&mut plant_reads);
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let ok = steps
        .run("7", step_key::OTA_UPDATE, "over the air: a new analyzer version (1.1.0) rolls out from the cloud while the pump runs; the controller defers the update while its protection is active; telemetry keeps flowing without a gap", || async {
            let (operator, bins) = site_ref.rollout()?;
            let analyzer = component(pump_types::ANALYZER_COMPONENT);
            rollout::publish_release(operator, &site_ref.dir, analyzer, "1.1.0", |r| r, bins).await?;
            let before = obs_ref.count(&telemetry);
            let components = site::versions(&[(analyzer.name, "1.1.0")]);
            // A fault first: the controller protects the pump, and puts the update off until the
            // operator has resumed after the fault cleared.
            site_ref.plant_control("POST", "/faults", Some(json!({"kind": "cavitation", "severity": 0.8}))).await?;
            wait_cloud_shadow(site_ref, "protection.active", |d| {
                d.pointer("/state/reported/protection/active") == Some(&json!(true))
            })
            .await?;
            let mut deferrals = site_ref.core()?.watch_update_deferrals();
            let purpose = "a new analyzer version while the pump runs";
            let (timeline, held) = tokio::join!(site_ref.deploy(purpose, components, WAIT), async {
                let held = wait_for_deferral(&mut deferrals, pump_types::CONTROLLER_COMPONENT).await?;
                // A new desired speed: the operator's resume is what ends a protective action.
                let speed = resume_speed + 50.0;
                let state = clear_and_resume(site_ref, obs_ref, &mut probe, &anomalies, speed).await?;
                plant_reads.push(PlantRead::new("resume", Some(speed), &state));
                anyhow::Ok(held)
            });
            let (timeline, held) = (timeline?, held?);
            let (succeeded, converged) = (timeline.succeeded, timeline.converged_ms);
            let id = timeline.deployment_id.clone();
            deployments.push(timeline);
            if !succeeded {
                bail!("the deployment {id} of analyzer 1.1.0 did not succeed");
            }
            let core = site_ref.core()?;
            let running = core.components();
            if !running.contains(&(analyzer.name.to_owned(), "1.1.0".to_owned())) {
                bail!("the core runs {running:?}, not analyzer 1.1.0");
            }
            // Telemetry goes on: two more batches, and not a reading missing since the start.
            let mut rx = obs_ref.subscribe();
            for _ in obs_ref.count(&telemetry)..before + 2 {
                observer::wait_for(&mut rx, "telemetry batch", WAIT, |s| s.topic == telemetry).await?;
            }
            let seqs = telemetry_continuity(&obs_ref.messages(&telemetry)).map_err(anyhow::Error::msg)?;
            let detector = args.detector;
            let doc = wait_cloud_shadow(site_ref, "the new analyzer's report of its model", |d| {
                detector.model_report_holds(&model_reported(d))
            })
            .await?;
            let model = model_reported(&doc);
            Ok(format!(
                "the controller deferred deployment {id} while protection was active ({held}); once the operator resumed it converged in {} ms; the core runs analyzer 1.1.0 and model {} {}; readings {}..={} reached the cloud without a gap",
                converged.unwrap_or_default(),
                model["name"].as_str().unwrap_or(""),
                model["version"].as_str().unwrap_or(""),
                seqs.first().copied().unwrap_or(0),
                seqs.last().copied().unwrap_or(0)
            ))
        })
        .await;
    steps.report.deployments.append(&mut deployments);
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let ok = steps
        .run("8", step_key::MODEL_RELEASE, "the retrained model released over the air as an operator does (`provision model release`): checked by the analyzer's own checks, published with that check as its Install step, the thing group's deployment revised with only the model changed; the analyzer runs it without a restart. Then a model trained for other features, built past the release check, fails its Install on the core: the deployment fails, the core rolls back to the model it ran, and the operator re-deploys it", || async {
            model_release(site_ref, args.detector, &mut deployments).await
        })
        .await;
    steps.report.deployments.append(&mut deployments);
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let ok = steps
        .run("9", step_key::OTA_ROLLBACK, "a broken analyzer version (its recipe passes a flag the binary does not know) is deployed: the core rolls back, and the cloud shows the failure and its cause", || async {
            let (operator, bins) = site_ref.rollout()?;
            let analyzer = component(pump_types::ANALYZER_COMPONENT);
            rollout::publish_release(operator, &site_ref.dir, analyzer, "1.2.0", |r| r.replace("--outbox", "--out-box"), bins).await?;
            let components = site::versions(&[(analyzer.name, "1.2.0")]);
            let timeline = site_ref.deploy("a broken analyzer version", components, WAIT).await?;
            let last = timeline.last_status(THING).cloned();
            let succeeded = timeline.succeeded;
            deployments.push(timeline);
            let Some(last) = last.as_ref().filter(|l| !succeeded && l.status == "FAILED") else {
                bail!("the broken version was not reported FAILED: {last:?}");
            };
            let reason = last.reason.clone().unwrap_or_default();
            if !reason.contains("BROKEN") {
                bail!("the cloud's reason does not say what broke: {reason:?}");
            }
            let core = site_ref.core()?;
            let wanted = [device_sim::core::ComponentState::Running];
            let state = core.wait_for_state(analyzer.name, &wanted, WAIT).await;
            let running = core.components();
            if !running.contains(&(analyzer.name.to_owned(), "1.1.0".to_owned())) || state != Some(wanted[0]) {
                bail!("the core did not go back to analyzer 1.1.0: {running:?}, analyzer {state:?}");
            }
            Ok(format!("the cloud shows FAILED: {reason}; the core runs analyzer 1.1.0 again, RUNNING"))
        })
        .await;
    steps.report.deployments.append(&mut deployments);
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let mut site = site;
    let mut obs = obs;
    if args.outage_seconds > 0 {
        let ok = steps
            .run("10", step_key::CONNECTIVITY_LOSS, "the local cloud stops for a while; on return every telemetry batch arrives, in order, and the shadow converges", || async {
                let site = site.as_mut().expect("started");
                let obs = obs.as_mut().expect("started");
                outage(site, obs, Duration::from_secs(args.outage_seconds), &telemetry).await
            })
            .await;
        if !ok {
            return finish(steps.report, &args, site, obs).await;
        }
    }

    let name = (steps.total - 2).to_string();
    let mut rotated = None;
    let ok = steps
        .run(&name, step_key::CERTIFICATE_ROTATION, "the operator rotates the core's certificate with a rotation job (`provision rotate`): the core makes a new key, gets a certificate from its CSR and reconnects on it; the old certificate is retired; telemetry flows", || async {
            let site = site.as_ref().expect("started");
            let obs = obs.as_ref().expect("started");
            let (detail, record) = crate::rotation::run(site, obs, &telemetry, WAIT).await?;
            rotated = Some(record);
            Ok(detail)
        })
        .await;
    steps.report.certificate_rotation = rotated;
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let next = next_minor(device_sim::core::options::GGC_VERSION);
    let name = (steps.total - 1).to_string();
    let ok = steps
        .run(&name, step_key::NUCLEUS_UPDATE, &format!("the core updates itself: the site's core now runs under its launcher (as a Greengrass core under its loader); a new nucleus version ({next}: this core build, published as AWS publishes the nucleus) is deployed to the thing group; the core stages it, restarts into it and proves itself, and the cloud shows the new version"), || async {
            let site = site.as_mut().expect("started");
            let obs = obs.as_ref().expect("started");
            core_update(site, obs, &next, &telemetry, &mut deployments).await
        })
        .await;
    steps.report.deployments.append(&mut deployments);
    if !ok {
        return finish(steps.report, &args, site, obs).await;
    }

    let name = steps.total.to_string();
    let mut recovered = None;
    let _ = steps
        .run(&name, step_key::DEVICE_RECOVERY, "hardware failure: the core device dies with its disk while the pump runs; the operator replaces it (certificate revoked, thing kept, group deployment revised) and sets a new desired speed; the replacement onboards by claim under the same thing name, receives the group's deployment again and drives the pump to the shadow's desired state", || async {
            let site = site.as_mut().expect("started");
            let obs = obs.as_ref().expect("started");
            let mut components = release_1_1_0();
            components.push((device_sim::core::runtime::NUCLEUS.to_owned(), next.clone()));
            let (detail, timeline, state, recovery) = recovery::run(site, obs, &telemetry, components, WAIT).await?;
            deployments.push(timeline);
            recovered = Some((state, recovery));
            Ok(detail)
        })
        .await;
    steps.report.deployments.append(&mut deployments);
    if let Some((state, recovery)) = recovered {
        steps.report.facts.plant_reads.push(PlantRead::new("recovered", Some(recovery.desired_speed_rpm), &state));
        steps.report.recovery = Some(recovery);
    }
    finish(steps.report, &args, site, obs).await
}

/// The shipped component named `name`.
fn component(name: &str) -> &'static site::Component {
    COMPONENTS.iter().find(|c| c.name == name).expect("a shipped component")
}

/// The ids of the anomalies raised and not cleared among `events` (anomaly events in arrival
/// order).
fn open_anomalies(events: &[Value]) -> std::collections::BTreeSet<String> {
    let mut open = std::collections::BTreeSet::new();
    for event in events {
        let Some(id) = event["id"].as_str() else { continue };
        if event["active"] == true {
            open.insert(id.to_owned());
        } else {
            open.remove(id);
        }
    }
    open
}

/// The topic the core reports the `pump` shadow on.
fn shadow_update_topic() -> String {
    format!("$aws/things/{THING}/shadow/name/{}/update", pump_types::SHADOW_NAME)
}

/// `state.reported.model` of a shadow document (`null` when absent).
fn model_reported(doc: &Value) -> Value {
    doc.pointer("/state/reported/model").cloned().unwrap_or(Value::Null)
}

pub(crate) fn epoch_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What the thing group runs from step 8 on: analyzer 1.1.0 and the retrained model
/// ([`site::MODEL_RETRAINED_VERSION`]), the rest 1.0.0.
fn release_1_1_0() -> Vec<(String, String)> {
    let mut components = site::versions(&[(pump_types::ANALYZER_COMPONENT, "1.1.0")]);
    components.push((pump_types::MODEL_COMPONENT.to_owned(), site::MODEL_RETRAINED_VERSION.to_owned()));
    components
}

/// Step 8: the retrained model shipped with the release path of `provision model release`
/// ([`rollout::release_model`]), then a model for other features built past that check, which
/// fails its Install on the core and rolls back, then the good version deployed again so that
/// the thing group's deployment is what its cores run.
async fn model_release(
    site: &Site,
    detector: Detector,
    deployments: &mut Vec<rollout::Timeline>,
) -> anyhow::Result<String> {
    let (operator, bins) = site.rollout()?;
    let model = pump_types::MODEL_COMPONENT;
    let trained = device_sim::shipped::write_model(&site.dir.join("trained"), &site::MODEL_RETRAINED)?;
    let core = site.core()?;
    let analyzer_log = core.layout().component_log(pump_types::ANALYZER_COMPONENT);
    let starts = || std::fs::read_to_string(&analyzer_log).map(|log| log.matches("configured").count()).unwrap_or(0);
    let started_before = starts();

    // The retrained model: checked, published, deployed to the group.
    let purpose = "the retrained model, released";
    let (good, timeline) = rollout::release_model(operator, &site.dir, &trained, bins, true, purpose, WAIT).await?;
    let (succeeded, converged) = (timeline.succeeded, timeline.converged_ms);
    deployments.push(timeline.with_core_view(core.deployments()));
    if !succeeded {
        bail!("the release of model {good} did not succeed");
    }
    if !core.components().contains(&(model.to_owned(), good.clone())) {
        bail!("the core runs {:?}, not model {good}", core.components());
    }
    let wanted = format!("the analyzer's report of model {good}");
    let reported = |version: String| {
        move |d: &Value| {
            let model = model_reported(d);
            detector.model_report_holds(&model) && (detector == Detector::Rules || model["version"] == version.as_str())
        }
    };
    let doc = wait_cloud_shadow(site, &wanted, reported(good.clone())).await?;
    let sha = model_reported(&doc)["sha256"].as_str().unwrap_or("").to_owned();

    // A model for other features (the first two swapped), built past the release check.
    let bad = next_minor(&good);
    let refused = site.dir.join("trained").join(format!("refused-{bad}"));
    std::fs::create_dir_all(&refused)?;
    std::fs::copy(trained.join("model.onnx"), refused.join("model.onnx"))?;
    let mut card: Value = serde_json::from_slice(&std::fs::read(trained.join("model-card.json"))?)?;
    card["version"] = json!(bad);
    if let Some(features) = card.pointer_mut("/input/features").and_then(Value::as_array_mut) {
        features.swap(0, 1);
    }
    std::fs::write(refused.join("model-card.json"), serde_json::to_vec_pretty(&card)?)?;
    if provision::model_release::check_model_dir(&refused, bins, None).is_ok() {
        bail!("the release check accepted a model card for other features");
    }
    let purpose = "a model for other features, past the release check";
    let (_, timeline) = rollout::release_model(operator, &site.dir, &refused, bins, false, purpose, WAIT).await?;
    let last = timeline.last_status(THING).cloned();
    let failed = !timeline.succeeded;
    deployments.push(timeline.with_core_view(core.deployments()));
    let Some(last) = last.as_ref().filter(|l| failed && l.status == "FAILED") else {
        bail!("the model for other features was not reported FAILED: {last:?}");
    };
    let reason = last.reason.clone().unwrap_or_default();
    if !core.components().contains(&(model.to_owned(), good.clone())) {
        bail!("the core did not roll back to model {good}: {:?}", core.components());
    }
    // The group's deployment names the refused version until the operator deploys a good one.
    let again = "the retrained model, deployed again after the rollback";
    let timeline = rollout::deploy_model(operator, &good, again, WAIT).await?;
    let restored = timeline.succeeded;
    deployments.push(timeline.with_core_view(core.deployments()));
    if !restored {
        bail!("deploying model {good} again did not succeed");
    }
    let doc = wait_cloud_shadow(site, &wanted, reported(good.clone())).await?;
    if detector != Detector::Rules && model_reported(&doc)["sha256"].as_str() != Some(sha.as_str()) {
        bail!("the analyzer no longer runs model {good}: {}", model_reported(&doc));
    }
    let restarts = starts() - started_before;
    if restarts != 0 {
        bail!("the analyzer restarted {restarts} time(s) while the model changed");
    }
    Ok(format!(
        "model {good} checked, published and running on the core {} ms after the deployment, the analyzer never restarted (sha256 {}); model {bad} for other features failed its Install: FAILED, {reason}; the core rolled back to {good}, deployed again",
        converged.unwrap_or_default(),
        if sha.is_empty() { "not reported with detector rules" } else { &sha },
    ))
}

/// `major.(minor+1).0` of a version `major.minor.patch`.
fn next_minor(version: &str) -> String {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    format!("{major}.{}.0", minor + 1)
}

/// The core update: hands the core to its launcher, deploys nucleus `next` with the current
/// release to the thing group, and checks the outcome where an operator sees it (the job, the
/// core device in the cloud, its components' states, telemetry) and on the device (the
/// launcher's links).
async fn core_update(
    site: &mut Site,
    obs: &Observer,
    next: &str,
    telemetry: &str,
    deployments: &mut Vec<rollout::Timeline>,
) -> anyhow::Result<String> {
    let handed_at = epoch_ms();
    let mut rx = obs.subscribe();
    site.hand_core_to_launcher().await?;
    wait_for_telemetry_after(&mut rx, telemetry, handed_at, "telemetry from the core under its launcher").await?;
    site.publish_nucleus(next).await?;
    let (operator, _) = site.rollout()?;
    let mut components = release_1_1_0();
    components.push((device_sim::core::runtime::NUCLEUS.to_owned(), next.to_owned()));
    let purpose = format!("the core updates itself to nucleus {next}");
    let timeline = rollout::deploy(operator, &purpose, components, site.merges.clone(), WAIT).await?;
    let (succeeded, converged, id) = (timeline.succeeded, timeline.converged_ms, timeline.deployment_id.clone());
    let last = timeline.last_status(THING).cloned();
    deployments.push(timeline);
    if !succeeded {
        bail!(
            "the nucleus deployment {id} did not succeed: {last:?} (see {})",
            site.dir.join("launcher.log").display()
        );
    }
    let alts = site.dir.join("core").join("alts");
    let link =
        |name: &str| std::fs::read_link(alts.join(name)).ok().and_then(|p| Some(p.file_name()?.to_str()?.to_owned()));
    if link("current").as_deref() != Some(next) || link("old").is_some() {
        bail!("the launcher's links are current {:?}, old {:?}: not a proven {next}", link("current"), link("old"));
    }
    let updated_at = epoch_ms();
    let core =
        wait_core_device(operator, "the new nucleus version and every component RUNNING", |device, installed| {
            device.core_version() == Some(next)
                && COMPONENTS.iter().all(|c| {
                    installed.iter().any(|i| {
                        i.component_name() == Some(c.name)
                            && i.lifecycle_state()
                                == Some(&aws_sdk_greengrassv2::types::InstalledComponentLifecycleState::Running)
                    })
                })
        })
        .await?;
    let mut rx = obs.subscribe();
    wait_for_telemetry_after(&mut rx, telemetry, updated_at, "telemetry from the updated core").await?;
    Ok(format!(
        "deployment {id} converged in {} ms; the launcher runs {next} (proven, no old version kept); GetCoreDevice: coreVersion {}, status {}; the components RUNNING again and telemetry flowing",
        converged.unwrap_or_default(),
        core.core_version().unwrap_or_default(),
        core.status().map(|s| s.as_str()).unwrap_or_default()
    ))
}

/// Waits for a telemetry batch whose last reading was taken after `after_ms`.
pub(crate) async fn wait_for_telemetry_after(
    rx: &mut tokio::sync::broadcast::Receiver<observer::Seen>,
    telemetry: &str,
    after_ms: u64,
    what: &str,
) -> anyhow::Result<()> {
    observer::wait_for(rx, what, WAIT, |m| {
        m.topic == telemetry
            && m.doc["readings"]
                .as_array()
                .and_then(|r| r.last())
                .and_then(|r| r["ts"].as_u64())
                .is_some_and(|ts| ts > after_ms)
    })
    .await?;
    Ok(())
}

/// Polls the cloud's view of the core device (GetCoreDevice, ListInstalledComponents) until
/// `holds`, as an operator's console refreshes; the last GetCoreDevice answer.
async fn wait_core_device(
    operator: &rollout::Operator,
    what: &str,
    holds: impl Fn(
        &aws_sdk_greengrassv2::operation::get_core_device::GetCoreDeviceOutput,
        &[aws_sdk_greengrassv2::types::InstalledComponent],
    ) -> bool,
) -> anyhow::Result<aws_sdk_greengrassv2::operation::get_core_device::GetCoreDeviceOutput> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let device =
            operator.gg.get_core_device().core_device_thing_name(THING).send().await.context("GetCoreDevice")?;
        let installed = operator
            .gg
            .list_installed_components()
            .core_device_thing_name(THING)
            .send()
            .await
            .context("ListInstalledComponents")?;
        if holds(&device, installed.installed_components()) {
            return Ok(device);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the cloud did not show {what} within {WAIT:?}: {device:?}");
        }
    }
}

/// Waits until `component` puts a deployment off (DeferComponentUpdate); its message.
async fn wait_for_deferral(
    deferrals: &mut tokio::sync::broadcast::Receiver<device_sim::core::update_gate::UpdateDeferred>,
    component: &str,
) -> anyhow::Result<String> {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            match deferrals.recv().await {
                Ok(round) => {
                    if let Some(d) = round.deferrals.into_iter().find(|d| d.component == component) {
                        return Ok(d.message.unwrap_or_default());
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => bail!("the core stopped"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| bail!("{component} did not defer the update within {WAIT:?}"))
}

/// Clears the faults, waits for the anomaly to clear, and resumes at `speed` as the operator.
pub(crate) async fn clear_and_resume(
    site: &Site,
    obs: &Observer,
    probe: &mut ModbusProbe,
    anomalies: &str,
    speed: f64,
) -> anyhow::Result<crate::site::PlantState> {
    let mut rx = obs.subscribe();
    site.plant_control("DELETE", "/faults", None).await?;
    // Every anomaly raised must clear: with `--detector both` the rules and the model each
    // raised their own, and the controller holds the protection until both have cleared.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !open_anomalies(&obs.messages(anomalies)).is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        observer::wait_for(&mut rx, "the anomaly's clearing event in the cloud", left, |m| {
            m.topic == anomalies && m.doc["active"] == false
        })
        .await?;
    }
    site.set_desired(json!({"speedRpm": speed as i64, "mode": "auto"})).await?;
    let state = probe
        .wait_for(&format!("running at setpoint {speed}"), WAIT, |s| (s.setpoint_rpm - speed).abs() < 0.5 && s.run)
        .await?;
    wait_cloud_shadow(site, "protection inactive and the resumed speed reported", |d| {
        d.pointer("/state/reported/protection/active") != Some(&json!(true))
            && speed_reported(d).is_some_and(|r| (r - speed).abs() < 0.5)
    })
    .await?;
    Ok(state)
}

/// The readings' sequence numbers in a telemetry batch.
fn batch_seqs(doc: &Value) -> Vec<u64> {
    doc["readings"].as_array().map(|rs| rs.iter().filter_map(|r| r["seq"].as_u64()).collect()).unwrap_or_default()
}

/// The readings' sequence numbers of every batch, checked: in order (each batch starts after
/// every reading seen before it, unless it is a whole resend of readings already received: QoS 1
/// may deliver a batch twice) and without a gap. Sorted, without duplicates.
fn telemetry_continuity(batches: &[Value]) -> Result<Vec<u64>, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut arrived_in_order = true;
    for b in batches {
        let s = batch_seqs(b);
        let resend = !s.is_empty() && s.iter().all(|q| seen.contains(q));
        if !resend && s.first().is_some_and(|first| seen.last().is_some_and(|max| first <= max)) {
            arrived_in_order = false;
        }
        seen.extend(s);
    }
    let seqs: Vec<u64> = seen.into_iter().collect();
    let gaps: Vec<(u64, u64)> = seqs.windows(2).filter(|w| w[1] != w[0] + 1).map(|w| (w[0], w[1])).collect();
    if !gaps.is_empty() {
        return Err(format!("telemetry lost: readings missing between {gaps:?}"));
    }
    if !arrived_in_order {
        return Err("telemetry arrived out of order".into());
    }
    Ok(seqs)
}

/// Stops the cloud for `pause`, starts it again, and checks that the telemetry produced
/// meanwhile arrives in order without gaps and that the cloud shadow matches the local one.
async fn outage(site: &mut Site, obs: &mut Observer, pause: Duration, telemetry: &str) -> anyhow::Result<String> {
    let cert = site.device.record.certificate_id.clone();
    let before = obs.messages(telemetry).len();
    // The core is locked out first, so that after the restart the observer is listening before
    // the core delivers what it spooled; the lock is part of the stored registry.
    let cloud = site.cloud.take().context("the cloud is not running")?;
    cloud.registry.update_certificate(&cert, local_cloud::registry::CertificateStatus::Inactive)?;
    let connections = obs.wait_subscribed(0).await?;
    cloud.shutdown().await;
    tokio::time::sleep(pause).await;
    let mut config = local_cloud::server::Config::new(site.dir.join("cloud"));
    config.dashboard.checklist = Some(crate::audit::checklist_file(&site.dir));
    config.mqtt_addr = site.endpoints.mqtt.parse().context("mqtt address")?;
    config.http_addr = site.endpoints.http.trim_start_matches("http://").parse().context("http address")?;
    if let Some(gg) = &site.endpoints.greengrass_data_plane {
        config.greengrass_data_plane_addr = gg.trim_start_matches("https://").parse().context("data-plane address")?;
    }
    let cloud = local_cloud::server::LocalCloud::start(config).await.context("restarting the local cloud")?;
    obs.wait_subscribed(connections).await?;
    cloud.registry.update_certificate(&cert, local_cloud::registry::CertificateStatus::Active)?;
    site.cloud = Some(cloud);
    // Telemetry produced during the outage is spooled by the core; wait until a batch made after
    // the return arrives, then check the sequence numbers of everything received.
    let mut rx = obs.subscribe();
    wait_for_telemetry_after(&mut rx, telemetry, epoch_ms(), "telemetry after the outage").await?;
    let batches = obs.messages(telemetry);
    let seqs = telemetry_continuity(&batches).map_err(|e| anyhow::anyhow!("across the outage: {e}"))?;
    let core = site.core.as_ref().context("the core is not running")?;
    let local = core.shadows().get(THING, pump_types::SHADOW_NAME).map_err(|e| anyhow::anyhow!("local shadow: {e}"))?;
    let want_reported = local.pointer("/state/reported").cloned();
    let doc =
        wait_cloud_shadow(site, "the local reported state", |d| d.pointer("/state/reported").cloned() == want_reported)
            .await?;
    Ok(format!(
        "{} batches during and after a {:?} outage, {} batches in all, readings {}..={} without a gap; cloud shadow version {} matches the local reported state",
        batches.len() - before,
        pause,
        batches.len(),
        seqs.first().copied().unwrap_or(0),
        seqs.last().copied().unwrap_or(0),
        doc["version"]
    ))
}

/// Collects the figures, writes the report, and stops everything (or keeps it running).
async fn finish(
    mut report: Report,
    args: &DemoArgs,
    mut site: Option<Site>,
    obs: Option<Observer>,
) -> anyhow::Result<Report> {
    // Before anything stops: the components are still running.
    report.footprint = site.as_mut().and_then(|s| s.footprint.take()).map(crate::footprint::Sampler::finish);
    report.passed = !report.steps.is_empty() && report.steps.iter().all(|s| s.passed);
    report.detector = args.detector.as_str().to_owned();
    if let Some(o) = &obs {
        report.topics = o.figures();
        report.anomalies =
            o.messages(&format!("dt/pump/{THING}/anomalies")).iter().map(AnomalyRecord::from_event).collect();
        report.facts.telemetry_seqs =
            o.messages(&format!("dt/pump/{THING}/telemetry")).iter().flat_map(batch_seqs).collect();
        report.facts.shadow_versions = o
            .messages(&format!("$aws/things/{THING}/shadow/name/pump/update/documents"))
            .iter()
            .map(|d| {
                let version = |pointer: &str| d.pointer(pointer).and_then(Value::as_u64).unwrap_or(0);
                [version("/previous/version"), version("/current/version")]
            })
            .collect();
    }
    if let Some(plant) = site.as_ref().and_then(|s| s.plant.as_ref())
        && let Ok(mut probe) = ModbusProbe::connect(plant.modbus_addr()).await
        && let Ok(state) = probe.read().await
    {
        report.facts.plant_reads.push(PlantRead::new("end", None, &state));
    }
    if let Some(site) = &site {
        match site.anomaly_windows().await {
            Ok(windows) => report.anomaly_windows = windows,
            Err(e) => eprintln!("the anomaly windows could not be listed: {e:#}"),
        }
        if let Ok(Some(doc)) = site.cloud_shadow().await {
            if let Some(o) = &obs {
                let telemetry = format!("dt/pump/{THING}/telemetry");
                let billed: Vec<(String, Units)> = report.topics.iter().map(|(t, f)| (t.clone(), f.billed)).collect();
                let observed = Observed::from_run(
                    o.minutes(),
                    &billed,
                    &telemetry,
                    &o.messages(&telemetry),
                    &doc,
                    &shadow_update_topic(),
                );
                report.cost = Some(SiteCost::new(observed, Prices::shipped()?));
            }
            let state = doc.get("state").cloned().unwrap_or(Value::Null);
            let sized = json!({"desired": state.get("desired"), "reported": state.get("reported")});
            report.shadow_state_bytes = serde_json::to_vec(&sized).map(|v| v.len()).unwrap_or(0);
            report.model = model_reported(&doc);
            report.shadow = doc;
        }
        {
            // The core's root, whether it runs in this process or under its launcher.
            let layout = device_sim::core::layout::Layout::new(site.dir.join("core"));
            for c in COMPONENTS {
                let path = layout.work_dir(c.name).join("stats.json");
                if let Ok(bytes) = std::fs::read(&path)
                    && let Ok(v) = serde_json::from_slice(&bytes)
                {
                    report.component_stats.insert(c.name.to_owned(), v);
                }
            }
        }
    }
    report.write(&args.out).with_context(|| format!("writing the report into {}", args.out.display()))?;
    eprintln!("report: {}", args.out.join("report.md").display());
    // The run ends with its audit, against its own live cloud, when every step held.
    let mut audited = Ok(None);
    if let Some(site) = site.as_ref().filter(|s| report.passed && s.cloud.is_some()) {
        audited = crate::audit::run(site, &args.out).await.map(Some);
        match &audited {
            Ok(Some(outcome)) => eprintln!("{}", outcome.line()),
            Ok(None) => {}
            Err(e) => eprintln!("audit: failed: {e:#}"),
        }
    }
    if let Some(mut site) = site {
        if args.keep_running && report.passed {
            // The handlers first: a Ctrl-C sent as soon as the lines below appear is not lost.
            let stop = cli_shell::shutdown_signal()?;
            print_how_to_reach(&site);
            print_dashboard(&site).await;
            if let Ok(Some(outcome)) = &audited {
                println!("  {} (the dashboard's checklist panel shows it)", outcome.line());
            }
            stop.await;
        }
        site.stop().await;
    }
    drop(obs);
    audited.context("the audit at the end of the run")?;
    Ok(report)
}

/// Makes the auditors' sign-in (`provision auditors`, the password in the site's directory) and
/// says where the dashboard is; a failure is reported, and the rest keeps running.
async fn print_dashboard(site: &Site) {
    let options = match provision::ClientOptions::for_local_cloud(&site.endpoints) {
        Ok(options) => options,
        Err(e) => return println!("  dashboard: no sign-in ({e})"),
    };
    let spec = provision::auditors::AuditorsSpec {
        pool_name: provision::auditors::DEFAULT_POOL_NAME.into(),
        client_name: provision::auditors::DEFAULT_CLIENT_NAME.into(),
        username: provision::auditors::DEFAULT_USERNAME.into(),
        email: None,
        password_file: site.dir.join("auditor.password"),
    };
    match provision::auditors::ensure_auditors(&provision::cognito_client(&options).await, &spec).await {
        Ok(auditors) => println!(
            "  dashboard: {}/dashboard/ (sign in as {}, password in {})",
            site.endpoints.http,
            auditors.username,
            auditors.password_file.display()
        ),
        Err(e) => println!("  dashboard: {}/dashboard/ (the auditor's sign-in failed: {e})", site.endpoints.http),
    }
}

fn print_how_to_reach(site: &Site) {
    let e = &site.endpoints;
    println!("Everything keeps running; Ctrl-C stops it.");
    println!(
        "  local cloud: MQTT {} (CA {}), HTTP {} (IoT: any AWS credentials; S3: the key pair in {})",
        e.mqtt,
        e.ca_file.display(),
        e.http,
        site.dir.join("cloud").join("endpoints.json").display()
    );
    println!(
        "  set a desired speed: aws --endpoint-url {} iot-data update-thing-shadow --thing-name {THING} --shadow-name pump --cli-binary-format raw-in-base64-out --payload '{{\"state\":{{\"desired\":{{\"speedRpm\":2500}}}}}}' /dev/stdout",
        e.http
    );
    println!("  plant control: http://{}/state, POST /faults", site.plant().control_addr());
    println!("  core: {}", site.dir.join("core").display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anomaly_stays_open_until_its_own_clearing_event() {
        let event = |id: &str, active: bool| json!({"id": id, "active": active, "detector": "rules"});
        let events = [event("rules-1", true), event("model-1", true), event("rules-1", false)];
        assert_eq!(open_anomalies(&events).into_iter().collect::<Vec<_>>(), vec!["model-1"]);
        let all = [events.to_vec(), vec![event("model-1", false), json!("not an event")]].concat();
        assert!(open_anomalies(&all).is_empty());
    }

    #[test]
    fn the_detector_option_decides_which_detector_may_raise_and_what_model_report_holds() {
        let model = |status: &str, detector: &str| json!({"status": status, "detector": detector});
        assert!(Detector::Model.raises("model") && !Detector::Model.raises("rules"));
        assert!(Detector::Both.raises("rules") && Detector::Both.raises("model"));
        assert!(Detector::Rules.raises("rules") && !Detector::Rules.raises("model"));
        assert!(Detector::Model.model_report_holds(&model("running", "model")));
        assert!(!Detector::Model.model_report_holds(&model("error", "model")), "rules standing in");
        assert!(!Detector::Both.model_report_holds(&model("running", "model")), "another configuration");
        assert!(Detector::Rules.model_report_holds(&model("standby", "rules")));
        assert!(!Detector::Rules.model_report_holds(&model("unknown", "")));
    }
}
