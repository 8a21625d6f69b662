//! The Greengrass IPC server of the simulated core: AWS's event-stream RPC on a Unix
//! socket (AWS-CONTRACTS.md §8), with the codec and shapes of [`cloud_api::ipc`].
//!
//! Per connection:
//! - the first message must be CONNECT (`:version` 0.1.0, `{"authToken": SVCUID}`); a
//!   token that [`Tokens`] does not know gets CONNECT_ACK without the accepted flag and the
//!   connection is closed; anything else first gets PROTOCOL_ERROR and a close;
//! - each call opens the next stream id (previous + 1); a gap, a reused id, a message on
//!   stream 0 that is not a PING, or bytes that are not a frame get PROTOCOL_ERROR and a
//!   close — never a panic. Frames over [`ServerSettings::max_frame_len`] are refused the
//!   same way as soon as their prelude arrives (nothing of them is buffered);
//! - PINGs are answered with PING_RESPONSE;
//! - the operation is authorized with [`AccessControl`] first (`UnauthorizedError` with the
//!   nucleus's text), then served; an unknown operation gets the Java server's unmodelled
//!   reply `{"error":"Unsupported Operation","message":"… is an unsupported operation."}`;
//! - streaming operations keep their stream until either side terminates it.
//!
//! Fairness: every connection has its own task and its own bounded outgoing queue; every
//! subscription has its own bounded queue in the pub/sub bus (overflow drops for that
//! subscriber only), so a component that floods slows down only itself.

use crate::core::access::{self, AccessControl};
use crate::core::config_store::{ConfigError, ConfigStore};
use crate::core::local_shadow::{LocalShadowError, LocalShadows, topic_prefix};
use crate::core::pubsub::{PubSub, PubSubError};
use crate::core::services::{IotCoreBridge, LocalDeploymentService, RequestError, is_uuid};
use crate::core::update_gate::{GateError, GateSubscription, UpdateGate};
use crate::core::{ControlError, LifecycleControl, ReportedState, Tokens};
use bytes::{Bytes, BytesMut};
use cloud_api::ipc::error::{ErrorCode, ServiceError};
use cloud_api::ipc::frame::{FrameCodec, FrameLimits};
use cloud_api::ipc::model::*;
use cloud_api::ipc::operation::OperationName;
use cloud_api::ipc::rpc::{MessageType, RpcMessage, StreamId, parse_connect};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// `StopComponent`, served although `cloud_api`'s operation list does not model it.
pub const STOP_COMPONENT: &str = "aws.greengrass#StopComponent";

/// Everything the server serves.
#[derive(Clone)]
pub struct CoreServices {
    /// SVCUID → component.
    pub tokens: Tokens,
    /// The supervisor.
    pub lifecycle: Arc<dyn LifecycleControl>,
    /// Component configuration.
    pub config: ConfigStore,
    /// accessControl policies.
    pub access: AccessControl,
    /// Local pub/sub.
    pub pubsub: PubSub,
    /// Local shadows.
    pub shadows: LocalShadows,
    /// The IoT Core bridge, when the core has one.
    pub bridge: Option<Arc<dyn IotCoreBridge>>,
    /// Local deployments (the Greengrass CLI's operations), when the core takes them.
    pub deployments: Option<Arc<dyn LocalDeploymentService>>,
    /// Component update notices and configuration validation (the deployments' side is
    /// [`crate::core::services::ComponentUpdateGate`]).
    pub gate: UpdateGate,
}

/// Server limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// Largest frame accepted (default: the protocol's 16 MiB).
    pub max_frame_len: usize,
    /// Outgoing messages queued per connection before its producers wait.
    pub outgoing_queue: usize,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self { max_frame_len: FrameLimits::default().max_frame_len, outgoing_queue: 256 }
    }
}

/// A running server; dropping it (or [`IpcServer::shutdown`]) stops accepting and closes
/// every connection.
#[derive(Debug)]
pub struct IpcServer {
    path: PathBuf,
    accept: JoinHandle<()>,
}

impl IpcServer {
    /// Binds `path` (replacing a stale socket file), sets it to 0600, and serves.
    pub async fn bind(
        path: impl AsRef<Path>,
        services: CoreServices,
        settings: ServerSettings,
    ) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let services = Arc::new(services);
        let accept = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            conns.spawn(serve_connection(stream, services.clone(), settings));
                        }
                        Err(e) => tracing::warn!("ipc accept failed: {e}"),
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Self { path, accept })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving.
    pub fn shutdown(self) {}
}

impl Drop for IpcServer {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection.
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A handler's failure, as sent to the client.
type OpResult<T> = Result<T, ServiceError>;

fn err(code: ErrorCode, message: impl Into<String>) -> ServiceError {
    ServiceError { code, message: message.into(), fields: Map::new() }
}

struct Conn {
    component: String,
    services: Arc<CoreServices>,
    out: mpsc::Sender<RpcMessage>,
    streams: HashMap<i32, Option<JoinHandle<()>>>,
    last_stream: i32,
}

async fn serve_connection(stream: UnixStream, services: Arc<CoreServices>, settings: ServerSettings) {
    let (mut rd, mut wr) = stream.into_split();
    let limits = FrameLimits { max_frame_len: settings.max_frame_len, ..FrameLimits::default() };
    let codec = FrameCodec::with_limits(limits);
    let (out, mut out_rx) = mpsc::channel::<RpcMessage>(settings.outgoing_queue.max(1));
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(m) = out_rx.recv().await {
            buf.clear();
            if codec.encode(&m.to_message(), &mut buf).is_err() {
                continue;
            }
            let close = matches!(m.message_type, MessageType::ProtocolError | MessageType::InternalError)
                || (m.message_type == MessageType::ConnectAck && !m.is_connection_accepted());
            if wr.write_all(&buf).await.is_err() || close {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut conn: Option<Conn> = None;
    'read: loop {
        // Drain every complete frame before reading more.
        loop {
            let message = match codec.decode(&mut buf) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    let _ = out.send(RpcMessage::protocol_error(&format!("malformed frame: {e}"))).await;
                    break 'read;
                }
            };
            let message = match RpcMessage::from_message(message) {
                Ok(m) => m,
                Err(e) => {
                    let _ = out.send(RpcMessage::protocol_error(&e.to_string())).await;
                    break 'read;
                }
            };
            match &mut conn {
                None => match handshake(&message, &services) {
                    Ok(component) => {
                        if out.send(RpcMessage::connect_ack(true)).await.is_err() {
                            break 'read;
                        }
                        conn = Some(Conn {
                            component,
                            services: services.clone(),
                            out: out.clone(),
                            streams: HashMap::new(),
                            last_stream: 0,
                        });
                    }
                    Err(reply) => {
                        let _ = out.send(*reply).await;
                        break 'read;
                    }
                },
                Some(c) => {
                    if let Err(reason) = c.on_message(message).await {
                        let _ = out.send(RpcMessage::protocol_error(&reason)).await;
                        break 'read;
                    }
                }
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Some(c) = conn {
        for task in c.streams.into_values().flatten() {
            task.abort();
        }
    }
    drop(out);
    let _ = writer.await;
}

fn handshake(message: &RpcMessage, services: &CoreServices) -> Result<String, Box<RpcMessage>> {
    if message.message_type != MessageType::Connect {
        return Err(Box::new(RpcMessage::protocol_error("the first message must be CONNECT")));
    }
    let payload = parse_connect(message).map_err(|_| Box::new(RpcMessage::connect_ack(false)))?;
    services.tokens.component(&payload.auth_token).ok_or_else(|| Box::new(RpcMessage::connect_ack(false)))
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> OpResult<T> {
    let bytes = if payload.is_empty() { b"{}".as_slice() } else { payload };
    serde_json::from_slice(bytes).map_err(|e| err(ErrorCode::InvalidArgumentsError, format!("invalid request: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()))
}

/// What a handler hands back: a response, and for streaming operations the source of events.
enum Reply {
    Done(Bytes),
    Stream(Bytes, EventSource),
}

enum EventSource {
    Config(mpsc::Receiver<crate::core::config_store::ConfigChange>),
    Topic(mpsc::Receiver<PubSubMessage>),
    IotCore(mpsc::Receiver<MqttMessage>),
    /// Deployment notices (SubscribeToComponentUpdates).
    Updates(GateSubscription<ComponentUpdatePolicyEvents>),
    /// Proposed configurations (SubscribeToValidateConfigurationUpdates).
    Validation(GateSubscription<ValidateConfigurationUpdateEvents>),
}

impl Conn {
    async fn on_message(&mut self, m: RpcMessage) -> Result<(), String> {
        if m.stream_id.is_connection() {
            return match m.message_type {
                MessageType::Ping => {
                    let _ = self.out.send(RpcMessage::ping_response(&m)).await;
                    Ok(())
                }
                MessageType::PingResponse => Ok(()),
                other => Err(format!("unexpected {other:?} on an established connection")),
            };
        }
        let id = m.stream_id.get();
        if let Some(task) = self.streams.get(&id) {
            if m.terminates_stream() {
                if let Some(t) = task {
                    t.abort();
                }
                self.streams.remove(&id);
            }
            return Ok(());
        }
        if id <= self.last_stream {
            // A closed stream: late messages (e.g. the client's own terminate) are ignored.
            return Ok(());
        }
        if id != self.last_stream + 1 {
            return Err(format!("stream id {id} is not the next stream id {}", self.last_stream + 1));
        }
        self.last_stream = id;
        let Some(operation) = m.operation.clone() else {
            return Err(format!("stream {id} opened without an operation"));
        };
        let stream = m.stream_id;
        let op = OperationName::from_name(&operation);
        if op.is_none() && operation != STOP_COMPONENT {
            let mut reply = RpcMessage::application_error(
                stream,
                "",
                to_json(
                    &json!({"error": "Unsupported Operation", "message": format!("{operation} is an unsupported operation.")}),
                ),
            );
            reply.service_model_type = None;
            let _ = self.out.send(reply).await;
            return Ok(());
        }
        let response_type = op.map_or("aws.greengrass#StopComponentResponse", OperationName::response_type);
        match self.dispatch(op, &operation, &m.payload).await {
            Err(e) => {
                let _ = self.out.send(e.to_rpc(stream)).await;
            }
            Ok(Reply::Done(body)) => {
                let _ = self.out.send(RpcMessage::application(stream, response_type, body, true)).await;
            }
            Ok(Reply::Stream(body, source)) => {
                let _ = self.out.send(RpcMessage::application(stream, response_type, body, false)).await;
                let event_type = op.and_then(OperationName::event_type).unwrap_or_default();
                let task = spawn_events(stream, event_type, source, self.out.clone(), self.component.clone());
                self.streams.insert(id, task);
            }
        }
        Ok(())
    }

    fn authorize(&self, service: &str, operation: &str, resource: &str) -> OpResult<()> {
        if self.services.access.is_authorized(&self.component, service, operation, resource) {
            Ok(())
        } else {
            Err(err(
                ErrorCode::UnauthorizedError,
                access::denial_message(&self.component, service, operation, resource),
            ))
        }
    }

    /// `aws.greengrass.Cli` operations: CLI clients may, components need a policy.
    fn authorize_cli(&self, operation: &str, resource: &str) -> OpResult<()> {
        if access::is_cli_client(&self.component) {
            return Ok(());
        }
        self.authorize(access::CLI, operation, resource)
    }

    fn deployments(&self) -> OpResult<&Arc<dyn LocalDeploymentService>> {
        self.services
            .deployments
            .as_ref()
            .ok_or_else(|| err(ErrorCode::ServiceError, "Deployments queue not initialized"))
    }

    fn authorize_shadow(&self, operation: &str, thing: &str, shadow: Option<&str>) -> OpResult<()> {
        self.authorize(access::SHADOW_MANAGER, operation, &topic_prefix(thing, shadow.unwrap_or_default()))
    }

    async fn dispatch(&self, op: Option<OperationName>, name: &str, payload: &[u8]) -> OpResult<Reply> {
        let s = &self.services;
        let me = self.component.as_str();
        let Some(op) = op else {
            // StopComponent.
            let req: RestartComponentRequest = parse(payload)?;
            self.authorize_cli(name, &req.component_name)?;
            return match s.lifecycle.stop(&req.component_name) {
                Ok(()) => Ok(Reply::Done(to_json(&json!({"stopStatus": "SUCCEEDED"})))),
                Err(ControlError::NotFound(c)) => {
                    Err(err(ErrorCode::ComponentNotFoundError, format!("Component {c} not found")))
                }
                Err(ControlError::Invalid(m)) => {
                    Ok(Reply::Done(to_json(&json!({"stopStatus": "FAILED", "message": m}))))
                }
            };
        };
        use OperationName as O;
        match op {
            O::UpdateState => {
                let req: UpdateStateRequest = parse(payload)?;
                let state = match req.state {
                    ReportedLifecycleState::Running => ReportedState::Running,
                    ReportedLifecycleState::Errored => ReportedState::Errored,
                };
                s.lifecycle.report_state(me, state);
                Ok(Reply::Done(to_json(&UpdateStateResponse {})))
            }
            O::GetConfiguration => {
                let req: GetConfigurationRequest = parse(payload)?;
                let target = req.component_name.clone().unwrap_or_else(|| me.to_owned());
                let value = s
                    .config
                    .get(&target, &req.key_path)
                    .ok_or_else(|| err(ErrorCode::ResourceNotFoundError, ConfigError::NotFound.to_string()))?;
                // A leaf comes back as {leafName: value}, as the nucleus answers.
                let value = match (value, req.key_path.last()) {
                    (v @ Value::Object(_), _) | (v, None) => v,
                    (v, Some(last)) => json!({ last.clone(): v }),
                };
                Ok(Reply::Done(to_json(&GetConfigurationResponse { component_name: Some(target), value })))
            }
            O::UpdateConfiguration => {
                let req: UpdateConfigurationRequest = parse(payload)?;
                let ts = (req.timestamp * 1000.0) as i64;
                s.config.update(me, &req.key_path, &req.value_to_merge, ts).map_err(config_error)?;
                Ok(Reply::Done(to_json(&UpdateConfigurationResponse {})))
            }
            O::SubscribeToConfigurationUpdate => {
                let req: SubscribeToConfigurationUpdateRequest = parse(payload)?;
                let target = req.component_name.clone().unwrap_or_else(|| me.to_owned());
                let rx = s.config.subscribe(&target, &req.key_path).map_err(config_error)?;
                Ok(Reply::Stream(to_json(&SubscribeToConfigurationUpdateResponse {}), EventSource::Config(rx)))
            }
            O::PublishToTopic => {
                let req: PublishToTopicRequest = parse(payload)?;
                self.authorize(access::PUBSUB, name, &req.topic)?;
                s.pubsub.publish(me, &req.topic, &req.publish_message).map_err(pubsub_error)?;
                Ok(Reply::Done(to_json(&PublishToTopicResponse {})))
            }
            O::SubscribeToTopic => {
                let req: SubscribeToTopicRequest = parse(payload)?;
                self.authorize(access::PUBSUB, name, &req.topic)?;
                let sub = s.pubsub.subscribe(me, &req.topic, req.receive_mode).map_err(pubsub_error)?;
                Ok(Reply::Stream(
                    to_json(&SubscribeToTopicResponse { topic_name: None }),
                    EventSource::Topic(sub.receiver),
                ))
            }
            O::PublishToIoTCore => {
                let req: PublishToIoTCoreRequest = parse(payload)?;
                self.authorize(access::MQTT_PROXY, name, &req.topic_name)?;
                let bridge = s.bridge.as_ref().ok_or_else(no_bridge)?;
                // The MQTT 5 members are checked whatever the bridge's MQTT version, so a
                // component's request is answered the same either way.
                crate::core::services::check_mqtt5_members(&req.properties, &req.payload.0)
                    .map_err(|e| err(ErrorCode::InvalidArgumentsError, e))?;
                bridge
                    .publish_message(&req.topic_name, req.qos, req.payload.0, &req.properties)
                    .await
                    .map_err(|e| err(ErrorCode::ServiceError, e.0))?;
                Ok(Reply::Done(to_json(&PublishToIoTCoreResponse {})))
            }
            O::SubscribeToIoTCore => {
                let req: SubscribeToIoTCoreRequest = parse(payload)?;
                self.authorize(access::MQTT_PROXY, name, &req.topic_name)?;
                let bridge = s.bridge.as_ref().ok_or_else(no_bridge)?;
                let rx =
                    bridge.subscribe(&req.topic_name, req.qos).await.map_err(|e| err(ErrorCode::ServiceError, e.0))?;
                Ok(Reply::Stream(to_json(&SubscribeToIoTCoreResponse {}), EventSource::IotCore(rx)))
            }
            O::GetThingShadow => {
                let req: GetThingShadowRequest = parse(payload)?;
                self.authorize_shadow(name, &req.thing_name, req.shadow_name.as_deref())?;
                let doc =
                    s.shadows.get(&req.thing_name, req.shadow_name.as_deref().unwrap_or("")).map_err(shadow_error)?;
                Ok(Reply::Done(to_json(&GetThingShadowResponse {
                    payload: Blob(serde_json::to_vec(&doc).unwrap_or_default()),
                })))
            }
            O::UpdateThingShadow => {
                let req: UpdateThingShadowRequest = parse(payload)?;
                self.authorize_shadow(name, &req.thing_name, req.shadow_name.as_deref())?;
                let doc = s
                    .shadows
                    .update(&req.thing_name, req.shadow_name.as_deref().unwrap_or(""), req.payload.as_bytes())
                    .map_err(shadow_error)?;
                Ok(Reply::Done(to_json(&UpdateThingShadowResponse {
                    payload: Blob(serde_json::to_vec(&doc).unwrap_or_default()),
                })))
            }
            O::DeleteThingShadow => {
                let req: DeleteThingShadowRequest = parse(payload)?;
                self.authorize_shadow(name, &req.thing_name, req.shadow_name.as_deref())?;
                let doc = s
                    .shadows
                    .delete(&req.thing_name, req.shadow_name.as_deref().unwrap_or(""))
                    .map_err(shadow_error)?;
                Ok(Reply::Done(to_json(&DeleteThingShadowResponse {
                    payload: Blob(serde_json::to_vec(&doc).unwrap_or_default()),
                })))
            }
            O::ListNamedShadowsForThing => {
                let req: ListNamedShadowsForThingRequest = parse(payload)?;
                // ShadowManager checks the bare thing name; AWS's guide shows the classic
                // shadow's topic prefix. Either grants it.
                let thing = &req.thing_name;
                if !s.access.is_authorized(me, access::SHADOW_MANAGER, name, thing) {
                    self.authorize_shadow(name, thing, None)?;
                }
                let (results, next_token) =
                    s.shadows.list_named(thing, req.page_size, req.next_token.as_deref()).map_err(shadow_error)?;
                let timestamp =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).ok();
                Ok(Reply::Done(to_json(&ListNamedShadowsForThingResponse { results, timestamp, next_token })))
            }
            O::SubscribeToComponentUpdates => {
                let _req: SubscribeToComponentUpdatesRequest = parse(payload)?;
                let sub = s.gate.subscribe_updates(me);
                Ok(Reply::Stream(to_json(&SubscribeToComponentUpdatesResponse {}), EventSource::Updates(sub)))
            }
            O::DeferComponentUpdate => {
                let req: DeferComponentUpdateRequest = parse(payload)?;
                s.gate.defer(me, &req).map_err(gate_error)?;
                Ok(Reply::Done(to_json(&DeferComponentUpdateResponse {})))
            }
            O::SubscribeToValidateConfigurationUpdates => {
                let _req: SubscribeToValidateConfigurationUpdatesRequest = parse(payload)?;
                let sub = s.gate.subscribe_validation(me);
                Ok(Reply::Stream(
                    to_json(&SubscribeToValidateConfigurationUpdatesResponse {}),
                    EventSource::Validation(sub),
                ))
            }
            O::SendConfigurationValidityReport => {
                let req: SendConfigurationValidityReportRequest = parse(payload)?;
                s.gate.report(me, &req.configuration_validity_report).map_err(gate_error)?;
                Ok(Reply::Done(to_json(&SendConfigurationValidityReportResponse {})))
            }
            O::RestartComponent => {
                let req: RestartComponentRequest = parse(payload)?;
                self.authorize_cli(name, &req.component_name)?;
                match s.lifecycle.restart(&req.component_name) {
                    Ok(()) => Ok(Reply::Done(to_json(&RestartComponentResponse {
                        restart_status: RequestStatus::Succeeded,
                        message: None,
                    }))),
                    Err(ControlError::NotFound(c)) => {
                        Err(err(ErrorCode::ComponentNotFoundError, format!("Component {c} not found")))
                    }
                    Err(ControlError::Invalid(m)) => Ok(Reply::Done(to_json(&RestartComponentResponse {
                        restart_status: RequestStatus::Failed,
                        message: Some(m),
                    }))),
                }
            }
            O::CreateLocalDeployment => {
                let req: CreateLocalDeploymentRequest = parse(payload)?;
                self.authorize_cli(name, "*")?;
                let deployment_id = self.deployments()?.create(req).map_err(|e| {
                    let code = match &e {
                        RequestError::InvalidArguments(_) => ErrorCode::InvalidArgumentsError,
                        RequestError::InvalidRecipeDirectory(_) => ErrorCode::InvalidRecipeDirectoryPathError,
                        RequestError::InvalidArtifactsDirectory(_) => ErrorCode::InvalidArtifactsDirectoryPathError,
                        RequestError::Closed => ErrorCode::ServiceError,
                    };
                    err(code, e.to_string())
                })?;
                Ok(Reply::Done(to_json(&CreateLocalDeploymentResponse { deployment_id })))
            }
            O::GetLocalDeploymentStatus => {
                let req: GetLocalDeploymentStatusRequest = parse(payload)?;
                if !is_uuid(&req.deployment_id) {
                    return Err(err(
                        ErrorCode::InvalidArgumentsError,
                        "Invalid deploymentId format received. DeploymentId is a UUID",
                    ));
                }
                self.authorize_cli(name, &req.deployment_id)?;
                let deployment = self.deployments()?.status(&req.deployment_id).ok_or_else(|| {
                    err(ErrorCode::ResourceNotFoundError, "Cannot find deployment").with_fields([
                        ("resourceType", "LocalDeployment"),
                        ("resourceName", req.deployment_id.as_str()),
                    ])
                })?;
                Ok(Reply::Done(to_json(&GetLocalDeploymentStatusResponse { deployment })))
            }
            O::ListLocalDeployments => {
                let _req: ListLocalDeploymentsRequest = parse(payload)?;
                self.authorize_cli(name, "*")?;
                let local_deployments = self.deployments()?.list();
                Ok(Reply::Done(to_json(&ListLocalDeploymentsResponse { local_deployments })))
            }
        }
    }
}

fn no_bridge() -> ServiceError {
    err(ErrorCode::ServiceError, "no connection to AWS IoT Core is configured on this core")
}

fn config_error(e: ConfigError) -> ServiceError {
    let code = match e {
        ConfigError::NotFound => ErrorCode::ResourceNotFoundError,
        ConfigError::InvalidArguments(_) => ErrorCode::InvalidArgumentsError,
        ConfigError::Stale => ErrorCode::FailedUpdateConditionCheckError,
    };
    err(code, e.to_string())
}

fn gate_error(e: GateError) -> ServiceError {
    match e {
        GateError::InvalidArguments(m) => err(ErrorCode::InvalidArgumentsError, m),
        GateError::Service(m) => err(ErrorCode::ServiceError, m),
    }
}

fn pubsub_error(e: PubSubError) -> ServiceError {
    err(ErrorCode::InvalidArgumentsError, e.to_string())
}

fn shadow_error(e: LocalShadowError) -> ServiceError {
    match e {
        LocalShadowError::InvalidArguments(m) => err(ErrorCode::InvalidArgumentsError, m),
        LocalShadowError::Throttled => err(ErrorCode::ServiceError, "Too Many Requests"),
        LocalShadowError::Storage(m) => err(ErrorCode::ServiceError, m),
        LocalShadowError::Rejected(e) => match e.code {
            404 => err(ErrorCode::ResourceNotFoundError, "No shadow found").with_fields([("resourceType", "shadow")]),
            409 => err(ErrorCode::ConflictError, e.message),
            400 | 413 => err(ErrorCode::InvalidArgumentsError, e.message),
            _ => err(ErrorCode::ServiceError, e.message),
        },
    }
}

trait WithFields {
    fn with_fields<const N: usize>(self, fields: [(&str, &str); N]) -> Self;
}

impl WithFields for ServiceError {
    fn with_fields<const N: usize>(mut self, fields: [(&str, &str); N]) -> Self {
        for (k, v) in fields {
            self.fields.insert(k.to_owned(), Value::from(v));
        }
        self
    }
}

/// Forwards a gate subscription's events until either side closes; the subscription (and
/// with it the component's place in the gate) goes when the task ends or is aborted.
fn forward<E, F, Fut>(sub: GateSubscription<E>, send: F) -> JoinHandle<()>
where
    E: Serialize + Send + 'static,
    F: Fn(Bytes) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    tokio::spawn(async move {
        // The whole subscription lives in the task (not only its receiver): its guard
        // unsubscribes when the task ends.
        let mut sub = sub;
        while let Some(e) = sub.events.recv().await {
            if !send(to_json(&e)).await {
                break;
            }
        }
    })
}

fn spawn_events(
    stream: StreamId,
    event_type: &'static str,
    source: EventSource,
    out: mpsc::Sender<RpcMessage>,
    _component: String,
) -> Option<JoinHandle<()>> {
    let send = move |body: Bytes| {
        let out = out.clone();
        async move { out.send(RpcMessage::application(stream, event_type, body, false)).await.is_ok() }
    };
    let task = match source {
        EventSource::Updates(sub) => forward(sub, send),
        EventSource::Validation(sub) => forward(sub, send),
        EventSource::Config(mut rx) => tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let ev = ConfigurationUpdateEvents {
                    configuration_update_event: ConfigurationUpdateEvent {
                        component_name: c.component,
                        key_path: c.key_path,
                    },
                };
                if !send(to_json(&ev)).await {
                    break;
                }
            }
        }),
        EventSource::Topic(mut rx) => tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if !send(to_json(&m)).await {
                    break;
                }
            }
        }),
        EventSource::IotCore(mut rx) => tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if !send(to_json(&IoTCoreMessage { message: m })).await {
                    break;
                }
            }
        }),
    };
    Some(task)
}
