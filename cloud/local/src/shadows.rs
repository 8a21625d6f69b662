//! The Device Shadow service: classic and named shadows, persisted in the
//! [`Store`], served over MQTT (as a [`ServiceHandler`] for the request topics)
//! and over HTTP (the data-plane handlers call the methods directly). Every
//! accepted change is published on the response topics whichever way it came,
//! so an HTTP update produces the same MQTT `accepted`/`delta`/`documents`
//! messages as an MQTT one.
//!
//! Requests are applied one at a time (a lock around read-modify-write), so
//! versions advance without gaps or races. MQTT requests are queued to a
//! worker thread and answered in the order they arrived. As on AWS, a
//! connection may have at most 10 requests in flight (queued, not yet
//! answered); the next one is rejected with 429 on its `…/rejected` topic, so
//! a flooding client cannot grow the queue without bound. As on AWS, a shadow
//! does not require the thing to be registered.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cloud_api::shadow::{ShadowError, ShadowLimits, ShadowOperation, ShadowRecord, ShadowResponse, ShadowTopic};
use serde_json::Value;

use crate::bus::{Bus, BusMessage, Publisher, ServiceHandler};
use crate::store::{Op, Store};
use crate::time::SharedClock;

const K_SHADOW: &str = "shadow";

/// How many changes a slow watcher may fall behind before it misses some.
const CHANGE_BACKLOG: usize = 1024;

/// A shadow after an accepted update, for services inside the local cloud that
/// act on what devices report (Greengrass reads its deployment shadow).
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowChange {
    /// The thing.
    pub thing_name: String,
    /// The named shadow, `None` for the classic one.
    pub shadow_name: Option<String>,
    /// The document after the update (`update/documents`'s `current`: state, metadata, version).
    pub current: Value,
}

/// A page of named shadows (ListNamedShadowsForThing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedShadowPage {
    /// Shadow names.
    pub results: Vec<String>,
    /// Token for the next page.
    pub next_token: Option<String>,
    /// Epoch seconds.
    pub timestamp: u64,
}

/// The shadow service.
#[derive(Debug, Clone)]
pub struct ShadowService {
    inner: Arc<Inner>,
    queue: mpsc::Sender<Request>,
    /// Requests queued and not yet answered, per MQTT client id.
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
}

/// An MQTT request waiting for the worker.
#[derive(Debug)]
struct Request {
    client_id: String,
    topic: String,
    payload: Bytes,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    bus: Bus,
    clock: SharedClock,
    limits: ShadowLimits,
    /// Accepted updates, for in-process watchers.
    changes: tokio::sync::broadcast::Sender<ShadowChange>,
    /// Serializes read-modify-write of shadows.
    lock: Mutex<()>,
}

fn key(thing: &str, shadow: Option<&str>) -> String {
    format!("{thing}\n{}", shadow.unwrap_or(""))
}

fn internal(e: impl std::fmt::Display) -> ShadowError {
    ShadowError { code: 500, message: format!("Internal service failure: {e}"), client_token: None }
}

fn check_names(thing: &str, shadow: Option<&str>) -> Result<(), ShadowError> {
    use cloud_api::shadow::topic::{is_valid_shadow_name, is_valid_thing_name};
    if !is_valid_thing_name(thing) {
        return Err(ShadowError { code: 400, message: "Invalid thing name".into(), client_token: None });
    }
    if let Some(s) = shadow
        && !is_valid_shadow_name(s)
    {
        return Err(ShadowError { code: 400, message: "Invalid shadow name".into(), client_token: None });
    }
    Ok(())
}

impl ShadowService {
    /// A service over `store` that publishes through `bus`, with IoT Core's limits.
    pub fn new(store: Store, bus: Bus, clock: SharedClock) -> Self {
        Self::with_limits(store, bus, clock, ShadowLimits::IOT_CORE)
    }

    /// A service with other document limits (a local ShadowManager allows up to 30 KiB).
    pub fn with_limits(store: Store, bus: Bus, clock: SharedClock, limits: ShadowLimits) -> Self {
        let (changes, _) = tokio::sync::broadcast::channel(CHANGE_BACKLOG);
        let inner = Arc::new(Inner { store, bus, clock, limits, changes, lock: Mutex::new(()) });
        let (queue, rx) = mpsc::channel::<Request>();
        let worker = inner.clone();
        let in_flight: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counts = in_flight.clone();
        std::thread::Builder::new()
            .name("shadow-service".into())
            .spawn(move || {
                while let Ok(req) = rx.recv() {
                    worker.handle_mqtt(&req.topic, &req.payload);
                    let mut counts = counts.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(n) = counts.get_mut(&req.client_id) {
                        *n -= 1;
                        if *n == 0 {
                            counts.remove(&req.client_id);
                        }
                    }
                }
            })
            .ok();
        ShadowService { inner, queue, in_flight }
    }

    /// Every accepted update from now on, however it was made (MQTT or HTTP).
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<ShadowChange> {
        self.inner.changes.subscribe()
    }

    /// GetThingShadow: the full document.
    pub fn get(&self, thing: &str, shadow: Option<&str>) -> Result<Value, ShadowError> {
        self.inner.get(thing, shadow, b"")
    }

    /// UpdateThingShadow: the accepted document; publishes accepted, delta and documents.
    pub fn update(&self, thing: &str, shadow: Option<&str>, payload: &[u8]) -> Result<Value, ShadowError> {
        self.inner.update(thing, shadow, payload)
    }

    /// DeleteThingShadow: the accepted body; publishes `…/delete/accepted`.
    pub fn delete(&self, thing: &str, shadow: Option<&str>) -> Result<Value, ShadowError> {
        self.inner.delete(thing, shadow, b"")
    }

    /// ListNamedShadowsForThing: names of the thing's existing named shadows, in name order.
    pub fn list_named(
        &self,
        thing: &str,
        next_token: Option<&str>,
        page_size: Option<usize>,
    ) -> Result<NamedShadowPage, ShadowError> {
        check_names(thing, None)?;
        let page = page_size.unwrap_or(25).clamp(1, 100);
        let prefix = format!("{thing}\n");
        let mut names = Vec::new();
        for (k, v) in self.inner.store.with_prefix(K_SHADOW, &prefix).map_err(internal)? {
            let name = &k[prefix.len()..];
            if name.is_empty() {
                continue;
            }
            let record: ShadowRecord = serde_json::from_str(&v).map_err(internal)?;
            if record.document.is_some() {
                names.push(name.to_string());
            }
        }
        let start = match next_token {
            Some(t) => names.iter().position(|n| n.as_str() > t).unwrap_or(names.len()),
            None => 0,
        };
        let results: Vec<String> = names[start..].iter().take(page).cloned().collect();
        let next_token = if start + results.len() < names.len() { results.last().cloned() } else { None };
        Ok(NamedShadowPage { results, next_token, timestamp: self.inner.clock.now_secs() })
    }
}

impl Inner {
    fn load(&self, thing: &str, shadow: Option<&str>) -> Result<ShadowRecord, ShadowError> {
        match self.store.get(K_SHADOW, &key(thing, shadow)).map_err(internal)? {
            Some(v) => serde_json::from_str(&v).map_err(internal),
            None => Ok(ShadowRecord::default()),
        }
    }

    fn save(&self, thing: &str, shadow: Option<&str>, record: &ShadowRecord) -> Result<(), ShadowError> {
        let value = serde_json::to_string(record).map_err(internal)?;
        self.store.apply(&[Op::Put { kind: K_SHADOW, key: key(thing, shadow), value }]).map_err(internal)
    }

    fn publish(&self, thing: &str, shadow: Option<&str>, op: ShadowOperation, resp: ShadowResponse, body: &Value) {
        let topic = ShadowTopic {
            thing_name: thing.to_string(),
            shadow_name: shadow.map(str::to_string),
            operation: op,
            response: Some(resp),
        }
        .to_topic();
        let payload = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.bus.publish(BusMessage::to_subscribers(topic, payload, 0));
    }

    fn get(&self, thing: &str, shadow: Option<&str>, payload: &[u8]) -> Result<Value, ShadowError> {
        check_names(thing, shadow)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.load(thing, shadow)?.get_named(thing, shadow, payload, self.clock.now_secs())
    }

    fn update(&self, thing: &str, shadow: Option<&str>, payload: &[u8]) -> Result<Value, ShadowError> {
        check_names(thing, shadow)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let record = self.load(thing, shadow)?;
        let result = record.update(payload, self.clock.now_secs(), self.limits)?;
        self.save(thing, shadow, &result.record)?;
        // Publish while holding the lock so messages of successive updates stay in order.
        self.publish(thing, shadow, ShadowOperation::Update, ShadowResponse::Accepted, &result.accepted);
        if let Some(delta) = &result.delta {
            self.publish(thing, shadow, ShadowOperation::Update, ShadowResponse::Delta, delta);
        }
        self.publish(thing, shadow, ShadowOperation::Update, ShadowResponse::Documents, &result.documents);
        // Copied only when someone watches; the send fails only when the last watcher just left.
        if self.changes.receiver_count() > 0
            && let Some(current) = result.documents.get("current")
        {
            let _ = self.changes.send(ShadowChange {
                thing_name: thing.to_owned(),
                shadow_name: shadow.map(str::to_owned),
                current: current.clone(),
            });
        }
        Ok(result.accepted)
    }

    fn delete(&self, thing: &str, shadow: Option<&str>, payload: &[u8]) -> Result<Value, ShadowError> {
        check_names(thing, shadow)?;
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let record = self.load(thing, shadow)?;
        let (record, body) = record.delete_named(thing, shadow, payload, self.clock.now_secs())?;
        self.save(thing, shadow, &record)?;
        self.publish(thing, shadow, ShadowOperation::Delete, ShadowResponse::Accepted, &body);
        Ok(body)
    }

    /// Answers an MQTT request; get and delete answers go only to the response topics.
    fn handle_mqtt(&self, topic: &str, payload: &[u8]) {
        let Some(t) = ShadowTopic::parse(topic) else { return };
        if t.response.is_some() {
            return;
        }
        let shadow = t.shadow_name.as_deref();
        let result = match t.operation {
            ShadowOperation::Get => self.get(&t.thing_name, shadow, payload).map(|doc| {
                self.publish(&t.thing_name, shadow, ShadowOperation::Get, ShadowResponse::Accepted, &doc);
            }),
            ShadowOperation::Update => self.update(&t.thing_name, shadow, payload).map(|_| ()),
            ShadowOperation::Delete => self.delete(&t.thing_name, shadow, payload).map(|_| ()),
        };
        if let Err(mut e) = result {
            if e.client_token.is_none() {
                e.client_token = client_token(payload);
            }
            let body = e.to_json(self.clock.now_secs());
            self.publish(&t.thing_name, shadow, t.operation, ShadowResponse::Rejected, &body);
        }
    }
}

impl Inner {
    /// Answers a request that exceeds the in-flight limit with 429 on its `…/rejected` topic.
    fn reject_too_many(&self, topic: &str, payload: &[u8]) {
        let Some(t) = ShadowTopic::parse(topic) else { return };
        let error = ShadowError { code: 429, message: "Too Many Requests".into(), client_token: client_token(payload) };
        let body = error.to_json(self.clock.now_secs());
        self.publish(&t.thing_name, t.shadow_name.as_deref(), t.operation, ShadowResponse::Rejected, &body);
    }
}

/// The `clientToken` of a request body, if it is JSON and has one.
fn client_token(payload: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(payload).ok()?;
    v.get("clientToken")?.as_str().map(str::to_string)
}

impl ServiceHandler for ShadowService {
    fn wants(&self, topic: &str) -> bool {
        topic.starts_with("$aws/things/") && ShadowTopic::parse(topic).is_some_and(|t| t.response.is_none())
    }

    fn handle(&self, from: &Publisher, topic: &str, payload: Bytes) {
        {
            let mut counts = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(from.client_id.clone()).or_default();
            if *n >= cloud_api::limits::SHADOW_MAX_INFLIGHT_PER_CONNECTION {
                drop(counts);
                self.inner.reject_too_many(topic, &payload);
                return;
            }
            *n += 1;
        }
        let req = Request { client_id: from.client_id.clone(), topic: topic.to_string(), payload };
        let _ = self.queue.send(req);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(client_id: &str) -> Publisher {
        Publisher { client_id: client_id.into(), certificate_id: "c".into() }
    }

    #[test]
    fn eleventh_request_in_flight_on_a_connection_is_rejected_with_429() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let (bus, mut rx) = Bus::channel();
        let service = ShadowService::new(Store::in_memory().unwrap(), bus, crate::time::system());
        let topic = "$aws/things/pump/shadow/update";
        let body =
            |token: &str| Bytes::from(format!(r#"{{"state":{{"reported":{{"n":1}}}},"clientToken":"{token}"}}"#));
        // Hold the worker so requests stay in flight.
        let guard = service.inner.lock.lock().unwrap();
        for i in 0..10 {
            service.handle(&publisher("flooder"), topic, body(&format!("f{i}")));
        }
        service.handle(&publisher("flooder"), topic, body("f10"));
        service.handle(&publisher("other"), topic, body("o0"));
        let first = rt
            .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv()).await })
            .expect("the request over the limit is answered at once, while the others wait")
            .unwrap();
        assert_eq!(first.topic, "$aws/things/pump/shadow/update/rejected");
        let rejected: Value = serde_json::from_slice(&first.payload).unwrap();
        assert_eq!((rejected["code"].as_u64(), rejected["clientToken"].as_str()), (Some(429), Some("f10")));
        drop(guard);
        // Every other request, the other connection's included, is answered in order.
        let mut accepted = Vec::new();
        while accepted.len() < 11 {
            let msg = rt.block_on(rx.recv()).unwrap();
            if msg.topic.ends_with("/update/accepted") {
                let v: Value = serde_json::from_slice(&msg.payload).unwrap();
                accepted.push(v["clientToken"].as_str().unwrap().to_string());
            }
        }
        let mut want: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        want.push("o0".into());
        assert_eq!(accepted, want);
        // Once answered, the connection may send again.
        service.handle(&publisher("flooder"), topic, body("again"));
        loop {
            let msg = rt.block_on(rx.recv()).unwrap();
            if msg.topic.ends_with("/update/accepted") {
                let v: Value = serde_json::from_slice(&msg.payload).unwrap();
                assert_eq!(v["clientToken"], "again");
                break;
            }
            assert!(!msg.topic.ends_with("/rejected"), "unexpected rejection: {msg:?}");
        }
    }
}
