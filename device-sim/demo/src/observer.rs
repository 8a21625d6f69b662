//! A cloud-side MQTT client with its own identity (made through the AWS SDK, read-only policy)
//! that subscribes to the pump's topics and measures every message: count, payload size,
//! rate, what it bills (each topic by its own rule, [`crate::cost::units`]), and the first and
//! last example of each topic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use cloud_api::endpoints::Endpoints;
use device_sim::core::bridge::{BridgeConfig, tls_config};
use device_sim::core::key_store::DeviceKey;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::cost::Units;

/// The observer's thing name.
pub const OBSERVER: &str = "pump-station-observer";

/// Figures of one topic.
#[derive(Debug, Clone, Serialize)]
pub struct TopicFigures {
    /// Messages seen.
    pub messages: u64,
    /// Smallest payload, bytes.
    pub bytes_min: usize,
    /// Largest payload, bytes.
    pub bytes_max: usize,
    /// Mean payload, bytes.
    pub bytes_avg: f64,
    /// Payload bytes in all.
    pub bytes_total: usize,
    /// Messages per minute over the observation.
    pub per_minute: f64,
    /// What the topic billed the site ([`crate::cost::units`]).
    pub billed: Units,
    /// The first payload seen (JSON when it parses).
    pub first_example: Value,
    /// The last payload seen.
    pub example: Value,
}

#[derive(Debug, Default)]
struct Acc {
    messages: u64,
    min: usize,
    max: usize,
    total: usize,
    units: Units,
    first: Value,
    example: Value,
}

/// A message the observer saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Topic.
    pub topic: String,
    /// Payload as JSON (`Null` if not JSON).
    pub doc: Value,
}

/// The running observer.
pub struct Observer {
    stats: Arc<Mutex<BTreeMap<String, Acc>>>,
    kept: Arc<Mutex<Vec<Seen>>>,
    started: Instant,
    events: broadcast::Sender<Seen>,
    subscribed: tokio::sync::watch::Receiver<u64>,
    _client: AsyncClient,
}

/// Creates the observer's thing, certificate and read-only policy through the SDK.
pub async fn provision(
    iot: &aws_sdk_iot::Client,
    dir: &std::path::Path,
    core_thing: &str,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let arn = |r: &str| format!("arn:aws:iot:*:*:{r}");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn(&format!("client/{OBSERVER}"))},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
                arn(&format!("topicfilter/dt/pump/{core_thing}/*")),
                arn(&format!("topicfilter/$aws/things/{core_thing}/shadow/name/pump/update/*"))]},
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": [
                arn(&format!("topic/dt/pump/{core_thing}/*")),
                arn(&format!("topic/$aws/things/{core_thing}/shadow/name/pump/update/*"))]}
        ]
    });
    let policy_name = format!("{OBSERVER}-policy");
    iot.create_thing().thing_name(OBSERVER).send().await.context("CreateThing (observer)")?;
    let keys =
        iot.create_keys_and_certificate().set_as_active(true).send().await.context("CreateKeysAndCertificate")?;
    iot.create_policy()
        .policy_name(&policy_name)
        .policy_document(policy.to_string())
        .send()
        .await
        .context("CreatePolicy")?;
    let cert_arn = keys.certificate_arn().context("no certificate ARN")?;
    iot.attach_policy().policy_name(&policy_name).target(cert_arn).send().await.context("AttachPolicy")?;
    iot.attach_thing_principal()
        .thing_name(OBSERVER)
        .principal(cert_arn)
        .send()
        .await
        .context("AttachThingPrincipal")?;
    std::fs::create_dir_all(dir)?;
    let cert = dir.join("observer.pem.crt");
    let key = dir.join("observer.private.key");
    std::fs::write(&cert, keys.certificate_pem().unwrap_or_default())?;
    std::fs::write(&key, keys.key_pair().and_then(|k| k.private_key()).unwrap_or_default())?;
    Ok((cert, key))
}

impl Observer {
    /// Connects and subscribes to `filters`; returns once every SUBACK arrived.
    pub async fn start(
        endpoints: &Endpoints,
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        filters: &[String],
    ) -> anyhow::Result<Self> {
        let config = BridgeConfig::new(endpoints.clone(), cert, DeviceKey::File(key), OBSERVER.into());
        let (host, port) = endpoints.mqtt_host_port().map_err(anyhow::Error::msg)?;
        let mut opts = MqttOptions::new(OBSERVER, host, port);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls_config(&config)?)));
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let stats: Arc<Mutex<BTreeMap<String, Acc>>> = Arc::default();
        let kept: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (events, _) = broadcast::channel(4096);
        // Counts connections whose subscriptions are all acknowledged (clean sessions: every
        // reconnect subscribes again).
        let (subscribed_tx, subscribed) = tokio::sync::watch::channel(0u64);
        let (s, k, tx, c, wanted) = (stats.clone(), kept.clone(), events.clone(), client.clone(), filters.to_vec());
        tokio::spawn(async move {
            let mut pending_subacks = 0usize;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        pending_subacks = wanted.len();
                        let (c, wanted) = (c.clone(), wanted.clone());
                        tokio::spawn(async move {
                            for f in wanted {
                                let _ = c.subscribe(f, QoS::AtLeastOnce).await;
                            }
                        });
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let len = p.payload.len();
                        let units = crate::cost::units(&p.topic, &p.payload);
                        let doc: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        {
                            let mut all = s.lock().unwrap_or_else(|e| e.into_inner());
                            let a = all.entry(p.topic.clone()).or_default();
                            if a.messages == 0 {
                                a.first = doc.clone();
                            }
                            a.min = if a.messages == 0 { len } else { a.min.min(len) };
                            a.max = a.max.max(len);
                            a.messages += 1;
                            a.total += len;
                            a.units = a.units + units;
                            a.example = doc.clone();
                        }
                        let seen = Seen { topic: p.topic.clone(), doc };
                        k.lock().unwrap_or_else(|e| e.into_inner()).push(seen.clone());
                        let _ = tx.send(seen);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        pending_subacks = pending_subacks.saturating_sub(1);
                        if pending_subacks == 0 {
                            subscribed_tx.send_modify(|n| *n += 1);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let mut obs = Self { stats, kept, started: Instant::now(), events, subscribed, _client: client };
        obs.wait_subscribed(0).await?;
        Ok(obs)
    }

    /// Waits until a connection after the `after`-th one has all its subscriptions; returns its number.
    pub async fn wait_subscribed(&mut self, after: u64) -> anyhow::Result<u64> {
        let n = tokio::time::timeout(Duration::from_secs(60), self.subscribed.wait_for(|n| *n > after))
            .await
            .context("the observer's subscriptions were not acknowledged")?
            .context("the observer stopped")?;
        Ok(*n)
    }

    /// Every message seen on `topic`, in arrival order.
    pub fn messages(&self, topic: &str) -> Vec<Value> {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.topic == topic)
            .map(|s| s.doc.clone())
            .collect()
    }

    /// Messages from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Seen> {
        self.events.subscribe()
    }

    /// Messages seen on `topic` so far.
    pub fn count(&self, topic: &str) -> u64 {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).get(topic).map_or(0, |a| a.messages)
    }

    /// Minutes since the observer started.
    pub fn minutes(&self) -> f64 {
        self.started.elapsed().as_secs_f64() / 60.0
    }

    /// The figures per topic.
    pub fn figures(&self) -> BTreeMap<String, TopicFigures> {
        let minutes = self.minutes();
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, a)| {
                let f = TopicFigures {
                    messages: a.messages,
                    bytes_min: a.min,
                    bytes_max: a.max,
                    bytes_avg: if a.messages == 0 { 0.0 } else { a.total as f64 / a.messages as f64 },
                    bytes_total: a.total,
                    per_minute: if minutes > 0.0 { a.messages as f64 / minutes } else { 0.0 },
                    billed: a.units,
                    first_example: a.first.clone(),
                    example: a.example.clone(),
                };
                (t.clone(), f)
            })
            .collect()
    }
}

/// Waits for a message matching `pred` on `rx`, or fails after `within`.
pub async fn wait_for(
    rx: &mut broadcast::Receiver<Seen>,
    what: &str,
    within: Duration,
    pred: impl Fn(&Seen) -> bool,
) -> anyhow::Result<Seen> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(seen)) if pred(&seen) => return Ok(seen),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => anyhow::bail!("the observer stopped"),
            Err(_) => anyhow::bail!("no {what} within {within:?}"),
        }
    }
}
