//! [`IpcClient`]: connect, call, subscribe; one method per operation.

use super::connection::{Connection, Delivery, OpenStream};
use super::error::IpcError;
use super::subscription::Subscription;
use bytes::Bytes;
use cloud_api::ipc::error::ServiceError;
use cloud_api::ipc::model::*;
use cloud_api::ipc::operation::{self as op, Operation, StreamingOperation};
use cloud_api::ipc::rpc::{MessageType, RpcMessage, StreamId};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The variable holding the nucleus's IPC socket path.
pub const SOCKET_PATH_ENV: &str = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT";
/// The variable holding the component's IPC auth token.
pub const AUTH_TOKEN_ENV: &str = "SVCUID";
/// How long a call waits for its response, and the handshake for CONNECT_ACK, by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to connect.
#[derive(Clone)]
pub struct IpcSettings {
    /// The nucleus's Unix socket.
    pub socket_path: PathBuf,
    /// The component's `SVCUID`.
    pub auth_token: String,
    /// How long the handshake and each call wait for an answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for IpcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in logs.
        f.debug_struct("IpcSettings")
            .field("socket_path", &self.socket_path)
            .field("auth_token", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl IpcSettings {
    /// Settings from the process environment, as AWS's clients read them.
    pub fn from_env() -> Result<Self, IpcError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Settings from `lookup` (an environment stand-in): the socket path and token are
    /// required and must not be empty.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, IpcError> {
        let get = |var: &'static str| lookup(var).filter(|v| !v.is_empty()).ok_or(IpcError::MissingEnv { var });
        Ok(Self {
            socket_path: get(SOCKET_PATH_ENV)?.into(),
            auth_token: get(AUTH_TOKEN_ENV)?,
            timeout: DEFAULT_TIMEOUT,
        })
    }
}

/// An async Greengrass IPC client over one connection.
///
/// Cheap to clone; clones share the connection, which closes when the last clone and the
/// last [`Subscription`] are dropped. A closed connection stays closed: make a new client.
#[derive(Clone, Debug)]
pub struct IpcClient {
    conn: Arc<Connection>,
    timeout: Duration,
}

impl IpcClient {
    /// Connects with `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT` and `SVCUID`.
    pub async fn connect_from_env() -> Result<Self, IpcError> {
        Self::connect_with(IpcSettings::from_env()?).await
    }

    /// Connects to `socket_path` with `auth_token`, default timeout.
    pub async fn connect(socket_path: impl Into<PathBuf>, auth_token: impl Into<String>) -> Result<Self, IpcError> {
        Self::connect_with(IpcSettings {
            socket_path: socket_path.into(),
            auth_token: auth_token.into(),
            timeout: DEFAULT_TIMEOUT,
        })
        .await
    }

    /// Connects with explicit settings.
    pub async fn connect_with(settings: IpcSettings) -> Result<Self, IpcError> {
        let conn = Connection::connect(&settings.socket_path, &settings.auth_token, settings.timeout).await?;
        Ok(Self { conn: Arc::new(conn), timeout: settings.timeout })
    }

    /// A handle on the same connection whose calls wait `timeout` for a response.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self { conn: self.conn.clone(), timeout }
    }

    /// True once the connection has failed or the nucleus has closed it.
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// Calls any request/response operation.
    pub async fn call<O: Operation>(&self, request: &O::Request) -> Result<O::Response, IpcError> {
        let (response, mut stream) = self.start::<O>(request).await?;
        // The Java server ends a non-streaming call with its response; if a server does
        // not, closing our side keeps its stream table clean.
        stream.finish_call();
        Ok(response)
    }

    /// Calls a streaming operation; events arrive on the returned subscription, which
    /// closes the stream (TERMINATE_STREAM) when dropped.
    pub async fn subscribe<O: StreamingOperation>(&self, request: &O::Request) -> Result<Subscription<O>, IpcError> {
        let (response, stream) = self.start::<O>(request).await?;
        Ok(Subscription::new(response, stream))
    }

    /// Opens a stream with the request and waits for the response.
    async fn start<O: Operation>(&self, request: &O::Request) -> Result<(O::Response, StreamHandle), IpcError> {
        let json = serde_json::to_vec(request)
            .map_err(|e| IpcError::InvalidRequest { operation: O::NAME, reason: e.to_string() })?;
        let json = Bytes::from(json);
        let open = self.conn.open(O::NAME, |id: StreamId| RpcMessage::request(id, O::NAME, O::REQUEST_TYPE, json))?;
        let mut stream = StreamHandle::new(self.conn.clone(), open);
        let first = tokio::time::timeout(self.timeout, stream.open.rx.recv())
            .await
            .map_err(|_| IpcError::Timeout { operation: O::NAME, after: self.timeout })?;
        let message = match first {
            Some(Delivery::Message(m)) => m,
            Some(Delivery::Closed(e)) => return Err(e),
            None => return Err(self.conn.closed_reason()),
        };
        stream.saw(&message);
        match message.message_type {
            MessageType::ApplicationError => {
                Err(IpcError::Service { operation: O::NAME, error: Box::new(ServiceError::from_rpc(&message)) })
            }
            _ => {
                let response = decode::<O::Response>(O::NAME, O::RESPONSE_TYPE, &message)?;
                Ok((response, stream))
            }
        }
    }

    // ---- one method per operation ----

    /// UpdateState: reports RUNNING or ERRORED to the nucleus.
    pub async fn update_state(&self, request: &UpdateStateRequest) -> Result<UpdateStateResponse, IpcError> {
        self.call::<op::UpdateState>(request).await
    }

    /// GetConfiguration: reads a component's configuration at a key path.
    pub async fn get_configuration(
        &self,
        request: &GetConfigurationRequest,
    ) -> Result<GetConfigurationResponse, IpcError> {
        self.call::<op::GetConfiguration>(request).await
    }

    /// UpdateConfiguration: merges a value into this component's configuration.
    pub async fn update_configuration(
        &self,
        request: &UpdateConfigurationRequest,
    ) -> Result<UpdateConfigurationResponse, IpcError> {
        self.call::<op::UpdateConfiguration>(request).await
    }

    /// SubscribeToConfigurationUpdate: streams configuration changes.
    pub async fn subscribe_to_configuration_update(
        &self,
        request: &SubscribeToConfigurationUpdateRequest,
    ) -> Result<Subscription<op::SubscribeToConfigurationUpdate>, IpcError> {
        self.subscribe::<op::SubscribeToConfigurationUpdate>(request).await
    }

    /// PublishToTopic: publishes on local pub/sub.
    pub async fn publish_to_topic(&self, request: &PublishToTopicRequest) -> Result<PublishToTopicResponse, IpcError> {
        self.call::<op::PublishToTopic>(request).await
    }

    /// SubscribeToTopic: streams local pub/sub messages.
    pub async fn subscribe_to_topic(
        &self,
        request: &SubscribeToTopicRequest,
    ) -> Result<Subscription<op::SubscribeToTopic>, IpcError> {
        self.subscribe::<op::SubscribeToTopic>(request).await
    }

    /// PublishToIoTCore: publishes to AWS IoT Core.
    pub async fn publish_to_iot_core(
        &self,
        request: &PublishToIoTCoreRequest,
    ) -> Result<PublishToIoTCoreResponse, IpcError> {
        self.call::<op::PublishToIoTCore>(request).await
    }

    /// SubscribeToIoTCore: streams AWS IoT Core messages.
    pub async fn subscribe_to_iot_core(
        &self,
        request: &SubscribeToIoTCoreRequest,
    ) -> Result<Subscription<op::SubscribeToIoTCore>, IpcError> {
        self.subscribe::<op::SubscribeToIoTCore>(request).await
    }

    /// GetThingShadow: reads a local shadow (`ResourceNotFoundError` when there is none).
    pub async fn get_thing_shadow(&self, request: &GetThingShadowRequest) -> Result<GetThingShadowResponse, IpcError> {
        self.call::<op::GetThingShadow>(request).await
    }

    /// UpdateThingShadow: updates a local shadow.
    pub async fn update_thing_shadow(
        &self,
        request: &UpdateThingShadowRequest,
    ) -> Result<UpdateThingShadowResponse, IpcError> {
        self.call::<op::UpdateThingShadow>(request).await
    }

    /// DeleteThingShadow: deletes a local shadow.
    pub async fn delete_thing_shadow(
        &self,
        request: &DeleteThingShadowRequest,
    ) -> Result<DeleteThingShadowResponse, IpcError> {
        self.call::<op::DeleteThingShadow>(request).await
    }

    /// ListNamedShadowsForThing: lists a thing's named local shadows, a page at a time.
    pub async fn list_named_shadows_for_thing(
        &self,
        request: &ListNamedShadowsForThingRequest,
    ) -> Result<ListNamedShadowsForThingResponse, IpcError> {
        self.call::<op::ListNamedShadowsForThing>(request).await
    }

    /// SubscribeToComponentUpdates: streams pre- and post-update notices of deployments.
    pub async fn subscribe_to_component_updates(
        &self,
        request: &SubscribeToComponentUpdatesRequest,
    ) -> Result<Subscription<op::SubscribeToComponentUpdates>, IpcError> {
        self.subscribe::<op::SubscribeToComponentUpdates>(request).await
    }

    /// DeferComponentUpdate: asks the nucleus to postpone an update.
    pub async fn defer_component_update(
        &self,
        request: &DeferComponentUpdateRequest,
    ) -> Result<DeferComponentUpdateResponse, IpcError> {
        self.call::<op::DeferComponentUpdate>(request).await
    }

    /// SubscribeToValidateConfigurationUpdates: streams the configurations deployments
    /// propose for this component; answer each with [`Self::send_configuration_validity_report`].
    pub async fn subscribe_to_validate_configuration_updates(
        &self,
        request: &SubscribeToValidateConfigurationUpdatesRequest,
    ) -> Result<Subscription<op::SubscribeToValidateConfigurationUpdates>, IpcError> {
        self.subscribe::<op::SubscribeToValidateConfigurationUpdates>(request).await
    }

    /// SendConfigurationValidityReport: accepts or rejects a proposed configuration.
    pub async fn send_configuration_validity_report(
        &self,
        request: &SendConfigurationValidityReportRequest,
    ) -> Result<SendConfigurationValidityReportResponse, IpcError> {
        self.call::<op::SendConfigurationValidityReport>(request).await
    }

    /// RestartComponent: restarts a component.
    pub async fn restart_component(
        &self,
        request: &RestartComponentRequest,
    ) -> Result<RestartComponentResponse, IpcError> {
        self.call::<op::RestartComponent>(request).await
    }
}

/// Reads an APPLICATION_MESSAGE of the expected shape.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    operation: &'static str,
    model_type: &str,
    message: &RpcMessage,
) -> Result<T, IpcError> {
    let unexpected = |reason: String| IpcError::UnexpectedResponse { operation, reason };
    match message.service_model_type.as_deref() {
        Some(t) if t == model_type => {}
        Some(t) => return Err(unexpected(format!("got {t}, expected {model_type}"))),
        None if message.terminates_stream() => return Err(unexpected("the stream closed without an answer".into())),
        None => return Err(unexpected("no service-model-type header".into())),
    }
    serde_json::from_slice(&message.payload).map_err(|e| unexpected(format!("{model_type}: {e}")))
}

/// A stream opened by a call; closes it (TERMINATE_STREAM) when dropped unless the
/// server already ended it.
pub(crate) struct StreamHandle {
    conn: Arc<Connection>,
    pub(crate) open: OpenStream,
    ended_by_server: bool,
}

impl StreamHandle {
    fn new(conn: Arc<Connection>, open: OpenStream) -> Self {
        Self { conn, open, ended_by_server: false }
    }

    /// Notes a message received on the stream.
    pub(crate) fn saw(&mut self, message: &RpcMessage) {
        if message.terminates_stream() {
            self.ended_by_server = true;
        }
    }

    /// True once the server has ended the stream.
    pub(crate) fn ended(&self) -> bool {
        self.ended_by_server
    }

    /// Ends a request/response call: close our side now.
    fn finish_call(&mut self) {
        self.conn.close_stream(self.open.id, !self.ended_by_server);
        self.ended_by_server = true;
    }

    /// Why the stream ended without a message saying so.
    pub(crate) fn closed_reason(&self) -> IpcError {
        self.conn.closed_reason()
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.conn.close_stream(self.open.id, !self.ended_by_server);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn settings_come_from_the_two_variables() {
        let env: HashMap<&str, &str> = HashMap::from([(SOCKET_PATH_ENV, "/run/ipc.sock"), (AUTH_TOKEN_ENV, "tok")]);
        let s = IpcSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.socket_path, PathBuf::from("/run/ipc.sock"));
        assert_eq!(s.auth_token, "tok");
        assert!(!format!("{s:?}").contains("tok\""), "the token is not printed");
    }

    #[test]
    fn a_missing_or_empty_variable_is_named_in_the_error() {
        let only_socket = |k: &str| (k == SOCKET_PATH_ENV).then(|| "/s".to_owned());
        match IpcSettings::from_lookup(only_socket) {
            Err(IpcError::MissingEnv { var }) => assert_eq!(var, AUTH_TOKEN_ENV),
            other => panic!("{other:?}"),
        }
        let empty_socket = |_: &str| Some(String::new());
        match IpcSettings::from_lookup(empty_socket) {
            Err(e @ IpcError::MissingEnv { .. }) => {
                assert!(e.to_string().contains(SOCKET_PATH_ENV), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
}
