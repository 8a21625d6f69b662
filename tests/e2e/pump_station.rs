//! End to end: the pump station's demo binary runs a shortened scenario — local cloud,
//! provisioning through the AWS SDK, plant, simulated core with the three components from
//! their recipes and the model component, the analyzer running the model detector only, the
//! operator's desired change, a fault and its protective action, the resume, and a stop of
//! the local cloud mid-run — and each step's effect is checked at the plant (Modbus registers,
//! read by the demo as any SCADA client would) and in the cloud (shadow version and state,
//! telemetry and anomaly events received by an MQTT client).

use std::process::Command;

use serde_json::Value;

fn run_demo(out: &std::path::Path) -> (std::process::Output, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_pump-station"))
        .args(["demo", "--speed-changes", "2", "--fault-cycles", "1", "--outage-seconds", "3", "--detector", "model"])
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "error")
        .output()
        .expect("the demo binary runs");
    let report =
        std::fs::read(out.join("report.json")).map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or(Value::Null);
    (output, report)
}

#[test]
fn the_shortened_scenario_holds_at_the_plant_and_in_the_cloud_across_a_cloud_outage() {
    let dir = tempfile::tempdir().unwrap();
    let (output, report) = run_demo(dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the demo failed:\n{stderr}\nreport: {report:#}");

    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 6, "{stderr}");
    assert!(steps.iter().all(|s| s["passed"] == true), "{report:#}");
    assert_eq!(report["passed"], true);

    // The operator's changes reached the plant's setpoint register (timed per change).
    assert_eq!(report["delta_to_actuation"]["samples_ms"].as_array().unwrap().len(), 2);
    // The fault led to a protective action at the plant.
    assert_eq!(report["fault_to_action"]["samples_ms"].as_array().unwrap().len(), 1);
    assert!(steps[3]["detail"].as_str().unwrap().contains("setpoint 1800 rpm"), "{}", steps[3]["detail"]);

    // The cloud received telemetry, the anomaly raised and cleared, and shadow updates.
    let thing = "pump-station-1";
    let topics = &report["topics"];
    let telemetry = &topics[format!("dt/pump/{thing}/telemetry")];
    assert!(telemetry["messages"].as_u64().unwrap() >= 2, "{topics:#}");
    assert!(telemetry["bytes_max"].as_u64().unwrap() <= 5120, "batches stay within one 5 KiB unit");
    let anomalies = &topics[format!("dt/pump/{thing}/anomalies")];
    assert!(anomalies["messages"].as_u64().unwrap() >= 2, "raised and cleared: {topics:#}");
    assert_eq!(anomalies["example"]["kind"], "cavitation");

    // The model detector decided the fault: the step's anomaly, and every event in the cloud.
    assert_eq!(report["detector"], "model");
    let events = report["anomalies"].as_array().expect("anomaly events in the report");
    let raised = events.iter().find(|e| e["active"] == true).expect("a raised anomaly");
    assert_eq!((&raised["kind"], &raised["detector"]), (&"cavitation".into(), &"model".into()), "{events:#?}");
    assert!(events.iter().all(|e| e["detector"] == "model"), "only the model runs: {events:#?}");
    assert!(steps[3]["detail"].as_str().unwrap().contains("by \"model\""), "{}", steps[3]["detail"]);

    // reported.model: the shipped model, loaded and running, as the controller reports it.
    let card: Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../components/model/model-card.json")).unwrap(),
    )
    .unwrap();
    let model = &report["model"];
    assert_eq!(model["status"], "running", "{model:#}");
    assert_eq!((&model["version"], &model["name"]), (&"1.0.0".into(), &card["name"]), "{model:#}");
    assert_eq!(model["sha256"], card["model"]["sha256"], "{model:#}");
    assert_eq!((&model["detector"], &model["running"]), (&"model".into(), &serde_json::json!(["model"])));
    assert_eq!(model["error"], "");
    assert_eq!(&report["shadow"]["state"]["reported"]["model"], model);

    // The shadow converged: desired and reported agree on the resumed speed, protection is off.
    let shadow = &report["shadow"];
    let desired = shadow["state"]["desired"]["speedRpm"].as_f64().unwrap();
    assert_eq!(shadow["state"]["reported"]["speedRpm"].as_f64(), Some(desired), "{shadow:#}");
    assert_eq!(shadow["state"]["reported"]["protection"]["active"], false, "{shadow:#}");
    assert!(shadow["version"].as_u64().unwrap() > 5, "{shadow:#}");

    // Step 6: nothing lost or reordered across the outage.
    assert!(steps[5]["detail"].as_str().unwrap().contains("without a gap"), "{}", steps[5]["detail"]);
    assert!(dir.path().join("report.md").is_file());

    edge_footprint_and_cost_per_site(&report);
}

/// The report's edge footprint and cost per site: every process measured from `/proc`, each
/// topic billed by its own rule, this design cheaper than the naive one.
fn edge_footprint_and_cost_per_site(report: &Value) {
    let processes = report["footprint"]["processes"].as_array().expect("a footprint in the report");
    for name in
        ["simulated core", "com.example.pump.Sensor", "com.example.pump.Analyzer", "com.example.pump.Controller"]
    {
        let p = processes.iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name}: {processes:#?}"));
        assert!(!p["pids"].as_array().unwrap().is_empty(), "{name} was never seen: {p:#}");
        let (rss, hwm) = (p["vm_rss_kib"].as_u64().unwrap(), p["vm_hwm_kib"].as_u64().unwrap());
        assert!(rss > 0 && hwm >= rss, "{name}: {p:#}");
        assert!(p["cpu_seconds"].as_f64().unwrap() > 0.0, "{name}: {p:#}");
        assert!(p["binary_stripped_bytes"].as_u64().unwrap() > 0, "{name}: {p:#}");
    }
    let core_pid = processes[0]["pids"][0].as_u64().unwrap();
    assert!(
        processes[1..].iter().all(|p| p["pids"][0].as_u64() != Some(core_pid)),
        "components are their own processes"
    );

    let thing = "pump-station-1";
    let topics = &report["topics"];
    let accepted = &topics[format!("$aws/things/{thing}/shadow/name/pump/update/accepted")];
    assert!(
        accepted["billed"]["shadow_operations"].as_u64().unwrap() >= accepted["messages"].as_u64().unwrap(),
        "{topics:#}"
    );
    let documents = &topics[format!("$aws/things/{thing}/shadow/name/pump/update/documents")];
    assert_eq!(documents["billed"], serde_json::json!({"messages": 0, "shadow_operations": 0}), "{topics:#}");
    let telemetry = &topics[format!("dt/pump/{thing}/telemetry")];
    assert_eq!(telemetry["billed"]["messages"], telemetry["messages"], "one 5 KiB unit per batch");

    let cost = &report["cost"];
    assert_eq!(cost["prices"]["region"], "us-east-1");
    assert!(cost["observed"]["readings"].as_u64().unwrap() > 0, "{cost:#}");
    for s in cost["scenarios"].as_array().expect("scenarios") {
        assert_eq!(s["cost"]["greengrass"], 0.16, "{s:#}");
        assert!(s["cost"]["total"].as_f64().unwrap() < s["naive_cost"]["total"].as_f64().unwrap(), "{s:#}");
    }
}
