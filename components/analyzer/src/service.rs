//! The I/O shell: reads the configuration over IPC, follows `pump/readings`, feeds the pure
//! [`Analyzer`], publishes its events on local `pump/anomalies` at once and to IoT Core
//! (`dt/pump/{thing}/anomalies`, QoS 1) through a durable outbox, so an event raised while the
//! core is offline is sent when it is back. It loads the model component's files at start,
//! follows the model component's `current` link to load a new model version while it runs
//! ([`crate::watch`]), and publishes what runs on local `pump/model` on every change and every
//! [`STATUS_EVERY`]. With `anomalyUpload.bucket` set it records the readings around each raise
//! ([`crate::upload`]) and puts them in S3 through a second durable outbox
//! ([`WINDOWS_OUTBOX`]), with the token exchange service's credentials.
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
use kit::outbox::{DrainConfig, DrainError, Entry, Outbox, OutboxConfig, PublishError};
use pump_types::{ANOMALIES_TOPIC, AnomalyEvent, MODEL_TOPIC, READINGS_TOPIC, Reading, anomalies_topic};
use tokio::signal::unix::{SignalKind, signal};

use crate::analyzer::{Analyzer, Ignored};
use crate::config::{Config, ConfigError};
use crate::model::{Model, ModelError};
use crate::upload::{AnomalyWindow, Recorder, UploadConfig};
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
/// The anomaly windows' outbox, next to the anomalies' (`--outbox`).
pub const WINDOWS_OUTBOX: &str = "anomaly-windows-outbox.sqlite";

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

/// Sends an outbox's entries with `send`, forever, in order; `what` names them in the log.
async fn drain_forever<F, Fut>(outbox: Outbox, what: &'static str, mut send: F)
where
    F: FnMut(Entry) -> Fut,
    Fut: std::future::Future<Output = Result<(), PublishError>>,
{
    loop {
        outbox.wait_for_entries().await;
        match outbox.drain(&DrainConfig::default(), &mut send).await {
            Ok(report) => tracing::debug!(sent = report.sent, retries = report.retries, "{what} outbox drained"),
            Err(DrainError::Rejected { seq, topic, reason }) => {
                tracing::error!("{what} {seq} ({topic}) refused: {reason}; kept, retrying in {REJECTED_PAUSE:?}");
                tokio::time::sleep(REJECTED_PAUSE).await;
            }
            Err(DrainError::Outbox(e)) => {
                tracing::warn!("{what} outbox: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Publishes an outbox entry to IoT Core (QoS 1) through the core.
async fn publish_to_iot_core(ipc: IpcClient, entry: Entry) -> Result<(), PublishError> {
    let request = PublishToIoTCoreRequest::new(entry.topic, Qos::AtLeastOnce, entry.payload);
    ipc.publish_to_iot_core(&request).await.map(|_| ()).map_err(|e| match e.next_step() {
        NextStep::Retry => PublishError::Retryable(e.to_string()),
        _ => PublishError::Permanent(e.to_string()),
    })
}

/// The HTTP client of the analyzer's AWS calls: rustls with ring (the SDK's default would bring
/// aws-lc), plain HTTP for the loopback token exchange service.
pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// An S3 client with the token exchange service's credentials: `aws-config`'s container
/// provider (`AWS_CONTAINER_CREDENTIALS_FULL_URI`, `AWS_CONTAINER_AUTHORIZATION_TOKEN`, set by
/// the core for components that depend on `aws.greengrass.TokenExchangeService`) and the
/// core's Region (`AWS_REGION`); nothing else of the default chains, so no instance metadata
/// is ever asked.
fn s3_client(config: &UploadConfig) -> aws_sdk_s3::Client {
    let http = http_client();
    let provider_config = aws_config::provider_config::ProviderConfig::without_region().with_http_client(http.clone());
    let credentials = aws_config::ecs::EcsCredentialsProvider::builder().configure(&provider_config).build();
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(credentials)
        .http_client(http);
    if !config.endpoint_url.is_empty() {
        builder = builder.endpoint_url(&config.endpoint_url).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// Puts an anomaly window (`topic` = `{bucket}/{key}`). A 4xx other than a throttle is for
/// good (the role does not allow it, the bucket is missing) until the setup changes.
async fn put_window(s3: aws_sdk_s3::Client, entry: Entry) -> Result<(), PublishError> {
    let Some((bucket, key)) = entry.topic.split_once('/') else {
        return Err(PublishError::Permanent(format!("{:?} is not bucket/key", entry.topic)));
    };
    let sent = s3
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(entry.payload.into())
        .send()
        .await;
    sent.map(drop).map_err(|e| {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let why = format!("PutObject s3://{bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(&e));
        match status {
            Some(408 | 429) => PublishError::Retryable(why),
            Some(400..=499) => PublishError::Permanent(why),
            _ => PublishError::Retryable(why),
        }
    })
}

/// The readings around each raise, recorded and queued for S3 ([`crate::upload`]).
struct Uploads {
    recorder: Recorder,
    outbox: Outbox,
    bucket: String,
    drain: tokio::task::JoinHandle<()>,
}

impl Uploads {
    /// Opens the windows' outbox next to the anomalies' and starts sending it.
    fn start(options: &Options, config: &Config) -> anyhow::Result<Self> {
        let upload = &config.anomaly_upload;
        let path = options.outbox.with_file_name(WINDOWS_OUTBOX);
        let outbox = Outbox::open(&path, OutboxConfig::default())
            .with_context(|| format!("opening the anomaly windows outbox {}", path.display()))?;
        let s3 = s3_client(upload);
        let drain =
            tokio::spawn(drain_forever(outbox.clone(), "anomaly window", move |entry| put_window(s3.clone(), entry)));
        tracing::info!(bucket = %upload.bucket, waiting = outbox.len(), "uploading anomaly windows to S3 under {}/anomalies/", options.thing);
        Ok(Uploads {
            recorder: Recorder::new(&options.thing, config.window_samples, upload.after_samples),
            outbox,
            bucket: upload.bucket.clone(),
            drain,
        })
    }

    /// Durable before it is sent.
    fn queue(&self, windows: Vec<AnomalyWindow>) -> anyhow::Result<()> {
        for w in windows {
            tracing::info!(key = %w.key, bytes = w.body.len(), "anomaly window recorded");
            self.outbox
                .append(&format!("{}/{}", self.bucket, w.key), &w.body)
                .with_context(|| format!("queueing the anomaly window {}", w.key))?;
        }
        Ok(())
    }

    /// A reading the analyzer took, and the events it gave.
    fn record(&mut self, reading: &Reading, events: &[AnomalyEvent]) -> anyhow::Result<()> {
        let done = self.recorder.reading(reading);
        self.queue(done)?;
        let done = self.recorder.events(events);
        self.queue(done)
    }

    /// At a stop: the open windows as they stand, then a short wait for the outbox.
    async fn stop(mut self) {
        let open = self.recorder.flush();
        if let Err(e) = self.queue(open) {
            tracing::error!("{e:#}");
        }
        self.outbox.stop_drain(self.drain, SHUTDOWN_GRACE).await;
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
    let drain_ipc = ipc.clone();
    let drain = tokio::spawn(drain_forever(outbox.clone(), "anomaly", move |entry| {
        publish_to_iot_core(drain_ipc.clone(), entry)
    }));
    let upload_at_start = analyzer.config().anomaly_upload.clone();
    let mut uploads = match upload_at_start.enabled() {
        true => Some(Uploads::start(&options, analyzer.config())?),
        false => None,
    };

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
                // Parsed once: the analyzer assesses the reading, the uploads record it.
                let assessed = analyzer
                    .parse_payload(&message_bytes(&message))
                    .and_then(|reading| Ok((analyzer.handle_reading(now_ms(), &reading)?, reading)));
                match assessed {
                    Ok((events, reading)) => {
                        if let Some(uploads) = uploads.as_mut()
                            && let Err(e) = uploads.record(&reading, &events)
                        {
                            break Err(e.into());
                        }
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
                                if let Some(uploads) = uploads.as_mut() {
                                    uploads.recorder.resize(analyzer.config().window_samples);
                                }
                                if analyzer.config().anomaly_upload != upload_at_start {
                                    tracing::warn!("anomalyUpload changed: it takes effect when the analyzer restarts");
                                }
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
    if let Some(uploads) = uploads {
        uploads.stop().await;
    }
    if let Some(watch) = model_watch {
        watch.abort();
    }
    result
}
