//! The telemetry aggregator: invoked by the rule on `dt/pump/+/telemetry`, it folds each batch
//! into per-pump hourly aggregates in DynamoDB ([`crate::aggregates`]). The same rule stores the
//! raw batch in S3 by date with its own `s3` action; this function never sees S3.
//!
//! Configuration (environment): `AGGREGATES_TABLE` (required).
//!
//! The table: partition key `thing` (S), sort key `hour` (S, `YYYY-MM-DDTHH`, UTC). Each row:
//! `readings`, `running`, `batches`, `firstTs`, `lastTs`, `updatedAt`, `version`, `parts` (a
//! string set naming the batch parts counted, so a second delivery is not) and `fields`, a map
//! from measurement name to `{n, sum, min, max, mean}`. At one batch per 15 s an hour holds about
//! 240 parts (some 5 KB of the item's 400 KB).
//!
//! Concurrent invocations (Lambda may run several) are kept apart by optimistic locking: each
//! row carries `version`, a write is conditional on the version read, and a write that lost the
//! race reads again (up to [`ATTEMPTS`] times).
//!
//! Permissions it needs: `dynamodb:GetItem`, `dynamodb:PutItem` on the table.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value, json};

use crate::aggregates::{Batch, HourAggregate, Stat};
use crate::aws::{describe, env_required, now_ms};

/// How many times a write that lost a race is retried.
pub const ATTEMPTS: usize = 5;

/// The aggregator's configuration and client.
#[derive(Debug, Clone)]
pub struct TelemetryAggregator {
    /// The aggregates table.
    pub table: String,
    db: aws_sdk_dynamodb::Client,
}

impl TelemetryAggregator {
    /// From the environment the function runs in; `Err` says which setting is wrong.
    pub async fn from_env() -> Result<TelemetryAggregator, String> {
        let config = crate::aws::config().await;
        Ok(TelemetryAggregator { table: env_required("AGGREGATES_TABLE")?, db: crate::aws::dynamodb(&config) })
    }

    /// Handles one batch: the result lists the hours written and the readings each took.
    pub async fn handle(&self, input: Value) -> Result<Value, String> {
        let batch = Batch::parse(input).map_err(|e| e.to_string())?;
        let mut hours = Map::new();
        for (hour, readings) in batch.by_hour() {
            let added = self.fold(&batch.thing, &hour, &readings).await?;
            hours.insert(hour, json!(added));
        }
        Ok(json!({"thing": batch.thing, "readings": batch.readings.len(), "hours": hours}))
    }

    /// Folds one hour's readings into its row; returns how many were new.
    async fn fold(&self, thing: &str, hour: &str, readings: &[&Map<String, Value>]) -> Result<usize, String> {
        let key = |item: HashMap<String, AttributeValue>| {
            item.into_iter().chain([
                ("thing".to_owned(), AttributeValue::S(thing.to_owned())),
                ("hour".to_owned(), AttributeValue::S(hour.to_owned())),
            ])
        };
        for _ in 0..ATTEMPTS {
            let current = self
                .db
                .get_item()
                .table_name(&self.table)
                .key("thing", AttributeValue::S(thing.to_owned()))
                .key("hour", AttributeValue::S(hour.to_owned()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| describe("GetItem", &e))?;
            let (mut aggregate, version) = match current.item() {
                Some(item) => from_item(item).map_err(|e| format!("row {thing}/{hour}: {e}"))?,
                None => (HourAggregate::default(), 0),
            };
            let added = aggregate.absorb(readings);
            if added == 0 {
                return Ok(0);
            }
            let item: HashMap<String, AttributeValue> = key(to_item(&aggregate, version + 1, now_ms())).collect();
            let mut put = self.db.put_item().table_name(&self.table).set_item(Some(item));
            put = if version == 0 {
                put.condition_expression("attribute_not_exists(thing)")
            } else {
                put.condition_expression("version = :v")
                    .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
            };
            match put.send().await {
                Ok(_) => return Ok(added),
                Err(err) if err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                    continue;
                }
                Err(err) => return Err(describe("PutItem", &err)),
            }
        }
        Err(format!("row {thing}/{hour}: {ATTEMPTS} writes in a row lost a race with another invocation"))
    }
}

/// An aggregate as the row's attributes (without its key).
pub fn to_item(aggregate: &HourAggregate, version: u64, updated_at: i64) -> HashMap<String, AttributeValue> {
    let n = |x: u64| AttributeValue::N(x.to_string());
    let f = |x: f64| AttributeValue::N(if x.is_finite() { x.to_string() } else { "0".into() });
    let fields = aggregate
        .fields
        .iter()
        .map(|(name, s)| {
            let mut stat = HashMap::from([
                ("n".to_owned(), n(s.n)),
                ("sum".to_owned(), f(s.sum)),
                ("min".to_owned(), f(s.min)),
                ("max".to_owned(), f(s.max)),
            ]);
            if let Some(mean) = s.mean() {
                stat.insert("mean".to_owned(), f(mean));
            }
            (name.clone(), AttributeValue::M(stat))
        })
        .collect();
    let mut item = HashMap::from([
        ("readings".to_owned(), n(aggregate.readings)),
        ("running".to_owned(), n(aggregate.running)),
        ("batches".to_owned(), n(aggregate.batches)),
        ("fields".to_owned(), AttributeValue::M(fields)),
        ("version".to_owned(), n(version)),
        ("updatedAt".to_owned(), AttributeValue::N(updated_at.to_string())),
    ]);
    if let Some(first) = aggregate.first_ts {
        item.insert("firstTs".to_owned(), AttributeValue::N(first.to_string()));
    }
    if let Some(last) = aggregate.last_ts {
        item.insert("lastTs".to_owned(), AttributeValue::N(last.to_string()));
    }
    if !aggregate.parts.is_empty() {
        item.insert("parts".to_owned(), AttributeValue::Ss(aggregate.parts.iter().cloned().collect()));
    }
    item
}

/// A row back into an aggregate and its version; `Err` names the attribute that is wrong.
pub fn from_item(item: &HashMap<String, AttributeValue>) -> Result<(HourAggregate, u64), String> {
    fn num<T: std::str::FromStr>(item: &HashMap<String, AttributeValue>, name: &str) -> Result<Option<T>, String> {
        match item.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_n()
                .ok()
                .and_then(|n| n.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("attribute {name} is not a number")),
        }
    }
    let mut fields = BTreeMap::new();
    if let Some(map) = item.get("fields") {
        let map = map.as_m().map_err(|_| "attribute fields is not a map".to_owned())?;
        for (name, stat) in map {
            let stat = stat.as_m().map_err(|_| format!("fields.{name} is not a map"))?;
            let get = |k: &str| num::<f64>(stat, k).and_then(|v| v.ok_or_else(|| format!("fields.{name}.{k} missing")));
            fields.insert(
                name.clone(),
                Stat { n: get("n")? as u64, sum: get("sum")?, min: get("min")?, max: get("max")? },
            );
        }
    }
    let parts = match item.get("parts") {
        None => Default::default(),
        Some(v) => v.as_ss().map_err(|_| "attribute parts is not a string set".to_owned())?.iter().cloned().collect(),
    };
    let aggregate = HourAggregate {
        parts,
        readings: num(item, "readings")?.unwrap_or(0),
        running: num(item, "running")?.unwrap_or(0),
        batches: num(item, "batches")?.unwrap_or(0),
        first_ts: num(item, "firstTs")?,
        last_ts: num(item, "lastTs")?,
        fields,
    };
    Ok((aggregate, num(item, "version")?.unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_round_trips_with_its_version() {
        let batch = Batch::parse(json!({"v": 1, "thing": "p", "readings": [
            {"ts": 1_000, "flow_m3h": 99.5, "running": true}, {"ts": 2_000, "flow_m3h": 100.5}
        ]}))
        .unwrap();
        let mut aggregate = HourAggregate::default();
        aggregate.absorb(&batch.by_hour()["1970-01-01T00"]);
        let item = to_item(&aggregate, 4, 77);
        assert_eq!(item["fields"].as_m().unwrap()["flow_m3h"].as_m().unwrap()["mean"].as_n().unwrap(), "100");
        assert_eq!(from_item(&item), Ok((aggregate, 4)));
    }

    #[test]
    fn a_damaged_row_is_reported_not_overwritten() {
        let mut item = HashMap::from([("readings".to_owned(), AttributeValue::S("many".into()))]);
        assert_eq!(from_item(&item), Err("attribute readings is not a number".to_owned()));
        item.insert("readings".into(), AttributeValue::N("3".into()));
        item.insert(
            "fields".into(),
            AttributeValue::M(HashMap::from([("x".to_owned(), AttributeValue::M(HashMap::new()))])),
        );
        assert_eq!(from_item(&item), Err("fields.x.n missing".to_owned()));
    }
}
