//! The audits of an account.
//!
//! The security audit of an account's IoT registry, in the spirit of AWS IoT Device Defender's
//! audit: this module reads the account through `aws-sdk-iot` and `aws-sdk-iam` (every list
//! paginated) into a [`Snapshot`]; [`checks`] turns it into findings and [`report`] renders them.
//!
//! The service-delivery audit (the `audit` binary) follows AWS's Service Delivery validation
//! checklist for AWS IoT Greengrass: [`collect`] reads the live deployment into [`evidence`],
//! [`checklist`] decides each line, [`output`] writes and verifies the audit directory,
//! [`case_study`] and [`diagram`] write `CASE-STUDY.md` and `architecture.svg`.
//!
//! Operations: ListPolicies, GetPolicy (the default version); ListCertificates,
//! DescribeCertificate, ListPrincipalThings; ListRoleAliases, DescribeRoleAlias; IAM GetRole,
//! ListRolePolicies, GetRolePolicy, ListAttachedRolePolicies (managed policies are listed, not read).

pub mod checks;
pub mod report;

use std::time::{SystemTime, UNIX_EPOCH};

pub use checks::{
    CertificateSnapshot, Check, CheckOptions, DEFAULT_EXPIRY_DAYS, Finding, PolicySnapshot, RoleAliasSnapshot,
    RoleSnapshot, Severity, Snapshot, run_checks,
};
pub use report::{Audited, Report};

use crate::error::{ProvisionError, aws, is_code};

/// Every item of every page of a list operation: `all!(builder, "Operation")`.
macro_rules! all {
    ($request:expr, $operation:literal) => {
        $request.into_paginator().items().send().collect::<Result<Vec<_>, _>>().await.map_err(aws($operation))
    };
}

/// Every page of a list operation, each page's `$field` items together: `pages!(builder, "Operation", field)`.
macro_rules! pages {
    ($request:expr, $operation:literal, $field:ident) => {
        $request
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(aws($operation))?
            .into_iter()
            .flat_map(|page| page.$field.unwrap_or_default())
            .collect::<Vec<_>>()
    };
}

pub mod case_study;
pub mod checklist;
pub mod collect;
pub mod diagram;
pub mod evidence;
pub mod output;
pub mod steps;

/// The security report of a snapshot at `now` (epoch seconds).
pub fn report_of(snapshot: &Snapshot, now: i64, expiry_days: u32) -> Report {
    let findings = run_checks(snapshot, &CheckOptions { now, expiry_days });
    let audited = Audited {
        policies: snapshot.policies.len(),
        certificates: snapshot.certificates.len(),
        role_aliases: snapshot.role_aliases.len(),
    };
    Report::new(now, audited, findings)
}

/// Reads the account and audits it; `expiry_days` is the certificate-expiry threshold.
pub async fn audit_account(
    iot: &aws_sdk_iot::Client,
    iam: &aws_sdk_iam::Client,
    expiry_days: u32,
) -> Result<Report, ProvisionError> {
    let snapshot = read_account(iot, iam).await?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    Ok(report_of(&snapshot, now, expiry_days))
}

/// Every IoT policy, certificate and role alias of the account, with what the checks need.
pub async fn read_account(iot: &aws_sdk_iot::Client, iam: &aws_sdk_iam::Client) -> Result<Snapshot, ProvisionError> {
    Ok(Snapshot {
        policies: read_policies(iot).await?,
        certificates: read_certificates(iot).await?,
        role_aliases: read_role_aliases(iot, iam).await?,
    })
}

async fn read_policies(iot: &aws_sdk_iot::Client) -> Result<Vec<PolicySnapshot>, ProvisionError> {
    let listed: Vec<_> = all!(iot.list_policies().page_size(250), "ListPolicies")?;
    let mut policies = Vec::with_capacity(listed.len());
    for name in listed.iter().filter_map(|p| p.policy_name()) {
        let got = iot.get_policy().policy_name(name).send().await.map_err(aws("GetPolicy"))?;
        policies.push(PolicySnapshot {
            name: name.to_owned(),
            document: got.policy_document().unwrap_or_default().to_owned(),
        });
    }
    Ok(policies)
}

pub(crate) async fn read_certificates(iot: &aws_sdk_iot::Client) -> Result<Vec<CertificateSnapshot>, ProvisionError> {
    let listed: Vec<_> = all!(iot.list_certificates().page_size(250), "ListCertificates")?;
    let mut certificates = Vec::with_capacity(listed.len());
    for id in listed.iter().filter_map(|c| c.certificate_id()) {
        let described =
            iot.describe_certificate().certificate_id(id).send().await.map_err(aws("DescribeCertificate"))?;
        let description = described
            .certificate_description()
            .ok_or_else(|| ProvisionError::unexpected("DescribeCertificate", "no certificateDescription"))?;
        let things = match description.certificate_arn() {
            Some(arn) => all!(iot.list_principal_things().principal(arn).max_results(250), "ListPrincipalThings")?,
            None => return Err(ProvisionError::unexpected("DescribeCertificate", "no certificateArn")),
        };
        certificates.push(CertificateSnapshot {
            id: id.to_owned(),
            status: description.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            not_after: description.validity().and_then(|v| v.not_after()).map(|t| t.secs()),
            pem: description.certificate_pem().map(str::to_owned),
            things,
        });
    }
    Ok(certificates)
}

async fn read_role_aliases(
    iot: &aws_sdk_iot::Client,
    iam: &aws_sdk_iam::Client,
) -> Result<Vec<RoleAliasSnapshot>, ProvisionError> {
    let aliases: Vec<String> = all!(iot.list_role_aliases().page_size(250), "ListRoleAliases")?;
    let mut snapshots = Vec::with_capacity(aliases.len());
    for alias in aliases {
        let described = iot.describe_role_alias().role_alias(&alias).send().await.map_err(aws("DescribeRoleAlias"))?;
        let role_arn = described.role_alias_description().and_then(|d| d.role_arn()).unwrap_or_default().to_owned();
        // arn:aws:iam::ACCOUNT:role/PATH/NAME: the name is the last segment.
        let role_name = role_arn.rsplit('/').next().unwrap_or_default().to_owned();
        let role = read_role(iam, &role_name).await?;
        snapshots.push(RoleAliasSnapshot { alias, role_arn, role });
    }
    Ok(snapshots)
}

/// A role's inline policies (decoded) and attached managed policies; `None` if it does not exist.
pub(crate) async fn read_role(iam: &aws_sdk_iam::Client, name: &str) -> Result<Option<RoleSnapshot>, ProvisionError> {
    let got = iam.get_role().role_name(name).send().await.map_err(aws("GetRole"));
    if is_code(&got, "NoSuchEntity") {
        return Ok(None);
    }
    got?;
    let names: Vec<String> = all!(iam.list_role_policies().role_name(name), "ListRolePolicies")?;
    let mut inline_policies = Vec::with_capacity(names.len());
    for policy in names {
        let got =
            iam.get_role_policy().role_name(name).policy_name(&policy).send().await.map_err(aws("GetRolePolicy"))?;
        inline_policies.push((policy, decode_policy_document(got.policy_document())));
    }
    let managed_policies = all!(iam.list_attached_role_policies().role_name(name), "ListAttachedRolePolicies")?
        .into_iter()
        .filter_map(|p| p.policy_arn().map(str::to_owned))
        .collect();
    Ok(Some(RoleSnapshot { inline_policies, managed_policies }))
}

/// IAM returns policy documents URL-encoded (RFC 3986); the SDK hands them over as they came.
pub(crate) fn decode_policy_document(document: &str) -> String {
    if document.trim_start().starts_with('{') {
        return document.to_owned();
    }
    percent_encoding::percent_decode_str(document).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn iam_policy_documents_are_url_decoded_once() {
        assert_eq!(super::decode_policy_document("%7B%22a%22%3A%201%7D"), r#"{"a": 1}"#);
        assert_eq!(super::decode_policy_document(r#"{"a":"50%25"}"#), r#"{"a":"50%25"}"#, "already JSON: kept");
    }
}
