//! Anomaly windows for retraining: when an anomaly is raised, the readings around it — the
//! `windowSamples` readings that led to it and the next `afterSamples` — become one JSON object
//! in S3 under the thing's own prefix (`{thing}/anomalies/{YYYY-MM-DD}/{event id}.json`), the
//! data a retraining job learns from. The I/O shell ([`crate::service`]) queues each finished
//! window in a durable outbox and puts it with credentials from the core's token exchange
//! service; this module is the pure part: the configuration, the recorder and the object.

use std::collections::VecDeque;

use pump_types::{AnomalyEvent, Reading};
use serde::{Deserialize, Serialize};

/// The most readings after a raise a window may wait for.
pub const MAX_AFTER_SAMPLES: usize = 3_600;

/// Where windows go (recipe key `anomalyUpload`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct UploadConfig {
    /// The S3 bucket; empty: nothing is recorded or uploaded.
    pub bucket: String,
    /// An S3 endpoint instead of AWS's for the core's Region (the local cloud's); empty: AWS's.
    pub endpoint_url: String,
    /// Readings after the raise that complete a window.
    pub after_samples: usize,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig { bucket: String::new(), endpoint_url: String::new(), after_samples: 30 }
    }
}

impl UploadConfig {
    /// Whether windows are uploaded.
    pub fn enabled(&self) -> bool {
        !self.bucket.is_empty()
    }

    /// Why the settings cannot work, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.enabled() && !valid_bucket_name(&self.bucket) {
            return Err(format!(
                "anomalyUpload.bucket {:?} is not an S3 bucket name (3-63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit)",
                self.bucket
            ));
        }
        let url = &self.endpoint_url;
        if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "anomalyUpload.endpointUrl {:?} must be an http:// or https:// URL",
                self.endpoint_url
            ));
        }
        if self.after_samples > MAX_AFTER_SAMPLES {
            return Err(format!("anomalyUpload.afterSamples {} is over {MAX_AFTER_SAMPLES}", self.after_samples));
        }
        Ok(())
    }
}

fn valid_bucket_name(name: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(name.chars().next())
        && edge(name.chars().last())
        && !name.contains("..")
}

/// A finished window: where it goes and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyWindow {
    /// The object key.
    pub key: String,
    /// The JSON document.
    pub body: Vec<u8>,
}

/// The object stored for one anomaly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowDocument {
    /// Format version (1).
    pub v: u8,
    /// The core device.
    pub thing: String,
    /// The raise.
    pub event: AnomalyEvent,
    /// How many of `readings` came before the raise, the raising reading included.
    pub before_samples: usize,
    /// The readings, oldest first.
    pub readings: Vec<Reading>,
}

/// The object key of `event`'s window: under the thing's own prefix, by UTC day.
pub fn object_key(thing: &str, event: &AnomalyEvent) -> String {
    let day = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.ts) * 1_000_000)
        .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_else(|_| "unknown-day".into());
    let id: String =
        event.id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    format!("{thing}/anomalies/{day}/{id}.json")
}

struct Capture {
    event: AnomalyEvent,
    readings: Vec<Reading>,
    before: usize,
    remaining: usize,
}

/// Keeps the last readings and the windows still waiting for readings after their raise.
pub struct Recorder {
    thing: String,
    before: usize,
    after: usize,
    recent: VecDeque<Reading>,
    open: Vec<Capture>,
}

impl Recorder {
    /// A recorder for `thing` keeping `before` readings (the analyzer's window) and waiting for
    /// `after` more after each raise.
    pub fn new(thing: &str, before: usize, after: usize) -> Self {
        Recorder { thing: thing.to_owned(), before: before.max(1), after, recent: VecDeque::new(), open: Vec::new() }
    }

    /// Changes how many readings are kept before a raise (the analyzer's window was resized).
    pub fn resize(&mut self, before: usize) {
        self.before = before.max(1);
        while self.recent.len() > self.before {
            self.recent.pop_front();
        }
    }

    /// A reading the analyzer accepted; returns the windows it completes.
    pub fn reading(&mut self, reading: &Reading) -> Vec<AnomalyWindow> {
        self.recent.push_back(reading.clone());
        while self.recent.len() > self.before {
            self.recent.pop_front();
        }
        for capture in &mut self.open {
            capture.readings.push(reading.clone());
            capture.remaining -= 1;
        }
        self.take_finished(false)
    }

    /// The events the analyzer emitted for the last reading: each raise opens a window holding
    /// the readings kept so far; returns the windows already complete (`after` = 0).
    pub fn events(&mut self, events: &[AnomalyEvent]) -> Vec<AnomalyWindow> {
        for event in events.iter().filter(|e| e.active) {
            let readings: Vec<Reading> = self.recent.iter().cloned().collect();
            let before = readings.len();
            self.open.push(Capture { event: event.clone(), readings, before, remaining: self.after });
        }
        self.take_finished(false)
    }

    /// Every open window as it stands (at a stop: a window cut short beats no window).
    pub fn flush(&mut self) -> Vec<AnomalyWindow> {
        self.take_finished(true)
    }

    /// Windows still waiting for readings.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    fn take_finished(&mut self, all: bool) -> Vec<AnomalyWindow> {
        let (done, open): (Vec<Capture>, Vec<Capture>) =
            std::mem::take(&mut self.open).into_iter().partition(|c| all || c.remaining == 0);
        self.open = open;
        done.into_iter().map(|c| self.window(c)).collect()
    }

    fn window(&self, c: Capture) -> AnomalyWindow {
        let key = object_key(&self.thing, &c.event);
        let doc = WindowDocument {
            v: 1,
            thing: self.thing.clone(),
            event: c.event,
            before_samples: c.before,
            readings: c.readings,
        };
        AnomalyWindow { key, body: serde_json::to_vec(&doc).unwrap_or_default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pump_types::{AnomalyKind, Measurements};
    use std::collections::BTreeMap;

    fn reading(seq: u64) -> Reading {
        Reading {
            v: pump_types::PAYLOAD_VERSION,
            seq,
            ts: 1_800_000_000_000 + seq * 1000,
            m: Measurements::default(),
            running: true,
            bypass_open: false,
        }
    }

    fn event(id: &str, active: bool) -> AnomalyEvent {
        AnomalyEvent {
            v: pump_types::PAYLOAD_VERSION,
            id: id.into(),
            ts: 1_800_000_000_000,
            reading_seq: 0,
            detector: "rules".into(),
            kind: AnomalyKind::BearingWear,
            active,
            severity: 0.6,
            reason: "test".into(),
            features: BTreeMap::new(),
        }
    }

    fn doc(w: &AnomalyWindow) -> WindowDocument {
        serde_json::from_slice(&w.body).unwrap()
    }

    #[test]
    fn a_raise_records_the_window_before_it_and_the_readings_after_it() {
        let mut rec = Recorder::new("pump-core-1", 3, 2);
        for seq in 1..=5 {
            assert!(rec.reading(&reading(seq)).is_empty());
        }
        assert!(rec.events(&[event("bearing_wear-1", true), event("cavitation-0", false)]).is_empty());
        assert_eq!(rec.open(), 1, "only raises open a window");
        assert!(rec.reading(&reading(6)).is_empty());
        let done = rec.reading(&reading(7));
        assert_eq!(done.len(), 1);
        assert_eq!(rec.open(), 0);
        let d = doc(&done[0]);
        assert_eq!(d.readings.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3, 4, 5, 6, 7]);
        assert_eq!(d.before_samples, 3);
        assert_eq!((d.thing.as_str(), d.event.id.as_str()), ("pump-core-1", "bearing_wear-1"));
        assert_eq!(done[0].key, "pump-core-1/anomalies/2027-01-15/bearing_wear-1.json");
    }

    #[test]
    fn without_readings_after_the_window_is_finished_at_the_raise_and_a_stop_flushes_open_ones() {
        let mut rec = Recorder::new("t", 2, 0);
        rec.reading(&reading(1));
        assert_eq!(rec.events(&[event("a", true)]).len(), 1);
        let mut rec = Recorder::new("t", 2, 10);
        rec.reading(&reading(1));
        rec.events(&[event("a", true)]);
        rec.reading(&reading(2));
        let flushed = rec.flush();
        assert_eq!(flushed.len(), 1);
        assert_eq!(doc(&flushed[0]).readings.len(), 2);
        assert_eq!(rec.open(), 0);
    }

    #[test]
    fn a_smaller_window_keeps_fewer_readings() {
        let mut rec = Recorder::new("t", 5, 0);
        for seq in 1..=5 {
            rec.reading(&reading(seq));
        }
        rec.resize(2);
        let done = rec.events(&[event("a", true)]);
        assert_eq!(doc(&done[0]).readings.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn keys_stay_under_the_things_prefix_whatever_the_event_id() {
        let key = object_key("pump-core-1", &event("../../other/x y", true));
        assert!(key.starts_with("pump-core-1/anomalies/"), "{key}");
        assert!(!key.contains("/../") && !key.contains(' '), "{key}");
    }

    #[test]
    fn settings_are_checked() {
        assert!(UploadConfig::default().check().is_ok());
        assert!(!UploadConfig::default().enabled());
        let ok = UploadConfig {
            bucket: "pump-anomalies".into(),
            endpoint_url: "http://127.0.0.1:4566".into(),
            after_samples: 30,
        };
        assert!(ok.check().is_ok() && ok.enabled());
        for bad in [
            UploadConfig { bucket: "Pump_Anomalies".into(), ..ok.clone() },
            UploadConfig { bucket: "ab".into(), ..ok.clone() },
            UploadConfig { endpoint_url: "127.0.0.1:4566".into(), ..ok.clone() },
            UploadConfig { after_samples: MAX_AFTER_SAMPLES + 1, ..ok.clone() },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
