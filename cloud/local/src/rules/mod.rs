//! The AWS IoT rules engine's control plane: topic rules as CreateTopicRule, GetTopicRule,
//! ListTopicRules, ReplaceTopicRule, DeleteTopicRule, EnableTopicRule and DisableTopicRule
//! keep them (AWS IoT Developer Guide, "Rules for AWS IoT"; the members and errors of `iot.json`).
//!
//! A rule is stored as its `TopicRulePayload` with the creation time, in `state.sqlite`. What is
//! checked at create and replace, as IoT Core checks it:
//! - the name: 1 to 128 of `[a-zA-Z0-9_]` (`InvalidRequestException`);
//! - the SQL: parsed as AWS IoT SQL (`SqlParseException` with the parser's message), its FROM
//!   topic filter kept as the rule's `topicPattern`; `awsIotSqlVersion` one of `2015-10-08`
//!   (the default, as on AWS), `2016-03-23` and `beta`;
//! - the actions: at most 10, each an object with exactly one action; the actions this local cloud
//!   runs are `republish`, `lambda`, `dynamoDBv2`, `s3`, `cloudwatchMetric` and `cloudwatchAlarm`,
//!   with their required members (AWS IoT Developer Guide, "AWS IoT rule actions") — any
//!   other kind is refused with a message naming it, rather than stored and silently not run;
//!   `errorAction` the same, one action.
//!
//! A missing rule is `UnauthorizedException`, as IoT Core answers GetTopicRule and
//! DeleteTopicRule (the model lists no not-found error for them).
//!
//! # Layout
//! - this file: the rules and their checks;
//! - [`http`]: the restJson1 routes.

pub mod engine;
pub mod http;

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Store, StoreError};
use crate::time::SharedClock;

const K_RULE: &str = "topic_rule";

/// Most actions one rule may have.
pub const MAX_ACTIONS: usize = 10;
/// The SQL versions IoT Core accepts; the first is the default.
pub const SQL_VERSIONS: [&str; 3] = ["2015-10-08", "2016-03-23", "beta"];
/// The actions this local cloud runs, and the members each requires.
pub const RUNNABLE_ACTIONS: [(&str, &[&str]); 6] = [
    ("republish", &["roleArn", "topic"]),
    ("lambda", &["functionArn"]),
    ("dynamoDBv2", &["roleArn", "putItem"]),
    ("s3", &["roleArn", "bucketName", "key"]),
    ("cloudwatchMetric", &["roleArn", "metricNamespace", "metricName", "metricValue", "metricUnit"]),
    ("cloudwatchAlarm", &["roleArn", "alarmName", "stateReason", "stateValue"]),
];

/// What CreateTopicRule and ReplaceTopicRule send (`TopicRulePayload`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicRulePayload {
    /// `sql`.
    #[serde(default)]
    pub sql: String,
    /// `description`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `actions`, each `{"kind": {…}}`.
    #[serde(default)]
    pub actions: Vec<Value>,
    /// `ruleDisabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_disabled: Option<bool>,
    /// `awsIotSqlVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_iot_sql_version: Option<String>,
    /// `errorAction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_action: Option<Value>,
}

/// A stored rule, as GetTopicRule's `rule` reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopicRule {
    /// `ruleName`.
    pub rule_name: String,
    /// `sql`.
    pub sql: String,
    /// `description`.
    #[serde(default)]
    pub description: String,
    /// `createdAt`, epoch seconds.
    pub created_at: u64,
    /// `actions`.
    pub actions: Vec<Value>,
    /// `ruleDisabled`.
    pub rule_disabled: bool,
    /// `awsIotSqlVersion`.
    pub aws_iot_sql_version: String,
    /// `errorAction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_action: Option<Value>,
    /// The FROM clause's topic filter (ListTopicRules' `topicPattern`).
    pub topic_pattern: String,
}

/// Why a rule operation failed; each maps to an IoT Core exception.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// `InvalidRequestException` (400).
    #[error("{0}")]
    InvalidRequest(String),
    /// `SqlParseException` (400).
    #[error("{0}")]
    SqlParse(String),
    /// `ResourceAlreadyExistsException` (409).
    #[error("{0}")]
    AlreadyExists(String),
    /// `UnauthorizedException` (401): what IoT Core answers for a rule that does not exist.
    #[error("{0}")]
    NoSuchRule(String),
    /// State could not be read or written.
    #[error("state: {0}")]
    Store(#[from] StoreError),
}

/// The topic rules of the account.
#[derive(Debug, Clone)]
pub struct TopicRules {
    store: Store,
    clock: SharedClock,
    region: String,
    account: String,
    /// Every rule, read again after each write (on the control plane's thread, so the broker's
    /// path never reads the store): what the engine evaluates each message against.
    cache: Arc<RwLock<Option<Arc<Vec<TopicRule>>>>>,
}

impl TopicRules {
    /// The rules kept in `store`, with ARNs in `region` and `account`.
    pub fn new(store: Store, clock: SharedClock, region: &str, account: &str) -> Self {
        let rules = TopicRules { store, clock, region: region.into(), account: account.into(), cache: Arc::default() };
        rules.changed();
        rules
    }

    /// `arn:aws:iot:{region}:{account}:rule/{name}`.
    pub fn arn(&self, name: &str) -> String {
        format!("arn:aws:iot:{}:{}:rule/{name}", self.region, self.account)
    }

    /// CreateTopicRule.
    pub fn create(&self, name: &str, payload: TopicRulePayload) -> Result<TopicRule, RuleError> {
        check_rule_name(name)?;
        let rule = checked(name, payload, self.clock.now_secs())?;
        if self.store.get(K_RULE, name)?.is_some() {
            return Err(RuleError::AlreadyExists(format!("Rule {name} already exists")));
        }
        self.save(&rule)?;
        Ok(rule)
    }

    /// GetTopicRule.
    pub fn get(&self, name: &str) -> Result<TopicRule, RuleError> {
        let text = self.store.get(K_RULE, name)?.ok_or_else(|| no_such_rule(name))?;
        serde_json::from_str(&text)
            .map_err(|e| RuleError::InvalidRequest(format!("stored rule {name} is unreadable: {e}")))
    }

    /// Every rule, sorted by name (ListTopicRules pages over it).
    pub fn list(&self) -> Result<Vec<TopicRule>, RuleError> {
        let mut all: Vec<TopicRule> =
            self.store.all(K_RULE)?.into_iter().filter_map(|(_, t)| serde_json::from_str(&t).ok()).collect();
        all.sort_by(|a, b| a.rule_name.cmp(&b.rule_name));
        Ok(all)
    }

    /// Every rule (as [`Self::list`]), read from the store only after a change.
    pub fn snapshot(&self) -> Result<Arc<Vec<TopicRule>>, RuleError> {
        if let Some(rules) = self.cache.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            return Ok(rules.clone());
        }
        let rules = Arc::new(self.list()?);
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Some(rules.clone());
        Ok(rules)
    }

    /// The account's region and id.
    pub fn account(&self) -> (&str, &str) {
        (&self.region, &self.account)
    }

    /// After a write: the rules read again now (or, if that fails, on the next snapshot).
    fn changed(&self) {
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = self.list().ok().map(Arc::new);
    }

    /// ReplaceTopicRule: a new payload for an existing rule (its creation time kept).
    pub fn replace(&self, name: &str, payload: TopicRulePayload) -> Result<TopicRule, RuleError> {
        let old = self.get(name)?;
        let rule = checked(name, payload, old.created_at)?;
        self.save(&rule)?;
        Ok(rule)
    }

    /// DeleteTopicRule.
    pub fn delete(&self, name: &str) -> Result<(), RuleError> {
        self.get(name)?;
        self.store.delete(K_RULE, name)?;
        self.changed();
        Ok(())
    }

    /// EnableTopicRule (`true`) and DisableTopicRule (`false`).
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<TopicRule, RuleError> {
        let mut rule = self.get(name)?;
        rule.rule_disabled = !enabled;
        self.save(&rule)?;
        Ok(rule)
    }

    fn save(&self, rule: &TopicRule) -> Result<(), RuleError> {
        let text = serde_json::to_string(rule).map_err(|e| RuleError::InvalidRequest(e.to_string()))?;
        self.store.put(K_RULE, &rule.rule_name, &text)?;
        self.changed();
        Ok(())
    }
}

fn no_such_rule(name: &str) -> RuleError {
    RuleError::NoSuchRule(format!("Rule {name} does not exist"))
}

/// A rule name: 1 to 128 of `[a-zA-Z0-9_]`.
pub fn check_rule_name(name: &str) -> Result<(), RuleError> {
    let ok = (1..=128).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    ok.then_some(()).ok_or_else(|| {
        RuleError::InvalidRequest(format!(
            "ruleName {name:?} must be 1 to 128 characters of letters, digits and underscores"
        ))
    })
}

/// The rule `payload` describes, checked.
fn checked(name: &str, payload: TopicRulePayload, created_at: u64) -> Result<TopicRule, RuleError> {
    let version = payload.aws_iot_sql_version.unwrap_or_else(|| SQL_VERSIONS[0].to_owned());
    if !SQL_VERSIONS.contains(&version.as_str()) {
        return Err(RuleError::InvalidRequest(format!(
            "awsIotSqlVersion {version:?} is not one of {}",
            SQL_VERSIONS.join(", ")
        )));
    }
    if payload.sql.trim().is_empty() {
        return Err(RuleError::InvalidRequest("sql is required".into()));
    }
    let statement = cloud_api::rules::parse(&payload.sql).map_err(|e| RuleError::SqlParse(e.to_string()))?;
    if payload.actions.len() > MAX_ACTIONS {
        return Err(RuleError::InvalidRequest(format!(
            "a rule has at most {MAX_ACTIONS} actions, not {}",
            payload.actions.len()
        )));
    }
    for (i, action) in payload.actions.iter().enumerate() {
        check_action(action).map_err(|why| RuleError::InvalidRequest(format!("actions[{i}]: {why}")))?;
    }
    if let Some(action) = &payload.error_action {
        check_action(action).map_err(|why| RuleError::InvalidRequest(format!("errorAction: {why}")))?;
    }
    Ok(TopicRule {
        rule_name: name.to_owned(),
        sql: payload.sql,
        description: payload.description.unwrap_or_default(),
        created_at,
        actions: payload.actions,
        rule_disabled: payload.rule_disabled.unwrap_or(false),
        aws_iot_sql_version: version,
        error_action: payload.error_action,
        topic_pattern: statement.from.unwrap_or_default(),
    })
}

/// One action: an object with exactly one key, a kind this local cloud runs, with the members
/// that kind requires.
pub fn check_action(action: &Value) -> Result<(), String> {
    let Some(obj) = action.as_object() else { return Err("an action must be an object".into()) };
    let mut kinds = obj.iter().filter(|(_, v)| !v.is_null());
    let (Some((kind, body)), None) = (kinds.next(), kinds.next()) else {
        return Err(format!("an action names exactly one kind, not {}", obj.len()));
    };
    let Some((_, required)) = RUNNABLE_ACTIONS.iter().find(|(k, _)| k == kind) else {
        let runnable: Vec<&str> = RUNNABLE_ACTIONS.iter().map(|(k, _)| *k).collect();
        return Err(format!("the local cloud does not run {kind} actions (it runs {})", runnable.join(", ")));
    };
    for member in *required {
        if body.get(member).is_none_or(|v| v.is_null() || v.as_str() == Some("")) {
            return Err(format!("a {kind} action needs {member}"));
        }
    }
    if kind == "dynamoDBv2" && body["putItem"].get("tableName").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err("a dynamoDBv2 action needs putItem.tableName".into());
    }
    if kind == "republish" && body.get("qos").is_some_and(|q| !matches!(q.as_u64(), Some(0 | 1))) {
        return Err("a republish action's qos is 0 or 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> TopicRules {
        TopicRules::new(Store::in_memory().unwrap(), crate::time::system(), "us-east-1", "123456789012")
    }

    fn payload(sql: &str, actions: Vec<Value>) -> TopicRulePayload {
        TopicRulePayload { sql: sql.into(), actions, ..Default::default() }
    }

    fn republish() -> Value {
        json!({"republish": {"roleArn": "arn:aws:iam::123456789012:role/r", "topic": "out/${topic(2)}"}})
    }

    #[test]
    fn a_rule_is_created_read_listed_disabled_replaced_and_deleted() {
        let rules = rules();
        let created = rules.create("pump_anomalies", payload("SELECT * FROM 'dt/pump/+/anomalies'", vec![republish()]));
        let created = created.unwrap();
        assert_eq!(created.topic_pattern, "dt/pump/+/anomalies");
        assert_eq!(created.aws_iot_sql_version, "2015-10-08", "AWS's default");
        assert!(!created.rule_disabled);
        assert_eq!(rules.get("pump_anomalies").unwrap(), created);
        assert!(matches!(
            rules.create("pump_anomalies", payload("SELECT * FROM 'a'", vec![])),
            Err(RuleError::AlreadyExists(_))
        ));

        assert!(rules.set_enabled("pump_anomalies", false).unwrap().rule_disabled);
        let replaced = rules.replace("pump_anomalies", payload("SELECT speed FROM 'dt/pump/#'", vec![])).unwrap();
        assert_eq!((replaced.topic_pattern.as_str(), replaced.created_at), ("dt/pump/#", created.created_at));
        assert_eq!(rules.list().unwrap().len(), 1);

        rules.delete("pump_anomalies").unwrap();
        assert!(matches!(rules.get("pump_anomalies"), Err(RuleError::NoSuchRule(_))));
        assert!(matches!(rules.delete("pump_anomalies"), Err(RuleError::NoSuchRule(_))));
        assert!(matches!(rules.set_enabled("pump_anomalies", true), Err(RuleError::NoSuchRule(_))));
    }

    #[test]
    fn cloudwatch_actions_with_their_members_are_accepted() {
        let metric = json!({"cloudwatchMetric": {"roleArn": "r", "metricNamespace": "Pump/${topic(3)}",
            "metricName": "SpeedRpm", "metricValue": "${speedRpm}", "metricUnit": "None", "metricTimestamp": "${ts}"}});
        let alarm = json!({"cloudwatchAlarm": {"roleArn": "r", "alarmName": "pump-trip", "stateValue": "ALARM",
            "stateReason": "tripped on ${topic(3)}"}});
        for action in [metric, alarm] {
            assert_eq!(check_action(&action), Ok(()), "{action}");
        }
    }

    #[test]
    fn bad_names_sql_versions_and_actions_are_refused_with_the_reason() {
        let rules = rules();
        let ok_sql = "SELECT * FROM 'a/b'";
        for name in ["", "has-dash", "has space", &"x".repeat(129)] {
            assert!(matches!(rules.create(name, payload(ok_sql, vec![])), Err(RuleError::InvalidRequest(_))), "{name}");
        }
        assert!(matches!(rules.create("r", payload("SELEKT * FROM 'a'", vec![])), Err(RuleError::SqlParse(_))));
        let mut bad_version = payload(ok_sql, vec![]);
        bad_version.aws_iot_sql_version = Some("2020-01-01".into());
        assert!(
            matches!(rules.create("r", bad_version), Err(RuleError::InvalidRequest(m)) if m.contains("2016-03-23"))
        );
        let cases: [(Value, &str); 9] = [
            (json!({"sqs": {"queueUrl": "q", "roleArn": "r"}}), "does not run sqs actions"),
            (json!({"lambda": {}}), "needs functionArn"),
            (json!({"republish": {"roleArn": "r", "topic": "t", "qos": 2}}), "qos is 0 or 1"),
            (json!({"dynamoDBv2": {"roleArn": "r", "putItem": {}}}), "putItem.tableName"),
            (json!({"s3": {"roleArn": "r", "bucketName": "b"}}), "needs key"),
            (
                json!({"cloudwatchMetric": {"roleArn": "r", "metricNamespace": "n", "metricName": "m", "metricValue": "1"}}),
                "needs metricUnit",
            ),
            (
                json!({"cloudwatchAlarm": {"roleArn": "r", "alarmName": "a", "stateValue": "ALARM"}}),
                "needs stateReason",
            ),
            (
                json!({"lambda": {"functionArn": "f"}, "s3": {"roleArn": "r", "bucketName": "b", "key": "k"}}),
                "exactly one",
            ),
            (json!("lambda"), "must be an object"),
        ];
        for (action, why) in cases {
            match rules.create("r", payload(ok_sql, vec![action.clone()])) {
                Err(RuleError::InvalidRequest(m)) => assert!(m.contains(why) && m.contains("actions[0]"), "{m}"),
                other => panic!("{action}: {other:?}"),
            }
        }
        let too_many = vec![republish(); MAX_ACTIONS + 1];
        assert!(matches!(rules.create("r", payload(ok_sql, too_many)), Err(RuleError::InvalidRequest(_))));
        let mut bad_error_action = payload(ok_sql, vec![republish()]);
        bad_error_action.error_action = Some(json!({"lambda": {}}));
        assert!(
            matches!(rules.create("r", bad_error_action), Err(RuleError::InvalidRequest(m)) if m.starts_with("errorAction"))
        );
        assert!(rules.list().unwrap().is_empty(), "nothing refused was stored");
    }
}
