//! Demo step 6, the cloud reacts: the operator deploys the cloud side (`provision app`: tables,
//! the landing bucket, the `pump-functions` Lambda functions, the topic rules, their roles);
//! then the same fault repeats at the plant until the anomaly handler, invoked by the rule on
//! the anomaly events, has recorded every event as an incident in DynamoDB and asks for
//! maintenance through the shadow's desired state; the controller takes the pump out of service
//! and reports it; the operator returns it to service. The report keeps the incident rows, the
//! rule → Lambda → DynamoDB latencies, and what the telemetry rule stored meanwhile.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use serde_json::{Value, json};

use crate::observer::{self, Observer};
use crate::report::{Latency, PlantRead};
use crate::site::{ModbusProbe, Site, THING};

/// The landing bucket of raw telemetry.
pub const LANDING_BUCKET: &str = "pump-landing";
/// Occurrences of one fault that call for maintenance in the demo...
pub const REPEATS: u32 = 3;
/// ...within this many minutes.
pub const WINDOW_MINUTES: u32 = 10;

/// One incident row as DynamoDB holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentRow {
    /// The event's time (ISO 8601).
    pub time: String,
    /// Fault kind.
    pub kind: String,
    /// Which detector.
    pub detector: String,
    /// Raised or cleared.
    pub active: bool,
    /// 0..1.
    pub severity: f64,
    /// IoT Core received it (ms since the epoch).
    pub received_at: Option<i64>,
    /// The function wrote it (ms since the epoch).
    pub recorded_at: Option<i64>,
    /// On the event that called for maintenance: why, and what was done.
    pub maintenance: Option<String>,
}

/// What step 6 observed.
#[derive(Debug, Clone, Serialize)]
pub struct CloudReaction {
    /// What `provision app` created.
    pub deployed: Vec<String>,
    /// The incident rows of the core thing, in key order.
    pub incidents: Vec<IncidentRow>,
    /// IoT Core received the event → its row written (the rule, the invocation, the function's
    /// DynamoDB writes).
    pub rule_to_row: Latency,
    /// The analyzer decided the event (its `ts`) → its row written.
    pub event_to_row: Latency,
    /// The analyzer decided the fault that called for maintenance → the plant's run coil off.
    pub decided_to_stopped_ms: f64,
    /// The reason the handler wrote with the incident.
    pub maintenance: String,
    /// Hourly aggregate rows of the core thing at the end of the step.
    pub hourly_aggregates: usize,
    /// Raw telemetry batches under the thing's prefix of the landing bucket at the end of the step.
    pub raw_batches: usize,
    /// An example key of a raw batch.
    pub raw_example: Option<String>,
}

impl CloudReaction {
    /// The report's section.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(
            s,
            "`provision app` deployed the cloud side through the AWS SDK for Rust: {}.\n",
            self.deployed.join("; ")
        );
        let _ = writeln!(
            s,
            "The rule `pump_anomalies` invoked the Lambda function `pump-anomaly-handler` for each anomaly event; \
             the function wrote one row per event to the DynamoDB table `pump-incidents`, and at occurrence {REPEATS} \
             of one fault within {WINDOW_MINUTES} minutes set `desired.mode` to `maintenance`: {}. \
             The plant's run coil was seen off (read over Modbus) {:.0} ms after the analyzer decided that fault.\n",
            self.maintenance, self.decided_to_stopped_ms
        );
        let _ = writeln!(
            s,
            "| latency | p50 ms | p99 ms | samples |\n| --- | ---: | ---: | ---: |\n| IoT Core received → row written (rule → Lambda → DynamoDB) | {} | {} | {} |\n| analyzer decided → row written | {} | {} | {} |\n",
            ms(self.rule_to_row.p50_ms),
            ms(self.rule_to_row.p99_ms),
            self.rule_to_row.samples_ms.len(),
            ms(self.event_to_row.p50_ms),
            ms(self.event_to_row.p99_ms),
            self.event_to_row.samples_ms.len()
        );
        let _ = writeln!(
            s,
            "| time | kind | detector | event | severity | maintenance |\n| --- | --- | --- | --- | ---: | --- |"
        );
        for row in &self.incidents {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2} | {} |",
                row.time,
                row.kind,
                row.detector,
                if row.active { "raised" } else { "cleared" },
                row.severity,
                row.maintenance.as_deref().unwrap_or("").replace('|', "\\|")
            );
        }
        let _ = writeln!(
            s,
            "\nThe rule `pump_telemetry` meanwhile folded telemetry into {} hourly aggregate row(s) (`pump-telemetry-hourly`) and stored {} raw batch(es) in `s3://{LANDING_BUCKET}/`{}.",
            self.hourly_aggregates,
            self.raw_batches,
            self.raw_example.as_ref().map(|k| format!(", e.g. `{k}`")).unwrap_or_default()
        );
        s
    }
}

/// Runs step 6 and returns its detail line, what it observed, and the plant reads it made.
pub async fn run(
    site: &Site,
    obs: &Observer,
    probe: &mut ModbusProbe,
    resume_speed: f64,
    wait: Duration,
) -> anyhow::Result<(String, CloudReaction, Vec<PlantRead>)> {
    let (operator, bins) = site.rollout()?;
    let clients = provision::app::AppClients {
        iot: operator.iot.clone(),
        iam: operator.iam.clone(),
        lambda: operator.lambda.clone(),
        dynamodb: operator.dynamodb.clone(),
        s3: operator.s3.clone(),
    };
    let spec = provision::app::AppSpec {
        prefix: "pump".into(),
        functions_dir: bins.to_owned(),
        bucket: LANDING_BUCKET.into(),
        maintenance_repeats: REPEATS,
        maintenance_window_minutes: WINDOW_MINUTES,
        function_timeout_secs: 10,
        iot_data_endpoint: None,
    };
    let deployed = provision::app::deploy_app(&clients, &spec).await.context("provision app")?;
    let anomalies = format!("dt/pump/{THING}/anomalies");
    let mut reads = Vec::new();
    let mut decided_ms = 0;
    // Each resume asks for a speed not desired before, so it is a change the controller sees
    // (a protective action ends with the operator's next change); all below the speed the next
    // step resumes at.
    let speed = |n: u32| resume_speed - 50.0 * f64::from(n);
    for cycle in 1..=REPEATS {
        if cycle > 1 {
            let state = crate::demo::clear_and_resume(site, obs, probe, &anomalies, speed(cycle)).await?;
            reads.push(PlantRead::new("resume before a repeat", Some(speed(cycle)), &state));
        }
        let mut rx = obs.subscribe();
        site.plant_control("POST", "/faults", Some(json!({"kind": "cavitation", "severity": 0.8}))).await?;
        let raised = observer::wait_for(&mut rx, &format!("cavitation {cycle} of {REPEATS} raised"), wait, |m| {
            m.topic == anomalies && m.doc["active"] == true && m.doc["kind"] == "cavitation"
        })
        .await?;
        decided_ms = raised.doc["ts"].as_u64().unwrap_or_default();
    }
    let started = Instant::now();
    site.wait_cloud_shadow("desired.mode maintenance, set by the anomaly handler", wait, |d| {
        d.pointer("/state/desired/mode") == Some(&json!("maintenance"))
    })
    .await?;
    let stopped = probe.wait_for("the pump stopped for maintenance", wait, |s| !s.run).await?;
    let stopped_ms = crate::demo::epoch_ms();
    reads.push(PlantRead::new("maintenance", None, &stopped));
    let doc = site
        .wait_cloud_shadow("reported.mode maintenance", wait, |d| {
            d.pointer("/state/reported/mode") == Some(&json!("maintenance"))
        })
        .await?;
    let to_reported = started.elapsed();

    let incidents = incident_rows(&clients.dynamodb, &deployed.names.incidents_table).await?;
    let asked: Vec<&IncidentRow> = incidents.iter().filter(|r| r.maintenance.is_some()).collect();
    let [asked] = asked.as_slice() else {
        bail!("expected one incident to carry the maintenance decision, found {}: {incidents:#?}", asked.len());
    };
    let maintenance = asked.maintenance.clone().unwrap_or_default();
    if !maintenance.ends_with("maintenance asked for") {
        bail!("the handler did not ask for maintenance: {maintenance}");
    }
    let sample = |f: fn(&IncidentRow) -> Option<f64>| incidents.iter().filter_map(f).collect::<Vec<_>>();
    let rule_to_row = Latency::from_samples(sample(|r| Some((r.recorded_at? - r.received_at?) as f64)));
    let event_to_row = Latency::from_samples(sample(|r| {
        let decided = time::OffsetDateTime::parse(&r.time, &time::format_description::well_known::Rfc3339).ok()?;
        Some((r.recorded_at? as i128 - decided.unix_timestamp_nanos() / 1_000_000) as f64)
    }));

    // The telemetry rule: hourly aggregates and raw batches, both within a batch period or two.
    let hourly_aggregates = poll(
        "an hourly aggregate of the pump",
        wait,
        async || count_rows(&clients.dynamodb, &deployed.names.aggregates_table).await,
        |n| *n > 0,
    )
    .await?;
    let prefix = format!("telemetry/date={}/thing={THING}/", time::OffsetDateTime::now_utc().date());
    let raw = poll(
        "a raw telemetry batch in S3",
        wait,
        async || {
            let out = clients.s3.list_objects_v2().bucket(LANDING_BUCKET).prefix(&prefix).send().await?;
            Ok(out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect::<Vec<_>>())
        },
        |keys| !keys.is_empty(),
    )
    .await?;

    // Back in service. A stopped pump's readings can look like a fault to a detector (the model
    // was trained on running pumps), so an anomaly may be open that only clears once the pump
    // runs: the operator sets auto first, and resumes at the speed wanted once everything
    // cleared (a protective action in between ends with that change).
    site.plant_control("DELETE", "/faults", None).await?;
    site.set_desired(json!({"mode": "auto", "speedRpm": speed(REPEATS + 1) as i64})).await?;
    probe.wait_for("the pump running again in auto", wait, |s| s.run).await?;
    let back = speed(REPEATS + 2);
    let state = crate::demo::clear_and_resume(site, obs, probe, &anomalies, back).await?;
    reads.push(PlantRead::new("back in service", Some(back), &state));

    let reaction = CloudReaction {
        deployed: deployed.changes.clone(),
        decided_to_stopped_ms: stopped_ms.saturating_sub(decided_ms) as f64,
        incidents,
        rule_to_row,
        event_to_row,
        maintenance,
        hourly_aggregates,
        raw_batches: raw.len(),
        raw_example: raw.first().cloned(),
    };
    let detail = format!(
        "provision app: {} changes; {REPEATS} cavitation faults → {} incident rows in DynamoDB (rule → Lambda → DynamoDB p50 {:.0} ms) → desired.mode maintenance ({}) → the pump seen stopped {:.0} ms after the third fault was decided (reported mode {} {:.1} s after the desired change was seen); {} hourly aggregate row(s), {} raw batch(es) in s3://{LANDING_BUCKET}/{prefix}; the operator returned the pump to auto at {back:.0} rpm",
        reaction.deployed.len(),
        reaction.incidents.len(),
        reaction.rule_to_row.p50_ms.unwrap_or_default(),
        reaction.maintenance,
        reaction.decided_to_stopped_ms,
        doc.pointer("/state/reported/mode").and_then(Value::as_str).unwrap_or("?"),
        to_reported.as_secs_f64(),
        reaction.hourly_aggregates,
        reaction.raw_batches,
    );
    Ok((detail, reaction, reads))
}

/// Asks `look` every 200 ms until `done` holds; fails after `wait` with what it saw last.
async fn poll<T: std::fmt::Debug>(
    what: &str,
    wait: Duration,
    mut look: impl AsyncFnMut() -> anyhow::Result<T>,
    done: impl Fn(&T) -> bool,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + wait;
    loop {
        let seen = look().await?;
        if done(&seen) {
            return Ok(seen);
        }
        if Instant::now() >= deadline {
            bail!("{what} not seen within {wait:?} (last: {seen:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every incident row of the core thing.
async fn incident_rows(db: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<Vec<IncidentRow>> {
    let mut rows = Vec::new();
    let mut start = None;
    loop {
        let page = db
            .query()
            .table_name(table)
            .key_condition_expression("thing = :t")
            .expression_attribute_values(":t", AttributeValue::S(THING.into()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .context("Query pump-incidents")?;
        rows.extend(page.items().iter().map(incident_row));
        match page.last_evaluated_key() {
            Some(key) if !key.is_empty() => start = Some(key.clone()),
            _ => return Ok(rows),
        }
    }
}

fn incident_row(item: &HashMap<String, AttributeValue>) -> IncidentRow {
    let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let n = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|n| n.parse::<f64>().ok());
    IncidentRow {
        time: s("time").unwrap_or_default(),
        kind: s("kind").unwrap_or_default(),
        detector: s("detector").unwrap_or_default(),
        active: item.get("active").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
        severity: n("severity").unwrap_or(0.0),
        received_at: n("receivedAt").map(|v| v as i64),
        recorded_at: n("recordedAt").map(|v| v as i64),
        maintenance: s("maintenance"),
    }
}

/// The rows of the core thing in `table` (0 until the first is written).
async fn count_rows(db: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<usize> {
    let out = db
        .query()
        .table_name(table)
        .key_condition_expression("thing = :t")
        .expression_attribute_values(":t", AttributeValue::S(THING.into()))
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .context("Query pump-telemetry-hourly")?;
    Ok(out.count() as usize)
}
