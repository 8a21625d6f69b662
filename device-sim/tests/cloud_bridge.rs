//! The simulated core against the local cloud: the IoT Core bridge (PublishToIoTCore,
//! SubscribeToIoTCore over the core's one MQTT connection, MQTT 5 properties both ways, and
//! MQTT 3.1.1 when configured so) and shadow sync, including a cloud
//! restart, an offline start, and offline changes on both sides reconciled by the written rules;
//! the core's fleet status and its Jobs deployment listener against the cloud's Jobs and Greengrass
//! services; and the core's Greengrass data-plane client and artifact downloader against the
//! cloud's ResolveComponentCandidates, GetComponentVersionArtifact and presigned S3 URLs;
//! (`rotation`) the bridge moving its one connection to a new certificate and back;
//! (`telemetry`) the telemetry agent's metrics; (`log_manager`) the log manager's uploads to
//! CloudWatch Logs; (`monitoring`) the alarms the operator's `provision monitoring` sets up,
//! raised by a broken component, a stopped core and a failing rule; and (`fleet`) `device-sim
//! fleet` onboarding sites by claim into one group.

use cloud_api::ipc::error::ErrorCode;
use cloud_api::ipc::model::{
    PayloadFormat, PubSubMessage, PublishProperties, PublishToIoTCoreRequest, Qos, ReceiveMode,
    SubscribeToIoTCoreRequest, SubscribeToTopicRequest, UserProperty,
};
use device_sim::core::key_store::DeviceKey;
use device_sim::core::key_store::softhsm::SoftToken;
use device_sim::core::options::MqttVersion;
use device_sim::core::runtime::Core;
use kit::ipc::IpcClient;
use local_cloud::registry::CertificateStatus;
use serde_json::{Value, json};
use site_testkit::WAIT;
use site_testkit::site::{self, Site, wait_connection};

#[path = "cloud_bridge/fleet.rs"]
mod fleet;
#[path = "cloud_bridge/log_manager.rs"]
mod log_manager;
#[path = "cloud_bridge/monitoring.rs"]
mod monitoring;
#[path = "cloud_bridge/rotation.rs"]
mod rotation;
#[path = "cloud_bridge/telemetry.rs"]
mod telemetry;

const THING: &str = "core-1";
const COMPONENT: &str = "com.example.Sleeper";
const PUMP: &str = "$aws/things/core-1/shadow/name/pump";

/// The core device's IoT policy: its own client id, its own topics and its own shadow.
const CORE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":[
   "arn:aws:iot:*:*:topic/dt/${iot:Connection.Thing.ThingName}/*",
   "arn:aws:iot:*:*:topic/cmd/${iot:Connection.Thing.ThingName}/*",
   "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/name/pump/*"]},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":[
   "arn:aws:iot:*:*:topicfilter/cmd/${iot:Connection.Thing.ThingName}/*",
   "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/name/pump/*"]}]}"#;

/// The local cloud with the core registered, and a component that only sleeps: the test speaks
/// IPC with its token.
async fn new_site() -> Site {
    new_site_with(CORE_POLICY).await
}

/// The same, with `core_policy` as the core device's IoT policy.
async fn new_site_with(core_policy: &str) -> Site {
    let mut site = Site::new(THING);
    site.deploy_idle(
        COMPONENT,
        json!({
            "aws.greengrass.ipc.mqttproxy": {"com.example.Sleeper:mqtt:1": {
                "operations": ["aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"],
                "resources": ["dt/core-1/#", "cmd/core-1/#"]
            }},
            "aws.greengrass.ipc.pubsub": {"com.example.Sleeper:pubsub:1": {
                "operations": ["aws.greengrass#SubscribeToTopic"],
                "resources": ["$aws/things/core-1/shadow/name/pump/update/delta"]
            }},
            "aws.greengrass.ShadowManager": {"com.example.Sleeper:shadow:1": {
                "operations": ["aws.greengrass#GetThingShadow", "aws.greengrass#UpdateThingShadow"],
                "resources": ["$aws/things/{iot:thingName}/shadow/name/pump"]
            }}
        }),
    );
    site.start_cloud(core_policy).await;
    site
}

/// The core, syncing the `pump` shadow with the cloud.
async fn start_core(site: &Site) -> Core {
    site.start_core(&site::shadow_sync(&["pump"])).await
}

async fn ipc(core: &Core) -> IpcClient {
    site::ipc(core, COMPONENT).await
}

fn binary_json(m: PubSubMessage) -> Value {
    match m {
        PubSubMessage::Binary(b) => serde_json::from_slice(b.message.as_bytes()).unwrap(),
        PubSubMessage::Json(_) => panic!("shadow topics carry binary messages"),
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn speed(doc: &Value, section: &str) -> Option<i64> {
    doc.pointer(&format!("/state/{section}/speedRpm")).and_then(Value::as_i64)
}

async fn update_local(client: &IpcClient, doc: Value) -> Value {
    site::update_local_shadow(client, THING, "pump", &doc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_publish_and_subscribe_to_iot_core_through_the_cores_connection() {
    let site = new_site().await;
    let mut app = site.cloud().observer(&["dt/core-1/#"]).await;
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    let client = ipc(&core).await;

    client
        .publish_to_iot_core(&PublishToIoTCoreRequest::new(
            "dt/core-1/telemetry",
            Qos::AtLeastOnce,
            bytes(&json!({"v": 1, "n": 1})),
        ))
        .await
        .unwrap();
    let got = app.wait_for("telemetry", |m| m.topic == "dt/core-1/telemetry").await;
    assert_eq!(got.json(), json!({"v": 1, "n": 1}));

    // SubscribeToIoTCore, then a command from the cloud application. The SUBSCRIBE is written
    // before any later publish of the core, so a marker published after subscribing proves the
    // subscription is in place before the application sends its command.
    let mut sub = client
        .subscribe_to_iot_core(&SubscribeToIoTCoreRequest { topic_name: "cmd/core-1/#".into(), qos: Qos::AtLeastOnce })
        .await
        .unwrap();
    client
        .publish_to_iot_core(&PublishToIoTCoreRequest::new("cmd/core-1/marker", Qos::AtLeastOnce, b"{}".to_vec()))
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, sub.next_event()).await.expect("marker").unwrap().unwrap();
    assert_eq!(first.message.topic_name, "cmd/core-1/marker");
    app.publish("cmd/core-1/speed", bytes(&json!({"speedRpm": 900}))).await;
    let cmd = tokio::time::timeout(WAIT, sub.next_event()).await.expect("command").unwrap().unwrap();
    let cmd = cmd.message;
    assert_eq!(cmd.topic_name, "cmd/core-1/speed");
    assert_eq!(serde_json::from_slice::<Value>(cmd.payload.as_bytes()).unwrap(), json!({"speedRpm": 900}));

    // IoT Core's topic rules are checked before anything is queued.
    let err = client
        .publish_to_iot_core(&PublishToIoTCoreRequest::new("dt/core-1/#", Qos::AtLeastOnce, b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid IoT Core topic"), "{err}");
    core.shutdown(WAIT).await;
}

/// The operator's application as an MQTT 5 client subscribed to `filter`: its client (to
/// publish with properties) and the PUBLISH packets it receives, properties included. Returns
/// once the broker has acknowledged the subscription.
async fn mqtt5_app(
    site: &Site,
    filter: &str,
) -> (rumqttc::v5::AsyncClient, tokio::sync::mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Publish>) {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::Packet;
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(site.cloud().operator_mqtt5_options(), 16);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    client.subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.unwrap();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if let Some(t) = subscribed_tx.take() {
                        let _ = t.send(ack.return_codes);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("the MQTT 5 application lost its connection: {e}"),
            }
        }
    });
    let codes = tokio::time::timeout(WAIT, subscribed).await.expect("SUBACK").unwrap();
    assert!(matches!(codes.as_slice(), [rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)]), "{codes:?}");
    (client, rx)
}

async fn next_publish(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<rumqttc::v5::mqttbytes::v5::Publish>,
    topic: &str,
) -> rumqttc::v5::mqttbytes::v5::Publish {
    loop {
        let p = tokio::time::timeout(WAIT, rx.recv()).await.unwrap_or_else(|_| panic!("{topic} arrives")).unwrap();
        if p.topic == topic.as_bytes() {
            return p;
        }
    }
}

fn mqtt5_members() -> PublishProperties {
    PublishProperties {
        retain: None,
        user_properties: Some(vec![
            UserProperty { key: "site".into(), value: "north".into() },
            UserProperty { key: "site".into(), value: "south".into() },
        ]),
        message_expiry_interval_seconds: Some(600),
        correlation_data: Some(b"\x00req-7".to_vec().into()),
        response_topic: Some("cmd/core-1/reply".into()),
        payload_format: Some(PayloadFormat::Utf8),
        content_type: Some("application/json".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_properties_pass_between_a_component_and_the_cloud_both_ways() {
    let site = new_site().await;
    let (app, mut received) = mqtt5_app(&site, "dt/core-1/#").await;
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    let client = ipc(&core).await;

    // Component → cloud: every MQTT 5 member of PublishToIoTCore reaches the MQTT 5 subscriber.
    let mut request = PublishToIoTCoreRequest::new("dt/core-1/props", Qos::AtLeastOnce, b"{\"n\":1}".to_vec());
    request.properties = mqtt5_members();
    client.publish_to_iot_core(&request).await.unwrap();
    let got = next_publish(&mut received, "dt/core-1/props").await;
    assert_eq!(got.payload.as_ref(), b"{\"n\":1}");
    let p = got.properties.expect("the PUBLISH carries properties");
    assert_eq!(p.user_properties, [("site".into(), "north".into()), ("site".into(), "south".into())]);
    assert_eq!(p.correlation_data.as_deref(), Some(&b"\x00req-7"[..]));
    assert_eq!(p.response_topic.as_deref(), Some("cmd/core-1/reply"));
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.payload_format_indicator, Some(1));
    // The broker forwards the remaining lifetime, never more than was set.
    assert!(matches!(p.message_expiry_interval, Some(1..=600)), "{:?}", p.message_expiry_interval);

    // A payload marked UTF-8 that is not is refused before it is spooled.
    let mut bad = PublishToIoTCoreRequest::new("dt/core-1/props", Qos::AtLeastOnce, b"\xff\xfe".to_vec());
    bad.properties.payload_format = Some(PayloadFormat::Utf8);
    let err = client.publish_to_iot_core(&bad).await.unwrap_err();
    assert!(
        matches!(&err, kit::ipc::IpcError::Service { error, .. } if error.code == ErrorCode::InvalidArgumentsError),
        "{err}"
    );

    // Cloud → component: the PUBLISH's properties arrive in the SubscribeToIoTCore event. The
    // marker, published by the core after its SUBSCRIBE, proves the subscription is in place.
    let mut sub = client
        .subscribe_to_iot_core(&SubscribeToIoTCoreRequest { topic_name: "cmd/core-1/#".into(), qos: Qos::AtLeastOnce })
        .await
        .unwrap();
    client
        .publish_to_iot_core(&PublishToIoTCoreRequest::new("cmd/core-1/marker", Qos::AtLeastOnce, b"{}".to_vec()))
        .await
        .unwrap();
    let marker = tokio::time::timeout(WAIT, sub.next_event()).await.expect("marker").unwrap().unwrap();
    assert_eq!(marker.message.topic_name, "cmd/core-1/marker");
    assert_eq!(marker.message.properties.user_properties, None, "a PUBLISH without properties has none");
    let properties = rumqttc::v5::mqttbytes::v5::PublishProperties {
        payload_format_indicator: Some(0),
        message_expiry_interval: Some(300),
        response_topic: Some("dt/core-1/answer".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"c-42")),
        user_properties: vec![("trace".into(), "abc".into())],
        content_type: Some("application/octet-stream".into()),
        ..Default::default()
    };
    app.publish_with_properties(
        "cmd/core-1/speed",
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        false,
        b"\x01\x02".to_vec(),
        properties,
    )
    .await
    .unwrap();
    let event = tokio::time::timeout(WAIT, sub.next_event()).await.expect("command").unwrap().unwrap();
    let m = event.message;
    assert_eq!(m.topic_name, "cmd/core-1/speed");
    assert_eq!(m.payload.as_bytes(), b"\x01\x02");
    assert_eq!(m.properties.user_properties, Some(vec![UserProperty { key: "trace".into(), value: "abc".into() }]));
    assert_eq!(m.properties.correlation_data.as_ref().map(|b| b.as_bytes()), Some(&b"c-42"[..]));
    assert_eq!(m.properties.response_topic.as_deref(), Some("dt/core-1/answer"));
    assert_eq!(m.properties.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(m.properties.payload_format, Some(PayloadFormat::Bytes));
    assert!(matches!(m.properties.message_expiry_interval_seconds, Some(1..=300)), "{:?}", m.properties);
    assert_eq!(m.properties.retain, Some(false));
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_set_to_mqtt3_bridges_both_ways_and_drops_the_mqtt5_properties() {
    let mut site = new_site().await;
    site.mqtt_version = MqttVersion::Mqtt311;
    let (app, mut received) = mqtt5_app(&site, "dt/core-1/#").await;
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    let client = ipc(&core).await;

    let mut request = PublishToIoTCoreRequest::new("dt/core-1/props", Qos::AtLeastOnce, b"{}".to_vec());
    request.properties = mqtt5_members();
    client.publish_to_iot_core(&request).await.unwrap();
    let got = next_publish(&mut received, "dt/core-1/props").await;
    assert_eq!(got.payload.as_ref(), b"{}");
    let p = got.properties.unwrap_or_default();
    assert!(p.user_properties.is_empty() && p.correlation_data.is_none() && p.content_type.is_none(), "{p:?}");

    let mut sub = client
        .subscribe_to_iot_core(&SubscribeToIoTCoreRequest { topic_name: "cmd/core-1/#".into(), qos: Qos::AtLeastOnce })
        .await
        .unwrap();
    client
        .publish_to_iot_core(&PublishToIoTCoreRequest::new("cmd/core-1/marker", Qos::AtLeastOnce, b"{}".to_vec()))
        .await
        .unwrap();
    let marker = tokio::time::timeout(WAIT, sub.next_event()).await.expect("marker").unwrap().unwrap();
    assert_eq!(marker.message.topic_name, "cmd/core-1/marker");
    let properties = rumqttc::v5::mqttbytes::v5::PublishProperties {
        user_properties: vec![("trace".into(), "abc".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    app.publish_with_properties("cmd/core-1/speed", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "go", properties)
        .await
        .unwrap();
    let event = tokio::time::timeout(WAIT, sub.next_event()).await.expect("command").unwrap().unwrap();
    assert_eq!(event.message.topic_name, "cmd/core-1/speed");
    assert_eq!(event.message.payload.as_bytes(), b"go");
    assert_eq!(event.message.properties, PublishProperties { retain: Some(false), ..Default::default() });
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_is_a_disconnect_reason_and_the_core_reconnects() {
    let site = new_site().await;
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    let bridge = core.bridge().expect("a bridge");
    let mut reasons = bridge.server_disconnect();
    assert_eq!(*reasons.borrow(), None);
    let mut connection = bridge.connection();
    connection.mark_unchanged();

    // Another connection with the core's client id: IoT Core drops the older one with
    // DISCONNECT 0x8E (session taken over); the core logs it and connects again.
    let cloud = site.cloud();
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let tls = site_testkit::tls::client_config(
        &cloud.endpoints().ca_file,
        &read(&cloud.core.cert_file),
        &read(&cloud.core.key_file),
    );
    let (host, port) = cloud.endpoints().mqtt_host_port().unwrap();
    let (_intruder, mut intruder_events) =
        rumqttc::AsyncClient::new(site_testkit::tls::mqtt_options(&host, port, THING, tls), 4);
    loop {
        match tokio::time::timeout(WAIT, intruder_events.poll()).await.expect("the intruder's CONNACK") {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("the intruder could not connect: {e}"),
        }
    }
    tokio::time::timeout(WAIT, reasons.wait_for(|r| *r == Some(0x8E))).await.expect("DISCONNECT 0x8E").unwrap();
    // The intruder stops; the core takes its client id back.
    drop(intruder_events);
    tokio::time::timeout(WAIT, connection.changed()).await.expect("the connection changes").unwrap();
    wait_connection(&core, true).await;
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_desired_reaches_a_component_as_a_local_delta_and_reported_reaches_the_cloud_across_a_restart() {
    let mut site = new_site().await;
    let mut app = site.cloud().observer(&[&format!("{PUMP}/update/documents")]).await;
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    let client = ipc(&core).await;
    let mut deltas = client
        .subscribe_to_topic(&SubscribeToTopicRequest {
            topic: format!("{PUMP}/update/delta"),
            receive_mode: Some(ReceiveMode::ReceiveAllMessages),
        })
        .await
        .unwrap();

    // The operator sets a desired speed in the cloud (as the data-plane API does).
    site.cloud().update_shadow(THING, "pump", &json!({"state": {"desired": {"speedRpm": 1500}}}));
    let delta = tokio::time::timeout(WAIT, deltas.next_event()).await.expect("a local delta").unwrap().unwrap();
    let delta = binary_json(delta);
    assert_eq!(delta["state"]["speedRpm"], 1500, "{delta}");

    // The component reports; the cloud shadow gets it.
    update_local(&client, json!({"state": {"reported": {"speedRpm": 1500}}})).await;
    app.wait_for("reported 1500 in the cloud", |m| {
        m.json().pointer("/current/state/reported/speedRpm") == Some(&json!(1500))
    })
    .await;
    let cloud_doc = site.cloud().shadow(THING, "pump");
    assert_eq!(speed(&cloud_doc, "reported"), Some(1500));
    assert!(cloud_doc["state"].get("delta").is_none(), "desired and reported agree: {cloud_doc}");

    // The cloud goes away; the component keeps reporting locally.
    site.cloud_mut().stop().await;
    wait_connection(&core, false).await;
    update_local(&client, json!({"state": {"reported": {"speedRpm": 1480}}})).await;

    // Back: the offline report reaches the cloud, and new desired values flow again.
    site.cloud_mut().restart().await;
    let mut app = site.cloud().observer(&[&format!("{PUMP}/update/documents")]).await;
    wait_connection(&core, true).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while speed(&site.cloud().shadow(THING, "pump"), "reported") != Some(1480) {
        assert!(tokio::time::Instant::now() < deadline, "the offline report never reached the cloud");
        app.next("a cloud shadow change").await;
    }
    site.cloud().update_shadow(THING, "pump", &json!({"state": {"desired": {"speedRpm": 1200}}}));
    loop {
        let d =
            tokio::time::timeout(WAIT, deltas.next_event()).await.expect("a delta after the restart").unwrap().unwrap();
        let d = binary_json(d);
        if d["state"]["speedRpm"] == 1200 {
            break;
        }
    }
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_changes_on_both_sides_merge_by_the_rules_when_the_core_comes_back() {
    let mut site = new_site().await;
    let core = start_core(&site).await;
    wait_connection(&core, true).await;
    let client = ipc(&core).await;
    update_local(
        &client,
        json!({"state": {"desired": {"speedRpm": 1000, "mode": "auto"}, "reported": {"speedRpm": 1000}}}),
    )
    .await;
    site.cloud().wait_shadow(THING, "pump", "the first sync", |d| speed(d, "reported") == Some(1000)).await;

    // The cloud goes away; locally the reported speed changes (and a desired mode too).
    site.cloud_mut().stop().await;
    wait_connection(&core, false).await;
    update_local(&client, json!({"state": {"desired": {"mode": "manual"}, "reported": {"speedRpm": 1100}}})).await;
    drop(client);
    core.shutdown(WAIT).await;

    // Meanwhile in the cloud: a new desired speed and mode, and a conflicting reported value.
    site.cloud_mut().restart().await;
    site.cloud().update_shadow(
        THING,
        "pump",
        &json!({"state": {"desired": {"speedRpm": 1700, "mode": "off"}, "reported": {"speedRpm": 999}}}),
    );

    // The core restarts (local shadow and sync state from disk) and syncs: desired conflicts go
    // to the cloud, reported conflicts to the device; unchanged fields take the other side.
    let core = start_core(&site).await;
    let client = ipc(&core).await;
    let local = site::wait_local_shadow(&client, THING, "pump", "the cloud's desired speed", |d| {
        speed(d, "desired") == Some(1700)
    })
    .await;
    assert_eq!(local["state"]["desired"]["mode"], "off", "desired conflict: the cloud wins: {local}");
    assert_eq!(speed(&local, "reported"), Some(1100), "reported conflict: the device wins: {local}");
    let cloud =
        site.cloud().wait_shadow(THING, "pump", "the device's report", |d| speed(d, "reported") == Some(1100)).await;
    assert_eq!(cloud["state"]["desired"], json!({"speedRpm": 1700, "mode": "off"}));
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_start_runs_components_and_spools_until_the_cloud_lets_the_core_in() {
    let site = new_site().await;
    // IoT Core refuses the core (its certificate is inactive): the core starts offline.
    site.cloud().set_core_certificate(CertificateStatus::Inactive);
    let mut app = site.cloud().observer(&["dt/core-1/#"]).await;
    let core = start_core(&site).await;
    let client = ipc(&core).await;
    // IPC works offline: local shadows, and QoS 1 publishes go to the spool…
    update_local(&client, json!({"state": {"reported": {"speedRpm": 5}}})).await;
    for n in 0..20 {
        client
            .publish_to_iot_core(&PublishToIoTCoreRequest::new(
                "dt/core-1/telemetry",
                Qos::AtLeastOnce,
                bytes(&json!({"n": n})),
            ))
            .await
            .unwrap();
    }
    // …while QoS 0 is refused offline, as the nucleus does by default.
    let err = client
        .publish_to_iot_core(&PublishToIoTCoreRequest::new("dt/core-1/telemetry", Qos::AtMostOnce, b"{}".to_vec()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not connected"), "{err}");
    assert_eq!(core.bridge().unwrap().spool_stats().0, 20);
    assert!(!*core.bridge().unwrap().connection().borrow());

    site.cloud().set_core_certificate(CertificateStatus::Active);
    wait_connection(&core, true).await;
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let doc = app.wait_for("spooled telemetry", |m| m.topic == "dt/core-1/telemetry").await.json();
        let n = doc["n"].as_i64().unwrap();
        if !seen.contains(&n) {
            seen.push(n);
        }
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "spooled messages arrive in order");
    // The shadow written offline reached the cloud too.
    site.cloud().wait_shadow(THING, "pump", "the offline report", |d| speed(d, "reported") == Some(5)).await;
    core.shutdown(WAIT).await;
}

/// The core's policy with what the fleet status service needs (as in AWS's minimal core policy).
const REPORTING_CORE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":"iot:Publish",
  "Resource":"arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/greengrassv2/health/json"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_reports_fleet_status_on_launch_and_once_components_settle_and_keeps_counting_across_restarts() {
    use cloud_api::greengrass::{CoreDevice, FleetStatus, ReportOutcome, Trigger};
    let mut site = Site::new(THING);
    site.deploy_idle(COMPONENT, json!({}));
    site.start_cloud(REPORTING_CORE_POLICY).await;
    site.fleet_status = Some(std::time::Duration::from_secs(3600));
    let topic = "$aws/things/core-1/greengrassv2/health/json";
    let mut cloud_app = site.cloud().observer(&[topic]).await;
    let core = site.start_core(&json!({})).await;
    let mut view = CoreDevice::new(THING);

    let launch = cloud_app.wait_for("the launch report", |m| m.topic == topic).await;
    let launch = FleetStatus::parse(&launch.payload).expect("a fleet status message the cloud reads");
    assert_eq!(launch.trigger, Trigger::NucleusLaunch);
    assert_eq!(view.apply_report(&launch, 1), ReportOutcome::Applied);
    assert!(view.components.contains_key("aws.greengrass.Nucleus"), "{launch:?}");
    assert!(view.components.contains_key(COMPONENT), "{launch:?}");

    // Once the component runs, the core says so (all settled, no deployment in progress).
    let running = cloud_app
        .wait_for("the component running", |m| {
            m.topic == topic
                && FleetStatus::parse(&m.payload)
                    .is_ok_and(|s| s.components.iter().any(|c| c.component_name == COMPONENT && c.status == "RUNNING"))
        })
        .await;
    let running = FleetStatus::parse(&running.payload).unwrap();
    assert!(running.sequence_number > launch.sequence_number, "{launch:?}\n{running:?}");
    view.apply_report(&running, 2);
    assert_eq!(view.components[COMPONENT].lifecycle_state, "RUNNING");
    assert!(view.components[COMPONENT].is_root);

    core.shutdown(WAIT).await;

    // A restarted core goes on counting where it left off.
    let core = site.start_core(&json!({})).await;
    let relaunch = cloud_app
        .wait_for("the second launch", |m| {
            m.topic == topic && FleetStatus::parse(&m.payload).is_ok_and(|s| s.trigger == Trigger::NucleusLaunch)
        })
        .await;
    let relaunch = FleetStatus::parse(&relaunch.payload).unwrap();
    assert!(relaunch.sequence_number > running.sequence_number, "the sequence number survives a restart");
    assert_eq!(view.apply_report(&relaunch, 3), ReportOutcome::Applied);
    core.shutdown(WAIT).await;
}

/// The core's policy for thing-group deployments: its Jobs topics in the Greengrass namespace.
const DEPLOYMENT_CORE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],
  "Resource":"arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"},
 {"Effect":"Allow","Action":"iot:Subscribe",
  "Resource":"arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/jobs/*"}]}"#;

/// A deployment listener of the core: takes the messages of its subscriptions.
trait DeploymentListener {
    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Vec<device_sim::core::deployment_listeners::Action>;
}

impl DeploymentListener for device_sim::core::deployment_listeners::jobs::Listener {
    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Vec<device_sim::core::deployment_listeners::Action> {
        self.message(topic, payload)
    }
}

impl DeploymentListener for device_sim::core::deployment_listeners::shadow::Listener {
    fn on_message(&mut self, topic: &str, payload: &[u8]) -> Vec<device_sim::core::deployment_listeners::Action> {
        self.message(topic, payload)
    }
}

/// Feeds the listener the core's messages until `until` picks something out of its actions (or,
/// with no action, out of the listener's state); publishes every action that is a publish.
async fn follow<L: DeploymentListener, T>(
    core: &mut site_testkit::mqtt::Observer,
    listener: &mut L,
    mut actions: Vec<device_sim::core::deployment_listeners::Action>,
    until: impl Fn(Option<&device_sim::core::deployment_listeners::Action>, &L) -> Option<T>,
) -> T {
    use device_sim::core::deployment_listeners::Action;
    loop {
        let mut found = None;
        for action in &actions {
            if let Action::Publish { topic, payload } = action {
                core.publish(topic, payload.clone()).await;
            }
            if found.is_none() {
                found = until(Some(action), listener);
            }
        }
        if let Some(found) = found.or_else(|| until(None, listener)) {
            return found;
        }
        let m = core.next("a message of the deployment services").await;
        actions = listener.on_message(&m.topic, &m.payload);
    }
}

/// Versions 1.0.0 and 1.1.0 of `com.example.A` (no artifacts) in the cloud's component store.
fn publish_versions_of_a(local: &local_cloud::server::LocalCloud) {
    for version in ["1.0.0", "1.1.0"] {
        let recipe = json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.A",
            "ComponentVersion": version, "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "true"}}]});
        local.greengrass.components.create(recipe.to_string().as_bytes(), Default::default(), None).unwrap();
    }
}

/// CreateDeployment of `com.example.A` at `version` to `target_arn`, in process.
fn deploy_a(
    local: &local_cloud::server::LocalCloud,
    target_arn: &str,
    version: &str,
) -> local_cloud::greengrass::deployments::Created {
    let request: cloud_api::greengrass::CreateDeploymentRequest = serde_json::from_value(json!({
        "targetArn": target_arn,
        "components": {"com.example.A": {"componentVersion": version}}
    }))
    .unwrap();
    local.deployments.create(request).expect("CreateDeployment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cores_jobs_listener_takes_group_deployments_queued_before_and_after_it_connects_and_reports_them() {
    use cloud_api::greengrass::{DetailedDeploymentStatus, JobStatusDetails};
    use cloud_api::jobs::JobExecutionStatus;
    use device_sim::core::deployment_listeners::Action;
    use device_sim::core::deployment_listeners::jobs::Listener;

    let mut site = Site::new(THING);
    site.start_cloud(DEPLOYMENT_CORE_POLICY).await;
    let local = site.cloud().local();
    publish_versions_of_a(local);
    local.registry.create_thing_group("pumps", None, None, Default::default()).unwrap();
    local.registry.add_thing_to_thing_group("pumps", THING).unwrap();
    let deploy = |version: &str| deploy_a(local, "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps", version);
    let deployed = |action: Option<&Action>, _: &Listener| match action {
        Some(Action::Deploy { deployment_id, document }) => Some((deployment_id.clone(), document.clone())),
        _ => None,
    };

    // Queued while the core was away: found by the $next ask on connecting.
    let first = deploy("1.0.0");
    let mut listener = Listener::new(THING);
    let filters = listener.subscriptions();
    let mut core = site.cloud().as_core(&filters.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let connected = listener.connected();
    let (job, document) = follow(&mut core, &mut listener, connected, deployed).await;
    assert_eq!(Some(job.as_str()), first.iot_job_id.as_deref());
    assert_eq!(document.deployment_id, first.deployment_id);
    assert_eq!(document.components["com.example.A"].version, "1.0.0");

    // The core applies it and says so; the cloud's job execution shows it.
    let started = listener.deployment_started(&job);
    let ok = JobStatusDetails { detailed_status: Some(DetailedDeploymentStatus::Successful), ..Default::default() };
    let mut actions = started;
    actions.extend(listener.deployment_finished(&job, JobExecutionStatus::Succeeded, &ok));
    follow(&mut core, &mut listener, actions, |_, l| (!l.awaiting_answer()).then_some(())).await;
    let execution = local.jobs.describe_execution(&job, THING).unwrap();
    assert_eq!(execution.status, JobExecutionStatus::Succeeded);
    assert_eq!(execution.status_details["detailed-deployment-status"], "SUCCESSFUL");

    // A new revision while connected: announced by a notification.
    let second = deploy("1.1.0");
    let (job2, document2) = follow(&mut core, &mut listener, Vec::new(), deployed).await;
    assert_eq!(Some(job2.as_str()), second.iot_job_id.as_deref());
    assert_eq!(document2.components["com.example.A"].version, "1.1.0");
    let failed = JobStatusDetails {
        detailed_status: Some(DetailedDeploymentStatus::FailedRollbackComplete),
        failure_cause: Some("com.example.A 1.1.0 broke".into()),
        ..Default::default()
    };
    let actions = listener.deployment_finished(&job2, JobExecutionStatus::Failed, &failed);
    follow(&mut core, &mut listener, actions, |_, l| (!l.awaiting_answer()).then_some(())).await;
    let execution = local.jobs.describe_execution(&job2, THING).unwrap();
    assert_eq!(execution.status, JobExecutionStatus::Failed);
    assert_eq!(execution.status_details["deployment-failure-cause"], "com.example.A 1.1.0 broke");
}

/// The core's policy for thing deployments: its deployment shadow.
const SHADOW_DEPLOYMENT_CORE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],
  "Resource":"arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/name/AWSManagedGreengrassV2Deployment/*"},
 {"Effect":"Allow","Action":"iot:Subscribe",
  "Resource":"arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/name/AWSManagedGreengrassV2Deployment/*"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cores_shadow_listener_takes_a_thing_deployment_reports_it_and_follows_a_cancel() {
    use cloud_api::greengrass::{DetailedDeploymentStatus, JobStatusDetails};
    use cloud_api::jobs::JobExecutionStatus;
    use device_sim::core::deployment_listeners::Action;
    use device_sim::core::deployment_listeners::shadow::Listener;
    use local_cloud::greengrass::deployments::DeploymentStatus;

    let mut site = Site::new(THING);
    site.start_cloud(SHADOW_DEPLOYMENT_CORE_POLICY).await;
    let local = site.cloud().local();
    publish_versions_of_a(local);
    let thing_arn = format!("arn:aws:iot:us-east-1:000000000000:thing/{THING}");
    let deploy = |version: &str| deploy_a(local, &thing_arn, version);
    let deployed = |action: Option<&Action>, _: &Listener| match action {
        Some(Action::Deploy { deployment_id, document }) => Some((deployment_id.clone(), document.clone())),
        _ => None,
    };

    // Made while the core was away: read from the shadow on connecting.
    let first = deploy("1.0.0");
    let mut listener = Listener::new(THING, "2.14.0");
    let filters = listener.subscriptions();
    let mut core = site.cloud().as_core(&filters.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let connected = listener.connected();
    let (arn, document) = follow(&mut core, &mut listener, connected, deployed).await;
    assert_eq!(document.deployment_id, first.deployment_id);
    assert_eq!(arn, document.configuration_arn);

    // Reported in the shadow: the cloud's deployment completes.
    let ok = JobStatusDetails { detailed_status: Some(DetailedDeploymentStatus::Successful), ..Default::default() };
    for action in listener.deployment_finished(&arn, JobExecutionStatus::Succeeded, &ok) {
        if let Action::Publish { topic, payload } = action {
            core.publish(&topic, payload).await;
        }
    }
    site_testkit::wait_until(
        "the thing deployment COMPLETED in the cloud",
        async || local.deployments.get(&first.deployment_id).map(|d| d.status).ok(),
        |s| *s == Some(DeploymentStatus::Completed),
        |s| format!("{s:?}"),
    )
    .await;

    // A new revision while connected, then cancelled before it applies.
    let second = deploy("1.1.0");
    let (arn2, document2) = follow(&mut core, &mut listener, Vec::new(), deployed).await;
    assert_eq!(document2.deployment_id, second.deployment_id);
    assert_ne!(arn2, arn);
    local.deployments.cancel(&second.deployment_id).expect("CancelDeployment");
    let cancelled = follow(&mut core, &mut listener, Vec::new(), |action, _| match action {
        Some(Action::Cancel { deployment_id }) => Some(deployment_id.clone()),
        _ => None,
    })
    .await;
    assert_eq!(cancelled, arn2);
}

// ---- The Greengrass data plane: resolving a component and downloading its artifact ----

const GG_BUCKET: &str = "gg-artifacts";
const GG_COMPONENT: &str = "com.example.Hello";
const GG_KEY: &str = "com.example.Hello/1.0.0/hello.bin";

/// A core policy that allows the Greengrass data-plane actions (AWS's minimal core policy has
/// them on `*`).
const GREENGRASS_CORE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["greengrass:ResolveComponentCandidates","greengrass:GetComponentVersionArtifact"],
  "Resource":"*"}]}"#;

/// 256 KiB that are not all alike, so a resume from the wrong offset shows in the digest.
fn gg_artifact() -> Vec<u8> {
    (0..256 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

/// The local cloud with the core registered under `policy`, the artifact in S3 and a component
/// version published that names it (the cloud adds its digest to the recipe).
async fn gg_cloud(dir: &std::path::Path, policy: &str) -> site_testkit::cloud::Cloud {
    let cloud = site_testkit::cloud::Cloud::start(dir, THING, policy).await;
    let local = cloud.local();
    local.s3.objects().create_bucket(GG_BUCKET, None).expect("CreateBucket");
    local.s3.objects().put_bytes(GG_BUCKET, GG_KEY, gg_artifact().into(), Default::default()).await.expect("PutObject");
    let recipe = format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: {GG_COMPONENT}\nComponentVersion: '1.0.0'\n\
         Manifests:\n  - Platform:\n      os: linux\n    Lifecycle:\n      Run: cat {{artifacts:path}}/hello.bin\n\
         \x20   Artifacts:\n      - URI: s3://{GG_BUCKET}/{GG_KEY}\n"
    );
    local.greengrass.components.create(recipe.as_bytes(), Default::default(), None).expect("CreateComponentVersion");
    cloud
}

fn linux() -> greengrass_recipe::DevicePlatform {
    greengrass_recipe::DevicePlatform::new("linux", "amd64")
}

fn requirements(range: &str) -> std::collections::BTreeMap<String, String> {
    [("main".to_string(), range.to_string())].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_resolves_a_published_component_and_downloads_its_artifact_with_the_digest_checked() {
    use device_sim::core::artifact_download::Downloader;
    use device_sim::core::greengrass_client::{ClientError, GreengrassClient};
    use device_sim::core::layout::Layout;

    let dir = tempfile::tempdir().unwrap();
    let cloud = gg_cloud(dir.path(), GREENGRASS_CORE_POLICY).await;
    let client = GreengrassClient::from_options(&cloud.core_options()).expect("the client is built");

    let resolved = client.resolve(GG_COMPONENT, None, &requirements(">=1.0.0"), &linux()).await.expect("resolved");
    assert_eq!((resolved.name.as_str(), resolved.version.as_str()), (GG_COMPONENT, "1.0.0"));
    assert!(resolved.arn.ends_with(":components:com.example.Hello:versions:1.0.0"), "{}", resolved.arn);
    let recipe: Value = serde_json::from_str(&resolved.recipe_text).expect("a JSON recipe");
    let digest = recipe["Manifests"][0]["Artifacts"][0]["Digest"].as_str().expect("the cloud added the digest");

    // What the caller gives up on, with the nucleus's reasons.
    let e = client.resolve(GG_COMPONENT, Some("1.0.0"), &requirements("^2.0.0"), &linux()).await.unwrap_err();
    assert!(matches!(&e, ClientError::NoUsableVersion { component, .. } if component == GG_COMPONENT), "{e:?}");
    let windows = greengrass_recipe::DevicePlatform::new("windows", "amd64");
    let e = client.resolve(GG_COMPONENT, None, &requirements(">=1.0.0"), &windows).await.unwrap_err();
    assert!(matches!(e, ClientError::IncompatiblePlatform { .. }), "{e:?}");
    assert!(!e.is_retryable());

    // The artifact through its presigned URL, into the core's store.
    let url = client.artifact_url(&resolved.arn, &format!("{GG_BUCKET}/{GG_KEY}")).await.expect("a presigned URL");
    let layout = Layout::new(dir.path().join("root"));
    let store = layout.artifacts_dir(GG_COMPONENT, "1.0.0");
    std::fs::create_dir_all(&store).unwrap();
    let target = store.join("hello.bin");
    let downloader = Downloader::new(client.tls());
    let done = downloader.download(&url, &target, Some(digest)).await.expect("downloaded");
    assert_eq!((done.size, done.received, done.resumed_from, done.attempts), (256 * 1024, 256 * 1024, None, 1));
    assert_eq!(std::fs::read(&target).unwrap(), gg_artifact());
    let again = downloader.download(&url, &target, Some(digest)).await.expect("already there");
    assert_eq!((again.attempts, again.received), (0, 0), "an artifact in place with its digest is kept");
    let e = client.artifact_url(&resolved.arn, "other.bin").await.unwrap_err();
    assert!(matches!(e, ClientError::NotFound { .. }), "{e:?}");

    // A core whose policy lacks the Greengrass actions is told which one.
    let other = site_testkit::cloud::register(cloud.local(), dir.path(), "core-2", CORE_POLICY);
    let mut options = cloud.core_options();
    (options.cert_file, options.key) = (other.cert_file, DeviceKey::File(other.key_file));
    let denied = GreengrassClient::from_options(&options).unwrap();
    let e = denied.resolve(GG_COMPONENT, None, &requirements(">=1.0.0"), &linux()).await.unwrap_err();
    assert!(matches!(&e, ClientError::AccessDenied { action: "greengrass:ResolveComponentCandidates", .. }), "{e:?}");
    assert!(e.to_string().contains("greengrass:ResolveComponentCandidates"), "{e}");
    let e = denied.artifact_url(&resolved.arn, "hello.bin").await.unwrap_err();
    assert!(matches!(e, ClientError::AccessDenied { action: "greengrass:GetComponentVersionArtifact", .. }), "{e:?}");
    cloud.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_artifact_download_resumes_with_range_and_a_wrong_digest_leaves_nothing_in_the_store() {
    use device_sim::core::artifact_download::{DownloadError, Downloader, RetryPolicy, partial_path};
    use device_sim::core::greengrass_client::GreengrassClient;

    let dir = tempfile::tempdir().unwrap();
    let cloud = gg_cloud(dir.path(), GREENGRASS_CORE_POLICY).await;
    let client = GreengrassClient::from_options(&cloud.core_options()).unwrap();
    let resolved = client.resolve(GG_COMPONENT, None, &requirements("*"), &linux()).await.unwrap();
    let recipe: Value = serde_json::from_str(&resolved.recipe_text).unwrap();
    let digest = recipe["Manifests"][0]["Artifacts"][0]["Digest"].as_str().unwrap().to_string();
    let url = client.artifact_url(&resolved.arn, "hello.bin").await.unwrap();

    // The URL served through a proxy that cuts the first answer after 100 000 bytes of its body.
    let upstream = cloud.endpoints().http.trim_start_matches("http://").to_string();
    assert!(url.starts_with(&format!("http://{upstream}/")), "a presigned URL of the local S3: {url}");
    let mut proxy = Proxy::bind().await;
    proxy.serve(upstream.clone(), Some(upstream.clone()));
    proxy.interrupt_next(Interrupt::Cut(100_000));
    let proxied = url.replacen(&upstream, &proxy.addr, 1);
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let target = store.join("hello.bin");
    let fast = RetryPolicy {
        attempts: 3,
        first_backoff: std::time::Duration::from_millis(10),
        max_backoff: std::time::Duration::from_millis(50),
        idle_timeout: std::time::Duration::from_secs(10),
    };
    let downloader = Downloader::new(client.tls()).with_policy(fast);
    let done = downloader.download(&proxied, &target, Some(&digest)).await.expect("resumed and complete");
    let ranges = proxy.ranges();
    let from = done.resumed_from.expect("the second request resumed");
    assert_eq!(from, 100_000, "the rest of what the cut answer brought: {done:?}");
    assert_eq!(ranges, [None, Some(format!("bytes={from}-"))], "one plain request, then the rest by Range");
    assert_eq!((done.attempts, done.size), (2, 256 * 1024));
    assert_eq!(std::fs::read(&target).unwrap(), gg_artifact(), "the pieces make the artifact");
    assert!(!partial_path(&target).exists());

    // A digest that does not match: refused, and neither the artifact nor a partial file stays.
    std::fs::remove_file(&target).unwrap();
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let e = downloader.download(&url, &target, Some(wrong)).await.unwrap_err();
    match &e {
        DownloadError::DigestMismatch { expected, actual, url_path } => {
            assert_eq!((expected.as_str(), actual.as_str()), (wrong, digest.as_str()));
            assert!(!url_path.contains('?'), "no presigned credentials in messages: {url_path}");
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 0, "nothing half-written in the store");

    // A presigned URL that was tampered with is refused at once, not retried.
    let at = url.find("X-Amz-Signature=").expect("a signed URL") + "X-Amz-Signature=".len();
    let flipped = if url[at..].starts_with('0') { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &url[..at], &url[at + 1..]);
    let e = downloader.download(&tampered, &target, None).await;
    assert!(matches!(e, Err(DownloadError::Refused { status: 403, .. })), "{e:?}");
    cloud.shutdown().await;
}

/// A one-request-per-connection HTTP proxy on loopback: it records each request's `Range`, and
/// interrupts the answer to the next request when told to ([`Interrupt`]).
struct Proxy {
    addr: String,
    ranges: std::sync::Arc<std::sync::Mutex<Vec<Option<String>>>>,
    next: std::sync::Arc<std::sync::Mutex<Option<Interrupt>>>,
    interrupted: std::sync::Arc<tokio::sync::Notify>,
    listener: Option<tokio::net::TcpListener>,
}

/// What happens to the next answer after its head and `n` bytes of its body.
#[derive(Debug, Clone, Copy)]
enum Interrupt {
    /// The connection closes.
    Cut(u64),
    /// Nothing more is sent, and the connection stays open.
    Stall(u64),
}

impl Proxy {
    /// Listens; nothing is served until [`Proxy::serve`].
    async fn bind() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Proxy {
            addr: listener.local_addr().unwrap().to_string(),
            ranges: Default::default(),
            next: Default::default(),
            interrupted: Default::default(),
            listener: Some(listener),
        }
    }

    /// Serves towards `upstream`; `host`: the `Host` sent upstream (for a URL rewritten to the
    /// proxy that was signed for the upstream), else the client's passes through.
    fn serve(&mut self, upstream: String, host: Option<String>) {
        let listener = self.listener.take().expect("served once");
        let (ranges, next, interrupted) = (self.ranges.clone(), self.next.clone(), self.interrupted.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let interrupt = next.lock().unwrap().take();
                let (upstream, host, ranges, interrupted) =
                    (upstream.clone(), host.clone(), ranges.clone(), interrupted.clone());
                tokio::spawn(async move {
                    Self::one(client, &upstream, host.as_deref(), &ranges, interrupt, &interrupted).await;
                });
            }
        });
    }

    async fn one(
        client: tokio::net::TcpStream,
        upstream: &str,
        host: Option<&str>,
        ranges: &std::sync::Mutex<Vec<Option<String>>>,
        interrupt: Option<Interrupt>,
        interrupted: &tokio::sync::Notify,
    ) {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let (read, mut write) = client.into_split();
        let mut read = tokio::io::BufReader::new(read);
        let mut head = String::new();
        let mut range = None;
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if line == "\r\n" {
                head.push_str("connection: close\r\n\r\n");
                break;
            } else if let (true, Some(host)) = (lower.starts_with("host:"), host) {
                head.push_str(&format!("host: {host}\r\n"));
            } else if lower.starts_with("connection:") {
            } else {
                if lower.starts_with("range:") {
                    range = Some(line[6..].trim().to_string());
                }
                head.push_str(&line);
            }
        }
        ranges.lock().unwrap().push(range);
        let up = tokio::net::TcpStream::connect(upstream).await.unwrap();
        let mut up = tokio::io::BufReader::new(up);
        up.get_mut().write_all(head.as_bytes()).await.unwrap();
        let Some(interrupt) = interrupt else {
            let _ = tokio::io::copy_buf(&mut up, &mut write).await;
            let _ = write.shutdown().await;
            return;
        };
        // The answer's head, whole; then `n` bytes of its body.
        loop {
            let mut line = Vec::new();
            if up.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                return;
            }
            write.write_all(&line).await.unwrap();
            if line == b"\r\n" {
                break;
            }
        }
        let (Interrupt::Cut(n) | Interrupt::Stall(n)) = interrupt;
        let _ = tokio::io::copy(&mut (&mut up).take(n), &mut write).await;
        write.flush().await.unwrap();
        interrupted.notify_one();
        match interrupt {
            Interrupt::Cut(_) => {
                let _ = write.shutdown().await;
            }
            Interrupt::Stall(_) => {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Interrupts the answer to the next request.
    fn interrupt_next(&self, interrupt: Interrupt) {
        *self.next.lock().unwrap() = Some(interrupt);
    }

    /// Waits until an answer was interrupted.
    async fn interrupted(&self) {
        tokio::time::timeout(WAIT, self.interrupted.notified()).await.expect("an answer was interrupted");
    }

    fn ranges(&self) -> Vec<Option<String>> {
        self.ranges.lock().unwrap().clone()
    }
}

// ---- Cloud deployments through the core's deployment engine ----

/// The core's policy for cloud deployments: the shipped `greengrass-core-deployments.json`
/// (deployment jobs and shadow, fleet status, the Greengrass data plane) and a connection.
fn cloud_deployments_policy() -> String {
    let shipped = include_str!("../../cloud/provision/policies/greengrass-core-deployments.json")
        .replace("{{partition}}", "aws")
        .replace("{{region}}", "us-east-1")
        .replace("{{accountId}}", "000000000000");
    let mut policy: Value = serde_json::from_str(&shipped).expect("the shipped policy is JSON");
    policy["Statement"].as_array_mut().unwrap().push(json!({"Effect": "Allow", "Action": "iot:Connect",
        "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}));
    policy.to_string()
}

/// A site whose core takes cloud deployments, with the local cloud running.
async fn deploying_site() -> Site {
    let mut site = Site::new(THING);
    site.start_cloud(&cloud_deployments_policy()).await;
    site.cloud_deployments = true;
    site
}

/// `com.example.Hello` at `version` in the cloud: its artifact in S3, a Run that copies it into
/// its work directory and sleeps (or `lifecycle` instead).
async fn publish_hello(local: &local_cloud::server::LocalCloud, version: &str, lifecycle: Option<Value>) {
    let key = format!("{GG_COMPONENT}/{version}/hello.bin");
    if local.s3.objects().create_bucket(GG_BUCKET, None).is_err() {
        // Made by an earlier version.
    }
    local.s3.objects().put_bytes(GG_BUCKET, &key, gg_artifact().into(), Default::default()).await.expect("PutObject");
    let lifecycle =
        lifecycle.unwrap_or_else(|| json!({"Run": "cp {artifacts:path}/hello.bin ./copy && exec sleep 600"}));
    let recipe = json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": GG_COMPONENT, "ComponentVersion": version,
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": lifecycle,
            "Artifacts": [{"URI": format!("s3://{GG_BUCKET}/{key}")}]}]});
    local.greengrass.components.create(recipe.to_string().as_bytes(), Default::default(), None).expect("published");
}

/// CreateDeployment of `com.example.Hello` at `version` to `target_arn`, in process.
fn deploy_hello(
    local: &local_cloud::server::LocalCloud,
    target_arn: &str,
    version: &str,
) -> local_cloud::greengrass::deployments::Created {
    let request: cloud_api::greengrass::CreateDeploymentRequest = serde_json::from_value(json!({
        "targetArn": target_arn, "components": {GG_COMPONENT: {"componentVersion": version}}
    }))
    .unwrap();
    local.deployments.create(request).expect("CreateDeployment")
}

/// Waits until the job execution of `job_id` on the core is terminal; returns it.
async fn job_outcome(local: &local_cloud::server::LocalCloud, job_id: &str) -> cloud_api::jobs::Execution {
    site_testkit::wait_until(
        "the deployment job to end on the core",
        async || local.jobs.describe_execution(job_id, THING).ok(),
        |e| e.as_ref().is_some_and(|e| e.status.is_terminal()),
        |e| format!("{e:?}"),
    )
    .await
    .expect("an execution")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thing_group_deployment_reaches_a_core_that_starts_empty_and_a_new_revision_replaces_it() {
    use cloud_api::greengrass::{CoreDevice, FleetStatus, Trigger};
    use cloud_api::jobs::JobExecutionStatus;
    use device_sim::core::ComponentState;

    let mut site = deploying_site().await;
    site.fleet_status = Some(std::time::Duration::from_secs(3600));
    let local = site.cloud().local();
    publish_hello(local, "1.0.0", None).await;
    local.registry.create_thing_group("pumps", None, None, Default::default()).unwrap();
    local.registry.add_thing_to_thing_group("pumps", THING).unwrap();
    let group = "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps";
    // Made while the core is not there yet: it finds the job when it first connects.
    let first = deploy_hello(local, group, "1.0.0");
    let health = format!("$aws/things/{THING}/greengrassv2/health/json");
    let mut cloud_app = site.cloud().observer(&[&health]).await;

    let core = site.start_core(&json!({})).await;
    let execution = job_outcome(local, first.iot_job_id.as_deref().unwrap()).await;
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    assert_eq!(execution.status_details["detailed-deployment-status"], "SUCCESSFUL");
    assert_eq!(core.states().get(GG_COMPONENT), Some(&ComponentState::Running));
    let root = site.core_root();
    let stored = root.join("packages/artifacts").join(GG_COMPONENT).join("1.0.0/hello.bin");
    assert_eq!(std::fs::read(&stored).unwrap(), gg_artifact(), "the artifact was downloaded whole");
    assert_eq!(std::fs::read(root.join("work").join(GG_COMPONENT).join("copy")).unwrap(), gg_artifact());
    assert!(root.join(format!("packages/recipes/{GG_COMPONENT}-1.0.0.recipe.json")).is_file());

    // Fleet status tells the cloud which deployment brought what.
    let configuration_arn = local.deployments.get(&first.deployment_id).unwrap().configuration_arn;
    let report = cloud_app
        .wait_for("the deployment's fleet status", |m| {
            m.topic == health
                && FleetStatus::parse(&m.payload).is_ok_and(|s| s.trigger == Trigger::ThingGroupDeployment)
        })
        .await;
    let report = FleetStatus::parse(&report.payload).unwrap();
    let info = report.deployment_information.clone().expect("deployment information");
    assert_eq!(info.status, "SUCCEEDED");
    assert_eq!(info.deployment_id.as_deref(), Some(first.deployment_id.as_str()));
    assert_eq!(info.fleet_configuration_arn_for_status.as_deref(), Some(configuration_arn.as_str()));
    let hello = report.components.iter().find(|c| c.component_name == GG_COMPONENT).expect("reported");
    assert!(hello.is_root && hello.fleet_config_arns == [configuration_arn.clone()], "{hello:?}");
    let mut view = CoreDevice::new(THING);
    view.apply_report(&report, 1);
    assert_eq!(view.components[GG_COMPONENT].lifecycle_state, "RUNNING");

    // A new revision while the core runs replaces the version.
    publish_hello(local, "1.1.0", None).await;
    let second = deploy_hello(local, group, "1.1.0");
    let execution = job_outcome(local, second.iot_job_id.as_deref().unwrap()).await;
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.1.0".to_owned())]);
    core.shutdown(WAIT).await;
}

/// The thing deployment's `reported` state once it names `arn` with a terminal status.
async fn shadow_outcome(local: &local_cloud::server::LocalCloud, arn: &str) -> Value {
    let shadow = site_testkit::wait_until(
        "the core to report the thing deployment",
        async || local.shadows.get(THING, Some("AWSManagedGreengrassV2Deployment")).ok(),
        |doc| {
            doc.as_ref().is_some_and(|d| {
                let reported = &d["state"]["reported"];
                reported["fleetConfigurationArnForStatus"] == arn && reported["status"] != "IN_PROGRESS"
            })
        },
        |doc| format!("{doc:?}"),
    )
    .await
    .expect("a shadow");
    shadow["state"]["reported"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thing_deployment_reaches_the_core_through_its_shadow_and_a_broken_version_rolls_back() {
    use device_sim::core::ComponentState;

    let site = deploying_site().await;
    let local = site.cloud().local();
    publish_hello(local, "1.0.0", None).await;
    // Its Run exits at once: the core must not count it as running.
    publish_hello(local, "2.0.0", Some(json!({"Run": "exit 3"}))).await;
    let thing = format!("arn:aws:iot:us-east-1:000000000000:thing/{THING}");
    let core = site.start_core(&json!({})).await;

    let first = deploy_hello(local, &thing, "1.0.0");
    let arn = local.deployments.get(&first.deployment_id).unwrap().configuration_arn;
    let reported = shadow_outcome(local, &arn).await;
    assert_eq!(reported["status"], "SUCCEEDED", "{reported}");
    assert_eq!(reported["statusDetails"]["detailedStatus"], "SUCCESSFUL");
    assert_eq!(core.states().get(GG_COMPONENT), Some(&ComponentState::Running));

    // A version that cannot run: the core goes back to what ran, and the cloud learns why.
    let broken = deploy_hello(local, &thing, "2.0.0");
    let arn = local.deployments.get(&broken.deployment_id).unwrap().configuration_arn;
    let reported = shadow_outcome(local, &arn).await;
    assert_eq!(reported["status"], "FAILED", "{reported}");
    assert_eq!(reported["statusDetails"]["detailedStatus"], "FAILED_ROLLBACK_COMPLETE");
    let cause = reported["statusDetails"]["failureCause"].as_str().unwrap();
    assert!(cause.contains(GG_COMPONENT) && cause.contains("BROKEN"), "{cause}");
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.0.0".to_owned())]);
    assert_eq!(core.states().get(GG_COMPONENT), Some(&ComponentState::Running));
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_artifact_that_does_not_match_its_digest_fails_the_deployment_before_anything_stops() {
    use cloud_api::jobs::JobExecutionStatus;

    let site = deploying_site().await;
    let local = site.cloud().local();
    publish_hello(local, "1.0.0", None).await;
    publish_hello(local, "1.1.0", None).await;
    // The object changes after the version was published with its digest.
    let key = format!("{GG_COMPONENT}/1.1.0/hello.bin");
    local.s3.objects().put_bytes(GG_BUCKET, &key, b"tampered".to_vec().into(), Default::default()).await.unwrap();
    let (group, core) = core_in_pumps_running_hello(&site).await;
    let mut states = core.subscribe();

    let second = deploy_hello(local, group, "1.1.0");
    let execution = job_outcome(local, second.iot_job_id.as_deref().unwrap()).await;
    assert_eq!(execution.status, JobExecutionStatus::Failed, "{execution:?}");
    assert_eq!(execution.status_details["detailed-deployment-status"], "FAILED_NO_STATE_CHANGE");
    assert!(execution.status_details["deployment-error-stack"].contains("ARTIFACT_CHECKSUM_MISMATCH"), "{execution:?}");
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.0.0".to_owned())]);
    assert_eq!(core.states().get(GG_COMPONENT), Some(&device_sim::core::ComponentState::Running));
    while let Ok(event) = states.try_recv() {
        assert_ne!(event.component, GG_COMPONENT, "the running component was not touched: {event:?}");
    }
    let stored = site.core_root().join("packages/artifacts").join(GG_COMPONENT).join("1.1.0/hello.bin");
    assert!(!stored.exists(), "nothing that failed its digest is left in the store");
    core.shutdown(WAIT).await;
}

/// Puts the core's thing in the group `pumps`, starts the core and deploys Hello 1.0.0 (published
/// before) to the group; the group's ARN and the core, Hello RUNNING.
async fn core_in_pumps_running_hello(site: &Site) -> (&'static str, Core) {
    let local = site.cloud().local();
    local.registry.create_thing_group("pumps", None, None, Default::default()).unwrap();
    local.registry.add_thing_to_thing_group("pumps", THING).unwrap();
    let group = "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps";
    let core = site.start_core(&json!({})).await;
    let first = deploy_hello(local, group, "1.0.0");
    let execution = job_outcome(local, first.iot_job_id.as_deref().unwrap()).await;
    assert_eq!(execution.status, cloud_api::jobs::JobExecutionStatus::Succeeded, "{execution:?}");
    site.wait_running(&core, GG_COMPONENT).await;
    (group, core)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_killed_mid_deployment_restarts_on_the_last_whole_set_and_finishes_the_deployment() {
    use cloud_api::jobs::JobExecutionStatus;

    let site = deploying_site().await;
    let local = site.cloud().local();
    let go = site.path().join("go");
    let started = site.path().join("install-started");
    publish_hello(local, "1.0.0", None).await;
    let slow_install = format!("touch {}; while [ ! -e {} ]; do sleep 0.05; done", started.display(), go.display());
    publish_hello(local, "1.1.0", Some(json!({"Install": slow_install, "Run": "exec sleep 600"}))).await;
    let (group, core) = core_in_pumps_running_hello(&site).await;

    // A restart brings back what the cloud deployed, with no deployment to repeat.
    core.shutdown(WAIT).await;
    let core = site.start_core(&json!({})).await;
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.0.0".to_owned())], "restored from what was kept");
    site.wait_running(&core, GG_COMPONENT).await;

    // Killed while the new version installs: the old one is stopped, the new one not whole.
    let second = deploy_hello(local, group, "1.1.0");
    let job = second.iot_job_id.clone().unwrap();
    site_testkit::wait_until(
        "the new version's Install to start",
        async || started.exists(),
        |s| *s,
        |s| format!("{s}"),
    )
    .await;
    drop(core);
    assert_eq!(local.jobs.describe_execution(&job, THING).unwrap().status, JobExecutionStatus::InProgress);

    // Back on the last whole set; the cloud hands the unfinished job over again and it completes.
    std::fs::write(&go, b"").unwrap();
    let core = site.start_core(&json!({})).await;
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.0.0".to_owned())], "the last whole set");
    let execution = job_outcome(local, &job).await;
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.1.0".to_owned())]);
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_killed_mid_download_keeps_the_old_set_and_resumes_the_download_with_range_after_a_restart() {
    use cloud_api::jobs::JobExecutionStatus;
    use device_sim::core::artifact_download::partial_path;

    // S3's presigned URLs lead through a proxy in front of the cloud's HTTP endpoint.
    let mut proxy = Proxy::bind().await;
    let mut site = Site::new(THING);
    let public = format!("http://{}", proxy.addr);
    site.start_cloud_with(&cloud_deployments_policy(), |c| c.public_http_url = Some(public)).await;
    site.cloud_deployments = true;
    proxy.serve(site.cloud().http_addr().to_string(), None);
    let local = site.cloud().local();
    publish_hello(local, "1.0.0", None).await;
    publish_hello(local, "1.1.0", None).await;
    let (group, core) = core_in_pumps_running_hello(&site).await;

    // The next artifact's answer stalls after 100 000 bytes; the core is killed there.
    let at = 100_000;
    proxy.interrupt_next(Interrupt::Stall(at));
    let job = deploy_hello(local, group, "1.1.0").iot_job_id.unwrap();
    proxy.interrupted().await;
    let target = site.core_root().join("packages/artifacts").join(GG_COMPONENT).join("1.1.0/hello.bin");
    let partial = partial_path(&target);
    site_testkit::wait_until(
        "the stalled download's bytes in the partial file",
        async || std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0),
        |len| *len == at,
        |len| format!("{len} bytes"),
    )
    .await;
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.0.0".to_owned())], "nothing stops for a download");
    assert_eq!(core.states().get(GG_COMPONENT), Some(&device_sim::core::ComponentState::Running));
    drop(core);
    assert_eq!(local.jobs.describe_execution(&job, THING).unwrap().status, JobExecutionStatus::InProgress);

    // Restarted: the old set runs, the cloud hands the job over again, and the download goes on
    // from where it stopped.
    let core = site.start_core(&json!({})).await;
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.0.0".to_owned())], "the last whole set");
    let execution = job_outcome(local, &job).await;
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.1.0".to_owned())]);
    assert_eq!(proxy.ranges().last(), Some(&Some(format!("bytes={at}-"))), "resumed with Range: {:?}", proxy.ranges());
    let size = gg_artifact().len() as u64;
    assert_eq!(core.deployments().downloaded(&job), Some(size - at), "only the rest was downloaded");
    assert_eq!(std::fs::read(&target).unwrap(), gg_artifact(), "the pieces make the artifact");
    assert!(!partial.exists());
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_deployment_reaches_a_core_added_to_the_group_after_it_was_made() {
    use cloud_api::jobs::JobExecutionStatus;

    let site = deploying_site().await;
    let local = site.cloud().local();
    publish_hello(local, "1.0.0", None).await;
    local.registry.create_thing_group("pumps", None, None, Default::default()).unwrap();
    let made = deploy_hello(local, "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps", "1.0.0");
    let core = site.start_core(&json!({})).await;
    assert!(core.components().is_empty(), "not in the group yet");

    // The deployment's job is continuous: joining the group brings it to the core.
    local.registry.add_thing_to_thing_group("pumps", THING).unwrap();
    let execution = job_outcome(local, made.iot_job_id.as_deref().unwrap()).await;
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.0.0".to_owned())]);
    core.shutdown(WAIT).await;
}

// ---- Onboarding by claim ----

/// A fleet-provisioning template that registers `site-{SerialNumber}` in the group `pumps` with
/// the core's deployments policy, and a claim for it: the claim's certificate and key files.
fn claim_for_sites(
    local: &local_cloud::server::LocalCloud,
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    local.registry.create_policy("GreengrassCoreDeployments", &cloud_deployments_policy()).unwrap();
    let body = json!({
        "Parameters": {"SerialNumber": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": {"Fn::Join": ["", ["site-", {"Ref": "SerialNumber"}]]}, "ThingGroups": ["pumps"]}},
            "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {
                "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}},
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "GreengrassCoreDeployments"}}
        },
        "DeviceConfiguration": {"role": "pump-station"}
    });
    let template: local_cloud::provisioning::CreateTemplate = serde_json::from_value(json!({
        "templateName": "PumpSites", "templateBody": body.to_string(), "enabled": true,
        "provisioningRoleArn": "arn:aws:iam::000000000000:role/PumpSitesProvisioning"
    }))
    .unwrap();
    local.provisioning.create_template(template).unwrap();
    let (certificate, keys, _expires) = local.provisioning.create_claim("PumpSites").unwrap();
    let (cert, key) = (dir.join("claim.pem"), dir.join("claim.key"));
    std::fs::write(&cert, certificate.pem).unwrap();
    std::fs::write(&key, keys.private_key_pem).unwrap();
    (cert, key)
}

/// `device-sim core` onboarding by claim with `claim` at `root`, taking cloud deployments; with
/// `token`, its key is kept in that SoftHSM2 token (`--pkcs11`).
fn claimed_core(
    site: &Site,
    root: &std::path::Path,
    claim: &std::path::Path,
    token: Option<&SoftToken>,
) -> std::process::Child {
    let endpoints = site.path().join("claimed-endpoints.json");
    std::fs::write(&endpoints, serde_json::to_vec(&site.cloud().core_options().endpoints).unwrap()).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_device-sim"));
    command.args(["core", "--root", root.to_str().unwrap(), "--cloud", endpoints.to_str().unwrap()]).args([
        "--provision-by-claim",
        claim.to_str().unwrap(),
        "--cloud-deployments",
    ]);
    if let Some(token) = token {
        let config = site.path().join("pkcs11.json");
        token.write_config(&config).unwrap();
        command.arg("--pkcs11").arg(&config).env("SOFTHSM2_CONF", &token.conf);
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(site.path().join("claimed-core.log")).unwrap();
    command.stdout(std::process::Stdio::null()).stderr(log).spawn().expect("the core starts")
}

fn stop(mut core: std::process::Child) {
    let pid = rustix::process::Pid::from_raw(core.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert_eq!(core.wait().unwrap().code(), Some(0), "the core stops cleanly");
}

/// A site whose core onboards by claim (its key in `token`, else in a file) and takes its
/// group's deployment; then starts again with the identity it kept and takes the next one.
/// Returns the identity.
async fn onboard_by_claim_and_deploy(site: &Site, token: Option<&SoftToken>) -> device_sim::core::claim::Identity {
    use cloud_api::jobs::JobExecutionStatus;

    let local = site.cloud().local();
    local.registry.create_thing_group("pumps", None, None, Default::default()).unwrap();
    let (claim_cert, claim_key) = claim_for_sites(local, site.path());
    publish_hello(local, "1.0.0", None).await;
    publish_hello(local, "1.1.0", None).await;
    let group = "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps";
    let first = deploy_hello(local, group, "1.0.0").iot_job_id.unwrap();
    let claim = site.path().join("claim.yaml");
    std::fs::write(
        &claim,
        format!(
            "provisioningTemplate: PumpSites\nclaimCertificatePath: {}\nclaimCertificatePrivateKeyPath: {}\n\
             templateParameters:\n  SerialNumber: \"0042\"\n",
            claim_cert.display(),
            claim_key.display()
        ),
    )
    .unwrap();
    let root = site.path().join("claimed");
    let certificates_before = local.registry.list_certificates().len();

    // The first start onboards: a new thing in the group, whose continuous job reaches it.
    let core = claimed_core(site, &root, &claim, token);
    let outcome = |job: String| {
        site_testkit::wait_until(
            "the deployment job to end on the onboarded core",
            async move || local.jobs.describe_execution(&job, "site-0042").ok(),
            |e| e.as_ref().is_some_and(|e| e.status.is_terminal()),
            |e| format!("{e:?}"),
        )
    };
    let execution = outcome(first.clone()).await.unwrap();
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    let identity = device_sim::core::claim::provisioned(&root).unwrap().expect("the identity is kept");
    assert_eq!(identity.thing_name, "site-0042");
    assert_eq!(identity.device_configuration["role"], "pump-station");
    let principals = local.registry.list_thing_principals("site-0042").unwrap();
    assert_eq!(principals.len(), 1, "{principals:?}");
    assert!(principals[0].ends_with(&identity.certificate_id));
    assert!(root.join("work").join(GG_COMPONENT).join("copy").is_file(), "Hello ran");
    stop(core);

    // The next start uses what was kept: no new certificate, and the group's next deployment
    // reaches the same thing.
    let core = claimed_core(site, &root, &claim, token);
    let second = deploy_hello(local, group, "1.1.0").iot_job_id.unwrap();
    let execution = outcome(second).await.unwrap();
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    assert_eq!(local.registry.list_certificates().len(), certificates_before + 1, "the claim was used once");
    assert_eq!(device_sim::core::claim::provisioned(&root).unwrap().as_ref(), Some(&identity));
    stop(core);
    identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_onboards_by_claim_once_with_a_key_made_on_the_device_and_takes_its_groups_deployments() {
    let site = deploying_site().await;
    let identity = onboard_by_claim_and_deploy(&site, None).await;
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&identity.key_file), mode(identity.key_file.parent().unwrap())), (0o600, 0o700));
}

/// The whole life above with the key in a PKCS#11 token: the CSR, the MQTT connection and the
/// Greengrass data plane's mTLS are all signed in the token, and no key file is ever written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_with_its_key_in_a_pkcs11_token_onboards_by_claim_and_works_over_mtls() {
    let site = deploying_site().await;
    let token = SoftToken::new(&site.path().join("softhsm"), "core").unwrap_or_else(|e| panic!("{e}"));
    let identity = onboard_by_claim_and_deploy(&site, Some(&token)).await;
    assert_eq!(identity.key_file.to_str(), Some("pkcs11:object=privKey;type=private"));
    let identity_dir = device_sim::core::claim::identity_dir(&site.path().join("claimed"));
    let files: Vec<_> = std::fs::read_dir(identity_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!files.iter().any(|f| f.to_string_lossy().ends_with(".key")), "no key file: {files:?}");
}

/// A core's disk dies (its root is wiped). The operator replaces the device through the AWS SDK:
/// `provision::replace_device` revokes its certificate and keeps the thing, and
/// `revise_group_deployments` makes a new revision of its group's deployment. A new device
/// onboards with the same claim and serial number, so under the same thing, and converges to the
/// group's deployment. Lost: only what lived on the old disk (its logs, its kept deployment
/// state); the thing, its group, its deployments and the cloud's records stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_core_whose_disk_died_is_replaced_under_its_thing_and_converges_to_its_groups_deployment() {
    use cloud_api::jobs::JobExecutionStatus;

    let site = deploying_site().await;
    let old = onboard_by_claim_and_deploy(&site, None).await;
    let local = site.cloud().local();
    let root = site.path().join("claimed");
    assert!(root.join("work").join(GG_COMPONENT).join("copy").is_file());
    std::fs::remove_dir_all(&root).unwrap();

    let options = provision::ClientOptions::for_local_cloud(&site.cloud().core_options().endpoints).unwrap();
    let (iot, gg) = (provision::iot_client(&options).await, provision::greengrass_client(&options).await);
    let changes = provision::replace_device(&iot, "site-0042").await.unwrap();
    assert!(
        changes.iter().any(|c| c.to_string() == format!("revoked certificate {}", old.certificate_id)),
        "{changes:?}"
    );
    assert_eq!(local.registry.describe_certificate(&old.certificate_id).unwrap().status, CertificateStatus::Revoked);
    let revised = provision::deploy::revise_group_deployments(&iot, &gg, "site-0042").await.unwrap();
    assert_eq!(revised.len(), 1, "the group's one deployment: {revised:?}");
    let job = revised[0].iot_job_id.clone().expect("the revision's job");

    // The replacement: the same claim and serial, a fresh disk.
    let claim = site.path().join("claim.yaml");
    let core = claimed_core(&site, &root, &claim, None);
    let execution = site_testkit::wait_until(
        "the revised deployment to end on the replacement",
        async || local.jobs.describe_execution(&job, "site-0042").ok(),
        |e| e.as_ref().is_some_and(|e| e.status.is_terminal()),
        |e| format!("{e:?}"),
    )
    .await
    .unwrap();
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    let new = device_sim::core::claim::provisioned(&root).unwrap().expect("the replacement's identity");
    assert_eq!(new.thing_name, "site-0042", "the same thing");
    assert_ne!(new.certificate_id, old.certificate_id, "a new certificate, made from a key on the new device");
    let principals = local.registry.list_thing_principals("site-0042").unwrap();
    assert_eq!(principals.len(), 1, "only the replacement's certificate: {principals:?}");
    assert!(principals[0].ends_with(&new.certificate_id));
    assert!(root.join("work").join(GG_COMPONENT).join("copy").is_file(), "the group's component runs again");
    stop(core);
}

// ---- The core updates itself: a nucleus deployment through the launcher ----

/// Publishes nucleus `version` as AWS would (a public component), its core binary `binary`
/// (here a script that runs the real core, or one that fails) as the artifact `device-sim`.
async fn publish_nucleus(local: &local_cloud::server::LocalCloud, version: &str, binary: &str) {
    let key = format!("nucleus/{version}/device-sim");
    let _ = local.s3.objects().create_bucket(GG_BUCKET, None);
    local.s3.objects().put_bytes(GG_BUCKET, &key, binary.as_bytes().to_vec().into(), Default::default()).await.unwrap();
    let recipe = json!({"RecipeFormatVersion": "2020-01-25", "ComponentName": "aws.greengrass.Nucleus",
        "ComponentVersion": version, "ComponentType": "aws.greengrass.nucleus",
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {},
            "Artifacts": [{"URI": format!("s3://{GG_BUCKET}/{key}"), "Permission": {"Execute": "OWNER"}}]}]});
    local.greengrass.components.create_public(recipe.to_string().as_bytes()).expect("published as AWS");
}

/// CreateDeployment of the nucleus at `nucleus` and Hello 1.0.0 to the group, in process.
fn deploy_nucleus(local: &local_cloud::server::LocalCloud, group: &str, nucleus: &str) -> String {
    let request: cloud_api::greengrass::CreateDeploymentRequest = serde_json::from_value(json!({
        "targetArn": group, "components": {
            "aws.greengrass.Nucleus": {"componentVersion": nucleus},
            GG_COMPONENT: {"componentVersion": "1.0.0"}}
    }))
    .unwrap();
    local.deployments.create(request).expect("CreateDeployment").iot_job_id.expect("a job")
}

/// The version `link` of the core's alts directory points at.
fn alts_link(root: &std::path::Path, link: &str) -> Option<String> {
    std::fs::read_link(root.join("alts").join(link)).ok().and_then(|p| p.file_name()?.to_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_core_on_probation_carries_its_update_on_without_notifying_components_again() {
    use cloud_api::ipc::model::{
        ComponentUpdatePolicyEvents, DeferComponentUpdateRequest, SubscribeToComponentUpdatesRequest,
    };
    use cloud_api::jobs::JobExecutionStatus;
    use device_sim::launcher::alts::LinkName;
    use device_sim::launcher::store::AltsDir;

    // The launcher has just started this core's version as `current`, the previous one kept as
    // `old`: the core is on probation, and the deployment that brought it is handed over again.
    let site = deploying_site().await;
    let local = site.cloud().local();
    let running = device_sim::core::runtime::CoreOptions::default_nucleus_version().to_string();
    let alts = AltsDir::new(&site.core_root());
    let binary = site.path().join("core-binary");
    std::fs::write(&binary, "#!/bin/sh\n").unwrap();
    for (link, version) in [(LinkName::Current, running.as_str()), (LinkName::Old, "2.13.0")] {
        alts.install(version, &binary).unwrap();
        alts.point(link, version).unwrap();
    }
    publish_hello(local, "1.0.0", None).await;
    publish_nucleus(local, &running, "#!/bin/sh\n").await;
    local.registry.create_thing_group("pumps", None, None, Default::default()).unwrap();
    local.registry.add_thing_to_thing_group("pumps", THING).unwrap();
    let core = site.start_core(&json!({})).await;

    // A component that would hold any update for ten minutes.
    let client = ipc(&core).await;
    let mut updates = client.subscribe_to_component_updates(&SubscribeToComponentUpdatesRequest {}).await.unwrap();
    let notices = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = notices.clone();
    tokio::spawn(async move {
        while let Some(Ok(ComponentUpdatePolicyEvents::PreUpdate(pre))) = updates.next_event().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let hold = DeferComponentUpdateRequest {
                deployment_id: pre.deployment_id,
                message: Some("busy".into()),
                recheck_after_ms: Some(600_000),
            };
            let _ = client.defer_component_update(&hold).await;
        }
    });

    let job = deploy_nucleus(local, "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps", &running);
    let execution = job_outcome(local, &job).await;
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    assert_eq!(notices.load(std::sync::atomic::Ordering::SeqCst), 0, "the core that staged it notified already");
    assert_eq!(core.components(), [(GG_COMPONENT.to_owned(), "1.0.0".to_owned())]);
    assert_eq!(alts_link(&site.core_root(), "old"), None, "the new core proved itself");
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_updates_itself_through_the_launcher_and_goes_back_when_the_new_one_does_not_come_up() {
    use cloud_api::jobs::JobExecutionStatus;

    let site = deploying_site().await;
    let local = site.cloud().local();
    publish_hello(local, "1.0.0", None).await;
    // 2.15.0 is the same core under a new version; 2.16.0 cannot start.
    let real = env!("CARGO_BIN_EXE_device-sim");
    publish_nucleus(local, "2.15.0", &format!("#!/bin/sh\nexec {real} \"$@\"\n")).await;
    publish_nucleus(local, "2.16.0", "#!/bin/sh\necho 'this core cannot start' >&2\nexit 1\n").await;
    local.registry.create_thing_group("pumps", None, None, Default::default()).unwrap();
    local.registry.add_thing_to_thing_group("pumps", THING).unwrap();
    let group = "arn:aws:iot:us-east-1:000000000000:thinggroup/pumps";

    let options = site.cloud().core_options();
    let key = options.key.key_ref().to_path();
    let endpoints = site.path().join("endpoints.json");
    std::fs::write(&endpoints, serde_json::to_vec(&options.endpoints).unwrap()).unwrap();
    let root = site.core_root();
    let mut launcher = std::process::Command::new(real)
        .args(["launcher", "--root", root.to_str().unwrap(), "--health-deadline-secs", "20", "--"])
        .args(["--thing", THING, "--cloud", endpoints.to_str().unwrap()])
        .args(["--cert", options.cert_file.to_str().unwrap(), "--key", key.to_str().unwrap()])
        .args(["--cloud-deployments", "--fleet-status-interval-secs", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(site.path().join("launcher.log")).unwrap())
        .spawn()
        .expect("the launcher starts");

    // The update: the core stages 2.15.0, restarts into it, and the new core finishes the job.
    let job = deploy_nucleus(local, group, "2.15.0");
    let execution = job_outcome(local, &job).await;
    assert_eq!(execution.status, JobExecutionStatus::Succeeded, "{execution:?}");
    assert_eq!(alts_link(&root, "current").as_deref(), Some("2.15.0"));
    assert_eq!(alts_link(&root, "old"), None, "the new core proved itself");
    assert!(root.join("work").join(GG_COMPONENT).join("copy").is_file(), "the new core ran the component");

    // A nucleus that does not come up: the launcher goes back and the job says so.
    let job = deploy_nucleus(local, group, "2.16.0");
    let execution = job_outcome(local, &job).await;
    assert_eq!(execution.status, JobExecutionStatus::Failed, "{execution:?}");
    assert_eq!(execution.status_details["detailed-deployment-status"], "FAILED_ROLLBACK_COMPLETE");
    let cause = &execution.status_details["deployment-failure-cause"];
    assert!(cause.contains("2.16.0") && cause.contains("2.15.0"), "{cause}");
    assert_eq!(alts_link(&root, "current").as_deref(), Some("2.15.0"));
    assert_eq!(alts_link(&root, "broken"), None, "the rollback was reported");

    let pid = rustix::process::Pid::from_raw(launcher.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let status = launcher.wait().unwrap();
    assert_eq!(status.code(), Some(0), "the launcher stops with its core");
}

// --- The token exchange service.

const TES_ALIAS: &str = "CoreTokenExchangeRoleAlias";

/// The core's token exchange role (trusting the credentials provider) and its alias
/// [`TES_ALIAS`]; with `uploads`, the role may put objects under its thing's prefix of `uploads`.
fn tes_role_alias(local: &local_cloud::server::LocalCloud, uploads: bool) {
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"credentials.iot.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    let role = local.iam.create_role("CoreTokenExchangeRole", None, trust, None, None).unwrap();
    if uploads {
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::uploads/${credentials-iot:ThingName}/*"}]}"#;
        local.iam.put_role_policy("CoreTokenExchangeRole", "uploads", policy).unwrap();
    }
    local.iot_credentials.create(TES_ALIAS, &role.arn, None).unwrap();
}

/// A recipe whose Run writes the two credential variables it got into `tes.env` in its work
/// directory, then sleeps; with `tes` it depends on the token exchange service.
fn env_writer_recipe(component: &str, tes: bool) -> String {
    let mut recipe = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": component,
        "ComponentVersion": "1.0.0",
        "Manifests": [{"Lifecycle": {"Run":
            "printf 'uri=%s\\ntoken=%s\\n' \"$AWS_CONTAINER_CREDENTIALS_FULL_URI\" \"$AWS_CONTAINER_AUTHORIZATION_TOKEN\" > tes.env && exec sleep 600"
        }}]
    });
    if tes {
        recipe["ComponentDependencies"] = json!({"aws.greengrass.TokenExchangeService": {
            "VersionRequirement": ">=2.0.0 <3.0.0", "DependencyType": "HARD"
        }});
    }
    recipe.to_string()
}

/// `name=value` lines of the `tes.env` that `component` wrote.
async fn tes_env(site: &Site, core: &Core, component: &str) -> std::collections::HashMap<String, String> {
    site.wait_running(core, component).await;
    let file = site.core_root().join("work").join(component).join("tes.env");
    let text = site_testkit::wait_until(
        format!("{} written", file.display()),
        async || std::fs::read_to_string(&file).unwrap_or_default(),
        |t| t.lines().count() == 2,
        |t| format!("{t:?}"),
    )
    .await;
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_exchange_service_vends_cached_role_credentials_to_components_that_depend_on_it() {
    let mut site = Site::new(THING);
    site.deploy("com.example.WithTes", "1.0.0", &env_writer_recipe("com.example.WithTes", true));
    site.deploy("com.example.WithoutTes", "1.0.0", &env_writer_recipe("com.example.WithoutTes", false));
    // The core's policy allows it to assume the role through its alias, and nothing else matters here.
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
        {"Effect": "Allow", "Action": "iot:AssumeRoleWithCertificate", "Resource": format!("arn:aws:iot:*:*:rolealias/{TES_ALIAS}")}
    ]});
    site.start_cloud(&policy.to_string()).await;
    let local = site.cloud().local();
    tes_role_alias(local, true);

    let core = site.start_core(&json!({"aws.greengrass.Nucleus": {"MERGE": {"iotRoleAlias": TES_ALIAS}}})).await;
    let with = tes_env(&site, &core, "com.example.WithTes").await;
    let without = tes_env(&site, &core, "com.example.WithoutTes").await;
    assert_eq!(with["uri"], core.token_exchange().uri());
    assert!(with["uri"].starts_with("http://127.0.0.1:") && with["uri"].ends_with("/2016-11-01/credentialprovider/"));
    assert!(!with["token"].is_empty());
    assert_eq!(without["uri"], "", "only dependents get the URL");

    // A component's token gets the role's credentials, in the SDKs' container format.
    let (status, body) = site_testkit::http_request(&with["uri"], "GET", Some(&with["token"])).await;
    assert_eq!(status, 200, "{body}");
    let creds: Value = serde_json::from_str(&body).unwrap();
    for field in ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"] {
        assert!(creds[field].as_str().is_some_and(|s| !s.is_empty()), "{field} in {creds}");
    }
    let session = local.iam.principal(creds["AccessKeyId"].as_str().unwrap(), creds["Token"].as_str());
    assert!(session.is_ok(), "the cloud knows the session: {session:?}");
    // Cached: the same credentials again, without asking the provider.
    let (status, again) = site_testkit::http_request(&with["uri"], "GET", Some(&without["token"])).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(serde_json::from_str::<Value>(&again).unwrap()["AccessKeyId"], creds["AccessKeyId"]);
    assert_eq!(core.token_exchange().provider_requests(), 1);

    // No token or a wrong one, another method, another path: refused as the nucleus refuses them.
    assert_eq!(site_testkit::http_request(&with["uri"], "GET", None).await.0, 403);
    assert_eq!(site_testkit::http_request(&with["uri"], "GET", Some("not-a-token")).await.0, 403);
    assert_eq!(site_testkit::http_request(&with["uri"], "POST", Some(&with["token"])).await.0, 405);
    let elsewhere = with["uri"].replace("/2016-11-01/credentialprovider/", "/latest/meta-data/");
    assert_eq!(site_testkit::http_request(&elsewhere, "GET", Some(&with["token"])).await.0, 400);
    assert_eq!(core.token_exchange().provider_requests(), 1);
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_exchange_service_passes_on_a_refusal_and_keeps_it_instead_of_asking_again() {
    let mut site = Site::new(THING);
    site.deploy("com.example.WithTes", "1.0.0", &env_writer_recipe("com.example.WithTes", true));
    // The core may connect but not assume any role.
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}
    ]});
    site.start_cloud(&policy.to_string()).await;
    let local = site.cloud().local();
    tes_role_alias(local, false);

    let core = site.start_core(&json!({"aws.greengrass.Nucleus": {"MERGE": {"iotRoleAlias": TES_ALIAS}}})).await;
    let env = tes_env(&site, &core, "com.example.WithTes").await;
    let (status, body) = site_testkit::http_request(&env["uri"], "GET", Some(&env["token"])).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("TES responded with status code: 403"), "{body}");
    let (status, _) = site_testkit::http_request(&env["uri"], "GET", Some(&env["token"])).await;
    assert_eq!(status, 403);
    assert_eq!(core.token_exchange().provider_requests(), 1, "a 4xx is kept for two minutes");
    core.shutdown(WAIT).await;
}
