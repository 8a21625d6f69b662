//! Cognito user pools on the local cloud's HTTP endpoint: a layer inside authentication
//! ([`crate::iam::auth::authenticate`]) that answers every request with a Cognito
//! `X-Amz-Target` or signed for `cognito-idp` (both `POST /`), and each pool's JSON Web Key Set
//! at `GET /{userPoolId}/.well-known/jwks.json` (unsigned, as Cognito publishes it); it lets
//! everything else through.
//!
//! The pool is named in the body, not the path, so the caller is authorized here, per
//! operation, on the pool's ARN, as CloudWatch Logs' and DynamoDB's layers do.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{CONTENT_TYPE, Cognito, CognitoError, MAX_REQUEST_BYTES, Operation, TARGET_PREFIX};
use crate::iam::auth::Caller;
use crate::iam::{Principal, actions};
use crate::s3::route::{Addressee, addressee};

impl IntoResponse for CognitoError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        if status.is_server_error() {
            tracing::warn!(error = %self, "Cognito request failed");
        } else {
            tracing::debug!(error = %self, "Cognito request rejected");
        }
        json_response(status, self.body(), CONTENT_TYPE)
    }
}

fn json_response(status: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Whether a request is for Cognito: its target, or its signature's service.
fn for_cognito(req: &Request) -> Option<String> {
    let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if target.starts_with(TARGET_PREFIX) {
        return Some(target.to_owned());
    }
    match addressee(req.headers(), req.uri().query()) {
        Addressee::Other(service) if service == "cognito-idp" => Some(target.to_owned()),
        _ => None,
    }
}

/// The pool id of a JWKS path (`/{userPoolId}/.well-known/jwks.json`).
fn jwks_pool(path: &str) -> Option<&str> {
    let pool = path.strip_prefix('/')?.strip_suffix("/.well-known/jwks.json")?;
    (!pool.is_empty() && !pool.contains('/')).then_some(pool)
}

/// The layer: Cognito's requests and JWKS answered, the others passed on.
pub async fn serve(State(cognito): State<Cognito>, req: Request, next: Next) -> Response {
    if req.method() == Method::GET
        && let Some(pool) = jwks_pool(req.uri().path())
    {
        let pool = pool.to_owned();
        let service = cognito.clone();
        return match crate::http::blocking(move || Ok(service.jwks(&pool))).await {
            Ok(Ok(Some(jwks))) => json_response(StatusCode::OK, jwks.to_string(), "application/json"),
            Ok(Ok(None)) => json_response(
                StatusCode::NOT_FOUND,
                serde_json::json!({"message": "User pool does not exist."}).to_string(),
                "application/json",
            ),
            Ok(Err(e)) => e.into_response(),
            Err(e) => CognitoError::internal(e.message).into_response(),
        };
    }
    let Some(target) = for_cognito(&req) else { return next.run(req).await };
    let Some(op) = Operation::from_target(&target) else {
        return CognitoError::new(
            "UnknownOperationException",
            format!("the local cloud's Cognito does not serve {target:?} (see its README for what it does)"),
        )
        .into_response();
    };
    let principal = match req.extensions().get::<Caller>() {
        Some(Caller(Some(p))) => Some(p.clone()),
        _ if op.signed() => {
            return CognitoError::new("MissingAuthenticationTokenException", "Missing Authentication Token")
                .into_response();
        }
        _ => None,
    };
    let body = match axum::body::to_bytes(req.into_body(), MAX_REQUEST_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            let mut e = CognitoError::new(
                "RequestEntityTooLargeException",
                format!("the request body exceeds {MAX_REQUEST_BYTES} bytes"),
            );
            e.status = StatusCode::PAYLOAD_TOO_LARGE.as_u16();
            return e.into_response();
        }
    };
    let answer = crate::http::blocking(move || Ok(handle(&cognito, principal.as_ref(), op, &body))).await;
    match answer {
        Ok(Ok(json)) => json_response(StatusCode::OK, json.to_string(), CONTENT_TYPE),
        Ok(Err(e)) => e.into_response(),
        Err(e) => CognitoError::internal(e.message).into_response(),
    }
}

/// One request (from `principal` when signed): parsed, authorized, run.
fn handle(cognito: &Cognito, principal: Option<&Principal>, op: Operation, body: &[u8]) -> Result<Value, CognitoError> {
    let request: Value = if body.is_empty() {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| CognitoError::new("SerializationException", format!("the body is not JSON: {e}")))?
    };
    if !request.is_object() {
        return Err(CognitoError::new("SerializationException", "the body is not a JSON object"));
    }
    if let Some(principal) = principal.filter(|_| op.signed()) {
        let action = format!("cognito-idp:{}", op.name());
        actions::authorize_named(principal, &action, &cognito.resource(op, &request))
            .map_err(|m| CognitoError::new("AccessDeniedException", m))?;
    }
    cognito.call(op, &request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pool_id_before_the_well_known_path_is_a_jwks_request() {
        assert_eq!(jwks_pool("/us-east-1_abc/.well-known/jwks.json"), Some("us-east-1_abc"));
        assert_eq!(jwks_pool("//.well-known/jwks.json"), None);
        assert_eq!(jwks_pool("/a/b/.well-known/jwks.json"), None);
        assert_eq!(jwks_pool("/bucket/key"), None);
    }

    #[test]
    fn bodies_that_are_not_json_objects_are_serialization_errors() {
        let store = crate::store::Store::in_memory().unwrap();
        let cognito = Cognito::new(store, crate::time::system(), "us-east-1", "000000000000", "http://127.0.0.1:1");
        for body in [&b"not json"[..], b"[1, 2]", b"\"x\"", &[0xff, 0xfe]] {
            let e = handle(&cognito, Some(&Principal::Admin), Operation::ListUserPools, body).unwrap_err();
            assert_eq!((e.status, e.kind), (400, "SerializationException"), "{body:?}");
        }
        let typed = handle(&cognito, Some(&Principal::Admin), Operation::CreateUserPool, br#"{"PoolName": 7}"#);
        assert_eq!(typed.unwrap_err().kind, "SerializationException");
    }
}
