//! The project's own definition of AWS's Service Delivery validation checklist for AWS IoT
//! Greengrass: one [`Line`] per criterion (our id, the official section and the subject of its
//! wording, how an auditor checks it by hand) with the predicate over the collected
//! [`Evidence`] that decides whether it is met. Nothing here is typed in: a line is met only when
//! every one of its checks holds on what was observed, and a check whose evidence is missing fails
//! with the reason. Lines that no software can show are decided on the partner's written
//! statements ([`Partner`]) and say so.

use serde::Serialize;
use serde_json::Value;

use super::case_study::Partner;
use super::evidence::Evidence;

/// The checklist's sections, in the official document's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Section {
    /// Case studies and diagrams (prerequisites).
    #[serde(rename = "Case studies and diagrams")]
    CaseStudies,
    /// Greengrass approval criteria.
    #[serde(rename = "Greengrass approval criteria")]
    Greengrass,
    /// Greengrass with ML.
    #[serde(rename = "Greengrass with ML")]
    Ml,
    /// Solution characteristics (2.1).
    #[serde(rename = "Solution characteristics")]
    Characteristics,
    /// Validation prerequisite (2.2).
    #[serde(rename = "Validation prerequisite")]
    Prerequisite,
}

impl Section {
    /// The section's heading.
    pub fn title(self) -> &'static str {
        match self {
            Section::CaseStudies => "Case studies and diagrams",
            Section::Greengrass => "Greengrass approval criteria",
            Section::Ml => "Greengrass with ML",
            Section::Characteristics => "Solution characteristics",
            Section::Prerequisite => "Validation prerequisite",
        }
    }

    /// Every section in order.
    pub const ALL: [Section; 5] =
        [Section::CaseStudies, Section::Greengrass, Section::Ml, Section::Characteristics, Section::Prerequisite];
}

/// What decides a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// The live deployment and the run's figures.
    Evidence,
    /// The partner's written statement (software cannot show it).
    Partner,
}

/// What a line's predicate sees.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The observed deployment and run.
    pub evidence: &'a Evidence,
    /// The partner's own fields, when an input file was given.
    pub partner: Option<&'a Partner>,
}

/// One line of the checklist.
#[derive(Debug, Clone, Copy)]
pub struct Line {
    /// Our id (`GG-1`…).
    pub id: &'static str,
    /// Its section.
    pub section: Section,
    /// The subject of the official wording.
    pub subject: &'static str,
    /// How an auditor checks it by hand: the command or console page.
    pub by_hand: &'static str,
    /// What decides it.
    pub basis: Basis,
    /// The evidence files it cites (under `evidence/`, without the extension's directory).
    pub files: &'static [&'static str],
    /// The predicate: every check with whether it holds.
    pub decide: fn(Inputs<'_>) -> Vec<Check>,
}

/// One check of a line, held or not, saying what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Whether it holds.
    pub held: bool,
    /// What was seen (or is missing).
    pub text: String,
}

impl Check {
    fn new(held: bool, text: impl Into<String>) -> Check {
        Check { held, text: text.into() }
    }

    fn of(result: Result<String, String>) -> Check {
        match result {
            Ok(text) => Check::new(true, text),
            Err(text) => Check::new(false, text),
        }
    }
}

/// A line decided.
#[derive(Debug, Clone, Serialize)]
pub struct Decided {
    /// The line.
    pub id: &'static str,
    /// Its section.
    pub section: Section,
    /// Its subject.
    pub subject: &'static str,
    /// What decided it.
    pub basis: Basis,
    /// Met: every check held.
    pub met: bool,
    /// The checks.
    pub checks: Vec<Check>,
    /// How to check it by hand.
    pub by_hand: &'static str,
    /// The evidence files it cites.
    pub files: &'static [&'static str],
}

/// Decides every line.
pub fn decide(inputs: Inputs<'_>) -> Vec<Decided> {
    LINES
        .iter()
        .map(|line| {
            let checks = (line.decide)(inputs);
            Decided {
                id: line.id,
                section: line.section,
                subject: line.subject,
                basis: line.basis,
                met: !checks.is_empty() && checks.iter().all(|c| c.held),
                checks,
                by_hand: line.by_hand,
                files: line.files,
            }
        })
        .collect()
}

/// The checklist, line by line.
pub const LINES: &[Line] = &[
    Line {
        id: "CS-1",
        section: Section::CaseStudies,
        subject: "Two case studies of delivered, in-production deployments",
        by_hand: "Read the partner's statement in CASE-STUDY.md; ask for the second case study",
        basis: Basis::Partner,
        files: &[],
        decide: |i| {
            let stated = i.partner.and_then(|p| p.in_production_case_studies);
            vec![Check::new(
                stated.is_some_and(|n| n >= 2),
                match stated {
                    Some(n) => format!("the partner states {n} in-production case studies (software cannot show this)"),
                    None => "needs the partner's input: in_production_case_studies in the input file (software cannot show this)".into(),
                },
            )]
        },
    },
    Line {
        id: "CS-2",
        section: Section::CaseStudies,
        subject: "Each case study's fields: customer, account ID, problem, proposal, AWS services used, third-party tools, dates, outcomes, lessons learned",
        by_hand: "Read CASE-STUDY.md; compare the account ID with `aws sts get-caller-identity`",
        basis: Basis::Evidence,
        files: &["resources", "cost"],
        decide: |i| {
            let e = i.evidence;
            let mut checks = vec![Check::new(
                e.account.id.is_some(),
                match (&e.account.id, &e.account.source) {
                    (Some(id), Some(src)) => format!("account ID {id}, from {src}"),
                    _ => "no resource ARN names the account ID".into(),
                },
            )];
            let services = super::case_study::services_used(e);
            checks.push(Check::new(!services.is_empty(), format!("AWS services found in use: {}", services.len())));
            checks.push(Check::new(
                e.run.is_some(),
                if e.run.is_some() {
                    "outcomes measured by the run report"
                } else {
                    "no run report: no measured outcomes (--report)"
                },
            ));
            match i.partner {
                Some(p) => {
                    let missing = p.missing_fields();
                    checks.push(Check::new(
                        missing.is_empty(),
                        if missing.is_empty() { "the partner's fields are filled in".to_owned() } else { format!("the partner's fields still to fill in: {}", missing.join(", ")) },
                    ));
                }
                None => checks.push(Check::new(false, "needs the partner's input file (customer, problem, proposal, dates, lessons): `audit init-input FILE`")),
            }
            checks
        },
    },
    Line {
        id: "CS-3",
        section: Section::CaseStudies,
        subject: "Public or non-public, stated in writing",
        by_hand: "Read the partner's statement in CASE-STUDY.md",
        basis: Basis::Partner,
        files: &[],
        decide: |i| {
            let v = i.partner.and_then(|p| p.publication());
            vec![Check::new(
                v.is_some(),
                match v {
                    Some(v) => format!("the partner states the case study is {v} (software cannot show this)"),
                    None => "needs the partner's input: publication = \"public\" or \"non-public\" (software cannot show this)".into(),
                },
            )]
        },
    },
    Line {
        id: "AD-1",
        section: Section::CaseStudies,
        subject: "Architecture diagrams showing the AWS tools and services the solution uses",
        by_hand: "Open architecture.svg; each box is a resource listed in evidence/resources.json",
        basis: Basis::Evidence,
        files: &["resources"],
        decide: |i| {
            let e = i.evidence;
            vec![
                count(e.iot.things.len(), "IoT things"),
                count(e.greengrass.components.len(), "Greengrass components"),
                count(e.iot.rules.len(), "topic rules"),
                count(e.functions.len(), "Lambda functions"),
                count(e.tables.len(), "DynamoDB tables"),
                count(e.buckets.len(), "S3 buckets"),
                Check::new(super::diagram::DRAWN, "architecture.svg drawn from these resources"),
            ]
        },
    },
    Line {
        id: "AD-2",
        section: Section::CaseStudies,
        subject: "The diagrams show AWS best practices for architecture and security",
        by_hand: "Open architecture.svg: the dashed boundaries (mTLS, IoT policy, accessControl, token exchange role, key storage); evidence/policy-audit.json",
        basis: Basis::Evidence,
        files: &["policy-audit", "certificates", "deployments"],
        decide: |i| {
            let e = i.evidence;
            vec![
                mtls(e),
                no_permissive_policy(e),
                access_control(e),
                token_exchange(e),
                Check::new(super::diagram::DRAWN, "the boundaries are drawn in architecture.svg"),
            ]
        },
    },
    Line {
        id: "GG-1",
        section: Section::Greengrass,
        subject: "Device shadow or another command-and-control mechanism: subscriptions, updates, responding to delta messages",
        by_hand: "`aws iot-data get-thing-shadow --thing-name CORE --shadow-name pump out.json`; evidence/shadow.json",
        basis: Basis::Evidence,
        files: &["shadow", "payloads"],
        decide: |i| {
            let e = i.evidence;
            vec![
                shadow_document(e),
                delta_actuated(e),
                Check::of(e.run_step_passed("desired state → actuation → reported", &["desired", "reported"])),
                shadow_update_allowed(e),
            ]
        },
    },
    Line {
        id: "GG-2",
        section: Section::Greengrass,
        subject: "Payload examples for messages and for the shadow, with size and frequency",
        by_hand: "evidence/payloads.json (each topic's example, bytes and messages a minute); docs/payloads.md",
        basis: Basis::Evidence,
        files: &["payloads", "shadow"],
        decide: |i| {
            let e = i.evidence;
            vec![
                topic_figures(e, "dt/pump/+/telemetry", "telemetry"),
                topic_figures(e, "dt/pump/+/anomalies", "anomalies"),
                topic_figures(e, "$aws/things/+/shadow/name/+/update/documents", "shadow updates"),
            ]
        },
    },
    Line {
        id: "GG-3",
        section: Section::Greengrass,
        subject: "Device security: certificate provisioning and rotation, initial on-boarding, risk mitigation, OTA",
        by_hand: "`aws iot list-certificates`; `aws iot list-jobs` (rotation jobs); `aws iot list-provisioning-templates`; evidence/certificates.json",
        basis: Basis::Evidence,
        files: &["certificates", "policy-audit", "deployments"],
        decide: |i| {
            let e = i.evidence;
            vec![mtls(e), rotation(e), onboarding(e), no_permissive_policy(e), certificate_alarm(e), ota(e)]
        },
    },
    Line {
        id: "GG-4",
        section: Section::Greengrass,
        subject: "Greengrass core provisioning, initial on-boarding, and updates to the core",
        by_hand: "Greengrass console → Core devices; `aws greengrassv2 list-core-devices`; `aws greengrassv2 list-deployments`",
        basis: Basis::Evidence,
        files: &["deployments", "certificates"],
        decide: |i| {
            let e = i.evidence;
            vec![
                count(e.greengrass.core_devices.len(), "Greengrass core devices registered"),
                onboarding(e),
                group_deployment(e),
                Check::of(e.run_step_passed("core update", &["core updates itself"])),
            ]
        },
    },
    Line {
        id: "GG-5",
        section: Section::Greengrass,
        subject: "Integrations with other AWS services (AWS Lambda, Amazon DynamoDB, …) following best practices",
        by_hand: "`aws iot get-topic-rule --rule-name RULE`; `aws lambda list-functions`; `aws dynamodb list-tables`; evidence/rules.json",
        basis: Basis::Evidence,
        files: &["rules"],
        decide: |i| {
            let e = i.evidence;
            vec![
                rule_invokes_function(e),
                count(e.tables.len(), "DynamoDB tables"),
                scoped_roles(e),
                rules_have_error_actions(e),
            ]
        },
    },
    Line {
        id: "ML-1",
        section: Section::Ml,
        subject: "Model deployment and mapping to the Greengrass core",
        by_hand: "`aws greengrassv2 list-installed-components --core-device-thing-name CORE`; evidence/model-card.json",
        basis: Basis::Evidence,
        files: &["model-card", "deployments"],
        decide: |i| {
            let e = i.evidence;
            vec![model_card(e), model_component_installed(e), model_reported(e)]
        },
    },
    Line {
        id: "ML-2",
        section: Section::Ml,
        subject: "Deployment and execution of an inference engine",
        by_hand: "evidence/model-card.json (`run.model`: the analyzer's report of the running model)",
        basis: Basis::Evidence,
        files: &["model-card"],
        decide: |i| {
            let e = i.evidence;
            let model = e.run.as_ref().map(|r| &r["model"]);
            let status = model.and_then(|m| m["status"].as_str());
            vec![
                model_card(e),
                Check::new(
                    status == Some("running"),
                    match status {
                        Some(s) => format!("the analyzer reports the model detector {s}"),
                        None => "no run report with the analyzer's model status".into(),
                    },
                ),
            ]
        },
    },
    Line {
        id: "ML-3",
        section: Section::Ml,
        subject: "Access to the host environment: disk, hardware, IO",
        by_hand: "evidence/run.json (plant registers read over Modbus; anomaly windows written to disk and uploaded)",
        basis: Basis::Evidence,
        files: &["run"],
        decide: |i| {
            let e = i.evidence;
            let reads = e.run.as_ref().and_then(|r| r["facts"]["plant_reads"].as_array()).map_or(0, Vec::len);
            let windows = e.run.as_ref().and_then(|r| r["anomaly_windows"].as_array()).map_or(0, Vec::len);
            vec![
                count(reads, "plant register reads over Modbus TCP (IO)"),
                count(windows, "anomaly windows written on the core and uploaded (disk)"),
            ]
        },
    },
    Line {
        id: "ML-4",
        section: Section::Ml,
        subject: "Best practices for Amazon SageMaker model training",
        by_hand: "evidence/model-card.json (training data digest, hyperparameters, validation metrics); cloud/training",
        basis: Basis::Evidence,
        files: &["model-card"],
        decide: |i| {
            let card = i.evidence.model_card.as_ref();
            let has = |k: &str| card.is_some_and(|c| !c[k].is_null());
            vec![
                Check::new(has("training_data"), "the training data is pinned by digest"),
                Check::new(has("hyperparameters"), "the hyperparameters are recorded"),
                Check::new(has("metrics"), "validation metrics are recorded"),
            ]
        },
    },
    Line {
        id: "ML-5",
        section: Section::Ml,
        subject: "How to train a model effectively and deploy it to a Greengrass core",
        by_hand: "docs/ml.md; evidence/deployments.json (the model component's versions)",
        basis: Basis::Evidence,
        files: &["model-card", "deployments"],
        decide: |i| {
            let e = i.evidence;
            vec![
                model_card(e),
                model_component_installed(e),
                Check::of(e.run_step_passed("retrained model over the air", &["retrained model"])),
            ]
        },
    },
    Line {
        id: "SC-1",
        section: Section::Characteristics,
        subject: "An IoT project with end-to-end control: sense, analyze, act",
        by_hand: "evidence/payloads.json (telemetry, anomalies); evidence/run.json (fault → action latency)",
        basis: Basis::Evidence,
        files: &["payloads", "run"],
        decide: |i| {
            let e = i.evidence;
            let acted = e.run.as_ref().and_then(|r| r["fault_to_action"]["samples_ms"].as_array()).map_or(0, Vec::len);
            vec![
                topic_seen(e, "dt/pump/+/telemetry", "sense: telemetry"),
                topic_seen(e, "dt/pump/+/anomalies", "analyze: anomaly events"),
                count(acted, "act: fault → protective action at the plant"),
            ]
        },
    },
    Line {
        id: "SC-2",
        section: Section::Characteristics,
        subject: "AWS IoT best practices: device shadows, rules, responses to events",
        by_hand: "evidence/shadow.json; evidence/rules.json; the run's step 6 (the cloud reacts)",
        basis: Basis::Evidence,
        files: &["shadow", "rules", "run"],
        decide: |i| {
            let e = i.evidence;
            vec![
                shadow_document(e),
                enabled_rules(e),
                Check::of(e.run_step_passed("the cloud reacts to events", &["cloud reacts"])),
            ]
        },
    },
    Line {
        id: "SC-3",
        section: Section::Characteristics,
        subject: "Not merely the AWS IoT broker used as a generic publish/subscribe broker",
        by_hand: "evidence/rules.json; evidence/deployments.json; evidence/shadow.json",
        basis: Basis::Evidence,
        files: &["rules", "deployments", "shadow"],
        decide: |i| {
            let e = i.evidence;
            vec![
                enabled_rules(e),
                shadow_document(e),
                count(e.greengrass.deployments.len(), "Greengrass deployments (IoT jobs)"),
            ]
        },
    },
    Line {
        id: "SC-4",
        section: Section::Characteristics,
        subject: "Cost optimization: payload size and message frequency, shadow size, shadow topic subscriptions",
        by_hand: "evidence/cost.json (cost per site a month against a naive design); evidence/shadow.json",
        basis: Basis::Evidence,
        files: &["cost", "shadow", "policy-audit"],
        decide: |i| {
            let e = i.evidence;
            vec![cost_below_naive(e), shadow_size(e), no_permissive_policy(e)]
        },
    },
    Line {
        id: "SC-5",
        section: Section::Characteristics,
        subject: "Reliability: shadows or command and control, loss of AWS connectivity, recovery from hardware failure",
        by_hand: "evidence/run.json (outage and replacement steps, recovery timeline)",
        basis: Basis::Evidence,
        files: &["shadow", "run"],
        decide: |i| {
            let e = i.evidence;
            vec![
                shadow_document(e),
                Check::of(e.run_step_passed("loss of AWS connectivity", &["cloud stops"])),
                Check::of(e.run_step_passed("recovery from hardware failure", &["hardware failure"])),
            ]
        },
    },
    Line {
        id: "SC-6",
        section: Section::Characteristics,
        subject: "Performance efficiency: payload size and frequency of messages",
        by_hand: "evidence/payloads.json; evidence/run.json (latencies p50/p99)",
        basis: Basis::Evidence,
        files: &["payloads", "run"],
        decide: |i| {
            let e = i.evidence;
            let p99 = e.run.as_ref().and_then(|r| r["delta_to_actuation"]["p99_ms"].as_f64());
            vec![
                within_broker_limits(e),
                Check::new(
                    p99.is_some(),
                    match p99 {
                        Some(ms) => format!("desired change → actuation p99 {ms:.0} ms"),
                        None => "no measured latency (run report)".into(),
                    },
                ),
            ]
        },
    },
    Line {
        id: "SC-7",
        section: Section::Characteristics,
        subject: "Security: certificate provisioning, certificate storage, rotation, limited-scope credentials",
        by_hand: "evidence/certificates.json; evidence/policy-audit.json; `provision audit --fail-on medium`",
        basis: Basis::Evidence,
        files: &["certificates", "policy-audit"],
        decide: |i| {
            let e = i.evidence;
            vec![mtls(e), key_on_device(e), rotation(e), no_permissive_policy(e), token_exchange(e)]
        },
    },
    Line {
        id: "SC-8",
        section: Section::Characteristics,
        subject: "Operational excellence: OTA, device recovery, monitoring Greengrass and message errors, provisioning for replacement",
        by_hand: "CloudWatch console → Alarms; evidence/monitoring.json; evidence/deployments.json",
        basis: Basis::Evidence,
        files: &["monitoring", "deployments", "run"],
        decide: |i| {
            let e = i.evidence;
            vec![
                ota(e),
                Check::of(e.run_step_passed("device recovery", &["hardware failure"])),
                alarm_on(
                    e,
                    &["UnhealthyCoreReports", "IoTFleetMetrics"],
                    "Greengrass cores monitored (health, connectivity)",
                ),
                alarm_on(
                    e,
                    &["RuleMessageThrottled", "Failure", "TopicMatch", "AWS/IoT"],
                    "message errors and failures monitored",
                ),
                onboarding(e),
            ]
        },
    },
    Line {
        id: "PR-1",
        section: Section::Prerequisite,
        subject: "The AWS IoT Core service delivery validation is also completed",
        by_hand: "Ask the partner for the AWS IoT Core validation's outcome",
        basis: Basis::Partner,
        files: &[],
        decide: |i| {
            let done =
                i.partner.and_then(|p| p.iot_core_validation.clone()).filter(|s| !super::case_study::is_placeholder(s));
            vec![Check::new(
                done.is_some(),
                match done {
                    Some(s) => format!("the partner states: {s} (software cannot show this)"),
                    None => {
                        "needs the partner's input: iot_core_validation in the input file (software cannot show this)"
                            .into()
                    }
                },
            )]
        },
    },
];

fn count(n: usize, what: &str) -> Check {
    Check::new(n > 0, if n > 0 { format!("{n} {what}") } else { format!("no {what} found") })
}

fn policy_documents(e: &Evidence) -> impl Iterator<Item = (&str, &Value)> {
    e.iot.policies.iter().map(|p| (p.name.as_str(), &p.document))
}

/// The actions an IoT policy document allows, as written.
fn allowed_actions(document: &Value) -> Vec<String> {
    allow_statements(document).into_iter().flat_map(|(actions, _)| actions).collect()
}

/// The Allow statements of an IoT policy document, each as (actions, resources).
fn allow_statements(document: &Value) -> Vec<(Vec<String>, Vec<String>)> {
    let strings = |v: &Value| match v {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    let statements = match &document["Statement"] {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    statements
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .map(|s| (strings(&s["Action"]), strings(&s["Resource"])))
        .collect()
}

/// A policy lets a device update shadows: `iot:UpdateThingShadow` (HTTP), or `iot:Publish` on a
/// shadow topic (MQTT, what a core's shadow sync uses).
fn shadow_update_allowed(e: &Evidence) -> Check {
    let by: Vec<&str> = policy_documents(e)
        .filter(|(_, d)| {
            allow_statements(d).iter().any(|(actions, resources)| {
                actions.iter().any(|a| a == "iot:UpdateThingShadow")
                    || (actions.iter().any(|a| a == "iot:Publish") && resources.iter().any(|r| r.contains("/shadow/")))
            })
        })
        .map(|(n, _)| n)
        .collect();
    Check::new(
        !by.is_empty(),
        if by.is_empty() {
            "no IoT policy allows shadow updates (iot:UpdateThingShadow, or iot:Publish on a shadow topic)".into()
        } else {
            format!("shadow updates allowed by {}", by.join(", "))
        },
    )
}

/// A fleet provisioning claim's policy: it allows nothing but connecting and the provisioning
/// MQTT API (`$aws/certificates/create…`, `$aws/provisioning-templates/…`). A claim has no thing
/// yet, so it cannot be scoped to one; what it risks is the template's, not the data plane's.
fn is_claim_policy(document: &Value) -> bool {
    let statements = allow_statements(document);
    !statements.is_empty()
        && statements.iter().all(|(actions, resources)| {
            actions
                .iter()
                .all(|a| matches!(a.as_str(), "iot:Connect" | "iot:Publish" | "iot:Receive" | "iot:Subscribe"))
                && (actions.iter().all(|a| a == "iot:Connect")
                    || (!resources.is_empty()
                        && resources.iter().all(|r| {
                            r.contains("$aws/certificates/create") || r.contains("$aws/provisioning-templates/")
                        })))
        })
}

/// The delta path works end to end: desired changes reached the device and were actuated.
fn delta_actuated(e: &Evidence) -> Check {
    let latency = e.run.as_ref().map(|r| &r["delta_to_actuation"]);
    let n = latency.and_then(|l| l["samples_ms"].as_array()).map_or(0, Vec::len);
    Check::new(
        n > 0,
        if n > 0 {
            format!(
                "delta messages: {n} desired changes reached the device as deltas and were actuated (p50 {:.0} ms)",
                latency.and_then(|l| l["p50_ms"].as_f64()).unwrap_or_default()
            )
        } else {
            "delta messages: no desired change measured to actuation in the run report".into()
        },
    )
}

fn mtls(e: &Evidence) -> Check {
    let cores = e.core_things();
    let without: Vec<&str> = cores
        .iter()
        .copied()
        .filter(|t| !e.iot.certificates.iter().any(|c| c.status == "ACTIVE" && c.things.iter().any(|x| x == t)))
        .collect();
    if cores.is_empty() {
        Check::new(false, "no Greengrass core device to show its certificate")
    } else if without.is_empty() {
        Check::new(
            true,
            format!("every core ({}) connects with its own active X.509 certificate (mutual TLS)", cores.len()),
        )
    } else {
        Check::new(false, format!("cores without an active certificate: {}", without.join(", ")))
    }
}

fn no_permissive_policy(e: &Evidence) -> Check {
    use super::checks::{Check as Audit, Severity};
    let Some(report) = &e.security else { return Check::new(false, "the policy audit did not run") };
    let claims: Vec<&str> = policy_documents(e).filter(|(_, d)| is_claim_policy(d)).map(|(n, _)| n).collect();
    let bad: Vec<String> = report
        .findings
        .iter()
        .filter(|f| {
            matches!(f.check, Audit::IotPolicyOverlyPermissive | Audit::IotRoleAliasOverlyPermissive)
                && f.severity >= Severity::High
                && !(f.check == Audit::IotPolicyOverlyPermissive && claims.contains(&f.resource.as_str()))
        })
        .map(|f| format!("{} ({})", f.resource, f.reason_code))
        .collect();
    let claims_note = if claims.is_empty() {
        String::new()
    } else {
        format!("; claim policies, limited to connecting and the provisioning API, not counted: {}", claims.join(", "))
    };
    Check::new(
        bad.is_empty(),
        if bad.is_empty() {
            format!(
                "no overly permissive IoT policy or role alias among {} policies (e.g. no iot:* on *){claims_note}",
                report.audited.policies
            )
        } else {
            format!("overly permissive: {}", bad.join("; "))
        },
    )
}

fn access_control(e: &Evidence) -> Check {
    let comps = &e.greengrass.components;
    let without: Vec<&str> = comps.iter().filter(|c| !c.access_control).map(|c| c.name.as_str()).collect();
    let with = comps.len() - without.len();
    Check::new(
        with > 0,
        if with > 0 {
            format!(
                "{with} of {} components declare Greengrass accessControl (IPC authorization){}",
                comps.len(),
                if without.is_empty() {
                    String::new()
                } else {
                    format!("; none needed or declared by {}", without.join(", "))
                }
            )
        } else {
            "no component declares accessControl".into()
        },
    )
}

fn token_exchange(e: &Evidence) -> Check {
    let aliases = &e.iot.role_aliases;
    let scoped = aliases.iter().filter(|a| e.roles.iter().any(|r| r.arn == a.role_arn && role_is_scoped(r))).count();
    Check::new(
        scoped > 0 && scoped == aliases.len(),
        if aliases.is_empty() {
            "no token exchange role alias".to_owned()
        } else {
            format!("{scoped} of {} role aliases point to a role with no wildcard action", aliases.len())
        },
    )
}

fn role_is_scoped(role: &super::evidence::Role) -> bool {
    !role.inline_policies.is_empty()
        && role.inline_policies.iter().all(|(_, d)| allowed_actions(d).iter().all(|a| a != "*" && !a.ends_with(":*")))
}

fn scoped_roles(e: &Evidence) -> Check {
    let wide: Vec<&str> = e.roles.iter().filter(|r| !role_is_scoped(r)).map(|r| r.name.as_str()).collect();
    Check::new(
        !e.roles.is_empty() && wide.is_empty(),
        if e.roles.is_empty() {
            "no role of a rule or function found".to_owned()
        } else if wide.is_empty() {
            format!("each of {} roles allows named actions only (least privilege)", e.roles.len())
        } else {
            format!("roles with a wildcard action or no policy: {}", wide.join(", "))
        },
    )
}

fn rotation(e: &Evidence) -> Check {
    let done: Vec<&str> = e
        .iot
        .jobs
        .iter()
        .filter(|j| j.rotation && j.executions.iter().any(|(_, s)| s == "SUCCEEDED"))
        .map(|j| j.id.as_str())
        .collect();
    Check::new(
        !done.is_empty(),
        if done.is_empty() {
            "no certificate rotation job succeeded on a device".to_owned()
        } else {
            format!("certificate rotated by job {}", done.join(", "))
        },
    )
}

fn key_on_device(e: &Evidence) -> Check {
    // A rotation by CSR is the proof the cloud can see that the private key never left the device.
    let r = rotation(e);
    Check::new(
        r.held,
        if r.held {
            "keys are made on the device: rotation issues certificates from the device's CSR"
        } else {
            "no CSR-based rotation to show the key stays on the device"
        },
    )
}

fn onboarding(e: &Evidence) -> Check {
    let enabled: Vec<&str> =
        e.iot.provisioning_templates.iter().filter(|t| t.enabled).map(|t| t.name.as_str()).collect();
    Check::new(
        !enabled.is_empty(),
        if enabled.is_empty() {
            "no enabled fleet provisioning template (on-boarding by claim)".to_owned()
        } else {
            format!("fleet provisioning by claim: template {}", enabled.join(", "))
        },
    )
}

fn certificate_alarm(e: &Evidence) -> Check {
    alarm_on(e, &["certificate"], "certificate expiry monitored")
}

fn alarm_on(e: &Evidence, words: &[&str], what: &str) -> Check {
    let found: Vec<&str> = e
        .alarms
        .iter()
        .filter(|a| words.iter().any(|w| a.metric.contains(w) || a.name.contains(w)))
        .map(|a| a.name.as_str())
        .collect();
    Check::new(
        !found.is_empty(),
        if found.is_empty() { format!("no alarm: {what}") } else { format!("{what}: alarm {}", found.join(", ")) },
    )
}

fn ota(e: &Evidence) -> Check {
    let updated: Vec<&str> =
        e.greengrass.components.iter().filter(|c| c.versions.len() > 1).map(|c| c.name.as_str()).collect();
    let step = e.run_step_passed("over the air", &["over the air"]);
    Check::new(
        !updated.is_empty() && step.is_ok(),
        format!(
            "{}; {}",
            if updated.is_empty() {
                "no component has more than one version".to_owned()
            } else {
                format!("components updated over the air: {}", updated.join(", "))
            },
            step.unwrap_or_else(|e| e)
        ),
    )
}

fn group_deployment(e: &Evidence) -> Check {
    let to_groups = e.greengrass.deployments.iter().filter(|d| d.target_arn.contains(":thinggroup/")).count();
    Check::new(
        to_groups > 0,
        if to_groups > 0 {
            format!("{to_groups} deployments to thing groups")
        } else {
            "no deployment to a thing group".into()
        },
    )
}

fn shadow_document(e: &Evidence) -> Check {
    let state = e.run.as_ref().map(|r| &r["shadow"]["state"]);
    let ok = state.is_some_and(|s| s["desired"].is_object() && s["reported"].is_object());
    Check::new(
        ok,
        if ok {
            "the pump's named shadow holds desired and reported state"
        } else {
            "no shadow document with desired and reported state in the run report"
        },
    )
}

fn topic_seen(e: &Evidence, filter: &str, what: &str) -> Check {
    let n: u64 = e.run_topics(filter).iter().map(|(_, f)| f["messages"].as_u64().unwrap_or(0)).sum();
    Check::new(
        n > 0,
        if n > 0 {
            format!("{what}: {n} messages on {filter}")
        } else {
            format!("{what}: no message on {filter} in the run report")
        },
    )
}

fn topic_figures(e: &Evidence, filter: &str, what: &str) -> Check {
    let topics = e.run_topics(filter);
    match topics.iter().find(|(_, f)| f["messages"].as_u64().unwrap_or(0) > 0) {
        Some((_, f)) => Check::new(
            !f["example"].is_null(),
            format!(
                "{what}: example kept, {:.0} bytes on average, {:.1} messages a minute",
                f["bytes_avg"].as_f64().unwrap_or_default(),
                f["per_minute"].as_f64().unwrap_or_default()
            ),
        ),
        None => Check::new(false, format!("{what}: no message on {filter} in the run report")),
    }
}

fn within_broker_limits(e: &Evidence) -> Check {
    let Some(topics) = e.run.as_ref().and_then(|r| r["topics"].as_object()) else {
        return Check::new(false, "no run report with message figures");
    };
    let max_bytes = topics.values().filter_map(|f| f["bytes_max"].as_u64()).max().unwrap_or(0);
    let max_rate = topics.values().filter_map(|f| f["per_minute"].as_f64()).fold(0.0, f64::max);
    let ok = !topics.is_empty() && max_bytes <= 128 * 1024 && max_rate <= 100.0 * 60.0;
    Check::new(
        ok,
        format!(
            "largest payload {max_bytes} bytes (limit 128 KiB), busiest topic {max_rate:.1} messages a minute (limit 100 a second a connection)"
        ),
    )
}

fn shadow_size(e: &Evidence) -> Check {
    let bytes = e.run.as_ref().and_then(|r| r["shadow_state_bytes"].as_u64());
    Check::new(
        bytes.is_some_and(|b| b <= 8 * 1024),
        match bytes {
            Some(b) => format!("shadow state {b} bytes (limit 8 KiB)"),
            None => "no shadow size in the run report".into(),
        },
    )
}

fn cost_below_naive(e: &Evidence) -> Check {
    let scenario = e.run.as_ref().and_then(|r| r["cost"]["scenarios"].as_array()).and_then(|s| s.first());
    match scenario {
        Some(s) => {
            let (ours, naive) = (
                s["cost"]["total"].as_f64().unwrap_or(f64::NAN),
                s["naive_cost"]["total"].as_f64().unwrap_or(f64::NAN),
            );
            Check::new(
                ours < naive,
                format!(
                    "${ours:.4} per site a month against ${naive:.4} for a naive design ({})",
                    s["label"].as_str().unwrap_or("")
                ),
            )
        }
        None => Check::new(false, "no cost per site in the run report"),
    }
}

fn rule_invokes_function(e: &Evidence) -> Check {
    let pairs: Vec<String> = e
        .iot
        .rules
        .iter()
        .flat_map(|r| r.actions.iter().filter(|a| a.kind == "Lambda").map(move |a| (r, a)))
        .filter(|(_, a)| e.functions.iter().any(|f| f.arn == a.target))
        .map(|(r, a)| format!("{} → {}", r.name, a.target.rsplit(':').next().unwrap_or_default()))
        .collect();
    Check::new(
        !pairs.is_empty(),
        if pairs.is_empty() {
            "no rule invokes an existing Lambda function".to_owned()
        } else {
            format!("rules invoke Lambda functions: {}", pairs.join(", "))
        },
    )
}

fn rules_have_error_actions(e: &Evidence) -> Check {
    let without: Vec<&str> = e.iot.rules.iter().filter(|r| r.error_action.is_none()).map(|r| r.name.as_str()).collect();
    Check::new(
        !e.iot.rules.is_empty() && without.is_empty(),
        if without.is_empty() {
            format!("each of {} rules has an error action", e.iot.rules.len())
        } else {
            format!("rules without an error action: {}", without.join(", "))
        },
    )
}

fn enabled_rules(e: &Evidence) -> Check {
    count(
        e.iot.rules.iter().filter(|r| !r.disabled && !r.actions.is_empty()).count(),
        "enabled topic rules with actions",
    )
}

fn model_card(e: &Evidence) -> Check {
    match &e.model_card {
        Some(c) => Check::new(
            true,
            format!(
                "model card: {} {} ({})",
                c["name"].as_str().unwrap_or("?"),
                c["version"].as_str().unwrap_or("?"),
                c["model"]["estimator"].as_str().unwrap_or("?")
            ),
        ),
        None => Check::new(false, "no model card (components/model/model-card.json)"),
    }
}

fn model_component_installed(e: &Evidence) -> Check {
    let on: Vec<String> = e
        .greengrass
        .core_devices
        .iter()
        .flat_map(|c| {
            c.components
                .iter()
                .filter(|(n, _, _)| n.ends_with(".Model"))
                .map(move |(n, v, _)| format!("{n} {v} on {}", c.thing))
        })
        .collect();
    Check::new(
        !on.is_empty(),
        if on.is_empty() {
            "no model component installed on a core".to_owned()
        } else {
            format!("model component installed: {}", on.join(", "))
        },
    )
}

fn model_reported(e: &Evidence) -> Check {
    let reported = e.run.as_ref().and_then(|r| r["model"]["sha256"].as_str()).filter(|s| !s.is_empty());
    let card = e.model_card.as_ref().and_then(|c| c["model"]["sha256"].as_str());
    match reported {
        Some(sha) => Check::new(
            true,
            format!(
                "the core reports the model it runs: SHA-256 {sha}{}",
                if Some(sha) == card { " (the model card's)" } else { "" }
            ),
        ),
        None => Check::new(false, "no model reported by the core in the run report"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::evidence::*;
    use serde_json::json;

    fn line(id: &str) -> &'static Line {
        LINES.iter().find(|l| l.id == id).unwrap()
    }

    fn met(id: &str, e: &Evidence, p: Option<&Partner>) -> (bool, Vec<Check>) {
        let checks = (line(id).decide)(Inputs { evidence: e, partner: p });
        (checks.iter().all(|c| c.held), checks)
    }

    fn with_core() -> Evidence {
        let mut e = Evidence::default();
        e.greengrass.core_devices.push(CoreDevice {
            thing: "core-1".into(),
            status: "HEALTHY".into(),
            components: vec![("com.example.pump.Model".into(), "1.0.0".into(), "RUNNING".into())],
        });
        e.iot.certificates.push(Certificate {
            id: "c1".into(),
            status: "ACTIVE".into(),
            not_after: None,
            things: vec!["core-1".into()],
        });
        e.security = Some(crate::audit::Report::new(0, Default::default(), Vec::new()));
        e
    }

    #[test]
    fn every_line_of_the_reference_checklist_is_defined_once_in_order() {
        let ids: Vec<&str> = LINES.iter().map(|l| l.id).collect();
        assert_eq!(
            ids,
            [
                "CS-1", "CS-2", "CS-3", "AD-1", "AD-2", "GG-1", "GG-2", "GG-3", "GG-4", "GG-5", "ML-1", "ML-2", "ML-3",
                "ML-4", "ML-5", "SC-1", "SC-2", "SC-3", "SC-4", "SC-5", "SC-6", "SC-7", "SC-8", "PR-1"
            ]
        );
        assert!(LINES.iter().all(|l| !l.by_hand.is_empty() && !l.subject.is_empty()));
    }

    #[test]
    fn nothing_observed_meets_no_line_and_every_check_says_what_is_missing() {
        for d in decide(Inputs { evidence: &Evidence::default(), partner: None }) {
            assert!(!d.met, "{} met on nothing", d.id);
            assert!(d.checks.iter().any(|c| !c.held && !c.text.is_empty()), "{}", d.id);
        }
    }

    #[test]
    fn a_wildcard_policy_fails_the_security_lines() {
        let mut e = with_core();
        assert!(no_permissive_policy(&e).held);
        let snapshot = crate::audit::Snapshot {
            policies: vec![crate::audit::PolicySnapshot {
                name: "Wide".into(),
                document:
                    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#
                        .into(),
            }],
            certificates: Vec::new(),
            role_aliases: Vec::new(),
        };
        e.security = Some(crate::audit::report_of(&snapshot, 0, 30));
        let check = no_permissive_policy(&e);
        assert!(!check.held && check.text.contains("Wide"), "{check:?}");
    }

    /// The local cloud shows the claim's policy AWS keeps internal; the Device Defender style audit
    /// flags its `client/*`, the service audit does not count it as long as it stays a claim policy.
    #[test]
    fn a_claim_policy_is_not_counted_as_permissive_but_a_wider_one_is() {
        let claim = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:1:client/*"},
            {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":["arn:aws:iot:us-east-1:1:topic/$aws/certificates/create-from-csr/*","arn:aws:iot:us-east-1:1:topic/$aws/provisioning-templates/T/provision/*"]},
            {"Effect":"Allow","Action":"iot:Subscribe","Resource":["arn:aws:iot:us-east-1:1:topicfilter/$aws/certificates/create-from-csr/*"]}]}"#;
        let wider = claim.replace("provisioning-templates/T/provision/*", "things/*");
        for (document, counted) in [(claim.to_owned(), false), (wider, true)] {
            let mut e = with_core();
            e.iot.policies.push(Policy { name: "T-Claim".into(), document: serde_json::from_str(&document).unwrap() });
            let snapshot = crate::audit::Snapshot {
                policies: vec![crate::audit::PolicySnapshot { name: "T-Claim".into(), document }],
                certificates: Vec::new(),
                role_aliases: Vec::new(),
            };
            let report = crate::audit::report_of(&snapshot, 0, 30);
            assert!(!report.findings.is_empty(), "the Device Defender style audit flags both");
            e.security = Some(report);
            let check = no_permissive_policy(&e);
            assert_eq!(check.held, !counted, "{check:?}");
            assert!(check.text.contains("T-Claim"), "{check:?}");
        }
    }

    #[test]
    fn shadow_updates_are_allowed_over_mqtt_or_http_but_not_by_other_topics() {
        let allows = |document: Value| {
            let mut e = with_core();
            e.iot.policies.push(Policy { name: "p".into(), document });
            shadow_update_allowed(&e).held
        };
        assert!(allows(
            json!({"Statement":{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/$aws/things/t/shadow/name/pump/update"}})
        ));
        assert!(allows(json!({"Statement":[{"Effect":"Allow","Action":["iot:UpdateThingShadow"],"Resource":"*"}]})));
        assert!(!allows(
            json!({"Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/dt/pump/t/telemetry"}]})
        ));
        assert!(!allows(
            json!({"Statement":[{"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:*:*:topic/$aws/things/t/shadow/update"}]})
        ));
    }

    #[test]
    fn rotation_needs_a_rotation_job_that_succeeded_on_a_device() {
        let mut e = with_core();
        e.iot.jobs.push(Job {
            id: "rotate-1".into(),
            status: "IN_PROGRESS".into(),
            rotation: true,
            executions: vec![("core-1".into(), "IN_PROGRESS".into())],
        });
        assert!(!rotation(&e).held);
        e.iot.jobs[0].executions[0].1 = "SUCCEEDED".into();
        assert!(rotation(&e).held);
        e.iot.jobs[0].rotation = false;
        assert!(!rotation(&e).held, "another job does not count");
    }

    #[test]
    fn mtls_needs_an_active_certificate_on_every_core() {
        let mut e = with_core();
        assert!(mtls(&e).held);
        e.iot.certificates[0].status = "REVOKED".into();
        assert!(!mtls(&e).held);
    }

    #[test]
    fn monitoring_lines_follow_the_alarms() {
        let mut e = with_core();
        assert!(!certificate_alarm(&e).held);
        e.alarms.push(Alarm {
            name: "pump-certificate-expiring".into(),
            metric: "PumpFleet/CertificateDaysLeft".into(),
            state: "OK".into(),
        });
        assert!(certificate_alarm(&e).held);
        assert!(!alarm_on(&e, &["UnhealthyCoreReports"], "cores").held);
    }

    #[test]
    fn roles_with_a_wildcard_action_are_not_least_privilege() {
        let mut e = Evidence::default();
        e.roles.push(Role {
            name: "r".into(),
            arn: "arn:aws:iam::1:role/r".into(),
            inline_policies: vec![(
                "p".into(),
                json!({"Statement":[{"Effect":"Allow","Action":"dynamodb:PutItem","Resource":"x"}]}),
            )],
        });
        assert!(scoped_roles(&e).held);
        e.roles[0].inline_policies[0].1 = json!({"Statement":{"Effect":"Allow","Action":["s3:*"],"Resource":"*"}});
        assert!(!scoped_roles(&e).held);
    }

    #[test]
    fn run_figures_decide_payload_shadow_and_cost_lines() {
        let mut e = with_core();
        e.run = Some(json!({
            "topics": {
                "dt/pump/core-1/telemetry": {"messages": 10, "bytes_avg": 900.0, "bytes_max": 1000, "per_minute": 6.0, "example": {"v":1}},
                "dt/pump/core-1/anomalies": {"messages": 2, "bytes_avg": 300.0, "bytes_max": 310, "per_minute": 0.2, "example": {"v":1}},
                "$aws/things/core-1/shadow/name/pump/update/documents": {"messages": 3, "bytes_avg": 200.0, "bytes_max": 250, "per_minute": 0.3, "example": {"current":{}}},
                "$aws/things/core-1/shadow/name/pump/update/accepted": {"messages": 1, "bytes_avg": 100.0, "bytes_max": 100, "per_minute": 0.1, "example": {}}
            },
            "shadow": {"state": {"desired": {"mode": "auto"}, "reported": {"mode": "auto"}}},
            "shadow_state_bytes": 400,
            "cost": {"scenarios": [{"label": "run", "cost": {"total": 0.2}, "naive_cost": {"total": 3.1}}]},
            "steps": [{"name": "3", "description": "the operator sets a desired speed → actuation → reported", "passed": true, "seconds": 1.0}]
        }));
        assert!(met("GG-2", &e, None).0, "{:?}", met("GG-2", &e, None).1);
        assert!(cost_below_naive(&e).held && shadow_size(&e).held && within_broker_limits(&e).held);
        e.run.as_mut().unwrap()["shadow_state_bytes"] = json!(9000);
        assert!(!shadow_size(&e).held);
        e.run.as_mut().unwrap()["steps"][0]["passed"] = json!(false);
        assert!(!Check::of(e.run_step_passed("x", &["desired"])).held);
    }

    #[test]
    fn partner_lines_are_decided_on_the_partner_statement_and_say_software_cannot_show_them() {
        let e = Evidence::default();
        let (m, checks) = met("CS-3", &e, None);
        assert!(!m && checks[0].text.contains("needs the partner's input"));
        let partner = Partner {
            publication: Some("non-public".into()),
            in_production_case_studies: Some(2),
            ..Partner::default()
        };
        let (m, checks) = met("CS-3", &e, Some(&partner));
        assert!(m && checks[0].text.contains("software cannot show this"));
        assert!(met("CS-1", &e, Some(&partner)).0);
        assert_eq!(line("CS-1").basis, Basis::Partner);
    }

    /// A deployment with everything the solution has, and a run that shows it all.
    fn complete() -> Evidence {
        let mut e = with_core();
        e.account.id = Some("000000000000".into());
        e.account.source = Some("arn:aws:iot:us-east-1:000000000000:thinggroup/cores".into());
        e.iot.things.push(Thing { name: "core-1".into(), groups: vec!["cores".into()] });
        e.iot.policies.push(Policy {
            name: "core".into(),
            document: json!({"Statement":[{"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/name/pump/*"}]}),
        });
        e.iot.rules.push(Rule {
            name: "pump_anomalies".into(),
            sql: "SELECT *".into(),
            disabled: false,
            actions: vec![RuleAction {
                kind: "Lambda".into(),
                target: "arn:aws:lambda:us-east-1:0:function:h".into(),
                role_arn: None,
            }],
            error_action: Some("Republish".into()),
        });
        e.iot.jobs.push(Job {
            id: "rotate-1".into(),
            status: "COMPLETED".into(),
            rotation: true,
            executions: vec![("core-1".into(), "SUCCEEDED".into())],
        });
        e.iot.provisioning_templates.push(ProvisioningTemplate { name: "claim".into(), enabled: true });
        e.iot.role_aliases.push(RoleAlias { alias: "tes".into(), role_arn: "arn:aws:iam::0:role/tes".into() });
        e.roles.push(Role {
            name: "tes".into(),
            arn: "arn:aws:iam::0:role/tes".into(),
            inline_policies: vec![(
                "p".into(),
                json!({"Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"x"}]}),
            )],
        });
        e.greengrass.components.push(Component {
            name: "com.example.pump.Model".into(),
            versions: vec!["1.0.0".into(), "1.1.0".into()],
            access_control: true,
        });
        e.greengrass.deployments.push(Deployment {
            id: "d1".into(),
            target_arn: "arn:aws:iot:us-east-1:0:thinggroup/cores".into(),
            status: "ACTIVE".into(),
            latest: true,
            created: Some(1),
            components: vec![("com.example.pump.Model".into(), "1.1.0".into())],
        });
        e.functions.push(Function {
            name: "h".into(),
            arn: "arn:aws:lambda:us-east-1:0:function:h".into(),
            runtime: "provided.al2023".into(),
            role: "arn:aws:iam::0:role/tes".into(),
        });
        e.tables.push("incidents".into());
        e.buckets.push("raw".into());
        for (name, metric) in [
            ("pump-core-unhealthy", "PumpFleet/UnhealthyCoreReports"),
            ("pump-certificate-expiring", "PumpFleet/CertificateDaysLeft"),
            ("pump-rule-errors", "AWS/IoT/Failure"),
        ] {
            e.alarms.push(Alarm { name: name.into(), metric: metric.into(), state: "OK".into() });
        }
        e.model_card = Some(
            json!({"name": "m", "version": "1.0.0", "model": {"sha256": "ab", "estimator": "RF"}, "training_data": {}, "hyperparameters": {}, "metrics": {}}),
        );
        // The steps as the demo (`device-sim/demo`) describes them in its report.json.
        let step = |name: &str, description: &str| json!({"name": name, "description": description, "passed": true, "seconds": 1.0});
        let topic = |n: u64| json!({"messages": n, "bytes_avg": 500.0, "bytes_max": 900, "per_minute": 6.0, "example": {"v": 1}});
        e.run = Some(json!({
            "started": "2026-12-08T00:00:00Z",
            "topics": {
                "dt/pump/core-1/telemetry": topic(10), "dt/pump/core-1/anomalies": topic(2),
                "$aws/things/core-1/shadow/name/pump/update/documents": topic(3), "$aws/things/core-1/shadow/name/pump/update/accepted": topic(1),
            },
            "shadow": {"state": {"desired": {"mode": "auto"}, "reported": {"mode": "auto"}}},
            "shadow_state_bytes": 400,
            "delta_to_actuation": {"samples_ms": [10.0], "p50_ms": 10.0, "p99_ms": 12.0},
            "fault_to_action": {"samples_ms": [20.0], "p50_ms": 20.0, "p99_ms": 25.0},
            "model": {"status": "running", "detector": "both", "sha256": "ab"},
            "facts": {"plant_reads": [{"after": "start"}]},
            "anomaly_windows": [{"object": "o", "bytes": 10}],
            "cost": {"scenarios": [{"label": "run", "cost": {"total": 0.2}, "naive_cost": {"total": 3.0}}]},
            "steps": [
                step("1", "start the local cloud, provision the core device, start the plant and the core; build, publish and deploy the components to the core's thing group"),
                step("2", "normal operation: telemetry reaches the cloud, the shadow reports the pump and the model"),
                step("3", "the operator sets a desired speed in the cloud → actuation at the plant → reported"),
                step("4", "a fault at the plant → anomaly → protective action at the plant → reported in the cloud"),
                step("5", "the fault is cleared → the anomaly clears → the operator resumes → the plant follows"),
                step("6", "the cloud reacts: the cloud side is deployed (tables, Lambda functions, topic rules, roles); the same fault three times → rule → Lambda → incidents in DynamoDB → desired mode maintenance → the controller stops the pump → reported; the operator returns it to service"),
                step("7", "over the air: a new analyzer version and the retrained model (2.1.0) roll out from the cloud while the pump runs; the controller defers the update while its protection is active; telemetry keeps flowing without a gap"),
                step("8", "a broken analyzer version (its recipe passes a flag the binary does not know) is deployed: the core rolls back, and the cloud shows the failure and its cause"),
                step("9", "the local cloud stops for a while; on return every telemetry batch arrives, in order, and the shadow converges"),
                step("10", "the core updates itself: the site's core now runs under its launcher (as a Greengrass core under its loader); a new nucleus version (2.15.0: this core build, published as AWS publishes the nucleus) is deployed to the thing group; the core stages it, restarts into it and proves itself, and the cloud shows the new version"),
                step("11", "hardware failure: the core device dies with its disk while the pump runs; the operator replaces it (certificate revoked, thing kept, group deployment revised) and sets a new desired speed; the replacement onboards by claim under the same thing name, receives the group's deployment again and drives the pump to the shadow's desired state"),
            ],
        }));
        e
    }

    #[test]
    fn a_complete_deployment_and_run_meet_every_evidence_line_and_the_partner_lines_with_the_input() {
        let e = complete();
        let partner = Partner {
            customer: Some("Acme".into()),
            publication: Some("public".into()),
            in_production_case_studies: Some(2),
            problem: Some("p".into()),
            proposal: Some("q".into()),
            start_date: Some("2026-01-01".into()),
            end_date: Some("2026-06-30".into()),
            outcomes: Some("o".into()),
            lessons_learned: vec!["l".into()],
            iot_core_validation: Some("completed 2026-05-01".into()),
        };
        for d in decide(Inputs { evidence: &e, partner: Some(&partner) }) {
            assert!(d.met, "{} not met: {:?}", d.id, d.checks.iter().filter(|c| !c.held).collect::<Vec<_>>());
        }
        // Without the partner's input only the lines that need it fail.
        let unmet: Vec<&str> =
            decide(Inputs { evidence: &e, partner: None }).into_iter().filter(|d| !d.met).map(|d| d.id).collect();
        assert_eq!(unmet, ["CS-1", "CS-2", "CS-3", "PR-1"]);
    }

    /// Step 7 is both the over-the-air update (GG-3, SC-8) and the retrained model's rollout (ML-5);
    /// step 3, not step 6 (whose description also says desired and reported), decides GG-1.
    #[test]
    fn each_step_of_the_run_decides_its_lines() {
        for (words, lines) in [
            ("the operator sets", &["GG-1"][..]),
            ("cloud stops", &["SC-5"]),
            ("hardware failure", &["SC-5", "SC-8"]),
            ("core updates itself", &["GG-4"]),
            ("retrained model", &["GG-3", "ML-5", "SC-8"]),
        ] {
            let mut e = complete();
            let steps = e.run.as_mut().unwrap()["steps"].as_array_mut().unwrap();
            steps
                .iter_mut()
                .filter(|s| s["description"].as_str().unwrap().contains(words))
                .for_each(|s| s["passed"] = json!(false));
            let unmet: Vec<&str> = decide(Inputs { evidence: &e, partner: None })
                .into_iter()
                .filter(|d| !d.met && d.basis == Basis::Evidence && d.id != "CS-2")
                .map(|d| d.id)
                .collect();
            assert_eq!(unmet, lines, "{words}");
        }
    }
}
