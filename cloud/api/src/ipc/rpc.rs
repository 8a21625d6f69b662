//! The event-stream RPC layer: message types, flags, stream ids, the RPC headers, the
//! CONNECT/CONNECT_ACK handshake, and a constructor for every message either side sends.
//!
//! Sources: `aws-c-event-stream` (`event_stream_rpc.h`, `event_stream_rpc_client.c`,
//! `event_stream_rpc_server.c`), `awsiot/eventstreamrpc.py`, and the Java
//! `event-stream-rpc-server` (`ServiceOperationMappingContinuationHandler`,
//! `OperationContinuationHandler`) that the Greengrass nucleus runs. The protocol facts:
//!
//! - Every message carries `:message-type`, `:message-flags` and `:stream-id`, all int32;
//!   names compare case-insensitively. Stream 0 is the connection itself (CONNECT,
//!   CONNECT_ACK, PING, PING_RESPONSE, PROTOCOL_ERROR, INTERNAL_ERROR); only
//!   APPLICATION_MESSAGE and APPLICATION_ERROR travel on a stream id above 0.
//! - The client opens the connection with CONNECT on stream 0, header `:version` = `0.1.0`
//!   and payload `{"authToken": "<SVCUID>"}`. The server answers CONNECT_ACK with flag
//!   CONNECTION_ACCEPTED, or without it and then closes the connection. Nothing else may
//!   be sent by either side before the handshake completes.
//! - A call opens the next stream id (exactly the previous one plus 1, starting at 1: the
//!   server rejects gaps) with an APPLICATION_MESSAGE carrying `operation`
//!   (`aws.greengrass#Op`), `service-model-type` (`aws.greengrass#OpRequest`) and
//!   `:content-type: application/json`.
//! - The first APPLICATION_MESSAGE back is the response (`aws.greengrass#OpResponse`); the
//!   server sets TERMINATE_STREAM on it unless the operation streams. A streaming
//!   operation's later messages are events (`service-model-type` = the event shape). Either
//!   side ends a stream with TERMINATE_STREAM; an empty APPLICATION_MESSAGE with that flag
//!   and no other headers is the bare "close" both the Python client and the Java server send.
//! - Errors are APPLICATION_ERROR with TERMINATE_STREAM, `service-model-type` = the error
//!   shape (`aws.greengrass#ServiceError`, ...), body as in [`super::error`].
//! - A PING is answered with a PING_RESPONSE echoing the payload and the headers whose name
//!   does not start with `:` (what the Java server does).
//! - A peer that breaks the protocol gets PROTOCOL_ERROR on stream 0 with a JSON
//!   `{"message": ...}` body, and the connection is closed.

use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The event-stream RPC protocol version the client announces and the server requires.
pub const VERSION: &str = "0.1.0";
/// The Greengrass IPC service name, the `_service` of every error body.
pub const SERVICE_NAME: &str = "aws.greengrass#GreengrassCoreIPC";
/// `:content-type` of JSON payloads.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// `:content-type` of the Java server's unmodelled "InternalServerError" reply.
pub const CONTENT_TYPE_TEXT: &str = "text/plain";

/// Header names used by the RPC layer.
pub mod header {
    /// int32, a [`super::MessageType`].
    pub const MESSAGE_TYPE: &str = ":message-type";
    /// int32, [`super::MessageFlags`].
    pub const MESSAGE_FLAGS: &str = ":message-flags";
    /// int32, a [`super::StreamId`].
    pub const STREAM_ID: &str = ":stream-id";
    /// string, the operation a new stream calls (`aws.greengrass#UpdateState`).
    pub const OPERATION: &str = "operation";
    /// string, the shape of the payload (`aws.greengrass#UpdateStateRequest`).
    pub const SERVICE_MODEL_TYPE: &str = "service-model-type";
    /// string, the payload's media type.
    pub const CONTENT_TYPE: &str = ":content-type";
    /// string, the protocol version, on CONNECT.
    pub const VERSION: &str = ":version";
}

/// The `:message-type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// 0: a request, response or event on a stream.
    ApplicationMessage,
    /// 1: a modelled (or unmodelled) error on a stream.
    ApplicationError,
    /// 2: a ping on the connection.
    Ping,
    /// 3: the answer to a ping.
    PingResponse,
    /// 4: the client's handshake.
    Connect,
    /// 5: the server's answer to CONNECT.
    ConnectAck,
    /// 6: the sender saw the peer break the protocol; the connection closes.
    ProtocolError,
    /// 7: the sender failed internally; the connection closes.
    InternalError,
}

impl MessageType {
    /// The wire value.
    pub fn as_i32(self) -> i32 {
        match self {
            Self::ApplicationMessage => 0,
            Self::ApplicationError => 1,
            Self::Ping => 2,
            Self::PingResponse => 3,
            Self::Connect => 4,
            Self::ConnectAck => 5,
            Self::ProtocolError => 6,
            Self::InternalError => 7,
        }
    }

    /// The type with this wire value, if any.
    pub fn from_i32(value: i32) -> Option<Self> {
        Some(match value {
            0 => Self::ApplicationMessage,
            1 => Self::ApplicationError,
            2 => Self::Ping,
            3 => Self::PingResponse,
            4 => Self::Connect,
            5 => Self::ConnectAck,
            6 => Self::ProtocolError,
            7 => Self::InternalError,
            _ => return None,
        })
    }

    /// True for the two types that travel on a stream (id above 0).
    pub fn is_application(self) -> bool {
        matches!(self, Self::ApplicationMessage | Self::ApplicationError)
    }
}

/// The `:message-flags` header: a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MessageFlags(pub i32);

impl MessageFlags {
    /// No flags.
    pub const NONE: Self = Self(0);
    /// On CONNECT_ACK: the connection is accepted.
    pub const CONNECTION_ACCEPTED: Self = Self(1);
    /// On a stream message: this is the stream's last message.
    pub const TERMINATE_STREAM: Self = Self(2);

    /// True when every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for MessageFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// The `:stream-id` header: 0 for the connection, 1..=i32::MAX for calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(i32);

impl StreamId {
    /// Stream 0: messages about the connection itself.
    pub const CONNECTION: Self = Self(0);
    /// The first stream a client opens.
    pub const FIRST: Self = Self(1);

    /// The id with this wire value; `None` when negative.
    pub fn new(value: i32) -> Option<Self> {
        (value >= 0).then_some(Self(value))
    }

    /// The wire value.
    pub fn get(self) -> i32 {
        self.0
    }

    /// The id a client opens after this one; `None` once i32::MAX is used up (reconnect).
    pub fn next(self) -> Option<Self> {
        self.0.checked_add(1).map(Self)
    }

    /// True for stream 0.
    pub fn is_connection(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a frame is not a valid RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    /// A required int32 header (`:message-type`, `:message-flags`, `:stream-id`) is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// An RPC header has the wrong value type.
    #[error("header {name} must be {expected}")]
    WrongHeaderType {
        /// The header.
        name: &'static str,
        /// The type it must have.
        expected: &'static str,
    },
    /// `:message-type` is not one of 0..=7.
    #[error("unknown message type {0}")]
    UnknownMessageType(i32),
    /// `:stream-id` is negative.
    #[error("negative stream id {0}")]
    NegativeStreamId(i32),
    /// A connection-level message type on a stream above 0.
    #[error("{message_type:?} is not allowed on stream {stream_id}")]
    ConnectionMessageOnStream {
        /// The message type.
        message_type: MessageType,
        /// The stream it arrived on.
        stream_id: StreamId,
    },
    /// An application message on stream 0.
    #[error("{0:?} needs a stream id above 0")]
    ApplicationMessageOnConnection(MessageType),
}

/// One RPC message: a frame with its RPC headers parsed out.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcMessage {
    /// `:message-type`.
    pub message_type: MessageType,
    /// `:message-flags`.
    pub flags: MessageFlags,
    /// `:stream-id`.
    pub stream_id: StreamId,
    /// `operation`, on the first message of a stream.
    pub operation: Option<String>,
    /// `service-model-type`: the shape of the payload.
    pub service_model_type: Option<String>,
    /// `:content-type`.
    pub content_type: Option<String>,
    /// Every other header, in order (`:version` among them).
    pub headers: Vec<Header>,
    /// The payload, JSON for application messages.
    pub payload: Bytes,
}

impl RpcMessage {
    /// A message with no optional headers and an empty payload.
    pub fn new(message_type: MessageType, flags: MessageFlags, stream_id: StreamId) -> Self {
        Self {
            message_type,
            flags,
            stream_id,
            operation: None,
            service_model_type: None,
            content_type: None,
            headers: Vec::new(),
            payload: Bytes::new(),
        }
    }

    /// Parses the RPC headers out of a decoded frame and checks that the message type fits
    /// the stream id (as `aws-c-event-stream` does).
    pub fn from_message(message: Message) -> Result<Self, RpcError> {
        let mut message_type = None;
        let mut flags = None;
        let mut stream_id = None;
        let mut operation = None;
        let mut service_model_type = None;
        let mut content_type = None;
        let mut headers = Vec::new();
        for h in message.headers() {
            let name = h.name().as_str();
            let int_slot = if name.eq_ignore_ascii_case(header::MESSAGE_TYPE) {
                Some((&mut message_type, header::MESSAGE_TYPE))
            } else if name.eq_ignore_ascii_case(header::MESSAGE_FLAGS) {
                Some((&mut flags, header::MESSAGE_FLAGS))
            } else if name.eq_ignore_ascii_case(header::STREAM_ID) {
                Some((&mut stream_id, header::STREAM_ID))
            } else {
                None
            };
            if let Some((slot, name)) = int_slot {
                let HeaderValue::Int32(v) = h.value() else {
                    return Err(RpcError::WrongHeaderType { name, expected: "int32" });
                };
                slot.get_or_insert(*v);
                continue;
            }
            let str_slot = if name.eq_ignore_ascii_case(header::OPERATION) {
                Some((&mut operation, header::OPERATION))
            } else if name.eq_ignore_ascii_case(header::SERVICE_MODEL_TYPE) {
                Some((&mut service_model_type, header::SERVICE_MODEL_TYPE))
            } else if name.eq_ignore_ascii_case(header::CONTENT_TYPE) {
                Some((&mut content_type, header::CONTENT_TYPE))
            } else {
                None
            };
            if let Some((slot, name)) = str_slot {
                let HeaderValue::String(v) = h.value() else {
                    return Err(RpcError::WrongHeaderType { name, expected: "string" });
                };
                slot.get_or_insert_with(|| v.as_str().to_owned());
                continue;
            }
            headers.push(h.clone());
        }

        let raw_type = message_type.ok_or(RpcError::MissingHeader(header::MESSAGE_TYPE))?;
        let flags = MessageFlags(flags.ok_or(RpcError::MissingHeader(header::MESSAGE_FLAGS))?);
        let raw_stream = stream_id.ok_or(RpcError::MissingHeader(header::STREAM_ID))?;
        let message_type = MessageType::from_i32(raw_type).ok_or(RpcError::UnknownMessageType(raw_type))?;
        let stream_id = StreamId::new(raw_stream).ok_or(RpcError::NegativeStreamId(raw_stream))?;
        if stream_id.is_connection() && message_type.is_application() {
            return Err(RpcError::ApplicationMessageOnConnection(message_type));
        }
        if !stream_id.is_connection() && !message_type.is_application() {
            return Err(RpcError::ConnectionMessageOnStream { message_type, stream_id });
        }
        Ok(Self {
            message_type,
            flags,
            stream_id,
            operation,
            service_model_type,
            content_type,
            headers,
            payload: message.payload().clone(),
        })
    }

    /// The frame to encode. Header order follows `aws-c-event-stream`: application headers,
    /// then `:message-type`, `:message-flags`, `:stream-id`, then `operation`.
    pub fn to_message(&self) -> Message {
        let mut headers = Vec::with_capacity(self.headers.len() + 6);
        if let Some(v) = &self.content_type {
            headers.push(Header::new(header::CONTENT_TYPE, HeaderValue::String(v.clone().into())));
        }
        if let Some(v) = &self.service_model_type {
            headers.push(Header::new(header::SERVICE_MODEL_TYPE, HeaderValue::String(v.clone().into())));
        }
        headers.extend(self.headers.iter().cloned());
        headers.push(Header::new(header::MESSAGE_TYPE, HeaderValue::Int32(self.message_type.as_i32())));
        headers.push(Header::new(header::MESSAGE_FLAGS, HeaderValue::Int32(self.flags.0)));
        headers.push(Header::new(header::STREAM_ID, HeaderValue::Int32(self.stream_id.get())));
        if let Some(v) = &self.operation {
            headers.push(Header::new(header::OPERATION, HeaderValue::String(v.clone().into())));
        }
        Message::new_from_parts(headers, self.payload.clone())
    }

    /// The first other header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.iter().find(|h| h.name().as_str().eq_ignore_ascii_case(name)).map(Header::value)
    }

    /// The `:version` header, when it is a string.
    pub fn version(&self) -> Option<&str> {
        match self.header(header::VERSION)? {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// True when TERMINATE_STREAM is set.
    pub fn terminates_stream(&self) -> bool {
        self.flags.contains(MessageFlags::TERMINATE_STREAM)
    }

    /// True for a CONNECT_ACK with CONNECTION_ACCEPTED.
    pub fn is_connection_accepted(&self) -> bool {
        self.message_type == MessageType::ConnectAck && self.flags.contains(MessageFlags::CONNECTION_ACCEPTED)
    }

    /// The client's CONNECT: `:version` 0.1.0 and `{"authToken": token}`.
    pub fn connect(auth_token: &str) -> Self {
        let mut m = Self::new(MessageType::Connect, MessageFlags::NONE, StreamId::CONNECTION);
        m.headers.push(Header::new(header::VERSION, HeaderValue::String(VERSION.into())));
        m.payload = json_bytes(&ConnectPayload { auth_token: auth_token.to_owned() });
        m
    }

    /// The server's CONNECT_ACK; a refused connection is closed right after it.
    pub fn connect_ack(accepted: bool) -> Self {
        let flags = if accepted { MessageFlags::CONNECTION_ACCEPTED } else { MessageFlags::NONE };
        Self::new(MessageType::ConnectAck, flags, StreamId::CONNECTION)
    }

    /// A PING with this payload.
    pub fn ping(payload: Bytes) -> Self {
        let mut m = Self::new(MessageType::Ping, MessageFlags::NONE, StreamId::CONNECTION);
        m.payload = payload;
        m
    }

    /// The PING_RESPONSE to `ping`: its payload and its headers not starting with `:`.
    pub fn ping_response(ping: &RpcMessage) -> Self {
        let mut m = Self::new(MessageType::PingResponse, MessageFlags::NONE, StreamId::CONNECTION);
        m.headers = ping.headers.iter().filter(|h| !h.name().as_str().starts_with(':')).cloned().collect();
        m.operation = ping.operation.clone();
        m.service_model_type = ping.service_model_type.clone();
        m.payload = ping.payload.clone();
        m
    }

    /// The first message of a call: opens `stream_id` for `operation` with a JSON request.
    pub fn request(stream_id: StreamId, operation: &str, request_model_type: &str, json: Bytes) -> Self {
        let mut m = Self::application(stream_id, request_model_type, json, false);
        m.operation = Some(operation.to_owned());
        m
    }

    /// A response or stream event: an APPLICATION_MESSAGE with a JSON payload of the given
    /// shape, optionally closing the stream.
    pub fn application(stream_id: StreamId, model_type: &str, json: Bytes, terminate: bool) -> Self {
        let flags = if terminate { MessageFlags::TERMINATE_STREAM } else { MessageFlags::NONE };
        let mut m = Self::new(MessageType::ApplicationMessage, flags, stream_id);
        m.content_type = Some(CONTENT_TYPE_JSON.to_owned());
        m.service_model_type = Some(model_type.to_owned());
        m.payload = json;
        m
    }

    /// The bare close of a stream: an empty APPLICATION_MESSAGE with TERMINATE_STREAM.
    pub fn terminate_stream(stream_id: StreamId) -> Self {
        Self::new(MessageType::ApplicationMessage, MessageFlags::TERMINATE_STREAM, stream_id)
    }

    /// A modelled error closing `stream_id`: APPLICATION_ERROR with TERMINATE_STREAM and
    /// `service-model-type` = the error shape (see [`super::error::ErrorBody`]).
    pub fn application_error(stream_id: StreamId, error_model_type: &str, json: Bytes) -> Self {
        let mut m = Self::new(MessageType::ApplicationError, MessageFlags::TERMINATE_STREAM, stream_id);
        m.content_type = Some(CONTENT_TYPE_JSON.to_owned());
        m.service_model_type = Some(error_model_type.to_owned());
        m.payload = json;
        m
    }

    /// PROTOCOL_ERROR on stream 0 with `{"message": ...}`; the sender then closes.
    pub fn protocol_error(message: &str) -> Self {
        Self::connection_error(MessageType::ProtocolError, message)
    }

    /// INTERNAL_ERROR on stream 0 with `{"message": ...}`; the sender then closes.
    pub fn internal_error(message: &str) -> Self {
        Self::connection_error(MessageType::InternalError, message)
    }

    fn connection_error(message_type: MessageType, message: &str) -> Self {
        let mut m = Self::new(message_type, MessageFlags::NONE, StreamId::CONNECTION);
        m.content_type = Some(CONTENT_TYPE_JSON.to_owned());
        m.payload = json_bytes(&serde_json::json!({ "message": message }));
        m
    }
}

impl From<&RpcMessage> for Message {
    fn from(m: &RpcMessage) -> Self {
        m.to_message()
    }
}

impl TryFrom<Message> for RpcMessage {
    type Error = RpcError;
    fn try_from(m: Message) -> Result<Self, RpcError> {
        Self::from_message(m)
    }
}

/// The CONNECT payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectPayload {
    /// The component's `SVCUID`.
    #[serde(rename = "authToken")]
    pub auth_token: String,
}

/// Why a CONNECT is refused, as the server sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The first message was not a CONNECT.
    #[error("expected CONNECT, got {0:?}")]
    NotConnect(MessageType),
    /// `:version` is absent or is not 0.1.0.
    #[error("unsupported protocol version {0:?}, expected {VERSION}")]
    Version(Option<String>),
    /// The payload is not `{"authToken": "..."}`.
    #[error("CONNECT payload is not {{\"authToken\": ...}}: {0}")]
    Payload(String),
}

/// Checks a CONNECT the way the Java server does (version first, then the token's
/// presence) and returns the auth token to authenticate. The caller answers
/// [`RpcMessage::connect_ack`] either way.
pub fn parse_connect(message: &RpcMessage) -> Result<ConnectPayload, HandshakeError> {
    if message.message_type != MessageType::Connect {
        return Err(HandshakeError::NotConnect(message.message_type));
    }
    match message.version() {
        Some(VERSION) => {}
        other => return Err(HandshakeError::Version(other.map(str::to_owned))),
    }
    serde_json::from_slice(&message.payload).map_err(|e| HandshakeError::Payload(e.to_string()))
}

fn json_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serialising these small owned structures cannot fail: no maps with non-string keys.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::frame::FrameCodec;
    use bytes::BytesMut;

    fn through_the_wire(m: &RpcMessage) -> RpcMessage {
        let mut buf = BytesMut::new();
        FrameCodec::new().encode(&m.to_message(), &mut buf).unwrap();
        let frame = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
        RpcMessage::from_message(frame).unwrap()
    }

    fn raw(headers: Vec<Header>) -> Message {
        Message::new_from_parts(headers, Bytes::new())
    }

    #[test]
    fn every_constructor_survives_the_wire() {
        let s = StreamId::new(3).unwrap();
        let cases = [
            RpcMessage::connect("token-1"),
            RpcMessage::connect_ack(true),
            RpcMessage::connect_ack(false),
            RpcMessage::ping(Bytes::from_static(b"hi")),
            RpcMessage::request(s, "aws.greengrass#UpdateState", "aws.greengrass#UpdateStateRequest", "{}".into()),
            RpcMessage::application(s, "aws.greengrass#UpdateStateResponse", "{}".into(), true),
            RpcMessage::terminate_stream(s),
            RpcMessage::application_error(s, "aws.greengrass#ServiceError", "{}".into()),
            RpcMessage::protocol_error("bad"),
            RpcMessage::internal_error("oops"),
        ];
        for m in cases {
            assert_eq!(through_the_wire(&m), m);
        }
    }

    #[test]
    fn connect_carries_version_and_auth_token() {
        let m = RpcMessage::connect("abc\"def");
        assert_eq!(m.version(), Some("0.1.0"));
        assert_eq!(m.stream_id, StreamId::CONNECTION);
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v, serde_json::json!({"authToken": "abc\"def"}));
        assert_eq!(parse_connect(&m).unwrap().auth_token, "abc\"def");
    }

    #[test]
    fn connect_with_wrong_version_or_payload_is_refused() {
        let mut m = RpcMessage::connect("t");
        m.headers.clear();
        assert_eq!(parse_connect(&m), Err(HandshakeError::Version(None)));
        m.headers.push(Header::new(":version", HeaderValue::String("0.2.0".into())));
        assert_eq!(parse_connect(&m), Err(HandshakeError::Version(Some("0.2.0".into()))));
        let mut m = RpcMessage::connect("t");
        m.payload = Bytes::from_static(b"{}");
        assert!(matches!(parse_connect(&m), Err(HandshakeError::Payload(_))));
        assert!(matches!(parse_connect(&RpcMessage::connect_ack(true)), Err(HandshakeError::NotConnect(_))));
    }

    #[test]
    fn connect_ack_flag_decides_acceptance() {
        assert!(RpcMessage::connect_ack(true).is_connection_accepted());
        assert!(!RpcMessage::connect_ack(false).is_connection_accepted());
        assert!(!RpcMessage::ping(Bytes::new()).is_connection_accepted());
    }

    #[test]
    fn ping_response_echoes_payload_and_non_colon_headers() {
        let mut ping = RpcMessage::ping(Bytes::from_static(b"p"));
        ping.headers.push(Header::new("x-keep", HeaderValue::Int32(1)));
        ping.headers.push(Header::new(":drop", HeaderValue::Int32(2)));
        let pong = RpcMessage::ping_response(&ping);
        assert_eq!(pong.message_type, MessageType::PingResponse);
        assert_eq!(pong.payload, ping.payload);
        assert_eq!(pong.headers, vec![Header::new("x-keep", HeaderValue::Int32(1))]);
    }

    #[test]
    fn rpc_header_names_are_case_insensitive() {
        let m = raw(vec![
            Header::new(":Message-Type", HeaderValue::Int32(0)),
            Header::new(":MESSAGE-FLAGS", HeaderValue::Int32(2)),
            Header::new(":stream-ID", HeaderValue::Int32(9)),
            Header::new("Operation", HeaderValue::String("op".into())),
        ]);
        let m = RpcMessage::from_message(m).unwrap();
        assert_eq!(m.stream_id.get(), 9);
        assert!(m.terminates_stream());
        assert_eq!(m.operation.as_deref(), Some("op"));
    }

    #[test]
    fn invalid_rpc_messages_are_rejected() {
        let int = |n: &str, v: i32| Header::new(n.to_owned(), HeaderValue::Int32(v));
        let cases: Vec<(Vec<Header>, RpcError)> = vec![
            (vec![int(":message-flags", 0), int(":stream-id", 0)], RpcError::MissingHeader(header::MESSAGE_TYPE)),
            (vec![int(":message-type", 2), int(":stream-id", 0)], RpcError::MissingHeader(header::MESSAGE_FLAGS)),
            (vec![int(":message-type", 2), int(":message-flags", 0)], RpcError::MissingHeader(header::STREAM_ID)),
            (
                vec![
                    Header::new(":message-type", HeaderValue::String("0".into())),
                    int(":message-flags", 0),
                    int(":stream-id", 0),
                ],
                RpcError::WrongHeaderType { name: header::MESSAGE_TYPE, expected: "int32" },
            ),
            (
                vec![int(":message-type", 0), int(":message-flags", 0), int(":stream-id", 1), int("operation", 5)],
                RpcError::WrongHeaderType { name: header::OPERATION, expected: "string" },
            ),
            (
                vec![int(":message-type", 8), int(":message-flags", 0), int(":stream-id", 0)],
                RpcError::UnknownMessageType(8),
            ),
            (
                vec![int(":message-type", 0), int(":message-flags", 0), int(":stream-id", -1)],
                RpcError::NegativeStreamId(-1),
            ),
            (
                vec![int(":message-type", 0), int(":message-flags", 0), int(":stream-id", 0)],
                RpcError::ApplicationMessageOnConnection(MessageType::ApplicationMessage),
            ),
            (
                vec![int(":message-type", 2), int(":message-flags", 0), int(":stream-id", 4)],
                RpcError::ConnectionMessageOnStream {
                    message_type: MessageType::Ping,
                    stream_id: StreamId::new(4).unwrap(),
                },
            ),
        ];
        for (headers, expected) in cases {
            assert_eq!(RpcMessage::from_message(raw(headers)), Err(expected.clone()), "{expected}");
        }
    }

    #[test]
    fn stream_ids_count_up_from_one_and_stop_at_i32_max() {
        assert_eq!(StreamId::FIRST.get(), 1);
        assert_eq!(StreamId::FIRST.next(), StreamId::new(2));
        assert_eq!(StreamId::new(i32::MAX).unwrap().next(), None);
        assert_eq!(StreamId::new(-5), None);
    }

    #[test]
    fn message_type_values_match_the_crt_enum() {
        for v in 0..8 {
            assert_eq!(MessageType::from_i32(v).map(MessageType::as_i32), Some(v));
        }
        assert_eq!(MessageType::from_i32(8), None);
        assert_eq!(MessageType::ConnectAck.as_i32(), 5);
        assert_eq!(MessageFlags::CONNECTION_ACCEPTED.0, 1);
        assert_eq!(MessageFlags::TERMINATE_STREAM.0, 2);
    }
}
