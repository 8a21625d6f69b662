//! The token exchange role of a core device, as the Greengrass developer guide sets it up
//! ("Authorize core devices to interact with AWS services"), scoped to what the solution does:
//!
//! - an IAM role that the AWS IoT credentials provider may assume
//!   (`credentials.iot.amazonaws.com`), with one inline policy: `s3:PutObject` on
//!   `arn:aws:s3:::{bucket}/${credentials-iot:ThingName}/*` — each core may add objects under its
//!   own thing's prefix of the anomaly-windows bucket — and what the Greengrass log manager
//!   needs: `logs:CreateLogGroup` and `logs:CreateLogStream` on `/aws/greengrass/*` log groups,
//!   `logs:PutLogEvents` only on the thing's own streams (`…:log-stream:/*/thing/${credentials-iot:ThingName}`);
//!   nothing else in AWS;
//! - a role alias pointing at it (credentials valid for an hour);
//! - an IoT policy allowing `iot:AssumeRoleWithCertificate` on that alias, attached to the
//!   thing's certificates;
//! - the bucket, created when absent.
//!
//! Idempotent: a second run changes nothing. The documents are pure functions with tests next to
//! them; `provision_token_exchange` calls `aws-sdk-iam`, `aws-sdk-iot` and `aws-sdk-s3`.

use serde_json::json;

use crate::audit::decode_policy_document;
use crate::device::{
    ensure_policy, ensure_policy_attached, is_certificate, list_thing_principals, validate_policy_name,
};
use crate::error::{ProvisionError, aws, is_code};
use crate::policy::{AccountScope, PolicySource, RenderedPolicy};

/// The inline policy's name on the role.
pub const ROLE_POLICY_NAME: &str = "AnomalyWindowUploads";
/// How long credentials from the alias last, in seconds (the credentials provider's default).
pub const CREDENTIAL_DURATION_SECS: i32 = 3600;

/// What to set up.
#[derive(Debug, Clone)]
pub struct TokenExchangeSpec {
    /// The core device's thing (its certificates get the IoT policy).
    pub thing_name: String,
    /// The IAM role.
    pub role_name: String,
    /// The role alias (the nucleus's `iotRoleAlias`).
    pub role_alias: String,
    /// The IoT policy allowing the alias.
    pub policy_name: String,
    /// The bucket the analyzers upload anomaly windows to.
    pub bucket: String,
}

/// What exists afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExchangeSetup {
    /// The role's ARN.
    pub role_arn: String,
    /// The alias's ARN.
    pub role_alias_arn: String,
    /// What this run changed, for the operator.
    pub changes: Vec<String>,
}

/// The trust policy: only the AWS IoT credentials provider may assume the role.
pub fn trust_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"Service": "credentials.iot.amazonaws.com"},
        "Action": "sts:AssumeRole"
    }]})
    .to_string()
}

/// The role's permissions: new objects under the calling thing's prefix of `bucket`, and what
/// the Greengrass log manager needs to upload the core's logs: its log groups and streams
/// created under `/aws/greengrass/`, and events put only in the calling thing's streams
/// (`/{yyyy/MM/dd}/thing/{thing}`).
pub fn role_policy(partition: &str, bucket: &str) -> String {
    let groups = format!("arn:{partition}:logs:*:*:log-group:/aws/greengrass/*");
    json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "PutOwnAnomalyWindows",
        "Effect": "Allow",
        "Action": "s3:PutObject",
        "Resource": format!("arn:{partition}:s3:::{bucket}/${{credentials-iot:ThingName}}/*")
    }, {
        "Sid": "CreateGreengrassLogGroupsAndStreams",
        "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream"],
        "Resource": groups
    }, {
        "Sid": "PutOwnGreengrassLogEvents",
        "Effect": "Allow",
        "Action": "logs:PutLogEvents",
        "Resource": format!("{groups}:log-stream:/*/thing/${{credentials-iot:ThingName}}")
    }]})
    .to_string()
}

/// The IoT policy template that lets a certificate assume the role through `alias`.
pub fn alias_policy(alias: &str) -> PolicySource {
    let text = json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "AssumeTokenExchangeRole",
        "Effect": "Allow",
        "Action": "iot:AssumeRoleWithCertificate",
        "Resource": format!("arn:{{{{partition}}}}:iot:{{{{region}}}}:{{{{accountId}}}}:rolealias/{alias}")
    }]})
    .to_string();
    PolicySource { label: format!("token exchange policy for role alias {alias}"), text }
}

fn check_name(what: &str, name: &str, max: usize, extra: &str) -> Result<(), ProvisionError> {
    let ok =
        !name.is_empty() && name.len() <= max && name.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
    if ok { Ok(()) } else { Err(ProvisionError::InvalidInput(format!("{what} {name:?} is not valid"))) }
}

/// Checks the names before the first request.
pub fn validate(spec: &TokenExchangeSpec) -> Result<(), ProvisionError> {
    check_name("role name", &spec.role_name, 64, "+=,.@_-")?;
    check_name("role alias", &spec.role_alias, 128, "=,@-")?;
    validate_policy_name(&spec.policy_name)?;
    let bucket_ok = (3..=63).contains(&spec.bucket.len())
        && spec.bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if !bucket_ok {
        return Err(ProvisionError::InvalidInput(format!("bucket {:?} is not an S3 bucket name", spec.bucket)));
    }
    Ok(())
}

/// Sets up (or checks) the role, its alias, the IoT policy on the thing's certificates and the
/// bucket.
pub async fn provision_token_exchange(
    iot: &aws_sdk_iot::Client,
    iam: &aws_sdk_iam::Client,
    s3: &aws_sdk_s3::Client,
    spec: &TokenExchangeSpec,
) -> Result<TokenExchangeSetup, ProvisionError> {
    validate(spec)?;
    let mut changes = Vec::new();
    let thing = iot.describe_thing().thing_name(&spec.thing_name).send().await.map_err(aws("DescribeThing"))?;
    let thing_arn = thing.thing_arn().unwrap_or_default();
    let scope = AccountScope::from_arn(thing_arn)
        .ok_or_else(|| ProvisionError::unexpected("DescribeThing", format!("thing ARN {thing_arn:?} is not an ARN")))?;

    if crate::component::ensure_bucket(s3, &spec.bucket).await? {
        changes.push(format!("bucket {} created", spec.bucket));
    }

    let description = "Greengrass token exchange role: anomaly window uploads under the core's own prefix";
    let role_arn = ensure_role(iam, &spec.role_name, &trust_policy(), description, &mut changes).await?;

    let document = role_policy(&scope.partition, &spec.bucket);
    if ensure_role_policy(iam, &spec.role_name, ROLE_POLICY_NAME, &document).await? {
        changes.push(format!(
            "role {} allows s3:PutObject on {}/${{credentials-iot:ThingName}}/*",
            spec.role_name, spec.bucket
        ));
    }

    let described =
        iot.describe_role_alias().role_alias(&spec.role_alias).send().await.map_err(aws("DescribeRoleAlias"));
    let role_alias_arn = if is_code(&described, "ResourceNotFoundException") {
        let created = iot
            .create_role_alias()
            .role_alias(&spec.role_alias)
            .role_arn(&role_arn)
            .credential_duration_seconds(CREDENTIAL_DURATION_SECS)
            .send()
            .await
            .map_err(aws("CreateRoleAlias"))?;
        changes.push(format!("role alias {} created", spec.role_alias));
        created.role_alias_arn().map(str::to_owned)
    } else {
        let description = described?.role_alias_description;
        let description =
            description.ok_or_else(|| ProvisionError::unexpected("DescribeRoleAlias", "no roleAliasDescription"))?;
        if description.role_arn() != Some(role_arn.as_str()) {
            iot.update_role_alias()
                .role_alias(&spec.role_alias)
                .role_arn(&role_arn)
                .send()
                .await
                .map_err(aws("UpdateRoleAlias"))?;
            changes.push(format!("role alias {} now points at {role_arn}", spec.role_alias));
        }
        description.role_alias_arn().map(str::to_owned)
    }
    .ok_or_else(|| ProvisionError::unexpected("DescribeRoleAlias", "no roleAliasArn"))?;

    let policy = alias_policy(&spec.role_alias).render(&scope, false)?;
    let mut device_changes = Vec::new();
    ensure_policy(iot, &spec.policy_name, &policy, &mut device_changes).await?;
    let certificates: Vec<String> =
        list_thing_principals(iot, &spec.thing_name).await?.into_iter().filter(|p| is_certificate(p)).collect();
    if certificates.is_empty() {
        return Err(ProvisionError::InvalidInput(format!(
            "thing {} has no certificate: provision the core first",
            spec.thing_name
        )));
    }
    for arn in &certificates {
        let id = arn.rsplit('/').next().unwrap_or(arn);
        ensure_policy_attached(iot, &spec.policy_name, id, arn, &mut device_changes).await?;
    }
    changes.extend(device_changes.iter().map(ToString::to_string));
    Ok(TokenExchangeSetup { role_arn, role_alias_arn, changes })
}

/// Puts `document` as the inline policy `policy_name` of role `role` unless it says that already;
/// `true` when it wrote.
pub(crate) async fn ensure_role_policy(
    iam: &aws_sdk_iam::Client,
    role: &str,
    policy_name: &str,
    document: &str,
) -> Result<bool, ProvisionError> {
    let wanted = RenderedPolicy { document: document.to_owned(), findings: Vec::new() };
    let current =
        iam.get_role_policy().role_name(role).policy_name(policy_name).send().await.map_err(aws("GetRolePolicy"));
    let same = match &current {
        Ok(out) => wanted.same_as(&decode_policy_document(out.policy_document())),
        Err(_) if is_code(&current, "NoSuchEntity") => false,
        Err(_) => return Err(current.err().unwrap_or_else(|| ProvisionError::unexpected("GetRolePolicy", "?"))),
    };
    if same {
        return Ok(false);
    }
    iam.put_role_policy()
        .role_name(role)
        .policy_name(policy_name)
        .policy_document(document)
        .send()
        .await
        .map_err(aws("PutRolePolicy"))?;
    Ok(true)
}

/// The ARN of IAM role `name`, created with `trust` and `description` if it does not exist
/// (an existing role's trust policy is left as it is).
pub(crate) async fn ensure_role(
    iam: &aws_sdk_iam::Client,
    name: &str,
    trust: &str,
    description: &str,
    changes: &mut Vec<String>,
) -> Result<String, ProvisionError> {
    let got = iam.get_role().role_name(name).send().await.map_err(aws("GetRole"));
    if is_code(&got, "NoSuchEntity") {
        let created = iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust)
            .description(description)
            .send()
            .await
            .map_err(aws("CreateRole"))?;
        changes.push(format!("role {name} created"));
        created.role().map(|r| r.arn().to_owned())
    } else {
        got?.role().map(|r| r.arn().to_owned())
    }
    .ok_or_else(|| ProvisionError::unexpected("GetRole", "no role in the answer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checks::{RoleAliasSnapshot, RoleSnapshot, check_role_alias};

    fn spec() -> TokenExchangeSpec {
        TokenExchangeSpec {
            thing_name: "pump-core-1".into(),
            role_name: "PumpCoreTokenExchangeRole".into(),
            role_alias: "PumpCoreTokenExchangeRoleAlias".into(),
            policy_name: "PumpCoreTokenExchangeRoleAliasPolicy".into(),
            bucket: "pump-anomaly-windows".into(),
        }
    }

    #[test]
    fn the_role_passes_the_account_audit_without_a_finding() {
        let alias = RoleAliasSnapshot {
            alias: "PumpCoreTokenExchangeRoleAlias".into(),
            role_arn: "arn:aws:iam::123456789012:role/PumpCoreTokenExchangeRole".into(),
            role: Some(RoleSnapshot {
                inline_policies: vec![(ROLE_POLICY_NAME.into(), role_policy("aws", "pump-anomaly-windows"))],
                managed_policies: vec![],
            }),
        };
        assert_eq!(check_role_alias(&alias), vec![]);
    }

    #[test]
    fn the_role_allows_only_puts_under_the_things_prefix_and_only_the_credentials_provider_assumes_it() {
        let policy: serde_json::Value = serde_json::from_str(&role_policy("aws", "b")).unwrap();
        let statements = policy["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 3);
        assert_eq!(statements[0]["Action"], "s3:PutObject");
        assert_eq!(statements[0]["Resource"], "arn:aws:s3:::b/${credentials-iot:ThingName}/*");
        assert_eq!(statements[1]["Action"], serde_json::json!(["logs:CreateLogGroup", "logs:CreateLogStream"]));
        assert_eq!(statements[1]["Resource"], "arn:aws:logs:*:*:log-group:/aws/greengrass/*");
        assert_eq!(statements[2]["Action"], "logs:PutLogEvents");
        assert_eq!(
            statements[2]["Resource"],
            "arn:aws:logs:*:*:log-group:/aws/greengrass/*:log-stream:/*/thing/${credentials-iot:ThingName}"
        );
        let trust: serde_json::Value = serde_json::from_str(&trust_policy()).unwrap();
        assert_eq!(trust["Statement"][0]["Principal"]["Service"], "credentials.iot.amazonaws.com");
    }

    #[test]
    fn the_iot_policy_names_only_the_alias_and_passes_the_policy_audit() {
        let scope =
            AccountScope { partition: "aws".into(), region: "eu-west-1".into(), account_id: "123456789012".into() };
        let rendered = alias_policy("PumpCoreTokenExchangeRoleAlias").render(&scope, false).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&rendered.document).unwrap();
        assert_eq!(
            doc["Statement"][0]["Resource"],
            "arn:aws:iot:eu-west-1:123456789012:rolealias/PumpCoreTokenExchangeRoleAlias"
        );
        assert!(rendered.findings.is_empty());
    }

    #[test]
    fn bad_names_are_refused_before_any_request() {
        assert!(validate(&spec()).is_ok());
        for bad in [
            TokenExchangeSpec { role_name: "has space".into(), ..spec() },
            TokenExchangeSpec { role_alias: "a/b".into(), ..spec() },
            TokenExchangeSpec { bucket: "Upper".into(), ..spec() },
            TokenExchangeSpec { policy_name: String::new(), ..spec() },
        ] {
            assert!(matches!(validate(&bad), Err(ProvisionError::InvalidInput(_))), "{bad:?}");
        }
    }
}
