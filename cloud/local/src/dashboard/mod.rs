//! The auditors' live dashboard: a web page served at `/dashboard/` on the HTTP endpoint, and a
//! read-only JSON API under `/dashboard/api/` that shows what the local cloud holds — the fleet,
//! live telemetry, the `pump` shadows, anomalies and incidents, deployments and jobs, alarms, and
//! the audit's checklist.
//!
//! Viewers sign in through a Cognito user pool ([`crate::cognito`]): the page calls InitiateAuth
//! (`USER_PASSWORD_AUTH`) and sends the id token as `Authorization: Bearer …`; every API answer
//! needs a token that pool's key signed, issued to the configured app client, `token_use` `id`,
//! not expired (the Cognito Developer Guide's "Verifying a JSON web token"). The pool and the
//! client are configured by name ([`DashboardConfig`]), as `provision auditors` makes them.
//!
//! # Layout
//! - this file: the configuration and the panels, each built from the services' own state;
//! - [`tap`]: the rings of recent telemetry, anomaly events and job-execution changes;
//! - [`http`]: the layer on the HTTP endpoint (page, API, sign-in check);
//! - `static/`: the page, its script and its style sheet, compiled into the binary.

pub mod http;
pub mod tap;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::cognito::Cognito;
use crate::greengrass::deployments::Deployments;
use crate::jobs::{JobFilter, JobsService};
use crate::registry::{ListThingsQuery, PageRequest, Registry};
use crate::shadows::ShadowService;
use tap::Recent;

/// The name of the user pool the dashboard trusts unless configured otherwise.
pub const DEFAULT_USER_POOL_NAME: &str = "auditors";

/// The name of the app client the dashboard trusts unless configured otherwise.
pub const DEFAULT_CLIENT_NAME: &str = "dashboard";

/// The incidents table the dashboard reads unless configured otherwise (`provision app`'s name
/// with its default prefix).
pub const DEFAULT_INCIDENTS_TABLE: &str = "pump-incidents";

/// The named shadow each pump keeps its state in.
pub const PUMP_SHADOW: &str = "pump";

/// Most things the fleet and shadow panels list.
pub const MAX_THINGS: usize = 250;

/// Most incidents the incidents panel lists.
pub const MAX_INCIDENTS: usize = 100;

/// What the dashboard trusts and where it finds what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardConfig {
    /// The user pool whose users may sign in (by name; exactly one pool may have it).
    pub user_pool_name: String,
    /// The app client in that pool the tokens must be issued to (by name).
    pub client_name: String,
    /// The audit's `checklist.json`; `None`: the checklist panel says there is no audit yet.
    pub checklist: Option<PathBuf>,
    /// The DynamoDB table of incidents the anomaly handler writes.
    pub incidents_table: String,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            user_pool_name: DEFAULT_USER_POOL_NAME.into(),
            client_name: DEFAULT_CLIENT_NAME.into(),
            checklist: None,
            incidents_table: DEFAULT_INCIDENTS_TABLE.into(),
        }
    }
}

/// The services the dashboard reads (never writes).
#[derive(Debug, Clone)]
pub struct Sources {
    /// Things and certificates.
    pub registry: Arc<Registry>,
    /// Shadows.
    pub shadows: ShadowService,
    /// Greengrass deployments and core devices.
    pub deployments: Deployments,
    /// IoT Jobs.
    pub jobs: JobsService,
    /// Connectivity.
    pub fleet_index: crate::fleet_index::FleetIndex,
    /// Alarms.
    pub cloudwatch: crate::cloudwatch::CloudWatch,
    /// The incidents table.
    pub dynamodb: crate::dynamodb::DynamoDb,
    /// The user pools.
    pub cognito: Cognito,
}

/// The dashboard: its configuration, its sources and the rings of recent traffic.
#[derive(Debug, Clone)]
pub struct Dashboard {
    config: Arc<DashboardConfig>,
    sources: Sources,
    recent: Recent,
}

/// The sign-in settings the page needs before anyone signs in (public, as a web app's
/// configuration is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignIn {
    /// The pool's id.
    pub user_pool_id: String,
    /// The app client's id.
    pub client_id: String,
}

fn millis_to_secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl Dashboard {
    /// A dashboard over `sources`, fed by `recent`.
    pub fn new(config: DashboardConfig, sources: Sources, recent: Recent) -> Self {
        Dashboard { config: Arc::new(config), sources, recent }
    }

    /// The rings the broker's tap fills.
    pub fn recent(&self) -> &Recent {
        &self.recent
    }

    /// The pool and client the configuration names, or why sign-in is not possible yet.
    pub fn sign_in(&self) -> Result<SignIn, String> {
        let cognito = &self.sources.cognito;
        let name = &self.config.user_pool_name;
        let user_pool_id = cognito
            .pool_id_by_name(name)
            .map_err(|e| e.message)?
            .ok_or_else(|| format!("no single user pool is named {name:?}: run `provision auditors`"))?;
        let client = &self.config.client_name;
        let client_id = cognito
            .client_id_by_name(&user_pool_id, client)
            .map_err(|e| e.message)?
            .ok_or_else(|| format!("user pool {user_pool_id} has no single app client named {client:?}"))?;
        Ok(SignIn { user_pool_id, client_id })
    }

    /// Who the bearer `token` names, if the configured pool and client issued it and it is valid.
    pub fn authenticate(&self, token: &str) -> Result<crate::cognito::Identity, String> {
        let sign_in = self.sign_in()?;
        self.sources.cognito.verify_id_token(token, &sign_in.user_pool_id, &sign_in.client_id)
    }

    fn things(&self) -> Vec<crate::registry::Thing> {
        let query = ListThingsQuery {
            page: PageRequest { next_token: None, max_results: Some(MAX_THINGS) },
            ..Default::default()
        };
        self.sources.registry.list_things(&query).map(|(things, _)| things).unwrap_or_default()
    }

    /// The fleet: every thing with its connection, its certificates' expiry and, for a
    /// Greengrass core device, its status and components.
    pub fn fleet(&self) -> Value {
        let now_ms = self.sources.fleet_index.now_millis();
        let cores: std::collections::BTreeMap<String, cloud_api::greengrass::core_device::CoreDevice> = self
            .sources
            .deployments
            .core_devices(None, None)
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.thing_name.clone(), c))
            .collect();
        let things: Vec<Value> = self
            .things()
            .into_iter()
            .map(|thing| {
                let connectivity = self.sources.fleet_index.connectivity(&thing.name);
                let certificates: Vec<Value> = self
                    .sources
                    .registry
                    .list_thing_principals(&thing.name)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|arn| arn.rsplit_once("cert/").map(|(_, id)| id.to_owned()))
                    .filter_map(|id| self.sources.registry.describe_certificate(&id).ok())
                    .map(|c| {
                        let days_left = (c.not_after as i64 * 1000 - now_ms as i64).div_euclid(86_400_000);
                        json!({"id": c.id, "status": c.status.as_str(), "notAfter": c.not_after, "daysLeft": days_left})
                    })
                    .collect();
                let mut entry = json!({
                    "thing": thing.name,
                    "connected": connectivity.as_ref().is_some_and(|c| c.connected),
                    "connectivityAt": connectivity.as_ref().map(|c| c.timestamp),
                    "disconnectReason": connectivity.as_ref().and_then(|c| c.disconnect_reason.clone()),
                    "certificates": certificates,
                });
                if let Some(core) = cores.get(&thing.name) {
                    let components: Vec<Value> = core
                        .installed(false)
                        .map(|c| json!({"name": c.component_name, "version": c.component_version, "state": c.lifecycle_state}))
                        .collect();
                    entry["core"] = json!({
                        "status": match core.status {
                            Some(cloud_api::greengrass::fleet_status::OverallStatus::Unhealthy) => "UNHEALTHY",
                            _ => "HEALTHY",
                        },
                        "coreVersion": core.core_version,
                        "lastStatusUpdate": millis_to_secs(core.last_status_update_ms),
                        "components": components,
                    });
                }
                entry
            })
            .collect();
        json!({"things": things})
    }

    /// Recent telemetry per pump (see [`tap`]).
    pub fn telemetry(&self) -> Value {
        self.recent.telemetry()
    }

    /// The `pump` named shadow of every thing that has one: desired, reported, delta, version.
    pub fn shadows(&self) -> Value {
        let shadows: Vec<Value> = self
            .things()
            .into_iter()
            .filter_map(|thing| {
                let doc = self.sources.shadows.get(&thing.name, Some(PUMP_SHADOW)).ok()?;
                Some(json!({
                    "thing": thing.name,
                    "version": doc["version"],
                    "desired": doc["state"]["desired"],
                    "reported": doc["state"]["reported"],
                    "delta": doc["state"]["delta"],
                    "timestamp": doc["timestamp"],
                }))
            })
            .collect();
        json!({"shadow": PUMP_SHADOW, "shadows": shadows})
    }

    /// Anomaly events the broker carried, and the incidents table's newest rows.
    pub fn anomalies(&self) -> Value {
        let table = &self.config.incidents_table;
        let scan = self
            .sources
            .dynamodb
            .call(crate::dynamodb::Operation::Scan, json!({"TableName": table, "Limit": MAX_INCIDENTS}));
        let (incidents, incidents_error) = match scan {
            Ok(text) => {
                let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                let mut rows: Vec<Value> =
                    answer["Items"].as_array().map(|items| items.iter().map(plain).collect()).unwrap_or_default();
                rows.sort_by(|a, b| b["at"].to_string().cmp(&a["at"].to_string()));
                (rows, None)
            }
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        json!({
            "events": self.recent.anomalies(),
            "incidentsTable": table,
            "incidents": incidents,
            "incidentsError": incidents_error,
        })
    }

    /// Greengrass deployments (every revision) and IoT jobs with their executions' timelines.
    pub fn deployments(&self) -> Value {
        let deployments: Vec<Value> = self
            .sources
            .deployments
            .list(None, None, false)
            .iter()
            .rev()
            .map(|d| {
                json!({
                    "deploymentId": d.deployment_id,
                    "deploymentName": d.deployment_name,
                    "targetArn": d.target_arn,
                    "revision": d.revision,
                    "status": d.status.as_str(),
                    "isLatestForTarget": d.is_latest_for_target,
                    "created": millis_to_secs(d.creation_ms),
                    "iotJobId": d.iot_job_id,
                    "components": d.components.iter().map(|(name, spec)| json!({"name": name, "version": spec.component_version})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let changes = self.recent.executions();
        let mut jobs: Vec<(i64, Value)> = self
            .sources
            .jobs
            .list_jobs(&JobFilter::default())
            .into_iter()
            .map(|(job, record)| {
                let executions: Vec<Value> = self
                    .sources
                    .jobs
                    .executions(Some(&job.spec.job_id), None)
                    .into_iter()
                    .map(|(e, _)| {
                        let mut timeline = vec![json!({"status": "QUEUED", "at": e.queued_at_ms})];
                        if let Some(started) = e.started_at_ms {
                            timeline.push(json!({"status": "IN_PROGRESS", "at": started}));
                        }
                        for change in changes
                            .iter()
                            .filter(|c| c["jobId"] == e.job_id.as_str() && c["thing"] == e.thing_name.as_str())
                        {
                            if !timeline.iter().any(|t| t["status"] == change["status"]) {
                                timeline.push(json!({"status": change["status"], "at": change["at"]}));
                            }
                        }
                        json!({
                            "thing": e.thing_name,
                            "status": e.status,
                            "lastUpdatedAt": e.last_updated_at_ms,
                            "timeline": timeline,
                        })
                    })
                    .collect();
                let entry = json!({
                    "jobId": job.spec.job_id,
                    "status": job.status,
                    "namespace": job.spec.namespace,
                    "created": record.created_at_ms,
                    "completed": record.completed_at_ms,
                    "executions": executions,
                });
                (record.created_at_ms, entry)
            })
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.0));
        json!({"deployments": deployments, "jobs": jobs.into_iter().map(|(_, j)| j).collect::<Vec<_>>()})
    }

    /// CloudWatch alarms with their state.
    pub fn alarms(&self) -> Value {
        match self.sources.cloudwatch.call(crate::cloudwatch::Operation::DescribeAlarms, json!({"MaxRecords": 100})) {
            Ok(out) => {
                let answer = out.to_json();
                let alarms: Vec<Value> = answer["MetricAlarms"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .map(|a| {
                                json!({
                                    "name": a["AlarmName"],
                                    "state": a["StateValue"],
                                    "reason": a["StateReason"],
                                    "updated": a["StateUpdatedTimestamp"],
                                    "metric": a["MetricName"],
                                    "namespace": a["Namespace"],
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                json!({"alarms": alarms})
            }
            Err(e) => json!({"alarms": [], "error": e.to_string()}),
        }
    }

    /// The latest audit's checklist (`checklist.json`, one JSON object a line), or that there is none.
    pub fn checklist(&self) -> Value {
        let Some(path) = &self.config.checklist else {
            return json!({"audit": false, "message": "no audit yet", "lines": []});
        };
        match std::fs::read_to_string(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                json!({"audit": false, "message": "no audit yet", "lines": []})
            }
            Err(e) => json!({"audit": false, "message": format!("the checklist cannot be read: {e}"), "lines": []}),
            Ok(text) => {
                let (lines, unreadable) = checklist_entries(&text);
                json!({"audit": true, "lines": lines, "unreadable": unreadable})
            }
        }
    }
}

/// An audit's evidence file, as the dashboard serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceFile {
    /// `application/json`, `text/markdown` or `text/plain` (always UTF-8 text).
    pub content_type: &'static str,
    /// The file's text.
    pub text: String,
}

/// Why an evidence file is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceRefused {
    /// The path is not a plain relative path inside the audit directory (`..`, absolute, empty).
    #[error("not a path inside the audit directory: {0:?}")]
    BadPath(String),
    /// No audit, or the file is not one its manifest lists.
    #[error("no such file in the audit: {0:?}")]
    NotFound(String),
}

impl Dashboard {
    /// A file of the latest audit (the directory of `checklist.json`), read-only: only a file its
    /// `manifest.json` lists, named by a plain relative path (`evidence/payloads.json`).
    pub fn evidence(&self, relative: &str) -> Result<EvidenceFile, EvidenceRefused> {
        evidence_of(&self.config, relative)
    }
}

fn evidence_of(config: &DashboardConfig, relative: &str) -> Result<EvidenceFile, EvidenceRefused> {
    let plain = !relative.is_empty()
        && !relative.starts_with('/')
        && !relative.contains('\\')
        && relative.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
    if !plain {
        return Err(EvidenceRefused::BadPath(relative.to_owned()));
    }
    let missing = || EvidenceRefused::NotFound(relative.to_owned());
    let dir = config.checklist.as_deref().and_then(std::path::Path::parent).ok_or_else(missing)?;
    let manifest: Value = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(missing)?;
    if manifest["sha256"].get(relative).is_none() {
        return Err(missing());
    }
    let text = std::fs::read_to_string(dir.join(relative)).map_err(|_| missing())?;
    let content_type = match relative.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("md") => "text/markdown",
        _ => "text/plain",
    };
    Ok(EvidenceFile { content_type, text })
}

/// The lines of a `checklist.json` as the page shows them, and how many could not be read: the
/// audit writes one JSON array of lines; one JSON object a line is read too.
fn checklist_entries(text: &str) -> (Vec<Value>, usize) {
    if let Ok(entries) = serde_json::from_str::<Vec<Value>>(text) {
        let total = entries.len();
        let lines: Vec<Value> = entries
            .into_iter()
            .filter_map(|e| match e {
                Value::Object(entry) => Some(checklist_line(entry)),
                _ => None,
            })
            .collect();
        let unreadable = total - lines.len();
        return (lines, unreadable);
    }
    let mut lines = Vec::new();
    let mut unreadable = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Map<String, Value>>(line) {
            Ok(entry) => lines.push(checklist_line(entry)),
            Err(_) => unreadable += 1,
        }
    }
    (lines, unreadable)
}

/// One checklist line as the page shows it; an evidence `href` that is not a relative path or
/// an http(s) URL is dropped, so the page never renders a `javascript:` link.
fn checklist_line(entry: Map<String, Value>) -> Value {
    let evidence: Vec<Value> = entry
        .get("evidence")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| {
                    let href = e["href"].as_str().filter(|h| safe_href(h));
                    json!({"title": e["title"].as_str().unwrap_or_default(), "href": href})
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "id": entry.get("id").cloned().unwrap_or(Value::Null),
        "section": entry.get("section").and_then(Value::as_str).unwrap_or_default(),
        "subject": entry.get("subject").and_then(Value::as_str).unwrap_or_default(),
        "met": entry.get("met").and_then(Value::as_bool).unwrap_or(false),
        "evidence": evidence,
    })
}

fn safe_href(href: &str) -> bool {
    let lower = href.trim().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://") || !lower.contains(':')
}

/// A DynamoDB item (`{"name": {"S": "…"}}`) as plain JSON (`{"name": "…"}`).
fn plain(value: &Value) -> Value {
    let Some(object) = value.as_object() else { return Value::Null };
    if object.len() == 1
        && let Some((kind, inner)) = object.iter().next()
    {
        match kind.as_str() {
            "S" | "BOOL" => return inner.clone(),
            "NULL" => return Value::Null,
            "N" => {
                return inner
                    .as_str()
                    .and_then(|n| n.parse::<f64>().ok())
                    .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                    .unwrap_or(Value::Null);
            }
            "L" => return Value::Array(inner.as_array().map(|l| l.iter().map(plain).collect()).unwrap_or_default()),
            "M" => return plain_map(inner),
            "SS" | "NS" => return inner.clone(),
            _ => {}
        }
    }
    plain_map(value)
}

fn plain_map(value: &Value) -> Value {
    Value::Object(value.as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), plain(v))).collect()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamodb_items_read_as_plain_json() {
        let item = json!({"thing": {"S": "core-1"}, "severity": {"N": "0.5"}, "active": {"BOOL": true},
                          "features": {"M": {"rms": {"N": "2"}}}, "tags": {"L": [{"S": "a"}]}, "gone": {"NULL": true}});
        assert_eq!(
            plain(&item),
            json!({"thing": "core-1", "severity": 0.5, "active": true, "features": {"rms": 2.0}, "tags": ["a"], "gone": null})
        );
    }

    #[test]
    fn only_the_files_the_audit_manifest_lists_are_served_by_a_plain_relative_path() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit");
        std::fs::create_dir_all(audit.join("evidence")).unwrap();
        std::fs::write(audit.join("checklist.json"), "").unwrap();
        std::fs::write(audit.join("evidence/payloads.json"), r#"{"topics":{}}"#).unwrap();
        std::fs::write(audit.join("CHECKLIST.md"), "# Checklist").unwrap();
        std::fs::write(audit.join("unlisted.json"), "{}").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        let manifest = json!({"sha256": {"evidence/payloads.json": "x", "CHECKLIST.md": "y", "../secret.txt": "z"}});
        std::fs::write(audit.join("manifest.json"), manifest.to_string()).unwrap();
        let board = |checklist: Option<std::path::PathBuf>| DashboardConfig { checklist, ..DashboardConfig::default() };
        let config = board(Some(audit.join("checklist.json")));

        let served = evidence_of(&config, "evidence/payloads.json").unwrap();
        assert_eq!((served.content_type, served.text.as_str()), ("application/json", r#"{"topics":{}}"#));
        assert_eq!(evidence_of(&config, "CHECKLIST.md").unwrap().content_type, "text/markdown");
        for bad in [
            "../secret.txt",
            "evidence/../../secret.txt",
            "/etc/passwd",
            "",
            "./CHECKLIST.md",
            "evidence//payloads.json",
        ] {
            assert_eq!(evidence_of(&config, bad), Err(EvidenceRefused::BadPath(bad.into())), "{bad}");
        }
        let absolute = dir.path().join("secret.txt").display().to_string();
        assert!(matches!(evidence_of(&config, &absolute), Err(EvidenceRefused::BadPath(_))));
        assert!(
            matches!(evidence_of(&config, "unlisted.json"), Err(EvidenceRefused::NotFound(_))),
            "not in the manifest"
        );
        assert!(matches!(evidence_of(&board(None), "CHECKLIST.md"), Err(EvidenceRefused::NotFound(_))), "no audit");
    }

    #[test]
    fn the_checklist_is_read_as_the_audit_writes_it_and_as_json_lines() {
        let line = |id: &str| json!({"id": id, "section": "s", "subject": "t", "met": true, "evidence": []});
        let array = serde_json::to_string_pretty(&json!([line("GG-3"), line("SC-7"), 5])).unwrap();
        let (lines, unreadable) = checklist_entries(&array);
        assert_eq!((lines.len(), unreadable), (2, 1));
        assert_eq!(lines[1]["id"], "SC-7");
        let json_lines = format!("{}\n{}\nnot json\n", line("GG-3"), line("SC-7"));
        let (lines, unreadable) = checklist_entries(&json_lines);
        assert_eq!((lines.len(), unreadable), (2, 1));
    }

    #[test]
    fn checklist_lines_keep_safe_links_only() {
        let line = serde_json::from_str(
            r#"{"id": "GG-1", "section": "Security", "subject": "mTLS", "met": true,
                "evidence": [{"title": "policy", "href": "evidence/policy.json"},
                             {"title": "bad", "href": "javascript:alert(1)"},
                             {"title": "web", "href": "https://docs.aws.amazon.com/"}]}"#,
        )
        .unwrap();
        let shown = checklist_line(line);
        let hrefs: Vec<&Value> = shown["evidence"].as_array().unwrap().iter().map(|e| &e["href"]).collect();
        assert_eq!(hrefs, [&json!("evidence/policy.json"), &Value::Null, &json!("https://docs.aws.amazon.com/")]);
        assert_eq!(shown["met"], true);
    }
}
