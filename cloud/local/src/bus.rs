//! How services inside the local cloud exchange MQTT messages with the broker.
//!
//! Services (the shadow service, the HTTP `Publish` operation) publish through a
//! [`Bus`]; the broker drains the [`BusReceiver`] and delivers each message to
//! subscribers, checking `iot:Receive` for each. A message with a target
//! ([`BusMessage::to`]) goes only to that client, whether it subscribed or not:
//! the Jobs service answers requests this way, as AWS IoT does ("Reserved
//! topics": job responses "don't pass through the message broker"). In the other direction the
//! broker hands a client's publish on a topic a [`ServiceHandler`] owns (after
//! `iot:Publish` was allowed) to that handler.

use bytes::Bytes;
use tokio::sync::mpsc;

/// A message a service publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusMessage {
    /// Topic name.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// 0 or 1.
    pub qos: u8,
    /// Whether the broker retains it.
    pub retain: bool,
    /// `Some(client id)`: deliver to that client only, subscribed or not
    /// (still subject to its `iot:Receive`); never retained. `None`: to subscribers.
    pub to: Option<String>,
    /// Published by the rules engine's republish action: not offered to the rules again
    /// ([`ServiceHandler::observe`] does not see it).
    pub from_rules: bool,
}

impl BusMessage {
    /// A message for the subscribers of `topic`, not retained.
    pub fn to_subscribers(topic: impl Into<String>, payload: impl Into<Bytes>, qos: u8) -> Self {
        BusMessage { topic: topic.into(), payload: payload.into(), qos, retain: false, to: None, from_rules: false }
    }

    /// A message the rules engine republishes for the subscribers of `topic`.
    pub fn republished(topic: impl Into<String>, payload: impl Into<Bytes>, qos: u8) -> Self {
        BusMessage { from_rules: true, ..Self::to_subscribers(topic, payload, qos) }
    }

    /// A message for one client only (an answer to its request).
    pub fn to_client(
        client_id: impl Into<String>,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: u8,
    ) -> Self {
        BusMessage {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            to: Some(client_id.into()),
            from_rules: false,
        }
    }
}

/// Publishing side: cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: mpsc::UnboundedSender<BusMessage>,
}

/// Receiving side, owned by the broker.
#[derive(Debug)]
pub struct BusReceiver {
    rx: mpsc::UnboundedReceiver<BusMessage>,
}

impl Bus {
    /// A connected pair.
    pub fn channel() -> (Bus, BusReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Bus { tx }, BusReceiver { rx })
    }

    /// Queues a message for delivery; messages from one publisher are delivered in order.
    /// Returns false when the broker has stopped.
    pub fn publish(&self, msg: BusMessage) -> bool {
        self.tx.send(msg).is_ok()
    }
}

impl BusReceiver {
    /// The next message, or `None` when every [`Bus`] is gone.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        self.rx.recv().await
    }
}

/// Who published a message a service receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publisher {
    /// MQTT client id.
    pub client_id: String,
    /// Certificate id of the connection.
    pub certificate_id: String,
}

/// A service that owns some reserved topics (e.g. the shadow request topics).
pub trait ServiceHandler: Send + Sync {
    /// Whether a publish on `topic` is a request for this service.
    fn wants(&self, topic: &str) -> bool;
    /// A client published a request; the broker already checked `iot:Publish`.
    /// Must not block: queue the work.
    fn handle(&self, from: &Publisher, topic: &str, payload: Bytes);
    /// Sees every message the broker publishes to subscribers — a client's (`from`), or a
    /// service's (`None`) — after its owning service took it: the rules engine's tap. Must not
    /// block. Does nothing unless a service overrides it.
    fn observe(&self, _from: Option<&Publisher>, _topic: &str, _payload: &Bytes) {}
}
