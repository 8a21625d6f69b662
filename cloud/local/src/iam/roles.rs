//! Roles, their inline policies, and the temporary credentials issued for them.
//!
//! A role is kept as one JSON record (`iam_role` kind of the store) holding its trust policy
//! and inline policies; a session (`iam_session`) is a temporary key pair with its session
//! token, the role it was issued for and the `credentials-iot:` values of the request that got
//! it. Sessions expire; an expired one is refused with AWS's `ExpiredToken` and swept on use.

use std::collections::BTreeMap;
use std::time::Duration;

use cloud_api::policy::{AuthContext, CredentialsIot, Decision, PolicyDocument};
use serde::{Deserialize, Serialize};

use crate::credentials::AccessKeyPair;
use crate::store::{Store, StoreError};
use crate::time::SharedClock;

const K_ROLE: &str = "iam_role";
const K_SESSION: &str = "iam_session";

/// The service principal the AWS IoT credentials provider assumes roles as.
pub const CREDENTIALS_PROVIDER_PRINCIPAL: &str = "credentials.iot.amazonaws.com";
/// The service principal of AWS IoT itself: the rules engine assumes its actions' roles as it,
/// and fleet provisioning a template's provisioning role (kept here, never assumed: the local
/// cloud registers devices itself).
pub const RULES_ENGINE_PRINCIPAL: &str = "iot.amazonaws.com";
/// The service principal Lambda assumes a function's execution role as.
pub const LAMBDA_PRINCIPAL: &str = "lambda.amazonaws.com";
/// The services that assume roles in the local cloud: a role's trust policy must name one.
pub const SERVICE_PRINCIPALS: [&str; 3] = [CREDENTIALS_PROVIDER_PRINCIPAL, RULES_ENGINE_PRINCIPAL, LAMBDA_PRINCIPAL];

/// Why an IAM operation failed; each is an IAM error code.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    /// `NoSuchEntity` (404).
    #[error("{0}")]
    NoSuchEntity(String),
    /// `EntityAlreadyExists` (409).
    #[error("{0}")]
    AlreadyExists(String),
    /// `MalformedPolicyDocument` (400).
    #[error("{0}")]
    MalformedPolicy(String),
    /// `ValidationError` (400).
    #[error("{0}")]
    Validation(String),
    /// `DeleteConflict` (409): the role still has policies.
    #[error("{0}")]
    DeleteConflict(String),
    /// State could not be read or written: retry.
    #[error("state: {0}")]
    Store(#[from] StoreError),
}

/// A role as IAM describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Role {
    /// `RoleName`.
    pub name: String,
    /// `RoleId` (`AROA…`).
    pub id: String,
    /// `Arn`: `arn:aws:iam::{account}:role{path}{name}`.
    pub arn: String,
    /// `Path` (`/` by default).
    pub path: String,
    /// `Description`.
    pub description: Option<String>,
    /// `AssumeRolePolicyDocument` (the trust policy), as given.
    pub assume_role_policy: String,
    /// `MaxSessionDuration` in seconds (3600 to 43200).
    pub max_session_duration: u32,
    /// `CreateDate`, milliseconds since the epoch.
    pub created_ms: u64,
    /// Inline policies by name, as given.
    pub policies: BTreeMap<String, String>,
}

/// Temporary credentials issued for a role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    /// `ASIA…`.
    pub access_key_id: String,
    /// The secret.
    pub secret_access_key: String,
    /// The session token, sent back as `x-amz-security-token`.
    pub session_token: String,
    /// The role.
    pub role_name: String,
    /// The session's name (the certificate id, for the credentials provider).
    pub session_name: String,
    /// When the credentials stop working, milliseconds since the epoch.
    pub expiration_ms: u64,
    /// The `credentials-iot:` values of the request that got them.
    pub thing_name: Option<String>,
    /// `credentials-iot:ThingTypeName`.
    pub thing_type_name: Option<String>,
    /// `credentials-iot:AwsCertificateId`.
    pub certificate_id: String,
}

/// Who a request comes from.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The administrator's key pair: everything is allowed.
    Admin,
    /// Temporary credentials of a role.
    Role(Box<RoleSession>),
}

/// A role session as it applies to one request.
#[derive(Debug, Clone)]
pub struct RoleSession {
    /// `arn:aws:sts::{account}:assumed-role/{role}/{session}`, as AWS names the caller.
    pub assumed_role_arn: String,
    /// The role's inline policies at the time of the request.
    pub policies: Vec<PolicyDocument>,
    /// The values of the policy variables.
    pub context: AuthContext,
}

impl RoleSession {
    /// Evaluates `action` on `resource` against the role's policies.
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        cloud_api::policy::evaluate_action(&self.policies, action, resource, &self.context)
    }
}

/// Why a request's credentials were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No such access key (`UnrecognizedClientException` / `InvalidClientTokenId`).
    UnknownKey,
    /// The session token is missing or wrong for temporary credentials.
    BadToken,
    /// The temporary credentials have expired (`ExpiredTokenException`).
    Expired,
}

/// The IAM service.
#[derive(Debug, Clone)]
pub struct Iam {
    store: Store,
    clock: SharedClock,
    admin: AccessKeyPair,
    region: String,
    account: String,
}

impl Iam {
    /// IAM over `store`; `admin` is the key pair that may do everything.
    pub fn new(store: Store, clock: SharedClock, admin: AccessKeyPair, region: &str, account: &str) -> Self {
        Iam { store, clock, admin, region: region.into(), account: account.into() }
    }

    /// The account id.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The region (of the ARNs other services build).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// CreateRole.
    pub fn create_role(
        &self,
        name: &str,
        path: Option<&str>,
        assume_role_policy: &str,
        description: Option<&str>,
        max_session_duration: Option<u32>,
    ) -> Result<Role, IamError> {
        check_role_name(name)?;
        let path = path.unwrap_or("/");
        if !(path.starts_with('/') && path.ends_with('/')) || path.len() > 512 {
            return Err(IamError::Validation(format!("The specified value for path is invalid: {path:?}")));
        }
        trust_allows_any(assume_role_policy)?;
        let max = max_session_duration.unwrap_or(3600);
        if !(3600..=43200).contains(&max) {
            return Err(IamError::Validation(format!(
                "1 validation error detected: Value '{max}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value between 3600 and 43200"
            )));
        }
        if self.store.get(K_ROLE, &name.to_ascii_lowercase())?.is_some() {
            return Err(IamError::AlreadyExists(format!("Role with name {name} already exists.")));
        }
        let role = Role {
            name: name.into(),
            id: format!("AROA{}", random_upper(17)),
            arn: format!("arn:aws:iam::{}:role{path}{name}", self.account),
            path: path.into(),
            description: description.map(str::to_owned),
            assume_role_policy: assume_role_policy.into(),
            max_session_duration: max,
            created_ms: self.clock.now_millis(),
            policies: BTreeMap::new(),
        };
        self.save(&role)?;
        Ok(role)
    }

    /// GetRole (role names ignore case in IAM).
    pub fn get_role(&self, name: &str) -> Result<Role, IamError> {
        let text = self
            .store
            .get(K_ROLE, &name.to_ascii_lowercase())?
            .ok_or_else(|| IamError::NoSuchEntity(format!("The role with name {name} cannot be found.")))?;
        serde_json::from_str(&text).map_err(|e| IamError::Validation(format!("stored role {name} is unreadable: {e}")))
    }

    /// The role an ARN names.
    pub fn role_by_arn(&self, arn: &str) -> Result<Role, IamError> {
        let name = arn.rsplit('/').next().unwrap_or_default();
        let role = self.get_role(name)?;
        if role.arn != arn {
            return Err(IamError::NoSuchEntity(format!("The role with ARN {arn} cannot be found.")));
        }
        Ok(role)
    }

    /// ListRoles, sorted by name.
    pub fn list_roles(&self, path_prefix: Option<&str>) -> Result<Vec<Role>, IamError> {
        let mut roles: Vec<Role> = self
            .store
            .all(K_ROLE)?
            .into_iter()
            .filter_map(|(_, text)| serde_json::from_str::<Role>(&text).ok())
            .filter(|r| path_prefix.is_none_or(|p| r.path.starts_with(p)))
            .collect();
        roles.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(roles)
    }

    /// DeleteRole: only a role without inline policies.
    pub fn delete_role(&self, name: &str) -> Result<(), IamError> {
        let role = self.get_role(name)?;
        if !role.policies.is_empty() {
            return Err(IamError::DeleteConflict("Cannot delete entity, must delete policies first.".into()));
        }
        self.store.delete(K_ROLE, &role.name.to_ascii_lowercase())?;
        Ok(())
    }

    /// PutRolePolicy: adds or replaces an inline policy.
    pub fn put_role_policy(&self, role: &str, policy_name: &str, document: &str) -> Result<(), IamError> {
        let mut role = self.get_role(role)?;
        check_policy_name(policy_name)?;
        parse_identity_policy(document)?;
        role.policies.insert(policy_name.into(), document.into());
        self.save(&role)
    }

    /// GetRolePolicy.
    pub fn get_role_policy(&self, role: &str, policy_name: &str) -> Result<(Role, String), IamError> {
        let role = self.get_role(role)?;
        let doc = role.policies.get(policy_name).cloned().ok_or_else(|| {
            IamError::NoSuchEntity(format!("The role policy with name {policy_name} cannot be found."))
        })?;
        Ok((role, doc))
    }

    /// DeleteRolePolicy.
    pub fn delete_role_policy(&self, role: &str, policy_name: &str) -> Result<(), IamError> {
        let mut role = self.get_role(role)?;
        if role.policies.remove(policy_name).is_none() {
            return Err(IamError::NoSuchEntity(format!("The role policy with name {policy_name} cannot be found.")));
        }
        self.save(&role)
    }

    fn save(&self, role: &Role) -> Result<(), IamError> {
        let text = serde_json::to_string(role).map_err(|e| IamError::Validation(e.to_string()))?;
        self.store.put(K_ROLE, &role.name.to_ascii_lowercase(), &text)?;
        Ok(())
    }

    /// Issues temporary credentials for `role` (which must trust the credentials provider),
    /// valid for `duration`, carrying the `credentials-iot:` values of the request.
    pub fn issue_session(&self, role: &Role, duration: Duration, vars: &CredentialsIot) -> Result<Session, IamError> {
        self.issue(role, CREDENTIALS_PROVIDER_PRINCIPAL, &vars.certificate_id, duration, vars)
    }

    /// Issues temporary credentials for `role` to the service `service` (which the role must
    /// trust), named `session_name` (Lambda names a function's session after the function).
    pub fn issue_service_session(
        &self,
        role: &Role,
        service: &str,
        session_name: &str,
        duration: Duration,
    ) -> Result<Session, IamError> {
        self.issue(role, service, session_name, duration, &CredentialsIot::default())
    }

    fn issue(
        &self,
        role: &Role,
        service: &str,
        session_name: &str,
        duration: Duration,
        vars: &CredentialsIot,
    ) -> Result<Session, IamError> {
        trust_allows(&role.assume_role_policy, service)?;
        let session = Session {
            access_key_id: format!("ASIA{}", random_upper(16)),
            secret_access_key: random_base64(30),
            session_token: random_base64(96),
            role_name: role.name.clone(),
            session_name: session_name.to_owned(),
            expiration_ms: self.clock.now_millis() + duration.as_millis() as u64,
            thing_name: vars.thing_name.clone(),
            thing_type_name: vars.thing_type_name.clone(),
            certificate_id: vars.certificate_id.clone(),
        };
        let text = serde_json::to_string(&session).map_err(|e| IamError::Validation(e.to_string()))?;
        self.store.put(K_SESSION, &session.access_key_id, &text)?;
        Ok(session)
    }

    /// Whether the role `role_arn`, assumed by `service` (which its trust policy must allow),
    /// may do `action` on `resource`: how a service acting for the account (the rules engine's
    /// actions) is authorized. `Err` when the role does not exist or does not trust `service`.
    pub fn service_decides(
        &self,
        role_arn: &str,
        service: &str,
        action: &str,
        resource: &str,
    ) -> Result<Decision, IamError> {
        let role = self.role_by_arn(role_arn)?;
        trust_allows(&role.assume_role_policy, service)?;
        let policies: Vec<PolicyDocument> =
            role.policies.values().filter_map(|d| parse_identity_policy(d).ok()).collect();
        let context =
            AuthContext { region: self.region.clone(), account_id: self.account.clone(), ..AuthContext::default() };
        Ok(cloud_api::policy::evaluate_action(&policies, action, resource, &context))
    }

    /// The secret of an access key id: the administrator's, or a live session's.
    pub fn secret_of(&self, access_key_id: &str) -> Option<String> {
        if access_key_id == self.admin.access_key_id {
            return Some(self.admin.secret_access_key.clone());
        }
        self.session(access_key_id).map(|s| s.secret_access_key)
    }

    fn session(&self, access_key_id: &str) -> Option<Session> {
        let text = self.store.get(K_SESSION, access_key_id).ok()??;
        serde_json::from_str(&text).ok()
    }

    /// Who signs with `access_key_id` (and `session_token`, required for temporary credentials).
    pub fn principal(&self, access_key_id: &str, session_token: Option<&str>) -> Result<Principal, Refusal> {
        if access_key_id == self.admin.access_key_id {
            return Ok(Principal::Admin);
        }
        let session = self.session(access_key_id).ok_or(Refusal::UnknownKey)?;
        if session_token != Some(session.session_token.as_str()) {
            return Err(Refusal::BadToken);
        }
        if session.expiration_ms <= self.clock.now_millis() {
            let _ = self.store.delete(K_SESSION, access_key_id);
            return Err(Refusal::Expired);
        }
        // The role's policies as they are now: a change applies to live sessions, as on AWS.
        let role = self.get_role(&session.role_name).map_err(|_| Refusal::UnknownKey)?;
        let policies = role.policies.values().filter_map(|d| parse_identity_policy(d).ok()).collect();
        Ok(Principal::Role(Box::new(RoleSession {
            assumed_role_arn: format!(
                "arn:aws:sts::{}:assumed-role/{}/{}",
                self.account, role.name, session.session_name
            ),
            policies,
            context: AuthContext {
                region: self.region.clone(),
                account_id: self.account.clone(),
                credentials_iot: Some(CredentialsIot {
                    thing_name: session.thing_name,
                    thing_type_name: session.thing_type_name,
                    certificate_id: session.certificate_id,
                }),
                ..AuthContext::default()
            },
        })))
    }
}

fn check_role_name(name: &str) -> Result<(), IamError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'=' | b',' | b'.' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "The specified value for roleName is invalid. It must contain only alphanumeric characters and/or the following: +=,.@_- (1 to 64 characters): {name:?}"
        )))
    }
}

fn check_policy_name(name: &str) -> Result<(), IamError> {
    if cloud_api::policy::is_valid_policy_name(name) {
        Ok(())
    } else {
        Err(IamError::Validation(format!("The specified value for policyName is invalid: {name:?}")))
    }
}

/// Parses an identity-based policy (a role's inline policy).
pub fn parse_identity_policy(document: &str) -> Result<PolicyDocument, IamError> {
    PolicyDocument::parse(document).map_err(|e| IamError::MalformedPolicy(e.0))
}

/// The service principals a trust policy lets assume the role: those of its Allow statements
/// for `sts:AssumeRole` (or `sts:*`) in `Principal.Service`.
fn trusted_services(document: &str) -> Result<Vec<String>, IamError> {
    let malformed = |m: &str| IamError::MalformedPolicy(m.to_owned());
    let value: serde_json::Value =
        serde_json::from_str(document).map_err(|e| malformed(&format!("the trust policy is not valid JSON: {e}")))?;
    let statements = match value.get("Statement") {
        Some(serde_json::Value::Array(items)) => items.clone(),
        Some(one @ serde_json::Value::Object(_)) => vec![one.clone()],
        _ => return Err(malformed("the trust policy has no Statement")),
    };
    let strings = |v: Option<&serde_json::Value>| -> Vec<String> {
        match v {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect()
            }
            _ => Vec::new(),
        }
    };
    Ok(statements
        .iter()
        .filter(|s| {
            s.get("Effect").and_then(|e| e.as_str()) == Some("Allow")
                && strings(s.get("Action")).iter().any(|a| a.eq_ignore_ascii_case("sts:AssumeRole") || a == "sts:*")
        })
        .flat_map(|s| strings(s.get("Principal").and_then(|p| p.get("Service"))))
        .collect())
}

/// Checks that a trust policy lets `service` (a service principal such as
/// [`CREDENTIALS_PROVIDER_PRINCIPAL`]) assume the role.
pub fn trust_allows(document: &str, service: &str) -> Result<(), IamError> {
    if trusted_services(document)?.iter().any(|p| p == service) {
        Ok(())
    } else {
        Err(IamError::MalformedPolicy(format!(
            "the trust policy must allow sts:AssumeRole to the service principal {service}"
        )))
    }
}

/// Checks that a trust policy lets one of the local cloud's services ([`SERVICE_PRINCIPALS`])
/// assume the role: a role no service here can assume would never be used.
pub fn trust_allows_any(document: &str) -> Result<(), IamError> {
    let trusted = trusted_services(document)?;
    if SERVICE_PRINCIPALS.iter().any(|s| trusted.iter().any(|p| p == s)) {
        Ok(())
    } else {
        Err(IamError::MalformedPolicy(format!(
            "the trust policy must allow sts:AssumeRole to a service principal of the local cloud ({})",
            SERVICE_PRINCIPALS.join(", ")
        )))
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; n];
    // Without randomness no credential may be issued; the panic becomes a 500 on the request.
    ring::rand::SystemRandom::new().fill(&mut bytes).expect("the system random generator failed");
    bytes
}

fn random_upper(n: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    random_bytes(n).iter().map(|b| ALPHABET[usize::from(b % 32)] as char).collect()
}

fn random_base64(n: usize) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(random_bytes(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
        "Principal":{"Service":"credentials.iot.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

    fn iam() -> (Iam, std::sync::Arc<crate::time::ManualClock>) {
        let clock = crate::time::ManualClock::at(1_700_000_000_000);
        let admin = AccessKeyPair { access_key_id: "AKIAADMIN".into(), secret_access_key: "s".into() };
        (Iam::new(Store::in_memory().unwrap(), clock.clone(), admin, "us-east-1", "000000000000"), clock)
    }

    #[test]
    fn roles_keep_their_policies_and_refuse_bad_input() {
        let (iam, _) = iam();
        let role = iam.create_role("Pump-Role", None, TRUST, Some("d"), None).unwrap();
        assert_eq!(role.arn, "arn:aws:iam::000000000000:role/Pump-Role");
        assert!(matches!(iam.create_role("pump-role", None, TRUST, None, None), Err(IamError::AlreadyExists(_))));
        assert!(matches!(iam.create_role("a b", None, TRUST, None, None), Err(IamError::Validation(_))));
        assert!(matches!(iam.create_role("r", Some("x"), TRUST, None, None), Err(IamError::Validation(_))));
        assert!(matches!(iam.create_role("r", None, TRUST, None, Some(60)), Err(IamError::Validation(_))));
        let ec2_trust = TRUST.replace("credentials.iot", "ec2");
        assert!(matches!(iam.create_role("r", None, &ec2_trust, None, None), Err(IamError::MalformedPolicy(_))));
        // A fleet provisioning role is kept, but the credentials provider cannot assume it.
        let provisioning = iam.create_role("prov", None, &TRUST.replace("credentials.iot", "iot"), None, None).unwrap();
        let vars = CredentialsIot { thing_name: None, thing_type_name: None, certificate_id: "c".into() };
        let refused = iam.issue_session(&provisioning, Duration::from_secs(900), &vars);
        assert!(matches!(refused, Err(IamError::MalformedPolicy(_))), "{refused:?}");
        iam.delete_role("prov").unwrap();
        assert!(matches!(iam.create_role("r", None, "{", None, None), Err(IamError::MalformedPolicy(_))));
        let policy =
            r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:PutObject","Resource":"*"}}"#;
        iam.put_role_policy("pump-role", "put", policy).unwrap();
        assert!(matches!(iam.put_role_policy("Pump-Role", "bad", "{}"), Err(IamError::MalformedPolicy(_))));
        assert!(matches!(iam.put_role_policy("nope", "p", policy), Err(IamError::NoSuchEntity(_))));
        assert_eq!(iam.get_role_policy("Pump-Role", "put").unwrap().1, policy);
        assert!(matches!(iam.delete_role("Pump-Role"), Err(IamError::DeleteConflict(_))));
        iam.delete_role_policy("Pump-Role", "put").unwrap();
        iam.delete_role("Pump-Role").unwrap();
        assert!(iam.list_roles(None).unwrap().is_empty());
    }

    #[test]
    fn a_role_the_rules_engine_assumes_is_authorized_by_its_policies_and_only_for_that_service() {
        let (iam, _) = iam();
        let rules_trust = TRUST.replace("credentials.iot", "iot");
        let role = iam.create_role("rules", None, &rules_trust, None, None).unwrap();
        let allow = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish",
            "Resource":"arn:aws:iot:us-east-1:000000000000:topic/cmd/*"},
            {"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:000000000000:topic/cmd/secret"}]}"#;
        iam.put_role_policy("rules", "p", allow).unwrap();
        let topic = |t: &str| format!("arn:aws:iot:us-east-1:000000000000:topic/{t}");
        let decide = |resource: &str| iam.service_decides(&role.arn, RULES_ENGINE_PRINCIPAL, "iot:Publish", resource);
        assert_eq!(decide(&topic("cmd/pump-1")).unwrap(), Decision::Allow);
        assert_eq!(decide(&topic("cmd/secret")).unwrap(), Decision::ExplicitDeny);
        assert_eq!(decide(&topic("dt/pump-1")).unwrap(), Decision::ImplicitDeny);
        // The credentials provider may not assume a role that trusts only the rules engine.
        let other = iam.service_decides(&role.arn, CREDENTIALS_PROVIDER_PRINCIPAL, "iot:Publish", &topic("cmd/x"));
        assert!(matches!(other, Err(IamError::MalformedPolicy(_))));
        let missing = iam.service_decides("arn:aws:iam::000000000000:role/nope", RULES_ENGINE_PRINCIPAL, "a", "r");
        assert!(matches!(missing, Err(IamError::NoSuchEntity(_))));
    }

    #[test]
    fn sessions_need_their_token_expire_and_follow_the_roles_current_policies() {
        let (iam, clock) = iam();
        let role = iam.create_role("r", None, TRUST, None, None).unwrap();
        let allow = r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:PutObject",
            "Resource":"arn:aws:s3:::b/${credentials-iot:ThingName}/*"}}"#;
        iam.put_role_policy("r", "p", allow).unwrap();
        let vars =
            CredentialsIot { thing_name: Some("site-1".into()), thing_type_name: None, certificate_id: "c".into() };
        let s = iam.issue_session(&role, Duration::from_secs(900), &vars).unwrap();
        assert!(s.access_key_id.starts_with("ASIA"));
        assert_eq!(iam.secret_of(&s.access_key_id).as_deref(), Some(s.secret_access_key.as_str()));
        assert!(matches!(iam.principal("AKIAADMIN", None), Ok(Principal::Admin)));
        assert_eq!(iam.principal("ASIANOPE", Some("t")).unwrap_err(), Refusal::UnknownKey);
        assert_eq!(iam.principal(&s.access_key_id, None).unwrap_err(), Refusal::BadToken);
        assert_eq!(iam.principal(&s.access_key_id, Some("other")).unwrap_err(), Refusal::BadToken);
        let Principal::Role(session) = iam.principal(&s.access_key_id, Some(&s.session_token)).unwrap() else {
            panic!("a role session")
        };
        assert_eq!(session.assumed_role_arn, "arn:aws:sts::000000000000:assumed-role/r/c");
        assert_eq!(session.decide("s3:PutObject", "arn:aws:s3:::b/site-1/x"), Decision::Allow);
        assert_eq!(session.decide("s3:PutObject", "arn:aws:s3:::b/site-2/x"), Decision::ImplicitDeny);
        assert_eq!(session.decide("s3:GetObject", "arn:aws:s3:::b/site-1/x"), Decision::ImplicitDeny);
        // A Deny added later applies to the live session.
        let deny = r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"s3:*","Resource":"*"}}"#;
        iam.put_role_policy("r", "deny", deny).unwrap();
        let Principal::Role(session) = iam.principal(&s.access_key_id, Some(&s.session_token)).unwrap() else {
            panic!("a role session")
        };
        assert_eq!(session.decide("s3:PutObject", "arn:aws:s3:::b/site-1/x"), Decision::ExplicitDeny);
        clock.advance(Duration::from_secs(900));
        assert_eq!(iam.principal(&s.access_key_id, Some(&s.session_token)).unwrap_err(), Refusal::Expired);
        assert_eq!(iam.secret_of(&s.access_key_id), None, "swept");
    }
}
