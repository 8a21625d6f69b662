//! The protocol adapter under the IoT Core bridge ([`super`]): one MQTT connection,
//! MQTT 5 (the nucleus's default since 2.10, `mqtt.version` "mqtt5") or MQTT 3.1.1
//! ("mqtt3"), behind one small interface, so the bridge's logic (spool, reconnect,
//! subscriptions, QoS, connection state) exists once.
//!
//! It also maps the MQTT 5 members of the Greengrass IPC shapes (`PublishToIoTCoreRequest`,
//! `MQTTMessage`) to and from PUBLISH properties, and checks them before anything is spooled:
//! a message the broker would refuse as malformed must never reach the spool, or it would be
//! re-sent after every reconnect.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloud_api::ipc::model::{PayloadFormat, PublishProperties, Qos, UserProperty};
use cloud_api::limits::{MAX_INFLIGHT_QOS1, MAX_PAYLOAD_BYTES};
use rumqttc::v5::mqttbytes::v5 as m5;
use rumqttc::{Outgoing, TlsConfiguration, Transport};

pub use crate::core::options::MqttVersion;
use crate::core::services::check_mqtt5_members;

/// MQTT properties of an outgoing PUBLISH (MQTT 5 only).
pub type OutProperties = m5::PublishProperties;

/// Checks the MQTT 5 members of a PublishToIoTCore request against `payload`
/// ([`check_mqtt5_members`]) and maps them to PUBLISH properties (`None` when there are none).
/// `Err` is the reason for an `InvalidArgumentsError`.
pub fn to_mqtt5(props: &PublishProperties, payload: &[u8]) -> Result<Option<OutProperties>, String> {
    check_mqtt5_members(props, payload)?;
    let out = OutProperties {
        payload_format_indicator: props.payload_format.map(|f| match f {
            PayloadFormat::Bytes => 0,
            PayloadFormat::Utf8 => 1,
        }),
        // Checked: it fits.
        message_expiry_interval: props.message_expiry_interval_seconds.and_then(|s| u32::try_from(s).ok()),
        response_topic: props.response_topic.clone(),
        correlation_data: props.correlation_data.as_ref().map(|d| Bytes::from(d.0.clone())),
        content_type: props.content_type.clone(),
        user_properties: props.user_properties.iter().flatten().map(|u| (u.key.clone(), u.value.clone())).collect(),
        ..Default::default()
    };
    Ok((out != OutProperties::default()).then_some(out))
}

/// The `MQTTMessage` members of a received PUBLISH: `retain` always, the MQTT 5 properties
/// when it had them (an MQTT 3.1.1 PUBLISH has none).
pub fn from_mqtt5(retain: bool, props: Option<&OutProperties>) -> PublishProperties {
    let mut out = PublishProperties { retain: Some(retain), ..Default::default() };
    let Some(p) = props else { return out };
    out.payload_format = match p.payload_format_indicator {
        Some(0) => Some(PayloadFormat::Bytes),
        Some(1) => Some(PayloadFormat::Utf8),
        _ => None,
    };
    out.message_expiry_interval_seconds = p.message_expiry_interval.map(u64::from);
    out.response_topic = p.response_topic.clone();
    out.correlation_data = p.correlation_data.as_ref().map(|d| d.to_vec().into());
    out.content_type = p.content_type.clone();
    if !p.user_properties.is_empty() {
        out.user_properties =
            Some(p.user_properties.iter().map(|(k, v)| UserProperty { key: k.clone(), value: v.clone() }).collect());
    }
    out
}

/// How to connect.
pub struct LinkOptions {
    /// MQTT version.
    pub version: MqttVersion,
    /// Client id.
    pub client_id: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS client configuration.
    pub tls: Arc<rustls::ClientConfig>,
    /// Keep-alive.
    pub keep_alive: Duration,
}

/// The client half: writes requests into the event loop.
#[derive(Clone)]
pub enum LinkClient {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

/// The event loop half: drives the connection.
pub enum LinkEventLoop {
    /// MQTT 3.1.1.
    V4(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<rumqttc::v5::EventLoop>),
}

/// The event loop stopped taking requests (the bridge is going away).
#[derive(Debug)]
pub struct LinkClosed;

/// A message from the broker.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 properties.
    pub properties: Option<OutProperties>,
}

/// What the bridge needs to know of the connection, in either version.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK: the connection is up.
    Connected,
    /// A PUBLISH from the broker.
    Message(Box<Incoming>),
    /// PUBACK for a packet id.
    PubAck(u16),
    /// SUBACK, with how many filters were refused.
    SubAck {
        /// Filters refused.
        refused: usize,
    },
    /// A QoS 1 PUBLISH was written with this packet id.
    PublishWritten(u16),
    /// Anything else.
    Other,
}

/// The connection is down.
#[derive(Debug)]
pub struct LinkError {
    /// What happened.
    pub text: String,
    /// The server's DISCONNECT reason code (MQTT 5) and its name, when it sent one.
    pub disconnect: Option<(u8, String)>,
}

fn qos4(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
    }
}

fn qos5(q: Qos) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    }
}

/// Opens the client and its event loop (nothing connects until the event loop is polled).
pub fn connect(o: LinkOptions) -> (LinkClient, LinkEventLoop) {
    // Small request/answer exchanges (deployment jobs, shadows) must not wait for Nagle's
    // algorithm (rumqttc leaves it on): tens of milliseconds per exchange otherwise.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    let transport = Transport::tls_with_config(TlsConfiguration::Rustls(o.tls));
    // Leave the size limits to IoT Core (it refuses what is too big, we log it).
    let max_packet = MAX_PAYLOAD_BYTES + 1024;
    // Capacity 0, a rendezvous channel: a request is either inside the event loop (and its
    // packet id reported in order) or still with the sender, never stranded across a
    // reconnect, so packet ids and PUBACKs match the spool's messages.
    match o.version {
        MqttVersion::Mqtt311 => {
            let mut opts = rumqttc::MqttOptions::new(o.client_id, o.host, o.port);
            opts.set_transport(transport);
            opts.set_keep_alive(o.keep_alive);
            opts.set_clean_session(true);
            opts.set_inflight(MAX_INFLIGHT_QOS1 as u16);
            opts.set_max_packet_size(max_packet, max_packet);
            let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 0);
            eventloop.set_network_options(network);
            (LinkClient::V4(client), LinkEventLoop::V4(Box::new(eventloop)))
        }
        MqttVersion::Mqtt5 => {
            let mut opts = rumqttc::v5::MqttOptions::new(o.client_id, o.host, o.port);
            opts.set_transport(transport);
            opts.set_keep_alive(o.keep_alive);
            opts.set_clean_start(true);
            opts.set_outgoing_inflight_upper_limit(MAX_INFLIGHT_QOS1 as u16);
            opts.set_max_packet_size(u32::try_from(max_packet).ok());
            opts.set_network_options(network);
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(opts, 0);
            (LinkClient::V5(client), LinkEventLoop::V5(Box::new(eventloop)))
        }
    }
}

impl LinkClient {
    /// Writes a PUBLISH. MQTT 3.1.1 drops `properties`.
    pub async fn publish(
        &self,
        topic: String,
        qos: Qos,
        retain: bool,
        payload: Bytes,
        properties: Option<OutProperties>,
    ) -> Result<(), LinkClosed> {
        match self {
            Self::V4(c) => c.publish_bytes(topic, qos4(qos), retain, payload).await.map_err(|_| LinkClosed),
            Self::V5(c) => match properties {
                Some(p) => c.publish_bytes_with_properties(topic, qos5(qos), retain, payload, p).await,
                None => c.publish_bytes(topic, qos5(qos), retain, payload).await,
            }
            .map_err(|_| LinkClosed),
        }
    }

    /// Writes one SUBSCRIBE for `filters`.
    pub async fn subscribe_many(&self, filters: &[(String, Qos)]) -> Result<(), LinkClosed> {
        match self {
            Self::V4(c) => c
                .subscribe_many(filters.iter().map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos4(*q))))
                .await
                .map_err(|_| LinkClosed),
            Self::V5(c) => c
                .subscribe_many(filters.iter().map(|(f, q)| m5::Filter::new(f.clone(), qos5(*q))))
                .await
                .map_err(|_| LinkClosed),
        }
    }

    /// Writes an UNSUBSCRIBE.
    pub async fn unsubscribe(&self, filter: String) -> Result<(), LinkClosed> {
        match self {
            Self::V4(c) => c.unsubscribe(filter).await.map_err(|_| LinkClosed),
            Self::V5(c) => c.unsubscribe(filter).await.map_err(|_| LinkClosed),
        }
    }
}

impl LinkEventLoop {
    /// Drops the connection now and makes the next [`Self::poll`] connect with `tls` (another
    /// device certificate and key). Requests not yet written stay with the caller's spool.
    pub fn reconnect_with(&mut self, tls: Arc<rustls::ClientConfig>) {
        let transport = Transport::tls_with_config(TlsConfiguration::Rustls(tls));
        match self {
            Self::V4(e) => {
                e.mqtt_options.set_transport(transport);
                e.clean();
            }
            Self::V5(e) => {
                e.options.set_transport(transport);
                e.clean();
            }
        }
    }

    /// Drives the connection to its next event (connecting first when it is down).
    pub async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match self {
            Self::V4(e) => {
                use rumqttc::{Event, Packet};
                let event = e.poll().await.map_err(|e| LinkError { text: e.to_string(), disconnect: None })?;
                Ok(match event {
                    Event::Incoming(Packet::ConnAck(_)) => LinkEvent::Connected,
                    Event::Incoming(Packet::Publish(p)) => LinkEvent::Message(Box::new(Incoming {
                        topic: p.topic,
                        payload: p.payload,
                        retain: p.retain,
                        properties: None,
                    })),
                    Event::Incoming(Packet::PubAck(a)) => LinkEvent::PubAck(a.pkid),
                    Event::Incoming(Packet::SubAck(a)) => LinkEvent::SubAck {
                        refused: a
                            .return_codes
                            .iter()
                            .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                            .count(),
                    },
                    Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => LinkEvent::PublishWritten(pkid),
                    _ => LinkEvent::Other,
                })
            }
            Self::V5(e) => {
                use rumqttc::v5::{ConnectionError, Event, StateError};
                let event = e.poll().await.map_err(|e| {
                    let disconnect = match &e {
                        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
                            Some((*reason_code as u8, format!("{reason_code:?}")))
                        }
                        _ => None,
                    };
                    LinkError { text: e.to_string(), disconnect }
                })?;
                Ok(match event {
                    Event::Incoming(m5::Packet::ConnAck(_)) => LinkEvent::Connected,
                    Event::Incoming(m5::Packet::Publish(p)) => match String::from_utf8(p.topic.to_vec()) {
                        Ok(topic) => LinkEvent::Message(Box::new(Incoming {
                            topic,
                            payload: p.payload,
                            retain: p.retain,
                            properties: p.properties,
                        })),
                        Err(_) => {
                            tracing::warn!("dropped a message from IoT Core whose topic is not UTF-8");
                            LinkEvent::Other
                        }
                    },
                    Event::Incoming(m5::Packet::PubAck(a)) => LinkEvent::PubAck(a.pkid),
                    Event::Incoming(m5::Packet::SubAck(a)) => LinkEvent::SubAck {
                        refused: a
                            .return_codes
                            .iter()
                            .filter(|c| !matches!(c, m5::SubscribeReasonCode::Success(_)))
                            .count(),
                    },
                    Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => LinkEvent::PublishWritten(pkid),
                    _ => LinkEvent::Other,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> PublishProperties {
        PublishProperties {
            retain: Some(false),
            user_properties: Some(vec![
                UserProperty { key: "k".into(), value: "v".into() },
                UserProperty { key: "k".into(), value: "second".into() },
            ]),
            message_expiry_interval_seconds: Some(30),
            correlation_data: Some(b"\x00\x01corr".to_vec().into()),
            response_topic: Some("reply/to/me".into()),
            payload_format: Some(PayloadFormat::Utf8),
            content_type: Some("application/json".into()),
        }
    }

    #[test]
    fn every_ipc_member_becomes_its_publish_property_and_comes_back() {
        let out = to_mqtt5(&full(), b"{}").unwrap().unwrap();
        assert_eq!(out.payload_format_indicator, Some(1));
        assert_eq!(out.message_expiry_interval, Some(30));
        assert_eq!(out.response_topic.as_deref(), Some("reply/to/me"));
        assert_eq!(out.correlation_data.as_deref(), Some(&b"\x00\x01corr"[..]));
        assert_eq!(out.content_type.as_deref(), Some("application/json"));
        // Order and repeated keys are kept, as MQTT 5 requires.
        assert_eq!(out.user_properties, [("k".into(), "v".into()), ("k".into(), "second".into())]);
        assert_eq!(out.topic_alias, None);
        assert!(out.subscription_identifiers.is_empty());
        assert_eq!(from_mqtt5(false, Some(&out)), full());
    }

    #[test]
    fn no_mqtt5_members_means_no_properties_and_retain_is_always_reported() {
        let only_retain = PublishProperties { retain: Some(true), ..Default::default() };
        assert_eq!(to_mqtt5(&only_retain, b"x").unwrap(), None);
        assert_eq!(
            to_mqtt5(&PublishProperties { user_properties: Some(vec![]), ..Default::default() }, b"").unwrap(),
            None
        );
        assert_eq!(from_mqtt5(true, None), only_retain);
        let bytes = OutProperties { payload_format_indicator: Some(0), ..Default::default() };
        assert_eq!(from_mqtt5(false, Some(&bytes)).payload_format, Some(PayloadFormat::Bytes));
        // An indicator MQTT 5 does not define is not passed on.
        let odd = OutProperties { payload_format_indicator: Some(7), ..Default::default() };
        assert_eq!(from_mqtt5(false, Some(&odd)).payload_format, None);
    }

    #[test]
    fn bad_members_are_refused_with_the_reason() {
        let utf8 = PublishProperties { payload_format: Some(PayloadFormat::Utf8), ..Default::default() };
        assert!(to_mqtt5(&utf8, b"\xff\xfe").unwrap_err().contains("not valid UTF-8"));
        let binary = PublishProperties { payload_format: Some(PayloadFormat::Bytes), ..Default::default() };
        assert!(to_mqtt5(&binary, b"\xff\xfe").is_ok());

        let wildcard = PublishProperties { response_topic: Some("a/+/b".into()), ..Default::default() };
        assert!(to_mqtt5(&wildcard, b"").unwrap_err().contains("responseTopic"));

        let expiry = PublishProperties { message_expiry_interval_seconds: Some(1 << 40), ..Default::default() };
        assert!(to_mqtt5(&expiry, b"").unwrap_err().contains("messageExpiryIntervalSeconds"));

        let big = "x".repeat(crate::core::services::MAX_USER_PROPERTIES_BYTES);
        let users = PublishProperties {
            user_properties: Some(vec![UserProperty { key: "k".into(), value: big }]),
            ..Default::default()
        };
        assert!(to_mqtt5(&users, b"").unwrap_err().contains("userProperties"));

        let nul = PublishProperties { content_type: Some("a\0b".into()), ..Default::default() };
        assert!(to_mqtt5(&nul, b"").unwrap_err().contains("null character"));
        let nul_key = PublishProperties {
            user_properties: Some(vec![UserProperty { key: "\0".into(), value: "v".into() }]),
            ..Default::default()
        };
        assert!(to_mqtt5(&nul_key, b"").is_err());

        let corr = PublishProperties { correlation_data: Some(vec![0; 70_000].into()), ..Default::default() };
        assert!(to_mqtt5(&corr, b"").unwrap_err().contains("correlationData"));
    }

    #[test]
    fn the_version_reads_as_the_nucleus_writes_it() {
        assert_eq!("mqtt5".parse::<MqttVersion>(), Ok(MqttVersion::Mqtt5));
        assert_eq!("MQTT3".parse::<MqttVersion>(), Ok(MqttVersion::Mqtt311));
        assert!("mqtt4".parse::<MqttVersion>().is_err());
        assert_eq!(MqttVersion::default(), MqttVersion::Mqtt5);
        assert_eq!(MqttVersion::Mqtt311.to_string(), "mqtt3");
    }
}
