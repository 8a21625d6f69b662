//! CloudWatch on the local cloud's HTTP endpoint: a layer inside authentication
//! ([`crate::iam::auth::authenticate`]) that answers `POST /service/GraniteServiceVersion20100801/operation/{Operation}`
//! (Smithy RPC v2 CBOR) and requests with a `GraniteServiceVersion20100801.{Operation}`
//! `X-Amz-Target` (AWS JSON 1.0), and lets everything else through. The caller is authorized
//! here, per operation and alarm ([`super::CloudWatch::authorize`]), as DynamoDB's layer does.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::wire::{self, Out};
use super::{CloudWatch, CwError, Operation, TARGET_PREFIX};
use crate::iam::auth::Caller;

/// Which encoding a request came in, and its answer goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Smithy RPC v2 CBOR.
    Cbor,
    /// AWS JSON 1.0.
    Json,
}

impl Encoding {
    /// How a request in this encoding is answered: `body` with `status`.
    pub fn respond(self, status: StatusCode, body: &Out) -> Response {
        let (bytes, content_type) = match self {
            Encoding::Cbor => (body.to_cbor_bytes(), "application/cbor"),
            Encoding::Json => (body.to_json().to_string().into_bytes(), "application/x-amz-json-1.0"),
        };
        let mut response = (status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if self == Encoding::Cbor {
            headers.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
        }
        response
    }

    /// An error in this encoding, with the query-compatible code clients raise.
    pub fn error(self, e: &CwError) -> Response {
        let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_server_error() {
            tracing::warn!(error = %e, "CloudWatch request failed");
        } else {
            tracing::debug!(error = %e, "CloudWatch request rejected");
        }
        let mut response = self.respond(status, &e.body());
        let fault = if status.is_server_error() { "Receiver" } else { "Sender" };
        if let Ok(v) = HeaderValue::from_str(&format!("{};{fault}", e.code)) {
            response.headers_mut().insert("x-amzn-query-error", v);
        }
        response
    }

    /// The encoding of a request for CloudWatch, and the operation's name; `None`: not CloudWatch's.
    pub fn of(method: &axum::http::Method, path: &str, headers: &HeaderMap) -> Option<(Encoding, String)> {
        let rpc = format!("/service/{TARGET_PREFIX}/operation/");
        if let Some(name) = path.strip_prefix(rpc.as_str())
            && method == axum::http::Method::POST
        {
            return Some((Encoding::Cbor, name.to_owned()));
        }
        let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok())?;
        let name = target.strip_prefix(TARGET_PREFIX)?.strip_prefix('.')?;
        Some((Encoding::Json, name.to_owned()))
    }
}

/// An authentication failure for a request signed for `monitoring`, in its encoding (CBOR when
/// it says `smithy-protocol`).
pub fn auth_failure(headers: &HeaderMap, status: StatusCode, kind: &'static str, message: String) -> Response {
    let encoding = if headers.contains_key("smithy-protocol") { Encoding::Cbor } else { Encoding::Json };
    encoding.error(&CwError { status: status.as_u16(), shape: kind, code: kind, message })
}

/// The layer: CloudWatch's requests answered, the others passed on.
pub async fn serve(State(cw): State<CloudWatch>, req: Request, next: Next) -> Response {
    let Some((encoding, name)) = Encoding::of(req.method(), req.uri().path(), req.headers()) else {
        return next.run(req).await;
    };
    let principal = match req.extensions().get::<Caller>() {
        Some(Caller(Some(p))) => p.clone(),
        _ => {
            let e = CwError::new(
                403,
                "MissingAuthenticationTokenException",
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            );
            return encoding.error(&e);
        }
    };
    let Some(op) = Operation::from_name(&name) else {
        let e = CwError::new(
            400,
            "UnknownOperationException",
            "InvalidAction",
            format!("the local cloud's CloudWatch does not serve {name:?} (see its README for what it does)"),
        );
        return encoding.error(&e);
    };
    let body = match axum::body::to_bytes(req.into_body(), crate::http::MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            let e = CwError::new(
                413,
                "RequestEntityTooLarge",
                "RequestEntityTooLarge",
                format!("the request body exceeds {} bytes", crate::http::MAX_REQUEST_BYTES),
            );
            return encoding.error(&e);
        }
    };
    let answer = crate::http::blocking(move || {
        let request = match encoding {
            Encoding::Cbor => wire::decode_cbor(&body).map_err(|e| CwError::serialization(e.0)),
            Encoding::Json if body.is_empty() => Ok(serde_json::json!({})),
            Encoding::Json => serde_json::from_slice(&body)
                .map_err(|e| CwError::serialization(format!("the body is not a JSON object: {e}"))),
        };
        Ok(request.and_then(|request| {
            cw.authorize(&principal, op, &request)?;
            cw.call(op, request)
        }))
    })
    .await;
    match answer {
        Ok(Ok(out)) => encoding.respond(StatusCode::OK, &out),
        Ok(Err(e)) => encoding.error(&e),
        Err(e) => encoding.error(&CwError::internal(e.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_recognised_by_path_or_target() {
        let post = axum::http::Method::POST;
        let none = HeaderMap::new();
        assert_eq!(
            Encoding::of(&post, "/service/GraniteServiceVersion20100801/operation/PutMetricData", &none),
            Some((Encoding::Cbor, "PutMetricData".into()))
        );
        assert_eq!(
            Encoding::of(&axum::http::Method::GET, "/service/GraniteServiceVersion20100801/operation/X", &none),
            None
        );
        let mut json = HeaderMap::new();
        json.insert("x-amz-target", HeaderValue::from_static("GraniteServiceVersion20100801.ListMetrics"));
        assert_eq!(Encoding::of(&post, "/", &json), Some((Encoding::Json, "ListMetrics".into())));
        let mut dynamo = HeaderMap::new();
        dynamo.insert("x-amz-target", HeaderValue::from_static("DynamoDB_20120810.Scan"));
        assert_eq!(Encoding::of(&post, "/", &dynamo), None);
    }

    #[test]
    fn errors_carry_the_query_code_the_clients_raise() {
        let response = Encoding::Cbor.error(&CwError::invalid_value("bad"));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()["x-amzn-query-error"], "InvalidParameterValue;Sender");
        assert_eq!(response.headers()["smithy-protocol"], "rpc-v2-cbor");
        assert_eq!(response.headers()["content-type"], "application/cbor");
    }
}
