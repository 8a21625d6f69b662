//! AWS IoT Jobs device contract: reserved topics, payloads, and the pure
//! engine that keeps job executions per thing and answers the device API.
//!
//! # Layout
//! - [`topic`]: parse and print every Jobs topic, default and `namespace-{ns}` forms.
//! - [`model`]: request, answer and notification bodies with AWS's member names;
//!   statuses and the nine error codes; status-detail and timeout limits.
//! - [`engine`]: jobs and executions, the four device operations, control-plane
//!   changes (add, remove, cancel) and timers; every call returns the answer
//!   and the `notify` / `notify-next` messages to publish. The rules are in
//!   the module docs of [`engine`].
//! - [`document`]: `${aws:iot:s3-presigned-url:…}` placeholders in job documents.
//!
//! # Sources
//! AWS IoT Core Developer Guide: "Jobs device MQTT API operations", "Jobs
//! device MQTT and HTTPS data types", "Jobs notifications", "Job
//! configurations" (timers), "Job execution states", "Reserved topics"
//! (answers go only to the requesting client). The `iot-jobs-data-plane`
//! service model for field patterns and limits. The Greengrass nucleus and
//! nucleus lite for the `aws-gg-deployment` namespace topics, which the guide
//! does not list: the Java nucleus reads `notify-namespace-{ns}` (an empty
//! `jobs` means its deployment was cancelled), nucleus lite reads
//! `notify-next-namespace-{ns}`, so the engine publishes both.

pub mod document;
pub mod engine;
pub mod model;
pub mod topic;

pub use engine::{
    AbortCriterion, Answer, Changes, Execution, FailureType, Job, JobSpec, JobsEngine, JobsEngineError, Notification,
    NotificationPayload, Reply, RetryCriterion, invalid_topic_reply,
};
pub use model::{JobExecutionStatus, JobStatus, JobsErrorCode};
pub use topic::{
    JobTarget, JobsRequest, JobsResponse, JobsTopic, JobsTopicKind, is_valid_job_id, is_valid_namespace_id,
};
