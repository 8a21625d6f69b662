//! Greengrass V2 on the local cloud, driven by AWS's own `aws-sdk-greengrassv2`: component
//! versions on the control plane (artifacts put with `aws-sdk-s3`), and the core devices' data
//! plane over mutual TLS with a device certificate made through `aws-sdk-iot`, the way the
//! nucleus calls it (an SDK client whose HTTP client presents the certificate, no SigV4).

use std::sync::Arc;

use aws_credential_types::Credentials;
use aws_sdk_greengrassv2::config::retry::RetryConfig;
use aws_sdk_greengrassv2::config::{BehaviorVersion, Region};
use aws_sdk_greengrassv2::primitives::Blob;
use aws_sdk_greengrassv2::types::{CloudComponentState, ComponentCandidate, ComponentPlatform, RecipeOutputFormat};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt as _;
use local_cloud::server::{Config, LocalCloud};
use serde_json::Value;
use sha2::Digest as _;

use crate::common::failed;

const BUCKET: &str = "gg-artifacts";
const KEY: &str = "com.example.Hello/1.0.0/hello.sh";
const ARTIFACT: &[u8] = b"#!/bin/sh\necho hello from the local cloud\n";

fn credentials(cloud: &LocalCloud) -> Credentials {
    crate::common::admin(&cloud.endpoints)
}

/// The control plane: SigV4-signed for `greengrass` on the shared HTTP endpoint.
fn control(cloud: &LocalCloud) -> aws_sdk_greengrassv2::Client {
    let conf = aws_sdk_greengrassv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(credentials(cloud))
        .endpoint_url(&cloud.endpoints.http)
        .retry_config(RetryConfig::disabled())
        .http_client(crate::common::sdk_http_client())
        .build();
    aws_sdk_greengrassv2::Client::from_conf(conf)
}

fn s3(cloud: &LocalCloud) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(credentials(cloud))
        .endpoint_url(&cloud.endpoints.http)
        .force_path_style(true)
        .http_client(crate::common::sdk_http_client())
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

fn iot(cloud: &LocalCloud) -> aws_sdk_iot::Client {
    let conf = aws_sdk_iot::Config::builder()
        .behavior_version(aws_sdk_iot::config::BehaviorVersion::latest())
        .region(aws_sdk_iot::config::Region::new("us-east-1"))
        .credentials_provider(credentials(cloud))
        .endpoint_url(&cloud.endpoints.http)
        .http_client(crate::common::sdk_http_client())
        .build();
    aws_sdk_iot::Client::from_conf(conf)
}

/// The TLS configuration of a core calling the data plane: the local CA as the only root, and
/// the device's certificate and key when given (as the nucleus's
/// `GreengrassServiceClientFactory` configures it).
fn device_tls(ca_file: &std::path::Path, cert_pem: Option<&str>, key_pem: &str) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("CA added");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let config = match cert_pem {
        Some(pem) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().expect("certificate");
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("private key");
            builder.with_client_auth_cert(chain, key).expect("client identity")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// The data plane as a core calls it: anonymous (no SigV4), mutual TLS with `device`.
fn data_plane(cloud: &LocalCloud, cert_pem: Option<&str>, key_pem: &str) -> aws_sdk_greengrassv2::Client {
    let url = cloud.endpoints.greengrass_data_plane.clone().expect("endpoints advertise the Greengrass data plane");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let conf = aws_sdk_greengrassv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .allow_no_auth()
        .endpoint_url(url)
        .retry_config(RetryConfig::disabled())
        .http_client(sdk_mtls::MtlsHttpClient::new(device_tls(&cloud.endpoints.ca_file, cert_pem, key_pem)))
        .build();
    aws_sdk_greengrassv2::Client::from_conf(conf)
}

/// A plain HTTP GET (the presigned URL): status and body.
async fn download(url: &str) -> (u16, Vec<u8>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let response = client.get(url.parse().expect("URL")).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.into_body().collect().await.expect("body").to_bytes().to_vec())
}

fn recipe(name: &str, version: &str, os: &str, uri: &str) -> String {
    format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: {name}\nComponentVersion: '{version}'\n\
         ComponentDescription: Says hello.\nComponentPublisher: Example\n\
         Manifests:\n  - Platform:\n      os: {os}\n    Lifecycle:\n      Run: sh {{artifacts:path}}/hello.sh\n\
         \x20   Artifacts:\n      - URI: {uri}\n"
    )
}

async fn start() -> (tempfile::TempDir, LocalCloud) {
    let dir = tempfile::tempdir().unwrap();
    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.expect("local cloud starts");
    let s3 = s3(&cloud);
    s3.create_bucket().bucket(BUCKET).send().await.expect("CreateBucket");
    s3.put_object().bucket(BUCKET).key(KEY).body(ARTIFACT.to_vec().into()).send().await.expect("PutObject");
    (dir, cloud)
}

fn artifact_digest() -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(ARTIFACT))
}

async fn create(
    gg: &aws_sdk_greengrassv2::Client,
    text: &str,
) -> aws_sdk_greengrassv2::operation::create_component_version::CreateComponentVersionOutput {
    gg.create_component_version()
        .inline_recipe(Blob::new(text.as_bytes()))
        .send()
        .await
        .expect("CreateComponentVersion")
}

#[tokio::test]
async fn greengrass_component_versions_round_trip_with_the_rust_sdk() {
    let (_dir, cloud) = start().await;
    let gg = control(&cloud);
    let uri = format!("s3://{BUCKET}/{KEY}");

    let out = create(&gg, &recipe("com.example.Hello", "1.0.0", "linux", &uri)).await;
    let arn = "arn:aws:greengrass:us-east-1:000000000000:components:com.example.Hello:versions:1.0.0";
    assert_eq!(out.arn(), Some(arn));
    assert_eq!((out.component_name(), out.component_version()), ("com.example.Hello", "1.0.0"));
    assert_eq!(out.status().and_then(|s| s.component_state()), Some(&CloudComponentState::Requested), "as AWS answers");

    let described = gg.describe_component().arn(arn).send().await.expect("DescribeComponent");
    let status = described.status().expect("status");
    assert_eq!(status.component_state(), Some(&CloudComponentState::Deployable), "{status:?}");
    assert_eq!((described.publisher(), described.description()), (Some("Example"), Some("Says hello.")));
    let platform = &described.platforms()[0];
    assert_eq!(platform.attributes().and_then(|a| a.get("os")).map(String::as_str), Some("linux"));

    // The stored recipe gains the artifact's digest, in either output format.
    let json =
        gg.get_component().arn(arn).recipe_output_format(RecipeOutputFormat::Json).send().await.expect("GetComponent");
    assert_eq!(json.recipe_output_format(), &RecipeOutputFormat::Json);
    let doc: Value = serde_json::from_slice(json.recipe().as_ref()).expect("a JSON recipe");
    let artifact = &doc["Manifests"][0]["Artifacts"][0];
    assert_eq!(
        (artifact["Digest"].as_str(), artifact["Algorithm"].as_str()),
        (Some(artifact_digest().as_str()), Some("SHA-256"))
    );
    let yaml = gg
        .get_component()
        .arn(arn)
        .recipe_output_format(RecipeOutputFormat::Yaml)
        .send()
        .await
        .expect("GetComponent YAML");
    let from_yaml: Value = serde_yaml_ng::from_slice(yaml.recipe().as_ref()).expect("a YAML recipe");
    assert_eq!(from_yaml, doc, "both formats hold the same recipe");

    // A client token answers again with the first response; without it the version exists.
    let token_recipe = recipe("com.example.Hello", "2.0.0", "linux", &uri);
    let first = gg
        .create_component_version()
        .inline_recipe(Blob::new(token_recipe.as_bytes()))
        .client_token("retry-1")
        .send()
        .await
        .expect("CreateComponentVersion with a token");
    let again = gg
        .create_component_version()
        .inline_recipe(Blob::new(token_recipe.as_bytes()))
        .client_token("retry-1")
        .send()
        .await
        .expect("the same request with the same token is answered again");
    assert_eq!((again.arn(), again.creation_timestamp()), (first.arn(), first.creation_timestamp()));
    let (code, status) =
        failed(gg.create_component_version().inline_recipe(Blob::new(token_recipe.as_bytes())).send().await);
    assert_eq!((code.as_str(), status), ("ConflictException", 409), "an existing version");

    let listed = gg.list_components().send().await.expect("ListComponents");
    assert_eq!(listed.components().len(), 1);
    let c = &listed.components()[0];
    assert_eq!(c.arn(), Some("arn:aws:greengrass:us-east-1:000000000000:components:com.example.Hello"));
    assert_eq!(c.latest_version().and_then(|v| v.component_version()), Some("2.0.0"));
    let public = gg.list_components().scope(aws_sdk_greengrassv2::types::ComponentVisibilityScope::Public).send().await;
    assert!(public.expect("ListComponents PUBLIC").components().is_empty(), "no AWS components here");

    let component_arn = c.arn().unwrap();
    let page1 =
        gg.list_component_versions().arn(component_arn).max_results(1).send().await.expect("ListComponentVersions");
    assert_eq!(page1.component_versions()[0].component_version(), Some("2.0.0"), "highest first");
    let token = page1.next_token().expect("a second page").to_string();
    let page2 = gg.list_component_versions().arn(component_arn).next_token(token).send().await.expect("page 2");
    assert_eq!(page2.component_versions()[0].component_version(), Some("1.0.0"));
    assert!(page2.next_token().is_none());

    let v2 = "arn:aws:greengrass:us-east-1:000000000000:components:com.example.Hello:versions:2.0.0";
    gg.delete_component().arn(v2).send().await.expect("DeleteComponent");
    let (code, status) = failed(gg.describe_component().arn(v2).send().await);
    assert_eq!((code.as_str(), status), ("ResourceNotFoundException", 404), "deleted");
    let left = gg.list_component_versions().arn(component_arn).send().await.expect("ListComponentVersions");
    assert_eq!(left.component_versions().len(), 1);

    // Everything is in the data directory: a restart (on the same data-plane port, which the
    // stopped cloud must have closed) keeps it.
    let dir = _dir.path().to_path_buf();
    let on_disk = local_cloud::server::read_endpoints(&dir).unwrap();
    assert_eq!(on_disk.greengrass_data_plane, cloud.endpoints.greengrass_data_plane, "endpoints.json advertises it");
    let data_plane = on_disk.greengrass_data_plane.unwrap();
    cloud.shutdown().await;
    let mut config = Config::ephemeral(&dir);
    config.greengrass_data_plane_addr = data_plane.trim_start_matches("https://").parse().unwrap();
    let cloud = LocalCloud::start(config).await.expect("restart on the same data-plane port");
    let described =
        control(&cloud).describe_component().arn(arn).send().await.expect("DescribeComponent after restart");
    assert_eq!(described.status().and_then(|s| s.component_state()), Some(&CloudComponentState::Deployable));
    cloud.shutdown().await;
}

#[tokio::test]
async fn greengrass_refuses_bad_recipes_and_fails_versions_whose_artifacts_are_missing() {
    let (_dir, cloud) = start().await;
    let gg = control(&cloud);

    let unknown = "arn:aws:greengrass:us-east-1:000000000000:components:com.example.Nope:versions:1.0.0";
    for (what, result) in [
        ("DescribeComponent", failed(gg.describe_component().arn(unknown).send().await)),
        ("GetComponent", failed(gg.get_component().arn(unknown).send().await)),
        ("DeleteComponent", failed(gg.delete_component().arn(unknown).send().await)),
        (
            "ListComponentVersions",
            failed(
                gg.list_component_versions()
                    .arn("arn:aws:greengrass:us-east-1:000000000000:components:com.example.Nope")
                    .send()
                    .await,
            ),
        ),
    ] {
        assert_eq!((result.0.as_str(), result.1), ("ResourceNotFoundException", 404), "{what}");
    }
    let (code, status) = failed(gg.describe_component().arn("not-an-arn").send().await);
    assert_eq!((code.as_str(), status), ("ValidationException", 400), "a malformed ARN");

    let bad = |text: &'static str| gg.create_component_version().inline_recipe(Blob::new(text)).send();
    let table = [
        ("malformed YAML", "RecipeFormatVersion: '2020-01-25'\nComponentName: [unclosed\n"),
        ("malformed JSON", "{\"RecipeFormatVersion\": \"2020-01-25\", "),
        (
            "a version that is not semver",
            "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.A\nComponentVersion: one\nManifests:\n  - Lifecycle:\n      Run: 'true'\n",
        ),
        ("no manifests", "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.A\nComponentVersion: 1.0.0\n"),
        (
            "a reserved name",
            "RecipeFormatVersion: '2020-01-25'\nComponentName: aws.greengrass.Mine\nComponentVersion: 1.0.0\nManifests:\n  - Lifecycle:\n      Run: 'true'\n",
        ),
    ];
    for (why, text) in table {
        let e = bad(text).await.expect_err(why);
        use aws_sdk_greengrassv2::error::ProvideErrorMetadata as _;
        assert_eq!(e.code(), Some("ValidationException"), "{why}: {e:?}");
        assert!(e.as_service_error().is_some_and(|s| s.is_validation_exception()), "{why}");
    }
    let lambda = aws_sdk_greengrassv2::types::LambdaFunctionRecipeSource::builder()
        .lambda_arn("arn:aws:lambda:us-east-1:000000000000:function:f:1")
        .build()
        .unwrap();
    let (code, _) = failed(gg.create_component_version().lambda_function(lambda).send().await);
    assert_eq!(code, "ValidationException", "Lambda components are not supported here");

    // Valid recipes whose artifacts are not in S3: stored, and FAILED with the URI in `errors`.
    for (name, uri) in [
        ("com.example.NoObject", format!("s3://{BUCKET}/missing.sh")),
        ("com.example.NoBucket", "s3://no-such-bucket/hello.sh".to_string()),
    ] {
        let out = create(&gg, &recipe(name, "1.0.0", "linux", &uri)).await;
        let described = gg.describe_component().arn(out.arn().unwrap()).send().await.expect("DescribeComponent");
        let status = described.status().unwrap();
        assert_eq!(status.component_state(), Some(&CloudComponentState::Failed), "{name}");
        assert!(status.errors().is_some_and(|e| e.contains_key(&uri)), "{name}: {status:?}");
    }
    cloud.shutdown().await;
}

#[tokio::test]
async fn greengrass_data_plane_resolves_and_hands_out_artifacts_to_a_certificate_allowed_by_its_policy() {
    let (_dir, cloud) = start().await;
    let gg = control(&cloud);
    let uri = format!("s3://{BUCKET}/{KEY}");
    for version in ["1.0.0", "1.1.0"] {
        create(&gg, &recipe("com.example.Hello", version, "linux", &uri)).await;
    }
    create(&gg, &recipe("com.example.Hello", "2.0.0", "windows", &uri)).await;

    // A core's certificate and the minimal core policy's Greengrass actions, through aws-sdk-iot.
    let iot = iot(&cloud);
    let mut devices = Vec::new();
    for (policy, actions) in [
        (
            "CorePolicy",
            r#"["greengrass:ResolveComponentCandidates","greengrass:GetComponentVersionArtifact","greengrass:GetDeploymentConfiguration","greengrass:ListThingGroupsForCoreDevice"]"#,
        ),
        ("IotOnly", r#"["iot:Connect","iot:Publish","iot:Subscribe","iot:Receive"]"#),
    ] {
        let keys =
            iot.create_keys_and_certificate().set_as_active(true).send().await.expect("CreateKeysAndCertificate");
        let doc = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":{actions},"Resource":"*"}}]}}"#
        );
        iot.create_policy().policy_name(policy).policy_document(doc).send().await.expect("CreatePolicy");
        let cert_arn = keys.certificate_arn().unwrap();
        iot.attach_policy().policy_name(policy).target(cert_arn).send().await.expect("AttachPolicy");
        devices.push((
            keys.certificate_id().unwrap().to_string(),
            keys.certificate_pem().unwrap().to_string(),
            keys.key_pair().and_then(|k| k.private_key()).unwrap().to_string(),
        ));
    }
    let (core_cert_id, core_cert, core_key) = &devices[0];
    let core = data_plane(&cloud, Some(core_cert.as_str()), core_key);
    let linux = ComponentPlatform::builder().attributes("os", "linux").attributes("architecture", "amd64").build();
    let candidate = |requirement: &str| {
        ComponentCandidate::builder()
            .component_name("com.example.Hello")
            .version_requirements("com.example.Dependent", requirement)
            .build()
    };

    let resolved = core
        .resolve_component_candidates()
        .platform(linux.clone())
        .component_candidates(candidate(">=1.0.0"))
        .send()
        .await
        .expect("ResolveComponentCandidates");
    let chosen = &resolved.resolved_component_versions()[0];
    assert_eq!(chosen.component_version(), Some("1.1.0"), "the highest for linux (2.0.0 is for windows)");
    let doc: Value = serde_json::from_slice(chosen.recipe().expect("recipe").as_ref()).expect("a JSON recipe");
    assert_eq!(doc["ComponentVersion"], "1.1.0");

    use aws_sdk_greengrassv2::error::ProvideErrorMetadata as _;
    let e = core
        .resolve_component_candidates()
        .platform(linux.clone())
        .component_candidates(candidate(">=2.0.0"))
        .send()
        .await
        .expect_err("no 2.x for linux");
    assert_eq!(e.code(), Some("ResourceNotFoundException"));
    assert!(e.message().unwrap_or_default().contains("claim platform"), "the nucleus's cue: {e:?}");
    let e = core
        .resolve_component_candidates()
        .platform(linux.clone())
        .component_candidates(candidate("^3.0.0"))
        .send()
        .await;
    let e = e.expect_err("no 3.x at all");
    assert!(e.message().unwrap_or_default().contains("no usable version"), "the nucleus's cue: {e:?}");

    // The artifact: a presigned URL whose download matches the recipe's digest.
    let arn = chosen.arn().expect("arn");
    let out = core
        .get_component_version_artifact()
        .arn(arn)
        .artifact_name(format!("{BUCKET}/{KEY}"))
        .send()
        .await
        .expect("GetComponentVersionArtifact");
    let (status, body) = download(out.pre_signed_url()).await;
    assert_eq!(status, 200);
    let digest = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
    assert_eq!(doc["Manifests"][0]["Artifacts"][0]["Digest"].as_str(), Some(digest.as_str()), "the download matches");
    let by_file = core.get_component_version_artifact().arn(arn).artifact_name("hello.sh").send().await;
    assert!(by_file.is_ok(), "the file name finds it too: {by_file:?}");
    let (code, status) = failed(core.get_component_version_artifact().arn(arn).artifact_name("other.bin").send().await);
    assert_eq!((code.as_str(), status), ("ResourceNotFoundException", 404));

    // A certificate whose policy grants no greengrass:* action is refused, as is one no longer ACTIVE.
    let (_, iot_cert, iot_key) = &devices[1];
    let refused = data_plane(&cloud, Some(iot_cert.as_str()), iot_key);
    let (code, status) = failed(
        refused
            .resolve_component_candidates()
            .platform(linux.clone())
            .component_candidates(candidate("*"))
            .send()
            .await,
    );
    assert_eq!((code.as_str(), status), ("AccessDeniedException", 403));
    let (code, status) =
        failed(refused.get_component_version_artifact().arn(arn).artifact_name("hello.sh").send().await);
    assert_eq!((code.as_str(), status), ("AccessDeniedException", 403));
    iot.update_certificate()
        .certificate_id(core_cert_id)
        .new_status(aws_sdk_iot::types::CertificateStatus::Inactive)
        .send()
        .await
        .expect("UpdateCertificate");
    let (code, _) = failed(
        core.resolve_component_candidates().platform(linux.clone()).component_candidates(candidate("*")).send().await,
    );
    assert_eq!(code, "AccessDeniedException", "an INACTIVE certificate");

    // Without a client certificate there is no TLS session at all.
    let anonymous = data_plane(&cloud, None, "");
    let e = anonymous.resolve_component_candidates().platform(linux).component_candidates(candidate("*")).send().await;
    assert!(e.expect_err("no client certificate").raw_response().is_none(), "refused in the handshake");
    cloud.shutdown().await;
}
