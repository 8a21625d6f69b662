//! Provisioning and deprovisioning a core device through `aws-sdk-iot`.
//!
//! Every step first looks at what exists and changes only what differs, so a re-run with the same
//! inputs succeeds and changes nothing (see [`provision_core_device`] for the certificate rule).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_iot::Client;
use aws_sdk_iot::types::CertificateStatus;
use cloud_api::endpoints::Endpoints;

use crate::error::{ProvisionError, aws, is_code};
use crate::identity::{key_matches_certificate, new_identity};
use crate::output::{OutputFiles, Record, write_atomic, write_json};
use crate::policy::{AccountScope, PolicySource, RenderedPolicy, VersionInfo, version_to_prune};

/// The policy name used when the caller names none. One policy serves every pump core: it is
/// scoped by `${iot:Connection.Thing.ThingName}`, not by name.
pub const DEFAULT_POLICY_NAME: &str = "PumpCoreDevicePolicy";

/// The name of the Greengrass deployments policy (`policies/greengrass-core-deployments.json`)
/// when it is attached; one policy serves every core, scoped by policy variables.
pub const DEFAULT_DEPLOYMENTS_POLICY_NAME: &str = "GreengrassCoreDeploymentsPolicy";

/// The name [`crate::fleet::ensure_rotation_policy`] gives the shipped certificate-rotation
/// additions ([`crate::policy::CERTIFICATE_ROTATION_POLICY`]).
pub const DEFAULT_ROTATION_POLICY_NAME: &str = "PumpCoreRotationPolicy";

/// IoT Core's MQTT over TLS port.
pub const DEFAULT_MQTT_PORT: u16 = 8883;

/// What to provision.
#[derive(Debug, Clone)]
pub struct CoreDeviceSpec {
    /// Thing name, also the core's MQTT client id: `[a-zA-Z0-9:_-]{1,128}`.
    pub thing_name: String,
    /// Where the certificate, key, `endpoints.json` and `provisioned.json` go.
    pub out_dir: PathBuf,
    /// The IoT policy's name.
    pub policy_name: String,
    /// The IoT policy's document (a template; see [`crate::policy`]).
    pub policy: PolicySource,
    /// Accept a policy that the overly-permissive audit flags.
    pub allow_permissive_policy: bool,
    /// The root CA file devices trust for the MQTT endpoint (Amazon Root CA 1, or the local cloud's CA).
    pub root_ca: PathBuf,
    /// Port added to the host DescribeEndpoint returns (it returns the host only).
    pub mqtt_port: u16,
    /// Base URL of the IoT data plane for `endpoints.json`; `None`: `https://` + the endpoint host.
    pub data_plane_url: Option<String>,
    /// Issue a new certificate even when the output directory's one is still valid (rotation).
    pub rotate_certificate: bool,
    /// Also create and attach the Greengrass deployments policy under this name
    /// ([`crate::policy::PolicySource::greengrass_deployments`]: the deployment jobs and shadow,
    /// fleet status, the Greengrass data plane), so the core takes cloud deployments.
    pub deployments_policy: Option<String>,
    /// The Greengrass data plane the core calls, for `endpoints.json`; `None`: AWS's
    /// `https://greengrass-ats.iot.{region}.amazonaws.com:8443` when [`Self::deployments_policy`]
    /// is set, else nothing.
    pub greengrass_data_plane_url: Option<String>,
    /// The AWS IoT credentials provider for endpoints.json (`credentialsProvider`, what the
    /// core's token exchange service asks); default: `https://` and DescribeEndpoint
    /// `iot:CredentialProvider` (the local cloud's, with its port, is the `credentialsProvider`
    /// entry of its own endpoints.json).
    pub credentials_provider_url: Option<String>,
}

impl CoreDeviceSpec {
    /// A spec with the shipped policy, [`DEFAULT_POLICY_NAME`] and port 8883.
    pub fn new(thing_name: impl Into<String>, out_dir: impl Into<PathBuf>, root_ca: impl Into<PathBuf>) -> Self {
        CoreDeviceSpec {
            thing_name: thing_name.into(),
            out_dir: out_dir.into(),
            policy_name: DEFAULT_POLICY_NAME.into(),
            policy: PolicySource::shipped(),
            allow_permissive_policy: false,
            root_ca: root_ca.into(),
            mqtt_port: DEFAULT_MQTT_PORT,
            data_plane_url: None,
            rotate_certificate: false,
            deployments_policy: None,
            greengrass_data_plane_url: None,
            credentials_provider_url: None,
        }
    }
}

/// One change made in the cloud (or, for [`Change::PolicyKept`], deliberately not made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// UpdateCertificate REVOKED (device replacement).
    CertificateRevoked(String),
    /// CreateThing.
    ThingCreated(String),
    /// CreatePolicy; the version id.
    PolicyCreated {
        /// Policy name.
        name: String,
        /// Its first version.
        version: String,
    },
    /// CreatePolicyVersion as the new default.
    PolicyVersionCreated {
        /// Policy name.
        name: String,
        /// The new default version.
        version: String,
    },
    /// DeletePolicyVersion, to stay within IoT Core's five versions.
    PolicyVersionDeleted {
        /// Policy name.
        name: String,
        /// The deleted version.
        version: String,
    },
    /// CreateCertificateFromCsr (ACTIVE).
    CertificateCreated(String),
    /// AttachThingPrincipal.
    CertificateAttachedToThing(String),
    /// AttachPolicy.
    PolicyAttached {
        /// Policy name.
        policy: String,
        /// Certificate id.
        certificate: String,
    },
    /// DetachPolicy.
    PolicyDetached {
        /// Policy name.
        policy: String,
        /// Certificate id.
        certificate: String,
    },
    /// DetachThingPrincipal.
    PrincipalDetachedFromThing(String),
    /// UpdateCertificate to INACTIVE.
    CertificateDeactivated(String),
    /// DeleteCertificate.
    CertificateDeleted(String),
    /// The certificate is INACTIVE but could not be deleted (still attached elsewhere).
    CertificateLeftInactive {
        /// Certificate id.
        certificate: String,
        /// Why it was not deleted.
        reason: String,
    },
    /// DeleteThing.
    ThingDeleted(String),
    /// DeletePolicy.
    PolicyDeleted(String),
    /// The policy was not deleted.
    PolicyKept {
        /// Policy name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::ThingCreated(t) => write!(f, "created thing {t}"),
            Change::PolicyCreated { name, version } => write!(f, "created policy {name} (version {version})"),
            Change::PolicyVersionCreated { name, version } => {
                write!(f, "created policy version {name}/{version} as the default")
            }
            Change::PolicyVersionDeleted { name, version } => write!(f, "deleted old policy version {name}/{version}"),
            Change::CertificateCreated(c) => write!(f, "created certificate {c} from a local CSR (ACTIVE)"),
            Change::CertificateAttachedToThing(c) => write!(f, "attached certificate {c} to the thing"),
            Change::PolicyAttached { policy, certificate } => {
                write!(f, "attached policy {policy} to certificate {certificate}")
            }
            Change::PolicyDetached { policy, certificate } => {
                write!(f, "detached policy {policy} from certificate {certificate}")
            }
            Change::PrincipalDetachedFromThing(p) => write!(f, "detached {p} from the thing"),
            Change::CertificateDeactivated(c) => write!(f, "set certificate {c} INACTIVE"),
            Change::CertificateDeleted(c) => write!(f, "deleted certificate {c}"),
            Change::CertificateLeftInactive { certificate, reason } => {
                write!(f, "left certificate {certificate} INACTIVE, not deleted: {reason}")
            }
            Change::ThingDeleted(t) => write!(f, "deleted thing {t}"),
            Change::CertificateRevoked(c) => write!(f, "revoked certificate {c}"),
            Change::PolicyDeleted(p) => write!(f, "deleted policy {p}"),
            Change::PolicyKept { name, reason } => write!(f, "kept policy {name}: {reason}"),
        }
    }
}

/// What [`provision_core_device`] produced.
#[derive(Debug, Clone)]
pub struct ProvisionedDevice {
    /// The record written to `provisioned.json`.
    pub record: Record,
    /// The endpoints written to `endpoints.json`.
    pub endpoints: Endpoints,
    /// The output files.
    pub files: OutputFiles,
    /// What this run changed in the cloud, in order; empty when everything already matched.
    pub changes: Vec<Change>,
    /// Audit findings of a permissive policy the caller allowed (empty otherwise).
    pub policy_findings: Vec<String>,
}

/// What [`deprovision`] did.
#[derive(Debug, Clone, Default)]
pub struct Deprovisioned {
    /// Whether the thing existed.
    pub thing_existed: bool,
    /// What changed, in order.
    pub changes: Vec<Change>,
}

/// Checks a thing name against IoT Core's pattern `[a-zA-Z0-9:_-]+`, 1–128 characters.
pub fn validate_thing_name(name: &str) -> Result<(), ProvisionError> {
    let ok = (1..=128).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ProvisionError::InvalidInput(format!(
            "thing name {name:?} is not valid: 1 to 128 of the characters a-z A-Z 0-9 : _ -"
        )))
    }
}

/// Checks a policy name against IoT Core's pattern `[\w+=,.@-]+`, 1–128 characters.
pub fn validate_policy_name(name: &str) -> Result<(), ProvisionError> {
    if cloud_api::policy::is_valid_policy_name(name) {
        Ok(())
    } else {
        Err(ProvisionError::InvalidInput(format!(
            "policy name {name:?} is not valid: 1 to 128 of the characters a-z A-Z 0-9 _ + = , . @ -"
        )))
    }
}

/// Provisions the core device: thing, policy, a key pair made here with a certificate issued from
/// its CSR, the attachments, and the output directory.
///
/// Certificates: a re-run **reuses** the output directory's certificate when its record names the
/// same thing, the key matches the certificate, and IoT Core still has that certificate ACTIVE and
/// attached to the thing. Otherwise (or with [`CoreDeviceSpec::rotate_certificate`]) it issues a new
/// one and retires every other certificate attached to the thing, and the one the old record names:
/// policies detached, detached from the thing, set INACTIVE, deleted.
pub async fn provision_core_device(
    client: &Client,
    spec: &CoreDeviceSpec,
) -> Result<ProvisionedDevice, ProvisionError> {
    // Everything that can be checked locally is checked before the first request.
    validate_thing_name(&spec.thing_name)?;
    validate_policy_name(&spec.policy_name)?;
    if spec.mqtt_port == 0 {
        return Err(ProvisionError::InvalidInput("the MQTT port must not be 0".into()));
    }
    let root_ca = check_root_ca(&spec.root_ca)?;
    let region = client.config().region().map(|r| r.to_string()).ok_or_else(|| {
        ProvisionError::InvalidInput("no region: set AWS_REGION, a profile region, or --region".into())
    })?;
    spec.policy.render(&AccountScope::provisional(&region), spec.allow_permissive_policy)?;
    if let Some(name) = &spec.deployments_policy {
        validate_policy_name(name)?;
        PolicySource::greengrass_deployments().render(&AccountScope::provisional(&region), false)?;
    }
    let files = OutputFiles::new(&spec.out_dir);
    files.create_dir()?;
    let previous = files.read_record()?;
    if let Some(prev) = &previous
        && prev.thing_name != spec.thing_name
    {
        return Err(ProvisionError::InvalidInput(format!(
            "{} holds the identity of thing {:?}, not {:?}: use another output directory",
            files.dir.display(),
            prev.thing_name,
            spec.thing_name
        )));
    }

    let mut changes = Vec::new();
    let thing = &spec.thing_name;
    let thing_arn = ensure_thing(client, thing, &mut changes).await?;
    let scope = AccountScope::from_arn(&thing_arn)
        .ok_or_else(|| ProvisionError::unexpected("CreateThing", format!("thing ARN {thing_arn:?} is not an ARN")))?;
    let policy = spec.policy.render(&scope, spec.allow_permissive_policy)?;
    let policy_version_id = ensure_policy(client, &spec.policy_name, &policy, &mut changes).await?;

    let principals = list_thing_principals(client, thing).await?;
    let reusable = match &previous {
        Some(prev) if !spec.rotate_certificate => reusable_certificate(client, &files, prev, &principals).await?,
        _ => None,
    };
    let (certificate_id, certificate_arn) = match reusable {
        Some(ids) => ids,
        None => issue_certificate(client, thing, &files, &mut changes).await?,
    };
    ensure_policy_attached(client, &spec.policy_name, &certificate_id, &certificate_arn, &mut changes).await?;
    if let Some(name) = &spec.deployments_policy {
        let deployments = PolicySource::greengrass_deployments().render(&scope, false)?;
        ensure_policy(client, name, &deployments, &mut changes).await?;
        ensure_policy_attached(client, name, &certificate_id, &certificate_arn, &mut changes).await?;
    }

    let mut old: Vec<String> = principals.into_iter().filter(|p| is_certificate(p) && *p != certificate_arn).collect();
    if let Some(prev) = &previous
        && prev.certificate_arn != certificate_arn
        && !old.contains(&prev.certificate_arn)
    {
        old.push(prev.certificate_arn.clone());
    }
    for arn in &old {
        retire_certificate(client, thing, arn, &mut changes).await?;
    }

    let host = client
        .describe_endpoint()
        .endpoint_type("iot:Data-ATS")
        .send()
        .await
        .map_err(aws("DescribeEndpoint"))?
        .endpoint_address()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ProvisionError::unexpected("DescribeEndpoint", "no endpointAddress"))?
        .to_owned();
    let host_in_url = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let credentials_provider = match &spec.credentials_provider_url {
        Some(url) => url.clone(),
        None => {
            let described = client
                .describe_endpoint()
                .endpoint_type("iot:CredentialProvider")
                .send()
                .await
                .map_err(aws("DescribeEndpoint"))?;
            let host = described
                .endpoint_address()
                .filter(|h| !h.is_empty())
                .ok_or_else(|| ProvisionError::unexpected("DescribeEndpoint", "no endpointAddress"))?;
            format!("https://{host}")
        }
    };
    let endpoints = Endpoints {
        mqtt: format!("{host_in_url}:{}", spec.mqtt_port),
        http: spec.data_plane_url.clone().unwrap_or_else(|| format!("https://{host_in_url}")),
        ca_file: root_ca,
        region: scope.region.clone(),
        account_id: scope.account_id.clone(),
        credentials: None,
        greengrass_data_plane: spec.greengrass_data_plane_url.clone().or_else(|| {
            spec.deployments_policy
                .as_ref()
                .map(|_| format!("https://greengrass-ats.iot.{}.amazonaws.com:8443", scope.region))
        }),
        credentials_provider: Some(credentials_provider),
    };
    write_json(&files.endpoints, &endpoints)?;
    let record = Record {
        thing_name: thing.clone(),
        thing_arn,
        certificate_id,
        certificate_arn,
        policy_name: spec.policy_name.clone(),
        policy_version_id,
    };
    // Written last: a record names only resources that a completed run set up.
    write_json(&files.record, &record)?;
    Ok(ProvisionedDevice { record, endpoints, files, changes, policy_findings: policy.findings })
}

/// Removes a device: every certificate attached to the thing is detached from its policies and the
/// thing, set INACTIVE and deleted; other principals are detached; the thing is deleted; the policy
/// `policy_name` is deleted only when nothing else uses it. A missing thing is not an error.
pub async fn deprovision(client: &Client, thing: &str, policy_name: &str) -> Result<Deprovisioned, ProvisionError> {
    validate_thing_name(thing)?;
    validate_policy_name(policy_name)?;
    let mut out = Deprovisioned::default();
    let described = client.describe_thing().thing_name(thing).send().await.map_err(aws("DescribeThing"));
    if is_code(&described, "ResourceNotFoundException") {
        delete_policy_if_unused(client, policy_name, &mut out.changes).await?;
        return Ok(out);
    }
    described?;
    out.thing_existed = true;
    for principal in list_thing_principals(client, thing).await? {
        if is_certificate(&principal) {
            retire_certificate(client, thing, &principal, &mut out.changes).await?;
        } else {
            detach_from_thing(client, thing, &principal, &mut out.changes).await?;
        }
    }
    let deleted = client.delete_thing().thing_name(thing).send().await.map_err(aws("DeleteThing"));
    if !is_code(&deleted, "ResourceNotFoundException") {
        deleted?;
        out.changes.push(Change::ThingDeleted(thing.to_owned()));
    }
    delete_policy_if_unused(client, policy_name, &mut out.changes).await?;
    Ok(out)
}

/// Replaces a failed device and keeps its place: every certificate of `thing` is REVOKED (the old
/// hardware may be in anyone's hands), its policies detached and detached from the thing; the
/// thing stays — its name, attributes, thing groups (so their deployments), shadows and job
/// history — for the replacement to onboard under the same name (by claim, through a template
/// whose thing name it resolves to, or with `provision core`). Returns the changes; a thing
/// without certificates changes nothing.
pub async fn replace_device(client: &Client, thing: &str) -> Result<Vec<Change>, ProvisionError> {
    validate_thing_name(thing)?;
    client.describe_thing().thing_name(thing).send().await.map_err(aws("DescribeThing"))?;
    let mut changes = Vec::new();
    for principal in list_thing_principals(client, thing).await?.into_iter().filter(|p| is_certificate(p)) {
        let id = certificate_id(&principal).to_owned();
        let revoked = client
            .update_certificate()
            .certificate_id(&id)
            .new_status(CertificateStatus::Revoked)
            .send()
            .await
            .map_err(aws("UpdateCertificate"));
        if !is_code(&revoked, "ResourceNotFoundException") {
            revoked?;
            changes.push(Change::CertificateRevoked(id.clone()));
        }
        for policy in list_attached_policies(client, &principal).await? {
            client.detach_policy().policy_name(&policy).target(&principal).send().await.map_err(aws("DetachPolicy"))?;
            changes.push(Change::PolicyDetached { policy, certificate: id.clone() });
        }
        detach_from_thing(client, thing, &principal, &mut changes).await?;
    }
    Ok(changes)
}

/// The root CA as an absolute path, after checking it holds at least one PEM certificate.
fn check_root_ca(path: &Path) -> Result<PathBuf, ProvisionError> {
    let pem = std::fs::read(path).map_err(ProvisionError::file(path))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice()).filter_map(Result::ok).count();
    if certs == 0 {
        return Err(ProvisionError::BadFile {
            path: path.to_path_buf(),
            reason: "no PEM certificate in the root CA file".into(),
        });
    }
    std::fs::canonicalize(path).map_err(ProvisionError::file(path))
}

pub(crate) fn is_certificate(principal: &str) -> bool {
    principal.starts_with("arn:") && principal.contains(":cert/")
}

pub(crate) fn certificate_id(arn: &str) -> &str {
    arn.rsplit_once(":cert/").map_or(arn, |(_, id)| id)
}

async fn ensure_thing(client: &Client, thing: &str, changes: &mut Vec<Change>) -> Result<String, ProvisionError> {
    let described = client.describe_thing().thing_name(thing).send().await.map_err(aws("DescribeThing"));
    if !is_code(&described, "ResourceNotFoundException") {
        return described?
            .thing_arn()
            .map(str::to_owned)
            .ok_or_else(|| ProvisionError::unexpected("DescribeThing", "no thingArn"));
    }
    let created = client.create_thing().thing_name(thing).send().await.map_err(aws("CreateThing"))?;
    changes.push(Change::ThingCreated(thing.to_owned()));
    created.thing_arn().map(str::to_owned).ok_or_else(|| ProvisionError::unexpected("CreateThing", "no thingArn"))
}

/// Makes the policy say `policy`; returns its default version id.
pub(crate) async fn ensure_policy(
    client: &Client,
    name: &str,
    policy: &RenderedPolicy,
    changes: &mut Vec<Change>,
) -> Result<String, ProvisionError> {
    let got = client.get_policy().policy_name(name).send().await.map_err(aws("GetPolicy"));
    if is_code(&got, "ResourceNotFoundException") {
        let created = client
            .create_policy()
            .policy_name(name)
            .policy_document(&policy.document)
            .send()
            .await
            .map_err(aws("CreatePolicy"))?;
        let version = created.policy_version_id().unwrap_or("1").to_owned();
        changes.push(Change::PolicyCreated { name: name.into(), version: version.clone() });
        return Ok(version);
    }
    let got = got?;
    let default_version = got.default_version_id().unwrap_or("1").to_owned();
    if got.policy_document().is_some_and(|d| policy.same_as(d)) {
        return Ok(default_version);
    }
    let listed = client.list_policy_versions().policy_name(name).send().await.map_err(aws("ListPolicyVersions"))?;
    let versions: Vec<VersionInfo> = listed
        .policy_versions()
        .iter()
        .map(|v| VersionInfo {
            id: v.version_id().unwrap_or_default().to_owned(),
            is_default: v.is_default_version(),
            created: v.create_date().map_or(0, |d| d.secs()),
        })
        .collect();
    if let Some(prune) = version_to_prune(&versions) {
        client
            .delete_policy_version()
            .policy_name(name)
            .policy_version_id(&prune.id)
            .send()
            .await
            .map_err(aws("DeletePolicyVersion"))?;
        changes.push(Change::PolicyVersionDeleted { name: name.into(), version: prune.id.clone() });
    }
    let created = client
        .create_policy_version()
        .policy_name(name)
        .policy_document(&policy.document)
        .set_as_default(true)
        .send()
        .await
        .map_err(aws("CreatePolicyVersion"))?;
    let version = created
        .policy_version_id()
        .map(str::to_owned)
        .ok_or_else(|| ProvisionError::unexpected("CreatePolicyVersion", "no policyVersionId"))?;
    changes.push(Change::PolicyVersionCreated { name: name.into(), version: version.clone() });
    Ok(version)
}

/// The things of `group` and of its child groups (ListThingsInThingGroup, recursive, every page).
pub(crate) async fn things_in_group(client: &Client, group: &str) -> Result<Vec<String>, ProvisionError> {
    client
        .list_things_in_thing_group()
        .thing_group_name(group)
        .recursive(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .map_err(aws("ListThingsInThingGroup"))
}

pub(crate) async fn list_thing_principals(client: &Client, thing: &str) -> Result<Vec<String>, ProvisionError> {
    let mut principals = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_thing_principals()
            .thing_name(thing)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(aws("ListThingPrincipals"))?;
        principals.extend(page.principals().iter().cloned());
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => return Ok(principals),
        }
    }
}

pub(crate) async fn list_attached_policies(client: &Client, target: &str) -> Result<Vec<String>, ProvisionError> {
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = client
            .list_attached_policies()
            .target(target)
            .set_marker(marker.take())
            .send()
            .await
            .map_err(aws("ListAttachedPolicies"))?;
        names.extend(page.policies().iter().filter_map(|p| p.policy_name()).map(str::to_owned));
        match page.next_marker() {
            Some(m) if !m.is_empty() => marker = Some(m.to_owned()),
            _ => return Ok(names),
        }
    }
}

/// The previous run's certificate, if it can still be used as it is.
async fn reusable_certificate(
    client: &Client,
    files: &OutputFiles,
    previous: &Record,
    principals: &[String],
) -> Result<Option<(String, String)>, ProvisionError> {
    let Some((cert_pem, key_pem)) = files.read_identity() else { return Ok(None) };
    if !key_matches_certificate(&cert_pem, &key_pem) || !principals.contains(&previous.certificate_arn) {
        return Ok(None);
    }
    let described = client
        .describe_certificate()
        .certificate_id(&previous.certificate_id)
        .send()
        .await
        .map_err(aws("DescribeCertificate"));
    if is_code(&described, "ResourceNotFoundException") {
        return Ok(None);
    }
    let described = described?;
    let Some(description) = described.certificate_description() else { return Ok(None) };
    let active = description.status() == Some(&CertificateStatus::Active);
    let same_pem = description.certificate_pem().is_some_and(|p| p.trim() == cert_pem.trim());
    Ok((active && same_pem).then(|| (previous.certificate_id.clone(), previous.certificate_arn.clone())))
}

/// A new key pair here, a certificate for it from IoT Core, attached to the thing, written out.
async fn issue_certificate(
    client: &Client,
    thing: &str,
    files: &OutputFiles,
    changes: &mut Vec<Change>,
) -> Result<(String, String), ProvisionError> {
    let identity = new_identity(thing)?;
    let created = client
        .create_certificate_from_csr()
        .certificate_signing_request(&identity.csr_pem)
        .set_as_active(true)
        .send()
        .await
        .map_err(aws("CreateCertificateFromCsr"))?;
    let missing = |what: &str| ProvisionError::unexpected("CreateCertificateFromCsr", format!("no {what}"));
    let id = created.certificate_id().ok_or_else(|| missing("certificateId"))?.to_owned();
    let arn = created.certificate_arn().ok_or_else(|| missing("certificateArn"))?.to_owned();
    let pem = created.certificate_pem().ok_or_else(|| missing("certificatePem"))?.to_owned();
    changes.push(Change::CertificateCreated(id.clone()));
    // Attached before the files are written: if writing fails, the next run finds this certificate
    // on the thing and retires it, so no ACTIVE certificate is left behind unaccounted for.
    client
        .attach_thing_principal()
        .thing_name(thing)
        .principal(&arn)
        .send()
        .await
        .map_err(aws("AttachThingPrincipal"))?;
    changes.push(Change::CertificateAttachedToThing(id.clone()));
    write_atomic(&files.private_key, identity.key_pem.as_bytes(), 0o600)?;
    write_atomic(&files.certificate, pem.as_bytes(), 0o644)?;
    Ok((id, arn))
}

pub(crate) async fn ensure_policy_attached(
    client: &Client,
    policy: &str,
    certificate_id: &str,
    certificate_arn: &str,
    changes: &mut Vec<Change>,
) -> Result<(), ProvisionError> {
    if list_attached_policies(client, certificate_arn).await?.iter().any(|p| p == policy) {
        return Ok(());
    }
    client.attach_policy().policy_name(policy).target(certificate_arn).send().await.map_err(aws("AttachPolicy"))?;
    changes.push(Change::PolicyAttached { policy: policy.into(), certificate: certificate_id.into() });
    Ok(())
}

async fn detach_from_thing(
    client: &Client,
    thing: &str,
    principal: &str,
    changes: &mut Vec<Change>,
) -> Result<(), ProvisionError> {
    let detached = client
        .detach_thing_principal()
        .thing_name(thing)
        .principal(principal)
        .send()
        .await
        .map_err(aws("DetachThingPrincipal"));
    if !is_code(&detached, "ResourceNotFoundException") {
        detached?;
        changes.push(Change::PrincipalDetachedFromThing(principal.to_owned()));
    }
    Ok(())
}

/// Detaches the certificate's policies and the thing, sets it INACTIVE, deletes it. A certificate
/// that is already gone is skipped.
pub(crate) async fn retire_certificate(
    client: &Client,
    thing: &str,
    arn: &str,
    changes: &mut Vec<Change>,
) -> Result<(), ProvisionError> {
    let id = certificate_id(arn).to_owned();
    let policies = match list_attached_policies(client, arn).await {
        Err(e) if e.aws_code() == Some("ResourceNotFoundException") => Vec::new(),
        other => other?,
    };
    for policy in policies {
        let detached =
            client.detach_policy().policy_name(&policy).target(arn).send().await.map_err(aws("DetachPolicy"));
        if !is_code(&detached, "ResourceNotFoundException") {
            detached?;
            changes.push(Change::PolicyDetached { policy, certificate: id.clone() });
        }
    }
    detach_from_thing(client, thing, arn, changes).await?;
    let updated = client
        .update_certificate()
        .certificate_id(&id)
        .new_status(CertificateStatus::Inactive)
        .send()
        .await
        .map_err(aws("UpdateCertificate"));
    if is_code(&updated, "ResourceNotFoundException") {
        return Ok(());
    }
    // A REVOKED certificate cannot change status; it cannot connect either, so go on and delete it.
    if !is_code(&updated, "CertificateStateException") {
        updated?;
        changes.push(Change::CertificateDeactivated(id.clone()));
    }
    // IoT Core detaches principals asynchronously: DeleteCertificate may still see the thing for a
    // few seconds. Bounded retries; what is still attached after them stays INACTIVE.
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=4 {
        let deleted = client.delete_certificate().certificate_id(&id).send().await.map_err(aws("DeleteCertificate"));
        match deleted {
            Ok(_) => {
                changes.push(Change::CertificateDeleted(id));
                return Ok(());
            }
            Err(e) if e.aws_code() == Some("ResourceNotFoundException") => return Ok(()),
            Err(ProvisionError::Aws { code, message, .. })
                if code == "DeleteConflictException" || code == "CertificateStateException" =>
            {
                if attempt == 4 {
                    changes.push(Change::CertificateLeftInactive { certificate: id, reason: message });
                    return Ok(());
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deletes the policy unless it is still attached somewhere. Non-default versions block
/// DeletePolicy on AWS, so they are deleted first when the policy is otherwise free.
async fn delete_policy_if_unused(client: &Client, name: &str, changes: &mut Vec<Change>) -> Result<(), ProvisionError> {
    let deleted = client.delete_policy().policy_name(name).send().await.map_err(aws("DeletePolicy"));
    let conflict = match deleted {
        Ok(_) => {
            changes.push(Change::PolicyDeleted(name.into()));
            return Ok(());
        }
        Err(e) if e.aws_code() == Some("ResourceNotFoundException") => return Ok(()),
        Err(ProvisionError::Aws { code, message, .. }) if code == "DeleteConflictException" => message,
        Err(e) => return Err(e),
    };
    let kept = |reason: String| Change::PolicyKept { name: name.into(), reason };
    // Either still attached, or old versions in the way: only the versions can be cleared.
    let Ok(listed) = client.list_policy_versions().policy_name(name).send().await else {
        changes.push(kept(conflict));
        return Ok(());
    };
    let old: Vec<String> = listed
        .policy_versions()
        .iter()
        .filter(|v| !v.is_default_version())
        .filter_map(|v| v.version_id().map(str::to_owned))
        .collect();
    if old.is_empty() {
        changes.push(kept(conflict));
        return Ok(());
    }
    for version in old {
        client
            .delete_policy_version()
            .policy_name(name)
            .policy_version_id(&version)
            .send()
            .await
            .map_err(aws("DeletePolicyVersion"))?;
        changes.push(Change::PolicyVersionDeleted { name: name.into(), version });
    }
    match client.delete_policy().policy_name(name).send().await.map_err(aws("DeletePolicy")) {
        Ok(_) => changes.push(Change::PolicyDeleted(name.into())),
        Err(ProvisionError::Aws { code, message, .. }) if code == "DeleteConflictException" => {
            changes.push(kept(message))
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thing_names_follow_iot_cores_pattern() {
        for ok in ["pump-core-1", "a", "Site_7:core", &"x".repeat(128)] {
            validate_thing_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "has space", "slash/name", "ümlaut", "wild+card", &"x".repeat(129)] {
            let err = validate_thing_name(bad).expect_err(bad);
            assert!(err.to_string().contains("thing name"), "{err}");
        }
    }

    #[test]
    fn policy_names_follow_iot_cores_pattern() {
        validate_policy_name("PumpCoreDevicePolicy").unwrap();
        validate_policy_name("a.b@c=d,e+f-g_h").unwrap();
        assert!(validate_policy_name("bad/name").is_err());
        assert!(validate_policy_name("").is_err());
    }

    #[test]
    fn certificate_ids_come_from_certificate_arns() {
        assert_eq!(certificate_id("arn:aws:iot:us-east-1:000000000000:cert/abc123"), "abc123");
        assert!(is_certificate("arn:aws:iot:us-east-1:000000000000:cert/abc123"));
        assert!(!is_certificate("us-east-1:0c2b8e0e-cognito-identity"));
    }
}
