//! The pure Jobs engine: jobs, their executions per thing, and the device API.
//!
//! Every operation takes the time as epoch milliseconds and returns the answer
//! for the requesting client plus the notifications to publish; the caller
//! only does I/O (answers go to the requesting connection only, notifications
//! through the broker). Rules, with their sources in the AWS IoT Core
//! Developer Guide ("Jobs device MQTT API operations", "Jobs notifications",
//! "Job configurations", "Job execution states"):
//!
//! - **Pending** executions are QUEUED or IN_PROGRESS. A thing's pending list
//!   is per namespace: a job created with a namespace is seen only on that
//!   namespace's topics, a job without one only on the default topics.
//!   Requests naming a job id find the execution whatever the namespace.
//! - **Next** pending execution: the oldest IN_PROGRESS, else the oldest QUEUED
//!   (oldest = first queued). `$next` in DescribeJobExecution and
//!   StartNextPendingJobExecution mean it.
//! - **notify** is published when a thing's pending list (which executions, in
//!   which order) changes; **notify-next** when its next execution changes,
//!   `{timestamp}` alone when none is left. Both on the default topics or on
//!   the `-namespace-{ns}` forms. A status change that leaves both unchanged
//!   (the only job going QUEUED → IN_PROGRESS) publishes nothing, as in the
//!   guide's worked example.
//! - **Versions**: a new execution has `versionNumber` 1; each change, by the
//!   device or the service (cancel, remove, time-out), adds one. A re-run of a
//!   job on a thing (the thing re-joins a continuous job's group after its
//!   execution ended) gets the next `executionNumber`; only the latest
//!   execution is kept.
//! - **Updates**: a device may set IN_PROGRESS, SUCCEEDED, FAILED or REJECTED
//!   (other statuses: `InvalidRequest`), from QUEUED or IN_PROGRESS.
//!   `expectedVersion` ≠ stored version → `VersionMismatch`. An update of an
//!   execution the device ended (SUCCEEDED, FAILED, REJECTED) is
//!   `InvalidStateTransition` (the guide's example: SUCCEEDED → IN_PROGRESS);
//!   of one the service ended (CANCELED, REMOVED, TIMED_OUT) is
//!   `TerminalStateReached` — our reading of "the job is in a terminal
//!   state", which the guide does not pin down. Both carry `executionState`
//!   only for the first, as the guide says. An unknown job or execution number
//!   is `ResourceNotFound`.
//! - **Timers**: the in-progress timer (`inProgressTimeoutInMinutes` of the
//!   job) starts when the execution first goes IN_PROGRESS and never moves; a
//!   step timer (`stepTimeoutInMinutes` on start-next or update) replaces the
//!   previous one, is cut at the in-progress deadline, and `-1` on update
//!   clears it. [`JobsEngine::tick`] times out every pending execution whose
//!   deadline has passed. Terminal executions have no timers.
//! - **Cancel**: cancelling a job cancels its QUEUED executions, and its
//!   IN_PROGRESS ones only with `force` (the CancelJob `force` rule); the job
//!   becomes CANCELED and gets no new executions.
//! - **CancelJobExecution** ends one QUEUED execution as CANCELED, an
//!   IN_PROGRESS one only with `force`; an ended one, or an IN_PROGRESS one
//!   without `force`, is an invalid state transition; a stale
//!   `expectedVersion` a version conflict.
//! - **DeleteJob** removes a job and its executions; without `force` only a
//!   COMPLETED or CANCELED job (the DeleteJob `force` rule). Its pending executions vanish from the
//!   things' lists, which publishes `notify` / `notify-next` as for any change.
//! - A snapshot job whose executions are all terminal becomes COMPLETED.
//! - **Rollout** (`jobExecutionsRolloutConfig.maximumPerMinute`): the things a
//!   job targets at creation ([`JobsEngine::target`]) get executions at most
//!   that many per minute (windows of 60 s from the first); the rest wait in
//!   the job's backlog, released by [`JobsEngine::tick`] (a window's end is a
//!   deadline). Things joining a continuous job's group later are not
//!   rate-limited ([`JobsEngine::add_execution`]). A snapshot job completes
//!   only once its backlog is empty; cancelling drops the backlog.
//! - **Retry** (`jobExecutionsRetryConfig`): an execution that ends FAILED or
//!   TIMED_OUT is queued again (next `executionNumber`, `retryAttempt` + 1,
//!   version 1) while its attempts are below the criterion for that failure
//!   (`FAILED`, `TIMED_OUT`, or `ALL`; the specific one wins) and below 10;
//!   REJECTED is never retried.
//! - **Abort** (`abortConfig`): after an execution ends, each criterion is
//!   checked over the job's executed executions (SUCCEEDED, FAILED, REJECTED,
//!   TIMED_OUT): with at least `minNumberOfExecutedThings` of them and failures
//!   of the criterion's type (`ALL` = the three failures) at or above
//!   `thresholdPercentage`, the job is cancelled as CancelJob without `force`
//!   does (QUEUED executions, queued retries too, become CANCELED).
//! - **Changes**: every job and execution an operation created, changed or
//!   deleted is recorded until [`JobsEngine::take_changes`]; the caller
//!   persists them and reports execution status changes.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::model::{
    DescribeRequest, ExecutionAccepted, GetPendingAccepted, GetPendingRequest, JobDocument, JobExecution,
    JobExecutionState, JobExecutionStatus, JobExecutionSummary, JobExecutionsChanged, JobStatus, JobsErrorCode,
    JobsRejected, NextJobExecutionChanged, StartNextRequest, StatusDetails, UpdateAccepted, UpdateRequest,
    check_status_details, check_step_timeout,
};
use super::topic::{JobTarget, JobsRequest, JobsResponse, JobsTopic, is_valid_job_id, is_valid_namespace_id};

/// Most summaries a `notify` message lists.
pub const NOTIFY_MAX_SUMMARIES: usize = 10;

const MINUTE_MS: i64 = 60_000;

/// Which ended executions a retry or abort criterion counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailureType {
    /// FAILED.
    Failed,
    /// REJECTED (abort only: rejected executions are never retried).
    Rejected,
    /// TIMED_OUT.
    TimedOut,
    /// Every failure.
    All,
}

impl FailureType {
    fn counts(self, status: JobExecutionStatus) -> bool {
        matches!(
            (self, status),
            (FailureType::Failed | FailureType::All, JobExecutionStatus::Failed)
                | (FailureType::Rejected | FailureType::All, JobExecutionStatus::Rejected)
                | (FailureType::TimedOut | FailureType::All, JobExecutionStatus::TimedOut)
        )
    }
}

/// One criterion of `jobExecutionsRetryConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryCriterion {
    /// FAILED, TIMED_OUT or ALL.
    pub failure_type: FailureType,
    /// 0–10.
    pub number_of_retries: u32,
}

/// One criterion of `abortConfig` (its action is always CANCEL).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AbortCriterion {
    /// Which failures count.
    pub failure_type: FailureType,
    /// Failures among executed executions, percent, at which the job is cancelled.
    pub threshold_percentage: f64,
    /// Executed executions needed before the criterion applies (at least 1).
    pub min_number_of_executed_things: u32,
}

/// Most retries of one execution, whatever the criteria say.
pub const MAX_RETRIES: u32 = 10;

/// What the control plane gives the engine to create a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job id.
    pub job_id: String,
    /// The document devices receive.
    pub document: JobDocument,
    /// `Some(ns)` for a namespaced job (Greengrass: `aws-gg-deployment`).
    pub namespace: Option<String>,
    /// `timeoutConfig.inProgressTimeoutInMinutes`, 1–10080.
    pub in_progress_timeout_minutes: Option<i64>,
    /// `targetSelection` CONTINUOUS: the job stays IN_PROGRESS when all executions ended.
    pub continuous: bool,
    /// `jobExecutionsRetryConfig.criteriaList`.
    #[serde(default)]
    pub retry: Vec<RetryCriterion>,
    /// `abortConfig.criteriaList`.
    #[serde(default)]
    pub abort: Vec<AbortCriterion>,
    /// `jobExecutionsRolloutConfig.maximumPerMinute`.
    #[serde(default)]
    pub max_per_minute: Option<u32>,
}

/// A job as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// What it was created with.
    pub spec: JobSpec,
    /// Its status.
    pub status: JobStatus,
    /// Targeted things still waiting for their execution (rollout), in order.
    #[serde(default)]
    pub backlog: Vec<String>,
    /// The current rollout window: when it began (epoch ms) and executions created in it.
    #[serde(default)]
    pub window: Option<(i64, u32)>,
}

/// One job's execution on one thing (serialisable so a caller can persist it
/// and hand it back to [`JobsEngine::restore`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The job.
    pub job_id: String,
    /// The thing.
    pub thing_name: String,
    /// Status.
    pub status: JobExecutionStatus,
    /// Status details.
    pub status_details: StatusDetails,
    /// When queued (epoch ms).
    pub queued_at_ms: i64,
    /// When it first went IN_PROGRESS (epoch ms).
    pub started_at_ms: Option<i64>,
    /// Last change (epoch ms).
    pub last_updated_at_ms: i64,
    /// One more per change, 1 when queued.
    pub version_number: i64,
    /// Which run of the job on this thing, from 1.
    pub execution_number: i64,
    /// Step timer deadline (epoch ms).
    pub step_deadline_ms: Option<i64>,
    /// In-progress timer deadline (epoch ms).
    pub in_progress_deadline_ms: Option<i64>,
    /// How many times this execution was queued again after a failure.
    #[serde(default)]
    pub retry_attempt: u32,
    /// Cancelled while IN_PROGRESS, by CancelJob or CancelJobExecution with `force`.
    #[serde(default)]
    pub force_canceled: bool,
    /// Queue order across the engine.
    order: u64,
}

impl Execution {
    /// A new QUEUED execution at version 1.
    fn queued(job_id: &str, thing: &str, execution_number: i64, retry_attempt: u32, order: u64, now_ms: i64) -> Self {
        Execution {
            job_id: job_id.to_owned(),
            thing_name: thing.to_owned(),
            status: JobExecutionStatus::Queued,
            status_details: StatusDetails::new(),
            queued_at_ms: now_ms,
            started_at_ms: None,
            last_updated_at_ms: now_ms,
            version_number: 1,
            execution_number,
            step_deadline_ms: None,
            in_progress_deadline_ms: None,
            retry_attempt,
            force_canceled: false,
            order,
        }
    }

    fn state(&self) -> JobExecutionState {
        JobExecutionState {
            status: self.status,
            status_details: self.status_details.clone(),
            version_number: self.version_number,
        }
    }

    fn summary(&self) -> JobExecutionSummary {
        JobExecutionSummary {
            job_id: self.job_id.clone(),
            queued_at: secs(self.queued_at_ms),
            started_at: self.started_at_ms.map(secs),
            last_updated_at: secs(self.last_updated_at_ms),
            version_number: self.version_number,
            execution_number: self.execution_number,
        }
    }

    /// The nearest timer deadline, if any.
    pub fn deadline_ms(&self) -> Option<i64> {
        match (self.step_deadline_ms, self.in_progress_deadline_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn to_wire(&self, document: Option<&JobDocument>, now_ms: i64) -> JobExecution {
        JobExecution {
            job_id: self.job_id.clone(),
            thing_name: self.thing_name.clone(),
            job_document: document.cloned(),
            status: self.status,
            status_details: self.status_details.clone(),
            queued_at: secs(self.queued_at_ms),
            started_at: self.started_at_ms.map(secs),
            last_updated_at: secs(self.last_updated_at_ms),
            version_number: self.version_number,
            execution_number: self.execution_number,
            approximate_seconds_before_timed_out: self
                .deadline_ms()
                .map(|deadline| ((deadline - now_ms).max(0) + 999) / 1000),
        }
    }

    fn touch(&mut self, status: JobExecutionStatus, now_ms: i64) {
        self.status = status;
        self.version_number += 1;
        self.last_updated_at_ms = now_ms;
        if status.is_terminal() {
            self.step_deadline_ms = None;
            self.in_progress_deadline_ms = None;
        }
    }
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// Why a control-plane call on the engine was refused (fix the call).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobsEngineError {
    /// The job id breaks `[a-zA-Z0-9_-]{1,64}` or the namespace id its pattern.
    #[error("invalid job id {0:?} or namespace")]
    InvalidId(String),
    /// `inProgressTimeoutInMinutes` outside 1–10080.
    #[error("inProgressTimeoutInMinutes {0} must be 1 to 10080")]
    InvalidTimeout(i64),
    /// A job with this id exists.
    #[error("job {0} already exists")]
    JobExists(String),
    /// No job with this id.
    #[error("job {0} does not exist")]
    UnknownJob(String),
    /// The job no longer takes executions.
    #[error("job {job} is {status:?}, it takes no new executions")]
    JobNotInProgress {
        /// The job.
        job: String,
        /// Its status.
        status: JobStatus,
    },
    /// The thing already has a pending execution of the job.
    #[error("thing {thing} already has a pending execution of job {job}")]
    ExecutionPending {
        /// The job.
        job: String,
        /// The thing.
        thing: String,
    },
    /// The thing has no execution of the job.
    #[error("thing {thing} has no execution of job {job}")]
    UnknownExecution {
        /// The job.
        job: String,
        /// The thing.
        thing: String,
    },
    /// Cancelling without `force` while executions are IN_PROGRESS was asked
    /// to fail rather than leave them running.
    #[error("job {0} has IN_PROGRESS executions; cancel with force")]
    InProgressExecutions(String),
    /// DeleteJob without `force` of a job still IN_PROGRESS.
    #[error("job {0} is IN_PROGRESS; cancel it first or delete it with force")]
    JobRunning(String),
    /// Status details break their limits (the message says which).
    #[error("invalid statusDetails: {0}")]
    InvalidStatusDetails(String),
    /// `expectedVersion` differs from the execution's version (read it again).
    #[error("expectedVersion {expected} but the execution is at version {current}")]
    VersionConflict {
        /// What the caller expected.
        expected: i64,
        /// The execution's version.
        current: i64,
    },
    /// The execution cannot go where asked from its status (ended, or IN_PROGRESS without `force`).
    #[error("the execution of job {job} on thing {thing} is {status}; {hint}")]
    InvalidStateTransition {
        /// The job.
        job: String,
        /// The thing.
        thing: String,
        /// Its status (AWS's spelling).
        status: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
}

/// What operations changed since the last [`JobsEngine::take_changes`]: ids
/// only; look each up to tell a change (present) from a deletion (absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Job ids.
    pub jobs: BTreeSet<String>,
    /// (thing, job) of executions.
    pub executions: BTreeSet<(String, String)>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty() && self.executions.is_empty()
    }
}

/// A message to publish through the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `notify` or `notify-next`, default or namespaced.
    pub topic: JobsTopic,
    /// The body.
    pub payload: NotificationPayload,
}

/// Body of a notification.
#[derive(Debug, Clone, PartialEq)]
pub enum NotificationPayload {
    /// `notify`.
    Notify(JobExecutionsChanged),
    /// `notify-next`.
    NotifyNext(NextJobExecutionChanged),
}

impl NotificationPayload {
    /// The JSON body.
    pub fn to_json(&self) -> Value {
        match self {
            NotificationPayload::Notify(body) => serde_json::to_value(body),
            NotificationPayload::NotifyNext(body) => serde_json::to_value(body),
        }
        .unwrap_or(Value::Null)
    }
}

/// The answer to a device request and what it caused.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// Accepted body, or the rejected body.
    pub result: Result<T, JobsRejected>,
    /// Notifications to publish after the answer.
    pub notifications: Vec<Notification>,
}

/// A device request answered from its raw payload: what to send where.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The `accepted` or `rejected` topic of the request (`{topic}/rejected`
    /// for a topic that maps to no API).
    pub topic: String,
    /// The body.
    pub body: Value,
    /// Notifications to publish.
    pub notifications: Vec<Notification>,
}

type PendingKey = (String, i64);

/// The jobs and executions of one account, per thing.
#[derive(Debug, Clone, Default)]
pub struct JobsEngine {
    jobs: BTreeMap<String, Job>,
    /// Keyed by (thing, job).
    executions: BTreeMap<(String, String), Execution>,
    next_order: u64,
    changes: Changes,
}

fn rejected(code: JobsErrorCode, message: impl Into<String>, token: &Option<String>, now_ms: i64) -> JobsRejected {
    JobsRejected {
        code,
        message: message.into(),
        client_token: token.clone(),
        timestamp: secs(now_ms),
        execution_state: None,
    }
}

/// The rejected body for a publish to a Jobs topic that maps to no API.
pub fn invalid_topic(topic: &str, now_ms: i64) -> JobsRejected {
    rejected(JobsErrorCode::InvalidTopic, format!("topic {topic} maps to no Jobs API"), &None, now_ms)
}

/// The reply to a publish to a Jobs topic (see [`super::topic::is_jobs_topic`])
/// that maps to no API: `InvalidTopic` on `{topic}/rejected`.
pub fn invalid_topic_reply(topic: &str, now_ms: i64) -> Reply {
    Reply {
        topic: format!("{topic}/rejected"),
        body: serde_json::to_value(invalid_topic(topic, now_ms)).unwrap_or(Value::Null),
        notifications: Vec::new(),
    }
}

/// The reply IoT Core gives a device that exceeds the Jobs API's rate: `RequestThrottled` on
/// `{topic}/rejected`, nothing changed.
pub fn throttled_reply(topic: &str, now_ms: i64) -> Reply {
    let body = rejected(JobsErrorCode::RequestThrottled, "Rate exceeded", &None, now_ms);
    Reply {
        topic: format!("{topic}/rejected"),
        body: serde_json::to_value(body).unwrap_or(Value::Null),
        notifications: Vec::new(),
    }
}

impl JobsEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }

    /// A job by id.
    pub fn job(&self, job_id: &str) -> Option<&Job> {
        self.jobs.get(job_id)
    }

    /// The latest execution of a job on a thing.
    pub fn execution(&self, thing: &str, job_id: &str) -> Option<&Execution> {
        self.executions.get(&(thing.to_owned(), job_id.to_owned()))
    }

    /// Every execution, by (thing, job).
    pub fn executions(&self) -> impl Iterator<Item = &Execution> {
        self.executions.values()
    }

    /// Every job, by id.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.values()
    }

    /// An engine holding what an earlier one had (as persisted from
    /// [`Self::take_changes`]); executions of unknown jobs are dropped.
    pub fn restore(jobs: impl IntoIterator<Item = Job>, executions: impl IntoIterator<Item = Execution>) -> Self {
        let jobs: BTreeMap<String, Job> = jobs.into_iter().map(|j| (j.spec.job_id.clone(), j)).collect();
        let executions: BTreeMap<(String, String), Execution> = executions
            .into_iter()
            .filter(|e| jobs.contains_key(&e.job_id))
            .map(|e| ((e.thing_name.clone(), e.job_id.clone()), e))
            .collect();
        let next_order = executions.values().map(|e| e.order + 1).max().unwrap_or(0);
        JobsEngine { jobs, executions, next_order, changes: Changes::default() }
    }

    /// What changed since the last call (and forgets it).
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// CancelJobExecution (see the module docs); `details` replace the status details.
    pub fn cancel_execution(
        &mut self,
        job_id: &str,
        thing: &str,
        force: bool,
        expected_version: Option<i64>,
        details: Option<StatusDetails>,
        now_ms: i64,
    ) -> Result<Vec<Notification>, JobsEngineError> {
        let key = (thing.to_owned(), job_id.to_owned());
        let e = self
            .executions
            .get(&key)
            .ok_or_else(|| JobsEngineError::UnknownExecution { job: job_id.to_owned(), thing: thing.to_owned() })?;
        if let Some(expected) = expected_version
            && expected != e.version_number
        {
            return Err(JobsEngineError::VersionConflict { expected, current: e.version_number });
        }
        let hint = match e.status {
            JobExecutionStatus::Queued => None,
            JobExecutionStatus::InProgress if force => None,
            JobExecutionStatus::InProgress => Some("cancel it with force"),
            _ => Some("an ended execution cannot be cancelled"),
        };
        if let Some(hint) = hint {
            return Err(JobsEngineError::InvalidStateTransition {
                job: job_id.to_owned(),
                thing: thing.to_owned(),
                status: e.status.as_str(),
                hint,
            });
        }
        if let Some(details) = &details {
            check_status_details(details).map_err(JobsEngineError::InvalidStatusDetails)?;
        }
        Ok(self.observing(&[thing.to_owned()], now_ms, |engine| {
            let e = engine.executions.get_mut(&key).expect("checked above");
            if let Some(details) = details {
                e.status_details = details;
            }
            e.force_canceled = e.status == JobExecutionStatus::InProgress;
            e.touch(JobExecutionStatus::Canceled, now_ms);
            engine.refresh_job(job_id);
        }))
    }

    /// DeleteJob (see the module docs).
    pub fn delete_job(&mut self, job_id: &str, force: bool, now_ms: i64) -> Result<Vec<Notification>, JobsEngineError> {
        let job = self.jobs.get(job_id).ok_or_else(|| JobsEngineError::UnknownJob(job_id.to_owned()))?;
        let of_job: Vec<(String, String)> = self.executions.keys().filter(|(_, j)| j == job_id).cloned().collect();
        if !force && job.status == JobStatus::InProgress {
            return Err(JobsEngineError::JobRunning(job_id.to_owned()));
        }
        let things: Vec<String> = of_job.iter().map(|(t, _)| t.clone()).collect();
        Ok(self.observing(&things, now_ms, |engine| {
            for key in &of_job {
                engine.executions.remove(key);
            }
            engine.jobs.remove(job_id);
            engine.changes.jobs.insert(job_id.to_owned());
        }))
    }

    /// Creates a job (no executions yet; add them with [`Self::add_execution`]).
    pub fn create_job(&mut self, spec: JobSpec) -> Result<(), JobsEngineError> {
        if !is_valid_job_id(&spec.job_id) || spec.namespace.as_deref().is_some_and(|ns| !is_valid_namespace_id(ns)) {
            return Err(JobsEngineError::InvalidId(spec.job_id));
        }
        if let Some(minutes) = spec.in_progress_timeout_minutes
            && check_step_timeout(minutes, false).is_err()
        {
            return Err(JobsEngineError::InvalidTimeout(minutes));
        }
        if self.jobs.contains_key(&spec.job_id) {
            return Err(JobsEngineError::JobExists(spec.job_id));
        }
        self.changes.jobs.insert(spec.job_id.clone());
        self.jobs.insert(
            spec.job_id.clone(),
            Job { spec, status: JobStatus::InProgress, backlog: Vec::new(), window: None },
        );
        Ok(())
    }

    /// Queues an execution of a job on a thing (job created for it, or the
    /// thing joined a continuous job's group). A thing whose previous
    /// execution ended gets a new one with the next execution number.
    pub fn add_execution(
        &mut self,
        job_id: &str,
        thing: &str,
        now_ms: i64,
    ) -> Result<Vec<Notification>, JobsEngineError> {
        let job = self.jobs.get(job_id).ok_or_else(|| JobsEngineError::UnknownJob(job_id.to_owned()))?;
        if job.status != JobStatus::InProgress {
            return Err(JobsEngineError::JobNotInProgress { job: job_id.to_owned(), status: job.status });
        }
        let key = (thing.to_owned(), job_id.to_owned());
        let execution_number = match self.executions.get(&key) {
            Some(e) if !e.status.is_terminal() => {
                return Err(JobsEngineError::ExecutionPending { job: job_id.to_owned(), thing: thing.to_owned() });
            }
            Some(e) => e.execution_number + 1,
            None => 1,
        };
        let order = self.next_order;
        self.next_order += 1;
        Ok(self.observing(&[thing.to_owned()], now_ms, |engine| {
            engine.executions.insert(key, Execution::queued(job_id, thing, execution_number, 0, order, now_ms));
        }))
    }

    /// Ends a pending execution because the thing left the job's target: REMOVED.
    /// An execution already ended is left alone.
    pub fn remove_execution(
        &mut self,
        job_id: &str,
        thing: &str,
        now_ms: i64,
    ) -> Result<Vec<Notification>, JobsEngineError> {
        let key = (thing.to_owned(), job_id.to_owned());
        if !self.executions.contains_key(&key) {
            return Err(JobsEngineError::UnknownExecution { job: job_id.to_owned(), thing: thing.to_owned() });
        }
        Ok(self.observing(&[thing.to_owned()], now_ms, |engine| {
            if let Some(e) = engine.executions.get_mut(&key)
                && !e.status.is_terminal()
            {
                e.touch(JobExecutionStatus::Removed, now_ms);
            }
            engine.refresh_job(job_id);
        }))
    }

    /// Cancels a job: QUEUED executions become CANCELED, IN_PROGRESS ones too
    /// with `force`. Without `force` IN_PROGRESS executions keep running, as
    /// CancelJob does; `strict` refuses instead (nothing changes).
    pub fn cancel_job(
        &mut self,
        job_id: &str,
        force: bool,
        strict: bool,
        now_ms: i64,
    ) -> Result<Vec<Notification>, JobsEngineError> {
        if !self.jobs.contains_key(job_id) {
            return Err(JobsEngineError::UnknownJob(job_id.to_owned()));
        }
        let of_job: Vec<(String, String)> = self.executions.keys().filter(|(_, j)| j == job_id).cloned().collect();
        let running = of_job.iter().any(|k| self.executions[k].status == JobExecutionStatus::InProgress);
        if running && !force && strict {
            return Err(JobsEngineError::InProgressExecutions(job_id.to_owned()));
        }
        let things: Vec<String> = of_job.iter().map(|(t, _)| t.clone()).collect();
        Ok(self.observing(&things, now_ms, |engine| {
            if let Some(job) = engine.jobs.get_mut(job_id) {
                job.status = JobStatus::Canceled;
                job.backlog.clear();
                engine.changes.jobs.insert(job_id.to_owned());
            }
            for key in &of_job {
                let e = engine.executions.get_mut(key).expect("key listed above");
                let cancel = match e.status {
                    JobExecutionStatus::Queued => true,
                    JobExecutionStatus::InProgress => force,
                    _ => false,
                };
                if cancel {
                    e.force_canceled = e.status == JobExecutionStatus::InProgress;
                    e.touch(JobExecutionStatus::Canceled, now_ms);
                }
            }
        }))
    }

    /// Times out every pending execution whose step or in-progress deadline is at or before `now_ms`.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Notification> {
        let due: Vec<(String, String)> = self
            .executions
            .iter()
            .filter(|(_, e)| !e.status.is_terminal() && e.deadline_ms().is_some_and(|d| d <= now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        let things: Vec<String> = due.iter().map(|(t, _)| t.clone()).collect();
        let mut notifications = self.observing(&things, now_ms, |engine| {
            for key in &due {
                engine.executions.get_mut(key).expect("key listed above").touch(JobExecutionStatus::TimedOut, now_ms);
                engine.retry_if_allowed(key, now_ms);
                engine.refresh_job(&key.1);
            }
        });
        let jobs: BTreeSet<&String> = due.iter().map(|(_, j)| j).collect();
        for job in jobs {
            notifications.extend(self.abort_if_due(job, now_ms));
        }
        let waiting: Vec<String> = self
            .jobs
            .values()
            .filter(|j| !j.backlog.is_empty() && j.window.is_none_or(|(start, _)| start + MINUTE_MS <= now_ms))
            .map(|j| j.spec.job_id.clone())
            .collect();
        for job in waiting {
            notifications.extend(self.release(&job, now_ms));
        }
        notifications
    }

    /// Queues an execution that just ended FAILED or TIMED_OUT again if its
    /// job's retry criteria allow one more attempt (see the module docs).
    fn retry_if_allowed(&mut self, key: &(String, String), now_ms: i64) {
        let (Some(e), Some(job)) = (self.executions.get(key), self.jobs.get(&key.1)) else { return };
        if job.status != JobStatus::InProgress || e.status == JobExecutionStatus::Rejected {
            return;
        }
        let specific =
            job.spec.retry.iter().find(|c| c.failure_type != FailureType::All && c.failure_type.counts(e.status));
        let any = job.spec.retry.iter().find(|c| c.failure_type == FailureType::All && c.failure_type.counts(e.status));
        let Some(allowed) = specific.or(any).map(|c| c.number_of_retries.min(MAX_RETRIES)) else { return };
        if e.retry_attempt >= allowed {
            return;
        }
        let order = self.next_order;
        self.next_order += 1;
        let again = Execution::queued(&key.1, &key.0, e.execution_number + 1, e.retry_attempt + 1, order, now_ms);
        self.executions.insert(key.clone(), again);
    }

    /// Cancels `job_id` as CancelJob without `force` when one of its abort criteria is met.
    fn abort_if_due(&mut self, job_id: &str, now_ms: i64) -> Vec<Notification> {
        let Some(job) = self.jobs.get(job_id).filter(|j| j.status == JobStatus::InProgress) else {
            return Vec::new();
        };
        let ended: Vec<JobExecutionStatus> = self
            .executions
            .values()
            .filter(|e| e.job_id == job_id)
            .map(|e| e.status)
            .filter(|s| {
                matches!(
                    s,
                    JobExecutionStatus::Succeeded
                        | JobExecutionStatus::Failed
                        | JobExecutionStatus::Rejected
                        | JobExecutionStatus::TimedOut
                )
            })
            .collect();
        let executed = ended.len();
        let due = job.spec.abort.iter().any(|c| {
            let failures = ended.iter().filter(|s| c.failure_type.counts(**s)).count();
            executed >= c.min_number_of_executed_things.max(1) as usize
                && failures as f64 * 100.0 >= c.threshold_percentage * executed as f64
        });
        if !due {
            return Vec::new();
        }
        self.cancel_job(job_id, false, false, now_ms).unwrap_or_default()
    }

    /// The earliest pending deadline: when the caller should call [`Self::tick`] next.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        let timers = self.executions.values().filter(|e| !e.status.is_terminal()).filter_map(Execution::deadline_ms);
        let windows = self
            .jobs
            .values()
            .filter(|j| !j.backlog.is_empty() && j.status == JobStatus::InProgress)
            .filter_map(|j| j.window.map(|(start, _)| start + MINUTE_MS));
        timers.chain(windows).min()
    }

    /// The things a job targets at creation: each gets an execution now, or
    /// later within the job's rollout rate (see the module docs). Things that
    /// already have a pending execution of the job are skipped.
    pub fn target(
        &mut self,
        job_id: &str,
        things: impl IntoIterator<Item = String>,
        now_ms: i64,
    ) -> Result<Vec<Notification>, JobsEngineError> {
        let job = self.jobs.get_mut(job_id).ok_or_else(|| JobsEngineError::UnknownJob(job_id.to_owned()))?;
        if job.status != JobStatus::InProgress {
            return Err(JobsEngineError::JobNotInProgress { job: job_id.to_owned(), status: job.status });
        }
        job.backlog.extend(things);
        self.changes.jobs.insert(job_id.to_owned());
        Ok(self.release(job_id, now_ms))
    }

    /// Creates the executions a job's rollout allows now from its backlog.
    fn release(&mut self, job_id: &str, now_ms: i64) -> Vec<Notification> {
        let Some(job) = self.jobs.get_mut(job_id).filter(|j| j.status == JobStatus::InProgress) else {
            return Vec::new();
        };
        let take = match job.spec.max_per_minute {
            None => job.backlog.len(),
            Some(limit) => {
                let (start, used) = match job.window {
                    Some((start, used)) if now_ms < start + MINUTE_MS => (start, used),
                    _ => (now_ms, 0),
                };
                let take = (limit.saturating_sub(used) as usize).min(job.backlog.len());
                job.window = Some((start, used + take as u32));
                take
            }
        };
        let released: Vec<String> = job.backlog.drain(..take).collect();
        if !released.is_empty() {
            self.changes.jobs.insert(job_id.to_owned());
        }
        let mut notifications = Vec::new();
        for thing in released {
            // A thing already pending keeps its execution (the error says so); nothing to do.
            notifications.extend(self.add_execution(job_id, &thing, now_ms).unwrap_or_default());
        }
        notifications
    }

    /// GetPendingJobExecutions.
    pub fn get_pending(
        &self,
        thing: &str,
        namespace: Option<&str>,
        request: &GetPendingRequest,
        now_ms: i64,
    ) -> Answer<GetPendingAccepted> {
        let (in_progress, queued): (Vec<_>, Vec<_>) =
            self.pending(thing, namespace).into_iter().partition(|e| e.status == JobExecutionStatus::InProgress);
        Answer {
            result: Ok(GetPendingAccepted {
                in_progress_jobs: in_progress.iter().map(|e| e.summary()).collect(),
                queued_jobs: queued.iter().map(|e| e.summary()).collect(),
                timestamp: secs(now_ms),
                client_token: request.client_token.clone(),
            }),
            notifications: Vec::new(),
        }
    }

    /// DescribeJobExecution; `JobTarget::Next` answers with no `execution` when nothing is pending.
    pub fn describe(
        &self,
        thing: &str,
        namespace: Option<&str>,
        target: &JobTarget,
        request: &DescribeRequest,
        now_ms: i64,
    ) -> Answer<ExecutionAccepted> {
        let token = &request.client_token;
        let execution = match target {
            JobTarget::Next => self.next_pending(thing, namespace),
            JobTarget::Id(id) => match self.execution(thing, id) {
                Some(e) if request.execution_number.is_none_or(|n| n == e.execution_number) => Some(e),
                _ => {
                    return Answer {
                        result: Err(rejected(
                            JobsErrorCode::ResourceNotFound,
                            format!("no execution of job {id} on thing {thing}"),
                            token,
                            now_ms,
                        )),
                        notifications: Vec::new(),
                    };
                }
            },
        };
        let include_document = request.include_job_document.unwrap_or(true);
        Answer {
            result: Ok(ExecutionAccepted {
                execution: execution.map(|e| e.to_wire(include_document.then(|| self.document(e)), now_ms)),
                timestamp: secs(now_ms),
                client_token: token.clone(),
            }),
            notifications: Vec::new(),
        }
    }

    /// StartNextPendingJobExecution: the next pending execution goes
    /// IN_PROGRESS (if QUEUED) with the given details and step timer; the
    /// answer has no `execution` when nothing is pending.
    pub fn start_next(
        &mut self,
        thing: &str,
        namespace: Option<&str>,
        request: &StartNextRequest,
        now_ms: i64,
    ) -> Answer<ExecutionAccepted> {
        let token = &request.client_token;
        if let Err(message) = check_details_and_timeout(&request.status_details, request.step_timeout_in_minutes, false)
        {
            return Answer {
                result: Err(rejected(JobsErrorCode::InvalidRequest, message, token, now_ms)),
                notifications: Vec::new(),
            };
        }
        let Some(next) = self.next_pending(thing, namespace) else {
            return Answer {
                result: Ok(ExecutionAccepted { execution: None, timestamp: secs(now_ms), client_token: token.clone() }),
                notifications: Vec::new(),
            };
        };
        let key = (thing.to_owned(), next.job_id.clone());
        let changes = next.status == JobExecutionStatus::Queued
            || request.status_details.is_some()
            || request.step_timeout_in_minutes.is_some();
        let notifications = self.observing(&[thing.to_owned()], now_ms, |engine| {
            if changes {
                let _ = engine.apply(
                    &key,
                    JobExecutionStatus::InProgress,
                    &request.status_details,
                    request.step_timeout_in_minutes,
                    now_ms,
                );
            }
        });
        let e = &self.executions[&key];
        Answer {
            result: Ok(ExecutionAccepted {
                execution: Some(e.to_wire(Some(self.document(e)), now_ms)),
                timestamp: secs(now_ms),
                client_token: token.clone(),
            }),
            notifications,
        }
    }

    /// UpdateJobExecution (see the module docs for the rules).
    pub fn update(
        &mut self,
        thing: &str,
        job_id: &str,
        request: &UpdateRequest,
        now_ms: i64,
    ) -> Answer<UpdateAccepted> {
        let token = &request.client_token;
        let reject = |code, message: String, state: Option<JobExecutionState>| Answer {
            result: Err(JobsRejected { execution_state: state, ..rejected(code, message, token, now_ms) }),
            notifications: Vec::new(),
        };
        let key = (thing.to_owned(), job_id.to_owned());
        let Some(current) = self.executions.get(&key) else {
            return reject(
                JobsErrorCode::ResourceNotFound,
                format!("no execution of job {job_id} on thing {thing}"),
                None,
            );
        };
        if request.execution_number.is_some_and(|n| n != current.execution_number) {
            return reject(
                JobsErrorCode::ResourceNotFound,
                format!(
                    "job {job_id} on thing {thing} has no execution number {}",
                    request.execution_number.unwrap_or(0)
                ),
                None,
            );
        }
        if !request.status.is_device_settable() {
            return reject(
                JobsErrorCode::InvalidRequest,
                format!(
                    "status {} cannot be set by a device; use IN_PROGRESS, SUCCEEDED, FAILED or REJECTED",
                    request.status.as_str()
                ),
                None,
            );
        }
        if let Err(message) = check_details_and_timeout(&request.status_details, request.step_timeout_in_minutes, true)
        {
            return reject(JobsErrorCode::InvalidRequest, message, None);
        }
        if let Some(expected) = request.expected_version
            && expected != current.version_number
        {
            return reject(
                JobsErrorCode::VersionMismatch,
                format!("expectedVersion {expected} but the execution is at version {}", current.version_number),
                Some(current.state()),
            );
        }
        match current.status {
            JobExecutionStatus::Queued | JobExecutionStatus::InProgress => {}
            JobExecutionStatus::Succeeded | JobExecutionStatus::Failed | JobExecutionStatus::Rejected => {
                return reject(
                    JobsErrorCode::InvalidStateTransition,
                    format!("execution is {}, it cannot become {}", current.status.as_str(), request.status.as_str()),
                    Some(current.state()),
                );
            }
            JobExecutionStatus::Canceled | JobExecutionStatus::Removed | JobExecutionStatus::TimedOut => {
                return reject(
                    JobsErrorCode::TerminalStateReached,
                    format!("execution was ended by the service: {}", current.status.as_str()),
                    None,
                );
            }
        }
        let mut set = None;
        let mut notifications = self.observing(&[thing.to_owned()], now_ms, |engine| {
            set = Some(engine.apply(
                &key,
                request.status,
                &request.status_details,
                request.step_timeout_in_minutes,
                now_ms,
            ));
        });
        if request.status.is_terminal() {
            notifications.extend(self.abort_if_due(job_id, now_ms));
        }
        let e = &self.executions[&key];
        // The state the update set, even when a retry has queued the execution again since.
        let set = set.unwrap_or_else(|| e.state());
        Answer {
            result: Ok(UpdateAccepted {
                execution_state: request.include_job_execution_state.unwrap_or(false).then_some(set),
                job_document: request.include_job_document.unwrap_or(false).then(|| self.document(e).clone()),
                timestamp: secs(now_ms),
                client_token: token.clone(),
            }),
            notifications,
        }
    }

    /// Answers a device's publish on a request topic from its raw payload:
    /// not UTF-8 JSON → `InvalidJson`, JSON of the wrong shape → `InvalidRequest`
    /// (an empty payload counts as `{}`). `topic` must be a request topic.
    pub fn handle(&mut self, topic: &JobsTopic, payload: &[u8], now_ms: i64) -> Reply {
        let thing = topic.thing_name.as_str();
        let ns = topic.namespace.as_deref();
        let outcome: Result<(Value, Vec<Notification>), JobsRejected> = match &topic.kind {
            super::topic::JobsTopicKind::Request { request, response: None } => match request {
                JobsRequest::GetPending => parse_body::<GetPendingRequest>(payload, now_ms)
                    .and_then(|r| finish(self.get_pending(thing, ns, &r, now_ms))),
                JobsRequest::StartNext => parse_body::<StartNextRequest>(payload, now_ms)
                    .and_then(|r| finish(self.start_next(thing, ns, &r, now_ms))),
                JobsRequest::Describe(target) => parse_body::<DescribeRequest>(payload, now_ms)
                    .and_then(|r| finish(self.describe(thing, ns, target, &r, now_ms))),
                JobsRequest::Update(job_id) => parse_body::<UpdateRequest>(payload, now_ms)
                    .and_then(|r| finish(self.update(thing, job_id, &r, now_ms))),
            },
            _ => return invalid_topic_reply(&topic.to_topic(), now_ms),
        };
        let (response, body, notifications) = match outcome {
            Ok((body, notifications)) => (JobsResponse::Accepted, body, notifications),
            Err(rejected) => {
                (JobsResponse::Rejected, serde_json::to_value(rejected).unwrap_or(Value::Null), Vec::new())
            }
        };
        let reply_topic = topic.response_topic(response).unwrap_or_else(|| topic.clone());
        Reply { topic: reply_topic.to_topic(), body, notifications }
    }

    fn document(&self, e: &Execution) -> &JobDocument {
        &self.jobs[&e.job_id].spec.document
    }

    fn apply(
        &mut self,
        key: &(String, String),
        status: JobExecutionStatus,
        details: &Option<StatusDetails>,
        step_timeout: Option<i64>,
        now_ms: i64,
    ) -> JobExecutionState {
        let job_timeout = self.jobs.get(&key.1).and_then(|j| j.spec.in_progress_timeout_minutes);
        let e = self.executions.get_mut(key).expect("caller checked the execution exists");
        if let Some(details) = details {
            e.status_details = details.clone();
        }
        if status == JobExecutionStatus::InProgress && e.started_at_ms.is_none() {
            e.started_at_ms = Some(now_ms);
            e.in_progress_deadline_ms = job_timeout.map(|m| now_ms + m * MINUTE_MS);
        }
        match step_timeout {
            Some(-1) => e.step_deadline_ms = None,
            Some(m) => {
                let step = now_ms + m * MINUTE_MS;
                e.step_deadline_ms = Some(e.in_progress_deadline_ms.map_or(step, |cap| step.min(cap)));
            }
            None => {}
        }
        e.touch(status, now_ms);
        let set = e.state();
        if status.is_terminal() {
            self.retry_if_allowed(key, now_ms);
        }
        self.refresh_job(&key.1.clone());
        set
    }

    fn refresh_job(&mut self, job_id: &str) {
        let mut of_job = self.executions.values().filter(|e| e.job_id == job_id).peekable();
        let all_ended = of_job.peek().is_some() && of_job.all(|e| e.status.is_terminal());
        if let Some(job) = self.jobs.get_mut(job_id)
            && job.status == JobStatus::InProgress
            && !job.spec.continuous
            && job.backlog.is_empty()
            && all_ended
        {
            job.status = JobStatus::Completed;
            self.changes.jobs.insert(job_id.to_owned());
        }
    }

    /// The pending executions of a thing in a namespace, next first.
    pub fn pending(&self, thing: &str, namespace: Option<&str>) -> Vec<&Execution> {
        let mut pending: Vec<&Execution> = self
            .executions
            .range((thing.to_owned(), String::new())..)
            .take_while(|((t, _), _)| t == thing)
            .map(|(_, e)| e)
            .filter(|e| !e.status.is_terminal() && self.jobs[&e.job_id].spec.namespace.as_deref() == namespace)
            .collect();
        pending.sort_by_key(|e| (e.status != JobExecutionStatus::InProgress, e.order));
        pending
    }

    /// The next pending execution of a thing in a namespace.
    pub fn next_pending(&self, thing: &str, namespace: Option<&str>) -> Option<&Execution> {
        self.pending(thing, namespace).into_iter().next()
    }

    fn namespaces_of(&self, thing: &str) -> BTreeSet<Option<String>> {
        let mut namespaces: BTreeSet<Option<String>> = self
            .executions
            .range((thing.to_owned(), String::new())..)
            .take_while(|((t, _), _)| t == thing)
            .map(|((_, job), _)| self.jobs[job].spec.namespace.clone())
            .collect();
        namespaces.insert(None);
        namespaces
    }

    fn pending_keys(&self, thing: &str, namespace: Option<&str>) -> Vec<PendingKey> {
        self.pending(thing, namespace).iter().map(|e| (e.job_id.clone(), e.execution_number)).collect()
    }

    /// Runs `change` and returns the notifications its effect on `things` calls for.
    /// Records every execution of `things` whose version or number differs
    /// after `change` (or that appeared or vanished) in [`Self::take_changes`].
    fn observing(&mut self, things: &[String], now_ms: i64, change: impl FnOnce(&mut Self)) -> Vec<Notification> {
        let things: BTreeSet<&String> = things.iter().collect();
        let versions = |engine: &Self| -> BTreeMap<(String, String), (i64, i64)> {
            things
                .iter()
                .flat_map(|t| {
                    engine
                        .executions
                        .range(((*t).clone(), String::new())..)
                        .take_while(move |((owner, _), _)| owner == *t)
                })
                .map(|(k, e)| (k.clone(), (e.version_number, e.execution_number)))
                .collect()
        };
        let versions_before = versions(self);
        let before: BTreeMap<(String, Option<String>), Vec<PendingKey>> = things
            .iter()
            .flat_map(|t| self.namespaces_of(t).into_iter().map(move |ns| ((*t).clone(), ns)))
            .map(|(t, ns)| {
                let keys = self.pending_keys(&t, ns.as_deref());
                ((t, ns), keys)
            })
            .collect();
        change(self);
        let versions_after = versions(self);
        for (key, version) in &versions_before {
            if versions_after.get(key) != Some(version) {
                self.changes.executions.insert(key.clone());
            }
        }
        for key in versions_after.keys() {
            if !versions_before.contains_key(key) {
                self.changes.executions.insert(key.clone());
            }
        }
        let mut notifications = Vec::new();
        for thing in things {
            for ns in self.namespaces_of(thing) {
                let after = self.pending_keys(thing, ns.as_deref());
                let before = before.get(&(thing.clone(), ns.clone())).cloned().unwrap_or_default();
                if after != before {
                    notifications.push(self.notify(thing, ns.as_deref(), now_ms));
                }
                if after.first() != before.first() {
                    notifications.push(self.notify_next(thing, ns.as_deref(), now_ms));
                }
            }
        }
        notifications
    }

    fn notify(&self, thing: &str, namespace: Option<&str>, now_ms: i64) -> Notification {
        let mut jobs: BTreeMap<JobExecutionStatus, Vec<JobExecutionSummary>> = BTreeMap::new();
        for e in self.pending(thing, namespace).into_iter().take(NOTIFY_MAX_SUMMARIES) {
            jobs.entry(e.status).or_default().push(e.summary());
        }
        Notification {
            topic: notification_topic(thing, namespace, false),
            payload: NotificationPayload::Notify(JobExecutionsChanged { timestamp: secs(now_ms), jobs }),
        }
    }

    fn notify_next(&self, thing: &str, namespace: Option<&str>, now_ms: i64) -> Notification {
        let execution = self.next_pending(thing, namespace).map(|e| e.to_wire(Some(self.document(e)), now_ms));
        Notification {
            topic: notification_topic(thing, namespace, true),
            payload: NotificationPayload::NotifyNext(NextJobExecutionChanged { timestamp: secs(now_ms), execution }),
        }
    }
}

fn notification_topic(thing: &str, namespace: Option<&str>, next: bool) -> JobsTopic {
    let kind = if next { super::topic::JobsTopicKind::NotifyNext } else { super::topic::JobsTopicKind::Notify };
    JobsTopic { thing_name: thing.to_owned(), namespace: namespace.map(str::to_owned), kind }
}

fn check_details_and_timeout(
    details: &Option<StatusDetails>,
    step_timeout: Option<i64>,
    allow_cancel: bool,
) -> Result<(), String> {
    if let Some(details) = details {
        check_status_details(details)?;
    }
    if let Some(minutes) = step_timeout {
        check_step_timeout(minutes, allow_cancel)?;
    }
    Ok(())
}

fn parse_body<T: DeserializeOwned>(payload: &[u8], now_ms: i64) -> Result<T, JobsRejected> {
    let payload = if payload.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { payload };
    let value: Value = serde_json::from_slice(payload).map_err(|err| {
        rejected(JobsErrorCode::InvalidJson, format!("payload is not UTF-8 JSON: {err}"), &None, now_ms)
    })?;
    let token = value.get("clientToken").and_then(Value::as_str).map(str::to_owned);
    serde_json::from_value(value)
        .map_err(|err| rejected(JobsErrorCode::InvalidRequest, format!("invalid request: {err}"), &token, now_ms))
}

fn finish<T: serde::Serialize>(answer: Answer<T>) -> Result<(Value, Vec<Notification>), JobsRejected> {
    let body = answer.result?;
    Ok((serde_json::to_value(body).unwrap_or(Value::Null), answer.notifications))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::topic::JobsTopicKind;
    use serde_json::json;

    const NS: &str = "aws-gg-deployment";

    fn spec(id: &str, namespace: Option<&str>) -> JobSpec {
        JobSpec {
            job_id: id.into(),
            document: json!({"op": id}).as_object().cloned().unwrap_or_default(),
            namespace: namespace.map(str::to_owned),
            in_progress_timeout_minutes: None,
            continuous: false,
            retry: Vec::new(),
            abort: Vec::new(),
            max_per_minute: None,
        }
    }

    fn engine_with(jobs: &[&str], thing: &str) -> JobsEngine {
        let mut engine = JobsEngine::new();
        for (i, job) in jobs.iter().enumerate() {
            engine.create_job(spec(job, None)).unwrap();
            engine.add_execution(job, thing, 1_000 * (i as i64 + 1)).unwrap();
        }
        engine
    }

    fn update(status: JobExecutionStatus) -> UpdateRequest {
        UpdateRequest {
            status,
            status_details: None,
            expected_version: None,
            execution_number: None,
            include_job_execution_state: None,
            include_job_document: None,
            step_timeout_in_minutes: None,
            client_token: Some("tok".into()),
        }
    }

    fn code<T: std::fmt::Debug>(answer: &Answer<T>) -> JobsErrorCode {
        answer.result.as_ref().expect_err("should be rejected").code
    }

    fn topics(notifications: &[Notification]) -> Vec<String> {
        notifications.iter().map(|n| n.topic.to_topic()).collect()
    }

    fn next_job(n: &Notification) -> Option<String> {
        match &n.payload {
            NotificationPayload::NotifyNext(body) => body.execution.as_ref().map(|e| e.job_id.clone()),
            NotificationPayload::Notify(_) => panic!("not notify-next"),
        }
    }

    #[test]
    fn a_queued_execution_is_announced_on_notify_and_notify_next_with_version_one() {
        let mut engine = JobsEngine::new();
        engine.create_job(spec("j1", None)).unwrap();
        let notes = engine.add_execution("j1", "t", 5_500).unwrap();
        assert_eq!(topics(&notes), ["$aws/things/t/jobs/notify", "$aws/things/t/jobs/notify-next"]);
        assert_eq!(
            notes[0].payload.to_json(),
            json!({"timestamp": 5, "jobs": {"QUEUED": [
                {"jobId": "j1", "queuedAt": 5, "lastUpdatedAt": 5, "versionNumber": 1, "executionNumber": 1}]}})
        );
        assert_eq!(
            notes[1].payload.to_json()["execution"],
            json!({"jobId": "j1", "thingName": "t", "jobDocument": {"op": "j1"}, "status": "QUEUED",
                   "queuedAt": 5, "lastUpdatedAt": 5, "versionNumber": 1, "executionNumber": 1})
        );
    }

    #[test]
    fn starting_the_only_job_publishes_nothing() {
        let mut engine = engine_with(&["j1"], "t");
        let answer = engine.update("t", "j1", &update(JobExecutionStatus::InProgress), 9_000);
        assert!(answer.result.is_ok());
        assert!(answer.notifications.is_empty());
        assert_eq!(engine.execution("t", "j1").unwrap().version_number, 2);
        assert_eq!(engine.execution("t", "j1").unwrap().started_at_ms, Some(9_000));
    }

    #[test]
    fn next_is_the_oldest_in_progress_then_the_oldest_queued() {
        let mut engine = engine_with(&["j1", "j2", "j3"], "t");
        assert_eq!(engine.next_pending("t", None).unwrap().job_id, "j1");
        let answer = engine.update("t", "j3", &update(JobExecutionStatus::InProgress), 9_000);
        assert_eq!(topics(&answer.notifications), ["$aws/things/t/jobs/notify", "$aws/things/t/jobs/notify-next"]);
        assert_eq!(next_job(&answer.notifications[1]).as_deref(), Some("j3"));
        let pending = engine.get_pending("t", None, &GetPendingRequest::default(), 9_000).result.unwrap();
        let ids = |list: &[JobExecutionSummary]| list.iter().map(|s| s.job_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&pending.in_progress_jobs), ["j3"]);
        assert_eq!(ids(&pending.queued_jobs), ["j1", "j2"]);
        match &answer.notifications[0].payload {
            NotificationPayload::Notify(body) => {
                assert_eq!(
                    body.jobs.keys().copied().collect::<Vec<_>>(),
                    [JobExecutionStatus::InProgress, JobExecutionStatus::Queued]
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_last_pending_execution_ending_publishes_empty_notify_and_notify_next() {
        let mut engine = engine_with(&["j1"], "t");
        let answer = engine.update("t", "j1", &update(JobExecutionStatus::Succeeded), 9_000);
        assert_eq!(answer.notifications[0].payload.to_json(), json!({"timestamp": 9, "jobs": {}}));
        assert_eq!(answer.notifications[1].payload.to_json(), json!({"timestamp": 9}));
        assert_eq!(engine.job("j1").unwrap().status, JobStatus::Completed);
    }

    #[test]
    fn a_namespaced_job_is_seen_only_on_its_namespace_topics() {
        let mut engine = JobsEngine::new();
        engine.create_job(spec("deploy", Some(NS))).unwrap();
        let notes = engine.add_execution("deploy", "core", 1_000).unwrap();
        assert_eq!(
            topics(&notes),
            [
                "$aws/things/core/jobs/notify-namespace-aws-gg-deployment",
                "$aws/things/core/jobs/notify-next-namespace-aws-gg-deployment"
            ]
        );
        assert!(engine.next_pending("core", None).is_none());
        let plain = engine.describe("core", None, &JobTarget::Next, &DescribeRequest::default(), 2_000);
        assert_eq!(plain.result.unwrap().execution, None);
        let namespaced = engine.describe("core", Some(NS), &JobTarget::Next, &DescribeRequest::default(), 2_000);
        let execution = namespaced.result.unwrap().execution.unwrap();
        assert_eq!(execution.job_id, "deploy");
        assert_eq!(execution.job_document.unwrap()["op"], "deploy");
        let by_id = engine.describe("core", None, &JobTarget::Id("deploy".into()), &DescribeRequest::default(), 2_000);
        assert!(by_id.result.is_ok());
    }

    #[test]
    fn describe_rejects_unknown_executions_and_can_leave_out_the_document() {
        let engine = engine_with(&["j1"], "t");
        let unknown = engine.describe("t", None, &JobTarget::Id("nope".into()), &DescribeRequest::default(), 0);
        assert_eq!(code(&unknown), JobsErrorCode::ResourceNotFound);
        let other_thing = engine.describe("u", None, &JobTarget::Id("j1".into()), &DescribeRequest::default(), 0);
        assert_eq!(code(&other_thing), JobsErrorCode::ResourceNotFound);
        let wrong_number = DescribeRequest { execution_number: Some(2), ..Default::default() };
        assert_eq!(
            code(&engine.describe("t", None, &JobTarget::Id("j1".into()), &wrong_number, 0)),
            JobsErrorCode::ResourceNotFound
        );
        let no_doc =
            DescribeRequest { include_job_document: Some(false), client_token: Some("c".into()), ..Default::default() };
        let answer = engine.describe("t", None, &JobTarget::Id("j1".into()), &no_doc, 0).result.unwrap();
        assert_eq!(answer.client_token.as_deref(), Some("c"));
        assert_eq!(answer.execution.unwrap().job_document, None);
    }

    #[test]
    fn start_next_starts_the_next_execution_or_answers_without_one() {
        let mut engine = JobsEngine::new();
        let empty = engine.start_next("t", None, &StartNextRequest::default(), 0).result.unwrap();
        assert_eq!(empty.execution, None);
        let mut engine = engine_with(&["j1", "j2"], "t");
        let request = StartNextRequest {
            status_details: Some([("step".to_owned(), "download".to_owned())].into()),
            step_timeout_in_minutes: Some(5),
            client_token: Some("c".into()),
        };
        let answer = engine.start_next("t", None, &request, 60_000);
        assert!(answer.notifications.is_empty(), "j1 was already next");
        let execution = answer.result.unwrap().execution.unwrap();
        assert_eq!(
            (execution.job_id.as_str(), execution.status, execution.version_number),
            ("j1", JobExecutionStatus::InProgress, 2)
        );
        assert_eq!(execution.started_at, Some(60));
        assert_eq!(execution.approximate_seconds_before_timed_out, Some(300));
        assert_eq!(execution.status_details["step"], "download");
        let again = engine.start_next("t", None, &StartNextRequest::default(), 61_000).result.unwrap();
        assert_eq!(again.execution.unwrap().version_number, 2, "an IN_PROGRESS next with nothing new is not changed");
        let bad = StartNextRequest { step_timeout_in_minutes: Some(-1), ..Default::default() };
        assert_eq!(code(&engine.start_next("t", None, &bad, 0)), JobsErrorCode::InvalidRequest);
    }

    #[test]
    fn update_rejects_statuses_a_device_cannot_set_and_bad_contents() {
        let mut engine = engine_with(&["j1"], "t");
        for status in [
            JobExecutionStatus::Queued,
            JobExecutionStatus::Canceled,
            JobExecutionStatus::TimedOut,
            JobExecutionStatus::Removed,
        ] {
            assert_eq!(code(&engine.update("t", "j1", &update(status), 0)), JobsErrorCode::InvalidRequest);
        }
        let bad_details = UpdateRequest {
            status_details: Some([("bad key".to_owned(), "v".to_owned())].into()),
            ..update(JobExecutionStatus::InProgress)
        };
        assert_eq!(code(&engine.update("t", "j1", &bad_details, 0)), JobsErrorCode::InvalidRequest);
        let bad_timeout = UpdateRequest { step_timeout_in_minutes: Some(0), ..update(JobExecutionStatus::InProgress) };
        assert_eq!(code(&engine.update("t", "j1", &bad_timeout, 0)), JobsErrorCode::InvalidRequest);
        assert_eq!(
            code(&engine.update("t", "nope", &update(JobExecutionStatus::InProgress), 0)),
            JobsErrorCode::ResourceNotFound
        );
        let wrong_number = UpdateRequest { execution_number: Some(7), ..update(JobExecutionStatus::InProgress) };
        assert_eq!(code(&engine.update("t", "j1", &wrong_number, 0)), JobsErrorCode::ResourceNotFound);
        assert_eq!(engine.execution("t", "j1").unwrap().version_number, 1, "rejections change nothing");
    }

    #[test]
    fn update_with_a_stale_expected_version_is_a_version_mismatch_with_the_state() {
        let mut engine = engine_with(&["j1"], "t");
        let stale = UpdateRequest { expected_version: Some(3), ..update(JobExecutionStatus::InProgress) };
        let rejected = engine.update("t", "j1", &stale, 0).result.unwrap_err();
        assert_eq!(rejected.code, JobsErrorCode::VersionMismatch);
        assert_eq!(rejected.client_token.as_deref(), Some("tok"));
        assert_eq!(rejected.execution_state.unwrap().version_number, 1);
        let current = UpdateRequest {
            expected_version: Some(1),
            include_job_execution_state: Some(true),
            include_job_document: Some(true),
            ..update(JobExecutionStatus::InProgress)
        };
        let accepted = engine.update("t", "j1", &current, 0).result.unwrap();
        assert_eq!(accepted.execution_state.unwrap().version_number, 2);
        assert_eq!(accepted.job_document.unwrap()["op"], "j1");
    }

    #[test]
    fn updating_an_execution_the_device_ended_is_an_invalid_state_transition() {
        let mut engine = engine_with(&["j1"], "t");
        engine.update("t", "j1", &update(JobExecutionStatus::Succeeded), 0).result.unwrap();
        let rejected = engine.update("t", "j1", &update(JobExecutionStatus::InProgress), 0).result.unwrap_err();
        assert_eq!(rejected.code, JobsErrorCode::InvalidStateTransition);
        assert_eq!(rejected.execution_state.unwrap().status, JobExecutionStatus::Succeeded);
    }

    #[test]
    fn updating_an_execution_the_service_ended_is_terminal_state_reached() {
        let mut engine = engine_with(&["j1"], "t");
        engine.cancel_job("j1", false, false, 0).unwrap();
        let rejected = engine.update("t", "j1", &update(JobExecutionStatus::InProgress), 0).result.unwrap_err();
        assert_eq!(rejected.code, JobsErrorCode::TerminalStateReached);
    }

    #[test]
    fn cancel_leaves_in_progress_executions_unless_forced() {
        let mut engine = engine_with(&["j1"], "a");
        engine.add_execution("j1", "b", 2_000).unwrap();
        engine.update("a", "j1", &update(JobExecutionStatus::InProgress), 3_000).result.unwrap();
        assert_eq!(
            engine.cancel_job("j1", false, true, 4_000),
            Err(JobsEngineError::InProgressExecutions("j1".into()))
        );
        assert_eq!(
            engine.execution("b", "j1").unwrap().status,
            JobExecutionStatus::Queued,
            "strict refusal changes nothing"
        );
        let notes = engine.cancel_job("j1", false, false, 4_000).unwrap();
        assert_eq!(topics(&notes), ["$aws/things/b/jobs/notify", "$aws/things/b/jobs/notify-next"]);
        assert_eq!(engine.execution("a", "j1").unwrap().status, JobExecutionStatus::InProgress);
        assert_eq!(engine.execution("b", "j1").unwrap().status, JobExecutionStatus::Canceled);
        assert!(!engine.execution("b", "j1").unwrap().force_canceled, "a QUEUED one is not force-cancelled");
        let notes = engine.cancel_job("j1", true, true, 5_000).unwrap();
        assert_eq!(engine.execution("a", "j1").unwrap().status, JobExecutionStatus::Canceled);
        assert!(engine.execution("a", "j1").unwrap().force_canceled);
        assert_eq!(
            notes[1].payload.to_json(),
            json!({"timestamp": 5}),
            "empty notify-next: the nucleus reads a cancellation"
        );
        assert!(matches!(engine.add_execution("j1", "c", 0), Err(JobsEngineError::JobNotInProgress { .. })));
        assert_eq!(engine.cancel_job("nope", true, false, 0), Err(JobsEngineError::UnknownJob("nope".into())));
    }

    #[test]
    fn a_rollout_rate_creates_executions_per_minute_window_and_the_rest_waits() {
        let mut engine = JobsEngine::new();
        engine.create_job(JobSpec { max_per_minute: Some(2), ..spec("j", None) }).unwrap();
        let things: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        engine.target("j", things.clone(), 0).unwrap();
        let created = |e: &JobsEngine, job: &str| things.iter().filter(|t| e.execution(t, job).is_some()).count();
        // (time, executions created by then)
        for (now, want) in [(0, 2), (59_999, 2), (60_000, 4), (90_000, 4), (120_000, 5)] {
            engine.tick(now);
            assert_eq!(created(&engine, "j"), want, "at {now} ms");
        }
        assert_eq!(engine.next_deadline_ms(), None, "nothing left to release");
        for t in &things {
            engine.update(t, "j", &update(JobExecutionStatus::Succeeded), 130_000).result.unwrap();
        }
        assert_eq!(engine.job("j").unwrap().status, JobStatus::Completed);

        let mut engine = JobsEngine::new();
        engine.create_job(JobSpec { max_per_minute: Some(1), ..spec("k", None) }).unwrap();
        engine.target("k", things.clone(), 0).unwrap();
        assert_eq!(engine.next_deadline_ms(), Some(MINUTE_MS));
        for t in &things[..1] {
            engine.update(t, "k", &update(JobExecutionStatus::Succeeded), 1_000).result.unwrap();
        }
        assert_eq!(engine.job("k").unwrap().status, JobStatus::InProgress, "not complete while things wait");
        engine.cancel_job("k", false, false, 2_000).unwrap();
        engine.tick(MINUTE_MS);
        assert_eq!(created(&engine, "k"), 1, "a cancelled job releases nothing");
    }

    #[test]
    fn failed_and_timed_out_executions_are_retried_as_the_criteria_allow() {
        let retry = |failure_type, n| RetryCriterion { failure_type, number_of_retries: n };
        // (criteria, how each attempt ends, statuses after each end, retry attempts seen)
        type Case = (Vec<RetryCriterion>, Vec<JobExecutionStatus>, Vec<JobExecutionStatus>);
        use JobExecutionStatus::{Failed, Queued, Rejected, TimedOut};
        let cases: Vec<Case> = vec![
            (vec![retry(FailureType::Failed, 2)], vec![Failed, Failed, Failed], vec![Queued, Queued, Failed]),
            (vec![retry(FailureType::Failed, 2)], vec![Rejected], vec![Rejected]),
            (vec![retry(FailureType::All, 1)], vec![TimedOut, Failed], vec![Queued, Failed]),
            (vec![retry(FailureType::All, 3), retry(FailureType::TimedOut, 0)], vec![TimedOut, Failed], vec![TimedOut]),
            (vec![], vec![Failed], vec![Failed]),
            (vec![retry(FailureType::Failed, 50)], vec![Failed; 11], [vec![Queued; 10], vec![Failed]].concat()),
        ];
        for (criteria, ends, want) in cases {
            let mut engine = JobsEngine::new();
            engine
                .create_job(JobSpec {
                    retry: criteria.clone(),
                    in_progress_timeout_minutes: Some(1),
                    ..spec("j", None)
                })
                .unwrap();
            engine.add_execution("j", "t", 0).unwrap();
            let mut now = 0;
            for (end, want) in ends.iter().zip(&want) {
                now += 1_000;
                engine.update("t", "j", &update(JobExecutionStatus::InProgress), now).result.unwrap();
                if *end == TimedOut {
                    now += 2 * MINUTE_MS;
                    engine.tick(now);
                } else {
                    let request = UpdateRequest { include_job_execution_state: Some(true), ..update(*end) };
                    let answer = engine.update("t", "j", &request, now).result.unwrap();
                    assert_eq!(answer.execution_state.map(|s| s.status), Some(*end), "the answer shows what was set");
                }
                assert_eq!(engine.execution("t", "j").unwrap().status, *want, "{criteria:?} after {end:?}");
            }
            let e = engine.execution("t", "j").unwrap();
            assert_eq!(e.execution_number, 1 + i64::from(e.retry_attempt), "{criteria:?}");
        }
    }

    #[test]
    fn the_job_is_cancelled_once_failures_reach_an_abort_threshold() {
        let abort = |failure_type, threshold_percentage, min| AbortCriterion {
            failure_type,
            threshold_percentage,
            min_number_of_executed_things: min,
        };
        use JobExecutionStatus::{Failed, Rejected, Succeeded};
        // (criterion, how things a and b end, whether c and d, still queued, are cancelled)
        let cases = [
            (abort(FailureType::Failed, 50.0, 2), [Succeeded, Failed], true),
            (abort(FailureType::Failed, 50.1, 2), [Succeeded, Failed], false),
            (abort(FailureType::Failed, 50.0, 3), [Succeeded, Failed], false),
            (abort(FailureType::Rejected, 50.0, 2), [Succeeded, Failed], false),
            (abort(FailureType::All, 100.0, 2), [Rejected, Failed], true),
        ];
        for (criterion, ends, cancels) in cases {
            let mut engine = JobsEngine::new();
            engine.create_job(JobSpec { abort: vec![criterion], ..spec("j", None) }).unwrap();
            for thing in ["a", "b", "c", "d"] {
                engine.add_execution("j", thing, 0).unwrap();
            }
            let mut notes = Vec::new();
            for (thing, end) in ["a", "b"].into_iter().zip(ends) {
                notes = engine.update(thing, "j", &update(end), 1_000).notifications;
            }
            let status = engine.execution("c", "j").unwrap().status;
            assert_eq!(status == JobExecutionStatus::Canceled, cancels, "{criterion:?} {ends:?}");
            assert_eq!(engine.job("j").unwrap().status == JobStatus::Canceled, cancels);
            if cancels {
                assert!(topics(&notes).contains(&"$aws/things/d/jobs/notify-next".to_string()), "{notes:?}");
            }
        }
    }

    #[test]
    fn cancel_execution_follows_status_force_and_expected_version() {
        let mut engine = engine_with(&["j1", "j2"], "a");
        engine.update("a", "j1", &update(JobExecutionStatus::InProgress), 3_000).result.unwrap();
        let version = engine.execution("a", "j1").unwrap().version_number;
        type Case<'a> = (&'a str, bool, Option<i64>, Result<JobExecutionStatus, &'a str>);
        let cases: [Case<'_>; 4] = [
            ("j1", false, None, Err("invalid transition")),
            ("j1", true, Some(version + 7), Err("conflict")),
            ("j1", true, Some(version), Ok(JobExecutionStatus::Canceled)),
            ("j2", false, None, Ok(JobExecutionStatus::Canceled)),
        ];
        for (job, force, expected, want) in cases {
            let got = engine.cancel_execution(job, "a", force, expected, None, 4_000);
            match (want, got) {
                (Ok(status), Ok(_)) => assert_eq!(engine.execution("a", job).unwrap().status, status),
                (Err("invalid transition"), Err(JobsEngineError::InvalidStateTransition { .. })) => {}
                (Err("conflict"), Err(JobsEngineError::VersionConflict { .. })) => {}
                (want, got) => panic!("{job} force={force}: want {want:?}, got {got:?}"),
            }
        }
        assert!(matches!(
            engine.cancel_execution("j2", "a", true, None, None, 5_000),
            Err(JobsEngineError::InvalidStateTransition { status: "CANCELED", .. })
        ));
        assert!(matches!(
            engine.cancel_execution("j1", "zz", true, None, None, 5_000),
            Err(JobsEngineError::UnknownExecution { .. })
        ));
    }

    #[test]
    fn delete_needs_force_while_executions_run_and_takes_them_off_the_lists() {
        let mut engine = engine_with(&["j1"], "a");
        engine.update("a", "j1", &update(JobExecutionStatus::InProgress), 3_000).result.unwrap();
        assert_eq!(engine.delete_job("j1", false, 4_000), Err(JobsEngineError::JobRunning("j1".into())));
        engine.take_changes();
        let notes = engine.delete_job("j1", true, 4_000).unwrap();
        assert_eq!(topics(&notes), ["$aws/things/a/jobs/notify", "$aws/things/a/jobs/notify-next"]);
        assert!(engine.job("j1").is_none() && engine.execution("a", "j1").is_none());
        let changes = engine.take_changes();
        assert_eq!(changes.jobs, BTreeSet::from(["j1".to_string()]));
        assert_eq!(changes.executions, BTreeSet::from([("a".to_string(), "j1".to_string())]));
        assert_eq!(engine.delete_job("j1", true, 0), Err(JobsEngineError::UnknownJob("j1".into())));
    }

    #[test]
    fn a_restored_engine_answers_as_the_original_and_queues_after_it() {
        let mut engine = engine_with(&["j1", "j2"], "a");
        engine.update("a", "j2", &update(JobExecutionStatus::InProgress), 3_000).result.unwrap();
        let changes = engine.take_changes();
        assert!(changes.jobs.contains("j1") && changes.executions.contains(&("a".into(), "j2".into())));
        let json = serde_json::to_string(&(engine.jobs().collect::<Vec<_>>(), engine.executions().collect::<Vec<_>>()))
            .unwrap();
        let (jobs, executions): (Vec<Job>, Vec<Execution>) = serde_json::from_str(&json).unwrap();
        let mut restored = JobsEngine::restore(jobs, executions);
        let keys = |e: &JobsEngine| e.pending("a", None).iter().map(|x| x.job_id.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&restored), keys(&engine));
        restored.create_job(spec("j3", None)).unwrap();
        restored.add_execution("j3", "a", 9_000).unwrap();
        assert_eq!(keys(&restored), ["j2", "j1", "j3"], "a new execution queues after the restored ones");
        assert!(restored.take_changes().executions.contains(&("a".into(), "j3".into())));
    }

    #[test]
    fn a_thing_leaving_the_group_gets_removed_and_rejoining_gets_the_next_execution_number() {
        let mut engine = JobsEngine::new();
        engine.create_job(JobSpec { continuous: true, ..spec("c", None) }).unwrap();
        engine.add_execution("c", "t", 1_000).unwrap();
        assert!(matches!(engine.add_execution("c", "t", 1_000), Err(JobsEngineError::ExecutionPending { .. })));
        let notes = engine.remove_execution("c", "t", 2_000).unwrap();
        assert_eq!(notes.len(), 2);
        let removed = engine.execution("t", "c").unwrap();
        assert_eq!((removed.status, removed.version_number), (JobExecutionStatus::Removed, 2));
        assert!(engine.remove_execution("c", "t", 2_500).unwrap().is_empty(), "already ended");
        assert_eq!(engine.job("c").unwrap().status, JobStatus::InProgress, "continuous jobs do not complete");
        engine.add_execution("c", "t", 3_000).unwrap();
        let again = engine.execution("t", "c").unwrap();
        assert_eq!((again.execution_number, again.version_number, again.status), (2, 1, JobExecutionStatus::Queued));
        assert!(matches!(engine.remove_execution("c", "u", 0), Err(JobsEngineError::UnknownExecution { .. })));
    }

    #[test]
    fn the_in_progress_timer_times_the_execution_out_and_step_timers_cannot_pass_it() {
        let mut engine = JobsEngine::new();
        engine.create_job(JobSpec { in_progress_timeout_minutes: Some(20), ..spec("j", None) }).unwrap();
        engine.add_execution("j", "t", 0).unwrap();
        let step = |minutes| UpdateRequest {
            step_timeout_in_minutes: Some(minutes),
            ..update(JobExecutionStatus::InProgress)
        };
        // The guide's example: a 20-minute job started at 0, steps of 7, 5 and 9 minutes.
        engine.update("t", "j", &update(JobExecutionStatus::InProgress), 0).result.unwrap();
        engine.update("t", "j", &step(7), 5 * MINUTE_MS).result.unwrap();
        engine.update("t", "j", &step(5), 10 * MINUTE_MS).result.unwrap();
        engine.update("t", "j", &step(9), 13 * MINUTE_MS).result.unwrap();
        assert_eq!(engine.next_deadline_ms(), Some(20 * MINUTE_MS), "13 + 9 is cut at 20");
        assert!(engine.tick(20 * MINUTE_MS - 1).is_empty());
        let notes = engine.tick(20 * MINUTE_MS);
        assert_eq!(notes.len(), 2);
        assert_eq!(engine.execution("t", "j").unwrap().status, JobExecutionStatus::TimedOut);
        assert_eq!(
            engine.job("j").unwrap().status,
            JobStatus::Completed,
            "a timed-out last execution completes a snapshot job"
        );
        assert_eq!(engine.next_deadline_ms(), None);
        assert_eq!(
            code(&engine.update("t", "j", &update(JobExecutionStatus::Succeeded), 0)),
            JobsErrorCode::TerminalStateReached
        );
    }

    #[test]
    fn a_step_timer_times_out_and_minus_one_clears_it() {
        let mut engine = engine_with(&["j"], "t");
        let step = |minutes| UpdateRequest {
            step_timeout_in_minutes: Some(minutes),
            ..update(JobExecutionStatus::InProgress)
        };
        engine.update("t", "j", &step(1), 0).result.unwrap();
        assert_eq!(engine.next_deadline_ms(), Some(MINUTE_MS));
        engine.update("t", "j", &step(-1), 1).result.unwrap();
        assert_eq!(engine.next_deadline_ms(), None);
        assert!(engine.tick(100 * MINUTE_MS).is_empty());
        engine.update("t", "j", &step(2), 10).result.unwrap();
        assert_eq!(engine.tick(2 * MINUTE_MS + 10).len(), 2);
        assert_eq!(engine.execution("t", "j").unwrap().status, JobExecutionStatus::TimedOut);
    }

    #[test]
    fn control_plane_refuses_bad_ids_timeouts_and_duplicates() {
        let mut engine = JobsEngine::new();
        assert!(matches!(engine.create_job(spec("bad id", None)), Err(JobsEngineError::InvalidId(_))));
        assert!(matches!(engine.create_job(spec("j", Some("a/b"))), Err(JobsEngineError::InvalidId(_))));
        let slow = JobSpec { in_progress_timeout_minutes: Some(10_081), ..spec("j", None) };
        assert_eq!(engine.create_job(slow), Err(JobsEngineError::InvalidTimeout(10_081)));
        engine.create_job(spec("j", None)).unwrap();
        assert_eq!(engine.create_job(spec("j", None)), Err(JobsEngineError::JobExists("j".into())));
        assert_eq!(engine.add_execution("k", "t", 0), Err(JobsEngineError::UnknownJob("k".into())));
    }

    #[test]
    fn raw_requests_are_answered_on_their_accepted_or_rejected_topic() {
        let mut engine = engine_with(&["j1"], "t");
        let topic = |s: &str| JobsTopic::parse(s).unwrap();
        let reply = engine.handle(&topic("$aws/things/t/jobs/get"), b"", 7_000);
        assert_eq!(reply.topic, "$aws/things/t/jobs/get/accepted");
        assert_eq!(reply.body["queuedJobs"][0]["jobId"], "j1");
        let reply = engine.handle(&topic("$aws/things/t/jobs/get"), b"{not json", 7_000);
        assert_eq!(reply.topic, "$aws/things/t/jobs/get/rejected");
        assert_eq!(reply.body["code"], "InvalidJson");
        let reply =
            engine.handle(&topic("$aws/things/t/jobs/j1/update"), br#"{"clientToken":"c","status":"DONE"}"#, 7_000);
        assert_eq!(
            (reply.body["code"].as_str(), reply.body["clientToken"].as_str()),
            (Some("InvalidRequest"), Some("c"))
        );
        // What the Java nucleus sends: its whole request object.
        let nucleus = br#"{"thingName":"t","jobId":"j1","status":"SUCCEEDED","statusDetails":{"detailed-deployment-status":"SUCCESSFUL"}}"#;
        let reply = engine.handle(&topic("$aws/things/t/jobs/j1/update"), nucleus, 8_000);
        assert_eq!(reply.topic, "$aws/things/t/jobs/j1/update/accepted");
        assert_eq!(reply.body, json!({"timestamp": 8}));
        assert_eq!(reply.notifications.len(), 2);
        let reply = engine.handle(&topic("$aws/things/t/jobs/notify"), b"{}", 9_000);
        assert_eq!(
            (reply.topic.as_str(), reply.body["code"].as_str()),
            ("$aws/things/t/jobs/notify/rejected", Some("InvalidTopic"))
        );
        let reply = invalid_topic_reply("$aws/things/t/jobs/j1/delete", 9_000);
        assert_eq!(reply.topic, "$aws/things/t/jobs/j1/delete/rejected");
        assert_eq!(
            reply.body,
            json!({"code": "InvalidTopic", "message": "topic $aws/things/t/jobs/j1/delete maps to no Jobs API", "timestamp": 9})
        );
        let reply = engine.handle(&topic("$aws/things/t/jobs/$next/get"), br#"{"clientToken":"x"}"#, 9_000);
        assert_eq!(reply.body, json!({"timestamp": 9, "clientToken": "x"}));
        assert_eq!(invalid_topic("$aws/things/t/jobs/x", 1_000).code, JobsErrorCode::InvalidTopic);
        let reply = throttled_reply("$aws/things/t/jobs/j1/update", 9_000);
        assert_eq!(reply.topic, "$aws/things/t/jobs/j1/update/rejected");
        assert_eq!(reply.body, json!({"code": "RequestThrottled", "message": "Rate exceeded", "timestamp": 9}));
        assert!(reply.notifications.is_empty());
    }

    type ThingNamespace = (String, Option<String>);

    /// xorshift64*: a small seeded generator, enough to drive random sequences.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
        }
    }

    #[test]
    fn random_operation_sequences_keep_the_invariants() {
        const THINGS: [&str; 2] = ["a", "b"];
        const STATUSES: [JobExecutionStatus; 5] = [
            JobExecutionStatus::InProgress,
            JobExecutionStatus::Succeeded,
            JobExecutionStatus::Failed,
            JobExecutionStatus::Rejected,
            JobExecutionStatus::Queued,
        ];
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut engine = JobsEngine::new();
            let namespaces = [None, Some(NS)];
            let mut jobs = Vec::new();
            // What the notify-next subscribers last heard, per (thing, namespace).
            let mut heard: BTreeMap<ThingNamespace, Option<PendingKey>> = BTreeMap::new();
            // What the notify subscribers last heard: job ids, IN_PROGRESS then QUEUED.
            let mut listed: BTreeMap<ThingNamespace, Vec<String>> = BTreeMap::new();
            let mut now = 0i64;
            for _ in 0..300 {
                now += rng.below(3 * MINUTE_MS as u64) as i64;
                let before: BTreeMap<(String, String), Execution> = engine.executions.clone();
                let thing = THINGS[rng.below(2) as usize];
                let mut accepted_update: Option<(String, String)> = None;
                let notes = match rng.below(8) {
                    0 => {
                        let id = format!("j{}", jobs.len());
                        let ns = namespaces[rng.below(2) as usize];
                        let timeout = (rng.below(2) == 0).then(|| 1 + rng.below(20) as i64);
                        let job = JobSpec {
                            in_progress_timeout_minutes: timeout,
                            continuous: rng.below(2) == 0,
                            ..spec(&id, ns)
                        };
                        engine.create_job(job).unwrap();
                        jobs.push(id);
                        Vec::new()
                    }
                    _ if jobs.is_empty() => Vec::new(),
                    1 | 2 => {
                        let job = jobs[rng.below(jobs.len() as u64) as usize].clone();
                        engine.add_execution(&job, thing, now).unwrap_or_default()
                    }
                    3 | 4 => {
                        let job = jobs[rng.below(jobs.len() as u64) as usize].clone();
                        let request = UpdateRequest {
                            step_timeout_in_minutes: (rng.below(3) == 0).then(|| [-1, 1, 5][rng.below(3) as usize]),
                            expected_version: (rng.below(4) == 0).then(|| rng.below(4) as i64),
                            ..update(STATUSES[rng.below(5) as usize])
                        };
                        let answer = engine.update(thing, &job, &request, now);
                        if answer.result.is_ok() {
                            accepted_update = Some((thing.to_owned(), job));
                        }
                        answer.notifications
                    }
                    5 => {
                        let ns = namespaces[rng.below(2) as usize];
                        let answer = engine.start_next(thing, ns, &StartNextRequest::default(), now);
                        if let Ok(ExecutionAccepted { execution: Some(e), .. }) = &answer.result {
                            let old = before.get(&(thing.to_owned(), e.job_id.clone()));
                            if old.is_some_and(|o| o.status == JobExecutionStatus::Queued) {
                                accepted_update = Some((thing.to_owned(), e.job_id.clone()));
                            }
                        }
                        answer.notifications
                    }
                    6 => {
                        let job = jobs[rng.below(jobs.len() as u64) as usize].clone();
                        if rng.below(3) == 0 {
                            engine.cancel_job(&job, rng.below(2) == 0, false, now).unwrap()
                        } else {
                            engine.remove_execution(&job, thing, now).unwrap_or_default()
                        }
                    }
                    _ => engine.tick(now),
                };
                for note in &notes {
                    let key = (note.topic.thing_name.clone(), note.topic.namespace.clone());
                    match &note.payload {
                        NotificationPayload::NotifyNext(body) => {
                            heard.insert(key, body.execution.as_ref().map(|e| (e.job_id.clone(), e.execution_number)));
                        }
                        NotificationPayload::Notify(body) => {
                            listed.insert(key, body.jobs.values().flatten().map(|s| s.job_id.clone()).collect());
                        }
                    }
                    assert!(matches!(note.topic.kind, JobsTopicKind::Notify | JobsTopicKind::NotifyNext));
                }
                for (key, after) in &engine.executions {
                    let Some(old) = before.get(key) else { continue };
                    if old.execution_number != after.execution_number {
                        continue;
                    }
                    if old.status.is_terminal() {
                        assert_eq!(old, after, "seed {seed}: a terminal execution changed");
                    }
                    let step = after.version_number - old.version_number;
                    if accepted_update.as_ref() == Some(key) {
                        assert_eq!(step, 1, "seed {seed}: an accepted update adds one version");
                    } else {
                        assert!(step == 0 || step == 1, "seed {seed}: version moved by {step}");
                        assert_eq!(
                            step == 1,
                            old.status != after.status,
                            "seed {seed}: service changes add one version"
                        );
                    }
                }
                for thing in THINGS {
                    for ns in namespaces {
                        let described = engine
                            .describe(thing, ns, &JobTarget::Next, &DescribeRequest::default(), now)
                            .result
                            .unwrap()
                            .execution
                            .map(|e| (e.job_id, e.execution_number));
                        let last = heard.get(&(thing.to_owned(), ns.map(str::to_owned))).cloned().flatten();
                        assert_eq!(last, described, "seed {seed}: notify-next disagrees with $next for {thing} {ns:?}");
                        let pending = engine.get_pending(thing, ns, &GetPendingRequest::default(), now).result.unwrap();
                        let ids: Vec<String> = pending
                            .in_progress_jobs
                            .iter()
                            .chain(&pending.queued_jobs)
                            .take(NOTIFY_MAX_SUMMARIES)
                            .map(|s| s.job_id.clone())
                            .collect();
                        let last = listed.get(&(thing.to_owned(), ns.map(str::to_owned))).cloned().unwrap_or_default();
                        assert_eq!(last, ids, "seed {seed}: notify disagrees with the pending list for {thing} {ns:?}");
                    }
                }
            }
        }
    }
}
