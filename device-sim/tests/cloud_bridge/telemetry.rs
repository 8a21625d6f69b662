//! The telemetry agent's core side: the core publishes its health metrics on
//! `$aws/things/{thing}/greengrass/health/json` through its one connection; the component
//! counts match its components' states; `telemetry.enabled: false` keeps it quiet; a bad
//! interval stops the start with the key named.

use std::collections::HashMap;
use std::time::Duration;

use cloud_api::greengrass::telemetry::{self, GREENGRASS_COMPONENTS, MetricsPayload, SYSTEM_METRICS};
use device_sim::core::ComponentState;
use device_sim::core::runtime::{Core, CoreError};
use device_sim::core::telemetry::Intervals;
use serde_json::json;
use site_testkit::WAIT;
use site_testkit::site::Site;

use super::{COMPONENT, THING};

/// A component that runs once and exits: FINISHED.
const ONE_SHOT: &str = "com.example.OneShot";

/// The core's policy with the telemetry agent's and the fleet status service's topics, as in
/// AWS's minimal core policy.
const TELEMETRY_CORE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":"iot:Publish","Resource":[
  "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/greengrass/health/json",
  "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/greengrassv2/health/json"]}]}"#;

const FAST: Intervals = Intervals { aggregate: Duration::from_millis(300), publish: Duration::from_millis(600) };

fn nucleus_telemetry(telemetry: serde_json::Value) -> serde_json::Value {
    json!({"aws.greengrass.Nucleus": {"MERGE": {"telemetry": telemetry}}})
}

async fn telemetry_site() -> Site {
    let mut site = Site::new(THING);
    site.deploy_idle(COMPONENT, json!({}));
    let one_shot = format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: {ONE_SHOT}\nComponentVersion: '1.0.0'\n\
         Manifests:\n  - Lifecycle:\n      Run: 'true'\n"
    );
    site.deploy(ONE_SHOT, "1.0.0", &one_shot);
    site.start_cloud(TELEMETRY_CORE_POLICY).await;
    site
}

/// The component counts the core should report: its components by state, and the nucleus
/// running.
fn expected_counts(core: &Core) -> HashMap<&'static str, f64> {
    let mut counts: HashMap<&'static str, f64> = HashMap::new();
    let mut add = |state: ComponentState| {
        let name = match state {
            ComponentState::New => "NumberOfComponentsNew",
            ComponentState::Installed => "NumberOfComponentsInstalled",
            ComponentState::Starting => "NumberOfComponentsStarting",
            ComponentState::Running => "NumberOfComponentsRunning",
            ComponentState::Stopping => "NumberOfComponentsStopping",
            ComponentState::Finished => "NumberOfComponentsFinished",
            ComponentState::Errored => "NumberOfComponentsErrored",
            ComponentState::Broken => "NumberOfComponentsBroken",
        };
        *counts.entry(name).or_default() += 1.0;
    };
    add(ComponentState::Running);
    core.states().into_values().for_each(&mut add);
    counts
}

fn reported_counts(message: &MetricsPayload) -> HashMap<&'static str, f64> {
    [
        "NumberOfComponentsNew",
        "NumberOfComponentsInstalled",
        "NumberOfComponentsStarting",
        "NumberOfComponentsRunning",
        "NumberOfComponentsStopping",
        "NumberOfComponentsFinished",
        "NumberOfComponentsErrored",
        "NumberOfComponentsBroken",
        "NumberOfComponentsStateless",
    ]
    .into_iter()
    .filter_map(|n| message.latest(GREENGRASS_COMPONENTS, n).filter(|v| *v != 0.0).map(|v| (n, v)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_core_publishes_telemetry_whose_component_counts_match_its_components_states() {
    let mut site = telemetry_site().await;
    site.telemetry_intervals = Some(FAST);
    let topic = telemetry::topic(THING);
    let mut cloud_app = site.cloud().observer(&[&topic]).await;
    let core = site.start_core(&json!({})).await;
    site.wait_running(&core, COMPONENT).await;
    let finished = core.wait_for_state(ONE_SHOT, &[ComponentState::Finished], WAIT).await;
    assert_eq!(finished, Some(ComponentState::Finished));
    let want = expected_counts(&core);
    assert_eq!(want.get("NumberOfComponentsRunning"), Some(&2.0), "{want:?}");
    assert_eq!(want.get("NumberOfComponentsFinished"), Some(&1.0), "{want:?}");

    // Messages from before the components settled count them starting; wait for the settled ones.
    let message = cloud_app
        .wait_for("telemetry counting the settled components", |m| {
            m.topic == topic && MetricsPayload::parse(&m.payload).is_ok_and(|p| reported_counts(&p) == want)
        })
        .await;
    assert!(message.payload.len() < telemetry::MAX_PAYLOAD_BYTES);
    let message = MetricsPayload::parse(&message.payload).unwrap();
    assert_eq!(message.schema, telemetry::SCHEMA, "nucleus 2.14 writes the 2022 schema");
    assert_eq!(message.thing_name, None, "the thing is in the topic");
    let cpu = message.latest(SYSTEM_METRICS, "CpuUsage").expect("CpuUsage");
    assert!((0.0..=100.0).contains(&cpu), "{cpu}");
    assert!(message.latest(SYSTEM_METRICS, "SystemMemUsage").is_some_and(|mb| mb > 0.0), "{message:?}");
    assert!(message.latest(SYSTEM_METRICS, "TotalNumberOfFDs").is_some_and(|n| n > 0.0), "{message:?}");
    core.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_turned_off_in_the_nucleus_configuration_publishes_nothing() {
    let mut site = telemetry_site().await;
    site.telemetry_intervals = Some(FAST);
    // Fleet status on a short cadence is the clock: three cadence reports span many telemetry
    // publish intervals.
    site.fleet_status = Some(Duration::from_secs(1));
    let (health, fleet) = (telemetry::topic(THING), cloud_api::greengrass::fleet_status::topic(THING));
    let mut cloud_app = site.cloud().observer(&[&health, &fleet]).await;
    let core = site.start_core(&nucleus_telemetry(json!({"enabled": false}))).await;
    site.wait_running(&core, COMPONENT).await;
    let mut cadences = 0;
    while cadences < 3 {
        let m =
            cloud_app.wait_for("a fleet status cadence or telemetry", |m| m.topic == health || m.topic == fleet).await;
        assert_ne!(m.topic, health, "telemetry is off");
        let status = cloud_api::greengrass::FleetStatus::parse(&m.payload).unwrap();
        if status.trigger == cloud_api::greengrass::Trigger::Cadence {
            cadences += 1;
        }
    }
    core.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_telemetry_interval_under_the_nucleus_minimum_stops_the_start_with_its_key() {
    let mut site = Site::new(THING);
    site.deploy_idle(COMPONENT, json!({}));
    let update = nucleus_telemetry(json!({"periodicAggregateMetricsIntervalSeconds": 60}));
    let options = device_sim::core::runtime::CoreOptions {
        root: site.core_root(),
        thing: THING.into(),
        recipe_dir: site.path().join("recipes"),
        artifact_dir: site.path().join("artifacts"),
        merges: vec![format!("{COMPONENT}=1.0.0")],
        region: "us-east-1".into(),
        root_ca_path: None,
        platform: greengrass_recipe::DevicePlatform::current(),
        update_config: device_sim::core::runtime::parse_update_config(&update).unwrap(),
        cloud: None,
        nucleus_version: device_sim::core::runtime::CoreOptions::default_nucleus_version(),
    };
    let err = Core::start(options).await.unwrap_err();
    assert!(matches!(err, CoreError::UpdateConfig(_)) && err.is_configuration(), "{err}");
    assert!(err.to_string().contains("telemetry.periodicAggregateMetricsIntervalSeconds"), "{err}");
}
