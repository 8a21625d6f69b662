//! What the service-delivery audit observed: the live deployment read through the AWS SDK
//! ([`super::collect`]) and the measured figures of a run (the demo's `report.json`, the model
//! card, the price list). Plain data: the checklist's predicates ([`super::checklist`]) read it,
//! the evidence files ([`super::output`]) are written from it.

use serde::Serialize;
use serde_json::Value;

use super::Report;

/// Everything the checklist is decided on.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The account the resources belong to.
    pub account: Account,
    /// AWS IoT Core: registry, policies, rules, jobs, indexing, provisioning templates.
    pub iot: Iot,
    /// AWS IoT Greengrass V2.
    pub greengrass: Greengrass,
    /// Lambda functions.
    pub functions: Vec<Function>,
    /// DynamoDB table names.
    pub tables: Vec<String>,
    /// S3 bucket names.
    pub buckets: Vec<String>,
    /// IAM roles that a rule, a function or a role alias uses.
    pub roles: Vec<Role>,
    /// CloudWatch alarms.
    pub alarms: Vec<Alarm>,
    /// CloudWatch Logs log group names.
    pub log_groups: Vec<String>,
    /// The security audit of policies, certificates and role aliases (Device Defender style).
    pub security: Option<Report>,
    /// The demo's `report.json`, when given.
    pub run: Option<Value>,
    /// `components/model/model-card.json`, when found.
    pub model_card: Option<Value>,
    /// `docs/prices.json`, when found.
    pub prices: Option<Value>,
}

/// The account ID and where it was read from.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    /// The 12-digit account ID, when any resource's ARN names it.
    pub id: Option<String>,
    /// The ARN it was read from.
    pub source: Option<String>,
    /// The region of the clients.
    pub region: Option<String>,
}

/// AWS IoT Core's resources.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Iot {
    /// Things with their groups.
    pub things: Vec<Thing>,
    /// Thing groups with their things.
    pub thing_groups: Vec<ThingGroup>,
    /// Certificates with status and expiry.
    pub certificates: Vec<Certificate>,
    /// Policies with their default documents.
    pub policies: Vec<Policy>,
    /// Topic rules.
    pub rules: Vec<Rule>,
    /// Jobs (a certificate rotation is a job whose document is the rotation document).
    pub jobs: Vec<Job>,
    /// Fleet indexing: the thing indexing mode and connectivity indexing.
    pub indexing: Indexing,
    /// Fleet provisioning templates.
    pub provisioning_templates: Vec<ProvisioningTemplate>,
    /// Role aliases with their roles.
    pub role_aliases: Vec<RoleAlias>,
}

/// A thing.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Thing {
    /// Name.
    pub name: String,
    /// The groups it is in.
    pub groups: Vec<String>,
}

/// A thing group.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingGroup {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Its things.
    pub things: Vec<String>,
}

/// A certificate.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificate {
    /// Certificate id.
    pub id: String,
    /// `ACTIVE`, `INACTIVE`, `REVOKED`, …
    pub status: String,
    /// notAfter, epoch seconds, when known.
    pub not_after: Option<i64>,
    /// The things it is attached to.
    pub things: Vec<String>,
}

/// An IoT policy.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Name.
    pub name: String,
    /// The default version's document.
    pub document: Value,
}

/// A topic rule.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Name.
    pub name: String,
    /// The SQL statement.
    pub sql: String,
    /// Whether it is disabled.
    pub disabled: bool,
    /// Its actions' kinds (`lambda`, `s3`, `dynamoDBv2`, `republish`, `cloudwatchMetric`, …) with
    /// their target (function ARN, bucket, table, topic, metric).
    pub actions: Vec<RuleAction>,
    /// Its error action's kind, when it has one.
    pub error_action: Option<String>,
}

/// One action of a rule.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RuleAction {
    /// The action's kind.
    pub kind: String,
    /// What it acts on.
    pub target: String,
    /// The role it acts with, when it has one.
    pub role_arn: Option<String>,
}

/// A job.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Job id.
    pub id: String,
    /// `IN_PROGRESS`, `COMPLETED`, `CANCELED`, …
    pub status: String,
    /// Whether its document is the certificate-rotation document.
    pub rotation: bool,
    /// Its executions: (thing, status).
    pub executions: Vec<(String, String)>,
}

/// Fleet indexing.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Indexing {
    /// `OFF`, `REGISTRY`, `REGISTRY_AND_SHADOW`.
    pub thing_indexing_mode: String,
    /// `OFF` or `STATUS`.
    pub thing_connectivity_indexing_mode: String,
}

/// A fleet provisioning template.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningTemplate {
    /// Name.
    pub name: String,
    /// Whether it is enabled.
    pub enabled: bool,
}

/// A role alias.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleAlias {
    /// The alias.
    pub alias: String,
    /// The role's ARN.
    pub role_arn: String,
}

/// AWS IoT Greengrass V2's resources.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Greengrass {
    /// The account's own components.
    pub components: Vec<Component>,
    /// Deployments, newest first.
    pub deployments: Vec<Deployment>,
    /// Core devices with what they run.
    pub core_devices: Vec<CoreDevice>,
}

/// A component of the account.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    /// Name.
    pub name: String,
    /// Every version, oldest first.
    pub versions: Vec<String>,
    /// Whether the latest version's recipe declares `accessControl`.
    pub access_control: bool,
}

/// A deployment.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// Deployment id.
    pub id: String,
    /// The thing or thing group it targets.
    pub target_arn: String,
    /// `ACTIVE`, `COMPLETED`, `CANCELED`, `FAILED`, `INACTIVE`.
    pub status: String,
    /// Whether it is the target's current revision.
    pub latest: bool,
    /// When it was created, epoch seconds.
    pub created: Option<i64>,
    /// Its components and versions.
    pub components: Vec<(String, String)>,
}

/// A Greengrass core device.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CoreDevice {
    /// Its thing.
    pub thing: String,
    /// `HEALTHY` or `UNHEALTHY`.
    pub status: String,
    /// Its installed components: (name, version, lifecycle state).
    pub components: Vec<(String, String, String)>,
}

/// A Lambda function.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Function {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Runtime.
    pub runtime: String,
    /// Execution role ARN.
    pub role: String,
}

/// An IAM role.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Role {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Its inline policies: (name, document).
    pub inline_policies: Vec<(String, Value)>,
}

/// A CloudWatch alarm.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Alarm {
    /// Name.
    pub name: String,
    /// Namespace/metric it watches (`metrics` for a metric-math alarm).
    pub metric: String,
    /// `OK`, `ALARM`, `INSUFFICIENT_DATA`.
    pub state: String,
}

impl Evidence {
    /// The run report's step with key `key` ([`super::steps`]), when there is a run.
    pub fn run_step(&self, key: &str) -> Option<&Value> {
        self.run_steps().iter().find(|s| s["key"] == key)
    }

    /// The run report's steps (none without a run).
    fn run_steps(&self) -> &[Value] {
        self.run.as_ref().and_then(|r| r.get("steps")).and_then(Value::as_array).map_or(&[], Vec::as_slice)
    }

    /// Whether the run's step `key` passed; the reason when not. A report whose steps carry no
    /// key is an old one: nothing is matched by wording, the check says to run the demo again.
    pub fn run_step_passed(&self, what: &str, key: &str) -> Result<String, String> {
        if self.run.is_none() {
            return Err(format!("{what}: no run report was given (--report)"));
        }
        if !self.run_steps().is_empty() && self.run_steps().iter().all(|s| s.get("key").is_none()) {
            return Err(format!(
                "{what}: the run report's steps have no keys (a report from before step keys): run the demo again"
            ));
        }
        match self.run_step(key) {
            Some(s) if s["passed"] == true => Ok(format!(
                "{what}: step {} ({key}) of the run held ({:.1} s)",
                s["name"].as_str().unwrap_or("?"),
                s["seconds"].as_f64().unwrap_or_default()
            )),
            Some(s) => Err(format!("{what}: step {} ({key}) of the run failed", s["name"].as_str().unwrap_or("?"))),
            None => Err(format!("{what}: the run report has no step {key}")),
        }
    }

    /// The run's figures for the IoT Core topics matching `pattern` (`+` matches one level).
    pub fn run_topics(&self, pattern: &str) -> Vec<(&str, &Value)> {
        let Some(topics) = self.run.as_ref().and_then(|r| r.get("topics")).and_then(Value::as_object) else {
            return Vec::new();
        };
        topics.iter().filter(|(t, _)| topic_matches(pattern, t)).map(|(t, v)| (t.as_str(), v)).collect()
    }

    /// The components deployed to any core (the latest revision of each target).
    pub fn deployed_components(&self) -> Vec<&(String, String)> {
        self.greengrass.deployments.iter().filter(|d| d.latest).flat_map(|d| d.components.iter()).collect()
    }

    /// The things that are Greengrass core devices.
    pub fn core_things(&self) -> Vec<&str> {
        self.greengrass.core_devices.iter().map(|c| c.thing.as_str()).collect()
    }
}

/// Whether an MQTT topic matches a filter with `+` (one level) and a trailing `#`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_filters_match_one_level_with_plus_and_the_rest_with_hash() {
        assert!(topic_matches("dt/pump/+/telemetry", "dt/pump/core-1/telemetry"));
        assert!(!topic_matches("dt/pump/+/telemetry", "dt/pump/core-1/anomalies"));
        assert!(!topic_matches("dt/pump/+", "dt/pump/a/b"));
        assert!(topic_matches("$aws/things/+/shadow/#", "$aws/things/t/shadow/name/pump/update"));
    }
}
