//! The two layers every non-S3 HTTP request passes: [`authenticate`] (outside the router:
//! who signed it, or an AWS error) and [`authorize`] (on the matched route: may that caller
//! perform the route's action on its resource).
//!
//! Errors are the ones AWS's restJson services send (`x-amzn-ErrorType`): a request without a
//! signature gets `MissingAuthenticationTokenException`, an unknown key or wrong session token
//! `UnrecognizedClientException`, a wrong signature `InvalidSignatureException`, expired
//! temporary credentials `ExpiredTokenException`, a refused action `AccessDeniedException`, all
//! 403. The IAM API answers in its own XML ([`super::query`]), DynamoDB in AWS JSON 1.0 with
//! HTTP 400 ([`crate::dynamodb`]), CloudWatch Logs and Cognito in AWS JSON 1.1 ([`crate::logs`]). Unsigned requests pass
//! authentication untouched, because S3 (behind the routes, as their fallback) serves
//! anonymous requests its own way; a matched non-S3 route refuses them.

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{MatchedPath, RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::query::{self, QueryError};
use super::roles::Refusal;
use super::sigv4::{self, SigV4Error, SignedRequest};
use super::{Iam, Principal, actions};
use crate::http::error::AwsError;
use crate::s3::route::{Addressee, addressee};

/// Who sent a request, as authentication found: `None` for an unsigned request.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

/// How an authentication failure reads in each protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Incomplete,
    UnknownKey,
    Mismatch,
    Expired,
    TooLarge,
}

fn rest_json(failure: Failure, message: String) -> Response {
    let (status, kind) = match failure {
        Failure::Incomplete => (StatusCode::FORBIDDEN, "IncompleteSignatureException"),
        Failure::UnknownKey => (StatusCode::FORBIDDEN, "UnrecognizedClientException"),
        Failure::Mismatch => (StatusCode::FORBIDDEN, "InvalidSignatureException"),
        Failure::Expired => (StatusCode::FORBIDDEN, "ExpiredTokenException"),
        Failure::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLargeException"),
    };
    AwsError::new(status, kind, message).into_response()
}

/// DynamoDB (AWS JSON 1.0) answers every client error with 400 and a namespaced `__type`.
fn json_1_0(failure: Failure, message: String) -> Response {
    let kind = match failure {
        Failure::Incomplete => "IncompleteSignatureException",
        Failure::UnknownKey => "UnrecognizedClientException",
        Failure::Mismatch => "InvalidSignatureException",
        Failure::Expired => "ExpiredTokenException",
        Failure::TooLarge => "RequestEntityTooLarge",
    };
    let mut error = crate::dynamodb::DynamoError::new("com.amazon.coral.service", kind, message);
    if failure == Failure::TooLarge {
        error.status = StatusCode::PAYLOAD_TOO_LARGE.as_u16();
    }
    error.into_response()
}

/// CloudWatch Logs (AWS JSON 1.1) answers with 400 and a bare `__type`.
fn json_1_1(failure: Failure, message: String) -> Response {
    let kind = match failure {
        Failure::Incomplete => "IncompleteSignatureException",
        Failure::UnknownKey => "UnrecognizedClientException",
        Failure::Mismatch => "InvalidSignatureException",
        Failure::Expired => "ExpiredTokenException",
        Failure::TooLarge => "RequestEntityTooLargeException",
    };
    let mut error = crate::logs::LogsError::new(kind, message);
    if failure == Failure::TooLarge {
        error.status = StatusCode::PAYLOAD_TOO_LARGE.as_u16();
    }
    error.into_response()
}

/// CloudWatch answers in CBOR or AWS JSON 1.0, with the query code clients raise.
fn monitoring(headers: &http::HeaderMap, failure: Failure, message: String) -> Response {
    let (status, kind) = match failure {
        Failure::Incomplete => (StatusCode::BAD_REQUEST, "IncompleteSignature"),
        Failure::UnknownKey => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
        Failure::Mismatch => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
        Failure::Expired => (StatusCode::FORBIDDEN, "ExpiredToken"),
        Failure::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
    };
    crate::cloudwatch::http::auth_failure(headers, status, kind, message)
}

fn query_protocol(failure: Failure, message: String) -> Response {
    let (status, code) = match failure {
        Failure::Incomplete => (StatusCode::BAD_REQUEST, "IncompleteSignature"),
        Failure::UnknownKey => (StatusCode::FORBIDDEN, "InvalidClientTokenId"),
        Failure::Mismatch => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch"),
        Failure::Expired => (StatusCode::FORBIDDEN, "ExpiredToken"),
        Failure::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge"),
    };
    QueryError::new(status, code, message).into_response()
}

const INVALID_TOKEN: &str = "The security token included in the request is invalid.";

/// Authenticates a signed request for a service other than S3; the IAM API is answered here.
pub async fn authenticate(State(iam): State<Iam>, req: Request, next: Next) -> Response {
    let service = match addressee(req.headers(), req.uri().query()) {
        Addressee::Other(service) => service,
        Addressee::S3 | Addressee::Unsigned => {
            let mut req = req;
            req.extensions_mut().insert(Caller(None));
            return next.run(req).await;
        }
    };
    let request_headers = req.headers().clone();
    let fail = |failure: Failure, message: String| match service.as_str() {
        "iam" => query_protocol(failure, message),
        "dynamodb" => json_1_0(failure, message),
        "logs" | "cognito-idp" => json_1_1(failure, message),
        "monitoring" => monitoring(&request_headers, failure, message),
        _ => rest_json(failure, message),
    };
    let header = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !header.starts_with("AWS4-HMAC-SHA256") {
        return fail(Failure::Incomplete, "Only AWS4-HMAC-SHA256 header signatures are accepted here".into());
    }
    let auth = match sigv4::parse_authorization(header) {
        Ok(auth) => auth,
        Err(e) => return fail(Failure::Incomplete, e.to_string()),
    };
    let Some(secret) = iam.secret_of(&auth.access_key_id) else {
        return fail(Failure::UnknownKey, INVALID_TOKEN.into());
    };
    let (parts, body) = req.into_parts();
    // Lambda takes function code inline (CreateFunction, UpdateFunctionCode) and CloudWatch Logs
    // a batch of up to 1 MiB of events, JSON-escaped: their own limits.
    let limit = match service.as_str() {
        "lambda" => crate::lambda::MAX_REQUEST_BYTES,
        "logs" => crate::logs::MAX_REQUEST_BYTES,
        _ => crate::http::MAX_REQUEST_BYTES,
    };
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => return fail(Failure::TooLarge, format!("the request body exceeds {limit} bytes")),
    };
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        headers: &parts.headers,
        body: &body,
    };
    if let Err(e) = sigv4::verify_parsed(&signed, &auth, &secret, SystemTime::now()) {
        let failure = match e {
            SigV4Error::Missing | SigV4Error::Incomplete(_) => Failure::Incomplete,
            SigV4Error::Expired { .. } => Failure::Mismatch,
            SigV4Error::Mismatch => Failure::Mismatch,
        };
        return fail(failure, e.to_string());
    }
    let token = parts.headers.get("x-amz-security-token").and_then(|v| v.to_str().ok());
    let principal = match iam.principal(&auth.access_key_id, token) {
        Ok(p) => p,
        Err(Refusal::Expired) => {
            return fail(Failure::Expired, "The security token included in the request is expired".into());
        }
        Err(Refusal::UnknownKey | Refusal::BadToken) => return fail(Failure::UnknownKey, INVALID_TOKEN.into()),
    };
    if service == "iam" {
        return query::handle(&iam, &principal, &body);
    }
    let mut req = Request::from_parts(parts, Body::from(body));
    req.extensions_mut().insert(Caller(Some(principal)));
    next.run(req).await
}

/// Authorizes the caller for the matched route's operation ([`actions::OPERATIONS`]).
pub async fn authorize(
    State(iam): State<Iam>,
    route: MatchedPath,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let principal = match req.extensions().get::<Caller>() {
        Some(Caller(Some(p))) => p.clone(),
        _ => {
            return AwsError::new(
                StatusCode::FORBIDDEN,
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            )
            .into_response();
        }
    };
    if let Principal::Role(session) = &principal {
        let decision = match actions::find(req.method().as_str(), route.as_str()) {
            // The handler reads the resource from the body and authorizes there.
            Some(op) if matches!(op.resource, actions::Resource::InBody(_)) => Ok(()),
            Some(op) => {
                let params: Vec<(&str, &str)> = params.iter().collect();
                let (action, resource) = op.action_and_resource(&params, iam.region(), iam.account());
                actions::authorize_named(&principal, action, &resource)
            }
            None => Err(format!(
                "User: {} is not authorized to perform {} {}: the operation has no IAM action in the local cloud",
                session.assumed_role_arn,
                req.method(),
                route.as_str()
            )),
        };
        if let Err(message) = decision {
            return AwsError::new(StatusCode::FORBIDDEN, "AccessDeniedException", message).into_response();
        }
    }
    next.run(req).await
}
