//! Our IPC client (`kit::ipc`) against the simulated core's IPC server on a tempdir socket.

use device_sim::core::access::{AccessControl, CLI, MQTT_PROXY, PUBSUB, SHADOW_MANAGER};
use device_sim::core::config_store::ConfigStore;
use device_sim::core::ipc_server::{CoreServices, IpcServer, ServerSettings};
use device_sim::core::local_shadow::{LocalShadows, MemoryPersistence, RateLimits};
use device_sim::core::pubsub::PubSub;
use device_sim::core::services::{ComponentUpdateGate, Deferral};
use device_sim::core::update_gate::UpdateGate;
use device_sim::core::{ComponentState, ControlError, LifecycleControl, ReportedState, Tokens};
use kit::ipc::model::*;
use kit::ipc::operation::Operation;
use kit::ipc::{ErrorCode, IpcClient, IpcError};
use serde_json::json;
use std::sync::{Arc, Mutex};
use support::fake_bridge::FakeIotCoreBridge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

#[derive(Default)]
struct FakeLifecycle {
    calls: Mutex<Vec<String>>,
}

impl LifecycleControl for FakeLifecycle {
    fn report_state(&self, component: &str, state: ReportedState) {
        self.calls.lock().unwrap().push(format!("report {component} {state:?}"));
    }
    fn restart(&self, component: &str) -> Result<(), ControlError> {
        self.calls.lock().unwrap().push(format!("restart {component}"));
        if component == "missing" { Err(ControlError::NotFound(component.into())) } else { Ok(()) }
    }
    fn stop(&self, component: &str) -> Result<(), ControlError> {
        self.calls.lock().unwrap().push(format!("stop {component}"));
        Ok(())
    }
    fn state(&self, _: &str) -> Option<ComponentState> {
        Some(ComponentState::Running)
    }
}

/// StopComponent is not in `cloud_api`'s operation list; a test-local marker calls it.
struct StopComponent;
impl Operation for StopComponent {
    const NAME: &'static str = "aws.greengrass#StopComponent";
    const REQUEST_TYPE: &'static str = "aws.greengrass#StopComponentRequest";
    const RESPONSE_TYPE: &'static str = "aws.greengrass#StopComponentResponse";
    type Request = RestartComponentRequest;
    type Response = serde_json::Value;
}

/// An operation the server does not know.
struct Nope;
impl Operation for Nope {
    const NAME: &'static str = "aws.greengrass#Nope";
    const REQUEST_TYPE: &'static str = "aws.greengrass#NopeRequest";
    const RESPONSE_TYPE: &'static str = "aws.greengrass#NopeResponse";
    type Request = serde_json::Value;
    type Response = serde_json::Value;
}

struct Core {
    _dir: tempfile::TempDir,
    server: IpcServer,
    tokens: Tokens,
    lifecycle: Arc<FakeLifecycle>,
    bridge: FakeIotCoreBridge,
    config: ConfigStore,
    gate: UpdateGate,
}

const A: &str = "com.example.A";
const B: &str = "com.example.B";
/// The one topic B may publish to: a marker whose arrival proves that what a subscriber
/// should not get was not queued before it.
const MARKER_TOPIC: &str = "pump/marker";

fn allow_all() -> serde_json::Value {
    json!({
        "accessControl": {
            PUBSUB: {"A:pubsub:1": {"operations": ["*"], "resources": ["*"]}},
            MQTT_PROXY: {"A:mqtt:1": {"operations": ["aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"], "resources": ["dt/pump/#"]}},
            SHADOW_MANAGER: {"A:shadow:1": {"operations": ["*"], "resources": ["$aws/things/core/shadow", "$aws/things/core/shadow/name/*"]}},
            CLI: {"A:cli:1": {"operations": ["aws.greengrass#RestartComponent", "aws.greengrass#StopComponent"], "resources": ["*"]}}
        },
        "threshold": 3,
        "nested": {"k": "v"}
    })
}

async fn core_with(settings: ServerSettings) -> Core {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::default();
    let lifecycle = Arc::new(FakeLifecycle::default());
    let bridge = FakeIotCoreBridge::default();
    let config = ConfigStore::new();
    let gate = UpdateGate::new();
    let access = AccessControl::new();
    config.set_component(A, allow_all());
    access.set_component(A, &allow_all());
    let b_config = json!({"accessControl": {PUBSUB: {
        "B:1": {"operations": ["aws.greengrass#SubscribeToTopic"], "resources": ["flood/t", "pump/*"]},
        "B:2": {"operations": ["aws.greengrass#PublishToTopic"], "resources": [MARKER_TOPIC]}
    }}});
    config.set_component(B, b_config.clone());
    access.set_component(B, &b_config);
    let pubsub = PubSub::new(16);
    let shadows = LocalShadows::with(
        Some(pubsub.clone()),
        Arc::new(MemoryPersistence),
        cloud_api::shadow::ShadowLimits { max_state_bytes: 8192, max_depth: 6 },
        RateLimits { per_thing: None, total: None },
    )
    .unwrap();
    let services = CoreServices {
        tokens: tokens.clone(),
        lifecycle: lifecycle.clone(),
        config: config.clone(),
        access,
        pubsub,
        shadows,
        bridge: Some(Arc::new(bridge.clone())),
        deployments: None,
        gate: gate.clone(),
    };
    let server = IpcServer::bind(dir.path().join("ipc.socket"), services, settings).await.unwrap();
    Core { _dir: dir, server, tokens, lifecycle, bridge, config, gate }
}

async fn core() -> Core {
    core_with(ServerSettings::default()).await
}

impl Core {
    async fn client(&self, component: &str) -> IpcClient {
        IpcClient::connect(self.server.path(), self.tokens.issue(component)).await.unwrap()
    }
}

fn code(e: &IpcError) -> ErrorCode {
    e.code().cloned().unwrap_or_else(|| panic!("not a service error: {e}"))
}

#[tokio::test]
async fn socket_is_private_to_the_owner() {
    use std::os::unix::fs::PermissionsExt;
    let core = core().await;
    let mode = std::fs::metadata(core.server.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn a_wrong_svcuid_is_refused() {
    let core = core().await;
    let e = IpcClient::connect(core.server.path(), "not-a-token").await.unwrap_err();
    assert!(matches!(e, IpcError::Refused), "{e}");
}

#[tokio::test]
async fn update_state_restart_and_stop_reach_the_supervisor() {
    let core = core().await;
    let a = core.client(A).await;
    a.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
    let r = a.restart_component(&RestartComponentRequest { component_name: B.into() }).await.unwrap();
    assert_eq!(r.restart_status, RequestStatus::Succeeded);
    let e = a.restart_component(&RestartComponentRequest { component_name: "missing".into() }).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::ComponentNotFoundError);
    let r = a.call::<StopComponent>(&RestartComponentRequest { component_name: B.into() }).await.unwrap();
    assert_eq!(r["stopStatus"], "SUCCEEDED");
    assert_eq!(
        *core.lifecycle.calls.lock().unwrap(),
        vec![format!("report {A} Running"), format!("restart {B}"), "restart missing".to_owned(), format!("stop {B}")]
    );
    // B has no CLI policy.
    let b = core.client(B).await;
    let e = b.restart_component(&RestartComponentRequest { component_name: A.into() }).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::UnauthorizedError);
}

#[tokio::test]
async fn configuration_get_update_and_subscribe() {
    let core = core().await;
    let a = core.client(A).await;
    let b = core.client(B).await;
    let got = a
        .get_configuration(&GetConfigurationRequest { component_name: None, key_path: vec!["threshold".into()] })
        .await
        .unwrap();
    assert_eq!(got.value, json!({"threshold": 3}));
    // Another component's configuration is readable by name.
    let got = b
        .get_configuration(&GetConfigurationRequest { component_name: Some(A.into()), key_path: vec!["nested".into()] })
        .await
        .unwrap();
    assert_eq!(got.value, json!({"k": "v"}));
    let e = a
        .get_configuration(&GetConfigurationRequest { component_name: None, key_path: vec!["nope".into()] })
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::ResourceNotFoundError);

    let mut sub = b
        .subscribe_to_configuration_update(&SubscribeToConfigurationUpdateRequest {
            component_name: Some(A.into()),
            key_path: vec!["nested".into()],
        })
        .await
        .unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    a.update_configuration(&UpdateConfigurationRequest {
        key_path: vec!["nested".into()],
        timestamp: now + 1.0,
        value_to_merge: json!({"k": "w", "n": 1}),
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ev = sub.next_event().await.unwrap().unwrap();
        assert_eq!(ev.configuration_update_event.component_name, A);
        seen.push(ev.configuration_update_event.key_path);
    }
    seen.sort();
    assert_eq!(seen, vec![vec!["nested".to_owned(), "k".to_owned()], vec!["nested".to_owned(), "n".to_owned()]]);
    assert_eq!(core.config.get(A, &["nested".into(), "k".into()]), Some(json!("w")));
    // An older timestamp loses.
    let e = a
        .update_configuration(&UpdateConfigurationRequest {
            key_path: vec!["nested".into()],
            timestamp: now - 100.0,
            value_to_merge: json!({"k": "old"}),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::FailedUpdateConditionCheckError);
    // accessControl cannot be changed over IPC.
    let e = a
        .update_configuration(&UpdateConfigurationRequest {
            key_path: vec![],
            timestamp: now + 2.0,
            value_to_merge: json!({"accessControl": {}}),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::InvalidArgumentsError);
}

#[tokio::test]
async fn pubsub_json_and_binary_with_receive_modes_and_access_control() {
    let core = core().await;
    let a = core.client(A).await;
    let b = core.client(B).await;
    let mut b_sub = b
        .subscribe_to_topic(&SubscribeToTopicRequest { topic: "pump/readings".into(), receive_mode: None })
        .await
        .unwrap();
    let mut a_others = a
        .subscribe_to_topic(&SubscribeToTopicRequest {
            topic: "pump/+".into(),
            receive_mode: Some(ReceiveMode::ReceiveMessagesFromOthers),
        })
        .await
        .unwrap();
    let mut a_all = a
        .subscribe_to_topic(&SubscribeToTopicRequest {
            topic: "pump/#".into(),
            receive_mode: Some(ReceiveMode::ReceiveAllMessages),
        })
        .await
        .unwrap();
    a.publish_to_topic(&PublishToTopicRequest {
        topic: "pump/readings".into(),
        publish_message: PubSubMessage::json(json!({"v": 1})),
    })
    .await
    .unwrap();
    a.publish_to_topic(&PublishToTopicRequest {
        topic: "pump/readings".into(),
        publish_message: PubSubMessage::binary("raw"),
    })
    .await
    .unwrap();
    let m = b_sub.next_event().await.unwrap().unwrap();
    assert_eq!(m.topic(), Some("pump/readings"));
    assert!(matches!(m, PubSubMessage::Json(ref j) if j.message == json!({"v": 1})));
    assert!(
        matches!(b_sub.next_event().await.unwrap().unwrap(), PubSubMessage::Binary(ref m) if m.message.as_bytes() == b"raw")
    );
    assert!(matches!(a_all.next_event().await.unwrap().unwrap(), PubSubMessage::Json(_)));
    // A's own messages do not come back on its "from others" subscription. The bus delivers
    // to a subscription in publish order, so B's marker, published after A's two messages,
    // must be the first thing that subscription sees.
    b.publish_to_topic(&PublishToTopicRequest {
        topic: MARKER_TOPIC.into(),
        publish_message: PubSubMessage::json(json!("marker")),
    })
    .await
    .unwrap();
    let first = a_others.next_event().await.unwrap().unwrap();
    assert_eq!(first.topic(), Some(MARKER_TOPIC), "A's own message came back first: {first:?}");
    assert!(matches!(first, PubSubMessage::Json(ref j) if j.message == json!("marker")), "{first:?}");
    // Denied: B may not publish.
    let e = b
        .publish_to_topic(&PublishToTopicRequest {
            topic: "pump/readings".into(),
            publish_message: PubSubMessage::json(json!({})),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::UnauthorizedError);
    assert_eq!(
        e.service_error().unwrap().message,
        format!(
            "Principal {B} is not authorized to perform {PUBSUB}:aws.greengrass#PublishToTopic on resource pump/readings"
        )
    );
    // Denied: B's policy names `pump/*`, which covers the filter string `pump/+` only by `*`.
    let e = b
        .subscribe_to_topic(&SubscribeToTopicRequest { topic: "other/#".into(), receive_mode: None })
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::UnauthorizedError);
    let e = a
        .publish_to_topic(&PublishToTopicRequest {
            topic: "pump/+".into(),
            publish_message: PubSubMessage::json(json!({})),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::InvalidArgumentsError);
}

#[tokio::test]
async fn iot_core_goes_through_the_bridge_and_is_authorized_mqtt_style() {
    let core = core().await;
    let a = core.client(A).await;
    a.publish_to_iot_core(&PublishToIoTCoreRequest::new("dt/pump/core/telemetry", Qos::AtLeastOnce, "{\"v\":1}"))
        .await
        .unwrap();
    assert_eq!(
        core.bridge.published(),
        vec![("dt/pump/core/telemetry".to_owned(), Qos::AtLeastOnce, b"{\"v\":1}".to_vec(), false)]
    );
    let mut sub = a
        .subscribe_to_iot_core(&SubscribeToIoTCoreRequest { topic_name: "dt/pump/+/cmd".into(), qos: Qos::AtMostOnce })
        .await
        .unwrap();
    core.bridge.wait_for_subscription().await;
    assert_eq!(core.bridge.inject("dt/pump/core/cmd", b"go"), 1);
    let ev = sub.next_event().await.unwrap().unwrap();
    assert_eq!((ev.message.topic_name.as_str(), ev.message.payload.as_bytes()), ("dt/pump/core/cmd", b"go".as_slice()));
    let e =
        a.publish_to_iot_core(&PublishToIoTCoreRequest::new("other/topic", Qos::AtMostOnce, "x")).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::UnauthorizedError);
}

#[tokio::test]
async fn without_a_bridge_iot_core_calls_are_service_errors() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Tokens::default();
    let access = AccessControl::new();
    access.set_component(A, &allow_all());
    let services = CoreServices {
        tokens: tokens.clone(),
        lifecycle: Arc::new(FakeLifecycle::default()),
        config: ConfigStore::new(),
        access,
        pubsub: PubSub::default(),
        shadows: LocalShadows::new(None),
        bridge: None,
        deployments: None,
        gate: UpdateGate::new(),
    };
    let server = IpcServer::bind(dir.path().join("s"), services, ServerSettings::default()).await.unwrap();
    let a = IpcClient::connect(server.path(), tokens.issue(A)).await.unwrap();
    let e = a.publish_to_iot_core(&PublishToIoTCoreRequest::new("dt/pump/x", Qos::AtMostOnce, "x")).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::ServiceError);
}

#[tokio::test]
async fn shadows_get_update_delete_list_and_local_topics() {
    let core = core().await;
    let a = core.client(A).await;
    let mut topics = a
        .subscribe_to_topic(&SubscribeToTopicRequest {
            topic: "$aws/things/core/shadow/name/pump/update/delta".into(),
            receive_mode: None,
        })
        .await
        .unwrap();
    let e = a
        .get_thing_shadow(&GetThingShadowRequest { thing_name: "core".into(), shadow_name: Some("pump".into()) })
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::ResourceNotFoundError);
    let up = a
        .update_thing_shadow(&UpdateThingShadowRequest {
            thing_name: "core".into(),
            shadow_name: Some("pump".into()),
            payload: r#"{"state":{"desired":{"mode":"auto"}}}"#.into(),
        })
        .await
        .unwrap();
    let accepted: serde_json::Value = serde_json::from_slice(up.payload.as_bytes()).unwrap();
    assert_eq!(accepted["version"], 1);
    let delta = topics.next_event().await.unwrap().unwrap();
    let PubSubMessage::Binary(delta) = delta else { panic!("binary expected") };
    let delta: serde_json::Value = serde_json::from_slice(delta.message.as_bytes()).unwrap();
    assert_eq!(delta["state"], json!({"mode": "auto"}));
    let got = a
        .get_thing_shadow(&GetThingShadowRequest { thing_name: "core".into(), shadow_name: Some("pump".into()) })
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(got.payload.as_bytes()).unwrap();
    assert_eq!(doc["state"]["desired"]["mode"], "auto");
    let list = a
        .list_named_shadows_for_thing(&ListNamedShadowsForThingRequest {
            thing_name: "core".into(),
            next_token: None,
            page_size: None,
        })
        .await
        .unwrap();
    assert_eq!(list.results, vec!["pump".to_owned()]);
    let e = a
        .update_thing_shadow(&UpdateThingShadowRequest {
            thing_name: "core".into(),
            shadow_name: Some("pump".into()),
            payload: r#"{"state":{"desired":{"mode":"x"}},"version":9}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::ConflictError);
    a.delete_thing_shadow(&DeleteThingShadowRequest { thing_name: "core".into(), shadow_name: Some("pump".into()) })
        .await
        .unwrap();
    let e = a
        .get_thing_shadow(&GetThingShadowRequest { thing_name: "core".into(), shadow_name: Some("pump".into()) })
        .await
        .unwrap_err();
    assert_eq!(code(&e), ErrorCode::ResourceNotFoundError);
    // Another thing's shadow is not in A's policy.
    let e =
        a.get_thing_shadow(&GetThingShadowRequest { thing_name: "other".into(), shadow_name: None }).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::UnauthorizedError);
}

/// The next preUpdateEvent on a component updates stream.
async fn pre_update_event(
    updates: &mut kit::ipc::Subscription<kit::ipc::operation::SubscribeToComponentUpdates>,
) -> PreComponentUpdateEvent {
    let event = tokio::time::timeout(DEADLINE, updates.next_event()).await.expect("an event in time");
    match event.expect("the stream is open").expect("a well-formed event") {
        ComponentUpdatePolicyEvents::PreUpdate(e) => e,
        other => panic!("preUpdateEvent expected, got {other:?}"),
    }
}

const DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

#[tokio::test]
async fn a_component_defers_an_update_over_ipc_until_it_lets_it_go() {
    let core = core().await;
    let (a, b) = (core.client(A).await, core.client(B).await);
    let mut updates = a.subscribe_to_component_updates(&SubscribeToComponentUpdatesRequest {}).await.unwrap();
    let defer = |id: &str, ms| DeferComponentUpdateRequest {
        deployment_id: id.into(),
        message: Some("ramping".into()),
        recheck_after_ms: Some(ms),
    };
    // Before any notice: the nucleus's errors.
    let e = b.defer_component_update(&defer("d", 1)).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::InvalidArgumentsError, "B never subscribed: {e}");
    let e = a.defer_component_update(&defer("d", 1)).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::ServiceError, "nothing is waiting for an answer: {e}");

    let gate = core.gate.clone();
    let held = tokio::spawn(async move { gate.pre_update("d", false, std::time::Duration::from_secs(600)).await });
    let first = pre_update_event(&mut updates).await;
    assert_eq!((first.deployment_id.as_str(), first.is_ggc_restarting), ("d", false));
    let e = a.defer_component_update(&defer("other", 50)).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::ServiceError, "an unknown deploymentId: {e}");
    a.defer_component_update(&defer("d", 50)).await.unwrap();
    // The notice comes again once the recheck has passed; the update is still held.
    pre_update_event(&mut updates).await;
    assert!(!held.is_finished(), "the update waits for the second answer");
    a.defer_component_update(&defer("d", 0)).await.unwrap();
    let deferrals = tokio::time::timeout(DEADLINE, held).await.expect("the update goes ahead").unwrap();
    assert_eq!(
        deferrals,
        [Deferral {
            component: A.into(),
            message: Some("ramping".into()),
            deferred_for: std::time::Duration::from_millis(50)
        }]
    );
    core.gate.post_update("d");
    let post = tokio::time::timeout(DEADLINE, updates.next_event()).await.unwrap().unwrap().unwrap();
    assert_eq!(post, ComponentUpdatePolicyEvents::PostUpdate(PostComponentUpdateEvent { deployment_id: "d".into() }));
}

#[tokio::test]
async fn a_component_that_closes_its_updates_stream_mid_round_is_not_waited_for() {
    let core = core().await;
    let a = core.client(A).await;
    let mut updates = a.subscribe_to_component_updates(&SubscribeToComponentUpdatesRequest {}).await.unwrap();
    let gate = core.gate.clone();
    let held = tokio::spawn(async move { gate.pre_update("d", true, std::time::Duration::from_secs(600)).await });
    assert!(pre_update_event(&mut updates).await.is_ggc_restarting);
    drop(updates);
    let deferrals = tokio::time::timeout(DEADLINE, held).await.expect("not held for the 600 s timeout").unwrap();
    assert!(deferrals.is_empty());
    // A component with no subscription left may not answer.
    let request = DeferComponentUpdateRequest { deployment_id: "d".into(), message: None, recheck_after_ms: Some(1) };
    assert_eq!(code(&a.defer_component_update(&request).await.unwrap_err()), ErrorCode::InvalidArgumentsError);
}

#[tokio::test]
async fn a_component_validates_its_proposed_configuration_over_ipc() {
    let core = core().await;
    let a = core.client(A).await;
    let mut proposals = a
        .subscribe_to_validate_configuration_updates(&SubscribeToValidateConfigurationUpdatesRequest {})
        .await
        .unwrap();
    let report = |id: &str, status, message: &str| SendConfigurationValidityReportRequest {
        configuration_validity_report: ConfigurationValidityReport {
            status,
            deployment_id: id.into(),
            message: Some(message.into()),
        },
    };
    let e = a.send_configuration_validity_report(&report("d", ConfigurationValidityStatus::Accepted, "ok")).await;
    assert_eq!(code(&e.unwrap_err()), ErrorCode::InvalidArgumentsError, "no validation was asked for");

    for (status, expected_ok) in
        [(ConfigurationValidityStatus::Accepted, true), (ConfigurationValidityStatus::Rejected, false)]
    {
        let gate = core.gate.clone();
        let configs = std::collections::BTreeMap::from([(A.to_owned(), json!({"threshold": -1}))]);
        let validation =
            tokio::spawn(async move { gate.validate("d", configs, std::time::Duration::from_secs(600)).await });
        let event = tokio::time::timeout(DEADLINE, proposals.next_event()).await.unwrap().unwrap().unwrap();
        let event = event.validate_configuration_update_event;
        assert_eq!((event.configuration, event.deployment_id.as_str()), (json!({"threshold": -1}), "d"));
        a.send_configuration_validity_report(&report("d", status, "threshold must be >= 0")).await.unwrap();
        let result = tokio::time::timeout(DEADLINE, validation).await.unwrap().unwrap();
        assert_eq!(result.is_ok(), expected_ok, "{result:?}");
        if let Err(r) = result {
            assert_eq!((r.component.as_str(), r.message.as_str()), (A, "threshold must be >= 0"));
        }
    }
}

#[tokio::test]
async fn an_unknown_operation_gets_the_unmodelled_error() {
    let core = core().await;
    let a = core.client(A).await;
    let e = a.call::<Nope>(&json!({})).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::UnsupportedOperation);
    a.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
}

#[tokio::test]
async fn malformed_bytes_close_that_connection_only() {
    let core = core().await;
    let good = core.client(A).await;
    let mut raw = tokio::net::UnixStream::connect(core.server.path()).await.unwrap();
    raw.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]).await.unwrap();
    // The server answers with one PROTOCOL_ERROR and closes.
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), (&mut raw).take(1 << 16).read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .unwrap();
    let mut rest = bytes::BytesMut::from(&rest[..]);
    let codec = cloud_api::ipc::frame::FrameCodec::new();
    let frame = codec.decode(&mut rest).expect("a well-formed frame").expect("one whole frame before the close");
    let reply = cloud_api::ipc::rpc::RpcMessage::from_message(frame).unwrap();
    assert_eq!(reply.message_type, cloud_api::ipc::rpc::MessageType::ProtocolError, "{reply:?}");
    assert!(reply.stream_id.is_connection(), "{reply:?}");
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("malformed frame: "), "{body}");
    assert!(rest.is_empty(), "nothing after PROTOCOL_ERROR: {rest:?}");
    good.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
}

#[tokio::test]
async fn an_oversize_payload_is_refused() {
    let core = core_with(ServerSettings { max_frame_len: 64 * 1024, ..ServerSettings::default() }).await;
    let big = core.client(A).await;
    let other = core.client(A).await;
    let e = big
        .publish_to_topic(&PublishToTopicRequest {
            topic: "pump/x".into(),
            publish_message: PubSubMessage::binary(vec![7u8; 200 * 1024]),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, IpcError::Protocol(_) | IpcError::ConnectionClosed { .. }), "{e}");
    other.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
}

#[tokio::test]
async fn a_flooding_publisher_does_not_block_another_subscriber() {
    let core = core().await;
    let flooder = core.client(A).await;
    let b = core.client(B).await;
    // A subscriber that never reads (its queue of 16 fills), and one that does.
    let _stuck =
        b.subscribe_to_topic(&SubscribeToTopicRequest { topic: "flood/t".into(), receive_mode: None }).await.unwrap();
    let mut reader = b
        .subscribe_to_topic(&SubscribeToTopicRequest { topic: "pump/readings".into(), receive_mode: None })
        .await
        .unwrap();
    for i in 0..500 {
        flooder
            .publish_to_topic(&PublishToTopicRequest {
                topic: "flood/t".into(),
                publish_message: PubSubMessage::json(json!(i)),
            })
            .await
            .unwrap();
    }
    let other = core.client(A).await;
    other
        .publish_to_topic(&PublishToTopicRequest {
            topic: "pump/readings".into(),
            publish_message: PubSubMessage::json(json!("hello")),
        })
        .await
        .unwrap();
    let m = reader.next_event().await.unwrap().unwrap();
    assert!(matches!(m, PubSubMessage::Json(ref j) if j.message == json!("hello")));
}
