//! MQTT clients for tests: a [`Client`] whose event loop the test polls itself (to see every
//! packet, refusals and closes included), and an [`Observer`] that watches topics in the
//! background, as an operator's application in the cloud would.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::WAIT;

/// How long a broker on loopback may take to answer one packet of a [`Client`].
pub const PROMPT: Duration = Duration::from_secs(5);

/// A rumqttc client and its event loop, polled by the helper methods.
pub struct Client {
    /// Request handle.
    pub client: AsyncClient,
    /// Event loop; polled by the helper methods.
    pub events: EventLoop,
}

/// What a connection attempt ended with: the client and the session-present flag.
pub type ConnectResult = Result<(Client, bool), ConnectionError>;

impl Client {
    /// Connects and waits (at most [`PROMPT`]) for the CONNACK; returns the session-present flag.
    pub async fn connect(opts: MqttOptions) -> ConnectResult {
        let (client, mut events) = AsyncClient::new(opts, 100);
        let deadline = tokio::time::Instant::now() + PROMPT;
        loop {
            let ev =
                tokio::time::timeout_at(deadline, events.poll()).await.map_err(|_| ConnectionError::NetworkTimeout)?;
            if let Event::Incoming(Incoming::ConnAck(ack)) = ev? {
                return Ok((Client { client, events }, ack.session_present));
            }
        }
    }

    /// Polls until `pick` returns something, the connection fails, or `within` passes.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => return Err("timed out".into()),
                Ok(Err(e)) => return Err(format!("connection error: {e}")),
                Ok(Ok(ev)) => {
                    if let Some(t) = pick(&ev) {
                        return Ok(t);
                    }
                }
            }
        }
    }

    /// Subscribes and returns the SUBACK return codes.
    pub async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> Result<Vec<SubscribeReasonCode>, String> {
        let filters: Vec<_> = filters.iter().map(|(f, q)| SubscribeFilter::new((*f).to_owned(), *q)).collect();
        self.client.subscribe_many(filters).await.map_err(|e| e.to_string())?;
        self.wait_for(PROMPT, |ev| match ev {
            Event::Incoming(Incoming::SubAck(ack)) => Some(ack.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Publishes; waits for the PUBACK (QoS 1) or for the packet to be written (QoS 0).
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), String> {
        self.client.publish(topic, qos, retain, payload.into()).await.map_err(|e| e.to_string())?;
        self.wait_for(PROMPT, |ev| match (qos, ev) {
            (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_))) => Some(()),
            (_, Event::Incoming(Incoming::PubAck(_))) => Some(()),
            _ => None,
        })
        .await
    }

    /// The next PUBLISH received within `within`.
    pub async fn recv(&mut self, within: Duration) -> Result<Publish, String> {
        self.wait_for(within, |ev| match ev {
            Event::Incoming(Incoming::Publish(p)) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Whether the broker closes the connection within `within` (polling sends queued requests
    /// meanwhile).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => return false,
                Ok(Err(_)) => return true,
                Ok(Ok(Event::Incoming(Incoming::Disconnect))) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Sends DISCONNECT and waits until it is written.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = self.wait_for(PROMPT, |ev| matches!(ev, Event::Outgoing(Outgoing::Disconnect)).then_some(())).await;
    }
}

/// A message an [`Observer`] received.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The topic it was published on.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// The payload as JSON; fails the test, naming the topic, if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!("the message on {} is not JSON ({e}): {}", self.topic, String::from_utf8_lossy(&self.payload))
        })
    }
}

/// An MQTT client that subscribes to its filters at QoS 1 on connecting and queues every message
/// it receives, for the test to wait on. It lives for one connection: once the broker closes it
/// (the cloud stops, the certificate is revoked), the waits fail and a new observer is needed.
pub struct Observer {
    client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Message>,
    event_loop: JoinHandle<()>,
}

impl Observer {
    /// Connects with `opts` and subscribes to `filters`; returns once the broker granted them
    /// all. Fails the test if it does not within [`WAIT`] or refuses one.
    pub async fn connect(opts: MqttOptions, filters: &[&str]) -> Observer {
        assert!(!filters.is_empty(), "an observer watches at least one topic filter");
        let (client, mut events) = AsyncClient::new(opts, 16);
        let (tx, messages) = mpsc::unbounded_channel();
        let (suback_tx, mut suback) = mpsc::unbounded_channel();
        let subscriptions: Vec<_> =
            filters.iter().map(|f| SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce)).collect();
        let subscriber = client.clone();
        let event_loop = tokio::spawn(async move {
            while let Ok(event) = events.poll().await {
                match event {
                    // Not awaited: the request queue is only drained by this loop.
                    Event::Incoming(Packet::ConnAck(_)) => {
                        let _ = subscriber.try_subscribe_many(subscriptions.clone());
                    }
                    Event::Incoming(Packet::SubAck(ack)) => {
                        let _ = suback_tx.send(ack.return_codes);
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        let _ = tx.send(Message { topic: p.topic.clone(), payload: p.payload.to_vec() });
                    }
                    _ => {}
                }
            }
        });
        let codes = tokio::time::timeout(WAIT, suback.recv())
            .await
            .unwrap_or_else(|_| panic!("the observer got no SUBACK for {filters:?} within {WAIT:?}"))
            .unwrap_or_else(|| panic!("the observer's connection closed before the SUBACK for {filters:?}"));
        assert!(
            codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))),
            "the broker refused the observer's subscription to {filters:?}: {codes:?}"
        );
        Observer { client, messages, event_loop }
    }

    /// The next message; fails the test if none comes within [`WAIT`].
    pub async fn next(&mut self, what: &str) -> Message {
        self.wait_for(what, |_| true).await
    }

    /// The next message that satisfies `pred` (others are dropped); fails the test if none comes
    /// within [`WAIT`].
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(m)) if pred(&m) => return m,
                Ok(Some(_)) => {}
                Ok(None) => panic!("no {what}: the observer's connection closed"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// Publishes at QoS 1 (queued; the PUBACK is not waited for).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .await
            .expect("the observer's request queue");
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.event_loop.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_payload_reads_as_json() {
        let m = Message { topic: "dt/core-1/telemetry".into(), payload: br#"{"v":1}"#.to_vec() };
        assert_eq!(m.json(), serde_json::json!({"v": 1}));
    }

    #[test]
    #[should_panic(expected = "the message on dt/core-1/telemetry is not JSON")]
    fn a_payload_that_is_not_json_fails_naming_the_topic() {
        Message { topic: "dt/core-1/telemetry".into(), payload: b"{not json".to_vec() }.json();
    }
}
