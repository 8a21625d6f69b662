//! The dashboard on the HTTP endpoint: a layer that answers every request under `/dashboard`
//! and lets everything else through.
//!
//! - `GET /dashboard/` the page, `/dashboard/app.js`, `/dashboard/style.css`, `/dashboard/favicon.svg`
//!   (compiled in);
//! - `GET /dashboard/config.json` the pool and app client ids the page signs in with (public,
//!   as a web app's configuration is), 503 while the pool or client does not exist;
//! - `GET /dashboard/api/{panel}` with `Authorization: Bearer <IdToken>`: `whoami`, `fleet`,
//!   `telemetry`, `shadows`, `anomalies`, `deployments`, `alarms`, `checklist`; 401 without a
//!   valid token (`WWW-Authenticate: Bearer`), 404 for another panel;
//! - `GET /dashboard/api/evidence/{path}` with the same token: a file of the latest audit (the
//!   directory of its `checklist.json`) that the audit's `manifest.json` lists, as text (JSON,
//!   Markdown or plain); 400 for a path that is not plain and relative (`..`, absolute), 404 for
//!   a file the manifest does not list.
//!
//! Only GET (and HEAD) are served: the dashboard changes nothing (405 otherwise). Every answer
//! forbids caching and framing, and the page's Content-Security-Policy allows only its own
//! script and style sheet.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Dashboard;

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const STYLE_CSS: &str = include_str!("static/style.css");
/// A pump's impeller, so the browser asks for no `/favicon.ico` (which would reach S3).
const FAVICON_SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="#2456a6"/><path d="M8 2v12M2 8h12" stroke="#fff" stroke-width="2"/></svg>"##;

/// The page's Content-Security-Policy: its own script, style and fetches only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The panels of the API, by path segment.
pub const PANELS: [&str; 8] =
    ["whoami", "fleet", "telemetry", "shadows", "anomalies", "deployments", "alarms", "checklist"];

fn with_headers(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

fn json_answer(status: StatusCode, body: Value) -> Response {
    with_headers((status, body.to_string()).into_response(), "application/json")
}

fn unauthorized(reason: &str) -> Response {
    let mut response = json_answer(StatusCode::UNAUTHORIZED, json!({"message": format!("Unauthorized: {reason}")}));
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"dashboard\", error=\"invalid_token\""),
    );
    response
}

/// The bearer token of a request, if it has one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The layer: the dashboard's paths answered, the others passed on.
pub async fn serve(State(dashboard): State<Dashboard>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path != "/dashboard" && !path.starts_with("/dashboard/") {
        return next.run(req).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response =
            json_answer(StatusCode::METHOD_NOT_ALLOWED, json!({"message": "the dashboard is read-only: GET only"}));
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path.as_str() {
        "/dashboard" => {
            let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
            response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/dashboard/"));
            response
        }
        "/dashboard/" | "/dashboard/index.html" => {
            let mut response = with_headers(INDEX_HTML.into_response(), "text/html; charset=utf-8");
            response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            response
        }
        "/dashboard/app.js" => with_headers(APP_JS.into_response(), "text/javascript; charset=utf-8"),
        "/dashboard/style.css" => with_headers(STYLE_CSS.into_response(), "text/css; charset=utf-8"),
        "/dashboard/favicon.svg" => with_headers(FAVICON_SVG.into_response(), "image/svg+xml"),
        "/dashboard/config.json" => {
            let board = dashboard.clone();
            match crate::http::blocking(move || Ok(board.sign_in())).await {
                Ok(Ok(sign_in)) => json_answer(
                    StatusCode::OK,
                    json!({"userPoolId": sign_in.user_pool_id, "clientId": sign_in.client_id}),
                ),
                Ok(Err(reason)) => json_answer(StatusCode::SERVICE_UNAVAILABLE, json!({"message": reason})),
                Err(e) => json_answer(StatusCode::INTERNAL_SERVER_ERROR, json!({"message": e.message})),
            }
        }
        _ => match path.strip_prefix("/dashboard/api/") {
            Some(panel) => api(dashboard, panel.to_owned(), req.headers()).await,
            None => json_answer(StatusCode::NOT_FOUND, json!({"message": format!("no such page: {path}")})),
        },
    }
}

async fn api(dashboard: Dashboard, panel: String, headers: &HeaderMap) -> Response {
    let Some(token) = bearer(headers).map(str::to_owned) else {
        return unauthorized("sign in: the request has no bearer token");
    };
    if let Some(relative) = panel.strip_prefix("evidence/").map(str::to_owned) {
        return evidence(dashboard, token, relative).await;
    }
    if !PANELS.contains(&panel.as_str()) {
        return json_answer(StatusCode::NOT_FOUND, json!({"message": format!("no such panel: {panel}")}));
    }
    let answer = crate::http::blocking(move || {
        let identity = match dashboard.authenticate(&token) {
            Ok(identity) => identity,
            Err(reason) => return Ok(Err(reason)),
        };
        Ok(Ok(match panel.as_str() {
            "whoami" => json!({"username": identity.username, "sub": identity.sub}),
            "fleet" => dashboard.fleet(),
            "telemetry" => dashboard.telemetry(),
            "shadows" => dashboard.shadows(),
            "anomalies" => dashboard.anomalies(),
            "deployments" => dashboard.deployments(),
            "alarms" => dashboard.alarms(),
            _ => dashboard.checklist(),
        }))
    })
    .await;
    match answer {
        Ok(Ok(body)) => json_answer(StatusCode::OK, body),
        Ok(Err(reason)) => {
            tracing::debug!(%reason, "dashboard request refused");
            unauthorized(&reason)
        }
        Err(e) => json_answer(StatusCode::INTERNAL_SERVER_ERROR, json!({"message": e.message})),
    }
}

/// An audit's file, to a signed-in viewer.
async fn evidence(dashboard: Dashboard, token: String, relative: String) -> Response {
    let answer = crate::http::blocking(move || {
        if let Err(reason) = dashboard.authenticate(&token) {
            return Ok(Err(reason));
        }
        Ok(Ok(dashboard.evidence(&relative)))
    })
    .await;
    match answer {
        Ok(Ok(Ok(file))) => {
            let content_type = match file.content_type {
                "application/json" => "application/json; charset=utf-8",
                "text/markdown" => "text/markdown; charset=utf-8",
                _ => "text/plain; charset=utf-8",
            };
            with_headers(file.text.into_response(), content_type)
        }
        Ok(Ok(Err(refused))) => {
            let status = match refused {
                super::EvidenceRefused::BadPath(_) => StatusCode::BAD_REQUEST,
                super::EvidenceRefused::NotFound(_) => StatusCode::NOT_FOUND,
            };
            json_answer(status, json!({"message": refused.to_string()}))
        }
        Ok(Err(reason)) => unauthorized(&reason),
        Err(e) => json_answer(StatusCode::INTERNAL_SERVER_ERROR, json!({"message": e.message})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_authorization_carries_a_token() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc.def.ghi"));
        assert_eq!(bearer(&headers), Some("abc.def.ghi"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  "));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("AWS4-HMAC-SHA256 Credential=x"));
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn the_page_loads_only_its_own_script_and_style() {
        assert!(INDEX_HTML.contains(r#"src="app.js""#) && INDEX_HTML.contains(r#"href="style.css""#));
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="), "inline code would break the CSP");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"), "nothing from elsewhere");
    }
}
