//! `gg-sdk-client`: a Greengrass component written on AWS's official Rust component SDK
//! (`aws-greengrass-component-sdk`, C underneath), for the simulated core's conformance tests.
//!
//! Started by a core from its recipe, it connects with the environment the core gives
//! (`SVCUID`, `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`), performs every IPC
//! operation the SDK supports that a component can try on itself without side effects on
//! others, and writes what it saw as a JSON report (temporary file, then rename). The test
//! compares the report with what a real nucleus answers. A failing step is recorded and the
//! next one still runs; the process exits 0 once the report is written, 1 if it cannot be.
//!
//! ```text
//! gg-sdk-client --report FILE --topic T --denied-topic T --shadow S --denied-shadow S
//!               --iot-topic T [--receive-timeout-ms 10000]
//! ```

use std::collections::HashMap;
use std::io::Write as _;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gg_sdk::{ComponentState, Kv, Object, Qos, Sdk, SubscribeToTopicPayload, UnpackedObject};
use serde_json::{Map, Value, json};

/// Room for one decoded response (shadow documents are at most 8 KiB by default, 30 KiB at most).
const RESPONSE_MEM: usize = 64 * 1024;

/// The command line (every value comes from the recipe's Run script).
struct Args {
    report: PathBuf,
    topic: String,
    denied_topic: String,
    shadow: String,
    denied_shadow: String,
    iot_topic: String,
    receive_timeout: Duration,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut values: HashMap<String, String> = HashMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let Some(name) = flag.strip_prefix("--") else {
                return Err(format!("unexpected argument {flag:?}"));
            };
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            values.insert(name.to_owned(), value);
        }
        let timeout_ms = match values.remove("receive-timeout-ms") {
            Some(v) => v.parse::<u64>().map_err(|e| format!("--receive-timeout-ms {v:?}: {e}"))?,
            None => 10_000,
        };
        let mut take = |name: &str| values.remove(name).ok_or_else(|| format!("--{name} is required"));
        let args = Self {
            report: PathBuf::from(take("report")?),
            topic: take("topic")?,
            denied_topic: take("denied-topic")?,
            shadow: take("shadow")?,
            denied_shadow: take("denied-shadow")?,
            iot_topic: take("iot-topic")?,
            receive_timeout: Duration::from_millis(timeout_ms),
        };
        if let Some(unknown) = values.keys().next() {
            return Err(format!("unknown flag --{unknown}"));
        }
        Ok(args)
    }
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("gg-sdk-client: {e}");
            return ExitCode::from(2);
        }
    };
    let sdk = Sdk::init();
    let mut report = Report::default();
    match sdk.connect() {
        Ok(()) => {
            report.step("Connect", Ok(Value::Null));
            run_steps(&sdk, &args, &mut report);
        }
        Err(e) => report.step("Connect", Err(e)),
    }
    let thing = std::env::var("AWS_IOT_THING_NAME").unwrap_or_default();
    let doc = json!({
        "client": "aws-greengrass-component-sdk",
        "thingName": thing,
        "steps": Value::Object(report.steps),
        "complete": true,
    });
    match write_atomically(&args.report, &doc) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gg-sdk-client: cannot write the report {}: {e}", args.report.display());
            ExitCode::FAILURE
        }
    }
}

/// The steps in order; each records its outcome whatever the others did.
fn run_steps(sdk: &Sdk, args: &Args, report: &mut Report) {
    let thing = std::env::var("AWS_IOT_THING_NAME").unwrap_or_default();
    let mut mem = vec![MaybeUninit::<u8>::uninit(); RESPONSE_MEM];

    report.step("UpdateState", sdk.update_state(ComponentState::Running).map(|()| Value::Null));

    // Configuration: a string leaf, an object, a key that does not exist, a deployed value.
    report.step("GetConfiguration.greeting", sdk.get_config_str(&["greeting"], None, &mut mem).map(|s| json!(s)));
    report.step("GetConfiguration.nested", sdk.get_config(&["nested"], None, &mut mem).map(|o| to_json(&o)));
    report.step("GetConfiguration.missing", sdk.get_config(&["noSuchKey"], None, &mut mem).map(|o| to_json(&o)));
    // Only there when the deployment merged it (`--update-config` of the core).
    report.step("GetConfiguration.deployed", sdk.get_config_str(&["deployed"], None, &mut mem).map(|s| json!(s)));

    // UpdateConfiguration, seen both by a read and by a configuration-update subscriber.
    let (config_tx, config_rx) = mpsc::channel::<Value>();
    let on_config = move |component: &str, key_path: &[&str]| {
        let _ = config_tx.send(json!({ "componentName": component, "keyPath": key_path }));
    };
    let config_sub = sdk.subscribe_to_configuration_update(None, &["counter"], &on_config);
    report.step("SubscribeToConfigurationUpdate", config_sub.as_ref().map(|_| Value::Null).map_err(|e| *e));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    report.step("UpdateConfiguration", sdk.update_config(&["counter"], Some(now), 42_i64).map(|()| Value::Null));
    report.step("GetConfiguration.counter", sdk.get_config(&["counter"], None, &mut mem).map(|o| to_json(&o)));
    if config_sub.is_ok() {
        report.record("ConfigurationUpdateEvent", wait_for(&config_rx, 1, args.receive_timeout));
    }
    drop(config_sub);

    // Local pub/sub: subscribe, publish JSON and binary, receive both.
    let (msg_tx, msg_rx) = mpsc::channel::<Value>();
    let on_message = move |topic: &str, payload: SubscribeToTopicPayload| {
        let message = match payload {
            SubscribeToTopicPayload::Json(map) => json!({ "topic": topic, "json": map_to_json(&map) }),
            SubscribeToTopicPayload::Binary(bytes) => json!({ "topic": topic, "binaryHex": hex(bytes) }),
        };
        let _ = msg_tx.send(message);
    };
    let topic_sub = sdk.subscribe_to_topic(&args.topic, &on_message);
    report.step("SubscribeToTopic", topic_sub.as_ref().map(|_| Value::Null).map_err(|e| *e));
    let nonce = format!("{:x}", now.as_nanos());
    let json_message = [Kv::new("nonce", Object::buf(&nonce)), Kv::new("client", Object::buf("gg-sdk"))];
    report.step("PublishToTopic.json", sdk.publish_to_topic_json(&args.topic, &json_message).map(|()| json!(nonce)));
    let binary = [0x00, 0xff, 0x10, 0x80, b'g', b'g'];
    report
        .step("PublishToTopic.binary", sdk.publish_to_topic_binary(&args.topic, &binary).map(|()| json!(hex(&binary))));
    if topic_sub.is_ok() {
        report.record("ReceivedMessages", wait_for(&msg_rx, 2, args.receive_timeout));
    }
    drop(topic_sub);

    // Local shadow: two updates, a read, the list, a delete, a read of the deleted shadow.
    let shadow = Some(args.shadow.as_str());
    for (step, status) in [("UpdateThingShadow.first", "starting"), ("UpdateThingShadow.second", "ok")] {
        let doc = json!({ "state": { "reported": { "nonce": nonce, "status": status } } }).to_string();
        let outcome = sdk.update_thing_shadow(&thing, shadow, doc.as_bytes(), Some(mem.as_mut_slice()));
        report.step(step, outcome.map(|body| body.map_or(Value::Null, parse_document)));
    }
    report.step("GetThingShadow", sdk.get_thing_shadow(&thing, shadow, &mut mem).map(parse_document));
    let mut names = Vec::new();
    let listed = sdk.list_named_shadows_for_thing(&thing, &mut |name: &str| names.push(name.to_owned()));
    report.step("ListNamedShadowsForThing", listed.map(|()| json!(names)));
    report.step("DeleteThingShadow", sdk.delete_thing_shadow(&thing, shadow).map(|()| Value::Null));
    report.step("GetThingShadow.deleted", sdk.get_thing_shadow(&thing, shadow, &mut mem).map(parse_document));

    // IoT Core: answered by the core's bridge (or its absence).
    let iot_payload = json!({ "nonce": nonce, "client": "gg-sdk" }).to_string();
    report.step(
        "PublishToIoTCore",
        sdk.publish_to_iot_core(&args.iot_topic, iot_payload.as_bytes(), Qos::AtLeastOnce).map(|()| json!(iot_payload)),
    );

    // Denied by accessControl: the SDK's typed errors, and the raw `_errorCode` on the wire.
    report.step(
        "Denied.PublishToTopic",
        sdk.publish_to_topic_json(&args.denied_topic, &json_message).map(|()| Value::Null),
    );
    let denied_doc = json!({ "state": { "reported": { "nonce": nonce } } }).to_string();
    report.step(
        "Denied.UpdateThingShadow",
        sdk.update_thing_shadow(&thing, Some(&args.denied_shadow), denied_doc.as_bytes(), None).map(|_| Value::Null),
    );
    report.record("Denied.PublishToTopic.raw", raw_publish(sdk, &args.denied_topic, &nonce));
}

/// PublishToTopic through the SDK's generic `call`, which hands over the server's
/// `_errorCode` and `_message` as they came.
fn raw_publish(sdk: &Sdk, topic: &str, nonce: &str) -> Value {
    let body = [Kv::new("nonce", Object::buf(nonce))];
    let json_message = [Kv::new("message", Object::map(&body))];
    let publish_message = [Kv::new("jsonMessage", Object::map(&json_message))];
    let params = [Kv::new("topic", Object::buf(topic)), Kv::new("publishMessage", Object::map(&publish_message))];
    let mut answer = Value::Null;
    let called = sdk.call("aws.greengrass#PublishToTopic", "aws.greengrass#PublishToTopicRequest", &params, |result| {
        answer = match result {
            Ok(response) => json!({ "ok": true, "value": map_to_json(response) }),
            Err(e) => json!({ "ok": false, "errorCode": e.error_code, "message": e.message }),
        };
        Ok(())
    });
    json!({ "answer": answer, "sdkResult": called.map_or_else(|e| json!(format!("{e:?}")), |()| json!("Ok")) })
}

/// Waits for `count` items (or the deadline), recording what arrived.
fn wait_for(rx: &mpsc::Receiver<Value>, count: usize, timeout: Duration) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    let mut items = Vec::new();
    while items.len() < count {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(item) => items.push(item),
            Err(_) => return json!({ "ok": false, "received": items, "error": "timed out" }),
        }
    }
    json!({ "ok": true, "value": items })
}

/// The steps recorded so far, in order.
#[derive(Default)]
struct Report {
    steps: Map<String, Value>,
}

impl Report {
    /// Records an SDK call: `{ok: true, value}` or `{ok: false, error: {sdkError, message}}`.
    fn step(&mut self, name: &str, outcome: gg_sdk::Result<Value>) {
        let entry = match outcome {
            Ok(value) => json!({ "ok": true, "value": value }),
            Err(e) => json!({ "ok": false, "error": { "sdkError": format!("{e:?}"), "message": e.to_string() } }),
        };
        self.steps.insert(name.to_owned(), entry);
    }

    /// Records a value built by the step itself.
    fn record(&mut self, name: &str, value: Value) {
        self.steps.insert(name.to_owned(), value);
    }
}

/// A response body as JSON, or the text when it is not JSON (so the test shows it).
fn parse_document(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| json!({ "unparsable": String::from_utf8_lossy(body), "error": e.to_string() }))
}

fn to_json(object: &Object<'_>) -> Value {
    match object.unpack() {
        UnpackedObject::Null => Value::Null,
        UnpackedObject::Bool(b) => json!(b),
        UnpackedObject::I64(i) => json!(i),
        UnpackedObject::F64(f) => json!(f),
        UnpackedObject::Buf(s) => json!(s),
        UnpackedObject::List(list) => Value::Array(list.iter().map(to_json).collect()),
        UnpackedObject::Map(map) => map_to_json(&map),
    }
}

fn map_to_json(pairs: &[Kv<'_>]) -> Value {
    Value::Object(pairs.iter().map(|kv| (kv.key().to_owned(), to_json(kv.val()))).collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `doc` to a temporary file beside `path`, syncs it, and renames it into place, so a
/// reader sees the whole report or none.
fn write_atomically(path: &Path, doc: &Value) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(serde_json::to_string_pretty(doc)?.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
