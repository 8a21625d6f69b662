//! The IoT Core bridge: the core device's one MQTT connection to AWS IoT Core (mutual TLS,
//! MQTT 5 by default or MQTT 3.1.1 — the nucleus's `mqtt.version` —, client id = thing name),
//! shared by every component's PublishToIoTCore and SubscribeToIoTCore and by shadow sync — as
//! the nucleus's `MqttClient` does. The protocol difference lives in [`link`].
//!
//! Behaviour, after the nucleus (developer guide: "Greengrass nucleus" configuration `mqtt`
//! and `mqtt.spooler`):
//! - **Offline start.** The core starts without the cloud; the bridge keeps trying to connect
//!   (backoff from [`BridgeConfig::reconnect_min`] doubling to [`BridgeConfig::reconnect_max`]).
//! - **Spooler.** Publishes go into an in-memory spool of at most
//!   [`BridgeConfig::spool_max_bytes`] (the nucleus default, 2.5 MiB); when full the oldest
//!   messages are dropped (and counted) to make room. QoS 0 messages are refused while offline
//!   unless [`BridgeConfig::keep_qos0_when_offline`]. PublishToIoTCore answers once the message
//!   is in the spool. QoS 1 messages stay tracked until IoT Core's PUBACK; a message written but
//!   not acknowledged when the connection drops goes back to the front of the spool and is sent
//!   again after the reconnect (so it may arrive twice, as QoS 1 allows, but is never lost while
//!   the core runs). Order is the spool's order.
//! - **Subscriptions** are remembered and re-made after every (re)connect (clean sessions),
//!   at most [`cloud_api::limits::MAX_FILTERS_PER_SUBSCRIBE`] filters per SUBSCRIBE; at most
//!   [`cloud_api::limits::MAX_SUBSCRIPTIONS_PER_CONNECTION`] distinct filters. A subscription
//!   ends when its receiver is dropped; the last one for a filter unsubscribes it.
//! - Topics are checked against IoT Core's rules before anything is queued.
//! - **MQTT 5 properties.** With MQTT 5 a PublishToIoTCore's user properties, message expiry,
//!   correlation data, response topic, payload format and content type go into the PUBLISH
//!   (and are spooled with it); a received PUBLISH's properties reach the SubscribeToIoTCore
//!   events. With MQTT 3.1.1 they are dropped.
//! - **Server DISCONNECT** (MQTT 5): its reason code is logged (e.g. 0x8E session taken over,
//!   0x87 not authorized) and the bridge reconnects with its usual backoff.
//! - **Identity switch** ([`MqttBridge::switch_identity`]): certificate rotation moves the one
//!   connection to a new certificate and key (and back, to roll back) without restarting
//!   anything above it: the old connection is dropped, the next connect presents the new
//!   identity, subscriptions are re-made and the spool keeps what was not acknowledged — the
//!   same path as any reconnect. A new identity that IoT Core refuses shows as a connection that
//!   does not come up; deciding what to do about it is the caller's (the rotation's deadline).
//!
//! The same code talks to the local cloud and, unchanged, to a real `…-ats.iot.…` endpoint:
//! both come from an `endpoints.json` ([`cloud_api::endpoints::Endpoints`]).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cloud_api::endpoints::Endpoints;
use cloud_api::ipc::model::{MqttMessage, PublishProperties, Qos};
use cloud_api::limits::{
    MAX_FILTERS_PER_SUBSCRIBE, MAX_INFLIGHT_QOS1, MAX_PAYLOAD_BYTES, MAX_SUBSCRIPTIONS_PER_CONNECTION,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use self::link::{LinkClient, LinkEvent, LinkEventLoop, LinkOptions, OutProperties};
use super::key_store::DeviceKey;
use super::options::CoreOptions;
pub use super::options::MqttVersion;
use super::services::{BoxFuture, BridgeError, IotCoreBridge};

pub mod link;

/// The nucleus's default spool size.
pub const DEFAULT_SPOOL_MAX_BYTES: usize = 2_621_440;

/// How the bridge connects.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Where IoT Core is and which CA signed it.
    pub endpoints: Endpoints,
    /// The core device's certificate (PEM).
    pub cert_file: PathBuf,
    /// The core device's private key (a file or a token key).
    pub key: DeviceKey,
    /// MQTT client id (the thing name).
    pub client_id: String,
    /// Spool size in payload bytes.
    pub spool_max_bytes: usize,
    /// Spool QoS 0 messages while offline instead of refusing them.
    pub keep_qos0_when_offline: bool,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// MQTT version (the nucleus's `mqtt.version`).
    pub mqtt_version: MqttVersion,
}

impl BridgeConfig {
    /// The nucleus's defaults for the given endpoints and identity.
    pub fn new(endpoints: Endpoints, cert_file: PathBuf, key: DeviceKey, client_id: String) -> Self {
        Self {
            endpoints,
            cert_file,
            key,
            client_id,
            spool_max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            keep_qos0_when_offline: false,
            keep_alive: Duration::from_secs(60),
            reconnect_min: Duration::from_millis(200),
            reconnect_max: Duration::from_secs(10),
            mqtt_version: MqttVersion::default(),
        }
    }
}

/// Why the bridge cannot be set up (bad files or endpoints: a configuration fault).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BridgeSetupError(pub String);

/// One message on its way to IoT Core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// Spool order.
    pub seq: u64,
    /// Topic.
    pub topic: String,
    /// QoS.
    pub qos: Qos,
    /// Payload.
    pub payload: Bytes,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 properties, if any.
    pub properties: Option<Box<OutProperties>>,
}

/// The spool: FIFO with a byte bound, and the QoS 1 messages written but not yet
/// acknowledged. Pure: the bridge's tasks drive it.
#[derive(Debug, Default)]
pub struct Spool {
    queue: VecDeque<Spooled>,
    bytes: usize,
    max_bytes: usize,
    next_seq: u64,
    /// Written to the client, waiting for the packet id the client gives them.
    unassigned: VecDeque<Spooled>,
    /// Packet id → message, waiting for PUBACK.
    inflight: HashMap<u16, Spooled>,
    /// Messages dropped because the spool was full.
    pub dropped: u64,
}

impl Spool {
    /// An empty spool of `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self { max_bytes, ..Default::default() }
    }

    /// Adds a message at the back, dropping the oldest queued messages to make room. Returns
    /// how many were dropped; a message larger than the whole spool is refused (`Err`).
    pub fn push(
        &mut self,
        topic: String,
        qos: Qos,
        payload: Bytes,
        retain: bool,
        properties: Option<OutProperties>,
    ) -> Result<u64, usize> {
        if payload.len() > self.max_bytes {
            return Err(self.max_bytes);
        }
        let mut dropped = 0;
        while self.bytes + payload.len() > self.max_bytes {
            let Some(old) = self.queue.pop_front() else { break };
            self.bytes -= old.payload.len();
            dropped += 1;
        }
        self.dropped += dropped;
        self.next_seq += 1;
        self.bytes += payload.len();
        let properties = properties.map(Box::new);
        self.queue.push_back(Spooled { seq: self.next_seq, topic, qos, payload, retain, properties });
        Ok(dropped)
    }

    /// The next message to write, if any and if fewer than the in-flight limit are unacknowledged.
    pub fn next_to_send(&mut self) -> Option<Spooled> {
        if self.unassigned.len() + self.inflight.len() >= MAX_INFLIGHT_QOS1 {
            return None;
        }
        let m = self.queue.pop_front()?;
        self.bytes -= m.payload.len();
        if m.qos == Qos::AtLeastOnce {
            self.unassigned.push_back(m.clone());
        }
        Some(m)
    }

    /// The client wrote a QoS 1 publish with this packet id (in write order).
    pub fn assigned(&mut self, pkid: u16) {
        if let Some(m) = self.unassigned.pop_front() {
            self.inflight.insert(pkid, m);
        }
    }

    /// IoT Core acknowledged a packet id.
    pub fn acked(&mut self, pkid: u16) {
        self.inflight.remove(&pkid);
    }

    /// The connection dropped: every unacknowledged message goes back to the front, in order.
    pub fn requeue_unacked(&mut self) {
        let mut back: Vec<Spooled> = self.unassigned.drain(..).chain(self.inflight.drain().map(|(_, m)| m)).collect();
        back.sort_by_key(|m| m.seq);
        for m in back.into_iter().rev() {
            self.bytes += m.payload.len();
            self.queue.push_front(m);
        }
    }

    /// Messages queued (not yet written).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Messages written and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unassigned.len() + self.inflight.len()
    }
}

struct Sub {
    filter: String,
    qos: Qos,
    tx: mpsc::Sender<MqttMessage>,
}

/// The certificate and key the bridge presents.
#[derive(Debug, Clone)]
pub struct BridgeIdentity {
    /// The device certificate (PEM file).
    pub cert_file: PathBuf,
    /// Its private key (a file or a token key).
    pub key: DeviceKey,
}

/// A request to the event loop: reconnect with this TLS configuration, then answer.
type SwitchRequest = (Arc<rustls::ClientConfig>, oneshot::Sender<()>);

struct Inner {
    client: LinkClient,
    config: BridgeConfig,
    /// What the next connect presents (starts as the configuration's).
    identity: Mutex<BridgeIdentity>,
    /// Its TLS configuration, which the core's HTTPS clients follow ([`crate::core::identity`]).
    tls: watch::Sender<Arc<rustls::ClientConfig>>,
    connected: watch::Sender<bool>,
    /// The reason code of the last DISCONNECT the server sent (MQTT 5).
    server_disconnect: watch::Sender<Option<u8>>,
    /// Why the last attempt to connect failed; `None` once connected.
    connect_error: watch::Sender<Option<String>>,
    /// Bumped on every CONNACK: the sender re-makes the subscriptions once per connection.
    epoch: AtomicU64,
    /// Filters to subscribe on the current connection, before the next publish.
    new_filters: Mutex<Vec<(String, Qos)>>,
    spool: Mutex<Spool>,
    wake_sender: Notify,
    subs: Mutex<Vec<Sub>>,
    received: AtomicU64,
    undelivered: AtomicU64,
}

/// The running bridge. Dropping it stops the connection.
pub struct MqttBridge {
    inner: Arc<Inner>,
    switch: mpsc::Sender<SwitchRequest>,
    /// One identity switch at a time.
    switching: tokio::sync::Mutex<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for MqttBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttBridge").field("client_id", &self.inner.config.client_id).finish_non_exhaustive()
    }
}

impl Drop for MqttBridge {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, BridgeSetupError> {
    std::fs::read(path).map_err(|e| BridgeSetupError(format!("cannot read the {what} {}: {e}", path.display())))
}

/// The TLS client configuration: the endpoints' CA, the device's certificate and key (ring).
pub fn tls_config(config: &BridgeConfig) -> Result<Arc<rustls::ClientConfig>, BridgeSetupError> {
    device_tls_config(&config.endpoints.ca_file, &config.cert_file, &config.key)
}

/// A TLS client configuration (ring) that trusts the CAs of `ca_file` and presents the device
/// certificate of `cert_file` with `key`: the core's identity towards every AWS IoT endpoint
/// (the MQTT broker, the Greengrass data plane). A key in a PKCS#11 token signs the handshake
/// in the token ([`super::key_store`]); ring stays the only crypto provider.
pub fn device_tls_config(
    ca_file: &Path,
    cert_file: &Path,
    key: &DeviceKey,
) -> Result<Arc<rustls::ClientConfig>, BridgeSetupError> {
    let ca = read_pem(ca_file, "root CA file")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        let cert = cert.map_err(|e| BridgeSetupError(format!("bad PEM in the root CA file: {e}")))?;
        roots.add(cert).map_err(|e| BridgeSetupError(format!("bad certificate in the root CA file: {e}")))?;
    }
    if roots.is_empty() {
        return Err(BridgeSetupError(format!("no certificate in the root CA file {}", ca_file.display())));
    }
    let cert = read_pem(cert_file, "device certificate")?;
    let chain = rustls_pemfile::certs(&mut cert.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BridgeSetupError(format!("bad PEM in {}: {e}", cert_file.display())))?;
    if chain.is_empty() {
        return Err(BridgeSetupError(format!("no certificate in {}", cert_file.display())));
    }
    let signing_key = key.signing_key().map_err(|e| BridgeSetupError(e.to_string()))?;
    let identity = rustls::sign::CertifiedKey::new(chain, signing_key);
    // As rustls's own loading does: a key that cannot tell its public key is not refused.
    match identity.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(BridgeSetupError(format!("the certificate and key do not make a TLS identity: {e}"))),
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| BridgeSetupError(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    Ok(Arc::new(tls))
}

impl MqttBridge {
    /// The bridge of a core started with `options`: connecting as its thing, with its
    /// certificate and key, when it has a cloud connection (`--cloud`); `None` offline.
    pub fn from_options(options: &CoreOptions) -> Result<Option<Arc<Self>>, BridgeSetupError> {
        let Some(cloud) = &options.cloud else { return Ok(None) };
        let mut config = BridgeConfig::new(
            cloud.endpoints.clone(),
            cloud.cert_file.clone(),
            cloud.key.clone(),
            options.thing.clone(),
        );
        config.mqtt_version = cloud.mqtt_version;
        Ok(Some(Arc::new(Self::start(config)?)))
    }

    /// Checks the configuration and starts connecting (in the background; it never waits for
    /// the cloud). Must be called inside a tokio runtime.
    pub fn start(config: BridgeConfig) -> Result<Self, BridgeSetupError> {
        let tls = tls_config(&config)?;
        let (host, port) = config.endpoints.mqtt_host_port().map_err(BridgeSetupError)?;
        let (client, eventloop) = link::connect(LinkOptions {
            version: config.mqtt_version,
            client_id: config.client_id.clone(),
            host,
            port,
            tls: tls.clone(),
            keep_alive: config.keep_alive,
        });
        let (connected, _) = watch::channel(false);
        let (server_disconnect, _) = watch::channel(None);
        let (connect_error, _) = watch::channel(None);
        let identity = BridgeIdentity { cert_file: config.cert_file.clone(), key: config.key.clone() };
        let inner = Arc::new(Inner {
            client,
            identity: Mutex::new(identity),
            tls: watch::Sender::new(tls),
            spool: Mutex::new(Spool::new(config.spool_max_bytes)),
            config,
            connected,
            server_disconnect,
            connect_error,
            epoch: AtomicU64::new(0),
            new_filters: Mutex::new(Vec::new()),
            wake_sender: Notify::new(),
            subs: Mutex::new(Vec::new()),
            received: AtomicU64::new(0),
            undelivered: AtomicU64::new(0),
        });
        let (switch, switches) = mpsc::channel(1);
        let tasks = vec![
            tokio::spawn(run_eventloop(inner.clone(), eventloop, switches)),
            tokio::spawn(run_sender(inner.clone())),
        ];
        Ok(Self { inner, switch, switching: tokio::sync::Mutex::new(()), tasks })
    }

    /// The certificate and key the connection presents (after a switch, the new ones).
    pub fn identity(&self) -> BridgeIdentity {
        lock(&self.inner.identity).clone()
    }

    /// Moves the connection to another certificate and key: checks that they make a TLS
    /// identity (else `Err`, nothing changed), drops the current connection and returns; the
    /// bridge connects again at once presenting the new identity, re-makes its subscriptions and
    /// sends what its spool holds. Components see only a reconnect. Whether IoT Core lets the
    /// new identity in shows in [`Self::connection`]; switching back is another call.
    pub async fn switch_identity(&self, identity: BridgeIdentity) -> Result<(), BridgeSetupError> {
        let _one = self.switching.lock().await;
        let tls = device_tls_config(&self.inner.config.endpoints.ca_file, &identity.cert_file, &identity.key)?;
        let (done, switched) = oneshot::channel();
        let gone = || BridgeSetupError("the bridge has stopped".into());
        self.switch.send((tls.clone(), done)).await.map_err(|_| gone())?;
        switched.await.map_err(|_| gone())?;
        *lock(&self.inner.identity) = identity;
        self.inner.tls.send_replace(tls);
        Ok(())
    }

    /// The TLS configuration of the identity the connection presents, and its changes: the
    /// core's HTTPS clients (the Greengrass data plane, the credentials provider) follow it, so
    /// after a switch they present the same certificate.
    pub fn tls_identity(&self) -> crate::core::identity::TlsIdentity {
        self.inner.tls.subscribe()
    }

    /// Whether the connection is up now, and its changes.
    pub fn connection(&self) -> watch::Receiver<bool> {
        self.inner.connected.subscribe()
    }

    /// The reason code of the last DISCONNECT IoT Core sent (MQTT 5; e.g. 0x8E when another
    /// connection took over the client id), and its changes.
    pub fn server_disconnect(&self) -> watch::Receiver<Option<u8>> {
        self.inner.server_disconnect.subscribe()
    }

    /// Why the last attempt to connect failed (e.g. the TLS handshake or CONNECT refused),
    /// `None` once connected, and its changes.
    pub fn connect_error(&self) -> watch::Receiver<Option<String>> {
        self.inner.connect_error.subscribe()
    }

    /// Messages queued, written-but-unacknowledged, and dropped for lack of room.
    pub fn spool_stats(&self) -> (usize, usize, u64) {
        let s = lock(&self.inner.spool);
        (s.queued(), s.unacked(), s.dropped)
    }

    fn publish_now(
        &self,
        topic: &str,
        qos: Qos,
        payload: Vec<u8>,
        properties: &PublishProperties,
    ) -> Result<(), BridgeError> {
        cloud_api::topic::validate_topic_name(topic)
            .map_err(|e| BridgeError(format!("invalid IoT Core topic {topic:?}: {e}")))?;
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(BridgeError(format!(
                "payload of {} bytes is over IoT Core's {MAX_PAYLOAD_BYTES}-byte limit",
                payload.len()
            )));
        }
        if qos == Qos::AtMostOnce && !*self.inner.connected.borrow() && !self.inner.config.keep_qos0_when_offline {
            return Err(BridgeError("not connected to AWS IoT Core; QoS 0 messages are not spooled offline".into()));
        }
        let retain = properties.retain.unwrap_or(false);
        let properties = match self.inner.config.mqtt_version {
            MqttVersion::Mqtt5 => link::to_mqtt5(properties, &payload).map_err(BridgeError)?,
            MqttVersion::Mqtt311 => None,
        };
        let dropped = lock(&self.inner.spool)
            .push(topic.to_owned(), qos, Bytes::from(payload), retain, properties)
            .map_err(|max| BridgeError(format!("message larger than the whole {max}-byte spool")))?;
        if dropped > 0 {
            tracing::warn!(dropped, "MQTT spool full: dropped the oldest messages");
        }
        self.inner.wake_sender.notify_one();
        Ok(())
    }

    fn subscribe_now(&self, filter: &str, qos: Qos) -> Result<mpsc::Receiver<MqttMessage>, BridgeError> {
        cloud_api::topic::validate_topic_filter(filter)
            .map_err(|e| BridgeError(format!("invalid IoT Core topic filter {filter:?}: {e}")))?;
        let (tx, rx) = mpsc::channel(256);
        let mut subs = lock(&self.inner.subs);
        subs.retain(|s| !s.tx.is_closed());
        let new_filter = !subs.iter().any(|s| s.filter == filter);
        if new_filter {
            let distinct = subs.iter().map(|s| s.filter.as_str()).collect::<std::collections::HashSet<_>>().len();
            if distinct >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
                return Err(BridgeError(format!(
                    "the core already has IoT Core's maximum of {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions"
                )));
            }
        }
        subs.push(Sub { filter: filter.to_owned(), qos, tx });
        drop(subs);
        if new_filter {
            // The sender writes the SUBSCRIBE before any later publish, so a component that
            // subscribes to a response topic and then publishes its request sees the response.
            // Offline, the next connect subscribes it with the others.
            lock(&self.inner.new_filters).push((filter.to_owned(), qos));
            self.inner.wake_sender.notify_one();
        }
        Ok(rx)
    }
}

impl IotCoreBridge for MqttBridge {
    fn publish(&self, topic: &str, qos: Qos, payload: Vec<u8>, retain: bool) -> BoxFuture<'_, Result<(), BridgeError>> {
        let properties = PublishProperties { retain: Some(retain), ..Default::default() };
        let r = self.publish_now(topic, qos, payload, &properties);
        Box::pin(async move { r })
    }
    fn publish_message(
        &self,
        topic: &str,
        qos: Qos,
        payload: Vec<u8>,
        properties: &PublishProperties,
    ) -> BoxFuture<'_, Result<(), BridgeError>> {
        let r = self.publish_now(topic, qos, payload, properties);
        Box::pin(async move { r })
    }
    fn subscribe(&self, filter: &str, qos: Qos) -> BoxFuture<'_, Result<mpsc::Receiver<MqttMessage>, BridgeError>> {
        let r = self.subscribe_now(filter, qos);
        Box::pin(async move { r })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Re-makes every subscription after a connect.
async fn resubscribe(inner: &Inner) -> Result<(), link::LinkClosed> {
    let filters: Vec<(String, Qos)> = {
        let mut subs = lock(&inner.subs);
        subs.retain(|s| !s.tx.is_closed());
        let mut seen: HashMap<String, Qos> = HashMap::new();
        for s in subs.iter() {
            let q = s.qos;
            let e = seen.entry(s.filter.clone()).or_insert(q);
            if q == Qos::AtLeastOnce {
                *e = q;
            }
        }
        seen.into_iter().collect()
    };
    lock(&inner.new_filters).clear();
    for chunk in filters.chunks(MAX_FILTERS_PER_SUBSCRIBE) {
        inner.client.subscribe_many(chunk).await?;
    }
    Ok(())
}

/// Routes a message from IoT Core to every matching subscription.
fn route(inner: &Inner, m: &link::Incoming) {
    let (topic, payload) = (m.topic.as_str(), &m.payload);
    let properties = link::from_mqtt5(m.retain, m.properties.as_ref());
    inner.received.fetch_add(1, Ordering::Relaxed);
    let mut subs = lock(&inner.subs);
    let mut gone = Vec::new();
    for s in subs.iter() {
        if !cloud_api::topic::matches(&s.filter, topic) {
            continue;
        }
        let msg = MqttMessage {
            topic_name: topic.to_owned(),
            payload: payload.as_ref().into(),
            properties: properties.clone(),
        };
        match s.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                // A slow component loses its own messages, never the others'.
                inner.undelivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => gone.push(s.filter.clone()),
        }
    }
    if gone.is_empty() {
        return;
    }
    subs.retain(|s| !s.tx.is_closed());
    let unused: Vec<String> = gone.into_iter().filter(|f| !subs.iter().any(|s| &s.filter == f)).collect();
    drop(subs);
    for f in unused {
        let client = inner.client.clone();
        tokio::spawn(async move { client.unsubscribe(f).await });
    }
}

async fn run_eventloop(inner: Arc<Inner>, mut eventloop: LinkEventLoop, mut switches: mpsc::Receiver<SwitchRequest>) {
    let mut delay = inner.config.reconnect_min;
    let mut last_error = String::new();
    loop {
        let polled = tokio::select! {
            polled = eventloop.poll() => polled,
            Some((tls, done)) = switches.recv() => {
                // A poll cut short loses at most a request the spool still tracks (QoS 1 written
                // but unassigned goes back with the others just below).
                eventloop.reconnect_with(tls);
                inner.connected.send_replace(false);
                lock(&inner.spool).requeue_unacked();
                delay = inner.config.reconnect_min;
                last_error.clear();
                tracing::info!("reconnecting to AWS IoT Core with another device certificate");
                let _ = done.send(());
                continue;
            }
        };
        match polled {
            Ok(LinkEvent::Connected) => {
                tracing::info!(
                    endpoint = %inner.config.endpoints.mqtt,
                    mqtt = %inner.config.mqtt_version,
                    "connected to AWS IoT Core"
                );
                delay = inner.config.reconnect_min;
                last_error.clear();
                inner.epoch.fetch_add(1, Ordering::SeqCst);
                inner.connected.send_replace(true);
                inner.connect_error.send_replace(None);
                inner.wake_sender.notify_one();
            }
            Ok(LinkEvent::Message(m)) => route(&inner, &m),
            Ok(LinkEvent::PubAck(pkid)) => {
                lock(&inner.spool).acked(pkid);
                inner.wake_sender.notify_one();
            }
            Ok(LinkEvent::SubAck { refused }) => {
                if refused > 0 {
                    tracing::warn!(refused, "IoT Core refused subscriptions (check the core device's IoT policy)");
                }
            }
            Ok(LinkEvent::PublishWritten(pkid)) => lock(&inner.spool).assigned(pkid),
            Ok(LinkEvent::Other) => {}
            Err(e) => {
                let was_connected = inner.connected.send_replace(false);
                lock(&inner.spool).requeue_unacked();
                let text = e.text;
                if !was_connected {
                    inner.connect_error.send_replace(Some(text.clone()));
                }
                if let Some((code, name)) = &e.disconnect {
                    // The server said why (MQTT 5 DISCONNECT): always worth a line, e.g. 0x8E
                    // when another connection took over the client id, 0x87 when the policy
                    // refused something. Reconnect with the usual backoff either way.
                    tracing::warn!(
                        reason_code = format_args!("0x{code:02X}"),
                        reason = %name,
                        retry_in = ?delay,
                        "AWS IoT Core disconnected the core"
                    );
                    inner.server_disconnect.send_replace(Some(*code));
                } else if was_connected || text != last_error {
                    tracing::warn!(error = %text, retry_in = ?delay, "AWS IoT Core connection down");
                }
                last_error = text;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(inner.config.reconnect_max);
            }
        }
    }
}

async fn run_sender(inner: Arc<Inner>) {
    let mut connected = inner.connected.subscribe();
    let mut subscribed_epoch = 0;
    loop {
        let woken = inner.wake_sender.notified();
        if !*connected.borrow_and_update() {
            if connected.changed().await.is_err() {
                return;
            }
            continue;
        }
        // Subscriptions first on every new connection, then new filters, then publishes: the
        // client writes requests in the order it is given them.
        let epoch = inner.epoch.load(Ordering::SeqCst);
        if epoch != subscribed_epoch {
            if resubscribe(&inner).await.is_err() {
                return;
            }
            subscribed_epoch = epoch;
            continue;
        }
        let fresh: Vec<(String, Qos)> = std::mem::take(&mut *lock(&inner.new_filters));
        if !fresh.is_empty() {
            for chunk in fresh.chunks(MAX_FILTERS_PER_SUBSCRIBE) {
                if inner.client.subscribe_many(chunk).await.is_err() {
                    return;
                }
            }
            continue;
        }
        let next = lock(&inner.spool).next_to_send();
        match next {
            Some(m) => {
                let sent = inner
                    .client
                    .publish(m.topic.clone(), m.qos, m.retain, m.payload.clone(), m.properties.as_deref().cloned())
                    .await;
                if sent.is_err() {
                    return;
                }
            }
            None => {
                tokio::select! {
                    _ = woken => {}
                    _ = connected.changed() => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(s: &mut Spool, topic: &str, qos: Qos, len: usize) -> u64 {
        s.push(topic.into(), qos, Bytes::from(vec![b'x'; len]), false, None).unwrap()
    }

    fn topics(s: &mut Spool) -> Vec<String> {
        std::iter::from_fn(|| s.next_to_send()).map(|m| m.topic).collect()
    }

    #[test]
    fn a_full_spool_drops_the_oldest_messages() {
        let mut s = Spool::new(10);
        push(&mut s, "a", Qos::AtLeastOnce, 4);
        push(&mut s, "b", Qos::AtLeastOnce, 4);
        assert_eq!(push(&mut s, "c", Qos::AtLeastOnce, 4), 1);
        assert_eq!(s.dropped, 1);
        assert_eq!(topics(&mut s), ["b", "c"]);
        assert!(s.push("big".into(), Qos::AtLeastOnce, Bytes::from(vec![0; 11]), false, None).is_err());
    }

    #[test]
    fn unacknowledged_messages_go_back_to_the_front_in_order_after_a_drop() {
        let mut s = Spool::new(1000);
        for t in ["a", "b", "c", "d"] {
            push(&mut s, t, Qos::AtLeastOnce, 1);
        }
        let (a, b) = (s.next_to_send().unwrap(), s.next_to_send().unwrap());
        assert_eq!((a.topic.as_str(), b.topic.as_str()), ("a", "b"));
        s.assigned(7);
        s.assigned(8);
        s.acked(7);
        // "b" was written (packet 8) but not acknowledged; the connection drops.
        s.requeue_unacked();
        assert_eq!(s.unacked(), 0);
        assert_eq!(topics(&mut s), ["b", "c", "d"]);
    }

    #[test]
    fn qos0_messages_are_not_tracked_after_writing() {
        let mut s = Spool::new(1000);
        push(&mut s, "zero", Qos::AtMostOnce, 1);
        push(&mut s, "one", Qos::AtLeastOnce, 1);
        assert_eq!(topics(&mut s), ["zero", "one"]);
        assert_eq!(s.unacked(), 1);
        s.requeue_unacked();
        assert_eq!(topics(&mut s), ["one"]);
    }

    #[test]
    fn at_most_the_in_flight_limit_is_unacknowledged() {
        let mut s = Spool::new(1 << 20);
        for _ in 0..(MAX_INFLIGHT_QOS1 + 5) {
            push(&mut s, "t", Qos::AtLeastOnce, 1);
        }
        assert_eq!(topics(&mut s).len(), MAX_INFLIGHT_QOS1);
        s.assigned(1);
        s.acked(1);
        assert_eq!(topics(&mut s).len(), 1);
    }

    #[test]
    fn bad_identity_files_are_configuration_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a pem").unwrap();
        let endpoints = Endpoints {
            mqtt: "127.0.0.1:1".into(),
            http: "http://127.0.0.1:1".into(),
            ca_file: ca.clone(),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            credentials: None,
            greengrass_data_plane: None,
            credentials_provider: None,
        };
        let config = BridgeConfig::new(
            endpoints,
            dir.path().join("c.pem"),
            DeviceKey::File(dir.path().join("k.pem")),
            "t".into(),
        );
        let err = tls_config(&config).unwrap_err().0;
        assert!(err.contains("no certificate in the root CA file"), "{err}");
        std::fs::remove_file(&ca).unwrap();
        let err = tls_config(&config).unwrap_err().0;
        assert!(err.contains("cannot read the root CA file"), "{err}");
    }

    #[test]
    fn a_certificate_for_another_key_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let keys = crate::core::key_store::KeyStore::files(dir.path().join("keys"));
        let (mine, other) = (keys.generate("mine").unwrap(), keys.generate("other").unwrap());
        let pem = |key: &DeviceKey| std::fs::read_to_string(key.key_ref().to_path()).unwrap();
        let signer = rcgen::KeyPair::from_pem(&pem(&mine)).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["core".to_owned()]).unwrap().self_signed(&signer).unwrap();
        let (ca, cert_file) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"));
        std::fs::write(&ca, cert.pem()).unwrap();
        std::fs::write(&cert_file, cert.pem()).unwrap();
        device_tls_config(&ca, &cert_file, &mine).unwrap();
        let err = device_tls_config(&ca, &cert_file, &other).unwrap_err().0;
        assert!(err.contains("the certificate and key do not make a TLS identity"), "{err}");
    }
}
