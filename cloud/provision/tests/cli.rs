//! The `provision` binary as a person runs it: credentials and region from the environment (the
//! default chain), `--endpoint-url` to the local cloud, exit codes by whose fault a failure is.

mod audit;
mod common;
mod service_audit;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

use common::{Provisioning as _, TestCloud};

/// Runs the binary with AWS settings from the environment only; shared config files and
/// instance metadata are switched off so nothing but loopback is ever asked.
/// The key pair of tests whose endpoint is never reached.
const UNUSED_KEYS: (&str, &str) = ("AKIDLOCAL", "local-secret");

async fn provision(args: &[&str], home: &Path, keys: (&str, &str)) -> Output {
    run_binary(env!("CARGO_BIN_EXE_provision"), args, home, keys, &[]).await
}

/// Runs one of the crate's binaries that way, with `env` added.
async fn run_binary(
    exe: &str,
    args: &[&str],
    home: &Path,
    keys: (&str, &str),
    env: &[(&str, std::ffi::OsString)],
) -> Output {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .env_clear()
        .env("HOME", home)
        .env("AWS_ACCESS_KEY_ID", keys.0)
        .env("AWS_SECRET_ACCESS_KEY", keys.1)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("the binary finishes")
        .expect("the binary runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn binary_provisions_reruns_idempotently_and_deprovisions() {
    let cloud = TestCloud::start().await;
    let home = tempfile::tempdir().unwrap();
    let out_dir = home.path().join("pump-core-1");
    let (out, ca, http, port) = (
        out_dir.to_str().unwrap(),
        cloud.cloud.endpoints.ca_file.to_str().unwrap().to_owned(),
        cloud.cloud.endpoints.http.clone(),
        cloud.mqtt_port().to_string(),
    );
    let core = ["core", "--thing", "pump-core-1", "--out", out, "--root-ca", &ca, "--mqtt-port", &port];
    let args: Vec<&str> = core.iter().copied().chain(["--endpoint-url", http.as_str()]).collect();
    let admin = cloud.cloud.endpoints.credentials.clone().expect("the administrator's key pair");
    let keys = (admin.access_key_id.as_str(), admin.secret_access_key.as_str());
    let first = provision(&args, home.path(), keys).await;
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("created certificate"), "{}", text(&first));
    let endpoints: cloud_api::endpoints::Endpoints =
        serde_json::from_slice(&std::fs::read(out_dir.join("endpoints.json")).unwrap()).unwrap();
    assert_eq!(endpoints.http, http, "the data plane defaults to --endpoint-url");

    let again = provision(&args, home.path(), keys).await;
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("nothing changed"), "{}", text(&again));

    let down = provision(&["deprovision", "--thing", "pump-core-1", "--endpoint-url", &http], home.path(), keys).await;
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("deleted thing pump-core-1"), "{}", text(&down));
    cloud.stop().await;
}

#[tokio::test]
async fn binary_exit_codes_tell_configuration_faults_from_unreachable_endpoints() {
    let home = tempfile::tempdir().unwrap();
    let ca = home.path().join("ca.pem");
    let pem = local_cloud::ca::LocalCa::load_or_create(&home.path().join("ca")).unwrap().ca_file();
    std::fs::copy(pem, &ca).unwrap();
    let ca = ca.to_str().unwrap();
    let out = home.path().join("out");
    let out = out.to_str().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{closed}");

    let bad_name = provision(
        &["core", "--thing", "bad/name", "--out", out, "--root-ca", ca, "--endpoint-url", &endpoint],
        home.path(),
        UNUSED_KEYS,
    )
    .await;
    assert_eq!(bad_name.status.code(), Some(78), "{}", text(&bad_name));
    assert!(text(&bad_name).contains("thing name"), "{}", text(&bad_name));

    let policy = home.path().join("policy.json");
    std::fs::write(&policy, "{ not json").unwrap();
    let args = ["core", "--thing", "t1", "--out", out, "--root-ca", ca, "--endpoint-url", &endpoint, "--policy-file"];
    let bad_policy = provision(&[&args[..], &[policy.to_str().unwrap()]].concat(), home.path(), UNUSED_KEYS).await;
    assert_eq!(bad_policy.status.code(), Some(78), "{}", text(&bad_policy));
    assert!(text(&bad_policy).contains("not JSON"), "{}", text(&bad_policy));

    let missing = home.path().join("missing.json");
    let unreadable = provision(&[&args[..], &[missing.to_str().unwrap()]].concat(), home.path(), UNUSED_KEYS).await;
    assert_eq!(unreadable.status.code(), Some(78), "{}", text(&unreadable));
    assert!(text(&unreadable).contains("cannot read"), "{}", text(&unreadable));

    let unreachable = provision(
        &["core", "--thing", "t1", "--out", out, "--root-ca", ca, "--endpoint-url", &endpoint],
        home.path(),
        UNUSED_KEYS,
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(1), "{}", text(&unreachable));
    assert!(text(&unreachable).contains("could not be reached"), "{}", text(&unreachable));
    assert!(text(&unreachable).contains("Retry"), "{}", text(&unreachable));

    let mut no_credentials = tokio::process::Command::new(env!("CARGO_BIN_EXE_provision"));
    no_credentials
        .args(["deprovision", "--thing", "t1", "--endpoint-url", &endpoint])
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", home.path().join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true");
    let no_credentials = no_credentials.output().await.unwrap();
    assert_eq!(no_credentials.status.code(), Some(78), "{}", text(&no_credentials));
    assert!(text(&no_credentials).contains("no credentials"), "{}", text(&no_credentials));

    let usage = provision(&["core", "--out", out], home.path(), UNUSED_KEYS).await;
    assert_eq!(usage.status.code(), Some(64), "{}", text(&usage));
}

/// `pump-core-1` provisioned by the binary into `home/pump-core-1` against `cloud`: the cloud's
/// HTTP endpoint, its administrator key pair, and the output directory.
async fn provisioned_core(
    cloud: &TestCloud,
    home: &Path,
) -> (String, cloud_api::endpoints::AccessKeyPair, std::path::PathBuf) {
    let out_dir = home.join("pump-core-1");
    let (ca, http) = (cloud.cloud.endpoints.ca_file.to_str().unwrap().to_owned(), cloud.cloud.endpoints.http.clone());
    let admin = cloud.cloud.endpoints.credentials.clone().expect("the administrator's key pair");
    let keys = (admin.access_key_id.as_str(), admin.secret_access_key.as_str());
    let args = [
        "core",
        "--thing",
        "pump-core-1",
        "--out",
        out_dir.to_str().unwrap(),
        "--root-ca",
        &ca,
        "--endpoint-url",
        &http,
    ];
    let core = provision(&args, home, keys).await;
    assert!(core.status.success(), "{}", text(&core));
    (http, admin, out_dir)
}

#[tokio::test]
async fn binary_sets_up_the_token_exchange_role_and_the_cores_certificate_gets_only_its_prefix() {
    let cloud = TestCloud::start().await;
    let home = tempfile::tempdir().unwrap();
    let (http, admin, out_dir) = provisioned_core(&cloud, home.path()).await;
    let keys = (admin.access_key_id.as_str(), admin.secret_access_key.as_str());

    let tes = ["token-exchange", "--thing", "pump-core-1", "--bucket", "pump-anomaly-windows", "--endpoint-url", &http];
    let first = provision(&tes, home.path(), keys).await;
    assert!(first.status.success(), "{}", text(&first));
    for change in [
        "bucket pump-anomaly-windows created",
        "role PumpCoreTokenExchangeRole created",
        "role alias PumpCoreTokenExchangeRoleAlias created",
    ] {
        assert!(text(&first).contains(change), "{change}: {}", text(&first));
    }
    assert!(text(&first).contains(r#""iotRoleAlias": "PumpCoreTokenExchangeRoleAlias""#), "{}", text(&first));
    let again = provision(&tes, home.path(), keys).await;
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("nothing changed"), "{}", text(&again));

    // The core's certificate may now assume the role through the alias, and the session may put
    // objects under the core's own prefix only.
    let record: Value = serde_json::from_slice(&std::fs::read(out_dir.join("provisioned.json")).unwrap()).unwrap();
    let certificate_id = record["certificateId"].as_str().unwrap();
    let session = cloud
        .cloud
        .iot_credentials
        .issue("PumpCoreTokenExchangeRoleAlias", certificate_id, Some("pump-core-1"))
        .expect("the credentials provider issues credentials to the core's certificate");
    let local_cloud::iam::Principal::Role(role) =
        cloud.cloud.iam.principal(&session.access_key_id, Some(&session.session_token)).unwrap()
    else {
        panic!("a role session")
    };
    use cloud_api::policy::Decision::{Allow, ImplicitDeny};
    let decide = |action: &str, resource: &str| role.decide(action, resource);
    assert_eq!(decide("s3:PutObject", "arn:aws:s3:::pump-anomaly-windows/pump-core-1/anomalies/x.json"), Allow);
    assert_eq!(decide("s3:PutObject", "arn:aws:s3:::pump-anomaly-windows/pump-core-2/anomalies/x.json"), ImplicitDeny);
    assert_eq!(decide("s3:GetObject", "arn:aws:s3:::pump-anomaly-windows/pump-core-1/anomalies/x.json"), ImplicitDeny);
    assert_eq!(decide("iot:Publish", "*"), ImplicitDeny);
    // The log manager's uploads: Greengrass's log groups, events only in the core's own streams.
    let group = "arn:aws:logs:us-east-1:000000000000:log-group:/aws/greengrass/UserComponent/us-east-1/com.example.A";
    assert_eq!(decide("logs:CreateLogGroup", group), Allow);
    assert_eq!(decide("logs:CreateLogStream", group), Allow);
    assert_eq!(decide("logs:PutLogEvents", &format!("{group}:log-stream:/2026/12/07/thing/pump-core-1")), Allow);
    assert_eq!(decide("logs:PutLogEvents", &format!("{group}:log-stream:/2026/12/07/thing/pump-core-2")), ImplicitDeny);
    assert_eq!(decide("logs:CreateLogGroup", "arn:aws:logs:us-east-1:000000000000:log-group:/other"), ImplicitDeny);
    assert_eq!(decide("logs:GetLogEvents", &format!("{group}:log-stream:/2026/12/07/thing/pump-core-1")), ImplicitDeny);

    // And the account audit finds nothing to complain about above low.
    let audit = provision(&["audit", "--fail-on", "medium", "--endpoint-url", &http], home.path(), keys).await;
    assert!(audit.status.success(), "{}", text(&audit));
    cloud.stop().await;
}

#[tokio::test]
async fn binary_replaces_a_failed_device_revoking_its_certificate_and_keeping_its_thing() {
    let cloud = TestCloud::start().await;
    let home = tempfile::tempdir().unwrap();
    let (http, admin, out_dir) = provisioned_core(&cloud, home.path()).await;
    let keys = (admin.access_key_id.as_str(), admin.secret_access_key.as_str());
    let record: Value = serde_json::from_slice(&std::fs::read(out_dir.join("provisioned.json")).unwrap()).unwrap();
    let certificate_id = record["certificateId"].as_str().unwrap();
    let registry = &cloud.cloud.registry;
    registry.create_thing_group("pumps", None, None, Default::default()).unwrap();
    registry.add_thing_to_thing_group("pumps", "pump-core-1").unwrap();

    let replaced = provision(&["replace", "--thing", "pump-core-1", "--endpoint-url", &http], home.path(), keys).await;
    assert!(replaced.status.success(), "{}", text(&replaced));
    assert!(text(&replaced).contains(&format!("revoked certificate {certificate_id}")), "{}", text(&replaced));
    // The certificate can never connect again and belongs to nothing; the thing keeps its place.
    let cert = registry.describe_certificate(certificate_id).unwrap();
    assert_eq!(cert.status, local_cloud::registry::CertificateStatus::Revoked);
    assert_eq!(registry.list_thing_principals("pump-core-1").unwrap(), Vec::<String>::new());
    let (groups, _) = registry.list_thing_groups_for_thing("pump-core-1", &Default::default()).unwrap();
    assert!(groups.iter().any(|g| g.name == "pumps"), "{groups:?}");

    // Again: nothing left to revoke. An unknown thing is the operator's mistake (exit 1, AWS's code).
    let again = provision(&["replace", "--thing", "pump-core-1", "--endpoint-url", &http], home.path(), keys).await;
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("nothing to revoke"), "{}", text(&again));
    let unknown = provision(&["replace", "--thing", "no-such-core", "--endpoint-url", &http], home.path(), keys).await;
    assert!(!unknown.status.success(), "{}", text(&unknown));
    assert!(text(&unknown).contains("ResourceNotFoundException"), "{}", text(&unknown));
    cloud.stop().await;
}

#[tokio::test]
async fn model_release_refuses_a_bad_model_directory_before_anything_is_published() {
    let home = tempfile::tempdir().unwrap();
    let model = home.path().join("trained");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("model-card.json"), r#"{"version": "3.1.0"}"#).unwrap();
    let bins = home.path().join("bins");
    std::fs::create_dir_all(&bins).unwrap();
    let out = home.path().join("out");
    // Nothing listens there: every refusal comes before a request.
    let release = |dir: &Path, extra: &[&str]| {
        let mut args = vec!["model", "release", "--model-dir", dir.to_str().unwrap(), "--bucket", "b"];
        args.extend(["--bin-dir", bins.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        args.extend(["--endpoint-url", "http://127.0.0.1:9"]);
        args.extend(extra.iter().copied());
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = async |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        provision(&args, home.path(), UNUSED_KEYS).await
    };

    let other_version = run(release(&model, &["--version", "3.2.0"])).await;
    assert_eq!(other_version.status.code(), Some(78), "{}", text(&other_version));
    assert!(text(&other_version).contains("differs from the model card's version 3.1.0"), "{}", text(&other_version));

    let no_checker = run(release(&model, &[])).await;
    assert_eq!(no_checker.status.code(), Some(78), "{}", text(&no_checker));
    assert!(text(&no_checker).contains("pump-model-check is not built"), "{}", text(&no_checker));

    let missing = run(release(&home.path().join("nowhere"), &[])).await;
    assert_eq!(missing.status.code(), Some(78), "{}", text(&missing));
    assert!(text(&missing).contains("model-card.json"), "{}", text(&missing));
    assert!(!out.exists(), "nothing was staged or built");
}
