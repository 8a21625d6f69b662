//! The evidence a demo run leaves: `report.json` (everything, machine-readable) and
//! `report.md` (the same for people), both written atomically.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::cost::SiteCost;
use crate::footprint::Footprint;
use crate::observer::TopicFigures;

/// One scenario step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    /// Short name (its number in this run).
    pub name: String,
    /// The step's stable key ([`provision::audit::steps`]): what the audit finds it by.
    pub key: String,
    /// What it shows.
    pub description: String,
    /// Whether it held.
    pub passed: bool,
    /// Seconds it took.
    pub seconds: f64,
    /// What was observed (or why it failed).
    pub detail: String,
}

/// One anomaly event as the cloud received it: which detector raised (or cleared) what.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnomalyRecord {
    /// The event's `id` (the clearing event repeats it).
    pub id: String,
    /// `true` raised, `false` cleared.
    pub active: bool,
    /// The anomaly kind.
    pub kind: String,
    /// The detector that decided it: `rules` or `model`.
    pub detector: String,
    /// 0..1.
    pub severity: f64,
    /// The detector's reason.
    pub reason: String,
    /// When it was decided, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The reading that decided it (`reading_seq`).
    pub reading_seq: u64,
}

impl AnomalyRecord {
    /// From an event's JSON (`pump_types::AnomalyEvent`); missing fields read as empty.
    pub fn from_event(doc: &Value) -> Self {
        let text = |key: &str| doc[key].as_str().unwrap_or_default().to_owned();
        AnomalyRecord {
            id: text("id"),
            active: doc["active"].as_bool().unwrap_or(false),
            kind: text("kind"),
            detector: text("detector"),
            severity: doc["severity"].as_f64().unwrap_or(0.0),
            reason: text("reason"),
            ts: doc["ts"].as_u64().unwrap_or(0),
            reading_seq: doc["reading_seq"].as_u64().unwrap_or(0),
        }
    }
}

/// What the run observed at the plant and in the cloud, as raw facts that a reader (or a test)
/// can check without trusting the steps' own verdicts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Facts {
    /// The sequence number of every reading in the telemetry batches the cloud received, in
    /// arrival order (a batch delivered again after a reconnect appears again).
    pub telemetry_seqs: Vec<u64>,
    /// `[previous, current]` shadow version of each `update/documents` message the cloud
    /// published for the `pump` shadow, in order (`previous` is 0 for the first document).
    pub shadow_versions: Vec<[u64; 2]>,
    /// The plant's registers, read over Modbus after each action of the scenario.
    pub plant_reads: Vec<PlantRead>,
}

/// The plant's registers after one action of the scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlantRead {
    /// The action: `desired` (the operator's change), `before fault`, `fault` (after the
    /// protective action), `resume`, `recovered` (the replacement device drove the plant to the
    /// desired speed set while the site was dead), `end`.
    pub after: String,
    /// The speed the operator asked for, when the action was a desired change.
    pub desired_rpm: Option<f64>,
    /// The speed setpoint holding register.
    pub setpoint_rpm: f64,
    /// The run coil.
    pub run: bool,
    /// The bypass coil.
    pub bypass_open: bool,
}

impl PlantRead {
    /// A read of `state` after `after`.
    pub fn new(after: &str, desired_rpm: Option<f64>, state: &crate::site::PlantState) -> Self {
        PlantRead {
            after: after.to_owned(),
            desired_rpm,
            setpoint_rpm: state.setpoint_rpm,
            run: state.run,
            bypass_open: state.bypass_open,
        }
    }
}

/// Latency samples and their summary, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// The samples.
    pub samples_ms: Vec<f64>,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 99th percentile (nearest rank).
    pub p99_ms: Option<f64>,
}

impl Latency {
    /// Summarises samples with the benchmarks' nearest-rank percentiles (`bench_common::stats`).
    pub fn from_samples(mut samples_ms: Vec<f64>) -> Self {
        let ns = samples_ms.iter().map(|ms| (ms * 1e6).round().max(0.0) as u64).collect();
        let summary = bench_common::stats::latency(ns);
        let ms = |d: std::time::Duration| d.as_nanos() as f64 / 1e6;
        let (p50_ms, p99_ms) = (summary.map(|l| ms(l.p50)), summary.map(|l| ms(l.p99)));
        samples_ms.iter_mut().for_each(|s| *s = (*s * 10.0).round() / 10.0);
        Latency { samples_ms, p50_ms, p99_ms }
    }
}

/// One anomaly window the analyzer put in S3 with its token exchange credentials.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowRecord {
    /// `s3://bucket/key`.
    pub object: String,
    /// Its size.
    pub bytes: u64,
    /// Readings in it, and how many came before the raise.
    pub readings: usize,
    /// Of which before the raise (the raising reading included).
    pub before_samples: usize,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// When the run started (RFC 3339, UTC).
    pub started: String,
    /// Whether every step held.
    pub passed: bool,
    /// The analyzer's `detector` configuration (`--detector`).
    pub detector: String,
    /// `reported.model` in the cloud shadow at the end: the model status and version the
    /// controller reports from the analyzer.
    pub model: Value,
    /// Every anomaly event the cloud received, in order, with the detector that decided it.
    pub anomalies: Vec<AnomalyRecord>,
    /// The steps.
    pub steps: Vec<StepOutcome>,
    /// Per IoT Core topic, what the cloud received.
    pub topics: BTreeMap<String, TopicFigures>,
    /// The cloud shadow at the end.
    pub shadow: Value,
    /// Its state's size in bytes (`desired` + `reported`, what IoT Core's 8 KiB limit counts).
    pub shadow_state_bytes: usize,
    /// Operator's desired change → the plant's speed setpoint register changed.
    pub delta_to_actuation: Latency,
    /// Fault injected → protective action at the plant.
    pub fault_to_action: Latency,
    /// The analyzer decided the anomaly (the event's `ts`) → protective action seen at the plant.
    pub anomaly_to_action: Latency,
    /// Components' own figures (`stats.json` of each, when written).
    pub component_stats: BTreeMap<String, Value>,
    /// The core's and the components' binary sizes, memory and CPU time over the run.
    pub footprint: Option<Footprint>,
    /// What a pump site costs in AWS a month, this design against a naive one.
    pub cost: Option<SiteCost>,
    /// The raw facts the run observed.
    pub facts: Facts,
    /// Each deployment from the cloud: created, every status the core reported, converged.
    pub deployments: Vec<crate::rollout::Timeline>,
    /// The anomaly windows in S3 at the end, under the core's own prefix.
    pub anomaly_windows: Vec<WindowRecord>,
    /// The analyzer decided the anomaly (the event's `ts`) → its window is in S3.
    pub anomaly_to_window: Latency,
    /// The recovery from a dead core device: its timeline, what was lost and what was kept.
    pub recovery: Option<crate::recovery::Recovery>,
    /// The cloud's reaction to repeated faults: incidents, latencies, maintenance.
    pub cloud_reaction: Option<crate::reaction::CloudReaction>,
    /// The core's certificate rotation: the job, the certificates, the time it took.
    pub certificate_rotation: Option<crate::rotation::CertificateRotation>,
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.1}"))
}

impl Report {
    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        write_atomic(&dir.join("report.json"), &serde_json::to_vec_pretty(self)?)?;
        write_atomic(&dir.join("report.md"), self.markdown().as_bytes())?;
        Ok(())
    }

    /// The report for people.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let verdict = if self.passed { "every step held" } else { "a step failed" };
        let _ = writeln!(s, "# Pump station demo: {verdict}\n");
        let _ = writeln!(s, "Run started {} (UTC). Produced by `cargo run --release -- demo`.\n", self.started);
        let _ = writeln!(s, "## Steps\n\n| step | held | seconds | what was observed |\n| --- | --- | ---: | --- |");
        for st in &self.steps {
            let _ = writeln!(
                s,
                "| {} — {} | {} | {:.1} | {} |",
                st.name,
                st.description,
                if st.passed { "yes" } else { "**no**" },
                st.seconds,
                st.detail.replace('|', "\\|")
            );
        }
        let _ = writeln!(s, "\n## Detectors and model\n");
        let m = &self.model;
        let field = |key: &str| m[key].as_str().filter(|v| !v.is_empty()).unwrap_or("–").to_owned();
        let _ = writeln!(
            s,
            "The analyzer ran with `detector: {}`. The shadow's `reported.model` at the end:\n",
            self.detector
        );
        let _ = writeln!(
            s,
            "| status | detectors running | model | version | SHA-256 | error |\n| --- | --- | --- | --- | --- | --- |"
        );
        let running: Vec<&str> =
            m["running"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            field("status"),
            if running.is_empty() { "–".to_owned() } else { running.join(", ") },
            field("name"),
            field("version"),
            field("sha256"),
            field("error").replace('|', "\\|")
        );
        let _ = writeln!(s, "\nAnomaly events received by the cloud, by detector:\n");
        let _ = writeln!(s, "| event | kind | detector | severity | reason |\n| --- | --- | --- | ---: | --- |");
        for a in &self.anomalies {
            let _ = writeln!(
                s,
                "| {} `{}` | {} | **{}** | {:.2} | {} |",
                if a.active { "raised" } else { "cleared" },
                a.id,
                a.kind,
                a.detector,
                a.severity,
                a.reason.replace('|', "\\|")
            );
        }
        let _ = writeln!(
            s,
            "\n## Anomaly windows in S3 (scoped credentials)\n\nThe analyzer put the readings around each raised anomaly in S3 with credentials from the core's token exchange service (role alias → a role allowing only `s3:PutObject` under the thing's own prefix). Raise → object stored: p50 {} ms, p99 {} ms.\n\n| object | bytes | readings | before the raise |\n| --- | ---: | ---: | ---: |",
            ms(self.anomaly_to_window.p50_ms),
            ms(self.anomaly_to_window.p99_ms)
        );
        for w in &self.anomaly_windows {
            let _ = writeln!(s, "| `{}` | {} | {} | {} |", w.object, w.bytes, w.readings, w.before_samples);
        }
        let _ = writeln!(
            s,
            "\n## Messages received by the cloud\n\n| topic | messages | payload bytes min / avg / max | messages per minute | billed: messages (5 KiB units) | billed: shadow operations (1 KiB units) |\n| --- | ---: | --- | ---: | ---: | ---: |"
        );
        for (topic, f) in &self.topics {
            let _ = writeln!(
                s,
                "| `{topic}` | {} | {} / {:.0} / {} | {:.1} | {} | {} |",
                f.messages,
                f.bytes_min,
                f.bytes_avg,
                f.bytes_max,
                f.per_minute,
                f.billed.messages,
                f.billed.shadow_operations
            );
        }
        let _ = writeln!(
            s,
            "\nEach topic is billed by its own rule: a device topic in 5 KiB units of payload and topic; an accepted shadow update as the request's message and one shadow operation per KiB of the request; the shadow's other response topics bill the subscriber, not the site."
        );
        if !self.deployments.is_empty() {
            let _ = writeln!(s, "\n## Deployments from the cloud\n");
            for d in &self.deployments {
                let versions: Vec<String> = d.components.iter().map(|(n, v)| format!("{n} {v}")).collect();
                let converged = d.converged_ms.map_or("did not converge".to_owned(), |ms| format!("{ms} ms"));
                let downloaded = d.bytes_downloaded.map_or("not observed".to_owned(), |b| format!("{b} bytes"));
                let _ = writeln!(
                    s,
                    "**{}** — deployment `{}` (job `{}`), created {}: {}; {}; converged in {converged}; downloaded by the core: {downloaded}.\n",
                    d.purpose,
                    d.deployment_id,
                    d.iot_job_id.as_deref().unwrap_or("-"),
                    d.created,
                    versions.join(", "),
                    if d.succeeded { "succeeded" } else { "failed" }
                );
                for deferral in &d.deferrals {
                    let _ = writeln!(
                        s,
                        "Deferred by {} for {} ms in all: \"{}\".\n",
                        deferral.component,
                        deferral.deferred_ms,
                        deferral.message.as_deref().unwrap_or("")
                    );
                }
                let _ =
                    writeln!(s, "| after CreateDeployment, ms | core | status | reason |\n| ---: | --- | --- | --- |");
                for e in &d.events {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} |",
                        e.at_ms,
                        e.thing,
                        e.status,
                        e.reason.as_deref().unwrap_or("")
                    );
                }
                let _ = writeln!(s);
            }
        }
        if let Some(reaction) = &self.cloud_reaction {
            let _ =
                writeln!(s, "\n## The cloud reacts: rules, Lambda, DynamoDB, the shadow\n\n{}", reaction.markdown());
        }
        if let Some(rotation) = &self.certificate_rotation {
            let _ = writeln!(s, "\n## Certificate rotation\n\n{}", rotation.markdown());
        }
        if let Some(recovery) = &self.recovery {
            let _ = writeln!(s, "\n## Recovery from a dead core device\n\n{}", recovery.markdown());
        }
        if let Some(cost) = &self.cost {
            let _ = writeln!(s, "\n## Cost per pump site\n\n{}", cost.markdown());
        }
        if let Some(fp) = &self.footprint {
            let _ = writeln!(s, "\n## Edge footprint\n\n{}", fp.markdown());
        }
        let _ = writeln!(s, "\n## Latency\n\n| path | samples | p50, ms | p99, ms |\n| --- | ---: | ---: | ---: |");
        for (name, l) in [
            ("operator's desired change → speed setpoint written at the plant", &self.delta_to_actuation),
            ("fault injected → protective action at the plant", &self.fault_to_action),
            ("anomaly decided by the analyzer → protective action seen at the plant", &self.anomaly_to_action),
        ] {
            let _ = writeln!(s, "| {name} | {} | {} | {} |", l.samples_ms.len(), ms(l.p50_ms), ms(l.p99_ms));
        }
        let _ = writeln!(
            s,
            "\n## The plant after each action (Modbus registers)\n\n| after | desired, rpm | speed setpoint, rpm | run | bypass open |\n| --- | ---: | ---: | --- | --- |"
        );
        for r in &self.facts.plant_reads {
            let desired = r.desired_rpm.map_or("–".into(), |d| format!("{d:.0}"));
            let _ = writeln!(s, "| {} | {desired} | {:.0} | {} | {} |", r.after, r.setpoint_rpm, r.run, r.bypass_open);
        }
        let seqs = &self.facts.telemetry_seqs;
        let versions = &self.facts.shadow_versions;
        let _ = writeln!(
            s,
            "\nTelemetry: {} readings received in the cloud (sequence numbers {}..={}); shadow documents: {} (versions {}..={}).",
            seqs.len(),
            seqs.iter().min().copied().unwrap_or(0),
            seqs.iter().max().copied().unwrap_or(0),
            versions.len(),
            versions.first().map_or(0, |v| v[0]),
            versions.last().map_or(0, |v| v[1])
        );
        let _ = writeln!(s, "\n## The `pump` shadow at the end ({} bytes of state)\n", self.shadow_state_bytes);
        let _ = writeln!(s, "```json\n{}\n```", serde_json::to_string_pretty(&self.shadow).unwrap_or_default());
        let _ = writeln!(s, "\n## Payload examples (the first and the last message of each topic)\n");
        for (topic, f) in &self.topics {
            for (which, v) in [("first", &f.first_example), ("last", &f.example)] {
                let _ = writeln!(
                    s,
                    "`{topic}`, {which}:\n\n```json\n{}\n```\n",
                    serde_json::to_string_pretty(v).unwrap_or_default()
                );
            }
        }
        if !self.component_stats.is_empty() {
            let _ = writeln!(s, "## Components' own figures\n");
            for (name, v) in &self.component_stats {
                let _ =
                    writeln!(s, "`{name}`:\n\n```json\n{}\n```\n", serde_json::to_string_pretty(v).unwrap_or_default());
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let l = Latency::from_samples((1..=100).map(f64::from).collect());
        assert_eq!((l.p50_ms, l.p99_ms), (Some(50.0), Some(99.0)));
        let one = Latency::from_samples(vec![7.0]);
        assert_eq!((one.p50_ms, one.p99_ms), (Some(7.0), Some(7.0)));
        assert_eq!(Latency::from_samples(vec![]).p50_ms, None);
    }

    #[test]
    fn the_report_shows_which_detector_raised_each_anomaly_and_the_model_reported() {
        let raised = serde_json::json!({"v": 1, "id": "a-1", "ts": 5, "reading_seq": 9, "detector": "model",
            "kind": "cavitation", "active": true, "severity": 0.91, "reason": "pump-fault-classifier 1.0.0: p=0.91",
            "features": {}});
        let r = Report {
            detector: "model".into(),
            model: serde_json::json!({"status": "running", "detector": "model", "running": ["model"],
                "name": "pump-fault-classifier", "version": "1.0.0", "sha256": "592a", "error": "", "since": 1}),
            anomalies: vec![AnomalyRecord::from_event(&raised)],
            ..Default::default()
        };
        assert_eq!(r.anomalies[0].detector, "model");
        assert_eq!((r.anomalies[0].severity, r.anomalies[0].active), (0.91, true));
        let md = r.markdown();
        assert!(md.contains("`detector: model`"), "{md}");
        assert!(md.contains("| running | model | pump-fault-classifier | 1.0.0 | 592a | – |"), "{md}");
        assert!(md.contains("| raised `a-1` | cavitation | **model** | 0.91 |"), "{md}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["anomalies"][0]["detector"], "model");
        assert_eq!(json["model"]["version"], "1.0.0");
    }

    #[test]
    fn the_markdown_names_a_failed_step() {
        let r = Report {
            steps: vec![StepOutcome {
                name: "2".into(),
                key: "normal_operation".into(),
                description: "operator".into(),
                passed: false,
                seconds: 1.0,
                detail: "no delta".into(),
            }],
            ..Default::default()
        };
        let md = r.markdown();
        assert!(md.contains("a step failed") && md.contains("**no**") && md.contains("no delta"), "{md}");
    }
}
