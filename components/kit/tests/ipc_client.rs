//! The IPC client against a small fake nucleus that speaks the protocol with the
//! `cloud_api::ipc` types: handshake, calls, subscriptions, errors, pings, bad frames.
//! Every wait is on an event (a message seen by the server, a client result); the only
//! clock is the client's own timeout in the timeout test.

use bytes::{Bytes, BytesMut};
use cloud_api::ipc::error::{ErrorBody, ErrorCode, error_message};
use cloud_api::ipc::frame::FrameCodec;
use cloud_api::ipc::model::*;
use cloud_api::ipc::operation::{self as op, Operation, OperationName, StreamingOperation};
use cloud_api::ipc::rpc::{MessageType, RpcMessage, StreamId, parse_connect};
use cloud_api::ipc::{Header, HeaderValue};
use futures::StreamExt;
use kit::ipc::{IpcClient, IpcError, NextStep};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

const TOKEN: &str = "svcuid-of-test-component";
/// Upper bound on any wait for an event; reached only when a test is failing.
const PATIENCE: Duration = Duration::from_secs(10);

struct Fake {
    path: PathBuf,
    _dir: tempfile::TempDir,
    /// Every message the server received, in order.
    seen: mpsc::UnboundedReceiver<RpcMessage>,
    /// Bytes for the server to write on the live connection.
    push: mpsc::UnboundedSender<Vec<u8>>,
}

impl Fake {
    async fn start() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipc.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let (push, mut push_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                serve(socket, &seen_tx, &mut push_rx).await;
            }
        });
        Fake { path, _dir: dir, seen, push }
    }

    async fn client(&self) -> IpcClient {
        IpcClient::connect(&self.path, TOKEN).await.unwrap()
    }

    /// The next message the server receives.
    async fn next_seen(&mut self) -> RpcMessage {
        tokio::time::timeout(PATIENCE, self.seen.recv()).await.expect("server saw nothing").expect("server gone")
    }

    /// The next message the server receives that matches `pred`, skipping others.
    async fn seen_where(&mut self, pred: impl Fn(&RpcMessage) -> bool) -> RpcMessage {
        loop {
            let m = self.next_seen().await;
            if pred(&m) {
                return m;
            }
        }
    }

    fn send(&self, m: &RpcMessage) {
        self.push.send(encode(m)).unwrap();
    }
}

fn encode(m: &RpcMessage) -> Vec<u8> {
    let mut buf = BytesMut::new();
    FrameCodec::new().encode(&m.to_message(), &mut buf).unwrap();
    buf.to_vec()
}

enum Reply {
    Send(RpcMessage),
    Raw(Vec<u8>),
    Close,
}

async fn serve(
    socket: UnixStream,
    seen: &mpsc::UnboundedSender<RpcMessage>,
    push: &mut mpsc::UnboundedReceiver<Vec<u8>>,
) {
    let (mut read, mut write) = socket.into_split();
    let codec = FrameCodec::new();
    let mut buf = BytesMut::new();
    loop {
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return,
            };
            let message = RpcMessage::from_message(frame).unwrap();
            let _ = seen.send(message.clone());
            for reply in respond(&message) {
                let bytes = match reply {
                    Reply::Send(m) => encode(&m),
                    Reply::Raw(b) => b,
                    Reply::Close => return,
                };
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            n = read.read_buf(&mut buf) => {
                if !matches!(n, Ok(n) if n > 0) {
                    return;
                }
            }
            Some(bytes) = push.recv() => {
                if write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn ok<O: Operation>(stream: StreamId, response: &O::Response, terminate: bool) -> Reply {
    let json = Bytes::from(serde_json::to_vec(response).unwrap());
    Reply::Send(RpcMessage::application(stream, O::RESPONSE_TYPE, json, terminate))
}

fn fail(stream: StreamId, code: ErrorCode, message: &str) -> Reply {
    Reply::Send(error_message(stream, &code, &ErrorBody::new(&code, message)))
}

fn request<O: Operation>(m: &RpcMessage) -> O::Request {
    serde_json::from_slice(&m.payload).unwrap()
}

/// What the fake nucleus answers. Special argument values script the odd cases.
fn respond(m: &RpcMessage) -> Vec<Reply> {
    let s = m.stream_id;
    match m.message_type {
        MessageType::Connect => {
            return match parse_connect(m) {
                Ok(c) if c.auth_token == TOKEN => vec![Reply::Send(RpcMessage::connect_ack(true))],
                _ => vec![Reply::Send(RpcMessage::connect_ack(false)), Reply::Close],
            };
        }
        MessageType::Ping => return vec![Reply::Send(RpcMessage::ping_response(m))],
        MessageType::ApplicationMessage if m.operation.is_some() => {}
        _ => return vec![],
    }
    let Some(name) = m.operation.as_deref().and_then(OperationName::from_name) else {
        return vec![fail(s, ErrorCode::UnsupportedOperation, "unsupported")];
    };
    let reply = match name {
        OperationName::UpdateState => ok::<op::UpdateState>(s, &UpdateStateResponse {}, true),
        OperationName::GetConfiguration => {
            let r = request::<op::GetConfiguration>(m);
            let response = GetConfigurationResponse {
                component_name: Some(r.component_name.unwrap_or_else(|| "com.example.Test".into())),
                value: json!({ "keyPath": r.key_path }),
            };
            ok::<op::GetConfiguration>(s, &response, true)
        }
        OperationName::PublishToIoTCore => ok::<op::PublishToIoTCore>(s, &PublishToIoTCoreResponse {}, true),
        OperationName::GetThingShadow => match request::<op::GetThingShadow>(m).thing_name.as_str() {
            "missing" => {
                let body = ErrorBody::new(&ErrorCode::ResourceNotFoundError, "No shadow exists with name: pump")
                    .with_field("resourceType", "shadow")
                    .with_field("resourceName", "pump");
                Reply::Send(error_message(s, &ErrorCode::ResourceNotFoundError, &body))
            }
            "forbidden" => fail(s, ErrorCode::UnauthorizedError, "not authorized to perform GetThingShadow"),
            _ => ok::<op::GetThingShadow>(s, &GetThingShadowResponse { payload: Blob::from(r#"{"state":{}}"#) }, true),
        },
        OperationName::DeleteThingShadow => {
            // The Java server's reply to an operation it does not serve: no shape header.
            let mut m = RpcMessage::application_error(s, "unused", Bytes::new());
            m.service_model_type = None;
            m.payload = Bytes::from_static(br#"{ "error": "Unsupported Operation", "message": "nope" }"#);
            Reply::Send(m)
        }
        OperationName::SubscribeToTopic => {
            ok::<op::SubscribeToTopic>(s, &SubscribeToTopicResponse { topic_name: None }, false)
        }
        OperationName::SubscribeToValidateConfigurationUpdates => ok::<op::SubscribeToValidateConfigurationUpdates>(
            s,
            &SubscribeToValidateConfigurationUpdatesResponse {},
            false,
        ),
        OperationName::SendConfigurationValidityReport => {
            match request::<op::SendConfigurationValidityReport>(m).configuration_validity_report.deployment_id.as_str()
            {
                "late" => {
                    fail(s, ErrorCode::InvalidArgumentsError, "Validation request either timed out or was never made")
                }
                _ => ok::<op::SendConfigurationValidityReport>(s, &SendConfigurationValidityReportResponse {}, true),
            }
        }
        OperationName::RestartComponent => match request::<op::RestartComponent>(m).component_name.as_str() {
            "silent" => return vec![],
            "hangup" => return vec![Reply::Close],
            "garbage" => {
                let mut bytes = encode(&RpcMessage::application(s, "x", Bytes::from_static(b"{}"), true));
                if let Some(last) = bytes.last_mut() {
                    *last ^= 0xff; // bad message CRC
                }
                Reply::Raw(bytes)
            }
            "stray" => {
                let stray = StreamId::new(s.get() + 100).unwrap();
                ok::<op::RestartComponent>(stray, &restarted(), true)
            }
            _ => ok::<op::RestartComponent>(s, &restarted(), true),
        },
        _ => fail(s, ErrorCode::ServiceError, "not scripted"),
    };
    vec![reply]
}

fn restarted() -> RestartComponentResponse {
    RestartComponentResponse { restart_status: RequestStatus::Succeeded, message: None }
}

fn topic_event(stream: StreamId, n: i64) -> RpcMessage {
    let event = PubSubMessage::Json(JsonMessage {
        message: json!({ "n": n }),
        context: Some(MessageContext { topic: "pump/readings".into() }),
    });
    let json = Bytes::from(serde_json::to_vec(&event).unwrap());
    RpcMessage::application(stream, op::SubscribeToTopic::EVENT_TYPE, json, false)
}

fn is_request(m: &RpcMessage) -> bool {
    m.message_type == MessageType::ApplicationMessage && m.operation.is_some()
}

fn is_terminate(m: &RpcMessage) -> bool {
    m.message_type == MessageType::ApplicationMessage && m.operation.is_none() && m.terminates_stream()
}

#[tokio::test]
async fn handshake_sends_version_and_token_then_calls_use_one_stream_each() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;

    let connect = fake.next_seen().await;
    assert_eq!(connect.message_type, MessageType::Connect);
    assert_eq!(connect.stream_id, StreamId::CONNECTION);
    assert_eq!(connect.version(), Some("0.1.0"));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&connect.payload).unwrap(), json!({"authToken": TOKEN}));

    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
    let config = ipc
        .get_configuration(&GetConfigurationRequest { component_name: None, key_path: vec!["limits".into()] })
        .await
        .unwrap();
    assert_eq!(config.component_name.as_deref(), Some("com.example.Test"));
    assert_eq!(config.value, json!({"keyPath": ["limits"]}));
    ipc.publish_to_iot_core(&PublishToIoTCoreRequest::new("dt/pump/T/telemetry", Qos::AtLeastOnce, "{\"v\":1}"))
        .await
        .unwrap();
    let shadow = ipc
        .get_thing_shadow(&GetThingShadowRequest { thing_name: "T".into(), shadow_name: Some("pump".into()) })
        .await
        .unwrap();
    assert_eq!(shadow.payload.as_bytes(), br#"{"state":{}}"#);

    let expected = [
        (op::UpdateState::NAME, op::UpdateState::REQUEST_TYPE),
        (op::GetConfiguration::NAME, op::GetConfiguration::REQUEST_TYPE),
        (op::PublishToIoTCore::NAME, op::PublishToIoTCore::REQUEST_TYPE),
        (op::GetThingShadow::NAME, op::GetThingShadow::REQUEST_TYPE),
    ];
    for (i, (name, model_type)) in expected.into_iter().enumerate() {
        let m = fake.seen_where(is_request).await;
        assert_eq!(m.stream_id.get(), i as i32 + 1, "stream ids go 1, 2, 3, ...");
        assert_eq!(m.operation.as_deref(), Some(name));
        assert_eq!(m.service_model_type.as_deref(), Some(model_type));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.flags.0, 0);
    }
}

#[tokio::test]
async fn publish_to_iot_core_sends_the_payload_base64() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;
    ipc.publish_to_iot_core(&PublishToIoTCoreRequest::new("a/b", Qos::AtMostOnce, &[0u8, 0xff][..])).await.unwrap();
    let m = fake.seen_where(is_request).await;
    let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(body, json!({"topicName": "a/b", "qos": "0", "payload": "AP8="}));
}

#[tokio::test]
async fn a_wrong_token_is_refused() {
    let fake = Fake::start().await;
    let err = IpcClient::connect(&fake.path, "not-the-token").await.unwrap_err();
    assert!(matches!(err, IpcError::Refused), "{err:?}");
    assert_eq!(err.next_step(), NextStep::GiveUp);
}

#[tokio::test]
async fn a_missing_socket_is_a_connect_error_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let err = IpcClient::connect(dir.path().join("none.sock"), TOKEN).await.unwrap_err();
    assert!(matches!(err, IpcError::Connect { .. }), "{err:?}");
    assert_eq!(err.next_step(), NextStep::Retry);
}

#[tokio::test]
async fn service_errors_are_typed_and_the_connection_stays_usable() {
    let fake = Fake::start().await;
    let ipc = fake.client().await;

    let err = ipc
        .get_thing_shadow(&GetThingShadowRequest { thing_name: "missing".into(), shadow_name: Some("pump".into()) })
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(err.next_step(), NextStep::FixInput);
    let service = err.service_error().unwrap();
    assert_eq!(service.message, "No shadow exists with name: pump");
    assert_eq!(service.fields.get("resourceName"), Some(&json!("pump")));

    let err = ipc
        .get_thing_shadow(&GetThingShadowRequest { thing_name: "forbidden".into(), shadow_name: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::UnauthorizedError));
    assert_eq!(err.next_step(), NextStep::GiveUp);

    let err = ipc
        .delete_thing_shadow(&DeleteThingShadowRequest { thing_name: "T".into(), shadow_name: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::UnsupportedOperation));
    assert_eq!(err.service_error().unwrap().message, "nope");

    let defer = DeferComponentUpdateRequest { deployment_id: "d".into(), message: None, recheck_after_ms: None };
    let err = ipc.defer_component_update(&defer).await.unwrap_err();
    assert_eq!((err.code(), err.next_step()), (Some(&ErrorCode::ServiceError), NextStep::Retry));

    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
    assert!(!ipc.is_closed());
}

#[tokio::test]
async fn a_subscription_delivers_events_in_order_and_closes_on_drop() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;
    let mut sub =
        ipc.subscribe_to_topic(&SubscribeToTopicRequest { topic: "pump/#".into(), receive_mode: None }).await.unwrap();
    let opened = fake.seen_where(is_request).await;
    assert_eq!(opened.operation.as_deref(), Some(op::SubscribeToTopic::NAME));

    for n in 0..3 {
        fake.send(&topic_event(opened.stream_id, n));
    }
    for n in 0..3 {
        let event = sub.next_event().await.unwrap().unwrap();
        assert_eq!(event.topic(), Some("pump/readings"));
        let PubSubMessage::Json(j) = event else { panic!("json expected") };
        assert_eq!(j.message, json!({ "n": n }));
    }

    // A call on the same connection while the subscription is open.
    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();

    drop(sub);
    let closed = fake.seen_where(is_terminate).await;
    assert_eq!(closed.stream_id, opened.stream_id, "the subscription's own stream is terminated");
    assert!(closed.payload.is_empty());

    // Events the server sent before it saw the close are dropped quietly.
    fake.send(&topic_event(opened.stream_id, 99));
    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
    assert!(!ipc.is_closed());
}

#[tokio::test]
async fn a_subscription_ends_when_the_server_terminates_it_and_reports_stream_errors() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;
    let mut sub =
        ipc.subscribe_to_topic(&SubscribeToTopicRequest { topic: "t".into(), receive_mode: None }).await.unwrap();
    let s = fake.seen_where(is_request).await.stream_id;

    fake.send(&topic_event(s, 1));
    fake.send(&RpcMessage::application(s, "aws.greengrass#NotTheEvent", Bytes::from_static(b"{}"), false));
    fake.send(&RpcMessage::terminate_stream(s));
    assert!(sub.next_event().await.unwrap().is_ok());
    let err = sub.next_event().await.unwrap().unwrap_err();
    assert!(matches!(err, IpcError::UnexpectedResponse { .. }), "{err:?}");
    assert!(sub.next().await.is_none(), "the bare terminate ends the stream");
    assert!(sub.next().await.is_none());

    let mut sub2 =
        ipc.subscribe_to_topic(&SubscribeToTopicRequest { topic: "t".into(), receive_mode: None }).await.unwrap();
    let s2 = fake.seen_where(is_request).await.stream_id;
    fake.send(&error_message(s2, &ErrorCode::ServiceError, &ErrorBody::new(&ErrorCode::ServiceError, "bridge down")));
    let err = sub2.next_event().await.unwrap().unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::ServiceError));
    assert!(sub2.next_event().await.is_none());
}

#[tokio::test]
async fn concurrent_calls_are_demultiplexed_by_stream_id() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;
    let calls = (0..50).map(|i| {
        let ipc = ipc.clone();
        async move {
            let r = ipc
                .get_configuration(&GetConfigurationRequest { component_name: None, key_path: vec![format!("k{i}")] })
                .await
                .unwrap();
            assert_eq!(r.value, json!({ "keyPath": [format!("k{i}")] }), "call {i} got its own answer");
        }
    });
    futures::future::join_all(calls).await;
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(fake.seen_where(is_request).await.stream_id.get());
    }
    assert_eq!(ids, (1..=50).collect::<Vec<_>>(), "new streams reach the server in id order");
}

#[tokio::test]
async fn pings_are_answered_with_their_payload() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;
    let mut ping = RpcMessage::ping(Bytes::from_static(b"are you there"));
    ping.headers.push(Header::new("x-probe", HeaderValue::Int32(7)));
    fake.send(&ping);
    let pong = fake.seen_where(|m| m.message_type == MessageType::PingResponse).await;
    assert_eq!(&pong.payload[..], b"are you there");
    assert_eq!(pong.header("x-probe"), Some(&HeaderValue::Int32(7)));
    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
}

#[tokio::test]
async fn a_call_without_answer_times_out_and_closes_its_stream() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await.with_timeout(Duration::from_millis(200));
    let err = ipc.restart_component(&RestartComponentRequest { component_name: "silent".into() }).await.unwrap_err();
    assert!(matches!(err, IpcError::Timeout { operation: "aws.greengrass#RestartComponent", .. }), "{err:?}");
    assert_eq!(err.next_step(), NextStep::Retry);
    let opened = fake.seen_where(is_request).await;
    let closed = fake.seen_where(is_terminate).await;
    assert_eq!(closed.stream_id, opened.stream_id);
    let r = ipc.restart_component(&RestartComponentRequest { component_name: "c".into() }).await.unwrap();
    assert_eq!(r.restart_status, RequestStatus::Succeeded);
}

#[tokio::test]
async fn a_malformed_frame_from_the_server_is_a_protocol_error_not_a_panic() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;
    let mut sub =
        ipc.subscribe_to_topic(&SubscribeToTopicRequest { topic: "t".into(), receive_mode: None }).await.unwrap();

    let err = ipc.restart_component(&RestartComponentRequest { component_name: "garbage".into() }).await.unwrap_err();
    assert!(matches!(&err, IpcError::Protocol(reason) if reason.contains("CRC")), "{err:?}");
    assert_eq!(err.next_step(), NextStep::GiveUp);

    // The client tells the server why it hangs up, then closes.
    let told = fake.seen_where(|m| m.message_type == MessageType::ProtocolError).await;
    assert!(String::from_utf8_lossy(&told.payload).contains("CRC"));

    // The open subscription learns the same, then ends; later calls fail the same way.
    assert!(matches!(sub.next_event().await, Some(Err(IpcError::Protocol(_)))));
    assert!(sub.next_event().await.is_none());
    assert!(ipc.is_closed());
    let again = ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await;
    assert!(matches!(again, Err(IpcError::Protocol(_))), "{again:?}");
}

#[tokio::test]
async fn a_message_on_a_stream_the_client_never_opened_is_a_protocol_error() {
    let fake = Fake::start().await;
    let ipc = fake.client().await;
    let err = ipc.restart_component(&RestartComponentRequest { component_name: "stray".into() }).await.unwrap_err();
    assert!(matches!(&err, IpcError::Protocol(reason) if reason.contains("never opened")), "{err:?}");
}

#[tokio::test]
async fn a_protocol_error_from_the_server_closes_the_connection() {
    let fake = Fake::start().await;
    let ipc = fake.client().await;
    let mut sub =
        ipc.subscribe_to_topic(&SubscribeToTopicRequest { topic: "t".into(), receive_mode: None }).await.unwrap();
    fake.send(&RpcMessage::protocol_error("stream-id values must be monotonically incrementing"));
    let err = sub.next_event().await.unwrap().unwrap_err();
    assert!(matches!(&err, IpcError::Protocol(reason) if reason.contains("monotonically")), "{err:?}");
    assert!(ipc.is_closed());
}

#[tokio::test]
async fn the_server_hanging_up_ends_calls_and_subscriptions_with_connection_closed() {
    let fake = Fake::start().await;
    let ipc = fake.client().await;
    let mut sub =
        ipc.subscribe_to_topic(&SubscribeToTopicRequest { topic: "t".into(), receive_mode: None }).await.unwrap();
    let err = ipc.restart_component(&RestartComponentRequest { component_name: "hangup".into() }).await.unwrap_err();
    assert!(matches!(err, IpcError::ConnectionClosed { .. }), "{err:?}");
    assert_eq!(err.next_step(), NextStep::Retry);
    assert!(matches!(sub.next_event().await, Some(Err(IpcError::ConnectionClosed { .. }))));
    assert!(sub.next_event().await.is_none());
    assert!(ipc.is_closed());
}

#[tokio::test]
async fn every_operation_has_a_method() {
    // Compile-time coverage of the fifteen operations of issue 3; the calls go to the fake,
    // which answers the ones it does not script with ServiceError.
    let fake = Fake::start().await;
    let ipc = fake.client().await;
    let _ = ipc
        .update_configuration(&UpdateConfigurationRequest {
            key_path: vec![],
            timestamp: 1.0,
            value_to_merge: json!({}),
        })
        .await;
    let _ = ipc.subscribe_to_configuration_update(&SubscribeToConfigurationUpdateRequest::default()).await;
    let _ = ipc
        .publish_to_topic(&PublishToTopicRequest { topic: "t".into(), publish_message: PubSubMessage::json(json!({})) })
        .await;
    let _ =
        ipc.subscribe_to_iot_core(&SubscribeToIoTCoreRequest { topic_name: "t".into(), qos: Qos::AtMostOnce }).await;
    let _ = ipc
        .update_thing_shadow(&UpdateThingShadowRequest {
            thing_name: "T".into(),
            shadow_name: None,
            payload: "{}".into(),
        })
        .await;
    let _ = ipc
        .list_named_shadows_for_thing(&ListNamedShadowsForThingRequest {
            thing_name: "T".into(),
            next_token: None,
            page_size: None,
        })
        .await;
    let err = ipc.subscribe_to_component_updates(&SubscribeToComponentUpdatesRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Some(&ErrorCode::ServiceError));
    assert!(!ipc.is_closed());
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_gets_lagged_after_its_buffered_events() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;
    let mut sub =
        ipc.subscribe_to_topic(&SubscribeToTopicRequest { topic: "t".into(), receive_mode: None }).await.unwrap();
    let s = fake.seen_where(is_request).await.stream_id;
    const BUFFER: i64 = 1024;
    for n in 0..=BUFFER {
        fake.send(&topic_event(s, n));
    }
    // The answer to this call follows the events on the wire, so once it is back the
    // reader has routed every event.
    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
    let terminated = fake.seen_where(is_terminate).await;
    assert_eq!(terminated.stream_id, s, "the overflowing stream is closed at the server");
    for _ in 0..BUFFER {
        assert!(sub.next_event().await.unwrap().is_ok());
    }
    let err = sub.next_event().await.unwrap().unwrap_err();
    assert!(matches!(err, IpcError::Lagged { capacity: 1024, .. }), "{err:?}");
    assert_eq!(err.next_step(), NextStep::Retry);
    assert!(sub.next_event().await.is_none());
    assert!(!ipc.is_closed());
}

#[tokio::test]
async fn a_request_too_large_for_a_frame_is_refused_locally() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;
    let huge = vec![b'x'; 16 * 1024 * 1024];
    let err = ipc.publish_to_iot_core(&PublishToIoTCoreRequest::new("t", Qos::AtMostOnce, huge)).await.unwrap_err();
    assert!(matches!(err, IpcError::InvalidRequest { .. }), "{err:?}");
    assert_eq!(err.next_step(), NextStep::FixInput);
    // Nothing was sent, and the next call takes stream 1.
    ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await.unwrap();
    assert_eq!(fake.seen_where(is_request).await.stream_id, StreamId::FIRST);
}

#[tokio::test]
async fn a_proposed_configuration_arrives_on_its_stream_and_the_report_is_sent_with_aws_names() {
    let mut fake = Fake::start().await;
    let ipc = fake.client().await;
    let mut proposals = ipc
        .subscribe_to_validate_configuration_updates(&SubscribeToValidateConfigurationUpdatesRequest {})
        .await
        .unwrap();
    let opened = fake.seen_where(is_request).await;
    assert_eq!(opened.operation.as_deref(), Some(op::SubscribeToValidateConfigurationUpdates::NAME));
    let event = json!({"validateConfigurationUpdateEvent": {"configuration": {"raiseAfter": 0}, "deploymentId": "d1"}});
    fake.send(&RpcMessage::application(
        opened.stream_id,
        op::SubscribeToValidateConfigurationUpdates::EVENT_TYPE,
        Bytes::from(event.to_string()),
        false,
    ));
    let got = proposals.next_event().await.unwrap().unwrap().validate_configuration_update_event;
    assert_eq!((got.configuration, got.deployment_id.as_str()), (json!({"raiseAfter": 0}), "d1"));

    let report = |id: &str| SendConfigurationValidityReportRequest {
        configuration_validity_report: ConfigurationValidityReport {
            status: ConfigurationValidityStatus::Rejected,
            deployment_id: id.into(),
            message: Some("raiseAfter must be 1..=1000".into()),
        },
    };
    ipc.send_configuration_validity_report(&report("d1")).await.unwrap();
    let sent = fake
        .seen_where(|m| is_request(m) && m.operation.as_deref() == Some(op::SendConfigurationValidityReport::NAME))
        .await;
    let body: serde_json::Value = serde_json::from_slice(&sent.payload).unwrap();
    assert_eq!(
        body,
        json!({"configurationValidityReport": {"status": "REJECTED", "deploymentId": "d1", "message": "raiseAfter must be 1..=1000"}})
    );
    let err = ipc.send_configuration_validity_report(&report("late")).await.unwrap_err();
    assert_eq!((err.code(), err.next_step()), (Some(&ErrorCode::InvalidArgumentsError), NextStep::FixInput));
}
