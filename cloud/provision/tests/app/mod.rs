//! `provision::app` against the local cloud, with the real function binaries of
//! `pump-functions` running under its Lambda: the rules invoke them, the tables fill, the shadow
//! gets the cloud's request for maintenance, the raw batches land in S3 by date.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use provision::ClientOptions;
use provision::app::{AppClients, AppDeployment, AppSpec, deploy_app};
use serde_json::{Value, json};

use crate::common::{TestCloud, admin_credentials};

/// The functions' first invocation starts their processes; every wait allows for that.
const DEADLINE: Duration = Duration::from_secs(30);

/// Where the workspace's binaries are: next to this test's own `provision`.
fn functions_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_provision")).parent().expect("a target directory").to_path_buf();
    assert!(
        dir.join(provision::app::ANOMALY_HANDLER_BIN).exists(),
        "build the functions first: cargo build -p pump-functions (the test command builds the workspace)"
    );
    dir
}

struct Harness {
    clients: AppClients,
    data: aws_sdk_iotdataplane::Client,
    spec: AppSpec,
}

async fn harness(cloud: &TestCloud) -> Harness {
    let options = ClientOptions {
        endpoint_url: Some(cloud.cloud.endpoints.http.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(admin_credentials(&cloud.cloud.endpoints)),
    };
    Harness {
        clients: AppClients {
            iot: provision::iot_client(&options).await,
            iam: provision::iam_client(&options).await,
            lambda: provision::lambda_client(&options).await,
            dynamodb: provision::dynamodb_client(&options).await,
            s3: provision::s3_client(&options).await,
        },
        data: provision::iot_data_client(&options).await,
        spec: AppSpec {
            prefix: "pump".into(),
            functions_dir: functions_dir(),
            bucket: "pump-landing".into(),
            maintenance_repeats: 3,
            maintenance_window_minutes: 10,
            function_timeout_secs: 10,
            iot_data_endpoint: None,
        },
    }
}

impl Harness {
    async fn publish(&self, topic: &str, payload: &Value) {
        self.data
            .publish()
            .topic(topic)
            .qos(1)
            .payload(aws_sdk_iotdataplane::primitives::Blob::new(payload.to_string()))
            .send()
            .await
            .expect("publish");
    }

    async fn shadow(&self, thing: &str) -> Value {
        match self.data.get_thing_shadow().thing_name(thing).shadow_name("pump").send().await {
            Ok(out) => serde_json::from_slice(out.payload().map(|p| p.as_ref()).unwrap_or(b"null")).unwrap(),
            Err(_) => Value::Null,
        }
    }

    async fn report(&self, thing: &str, mode: &str) {
        let doc = json!({"state": {"reported": {"mode": mode}}});
        self.data
            .update_thing_shadow()
            .thing_name(thing)
            .shadow_name("pump")
            .payload(aws_sdk_iotdataplane::primitives::Blob::new(doc.to_string()))
            .send()
            .await
            .expect("report the mode");
    }

    async fn incidents(
        &self,
        deployed: &AppDeployment,
        thing: &str,
    ) -> Vec<std::collections::HashMap<String, AttributeValue>> {
        let out = self
            .clients
            .dynamodb
            .query()
            .table_name(&deployed.names.incidents_table)
            .key_condition_expression("thing = :t")
            .expression_attribute_values(":t", AttributeValue::S(thing.into()))
            .send()
            .await
            .expect("query the incidents");
        out.items().to_vec()
    }
}

/// Polls `look` until `done` holds, failing with what was last seen after [`DEADLINE`].
async fn eventually<T: std::fmt::Debug>(what: &str, look: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    site_testkit::wait_until_within(DEADLINE, what, look, done, |seen| format!("{seen:?}")).await
}

fn anomaly(id: &str, detector: &str, ts: i64, active: bool) -> Value {
    json!({"v": 1, "id": id, "ts": ts, "reading_seq": 1, "detector": detector, "kind": "cavitation",
           "active": active, "severity": if active { 0.6 } else { 0.0 }, "reason": "suction low", "features": {}})
}

/// Three cavitation faults a minute apart, the first one seen by both detectors.
fn three_faults(base: i64) -> Vec<Value> {
    let mut events = vec![anomaly("model-0", "model", base + 500, true)];
    for i in 0..3 {
        let ts = base + i * 60_000;
        events.push(anomaly(&format!("rules-{i}"), "rules", ts, true));
        events.push(anomaly(&format!("rules-{i}"), "rules", ts + 20_000, false));
    }
    events.push(anomaly("model-0", "model", base + 21_000, false));
    events.sort_by_key(|e| e["ts"].as_i64());
    events
}

fn s(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(v)) | Some(AttributeValue::N(v)) => v.clone(),
        Some(AttributeValue::Bool(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn repeated_faults_become_incidents_and_a_request_for_maintenance_and_telemetry_lands_by_hour_and_date() {
    let cloud = TestCloud::start().await;
    let h = harness(&cloud).await;
    let deployed = deploy_app(&h.clients, &h.spec).await.expect("deploy the cloud side");
    for expected in
        ["table pump-incidents created", "function pump-anomaly-handler created", "rule pump_telemetry created"]
    {
        assert!(deployed.changes.iter().any(|c| c.starts_with(expected)), "{expected}: {:?}", deployed.changes);
    }
    let again = deploy_app(&h.clients, &h.spec).await.expect("deploy again");
    assert!(again.changes.is_empty(), "a second run changes nothing: {:?}", again.changes);

    // pump-1 runs in auto; pump-2 is held by an operator in manual.
    h.report("pump-1", "auto").await;
    h.report("pump-2", "manual").await;
    let base = 1_796_660_000_000_i64;
    for thing in ["pump-1", "pump-2"] {
        for event in three_faults(base) {
            h.publish(&format!("dt/pump/{thing}/anomalies"), &event).await;
        }
    }
    // A second delivery of an event is recorded once.
    h.publish("dt/pump/pump-1/anomalies", &anomaly("rules-0", "rules", base, true)).await;

    let rows =
        eventually("pump-2's eight incidents", async || h.incidents(&deployed, "pump-2").await, |r| r.len() == 8).await;
    let rows1 = h.incidents(&deployed, "pump-1").await;
    assert_eq!(rows1.len(), 8, "the duplicate delivery added no row");
    let first = &rows1[0];
    assert_eq!(s(first, "at"), format!("{base:013}#rules-0#raised"));
    assert_eq!(
        (s(first, "kind"), s(first, "detector"), s(first, "clearing")),
        ("cavitation".into(), "rules".into(), "false".into())
    );
    assert!(first.contains_key("receivedAt") && first.contains_key("recordedAt") && first.contains_key("time"));

    // The third occurrence (the model's overlapping raise is not one) asked for maintenance.
    let asked: Vec<_> = rows1.iter().filter(|r| r.contains_key("maintenance")).collect();
    assert_eq!(asked.len(), 1, "{rows1:?}");
    assert_eq!(s(asked[0], "at"), format!("{:013}#rules-2#raised", base + 120_000));
    assert_eq!(s(asked[0], "occurrences"), "3");
    assert!(s(asked[0], "maintenance").ends_with("maintenance asked for"), "{}", s(asked[0], "maintenance"));
    let shadow = h.shadow("pump-1").await;
    assert_eq!(shadow["state"]["desired"]["mode"], "maintenance", "{shadow}");

    // An operator holding pump-2 by hand keeps it: noted, not written.
    let noted: Vec<_> = rows.iter().filter(|r| r.contains_key("maintenance")).collect();
    assert_eq!(noted.len(), 1);
    assert!(
        s(noted[0], "maintenance").contains("not asked, the pump is in manual mode"),
        "{}",
        s(noted[0], "maintenance")
    );
    assert_eq!(h.shadow("pump-2").await["state"].get("desired"), None);

    // Telemetry: hourly aggregates, and the raw batch in S3 under its date and thing.
    let hour_start = 1_796_662_800_000_i64; // 2026-12-07T17:00:00Z
    let reading = |ts: i64, flow: f64| json!({"ts": ts, "seq": ts, "flow_m3h": flow, "running": true});
    let batch =
        json!({"v": 1, "thing": "pump-1", "readings": [reading(hour_start, 90.0), reading(hour_start + 1_000, 110.0)]});
    h.publish("dt/pump/pump-1/telemetry", &batch).await;
    h.publish("dt/pump/pump-1/telemetry", &batch).await;
    let later = json!({"v": 1, "thing": "pump-1", "readings": [reading(hour_start + 2_000, 100.0)]});
    h.publish("dt/pump/pump-1/telemetry", &later).await;
    let aggregate = eventually(
        "the hour's aggregate with three readings",
        async || {
            h.clients
                .dynamodb
                .get_item()
                .table_name(&deployed.names.aggregates_table)
                .key("thing", AttributeValue::S("pump-1".into()))
                .key("hour", AttributeValue::S("2026-12-07T17".into()))
                .send()
                .await
                .expect("get the aggregate")
                .item
        },
        |item| item.as_ref().is_some_and(|i| s(i, "readings") == "3"),
    )
    .await
    .unwrap_or_default();
    assert_eq!(s(&aggregate, "batches"), "2", "the batch delivered twice counted once");
    let flow = aggregate["fields"].as_m().unwrap()["flow_m3h"].as_m().unwrap();
    assert_eq!((s(flow, "min"), s(flow, "max"), s(flow, "mean")), ("90".into(), "110".into(), "100".into()));

    let today = time::OffsetDateTime::now_utc().date();
    let prefix = format!("telemetry/date={today}/thing=pump-1/");
    let keys = eventually(
        "three raw batches in S3",
        async || {
            let out = h.clients.s3.list_objects_v2().bucket("pump-landing").prefix(&prefix).send().await.expect("list");
            out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect::<Vec<_>>()
        },
        |keys| keys.len() == 3,
    )
    .await;
    let object = h.clients.s3.get_object().bucket("pump-landing").key(&keys[0]).send().await.expect("get a raw batch");
    let body: Value = serde_json::from_slice(&object.body.collect().await.unwrap().into_bytes()).unwrap();
    assert_eq!(body["thing"], "pump-1");
    assert!(body["readings"].as_array().is_some_and(|r| !r.is_empty()), "{body}");
}

#[tokio::test]
async fn a_missing_function_binary_is_named_before_anything_is_created() {
    let cloud = TestCloud::start().await;
    let mut h = harness(&cloud).await;
    let empty = tempfile::tempdir().unwrap();
    h.spec.functions_dir = empty.path().to_path_buf();
    match deploy_app(&h.clients, &h.spec).await {
        Err(provision::ProvisionError::InvalidInput(m)) => assert!(m.contains("anomaly-handler"), "{m}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let tables = h.clients.dynamodb.list_tables().send().await.expect("list tables");
    assert!(tables.table_names().is_empty(), "nothing created: {:?}", tables.table_names());
}
