//! The anomaly handler's decisions, pure: the incident row an anomaly event becomes, and when a
//! fault has repeated often enough that the pump should go into maintenance.
//!
//! **A fault occurrence** is the fault of one kind becoming present on a pump: the analyzer's
//! detectors (`rules`, `model`) each raise and clear their own events, so a fault both detect is
//! one occurrence, not two. The kind is present while any detector has a raise it has not
//! cleared; an occurrence is the moment it goes from absent to present. The handler counts the
//! occurrences whose raise lies in the window `[ts − window, ts]` of the event it handles.

use std::collections::BTreeSet;

use pump_types::{AnomalyEvent, AnomalyKind};
use serde::Deserialize;

/// What the rule hands the function: the device's anomaly event, plus what the rule's SQL adds
/// (`topic(3) AS thing`, `timestamp() AS receivedAt`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleEvent {
    /// The core thing the event came from (the topic's third level).
    pub thing: String,
    /// When IoT Core received it, milliseconds since the epoch.
    #[serde(default)]
    pub received_at: Option<i64>,
    /// The analyzer's event as the device sent it.
    #[serde(flatten)]
    pub event: AnomalyEvent,
}

/// Why an event cannot be handled (the invocation fails with it; nothing is written).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventError {
    /// Not the JSON shape the rule sends.
    #[error("not an anomaly event from the anomalies rule: {0}")]
    Shape(String),
    /// A payload version this function does not know.
    #[error("anomaly event version {0} is not supported (expected {expected})", expected = pump_types::PAYLOAD_VERSION)]
    Version(u8),
    /// The thing name is empty or too long for a key.
    #[error("thing name {0:?} is not a thing name")]
    Thing(String),
}

impl RuleEvent {
    /// Parses the function's input.
    pub fn parse(input: serde_json::Value) -> Result<RuleEvent, EventError> {
        let event: RuleEvent = serde_json::from_value(input).map_err(|e| EventError::Shape(e.to_string()))?;
        if event.event.v != pump_types::PAYLOAD_VERSION {
            return Err(EventError::Version(event.event.v));
        }
        let thing_ok = (1..=128).contains(&event.thing.len())
            && event.thing.chars().all(|c| c.is_ascii_alphanumeric() || "_-:".contains(c));
        if !thing_ok {
            return Err(EventError::Thing(event.thing));
        }
        Ok(event)
    }

    /// The incident's sort key: the event's time (13 digits, so keys sort by time), its id and
    /// whether it raised or cleared. Unique per event, so a second delivery of the same event
    /// (Lambda retries asynchronous invocations) finds its row already written.
    pub fn sort_key(&self) -> String {
        format!("{:013}#{}#{}", self.event.ts, self.event.id, if self.event.active { "raised" } else { "cleared" })
    }
}

/// The first sort key at or after `ts` (milliseconds): the lower bound of a time range query.
pub fn key_from(ts: i64) -> String {
    format!("{:013}", ts.max(0))
}

/// The last sort key at `ts`: the upper bound of a time range query (`~` sorts after the id
/// characters).
pub fn key_through(ts: i64) -> String {
    format!("{:013}#~", ts.max(0))
}

/// The `kind` as stored and as the payload spells it (`cavitation`).
pub fn kind_name(kind: AnomalyKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// One stored incident of the same pump and kind, as the occurrence count needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The event's time, ms.
    pub ts: i64,
    /// The event's id (raise and clear share it).
    pub id: String,
    /// Raised (`true`) or cleared.
    pub active: bool,
    /// This event called for maintenance (the count starts again after it).
    pub maintenance: bool,
}

/// How many times the fault became present in `[from, through]`, from the incidents of one
/// pump and kind (any order; events before `from` only tell whether it was present already).
pub fn occurrences(incidents: &[Seen], from: i64, through: i64) -> usize {
    let mut sorted: Vec<&Seen> = incidents.iter().filter(|s| s.ts <= through).collect();
    // Raises before clears at the same instant: a clear and a new raise at one millisecond
    // would otherwise hide an occurrence.
    sorted.sort_by(|a, b| (a.ts, !a.active, &a.id).cmp(&(b.ts, !b.active, &b.id)));
    let mut open: BTreeSet<&str> = BTreeSet::new();
    let mut count = 0;
    for seen in sorted {
        if seen.active {
            if open.is_empty() && seen.ts >= from {
                count += 1;
            }
            open.insert(&seen.id);
        } else {
            open.remove(seen.id.as_str());
        }
    }
    count
}

/// When the handler asks for maintenance: `repeats` occurrences of one fault within `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenancePolicy {
    /// Occurrences that call for maintenance (N ≥ 1).
    pub repeats: usize,
    /// The window they must fall in, ms (M minutes).
    pub window_ms: i64,
}

/// What the handler does about the pump after recording an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: a clearing event, or not repeated enough.
    Record,
    /// Ask for maintenance through the shadow's desired state, saying why.
    Maintenance {
        /// The occurrences counted in the window.
        occurrences: usize,
        /// The reason written with the incident.
        reason: String,
    },
}

impl MaintenancePolicy {
    /// Decides for `event` given the incidents of its pump and kind (it included, as stored).
    /// Occurrences count from the window's start, or from just after the last event that called
    /// for maintenance if that is later: the pump has been seen to since.
    pub fn decide(&self, event: &RuleEvent, incidents: &[Seen]) -> Decision {
        if !event.event.active {
            return Decision::Record;
        }
        let through = event.event.ts as i64;
        let last_maintenance = incidents.iter().filter(|s| s.maintenance && s.ts <= through).map(|s| s.ts + 1).max();
        let from = (through - self.window_ms).max(last_maintenance.unwrap_or(i64::MIN));
        let count = occurrences(incidents, from, through);
        if count < self.repeats {
            return Decision::Record;
        }
        Decision::Maintenance {
            occurrences: count,
            reason: format!(
                "{count} {} faults within {} min (maintenance after {})",
                kind_name(event.event.kind),
                (self.window_ms + 59_999) / 60_000,
                self.repeats
            ),
        }
    }

    /// The start of the window whose incidents [`Self::decide`] needs for an event at `ts`,
    /// widened by `lookback_ms` so a raise still open at the window's start is seen.
    pub fn query_from(&self, ts: i64, lookback_ms: i64) -> i64 {
        ts - self.window_ms - lookback_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seen(ts: i64, id: &str, active: bool) -> Seen {
        Seen { ts, id: id.into(), active, maintenance: false }
    }

    fn rule_event(ts: u64, active: bool) -> RuleEvent {
        RuleEvent::parse(json!({
            "v": 1, "id": format!("rules-cavitation-{ts}"), "ts": ts, "reading_seq": 3, "detector": "rules",
            "kind": "cavitation", "active": active, "severity": 0.7, "reason": "suction low",
            "features": {"suction_pressure_kpa.mean": 8.5}, "thing": "pump-1", "receivedAt": ts + 40
        }))
        .unwrap()
    }

    #[test]
    fn the_rule_output_parses_into_the_device_event_and_the_rule_fields() {
        let e = rule_event(1_700_000_000_000, true);
        assert_eq!(e.thing, "pump-1");
        assert_eq!(e.received_at, Some(1_700_000_000_040));
        assert_eq!(e.event.kind, AnomalyKind::Cavitation);
        assert_eq!(e.sort_key(), "1700000000000#rules-cavitation-1700000000000#raised");
    }

    #[test]
    fn bad_input_is_refused_with_what_is_wrong() {
        assert!(matches!(RuleEvent::parse(json!({"thing": "p"})), Err(EventError::Shape(_))));
        assert!(matches!(RuleEvent::parse(json!("text")), Err(EventError::Shape(_))));
        let mut v = json!({"v": 2, "id": "a", "ts": 1, "reading_seq": 1, "detector": "rules", "kind": "cavitation",
                           "active": true, "severity": 0.5, "reason": "r", "thing": "p"});
        assert_eq!(RuleEvent::parse(v.clone()), Err(EventError::Version(2)));
        v["v"] = json!(1);
        v["thing"] = json!("a/b");
        assert_eq!(RuleEvent::parse(v.clone()), Err(EventError::Thing("a/b".into())));
        v["kind"] = json!("meltdown");
        assert!(matches!(RuleEvent::parse(v), Err(EventError::Shape(m)) if m.contains("meltdown")));
    }

    #[test]
    fn sort_keys_order_by_time_and_bound_a_range() {
        let early = rule_event(999, true).sort_key();
        let late = rule_event(1_000, false).sort_key();
        assert!(early < late);
        assert!(key_from(1_000) <= late && late <= key_through(1_000));
        assert!(early < key_from(1_000));
        assert!(late > key_through(999));
    }

    #[test]
    fn both_detectors_raising_one_fault_count_once() {
        let incidents = [
            seen(100, "rules-1", true),
            seen(120, "model-1", true),
            seen(300, "rules-1", false),
            seen(320, "model-1", false),
        ];
        assert_eq!(occurrences(&incidents, 0, 1_000), 1);
    }

    #[test]
    fn a_fault_that_clears_and_returns_counts_again() {
        let incidents = [
            seen(100, "a", true),
            seen(200, "a", false),
            seen(300, "b", true),
            seen(400, "b", false),
            seen(500, "c", true),
        ];
        assert_eq!(occurrences(&incidents, 0, 1_000), 3);
        // Only raises inside the window count; one open before it is not a new occurrence.
        assert_eq!(occurrences(&incidents, 250, 1_000), 2);
        assert_eq!(occurrences(&[seen(100, "a", true), seen(300, "b", true)], 200, 1_000), 0);
        // Events after the handled one are not counted.
        assert_eq!(occurrences(&incidents, 0, 350), 2);
    }

    #[test]
    fn a_clear_and_a_raise_at_the_same_instant_are_two_occurrences() {
        let incidents = [seen(100, "a", true), seen(200, "b", true), seen(200, "a", false)];
        // b raised while a was still open (raises sort first): one continuous fault.
        assert_eq!(occurrences(&incidents, 0, 300), 1);
        let incidents = [seen(100, "a", true), seen(150, "a", false), seen(200, "b", true)];
        assert_eq!(occurrences(&incidents, 0, 300), 2);
    }

    #[test]
    fn maintenance_is_asked_for_at_the_nth_occurrence_within_the_window() {
        let policy = MaintenancePolicy { repeats: 3, window_ms: 10 * 60_000 };
        let base = 1_700_000_000_000_i64;
        let mut incidents = Vec::new();
        let mut decisions = Vec::new();
        for i in 0..3 {
            let ts = base + i * 60_000;
            incidents.push(seen(ts, &format!("x{i}"), true));
            decisions.push(policy.decide(&rule_event(ts as u64, true), &incidents));
            incidents.push(seen(ts + 20_000, &format!("x{i}"), false));
        }
        assert_eq!(decisions[0], Decision::Record);
        assert_eq!(decisions[1], Decision::Record);
        match &decisions[2] {
            Decision::Maintenance { occurrences, reason } => {
                assert_eq!(*occurrences, 3);
                assert_eq!(reason, "3 cavitation faults within 10 min (maintenance after 3)");
            }
            other => panic!("{other:?}"),
        }
        // A clearing event never asks.
        assert_eq!(policy.decide(&rule_event((base + 140_000) as u64, false), &incidents), Decision::Record);
        // After the event that called for maintenance, the count starts again.
        incidents[4].maintenance = true;
        let ts = base + 180_000;
        incidents.push(seen(ts, "x3", true));
        assert_eq!(policy.decide(&rule_event(ts as u64, true), &incidents), Decision::Record);
        // Occurrences further apart than the window do not.
        let sparse = [seen(base, "a", true), seen(base + 1, "a", false), seen(base + 700_000, "b", true)];
        assert_eq!(policy.decide(&rule_event((base + 700_000) as u64, true), &sparse), Decision::Record);
    }
}
