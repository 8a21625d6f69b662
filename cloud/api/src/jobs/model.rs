//! Jobs device API payloads over MQTT, with AWS's member names.
//!
//! Sources: "Jobs device MQTT and HTTPS data types" and "Jobs device MQTT API
//! operations" (AWS IoT Core Developer Guide), the `iot-jobs-data-plane` model.
//! Over MQTT `jobDocument` is a JSON object (every guide example, the device
//! SDKs' types, the Greengrass nucleus), timestamps are epoch **seconds** as
//! JSON integers (the Python SDK and nucleus lite need numbers, lite needs
//! integers). Request bodies accept unknown members (the Java nucleus
//! serialises its whole request object, `thingName` and `jobId` included).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Longest status detail key (`DetailsKey`).
pub const MAX_STATUS_DETAIL_KEY_CHARS: usize = 128;
/// Longest status detail value (`DetailsValue`).
pub const MAX_STATUS_DETAIL_VALUE_CHARS: usize = 1024;
/// Longest client token (`ClientToken`).
pub const MAX_CLIENT_TOKEN_CHARS: usize = 64;
/// Step and in-progress timeouts, in minutes: 1 to 10080 (7 days).
pub const MAX_TIMEOUT_MINUTES: i64 = 10_080;

/// A job document as sent to devices: a JSON object.
pub type JobDocument = Map<String, Value>;

/// Status details: a flat string map.
pub type StatusDetails = BTreeMap<String, String>;

/// Status of one job execution on one thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobExecutionStatus {
    /// Waiting for the device; set by the service.
    Queued,
    /// The device works on it.
    InProgress,
    /// Done (terminal, device).
    Succeeded,
    /// Failed (terminal, device).
    Failed,
    /// A timer ran out (terminal, service).
    TimedOut,
    /// The device refused it (terminal, device).
    Rejected,
    /// The thing left the job's target (terminal, service).
    Removed,
    /// The job or execution was cancelled (terminal, service).
    Canceled,
}

impl JobExecutionStatus {
    /// Whether no further change is possible.
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobExecutionStatus::Queued | JobExecutionStatus::InProgress)
    }

    /// Whether a device may request this status with UpdateJobExecution.
    pub fn is_device_settable(self) -> bool {
        matches!(
            self,
            JobExecutionStatus::InProgress
                | JobExecutionStatus::Succeeded
                | JobExecutionStatus::Failed
                | JobExecutionStatus::Rejected
        )
    }

    /// AWS's spelling (`IN_PROGRESS`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            JobExecutionStatus::Queued => "QUEUED",
            JobExecutionStatus::InProgress => "IN_PROGRESS",
            JobExecutionStatus::Succeeded => "SUCCEEDED",
            JobExecutionStatus::Failed => "FAILED",
            JobExecutionStatus::TimedOut => "TIMED_OUT",
            JobExecutionStatus::Rejected => "REJECTED",
            JobExecutionStatus::Removed => "REMOVED",
            JobExecutionStatus::Canceled => "CANCELED",
        }
    }
}

/// Status of a job (control plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Created and running.
    InProgress,
    /// Cancelled.
    Canceled,
    /// A snapshot job whose executions are all terminal.
    Completed,
    /// Being deleted.
    DeletionInProgress,
}

/// The `code` of a rejected answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobsErrorCode {
    /// The topic lies in the Jobs namespace but maps to no API.
    InvalidTopic,
    /// The payload is not UTF-8 JSON.
    InvalidJson,
    /// The payload's contents are invalid (fix the request).
    InvalidRequest,
    /// The update is not allowed from the current status; carries `executionState`.
    InvalidStateTransition,
    /// The execution does not exist.
    ResourceNotFound,
    /// `expectedVersion` differs from the stored version; carries `executionState`.
    VersionMismatch,
    /// The service failed (retry).
    InternalError,
    /// Too many requests (retry later).
    RequestThrottled,
    /// The job is in a terminal state.
    TerminalStateReached,
}

/// `JobExecution`, as in describe/start-next answers and `notify-next`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobExecution {
    /// The job.
    pub job_id: String,
    /// The thing.
    pub thing_name: String,
    /// The document (absent when the request did not ask for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_document: Option<JobDocument>,
    /// Status.
    pub status: JobExecutionStatus,
    /// Status details.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status_details: StatusDetails,
    /// When queued (epoch seconds).
    pub queued_at: i64,
    /// When it went IN_PROGRESS (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Last change (epoch seconds).
    pub last_updated_at: i64,
    /// Version, one more per change.
    pub version_number: i64,
    /// Which execution of the job on this thing.
    pub execution_number: i64,
    /// Seconds left before the nearest timer runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approximate_seconds_before_timed_out: Option<i64>,
}

/// `JobExecutionState`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobExecutionState {
    /// Status.
    pub status: JobExecutionStatus,
    /// Status details.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub status_details: StatusDetails,
    /// Version.
    pub version_number: i64,
}

/// `JobExecutionSummary`, in get-pending answers and `notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobExecutionSummary {
    /// The job.
    pub job_id: String,
    /// When queued (epoch seconds).
    pub queued_at: i64,
    /// When started (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Last change (epoch seconds).
    pub last_updated_at: i64,
    /// Version.
    pub version_number: i64,
    /// Execution number.
    pub execution_number: i64,
}

/// Body of `…/jobs/get`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetPendingRequest {
    /// Echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// Body of `…/jobs/start-next`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartNextRequest {
    /// Status details to store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_details: Option<StatusDetails>,
    /// Step timer, 1–10080 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout_in_minutes: Option<i64>,
    /// Echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// Body of `…/jobs/{jobId}/get`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeRequest {
    /// Which execution; the latest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_number: Option<i64>,
    /// Whether to include the document (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_job_document: Option<bool>,
    /// Echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// Body of `…/jobs/{jobId}/update`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateRequest {
    /// The new status (required on every update).
    pub status: JobExecutionStatus,
    /// Status details to store (replace the stored map; absent keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_details: Option<StatusDetails>,
    /// Must equal the stored version when present. The guide's examples send a string.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "int_or_string")]
    pub expected_version: Option<i64>,
    /// Which execution; the latest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_number: Option<i64>,
    /// Whether the answer carries `executionState`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_job_execution_state: Option<bool>,
    /// Whether the answer carries `jobDocument`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_job_document: Option<bool>,
    /// New step timer, 1–10080 minutes, or -1 to cancel it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout_in_minutes: Option<i64>,
    /// Echoed in the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

fn int_or_string<'de, D: Deserializer<'de>>(de: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrString {
        Int(i64),
        Str(String),
    }
    match Option::<IntOrString>::deserialize(de)? {
        None => Ok(None),
        Some(IntOrString::Int(v)) => Ok(Some(v)),
        Some(IntOrString::Str(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// `…/jobs/get/accepted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetPendingAccepted {
    /// IN_PROGRESS executions, oldest first.
    pub in_progress_jobs: Vec<JobExecutionSummary>,
    /// QUEUED executions, oldest first.
    pub queued_jobs: Vec<JobExecutionSummary>,
    /// Epoch seconds.
    pub timestamp: i64,
    /// The request's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// `…/start-next/accepted` and `…/{jobId}/get/accepted`: no `execution` when nothing is pending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionAccepted {
    /// The execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<JobExecution>,
    /// Epoch seconds.
    pub timestamp: i64,
    /// The request's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// `…/{jobId}/update/accepted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAccepted {
    /// Only when `includeJobExecutionState` was true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_state: Option<JobExecutionState>,
    /// Only when `includeJobDocument` was true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_document: Option<JobDocument>,
    /// Epoch seconds.
    pub timestamp: i64,
    /// The request's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
}

/// Body of every `…/rejected` answer (`ErrorResponse`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobsRejected {
    /// What went wrong.
    pub code: JobsErrorCode,
    /// Detail for a human.
    pub message: String,
    /// The request's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_token: Option<String>,
    /// Epoch seconds.
    pub timestamp: i64,
    /// Only for `InvalidStateTransition` and `VersionMismatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_state: Option<JobExecutionState>,
}

/// `notify`: pending executions by status, IN_PROGRESS then QUEUED, at most 10
/// in all; `{}` when none is pending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobExecutionsChanged {
    /// Epoch seconds.
    pub timestamp: i64,
    /// `IN_PROGRESS` and `QUEUED` lists; a status with no execution is absent.
    pub jobs: BTreeMap<JobExecutionStatus, Vec<JobExecutionSummary>>,
}

/// `notify-next`: the next pending execution, none when the queue emptied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextJobExecutionChanged {
    /// Epoch seconds.
    pub timestamp: i64,
    /// The new next execution, with its document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<JobExecution>,
}

// BTreeMap keys need an order; IN_PROGRESS first matches the guide's lists.
impl PartialOrd for JobExecutionStatus {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for JobExecutionStatus {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let rank = |s: &Self| match s {
            JobExecutionStatus::InProgress => 0,
            JobExecutionStatus::Queued => 1,
            other => 2 + *other as u8,
        };
        rank(self).cmp(&rank(other))
    }
}

/// Checks status details against the data-plane model (`DetailsKey`
/// `[a-zA-Z0-9:_-]{1,128}`, `DetailsValue` 1–1024 characters); the message
/// says what is wrong. The model sets no limit on the number of entries.
pub fn check_status_details(details: &StatusDetails) -> Result<(), String> {
    for (key, value) in details {
        let key_ok = (1..=MAX_STATUS_DETAIL_KEY_CHARS).contains(&key.chars().count())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
        if !key_ok {
            return Err(format!("statusDetails key {key:?} must match [a-zA-Z0-9:_-]{{1,128}}"));
        }
        // The model's value pattern is `[^\p{C}]+`; control characters (Cc) are the part checked here.
        if value.is_empty()
            || value.chars().count() > MAX_STATUS_DETAIL_VALUE_CHARS
            || value.chars().any(char::is_control)
        {
            return Err(format!(
                "statusDetails value of {key:?} must be 1 to 1024 characters without control characters"
            ));
        }
    }
    Ok(())
}

/// Checks a step timeout (`allow_cancel`: -1 is accepted, as on update).
pub fn check_step_timeout(minutes: i64, allow_cancel: bool) -> Result<(), String> {
    if (1..=MAX_TIMEOUT_MINUTES).contains(&minutes) || (allow_cancel && minutes == -1) {
        Ok(())
    } else {
        Err(format!("stepTimeoutInMinutes {minutes} must be 1 to {MAX_TIMEOUT_MINUTES}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_use_aws_spelling_and_terminality() {
        assert_eq!(serde_json::to_value(JobExecutionStatus::TimedOut).unwrap(), json!("TIMED_OUT"));
        assert_eq!(serde_json::to_value(JobStatus::DeletionInProgress).unwrap(), json!("DELETION_IN_PROGRESS"));
        for s in ["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED"] {
            let status: JobExecutionStatus = serde_json::from_value(json!(s)).unwrap();
            assert_eq!(status.as_str(), s);
            assert_eq!(status.is_terminal(), !matches!(s, "QUEUED" | "IN_PROGRESS"));
        }
    }

    #[test]
    fn error_codes_serialise_as_the_nine_aws_codes() {
        let codes = [
            (JobsErrorCode::InvalidTopic, "InvalidTopic"),
            (JobsErrorCode::InvalidJson, "InvalidJson"),
            (JobsErrorCode::InvalidRequest, "InvalidRequest"),
            (JobsErrorCode::InvalidStateTransition, "InvalidStateTransition"),
            (JobsErrorCode::ResourceNotFound, "ResourceNotFound"),
            (JobsErrorCode::VersionMismatch, "VersionMismatch"),
            (JobsErrorCode::InternalError, "InternalError"),
            (JobsErrorCode::RequestThrottled, "RequestThrottled"),
            (JobsErrorCode::TerminalStateReached, "TerminalStateReached"),
        ];
        for (code, text) in codes {
            assert_eq!(serde_json::to_value(code).unwrap(), json!(text));
        }
    }

    #[test]
    fn update_request_accepts_string_version_and_unknown_members() {
        let req: UpdateRequest = serde_json::from_value(json!({
            "status": "IN_PROGRESS", "expectedVersion": "3", "thingName": "t", "jobId": "j",
            "statusDetails": {"step": "download"}
        }))
        .unwrap();
        assert_eq!(req.expected_version, Some(3));
        assert_eq!(req.status_details.unwrap()["step"], "download");
        let req: UpdateRequest = serde_json::from_value(json!({"status": "FAILED", "expectedVersion": 4})).unwrap();
        assert_eq!(req.expected_version, Some(4));
        assert!(serde_json::from_value::<UpdateRequest>(json!({"statusDetails": {}})).is_err());
    }

    #[test]
    fn rejected_body_has_aws_member_names() {
        let body = JobsRejected {
            code: JobsErrorCode::VersionMismatch,
            message: "m".into(),
            client_token: Some("c".into()),
            timestamp: 5,
            execution_state: Some(JobExecutionState {
                status: JobExecutionStatus::Queued,
                status_details: StatusDetails::new(),
                version_number: 1,
            }),
        };
        assert_eq!(
            serde_json::to_value(body).unwrap(),
            json!({"code": "VersionMismatch", "message": "m", "clientToken": "c", "timestamp": 5,
                   "executionState": {"status": "QUEUED", "versionNumber": 1}})
        );
    }

    #[test]
    fn notify_lists_in_progress_before_queued_and_empty_is_an_empty_object() {
        let summary = |id: &str| JobExecutionSummary {
            job_id: id.into(),
            queued_at: 1,
            started_at: None,
            last_updated_at: 1,
            version_number: 1,
            execution_number: 1,
        };
        let mut jobs = BTreeMap::new();
        jobs.insert(JobExecutionStatus::Queued, vec![summary("q")]);
        jobs.insert(JobExecutionStatus::InProgress, vec![summary("p")]);
        let text = serde_json::to_string(&JobExecutionsChanged { timestamp: 2, jobs }).unwrap();
        assert!(text.find("IN_PROGRESS").unwrap() < text.find("QUEUED").unwrap(), "{text}");
        let empty = JobExecutionsChanged { timestamp: 2, jobs: BTreeMap::new() };
        assert_eq!(serde_json::to_value(empty).unwrap(), json!({"timestamp": 2, "jobs": {}}));
        let none = NextJobExecutionChanged { timestamp: 3, execution: None };
        assert_eq!(serde_json::to_value(none).unwrap(), json!({"timestamp": 3}));
    }

    #[test]
    fn status_detail_and_timeout_limits() {
        let mut details = StatusDetails::new();
        details.insert("ok:key_1-x".into(), "v".repeat(1024));
        assert!(check_status_details(&details).is_ok());
        details.insert("bad key".into(), "v".into());
        assert!(check_status_details(&details).unwrap_err().contains("bad key"));
        let too_long: StatusDetails = [("k".to_owned(), "v".repeat(1025))].into();
        assert!(check_status_details(&too_long).is_err());
        let control: StatusDetails = [("k".to_owned(), "a\nb".to_owned())].into();
        assert!(check_status_details(&control).is_err());
        let empty: StatusDetails = [("k".to_owned(), String::new())].into();
        assert!(check_status_details(&empty).is_err());
        assert!(check_step_timeout(10_080, false).is_ok());
        assert!(check_step_timeout(0, false).is_err());
        assert!(check_step_timeout(-1, false).is_err());
        assert!(check_step_timeout(-1, true).is_ok());
        assert!(check_step_timeout(10_081, true).is_err());
    }
}
