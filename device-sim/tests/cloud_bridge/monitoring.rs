//! The fleet's monitoring from the cloud, as `provision monitoring deploy` sets it up, against a
//! real core: a component driven to BROKEN makes the core UNHEALTHY in Greengrass and raises the
//! unhealthy-core alarm; the core stopped raises the disconnect alarm within its period; a rule
//! whose action fails is counted in IoT Core's `Failure` metric and raises its alarm.

use std::time::{Duration, Instant};

use aws_sdk_cloudwatch::types::StateValue;
use provision::monitoring::{MonitoringClients, MonitoringDeployment, MonitoringSpec, deploy_monitoring};
use serde_json::json;
use site_testkit::WAIT;
use site_testkit::site::{Site, wait_connection};

use super::{COMPONENT, THING};

/// Runs once, fails, and is restarted until the core gives up on it: BROKEN.
const CRASHES: &str = "com.example.Crashes";
const GROUP: &str = "pump-sites";
/// The alarms' period: CloudWatch's high-resolution 10 s, so the test takes seconds.
const PERIOD: i32 = 10;
/// Long enough for a period to close and the alarm to be evaluated, with room for a slow machine.
const ALARM_WAIT: Duration = Duration::from_secs(60);

/// The core's policy: its connection, its fleet status and telemetry topics.
const CORE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
 {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"},
 {"Effect":"Allow","Action":"iot:Publish","Resource":[
  "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/greengrass/health/json",
  "arn:aws:iot:*:*:topic/$aws/things/${iot:Connection.Thing.ThingName}/greengrassv2/health/json"]}]}"#;

fn fast(config: &mut local_cloud::server::Config) {
    config.alarm_evaluation_interval = Duration::from_millis(200);
    // IoT Core's own metrics and the fleet metrics, flushed and computed every second.
    config.iot_metrics_interval = Duration::from_secs(1);
    config.fleet_metric_period_divisor = 60;
}

fn spec(watched_rules: Vec<String>) -> MonitoringSpec {
    MonitoringSpec {
        prefix: "pump".into(),
        group: GROUP.into(),
        period_secs: PERIOD,
        disconnected_secs: PERIOD,
        telemetry_gap_secs: 3 * PERIOD,
        watched_rules,
        auth_failures: 5,
        certificate_days: 30,
        alarm_actions: Vec::new(),
    }
}

struct Operator {
    monitoring: MonitoringClients,
    greengrass: aws_sdk_greengrassv2::Client,
    data: aws_sdk_iotdataplane::Client,
}

async fn operator(site: &Site) -> Operator {
    let options =
        provision::ClientOptions::for_local_cloud(site.cloud().endpoints()).expect("the administrator's key pair");
    Operator {
        monitoring: MonitoringClients {
            iot: provision::iot_client(&options).await,
            iam: provision::iam_client(&options).await,
            cloudwatch: provision::cloudwatch_client(&options).await,
        },
        greengrass: provision::greengrass_client(&options).await,
        data: provision::iot_data_client(&options).await,
    }
}

impl Operator {
    /// The group with the core in it, and the monitoring deployed on it.
    async fn deploy(&self, watched_rules: Vec<String>) -> MonitoringDeployment {
        let iot = &self.monitoring.iot;
        iot.create_thing_group().thing_group_name(GROUP).send().await.expect("CreateThingGroup");
        iot.add_thing_to_thing_group()
            .thing_group_name(GROUP)
            .thing_name(THING)
            .send()
            .await
            .expect("AddThingToThingGroup");
        let deployed =
            deploy_monitoring(&self.monitoring, &spec(watched_rules.clone())).await.expect("the monitoring deploys");
        let again = deploy_monitoring(&self.monitoring, &spec(watched_rules)).await.expect("a second run");
        assert_eq!(again.changes, Vec::<String>::new(), "a second run changes nothing");
        deployed
    }

    async fn alarm_state(&self, alarm: &str) -> Option<StateValue> {
        let out = self.monitoring.cloudwatch.describe_alarms().alarm_names(alarm).send().await.expect("DescribeAlarms");
        out.metric_alarms().first().and_then(|a| a.state_value().cloned())
    }

    /// Waits until `alarm` is in `state`; returns how long that took.
    async fn wait_alarm(&self, alarm: &str, state: StateValue) -> Duration {
        let started = Instant::now();
        site_testkit::wait_until_within(
            ALARM_WAIT,
            format!("alarm {alarm} in {state:?}"),
            async || self.alarm_state(alarm).await,
            |now| now.as_ref() == Some(&state),
            |now| format!("it is {now:?}"),
        )
        .await;
        started.elapsed()
    }

    async fn core_status(&self) -> Option<String> {
        let out = self.greengrass.get_core_device().core_device_thing_name(THING).send().await.ok()?;
        out.status().map(|s| s.as_str().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_component_and_a_stopped_core_raise_their_alarms() {
    let mut site = Site::new(THING);
    site.deploy_idle(COMPONENT, json!({}));
    let crashes = format!(
        "RecipeFormatVersion: '2020-01-25'\nComponentName: {CRASHES}\nComponentVersion: '1.0.0'\n\
         Manifests:\n  - Lifecycle:\n      Run: 'exit 1'\n"
    );
    site.deploy(CRASHES, "1.0.0", &crashes);
    site.fleet_status = Some(Duration::from_secs(1));
    site.start_cloud_with(CORE_POLICY, fast).await;
    let operator = operator(&site).await;
    let deployed = operator.deploy(Vec::new()).await;
    let names = &deployed.names;

    let core = site.start_core(&json!({})).await;
    wait_connection(&core, true).await;
    let broken = core.wait_for_state(CRASHES, &[device_sim::core::ComponentState::Broken], WAIT).await;
    assert_eq!(broken, Some(device_sim::core::ComponentState::Broken), "log:\n{}", site.log(CRASHES));
    site_testkit::wait_until(
        "Greengrass to hold the core UNHEALTHY",
        async || operator.core_status().await,
        |s| s.as_deref() == Some("UNHEALTHY"),
        |s| format!("{s:?}"),
    )
    .await;
    operator.wait_alarm(&names.unhealthy_alarm, StateValue::Alarm).await;
    // Connected, the fleet metric counts no disconnected core of the group.
    operator.wait_alarm(&names.disconnected_alarm, StateValue::Ok).await;

    core.shutdown(WAIT).await;
    let took = operator.wait_alarm(&names.disconnected_alarm, StateValue::Alarm).await;
    assert!(
        took <= Duration::from_secs(3 * PERIOD as u64),
        "the disconnect alarm fires within its period and an evaluation: took {took:?}"
    );
    let found = operator
        .monitoring
        .iot
        .search_index()
        .query_string(provision::monitoring::disconnected_query(GROUP))
        .send()
        .await
        .expect("SearchIndex");
    let things: Vec<_> = found.things().iter().filter_map(|t| t.thing_name()).collect();
    assert_eq!(things, [THING], "the alarm's query names the core");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_rule_is_counted_and_alarmed() {
    let mut site = Site::new(THING);
    site.start_cloud_with(CORE_POLICY, fast).await;
    let operator = operator(&site).await;
    let rule = "pump_broken_sink";
    // The rule puts every message in a bucket that does not exist: each one fails its action.
    let payload = aws_sdk_iot::types::TopicRulePayload::builder()
        .sql("SELECT * FROM 'dt/pump/+/telemetry'")
        .actions(
            aws_sdk_iot::types::Action::builder()
                .s3(aws_sdk_iot::types::S3Action::builder()
                    .role_arn("arn:aws:iam::000000000000:role/none")
                    .bucket_name("no-such-bucket")
                    .key("${newuuid()}")
                    .build()
                    .unwrap())
                .build(),
        )
        .build()
        .unwrap();
    operator
        .monitoring
        .iot
        .create_topic_rule()
        .rule_name(rule)
        .topic_rule_payload(payload)
        .send()
        .await
        .expect("CreateTopicRule");
    let deployed = operator.deploy(vec![rule.to_owned()]).await;
    let alarm = provision::monitoring::rule_errors_alarm("pump", rule, "S3");
    assert!(deployed.alarms.contains(&alarm), "{:?}", deployed.alarms);
    operator.wait_alarm(&alarm, StateValue::Ok).await;

    operator
        .data
        .publish()
        .topic(format!("dt/pump/{THING}/telemetry"))
        .qos(1)
        .payload(aws_sdk_iotdataplane::primitives::Blob::new(json!({"v": 1}).to_string()))
        .send()
        .await
        .expect("Publish");
    operator.wait_alarm(&alarm, StateValue::Alarm).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs() as i64;
    let stats = operator
        .monitoring
        .cloudwatch
        .get_metric_statistics()
        .namespace("AWS/IoT")
        .metric_name("Failure")
        .dimensions(aws_sdk_cloudwatch::types::Dimension::builder().name("ActionType").value("S3").build())
        .dimensions(aws_sdk_cloudwatch::types::Dimension::builder().name("RuleName").value(rule).build())
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(now - 3_600))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(now + 60))
        .period(3_600)
        .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
        .send()
        .await
        .expect("GetMetricStatistics");
    let failures: f64 = stats.datapoints().iter().filter_map(|d| d.sum()).sum();
    assert_eq!(failures, 1.0, "one message, one failed action");
}
