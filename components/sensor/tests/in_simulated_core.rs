//! `pump-sensor`, built from this workspace, run by the simulated core from its own
//! `recipe.yaml` against the plant served in-process; with the local cloud in-process for the
//! telemetry tests. Everything on loopback, ephemeral ports, in a temporary directory.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloud_api::ipc::model::{PubSubMessage, ReceiveMode};
use device_sim::core::ComponentState;
use device_sim::core::pubsub::Subscription;
use device_sim::core::runtime::Core;
use device_sim::plant::{PlantConfig, PlantHandle, PlantParams, serve};
use local_cloud::registry::CertificateStatus;
use pump_types::{READINGS_TOPIC, Reading, SENSOR_COMPONENT};
use serde_json::{Value, json};
use site_testkit::mqtt::Observer;
use site_testkit::site::{self as testkit, wait_connection};
use site_testkit::{WAIT, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_modbus::client::Writer as _;

const VERSION: &str = "1.0.0";
const THING: &str = "pump-core-1";
/// The billing unit IoT Core meters messages in (payload and topic bytes).
const UNIT: usize = 5120;

/// The IoT policy the README asks for: connect as the thing, publish its telemetry. Nothing else.
const CORE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":"iot:Publish",
  "Resource":"arn:aws:iot:*:*:topic/dt/pump/${iot:Connection.Thing.ThingName}/telemetry"}]}"#;

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn start_plant(modbus: SocketAddr) -> PlantHandle {
    serve(PlantConfig {
        modbus,
        control: loopback(),
        seed: 3,
        tick: Duration::from_millis(20),
        time_scale: 1.0,
        params: PlantParams::default(),
    })
    .await
    .unwrap()
}

/// A temporary site: the sensor's recipe and binary, the plant, and optionally the local cloud.
struct Site {
    base: testkit::Site,
    plant: Option<PlantHandle>,
}

impl Site {
    async fn new(with_cloud: bool) -> Site {
        let mut base = testkit::Site::new(THING);
        base.deploy(SENSOR_COMPONENT, VERSION, &testkit::crate_recipe(env!("CARGO_MANIFEST_DIR")));
        base.add_artifact(SENSOR_COMPONENT, VERSION, env!("CARGO_BIN_EXE_pump-sensor"));
        let plant = Some(start_plant(loopback()).await);
        if with_cloud {
            base.start_cloud(CORE_POLICY).await;
        }
        Site { base, plant }
    }

    fn plant(&self) -> &PlantHandle {
        self.plant.as_ref().expect("plant running")
    }

    /// Starts the core with the sensor, its configuration merged with `merge` (the plant's
    /// address is always set).
    async fn start_core(&self, merge: Value) -> Core {
        let mut config = json!({"modbus": {"address": self.plant().modbus_addr().to_string()}});
        merge_json(&mut config, merge);
        self.base.start_core(&json!({ SENSOR_COMPONENT: {"MERGE": config} })).await
    }

    fn log(&self) -> String {
        self.base.log(SENSOR_COMPONENT)
    }

    async fn wait_running(&self, core: &Core) {
        self.base.wait_running(core, SENSOR_COMPONENT).await;
    }

    fn stats(&self, core: &Core) -> Value {
        stats_in(&core.layout().work_dir(SENSOR_COMPONENT))
    }

    /// Waits until `stats.json` satisfies `pred` (the sensor rewrites it every stats period).
    async fn wait_stats(&self, core: &Core, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let explain = |stats: &Value| format!("{stats:#}\nlog:\n{}", self.log());
        wait_until(format!("stats showing {what}"), async || self.stats(core), pred, explain).await
    }

    /// An MQTT client of another thing, subscribed to `filter` in the cloud.
    async fn app(&self, filter: &str) -> Observer {
        self.base.cloud().observer(&[filter]).await
    }
}

/// The sensor's `stats.json` in its work directory (`null` until it is written).
fn stats_in(work_dir: &Path) -> Value {
    let path = work_dir.join("stats.json");
    std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
}

/// Recursive JSON merge, as a deployment's MERGE does.
fn merge_json(doc: &mut Value, patch: Value) {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => {
            for (k, v) in p {
                merge_json(d.entry(k).or_insert(Value::Null), v);
            }
        }
        (d, p) => *d = p,
    }
}

/// The telemetry topic of the core.
static FILTER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| pump_types::telemetry_topic(THING));

/// One HTTP/1.1 GET with `Connection: close`; the JSON body.
async fn http_get(addr: SocketAddr, path: &str) -> Value {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut raw)).await.expect("HTTP answer in time").unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (_, body) = text.split_once("\r\n\r\n").expect("a complete HTTP response");
    serde_json::from_str(body).expect(body)
}

fn observe_readings(core: &Core) -> Subscription {
    core.pubsub().subscribe("test-observer", READINGS_TOPIC, Some(ReceiveMode::ReceiveAllMessages)).unwrap()
}

fn as_reading(message: PubSubMessage) -> Reading {
    match message {
        PubSubMessage::Json(m) => pump_types::parse(m.message.to_string().as_bytes()).unwrap(),
        PubSubMessage::Binary(_) => panic!("readings are JSON messages"),
    }
}

async fn next_reading(sub: &mut Subscription) -> Reading {
    as_reading(timeout(WAIT, sub.receiver.recv()).await.expect("a reading in time").expect("subscription open"))
}

/// The reading agrees with the plant's own state within a few noise σ (docs/plant.md) plus
/// the register resolution and the drift between the two moments.
fn assert_matches_plant(r: &Reading, state: &Value) {
    let m = &state["measurements"];
    for (name, value, tolerance) in [
        ("speed_rpm", r.m.speed_rpm, 15.0),
        ("flow_m3h", r.m.flow_m3h, 4.0),
        ("suction_pressure_kpa", r.m.suction_pressure_kpa, 4.0),
        ("discharge_pressure_kpa", r.m.discharge_pressure_kpa, 15.0),
        ("motor_current_a", r.m.motor_current_a, 1.5),
        ("bearing_temp_c", r.m.bearing_temp_c, 1.5),
        ("motor_temp_c", r.m.motor_temp_c, 2.0),
        ("vibration_mm_s", r.m.vibration_mm_s, 0.5),
    ] {
        let plant = m[name].as_f64().unwrap_or_else(|| panic!("{name} in {state}"));
        assert!((value - plant).abs() <= tolerance, "{name}: sensor {value}, plant {plant} (±{tolerance})");
    }
    assert_eq!(r.running, state["status"]["running"], "{state}");
    assert_eq!(r.bypass_open, state["coils"]["bypass_open"], "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_reach_local_pubsub_in_order_and_follow_the_plant_while_telemetry_waits_in_the_outbox() {
    let site = Site::new(false).await;
    let core =
        site.start_core(json!({"pollPeriodMs": 100, "telemetry": {"maxDelayMs": 500}, "statsPeriodMs": 200})).await;
    site.wait_running(&core).await;
    let mut readings = observe_readings(&core);

    let mut last = next_reading(&mut readings).await;
    for _ in 0..5 {
        let r = next_reading(&mut readings).await;
        assert!(r.seq > last.seq, "seq increases: {} after {}", r.seq, last.seq);
        assert!(r.ts >= last.ts);
        assert_eq!(r.v, 1);
        last = r;
    }
    let state = http_get(site.plant().control_addr(), "/state").await;
    assert_matches_plant(&last, &state);
    assert!((last.m.speed_rpm - 2900.0).abs() < 15.0, "the plant starts at 2900 rpm: {last:?}");

    // The plant changes (the bypass opens): the readings follow it.
    let mut modbus = tokio_modbus::client::tcp::connect(site.plant().modbus_addr()).await.unwrap();
    modbus.write_single_coil(pump_map::Coil::BypassOpen.address(), true).await.unwrap().unwrap();
    let deadline = Instant::now() + WAIT;
    let opened = loop {
        let r = next_reading(&mut readings).await;
        assert!(r.seq > last.seq);
        last = r.clone();
        if r.bypass_open && r.m.flow_m3h > 115.0 {
            break r;
        }
        assert!(Instant::now() < deadline, "the readings never showed the open bypass: {r:?}");
    };
    let state = http_get(site.plant().control_addr(), "/state").await;
    assert_matches_plant(&opened, &state);

    // No cloud: the core refuses PublishToIoTCore, so the batches stay in the outbox, counted.
    let stats = site
        .wait_stats(&core, "telemetry waiting in the outbox", |s| {
            s["telemetry"]["outboxPending"].as_u64() >= Some(2) && s["telemetry"]["publishRetries"].as_u64() >= Some(1)
        })
        .await;
    assert_eq!(stats["telemetry"]["sent"], 0, "{stats:#}");
    assert_eq!(stats["telemetry"]["topic"], format!("dt/pump/{THING}/telemetry"));
    assert!(stats["polls"]["ok"].as_u64() >= Some(7), "{stats:#}");
    assert_eq!(stats["telemetry"]["billingUnits"], stats["telemetry"]["messages"], "small batches: one unit each");
    assert_eq!(core.states().get(SENSOR_COMPONENT), Some(&ComponentState::Running));

    let pending = core.shutdown(WAIT).await;
    assert!(pending.is_empty(), "the sensor stops on SIGTERM: {pending:?}");
    assert!(site.log().contains("SIGTERM: stopped"), "log:\n{}", site.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plant_restart_is_ridden_out_by_reconnecting_and_no_reading_is_made_up_meanwhile() {
    let mut site = Site::new(false).await;
    let core = site
        .start_core(json!({"pollPeriodMs": 100, "statsPeriodMs": 100,
            "modbus": {"timeoutMs": 300, "reconnectMinMs": 50, "reconnectMaxMs": 400}}))
        .await;
    site.wait_running(&core).await;
    let mut readings = observe_readings(&core);
    let before = next_reading(&mut readings).await;
    let mut events = core.subscribe();

    // The plant goes away.
    let modbus_addr = site.plant().modbus_addr();
    site.plant.take().unwrap().shutdown().await;
    let stopped_at = epoch_ms();
    let base_failed = site.stats(&core)["polls"]["failed"].as_u64().unwrap_or(0);
    site.wait_stats(&core, "failed polls while the plant is down", |s| {
        s["polls"]["failed"].as_u64() >= Some(base_failed + 5) && s["polls"]["connected"] == false
    })
    .await;
    let mut last_seq = before.seq;
    while let Ok(m) = readings.receiver.try_recv() {
        let r = as_reading(m);
        assert!(r.ts <= stopped_at, "a reading taken after the plant stopped: {r:?}");
        last_seq = r.seq;
    }
    assert_eq!(core.states().get(SENSOR_COMPONENT), Some(&ComponentState::Running), "log:\n{}", site.log());

    // It comes back on the same address: the sensor reconnects and readings resume.
    site.plant = Some(start_plant(modbus_addr).await);
    let restarted_at = epoch_ms();
    let after = loop {
        let r = next_reading(&mut readings).await;
        if r.ts >= restarted_at {
            break r;
        }
    };
    assert!(after.seq > last_seq + 1, "the lost polls leave a gap in seq: {} after {last_seq}", after.seq);
    let state = http_get(site.plant().control_addr(), "/state").await;
    assert_matches_plant(&after, &state);
    let stats = site.wait_stats(&core, "the reconnect", |s| s["polls"]["connects"].as_u64() >= Some(2)).await;
    assert!(stats["polls"]["connectFailures"].as_u64() >= Some(1), "{stats:#}");
    while let Ok(ev) = events.try_recv() {
        assert_ne!(ev.component, SENSOR_COMPONENT, "the sensor stayed RUNNING throughout: {ev:?}");
    }
    assert!(site.log().contains("lost the plant connection"), "the loss is logged:\n{}", site.log());
    core.shutdown(WAIT).await;
}

/// A telemetry batch as the cloud received it.
#[derive(Debug, Clone, PartialEq)]
struct Batch {
    bytes: usize,
    seqs: Vec<u64>,
}

fn parse_batch(payload: &[u8]) -> Batch {
    let doc: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(doc["v"], 1, "{doc}");
    assert_eq!(doc["thing"], THING, "{doc}");
    let seqs = doc["readings"].as_array().unwrap().iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    Batch { bytes: payload.len(), seqs }
}

async fn next_batch(observer: &mut Observer) -> Batch {
    let message = observer.next("telemetry in the cloud").await;
    assert_eq!(message.topic, *FILTER);
    let batch = parse_batch(&message.payload);
    assert!(batch.bytes + message.topic.len() <= UNIT, "{} payload bytes + topic exceed one unit", batch.bytes);
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_reaches_the_cloud_in_order_in_batches_of_at_most_one_billing_unit() {
    let site = Site::new(true).await;
    let mut cloud_rx = site.app(&FILTER).await;
    // Fast polls and a long max delay: batches are cut by the 5 KiB unit, not by time.
    let core =
        site.start_core(json!({"pollPeriodMs": 40, "telemetry": {"maxDelayMs": 20000}, "statsPeriodMs": 200})).await;
    site.wait_running(&core).await;

    let mut batches = Vec::new();
    while batches.len() < 4 {
        batches.push(next_batch(&mut cloud_rx).await);
    }
    let seqs: Vec<u64> = batches.iter().flat_map(|b| b.seqs.clone()).collect();
    let first = seqs[0];
    assert_eq!(seqs, (first..first + seqs.len() as u64).collect::<Vec<_>>(), "in order, no gaps");
    for b in &batches {
        assert!(b.bytes + FILTER.len() > UNIT - 400, "each batch filled its unit: {} bytes", b.bytes);
    }
    let stats = site.wait_stats(&core, "sent telemetry", |s| s["telemetry"]["sent"].as_u64() >= Some(4)).await;
    let t = &stats["telemetry"];
    assert_eq!(t["billingUnits"], t["messages"], "one unit per message: {t}");
    assert!(t["payloadBytes"].as_u64().unwrap() > 4 * 4700, "{t}");
    core.shutdown(WAIT).await;
    site.base.cloud.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_made_while_the_core_is_locked_out_all_arrive_in_order_when_it_is_let_back_in() {
    let site = Site::new(true).await;
    let cloud = site.base.cloud();
    let mut cloud_rx = site.app(&FILTER).await;
    let core =
        site.start_core(json!({"pollPeriodMs": 50, "telemetry": {"maxDelayMs": 400}, "statsPeriodMs": 100})).await;
    site.wait_running(&core).await;
    let mut received = vec![next_batch(&mut cloud_rx).await];

    // IoT Core locks the core out (its certificate becomes INACTIVE): the connection drops.
    cloud.set_core_certificate(CertificateStatus::Inactive);
    wait_connection(&core, false).await;
    let offline = site.stats(&core)["telemetry"]["messages"].as_u64().unwrap();
    let stats = site
        .wait_stats(&core, "batches made offline", |s| s["telemetry"]["messages"].as_u64() >= Some(offline + 5))
        .await;
    let last_offline_seq = stats["readings"]["lastSeq"].as_u64().unwrap();
    let made = stats["telemetry"]["messages"].as_u64().unwrap();
    assert!(!*core.bridge().expect("bridge").connection().borrow(), "still offline");

    // Let back in: everything made meanwhile arrives, in order.
    cloud.set_core_certificate(CertificateStatus::Active);
    wait_connection(&core, true).await;
    let mut max_seq = *received[0].seqs.last().unwrap();
    while max_seq < last_offline_seq {
        let b = next_batch(&mut cloud_rx).await;
        if received.contains(&b) {
            // A QoS 1 resend of a batch whose PUBACK was lost with the connection.
            continue;
        }
        assert_eq!(b.seqs[0], max_seq + 1, "no gap and no reordering: {:?} after seq {max_seq}", b.seqs);
        for pair in b.seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "{:?}", b.seqs);
        }
        max_seq = *b.seqs.last().unwrap();
        received.push(b);
    }
    assert_eq!(received[0].seqs[0], 1, "the cloud saw the telemetry from the first reading on");
    assert!(received.len() as u64 >= made, "every batch made by then arrived: {} of {made}", received.len());
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_stored_while_the_core_has_no_cloud_is_sent_after_a_restart_with_one() {
    // First run: no cloud at all; the batches wait in the outbox in the work directory.
    let mut site = Site::new(true).await;
    let cloud = site.base.cloud.take();
    let core =
        site.start_core(json!({"pollPeriodMs": 50, "telemetry": {"maxDelayMs": 300}, "statsPeriodMs": 100})).await;
    site.wait_running(&core).await;
    site.wait_stats(&core, "stored batches", |s| s["telemetry"]["outboxPending"].as_u64() >= Some(3)).await;
    let work_dir = core.layout().work_dir(SENSOR_COMPONENT);
    core.shutdown(WAIT).await;
    // Written at shutdown, after the last batch was stored.
    let stored = stats_in(&work_dir);
    let pending = stored["telemetry"]["outboxPending"].as_u64().unwrap();
    let last_seq = stored["readings"]["lastSeq"].as_u64().unwrap();
    assert!(pending >= 3, "{stored:#}");

    // Second run, same core root, now with the cloud: the stored batches go first, in order.
    site.base.cloud = cloud;
    let mut cloud_rx = site.app(&FILTER).await;
    let core = site.start_core(json!({"pollPeriodMs": 50, "telemetry": {"maxDelayMs": 300}})).await;
    let mut seqs = Vec::new();
    while seqs.last().copied().unwrap_or(0) < last_seq {
        let b = next_batch(&mut cloud_rx).await;
        seqs.extend(b.seqs);
    }
    assert_eq!(seqs, (1..=last_seq).collect::<Vec<_>>(), "the first run's readings, all, in order");
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_stops_the_sensor_with_a_message_naming_the_key() {
    let site = Site::new(false).await;
    let core = site.start_core(json!({"pollPeriodMs": 0})).await;
    let state = core.wait_for_state(SENSOR_COMPONENT, &[ComponentState::Broken], WAIT).await;
    assert_eq!(state, Some(ComponentState::Broken), "three failed starts: BROKEN\n{}", site.log());
    let log = site.log();
    assert!(log.contains("configuration error: configuration /pollPeriodMs: 0 ms is outside"), "log:\n{log}");
    assert!(log.contains("exited with code 78"), "the distinct configuration exit code:\n{log}");
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_updates_are_followed_and_a_bad_one_is_refused_while_running() {
    let site = Site::new(false).await;
    let core = site.start_core(json!({"pollPeriodMs": 100, "statsPeriodMs": 100})).await;
    site.wait_running(&core).await;
    let mut readings = observe_readings(&core);
    next_reading(&mut readings).await;
    let update = |key: &str, value: Value| {
        core.config().update(SENSOR_COMPONENT, &[key.to_owned()], &value, epoch_ms() as i64).unwrap();
    };

    // A bad value: refused, logged, the sensor carries on with what it had.
    update("pollPeriodMs", json!(0));
    let deadline = Instant::now() + WAIT;
    while !site.log().contains("configuration update refused") {
        assert!(Instant::now() < deadline, "the refusal is logged:\n{}", site.log());
        next_reading(&mut readings).await;
    }
    let before = next_reading(&mut readings).await;
    assert!(next_reading(&mut readings).await.seq > before.seq, "still polling");

    // The plant moves (to an address where nothing listens): the whole configuration is checked
    // on every update, so this is applied once the bad value is fixed too, and the sensor follows.
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    update("modbus", json!({"address": nowhere.to_string(), "reconnectMinMs": 50}));
    update("pollPeriodMs", json!(100));
    let base = site.stats(&core)["polls"]["failed"].as_u64().unwrap_or(0);
    site.wait_stats(&core, "polls failing at the new address", |s| {
        s["polls"]["failed"].as_u64() >= Some(base + 3) && s["polls"]["connected"] == false
    })
    .await;
    assert_eq!(core.states().get(SENSOR_COMPONENT), Some(&ComponentState::Running));
    core.shutdown(WAIT).await;
}
