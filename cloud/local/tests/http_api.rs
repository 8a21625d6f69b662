//! The HTTP endpoint driven by AWS's own Rust clients (`aws-sdk-iot`,
//! `aws-sdk-iotdataplane`) and by raw HTTP, on loopback.
//!
//! Most tests assemble the services themselves (in-memory store, a CA in a
//! temporary directory) so they can watch the bus the data-plane Publish
//! writes to; `local_cloud_serves_the_http_api` checks the same router behind
//! [`LocalCloud::start`].

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_iot::config::retry::RetryConfig;
use aws_sdk_iot::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_iot::error::ProvideErrorMetadata;
use aws_sdk_iot::types::{AttributePayload, CertificateStatus, ThingGroupProperties, ThingTypeProperties};
use aws_sdk_iotdataplane::primitives::Blob;
use local_cloud::bus::{Bus, BusMessage, BusReceiver};
use local_cloud::ca::LocalCa;
use local_cloud::http::{AppState, router};
use local_cloud::registry::Registry;
use local_cloud::server::{Config, LocalCloud};
use local_cloud::shadows::ShadowService;
use local_cloud::store::Store;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MQTT_ENDPOINT: &str = "127.0.0.1:18883";
const POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect","Resource":"*"}]}"#;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// The router on an ephemeral loopback port, with the bus's receiving end.
struct Api {
    url: String,
    bus: BusReceiver,
    server: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// No S3 behind this API: the Jobs routes are tested with the whole local cloud.
#[derive(Debug)]
struct NoObjects;

impl local_cloud::s3::ObjectStore for NoObjects {
    fn head(
        &self,
        bucket: &str,
        _: &str,
    ) -> Result<Option<local_cloud::s3::ObjectMeta>, local_cloud::s3::ObjectStoreError> {
        Err(local_cloud::s3::ObjectStoreError::NoSuchBucket(bucket.into()))
    }

    fn presign_get(&self, bucket: &str, _: &str, _: Duration) -> Result<String, local_cloud::s3::ObjectStoreError> {
        Err(local_cloud::s3::ObjectStoreError::NoSuchBucket(bucket.into()))
    }

    fn get(&self, bucket: &str, _: &str) -> Result<Vec<u8>, local_cloud::s3::ObjectStoreError> {
        Err(local_cloud::s3::ObjectStoreError::NoSuchBucket(bucket.into()))
    }
}

async fn start_api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let clock = local_cloud::time::system();
    let store = Store::in_memory().unwrap();
    let ca = Arc::new(LocalCa::load_or_create(dir.path()).unwrap());
    let registry = Arc::new(Registry::open(store.clone(), ca, clock.clone(), "us-east-1", "000000000000").unwrap());
    let (bus, rx) = Bus::channel();
    let events = Arc::new(local_cloud::events::EventSettings::open(store.clone(), clock.clone()).unwrap());
    let jobs = local_cloud::jobs::JobsService::open(
        store.clone(),
        bus.clone(),
        clock.clone(),
        registry.clone(),
        Arc::new(NoObjects),
        events.clone(),
    )
    .unwrap();
    let provisioning = local_cloud::provisioning::ProvisioningService::open(
        store.clone(),
        registry.clone(),
        bus.clone(),
        clock.clone(),
    )
    .unwrap();
    let admin =
        local_cloud::credentials::AccessKeyPair { access_key_id: ADMIN.0.into(), secret_access_key: ADMIN.1.into() };
    let iam = local_cloud::iam::Iam::new(store.clone(), clock.clone(), admin, "us-east-1", "000000000000");
    let iot_credentials =
        local_cloud::iot_credentials::IotCredentials::new(store.clone(), clock.clone(), iam.clone(), registry.clone());
    let rules = local_cloud::rules::TopicRules::new(store.clone(), clock.clone(), "us-east-1", "000000000000");
    let logs = local_cloud::logs::Logs::memory(clock.clone(), "us-east-1", "000000000000").unwrap();
    let fleet_index =
        local_cloud::fleet_index::FleetIndex::open(store.clone(), registry.clone(), clock.clone()).unwrap();
    let fleet_metrics =
        local_cloud::fleet_index::metrics::FleetMetrics::new(fleet_index, store.clone(), "us-east-1", "000000000000");
    let cognito = local_cloud::cognito::Cognito::new(
        store.clone(),
        clock.clone(),
        "us-east-1",
        "000000000000",
        "http://127.0.0.1:4566",
    );
    let shadows = ShadowService::new(store, bus.clone(), clock);
    let state = AppState {
        registry,
        shadows,
        bus,
        mqtt_endpoint: MQTT_ENDPOINT.into(),
        jobs,
        provisioning,
        events,
        iot_credentials,
        rules,
        credentials_endpoint: "127.0.0.1:8443".into(),
        iam,
        dynamodb: local_cloud::dynamodb::DynamoDb::memory("us-east-1", "000000000000").unwrap(),
        logs,
        cloudwatch: local_cloud::cloudwatch::CloudWatch::open(
            local_cloud::store::Store::in_memory().unwrap(),
            local_cloud::time::system(),
            "us-east-1",
            "000000000000",
        )
        .unwrap(),
        cognito,
        fleet_metrics,
        iot_metrics: Default::default(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, router(state)).await.unwrap();
    });
    Api { url, bus: rx, server, _dir: dir }
}

/// The administrator's key pair of the API under test: every request must be signed with it.
const ADMIN: (&str, &str) = ("AKID", "SECRET");

fn iot(url: &str) -> aws_sdk_iot::Client {
    let conf = aws_sdk_iot::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ADMIN.0, ADMIN.1, None, None, "test"))
        .endpoint_url(url)
        .http_client(common::sdk_http_client())
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_iot::Client::from_conf(conf)
}

fn data(url: &str) -> aws_sdk_iotdataplane::Client {
    let conf = aws_sdk_iotdataplane::Config::builder()
        .behavior_version(aws_sdk_iotdataplane::config::BehaviorVersion::latest())
        .region(aws_sdk_iotdataplane::config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ADMIN.0, ADMIN.1, None, None, "test"))
        .endpoint_url(url)
        .http_client(common::sdk_http_client())
        .retry_config(aws_sdk_iotdataplane::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_iotdataplane::Client::from_conf(conf)
}

fn blob_json(blob: Option<&Blob>) -> Value {
    serde_json::from_slice(blob.expect("payload").as_ref()).expect("JSON payload")
}

async fn next_bus_message(bus: &mut BusReceiver) -> BusMessage {
    tokio::time::timeout(Duration::from_secs(5), bus.recv()).await.expect("a bus message within 5 s").expect("bus open")
}

/// A raw HTTP/1.1 exchange: status, lower-cased headers, body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == &name.to_ascii_lowercase()).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// SigV4 headers for a request, signed for `iot` with the administrator's pair (as an SDK would).
fn sign(addr: &str, method: &str, path: &str, body: &[u8]) -> String {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = Credentials::new(ADMIN.0, ADMIN.1, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("iot")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let uri = format!("http://{addr}{path}");
    let headers = [("host", addr), ("content-type", "application/json")];
    let request = SignableRequest::new(method, &uri, headers.into_iter(), SignableBody::Bytes(body)).unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    instructions.headers().map(|(k, v)| format!("{k}: {v}\r\n")).collect()
}

async fn raw(url: &str, method: &str, path: &str, body: &[u8]) -> RawResponse {
    let addr = url.trim_start_matches("http://");
    raw_with(addr, method, path, body, &sign(addr, method, path, body)).await
}

/// A raw exchange with the given authentication headers (each ending in CRLF).
async fn raw_with(addr: &str, method: &str, path: &str, body: &[u8], auth: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         {auth}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (413) before reading the whole body.
    let _ = stream.write_all(body).await;
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf).await;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let mut body = buf[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked") {
        body = dechunk(&body);
    }
    RawResponse { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

async fn new_active_certificate(iot: &aws_sdk_iot::Client) -> (String, String) {
    let out = iot.create_keys_and_certificate().set_as_active(true).send().await.unwrap();
    (out.certificate_id().unwrap().to_string(), out.certificate_arn().unwrap().to_string())
}

// ---------------------------------------------------------------------------
// Things
// ---------------------------------------------------------------------------

#[tokio::test]
async fn create_thing_returns_arn_and_describe_thing_shows_it() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let created = iot
        .create_thing()
        .thing_name("pump-1")
        .attribute_payload(AttributePayload::builder().attributes("site", "north").build())
        .send()
        .await
        .unwrap();
    assert_eq!(created.thing_name(), Some("pump-1"));
    assert_eq!(created.thing_arn(), Some("arn:aws:iot:us-east-1:000000000000:thing/pump-1"));
    assert!(!created.thing_id().unwrap().is_empty());

    let described = iot.describe_thing().thing_name("pump-1").send().await.unwrap();
    assert_eq!(described.thing_name(), Some("pump-1"));
    assert_eq!(described.default_client_id(), Some("pump-1"));
    assert_eq!(described.thing_id(), created.thing_id());
    assert_eq!(described.thing_arn(), created.thing_arn());
    assert_eq!(described.attributes().unwrap().get("site").map(String::as_str), Some("north"));
    assert_eq!(described.version(), 1);
}

#[tokio::test]
async fn create_thing_with_other_properties_is_resource_already_exists_with_id_and_arn() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let first = iot.create_thing().thing_name("pump-1").send().await.unwrap();
    // Same properties: idempotent, as on AWS.
    let again = iot.create_thing().thing_name("pump-1").send().await.unwrap();
    assert_eq!(again.thing_id(), first.thing_id());

    let err = iot
        .create_thing()
        .thing_name("pump-1")
        .attribute_payload(AttributePayload::builder().attributes("site", "south").build())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    match err {
        aws_sdk_iot::operation::create_thing::CreateThingError::ResourceAlreadyExistsException(e) => {
            assert_eq!(e.resource_id(), first.thing_id());
            assert_eq!(e.resource_arn(), first.thing_arn());
        }
        other => panic!("expected ResourceAlreadyExistsException, got {other:?}"),
    }
}

#[tokio::test]
async fn describe_missing_thing_is_resource_not_found() {
    let api = start_api().await;
    let err = iot(&api.url).describe_thing().thing_name("nope").send().await.unwrap_err();
    let err = err.into_service_error();
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    assert!(err.message().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn invalid_thing_name_is_invalid_request() {
    let api = start_api().await;
    let err = iot(&api.url).create_thing().thing_name("bad name!").send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception());
}

#[tokio::test]
async fn list_things_pages_with_next_token_and_filters_by_attribute() {
    let api = start_api().await;
    let iot = iot(&api.url);
    for (name, site) in [("t1", "a"), ("t2", "b"), ("t3", "a")] {
        iot.create_thing()
            .thing_name(name)
            .attribute_payload(AttributePayload::builder().attributes("site", site).build())
            .send()
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token = None;
    for _ in 0..10 {
        let page = iot.list_things().max_results(2).set_next_token(token).send().await.unwrap();
        assert!(page.things().len() <= 2);
        names.extend(page.things().iter().map(|t| t.thing_name().unwrap().to_string()));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    names.sort();
    assert_eq!(names, ["t1", "t2", "t3"]);

    let filtered = iot.list_things().attribute_name("site").attribute_value("a").send().await.unwrap();
    let mut names: Vec<_> = filtered.things().iter().map(|t| t.thing_name().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["t1", "t3"]);
    let t1 = filtered.things().iter().find(|t| t.thing_name() == Some("t1")).unwrap();
    assert_eq!(t1.thing_arn(), Some("arn:aws:iot:us-east-1:000000000000:thing/t1"));
    assert_eq!(t1.version(), 1);

    let err = iot.list_things().max_results(0).send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception());
}

#[tokio::test]
async fn update_thing_merges_attributes_and_rejects_a_stale_version() {
    let api = start_api().await;
    let iot = iot(&api.url);
    iot.create_thing()
        .thing_name("t")
        .attribute_payload(AttributePayload::builder().attributes("a", "1").attributes("b", "2").build())
        .send()
        .await
        .unwrap();
    iot.update_thing()
        .thing_name("t")
        .attribute_payload(AttributePayload::builder().attributes("b", "").attributes("c", "3").merge(true).build())
        .expected_version(1)
        .send()
        .await
        .unwrap();
    let d = iot.describe_thing().thing_name("t").send().await.unwrap();
    let attrs = d.attributes().unwrap();
    assert_eq!(attrs.get("a").map(String::as_str), Some("1"));
    assert_eq!(attrs.get("b"), None, "an empty value removes the attribute when merging");
    assert_eq!(attrs.get("c").map(String::as_str), Some("3"));
    assert_eq!(d.version(), 2);

    // Without merge the attributes are replaced.
    iot.update_thing()
        .thing_name("t")
        .attribute_payload(AttributePayload::builder().attributes("z", "9").build())
        .send()
        .await
        .unwrap();
    let d = iot.describe_thing().thing_name("t").send().await.unwrap();
    assert_eq!(d.attributes().unwrap().len(), 1);

    let err = iot.update_thing().thing_name("t").expected_version(1).send().await.unwrap_err();
    assert!(err.into_service_error().is_version_conflict_exception());
    let err = iot.update_thing().thing_name("missing").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

#[tokio::test]
async fn delete_thing_removes_it_and_a_stale_version_conflicts() {
    let api = start_api().await;
    let iot = iot(&api.url);
    iot.create_thing().thing_name("t").send().await.unwrap();
    let err = iot.delete_thing().thing_name("t").expected_version(7).send().await.unwrap_err();
    assert!(err.into_service_error().is_version_conflict_exception());
    iot.delete_thing().thing_name("t").expected_version(1).send().await.unwrap();
    let err = iot.describe_thing().thing_name("t").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
    // Deleting a thing that does not exist succeeds, as on AWS.
    iot.delete_thing().thing_name("t").send().await.unwrap();
}

// ---------------------------------------------------------------------------
// Thing types and groups
// ---------------------------------------------------------------------------

#[tokio::test]
async fn thing_type_is_created_and_described() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let created = iot
        .create_thing_type()
        .thing_type_name("Pump")
        .thing_type_properties(
            ThingTypeProperties::builder().thing_type_description("a pump").searchable_attributes("site").build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.thing_type_arn(), Some("arn:aws:iot:us-east-1:000000000000:thingtype/Pump"));
    let d = iot.describe_thing_type().thing_type_name("Pump").send().await.unwrap();
    assert_eq!(d.thing_type_name(), Some("Pump"));
    assert_eq!(d.thing_type_id(), created.thing_type_id());
    let props = d.thing_type_properties().unwrap();
    assert_eq!(props.thing_type_description(), Some("a pump"));
    assert_eq!(props.searchable_attributes(), ["site".to_string()]);
    let meta = d.thing_type_metadata().unwrap();
    assert!(!meta.deprecated());
    assert!(meta.creation_date().unwrap().secs() > 1_600_000_000);

    // A thing of that type.
    iot.create_thing().thing_name("p1").thing_type_name("Pump").send().await.unwrap();
    let t = iot.describe_thing().thing_name("p1").send().await.unwrap();
    assert_eq!(t.thing_type_name(), Some("Pump"));

    let err = iot.describe_thing_type().thing_type_name("Nope").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

#[tokio::test]
async fn thing_groups_nest_and_take_things_by_name_or_arn() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let root = iot.create_thing_group().thing_group_name("fleet").send().await.unwrap();
    let site = iot
        .create_thing_group()
        .thing_group_name("site-a")
        .parent_group_name("fleet")
        .thing_group_properties(
            ThingGroupProperties::builder()
                .thing_group_description("site A")
                .attribute_payload(AttributePayload::builder().attributes("region", "eu").build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(site.thing_group_arn(), Some("arn:aws:iot:us-east-1:000000000000:thinggroup/site-a"));

    let d = iot.describe_thing_group().thing_group_name("site-a").send().await.unwrap();
    assert_eq!(d.thing_group_id(), site.thing_group_id());
    assert_eq!(d.version(), 1);
    let props = d.thing_group_properties().unwrap();
    assert_eq!(props.thing_group_description(), Some("site A"));
    assert_eq!(props.attribute_payload().unwrap().attributes().unwrap().get("region").map(String::as_str), Some("eu"));
    let meta = d.thing_group_metadata().unwrap();
    assert_eq!(meta.parent_group_name(), Some("fleet"));
    let chain = meta.root_to_parent_thing_groups();
    assert_eq!(chain.len(), 1);
    assert_eq!(chain[0].group_name(), Some("fleet"));
    assert_eq!(chain[0].group_arn(), root.thing_group_arn());

    iot.create_thing().thing_name("t1").send().await.unwrap();
    let t2 = iot.create_thing().thing_name("t2").send().await.unwrap();
    iot.add_thing_to_thing_group().thing_group_name("site-a").thing_name("t1").send().await.unwrap();
    iot.add_thing_to_thing_group()
        .set_thing_group_arn(site.thing_group_arn().map(str::to_string))
        .set_thing_arn(t2.thing_arn().map(str::to_string))
        .send()
        .await
        .unwrap();

    let err = iot.add_thing_to_thing_group().thing_group_name("nope").thing_name("t1").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
    let err = iot.add_thing_to_thing_group().thing_group_name("site-a").send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception());
    let err = iot.describe_thing_group().thing_group_name("nope").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

#[tokio::test]
async fn policy_is_created_read_listed_and_deleted() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let created = iot.create_policy().policy_name("DevicePolicy").policy_document(POLICY).send().await.unwrap();
    assert_eq!(created.policy_arn(), Some("arn:aws:iot:us-east-1:000000000000:policy/DevicePolicy"));
    assert_eq!(created.policy_version_id(), Some("1"));
    assert_eq!(created.policy_document(), Some(POLICY));

    let got = iot.get_policy().policy_name("DevicePolicy").send().await.unwrap();
    assert_eq!(got.policy_document(), Some(POLICY));
    assert_eq!(got.default_version_id(), Some("1"));
    assert!(got.creation_date().unwrap().secs() > 1_600_000_000);
    assert!(got.last_modified_date().is_some());

    iot.create_policy().policy_name("Other").policy_document(POLICY).send().await.unwrap();
    let listed = iot.list_policies().send().await.unwrap();
    let names: Vec<_> = listed.policies().iter().map(|p| p.policy_name().unwrap()).collect();
    assert_eq!(names, ["DevicePolicy", "Other"]);
    let first = iot.list_policies().page_size(1).send().await.unwrap();
    assert_eq!(first.policies().len(), 1);
    let rest = iot.list_policies().page_size(1).marker(first.next_marker().unwrap()).send().await.unwrap();
    assert_eq!(rest.policies()[0].policy_name(), Some("Other"));
    assert_eq!(rest.next_marker(), None);

    iot.delete_policy().policy_name("Other").send().await.unwrap();
    let err = iot.get_policy().policy_name("Other").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
    let err = iot.delete_policy().policy_name("Other").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

#[tokio::test]
async fn malformed_or_duplicate_policy_is_rejected_with_its_exception() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let err = iot.create_policy().policy_name("Bad").policy_document("{not a policy").send().await.unwrap_err();
    assert!(err.into_service_error().is_malformed_policy_exception());
    iot.create_policy().policy_name("P").policy_document(POLICY).send().await.unwrap();
    let other = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"iot:Connect","Resource":"*"}]}"#;
    let err = iot.create_policy().policy_name("P").policy_document(other).send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_already_exists_exception());
}

#[tokio::test]
async fn attached_policy_is_listed_and_blocks_deletion_until_detached() {
    let api = start_api().await;
    let iot = iot(&api.url);
    iot.create_policy().policy_name("P").policy_document(POLICY).send().await.unwrap();
    let (_, cert_arn) = new_active_certificate(&iot).await;
    iot.attach_policy().policy_name("P").target(&cert_arn).send().await.unwrap();

    let listed = iot.list_attached_policies().target(&cert_arn).send().await.unwrap();
    let names: Vec<_> = listed.policies().iter().map(|p| p.policy_name().unwrap()).collect();
    assert_eq!(names, ["P"]);
    assert_eq!(listed.policies()[0].policy_arn(), Some("arn:aws:iot:us-east-1:000000000000:policy/P"));

    let err = iot.delete_policy().policy_name("P").send().await.unwrap_err();
    assert!(err.into_service_error().is_delete_conflict_exception());

    iot.detach_policy().policy_name("P").target(&cert_arn).send().await.unwrap();
    let listed = iot.list_attached_policies().target(&cert_arn).send().await.unwrap();
    assert!(listed.policies().is_empty());
    iot.delete_policy().policy_name("P").send().await.unwrap();

    let err = iot.attach_policy().policy_name("Missing").target(&cert_arn).send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

#[tokio::test]
async fn policies_attached_to_parent_groups_are_listed_recursively() {
    let api = start_api().await;
    let iot = iot(&api.url);
    iot.create_policy().policy_name("Fleet").policy_document(POLICY).send().await.unwrap();
    iot.create_policy().policy_name("Site").policy_document(POLICY).send().await.unwrap();
    let fleet = iot.create_thing_group().thing_group_name("fleet").send().await.unwrap();
    let site = iot.create_thing_group().thing_group_name("site").parent_group_name("fleet").send().await.unwrap();
    iot.attach_policy().policy_name("Fleet").target(fleet.thing_group_arn().unwrap()).send().await.unwrap();
    iot.attach_policy().policy_name("Site").target(site.thing_group_arn().unwrap()).send().await.unwrap();

    let direct = iot.list_attached_policies().target(site.thing_group_arn().unwrap()).send().await.unwrap();
    assert_eq!(direct.policies().len(), 1);
    let all =
        iot.list_attached_policies().target(site.thing_group_arn().unwrap()).recursive(true).send().await.unwrap();
    let mut names: Vec<_> = all.policies().iter().map(|p| p.policy_name().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["Fleet", "Site"]);
}

// ---------------------------------------------------------------------------
// Certificates and principals
// ---------------------------------------------------------------------------

#[tokio::test]
async fn keys_and_certificate_are_issued_described_listed_and_updated() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let out = iot.create_keys_and_certificate().set_as_active(true).send().await.unwrap();
    let id = out.certificate_id().unwrap();
    assert_eq!(id.len(), 64);
    assert_eq!(out.certificate_arn().unwrap(), format!("arn:aws:iot:us-east-1:000000000000:cert/{id}"));
    assert!(out.certificate_pem().unwrap().contains("BEGIN CERTIFICATE"));
    let keys = out.key_pair().unwrap();
    assert!(keys.private_key().unwrap().contains("PRIVATE KEY"));
    assert!(keys.public_key().unwrap().contains("PUBLIC KEY"));

    let d = iot.describe_certificate().certificate_id(id).send().await.unwrap();
    let desc = d.certificate_description().unwrap();
    assert_eq!(desc.status(), Some(&CertificateStatus::Active));
    assert_eq!(desc.certificate_pem(), out.certificate_pem());
    assert_eq!(desc.owned_by(), Some("000000000000"));
    let validity = desc.validity().unwrap();
    assert!(validity.not_before().unwrap().secs() < validity.not_after().unwrap().secs());

    let inactive = iot.create_keys_and_certificate().send().await.unwrap();
    let listed = iot.list_certificates().send().await.unwrap();
    assert_eq!(listed.certificates().len(), 2);
    let entry = listed.certificates().iter().find(|c| c.certificate_id() == inactive.certificate_id()).unwrap();
    assert_eq!(entry.status(), Some(&CertificateStatus::Inactive));
    let page = iot.list_certificates().page_size(1).send().await.unwrap();
    assert_eq!(page.certificates().len(), 1);
    assert!(page.next_marker().is_some());

    iot.update_certificate().certificate_id(id).new_status(CertificateStatus::Inactive).send().await.unwrap();
    let d = iot.describe_certificate().certificate_id(id).send().await.unwrap();
    assert_eq!(d.certificate_description().unwrap().status(), Some(&CertificateStatus::Inactive));

    let missing = "0".repeat(64);
    let err = iot.describe_certificate().certificate_id(&missing).send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
    let err = iot
        .update_certificate()
        .certificate_id(&missing)
        .new_status(CertificateStatus::Active)
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

#[tokio::test]
async fn active_certificate_cannot_be_deleted_until_deactivated() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let (id, _) = new_active_certificate(&iot).await;
    let err = iot.delete_certificate().certificate_id(&id).send().await.unwrap_err();
    assert!(err.into_service_error().is_certificate_state_exception());
    iot.update_certificate().certificate_id(&id).new_status(CertificateStatus::Inactive).send().await.unwrap();
    iot.delete_certificate().certificate_id(&id).send().await.unwrap();
    let err = iot.describe_certificate().certificate_id(&id).send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

#[tokio::test]
async fn certificate_from_csr_keeps_the_csr_key_and_bad_csr_is_invalid_request() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "pump-1");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let out =
        iot.create_certificate_from_csr().certificate_signing_request(&csr).set_as_active(true).send().await.unwrap();
    let pem = out.certificate_pem().unwrap();
    let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = der.parse_x509().unwrap();
    assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    let d = iot.describe_certificate().certificate_id(out.certificate_id().unwrap()).send().await.unwrap();
    assert_eq!(d.certificate_description().unwrap().status(), Some(&CertificateStatus::Active));

    let err = iot.create_certificate_from_csr().certificate_signing_request("not a csr").send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception());
}

#[tokio::test]
async fn thing_principal_is_attached_listed_and_detached() {
    let api = start_api().await;
    let iot = iot(&api.url);
    iot.create_thing().thing_name("t").send().await.unwrap();
    let (_, cert_arn) = new_active_certificate(&iot).await;
    iot.attach_thing_principal().thing_name("t").principal(&cert_arn).send().await.unwrap();
    let listed = iot.list_thing_principals().thing_name("t").send().await.unwrap();
    assert_eq!(listed.principals(), std::slice::from_ref(&cert_arn));

    // Attached to a thing: deleting even an inactive certificate conflicts.
    let id = cert_arn.rsplit('/').next().unwrap();
    iot.update_certificate().certificate_id(id).new_status(CertificateStatus::Inactive).send().await.unwrap();
    let err = iot.delete_certificate().certificate_id(id).send().await.unwrap_err();
    assert!(err.into_service_error().is_delete_conflict_exception());

    iot.detach_thing_principal().thing_name("t").principal(&cert_arn).send().await.unwrap();
    let listed = iot.list_thing_principals().thing_name("t").send().await.unwrap();
    assert!(listed.principals().is_empty());

    let err = iot.attach_thing_principal().thing_name("missing").principal(&cert_arn).send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
    let err = iot.list_thing_principals().thing_name("missing").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
}

// ---------------------------------------------------------------------------
// DescribeEndpoint
// ---------------------------------------------------------------------------

#[tokio::test]
async fn describe_endpoint_reports_the_mqtt_host_without_port() {
    let api = start_api().await;
    let iot = iot(&api.url);
    let out = iot.describe_endpoint().endpoint_type("iot:Data-ATS").send().await.unwrap();
    assert_eq!(out.endpoint_address(), Some("127.0.0.1"));
    let err = iot.describe_endpoint().endpoint_type("iot:Bogus").send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception());
}

// ---------------------------------------------------------------------------
// Data plane
// ---------------------------------------------------------------------------

#[tokio::test]
async fn update_desired_then_get_shows_delta_and_version() {
    let api = start_api().await;
    let data = data(&api.url);
    let accepted = data
        .update_thing_shadow()
        .thing_name("pump-1")
        .payload(Blob::new(
            br#"{"state":{"desired":{"mode":"auto","speedRpm":1200},"reported":{"mode":"off"}}}"#.to_vec(),
        ))
        .send()
        .await
        .unwrap();
    let accepted = blob_json(accepted.payload());
    assert_eq!(accepted["version"], 1);
    assert_eq!(accepted["state"]["desired"]["mode"], "auto");

    let got = data.get_thing_shadow().thing_name("pump-1").send().await.unwrap();
    let doc = blob_json(got.payload());
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["state"]["desired"], json!({"mode": "auto", "speedRpm": 1200}));
    assert_eq!(doc["state"]["reported"], json!({"mode": "off"}));
    assert_eq!(doc["state"]["delta"], json!({"mode": "auto", "speedRpm": 1200}));
    assert!(doc["metadata"]["desired"]["mode"]["timestamp"].is_u64());
}

#[tokio::test]
async fn named_shadows_are_separate_and_listed() {
    let api = start_api().await;
    let data = data(&api.url);
    for name in ["pump", "valve"] {
        data.update_thing_shadow()
            .thing_name("core")
            .shadow_name(name)
            .payload(Blob::new(format!(r#"{{"state":{{"reported":{{"name":"{name}"}}}}}}"#).into_bytes()))
            .send()
            .await
            .unwrap();
    }
    let pump = data.get_thing_shadow().thing_name("core").shadow_name("pump").send().await.unwrap();
    assert_eq!(blob_json(pump.payload())["state"]["reported"]["name"], "pump");
    let err = data.get_thing_shadow().thing_name("core").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception(), "the classic shadow was never written");

    let listed = data.list_named_shadows_for_thing().thing_name("core").send().await.unwrap();
    let mut names = listed.results().to_vec();
    names.sort();
    assert_eq!(names, ["pump", "valve"]);
    assert!(listed.timestamp() > 1_600_000_000);
}

#[tokio::test]
async fn update_with_a_stale_version_is_conflict() {
    let api = start_api().await;
    let data = data(&api.url);
    let body = |v: u32| Blob::new(format!(r#"{{"state":{{"desired":{{"x":{v}}}}},"version":{v}}}"#).into_bytes());
    data.update_thing_shadow()
        .thing_name("t")
        .payload(Blob::new(br#"{"state":{"desired":{"x":0}}}"#.to_vec()))
        .send()
        .await
        .unwrap();
    data.update_thing_shadow().thing_name("t").payload(body(1)).send().await.unwrap();
    let err = data.update_thing_shadow().thing_name("t").payload(body(1)).send().await.unwrap_err();
    let err = err.into_service_error();
    assert!(err.is_conflict_exception(), "{err:?}");
}

#[tokio::test]
async fn deleted_shadow_is_not_found_and_bad_documents_are_invalid_requests() {
    let api = start_api().await;
    let data = data(&api.url);
    data.update_thing_shadow()
        .thing_name("t")
        .payload(Blob::new(br#"{"state":{"reported":{"on":true}}}"#.to_vec()))
        .send()
        .await
        .unwrap();
    let deleted = data.delete_thing_shadow().thing_name("t").send().await.unwrap();
    assert_eq!(blob_json(Some(deleted.payload()))["version"], 1);
    let err = data.get_thing_shadow().thing_name("t").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());
    let err = data.delete_thing_shadow().thing_name("t").send().await.unwrap_err();
    assert!(err.into_service_error().is_resource_not_found_exception());

    let err =
        data.update_thing_shadow().thing_name("t").payload(Blob::new(b"{oops".to_vec())).send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception());
    let err = data
        .update_thing_shadow()
        .thing_name("t")
        .payload(Blob::new(br#"{"state":{"desired":{"x":1}}}"#.to_vec()))
        .shadow_name("bad name")
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception());
}

#[tokio::test]
async fn oversized_shadow_state_is_request_entity_too_large() {
    let api = start_api().await;
    let data = data(&api.url);
    let big = "x".repeat(9 * 1024);
    let err = data
        .update_thing_shadow()
        .thing_name("t")
        .payload(Blob::new(format!(r#"{{"state":{{"desired":{{"big":"{big}"}}}}}}"#).into_bytes()))
        .send()
        .await
        .unwrap_err();
    assert!(err.into_service_error().is_request_entity_too_large_exception());
}

#[tokio::test]
async fn publish_delivers_the_payload_to_the_broker_bus() {
    let mut api = start_api().await;
    let data = data(&api.url);
    data.publish()
        .topic("dt/pump/pump-1/telemetry")
        .qos(1)
        .retain(true)
        .payload(Blob::new(br#"{"v":1}"#.to_vec()))
        .send()
        .await
        .unwrap();
    let msg = next_bus_message(&mut api.bus).await;
    assert_eq!(msg.topic, "dt/pump/pump-1/telemetry");
    assert_eq!(msg.payload.as_ref(), br#"{"v":1}"#);
    assert_eq!((msg.qos, msg.retain), (1, true));

    data.publish().topic("a/b").send().await.unwrap();
    let msg = next_bus_message(&mut api.bus).await;
    assert_eq!((msg.topic.as_str(), msg.payload.len(), msg.qos, msg.retain), ("a/b", 0, 0, false));
}

#[tokio::test]
async fn publish_on_a_shadow_update_topic_reaches_the_shadow_service() {
    let mut api = start_api().await;
    let data = data(&api.url);
    data.publish()
        .topic("$aws/things/t/shadow/name/pump/update")
        .payload(Blob::new(br#"{"state":{"desired":{"mode":"manual"}},"clientToken":"c1"}"#.to_vec()))
        .send()
        .await
        .unwrap();
    // Subscribers of the request topic see the publish, then the service answers.
    let request = next_bus_message(&mut api.bus).await;
    assert_eq!(request.topic, "$aws/things/t/shadow/name/pump/update");
    let mut topics = Vec::new();
    while !topics.iter().any(|t: &String| t.ends_with("/update/accepted")) {
        topics.push(next_bus_message(&mut api.bus).await.topic);
    }
    let got = data.get_thing_shadow().thing_name("t").shadow_name("pump").send().await.unwrap();
    assert_eq!(blob_json(got.payload())["state"]["desired"]["mode"], "manual");
}

#[tokio::test]
async fn publish_rejects_bad_qos_wildcards_and_payloads_over_128_kib() {
    let api = start_api().await;
    let data = data(&api.url);
    let err = data.publish().topic("a/b").qos(2).send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception());
    let err = data.publish().topic("a/+/b").send().await.unwrap_err();
    assert!(err.into_service_error().is_invalid_request_exception());
    let err = data.publish().topic("a/b").payload(Blob::new(vec![b'x'; 128 * 1024 + 1])).send().await.unwrap_err();
    // Publish's model lists no 413 error: the SDK reports it by code.
    assert_eq!(err.into_service_error().code(), Some("RequestEntityTooLargeException"));
    data.publish().topic("a/b").payload(Blob::new(vec![b'x'; 128 * 1024])).send().await.unwrap();
}

// ---------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_body_is_invalid_request_with_the_error_type_header() {
    let api = start_api().await;
    let r = raw(&api.url, "POST", "/things/pump-1", b"{\"thingTypeName\": ").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-amzn-ErrorType"), Some("InvalidRequestException"));
    let body = r.json();
    assert_eq!(body["__type"], "InvalidRequestException");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("malformed")));

    let r = raw(&api.url, "POST", "/policies/P", b"[1,2]").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-amzn-ErrorType"), Some("InvalidRequestException"));
    let r = raw(&api.url, "GET", "/things?maxResults=lots", b"").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("x-amzn-ErrorType"), Some("InvalidRequestException"));
}

#[tokio::test]
async fn unknown_operation_is_404_unknown_operation_exception() {
    let api = start_api().await;
    let r = raw(&api.url, "GET", "/no/such/operation", b"").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-amzn-ErrorType"), Some("UnknownOperationException"));
    assert!(r.json()["message"].as_str().is_some_and(|m| m.contains("/no/such/operation")));
    assert!(r.header("x-amzn-RequestId").is_some_and(|id| id.len() == 36));

    let r = raw(&api.url, "PUT", "/policies/P", b"{}").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("x-amzn-ErrorType"), Some("MethodNotAllowedException"));
    let r = raw(&api.url, "PUT", "/thing-groups/not-the-add-operation", b"{}").await;
    assert_eq!(r.status, 405);
}

#[tokio::test]
async fn request_body_over_the_limit_is_413() {
    let api = start_api().await;
    let body = vec![b' '; local_cloud::http::MAX_REQUEST_BYTES + 1];
    let r = raw(&api.url, "POST", "/topics/a", &body).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.header("x-amzn-ErrorType"), Some("RequestEntityTooLargeException"));
}

#[tokio::test]
async fn raw_publish_takes_a_topic_with_unencoded_slashes() {
    let mut api = start_api().await;
    let r = raw(&api.url, "POST", "/topics/dt/pump/p1/anomalies?qos=1", b"{}").await;
    assert_eq!(r.status, 200);
    let msg = next_bus_message(&mut api.bus).await;
    assert_eq!((msg.topic.as_str(), msg.qos), ("dt/pump/p1/anomalies", 1));
    let r = raw(&api.url, "POST", "/topics/dt%2Fpump%2Fp1%2Fanomalies", b"{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(next_bus_message(&mut api.bus).await.topic, "dt/pump/p1/anomalies");
}

// ---------------------------------------------------------------------------
// Behind LocalCloud
// ---------------------------------------------------------------------------

#[tokio::test]
async fn local_cloud_serves_the_http_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::ephemeral(dir.path());
    config.admin_credentials = Some(local_cloud::credentials::AccessKeyPair {
        access_key_id: ADMIN.0.into(),
        secret_access_key: ADMIN.1.into(),
    });
    let cloud = LocalCloud::start(config).await.unwrap();
    let http = cloud.endpoints.http.clone();
    assert!(http.starts_with("http://127.0.0.1:"), "{http}");
    let iot = iot(&http);
    iot.create_thing().thing_name("t").send().await.unwrap();
    assert_eq!(cloud.registry.describe_thing("t").unwrap().name, "t");
    let endpoint = iot.describe_endpoint().endpoint_type("iot:Data-ATS").send().await.unwrap();
    let mqtt_host = cloud.endpoints.mqtt.rsplit_once(':').unwrap().0;
    assert_eq!(endpoint.endpoint_address(), Some(mqtt_host));
    let provider = iot.describe_endpoint().endpoint_type("iot:CredentialProvider").send().await.unwrap();
    let provider_url = cloud.endpoints.credentials_provider.clone().unwrap();
    assert_eq!(
        provider.endpoint_address(),
        Some(provider_url.trim_start_matches("https://").rsplit_once(':').unwrap().0)
    );
    cloud.shutdown().await;
}

#[tokio::test]
async fn requests_not_signed_by_a_known_key_get_awss_authentication_errors() {
    let api = start_api().await;
    let with = |id: &str, secret: &str| {
        let conf = aws_sdk_iot::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(id, secret, None, None, "test"))
            .endpoint_url(&api.url)
            .http_client(common::sdk_http_client())
            .retry_config(RetryConfig::disabled())
            .build();
        aws_sdk_iot::Client::from_conf(conf)
    };
    let (code, status) = common::failed(with(ADMIN.0, "not-the-secret").list_things().send().await);
    assert_eq!((code.as_str(), status), ("InvalidSignatureException", 403));
    let (code, status) = common::failed(with("AKIDNOBODY", ADMIN.1).list_things().send().await);
    assert_eq!((code.as_str(), status), ("UnrecognizedClientException", 403));
    // Temporary-looking credentials that were never issued.
    let (code, status) = common::failed(
        aws_sdk_iot::Client::from_conf(
            with(ADMIN.0, ADMIN.1)
                .config()
                .to_builder()
                .credentials_provider(Credentials::new("ASIANEVERISSUED", "s", Some("token".into()), None, "t"))
                .build(),
        )
        .list_things()
        .send()
        .await,
    );
    assert_eq!((code.as_str(), status), ("UnrecognizedClientException", 403));

    let addr = api.url.trim_start_matches("http://");
    let r = raw_with(addr, "GET", "/things", b"", "").await;
    assert_eq!((r.status, r.header("x-amzn-ErrorType")), (403, Some("MissingAuthenticationTokenException")));
    // A signature over other content: the body changed after signing.
    let headers = sign(addr, "POST", "/things/pump-1", b"{}");
    let r = raw_with(addr, "POST", "/things/pump-1", b"{\"attributePayload\":{}}", &headers).await;
    assert_eq!((r.status, r.header("x-amzn-ErrorType")), (403, Some("InvalidSignatureException")));
    assert!(r.json()["message"].as_str().unwrap().contains("does not match"), "{:?}", r.json());
    // A header that is not SigV4 at all.
    let bad = "Authorization: AWS4-HMAC-SHA256 Credential=AKID/2024/us-east-1/iot/aws4_request, SignedHeaders=host, Signature=00\r\n";
    let r = raw_with(addr, "GET", "/things", b"", bad).await;
    assert_eq!((r.status, r.header("x-amzn-ErrorType")), (403, Some("IncompleteSignatureException")));
}

#[tokio::test]
async fn topic_rules_are_created_read_listed_replaced_toggled_and_deleted_through_the_sdk() {
    use aws_sdk_iot::types::{Action, LambdaAction, RepublishAction, TopicRulePayload};
    let api = start_api().await;
    let iot = iot(&api.url);
    let republish = Action::builder()
        .republish(
            RepublishAction::builder()
                .role_arn("arn:aws:iam::000000000000:role/rules")
                .topic("cmd/${topic(3)}/maintenance")
                .qos(1)
                .build()
                .unwrap(),
        )
        .build();
    let lambda = Action::builder()
        .lambda(
            LambdaAction::builder()
                .function_arn("arn:aws:lambda:us-east-1:000000000000:function:anomalies")
                .build()
                .unwrap(),
        )
        .build();
    let payload = TopicRulePayload::builder()
        .sql("SELECT *, topic(3) AS thing FROM 'dt/pump/+/anomalies' WHERE severity > 1")
        .aws_iot_sql_version("2016-03-23")
        .description("anomalies to the handler")
        .actions(lambda)
        .error_action(republish.clone())
        .build()
        .unwrap();
    iot.create_topic_rule().rule_name("pump_anomalies").topic_rule_payload(payload.clone()).send().await.unwrap();

    let got = iot.get_topic_rule().rule_name("pump_anomalies").send().await.unwrap();
    assert_eq!(got.rule_arn(), Some("arn:aws:iot:us-east-1:000000000000:rule/pump_anomalies"));
    let rule = got.rule().unwrap();
    assert_eq!(rule.sql(), Some(payload.sql()));
    assert_eq!(rule.aws_iot_sql_version(), Some("2016-03-23"));
    assert_eq!(rule.rule_disabled(), Some(false));
    assert!(rule.created_at().is_some());
    assert_eq!(
        rule.actions()[0].lambda().unwrap().function_arn(),
        "arn:aws:lambda:us-east-1:000000000000:function:anomalies"
    );
    assert_eq!(rule.error_action().unwrap().republish().unwrap().qos(), Some(1));

    let again = iot.create_topic_rule().rule_name("pump_anomalies").topic_rule_payload(payload.clone()).send().await;
    assert!(again.unwrap_err().into_service_error().is_resource_already_exists_exception());

    iot.disable_topic_rule().rule_name("pump_anomalies").send().await.unwrap();
    let listed = iot.list_topic_rules().rule_disabled(true).send().await.unwrap();
    let item = &listed.rules()[0];
    assert_eq!(
        (item.rule_name(), item.topic_pattern(), item.rule_disabled()),
        (Some("pump_anomalies"), Some("dt/pump/+/anomalies"), Some(true))
    );
    assert!(iot.list_topic_rules().rule_disabled(false).send().await.unwrap().rules().is_empty());
    iot.enable_topic_rule().rule_name("pump_anomalies").send().await.unwrap();
    let by_topic = iot.list_topic_rules().topic("dt/pump/+/anomalies").send().await.unwrap();
    assert_eq!(by_topic.rules().len(), 1);

    let replaced = TopicRulePayload::builder().sql("SELECT speed FROM 'dt/pump/#'").actions(republish).build().unwrap();
    iot.replace_topic_rule().rule_name("pump_anomalies").topic_rule_payload(replaced).send().await.unwrap();
    let rule = iot.get_topic_rule().rule_name("pump_anomalies").send().await.unwrap().rule.unwrap();
    assert_eq!((rule.sql(), rule.aws_iot_sql_version()), (Some("SELECT speed FROM 'dt/pump/#'"), Some("2015-10-08")));

    iot.delete_topic_rule().rule_name("pump_anomalies").send().await.unwrap();
    // IoT Core answers a rule that does not exist with UnauthorizedException.
    let gone = iot.get_topic_rule().rule_name("pump_anomalies").send().await.unwrap_err().into_service_error();
    assert!(gone.is_unauthorized_exception(), "{gone:?}");
    let gone = iot.delete_topic_rule().rule_name("pump_anomalies").send().await.unwrap_err().into_service_error();
    assert!(gone.is_unauthorized_exception(), "{gone:?}");
}

#[tokio::test]
async fn a_topic_rule_with_bad_sql_or_an_action_the_local_cloud_does_not_run_is_refused_with_the_reason() {
    use aws_sdk_iot::types::{Action, SqsAction, TopicRulePayload};
    let api = start_api().await;
    let iot = iot(&api.url);
    let bad_sql = TopicRulePayload::builder().sql("SELECT FROM WHERE").set_actions(Some(vec![])).build().unwrap();
    let err = iot.create_topic_rule().rule_name("r").topic_rule_payload(bad_sql).send().await.unwrap_err();
    let err = err.into_service_error();
    assert!(err.is_sql_parse_exception(), "{err:?}");
    assert!(err.message().is_some_and(|m| !m.is_empty()));

    let sqs = Action::builder()
        .sqs(SqsAction::builder().role_arn("arn:aws:iam::000000000000:role/r").queue_url("q").build().unwrap())
        .build();
    let payload = TopicRulePayload::builder().sql("SELECT * FROM 'a'").actions(sqs).build().unwrap();
    let err = iot.create_topic_rule().rule_name("r").topic_rule_payload(payload).send().await.unwrap_err();
    let err = err.into_service_error();
    assert!(err.is_invalid_request_exception(), "{err:?}");
    assert!(err.message().unwrap().contains("does not run sqs actions"), "{err:?}");
    assert!(iot.list_topic_rules().send().await.unwrap().rules().is_empty());
}
