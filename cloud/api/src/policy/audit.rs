//! Device Defender's "AWS IoT policies overly permissive" audit check
//! (`IOT_POLICY_OVERLY_PERMISSIVE_CHECK`, reason
//! `ALLOWS_BROAD_ACCESS_TO_IOT_DATA_PLANE_ACTIONS`).
//!
//! Rather than pattern-matching policy text, the check asks the evaluator
//! whether the document lets one device reach another device's resources:
//! a connection as thing A probes `client/…`, `topic/$aws/things/B/…`,
//! `topicfilter/$aws/things/{B,+,#}/…` and `thing/B`, and an unregistered
//! client probes `client/{its own id}`. `iot:Receive` is not checked: the
//! audit counts it compliant, since a device only receives what it may subscribe to.

use std::collections::BTreeSet;
use std::slice;

use super::eval::{AuthContext, evaluate_action};
use super::{Action, PolicyDocument};

const THING_A: &str = "audit-probe-thing-a";
const THING_B: &str = "audit-probe-thing-b";
const PLACEHOLDER_REGION: &str = "us-east-1";
const PLACEHOLDER_ACCOUNT: &str = "123456789012";

/// Device and job data-plane actions the audit expects to be limited to named things.
const THING_ACTIONS: [&str; 7] = [
    "iot:GetThingShadow",
    "iot:UpdateThingShadow",
    "iot:DeleteThingShadow",
    "iot:DescribeJobExecution",
    "iot:GetPendingJobExecutions",
    "iot:StartNextPendingJobExecution",
    "iot:UpdateJobExecution",
];

/// Why Device Defender would call `doc` overly permissive: one line per broad
/// grant, empty when the policy is compliant.
pub fn overly_permissive(doc: &PolicyDocument) -> Vec<String> {
    let policies = slice::from_ref(doc);
    let scopes = arn_scopes(doc);
    let allows = |action: &str, resource: &str, ctx: &AuthContext| {
        scopes.iter().any(|(region, account)| {
            let arn = format!("arn:aws:iot:{region}:{account}:{resource}");
            evaluate_action(policies, action, &arn, ctx).is_allowed()
        })
    };
    let thing_a = AuthContext {
        client_id: Some(THING_A.to_owned()),
        thing_name: Some(THING_A.to_owned()),
        is_attached: true,
        ..AuthContext::default()
    };
    let mut findings = Vec::new();

    let connect = Action::Connect.as_str();
    if allows(connect, &format!("client/{THING_B}"), &thing_a) {
        findings.push("allows iot:Connect with any client id (like client/*)".to_owned());
    } else {
        let unregistered = "audit-probe-unregistered";
        let unattached = AuthContext { client_id: Some(unregistered.to_owned()), ..AuthContext::default() };
        if allows(connect, &format!("client/{unregistered}"), &unattached) {
            findings.push(
                "allows iot:Connect to a client id the device picks (like client/${iot:ClientId}) without \
                 requiring iot:Connection.Thing.IsAttached"
                    .to_owned(),
            );
        }
    }

    let other_shadow = format!("$aws/things/{THING_B}/shadow/update");
    if allows(Action::Publish.as_str(), &format!("topic/{other_shadow}"), &thing_a) {
        findings.push(format!("allows iot:Publish to another thing's reserved topics (like topic/{other_shadow})"));
    }
    for filter in [other_shadow.as_str(), "$aws/things/+/shadow/update", "$aws/things/#"] {
        if allows(Action::Subscribe.as_str(), &format!("topicfilter/{filter}"), &thing_a) {
            findings.push(format!("allows iot:Subscribe to other things' reserved topics (like topicfilter/{filter})"));
            break;
        }
    }
    for action in THING_ACTIONS {
        if allows(action, &format!("thing/{THING_B}"), &thing_a) {
            findings.push(format!("allows {action} on any thing (like thing/*)"));
        }
    }
    findings
}

/// The region/account pairs the document's resource ARNs name, so probes hit
/// ARNs the policy can match; a placeholder when they use wildcards or `*`.
fn arn_scopes(doc: &PolicyDocument) -> BTreeSet<(String, String)> {
    let concrete = |s: &str| !s.is_empty() && !s.contains(['*', '?', '$']);
    let mut scopes: BTreeSet<(String, String)> = doc
        .statements()
        .iter()
        .flat_map(|s| s.resources())
        .filter_map(|raw| {
            let mut parts = raw.splitn(6, ':').skip(3);
            let (region, account) = (parts.next()?, parts.next()?);
            Some((
                if concrete(region) { region } else { PLACEHOLDER_REGION }.to_owned(),
                if concrete(account) { account } else { PLACEHOLDER_ACCOUNT }.to_owned(),
            ))
        })
        .collect();
    if scopes.is_empty() {
        scopes.insert((PLACEHOLDER_REGION.to_owned(), PLACEHOLDER_ACCOUNT.to_owned()));
    }
    scopes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(statements: &str) -> Vec<String> {
        let json = format!(r#"{{"Version":"2012-10-17","Statement":[{statements}]}}"#);
        overly_permissive(&PolicyDocument::parse(&json).unwrap())
    }

    const ARN: &str = "arn:aws:iot:eu-west-1:111122223333";

    #[test]
    fn thing_scoped_policy_with_is_attached_is_compliant() {
        let got = findings(&format!(
            r#"{{"Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/${{iot:Connection.Thing.ThingName}}",
                 "Condition":{{"Bool":{{"iot:Connection.Thing.IsAttached":"true"}}}}}},
               {{"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"{ARN}:topic/$aws/things/${{iot:Connection.Thing.ThingName}}/shadow/*"}},
               {{"Effect":"Allow","Action":"iot:Subscribe","Resource":"{ARN}:topicfilter/$aws/things/${{iot:Connection.Thing.ThingName}}/shadow/*"}},
               {{"Effect":"Allow","Action":"iot:Receive","Resource":"{ARN}:topic/$aws/things/*"}},
               {{"Effect":"Allow","Action":"iot:GetThingShadow","Resource":["{ARN}:thing/MyThing1","{ARN}:thing/MyThing2"]}}"#
        ));
        assert_eq!(got, Vec::<String>::new());
    }

    #[test]
    fn device_defender_noncompliant_examples_are_reported() {
        let cases: &[(String, &str)] = &[
            (
                format!(r#"{{"Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/*"}}"#),
                "iot:Connect with any client id",
            ),
            (
                format!(r#"{{"Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/${{iot:ClientId}}"}}"#),
                "without requiring iot:Connection.Thing.IsAttached",
            ),
            (
                format!(
                    r#"{{"Effect":"Allow","Action":"iot:Publish","Resource":"{ARN}:topic/$aws/things/*/shadow/update"}}"#
                ),
                "iot:Publish to another thing's reserved topics",
            ),
            (
                format!(r#"{{"Effect":"Allow","Action":"iot:Publish","Resource":"{ARN}:topic/$aws/things/*"}}"#),
                "iot:Publish to another thing's reserved topics",
            ),
            (
                format!(
                    r#"{{"Effect":"Allow","Action":"iot:Subscribe","Resource":"{ARN}:topicfilter/$aws/things/*"}}"#
                ),
                "iot:Subscribe to other things' reserved topics",
            ),
            (
                format!(
                    r#"{{"Effect":"Allow","Action":"iot:Subscribe","Resource":"{ARN}:topicfilter/$aws/things/+/shadow/update"}}"#
                ),
                "iot:Subscribe to other things' reserved topics",
            ),
            (
                format!(
                    r#"{{"Effect":"Allow","Action":"iot:Subscribe","Resource":"{ARN}:topicfilter/$aws/things/#"}}"#
                ),
                "iot:Subscribe to other things' reserved topics",
            ),
            (
                format!(r#"{{"Effect":"Allow","Action":"iot:UpdateThingShadow","Resource":"{ARN}:thing/*"}}"#),
                "iot:UpdateThingShadow on any thing",
            ),
            (
                r#"{"Effect":"Allow","Action":"iot:*","Resource":"*"}"#.to_owned(),
                "iot:GetPendingJobExecutions on any thing",
            ),
        ];
        for (statement, want) in cases {
            let got = findings(statement);
            assert!(got.iter().any(|f| f.contains(want)), "{statement}\n  got: {got:?}\n  want: …{want}…");
        }
    }

    #[test]
    fn deny_statement_makes_broad_allow_compliant() {
        let got = findings(&format!(
            r#"{{"Effect":"Allow","Action":"iot:Connect","Resource":"{ARN}:client/*"}},
               {{"Effect":"Deny","Action":"iot:Connect","Resource":"*",
                 "Condition":{{"Bool":{{"iot:Connection.Thing.IsAttached":"false"}}}}}},
               {{"Effect":"Deny","Action":"iot:Connect","NotResource":"{ARN}:client/${{iot:Connection.Thing.ThingName}}"}}"#
        ));
        assert_eq!(got, Vec::<String>::new());
    }
}
