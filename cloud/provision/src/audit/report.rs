//! The audit's report: JSON for machines, Markdown for people, and whether the findings fail
//! the run. Pure functions over [`Report`].

use std::fmt::Write as _;

use serde::Serialize;

use super::checks::{Finding, Severity};

/// What was audited and what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// When the audit ran, epoch seconds.
    pub checked_at: i64,
    /// How many resources of each kind were read.
    pub audited: Audited,
    /// Findings per severity.
    pub summary: Summary,
    /// Every finding, worst first.
    pub findings: Vec<Finding>,
}

/// How many resources the audit read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Audited {
    /// IoT policies (their default versions).
    pub policies: usize,
    /// Certificates.
    pub certificates: usize,
    /// Role aliases (with their roles' policies).
    pub role_aliases: usize,
}

/// Findings per severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Critical findings.
    pub critical: usize,
    /// High findings.
    pub high: usize,
    /// Medium findings.
    pub medium: usize,
    /// Low findings.
    pub low: usize,
}

impl Report {
    /// A report of `findings` over `audited` resources at `checked_at`.
    pub fn new(checked_at: i64, audited: Audited, findings: Vec<Finding>) -> Report {
        let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
        let summary = Summary {
            critical: count(Severity::Critical),
            high: count(Severity::High),
            medium: count(Severity::Medium),
            low: count(Severity::Low),
        };
        Report { checked_at, audited, summary, findings }
    }

    /// The findings at or above `threshold`.
    pub fn at_or_above(&self, threshold: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity >= threshold).count()
    }

    /// Whether the run fails: a `--fail-on` threshold was given and a finding reaches it.
    pub fn fails(&self, fail_on: Option<Severity>) -> bool {
        fail_on.is_some_and(|threshold| self.at_or_above(threshold) > 0)
    }

    /// The report as pretty-printed JSON, with a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("a report always serializes");
        text.push('\n');
        text
    }

    /// The report as a Markdown document: a summary line and one table row per finding.
    pub fn to_markdown(&self) -> String {
        let mut md = String::from("# Security audit of the account\n\n");
        let a = &self.audited;
        let _ = writeln!(
            md,
            "Audited {} IoT policies, {} certificates and {} role aliases at {} (epoch seconds).\n",
            a.policies, a.certificates, a.role_aliases, self.checked_at
        );
        let s = &self.summary;
        let _ =
            writeln!(md, "Findings: {} critical, {} high, {} medium, {} low.\n", s.critical, s.high, s.medium, s.low);
        if self.findings.is_empty() {
            md.push_str("No findings.\n");
            return md;
        }
        md.push_str("| severity | check | reason | resource | finding |\n| --- | --- | --- | --- | --- |\n");
        for f in &self.findings {
            let _ = writeln!(
                md,
                "| {} | `{}` | `{}` | {} `{}` | {} |",
                f.severity.as_str(),
                f.check.name(),
                f.reason_code,
                resource_label(f),
                cell(&f.resource),
                cell(&f.message)
            );
        }
        md
    }
}

fn resource_label(f: &Finding) -> &'static str {
    match f.resource_type {
        super::checks::ResourceType::IotPolicy => "policy",
        super::checks::ResourceType::DeviceCertificate => "certificate",
        super::checks::ResourceType::RoleAlias => "role alias",
    }
}

/// Text that stays inside one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::super::checks::{Check, ResourceType};
    use super::*;

    fn finding(severity: Severity, message: &str) -> Finding {
        Finding {
            check: Check::DeviceCertificateShared,
            severity,
            reason_code: "CERTIFICATE_SHARED_BY_THINGS",
            resource_type: ResourceType::DeviceCertificate,
            resource: "abc".into(),
            message: message.into(),
        }
    }

    fn report(findings: Vec<Finding>) -> Report {
        Report::new(1_800_000_000, Audited { policies: 2, certificates: 3, role_aliases: 1 }, findings)
    }

    #[test]
    fn the_run_fails_only_on_a_finding_at_or_above_the_threshold() {
        let r = report(vec![finding(Severity::Medium, "m"), finding(Severity::Low, "l")]);
        assert!(!r.fails(None), "no threshold, no failure");
        assert!(r.fails(Some(Severity::Low)));
        assert!(r.fails(Some(Severity::Medium)));
        assert!(!r.fails(Some(Severity::High)));
        assert!(!r.fails(Some(Severity::Critical)));
        assert!(!report(Vec::new()).fails(Some(Severity::Low)));
        assert_eq!(r.at_or_above(Severity::Low), 2);
    }

    #[test]
    fn json_names_checks_severities_and_counts_as_documented() {
        let r = report(vec![finding(Severity::Critical, "attached to a, b")]);
        let value: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(value["checkedAt"], 1_800_000_000);
        assert_eq!(value["audited"], serde_json::json!({"policies": 2, "certificates": 3, "roleAliases": 1}));
        assert_eq!(value["summary"], serde_json::json!({"critical": 1, "high": 0, "medium": 0, "low": 0}));
        assert_eq!(
            value["findings"][0],
            serde_json::json!({
                "check": "DEVICE_CERTIFICATE_SHARED_CHECK",
                "severity": "critical",
                "reasonCode": "CERTIFICATE_SHARED_BY_THINGS",
                "resourceType": "DEVICE_CERTIFICATE",
                "resource": "abc",
                "message": "attached to a, b",
            })
        );
    }

    #[test]
    fn markdown_has_one_row_per_finding_and_keeps_cells_intact() {
        let md = report(vec![finding(Severity::High, "a | b\nc")]).to_markdown();
        assert!(md.starts_with("# Security audit of the account\n"), "{md}");
        assert!(md.contains("Audited 2 IoT policies, 3 certificates and 1 role aliases"), "{md}");
        assert!(md.contains("Findings: 0 critical, 1 high, 0 medium, 0 low."), "{md}");
        assert!(
            md.contains(
                "| high | `DEVICE_CERTIFICATE_SHARED_CHECK` | `CERTIFICATE_SHARED_BY_THINGS` | certificate `abc` | a \\| b c |"
            ),
            "{md}"
        );
        assert!(report(Vec::new()).to_markdown().ends_with("No findings.\n"));
    }
}
