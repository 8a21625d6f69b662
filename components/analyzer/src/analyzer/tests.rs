use std::collections::BTreeMap;

use pump_map::Measurements;
use pump_types::{AnomalyKind, Reading};
use serde_json::json;

use super::*;
use crate::detector::{Detector, Evidence, Finding};
use crate::features::Features;

/// A detector that says what it is told, reading by reading (`None`: normal).
struct Scripted {
    name: &'static str,
    script: Vec<Option<Evidence>>,
    next: usize,
}

impl Detector for Scripted {
    fn name(&self) -> &str {
        self.name
    }

    fn assess(&mut self, _: &Features, reading: &Reading) -> Vec<Finding> {
        let step = self.script.get(self.next).copied().flatten();
        self.next += 1;
        step.map(|evidence| Finding {
            kind: AnomalyKind::Cavitation,
            evidence,
            severity: 0.7,
            reason: format!("scripted at {}", reading.seq),
            features: BTreeMap::from([("x".to_owned(), 1.0)]),
        })
        .into_iter()
        .collect()
    }
}

fn config(raise_after: u32, clear_after: u32) -> Config {
    Config { raise_after, clear_after, ..Config::default() }
}

fn scripted(script: Vec<Option<Evidence>>) -> Box<dyn Detector> {
    Box::new(Scripted { name: "scripted", script, next: 0 })
}

fn reading(seq: u64) -> Reading {
    let m = Measurements { speed_rpm: 2900.0 + seq as f64, ..Measurements::default() };
    Reading { v: 1, seq, ts: 1_000 * seq, m, running: true, bypass_open: false }
}

#[test]
fn raise_and_clear_events_share_an_id_and_follow_the_hysteresis() {
    use Evidence::Raise as R;
    let script = vec![Some(R), Some(R), None, None, None];
    let mut a = Analyzer::with_detectors(config(2, 3), vec![scripted(script)]);
    let mut events = Vec::new();
    let mut active = Vec::new();
    for seq in 1..=5 {
        events.push(a.handle_reading(50_000 + seq, &reading(seq)).unwrap());
        active.push(a.active().len());
    }
    assert_eq!(active, [0, 1, 1, 1, 0]);
    assert!(events[0].is_empty());
    let raised = &events[1][0];
    assert_eq!(events[1].len(), 1);
    assert_eq!(
        (raised.active, raised.kind, raised.reading_seq, raised.ts, raised.severity),
        (true, AnomalyKind::Cavitation, 2, 50_002, 0.7)
    );
    assert_eq!(raised.detector, "scripted");
    assert_eq!(raised.reason, "scripted at 2");
    assert_eq!(raised.id, "scripted-cavitation-50002-2");
    assert!(events[2].is_empty() && events[3].is_empty());
    let cleared = &events[4][0];
    assert_eq!((cleared.active, cleared.id.as_str(), cleared.reading_seq), (false, raised.id.as_str(), 5));
    assert_eq!(cleared.severity, 0.0);
    assert!(a.active().is_empty());
    assert_eq!((a.counters().raised, a.counters().cleared, a.counters().readings), (1, 1, 5));
}

#[test]
fn malformed_payloads_are_counted_and_ignored() {
    let mut a = Analyzer::new(Config::default()).unwrap();
    let good = serde_json::to_vec(&reading(1)).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"\x00\xffnope".to_vec()),
        ("JSON, not an object", b"[1,2,3]".to_vec()),
        ("no version", br#"{"seq":1}"#.to_vec()),
        ("a newer version", br#"{"v":2,"seq":1}"#.to_vec()),
        ("a field missing", br#"{"v":1,"seq":1,"ts":5}"#.to_vec()),
        ("a measurement of the wrong type", {
            let mut v = serde_json::to_value(reading(3)).unwrap();
            v["m"]["flow_m3h"] = json!("fast");
            serde_json::to_vec(&v).unwrap()
        }),
        ("empty", Vec::new()),
    ];
    for (name, payload) in &cases {
        let r = a.handle_payload(1, payload);
        assert!(matches!(r, Err(Ignored::Malformed(_))), "{name}: {r:?}");
    }
    assert_eq!(a.counters().malformed, cases.len() as u64);
    assert_eq!(a.counters().readings, 0);
    assert!(a.handle_payload(1, &good).is_ok());
    assert_eq!(a.counters().readings, 1);
}

#[test]
fn a_non_finite_measurement_is_refused() {
    let mut a = Analyzer::new(Config::default()).unwrap();
    let mut r = reading(1);
    r.m.motor_temp_c = f64::NAN;
    assert!(matches!(a.handle_reading(1, &r), Err(Ignored::NotFinite { measurement: "motor_temp_c", .. })));
    r.m.motor_temp_c = f64::INFINITY;
    assert!(a.handle_reading(1, &r).is_err());
    assert_eq!((a.counters().malformed, a.counters().readings), (2, 0));
}

#[test]
fn stale_readings_are_ignored_and_gaps_restart_the_window() {
    let mut a = Analyzer::new(Config::default()).unwrap();
    let at = |seq: u64, ts: u64| Reading { ts, ..reading(seq) };
    assert!(a.handle_reading(0, &at(1, 100_000)).is_ok());
    assert!(a.handle_reading(0, &at(2, 101_000)).is_ok());
    // A duplicate and a late one.
    assert!(matches!(a.handle_reading(0, &at(2, 101_000)), Err(Ignored::Stale { .. })));
    assert!(matches!(a.handle_reading(0, &at(1, 100_500)), Err(Ignored::Stale { .. })));
    assert_eq!(a.counters().stale, 2);
    assert_eq!(a.window.len(), 2);
    // A long silence, then a clock that jumped back: each starts a fresh window.
    assert!(a.handle_reading(0, &at(3, 101_000 + MAX_GAP_MS + 1)).is_ok());
    assert_eq!((a.window.len(), a.counters().gaps), (1, 1));
    assert!(a.handle_reading(0, &at(4, 10_000)).is_ok());
    assert_eq!((a.window.len(), a.counters().gaps), (1, 2));
    assert_eq!(a.counters().readings, 4);
}

#[test]
fn detector_model_without_a_model_runs_the_rules_and_says_why() {
    for choice in [DetectorChoice::Model, DetectorChoice::Both] {
        let a = Analyzer::new(Config { detector: choice, ..Config::default() }).unwrap();
        let status = a.model_status(3);
        assert_eq!(status.detector, choice.as_str());
        assert_eq!(status.running, ["rules"]);
        assert_eq!(status.model, None);
        assert!(status.error.as_deref().unwrap().contains("no model is loaded"), "{status:?}");
    }
    let a = Analyzer::new(Config::default()).unwrap();
    assert_eq!((a.model_status(0).running, a.model_status(0).error), (vec!["rules".to_owned()], None));
}

#[test]
fn an_accepted_model_runs_as_configured() {
    let model = crate::model::tests::committed();
    let mut a = Analyzer::new(Config { detector: DetectorChoice::Both, ..Config::default() }).unwrap();
    assert!(a.offer_model(Ok(model.clone()), 1).is_empty());
    let status = a.model_status(2);
    assert_eq!(status.running, ["rules", "model"]);
    assert_eq!(status.error, None);
    let info = status.model.unwrap();
    assert_eq!((info.version.as_str(), info.sha256.as_str()), (model.version(), model.sha256()));
    // `rules` keeps the model ready without running it.
    a.reconfigure(Config::default(), 3).unwrap();
    assert_eq!(a.model_status(4).running, ["rules"]);
    assert!(a.model_status(4).model.is_some());
}

#[test]
fn a_refused_model_keeps_the_model_that_runs() {
    let model = crate::model::tests::committed();
    let mut a = Analyzer::new(Config { detector: DetectorChoice::Model, ..Config::default() }).unwrap();
    a.offer_model(Ok(model.clone()), 1);
    let refused = crate::model::ModelError::Schema("input shape [N, 100]".into());
    assert!(a.offer_model(Err(refused), 2).is_empty());
    let status = a.model_status(3);
    assert_eq!(status.running, ["model"]);
    assert_eq!(status.model.unwrap().version, model.version());
    let error = status.error.unwrap();
    assert!(error.contains("keeping version") && error.contains("input shape [N, 100]"), "{error}");
    // A model accepted later clears the refusal.
    a.offer_model(Ok(model.clone()), 4);
    assert_eq!(a.model_status(5).error, None);
}

#[test]
fn a_refused_first_model_leaves_the_rules_running() {
    let mut a = Analyzer::new(Config { detector: DetectorChoice::Model, ..Config::default() }).unwrap();
    let refused = crate::model::ModelError::Digest {
        file: "model.onnx".into(),
        expected: "aa".into(),
        actual: "bb".into(),
        bytes: 3,
    };
    a.offer_model(Err(refused), 1);
    let status = a.model_status(2);
    assert_eq!(status.running, ["rules"]);
    let error = status.error.unwrap();
    assert!(error.contains("model refused") && error.contains("SHA-256 bb"), "{error}");
}

#[test]
fn a_window_the_model_was_not_trained_on_runs_the_rules_instead() {
    let mut a = Analyzer::new(Config { detector: DetectorChoice::Model, ..Config::default() }).unwrap();
    a.offer_model(Ok(crate::model::tests::committed().clone()), 1);
    assert_eq!(a.model_status(1).running, ["model"]);
    let events = a.reconfigure(Config { detector: DetectorChoice::Model, window_samples: 30, ..Config::default() }, 2);
    assert!(events.unwrap().is_empty());
    let status = a.model_status(3);
    assert_eq!(status.running, ["rules"]);
    assert!(status.error.unwrap().contains("windowSamples is 30"));
}

#[test]
fn the_model_detector_raises_bearing_wear_as_a_model_event() {
    let mut a = Analyzer::new(Config { detector: DetectorChoice::Model, ..Config::default() }).unwrap();
    a.offer_model(Ok(crate::model::tests::committed().clone()), 0);
    let mut sim = crate::plant_sim::PlantSim::new(11, 2900.0);
    let mut events = Vec::new();
    for _ in 0..240 {
        let r = sim.next_reading();
        events.extend(a.handle_reading(r.ts, &r).unwrap());
    }
    assert!(events.is_empty(), "four healthy minutes: {events:#?}");
    sim.inject(device_sim::plant::FaultKind::BearingWear, 1.0, None);
    for _ in 0..120 {
        let r = sim.next_reading();
        events.extend(a.handle_reading(r.ts, &r).unwrap());
    }
    let raised = events.iter().find(|e| e.active).unwrap_or_else(|| panic!("raised within two minutes: {events:#?}"));
    assert_eq!((raised.detector.as_str(), raised.kind), ("model", AnomalyKind::BearingWear), "{events:#?}");
    assert!(raised.id.starts_with("model-bearing_wear-"), "{}", raised.id);
}

#[test]
fn reconfiguring_keeps_raised_anomalies_of_a_detector_that_stays() {
    let mut a = Analyzer::new(config(1, 1)).unwrap();
    let mut sim = crate::plant_sim::PlantSim::new(3, 2900.0);
    for _ in 0..40 {
        let r = sim.next_reading();
        a.handle_reading(r.ts, &r).unwrap();
    }
    sim.inject(device_sim::plant::FaultKind::StuckSensor, 0.0, Some(pump_map::Measurement::FlowM3h));
    let mut raised = Vec::new();
    for _ in 0..15 {
        let r = sim.next_reading();
        raised.extend(a.handle_reading(r.ts, &r).unwrap());
    }
    assert_eq!(raised.len(), 1, "{raised:#?}");
    let events = a.reconfigure(Config { window_samples: 20, ..config(1, 1) }, 9).unwrap();
    assert!(events.is_empty());
    assert_eq!(a.active().len(), 1);
    assert_eq!(a.window.capacity(), 20);
    assert_eq!(a.window.len(), 20);
    // A bad configuration changes nothing.
    assert!(a.reconfigure(Config { window_samples: 1, ..Config::default() }, 10).is_err());
    assert_eq!(a.config().window_samples, 20);
}

#[test]
fn a_detector_removed_by_reconfiguration_clears_its_anomalies() {
    use Evidence::Raise as R;
    let mut a = Analyzer::with_detectors(config(1, 1), vec![scripted(vec![Some(R)])]);
    let raised = a.handle_reading(1, &reading(1)).unwrap();
    assert_eq!(raised.len(), 1);
    let events = a.reconfigure(Config::default(), 77).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].active, &events[0].id, events[0].ts), (false, &raised[0].id, 77));
    assert!(a.active().is_empty());
}
