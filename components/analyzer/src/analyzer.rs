//! The analyzer's pure core: readings in, anomaly events out. No I/O, no clock (`now_ms` is
//! passed in): the component's shell feeds it what arrives on `pump/readings` and publishes
//! what it returns.

use std::collections::BTreeMap;

use pump_map::Measurement;
use pump_types::{AnomalyEvent, AnomalyKind, ModelInfo, ModelStatus, PAYLOAD_VERSION, PayloadError, Reading};

use crate::config::{Config, ConfigError, DetectorChoice};
use crate::detector::{ALL_KINDS, Detector, Evidence, Finding, kind_name};
use crate::features::Window;
use crate::hysteresis::{Observation, Track, Transition};
use crate::model::{Model, ModelDetector, ModelError};
use crate::rules::RulesDetector;

/// A reading more than this far behind the previous one, or ahead of it, starts a fresh window:
/// the sensor's clock jumped or readings stopped for a while, and statistics across the gap
/// would mislead.
pub const MAX_GAP_MS: u64 = 60_000;

/// Why a reading was ignored. Each is counted; none stops the analyzer.
#[derive(Debug, thiserror::Error)]
pub enum Ignored {
    /// Not a `Reading` payload (or another version).
    #[error(transparent)]
    Malformed(#[from] PayloadError),
    /// A measurement that is not a finite number.
    #[error("reading {seq}: {measurement} is not a finite number")]
    NotFinite {
        /// The reading's `seq`.
        seq: u64,
        /// Which measurement.
        measurement: &'static str,
    },
    /// Not newer than the last reading (a duplicate or a late one).
    #[error("reading {seq} at {ts} is not newer than the last one at {last_ts}")]
    Stale {
        /// The reading's `seq`.
        seq: u64,
        /// Its timestamp.
        ts: u64,
        /// The newest timestamp seen.
        last_ts: u64,
    },
}

/// What the analyzer has seen since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Readings assessed.
    pub readings: u64,
    /// Payloads that were not readings, or carried a non-finite value.
    pub malformed: u64,
    /// Readings not newer than the last one.
    pub stale: u64,
    /// Times the window was restarted after a gap or a clock jump.
    pub gaps: u64,
    /// Anomalies raised.
    pub raised: u64,
    /// Anomalies cleared.
    pub cleared: u64,
}

/// A raised anomaly, remembered until it clears.
#[derive(Debug, Clone)]
struct Active {
    id: String,
    event: AnomalyEvent,
}

/// One detector with its hysteresis state per kind.
struct Slot {
    detector: Box<dyn Detector>,
    tracks: BTreeMap<AnomalyKind, Track>,
    active: BTreeMap<AnomalyKind, Active>,
}

impl Slot {
    fn new(detector: Box<dyn Detector>) -> Self {
        Slot { detector, tracks: BTreeMap::new(), active: BTreeMap::new() }
    }
}

/// Readings in, [`AnomalyEvent`]s out.
pub struct Analyzer {
    config: Config,
    window: Window,
    slots: Vec<Slot>,
    counters: Counters,
    /// The model offered last that passed its checks.
    model: Option<Model>,
    /// Why the model offered last was refused (cleared when one is accepted).
    refusal: Option<String>,
    /// Why the configured model detector does not run (the rules run instead).
    degraded: Option<String>,
}

impl std::fmt::Debug for Analyzer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyzer")
            .field("config", &self.config)
            .field("window", &self.window.len())
            .field("detectors", &self.slots.iter().map(|s| s.detector.name().to_owned()).collect::<Vec<_>>())
            .field("counters", &self.counters)
            .finish()
    }
}

/// The detectors `config` asks for, given the model that is loaded (if any), and why the model
/// is not among them when the configuration asks for it. Without a usable model the rules run:
/// a pump is never left unwatched.
fn detectors(config: &Config, model: Option<&Model>) -> (Vec<Box<dyn Detector>>, Option<String>) {
    let rules = || -> Box<dyn Detector> { Box::new(RulesDetector::new(config.rules.clone())) };
    if config.detector == DetectorChoice::Rules {
        return (vec![rules()], None);
    }
    let usable = match model {
        None => Err("no model is loaded".to_owned()),
        Some(m) => m.check_window(config.window_samples).map(|()| m).map_err(|e| e.to_string()),
    };
    match (config.detector, usable) {
        (DetectorChoice::Both, Ok(m)) => {
            (vec![rules(), Box::new(ModelDetector::new(m.clone(), config.model.clone()))], None)
        }
        (_, Ok(m)) => (vec![Box::new(ModelDetector::new(m.clone(), config.model.clone()))], None),
        (_, Err(why)) => (vec![rules()], Some(why)),
    }
}

impl Analyzer {
    /// An analyzer with the detectors `config` chooses. No model is loaded yet
    /// ([`Analyzer::offer_model`]): with `detector: model` the rules run until one is.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        config.validate()?;
        let (detectors, degraded) = detectors(&config, None);
        let mut analyzer = Self::with_detectors(config, detectors);
        analyzer.degraded = degraded;
        Ok(analyzer)
    }

    /// An analyzer with the given detectors (tests, and detectors built elsewhere).
    pub fn with_detectors(config: Config, detectors: Vec<Box<dyn Detector>>) -> Self {
        Analyzer {
            window: Window::new(config.window_samples),
            slots: detectors.into_iter().map(Slot::new).collect(),
            counters: Counters::default(),
            config,
            model: None,
            refusal: None,
            degraded: None,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The anomalies raised and not yet cleared (their raising events).
    pub fn active(&self) -> Vec<&AnomalyEvent> {
        self.slots.iter().flat_map(|s| s.active.values().map(|a| &a.event)).collect()
    }

    /// Applies a new configuration. The window keeps its readings (trimmed if shorter); a
    /// detector that stays keeps its raised anomalies; a detector that goes clears its own.
    /// On error nothing changes.
    pub fn reconfigure(&mut self, config: Config, now_ms: u64) -> Result<Vec<AnomalyEvent>, ConfigError> {
        config.validate()?;
        let events = self.rebuild(&config, now_ms);
        self.window.resize(config.window_samples);
        self.config = config;
        Ok(events)
    }

    /// Offers a model that was loaded (or refused) from the model component. A checked model
    /// replaces the previous one (a model detector that runs keeps its raised anomalies: the new
    /// version continues its hysteresis); a refused one changes no detector and is reported in
    /// [`Analyzer::model_status`] until a model is accepted.
    pub fn offer_model(&mut self, offered: Result<Model, ModelError>, now_ms: u64) -> Vec<AnomalyEvent> {
        match offered {
            Ok(model) => {
                self.model = Some(model);
                self.refusal = None;
                let config = self.config.clone();
                self.rebuild(&config, now_ms)
            }
            Err(e) => {
                self.refusal = Some(match &self.model {
                    Some(kept) => format!("model refused, keeping version {}: {e}", kept.version()),
                    None => format!("model refused: {e}"),
                });
                Vec::new()
            }
        }
    }

    /// The loaded model (running or standing by), if any.
    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }

    /// What runs and what became of the model, as published on [`pump_types::MODEL_TOPIC`].
    pub fn model_status(&self, now_ms: u64) -> ModelStatus {
        let error = match (&self.refusal, &self.degraded) {
            (Some(r), Some(d)) if !r.contains(d.as_str()) => Some(format!("{r}; rules run instead: {d}")),
            (Some(r), _) => Some(r.clone()),
            (None, Some(d)) => Some(format!("rules run instead of the model: {d}")),
            (None, None) => None,
        };
        ModelStatus {
            v: PAYLOAD_VERSION,
            ts: now_ms,
            detector: self.config.detector.as_str().to_owned(),
            running: self.slots.iter().map(|s| s.detector.name().to_owned()).collect(),
            model: self.model.as_ref().map(|m| ModelInfo {
                name: m.card().name.clone(),
                version: m.version().to_owned(),
                sha256: m.sha256().to_owned(),
            }),
            error,
        }
    }

    /// Replaces the detectors with those `config` and the loaded model call for; returns the
    /// clearing events of the detectors that go.
    fn rebuild(&mut self, config: &Config, now_ms: u64) -> Vec<AnomalyEvent> {
        let (new, degraded) = detectors(config, self.model.as_ref());
        self.degraded = degraded;
        let mut events = Vec::new();
        let mut old: Vec<Slot> = std::mem::take(&mut self.slots);
        for detector in new {
            let slot = match old.iter().position(|s| s.detector.name() == detector.name()) {
                Some(i) => {
                    let mut s = old.remove(i);
                    s.detector = detector;
                    s
                }
                None => Slot::new(detector),
            };
            self.slots.push(slot);
        }
        for slot in old {
            for (_, active) in slot.active {
                let reason = format!("the {} detector stopped running", active.event.detector);
                events.push(clear_event(&active, now_ms, 0, &reason));
                self.counters.cleared += 1;
            }
        }
        events
    }

    /// Parses a payload from `pump/readings` and assesses it.
    pub fn handle_payload(&mut self, now_ms: u64, payload: &[u8]) -> Result<Vec<AnomalyEvent>, Ignored> {
        let reading = self.parse_payload(payload)?;
        self.handle_reading(now_ms, &reading)
    }

    /// A `pump/readings` payload as a reading; a malformed one is counted and refused.
    pub fn parse_payload(&mut self, payload: &[u8]) -> Result<Reading, Ignored> {
        pump_types::parse::<Reading>(payload).map_err(|e| {
            self.counters.malformed += 1;
            e.into()
        })
    }

    /// Assesses one reading; returns the events to publish, in order.
    pub fn handle_reading(&mut self, now_ms: u64, reading: &Reading) -> Result<Vec<AnomalyEvent>, Ignored> {
        if let Some(m) = Measurement::ALL.iter().find(|m| !reading.m.get(**m).is_finite()) {
            self.counters.malformed += 1;
            return Err(Ignored::NotFinite { seq: reading.seq, measurement: m.name() });
        }
        if let Some(last_ts) = self.window.last_ts() {
            let behind = last_ts.saturating_sub(reading.ts);
            if reading.ts <= last_ts && behind <= MAX_GAP_MS {
                self.counters.stale += 1;
                return Err(Ignored::Stale { seq: reading.seq, ts: reading.ts, last_ts });
            }
            if behind > MAX_GAP_MS || reading.ts - last_ts > MAX_GAP_MS {
                self.window.clear();
                self.counters.gaps += 1;
            }
        }
        self.window.push(reading);
        self.counters.readings += 1;
        let features = self.window.features();
        let (raise_after, clear_after) = (self.config.raise_after, self.config.clear_after);
        let mut events = Vec::new();
        for slot in &mut self.slots {
            let findings = slot.detector.assess(&features, reading);
            let detector = slot.detector.name().to_owned();
            for kind in ALL_KINDS {
                let found: Option<&Finding> = findings.iter().find(|f| f.kind == kind);
                let observation = found.map_or(Observation::Normal, |f| Observation::Finding(f.evidence));
                let track = slot.tracks.entry(kind).or_default();
                match track.observe(observation, raise_after, clear_after) {
                    Some(Transition::Raised) => {
                        // Only `Raise` evidence can raise, so a finding is there.
                        let Some(f) = found.filter(|f| f.evidence == Evidence::Raise) else { continue };
                        let id = format!("{detector}-{}-{now_ms}-{}", kind_name(kind), reading.seq);
                        let event = AnomalyEvent {
                            v: PAYLOAD_VERSION,
                            id: id.clone(),
                            ts: now_ms,
                            reading_seq: reading.seq,
                            detector: detector.clone(),
                            kind,
                            active: true,
                            severity: f.severity.clamp(0.0, 1.0),
                            reason: f.reason.clone(),
                            features: f.features.clone(),
                        };
                        slot.active.insert(kind, Active { id, event: event.clone() });
                        self.counters.raised += 1;
                        events.push(event);
                    }
                    Some(Transition::Cleared) => {
                        if let Some(active) = slot.active.remove(&kind) {
                            let reason = format!("normal for {clear_after} consecutive readings");
                            events.push(clear_event(&active, now_ms, reading.seq, &reason));
                            self.counters.cleared += 1;
                        }
                    }
                    None => {}
                }
            }
        }
        Ok(events)
    }
}

/// The event that clears `active`: same id, `active: false`, severity 0.
fn clear_event(active: &Active, now_ms: u64, reading_seq: u64, reason: &str) -> AnomalyEvent {
    AnomalyEvent {
        v: PAYLOAD_VERSION,
        id: active.id.clone(),
        ts: now_ms,
        reading_seq,
        detector: active.event.detector.clone(),
        kind: active.event.kind,
        active: false,
        severity: 0.0,
        reason: reason.to_owned(),
        features: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests;
