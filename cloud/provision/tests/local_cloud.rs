//! Provisioning through `aws-sdk-iot` against the local cloud, then proving the result with the
//! device's own files over MQTT: the shipped policy lets the thing do its job and nothing else;
//! re-runs are idempotent; rotation and deprovisioning leave no old certificate able to connect.

mod app;
mod auditors;
mod common;
mod publish;

use std::os::unix::fs::PermissionsExt;

use common::{Identity, Mqtt, Provisioning as _, TestCloud, observer};
use provision::output::Record;
use provision::{Change, ProvisionError, deprovision, provision_core_device};
use rumqttc::{ConnectReturnCode, ConnectionError};
use serde_json::{Value, json};

const THING: &str = "pump-core-1";

fn created_certificates(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .filter_map(|c| if let Change::CertificateCreated(id) = c { Some(id.clone()) } else { None })
        .collect()
}

async fn certificate_exists(iot: &aws_sdk_iot::Client, id: &str) -> bool {
    match iot.describe_certificate().certificate_id(id).send().await {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => false,
        Err(e) => panic!("DescribeCertificate: {e:?}"),
    }
}

#[tokio::test]
async fn provisioned_core_connects_as_itself_and_is_confined_to_its_own_topics() {
    let cloud = TestCloud::start().await;
    let iot = cloud.iot().await;
    let out = tempfile::tempdir().unwrap();
    let device = provision_core_device(&iot, &cloud.spec(THING, out.path())).await.expect("provisioning");

    // The cloud has what the record says.
    assert!(device.changes.contains(&Change::ThingCreated(THING.into())), "{:?}", device.changes);
    assert!(matches!(&device.changes[..], [Change::ThingCreated(_), Change::PolicyCreated { .. }, ..]));
    assert_eq!(created_certificates(&device.changes), vec![device.record.certificate_id.clone()]);
    let principals = iot.list_thing_principals().thing_name(THING).send().await.unwrap();
    assert_eq!(principals.principals(), std::slice::from_ref(&device.record.certificate_arn));
    let attached = iot.list_attached_policies().target(&device.record.certificate_arn).send().await.unwrap();
    let names: Vec<_> = attached.policies().iter().filter_map(|p| p.policy_name()).collect();
    assert_eq!(names, ["PumpCoreDevicePolicy"]);

    // The files: the record, endpoints a device can use, a private key only its owner can read.
    let record: Record = serde_json::from_slice(&std::fs::read(&device.files.record).unwrap()).unwrap();
    assert_eq!(record, device.record);
    assert_eq!(record.thing_arn, format!("arn:aws:iot:us-east-1:000000000000:thing/{THING}"));
    let key_mode = std::fs::metadata(&device.files.private_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);
    let endpoints = Identity::from_dir(out.path()).endpoints;
    assert_eq!(endpoints, device.endpoints);
    assert_eq!(endpoints.mqtt, cloud.cloud.endpoints.mqtt, "DescribeEndpoint host + --mqtt-port");
    assert_eq!(endpoints.ca_file, std::fs::canonicalize(&cloud.cloud.endpoints.ca_file).unwrap());
    assert_eq!((endpoints.region.as_str(), endpoints.account_id.as_str()), ("us-east-1", "000000000000"));

    let me = Identity::from_dir(out.path());
    let watcher_identity = observer(&cloud);
    let mut watcher = Mqtt::connect(watcher_identity.options("observer")).await.expect("observer connects");
    assert!(watcher.subscribe(&format!("dt/pump/{THING}/telemetry")).await);

    // Connects as itself; publishes telemetry that reaches a subscriber.
    let mut mqtt = Mqtt::connect(me.options(THING)).await.expect("the thing connects as itself");
    let telemetry = format!("dt/pump/{THING}/telemetry");
    mqtt.publish(&telemetry, r#"{"v":1,"speedRpm":1450}"#).await.expect("own telemetry accepted");
    let seen = watcher.recv_on(&telemetry).await.expect("telemetry delivered");
    assert_eq!(&seen.payload[..], br#"{"v":1,"speedRpm":1450}"#);
    mqtt.publish(&format!("dt/pump/{THING}/anomalies"), r#"{"v":1}"#).await.expect("own anomalies accepted");

    // Updates and gets its own `pump` shadow.
    let shadow = format!("$aws/things/{THING}/shadow/name/pump");
    for response in ["update/accepted", "update/rejected", "update/delta", "get/accepted", "get/rejected"] {
        assert!(mqtt.subscribe(&format!("{shadow}/{response}")).await, "subscribe to own {response}");
    }
    let report = json!({"state": {"reported": {"mode": "auto", "speedRpm": 1450}}, "clientToken": "t-1"});
    mqtt.publish(&format!("{shadow}/update"), serde_json::to_vec(&report).unwrap()).await.unwrap();
    let accepted = mqtt.recv_on(&format!("{shadow}/update/accepted")).await.expect("update accepted");
    assert_eq!(serde_json::from_slice::<Value>(&accepted.payload).unwrap()["clientToken"], "t-1");
    mqtt.publish(&format!("{shadow}/get"), "").await.unwrap();
    let got = mqtt.recv_on(&format!("{shadow}/get/accepted")).await.expect("get accepted");
    let doc: Value = serde_json::from_slice(&got.payload).unwrap();
    assert_eq!(doc["state"]["reported"]["speedRpm"], 1450);

    // Another thing's shadow and classic shadow are out of reach.
    assert!(!mqtt.subscribe("$aws/things/pump-core-2/shadow/name/pump/update/delta").await);
    assert!(!mqtt.subscribe("$aws/things/pump-core-2/shadow/name/pump/get/accepted").await);
    assert!(!mqtt.subscribe(&format!("$aws/things/{THING}/shadow/update/delta")).await, "classic shadow");
    // Publishing to another thing's telemetry gets the connection closed.
    let refused = mqtt.publish("dt/pump/pump-core-2/telemetry", "{}").await;
    assert!(refused.is_err_and(|e| e.contains("connection")), "unauthorized publish must close the connection");

    // The same certificate cannot connect under another client id.
    for other in ["pump-core-2", "observer"] {
        let refused = Mqtt::connect(me.options(other)).await.err();
        assert!(
            matches!(refused, Some(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized))),
            "connecting as {other} must be refused as not authorized: {refused:?}"
        );
    }

    watcher.disconnect().await;
    cloud.stop().await;
}

#[tokio::test]
async fn a_core_provisioned_for_deployments_gets_the_deployments_policy_and_the_greengrass_data_plane() {
    let cloud = TestCloud::start().await;
    let iot = cloud.iot().await;
    let out = tempfile::tempdir().unwrap();
    let mut spec = cloud.spec(THING, out.path());
    spec.deployments_policy = Some(provision::DEFAULT_DEPLOYMENTS_POLICY_NAME.into());
    let data_plane = cloud.cloud.endpoints.greengrass_data_plane.clone().expect("the local cloud serves one");
    spec.greengrass_data_plane_url = Some(data_plane.clone());
    let device = provision_core_device(&iot, &spec).await.expect("provisioning");
    let attached = iot.list_attached_policies().target(&device.record.certificate_arn).send().await.unwrap();
    let mut names: Vec<_> = attached.policies().iter().filter_map(|p| p.policy_name()).collect();
    names.sort();
    assert_eq!(names, ["GreengrassCoreDeploymentsPolicy", "PumpCoreDevicePolicy"]);
    assert_eq!(Identity::from_dir(out.path()).endpoints.greengrass_data_plane, Some(data_plane));

    // The core may now listen for its deployments; other things' stay out of reach.
    let mut mqtt = Mqtt::connect(Identity::from_dir(out.path()).options(THING)).await.expect("connects");
    assert!(mqtt.subscribe(&format!("$aws/things/{THING}/jobs/notify-namespace-aws-gg-deployment")).await);
    assert!(!mqtt.subscribe("$aws/things/pump-core-2/jobs/notify-namespace-aws-gg-deployment").await);

    // Without a data-plane URL, AWS's for the region.
    spec.greengrass_data_plane_url = None;
    let again = provision_core_device(&iot, &spec).await.expect("a re-run");
    assert_eq!(
        again.endpoints.greengrass_data_plane.as_deref(),
        Some("https://greengrass-ats.iot.us-east-1.amazonaws.com:8443")
    );
    mqtt.disconnect().await;
    cloud.stop().await;
}

#[tokio::test]
async fn rerun_changes_nothing_and_a_new_certificate_retires_the_old_one() {
    let cloud = TestCloud::start().await;
    let iot = cloud.iot().await;
    let out = tempfile::tempdir().unwrap();
    let spec = cloud.spec(THING, out.path());
    let first = provision_core_device(&iot, &spec).await.unwrap();
    let key_before = std::fs::read(&first.files.private_key).unwrap();

    // Same inputs: same certificate, same files, nothing changed in the cloud.
    let again = provision_core_device(&iot, &spec).await.unwrap();
    assert_eq!(again.changes, vec![], "a re-run changes nothing");
    assert_eq!(again.record, first.record);
    assert_eq!(std::fs::read(&again.files.private_key).unwrap(), key_before);
    let first_identity = Identity::from_dir(out.path());
    Mqtt::connect(first_identity.options(THING)).await.expect("still connects").disconnect().await;

    // Rotation: a new certificate; the old one is detached, INACTIVE and deleted.
    let mut rotate = spec.clone();
    rotate.rotate_certificate = true;
    let rotated = provision_core_device(&iot, &rotate).await.unwrap();
    let old = &first.record.certificate_id;
    assert_ne!(&rotated.record.certificate_id, old);
    assert!(rotated.changes.contains(&Change::CertificateDeactivated(old.clone())), "{:?}", rotated.changes);
    assert!(rotated.changes.contains(&Change::CertificateDeleted(old.clone())), "{:?}", rotated.changes);
    assert!(!certificate_exists(&iot, old).await);
    assert!(Mqtt::connect(first_identity.options(THING)).await.is_err(), "the old certificate cannot connect");
    let second_identity = Identity::from_dir(out.path());
    Mqtt::connect(second_identity.options(THING)).await.expect("the new one can").disconnect().await;

    // A lost output directory: provisioning elsewhere makes a fresh identity and retires the
    // certificate still attached to the thing, whose key it cannot know.
    let elsewhere = tempfile::tempdir().unwrap();
    let fresh = provision_core_device(&iot, &cloud.spec(THING, elsewhere.path())).await.unwrap();
    assert!(!certificate_exists(&iot, &rotated.record.certificate_id).await);
    let principals = iot.list_thing_principals().thing_name(THING).send().await.unwrap();
    assert_eq!(principals.principals(), std::slice::from_ref(&fresh.record.certificate_arn), "one identity per core");
    assert!(Mqtt::connect(second_identity.options(THING)).await.is_err());
    assert!(
        !fresh.changes.iter().any(|c| matches!(c, Change::ThingCreated(_) | Change::PolicyCreated { .. })),
        "thing and policy are reused: {:?}",
        fresh.changes
    );

    // A directory holding another thing's identity is not overwritten.
    let err = provision_core_device(&iot, &cloud.spec("pump-core-9", elsewhere.path())).await.unwrap_err();
    assert!(matches!(err, ProvisionError::InvalidInput(ref m) if m.contains("another output directory")), "{err}");
    cloud.stop().await;
}

#[tokio::test]
async fn deprovision_removes_everything_and_the_certificate_can_no_longer_connect() {
    let cloud = TestCloud::start().await;
    let iot = cloud.iot().await;
    let (out, other_out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let device = provision_core_device(&iot, &cloud.spec(THING, out.path())).await.unwrap();
    let other = provision_core_device(&iot, &cloud.spec("pump-core-2", other_out.path())).await.unwrap();
    let identity = Identity::from_dir(out.path());
    Mqtt::connect(identity.options(THING)).await.expect("connects before").disconnect().await;

    // The shared policy stays while the other core uses it.
    let done = deprovision(&iot, THING, "PumpCoreDevicePolicy").await.unwrap();
    assert!(done.thing_existed);
    let cert = device.record.certificate_id.clone();
    for expected in [Change::CertificateDeactivated(cert.clone()), Change::CertificateDeleted(cert.clone())] {
        assert!(done.changes.contains(&expected), "{expected:?} in {:?}", done.changes);
    }
    assert!(done.changes.contains(&Change::ThingDeleted(THING.into())));
    assert!(done.changes.iter().any(|c| matches!(c, Change::PolicyKept { .. })), "{:?}", done.changes);
    let thing = iot.describe_thing().thing_name(THING).send().await;
    assert!(thing.is_err_and(|e| e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception())));
    assert!(!certificate_exists(&iot, &cert).await);
    assert!(Mqtt::connect(identity.options(THING)).await.is_err(), "a deprovisioned certificate cannot connect");
    Mqtt::connect(Identity::from_dir(other_out.path()).options("pump-core-2"))
        .await
        .expect("the other core is untouched")
        .disconnect()
        .await;

    // The last user gone, the policy goes too; a second run finds nothing to do.
    let done = deprovision(&iot, "pump-core-2", "PumpCoreDevicePolicy").await.unwrap();
    assert!(done.changes.contains(&Change::PolicyDeleted("PumpCoreDevicePolicy".into())), "{:?}", done.changes);
    assert!(!certificate_exists(&iot, &other.record.certificate_id).await);
    let policy = iot.get_policy().policy_name("PumpCoreDevicePolicy").send().await;
    assert!(policy.is_err_and(|e| e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception())));
    let again = deprovision(&iot, THING, "PumpCoreDevicePolicy").await.unwrap();
    assert!(!again.thing_existed && again.changes.is_empty(), "{again:?}");
    cloud.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_created() {
    let cloud = TestCloud::start().await;
    let iot = cloud.iot().await;
    let out = tempfile::tempdir().unwrap();
    let things = |iot: aws_sdk_iot::Client| async move { iot.list_things().send().await.unwrap().things().len() };

    let err = provision_core_device(&iot, &cloud.spec("bad/name", out.path())).await.unwrap_err();
    assert!(matches!(err, ProvisionError::InvalidInput(_)) && err.is_configuration(), "{err}");

    let mut spec = cloud.spec(THING, out.path());
    spec.policy = provision::PolicySource { label: "broken.json".into(), text: "{\"Version\":".into() };
    let err = provision_core_device(&iot, &spec).await.unwrap_err();
    assert!(matches!(err, ProvisionError::PolicyFile { .. }) && err.to_string().contains("broken.json"), "{err}");

    spec.policy = provision::PolicySource {
        label: "wide.json".into(),
        text: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#.into(),
    };
    let err = provision_core_device(&iot, &spec).await.unwrap_err();
    match &err {
        ProvisionError::PermissivePolicy { findings, .. } => assert!(!findings.is_empty()),
        other => panic!("expected PermissivePolicy, got {other:?}"),
    }
    assert!(err.to_string().contains("client id"), "the findings are named: {err}");

    let mut spec = cloud.spec(THING, out.path());
    spec.root_ca = out.path().join("missing-ca.pem");
    let err = provision_core_device(&iot, &spec).await.unwrap_err();
    assert!(matches!(err, ProvisionError::File { .. }) && err.to_string().contains("missing-ca.pem"), "{err}");

    assert_eq!(things(iot.clone()).await, 0, "nothing was created");
    assert!(!out.path().join("private.pem.key").exists());

    // Opting in accepts the permissive policy and reports the findings.
    let mut spec = cloud.spec(THING, out.path());
    spec.policy = provision::PolicySource {
        label: "wide.json".into(),
        text: r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#.into(),
    };
    spec.policy_name = "WidePolicy".into();
    spec.allow_permissive_policy = true;
    let device = provision_core_device(&iot, &spec).await.unwrap();
    assert!(!device.policy_findings.is_empty());
    cloud.stop().await;
}

#[tokio::test]
async fn unreachable_endpoint_is_a_transport_error_to_retry() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let iot = provision::iot_client(&provision::ClientOptions {
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".into()),
        credentials: Some(aws_credential_types::Credentials::new("a", "b", None, None, "test")),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let pem = some_ca_pem();
    std::fs::write(&ca, pem).unwrap();
    let spec = provision::CoreDeviceSpec::new(THING, dir.path().join("out"), &ca);
    let err = provision_core_device(&iot, &spec).await.unwrap_err();
    assert!(matches!(err, ProvisionError::Transport { .. }), "{err:?}");
    assert_eq!(err.next_step(), provision::NextStep::Retry);
    assert!(!err.is_configuration());
}

/// A PEM certificate to stand in for a root CA file (its content is only parsed).
fn some_ca_pem() -> String {
    let dir = tempfile::tempdir().unwrap();
    let ca = local_cloud::ca::LocalCa::load_or_create(dir.path()).unwrap();
    std::fs::read_to_string(ca.ca_file()).unwrap()
}
