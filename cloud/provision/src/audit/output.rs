//! The audit directory: `CHECKLIST.md`, `checklist.json`, `CASE-STUDY.md`, `architecture.svg`,
//! `evidence/*.json`, `audit.json` (what the run was given) and `manifest.json` (the SHA-256 of
//! every other file), and `verify`, which re-collects and compares.
//!
//! Each evidence file holds three parts: `stable` (compared exactly by `verify`), `cited` (ids of
//! resources whose history grows — jobs, deployments —: each must still exist, new ones may
//! appear) and `observed` (volatile: states, timestamps; shown, never compared).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::case_study::{Partner, ThirdParty};
use super::checklist::{Decided, Inputs, Section, decide};
use super::evidence::Evidence;
use crate::error::ProvisionError;
use crate::output::write_atomic;

/// The evidence directory inside an audit directory.
pub const EVIDENCE_DIR: &str = "evidence";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// What the run was given (so `verify` re-collects the same way).
pub const OPTIONS_FILE: &str = "audit.json";

/// One evidence file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceFile {
    /// What it shows.
    pub title: String,
    /// Compared exactly by `verify`.
    pub stable: Value,
    /// Ids of resources that must still exist.
    pub cited: Vec<String>,
    /// Volatile: shown, not compared.
    pub observed: Value,
}

impl EvidenceFile {
    fn new(title: &str, stable: Value, cited: Vec<String>, observed: Value) -> EvidenceFile {
        EvidenceFile { title: title.to_owned(), stable, cited, observed }
    }
}

/// What `audit run` was given, kept in `audit.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunOptions {
    /// `--thing-group`.
    pub thing_group: Option<String>,
    /// `--prefix`.
    pub prefix: Option<String>,
    /// `--report`.
    pub report: Option<PathBuf>,
    /// `--input`.
    pub input: Option<PathBuf>,
    /// The model card read.
    pub model_card: Option<PathBuf>,
    /// The price list read.
    pub prices: Option<PathBuf>,
    /// The workspace whose third-party packages are listed.
    pub workspace: Option<PathBuf>,
}

impl RunOptions {
    /// What `audit run` reads under `workspace` (made absolute) unless told otherwise: the run
    /// report `target/demo/report.json`, the card of the model that report names
    /// ([`model_card_for_run`]), the prices `docs/prices.json`, the workspace's third-party
    /// packages; each default only when its file exists.
    pub fn with_workspace_defaults(
        workspace: &Path,
        report: Option<PathBuf>,
        model_card: Option<PathBuf>,
        prices: Option<PathBuf>,
    ) -> RunOptions {
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        let workspace = absolute(workspace.to_owned());
        let or_default = |given: Option<PathBuf>, default: &str| {
            given.or_else(|| Some(workspace.join(default)).filter(|p| p.exists())).map(absolute)
        };
        let report = or_default(report, "target/demo/report.json");
        let model_card = model_card.or_else(|| model_card_for_run(&workspace, report.as_deref())).map(absolute);
        RunOptions {
            report,
            model_card,
            prices: or_default(prices, "docs/prices.json"),
            workspace: Some(workspace),
            ..RunOptions::default()
        }
    }
}

/// The model card that describes the model a run reports: `components/model/releases/{version}/
/// model-card.json` under `workspace` when the report's `model.version` has a release there (the
/// demo rolls out a retrained model), else `components/model/model-card.json` when it exists.
pub fn model_card_for_run(workspace: &Path, report: Option<&Path>) -> Option<PathBuf> {
    let version = report
        .and_then(|r| std::fs::read(r).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|r| r["model"]["version"].as_str().map(str::to_owned))
        .filter(|v| !v.is_empty() && !v.contains(['/', '\\']) && v != "..");
    let model = workspace.join("components/model");
    version
        .map(|v| model.join("releases").join(v).join("model-card.json"))
        .filter(|p| p.exists())
        .or_else(|| Some(model.join("model-card.json")).filter(|p| p.exists()))
}

/// Collects everything an audit directory is made from, as `options` say.
pub async fn audit(
    clients: &super::collect::AuditClients,
    options: &RunOptions,
    now: i64,
) -> Result<Audit, ProvisionError> {
    let partner = options.input.as_deref().map(Partner::read).transpose()?;
    let collect = super::collect::CollectOptions {
        thing_group: options.thing_group.clone(),
        prefix: options.prefix.clone(),
        report: options.report.clone(),
        model_card: options.model_card.clone(),
        prices: options.prices.clone(),
        now,
    };
    let evidence = super::collect::collect(clients, &collect).await?;
    let third_party = match &options.workspace {
        Some(w) => super::case_study::third_party(w),
        None => (Vec::new(), "no workspace was given (--workspace): no list".to_owned()),
    };
    Ok(Audit { evidence, partner, third_party, options: options.clone() })
}

/// Everything an audit directory is made from.
#[derive(Debug, Clone)]
pub struct Audit {
    /// What was observed.
    pub evidence: Evidence,
    /// The partner's fields.
    pub partner: Option<Partner>,
    /// Third-party packages and where the list came from.
    pub third_party: (Vec<ThirdParty>, String),
    /// The options.
    pub options: RunOptions,
}

impl Audit {
    /// Every line decided.
    pub fn decided(&self) -> Vec<Decided> {
        decide(Inputs { evidence: &self.evidence, partner: self.partner.as_ref() })
    }

    /// The evidence files, by name (without `.json`).
    pub fn evidence_files(&self) -> BTreeMap<&'static str, EvidenceFile> {
        evidence_files(&self.evidence, &self.third_party)
    }
}

fn run_part(e: &Evidence, key: &str) -> Value {
    e.run.as_ref().map_or(Value::Null, |r| r[key].clone())
}

/// The evidence files of `e`.
pub fn evidence_files(e: &Evidence, third_party: &(Vec<ThirdParty>, String)) -> BTreeMap<&'static str, EvidenceFile> {
    let gg = &e.greengrass;
    let iot = &e.iot;
    let mut files = BTreeMap::new();
    files.insert("resources", EvidenceFile::new(
        "The solution's resources in the account",
        json!({
            "account": e.account,
            "things": iot.things, "thingGroups": iot.thing_groups,
            "components": gg.components.iter().map(|c| json!({"name": c.name, "versions": c.versions})).collect::<Vec<_>>(),
            "functions": e.functions, "tables": e.tables, "buckets": e.buckets,
            "roles": e.roles.iter().map(|r| &r.arn).collect::<Vec<_>>(),
            "rules": iot.rules.iter().map(|r| &r.name).collect::<Vec<_>>(),
        }),
        Vec::new(),
        json!({"logGroups": e.log_groups, "servicesUsed": super::case_study::services_used(e)}),
    ));
    let topics: serde_json::Map<String, Value> =
        e.run.as_ref().and_then(|r| r["topics"].as_object()).cloned().unwrap_or_default();
    files.insert("payloads", EvidenceFile::new(
        "Payload examples per IoT Core topic with their sizes (bytes) and rates (messages a minute), from the run report",
        json!({"topics": topics}),
        Vec::new(),
        Value::Null,
    ));
    let shadow_topics: BTreeMap<&str, &Value> = e.run_topics("$aws/things/+/shadow/#").into_iter().collect();
    files.insert(
        "shadow",
        EvidenceFile::new(
            "The pump's named shadow: document, size, shadow topics and desired → actuation latency",
            json!({
                "document": run_part(e, "shadow"), "stateBytes": run_part(e, "shadow_state_bytes"),
                "topics": shadow_topics, "deltaToActuation": run_part(e, "delta_to_actuation"),
                "versions": e.run.as_ref().map_or(Value::Null, |r| r["facts"]["shadow_versions"].clone()),
            }),
            Vec::new(),
            Value::Null,
        ),
    );
    let rotations: Vec<&super::evidence::Job> = iot.jobs.iter().filter(|j| j.rotation).collect();
    files.insert("certificates", EvidenceFile::new(
        "Certificate inventory (status, expiry, things), fleet provisioning templates, role aliases, and the rotation log",
        json!({"certificates": iot.certificates, "provisioningTemplates": iot.provisioning_templates, "roleAliases": iot.role_aliases}),
        rotations.iter().map(|j| format!("job:{}", j.id)).collect(),
        json!({"rotationLog": rotations}),
    ));
    let latest: Vec<Value> = gg
        .deployments
        .iter()
        .filter(|d| d.latest)
        .map(|d| json!({"targetArn": d.target_arn, "components": d.components}))
        .collect();
    files.insert("deployments", EvidenceFile::new(
        "Greengrass components and versions, deployment history, core devices and what they run",
        json!({
            "components": gg.components, "latestDeployments": latest,
            "coreDevices": gg.core_devices.iter().map(|c| json!({"thing": c.thing, "components": c.components.iter().map(|(n, v, _)| (n, v)).collect::<Vec<_>>()})).collect::<Vec<_>>(),
        }),
        gg.deployments.iter().map(|d| format!("deployment:{}", d.id)).collect(),
        json!({"deployments": gg.deployments, "coreDevices": gg.core_devices, "runTimelines": run_part(e, "deployments")}),
    ));
    files.insert(
        "model-card",
        EvidenceFile::new(
            "The model card and the model the core reports running",
            json!({"card": e.model_card, "reportedByCore": run_part(e, "model"), "detector": run_part(e, "detector")}),
            Vec::new(),
            Value::Null,
        ),
    );
    let security = e.security.as_ref();
    files.insert(
        "policy-audit",
        EvidenceFile::new(
            "IoT policies and the audit of policies, certificates and role aliases (Device Defender checks)",
            json!({
                "policies": iot.policies,
                "summary": security.map(|r| &r.summary),
                "findings": security.map(|r| r.findings.iter().map(|f| json!({
                    "check": f.check, "severity": f.severity, "reasonCode": f.reason_code, "resource": f.resource,
                })).collect::<Vec<_>>()),
            }),
            Vec::new(),
            // A finding's message can count the days left: shown, not compared.
            json!({"checkedAt": security.map(|r| r.checked_at), "findings": security.map(|r| &r.findings)}),
        ),
    );
    files.insert(
        "cost",
        EvidenceFile::new(
            "Cost per device (pump site) a month at AWS list prices, against a naive design",
            json!({"costPerSite": run_part(e, "cost"), "prices": e.prices}),
            Vec::new(),
            Value::Null,
        ),
    );
    files.insert("monitoring", EvidenceFile::new(
        "Monitoring: CloudWatch alarms and the metrics they watch, fleet indexing, rules' error actions",
        json!({
            "alarms": e.alarms.iter().map(|a| json!({"name": a.name, "metric": a.metric})).collect::<Vec<_>>(),
            "indexing": iot.indexing,
            "ruleErrorActions": iot.rules.iter().map(|r| json!({"rule": r.name, "errorAction": r.error_action})).collect::<Vec<_>>(),
        }),
        Vec::new(),
        json!({"alarmStates": e.alarms.iter().map(|a| (&a.name, &a.state)).collect::<BTreeMap<_, _>>(), "logGroups": e.log_groups}),
    ));
    files.insert("rules", EvidenceFile::new(
        "Topic rules and what they integrate: Lambda functions, DynamoDB tables, S3 buckets, and each role's policies",
        json!({"rules": iot.rules, "functions": e.functions, "tables": e.tables, "buckets": e.buckets, "roles": e.roles}),
        Vec::new(),
        Value::Null,
    ));
    let steps: Vec<Value> = e
        .run
        .as_ref()
        .and_then(|r| r["steps"].as_array())
        .into_iter()
        .flatten()
        .map(|s| json!({"name": s["name"], "key": s["key"], "description": s["description"], "passed": s["passed"]}))
        .collect();
    let latency = |k: &str| json!({"p50Ms": e.run.as_ref().map(|r| &r[k]["p50_ms"]), "p99Ms": e.run.as_ref().map(|r| &r[k]["p99_ms"])});
    files.insert("run", EvidenceFile::new(
        "The run's steps, latencies, recovery from a dead core, host IO (plant reads) and disk (anomaly windows)",
        json!({
            "started": run_part(e, "started"), "passed": run_part(e, "passed"), "steps": steps,
            "deltaToActuation": latency("delta_to_actuation"), "faultToAction": latency("fault_to_action"),
            "anomalyToAction": latency("anomaly_to_action"), "recovery": run_part(e, "recovery"),
            "plantReads": e.run.as_ref().map_or(Value::Null, |r| r["facts"]["plant_reads"].clone()),
            "anomalyWindows": run_part(e, "anomaly_windows"),
        }),
        Vec::new(),
        json!({"stepSeconds": e.run.as_ref().and_then(|r| r["steps"].as_array()).into_iter().flatten().map(|s| s["seconds"].clone()).collect::<Vec<_>>()}),
    ));
    files.insert(
        "third-party",
        EvidenceFile::new(
            "Third-party packages with their licences",
            json!({"source": third_party.1, "packages": third_party.0}),
            Vec::new(),
            Value::Null,
        ),
    );
    files
}

/// One line of `checklist.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChecklistLine {
    /// Our id.
    pub id: String,
    /// The section's title.
    pub section: String,
    /// The official wording's subject.
    pub subject: String,
    /// Met Y/N.
    pub met: bool,
    /// `evidence` or `partner`.
    pub basis: String,
    /// Each check, `✓`/`✗` and what was seen.
    pub checks: Vec<String>,
    /// How to check it by hand.
    pub by_hand: String,
    /// The evidence: title and link relative to the audit directory.
    pub evidence: Vec<EvidenceLink>,
}

/// A link to an evidence file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceLink {
    /// Its title.
    pub title: String,
    /// Relative to the audit directory.
    pub href: String,
}

/// `checklist.json`'s lines.
pub fn checklist_lines(decided: &[Decided], files: &BTreeMap<&'static str, EvidenceFile>) -> Vec<ChecklistLine> {
    decided
        .iter()
        .map(|d| {
            let mut evidence: Vec<EvidenceLink> = d
                .files
                .iter()
                .filter_map(|f| {
                    files.get(f).map(|file| EvidenceLink {
                        title: file.title.clone(),
                        href: format!("{EVIDENCE_DIR}/{f}.json"),
                    })
                })
                .collect();
            if d.id.starts_with("AD-") {
                evidence.push(EvidenceLink { title: "Architecture diagram".into(), href: "architecture.svg".into() });
            }
            if d.id.starts_with("CS-") {
                evidence.push(EvidenceLink { title: "The case study".into(), href: "CASE-STUDY.md".into() });
            }
            ChecklistLine {
                id: d.id.to_owned(),
                section: d.section.title().to_owned(),
                subject: d.subject.to_owned(),
                met: d.met,
                basis: match d.basis {
                    super::checklist::Basis::Evidence => "evidence".into(),
                    super::checklist::Basis::Partner => "partner".into(),
                },
                checks: d.checks.iter().map(|c| format!("{} {}", if c.held { "✓" } else { "✗" }, c.text)).collect(),
                by_hand: d.by_hand.to_owned(),
                evidence,
            }
        })
        .collect()
}

/// `CHECKLIST.md`.
pub fn checklist_markdown(lines: &[ChecklistLine], account: Option<&str>) -> String {
    let mut s = String::new();
    let met = lines.iter().filter(|l| l.met).count();
    let _ = writeln!(s, "# AWS IoT Greengrass service delivery checklist\n");
    let _ = writeln!(
        s,
        "Generated by `audit run` from the live deployment (account {}) and the run's measured figures; every Met is computed from the evidence linked, never typed in. `audit verify DIR` checks that it still holds. {met} of {} lines met.\n",
        account.unwrap_or("not found"),
        lines.len()
    );
    let _ =
        writeln!(s, "## Summary\n\n| line | section | subject | met | decided on |\n| --- | --- | --- | --- | --- |");
    for l in lines {
        let _ = writeln!(
            s,
            "| [{}](#{}) | {} | {} | {} | {} |",
            l.id,
            l.id.to_ascii_lowercase(),
            l.section,
            l.subject,
            if l.met { "Y" } else { "**N**" },
            l.basis
        );
    }
    for section in Section::ALL {
        let _ = writeln!(s, "\n## {}", section.title());
        for l in lines.iter().filter(|l| l.section == section.title()) {
            let _ = writeln!(
                s,
                "\n### {}\n\n**{}** — Met: **{}**{}\n",
                l.id,
                l.subject,
                if l.met { "Y" } else { "N" },
                if l.basis == "partner" { " (the partner's statement: software cannot show this line)" } else { "" }
            );
            for c in &l.checks {
                let _ = writeln!(s, "- {c}");
            }
            if !l.evidence.is_empty() {
                let links: Vec<String> = l.evidence.iter().map(|e| format!("[{}]({})", e.title, e.href)).collect();
                let _ = writeln!(s, "\nEvidence: {}", links.join("; "));
            }
            let _ = writeln!(s, "\nBy hand: {}", l.by_hand);
        }
    }
    s
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn json_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, ProvisionError> {
    let mut v =
        serde_json::to_vec_pretty(value).map_err(|e| ProvisionError::unexpected("serializing", e.to_string()))?;
    v.push(b'\n');
    Ok(v)
}

/// Writes the audit directory; the lines decided.
pub fn write(dir: &Path, audit: &Audit) -> Result<Vec<ChecklistLine>, ProvisionError> {
    let io = |e: std::io::Error| ProvisionError::InvalidInput(format!("the audit directory {}: {e}", dir.display()));
    std::fs::create_dir_all(dir.join(EVIDENCE_DIR)).map_err(io)?;
    let files = audit.evidence_files();
    let lines = checklist_lines(&audit.decided(), &files);
    let mut written: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, file) in &files {
        written.push((format!("{EVIDENCE_DIR}/{name}.json"), json_bytes(file)?));
    }
    written.push(("checklist.json".into(), json_bytes(&lines)?));
    written
        .push(("CHECKLIST.md".into(), checklist_markdown(&lines, audit.evidence.account.id.as_deref()).into_bytes()));
    let case_study =
        super::case_study::render(&audit.evidence, audit.partner.as_ref(), &audit.third_party.0, &audit.third_party.1);
    written.push(("CASE-STUDY.md".into(), case_study.into_bytes()));
    written.push(("architecture.svg".into(), super::diagram::render(&audit.evidence).into_bytes()));
    written.push((OPTIONS_FILE.into(), json_bytes(&audit.options)?));
    let mut manifest = BTreeMap::new();
    for (path, bytes) in &written {
        write_atomic(&dir.join(path), bytes, 0o644)?;
        manifest.insert(path.clone(), sha256_hex(bytes));
    }
    write_atomic(&dir.join(MANIFEST), &json_bytes(&json!({"sha256": manifest}))?, 0o644)?;
    Ok(lines)
}

/// Reads `audit.json` of an audit directory.
pub fn read_options(dir: &Path) -> Result<RunOptions, ProvisionError> {
    let value = super::collect::read_json(&dir.join(OPTIONS_FILE), "the audit's options")?;
    serde_json::from_value(value).map_err(|e| ProvisionError::InvalidInput(format!("{OPTIONS_FILE}: {e}")))
}

/// One difference `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// A file's digest differs from the manifest, or it is gone.
    Digest(String),
    /// A line's Met changed.
    Met {
        /// The line.
        line: String,
        /// Written.
        was: bool,
        /// Now.
        now: bool,
    },
    /// An evidence file's stable part changed; the lines that cite it.
    Changed {
        /// The file.
        file: String,
        /// The lines citing it.
        lines: Vec<String>,
    },
    /// A cited resource is gone; the lines that cite its file.
    Gone {
        /// The file.
        file: String,
        /// The resource id.
        resource: String,
        /// The lines citing the file.
        lines: Vec<String>,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Digest(path) => write!(f, "{path}: its SHA-256 no longer matches {MANIFEST}"),
            Difference::Met { line, was, now } => {
                let yn = |b: &bool| if *b { "Y" } else { "N" };
                write!(f, "{line}: Met was {}, is now {}", yn(was), yn(now))
            }
            Difference::Changed { file, lines } => {
                write!(f, "{file}: the deployment no longer matches it (cited by {})", lines.join(", "))
            }
            Difference::Gone { file, resource, lines } => {
                write!(f, "{file}: {resource} is gone (cited by {})", lines.join(", "))
            }
        }
    }
}

/// Compares a written audit directory with a fresh [`Audit`] of the deployment.
pub fn verify(dir: &Path, now: &Audit) -> Result<Vec<Difference>, ProvisionError> {
    let mut differences = Vec::new();
    let manifest = super::collect::read_json(&dir.join(MANIFEST), "the manifest")?;
    let digests = manifest["sha256"]
        .as_object()
        .ok_or_else(|| ProvisionError::InvalidInput(format!("{MANIFEST}: no sha256 map")))?;
    for (path, digest) in digests {
        match std::fs::read(dir.join(path)) {
            Ok(bytes) if Some(sha256_hex(&bytes).as_str()) == digest.as_str() => {}
            _ => differences.push(Difference::Digest(path.clone())),
        }
    }
    let written: Vec<ChecklistLine> =
        serde_json::from_value(super::collect::read_json(&dir.join("checklist.json"), "checklist.json")?)
            .map_err(|e| ProvisionError::InvalidInput(format!("checklist.json: {e}")))?;
    let files = now.evidence_files();
    let fresh = checklist_lines(&now.decided(), &files);
    for w in &written {
        if let Some(n) = fresh.iter().find(|n| n.id == w.id)
            && n.met != w.met
        {
            differences.push(Difference::Met { line: w.id.clone(), was: w.met, now: n.met });
        }
    }
    let citing = |file: &str| -> Vec<String> {
        let href = format!("{EVIDENCE_DIR}/{file}.json");
        written.iter().filter(|l| l.evidence.iter().any(|e| e.href == href)).map(|l| l.id.clone()).collect()
    };
    for (name, fresh_file) in &files {
        let path = dir.join(EVIDENCE_DIR).join(format!("{name}.json"));
        let old: EvidenceFile = match super::collect::read_json(&path, "an evidence file").map(serde_json::from_value) {
            Ok(Ok(f)) => f,
            _ => {
                differences
                    .push(Difference::Changed { file: format!("{EVIDENCE_DIR}/{name}.json"), lines: citing(name) });
                continue;
            }
        };
        // Written and fresh go through the same JSON round trip before they are compared.
        let fresh_stable: Value = serde_json::from_slice(&json_bytes(&fresh_file.stable)?).unwrap_or(Value::Null);
        if old.stable != fresh_stable {
            differences.push(Difference::Changed { file: format!("{EVIDENCE_DIR}/{name}.json"), lines: citing(name) });
        }
        for id in old.cited.iter().filter(|id| !fresh_file.cited.contains(id)) {
            differences.push(Difference::Gone {
                file: format!("{EVIDENCE_DIR}/{name}.json"),
                resource: id.clone(),
                lines: citing(name),
            });
        }
    }
    Ok(differences)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_card_is_the_one_of_the_model_the_run_reports() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("components/model");
        std::fs::create_dir_all(model.join("releases/1.1.0")).unwrap();
        std::fs::write(model.join("model-card.json"), "{}").unwrap();
        std::fs::write(model.join("releases/1.1.0/model-card.json"), "{}").unwrap();
        let report = dir.path().join("report.json");
        let card = |version: &str| {
            std::fs::write(&report, serde_json::json!({"model": {"version": version}}).to_string()).unwrap();
            model_card_for_run(dir.path(), Some(&report)).unwrap()
        };
        assert_eq!(card("1.1.0"), model.join("releases/1.1.0/model-card.json"));
        assert_eq!(card("1.0.0"), model.join("model-card.json"), "no release of that version: the shipped card");
        assert_eq!(card("../../x"), model.join("model-card.json"), "a version is not a path");
        assert_eq!(model_card_for_run(dir.path(), None).unwrap(), model.join("model-card.json"));
        assert_eq!(model_card_for_run(&dir.path().join("none"), Some(&report)), None);
    }

    fn audit() -> Audit {
        let mut e = Evidence::default();
        e.tables.push("pump-incidents".into());
        e.iot.jobs.push(super::super::evidence::Job {
            id: "rotate-1".into(),
            status: "COMPLETED".into(),
            rotation: true,
            executions: vec![("core-1".into(), "SUCCEEDED".into())],
        });
        Audit { evidence: e, partner: None, third_party: (Vec::new(), "none".into()), options: RunOptions::default() }
    }

    #[test]
    fn a_fresh_audit_verifies_and_each_kind_of_drift_is_named_with_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let a = audit();
        let lines = write(dir.path(), &a).unwrap();
        assert_eq!(lines.len(), super::super::checklist::LINES.len());
        for f in [
            "CHECKLIST.md",
            "checklist.json",
            "CASE-STUDY.md",
            "architecture.svg",
            "manifest.json",
            "evidence/rules.json",
            "audit.json",
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        assert_eq!(verify(dir.path(), &a).unwrap(), Vec::new());

        let mut b = a.clone();
        b.evidence.tables.clear();
        b.evidence.iot.jobs.clear();
        let diffs = verify(dir.path(), &b).unwrap();
        let text: Vec<String> = diffs.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|t| t.starts_with("evidence/rules.json") && t.contains("GG-5")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("job:rotate-1 is gone")), "{text:?}");

        std::fs::write(dir.path().join("CHECKLIST.md"), "edited").unwrap();
        let diffs = verify(dir.path(), &a).unwrap();
        assert_eq!(diffs, vec![Difference::Digest("CHECKLIST.md".into())]);
    }

    #[test]
    fn volatile_figures_are_not_compared() {
        let dir = tempfile::tempdir().unwrap();
        let a = audit();
        write(dir.path(), &a).unwrap();
        let mut b = a.clone();
        b.evidence.alarms.clear();
        b.evidence.log_groups.push("/aws/greengrass/new".into());
        b.evidence.iot.jobs[0].status = "IN_PROGRESS".into();
        b.evidence.iot.jobs.push(super::super::evidence::Job { id: "rotate-2".into(), ..Default::default() });
        assert_eq!(verify(dir.path(), &b).unwrap(), Vec::new(), "new log groups, job states and new jobs are volatile");
    }

    #[test]
    fn the_markdown_has_a_summary_row_and_a_section_for_every_line() {
        let a = audit();
        let lines = checklist_lines(&a.decided(), &a.evidence_files());
        let md = checklist_markdown(&lines, Some("000000000000"));
        for l in &lines {
            assert!(md.contains(&format!("| [{}](#", l.id)) && md.contains(&format!("### {}", l.id)), "{}", l.id);
        }
        assert!(md.contains("By hand:"));
    }
}
