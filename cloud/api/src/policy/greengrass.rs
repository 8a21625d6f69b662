//! The Greengrass data-plane actions a core device's IoT policy grants (AWS IoT Greengrass V2
//! Developer Guide, "Device authentication and authorization", "AWS IoT Greengrass V2 policy
//! actions" and "Minimal AWS IoT policy for AWS IoT Greengrass V2 core devices").
//!
//! The data plane (mTLS with the device certificate, no SigV4) evaluates only the policies
//! attached to the **certificate**: thing-group policies do not grant these actions, and thing
//! policy variables (`iot:Connection.Thing.*`) are not supported. Evaluation itself is
//! [`super::evaluate_action`]: explicit Deny beats Allow, default deny.

use super::{AuthContext, Decision, PolicyDocument, evaluate_action};

/// A Greengrass core-device action of the minimal core-device policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GreengrassAction {
    /// `greengrass:ResolveComponentCandidates`, resource `*` (no resource type).
    ResolveComponentCandidates,
    /// `greengrass:GetComponentVersionArtifact`, resource the component version ARN
    /// (`arn:aws:greengrass:REGION:ACCOUNT:components:NAME:versions:VERSION`).
    GetComponentVersionArtifact,
    /// `greengrass:GetDeploymentConfiguration` (nucleus ≥ 2.3.0, large deployment documents),
    /// resource `*`.
    GetDeploymentConfiguration,
    /// `greengrass:ListThingGroupsForCoreDevice` (nucleus ≥ 2.5.0), resource the core device's
    /// thing ARN.
    ListThingGroupsForCoreDevice,
}

impl GreengrassAction {
    /// Every action, in declaration order.
    pub const ALL: [GreengrassAction; 4] = [
        GreengrassAction::ResolveComponentCandidates,
        GreengrassAction::GetComponentVersionArtifact,
        GreengrassAction::GetDeploymentConfiguration,
        GreengrassAction::ListThingGroupsForCoreDevice,
    ];

    /// The action's name in policies, e.g. `greengrass:ResolveComponentCandidates`.
    pub fn as_str(&self) -> &'static str {
        match self {
            GreengrassAction::ResolveComponentCandidates => "greengrass:ResolveComponentCandidates",
            GreengrassAction::GetComponentVersionArtifact => "greengrass:GetComponentVersionArtifact",
            GreengrassAction::GetDeploymentConfiguration => "greengrass:GetDeploymentConfiguration",
            GreengrassAction::ListThingGroupsForCoreDevice => "greengrass:ListThingGroupsForCoreDevice",
        }
    }

    /// The action named `name` in a policy, ignoring ASCII case as IAM does.
    pub fn parse(name: &str) -> Option<GreengrassAction> {
        GreengrassAction::ALL.into_iter().find(|a| a.as_str().eq_ignore_ascii_case(name))
    }
}

/// `arn:aws:greengrass:{region}:{account}:components:{name}:versions:{version}`: the resource of
/// [`GreengrassAction::GetComponentVersionArtifact`].
pub fn component_version_arn(region: &str, account: &str, name: &str, version: &str) -> String {
    format!("arn:aws:greengrass:{region}:{account}:components:{name}:versions:{version}")
}

/// Evaluates a Greengrass data-plane `action` on `resource` (a full ARN, or `*` for the actions
/// without a resource type) against the policies attached to the device's certificate.
pub fn evaluate_greengrass(
    certificate_policies: &[PolicyDocument],
    action: GreengrassAction,
    resource: &str,
    ctx: &AuthContext,
) -> Decision {
    evaluate_action(certificate_policies, action.as_str(), resource, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> PolicyDocument {
        PolicyDocument::parse(json).unwrap()
    }

    fn ctx() -> AuthContext {
        AuthContext { region: "us-east-1".into(), account_id: "000000000000".into(), ..AuthContext::default() }
    }

    const VERSION_ARN: &str = "arn:aws:greengrass:us-east-1:000000000000:components:com.example.A:versions:1.0.0";

    #[test]
    fn action_names_round_trip_ignoring_case() {
        for a in GreengrassAction::ALL {
            assert_eq!(GreengrassAction::parse(a.as_str()), Some(a));
            assert_eq!(GreengrassAction::parse(&a.as_str().to_uppercase()), Some(a));
        }
        assert_eq!(GreengrassAction::parse("greengrass:CreateDeployment"), None);
        assert_eq!(component_version_arn("us-east-1", "000000000000", "com.example.A", "1.0.0"), VERSION_ARN);
    }

    #[test]
    fn data_plane_actions_follow_the_certificate_policy() {
        use GreengrassAction::*;
        let minimal = doc(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":[
            "greengrass:GetComponentVersionArtifact","greengrass:ResolveComponentCandidates",
            "greengrass:GetDeploymentConfiguration","greengrass:ListThingGroupsForCoreDevice"],"Resource":"*"}]}"#);
        let wildcard =
            doc(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"greengrass:*","Resource":"*"}]}"#);
        let iot_only =
            doc(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#);
        let one_component = doc(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"greengrass:GetComponentVersionArtifact",
            "Resource":"arn:aws:greengrass:us-east-1:000000000000:components:com.example.A:versions:*"}]}"#,
        );
        let deny = doc(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"greengrass:ResolveComponentCandidates","Resource":"*"}]}"#,
        );
        let other = "arn:aws:greengrass:us-east-1:000000000000:components:com.example.B:versions:1.0.0";
        let table: &[(&str, &[&PolicyDocument], GreengrassAction, &str, Decision)] = &[
            ("minimal policy allows resolve", &[&minimal], ResolveComponentCandidates, "*", Decision::Allow),
            ("minimal policy allows artifacts", &[&minimal], GetComponentVersionArtifact, VERSION_ARN, Decision::Allow),
            ("greengrass:* allows every action", &[&wildcard], ListThingGroupsForCoreDevice, "*", Decision::Allow),
            (
                "iot:* grants no greengrass action",
                &[&iot_only],
                ResolveComponentCandidates,
                "*",
                Decision::ImplicitDeny,
            ),
            ("no policy denies", &[], GetDeploymentConfiguration, "*", Decision::ImplicitDeny),
            (
                "a component ARN pattern allows its versions",
                &[&one_component],
                GetComponentVersionArtifact,
                VERSION_ARN,
                Decision::Allow,
            ),
            ("…and no other component", &[&one_component], GetComponentVersionArtifact, other, Decision::ImplicitDeny),
            ("an explicit deny wins", &[&wildcard, &deny], ResolveComponentCandidates, "*", Decision::ExplicitDeny),
        ];
        for (why, policies, action, resource, want) in table {
            let docs: Vec<PolicyDocument> = policies.iter().map(|d| (*d).clone()).collect();
            assert_eq!(evaluate_greengrass(&docs, *action, resource, &ctx()), *want, "{why}");
        }
    }
}
