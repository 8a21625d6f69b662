//! Fleet provisioning, as AWS IoT Core serves it (AWS IoT Core Developer Guide, "Device
//! provisioning MQTT API", "Provisioning templates", "Provisioning by claim"; control plane
//! from the IoT service model `iot.json`).
//!
//! # Layout
//! - [`template`]: the template engine, pure (parse, evaluate, override settings).
//! - this module: templates and their versions (stored in the [`Store`]), certificate
//!   ownership tokens, the MQTT API's answers ([`ProvisioningService::answer`]) and
//!   CreateProvisioningClaim.
//! - [`mqtt`]: the broker's handler for `$aws/certificates/…` and `$aws/provisioning-templates/…`.
//! - [`http`]: the control plane's routes.
//!
//! The registry applies an evaluated template in one transaction
//! ([`crate::registry::Registry::provision`]).

pub mod http;
pub mod mqtt;
pub mod template;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::bus::{Bus, BusMessage};
use crate::registry::{Registry, RegistryError};
use crate::store::{Op, Store};
use crate::time::SharedClock;
use template::{CertificateFacts, Template, TemplateError};

/// How long a certificate ownership token lives ("expires after one hour").
pub const TOKEN_LIFETIME_MS: u64 = 60 * 60 * 1000;
/// How long a claim certificate from CreateProvisioningClaim is valid (five minutes).
pub const CLAIM_LIFETIME_SECS: u64 = 5 * 60;
/// Versions a template may have ("up to five versions").
pub const MAX_VERSIONS: usize = 5;

const K_TEMPLATE: &str = "provisioning_template";
const K_TOKEN: &str = "provisioning_token";

/// A control-plane error, named after the AWS exception it becomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisioningError {
    /// `InvalidRequestException` (400).
    #[error("{0}")]
    InvalidRequest(String),
    /// `ResourceNotFoundException` (404).
    #[error("{0}")]
    NotFound(String),
    /// `ResourceAlreadyExistsException` (409).
    #[error("{message}")]
    AlreadyExists {
        /// Message.
        message: String,
        /// The template name.
        id: String,
        /// The template ARN.
        arn: String,
    },
    /// `VersionsLimitExceededException` (409).
    #[error("{0}")]
    VersionsLimitExceeded(String),
    /// `DeleteConflictException` (409).
    #[error("{0}")]
    DeleteConflict(String),
    /// `InternalFailureException` (500): nothing was changed.
    #[error("{0}")]
    Internal(String),
}

/// A pre-provisioning hook as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// `payloadVersion` (default `2020-04-01`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_version: Option<String>,
    /// `targetArn`: the Lambda function.
    pub target_arn: String,
}

/// One version of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVersion {
    /// Version id, from 1.
    pub id: i64,
    /// The body.
    pub body: String,
    /// Creation, epoch seconds.
    pub creation_date: u64,
}

/// A provisioning template with its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Description.
    pub description: Option<String>,
    /// Whether devices may provision with it.
    pub enabled: bool,
    /// `provisioningRoleArn` (kept; the local cloud does not assume roles).
    pub provisioning_role_arn: String,
    /// `preProvisioningHook`.
    pub hook: Option<Hook>,
    /// `FLEET_PROVISIONING` or `JITP`.
    pub template_type: String,
    /// Creation, epoch seconds.
    pub creation_date: u64,
    /// Last change, epoch seconds.
    pub last_modified_date: u64,
    /// The version devices get.
    pub default_version_id: i64,
    /// Versions, oldest first.
    pub versions: Vec<TemplateVersion>,
}

impl TemplateRecord {
    /// The default version's body.
    pub fn body(&self) -> &str {
        self.versions.iter().find(|v| v.id == self.default_version_id).map(|v| v.body.as_str()).unwrap_or("")
    }
}

/// CreateProvisioningTemplate's input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTemplate {
    /// Name.
    #[serde(default)]
    pub template_name: String,
    /// Description.
    pub description: Option<String>,
    /// Body.
    #[serde(default)]
    pub template_body: String,
    /// Enabled (default false).
    pub enabled: Option<bool>,
    /// Role ARN.
    #[serde(default)]
    pub provisioning_role_arn: String,
    /// Hook.
    pub pre_provisioning_hook: Option<Hook>,
    /// Type.
    #[serde(rename = "type")]
    pub template_type: Option<String>,
}

/// UpdateProvisioningTemplate's input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateTemplate {
    /// Description.
    pub description: Option<String>,
    /// Enabled.
    pub enabled: Option<bool>,
    /// New default version.
    pub default_version_id: Option<i64>,
    /// Role ARN.
    pub provisioning_role_arn: Option<String>,
    /// Hook.
    pub pre_provisioning_hook: Option<Hook>,
    /// Removes the hook.
    pub remove_pre_provisioning_hook: Option<bool>,
}

/// A certificate waiting for RegisterThing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TokenRecord {
    certificate_id: String,
    expires_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    templates: BTreeMap<String, TemplateRecord>,
    tokens: BTreeMap<String, TokenRecord>,
}

/// The fleet-provisioning service; cheap to clone.
#[derive(Debug, Clone)]
pub struct ProvisioningService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    registry: Arc<Registry>,
    bus: Bus,
    clock: SharedClock,
    state: Mutex<State>,
}

fn check_template_name(name: &str) -> Result<(), ProvisioningError> {
    let ok = (1..=36).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ProvisioningError::InvalidRequest(format!("templateName {name:?} must match [0-9A-Za-z_-]{{1,36}}")))
    }
}

fn check_body(body: &str) -> Result<(), ProvisioningError> {
    if body.len() > 10240 {
        return Err(ProvisioningError::InvalidRequest("templateBody is longer than 10240 characters".into()));
    }
    Template::parse(body).map(|_| ()).map_err(|e| ProvisioningError::InvalidRequest(e.to_string()))
}

impl ProvisioningService {
    /// Loads templates and outstanding ownership tokens from the store.
    pub fn open(
        store: Store,
        registry: Arc<Registry>,
        bus: Bus,
        clock: SharedClock,
    ) -> Result<Self, ProvisioningError> {
        let internal = |e: crate::store::StoreError| ProvisioningError::Internal(e.to_string());
        let mut state = State::default();
        for (name, v) in store.all(K_TEMPLATE).map_err(internal)? {
            match serde_json::from_str::<TemplateRecord>(&v) {
                Ok(t) => {
                    state.templates.insert(name, t);
                }
                Err(e) => tracing::warn!(template = %name, error = %e, "skipping an unreadable provisioning template"),
            }
        }
        for (token, v) in store.all(K_TOKEN).map_err(internal)? {
            if let Ok(t) = serde_json::from_str::<TokenRecord>(&v) {
                state.tokens.insert(token, t);
            }
        }
        let svc =
            ProvisioningService { inner: Arc::new(Inner { store, registry, bus, clock, state: Mutex::new(state) }) };
        svc.expire_tokens();
        Ok(svc)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_secs(&self) -> u64 {
        self.inner.clock.now_secs()
    }

    fn arn(&self, name: &str) -> String {
        let r = &self.inner.registry;
        format!("arn:aws:iot:{}:{}:provisioningtemplate/{name}", r.region(), r.account_id())
    }

    fn save(&self, t: &TemplateRecord) -> Result<(), ProvisioningError> {
        let value = serde_json::to_string(t).map_err(|e| ProvisioningError::Internal(e.to_string()))?;
        self.inner.store.put(K_TEMPLATE, &t.name, &value).map_err(|e| ProvisioningError::Internal(e.to_string()))
    }

    fn not_found(name: &str) -> ProvisioningError {
        ProvisioningError::NotFound(format!("The provisioning template {name} does not exist"))
    }

    /// CreateProvisioningTemplate.
    pub fn create_template(&self, req: CreateTemplate) -> Result<TemplateRecord, ProvisioningError> {
        check_template_name(&req.template_name)?;
        check_body(&req.template_body)?;
        if req.provisioning_role_arn.len() < 20 {
            return Err(ProvisioningError::InvalidRequest("provisioningRoleArn must be a role ARN".into()));
        }
        if req.description.as_ref().is_some_and(|d| d.len() > 500) {
            return Err(ProvisioningError::InvalidRequest("description is longer than 500 characters".into()));
        }
        let template_type = req.template_type.unwrap_or_else(|| "FLEET_PROVISIONING".into());
        if template_type != "FLEET_PROVISIONING" && template_type != "JITP" {
            return Err(ProvisioningError::InvalidRequest(format!(
                "type {template_type} is not FLEET_PROVISIONING or JITP"
            )));
        }
        if template_type != "FLEET_PROVISIONING" && req.pre_provisioning_hook.is_some() {
            return Err(ProvisioningError::InvalidRequest(
                "a pre-provisioning hook is supported only for templates of type FLEET_PROVISIONING".into(),
            ));
        }
        let mut state = self.lock();
        if let Some(t) = state.templates.get(&req.template_name) {
            return Err(ProvisioningError::AlreadyExists {
                message: format!("The provisioning template {} already exists", t.name),
                id: t.name.clone(),
                arn: t.arn.clone(),
            });
        }
        let now = self.now_secs();
        let t = TemplateRecord {
            arn: self.arn(&req.template_name),
            name: req.template_name,
            description: req.description,
            enabled: req.enabled.unwrap_or(false),
            provisioning_role_arn: req.provisioning_role_arn,
            hook: req.pre_provisioning_hook,
            template_type,
            creation_date: now,
            last_modified_date: now,
            default_version_id: 1,
            versions: vec![TemplateVersion { id: 1, body: req.template_body, creation_date: now }],
        };
        self.save(&t)?;
        state.templates.insert(t.name.clone(), t.clone());
        Ok(t)
    }

    /// DescribeProvisioningTemplate.
    pub fn describe_template(&self, name: &str) -> Result<TemplateRecord, ProvisioningError> {
        self.lock().templates.get(name).cloned().ok_or_else(|| Self::not_found(name))
    }

    /// ListProvisioningTemplates, by name.
    pub fn list_templates(&self) -> Vec<TemplateRecord> {
        self.lock().templates.values().cloned().collect()
    }

    /// UpdateProvisioningTemplate.
    pub fn update_template(&self, name: &str, req: UpdateTemplate) -> Result<(), ProvisioningError> {
        let mut state = self.lock();
        let mut t = state.templates.get(name).cloned().ok_or_else(|| Self::not_found(name))?;
        if let Some(d) = req.description {
            t.description = Some(d);
        }
        if let Some(e) = req.enabled {
            t.enabled = e;
        }
        if let Some(v) = req.default_version_id {
            if !t.versions.iter().any(|x| x.id == v) {
                return Err(ProvisioningError::NotFound(format!("version {v} of template {name} does not exist")));
            }
            t.default_version_id = v;
        }
        if let Some(r) = req.provisioning_role_arn {
            t.provisioning_role_arn = r;
        }
        if req.remove_pre_provisioning_hook == Some(true) {
            t.hook = None;
        } else if let Some(h) = req.pre_provisioning_hook {
            if t.template_type != "FLEET_PROVISIONING" {
                return Err(ProvisioningError::InvalidRequest(
                    "a pre-provisioning hook is supported only for templates of type FLEET_PROVISIONING".into(),
                ));
            }
            t.hook = Some(h);
        }
        t.last_modified_date = self.now_secs();
        self.save(&t)?;
        state.templates.insert(name.to_string(), t);
        Ok(())
    }

    /// DeleteProvisioningTemplate.
    pub fn delete_template(&self, name: &str) -> Result<(), ProvisioningError> {
        let mut state = self.lock();
        if !state.templates.contains_key(name) {
            return Err(Self::not_found(name));
        }
        self.inner.store.delete(K_TEMPLATE, name).map_err(|e| ProvisioningError::Internal(e.to_string()))?;
        state.templates.remove(name);
        Ok(())
    }

    /// CreateProvisioningTemplateVersion: returns the template and the new version.
    pub fn create_version(
        &self,
        name: &str,
        body: String,
        set_as_default: bool,
    ) -> Result<(TemplateRecord, i64), ProvisioningError> {
        check_body(&body)?;
        let mut state = self.lock();
        let mut t = state.templates.get(name).cloned().ok_or_else(|| Self::not_found(name))?;
        if t.versions.len() >= MAX_VERSIONS {
            return Err(ProvisioningError::VersionsLimitExceeded(format!(
                "The provisioning template {name} already has {MAX_VERSIONS} versions; delete one first"
            )));
        }
        let id = t.versions.iter().map(|v| v.id).max().unwrap_or(0) + 1;
        let now = self.now_secs();
        t.versions.push(TemplateVersion { id, body, creation_date: now });
        if set_as_default {
            t.default_version_id = id;
        }
        t.last_modified_date = now;
        self.save(&t)?;
        state.templates.insert(name.to_string(), t.clone());
        Ok((t, id))
    }

    /// DeleteProvisioningTemplateVersion: the default version cannot be deleted.
    pub fn delete_version(&self, name: &str, id: i64) -> Result<(), ProvisioningError> {
        let mut state = self.lock();
        let mut t = state.templates.get(name).cloned().ok_or_else(|| Self::not_found(name))?;
        if !t.versions.iter().any(|v| v.id == id) {
            return Err(ProvisioningError::NotFound(format!("version {id} of template {name} does not exist")));
        }
        if t.default_version_id == id {
            return Err(ProvisioningError::DeleteConflict(format!(
                "version {id} is the default version of template {name}; set another default first"
            )));
        }
        t.versions.retain(|v| v.id != id);
        self.save(&t)?;
        state.templates.insert(name.to_string(), t);
        Ok(())
    }

    /// The policy a claim certificate of `template` gets: connect, and the provisioning
    /// topics of the template only.
    pub fn claim_policy(&self, template: &str) -> (String, String) {
        let r = &self.inner.registry;
        let (region, account) = (r.region(), r.account_id());
        let doc = json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": format!("arn:aws:iot:{region}:{account}:client/*")},
                {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [
                    format!("arn:aws:iot:{region}:{account}:topic/$aws/certificates/create/*"),
                    format!("arn:aws:iot:{region}:{account}:topic/$aws/certificates/create-from-csr/*"),
                    format!("arn:aws:iot:{region}:{account}:topic/$aws/provisioning-templates/{template}/provision/*")
                ]},
                {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
                    format!("arn:aws:iot:{region}:{account}:topicfilter/$aws/certificates/create/*"),
                    format!("arn:aws:iot:{region}:{account}:topicfilter/$aws/certificates/create-from-csr/*"),
                    format!("arn:aws:iot:{region}:{account}:topicfilter/$aws/provisioning-templates/{template}/provision/*")
                ]}
            ]
        });
        (format!("{template}-ProvisioningClaimPolicy"), doc.to_string())
    }

    /// CreateProvisioningClaim: a certificate and key valid five minutes, allowed only the
    /// template's provisioning topics. Returns the certificate, the key pair and the expiry.
    pub fn create_claim(
        &self,
        name: &str,
    ) -> Result<(crate::registry::Certificate, crate::registry::KeyPair, u64), ProvisioningError> {
        self.describe_template(name)?;
        let expires = self.now_secs() + CLAIM_LIFETIME_SECS;
        let (policy, doc) = self.claim_policy(name);
        let (cert, keys) = self
            .inner
            .registry
            .create_claim_certificate(expires, &policy, &doc)
            .map_err(|e| ProvisioningError::Internal(e.to_string()))?;
        Ok((cert, keys, expires))
    }

    /// Deletes tokens that expired, and their certificates if still unclaimed.
    pub fn expire_tokens(&self) {
        let now = self.inner.clock.now_millis();
        let expired: Vec<(String, TokenRecord)> = {
            let state = self.lock();
            state.tokens.iter().filter(|(_, t)| t.expires_ms <= now).map(|(k, t)| (k.clone(), t.clone())).collect()
        };
        for (token, rec) in expired {
            if let Err(e) = self.inner.registry.delete_unclaimed_certificate(&rec.certificate_id) {
                tracing::warn!(error = %e, "an unclaimed certificate could not be deleted");
                continue;
            }
            if self.inner.store.delete(K_TOKEN, &token).is_ok() {
                self.lock().tokens.remove(&token);
            }
        }
    }

    /// Expires ownership tokens once a minute until `shutdown` (requests also expire them first).
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    let svc = self.clone();
                    let _ = tokio::task::spawn_blocking(move || svc.expire_tokens()).await;
                }
            }
        }
    }

    fn issue_token(&self, certificate_id: &str) -> Result<String, RegistryError> {
        let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let rec = TokenRecord {
            certificate_id: certificate_id.to_string(),
            expires_ms: self.inner.clock.now_millis() + TOKEN_LIFETIME_MS,
        };
        let value = serde_json::to_string(&rec).map_err(|e| RegistryError::Internal(e.to_string()))?;
        self.inner.store.put(K_TOKEN, &token, &value).map_err(|e| RegistryError::Internal(e.to_string()))?;
        self.lock().tokens.insert(token.clone(), rec);
        Ok(token)
    }

    /// Answers one publish on a provisioning request topic (blocking: the MQTT worker calls it).
    pub fn answer(&self, client_id: &str, topic: &str, payload: &[u8]) {
        let Some(req) = mqtt::RequestTopic::parse(topic) else { return };
        self.expire_tokens();
        let reply = match mqtt::decode(req.format, payload) {
            Err(e) => Err(e),
            Ok(body) => match &req.api {
                mqtt::Api::CreateKeysAndCertificate => self.create_keys(),
                mqtt::Api::CreateCertificateFromCsr => self.create_from_csr(&body),
                mqtt::Api::RegisterThing(template) => self.register_thing(template, &body),
            },
        };
        let (suffix, body) = match reply {
            Ok(v) => ("accepted", v),
            Err(e) => ("rejected", e.to_json()),
        };
        let bytes = mqtt::encode(req.format, &body);
        let topic = format!("{topic}/{suffix}");
        self.inner.bus.publish(BusMessage::to_client(client_id, topic, bytes, 1));
    }

    fn create_keys(&self) -> Result<Value, mqtt::Rejection> {
        let (cert, keys) =
            self.inner.registry.create_pending_keys_and_certificate().map_err(mqtt::Rejection::internal)?;
        let token = self.issue_token(&cert.id).map_err(mqtt::Rejection::internal)?;
        Ok(json!({
            "certificateId": cert.id,
            "certificatePem": cert.pem,
            "privateKey": keys.private_key_pem,
            "certificateOwnershipToken": token,
        }))
    }

    fn create_from_csr(&self, body: &Value) -> Result<Value, mqtt::Rejection> {
        let csr = body
            .get("certificateSigningRequest")
            .and_then(Value::as_str)
            .ok_or_else(|| mqtt::Rejection::invalid_payload("certificateSigningRequest is required"))?;
        let cert = match self.inner.registry.create_pending_certificate_from_csr(csr) {
            Ok(c) => c,
            Err(RegistryError::CertificateValidation(m)) => {
                return Err(mqtt::Rejection::new(400, "InvalidCertificateSigningRequest", m));
            }
            Err(e) => return Err(mqtt::Rejection::internal(e)),
        };
        let token = self.issue_token(&cert.id).map_err(mqtt::Rejection::internal)?;
        Ok(json!({"certificateId": cert.id, "certificatePem": cert.pem, "certificateOwnershipToken": token}))
    }

    fn register_thing(&self, template: &str, body: &Value) -> Result<Value, mqtt::Rejection> {
        let token = body
            .get("certificateOwnershipToken")
            .and_then(Value::as_str)
            .ok_or_else(|| mqtt::Rejection::invalid_payload("certificateOwnershipToken is required"))?;
        let mut params = BTreeMap::new();
        match body.get("parameters") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let v = v
                        .as_str()
                        .ok_or_else(|| mqtt::Rejection::invalid_payload(format!("parameters.{k} must be a string")))?;
                    params.insert(k.clone(), v.to_string());
                }
            }
            Some(_) => return Err(mqtt::Rejection::invalid_payload("parameters must be an object")),
        }
        let tpl = match self.lock().templates.get(template) {
            Some(t) if t.enabled => t.clone(),
            Some(_) => {
                return Err(mqtt::Rejection::new(
                    400,
                    "InvalidParameters",
                    format!("The provisioning template {template} is disabled"),
                ));
            }
            None => {
                return Err(mqtt::Rejection::new(
                    404,
                    "ResourceNotFound",
                    format!("The provisioning template {template} does not exist"),
                ));
            }
        };
        let rec = self.lock().tokens.get(token).cloned().ok_or_else(|| {
            mqtt::Rejection::new(
                400,
                "InvalidCertificateOwnershipToken",
                "The certificate ownership token is not valid or has expired",
            )
        })?;
        if tpl.hook.is_some() {
            // No Lambda service yet: an unreachable hook denies provisioning, as AWS does when the
            // hook does not answer.
            return Err(mqtt::Rejection::new(
                403,
                "AccessDenied",
                "The pre-provisioning hook could not be invoked; provisioning is denied",
            ));
        }
        let cert = self.inner.registry.describe_certificate(&rec.certificate_id).map_err(|_| {
            mqtt::Rejection::new(
                400,
                "InvalidCertificateOwnershipToken",
                "The certificate of this token no longer exists",
            )
        })?;
        let facts = CertificateFacts { id: cert.id.clone(), subject: cert.subject.clone() };
        let plan = Template::parse(tpl.body()).and_then(|t| t.evaluate(&params, &facts)).map_err(|e| match e {
            TemplateError::Parameters(m) => mqtt::Rejection::new(400, "InvalidParameters", m),
            other => mqtt::Rejection::new(400, "InvalidTemplate", other.to_string()),
        })?;
        let done = self.inner.registry.provision(&cert.id, &plan).map_err(|e| match e {
            RegistryError::Internal(m) => mqtt::Rejection::new(500, "InternalError", m),
            RegistryError::CertificateState(m) => mqtt::Rejection::new(400, "InvalidCertificateOwnershipToken", m),
            other => mqtt::Rejection::new(400, "InvalidParameters", other.to_string()),
        })?;
        // The token is spent.
        if self.inner.store.apply(&[Op::Delete { kind: K_TOKEN, key: token.to_string() }]).is_ok() {
            self.lock().tokens.remove(token);
        }
        let mut reply = json!({"deviceConfiguration": plan.device_configuration});
        if let Some(name) = done.thing_name {
            reply["thingName"] = json!(name);
        }
        Ok(reply)
    }
}
