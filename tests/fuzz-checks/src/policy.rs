//! IoT policy documents, through the parser CreatePolicy uses and the evaluator the broker uses.

use cloud_api::policy::arn;
use cloud_api::policy::{Action, AuthContext, Decision, PolicyDocument, evaluate_action, overly_permissive};
use serde_json::{Value, json};

use crate::{Outcome, split_nul};

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";

/// Feeds `document` [`\0` `action` `\0` `resource`] to [`PolicyDocument::parse`] (what
/// CreatePolicy and the registry run on a policy document), then evaluates an accepted policy
/// against requests for every action on the pump's resources, against each resource the policy
/// names, and against the request given after the document, for an attached thing and for a
/// client with no thing.
///
/// Checks on an accepted policy: it round-trips through serde (the document written back,
/// compact or pretty, parses to an equal policy); the decision does not change when the policy
/// is split into one policy per statement, in either order (evaluation is over the union of
/// statements); action names ignore case; an explicit Deny wins over any Allow, and an Allow
/// added to a policy that does not deny allows.
pub fn iot_policy(data: &[u8]) -> Outcome {
    let (document, request) = split_nul(data);
    let Ok(text) = std::str::from_utf8(document) else { return Outcome::Rejected };
    let Ok(policy) = PolicyDocument::parse(text) else { return Outcome::Rejected };

    let value: Value = serde_json::from_str(text).expect("an accepted policy is JSON");
    for written in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
        let again = PolicyDocument::parse(&written).expect("an accepted policy written back parses");
        assert_eq!(again, policy, "an accepted policy round-trips through serde");
    }
    let split = split_statements(&value);
    let mut reversed = split.clone();
    reversed.reverse();
    let deny_all =
        PolicyDocument::parse(r#"{"Version":"2012-10-17","Statement":{"Effect":"Deny","Action":"*","Resource":"*"}}"#)
            .unwrap();
    let allow_all =
        PolicyDocument::parse(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"*","Resource":"*"}}"#)
            .unwrap();

    let whole = std::slice::from_ref(&policy);
    for (action, resource) in requests(&policy, request) {
        for ctx in contexts() {
            let decision = evaluate_action(whole, &action, &resource, &ctx);
            let at = || format!("{action} on {resource} for {:?}", ctx.client_id);
            assert_eq!(evaluate_action(&split, &action, &resource, &ctx), decision, "split: {}", at());
            assert_eq!(evaluate_action(&reversed, &action, &resource, &ctx), decision, "reversed: {}", at());
            let upper = action.to_ascii_uppercase();
            assert_eq!(evaluate_action(whole, &upper, &resource, &ctx), decision, "action case: {}", at());
            let with_deny = [policy.clone(), deny_all.clone()];
            assert_eq!(evaluate_action(&with_deny, &action, &resource, &ctx), Decision::ExplicitDeny, "{}", at());
            let with_allow = [policy.clone(), allow_all.clone()];
            let expected = if decision == Decision::ExplicitDeny { Decision::ExplicitDeny } else { Decision::Allow };
            assert_eq!(evaluate_action(&with_allow, &action, &resource, &ctx), expected, "{}", at());
        }
    }
    overly_permissive(&policy);
    Outcome::Accepted
}

/// One policy per statement of the accepted document `value`.
fn split_statements(value: &Value) -> Vec<PolicyDocument> {
    let statements = match &value["Statement"] {
        Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    statements
        .into_iter()
        .map(|s| {
            let one = json!({"Version": "2012-10-17", "Statement": [s]});
            PolicyDocument::parse(&one.to_string()).expect("a statement of an accepted policy is a policy")
        })
        .collect()
}

/// Every action on the pump's resources, each resource the policy names with each action it
/// names, and the fuzzed request.
fn requests(policy: &PolicyDocument, fuzzed: Option<&[u8]>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for action in Action::ALL {
        let resource = match action.resource_type() {
            "client" => arn::client(REGION, ACCOUNT, "pump-1"),
            "topic" => arn::topic(REGION, ACCOUNT, "dt/pump/pump-1/telemetry"),
            "topicfilter" => arn::topic_filter(REGION, ACCOUNT, "$aws/things/pump-1/shadow/#"),
            "thing" => arn::thing(REGION, ACCOUNT, "pump-1"),
            _ => arn::role_alias(REGION, ACCOUNT, "pump-role"),
        };
        out.push((action.as_str().to_owned(), resource));
    }
    for statement in policy.statements() {
        for resource in statement.resources() {
            for action in statement.actions() {
                out.push((action.to_owned(), resource.to_owned()));
            }
        }
    }
    if let Some(fuzzed) = fuzzed {
        let (action, resource) = split_nul(fuzzed);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        out.push((text(action), text(resource.unwrap_or_default())));
    }
    out
}

/// A connection whose client id is an attached thing's name, and one with no thing.
fn contexts() -> [AuthContext; 2] {
    let thing = AuthContext {
        region: REGION.into(),
        account_id: ACCOUNT.into(),
        client_id: Some("pump-1".into()),
        thing_name: Some("pump-1".into()),
        thing_type_name: Some("pump".into()),
        thing_attributes: [("site".to_owned(), "north".to_owned())].into(),
        is_attached: true,
        certificate_id: Some("ab".repeat(32)),
        certificate_subject: [("CommonName".to_owned(), "pump-1".to_owned())].into(),
        credentials_iot: None,
    };
    let stranger = AuthContext {
        client_id: Some("stranger".into()),
        thing_name: None,
        thing_type_name: None,
        thing_attributes: Default::default(),
        is_attached: false,
        ..thing.clone()
    };
    [thing, stranger]
}
