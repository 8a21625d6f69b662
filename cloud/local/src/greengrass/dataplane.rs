//! The Greengrass data plane for core devices: HTTPS with mutual TLS, as AWS serves it on port
//! 8443 of `greengrass-ats.iot.{region}.amazonaws.com`. The nucleus calls it with its device
//! certificate and no SigV4 (served by [`crate::mtls`]) (`GreengrassServiceClientFactory`: anonymous credentials, an HTTP
//! client holding the certificate and key). Every request is authorized by the IoT policies
//! attached to that certificate, which must be registered and ACTIVE (Greengrass V2 Developer
//! Guide, "AWS IoT policies for data plane operations"; [`crate::registry::Registry::authorize_greengrass`]).
//!
//! Operations (Smithy model `greengrassv2`): ResolveComponentCandidates
//! (`POST /greengrass/v2/resolveComponentCandidates`, choice in [`super::resolve`]) and
//! GetComponentVersionArtifact (`GET /greengrass/v2/components/{arn}/artifacts/{artifactName+}`
//! → a presigned S3 URL). The TLS handshakes run in their own tasks, so a client that stalls
//! its handshake holds up no one else.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use cloud_api::policy::GreengrassAction;
use greengrass_recipe::DevicePlatform;
use serde::Deserialize;
use serde_json::json;

use super::Greengrass;
use super::arn::ComponentArn;
use super::components::ComponentCatalog as _;
use super::error::GreengrassError;
use super::resolve::{Offered, Unresolved, choose};
use crate::http::wire::JsonBody;
use crate::mtls::Peer;

/// How long a presigned artifact URL stays valid.
pub const ARTIFACT_URL_VALIDITY: Duration = Duration::from_secs(3600);
/// The data-plane routes.
pub fn routes(service: Greengrass) -> Router {
    Router::new()
        .route("/greengrass/v2/resolveComponentCandidates", post(resolve_component_candidates))
        .route("/greengrass/v2/components/{arn}/artifacts/{*artifact_name}", get(get_component_version_artifact))
        .with_state(service)
}

/// Allows the call, or answers `AccessDeniedException`.
fn authorize(gg: &Greengrass, peer: &Peer, action: GreengrassAction, resource: &str) -> Result<(), GreengrassError> {
    if gg.registry.authorize_greengrass(&peer.certificate_id, action, resource).is_allowed() {
        Ok(())
    } else {
        Err(GreengrassError::AccessDenied(format!(
            "the certificate {} is not ACTIVE or no policy attached to it allows {} on {resource}",
            peer.certificate_id,
            action.as_str()
        )))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResolveRequest {
    platform: Option<PlatformIn>,
    component_candidates: Option<Vec<CandidateIn>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlatformIn {
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateIn {
    component_name: Option<String>,
    component_version: Option<String>,
    #[serde(default)]
    version_requirements: BTreeMap<String, String>,
}

async fn resolve_component_candidates(
    State(gg): State<Greengrass>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<JsonBody<ResolveRequest>, crate::http::error::AwsError>,
) -> Result<Response, GreengrassError> {
    authorize(&gg, &peer, GreengrassAction::ResolveComponentCandidates, "*")?;
    let JsonBody(req) = body.map_err(|e| GreengrassError::cannot_parse(e.message))?;
    let candidates = req.component_candidates.unwrap_or_default();
    if candidates.is_empty() {
        return Err(GreengrassError::field("componentCandidates", "give at least one component candidate"));
    }
    let mut platform = DevicePlatform::default();
    for (k, v) in req.platform.unwrap_or_default().attributes {
        platform = platform.with(&k, &v);
    }
    let mut resolved = Vec::new();
    for (i, c) in candidates.into_iter().enumerate() {
        let name = c
            .component_name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| GreengrassError::field(&format!("componentCandidates[{i}].componentName"), "is required"))?;
        let entries = gg.components.component_versions(&name);
        let offered: Vec<Offered<'_>> =
            entries.iter().map(|e| Offered { recipe: &e.recipe, deployable: e.record.is_deployable() }).collect();
        let chosen = choose(&name, c.component_version.as_deref(), &c.version_requirements, &platform, &offered)
            .map_err(|e| match e {
                Unresolved::BadRequirement { .. } => {
                    GreengrassError::field(&format!("componentCandidates[{i}].versionRequirements"), e.to_string())
                }
                Unresolved::BadVersion(_) => {
                    GreengrassError::field(&format!("componentCandidates[{i}].componentVersion"), e.to_string())
                }
                Unresolved::NoUsableVersion { .. } | Unresolved::NoPlatformClaim { .. } => {
                    GreengrassError::not_found(e.to_string(), &name, "component")
                }
            })?;
        let entry = entries
            .iter()
            .find(|e| e.recipe.version == chosen.version)
            .ok_or_else(|| GreengrassError::Internal("the chosen version vanished".into()))?;
        let recipe = serde_json::to_vec(&entry.record.recipe).map_err(|e| GreengrassError::Internal(e.to_string()))?;
        resolved.push(json!({
            "arn": entry.record.arn,
            "componentName": entry.record.name,
            "componentVersion": entry.record.version,
            // The nucleus parses this as JSON ("cloud sends JSON", ComponentManager).
            "recipe": base64::engine::general_purpose::STANDARD.encode(recipe),
            "vendorGuidance": "ACTIVE",
        }));
    }
    Ok(axum::Json(json!({"resolvedComponentVersions": resolved})).into_response())
}

async fn get_component_version_artifact(
    State(gg): State<Greengrass>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((arn, artifact_name)): Path<(String, String)>,
    params: axum::extract::Query<BTreeMap<String, String>>,
) -> Result<Response, GreengrassError> {
    ComponentArn::parse_version(&arn).map_err(|e| GreengrassError::field("arn", e.to_string()))?;
    authorize(&gg, &peer, GreengrassAction::GetComponentVersionArtifact, &arn)?;
    if let Some(t) = params.get("s3EndpointType").filter(|t| !matches!(t.as_str(), "REGIONAL" | "GLOBAL")) {
        return Err(GreengrassError::field("s3EndpointType", format!("must be REGIONAL or GLOBAL, not {t:?}")));
    }
    let entry = gg.components.get(&arn)?;
    let artifact_name = artifact_name.trim_start_matches('/');
    let artifact = entry
        .record
        .artifacts
        .iter()
        .find(|a| a.name() == artifact_name || a.file_name() == artifact_name)
        .ok_or_else(|| {
            GreengrassError::not_found(
                format!("Component version {arn} has no artifact named {artifact_name:?}"),
                artifact_name,
                "artifact",
            )
        })?;
    let Some((bucket, key)) = &artifact.s3 else {
        return Err(GreengrassError::not_found(
            format!("The artifact {} is not stored in this local cloud's S3", artifact.uri),
            artifact_name,
            "artifact",
        ));
    };
    let url = gg
        .objects
        .presign_get(bucket, key, ARTIFACT_URL_VALIDITY)
        .map_err(|e| GreengrassError::Internal(format!("presigning {}: {e}", artifact.uri)))?;
    Ok(axum::Json(json!({"preSignedUrl": url})).into_response())
}
