//! The case study: the partner's own fields, read from a small TOML input file with clear
//! placeholders (`audit init-input FILE` writes the template), and the facts filled from the live
//! deployment and the run, written as `CASE-STUDY.md` with the fields the checklist's CS-2 names.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::evidence::Evidence;
use crate::error::ProvisionError;

/// What every placeholder of the template starts with.
pub const PLACEHOLDER: &str = "TODO";

/// The template `audit init-input` writes: every field a placeholder.
pub const TEMPLATE: &str = r#"# The partner's own fields of the case study, which no software can observe.
# Replace every value that starts with TODO; `audit run --input FILE` reads this file.

# The customer's name (or an anonymized description, for a non-public case study).
customer = "TODO: the customer's name"
# "public" or "non-public": whether AWS may publish the case study.
publication = "TODO: public or non-public"
# How many case studies of delivered, in-production deployments the partner submits (two are needed).
in_production_case_studies = 0
# The customer's problem, in their words.
problem = "TODO: the problem statement"
# What was proposed.
proposal = "TODO: what was proposed"
# The project's start and end dates, YYYY-MM-DD.
start_date = "TODO: YYYY-MM-DD"
end_date = "TODO: YYYY-MM-DD"
# Outcomes beyond the figures the run measured (business results).
outcomes = "TODO: the customer's outcomes"
# Lessons learned, one a string.
lessons_learned = ["TODO: a lesson learned"]
# The AWS IoT Core service delivery validation: its outcome or date.
iot_core_validation = "TODO: completed on YYYY-MM-DD"
"#;

/// The partner's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partner {
    /// The customer.
    pub customer: Option<String>,
    /// `public` or `non-public`.
    pub publication: Option<String>,
    /// How many in-production case studies are submitted.
    pub in_production_case_studies: Option<u32>,
    /// The problem statement.
    pub problem: Option<String>,
    /// What was proposed.
    pub proposal: Option<String>,
    /// Start date, YYYY-MM-DD.
    pub start_date: Option<String>,
    /// End date, YYYY-MM-DD.
    pub end_date: Option<String>,
    /// Business outcomes.
    pub outcomes: Option<String>,
    /// Lessons learned.
    #[serde(default)]
    pub lessons_learned: Vec<String>,
    /// The AWS IoT Core validation's outcome.
    pub iot_core_validation: Option<String>,
}

/// Whether a value is still the template's placeholder (or empty).
pub fn is_placeholder(value: &str) -> bool {
    let v = value.trim();
    v.is_empty() || v.starts_with(PLACEHOLDER)
}

impl Partner {
    /// Parses the input file's text; a clear error naming what is wrong.
    pub fn parse(text: &str) -> Result<Partner, ProvisionError> {
        let partner: Partner =
            toml::from_str(text).map_err(|e| ProvisionError::InvalidInput(format!("the case-study input: {e}")))?;
        if let Some(p) = partner.publication.as_deref().filter(|p| !is_placeholder(p))
            && !matches!(p, "public" | "non-public")
        {
            return Err(ProvisionError::InvalidInput(format!(
                "the case-study input: publication is \"public\" or \"non-public\", not {p:?}"
            )));
        }
        for (field, value) in [("start_date", &partner.start_date), ("end_date", &partner.end_date)] {
            if let Some(d) = value.as_deref().filter(|d| !is_placeholder(d))
                && !is_date(d)
            {
                return Err(ProvisionError::InvalidInput(format!(
                    "the case-study input: {field} is a date YYYY-MM-DD, not {d:?}"
                )));
            }
        }
        Ok(partner)
    }

    /// Reads and parses the input file.
    pub fn read(path: &Path) -> Result<Partner, ProvisionError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProvisionError::InvalidInput(format!("the case-study input {}: {e}", path.display())))?;
        Partner::parse(&text).map_err(|e| ProvisionError::InvalidInput(format!("{} ({})", e, path.display())))
    }

    /// The publication statement, when filled in.
    pub fn publication(&self) -> Option<&str> {
        self.publication.as_deref().filter(|p| !is_placeholder(p))
    }

    /// The fields still missing or placeholders.
    pub fn missing_fields(&self) -> Vec<&'static str> {
        let text = [
            ("customer", &self.customer),
            ("problem", &self.problem),
            ("proposal", &self.proposal),
            ("start_date", &self.start_date),
            ("end_date", &self.end_date),
            ("outcomes", &self.outcomes),
        ];
        let mut missing: Vec<&'static str> =
            text.iter().filter(|(_, v)| v.as_deref().is_none_or(is_placeholder)).map(|(k, _)| *k).collect();
        if self.lessons_learned.iter().all(|l| is_placeholder(l)) {
            missing.push("lessons_learned");
        }
        missing
    }
}

fn is_date(d: &str) -> bool {
    let b = d.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&d[5..7].parse::<u8>().unwrap_or(0))
        && (1..=31).contains(&d[8..10].parse::<u8>().unwrap_or(0))
}

/// The AWS services the deployment was found to use, each with what of it was found.
pub fn services_used(e: &Evidence) -> Vec<(&'static str, String)> {
    let mut used = Vec::new();
    let mut push = |service: &'static str, n: usize, what: String| {
        if n > 0 {
            used.push((service, what));
        }
    };
    let iot = &e.iot;
    push(
        "AWS IoT Core",
        iot.things.len() + iot.rules.len(),
        format!(
            "{} things in {} groups, {} certificates, {} policies, {} topic rules, {} jobs, {} provisioning templates{}",
            iot.things.len(),
            iot.thing_groups.len(),
            iot.certificates.len(),
            iot.policies.len(),
            iot.rules.len(),
            iot.jobs.len(),
            iot.provisioning_templates.len(),
            if e.run.as_ref().is_some_and(|r| r["shadow"]["state"].is_object()) {
                ", Device Shadow (the run's)"
            } else {
                ""
            }
        ),
    );
    let gg = &e.greengrass;
    push(
        "AWS IoT Greengrass V2",
        gg.components.len() + gg.core_devices.len(),
        format!(
            "{} components, {} deployments, {} core devices",
            gg.components.len(),
            gg.deployments.len(),
            gg.core_devices.len()
        ),
    );
    push("AWS Lambda", e.functions.len(), names(e.functions.iter().map(|f| f.name.as_str())));
    push("Amazon DynamoDB", e.tables.len(), names(e.tables.iter().map(String::as_str)));
    push("Amazon S3", e.buckets.len(), names(e.buckets.iter().map(String::as_str)));
    push("AWS IAM", e.roles.len(), names(e.roles.iter().map(|r| r.name.as_str())));
    push("Amazon CloudWatch", e.alarms.len(), format!("{} alarms", e.alarms.len()));
    push("Amazon CloudWatch Logs", e.log_groups.len(), format!("{} log groups", e.log_groups.len()));
    used
}

fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    it.collect::<Vec<_>>().join(", ")
}

/// A third-party tool with its licence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThirdParty {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Licence expression, as the package declares it.
    pub license: String,
}

/// The third-party Rust crates of `cargo metadata`'s output (everything outside the workspace).
pub fn third_party_from_metadata(metadata: &Value) -> Vec<ThirdParty> {
    let members: Vec<&str> =
        metadata["workspace_members"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut out: Vec<ThirdParty> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| !members.contains(&p["id"].as_str().unwrap_or_default()))
        .map(|p| ThirdParty {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            version: p["version"].as_str().unwrap_or_default().to_owned(),
            license: p["license"].as_str().unwrap_or("not declared").to_owned(),
        })
        .collect();
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out.dedup();
    out
}

/// The third-party packages of the workspace at `workspace`: its Rust crates from
/// `cargo metadata` (offline, from `Cargo.lock`) with the licence each declares, and the Python
/// requirements' names (their licences are not in the requirements files, and are said so). The
/// second value says where the list came from, or why it is empty.
pub fn third_party(workspace: &Path) -> (Vec<ThirdParty>, String) {
    let mut sources = Vec::new();
    let metadata = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--offline", "--locked", "--manifest-path"])
        .arg(workspace.join("Cargo.toml"))
        .stderr(std::process::Stdio::null())
        .output();
    let mut packages = match metadata {
        Ok(out) if out.status.success() => match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(m) => {
                sources.push("`cargo metadata` of the workspace (licences as each crate declares them)".to_owned());
                third_party_from_metadata(&m)
            }
            Err(e) => {
                sources.push(format!("`cargo metadata` gave no JSON ({e})"));
                Vec::new()
            }
        },
        Ok(out) => {
            sources.push(format!("`cargo metadata` failed ({})", out.status));
            Vec::new()
        }
        Err(e) => {
            sources.push(format!("`cargo metadata` could not run ({e})"));
            Vec::new()
        }
    };
    for file in ["tests/conformance/requirements.txt", "cloud/training/requirements.txt"] {
        let Ok(text) = std::fs::read_to_string(workspace.join(file)) else { continue };
        sources.push(format!("`{file}` (Python; licences not recorded there)"));
        for line in text.lines().map(|l| l.split('#').next().unwrap_or_default().trim()).filter(|l| !l.is_empty()) {
            let name_end =
                line.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))).unwrap_or(line.len());
            packages.push(ThirdParty {
                name: line[..name_end].to_owned(),
                version: line[name_end..].trim().to_owned(),
                license: "not recorded in the requirements file".to_owned(),
            });
        }
    }
    packages.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    packages.dedup();
    (packages, sources.join("; "))
}

/// `CASE-STUDY.md`.
pub fn render(e: &Evidence, partner: Option<&Partner>, third_party: &[ThirdParty], third_party_source: &str) -> String {
    let mut s = String::new();
    let field = |v: Option<&String>| match v.filter(|v| !is_placeholder(v)) {
        Some(v) => v.clone(),
        None => "**(to be filled in by the partner: the input file's field is missing or a placeholder)**".into(),
    };
    let p = partner.cloned().unwrap_or_default();
    let _ = writeln!(s, "# Case study\n");
    if partner.is_none() {
        let _ = writeln!(
            s,
            "> No input file was given: the partner's fields are placeholders. Write one with `audit init-input FILE`, fill it in, and run `audit run --input FILE`.\n"
        );
    }
    let _ = writeln!(s, "| field | value | source |\n| --- | --- | --- |");
    let _ = writeln!(s, "| Customer | {} | partner |", field(p.customer.as_ref()));
    let account = match (&e.account.id, &e.account.source) {
        (Some(id), Some(src)) => format!("{id} (from `{src}`)"),
        _ => "**not found: no resource ARN names it**".into(),
    };
    let _ = writeln!(s, "| AWS account ID | {account} | live deployment |");
    let _ = writeln!(s, "| Publication | {} | partner |", field(p.publication.as_ref()));
    let _ = writeln!(s, "| Start date | {} | partner |", field(p.start_date.as_ref()));
    let _ = writeln!(s, "| End date | {} | partner |", field(p.end_date.as_ref()));
    let _ = writeln!(s, "\n## Problem statement\n\n{}\n", field(p.problem.as_ref()));
    let _ = writeln!(s, "## What was proposed\n\n{}\n", field(p.proposal.as_ref()));
    let _ = writeln!(
        s,
        "## How AWS services were used\n\nFound in the live deployment (`evidence/resources.json`; drawn in `architecture.svg`):\n"
    );
    for (service, what) in services_used(e) {
        let _ = writeln!(s, "- **{service}**: {what}");
    }
    let _ = writeln!(
        s,
        "\n## Outcomes and results\n\nMeasured by the run (`evidence/payloads.json`, `evidence/cost.json`, `evidence/run.json`):\n"
    );
    match &e.run {
        Some(run) => {
            for line in outcomes(run) {
                let _ = writeln!(s, "- {line}");
            }
        }
        None => {
            let _ = writeln!(s, "- **no run report was given (`--report`): no measured figures**");
        }
    }
    let _ = writeln!(s, "\nThe customer's outcomes: {}\n", field(p.outcomes.as_ref()));
    let _ = writeln!(s, "## Lessons learned\n");
    let lessons: Vec<&String> = p.lessons_learned.iter().filter(|l| !is_placeholder(l)).collect();
    if lessons.is_empty() {
        let _ = writeln!(s, "{}", field(None));
    }
    for l in lessons {
        let _ = writeln!(s, "- {l}");
    }
    let _ = writeln!(
        s,
        "\n## Third-party tools and their licences\n\nFrom {third_party_source}: {} packages (`evidence/third-party.json`).\n",
        third_party.len()
    );
    let mut by_license: std::collections::BTreeMap<&str, usize> = Default::default();
    for t in third_party {
        *by_license.entry(t.license.as_str()).or_default() += 1;
    }
    let _ = writeln!(s, "| licence | packages |\n| --- | --- |");
    for (license, n) in by_license {
        let _ = writeln!(s, "| {license} | {n} |");
    }
    s
}

/// One line per measured outcome of a run report.
fn outcomes(run: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let steps = run["steps"].as_array().map_or(0, Vec::len);
    let passed = run["steps"].as_array().into_iter().flatten().filter(|s| s["passed"] == true).count();
    out.push(format!("the run of {} held {passed} of {steps} steps", run["started"].as_str().unwrap_or("?")));
    if let Some(s) = run["cost"]["scenarios"].as_array().and_then(|s| s.first()) {
        out.push(format!(
            "cost per pump site a month: ${:.4} (a naive design: ${:.4}), at AWS list prices",
            s["cost"]["total"].as_f64().unwrap_or_default(),
            s["naive_cost"]["total"].as_f64().unwrap_or_default()
        ));
    }
    for (what, key) in
        [("desired change → actuation", "delta_to_actuation"), ("fault → protective action", "fault_to_action")]
    {
        if let (Some(p50), Some(p99)) = (run[key]["p50_ms"].as_f64(), run[key]["p99_ms"].as_f64()) {
            out.push(format!("{what}: p50 {p50:.0} ms, p99 {p99:.0} ms"));
        }
    }
    if let Some(r) = run["recovery"].as_object() {
        out.push(format!(
            "hardware failure: pump under control again {} ms after the replacement powered on, telemetry after {} ms",
            r.get("to_control_ms").and_then(Value::as_u64).unwrap_or_default(),
            r.get("to_telemetry_ms").and_then(Value::as_u64).unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_parses_back_with_every_partner_field_missing() {
        let p = Partner::parse(TEMPLATE).expect("the template parses");
        assert_eq!(
            p.missing_fields(),
            ["customer", "problem", "proposal", "start_date", "end_date", "outcomes", "lessons_learned"]
        );
        assert_eq!(p.publication(), None);
        let filled = TEMPLATE
            .replace("TODO: the customer's name", "Acme Water")
            .replace("TODO: public or non-public", "non-public")
            .replace("TODO: the problem statement", "pumps fail")
            .replace("TODO: what was proposed", "edge ML")
            .replacen("TODO: YYYY-MM-DD", "2026-01-05", 1)
            .replacen("TODO: YYYY-MM-DD", "2026-06-30", 1)
            .replace("TODO: the customer's outcomes", "fewer failures")
            .replace("TODO: a lesson learned", "measure first");
        let p = Partner::parse(&filled).unwrap();
        assert!(p.missing_fields().is_empty(), "{:?}", p.missing_fields());
        assert_eq!((p.publication(), p.start_date.as_deref()), (Some("non-public"), Some("2026-01-05")));
    }

    #[test]
    fn a_bad_input_file_is_a_clear_error() {
        for (text, says) in [
            ("customer = ", "the case-study input"),
            ("customr = \"x\"", "unknown field"),
            ("publication = \"secret\"", "public"),
            ("start_date = \"5 Jan 2026\"", "YYYY-MM-DD"),
        ] {
            let err = Partner::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
        let err = Partner::read(Path::new("/nonexistent/case-study.toml")).unwrap_err().to_string();
        assert!(err.contains("case-study.toml"), "{err}");
    }

    #[test]
    fn the_case_study_marks_the_partner_fields_still_to_fill_in() {
        let text = render(&Evidence::default(), None, &[], "cargo metadata");
        assert!(text.contains("to be filled in by the partner"));
        assert!(text.contains("no run report"));
    }

    #[test]
    fn third_party_packages_are_those_outside_the_workspace_with_their_licences() {
        let metadata = serde_json::json!({
            "workspace_members": ["path+file:///w#provision@0.1.0"],
            "packages": [
                {"id": "path+file:///w#provision@0.1.0", "name": "provision", "version": "0.1.0", "license": "Apache-2.0"},
                {"id": "registry+x#tokio@1.0.0", "name": "tokio", "version": "1.0.0", "license": "MIT"},
                {"id": "registry+x#odd@1.0.0", "name": "odd", "version": "1.0.0", "license": null}
            ]
        });
        let got = third_party_from_metadata(&metadata);
        assert_eq!(
            got.iter().map(|t| (t.name.as_str(), t.license.as_str())).collect::<Vec<_>>(),
            [("odd", "not declared"), ("tokio", "MIT")]
        );
    }
}
