//! The MQTT 3.1.1 and MQTT 5 broker over mutual TLS, with AWS IoT Core's behaviour:
//! certificate and policy checks on every CONNECT, PUBLISH, SUBSCRIBE and
//! delivery, IoT Core's limits, QoS 0/1 only, retained messages, last will,
//! keep-alive, persistent sessions. Follows "Device communication protocols /
//! MQTT" and "AWS IoT differences from MQTT specifications" in the AWS IoT Core
//! Developer Guide, and the message broker quotas in "AWS IoT Core endpoints
//! and quotas" (AWS General Reference).
//!
//! # Layout
//! - [`BrokerConfig`], [`Broker`] (this file): accept loop and background tasks
//!   (service bus, registry events, session expiry).
//! - `connection`: one task per connection (TLS, CONNECT, read/write loop).
//! - `rules`: IoT Core's decisions on CONNECT/PUBLISH/SUBSCRIBE, pure.
//! - `state`: sessions, subscriptions, retained messages, routing.
//! - `topic_tree`: the subscription trie, pure.
//! - `queue`: QoS 1 inflight window and offline queue, pure.
//! - `codec`: framing on top of `rumqttc::mqttbytes::v4` (3.1.1) and
//!   `rumqttc::v5::mqttbytes::v5` (MQTT 5).
//!
//! # MQTT 5
//! Both versions share one core (routing, policies, sessions, retained
//! messages, queues); the connection turns each version's packets into one
//! form and answers in the client's version. As IoT Core ("MQTT 5 supported
//! features" and "MQTT 5 properties" on the Developer Guide's "MQTT" page):
//! CONNACK announces Maximum QoS 1, Retain Available, Receive Maximum 100,
//! Topic Alias Maximum 8, wildcard and shared subscriptions, no subscription
//! identifiers, the Maximum Packet Size; reason codes on every acknowledgement
//! (a denied PUBLISH gets PUBACK 0x87 instead of a closed connection, a denied
//! filter SUBACK 0x87); PUBLISH properties passed through to MQTT 5
//! subscribers; inbound topic aliases; shared subscriptions
//! `$share/{group}/{filter}` (for 3.1.1 clients too); subscription options;
//! session expiry per session, capped at [`BrokerConfig::session_expiry_secs`];
//! a DISCONNECT with a reason before the broker closes a connection.
//!
//! # IoT Core behaviour implemented
//! - **Authentication**: the client certificate must chain to the local CA (TLS)
//!   and be registered and ACTIVE; otherwise CONNACK 5 (MQTT 5: 0x87). When a certificate
//!   leaves ACTIVE or is deleted, its live connections are closed at once.
//! - **Authorization**: `iot:Connect` on `client/{clientId}` (else CONNACK 5);
//!   `iot:Publish` on `topic/{topic}` for each PUBLISH and for the will at
//!   CONNECT; `iot:RetainPublish` as well for retained publishes; a denied
//!   PUBLISH closes the connection (MQTT 3.1.1 has no negative PUBACK);
//!   `iot:Subscribe` on `topicfilter/{filter}` per filter (SUBACK 0x80 if
//!   denied); `iot:Receive` on `topic/{topic}` before each delivery (skipped if
//!   denied). Decisions are cached per connection for one second.
//! - **QoS**: 0 and 1. A QoS 2 PUBLISH or SUBSCRIBE gets no PUBACK/SUBACK and
//!   the connection is closed; so is a CONNECT whose will has QoS 2.
//! - **Limits** (`cloud_api::limits`): payload > 128 KiB, a topic > 256 bytes or
//!   with > 7 slashes, > 8 filters in a SUBSCRIBE, going past 50 subscriptions,
//!   malformed packets: the connection is closed. An invalid filter gets 0x80.
//!   Client ids: 1–128 bytes, not starting with `$` (else CONNACK 2).
//! - **Keep-alive**: 0 means 1200 s, other values are clamped to 30–1200 s; a
//!   connection silent for 1.5 × that is closed (and its will published).
//! - **Sessions**: a second connection with the same client id closes the
//!   first. `clean_session = 0` keeps subscriptions and queues QoS 1 messages
//!   while offline, up to [`BrokerConfig::max_queued_per_session`] (the oldest
//!   are dropped first); unacknowledged messages are resent (DUP) on resume;
//!   CONNACK reports session-present; sessions expire after one hour offline.
//! - **Retained messages**: stored per topic, replaced by the next retained
//!   publish, cleared by an empty one; sent with RETAIN set only on a SUBSCRIBE
//!   whose filter has no wildcard (as IoT Core); not allowed on `$` topics.
//! - **Last will**: published when a connection ends without DISCONNECT
//!   (lost, keep-alive timeout, protocol violation, taken over); not when the
//!   broker closes it for a revoked certificate or for shutdown.
//! - **Services**: a PUBLISH on a topic a [`ServiceHandler`] wants is handed to
//!   it and also delivered to subscribers; messages from the [`BusReceiver`] are
//!   delivered (with `iot:Receive` checks) and retained if flagged; one with a
//!   target client goes to that client's session only, subscribed or not.
//!
//! # Slow subscribers
//! At most 100 QoS 1 messages are in flight per connection (IoT Core's limit);
//! further messages wait in a per-connection queue of
//! [`BrokerConfig::outgoing_queue_len`]. When that queue is full:
//! - a QoS 1 message from a client is not dropped: the publishing connection
//!   withholds its PUBACK and reads nothing more from its client until the
//!   subscriber has room (backpressure, per connection: publishers whose
//!   messages do not go to that subscriber, and other subscribers, are not
//!   slowed down; no lock is held while waiting). If the subscriber's
//!   connection ends meanwhile, the message goes to its session as usual
//!   (offline queue of a persistent session). A subscriber that makes no room
//!   for 35 s (it would have been disconnected after 30 s of not reading) has
//!   the message dropped and counted, and the publisher goes on;
//! - a QoS 0 delivery (also QoS 1 to a QoS 0 subscription), a message from a service (the bus, including HTTP
//!   Publish) and the will of a closing connection are not waited for by a
//!   reading connection: QoS 0 and service messages are dropped and counted
//!   (`Broker::dropped_for_slow_subscribers`); a will waits for room in the
//!   background.
//!
//! A client that does not read for 30 s while we write is disconnected.
//! Offline persistent sessions keep at most
//! [`BrokerConfig::max_queued_per_session`] messages, dropping the oldest.
//!
//! # Not implemented
//! MQTT 3.1 (CONNECT answered with CONNACK 1), MQTT 5's will delay and
//! outbound topic aliases, WebSockets, ALPN on 443,
//! custom authorizers, QoS 2, the `iot:ConnectAttributes` policy condition,
//! throttling (100 publishes/s, 512 KiB/s, 1 CONNECT/s per client id), the
//! 10 msg/s pacing of stored messages after a resume, retained message
//! persistence across restarts.
//!
//! Basic Ingest topics (`$aws/rules/{rule}/…`) cannot be subscribed to; their messages reach
//! only the rule they name, through the rules engine ([`crate::rules::engine`]).
//!
//! # Lifecycle events
//! Presence (`$aws/events/presence/connected|disconnected/{clientId}`) and
//! subscription events (`$aws/events/subscriptions/subscribed|unsubscribed/{clientId}`)
//! are built by [`crate::events`] and published by the connection as the
//! service: no publish authorization, `iot:Receive` checked per subscriber.

pub mod codec;
mod connection;
mod queue;
mod rules;
mod state;
mod topic_tree;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::bus::{BusReceiver, ServiceHandler};
use crate::registry::{CertificateStatus, Registry, RegistryEvent};
use state::{Shared, lock};

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Most QoS 1 messages queued for one offline persistent session; older ones are dropped first.
    pub max_queued_per_session: usize,
    /// Most messages waiting to be written to one live connection; beyond it QoS 1
    /// publishers wait for room and QoS 0 messages are dropped.
    pub outgoing_queue_len: usize,
    /// Time allowed for the TLS handshake and the CONNECT packet together.
    pub connect_timeout: Duration,
    /// How long a persistent session survives offline, seconds (IoT Core default: 1 hour).
    pub session_expiry_secs: u64,
    /// Where the broker counts its `AWS/IoT` metrics (`Connect.Success`, `PublishIn.AuthError`, …).
    pub metrics: Arc<crate::iot_metrics::IotMetrics>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_queued_per_session: 1000,
            outgoing_queue_len: 1000,
            connect_timeout: Duration::from_secs(10),
            session_expiry_secs: cloud_api::limits::PERSISTENT_SESSION_EXPIRY_SECS,
            metrics: Arc::default(),
        }
    }
}

/// The broker.
pub struct Broker {
    registry: Arc<Registry>,
    shared: Arc<Shared>,
    bus: std::sync::Mutex<Option<BusReceiver>>,
    events: std::sync::Mutex<Option<broadcast::Receiver<RegistryEvent>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

/// Counts running connection tasks so shutdown can wait for them.
#[derive(Debug, Default)]
struct TaskCount {
    running: AtomicUsize,
    idle: Notify,
}

struct TaskGuard(Arc<TaskCount>);

impl TaskGuard {
    fn new(count: &Arc<TaskCount>) -> Self {
        count.running.fetch_add(1, Ordering::AcqRel);
        TaskGuard(count.clone())
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// How often offline persistent sessions are checked for expiry.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How long shutdown waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Broker {
    /// A broker authorizing against `registry`, routing reserved topics to
    /// `services`, and delivering what services publish on `bus`.
    pub fn new(
        registry: Arc<Registry>,
        services: Vec<Arc<dyn ServiceHandler>>,
        bus: BusReceiver,
        config: BrokerConfig,
    ) -> Arc<Self> {
        // Subscribe now so no certificate change between `new` and `serve` is missed.
        let events = registry.events();
        Arc::new(Broker {
            registry,
            shared: Arc::new(Shared::new(services, config)),
            bus: std::sync::Mutex::new(Some(bus)),
            events: std::sync::Mutex::new(Some(events)),
        })
    }

    /// Messages dropped so far because a subscriber could not keep up (QoS 0,
    /// service messages, or QoS 1 after a subscriber made no room for 35 s).
    pub fn dropped_for_slow_subscribers(&self) -> u64 {
        self.shared.dropped_for_slow_subscribers()
    }

    /// Accepts TLS connections on `listener` until `shutdown` is cancelled,
    /// then closes every connection (waiting up to 5 s for them to finish).
    /// Call once: the service bus is drained by the first call.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: CancellationToken,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let tasks = Arc::new(TaskCount::default());
        let background = shutdown.child_token();
        if let Some(bus) = lock(&self.bus).take() {
            tokio::spawn(drain_bus(self.shared.clone(), bus, background.clone()));
        }
        if let Some(events) = lock(&self.events).take() {
            tokio::spawn(watch_certificates(self.clone(), events, background.clone()));
        }
        tokio::spawn(sweep_sessions(self.shared.clone(), background.clone()));

        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let ctl = self.shared.new_conn(&shutdown);
                    let guard = TaskGuard::new(&tasks);
                    let (shared, registry, acceptor) = (self.shared.clone(), self.registry.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        connection::run(shared, registry, tcp, peer, acceptor, ctl).await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        background.cancel();
        let all_closed = async {
            loop {
                let idle = tasks.idle.notified();
                if tasks.running.load(Ordering::Acquire) == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, all_closed).await.is_err() {
            tracing::warn!(remaining = tasks.running.load(Ordering::Acquire), "connections still closing at shutdown");
        }
    }

    fn check_certificate(&self, certificate_id: &str) {
        if self.registry.certificate_status(certificate_id) != Some(CertificateStatus::Active) {
            let closed = self.shared.kick_certificate(certificate_id);
            if closed > 0 {
                tracing::info!(%certificate_id, closed, "closed connections of a certificate that is no longer ACTIVE");
            }
        }
    }
}

/// Delivers what services publish.
async fn drain_bus(shared: Arc<Shared>, mut bus: BusReceiver, stop: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = bus.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        let message = queue::Message::new(msg.topic, msg.payload, msg.qos.min(1), msg.retain);
        // Service messages are not held back: a subscriber with a full queue
        // misses them (counted), so one slow device cannot delay every service.
        let blocked = match msg.to {
            Some(client_id) => shared.deliver_to(&client_id, message).into_iter().collect(),
            None => shared.publish_observed(message, None, !msg.from_rules),
        };
        shared.give_up(blocked);
    }
}

/// Closes connections of certificates that leave ACTIVE or are deleted.
async fn watch_certificates(
    broker: Arc<Broker>,
    mut events: broadcast::Receiver<RegistryEvent>,
    stop: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(RegistryEvent::CertificateStatusChanged { certificate_id, status }) => {
                if status != CertificateStatus::Active {
                    broker.shared.kick_certificate(&certificate_id);
                }
            }
            Ok(RegistryEvent::CertificateDeleted { certificate_id }) => {
                broker.shared.kick_certificate(&certificate_id);
            }
            // Group membership changes policies through groups, which are
            // evaluated per operation: nothing to close.
            Ok(RegistryEvent::ThingAddedToThingGroup { .. } | RegistryEvent::ThingRemovedFromThingGroup { .. }) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Events were missed: check every certificate with a live connection.
                for id in broker.shared.live_certificates() {
                    broker.check_certificate(&id);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Deletes expired offline persistent sessions.
async fn sweep_sessions(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let n = shared.sweep_expired(std::time::Instant::now());
                if n > 0 {
                    tracing::debug!(expired = n, "persistent sessions expired");
                }
            }
        }
    }
}
