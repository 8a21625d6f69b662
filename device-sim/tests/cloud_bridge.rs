//! The simulated core against the local cloud: the IoT Core bridge (PublishToIoTCore,
//! SubscribeToIoTCore over the core's one MQTT connection) and shadow sync, including a cloud
//! restart, an offline start, and offline changes on both sides reconciled by the written rules.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_api::endpoints::Endpoints;
use cloud_api::ipc::model::{
    GetThingShadowRequest, PubSubMessage, PublishToIoTCoreRequest, Qos, ReceiveMode, SubscribeToIoTCoreRequest,
    SubscribeToTopicRequest, UpdateThingShadowRequest,
};
use device_sim::core::bridge::{BridgeConfig, tls_config};
use device_sim::core::runtime::{CloudOptions, Core, CoreOptions, parse_update_config};
use device_sim::recipe::DevicePlatform;
use kit::ipc::IpcClient;
use local_cloud::registry::CertificateStatus;
use local_cloud::server::{Config, LocalCloud};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::{Value, json};
use tokio::sync::mpsc;

const THING: &str = "core-1";
const COMPONENT: &str = "com.example.Sleeper";
const WAIT: Duration = Duration::from_secs(30);
const PUMP: &str = "$aws/things/core-1/shadow/name/pump";

const RECIPE: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.example.Sleeper
ComponentVersion: "1.0.0"
ComponentConfiguration:
  DefaultConfiguration:
    accessControl:
      aws.greengrass.ipc.mqttproxy:
        com.example.Sleeper:mqtt:1:
          operations: ["aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"]
          resources: ["dt/core-1/#", "cmd/core-1/#"]
      aws.greengrass.ipc.pubsub:
        com.example.Sleeper:pubsub:1:
          operations: ["aws.greengrass#SubscribeToTopic"]
          resources: ["$aws/things/core-1/shadow/name/pump/update/delta"]
      aws.greengrass.ShadowManager:
        com.example.Sleeper:shadow:1:
          operations: ["aws.greengrass#GetThingShadow", "aws.greengrass#UpdateThingShadow"]
          resources: ["$aws/things/{iot:thingName}/shadow/name/pump"]
Manifests:
  - Lifecycle:
      Run: exec sleep 600
"#;

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

const APP_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#;

struct Identity {
    cert: PathBuf,
    key: PathBuf,
    certificate_id: String,
}

struct Site {
    dir: tempfile::TempDir,
    cloud_dir: PathBuf,
    cloud: Option<LocalCloud>,
    endpoints: Endpoints,
    core_id: Identity,
    app_id: Identity,
}

fn make_identity(cloud: &LocalCloud, dir: &Path, thing: &str, policy: &str) -> Identity {
    let r = &cloud.registry;
    r.create_thing(thing, None, Default::default()).unwrap();
    let (cert, keys) = r.create_keys_and_certificate(true).unwrap();
    r.create_policy(&format!("{thing}-policy"), policy).unwrap();
    r.attach_policy(&format!("{thing}-policy"), &cert.arn).unwrap();
    r.attach_thing_principal(thing, &cert.arn).unwrap();
    let id = Identity {
        cert: dir.join(format!("{thing}.crt")),
        key: dir.join(format!("{thing}.key")),
        certificate_id: cert.id.clone(),
    };
    std::fs::write(&id.cert, cert.pem).unwrap();
    std::fs::write(&id.key, keys.private_key_pem).unwrap();
    id
}

impl Site {
    async fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let cloud_dir = dir.path().join("cloud");
        let cloud = LocalCloud::start(Config::ephemeral(&cloud_dir)).await.unwrap();
        let core_id = make_identity(&cloud, dir.path(), THING, CORE_POLICY);
        let app_id = make_identity(&cloud, dir.path(), "operator-app", APP_POLICY);
        let recipes = dir.path().join("recipes");
        std::fs::create_dir_all(&recipes).unwrap();
        std::fs::write(recipes.join("sleeper.yaml"), RECIPE).unwrap();
        std::fs::create_dir_all(dir.path().join("artifacts")).unwrap();
        let endpoints = cloud.endpoints.clone();
        Site { dir, cloud_dir, cloud: Some(cloud), endpoints, core_id, app_id }
    }

    fn cloud(&self) -> &LocalCloud {
        self.cloud.as_ref().expect("cloud running")
    }

    async fn stop_cloud(&mut self) {
        self.cloud.take().expect("cloud running").shutdown().await;
    }

    /// Starts the cloud again on the same ports and data directory.
    async fn restart_cloud(&mut self) {
        let mut config = Config::new(&self.cloud_dir);
        config.mqtt_addr = self.endpoints.mqtt.parse().unwrap();
        config.http_addr = self.endpoints.http.trim_start_matches("http://").parse().unwrap();
        self.cloud = Some(LocalCloud::start(config).await.unwrap());
    }

    async fn start_core(&self) -> Core {
        let update = parse_update_config(&json!({
            "aws.greengrass.ShadowManager": {"MERGE": {"synchronize": {
                "coreThing": {"classic": false, "namedShadows": ["pump"]}
            }}}
        }))
        .unwrap();
        Core::start(CoreOptions {
            root: self.dir.path().join("root"),
            thing: THING.into(),
            recipe_dir: self.dir.path().join("recipes"),
            artifact_dir: self.dir.path().join("artifacts"),
            merges: vec![format!("{COMPONENT}=1.0.0")],
            region: "us-east-1".into(),
            root_ca_path: None,
            platform: DevicePlatform::current(),
            update_config: update,
            cloud: Some(CloudOptions {
                endpoints: self.endpoints.clone(),
                cert_file: self.core_id.cert.clone(),
                key_file: self.core_id.key.clone(),
            }),
        })
        .await
        .unwrap()
    }

    /// An MQTT client of the operator's application, connected to the cloud.
    async fn app(&self, filters: &[&str]) -> AppClient {
        let bridge = BridgeConfig::new(
            self.endpoints.clone(),
            self.app_id.cert.clone(),
            self.app_id.key.clone(),
            "operator-app".into(),
        );
        let (host, port) = self.endpoints.mqtt_host_port().unwrap();
        let mut opts = MqttOptions::new("operator-app", host, port);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls_config(&bridge).unwrap())));
        let (client, mut eventloop) = AsyncClient::new(opts, 16);
        let (tx, rx) = mpsc::unbounded_channel();
        let (suback_tx, mut suback_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                match event {
                    Event::Incoming(Packet::Publish(p)) => {
                        let _ = tx.send((p.topic.clone(), serde_json::from_slice(&p.payload).unwrap_or(Value::Null)));
                    }
                    Event::Incoming(Packet::SubAck(_)) => {
                        let _ = suback_tx.send(());
                    }
                    _ => {}
                }
            }
        });
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).await.unwrap();
            tokio::time::timeout(WAIT, suback_rx.recv()).await.expect("SUBACK").unwrap();
        }
        AppClient { client, rx }
    }
}

struct AppClient {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<(String, Value)>,
}

impl AppClient {
    /// The next message matching `pred`.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((topic, doc))) if pred(&topic, &doc) => return doc,
                Ok(Some(_)) => {}
                _ => panic!("no {what} within {WAIT:?}"),
            }
        }
    }
}

async fn wait_connected(core: &Core) {
    let mut c = core.bridge().expect("bridge").connection();
    tokio::time::timeout(WAIT, c.wait_for(|up| *up)).await.expect("the bridge connects").unwrap();
}

async fn ipc(core: &Core) -> IpcClient {
    IpcClient::connect(core.socket_path(), core.tokens().issue(COMPONENT)).await.unwrap()
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
    let r = client
        .update_thing_shadow(&UpdateThingShadowRequest {
            thing_name: THING.into(),
            shadow_name: Some("pump".into()),
            payload: bytes(&doc).into(),
        })
        .await
        .unwrap();
    serde_json::from_slice(r.payload.as_bytes()).unwrap()
}

async fn get_local(client: &IpcClient) -> Value {
    let r = client
        .get_thing_shadow(&GetThingShadowRequest { thing_name: THING.into(), shadow_name: Some("pump".into()) })
        .await
        .unwrap();
    serde_json::from_slice(r.payload.as_bytes()).unwrap()
}

/// Waits until the local shadow satisfies `pred` (checked on every local `update/delta` or
/// `update/documents`… the cheapest reliable signal is the sync's own local write, so this
/// polls the local document on each IPC round trip until the deadline).
async fn wait_local(client: &IpcClient, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let doc = get_local(client).await;
        if pred(&doc) {
            return doc;
        }
        assert!(tokio::time::Instant::now() < deadline, "local shadow never showed {what}: {doc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_publish_and_subscribe_to_iot_core_through_the_cores_connection() {
    let site = Site::new().await;
    let mut app = site.app(&["dt/core-1/#"]).await;
    let core = site.start_core().await;
    wait_connected(&core).await;
    let client = ipc(&core).await;

    client
        .publish_to_iot_core(&PublishToIoTCoreRequest::new(
            "dt/core-1/telemetry",
            Qos::AtLeastOnce,
            bytes(&json!({"v": 1, "n": 1})),
        ))
        .await
        .unwrap();
    let got = app.wait_for("telemetry", |t, _| t == "dt/core-1/telemetry").await;
    assert_eq!(got, json!({"v": 1, "n": 1}));

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
    app.client.publish("cmd/core-1/speed", QoS::AtLeastOnce, false, bytes(&json!({"speedRpm": 900}))).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_desired_reaches_a_component_as_a_local_delta_and_reported_reaches_the_cloud_across_a_restart() {
    let mut site = Site::new().await;
    let mut app = site.app(&[&format!("{PUMP}/update/documents")]).await;
    let core = site.start_core().await;
    wait_connected(&core).await;
    let client = ipc(&core).await;
    let mut deltas = client
        .subscribe_to_topic(&SubscribeToTopicRequest {
            topic: format!("{PUMP}/update/delta"),
            receive_mode: Some(ReceiveMode::ReceiveAllMessages),
        })
        .await
        .unwrap();

    // The operator sets a desired speed in the cloud (as the data-plane API does).
    site.cloud()
        .shadows
        .update(THING, Some("pump"), &bytes(&json!({"state": {"desired": {"speedRpm": 1500}}})))
        .unwrap();
    let delta = tokio::time::timeout(WAIT, deltas.next_event()).await.expect("a local delta").unwrap().unwrap();
    let delta = binary_json(delta);
    assert_eq!(delta["state"]["speedRpm"], 1500, "{delta}");

    // The component reports; the cloud shadow gets it.
    update_local(&client, json!({"state": {"reported": {"speedRpm": 1500}}})).await;
    app.wait_for("reported 1500 in the cloud", |_, d| {
        d.pointer("/current/state/reported/speedRpm") == Some(&json!(1500))
    })
    .await;
    let cloud_doc = site.cloud().shadows.get(THING, Some("pump")).unwrap();
    assert_eq!(speed(&cloud_doc, "reported"), Some(1500));
    assert!(cloud_doc["state"].get("delta").is_none(), "desired and reported agree: {cloud_doc}");

    // The cloud goes away; the component keeps reporting locally.
    site.stop_cloud().await;
    let mut c = core.bridge().unwrap().connection();
    tokio::time::timeout(WAIT, c.wait_for(|up| !*up)).await.expect("the bridge notices").unwrap();
    update_local(&client, json!({"state": {"reported": {"speedRpm": 1480}}})).await;

    // Back: the offline report reaches the cloud, and new desired values flow again.
    site.restart_cloud().await;
    let mut app = site.app(&[&format!("{PUMP}/update/documents")]).await;
    wait_connected(&core).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while speed(&site.cloud().shadows.get(THING, Some("pump")).unwrap(), "reported") != Some(1480) {
        assert!(tokio::time::Instant::now() < deadline, "the offline report never reached the cloud");
        app.wait_for("a cloud shadow change", |_, _| true).await;
    }
    site.cloud()
        .shadows
        .update(THING, Some("pump"), &bytes(&json!({"state": {"desired": {"speedRpm": 1200}}})))
        .unwrap();
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
    let mut site = Site::new().await;
    let core = site.start_core().await;
    wait_connected(&core).await;
    let client = ipc(&core).await;
    update_local(
        &client,
        json!({"state": {"desired": {"speedRpm": 1000, "mode": "auto"}, "reported": {"speedRpm": 1000}}}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut app = site.app(&[&format!("{PUMP}/update/documents")]).await;
    while speed(&site.cloud().shadows.get(THING, Some("pump")).map_err(|e| e.code).unwrap_or(json!({})), "reported")
        != Some(1000)
    {
        assert!(tokio::time::Instant::now() < deadline, "first sync never happened");
        let _ = tokio::time::timeout(Duration::from_secs(1), app.wait_for("a change", |_, _| true)).await;
    }

    // The cloud goes away; locally the reported speed changes (and a desired mode too).
    site.stop_cloud().await;
    let mut c = core.bridge().unwrap().connection();
    tokio::time::timeout(WAIT, c.wait_for(|up| !*up)).await.expect("the bridge notices").unwrap();
    update_local(&client, json!({"state": {"desired": {"mode": "manual"}, "reported": {"speedRpm": 1100}}})).await;
    drop(client);
    core.shutdown(WAIT).await;

    // Meanwhile in the cloud: a new desired speed and mode, and a conflicting reported value.
    site.restart_cloud().await;
    site.cloud()
        .shadows
        .update(
            THING,
            Some("pump"),
            &bytes(&json!({"state": {"desired": {"speedRpm": 1700, "mode": "off"}, "reported": {"speedRpm": 999}}})),
        )
        .unwrap();

    // The core restarts (local shadow and sync state from disk) and syncs: desired conflicts go
    // to the cloud, reported conflicts to the device; unchanged fields take the other side.
    let core = site.start_core().await;
    let client = ipc(&core).await;
    let local = wait_local(&client, "the cloud's desired speed", |d| speed(d, "desired") == Some(1700)).await;
    assert_eq!(local["state"]["desired"]["mode"], "off", "desired conflict: the cloud wins: {local}");
    assert_eq!(speed(&local, "reported"), Some(1100), "reported conflict: the device wins: {local}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let cloud = site.cloud().shadows.get(THING, Some("pump")).unwrap();
        if speed(&cloud, "reported") == Some(1100) {
            assert_eq!(cloud["state"]["desired"], json!({"speedRpm": 1700, "mode": "off"}));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the cloud never got the device's report: {cloud}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_start_runs_components_and_spools_until_the_cloud_lets_the_core_in() {
    let site = Site::new().await;
    // IoT Core refuses the core (its certificate is inactive): the core starts offline.
    let registry = &site.cloud().registry;
    registry.update_certificate(&site.core_id.certificate_id, CertificateStatus::Inactive).unwrap();
    let mut app = site.app(&["dt/core-1/#"]).await;
    let core = site.start_core().await;
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

    registry.update_certificate(&site.core_id.certificate_id, CertificateStatus::Active).unwrap();
    wait_connected(&core).await;
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let doc = app.wait_for("spooled telemetry", |t, _| t == "dt/core-1/telemetry").await;
        let n = doc["n"].as_i64().unwrap();
        if !seen.contains(&n) {
            seen.push(n);
        }
    }
    assert_eq!(seen, (0..20).collect::<Vec<_>>(), "spooled messages arrive in order");
    // The shadow written offline reached the cloud too.
    let deadline = tokio::time::Instant::now() + WAIT;
    while site.cloud().shadows.get(THING, Some("pump")).ok().and_then(|d| speed(&d, "reported")) != Some(5) {
        assert!(tokio::time::Instant::now() < deadline, "the offline shadow never reached the cloud");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    core.shutdown(WAIT).await;
}
