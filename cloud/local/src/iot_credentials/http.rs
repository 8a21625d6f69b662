//! Role aliases over restJson1 (CreateRoleAlias `POST /role-aliases/{roleAlias}`,
//! DescribeRoleAlias `GET`, UpdateRoleAlias `PUT`, DeleteRoleAlias `DELETE`, ListRoleAliases
//! `GET /role-aliases`; members and errors from `iot.json`), and the credentials endpoint
//! (`GET /role-aliases/{alias}/credentials` on the mutual-TLS listener) answering
//! `{"credentials": {accessKeyId, secretAccessKey, sessionToken, expiration}}` or
//! `{"message"}` with 400, 401, 403 or 404.

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{CredentialsError, IotCredentials, RoleAlias};
use crate::http::AppState;
use crate::http::error::AwsError;
use crate::http::wire::{JsonBody, Label, Params, empty_ok, json_ok, page};
use crate::mtls::Peer;

type Reply = Result<Response, AwsError>;

/// The role-alias routes of the IoT control plane.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/role-aliases", get(list))
        .route("/role-aliases/{roleAlias}", get(describe).post(create).put(update).delete(delete))
}

/// The credentials endpoint, for the mutual-TLS listener.
pub fn provider_routes(service: IotCredentials) -> Router {
    Router::new().route("/role-aliases/{alias}/credentials", get(credentials)).with_state(service)
}

impl From<CredentialsError> for AwsError {
    fn from(e: CredentialsError) -> Self {
        match e {
            CredentialsError::InvalidRequest(m) => AwsError::invalid_request(m),
            CredentialsError::NotFound(m) => AwsError::not_found(m),
            CredentialsError::AlreadyExists(m) => {
                AwsError::new(StatusCode::CONFLICT, "ResourceAlreadyExistsException", m)
            }
            CredentialsError::Unauthorized(m) | CredentialsError::Forbidden(m) => {
                AwsError::new(StatusCode::UNAUTHORIZED, "UnauthorizedException", m)
            }
            CredentialsError::Store(e) => AwsError::internal(e.to_string()),
        }
    }
}

async fn on<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&IotCredentials) -> Result<T, CredentialsError> + Send + 'static,
) -> Result<T, AwsError> {
    let svc = st.iot_credentials.clone();
    crate::http::blocking(move || f(&svc).map_err(AwsError::from)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AliasBody {
    role_arn: Option<String>,
    credential_duration_seconds: Option<u32>,
}

async fn create(State(st): State<AppState>, Label(alias): Label, JsonBody(body): JsonBody<AliasBody>) -> Reply {
    let role_arn = body.role_arn.ok_or_else(|| AwsError::invalid_request("roleArn is required for CreateRoleAlias"))?;
    let a = on(&st, move |s| s.create(&alias, &role_arn, body.credential_duration_seconds)).await?;
    Ok(json_ok(&json!({"roleAlias": a.role_alias, "roleAliasArn": a.role_alias_arn})))
}

async fn describe(State(st): State<AppState>, Label(alias): Label) -> Reply {
    let a = on(&st, move |s| s.describe(&alias)).await?;
    Ok(json_ok(&json!({ "roleAliasDescription": a })))
}

async fn update(State(st): State<AppState>, Label(alias): Label, JsonBody(body): JsonBody<AliasBody>) -> Reply {
    let a: RoleAlias =
        on(&st, move |s| s.update(&alias, body.role_arn.as_deref(), body.credential_duration_seconds)).await?;
    Ok(json_ok(&json!({"roleAlias": a.role_alias, "roleAliasArn": a.role_alias_arn})))
}

async fn delete(State(st): State<AppState>, Label(alias): Label) -> Reply {
    on(&st, move |s| s.delete(&alias)).await?;
    Ok(empty_ok())
}

async fn list(State(st): State<AppState>, params: Params) -> Reply {
    let mut names: Vec<String> = on(&st, |s| s.list()).await?.into_iter().map(|a| a.role_alias).collect();
    if params.bool("isAscendingOrder")? == Some(false) {
        names.reverse();
    }
    let size = params.int("pageSize", 1, 250)?;
    let (names, next) = page(names, params.str("marker"), size, 50)?;
    let mut body = json!({ "roleAliases": names });
    if let Some(next) = next {
        body["nextMarker"] = json!(next);
    }
    Ok(json_ok(&body))
}

fn provider_error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "message": message.into() }))).into_response()
}

async fn credentials(
    State(service): State<IotCredentials>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(alias): Path<String>,
    headers: HeaderMap,
) -> Response {
    let thing = match headers.get("x-amzn-iot-thingname").map(|v| v.to_str()) {
        None => None,
        Some(Ok(t)) if !t.trim().is_empty() => Some(t.trim().to_owned()),
        Some(_) => return provider_error(StatusCode::BAD_REQUEST, "x-amzn-iot-thingname must be a thing name"),
    };
    let issued = tokio::task::spawn_blocking(move || service.issue(&alias, &peer.certificate_id, thing.as_deref()))
        .await
        .unwrap_or_else(|_| Err(CredentialsError::Forbidden("the credentials provider failed".into())));
    match issued {
        Ok(session) => {
            let expiration =
                time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(session.expiration_ms) * 1_000_000)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_default();
            axum::Json(json!({"credentials": {
                "accessKeyId": session.access_key_id,
                "secretAccessKey": session.secret_access_key,
                "sessionToken": session.session_token,
                "expiration": expiration,
            }}))
            .into_response()
        }
        Err(CredentialsError::InvalidRequest(m)) => provider_error(StatusCode::BAD_REQUEST, m),
        Err(CredentialsError::NotFound(m)) => provider_error(StatusCode::NOT_FOUND, m),
        Err(CredentialsError::Unauthorized(m)) => provider_error(StatusCode::UNAUTHORIZED, m),
        Err(CredentialsError::Forbidden(m) | CredentialsError::AlreadyExists(m)) => {
            provider_error(StatusCode::FORBIDDEN, m)
        }
        Err(CredentialsError::Store(e)) => provider_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
