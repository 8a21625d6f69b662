//! Greengrass IPC service errors: the error codes and the error body.
//!
//! A modelled error is an APPLICATION_ERROR with TERMINATE_STREAM whose `service-model-type`
//! names the error shape (`aws.greengrass#ResourceNotFoundError`) and whose JSON body holds
//! the fields of Java's `EventStreamOperationError` plus the shape's own members:
//!
//! ```json
//! {"_service":"aws.greengrass#GreengrassCoreIPC","_message":"No shadow found",
//!  "_errorCode":"ResourceNotFoundError","message":"No shadow found","resourceType":"...","resourceName":"..."}
//! ```
//!
//! AWS's clients pick the error type from `service-model-type`, not from the body; we do
//! the same and fall back to `_errorCode`. Two unmodelled replies of the Java server are also
//! understood: an unknown operation gets `{"error":"Unsupported Operation","message":...}`
//! without `service-model-type`, and an unexpected server exception gets the text
//! `InternalServerError` with `:content-type: text/plain`.
//!
//! Sources: `awsiot/greengrasscoreipc/model.py` (error shapes, client/server kind),
//! Java `EventStreamOperationError`, `GreengrassCoreIPCError`, `OperationContinuationHandler`.

use super::rpc::{CONTENT_TYPE_JSON, RpcMessage, SERVICE_NAME, StreamId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Prefix of Greengrass shape names.
pub const SHAPE_PREFIX: &str = "aws.greengrass#";

/// Who is at fault, as AWS's SDKs classify each error shape (`_get_error_type_string`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request was wrong (arguments, authorization, state): retrying it unchanged fails again.
    Client,
    /// The server failed: AWS's SDKs call these retryable.
    Server,
}

/// An IPC error code: the error shape's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `aws.greengrass#ServiceError` (server): the nucleus failed to do it.
    ServiceError,
    /// `aws.greengrass#ResourceNotFoundError` (client): no such shadow, key, deployment...
    ResourceNotFoundError,
    /// `aws.greengrass#UnauthorizedError` (client): accessControl does not allow it.
    UnauthorizedError,
    /// `aws.greengrass#InvalidArgumentsError` (client): the request is malformed.
    InvalidArgumentsError,
    /// `aws.greengrass#ConflictError` (client): e.g. a shadow version conflict.
    ConflictError,
    /// `aws.greengrass#ComponentNotFoundError` (client): no such component.
    ComponentNotFoundError,
    /// `aws.greengrass#InvalidTokenError` (server, per the SDK model).
    InvalidTokenError,
    /// `aws.greengrass#FailedUpdateConditionCheckError` (client): UpdateConfiguration's timestamp is stale.
    FailedUpdateConditionCheckError,
    /// `aws.greengrass#InvalidArtifactsDirectoryPathError` (client).
    InvalidArtifactsDirectoryPathError,
    /// `aws.greengrass#InvalidRecipeDirectoryPathError` (client).
    InvalidRecipeDirectoryPathError,
    /// `aws.greengrass#InvalidClientDeviceAuthTokenError` (client).
    InvalidClientDeviceAuthTokenError,
    /// `aws.greengrass#InvalidCredentialError` (client).
    InvalidCredentialError,
    /// `aws#AccessDenied`: the event-stream framework's own access error.
    AccessDenied,
    /// `aws#UnsupportedOperation`: the operation is not served.
    UnsupportedOperation,
    /// `aws#ValidationException`: the framework's validation error.
    ValidationException,
    /// Any other name, as received (`InternalServerError` for the Java server's text reply).
    Other(String),
}

const GREENGRASS_CODES: [(ErrorCode, &str); 12] = [
    (ErrorCode::ServiceError, "ServiceError"),
    (ErrorCode::ResourceNotFoundError, "ResourceNotFoundError"),
    (ErrorCode::UnauthorizedError, "UnauthorizedError"),
    (ErrorCode::InvalidArgumentsError, "InvalidArgumentsError"),
    (ErrorCode::ConflictError, "ConflictError"),
    (ErrorCode::ComponentNotFoundError, "ComponentNotFoundError"),
    (ErrorCode::InvalidTokenError, "InvalidTokenError"),
    (ErrorCode::FailedUpdateConditionCheckError, "FailedUpdateConditionCheckError"),
    (ErrorCode::InvalidArtifactsDirectoryPathError, "InvalidArtifactsDirectoryPathError"),
    (ErrorCode::InvalidRecipeDirectoryPathError, "InvalidRecipeDirectoryPathError"),
    (ErrorCode::InvalidClientDeviceAuthTokenError, "InvalidClientDeviceAuthTokenError"),
    (ErrorCode::InvalidCredentialError, "InvalidCredentialError"),
];

const FRAMEWORK_CODES: [(ErrorCode, &str); 3] = [
    (ErrorCode::AccessDenied, "aws#AccessDenied"),
    (ErrorCode::UnsupportedOperation, "aws#UnsupportedOperation"),
    (ErrorCode::ValidationException, "aws#ValidationException"),
];

impl ErrorCode {
    /// The `_errorCode` value: `ServiceError`, or `aws#AccessDenied` for framework errors.
    pub fn error_code(&self) -> &str {
        if let ErrorCode::Other(s) = self {
            return s;
        }
        GREENGRASS_CODES.iter().chain(FRAMEWORK_CODES.iter()).find(|(c, _)| c == self).map_or("", |(_, n)| n)
    }

    /// The `service-model-type` value: `aws.greengrass#ServiceError`, or `aws#AccessDenied`.
    pub fn model_type(&self) -> String {
        match self {
            ErrorCode::Other(s) if s.contains('#') => s.clone(),
            c if FRAMEWORK_CODES.iter().any(|(f, _)| f == c) => c.error_code().to_owned(),
            c => format!("{SHAPE_PREFIX}{}", c.error_code()),
        }
    }

    /// The code named by a `service-model-type` value.
    pub fn from_model_type(model_type: &str) -> Self {
        if let Some(name) = model_type.strip_prefix(SHAPE_PREFIX)
            && let Some((c, _)) = GREENGRASS_CODES.iter().find(|(_, n)| *n == name)
        {
            return c.clone();
        }
        Self::from_framework(model_type).unwrap_or_else(|| ErrorCode::Other(model_type.to_owned()))
    }

    /// The code named by an `_errorCode` value.
    pub fn from_error_code(code: &str) -> Self {
        GREENGRASS_CODES
            .iter()
            .find(|(_, n)| *n == code)
            .map(|(c, _)| c.clone())
            .or_else(|| Self::from_framework(code))
            .unwrap_or_else(|| ErrorCode::Other(code.to_owned()))
    }

    fn from_framework(name: &str) -> Option<Self> {
        FRAMEWORK_CODES.iter().find(|(_, n)| *n == name).map(|(c, _)| c.clone())
    }

    /// Client or server fault, as AWS's SDK model says; unknown codes count as server faults.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ErrorCode::ServiceError | ErrorCode::InvalidTokenError | ErrorCode::Other(_) => ErrorKind::Server,
            _ => ErrorKind::Client,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.error_code())
    }
}

/// The JSON body of a modelled error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Always `aws.greengrass#GreengrassCoreIPC` from the nucleus.
    #[serde(rename = "_service", default)]
    pub service: String,
    /// The framework's copy of the message.
    #[serde(rename = "_message", default)]
    pub framework_message: String,
    /// The error code (`ServiceError`).
    #[serde(rename = "_errorCode", default)]
    pub error_code: String,
    /// The shape's `message` member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The shape's other members (`resourceType`, `resourceName`, `context`).
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl ErrorBody {
    /// The body the nucleus sends for `code` with `message`.
    pub fn new(code: &ErrorCode, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            service: SERVICE_NAME.to_owned(),
            framework_message: message.clone(),
            error_code: code.error_code().to_owned(),
            message: Some(message),
            fields: Map::new(),
        }
    }

    /// Adds a shape member (`resourceType`, `resourceName`, `context`).
    pub fn with_field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }
}

/// The APPLICATION_ERROR a server sends to fail `stream_id` with `code`.
pub fn error_message(stream_id: StreamId, code: &ErrorCode, body: &ErrorBody) -> RpcMessage {
    let json = serde_json::to_vec(body).unwrap_or_default();
    RpcMessage::application_error(stream_id, &code.model_type(), Bytes::from(json))
}

/// A service error as a client receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceError {
    /// What went wrong.
    pub code: ErrorCode,
    /// The human-readable message (the shape's `message`, else `_message`, else the raw text).
    pub message: String,
    /// The shape's other members (`resourceType`, `context`, ...), when the body was JSON.
    pub fields: Map<String, Value>,
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Longest raw text kept as the message of an unparseable error.
const MAX_RAW_MESSAGE: usize = 512;

impl ServiceError {
    /// Reads an APPLICATION_ERROR. Never fails: whatever the body, the caller gets a code
    /// and a message.
    pub fn from_rpc(message: &RpcMessage) -> Self {
        let json: Option<Map<String, Value>> = serde_json::from_slice(&message.payload).ok();
        let text = |v: Option<&Value>| v.and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
        let code = match (&message.service_model_type, &json) {
            (Some(t), _) => ErrorCode::from_model_type(t),
            (None, Some(body)) => match (text(body.get("_errorCode")), text(body.get("error"))) {
                (Some(code), _) => ErrorCode::from_error_code(&code),
                (None, Some(e)) if e == "Unsupported Operation" => ErrorCode::UnsupportedOperation,
                (None, Some(e)) => ErrorCode::Other(e),
                (None, None) => ErrorCode::Other("InternalServerError".to_owned()),
            },
            (None, None) => ErrorCode::Other("InternalServerError".to_owned()),
        };
        let (message_text, fields) = match json {
            Some(mut body) => {
                let msg = text(body.get("message")).or_else(|| text(body.get("_message")));
                for k in ["_service", "_message", "_errorCode", "message"] {
                    body.remove(k);
                }
                (msg, body)
            }
            None => (None, Map::new()),
        };
        let message_text = message_text.unwrap_or_else(|| {
            let raw = String::from_utf8_lossy(&message.payload);
            raw.chars().take(MAX_RAW_MESSAGE).collect::<String>().trim().to_owned()
        });
        Self { code, message: message_text, fields }
    }

    /// The APPLICATION_ERROR carrying this error (the server side).
    pub fn to_rpc(&self, stream_id: StreamId) -> RpcMessage {
        let mut body = ErrorBody::new(&self.code, self.message.clone());
        body.fields = self.fields.clone();
        error_message(stream_id, &self.code, &body)
    }
}

/// True when `message` is JSON by its `:content-type` (absent counts as JSON, as the CRT
/// omits it on some connection-level messages).
pub fn is_json(message: &RpcMessage) -> bool {
    message.content_type.as_deref().is_none_or(|c| c == CONTENT_TYPE_JSON)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::rpc::CONTENT_TYPE_TEXT;

    fn stream() -> StreamId {
        StreamId::FIRST
    }

    #[test]
    fn error_body_has_the_framework_and_shape_members() {
        let body = ErrorBody::new(&ErrorCode::ResourceNotFoundError, "No shadow found")
            .with_field("resourceType", "shadow")
            .with_field("resourceName", "pump");
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "_service": "aws.greengrass#GreengrassCoreIPC",
                "_message": "No shadow found",
                "_errorCode": "ResourceNotFoundError",
                "message": "No shadow found",
                "resourceType": "shadow",
                "resourceName": "pump",
            })
        );
        let m = error_message(stream(), &ErrorCode::ResourceNotFoundError, &body);
        assert_eq!(m.service_model_type.as_deref(), Some("aws.greengrass#ResourceNotFoundError"));
        assert!(m.terminates_stream());
    }

    #[test]
    fn codes_map_to_model_types_and_back() {
        for (code, _) in GREENGRASS_CODES.iter().chain(FRAMEWORK_CODES.iter()) {
            assert_eq!(&ErrorCode::from_model_type(&code.model_type()), code);
            assert_eq!(&ErrorCode::from_error_code(code.error_code()), code);
        }
        assert_eq!(ErrorCode::UnauthorizedError.model_type(), "aws.greengrass#UnauthorizedError");
        assert_eq!(ErrorCode::AccessDenied.model_type(), "aws#AccessDenied");
        assert_eq!(ErrorCode::from_model_type("aws.greengrass#Nope"), ErrorCode::Other("aws.greengrass#Nope".into()));
    }

    #[test]
    fn error_kinds_follow_the_sdk_model() {
        assert_eq!(ErrorCode::ServiceError.kind(), ErrorKind::Server);
        assert_eq!(ErrorCode::InvalidTokenError.kind(), ErrorKind::Server);
        assert_eq!(ErrorCode::InvalidArgumentsError.kind(), ErrorKind::Client);
        assert_eq!(ErrorCode::UnauthorizedError.kind(), ErrorKind::Client);
    }

    #[test]
    fn a_received_error_is_read_from_its_model_type_and_body() {
        let sent = ServiceError {
            code: ErrorCode::ConflictError,
            message: "version mismatch".into(),
            fields: Map::from_iter([("context".to_owned(), serde_json::json!({"v": 3}))]),
        };
        assert_eq!(ServiceError::from_rpc(&sent.to_rpc(stream())), sent);
    }

    #[test]
    fn unmodelled_server_replies_still_give_a_code_and_message() {
        // The Java server's reply to an unknown operation: JSON, no service-model-type.
        let mut m = RpcMessage::application_error(stream(), "x", Bytes::new());
        m.service_model_type = None;
        m.payload = Bytes::from_static(
            br#"{ "error": "Unsupported Operation", "message": "aws.greengrass#Nope is an unsupported operation." }"#,
        );
        let e = ServiceError::from_rpc(&m);
        assert_eq!(e.code, ErrorCode::UnsupportedOperation);
        assert_eq!(e.message, "aws.greengrass#Nope is an unsupported operation.");

        // Its reply to an unexpected exception: text/plain "InternalServerError".
        m.content_type = Some(CONTENT_TYPE_TEXT.into());
        m.payload = Bytes::from_static(b"InternalServerError");
        let e = ServiceError::from_rpc(&m);
        assert_eq!(e.code, ErrorCode::Other("InternalServerError".into()));
        assert_eq!(e.message, "InternalServerError");
        assert_eq!(e.code.kind(), ErrorKind::Server);

        // Only _errorCode.
        m.payload = Bytes::from_static(br#"{"_errorCode":"UnauthorizedError","_message":"denied"}"#);
        let e = ServiceError::from_rpc(&m);
        assert_eq!((e.code, e.message.as_str()), (ErrorCode::UnauthorizedError, "denied"));

        // Binary garbage.
        m.payload = Bytes::from_static(&[0xff, 0xfe, 0x00]);
        let e = ServiceError::from_rpc(&m);
        assert_eq!(e.code, ErrorCode::Other("InternalServerError".into()));
    }
}
