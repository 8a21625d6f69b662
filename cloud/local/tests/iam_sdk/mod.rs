//! Scoped credentials end to end: a role with a thing-scoped inline policy, a role alias made
//! with `aws-sdk-iot`, a device trading its certificate for temporary credentials at the
//! credentials provider (mutual TLS), and `aws-sdk-s3`/`aws-sdk-iot` with those credentials
//! allowed inside the scope and refused outside it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use local_cloud::server::{Config, LocalCloud};
use local_cloud::time::ManualClock;
use serde_json::Value;

use crate::common::{admin, failed, sdk_http_client};

const BUCKET: &str = "pump-data";
const ALIAS: &str = "PumpAnalyzerRoleAlias";
const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
  "Principal":{"Service":"credentials.iot.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const UPLOADS_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject",
  "Resource":"arn:aws:s3:::pump-data/anomalies/${credentials-iot:ThingName}/*"}]}"#;

/// An `aws-sdk-iot` client of the local cloud with these credentials.
pub(crate) fn iot(cloud: &LocalCloud, creds: Credentials) -> aws_sdk_iot::Client {
    aws_sdk_iot::Client::from_conf(
        aws_sdk_iot::Config::builder()
            .behavior_version(aws_sdk_iot::config::BehaviorVersion::latest())
            .region(aws_sdk_iot::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&cloud.endpoints.http)
            .http_client(sdk_http_client())
            .build(),
    )
}

fn s3(cloud: &LocalCloud, creds: Credentials) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(&cloud.endpoints.http)
            .force_path_style(true)
            .http_client(sdk_http_client())
            .build(),
    )
}

/// A device: its certificate id and an mTLS client presenting it.
struct Device {
    certificate_id: String,
    client: sdk_mtls::MtlsHttpClient,
}

async fn device(cloud: &LocalCloud, iot: &aws_sdk_iot::Client, thing: &str, policy: &str) -> Device {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    iot.create_thing().thing_name(thing).send().await.expect("CreateThing");
    let keys = iot.create_keys_and_certificate().set_as_active(true).send().await.expect("CreateKeysAndCertificate");
    let arn = keys.certificate_arn().unwrap();
    iot.attach_thing_principal().thing_name(thing).principal(arn).send().await.expect("AttachThingPrincipal");
    iot.attach_policy().policy_name(policy).target(arn).send().await.expect("AttachPolicy");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&cloud.endpoints.ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(keys.certificate_pem().unwrap().as_bytes()).collect::<Result<_, _>>();
    let key = PrivateKeyDer::from_pem_slice(keys.key_pair().unwrap().private_key().unwrap().as_bytes()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain.unwrap(), key)
        .unwrap();
    Device {
        certificate_id: keys.certificate_id().unwrap().into(),
        client: sdk_mtls::MtlsHttpClient::new(Arc::new(tls)),
    }
}

/// `GET /role-aliases/{alias}/credentials`, as a device calls it.
async fn fetch(cloud: &LocalCloud, device: &Device, alias: &str, thing: Option<&str>) -> (u16, Value) {
    let url = format!("{}/role-aliases/{alias}/credentials", cloud.endpoints.credentials_provider.as_ref().unwrap());
    let headers: Vec<(&str, &str)> = thing.map(|t| ("x-amzn-iot-thingname", t)).into_iter().collect();
    let (status, body) = device.client.get(&url, &headers, 64 * 1024).await.expect("the credentials provider answers");
    (status, serde_json::from_slice(&body).expect("a JSON answer"))
}

fn session(answer: &Value) -> Credentials {
    let c = &answer["credentials"];
    let text = |k: &str| c[k].as_str().unwrap_or_else(|| panic!("{k} in {answer}")).to_owned();
    Credentials::new(text("accessKeyId"), text("secretAccessKey"), Some(text("sessionToken")), None, "iot")
}

#[tokio::test]
async fn a_device_gets_credentials_scoped_to_its_thing_and_refused_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let clock = ManualClock::at(now_ms);
    let cloud = LocalCloud::start_with_clock(Config::ephemeral(dir.path()), clock.clone()).await.unwrap();
    let root = iot(&cloud, admin(&cloud.endpoints));
    s3(&cloud, admin(&cloud.endpoints)).create_bucket().bucket(BUCKET).send().await.expect("CreateBucket");

    let role = cloud.iam.create_role("PumpAnalyzerRole", None, TRUST, None, None).unwrap();
    cloud.iam.put_role_policy("PumpAnalyzerRole", "uploads", UPLOADS_ONLY).unwrap();
    let created =
        root.create_role_alias().role_alias(ALIAS).role_arn(&role.arn).credential_duration_seconds(900).send().await;
    let created = created.expect("CreateRoleAlias");
    assert_eq!(created.role_alias_arn(), Some("arn:aws:iot:us-east-1:000000000000:rolealias/PumpAnalyzerRoleAlias"));
    let described = root.describe_role_alias().role_alias(ALIAS).send().await.expect("DescribeRoleAlias");
    let d = described.role_alias_description().unwrap();
    assert_eq!((d.role_arn(), d.credential_duration_seconds()), (Some(role.arn.as_str()), Some(900)));
    let listed = root.list_role_aliases().send().await.expect("ListRoleAliases");
    assert_eq!(listed.role_aliases(), [ALIAS]);
    let (code, _) = failed(root.create_role_alias().role_alias(ALIAS).role_arn(&role.arn).send().await);
    assert_eq!(code, "ResourceAlreadyExistsException");
    let (code, status) = failed(
        root.create_role_alias().role_alias("Short").role_arn(&role.arn).credential_duration_seconds(60).send().await,
    );
    assert_eq!((code.as_str(), status), ("InvalidRequestException", 400));

    let assume = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iot:AssumeRoleWithCertificate",
        "Resource":"arn:aws:iot:us-east-1:000000000000:rolealias/{ALIAS}"}}]}}"#
    );
    root.create_policy().policy_name("AssumeAnalyzerRole").policy_document(assume).send().await.unwrap();
    let none = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}"#;
    root.create_policy().policy_name("ConnectOnly").policy_document(none).send().await.unwrap();
    let site1 = device(&cloud, &root, "site-1", "AssumeAnalyzerRole").await;
    let stranger = device(&cloud, &root, "site-9", "ConnectOnly").await;

    // The certificate's policy must allow the alias; the thing named must be attached to it.
    let (status, body) = fetch(&cloud, &stranger, ALIAS, Some("site-9")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = fetch(&cloud, &site1, ALIAS, Some("site-9")).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = fetch(&cloud, &site1, "NoSuchAlias", Some("site-1")).await;
    assert_eq!(status, 404, "{body}");

    let (status, answer) = fetch(&cloud, &site1, ALIAS, Some("site-1")).await;
    assert_eq!(status, 200, "{answer}");
    let expiration = answer["credentials"]["expiration"].as_str().unwrap();
    assert!(expiration.ends_with('Z'), "{expiration}");
    let creds = session(&answer);
    assert!(creds.access_key_id().starts_with("ASIA"));

    // Inside the scope: its own prefix. Outside: another thing's prefix, another action, another service.
    let scoped = s3(&cloud, creds.clone());
    scoped
        .put_object()
        .bucket(BUCKET)
        .key("anomalies/site-1/w1.json")
        .body(b"{}".to_vec().into())
        .send()
        .await
        .expect("own prefix");
    let (code, status) = failed(
        scoped.put_object().bucket(BUCKET).key("anomalies/site-2/w1.json").body(b"{}".to_vec().into()).send().await,
    );
    assert_eq!((code.as_str(), status), ("AccessDenied", 403));
    let (code, _) = failed(scoped.get_object().bucket(BUCKET).key("anomalies/site-1/w1.json").send().await);
    assert_eq!(code, "AccessDenied");
    let (code, status) = failed(iot(&cloud, creds.clone()).list_things().send().await);
    assert_eq!((code.as_str(), status), ("AccessDeniedException", 403));
    // The same key without its session token, or with another token, is not accepted.
    let no_token = Credentials::new(creds.access_key_id(), creds.secret_access_key(), None, None, "t");
    let (code, _) = failed(iot(&cloud, no_token.clone()).list_things().send().await);
    assert_eq!(code, "UnrecognizedClientException");
    let (code, _) = failed(
        s3(&cloud, no_token)
            .put_object()
            .bucket(BUCKET)
            .key("anomalies/site-1/w2.json")
            .body(b"{}".to_vec().into())
            .send()
            .await,
    );
    assert_eq!(code, "InvalidToken");
    let stored = cloud.s3.objects().head(BUCKET, "anomalies/site-2/w1.json").unwrap();
    assert!(stored.is_none(), "a refused upload stores nothing");

    // An inactive certificate gets nothing; credentials end when they expire.
    root.update_certificate()
        .certificate_id(&site1.certificate_id)
        .new_status(aws_sdk_iot::types::CertificateStatus::Inactive)
        .send()
        .await
        .expect("UpdateCertificate");
    let (status, body) = fetch(&cloud, &site1, ALIAS, Some("site-1")).await;
    assert_eq!(status, 401, "{body}");
    clock.advance(Duration::from_secs(900));
    let (code, status) = failed(
        scoped.put_object().bucket(BUCKET).key("anomalies/site-1/w3.json").body(b"{}".to_vec().into()).send().await,
    );
    assert_eq!((code.as_str(), status), ("ExpiredToken", 400));
    cloud.shutdown().await;
}
