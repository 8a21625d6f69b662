//! The I/O shell: feeds `kit::shadow::ShadowSync` and the protection policy with what happens
//! (shadow documents and messages, anomaly events, Modbus answers, timers) and performs what
//! they decide (GetThingShadow, UpdateThingShadow, Modbus writes). All decisions live in the
//! pure modules; this file only moves data between them and the world.
//!
//! One task owns everything, so events are handled one at a time in arrival order and no
//! state is shared.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use kit::ipc::IpcClient;
use kit::ipc::model::{
    ComponentUpdatePolicyEvents, DeferComponentUpdateRequest, GetConfigurationRequest, GetThingShadowRequest,
    PubSubMessage, ReceiveMode, SubscribeToComponentUpdatesRequest, SubscribeToConfigurationUpdateRequest,
    SubscribeToTopicRequest, UpdateThingShadowRequest,
};
use kit::shadow::{Action, Event, Problem, Refusal, Rejection, Section, ShadowSync, SyncConfig};
use pump_types::{ANOMALIES_TOPIC, AnomalyEvent, MODEL_TOPIC, Mode, SHADOW_NAME};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::Config;
use crate::model::ModelReport;
use crate::plant::{PlantError, PlantLink, PlantState};
use crate::protection::{Outcome, Protection};
use crate::settings::{self, Settings};
use crate::stats::Stats;
use crate::updates::{self, Answer, Busy, Notices};

/// Client tokens of the controller's shadow requests are `controller-{n}`.
const TOKEN_PREFIX: &str = "controller";
/// How often the plant is retried while it does not answer.
const PLANT_RETRY: Duration = Duration::from_millis(500);
/// How often `stats.json` is rewritten when something changed.
const STATS_PERIOD: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What started a chain of engine actions, for the latency figures.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// A shadow delta or documents message received at this instant.
    Shadow(Instant),
    /// Anything else.
    Other,
}

/// The controller's state.
pub struct Controller {
    ipc: IpcClient,
    thing: String,
    config: Config,
    plant: PlantLink,
    /// The plant's commands as last read back (or acknowledged).
    plant_state: PlantState,
    /// Set after a failed Modbus request: when the plant answers again, the commands are
    /// written again and refused values asked for again.
    plant_down: bool,
    settings: Settings,
    protection: Protection,
    /// `reported.model`: the analyzer's latest model status.
    model: ModelReport,
    sync: ShadowSync,
    stats: Stats,
    stats_path: PathBuf,
    retry_at: Option<Instant>,
    /// When the deployment being announced was first announced.
    notices: Notices,
    /// Set once the first shadow document was read and the mode the plant cannot show was
    /// taken from it (`settings::recover_mode`).
    mode_recovered: bool,
}

impl Controller {
    /// Connects to the plant (retrying until it answers or `shutdown` resolves) and builds the
    /// controller from what the plant runs now.
    pub async fn start(
        ipc: IpcClient,
        thing: String,
        config: Config,
        stats_path: PathBuf,
        shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) -> anyhow::Result<Option<Self>> {
        let mut plant = PlantLink::new(config.modbus_address, config.modbus_unit_id, config.modbus_timeout);
        let mut pause = PLANT_RETRY;
        let plant_state = loop {
            match plant.read().await {
                Ok(state) => break state,
                Err(e) => {
                    tracing::warn!("waiting for the plant: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = &mut *shutdown => return Ok(None),
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!(?plant_state, "plant at {} answers", plant.address());
        // The pump's own state is the truth to start from: a stopped pump is in mode off.
        let settings = Settings {
            mode: if plant_state.run { Mode::Auto } else { Mode::Off },
            speed_rpm: plant_state.speed_rpm,
            limits: config.default_limits,
        };
        let protection = Protection::new(now_ms());
        // Until the analyzer speaks, the model is `unknown`: a `model` left by an earlier run
        // may no longer be true.
        let model = ModelReport::new(now_ms());
        let sync_config = SyncConfig::new(TOKEN_PREFIX).context("shadow sync configuration")?;
        let sync = ShadowSync::new(sync_config, device_state(&settings, &plant_state, &protection, &model));
        Ok(Some(Controller {
            ipc,
            thing,
            config,
            plant,
            plant_state,
            plant_down: false,
            settings,
            protection,
            model,
            sync,
            stats: Stats::default(),
            stats_path,
            retry_at: None,
            notices: Notices::default(),
            mode_recovered: false,
        }))
    }

    fn device_state(&self) -> Section {
        device_state(&self.settings, &self.plant_state, &self.protection, &self.model)
    }

    fn shadow_topic(&self, suffix: &str) -> String {
        format!("$aws/things/{}/shadow/name/{SHADOW_NAME}/{suffix}", self.thing)
    }

    /// Subscribes, reads the shadow, reports RUNNING, then handles events until `shutdown`
    /// resolves. Returns an error when IPC is gone (the nucleus restarts the component).
    pub async fn run(mut self, mut shutdown: impl std::future::Future<Output = ()> + Unpin) -> anyhow::Result<()> {
        let subscribe = |topic: String| {
            let ipc = self.ipc.clone();
            async move {
                let request = SubscribeToTopicRequest {
                    topic: topic.clone(),
                    receive_mode: Some(ReceiveMode::ReceiveAllMessages),
                };
                ipc.subscribe_to_topic(&request).await.with_context(|| format!("SubscribeToTopic {topic}"))
            }
        };
        // Subscribed before the first read, so nothing published meanwhile is missed.
        let mut deltas = subscribe(self.shadow_topic("update/delta")).await?;
        let mut documents = subscribe(self.shadow_topic("update/documents")).await?;
        let mut anomalies = subscribe(ANOMALIES_TOPIC.to_owned()).await?;
        let mut model_statuses = subscribe(MODEL_TOPIC.to_owned()).await?;
        let mut config_updates = self
            .ipc
            .subscribe_to_configuration_update(&SubscribeToConfigurationUpdateRequest {
                component_name: None,
                key_path: vec![],
            })
            .await
            .context("SubscribeToConfigurationUpdate")?;
        let mut component_updates = self
            .ipc
            .subscribe_to_component_updates(&SubscribeToComponentUpdatesRequest {})
            .await
            .context("SubscribeToComponentUpdates")?;

        self.run_engine(vec![Event::Start], Origin::Other).await?;
        self.ipc
            .update_state(&kit::ipc::model::UpdateStateRequest {
                state: kit::ipc::model::ReportedLifecycleState::Running,
            })
            .await
            .context("UpdateState RUNNING")?;
        tracing::info!("controller running for {}", self.shadow_topic(""));

        let mut next_readback = Instant::now() + self.config.readback_interval;
        let mut stats_tick = tokio::time::interval(STATS_PERIOD);
        loop {
            let retry_at = self.retry_at;
            tokio::select! {
                _ = &mut shutdown => break,
                message = deltas.next_event() => {
                    let received = Instant::now();
                    let Some(document) = self.shadow_message(message, "delta")? else { continue };
                    self.run_engine(vec![Event::Delta { document }], Origin::Shadow(received)).await?;
                }
                message = documents.next_event() => {
                    let received = Instant::now();
                    let Some(document) = self.shadow_message(message, "documents")? else { continue };
                    self.run_engine(vec![Event::Documents { document }], Origin::Shadow(received)).await?;
                }
                message = anomalies.next_event() => {
                    let received = Instant::now();
                    let message = message.context("the anomalies subscription ended")?;
                    match message {
                        Ok(m) => self.on_anomaly(&m, received).await?,
                        Err(e) => bail!("the anomalies subscription failed: {e}"),
                    }
                }
                message = model_statuses.next_event() => {
                    match message.context("the model status subscription ended")? {
                        Ok(m) => self.on_model_status(&m).await?,
                        Err(e) => bail!("the model status subscription failed: {e}"),
                    }
                }
                update = config_updates.next_event() => {
                    match update.context("the configuration subscription ended")? {
                        Ok(_) => self.reload_config().await?,
                        Err(e) => bail!("the configuration subscription failed: {e}"),
                    }
                }
                event = component_updates.next_event() => {
                    match event.context("the component updates subscription ended")? {
                        Ok(e) => self.on_component_update(e).await?,
                        Err(e) => bail!("the component updates subscription failed: {e}"),
                    }
                }
                _ = sleep_until_opt(retry_at) => {
                    self.retry_at = None;
                    self.run_engine(vec![Event::RetryDue], Origin::Other).await?;
                }
                _ = tokio::time::sleep_until(next_readback) => {
                    self.readback().await?;
                    let period = if self.plant_down { PLANT_RETRY } else { self.config.readback_interval };
                    next_readback = Instant::now() + period;
                }
                _ = stats_tick.tick() => self.flush_stats(),
            }
        }
        tracing::info!("controller stopping");
        self.flush_stats();
        Ok(())
    }

    /// Answers a deployment's notice: defer while busy, up to the configured total.
    async fn on_component_update(&mut self, event: ComponentUpdatePolicyEvents) -> anyhow::Result<()> {
        let pre = match event {
            ComponentUpdatePolicyEvents::PreUpdate(pre) => pre,
            ComponentUpdatePolicyEvents::PostUpdate(post) => {
                self.notices.done(&post.deployment_id);
                return Ok(());
            }
        };
        let target = settings::command(&self.settings, &self.protection.actions(), self.config.policy.safe_speed_rpm);
        let busy = Busy {
            protective_action: !self.protection.actions().is_empty(),
            ramping: target != self.plant_state.as_command(),
        };
        let deferred = self.notices.deferred(&pre.deployment_id, Instant::now());
        let (recheck, message) = match updates::decide(&self.config.updates, busy, deferred) {
            Answer::Defer { recheck, message } => (recheck, Some(message)),
            Answer::Go => (Duration::ZERO, None),
        };
        tracing::info!(deployment = %pre.deployment_id, ?busy, ?deferred, ?recheck, "component update notice");
        let request = DeferComponentUpdateRequest {
            deployment_id: pre.deployment_id,
            message,
            recheck_after_ms: Some(u64::try_from(recheck.as_millis()).unwrap_or(u64::MAX)),
        };
        if let Err(e) = self.ipc.defer_component_update(&request).await {
            // Too late (the nucleus went ahead) is not a reason to stop controlling the pump.
            self.check_ipc()?;
            tracing::warn!("DeferComponentUpdate: {e}");
        }
        Ok(())
    }

    fn flush_stats(&mut self) {
        if let Err(e) = self.stats.flush(&self.stats_path, now_ms()) {
            tracing::warn!("cannot write {}: {e}", self.stats_path.display());
        }
    }

    /// The JSON body of a shadow message; `None` (counted, logged) when it is not JSON.
    fn shadow_message(
        &mut self,
        message: Option<Result<PubSubMessage, kit::ipc::IpcError>>,
        what: &str,
    ) -> anyhow::Result<Option<Value>> {
        let message = message.with_context(|| format!("the shadow {what} subscription ended"))?;
        let message = message.map_err(|e| anyhow::anyhow!("the shadow {what} subscription failed: {e}"))?;
        match message_json(&message) {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                self.stats.count("malformedShadowMessages");
                tracing::warn!("ignored a shadow {what} message that is not JSON: {e}");
                Ok(None)
            }
        }
    }

    /// Hands events to the engine and performs its actions until none is left.
    async fn run_engine(&mut self, events: Vec<Event>, origin: Origin) -> anyhow::Result<()> {
        let mut queue: VecDeque<Action> = VecDeque::new();
        for event in events {
            queue.extend(self.sync.handle(event));
        }
        while let Some(action) = queue.pop_front() {
            match action {
                Action::GetShadow { client_token } => {
                    let request =
                        GetThingShadowRequest { thing_name: self.thing.clone(), shadow_name: Some(SHADOW_NAME.into()) };
                    let event = match self.ipc.get_thing_shadow(&request).await {
                        Ok(r) => match serde_json::from_slice::<Value>(r.payload.as_bytes()) {
                            Ok(document) => {
                                queue.extend(self.recover_mode(&document));
                                Event::GetAccepted { client_token, document }
                            }
                            Err(e) => Event::GetRejected {
                                client_token,
                                rejection: Rejection::new(500, format!("unreadable shadow document: {e}")),
                            },
                        },
                        Err(e) => {
                            self.check_ipc()?;
                            Event::GetRejected { client_token, rejection: Rejection::from_ipc(&e) }
                        }
                    };
                    queue.extend(self.sync.handle(event));
                }
                Action::Apply { changes } => {
                    for event in self.apply(&changes, origin).await {
                        queue.extend(self.sync.handle(event));
                    }
                }
                Action::UpdateShadow { client_token, payload } => {
                    self.stats.count("shadowUpdates");
                    let request = UpdateThingShadowRequest {
                        thing_name: self.thing.clone(),
                        shadow_name: Some(SHADOW_NAME.into()),
                        payload: serde_json::to_vec(&payload).context("encoding a shadow update")?.into(),
                    };
                    let event = match self.ipc.update_thing_shadow(&request).await {
                        Ok(r) => {
                            // The answer must carry our token to count; a body we cannot read
                            // still answers our request.
                            let document = serde_json::from_slice::<Value>(r.payload.as_bytes())
                                .unwrap_or_else(|_| json!({"clientToken": client_token}));
                            Event::UpdateAccepted { document }
                        }
                        Err(e) => {
                            self.check_ipc()?;
                            self.stats.count("shadowUpdatesRejected");
                            Event::UpdateRejected { client_token, rejection: Rejection::from_ipc(&e) }
                        }
                    };
                    queue.extend(self.sync.handle(event));
                }
                Action::RetryAfter(pause) => self.retry_at = Some(Instant::now() + pause),
                Action::Problem(problem) => {
                    self.stats.count(match problem {
                        Problem::Malformed { .. } => "malformedShadowMessages",
                        _ => "shadowProblems",
                    });
                    tracing::warn!("shadow: {problem}");
                }
            }
        }
        Ok(())
    }

    /// On the first document read: the mode the plant cannot show (`manual` runs like `auto`,
    /// `maintenance` is stopped like `off`) is taken from the `reported.mode` the previous run
    /// left, when it agrees with the run coil. Without it a restart would put a pump an operator
    /// holds in `manual` back in `auto`, where a `maintenance` refused over `manual` would then
    /// stop it. Handed to the engine before the document, so desired is reconciled against it.
    fn recover_mode(&mut self, document: &Value) -> Vec<Action> {
        if std::mem::replace(&mut self.mode_recovered, true) {
            return Vec::new();
        }
        let reported = document.pointer("/state/reported/mode");
        let mode = settings::recover_mode(self.settings.mode, reported);
        if mode == self.settings.mode {
            return Vec::new();
        }
        tracing::info!(mode = settings::mode_name(mode), "mode in effect before the restart, as reported");
        self.settings.mode = mode;
        self.sync.handle(Event::LocalChange { state: self.device_state() })
    }

    /// A closed IPC connection is fatal: the nucleus restarts the component.
    fn check_ipc(&self) -> anyhow::Result<()> {
        if self.ipc.is_closed() {
            bail!("the IPC connection to the nucleus is closed");
        }
        Ok(())
    }

    /// Answers one `Apply`: validate, drive the plant, and say what is in effect.
    async fn apply(&mut self, changes: &Section, origin: Origin) -> Vec<Event> {
        self.stats.count("applies");
        let before = (self.settings, self.protection.clone());
        let holding = self.protection.is_holding();
        let hold = self.protection.speed_hold();
        let verdict = settings::decide(&self.settings, changes, hold.as_deref());
        self.settings = verdict.settings;
        let now = now_ms();
        let mut outcome = Outcome::default();
        if self.settings.mode != before.0.mode {
            outcome = self.protection.mode_changed(&self.config.policy, self.settings.mode, now);
        } else if holding && self.settings != before.0 {
            outcome = self.protection.desired_changed(now);
        }
        let mut refusals = verdict.refusals;
        let mut accepted = verdict.accepted;
        match self.drive().await {
            Ok(writes) => {
                if let (Origin::Shadow(received), true) = (origin, writes > 0) {
                    self.stats.delta(received.elapsed());
                }
            }
            Err(e) => {
                // The plant did not take the new settings: they are not in effect.
                tracing::warn!("applying {changes:?}: {e}");
                (self.settings, self.protection) = before;
                outcome = Outcome::default();
                for path in accepted.drain(..) {
                    let value = lookup(changes, &path).cloned().unwrap_or(Value::Null);
                    refusals.push(Refusal::new(path, value, e.to_string()));
                }
            }
        }
        self.stats.count_by("refusals", refusals.len());
        let mut applied = Section::new();
        let in_effect = self.device_state();
        for path in &accepted {
            if let Some(value) = lookup(&in_effect, path) {
                set(&mut applied, path, value.clone());
            }
        }
        // The rest of the device state first, so the engine sends one report with both.
        let mut events = vec![Event::LocalChange { state: in_effect }, Event::Applied { applied, refused: refusals }];
        if outcome.released {
            events.push(Event::Reconcile);
        }
        events
    }

    /// Writes the commands the settings and the protective actions call for, then reads them
    /// back. Returns the number of writes.
    async fn drive(&mut self) -> Result<usize, PlantError> {
        let target = settings::command(&self.settings, &self.protection.actions(), self.config.policy.safe_speed_rpm);
        if target == self.plant_state.as_command() && !self.plant_down {
            return Ok(0);
        }
        let result = self.plant.write(&self.plant_state, &target).await;
        let writes = match result {
            Ok(n) => n,
            Err(e) => {
                self.stats.count("modbusErrors");
                self.plant_down = true;
                return Err(e);
            }
        };
        self.stats.count_by("modbusWrites", writes);
        match self.plant.read().await {
            Ok(state) => self.plant_state = state,
            Err(e) => {
                // The writes were acknowledged (a Modbus write answer echoes the value).
                tracing::warn!("reading back after writing: {e}");
                self.stats.count("modbusErrors");
                self.plant_state =
                    PlantState { speed_rpm: target.speed_rpm, run: target.run, bypass_open: target.bypass_open };
            }
        }
        self.plant_down = false;
        Ok(writes)
    }

    /// An anomaly event: the policy decides, the plant follows, the shadow says so.
    async fn on_anomaly(&mut self, message: &PubSubMessage, received: Instant) -> anyhow::Result<()> {
        let event = match pump_types::parse::<AnomalyEvent>(&message_bytes(message)) {
            Ok(event) => event,
            Err(e) => {
                self.stats.count("malformedAnomalies");
                tracing::warn!("ignored an anomaly message: {e}");
                return Ok(());
            }
        };
        self.stats.count("anomalies");
        let now = now_ms();
        let policy = &self.config.policy;
        let outcome = if event.active {
            self.protection.raise(policy, self.settings.mode, event.kind, &event.id, &event.reason, now)
        } else {
            let raised = self.protection.alarm_ids(event.kind);
            if !raised.is_empty() && !raised.contains(&event.id.as_str()) {
                tracing::info!("clear of {:?} {} for the anomaly raised as {raised:?}", event.kind, event.id);
            }
            match self.protection.clear(policy, event.kind, &event.id, now) {
                Some(outcome) => outcome,
                None => {
                    self.stats.count("unknownClears");
                    tracing::info!("clear of {:?} {} that was not raised", event.kind, event.id);
                    return Ok(());
                }
            }
        };
        tracing::info!(kind = ?event.kind, active = event.active, id = %event.id, "anomaly; protection {}", self.protection.report());
        if outcome.actions_changed {
            match self.drive().await {
                Ok(writes) if writes > 0 => self.stats.anomaly(received.elapsed()),
                Ok(_) => {}
                Err(e) => tracing::error!("protective action not applied, retrying when the plant answers: {e}"),
            }
        }
        let mut events = vec![Event::LocalChange { state: self.device_state() }];
        if outcome.released {
            events.push(Event::Reconcile);
        }
        self.run_engine(events, Origin::Other).await
    }

    /// A model status from the analyzer: reported when it says something new.
    async fn on_model_status(&mut self, message: &PubSubMessage) -> anyhow::Result<()> {
        let status = match crate::model::parse_status(&message_bytes(message)) {
            Ok(status) => status,
            Err(e) => {
                self.stats.count("malformedModelStatuses");
                tracing::warn!("ignored a model status: {e}");
                return Ok(());
            }
        };
        self.stats.count("modelStatuses");
        if !self.model.update(&status) {
            return Ok(());
        }
        self.stats.count("modelChanges");
        let version = status.model.as_ref().map_or("", |m| m.version.as_str());
        tracing::info!(status = self.model.state().as_str(), version, running = ?status.running, error = ?status.error, "model status changed");
        self.run_engine(vec![Event::LocalChange { state: self.device_state() }], Origin::Other).await
    }

    /// Reads the plant: reports outside changes, and after an outage writes the commands again
    /// and asks for the values refused meanwhile.
    async fn readback(&mut self) -> anyhow::Result<()> {
        match self.plant.read().await {
            Ok(state) => {
                let mut events = Vec::new();
                if state != self.plant_state {
                    self.stats.count("outsideChanges");
                    tracing::info!(?state, was = ?self.plant_state, "the plant's commands changed outside the controller");
                    self.plant_state = state;
                }
                if self.plant_down {
                    tracing::info!("the plant answers again");
                    if let Err(e) = self.drive().await {
                        tracing::warn!("{e}");
                        return Ok(());
                    }
                    events.push(Event::LocalChange { state: self.device_state() });
                    events.push(Event::Reconcile);
                } else {
                    events.push(Event::LocalChange { state: self.device_state() });
                }
                self.run_engine(events, Origin::Other).await
            }
            Err(e) => {
                if !self.plant_down {
                    tracing::warn!("{e}");
                    self.stats.count("modbusErrors");
                }
                self.plant_down = true;
                Ok(())
            }
        }
    }

    /// A configuration change: adopt it if valid, keep the old one otherwise.
    async fn reload_config(&mut self) -> anyhow::Result<()> {
        let request = GetConfigurationRequest { component_name: None, key_path: vec![] };
        let value = match self.ipc.get_configuration(&request).await {
            Ok(r) => r.value,
            Err(e) => {
                self.check_ipc()?;
                tracing::warn!("GetConfiguration after a change: {e}");
                return Ok(());
            }
        };
        match Config::from_json(&crate::config::with_environment(&value)) {
            Ok(config) if config == self.config => {}
            Ok(config) => {
                tracing::info!("configuration changed");
                self.stats.count("configChanges");
                if (config.modbus_address, config.modbus_unit_id, config.modbus_timeout)
                    != (self.config.modbus_address, self.config.modbus_unit_id, self.config.modbus_timeout)
                {
                    self.plant = PlantLink::new(config.modbus_address, config.modbus_unit_id, config.modbus_timeout);
                    self.plant_down = true;
                }
                self.config = config;
            }
            Err(e) => {
                self.stats.count("configErrors");
                tracing::error!("{e}; keeping the previous configuration");
            }
        }
        Ok(())
    }
}

/// What `reported` must say: the settings in effect, the plant's commands as read back,
/// protection, alarms and the analyzer's model.
fn device_state(settings: &Settings, plant: &PlantState, protection: &Protection, model: &ModelReport) -> Section {
    let mut state = settings.to_section();
    state.insert("speedRpm".into(), plant.speed_rpm.into());
    state.insert("running".into(), plant.run.into());
    state.insert("bypassOpen".into(), plant.bypass_open.into());
    state.insert("protection".into(), protection.report());
    state.insert("alarms".into(), protection.alarms_report());
    state.insert("model".into(), model.report());
    state
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A pub/sub message's body as bytes (JSON messages serialized).
fn message_bytes(message: &PubSubMessage) -> Vec<u8> {
    match message {
        PubSubMessage::Json(m) => serde_json::to_vec(&m.message).unwrap_or_default(),
        PubSubMessage::Binary(m) => m.message.as_bytes().to_vec(),
    }
}

/// A pub/sub message's body as JSON (binary messages are parsed).
fn message_json(message: &PubSubMessage) -> Result<Value, serde_json::Error> {
    match message {
        PubSubMessage::Json(m) => Ok(m.message.clone()),
        PubSubMessage::Binary(m) => serde_json::from_slice(m.message.as_bytes()),
    }
}

/// The value at a dotted path.
fn lookup<'a>(section: &'a Section, path: &str) -> Option<&'a Value> {
    let mut steps = path.split('.');
    let mut node = section.get(steps.next()?)?;
    for step in steps {
        node = node.get(step)?;
    }
    Some(node)
}

/// Sets the value at a dotted path, creating objects on the way.
fn set(section: &mut Section, path: &str, value: Value) {
    let steps: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = steps.split_last() else { return };
    let mut node = section;
    for step in parents {
        let slot = node.entry((*step).to_owned()).or_insert_with(|| Value::Object(Section::new()));
        if !slot.is_object() {
            *slot = Value::Object(Section::new());
        }
        let Value::Object(inner) = slot else { return };
        node = inner;
    }
    node.insert((*last).to_owned(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_paths_read_and_write_nested_values() {
        let mut s = json!({"limits": {"minRpm": 1}}).as_object().cloned().unwrap();
        assert_eq!(lookup(&s, "limits.minRpm"), Some(&json!(1)));
        assert_eq!(lookup(&s, "limits.maxRpm"), None);
        set(&mut s, "limits.maxRpm", json!(2));
        set(&mut s, "mode", json!("auto"));
        assert_eq!(Value::Object(s), json!({"limits": {"minRpm": 1, "maxRpm": 2}, "mode": "auto"}));
    }

    #[test]
    fn messages_are_read_as_json_whatever_their_kind() {
        let binary = PubSubMessage::binary(b"{\"a\":1}".to_vec());
        assert_eq!(message_json(&binary).unwrap(), json!({"a": 1}));
        assert_eq!(message_json(&PubSubMessage::json(json!({"b": 2}))).unwrap(), json!({"b": 2}));
        assert!(message_json(&PubSubMessage::binary(b"not json".to_vec())).is_err());
    }
}
