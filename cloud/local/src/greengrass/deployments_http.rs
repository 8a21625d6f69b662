//! The Greengrass V2 control plane's deployment and core-device operations
//! over restJson1: CreateDeployment, GetDeployment, ListDeployments,
//! CancelDeployment, DeleteDeployment, GetCoreDevice, ListCoreDevices,
//! ListInstalledComponents and ListEffectiveDeployments. Routes, query members,
//! member names and statuses from the Smithy model `greengrassv2` (2020-11-30);
//! timestamps as epoch seconds. The rules live in [`super::deployments`].

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use cloud_api::greengrass::CreateDeploymentRequest;
use cloud_api::greengrass::core_device::CoreDevice;
use cloud_api::greengrass::deployment::{
    ComponentUpdateAction, DEFAULT_COMPONENT_UPDATE_TIMEOUT_S, DEFAULT_CONFIGURATION_VALIDATION_TIMEOUT_S,
    DeploymentPolicies, FailureHandlingPolicy,
};
use cloud_api::greengrass::fleet_status::OverallStatus;
use serde_json::{Value, json};

use super::deployments::{Deployment, Deployments};
use super::error::GreengrassError;
use super::http::{blocking, check_client_token, ok_json, page_response, seconds};
use crate::http::wire::{JsonBody, Label, Params};

/// The deployment and core-device routes, with the service as their state.
pub fn routes(service: Deployments) -> Router {
    Router::new()
        .route("/greengrass/v2/deployments", get(list_deployments).post(create_deployment))
        .route("/greengrass/v2/deployments/{deploymentId}", get(get_deployment).delete(delete_deployment))
        .route("/greengrass/v2/deployments/{deploymentId}/cancel", post(cancel_deployment))
        .route("/greengrass/v2/coreDevices", get(list_core_devices))
        .route("/greengrass/v2/coreDevices/{coreDeviceThingName}", get(get_core_device))
        .route("/greengrass/v2/coreDevices/{coreDeviceThingName}/installedComponents", get(list_installed_components))
        .route("/greengrass/v2/coreDevices/{coreDeviceThingName}/effectiveDeployments", get(list_effective_deployments))
        .with_state(service)
}

async fn create_deployment(
    State(service): State<Deployments>,
    body: Result<JsonBody<CreateDeploymentRequest>, crate::http::error::AwsError>,
) -> Result<Response, GreengrassError> {
    let JsonBody(request) = body.map_err(|e| GreengrassError::cannot_parse(e.message))?;
    if request.target_arn.is_empty() {
        return Err(GreengrassError::field("targetArn", "is required"));
    }
    if let Some(token) = &request.client_token {
        check_client_token(token)?;
    }
    let created = blocking(move || service.create(request)).await?;
    let mut body = json!({"deploymentId": created.deployment_id});
    if let (Some(id), Some(arn)) = (created.iot_job_id, created.iot_job_arn) {
        body["iotJobId"] = json!(id);
        body["iotJobArn"] = json!(arn);
    }
    Ok(ok_json(StatusCode::CREATED, body))
}

/// The policies as GetDeployment shows them: what was asked, defaults filled in.
fn policies(asked: Option<&DeploymentPolicies>) -> Value {
    let asked = asked.cloned().unwrap_or_default();
    let update = asked.component_update_policy.unwrap_or_default();
    let failure = asked.failure_handling_policy.unwrap_or(FailureHandlingPolicy::Rollback);
    let action = update.action.unwrap_or(ComponentUpdateAction::NotifyComponents);
    json!({
        "failureHandlingPolicy": failure,
        "componentUpdatePolicy": {
            "timeoutInSeconds": update.timeout_in_seconds.unwrap_or(DEFAULT_COMPONENT_UPDATE_TIMEOUT_S),
            "action": action,
        },
        "configurationValidationPolicy": {
            "timeoutInSeconds": asked
                .configuration_validation_policy
                .and_then(|p| p.timeout_in_seconds)
                .unwrap_or(DEFAULT_CONFIGURATION_VALIDATION_TIMEOUT_S),
        },
    })
}

/// `Deployment`, the list entry.
fn summary(d: &Deployment) -> Value {
    let mut v = json!({
        "targetArn": d.target_arn,
        "revisionId": d.revision.to_string(),
        "deploymentId": d.deployment_id,
        "deploymentName": d.deployment_name.clone().unwrap_or_default(),
        "creationTimestamp": seconds(d.creation_ms as u64),
        "deploymentStatus": d.status.as_str(),
        "isLatestForTarget": d.is_latest_for_target,
    });
    if let Some(parent) = &d.parent_target_arn {
        v["parentTargetArn"] = json!(parent);
    }
    v
}

async fn get_deployment(State(service): State<Deployments>, Label(id): Label) -> Result<Response, GreengrassError> {
    let d = blocking(move || service.get(&id)).await?;
    let mut body = summary(&d);
    body["components"] = serde_json::to_value(&d.components).unwrap_or_default();
    body["deploymentPolicies"] = policies(d.deployment_policies.as_ref());
    body["iotJobConfiguration"] = json!(d.iot_job_configuration.clone().unwrap_or_default());
    body["tags"] = json!(d.tags);
    if let (Some(id), Some(arn)) = (&d.iot_job_id, &d.iot_job_arn) {
        body["iotJobId"] = json!(id);
        body["iotJobArn"] = json!(arn);
    }
    Ok(ok_json(StatusCode::OK, body))
}

async fn list_deployments(
    State(service): State<Deployments>,
    Params(query): Params,
) -> Result<Response, GreengrassError> {
    let params: BTreeMap<String, String> = query.into_iter().collect();
    let latest_only = match params.get("historyFilter").map(String::as_str) {
        None | Some("LATEST_ONLY") => true,
        Some("ALL") => false,
        Some(other) => {
            return Err(GreengrassError::field("historyFilter", format!("must be ALL or LATEST_ONLY, not {other:?}")));
        }
    };
    let target = params.get("targetArn").cloned();
    let parent = params.get("parentTargetArn").cloned();
    let list = blocking(move || Ok(service.list(target.as_deref(), parent.as_deref(), latest_only))).await?;
    page_response("deployments", list.iter().map(summary).collect(), &params)
}

async fn cancel_deployment(State(service): State<Deployments>, Label(id): Label) -> Result<Response, GreengrassError> {
    let echo = id.clone();
    blocking(move || service.cancel(&id)).await?;
    Ok(ok_json(StatusCode::OK, json!({"message": format!("Deployment {echo} was cancelled.")})))
}

async fn delete_deployment(State(service): State<Deployments>, Label(id): Label) -> Result<Response, GreengrassError> {
    blocking(move || service.delete(&id)).await?;
    Ok(ok_json(StatusCode::NO_CONTENT, Value::Null))
}

fn status_str(status: Option<OverallStatus>) -> &'static str {
    match status {
        Some(OverallStatus::Unhealthy) => "UNHEALTHY",
        _ => "HEALTHY",
    }
}

/// `CoreDevice`, the list entry.
fn core_summary(c: &CoreDevice) -> Value {
    json!({
        "coreDeviceThingName": c.thing_name,
        "status": status_str(c.status),
        "lastStatusUpdateTimestamp": seconds(c.last_status_update_ms as u64),
        "platform": c.platform,
        "architecture": c.architecture,
        "runtime": c.runtime,
    })
}

async fn get_core_device(State(service): State<Deployments>, Label(thing): Label) -> Result<Response, GreengrassError> {
    let core = blocking(move || service.core_device(&thing)).await?;
    let mut body = core_summary(&core);
    body["coreVersion"] = json!(core.core_version);
    body["tags"] = json!({});
    Ok(ok_json(StatusCode::OK, body))
}

async fn list_core_devices(
    State(service): State<Deployments>,
    Params(query): Params,
) -> Result<Response, GreengrassError> {
    let params: BTreeMap<String, String> = query.into_iter().collect();
    let group = match params.get("thingGroupArn") {
        None => None,
        Some(arn) => Some(
            crate::http::wire::arn_resource(arn, "thinggroup")
                .ok_or_else(|| GreengrassError::field("thingGroupArn", format!("{arn:?} is not a thing group ARN")))?
                .to_owned(),
        ),
    };
    let status = match params.get("status").map(String::as_str) {
        None => None,
        Some("HEALTHY") => Some(OverallStatus::Healthy),
        Some("UNHEALTHY") => Some(OverallStatus::Unhealthy),
        Some(other) => {
            return Err(GreengrassError::field("status", format!("must be HEALTHY or UNHEALTHY, not {other:?}")));
        }
    };
    let runtime = params.get("runtime").cloned();
    let cores = blocking(move || service.core_devices(group.as_deref(), status)).await?;
    let cores: Vec<Value> =
        cores.iter().filter(|c| runtime.as_ref().is_none_or(|r| &c.runtime == r)).map(core_summary).collect();
    page_response("coreDevices", cores, &params)
}

async fn list_installed_components(
    State(service): State<Deployments>,
    Label(thing): Label,
    Params(query): Params,
) -> Result<Response, GreengrassError> {
    let params: BTreeMap<String, String> = query.into_iter().collect();
    let roots_only = match params.get("topologyFilter").map(String::as_str) {
        None | Some("ROOT") => true,
        Some("ALL") => false,
        Some(other) => {
            return Err(GreengrassError::field("topologyFilter", format!("must be ALL or ROOT, not {other:?}")));
        }
    };
    let core = blocking(move || service.core_device(&thing)).await?;
    let list: Vec<Value> = core
        .installed(roots_only)
        .map(|c| {
            let mut v = json!({
                "componentName": c.component_name,
                "componentVersion": c.component_version,
                "lifecycleState": c.lifecycle_state,
                "isRoot": c.is_root,
                "lastStatusChangeTimestamp": seconds(c.last_status_change_ms as u64),
                "lastReportedTimestamp": seconds(c.last_reported_ms as u64),
                "lifecycleStatusCodes": c.lifecycle_status_codes,
            });
            if let Some(details) = &c.lifecycle_state_details {
                v["lifecycleStateDetails"] = json!(details);
            }
            if let Some(source) = &c.last_installation_source {
                v["lastInstallationSource"] = json!(source);
            }
            v
        })
        .collect();
    page_response("installedComponents", list, &params)
}

async fn list_effective_deployments(
    State(service): State<Deployments>,
    Label(thing): Label,
    Params(query): Params,
) -> Result<Response, GreengrassError> {
    let params: BTreeMap<String, String> = query.into_iter().collect();
    let list = blocking(move || service.effective_deployments(&thing)).await?;
    let list: Vec<Value> = list
        .into_iter()
        .map(|e| {
            let s = &e.status;
            let mut v = json!({
                "deploymentId": s.deployment_id,
                "deploymentName": e.deployment.as_ref().and_then(|d| d.deployment_name.clone()).unwrap_or_default(),
                "targetArn": e.target_arn,
                "coreDeviceExecutionStatus": s.status,
                "creationTimestamp": seconds(s.created_ms as u64),
                "modifiedTimestamp": seconds(s.modified_ms as u64),
                "statusDetails": {"errorStack": s.error_stack, "errorTypes": s.error_types},
            });
            if let Some(reason) = &s.reason {
                v["reason"] = json!(reason);
            }
            if let Some(d) = &e.deployment
                && let (Some(id), Some(arn)) = (&d.iot_job_id, &d.iot_job_arn)
            {
                v["iotJobId"] = json!(id);
                v["iotJobArn"] = json!(arn);
            }
            v
        })
        .collect();
    page_response("effectiveDeployments", list, &params)
}
