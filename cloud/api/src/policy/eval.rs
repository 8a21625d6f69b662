//! Policy evaluation: explicit Deny beats Allow, default deny ("AWS IoT Core
//! policies", which follow "Policy evaluation logic" of the IAM User Guide).
//!
//! A statement applies when its action, its resource and every condition match.
//! Policy variables are filled from [`AuthContext`]; a variable with no value
//! cannot match ("IAM policy elements: Variables": a key that is not present
//! makes the match fail): a `Resource` entry using it matches nothing, a
//! `NotResource` list or a condition using it makes the statement not apply.
//! Thing variables resolve only when [`AuthContext::thing_name`] is set, and a
//! certificate attribute that holds `*`/`?` or more than 1024 characters is not
//! substituted ("X.509 certificate policy variable limitations").

use std::collections::BTreeMap;

use super::PolicyDocument;
use super::document::{
    Condition, ConditionValues, NumericComparison, OperatorKind, SetQualifier, Statement, parse_bool,
};
use super::pattern::{Match, Variable};

/// An IoT action a principal asks to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `iot:Connect`, resource `client/{clientId}`.
    Connect,
    /// `iot:Publish`, resource `topic/{topic}`.
    Publish,
    /// `iot:Subscribe`, resource `topicfilter/{filter}`.
    Subscribe,
    /// `iot:Receive`, resource `topic/{topic}`.
    Receive,
    /// `iot:RetainPublish`, resource `topic/{topic}`.
    RetainPublish,
    /// `iot:GetThingShadow`, resource `thing/{thing}`.
    GetThingShadow,
    /// `iot:UpdateThingShadow`, resource `thing/{thing}`.
    UpdateThingShadow,
    /// `iot:DeleteThingShadow`, resource `thing/{thing}`.
    DeleteThingShadow,
    /// `iot:ListNamedShadowsForThing`, resource `thing/{thing}`.
    ListNamedShadowsForThing,
    /// `iot:AssumeRoleWithCertificate`, resource `rolealias/{alias}`.
    AssumeRoleWithCertificate,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 10] = [
        Action::Connect,
        Action::Publish,
        Action::Subscribe,
        Action::Receive,
        Action::RetainPublish,
        Action::GetThingShadow,
        Action::UpdateThingShadow,
        Action::DeleteThingShadow,
        Action::ListNamedShadowsForThing,
        Action::AssumeRoleWithCertificate,
    ];

    /// The action named `name` in policies (`iot:Publish`), ignoring ASCII case as IAM does.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str().eq_ignore_ascii_case(name))
    }

    /// The resource type its ARN names: `client`, `topic`, `topicfilter`, `thing` or `rolealias`.
    pub fn resource_type(&self) -> &'static str {
        match self {
            Action::Connect => "client",
            Action::Publish | Action::Receive | Action::RetainPublish => "topic",
            Action::Subscribe => "topicfilter",
            Action::GetThingShadow
            | Action::UpdateThingShadow
            | Action::DeleteThingShadow
            | Action::ListNamedShadowsForThing => "thing",
            Action::AssumeRoleWithCertificate => "rolealias",
        }
    }

    /// The action's name in policies, e.g. `iot:Publish`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Connect => "iot:Connect",
            Action::Publish => "iot:Publish",
            Action::Subscribe => "iot:Subscribe",
            Action::Receive => "iot:Receive",
            Action::RetainPublish => "iot:RetainPublish",
            Action::GetThingShadow => "iot:GetThingShadow",
            Action::UpdateThingShadow => "iot:UpdateThingShadow",
            Action::DeleteThingShadow => "iot:DeleteThingShadow",
            Action::ListNamedShadowsForThing => "iot:ListNamedShadowsForThing",
            Action::AssumeRoleWithCertificate => "iot:AssumeRoleWithCertificate",
        }
    }
}

/// What is known about the principal and its connection, for policy variables and conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthContext {
    /// Region of the ARNs, e.g. `us-east-1`.
    pub region: String,
    /// Account id of the ARNs.
    pub account_id: String,
    /// The MQTT client id (`${iot:ClientId}`), when connected over MQTT.
    pub client_id: Option<String>,
    /// The thing the connection is evaluated for: the thing attached to the
    /// certificate whose name equals the client id (`${iot:Connection.Thing.ThingName}`).
    pub thing_name: Option<String>,
    /// That thing's type (`${iot:Connection.Thing.ThingTypeName}`).
    pub thing_type_name: Option<String>,
    /// That thing's attributes (`${iot:Connection.Thing.Attributes[name]}`).
    pub thing_attributes: BTreeMap<String, String>,
    /// `iot:Connection.Thing.IsAttached`: a thing named like the client id is attached to the certificate.
    pub is_attached: bool,
    /// The certificate id of the principal.
    pub certificate_id: Option<String>,
    /// Subject attributes of the certificate, by name (`CommonName`, `Organization`, …).
    pub certificate_subject: BTreeMap<String, String>,
    /// For a role policy evaluated for credentials the AWS IoT credentials provider issued:
    /// what the `credentials-iot:` variables stand for. `None` everywhere else (they then
    /// match nothing, as in an IoT policy).
    pub credentials_iot: Option<CredentialsIot>,
}

/// The `credentials-iot:` policy variables of temporary credentials issued by the AWS IoT
/// credentials provider ("Authorizing direct calls to AWS services using AWS IoT Core
/// credential provider": thing variables only when the request named the thing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialsIot {
    /// `credentials-iot:ThingName`: the `x-amzn-iot-thingname` of the request, if any.
    pub thing_name: Option<String>,
    /// `credentials-iot:ThingTypeName`: that thing's type, if it has one.
    pub thing_type_name: Option<String>,
    /// `credentials-iot:AwsCertificateId`: the certificate the credentials were issued to.
    pub certificate_id: String,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An Allow statement matched and no Deny did.
    Allow,
    /// A Deny statement matched.
    ExplicitDeny,
    /// Nothing matched: denied by default.
    ImplicitDeny,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Evaluates `action` on `resource` (a full ARN) for a principal with these policies.
pub fn evaluate(policies: &[PolicyDocument], action: Action, resource: &str, ctx: &AuthContext) -> Decision {
    evaluate_action(policies, action.as_str(), resource, ctx)
}

/// Like [`evaluate`] for an action given by name (`iot:DescribeJobExecution`,
/// `greengrass:Discover`, …), for actions [`Action`] does not list.
pub fn evaluate_action(policies: &[PolicyDocument], action: &str, resource: &str, ctx: &AuthContext) -> Decision {
    let mut allowed = false;
    for statement in policies.iter().flat_map(PolicyDocument::statements) {
        if !statement_applies(statement, action, resource, ctx) {
            continue;
        }
        match statement.effect() {
            super::Effect::Deny => return Decision::ExplicitDeny,
            super::Effect::Allow => allowed = true,
        }
    }
    if allowed { Decision::Allow } else { Decision::ImplicitDeny }
}

pub(crate) fn statement_applies(statement: &Statement, action: &str, resource: &str, ctx: &AuthContext) -> bool {
    // Action names ignore case; they hold no variables.
    let action_listed = statement.actions.patterns.iter().any(|p| p.matches(action, true, |_| None) == Match::Yes);
    if action_listed == statement.actions.negated {
        return false;
    }
    let resolve = |v: &Variable| ctx.resolve(v);
    let resources = &statement.resources;
    let resource_ok = if resources.negated {
        resources.patterns.iter().all(|p| p.matches(resource, false, resolve) == Match::No)
    } else {
        resources.patterns.iter().any(|p| p.matches(resource, false, resolve) == Match::Yes)
    };
    resource_ok && statement.conditions.iter().all(|c| condition_holds(c, ctx))
}

fn condition_holds(condition: &Condition, ctx: &AuthContext) -> bool {
    let value = ctx.key_value(&condition.key);
    if condition.kind == OperatorKind::Null {
        let ConditionValues::Bools(wanted) = &condition.values else { return false };
        return wanted.contains(&value.is_none());
    }
    let Some(value) = value else {
        // IAM: an absent key fails a condition, except that negated operators,
        // `…IfExists` and `ForAllValues` hold, and `ForAnyValue` fails.
        return condition.if_exists
            || match condition.qualifier {
                SetQualifier::ForAllValues => true,
                SetQualifier::ForAnyValue => false,
                SetQualifier::Single => condition.negated,
            };
    };
    // Every key here holds at most one value, so both set qualifiers reduce to
    // the per-value test.
    let resolve = |v: &Variable| ctx.resolve(v);
    let any = match (&condition.values, condition.kind) {
        (ConditionValues::Patterns(patterns), kind) => {
            let ignore_case = kind == OperatorKind::StringEqualsIgnoreCase;
            let mut any = false;
            for p in patterns {
                match p.matches(value, ignore_case, resolve) {
                    Match::Yes => any = true,
                    Match::No => {}
                    Match::Unresolved => return false,
                }
            }
            any
        }
        (ConditionValues::Bools(wanted), _) => parse_bool(value).is_some_and(|v| wanted.contains(&v)),
        (ConditionValues::Numbers(wanted), OperatorKind::Numeric(cmp)) => {
            value.trim().parse::<f64>().is_ok_and(|v| wanted.iter().any(|w| compare(cmp, v, *w)))
        }
        _ => false,
    };
    any != condition.negated
}

fn compare(cmp: NumericComparison, key: f64, policy: f64) -> bool {
    match cmp {
        NumericComparison::Equals => key == policy,
        NumericComparison::LessThan => key < policy,
        NumericComparison::LessThanEquals => key <= policy,
        NumericComparison::GreaterThan => key > policy,
        NumericComparison::GreaterThanEquals => key >= policy,
    }
}

/// Longest certificate attribute IoT Core substitutes.
const MAX_CERTIFICATE_ATTRIBUTE_CHARS: usize = 1024;

impl AuthContext {
    /// The value a policy variable stands for, `None` when it has none.
    fn resolve(&self, variable: &Variable) -> Option<&str> {
        match variable {
            Variable::CertificateSubjectList(_) => None,
            other => self.key_value(other),
        }
    }

    /// The value of a condition key, `None` when the request has none.
    fn key_value(&self, key: &Variable) -> Option<&str> {
        let thing = self.thing_name.as_deref();
        match key {
            Variable::ClientId => self.client_id.as_deref(),
            Variable::ThingName => thing,
            Variable::ThingTypeName => thing.and(self.thing_type_name.as_deref()),
            Variable::ThingAttribute(name) => thing.and(self.thing_attributes.get(name).map(String::as_str)),
            Variable::IsAttached => Some(if self.is_attached { "true" } else { "false" }),
            Variable::CertificateSubject { attribute, index: 0 } | Variable::CertificateSubjectList(attribute) => {
                self.certificate_attribute(attribute)
            }
            Variable::CredentialsThingName => self.credentials_iot.as_ref()?.thing_name.as_deref(),
            Variable::CredentialsThingTypeName => self.credentials_iot.as_ref()?.thing_type_name.as_deref(),
            Variable::CredentialsCertificateId => Some(self.credentials_iot.as_ref()?.certificate_id.as_str()),
            Variable::CertificateSubject { .. } | Variable::Unknown(_) => None,
        }
    }

    fn certificate_attribute(&self, attribute: &str) -> Option<&str> {
        let (_, value) = self.certificate_subject.iter().find(|(k, _)| k.eq_ignore_ascii_case(attribute))?;
        let substitutable = !value.contains(['*', '?']) && value.chars().count() <= MAX_CERTIFICATE_ATTRIBUTE_CHARS;
        substitutable.then_some(value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::arn;

    const REGION: &str = "us-east-1";
    const ACCOUNT: &str = "123456789012";

    fn doc(statements: &str) -> PolicyDocument {
        let json = format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#);
        PolicyDocument::parse(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    /// A connection whose client id is an attached thing's name.
    fn thing(name: &str) -> AuthContext {
        AuthContext {
            region: REGION.into(),
            account_id: ACCOUNT.into(),
            client_id: Some(name.into()),
            thing_name: Some(name.into()),
            is_attached: true,
            ..AuthContext::default()
        }
    }

    /// A connection with no thing attached under its client id.
    fn unattached(client_id: &str) -> AuthContext {
        AuthContext { client_id: Some(client_id.into()), thing_name: None, is_attached: false, ..thing(client_id) }
    }

    fn topic(t: &str) -> String {
        arn::topic(REGION, ACCOUNT, t)
    }

    fn client(c: &str) -> String {
        arn::client(REGION, ACCOUNT, c)
    }

    fn decide(policy: &PolicyDocument, action: Action, resource: &str, ctx: &AuthContext) -> Decision {
        evaluate(std::slice::from_ref(policy), action, resource, ctx)
    }

    const THING_SCOPED: &str = r#"
        {"Effect":"Allow","Action":"iot:Connect",
         "Resource":"arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"},
        {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],
         "Resource":"arn:aws:iot:us-east-1:123456789012:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"},
        {"Effect":"Allow","Action":"iot:Subscribe",
         "Resource":"arn:aws:iot:us-east-1:123456789012:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"}"#;

    #[test]
    fn least_privilege_thing_policy_allows_its_own_thing_and_denies_another() {
        let policy = doc(THING_SCOPED);
        let me = thing("lamp-1");
        let cases: &[(Action, String, Decision)] = &[
            (Action::Connect, client("lamp-1"), Decision::Allow),
            (Action::Connect, client("lamp-2"), Decision::ImplicitDeny),
            (Action::Publish, topic("$aws/things/lamp-1/shadow/update"), Decision::Allow),
            (Action::Publish, topic("$aws/things/lamp-1/shadow/name/cfg/update"), Decision::Allow),
            (Action::Publish, topic("$aws/things/lamp-2/shadow/update"), Decision::ImplicitDeny),
            (Action::Receive, topic("$aws/things/lamp-1/shadow/update/delta"), Decision::Allow),
            (Action::Receive, topic("$aws/things/lamp-2/shadow/update/delta"), Decision::ImplicitDeny),
            (
                Action::Subscribe,
                arn::topic_filter(REGION, ACCOUNT, "$aws/things/lamp-1/shadow/update/#"),
                Decision::Allow,
            ),
            (
                Action::Subscribe,
                arn::topic_filter(REGION, ACCOUNT, "$aws/things/+/shadow/update/#"),
                Decision::ImplicitDeny,
            ),
            (Action::Subscribe, topic("$aws/things/lamp-1/shadow/update"), Decision::ImplicitDeny),
            (Action::Publish, topic("other/topic"), Decision::ImplicitDeny),
            (Action::GetThingShadow, arn::thing(REGION, ACCOUNT, "lamp-1"), Decision::ImplicitDeny),
            (
                Action::Publish,
                arn::topic("eu-west-1", ACCOUNT, "$aws/things/lamp-1/shadow/update"),
                Decision::ImplicitDeny,
            ),
        ];
        for (action, resource, want) in cases {
            assert_eq!(decide(&policy, *action, resource, &me), *want, "{action:?} {resource}");
        }
        // The same client id without an attached thing gets nothing.
        assert_eq!(decide(&policy, Action::Connect, &client("lamp-1"), &unattached("lamp-1")), Decision::ImplicitDeny);
    }

    #[test]
    fn default_is_implicit_deny() {
        assert_eq!(evaluate(&[], Action::Connect, &client("a"), &thing("a")), Decision::ImplicitDeny);
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"*"}"#);
        assert_eq!(decide(&policy, Action::Connect, &client("a"), &thing("a")), Decision::ImplicitDeny);
        assert!(!Decision::ImplicitDeny.is_allowed() && !Decision::ExplicitDeny.is_allowed());
        assert!(Decision::Allow.is_allowed());
    }

    #[test]
    fn explicit_deny_beats_allow() {
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:*","Resource":"*"},
               {"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/secret/*"}"#);
        assert_eq!(decide(&policy, Action::Publish, &topic("secret/a"), &thing("t")), Decision::ExplicitDeny);
        assert_eq!(decide(&policy, Action::Publish, &topic("public/a"), &thing("t")), Decision::Allow);
    }

    #[test]
    fn explicit_deny_in_one_policy_beats_allow_in_another() {
        let allow = doc(r#"{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}"#);
        let deny = doc(r#"{"Effect":"Deny","Action":"iot:Connect","Resource":"*"}"#);
        for policies in [[allow.clone(), deny.clone()], [deny, allow]] {
            assert_eq!(evaluate(&policies, Action::Connect, &client("t"), &thing("t")), Decision::ExplicitDeny);
        }
    }

    #[test]
    fn action_wildcards_and_case() {
        let cases: &[(&str, Action, bool)] = &[
            ("iot:*", Action::Subscribe, true),
            ("*", Action::AssumeRoleWithCertificate, true),
            ("iot:Publish*", Action::Publish, true),
            ("iot:Publish*", Action::Receive, false),
            ("iot:*ThingShadow", Action::UpdateThingShadow, true),
            ("iot:*ThingShadow", Action::ListNamedShadowsForThing, false),
            ("iot:?onnect", Action::Connect, true),
            ("iot:publish", Action::Publish, true),
            ("IOT:PUBLISH", Action::Publish, true),
            ("iot:Publish", Action::RetainPublish, false),
            ("greengrass:*", Action::Publish, false),
        ];
        for (pattern, action, want) in cases {
            let policy = doc(&format!(r#"{{"Effect":"Allow","Action":"{pattern}","Resource":"*"}}"#));
            let got = decide(&policy, *action, "arn:aws:iot:us-east-1:123456789012:x/y", &thing("t")).is_allowed();
            assert_eq!(got, *want, "{pattern} vs {action:?}");
        }
    }

    #[test]
    fn actions_outside_the_enum_evaluate_by_name() {
        let policy = doc(r#"{"Effect":"Allow","Action":["greengrass:Discover","iot:*JobExecution*"],"Resource":"*"}"#);
        let thing_arn = arn::thing(REGION, ACCOUNT, "t");
        for (action, want) in [
            ("greengrass:Discover", true),
            ("iot:DescribeJobExecution", true),
            ("iot:GetPendingJobExecutions", true),
            ("greengrass:Other", false),
        ] {
            assert_eq!(
                evaluate_action(std::slice::from_ref(&policy), action, &thing_arn, &thing("t")).is_allowed(),
                want
            );
        }
    }

    #[test]
    fn resource_wildcards_star_and_question_mark() {
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:Publish","Resource":[
                "arn:aws:iot:us-east-1:123456789012:topic/sensors/*/temp",
                "arn:aws:iot:*:123456789012:topic/room?"]}"#);
        let cases: &[(String, bool)] = &[
            (topic("sensors/a/temp"), true),
            (topic("sensors/a/b/temp"), true), // `*` crosses levels: it is not MQTT `+`
            (topic("sensors/a/humidity"), false),
            (topic("room1"), true),
            (arn::topic("eu-west-1", ACCOUNT, "room2"), true),
            (topic("room12"), false),
            (topic("room"), false),
        ];
        for (resource, want) in cases {
            assert_eq!(decide(&policy, Action::Publish, resource, &thing("t")).is_allowed(), *want, "{resource}");
        }
    }

    #[test]
    fn mqtt_wildcards_are_literal_in_resources() {
        let policy = doc(
            r#"{"Effect":"Allow","Action":"iot:Subscribe","Resource":"arn:aws:iot:us-east-1:123456789012:topicfilter/sensors/+/temp"},
               {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/sensors/#"}"#,
        );
        let filter = |f: &str| arn::topic_filter(REGION, ACCOUNT, f);
        assert!(decide(&policy, Action::Subscribe, &filter("sensors/+/temp"), &thing("t")).is_allowed());
        assert!(!decide(&policy, Action::Subscribe, &filter("sensors/a/temp"), &thing("t")).is_allowed());
        assert!(!decide(&policy, Action::Publish, &topic("sensors/a"), &thing("t")).is_allowed());
    }

    #[test]
    fn resources_are_case_sensitive() {
        let policy = doc(
            r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/Sensor"}"#,
        );
        assert!(decide(&policy, Action::Publish, &topic("Sensor"), &thing("t")).is_allowed());
        assert!(!decide(&policy, Action::Publish, &topic("sensor"), &thing("t")).is_allowed());
    }

    #[test]
    fn client_id_variable_is_substituted() {
        let policy = doc(
            r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/my/topic/${iot:ClientId}"}"#,
        );
        assert!(decide(&policy, Action::Publish, &topic("my/topic/c1"), &unattached("c1")).is_allowed());
        assert!(!decide(&policy, Action::Publish, &topic("my/topic/c2"), &unattached("c1")).is_allowed());
        let no_client = AuthContext { client_id: None, ..unattached("c1") };
        assert!(!decide(&policy, Action::Publish, &topic("my/topic/c1"), &no_client).is_allowed());
    }

    #[test]
    fn substituted_client_id_with_wildcards_matches_only_literally() {
        let policy = doc(
            r#"{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/${iot:ClientId}"}"#,
        );
        let sneaky = unattached("*");
        assert!(decide(&policy, Action::Connect, &client("*"), &sneaky).is_allowed());
        assert!(!decide(&policy, Action::Connect, &client("victim"), &sneaky).is_allowed());
    }

    #[test]
    fn thing_name_variable_unresolved_does_not_match() {
        let policy = doc(
            r#"{"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}"}"#,
        );
        assert!(decide(&policy, Action::Connect, &client("lamp-1"), &thing("lamp-1")).is_allowed());
        assert_eq!(decide(&policy, Action::Connect, &client("lamp-1"), &unattached("lamp-1")), Decision::ImplicitDeny);
        // Nor does the unresolved variable turn into an empty string.
        assert_eq!(decide(&policy, Action::Connect, &client(""), &unattached("")), Decision::ImplicitDeny);
    }

    #[test]
    fn unresolved_entry_does_not_block_other_resource_entries() {
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:Connect","Resource":[
                "arn:aws:iot:us-east-1:123456789012:client/${iot:Connection.Thing.ThingName}",
                "arn:aws:iot:us-east-1:123456789012:client/provisioning-*"]}"#);
        assert!(
            decide(&policy, Action::Connect, &client("provisioning-42"), &unattached("provisioning-42")).is_allowed()
        );
    }

    #[test]
    fn deny_with_unresolved_variable_does_not_apply() {
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"*"},
               {"Effect":"Deny","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.ThingName}/*"},
               {"Effect":"Deny","Action":"iot:Publish","NotResource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.ThingTypeName}/*"}"#);
        assert_eq!(decide(&policy, Action::Publish, &topic("x/y"), &unattached("x")), Decision::Allow);
    }

    #[test]
    fn thing_type_and_attribute_variables_are_substituted() {
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:Publish","Resource":[
                "arn:aws:iot:us-east-1:123456789012:topic/type/${iot:Connection.Thing.ThingTypeName}",
                "arn:aws:iot:us-east-1:123456789012:topic/floor/${iot:Connection.Thing.Attributes[Floor]}/*"]}"#);
        let mut ctx = thing("lamp-1");
        ctx.thing_type_name = Some("Lamp".into());
        ctx.thing_attributes.insert("Floor".into(), "2".into());
        for (t, want) in [("type/Lamp", true), ("type/Fan", false), ("floor/2/x", true), ("floor/3/x", false)] {
            assert_eq!(decide(&policy, Action::Publish, &topic(t), &ctx).is_allowed(), want, "{t}");
        }
        // Attribute names are case-sensitive; a missing attribute does not resolve.
        let mut other = ctx.clone();
        other.thing_attributes = [("floor".to_owned(), "2".to_owned())].into();
        assert!(!decide(&policy, Action::Publish, &topic("floor/2/x"), &other).is_allowed());
        // Without a thing, its type and attributes do not resolve either.
        let no_thing = AuthContext { thing_name: None, is_attached: false, ..ctx };
        assert!(!decide(&policy, Action::Publish, &topic("type/Lamp"), &no_thing).is_allowed());
    }

    #[test]
    fn certificate_subject_variables_are_substituted() {
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:Publish","Resource":[
                "arn:aws:iot:us-east-1:123456789012:topic/cn/${iot:Certificate.Subject.CommonName}",
                "arn:aws:iot:us-east-1:123456789012:topic/org/${iot:Certificate.Subject.Organization.0}",
                "arn:aws:iot:us-east-1:123456789012:topic/org1/${iot:Certificate.Subject.Organization.1}",
                "arn:aws:iot:us-east-1:123456789012:topic/list/${iot:Certificate.Subject.Organization.List}"]}"#);
        let mut ctx = unattached("c");
        ctx.certificate_subject =
            [("CommonName".to_owned(), "dev-7".to_owned()), ("Organization".to_owned(), "Acme".to_owned())].into();
        let cases =
            [("cn/dev-7", true), ("cn/dev-8", false), ("org/Acme", true), ("org1/Acme", false), ("list/Acme", false)];
        for (t, want) in cases {
            assert_eq!(decide(&policy, Action::Publish, &topic(t), &ctx).is_allowed(), want, "{t}");
        }
    }

    #[test]
    fn certificate_attribute_with_wildcards_or_over_1024_chars_is_not_substituted() {
        let policy = doc(
            r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/cn/${iot:Certificate.Subject.CommonName}"}"#,
        );
        let with_cn = |cn: &str| {
            let mut ctx = unattached("c");
            ctx.certificate_subject.insert("CommonName".into(), cn.into());
            ctx
        };
        assert!(!decide(&policy, Action::Publish, &topic("cn/dev*"), &with_cn("dev*")).is_allowed());
        assert!(!decide(&policy, Action::Publish, &topic("cn/dev?"), &with_cn("dev?")).is_allowed());
        let long = "a".repeat(1025);
        assert!(!decide(&policy, Action::Publish, &topic(&format!("cn/{long}")), &with_cn(&long)).is_allowed());
        let max = "a".repeat(1024);
        assert!(decide(&policy, Action::Publish, &topic(&format!("cn/{max}")), &with_cn(&max)).is_allowed());
    }

    #[test]
    fn literal_escapes_match_special_characters() {
        let policy = doc(
            r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/a${*}b${?}c${$}d"}"#,
        );
        assert!(decide(&policy, Action::Publish, &topic("a*b?c$d"), &thing("t")).is_allowed());
        assert!(!decide(&policy, Action::Publish, &topic("aXb?c$d"), &thing("t")).is_allowed());
        assert!(!decide(&policy, Action::Publish, &topic("a*bXc$d"), &thing("t")).is_allowed());
    }

    #[test]
    fn unknown_variable_never_resolves() {
        let policy = doc(
            r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:Nope}"}"#,
        );
        assert!(!decide(&policy, Action::Publish, &topic("${iot:Nope}"), &thing("t")).is_allowed());
        assert!(!decide(&policy, Action::Publish, &topic(""), &thing("t")).is_allowed());
    }

    #[test]
    fn is_attached_condition_gates_the_statement() {
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:Connect","Resource":"*",
                "Condition":{"Bool":{"iot:Connection.Thing.IsAttached":["true"]}}}"#);
        assert!(decide(&policy, Action::Connect, &client("t"), &thing("t")).is_allowed());
        assert!(!decide(&policy, Action::Connect, &client("t"), &unattached("t")).is_allowed());
        let as_json_bool = doc(
            r#"{"Effect":"Deny","Action":"iot:Connect","Resource":"*","Condition":{"Bool":{"iot:Connection.Thing.IsAttached":false}}},
               {"Effect":"Allow","Action":"iot:Connect","Resource":"*"}"#,
        );
        assert_eq!(decide(&as_json_bool, Action::Connect, &client("t"), &unattached("t")), Decision::ExplicitDeny);
        assert_eq!(decide(&as_json_bool, Action::Connect, &client("t"), &thing("t")), Decision::Allow);
    }

    /// `(operator, key, values, context, holds)` rows, one per condition rule.
    #[test]
    fn condition_operators_follow_iam_semantics() {
        let mut lamp = thing("lamp-1");
        lamp.thing_type_name = Some("Lamp".into());
        lamp.thing_attributes = [("Floor".to_owned(), "2".to_owned())].into();
        lamp.certificate_subject = [("Organization".to_owned(), "Example Corp".to_owned())].into();
        let bare = unattached("lamp-1");
        let cases: &[(&str, &str, &str, &AuthContext, bool)] = &[
            ("StringEquals", "iot:Connection.Thing.ThingTypeName", r#""Lamp""#, &lamp, true),
            ("StringEquals", "iot:Connection.Thing.ThingTypeName", r#""lamp""#, &lamp, false),
            ("StringEquals", "iot:Connection.Thing.ThingTypeName", r#"["Fan","Lamp"]"#, &lamp, true),
            ("StringEquals", "iot:Connection.Thing.ThingTypeName", r#""La*""#, &lamp, false),
            ("StringEquals", "iot:connection.thing.thingtypename", r#""Lamp""#, &lamp, true),
            ("StringEquals", "iot:Connection.Thing.Attributes[Floor]", "2", &lamp, true),
            ("StringEquals", "iot:ClientId", r#""${iot:Connection.Thing.ThingName}""#, &lamp, true),
            ("StringEquals", "iot:ClientId", r#""${iot:Connection.Thing.ThingName}""#, &bare, false),
            ("StringNotEquals", "iot:ClientId", r#""${iot:Connection.Thing.ThingName}""#, &bare, false),
            ("StringNotEquals", "iot:Connection.Thing.ThingTypeName", r#"["Fan","Heater"]"#, &lamp, true),
            ("StringNotEquals", "iot:Connection.Thing.ThingTypeName", r#"["Fan","Lamp"]"#, &lamp, false),
            ("StringNotEquals", "iot:Connection.Thing.ThingTypeName", r#""Lamp""#, &bare, true),
            ("StringEqualsIgnoreCase", "iot:Connection.Thing.ThingTypeName", r#""LAMP""#, &lamp, true),
            ("StringNotEqualsIgnoreCase", "iot:Connection.Thing.ThingTypeName", r#""LAMP""#, &lamp, false),
            ("StringLike", "iot:ClientId", r#""lamp-*""#, &lamp, true),
            ("StringLike", "iot:ClientId", r#""lamp-?""#, &lamp, true),
            ("StringLike", "iot:ClientId", r#""fan-*""#, &lamp, false),
            ("StringNotLike", "iot:ClientId", r#""fan-*""#, &lamp, true),
            ("StringLike", "iot:Connection.Thing.ThingTypeName", r#""*""#, &bare, false),
            ("StringEqualsIfExists", "iot:Connection.Thing.ThingTypeName", r#""Fan""#, &bare, true),
            ("StringEqualsIfExists", "iot:Connection.Thing.ThingTypeName", r#""Fan""#, &lamp, false),
            ("ArnLike", "iot:ClientId", r#""lamp-*""#, &lamp, true),
            ("ArnEquals", "iot:ClientId", r#""lamp-1""#, &lamp, true),
            ("ArnNotLike", "iot:ClientId", r#""lamp-*""#, &lamp, false),
            ("Bool", "iot:Connection.Thing.IsAttached", r#""true""#, &lamp, true),
            ("Bool", "iot:Connection.Thing.IsAttached", r#""TRUE""#, &lamp, true),
            ("Bool", "iot:Connection.Thing.IsAttached", "true", &bare, false),
            ("Null", "iot:Connection.Thing.ThingTypeName", "true", &bare, true),
            ("Null", "iot:Connection.Thing.ThingTypeName", "true", &lamp, false),
            ("Null", "iot:Connection.Thing.ThingTypeName", r#""false""#, &lamp, true),
            ("NumericLessThan", "iot:Connection.Thing.Attributes[Floor]", "3", &lamp, true),
            ("NumericGreaterThanEquals", "iot:Connection.Thing.Attributes[Floor]", r#""2""#, &lamp, true),
            ("NumericGreaterThan", "iot:Connection.Thing.Attributes[Floor]", "2", &lamp, false),
            ("NumericNotEquals", "iot:Connection.Thing.Attributes[Floor]", "2", &lamp, false),
            ("NumericEquals", "iot:ClientId", "2", &lamp, false),
            (
                "ForAllValues:StringEquals",
                "iot:Certificate.Subject.Organization.List",
                r#"["Example Corp","AnyCompany"]"#,
                &lamp,
                true,
            ),
            (
                "ForAllValues:StringEquals",
                "iot:Certificate.Subject.Organization.List",
                r#"["AnyCompany"]"#,
                &lamp,
                false,
            ),
            (
                "ForAllValues:StringEquals",
                "iot:Certificate.Subject.Organization.List",
                r#"["AnyCompany"]"#,
                &bare,
                true,
            ),
            (
                "ForAnyValue:StringEquals",
                "iot:Certificate.Subject.Organization.List",
                r#"["Example Corp"]"#,
                &lamp,
                true,
            ),
            (
                "ForAnyValue:StringEquals",
                "iot:Certificate.Subject.Organization.List",
                r#"["Example Corp"]"#,
                &bare,
                false,
            ),
            ("StringEquals", "iot:Certificate.Subject.Organization", r#""Example Corp""#, &lamp, true),
            ("IpAddress", "aws:SourceIp", r#""10.0.0.0/8""#, &lamp, false),
            ("NotIpAddress", "aws:SourceIp", r#""10.0.0.0/8""#, &lamp, true),
            ("StringEquals", "iot:Unknown", r#""x""#, &lamp, false),
        ];
        for (operator, key, values, ctx, want) in cases {
            let policy = doc(&format!(
                r#"{{"Effect":"Allow","Action":"iot:Connect","Resource":"*","Condition":{{"{operator}":{{"{key}":{values}}}}}}}"#
            ));
            let got = decide(&policy, Action::Connect, &client("lamp-1"), ctx).is_allowed();
            assert_eq!(got, *want, "{operator} {key} {values} (thing attached: {})", ctx.is_attached);
        }
    }

    #[test]
    fn all_conditions_of_a_statement_must_hold() {
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"*","Condition":{
                "StringEquals":{"iot:Connection.Thing.Attributes[Floor]":"2","iot:Connection.Thing.ThingTypeName":"Lamp"},
                "Bool":{"iot:Connection.Thing.IsAttached":"true"}}}"#);
        let mut ctx = thing("lamp-1");
        ctx.thing_type_name = Some("Lamp".into());
        ctx.thing_attributes.insert("Floor".into(), "2".into());
        assert!(decide(&policy, Action::Publish, &topic("device/stats"), &ctx).is_allowed());
        ctx.thing_attributes.insert("Floor".into(), "3".into());
        assert!(!decide(&policy, Action::Publish, &topic("device/stats"), &ctx).is_allowed());
    }

    #[test]
    fn not_action_covers_every_other_action() {
        let policy = doc(r#"{"Effect":"Allow","NotAction":"iot:Publish*","Resource":"*"}"#);
        assert!(decide(&policy, Action::Subscribe, &client("x"), &thing("t")).is_allowed());
        assert!(!decide(&policy, Action::Publish, &topic("x"), &thing("t")).is_allowed());
    }

    #[test]
    fn not_resource_covers_every_other_resource() {
        let policy = doc(r#"{"Effect":"Allow","Action":"iot:Publish","Resource":"*"},
               {"Effect":"Deny","Action":"iot:Publish","NotResource":"arn:aws:iot:us-east-1:123456789012:topic/${iot:Connection.Thing.ThingName}/*"}"#);
        assert_eq!(decide(&policy, Action::Publish, &topic("lamp-1/x"), &thing("lamp-1")), Decision::Allow);
        assert_eq!(decide(&policy, Action::Publish, &topic("lamp-2/x"), &thing("lamp-1")), Decision::ExplicitDeny);
    }

    #[test]
    fn action_names_round_trip_and_name_their_resource_type() {
        for action in Action::ALL {
            assert_eq!(Action::parse(action.as_str()), Some(action));
            assert_eq!(Action::parse(&action.as_str().to_uppercase()), Some(action));
        }
        assert_eq!(Action::parse("iot:Nope"), None);
        assert_eq!(Action::Connect.resource_type(), "client");
        assert_eq!(Action::Subscribe.resource_type(), "topicfilter");
        assert_eq!(Action::Receive.resource_type(), "topic");
        assert_eq!(Action::DeleteThingShadow.resource_type(), "thing");
        assert_eq!(Action::AssumeRoleWithCertificate.resource_type(), "rolealias");
    }
    #[test]
    fn role_policy_variables_resolve_only_for_credentials_provider_sessions() {
        let policy = doc(r#"{"Effect":"Allow","Action":"s3:PutObject",
                "Resource":"arn:aws:s3:::pump-data/anomalies/${credentials-iot:ThingName}/*"},
               {"Effect":"Deny","Action":"s3:PutObject","Resource":"*",
                "Condition":{"StringEquals":{"credentials-iot:AwsCertificateId":"revoked"}}}"#);
        let session = |thing: Option<&str>, certificate: &str| AuthContext {
            credentials_iot: Some(CredentialsIot {
                thing_name: thing.map(str::to_owned),
                thing_type_name: None,
                certificate_id: certificate.into(),
            }),
            ..AuthContext::default()
        };
        let put = |ctx: &AuthContext, key: &str| {
            evaluate_action(
                std::slice::from_ref(&policy),
                "s3:PutObject",
                &format!("arn:aws:s3:::pump-data/{key}"),
                ctx,
            )
        };
        let site = session(Some("site-1"), "c1");
        assert_eq!(put(&site, "anomalies/site-1/w.json"), Decision::Allow);
        assert_eq!(put(&site, "anomalies/site-2/w.json"), Decision::ImplicitDeny, "another thing's prefix");
        assert_eq!(put(&session(None, "c1"), "anomalies/site-1/w.json"), Decision::ImplicitDeny, "no thing named");
        assert_eq!(put(&session(Some("site-1"), "revoked"), "anomalies/site-1/w.json"), Decision::ExplicitDeny);
        // An IoT connection (no credentials-provider session) never fills them.
        assert_eq!(put(&thing("site-1"), "anomalies/site-1/w.json"), Decision::ImplicitDeny);
    }
}
