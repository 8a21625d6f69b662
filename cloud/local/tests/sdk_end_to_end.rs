//! End to end with AWS's own Rust SDK: `aws-sdk-iot` provisions a thing, a key
//! pair and certificate, and a least-privilege thing-scoped policy; an MQTT
//! client connects with those credentials; `aws-sdk-iotdataplane` sets desired
//! state over HTTP; the device receives the delta over MQTT and reports; the
//! HTTP GetThingShadow shows the delta gone and the version advanced. Then the
//! local cloud restarts on the same data directory and everything is still there.
//!
//! The modules are other stories with AWS's SDKs in the same test binary:
//! S3 (`s3_sdk`), thing groups (`thing_groups_sdk`), IoT Jobs (`jobs_sdk`), Greengrass V2
//! components with the cores' data plane (`greengrass_sdk`), and Greengrass deployments with a
//! core played over MQTT (`deployments_sdk`), and fleet provisioning by claim over MQTT with its
//! template control plane (`provisioning_sdk`), topic rules with their actions (`rules_sdk`), Lambda
//! functions run through the Lambda Runtime API (`lambda_sdk`), and DynamoDB tables, items and the
//! rules engine's dynamoDBv2 action (`dynamodb_sdk`), and fleet indexing with connectivity and a
//! fleet metric driving a CloudWatch alarm (`fleet_index_sdk`).

mod common;
mod deployments_sdk;
mod dynamodb_sdk;
mod fleet_index_sdk;
mod greengrass_sdk;
mod iam_sdk;
mod jobs_sdk;
mod lambda_sdk;
mod provisioning_sdk;
mod rules_sdk;
mod s3_sdk;
mod thing_groups_sdk;

use std::time::Duration;

use aws_sdk_iot::config::{BehaviorVersion, Region};
use aws_smithy_types::Blob;
use common::{Client, Device, WAIT};
use local_cloud::server::{Config, LocalCloud};
use rumqttc::QoS;
use serde_json::{Value, json};

const THING: &str = "pump-station-7";

/// The least-privilege policy the project ships for a device: everything is
/// scoped to the thing the certificate is attached to.
const THING_POLICY: &str = r#"{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": "iot:Connect",
     "Resource": "arn:aws:iot:us-east-1:000000000000:client/${iot:Connection.Thing.ThingName}",
     "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}},
    {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
     "Resource": "arn:aws:iot:us-east-1:000000000000:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"},
    {"Effect": "Allow", "Action": "iot:Subscribe",
     "Resource": "arn:aws:iot:us-east-1:000000000000:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/*"}
  ]
}"#;

fn sdk_config(endpoints: &local_cloud::server::Endpoints) -> (aws_sdk_iot::Client, aws_sdk_iotdataplane::Client) {
    let http_client = common::sdk_http_client();
    let http = &endpoints.http;
    let creds = common::admin(endpoints);
    let iot = aws_sdk_iot::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(creds.clone())
        .endpoint_url(http)
        .http_client(http_client.clone())
        .build();
    let data = aws_sdk_iotdataplane::Config::builder()
        .behavior_version(aws_sdk_iotdataplane::config::BehaviorVersion::latest())
        .region(aws_sdk_iotdataplane::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(http)
        .http_client(http_client)
        .build();
    (aws_sdk_iot::Client::from_conf(iot), aws_sdk_iotdataplane::Client::from_conf(data))
}

async fn provision(iot: &aws_sdk_iot::Client) -> Device {
    iot.create_thing().thing_name(THING).send().await.expect("CreateThing");
    let keys = iot.create_keys_and_certificate().set_as_active(true).send().await.expect("CreateKeysAndCertificate");
    let cert_arn = keys.certificate_arn().expect("certificateArn").to_string();
    iot.create_policy()
        .policy_name("PumpThingPolicy")
        .policy_document(THING_POLICY)
        .send()
        .await
        .expect("CreatePolicy");
    iot.attach_policy().policy_name("PumpThingPolicy").target(&cert_arn).send().await.expect("AttachPolicy");
    iot.attach_thing_principal().thing_name(THING).principal(&cert_arn).send().await.expect("AttachThingPrincipal");
    Device {
        thing: THING.into(),
        certificate_id: keys.certificate_id().expect("certificateId").into(),
        certificate_arn: cert_arn,
        cert_pem: keys.certificate_pem().expect("certificatePem").into(),
        key_pem: keys.key_pair().and_then(|k| k.private_key()).expect("privateKey").into(),
    }
}

fn mqtt_host_port(cloud: &LocalCloud) -> (String, u16) {
    let (h, p) = cloud.endpoints.mqtt.rsplit_once(':').unwrap();
    (h.to_string(), p.parse().unwrap())
}

async fn shadow_over_http(data: &aws_sdk_iotdataplane::Client) -> Value {
    let out = data.get_thing_shadow().thing_name(THING).shadow_name("pump").send().await.expect("GetThingShadow");
    serde_json::from_slice(out.payload().expect("payload").as_ref()).expect("shadow JSON")
}

#[tokio::test]
async fn sdk_provisioned_device_follows_desired_state_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.unwrap();
    let (iot, data) = sdk_config(&cloud.endpoints);

    let endpoint = iot.describe_endpoint().endpoint_type("iot:Data-ATS").send().await.expect("DescribeEndpoint");
    assert!(endpoint.endpoint_address().is_some_and(|a| !a.is_empty()));

    let device = provision(&iot).await;
    let (host, port) = mqtt_host_port(&cloud);
    let opts = common::mqtt_options(&host, port, &cloud.endpoints.ca_file, THING, &device);
    let (mut mqtt, _) = Client::connect(opts).await.expect("device connects with the SDK-made certificate");
    let prefix = format!("$aws/things/{THING}/shadow/name/pump");
    let codes = mqtt
        .subscribe(&[
            (&format!("{prefix}/update/delta"), QoS::AtLeastOnce),
            (&format!("{prefix}/update/accepted"), QoS::AtLeastOnce),
        ])
        .await
        .unwrap();
    assert!(codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))), "{codes:?}");

    // A policy scoped to this thing must not reach another thing's shadow.
    let other = mqtt.subscribe(&[("$aws/things/other/shadow/name/pump/update/delta", QoS::AtLeastOnce)]).await.unwrap();
    assert_eq!(other, vec![rumqttc::SubscribeReasonCode::Failure]);

    // The operator sets desired state over HTTP, as a cloud application would.
    let desired = json!({"state": {"desired": {"mode": "auto", "speedRpm": 1450}}});
    data.update_thing_shadow()
        .thing_name(THING)
        .shadow_name("pump")
        .payload(Blob::new(serde_json::to_vec(&desired).unwrap()))
        .send()
        .await
        .expect("UpdateThingShadow");

    // The device sees the delta over MQTT.
    let delta = mqtt
        .wait_for(WAIT, |ev| match ev {
            rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)) if p.topic.ends_with("/update/delta") => {
                Some(serde_json::from_slice::<Value>(&p.payload).unwrap())
            }
            _ => None,
        })
        .await
        .expect("delta over MQTT");
    assert_eq!(delta["state"], json!({"mode": "auto", "speedRpm": 1450}));
    let version = delta["version"].as_u64().unwrap();

    // It applies the change and reports it.
    let report = json!({"state": {"reported": {"mode": "auto", "speedRpm": 1450}}, "clientToken": "dev-1"});
    mqtt.publish(&format!("{prefix}/update"), QoS::AtLeastOnce, false, serde_json::to_vec(&report).unwrap())
        .await
        .unwrap();
    let accepted = mqtt
        .wait_for(WAIT, |ev| match ev {
            rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)) if p.topic.ends_with("/update/accepted") => {
                let v: Value = serde_json::from_slice(&p.payload).unwrap();
                (v["clientToken"] == "dev-1").then_some(v)
            }
            _ => None,
        })
        .await
        .expect("own update accepted");
    assert_eq!(accepted["version"].as_u64(), Some(version + 1));

    let doc = shadow_over_http(&data).await;
    assert!(doc["state"].get("delta").is_none(), "delta gone once reported matches desired: {doc}");
    assert_eq!(doc["version"].as_u64(), Some(version + 1));
    assert_eq!(doc["state"]["reported"]["speedRpm"], 1450);

    let named = data.list_named_shadows_for_thing().thing_name(THING).send().await.expect("ListNamedShadowsForThing");
    assert_eq!(named.results(), ["pump"]);

    mqtt.disconnect().await;
    cloud.shutdown().await;

    // Restart on the same data directory: registry, certificate and shadow are still there.
    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.unwrap();
    let (iot, data) = sdk_config(&cloud.endpoints);
    let thing = iot.describe_thing().thing_name(THING).send().await.expect("thing survives");
    assert_eq!(thing.thing_name(), Some(THING));
    assert_eq!(shadow_over_http(&data).await["version"].as_u64(), Some(version + 1));
    let (host, port) = mqtt_host_port(&cloud);
    let opts = common::mqtt_options(&host, port, &cloud.endpoints.ca_file, THING, &device);
    let (mqtt, _) = Client::connect(opts).await.expect("the same certificate still connects after a restart");
    mqtt.disconnect().await;
    tokio::time::timeout(Duration::from_secs(10), cloud.shutdown()).await.expect("clean shutdown");
}
