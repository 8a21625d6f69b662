//! Jobs device API requests, through the pure Jobs engine.

use std::collections::BTreeMap;

use cloud_api::jobs::{JobSpec, JobsEngine, JobsTopic, JobsTopicKind};
use serde_json::Value;

use crate::{Outcome, split_nul};

/// When every request of a run is made, epoch milliseconds.
const NOW_MS: i64 = 1_800_000_000_000;

/// Feeds `topic` `\0` `payload` as a device's publish to the Jobs service (`cloud_api::jobs`):
/// a topic that parses as a Jobs request is answered by an engine holding two queued jobs for
/// that thing (one in the topic's namespace, one in the default namespace), as the local cloud's
/// Jobs service answers a PUBLISH on `$aws/things/{thing}/jobs/…`.
///
/// Checks: the topic prints back to itself; the answer goes to that request's `accepted` or
/// `rejected` topic and serializes; a rejection carries a known error code; a `clientToken`
/// string in a JSON object payload is echoed; no execution's version grows by more than one,
/// and an ended execution does not change.
pub fn jobs_request(data: &[u8]) -> Outcome {
    let (topic, payload) = split_nul(data);
    let Ok(topic) = std::str::from_utf8(topic) else { return Outcome::Rejected };
    let Some(parsed) = JobsTopic::parse(topic) else { return Outcome::Rejected };
    let JobsTopicKind::Request { response: None, .. } = parsed.kind else { return Outcome::Rejected };
    assert_eq!(parsed.to_topic(), topic, "a parsed topic prints back to itself");

    let mut engine = engine_for(&parsed.thing_name, parsed.namespace.as_deref());
    let before: BTreeMap<(String, String), (i64, bool)> = engine
        .executions()
        .map(|e| ((e.thing_name.clone(), e.job_id.clone()), (e.version_number, e.status.is_terminal())))
        .collect();
    let payload = payload.unwrap_or_default();
    let reply = engine.handle(&parsed, payload, NOW_MS);

    let accepted = reply.topic == format!("{topic}/accepted");
    assert!(accepted || reply.topic == format!("{topic}/rejected"), "answered on {}", reply.topic);
    serde_json::to_vec(&reply.body).expect("the answer serializes");
    if !accepted {
        let code = reply.body["code"].as_str().unwrap_or_default();
        let known = [
            "InvalidTopic",
            "InvalidJson",
            "InvalidRequest",
            "InvalidStateTransition",
            "ResourceNotFound",
            "VersionMismatch",
            "InternalError",
            "RequestThrottled",
            "TerminalStateReached",
        ];
        assert!(known.contains(&code), "unknown error code in {}", reply.body);
    }
    let token = serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v.get("clientToken").and_then(Value::as_str).map(str::to_owned));
    if let Some(token) = token {
        assert_eq!(reply.body["clientToken"].as_str(), Some(token.as_str()), "clientToken echoed: {}", reply.body);
    }
    for e in engine.executions() {
        let key = (e.thing_name.clone(), e.job_id.clone());
        let Some(&(version, ended)) = before.get(&key) else { panic!("a request created execution {key:?}") };
        assert!(
            (version..=version + 1).contains(&e.version_number),
            "{key:?}: version {version} → {}",
            e.version_number
        );
        assert!(!ended || e.version_number == version, "{key:?}: an ended execution changed");
    }
    serde_json::to_vec(&reply.notifications.iter().map(|n| n.payload.to_json()).collect::<Vec<_>>())
        .expect("notifications serialize");
    Outcome::of(accepted)
}

/// Two queued jobs for `thing`: `job-1` in the default namespace, `job-2` in `namespace`.
fn engine_for(thing: &str, namespace: Option<&str>) -> JobsEngine {
    let mut engine = JobsEngine::new();
    for (id, ns) in [("job-1", None), ("job-2", namespace)] {
        let mut document = serde_json::Map::new();
        document.insert("operation".into(), Value::from(id));
        let spec = JobSpec {
            job_id: id.into(),
            document,
            namespace: ns.map(str::to_owned),
            in_progress_timeout_minutes: Some(60),
            continuous: false,
            retry: Vec::new(),
            abort: Vec::new(),
            max_per_minute: None,
        };
        engine.create_job(spec).expect("a valid job");
        engine.add_execution(id, thing, NOW_MS - 1000).expect("a queued execution");
    }
    engine
}
