//! `provision audit` against the local cloud: a freshly provisioned device and its token exchange
//! role pass; then each bad case is made through the AWS SDK (a permissive policy, a certificate
//! on two things, a revoked certificate still attached, a role alias on a role with `s3:*` on
//! `*`, a certificate expiring in ten days registered without a CA), and the binary's JSON,
//! Markdown and exit codes are checked.

use std::collections::BTreeSet;

use aws_sdk_iot::types::CertificateStatus;
use serde_json::Value;

use crate::common::{Provisioning as _, TestCloud, admin_credentials};
use crate::{provision, text};

const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
  "Principal":{"Service":"credentials.iot.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const UPLOADS_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject",
  "Resource":"arn:aws:s3:::pump-data/anomalies/${credentials-iot:ThingName}/*"}]}"#;
const EVERYTHING_IN_S3: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;

async fn iam(cloud: &TestCloud) -> aws_sdk_iam::Client {
    provision::iam_client(&provision::ClientOptions {
        endpoint_url: Some(cloud.cloud.endpoints.http.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(admin_credentials(&cloud.cloud.endpoints)),
    })
    .await
}

/// A role the credentials provider may assume, with one inline policy, and an alias for it.
async fn role_alias(iot: &aws_sdk_iot::Client, iam: &aws_sdk_iam::Client, name: &str, policy: &str) {
    let role = iam.create_role().role_name(name).assume_role_policy_document(TRUST).send().await.expect("CreateRole");
    let arn = role.role().unwrap().arn().to_owned();
    iam.put_role_policy()
        .role_name(name)
        .policy_name("access")
        .policy_document(policy)
        .send()
        .await
        .expect("PutRolePolicy");
    iot.create_role_alias().role_alias(format!("{name}Alias")).role_arn(arn).send().await.expect("CreateRoleAlias");
}

/// A self-signed certificate valid for ten more days, as some other CA's device would hold.
fn short_lived_certificate_pem() -> String {
    let mut params = rcgen::CertificateParams::new(vec!["short-lived-device".to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(10);
    params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
}

/// (check, reasonCode, resource) of every finding in a JSON report.
fn findings(report: &Value) -> BTreeSet<(String, String, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("check"), s("reasonCode"), s("resource"))
        })
        .collect()
}

#[tokio::test]
async fn audit_passes_a_clean_device_then_reports_each_bad_case_with_its_severity_and_exit_code() {
    let cloud = TestCloud::start().await;
    let (iot, iam) = (cloud.iot().await, iam(&cloud).await);
    let home = tempfile::tempdir().unwrap();
    let admin = cloud.cloud.endpoints.credentials.clone().expect("the administrator's key pair");
    let keys = (admin.access_key_id.as_str(), admin.secret_access_key.as_str());
    let http = cloud.cloud.endpoints.http.clone();
    let audit = async |extra: &[&str]| {
        let args: Vec<&str> = ["audit", "--endpoint-url", http.as_str()].iter().chain(extra).copied().collect();
        provision(&args, home.path(), keys).await
    };

    // A clean account: one provisioned core and the token exchange role the solution needs.
    let device = provision::provision_core_device(&iot, &cloud.spec("pump-core-1", &home.path().join("core")))
        .await
        .expect("provisioning");
    role_alias(&iot, &iam, "PumpTokenExchangeRole", UPLOADS_ONLY).await;
    let clean = audit(&["--fail-on", "medium"]).await;
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean));
    let report: Value = serde_json::from_slice(&clean.stdout).expect("a JSON report on stdout");
    assert_eq!(report["audited"]["certificates"], 1, "{report}");
    assert_eq!(report["audited"]["roleAliases"], 1, "{report}");
    let above_low = ["critical", "high", "medium"].iter().map(|s| report["summary"][s].as_u64().unwrap()).sum::<u64>();
    assert_eq!(above_low, 0, "{report}");

    // Each bad case.
    let wide = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#;
    iot.create_policy().policy_name("WidePolicy").policy_document(wide).send().await.expect("CreatePolicy");
    let shared = iot.create_keys_and_certificate().set_as_active(true).send().await.expect("certificate");
    for thing in ["shared-a", "shared-b"] {
        iot.create_thing().thing_name(thing).send().await.expect("CreateThing");
        let arn = shared.certificate_arn().unwrap();
        iot.attach_thing_principal().thing_name(thing).principal(arn).send().await.expect("AttachThingPrincipal");
    }
    let revoked = iot.create_keys_and_certificate().set_as_active(true).send().await.expect("certificate");
    iot.create_thing().thing_name("retired").send().await.expect("CreateThing");
    let arn = revoked.certificate_arn().unwrap();
    iot.attach_thing_principal().thing_name("retired").principal(arn).send().await.expect("AttachThingPrincipal");
    let id = revoked.certificate_id().unwrap();
    iot.update_certificate().certificate_id(id).new_status(CertificateStatus::Revoked).send().await.expect("revoke");
    role_alias(&iot, &iam, "WideRole", EVERYTHING_IN_S3).await;
    let expiring = iot
        .register_certificate_without_ca()
        .certificate_pem(short_lived_certificate_pem())
        .status(CertificateStatus::Active)
        .send()
        .await
        .expect("RegisterCertificateWithoutCA");

    let failing = audit(&["--format", "json", "--fail-on", "critical"]).await;
    assert_eq!(failing.status.code(), Some(2), "{}", text(&failing));
    assert!(text(&failing).contains("at or above critical"), "{}", text(&failing));
    let report: Value = serde_json::from_slice(&failing.stdout).expect("a JSON report on stdout");
    let got = findings(&report);
    let want = [
        ("IOT_POLICY_OVERLY_PERMISSIVE_CHECK", "ALLOWS_BROAD_ACCESS_TO_IOT_DATA_PLANE_ACTIONS", "WidePolicy"),
        ("DEVICE_CERTIFICATE_SHARED_CHECK", "CERTIFICATE_SHARED_BY_THINGS", shared.certificate_id().unwrap()),
        ("REVOKED_DEVICE_CERTIFICATE_STILL_ACTIVE_CHECK", "REVOKED_CERTIFICATE_STILL_ATTACHED", id),
        ("IOT_ROLE_ALIAS_OVERLY_PERMISSIVE_CHECK", "ALLOWS_BROAD_ACCESS_TO_USED_SERVICES", "WideRoleAlias"),
        ("DEVICE_CERTIFICATE_EXPIRING_CHECK", "CERTIFICATE_APPROACHING_EXPIRATION", expiring.certificate_id().unwrap()),
    ];
    let want: BTreeSet<_> = want.iter().map(|(c, r, x)| (c.to_string(), r.to_string(), x.to_string())).collect();
    assert_eq!(got, want, "{report}");
    assert_eq!(report["summary"]["critical"], 3, "{report}");
    assert_eq!(report["summary"]["medium"], 2, "{report}");
    assert!(!got.iter().any(|(_, _, r)| r == &device.record.certificate_id || r == "PumpCoreDevicePolicy"));

    // Markdown to a file; without --fail-on the findings do not fail the run.
    let out = home.path().join("audit.md");
    let markdown = audit(&["--format", "markdown", "--out", out.to_str().unwrap()]).await;
    assert_eq!(markdown.status.code(), Some(0), "{}", text(&markdown));
    assert!(text(&markdown).contains("3 critical, 0 high, 2 medium, 0 low"), "{}", text(&markdown));
    let md = std::fs::read_to_string(&out).unwrap();
    assert!(md.contains("| critical | `DEVICE_CERTIFICATE_SHARED_CHECK` |"), "{md}");
    assert!(md.contains("role alias `WideRoleAlias`"), "{md}");
    cloud.stop().await;
}
