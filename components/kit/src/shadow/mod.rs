//! The shadow sync engine: the device side of one (named) shadow as a pure state machine.
//!
//! Events in ([`Event`]: answers to GetThingShadow and UpdateThingShadow, delta and
//! documents messages, what the caller applied or refused, local changes, the connection),
//! actions out ([`Action`]: get the document, apply these desired values, send this reported
//! update, retry after a pause, log a problem). No I/O and no clock: the caller performs the
//! actions (over Greengrass IPC, against the core's local shadow) and feeds the answers back.
//! It follows the Device Shadow service's document rules ("Device Shadow service documents"
//! in the AWS IoT Core Developer Guide, as `cloud_api::shadow` implements them); the rules
//! it adds are written in the repository's `docs/shadow.md`, section "The device side".
//!
//! Nothing here is pump-specific: the document is any JSON object, and validating a desired
//! value is the caller's job (it answers [`Action::Apply`] with [`Event::Applied`]).
//!
//! ```
//! use kit::shadow::{Action, Event, Refusal, ShadowSync, SyncConfig};
//! use serde_json::json;
//!
//! let applied = json!({"mode": "auto", "speedRpm": 1500}).as_object().cloned().unwrap();
//! let mut sync = ShadowSync::new(SyncConfig::new("controller").unwrap(), applied);
//! assert!(matches!(&sync.handle(Event::Start)[..], [Action::GetShadow { .. }]));
//! let doc = json!({"state": {"desired": {"speedRpm": 9000}, "reported": {"speedRpm": 1500}}, "version": 4});
//! let actions = sync.handle(Event::GetAccepted { client_token: "controller-1".into(), document: doc });
//! assert!(matches!(&actions[..], [Action::Apply { .. }]));
//! // The caller validates: 9000 rpm is out of range, so it is refused with a reason.
//! let refusal = Refusal::new("speedRpm", json!(9000), "above limits.maxRpm 3000");
//! let actions = sync.handle(Event::Applied { applied: Default::default(), refused: vec![refusal] });
//! let [Action::UpdateShadow { payload, .. }] = &actions[..] else { panic!("{actions:?}") };
//! assert_eq!(payload["state"]["reported"]["refused"]["speedRpm"]["reason"], "above limits.maxRpm 3000");
//! ```

mod json;

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::ipc::{ErrorCode, IpcError};

/// A JSON object: a shadow section, or part of one.
pub type Section = Map<String, Value>;

/// Longest client token the Device Shadow service accepts, in bytes.
const MAX_CLIENT_TOKEN_BYTES: usize = cloud_api::limits::SHADOW_MAX_CLIENT_TOKEN_BYTES;
/// Room kept for `-{counter}` after the prefix (a u64 has at most 20 digits).
const TOKEN_COUNTER_BYTES: usize = 21;

/// How the engine names its requests and paces its retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// Client tokens are `{token_prefix}-{n}`, `n` counting from 1 in this engine.
    pub token_prefix: String,
    /// The first pause after a throttled (429) or failed (5xx) request.
    pub initial_backoff: Duration,
    /// The longest pause; each further failure doubles the pause up to this.
    pub max_backoff: Duration,
    /// The key in `reported` under which refused desired values are reported.
    pub refused_key: String,
}

/// A [`SyncConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The token prefix would make client tokens longer than the service's 64 bytes.
    #[error("client token prefix {prefix:?} is too long: at most {max} bytes")]
    TokenPrefixTooLong {
        /// The prefix.
        prefix: String,
        /// The longest allowed prefix.
        max: usize,
    },
    /// The refused key is empty.
    #[error("the refused key must not be empty")]
    EmptyRefusedKey,
}

impl SyncConfig {
    /// Defaults (1 s first pause, 60 s longest, refusals under `refused`) with this prefix.
    pub fn new(token_prefix: impl Into<String>) -> Result<Self, ConfigError> {
        SyncConfig {
            token_prefix: token_prefix.into(),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            refused_key: "refused".into(),
        }
        .validated()
    }

    /// Checks the token prefix length and the refused key.
    pub fn validated(self) -> Result<Self, ConfigError> {
        let max = MAX_CLIENT_TOKEN_BYTES - TOKEN_COUNTER_BYTES;
        if self.token_prefix.len() > max {
            return Err(ConfigError::TokenPrefixTooLong { prefix: self.token_prefix, max });
        }
        if self.refused_key.is_empty() {
            return Err(ConfigError::EmptyRefusedKey);
        }
        Ok(self)
    }
}

/// A rejected shadow request, with the Device Shadow service's status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 400, 401, 403, 404, 409, 413, 429, 500, 503 (503 stands for "no answer": a timeout
    /// or a closed connection).
    pub code: u16,
    /// The service's message.
    pub message: String,
}

/// What the engine does about a [`Rejection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// 409: the document moved on; re-read it and reconcile.
    Conflict,
    /// 404 on a get: there is no shadow yet.
    NotFound,
    /// 429 and 5xx: pause, then try again.
    Retry,
    /// Everything else (400, 401, 403, 413, ...): report it and do not try the same again.
    GiveUp,
}

impl Rejection {
    /// A rejection with this code and message.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Rejection { code, message: message.into() }
    }

    /// What to do about it.
    pub fn kind(&self) -> RejectionKind {
        match self.code {
            409 => RejectionKind::Conflict,
            404 => RejectionKind::NotFound,
            429 | 500..=599 => RejectionKind::Retry,
            _ => RejectionKind::GiveUp,
        }
    }

    /// The rejection an IPC shadow call's error stands for. ShadowManager (and the
    /// simulated core) answer 409 with `ConflictError`, 400 and 413 with
    /// `InvalidArgumentsError`, 404 with `ResourceNotFoundError`, and throttling ("Too Many
    /// Requests") and internal failures with `ServiceError`; transport failures (no
    /// answer) become 503 so they are retried.
    pub fn from_ipc(error: &IpcError) -> Self {
        let text = error.to_string();
        let Some(service) = error.service_error() else {
            return match error.next_step() {
                crate::ipc::NextStep::Retry => Rejection::new(503, text),
                _ => Rejection::new(400, text),
            };
        };
        let message = service.message.clone();
        let code = match &service.code {
            ErrorCode::ConflictError => 409,
            ErrorCode::ResourceNotFoundError => 404,
            ErrorCode::UnauthorizedError | ErrorCode::AccessDenied => 403,
            ErrorCode::InvalidArgumentsError if message.contains("maximum size") => 413,
            ErrorCode::ServiceError if message.contains("Too Many Requests") => 429,
            ErrorCode::ServiceError | ErrorCode::Other(_) => 500,
            _ => 400,
        };
        Rejection { code, message }
    }

    /// Reads a `…/rejected` body (`{"code","message","clientToken"}`) with its token.
    pub fn from_rejected_body(body: &Value) -> Option<(Option<String>, Rejection)> {
        let code = u16::try_from(body.get("code")?.as_u64()?).ok()?;
        let message = body.get("message").and_then(Value::as_str).unwrap_or_default();
        let token = body.get("clientToken").and_then(Value::as_str).map(str::to_owned);
        Some((token, Rejection::new(code, message)))
    }
}

/// A desired value the caller would not apply, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The desired leaf's path, keys joined with `.` (`limits.maxRpm`); a path to an object
    /// refuses everything below it.
    pub path: String,
    /// The refused desired value.
    pub value: Value,
    /// Why, for the operator (`"above limits.maxRpm 3000"`).
    pub reason: String,
}

impl Refusal {
    /// A refusal of `value` at `path`.
    pub fn new(path: impl Into<String>, value: Value, reason: impl Into<String>) -> Self {
        Refusal { path: path.into(), value, reason: reason.into() }
    }
}

/// Something that happened, for [`ShadowSync::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Start (or restart) syncing: read the document and reconcile.
    Start,
    /// The IPC connection is back (subscriptions renewed): read the document and reconcile,
    /// since deltas may have been missed meanwhile.
    Reconnected,
    /// The IPC connection dropped: answers to requests in flight will not come.
    Disconnected,
    /// GetThingShadow answered with the document (a `get/accepted` body).
    GetAccepted {
        /// The token of the [`Action::GetShadow`] this answers.
        client_token: String,
        /// The document.
        document: Value,
    },
    /// GetThingShadow failed (404: no shadow yet).
    GetRejected {
        /// The token of the [`Action::GetShadow`] this answers.
        client_token: String,
        /// Why.
        rejection: Rejection,
    },
    /// An update was accepted (the UpdateThingShadow response or an `update/accepted`
    /// body); it carries the request's `clientToken`.
    UpdateAccepted {
        /// The body.
        document: Value,
    },
    /// An update was rejected.
    UpdateRejected {
        /// The token of the [`Action::UpdateShadow`] this answers.
        client_token: String,
        /// Why.
        rejection: Rejection,
    },
    /// An `update/delta` body: desired fields that differ from reported, with `version`.
    Delta {
        /// The body.
        document: Value,
    },
    /// An `update/documents` body: the whole document before and after an update. Needed
    /// to notice a desired value set back to what is reported (no delta says so).
    Documents {
        /// The body.
        document: Value,
    },
    /// The caller's answer to one [`Action::Apply`]: what is now in effect, and what it
    /// refused. Every `Apply` gets exactly one `Applied`.
    Applied {
        /// Values now in effect (merged into the applied state; `null` removes a key).
        applied: Section,
        /// Desired values refused, with reasons.
        refused: Vec<Refusal>,
    },
    /// The device's state changed on its own (a protective action started or ended, the
    /// controller reduced the speed): merged into the applied state and reported.
    LocalChange {
        /// The changed values (`null` removes a key).
        state: Section,
    },
    /// Ask again for every desired value that differs from the applied state, refused ones
    /// included (after the reason for a refusal went away, e.g. a protective action ended).
    Reconcile,
    /// The pause of an [`Action::RetryAfter`] is over.
    RetryDue,
}

/// What the caller must do, returned by [`ShadowSync::handle`] in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Call GetThingShadow; answer with [`Event::GetAccepted`] or [`Event::GetRejected`].
    GetShadow {
        /// The token to quote in the answer event.
        client_token: String,
    },
    /// Validate and apply these desired values (a partial desired section); answer with
    /// one [`Event::Applied`].
    Apply {
        /// The values.
        changes: Section,
    },
    /// Call UpdateThingShadow with this payload; answer with [`Event::UpdateAccepted`] or
    /// [`Event::UpdateRejected`].
    UpdateShadow {
        /// The payload's `clientToken`.
        client_token: String,
        /// `{"state":{"reported":{…}},"clientToken":…}`, with `"version"` when conditional.
        payload: Value,
    },
    /// Wait this long, then send [`Event::RetryDue`].
    RetryAfter(Duration),
    /// Something to log or count; the engine will not retry it by itself.
    Problem(Problem),
}

/// Something that went wrong and is not retried.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// An incoming message lacked what it must have; it was ignored.
    Malformed {
        /// Which event.
        event: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// GetThingShadow was refused for good (400, 401, 403): the engine waits for
    /// [`Event::Start`] or [`Event::Reconnected`].
    GetRejected(Rejection),
    /// An update was refused for good (400, 413, ...): it is not resent until the state
    /// to report changes.
    UpdateRejected(Rejection),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed { event, detail } => write!(f, "ignored a malformed {event}: {detail}"),
            Problem::GetRejected(r) => write!(f, "GetThingShadow rejected ({}): {}", r.code, r.message),
            Problem::UpdateRejected(r) => write!(f, "UpdateThingShadow rejected ({}): {}", r.code, r.message),
        }
    }
}

/// Where the engine is.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Not started.
    Idle,
    /// A get is in flight; deltas and documents are held until it answers.
    Fetching { token: String, held: Vec<Held> },
    /// The document is known; at most one update in flight.
    Ready { in_flight: Option<InFlight> },
    /// Waiting for [`Event::RetryDue`] before resuming.
    BackingOff { resume: Resume },
    /// The connection is down: state is kept, nothing is sent.
    Offline,
    /// The get was refused for good.
    Halted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    Get,
    Update,
}

#[derive(Debug, Clone, PartialEq)]
struct InFlight {
    token: String,
    sent: Section,
}

/// A desired-carrying message that arrived while a get was in flight.
#[derive(Debug, Clone, PartialEq)]
enum Held {
    Delta(u64, Section),
    Full(u64, Section),
}

/// A standing refusal.
#[derive(Debug, Clone, PartialEq)]
struct Refused {
    value: Value,
    reason: String,
}

/// The engine for one shadow. See the module docs and `docs/shadow.md`.
#[derive(Debug, Clone)]
pub struct ShadowSync {
    config: SyncConfig,
    phase: Phase,
    /// Desired as last known (document, deltas, documents messages).
    desired: Section,
    /// What the caller says is in effect now: the truth that gets reported.
    applied: Section,
    /// Refused desired values by path.
    refused: BTreeMap<String, Refused>,
    /// `reported` as the shadow holds it, as far as this engine knows.
    cloud_reported: Section,
    /// The newest document version seen (documents, deltas, own accepted updates).
    known_version: u64,
    /// Version of the last delta handled.
    delta_seen: u64,
    /// Version of the last full desired seen (a get or a documents message).
    full_seen: u64,
    /// `Apply` actions not yet answered; reports wait for them.
    applies_pending: u32,
    /// Values asked for by unanswered `Apply` actions (not asked again meanwhile).
    pending_values: Section,
    /// The last update refused for good: not sent again unchanged.
    last_failed: Option<Section>,
    /// Consecutive retryable failures, for the pause length.
    failures: u32,
    /// The last client token number used.
    counter: u64,
}

impl ShadowSync {
    /// An engine for a device whose applied state is `applied` now (read from the device,
    /// not from the shadow). Send [`Event::Start`] to begin.
    pub fn new(config: SyncConfig, applied: Section) -> Self {
        ShadowSync {
            config,
            phase: Phase::Idle,
            desired: Section::new(),
            applied,
            refused: BTreeMap::new(),
            cloud_reported: Section::new(),
            known_version: 0,
            delta_seen: 0,
            full_seen: 0,
            applies_pending: 0,
            pending_values: Section::new(),
            last_failed: None,
            failures: 0,
            counter: 0,
        }
    }

    /// Desired as last known.
    pub fn desired(&self) -> &Section {
        &self.desired
    }

    /// The applied state (what is reported).
    pub fn applied(&self) -> &Section {
        &self.applied
    }

    /// Standing refusals: path → (value, reason).
    pub fn refusals(&self) -> impl Iterator<Item = (&str, &Value, &str)> {
        self.refused.iter().map(|(path, r)| (path.as_str(), &r.value, r.reason.as_str()))
    }

    /// The newest shadow version the engine has seen.
    pub fn version(&self) -> u64 {
        self.known_version
    }

    /// True when the document is known, nothing is in flight or pending, and the shadow's
    /// `reported` already says what the engine would report.
    pub fn is_synced(&self) -> bool {
        matches!(self.phase, Phase::Ready { in_flight: None })
            && self.applies_pending == 0
            && self.reported_difference().is_empty()
    }

    /// Handles one event and returns what the caller must do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Start | Event::Reconnected => self.fetch(&mut out),
            Event::Disconnected => self.phase = Phase::Offline,
            Event::GetAccepted { client_token, document } => self.on_get_accepted(&client_token, &document, &mut out),
            Event::GetRejected { client_token, rejection } => self.on_get_rejected(&client_token, rejection, &mut out),
            Event::UpdateAccepted { document } => self.on_update_accepted(&document),
            Event::UpdateRejected { client_token, rejection } => {
                self.on_update_rejected(&client_token, rejection, &mut out)
            }
            Event::Delta { document } => self.on_delta(&document, &mut out),
            Event::Documents { document } => self.on_documents(&document, &mut out),
            Event::Applied { applied, refused } => self.on_applied(&applied, refused),
            Event::LocalChange { state } => json::merge(&mut self.applied, &state),
            // Offline the device keeps acting on the desired state it knows.
            Event::Reconcile => {
                if !matches!(self.phase, Phase::Idle | Phase::Fetching { .. } | Phase::Halted) {
                    self.ask_to_apply(true, &mut out);
                }
            }
            Event::RetryDue => self.on_retry_due(&mut out),
        }
        self.maybe_report(&mut out);
        out
    }

    fn next_token(&mut self) -> String {
        self.counter += 1;
        format!("{}-{}", self.config.token_prefix, self.counter)
    }

    fn fetch(&mut self, out: &mut Vec<Action>) {
        let token = self.next_token();
        self.phase = Phase::Fetching { token: token.clone(), held: Vec::new() };
        out.push(Action::GetShadow { client_token: token });
    }

    fn backoff(&mut self, resume: Resume, out: &mut Vec<Action>) {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(31);
        let pause = self.config.initial_backoff.saturating_mul(1 << doublings).min(self.config.max_backoff);
        self.phase = Phase::BackingOff { resume };
        out.push(Action::RetryAfter(pause));
    }

    fn fetching_token(&self) -> Option<&str> {
        match &self.phase {
            Phase::Fetching { token, .. } => Some(token),
            _ => None,
        }
    }

    fn on_get_accepted(&mut self, token: &str, document: &Value, out: &mut Vec<Action>) {
        if self.fetching_token() != Some(token) {
            return;
        }
        let Some(version) = document.get("version").and_then(Value::as_u64) else {
            out.push(malformed("get answer", "no numeric version"));
            return self.backoff(Resume::Get, out);
        };
        let (Some(desired), Some(reported)) =
            (section(document, &["state", "desired"]), section(document, &["state", "reported"]))
        else {
            out.push(malformed("get answer", "state.desired or state.reported is not an object"));
            return self.backoff(Resume::Get, out);
        };
        self.reconcile(version, desired, reported, out);
    }

    fn on_get_rejected(&mut self, token: &str, rejection: Rejection, out: &mut Vec<Action>) {
        if self.fetching_token() != Some(token) {
            return;
        }
        match rejection.kind() {
            // No shadow yet: an empty document. Its version counter may live on after a
            // delete, so the next accepted update tells the real version.
            RejectionKind::NotFound => self.reconcile(0, Section::new(), Section::new(), out),
            RejectionKind::Retry => self.backoff(Resume::Get, out),
            RejectionKind::Conflict | RejectionKind::GiveUp => {
                self.phase = Phase::Halted;
                out.push(Action::Problem(Problem::GetRejected(rejection)));
            }
        }
    }

    /// Takes a freshly read document as the truth about the shadow, replays what arrived
    /// meanwhile, and asks for every desired value not in effect.
    fn reconcile(&mut self, version: u64, desired: Section, reported: Section, out: &mut Vec<Action>) {
        let held = match std::mem::replace(&mut self.phase, Phase::Ready { in_flight: None }) {
            Phase::Fetching { held, .. } => held,
            _ => Vec::new(),
        };
        self.desired = desired;
        self.cloud_reported = reported;
        // A read document is authoritative, even with a lower version than seen before (a
        // shadow deleted long ago restarts its count).
        self.known_version = version;
        self.delta_seen = version;
        self.full_seen = version;
        self.failures = 0;
        self.last_failed = None;
        for message in held {
            match message {
                Held::Delta(v, state) => self.take_delta(v, &state),
                Held::Full(v, desired) => self.take_full(v, desired),
            };
        }
        self.clear_stale_refusals();
        self.ask_to_apply(true, out);
    }

    fn on_delta(&mut self, document: &Value, out: &mut Vec<Action>) {
        let (Some(version), Some(state)) =
            (document.get("version").and_then(Value::as_u64), section(document, &["state"]))
        else {
            out.push(malformed("delta", "needs a numeric version and a state object"));
            return;
        };
        match &mut self.phase {
            Phase::Idle | Phase::Halted => {}
            Phase::Fetching { held, .. } => held.push(Held::Delta(version, state)),
            _ => {
                if self.take_delta(version, &state) {
                    self.clear_stale_refusals();
                    self.ask_to_apply(false, out);
                }
            }
        }
    }

    /// Merges a delta into desired when it is newer than everything handled.
    fn take_delta(&mut self, version: u64, state: &Section) -> bool {
        if version <= self.delta_seen.max(self.full_seen) {
            return false;
        }
        self.delta_seen = version;
        self.known_version = self.known_version.max(version);
        json::merge(&mut self.desired, state);
        true
    }

    fn on_documents(&mut self, document: &Value, out: &mut Vec<Action>) {
        let current = document.get("current");
        let version = current.and_then(|c| c.get("version")).and_then(Value::as_u64);
        let desired = current.and_then(|c| section(c, &["state", "desired"]));
        let (Some(version), Some(desired)) = (version, desired) else {
            out.push(malformed("documents message", "needs current.version and an object current.state.desired"));
            return;
        };
        match &mut self.phase {
            Phase::Idle | Phase::Halted => {}
            Phase::Fetching { held, .. } => held.push(Held::Full(version, desired)),
            _ => {
                if self.take_full(version, desired) {
                    self.clear_stale_refusals();
                    self.ask_to_apply(false, out);
                }
            }
        }
    }

    /// Replaces desired by a full copy when it is newer than the last full copy and not
    /// older than the last delta (a delta of the same version says less than it does).
    fn take_full(&mut self, version: u64, desired: Section) -> bool {
        if version <= self.full_seen || version < self.delta_seen {
            return false;
        }
        self.full_seen = version;
        self.delta_seen = self.delta_seen.max(version);
        self.known_version = self.known_version.max(version);
        self.desired = desired;
        true
    }

    fn on_update_accepted(&mut self, document: &Value) {
        let token = document.get("clientToken").and_then(Value::as_str);
        let Phase::Ready { in_flight: Some(flight) } = &self.phase else { return };
        if token != Some(flight.token.as_str()) {
            return;
        }
        let sent = flight.sent.clone();
        json::merge(&mut self.cloud_reported, &sent);
        if let Some(version) = document.get("version").and_then(Value::as_u64) {
            self.known_version = self.known_version.max(version);
        }
        self.failures = 0;
        self.last_failed = None;
        self.phase = Phase::Ready { in_flight: None };
    }

    fn on_update_rejected(&mut self, token: &str, rejection: Rejection, out: &mut Vec<Action>) {
        let Phase::Ready { in_flight: Some(flight) } = &self.phase else { return };
        if flight.token != token {
            return;
        }
        let sent = flight.sent.clone();
        match rejection.kind() {
            RejectionKind::Conflict => self.fetch(out),
            RejectionKind::Retry => self.backoff(Resume::Update, out),
            RejectionKind::NotFound | RejectionKind::GiveUp => {
                self.last_failed = Some(sent);
                self.phase = Phase::Ready { in_flight: None };
                out.push(Action::Problem(Problem::UpdateRejected(rejection)));
            }
        }
    }

    fn on_applied(&mut self, applied: &Section, refused: Vec<Refusal>) {
        self.applies_pending = self.applies_pending.saturating_sub(1);
        if self.applies_pending == 0 {
            self.pending_values.clear();
        }
        json::merge(&mut self.applied, applied);
        for (path, _) in json::leaves(applied) {
            let path = json::join(&path);
            self.refused.retain(|refused, _| !related(refused, &path));
        }
        for refusal in refused {
            self.refused.insert(refusal.path, Refused { value: refusal.value, reason: refusal.reason });
        }
        // A refusal of a value no longer desired (desired moved on meanwhile) is not news.
        self.clear_stale_refusals();
    }

    fn on_retry_due(&mut self, out: &mut Vec<Action>) {
        match self.phase {
            Phase::BackingOff { resume: Resume::Get } => self.fetch(out),
            Phase::BackingOff { resume: Resume::Update } => self.phase = Phase::Ready { in_flight: None },
            _ => {}
        }
    }

    /// Drops refusals whose value is no longer the desired one.
    fn clear_stale_refusals(&mut self) {
        let desired = &self.desired;
        self.refused.retain(|path, refused| {
            let steps: Vec<String> = path.split('.').map(str::to_owned).collect();
            json::get(desired, &steps).is_some_and(|value| json::same(value, &refused.value))
        });
    }

    /// Emits one `Apply` with every desired leaf that differs from the applied state,
    /// except values already asked for and, unless `include_refused`, values standing
    /// refused.
    fn ask_to_apply(&mut self, include_refused: bool, out: &mut Vec<Action>) {
        let mut changes = Section::new();
        for (path, value) in json::leaves(&self.desired) {
            let in_effect = json::get(&self.applied, &path).is_some_and(|v| json::same(v, value));
            let asked = json::get(&self.pending_values, &path).is_some_and(|v| json::same(v, value));
            let refused =
                !include_refused && self.refused.get(&json::join(&path)).is_some_and(|r| json::same(&r.value, value));
            if !(in_effect || asked || refused) {
                json::set(&mut changes, &path, value.clone());
            }
        }
        if changes.is_empty() {
            return;
        }
        self.applies_pending += 1;
        json::merge(&mut self.pending_values, &changes);
        out.push(Action::Apply { changes });
    }

    /// What `reported` must receive to say what the engine would report: the applied
    /// state's changed leaves, and the refusals added or withdrawn.
    fn reported_difference(&self) -> Section {
        let key = &self.config.refused_key;
        let mut applied = self.applied.clone();
        applied.remove(key);
        let mut diff = json::difference(&applied, &self.cloud_reported);

        let want: Section = self
            .refused
            .iter()
            .map(|(path, r)| (path.clone(), serde_json::json!({"value": r.value, "reason": r.reason})))
            .collect();
        let have = self.cloud_reported.get(key).and_then(Value::as_object).cloned().unwrap_or_default();
        if want.is_empty() {
            if self.cloud_reported.contains_key(key) {
                diff.insert(key.clone(), Value::Null);
            }
        } else {
            // Entries are written whole, so each one always reads as one refusal.
            let mut changes: Section = want
                .iter()
                .filter(|(path, entry)| !have.get(*path).is_some_and(|old| json::same(old, entry)))
                .map(|(path, entry)| (path.clone(), entry.clone()))
                .collect();
            for path in have.keys().filter(|path| !want.contains_key(*path)) {
                changes.insert(path.clone(), Value::Null);
            }
            if !changes.is_empty() {
                diff.insert(key.clone(), Value::Object(changes));
            }
        }
        diff
    }

    fn maybe_report(&mut self, out: &mut Vec<Action>) {
        if !matches!(self.phase, Phase::Ready { in_flight: None }) || self.applies_pending > 0 {
            return;
        }
        let diff = self.reported_difference();
        if diff.is_empty() || self.last_failed.as_ref() == Some(&diff) {
            return;
        }
        let token = self.next_token();
        let mut payload = serde_json::json!({"state": {"reported": diff}, "clientToken": token});
        // Refusals are claims about desired: they hold only for the document they were
        // drawn from, so they go with the version (409 → re-read). The applied state is
        // the device's own truth whatever desired says meanwhile: no version.
        if diff.contains_key(&self.config.refused_key) {
            payload["version"] = self.known_version.into();
        }
        self.phase = Phase::Ready { in_flight: Some(InFlight { token: token.clone(), sent: diff }) };
        out.push(Action::UpdateShadow { client_token: token, payload });
    }
}

/// Whether one refusal path and one applied path concern the same value (equal, or one
/// lies below the other).
fn related(a: &str, b: &str) -> bool {
    let below = |long: &str, short: &str| long.strip_prefix(short).is_some_and(|rest| rest.starts_with('.'));
    a == b || below(a, b) || below(b, a)
}

/// The object at `path` in `value`: `Some(empty)` when absent or `null`, `None` when it is
/// not an object.
fn section(value: &Value, path: &[&str]) -> Option<Section> {
    let mut node = value;
    for key in path {
        match node.get(key) {
            Some(next) => node = next,
            None => return Some(Section::new()),
        }
    }
    match node {
        Value::Object(map) => Some(map.clone()),
        Value::Null => Some(Section::new()),
        _ => None,
    }
}

fn malformed(event: &'static str, detail: &str) -> Action {
    Action::Problem(Problem::Malformed { event, detail: detail.to_owned() })
}

#[cfg(test)]
mod tests;
