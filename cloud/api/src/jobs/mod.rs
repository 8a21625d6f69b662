//! AWS IoT Jobs device contract: reserved topics, payloads, and the pure
//! engine that keeps job executions per thing and answers the device API.
//! Follows "Jobs device MQTT API operations", "Jobs device MQTT and HTTPS data
//! types", "Jobs notifications", "Job configurations" (timeouts) and "Job
//! execution states" in the AWS IoT Core Developer Guide, and the
//! `iot-jobs-data-plane` service model for field limits.

pub mod engine;
pub mod model;
pub mod topic;

pub use engine::{
    Answer, Execution, Job, JobSpec, JobsEngine, JobsEngineError, Notification, NotificationPayload, Reply,
};
pub use model::{JobExecutionStatus, JobStatus, JobsErrorCode};
pub use topic::{
    JobTarget, JobsRequest, JobsResponse, JobsTopic, JobsTopicKind, is_valid_job_id, is_valid_namespace_id,
};
