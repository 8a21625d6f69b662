//! `pump-controller`, built from this workspace, run by the simulated core from its own
//! `recipe.yaml` against the simulated plant: offline (local shadow only), with the local
//! cloud and ShadowManager sync, and reconnecting after an offline start.
//!
//! An "operator" component (a process that only sleeps; the test speaks IPC with its token)
//! writes desired values to the local shadow, publishes anomaly events (and, standing in for
//! the analyzer, model statuses) and watches the local shadow's `update/documents`, as an
//! operator's component would.

use std::net::SocketAddr;
use std::time::Duration;

use device_sim::core::ComponentState;
use device_sim::core::runtime::Core;
use device_sim::plant::{PlantConfig, PlantHandle, PlantParams};
use kit::ipc::IpcClient;
use kit::ipc::Subscription;
use kit::ipc::model::{PubSubMessage, PublishToTopicRequest, ReceiveMode, SubscribeToTopicRequest};
use local_cloud::registry::CertificateStatus;
use pump_map::{Coil, Setpoint};
use serde_json::{Value, json};
use site_testkit::cloud::Cloud;
use site_testkit::site::{self as testkit, wait_connection};
use site_testkit::{WAIT, wait_until};
use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader as _};

const CONTROLLER: &str = "com.example.pump.Controller";
const OPERATOR: &str = "com.example.Operator";
const THING: &str = "pump-core-1";
const DOCUMENTS: &str = "$aws/things/pump-core-1/shadow/name/pump/update/documents";

/// The core device's IoT policy: its client id and the `pump` shadow's topics for the sync.
const CORE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":[
   "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/shadow/name/pump/*"]},
 {"Effect":"Allow","Action":"iot:Subscribe","Resource":[
   "arn:aws:iot:*:*:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}/shadow/name/pump/*"]}]}"#;

struct Site {
    base: testkit::Site,
    plant: Option<PlantHandle>,
    modbus_addr: SocketAddr,
}

impl Site {
    /// The plant, the recipes and the artifact; with `cloud`, a local cloud and the core's
    /// identity in it.
    async fn new(cloud: bool) -> Site {
        let plant = serve_plant(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let modbus_addr = plant.modbus_addr();

        let mut base = testkit::Site::new(THING);
        let recipe = testkit::crate_recipe(env!("CARGO_MANIFEST_DIR"));
        let edited = recipe.replace("modbusAddress: 127.0.0.1:5020", &format!("modbusAddress: {modbus_addr}"));
        assert_ne!(edited, recipe, "the recipe names the plant's address");
        base.deploy(CONTROLLER, "1.0.0", &edited);
        // A component that only sleeps; the test uses its IPC identity.
        base.deploy_idle(
            OPERATOR,
            json!({
                "aws.greengrass.ShadowManager": {"com.example.Operator:shadow:1": {
                    "operations": ["aws.greengrass#GetThingShadow", "aws.greengrass#UpdateThingShadow"],
                    "resources": ["$aws/things/{iot:thingName}/shadow/name/pump"]
                }},
                "aws.greengrass.ipc.pubsub": {"com.example.Operator:pubsub:1": {
                    "operations": ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"],
                    "resources": [
                        "pump/anomalies",
                        "pump/model",
                        "$aws/things/{iot:thingName}/shadow/name/pump/update/documents"
                    ]
                }}
            }),
        );
        base.add_artifact(CONTROLLER, "1.0.0", env!("CARGO_BIN_EXE_pump-controller"));
        if cloud {
            base.start_cloud(CORE_POLICY).await;
        }
        Site { base, plant: Some(plant), modbus_addr }
    }

    async fn stop_plant(&mut self) {
        self.plant.take().expect("the plant runs").shutdown().await;
    }

    /// Starts the plant again on the same Modbus port (in its start state: 2900 rpm, running).
    async fn restart_plant(&mut self) {
        self.plant = Some(serve_plant(self.modbus_addr).await);
    }

    fn cloud(&self) -> &Cloud {
        self.base.cloud()
    }

    /// Starts the core with the controller and the operator (syncing the `pump` shadow when
    /// there is a cloud); waits for both to run.
    async fn start_core(&self) -> Core {
        let update_config = if self.base.cloud.is_some() { testkit::shadow_sync(&["pump"]) } else { json!({}) };
        let core = self.base.start_core(&update_config).await;
        for name in [CONTROLLER, OPERATOR] {
            self.base.wait_running(&core, name).await;
        }
        core
    }

    fn log(&self) -> String {
        self.base.log(CONTROLLER)
    }

    fn stats(&self, core: &Core) -> Value {
        let path = core.layout().work_dir(CONTROLLER).join("stats.json");
        std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or(Value::Null)
    }

    /// Waits until `stats.json` satisfies `pred` (it is rewritten once a second).
    async fn wait_stats(&self, core: &Core, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(format!("stats.json showing {what}"), async || self.stats(core), pred, |s| format!("{s:#}")).await
    }

    async fn modbus(&self) -> Context {
        tokio_modbus::client::tcp::connect(self.modbus_addr).await.unwrap()
    }

    /// Waits until the cloud's `pump` shadow satisfies `pred`.
    async fn wait_cloud(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let explain = |doc: &Value| format!("{doc:#}\nlog:\n{}", self.log());
        wait_until(
            format!("the cloud shadow showing {what}"),
            async || self.cloud().shadow(THING, "pump"),
            pred,
            explain,
        )
        .await
    }
}

async fn serve_plant(modbus: SocketAddr) -> PlantHandle {
    device_sim::plant::serve(PlantConfig {
        modbus,
        control: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed: 7,
        tick: Duration::from_millis(20),
        time_scale: 1.0,
        params: PlantParams::default(),
    })
    .await
    .unwrap()
}

/// The plant's commands: (speed setpoint, run coil, bypass coil).
async fn plant_commands(ctx: &mut Context) -> (u16, bool, bool) {
    let speed = ctx.read_holding_registers(Setpoint::SpeedRpm.address(), 1).await.unwrap().unwrap()[0];
    let coils = ctx.read_coils(0, Coil::ALL.len() as u16).await.unwrap().unwrap();
    (speed, coils[Coil::Run.address() as usize], coils[Coil::BypassOpen.address() as usize])
}

/// Polls the plant until its commands satisfy `pred`.
async fn wait_plant(ctx: &mut Context, what: &str, pred: impl Fn((u16, bool, bool)) -> bool) -> (u16, bool, bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let commands = plant_commands(ctx).await;
        if pred(commands) {
            return commands;
        }
        assert!(Instant::now() < deadline, "the plant never showed {what}: {commands:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The operator's IPC client and its watch on the local shadow.
struct Operator {
    ipc: IpcClient,
    documents: Subscription<kit::ipc::operation::SubscribeToTopic>,
}

impl Operator {
    async fn connect(core: &Core) -> Operator {
        let ipc = testkit::ipc(core, OPERATOR).await;
        let documents = ipc
            .subscribe_to_topic(&SubscribeToTopicRequest {
                topic: DOCUMENTS.into(),
                receive_mode: Some(ReceiveMode::ReceiveAllMessages),
            })
            .await
            .unwrap();
        Operator { ipc, documents }
    }

    async fn get(&self) -> Option<Value> {
        testkit::local_shadow(&self.ipc, THING, "pump").await
    }

    /// Waits for the controller's first report (RUNNING only says its process started): the
    /// local document with `reported.speedRpm`.
    async fn ready(&mut self) -> Value {
        if let Some(doc) = self.get().await
            && !reported(&doc, "/speedRpm").is_null()
        {
            return doc;
        }
        self.wait_local("the controller's first report", |d| !reported(d, "/speedRpm").is_null()).await
    }

    /// Writes `desired` to the local shadow; returns the accepted document.
    async fn set_desired(&self, desired: Value) -> Value {
        testkit::update_local_shadow(&self.ipc, THING, "pump", &json!({"state": {"desired": desired}})).await
    }

    async fn publish_anomaly(&self, kind: &str, active: bool) {
        let event = json!({
            "v": 1, "id": format!("{kind}-1"), "ts": 1_700_000_000_000u64, "reading_seq": 1, "detector": "rules",
            "kind": kind, "active": active, "severity": 0.9, "reason": "test anomaly", "features": {}
        });
        let request =
            PublishToTopicRequest { topic: "pump/anomalies".into(), publish_message: PubSubMessage::json(event) };
        self.ipc.publish_to_topic(&request).await.unwrap();
    }

    /// Publishes `body` on `pump/model`, as the analyzer does.
    async fn publish_model_status(&self, body: PubSubMessage) {
        let request = PublishToTopicRequest { topic: "pump/model".into(), publish_message: body };
        self.ipc.publish_to_topic(&request).await.unwrap();
    }

    /// Waits for a local `update/documents` message whose current document satisfies `pred`.
    async fn wait_local(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.documents.next_event())
                .await
                .unwrap_or_else(|_| panic!("the local shadow never showed {what}"))
                .expect("documents subscription open")
                .unwrap();
            let PubSubMessage::Binary(m) = message else { panic!("shadow topics carry binary messages") };
            let doc: Value = serde_json::from_slice(m.message.as_bytes()).unwrap();
            if pred(&doc["current"]) {
                return doc["current"].clone();
            }
        }
    }
}

fn reported(doc: &Value, pointer: &str) -> Value {
    doc.pointer(&format!("/state/reported{pointer}")).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_desired_speed_is_applied_at_the_plant_and_out_of_range_values_are_refused() {
    let site = Site::new(false).await;
    let core = site.start_core().await;
    let mut operator = Operator::connect(&core).await;
    let mut plant = site.modbus().await;

    // At start the controller reported what the plant runs (2900 rpm, running), not desired.
    let doc = operator.ready().await;
    assert_eq!(reported(&doc, "/speedRpm"), 2900, "{doc:#}");
    assert_eq!(reported(&doc, "/running"), true);
    assert_eq!(reported(&doc, "/mode"), "auto");
    assert_eq!(reported(&doc, "/protection/active"), false);

    // A desired speed reaches the setpoint register, and reported follows.
    operator.set_desired(json!({"speedRpm": 2400})).await;
    wait_plant(&mut plant, "setpoint 2400", |(speed, run, _)| speed == 2400 && run).await;
    let doc = operator.wait_local("reported 2400", |d| reported(d, "/speedRpm") == 2400).await;
    assert!(doc["state"]["reported"].get("refused").is_none(), "{doc:#}");

    // Out of the plant's range: refused with the reason, the plant unchanged.
    operator.set_desired(json!({"speedRpm": 9000})).await;
    let doc = operator.wait_local("the refusal", |d| !reported(d, "/refused/speedRpm").is_null()).await;
    assert_eq!(
        reported(&doc, "/refused/speedRpm"),
        json!({"value": 9000, "reason": "above the plant's maximum 3000 rpm"})
    );
    assert_eq!(reported(&doc, "/speedRpm"), 2400, "reported stays the truth, never an echo of desired");
    assert_eq!(plant_commands(&mut plant).await, (2400, true, false), "the plant is unchanged");

    // Below the limits in effect (configured minRpm 1700): the refusal is replaced.
    operator.set_desired(json!({"speedRpm": 1200})).await;
    let doc = operator.wait_local("the new refusal", |d| reported(d, "/refused/speedRpm/value") == 1200).await;
    assert_eq!(reported(&doc, "/refused/speedRpm/reason"), "below limits.minRpm 1700");
    // An unknown mode too.
    operator.set_desired(json!({"mode": "turbo"})).await;
    let doc = operator.wait_local("the mode refusal", |d| !reported(d, "/refused/mode").is_null()).await;
    assert_eq!(
        reported(&doc, "/refused/mode/reason"),
        "unknown mode \"turbo\": expected auto, manual, off or maintenance"
    );
    assert_eq!(plant_commands(&mut plant).await, (2400, true, false));

    // Valid values again: applied, and the refusals withdrawn.
    operator.set_desired(json!({"speedRpm": 2600, "mode": "off"})).await;
    wait_plant(&mut plant, "setpoint 2600 and stopped", |(speed, run, _)| speed == 2600 && !run).await;
    let doc = operator
        .wait_local("refusals withdrawn", |d| reported(d, "/speedRpm") == 2600 && reported(d, "/refused").is_null())
        .await;
    assert_eq!(reported(&doc, "/mode"), "off");
    assert_eq!(reported(&doc, "/running"), false);
    assert!(doc["state"].get("delta").is_none(), "desired and reported agree: {doc:#}");

    let stats =
        site.wait_stats(&core, "delta latencies", |s| s["latency"]["deltaToWrite"]["count"].as_u64() >= Some(2)).await;
    assert!(stats["latency"]["deltaToWrite"]["p50Us"].as_u64().is_some(), "{stats:#}");
    assert!(stats["counters"]["refusals"].as_u64() >= Some(3), "{stats:#}");
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_holds_the_pump_stopped_and_is_refused_over_manual_even_across_a_restart() {
    let site = Site::new(false).await;
    let core = site.start_core().await;
    let mut operator = Operator::connect(&core).await;
    let mut plant = site.modbus().await;
    operator.ready().await;

    // In auto, an anomaly reduces the speed; maintenance ends the action and stops the pump.
    operator.publish_anomaly("cavitation", true).await;
    wait_plant(&mut plant, "the safe speed", |(speed, run, _)| speed == 1800 && run).await;
    operator.set_desired(json!({"mode": "maintenance"})).await;
    wait_plant(&mut plant, "stopped, bypass closed", |(_, run, bypass)| !run && !bypass).await;
    let doc = operator.wait_local("maintenance", |d| reported(d, "/mode") == "maintenance").await;
    assert_eq!(reported(&doc, "/running"), false, "{doc:#}");
    assert_eq!(
        reported(&doc, "/protection"),
        json!({"active": false, "reason": "mode maintenance", "since": reported(&doc, "/protection/since")})
    );
    assert_eq!(reported(&doc, "/alarms"), json!(["cavitation"]), "anomalies are still reported");

    // The speed may change in maintenance; the pump stays stopped and starts at it when left.
    operator.set_desired(json!({"speedRpm": 2400})).await;
    wait_plant(&mut plant, "setpoint 2400, stopped", |(speed, run, _)| speed == 2400 && !run).await;
    operator.set_desired(json!({"mode": "manual"})).await;
    wait_plant(&mut plant, "running at 2400 in manual", |(speed, run, _)| speed == 2400 && run).await;
    operator.wait_local("manual", |d| reported(d, "/mode") == "manual").await;

    // Over manual, maintenance is refused with the reason and the pump keeps running.
    operator.set_desired(json!({"mode": "maintenance"})).await;
    let doc = operator.wait_local("the refusal", |d| !reported(d, "/refused/mode").is_null()).await;
    assert_eq!(
        reported(&doc, "/refused/mode"),
        json!({"value": "maintenance", "reason": "manual mode in effect: an operator has the pump by hand; leave manual first (e.g. mode off) to put it into maintenance"})
    );
    assert_eq!(reported(&doc, "/mode"), "manual");
    assert_eq!(plant_commands(&mut plant).await, (2400, true, false));

    // A restart (a deployment, a crash) keeps manual: the plant cannot show it, the report can.
    core.shutdown(WAIT).await;
    let core = site.start_core().await;
    let mut operator = Operator::connect(&core).await;
    operator.set_desired(json!({"speedRpm": 2500})).await;
    wait_plant(&mut plant, "2500 after the restart", |(speed, _, _)| speed == 2500).await;
    let doc = operator.wait_local("reported 2500", |d| reported(d, "/speedRpm") == 2500).await;
    assert_eq!(reported(&doc, "/mode"), "manual", "{doc:#}\nlog:\n{}", site.log());
    assert_eq!(reported(&doc, "/refused/mode/value"), "maintenance");
    assert_eq!(plant_commands(&mut plant).await, (2500, true, false), "still the operator's");

    // The operator leaves manual; then maintenance applies.
    operator.set_desired(json!({"mode": "off"})).await;
    operator
        .wait_local("off, refusal withdrawn", |d| reported(d, "/mode") == "off" && reported(d, "/refused").is_null())
        .await;
    operator.set_desired(json!({"mode": "maintenance"})).await;
    operator.wait_local("maintenance again", |d| reported(d, "/mode") == "maintenance").await;
    assert_eq!(plant_commands(&mut plant).await, (2500, false, false));
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_anomaly_or_shadow_message_is_counted_and_the_controller_carries_on() {
    let site = Site::new(false).await;
    let core = site.start_core().await;
    let mut operator = Operator::connect(&core).await;
    let mut plant = site.modbus().await;
    operator.ready().await;
    for body in [b"not json".to_vec(), br#"{"v":2,"kind":"cavitation"}"#.to_vec(), br#"{"v":1}"#.to_vec()] {
        let request =
            PublishToTopicRequest { topic: "pump/anomalies".into(), publish_message: PubSubMessage::binary(body) };
        operator.ipc.publish_to_topic(&request).await.unwrap();
    }
    site.wait_stats(&core, "three malformed anomalies", |s| s["counters"]["malformedAnomalies"] == 3).await;
    // Still working.
    operator.set_desired(json!({"speedRpm": 2100})).await;
    wait_plant(&mut plant, "setpoint 2100", |(speed, _, _)| speed == 2100).await;
    operator.wait_local("reported 2100", |d| reported(d, "/speedRpm") == 2100).await;
    assert_eq!(core.states().get(CONTROLLER), Some(&ComponentState::Running));
    core.shutdown(WAIT).await;
}

/// A `pump_types::ModelStatus` as the analyzer publishes it.
fn model_status(ts: u64, running: &[&str], version: Option<&str>, error: Option<&str>) -> Value {
    let model = version.map(|v| {
        json!({"name": "pump-fault-classifier", "version": v,
               "sha256": "592a00b6c4e234f43ae3d0190490c8957ca51ae4fb421ef05c778f7b64589316"})
    });
    json!({"v": 1, "ts": ts, "detector": "model", "running": running, "model": model, "error": error})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analyzers_model_status_is_reported_when_it_changes_and_bad_statuses_are_ignored() {
    let site = Site::new(false).await;
    let core = site.start_core().await;
    let mut operator = Operator::connect(&core).await;
    // Before the analyzer has said anything, the controller does not claim a model.
    let doc = operator.ready().await;
    assert_eq!(reported(&doc, "/model/status"), "unknown", "{doc:#}");
    assert_eq!(reported(&doc, "/model/version"), "");

    operator.publish_model_status(PubSubMessage::json(model_status(1_000, &["model"], Some("1.0.0"), None))).await;
    let running = operator.wait_local("the model running", |d| reported(d, "/model/status") == "running").await;
    assert_eq!(
        reported(&running, "/model"),
        json!({"status": "running", "detector": "model", "running": ["model"], "name": "pump-fault-classifier",
               "version": "1.0.0", "sha256": "592a00b6c4e234f43ae3d0190490c8957ca51ae4fb421ef05c778f7b64589316",
               "error": "", "since": 1_000})
    );

    // Bad statuses are logged, counted and ignored: the report stays.
    for body in [
        b"not json".to_vec(),
        br#"{"v":2,"detector":"model"}"#.to_vec(),
        serde_json::to_vec(
            &json!({"v": 1, "ts": 2, "detector": "oracle", "running": [], "model": null, "error": null}),
        )
        .unwrap(),
    ] {
        operator.publish_model_status(PubSubMessage::binary(body)).await;
    }
    site.wait_stats(&core, "three malformed model statuses", |s| s["counters"]["malformedModelStatuses"] == 3).await;
    assert!(site.log().contains("ignored a model status"), "{}", site.log());

    // The periodic repeat (a newer ts, nothing else new) changes nothing; the next change is
    // the next shadow version.
    operator.publish_model_status(PubSubMessage::json(model_status(31_000, &["model"], Some("1.0.0"), None))).await;
    let refused = "model refused: the model card model-card.json is invalid";
    operator.publish_model_status(PubSubMessage::json(model_status(45_000, &["rules"], None, Some(refused)))).await;
    let doc = operator.wait_local("the model error", |d| reported(d, "/model/status") == "error").await;
    assert_eq!(doc["version"].as_u64(), running["version"].as_u64().map(|v| v + 1), "one update: {doc:#}");
    assert_eq!(reported(&doc, "/model/error"), refused);
    assert_eq!(reported(&doc, "/model/running"), json!(["rules"]));
    assert_eq!(reported(&doc, "/model/version"), "", "no model passed its checks");
    assert_eq!(reported(&doc, "/model/since"), 45_000);
    let local = operator.get().await.unwrap();
    assert_eq!(local["state"]["reported"]["model"], doc["state"]["reported"]["model"]);

    let stats = site.wait_stats(&core, "three model statuses", |s| s["counters"]["modelStatuses"] == 3).await;
    assert_eq!(stats["counters"]["modelChanges"], 2, "{stats:#}");
    assert_eq!(core.states().get(CONTROLLER), Some(&ComponentState::Running));
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_plant_refuses_with_the_reason_and_converges_when_it_answers_again() {
    let mut site = Site::new(false).await;
    let core = site.start_core().await;
    let mut operator = Operator::connect(&core).await;
    operator.ready().await;
    operator.set_desired(json!({"speedRpm": 2400})).await;
    operator.wait_local("reported 2400", |d| reported(d, "/speedRpm") == 2400).await;

    site.stop_plant().await;
    operator.set_desired(json!({"speedRpm": 2500})).await;
    let doc = operator.wait_local("the refusal", |d| !reported(d, "/refused/speedRpm").is_null()).await;
    let reason = reported(&doc, "/refused/speedRpm/reason");
    assert!(reason.as_str().unwrap().starts_with("plant unreachable"), "{doc:#}");
    assert_eq!(reported(&doc, "/speedRpm"), 2400, "nothing new is in effect");

    // The plant comes back in its start state (2900 rpm); the controller drives it to desired.
    site.restart_plant().await;
    let mut plant = site.modbus().await;
    wait_plant(&mut plant, "setpoint 2500", |(speed, run, _)| speed == 2500 && run).await;
    operator
        .wait_local("2500 without a refusal", |d| reported(d, "/speedRpm") == 2500 && reported(d, "/refused").is_null())
        .await;
    let stats =
        site.wait_stats(&core, "Modbus errors counted", |s| s["counters"]["modbusErrors"].as_u64() >= Some(1)).await;
    assert!(stats["counters"]["applies"].as_u64() >= Some(2), "{stats:#}");
    assert_eq!(core.states().get(CONTROLLER), Some(&ComponentState::Running));
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_raced_by_a_newer_desired_value_is_never_left_standing() {
    let site = Site::new(false).await;
    let core = site.start_core().await;
    let mut operator = Operator::connect(&core).await;
    let mut plant = site.modbus().await;
    operator.ready().await;
    // Back to back: the refusal of 9000 is drawn from a document that 2300 supersedes, so it
    // either goes out before 2300 lands (and is withdrawn) or meets a version conflict (and
    // the controller re-reads). Either way it must not stand.
    operator.set_desired(json!({"speedRpm": 9000})).await;
    operator.set_desired(json!({"speedRpm": 2300})).await;
    wait_plant(&mut plant, "setpoint 2300", |(speed, _, _)| speed == 2300).await;
    operator
        .wait_local("2300 reported without a refusal", |d| {
            reported(d, "/speedRpm") == 2300 && reported(d, "/refused").is_null()
        })
        .await;
    let doc = operator.get().await.unwrap();
    assert!(doc["state"].get("delta").is_none(), "{doc:#}");
    assert!(reported(&doc, "/refused").is_null(), "{doc:#}");
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_change_is_followed_without_a_restart_and_a_bad_one_is_ignored() {
    let site = Site::new(false).await;
    let core = site.start_core().await;
    let mut operator = Operator::connect(&core).await;
    let mut plant = site.modbus().await;
    operator.ready().await;
    let now =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let config = core.config();
    config.update(CONTROLLER, &[], &json!({"safeSpeedRpm": 2000, "onClear": "restore"}), now).unwrap();
    site.wait_stats(&core, "the new configuration", |s| s["counters"]["configChanges"].as_u64() >= Some(1)).await;
    config.update(CONTROLLER, &["safeSpeedRpm".into()], &json!(100), now + 1).unwrap();
    site.wait_stats(&core, "the bad configuration refused", |s| s["counters"]["configErrors"].as_u64() >= Some(1))
        .await;

    operator.publish_anomaly("bearing_wear", true).await;
    wait_plant(&mut plant, "the configured safe speed", |(speed, _, _)| speed == 2000).await;
    operator.wait_local("protection", |d| reported(d, "/protection/active") == true).await;
    // onClear: restore — the speed in effect before comes back by itself.
    operator.publish_anomaly("bearing_wear", false).await;
    wait_plant(&mut plant, "the speed before", |(speed, _, _)| speed == 2900).await;
    let doc = operator.wait_local("protection released", |d| reported(d, "/protection/active") == false).await;
    assert_eq!(reported(&doc, "/protection/reason"), "bearing_wear cleared");
    assert_eq!(core.states().get(CONTROLLER), Some(&ComponentState::Running));
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_desired_is_actuated_and_anomalies_protect_the_pump_with_the_cloud_shadow_following() {
    let site = Site::new(true).await;
    let core = site.start_core().await;
    let operator = Operator::connect(&core).await;
    let mut plant = site.modbus().await;

    // The controller's first report reaches the cloud.
    site.wait_cloud("the first report", |d| reported(d, "/speedRpm") == 2900).await;

    // An operator sets a desired speed in the cloud.
    let accepted = site.cloud().update_shadow(THING, "pump", &json!({"state": {"desired": {"speedRpm": 2200}}}));
    let desired_version = accepted["version"].as_u64().unwrap();
    wait_plant(&mut plant, "setpoint 2200", |(speed, _, _)| speed == 2200).await;
    let doc = site.wait_cloud("reported 2200", |d| reported(d, "/speedRpm") == 2200).await;
    assert!(doc["version"].as_u64().unwrap() > desired_version, "the report came after the desired write: {doc:#}");
    assert!(doc["state"].get("delta").is_none(), "no delta left: {doc:#}");

    // An anomaly: the configured action (cavitation → reduce speed to 1800 rpm) at the plant,
    // and protection in the cloud shadow.
    operator.publish_anomaly("cavitation", true).await;
    wait_plant(&mut plant, "the safe speed", |(speed, run, _)| speed == 1800 && run).await;
    let doc = site.wait_cloud("protection active", |d| reported(d, "/protection/active") == true).await;
    assert_eq!(reported(&doc, "/alarms"), json!(["cavitation"]));
    let reason = reported(&doc, "/protection/reason");
    assert!(reason.as_str().unwrap().contains("cavitation: test anomaly"), "{doc:#}");
    let doc = site.wait_cloud("the reduced speed", |d| reported(d, "/speedRpm") == 1800).await;
    assert_eq!(doc["state"]["desired"]["speedRpm"], 2200, "desired is the operator's, never written by the device");

    // Cleared: by default the action holds until desired changes.
    operator.publish_anomaly("cavitation", false).await;
    let doc = site.wait_cloud("alarm cleared", |d| reported(d, "/alarms") == json!([])).await;
    assert_eq!(reported(&doc, "/protection/active"), true, "held: {doc:#}");
    assert_eq!(plant_commands(&mut plant).await.0, 1800, "the plant stays protected");

    // The operator resumes with a new desired speed.
    site.cloud().update_shadow(THING, "pump", &json!({"state": {"desired": {"speedRpm": 2500}}}));
    wait_plant(&mut plant, "setpoint 2500", |(speed, _, _)| speed == 2500).await;
    let doc = site
        .wait_cloud("resumed", |d| reported(d, "/protection/active") == false && reported(d, "/speedRpm") == 2500)
        .await;
    assert_eq!(reported(&doc, "/protection/reason"), "resumed by a desired change");

    let stats = site
        .wait_stats(&core, "an anomaly latency", |s| s["latency"]["anomalyToAction"]["count"].as_u64() >= Some(1))
        .await;
    assert!(stats["latency"]["deltaToWrite"]["count"].as_u64() >= Some(2), "{stats:#}");
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_changed_in_the_cloud_while_the_core_was_offline_converges_when_it_reconnects() {
    let site = Site::new(true).await;
    // A shadow from an earlier life: an old desired, and a stale reported the device never had.
    site.cloud().update_shadow(
        THING,
        "pump",
        &json!({"state": {
            "desired": {"speedRpm": 2100},
            "reported": {"speedRpm": 1234, "running": false}
        }}),
    );
    // IoT Core refuses the core: it starts offline, and the controller works on the local shadow.
    site.cloud().set_core_certificate(CertificateStatus::Inactive);
    let core = site.start_core().await;
    let mut operator = Operator::connect(&core).await;
    let mut plant = site.modbus().await;
    let local = operator.ready().await;
    assert_eq!(reported(&local, "/speedRpm"), 2900, "the device's truth, locally: {local:#}");
    assert!(!*core.bridge().unwrap().connection().borrow(), "the core is offline");

    // Meanwhile in the cloud, the operator moves desired on.
    site.cloud().update_shadow(THING, "pump", &json!({"state": {"desired": {"speedRpm": 2000}}}));
    assert_eq!(plant_commands(&mut plant).await.0, 2900, "nothing reaches an offline core");

    // Back online: the sync brings the cloud's desired down, the controller applies it, and
    // the cloud's reported becomes the device's truth.
    site.cloud().set_core_certificate(CertificateStatus::Active);
    wait_connection(&core, true).await;
    wait_plant(&mut plant, "setpoint 2000", |(speed, _, _)| speed == 2000).await;
    let local = operator.wait_local("reported 2000", |d| reported(d, "/speedRpm") == 2000).await;
    let cloud = site
        .wait_cloud("the local reported", |d| {
            d["state"]["reported"] == local["state"]["reported"] && d["state"].get("delta").is_none()
        })
        .await;
    assert_eq!(cloud["state"]["desired"]["speedRpm"], 2000);
    assert_eq!(reported(&cloud, "/running"), true, "the stale reported value was overwritten: {cloud:#}");
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_waits_while_a_protective_action_is_in_effect_up_to_the_configured_maximum() {
    use cloud_api::greengrass::deployment::{ComponentUpdateAction, ComponentUpdatePolicy};
    use kit::ipc::model::{CreateLocalDeploymentRequest, DeploymentStatus};

    let site = Site::new(false).await;
    // Short knobs so the test is quick: ask again after 100 ms, at most 1 s in total.
    let knobs = json!({CONTROLLER: {"MERGE": {"updateRecheckMs": 100, "maxUpdateDeferralS": 1}}});
    let core = site.base.start_core(&knobs).await;
    for name in [CONTROLLER, OPERATOR] {
        site.base.wait_running(&core, name).await;
    }
    let mut operator = Operator::connect(&core).await;
    let mut plant = site.modbus().await;
    operator.ready().await;
    operator.publish_anomaly("overheating", true).await;
    wait_plant(&mut plant, "the pump stopped", |(_, run, _)| !run).await;
    operator.wait_local("protection", |d| reported(d, "/protection/active") == true).await;

    // A deployment that notifies components, as cloud deployments do by default.
    let request = CreateLocalDeploymentRequest {
        component_to_configuration: Some(
            [(CONTROLLER.to_owned(), json!({"MERGE": {"readbackIntervalMs": 4000}}))].into(),
        ),
        ..Default::default()
    };
    let policy = ComponentUpdatePolicy { timeout: 60, action: ComponentUpdateAction::NotifyComponents };
    let id = core.deployments().create_with_policies(request, policy, Duration::from_secs(20)).unwrap();
    let done = core.deployments().wait_finished(&id, WAIT).await.unwrap();
    assert_eq!(done.status, DeploymentStatus::Succeeded, "{done:?}");

    let deferrals = core.deployments().deferrals(&id).unwrap();
    assert_eq!(deferrals.len(), 1, "{deferrals:?}\nlog:\n{}", site.log());
    let deferral = &deferrals[0];
    assert_eq!(deferral.component, CONTROLLER);
    assert!(deferral.message.as_deref().unwrap_or_default().contains("protective action"), "{deferral:?}");
    // Deferred while protecting, then let go at the maximum although still protecting.
    assert!((Duration::from_millis(500)..=Duration::from_secs(1)).contains(&deferral.deferred_for), "{deferral:?}");
    assert_eq!(core.config().get(CONTROLLER, &["readbackIntervalMs".into()]), Some(json!(4000)));
    assert_eq!(core.states().get(CONTROLLER), Some(&ComponentState::Running));
    core.shutdown(WAIT).await;
}
