//! The rules engine end to end: topic rules made with `aws-sdk-iot`, a device publishing over
//! MQTT, and what the rules' actions do — republish with substitution templates, S3 objects,
//! Basic Ingest, the error action with IoT Core's error message when an action fails (no bucket,
//! a role that does not allow it, no such function), and a disabled rule staying quiet; the
//! `cloudwatchMetric` action's datapoints and the rule metrics IoT Core writes to `AWS/IoT`.

use aws_sdk_iot::types::{Action, CloudwatchMetricAction, LambdaAction, RepublishAction, S3Action, TopicRulePayload};
use base64::Engine as _;
use serde_json::{Value, json};
use site_testkit::mqtt::Observer;

use crate::common::{Client, TestCloud, admin, sdk_http_client};

pub(crate) const ROLE_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
  "Principal":{"Service":"iot.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
/// What the rules' role may do: publish under `cmd/` and `errors/`, put objects in the landing
/// bucket.
const ROLE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":"iot:Publish","Resource":["arn:aws:iot:us-east-1:000000000000:topic/cmd/*",
    "arn:aws:iot:us-east-1:000000000000:topic/errors/*"]},
  {"Effect":"Allow","Action":"s3:PutObject","Resource":"arn:aws:s3:::pump-landing/*"}]}"#;
const BUCKET: &str = "pump-landing";

fn republish(role: &str, topic: &str) -> Action {
    Action::builder().republish(RepublishAction::builder().role_arn(role).topic(topic).qos(1).build().unwrap()).build()
}

pub(crate) async fn rule(
    iot: &aws_sdk_iot::Client,
    name: &str,
    sql: &str,
    actions: Vec<Action>,
    error: Option<Action>,
) {
    let payload = TopicRulePayload::builder()
        .sql(sql)
        .aws_iot_sql_version("2016-03-23")
        .set_actions(Some(actions))
        .set_error_action(error)
        .build()
        .unwrap();
    iot.create_topic_rule().rule_name(name).topic_rule_payload(payload).send().await.expect("CreateTopicRule");
}

/// `aws-sdk-iot` as the administrator.
pub(crate) fn iot_admin(local: &local_cloud::server::LocalCloud) -> aws_sdk_iot::Client {
    aws_sdk_iot::Client::from_conf(
        aws_sdk_iot::Config::builder()
            .behavior_version(aws_sdk_iot::config::BehaviorVersion::latest())
            .region(aws_sdk_iot::config::Region::new("us-east-1"))
            .credentials_provider(admin(&local.endpoints))
            .endpoint_url(&local.endpoints.http)
            .http_client(sdk_http_client())
            .build(),
    )
}

pub(crate) fn json_of(m: &site_testkit::mqtt::Message) -> Value {
    serde_json::from_slice(&m.payload).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&m.payload)))
}

#[tokio::test]
async fn rules_republish_write_s3_take_basic_ingest_and_report_failed_actions_to_their_error_action() {
    let tc = TestCloud::start().await;
    let local = &tc.cloud;
    let role = local.iam.create_role("pump-rules", None, ROLE_TRUST, None, None).unwrap().arn;
    local.iam.put_role_policy("pump-rules", "actions", ROLE_POLICY).unwrap();
    let iot = iot_admin(local);
    let errors = Some(republish(&role, "errors/${topic(3)}"));
    rule(
        &iot,
        "maintenance",
        "SELECT concat('maintenance for ', topic(3)) AS reason, severity FROM 'dt/pump/+/anomalies' WHERE severity >= 2",
        vec![republish(&role, "cmd/${topic(3)}/maintenance")],
        None,
    )
    .await;
    let s3 =
        S3Action::builder().role_arn(&role).bucket_name(BUCKET).key("${topic(3)}/${traceid()}.json").build().unwrap();
    rule(
        &iot,
        "landing",
        "SELECT * FROM 'dt/pump/+/telemetry'",
        vec![Action::builder().s3(s3).build()],
        errors.clone(),
    )
    .await;
    rule(&iot, "ingest", "SELECT *, clientid() AS device", vec![republish(&role, "cmd/ingest/out")], None).await;
    rule(&iot, "denied", "SELECT * FROM 'dt/pump/+/denied'", vec![republish(&role, "forbidden/x")], errors.clone())
        .await;
    let lambda = LambdaAction::builder().function_arn("arn:aws:lambda:us-east-1:000000000000:function:nope").build();
    rule(
        &iot,
        "handler",
        "SELECT * FROM 'dt/pump/+/lambda'",
        vec![Action::builder().lambda(lambda.unwrap()).build()],
        errors,
    )
    .await;
    rule(&iot, "quiet", "SELECT 'quiet' AS who FROM 'dt/pump/+/anomalies'", vec![republish(&role, "cmd/quiet")], None)
        .await;
    iot.disable_topic_rule().rule_name("quiet").send().await.unwrap();

    let mut app = Observer::connect(tc.options("app", &tc.allow_all_device("app")), &["cmd/#", "errors/#"]).await;
    let (mut device, _) = Client::connect(tc.options("pump-1", &tc.allow_all_device("pump-1"))).await.unwrap();
    let qos1 = rumqttc::QoS::AtLeastOnce;

    // WHERE false: nothing; then a match, republished with the template's topic.
    device.publish("dt/pump/pump-1/anomalies", qos1, false, r#"{"severity": 1}"#).await.unwrap();
    device.publish("dt/pump/pump-1/anomalies", qos1, false, r#"{"severity": 3}"#).await.unwrap();
    let got = app.next("the maintenance command").await;
    assert_eq!(got.topic, "cmd/pump-1/maintenance", "the disabled rule and the WHERE-false message sent nothing");
    assert_eq!(json_of(&got), json!({"reason": "maintenance for pump-1", "severity": 3}));

    // S3 without the bucket: the error action gets IoT Core's error message.
    let reading = br#"{"speedRpm": 1450, "seq": 1}"#;
    device.publish("dt/pump/pump-1/telemetry", qos1, false, reading.to_vec()).await.unwrap();
    let error = json_of(&app.wait_for("the landing rule's error", |m| m.topic == "errors/pump-1").await);
    assert_eq!(
        (error["ruleName"].as_str(), error["topic"].as_str()),
        (Some("landing"), Some("dt/pump/pump-1/telemetry"))
    );
    assert_eq!(error["clientId"], "pump-1");
    let original = base64::engine::general_purpose::STANDARD.decode(error["base64OriginalPayload"].as_str().unwrap());
    assert_eq!(original.unwrap(), reading);
    let failure = &error["failures"][0];
    assert_eq!(
        (failure["failedAction"].as_str(), failure["failedResource"].as_str()),
        (Some("S3Action"), Some(BUCKET))
    );
    assert!(failure["errorMessage"].as_str().unwrap().contains("does not exist"), "{failure}");

    // With the bucket, the reading lands under the pump's prefix.
    local.s3.objects().create_bucket(BUCKET, None).unwrap();
    device.publish("dt/pump/pump-1/telemetry", qos1, false, reading.to_vec()).await.unwrap();
    let landed = site_testkit::wait_until(
        "the reading in S3",
        async || {
            let page = local.s3.objects().list(BUCKET, "pump-1/", None, None, 10).expect("ListObjectsV2");
            page.entries
                .into_iter()
                .filter_map(|e| match e {
                    local_cloud::s3::storage::Entry::Object(key, _) => Some(key),
                    local_cloud::s3::storage::Entry::Prefix(_) => None,
                })
                .collect::<Vec<_>>()
        },
        |keys| !keys.is_empty(),
        |keys| format!("{keys:?}"),
    )
    .await;
    use local_cloud::s3::ObjectStore as _;
    let object: Value = serde_json::from_slice(&local.s3.get(BUCKET, &landed[0]).unwrap()).unwrap();
    assert_eq!(object, serde_json::from_slice::<Value>(reading).unwrap());

    // Basic Ingest reaches its rule by name, whatever its FROM (it has none).
    device.publish("$aws/rules/ingest/any/path", qos1, false, r#"{"level": 7}"#).await.unwrap();
    let ingested = app.wait_for("the ingested message", |m| m.topic == "cmd/ingest/out").await;
    assert_eq!(json_of(&ingested), json!({"level": 7, "device": "pump-1"}));

    // The role does not allow the topic; there is no such function: both reported.
    device.publish("dt/pump/pump-1/denied", qos1, false, "{}").await.unwrap();
    let denied = json_of(&app.wait_for("the denied rule's error", |m| m.topic == "errors/pump-1").await);
    assert_eq!(denied["ruleName"], "denied");
    assert!(denied["failures"][0]["errorMessage"].as_str().unwrap().contains("not authorized"), "{denied}");
    device.publish("dt/pump/pump-1/lambda", qos1, false, "{}").await.unwrap();
    let missing = json_of(&app.wait_for("the lambda rule's error", |m| m.topic == "errors/pump-1").await);
    assert_eq!(
        (missing["ruleName"].as_str(), missing["failures"][0]["failedAction"].as_str()),
        (Some("handler"), Some("LambdaAction"))
    );

    let stats = local.rule_stats.clone();
    assert_eq!(stats.actions_failed.load(std::sync::atomic::Ordering::Relaxed), 3);
    tc.stop().await;
}

/// The sum of `Sum` over the last hour of a metric, read with GetMetricStatistics.
fn hour_sum(cloud: &local_cloud::server::LocalCloud, namespace: &str, name: &str, dimensions: &[(&str, &str)]) -> f64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let dimensions: Vec<Value> = dimensions.iter().map(|(n, v)| json!({"Name": n, "Value": v})).collect();
    let request = json!({
        "Namespace": namespace, "MetricName": name, "Dimensions": dimensions,
        "StartTime": now - 3600.0, "EndTime": now + 60.0, "Period": 60, "Statistics": ["Sum", "SampleCount"],
    });
    let answer = cloud.cloudwatch.call(local_cloud::cloudwatch::Operation::GetMetricStatistics, request).unwrap();
    let answer = answer.to_json();
    answer["Datapoints"].as_array().unwrap().iter().map(|d| d["Sum"].as_f64().unwrap()).sum()
}

fn cloudwatch_metric(role: &str, value: &str) -> Action {
    let metric = CloudwatchMetricAction::builder()
        .role_arn(role)
        .metric_namespace("Pump/${topic(3)}")
        .metric_name("SpeedRpm")
        .metric_value(value)
        .metric_unit("None")
        .build()
        .unwrap();
    Action::builder().cloudwatch_metric(metric).build()
}

#[tokio::test]
async fn cloudwatch_metric_actions_put_datapoints_and_rule_outcomes_reach_aws_iot_metrics() {
    let tc = TestCloud::start_with(|c| c.iot_metrics_interval = std::time::Duration::from_millis(200)).await;
    let local = &tc.cloud;
    let role = local.iam.create_role("pump-metrics", None, ROLE_TRUST, None, None).unwrap().arn;
    local
        .iam
        .put_role_policy(
            "pump-metrics",
            "actions",
            r#"{"Version":"2012-10-17","Statement":[
              {"Effect":"Allow","Action":"cloudwatch:PutMetricData","Resource":"*"},
              {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:000000000000:topic/errors/*"}]}"#,
        )
        .unwrap();
    let unprivileged = local.iam.create_role("no-metrics", None, ROLE_TRUST, None, None).unwrap().arn;
    let iot = iot_admin(local);
    let errors = Some(republish(&role, "errors/${topic(3)}"));
    let sql = "SELECT * FROM 'dt/pump/+/telemetry'";
    rule(&iot, "speed", sql, vec![cloudwatch_metric(&role, "${speedRpm}")], None).await;
    rule(&iot, "refused", sql, vec![cloudwatch_metric(&unprivileged, "${speedRpm}")], errors.clone()).await;
    rule(&iot, "not_a_number", sql, vec![cloudwatch_metric(&role, "${status}")], errors).await;

    let mut app = Observer::connect(tc.options("app", &tc.allow_all_device("app")), &["errors/#"]).await;
    let (mut device, _) = Client::connect(tc.options("pump-1", &tc.allow_all_device("pump-1"))).await.unwrap();
    for speed in [1450, 1470] {
        let reading = json!({"speedRpm": speed, "status": "running"}).to_string();
        device.publish("dt/pump/pump-1/telemetry", rumqttc::QoS::AtLeastOnce, false, reading).await.unwrap();
    }

    // The datapoints, in the namespace the template names.
    wait_for_sum(|| hour_sum(local, "Pump/pump-1", "SpeedRpm", &[]), 2920.0).await;

    // A role without cloudwatch:PutMetricData, and a value that is not a number: both reach the
    // error action, with what went wrong.
    let mut reasons = Vec::new();
    for _ in 0..4 {
        let error = json_of(&app.wait_for("an error action", |m| m.topic == "errors/pump-1").await);
        assert_eq!(error["failures"][0]["failedAction"], "CloudwatchMetricAction", "{error}");
        reasons.push((error["ruleName"].as_str().unwrap().to_owned(), error["failures"][0]["errorMessage"].clone()));
    }
    for (rule, message) in &reasons {
        let message = message.as_str().unwrap();
        match rule.as_str() {
            "refused" => assert!(message.contains("not authorized to perform cloudwatch:PutMetricData"), "{message}"),
            "not_a_number" => assert!(message.contains(r#"metricValue "running" is not a number"#), "{message}"),
            other => panic!("{other} reported an error: {message}"),
        }
    }

    // IoT Core's own metrics, flushed to AWS/IoT: per rule, per action type.
    let metric = |name: &'static str, action: &'static str, rule: &'static str| {
        move || hour_sum(local, "AWS/IoT", name, &[("ActionType", action), ("RuleName", rule)])
    };
    wait_for_sum(metric("Success", "CloudwatchMetric", "speed"), 2.0).await;
    for failing in ["refused", "not_a_number"] {
        wait_for_sum(metric("Failure", "CloudwatchMetric", failing), 2.0).await;
        wait_for_sum(metric("ErrorActionSuccess", "Republish", failing), 2.0).await;
    }
    wait_for_sum(|| hour_sum(local, "AWS/IoT", "TopicMatch", &[("RuleName", "speed")]), 2.0).await;
    assert_eq!(metric("Failure", "CloudwatchMetric", "speed")(), 0.0);

    // A rule that selects a key of a payload that is not JSON: ParseError, and no action runs; a
    // Basic Ingest topic naming no rule: RuleNotFound.
    rule(&iot, "keyed", "SELECT speedRpm FROM 'dt/pump/+/raw'", vec![cloudwatch_metric(&role, "${speedRpm}")], None)
        .await;
    device.publish("dt/pump/pump-1/raw", rumqttc::QoS::AtLeastOnce, false, &b"\xff\x00"[..]).await.unwrap();
    device.publish("$aws/rules/no_such_rule/x", rumqttc::QoS::AtLeastOnce, false, "{}").await.unwrap();
    wait_for_sum(|| hour_sum(local, "AWS/IoT", "ParseError", &[("RuleName", "keyed")]), 1.0).await;
    wait_for_sum(|| hour_sum(local, "AWS/IoT", "RuleNotFound", &[("RuleName", "no_such_rule")]), 1.0).await;
    let rules_executed = hour_sum(local, "AWS/IoT", "RulesExecuted", &[]);
    assert_eq!(rules_executed, 6.0, "two readings, three rules each; the unparsable message ran none");
    assert_eq!(metric("Failure", "CloudwatchMetric", "keyed")(), 0.0);
    tc.stop().await;
}

/// Waits until `sum` reads `want`.
async fn wait_for_sum(sum: impl Fn() -> f64, want: f64) {
    site_testkit::wait_until(format!("a sum of {want}"), async || sum(), |s| *s == want, |s| format!("{s}")).await;
}
