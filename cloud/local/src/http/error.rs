//! AWS errors on the wire, as restJson1 clients read them.
//!
//! A restJson1 client takes the error's shape name from the `x-amzn-ErrorType`
//! header (anything after `:` is ignored), else from the body's `code` or
//! `__type` member, and the text from the body's `message`. Members of the
//! error shape (e.g. `resourceId` and `resourceArn` of
//! `ResourceAlreadyExistsException`) travel in the JSON body. We send the
//! header and `__type` both, so aws-sdk-rust, botocore and the AWS CLI all
//! raise the typed exception. Status codes are each exception's `httpError`
//! in the service models (`iot.json`, `iot-data-plane.json`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cloud_api::shadow::ShadowError;
use serde_json::{Map, Value, json};

use crate::registry::RegistryError;

/// The header restJson1 clients read the error's shape name from.
pub const ERROR_TYPE_HEADER: &str = "x-amzn-ErrorType";

/// An AWS exception, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// HTTP status (the exception's `httpError`).
    pub status: StatusCode,
    /// Exception shape name, e.g. `ResourceNotFoundException`.
    pub error_type: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `resourceId` and `resourceArn` of a `ResourceAlreadyExistsException`.
    pub existing: Option<(String, String)>,
}

impl AwsError {
    /// An exception with a status, a shape name and a message.
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        AwsError { status, error_type, message: message.into(), existing: None }
    }

    /// `InvalidRequestException` (400): fix the request.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequestException", message)
    }

    /// `ResourceNotFoundException` (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// `InternalFailureException` (500): retry later.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalFailureException", message)
    }

    /// `ServiceUnavailableException` (503): retry later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableException", message)
    }

    /// `RequestEntityTooLargeException` (413).
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLargeException", message)
    }

    /// `UnknownOperationException` (404): no operation has this method and path.
    pub fn unknown_operation(method: &str, path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "UnknownOperationException", format!("no operation matches {method} {path}"))
    }

    /// `MethodNotAllowedException` (405): the path exists, the method does not.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowedException",
            format!("method {method} is not allowed on {path}"),
        )
    }

    /// The JSON body: `message`, `__type`, and the shape's extra members.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("message".into(), json!(self.message));
        body.insert("__type".into(), json!(self.error_type));
        if let Some((id, arn)) = &self.existing {
            body.insert("resourceId".into(), json!(id));
            body.insert("resourceArn".into(), json!(arn));
        }
        Value::Object(body)
    }
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.error_type, self.status.as_u16(), self.message)
    }
}

impl std::error::Error for AwsError {}

impl IntoResponse for AwsError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(error = %self, "HTTP API request failed");
        } else {
            tracing::debug!(error = %self, "HTTP API request rejected");
        }
        let mut response = (self.status, axum::Json(self.body())).into_response();
        response.headers_mut().insert(ERROR_TYPE_HEADER, HeaderValue::from_static(self.error_type));
        response
    }
}

impl From<RegistryError> for AwsError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::NotFound(m) => AwsError::not_found(m),
            RegistryError::AlreadyExists { message, resource_id, resource_arn } => AwsError {
                status: StatusCode::CONFLICT,
                error_type: "ResourceAlreadyExistsException",
                message,
                existing: Some((resource_id, resource_arn)),
            },
            RegistryError::InvalidRequest(m) => AwsError::invalid_request(m),
            RegistryError::MalformedPolicy(m) => AwsError::new(StatusCode::BAD_REQUEST, "MalformedPolicyException", m),
            RegistryError::DeleteConflict(m) => AwsError::new(StatusCode::CONFLICT, "DeleteConflictException", m),
            // 406 is the model's status for CertificateStateException.
            RegistryError::CertificateState(m) => {
                AwsError::new(StatusCode::NOT_ACCEPTABLE, "CertificateStateException", m)
            }
            // None of the served operations lists CertificateValidationException;
            // CreateCertificateFromCsr reports a bad CSR as InvalidRequestException.
            RegistryError::CertificateValidation(m) => AwsError::invalid_request(m),
            RegistryError::VersionConflict(m) => AwsError::new(StatusCode::CONFLICT, "VersionConflictException", m),
            RegistryError::Internal(m) => AwsError::internal(m),
        }
    }
}

/// The data-plane exception for a shadow rejection code (`iot-data-plane.json`).
pub fn shadow_error_type(code: u16) -> (StatusCode, &'static str) {
    match code {
        400 => (StatusCode::BAD_REQUEST, "InvalidRequestException"),
        401 => (StatusCode::UNAUTHORIZED, "UnauthorizedException"),
        403 => (StatusCode::FORBIDDEN, "ForbiddenException"),
        404 => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
        405 => (StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowedException"),
        409 => (StatusCode::CONFLICT, "ConflictException"),
        413 => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLargeException"),
        415 => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedDocumentEncodingException"),
        429 => (StatusCode::TOO_MANY_REQUESTS, "ThrottlingException"),
        503 => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailableException"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailureException"),
    }
}

impl From<ShadowError> for AwsError {
    fn from(e: ShadowError) -> Self {
        let (status, error_type) = shadow_error_type(e.code);
        AwsError::new(status, error_type, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_keep_the_model_status_and_shape_name() {
        let cases = [
            (RegistryError::NotFound("x".into()), 404, "ResourceNotFoundException"),
            (RegistryError::InvalidRequest("x".into()), 400, "InvalidRequestException"),
            (RegistryError::MalformedPolicy("x".into()), 400, "MalformedPolicyException"),
            (RegistryError::DeleteConflict("x".into()), 409, "DeleteConflictException"),
            (RegistryError::CertificateState("x".into()), 406, "CertificateStateException"),
            (RegistryError::CertificateValidation("x".into()), 400, "InvalidRequestException"),
            (RegistryError::VersionConflict("x".into()), 409, "VersionConflictException"),
            (RegistryError::Internal("x".into()), 500, "InternalFailureException"),
        ];
        for (e, status, name) in cases {
            let aws = AwsError::from(e);
            assert_eq!((aws.status.as_u16(), aws.error_type), (status, name));
        }
    }

    #[test]
    fn already_exists_carries_resource_id_and_arn_in_the_body() {
        let aws = AwsError::from(RegistryError::AlreadyExists {
            message: "exists".into(),
            resource_id: "id-1".into(),
            resource_arn: "arn:aws:iot:us-east-1:000000000000:thing/t".into(),
        });
        assert_eq!(aws.status, StatusCode::CONFLICT);
        let body = aws.body();
        assert_eq!(body["__type"], "ResourceAlreadyExistsException");
        assert_eq!(body["resourceId"], "id-1");
        assert_eq!(body["resourceArn"], "arn:aws:iot:us-east-1:000000000000:thing/t");
        assert_eq!(body["message"], "exists");
    }

    #[test]
    fn shadow_codes_map_to_data_plane_exceptions() {
        for (code, status, name) in [
            (400, 400, "InvalidRequestException"),
            (404, 404, "ResourceNotFoundException"),
            (409, 409, "ConflictException"),
            (413, 413, "RequestEntityTooLargeException"),
            (415, 415, "UnsupportedDocumentEncodingException"),
            (429, 429, "ThrottlingException"),
            (500, 500, "InternalFailureException"),
            (418, 500, "InternalFailureException"),
        ] {
            let (s, n) = shadow_error_type(code);
            assert_eq!((s.as_u16(), n), (status, name), "code {code}");
        }
    }
}
