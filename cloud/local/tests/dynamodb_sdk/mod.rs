//! DynamoDB with `aws-sdk-dynamodb`: a table's life (create, describe, items with update and
//! condition expressions, Query with a key condition, a filter and pages, Scan in pages, delete),
//! DynamoDB's errors, tables and items kept across a restart, a scoped role's credentials allowed
//! on its table and refused elsewhere, and a topic rule whose dynamoDBv2 action writes a device's
//! message as an item.

use std::collections::HashMap;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue, ScalarAttributeType,
    TableStatus,
};
use aws_sdk_iot::types::{Action, DynamoDBv2Action, PutItemInput, RepublishAction};
use local_cloud::server::{Config, LocalCloud};
use site_testkit::mqtt::Observer;

use crate::common::{Client, TestCloud, admin, failed, sdk_http_client};
use crate::rules_sdk::{ROLE_TRUST, iot_admin, json_of, rule};

const TABLE: &str = "pump-readings";

fn dynamodb(http: &str, creds: Credentials) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .endpoint_url(http)
            .http_client(sdk_http_client())
            .build(),
    )
}

/// The local cloud on `dir`, and `aws-sdk-dynamodb` as its administrator.
async fn start_cloud(dir: &std::path::Path) -> (LocalCloud, aws_sdk_dynamodb::Client) {
    let cloud = LocalCloud::start(Config::ephemeral(dir)).await.unwrap();
    let db = dynamodb(&cloud.endpoints.http, admin(&cloud.endpoints));
    (cloud, db)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A table keyed by thing (partition) and timestamp (sort).
async fn try_create_table(
    db: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<
    aws_sdk_dynamodb::operation::create_table::CreateTableOutput,
    aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::create_table::CreateTableError>,
> {
    let attribute =
        |name: &str, kind| AttributeDefinition::builder().attribute_name(name).attribute_type(kind).build().unwrap();
    let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().unwrap();
    db.create_table()
        .table_name(name)
        .attribute_definitions(attribute("thing", ScalarAttributeType::S))
        .attribute_definitions(attribute("ts", ScalarAttributeType::N))
        .key_schema(key("thing", KeyType::Hash))
        .key_schema(key("ts", KeyType::Range))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
}

async fn create_table(db: &aws_sdk_dynamodb::Client, name: &str) {
    try_create_table(db, name).await.expect("CreateTable");
}

fn key(thing: &str, ts: i64) -> HashMap<String, AttributeValue> {
    HashMap::from([("thing".to_owned(), s(thing)), ("ts".to_owned(), n(ts))])
}

#[tokio::test]
async fn dynamodb_serves_tables_and_items_to_the_sdk_and_keeps_them_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, db) = start_cloud(dir.path()).await;

    create_table(&db, TABLE).await;
    let described = db.describe_table().table_name(TABLE).send().await.expect("DescribeTable");
    let table = described.table().unwrap();
    assert_eq!(table.table_status(), Some(&TableStatus::Active));
    assert_eq!(table.table_arn(), Some("arn:aws:dynamodb:us-east-1:000000000000:table/pump-readings"));
    let (code, _) = failed(try_create_table(&db, TABLE).await);
    assert_eq!(code, "ResourceInUseException");

    for ts in 1..=6 {
        db.put_item()
            .table_name(TABLE)
            .set_item(Some(key("pump-1", ts)))
            .item("speedRpm", n(1000 + ts * 100))
            .send()
            .await
            .expect("PutItem");
    }
    db.put_item().table_name(TABLE).set_item(Some(key("pump-2", 1))).item("speedRpm", n(900)).send().await.unwrap();

    let got = db.get_item().table_name(TABLE).set_key(Some(key("pump-1", 3))).send().await.expect("GetItem");
    assert_eq!(got.item().unwrap()["speedRpm"], n(1300));

    let updated = db
        .update_item()
        .table_name(TABLE)
        .set_key(Some(key("pump-1", 3)))
        .update_expression("SET speedRpm = speedRpm + :step, #m = :mode")
        .expression_attribute_names("#m", "mode")
        .expression_attribute_values(":step", n(50))
        .expression_attribute_values(":mode", s("manual"))
        .return_values(ReturnValue::UpdatedNew)
        .send()
        .await
        .expect("UpdateItem");
    let attributes = updated.attributes().unwrap();
    assert_eq!((&attributes["speedRpm"], &attributes["mode"]), (&n(1350), &s("manual")));

    let conditional = db
        .put_item()
        .table_name(TABLE)
        .set_item(Some(key("pump-1", 3)))
        .condition_expression("attribute_not_exists(thing)")
        .send()
        .await;
    let (code, status) = failed(conditional);
    assert_eq!((code.as_str(), status), ("ConditionalCheckFailedException", 400));

    // Query: pump-1 after ts 1, speeds of at least 1300, two items a page.
    let mut start = None;
    let mut found = Vec::new();
    let mut pages = 0;
    loop {
        let page = db
            .query()
            .table_name(TABLE)
            .key_condition_expression("thing = :thing AND ts > :after")
            .filter_expression("speedRpm >= :min")
            .expression_attribute_values(":thing", s("pump-1"))
            .expression_attribute_values(":after", n(1))
            .expression_attribute_values(":min", n(1300))
            .limit(2)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("Query");
        pages += 1;
        found.extend(page.items().iter().map(|item| item["ts"].clone()));
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
        assert!(pages < 10, "Query pages never end");
    }
    assert_eq!(found, vec![n(3), n(4), n(5), n(6)]);
    assert!(pages >= 3, "five items read two at a time take three pages or more, got {pages}");

    let mut start = None;
    let mut scanned = 0;
    loop {
        let page = db.scan().table_name(TABLE).limit(3).set_exclusive_start_key(start).send().await.expect("Scan");
        scanned += page.items().len();
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            break;
        }
    }
    assert_eq!(scanned, 7);

    let (code, status) = failed(db.get_item().table_name("no-such-table").set_key(Some(key("x", 1))).send().await);
    assert_eq!((code.as_str(), status), ("ResourceNotFoundException", 400));

    // A restart on the same data directory keeps the table and its items.
    cloud.shutdown().await;
    let (cloud, db) = start_cloud(dir.path()).await;
    let tables = db.list_tables().send().await.expect("ListTables");
    assert_eq!(tables.table_names(), [TABLE]);
    let kept = db.get_item().table_name(TABLE).set_key(Some(key("pump-1", 3))).send().await.unwrap();
    assert_eq!(kept.item().unwrap()["mode"], s("manual"));

    db.delete_item().table_name(TABLE).set_key(Some(key("pump-1", 3))).send().await.expect("DeleteItem");
    let gone = db.get_item().table_name(TABLE).set_key(Some(key("pump-1", 3))).send().await.unwrap();
    assert!(gone.item().is_none());
    db.delete_table().table_name(TABLE).send().await.expect("DeleteTable");
    let (code, _) = failed(db.describe_table().table_name(TABLE).send().await);
    assert_eq!(code, "ResourceNotFoundException");
    tokio::time::timeout(Duration::from_secs(10), cloud.shutdown()).await.expect("clean shutdown");
}

const PROVIDER_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
  "Principal":{"Service":"credentials.iot.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const READINGS_ONLY: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
  "Action":["dynamodb:PutItem","dynamodb:GetItem"],
  "Resource":"arn:aws:dynamodb:us-east-1:000000000000:table/pump-readings"}]}"#;

#[tokio::test]
async fn dynamodb_authorizes_each_operation_on_its_table() {
    let dir = tempfile::tempdir().unwrap();
    let (cloud, admin_db) = start_cloud(dir.path()).await;
    create_table(&admin_db, TABLE).await;
    create_table(&admin_db, "audit").await;

    cloud.iam.create_role("pump-writer", None, PROVIDER_TRUST, None, None).unwrap();
    cloud.iam.put_role_policy("pump-writer", "readings", READINGS_ONLY).unwrap();
    let role = cloud.iam.get_role("pump-writer").unwrap();
    let session = cloud.iam.issue_session(&role, Duration::from_secs(900), &Default::default()).unwrap();
    let scoped = Credentials::new(
        &session.access_key_id,
        &session.secret_access_key,
        Some(session.session_token.clone()),
        None,
        "scoped",
    );
    let db = dynamodb(&cloud.endpoints.http, scoped);
    db.put_item().table_name(TABLE).set_item(Some(key("pump-1", 1))).send().await.expect("PutItem in scope");
    let got = db.get_item().table_name(TABLE).set_key(Some(key("pump-1", 1))).send().await.expect("GetItem");
    assert!(got.item().is_some());
    let (code, status) = failed(db.put_item().table_name("audit").set_item(Some(key("pump-1", 1))).send().await);
    assert_eq!((code.as_str(), status), ("AccessDeniedException", 400));
    let (code, _) = failed(db.delete_item().table_name(TABLE).set_key(Some(key("pump-1", 1))).send().await);
    assert_eq!(code, "AccessDeniedException", "DeleteItem is not in the role's policy");

    // Unsigned, or for an operation that is not served: DynamoDB's errors, not S3's.
    let unsigned = raw_post(&cloud.endpoints.http, "DynamoDB_20120810.ListTables", "{}").await;
    assert!(unsigned.starts_with("HTTP/1.1 400"), "{unsigned}");
    assert!(unsigned.contains("MissingAuthenticationTokenException"), "{unsigned}");

    let stranger = dynamodb(&cloud.endpoints.http, Credentials::new("AKIDUNKNOWN", "secret", None, None, "x"));
    let (code, status) = failed(stranger.list_tables().send().await);
    assert_eq!((code.as_str(), status), ("UnrecognizedClientException", 400));
    cloud.shutdown().await;
}

/// An unsigned `POST /` with `target`, answered in full (status line, headers, body).
async fn raw_post(http: &str, target: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = http.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await.unwrap().unwrap();
    answer
}

const RULES_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
  {"Effect":"Allow","Action":"dynamodb:PutItem","Resource":"arn:aws:dynamodb:us-east-1:000000000000:table/pump-readings"},
  {"Effect":"Allow","Action":"iot:Publish","Resource":"arn:aws:iot:us-east-1:000000000000:topic/errors/*"}]}"#;

#[tokio::test]
async fn a_dynamodbv2_rule_action_puts_the_devices_message_as_an_item() {
    let tc = TestCloud::start().await;
    let local = &tc.cloud;
    let role = local.iam.create_role("pump-rules", None, ROLE_TRUST, None, None).unwrap().arn;
    local.iam.put_role_policy("pump-rules", "actions", RULES_POLICY).unwrap();
    let db = dynamodb(&local.endpoints.http, admin(&local.endpoints));
    create_table(&db, TABLE).await;
    let iot = iot_admin(local);
    let put = DynamoDBv2Action::builder()
        .role_arn(&role)
        .put_item(PutItemInput::builder().table_name(TABLE).build().unwrap())
        .build()
        .unwrap();
    let errors = RepublishAction::builder().role_arn(&role).topic("errors/${topic(3)}").qos(1).build().unwrap();
    let sql = "SELECT *, topic(3) AS thing FROM 'dt/pump/+/telemetry'";
    let (put, errors) = (Action::builder().dynamo_dbv2(put).build(), Action::builder().republish(errors).build());
    rule(&iot, "readings", sql, vec![put], Some(errors)).await;

    let mut app = Observer::connect(tc.options("app", &tc.allow_all_device("app")), &["errors/#"]).await;
    let (mut device, _) = Client::connect(tc.options("pump-1", &tc.allow_all_device("pump-1"))).await.unwrap();
    let qos1 = rumqttc::QoS::AtLeastOnce;
    let reading = r#"{"ts": 42, "speedRpm": 1450, "running": true, "limits": {"maxRpm": 1800}}"#;
    device.publish("dt/pump/pump-1/telemetry", qos1, false, reading).await.unwrap();
    let item = site_testkit::wait_until(
        "the reading as an item",
        async || {
            let got = db.get_item().table_name(TABLE).set_key(Some(key("pump-1", 42))).send().await.unwrap();
            got.item().cloned()
        },
        Option::is_some,
        |item| format!("{item:?}"),
    )
    .await
    .unwrap();
    assert_eq!(item["speedRpm"], n(1450));
    assert_eq!(item["running"], AttributeValue::Bool(true));
    assert_eq!(item["limits"], AttributeValue::M(HashMap::from([("maxRpm".to_owned(), n(1800))])));

    // Without the sort key the action fails, and the error action says why.
    device.publish("dt/pump/pump-1/telemetry", qos1, false, r#"{"speedRpm": 1}"#).await.unwrap();
    let error = json_of(&app.wait_for("the rule's error", |m| m.topic == "errors/pump-1").await);
    let failure = &error["failures"][0];
    assert_eq!(
        (failure["failedAction"].as_str(), failure["failedResource"].as_str()),
        (Some("DynamoDBv2Action"), Some(TABLE))
    );
    assert!(failure["errorMessage"].as_str().unwrap().contains("ts"), "{failure}");
    tc.stop().await;
}
