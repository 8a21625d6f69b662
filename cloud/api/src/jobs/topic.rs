//! Jobs topic names: `$aws/things/{thing}/jobs/…`.
//!
//! Follows "Jobs device MQTT API operations" and "Reserved topics — Job topics"
//! in the AWS IoT Core Developer Guide, plus the namespaced forms the Greengrass
//! nucleus (Java) and nucleus lite publish and subscribe to:
//!
//! | kind | default topic | namespaced topic |
//! | --- | --- | --- |
//! | GetPendingJobExecutions | `…/jobs/get` | `…/jobs/get/namespace-{ns}` |
//! | StartNextPendingJobExecution | `…/jobs/start-next` | `…/jobs/start-next/namespace-{ns}` |
//! | DescribeJobExecution | `…/jobs/{jobId}/get` | `…/jobs/{jobId}/namespace-{ns}/get` |
//! | UpdateJobExecution | `…/jobs/{jobId}/update` | `…/jobs/{jobId}/namespace-{ns}/update` |
//! | JobExecutionsChanged | `…/jobs/notify` | `…/jobs/notify-namespace-{ns}` |
//! | NextJobExecutionChanged | `…/jobs/notify-next` | `…/jobs/notify-next-namespace-{ns}` |
//!
//! Each request topic has `/accepted` and `/rejected` appended for its answers.
//! `{jobId}` may be `$next` for DescribeJobExecution only. Name rules: thing
//! names `[a-zA-Z0-9:_-]{1,128}` (IoT model `ThingName`), job ids
//! `[a-zA-Z0-9_-]{1,64}` (`JobId`), namespace ids `[a-zA-Z0-9_-]{1,64}`
//! (`namespaceId` in the data-plane model). The namespaced per-job and notify
//! forms are the ones the nucleus and nucleus lite use; the namespaced
//! `get/namespace-{ns}` and `start-next/namespace-{ns}` forms are not used by
//! either nor found in the guide's topic lists: they are accepted as the
//! natural reading and are the least certain part of this table. Because the job id shares
//! the level with `get`, `start-next`, `notify…`, a job whose id is one of those
//! words cannot be addressed by the per-job topics; the parser reads the
//! keyword.

use crate::shadow::is_valid_thing_name;

/// The job id a client uses to address "the next pending execution".
pub const NEXT_JOB_ID: &str = "$next";

/// Longest job id (IoT model `JobId`).
pub const MAX_JOB_ID_BYTES: usize = 64;

/// Longest namespace id (`namespaceId`).
pub const MAX_NAMESPACE_ID_BYTES: usize = 64;

const NAMESPACE_PREFIX: &str = "namespace-";

/// Whether `id` is a valid job id: `[a-zA-Z0-9_-]`, 1 to 64 bytes.
pub fn is_valid_job_id(id: &str) -> bool {
    is_id(id, MAX_JOB_ID_BYTES)
}

/// Whether `id` is a valid namespace id: `[a-zA-Z0-9_-]`, 1 to 64 bytes.
pub fn is_valid_namespace_id(id: &str) -> bool {
    is_id(id, MAX_NAMESPACE_ID_BYTES)
}

fn is_id(id: &str, max: usize) -> bool {
    (1..=max).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Which execution a per-job topic names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobTarget {
    /// `$next`: the next pending execution (DescribeJobExecution only).
    Next,
    /// A job id.
    Id(String),
}

impl JobTarget {
    /// The topic segment.
    pub fn as_str(&self) -> &str {
        match self {
            JobTarget::Next => NEXT_JOB_ID,
            JobTarget::Id(id) => id,
        }
    }
}

/// A request a device makes by publishing to its topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobsRequest {
    /// `…/jobs/get`: GetPendingJobExecutions.
    GetPending,
    /// `…/jobs/start-next`: StartNextPendingJobExecution.
    StartNext,
    /// `…/jobs/{jobId}/get`: DescribeJobExecution.
    Describe(JobTarget),
    /// `…/jobs/{jobId}/update`: UpdateJobExecution (never `$next`).
    Update(String),
}

/// The answer suffix of a request topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobsResponse {
    /// `…/accepted`
    Accepted,
    /// `…/rejected`
    Rejected,
}

impl JobsResponse {
    /// The topic segment.
    pub fn as_str(self) -> &'static str {
        match self {
            JobsResponse::Accepted => "accepted",
            JobsResponse::Rejected => "rejected",
        }
    }

    fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "accepted" => Some(JobsResponse::Accepted),
            "rejected" => Some(JobsResponse::Rejected),
            _ => None,
        }
    }
}

/// What a Jobs topic carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobsTopicKind {
    /// A request (`response` `None`) or its answer.
    Request {
        /// The request.
        request: JobsRequest,
        /// `None` on the request topic itself.
        response: Option<JobsResponse>,
    },
    /// `notify`: the list of pending executions changed.
    Notify,
    /// `notify-next`: the next pending execution changed.
    NotifyNext,
}

/// A parsed Jobs topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobsTopic {
    /// The thing the executions belong to.
    pub thing_name: String,
    /// `Some(ns)` on the `namespace-{ns}` forms.
    pub namespace: Option<String>,
    /// What the topic carries.
    pub kind: JobsTopicKind,
}

impl JobsTopic {
    /// A request topic; `None` if a name is invalid (or `Update` names no job).
    pub fn request(thing_name: &str, namespace: Option<&str>, request: JobsRequest) -> Option<Self> {
        let topic = JobsTopic {
            thing_name: thing_name.to_owned(),
            namespace: namespace.map(str::to_owned),
            kind: JobsTopicKind::Request { request, response: None },
        };
        topic.is_valid().then_some(topic)
    }

    /// A notification topic (`next` selects `notify-next`); `None` if a name is invalid.
    pub fn notification(thing_name: &str, namespace: Option<&str>, next: bool) -> Option<Self> {
        let kind = if next { JobsTopicKind::NotifyNext } else { JobsTopicKind::Notify };
        let topic = JobsTopic { thing_name: thing_name.to_owned(), namespace: namespace.map(str::to_owned), kind };
        topic.is_valid().then_some(topic)
    }

    /// The answer topic of this request topic; `None` on a notification topic.
    pub fn response_topic(&self, response: JobsResponse) -> Option<Self> {
        match &self.kind {
            JobsTopicKind::Request { request, .. } => Some(JobsTopic {
                kind: JobsTopicKind::Request { request: request.clone(), response: Some(response) },
                ..self.clone()
            }),
            _ => None,
        }
    }

    /// Whether a client publishes to this topic (a request, not an answer or notification).
    pub fn is_request(&self) -> bool {
        matches!(self.kind, JobsTopicKind::Request { response: None, .. })
    }

    /// Parses a topic; `None` if it is not a Jobs topic or names an invalid
    /// thing, job or namespace. See [`is_jobs_topic`] to tell "not Jobs" from
    /// "a Jobs topic that maps to no API" (`InvalidTopic`).
    pub fn parse(topic: &str) -> Option<Self> {
        let rest = topic.strip_prefix("$aws/things/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        let (thing, jobs, tail) = match segments.as_slice() {
            [thing, jobs, tail @ ..] => (*thing, *jobs, tail),
            _ => return None,
        };
        if jobs != "jobs" {
            return None;
        }
        let namespace_of = |segment: &str| segment.strip_prefix(NAMESPACE_PREFIX).map(str::to_owned);
        let (namespace, kind) = match tail {
            [single] if !matches!(*single, "get" | "start-next") => {
                if *single == "notify" {
                    (None, JobsTopicKind::Notify)
                } else if *single == "notify-next" {
                    (None, JobsTopicKind::NotifyNext)
                } else if let Some(ns) = single.strip_prefix("notify-next-namespace-") {
                    (Some(ns.to_owned()), JobsTopicKind::NotifyNext)
                } else if let Some(ns) = single.strip_prefix("notify-namespace-") {
                    (Some(ns.to_owned()), JobsTopicKind::Notify)
                } else {
                    return None;
                }
            }
            [op, rest @ ..] if matches!(*op, "get" | "start-next") => {
                let request = if *op == "get" { JobsRequest::GetPending } else { JobsRequest::StartNext };
                let (namespace, rest) = match rest {
                    [first, rest @ ..] if first.starts_with(NAMESPACE_PREFIX) => (namespace_of(first), rest),
                    _ => (None, rest),
                };
                (namespace, JobsTopicKind::Request { request, response: parse_response(rest)? })
            }
            [job, rest @ ..] => {
                let (namespace, rest) = match rest {
                    [first, rest @ ..] if first.starts_with(NAMESPACE_PREFIX) => (namespace_of(first), rest),
                    _ => (None, rest),
                };
                let (op, rest) = rest.split_first()?;
                let target = if *job == NEXT_JOB_ID { JobTarget::Next } else { JobTarget::Id((*job).to_owned()) };
                let request = match (*op, target) {
                    ("get", target) => JobsRequest::Describe(target),
                    ("update", JobTarget::Id(id)) => JobsRequest::Update(id),
                    _ => return None,
                };
                (namespace, JobsTopicKind::Request { request, response: parse_response(rest)? })
            }
            [] => return None,
        };
        let parsed = JobsTopic { thing_name: thing.to_owned(), namespace, kind };
        parsed.is_valid().then_some(parsed)
    }

    /// Builds the topic string. Fields are not re-checked.
    pub fn to_topic(&self) -> String {
        let prefix = format!("$aws/things/{}/jobs", self.thing_name);
        let ns = self.namespace.as_deref();
        match &self.kind {
            JobsTopicKind::Notify => match ns {
                None => format!("{prefix}/notify"),
                Some(ns) => format!("{prefix}/notify-namespace-{ns}"),
            },
            JobsTopicKind::NotifyNext => match ns {
                None => format!("{prefix}/notify-next"),
                Some(ns) => format!("{prefix}/notify-next-namespace-{ns}"),
            },
            JobsTopicKind::Request { request, response } => {
                let mut topic = prefix;
                let ns_segment = ns.map(|ns| format!("/{NAMESPACE_PREFIX}{ns}")).unwrap_or_default();
                match request {
                    JobsRequest::GetPending | JobsRequest::StartNext => {
                        topic.push_str(if *request == JobsRequest::GetPending { "/get" } else { "/start-next" });
                        topic.push_str(&ns_segment);
                    }
                    JobsRequest::Describe(target) => {
                        topic.push_str(&format!("/{}{ns_segment}/get", target.as_str()));
                    }
                    JobsRequest::Update(id) => topic.push_str(&format!("/{id}{ns_segment}/update")),
                }
                if let Some(response) = response {
                    topic.push('/');
                    topic.push_str(response.as_str());
                }
                topic
            }
        }
    }

    fn is_valid(&self) -> bool {
        let job_ok = match &self.kind {
            JobsTopicKind::Request { request: JobsRequest::Describe(JobTarget::Id(id)), .. }
            | JobsTopicKind::Request { request: JobsRequest::Update(id), .. } => is_valid_job_id(id),
            _ => true,
        };
        is_valid_thing_name(&self.thing_name) && job_ok && self.namespace.as_deref().is_none_or(is_valid_namespace_id)
    }
}

fn parse_response(rest: &[&str]) -> Option<Option<JobsResponse>> {
    match rest {
        [] => Some(None),
        [response] => JobsResponse::from_segment(response).map(Some),
        _ => None,
    }
}

/// Whether `topic` lies in a thing's Jobs namespace (`$aws/things/{thing}/jobs/…`),
/// whatever follows: a publish there that [`JobsTopic::parse`] refuses is
/// answered with `InvalidTopic`.
pub fn is_jobs_topic(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix("$aws/things/")?;
    let (thing, rest) = rest.split_once('/')?;
    (rest == "jobs" || rest.starts_with("jobs/")).then_some(thing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(topic: &str) -> JobsTopic {
        let parsed = JobsTopic::parse(topic).unwrap_or_else(|| panic!("{topic} should parse"));
        assert_eq!(parsed.to_topic(), topic);
        parsed
    }

    #[test]
    fn every_default_topic_round_trips() {
        for topic in [
            "$aws/things/t1/jobs/get",
            "$aws/things/t1/jobs/get/accepted",
            "$aws/things/t1/jobs/get/rejected",
            "$aws/things/t1/jobs/start-next",
            "$aws/things/t1/jobs/start-next/accepted",
            "$aws/things/t1/jobs/start-next/rejected",
            "$aws/things/t1/jobs/job-1/get",
            "$aws/things/t1/jobs/job-1/get/accepted",
            "$aws/things/t1/jobs/$next/get/rejected",
            "$aws/things/t1/jobs/job_1/update",
            "$aws/things/t1/jobs/job_1/update/accepted",
            "$aws/things/t1/jobs/job_1/update/rejected",
            "$aws/things/t1/jobs/notify",
            "$aws/things/t1/jobs/notify-next",
        ] {
            assert_eq!(round_trip(topic).namespace, None, "{topic}");
        }
    }

    #[test]
    fn every_namespaced_topic_round_trips() {
        for topic in [
            "$aws/things/core:1/jobs/get/namespace-aws-gg-deployment",
            "$aws/things/core:1/jobs/get/namespace-aws-gg-deployment/accepted",
            "$aws/things/core:1/jobs/start-next/namespace-aws-gg-deployment/rejected",
            "$aws/things/core:1/jobs/$next/namespace-aws-gg-deployment/get",
            "$aws/things/core:1/jobs/$next/namespace-aws-gg-deployment/get/accepted",
            "$aws/things/core:1/jobs/j1/namespace-aws-gg-deployment/update",
            "$aws/things/core:1/jobs/j1/namespace-aws-gg-deployment/update/rejected",
            "$aws/things/core:1/jobs/notify-namespace-aws-gg-deployment",
            "$aws/things/core:1/jobs/notify-next-namespace-aws-gg-deployment",
        ] {
            assert_eq!(round_trip(topic).namespace.as_deref(), Some("aws-gg-deployment"), "{topic}");
        }
    }

    #[test]
    fn parsed_kinds_name_the_operation() {
        let t = round_trip("$aws/things/t/jobs/$next/get");
        assert_eq!(t.kind, JobsTopicKind::Request { request: JobsRequest::Describe(JobTarget::Next), response: None });
        assert!(t.is_request());
        let t = round_trip("$aws/things/t/jobs/notify-next-namespace-ns");
        assert_eq!(t.kind, JobsTopicKind::NotifyNext);
        let t = round_trip("$aws/things/t/jobs/j/update/accepted");
        assert_eq!(
            t.kind,
            JobsTopicKind::Request { request: JobsRequest::Update("j".into()), response: Some(JobsResponse::Accepted) }
        );
        assert!(!t.is_request());
    }

    #[test]
    fn invalid_names_and_shapes_are_refused() {
        for topic in [
            "$aws/things/t/jobs",
            "$aws/things/t/jobs/",
            "$aws/things/t/shadow/get",
            "$aws/things/bad name/jobs/get",
            "$aws/things/t/jobs/$next/update",
            "$aws/things/t/jobs/job.1/get",
            "$aws/things/t/jobs/j/delete",
            "$aws/things/t/jobs/j/get/other",
            "$aws/things/t/jobs/j/get/accepted/x",
            "$aws/things/t/jobs/notify/accepted",
            "$aws/things/t/jobs/notify-namespace-",
            "$aws/things/t/jobs/notify-namespace-a.b",
            "$aws/things/t/jobs/j/namespace-/get",
            "$aws/things/t/jobs/get/namespace-ns/namespace-ns",
            "$aws/things/t/jobs/something",
            &format!("$aws/things/t/jobs/{}/get", "j".repeat(65)),
            &format!("$aws/things/{}/jobs/get", "t".repeat(129)),
        ] {
            assert_eq!(JobsTopic::parse(topic), None, "{topic}");
        }
        assert!(JobsTopic::parse(&format!("$aws/things/t/jobs/{}/get", "j".repeat(64))).is_some());
    }

    #[test]
    fn builders_check_names_and_make_answer_topics() {
        let req = JobsTopic::request("t", Some("aws-gg-deployment"), JobsRequest::Update("j1".into())).unwrap();
        assert_eq!(
            req.response_topic(JobsResponse::Accepted).unwrap().to_topic(),
            "$aws/things/t/jobs/j1/namespace-aws-gg-deployment/update/accepted"
        );
        assert!(JobsTopic::request("t", None, JobsRequest::Update("$next".into())).is_none());
        assert!(JobsTopic::request("t", Some("a/b"), JobsRequest::GetPending).is_none());
        let n = JobsTopic::notification("t", None, true).unwrap();
        assert_eq!(n.to_topic(), "$aws/things/t/jobs/notify-next");
        assert!(n.response_topic(JobsResponse::Rejected).is_none());
    }

    #[test]
    fn jobs_namespace_is_recognised_for_invalid_topic_answers() {
        assert_eq!(is_jobs_topic("$aws/things/t/jobs/nonsense/x/y"), Some("t"));
        assert_eq!(is_jobs_topic("$aws/things/t/jobs"), Some("t"));
        assert_eq!(is_jobs_topic("$aws/things/t/jobsx"), None);
        assert_eq!(is_jobs_topic("$aws/things/t/shadow/get"), None);
    }
}
