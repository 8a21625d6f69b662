//! The fleet-provisioning control plane over restJson1: CreateProvisioningTemplate,
//! DescribeProvisioningTemplate, ListProvisioningTemplates, UpdateProvisioningTemplate,
//! DeleteProvisioningTemplate, CreateProvisioningTemplateVersion,
//! DescribeProvisioningTemplateVersion, ListProvisioningTemplateVersions,
//! DeleteProvisioningTemplateVersion, CreateProvisioningClaim. URIs, members and errors follow
//! `iot.json` (AWS IoT, 2015-05-28); timestamps are epoch seconds.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{CreateTemplate, ProvisioningError, ProvisioningService, TemplateRecord, UpdateTemplate};
use crate::http::AppState;
use crate::http::error::AwsError;
use crate::http::wire::{JsonBody, Label, Params, empty_ok, json_ok, page};

type Reply = Result<Response, AwsError>;

/// Routes of the provisioning control plane.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/provisioning-templates", post(create_template).get(list_templates))
        .route(
            "/provisioning-templates/{templateName}",
            get(describe_template).patch(update_template).delete(delete_template),
        )
        .route("/provisioning-templates/{templateName}/versions", post(create_version).get(list_versions))
        .route(
            "/provisioning-templates/{templateName}/versions/{versionId}",
            get(describe_version).delete(delete_version),
        )
        .route("/provisioning-templates/{templateName}/provisioning-claim", post(create_claim))
}

impl From<ProvisioningError> for AwsError {
    fn from(e: ProvisioningError) -> Self {
        match e {
            ProvisioningError::InvalidRequest(m) => AwsError::invalid_request(m),
            ProvisioningError::NotFound(m) => AwsError::not_found(m),
            ProvisioningError::AlreadyExists { message, id, arn } => AwsError {
                status: StatusCode::CONFLICT,
                error_type: "ResourceAlreadyExistsException",
                message,
                existing: Some((id, arn)),
            },
            ProvisioningError::VersionsLimitExceeded(m) => {
                AwsError::new(StatusCode::CONFLICT, "VersionsLimitExceededException", m)
            }
            ProvisioningError::DeleteConflict(m) => AwsError::new(StatusCode::CONFLICT, "DeleteConflictException", m),
            ProvisioningError::Internal(m) => AwsError::internal(m),
        }
    }
}

async fn on<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&ProvisioningService) -> Result<T, ProvisioningError> + Send + 'static,
) -> Result<T, AwsError> {
    let svc = st.provisioning.clone();
    crate::http::blocking(move || f(&svc).map_err(AwsError::from)).await
}

fn two_labels(
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<(String, i64), AwsError> {
    let Path((name, version)) =
        path.map_err(|e| AwsError::invalid_request(format!("invalid URI label: {}", e.body_text())))?;
    let version =
        version.parse().map_err(|_| AwsError::invalid_request(format!("versionId {version:?} is not an integer")))?;
    Ok((name, version))
}

fn page_json(member: &str, items: Vec<Value>, params: &Params) -> Result<Value, AwsError> {
    let size = params.int("maxResults", 1, 250)?;
    let (items, next) = page(items, params.str("nextToken"), size, 50)?;
    let mut body = json!({ member: items });
    if let Some(next) = next {
        body["nextToken"] = json!(next);
    }
    Ok(body)
}

fn summary(t: &TemplateRecord) -> Value {
    let mut v = json!({
        "templateArn": t.arn,
        "templateName": t.name,
        "creationDate": t.creation_date,
        "lastModifiedDate": t.last_modified_date,
        "enabled": t.enabled,
        "type": t.template_type,
    });
    if let Some(d) = &t.description {
        v["description"] = json!(d);
    }
    v
}

async fn create_template(State(st): State<AppState>, JsonBody(req): JsonBody<CreateTemplate>) -> Reply {
    let t = on(&st, move |s| s.create_template(req)).await?;
    Ok(json_ok(&json!({"templateArn": t.arn, "templateName": t.name, "defaultVersionId": t.default_version_id})))
}

async fn describe_template(State(st): State<AppState>, Label(name): Label) -> Reply {
    let t = on(&st, move |s| s.describe_template(&name)).await?;
    let mut v = summary(&t);
    v["defaultVersionId"] = json!(t.default_version_id);
    v["templateBody"] = json!(t.body());
    v["provisioningRoleArn"] = json!(t.provisioning_role_arn);
    if let Some(h) = &t.hook {
        v["preProvisioningHook"] = json!(h);
    }
    Ok(json_ok(&v))
}

async fn list_templates(State(st): State<AppState>, params: Params) -> Reply {
    let items = on(&st, |s| Ok(s.list_templates())).await?;
    Ok(json_ok(&page_json("templates", items.iter().map(summary).collect(), &params)?))
}

async fn update_template(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<UpdateTemplate>,
) -> Reply {
    on(&st, move |s| s.update_template(&name, req)).await?;
    Ok(empty_ok())
}

async fn delete_template(State(st): State<AppState>, Label(name): Label) -> Reply {
    on(&st, move |s| s.delete_template(&name)).await?;
    Ok(empty_ok())
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateVersion {
    #[serde(default)]
    template_body: String,
}

async fn create_version(
    State(st): State<AppState>,
    Label(name): Label,
    params: Params,
    JsonBody(req): JsonBody<CreateVersion>,
) -> Reply {
    let set_as_default = match params.str("setAsDefault") {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(AwsError::invalid_request(format!("setAsDefault {other:?} is not a boolean"))),
    };
    let (t, id) = on(&st, move |s| s.create_version(&name, req.template_body, set_as_default)).await?;
    Ok(json_ok(&json!({
        "templateArn": t.arn,
        "templateName": t.name,
        "versionId": id,
        "isDefaultVersion": t.default_version_id == id,
    })))
}

async fn describe_version(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Reply {
    let (name, id) = two_labels(path)?;
    let t = on(&st, move |s| s.describe_template(&name)).await?;
    let v = t
        .versions
        .iter()
        .find(|v| v.id == id)
        .ok_or_else(|| AwsError::not_found(format!("version {id} of template {} does not exist", t.name)))?;
    Ok(json_ok(&json!({
        "versionId": v.id,
        "creationDate": v.creation_date,
        "templateBody": v.body,
        "isDefaultVersion": v.id == t.default_version_id,
    })))
}

async fn list_versions(State(st): State<AppState>, Label(name): Label, params: Params) -> Reply {
    let t = on(&st, move |s| s.describe_template(&name)).await?;
    let items = t
        .versions
        .iter()
        .map(|v| json!({"versionId": v.id, "creationDate": v.creation_date, "isDefaultVersion": v.id == t.default_version_id}))
        .collect();
    Ok(json_ok(&page_json("versions", items, &params)?))
}

async fn delete_version(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Reply {
    let (name, id) = two_labels(path)?;
    on(&st, move |s| s.delete_version(&name, id)).await?;
    Ok(empty_ok())
}

async fn create_claim(State(st): State<AppState>, Label(name): Label) -> Reply {
    let (cert, keys, expires) = on(&st, move |s| s.create_claim(&name)).await?;
    Ok(json_ok(&json!({
        "certificateId": cert.id,
        "certificatePem": cert.pem,
        "keyPair": {"PublicKey": keys.public_key_pem, "PrivateKey": keys.private_key_pem},
        "expiration": expires,
    })))
}
