//! Fleet provisioning with AWS's Rust SDK for the control plane and an MQTT client for the
//! device: a template made with `aws-sdk-iot`, a claim from CreateProvisioningClaim, a device
//! that creates keys over MQTT, registers, and connects as its new thing; a CSR made on the
//! device; CBOR; the documented rejections; an ownership token and a claim outliving their
//! time on an injected clock.

use std::time::Duration;

use aws_sdk_iot::config::{BehaviorVersion, Region};
use local_cloud::server::{Config, LocalCloud};
use local_cloud::time::ManualClock;
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value, json};

use crate::common::{self, Client, Device, WAIT};

const TEMPLATE: &str = "PumpFleet";
const ROLE: &str = "arn:aws:iam::000000000000:role/IoTProvisioning";

/// The thing-scoped policy provisioned devices get (attached by the template by name).
const DEVICE_POLICY: &str = r#"{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "iot:Connect",
   "Resource": "arn:aws:iot:us-east-1:000000000000:client/${iot:Connection.Thing.ThingName}"},
  {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
   "Resource": "arn:aws:iot:us-east-1:000000000000:topic/dt/pump/${iot:Connection.Thing.ThingName}/*"},
  {"Effect": "Allow", "Action": "iot:Subscribe",
   "Resource": "arn:aws:iot:us-east-1:000000000000:topicfilter/dt/pump/${iot:Connection.Thing.ThingName}/*"}]}"#;

/// A claim policy as AWS's fleet-provisioning documentation writes it: connect, and only the
/// certificate and provisioning topics (here for any template, to reach an unknown one).
const CLAIM_POLICY: &str = r#"{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
  {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [
    "arn:aws:iot:us-east-1:000000000000:topic/$aws/certificates/create/*",
    "arn:aws:iot:us-east-1:000000000000:topic/$aws/certificates/create-from-csr/*",
    "arn:aws:iot:us-east-1:000000000000:topic/$aws/provisioning-templates/*/provision/*"]},
  {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
    "arn:aws:iot:us-east-1:000000000000:topicfilter/$aws/certificates/create/*",
    "arn:aws:iot:us-east-1:000000000000:topicfilter/$aws/certificates/create-from-csr/*",
    "arn:aws:iot:us-east-1:000000000000:topicfilter/$aws/provisioning-templates/*/provision/*"]}]}"#;

const TEMPLATE_BODY: &str = r#"{
  "Parameters": {
    "SerialNumber": {"Type": "String"},
    "Site": {"Type": "String", "Default": "site-a", "AllowedValues": ["site-a", "site-b"]}
  },
  "Resources": {
    "thing": {
      "Type": "AWS::IoT::Thing",
      "Properties": {
        "ThingName": {"Fn::Join": ["", ["pump-", {"Ref": "SerialNumber"}]]},
        "AttributePayload": {"serial": {"Ref": "SerialNumber"}},
        "ThingGroups": [{"Ref": "Site"}]
      },
      "OverrideSettings": {"AttributePayload": "MERGE", "ThingGroups": "MERGE"}
    },
    "certificate": {
      "Type": "AWS::IoT::Certificate",
      "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}
    },
    "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "PumpDevicePolicy"}}
  },
  "DeviceConfiguration": {"telemetryTopic": {"Fn::Sub": "dt/pump/pump-${SerialNumber}/telemetry"}}
}"#;

fn iot(endpoints: &local_cloud::server::Endpoints) -> aws_sdk_iot::Client {
    aws_sdk_iot::Client::from_conf(
        aws_sdk_iot::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(crate::common::admin(endpoints))
            .endpoint_url(&endpoints.http)
            .http_client(common::sdk_http_client())
            .build(),
    )
}

struct Fixture {
    cloud: LocalCloud,
    clock: std::sync::Arc<ManualClock>,
    iot: aws_sdk_iot::Client,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let clock = ManualClock::at(now);
        let cloud = LocalCloud::start_with_clock(Config::ephemeral(dir.path()), clock.clone()).await.unwrap();
        let iot = iot(&cloud.endpoints);
        Fixture { cloud, clock, iot, _dir: dir }
    }

    async fn mqtt(&self, client_id: &str, cert_pem: &str, key_pem: &str) -> Result<Client, String> {
        let device = Device {
            thing: client_id.into(),
            certificate_id: String::new(),
            certificate_arn: String::new(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        };
        let (host, port) = self.cloud.endpoints.mqtt_host_port().unwrap();
        let opts = common::mqtt_options(&host, port, &self.cloud.endpoints.ca_file, client_id, &device);
        Client::connect(opts).await.map(|(c, _)| c).map_err(|e| e.to_string())
    }
}

/// Subscribes to a request topic's answers, publishes the request (QoS 0, so no answer can
/// slip in before the acknowledgement), and returns (`accepted`?, payload).
async fn request(client: &mut Client, topic: &str, payload: Vec<u8>) -> (bool, Vec<u8>) {
    let accepted = format!("{topic}/accepted");
    let rejected = format!("{topic}/rejected");
    let codes = client.subscribe(&[(&accepted, QoS::AtLeastOnce), (&rejected, QoS::AtLeastOnce)]).await.unwrap();
    assert!(codes.iter().all(|c| matches!(c, SubscribeReasonCode::Success(_))), "{topic}: {codes:?}");
    client.publish(topic, QoS::AtMostOnce, false, payload).await.unwrap();
    let reply = client.recv(WAIT).await.unwrap_or_else(|e| panic!("{topic}: no answer: {e}"));
    assert!(reply.topic == accepted || reply.topic == rejected, "unexpected topic {}", reply.topic);
    (reply.topic == accepted, reply.payload.to_vec())
}

async fn json_request(client: &mut Client, topic: &str, payload: Value) -> (bool, Value) {
    let (ok, body) = request(client, topic, payload.to_string().into_bytes()).await;
    (ok, serde_json::from_slice(&body).unwrap())
}

async fn setup_template(f: &Fixture) {
    f.iot.create_policy().policy_name("PumpDevicePolicy").policy_document(DEVICE_POLICY).send().await.unwrap();
    f.iot.create_thing_group().thing_group_name("site-a").send().await.unwrap();
    let created = f
        .iot
        .create_provisioning_template()
        .template_name(TEMPLATE)
        .description("pump stations onboarding by claim")
        .template_body(TEMPLATE_BODY)
        .enabled(true)
        .provisioning_role_arn(ROLE)
        .send()
        .await
        .unwrap();
    assert_eq!(created.default_version_id(), Some(1));
    assert_eq!(created.template_arn(), Some("arn:aws:iot:us-east-1:000000000000:provisioningtemplate/PumpFleet"));
}

#[tokio::test]
async fn a_device_onboards_by_claim_and_connects_as_its_new_thing() {
    let f = Fixture::start().await;
    setup_template(&f).await;

    let claim = f.iot.create_provisioning_claim().template_name(TEMPLATE).send().await.unwrap();
    let keys = claim.key_pair().unwrap();
    let mut device =
        f.mqtt("factory-claim-1", claim.certificate_pem().unwrap(), keys.private_key().unwrap()).await.unwrap();

    let (ok, created) = json_request(&mut device, "$aws/certificates/create/json", json!({})).await;
    assert!(ok, "{created}");
    let cert_id = created["certificateId"].as_str().unwrap().to_string();
    let described = f.iot.describe_certificate().certificate_id(&cert_id).send().await.unwrap();
    assert_eq!(described.certificate_description().unwrap().status().unwrap().as_str(), "PENDING_ACTIVATION");

    let (ok, registered) = json_request(
        &mut device,
        &format!("$aws/provisioning-templates/{TEMPLATE}/provision/json"),
        json!({"certificateOwnershipToken": created["certificateOwnershipToken"], "parameters": {"SerialNumber": "0042"}}),
    )
    .await;
    assert!(ok, "{registered}");
    assert_eq!(registered["thingName"], "pump-0042");
    assert_eq!(registered["deviceConfiguration"], json!({"telemetryTopic": "dt/pump/pump-0042/telemetry"}));

    let described = f.iot.describe_certificate().certificate_id(&cert_id).send().await.unwrap();
    assert_eq!(described.certificate_description().unwrap().status().unwrap().as_str(), "ACTIVE");
    let thing = f.iot.describe_thing().thing_name("pump-0042").send().await.unwrap();
    assert_eq!(thing.attributes().unwrap().get("serial").map(String::as_str), Some("0042"));
    let groups = f.iot.list_thing_groups_for_thing().thing_name("pump-0042").send().await.unwrap();
    assert_eq!(groups.thing_groups()[0].group_name(), Some("site-a"));

    // The same token cannot be spent twice.
    let (ok, again) = json_request(
        &mut device,
        &format!("$aws/provisioning-templates/{TEMPLATE}/provision/json"),
        json!({"certificateOwnershipToken": created["certificateOwnershipToken"], "parameters": {"SerialNumber": "0042"}}),
    )
    .await;
    assert!(!ok);
    assert_eq!(again["errorCode"], "InvalidCertificateOwnershipToken");

    // The new identity works, with the policy the template attached.
    let mut thing = f
        .mqtt("pump-0042", created["certificatePem"].as_str().unwrap(), created["privateKey"].as_str().unwrap())
        .await
        .unwrap();
    let codes = thing.subscribe(&[("dt/pump/pump-0042/telemetry", QoS::AtLeastOnce)]).await.unwrap();
    assert!(matches!(codes[0], SubscribeReasonCode::Success(_)));
    thing.publish("dt/pump/pump-0042/telemetry", QoS::AtLeastOnce, false, b"{\"v\":1}".to_vec()).await.unwrap();
    assert_eq!(thing.recv(WAIT).await.unwrap().topic, "dt/pump/pump-0042/telemetry");

    // The claim may not leave its provisioning topics: a subscription elsewhere is refused.
    let codes = device.subscribe(&[("dt/pump/#", QoS::AtLeastOnce)]).await.unwrap();
    assert_eq!(codes, vec![SubscribeReasonCode::Failure]);

    // Five minutes later the claim certificate is no longer accepted.
    f.clock.advance(Duration::from_secs(5 * 60 + 1));
    let refused = f.mqtt("factory-claim-1", claim.certificate_pem().unwrap(), keys.private_key().unwrap()).await;
    assert!(refused.is_err(), "an expired claim must not connect");
    f.cloud.shutdown().await;
}

fn claim_device(f: &Fixture) -> (String, String) {
    let (cert, keys) = f.cloud.registry.create_keys_and_certificate(true).unwrap();
    f.cloud.registry.create_policy("ClaimPolicy", CLAIM_POLICY).unwrap();
    f.cloud.registry.attach_policy("ClaimPolicy", &cert.arn).unwrap();
    (cert.pem, keys.private_key_pem)
}

#[tokio::test]
async fn a_csr_made_on_the_device_is_signed_and_registered_and_bad_requests_are_rejected() {
    let f = Fixture::start().await;
    setup_template(&f).await;
    let (claim_pem, claim_key) = claim_device(&f);
    let mut device = f.mqtt("factory-claim-2", &claim_pem, &claim_key).await.unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "pump-0043");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let (ok, created) =
        json_request(&mut device, "$aws/certificates/create-from-csr/json", json!({"certificateSigningRequest": csr}))
            .await;
    assert!(ok, "{created}");
    assert!(created.get("privateKey").is_none(), "the key never leaves the device");

    // RegisterThing in CBOR, with a parameter the template does not allow, then a good one.
    let topic = format!("$aws/provisioning-templates/{TEMPLATE}/provision/cbor");
    let mut bad = Vec::new();
    ciborium::ser::into_writer(
        &json!({"certificateOwnershipToken": created["certificateOwnershipToken"], "parameters": {"SerialNumber": "0043", "Site": "mars"}}),
        &mut bad,
    )
    .unwrap();
    let (ok, body) = request(&mut device, &topic, bad).await;
    let rejected: Value = ciborium::de::from_reader(body.as_slice()).unwrap();
    assert!(!ok);
    assert_eq!(
        (rejected["statusCode"].as_u64(), rejected["errorCode"].as_str()),
        (Some(400), Some("InvalidParameters"))
    );
    assert!(f.cloud.registry.describe_thing("pump-0043").is_err(), "a rejected RegisterThing creates nothing");

    let mut good = Vec::new();
    ciborium::ser::into_writer(
        &json!({"certificateOwnershipToken": created["certificateOwnershipToken"], "parameters": {"SerialNumber": "0043"}}),
        &mut good,
    )
    .unwrap();
    let (ok, body) = request(&mut device, &topic, good).await;
    let accepted: Value = ciborium::de::from_reader(body.as_slice()).unwrap();
    assert!(ok, "{accepted}");
    assert_eq!(accepted["thingName"], "pump-0043");
    let mut thing =
        f.mqtt("pump-0043", created["certificatePem"].as_str().unwrap(), &key.serialize_pem()).await.unwrap();
    thing.publish("dt/pump/pump-0043/telemetry", QoS::AtLeastOnce, false, b"{}".to_vec()).await.unwrap();

    // Bad inputs: each gets its documented rejection and the service keeps answering.
    let cases: Vec<(&str, Vec<u8>, u64, &str)> = vec![
        ("$aws/certificates/create/json", b"{not json".to_vec(), 400, "InvalidPayload"),
        ("$aws/certificates/create/cbor", vec![0xff, 0x00, 0x13], 400, "InvalidPayload"),
        (
            "$aws/certificates/create-from-csr/json",
            json!({"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----"})
                .to_string()
                .into_bytes(),
            400,
            "InvalidCertificateSigningRequest",
        ),
        ("$aws/certificates/create-from-csr/json", b"{}".to_vec(), 400, "InvalidPayload"),
        (
            "$aws/provisioning-templates/NoSuchTemplate/provision/json",
            json!({"certificateOwnershipToken": "x"}).to_string().into_bytes(),
            404,
            "ResourceNotFound",
        ),
        (
            "$aws/provisioning-templates/PumpFleet/provision/json",
            json!({"certificateOwnershipToken": "forged", "parameters": {"SerialNumber": "1"}}).to_string().into_bytes(),
            400,
            "InvalidCertificateOwnershipToken",
        ),
    ];
    for (topic, payload, status, code) in cases {
        let (ok, body) = request(&mut device, topic, payload).await;
        let body: Value = if topic.ends_with("cbor") {
            ciborium::de::from_reader(body.as_slice()).unwrap()
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        assert!(!ok, "{topic}: {body}");
        assert_eq!(
            (body["statusCode"].as_u64(), body["errorCode"].as_str()),
            (Some(status), Some(code)),
            "{topic}: {body}"
        );
        assert!(body["errorMessage"].as_str().is_some_and(|m| !m.is_empty()));
    }

    // A disabled template refuses devices.
    f.iot.update_provisioning_template().template_name(TEMPLATE).enabled(false).send().await.unwrap();
    let (ok, created) = json_request(&mut device, "$aws/certificates/create/json", json!({})).await;
    assert!(ok);
    let (ok, refused) = json_request(
        &mut device,
        &format!("$aws/provisioning-templates/{TEMPLATE}/provision/json"),
        json!({"certificateOwnershipToken": created["certificateOwnershipToken"], "parameters": {"SerialNumber": "0044"}}),
    )
    .await;
    assert!(!ok, "{refused}");
    assert!(refused["errorMessage"].as_str().unwrap().contains("disabled"));
    f.cloud.shutdown().await;
}

#[tokio::test]
async fn an_ownership_token_expires_after_an_hour_and_its_certificate_is_deleted() {
    let f = Fixture::start().await;
    setup_template(&f).await;
    let (claim_pem, claim_key) = claim_device(&f);
    let mut device = f.mqtt("factory-claim-3", &claim_pem, &claim_key).await.unwrap();
    let (ok, created) = json_request(&mut device, "$aws/certificates/create/json", json!({})).await;
    assert!(ok);
    let cert_id = created["certificateId"].as_str().unwrap().to_string();

    // The pending certificate cannot connect.
    let pending =
        f.mqtt("pump-0045", created["certificatePem"].as_str().unwrap(), created["privateKey"].as_str().unwrap()).await;
    assert!(pending.is_err(), "a PENDING_ACTIVATION certificate must not connect");

    f.clock.advance(Duration::from_secs(60 * 60 + 1));
    let (ok, refused) = json_request(
        &mut device,
        &format!("$aws/provisioning-templates/{TEMPLATE}/provision/json"),
        json!({"certificateOwnershipToken": created["certificateOwnershipToken"], "parameters": {"SerialNumber": "0045"}}),
    )
    .await;
    assert!(!ok);
    assert_eq!(refused["errorCode"], "InvalidCertificateOwnershipToken");
    let (code, status) = common::failed(f.iot.describe_certificate().certificate_id(&cert_id).send().await);
    assert_eq!((code.as_str(), status), ("ResourceNotFoundException", 404), "the unclaimed certificate is deleted");
    f.cloud.shutdown().await;
}

#[tokio::test]
async fn the_template_control_plane_follows_the_model_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.unwrap();
    let iot = iot(&cloud.endpoints);
    let create = || {
        iot.create_provisioning_template()
            .template_name(TEMPLATE)
            .template_body(TEMPLATE_BODY)
            .provisioning_role_arn(ROLE)
    };
    create().send().await.unwrap();
    let (code, status) = common::failed(create().send().await);
    assert_eq!((code.as_str(), status), ("ResourceAlreadyExistsException", 409));
    let (code, _) = common::failed(
        iot.create_provisioning_template()
            .template_name("Bad")
            .template_body("{\"Resources\": {\"x\": {\"Type\": \"AWS::S3::Bucket\"}}}")
            .provisioning_role_arn(ROLE)
            .send()
            .await,
    );
    assert_eq!(code, "InvalidRequestException");
    let (code, _) = common::failed(
        iot.create_provisioning_template()
            .template_name("Jitp")
            .template_body(TEMPLATE_BODY)
            .provisioning_role_arn(ROLE)
            .r#type(aws_sdk_iot::types::TemplateType::Jitp)
            .pre_provisioning_hook(
                aws_sdk_iot::types::ProvisioningHook::builder()
                    .target_arn("arn:aws:lambda:us-east-1:000000000000:function:hook")
                    .build()
                    .unwrap(),
            )
            .send()
            .await,
    );
    assert_eq!(code, "InvalidRequestException", "a hook only on FLEET_PROVISIONING templates");

    let v2 = iot
        .create_provisioning_template_version()
        .template_name(TEMPLATE)
        .template_body(TEMPLATE_BODY.replace("site-a\", \"site-b", "site-a\", \"site-c"))
        .set_as_default(true)
        .send()
        .await
        .unwrap();
    assert_eq!((v2.version_id(), v2.is_default_version()), (Some(2), true));
    let (code, status) =
        common::failed(iot.delete_provisioning_template_version().template_name(TEMPLATE).version_id(2).send().await);
    assert_eq!((code.as_str(), status), ("DeleteConflictException", 409), "the default version stays");
    iot.delete_provisioning_template_version().template_name(TEMPLATE).version_id(1).send().await.unwrap();
    for _ in 0..4 {
        iot.create_provisioning_template_version()
            .template_name(TEMPLATE)
            .template_body(TEMPLATE_BODY)
            .send()
            .await
            .unwrap();
    }
    let (code, _) = common::failed(
        iot.create_provisioning_template_version().template_name(TEMPLATE).template_body(TEMPLATE_BODY).send().await,
    );
    assert_eq!(code, "VersionsLimitExceededException");
    iot.update_provisioning_template()
        .template_name(TEMPLATE)
        .enabled(true)
        .description("v2 is the default")
        .pre_provisioning_hook(
            aws_sdk_iot::types::ProvisioningHook::builder()
                .target_arn("arn:aws:lambda:us-east-1:000000000000:function:hook")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    cloud.shutdown().await;

    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.unwrap();
    let iot = self::iot(&cloud.endpoints);
    let t = iot.describe_provisioning_template().template_name(TEMPLATE).send().await.unwrap();
    assert_eq!(
        (t.enabled(), t.default_version_id(), t.description()),
        (Some(true), Some(2), Some("v2 is the default"))
    );
    assert!(t.template_body().unwrap().contains("site-c"));
    assert_eq!(t.provisioning_role_arn(), Some(ROLE));
    assert_eq!(
        t.pre_provisioning_hook().map(|h| h.target_arn()),
        Some("arn:aws:lambda:us-east-1:000000000000:function:hook")
    );
    let versions = iot.list_provisioning_template_versions().template_name(TEMPLATE).send().await.unwrap();
    let ids: Vec<i32> = versions.versions().iter().filter_map(|v| v.version_id()).collect();
    assert_eq!(ids, vec![2, 3, 4, 5, 6]);
    let v = iot.describe_provisioning_template_version().template_name(TEMPLATE).version_id(3).send().await.unwrap();
    assert!(!v.is_default_version());
    let listed = iot.list_provisioning_templates().send().await.unwrap();
    assert_eq!(listed.templates().len(), 1);
    assert_eq!(listed.templates()[0].r#type().map(|t| t.as_str()), Some("FLEET_PROVISIONING"));

    // With a hook the local cloud cannot call, RegisterThing is denied.
    let claim = iot.create_provisioning_claim().template_name(TEMPLATE).send().await.unwrap();
    assert!(claim.expiration().is_some());
    let device = Device {
        thing: "claim".into(),
        certificate_id: String::new(),
        certificate_arn: String::new(),
        cert_pem: claim.certificate_pem().unwrap().into(),
        key_pem: claim.key_pair().unwrap().private_key().unwrap().into(),
    };
    let (host, port) = cloud.endpoints.mqtt_host_port().unwrap();
    let (mut client, _) =
        Client::connect(common::mqtt_options(&host, port, &cloud.endpoints.ca_file, "claim-4", &device)).await.unwrap();
    let (ok, created) = json_request(&mut client, "$aws/certificates/create/json", json!({})).await;
    assert!(ok);
    let (ok, denied) = json_request(
        &mut client,
        &format!("$aws/provisioning-templates/{TEMPLATE}/provision/json"),
        json!({"certificateOwnershipToken": created["certificateOwnershipToken"], "parameters": {"SerialNumber": "9"}}),
    )
    .await;
    assert!(!ok);
    assert_eq!((denied["statusCode"].as_u64(), denied["errorCode"].as_str()), (Some(403), Some("AccessDenied")));

    iot.delete_provisioning_template().template_name(TEMPLATE).send().await.unwrap();
    let (code, status) = common::failed(iot.describe_provisioning_template().template_name(TEMPLATE).send().await);
    assert_eq!((code.as_str(), status), ("ResourceNotFoundException", 404));
    cloud.shutdown().await;
}
