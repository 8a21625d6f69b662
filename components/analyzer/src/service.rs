//! The I/O shell: reads the configuration over IPC, follows `pump/readings`, feeds the pure
//! [`Analyzer`], publishes its events on local `pump/anomalies` at once and to IoT Core
//! (`dt/pump/{thing}/anomalies`, QoS 1) through a durable outbox, so an event raised while the
//! core is offline is sent when it is back. It loads the model component's files at start,
//! follows the model component's `current` link to load a new model version while it runs
//! ([`crate::watch`]), and publishes what runs on local `pump/model` on every change and every
//! [`STATUS_EVERY`].
//!
//! A refused or missing model does not stop the component and is not reported as ERRORED: to
//! the nucleus ERRORED means "restart me" (three make it BROKEN), and a restart cannot repair a
//! model file. The component stays RUNNING with the rules and says why on `pump/model`, which
//! the controller reports as the shadow's `reported.model`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use kit::ipc::model::{
    ConfigurationValidityReport, ConfigurationValidityStatus, GetConfigurationRequest, PubSubMessage,
    PublishToIoTCoreRequest, PublishToTopicRequest, Qos, ReportedLifecycleState,
    SendConfigurationValidityReportRequest, SubscribeToConfigurationUpdateRequest, SubscribeToTopicRequest,
    SubscribeToValidateConfigurationUpdatesRequest, UpdateStateRequest, ValidateConfigurationUpdateEvent,
};
use kit::ipc::{IpcClient, NextStep};
use kit::outbox::{DrainConfig, DrainError, Outbox, OutboxConfig, PublishError};
use pump_types::{ANOMALIES_TOPIC, AnomalyEvent, MODEL_TOPIC, READINGS_TOPIC, anomalies_topic};
use tokio::signal::unix::{SignalKind, signal};

use crate::analyzer::{Analyzer, Ignored};
use crate::config::{Config, ConfigError};
use crate::model::{Model, ModelError};
use crate::watch::{ModelWatch, fingerprint};

/// How often the counters are logged.
const STATS_EVERY: Duration = Duration::from_secs(60);
/// How often the model status is published even when nothing changed, so a subscriber that
/// started later (the controller after a restart) learns it.
pub const STATUS_EVERY: Duration = Duration::from_secs(30);
/// How often the model directory is checked for a new version: a `canonicalize` and two `stat`s.
pub const MODEL_CHECK_EVERY: Duration = Duration::from_secs(1);
/// The pause after IoT Core refused an anomaly for good (e.g. not authorized) before trying the
/// same entry again: the entry is kept, because anomalies must not be lost, and a redeployment
/// with the right access fixes the cause.
const REJECTED_PAUSE: Duration = Duration::from_secs(60);
/// How long a stop waits for the outbox to be sent: well within the 5 s a Greengrass core gives
/// a process between SIGTERM and SIGKILL, so the component ends on its own (its last log line
/// written, its outbox closed) even when the cloud is unreachable.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the shell needs from the command line and the environment.
#[derive(Debug, Clone)]
pub struct Options {
    /// The core device's thing name (`AWS_IOT_THING_NAME`).
    pub thing: String,
    /// The outbox's SQLite file.
    pub outbox: PathBuf,
    /// The model component's directory: its `current` link, followed to each new version.
    pub model_dir: Option<PathBuf>,
}

/// Why the component stopped.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    /// The configuration is unusable: the deployment must change it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Anything else (IPC, storage): the nucleus restarts the component.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The bytes of a local pub/sub message, whichever form it was published in.
fn message_bytes(message: &PubSubMessage) -> Vec<u8> {
    match message {
        PubSubMessage::Json(m) => serde_json::to_vec(&m.message).unwrap_or_default(),
        PubSubMessage::Binary(m) => m.message.as_bytes().to_vec(),
    }
}

async fn read_config(ipc: &IpcClient) -> Result<Config, Stop> {
    let response = ipc
        .get_configuration(&GetConfigurationRequest { component_name: None, key_path: vec![] })
        .await
        .context("GetConfiguration")?;
    Ok(Config::from_value(&response.value)?)
}

/// Checks the model directory every [`MODEL_CHECK_EVERY`] and sends what a changed one loads (on
/// a blocking thread: tract's load takes milliseconds that the readings must not wait for).
async fn watch_model(mut watch: ModelWatch, loaded: tokio::sync::mpsc::Sender<Result<Model, ModelError>>) {
    let mut check = tokio::time::interval(MODEL_CHECK_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        check.tick().await;
        let Some(changed) = watch.poll() else { continue };
        tracing::info!("model directory {} now holds {}", watch.path().display(), changed.dir.display());
        let Ok(result) = tokio::task::spawn_blocking(move || load_model(&changed.dir)).await else { continue };
        if loaded.send(result).await.is_err() {
            return;
        }
    }
}

/// Loads the model component's files; the outcome is logged and offered to the analyzer.
fn load_model(dir: &std::path::Path) -> Result<Model, ModelError> {
    let started = std::time::Instant::now();
    let loaded = Model::load(dir);
    match &loaded {
        Ok(m) => tracing::info!(
            name = %m.card().name, version = %m.version(), sha256 = %m.sha256(),
            ms = started.elapsed().as_millis() as u64, "model loaded from {}", dir.display()
        ),
        Err(e) => tracing::error!("model in {} refused: {e}", dir.display()),
    }
    loaded
}

/// Publishes what runs on local `pump/model`. Failures are logged: the status is repeated.
async fn publish_status(ipc: &IpcClient, analyzer: &Analyzer) {
    let status = analyzer.model_status(now_ms());
    let Ok(body) = serde_json::to_value(&status) else { return };
    let request = PublishToTopicRequest { topic: MODEL_TOPIC.into(), publish_message: PubSubMessage::json(body) };
    if let Err(e) = ipc.publish_to_topic(&request).await {
        tracing::warn!("publishing on {MODEL_TOPIC} failed: {e}");
    }
}

/// Publishes events on local pub/sub and queues them for IoT Core.
struct Publisher {
    ipc: IpcClient,
    outbox: Outbox,
    cloud_topic: String,
}

impl Publisher {
    async fn publish(&self, events: Vec<AnomalyEvent>) -> anyhow::Result<()> {
        for event in events {
            let body = serde_json::to_value(&event).context("serializing an anomaly event")?;
            tracing::info!(id = %event.id, kind = ?event.kind, active = event.active, severity = event.severity, reason = %event.reason, "anomaly");
            // Locally first: the controller acts on it, and that path must be fast.
            let local = PublishToTopicRequest {
                topic: ANOMALIES_TOPIC.into(),
                publish_message: PubSubMessage::json(body.clone()),
            };
            if let Err(e) = self.ipc.publish_to_topic(&local).await {
                tracing::error!(id = %event.id, "publishing on {ANOMALIES_TOPIC} failed: {e}");
            }
            // Durable before it is sent; the drain task sends it when IoT Core is reachable.
            let payload = serde_json::to_vec(&body).context("serializing an anomaly event")?;
            self.outbox
                .append(&self.cloud_topic, &payload)
                .with_context(|| format!("queueing anomaly {} for IoT Core", event.id))?;
        }
        Ok(())
    }
}

/// Sends the outbox to IoT Core, forever, in order.
async fn drain_forever(outbox: Outbox, ipc: IpcClient) {
    loop {
        outbox.wait_for_entries().await;
        let sent = outbox
            .drain(&DrainConfig::default(), |entry| {
                let ipc = ipc.clone();
                async move {
                    let request = PublishToIoTCoreRequest::new(entry.topic, Qos::AtLeastOnce, entry.payload);
                    ipc.publish_to_iot_core(&request).await.map(|_| ()).map_err(|e| match e.next_step() {
                        NextStep::Retry => PublishError::Retryable(e.to_string()),
                        _ => PublishError::Permanent(e.to_string()),
                    })
                }
            })
            .await;
        match sent {
            Ok(report) => tracing::debug!(sent = report.sent, retries = report.retries, "outbox drained"),
            Err(DrainError::Rejected { seq, topic, reason }) => {
                tracing::error!(
                    "IoT Core refused anomaly {seq} on {topic}: {reason}; kept, retrying in {REJECTED_PAUSE:?}"
                );
                tokio::time::sleep(REJECTED_PAUSE).await;
            }
            Err(DrainError::Outbox(e)) => {
                tracing::warn!("outbox: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Accepts or rejects a configuration a deployment proposes, with the loader's reason.
async fn answer_proposal(ipc: &IpcClient, event: ValidateConfigurationUpdateEvent) {
    let verdict = Config::check_proposed(&event.configuration);
    match &verdict {
        Ok(()) => tracing::info!(deployment = %event.deployment_id, "proposed configuration accepted"),
        Err(why) => tracing::warn!(deployment = %event.deployment_id, "proposed configuration rejected: {why}"),
    }
    let (status, message) = match verdict {
        Ok(()) => (ConfigurationValidityStatus::Accepted, None),
        Err(why) => (ConfigurationValidityStatus::Rejected, Some(why)),
    };
    let report = ConfigurationValidityReport { status, deployment_id: event.deployment_id, message };
    let request = SendConfigurationValidityReportRequest { configuration_validity_report: report };
    if let Err(e) = ipc.send_configuration_validity_report(&request).await {
        // Too late: the deployment has already decided without us.
        tracing::warn!("SendConfigurationValidityReport: {e}");
    }
}

/// Runs the component until SIGTERM/SIGINT (`Ok`) or a failure.
pub async fn run(options: Options) -> Result<(), Stop> {
    let ipc = IpcClient::connect_from_env().await.context("connecting to the nucleus over IPC")?;
    let config = read_config(&ipc).await?;
    let mut analyzer = Analyzer::new(config)?;
    tracing::info!(config = ?analyzer.config(), thing = %options.thing, "configured");
    // New model versions arrive on this channel, from the watch of the model directory.
    let (model_tx, mut models) = tokio::sync::mpsc::channel(1);
    let mut model_watch = None;
    match &options.model_dir {
        Some(dir) => {
            let seen = fingerprint(dir);
            match &seen {
                // Loaded from the resolved directory: card and model of one version. Nothing is
                // raised before the first reading, so there are no events to publish.
                Some(f) => drop(analyzer.offer_model(load_model(&f.dir), now_ms())),
                None => tracing::warn!("no model installed at {} yet; watching for one", dir.display()),
            }
            model_watch = Some(tokio::spawn(watch_model(ModelWatch::new(dir.clone(), seen), model_tx)));
        }
        None => tracing::info!("no --model-dir: the model detector cannot run"),
    }
    let status = analyzer.model_status(now_ms());
    match &status.error {
        Some(e) => tracing::error!(running = ?status.running, "detectors: {e}"),
        None => tracing::info!(running = ?status.running, "detectors"),
    }

    let outbox = Outbox::open(&options.outbox, OutboxConfig::default())
        .with_context(|| format!("opening the outbox {}", options.outbox.display()))?;
    if !outbox.is_empty() {
        tracing::info!(waiting = outbox.len(), "anomalies from before the restart are still to be sent");
    }
    let publisher =
        Publisher { ipc: ipc.clone(), outbox: outbox.clone(), cloud_topic: anomalies_topic(&options.thing) };
    let drain = tokio::spawn(drain_forever(outbox.clone(), ipc.clone()));

    let mut readings = ipc
        .subscribe_to_topic(&SubscribeToTopicRequest { topic: READINGS_TOPIC.into(), receive_mode: None })
        .await
        .with_context(|| format!("subscribing to {READINGS_TOPIC}"))?;
    let mut config_updates = ipc
        .subscribe_to_configuration_update(&SubscribeToConfigurationUpdateRequest {
            component_name: None,
            key_path: vec![],
        })
        .await
        .context("subscribing to configuration updates")?;
    let mut proposals = ipc
        .subscribe_to_validate_configuration_updates(&SubscribeToValidateConfigurationUpdatesRequest {})
        .await
        .context("subscribing to configuration validation")?;
    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.context("UpdateState")?;
    publish_status(&ipc, &analyzer).await;
    tracing::info!("running: reading {READINGS_TOPIC}, publishing {ANOMALIES_TOPIC} and {}", publisher.cloud_topic);

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut stats = tokio::time::interval(STATS_EVERY);
    let mut status_tick = tokio::time::interval_at(tokio::time::Instant::now() + STATUS_EVERY, STATUS_EVERY);
    let result = loop {
        tokio::select! {
            event = readings.next_event() => {
                let message = match event {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => break Err(anyhow::anyhow!("the {READINGS_TOPIC} subscription failed: {e}").into()),
                    None => break Err(anyhow::anyhow!("the {READINGS_TOPIC} subscription ended").into()),
                };
                match analyzer.handle_payload(now_ms(), &message_bytes(&message)) {
                    Ok(events) => {
                        if let Err(e) = publisher.publish(events).await {
                            break Err(e.into());
                        }
                    }
                    Err(Ignored::Stale { .. }) => {}
                    Err(e) => {
                        let n = analyzer.counters().malformed;
                        // Logged sparsely: a misbehaving publisher must not flood the log.
                        if n <= 10 || n.is_multiple_of(1000) {
                            tracing::warn!(malformed = n, "ignored a reading on {READINGS_TOPIC}: {e}");
                        }
                    }
                }
            }
            update = config_updates.next_event() => {
                match update {
                    Some(Ok(_)) => match read_config(&ipc).await {
                        Ok(config) if &config == analyzer.config() => {}
                        Ok(config) => match analyzer.reconfigure(config, now_ms()) {
                            Ok(events) => {
                                tracing::info!(config = ?analyzer.config(), "reconfigured");
                                publish_status(&ipc, &analyzer).await;
                                if let Err(e) = publisher.publish(events).await {
                                    break Err(e.into());
                                }
                            }
                            Err(e) => tracing::error!("configuration update refused, keeping the previous one: {e}"),
                        },
                        Err(e) => tracing::error!("configuration update refused, keeping the previous one: {e}"),
                    },
                    Some(Err(e)) => break Err(anyhow::anyhow!("the configuration subscription failed: {e}").into()),
                    None => break Err(anyhow::anyhow!("the configuration subscription ended").into()),
                }
            }
            proposal = proposals.next_event() => {
                match proposal {
                    Some(Ok(e)) => answer_proposal(&ipc, e.validate_configuration_update_event).await,
                    Some(Err(e)) => break Err(anyhow::anyhow!("the configuration validation subscription failed: {e}").into()),
                    None => break Err(anyhow::anyhow!("the configuration validation subscription ended").into()),
                }
            }
            // Without a watch the channel is closed: the branch is off, not a busy loop.
            Some(offered) = models.recv(), if model_watch.is_some() => {
                let events = analyzer.offer_model(offered, now_ms());
                let status = analyzer.model_status(now_ms());
                match &status.error {
                    Some(e) => tracing::error!(running = ?status.running, "detectors: {e}"),
                    None => tracing::info!(running = ?status.running, model = ?status.model, "detectors: new model"),
                }
                publish_status(&ipc, &analyzer).await;
                if let Err(e) = publisher.publish(events).await {
                    break Err(e.into());
                }
            }
            _ = status_tick.tick() => publish_status(&ipc, &analyzer).await,
            _ = stats.tick() => {
                let c = analyzer.counters();
                tracing::info!(
                    readings = c.readings, malformed = c.malformed, stale = c.stale, gaps = c.gaps,
                    raised = c.raised, cleared = c.cleared, active = analyzer.active().len(),
                    outbox = outbox.len(), "counters"
                );
            }
            _ = term.recv() => break Ok(()),
            _ = int.recv() => break Ok(()),
        }
    };
    outbox.stop_drain(drain, SHUTDOWN_GRACE).await;
    if let Some(watch) = model_watch {
        watch.abort();
    }
    result
}
