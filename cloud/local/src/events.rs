//! AWS IoT Core's event messages, built as pure functions from a fact (a
//! connection, a subscription, a job or job execution reaching an end) to a
//! topic and a JSON payload, and the event configurations
//! (`UpdateEventConfigurations`, `DescribeEventConfigurations`) that switch
//! the registry's and Jobs' events on and off.
//!
//! Sources: AWS IoT Core Developer Guide, "Lifecycle events" (presence and
//! subscription events: always published, cannot be disabled; client ids
//! containing `#` or `+` get none), "Event messages" (the event configuration
//! table; the policy a subscriber needs: `iot:Subscribe` and `iot:Receive` on
//! `$aws/events/*`), "Jobs events" (topics and payloads); the IoT service
//! model (`iot.json`) for `UpdateEventConfigurations` (`PATCH
//! /event-configurations`) and `DescribeEventConfigurations` (`GET
//! /event-configurations`) and the `EventType` values.
//!
//! Publishing is the caller's thin shell: the broker publishes presence and
//! subscription events itself (they bypass publish authorization, and each
//! subscriber still needs `iot:Receive`); the Jobs service publishes its
//! events through the bus when [`EventSettings::enabled`] says so.

use std::collections::BTreeMap;
use std::sync::Mutex;

use cloud_api::jobs::JobExecutionStatus;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::store::{Store, StoreError};
use crate::time::SharedClock;

/// Milliseconds since the Unix epoch, from the system clock (event timestamps).
pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An event message: where it goes and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `$aws/events/…` topic.
    pub topic: String,
    /// The JSON payload.
    pub payload: String,
}

/// `disconnectReason` values of the "Lifecycle events" page that the local broker produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The certificate stopped being ACTIVE, or a publish was denied (MQTT 3.1.1 closes the connection).
    AuthError,
    /// The client sent DISCONNECT.
    ClientInitiatedDisconnect,
    /// The client broke a protocol rule or an IoT Core limit.
    ClientError,
    /// The connection was cut (EOF, I/O error, or the client stopped reading).
    ConnectionLost,
    /// Another connection took the client id.
    DuplicateClientId,
    /// Nothing heard from the client within 1.5 × keep-alive.
    MqttKeepAliveTimeout,
    /// The broker closed the connection (shutdown).
    ServerInitiatedDisconnect,
}

impl DisconnectReason {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::AuthError => "AUTH_ERROR",
            DisconnectReason::ClientInitiatedDisconnect => "CLIENT_INITIATED_DISCONNECT",
            DisconnectReason::ClientError => "CLIENT_ERROR",
            DisconnectReason::ConnectionLost => "CONNECTION_LOST",
            DisconnectReason::DuplicateClientId => "DUPLICATE_CLIENTID",
            DisconnectReason::MqttKeepAliveTimeout => "MQTT_KEEP_ALIVE_TIMEOUT",
            DisconnectReason::ServerInitiatedDisconnect => "SERVER_INITIATED_DISCONNECT",
        }
    }

    /// `clientInitiatedDisconnect`.
    pub fn client_initiated(self) -> bool {
        self == DisconnectReason::ClientInitiatedDisconnect
    }
}

/// One connection, as its lifecycle events describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// MQTT client id.
    pub client_id: String,
    /// Unique for the life of the connection's session (a UUID).
    pub session_identifier: String,
    /// The certificate id (mutual TLS).
    pub principal_identifier: String,
    /// The client's IP address.
    pub ip_address: String,
    /// Increases with every connection of a client id; connect and disconnect share it.
    pub version_number: u64,
}

impl Presence {
    /// AWS: "Client IDs that contain # or + do not receive lifecycle events."
    fn gets_events(&self) -> bool {
        !self.client_id.contains(['#', '+'])
    }
}

/// `$aws/events/presence/connected/{clientId}`.
pub fn connected(p: &Presence, timestamp_ms: u64) -> Option<Event> {
    p.gets_events().then(|| Event {
        topic: format!("$aws/events/presence/connected/{}", p.client_id),
        payload: json!({
            "clientId": p.client_id,
            "timestamp": timestamp_ms,
            "eventType": "connected",
            "sessionIdentifier": p.session_identifier,
            "principalIdentifier": p.principal_identifier,
            "ipAddress": p.ip_address,
            "versionNumber": p.version_number,
        })
        .to_string(),
    })
}

/// `$aws/events/presence/disconnected/{clientId}`.
pub fn disconnected(p: &Presence, reason: DisconnectReason, timestamp_ms: u64) -> Option<Event> {
    p.gets_events().then(|| Event {
        topic: format!("$aws/events/presence/disconnected/{}", p.client_id),
        payload: json!({
            "clientId": p.client_id,
            "timestamp": timestamp_ms,
            "eventType": "disconnected",
            "clientInitiatedDisconnect": reason.client_initiated(),
            "sessionIdentifier": p.session_identifier,
            "principalIdentifier": p.principal_identifier,
            "disconnectReason": reason.as_str(),
            "ipAddress": p.ip_address,
            "versionNumber": p.version_number,
        })
        .to_string(),
    })
}

/// `$aws/events/subscriptions/subscribed|unsubscribed/{clientId}` for the
/// filters of one SUBSCRIBE (those granted) or UNSUBSCRIBE. None without filters.
pub fn subscription(p: &Presence, subscribed: bool, topics: &[String], timestamp_ms: u64) -> Option<Event> {
    if topics.is_empty() || !p.gets_events() {
        return None;
    }
    let kind = if subscribed { "subscribed" } else { "unsubscribed" };
    Some(Event {
        topic: format!("$aws/events/subscriptions/{kind}/{}", p.client_id),
        payload: json!({
            "clientId": p.client_id,
            "timestamp": timestamp_ms,
            "eventType": kind,
            "sessionIdentifier": p.session_identifier,
            "principalIdentifier": p.principal_identifier,
            "topics": topics,
        })
        .to_string(),
    })
}

/// What happened to a job, for `$aws/events/job/{jobId}/{operation}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOperation {
    /// Every execution reached a terminal status (status COMPLETED).
    Completed,
    /// CancelJob finished (status CANCELED).
    Canceled,
    /// DeleteJob finished (status DELETED).
    Deleted,
}

impl JobOperation {
    fn names(self) -> (&'static str, &'static str) {
        match self {
            JobOperation::Completed => ("completed", "COMPLETED"),
            JobOperation::Canceled => ("canceled", "CANCELED"),
            JobOperation::Deleted => ("deleted", "DELETED"),
        }
    }
}

/// A job, as its events describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFact {
    /// Job id.
    pub job_id: String,
    /// `SNAPSHOT` or `CONTINUOUS`.
    pub target_selection: &'static str,
    /// Target ARNs.
    pub targets: Vec<String>,
    /// The job's description, if any.
    pub description: Option<String>,
    /// Epoch milliseconds.
    pub created_at_ms: i64,
    /// Epoch milliseconds.
    pub last_updated_at_ms: i64,
    /// Epoch milliseconds (completed jobs).
    pub completed_at_ms: Option<i64>,
    /// The cancel or delete comment.
    pub comment: Option<String>,
    /// `numberOf…Things` counts (completed jobs).
    pub process_details: Option<Value>,
}

/// The job event for `op`; `timestamp_s` in seconds, as AWS's examples.
pub fn job_event(op: JobOperation, job: &JobFact, event_id: &str, timestamp_s: u64) -> Event {
    let (operation, status) = op.names();
    let mut body = json!({
        "eventType": "JOB",
        "eventId": event_id,
        "timestamp": timestamp_s,
        "operation": operation,
        "jobId": job.job_id,
        "status": status,
        "targetSelection": job.target_selection,
        "targets": job.targets,
        "createdAt": job.created_at_ms,
        "lastUpdatedAt": job.last_updated_at_ms,
    });
    if let Some(obj) = body.as_object_mut() {
        if let Some(d) = &job.description {
            obj.insert("description".into(), json!(d));
        }
        match op {
            JobOperation::Completed => {
                if let Some(at) = job.completed_at_ms {
                    obj.insert("completedAt".into(), json!(at));
                }
                if let Some(details) = &job.process_details {
                    obj.insert("jobProcessDetails".into(), details.clone());
                }
            }
            JobOperation::Canceled | JobOperation::Deleted => {
                if let Some(c) = &job.comment {
                    obj.insert("comment".into(), json!(c));
                }
            }
        }
    }
    Event { topic: format!("$aws/events/job/{}/{operation}", job.job_id), payload: body.to_string() }
}

/// The job-execution event for an execution that reached a terminal status
/// (None for QUEUED and IN_PROGRESS): `$aws/events/jobExecution/{jobId}/{status}`.
pub fn job_execution_event(
    job_id: &str,
    thing_arn: &str,
    status: JobExecutionStatus,
    status_details: &BTreeMap<String, String>,
    event_id: &str,
    timestamp_s: u64,
) -> Option<Event> {
    let (operation, wire) = match status {
        JobExecutionStatus::Queued | JobExecutionStatus::InProgress => return None,
        JobExecutionStatus::Succeeded => ("succeeded", "SUCCEEDED"),
        JobExecutionStatus::Failed => ("failed", "FAILED"),
        JobExecutionStatus::Rejected => ("rejected", "REJECTED"),
        JobExecutionStatus::Canceled => ("canceled", "CANCELED"),
        JobExecutionStatus::TimedOut => ("timed_out", "TIMED_OUT"),
        JobExecutionStatus::Removed => ("removed", "REMOVED"),
    };
    Some(Event {
        topic: format!("$aws/events/jobExecution/{job_id}/{operation}"),
        payload: json!({
            "eventType": "JOB_EXECUTION",
            "eventId": event_id,
            "timestamp": timestamp_s,
            "operation": operation,
            "jobId": job_id,
            "thingArn": thing_arn,
            "status": wire,
            "statusDetails": status_details,
        })
        .to_string(),
    })
}

/// The `EventType` values of the IoT model, in its order.
pub const EVENT_TYPES: [&str; 11] = [
    "THING",
    "THING_GROUP",
    "THING_TYPE",
    "THING_GROUP_MEMBERSHIP",
    "THING_GROUP_HIERARCHY",
    "THING_TYPE_ASSOCIATION",
    "JOB",
    "JOB_EXECUTION",
    "POLICY",
    "CERTIFICATE",
    "CA_CERTIFICATE",
];

/// The stored event configuration: which types are enabled (all off until
/// enabled, as a new AWS account), and when it was created and last changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventConfigurations {
    /// Enabled per event type; a type not present is disabled.
    pub enabled: BTreeMap<String, bool>,
    /// Epoch milliseconds of the first update (0: never updated).
    pub creation_date_ms: u64,
    /// Epoch milliseconds of the last update (0: never updated).
    pub last_modified_date_ms: u64,
}

/// Why an update was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventConfigError {
    /// An event type the model does not list (fix the input).
    #[error("{0} is not a valid event type; valid types: {types}", types = EVENT_TYPES.join(", "))]
    UnknownType(String),
    /// Storage failed (retry).
    #[error(transparent)]
    Store(#[from] StoreError),
}

const K_CONFIG: &str = "event_configurations";
const KEY: &str = "default";

/// The account's event configuration, persisted in the [`Store`].
#[derive(Debug)]
pub struct EventSettings {
    store: Store,
    clock: SharedClock,
    current: Mutex<EventConfigurations>,
}

impl EventSettings {
    /// Loads the stored configuration (an unreadable one is reported and replaced by the default).
    pub fn open(store: Store, clock: SharedClock) -> Result<Self, StoreError> {
        let current = match store.get(K_CONFIG, KEY)? {
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unreadable event configuration; starting with every type disabled");
                EventConfigurations::default()
            }),
            None => EventConfigurations::default(),
        };
        Ok(EventSettings { store, clock, current: Mutex::new(current) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EventConfigurations> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether events of `event_type` (e.g. `JOB_EXECUTION`) are published.
    pub fn enabled(&self, event_type: &str) -> bool {
        self.lock().enabled.get(event_type).copied().unwrap_or(false)
    }

    /// The current configuration.
    pub fn describe(&self) -> EventConfigurations {
        self.lock().clone()
    }

    /// Sets the types named in `changes`; the others keep their setting.
    pub fn update(&self, changes: &BTreeMap<String, bool>) -> Result<(), EventConfigError> {
        if let Some(bad) = changes.keys().find(|k| !EVENT_TYPES.contains(&k.as_str())) {
            return Err(EventConfigError::UnknownType(bad.clone()));
        }
        let now = self.clock.now_millis();
        let mut current = self.lock();
        let mut next = current.clone();
        next.enabled.extend(changes.iter().map(|(k, v)| (k.clone(), *v)));
        if next.creation_date_ms == 0 {
            next.creation_date_ms = now;
        }
        next.last_modified_date_ms = now;
        let text = serde_json::to_string(&next).unwrap_or_default();
        self.store.put(K_CONFIG, KEY, &text)?;
        *current = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(client_id: &str) -> Presence {
        Presence {
            client_id: client_id.into(),
            session_identifier: "s-1".into(),
            principal_identifier: "cert-1".into(),
            ip_address: "127.0.0.1".into(),
            version_number: 7,
        }
    }

    fn parse(e: &Event) -> Value {
        serde_json::from_str(&e.payload).expect("JSON")
    }

    #[test]
    fn connected_event_carries_the_documented_fields() {
        let e = connected(&presence("dev-1"), 1_000).expect("event");
        assert_eq!(e.topic, "$aws/events/presence/connected/dev-1");
        assert_eq!(
            parse(&e),
            json!({"clientId": "dev-1", "timestamp": 1000, "eventType": "connected", "sessionIdentifier": "s-1",
                   "principalIdentifier": "cert-1", "ipAddress": "127.0.0.1", "versionNumber": 7})
        );
    }

    #[test]
    fn disconnected_event_names_the_reason_and_who_initiated() {
        let table = [
            (DisconnectReason::ClientInitiatedDisconnect, "CLIENT_INITIATED_DISCONNECT", true),
            (DisconnectReason::DuplicateClientId, "DUPLICATE_CLIENTID", false),
            (DisconnectReason::MqttKeepAliveTimeout, "MQTT_KEEP_ALIVE_TIMEOUT", false),
            (DisconnectReason::AuthError, "AUTH_ERROR", false),
            (DisconnectReason::ConnectionLost, "CONNECTION_LOST", false),
            (DisconnectReason::ClientError, "CLIENT_ERROR", false),
            (DisconnectReason::ServerInitiatedDisconnect, "SERVER_INITIATED_DISCONNECT", false),
        ];
        for (reason, wire, by_client) in table {
            let e = disconnected(&presence("d"), reason, 5).expect("event");
            assert_eq!(e.topic, "$aws/events/presence/disconnected/d");
            let v = parse(&e);
            assert_eq!(v["disconnectReason"], wire);
            assert_eq!(v["clientInitiatedDisconnect"], by_client, "{wire}");
            assert_eq!(v["eventType"], "disconnected");
            assert_eq!(v["versionNumber"], 7);
        }
    }

    #[test]
    fn client_ids_with_wildcards_get_no_lifecycle_events() {
        for id in ["a#b", "a+b", "+", "#"] {
            let p = presence(id);
            assert!(connected(&p, 0).is_none(), "{id}");
            assert!(disconnected(&p, DisconnectReason::ConnectionLost, 0).is_none(), "{id}");
            assert!(subscription(&p, true, &["t".into()], 0).is_none(), "{id}");
        }
    }

    #[test]
    fn subscription_events_list_the_filters() {
        let topics = vec!["a/b".to_string(), "c/#".to_string()];
        let e = subscription(&presence("d"), true, &topics, 3).expect("event");
        assert_eq!(e.topic, "$aws/events/subscriptions/subscribed/d");
        assert_eq!(
            parse(&e),
            json!({"clientId": "d", "timestamp": 3, "eventType": "subscribed", "sessionIdentifier": "s-1",
                   "principalIdentifier": "cert-1", "topics": ["a/b", "c/#"]})
        );
        let e = subscription(&presence("d"), false, &topics, 3).expect("event");
        assert_eq!(e.topic, "$aws/events/subscriptions/unsubscribed/d");
        assert_eq!(parse(&e)["eventType"], "unsubscribed");
        assert!(subscription(&presence("d"), true, &[], 3).is_none(), "nothing granted, nothing to tell");
    }

    #[test]
    fn job_events_use_aws_topics_and_fields() {
        let job = JobFact {
            job_id: "j1".into(),
            target_selection: "SNAPSHOT",
            targets: vec!["arn:aws:iot:us-east-1:000000000000:thing/t".into()],
            description: Some("d".into()),
            created_at_ms: 1,
            last_updated_at_ms: 2,
            completed_at_ms: Some(3),
            comment: Some("why".into()),
            process_details: Some(json!({"numberOfSucceededThings": 1})),
        };
        let table = [
            (JobOperation::Completed, "completed", "COMPLETED"),
            (JobOperation::Canceled, "canceled", "CANCELED"),
            (JobOperation::Deleted, "deleted", "DELETED"),
        ];
        for (op, name, status) in table {
            let e = job_event(op, &job, "e1", 9);
            assert_eq!(e.topic, format!("$aws/events/job/j1/{name}"));
            let v = parse(&e);
            assert_eq!(v["eventType"], "JOB");
            assert_eq!(v["operation"], name);
            assert_eq!(v["status"], status);
            assert_eq!(v["targetSelection"], "SNAPSHOT");
            assert_eq!(v["createdAt"], 1);
            assert_eq!(v["description"], "d");
            assert_eq!(v["completedAt"].is_null(), op != JobOperation::Completed);
            assert_eq!(v["jobProcessDetails"].is_null(), op != JobOperation::Completed);
            assert_eq!(v["comment"].is_null(), op == JobOperation::Completed);
        }
    }

    #[test]
    fn job_execution_events_only_for_terminal_statuses() {
        let details = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let table = [
            (JobExecutionStatus::Queued, None),
            (JobExecutionStatus::InProgress, None),
            (JobExecutionStatus::Succeeded, Some(("succeeded", "SUCCEEDED"))),
            (JobExecutionStatus::Failed, Some(("failed", "FAILED"))),
            (JobExecutionStatus::Rejected, Some(("rejected", "REJECTED"))),
            (JobExecutionStatus::Canceled, Some(("canceled", "CANCELED"))),
            (JobExecutionStatus::TimedOut, Some(("timed_out", "TIMED_OUT"))),
            (JobExecutionStatus::Removed, Some(("removed", "REMOVED"))),
        ];
        for (status, want) in table {
            let e = job_execution_event("j", "arn:t", status, &details, "e", 1);
            match want {
                None => assert!(e.is_none(), "{status:?}"),
                Some((op, wire)) => {
                    let e = e.expect("event");
                    assert_eq!(e.topic, format!("$aws/events/jobExecution/j/{op}"));
                    let v = parse(&e);
                    assert_eq!(v["eventType"], "JOB_EXECUTION");
                    assert_eq!(v["status"], wire);
                    assert_eq!(v["thingArn"], "arn:t");
                    assert_eq!(v["statusDetails"], json!({"k": "v"}));
                }
            }
        }
    }

    #[test]
    fn event_configuration_starts_disabled_persists_and_refuses_unknown_types() {
        let store = Store::in_memory().unwrap();
        let clock: SharedClock = crate::time::ManualClock::at(5_000);
        let settings = EventSettings::open(store.clone(), clock.clone()).unwrap();
        assert!(!settings.enabled("JOB"));
        assert_eq!(settings.describe().creation_date_ms, 0);
        settings.update(&BTreeMap::from([("JOB".to_string(), true)])).unwrap();
        assert!(settings.enabled("JOB") && !settings.enabled("JOB_EXECUTION"));
        assert!(matches!(
            settings.update(&BTreeMap::from([("NOPE".to_string(), true)])),
            Err(EventConfigError::UnknownType(_))
        ));
        let reopened = EventSettings::open(store, clock).unwrap();
        assert!(reopened.enabled("JOB"));
        assert_eq!(reopened.describe().last_modified_date_ms, 5_000);
    }
}
