//! The `audit` binary against a local cloud provisioned with the project's own `provision`
//! functions (the core thing, its certificate and policy, a component, the application's rules,
//! functions, tables and roles, the monitoring): `audit run` writes the directory, `audit verify`
//! accepts it while nothing changed; then a role is widened to a wildcard, the line it evidences
//! turns N in a new run, and `audit verify` fails on the earlier directory naming that line.

use std::path::Path;
use std::process::Output;

use provision::ClientOptions;
use provision::app::{AppClients, AppSpec, deploy_app};
use provision::monitoring::{MonitoringClients, MonitoringSpec, deploy_monitoring};
use serde_json::Value;

use crate::common::{Provisioning as _, TestCloud, admin_credentials};
use crate::{run_binary, text};

const THING: &str = "pump-core-1";
const GROUP: &str = "pump-cores";
const RECIPE: &str = r#"{"RecipeFormatVersion":"2020-01-25","ComponentName":"com.example.pump.Model",
 "ComponentVersion":"1.0.0","ComponentDescription":"model","ComponentPublisher":"test",
 "ComponentConfiguration":{"DefaultConfiguration":{"accessControl":{"aws.greengrass.ipc.pubsub":{
  "com.example.pump.Model:pubsub:1":{"policyDescription":"model","operations":["aws.greengrass#PublishToTopic"],"resources":["pump/model"]}}}}},
 "Manifests":[{"Platform":{"os":"linux"},"Lifecycle":{"Run":"true"}}]}"#;

/// Runs `audit` as `provision` is run, with this test's own cargo and package cache for
/// `cargo metadata` (the third-party list).
async fn audit(args: &[&str], home: &Path, keys: (&str, &str)) -> Output {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo").into_os_string()));
    let env: Vec<(&str, std::ffi::OsString)> = [("CARGO", std::env::var_os("CARGO")), ("CARGO_HOME", cargo_home)]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    run_binary(env!("CARGO_BIN_EXE_audit"), args, home, keys, &env).await
}

fn line<'a>(checklist: &'a Value, id: &str) -> &'a Value {
    checklist.as_array().expect("lines").iter().find(|l| l["id"] == id).unwrap_or_else(|| panic!("{id} missing"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[tokio::test]
async fn audit_writes_the_checklist_from_the_deployment_and_verify_names_the_line_whose_evidence_changed() {
    let cloud = TestCloud::start().await;
    let home = tempfile::tempdir().unwrap();
    let options = ClientOptions {
        endpoint_url: Some(cloud.cloud.endpoints.http.clone()),
        region: Some("us-east-1".into()),
        credentials: Some(admin_credentials(&cloud.cloud.endpoints)),
    };
    let iot = cloud.iot().await;
    let iam = provision::iam_client(&options).await;

    // The deployment: a provisioned core in its group, a component deployed to the group, the
    // application's cloud side, and the monitoring.
    provision::provision_core_device(&iot, &cloud.spec(THING, &home.path().join("core"))).await.expect("provisioning");
    let group_arn = provision::deploy::thing_group_arn(&iot, GROUP, true).await.expect("thing group");
    iot.add_thing_to_thing_group()
        .thing_group_name(GROUP)
        .thing_name(THING)
        .send()
        .await
        .expect("AddThingToThingGroup");
    let gg = provision::greengrass_client(&options).await;
    gg.create_component_version()
        .inline_recipe(aws_sdk_greengrassv2::primitives::Blob::new(RECIPE))
        .send()
        .await
        .expect("CreateComponentVersion");
    let component = aws_sdk_greengrassv2::types::ComponentDeploymentSpecification::builder()
        .component_version("1.0.0")
        .build()
        .expect("a component version");
    gg.create_deployment()
        .target_arn(&group_arn)
        .components("com.example.pump.Model", component)
        .send()
        .await
        .expect("CreateDeployment");
    let functions = home.path().join("functions");
    std::fs::create_dir_all(&functions).unwrap();
    for bin in [provision::app::ANOMALY_HANDLER_BIN, provision::app::TELEMETRY_AGGREGATOR_BIN] {
        // Never invoked here: nothing is published, the functions are only deployed and read back.
        std::fs::write(functions.join(bin), "#!/bin/sh\nexit 1\n").unwrap();
    }
    let app = AppSpec {
        prefix: "pump".into(),
        functions_dir: functions,
        bucket: "pump-raw-telemetry".into(),
        maintenance_repeats: 3,
        maintenance_window_minutes: 10,
        function_timeout_secs: 10,
        iot_data_endpoint: None,
    };
    let clients = AppClients {
        iot: iot.clone(),
        iam: iam.clone(),
        lambda: provision::lambda_client(&options).await,
        dynamodb: provision::dynamodb_client(&options).await,
        s3: provision::s3_client(&options).await,
    };
    let deployed = deploy_app(&clients, &app).await.expect("the application's cloud side");
    let monitoring = MonitoringSpec {
        prefix: "pump".into(),
        group: GROUP.into(),
        period_secs: 60,
        disconnected_secs: 60,
        telemetry_gap_secs: 300,
        watched_rules: provision::app::app_rules("pump").to_vec(),
        auth_failures: 5,
        certificate_days: 30,
        alarm_actions: Vec::new(),
    };
    let monitoring_clients = MonitoringClients {
        iot: iot.clone(),
        iam: iam.clone(),
        cloudwatch: provision::cloudwatch_client(&options).await,
    };
    deploy_monitoring(&monitoring_clients, &monitoring).await.expect("monitoring");

    let admin = cloud.cloud.endpoints.credentials.clone().expect("the administrator's key pair");
    let keys = (admin.access_key_id.as_str(), admin.secret_access_key.as_str());
    let http = cloud.cloud.endpoints.http.clone();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (first, second) = (home.path().join("audit-1"), home.path().join("audit-2"));
    let run = |out: &Path| {
        [
            "run",
            "--out",
            out.to_str().unwrap(),
            "--prefix",
            "pump",
            "--thing-group",
            GROUP,
            "--workspace",
            workspace.to_str().unwrap(),
            "--endpoint-url",
            http.as_str(),
        ]
        .map(str::to_owned)
    };

    // The audit directory, every line decided, the evidence it links to present.
    let out = audit(&run(&first).iter().map(String::as_str).collect::<Vec<_>>(), home.path(), keys).await;
    assert!(out.status.success(), "{}", text(&out));
    let checklist = read_json(&first.join("checklist.json"));
    assert_eq!(checklist.as_array().unwrap().len(), 24);
    for l in checklist.as_array().unwrap() {
        for e in l["evidence"].as_array().unwrap() {
            assert!(first.join(e["href"].as_str().unwrap()).exists(), "{l}");
        }
    }
    let gg5 = line(&checklist, "GG-5");
    assert_eq!(gg5["met"], true, "{gg5}");
    assert_eq!(line(&checklist, "CS-1")["basis"], "partner");
    assert_eq!(line(&checklist, "CS-1")["met"], false, "no input file: the partner's line is not met");
    let resources = read_json(&first.join("evidence/resources.json"));
    assert_eq!(resources["stable"]["account"]["id"], "000000000000");
    assert_eq!(resources["stable"]["things"][0]["name"], THING);
    let rules = read_json(&first.join("evidence/rules.json"));
    let rule_names: Vec<&str> =
        rules["stable"]["rules"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(rule_names.contains(&deployed.names.telemetry_rule.as_str()), "{rule_names:?}");
    let monitoring_file = read_json(&first.join("evidence/monitoring.json"));
    assert!(!monitoring_file["stable"]["alarms"].as_array().unwrap().is_empty(), "{monitoring_file}");
    let svg = std::fs::read_to_string(first.join("architecture.svg")).unwrap();
    assert!(
        svg.contains(THING) && svg.contains("com.example.pump.Model") && svg.contains(&deployed.names.anomaly_function)
    );
    let md = std::fs::read_to_string(first.join("CHECKLIST.md")).unwrap();
    assert!(md.contains("| [GG-5](#gg-5) |") && md.contains("By hand:"), "{md}");

    // Nothing changed: verify holds.
    let same = audit(&["verify", first.to_str().unwrap(), "--endpoint-url", &http], home.path(), keys).await;
    assert!(same.status.success(), "{}", text(&same));

    // The anomaly handler's role is widened to every action on everything.
    let wide = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
    iam.put_role_policy()
        .role_name(&deployed.names.anomaly_function_role)
        .policy_name(provision::app::ROLE_POLICY_NAME)
        .policy_document(wide)
        .send()
        .await
        .expect("PutRolePolicy");

    let out = audit(&run(&second).iter().map(String::as_str).collect::<Vec<_>>(), home.path(), keys).await;
    assert!(out.status.success(), "{}", text(&out));
    let gg5 = line(&read_json(&second.join("checklist.json")), "GG-5").clone();
    assert_eq!(gg5["met"], false, "{gg5}");
    let failed: Vec<&str> =
        gg5["checks"].as_array().unwrap().iter().filter_map(Value::as_str).filter(|c| c.starts_with('✗')).collect();
    assert!(failed.iter().any(|c| c.contains(&deployed.names.anomaly_function_role)), "{failed:?}");

    let stale = audit(&["verify", first.to_str().unwrap(), "--endpoint-url", &http], home.path(), keys).await;
    assert_eq!(stale.status.code(), Some(2), "{}", text(&stale));
    let said = text(&stale);
    assert!(said.contains("GG-5: Met was Y, is now N"), "{said}");
    assert!(said.contains("evidence/rules.json") && said.contains("GG-5"), "{said}");

    // The input template: written once, never overwritten; as written, every partner field is
    // a placeholder the case study calls out.
    let input = home.path().join("case-study.toml");
    let init = audit(&["init-input", input.to_str().unwrap()], home.path(), keys).await;
    assert!(init.status.success(), "{}", text(&init));
    let again = audit(&["init-input", input.to_str().unwrap()], home.path(), keys).await;
    assert_eq!(again.status.code(), Some(78), "{}", text(&again));
    let with_input = home.path().join("audit-input");
    let mut args = run(&with_input).to_vec();
    args.extend(["--input".to_owned(), input.to_str().unwrap().to_owned()]);
    let out = audit(&args.iter().map(String::as_str).collect::<Vec<_>>(), home.path(), keys).await;
    assert!(out.status.success(), "{}", text(&out));
    let case_study = std::fs::read_to_string(with_input.join("CASE-STUDY.md")).unwrap();
    assert!(
        case_study.contains("to be filled in by the partner") && case_study.contains("000000000000"),
        "{case_study}"
    );
    let cs2 = line(&read_json(&with_input.join("checklist.json")), "CS-2").clone();
    assert!(cs2["checks"].to_string().contains("still to fill in: customer"), "{cs2}");

    // A bad input file is refused before anything is written.
    std::fs::write(home.path().join("bad.toml"), "publication = \"secret\"\n").unwrap();
    let third = home.path().join("audit-3");
    let mut args = run(&third).to_vec();
    args.extend(["--input".to_owned(), home.path().join("bad.toml").to_str().unwrap().to_owned()]);
    let bad = audit(&args.iter().map(String::as_str).collect::<Vec<_>>(), home.path(), keys).await;
    assert_eq!(bad.status.code(), Some(78), "{}", text(&bad));
    assert!(text(&bad).contains("publication"), "{}", text(&bad));
    assert!(!third.exists());
    cloud.stop().await;
}
