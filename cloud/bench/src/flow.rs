//! Publishers → one subscriber over QoS 1: the 1→1 and fan-in scenarios, and
//! shadow updates with delta delivery (an operator publishes desired state, the
//! device receives `…/update/delta`). The same rumqttc client code runs
//! against every broker, and the same flow runs with MQTT 3.1.1 clients, MQTT 5
//! clients or a mix of both ([`crate::client`]).
//!
//! Each run has three phases over the same connections:
//! 1. warm-up (not reported): TLS sessions, caches and allocators settle;
//! 2. saturated: every publisher sends as fast as its QoS 1 window of 100
//!    allows; gives throughput (deliveries per second at the subscriber) and the
//!    latency under that load (publish call → delivery, so queueing counts);
//! 3. end-to-end window: as saturated, but at most `Plan::e2e_window` messages
//!    may be published and not yet delivered, over all publishers; the
//!    throughput a broker sustains without dropping anything;
//! 4. paced: a fixed total rate well below saturation; gives the latency a
//!    lightly loaded broker adds.
//!
//! A phase ends when everything expected has arrived, when nothing arrived for
//! `Plan::quiet_gap` (lost messages never arrive), or at its deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Client, Incoming, Message, Protocol, connect};
use crate::plan::{FlowPlan, Plan};
use crate::stats::{Clock, Latency, latency};
use crate::target::{Target, names};

/// Fewer CPU ticks than this (10 ms each) in a phase are not reported.
const MIN_CPU_TICKS: u64 = 20;
/// Warm-up phase id in the payload.
pub const WARMUP: u8 = 0;
/// Saturated phase id.
pub const SATURATED: u8 = 1;
/// Paced phase id.
pub const PACED: u8 = 2;
/// End-to-end windowed phase id.
pub const WINDOWED: u8 = 3;

/// How publishers are held back in a phase.
#[derive(Debug, Clone)]
enum Pacing {
    /// Only by their QoS 1 window (PUBACKs).
    Free,
    /// Also by a window over the whole path: a publish needs a permit, a delivery returns one.
    Window(Arc<Semaphore>),
    /// Each publisher sends once per period.
    Rate(Duration),
}

/// What a received message says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Phase id.
    pub phase: u8,
    /// When the publish call was made, [`Clock`] nanoseconds.
    pub sent_ns: u64,
}

/// How the broker answered a message, as the subscriber sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Delivered (for the shadow scenario: the delta the update produced).
    Delivered,
    /// Refused with 429 on `…/rejected`: the shadow service allows at most 10 requests in flight
    /// per connection. Answered, so not lost, but no delta.
    Throttled,
    /// Refused on `…/rejected` with another code.
    Rejected,
}

/// One scenario: who publishes where, who listens, and what the messages look like.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Subscriber client id and the MQTT version it speaks.
    pub subscriber: (String, Protocol),
    /// Its subscriptions (QoS 1).
    pub filters: Vec<String>,
    /// Publisher client ids and the MQTT version each speaks.
    pub publishers: Vec<(String, Protocol)>,
    /// Topic for a publisher client id.
    pub topic: fn(&str) -> String,
    /// Payload for a stamp, a sequence number and the plan's payload length.
    pub encode: fn(Stamp, u64, usize) -> Bytes,
    /// The stamp of a received message and what it says of the request, if it is one that counts.
    pub decode: fn(&Message) -> Option<(Stamp, Answer)>,
}

/// Which MQTT version each client of a telemetry scenario speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// Every client speaks this version.
    All(Protocol),
    /// The subscriber speaks MQTT 5; publishers alternate MQTT 3.1.1 and MQTT 5, starting with 3.1.1.
    Mixed,
}

impl Clients {
    fn subscriber(self) -> Protocol {
        match self {
            Clients::All(p) => p,
            Clients::Mixed => Protocol::V5,
        }
    }

    fn publisher(self, i: usize) -> Protocol {
        match self {
            Clients::All(p) => p,
            Clients::Mixed if i.is_multiple_of(2) => Protocol::V311,
            Clients::Mixed => Protocol::V5,
        }
    }
}

impl Spec {
    /// 1 publisher → 1 subscriber on telemetry topics.
    pub fn one_to_one(clients: Clients) -> Spec {
        Spec::fan_in(1, clients)
    }

    /// `publishers` publishers → 1 subscriber subscribed to `dt/bench/+/telemetry`.
    pub fn fan_in(publishers: usize, clients: Clients) -> Spec {
        Spec {
            subscriber: (names::SUBSCRIBER.to_owned(), clients.subscriber()),
            filters: vec![names::TELEMETRY_FILTER.to_owned()],
            publishers: (0..publishers).map(|i| (names::publisher(i), clients.publisher(i))).collect(),
            topic: names::telemetry_topic,
            encode: encode_binary,
            decode: decode_binary,
        }
    }

    /// The operator publishes desired state to the device's classic shadow; the
    /// device, subscribed to `update/delta`, `update/accepted` and `update/rejected`, counts
    /// deltas, and the refusals (which carry the request's `clientToken`) apart from them.
    pub fn shadow() -> Spec {
        let base = format!("$aws/things/{}/shadow/update", names::SHADOW_DEVICE);
        Spec {
            subscriber: (names::SHADOW_DEVICE.to_owned(), Protocol::V311),
            filters: vec![format!("{base}/delta"), format!("{base}/accepted"), format!("{base}/rejected")],
            publishers: vec![(names::OPERATOR.to_owned(), Protocol::V311)],
            topic: |_| format!("$aws/things/{}/shadow/update", names::SHADOW_DEVICE),
            encode: encode_desired,
            decode: decode_delta,
        }
    }
}

/// `sent_ns` (8 bytes, big-endian), phase (1), sequence (4), then filler to `len`.
fn encode_binary(stamp: Stamp, seq: u64, len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(len.max(13));
    buf.put_u64(stamp.sent_ns);
    buf.put_u8(stamp.phase);
    buf.put_u32(seq as u32);
    buf.resize(len.max(13), b'x');
    buf.freeze()
}

fn decode_binary(p: &Message) -> Option<(Stamp, Answer)> {
    let b = p.payload.get(..9)?;
    let mut ns = [0u8; 8];
    ns.copy_from_slice(&b[..8]);
    Some((Stamp { phase: b[8], sent_ns: u64::from_be_bytes(ns) }, Answer::Delivered))
}

/// `phase:sent_ns`, the stamp as the shadow documents carry it.
pub(crate) fn stamp_text(stamp: Stamp) -> String {
    format!("{}:{}", stamp.phase, stamp.sent_ns)
}

pub(crate) fn parse_stamp(text: &str) -> Option<Stamp> {
    let (phase, ns) = text.split_once(':')?;
    Some(Stamp { phase: phase.parse().ok()?, sent_ns: ns.parse().ok()? })
}

/// A desired-state update whose `stamp` changes every time, so every update
/// makes a delta. The stamp is also its `clientToken`, which a refusal repeats.
fn encode_desired(stamp: Stamp, seq: u64, _len: usize) -> Bytes {
    let doc = serde_json::json!({
        "state": {"desired": {"stamp": stamp_text(stamp), "seq": seq}},
        "clientToken": stamp_text(stamp)
    });
    Bytes::from(doc.to_string())
}

/// A delta (delivered), or a refusal of an update on `…/rejected` (429: throttled).
fn decode_delta(p: &Message) -> Option<(Stamp, Answer)> {
    let v: serde_json::Value = serde_json::from_slice(&p.payload).ok()?;
    if p.topic.ends_with("/update/delta") {
        Some((parse_stamp(v["state"]["stamp"].as_str()?)?, Answer::Delivered))
    } else if p.topic.ends_with("/update/rejected") {
        let answer = if v["code"].as_u64() == Some(429) { Answer::Throttled } else { Answer::Rejected };
        Some((parse_stamp(v["clientToken"].as_str()?)?, answer))
    } else {
        None
    }
}

/// One measured phase.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Messages the subscriber should receive.
    pub expected: u64,
    /// Publish calls that returned.
    pub sent: u64,
    /// Messages the subscriber received.
    pub received: u64,
    /// Requests refused with 429 (too many in flight): answered, not lost.
    pub throttled: u64,
    /// Requests refused with another code.
    pub rejected: u64,
    /// First publish call → last delivery.
    pub elapsed: Duration,
    /// Publish call → delivery.
    pub latency: Option<Latency>,
    /// CPU time the broker process used during the phase.
    pub broker_cpu: Option<Duration>,
    /// The phase hit its deadline.
    pub timed_out: bool,
}

impl Phase {
    /// Messages neither delivered nor refused: nothing ever came back for them.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received + self.throttled + self.rejected)
    }

    /// Deliveries per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 { self.received as f64 / secs } else { 0.0 }
    }

    /// Broker CPU time per delivered message.
    pub fn cpu_per_message(&self) -> Option<Duration> {
        let cpu = self.broker_cpu?;
        (self.received > 0).then(|| cpu / self.received as u32)
    }
}

/// A scenario's result on one broker.
#[derive(Debug, Clone)]
pub struct FlowResult {
    /// As fast as the QoS 1 windows allow.
    pub saturated: Phase,
    /// As fast as an end-to-end window allows.
    pub windowed: Phase,
    /// Messages allowed between publish call and delivery in the windowed phase.
    pub window: usize,
    /// At the plan's fixed rate.
    pub paced: Phase,
    /// Total paced rate, messages per second.
    pub paced_rate: u64,
    /// Connection errors seen during the run.
    pub errors: Vec<String>,
}

/// Runs `spec` against `target`. `Err` holds why it could not run at all.
pub async fn run(
    target: &Target,
    spec: &Spec,
    plan: &Plan,
    flow: &FlowPlan,
    clock: Clock,
) -> Result<FlowResult, String> {
    let mut run = Running::start(target, spec, plan, clock).await.map_err(|e| format!("{e:#}"))?;
    let result = run.phases(flow).await;
    run.stop().await;
    Ok(result)
}

/// Connected clients of one scenario.
struct Running<'a> {
    target: &'a Target,
    spec: &'a Spec,
    plan: &'a Plan,
    clock: Clock,
    publishers: Vec<(String, Client)>,
    subscriber: Client,
    deliveries: mpsc::UnboundedReceiver<(Stamp, Answer, u64)>,
    drivers: Vec<JoinHandle<String>>,
}

impl<'a> Running<'a> {
    async fn start(target: &'a Target, spec: &'a Spec, plan: &'a Plan, clock: Clock) -> anyhow::Result<Running<'a>> {
        let (id, protocol) = &spec.subscriber;
        let (subscriber, mut events) = connect(target, id, *protocol, plan.inflight).await?;
        subscriber.subscribe(&spec.filters).await.map_err(anyhow::Error::msg).context("subscribing")?;
        let granted = events.wait_for("SUBACK", |e| if let Incoming::SubAck(r) = e { Some(r) } else { None }).await?;
        granted.map_err(|codes| anyhow::anyhow!("subscription refused: {codes} for {:?}", spec.filters))?;
        let (tx, deliveries) = mpsc::unbounded_channel();
        let decode = spec.decode;
        let mut drivers = vec![tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Incoming::Publish(p)) => {
                        let at = clock.now_ns();
                        if let Some((stamp, answer)) = decode(&p)
                            && tx.send((stamp, answer, at)).is_err()
                        {
                            return String::new();
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return format!("subscriber: {e}"),
                }
            }
        })];

        let connecting = spec.publishers.iter().map(|(id, protocol)| connect(target, id, *protocol, plan.inflight));
        let mut publishers = Vec::new();
        for ((id, _), connected) in spec.publishers.iter().zip(futures::future::join_all(connecting).await) {
            let (client, mut events) = connected?;
            let id_for_driver = id.clone();
            drivers.push(tokio::spawn(async move {
                loop {
                    if let Err(e) = events.poll().await {
                        return format!("{id_for_driver}: {e}");
                    }
                }
            }));
            publishers.push((id.clone(), client));
        }
        Ok(Running { target, spec, plan, clock, publishers, subscriber, deliveries, drivers })
    }

    async fn phases(&mut self, flow: &FlowPlan) -> FlowResult {
        let n = self.publishers.len();
        let _warmup = self.phase(WARMUP, flow.warmup_per_publisher, Pacing::Free, flow.deadline).await;
        let saturated = self.phase(SATURATED, flow.saturated_per_publisher, Pacing::Free, flow.deadline).await;
        let window = self.plan.e2e_window;
        let pacing = Pacing::Window(Arc::new(Semaphore::new(window)));
        let windowed = self.phase(WINDOWED, flow.saturated_per_publisher, pacing, flow.deadline).await;
        let per_publisher = flow.paced_per_publisher(n);
        let period = Duration::from_secs_f64(n as f64 / flow.paced_rate.max(1) as f64);
        let paced = self.phase(PACED, per_publisher, Pacing::Rate(period), flow.deadline + flow.paced_for).await;
        FlowResult { saturated, windowed, window, paced, paced_rate: flow.paced_rate, errors: self.errors().await }
    }

    /// Errors of connections that ended during the run.
    async fn errors(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        for d in &mut self.drivers {
            if d.is_finished() {
                match d.await {
                    Ok(e) if !e.is_empty() => errors.push(e),
                    Ok(_) => {}
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        self.drivers.retain(|d| !d.is_finished());
        errors
    }

    /// Every publisher sends `per_publisher` messages, spaced by `period` if
    /// given (publishers staggered across the period); collects the deliveries.
    async fn phase(&mut self, phase: u8, per_publisher: u64, pacing: Pacing, deadline: Duration) -> Phase {
        let expected = per_publisher * self.publishers.len() as u64;
        let sent = Arc::new(AtomicU64::new(0));
        let cpu_before = self.target.cpu_ticks();
        let start_ns = self.clock.now_ns();
        let start = Instant::now();
        let deadline = start + deadline;
        let payload_len = self.plan.payload_len;
        let n = self.publishers.len() as u32;
        let mut tasks = Vec::new();
        for (i, (id, client)) in self.publishers.iter().enumerate() {
            let (client, topic, encode, clock, sent) =
                (client.clone(), (self.spec.topic)(id), self.spec.encode, self.clock, sent.clone());
            let window = match &pacing {
                Pacing::Window(w) => Some(w.clone()),
                _ => None,
            };
            let period = match &pacing {
                Pacing::Rate(p) => Some(*p),
                _ => None,
            };
            let ticker = period.map(|p| {
                let mut t = tokio::time::interval_at(start + p * i as u32 / n, p);
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            tasks.push(tokio::spawn(async move {
                let mut ticker = ticker;
                for seq in 0..per_publisher {
                    if let Some(t) = ticker.as_mut() {
                        t.tick().await;
                    }
                    if let Some(w) = &window {
                        match w.acquire().await {
                            Ok(permit) => permit.forget(),
                            Err(_) => return,
                        }
                    }
                    let stamp = Stamp { phase, sent_ns: clock.now_ns() };
                    let payload = encode(stamp, seq, payload_len);
                    if client.publish(topic.clone(), payload).await.is_err() {
                        return;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }

        let mut samples = Vec::with_capacity(expected as usize);
        let (mut throttled, mut rejected) = (0u64, 0u64);
        let mut last_ns = start_ns;
        let mut timed_out = false;
        while samples.len() as u64 + throttled + rejected < expected {
            let wake = deadline.min(Instant::now() + self.plan.quiet_gap);
            match tokio::time::timeout_at(wake, self.deliveries.recv()).await {
                Ok(Some((stamp, answer, at))) => {
                    if stamp.phase == phase {
                        match answer {
                            Answer::Delivered => {
                                samples.push(at.saturating_sub(stamp.sent_ns));
                                last_ns = at;
                            }
                            Answer::Throttled => throttled += 1,
                            Answer::Rejected => rejected += 1,
                        }
                        // An answered request leaves the end-to-end window, whatever the answer.
                        if let Pacing::Window(w) = &pacing {
                            w.add_permits(1);
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    timed_out = Instant::now() >= deadline;
                    break;
                }
            }
        }
        for t in &tasks {
            t.abort();
        }
        let broker_cpu = match (cpu_before, self.target.cpu_ticks()) {
            // Linux reports CPU time in 1/100 s (USER_HZ); a handful of ticks says nothing.
            (Some(a), Some(b)) if b.saturating_sub(a) >= MIN_CPU_TICKS => Some(Duration::from_millis((b - a) * 10)),
            _ => None,
        };
        Phase {
            expected,
            sent: sent.load(Ordering::Relaxed),
            received: samples.len() as u64,
            throttled,
            rejected,
            elapsed: Duration::from_nanos(last_ns - start_ns),
            latency: latency(samples),
            broker_cpu,
            timed_out,
        }
    }

    /// DISCONNECTs everyone, then drops the connections.
    async fn stop(self) {
        for (_, client) in &self.publishers {
            client.try_disconnect();
        }
        self.subscriber.try_disconnect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for d in &self.drivers {
            d.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(topic: &str, payload: Bytes) -> Message {
        Message { topic: topic.to_owned(), payload }
    }

    #[test]
    fn a_mixed_fan_in_alternates_publisher_versions_and_subscribes_with_mqtt5() {
        let spec = Spec::fan_in(4, Clients::Mixed);
        assert_eq!(spec.subscriber.1, Protocol::V5);
        let versions: Vec<Protocol> = spec.publishers.iter().map(|(_, p)| *p).collect();
        assert_eq!(versions, [Protocol::V311, Protocol::V5, Protocol::V311, Protocol::V5]);
        let all5 = Spec::one_to_one(Clients::All(Protocol::V5));
        assert_eq!((all5.subscriber.1, all5.publishers[0].1), (Protocol::V5, Protocol::V5));
    }

    #[test]
    fn binary_payload_has_the_plan_length_and_round_trips_its_stamp() {
        let stamp = Stamp { phase: SATURATED, sent_ns: 123_456_789 };
        let payload = encode_binary(stamp, 42, 256);
        assert_eq!(payload.len(), 256);
        assert_eq!(decode_binary(&publish("dt/bench/x/telemetry", payload)), Some((stamp, Answer::Delivered)));
    }

    #[test]
    fn only_deltas_count_as_delivered_in_the_shadow_scenario() {
        let stamp = Stamp { phase: PACED, sent_ns: 99 };
        let delta = serde_json::json!({"version": 3, "state": {"stamp": "2:99", "seq": 1}});
        let p = publish("$aws/things/d/shadow/update/delta", Bytes::from(delta.to_string()));
        assert_eq!(decode_delta(&p), Some((stamp, Answer::Delivered)));
        let accepted = publish("$aws/things/d/shadow/update/accepted", encode_desired(stamp, 1, 0));
        assert_eq!(decode_delta(&accepted), None);
    }

    #[test]
    fn a_refused_update_is_matched_by_its_client_token_and_429_is_throttled() {
        let stamp = Stamp { phase: SATURATED, sent_ns: 1234 };
        let request: serde_json::Value = serde_json::from_slice(&encode_desired(stamp, 7, 0)).unwrap();
        let token = request["clientToken"].clone();
        let refusal = |code: u64| {
            let body = serde_json::json!({"code": code, "message": "x", "timestamp": 1, "clientToken": token});
            publish("$aws/things/d/shadow/update/rejected", Bytes::from(body.to_string()))
        };
        assert_eq!(decode_delta(&refusal(429)), Some((stamp, Answer::Throttled)));
        assert_eq!(decode_delta(&refusal(400)), Some((stamp, Answer::Rejected)));
        let no_token = serde_json::json!({"code": 429, "message": "Too Many Requests", "timestamp": 1});
        let p = publish("$aws/things/d/shadow/update/rejected", Bytes::from(no_token.to_string()));
        assert_eq!(decode_delta(&p), None, "a refusal of someone else's request");
    }

    #[test]
    fn throttled_and_rejected_requests_are_not_lost() {
        let phase = Phase {
            expected: 100,
            sent: 100,
            received: 60,
            throttled: 30,
            rejected: 4,
            elapsed: Duration::from_secs(1),
            latency: None,
            broker_cpu: None,
            timed_out: false,
        };
        assert_eq!(phase.lost(), 6);
        assert_eq!(phase.throughput(), 60.0);
    }
}
