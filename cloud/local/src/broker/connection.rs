//! One task per connection: TLS handshake, CONNECT, then a loop that reads
//! packets, writes what is due in one buffered write per turn, and watches
//! the keep-alive and the kick token. Decisions come from [`super::rules`];
//! shared state from [`super::state`].
//!
//! Both protocol versions go through the same loop: packets of MQTT 3.1.1 and
//! MQTT 5 are turned into one [`Inbound`] form, handled once, and answered in
//! the connection's [`Protocol`] (reason codes, properties and the server's
//! DISCONNECT only exist in MQTT 5).
//!
//! Backpressure: a QoS 1 PUBLISH that finds a subscriber's queue full is held
//! (no PUBACK, no further reading, keep-alive paused) until
//! [`state::wait_for_room`] completes. Meanwhile the connection still writes
//! to its own client and keeps taking its own deliveries (into its local
//! backlog, up to `outgoing_queue_len` more), so two clients publishing to each
//! other cannot wait on each other forever.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cloud_api::policy::Action;
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::mqttbytes::v5::{self as v5, ConnAckProperties, DisconnectReasonCode, Packet as Packet5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::codec::{self, Decoded, Decoded5, FirstPacket};
use super::queue::{Delivery, Inflight, Message, MessageProps};
use super::rules::{self, ConnectRefusal, Violation};
use super::state::{self, Attached, ConnCtl, KickReason, Shared};
use crate::bus::Publisher;
use crate::events::{self, DisconnectReason, Presence};
use crate::iot_metrics::BrokerMetric;
use crate::registry::{AuthRequest, CertificateStatus, Registry};

/// CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
mod code {
    pub const ACCEPTED: u8 = 0;
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 1;
    pub const SERVER_UNAVAILABLE: u8 = 3;
}

/// MQTT 5 reason codes the connection sends (MQTT 5 §2.4).
mod reason {
    pub const SUCCESS: u8 = 0x00;
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    pub const MALFORMED_PACKET: u8 = 0x81;
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    pub const NOT_AUTHORIZED: u8 = 0x87;
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
}

/// Highest Topic Alias a client may use (CONNACK Topic Alias Maximum).
pub(crate) const TOPIC_ALIAS_MAXIMUM: u16 = 8;
/// Maximum Packet Size announced in CONNACK: the largest frame the broker reads.
pub(crate) const MAX_PACKET_SIZE: u32 = (codec::MAX_REMAINING_LENGTH + 5) as u32;

/// The MQTT version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.
    V5,
}

/// Most bytes gathered into one write before flushing.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// A client that does not take our bytes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cached authorization decision is reused.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most cached decisions per action per connection.
const AUTH_CACHE_ENTRIES: usize = 256;

/// Why a connection ended.
#[derive(Debug)]
enum Exit {
    /// The client sent DISCONNECT: the will is discarded.
    Graceful,
    /// The client sent MQTT 5 DISCONNECT 0x04: the will is published.
    GracefulWithWill,
    /// The client went away (EOF or I/O error).
    Lost,
    /// Nothing received within 1.5 × keep-alive.
    KeepAliveTimeout,
    /// The client broke a rule.
    Violation(Violation),
    /// Our writes did not drain.
    WriteStalled,
    /// Closed by the broker.
    Kicked(KickReason),
}

impl Exit {
    /// MQTT: the will is published when the connection ends without DISCONNECT.
    /// Not when the broker closes it because the certificate was revoked or it is stopping.
    fn publishes_will(&self) -> bool {
        !matches!(self, Exit::Graceful | Exit::Kicked(KickReason::CertificateRevoked | KickReason::Shutdown))
    }

    /// The `disconnectReason` of the lifecycle event ("Lifecycle events").
    fn lifecycle_reason(&self) -> DisconnectReason {
        match self {
            Exit::Graceful | Exit::GracefulWithWill => DisconnectReason::ClientInitiatedDisconnect,
            Exit::Lost | Exit::WriteStalled => DisconnectReason::ConnectionLost,
            Exit::KeepAliveTimeout => DisconnectReason::MqttKeepAliveTimeout,
            // MQTT 3.1.1 has no negative PUBACK: a denied publish closes the connection.
            Exit::Violation(Violation::PublishDenied(_) | Violation::RetainDenied(_)) => DisconnectReason::AuthError,
            Exit::Violation(_) => DisconnectReason::ClientError,
            Exit::Kicked(KickReason::TakenOver) => DisconnectReason::DuplicateClientId,
            Exit::Kicked(KickReason::CertificateRevoked) => DisconnectReason::AuthError,
            Exit::Kicked(KickReason::Shutdown | KickReason::None) => DisconnectReason::ServerInitiatedDisconnect,
        }
    }

    /// The reason code of the DISCONNECT an MQTT 5 client gets, if the broker
    /// is the one closing and the stream may still be written.
    fn disconnect_reason(&self) -> Option<u8> {
        match self {
            Exit::Violation(v) => Some(v.disconnect_reason()),
            Exit::KeepAliveTimeout => Some(reason::KEEP_ALIVE_TIMEOUT),
            Exit::Kicked(KickReason::TakenOver) => Some(reason::SESSION_TAKEN_OVER),
            Exit::Kicked(KickReason::CertificateRevoked) => Some(reason::NOT_AUTHORIZED),
            Exit::Kicked(KickReason::Shutdown) => Some(reason::SERVER_SHUTTING_DOWN),
            Exit::Graceful
            | Exit::GracefulWithWill
            | Exit::Lost
            | Exit::WriteStalled
            | Exit::Kicked(KickReason::None) => None,
        }
    }
}

/// A CONNECT of either version, as the broker uses it.
#[derive(Debug)]
struct ConnectInfo {
    protocol: Protocol,
    client_id: String,
    keep_alive: u16,
    clean_start: bool,
    /// MQTT 5 Session Expiry Interval (absent: 0).
    session_expiry: u32,
    /// MQTT 5 Receive Maximum of the client.
    receive_maximum: Option<u16>,
    /// MQTT 5 Maximum Packet Size of the client.
    max_packet_size: Option<u32>,
    /// MQTT 5 Authentication Method present (enhanced authentication).
    auth_method: bool,
    will: Option<Message>,
}

impl ConnectInfo {
    fn from_v4(c: rumqttc::mqttbytes::v4::Connect) -> Self {
        let will = c.last_will.map(|w| Message::new(w.topic, w.message, w.qos as u8, w.retain));
        ConnectInfo {
            protocol: Protocol::V4,
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            clean_start: c.clean_session,
            session_expiry: 0,
            receive_maximum: None,
            max_packet_size: None,
            auth_method: false,
            will,
        }
    }

    fn from_v5(c: v5::Connect, will: Option<v5::LastWill>) -> Self {
        let props = c.properties.unwrap_or_default();
        let will = will.map(|w| {
            let topic = String::from_utf8_lossy(&w.topic).into_owned();
            let props = w.properties.map(|p| {
                Arc::new(MessageProps {
                    payload_format_indicator: p.payload_format_indicator,
                    expires_at: p.message_expiry_interval.map(expiry_instant),
                    response_topic: p.response_topic,
                    correlation_data: p.correlation_data,
                    user_properties: p.user_properties,
                    content_type: p.content_type,
                })
            });
            Message { props, ..Message::new(topic, w.message, w.qos as u8, w.retain) }
        });
        ConnectInfo {
            protocol: Protocol::V5,
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            clean_start: c.clean_start,
            session_expiry: props.session_expiry_interval.unwrap_or(0),
            receive_maximum: props.receive_maximum,
            max_packet_size: props.max_packet_size,
            auth_method: props.authentication_method.is_some(),
            will,
        }
    }
}

fn expiry_instant(secs: u32) -> Instant {
    Instant::now() + Duration::from_secs(u64::from(secs))
}

/// Why the first packet did not give a usable CONNECT.
#[derive(Debug)]
enum Refused {
    /// Answer with this CONNACK code, in this version's format.
    Connack(Protocol, u8),
    /// Close without CONNACK.
    Close,
}

fn write_connack(out: &mut BytesMut, protocol: Protocol, session_present: bool, code: u8) {
    match protocol {
        Protocol::V4 => codec::put_connack(out, session_present, code),
        Protocol::V5 => codec::put_connack5(out, session_present, code, None),
    }
}

/// Every broker metric's `Protocol` dimension (the HTTP data plane counts its own).
const MQTT: crate::iot_metrics::Protocol = crate::iot_metrics::Protocol::Mqtt;

/// Whether a failed TLS handshake is the client certificate's refusal (an authentication
/// failure), rather than a client that went away or does not speak TLS.
fn is_certificate_refusal(e: &std::io::Error) -> bool {
    let rustls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    matches!(rustls_error, Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented))
}

/// Runs one connection to completion. Never panics on network input.
pub(crate) async fn run(
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: TlsAcceptor,
    ctl: Arc<ConnCtl>,
) {
    let deadline = tokio::time::Instant::now() + shared.config.connect_timeout;
    let stream = tokio::select! {
        r = tokio::time::timeout_at(deadline, tls.accept(tcp)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                if is_certificate_refusal(&e) {
                    shared.config.metrics.count(MQTT, BrokerMetric::ConnectionAuthNError);
                }
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
        _ = ctl.token.cancelled() => return,
    };
    let Some(der) = stream.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
        // The TLS configuration requires a client certificate; be defensive anyway.
        return;
    };
    let certificate_id: Arc<str> = crate::ca::certificate_id(der).into();
    shared.register_certificate(&certificate_id, &ctl);
    let conn = Handshake { shared: &shared, registry: &registry, certificate_id: &certificate_id, ctl: &ctl, peer };
    conn.run(stream, deadline).await;
    shared.unregister_certificate(&certificate_id, ctl.id);
}

struct Handshake<'a> {
    shared: &'a Arc<Shared>,
    registry: &'a Arc<Registry>,
    certificate_id: &'a Arc<str>,
    ctl: &'a Arc<ConnCtl>,
    peer: SocketAddr,
}

impl Handshake<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(self, mut stream: S, deadline: tokio::time::Instant) {
        let mut inbuf = BytesMut::with_capacity(1024);
        let connect = tokio::select! {
            r = tokio::time::timeout_at(deadline, read_connect(&mut stream, &mut inbuf)) => match r {
                Ok(Ok(c)) => c,
                Ok(Err(Refused::Connack(protocol, code))) => {
                    self.shared.config.metrics.count(MQTT, BrokerMetric::ConnectClientError);
                    let mut out = BytesMut::new();
                    write_connack(&mut out, protocol, false, code);
                    let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut stream, &out)).await;
                    return;
                }
                Ok(Err(Refused::Close)) => {
                    self.shared.config.metrics.count(MQTT, BrokerMetric::ConnectClientError);
                    return;
                }
                Err(_) => {
                    tracing::debug!("no CONNECT in time");
                    return;
                }
            },
            _ = self.ctl.token.cancelled() => return,
        };
        let mut connect = connect;
        // MQTT 5 lets a client leave its id empty: IoT Core then assigns one and returns it in
        // CONNACK's Assigned Client Identifier (MQTT 5 §3.1.3.1); the policy is checked on it.
        let assigned = (connect.protocol == Protocol::V5 && connect.client_id.is_empty()).then(|| {
            connect.client_id = format!("assigned-{}", uuid::Uuid::new_v4().simple());
            connect.client_id.clone()
        });
        let client_id = connect.client_id.clone();
        let protocol = connect.protocol;
        if let Err(refusal) = self.check_connect(&connect) {
            self.shared.config.metrics.count(MQTT, refusal.metric());
            let code = match protocol {
                Protocol::V4 => refusal.code_v4(),
                Protocol::V5 => Some(refusal.code_v5()),
            };
            tracing::debug!(%client_id, certificate_id = %self.certificate_id, ?refusal, ?code, "CONNECT refused");
            if let Some(code) = code {
                let mut out = BytesMut::new();
                write_connack(&mut out, protocol, false, code);
                let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut stream, &out)).await;
            }
            return;
        }

        // Session expiry: 3.1.1's persistent session lasts the broker's expiry;
        // MQTT 5 asks for its own, capped at the broker's (announced in CONNACK if lowered).
        let max_expiry = self.shared.config.session_expiry_secs;
        let (expiry, lowered_expiry) = match protocol {
            Protocol::V4 if connect.clean_start => (0, None),
            Protocol::V4 => (max_expiry, None),
            Protocol::V5 => {
                let asked = u64::from(connect.session_expiry);
                if asked > max_expiry { (max_expiry, Some(max_expiry)) } else { (asked, None) }
            }
        };
        let (tx, rx) = mpsc::channel(self.shared.config.outgoing_queue_len.max(1));
        let attached = tokio::select! {
            a = self.shared.attach(&client_id, connect.clean_start, Duration::from_secs(expiry), self.ctl.clone(), tx) => a,
            _ = self.ctl.token.cancelled() => None,
        };
        let Some(mut attached) = attached else {
            let mut out = BytesMut::new();
            let code = if protocol == Protocol::V5 { reason::SERVER_UNAVAILABLE } else { code::SERVER_UNAVAILABLE };
            write_connack(&mut out, protocol, false, code);
            let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut stream, &out)).await;
            return;
        };
        tracing::debug!(%client_id, ?protocol, session_present = attached.session_present, "connected");
        let presence = Presence {
            client_id: client_id.clone(),
            session_identifier: uuid::Uuid::new_v4().to_string(),
            principal_identifier: self.certificate_id.to_string(),
            ip_address: self.peer.ip().to_string(),
            version_number: self.shared.next_presence_version(),
        };
        self.shared.publish_event(events::connected(&presence, events::now_millis()));

        self.shared.config.metrics.count(MQTT, BrokerMetric::ConnectSuccess);
        let mut outbuf = BytesMut::with_capacity(256);
        let granted_keep_alive = rules::granted_keep_alive(connect.keep_alive);
        match protocol {
            Protocol::V4 => codec::put_connack(&mut outbuf, attached.session_present, code::ACCEPTED),
            Protocol::V5 => {
                let props = connack_properties(
                    lowered_expiry.map(|e| u32::try_from(e).unwrap_or(u32::MAX)),
                    (granted_keep_alive != connect.keep_alive).then_some(granted_keep_alive),
                    assigned,
                );
                codec::put_connack5(&mut outbuf, attached.session_present, reason::SUCCESS, Some(props));
            }
        }
        let window = match connect.receive_maximum {
            Some(n) => usize::from(n).min(cloud_api::limits::MAX_INFLIGHT_QOS1),
            None => cloud_api::limits::MAX_INFLIGHT_QOS1,
        };
        let backlog = std::mem::take(&mut attached.backlog);
        let mut conn = Connection {
            protocol,
            aliases: Vec::new(),
            client_max_packet: connect.max_packet_size.map(|m| m as usize),
            expiry_was_zero: expiry == 0,
            shared: self.shared,
            registry: self.registry,
            ctl: self.ctl,
            attached,
            publisher: Publisher { client_id: client_id.clone(), certificate_id: self.certificate_id.to_string() },
            stream,
            inbuf,
            outbuf,
            rx,
            backlog,
            inflight: Inflight::new(window),
            publish_cache: AuthCache::default(),
            receive_cache: AuthCache::default(),
            resource: String::new(),
            blocked: None,
            presence,
        };
        let exit = conn.serve(rules::silence_limit(connect.keep_alive)).await;
        let exit = match exit {
            Exit::Kicked(_) => Exit::Kicked(self.ctl.reason()),
            other => other,
        };
        if protocol == Protocol::V5
            && let Some(code) = exit.disconnect_reason()
        {
            let mut out = BytesMut::new();
            codec::put_disconnect5(&mut out, code);
            let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut conn.stream, &out)).await;
        }
        match &exit {
            Exit::Violation(v) => tracing::debug!(%client_id, violation = %v, "disconnected: client error"),
            other => tracing::debug!(%client_id, reason = ?other, "disconnected"),
        }
        // Publish the will before giving the session up, so that whatever the
        // next connection with this client id does comes after it.
        if exit.publishes_will()
            && let Some(will) = connect.will
        {
            let msg = Message { qos: will.qos.min(1), ..will };
            let blocked = self.shared.publish(msg, Some(&conn.publisher));
            if !blocked.is_empty() {
                // Nobody is waiting for a PUBACK: wait for room without holding the session.
                tokio::spawn(state::wait_for_room(self.shared.clone(), blocked));
            }
        }
        // Before the session is given up, so the next connection's `connected` comes after it.
        let event = events::disconnected(&conn.presence, exit.lifecycle_reason(), events::now_millis());
        self.shared.publish_event(event);
        conn.finish();
    }

    /// CONNECT checks in IoT Core's order.
    fn check_connect(&self, c: &ConnectInfo) -> Result<(), ConnectRefusal> {
        rules::check_client_id(&c.client_id)?;
        if c.auth_method {
            return Err(ConnectRefusal::BadAuthenticationMethod);
        }
        if self.registry.certificate_status(self.certificate_id) != Some(CertificateStatus::Active) {
            return Err(ConnectRefusal::NotAuthenticated);
        }
        let mut res = String::with_capacity(7 + c.client_id.len());
        if !self.allowed(&c.client_id, Action::Connect, rules::resource(&mut res, "client/", &c.client_id)) {
            return Err(ConnectRefusal::NotAuthorized);
        }
        if let Some(will) = &c.will {
            let checked = rules::check_publish(&will.topic, will.payload.len(), will.qos, will.retain, |a, t| {
                let mut res = String::new();
                self.allowed(&c.client_id, a, rules::resource(&mut res, "topic/", t))
            });
            match checked {
                Ok(()) => {}
                Err(Violation::PublishDenied(_) | Violation::RetainDenied(_)) => {
                    return Err(ConnectRefusal::NotAuthorized);
                }
                // A QoS 2 will or an invalid will topic: IoT Core closes a 3.1.1 connection.
                Err(Violation::Qos2) => return Err(ConnectRefusal::QosNotSupported),
                Err(_) => return Err(ConnectRefusal::TopicNameInvalid),
            }
        }
        Ok(())
    }

    fn allowed(&self, client_id: &str, action: Action, resource: &str) -> bool {
        let req = AuthRequest { certificate_id: self.certificate_id, client_id, action, resource };
        self.registry.authorize(&req).is_allowed()
    }
}

/// Reads the first packet, which must be a CONNECT for MQTT 3.1.1 or 5.
async fn read_connect<S: AsyncRead + Unpin>(stream: &mut S, inbuf: &mut BytesMut) -> Result<ConnectInfo, Refused> {
    loop {
        match codec::classify_first(inbuf) {
            FirstPacket::OtherVersion => {
                return Err(Refused::Connack(Protocol::V4, code::UNACCEPTABLE_PROTOCOL_VERSION));
            }
            FirstPacket::NewerVersion => {
                return Err(Refused::Connack(Protocol::V5, reason::UNSUPPORTED_PROTOCOL_VERSION));
            }
            FirstPacket::NotConnect => return Err(Refused::Close),
            FirstPacket::Mqtt311 => match codec::decode(inbuf) {
                Decoded::Packet(Packet::Connect(c)) => return Ok(ConnectInfo::from_v4(c)),
                Decoded::Packet(_) | Decoded::Invalid(_) => return Err(Refused::Close),
                Decoded::Incomplete => {}
            },
            FirstPacket::Mqtt5 => match codec::decode5(inbuf) {
                Decoded5::Packet(p) => match *p {
                    Packet5::Connect(c, will, _login) => return Ok(ConnectInfo::from_v5(c, will)),
                    _ => return Err(Refused::Close),
                },
                Decoded5::Invalid(_) | Decoded5::TooLarge => {
                    return Err(Refused::Connack(Protocol::V5, reason::MALFORMED_PACKET));
                }
                Decoded5::Incomplete => {}
            },
            FirstPacket::Incomplete => {}
        }
        inbuf.reserve(1024);
        match stream.read_buf(inbuf).await {
            Ok(0) | Err(_) => return Err(Refused::Close),
            Ok(_) => {}
        }
    }
}

/// The CONNACK properties IoT Core announces to MQTT 5 clients.
fn connack_properties(
    session_expiry: Option<u32>,
    server_keep_alive: Option<u16>,
    assigned_client_identifier: Option<String>,
) -> ConnAckProperties {
    ConnAckProperties {
        session_expiry_interval: session_expiry,
        receive_max: Some(cloud_api::limits::MAX_INFLIGHT_QOS1 as u16),
        max_qos: Some(1),
        retain_available: Some(1),
        max_packet_size: Some(MAX_PACKET_SIZE),
        assigned_client_identifier,
        topic_alias_max: Some(TOPIC_ALIAS_MAXIMUM),
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: Some(1),
        subscription_identifiers_available: Some(0),
        shared_subscription_available: Some(1),
        server_keep_alive,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

/// A packet from the client, whichever version it came in.
#[derive(Debug)]
enum Inbound {
    Publish {
        topic: String,
        payload: Bytes,
        qos: u8,
        retain: bool,
        pkid: u16,
        alias: Option<u16>,
        props: Option<MessageProps>,
    },
    PubAck(u16),
    /// Filters with their options byte and MQTT 5 Retain Handling (0 for 3.1.1).
    Subscribe {
        pkid: u16,
        filters: Vec<(String, u8, u8)>,
        subscription_id: bool,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect {
        with_will: bool,
        session_expiry: Option<u32>,
    },
    Qos2,
    Unexpected(&'static str),
}

impl Inbound {
    fn from_v4(p: Packet) -> Self {
        match p {
            Packet::Publish(p) => Inbound::Publish {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos as u8,
                retain: p.retain,
                pkid: p.pkid,
                alias: None,
                props: None,
            },
            Packet::PubAck(a) => Inbound::PubAck(a.pkid),
            Packet::Subscribe(s) => Inbound::Subscribe {
                pkid: s.pkid,
                filters: s.filters.into_iter().map(|f| (f.path, f.qos as u8, 0)).collect(),
                subscription_id: false,
            },
            Packet::Unsubscribe(u) => Inbound::Unsubscribe { pkid: u.pkid, filters: u.topics },
            Packet::PingReq => Inbound::PingReq,
            Packet::Disconnect => Inbound::Disconnect { with_will: false, session_expiry: None },
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => Inbound::Qos2,
            Packet::Connect(_) => Inbound::Unexpected("second CONNECT"),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Inbound::Unexpected("server-only packet from client")
            }
        }
    }

    fn from_v5(p: Packet5) -> Self {
        match p {
            Packet5::Publish(p) => {
                let (alias, props) = match p.properties {
                    Some(pp) => (
                        pp.topic_alias,
                        Some(MessageProps {
                            payload_format_indicator: pp.payload_format_indicator,
                            expires_at: pp.message_expiry_interval.map(expiry_instant),
                            response_topic: pp.response_topic,
                            correlation_data: pp.correlation_data,
                            user_properties: pp.user_properties,
                            content_type: pp.content_type,
                        }),
                    ),
                    None => (None, None),
                };
                Inbound::Publish {
                    // UTF-8 was checked by `codec::decode5`.
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload,
                    qos: p.qos as u8,
                    retain: p.retain,
                    pkid: p.pkid,
                    alias,
                    props,
                }
            }
            Packet5::PubAck(a) => Inbound::PubAck(a.pkid),
            Packet5::Subscribe(s) => Inbound::Subscribe {
                pkid: s.pkid,
                subscription_id: s.properties.is_some_and(|p| p.id.is_some()),
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| {
                        let opts = f.qos as u8
                            | if f.nolocal { rules::OPT_NO_LOCAL } else { 0 }
                            | if f.preserve_retain { rules::OPT_RETAIN_AS_PUBLISHED } else { 0 };
                        let handling = match f.retain_forward_rule {
                            v5::RetainForwardRule::OnEverySubscribe => 0,
                            v5::RetainForwardRule::OnNewSubscribe => 1,
                            v5::RetainForwardRule::Never => 2,
                        };
                        (f.path, opts, handling)
                    })
                    .collect(),
            },
            Packet5::Unsubscribe(u) => Inbound::Unsubscribe { pkid: u.pkid, filters: u.filters },
            Packet5::PingReq(_) => Inbound::PingReq,
            Packet5::Disconnect(d) => Inbound::Disconnect {
                with_will: d.reason_code == DisconnectReasonCode::DisconnectWithWillMessage,
                session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
            },
            Packet5::PubRec(_) | Packet5::PubRel(_) | Packet5::PubComp(_) => Inbound::Qos2,
            Packet5::Connect(..) => Inbound::Unexpected("second CONNECT"),
            Packet5::Auth(_) => Inbound::Unexpected("AUTH without enhanced authentication"),
            Packet5::ConnAck(_) | Packet5::SubAck(_) | Packet5::UnsubAck(_) | Packet5::PingResp(_) => {
                Inbound::Unexpected("server-only packet from client")
            }
        }
    }
}

async fn write_out<S: AsyncWrite + Unpin>(stream: &mut S, out: &[u8]) -> std::io::Result<()> {
    stream.write_all(out).await?;
    stream.flush().await
}

/// Recently made authorization decisions by topic, so a steady stream of
/// messages on a few topics does not evaluate policies for every message.
#[derive(Debug, Default)]
struct AuthCache {
    entries: HashMap<String, (bool, Instant)>,
}

impl AuthCache {
    fn get(&self, topic: &str, now: Instant) -> Option<bool> {
        self.entries.get(topic).filter(|(_, at)| now.duration_since(*at) < AUTH_CACHE_TTL).map(|(ok, _)| *ok)
    }

    fn put(&mut self, topic: &str, ok: bool, now: Instant) {
        if self.entries.len() >= AUTH_CACHE_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(topic.to_owned(), (ok, now));
    }
}

/// A PUBLISH from this client waiting for subscribers to make room.
type Waiting = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What woke the connection loop.
enum Event {
    Read(std::io::Result<usize>),
    Unblocked,
    Outgoing(Option<Delivery>),
    Pending,
    Silent,
    Kicked,
}

struct Connection<'a, S> {
    protocol: Protocol,
    /// MQTT 5 inbound Topic Aliases (index alias − 1).
    aliases: Vec<Option<String>>,
    /// MQTT 5 Maximum Packet Size of the client: larger PUBLISHes are not sent to it.
    client_max_packet: Option<usize>,
    /// The CONNECT asked for no session expiry (a DISCONNECT may then not ask for one).
    expiry_was_zero: bool,
    shared: &'a Arc<Shared>,
    registry: &'a Arc<Registry>,
    ctl: &'a Arc<ConnCtl>,
    attached: Attached,
    publisher: Publisher,
    stream: S,
    inbuf: BytesMut,
    outbuf: BytesMut,
    rx: mpsc::Receiver<Delivery>,
    /// Deliveries taken from the session or the channel and not yet written.
    backlog: VecDeque<Delivery>,
    inflight: Inflight<Delivery>,
    publish_cache: AuthCache,
    receive_cache: AuthCache,
    /// Reused buffer for `topic/…` resource names.
    resource: String,
    /// Set while a PUBLISH of this client waits for a subscriber's queue to
    /// have room, with the packet id to acknowledge once it has (QoS 1).
    /// Meanwhile nothing more is read from this client.
    blocked: Option<(Waiting, Option<u16>)>,
    /// This connection, as its lifecycle and subscription events describe it.
    presence: Presence,
}

/// Completes when the blocked PUBLISH is fully routed; never if there is none.
async fn unblocked(blocked: Option<&mut (Waiting, Option<u16>)>) {
    match blocked {
        Some((waiting, _)) => waiting.await,
        None => std::future::pending().await,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<'_, S> {
    async fn serve(&mut self, silence_limit: Duration) -> Exit {
        let mut silence = pin!(tokio::time::sleep(silence_limit));
        // Packets that came in the same read as the CONNECT are handled now, not after the next read.
        if let Err(exit) = self.on_input() {
            let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut self.stream, &self.outbuf)).await;
            return exit;
        }
        let mut pending = self.pump();
        loop {
            if !self.outbuf.is_empty() {
                let write = tokio::time::timeout(WRITE_TIMEOUT, write_out(&mut self.stream, &self.outbuf));
                tokio::select! {
                    r = write => match r {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return Exit::Lost,
                        Err(_) => return Exit::WriteStalled,
                    },
                    _ = self.ctl.token.cancelled() => return Exit::Kicked(KickReason::None),
                }
                self.outbuf.clear();
            }
            if self.inbuf.capacity() - self.inbuf.len() < 512 {
                self.inbuf.reserve(4096);
            }
            let reading = self.blocked.is_none();
            // While blocked, keep taking our own deliveries (up to a bound) so that
            // publishers waiting for room in our queue can go on, even if our client
            // is itself blocked and its PUBACKs wait unread: no waiting cycles.
            let can_take = (self.inflight.has_room() && self.backlog.is_empty())
                || (!reading && self.backlog.len() < self.shared.config.outgoing_queue_len.max(1));
            let event = tokio::select! {
                biased;
                _ = self.ctl.token.cancelled() => Event::Kicked,
                _ = unblocked(self.blocked.as_mut()), if !reading => Event::Unblocked,
                r = self.stream.read_buf(&mut self.inbuf), if reading => Event::Read(r),
                d = self.rx.recv(), if can_take => Event::Outgoing(d),
                _ = std::future::ready(()), if pending => Event::Pending,
                _ = &mut silence, if reading => Event::Silent,
            };
            match event {
                Event::Kicked => return Exit::Kicked(KickReason::None),
                Event::Silent => return Exit::KeepAliveTimeout,
                Event::Read(Ok(0)) | Event::Read(Err(_)) => return Exit::Lost,
                Event::Read(Ok(_)) | Event::Unblocked => {
                    // Unblocked: every subscriber has the message; acknowledge it and
                    // go on with the packets already buffered, then read again.
                    if let Event::Unblocked = event
                        && let Some((_, Some(pkid))) = self.blocked.take()
                    {
                        self.put_puback(pkid, reason::SUCCESS);
                    }
                    silence.as_mut().reset(tokio::time::Instant::now() + silence_limit);
                    if let Err(exit) = self.on_input() {
                        // Flush what was answered before the violation (best effort), then close.
                        let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut self.stream, &self.outbuf))
                            .await;
                        return exit;
                    }
                }
                Event::Outgoing(Some(d)) => self.backlog.push_back(d),
                // The sender lives in the session while we are attached; it is only
                // gone if the session was handed to someone else.
                Event::Outgoing(None) => return Exit::Kicked(KickReason::None),
                Event::Pending => {}
            }
            pending = self.pump();
        }
    }

    /// Decodes and handles every complete packet in the input buffer, or
    /// stops after a PUBLISH that has to wait for a subscriber.
    fn on_input(&mut self) -> Result<(), Exit> {
        loop {
            if self.blocked.is_some() {
                return Ok(());
            }
            let packet = match self.protocol {
                Protocol::V4 => match codec::decode(&mut self.inbuf) {
                    Decoded::Incomplete => return Ok(()),
                    Decoded::Invalid(why) => return Err(Exit::Violation(Violation::Protocol(why))),
                    Decoded::Packet(p) => Inbound::from_v4(p),
                },
                Protocol::V5 => match codec::decode5(&mut self.inbuf) {
                    Decoded5::Incomplete => return Ok(()),
                    Decoded5::Invalid(why) => return Err(Exit::Violation(Violation::Malformed(why))),
                    Decoded5::TooLarge => return Err(Exit::Violation(Violation::PacketTooLarge)),
                    Decoded5::Packet(p) => Inbound::from_v5(*p),
                },
            };
            if let Inbound::Disconnect { with_will, session_expiry } = packet {
                if let Some(secs) = session_expiry {
                    if secs > 0 && self.expiry_was_zero {
                        // MQTT 5 §3.14.2.2.2: a Protocol Error; the session still ends.
                        return Err(Exit::Violation(Violation::Protocol("session expiry set on DISCONNECT after 0")));
                    }
                    let secs = u64::from(secs).min(self.shared.config.session_expiry_secs);
                    self.shared.set_expiry(&self.attached.session, Duration::from_secs(secs));
                }
                return Err(if with_will { Exit::GracefulWithWill } else { Exit::Graceful });
            }
            self.on_packet(packet).map_err(Exit::Violation)?;
        }
    }

    fn put_puback(&mut self, pkid: u16, code: u8) {
        match self.protocol {
            Protocol::V4 => codec::put_puback(&mut self.outbuf, pkid),
            Protocol::V5 => codec::put_puback5(&mut self.outbuf, pkid, code),
        }
    }

    /// Resolves an MQTT 5 Topic Alias: a topic with an alias (re)defines it;
    /// an empty topic uses it.
    fn resolve_alias(&mut self, topic: String, alias: Option<u16>) -> Result<String, Violation> {
        let Some(alias) = alias else { return Ok(topic) };
        if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
            return Err(Violation::TopicAliasInvalid(alias));
        }
        let slot = usize::from(alias - 1);
        if self.aliases.len() <= slot {
            self.aliases.resize(slot + 1, None);
        }
        if topic.is_empty() {
            self.aliases[slot].clone().ok_or(Violation::Protocol("unknown topic alias"))
        } else {
            self.aliases[slot] = Some(topic.clone());
            Ok(topic)
        }
    }

    fn on_packet(&mut self, packet: Inbound) -> Result<(), Violation> {
        match packet {
            Inbound::Publish { topic, payload, qos, retain, pkid, alias, props } => {
                let topic = self.resolve_alias(topic, alias)?;
                let (registry, publisher, cache, res) =
                    (self.registry, &self.publisher, &mut self.publish_cache, &mut self.resource);
                let now = Instant::now();
                let checked = rules::check_publish(&topic, payload.len(), qos, retain, |action, topic| {
                    if action == Action::Publish
                        && let Some(ok) = cache.get(topic, now)
                    {
                        return ok;
                    }
                    let ok = authorize(registry, publisher, action, rules::resource(res, "topic/", topic));
                    if action == Action::Publish {
                        cache.put(topic, ok, now);
                    }
                    ok
                });
                let metrics = &self.shared.config.metrics;
                match &checked {
                    Ok(()) => metrics.count(MQTT, BrokerMetric::PublishInSuccess),
                    Err(v) => metrics.count(MQTT, rules::publish_refusal_metric(v)),
                }
                match checked {
                    Ok(()) => {}
                    // MQTT 5 answers a denied publish instead of closing: PUBACK 0x87
                    // at QoS 1, nothing at QoS 0 (the message is dropped).
                    Err(Violation::PublishDenied(_) | Violation::RetainDenied(_)) if self.protocol == Protocol::V5 => {
                        if qos == 1 {
                            self.put_puback(pkid, reason::NOT_AUTHORIZED);
                        }
                        return Ok(());
                    }
                    Err(v) => return Err(v),
                }
                let msg = Message { topic, payload, qos, retain, props: props.map(Arc::new) };
                let blocked = self.shared.publish(msg, Some(&self.publisher));
                let puback = (qos == 1).then_some(pkid);
                if blocked.is_empty() {
                    if let Some(pkid) = puback {
                        self.put_puback(pkid, reason::SUCCESS);
                    }
                } else {
                    // Backpressure: no PUBACK and no further reading until every
                    // subscriber has room for this message.
                    let waiting: Waiting = Box::pin(state::wait_for_room(self.shared.clone(), blocked));
                    self.blocked = Some((waiting, puback));
                }
            }
            Inbound::PubAck(pkid) => {
                // An unknown packet id is ignored, as most brokers do.
                let _ = self.inflight.ack(pkid);
            }
            Inbound::Subscribe { pkid, filters, subscription_id } => {
                if subscription_id {
                    return Err(Violation::SubscriptionIdentifiers);
                }
                if filters.is_empty() {
                    return Err(Violation::Protocol("SUBSCRIBE without topic filters"));
                }
                let held = self.shared.subscriptions(&self.attached.session);
                let handling: Vec<(String, u8)> = filters.iter().map(|(f, _, h)| (f.clone(), *h)).collect();
                let requested = filters.into_iter().map(|(f, o, _)| (f, o)).collect();
                let (registry, publisher, res) = (self.registry, &self.publisher, &mut self.resource);
                let plan = rules::plan_subscribe(
                    requested,
                    held.len(),
                    |f| held.iter().any(|h| h == f),
                    |f| authorize(registry, publisher, Action::Subscribe, rules::resource(res, "topicfilter/", f)),
                );
                let metrics = &self.shared.config.metrics;
                let plan = plan.inspect_err(|_| metrics.count(MQTT, BrokerMetric::SubscribeClientError))?;
                metrics.count(MQTT, rules::subscribe_metric(&plan.outcomes));
                self.shared.subscribe(&self.attached.session, &plan.accepted);
                let granted: Vec<String> = plan.accepted.iter().map(|(f, _)| f.clone()).collect();
                self.shared.publish_event(events::subscription(&self.presence, true, &granted, events::now_millis()));
                match self.protocol {
                    Protocol::V4 => {
                        let codes: Vec<u8> = plan.outcomes.iter().map(|o| o.code_v4()).collect();
                        codec::put_suback(&mut self.outbuf, pkid, &codes);
                    }
                    Protocol::V5 => {
                        let codes: Vec<u8> = plan.outcomes.iter().map(|o| o.code_v5()).collect();
                        codec::put_ack_with_codes5(&mut self.outbuf, 0x90, pkid, &codes);
                    }
                }
                for (filter, opts) in &plan.accepted {
                    // Retain Handling: 0 on every subscribe, 1 only on a new one, 2 never.
                    let rh = handling.iter().rev().find(|(f, _)| f == filter).map_or(0, |(_, h)| *h);
                    let wanted = match rh {
                        0 => true,
                        1 => !held.iter().any(|h| h == filter),
                        _ => false,
                    };
                    if wanted
                        && rules::receives_retained_on_subscribe(filter)
                        && let Some(msg) = self.shared.retained(filter)
                    {
                        let qos = (*opts & 0b11).min(msg.qos);
                        self.backlog.push_back(Delivery { msg, qos, retain: true, dup: false });
                    }
                }
            }
            Inbound::Unsubscribe { pkid, filters } => {
                if filters.is_empty() {
                    return Err(Violation::Protocol("UNSUBSCRIBE without topic filters"));
                }
                self.shared.config.metrics.count(MQTT, BrokerMetric::UnsubscribeSuccess);
                let held = self.shared.unsubscribe(&self.attached.session, &filters);
                self.shared.publish_event(events::subscription(&self.presence, false, &filters, events::now_millis()));
                match self.protocol {
                    Protocol::V4 => codec::put_unsuback(&mut self.outbuf, pkid),
                    Protocol::V5 => {
                        let codes: Vec<u8> = held
                            .iter()
                            .map(|h| if *h { reason::SUCCESS } else { reason::NO_SUBSCRIPTION_EXISTED })
                            .collect();
                        codec::put_ack_with_codes5(&mut self.outbuf, 0xB0, pkid, &codes);
                    }
                }
            }
            Inbound::PingReq => {
                self.shared.config.metrics.count(MQTT, BrokerMetric::PingSuccess);
                codec::put_pingresp(&mut self.outbuf);
            }
            Inbound::Disconnect { .. } => {} // handled by the caller
            Inbound::Qos2 => return Err(Violation::Qos2),
            Inbound::Unexpected(why) => return Err(Violation::Protocol(why)),
        }
        Ok(())
    }

    /// Moves due deliveries into the output buffer: backlog first, then the
    /// channel, while the QoS 1 window has room. Checks `iot:Receive` for each.
    /// Returns true if it stopped only because the batch is full.
    fn pump(&mut self) -> bool {
        let now = Instant::now();
        loop {
            if self.outbuf.len() >= WRITE_BATCH_BYTES {
                return true;
            }
            let d = match self.backlog.pop_front() {
                Some(d) => d,
                None => match self.rx.try_recv() {
                    Ok(d) => d,
                    Err(_) => return false,
                },
            };
            if d.qos == 1 && !self.inflight.has_room() {
                self.backlog.push_front(d);
                return false;
            }
            let topic = d.msg.topic.as_str();
            let allowed = match self.receive_cache.get(topic, now) {
                Some(ok) => ok,
                None => {
                    let res = rules::resource(&mut self.resource, "topic/", topic);
                    let ok = authorize(self.registry, &self.publisher, Action::Receive, res);
                    self.receive_cache.put(topic, ok, now);
                    ok
                }
            };
            if !allowed {
                continue;
            }
            if d.msg.expired(now) {
                // MQTT 5 §3.3.2.3.3: a message past its expiry is not sent, whatever the subscriber speaks.
                continue;
            }
            match self.protocol {
                Protocol::V4 => {
                    let pkid = if d.qos == 1 { self.inflight.insert(d.clone()) } else { 0 };
                    codec::put_publish(&mut self.outbuf, &d.msg.topic, &d.msg.payload, d.qos, pkid, d.retain, d.dup);
                }
                Protocol::V5 => {
                    let mut publish = publish5(&d, now);
                    if self.client_max_packet.is_some_and(|max| publish.size() > max) {
                        // MQTT 5 §3.1.2.11.4: a packet the client cannot take is discarded.
                        continue;
                    }
                    if d.qos == 1 {
                        publish.pkid = self.inflight.insert(d.clone());
                    }
                    codec::put_publish5(&mut self.outbuf, &publish);
                }
            }
        }
    }

    /// Hands the session back: unacknowledged and unsent QoS 1 messages return
    /// to a persistent session's queue (marked DUP if they were sent).
    fn finish(self) {
        let Connection { shared, attached, mut rx, mut backlog, mut inflight, .. } = self;
        shared.detach(attached, move || {
            rx.close();
            let mut older: Vec<Delivery> = inflight
                .drain()
                .map(|mut d| {
                    d.dup = true;
                    d
                })
                .collect();
            older.extend(backlog.drain(..));
            while let Ok(d) = rx.try_recv() {
                older.push(d);
            }
            older
        });
    }
}

/// An MQTT 5 PUBLISH for a delivery (packet id set by the caller): the
/// publisher's properties, with what is left of the Message Expiry Interval.
fn publish5(d: &Delivery, now: Instant) -> v5::Publish {
    let properties = d.msg.props.as_ref().map(|p| v5::PublishProperties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p
            .expires_at
            .map(|t| u32::try_from(t.saturating_duration_since(now).as_secs().max(1)).unwrap_or(u32::MAX)),
        topic_alias: None,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.clone(),
        user_properties: p.user_properties.clone(),
        subscription_identifiers: Vec::new(),
        content_type: p.content_type.clone(),
    });
    v5::Publish {
        dup: d.dup && d.qos == 1,
        qos: if d.qos == 1 { QoS5::AtLeastOnce } else { QoS5::AtMostOnce },
        retain: d.retain,
        topic: Bytes::copy_from_slice(d.msg.topic.as_bytes()),
        pkid: 0,
        payload: d.msg.payload.clone(),
        properties,
    }
}

fn authorize(registry: &Registry, publisher: &Publisher, action: Action, resource: &str) -> bool {
    let req =
        AuthRequest { certificate_id: &publisher.certificate_id, client_id: &publisher.client_id, action, resource };
    registry.authorize(&req).is_allowed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_way_a_connection_ends_maps_to_an_aws_disconnect_reason() {
        use DisconnectReason as R;
        let table = [
            (Exit::Graceful, R::ClientInitiatedDisconnect),
            (Exit::GracefulWithWill, R::ClientInitiatedDisconnect),
            (Exit::Lost, R::ConnectionLost),
            (Exit::WriteStalled, R::ConnectionLost),
            (Exit::KeepAliveTimeout, R::MqttKeepAliveTimeout),
            (Exit::Violation(Violation::PublishDenied("t".into())), R::AuthError),
            (Exit::Violation(Violation::RetainDenied("t".into())), R::AuthError),
            (Exit::Violation(Violation::Qos2), R::ClientError),
            (Exit::Violation(Violation::PayloadTooLarge(1)), R::ClientError),
            (Exit::Violation(Violation::Protocol("x")), R::ClientError),
            (Exit::Violation(Violation::Malformed("x")), R::ClientError),
            (Exit::Violation(Violation::PacketTooLarge), R::ClientError),
            (Exit::Kicked(KickReason::TakenOver), R::DuplicateClientId),
            (Exit::Kicked(KickReason::CertificateRevoked), R::AuthError),
            (Exit::Kicked(KickReason::Shutdown), R::ServerInitiatedDisconnect),
            (Exit::Kicked(KickReason::None), R::ServerInitiatedDisconnect),
        ];
        for (exit, want) in table {
            assert_eq!(exit.lifecycle_reason(), want, "{exit:?}");
        }
    }
}
