//! One MQTT client over either protocol version, so a scenario is written once and runs with
//! MQTT 3.1.1 and MQTT 5 clients alike (rumqttc's `v4` and `v5` modules have the same shape but
//! different types). Only what the benchmark uses: connect with a client certificate, subscribe
//! at QoS 1, publish at QoS 1, and the events it waits on.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;
use tokio::time::Instant;

use crate::target::Target;

/// Requests a client may queue ahead of its event loop; a publish call waits beyond that.
const REQUEST_CHANNEL: usize = 10;
/// Longest a CONNACK or SUBACK may take.
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);
/// Largest packet the client accepts (the benchmark's messages are far smaller).
const MAX_PACKET: u32 = 1 << 20;

/// The MQTT version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1.1 (rumqttc's `v4` client).
    V311,
    /// MQTT 5 (rumqttc's `v5` client).
    V5,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::V311 => "MQTT 3.1.1",
            Protocol::V5 => "MQTT 5",
        })
    }
}

/// A message the client received; topic and payload are all the benchmark reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published on.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
}

/// What the event loop reports, in the terms the benchmark waits on.
#[derive(Debug)]
pub enum Incoming {
    /// The broker accepted the connection.
    ConnAck,
    /// The broker answered a SUBSCRIBE: `Ok` if every filter was granted, else its codes.
    SubAck(Result<(), String>),
    /// A message for a subscription.
    Publish(Message),
    /// Anything else (acknowledgements, pings, outgoing packets).
    Other,
}

/// The sending half of a connection.
#[derive(Clone)]
pub enum Client {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(v5::AsyncClient),
}

/// The receiving half of a connection: poll it, or nothing moves. Boxed: the two event loops
/// differ in size.
pub enum Events {
    /// MQTT 3.1.1.
    V311(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<v5::EventLoop>),
}

impl Client {
    /// Publishes `payload` on `topic` at QoS 1, waiting while the request channel is full.
    pub async fn publish(&self, topic: String, payload: Bytes) -> Result<(), String> {
        match self {
            Client::V311(c) => c.publish_bytes(topic, rumqttc::QoS::AtLeastOnce, false, payload).await.map_err(text),
            Client::V5(c) => {
                c.publish_bytes(topic, v5::mqttbytes::QoS::AtLeastOnce, false, payload).await.map_err(text)
            }
        }
    }

    /// Subscribes to every filter at QoS 1 in one SUBSCRIBE.
    pub async fn subscribe(&self, filters: &[String]) -> Result<(), String> {
        match self {
            Client::V311(c) => {
                let filters =
                    filters.iter().map(|f| rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce));
                c.subscribe_many(filters).await.map_err(text)
            }
            Client::V5(c) => {
                let filters =
                    filters.iter().map(|f| v5::mqttbytes::v5::Filter::new(f.clone(), v5::mqttbytes::QoS::AtLeastOnce));
                c.subscribe_many(filters).await.map_err(text)
            }
        }
    }

    /// Queues a DISCONNECT without waiting.
    pub fn try_disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.try_disconnect().map_err(text),
            Client::V5(c) => c.try_disconnect().map_err(text),
        };
    }
}

impl Events {
    /// The next event; `Err` when the connection ended.
    pub async fn poll(&mut self) -> Result<Incoming, String> {
        Ok(match self {
            Events::V311(e) => {
                use rumqttc::{Event, Packet, SubscribeReasonCode};
                match e.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(_)) => Incoming::ConnAck,
                    Event::Incoming(Packet::SubAck(ack)) => {
                        suback(&ack.return_codes, |c| matches!(c, SubscribeReasonCode::Success(_)))
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        Incoming::Publish(Message { topic: p.topic, payload: p.payload })
                    }
                    _ => Incoming::Other,
                }
            }
            Events::V5(e) => {
                use v5::Event;
                use v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
                match e.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(_)) => Incoming::ConnAck,
                    Event::Incoming(Packet::SubAck(ack)) => {
                        suback(&ack.return_codes, |c| matches!(c, SubscribeReasonCode::Success(_)))
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        Incoming::Publish(Message { topic, payload: p.payload })
                    }
                    _ => Incoming::Other,
                }
            }
        })
    }

    /// Polls until `want` picks an event, the connection ends, or [`ANSWER_DEADLINE`] passes.
    pub async fn wait_for<T>(&mut self, what: &str, want: impl Fn(Incoming) -> Option<T>) -> anyhow::Result<T> {
        let deadline = Instant::now() + ANSWER_DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.poll()).await {
                Err(_) => anyhow::bail!("no {what} within {ANSWER_DEADLINE:?}"),
                Ok(Err(e)) => anyhow::bail!("waiting for {what}: {e}"),
                Ok(Ok(event)) => {
                    if let Some(t) = want(event) {
                        return Ok(t);
                    }
                }
            }
        }
    }
}

/// An error as text: the two versions' errors are different types.
fn text(e: impl fmt::Display) -> String {
    e.to_string()
}

/// A SUBACK as the flow sees it: every filter granted, or the codes.
fn suback<C: fmt::Debug>(codes: &[C], granted: impl Fn(&C) -> bool) -> Incoming {
    Incoming::SubAck(if codes.iter().all(granted) { Ok(()) } else { Err(format!("{codes:?}")) })
}

/// Connects `client_id` with its certificate, a clean session, keep-alive 60 s and at most
/// `inflight` unacknowledged QoS 1 publishes, and waits for the CONNACK.
pub async fn connect(
    target: &Target,
    client_id: &str,
    protocol: Protocol,
    inflight: u16,
) -> anyhow::Result<(Client, Events)> {
    let tls = || -> anyhow::Result<rumqttc::Transport> {
        Ok(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(target.tls(client_id)?)))
    };
    let (client, mut events) = match protocol {
        Protocol::V311 => {
            let mut opts = rumqttc::MqttOptions::new(client_id, target.host.clone(), target.port);
            opts.set_transport(tls()?);
            opts.set_keep_alive(Duration::from_secs(60));
            opts.set_inflight(inflight);
            opts.set_max_packet_size(MAX_PACKET as usize, MAX_PACKET as usize);
            opts.set_clean_session(true);
            let (c, e) = rumqttc::AsyncClient::new(opts, REQUEST_CHANNEL);
            (Client::V311(c), Events::V311(Box::new(e)))
        }
        Protocol::V5 => {
            let mut opts = v5::MqttOptions::new(client_id, target.host.clone(), target.port);
            opts.set_transport(tls()?);
            opts.set_keep_alive(Duration::from_secs(60));
            // The broker's Receive Maximum (CONNACK) bounds it too.
            opts.set_outgoing_inflight_upper_limit(inflight);
            opts.set_receive_maximum(Some(inflight));
            opts.set_max_packet_size(Some(MAX_PACKET));
            opts.set_clean_start(true);
            let (c, e) = v5::AsyncClient::new(opts, REQUEST_CHANNEL);
            (Client::V5(c), Events::V5(Box::new(e)))
        }
    };
    events
        .wait_for("CONNACK", |e| matches!(e, Incoming::ConnAck).then_some(()))
        .await
        .map_err(|e| anyhow::anyhow!("{client_id} ({protocol}): {e}"))?;
    Ok((client, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_named_as_the_report_names_them() {
        assert_eq!(Protocol::V311.to_string(), "MQTT 3.1.1");
        assert_eq!(Protocol::V5.to_string(), "MQTT 5");
    }
}
