//! DynamoDB on the local cloud's HTTP endpoint: a layer inside authentication
//! ([`crate::iam::auth::authenticate`]) that answers every request with a DynamoDB
//! `X-Amz-Target` or signed for `dynamodb` — both `POST /`, which no other route serves — and
//! lets everything else through.
//!
//! The table is named in the body, not the path, so the route table of
//! [`crate::iam::actions`] cannot authorize it: the caller is authorized here, per operation,
//! on the table's ARN ([`super::DynamoDb::action_and_resource`]), as S3's front end does for
//! its own requests.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{CONTENT_TYPE, DynamoDb, DynamoError, Operation, TARGET_PREFIX};
use crate::iam::auth::Caller;
use crate::iam::{Principal, actions};
use crate::s3::route::{Addressee, addressee};

impl IntoResponse for DynamoError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_server_error() {
            tracing::warn!(error = %self, "DynamoDB request failed");
        } else {
            tracing::debug!(error = %self, "DynamoDB request rejected");
        }
        json_response(status, self.body)
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Whether a request is for DynamoDB: its target, or its signature's service.
fn for_dynamodb(req: &Request) -> Option<String> {
    let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if target.starts_with(TARGET_PREFIX) {
        return Some(target.to_owned());
    }
    match addressee(req.headers(), req.uri().query()) {
        Addressee::Other(service) if service == "dynamodb" => Some(target.to_owned()),
        _ => None,
    }
}

/// The layer: DynamoDB's requests answered, the others passed on.
pub async fn serve(State(db): State<DynamoDb>, req: Request, next: Next) -> Response {
    let Some(target) = for_dynamodb(&req) else { return next.run(req).await };
    let principal = match req.extensions().get::<Caller>() {
        Some(Caller(Some(p))) => p.clone(),
        _ => {
            return DynamoError::new(
                "com.amazon.coral.service",
                "MissingAuthenticationTokenException",
                "Request is missing Authentication Token",
            )
            .into_response();
        }
    };
    let Some(op) = Operation::from_target(&target) else {
        return DynamoError::unknown_operation(&target).into_response();
    };
    // Authentication has read the body already (a signed request's digest), within the limit.
    let body = match axum::body::to_bytes(req.into_body(), crate::http::MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return DynamoError::new(
                "com.amazon.coral.service",
                "RequestEntityTooLarge",
                format!("the request body exceeds {} bytes", crate::http::MAX_REQUEST_BYTES),
            )
            .into_response();
        }
    };
    let answer = crate::http::blocking(move || Ok(handle(&db, &principal, op, &body))).await;
    match answer {
        Ok(Ok(json)) => json_response(StatusCode::OK, json),
        Ok(Err(e)) => e.into_response(),
        Err(e) => DynamoError {
            status: e.status.as_u16(),
            body: serde_json::json!({"__type": format!("com.amazon.coral.service#{}", e.error_type), "message": e.message})
                .to_string(),
            kind: e.error_type.to_owned(),
            message: e.message,
        }
        .into_response(),
    }
}

/// One request from `principal`: parsed, authorized, run.
fn handle(db: &DynamoDb, principal: &Principal, op: Operation, body: &[u8]) -> Result<String, DynamoError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| DynamoError::serialization(format!("the body is not a JSON object: {e}")))?;
    let Value::Object(members) = &request else {
        return Err(DynamoError::serialization("the body is not a JSON object"));
    };
    let (action, resource) = db.action_and_resource(op, members);
    actions::authorize_named(principal, &action, &resource).map_err(DynamoError::access_denied)?;
    db.call(op, request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_are_not_json_objects_are_serialization_errors() {
        let db = DynamoDb::memory("us-east-1", "000000000000").unwrap();
        for body in [&b"not json"[..], b"[1, 2]", b"\"TableName\"", b"", &[0xff, 0xfe]] {
            let e = handle(&db, &Principal::Admin, Operation::Scan, body).unwrap_err();
            assert_eq!((e.status, e.kind.as_str()), (400, "SerializationException"), "{body:?}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = handle(&db, &Principal::Admin, Operation::Scan, deep.as_bytes()).unwrap_err();
        assert_eq!(e.kind, "SerializationException");
        let listed = handle(&db, &Principal::Admin, Operation::ListTables, b"{}").unwrap();
        assert_eq!(serde_json::from_str::<Value>(&listed).unwrap()["TableNames"], serde_json::json!([]));
    }
}
