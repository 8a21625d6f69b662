//! Lambda over restJson1 (`lambda.json`, API version 2015-03-31): CreateFunction
//! `POST /2015-03-31/functions` (201), ListFunctions `GET` there, GetFunction and DeleteFunction
//! (204) on `/2015-03-31/functions/{FunctionName}`, GetFunctionConfiguration and
//! UpdateFunctionConfiguration on `…/configuration`, UpdateFunctionCode `PUT …/code`, Invoke
//! `POST …/invocations`, AddPermission (201) and GetPolicy on `…/policy`, RemovePermission
//! (204) `DELETE …/policy/{StatementId}`.
//!
//! Invoke answers as Lambda does: 200 with the function's response and
//! `X-Amz-Executed-Version`, or 200 with `X-Amz-Function-Error: Unhandled` and the error
//! document when the function failed; 202 for `Event`, 204 for `DryRun`.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::runtime::Outcome;
use super::{CodeSource, ConfigurationUpdate, InvocationType, Lambda, LambdaError, NewFunction, Permission};
use crate::http::error::AwsError;
use crate::http::wire::{Body, Label, Params, page};

type Reply = Result<Response, AwsError>;

/// Lambda's routes (authorized by the caller's router).
pub fn routes(lambda: Lambda) -> Router {
    Router::new()
        .route("/2015-03-31/functions", get(list).post(create))
        .route("/2015-03-31/functions/{FunctionName}", get(get_function).delete(delete_function))
        .route("/2015-03-31/functions/{FunctionName}/configuration", get(configuration).put(update_configuration))
        .route("/2015-03-31/functions/{FunctionName}/code", put(update_code))
        .route("/2015-03-31/functions/{FunctionName}/invocations", post(invoke))
        .route("/2015-03-31/functions/{FunctionName}/policy", get(get_policy).post(add_permission))
        .route("/2015-03-31/functions/{FunctionName}/policy/{StatementId}", delete(remove_permission))
        .layer(DefaultBodyLimit::max(super::MAX_REQUEST_BYTES))
        .with_state(lambda)
}

impl From<LambdaError> for AwsError {
    fn from(e: LambdaError) -> Self {
        let (status, kind) = match &e {
            LambdaError::InvalidParameter(_) => (StatusCode::BAD_REQUEST, "InvalidParameterValueException"),
            LambdaError::InvalidContent(_) => (StatusCode::BAD_REQUEST, "InvalidRequestContentException"),
            LambdaError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException"),
            LambdaError::NotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
            LambdaError::Conflict(_) => (StatusCode::CONFLICT, "ResourceConflictException"),
            LambdaError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException"),
            LambdaError::Service(_) => (StatusCode::INTERNAL_SERVER_ERROR, "ServiceException"),
        };
        AwsError::new(status, kind, e.to_string())
    }
}

/// A JSON request body; a malformed one is Lambda's `InvalidRequestContentException`.
struct Json<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Default> axum::extract::FromRequest<S> for Json<T> {
    type Rejection = AwsError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let Body(bytes) = Body::from_request(req, state).await?;
        crate::http::wire::parse_json(&bytes).map(Json).map_err(|mut e| {
            if e.status == StatusCode::BAD_REQUEST {
                e.error_type = "InvalidRequestContentException";
            }
            e
        })
    }
}

async fn on<T: Send + 'static>(
    lambda: &Lambda,
    f: impl FnOnce(&Lambda) -> Result<T, LambdaError> + Send + 'static,
) -> Result<T, AwsError> {
    let lambda = lambda.clone();
    crate::http::blocking(move || f(&lambda).map_err(AwsError::from)).await
}

fn status_json(status: StatusCode, body: &Value) -> Response {
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// `Code` of CreateFunction, and the code members of UpdateFunctionCode.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CodeInput {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    s3_key: Option<String>,
    s3_object_version: Option<String>,
    image_uri: Option<String>,
    revision_id: Option<String>,
}

impl CodeInput {
    fn source(self) -> Result<CodeSource, LambdaError> {
        if self.image_uri.is_some() {
            return Err(LambdaError::InvalidParameter(
                "container images are not supported by the local cloud: give a .zip (ZipFile or S3Bucket/S3Key)".into(),
            ));
        }
        if self.s3_object_version.is_some() {
            return Err(LambdaError::InvalidParameter(
                "S3ObjectVersion is not supported: the local S3 keeps no versions".into(),
            ));
        }
        match (self.zip_file, self.s3_bucket, self.s3_key) {
            (Some(zip), None, None) => base64::engine::general_purpose::STANDARD
                .decode(zip.as_bytes())
                .map(CodeSource::Zip)
                .map_err(|e| LambdaError::InvalidParameter(format!("ZipFile is not base64: {e}"))),
            (None, Some(bucket), Some(key)) => Ok(CodeSource::S3 { bucket, key }),
            _ => Err(LambdaError::InvalidParameter(
                "Please provide a source for function code: ZipFile, or S3Bucket and S3Key".into(),
            )),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnvironmentInput {
    variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateInput {
    function_name: Option<String>,
    /// The members CreateFunction shares with UpdateFunctionConfiguration.
    #[serde(flatten)]
    configuration: ConfigurationInput,
    architectures: Option<Vec<String>>,
    code: Option<CodeInput>,
    package_type: Option<String>,
    layers: Option<Vec<String>>,
}

fn required(value: Option<String>, member: &str) -> Result<String, AwsError> {
    value.ok_or_else(|| AwsError::from(LambdaError::InvalidParameter(format!("{member} is required"))))
}

async fn create(State(lambda): State<Lambda>, Json(body): Json<CreateInput>) -> Reply {
    if body.package_type.as_deref().is_some_and(|p| p != "Zip") {
        return Err(LambdaError::InvalidParameter(
            "PackageType must be Zip: the local cloud does not run container images".into(),
        )
        .into());
    }
    if body.layers.as_ref().is_some_and(|l| !l.is_empty()) {
        return Err(LambdaError::InvalidParameter("Layers are not supported by the local cloud".into()).into());
    }
    let new = NewFunction {
        name: required(body.function_name, "FunctionName")?,
        runtime: body.configuration.runtime,
        role: required(body.configuration.role, "Role")?,
        handler: body.configuration.handler,
        description: body.configuration.description,
        timeout: body.configuration.timeout,
        memory_size: body.configuration.memory_size,
        environment: body.configuration.environment.and_then(|e| e.variables),
        architectures: body.architectures,
        code: body.code.map(CodeInput::source).transpose()?,
    };
    let f = on(&lambda, move |l| l.create(new)).await?;
    Ok(status_json(StatusCode::CREATED, &f.configuration()))
}

async fn get_function(State(lambda): State<Lambda>, Label(name): Label) -> Reply {
    let f = on(&lambda, move |l| l.get(&name)).await?;
    Ok(status_json(StatusCode::OK, &json!({"Configuration": f.configuration(), "Code": {"RepositoryType": "S3"}})))
}

async fn configuration(State(lambda): State<Lambda>, Label(name): Label) -> Reply {
    let f = on(&lambda, move |l| l.get(&name)).await?;
    Ok(status_json(StatusCode::OK, &f.configuration()))
}

async fn list(State(lambda): State<Lambda>, params: Params) -> Reply {
    let all: Vec<Value> = on(&lambda, |l| l.list()).await?.iter().map(super::Function::configuration).collect();
    let size = params.int("MaxItems", 1, 10000)?;
    let (functions, next) = page(all, params.str("Marker"), size, 50)?;
    let mut body = json!({ "Functions": functions });
    if let Some(next) = next {
        body["NextMarker"] = json!(next);
    }
    Ok(status_json(StatusCode::OK, &body))
}

async fn update_code(State(lambda): State<Lambda>, Label(name): Label, Json(body): Json<CodeInput>) -> Reply {
    let revision = body.revision_id.clone();
    let source = body.source()?;
    let f = on(&lambda, move |l| l.update_code(&name, source, revision.as_deref())).await?;
    Ok(status_json(StatusCode::OK, &f.configuration()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigurationInput {
    role: Option<String>,
    handler: Option<String>,
    description: Option<String>,
    timeout: Option<i64>,
    memory_size: Option<i64>,
    environment: Option<EnvironmentInput>,
    runtime: Option<String>,
    revision_id: Option<String>,
}

async fn update_configuration(
    State(lambda): State<Lambda>,
    Label(name): Label,
    Json(body): Json<ConfigurationInput>,
) -> Reply {
    let update = ConfigurationUpdate {
        role: body.role,
        handler: body.handler,
        description: body.description,
        timeout: body.timeout,
        memory_size: body.memory_size,
        // An `Environment` without `Variables` clears them.
        environment: body.environment.map(|e| e.variables.unwrap_or_default()),
        runtime: body.runtime,
        revision_id: body.revision_id,
    };
    let f = on(&lambda, move |l| l.update_configuration(&name, update)).await?;
    Ok(status_json(StatusCode::OK, &f.configuration()))
}

async fn delete_function(State(lambda): State<Lambda>, Label(name): Label, params: Params) -> Reply {
    if let Some(q) = params.str("Qualifier").filter(|q| *q != super::LATEST) {
        return Err(LambdaError::NotFound(format!("Function not found: {name}:{q}")).into());
    }
    on(&lambda, move |l| l.delete(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The function named in the path, with the `Qualifier` query parameter applied.
fn qualified(name: &str, params: &Params) -> String {
    match params.str("Qualifier") {
        Some(q) => format!("{name}:{q}"),
        None => name.to_owned(),
    }
}

async fn invoke(
    State(lambda): State<Lambda>,
    Label(name): Label,
    params: Params,
    headers: HeaderMap,
    Body(payload): Body,
) -> Reply {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let kind = InvocationType::parse(header("x-amz-invocation-type"))?;
    let name = qualified(&name, &params);
    let f = on(&lambda, move |l| l.get(&name)).await?;
    match lambda.invoke(f, kind, payload).await? {
        None if kind == InvocationType::Event => Ok(StatusCode::ACCEPTED.into_response()),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        Some(outcome) => Ok(invocation_response(outcome)),
    }
}

fn invocation_response(outcome: Outcome) -> Response {
    let mut response = match outcome {
        Outcome::Response(body) => (StatusCode::OK, body).into_response(),
        Outcome::Error(doc) => {
            let mut r = (StatusCode::OK, Bytes::from(doc.to_string())).into_response();
            r.headers_mut().insert("x-amz-function-error", axum::http::HeaderValue::from_static("Unhandled"));
            r
        }
    };
    let headers = response.headers_mut();
    headers.insert("x-amz-executed-version", axum::http::HeaderValue::from_static(super::LATEST));
    headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    response
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PermissionInput {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    source_arn: Option<String>,
    source_account: Option<String>,
    revision_id: Option<String>,
}

async fn add_permission(
    State(lambda): State<Lambda>,
    Label(name): Label,
    params: Params,
    Json(body): Json<PermissionInput>,
) -> Reply {
    let permission = Permission {
        statement_id: required(body.statement_id, "StatementId")?,
        action: required(body.action, "Action")?,
        principal: required(body.principal, "Principal")?,
        source_arn: body.source_arn,
        source_account: body.source_account,
        revision_id: body.revision_id,
    };
    let name = qualified(&name, &params);
    let statement = on(&lambda, move |l| l.add_permission(&name, permission)).await?;
    Ok(status_json(StatusCode::CREATED, &json!({ "Statement": statement.to_string() })))
}

async fn get_policy(State(lambda): State<Lambda>, Label(name): Label, params: Params) -> Reply {
    let name = qualified(&name, &params);
    let (policy, revision) = on(&lambda, move |l| l.get_policy(&name)).await?;
    Ok(status_json(StatusCode::OK, &json!({"Policy": policy.to_string(), "RevisionId": revision})))
}

async fn remove_permission(
    State(lambda): State<Lambda>,
    Path((name, statement_id)): Path<(String, String)>,
    params: Params,
) -> Reply {
    let name = qualified(&name, &params);
    let revision = params.str("RevisionId").map(str::to_owned);
    on(&lambda, move |l| l.remove_permission(&name, &statement_id, revision.as_deref())).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
