//! IoT policy documents: `{"Version":"2012-10-17","Statement":[…]}`, parsed and
//! validated as CreatePolicy does ("AWS IoT Core policies" and "AWS IoT policy
//! elements" in the AWS IoT Core Developer Guide; element grammar from "IAM JSON
//! policy elements", which IoT policies follow). Every string a statement
//! matches with is compiled here, once, so evaluation never re-parses.

use serde_json::{Map, Value};

use super::pattern::{Pattern, Variable};

/// Why a policy document is refused (CreatePolicy answers `MalformedPolicyException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed policy: {0}")]
pub struct PolicyError(pub String);

/// The only policy-language version IoT Core accepts ("Must be set to
/// 2012-10-17"); it is also the first version with policy variables.
pub const POLICY_LANGUAGE_VERSION: &str = "2012-10-17";

/// Longest policy document CreatePolicy accepts, in characters, whitespace excluded.
pub const MAX_POLICY_DOCUMENT_CHARS: usize = 2048;

/// Whether a statement grants or refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// `"Effect": "Allow"`.
    Allow,
    /// `"Effect": "Deny"`: wins over every Allow.
    Deny,
}

/// A parsed, validated IoT policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    statements: Vec<Statement>,
}

/// One statement of a policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    sid: Option<String>,
    effect: Effect,
    pub(crate) actions: PatternList,
    pub(crate) resources: PatternList,
    pub(crate) conditions: Vec<Condition>,
}

/// `Action`/`NotAction` or `Resource`/`NotResource`: the patterns and which of the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternList {
    /// `NotAction`/`NotResource`: the statement covers everything the patterns do not.
    pub(crate) negated: bool,
    pub(crate) patterns: Vec<Pattern>,
}

/// One `"Operator": {"key": values}` entry of a `Condition` block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub(crate) kind: OperatorKind,
    /// `StringNotEquals`, `ArnNotLike`, `NotIpAddress`, …: true when no value matches.
    pub(crate) negated: bool,
    pub(crate) qualifier: SetQualifier,
    /// `…IfExists`: true when the key is absent.
    pub(crate) if_exists: bool,
    pub(crate) key: Variable,
    pub(crate) values: ConditionValues,
}

/// The comparison a condition operator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OperatorKind {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    /// `ArnEquals` and `ArnLike` both take `*`/`?` wildcards.
    Arn,
    Bool,
    Numeric(NumericComparison),
    /// Date, IP address and binary operators: accepted, but no key IoT Core
    /// fills here holds such a value, so a present key never matches.
    Unsupported,
    Null,
}

/// How a `Numeric…` operator compares the key with the policy value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumericComparison {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

/// `ForAllValues:` / `ForAnyValue:` set qualifiers for multi-valued keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetQualifier {
    Single,
    ForAllValues,
    ForAnyValue,
}

/// A condition's policy values, compiled for its operator.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConditionValues {
    Patterns(Vec<Pattern>),
    Bools(Vec<bool>),
    Numbers(Vec<f64>),
    Raw,
}

impl PolicyDocument {
    /// Parses and validates a policy document as CreatePolicy does.
    ///
    /// Element names are case-sensitive. The document must be a JSON object
    /// with `Version` `"2012-10-17"` and a non-empty `Statement` (one object or
    /// an array); each statement needs `Effect` (`Allow`/`Deny`), exactly one of
    /// `Action`/`NotAction` and exactly one of `Resource`/`NotResource` (a string
    /// or a non-empty array of strings), and may have `Sid` and `Condition`.
    pub fn parse(json: &str) -> Result<Self, PolicyError> {
        let chars = json.chars().filter(|c| !c.is_whitespace()).count();
        if chars > MAX_POLICY_DOCUMENT_CHARS {
            return Err(err(format!(
                "the document has {chars} characters without whitespace, the limit is {MAX_POLICY_DOCUMENT_CHARS}"
            )));
        }
        let value: Value = serde_json::from_str(json).map_err(|e| err(format!("not valid JSON: {e}")))?;
        let Value::Object(root) = value else {
            return Err(err("the document must be a JSON object"));
        };
        for key in root.keys() {
            if !matches!(key.as_str(), "Version" | "Statement" | "Id") {
                return Err(err(format!(
                    "unknown top-level element {key:?} (expected \"Version\", \"Statement\", \"Id\"; names are case-sensitive)"
                )));
            }
        }
        match root.get("Version") {
            Some(Value::String(v)) if v == POLICY_LANGUAGE_VERSION => {}
            Some(Value::String(v)) => {
                return Err(err(format!(
                    "\"Version\" is {v:?}; AWS IoT Core policies must use \"{POLICY_LANGUAGE_VERSION}\""
                )));
            }
            Some(_) => return Err(err("\"Version\" must be the string \"2012-10-17\"")),
            None => return Err(err("\"Version\" is missing; set it to \"2012-10-17\"")),
        }
        let raw_statements: Vec<&Value> = match root.get("Statement") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one @ Value::Object(_)) => vec![one],
            Some(_) => return Err(err("\"Statement\" must be an object or an array of objects")),
            None => return Err(err("\"Statement\" is missing")),
        };
        if raw_statements.is_empty() {
            return Err(err("\"Statement\" must hold at least one statement"));
        }
        let statements = raw_statements
            .into_iter()
            .enumerate()
            .map(|(i, s)| Statement::parse(s).map_err(|PolicyError(m)| err(format!("Statement[{i}]: {m}"))))
            .collect::<Result<_, _>>()?;
        Ok(PolicyDocument { statements })
    }

    /// The statements, in document order.
    pub fn statements(&self) -> &[Statement] {
        &self.statements
    }
}

impl Statement {
    /// The statement id, if given.
    pub fn sid(&self) -> Option<&str> {
        self.sid.as_deref()
    }

    /// Allow or Deny.
    pub fn effect(&self) -> Effect {
        self.effect
    }

    /// The action patterns as written (`iot:Publish`, `iot:*`, …).
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.actions.patterns.iter().map(Pattern::raw)
    }

    /// Whether the actions were given as `NotAction` (the statement covers every other action).
    pub fn is_not_action(&self) -> bool {
        self.actions.negated
    }

    /// The resource patterns as written (ARNs with `*`, `?` and policy variables).
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.resources.patterns.iter().map(Pattern::raw)
    }

    /// Whether the resources were given as `NotResource` (the statement covers every other resource).
    pub fn is_not_resource(&self) -> bool {
        self.resources.negated
    }

    /// Whether the statement has a `Condition` block.
    pub fn has_conditions(&self) -> bool {
        !self.conditions.is_empty()
    }

    fn parse(value: &Value) -> Result<Statement, PolicyError> {
        let Value::Object(obj) = value else {
            return Err(err("a statement must be a JSON object"));
        };
        for key in obj.keys() {
            match key.as_str() {
                "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource" | "Condition" => {}
                "Principal" | "NotPrincipal" => {
                    return Err(err(format!(
                        "{key:?} is not allowed: an IoT policy applies to the principals it is attached to"
                    )));
                }
                _ => {
                    return Err(err(format!(
                        "unknown element {key:?} (expected Sid, Effect, Action, NotAction, Resource, NotResource, \
                         Condition; names are case-sensitive)"
                    )));
                }
            }
        }
        let sid = match obj.get("Sid") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(err("\"Sid\" must be a string")),
        };
        let effect = match obj.get("Effect") {
            Some(Value::String(s)) if s == "Allow" => Effect::Allow,
            Some(Value::String(s)) if s == "Deny" => Effect::Deny,
            Some(other) => return Err(err(format!("\"Effect\" must be \"Allow\" or \"Deny\", got {other}"))),
            None => return Err(err("\"Effect\" is missing")),
        };
        let actions = pattern_list(obj, "Action", "NotAction", |raw| {
            check_action(raw)?;
            Ok(Pattern::compile(raw, true, false))
        })?;
        let resources = pattern_list(obj, "Resource", "NotResource", |raw| {
            check_resource(raw)?;
            Ok(Pattern::compile(raw, true, true))
        })?;
        let conditions = match obj.get("Condition") {
            None => Vec::new(),
            Some(Value::Object(block)) => parse_conditions(block)?,
            Some(_) => return Err(err("\"Condition\" must be an object")),
        };
        Ok(Statement { sid, effect, actions, resources, conditions })
    }
}

fn err(message: impl Into<String>) -> PolicyError {
    PolicyError(message.into())
}

fn pattern_list(
    obj: &Map<String, Value>,
    name: &str,
    not_name: &str,
    compile: impl Fn(&str) -> Result<Pattern, PolicyError>,
) -> Result<PatternList, PolicyError> {
    let (negated, value) = match (obj.get(name), obj.get(not_name)) {
        (Some(v), None) => (false, v),
        (None, Some(v)) => (true, v),
        (Some(_), Some(_)) => return Err(err(format!("give either \"{name}\" or \"{not_name}\", not both"))),
        (None, None) => return Err(err(format!("\"{name}\" (or \"{not_name}\") is missing"))),
    };
    let field = if negated { not_name } else { name };
    let strings =
        string_or_array(value).ok_or_else(|| err(format!("\"{field}\" must be a string or an array of strings")))?;
    if strings.is_empty() {
        return Err(err(format!("\"{field}\" must not be empty")));
    }
    let patterns = strings.into_iter().map(compile).collect::<Result<_, _>>()?;
    Ok(PatternList { negated, patterns })
}

fn string_or_array(value: &Value) -> Option<Vec<&str>> {
    match value {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// `*` or `service:action`, where either part may hold wildcards.
fn check_action(raw: &str) -> Result<(), PolicyError> {
    let valid = raw == "*"
        || raw.split_once(':').is_some_and(|(service, action)| {
            !service.is_empty()
                && !action.is_empty()
                && service.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '*' | '?'))
                && !action.contains(char::is_whitespace)
        });
    if valid {
        Ok(())
    } else {
        Err(err(format!("action {raw:?} is not \"*\" or \"service:action\" (e.g. \"iot:Publish\")")))
    }
}

/// `*` or an ARN `arn:partition:service:region:account:resource`.
fn check_resource(raw: &str) -> Result<(), PolicyError> {
    if raw == "*" || (raw.starts_with("arn:") && raw.splitn(6, ':').count() == 6) {
        Ok(())
    } else {
        Err(err(format!(
            "resource {raw:?} is not \"*\" or an ARN like \"arn:aws:iot:us-east-1:123456789012:topic/my/topic\""
        )))
    }
}

fn parse_conditions(block: &Map<String, Value>) -> Result<Vec<Condition>, PolicyError> {
    let mut conditions = Vec::new();
    for (operator, entries) in block {
        let Value::Object(entries) = entries else {
            return Err(err(format!("condition {operator:?} must map keys to values")));
        };
        if entries.is_empty() {
            return Err(err(format!("condition {operator:?} has no keys")));
        }
        let (qualifier, rest) = if let Some(rest) = operator.strip_prefix("ForAllValues:") {
            (SetQualifier::ForAllValues, rest)
        } else if let Some(rest) = operator.strip_prefix("ForAnyValue:") {
            (SetQualifier::ForAnyValue, rest)
        } else {
            (SetQualifier::Single, operator.as_str())
        };
        let (if_exists, base) = match rest.strip_suffix("IfExists") {
            Some(base) => (true, base),
            None => (false, rest),
        };
        let (kind, negated) = operator_kind(base).ok_or_else(|| {
            err(format!(
                "unknown condition operator {operator:?} (e.g. \"StringEquals\", \"StringLike\", \"ArnLike\", \"Bool\")"
            ))
        })?;
        if kind == OperatorKind::Null && if_exists {
            return Err(err("\"NullIfExists\" is not an operator: Null already tests whether the key exists"));
        }
        for (key, raw_values) in entries {
            let values = condition_strings(raw_values).ok_or_else(|| {
                err(format!("condition {operator:?} {key:?}: values must be strings, numbers or booleans"))
            })?;
            if values.is_empty() {
                return Err(err(format!("condition {operator:?} {key:?} has no values")));
            }
            let values = compile_values(kind, &values)
                .map_err(|PolicyError(m)| err(format!("condition {operator:?} {key:?}: {m}")))?;
            conditions.push(Condition { kind, negated, qualifier, if_exists, key: Variable::parse(key), values });
        }
    }
    Ok(conditions)
}

fn operator_kind(name: &str) -> Option<(OperatorKind, bool)> {
    use NumericComparison as N;
    use OperatorKind as K;
    Some(match name {
        "StringEquals" => (K::StringEquals, false),
        "StringNotEquals" => (K::StringEquals, true),
        "StringEqualsIgnoreCase" => (K::StringEqualsIgnoreCase, false),
        "StringNotEqualsIgnoreCase" => (K::StringEqualsIgnoreCase, true),
        "StringLike" => (K::StringLike, false),
        "StringNotLike" => (K::StringLike, true),
        "ArnEquals" | "ArnLike" => (K::Arn, false),
        "ArnNotEquals" | "ArnNotLike" => (K::Arn, true),
        "Bool" => (K::Bool, false),
        "Null" => (K::Null, false),
        "NumericEquals" => (K::Numeric(N::Equals), false),
        "NumericNotEquals" => (K::Numeric(N::Equals), true),
        "NumericLessThan" => (K::Numeric(N::LessThan), false),
        "NumericLessThanEquals" => (K::Numeric(N::LessThanEquals), false),
        "NumericGreaterThan" => (K::Numeric(N::GreaterThan), false),
        "NumericGreaterThanEquals" => (K::Numeric(N::GreaterThanEquals), false),
        "DateEquals"
        | "DateLessThan"
        | "DateLessThanEquals"
        | "DateGreaterThan"
        | "DateGreaterThanEquals"
        | "IpAddress"
        | "BinaryEquals" => (K::Unsupported, false),
        "DateNotEquals" | "NotIpAddress" => (K::Unsupported, true),
        _ => return None,
    })
}

/// A condition value: a string, a number or a boolean, or an array of them.
fn condition_strings(value: &Value) -> Option<Vec<String>> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        Value::Array(items) => items.iter().map(one).collect(),
        other => one(other).map(|s| vec![s]),
    }
}

fn compile_values(kind: OperatorKind, values: &[String]) -> Result<ConditionValues, PolicyError> {
    Ok(match kind {
        OperatorKind::StringEquals | OperatorKind::StringEqualsIgnoreCase => {
            ConditionValues::Patterns(values.iter().map(|v| Pattern::compile(v, false, true)).collect())
        }
        OperatorKind::StringLike | OperatorKind::Arn => {
            ConditionValues::Patterns(values.iter().map(|v| Pattern::compile(v, true, true)).collect())
        }
        OperatorKind::Bool | OperatorKind::Null => ConditionValues::Bools(
            values
                .iter()
                .map(|v| parse_bool(v).ok_or_else(|| err(format!("{v:?} is not \"true\" or \"false\""))))
                .collect::<Result<_, _>>()?,
        ),
        OperatorKind::Numeric(_) => ConditionValues::Numbers(
            values
                .iter()
                .map(|v| v.trim().parse::<f64>().map_err(|_| err(format!("{v:?} is not a number"))))
                .collect::<Result<_, _>>()?,
        ),
        OperatorKind::Unsupported => ConditionValues::Raw,
    })
}

pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(json: &str) -> String {
        match PolicyDocument::parse(json) {
            Ok(doc) => panic!("accepted {json}: {doc:?}"),
            Err(PolicyError(m)) => m,
        }
    }

    const ALLOW_CONNECT: &str =
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}"#;

    #[test]
    fn minimal_document_parses() {
        let doc = PolicyDocument::parse(ALLOW_CONNECT).unwrap();
        let [s] = doc.statements() else { panic!("one statement") };
        assert_eq!(s.effect(), Effect::Allow);
        assert_eq!(s.actions().collect::<Vec<_>>(), ["iot:Connect"]);
        assert_eq!(s.resources().collect::<Vec<_>>(), ["*"]);
        assert!(!s.is_not_action() && !s.is_not_resource() && !s.has_conditions());
    }

    #[test]
    fn action_and_resource_take_a_string_or_an_array() {
        let doc = PolicyDocument::parse(
            r#"{"Version":"2012-10-17","Statement":{"Sid":"s1","Effect":"Deny",
                "NotAction":["iot:Publish","iot:Receive"],
                "NotResource":["arn:aws:iot:us-east-1:123456789012:topic/a","arn:aws:iot:us-east-1:123456789012:topic/b"]}}"#,
        )
        .unwrap();
        let [s] = doc.statements() else { panic!("one statement") };
        assert_eq!(s.sid(), Some("s1"));
        assert_eq!(s.effect(), Effect::Deny);
        assert!(s.is_not_action() && s.is_not_resource());
        assert_eq!(s.actions().count(), 2);
        assert_eq!(s.resources().count(), 2);
    }

    #[test]
    fn conditions_parse_for_documented_operators() {
        let doc = PolicyDocument::parse(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Publish","Resource":"*",
              "Condition":{
                "Bool":{"iot:Connection.Thing.IsAttached":["true"]},
                "StringEquals":{"iot:Connection.Thing.Attributes[Floor]":"2","iot:Connection.Thing.ThingTypeName":"Lamp"},
                "StringLike":{"iot:ClientId":"lamp-*"},
                "ArnLike":{"iot:ClientId":"arn:*"},
                "ForAllValues:StringEquals":{"iot:Certificate.Subject.Organization.List":["Example Corp","AnyCompany"]},
                "StringEqualsIfExists":{"iot:Certificate.Subject.Country":"US"},
                "NumericLessThan":{"iot:Connection.Thing.Attributes[Floor]":10},
                "Null":{"iot:ClientId":false},
                "IpAddress":{"aws:SourceIp":"123.45.167.89"}
              }}]}"#,
        )
        .unwrap();
        assert_eq!(doc.statements()[0].conditions.len(), 10);
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not valid JSON"),
            ("[]", "must be a JSON object"),
            (r#"{"Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#, "\"Version\" is missing"),
            (
                r#"{"Version":"2008-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#,
                "must use \"2012-10-17\"",
            ),
            (r#"{"Version":20121017,"Statement":[]}"#, "\"Version\" must be the string"),
            (r#"{"Version":"2012-10-17"}"#, "\"Statement\" is missing"),
            (r#"{"Version":"2012-10-17","Statement":[]}"#, "at least one statement"),
            (r#"{"Version":"2012-10-17","Statement":"x"}"#, "\"Statement\" must be an object"),
            (r#"{"Version":"2012-10-17","Statement":["x"]}"#, "Statement[0]: a statement must be a JSON object"),
            (r#"{"version":"2012-10-17","Statement":[]}"#, "unknown top-level element \"version\""),
            (r#"{"Version":"2012-10-17","Statement":[{"Action":"iot:*","Resource":"*"}]}"#, "\"Effect\" is missing"),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"allow","Action":"iot:*","Resource":"*"}]}"#,
                "\"Effect\" must be \"Allow\" or \"Deny\"",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
                "\"Action\" (or \"NotAction\") is missing",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","NotAction":"iot:Publish","Resource":"*"}]}"#,
                "either \"Action\" or \"NotAction\"",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}"#,
                "\"Action\" must not be empty",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[1],"Resource":"*"}]}"#,
                "\"Action\" must be a string or an array of strings",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"Publish","Resource":"*"}]}"#,
                "action \"Publish\"",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*"}]}"#,
                "\"Resource\" (or \"NotResource\") is missing",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"topic/a"}]}"#,
                "resource \"topic/a\"",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Principal":"*"}]}"#,
                "\"Principal\" is not allowed",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","resource":"*"}]}"#,
                "unknown element \"resource\"",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"StringEqualz":{"iot:ClientId":"a"}}}]}"#,
                "unknown condition operator \"StringEqualz\"",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"Bool":{"iot:Connection.Thing.IsAttached":"yes"}}}]}"#,
                "\"yes\" is not \"true\" or \"false\"",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"StringEquals":{"iot:ClientId":[]}}}]}"#,
                "has no values",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"StringEquals":{"iot:ClientId":{"a":1}}}}]}"#,
                "values must be strings",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"NullIfExists":{"iot:ClientId":"true"}}}]}"#,
                "\"NullIfExists\" is not an operator",
            ),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*","Condition":{"NumericEquals":{"iot:ClientId":"one"}}}]}"#,
                "\"one\" is not a number",
            ),
        ];
        for (json, want) in cases {
            let got = parse_err(json);
            assert!(got.contains(want), "{json}\n  got: {got}\n  want: …{want}…");
        }
    }

    #[test]
    fn documents_over_2048_non_whitespace_characters_are_refused() {
        let resources: Vec<String> =
            (0..60).map(|i| format!("\"arn:aws:iot:us-east-1:123456789012:topic/t{i:04}\"")).collect();
        let json = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:Publish","Resource":[{}]}}]}}"#,
            resources.join(",")
        );
        assert!(parse_err(&json).contains("the limit is 2048"));
        // Whitespace does not count.
        let padded = ALLOW_CONNECT.replace(',', &format!(",{}", " ".repeat(3000)));
        assert!(PolicyDocument::parse(&padded).is_ok());
    }

    #[test]
    fn greengrass_and_other_service_actions_are_accepted() {
        let json = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["greengrass:*","iot:Publish*","*"],"Resource":"*"}]}"#;
        assert!(PolicyDocument::parse(json).is_ok());
    }
}
