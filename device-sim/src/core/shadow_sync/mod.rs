//! Shadow sync: the local shadows named in the ShadowManager's `synchronize` configuration
//! are kept in step with their cloud twins over the core's IoT Core connection (the cloud's
//! MQTT shadow topics, AWS-CONTRACTS.md §1).
//!
//! The rules ([`merge`]) are the developer guide's ("Shadow merge conflict behavior") with the
//! gaps filled in; `device-sim/README.md` states them for users. In short:
//! - **Full sync** at start, after every (re)connect, after a version conflict, and on every
//!   period with the `periodic` strategy: read both sides, three-way merge against the state
//!   of the last sync (stored durably, so offline changes across core restarts count), write
//!   what differs to each side the direction allows.
//! - **Real time** (the default strategy), while connected: a local change is sent to the
//!   cloud as the same partial update, carrying the cloud version last seen (a 409 means
//!   someone else changed the cloud: full sync); a cloud change (its `update/documents`) whose
//!   `previous.version` is the version last seen is applied locally as the difference between
//!   `previous` and `current`; anything else: full sync.
//! - Versions are never copied across: the local and the cloud shadow each count their own.
//!   The sync record keeps both at the last sync.

pub mod merge;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use cloud_api::ipc::model::{MqttMessage, Qos};
use cloud_api::shadow::ShadowRecord;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use tokio::task::JoinHandle;

use self::merge::{Direction, Write, plan_full_sync, update_between};
use super::local_shadow::{ChangeKind, LocalShadowError, LocalShadows, ShadowChange, ShadowKey, topic_prefix};
use super::services::IotCoreBridge;
use super::shadow_store::{SqliteShadowStore, SyncRecord};

/// The ShadowManager's component name, whose configuration holds `synchronize` and `strategy`.
pub const SHADOW_MANAGER: &str = "aws.greengrass.ShadowManager";
/// How long a cloud shadow request may take before the sync gives up on it (and retries at
/// the next full sync).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Client tokens of the sync's own cloud requests start with this.
pub const TOKEN_PREFIX: &str = "gg-shadow-sync-";

/// When to sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// On every change (the default).
    #[default]
    RealTime,
    /// A full sync every period.
    Periodic(Duration),
}

/// Which shadows sync, which way, when.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncConfig {
    /// (thing, shadow name; `""` is the classic shadow).
    pub shadows: Vec<ShadowKey>,
    /// Direction.
    pub direction: Direction,
    /// Strategy.
    pub strategy: Strategy,
}

impl SyncConfig {
    /// Reads the ShadowManager configuration (`synchronize {coreThing {classic, namedShadows},
    /// shadowDocuments [{thingName, classic, namedShadows}], direction}`, `strategy {type,
    /// delay}`). `None` configuration means nothing syncs.
    pub fn from_shadow_manager(config: Option<&Value>, core_thing: &str) -> Result<Self, String> {
        let mut out = SyncConfig::default();
        let Some(config) = config else { return Ok(out) };
        let sync = config.get("synchronize").unwrap_or(&Value::Null);
        let mut add = |thing: &str, entry: &Value, what: &str| -> Result<(), String> {
            if !entry.is_object() {
                return Err(format!("{what} must be an object"));
            }
            if entry
                .get("classic")
                .map_or(Ok(true), |v| v.as_bool().ok_or(format!("{what}.classic must be a boolean")))?
            {
                out.shadows.push((thing.to_owned(), String::new()));
            }
            match entry.get("namedShadows") {
                None | Some(Value::Null) => {}
                Some(Value::Array(names)) => {
                    for n in names {
                        let n = n.as_str().ok_or(format!("{what}.namedShadows must hold strings"))?;
                        out.shadows.push((thing.to_owned(), n.to_owned()));
                    }
                }
                Some(_) => return Err(format!("{what}.namedShadows must be an array")),
            }
            Ok(())
        };
        if let Some(core) = sync.get("coreThing").filter(|v| !v.is_null()) {
            add(core_thing, core, "synchronize.coreThing")?;
        }
        match sync.get("shadowDocuments") {
            None | Some(Value::Null) => {}
            Some(Value::Array(docs)) => {
                for (i, d) in docs.iter().enumerate() {
                    let what = format!("synchronize.shadowDocuments[{i}]");
                    let thing =
                        d.get("thingName").and_then(Value::as_str).ok_or(format!("{what}.thingName is missing"))?;
                    add(thing, d, &what)?;
                }
            }
            Some(_) => return Err("synchronize.shadowDocuments must be an array".into()),
        }
        if let Some(d) = sync.get("direction").filter(|v| !v.is_null()) {
            let s = d.as_str().unwrap_or_default();
            out.direction = Direction::parse(s).ok_or(format!(
                "synchronize.direction {d} is not betweenDeviceAndCloud, deviceToCloud or cloudToDevice"
            ))?;
        }
        if let Some(st) = config.get("strategy").filter(|v| !v.is_null()) {
            out.strategy = match st.get("type").and_then(Value::as_str) {
                None | Some("realTime") => Strategy::RealTime,
                Some("periodic") => {
                    let delay = st.get("delay").and_then(Value::as_u64).unwrap_or(300);
                    if delay == 0 {
                        return Err("strategy.delay must be at least 1 second".into());
                    }
                    Strategy::Periodic(Duration::from_secs(delay))
                }
                Some(other) => return Err(format!("strategy.type {other:?} is not realTime or periodic")),
            };
        }
        let mut seen = HashSet::new();
        out.shadows.retain(|k| seen.insert(k.clone()));
        Ok(out)
    }
}

/// What happened to a cloud request.
#[derive(Debug, thiserror::Error)]
enum CloudError {
    /// `…/rejected` with this code and message.
    #[error("the cloud shadow service rejected the request: {0} {1}")]
    Rejected(u64, String),
    /// No answer in time, or not connected.
    #[error("the cloud shadow service is unavailable: {0}")]
    Unavailable(String),
}

/// The running sync task.
#[derive(Debug)]
pub struct ShadowSync {
    task: JoinHandle<()>,
}

impl Drop for ShadowSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ShadowSync {
    /// Starts syncing (nothing to do when `config.shadows` is empty).
    pub async fn start(
        config: SyncConfig,
        shadows: LocalShadows,
        store: Arc<SqliteShadowStore>,
        bridge: Arc<dyn IotCoreBridge>,
        connection: watch::Receiver<bool>,
    ) -> Result<Self, String> {
        let (tx, rx) = mpsc::channel(1024);
        for key in &config.shadows {
            let prefix = topic_prefix(&key.0, &key.1);
            for op in ["get", "update", "delete"] {
                let filter = format!("{prefix}/{op}/+");
                let mut sub = bridge.subscribe(&filter, Qos::AtLeastOnce).await.map_err(|e| e.0)?;
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(m) = sub.recv().await {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
        let local_changes = shadows.changes();
        let engine = Engine {
            config,
            shadows,
            store,
            bridge,
            connection,
            cloud: rx,
            backlog: VecDeque::new(),
            own_local_versions: HashMap::new(),
            needs_full: HashSet::new(),
            failed: HashSet::new(),
            next_token: 0,
        };
        Ok(Self { task: tokio::spawn(engine.run(local_changes)) })
    }
}

struct Engine {
    config: SyncConfig,
    shadows: LocalShadows,
    store: Arc<SqliteShadowStore>,
    bridge: Arc<dyn IotCoreBridge>,
    connection: watch::Receiver<bool>,
    cloud: mpsc::Receiver<MqttMessage>,
    /// Cloud messages read while waiting for a response, handled afterwards.
    backlog: VecDeque<MqttMessage>,
    /// Local versions the sync wrote itself (their change events are not sent back).
    own_local_versions: HashMap<ShadowKey, HashSet<u64>>,
    /// Shadows whose next step must be a full sync (offline changes, conflicts, errors).
    needs_full: HashSet<ShadowKey>,
    /// Shadows whose last full sync failed: retried on the retry beat and at every reconnect,
    /// not at every event.
    failed: HashSet<ShadowKey>,
    next_token: u64,
}

/// A shadow record's state (`{"desired", "reported"}`), `None` when the shadow does not exist.
fn local_state(record: Option<&ShadowRecord>) -> Option<Value> {
    let doc = record?.document.as_ref()?;
    let mut state = serde_json::Map::new();
    if let Some(d) = &doc.desired {
        state.insert("desired".into(), Value::Object(d.clone()));
    }
    if let Some(r) = &doc.reported {
        state.insert("reported".into(), Value::Object(r.clone()));
    }
    Some(Value::Object(state))
}

/// The `desired`/`reported` part of a cloud document's `state`.
fn cloud_state(doc: &Value) -> Value {
    let mut state = serde_json::Map::new();
    for s in ["desired", "reported"] {
        if let Some(v) = doc.get("state").and_then(|st| st.get(s)).filter(|v| !v.is_null()) {
            state.insert(s.into(), v.clone());
        }
    }
    Value::Object(state)
}

impl Engine {
    fn connected(&self) -> bool {
        *self.connection.borrow()
    }

    fn key_of_topic(&self, topic: &str) -> Option<(ShadowKey, String)> {
        self.config.shadows.iter().find_map(|k| {
            let prefix = topic_prefix(&k.0, &k.1);
            let rest = topic.strip_prefix(&prefix)?.strip_prefix('/')?;
            // A classic prefix is also the start of every named one: `name/…` is not ours.
            (!rest.starts_with("name/")).then(|| (k.clone(), rest.to_owned()))
        })
    }

    async fn run(mut self, mut local: broadcast::Receiver<ShadowChange>) {
        if self.config.shadows.is_empty() {
            return;
        }
        let all: Vec<ShadowKey> = self.config.shadows.clone();
        self.needs_full.extend(all.iter().cloned());
        let mut tick = match self.config.strategy {
            Strategy::Periodic(d) => Some(tokio::time::interval(d)),
            Strategy::RealTime => None,
        };
        // Failed full syncs are retried on this beat (and at every reconnect).
        let mut retry = tokio::time::interval(Duration::from_secs(5));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if tick.is_none() {
            self.sync_pending().await;
        }
        loop {
            if let Some(m) = self.backlog.pop_front() {
                self.on_cloud_message(m).await;
                self.sync_out_of_step(tick.is_none()).await;
                continue;
            }
            tokio::select! {
                changed = self.connection.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    if self.connected() {
                        self.needs_full.extend(all.iter().cloned());
                        if tick.is_none() {
                            self.sync_pending().await;
                        }
                    }
                }
                change = local.recv() => match change {
                    Ok(change) => self.on_local_change(change).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.needs_full.extend(all.iter().cloned()),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(m) = self.cloud.recv() => self.on_cloud_message(m).await,
                _ = async { tick.as_mut().expect("periodic").tick().await }, if tick.is_some() => {
                    self.needs_full.extend(all.iter().cloned());
                    self.sync_pending().await;
                }
                _ = retry.tick(), if tick.is_none() && !self.needs_full.is_empty() => self.sync_pending().await,
            }
            self.sync_out_of_step(tick.is_none()).await;
        }
    }

    /// In real time, a shadow that fell out of step (a version conflict, a cloud change that
    /// does not follow the last one seen) is fully synced at once: waiting for the retry beat
    /// would hold a change back for seconds. Shadows whose sync failed wait for the beat.
    async fn sync_out_of_step(&mut self, real_time: bool) {
        if !real_time || self.needs_full.is_empty() || !self.connected() {
            return;
        }
        let mut now: Vec<ShadowKey> = self.needs_full.difference(&self.failed).cloned().collect();
        now.sort();
        for key in now {
            self.full_sync(&key).await;
        }
    }

    /// Full syncs of every shadow that needs one, when connected.
    async fn sync_pending(&mut self) {
        if !self.connected() {
            return;
        }
        let mut pending: Vec<ShadowKey> = self.needs_full.iter().cloned().collect();
        pending.sort();
        for key in pending {
            self.full_sync(&key).await;
        }
    }

    fn token(&mut self) -> String {
        self.next_token += 1;
        format!("{TOKEN_PREFIX}{}", self.next_token)
    }

    /// Sends a cloud shadow request and waits for its answer (other messages meanwhile go to
    /// the backlog).
    async fn request(&mut self, key: &ShadowKey, op: &str, mut body: Value) -> Result<Value, CloudError> {
        if !self.connected() {
            return Err(CloudError::Unavailable("not connected".into()));
        }
        let token = self.token();
        body["clientToken"] = Value::String(token.clone());
        let prefix = topic_prefix(&key.0, &key.1);
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        self.bridge
            .publish(&format!("{prefix}/{op}"), Qos::AtLeastOnce, payload, false)
            .await
            .map_err(|e| CloudError::Unavailable(e.0))?;
        let accepted = format!("{prefix}/{op}/accepted");
        let rejected = format!("{prefix}/{op}/rejected");
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        loop {
            let m = match tokio::time::timeout_at(deadline, self.cloud.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(CloudError::Unavailable("bridge closed".into())),
                Err(_) => return Err(CloudError::Unavailable(format!("no answer to {op} within {REQUEST_TIMEOUT:?}"))),
            };
            let doc: Value = serde_json::from_slice(m.payload.as_bytes()).unwrap_or(Value::Null);
            let ours = doc.get("clientToken").and_then(Value::as_str) == Some(token.as_str());
            if ours && m.topic_name == accepted {
                return Ok(doc);
            }
            if ours && m.topic_name == rejected {
                let code = doc.get("code").and_then(Value::as_u64).unwrap_or(0);
                let message = doc.get("message").and_then(Value::as_str).unwrap_or_default().to_owned();
                return Err(CloudError::Rejected(code, message));
            }
            self.backlog.push_back(m);
        }
    }

    fn record(&self, key: &ShadowKey) -> SyncRecord {
        self.store.sync_record(key).unwrap_or_else(|e| {
            tracing::warn!(thing = %key.0, shadow = %key.1, error = %e, "unreadable sync record; starting from none");
            SyncRecord::default()
        })
    }

    fn save(&self, key: &ShadowKey, record: &SyncRecord) {
        if let Err(e) = self.store.save_sync_record(key, record) {
            tracing::warn!(thing = %key.0, shadow = %key.1, error = %e, "cannot store the sync record");
        }
    }

    /// Applies an update or delete locally as the sync; returns the new local version.
    fn write_local(&mut self, key: &ShadowKey, write: &Write) -> Result<Option<u64>, LocalShadowError> {
        let accepted = match write {
            Write::Nothing => return Ok(None),
            Write::Update(doc) => {
                self.shadows.update_from_sync(&key.0, &key.1, &serde_json::to_vec(doc).unwrap_or_default())?
            }
            Write::Delete => match self.shadows.delete_from_sync(&key.0, &key.1) {
                Ok(a) => a,
                Err(LocalShadowError::Rejected(e)) if e.code == 404 => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let version = accepted.get("version").and_then(Value::as_u64);
        if let Some(v) = version {
            self.own_local_versions.entry(key.clone()).or_default().insert(v);
        }
        Ok(version)
    }

    async fn full_sync(&mut self, key: &ShadowKey) {
        for _ in 0..3 {
            match self.try_full_sync(key).await {
                Ok(()) => {
                    self.needs_full.remove(key);
                    self.failed.remove(key);
                    return;
                }
                Err(CloudError::Rejected(409, _)) => continue,
                Err(e) => {
                    tracing::warn!(thing = %key.0, shadow = %key.1, error = %e, "shadow sync postponed");
                    self.failed.insert(key.clone());
                    return;
                }
            }
        }
        tracing::warn!(thing = %key.0, shadow = %key.1, "shadow sync postponed: the cloud shadow kept changing");
        self.failed.insert(key.clone());
    }

    async fn try_full_sync(&mut self, key: &ShadowKey) -> Result<(), CloudError> {
        let mut record = self.record(key);
        let (cloud, cloud_version) = match self.request(key, "get", json!({})).await {
            Ok(doc) => (Some(cloud_state(&doc)), doc.get("version").and_then(Value::as_u64).unwrap_or(0)),
            Err(CloudError::Rejected(404, _)) => (None, record.cloud_version),
            Err(e) => return Err(e),
        };
        let local_record = self.shadows.record(&key.0, &key.1);
        let local = local_state(local_record.as_ref());
        let plan = plan_full_sync(record.base.as_ref(), local.as_ref(), cloud.as_ref(), self.config.direction);
        if let Some(v) = self.write_local(key, &plan.local).map_err(|e| CloudError::Unavailable(e.to_string()))? {
            record.local_version = v;
        }
        record.cloud_version = cloud_version;
        match &plan.cloud {
            Write::Nothing => {}
            Write::Update(doc) => {
                let mut doc = doc.clone();
                if cloud.is_some() {
                    doc["version"] = json!(cloud_version);
                }
                let accepted = self.request(key, "update", doc).await?;
                record.cloud_version = accepted.get("version").and_then(Value::as_u64).unwrap_or(cloud_version);
            }
            Write::Delete => match self.request(key, "delete", json!({})).await {
                Ok(a) => record.cloud_version = a.get("version").and_then(Value::as_u64).unwrap_or(cloud_version),
                Err(CloudError::Rejected(404, _)) => {}
                Err(e) => return Err(e),
            },
        }
        record.base = plan.base;
        if let Some(r) = self.shadows.record(&key.0, &key.1) {
            record.local_version = r.version;
        }
        self.save(key, &record);
        tracing::debug!(thing = %key.0, shadow = %key.1, "full shadow sync done");
        Ok(())
    }

    async fn on_local_change(&mut self, change: ShadowChange) {
        let key = change.key.clone();
        if !self.config.shadows.contains(&key) {
            return;
        }
        if self.own_local_versions.get_mut(&key).is_some_and(|s| s.remove(&change.record.version)) {
            return;
        }
        if !self.config.direction.device_to_cloud() {
            // The next full sync puts the cloud's values back where they conflict.
            return;
        }
        if !self.connected() || self.config.strategy != Strategy::RealTime || self.needs_full.contains(&key) {
            self.needs_full.insert(key);
            return;
        }
        let mut record = self.record(&key);
        let result = match change.kind {
            ChangeKind::Updated => {
                let mut doc = json!({"state": change.accepted.get("state").cloned().unwrap_or(json!({}))});
                if record.cloud_version > 0 && record.base.is_some() {
                    doc["version"] = json!(record.cloud_version);
                }
                self.request(&key, "update", doc).await
            }
            ChangeKind::Deleted => self.request(&key, "delete", json!({})).await,
        };
        match result {
            Ok(accepted) => {
                record.cloud_version = accepted.get("version").and_then(Value::as_u64).unwrap_or(record.cloud_version);
                record.base = local_state(Some(&change.record));
                record.local_version = change.record.version;
                self.save(&key, &record);
            }
            Err(e) => {
                tracing::info!(thing = %key.0, shadow = %key.1, error = %e, "local change not sent; full sync next");
                self.needs_full.insert(key);
            }
        }
    }

    async fn on_cloud_message(&mut self, m: MqttMessage) {
        let Some((key, suffix)) = self.key_of_topic(&m.topic_name) else { return };
        let doc: Value = match serde_json::from_slice(m.payload.as_bytes()) {
            Ok(d) => d,
            Err(_) => return,
        };
        if doc.get("clientToken").and_then(Value::as_str).is_some_and(|t| t.starts_with(TOKEN_PREFIX)) {
            return;
        }
        if !self.config.direction.cloud_to_device() || self.config.strategy != Strategy::RealTime {
            return;
        }
        let mut record = self.record(&key);
        match suffix.as_str() {
            "update/documents" => {
                let previous_version = doc.pointer("/previous/version").and_then(Value::as_u64);
                let current = doc.get("current").cloned().unwrap_or(Value::Null);
                let current_version = current.get("version").and_then(Value::as_u64).unwrap_or(0);
                if current_version <= record.cloud_version {
                    return; // Already seen (a redelivery, or older than what a full sync read).
                }
                let local = local_state(self.shadows.record(&key.0, &key.1).as_ref());
                let in_step = previous_version == Some(record.cloud_version)
                    && record.base.is_some()
                    && merge::state_eq(local.as_ref(), record.base.as_ref())
                    && !self.needs_full.contains(&key);
                if !in_step {
                    self.needs_full.insert(key);
                    return;
                }
                let previous = doc.get("previous").map(cloud_state);
                let current_state = cloud_state(&current);
                let write = update_between(previous.as_ref(), &current_state).map_or(Write::Nothing, Write::Update);
                match self.write_local(&key, &write) {
                    Ok(v) => {
                        record.cloud_version = current_version;
                        record.base = Some(current_state);
                        if let Some(v) = v {
                            record.local_version = v;
                        }
                        self.save(&key, &record);
                    }
                    Err(e) => {
                        tracing::warn!(thing = %key.0, shadow = %key.1, error = %e, "cloud change not applied locally");
                        self.needs_full.insert(key);
                    }
                }
            }
            "delete/accepted" => {
                let version = doc.get("version").and_then(Value::as_u64).unwrap_or(0);
                if version <= record.cloud_version {
                    return;
                }
                match self.write_local(&key, &Write::Delete) {
                    Ok(_) => {
                        record.cloud_version = version;
                        record.base = None;
                        self.save(&key, &record);
                    }
                    Err(_) => {
                        self.needs_full.insert(key);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::services::fake_bridge::FakeIotCoreBridge;

    #[test]
    fn synchronize_configuration_lists_core_and_other_things_shadows() {
        let config = json!({
            "synchronize": {
                "coreThing": {"classic": false, "namedShadows": ["pump", "pump"]},
                "shadowDocuments": [{"thingName": "other", "namedShadows": ["a"]}],
                "direction": "deviceToCloud"
            },
            "strategy": {"type": "periodic", "delay": 30}
        });
        let c = SyncConfig::from_shadow_manager(Some(&config), "core").unwrap();
        let k = |t: &str, s: &str| (t.to_owned(), s.to_owned());
        assert_eq!(c.shadows, vec![k("core", "pump"), k("other", ""), k("other", "a")]);
        assert_eq!(c.direction, Direction::DeviceToCloud);
        assert_eq!(c.strategy, Strategy::Periodic(Duration::from_secs(30)));
        assert_eq!(SyncConfig::from_shadow_manager(None, "core").unwrap(), SyncConfig::default());
    }

    /// Serves the sync's cloud shadow requests from `cloud` (a second shadow engine standing in
    /// for IoT Core's Device Shadow service), as IoT Core answers them over MQTT.
    fn serve_cloud(bridge: FakeIotCoreBridge, cloud: LocalShadows) -> JoinHandle<()> {
        tokio::spawn(async move {
            for seen in 0.. {
                let (topic, _, payload, _) = bridge.published_after(seen).await;
                let Some((thing, shadow, op)) = crate::core::local_shadow::parse_request_topic(&topic) else {
                    continue;
                };
                let body: Value = serde_json::from_slice(&payload).unwrap();
                let result = match op {
                    "get" => cloud.get(thing, shadow),
                    "update" => cloud.update(thing, shadow, &payload),
                    _ => cloud.delete(thing, shadow),
                };
                let (suffix, mut answer) = match result {
                    Ok(doc) => ("accepted", doc),
                    Err(LocalShadowError::Rejected(e)) => ("rejected", e.to_json(0)),
                    Err(e) => panic!("the stand-in cloud failed: {e}"),
                };
                answer["clientToken"] = body["clientToken"].clone();
                let prefix = topic_prefix(thing, shadow);
                bridge.inject(&format!("{prefix}/{op}/{suffix}"), &serde_json::to_vec(&answer).unwrap());
            }
        })
    }

    async fn wait_local(changes: &mut broadcast::Receiver<ShadowChange>, pred: impl Fn(&Value) -> bool) {
        loop {
            let change = changes.recv().await.expect("local shadow changes");
            if pred(&change.accepted) {
                return;
            }
        }
    }

    /// The controller's report crosses an operator's change in flight: the report is refused
    /// (409), and the sync reads both sides again at once, so the operator's value reaches the
    /// device without waiting for the retry beat.
    #[tokio::test(start_paused = true)]
    async fn a_version_conflict_is_resolved_at_once_not_on_the_retry_beat() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteShadowStore::open(&dir.path().join("shadows.db")).unwrap());
        let key: ShadowKey = ("core".into(), "pump".into());
        let (local, cloud) = (LocalShadows::new(None), LocalShadows::new(None));
        cloud.update("core", "pump", br#"{"state":{"desired":{"speed":1}}}"#).unwrap();
        let bridge = FakeIotCoreBridge::default();
        let _cloud = serve_cloud(bridge.clone(), cloud.clone());
        let (_connected, connection) = watch::channel(true);
        let mut changes = local.changes();
        let config = SyncConfig { shadows: vec![key.clone()], ..Default::default() };
        let _sync =
            ShadowSync::start(config, local.clone(), store, Arc::new(bridge.clone()), connection).await.unwrap();
        wait_local(&mut changes, |d| d.pointer("/state/desired/speed") == Some(&json!(1))).await;

        // Each round: the operator changes desired, and its `update/documents` has not reached
        // the core yet when the device reports.
        for round in 2..5 {
            let desired = format!(r#"{{"state":{{"desired":{{"speed":{round}}}}}}}"#);
            cloud.update("core", "pump", desired.as_bytes()).unwrap();
            let started = tokio::time::Instant::now();
            let reported = format!(r#"{{"state":{{"reported":{{"speed":{}}}}}}}"#, round - 1);
            local.update("core", "pump", reported.as_bytes()).unwrap();
            wait_local(&mut changes, |d| d.pointer("/state/desired/speed") == Some(&json!(round))).await;
            let waited = started.elapsed();
            assert!(
                waited < Duration::from_secs(1),
                "round {round}: the conflict waited {waited:?} for the retry beat"
            );
            let doc = cloud.get("core", "pump").unwrap();
            assert_eq!(
                doc.pointer("/state/reported/speed"),
                Some(&json!(round - 1)),
                "the report reached the cloud: {doc}"
            );
        }
        // Each round sent the report twice: refused with the old version, then in the full sync.
        let updates = bridge.published().iter().filter(|(t, ..)| t.ends_with("/update")).count();
        assert!(updates >= 6, "{updates} updates: not every round was a conflict");
    }

    #[test]
    fn bad_synchronize_configuration_is_refused_with_the_path_of_the_fault() {
        let bad = [
            (json!({"synchronize": {"coreThing": {"namedShadows": "pump"}}}), "coreThing.namedShadows"),
            (json!({"synchronize": {"shadowDocuments": [{"classic": true}]}}), "shadowDocuments[0].thingName"),
            (json!({"synchronize": {"direction": "sideways"}}), "synchronize.direction"),
            (json!({"strategy": {"type": "sometimes"}}), "strategy.type"),
        ];
        for (config, path) in bad {
            let err = SyncConfig::from_shadow_manager(Some(&config), "core").unwrap_err();
            assert!(err.contains(path), "{err} should name {path}");
        }
    }
}
