//! The anomaly handler: invoked by the rule on `dt/pump/+/anomalies`, it records each event as
//! an incident in DynamoDB and, when the same fault has repeated `MAINTENANCE_REPEATS` times
//! within `MAINTENANCE_WINDOW_MINUTES`, puts the pump into maintenance through the `pump`
//! shadow's desired state. The device obeys through its delta, or refuses with a reason in
//! `reported.refused` (`docs/shadow.md`): the cloud asks, the controller decides.
//!
//! Configuration (environment): `INCIDENTS_TABLE` (required), `MAINTENANCE_REPEATS` (3),
//! `MAINTENANCE_WINDOW_MINUTES` (10), `SHADOW_NAME` (`pump`), `IOT_DATA_ENDPOINT` (the account's
//! data endpoint on AWS).
//!
//! The table: partition key `thing` (S), sort key `at` (S, [`RuleEvent::sort_key`]). Each row:
//! `ts`, `time` (ISO 8601), `kind`, `detector`, `severity`, `active`, `clearing`, `reason`,
//! `receivedAt` (IoT Core's), `recordedAt` (this function's clock), and on the event that called
//! for maintenance `maintenance` (the reason and what was done) with `occurrences`. Maintenance
//! is not asked for while the pump reports `manual`: an operator has it by hand.
//!
//! Permissions it needs: `dynamodb:PutItem`, `dynamodb:Query`, `dynamodb:UpdateItem` on the
//! table; `iot:GetThingShadow`, `iot:UpdateThingShadow` on the pump things.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};

use crate::aws::{describe, env_or, env_required, now_ms};
use crate::incidents::{Decision, MaintenancePolicy, RuleEvent, Seen, key_from, key_through, kind_name};

/// The mode the handler asks for.
pub const MAINTENANCE_MODE: &str = "maintenance";

/// How far before the window the handler reads, so a fault raised before it and still open is
/// not counted as a new occurrence inside it.
const LOOKBACK_MS: i64 = 60 * 60_000;

/// The handler's configuration and clients.
#[derive(Debug, Clone)]
pub struct AnomalyHandler {
    /// The incidents table.
    pub table: String,
    /// When to ask for maintenance.
    pub policy: MaintenancePolicy,
    /// The named shadow the controller owns.
    pub shadow: String,
    db: aws_sdk_dynamodb::Client,
    data: aws_sdk_iotdataplane::Client,
}

impl AnomalyHandler {
    /// From the environment the function runs in; `Err` says which setting is wrong.
    pub async fn from_env() -> Result<AnomalyHandler, String> {
        let repeats: usize = env_or("MAINTENANCE_REPEATS", 3)?;
        let minutes: i64 = env_or("MAINTENANCE_WINDOW_MINUTES", 10)?;
        if repeats == 0 || !(1..=24 * 60).contains(&minutes) {
            return Err(format!(
                "MAINTENANCE_REPEATS must be at least 1 and MAINTENANCE_WINDOW_MINUTES 1 to 1440 (got {repeats}, {minutes})"
            ));
        }
        let config = crate::aws::config().await;
        let endpoint = std::env::var("IOT_DATA_ENDPOINT").ok().filter(|e| !e.is_empty());
        Ok(AnomalyHandler {
            table: env_required("INCIDENTS_TABLE")?,
            policy: MaintenancePolicy { repeats, window_ms: minutes * 60_000 },
            shadow: env_or("SHADOW_NAME", "pump".to_owned())?,
            db: crate::aws::dynamodb(&config),
            data: crate::aws::iot_data(&config, endpoint.as_deref()),
        })
    }

    /// Handles one invocation: the result says what was done, for the invocation's record.
    pub async fn handle(&self, input: Value) -> Result<Value, String> {
        let event = RuleEvent::parse(input).map_err(|e| e.to_string())?;
        let at = event.sort_key();
        let recorded_at = now_ms();
        let written = self
            .db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(incident_item(&event, recorded_at)))
            .condition_expression("attribute_not_exists(thing)")
            .send()
            .await;
        if let Err(err) = written {
            if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) {
                // Delivered before: the first delivery did the rest.
                return Ok(json!({"thing": event.thing, "at": at, "duplicate": true}));
            }
            return Err(describe("PutItem", &err));
        }
        let incidents = self.same_kind(&event).await?;
        let decision = self.policy.decide(&event, &incidents);
        let maintenance = match &decision {
            Decision::Record => Value::Null,
            Decision::Maintenance { occurrences, reason } => {
                let asked = self.ask_for_maintenance(&event.thing).await?;
                let note = match &asked {
                    Asked::Set => format!("{reason}: maintenance asked for"),
                    Asked::AlreadyDesired => format!("{reason}: maintenance already desired"),
                    Asked::NotAsked(why) => format!("{reason}: not asked, {why}"),
                };
                self.note_maintenance(&event.thing, &at, &note, *occurrences).await?;
                json!({"reason": note, "occurrences": occurrences, "desired": asked.to_string()})
            }
        };
        Ok(json!({
            "thing": event.thing,
            "at": at,
            "kind": kind_name(event.event.kind),
            "active": event.event.active,
            "recordedAt": recorded_at,
            "maintenance": maintenance,
        }))
    }

    /// The stored incidents of the event's pump and kind around the policy's window.
    async fn same_kind(&self, event: &RuleEvent) -> Result<Vec<Seen>, String> {
        let ts = event.event.ts as i64;
        let mut seen = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("thing = :thing AND #at BETWEEN :from AND :through")
                .filter_expression("kind = :kind")
                .expression_attribute_names("#at", "at")
                .expression_attribute_values(":thing", AttributeValue::S(event.thing.clone()))
                .expression_attribute_values(
                    ":from",
                    AttributeValue::S(key_from(self.policy.query_from(ts, LOOKBACK_MS))),
                )
                .expression_attribute_values(":through", AttributeValue::S(key_through(ts)))
                .expression_attribute_values(":kind", AttributeValue::S(kind_name(event.event.kind)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| describe("Query", &e))?;
            seen.extend(page.items().iter().filter_map(seen_from_item));
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(seen),
            }
        }
    }

    /// Sets `desired.mode` to maintenance unless it already is, or an operator holds the pump in
    /// manual (the controller would refuse, and the operator's desired `manual` would be lost).
    /// The write carries the version read, so an operator's write in between is not overwritten:
    /// a version conflict reads again.
    async fn ask_for_maintenance(&self, thing: &str) -> Result<Asked, String> {
        for _ in 0..3 {
            let current = self.data.get_thing_shadow().thing_name(thing).shadow_name(&self.shadow).send().await;
            let document = match current {
                Ok(out) => {
                    out.payload().and_then(|p| serde_json::from_slice::<Value>(p.as_ref()).ok()).unwrap_or(Value::Null)
                }
                Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => Value::Null,
                Err(err) => return Err(describe("GetThingShadow", &err)),
            };
            let mode = |section: &str| document.pointer(&format!("/state/{section}/mode")).and_then(Value::as_str);
            if mode("desired") == Some(MAINTENANCE_MODE) {
                return Ok(Asked::AlreadyDesired);
            }
            if mode("reported") == Some("manual") {
                return Ok(Asked::NotAsked("the pump is in manual mode: an operator has it".into()));
            }
            let mut request = json!({"state": {"desired": {"mode": MAINTENANCE_MODE}}});
            if let Some(version) = document.get("version").and_then(Value::as_i64) {
                request["version"] = json!(version);
            }
            let written = self
                .data
                .update_thing_shadow()
                .thing_name(thing)
                .shadow_name(&self.shadow)
                .payload(aws_sdk_iotdataplane::primitives::Blob::new(request.to_string()))
                .send()
                .await;
            match written {
                Ok(_) => return Ok(Asked::Set),
                Err(err) if err.as_service_error().is_some_and(|e| e.is_conflict_exception()) => continue,
                Err(err) => return Err(describe("UpdateThingShadow", &err)),
            }
        }
        Err(format!("UpdateThingShadow: the {} shadow of {thing} kept changing under three attempts", self.shadow))
    }

    /// Writes the maintenance decision onto the incident that triggered it.
    async fn note_maintenance(&self, thing: &str, at: &str, reason: &str, occurrences: usize) -> Result<(), String> {
        self.db
            .update_item()
            .table_name(&self.table)
            .key("thing", AttributeValue::S(thing.to_owned()))
            .key("at", AttributeValue::S(at.to_owned()))
            .update_expression("SET maintenance = :reason, occurrences = :n")
            .expression_attribute_values(":reason", AttributeValue::S(reason.to_owned()))
            .expression_attribute_values(":n", AttributeValue::N(occurrences.to_string()))
            .send()
            .await
            .map_err(|e| describe("UpdateItem", &e))?;
        Ok(())
    }
}

/// What became of the request for maintenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    /// `desired.mode` is now maintenance.
    Set,
    /// It was already.
    AlreadyDesired,
    /// Not written, and why.
    NotAsked(String),
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asked::Set => f.write_str("set"),
            Asked::AlreadyDesired => f.write_str("already set"),
            Asked::NotAsked(why) => write!(f, "not asked: {why}"),
        }
    }
}

/// The incident row of `event`.
pub fn incident_item(event: &RuleEvent, recorded_at: i64) -> HashMap<String, AttributeValue> {
    let e = &event.event;
    let mut item = HashMap::from([
        ("thing".to_owned(), AttributeValue::S(event.thing.clone())),
        ("at".to_owned(), AttributeValue::S(event.sort_key())),
        ("id".to_owned(), AttributeValue::S(e.id.clone())),
        ("ts".to_owned(), AttributeValue::N(e.ts.to_string())),
        ("time".to_owned(), AttributeValue::S(iso_time(e.ts as i64))),
        ("kind".to_owned(), AttributeValue::S(kind_name(e.kind))),
        ("detector".to_owned(), AttributeValue::S(e.detector.clone())),
        ("severity".to_owned(), AttributeValue::N(number(e.severity))),
        ("active".to_owned(), AttributeValue::Bool(e.active)),
        ("clearing".to_owned(), AttributeValue::Bool(!e.active)),
        ("reason".to_owned(), AttributeValue::S(e.reason.clone())),
        ("recordedAt".to_owned(), AttributeValue::N(recorded_at.to_string())),
    ]);
    if let Some(received) = event.received_at {
        item.insert("receivedAt".to_owned(), AttributeValue::N(received.to_string()));
    }
    item
}

/// What the occurrence count needs from a stored row (`None` for a row that lacks it).
pub fn seen_from_item(item: &HashMap<String, AttributeValue>) -> Option<Seen> {
    Some(Seen {
        ts: item.get("ts")?.as_n().ok()?.parse().ok()?,
        id: item.get("id")?.as_s().ok()?.clone(),
        active: *item.get("active")?.as_bool().ok()?,
        maintenance: item.contains_key("maintenance"),
    })
}

/// A finite number as DynamoDB's `N` (non-finite severities are stored as 0).
fn number(x: f64) -> String {
    if x.is_finite() { x.to_string() } else { "0".into() }
}

/// `ts` (ms) as ISO 8601 UTC with milliseconds.
pub fn iso_time(ts: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incident_row_keeps_what_the_device_said_and_when_it_was_seen() {
        let event = RuleEvent::parse(json!({
            "v": 1, "id": "model-overheating-1", "ts": 1_520_000_000_000_u64, "reading_seq": 9, "detector": "model",
            "kind": "overheating", "active": false, "severity": 0.0, "reason": "normal for 10 consecutive readings",
            "thing": "pump-7", "receivedAt": 1_520_000_000_050_i64
        }))
        .unwrap();
        let item = incident_item(&event, 1_520_000_000_090);
        assert_eq!(item["at"].as_s().unwrap(), "1520000000000#model-overheating-1#cleared");
        assert_eq!(item["time"].as_s().unwrap(), "2018-03-02T14:13:20.000Z");
        assert_eq!(item["kind"].as_s().unwrap(), "overheating");
        assert_eq!(item["clearing"].as_bool().unwrap(), &true);
        assert_eq!(item["receivedAt"].as_n().unwrap(), "1520000000050");
        assert_eq!(item["recordedAt"].as_n().unwrap(), "1520000000090");
        assert_eq!(
            seen_from_item(&item),
            Some(Seen { ts: 1_520_000_000_000, id: "model-overheating-1".into(), active: false, maintenance: false })
        );
        assert_eq!(seen_from_item(&HashMap::new()), None);
    }
}
