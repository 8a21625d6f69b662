//! The Jobs control plane over restJson1: CreateJob, DescribeJob, ListJobs,
//! CancelJob, DeleteJob, GetJobDocument, DescribeJobExecution,
//! ListJobExecutionsForJob, ListJobExecutionsForThing, CancelJobExecution.
//! URIs, query names, members and error shapes follow `iot.json` (AWS IoT,
//! 2015-05-28). Timestamps are epoch seconds.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use cloud_api::jobs::model::StatusDetails;
use cloud_api::jobs::{Execution, Job, JobExecutionStatus, JobStatus, is_valid_job_id};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{CreateJob, JobFilter, JobRecord, JobsError, JobsService, TargetSelection};
use crate::http::AppState;
use crate::http::error::AwsError;
use crate::http::wire::{JsonBody, Label, Params, check_name, empty_ok, json_ok, page};

type Reply = Result<Response, AwsError>;

/// Routes of the Jobs control plane.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list_jobs))
        .route("/jobs/{jobId}", get(describe_job).put(create_job).delete(delete_job))
        .route("/jobs/{jobId}/cancel", put(cancel_job))
        .route("/jobs/{jobId}/job-document", get(get_job_document))
        .route("/jobs/{jobId}/things", get(list_executions_for_job))
        .route("/things/{thingName}/jobs", get(list_executions_for_thing))
        .route("/things/{thingName}/jobs/{jobId}", get(describe_execution))
        .route("/things/{thingName}/jobs/{jobId}/cancel", put(cancel_execution))
}

impl From<JobsError> for AwsError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::InvalidRequest(m) => AwsError::invalid_request(m),
            JobsError::NotFound(m) => AwsError::not_found(m),
            JobsError::AlreadyExists { id, arn } => AwsError {
                status: StatusCode::CONFLICT,
                error_type: "ResourceAlreadyExistsException",
                message: format!("job {id} already exists"),
                existing: Some((id, arn)),
            },
            JobsError::VersionConflict(m) => AwsError::new(StatusCode::CONFLICT, "VersionConflictException", m),
            JobsError::InvalidStateTransition(m) => {
                AwsError::new(StatusCode::CONFLICT, "InvalidStateTransitionException", m)
            }
            JobsError::Internal(m) => AwsError::internal(m),
        }
    }
}

/// Runs a (blocking) service call on the blocking pool.
async fn on_jobs<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&JobsService) -> Result<T, JobsError> + Send + 'static,
) -> Result<T, AwsError> {
    let jobs = st.jobs.clone();
    crate::http::blocking(move || f(&jobs).map_err(AwsError::from)).await
}

fn check_job_id(id: &str) -> Result<(), AwsError> {
    if is_valid_job_id(id) {
        Ok(())
    } else {
        Err(AwsError::invalid_request(format!("jobId {id:?} must match [a-zA-Z0-9_-]{{1,64}}")))
    }
}

fn two_labels(
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
) -> Result<(String, String), AwsError> {
    let Path(labels) = path.map_err(|e| AwsError::invalid_request(format!("invalid URI label: {}", e.body_text())))?;
    Ok(labels)
}

/// One page of `items` as `{member: [...], nextToken}`, the token left out on the last page.
fn page_json(member: &str, items: Vec<Value>, token: Option<&str>, size: Option<i64>) -> Result<Value, AwsError> {
    let (items, next) = page(items, token, size, 50)?;
    let mut body = json!({ member: items });
    if let Some(next) = next {
        body["nextToken"] = json!(next);
    }
    Ok(body)
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn enum_param<T: for<'de> Deserialize<'de>>(params: &Params, name: &str) -> Result<Option<T>, AwsError> {
    params
        .str(name)
        .map(|raw| {
            serde_json::from_value(Value::String(raw.to_owned()))
                .map_err(|_| AwsError::invalid_request(format!("{name} {raw:?} is not a valid value")))
        })
        .transpose()
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobIdentity {
    job_arn: String,
    job_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

async fn create_job(State(st): State<AppState>, Label(job_id): Label, JsonBody(req): JsonBody<CreateJob>) -> Reply {
    check_job_id(&job_id)?;
    let description = req.description.clone();
    let id = job_id.clone();
    let job_arn = on_jobs(&st, move |jobs| jobs.create_job(&id, req)).await?;
    Ok(json_ok(&JobIdentity { job_arn, job_id, description }))
}

fn process_details(jobs: &JobsService, job_id: &str) -> Value {
    let mut counts: BTreeMap<JobExecutionStatus, u64> = BTreeMap::new();
    for (e, _) in jobs.executions(Some(job_id), None) {
        *counts.entry(e.status).or_default() += 1;
    }
    let n = |s| counts.get(&s).copied().unwrap_or(0);
    json!({
        "numberOfCanceledThings": n(JobExecutionStatus::Canceled),
        "numberOfSucceededThings": n(JobExecutionStatus::Succeeded),
        "numberOfFailedThings": n(JobExecutionStatus::Failed),
        "numberOfRejectedThings": n(JobExecutionStatus::Rejected),
        "numberOfQueuedThings": n(JobExecutionStatus::Queued),
        "numberOfInProgressThings": n(JobExecutionStatus::InProgress),
        "numberOfRemovedThings": n(JobExecutionStatus::Removed),
        "numberOfTimedOutThings": n(JobExecutionStatus::TimedOut),
    })
}

fn status_str(status: JobStatus) -> Value {
    serde_json::to_value(status).unwrap_or(Value::Null)
}

fn job_json(jobs: &JobsService, job: &Job, r: &JobRecord) -> Value {
    let id = &job.spec.job_id;
    let mut v = json!({
        "jobArn": jobs.job_arn(id),
        "jobId": id,
        "targetSelection": r.target_selection(),
        "status": status_str(job.status),
        "forceCanceled": r.force_canceled,
        "targets": r.request.targets,
        "createdAt": secs(r.created_at_ms),
        "lastUpdatedAt": secs(r.last_updated_at_ms),
        "jobProcessDetails": process_details(jobs, id),
        "isConcurrent": false,
    });
    let optional = [
        ("description", r.request.description.clone().map(Value::String)),
        ("reasonCode", r.reason_code.clone().map(Value::String)),
        ("comment", r.comment.clone().map(Value::String)),
        ("presignedUrlConfig", r.request.presigned_url_config.clone()),
        ("jobExecutionsRolloutConfig", r.request.job_executions_rollout_config.clone()),
        ("abortConfig", r.request.abort_config.clone()),
        ("timeoutConfig", r.request.timeout_config.clone()),
        ("jobExecutionsRetryConfig", r.request.job_executions_retry_config.clone()),
        ("namespaceId", r.request.namespace_id.clone().map(Value::String)),
        ("completedAt", r.completed_at_ms.map(|ms| json!(secs(ms)))),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            v[name] = value;
        }
    }
    v
}

async fn describe_job(State(st): State<AppState>, Label(job_id): Label) -> Reply {
    check_job_id(&job_id)?;
    let body = on_jobs(&st, move |jobs| {
        let (job, record) = jobs.describe_job(&job_id)?;
        let mut body = json!({"job": job_json(jobs, &job, &record)});
        if let Some(source) = &record.request.document_source {
            body["documentSource"] = json!(source);
        }
        Ok(body)
    })
    .await?;
    Ok(json_ok(&body))
}

async fn get_job_document(State(st): State<AppState>, Label(job_id): Label) -> Reply {
    check_job_id(&job_id)?;
    let (_, record) = on_jobs(&st, move |jobs| jobs.describe_job(&job_id)).await?;
    Ok(json_ok(&json!({"document": record.document_text})))
}

async fn list_jobs(State(st): State<AppState>, params: Params) -> Reply {
    let filter = JobFilter {
        status: enum_param::<JobStatus>(&params, "status")?,
        target_selection: enum_param::<TargetSelection>(&params, "targetSelection")?,
        thing_group_name: params.str("thingGroupName").map(str::to_owned),
        namespace_id: params.str("namespaceId").map(str::to_owned),
    };
    if let Some(group) = &filter.thing_group_name {
        check_name("thing group name", group)?;
    }
    let token = params.str("nextToken").map(str::to_owned);
    let size = params.int("maxResults", 1, 250)?;
    let summaries = on_jobs(&st, move |jobs| {
        Ok(jobs
            .list_jobs(&filter)
            .into_iter()
            .map(|(job, r)| {
                let mut v = json!({
                    "jobArn": jobs.job_arn(&job.spec.job_id),
                    "jobId": job.spec.job_id,
                    "targetSelection": r.target_selection(),
                    "status": status_str(job.status),
                    "createdAt": secs(r.created_at_ms),
                    "lastUpdatedAt": secs(r.last_updated_at_ms),
                    "isConcurrent": false,
                });
                if let Some(ms) = r.completed_at_ms {
                    v["completedAt"] = json!(secs(ms));
                }
                v
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(json_ok(&page_json("jobs", summaries, token.as_deref(), size)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelJobRequest {
    reason_code: Option<String>,
    comment: Option<String>,
}

async fn cancel_job(
    State(st): State<AppState>,
    Label(job_id): Label,
    params: Params,
    JsonBody(req): JsonBody<CancelJobRequest>,
) -> Reply {
    check_job_id(&job_id)?;
    let force = params.bool("force")?.unwrap_or(false);
    let id = job_id.clone();
    let description = on_jobs(&st, move |jobs| {
        jobs.cancel_job(&id, force, req.reason_code, req.comment)?;
        Ok(jobs.describe_job(&id)?.1.request.description)
    })
    .await?;
    let job_arn = st.jobs.job_arn(&job_id);
    Ok(json_ok(&JobIdentity { job_arn, job_id, description }))
}

async fn delete_job(State(st): State<AppState>, Label(job_id): Label, params: Params) -> Reply {
    check_job_id(&job_id)?;
    let force = params.bool("force")?.unwrap_or(false);
    on_jobs(&st, move |jobs| jobs.delete_job(&job_id, force)).await?;
    Ok(empty_ok())
}

/// `JobExecutionSummary` (control plane).
fn summary_json(e: &Execution) -> Value {
    let mut v = json!({
        "status": e.status,
        "queuedAt": secs(e.queued_at_ms),
        "lastUpdatedAt": secs(e.last_updated_at_ms),
        "executionNumber": e.execution_number,
        "retryAttempt": e.retry_attempt,
    });
    if let Some(ms) = e.started_at_ms {
        v["startedAt"] = json!(secs(ms));
    }
    v
}

async fn describe_execution(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    params: Params,
) -> Reply {
    let (thing, job_id) = two_labels(path)?;
    check_name("thing name", &thing)?;
    check_job_id(&job_id)?;
    let number = params.int("executionNumber", 0, i64::MAX)?;
    let e = on_jobs(&st, move |jobs| {
        let e = jobs.describe_execution(&job_id, &thing)?;
        if number.is_some_and(|n| n != e.execution_number) {
            return Err(JobsError::NotFound(format!(
                "job {job_id} on thing {thing} has no execution number {}",
                number.unwrap_or_default()
            )));
        }
        Ok(e)
    })
    .await?;
    let now_ms = st.jobs.now_ms();
    let mut v = summary_json(&e);
    let obj = v.as_object_mut().expect("summary_json builds an object");
    obj.remove("retryAttempt");
    obj.insert("jobId".into(), json!(e.job_id));
    obj.insert("thingArn".into(), json!(st.jobs.thing_arn(&e.thing_name)));
    obj.insert("statusDetails".into(), json!({"detailsMap": e.status_details}));
    obj.insert("versionNumber".into(), json!(e.version_number));
    obj.insert("forceCanceled".into(), json!(e.force_canceled));
    if let Some(deadline) = e.deadline_ms().filter(|_| !e.status.is_terminal()) {
        obj.insert("approximateSecondsBeforeTimedOut".into(), json!(((deadline - now_ms).max(0) + 999) / 1000));
    }
    Ok(json_ok(&json!({"execution": v})))
}

async fn list_executions_for_job(State(st): State<AppState>, Label(job_id): Label, params: Params) -> Reply {
    check_job_id(&job_id)?;
    let status = enum_param::<JobExecutionStatus>(&params, "status")?;
    let token = params.str("nextToken").map(str::to_owned);
    let size = params.int("maxResults", 1, 250)?;
    let items = on_jobs(&st, move |jobs| {
        jobs.describe_job(&job_id)?;
        Ok(jobs
            .executions(Some(&job_id), None)
            .into_iter()
            .filter(|(e, _)| status.is_none_or(|s| s == e.status))
            .map(|(e, _)| json!({"thingArn": jobs.thing_arn(&e.thing_name), "jobExecutionSummary": summary_json(&e)}))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(json_ok(&page_json("executionSummaries", items, token.as_deref(), size)?))
}

async fn list_executions_for_thing(State(st): State<AppState>, Label(thing): Label, params: Params) -> Reply {
    check_name("thing name", &thing)?;
    let status = enum_param::<JobExecutionStatus>(&params, "status")?;
    let namespace = params.str("namespaceId").map(str::to_owned);
    let job_id = params.str("jobId").map(str::to_owned);
    let token = params.str("nextToken").map(str::to_owned);
    let size = params.int("maxResults", 1, 250)?;
    let items = on_jobs(&st, move |jobs| {
        Ok(jobs
            .executions(job_id.as_deref(), Some(&thing))
            .into_iter()
            .filter(|(e, ns)| {
                status.is_none_or(|s| s == e.status) && namespace.as_ref().is_none_or(|n| ns.as_ref() == Some(n))
            })
            .map(|(e, _)| json!({"jobId": e.job_id, "jobExecutionSummary": summary_json(&e)}))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(json_ok(&page_json("executionSummaries", items, token.as_deref(), size)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelExecutionRequest {
    expected_version: Option<i64>,
    status_details: Option<StatusDetails>,
}

async fn cancel_execution(
    State(st): State<AppState>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    params: Params,
    JsonBody(req): JsonBody<CancelExecutionRequest>,
) -> Reply {
    let (thing, job_id) = two_labels(path)?;
    check_name("thing name", &thing)?;
    check_job_id(&job_id)?;
    let force = params.bool("force")?.unwrap_or(false);
    on_jobs(&st, move |jobs| jobs.cancel_execution(&job_id, &thing, force, req.expected_version, req.status_details))
        .await?;
    Ok(empty_ok())
}
