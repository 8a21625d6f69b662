//! Fleet provisioning by claim, the operator's part (AWS IoT Developer Guide, "Provisioning
//! devices that don't have device certificates using fleet provisioning", "Provisioning
//! templates"; Greengrass Developer Guide, "Install AWS IoT Greengrass Core software with AWS IoT
//! fleet provisioning"):
//!
//! - the provisioning role AWS IoT assumes to register things (trusted by `iot.amazonaws.com`,
//!   one inline policy with the registration actions of AWS's `AWSIoTThingsRegistration`);
//! - a provisioning template that registers a core device under the thing name it is given, in
//!   the given thing groups, with the given IoT policies on its certificate;
//! - a claim: CreateProvisioningClaim's certificate and key (valid a few minutes, allowed only
//!   the template's provisioning topics), written as files for whoever installs the device.
//!
//! The device's part (its key made on the device, CreateCertificateFromCsr, RegisterThing) is
//! the core's (`device-sim core --provision-by-claim`). Replacing a failed device under its
//! thing name is [`crate::replace_device`], then a claim of this template with the same
//! `ThingName`. The template body is a pure function with a test next to it.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::device::{validate_policy_name, validate_thing_name};
use crate::error::{ProvisionError, aws, is_code};

/// The template parameter that names the thing.
pub const THING_NAME_PARAMETER: &str = "ThingName";
/// The provisioning role's inline policy name.
pub const ROLE_POLICY_NAME: &str = "ThingsRegistration";

/// What the template registers.
#[derive(Debug, Clone)]
pub struct TemplateSpec {
    /// The template's name.
    pub template_name: String,
    /// The provisioning role's name (created when absent).
    pub role_name: String,
    /// Thing groups the thing joins (their deployments reach it).
    pub thing_groups: Vec<String>,
    /// IoT policies attached to the new certificate, by name; they must exist.
    pub policies: Vec<String>,
}

/// A claim for one device: CreateProvisioningClaim's certificate and key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimFiles {
    /// The claim certificate (PEM).
    pub certificate: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub private_key: PathBuf,
    /// The claim's certificate id.
    pub certificate_id: String,
    /// When it stops working (epoch seconds), if the service said.
    pub expires_epoch_secs: Option<i64>,
}

/// The template body: parameter `ThingName`; the thing of that name in `thing_groups`; the
/// certificate from the device's CSR, ACTIVE; each of `policies` on it.
pub fn template_body(spec: &TemplateSpec) -> String {
    let mut resources = serde_json::Map::new();
    resources.insert(
        "thing".into(),
        json!({"Type": "AWS::IoT::Thing", "Properties": {
            "ThingName": {"Ref": THING_NAME_PARAMETER},
            "ThingGroups": spec.thing_groups,
        }}),
    );
    resources.insert(
        "certificate".into(),
        json!({"Type": "AWS::IoT::Certificate", "Properties": {
            "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"
        }}),
    );
    for (i, policy) in spec.policies.iter().enumerate() {
        resources
            .insert(format!("policy{i}"), json!({"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": policy}}));
    }
    json!({
        "Parameters": {THING_NAME_PARAMETER: {"Type": "String"}},
        "Resources": Value::Object(resources),
    })
    .to_string()
}

/// The provisioning role's trust policy: only AWS IoT may assume it.
pub fn trust_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"
    }]})
    .to_string()
}

/// What the role lets AWS IoT do while it registers a device (the actions of AWS's managed
/// `AWSIoTThingsRegistration`).
pub fn role_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Action": [
            "iot:AddThingToThingGroup", "iot:AttachPolicy", "iot:AttachPrincipalPolicy",
            "iot:AttachThingPrincipal", "iot:CreateCertificateFromCsr", "iot:CreatePolicy",
            "iot:CreateThing", "iot:DescribeCertificate", "iot:DescribeThing",
            "iot:DescribeThingGroup", "iot:DescribeThingType", "iot:DetachPolicy",
            "iot:DetachThingPrincipal", "iot:GetPolicy", "iot:ListAttachedPolicies",
            "iot:ListPolicyPrincipals", "iot:ListPrincipalPolicies", "iot:ListPrincipalThings",
            "iot:ListTargetsForPolicy", "iot:ListThingGroupsForThing", "iot:ListThingPrincipals",
            "iot:RegisterCertificate", "iot:RegisterThing", "iot:RemoveThingFromThingGroup",
            "iot:UpdateCertificate", "iot:UpdateThing", "iot:UpdateThingGroupsForThing"
        ],
        "Resource": "*"
    }]})
    .to_string()
}

fn validate(spec: &TemplateSpec) -> Result<(), ProvisionError> {
    let name_ok = |n: &str, max: usize, extra: &str| {
        !n.is_empty() && n.len() <= max && n.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    };
    if !name_ok(&spec.template_name, 36, "_-") {
        return Err(ProvisionError::InvalidInput(format!(
            "template name {:?} is not valid (1-36 of A-Z a-z 0-9 _ -)",
            spec.template_name
        )));
    }
    if !name_ok(&spec.role_name, 64, "+=,.@_-") {
        return Err(ProvisionError::InvalidInput(format!("role name {:?} is not valid", spec.role_name)));
    }
    for group in &spec.thing_groups {
        validate_thing_name(group).map_err(|_| ProvisionError::InvalidInput(format!("thing group {group:?}")))?;
    }
    spec.policies.iter().try_for_each(|p| validate_policy_name(p))
}

/// Makes sure the provisioning role and the template exist (an existing template is kept as it
/// is); returns the template's ARN and what changed.
pub async fn ensure_template(
    iot: &aws_sdk_iot::Client,
    iam: &aws_sdk_iam::Client,
    spec: &TemplateSpec,
) -> Result<(String, Vec<String>), ProvisionError> {
    validate(spec)?;
    let mut changes = Vec::new();
    let described = iot
        .describe_provisioning_template()
        .template_name(&spec.template_name)
        .send()
        .await
        .map_err(aws("DescribeProvisioningTemplate"));
    if !is_code(&described, "ResourceNotFoundException") {
        let arn = described?.template_arn().map(str::to_owned);
        return Ok((
            arn.ok_or_else(|| ProvisionError::unexpected("DescribeProvisioningTemplate", "no templateArn"))?,
            changes,
        ));
    }
    let description = "AWS IoT fleet provisioning: registers core devices from claims";
    let role_arn =
        crate::token_exchange::ensure_role(iam, &spec.role_name, &trust_policy(), description, &mut changes).await?;
    iam.put_role_policy()
        .role_name(&spec.role_name)
        .policy_name(ROLE_POLICY_NAME)
        .policy_document(role_policy())
        .send()
        .await
        .map_err(aws("PutRolePolicy"))?;
    let created = iot
        .create_provisioning_template()
        .template_name(&spec.template_name)
        .description("Pump station core devices, by claim")
        .template_body(template_body(spec))
        .enabled(true)
        .provisioning_role_arn(&role_arn)
        .send()
        .await
        .map_err(aws("CreateProvisioningTemplate"))?;
    changes.push(format!("provisioning template {} created", spec.template_name));
    let arn = created.template_arn().map(str::to_owned);
    Ok((arn.ok_or_else(|| ProvisionError::unexpected("CreateProvisioningTemplate", "no templateArn"))?, changes))
}

/// CreateProvisioningClaim for `template`: its certificate and key written into `dir` as
/// `claim.pem.crt` and `claim.private.pem.key` (0600).
pub async fn create_claim(iot: &aws_sdk_iot::Client, template: &str, dir: &Path) -> Result<ClaimFiles, ProvisionError> {
    let out =
        iot.create_provisioning_claim().template_name(template).send().await.map_err(aws("CreateProvisioningClaim"))?;
    let pem = out
        .certificate_pem()
        .ok_or_else(|| ProvisionError::unexpected("CreateProvisioningClaim", "no certificatePem"))?;
    let key = out
        .key_pair()
        .and_then(|k| k.private_key())
        .ok_or_else(|| ProvisionError::unexpected("CreateProvisioningClaim", "no keyPair"))?;
    std::fs::create_dir_all(dir).map_err(ProvisionError::file(dir))?;
    let files = ClaimFiles {
        certificate: dir.join("claim.pem.crt"),
        private_key: dir.join("claim.private.pem.key"),
        certificate_id: out.certificate_id().unwrap_or_default().to_owned(),
        expires_epoch_secs: out.expiration().map(|t| t.secs()),
    };
    crate::output::write_atomic(&files.certificate, pem.as_bytes(), 0o644)?;
    crate::output::write_atomic(&files.private_key, key.as_bytes(), 0o600)?;
    Ok(files)
}

/// Makes sure the IoT policies the template attaches to a fleet's cores exist: the shipped core
/// policy as `core_policy` and the Greengrass deployments policy as `deployments_policy`, both
/// rendered for the account and Region of `account_arn` (any ARN of the account, such as the
/// thing group's). Both are thing-scoped with policy variables, so one of each serves every
/// core. Returns what changed.
pub async fn ensure_core_policies(
    iot: &aws_sdk_iot::Client,
    account_arn: &str,
    core_policy: &str,
    deployments_policy: &str,
) -> Result<Vec<crate::Change>, ProvisionError> {
    validate_policy_name(core_policy)?;
    validate_policy_name(deployments_policy)?;
    let scope = crate::policy::AccountScope::from_arn(account_arn)
        .ok_or_else(|| ProvisionError::InvalidInput(format!("{account_arn:?} is not an ARN")))?;
    let mut changes = Vec::new();
    let core = crate::PolicySource::shipped().render(&scope, false)?;
    crate::device::ensure_policy(iot, core_policy, &core, &mut changes).await?;
    let deployments = crate::PolicySource::greengrass_deployments().render(&scope, false)?;
    crate::device::ensure_policy(iot, deployments_policy, &deployments, &mut changes).await?;
    Ok(changes)
}

/// Creates or updates the shipped certificate-rotation policy under `name`
/// ([`crate::policy::CERTIFICATE_ROTATION_POLICY`], rendered for the account of `account_arn`),
/// for a template whose cores rotate their certificates.
pub async fn ensure_rotation_policy(
    iot: &aws_sdk_iot::Client,
    account_arn: &str,
    name: &str,
) -> Result<Vec<crate::Change>, ProvisionError> {
    validate_policy_name(name)?;
    let scope = crate::policy::AccountScope::from_arn(account_arn)
        .ok_or_else(|| ProvisionError::InvalidInput(format!("{account_arn:?} is not an ARN")))?;
    let mut changes = Vec::new();
    let rotation = crate::PolicySource::certificate_rotation().render(&scope, false)?;
    crate::device::ensure_policy(iot, name, &rotation, &mut changes).await?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TemplateSpec {
        TemplateSpec {
            template_name: "PumpStationCores".into(),
            role_name: "PumpStationProvisioning".into(),
            thing_groups: vec!["pump-stations".into()],
            policies: vec!["PumpCorePolicy".into(), "GreengrassCoreDeployments".into()],
        }
    }

    #[test]
    fn the_template_names_the_thing_from_its_parameter_joins_the_groups_and_attaches_every_policy() {
        let body: Value = serde_json::from_str(&template_body(&spec())).unwrap();
        assert_eq!(body["Parameters"]["ThingName"]["Type"], "String");
        let r = &body["Resources"];
        assert_eq!(r["thing"]["Properties"]["ThingName"], json!({"Ref": "ThingName"}));
        assert_eq!(r["thing"]["Properties"]["ThingGroups"], json!(["pump-stations"]));
        assert_eq!(r["certificate"]["Properties"]["Status"], "ACTIVE");
        assert_eq!(r["certificate"]["Properties"]["CertificateId"], json!({"Ref": "AWS::IoT::Certificate::Id"}));
        assert_eq!(r["policy0"]["Properties"]["PolicyName"], "PumpCorePolicy");
        assert_eq!(r["policy1"]["Properties"]["PolicyName"], "GreengrassCoreDeployments");
        assert_eq!(r.as_object().unwrap().len(), 4);
    }

    #[test]
    fn bad_names_are_refused_before_any_request() {
        for bad in [
            TemplateSpec { template_name: "has space".into(), ..spec() },
            TemplateSpec { template_name: "x".repeat(37), ..spec() },
            TemplateSpec { role_name: String::new(), ..spec() },
            TemplateSpec { thing_groups: vec!["a/b".into()], ..spec() },
            TemplateSpec { policies: vec!["no spaces allowed".into()], ..spec() },
        ] {
            let e = validate(&bad).unwrap_err();
            assert!(matches!(e, ProvisionError::InvalidInput(_)), "{bad:?}: {e}");
        }
        validate(&spec()).unwrap();
    }

    #[test]
    fn only_aws_iot_may_assume_the_provisioning_role() {
        let trust: Value = serde_json::from_str(&trust_policy()).unwrap();
        assert_eq!(trust["Statement"][0]["Principal"], json!({"Service": "iot.amazonaws.com"}));
        let role: Value = serde_json::from_str(&role_policy()).unwrap();
        let actions = role["Statement"][0]["Action"].as_array().unwrap();
        assert!(actions.iter().all(|a| a.as_str().unwrap().starts_with("iot:")), "{actions:?}");
    }
}
