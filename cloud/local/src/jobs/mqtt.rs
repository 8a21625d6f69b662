//! The device side of Jobs: the broker hands every publish on
//! `$aws/things/{thing}/jobs/…` (default and `namespace-{ns}` forms) to
//! [`JobsMqtt`], which queues it to one worker thread; the worker answers
//! each request in arrival order on its `accepted` / `rejected` topic, to the
//! requesting client only, once the change is stored, and then publishes the
//! notifications it caused. A
//! publish in the Jobs namespace that maps to no API is answered with
//! `InvalidTopic`; publishes on answer or notification topics are ignored.

use std::sync::mpsc;

use bytes::Bytes;
use cloud_api::jobs::engine::throttled_reply;
use cloud_api::jobs::topic::is_jobs_topic;
use cloud_api::jobs::{JobsRequest, JobsTopic, JobsTopicKind, invalid_topic_reply};

use super::JobsService;
use crate::bus::{BusMessage, Publisher, ServiceHandler};

/// The broker's handler for the Jobs topics.
#[derive(Debug)]
pub struct JobsMqtt {
    queue: mpsc::Sender<(String, String, Bytes)>,
}

impl JobsMqtt {
    /// A handler whose worker thread answers through `service`.
    pub fn new(service: JobsService) -> Self {
        let (queue, rx) = mpsc::channel::<(String, String, Bytes)>();
        std::thread::Builder::new()
            .name("jobs-mqtt".into())
            .spawn(move || {
                while let Ok((client_id, topic, payload)) = rx.recv() {
                    service.answer(&client_id, &topic, &payload);
                }
            })
            .ok();
        JobsMqtt { queue }
    }
}

impl ServiceHandler for JobsMqtt {
    fn wants(&self, topic: &str) -> bool {
        is_jobs_topic(topic).is_some()
    }

    fn handle(&self, from: &Publisher, topic: &str, payload: Bytes) {
        let _ = self.queue.send((from.client_id.clone(), topic.to_owned(), payload));
    }
}

impl JobsService {
    /// Answers one device publish (blocking: the worker thread calls it).
    pub(crate) fn answer(&self, client_id: &str, topic: &str, payload: &[u8]) {
        let now = self.now_ms();
        let parsed = JobsTopic::parse(topic);
        let update_job = match parsed.as_ref().map(|t| &t.kind) {
            Some(JobsTopicKind::Request { request: JobsRequest::Update(job), response: None }) => Some(job.clone()),
            _ => None,
        };
        let mut state = self.lock();
        let reply = match &parsed {
            Some(_) if update_job.is_some() && self.throttled(payload) => throttled_reply(topic, now),
            Some(t) if t.is_request() => state.engine.handle(t, payload, now),
            Some(_) => return,
            None => invalid_topic_reply(topic, now),
        };
        let body = self.personalize(&state, reply.body, update_job.as_deref());
        let answer = BusMessage::to_client(client_id, reply.topic, body.to_string(), 1);
        if let Err(e) = self.commit_locked(&mut state, Some(answer), reply.notifications, now) {
            tracing::error!(error = %e, "jobs: a device request was answered but not stored");
        }
    }
}
