//! The sensor's I/O shell: IPC, the poll loop, the outbox drain, stats. Decisions live in the
//! pure modules; this file wires them to the world.
//!
//! Tasks:
//! - the **poll loop** (this task): every poll period, one snapshot from the plant →
//!   `pump/readings` on local pub/sub → the batcher → finished batches appended to the outbox;
//!   also the batcher's max-delay deadline, the stats period, configuration updates, signals;
//! - the **drain** task: publishes the outbox in order with PublishToIoTCore (QoS 1) and acks
//!   each entry only after the core accepted it; retries with backoff.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};
use kit::batch::{Batch, Batcher, Counters};
use kit::ipc::model::{
    GetConfigurationRequest, PubSubMessage, PublishToIoTCoreRequest, PublishToTopicRequest, Qos,
    ReportedLifecycleState, SubscribeToConfigurationUpdateRequest, UpdateStateRequest,
};
use kit::ipc::operation::SubscribeToConfigurationUpdate;
use kit::ipc::{IpcClient, IpcError, NextStep, Subscription};
use kit::outbox::{DrainConfig, DrainError, Outbox, OutboxConfig, OutboxError, PublishError};
use pump_types::{READINGS_TOPIC, Reading};
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::config::{self, SensorConfig, TelemetryConfig};
use crate::plant::{PlantLink, PollError};
use crate::reading::{decode, telemetry_row};
use crate::stats::{STATS_FILE, Stats, add_counters, write_atomically};

/// How long a stop waits for the outbox to be sent: well within the 5 s a Greengrass core gives
/// a process between SIGTERM and SIGKILL, so the component ends on its own (its last log line
/// written, its outbox closed) even when the cloud is unreachable.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The outbox file's name in the work directory.
pub const OUTBOX_FILE: &str = "telemetry-outbox.sqlite";
/// Batches kept in memory while the outbox cannot store them (disk full, say).
const MAX_UNSTORED: usize = 1000;

/// How the sensor stopped.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The configuration or the environment is wrong: fix the deployment.
    #[error("configuration error: {0:#}")]
    Config(anyhow::Error),
    /// Something failed at run time (the core went away, say): a restart may help.
    #[error("{0:#}")]
    Runtime(anyhow::Error),
}

fn config_error(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Config(e.into())
}

fn runtime_error(e: impl Into<anyhow::Error>) -> Failure {
    Failure::Runtime(e.into())
}

/// Epoch milliseconds now.
fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Whether an IPC error means the connection to the core is gone for good (kit::ipc does not
/// reconnect: the process exits and the core starts it again).
fn connection_gone(e: &IpcError) -> bool {
    matches!(e, IpcError::ConnectionClosed { .. } | IpcError::Protocol(_))
}

/// Counters the drain task keeps.
#[derive(Debug, Default)]
struct DrainCounters {
    sent: AtomicU64,
    retries: AtomicU64,
    rejected: AtomicU64,
}

fn drain_config(t: &TelemetryConfig) -> DrainConfig {
    DrainConfig { batch: 64, initial_backoff: t.publish_retry_min, max_backoff: t.publish_retry_max }
}

/// What a permanent publish failure means for the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The IPC connection is gone: stop the process.
    ConnectionGone,
    /// Not authorized (the recipe's accessControl): keep the entry and try again later.
    NotAllowed,
    /// This message can never be published (too large, bad topic): skip it.
    BadMessage,
}

/// Publishes the outbox forever, in order; returns only when the IPC connection is gone.
async fn drain_forever(
    outbox: Outbox,
    ipc: IpcClient,
    mut settings: watch::Receiver<DrainConfig>,
    counters: Arc<DrainCounters>,
) -> anyhow::Result<()> {
    let refusal = Arc::new(std::sync::Mutex::new(None::<Refusal>));
    loop {
        outbox.wait_for_entries().await;
        let config = *settings.borrow_and_update();
        let publish = |entry: kit::outbox::Entry| {
            let ipc = ipc.clone();
            let counters = Arc::clone(&counters);
            let refusal = Arc::clone(&refusal);
            async move {
                let request = PublishToIoTCoreRequest::new(entry.topic, Qos::AtLeastOnce, entry.payload);
                match ipc.publish_to_iot_core(&request).await {
                    Ok(_) => {
                        counters.sent.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => {
                        let kind = match e.next_step() {
                            _ if connection_gone(&e) => Refusal::ConnectionGone,
                            NextStep::Retry => {
                                counters.retries.fetch_add(1, Ordering::Relaxed);
                                tracing::debug!(seq = entry.seq, "telemetry publish failed, will retry: {e}");
                                return Err(PublishError::Retryable(e.to_string()));
                            }
                            NextStep::GiveUp => Refusal::NotAllowed,
                            NextStep::FixInput => Refusal::BadMessage,
                        };
                        *refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(kind);
                        Err(PublishError::Permanent(e.to_string()))
                    }
                }
            }
        };
        match outbox.drain(&config, publish).await {
            Ok(_) => {}
            Err(DrainError::Rejected { seq, topic, reason }) => {
                let kind = refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
                match kind {
                    Some(Refusal::ConnectionGone) => return Err(anyhow!("the IPC connection is gone: {reason}")),
                    Some(Refusal::BadMessage) => {
                        tracing::error!(seq, %topic, "the core refused a telemetry message for good; skipping it: {reason}");
                        counters.rejected.fetch_add(1, Ordering::Relaxed);
                        if let Err(e) = outbox.ack(seq) {
                            tracing::warn!("cannot remove the refused message from the outbox: {e}");
                            tokio::time::sleep(config.max_backoff).await;
                        }
                    }
                    Some(Refusal::NotAllowed) | None => {
                        tracing::error!(
                            %topic,
                            "publishing telemetry is not allowed (check the recipe's accessControl); \
                             keeping it and trying again in {:?}: {reason}",
                            config.max_backoff
                        );
                        tokio::time::sleep(config.max_backoff).await;
                    }
                }
            }
            Err(DrainError::Outbox(e)) => {
                tracing::warn!("the telemetry outbox failed; retrying: {e}");
                tokio::time::sleep(config.initial_backoff).await;
            }
        }
    }
}

/// The running sensor.
struct Sensor {
    ipc: IpcClient,
    thing: String,
    topic: String,
    config: SensorConfig,
    stats_path: PathBuf,
    started: Instant,
    started_epoch: u64,
    link: PlantLink,
    seq: u64,
    batcher: Batcher,
    /// Counters of batchers replaced by a configuration update.
    retired: Counters,
    outbox: Outbox,
    /// Batches not yet stored (only while the outbox fails).
    unstored: VecDeque<Batch>,
    drain_counters: Arc<DrainCounters>,
    drain_settings: watch::Sender<DrainConfig>,
    stats: Stats,
}

fn interval(period: Duration) -> Interval {
    let mut i = tokio::time::interval(period);
    // A slow poll (the plant timing out) delays the next one instead of bunching them up.
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

async fn next_update(sub: &mut Option<Subscription<SubscribeToConfigurationUpdate>>) -> Option<()> {
    match sub {
        Some(s) => match s.next_event().await {
            Some(Ok(_)) => Some(()),
            Some(Err(e)) => {
                tracing::warn!("configuration updates stopped: {e}");
                None
            }
            None => None,
        },
        None => std::future::pending().await,
    }
}

impl Sensor {
    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// One poll: a reading on local pub/sub and into the batcher, or a counted failure.
    async fn poll_once(&mut self) -> Result<(), Failure> {
        // Every scheduled poll takes a number, so a gap in `seq` is a poll that produced nothing.
        self.seq += 1;
        let snapshot = match self.link.poll().await {
            Ok(s) => s,
            Err(e) => {
                self.poll_failed(&e);
                return Ok(());
            }
        };
        let reading = match decode(self.seq, epoch_ms(), &snapshot) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("the plant's answer does not fit the register map: {e}");
                self.stats.polls.failed += 1;
                self.stats.polls.last_error = Some(e.to_string());
                return Ok(());
            }
        };
        self.stats.polls.ok += 1;
        self.publish_locally(&reading).await?;
        let now = self.mono_ms();
        match self.batcher.push(now, telemetry_row(&reading)) {
            Ok(batches) => self.store(batches),
            // Cannot happen with rows from `telemetry_row` (no `ts` member); logged, not fatal.
            Err(e) => tracing::error!("the batcher refused a reading: {e}"),
        }
        Ok(())
    }

    fn poll_failed(&mut self, e: &PollError) {
        self.stats.polls.failed += 1;
        self.stats.polls.last_error = Some(e.to_string());
        match e {
            // The plant answered but refused: a map mismatch worth a warning on every poll.
            PollError::Exception(_) => tracing::warn!("{e}"),
            // Connection trouble is logged once per outage by the link.
            _ => tracing::debug!("poll failed: {e}"),
        }
    }

    async fn publish_locally(&mut self, reading: &Reading) -> Result<(), Failure> {
        let message = match serde_json::to_value(reading) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!("cannot serialise a reading: {e}");
                return Ok(());
            }
        };
        let bytes = message.to_string().len() as u64;
        let request =
            PublishToTopicRequest { topic: READINGS_TOPIC.into(), publish_message: PubSubMessage::json(message) };
        match self.ipc.publish_to_topic(&request).await {
            Ok(_) => {
                self.stats.readings.published += 1;
                self.stats.readings.last_seq = reading.seq;
                self.stats.readings.last_bytes = bytes;
                Ok(())
            }
            Err(e) if connection_gone(&e) => Err(runtime_error(anyhow!("the IPC connection is gone: {e}"))),
            Err(e) => {
                self.stats.readings.publish_failed += 1;
                tracing::warn!(seq = reading.seq, "cannot publish the reading on {READINGS_TOPIC}: {e}");
                Ok(())
            }
        }
    }

    /// Appends finished batches to the outbox, in order; keeps them in memory while it fails.
    fn store(&mut self, batches: impl IntoIterator<Item = Batch>) {
        self.unstored.extend(batches);
        while self.unstored.len() > MAX_UNSTORED {
            self.unstored.pop_front();
            self.stats.telemetry.store_failed += 1;
        }
        while let Some(batch) = self.unstored.front() {
            match self.outbox.append(&self.topic, batch.payload.as_bytes()) {
                Ok(_) => {
                    self.unstored.pop_front();
                }
                Err(e @ OutboxError::TooLarge { .. }) => {
                    tracing::error!("a telemetry message cannot be stored: {e}");
                    self.unstored.pop_front();
                    self.stats.telemetry.store_failed += 1;
                }
                Err(e) => {
                    tracing::warn!(waiting = self.unstored.len(), "cannot store telemetry now; will retry: {e}");
                    break;
                }
            }
        }
    }

    fn batch_counters(&self) -> Counters {
        add_counters(self.retired, self.batcher.counters())
    }

    /// Refreshes the figures, logs the summary and writes `stats.json`.
    fn report(&mut self) {
        let now = epoch_ms();
        self.stats.ts = now;
        self.stats.uptime_s = now.saturating_sub(self.started_epoch) / 1000;
        self.stats.polls.connects = self.link.connects;
        self.stats.polls.connect_failures = self.link.connect_failures;
        self.stats.polls.connected = self.link.is_connected();
        let counters = self.batch_counters();
        let t = &mut self.stats.telemetry;
        t.set_batch_counters(counters);
        t.sent = self.drain_counters.sent.load(Ordering::Relaxed);
        t.publish_retries = self.drain_counters.retries.load(Ordering::Relaxed);
        t.rejected = self.drain_counters.rejected.load(Ordering::Relaxed);
        t.outbox_pending = self.outbox.len();
        t.outbox_bytes = self.outbox.bytes();
        match self.outbox.dropped() {
            Ok(d) => t.outbox_dropped = d,
            Err(e) => tracing::debug!("cannot read the outbox drop counter: {e}"),
        }
        tracing::info!("{}", self.stats.summary());
        if let Err(e) = write_atomically(&self.stats_path, &self.stats) {
            tracing::warn!("cannot write {}: {e}", self.stats_path.display());
        }
    }

    /// Reads the configuration again after an update; a bad one is refused and the running one kept.
    async fn reload(&mut self, poll: &mut Interval, stats: &mut Interval) -> Result<(), Failure> {
        let value = match self.ipc.get_configuration(&GetConfigurationRequest::default()).await {
            Ok(r) => r.value,
            Err(e) if connection_gone(&e) => return Err(runtime_error(anyhow!("the IPC connection is gone: {e}"))),
            Err(e) => {
                tracing::warn!("cannot read the updated configuration: {e}");
                return Ok(());
            }
        };
        let new = match config::parse(&config::with_environment(&value)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("configuration update refused, keeping the running configuration: {e}");
                return Ok(());
            }
        };
        if new == self.config {
            return Ok(());
        }
        let old = std::mem::replace(&mut self.config, new.clone());
        if new.modbus != old.modbus {
            self.link = PlantLink::new(new.modbus.clone());
        }
        if new.poll_period != old.poll_period {
            *poll = interval(new.poll_period);
        }
        if new.stats_period != old.stats_period {
            *stats = interval(new.stats_period);
        }
        let batch_config = new.telemetry.batch_config(&self.thing, &self.topic);
        if batch_config != old.telemetry.batch_config(&self.thing, &self.topic) {
            match Batcher::new(batch_config) {
                Ok(batcher) => {
                    let mut previous = std::mem::replace(&mut self.batcher, batcher);
                    // The buffered readings go out under the rules they were collected with.
                    self.store(previous.flush());
                    self.retired = add_counters(self.retired, previous.counters());
                }
                Err(e) => tracing::error!("telemetry settings refused, keeping the running ones: {e}"),
            }
        }
        self.drain_settings.send_replace(drain_config(&new.telemetry));
        if new.telemetry.outbox_max_bytes != old.telemetry.outbox_max_bytes {
            tracing::warn!("telemetry.outboxMaxBytes takes effect at the next start");
        }
        tracing::info!("configuration updated");
        Ok(())
    }
}

/// Runs the sensor until SIGTERM or SIGINT.
pub async fn run(work_dir: &Path) -> Result<(), Failure> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")
        .map_err(runtime_error)?;
    let thing = std::env::var("AWS_IOT_THING_NAME").unwrap_or_default();
    if thing.is_empty() {
        return Err(config_error(anyhow!("AWS_IOT_THING_NAME is not set: run the sensor as a Greengrass component")));
    }
    let ipc = IpcClient::connect_from_env().await.map_err(|e| match e.next_step() {
        NextStep::Retry => runtime_error(anyhow!(e).context("cannot connect to the Greengrass IPC socket")),
        _ => config_error(anyhow!(e).context("cannot connect to the Greengrass IPC socket")),
    })?;
    let value = ipc
        .get_configuration(&GetConfigurationRequest::default())
        .await
        .context("cannot read the configuration")
        .map_err(runtime_error)?
        .value;
    let config = config::parse(&config::with_environment(&value)).map_err(config_error)?;

    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create the work directory {}", work_dir.display()))
        .map_err(runtime_error)?;
    let outbox_path = work_dir.join(OUTBOX_FILE);
    let bounds = OutboxConfig { max_rows: None, max_bytes: Some(config.telemetry.outbox_max_bytes) };
    let outbox = Outbox::open(&outbox_path, bounds).map_err(|e| match e {
        OutboxError::Storage(_) => runtime_error(e),
        // A file that is not ours or is damaged was left as it was: the operator moves it aside.
        other => config_error(other),
    })?;
    let topic = pump_types::telemetry_topic(&thing);
    let batcher = Batcher::new(config.telemetry.batch_config(&thing, &topic))
        .context("bad telemetry settings")
        .map_err(config_error)?;

    let drain_counters = Arc::new(DrainCounters::default());
    let (drain_settings, drain_rx) = watch::channel(drain_config(&config.telemetry));
    let mut drain = tokio::spawn(drain_forever(outbox.clone(), ipc.clone(), drain_rx, Arc::clone(&drain_counters)));

    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running })
        .await
        .context("cannot report RUNNING")
        .map_err(runtime_error)?;
    let mut updates =
        match ipc.subscribe_to_configuration_update(&SubscribeToConfigurationUpdateRequest::default()).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("configuration updates will not be followed: {e}");
                None
            }
        };
    tracing::info!(
        %thing, %topic, plant = %config.modbus.address, period = ?config.poll_period,
        pending = outbox.len(), "sensor running"
    );

    let mut poll = interval(config.poll_period);
    let mut stats_tick = interval(config.stats_period);
    let mut sensor = Sensor {
        ipc,
        link: PlantLink::new(config.modbus.clone()),
        thing,
        topic: topic.clone(),
        config,
        stats_path: work_dir.join(STATS_FILE),
        started: Instant::now(),
        started_epoch: epoch_ms(),
        seq: 0,
        batcher,
        retired: Counters::default(),
        outbox,
        unstored: VecDeque::new(),
        drain_counters,
        drain_settings,
        stats: Stats { v: 1, ..Default::default() },
    };
    sensor.stats.telemetry.topic = topic;

    let outcome = loop {
        let deadline = sensor.batcher.deadline().map(|ms| sensor.started + Duration::from_millis(ms));
        tokio::select! {
            _ = poll.tick() => {
                if !sensor.unstored.is_empty() {
                    sensor.store([]);
                }
                if let Err(e) = sensor.poll_once().await {
                    break Err(e);
                }
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                let now = sensor.mono_ms();
                let due = sensor.batcher.poll(now);
                sensor.store(due);
            }
            _ = stats_tick.tick() => sensor.report(),
            update = next_update(&mut updates) => match update {
                Some(()) => {
                    if let Err(e) = sensor.reload(&mut poll, &mut stats_tick).await {
                        break Err(e);
                    }
                }
                None => updates = None,
            },
            joined = &mut drain => {
                let e = match joined {
                    Ok(Ok(())) => anyhow!("the telemetry drain stopped"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow!("the telemetry drain failed: {e}"),
                };
                break Err(runtime_error(e));
            }
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = tokio::signal::ctrl_c() => break Ok("SIGINT"),
        }
    };
    // Whatever happened, buffered readings go to the outbox so the next run sends them.
    let rest = sensor.batcher.flush();
    sensor.store(rest);
    sensor.report();
    sensor.outbox.stop_drain(drain, SHUTDOWN_GRACE).await;
    match outcome {
        Ok(signal) => {
            tracing::info!("{signal}: stopped; {} telemetry messages wait in the outbox", sensor.outbox.len());
            Ok(())
        }
        Err(e) => Err(e),
    }
}
