//! Local shadows with the Greengrass ShadowManager's semantics, on the same engine as the
//! cloud shadow service ([`cloud_api::shadow`]).
//!
//! From the ShadowManager (`aws-greengrass-shadow-manager`: `Constants`,
//! `PubSubClientWrapper`, the IPC request handlers) and the developer guide, "Interact with
//! shadows in components":
//! - documents follow the Device Shadow service rules (the engine); the default limits are
//!   8 KiB of state ([`DEFAULT_MAX_DOCUMENT_BYTES`], configurable up to 30 KiB) and a
//!   depth of 6;
//! - every accepted or rejected request is also published on local pub/sub, as the
//!   ShadowManager publisher: `{prefix}/{get|update|delete}/{accepted|rejected}`, plus
//!   `{prefix}/update/delta` and `{prefix}/update/documents`, where `{prefix}` is
//!   `$aws/things/{thing}/shadow` or `$aws/things/{thing}/shadow/name/{shadow}`; the
//!   payloads are the engine's (the cloud's) bodies, as binary messages;
//! - a missing shadow is `ResourceNotFoundError` "No shadow found"; throttled requests get
//!   `ServiceError` "Too Many Requests": 20 requests/s per thing and 200/s in total by
//!   default (token buckets, [`RateLimits`]);
//! - ListNamedShadowsForThing pages 25 names by default, at most 100.
//!
//! Cloud sync lives in [`crate::core::shadow_sync`]: [`LocalShadows::changes`] streams every
//! accepted change to it, and a [`ShadowPersistence`] hook stores records (memory by default,
//! SQLite in the running core: [`crate::core::shadow_store`]).

use crate::core::pubsub::PubSub;
use cloud_api::ipc::model::PubSubMessage;
use cloud_api::shadow::{ShadowError, ShadowLimits, ShadowRecord, is_valid_shadow_name, is_valid_thing_name};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::broadcast;

/// ShadowManager's default state size limit.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 8 * 1024;
/// ShadowManager's largest configurable state size.
pub const MAX_DOCUMENT_BYTES: usize = 30 * 1024;
/// ShadowManager's default state depth.
pub const DEFAULT_MAX_DEPTH: usize = 6;
/// The component name ShadowManager publishes its topics as.
pub const SHADOW_MANAGER_COMPONENT: &str = "aws.greengrass.ShadowManager";
/// Default ListNamedShadowsForThing page.
pub const DEFAULT_PAGE_SIZE: usize = 25;
/// Largest ListNamedShadowsForThing page.
pub const MAX_PAGE_SIZE: usize = 100;

/// A shadow's key: thing and shadow name (`""` for the classic shadow).
pub type ShadowKey = (String, String);

/// Where records persist. Implementations must not lose the previous record on a failed
/// write (write to a temporary file and rename, or use a transaction).
pub trait ShadowPersistence: Send + Sync {
    /// Every stored record, at start.
    fn load_all(&self) -> Result<Vec<(ShadowKey, ShadowRecord)>, String>;
    /// Stores one record (a deleted shadow is a record without document: its version stays).
    fn save(&self, key: &ShadowKey, record: &ShadowRecord) -> Result<(), String>;
}

/// Keeps nothing beyond the process.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryPersistence;

impl ShadowPersistence for MemoryPersistence {
    fn load_all(&self) -> Result<Vec<(ShadowKey, ShadowRecord)>, String> {
        Ok(Vec::new())
    }
    fn save(&self, _: &ShadowKey, _: &ShadowRecord) -> Result<(), String> {
        Ok(())
    }
}

/// Which request changed a shadow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// An accepted update.
    Updated,
    /// A delete.
    Deleted,
}

/// An accepted local change, for a sync engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowChange {
    /// Thing and shadow name.
    pub key: ShadowKey,
    /// What happened.
    pub kind: ChangeKind,
    /// The record after the change.
    pub record: ShadowRecord,
    /// The accepted body (`update/accepted` or `delete/accepted`).
    pub accepted: Value,
}

/// Request rates (token buckets); `None` disables a limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Requests per second per thing (ShadowManager: 20).
    pub per_thing: Option<f64>,
    /// Requests per second in total (ShadowManager: 200).
    pub total: Option<f64>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self { per_thing: Some(20.0), total: Some(200.0) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(slot: &mut Option<Bucket>, rate: f64, now: Instant) -> bool {
        let b = slot.get_or_insert(Bucket { tokens: rate, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Default)]
struct State {
    records: BTreeMap<ShadowKey, ShadowRecord>,
    per_thing: HashMap<String, Option<Bucket>>,
    total: Option<Bucket>,
}

/// Why a local shadow request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalShadowError {
    /// Bad thing or shadow name, or bad page arguments (`InvalidArgumentsError`).
    #[error("{0}")]
    InvalidArguments(String),
    /// The engine's rejection (404 → ResourceNotFoundError, 409 → ConflictError,
    /// 400/413 → InvalidArgumentsError, others → ServiceError).
    #[error("{0}")]
    Rejected(ShadowError),
    /// Over the rate limit (`ServiceError` "Too Many Requests").
    #[error("Too Many Requests")]
    Throttled,
    /// The persistence hook failed (`ServiceError`); nothing changed.
    #[error("{0}")]
    Storage(String),
}

/// The local shadow store. Cheap to clone (shared).
#[derive(Clone)]
pub struct LocalShadows {
    state: Arc<Mutex<State>>,
    pubsub: Option<PubSub>,
    persistence: Arc<dyn ShadowPersistence>,
    limits: ShadowLimits,
    rates: RateLimits,
    changes: broadcast::Sender<ShadowChange>,
}

impl std::fmt::Debug for LocalShadows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalShadows").field("limits", &self.limits).field("rates", &self.rates).finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A shadow request published on local pub/sub: (thing, shadow, operation), for
/// `$aws/things/{thing}/shadow[/name/{shadow}]/{get|update|delete}`; `None` for any other topic
/// (the response topics included).
pub fn parse_request_topic(topic: &str) -> Option<(&str, &str, &str)> {
    let rest = topic.strip_prefix("$aws/things/")?;
    let (thing, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("shadow/")?;
    let (shadow, op) = match rest.strip_prefix("name/") {
        Some(named) => named.split_once('/')?,
        None => ("", rest),
    };
    matches!(op, "get" | "update" | "delete").then_some((thing, shadow, op))
}

/// `$aws/things/{thing}/shadow[/name/{shadow}]`.
pub fn topic_prefix(thing: &str, shadow: &str) -> String {
    if shadow.is_empty() {
        format!("$aws/things/{thing}/shadow")
    } else {
        format!("$aws/things/{thing}/shadow/name/{shadow}")
    }
}

impl LocalShadows {
    /// A store with ShadowManager's defaults, publishing on `pubsub` when given.
    pub fn new(pubsub: Option<PubSub>) -> Self {
        Self::with(
            pubsub,
            Arc::new(MemoryPersistence),
            ShadowLimits { max_state_bytes: DEFAULT_MAX_DOCUMENT_BYTES, max_depth: DEFAULT_MAX_DEPTH },
            RateLimits::default(),
        )
        .unwrap_or_else(|_| unreachable!("memory persistence loads nothing"))
    }

    /// A store with the given persistence, limits and rates; loads stored records.
    pub fn with(
        pubsub: Option<PubSub>,
        persistence: Arc<dyn ShadowPersistence>,
        limits: ShadowLimits,
        rates: RateLimits,
    ) -> Result<Self, String> {
        let mut state = State::default();
        state.records.extend(persistence.load_all()?);
        let (changes, _) = broadcast::channel(1024);
        Ok(Self { state: Arc::new(Mutex::new(state)), pubsub, persistence, limits, rates, changes })
    }

    /// Every accepted change from now on (a lagging receiver loses the oldest; it can
    /// re-read the shadows).
    pub fn changes(&self) -> broadcast::Receiver<ShadowChange> {
        self.changes.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit(&self, state: &mut State, thing: &str) -> Result<(), LocalShadowError> {
        let now = Instant::now();
        if let Some(rate) = self.rates.total
            && !Bucket::take(&mut state.total, rate, now)
        {
            return Err(LocalShadowError::Throttled);
        }
        if let Some(rate) = self.rates.per_thing
            && !Bucket::take(state.per_thing.entry(thing.to_owned()).or_default(), rate, now)
        {
            return Err(LocalShadowError::Throttled);
        }
        Ok(())
    }

    fn check_names(thing: &str, shadow: &str) -> Result<(), LocalShadowError> {
        if !is_valid_thing_name(thing) {
            return Err(LocalShadowError::InvalidArguments(format!("Invalid thing name: {thing:?}")));
        }
        if !shadow.is_empty() && !is_valid_shadow_name(shadow) {
            return Err(LocalShadowError::InvalidArguments(format!("Invalid shadow name: {shadow:?}")));
        }
        Ok(())
    }

    fn publish(&self, thing: &str, shadow: &str, suffix: &str, body: &Value) {
        if let Some(bus) = &self.pubsub {
            let topic = format!("{}/{suffix}", topic_prefix(thing, shadow));
            let bytes = serde_json::to_vec(body).unwrap_or_default();
            let _ = bus.publish(SHADOW_MANAGER_COMPONENT, &topic, &PubSubMessage::binary(bytes));
        }
    }

    fn reject(&self, thing: &str, shadow: &str, op: &str, e: ShadowError, now: u64) -> LocalShadowError {
        self.publish(thing, shadow, &format!("{op}/rejected"), &e.to_json(now));
        LocalShadowError::Rejected(e)
    }

    /// GetThingShadow: the document (`get/accepted` body).
    pub fn get(&self, thing: &str, shadow: &str) -> Result<Value, LocalShadowError> {
        Self::check_names(thing, shadow)?;
        let now = now_secs();
        let mut state = self.lock();
        self.admit(&mut state, thing)?;
        let key = (thing.to_owned(), shadow.to_owned());
        let record = state.records.get(&key).cloned().unwrap_or_default();
        drop(state);
        let name = (!shadow.is_empty()).then_some(shadow);
        match record.get_named(thing, name, b"", now) {
            Ok(doc) => {
                self.publish(thing, shadow, "get/accepted", &doc);
                Ok(doc)
            }
            Err(e) => Err(self.reject(thing, shadow, "get", e, now)),
        }
    }

    /// UpdateThingShadow: the `update/accepted` body.
    pub fn update(&self, thing: &str, shadow: &str, payload: &[u8]) -> Result<Value, LocalShadowError> {
        self.update_inner(thing, shadow, payload, true)
    }

    /// An update by cloud sync: the same rules, outside the components' rate limits.
    pub fn update_from_sync(&self, thing: &str, shadow: &str, payload: &[u8]) -> Result<Value, LocalShadowError> {
        self.update_inner(thing, shadow, payload, false)
    }

    fn update_inner(
        &self,
        thing: &str,
        shadow: &str,
        payload: &[u8],
        throttle: bool,
    ) -> Result<Value, LocalShadowError> {
        Self::check_names(thing, shadow)?;
        let now = now_secs();
        let mut state = self.lock();
        if throttle {
            self.admit(&mut state, thing)?;
        }
        let key = (thing.to_owned(), shadow.to_owned());
        let record = state.records.get(&key).cloned().unwrap_or_default();
        let result = match record.update(payload, now, self.limits) {
            Ok(r) => r,
            Err(e) => {
                drop(state);
                return Err(self.reject(thing, shadow, "update", e, now));
            }
        };
        self.persistence.save(&key, &result.record).map_err(LocalShadowError::Storage)?;
        state.records.insert(key.clone(), result.record.clone());
        drop(state);
        self.publish(thing, shadow, "update/accepted", &result.accepted);
        if let Some(delta) = &result.delta {
            self.publish(thing, shadow, "update/delta", delta);
        }
        self.publish(thing, shadow, "update/documents", &result.documents);
        let _ = self.changes.send(ShadowChange {
            key,
            kind: ChangeKind::Updated,
            record: result.record,
            accepted: result.accepted.clone(),
        });
        Ok(result.accepted)
    }

    /// DeleteThingShadow: the `delete/accepted` body.
    pub fn delete(&self, thing: &str, shadow: &str) -> Result<Value, LocalShadowError> {
        self.delete_inner(thing, shadow, true)
    }

    /// A delete by cloud sync, outside the components' rate limits.
    pub fn delete_from_sync(&self, thing: &str, shadow: &str) -> Result<Value, LocalShadowError> {
        self.delete_inner(thing, shadow, false)
    }

    fn delete_inner(&self, thing: &str, shadow: &str, throttle: bool) -> Result<Value, LocalShadowError> {
        Self::check_names(thing, shadow)?;
        let now = now_secs();
        let mut state = self.lock();
        if throttle {
            self.admit(&mut state, thing)?;
        }
        let key = (thing.to_owned(), shadow.to_owned());
        let record = state.records.get(&key).cloned().unwrap_or_default();
        let name = (!shadow.is_empty()).then_some(shadow);
        let (new_record, accepted) = match record.delete_named(thing, name, b"", now) {
            Ok(x) => x,
            Err(e) => {
                drop(state);
                return Err(self.reject(thing, shadow, "delete", e, now));
            }
        };
        self.persistence.save(&key, &new_record).map_err(LocalShadowError::Storage)?;
        state.records.insert(key.clone(), new_record.clone());
        drop(state);
        self.publish(thing, shadow, "delete/accepted", &accepted);
        let _ = self.changes.send(ShadowChange {
            key,
            kind: ChangeKind::Deleted,
            record: new_record,
            accepted: accepted.clone(),
        });
        Ok(accepted)
    }

    /// ListNamedShadowsForThing: names of existing named shadows, a page at a time; the
    /// token is the offset of the next page.
    pub fn list_named(
        &self,
        thing: &str,
        page_size: Option<u32>,
        next_token: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), LocalShadowError> {
        Self::check_names(thing, "")?;
        let size = page_size.map_or(DEFAULT_PAGE_SIZE, |s| s as usize);
        if !(1..=MAX_PAGE_SIZE).contains(&size) {
            return Err(LocalShadowError::InvalidArguments(format!(
                "pageSize argument must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        let offset = match next_token {
            None | Some("") => 0,
            Some(t) => {
                t.parse::<usize>().map_err(|_| LocalShadowError::InvalidArguments("Invalid nextToken".into()))?
            }
        };
        let mut state = self.lock();
        self.admit(&mut state, thing)?;
        let names: Vec<String> = state
            .records
            .iter()
            .filter(|((t, s), r)| t == thing && !s.is_empty() && r.exists())
            .map(|((_, s), _)| s.clone())
            .collect();
        let page: Vec<String> = names.iter().skip(offset).take(size).cloned().collect();
        let next = (offset + page.len() < names.len()).then(|| (offset + page.len()).to_string());
        Ok((page, next))
    }

    /// Serves shadow requests that components publish on local pub/sub (`…/get`, `…/update`,
    /// `…/delete`), answering on the response topics as the ShadowManager does. Runs until the
    /// pub/sub bus goes away.
    pub fn serve_pubsub_requests(&self, pubsub: &PubSub) -> Result<tokio::task::JoinHandle<()>, String> {
        let mut sub = pubsub
            .subscribe(
                SHADOW_MANAGER_COMPONENT,
                "$aws/things/+/shadow/#",
                Some(cloud_api::ipc::model::ReceiveMode::ReceiveMessagesFromOthers),
            )
            .map_err(|e| e.to_string())?;
        let shadows = self.clone();
        Ok(tokio::spawn(async move {
            while let Some(message) = sub.receiver.recv().await {
                let (topic, payload) = match message {
                    PubSubMessage::Binary(b) => (b.context.map(|c| c.topic), b.message.as_bytes().to_vec()),
                    PubSubMessage::Json(j) => {
                        (j.context.map(|c| c.topic), serde_json::to_vec(&j.message).unwrap_or_default())
                    }
                };
                let Some(topic) = topic else { continue };
                let Some((thing, shadow, op)) = parse_request_topic(&topic) else { continue };
                // Answers (accepted or rejected) go out on the response topics; nothing to return.
                let _ = match op {
                    "get" => shadows.get(thing, shadow),
                    "update" => shadows.update(thing, shadow, &payload),
                    _ => shadows.delete(thing, shadow),
                };
            }
        }))
    }

    /// The stored record of a shadow (for a sync engine).
    pub fn record(&self, thing: &str, shadow: &str) -> Option<ShadowRecord> {
        self.lock().records.get(&(thing.to_owned(), shadow.to_owned())).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unthrottled(bus: Option<PubSub>) -> LocalShadows {
        LocalShadows::with(
            bus,
            Arc::new(MemoryPersistence),
            ShadowLimits { max_state_bytes: DEFAULT_MAX_DOCUMENT_BYTES, max_depth: DEFAULT_MAX_DEPTH },
            RateLimits { per_thing: None, total: None },
        )
        .unwrap()
    }

    fn body(m: PubSubMessage) -> (String, Value) {
        match m {
            PubSubMessage::Binary(b) => {
                (b.context.unwrap().topic, serde_json::from_slice(b.message.as_bytes()).unwrap())
            }
            PubSubMessage::Json(_) => panic!("shadow topics carry binary messages"),
        }
    }

    #[test]
    fn request_topics_are_told_from_response_topics() {
        assert_eq!(parse_request_topic("$aws/things/t/shadow/update"), Some(("t", "", "update")));
        assert_eq!(parse_request_topic("$aws/things/t/shadow/name/pump/get"), Some(("t", "pump", "get")));
        assert_eq!(parse_request_topic("$aws/things/t/shadow/name/pump/update/accepted"), None);
        assert_eq!(parse_request_topic("$aws/things/t/shadow/update/delta"), None);
        assert_eq!(parse_request_topic("$aws/things/t/jobs/get"), None);
    }

    #[tokio::test]
    async fn shadow_requests_published_on_local_pubsub_are_answered_on_the_response_topics() {
        let bus = PubSub::default();
        let shadows = unthrottled(Some(bus.clone()));
        let _server = shadows.serve_pubsub_requests(&bus).unwrap();
        let mut accepted = bus.subscribe("app", "$aws/things/t/shadow/name/s/update/accepted", None).unwrap();
        let mut rejected = bus.subscribe("app", "$aws/things/t/shadow/name/s/update/rejected", None).unwrap();
        let update = PubSubMessage::binary(br#"{"state":{"reported":{"on":true}},"clientToken":"c1"}"#.to_vec());
        bus.publish("app", "$aws/things/t/shadow/name/s/update", &update).unwrap();
        let (_, answer) = body(accepted.receiver.recv().await.unwrap());
        assert_eq!(answer["clientToken"], "c1");
        assert_eq!(shadows.get("t", "s").unwrap()["state"]["reported"]["on"], true);
        bus.publish("app", "$aws/things/t/shadow/name/s/update", &PubSubMessage::binary(b"not json".to_vec())).unwrap();
        let (_, answer) = body(rejected.receiver.recv().await.unwrap());
        assert_eq!(answer["code"], 400);
    }

    #[tokio::test]
    async fn an_update_publishes_accepted_delta_and_documents_locally() {
        let bus = PubSub::default();
        let mut sub = bus.subscribe("C", "$aws/things/core/shadow/name/pump/#", None).unwrap();
        let shadows = unthrottled(Some(bus));
        let accepted = shadows.update("core", "pump", br#"{"state":{"desired":{"mode":"auto"}}}"#).unwrap();
        assert_eq!(accepted["version"], json!(1));
        let expected = [
            ("$aws/things/core/shadow/name/pump/update/accepted", "state"),
            ("$aws/things/core/shadow/name/pump/update/delta", "state"),
            ("$aws/things/core/shadow/name/pump/update/documents", "current"),
        ];
        for (topic, field) in expected {
            let (t, v) = body(sub.receiver.recv().await.unwrap());
            assert_eq!(t, topic);
            assert!(v.get(field).is_some(), "{topic}: {v}");
        }
        let (t, v) = body({
            let _ = shadows.get("core", "pump").unwrap();
            sub.receiver.recv().await.unwrap()
        });
        assert_eq!(t, "$aws/things/core/shadow/name/pump/get/accepted");
        assert_eq!(v["state"]["delta"], json!({"mode": "auto"}));
    }

    #[tokio::test]
    async fn rejections_are_published_and_returned() {
        let bus = PubSub::default();
        let mut sub = bus.subscribe("C", "$aws/things/core/shadow/#", None).unwrap();
        let shadows = unthrottled(Some(bus));
        let err = shadows.get("core", "").unwrap_err();
        assert!(matches!(err, LocalShadowError::Rejected(ref e) if e.code == 404));
        let (t, v) = body(sub.receiver.recv().await.unwrap());
        assert_eq!(t, "$aws/things/core/shadow/get/rejected");
        assert_eq!(v["code"], json!(404));
        let err = shadows.update("core", "", b"not json").unwrap_err();
        assert!(matches!(err, LocalShadowError::Rejected(ref e) if e.code == 400));
        let big = format!(r#"{{"state":{{"reported":{{"x":"{}"}}}}}}"#, "a".repeat(9000));
        assert!(
            matches!(shadows.update("core", "", big.as_bytes()), Err(LocalShadowError::Rejected(e)) if e.code == 413)
        );
    }

    #[test]
    fn delete_keeps_the_version_and_list_pages_named_shadows() {
        let shadows = unthrottled(None);
        for name in ["a", "b", "c"] {
            shadows.update("core", name, br#"{"state":{"reported":{"x":1}}}"#).unwrap();
        }
        shadows.update("core", "", br#"{"state":{"reported":{"x":1}}}"#).unwrap();
        let (page, next) = shadows.list_named("core", Some(2), None).unwrap();
        assert_eq!((page, next.clone()), (vec!["a".to_owned(), "b".to_owned()], Some("2".to_owned())));
        let (page, next) = shadows.list_named("core", Some(2), next.as_deref()).unwrap();
        assert_eq!((page, next), (vec!["c".to_owned()], None));
        let mut changes = shadows.changes();
        let deleted = shadows.delete("core", "b").unwrap();
        assert_eq!(deleted["version"], json!(1));
        assert_eq!(changes.try_recv().unwrap().kind, ChangeKind::Deleted);
        assert_eq!(shadows.list_named("core", None, None).unwrap().0, vec!["a".to_owned(), "c".to_owned()]);
        let again = shadows.update("core", "b", br#"{"state":{"reported":{"x":2}}}"#).unwrap();
        assert_eq!(again["version"], json!(2));
        assert!(matches!(shadows.list_named("core", Some(0), None), Err(LocalShadowError::InvalidArguments(_))));
    }

    #[test]
    fn requests_over_the_per_thing_rate_are_throttled() {
        let shadows = LocalShadows::new(None);
        let results: Vec<_> = (0..25).map(|_| shadows.get("core", "x")).collect();
        assert!(results.iter().any(|r| matches!(r, Err(LocalShadowError::Throttled))));
        // Another thing has its own bucket.
        assert!(matches!(shadows.get("other", "x"), Err(LocalShadowError::Rejected(_))));
    }
}
