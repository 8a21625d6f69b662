//! AWS IoT Jobs: the control plane (CreateJob … GetJobDocument, over HTTP in
//! [`http`]), the device MQTT API ([`mqtt`]) and the timers, around the pure
//! [`JobsEngine`] of `cloud_api::jobs`, persisted in the [`Store`] ([`store`]).
//!
//! Sources: AWS IoT Core Developer Guide ("Jobs", "Jobs device MQTT API
//! operations", "Job configurations", "Reserved topics") and the IoT service
//! model (`iot.json`) for the control-plane shapes and errors.
//!
//! How it works:
//! - one mutex around the engine and the jobs' control-plane records; every
//!   change is persisted (one transaction) before its notifications are
//!   published and its execution status changes broadcast ([`JobsService::subscribe`]);
//! - answers to device requests go to the requesting client only
//!   ([`crate::bus::BusMessage::to_client`]); notifications through the broker;
//! - targets are thing ARNs and thing-group ARNs; a group reaches the things in
//!   it and in its child groups (the registry's membership events carry the
//!   ancestors for this reason). A CONTINUOUS job follows membership:
//!   a thing joining a target group gets an execution, a thing leaving every
//!   target loses its pending one (REMOVED);
//! - `${aws:iot:s3-presigned-url:…}` placeholders are replaced in every copy
//!   of a document sent to a device (answers and `notify-next`), with a URL
//!   valid for `presignedUrlConfig.expiresInSec` (default 3600 s);
//! - one timer task sleeps until the engine's next deadline (step and
//!   in-progress timeouts → TIMED_OUT), woken whenever deadlines may have moved.
//!
//! # Layout
//! - [`mqtt`]: the broker's [`crate::bus::ServiceHandler`] for `$aws/things/+/jobs/…`.
//! - [`http`]: the restJson1 control-plane routes.
//! - `store`: persistence (kinds `job` and `job_execution`).

pub mod http;
pub mod mqtt;
mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cloud_api::jobs::engine::MAX_RETRIES;
use cloud_api::jobs::model::StatusDetails;
use cloud_api::jobs::{
    AbortCriterion, Execution, FailureType, Job, JobExecutionStatus, JobSpec, JobStatus, JobsEngine, JobsEngineError,
    Notification, RetryCriterion,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, BusMessage};
use crate::events::{self, EventSettings, JobFact, JobOperation};
use crate::registry::{Registry, RegistryEvent};
use crate::s3::ObjectStore;
use crate::store::Store;
use crate::time::SharedClock;

/// Largest job document (`document`, or the object `documentSource` names).
pub const MAX_DOCUMENT_BYTES: usize = 32 * 1024;
/// Presigned URL lifetime when `presignedUrlConfig.expiresInSec` is not given.
pub const DEFAULT_PRESIGN_SECS: u64 = 3600;
/// How many execution status changes a [`JobsService::subscribe`] receiver may fall behind.
const CHANGES_CAPACITY: usize = 4096;
/// Longest the timer task sleeps before looking again (guards against clock jumps).
const MAX_TIMER_SLEEP: Duration = Duration::from_secs(60);

/// `targetSelection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TargetSelection {
    /// Executions for the targets' things at creation; the job completes.
    #[default]
    Snapshot,
    /// Follows the target groups' membership; never completes by itself.
    Continuous,
}

/// CreateJob's request members (the IoT model's names). The in-process
/// interface takes the same structure as the HTTP operation. Configurations
/// the service does not act on are kept and shown by DescribeJob as given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateJob {
    /// Thing and thing-group ARNs.
    #[serde(default)]
    pub targets: Vec<String>,
    /// The job document, JSON text (or `document_source`).
    pub document: Option<String>,
    /// An S3 URL of the job document (`https://s3.REGION.amazonaws.com/BUCKET/KEY`, `s3://BUCKET/KEY`).
    pub document_source: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// `{roleArn, expiresInSec}`.
    pub presigned_url_config: Option<Value>,
    /// SNAPSHOT (default) or CONTINUOUS.
    pub target_selection: Option<TargetSelection>,
    /// `maximumPerMinute` enforced; `exponentialRate` stored and shown only.
    pub job_executions_rollout_config: Option<Value>,
    /// `criteriaList` (enforced).
    pub abort_config: Option<Value>,
    /// `{inProgressTimeoutInMinutes}` (enforced).
    pub timeout_config: Option<Value>,
    /// `criteriaList` (enforced).
    pub job_executions_retry_config: Option<Value>,
    /// `aws-gg-deployment` for Greengrass deployments.
    pub namespace_id: Option<String>,
    /// Accepted and ignored.
    pub tags: Option<Value>,
}

/// What the service keeps of a job besides the engine's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// The request as accepted (document as given, or fetched from `documentSource`).
    pub request: CreateJob,
    /// The document text devices get (after `documentSource` was read).
    pub document_text: String,
    /// Names of the thing groups among the targets.
    pub target_groups: Vec<String>,
    /// Names of the things among the targets.
    pub target_things: Vec<String>,
    /// Epoch ms.
    pub created_at_ms: i64,
    /// Epoch ms.
    pub last_updated_at_ms: i64,
    /// Epoch ms, once COMPLETED or CANCELED.
    pub completed_at_ms: Option<i64>,
    /// CancelJob with `force`.
    pub force_canceled: bool,
    /// CancelJob's `reasonCode`.
    pub reason_code: Option<String>,
    /// CancelJob's `comment`.
    pub comment: Option<String>,
}

impl JobRecord {
    /// SNAPSHOT or CONTINUOUS.
    pub fn target_selection(&self) -> TargetSelection {
        self.request.target_selection.unwrap_or_default()
    }
}

/// An execution's status changed (what the Greengrass service learns results from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutionChange {
    /// The job.
    pub job_id: String,
    /// The thing.
    pub thing_name: String,
    /// The new status.
    pub status: JobExecutionStatus,
    /// Status details as the device (or the canceller) left them.
    pub status_details: StatusDetails,
    /// The execution's version after the change.
    pub version_number: i64,
    /// Which run of the job on the thing.
    pub execution_number: i64,
}

/// Why a Jobs operation failed; each maps to one AWS exception.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobsError {
    /// Fix the request (`InvalidRequestException`).
    #[error("{0}")]
    InvalidRequest(String),
    /// No such job, execution, thing or group (`ResourceNotFoundException`).
    #[error("{0}")]
    NotFound(String),
    /// The job id is taken (`ResourceAlreadyExistsException`).
    #[error("job {id} already exists")]
    AlreadyExists {
        /// Job id.
        id: String,
        /// Job ARN.
        arn: String,
    },
    /// `expectedVersion` is stale: read the execution again (`VersionConflictException`).
    #[error("{0}")]
    VersionConflict(String),
    /// Not allowed from the current status (`InvalidStateTransitionException`).
    #[error("{0}")]
    InvalidStateTransition(String),
    /// Storage failed: retry (`InternalFailureException`).
    #[error("{0}")]
    Internal(String),
}

impl From<JobsEngineError> for JobsError {
    fn from(e: JobsEngineError) -> Self {
        match e {
            JobsEngineError::UnknownJob(_) | JobsEngineError::UnknownExecution { .. } => {
                JobsError::NotFound(e.to_string())
            }
            JobsEngineError::VersionConflict { .. } => JobsError::VersionConflict(e.to_string()),
            JobsEngineError::InvalidStateTransition { .. }
            | JobsEngineError::InProgressExecutions(_)
            | JobsEngineError::JobRunning(_) => JobsError::InvalidStateTransition(e.to_string()),
            _ => JobsError::InvalidRequest(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for JobsError {
    fn from(e: crate::store::StoreError) -> Self {
        JobsError::Internal(e.to_string())
    }
}

/// Filters of ListJobs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only SNAPSHOT or CONTINUOUS jobs.
    pub target_selection: Option<TargetSelection>,
    /// Only jobs targeting this group.
    pub thing_group_name: Option<String>,
    /// Only jobs in this namespace.
    pub namespace_id: Option<String>,
}

pub(crate) struct State {
    pub(crate) engine: JobsEngine,
    pub(crate) records: BTreeMap<String, JobRecord>,
}

struct Inner {
    state: Mutex<State>,
    store: Store,
    bus: Bus,
    clock: SharedClock,
    registry: Arc<Registry>,
    objects: Arc<dyn ObjectStore>,
    region: String,
    account_id: String,
    timers: Notify,
    changes: broadcast::Sender<ExecutionChange>,
    /// Whether job and job-execution events are published (UpdateEventConfigurations).
    event_settings: Arc<EventSettings>,
    /// Membership events from the moment the service opened, taken by [`JobsService::run`].
    events: Mutex<Option<broadcast::Receiver<RegistryEvent>>>,
    /// Fault injection ([`JobsService::throttle_updates`]): how many more device updates to
    /// this status are answered `RequestThrottled`.
    throttle: Mutex<Option<(JobExecutionStatus, u32)>>,
}

/// The Jobs service; cheap to clone.
#[derive(Clone)]
pub struct JobsService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JobsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsService").finish_non_exhaustive()
    }
}

fn internal_lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl JobsService {
    /// Loads the persisted jobs. Start the background work with [`JobsService::run`].
    pub fn open(
        store: Store,
        bus: Bus,
        clock: SharedClock,
        registry: Arc<Registry>,
        objects: Arc<dyn ObjectStore>,
        event_settings: Arc<EventSettings>,
    ) -> Result<Self, JobsError> {
        let (jobs, executions) = store::load(&store)?;
        let mut records = BTreeMap::new();
        let mut engine_jobs: Vec<Job> = Vec::new();
        for (job, record) in jobs {
            records.insert(job.spec.job_id.clone(), record);
            engine_jobs.push(job);
        }
        let engine = JobsEngine::restore(engine_jobs, executions);
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let events = Mutex::new(Some(registry.events()));
        let region = registry.region().to_owned();
        let account_id = registry.account_id().to_owned();
        let inner = Inner {
            state: Mutex::new(State { engine, records }),
            store,
            bus,
            clock,
            registry,
            objects,
            region,
            account_id,
            timers: Notify::new(),
            changes,
            event_settings,
            events,
            throttle: Mutex::new(None),
        };
        Ok(JobsService { inner: Arc::new(inner) })
    }

    /// Fault injection for tests (in-process only, no HTTP route): the next `count`
    /// UpdateJobExecution requests over MQTT that set `status` are answered `RequestThrottled`
    /// on their `rejected` topic and change nothing, as IoT Core answers a device over the Jobs
    /// API's rate.
    pub fn throttle_updates(&self, status: JobExecutionStatus, count: u32) {
        *internal_lock(&self.inner.throttle) = Some((status, count));
    }

    /// How many more updates [`JobsService::throttle_updates`] will throttle.
    pub fn throttles_left(&self) -> u32 {
        internal_lock(&self.inner.throttle).map_or(0, |(_, left)| left)
    }

    /// Whether this update is to be throttled (and counts it).
    fn throttled(&self, payload: &[u8]) -> bool {
        let mut throttle = internal_lock(&self.inner.throttle);
        let Some((status, left)) = throttle.as_mut() else { return false };
        let asked = serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| serde_json::from_value::<JobExecutionStatus>(v.get("status")?.clone()).ok());
        if *left == 0 || asked != Some(*status) {
            return false;
        }
        *left -= 1;
        true
    }

    /// The timer and the group-membership follower, until `stop`. Call once:
    /// membership events are followed from [`JobsService::open`] on, by the first call.
    pub async fn run(self, stop: CancellationToken) {
        let events = internal_lock(&self.inner.events).take();
        match events {
            Some(events) => {
                tokio::join!(self.clone().run_timers(stop.clone()), self.follow_membership(events, stop));
            }
            None => self.run_timers(stop).await,
        }
    }

    /// Execution status changes, from now on (in the order they happened).
    pub fn subscribe(&self) -> broadcast::Receiver<ExecutionChange> {
        self.inner.changes.subscribe()
    }

    /// A job's ARN.
    pub fn job_arn(&self, job_id: &str) -> String {
        format!("arn:aws:iot:{}:{}:job/{job_id}", self.inner.region, self.inner.account_id)
    }

    /// A thing's ARN.
    pub fn thing_arn(&self, thing: &str) -> String {
        format!("arn:aws:iot:{}:{}:thing/{thing}", self.inner.region, self.inner.account_id)
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_millis() as i64
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        internal_lock(&self.inner.state)
    }

    /// CreateJob: validates, queues an execution for every target thing, and
    /// returns the job's ARN. Blocking (SQLite, and S3 for `documentSource`).
    pub fn create_job(&self, job_id: &str, request: CreateJob) -> Result<String, JobsError> {
        let arn = self.job_arn(job_id);
        let document_text = self.document_text(&request)?;
        let document: serde_json::Map<String, Value> = serde_json::from_str(&document_text)
            .map_err(|e| JobsError::InvalidRequest(format!("the job document must be a JSON object: {e}")))?;
        if let Some(cfg) = &request.presigned_url_config {
            presign_secs(Some(cfg))?;
        }
        let timeout = match request.timeout_config.as_ref().and_then(|c| c.get("inProgressTimeoutInMinutes")) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_i64().ok_or_else(|| {
                JobsError::InvalidRequest("timeoutConfig.inProgressTimeoutInMinutes must be an integer".into())
            })?),
        };
        if request.targets.is_empty() {
            return Err(JobsError::InvalidRequest("targets must name at least one thing or thing group".into()));
        }
        let (mut target_things, mut target_groups) = (Vec::new(), Vec::new());
        for arn in &request.targets {
            if let Some(thing) = crate::http::wire::arn_resource(arn, "thing") {
                self.inner
                    .registry
                    .describe_thing(thing)
                    .map_err(|_| JobsError::NotFound(format!("thing {thing} does not exist")))?;
                target_things.push(thing.to_owned());
            } else if let Some(group) = crate::http::wire::arn_resource(arn, "thinggroup") {
                self.inner
                    .registry
                    .describe_thing_group(group)
                    .map_err(|_| JobsError::NotFound(format!("thing group {group} does not exist")))?;
                target_groups.push(group.to_owned());
            } else {
                return Err(JobsError::InvalidRequest(format!("target {arn:?} is not a thing or thing-group ARN")));
            }
        }
        let spec = JobSpec {
            job_id: job_id.to_owned(),
            document,
            namespace: request.namespace_id.clone(),
            in_progress_timeout_minutes: timeout,
            continuous: request.target_selection == Some(TargetSelection::Continuous),
            retry: retry_criteria(request.job_executions_retry_config.as_ref())?,
            abort: abort_criteria(request.abort_config.as_ref())?,
            max_per_minute: max_per_minute(request.job_executions_rollout_config.as_ref())?,
        };
        let now = self.now_ms();
        let record = JobRecord {
            request,
            document_text,
            target_groups,
            target_things,
            created_at_ms: now,
            last_updated_at_ms: now,
            completed_at_ms: None,
            force_canceled: false,
            reason_code: None,
            comment: None,
        };
        let things = self.things_of(&record);
        let mut state = self.lock();
        if state.engine.job(job_id).is_some() {
            return Err(JobsError::AlreadyExists { id: job_id.to_owned(), arn });
        }
        state.engine.create_job(spec)?;
        state.records.insert(job_id.to_owned(), record);
        let notifications = state.engine.target(job_id, things, now)?;
        self.commit(state, notifications, now)?;
        Ok(arn)
    }

    /// CancelJob: QUEUED executions (and IN_PROGRESS ones with `force`) become CANCELED.
    pub fn cancel_job(
        &self,
        job_id: &str,
        force: bool,
        reason_code: Option<String>,
        comment: Option<String>,
    ) -> Result<(), JobsError> {
        let now = self.now_ms();
        let mut state = self.lock();
        match state.engine.job(job_id).map(|j| j.status) {
            None => return Err(JobsError::NotFound(format!("job {job_id} does not exist"))),
            Some(JobStatus::Completed) => {
                return Err(JobsError::InvalidRequest(format!("job {job_id} is COMPLETED and cannot be cancelled")));
            }
            Some(_) => {}
        }
        let notifications = state.engine.cancel_job(job_id, force, false, now)?;
        if let Some(record) = state.records.get_mut(job_id) {
            record.force_canceled |= force;
            record.reason_code = reason_code.or(record.reason_code.take());
            record.comment = comment.or(record.comment.take());
        }
        self.commit(state, notifications, now)
    }

    /// DeleteJob: the job and its executions go; without `force` only a COMPLETED or CANCELED job.
    pub fn delete_job(&self, job_id: &str, force: bool) -> Result<(), JobsError> {
        let now = self.now_ms();
        let mut state = self.lock();
        let fact = self.job_fact(&state, job_id).filter(|_| self.inner.event_settings.enabled("JOB"));
        let notifications = state.engine.delete_job(job_id, force, now)?;
        state.records.remove(job_id);
        let committed = self.commit(state, notifications, now);
        if let Some(fact) = fact {
            self.publish_job_event(JobOperation::Deleted, &fact);
        }
        committed
    }

    /// A job as its events describe it.
    fn job_fact(&self, state: &State, job_id: &str) -> Option<JobFact> {
        let (job, record) = (state.engine.job(job_id)?, state.records.get(job_id)?);
        let mut counts: BTreeMap<JobExecutionStatus, u64> = BTreeMap::new();
        for e in state.engine.executions().filter(|e| e.job_id == job_id) {
            *counts.entry(e.status).or_default() += 1;
        }
        let n = |s| counts.get(&s).copied().unwrap_or(0);
        Some(JobFact {
            job_id: job_id.to_owned(),
            target_selection: match record.target_selection() {
                TargetSelection::Snapshot => "SNAPSHOT",
                TargetSelection::Continuous => "CONTINUOUS",
            },
            targets: record.request.targets.clone(),
            description: record.request.description.clone(),
            created_at_ms: record.created_at_ms,
            last_updated_at_ms: record.last_updated_at_ms,
            completed_at_ms: record.completed_at_ms,
            comment: record.comment.clone(),
            process_details: (job.status == JobStatus::Completed).then(|| {
                serde_json::json!({
                    "numberOfCanceledThings": n(JobExecutionStatus::Canceled),
                    "numberOfRejectedThings": n(JobExecutionStatus::Rejected),
                    "numberOfFailedThings": n(JobExecutionStatus::Failed),
                    "numberOfRemovedThings": n(JobExecutionStatus::Removed),
                    "numberOfSucceededThings": n(JobExecutionStatus::Succeeded),
                    "numberOfTimedOutThings": n(JobExecutionStatus::TimedOut),
                })
            }),
        })
    }

    /// Publishes a job event (the caller checked that `JOB` events are enabled).
    fn publish_job_event(&self, op: JobOperation, fact: &JobFact) {
        let e = events::job_event(op, fact, &uuid::Uuid::new_v4().to_string(), self.now_ms() as u64 / 1000);
        self.inner.bus.publish(BusMessage::to_subscribers(e.topic, e.payload, 1));
    }

    /// CancelJobExecution.
    pub fn cancel_execution(
        &self,
        job_id: &str,
        thing: &str,
        force: bool,
        expected_version: Option<i64>,
        status_details: Option<StatusDetails>,
    ) -> Result<(), JobsError> {
        let now = self.now_ms();
        let mut state = self.lock();
        let notifications =
            state.engine.cancel_execution(job_id, thing, force, expected_version, status_details, now)?;
        self.commit(state, notifications, now)
    }

    /// A job and its record.
    pub fn describe_job(&self, job_id: &str) -> Result<(Job, JobRecord), JobsError> {
        let state = self.lock();
        match (state.engine.job(job_id), state.records.get(job_id)) {
            (Some(job), Some(record)) => Ok((job.clone(), record.clone())),
            _ => Err(JobsError::NotFound(format!("job {job_id} does not exist"))),
        }
    }

    /// The latest execution of a job on a thing.
    pub fn describe_execution(&self, job_id: &str, thing: &str) -> Result<Execution, JobsError> {
        self.lock()
            .engine
            .execution(thing, job_id)
            .cloned()
            .ok_or_else(|| JobsError::NotFound(format!("no execution of job {job_id} on thing {thing}")))
    }

    /// Jobs matching `filter`, by id.
    pub fn list_jobs(&self, filter: &JobFilter) -> Vec<(Job, JobRecord)> {
        let state = self.lock();
        state
            .engine
            .jobs()
            .filter_map(|job| state.records.get(&job.spec.job_id).map(|r| (job, r)))
            .filter(|(job, r)| {
                filter.status.is_none_or(|s| s == job.status)
                    && filter.target_selection.is_none_or(|t| t == r.target_selection())
                    && filter.thing_group_name.as_ref().is_none_or(|g| r.target_groups.contains(g))
                    && filter.namespace_id.as_ref().is_none_or(|ns| job.spec.namespace.as_ref() == Some(ns))
            })
            .map(|(job, r)| (job.clone(), r.clone()))
            .collect()
    }

    /// Executions of a job (by thing), or of a thing (by job): whichever is given.
    pub fn executions(&self, job_id: Option<&str>, thing: Option<&str>) -> Vec<(Execution, Option<String>)> {
        let state = self.lock();
        state
            .engine
            .executions()
            .filter(|e| job_id.is_none_or(|j| e.job_id == j) && thing.is_none_or(|t| e.thing_name == t))
            .map(|e| (e.clone(), state.engine.job(&e.job_id).and_then(|j| j.spec.namespace.clone())))
            .collect()
    }

    /// Times out what is due now; the timer task does this by itself, tests
    /// with a stepped clock call it after stepping.
    pub fn run_due_timers(&self) -> Result<(), JobsError> {
        let now = self.now_ms();
        let mut state = self.lock();
        let notifications = state.engine.tick(now);
        self.commit(state, notifications, now)
    }

    /// The things a job's targets reach now: named things, and the members of
    /// named groups and of their child groups.
    fn things_of(&self, record: &JobRecord) -> BTreeSet<String> {
        let mut things: BTreeSet<String> = record.target_things.iter().cloned().collect();
        for group in &record.target_groups {
            if let Ok(members) = self.inner.registry.things_in_thing_group(group, true) {
                things.extend(members);
            }
        }
        things
    }

    fn document_text(&self, request: &CreateJob) -> Result<String, JobsError> {
        let text = match (&request.document, &request.document_source) {
            (Some(_), Some(_)) => {
                return Err(JobsError::InvalidRequest("give document or documentSource, not both".into()));
            }
            (None, None) => return Err(JobsError::InvalidRequest("document or documentSource is required".into())),
            (Some(text), None) => text.clone(),
            (None, Some(url)) => {
                let (bucket, key) = parse_s3_url(url)
                    .ok_or_else(|| JobsError::InvalidRequest(format!("documentSource {url:?} is not an S3 URL")))?;
                let meta = self
                    .inner
                    .objects
                    .head(&bucket, &key)
                    .map_err(|e| JobsError::InvalidRequest(format!("documentSource {url:?}: {e}")))?
                    .ok_or_else(|| JobsError::InvalidRequest(format!("documentSource {url:?}: no such object")))?;
                if meta.size as usize > MAX_DOCUMENT_BYTES {
                    return Err(JobsError::InvalidRequest(format!(
                        "the job document at {url:?} is {} bytes; at most {MAX_DOCUMENT_BYTES}",
                        meta.size
                    )));
                }
                let bytes = self
                    .inner
                    .objects
                    .get(&bucket, &key)
                    .map_err(|e| JobsError::InvalidRequest(format!("documentSource {url:?}: {e}")))?;
                String::from_utf8(bytes)
                    .map_err(|_| JobsError::InvalidRequest(format!("the job document at {url:?} is not UTF-8")))?
            }
        };
        if text.len() > MAX_DOCUMENT_BYTES {
            return Err(JobsError::InvalidRequest(format!(
                "the job document is {} bytes; at most {MAX_DOCUMENT_BYTES}",
                text.len()
            )));
        }
        Ok(text)
    }

    /// Persists what the last operation changed, then publishes its
    /// notifications and broadcasts its execution status changes.
    fn commit(
        &self,
        mut state: MutexGuard<'_, State>,
        notifications: Vec<Notification>,
        now_ms: i64,
    ) -> Result<(), JobsError> {
        self.commit_locked(&mut state, None, notifications, now_ms)
    }

    /// [`Self::commit`] with the lock held by the caller; `answer` (a device
    /// request's answer) is published once the change is stored, before the
    /// notifications, so an accepted answer means a stored change. A storage
    /// failure is returned after publishing: the running service goes on from
    /// its memory, which already holds the change.
    pub(crate) fn commit_locked(
        &self,
        state: &mut State,
        answer: Option<BusMessage>,
        notifications: Vec<Notification>,
        now_ms: i64,
    ) -> Result<(), JobsError> {
        // Read before anything is published: a change is evented as configured when it
        // happened, not when a caller that saw the answer changed the configuration.
        let job_events = self.inner.event_settings.enabled("JOB");
        let execution_events = self.inner.event_settings.enabled("JOB_EXECUTION");
        let changes = state.engine.take_changes();
        if changes.is_empty() && notifications.is_empty() {
            if let Some(answer) = answer {
                self.inner.bus.publish(answer);
            }
            return Ok(());
        }
        let State { engine, records } = &mut *state;
        let mut ended = Vec::new();
        for id in &changes.jobs {
            if let (Some(job), Some(record)) = (engine.job(id), records.get_mut(id)) {
                record.last_updated_at_ms = now_ms;
                if matches!(job.status, JobStatus::Completed | JobStatus::Canceled) && record.completed_at_ms.is_none()
                {
                    record.completed_at_ms = Some(now_ms);
                    let op = if job.status == JobStatus::Completed {
                        JobOperation::Completed
                    } else {
                        JobOperation::Canceled
                    };
                    ended.push((op, id.clone()));
                }
            }
        }
        // Executions changing move the job's lastUpdatedAt (and are persisted with it).
        let touched_jobs: BTreeSet<String> = changes.executions.iter().map(|(_, j)| j.clone()).collect();
        for id in &touched_jobs {
            if let Some(record) = records.get_mut(id) {
                record.last_updated_at_ms = now_ms;
            }
        }
        let mut all = changes.clone();
        all.jobs.extend(touched_jobs.into_iter().filter(|id| engine.job(id).is_some()));
        let stored = store::persist(&self.inner.store, engine, records, &all);
        if let Err(e) = &stored {
            tracing::error!(error = %e, "persisting jobs");
        }
        if let Some(answer) = answer {
            self.inner.bus.publish(answer);
        }
        for notification in notifications {
            let payload = self.personalize(state, notification.payload.to_json(), None);
            self.inner.bus.publish(BusMessage::to_subscribers(notification.topic.to_topic(), payload.to_string(), 1));
        }
        for (thing, job) in &changes.executions {
            if let Some(e) = state.engine.execution(thing, job) {
                if execution_events {
                    let event = events::job_execution_event(
                        &e.job_id,
                        &self.thing_arn(&e.thing_name),
                        e.status,
                        &e.status_details,
                        &uuid::Uuid::new_v4().to_string(),
                        now_ms as u64 / 1000,
                    );
                    if let Some(event) = event {
                        self.inner.bus.publish(BusMessage::to_subscribers(event.topic, event.payload, 1));
                    }
                }
                let _ = self.inner.changes.send(ExecutionChange {
                    job_id: e.job_id.clone(),
                    thing_name: e.thing_name.clone(),
                    status: e.status,
                    status_details: e.status_details.clone(),
                    version_number: e.version_number,
                    execution_number: e.execution_number,
                });
            }
        }
        for (op, id) in ended {
            if job_events && let Some(fact) = self.job_fact(state, &id) {
                self.publish_job_event(op, &fact);
            }
        }
        self.inner.timers.notify_one();
        stored.map_err(JobsError::from)
    }

    /// A copy of a body sent to a device with each job document's presigned-URL
    /// placeholders replaced: `execution.jobDocument` (job from `execution.jobId`)
    /// and a top-level `jobDocument` (job `update_job`).
    pub(crate) fn personalize(&self, state: &State, mut body: Value, update_job: Option<&str>) -> Value {
        let sign = |doc: &mut Value, job: &str| {
            let secs = state
                .records
                .get(job)
                .and_then(|r| presign_secs(r.request.presigned_url_config.as_ref()).ok())
                .unwrap_or(DEFAULT_PRESIGN_SECS);
            let signed = cloud_api::jobs::document::substitute_presigned_urls(doc, |url| {
                let (bucket, key) = parse_s3_url(url).ok_or_else(|| format!("{url} is not an S3 URL"))?;
                self.inner.objects.presign_get(&bucket, &key, Duration::from_secs(secs)).map_err(|e| e.to_string())
            });
            match signed {
                Ok(signed) => *doc = signed,
                Err(e) => tracing::warn!(job, error = %e, "leaving a presigned-URL placeholder as it is"),
            }
        };
        if let Some(execution) = body.get_mut("execution") {
            let job = execution.get("jobId").and_then(Value::as_str).map(str::to_owned);
            if let (Some(job), Some(doc)) = (job, execution.get_mut("jobDocument")) {
                sign(doc, &job);
            }
        }
        if let (Some(job), Some(doc)) = (update_job, body.get_mut("jobDocument")) {
            sign(doc, job);
        }
        body
    }

    async fn run_timers(self, stop: CancellationToken) {
        loop {
            let next = self.lock().engine.next_deadline_ms();
            let wait = match next {
                Some(deadline) => Duration::from_millis((deadline - self.now_ms()).max(0) as u64).min(MAX_TIMER_SLEEP),
                None => MAX_TIMER_SLEEP,
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.inner.timers.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            if next.is_some_and(|d| d <= self.now_ms()) {
                let this = self.clone();
                let ran = tokio::task::spawn_blocking(move || this.run_due_timers()).await;
                if let Ok(Err(e)) = ran {
                    tracing::warn!(error = %e, "job timers");
                }
            }
        }
    }

    async fn follow_membership(self, mut events: broadcast::Receiver<RegistryEvent>, stop: CancellationToken) {
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                e = events.recv() => e,
            };
            let (membership, joined) = match event {
                Ok(RegistryEvent::ThingAddedToThingGroup { membership }) => (membership, true),
                Ok(RegistryEvent::ThingRemovedFromThingGroup { membership, .. }) => (membership, false),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "jobs missed group membership events");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let this = self.clone();
            let done = tokio::task::spawn_blocking(move || {
                let mut groups: BTreeSet<String> = membership.ancestors.into_iter().collect();
                groups.insert(membership.thing_group_name);
                this.membership_changed(&membership.thing_name, &groups, joined)
            })
            .await;
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "following a group membership change");
            }
        }
    }

    /// A thing joined or left `groups` (a group and its ancestors): continuous
    /// jobs targeting one of them queue an execution for it or remove it.
    fn membership_changed(&self, thing: &str, groups: &BTreeSet<String>, joined: bool) -> Result<(), JobsError> {
        let now = self.now_ms();
        let candidates: Vec<(String, JobRecord)> = {
            let state = self.lock();
            state
                .engine
                .jobs()
                .filter(|j| j.spec.continuous && j.status == JobStatus::InProgress)
                .filter_map(|j| state.records.get(&j.spec.job_id).map(|r| (j.spec.job_id.clone(), r.clone())))
                .filter(|(_, r)| r.target_groups.iter().any(|g| groups.contains(g)))
                .collect()
        };
        for (job_id, record) in candidates {
            // A thing still reached through another target keeps its execution.
            let targeted = self.things_of(&record).contains(thing);
            let mut state = self.lock();
            let pending = state.engine.execution(thing, &job_id).is_some_and(|e| !e.status.is_terminal());
            let notifications = match (joined && targeted, pending) {
                (true, false) => state.engine.add_execution(&job_id, thing, now)?,
                (false, true) if !targeted => state.engine.remove_execution(&job_id, thing, now)?,
                _ => continue,
            };
            self.commit(state, notifications, now)?;
        }
        Ok(())
    }
}

fn criteria<T: serde::de::DeserializeOwned>(config: Option<&Value>, name: &str) -> Result<Vec<T>, JobsError> {
    let Some(list) = config.and_then(|c| c.get("criteriaList")) else { return Ok(Vec::new()) };
    serde_json::from_value(list.clone()).map_err(|e| JobsError::InvalidRequest(format!("{name}.criteriaList: {e}")))
}

/// `jobExecutionsRetryConfig.criteriaList`: FAILED, TIMED_OUT or ALL, 0–10 retries.
fn retry_criteria(config: Option<&Value>) -> Result<Vec<RetryCriterion>, JobsError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        failure_type: FailureType,
        number_of_retries: u32,
    }
    let list: Vec<Wire> = criteria(config, "jobExecutionsRetryConfig")?;
    list.into_iter()
        .map(|c| {
            if c.failure_type == FailureType::Rejected || c.number_of_retries > MAX_RETRIES {
                return Err(JobsError::InvalidRequest(
                    "retry criteria take failureType FAILED, TIMED_OUT or ALL and numberOfRetries 0 to 10".into(),
                ));
            }
            Ok(RetryCriterion { failure_type: c.failure_type, number_of_retries: c.number_of_retries })
        })
        .collect()
}

/// `abortConfig.criteriaList`: action CANCEL, threshold 0–100 %, at least one executed thing.
fn abort_criteria(config: Option<&Value>) -> Result<Vec<AbortCriterion>, JobsError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        failure_type: FailureType,
        action: String,
        threshold_percentage: f64,
        min_number_of_executed_things: u32,
    }
    let list: Vec<Wire> = criteria(config, "abortConfig")?;
    list.into_iter()
        .map(|c| {
            if c.action != "CANCEL" || !(0.0..=100.0).contains(&c.threshold_percentage) || c.min_number_of_executed_things < 1
            {
                return Err(JobsError::InvalidRequest(
                    "abort criteria take action CANCEL, thresholdPercentage 0 to 100 and minNumberOfExecutedThings of at least 1"
                        .into(),
                ));
            }
            Ok(AbortCriterion {
                failure_type: c.failure_type,
                threshold_percentage: c.threshold_percentage,
                min_number_of_executed_things: c.min_number_of_executed_things,
            })
        })
        .collect()
}

/// `jobExecutionsRolloutConfig.maximumPerMinute` (at least 1). `exponentialRate` is kept, not enforced.
fn max_per_minute(config: Option<&Value>) -> Result<Option<u32>, JobsError> {
    match config.and_then(|c| c.get("maximumPerMinute")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_u64().filter(|n| (1..=u64::from(u32::MAX)).contains(n)).map(|n| Some(n as u32)).ok_or_else(|| {
                JobsError::InvalidRequest(format!(
                    "jobExecutionsRolloutConfig.maximumPerMinute must be at least 1, got {v}"
                ))
            })
        }
    }
}

/// `presignedUrlConfig.expiresInSec` (60–3600, default 3600).
fn presign_secs(config: Option<&Value>) -> Result<u64, JobsError> {
    match config.and_then(|c| c.get("expiresInSec")) {
        None | Some(Value::Null) => Ok(DEFAULT_PRESIGN_SECS),
        Some(v) => v.as_u64().filter(|s| (60..=3600).contains(s)).ok_or_else(|| {
            JobsError::InvalidRequest(format!("presignedUrlConfig.expiresInSec must be 60 to 3600, got {v}"))
        }),
    }
}

/// Bucket and key of an S3 object URL: `s3://B/K`, path style
/// `https://s3[.REGION].amazonaws.com/B/K` (or any other host, such as the
/// local endpoint), virtual-hosted `https://B.s3[.REGION].amazonaws.com/K`.
pub fn parse_s3_url(url: &str) -> Option<(String, String)> {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned());
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/')?;
        return (!bucket.is_empty() && !key.is_empty()).then(|| Some((bucket.to_owned(), decode(key)?)))?;
    }
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let (host, path) = rest.split_once('/')?;
    let virtual_bucket = host
        .split_once(".s3.")
        .or_else(|| host.split_once(".s3-"))
        .filter(|(_, domain)| domain.ends_with("amazonaws.com"))
        .map(|(bucket, _)| bucket);
    let (bucket, key) = match virtual_bucket {
        Some(bucket) => (bucket, path),
        None => path.split_once('/')?,
    };
    (!bucket.is_empty() && !key.is_empty()).then(|| Some((bucket.to_owned(), decode(key)?)))?
}

#[cfg(test)]
mod tests {
    use super::parse_s3_url;

    #[test]
    fn s3_urls_in_every_documented_form_give_bucket_and_key() {
        let cases = [
            ("https://s3.us-east-1.amazonaws.com/b/k/x.bin", Some(("b", "k/x.bin"))),
            ("https://s3.amazonaws.com/b/k", Some(("b", "k"))),
            ("https://b.s3.us-east-1.amazonaws.com/k%20y", Some(("b", "k y"))),
            ("s3://b/k", Some(("b", "k"))),
            ("http://127.0.0.1:4566/b/k", Some(("b", "k"))),
            ("https://s3.amazonaws.com/b", None),
            ("ftp://s3.amazonaws.com/b/k", None),
        ];
        for (url, want) in cases {
            let want = want.map(|(b, k)| (b.to_string(), k.to_string()));
            assert_eq!(parse_s3_url(url), want, "{url}");
        }
    }
}
