//! Deployments: what an operator asks for (`CreateDeployment`), what a core
//! receives (the deployment document), and what the core says back.
//!
//! The request is the `greengrassv2` model's `CreateDeploymentRequest`. The
//! document is the nucleus's `Configuration` (`aws-greengrass-component-common`),
//! which differs from the request: `componentVersion` becomes `version`, a
//! component's `configurationUpdate.merge` is a JSON **object** rather than a
//! string, the policies move to the top level with `timeout` for
//! `timeoutInSeconds`, and the service adds `deploymentId`, `configurationArn`
//! (`arn:aws:greengrass:{region}:{account}:configuration:{thing|thinggroup}/{name}:{revision}`),
//! `creationTimestamp` in **milliseconds** and `schemaDate`. The nucleus reads
//! it leniently (unknown members ignored, numbers possibly in float form), so
//! [`DeploymentDocument`] does too. A thing-group deployment travels as the
//! document of an IoT job in the `aws-gg-deployment` namespace; a thing
//! deployment as `fleetConfig` (the document as a string) in the desired state
//! of the `AWSManagedGreengrassV2Deployment` shadow.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// `runWith` and its limits: the same shape as the IPC's `RunWithInfo` (member names are the
/// same in the request, the document and a local deployment).
pub use crate::ipc::model::{RunWithInfo as RunWith, SystemResourceLimits};

/// The `schemaDate` the service writes into every document.
pub const SCHEMA_DATE: &str = "2021-05-17";
/// `requiredCapabilities` entry for documents with `systemResourceLimits`.
pub const CAPABILITY_LINUX_RESOURCE_LIMITS: &str = "LINUX_RESOURCE_LIMITS";
/// `requiredCapabilities` entry for documents with a `parentTargetArn`.
pub const CAPABILITY_SUB_DEPLOYMENTS: &str = "SUB_DEPLOYMENTS";
/// Longest JSON pointer in `configurationUpdate.reset` (model: `JsonPointer` ≤ 256).
pub const MAX_RESET_POINTER_CHARS: usize = 256;
/// Largest `configurationUpdate.merge` (model: 10 MiB).
pub const MAX_MERGE_BYTES: usize = 10 * 1024 * 1024;
/// Default `componentUpdatePolicy.timeoutInSeconds`.
pub const DEFAULT_COMPONENT_UPDATE_TIMEOUT_S: i64 = 60;
/// Default `configurationValidationPolicy.timeoutInSeconds` (the API's documented default).
pub const DEFAULT_CONFIGURATION_VALIDATION_TIMEOUT_S: i64 = 30;

/// A field of a request that is not acceptable: becomes a `ValidationException`
/// with reason `FIELD_VALIDATION_FAILED` and this field in `fields`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DeploymentError {
    /// The member path, as AWS names it (`components.X.configurationUpdate.merge`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl DeploymentError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        DeploymentError { field: field.into(), message: message.into() }
    }
}

/// What a deployment is for: a core thing or a thing group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "camelCase")]
pub enum DeploymentTarget {
    /// `arn:aws:iot:{region}:{account}:thing/{name}`: delivered through the deployment shadow.
    Thing(String),
    /// `arn:aws:iot:{region}:{account}:thinggroup/{name}`: delivered through an IoT job.
    ThingGroup(String),
}

impl DeploymentTarget {
    /// Parses a `targetArn` (model pattern
    /// `arn:[^:]*:iot:[^:]*:[0-9]+:(thing|thinggroup)/.+`).
    pub fn parse_arn(arn: &str) -> Result<Self, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, _partition, service, _region, account, resource] = parts[..] else {
            return Err(format!("{arn:?} is not an ARN"));
        };
        if prefix != "arn" || service != "iot" {
            return Err(format!("{arn:?} is not an AWS IoT ARN"));
        }
        if account.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{arn:?} has no account id"));
        }
        let (kind, name) =
            resource.split_once('/').ok_or_else(|| format!("{arn:?} names neither a thing nor a thing group"))?;
        if !crate::shadow::is_valid_thing_name(name) {
            return Err(format!("{arn:?}: {name:?} is not a valid thing or thing group name"));
        }
        match kind {
            "thing" => Ok(DeploymentTarget::Thing(name.to_owned())),
            "thinggroup" => Ok(DeploymentTarget::ThingGroup(name.to_owned())),
            _ => Err(format!("{arn:?} names neither a thing nor a thing group")),
        }
    }

    /// The target's name.
    pub fn name(&self) -> &str {
        match self {
            DeploymentTarget::Thing(n) | DeploymentTarget::ThingGroup(n) => n,
        }
    }

    /// The resource part of ARNs: `thing/{name}` or `thinggroup/{name}`.
    pub fn resource(&self) -> String {
        match self {
            DeploymentTarget::Thing(n) => format!("thing/{n}"),
            DeploymentTarget::ThingGroup(n) => format!("thinggroup/{n}"),
        }
    }

    /// The IoT ARN of the target.
    pub fn arn(&self, region: &str, account: &str) -> String {
        format!("arn:aws:iot:{region}:{account}:{}", self.resource())
    }

    /// The configuration ARN of revision `revision` of this target's deployment.
    pub fn configuration_arn(&self, region: &str, account: &str, revision: u64) -> String {
        format!("arn:aws:greengrass:{region}:{account}:configuration:{}:{revision}", self.resource())
    }
}

/// `failureHandlingPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureHandlingPolicy {
    /// Restore the previous configuration when the deployment fails (default).
    #[default]
    Rollback,
    /// Leave the device as the failure left it.
    DoNothing,
}

/// `componentUpdatePolicy.action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ComponentUpdateAction {
    /// Ask components subscribed to updates, who may defer (default).
    #[default]
    NotifyComponents,
    /// Update without asking.
    SkipNotifyComponents,
}

/// `CreateDeployment`'s body (restJson1, `POST /greengrass/v2/deployments`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateDeploymentRequest {
    /// Thing or thing-group ARN.
    pub target_arn: String,
    /// Free-form name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    /// Root components and how to configure them.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentDeploymentSpecification>,
    /// Rollout, abort and timeout of the IoT job (thing-group targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_job_configuration: Option<Map<String, Value>>,
    /// Failure handling, update and validation policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_policies: Option<DeploymentPolicies>,
    /// Parent thing group of a sub-deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_target_arn: Option<String>,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Idempotency token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// `ComponentDeploymentSpecification`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentDeploymentSpecification {
    /// Version to run.
    #[serde(default)]
    pub component_version: String,
    /// Configuration merge (a JSON string) and reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_update: Option<RequestConfigurationUpdate>,
    /// User and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_with: Option<RunWith>,
}

/// `ComponentConfigurationUpdate` as the API takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestConfigurationUpdate {
    /// A JSON object, as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<String>,
    /// JSON pointers to reset to the defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<Vec<String>>,
}

/// `DeploymentPolicies`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentPolicies {
    /// ROLLBACK (default) or DO_NOTHING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_handling_policy: Option<FailureHandlingPolicy>,
    /// How components are told of the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_update_policy: Option<RequestComponentUpdatePolicy>,
    /// How long components get to validate new configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_validation_policy: Option<RequestValidationPolicy>,
}

/// `DeploymentComponentUpdatePolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestComponentUpdatePolicy {
    /// Seconds components get to answer (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_in_seconds: Option<i64>,
    /// Notify or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ComponentUpdateAction>,
}

/// `DeploymentConfigurationValidationPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestValidationPolicy {
    /// Seconds components get to validate (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_in_seconds: Option<i64>,
}

/// The deployment document a core receives (the nucleus's `Configuration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDocument {
    /// The Greengrass deployment id.
    pub deployment_id: String,
    /// Document schema; the service writes [`SCHEMA_DATE`].
    #[serde(default = "schema_date")]
    pub schema_date: String,
    /// Free-form name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    /// Target and revision: `arn:aws:greengrass:…:configuration:thinggroup/NAME:REV`.
    pub configuration_arn: String,
    /// Parent group of a sub-deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_target_arn: Option<String>,
    /// Epoch milliseconds; a core rejects a group deployment older than the last it applied.
    #[serde(deserialize_with = "lenient_i64")]
    pub creation_timestamp: i64,
    /// Root components.
    #[serde(default)]
    pub components: BTreeMap<String, DocumentComponent>,
    /// ROLLBACK or DO_NOTHING.
    #[serde(default)]
    pub failure_handling_policy: FailureHandlingPolicy,
    /// Notify components or not, and for how long.
    #[serde(default)]
    pub component_update_policy: ComponentUpdatePolicy,
    /// How long components get to validate configuration.
    #[serde(default)]
    pub configuration_validation_policy: ValidationPolicy,
    /// Features the core must have to apply it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_capabilities: Vec<String>,
}

fn schema_date() -> String {
    SCHEMA_DATE.to_owned()
}

/// One root component in a [`DeploymentDocument`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentComponent {
    /// Version to run.
    pub version: String,
    /// Merge (a JSON object) and reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration_update: Option<DocumentConfigurationUpdate>,
    /// User and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_with: Option<RunWith>,
}

/// A component's configuration update in the document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DocumentConfigurationUpdate {
    /// The object merged into the configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<Map<String, Value>>,
    /// JSON pointers reset to their defaults (before the merge).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reset: Vec<String>,
}

/// `componentUpdatePolicy` in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentUpdatePolicy {
    /// Seconds.
    #[serde(default = "default_update_timeout", deserialize_with = "lenient_i64")]
    pub timeout: i64,
    /// Notify or not.
    #[serde(default)]
    pub action: ComponentUpdateAction,
}

impl Default for ComponentUpdatePolicy {
    fn default() -> Self {
        ComponentUpdatePolicy { timeout: DEFAULT_COMPONENT_UPDATE_TIMEOUT_S, action: ComponentUpdateAction::default() }
    }
}

fn default_update_timeout() -> i64 {
    DEFAULT_COMPONENT_UPDATE_TIMEOUT_S
}

/// `configurationValidationPolicy` in the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationPolicy {
    /// Seconds.
    #[serde(default = "default_validation_timeout", deserialize_with = "lenient_i64")]
    pub timeout: i64,
}

impl Default for ValidationPolicy {
    fn default() -> Self {
        ValidationPolicy { timeout: DEFAULT_CONFIGURATION_VALIDATION_TIMEOUT_S }
    }
}

fn default_validation_timeout() -> i64 {
    DEFAULT_CONFIGURATION_VALIDATION_TIMEOUT_S
}

/// Reads an integer written either as `120` or as `120.0` / `1.604067741583E12`
/// (the form seen in captured service documents).
fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let v = Value::deserialize(d)?;
    if let Some(i) = v.as_i64() {
        return Ok(i);
    }
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(serde::de::Error::custom(format!("expected an integer, found {v}"))),
    }
}

impl DeploymentDocument {
    /// The document the service sends for `request`, as revision
    /// `configuration_arn` created at `created_ms`. Checks every member the
    /// document carries; the caller checks the target and the component
    /// versions against its own state.
    pub fn build(
        request: &CreateDeploymentRequest,
        deployment_id: &str,
        configuration_arn: &str,
        created_ms: i64,
    ) -> Result<Self, DeploymentError> {
        DeploymentTarget::parse_arn(&request.target_arn).map_err(|m| DeploymentError::new("targetArn", m))?;
        if let Some(parent) = &request.parent_target_arn {
            match DeploymentTarget::parse_arn(parent) {
                Ok(DeploymentTarget::ThingGroup(_)) => {}
                Ok(DeploymentTarget::Thing(_)) => {
                    return Err(DeploymentError::new("parentTargetArn", "must be a thing group ARN"));
                }
                Err(m) => return Err(DeploymentError::new("parentTargetArn", m)),
            }
        }
        let mut components = BTreeMap::new();
        let mut limits = false;
        for (name, spec) in &request.components {
            let field = |member: &str| format!("components.{name}.{member}");
            if name.is_empty() || name.len() > 128 {
                return Err(DeploymentError::new("components", format!("invalid component name {name:?}")));
            }
            if spec.component_version.is_empty() || spec.component_version.len() > 64 {
                return Err(DeploymentError::new(field("componentVersion"), "must be 1 to 64 characters"));
            }
            let configuration_update = match &spec.configuration_update {
                None => None,
                Some(update) => {
                    let merge = match &update.merge {
                        None => None,
                        Some(text) => Some(
                            parse_merge(text)
                                .map_err(|m| DeploymentError::new(field("configurationUpdate.merge"), m))?,
                        ),
                    };
                    let reset = update.reset.clone().unwrap_or_default();
                    for pointer in &reset {
                        check_pointer(pointer)
                            .map_err(|m| DeploymentError::new(field("configurationUpdate.reset"), m))?;
                    }
                    Some(DocumentConfigurationUpdate { merge, reset })
                }
            };
            if let Some(l) = spec.run_with.as_ref().and_then(|r| r.system_resource_limits.as_ref()) {
                // `memory` is unsigned by type; a negative one does not parse.
                if l.cpus.is_some_and(|c| !(c >= 0.0 && c.is_finite())) {
                    return Err(DeploymentError::new(
                        field("runWith.systemResourceLimits"),
                        "cpus must be a number of cores, not negative",
                    ));
                }
                limits = true;
            }
            components.insert(
                name.clone(),
                DocumentComponent {
                    version: spec.component_version.clone(),
                    configuration_update,
                    run_with: spec.run_with.clone(),
                },
            );
        }
        let policies = request.deployment_policies.clone().unwrap_or_default();
        let update = policies.component_update_policy.unwrap_or_default();
        let component_update_policy = ComponentUpdatePolicy {
            timeout: positive(
                update.timeout_in_seconds,
                DEFAULT_COMPONENT_UPDATE_TIMEOUT_S,
                "deploymentPolicies.componentUpdatePolicy.timeoutInSeconds",
            )?,
            action: update.action.unwrap_or_default(),
        };
        let configuration_validation_policy = ValidationPolicy {
            timeout: positive(
                policies.configuration_validation_policy.and_then(|p| p.timeout_in_seconds),
                DEFAULT_CONFIGURATION_VALIDATION_TIMEOUT_S,
                "deploymentPolicies.configurationValidationPolicy.timeoutInSeconds",
            )?,
        };
        let mut required_capabilities = Vec::new();
        if limits {
            required_capabilities.push(CAPABILITY_LINUX_RESOURCE_LIMITS.to_owned());
        }
        if request.parent_target_arn.is_some() {
            required_capabilities.push(CAPABILITY_SUB_DEPLOYMENTS.to_owned());
        }
        Ok(DeploymentDocument {
            deployment_id: deployment_id.to_owned(),
            schema_date: SCHEMA_DATE.to_owned(),
            deployment_name: request.deployment_name.clone(),
            configuration_arn: configuration_arn.to_owned(),
            parent_target_arn: request.parent_target_arn.clone(),
            creation_timestamp: created_ms,
            components,
            failure_handling_policy: policies.failure_handling_policy.unwrap_or_default(),
            component_update_policy,
            configuration_validation_policy,
            required_capabilities,
        })
    }

    /// The document as a JSON object (a job document).
    pub fn to_json_object(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            // A struct of strings, numbers, maps and lists always serialises to an object.
            _ => unreachable!("a deployment document serialises to a JSON object"),
        }
    }

    /// Reads a document the way the nucleus does: unknown members ignored.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("not a deployment document: {e}"))
    }
}

fn parse_merge(text: &str) -> Result<Map<String, Value>, String> {
    if text.len() > MAX_MERGE_BYTES {
        return Err(format!("is {} bytes; the limit is {MAX_MERGE_BYTES}", text.len()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("must be a JSON object, not {}", json_kind(&other))),
        Err(e) => Err(format!("is not valid JSON: {e}")),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_pointer(pointer: &str) -> Result<(), String> {
    if pointer.chars().count() > MAX_RESET_POINTER_CHARS {
        return Err(format!("{pointer:?} is longer than {MAX_RESET_POINTER_CHARS} characters"));
    }
    if !(pointer.is_empty() || pointer.starts_with('/')) {
        return Err(format!("{pointer:?} is not a JSON pointer (it must be empty or start with '/')"));
    }
    Ok(())
}

fn positive(value: Option<i64>, default: i64, field: &str) -> Result<i64, DeploymentError> {
    match value {
        None => Ok(default),
        Some(v) if v >= 1 => Ok(v),
        Some(v) => Err(DeploymentError::new(field, format!("must be at least 1, not {v}"))),
    }
}

/// Desired state of the `AWSManagedGreengrassV2Deployment` shadow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowDeploymentDesired {
    /// The deployment document, serialised to a string.
    pub fleet_config: String,
    /// `ACTIVE`, or `CANCELED` to cancel it.
    pub desired_status: String,
}

impl ShadowDeploymentDesired {
    /// The desired state for an active deployment.
    pub fn active(document: &DeploymentDocument) -> Self {
        ShadowDeploymentDesired {
            fleet_config: serde_json::to_string(document).unwrap_or_default(),
            desired_status: "ACTIVE".into(),
        }
    }
}

/// Reported state of the `AWSManagedGreengrassV2Deployment` shadow (written by the core).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowDeploymentReported {
    /// The configuration ARN the status is about.
    #[serde(default)]
    pub fleet_configuration_arn_for_status: String,
    /// `IN_PROGRESS`, `SUCCEEDED`, `FAILED`, `REJECTED` or `CANCELED`.
    #[serde(default)]
    pub status: String,
    /// Detailed status and failure cause.
    #[serde(default)]
    pub status_details: ShadowStatusDetails,
    /// Nucleus version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ggc_version: Option<String>,
}

/// `statusDetails` of [`ShadowDeploymentReported`] (and of fleet status's deployment information).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowStatusDetails {
    /// [`DetailedDeploymentStatus`] as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detailed_status: Option<String>,
    /// Why it failed ("" when it did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_cause: Option<String>,
    /// Error codes from the most general to the most specific.
    #[serde(default)]
    pub error_stack: Vec<String>,
    /// Error types.
    #[serde(default)]
    pub error_types: Vec<String>,
}

/// `detailed-deployment-status`: what the core did with a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DetailedDeploymentStatus {
    /// Applied.
    Successful,
    /// Failed before anything changed.
    FailedNoStateChange,
    /// Failed; the policy was DO_NOTHING.
    FailedRollbackNotRequested,
    /// Failed and rolled back.
    FailedRollbackComplete,
    /// Failed and could not roll back.
    FailedUnableToRollback,
    /// Refused (stale, or a missing capability).
    Rejected,
}

impl DetailedDeploymentStatus {
    /// AWS's spelling (`SUCCESSFUL`, `FAILED_ROLLBACK_COMPLETE`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            DetailedDeploymentStatus::Successful => "SUCCESSFUL",
            DetailedDeploymentStatus::FailedNoStateChange => "FAILED_NO_STATE_CHANGE",
            DetailedDeploymentStatus::FailedRollbackNotRequested => "FAILED_ROLLBACK_NOT_REQUESTED",
            DetailedDeploymentStatus::FailedRollbackComplete => "FAILED_ROLLBACK_COMPLETE",
            DetailedDeploymentStatus::FailedUnableToRollback => "FAILED_UNABLE_TO_ROLLBACK",
            DetailedDeploymentStatus::Rejected => "REJECTED",
        }
    }

    /// The status AWS spells `text`, if it names one.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(Value::String(text.to_owned())).ok()
    }
}

/// Status detail keys a core sends in UpdateJobExecution for a deployment job.
pub mod status_keys {
    /// [`super::DetailedDeploymentStatus`].
    pub const DETAILED_STATUS: &str = "detailed-deployment-status";
    /// A sentence saying why it failed.
    pub const FAILURE_CAUSE: &str = "deployment-failure-cause";
    /// Error codes, a JSON list in a string.
    pub const ERROR_STACK: &str = "deployment-error-stack";
    /// Error types, a JSON list in a string.
    pub const ERROR_TYPES: &str = "deployment-error-types";
}

/// The deployment-specific part of a job execution's status details.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobStatusDetails {
    /// `detailed-deployment-status`, when it names a known status.
    pub detailed_status: Option<DetailedDeploymentStatus>,
    /// `deployment-failure-cause`.
    pub failure_cause: Option<String>,
    /// `deployment-error-stack`.
    pub error_stack: Vec<String>,
    /// `deployment-error-types`.
    pub error_types: Vec<String>,
}

impl JobStatusDetails {
    /// Reads the keys a core sends; an error list that is not a JSON list of
    /// strings is kept as one entry so nothing the core said is lost.
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        let list = |key: &str| match map.get(key) {
            None => Vec::new(),
            Some(text) => serde_json::from_str::<Vec<String>>(text).unwrap_or_else(|_| vec![text.clone()]),
        };
        JobStatusDetails {
            detailed_status: map.get(status_keys::DETAILED_STATUS).and_then(|s| DetailedDeploymentStatus::parse(s)),
            failure_cause: map.get(status_keys::FAILURE_CAUSE).filter(|s| !s.is_empty()).cloned(),
            error_stack: list(status_keys::ERROR_STACK),
            error_types: list(status_keys::ERROR_TYPES),
        }
    }

    /// The status details map a core sends.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        if let Some(status) = self.detailed_status {
            map.insert(status_keys::DETAILED_STATUS.to_owned(), status.as_str().to_owned());
        }
        if let Some(cause) = &self.failure_cause {
            map.insert(status_keys::FAILURE_CAUSE.to_owned(), cause.clone());
        }
        if !self.error_stack.is_empty() {
            map.insert(status_keys::ERROR_STACK.to_owned(), Value::from(self.error_stack.clone()).to_string());
        }
        if !self.error_types.is_empty() {
            map.insert(status_keys::ERROR_TYPES.to_owned(), Value::from(self.error_types.clone()).to_string());
        }
        map
    }
}

impl From<&ShadowStatusDetails> for JobStatusDetails {
    /// The same details as a thing deployment's shadow carries them.
    fn from(d: &ShadowStatusDetails) -> Self {
        JobStatusDetails {
            detailed_status: d.detailed_status.as_deref().and_then(DetailedDeploymentStatus::parse),
            failure_cause: d.failure_cause.clone().filter(|s| !s.is_empty()),
            error_stack: d.error_stack.clone(),
            error_types: d.error_types.clone(),
        }
    }
}

impl From<&crate::ipc::model::DeploymentStatusDetails> for JobStatusDetails {
    /// The details of a deployment the core finished, as it sends them to the cloud.
    fn from(d: &crate::ipc::model::DeploymentStatusDetails) -> Self {
        let status = serde_json::to_value(d.detailed_deployment_status).ok();
        JobStatusDetails {
            detailed_status: status.as_ref().and_then(Value::as_str).and_then(DetailedDeploymentStatus::parse),
            failure_cause: d.deployment_failure_cause.clone().filter(|s| !s.is_empty()),
            error_stack: d.deployment_error_stack.clone().unwrap_or_default(),
            error_types: d.deployment_error_types.clone().unwrap_or_default(),
        }
    }
}

impl From<&JobStatusDetails> for ShadowStatusDetails {
    /// The details as the nucleus writes them in the deployment shadow: `failureCause` is `""`
    /// when there is none.
    fn from(d: &JobStatusDetails) -> Self {
        ShadowStatusDetails {
            detailed_status: d.detailed_status.map(|s| s.as_str().to_owned()),
            failure_cause: Some(d.failure_cause.clone().unwrap_or_default()),
            error_stack: d.error_stack.clone(),
            error_types: d.error_types.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(body: Value) -> CreateDeploymentRequest {
        serde_json::from_value(body).unwrap()
    }

    fn build(body: Value) -> Result<DeploymentDocument, DeploymentError> {
        DeploymentDocument::build(
            &request(body),
            "d-1",
            "arn:aws:greengrass:us-east-1:000000000000:configuration:thinggroup/pumps:3",
            1_700_000_000_123,
        )
    }

    #[test]
    fn targets_parse_from_thing_and_thing_group_arns() {
        let cases = [
            ("arn:aws:iot:us-east-1:000000000000:thing/core-1", Ok(DeploymentTarget::Thing("core-1".into()))),
            ("arn:aws:iot:us-east-1:000000000000:thinggroup/pumps", Ok(DeploymentTarget::ThingGroup("pumps".into()))),
            ("arn:aws:iot:us-east-1:000000000000:policy/p", Err(())),
            ("arn:aws:greengrass:us-east-1:000000000000:thing/x", Err(())),
            ("arn:aws:iot:us-east-1::thing/x", Err(())),
            ("arn:aws:iot:us-east-1:000000000000:thing/", Err(())),
            ("arn:aws:iot:us-east-1:000000000000:thing/a b", Err(())),
            ("thing/x", Err(())),
        ];
        for (arn, want) in cases {
            assert_eq!(DeploymentTarget::parse_arn(arn).map_err(|_| ()), want, "{arn}");
        }
        let group = DeploymentTarget::ThingGroup("pumps".into());
        assert_eq!(group.arn("us-east-1", "1"), "arn:aws:iot:us-east-1:1:thinggroup/pumps");
        assert_eq!(
            group.configuration_arn("us-east-1", "1", 7),
            "arn:aws:greengrass:us-east-1:1:configuration:thinggroup/pumps:7"
        );
    }

    #[test]
    fn the_document_differs_from_the_request_as_the_nucleus_expects() {
        let doc = build(json!({
            "targetArn": "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps",
            "deploymentName": "pumps v2",
            "components": {
                "com.example.pump.Sensor": {
                    "componentVersion": "2.0.0",
                    "configurationUpdate": {"merge": "{\"pollMs\":500}", "reset": ["/limits"]}
                }
            },
            "deploymentPolicies": {
                "failureHandlingPolicy": "DO_NOTHING",
                "componentUpdatePolicy": {"timeoutInSeconds": 120, "action": "SKIP_NOTIFY_COMPONENTS"},
                "configurationValidationPolicy": {"timeoutInSeconds": 20}
            },
            "iotJobConfiguration": {"timeoutConfig": {"inProgressTimeoutInMinutes": 30}}
        }))
        .unwrap();
        let json = Value::Object(doc.to_json_object());
        assert_eq!(
            json,
            json!({
                "deploymentId": "d-1",
                "schemaDate": "2021-05-17",
                "deploymentName": "pumps v2",
                "configurationArn": "arn:aws:greengrass:us-east-1:000000000000:configuration:thinggroup/pumps:3",
                "creationTimestamp": 1_700_000_000_123_i64,
                "components": {
                    "com.example.pump.Sensor": {
                        "version": "2.0.0",
                        "configurationUpdate": {"merge": {"pollMs": 500}, "reset": ["/limits"]}
                    }
                },
                "failureHandlingPolicy": "DO_NOTHING",
                "componentUpdatePolicy": {"timeout": 120, "action": "SKIP_NOTIFY_COMPONENTS"},
                "configurationValidationPolicy": {"timeout": 20}
            })
        );
    }

    #[test]
    fn policies_default_as_the_api_documents() {
        let doc =
            build(json!({"targetArn": "arn:aws:iot:us-east-1:000000000000:thing/core-1", "components": {}})).unwrap();
        assert_eq!(doc.failure_handling_policy, FailureHandlingPolicy::Rollback);
        assert_eq!(doc.component_update_policy, ComponentUpdatePolicy::default());
        assert_eq!(doc.component_update_policy.timeout, 60);
        assert_eq!(doc.component_update_policy.action, ComponentUpdateAction::NotifyComponents);
        assert_eq!(doc.configuration_validation_policy.timeout, 30);
        assert!(doc.required_capabilities.is_empty());
    }

    #[test]
    fn resource_limits_and_sub_deployments_require_capabilities() {
        let doc = build(json!({
            "targetArn": "arn:aws:iot:us-east-1:000000000000:thinggroup/site-7",
            "parentTargetArn": "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps",
            "components": {"a": {"componentVersion": "1.0.0",
                "runWith": {"systemResourceLimits": {"memory": 102400, "cpus": 0.5}}}}
        }))
        .unwrap();
        assert_eq!(doc.required_capabilities, vec!["LINUX_RESOURCE_LIMITS", "SUB_DEPLOYMENTS"]);
    }

    #[test]
    fn bad_members_name_the_field_at_fault() {
        let target = "arn:aws:iot:us-east-1:000000000000:thing/core-1";
        let cases = [
            (json!({"targetArn": "nope"}), "targetArn"),
            (json!({"targetArn": target, "parentTargetArn": target}), "parentTargetArn"),
            (
                json!({"targetArn": target, "components": {"a": {"componentVersion": ""}}}),
                "components.a.componentVersion",
            ),
            (
                json!({"targetArn": target, "components": {"a": {"componentVersion": "1.0.0",
                    "configurationUpdate": {"merge": "{not json"}}}}),
                "components.a.configurationUpdate.merge",
            ),
            (
                json!({"targetArn": target, "components": {"a": {"componentVersion": "1.0.0",
                    "configurationUpdate": {"merge": "[1,2]"}}}}),
                "components.a.configurationUpdate.merge",
            ),
            (
                json!({"targetArn": target, "components": {"a": {"componentVersion": "1.0.0",
                    "configurationUpdate": {"reset": ["limits"]}}}}),
                "components.a.configurationUpdate.reset",
            ),
            (
                json!({"targetArn": target, "components": {"a": {"componentVersion": "1.0.0",
                    "runWith": {"systemResourceLimits": {"cpus": -0.5}}}}}),
                "components.a.runWith.systemResourceLimits",
            ),
            (
                json!({"targetArn": target, "deploymentPolicies": {"componentUpdatePolicy": {"timeoutInSeconds": 0}}}),
                "deploymentPolicies.componentUpdatePolicy.timeoutInSeconds",
            ),
        ];
        for (body, field) in cases {
            let err = build(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.field, field, "{body}: {err}");
        }
    }

    #[test]
    fn a_negative_memory_limit_does_not_parse() {
        let body = json!({"targetArn": "arn:aws:iot:us-east-1:000000000000:thing/core-1", "components": {"a":
            {"componentVersion": "1.0.0", "runWith": {"systemResourceLimits": {"memory": -1}}}}});
        assert!(serde_json::from_value::<CreateDeploymentRequest>(body).is_err());
    }

    #[test]
    fn documents_are_read_leniently_like_the_nucleus_reads_them() {
        let doc = DeploymentDocument::parse(
            br#"{"deploymentId":"d","configurationArn":"arn:c:1","creationTimestamp":1.604067741583E12,
                "componentUpdatePolicy":{"timeout":120.0,"action":"NOTIFY_COMPONENTS"},
                "somethingNew":{"x":1},"components":{"a":{"version":"1.0.0"}}}"#,
        )
        .unwrap();
        assert_eq!(doc.creation_timestamp, 1_604_067_741_583);
        assert_eq!(doc.component_update_policy.timeout, 120);
        assert_eq!(doc.configuration_validation_policy.timeout, 30);
        assert_eq!(doc.components["a"].version, "1.0.0");
        assert!(
            DeploymentDocument::parse(br#"{"deploymentId":"d","configurationArn":"a","creationTimestamp":1.5}"#)
                .is_err()
        );
        assert!(DeploymentDocument::parse(b"[]").is_err());
    }

    #[test]
    fn job_status_details_round_trip_and_keep_what_cannot_be_parsed() {
        let details = JobStatusDetails {
            detailed_status: Some(DetailedDeploymentStatus::FailedRollbackComplete),
            failure_cause: Some("Sensor broke".into()),
            error_stack: vec!["DEPLOYMENT_FAILURE".into(), "COMPONENT_BROKEN".into()],
            error_types: vec!["COMPONENT_ERROR".into()],
        };
        let map = details.to_map();
        assert_eq!(map["detailed-deployment-status"], "FAILED_ROLLBACK_COMPLETE");
        assert_eq!(map["deployment-error-stack"], r#"["DEPLOYMENT_FAILURE","COMPONENT_BROKEN"]"#);
        assert_eq!(JobStatusDetails::from_map(&map), details);

        let odd: BTreeMap<String, String> = [
            ("detailed-deployment-status".to_owned(), "SOMETHING_NEW".to_owned()),
            ("deployment-error-types".to_owned(), "not a list".to_owned()),
        ]
        .into();
        let read = JobStatusDetails::from_map(&odd);
        assert_eq!(read.detailed_status, None);
        assert_eq!(read.error_types, vec!["not a list"]);
    }

    #[test]
    fn detailed_statuses_read_as_they_are_written_and_shadow_details_convert_both_ways() {
        for s in [
            DetailedDeploymentStatus::Successful,
            DetailedDeploymentStatus::FailedNoStateChange,
            DetailedDeploymentStatus::FailedRollbackNotRequested,
            DetailedDeploymentStatus::FailedRollbackComplete,
            DetailedDeploymentStatus::FailedUnableToRollback,
            DetailedDeploymentStatus::Rejected,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), Value::String(s.as_str().into()));
            assert_eq!(DetailedDeploymentStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DetailedDeploymentStatus::parse("NEW_ONE"), None);
        let job = JobStatusDetails {
            detailed_status: Some(DetailedDeploymentStatus::FailedRollbackComplete),
            failure_cause: Some("broke".into()),
            error_stack: vec!["A".into()],
            error_types: vec!["B".into()],
        };
        let shadow = ShadowStatusDetails::from(&job);
        assert_eq!(shadow.detailed_status.as_deref(), Some("FAILED_ROLLBACK_COMPLETE"));
        assert_eq!(JobStatusDetails::from(&shadow), job);
        let none = ShadowStatusDetails::from(&JobStatusDetails::default());
        assert_eq!(none.failure_cause.as_deref(), Some(""), "the nucleus writes an empty cause");
        assert_eq!(JobStatusDetails::from(&none), JobStatusDetails::default());
    }

    #[test]
    fn the_shadow_carries_the_document_as_a_string() {
        let doc = build(json!({"targetArn": "arn:aws:iot:us-east-1:000000000000:thing/core-1"})).unwrap();
        let desired = ShadowDeploymentDesired::active(&doc);
        assert_eq!(desired.desired_status, "ACTIVE");
        assert_eq!(DeploymentDocument::parse(desired.fleet_config.as_bytes()).unwrap(), doc);
        let wire = serde_json::to_value(&desired).unwrap();
        assert!(wire["fleetConfig"].is_string());
    }
}
