//! Fleet indexing and fleet metrics driven by AWS's own `aws-sdk-iot`: indexing turned on with
//! connectivity, a core that connects and disconnects over MQTT seen by SearchIndex, a fleet metric
//! counting disconnected cores published to CloudWatch and an alarm on it going to ALARM when the
//! core drops and back to OK when it reconnects, the errors, scoped credentials allowed SearchIndex
//! on the index and refused the rest, and a restart that leaves a core connected before it
//! disconnected after it.

use std::time::Duration;

use aws_sdk_iot::types::{
    AggregationType, AggregationTypeName, ThingConnectivityIndexingMode, ThingIndexingConfiguration, ThingIndexingMode,
};
use local_cloud::cloudwatch::Operation;
use local_cloud::server::{Config, LocalCloud};
use serde_json::json;

use crate::common::{self, Client, failed};
use crate::thing_groups_sdk::iot;

const CORE: &str = "site-9-core";
/// How long a fleet-metric alarm may take to move: a 10 s alarm period, plus publishing.
const ALARM_WAIT: Duration = Duration::from_secs(60);

async fn start(dir: &std::path::Path) -> LocalCloud {
    let mut config = Config::ephemeral(dir);
    config.alarm_evaluation_interval = Duration::from_millis(200);
    // A 60 s fleet metric is published every second.
    config.fleet_metric_period_divisor = 60;
    LocalCloud::start(config).await.expect("local cloud starts")
}

/// Connects the core over MQTT and keeps its event loop polled; the returned client disconnects it.
async fn connect(cloud: &LocalCloud, device: &common::Device) -> rumqttc::AsyncClient {
    let (host, port) = cloud.endpoints.mqtt.rsplit_once(':').unwrap();
    let opts = common::mqtt_options(host, port.parse().unwrap(), &cloud.endpoints.ca_file, CORE, device);
    let (Client { client, mut events }, _) = Client::connect(opts).await.expect("the core connects");
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    client
}

/// The core's document, as SearchIndex returns it for `thingName:{CORE}`.
async fn core_document(iot: &aws_sdk_iot::Client) -> Option<aws_sdk_iot::types::ThingDocument> {
    let out = iot.search_index().query_string(format!("thingName:{CORE}")).send().await.expect("SearchIndex");
    out.things.unwrap_or_default().into_iter().next()
}

async fn wait_connected(iot: &aws_sdk_iot::Client, connected: bool) -> aws_sdk_iot::types::ThingDocument {
    let doc = site_testkit::wait_until(
        format!("SearchIndex showing {CORE} connected={connected}"),
        async || core_document(iot).await,
        |d| d.as_ref().and_then(|d| d.connectivity()).and_then(|c| c.connected) == Some(connected),
        |d| format!("{d:?}"),
    )
    .await;
    doc.expect("the core's document")
}

fn alarm_state(cloud: &LocalCloud, name: &str) -> String {
    let out = cloud.cloudwatch.call(Operation::DescribeAlarms, json!({"AlarmNames": [name]})).unwrap().to_json();
    out["MetricAlarms"][0]["StateValue"].as_str().unwrap_or_default().to_owned()
}

async fn wait_alarm(cloud: &LocalCloud, name: &str, state: &str) {
    site_testkit::wait_until_within(
        ALARM_WAIT,
        format!("alarm {name} in {state}"),
        async || alarm_state(cloud, name),
        |s| s == state,
        Clone::clone,
    )
    .await;
}

async fn enable_indexing(iot: &aws_sdk_iot::Client) {
    iot.update_indexing_configuration()
        .thing_indexing_configuration(
            ThingIndexingConfiguration::builder()
                .thing_indexing_mode(ThingIndexingMode::Registry)
                .thing_connectivity_indexing_mode(ThingConnectivityIndexingMode::Status)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("UpdateIndexingConfiguration");
}

#[tokio::test]
async fn a_disconnected_core_is_found_and_alarmed_until_it_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot = iot(&cloud);
    let device = common::create_device(&cloud.registry, CORE, common::ALLOW_ALL);
    iot.update_thing()
        .thing_name(CORE)
        .attribute_payload(aws_sdk_iot::types::AttributePayload::builder().attributes("site", "9").build())
        .send()
        .await
        .unwrap();

    // Off, there is no index to search.
    let (code, status) = failed(iot.search_index().query_string("*").send().await);
    assert_eq!((code.as_str(), status), ("ResourceNotFoundException", 404));
    enable_indexing(&iot).await;
    let config = iot.get_indexing_configuration().send().await.unwrap();
    let things = config.thing_indexing_configuration().unwrap();
    assert_eq!(things.thing_indexing_mode(), &ThingIndexingMode::Registry);
    assert_eq!(things.thing_connectivity_indexing_mode(), Some(&ThingConnectivityIndexingMode::Status));

    // Never connected: indexed as disconnected, without a time.
    let doc = core_document(&iot).await.expect("the core is indexed");
    assert_eq!(doc.thing_id(), Some(cloud.registry.describe_thing(CORE).unwrap().id.as_str()));
    assert_eq!(doc.attributes().unwrap().get("site").map(String::as_str), Some("9"));
    assert_eq!(doc.connectivity().unwrap().connected, Some(false));

    let client = connect(&cloud, &device).await;
    let doc = wait_connected(&iot, true).await;
    let since = doc.connectivity().unwrap().timestamp.expect("the connect time");
    assert!(doc.connectivity().unwrap().disconnect_reason.is_none());
    let found = iot
        .search_index()
        .query_string(format!("connectivity.connected:true AND connectivity.timestamp>={since} AND attributes.site:9"))
        .send()
        .await
        .unwrap();
    assert_eq!(found.things().len(), 1);

    iot.create_fleet_metric()
        .metric_name("disconnected-cores")
        .query_string("connectivity.connected:false AND attributes.site:*")
        .aggregation_type(
            AggregationType::builder().name(AggregationTypeName::Statistics).values("count").build().unwrap(),
        )
        .aggregation_field("registry.version")
        .period(60)
        .index_name("AWS_Things")
        .send()
        .await
        .expect("CreateFleetMetric");
    let alarm = json!({
        "AlarmName": "core-disconnected",
        "Namespace": "IoTFleetMetrics",
        "MetricName": "disconnected-cores",
        "Dimensions": [{"Name": "Aggregation Type", "Value": "count"}],
        "Statistic": "Maximum",
        "Period": 10,
        "EvaluationPeriods": 1,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
    });
    cloud.cloudwatch.call(Operation::PutMetricAlarm, alarm).expect("PutMetricAlarm");
    wait_alarm(&cloud, "core-disconnected", "OK").await;

    client.disconnect().await.unwrap();
    let doc = wait_connected(&iot, false).await;
    let c = doc.connectivity().unwrap();
    assert_eq!(c.disconnect_reason(), Some("CLIENT_INITIATED_DISCONNECT"));
    assert!(c.timestamp.unwrap() >= since);
    wait_alarm(&cloud, "core-disconnected", "ALARM").await;

    let _client = connect(&cloud, &device).await;
    wait_connected(&iot, true).await;
    wait_alarm(&cloud, "core-disconnected", "OK").await;

    let described = iot.describe_fleet_metric().metric_name("disconnected-cores").send().await.unwrap();
    assert_eq!(described.metric_arn(), Some("arn:aws:iot:us-east-1:000000000000:fleetmetric/disconnected-cores"));
    assert_eq!((described.period(), described.version()), (Some(60), 1));
    cloud.shutdown().await;
}

#[tokio::test]
async fn bad_queries_and_fleet_metrics_get_aws_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot = iot(&cloud);
    enable_indexing(&iot).await;
    for query in ["thingName:(", "shadow.reported.mode:auto", "connectivity.connected:maybe", "site-9"] {
        let (code, status) = failed(iot.search_index().query_string(query).send().await);
        assert_eq!((code.as_str(), status), ("InvalidQueryException", 400), "{query}");
    }
    let (code, _) = failed(
        iot.update_indexing_configuration()
            .thing_indexing_configuration(
                ThingIndexingConfiguration::builder()
                    .thing_indexing_mode(ThingIndexingMode::RegistryAndShadow)
                    .build()
                    .unwrap(),
            )
            .send()
            .await,
    );
    assert_eq!(code, "InvalidRequestException");

    let create = |name: &str, query: &str, period: i32| {
        iot.create_fleet_metric()
            .metric_name(name)
            .query_string(query)
            .aggregation_type(
                AggregationType::builder().name(AggregationTypeName::Statistics).values("count").build().unwrap(),
            )
            .aggregation_field("registry.version")
            .period(period)
            .send()
    };
    let (code, status) = failed(create("m", "thingName:(", 60).await);
    assert_eq!((code.as_str(), status), ("InvalidQueryException", 400));
    let (code, _) = failed(create("m", "*", 61).await);
    assert_eq!(code, "InvalidRequestException");
    create("m", "*", 60).await.unwrap();
    let (code, status) = failed(create("m", "*", 60).await);
    assert_eq!((code.as_str(), status), ("ResourceAlreadyExistsException", 409));
    let (code, status) =
        failed(iot.update_fleet_metric().metric_name("m").index_name("AWS_Things").expected_version(7).send().await);
    assert_eq!((code.as_str(), status), ("VersionConflictException", 409));
    let listed = iot.list_fleet_metrics().send().await.unwrap();
    assert_eq!(listed.fleet_metrics().iter().filter_map(|m| m.metric_name()).collect::<Vec<_>>(), ["m"]);
    iot.delete_fleet_metric().metric_name("m").send().await.unwrap();
    let (code, status) = failed(iot.describe_fleet_metric().metric_name("m").send().await);
    assert_eq!((code.as_str(), status), ("ResourceNotFoundException", 404));
    cloud.shutdown().await;
}

#[tokio::test]
async fn a_core_connected_when_the_cloud_stops_is_disconnected_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    let iot = iot(&cloud);
    let device = common::create_device(&cloud.registry, CORE, common::ALLOW_ALL);
    enable_indexing(&iot).await;
    let _client = connect(&cloud, &device).await;
    let before = wait_connected(&iot, true).await.connectivity().unwrap().timestamp.unwrap();
    cloud.shutdown().await;

    let cloud = start(dir.path()).await;
    let iot = crate::thing_groups_sdk::iot(&cloud);
    let doc = core_document(&iot).await.expect("the core is still indexed");
    let c = doc.connectivity().unwrap();
    assert_eq!(c.connected, Some(false));
    assert_eq!(c.disconnect_reason(), Some("SERVER_INITIATED_DISCONNECT"));
    assert!(c.timestamp.unwrap() >= before);
    let stats = iot.get_statistics().query_string("connectivity.connected:false").send().await.unwrap();
    assert_eq!(stats.statistics().unwrap().count(), 1);
    cloud.shutdown().await;
}

const PROVIDER_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
  "Principal":{"Service":"credentials.iot.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const INDEX_READER: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:SearchIndex",
  "Resource":"arn:aws:iot:us-east-1:000000000000:index/AWS_Things"}]}"#;

#[tokio::test]
async fn scoped_credentials_search_the_index_they_are_allowed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = start(dir.path()).await;
    enable_indexing(&iot(&cloud)).await;
    cloud.iam.create_role("fleet-reader", None, PROVIDER_TRUST, None, None).unwrap();
    cloud.iam.put_role_policy("fleet-reader", "search", INDEX_READER).unwrap();
    let role = cloud.iam.get_role("fleet-reader").unwrap();
    let session = cloud.iam.issue_session(&role, Duration::from_secs(900), &Default::default()).unwrap();
    let creds = aws_credential_types::Credentials::new(
        &session.access_key_id,
        &session.secret_access_key,
        Some(session.session_token.clone()),
        None,
        "scoped",
    );
    let scoped = crate::iam_sdk::iot(&cloud, creds);
    scoped.search_index().index_name("AWS_Things").query_string("*").send().await.expect("SearchIndex in scope");
    let (code, status) = failed(scoped.search_index().index_name("AWS_ThingGroups").query_string("*").send().await);
    assert_eq!((code.as_str(), status), ("AccessDeniedException", 403), "another index");
    let (code, status) = failed(scoped.get_statistics().query_string("*").send().await);
    assert_eq!((code.as_str(), status), ("AccessDeniedException", 403), "GetStatistics is not in the policy");
    let (code, status) = failed(scoped.list_fleet_metrics().send().await);
    assert_eq!((code.as_str(), status), ("AccessDeniedException", 403), "ListFleetMetrics is not in the policy");
    cloud.shutdown().await;
}
