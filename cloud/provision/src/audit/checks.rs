//! The audit's checks over a snapshot of the account: pure functions, no I/O. Each finding is
//! named after the AWS IoT Device Defender audit check it stands in for, with that check's
//! severity ("Audit checks" in the AWS IoT Device Defender Developer Guide); the reason codes
//! are Device Defender's where it has one for the case, else this tool's own.
//!
//! "A role alias allows more than the solution needs" is defined against
//! [`NEEDED_ROLE_ACTIONS`]: what the pump's token exchange role grants — `s3:PutObject` on keys
//! under the thing's own prefix and `logs:PutLogEvents` on the thing's own log streams, written
//! with the `${credentials-iot:ThingName}` variable — and [`LOG_GROUP_ACTIONS`]
//! (`logs:CreateLogGroup`, `logs:CreateLogStream`), allowed on Greengrass's log groups
//! (`…:log-group:/aws/greengrass/…`) only. Every
//! Allow statement of every inline policy of the alias's role is read (Deny statements and
//! conditions do not clear a finding):
//! - `*`, a wildcard action (`s3:*`, `s3:Put*`) or `NotAction`: overly permissive (critical);
//! - an action of a security-auditing service (`iam`, `sts`, `cloudtrail`, `guardduty`,
//!   `inspector`, `inspector2`, `securityhub`, `trustedadvisor`): overly permissive (critical);
//! - a needed action on a resource not under `${credentials-iot:ThingName}`, or with
//!   `NotResource`: overly permissive (critical), since one device could then reach another's data;
//!   the same for a log-group action outside Greengrass's log groups;
//! - any other named action: access to a service the solution does not use (medium).

use std::collections::BTreeSet;

use cloud_api::policy::{PolicyDocument, overly_permissive};
use serde::Serialize;
use serde_json::Value;

/// The actions the solution's devices need from their role alias (the token exchange role) on
/// their own data only (a resource written with [`THING_NAME_VARIABLE`]).
pub const NEEDED_ROLE_ACTIONS: &[&str] = &["s3:PutObject", "logs:PutLogEvents"];

/// The actions the Greengrass log manager needs on Greengrass's log groups, which no thing owns
/// alone: allowed only on resources under [`GREENGRASS_LOG_GROUPS`].
pub const LOG_GROUP_ACTIONS: &[&str] = &["logs:CreateLogGroup", "logs:CreateLogStream"];

/// Where the Greengrass log manager's log groups are (`…:log-group:/aws/greengrass/…`).
pub const GREENGRASS_LOG_GROUPS: &str = ":log-group:/aws/greengrass/";

/// The variable that limits a needed action to the device's own data.
pub const THING_NAME_VARIABLE: &str = "${credentials-iot:ThingName}";

/// Services whose access Device Defender counts as access to security auditing.
const SECURITY_AUDITING_SERVICES: &[&str] =
    &["iam", "sts", "cloudtrail", "guardduty", "inspector", "inspector2", "securityhub", "trustedadvisor"];

/// Certificates expiring within this many days are reported (Device Defender's default).
pub const DEFAULT_EXPIRY_DAYS: u32 = 30;

/// How bad a finding is, lowest first (Device Defender's scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; nothing is exposed.
    Low,
    /// A weakness to fix soon.
    Medium,
    /// A weakness to fix now.
    High,
    /// Devices or data are exposed.
    Critical,
}

impl Severity {
    /// The lowercase name (`low`, …, `critical`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical];
}

/// The Device Defender audit check a finding belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Check {
    /// An IoT policy lets one device reach other devices' resources (critical).
    #[serde(rename = "IOT_POLICY_OVERLY_PERMISSIVE_CHECK")]
    IotPolicyOverlyPermissive,
    /// An IoT policy that cannot be read as one (medium).
    #[serde(rename = "IOT_POLICY_POTENTIAL_MISCONFIGURATION_CHECK")]
    IotPolicyPotentialMisconfiguration,
    /// An active certificate expires soon, has expired, or its validity cannot be read (medium).
    #[serde(rename = "DEVICE_CERTIFICATE_EXPIRING_CHECK")]
    DeviceCertificateExpiring,
    /// One certificate is attached to several things (critical).
    #[serde(rename = "DEVICE_CERTIFICATE_SHARED_CHECK")]
    DeviceCertificateShared,
    /// A revoked (medium) or inactive (low) certificate is still attached to a thing.
    #[serde(rename = "REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK")]
    RevokedDeviceCertificateStillActive,
    /// A role alias's role grants broad access (critical).
    #[serde(rename = "IOT_ROLE_ALIAS_OVERLY_PERMISSIVE_CHECK")]
    IotRoleAliasOverlyPermissive,
    /// A role alias's role grants actions the solution does not use (medium).
    #[serde(rename = "IOT_ROLE_ALIAS_ALLOWS_ACCESS_TO_UNUSED_SERVICES_CHECK")]
    IotRoleAliasAllowsAccessToUnusedServices,
}

impl Check {
    /// Device Defender's name for the check, as its CLI and API spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Check::IotPolicyOverlyPermissive => "IOT_POLICY_OVERLY_PERMISSIVE_CHECK",
            Check::IotPolicyPotentialMisconfiguration => "IOT_POLICY_POTENTIAL_MISCONFIGURATION_CHECK",
            Check::DeviceCertificateExpiring => "DEVICE_CERTIFICATE_EXPIRING_CHECK",
            Check::DeviceCertificateShared => "DEVICE_CERTIFICATE_SHARED_CHECK",
            Check::RevokedDeviceCertificateStillActive => "REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK",
            Check::IotRoleAliasOverlyPermissive => "IOT_ROLE_ALIAS_OVERLY_PERMISSIVE_CHECK",
            Check::IotRoleAliasAllowsAccessToUnusedServices => "IOT_ROLE_ALIAS_ALLOWS_ACCESS_TO_UNUSED_SERVICES_CHECK",
        }
    }
}

/// The kind of resource a finding names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResourceType {
    /// An IoT policy, by name.
    IotPolicy,
    /// A certificate, by id.
    DeviceCertificate,
    /// A role alias, by name.
    RoleAlias,
}

/// One noncompliant resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The check.
    pub check: Check,
    /// How bad it is.
    pub severity: Severity,
    /// Why, as a reason code (`ALLOWS_BROAD_ACCESS_TO_IOT_DATA_PLANE_ACTIONS`, …).
    pub reason_code: &'static str,
    /// What kind of resource.
    pub resource_type: ResourceType,
    /// The policy name, certificate id or role alias.
    pub resource: String,
    /// What exactly, in words.
    pub message: String,
}

/// An IoT policy's default version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySnapshot {
    /// Name.
    pub name: String,
    /// The default version's document, as IoT Core returns it.
    pub document: String,
}

/// A certificate and the things it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSnapshot {
    /// Certificate id.
    pub id: String,
    /// `ACTIVE`, `INACTIVE`, `REVOKED`, `PENDING_TRANSFER`, …
    pub status: String,
    /// `validity.notAfter` of DescribeCertificate, epoch seconds, when given.
    pub not_after: Option<i64>,
    /// The certificate PEM, read when `not_after` is absent.
    pub pem: Option<String>,
    /// Things the certificate is attached to (ListPrincipalThings).
    pub things: Vec<String>,
}

/// A role alias and what its role allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleAliasSnapshot {
    /// The alias.
    pub alias: String,
    /// The role it points to.
    pub role_arn: String,
    /// The role, `None` when it does not exist.
    pub role: Option<RoleSnapshot>,
}

/// An IAM role's policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSnapshot {
    /// Inline policies: name and (URL-decoded) document.
    pub inline_policies: Vec<(String, String)>,
    /// Managed policies attached to the role, by ARN (not evaluated).
    pub managed_policies: Vec<String>,
}

/// What the audit looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every IoT policy.
    pub policies: Vec<PolicySnapshot>,
    /// Every certificate.
    pub certificates: Vec<CertificateSnapshot>,
    /// Every role alias.
    pub role_aliases: Vec<RoleAliasSnapshot>,
}

/// When and how strictly to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Now, epoch seconds.
    pub now: i64,
    /// Report active certificates that expire within this many days.
    pub expiry_days: u32,
}

/// Every check over `snapshot`, findings sorted worst first, then by check and resource.
pub fn run_checks(snapshot: &Snapshot, options: &CheckOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    for policy in &snapshot.policies {
        findings.extend(check_policy(policy));
    }
    for cert in &snapshot.certificates {
        findings.extend(check_certificate(cert, options));
    }
    for alias in &snapshot.role_aliases {
        findings.extend(check_role_alias(alias));
    }
    findings.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then(a.check.cmp(&b.check)).then_with(|| a.resource.cmp(&b.resource))
    });
    findings
}

/// The overly-permissive audit of one IoT policy, or why it cannot be read.
pub fn check_policy(policy: &PolicySnapshot) -> Vec<Finding> {
    let finding = |check, severity, reason_code, message| Finding {
        check,
        severity,
        reason_code,
        resource_type: ResourceType::IotPolicy,
        resource: policy.name.clone(),
        message,
    };
    match PolicyDocument::parse(&policy.document) {
        Err(e) => vec![finding(
            Check::IotPolicyPotentialMisconfiguration,
            Severity::Medium,
            "POLICY_DOCUMENT_NOT_PARSED",
            format!("the default version cannot be read as an IoT policy ({e}); it was not audited"),
        )],
        Ok(doc) => {
            let reasons = overly_permissive(&doc);
            if reasons.is_empty() {
                return Vec::new();
            }
            vec![finding(
                Check::IotPolicyOverlyPermissive,
                Severity::Critical,
                "ALLOWS_BROAD_ACCESS_TO_IOT_DATA_PLANE_ACTIONS",
                reasons.join("; "),
            )]
        }
    }
}

/// Sharing, still-attached and expiry findings for one certificate.
pub fn check_certificate(cert: &CertificateSnapshot, options: &CheckOptions) -> Vec<Finding> {
    let finding = |check, severity, reason_code, message| Finding {
        check,
        severity,
        reason_code,
        resource_type: ResourceType::DeviceCertificate,
        resource: cert.id.clone(),
        message,
    };
    let usable = matches!(cert.status.as_str(), "ACTIVE" | "PENDING_TRANSFER");
    let things = cert.things.join(", ");
    let mut findings = Vec::new();
    if usable && cert.things.len() > 1 {
        findings.push(finding(
            Check::DeviceCertificateShared,
            Severity::Critical,
            "CERTIFICATE_SHARED_BY_THINGS",
            format!("{} certificate attached to {} things: {things}", cert.status, cert.things.len()),
        ));
    }
    match (cert.status.as_str(), cert.things.is_empty()) {
        ("REVOKED", false) => findings.push(finding(
            Check::RevokedDeviceCertificateStillActive,
            Severity::Medium,
            "REVOKED_CERTIFICATE_STILL_ATTACHED",
            format!("REVOKED certificate still attached to {things}; detach it and delete it"),
        )),
        ("INACTIVE", false) => findings.push(finding(
            Check::RevokedDeviceCertificateStillActive,
            Severity::Low,
            "INACTIVE_CERTIFICATE_STILL_ATTACHED",
            format!("INACTIVE certificate still attached to {things}; retire it (detach, delete) or activate it"),
        )),
        _ => {}
    }
    if usable {
        let expiring =
            |reason_code, message| finding(Check::DeviceCertificateExpiring, Severity::Medium, reason_code, message);
        match not_after(cert) {
            Err(why) => findings.push(expiring(
                "CERTIFICATE_VALIDITY_UNKNOWN",
                format!("{} certificate whose expiry cannot be read: {why}", cert.status),
            )),
            Ok(end) if end <= options.now => findings.push(expiring(
                "CERTIFICATE_EXPIRED",
                format!("{} certificate expired {} day(s) ago", cert.status, (options.now - end) / 86_400),
            )),
            Ok(end) if end - options.now <= i64::from(options.expiry_days) * 86_400 => findings.push(expiring(
                "CERTIFICATE_APPROACHING_EXPIRATION",
                format!(
                    "{} certificate expires in {} day(s) (threshold {} days); rotate it",
                    cert.status,
                    (end - options.now) / 86_400,
                    options.expiry_days
                ),
            )),
            Ok(_) => {}
        }
    }
    findings
}

/// The certificate's notAfter: DescribeCertificate's validity, else read from the PEM.
pub(crate) fn not_after(cert: &CertificateSnapshot) -> Result<i64, String> {
    if let Some(end) = cert.not_after {
        return Ok(end);
    }
    let pem = cert.pem.as_deref().ok_or("no validity and no PEM in DescribeCertificate")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| format!("PEM: {e}"))?;
    let cert = pem.parse_x509().map_err(|e| format!("X.509: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// What one role alias's role allows beyond [`NEEDED_ROLE_ACTIONS`].
pub fn check_role_alias(alias: &RoleAliasSnapshot) -> Vec<Finding> {
    let finding = |check, severity, reason_code, message: String| Finding {
        check,
        severity,
        reason_code,
        resource_type: ResourceType::RoleAlias,
        resource: alias.alias.clone(),
        message: format!("role {}: {message}", alias.role_arn),
    };
    let Some(role) = &alias.role else {
        return vec![finding(
            Check::IotRoleAliasOverlyPermissive,
            Severity::Low,
            "ROLE_NOT_FOUND",
            "the role does not exist; devices get no credentials, and whoever creates a role of that name decides what they may do".into(),
        )];
    };
    let mut grants = RoleGrants::default();
    for (name, document) in &role.inline_policies {
        if let Err(why) = grants.read_policy(document) {
            grants.unreadable.insert(format!("{name} ({why})"));
        }
    }
    let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join("; ");
    let mut findings = Vec::new();
    let critical =
        |reason, what: String| finding(Check::IotRoleAliasOverlyPermissive, Severity::Critical, reason, what);
    if !grants.broad.is_empty() {
        findings.push(critical("ALLOWS_BROAD_ACCESS_TO_USED_SERVICES", list(&grants.broad)));
    }
    if !grants.auditing.is_empty() {
        findings.push(critical("ALLOWS_ACCESS_TO_SECURITY_AUDITING_SERVICES", list(&grants.auditing)));
    }
    if !grants.unscoped.is_empty() {
        findings.push(critical("ALLOWS_ACCESS_BEYOND_THE_THING_OWN_RESOURCES", list(&grants.unscoped)));
    }
    if !grants.unused.is_empty() {
        findings.push(finding(
            Check::IotRoleAliasAllowsAccessToUnusedServices,
            Severity::Medium,
            "ALLOWS_ACCESS_TO_UNUSED_SERVICES",
            format!(
                "allows {} (the solution needs only {}, {})",
                list(&grants.unused),
                NEEDED_ROLE_ACTIONS.join(", "),
                LOG_GROUP_ACTIONS.join(", ")
            ),
        ));
    }
    if !grants.unreadable.is_empty() {
        findings.push(finding(
            Check::IotRoleAliasOverlyPermissive,
            Severity::Medium,
            "POLICY_DOCUMENT_NOT_PARSED",
            format!("inline policies that cannot be read, not audited: {}", list(&grants.unreadable)),
        ));
    }
    if !role.managed_policies.is_empty() {
        findings.push(finding(
            Check::IotRoleAliasOverlyPermissive,
            Severity::Medium,
            "MANAGED_POLICY_NOT_EVALUATED",
            format!(
                "managed policies attached, which this audit does not read; review them or replace them with an inline policy: {}",
                role.managed_policies.join(", ")
            ),
        ));
    }
    findings
}

/// What a role's Allow statements grant, sorted by the finding they make.
#[derive(Debug, Default)]
struct RoleGrants {
    broad: BTreeSet<String>,
    auditing: BTreeSet<String>,
    unscoped: BTreeSet<String>,
    unused: BTreeSet<String>,
    unreadable: BTreeSet<String>,
}

impl RoleGrants {
    /// Reads one IAM policy document (JSON; `Statement` an object or an array; `Action`,
    /// `NotAction`, `Resource`, `NotResource` a string or an array of strings).
    fn read_policy(&mut self, document: &str) -> Result<(), String> {
        let value: Value = serde_json::from_str(document).map_err(|e| format!("not JSON: {e}"))?;
        let statements: Vec<&Value> = match value.get("Statement") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            _ => return Err("no Statement".into()),
        };
        for statement in statements {
            let effect = statement.get("Effect").and_then(Value::as_str).ok_or("a statement without Effect")?;
            if effect != "Allow" {
                continue;
            }
            if statement.get("NotAction").is_some() {
                self.broad.insert("NotAction: every action but the ones listed".into());
                continue;
            }
            let actions = strings(statement.get("Action")).ok_or("a statement without Action")?;
            let resources = match (strings(statement.get("Resource")), statement.get("NotResource")) {
                (Some(resources), None) => resources,
                (None, Some(_)) => vec!["NotResource: every resource but the ones listed".to_owned()],
                _ => return Err("a statement without Resource".into()),
            };
            for action in actions {
                self.read_action(&action, &resources);
            }
        }
        Ok(())
    }

    fn read_action(&mut self, action: &str, resources: &[String]) {
        if action == "*" {
            self.broad.insert("* (every action of every service)".into());
            return;
        }
        let service = action.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if SECURITY_AUDITING_SERVICES.contains(&service.as_str()) {
            self.auditing.insert(action.to_owned());
        } else if action.contains(['*', '?']) {
            self.broad.insert(format!("{action} on {}", resources.join(", ")));
        } else if LOG_GROUP_ACTIONS.iter().any(|n| n.eq_ignore_ascii_case(action)) {
            for resource in resources.iter().filter(|r| !(r.contains(":logs:") && r.contains(GREENGRASS_LOG_GROUPS))) {
                self.unscoped.insert(format!("{action} on {resource}, not limited to Greengrass's log groups"));
            }
        } else if NEEDED_ROLE_ACTIONS.iter().any(|n| n.eq_ignore_ascii_case(action)) {
            for resource in resources.iter().filter(|r| !r.contains(THING_NAME_VARIABLE)) {
                self.unscoped.insert(format!("{action} on {resource}, not limited to {THING_NAME_VARIABLE}"));
            }
        } else {
            self.unused.insert(action.to_owned());
        }
    }
}

/// A policy element that is a string or an array of strings.
fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    match value? {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;
    const OPTIONS: CheckOptions = CheckOptions { now: NOW, expiry_days: DEFAULT_EXPIRY_DAYS };

    fn shipped_policy() -> PolicySnapshot {
        let scope = crate::policy::AccountScope {
            partition: "aws".into(),
            region: "eu-west-1".into(),
            account_id: "111122223333".into(),
        };
        let rendered = crate::policy::PolicySource::shipped().render(&scope, false).unwrap();
        PolicySnapshot { name: "PumpCoreDevicePolicy".into(), document: rendered.document }
    }

    /// A certificate snapshot for the checks' and the rotation sweep's tests.
    pub(crate) fn cert(id: &str, status: &str, not_after: i64, things: &[&str]) -> CertificateSnapshot {
        CertificateSnapshot {
            id: id.into(),
            status: status.into(),
            not_after: Some(not_after),
            pem: None,
            things: things.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    const UPLOADS_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject",
        "Resource":"arn:aws:s3:::pump-data/anomalies/${credentials-iot:ThingName}/*"}]}"#;

    fn alias(policies: &[&str]) -> RoleAliasSnapshot {
        RoleAliasSnapshot {
            alias: "PumpTokenExchangeRoleAlias".into(),
            role_arn: "arn:aws:iam::111122223333:role/PumpTokenExchangeRole".into(),
            role: Some(RoleSnapshot {
                inline_policies: policies.iter().enumerate().map(|(i, d)| (format!("p{i}"), (*d).to_owned())).collect(),
                managed_policies: Vec::new(),
            }),
        }
    }

    fn clean() -> Snapshot {
        Snapshot {
            policies: vec![shipped_policy()],
            certificates: vec![cert("c1", "ACTIVE", NOW + 365 * DAY, &["pump-core-1"])],
            role_aliases: vec![alias(&[UPLOADS_ONLY])],
        }
    }

    fn reasons(findings: &[Finding]) -> Vec<(&'static str, Severity, &'static str)> {
        findings.iter().map(|f| (f.check.name(), f.severity, f.reason_code)).collect()
    }

    #[test]
    fn a_clean_account_has_no_findings() {
        assert_eq!(run_checks(&clean(), &OPTIONS), Vec::new());
        assert_eq!(run_checks(&Snapshot::default(), &OPTIONS), Vec::new());
    }

    #[test]
    fn an_overly_permissive_iot_policy_is_critical_with_every_reason() {
        let wide = PolicySnapshot {
            name: "Wide".into(),
            document: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#
                .into(),
        };
        let findings = check_policy(&wide);
        assert_eq!(
            reasons(&findings),
            [(
                "IOT_POLICY_OVERLY_PERMISSIVE_CHECK",
                Severity::Critical,
                "ALLOWS_BROAD_ACCESS_TO_IOT_DATA_PLANE_ACTIONS"
            )]
        );
        assert!(findings[0].message.contains("iot:Connect with any client id"), "{}", findings[0].message);
        assert_eq!((findings[0].resource_type, findings[0].resource.as_str()), (ResourceType::IotPolicy, "Wide"));
    }

    #[test]
    fn an_unparsable_iot_policy_is_a_misconfiguration_finding_not_a_crash() {
        for document in ["{not json", r#"{"Version":"2012-10-17","Statement":[{"Effect":"Maybe"}]}"#, ""] {
            let findings = check_policy(&PolicySnapshot { name: "Broken".into(), document: document.into() });
            assert_eq!(
                reasons(&findings),
                [("IOT_POLICY_POTENTIAL_MISCONFIGURATION_CHECK", Severity::Medium, "POLICY_DOCUMENT_NOT_PARSED")],
                "{document}"
            );
        }
    }

    #[test]
    fn a_certificate_attached_to_two_things_is_shared() {
        let findings = check_certificate(&cert("c", "ACTIVE", NOW + 365 * DAY, &["a", "b"]), &OPTIONS);
        assert_eq!(
            reasons(&findings),
            [("DEVICE_CERTIFICATE_SHARED_CHECK", Severity::Critical, "CERTIFICATE_SHARED_BY_THINGS")]
        );
        assert!(findings[0].message.contains("a, b"));
        // One thing, or an inactive certificate, is not shared.
        assert!(check_certificate(&cert("c", "ACTIVE", NOW + 365 * DAY, &["a"]), &OPTIONS).is_empty());
        let inactive = check_certificate(&cert("c", "INACTIVE", NOW + 365 * DAY, &["a", "b"]), &OPTIONS);
        assert!(inactive.iter().all(|f| f.check != Check::DeviceCertificateShared), "{inactive:?}");
    }

    #[test]
    fn revoked_or_inactive_certificates_still_attached_are_reported_by_status() {
        let revoked = check_certificate(&cert("c", "REVOKED", NOW - DAY, &["a"]), &OPTIONS);
        assert_eq!(
            reasons(&revoked),
            [("REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK", Severity::Medium, "REVOKED_CERTIFICATE_STILL_ATTACHED")]
        );
        let inactive = check_certificate(&cert("c", "INACTIVE", NOW + DAY, &["a"]), &OPTIONS);
        assert_eq!(
            reasons(&inactive),
            [("REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK", Severity::Low, "INACTIVE_CERTIFICATE_STILL_ATTACHED")]
        );
        // Detached, they are retired: nothing to say (expiry is not checked for unusable ones).
        assert!(check_certificate(&cert("c", "REVOKED", NOW - DAY, &[]), &OPTIONS).is_empty());
        assert!(check_certificate(&cert("c", "INACTIVE", NOW + DAY, &[]), &OPTIONS).is_empty());
    }

    #[test]
    fn active_certificates_expiring_within_the_threshold_or_expired_are_reported() {
        let expiring = check_certificate(&cert("c", "ACTIVE", NOW + 10 * DAY, &["a"]), &OPTIONS);
        assert_eq!(
            reasons(&expiring),
            [("DEVICE_CERTIFICATE_EXPIRING_CHECK", Severity::Medium, "CERTIFICATE_APPROACHING_EXPIRATION")]
        );
        assert!(expiring[0].message.contains("expires in 10 day(s)"), "{}", expiring[0].message);
        let edge = check_certificate(&cert("c", "ACTIVE", NOW + 30 * DAY, &["a"]), &OPTIONS);
        assert_eq!(edge.len(), 1, "exactly 30 days is within the threshold");
        assert!(check_certificate(&cert("c", "ACTIVE", NOW + 31 * DAY, &["a"]), &OPTIONS).is_empty());
        let expired = check_certificate(&cert("c", "ACTIVE", NOW - 2 * DAY, &["a"]), &OPTIONS);
        assert_eq!(reasons(&expired), [("DEVICE_CERTIFICATE_EXPIRING_CHECK", Severity::Medium, "CERTIFICATE_EXPIRED")]);
        let strict = CheckOptions { expiry_days: 60, ..OPTIONS };
        assert_eq!(check_certificate(&cert("c", "ACTIVE", NOW + 45 * DAY, &["a"]), &strict).len(), 1);
    }

    #[test]
    fn expiry_is_read_from_the_pem_when_validity_is_absent() {
        let mut params = rcgen::CertificateParams::new(vec!["short".to_owned()]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(5);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let snapshot = CertificateSnapshot { not_after: None, pem: Some(pem), ..cert("c", "ACTIVE", 0, &["a"]) };
        let options = CheckOptions { now: now.unix_timestamp(), ..OPTIONS };
        let findings = check_certificate(&snapshot, &options);
        assert_eq!(reasons(&findings)[0].2, "CERTIFICATE_APPROACHING_EXPIRATION");
        assert!(findings[0].message.contains("expires in 5 day(s)"), "{}", findings[0].message);
    }

    #[test]
    fn an_unparsable_certificate_pem_is_a_finding_not_a_crash() {
        for pem in [Some("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"), Some("junk"), None] {
            let snapshot =
                CertificateSnapshot { not_after: None, pem: pem.map(str::to_owned), ..cert("c", "ACTIVE", 0, &["a"]) };
            let findings = check_certificate(&snapshot, &OPTIONS);
            assert_eq!(
                reasons(&findings),
                [("DEVICE_CERTIFICATE_EXPIRING_CHECK", Severity::Medium, "CERTIFICATE_VALIDITY_UNKNOWN")],
                "{pem:?}"
            );
        }
    }

    #[test]
    fn a_role_with_every_s3_action_on_every_resource_is_overly_permissive() {
        let wide = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":["s3:*"],"Resource":"*"}}"#;
        let findings = check_role_alias(&alias(&[wide]));
        assert_eq!(
            reasons(&findings),
            [("IOT_ROLE_ALIAS_OVERLY_PERMISSIVE_CHECK", Severity::Critical, "ALLOWS_BROAD_ACCESS_TO_USED_SERVICES")]
        );
        assert!(findings[0].message.contains("s3:* on *"), "{}", findings[0].message);
        assert!(findings[0].message.contains("role/PumpTokenExchangeRole"), "{}", findings[0].message);
        for broad in [
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","NotAction":"iam:*","Resource":"*"}]}"#,
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:Put*","Resource":"arn:aws:s3:::b/${credentials-iot:ThingName}/*"}]}"#,
        ] {
            assert_eq!(
                reasons(&check_role_alias(&alias(&[broad])))[0].2,
                "ALLOWS_BROAD_ACCESS_TO_USED_SERVICES",
                "{broad}"
            );
        }
    }

    #[test]
    fn the_needed_action_outside_the_thing_own_prefix_is_overly_permissive() {
        for resource in [r#""Resource":"arn:aws:s3:::pump-data/*""#, r#""NotResource":"arn:aws:s3:::other/*""#] {
            let doc = format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"s3:PutObject",{resource}}}]}}"#
            );
            assert_eq!(
                reasons(&check_role_alias(&alias(&[&doc]))),
                [(
                    "IOT_ROLE_ALIAS_OVERLY_PERMISSIVE_CHECK",
                    Severity::Critical,
                    "ALLOWS_ACCESS_BEYOND_THE_THING_OWN_RESOURCES"
                )],
                "{doc}"
            );
        }
    }

    #[test]
    fn log_manager_actions_pass_on_greengrass_log_groups_and_are_critical_elsewhere() {
        let doc = |action: &str, resource: &str| {
            format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"{action}","Resource":"{resource}"}}]}}"#
            )
        };
        let greengrass = "arn:aws:logs:*:*:log-group:/aws/greengrass/*";
        let own_streams = format!("{greengrass}:log-stream:/*/thing/${{credentials-iot:ThingName}}");
        let cases = [
            (doc("logs:CreateLogGroup", greengrass), None),
            (doc("logs:CreateLogStream", greengrass), None),
            (doc("logs:PutLogEvents", &own_streams), None),
            (
                doc("logs:CreateLogGroup", "arn:aws:logs:*:*:log-group:*"),
                Some("ALLOWS_ACCESS_BEYOND_THE_THING_OWN_RESOURCES"),
            ),
            (
                doc("logs:CreateLogStream", "arn:aws:s3:::x/aws/greengrass/*"),
                Some("ALLOWS_ACCESS_BEYOND_THE_THING_OWN_RESOURCES"),
            ),
            (
                doc("logs:PutLogEvents", &format!("{greengrass}:log-stream:*")),
                Some("ALLOWS_ACCESS_BEYOND_THE_THING_OWN_RESOURCES"),
            ),
            (doc("logs:GetLogEvents", greengrass), Some("ALLOWS_ACCESS_TO_UNUSED_SERVICES")),
        ];
        for (document, want) in cases {
            let found: Vec<&str> = reasons(&check_role_alias(&alias(&[&document]))).into_iter().map(|r| r.2).collect();
            assert_eq!(found, want.into_iter().collect::<Vec<_>>(), "{document}");
        }
    }

    #[test]
    fn security_auditing_services_are_critical_and_other_actions_are_unused_services() {
        let doc = r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":["iam:PassRole","dynamodb:GetItem","s3:GetObject"],"Resource":"*"},
            {"Effect":"Deny","Action":"*","Resource":"*"}]}"#;
        let findings = check_role_alias(&alias(&[UPLOADS_ONLY, doc]));
        assert_eq!(
            reasons(&findings),
            [
                (
                    "IOT_ROLE_ALIAS_OVERLY_PERMISSIVE_CHECK",
                    Severity::Critical,
                    "ALLOWS_ACCESS_TO_SECURITY_AUDITING_SERVICES"
                ),
                (
                    "IOT_ROLE_ALIAS_ALLOWS_ACCESS_TO_UNUSED_SERVICES_CHECK",
                    Severity::Medium,
                    "ALLOWS_ACCESS_TO_UNUSED_SERVICES"
                ),
            ]
        );
        assert!(findings[1].message.contains("dynamodb:GetItem; s3:GetObject"), "{}", findings[1].message);
    }

    #[test]
    fn unreadable_role_policies_missing_roles_and_managed_policies_are_reported() {
        let findings = check_role_alias(&alias(&["{nope", r#"{"Statement":[{"Effect":"Allow","Resource":"*"}]}"#]));
        assert_eq!(
            reasons(&findings),
            [("IOT_ROLE_ALIAS_OVERLY_PERMISSIVE_CHECK", Severity::Medium, "POLICY_DOCUMENT_NOT_PARSED")]
        );
        assert!(
            findings[0].message.contains("p0 (not JSON")
                && findings[0].message.contains("p1 (a statement without Action)")
        );
        let missing = RoleAliasSnapshot { role: None, ..alias(&[]) };
        assert_eq!(
            reasons(&check_role_alias(&missing)),
            [("IOT_ROLE_ALIAS_OVERLY_PERMISSIVE_CHECK", Severity::Low, "ROLE_NOT_FOUND")]
        );
        let mut managed = alias(&[UPLOADS_ONLY]);
        managed.role.as_mut().unwrap().managed_policies.push("arn:aws:iam::aws:policy/AdministratorAccess".into());
        let findings = check_role_alias(&managed);
        assert_eq!(reasons(&findings)[0].2, "MANAGED_POLICY_NOT_EVALUATED");
        assert!(findings[0].message.contains("AdministratorAccess"));
    }

    #[test]
    fn findings_come_worst_first() {
        let mut snapshot = clean();
        snapshot.certificates.push(cert("old", "INACTIVE", NOW + 365 * DAY, &["pump-core-1"]));
        snapshot.certificates.push(cert("twice", "ACTIVE", NOW + 365 * DAY, &["a", "b"]));
        snapshot.certificates.push(cert("soon", "ACTIVE", NOW + DAY, &["c"]));
        let severities: Vec<Severity> = run_checks(&snapshot, &OPTIONS).iter().map(|f| f.severity).collect();
        assert_eq!(severities, [Severity::Critical, Severity::Medium, Severity::Low]);
    }

    #[test]
    fn severities_order_low_to_critical_and_take_their_lowercase_names() {
        use clap::ValueEnum as _;
        assert!(Severity::Low < Severity::Medium && Severity::High < Severity::Critical);
        assert_eq!(Severity::from_str("high", false), Ok(Severity::High));
        assert!(Severity::ALL.iter().all(|s| s.to_possible_value().unwrap().get_name() == s.as_str()));
    }
}
