//! The component update gate: what a deployment asks of the running components before and
//! after it changes them (AWS-CONTRACTS.md §10 "Deferral over IPC"; IPC shapes in
//! [`cloud_api::ipc::model`]).
//!
//! Follows the nucleus's `UpdateSystemPolicyService` and `LifecycleIPCEventStreamAgent`
//! (component update notices and DeferComponentUpdate), `ConfigStoreIPCEventStreamAgent` and
//! `DynamicComponentConfigurationValidator` (configuration validation), called where
//! `DeploymentConfigMerger` calls them.
//!
//! **Component update notices** ([`UpdateGate::pre_update`]), in rounds:
//! 1. every component with an open SubscribeToComponentUpdates stream gets
//!    `preUpdateEvent {deploymentId, isGgcRestarting}` (`isGgcRestarting` is true when the
//!    deployment updates the nucleus itself);
//! 2. the round waits until each of them has answered with DeferComponentUpdate for that
//!    deployment, or the policy's `timeout` has passed;
//! 3. the longest `recheckAfterMs` of the answers puts the update off by that long, then the
//!    notice is sent again (a new round); when nobody asked for more than 0 (or nobody
//!    answered in time) the update goes ahead.
//!
//! There is no limit on the number of rounds (the nucleus has none either): a component that
//! defers forever holds the deployment forever. A caller that wants a cap drops the future.
//! After the update, [`UpdateGate::post_update`] sends `postUpdateEvent {deploymentId}` to the
//! same subscribers.
//!
//! DeferComponentUpdate answers as the nucleus does: from a component with no open
//! subscription `InvalidArgumentsError` "Component is not subscribed to component update
//! events"; for a deployment that is not waiting for that component's answer (an unknown
//! `deploymentId`, a second answer in one round, an answer after the update went ahead)
//! `ServiceError` "Time limit to respond to PreComponentUpdateEvent exceeded". An answer that
//! comes after its round closed (but before the next) is accepted and ignored, as the
//! nucleus's leftover futures do.
//!
//! **Configuration validation** ([`UpdateGate::validate`]): each component the deployment
//! names (the caller names those whose configuration changes and whose version does not)
//! that has an open SubscribeToValidateConfigurationUpdates stream gets
//! `validateConfigurationUpdateEvent {configuration, deploymentId}` with its whole proposed
//! configuration; the validation waits up to its `timeout` for every report. A REJECTED
//! report fails it with the component's message; a missing report fails it too (the
//! nucleus's `TimeoutException` path). SendConfigurationValidityReport for a validation that
//! is not waiting for that component answers `InvalidArgumentsError` "Validation request
//! either timed out or was never made". A component has one validation stream: a second
//! subscription keeps the first, as the nucleus's `computeIfAbsent` does.
//!
//! Differences from the nucleus, all where it would wait for something that cannot come:
//! - a subscriber whose stream closes during a round is no longer waited for (the nucleus
//!   keeps its future and waits out the timeout); a validator that closes its stream
//!   without reporting fails the validation at once (the nucleus fails it at the timeout);
//! - DeferComponentUpdate without `recheckAfterMs` is an answer of 0 (the nucleus logs it,
//!   ignores it and keeps waiting for that component until the timeout);
//! - components that did not subscribe to validation are not waited for (the nucleus
//!   includes their never-completed futures in its wait when another component did
//!   subscribe, which fails the deployment at the timeout);
//! - validation stops at the first REJECTED report (the nucleus waits for every report and
//!   lists every rejection): the deployment fails either way, with nothing changed.
//!
//! The decisions are pure ([`Round`], [`Validation`]): they take answers and the time and say
//! "wait until", "go", "defer" or "rejected"; [`UpdateGate`] does the channels and the clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cloud_api::ipc::model::{
    ComponentUpdatePolicyEvents, ConfigurationValidityReport, ConfigurationValidityStatus, DeferComponentUpdateRequest,
    PostComponentUpdateEvent, PreComponentUpdateEvent, ValidateConfigurationUpdateEvent,
    ValidateConfigurationUpdateEvents,
};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use super::services::{BoxFuture, ComponentUpdateGate, Deferral, RejectionKind, ValidationRejected};

/// Events queued per subscription before the gate counts one as not delivered.
const EVENT_QUEUE: usize = 16;

// ---- pure decisions ----

/// What a round of notices has heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundInput {
    /// DeferComponentUpdate for this round's deployment.
    Answer {
        /// Who answered.
        component: String,
        /// `recheckAfterMs` (absent counts as 0).
        recheck_after_ms: Option<u64>,
        /// `message`.
        message: Option<String>,
    },
    /// The component's last subscription closed.
    Gone(String),
}

/// Where a round of notices is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundState {
    /// Answers are still due; look again at `until` at the latest.
    Waiting {
        /// The round's deadline.
        until: Instant,
    },
    /// Nobody asked for more time: update now.
    Go,
    /// Put the update off by `recheck`, then notify again.
    Defer {
        /// The longest `recheckAfterMs` asked for.
        recheck: Duration,
    },
}

/// One round of preUpdateEvents (`UpdateSystemPolicyService.getTimeToReCheck`): pure.
#[derive(Debug, Clone)]
pub struct Round {
    deadline: Instant,
    waiting: BTreeSet<String>,
    /// Component → (recheck asked for, message), for answers that asked for more than 0.
    deferrals: BTreeMap<String, (Duration, Option<String>)>,
}

impl Round {
    /// A round that notified `notified` at `now` and waits up to `timeout`.
    pub fn new(notified: BTreeSet<String>, now: Instant, timeout: Duration) -> Self {
        Self { deadline: now + timeout, waiting: notified, deferrals: BTreeMap::new() }
    }

    /// Takes an answer (or a departure) heard at `now`. Answers after the deadline, or from
    /// components not waited for, change nothing.
    pub fn on(&mut self, input: RoundInput, now: Instant) {
        if now >= self.deadline {
            return;
        }
        match input {
            RoundInput::Answer { component, recheck_after_ms, message } => {
                if !self.waiting.remove(&component) {
                    return;
                }
                let recheck = Duration::from_millis(recheck_after_ms.unwrap_or(0));
                if !recheck.is_zero() {
                    self.deferrals.insert(component, (recheck, message));
                }
            }
            RoundInput::Gone(component) => {
                self.waiting.remove(&component);
            }
        }
    }

    /// Where the round is at `now`.
    pub fn state(&self, now: Instant) -> RoundState {
        if !self.waiting.is_empty() && now < self.deadline {
            return RoundState::Waiting { until: self.deadline };
        }
        match self.deferrals.values().map(|(d, _)| *d).max() {
            Some(recheck) => RoundState::Defer { recheck },
            None => RoundState::Go,
        }
    }

    /// Who asked for time in this round, with how much and why.
    pub fn deferrals(&self) -> impl Iterator<Item = (&String, &(Duration, Option<String>))> {
        self.deferrals.iter()
    }
}

/// Adds a closed round's deferrals to the running totals.
fn add_deferrals(totals: &mut BTreeMap<String, Deferral>, round: &Round) {
    for (component, (recheck, message)) in round.deferrals() {
        let entry = totals.entry(component.clone()).or_insert_with(|| Deferral {
            component: component.clone(),
            message: None,
            deferred_for: Duration::ZERO,
        });
        entry.deferred_for += *recheck;
        entry.message.clone_from(message);
    }
}

/// What a validation has heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationInput {
    /// SendConfigurationValidityReport for this deployment.
    Report {
        /// Who reported.
        component: String,
        /// ACCEPTED or REJECTED.
        status: ConfigurationValidityStatus,
        /// Why.
        message: Option<String>,
    },
    /// The component closed its validation stream.
    Gone(String),
}

/// Where a validation is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationState {
    /// Reports are still due until then.
    Waiting {
        /// The deadline.
        until: Instant,
    },
    /// Every component asked accepted.
    Accepted,
    /// Refused.
    Rejected(ValidationRejected),
}

/// One configuration validation (`DynamicComponentConfigurationValidator.validateOverIpc`): pure.
#[derive(Debug, Clone)]
pub struct Validation {
    deadline: Instant,
    timeout: Duration,
    waiting: BTreeSet<String>,
    rejected: Option<ValidationRejected>,
}

impl Validation {
    /// A validation that asked `asked` at `now` and waits up to `timeout`.
    pub fn new(asked: BTreeSet<String>, now: Instant, timeout: Duration) -> Self {
        Self { deadline: now + timeout, timeout, waiting: asked, rejected: None }
    }

    /// Takes a report (or a departure) heard at `now`.
    pub fn on(&mut self, input: ValidationInput, now: Instant) {
        if self.rejected.is_some() || now >= self.deadline {
            return;
        }
        match input {
            ValidationInput::Report { component, status, message } => {
                if !self.waiting.remove(&component) {
                    return;
                }
                if status == ConfigurationValidityStatus::Rejected {
                    let message = message.unwrap_or_else(|| "no reason given".to_owned());
                    self.rejected = Some(ValidationRejected { component, message, kind: RejectionKind::Rejected });
                }
            }
            ValidationInput::Gone(component) => {
                if self.waiting.remove(&component) {
                    let message = "closed its validation stream without reporting".to_owned();
                    self.rejected = Some(ValidationRejected { component, message, kind: RejectionKind::NoReport });
                }
            }
        }
    }

    /// Where the validation is at `now`.
    pub fn state(&self, now: Instant) -> ValidationState {
        if let Some(r) = &self.rejected {
            return ValidationState::Rejected(r.clone());
        }
        match self.waiting.first() {
            None => ValidationState::Accepted,
            Some(_) if now < self.deadline => ValidationState::Waiting { until: self.deadline },
            Some(component) => ValidationState::Rejected(ValidationRejected {
                component: component.clone(),
                message: format!("no configuration validity report within {} ms", self.timeout.as_millis()),
                kind: RejectionKind::NoReport,
            }),
        }
    }
}

// ---- the service ----

/// Why a DeferComponentUpdate or SendConfigurationValidityReport is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// Answered as `InvalidArgumentsError`.
    #[error("{0}")]
    InvalidArguments(String),
    /// Answered as `ServiceError`.
    #[error("{0}")]
    Service(String),
}

/// Answers open for one deployment: who may still answer, and where answers go.
struct Open<I> {
    deployment_id: String,
    components: BTreeSet<String>,
    inputs: mpsc::UnboundedSender<I>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Subscription id → (component, event sender).
    updates: BTreeMap<u64, (String, mpsc::Sender<ComponentUpdatePolicyEvents>)>,
    /// Component → (subscription id, event sender): one per component.
    validators: HashMap<String, (u64, mpsc::Sender<ValidateConfigurationUpdateEvents>)>,
    deferrals: Option<Open<RoundInput>>,
    reports: Option<Open<ValidationInput>>,
}

impl State {
    fn subscribed_to_updates(&self, component: &str) -> bool {
        self.updates.values().any(|(c, _)| c == component)
    }
}

/// The gate: subscriptions from the IPC server, notices and validations for deployments.
/// Cheap to clone.
#[derive(Clone)]
pub struct UpdateGate {
    state: Arc<Mutex<State>>,
    /// Each round that put an update off, as it happens.
    deferred: broadcast::Sender<UpdateDeferred>,
}

impl Default for UpdateGate {
    fn default() -> Self {
        Self { state: Arc::default(), deferred: broadcast::channel(DEFERRED_QUEUE).0 }
    }
}

/// How many deferral rounds a slow watcher may fall behind before it misses some.
const DEFERRED_QUEUE: usize = 64;

/// A round of notices that put an update off: who asked for time, and how long the core waits
/// before it notifies again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateDeferred {
    /// The deployment put off.
    pub deployment_id: String,
    /// Each component that asked for time in this round, with its message.
    pub deferrals: Vec<Deferral>,
    /// The wait before the next notice (the longest `recheckAfterMs` asked for).
    pub recheck: Duration,
}

impl std::fmt::Debug for UpdateGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateGate").finish_non_exhaustive()
    }
}

/// Which of the component's streams a [`GateSubscription`] is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Updates,
    Validation,
}

/// A subscription's events; dropping it (the stream closing) unsubscribes.
#[derive(Debug)]
pub struct GateSubscription<E> {
    /// The events.
    pub events: mpsc::Receiver<E>,
    guard: Unsubscribe,
}

impl<E> GateSubscription<E> {
    /// False when a validation subscription kept an earlier stream of the same component:
    /// this one gets no events.
    pub fn is_active(&self) -> bool {
        self.guard.active
    }
}

#[derive(Debug)]
struct Unsubscribe {
    state: Weak<Mutex<State>>,
    id: u64,
    component: String,
    kind: Kind,
    active: bool,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let Some(state) = self.state.upgrade() else { return };
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        match self.kind {
            Kind::Updates => {
                s.updates.remove(&self.id);
                if !s.subscribed_to_updates(&self.component)
                    && let Some(open) = &mut s.deferrals
                    && open.components.remove(&self.component)
                {
                    let _ = open.inputs.send(RoundInput::Gone(self.component.clone()));
                }
            }
            Kind::Validation => {
                if s.validators.get(&self.component).is_some_and(|(id, _)| *id == self.id) {
                    s.validators.remove(&self.component);
                    if let Some(open) = &mut s.reports
                        && open.components.remove(&self.component)
                    {
                        let _ = open.inputs.send(ValidationInput::Gone(self.component.clone()));
                    }
                }
            }
        }
    }
}

/// Closes the answers of a wait when it ends, however it ends (a dropped future included).
struct CloseOnDrop<'a>(&'a UpdateGate, Kind);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        match self.1 {
            Kind::Updates => s.deferrals = None,
            Kind::Validation => s.reports = None,
        }
    }
}

impl UpdateGate {
    /// A gate with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn guard(&self, id: u64, component: &str, kind: Kind, active: bool) -> Unsubscribe {
        Unsubscribe { state: Arc::downgrade(&self.state), id, component: component.to_owned(), kind, active }
    }

    /// Every round that puts an update off, from now on (what an operator's view shows while
    /// a deployment waits).
    pub fn watch_deferrals(&self) -> broadcast::Receiver<UpdateDeferred> {
        self.deferred.subscribe()
    }

    /// SubscribeToComponentUpdates from `component`.
    pub fn subscribe_updates(&self, component: &str) -> GateSubscription<ComponentUpdatePolicyEvents> {
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.updates.insert(id, (component.to_owned(), tx));
        GateSubscription { events, guard: self.guard(id, component, Kind::Updates, true) }
    }

    /// SubscribeToValidateConfigurationUpdates from `component`.
    pub fn subscribe_validation(&self, component: &str) -> GateSubscription<ValidateConfigurationUpdateEvents> {
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        let live = s.validators.get(component).is_some_and(|(_, tx)| !tx.is_closed());
        if !live {
            s.validators.insert(component.to_owned(), (id, tx));
        }
        GateSubscription { events, guard: self.guard(id, component, Kind::Validation, !live) }
    }

    /// DeferComponentUpdate from `component`.
    pub fn defer(&self, component: &str, request: &DeferComponentUpdateRequest) -> Result<(), GateError> {
        let mut s = self.lock();
        if !s.subscribed_to_updates(component) {
            return Err(GateError::InvalidArguments("Component is not subscribed to component update events".into()));
        }
        let open = s.deferrals.as_mut().filter(|o| o.deployment_id == request.deployment_id);
        let Some(open) = open.filter(|o| o.components.contains(component)) else {
            return Err(GateError::Service("Time limit to respond to PreComponentUpdateEvent exceeded".into()));
        };
        open.components.remove(component);
        tracing::info!(component, deployment = %request.deployment_id, recheck_after_ms = ?request.recheck_after_ms,
            message = ?request.message, "component update answer");
        let _ = open.inputs.send(RoundInput::Answer {
            component: component.to_owned(),
            recheck_after_ms: request.recheck_after_ms,
            message: request.message.clone(),
        });
        Ok(())
    }

    /// SendConfigurationValidityReport from `component`.
    pub fn report(&self, component: &str, report: &ConfigurationValidityReport) -> Result<(), GateError> {
        let mut s = self.lock();
        let open = s.reports.as_mut().filter(|o| o.deployment_id == report.deployment_id);
        let Some(open) = open.filter(|o| o.components.contains(component)) else {
            return Err(GateError::InvalidArguments("Validation request either timed out or was never made".into()));
        };
        open.components.remove(component);
        let _ = open.inputs.send(ValidationInput::Report {
            component: component.to_owned(),
            status: report.status,
            message: report.message.clone(),
        });
        Ok(())
    }

    /// Sends a pre-update notice to every update subscriber; opens their answers. Returns
    /// who got it and where their answers arrive.
    fn notify(&self, event: &PreComponentUpdateEvent) -> (BTreeSet<String>, mpsc::UnboundedReceiver<RoundInput>) {
        let (inputs, rx) = mpsc::unbounded_channel();
        let mut s = self.lock();
        s.updates.retain(|_, (_, tx)| !tx.is_closed());
        let mut notified = BTreeSet::new();
        for (component, tx) in s.updates.values() {
            // A notice that cannot be queued is not waited for (the nucleus drops the future
            // when sending fails).
            if tx.try_send(ComponentUpdatePolicyEvents::PreUpdate(event.clone())).is_ok() {
                notified.insert(component.clone());
            }
        }
        s.deferrals = Some(Open { deployment_id: event.deployment_id.clone(), components: notified.clone(), inputs });
        (notified, rx)
    }

    async fn run_pre_update(&self, deployment_id: String, is_ggc_restarting: bool, timeout: Duration) -> Vec<Deferral> {
        let _close = CloseOnDrop(self, Kind::Updates);
        let event = PreComponentUpdateEvent { deployment_id: deployment_id.clone(), is_ggc_restarting };
        let mut totals = BTreeMap::new();
        loop {
            let (notified, mut inputs) = self.notify(&event);
            tracing::info!(deployment = %deployment_id, components = ?notified, "preUpdateEvent sent");
            let mut round = Round::new(notified, Instant::now(), timeout);
            let recheck = loop {
                match round.state(Instant::now()) {
                    RoundState::Waiting { until } => tokio::select! {
                        Some(input) = inputs.recv() => round.on(input, Instant::now()),
                        () = tokio::time::sleep_until(until) => {}
                    },
                    RoundState::Go => break None,
                    RoundState::Defer { recheck } => break Some(recheck),
                }
            };
            add_deferrals(&mut totals, &round);
            let Some(recheck) = recheck else { break };
            let deferrals = round
                .deferrals()
                .map(|(component, (asked, message))| Deferral {
                    component: component.clone(),
                    message: message.clone(),
                    deferred_for: *asked,
                })
                .collect();
            let _ = self.deferred.send(UpdateDeferred { deployment_id: deployment_id.clone(), deferrals, recheck });
            tracing::info!(deployment = %deployment_id, recheck_ms = recheck.as_millis() as u64, "update deferred");
            tokio::time::sleep(recheck).await;
        }
        totals.into_values().collect()
    }

    async fn run_validate(
        &self,
        deployment_id: String,
        configurations: BTreeMap<String, Value>,
        timeout: Duration,
    ) -> Result<(), ValidationRejected> {
        let _close = CloseOnDrop(self, Kind::Validation);
        let (inputs, mut rx) = mpsc::unbounded_channel();
        let asked = {
            let mut s = self.lock();
            let mut asked = BTreeSet::new();
            for (component, configuration) in configurations {
                let Some((_, tx)) = s.validators.get(&component) else { continue };
                let event = ValidateConfigurationUpdateEvents {
                    validate_configuration_update_event: ValidateConfigurationUpdateEvent {
                        configuration,
                        deployment_id: deployment_id.clone(),
                    },
                };
                if tx.try_send(event).is_err() {
                    // The nucleus fails the deployment when it cannot send the event.
                    return Err(ValidationRejected {
                        component,
                        message: "the validation event could not be sent".into(),
                        kind: RejectionKind::NoReport,
                    });
                }
                asked.insert(component);
            }
            s.reports = Some(Open { deployment_id: deployment_id.clone(), components: asked.clone(), inputs });
            asked
        };
        tracing::info!(deployment = %deployment_id, components = ?asked, "configuration validation requested");
        let mut validation = Validation::new(asked, Instant::now(), timeout);
        loop {
            match validation.state(Instant::now()) {
                ValidationState::Waiting { until } => tokio::select! {
                    Some(input) = rx.recv() => validation.on(input, Instant::now()),
                    () = tokio::time::sleep_until(until) => {}
                },
                ValidationState::Accepted => return Ok(()),
                ValidationState::Rejected(r) => return Err(r),
            }
        }
    }
}

impl ComponentUpdateGate for UpdateGate {
    fn pre_update(
        &self,
        deployment_id: &str,
        is_ggc_restarting: bool,
        timeout: Duration,
    ) -> BoxFuture<'_, Vec<Deferral>> {
        Box::pin(self.run_pre_update(deployment_id.to_owned(), is_ggc_restarting, timeout))
    }

    fn post_update(&self, deployment_id: &str) {
        let mut s = self.lock();
        s.updates.retain(|_, (_, tx)| !tx.is_closed());
        let event = PostComponentUpdateEvent { deployment_id: deployment_id.to_owned() };
        for (_, tx) in s.updates.values() {
            let _ = tx.try_send(ComponentUpdatePolicyEvents::PostUpdate(event.clone()));
        }
    }

    fn validate(
        &self,
        deployment_id: &str,
        configurations: BTreeMap<String, Value>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(), ValidationRejected>> {
        Box::pin(self.run_validate(deployment_id.to_owned(), configurations, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: Duration = Duration::from_secs(1);

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn answer(component: &str, ms: Option<u64>) -> RoundInput {
        RoundInput::Answer { component: component.into(), recheck_after_ms: ms, message: Some("busy".into()) }
    }

    #[test]
    fn a_round_waits_for_every_answer_then_defers_by_the_longest_recheck() {
        let t0 = Instant::now();
        let mut round = Round::new(set(&["a", "b", "c"]), t0, 60 * S);
        assert_eq!(round.state(t0), RoundState::Waiting { until: t0 + 60 * S });
        round.on(answer("a", Some(5_000)), t0 + S);
        round.on(answer("b", Some(0)), t0 + S);
        assert_eq!(round.state(t0 + S), RoundState::Waiting { until: t0 + 60 * S }, "c has not answered");
        round.on(answer("c", Some(2_000)), t0 + 2 * S);
        assert_eq!(round.state(t0 + 2 * S), RoundState::Defer { recheck: 5 * S });
    }

    #[test]
    fn zero_absent_or_late_answers_let_the_update_go() {
        let t0 = Instant::now();
        let mut round = Round::new(set(&["a", "b"]), t0, 10 * S);
        round.on(answer("a", Some(0)), t0);
        round.on(answer("b", None), t0);
        assert_eq!(round.state(t0), RoundState::Go);

        let mut silent = Round::new(set(&["a"]), t0, 10 * S);
        assert_eq!(silent.state(t0 + 9 * S), RoundState::Waiting { until: t0 + 10 * S });
        assert_eq!(silent.state(t0 + 10 * S), RoundState::Go, "no answer in time is a go");
        silent.on(answer("a", Some(9_000)), t0 + 11 * S);
        assert_eq!(silent.state(t0 + 11 * S), RoundState::Go, "a late answer changes nothing");
    }

    #[test]
    fn a_subscriber_that_leaves_is_not_waited_for_and_strangers_are_ignored() {
        let t0 = Instant::now();
        let mut round = Round::new(set(&["a", "b"]), t0, 60 * S);
        round.on(answer("a", Some(1_000)), t0);
        round.on(answer("stranger", Some(99_000)), t0);
        round.on(answer("a", Some(99_000)), t0);
        round.on(RoundInput::Gone("b".into()), t0);
        assert_eq!(round.state(t0), RoundState::Defer { recheck: S }, "one answer per component, b gone");
    }

    #[test]
    fn deferrals_add_up_over_rounds() {
        let t0 = Instant::now();
        let mut totals = BTreeMap::new();
        for ms in [5_000, 3_000] {
            let mut round = Round::new(set(&["a"]), t0, 60 * S);
            round.on(answer("a", Some(ms)), t0);
            add_deferrals(&mut totals, &round);
        }
        assert_eq!(totals["a"].deferred_for, 8 * S);
        assert_eq!(totals["a"].message.as_deref(), Some("busy"));
    }

    #[test]
    fn validation_accepts_when_all_accept_and_fails_on_a_rejection_silence_or_departure() {
        let t0 = Instant::now();
        let report = |c: &str, status| ValidationInput::Report {
            component: c.into(),
            status,
            message: Some(format!("{c} says so")),
        };
        let mut v = Validation::new(set(&["a", "b"]), t0, 20 * S);
        v.on(report("a", ConfigurationValidityStatus::Accepted), t0);
        assert_eq!(v.state(t0), ValidationState::Waiting { until: t0 + 20 * S });
        v.on(report("b", ConfigurationValidityStatus::Accepted), t0);
        assert_eq!(v.state(t0), ValidationState::Accepted);

        let mut v = Validation::new(set(&["a", "b"]), t0, 20 * S);
        v.on(report("b", ConfigurationValidityStatus::Rejected), t0);
        let ValidationState::Rejected(r) = v.state(t0) else { panic!("rejected expected") };
        assert_eq!((r.component.as_str(), r.message.as_str(), r.kind), ("b", "b says so", RejectionKind::Rejected));
        assert!(r.to_string().contains("name = b, message = b says so"), "{r}");

        let v = Validation::new(set(&["a"]), t0, 20 * S);
        let ValidationState::Rejected(r) = v.state(t0 + 20 * S) else { panic!("no report is a failure") };
        assert_eq!((r.component.as_str(), r.kind), ("a", RejectionKind::NoReport));

        let mut v = Validation::new(set(&["a"]), t0, 20 * S);
        v.on(ValidationInput::Gone("a".into()), t0);
        assert!(matches!(
            v.state(t0),
            ValidationState::Rejected(ValidationRejected { kind: RejectionKind::NoReport, .. })
        ));

        assert_eq!(Validation::new(set(&[]), t0, 20 * S).state(t0), ValidationState::Accepted, "nobody asked");
    }

    async fn next_pre(sub: &mut GateSubscription<ComponentUpdatePolicyEvents>) -> PreComponentUpdateEvent {
        match sub.events.recv().await {
            Some(ComponentUpdatePolicyEvents::PreUpdate(e)) => e,
            other => panic!("preUpdateEvent expected, got {other:?}"),
        }
    }

    fn defer_req(ms: Option<u64>) -> DeferComponentUpdateRequest {
        DeferComponentUpdateRequest {
            deployment_id: "d1".into(),
            message: Some("ramping".into()),
            recheck_after_ms: ms,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pre_update_is_held_while_a_component_defers_and_sent_again_after_the_recheck() {
        let gate = UpdateGate::new();
        let mut a = gate.subscribe_updates("a");
        let mut watch = gate.watch_deferrals();
        let t0 = Instant::now();
        let task = tokio::spawn({
            let gate = gate.clone();
            async move { gate.pre_update("d1", true, 60 * S).await }
        });
        let e = next_pre(&mut a).await;
        assert_eq!((e.deployment_id.as_str(), e.is_ggc_restarting), ("d1", true));
        gate.defer("a", &defer_req(Some(5_000))).unwrap();
        assert_eq!(
            gate.defer("a", &defer_req(Some(5_000))),
            Err(GateError::Service("Time limit to respond to PreComponentUpdateEvent exceeded".into())),
            "one answer per round"
        );
        let deferred = watch.recv().await.unwrap();
        assert_eq!(Instant::now(), t0, "a deferral is seen as the round ends, before the recheck");
        let asked = Deferral { component: "a".into(), message: Some("ramping".into()), deferred_for: 5 * S };
        assert_eq!(deferred, UpdateDeferred { deployment_id: "d1".into(), deferrals: vec![asked], recheck: 5 * S });
        next_pre(&mut a).await;
        assert_eq!(Instant::now() - t0, 5 * S, "the notice comes again after the recheck");
        gate.defer("a", &defer_req(Some(0))).unwrap();
        let deferrals = task.await.unwrap();
        assert_eq!(
            deferrals,
            [Deferral { component: "a".into(), message: Some("ramping".into()), deferred_for: 5 * S }]
        );
        assert!(gate.defer("a", &defer_req(Some(0))).is_err(), "nothing is waiting any more");
        assert!(watch.try_recv().is_err(), "the round that let the update go is no deferral");
        gate.post_update("d1");
        assert_eq!(
            a.events.recv().await,
            Some(ComponentUpdatePolicyEvents::PostUpdate(PostComponentUpdateEvent { deployment_id: "d1".into() }))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_component_holds_a_round_only_until_the_timeout() {
        let gate = UpdateGate::new();
        let mut a = gate.subscribe_updates("a");
        let t0 = Instant::now();
        let deferrals = tokio::join!(gate.pre_update("d1", false, 60 * S), next_pre(&mut a)).0;
        assert!(deferrals.is_empty());
        assert_eq!(Instant::now() - t0, 60 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn a_component_that_unsubscribes_mid_round_is_not_waited_for() {
        let gate = UpdateGate::new();
        let mut a = gate.subscribe_updates("a");
        let t0 = Instant::now();
        let (deferrals, ()) = tokio::join!(gate.pre_update("d1", false, 60 * S), async {
            next_pre(&mut a).await;
            drop(a);
        });
        assert!(deferrals.is_empty());
        assert_eq!(Instant::now(), t0, "no wait for a component that left");
    }

    #[tokio::test(start_paused = true)]
    async fn defer_answers_the_nucleus_errors() {
        let gate = UpdateGate::new();
        assert!(matches!(gate.defer("a", &defer_req(Some(1))), Err(GateError::InvalidArguments(_))));
        let _a = gate.subscribe_updates("a");
        let other = DeferComponentUpdateRequest { deployment_id: "unknown".into(), ..defer_req(Some(1)) };
        assert!(matches!(gate.defer("a", &other), Err(GateError::Service(_))));
        assert!(gate.pre_update("d1", false, S).await.is_empty(), "nobody answered: go after the timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn validation_asks_only_subscribers_and_fails_on_rejection() {
        let gate = UpdateGate::new();
        let mut a = gate.subscribe_validation("a");
        let second = gate.subscribe_validation("a");
        assert!(a.is_active() && !second.is_active(), "the first stream keeps the subscription");
        drop(second);
        let configs = BTreeMap::from([("a".to_owned(), json!({"t": -1})), ("b".to_owned(), json!({"t": 1}))]);
        let (result, ()) = tokio::join!(gate.validate("d1", configs, 20 * S), async {
            let e = a.events.recv().await.unwrap().validate_configuration_update_event;
            assert_eq!((e.configuration, e.deployment_id.as_str()), (json!({"t": -1}), "d1"));
            let wrong = ConfigurationValidityReport {
                status: ConfigurationValidityStatus::Accepted,
                deployment_id: "d0".into(),
                message: None,
            };
            assert!(matches!(gate.report("a", &wrong), Err(GateError::InvalidArguments(_))));
            let report = ConfigurationValidityReport {
                status: ConfigurationValidityStatus::Rejected,
                deployment_id: "d1".into(),
                message: Some("t must not be negative".into()),
            };
            gate.report("a", &report).unwrap();
        });
        let r = result.unwrap_err();
        assert_eq!((r.component.as_str(), r.message.as_str()), ("a", "t must not be negative"));
        let t0 = Instant::now();
        let silent = gate.validate("d2", BTreeMap::from([("a".to_owned(), json!({}))]), 20 * S).await;
        assert_eq!(silent.unwrap_err().kind, RejectionKind::NoReport);
        assert_eq!(Instant::now() - t0, 20 * S);
        let nobody = gate.validate("d3", BTreeMap::from([("b".to_owned(), json!({}))]), 20 * S).await;
        assert_eq!(nobody, Ok(()), "b did not subscribe: not asked");
    }
}
