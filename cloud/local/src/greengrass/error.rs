//! Greengrass V2 exceptions on the wire (restJson1; shapes and statuses from the Smithy model
//! `greengrassv2`, 2020-11-30). Unlike the IoT exceptions of [`crate::http::error`], these carry
//! members the SDKs read: `reason` and `fields` of `ValidationException`, `resourceId` and
//! `resourceType` of `ResourceNotFoundException` and `ConflictException`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::http::error::ERROR_TYPE_HEADER;

/// `ValidationExceptionReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationReason {
    /// `CANNOT_PARSE`: the input is not well-formed (base64, JSON, YAML).
    CannotParse,
    /// `FIELD_VALIDATION_FAILED`: a member breaks a rule; `fields` says which.
    FieldValidationFailed,
    /// `OTHER`.
    Other,
}

impl ValidationReason {
    fn as_str(self) -> &'static str {
        match self {
            ValidationReason::CannotParse => "CANNOT_PARSE",
            ValidationReason::FieldValidationFailed => "FIELD_VALIDATION_FAILED",
            ValidationReason::Other => "OTHER",
        }
    }
}

/// A Greengrass exception. Each variant is one shape of the model; the caller's next step is in
/// its doc line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GreengrassError {
    /// `ValidationException` (400): fix the request.
    #[error("ValidationException: {message}")]
    Validation {
        /// What is wrong.
        message: String,
        /// `reason`.
        reason: ValidationReason,
        /// `fields`: (name, message) pairs.
        fields: Vec<(String, String)>,
    },
    /// `AccessDeniedException` (403): the certificate's policy lacks the action.
    #[error("AccessDeniedException: {0}")]
    AccessDenied(String),
    /// `ResourceNotFoundException` (404).
    #[error("ResourceNotFoundException: {message}")]
    NotFound {
        /// What was not found.
        message: String,
        /// `resourceId`.
        resource_id: String,
        /// `resourceType`.
        resource_type: String,
    },
    /// `ConflictException` (409): the resource exists or is in another state.
    #[error("ConflictException: {message}")]
    Conflict {
        /// The conflict.
        message: String,
        /// `resourceId`.
        resource_id: String,
        /// `resourceType`.
        resource_type: String,
    },
    /// `InternalServerException` (500): retry later.
    #[error("InternalServerException: {0}")]
    Internal(String),
}

impl GreengrassError {
    /// A `ValidationException` about one field.
    pub fn field(name: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        GreengrassError::Validation {
            message: format!("{name}: {message}"),
            reason: ValidationReason::FieldValidationFailed,
            fields: vec![(name.to_string(), message)],
        }
    }

    /// A `ValidationException` for input that does not parse.
    pub fn cannot_parse(message: impl Into<String>) -> Self {
        GreengrassError::Validation {
            message: message.into(),
            reason: ValidationReason::CannotParse,
            fields: Vec::new(),
        }
    }

    /// A `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>, resource_id: &str, resource_type: &str) -> Self {
        GreengrassError::NotFound {
            message: message.into(),
            resource_id: resource_id.to_string(),
            resource_type: resource_type.to_string(),
        }
    }

    fn status_and_shape(&self) -> (StatusCode, &'static str) {
        match self {
            GreengrassError::Validation { .. } => (StatusCode::BAD_REQUEST, "ValidationException"),
            GreengrassError::AccessDenied(_) => (StatusCode::FORBIDDEN, "AccessDeniedException"),
            GreengrassError::NotFound { .. } => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
            GreengrassError::Conflict { .. } => (StatusCode::CONFLICT, "ConflictException"),
            GreengrassError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException"),
        }
    }

    /// The JSON body: `message`, `__type`, and the shape's members.
    pub fn body(&self) -> Value {
        let (_, shape) = self.status_and_shape();
        let mut body = Map::new();
        body.insert("__type".into(), json!(shape));
        match self {
            GreengrassError::Validation { message, reason, fields } => {
                body.insert("message".into(), json!(message));
                body.insert("reason".into(), json!(reason.as_str()));
                if !fields.is_empty() {
                    let fields: Vec<Value> = fields.iter().map(|(n, m)| json!({"name": n, "message": m})).collect();
                    body.insert("fields".into(), Value::Array(fields));
                }
            }
            GreengrassError::NotFound { message, resource_id, resource_type }
            | GreengrassError::Conflict { message, resource_id, resource_type } => {
                body.insert("message".into(), json!(message));
                body.insert("resourceId".into(), json!(resource_id));
                body.insert("resourceType".into(), json!(resource_type));
            }
            GreengrassError::AccessDenied(message) | GreengrassError::Internal(message) => {
                body.insert("message".into(), json!(message));
            }
        }
        Value::Object(body)
    }
}

impl IntoResponse for GreengrassError {
    fn into_response(self) -> Response {
        let (status, shape) = self.status_and_shape();
        if status.is_server_error() {
            tracing::warn!(error = %self, "Greengrass request failed");
        } else {
            tracing::debug!(error = %self, "Greengrass request rejected");
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        response.headers_mut().insert(ERROR_TYPE_HEADER, HeaderValue::from_static(shape));
        response
    }
}

impl From<crate::http::error::AwsError> for GreengrassError {
    /// The shared extractors' rejections (bad query, unreadable body) become `ValidationException`s.
    fn from(e: crate::http::error::AwsError) -> Self {
        if e.status.is_server_error() {
            GreengrassError::Internal(e.message)
        } else {
            GreengrassError::Validation { message: e.message, reason: ValidationReason::Other, fields: Vec::new() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_the_members_of_each_shape() {
        let v = GreengrassError::field("inlineRecipe", "bad").body();
        assert_eq!(v["reason"], "FIELD_VALIDATION_FAILED");
        assert_eq!(v["fields"][0], json!({"name": "inlineRecipe", "message": "bad"}));
        let n = GreengrassError::not_found("gone", "arn:x", "componentVersion").body();
        assert_eq!((n["resourceId"].as_str(), n["resourceType"].as_str()), (Some("arn:x"), Some("componentVersion")));
        assert_eq!(n["__type"], "ResourceNotFoundException");
        let r = GreengrassError::AccessDenied("no".into()).into_response();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[ERROR_TYPE_HEADER], "AccessDeniedException");
    }
}
