//! CloudWatch Logs on the local cloud's HTTP endpoint: a layer inside authentication
//! ([`crate::iam::auth::authenticate`]) that answers every request with a CloudWatch Logs
//! `X-Amz-Target` or signed for `logs` — both `POST /`, which no other route serves — and lets
//! everything else through.
//!
//! The log group is named in the body, not the path, so the route table of
//! [`crate::iam::actions`] cannot authorize it: the caller is authorized here, per operation,
//! on the group's or stream's ARN ([`super::action_and_resource`]), as DynamoDB's layer does.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{CONTENT_TYPE, Logs, LogsError, MAX_REQUEST_BYTES, Operation, TARGET_PREFIX};
use crate::iam::auth::Caller;
use crate::iam::{Principal, actions};
use crate::s3::route::{Addressee, addressee};

impl IntoResponse for LogsError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_server_error() {
            tracing::warn!(error = %self, "CloudWatch Logs request failed");
        } else {
            tracing::debug!(error = %self, "CloudWatch Logs request rejected");
        }
        json_response(status, self.body())
    }
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

/// Whether a request is for CloudWatch Logs: its target, or its signature's service.
fn for_logs(req: &Request) -> Option<String> {
    let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if target.starts_with(TARGET_PREFIX) {
        return Some(target.to_owned());
    }
    match addressee(req.headers(), req.uri().query()) {
        Addressee::Other(service) if service == "logs" => Some(target.to_owned()),
        _ => None,
    }
}

/// The layer: CloudWatch Logs' requests answered, the others passed on.
pub async fn serve(State(logs): State<Logs>, req: Request, next: Next) -> Response {
    let Some(target) = for_logs(&req) else { return next.run(req).await };
    let principal = match req.extensions().get::<Caller>() {
        Some(Caller(Some(p))) => p.clone(),
        _ => {
            return LogsError::new("MissingAuthenticationTokenException", "Request is missing Authentication Token")
                .into_response();
        }
    };
    let Some(op) = Operation::from_target(&target) else {
        return LogsError::new(
            "UnknownOperationException",
            format!("the local cloud's CloudWatch Logs does not serve {target:?} (see its README for what it does)"),
        )
        .into_response();
    };
    // Authentication has read the body already (a signed request's digest), within the limit.
    let body = match axum::body::to_bytes(req.into_body(), MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            let mut e = LogsError::new(
                "RequestEntityTooLargeException",
                format!("the request body exceeds {MAX_REQUEST_BYTES} bytes"),
            );
            e.status = StatusCode::PAYLOAD_TOO_LARGE.as_u16();
            return e.into_response();
        }
    };
    let answer = crate::http::blocking(move || Ok(handle(&logs, &principal, op, &body))).await;
    match answer {
        Ok(Ok(json)) => json_response(StatusCode::OK, json.to_string()),
        Ok(Err(e)) => e.into_response(),
        Err(e) => LogsError::internal(e.message).into_response(),
    }
}

/// One request from `principal`: parsed, authorized, run.
fn handle(logs: &Logs, principal: &Principal, op: Operation, body: &[u8]) -> Result<Value, LogsError> {
    // An empty body is an empty request (an operation with only optional members).
    let request: Value = if body.is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| LogsError::serialization(format!("the body is not JSON: {e}")))?
    };
    if !request.is_object() {
        return Err(LogsError::serialization("the body is not a JSON object"));
    }
    let (action, resource) = super::action_and_resource(op, &request, logs.region(), logs.account());
    actions::authorize_named(principal, &action, &resource).map_err(LogsError::access_denied)?;
    logs.call(op, &request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_are_not_json_objects_are_serialization_errors() {
        let logs = Logs::memory(crate::time::system(), "us-east-1", "000000000000").unwrap();
        for body in [&b"not json"[..], b"[1, 2]", b"\"logGroupName\"", &[0xff, 0xfe]] {
            let e = handle(&logs, &Principal::Admin, Operation::DescribeLogGroups, body).unwrap_err();
            assert_eq!((e.status, e.kind), (400, "SerializationException"), "{body:?}");
        }
        let typed = handle(&logs, &Principal::Admin, Operation::CreateLogGroup, br#"{"logGroupName": 7}"#);
        assert_eq!(typed.unwrap_err().kind, "SerializationException");
        let listed = handle(&logs, &Principal::Admin, Operation::DescribeLogGroups, b"").unwrap();
        assert_eq!(listed["logGroups"], serde_json::json!([]));
    }
}
