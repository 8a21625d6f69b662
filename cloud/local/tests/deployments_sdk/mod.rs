//! Greengrass deployments driven by AWS's own `aws-sdk-greengrassv2`, with a
//! test playing a core by the documented contract over MQTT: it receives a
//! thing-group deployment through the `aws-gg-deployment` job namespace and a
//! thing deployment through the `AWSManagedGreengrassV2Deployment` shadow,
//! reports each outcome as the nucleus does (job execution updates with
//! `detailed-deployment-status`, the shadow's reported state, fleet status),
//! and the service's GetCoreDevice, ListInstalledComponents,
//! ListEffectiveDeployments and GetDeployment show what it reported. Then the
//! errors: unknown deployment and core, a bad merge, cancel and delete rules.

use std::time::Duration;

use aws_sdk_greengrassv2::config::retry::RetryConfig;
use aws_sdk_greengrassv2::config::{BehaviorVersion, Region};
use aws_sdk_greengrassv2::primitives::Blob;
use aws_sdk_greengrassv2::types::{
    ComponentConfigurationUpdate, ComponentDeploymentSpecification, CoreDeviceStatus, DeploymentHistoryFilter,
    DeploymentStatus, EffectiveDeploymentExecutionStatus, InstalledComponentTopologyFilter,
};
use local_cloud::server::{Config, LocalCloud};
use rumqttc::{Event, Incoming, QoS};
use serde_json::{Value, json};

use crate::common::{self, Client, WAIT, failed};

const CORE: &str = "pump-core-1";
const GROUP: &str = "pump-cores";
const ARN: &str = "arn:aws:iot:us-east-1:000000000000";
const NS: &str = "namespace-aws-gg-deployment";
const COMPONENT: &str = "com.example.pump.Sensor";

/// The minimal core policy of the Greengrass developer guide, scoped to the core's thing.
const CORE_POLICY: &str = r#"{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
  {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"],
   "Resource": "arn:aws:iot:us-east-1:000000000000:topic/$aws/things/${iot:Connection.Thing.ThingName}*"},
  {"Effect": "Allow", "Action": "iot:Subscribe",
   "Resource": "arn:aws:iot:us-east-1:000000000000:topicfilter/$aws/things/${iot:Connection.Thing.ThingName}*"}
]}"#;

fn greengrass(cloud: &LocalCloud) -> aws_sdk_greengrassv2::Client {
    let conf = aws_sdk_greengrassv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(crate::common::admin(&cloud.endpoints))
        .endpoint_url(&cloud.endpoints.http)
        .retry_config(RetryConfig::disabled())
        .http_client(common::sdk_http_client())
        .build();
    aws_sdk_greengrassv2::Client::from_conf(conf)
}

/// A deployable component version with no artifacts.
async fn publish_component(gg: &aws_sdk_greengrassv2::Client, version: &str) {
    let recipe = json!({
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": COMPONENT,
        "ComponentVersion": version,
        "ComponentDescription": "reads the pump",
        "ComponentPublisher": "Example",
        "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "sensor"}}]
    });
    gg.create_component_version()
        .inline_recipe(Blob::new(serde_json::to_vec(&recipe).unwrap()))
        .send()
        .await
        .expect("CreateComponentVersion");
}

fn component(version: &str, merge: &str) -> ComponentDeploymentSpecification {
    ComponentDeploymentSpecification::builder()
        .component_version(version)
        .configuration_update(ComponentConfigurationUpdate::builder().merge(merge).build())
        .build()
        .expect("componentVersion is set")
}

/// Waits until `check` sees what it wants in the service's answers.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn publish_json(p: &rumqttc::Publish) -> Value {
    serde_json::from_slice(&p.payload).unwrap_or(Value::Null)
}

async fn next_on(mqtt: &mut Client, topic: &str) -> Value {
    mqtt.wait_for(WAIT, |ev| match ev {
        Event::Incoming(Incoming::Publish(p)) if p.topic == topic => Some(publish_json(p)),
        _ => None,
    })
    .await
    .unwrap_or_else(|e| panic!("nothing on {topic}: {e}"))
}

fn fleet_status(seq: u64, trigger: &str, version: &str, deployment_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ggcVersion": "2.14.0", "platform": "linux", "architecture": "amd64", "thing": CORE,
        "overallDeviceStatus": "HEALTHY", "sequenceNumber": seq, "timestamp": 1_700_000_000_000_u64 + seq,
        "messageType": "PARTIAL", "trigger": trigger,
        "components": [{"componentName": COMPONENT, "version": version, "status": "RUNNING", "isRoot": true,
            "fleetConfigArns": [format!("thinggroup/{GROUP}")], "componentStatusDetails": {"statusCodes": []}}],
        "deploymentInformation": {"status": "SUCCEEDED", "deploymentId": deployment_id,
            "statusDetails": {"detailedStatus": "SUCCESSFUL"}}
    }))
    .unwrap()
}

#[tokio::test]
async fn a_core_receives_group_and_thing_deployments_and_the_service_shows_what_it_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.unwrap();
    let gg = greengrass(&cloud);
    let device = common::create_device(&cloud.registry, CORE, CORE_POLICY);
    cloud.registry.create_thing_group(GROUP, None, None, Default::default()).unwrap();
    cloud.registry.add_thing_to_thing_group(GROUP, CORE).unwrap();
    publish_component(&gg, "1.0.0").await;
    publish_component(&gg, "1.1.0").await;

    let (host, port) = cloud.endpoints.mqtt.rsplit_once(':').map(|(h, p)| (h.to_owned(), p.parse().unwrap())).unwrap();
    let opts = common::mqtt_options(&host, port, &cloud.endpoints.ca_file, CORE, &device);
    let (mut mqtt, _) = Client::connect(opts).await.expect("the core connects");
    let jobs = format!("$aws/things/{CORE}/jobs");
    let shadow = format!("$aws/things/{CORE}/shadow/name/AWSManagedGreengrassV2Deployment");
    mqtt.subscribe(&[
        (&format!("{jobs}/notify-next-{NS}"), QoS::AtLeastOnce),
        (&format!("{shadow}/update/accepted"), QoS::AtLeastOnce),
    ])
    .await
    .unwrap();

    // A thing-group deployment reaches the core as a namespaced job.
    let created = gg
        .create_deployment()
        .target_arn(format!("{ARN}:thinggroup/{GROUP}"))
        .deployment_name("pump sensors")
        .components(COMPONENT, component("1.0.0", r#"{"pollMs": 250}"#))
        .send()
        .await
        .expect("CreateDeployment");
    let deployment_id = created.deployment_id().unwrap().to_owned();
    let job_id = created.iot_job_id().expect("a group deployment has a job").to_owned();
    let next = next_on(&mut mqtt, &format!("{jobs}/notify-next-{NS}")).await;
    let execution = &next["execution"];
    assert_eq!(execution["jobId"], job_id.as_str());
    let document = &execution["jobDocument"];
    assert_eq!(document["deploymentId"], deployment_id.as_str());
    assert_eq!(
        document["configurationArn"],
        format!("arn:aws:greengrass:us-east-1:000000000000:configuration:thinggroup/{GROUP}:1")
    );
    assert_eq!(document["components"][COMPONENT]["version"], "1.0.0");
    assert_eq!(document["components"][COMPONENT]["configurationUpdate"]["merge"], json!({"pollMs": 250}));
    assert_eq!(document["failureHandlingPolicy"], "ROLLBACK");

    // The core works on it and succeeds, as the nucleus reports it.
    for (status, token) in [("IN_PROGRESS", "t1"), ("SUCCEEDED", "t2")] {
        let update = json!({"status": status, "clientToken": token,
            "statusDetails": if status == "SUCCEEDED" { json!({"detailed-deployment-status": "SUCCESSFUL"}) } else { json!({}) }});
        let topic = format!("{jobs}/{job_id}/{NS}/update");
        mqtt.publish(&topic, QoS::AtLeastOnce, false, serde_json::to_vec(&update).unwrap()).await.unwrap();
        let accepted = next_on(&mut mqtt, &format!("{topic}/accepted")).await;
        assert_eq!(accepted["clientToken"], token);
    }
    mqtt.publish(
        &format!("$aws/things/{CORE}/greengrassv2/health/json"),
        QoS::AtLeastOnce,
        false,
        fleet_status(1, "THING_GROUP_DEPLOYMENT", "1.0.0", &deployment_id),
    )
    .await
    .unwrap();

    let core =
        eventually("GetCoreDevice", || async { gg.get_core_device().core_device_thing_name(CORE).send().await.ok() })
            .await;
    assert_eq!(core.core_version(), Some("2.14.0"));
    assert_eq!(core.status(), Some(&CoreDeviceStatus::Healthy));
    assert_eq!((core.platform(), core.architecture()), (Some("linux"), Some("amd64")));
    let installed = gg.list_installed_components().core_device_thing_name(CORE).send().await.unwrap();
    let sensor = &installed.installed_components()[0];
    assert_eq!((sensor.component_name(), sensor.component_version()), (Some(COMPONENT), Some("1.0.0")));
    assert_eq!(sensor.last_installation_source(), Some(deployment_id.as_str()));
    let effective = eventually("the succeeded group deployment", || async {
        let out = gg.list_effective_deployments().core_device_thing_name(CORE).send().await.ok()?;
        let e = out.effective_deployments().first()?.clone();
        (e.core_device_execution_status() == &EffectiveDeploymentExecutionStatus::Succeeded).then_some(e)
    })
    .await;
    assert_eq!(effective.deployment_id(), deployment_id.as_str());
    assert_eq!(effective.iot_job_id(), Some(job_id.as_str()));
    assert_eq!(effective.target_arn(), format!("{ARN}:thinggroup/{GROUP}"));

    // A thing deployment reaches the core through its deployment shadow.
    let thing_deployment = gg
        .create_deployment()
        .target_arn(format!("{ARN}:thing/{CORE}"))
        .components(COMPONENT, component("1.1.0", "{}"))
        .send()
        .await
        .expect("CreateDeployment for a thing");
    let thing_id = thing_deployment.deployment_id().unwrap().to_owned();
    assert_eq!(thing_deployment.iot_job_id(), None);
    let accepted = next_on(&mut mqtt, &format!("{shadow}/update/accepted")).await;
    let desired = &accepted["state"]["desired"];
    assert_eq!(desired["desiredStatus"], "ACTIVE");
    let fleet_config: Value = serde_json::from_str(desired["fleetConfig"].as_str().unwrap()).unwrap();
    assert_eq!(fleet_config["deploymentId"], thing_id.as_str());
    let arn = fleet_config["configurationArn"].as_str().unwrap().to_owned();
    let reported = json!({"state": {"reported": {"fleetConfigurationArnForStatus": arn, "status": "SUCCEEDED",
        "statusDetails": {"detailedStatus": "SUCCESSFUL", "failureCause": "", "errorStack": [], "errorTypes": []},
        "ggcVersion": "2.14.0"}}});
    mqtt.publish(&format!("{shadow}/update"), QoS::AtLeastOnce, false, serde_json::to_vec(&reported).unwrap())
        .await
        .unwrap();
    eventually("the thing deployment to complete", || async {
        let d = gg.get_deployment().deployment_id(&thing_id).send().await.ok()?;
        (d.deployment_status() == Some(&DeploymentStatus::Completed)).then_some(())
    })
    .await;
    let effective = gg.list_effective_deployments().core_device_thing_name(CORE).send().await.unwrap();
    assert_eq!(effective.effective_deployments().len(), 2, "one per target");

    // A new revision for the group replaces the first.
    let second = gg
        .create_deployment()
        .target_arn(format!("{ARN}:thinggroup/{GROUP}"))
        .components(COMPONENT, component("1.1.0", "{}"))
        .send()
        .await
        .unwrap();
    let next = next_on(&mut mqtt, &format!("{jobs}/notify-next-{NS}")).await;
    assert_eq!(next["execution"]["jobDocument"]["deploymentId"], second.deployment_id().unwrap());
    let old = gg.get_deployment().deployment_id(&deployment_id).send().await.unwrap();
    assert_eq!(old.deployment_status(), Some(&DeploymentStatus::Inactive));
    assert!(!old.is_latest_for_target());
    assert_eq!(old.revision_id(), Some("1"));
    let latest = gg.list_deployments().target_arn(format!("{ARN}:thinggroup/{GROUP}")).send().await.unwrap();
    assert_eq!(latest.deployments().len(), 1);
    let all = gg.list_deployments().history_filter(DeploymentHistoryFilter::All).send().await.unwrap();
    assert_eq!(all.deployments().len(), 3);
    let roots = gg
        .list_installed_components()
        .core_device_thing_name(CORE)
        .topology_filter(InstalledComponentTopologyFilter::All)
        .send()
        .await
        .unwrap();
    assert_eq!(roots.installed_components().len(), 1);
    let listed = gg.list_core_devices().thing_group_arn(format!("{ARN}:thinggroup/{GROUP}")).send().await.unwrap();
    assert_eq!(listed.core_devices().len(), 1);

    mqtt.disconnect().await;
    cloud.shutdown().await;

    // What the cores reported survives a restart.
    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.unwrap();
    let gg = greengrass(&cloud);
    let core = gg.get_core_device().core_device_thing_name(CORE).send().await.expect("core device after a restart");
    assert_eq!(core.core_version(), Some("2.14.0"));
    cloud.shutdown().await;
}

#[tokio::test]
async fn deployment_errors_carry_the_models_exceptions() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.unwrap();
    let gg = greengrass(&cloud);
    common::create_device(&cloud.registry, CORE, CORE_POLICY);
    publish_component(&gg, "1.0.0").await;

    let unknown = gg.get_deployment().deployment_id("8f5e3c1a-0000-4000-8000-000000000000").send().await;
    assert_eq!(failed(unknown), ("ResourceNotFoundException".into(), 404));
    let no_core = gg.get_core_device().core_device_thing_name(CORE).send().await;
    assert_eq!(failed(no_core), ("ResourceNotFoundException".into(), 404), "a core that never reported");
    let no_target = gg
        .create_deployment()
        .target_arn(format!("{ARN}:thinggroup/nope"))
        .components(COMPONENT, component("1.0.0", "{}"))
        .send()
        .await;
    assert_eq!(failed(no_target), ("ResourceNotFoundException".into(), 404));
    let no_version = gg
        .create_deployment()
        .target_arn(format!("{ARN}:thing/{CORE}"))
        .components(COMPONENT, component("9.9.9", "{}"))
        .send()
        .await;
    assert_eq!(failed(no_version), ("ResourceNotFoundException".into(), 404));
    let bad_merge = gg
        .create_deployment()
        .target_arn(format!("{ARN}:thing/{CORE}"))
        .components(COMPONENT, component("1.0.0", "[not an object"))
        .send()
        .await;
    let err = bad_merge.expect_err("a merge that is not a JSON object");
    let validation = err.as_service_error().expect("a modeled error");
    assert!(validation.is_validation_exception(), "{validation:?}");

    let created = gg
        .create_deployment()
        .target_arn(format!("{ARN}:thing/{CORE}"))
        .components(COMPONENT, component("1.0.0", "{}"))
        .send()
        .await
        .unwrap();
    let id = created.deployment_id().unwrap();
    let active = gg.delete_deployment().deployment_id(id).send().await;
    assert_eq!(failed(active), ("ConflictException".into(), 409), "an active deployment is cancelled first");
    gg.cancel_deployment().deployment_id(id).send().await.expect("CancelDeployment");
    let again = gg.cancel_deployment().deployment_id(id).send().await;
    assert_eq!(failed(again), ("ConflictException".into(), 409));
    let doc = cloud.shadows.get(CORE, Some("AWSManagedGreengrassV2Deployment")).unwrap();
    assert_eq!(doc["state"]["desired"]["desiredStatus"], "CANCELED");
    gg.delete_deployment().deployment_id(id).send().await.expect("DeleteDeployment");
    let gone = gg.get_deployment().deployment_id(id).send().await;
    assert_eq!(failed(gone), ("ResourceNotFoundException".into(), 404));
    cloud.shutdown().await;
}
