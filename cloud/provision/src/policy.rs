//! The device's IoT policy: the shipped file, placeholders, validation and the
//! Device Defender-style audit, and which policy version to prune.
//!
//! A policy file may name the account's partition, region and account id with
//! `{{partition}}`, `{{region}}` and `{{accountId}}`; they are filled in from the
//! thing's ARN, so one file serves every account. IoT policy variables
//! (`${iot:Connection.Thing.ThingName}`) are left for IoT Core to resolve at
//! connection time. Follows "AWS IoT Core policies" in the AWS IoT Core
//! Developer Guide; the 2048-character limit (whitespace excluded) is from its quotas.

use std::path::Path;

use cloud_api::policy::{PolicyDocument, overly_permissive};
use serde_json::Value;

use crate::error::ProvisionError;

/// The least-privilege policy this crate ships for a pump core device.
pub const SHIPPED_POLICY: &str = include_str!("../policies/pump-core-device.json");

/// The name shown for [`SHIPPED_POLICY`] in messages.
pub const SHIPPED_POLICY_LABEL: &str = "policies/pump-core-device.json (shipped)";

/// The additions a real Greengrass nucleus needs on the same thing to receive thing-group and
/// thing deployments and report on them: its Jobs topics in the `aws-gg-deployment` namespace,
/// the `AWSManagedGreengrassV2Deployment` shadow, fleet status, and the data-plane actions.
pub const GREENGRASS_DEPLOYMENTS_POLICY: &str = include_str!("../policies/greengrass-core-deployments.json");

/// The name shown for [`GREENGRASS_DEPLOYMENTS_POLICY`] in messages.
pub const GREENGRASS_DEPLOYMENTS_POLICY_LABEL: &str = "policies/greengrass-core-deployments.json (shipped)";

/// The additions a core needs on the same thing to rotate its certificate
/// (`device-sim core --certificate-rotation`): the rotation job on its default-namespace Jobs
/// topics, CreateCertificateFromCsr, the cloud's attach notice on `cmd/{thing}/certificate-rotation`
/// and the classic shadow `get` that proves the new certificate. A separate policy because the
/// deployment policy and these topics together pass IoT Core's 2,048-character limit.
pub const CERTIFICATE_ROTATION_POLICY: &str = include_str!("../policies/pump-core-rotation.json");

/// The name shown for [`CERTIFICATE_ROTATION_POLICY`] in messages.
pub const CERTIFICATE_ROTATION_POLICY_LABEL: &str = "policies/pump-core-rotation.json (shipped)";

/// IoT Core's limit on a policy document, in characters, whitespace excluded.
pub const MAX_POLICY_CHARS: usize = 2048;

/// IoT Core keeps at most this many versions of a policy.
pub const MAX_POLICY_VERSIONS: usize = 5;

/// Where an account's resources live: the values of the policy placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountScope {
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    /// Region, e.g. `eu-west-1`.
    pub region: String,
    /// Twelve-digit account id.
    pub account_id: String,
}

impl AccountScope {
    /// The scope named by a resource ARN such as `arn:aws:iot:eu-west-1:111122223333:thing/x`.
    pub fn from_arn(arn: &str) -> Option<AccountScope> {
        let mut parts = arn.splitn(6, ':');
        let (arn_tag, partition, _service, region, account_id) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        (arn_tag == "arn" && !partition.is_empty() && !region.is_empty() && !account_id.is_empty()).then(|| {
            AccountScope {
                partition: partition.to_owned(),
                region: region.to_owned(),
                account_id: account_id.to_owned(),
            }
        })
    }

    /// A scope for checking a policy before the account id is known.
    pub fn provisional(region: &str) -> AccountScope {
        let partition = if region.starts_with("cn-") {
            "aws-cn"
        } else if region.starts_with("us-gov-") {
            "aws-us-gov"
        } else {
            "aws"
        };
        AccountScope { partition: partition.into(), region: region.into(), account_id: "123456789012".into() }
    }
}

/// A policy file's text and the name used for it in messages.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// Shown in errors.
    pub label: String,
    /// The template text.
    pub text: String,
}

impl PolicySource {
    /// The policy shipped with this crate.
    pub fn shipped() -> PolicySource {
        PolicySource { label: SHIPPED_POLICY_LABEL.into(), text: SHIPPED_POLICY.into() }
    }

    /// The shipped Greengrass deployment additions ([`GREENGRASS_DEPLOYMENTS_POLICY`]).
    pub fn greengrass_deployments() -> PolicySource {
        PolicySource { label: GREENGRASS_DEPLOYMENTS_POLICY_LABEL.into(), text: GREENGRASS_DEPLOYMENTS_POLICY.into() }
    }

    /// The shipped certificate-rotation additions ([`CERTIFICATE_ROTATION_POLICY`]).
    pub fn certificate_rotation() -> PolicySource {
        PolicySource { label: CERTIFICATE_ROTATION_POLICY_LABEL.into(), text: CERTIFICATE_ROTATION_POLICY.into() }
    }

    /// Reads a policy file.
    pub fn read(path: &Path) -> Result<PolicySource, ProvisionError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProvisionError::PolicyFile { path: label.clone(), reason: format!("cannot read it: {e}") })?;
        Ok(PolicySource { label, text })
    }

    /// The document for `scope`, minified, after checking that it parses, fits IoT Core's
    /// size limit and — unless `allow_permissive` — passes the overly-permissive audit.
    pub fn render(&self, scope: &AccountScope, allow_permissive: bool) -> Result<RenderedPolicy, ProvisionError> {
        let bad = |reason: String| ProvisionError::PolicyFile { path: self.label.clone(), reason };
        let text = self
            .text
            .replace("{{partition}}", &scope.partition)
            .replace("{{region}}", &scope.region)
            .replace("{{accountId}}", &scope.account_id);
        if let Some(at) = text.find("{{") {
            let rest: String = text[at..].chars().take(24).collect();
            return Err(bad(format!(
                "unknown placeholder at {rest:?} (known: {{{{partition}}}}, {{{{region}}}}, {{{{accountId}}}})"
            )));
        }
        let value: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let document = serde_json::to_string(&value).map_err(|e| bad(e.to_string()))?;
        let chars = document.chars().filter(|c| !c.is_whitespace()).count();
        if chars > MAX_POLICY_CHARS {
            return Err(bad(format!(
                "{chars} characters without whitespace; IoT Core accepts at most {MAX_POLICY_CHARS}"
            )));
        }
        let parsed = PolicyDocument::parse(&document).map_err(|e| bad(format!("not a valid IoT policy: {e}")))?;
        let findings = overly_permissive(&parsed);
        if !findings.is_empty() && !allow_permissive {
            return Err(ProvisionError::PermissivePolicy { path: self.label.clone(), findings });
        }
        Ok(RenderedPolicy { document, findings })
    }
}

/// A policy document ready to send.
#[derive(Debug, Clone)]
pub struct RenderedPolicy {
    /// Minified JSON.
    pub document: String,
    /// Audit findings the caller accepted (empty unless permissive policies were allowed).
    pub findings: Vec<String>,
}

impl RenderedPolicy {
    /// Whether `other` (a document IoT Core returned) says the same as this one; whitespace and
    /// formatting do not count.
    pub fn same_as(&self, other: &str) -> bool {
        match (serde_json::from_str::<Value>(&self.document), serde_json::from_str::<Value>(other)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

/// A policy version as `ListPolicyVersions` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version id (a decimal number on AWS).
    pub id: String,
    /// Whether it is the default version.
    pub is_default: bool,
    /// Creation time, seconds since the epoch (0 when unknown).
    pub created: i64,
}

/// Which version to delete so a new one fits: the oldest non-default one, and only when the
/// policy is at IoT Core's limit of [`MAX_POLICY_VERSIONS`].
pub fn version_to_prune(versions: &[VersionInfo]) -> Option<&VersionInfo> {
    if versions.len() < MAX_POLICY_VERSIONS {
        return None;
    }
    let numeric = |v: &VersionInfo| v.id.parse::<u64>().unwrap_or(u64::MAX);
    versions.iter().filter(|v| !v.is_default).min_by_key(|v| (v.created, numeric(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> AccountScope {
        AccountScope { partition: "aws".into(), region: "eu-west-1".into(), account_id: "111122223333".into() }
    }

    #[test]
    fn shipped_policy_passes_the_overly_permissive_audit() {
        let rendered = PolicySource::shipped().render(&scope(), false).expect("shipped policy is accepted");
        assert!(rendered.findings.is_empty());
        let parsed = PolicyDocument::parse(&rendered.document).unwrap();
        assert_eq!(overly_permissive(&parsed), Vec::<String>::new());
        assert!(rendered.document.contains("arn:aws:iot:eu-west-1:111122223333:client/"));
    }

    #[test]
    fn shipped_policy_fits_the_size_limit_in_the_longest_partition_and_region() {
        let long = AccountScope {
            partition: "aws-us-gov".into(),
            region: "ap-southeast-5".into(),
            account_id: "123456789012".into(),
        };
        let rendered = PolicySource::shipped().render(&long, false).unwrap();
        assert!(rendered.document.len() <= MAX_POLICY_CHARS, "{}", rendered.document.len());
    }

    /// The connection of core `core-1`, attached to its thing, in [`scope`]'s account.
    fn core_1() -> cloud_api::policy::AuthContext {
        cloud_api::policy::AuthContext {
            region: "eu-west-1".into(),
            account_id: "111122223333".into(),
            client_id: Some("core-1".into()),
            thing_name: Some("core-1".into()),
            is_attached: true,
            ..Default::default()
        }
    }

    #[test]
    fn shipped_policy_lets_a_core_publish_its_fleet_status_and_telemetry_and_not_another_cores() {
        use cloud_api::policy::{Action, PolicyDocument, evaluate};
        let rendered = PolicySource::shipped().render(&scope(), false).unwrap();
        let policy = [PolicyDocument::parse(&rendered.document).unwrap()];
        let ctx = core_1();
        let publish = |topic: &str| {
            let arn = format!("arn:aws:iot:eu-west-1:111122223333:topic/{topic}");
            evaluate(&policy, Action::Publish, &arn, &ctx).is_allowed()
        };
        assert!(publish("$aws/things/core-1/greengrassv2/health/json"), "fleet status");
        assert!(publish("$aws/things/core-1/greengrass/health/json"), "telemetry");
        assert!(!publish("$aws/things/core-2/greengrass/health/json"), "another core's telemetry");
        assert!(!publish("$aws/things/core-1/greengrass/health/other"));
    }

    #[test]
    fn rotation_policy_passes_the_audit_and_lets_a_core_rotate_and_nothing_of_another_core() {
        use cloud_api::policy::{Action, PolicyDocument, evaluate};
        let rendered = PolicySource::certificate_rotation().render(&scope(), false).expect("accepted");
        assert!(rendered.findings.is_empty(), "{:?}", rendered.findings);
        let chars = rendered.document.chars().filter(|c| !c.is_whitespace()).count();
        assert!(chars <= MAX_POLICY_CHARS, "{chars}");
        let policy = [PolicyDocument::parse(&rendered.document).unwrap()];
        let ctx = core_1();
        let allowed = |action: Action, kind: &str, name: &str| {
            evaluate(&policy, action, &format!("arn:aws:iot:eu-west-1:111122223333:{kind}/{name}"), &ctx).is_allowed()
        };
        // What the core's rotation service subscribes to and receives.
        for filter in [
            "$aws/things/core-1/jobs/notify-next",
            "$aws/things/core-1/jobs/$next/get/accepted",
            "$aws/things/core-1/jobs/+/update/accepted",
            "$aws/things/core-1/jobs/+/update/rejected",
            "$aws/certificates/create-from-csr/json/accepted",
            "$aws/certificates/create-from-csr/json/rejected",
            "$aws/things/core-1/shadow/get/accepted",
            "$aws/things/core-1/shadow/get/rejected",
            "cmd/core-1/certificate-rotation",
        ] {
            assert!(allowed(Action::Subscribe, "topicfilter", filter), "subscribe {filter}");
            let topic = filter.replace('+', "rotate-1");
            assert!(allowed(Action::Receive, "topic", &topic), "receive {topic}");
        }
        // What it publishes.
        for topic in [
            "$aws/things/core-1/jobs/$next/get",
            "$aws/things/core-1/jobs/rotate-1/update",
            "$aws/certificates/create-from-csr/json",
            "$aws/things/core-1/shadow/get",
        ] {
            assert!(allowed(Action::Publish, "topic", topic), "publish {topic}");
        }
        // Nothing of another core, and no other way to a certificate.
        for (action, kind, name) in [
            (Action::Subscribe, "topicfilter", "$aws/things/core-2/jobs/notify-next"),
            (Action::Receive, "topic", "cmd/core-2/certificate-rotation"),
            (Action::Publish, "topic", "$aws/things/core-2/jobs/rotate-1/update"),
            (Action::Publish, "topic", "$aws/things/core-1/shadow/update"),
            (Action::Publish, "topic", "cmd/core-1/certificate-rotation"),
            (Action::Publish, "topic", "$aws/certificates/create/json"),
        ] {
            assert!(!allowed(action, kind, name), "{name} must be refused");
        }
    }

    #[test]
    fn greengrass_deployment_policy_passes_the_audit_and_fits_and_grants_only_its_own_thing() {
        let long = AccountScope {
            partition: "aws-us-gov".into(),
            region: "ap-southeast-5".into(),
            account_id: "123456789012".into(),
        };
        for scope in [scope(), long] {
            let rendered = PolicySource::greengrass_deployments().render(&scope, false).expect("accepted");
            assert!(rendered.findings.is_empty(), "{:?}", rendered.findings);
            let chars = rendered.document.chars().filter(|c| !c.is_whitespace()).count();
            assert!(chars <= MAX_POLICY_CHARS, "{chars}");
        }
        let rendered = PolicySource::greengrass_deployments().render(&scope(), false).unwrap();
        let doc: Value = serde_json::from_str(&rendered.document).unwrap();
        for statement in doc["Statement"].as_array().unwrap() {
            let resources: Vec<&str> = match &statement["Resource"] {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            let actions = statement["Action"].to_string();
            for resource in resources {
                if actions.contains("iot:") {
                    assert!(
                        resource.contains("$aws/things/${iot:Connection.Thing.ThingName}/"),
                        "{resource} is the core's own thing"
                    );
                    assert!(
                        resource.contains("namespace-aws-gg-deployment")
                            || resource.contains("/shadow/name/AWSManagedGreengrassV2Deployment/")
                            || resource.ends_with("/greengrassv2/health/json"),
                        "{resource} is a deployment topic"
                    );
                } else {
                    assert!(actions.contains("greengrass:") && !actions.contains("greengrass:*"), "{actions}");
                }
            }
        }
    }

    #[test]
    fn greengrass_deployment_policy_lets_a_core_follow_its_deployments_and_nothing_of_another_core() {
        use cloud_api::policy::{Action, PolicyDocument, evaluate, evaluate_action};
        let rendered = PolicySource::greengrass_deployments().render(&scope(), false).unwrap();
        let policy = [PolicyDocument::parse(&rendered.document).unwrap()];
        let ctx = core_1();
        let arn = |kind: &str, rest: &str| format!("arn:aws:iot:eu-west-1:111122223333:{kind}/{rest}");
        let jobs = "$aws/things/core-1/jobs";
        let shadow = "$aws/things/core-1/shadow/name/AWSManagedGreengrassV2Deployment";
        // What the simulated core's listeners subscribe to and receive (the Java nucleus's topics),
        // and nucleus lite's notify-next.
        for filter in [
            format!("{jobs}/notify-namespace-aws-gg-deployment"),
            format!("{jobs}/notify-next-namespace-aws-gg-deployment"),
            format!("{jobs}/$next/namespace-aws-gg-deployment/get/accepted"),
            format!("{jobs}/+/namespace-aws-gg-deployment/update/+"),
            format!("{shadow}/update/accepted"),
            format!("{shadow}/get/accepted"),
        ] {
            assert!(evaluate(&policy, Action::Subscribe, &arn("topicfilter", &filter), &ctx).is_allowed(), "{filter}");
        }
        for topic in [
            format!("{jobs}/notify-namespace-aws-gg-deployment"),
            format!("{jobs}/j-1/namespace-aws-gg-deployment/update/accepted"),
            format!("{shadow}/update/accepted"),
        ] {
            assert!(evaluate(&policy, Action::Receive, &arn("topic", &topic), &ctx).is_allowed(), "{topic}");
        }
        for topic in [
            format!("{jobs}/$next/namespace-aws-gg-deployment/get"),
            format!("{jobs}/j-1/namespace-aws-gg-deployment/update"),
            format!("{shadow}/update"),
            "$aws/things/core-1/greengrassv2/health/json".to_owned(),
        ] {
            assert!(evaluate(&policy, Action::Publish, &arn("topic", &topic), &ctx).is_allowed(), "{topic}");
        }
        assert!(evaluate_action(&policy, "greengrass:ResolveComponentCandidates", "*", &ctx).is_allowed());
        let other = "$aws/things/core-2/jobs/notify-namespace-aws-gg-deployment";
        assert!(!evaluate(&policy, Action::Subscribe, &arn("topicfilter", other), &ctx).is_allowed());
        let plain = format!("{jobs}/notify");
        assert!(!evaluate(&policy, Action::Subscribe, &arn("topicfilter", &plain), &ctx).is_allowed());
    }

    #[test]
    fn permissive_policy_is_refused_with_its_findings_unless_allowed() {
        let source = PolicySource {
            label: "wide.json".into(),
            text: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#.into(),
        };
        match source.render(&scope(), false) {
            Err(ProvisionError::PermissivePolicy { path, findings }) => {
                assert_eq!(path, "wide.json");
                assert!(findings.iter().any(|f| f.contains("iot:Connect with any client id")), "{findings:?}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let allowed = source.render(&scope(), true).expect("opt-in accepts it");
        assert!(!allowed.findings.is_empty());
    }

    #[test]
    fn invalid_policy_files_are_refused_with_the_reason() {
        let cases = [
            ("{not json", "not JSON"),
            (
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Maybe","Action":"iot:Connect","Resource":"*"}]}"#,
                "not a valid IoT policy",
            ),
            (r#"{"Version":"2012-10-17","Statement":[],"Resource":"arn:{{partiton}}"}"#, "unknown placeholder"),
        ];
        for (text, want) in cases {
            let source = PolicySource { label: "bad.json".into(), text: text.into() };
            let err = source.render(&scope(), false).expect_err(text);
            assert!(matches!(err, ProvisionError::PolicyFile { .. }), "{err:?}");
            assert!(err.to_string().contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn oversized_policy_is_refused() {
        let resources: Vec<String> =
            (0..40).map(|i| format!("\"arn:aws:iot:eu-west-1:111122223333:topic/some/long/topic/name/{i}\"")).collect();
        let text = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:Publish","Resource":[{}]}}]}}"#,
            resources.join(",")
        );
        let err = PolicySource { label: "big.json".into(), text }.render(&scope(), false).unwrap_err();
        assert!(err.to_string().contains("at most 2048"), "{err}");
    }

    #[test]
    fn unreadable_policy_file_is_a_policy_file_error() {
        let err = PolicySource::read(Path::new("/nonexistent/policy.json")).unwrap_err();
        assert!(matches!(err, ProvisionError::PolicyFile { .. }) && err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn documents_compare_by_meaning_not_formatting() {
        let rendered = PolicySource::shipped().render(&scope(), false).unwrap();
        let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(&rendered.document).unwrap()).unwrap();
        assert!(rendered.same_as(&pretty));
        assert!(!rendered.same_as(&rendered.document.replace("telemetry", "telemetrx")));
    }

    #[test]
    fn account_scope_comes_from_a_thing_arn() {
        assert_eq!(AccountScope::from_arn("arn:aws:iot:eu-west-1:111122223333:thing/pump-1"), Some(scope()));
        assert_eq!(AccountScope::from_arn("not-an-arn"), None);
        assert_eq!(AccountScope::provisional("cn-north-1").partition, "aws-cn");
        assert_eq!(AccountScope::provisional("us-gov-west-1").partition, "aws-us-gov");
    }

    #[test]
    fn oldest_non_default_version_is_pruned_only_at_the_limit() {
        let v = |id: &str, is_default: bool, created: i64| VersionInfo { id: id.into(), is_default, created };
        let four = vec![v("1", false, 10), v("2", false, 20), v("3", false, 30), v("4", true, 40)];
        assert_eq!(version_to_prune(&four), None);
        let five = vec![v("2", false, 20), v("1", true, 10), v("3", false, 30), v("4", false, 40), v("5", false, 50)];
        assert_eq!(version_to_prune(&five).map(|x| x.id.as_str()), Some("2"), "the default version 1 is kept");
    }
}
