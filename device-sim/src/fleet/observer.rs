//! The fleet's telemetry ledger: what reached IoT Core from each site, against what its sensor
//! sent.
//!
//! An operator-side MQTT client — its own certificate (CreateKeysAndCertificate), its own IoT
//! policy allowing only to connect as itself and to subscribe to and receive the sites'
//! telemetry (`dt/pump/+/telemetry`) — counts every batch it receives. Each reading carries its
//! sensor's poll counter `seq` (`docs/payloads.md`), and the sensor's recipe keeps every poll
//! (no deadband, no heartbeat), so between the first and the last `seq` a site's cloud copy is
//! complete exactly when no number is missing: a missing `seq` is a reading lost on the way
//! (or a poll the plant did not answer), a repeated one a redelivery.
//!
//! [`Ledger`] is the pure accounting; [`Observer`] the connection around it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use cloud_api::endpoints::Endpoints;

/// The topic filter of the sites' telemetry batches.
pub const TELEMETRY_FILTER: &str = "dt/pump/+/telemetry";

/// One site's telemetry as the cloud received it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteLedger {
    /// Batches received.
    pub batches: u64,
    /// Distinct readings (`seq` values) received.
    seqs: BTreeSet<u64>,
    /// Readings received again (same `seq`).
    pub duplicates: u64,
}

impl SiteLedger {
    /// Distinct readings received.
    pub fn readings(&self) -> u64 {
        self.seqs.len() as u64
    }

    /// Readings missing between the first and the last `seq` received.
    pub fn missing(&self) -> u64 {
        match (self.seqs.first(), self.seqs.last()) {
            (Some(first), Some(last)) => (last - first + 1) - self.seqs.len() as u64,
            _ => 0,
        }
    }

    /// The first and last `seq` received.
    pub fn span(&self) -> Option<(u64, u64)> {
        Some((*self.seqs.first()?, *self.seqs.last()?))
    }
}

/// The fleet's telemetry, per thing.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    sites: BTreeMap<String, SiteLedger>,
    /// Messages that were not telemetry batches (with why), counted.
    pub malformed: u64,
}

/// What the ledger sums up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSummary {
    /// Sites heard from.
    pub sites: usize,
    /// Batches received.
    pub batches: u64,
    /// Distinct readings received.
    pub readings: u64,
    /// Readings missing inside the sites' spans.
    pub missing: u64,
    /// Readings received more than once.
    pub duplicates: u64,
    /// Messages that were not telemetry batches.
    pub malformed: u64,
    /// The sites with missing readings, with how many.
    pub lossy: Vec<(String, u64)>,
}

impl Ledger {
    /// Counts one message received on `topic` (`dt/pump/{thing}/telemetry`).
    pub fn record(&mut self, topic: &str, payload: &[u8]) -> Result<(), String> {
        let result = parse(topic, payload);
        match result {
            Ok((thing, seqs)) => {
                let site = self.sites.entry(thing).or_default();
                site.batches += 1;
                for seq in seqs {
                    if !site.seqs.insert(seq) {
                        site.duplicates += 1;
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.malformed += 1;
                Err(e)
            }
        }
    }

    /// One site's ledger.
    pub fn site(&self, thing: &str) -> Option<&SiteLedger> {
        self.sites.get(thing)
    }

    /// The totals.
    pub fn summary(&self) -> LedgerSummary {
        let lossy = self.sites.iter().filter(|(_, s)| s.missing() > 0).map(|(t, s)| (t.clone(), s.missing())).collect();
        LedgerSummary {
            sites: self.sites.len(),
            batches: self.sites.values().map(|s| s.batches).sum(),
            readings: self.sites.values().map(SiteLedger::readings).sum(),
            missing: self.sites.values().map(SiteLedger::missing).sum(),
            duplicates: self.sites.values().map(|s| s.duplicates).sum(),
            malformed: self.malformed,
            lossy,
        }
    }
}

impl LedgerSummary {
    /// `telemetry at the cloud: …` for the fleet's output.
    pub fn line(&self) -> String {
        let mut line = format!(
            "telemetry at the cloud: {} sites, {} batches, {} readings; missing {}, duplicates {}, malformed {}",
            self.sites, self.batches, self.readings, self.missing, self.duplicates, self.malformed
        );
        if !self.lossy.is_empty() {
            let named: Vec<String> = self.lossy.iter().take(5).map(|(t, n)| format!("{t} {n}")).collect();
            line.push_str(&format!(" (lossy: {})", named.join(", ")));
        }
        line
    }
}

/// The thing and the readings' `seq` values of a telemetry batch.
fn parse(topic: &str, payload: &[u8]) -> Result<(String, Vec<u64>), String> {
    let thing = match topic.split('/').collect::<Vec<_>>().as_slice() {
        ["dt", "pump", thing, "telemetry"] if !thing.is_empty() => (*thing).to_owned(),
        _ => return Err(format!("{topic} is not a telemetry topic")),
    };
    let batch: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("{topic}: the batch is not JSON: {e}"))?;
    let readings = batch
        .get("readings")
        .and_then(|r| r.as_array())
        .ok_or_else(|| format!("{topic}: the batch has no readings array"))?;
    let seqs = readings
        .iter()
        .map(|r| r.get("seq").and_then(|s| s.as_u64()).ok_or_else(|| format!("{topic}: a reading without a seq")))
        .collect::<Result<Vec<u64>, String>>()?;
    Ok((thing, seqs))
}

/// The observer's connection; the ledger fills while it lives.
pub struct Observer {
    ledger: Arc<Mutex<Ledger>>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Makes the observer's identity in the cloud (a certificate and the policy
    /// `{group}-telemetry-observer`), connects to the endpoints' broker as `{group}-observer` and
    /// subscribes to [`TELEMETRY_FILTER`]; returns once the subscription is acknowledged.
    pub async fn start(
        iot: &aws_sdk_iot::Client,
        endpoints: &Endpoints,
        group: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let client_id = format!("{group}-observer");
        let created = iot
            .create_keys_and_certificate()
            .set_as_active(true)
            .send()
            .await
            .context("CreateKeysAndCertificate for the telemetry observer")?;
        let (Some(cert_arn), Some(pem), Some(keys)) =
            (created.certificate_arn, created.certificate_pem, created.key_pair)
        else {
            anyhow::bail!("CreateKeysAndCertificate returned no certificate");
        };
        let cert_file = dir.join("observer.crt");
        let key_file = dir.join("observer.key");
        std::fs::write(&cert_file, pem)?;
        std::fs::write(&key_file, keys.private_key.unwrap_or_default())?;
        let policy_name = format!("{group}-telemetry-observer");
        let account = cert_arn.split(':').take(5).collect::<Vec<_>>().join(":");
        let document = serde_json::json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": format!("{account}:client/{client_id}")},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": format!("{account}:topicfilter/{TELEMETRY_FILTER}")},
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": format!("{account}:topic/dt/pump/*/telemetry")},
        ]});
        if iot.get_policy().policy_name(&policy_name).send().await.is_err() {
            iot.create_policy()
                .policy_name(&policy_name)
                .policy_document(document.to_string())
                .send()
                .await
                .context("CreatePolicy for the telemetry observer")?;
        }
        iot.attach_policy().policy_name(&policy_name).target(&cert_arn).send().await.context("AttachPolicy")?;
        let key = crate::core::key_store::DeviceKey::File(key_file);
        let tls = crate::core::bridge::device_tls_config(&endpoints.ca_file, &cert_file, &key)
            .map_err(|e| anyhow::anyhow!("the observer's TLS: {e}"))?;
        let (host, port) =
            endpoints.mqtt_host_port().map_err(|e| anyhow::anyhow!("the endpoints' MQTT address: {e}"))?;
        let mut options = rumqttc::MqttOptions::new(client_id, host, port);
        options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(256 * 1024, 256 * 1024);
        let (client, mut events) = rumqttc::AsyncClient::new(options, 16);
        client.subscribe(TELEMETRY_FILTER, rumqttc::QoS::AtLeastOnce).await?;
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let mut subscribed_tx = Some(subscribed_tx);
        let counting = ledger.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    // A clean session forgets the subscription with the connection: after a
                    // reconnection, subscribe again (the first one was queued before connecting).
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) if subscribed_tx.is_none() => {
                        if let Err(e) = client.try_subscribe(TELEMETRY_FILTER, rumqttc::QoS::AtLeastOnce) {
                            tracing::warn!("telemetry observer: cannot subscribe again: {e}");
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack))) => {
                        let granted =
                            ack.return_codes.iter().all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(if granted {
                                Ok(())
                            } else {
                                Err("the broker refused the subscription".into())
                            });
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let mut ledger = counting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        if let Err(e) = ledger.record(&p.topic, &p.payload) {
                            tracing::warn!("telemetry observer: {e}");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                        tracing::warn!("telemetry observer: {e}; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(30), subscribed).await {
            Ok(Ok(Ok(()))) => Ok(Observer { ledger, task }),
            Ok(Ok(Err(e))) => anyhow::bail!("the telemetry observer could not subscribe: {e}"),
            _ => anyhow::bail!("the telemetry observer's subscription was not acknowledged within 30 s"),
        }
    }

    /// The ledger so far.
    pub fn ledger(&self) -> Ledger {
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seqs: &[u64]) -> Vec<u8> {
        let readings: Vec<_> =
            seqs.iter().map(|s| serde_json::json!({"ts": 1, "seq": s, "speed_rpm": 2900.0})).collect();
        serde_json::json!({"v": 1, "thing": "t", "readings": readings}).to_string().into_bytes()
    }

    #[test]
    fn a_complete_span_has_nothing_missing_whatever_the_order() {
        let mut ledger = Ledger::default();
        ledger.record("dt/pump/a/telemetry", &batch(&[16, 17, 18])).unwrap();
        ledger.record("dt/pump/a/telemetry", &batch(&[13, 14, 15])).unwrap();
        let a = ledger.site("a").unwrap();
        assert_eq!((a.batches, a.readings(), a.missing(), a.span()), (2, 6, 0, Some((13, 18))));
        assert_eq!(ledger.summary().lossy, vec![]);
    }

    #[test]
    fn a_gap_is_missing_and_a_repeat_is_a_duplicate_per_site() {
        let mut ledger = Ledger::default();
        ledger.record("dt/pump/a/telemetry", &batch(&[1, 2, 3])).unwrap();
        ledger.record("dt/pump/a/telemetry", &batch(&[7, 8])).unwrap();
        ledger.record("dt/pump/a/telemetry", &batch(&[8, 9])).unwrap();
        ledger.record("dt/pump/b/telemetry", &batch(&[1, 2])).unwrap();
        let summary = ledger.summary();
        assert_eq!((summary.sites, summary.batches, summary.readings), (2, 4, 8));
        assert_eq!((summary.missing, summary.duplicates), (3, 1));
        assert_eq!(summary.lossy, vec![("a".to_owned(), 3)]);
        assert!(summary.line().contains("missing 3, duplicates 1"), "{}", summary.line());
    }

    #[test]
    fn what_is_not_a_telemetry_batch_is_counted_and_said_not_taken() {
        let mut ledger = Ledger::default();
        for (topic, payload) in [
            ("dt/pump/a/anomalies", batch(&[1])),
            ("dt/pump/a/telemetry", b"{not json".to_vec()),
            ("dt/pump/a/telemetry", br#"{"v": 1}"#.to_vec()),
            ("dt/pump/a/telemetry", br#"{"readings": [{"ts": 1}]}"#.to_vec()),
            ("dt/pump/a/telemetry", br#"{"readings": [{"seq": -1}]}"#.to_vec()),
        ] {
            let e = ledger.record(topic, &payload).unwrap_err();
            assert!(e.contains(topic), "{e}");
        }
        assert_eq!(ledger.summary().malformed, 5);
        assert_eq!(ledger.summary().readings, 0);
        assert!(ledger.site("a").is_none());
    }
}
