//! One task per connection: TLS handshake, CONNECT, then a loop that reads
//! packets, writes what is due in one buffered write per turn, and watches
//! the keep-alive and the kick token. Decisions come from [`super::rules`];
//! shared state from [`super::state`].
//!
//! Backpressure: a QoS 1 PUBLISH that finds a subscriber's queue full is held
//! (no PUBACK, no further reading, keep-alive paused) until
//! [`state::wait_for_room`] completes. Meanwhile the connection still writes
//! to its own client and keeps taking its own deliveries (into its local
//! backlog, up to `outgoing_queue_len` more), so two clients publishing to each
//! other cannot wait on each other forever.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use cloud_api::policy::Action;
use rumqttc::mqttbytes::v4::{Connect, Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::codec::{self, Decoded, FirstPacket};
use super::queue::{Delivery, Inflight, Message};
use super::rules::{self, ConnectRefusal, Violation};
use super::state::{self, Attached, ConnCtl, KickReason, Shared};
use crate::bus::Publisher;
use crate::registry::{AuthRequest, CertificateStatus, Registry};

/// CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
mod code {
    pub const ACCEPTED: u8 = 0;
    pub const UNACCEPTABLE_PROTOCOL_VERSION: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const NOT_AUTHORIZED: u8 = 5;
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
}

/// Runs one connection to completion. Never panics on network input.
pub(crate) async fn run(
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    tcp: TcpStream,
    tls: TlsAcceptor,
    ctl: Arc<ConnCtl>,
) {
    let deadline = tokio::time::Instant::now() + shared.config.connect_timeout;
    let stream = tokio::select! {
        r = tokio::time::timeout_at(deadline, tls.accept(tcp)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
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
    let conn = Handshake { shared: &shared, registry: &registry, certificate_id: &certificate_id, ctl: &ctl };
    conn.run(stream, deadline).await;
    shared.unregister_certificate(&certificate_id, ctl.id);
}

struct Handshake<'a> {
    shared: &'a Arc<Shared>,
    registry: &'a Arc<Registry>,
    certificate_id: &'a Arc<str>,
    ctl: &'a Arc<ConnCtl>,
}

impl Handshake<'_> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(self, mut stream: S, deadline: tokio::time::Instant) {
        let mut inbuf = BytesMut::with_capacity(1024);
        let connect = tokio::select! {
            r = tokio::time::timeout_at(deadline, read_connect(&mut stream, &mut inbuf)) => match r {
                Ok(Ok(c)) => c,
                Ok(Err(Some(code))) => {
                    let mut out = BytesMut::new();
                    codec::put_connack(&mut out, false, code);
                    let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut stream, &out)).await;
                    return;
                }
                Ok(Err(None)) => return,
                Err(_) => {
                    tracing::debug!("no CONNECT in time");
                    return;
                }
            },
            _ = self.ctl.token.cancelled() => return,
        };
        let client_id = connect.client_id.clone();
        match self.check_connect(&connect) {
            Ok(()) => {}
            Err(Some(refusal)) => {
                let code = match refusal {
                    ConnectRefusal::IdentifierRejected => code::IDENTIFIER_REJECTED,
                    ConnectRefusal::NotAuthorized => code::NOT_AUTHORIZED,
                };
                tracing::debug!(%client_id, certificate_id = %self.certificate_id, code, "CONNECT refused");
                let mut out = BytesMut::new();
                codec::put_connack(&mut out, false, code);
                let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut stream, &out)).await;
                return;
            }
            Err(None) => {
                tracing::debug!(%client_id, "CONNECT dropped without CONNACK");
                return;
            }
        }

        let (tx, rx) = mpsc::channel(self.shared.config.outgoing_queue_len.max(1));
        let attached = tokio::select! {
            a = self.shared.attach(&client_id, connect.clean_session, self.ctl.clone(), tx) => a,
            _ = self.ctl.token.cancelled() => None,
        };
        let Some(mut attached) = attached else {
            let mut out = BytesMut::new();
            codec::put_connack(&mut out, false, code::SERVER_UNAVAILABLE);
            let _ = tokio::time::timeout(Duration::from_secs(1), write_out(&mut stream, &out)).await;
            return;
        };
        tracing::debug!(%client_id, session_present = attached.session_present, "connected");

        let mut outbuf = BytesMut::with_capacity(256);
        codec::put_connack(&mut outbuf, attached.session_present, code::ACCEPTED);
        let backlog = std::mem::take(&mut attached.backlog);
        let mut conn = Connection {
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
            inflight: Inflight::new(cloud_api::limits::MAX_INFLIGHT_QOS1),
            publish_cache: AuthCache::default(),
            receive_cache: AuthCache::default(),
            resource: String::new(),
            blocked: None,
        };
        let exit = conn.serve(rules::silence_limit(connect.keep_alive)).await;
        let exit = match exit {
            Exit::Kicked(_) => Exit::Kicked(self.ctl.reason()),
            other => other,
        };
        match &exit {
            Exit::Violation(v) => tracing::debug!(%client_id, violation = %v, "disconnected: client error"),
            other => tracing::debug!(%client_id, reason = ?other, "disconnected"),
        }
        // Publish the will before giving the session up, so that whatever the
        // next connection with this client id does comes after it.
        if exit.publishes_will()
            && let Some(will) = connect.last_will
        {
            let msg = Message { topic: will.topic, payload: will.message, qos: (will.qos as u8).min(1) };
            let blocked = self.shared.publish(msg, will.retain, Some(&conn.publisher));
            if !blocked.is_empty() {
                // Nobody is waiting for a PUBACK: wait for room without holding the session.
                tokio::spawn(state::wait_for_room(self.shared.clone(), blocked));
            }
        }
        conn.finish();
    }

    /// CONNECT checks in IoT Core's order. `Err(None)`: close without CONNACK.
    fn check_connect(&self, c: &Connect) -> Result<(), Option<ConnectRefusal>> {
        rules::check_client_id(&c.client_id)?;
        if self.registry.certificate_status(self.certificate_id) != Some(CertificateStatus::Active) {
            return Err(Some(ConnectRefusal::NotAuthorized));
        }
        let mut res = String::with_capacity(7 + c.client_id.len());
        if !self.allowed(&c.client_id, Action::Connect, rules::resource(&mut res, "client/", &c.client_id)) {
            return Err(Some(ConnectRefusal::NotAuthorized));
        }
        if let Some(will) = &c.last_will {
            let checked = rules::check_publish(&will.topic, will.message.len(), will.qos as u8, will.retain, |a, t| {
                let mut res = String::new();
                self.allowed(&c.client_id, a, rules::resource(&mut res, "topic/", t))
            });
            match checked {
                Ok(()) => {}
                Err(Violation::PublishDenied(_) | Violation::RetainDenied(_)) => {
                    return Err(Some(ConnectRefusal::NotAuthorized));
                }
                // A QoS 2 will or an invalid will topic: IoT Core closes the connection.
                Err(_) => return Err(None),
            }
        }
        Ok(())
    }

    fn allowed(&self, client_id: &str, action: Action, resource: &str) -> bool {
        let req = AuthRequest { certificate_id: self.certificate_id, client_id, action, resource };
        self.registry.authorize(&req).is_allowed()
    }
}

/// Reads the first packet, which must be an MQTT 3.1.1 CONNECT.
/// `Err(Some(code))`: answer with that CONNACK code; `Err(None)`: just close.
async fn read_connect<S: AsyncRead + Unpin>(stream: &mut S, inbuf: &mut BytesMut) -> Result<Connect, Option<u8>> {
    loop {
        match codec::classify_first(inbuf) {
            FirstPacket::OtherVersion => return Err(Some(code::UNACCEPTABLE_PROTOCOL_VERSION)),
            FirstPacket::NotConnect => return Err(None),
            FirstPacket::Mqtt311 => match codec::decode(inbuf) {
                Decoded::Packet(Packet::Connect(c)) => return Ok(c),
                Decoded::Packet(_) | Decoded::Invalid(_) => return Err(None),
                Decoded::Incomplete => {}
            },
            FirstPacket::Incomplete => {}
        }
        inbuf.reserve(1024);
        match stream.read_buf(inbuf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
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
                        codec::put_puback(&mut self.outbuf, pkid);
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
            match codec::decode(&mut self.inbuf) {
                Decoded::Incomplete => return Ok(()),
                Decoded::Invalid(why) => return Err(Exit::Violation(Violation::Protocol(why))),
                Decoded::Packet(Packet::Disconnect) => return Err(Exit::Graceful),
                Decoded::Packet(p) => self.on_packet(p).map_err(Exit::Violation)?,
            }
        }
    }

    fn on_packet(&mut self, packet: Packet) -> Result<(), Violation> {
        match packet {
            Packet::Publish(p) => {
                let qos = p.qos as u8;
                let (registry, publisher, cache, res) =
                    (self.registry, &self.publisher, &mut self.publish_cache, &mut self.resource);
                let now = Instant::now();
                rules::check_publish(&p.topic, p.payload.len(), qos, p.retain, |action, topic| {
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
                })?;
                let msg = Message { topic: p.topic, payload: p.payload, qos };
                let blocked = self.shared.publish(msg, p.retain, Some(&self.publisher));
                let puback = (qos == 1).then_some(p.pkid);
                if blocked.is_empty() {
                    if let Some(pkid) = puback {
                        codec::put_puback(&mut self.outbuf, pkid);
                    }
                } else {
                    // Backpressure: no PUBACK and no further reading until every
                    // subscriber has room for this message.
                    let waiting: Waiting = Box::pin(state::wait_for_room(self.shared.clone(), blocked));
                    self.blocked = Some((waiting, puback));
                }
            }
            Packet::PubAck(ack) => {
                // An unknown packet id is ignored, as most brokers do.
                let _ = self.inflight.ack(ack.pkid);
            }
            Packet::Subscribe(s) => {
                let held = self.shared.subscriptions(&self.attached.session);
                let filters = s.filters.into_iter().map(|f| (f.path, f.qos as u8)).collect();
                let (registry, publisher, res) = (self.registry, &self.publisher, &mut self.resource);
                let plan = rules::plan_subscribe(
                    filters,
                    held.len(),
                    |f| held.iter().any(|h| h == f),
                    |f| authorize(registry, publisher, Action::Subscribe, rules::resource(res, "topicfilter/", f)),
                )?;
                self.shared.subscribe(&self.attached.session, &plan.accepted);
                codec::put_suback(&mut self.outbuf, s.pkid, &plan.return_codes);
                for (filter, qos) in &plan.accepted {
                    if rules::receives_retained_on_subscribe(filter)
                        && let Some(msg) = self.shared.retained(filter)
                    {
                        let qos = (*qos).min(msg.qos);
                        self.backlog.push_back(Delivery { msg, qos, retain: true, dup: false });
                    }
                }
            }
            Packet::Unsubscribe(u) => {
                if u.topics.is_empty() {
                    return Err(Violation::Protocol("UNSUBSCRIBE without topic filters"));
                }
                self.shared.unsubscribe(&self.attached.session, &u.topics);
                codec::put_unsuback(&mut self.outbuf, u.pkid);
            }
            Packet::PingReq => codec::put_pingresp(&mut self.outbuf),
            Packet::Disconnect => {} // handled by the caller
            Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => return Err(Violation::Qos2),
            Packet::Connect(_) => return Err(Violation::Protocol("second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(Violation::Protocol("server-only packet from client"));
            }
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
            let pkid = if d.qos == 1 { self.inflight.insert(d.clone()) } else { 0 };
            codec::put_publish(&mut self.outbuf, &d.msg.topic, &d.msg.payload, d.qos, pkid, d.retain, d.dup);
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

fn authorize(registry: &Registry, publisher: &Publisher, action: Action, resource: &str) -> bool {
    let req =
        AuthRequest { certificate_id: &publisher.certificate_id, client_id: &publisher.client_id, action, resource };
    registry.authorize(&req).is_allowed()
}
