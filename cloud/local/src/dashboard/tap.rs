//! What the dashboard keeps from the broker's traffic: a bounded ring of recent telemetry
//! readings per pump (`dt/pump/{thing}/telemetry`) and of recent anomaly events
//! (`dt/pump/{thing}/anomalies`), heard as an observer of every message the broker delivers,
//! and the job-execution status changes Jobs announces.
//!
//! Memory, not the S3 landing zone: the charts are live (a batch shows the moment the broker
//! carries it, with or without `provision app`'s rules and bucket), and the ring is bounded
//! ([`READINGS_PER_PUMP`], [`MAX_PUMPS`], [`MAX_EVENTS`]), so a busy fleet cannot grow it. It
//! starts empty at each start of the local cloud; history lives in S3 and DynamoDB.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

/// Readings kept per pump (the chart's window).
pub const READINGS_PER_PUMP: usize = 300;

/// Pumps kept; the one heard from least recently goes first.
pub const MAX_PUMPS: usize = 100;

/// Anomaly events and job-execution changes kept (each).
pub const MAX_EVENTS: usize = 200;

#[derive(Debug, Default)]
struct Rings {
    /// Per pump: its readings (oldest first) and the sequence number of its last batch.
    telemetry: BTreeMap<String, (VecDeque<Value>, u64)>,
    anomalies: VecDeque<Value>,
    executions: VecDeque<Value>,
    batches: u64,
    ignored: u64,
}

/// The rings, shared by the broker's observer and the dashboard's API.
#[derive(Debug, Clone, Default)]
pub struct Recent(Arc<Mutex<Rings>>);

/// The thing of a `dt/pump/{thing}/{kind}` topic.
fn pump_topic<'a>(topic: &'a str, kind: &str) -> Option<&'a str> {
    let rest = topic.strip_prefix("dt/pump/")?;
    let (thing, tail) = rest.split_once('/')?;
    (tail == kind && !thing.is_empty()).then_some(thing)
}

fn push_bounded(ring: &mut VecDeque<Value>, item: Value, max: usize) {
    ring.push_back(item);
    while ring.len() > max {
        ring.pop_front();
    }
}

impl Recent {
    fn rings(&self) -> std::sync::MutexGuard<'_, Rings> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes in one message the broker carried: a telemetry batch or an anomaly event is kept;
    /// anything else, or a payload that is not the documented JSON, is counted and dropped.
    pub fn observe(&self, topic: &str, payload: &[u8]) {
        if let Some(thing) = pump_topic(topic, "telemetry") {
            let readings = serde_json::from_slice::<Value>(payload)
                .ok()
                .and_then(|v| v.get("readings").and_then(Value::as_array).cloned());
            let mut rings = self.rings();
            let Some(readings) = readings else {
                rings.ignored += 1;
                return;
            };
            rings.batches += 1;
            let batch = rings.batches;
            if !rings.telemetry.contains_key(thing) && rings.telemetry.len() >= MAX_PUMPS {
                let stalest = rings.telemetry.iter().min_by_key(|(_, (_, seen))| *seen).map(|(k, _)| k.clone());
                if let Some(stalest) = stalest {
                    rings.telemetry.remove(&stalest);
                }
            }
            let (ring, seen) = rings.telemetry.entry(thing.to_owned()).or_default();
            *seen = batch;
            for reading in readings.into_iter().filter(|r| r.get("ts").and_then(Value::as_u64).is_some()) {
                push_bounded(ring, reading, READINGS_PER_PUMP);
            }
        } else if let Some(thing) = pump_topic(topic, "anomalies") {
            let mut rings = self.rings();
            match serde_json::from_slice::<Map<String, Value>>(payload) {
                Ok(mut event) => {
                    event.insert("thing".into(), Value::String(thing.to_owned()));
                    push_bounded(&mut rings.anomalies, Value::Object(event), MAX_EVENTS);
                }
                Err(_) => rings.ignored += 1,
            }
        }
    }

    /// Records a job execution's status change (from Jobs' announcements), at `at_ms`.
    pub fn execution_changed(&self, job_id: &str, thing: &str, status: &str, at_ms: u64) {
        let change = json!({"jobId": job_id, "thing": thing, "status": status, "at": at_ms});
        push_bounded(&mut self.rings().executions, change, MAX_EVENTS);
    }

    /// The readings per pump, oldest first.
    pub fn telemetry(&self) -> Value {
        let rings = self.rings();
        let pumps: Map<String, Value> = rings
            .telemetry
            .iter()
            .map(|(thing, (ring, _))| (thing.clone(), Value::Array(ring.iter().cloned().collect())))
            .collect();
        json!({"pumps": pumps, "batches": rings.batches, "ignored": rings.ignored})
    }

    /// Anomaly events, newest first.
    pub fn anomalies(&self) -> Vec<Value> {
        self.rings().anomalies.iter().rev().cloned().collect()
    }

    /// Job-execution status changes seen, oldest first.
    pub fn executions(&self) -> Vec<Value> {
        self.rings().executions.iter().cloned().collect()
    }
}

/// The broker's observer that feeds [`Recent`]: it owns no topic, it only watches.
#[derive(Debug, Clone)]
pub struct Tap(pub Recent);

impl crate::bus::ServiceHandler for Tap {
    fn wants(&self, _topic: &str) -> bool {
        false
    }

    fn handle(&self, _from: &crate::bus::Publisher, _topic: &str, _payload: bytes::Bytes) {}

    fn observe(&self, _from: Option<&crate::bus::Publisher>, topic: &str, payload: &bytes::Bytes) {
        self.0.observe(topic, payload);
    }
}

/// Records every job-execution status change Jobs announces, until `shutdown`.
pub async fn follow_executions(
    recent: Recent,
    mut changes: tokio::sync::broadcast::Receiver<crate::jobs::ExecutionChange>,
    clock: crate::time::SharedClock,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            change = changes.recv() => match change {
                Ok(c) => recent.execution_changed(&c.job_id, &c.thing_name, c.status.as_str(), clock.now_millis()),
                Err(RecvError::Lagged(n)) => tracing::debug!(missed = n, "the dashboard missed job-execution changes"),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_batches_fill_a_bounded_ring_per_pump() {
        let recent = Recent::default();
        for i in 0..(READINGS_PER_PUMP as u64 + 10) {
            let batch = json!({"v": 1, "thing": "ignored", "readings": [{"ts": 1000 + i, "seq": i, "flow_m3h": 40.0}]});
            recent.observe("dt/pump/core-1/telemetry", batch.to_string().as_bytes());
        }
        let telemetry = recent.telemetry();
        let ring = telemetry["pumps"]["core-1"].as_array().unwrap();
        assert_eq!(ring.len(), READINGS_PER_PUMP);
        assert_eq!(ring[0]["seq"], 10, "the oldest readings went first");
        assert!(telemetry["pumps"].get("ignored").is_none(), "the topic names the pump, not the payload");
    }

    #[test]
    fn malformed_payloads_and_other_topics_are_dropped_and_counted() {
        let recent = Recent::default();
        recent.observe("dt/pump/core-1/telemetry", b"not json");
        recent.observe("dt/pump/core-1/telemetry", br#"{"readings": "no"}"#);
        recent.observe("dt/pump/core-1/anomalies", b"[1]");
        recent.observe("dt/pump//telemetry", br#"{"readings": []}"#);
        recent.observe("sensors/core-1/telemetry", br#"{"readings": []}"#);
        let telemetry = recent.telemetry();
        assert_eq!((telemetry["ignored"].as_u64(), telemetry["batches"].as_u64()), (Some(3), Some(0)));
        assert!(recent.anomalies().is_empty());
    }

    #[test]
    fn the_pump_heard_from_least_recently_makes_room() {
        let recent = Recent::default();
        let batch = br#"{"readings": [{"ts": 1}]}"#;
        for i in 0..MAX_PUMPS {
            recent.observe(&format!("dt/pump/p{i}/telemetry"), batch);
        }
        recent.observe("dt/pump/p0/telemetry", batch);
        recent.observe("dt/pump/new/telemetry", batch);
        let telemetry = recent.telemetry();
        let pumps = telemetry["pumps"].as_object().unwrap();
        assert_eq!(pumps.len(), MAX_PUMPS);
        assert!(pumps.contains_key("p0") && pumps.contains_key("new") && !pumps.contains_key("p1"));
    }

    #[test]
    fn anomaly_events_are_kept_newest_first_with_their_pump() {
        let recent = Recent::default();
        for id in ["a", "b"] {
            recent.observe("dt/pump/core-1/anomalies", json!({"id": id, "kind": "cavitation"}).to_string().as_bytes());
        }
        let events = recent.anomalies();
        assert_eq!((events[0]["id"].as_str(), events[0]["thing"].as_str()), (Some("b"), Some("core-1")));
    }
}
