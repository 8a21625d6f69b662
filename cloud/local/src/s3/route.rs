//! Telling S3 apart on the shared HTTP port.
//!
//! Path-style S3 URLs (`/{bucket}/{key}`) overlap every IoT route (a bucket may
//! be called `things`), so the path cannot decide. The signature can: SigV4
//! names the signing service in its credential scope
//! (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`, in the `Authorization`
//! header or the presigned `X-Amz-Credential` query parameter), and SigV2
//! (`Authorization: AWS …`, `AWSAccessKeyId=`) and browser POST uploads
//! (`multipart/form-data`) are S3's alone. So, per request:
//! 1. signed for `s3` (or SigV2, or a form POST): S3, before any IoT route;
//! 2. otherwise the IoT router; a request no route matches goes to S3 when it
//!    is unsigned (S3 then refuses it unless a presigned form applies), and is
//!    `UnknownOperationException` when it was signed for another service.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use s3s::service::S3Service;

/// Who a request is for, judged by its signature alone (nothing is verified here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressee {
    /// S3: SigV4 scope `s3`, SigV2, or a form POST.
    S3,
    /// Signed for another service (the scope's service name, e.g. `iot`, `iotdata`).
    Other(String),
    /// No signature at all.
    Unsigned,
}

/// The service of a SigV4 credential (`AKID/DATE/REGION/SERVICE/aws4_request`,
/// or SigV4a's `AKID/DATE/SERVICE/aws4_request`): the part before the terminator.
pub fn scope_service(credential: &str) -> Option<&str> {
    let mut parts = credential.rsplit('/');
    (parts.next()? == "aws4_request").then_some(())?;
    parts.next().filter(|s| !s.is_empty())
}

/// Classifies a request by its `Authorization` header, `Content-Type` and query string.
pub fn addressee(headers: &HeaderMap, query: Option<&str>) -> Addressee {
    if let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let auth = auth.trim_start();
        if auth.starts_with("AWS ") {
            return Addressee::S3;
        }
        if auth.starts_with("AWS4-") {
            let service = auth
                .split([' ', ','])
                .find_map(|part| part.trim().strip_prefix("Credential="))
                .and_then(scope_service)
                .unwrap_or_default();
            return if service == "s3" { Addressee::S3 } else { Addressee::Other(service.to_string()) };
        }
    }
    for (name, value) in form_urlencoded(query.unwrap_or_default()) {
        if name.eq_ignore_ascii_case("X-Amz-Credential") {
            let service = scope_service(&value).unwrap_or_default();
            return if service == "s3" { Addressee::S3 } else { Addressee::Other(service.to_string()) };
        }
        if name == "AWSAccessKeyId" {
            return Addressee::S3;
        }
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"));
    if form { Addressee::S3 } else { Addressee::Unsigned }
}

fn form_urlencoded(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        (decode(name), decode(value))
    })
}

/// Hands a request to s3s and its answer back to axum.
pub async fn call(service: &S3Service, req: Request) -> Response {
    let req = req.map(s3s::Body::http_body_unsync);
    match service.call(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(e) => {
            tracing::error!(error = ?e, "S3 request failed");
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
                       <Message>We encountered an internal error. Please try again.</Message></Error>";
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "application/xml")], xml).into_response()
        }
    }
}

async fn signed_for_s3(State(service): State<S3Service>, req: Request, next: Next) -> Response {
    match addressee(req.headers(), req.uri().query()) {
        Addressee::S3 => call(&service, req).await,
        _ => next.run(req).await,
    }
}

async fn unmatched(State(service): State<S3Service>, req: Request) -> Response {
    match addressee(req.headers(), req.uri().query()) {
        Addressee::Other(_) => crate::http::unknown_operation(req).await,
        Addressee::S3 | Addressee::Unsigned => call(&service, req).await,
    }
}

/// What the IoT router does with a request none of its routes match (see the module docs).
pub fn fallback(service: S3Service) -> Router {
    Router::new().fallback(unmatched).with_state(service)
}

/// Puts S3 in front of `app`: requests signed for S3 never reach its routes.
pub fn front(app: Router, service: S3Service) -> Router {
    Router::new().fallback_service(app).layer(middleware::from_fn_with_state(service, signed_for_s3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    const V4: &str = "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/{}/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";

    #[test]
    fn the_credential_scope_names_the_service() {
        assert_eq!(scope_service("AKID/20240101/us-east-1/s3/aws4_request"), Some("s3"));
        assert_eq!(scope_service("AKID/20240101/iotdata/aws4_request"), Some("iotdata"), "SigV4a has no region");
        assert_eq!(scope_service("AKID/20240101/us-east-1/s3/aws4"), None);
        assert_eq!(scope_service("AKID/20240101/us-east-1//aws4_request"), None);
        assert_eq!(scope_service(""), None);
    }

    #[test]
    fn header_signatures_pick_the_service() {
        let s3 = with(&[("authorization", &V4.replace("{}", "s3"))]);
        assert_eq!(addressee(&s3, Some("list-type=2")), Addressee::S3);
        let iot = with(&[("authorization", &V4.replace("{}", "iot"))]);
        assert_eq!(addressee(&iot, None), Addressee::Other("iot".into()));
        let data = with(&[("authorization", &V4.replace("{}", "iotdata"))]);
        assert_eq!(
            addressee(&data, Some("X-Amz-Credential=A%2F2%2Fr%2Fs3%2Faws4_request")),
            Addressee::Other("iotdata".into()),
            "the header wins"
        );
        assert_eq!(addressee(&with(&[("authorization", "AWS AKID:c2ln")]), None), Addressee::S3, "SigV2 is S3's");
        assert_eq!(
            addressee(&with(&[("authorization", "AWS4-HMAC-SHA256 garbage")]), None),
            Addressee::Other(String::new())
        );
    }

    #[test]
    fn query_signatures_and_form_posts_pick_s3() {
        let none = HeaderMap::new();
        let presigned = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00";
        assert_eq!(addressee(&none, Some(presigned)), Addressee::S3);
        assert_eq!(
            addressee(&none, Some("x-amz-credential=AKID%2F20240101%2Fus-east-1%2Fiot%2Faws4_request")),
            Addressee::Other("iot".into())
        );
        assert_eq!(addressee(&none, Some("AWSAccessKeyId=AKID&Expires=1&Signature=x")), Addressee::S3);
        assert_eq!(addressee(&none, Some("qos=1")), Addressee::Unsigned);
        assert_eq!(addressee(&none, None), Addressee::Unsigned);
        let form = with(&[("content-type", "multipart/form-data; boundary=x")]);
        assert_eq!(addressee(&form, None), Addressee::S3);
        assert_eq!(addressee(&with(&[("content-type", "application/json")]), None), Addressee::Unsigned);
    }
}
