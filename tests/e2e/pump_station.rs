//! End to end: the pump station's demo binary runs a shortened scenario — local cloud,
//! provisioning through the AWS SDK, plant, simulated core with the three components from
//! their recipes and the model component, the analyzer running the model detector only, the
//! operator's desired change, a fault and its protective action, the resume, the cloud's reaction
//! to a repeated fault (rule → Lambda → DynamoDB → maintenance through the shadow), updates over the air
//! (one deferred by the controller, one broken and rolled back), a stop of the local cloud mid-run,
//! the core updating itself, and the core device dying with its disk and a replacement onboarding
//! by claim under the same thing name — and each step's effect is checked at the plant (Modbus registers,
//! read by the demo as any SCADA client would) and in the cloud (shadow version and state,
//! telemetry and anomaly events received by an MQTT client).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// What the demo printed and left behind, and what its site answered while it kept running.
struct Run {
    output: Output,
    report: Value,
    /// The plant's `GET /state` while everything kept running, `None` if it never got there.
    plant_state: Option<Value>,
    /// `audit verify` of the demo's own audit against its live cloud while it kept running: the
    /// differences found (`None` if it never got there).
    audit_differences: Option<Vec<String>>,
}

/// Runs the shortened scenario with `--keep-running`: once the demo says everything keeps
/// running, the plant it printed is asked for its state, then Ctrl-C (SIGINT) stops it all.
fn run_demo(out: &std::path::Path) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pump-station"))
        .args(["demo", "--speed-changes", "2", "--fault-cycles", "1", "--outage-seconds", "3", "--detector", "model"])
        .arg("--keep-running")
        .arg("--out")
        .arg(out)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo binary runs");
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = Vec::new();
    let mut plant_state = None;
    let mut audit_differences = None;
    let mut line = String::new();
    // Until the demo ends (a failed run does not keep running) or says how to reach the plant.
    while stdout.read_line(&mut line).unwrap_or(0) > 0 {
        printed.extend_from_slice(line.as_bytes());
        if let Some(addr) = line.trim().strip_prefix("plant control: http://").and_then(|l| l.split('/').next()) {
            plant_state = Some(get_json(addr, "/state"));
            audit_differences = Some(verify_audit(out));
            let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
            assert!(status.success(), "kill -INT");
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    let output = Output { status, stdout: printed, stderr: stderr.join().unwrap() };
    let report =
        std::fs::read(out.join("report.json")).map(|b| serde_json::from_slice(&b).unwrap()).unwrap_or(Value::Null);
    Run { output, report, plant_state, audit_differences }
}

/// `audit verify` of the demo's audit directory (`{out}/audit`) against its live local cloud
/// (`{out}/run/cloud/endpoints.json`), through the library the `audit` binary runs.
fn verify_audit(out: &std::path::Path) -> Vec<String> {
    use provision::audit::{collect::AuditClients, output};
    let dir = out.join("audit");
    let endpoints: cloud_api::endpoints::Endpoints =
        serde_json::from_slice(&std::fs::read(out.join("run/cloud/endpoints.json")).unwrap()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let options = output::read_options(&dir).expect("the demo wrote its audit directory");
        let clients = AuditClients::new(&provision::ClientOptions::for_local_cloud(&endpoints).unwrap()).await;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let audit = output::audit(&clients, &options, now).await.expect("the audit reads the live cloud");
        output::verify(&dir, &audit).expect("verify compares").iter().map(ToString::to_string).collect()
    })
}

/// A plain HTTP/1.1 GET on loopback; the JSON body.
fn get_json(addr: &str, path: &str) -> Value {
    let mut stream = std::net::TcpStream::connect(addr).expect("the plant's control port answers");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn the_shortened_scenario_holds_at_the_plant_and_in_the_cloud_across_a_cloud_outage_and_a_dead_core_device() {
    let dir = tempfile::tempdir().unwrap();
    let Run { output, report, plant_state, audit_differences } = run_demo(dir.path());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the demo failed:\n{stderr}\nreport: {report:#}");
    // --keep-running kept the site up after the scenario, until Ctrl-C stopped it cleanly.
    let plant_state = plant_state.unwrap_or_else(|| {
        panic!("the demo never said it keeps running:\n{}\n{stderr}", String::from_utf8_lossy(&output.stdout))
    });
    // The plant still runs the simulation, with the scenario's fault cleared.
    assert!(plant_state["time_s"].as_f64().is_some_and(|t| t > 0.0), "{plant_state}");
    assert_eq!(plant_state["faults"], serde_json::json!([]), "{plant_state}");

    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 13, "{stderr}");
    assert_eq!(report["passed"], true);
    let facts = &report["facts"];

    at_the_plant(facts, &report["shadow"]);
    in_the_cloud(facts, &report);

    // The components came from the cloud: one group deployment, followed to SUCCEEDED on the core.
    let deployments = report["deployments"].as_array().expect("deployment timelines");
    let first = &deployments[0];
    assert_eq!(first["succeeded"], true, "{first:#}");
    let statuses: Vec<&str> = first["events"].as_array().unwrap().iter().filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses.last(), Some(&"SUCCEEDED"), "{first:#}");
    assert!(statuses.contains(&"IN_PROGRESS"), "the core reported its progress: {statuses:?}");
    let deployed: Vec<&str> = first["components"].as_array().unwrap().iter().filter_map(|c| c[0].as_str()).collect();
    assert_eq!(deployed, ["com.example.pump.Sensor", "com.example.pump.Analyzer", "com.example.pump.Controller"]);
    // Over the air: a new analyzer version succeeded once the controller stopped deferring it;
    // a broken one failed with its cause; the core updated itself.
    assert_eq!(deployments.len(), 8, "{deployments:#?}");
    let deferrals = deployments[1]["deferrals"].as_array().expect("deferrals");
    let controller = deferrals.iter().find(|d| d["component"] == "com.example.pump.Controller");
    let controller = controller.unwrap_or_else(|| panic!("the controller deferred: {:#}", deployments[1]));
    assert!(controller["deferredMs"].as_u64().is_some_and(|ms| ms >= 5000), "one recheck at least: {controller}");
    assert!(controller["message"].as_str().is_some_and(|m| m.contains("protective action")), "{controller}");
    assert_eq!(deployments[1]["succeeded"], true, "{:#}", deployments[1]);
    assert_eq!(deployments[1]["components"][1], serde_json::json!(["com.example.pump.Analyzer", "1.1.0"]));
    assert!(deployments[1]["bytesDownloaded"].as_u64().is_some_and(|b| b > 0), "{:#}", deployments[1]);
    released_the_retrained_model(&deployments[2..5]);
    let broken = &deployments[5];
    assert_eq!(broken["succeeded"], false, "{broken:#}");
    let last = broken["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["status"], "FAILED", "{broken:#}");
    assert!(last["reason"].as_str().is_some_and(|r| r.contains("1.2.0") && r.contains("BROKEN")), "{last}");
    let core_update = &deployments[6];
    assert_eq!(core_update["succeeded"], true, "{core_update:#}");
    let nucleus = core_update["components"].as_array().unwrap().iter().find(|c| c[0] == "aws.greengrass.Nucleus");
    assert!(nucleus.is_some_and(|c| c[1] == "2.15.0"), "{core_update:#}");
    // The replacement of a dead core device received the group's deployment again: the same
    // components and nucleus version, to SUCCEEDED.
    let revision = &deployments[7];
    assert_eq!(revision["succeeded"], true, "{revision:#}");
    assert_eq!(revision["components"], core_update["components"], "{revision:#}");
    assert_ne!(revision["deploymentId"], core_update["deploymentId"], "a new revision: {revision:#}");
    the_cloud_reacted_to_a_repeated_fault(&report);
    recovered_from_a_dead_core_device(&report);

    // The model detector decided the fault: every event in the cloud came from it.
    assert_eq!(report["detector"], "model");
    let events = report["anomalies"].as_array().expect("anomaly events in the report");
    let raised = events.iter().find(|e| e["active"] == true).expect("a raised anomaly");
    assert_eq!((&raised["kind"], &raised["detector"]), (&"cavitation".into(), &"model".into()), "{events:#?}");
    assert!(events.iter().all(|e| e["detector"] == "model"), "only the model runs: {events:#?}");
    assert!(events.iter().any(|e| e["active"] == false && e["id"] == raised["id"]), "it cleared: {events:#?}");
    // It was decided on a reading the cloud also received in telemetry.
    let seqs: Vec<u64> = facts["telemetry_seqs"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let decided_on = raised["reading_seq"].as_u64().unwrap();
    assert!(seqs.contains(&decided_on), "reading {decided_on} is not in the telemetry received");
    // The readings around it reached S3 under the core's own prefix, with scoped credentials.
    let windows = report["anomaly_windows"].as_array().expect("anomaly windows in the report");
    let id = raised["id"].as_str().unwrap();
    let window = windows
        .iter()
        .find(|w| {
            w["object"]
                .as_str()
                .is_some_and(|o| o.contains("/pump-station-1/anomalies/") && o.ends_with(&format!("/{id}.json")))
        })
        .unwrap_or_else(|| panic!("no window of {id}: {windows:#?}"));
    assert_eq!((&window["before_samples"], &window["readings"]), (&60.into(), &80.into()), "{window:#}");
    assert!(report["anomaly_to_window"]["p50_ms"].as_f64().is_some(), "{:#}", report["anomaly_to_window"]);

    // reported.model at the end: the retrained release the cloud rolled out, loaded and running,
    // as the controller reports it.
    let card: Value = serde_json::from_slice(
        &std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../components/model/releases/2.1.0/model-card.json"))
            .unwrap(),
    )
    .unwrap();
    let model = &report["model"];
    assert_eq!(model["status"], "running", "{model:#}");
    assert_eq!((&model["version"], &model["name"]), (&card["version"], &card["name"]), "{model:#}");
    assert_eq!(model["sha256"], card["model"]["sha256"], "{model:#}");
    assert_eq!((&model["detector"], &model["running"]), (&"model".into(), &serde_json::json!(["model"])));
    assert_eq!(model["error"], "");
    assert_eq!(&report["shadow"]["state"]["reported"]["model"], model);
    assert!(dir.path().join("report.md").is_file());

    edge_footprint_and_cost_per_site(&report);
    rotated_the_core_certificate(&report);
    audited_its_own_cloud(dir.path(), audit_differences);
}

/// The retrained model shipped as `provision model release` ships it: its release revised the
/// group's deployment with only the model changed, to SUCCEEDED; a model for other features
/// failed its Install check on the core, naming the model component; the retrained model was
/// deployed again.
fn released_the_retrained_model(timelines: &[Value]) {
    let [good, refused, again] = timelines else { panic!("three model deployments: {timelines:#?}") };
    assert_eq!(good["succeeded"], true, "{good:#}");
    assert_eq!(good["components"], serde_json::json!([["com.example.pump.Model", "2.1.0"]]), "{good:#}");
    assert_eq!(refused["succeeded"], false, "{refused:#}");
    let last = refused["events"].as_array().unwrap().last().unwrap();
    assert_eq!(last["status"], "FAILED", "{refused:#}");
    assert!(last["reason"].as_str().is_some_and(|r| r.contains("com.example.pump.Model")), "{last}");
    assert_eq!(again["succeeded"], true, "{again:#}");
    assert_eq!(again["components"], good["components"], "{again:#}");
}

/// The core's certificate was rotated once through a rotation job: a new certificate, the old
/// one retired, with the time it took.
fn rotated_the_core_certificate(report: &Value) {
    let step = report["steps"].as_array().unwrap().iter().find(|s| s["key"] == "certificate_rotation");
    assert!(step.is_some_and(|s| s["passed"] == true), "{step:?}");
    let rotation = &report["certificate_rotation"];
    assert!(rotation["job_id"].as_str().is_some_and(|j| !j.is_empty()), "{rotation:#}");
    assert_ne!(rotation["new_certificate"], rotation["old_certificate"], "{rotation:#}");
    assert!(rotation["rotate_ms"].as_u64().is_some_and(|ms| ms > 0), "{rotation:#}");
}

/// The demo ended with the audit of its own cloud: the directory is there, `audit verify` held
/// against the live cloud, and the rotation lines (GG-3, SC-7) are met.
fn audited_its_own_cloud(out: &std::path::Path, differences: Option<Vec<String>>) {
    let dir = out.join("audit");
    assert!(dir.join("CHECKLIST.md").is_file() && dir.join("manifest.json").is_file(), "no audit in {dir:?}");
    let differences = differences.expect("the demo kept running with its audit");
    assert!(differences.is_empty(), "audit verify: {differences:#?}");
    let lines: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("checklist.json")).unwrap()).unwrap();
    for id in ["GG-3", "SC-7"] {
        let line = lines.iter().find(|l| l["id"] == id).unwrap_or_else(|| panic!("no {id}"));
        assert_eq!(line["met"], true, "{line:#}");
    }
}

/// The cloud reacted to a fault repeated three times: every anomaly event became an incident row
/// written by the Lambda function the rule invoked, the third occurrence asked for maintenance
/// through the shadow, and the controller stopped the pump (read over Modbus) until the operator
/// returned it to service.
fn the_cloud_reacted_to_a_repeated_fault(report: &Value) {
    let reaction = &report["cloud_reaction"];
    let incidents = reaction["incidents"].as_array().expect("incident rows");
    let raised = incidents.iter().filter(|r| r["active"] == true && r["kind"] == "cavitation").count();
    assert!(raised >= 3, "three raises at least: {incidents:#?}");
    assert!(incidents.iter().all(|r| r["detector"] == "model"), "only the model runs: {incidents:#?}");
    let asked: Vec<&Value> = incidents.iter().filter(|r| r["maintenance"].is_string()).collect();
    assert_eq!(asked.len(), 1, "{incidents:#?}");
    assert!(asked[0]["maintenance"].as_str().unwrap().contains("3 cavitation faults"), "{:#}", asked[0]);
    assert!(reaction["rule_to_row"]["p50_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{reaction:#}");
    assert!(reaction["hourly_aggregates"].as_u64().is_some_and(|n| n >= 1), "{reaction:#}");
    assert!(reaction["raw_batches"].as_u64().is_some_and(|n| n >= 1), "{reaction:#}");
    let reads = report["facts"]["plant_reads"].as_array().unwrap();
    let stopped: Vec<&Value> = reads.iter().filter(|r| r["after"] == "maintenance").collect();
    assert_eq!(stopped.len(), 1, "{reads:#?}");
    assert_eq!(stopped[0]["run"], false, "the pump stopped for maintenance: {:#}", stopped[0]);
    let back: Vec<&Value> = reads.iter().filter(|r| r["after"] == "back in service").collect();
    assert_eq!(back.len(), 1, "{reads:#?}");
    assert_eq!(back[0]["run"], true, "{:#}", back[0]);
}

/// The core device died with its disk: the replacement is the same thing with a new certificate
/// (the failed one revoked), drove the plant to the desired speed the operator set while the site
/// was dead (the setpoint register read over Modbus), and the report says what was lost (only
/// what was on the device) and what the cloud kept.
fn recovered_from_a_dead_core_device(report: &Value) {
    let recovery = &report["recovery"];
    assert_eq!(recovery["thing"], "pump-station-1", "{recovery:#}");
    let failed: Vec<&str> =
        recovery["failed_certificates"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let replacement = recovery["replacement_certificate"].as_str().unwrap();
    assert!(!failed.is_empty() && !replacement.is_empty() && !failed.contains(&replacement), "{recovery:#}");
    assert!(recovery["processes_killed"].as_u64().unwrap() >= 5, "launcher, core, components: {recovery:#}");
    let desired = recovery["desired_speed_rpm"].as_f64().unwrap();
    let reads = report["facts"]["plant_reads"].as_array().unwrap();
    let recovered: Vec<&Value> = reads.iter().filter(|r| r["after"] == "recovered").collect();
    assert_eq!(recovered.len(), 1, "{reads:#?}");
    assert_eq!((recovered[0]["setpoint_rpm"].as_f64(), &recovered[0]["run"]), (Some(desired), &Value::Bool(true)));
    assert_eq!(recovered[0]["desired_rpm"].as_f64(), Some(desired));
    let (control, telemetry) =
        (recovery["to_control_ms"].as_u64().unwrap(), recovery["to_telemetry_ms"].as_u64().unwrap());
    assert!(control > 0 && telemetry > 0, "{recovery:#}");
    let timeline: Vec<&str> =
        recovery["timeline"].as_array().unwrap().iter().filter_map(|m| m["what"].as_str()).collect();
    for moment in
        ["power off", "disk is gone", "replaced in the cloud", "onboarded by claim", "SUCCEEDED", "pump under control"]
    {
        assert!(timeline.iter().any(|w| w.contains(moment)), "{moment}: {timeline:#?}");
    }
    let whats = |key: &str| -> Vec<String> {
        recovery[key].as_array().unwrap().iter().map(|i| i["what"].as_str().unwrap().to_owned()).collect()
    };
    let lost = whats("lost");
    for item in ["telemetry and events not yet sent", "logs", "local state", "the device's identity"] {
        assert!(lost.iter().any(|l| l == item), "{item} lost: {lost:?}");
    }
    let kept = whats("kept");
    for item in ["the thing", "its thing groups", "the `pump` shadow", "deployments", "S3 data", "cloud records"] {
        assert!(kept.iter().any(|k| k == item), "{item} kept: {kept:?}");
    }
}

/// The speed the controller's protective `reduce_speed` runs the pump at, from its recipe.
fn safe_speed_rpm() -> f64 {
    let recipe = include_str!("../../components/controller/recipe.yaml");
    let line = recipe.lines().find_map(|l| l.trim().strip_prefix("safeSpeedRpm:")).expect("safeSpeedRpm in the recipe");
    line.trim().parse().unwrap()
}

/// The plant's registers, read over Modbus after each action: every desired speed reached the
/// setpoint register, the fault slowed the pump to the safe speed, the resume restored the
/// operator's speed, and at the end the plant runs what the shadow says.
fn at_the_plant(facts: &Value, shadow: &Value) {
    let reads = facts["plant_reads"].as_array().expect("plant reads");
    let after = |what: &str| reads.iter().filter(|r| r["after"] == what).collect::<Vec<_>>();
    let rpm = |r: &Value, key: &str| r[key].as_f64().unwrap();
    let desired = after("desired");
    assert_eq!(desired.len(), 2, "one read per desired change: {reads:#?}");
    for r in &desired {
        assert_eq!(rpm(r, "setpoint_rpm"), rpm(r, "desired_rpm"), "{r}");
        assert_eq!(r["run"], true, "{r}");
    }
    let (before, fault) = (after("before fault"), after("fault"));
    assert_eq!((before.len(), fault.len()), (1, 1), "{reads:#?}");
    assert!(rpm(before[0], "setpoint_rpm") > safe_speed_rpm(), "{reads:#?}");
    assert_eq!(rpm(fault[0], "setpoint_rpm"), safe_speed_rpm(), "cavitation → reduce_speed: {reads:#?}");
    let resume = after("resume");
    assert_eq!(resume.len(), 1, "{reads:#?}");
    assert_eq!(rpm(resume[0], "setpoint_rpm"), rpm(resume[0], "desired_rpm"), "{reads:#?}");
    assert_eq!(resume[0]["run"], true);
    let end = after("end");
    assert_eq!(end.len(), 1, "{reads:#?}");
    let desired_at_end = shadow["state"]["desired"]["speedRpm"].as_f64().unwrap();
    assert_eq!(rpm(end[0], "setpoint_rpm"), desired_at_end, "the plant runs what the shadow asks: {shadow:#}");
    assert_eq!(shadow["state"]["reported"]["speedRpm"].as_f64(), Some(desired_at_end), "{shadow:#}");
    assert_eq!(shadow["state"]["reported"]["protection"]["active"], false, "{shadow:#}");
}

/// The cloud's side: every reading arrived (sequence numbers without a gap, across the
/// outage), and every shadow update followed the one before (versions one apart) up to the
/// version the shadow ends at.
fn in_the_cloud(facts: &Value, report: &Value) {
    let seqs: Vec<u64> = facts["telemetry_seqs"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let mut distinct = seqs.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 20, "{} readings", distinct.len());
    let gaps: Vec<_> = distinct.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(gaps.is_empty(), "readings missing between {gaps:?}");
    let thing = "pump-station-1";
    let telemetry = &report["topics"][format!("dt/pump/{thing}/telemetry")];
    assert!(telemetry["bytes_max"].as_u64().unwrap() <= 5120, "batches stay within one 5 KiB unit");

    let versions: Vec<(u64, u64)> = facts["shadow_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v[0].as_u64().unwrap(), v[1].as_u64().unwrap()))
        .collect();
    assert!(versions.len() > 5, "{versions:?}");
    for w in versions.windows(2) {
        assert_eq!(w[0].1 + 1, w[1].1, "an update the cloud did not publish, or out of order: {versions:?}");
    }
    assert!(versions.iter().all(|(previous, current)| current == &(previous + 1)), "{versions:?}");
    assert_eq!(report["shadow"]["version"].as_u64(), versions.last().map(|v| v.1), "the last document is the shadow");
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
        // CPU time comes in clock ticks (10 ms): a quiet component may not have used one yet,
        // the core and the sensor (polling every 250 ms) always have.
        let cpu = p["cpu_seconds"].as_f64().unwrap();
        assert!(cpu >= 0.0, "{name}: {p:#}");
        if matches!(name, "simulated core" | "com.example.pump.Sensor") {
            assert!(cpu > 0.0, "{name}: {p:#}");
        }
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
