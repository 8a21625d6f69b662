//! The AWS IoT credentials provider: role aliases on the IoT control plane, and the endpoint
//! where a device trades its certificate for temporary AWS credentials of the aliased role
//! ("Authorizing direct calls to AWS services using AWS IoT Core credential provider").
//!
//! A request for credentials (`GET /role-aliases/{alias}/credentials` over mutual TLS, on the
//! same listener as the Greengrass data plane here) succeeds when the certificate is ACTIVE,
//! the thing named in `x-amzn-iot-thingname` (if any) is attached to it, the certificate's IoT
//! policies allow `iot:AssumeRoleWithCertificate` on the role alias, and the role trusts
//! `credentials.iot.amazonaws.com`. The credentials last the alias's
//! `credentialDurationSeconds` and carry the `credentials-iot:` policy variables.
//!
//! # Layout
//! - this file: role aliases (kept in `state.sqlite`) and issuing credentials;
//! - [`http`]: CreateRoleAlias, DescribeRoleAlias, ListRoleAliases, UpdateRoleAlias,
//!   DeleteRoleAlias (restJson1, `iot.json`), and the credentials endpoint.

pub mod http;

use std::sync::Arc;
use std::time::Duration;

use cloud_api::policy::{Action, CredentialsIot};
use serde::{Deserialize, Serialize};

use crate::iam::{Iam, Session};
use crate::registry::{AuthRequest, Registry};
use crate::store::{Store, StoreError};
use crate::time::SharedClock;

const K_ALIAS: &str = "role_alias";

/// Shortest and longest `credentialDurationSeconds`.
pub const DURATION_RANGE: std::ops::RangeInclusive<u32> = 900..=43200;

/// A role alias as DescribeRoleAlias reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RoleAlias {
    /// `roleAlias`.
    pub role_alias: String,
    /// `roleAliasArn`.
    pub role_alias_arn: String,
    /// `roleArn`.
    pub role_arn: String,
    /// `owner`: the account.
    pub owner: String,
    /// `credentialDurationSeconds`.
    pub credential_duration_seconds: u32,
    /// `creationDate`, epoch seconds.
    pub creation_date: u64,
    /// `lastModifiedDate`, epoch seconds.
    pub last_modified_date: u64,
}

/// Why a role-alias operation or a credentials request failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The request is malformed (400).
    #[error("{0}")]
    InvalidRequest(String),
    /// No such role alias (404).
    #[error("{0}")]
    NotFound(String),
    /// The alias exists already (409).
    #[error("{0}")]
    AlreadyExists(String),
    /// The certificate is not ACTIVE or unknown (credentials endpoint: 401).
    #[error("{0}")]
    Unauthorized(String),
    /// The certificate may not assume the role (credentials endpoint: 403).
    #[error("{0}")]
    Forbidden(String),
    /// State could not be read or written: retry.
    #[error("state: {0}")]
    Store(#[from] StoreError),
}

/// Role aliases and the credentials they give.
#[derive(Debug, Clone)]
pub struct IotCredentials {
    store: Store,
    clock: SharedClock,
    iam: Iam,
    registry: Arc<Registry>,
}

impl IotCredentials {
    /// The service over `store`, issuing sessions through `iam` for certificates of `registry`.
    pub fn new(store: Store, clock: SharedClock, iam: Iam, registry: Arc<Registry>) -> Self {
        IotCredentials { store, clock, iam, registry }
    }

    fn arn(&self, alias: &str) -> String {
        format!("arn:aws:iot:{}:{}:rolealias/{alias}", self.iam.region(), self.iam.account())
    }

    /// CreateRoleAlias.
    pub fn create(&self, alias: &str, role_arn: &str, duration: Option<u32>) -> Result<RoleAlias, CredentialsError> {
        check_alias(alias)?;
        let duration = self.check_duration(role_arn, duration.unwrap_or(3600))?;
        if self.store.get(K_ALIAS, alias)?.is_some() {
            return Err(CredentialsError::AlreadyExists(format!("Role alias {alias} already exists")));
        }
        let now = self.clock.now_secs();
        let record = RoleAlias {
            role_alias: alias.into(),
            role_alias_arn: self.arn(alias),
            role_arn: role_arn.into(),
            owner: self.iam.account().into(),
            credential_duration_seconds: duration,
            creation_date: now,
            last_modified_date: now,
        };
        self.save(&record)?;
        Ok(record)
    }

    /// DescribeRoleAlias.
    pub fn describe(&self, alias: &str) -> Result<RoleAlias, CredentialsError> {
        let text = self
            .store
            .get(K_ALIAS, alias)?
            .ok_or_else(|| CredentialsError::NotFound(format!("Role alias {alias} does not exist")))?;
        serde_json::from_str(&text)
            .map_err(|e| CredentialsError::InvalidRequest(format!("stored role alias {alias} is unreadable: {e}")))
    }

    /// ListRoleAliases: every alias, sorted by name.
    pub fn list(&self) -> Result<Vec<RoleAlias>, CredentialsError> {
        let mut all: Vec<RoleAlias> =
            self.store.all(K_ALIAS)?.into_iter().filter_map(|(_, t)| serde_json::from_str(&t).ok()).collect();
        all.sort_by(|a, b| a.role_alias.cmp(&b.role_alias));
        Ok(all)
    }

    /// UpdateRoleAlias.
    pub fn update(
        &self,
        alias: &str,
        role_arn: Option<&str>,
        duration: Option<u32>,
    ) -> Result<RoleAlias, CredentialsError> {
        let mut record = self.describe(alias)?;
        if let Some(arn) = role_arn {
            record.role_arn = arn.into();
        }
        if let Some(d) = duration {
            record.credential_duration_seconds = d;
        }
        record.credential_duration_seconds =
            self.check_duration(&record.role_arn, record.credential_duration_seconds)?;
        record.last_modified_date = self.clock.now_secs();
        self.save(&record)?;
        Ok(record)
    }

    /// DeleteRoleAlias.
    pub fn delete(&self, alias: &str) -> Result<(), CredentialsError> {
        self.describe(alias)?;
        self.store.delete(K_ALIAS, alias)?;
        Ok(())
    }

    fn save(&self, record: &RoleAlias) -> Result<(), CredentialsError> {
        let text = serde_json::to_string(record).map_err(|e| CredentialsError::InvalidRequest(e.to_string()))?;
        self.store.put(K_ALIAS, &record.role_alias, &text)?;
        Ok(())
    }

    /// Checks a role ARN's shape and the duration against AWS's range and, when the role
    /// exists, its maximum session duration.
    fn check_duration(&self, role_arn: &str, duration: u32) -> Result<u32, CredentialsError> {
        let shaped = role_arn.starts_with("arn:aws:iam::") && role_arn.contains(":role/") && role_arn.len() >= 20;
        if !shaped {
            return Err(CredentialsError::InvalidRequest(format!("roleArn {role_arn:?} is not an IAM role ARN")));
        }
        if !DURATION_RANGE.contains(&duration) {
            return Err(CredentialsError::InvalidRequest(format!(
                "credentialDurationSeconds {duration} must be between 900 and 43200"
            )));
        }
        if let Ok(role) = self.iam.role_by_arn(role_arn)
            && duration > role.max_session_duration
        {
            return Err(CredentialsError::InvalidRequest(format!(
                "credentialDurationSeconds {duration} is more than the role's maximum session duration ({})",
                role.max_session_duration
            )));
        }
        Ok(duration)
    }

    /// Issues credentials of `alias`'s role to the holder of `certificate_id`, optionally for
    /// the thing `thing_name` (which must be attached to the certificate).
    pub fn issue(
        &self,
        alias: &str,
        certificate_id: &str,
        thing_name: Option<&str>,
    ) -> Result<Session, CredentialsError> {
        let cert = self
            .registry
            .describe_certificate(certificate_id)
            .map_err(|_| CredentialsError::Unauthorized("The certificate is not registered".into()))?;
        if cert.status != crate::registry::CertificateStatus::Active {
            return Err(CredentialsError::Unauthorized(format!("The certificate is {}", cert.status.as_str())));
        }
        // Thing variables of the IoT policy resolve when the thing named is attached.
        let client_id = thing_name.unwrap_or(certificate_id);
        let ctx = self.registry.auth_context(certificate_id, client_id);
        if thing_name.is_some() && !ctx.is_attached {
            return Err(CredentialsError::Forbidden(format!(
                "The thing {client_id} is not attached to the certificate the request was made with"
            )));
        }
        let record = self.describe(alias)?;
        let resource = format!("rolealias/{alias}");
        let request =
            AuthRequest { certificate_id, client_id, action: Action::AssumeRoleWithCertificate, resource: &resource };
        if !self.registry.authorize(&request).is_allowed() {
            return Err(CredentialsError::Forbidden(format!(
                "The certificate's policies do not allow iot:AssumeRoleWithCertificate on {}",
                record.role_alias_arn
            )));
        }
        let role = self
            .iam
            .role_by_arn(&record.role_arn)
            .map_err(|e| CredentialsError::Forbidden(format!("The role alias's role cannot be assumed: {e}")))?;
        let vars = CredentialsIot {
            thing_name: thing_name.map(str::to_owned),
            thing_type_name: thing_name.and(ctx.thing_type_name.clone()),
            certificate_id: certificate_id.into(),
        };
        self.iam
            .issue_session(&role, Duration::from_secs(u64::from(record.credential_duration_seconds)), &vars)
            .map_err(|e| CredentialsError::Forbidden(format!("The role cannot be assumed: {e}")))
    }
}

fn check_alias(alias: &str) -> Result<(), CredentialsError> {
    let ok = (1..=128).contains(&alias.len())
        && alias.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'=' | b',' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CredentialsError::InvalidRequest(format!("roleAlias {alias:?} must be 1 to 128 characters of [\\w=,@-]")))
    }
}
