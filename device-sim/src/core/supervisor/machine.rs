//! One component's lifecycle as a pure state machine: events in, a transition and actions out.
//! No processes, no clocks of its own (the time of an event is passed in).
//!
//! Follows the nucleus' `Lifecycle` and `GenericExternalService` (aws-greengrass-nucleus,
//! `lifecyclemanager/Lifecycle.java`, `GenericExternalService.java`):
//! - NEW → (Install) → INSTALLED → (HARD dependencies ready) → STARTING → (Run started, or
//!   Startup exited 0, or the component reported RUNNING) → RUNNING;
//! - `Run` exiting 0 stops the component (RUNNING → STOPPING → FINISHED); non-zero → ERRORED;
//!   a lifecycle with neither Startup nor Run (or a skipped one) → FINISHED;
//! - Startup exiting non-zero, or still STARTING after its timeout (default 120 s) → ERRORED;
//! - Install failing or timing out → ERRORED, and Install runs again (NEW);
//! - ERRORED runs Recover, then: from STARTING/RUNNING → STOPPING → INSTALLED → STARTING again;
//!   from NEW → NEW (install again); from STOPPING → the desired end state;
//! - the nucleus counts ERRORED transitions per state left (NEW, STARTING, RUNNING); a
//!   successful transition out of that state resets its count, and so does a gap of
//!   `errorResetTime` (default one hour) since the previous error. The third counted error
//!   makes the component BROKEN instead (`MAXIMUM_CONTINUAL_ERROR = 3`); a BROKEN component
//!   is shut down and stays BROKEN until redeployed;
//! - stop: STARTING/RUNNING → STOPPING (Shutdown, 15 s) → FINISHED; NEW/INSTALLED → FINISHED;
//!   a Shutdown past its timeout is killed and makes an ERRORED that is not counted
//!   (`SHUTDOWN_TIMEOUT`), after which the component goes where it is wanted;
//! - IPC UpdateState: RUNNING is accepted from STARTING, ERRORED from STARTING or RUNNING
//!   (nucleus `ALLOWED_STATE_TRANSITION_FOR_REPORTING`); anything else is ignored.
//!
//! Every launched step carries an `attempt` number; events from an older attempt (a process
//! that outlived its phase) are ignored, as the nucleus ignores them by `stateGeneration`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::core::{ComponentState, ReportedState};

/// How many ERRORED transitions from one state make a component BROKEN (nucleus
/// `MAXIMUM_CONTINUAL_ERROR`).
pub const MAX_CONTINUAL_ERRORS: usize = 3;

/// Errors further apart than this do not add up (nucleus `errorResetTime` default, 1 hour).
pub const ERROR_RESET_TIME: Duration = Duration::from_secs(3600);

/// Which process-running step the shell launched when asked to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launched {
    /// A `Run` process is running.
    Run,
    /// A `Startup` process is running.
    Startup,
    /// Neither step exists, or it was skipped (`Skipif`).
    Nothing,
}

/// Which process exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    /// The `Run` process.
    Run,
    /// The `Startup` process.
    Startup,
}

/// Something that happened to a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The deployment wants it running.
    Start,
    /// Stop it (StopComponent, or the core shutting down).
    Stop,
    /// Restart it (RestartComponent, or a HARD dependency left a ready state).
    Restart,
    /// Install finished (or was skipped); `ok` false on failure or timeout.
    InstallDone {
        /// The attempt it belongs to.
        attempt: u64,
        /// Whether it succeeded.
        ok: bool,
    },
    /// Its HARD dependencies are ready (RUNNING, FINISHED, or STOPPING without a startup error).
    DependenciesReady,
    /// The shell launched Startup or Run (or had nothing to launch).
    Launched {
        /// The attempt.
        attempt: u64,
        /// What was launched.
        what: Launched,
    },
    /// The shell could not launch the step (spawn failure, bad script).
    LaunchFailed {
        /// The attempt.
        attempt: u64,
    },
    /// A Startup or Run process exited.
    Exited {
        /// The attempt.
        attempt: u64,
        /// Which process.
        proc: Proc,
        /// Exit code (`None`: killed by a signal).
        code: Option<i32>,
    },
    /// The Startup timeout passed.
    StartupTimedOut {
        /// The attempt.
        attempt: u64,
    },
    /// The component reported its state over IPC (UpdateState).
    Reported(ReportedState),
    /// Shutdown finished and the component's processes are gone.
    ShutdownDone {
        /// The attempt.
        attempt: u64,
    },
    /// Shutdown ran past its timeout and was killed, and so were the component's processes
    /// (nucleus: ERRORED with `SHUTDOWN_TIMEOUT`, not counted towards BROKEN).
    ShutdownTimedOut {
        /// The attempt.
        attempt: u64,
    },
    /// Recover finished (or there was none).
    RecoverDone {
        /// The attempt.
        attempt: u64,
    },
}

/// What the shell must do for the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run Install (re-run on every install), then send [`Event::InstallDone`].
    Install {
        /// The attempt to tag events with.
        attempt: u64,
    },
    /// Launch Startup or Run, send [`Event::Launched`], later [`Event::Exited`]; for Startup
    /// arm its timeout ([`Event::StartupTimedOut`]).
    Launch {
        /// The attempt.
        attempt: u64,
    },
    /// Run Shutdown (with its timeout), kill the component's process groups, send
    /// [`Event::ShutdownDone`] (or [`Event::ShutdownTimedOut`]).
    Shutdown {
        /// The attempt.
        attempt: u64,
    },
    /// Run Recover (with its timeout), send [`Event::RecoverDone`].
    Recover {
        /// The attempt.
        attempt: u64,
    },
    /// Check whether the HARD dependencies are ready; send [`Event::DependenciesReady`] when they are.
    AwaitDependencies,
}

/// Where the component should end up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    /// Running.
    Running,
    /// Stopped (FINISHED).
    Stopped,
}

/// What handling an event produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// State changes, in order (`(old, new)`).
    pub transitions: Vec<(ComponentState, ComponentState)>,
    /// Work for the shell.
    pub actions: Vec<Action>,
    /// Why the event was ignored, if it was.
    pub ignored: Option<&'static str>,
}

/// One component's lifecycle.
#[derive(Debug, Clone)]
pub struct Machine {
    state: ComponentState,
    desired: Desired,
    attempt: u64,
    /// The state an ERRORED came from (decides what follows Recover).
    errored_from: Option<ComponentState>,
    errors: HashMap<ComponentState, Vec<Instant>>,
    startup_errored: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    /// A NEW component that nobody asked to start yet.
    pub fn new() -> Self {
        Self {
            state: ComponentState::New,
            desired: Desired::Stopped,
            attempt: 0,
            errored_from: None,
            errors: HashMap::new(),
            startup_errored: false,
        }
    }

    /// The current state.
    pub fn state(&self) -> ComponentState {
        self.state
    }

    /// Where it should end up.
    pub fn desired(&self) -> Desired {
        self.desired
    }

    /// True when a dependent with a HARD dependency on this component may start
    /// (nucleus `dependencyFinishedStarting`).
    pub fn ready_for_dependents(&self) -> bool {
        match self.state {
            ComponentState::Running | ComponentState::Finished => true,
            ComponentState::Stopping => !self.startup_errored,
            _ => false,
        }
    }

    /// What the state of its HARD dependencies means for this component: go ahead from
    /// INSTALLED when they are all ready; restart from STARTING or RUNNING when one is not
    /// (nucleus `createDependencyListener`: "dependency was in a bad state").
    pub fn dependency_event(&self, hard_dependencies_ready: bool) -> Option<Event> {
        match self.state {
            ComponentState::Installed if self.desired == Desired::Running && hard_dependencies_ready => {
                Some(Event::DependenciesReady)
            }
            ComponentState::Starting | ComponentState::Running if !hard_dependencies_ready => Some(Event::Restart),
            _ => None,
        }
    }

    /// Handles one event at time `now`.
    pub fn handle(&mut self, event: Event, now: Instant) -> Outcome {
        use ComponentState as S;
        let mut out = Outcome::default();
        let current = |a: u64, me: &Self| a == me.attempt;
        match (self.state, event) {
            (S::Broken, Event::Start | Event::Restart) => {
                out.ignored = Some("component is BROKEN; a new deployment is needed");
            }
            (_, Event::Start) => {
                self.desired = Desired::Running;
                match self.state {
                    S::New => self.begin_install(&mut out),
                    S::Installed => out.actions.push(Action::AwaitDependencies),
                    S::Finished => self.installed(&mut out, now),
                    _ => out.ignored = Some("already starting or running"),
                }
            }
            (_, Event::Stop) => {
                self.desired = Desired::Stopped;
                match self.state {
                    S::Starting | S::Running => self.begin_stopping(&mut out, now),
                    S::New | S::Installed => {
                        // A running Install is stopped by the shell's kill of the component's processes.
                        self.attempt += 1;
                        out.actions.push(Action::Shutdown { attempt: self.attempt });
                        self.go(S::Finished, &mut out, now);
                    }
                    _ => out.ignored = Some("not running"),
                }
            }
            (_, Event::Restart) => {
                self.desired = Desired::Running;
                match self.state {
                    S::Starting | S::Running => self.begin_stopping(&mut out, now),
                    S::Finished => self.installed(&mut out, now),
                    S::New => self.begin_install(&mut out),
                    S::Installed => out.actions.push(Action::AwaitDependencies),
                    _ => out.ignored = Some("already on its way back"),
                }
            }
            (S::New, Event::InstallDone { attempt, ok }) if current(attempt, self) => {
                if ok {
                    self.installed(&mut out, now);
                } else {
                    self.error(&mut out, now);
                }
            }
            (S::Installed, Event::DependenciesReady) if self.desired == Desired::Running => {
                self.attempt += 1;
                self.go(S::Starting, &mut out, now);
                out.actions.push(Action::Launch { attempt: self.attempt });
            }
            (S::Starting, Event::Launched { attempt, what }) if current(attempt, self) => match what {
                Launched::Run => self.go(S::Running, &mut out, now),
                Launched::Startup => {}
                Launched::Nothing => {
                    self.desired = Desired::Stopped;
                    self.go(S::Finished, &mut out, now);
                }
            },
            (S::Starting, Event::LaunchFailed { attempt }) if current(attempt, self) => self.error(&mut out, now),
            (S::Starting, Event::Exited { attempt, proc: Proc::Startup, code }) if current(attempt, self) => {
                if code == Some(0) {
                    self.go(S::Running, &mut out, now);
                } else {
                    self.error(&mut out, now);
                }
            }
            (S::Running, Event::Exited { attempt, proc: Proc::Startup, code }) if current(attempt, self) => {
                if code != Some(0) {
                    self.error(&mut out, now);
                }
            }
            (S::Running, Event::Exited { attempt, proc: Proc::Run, code }) if current(attempt, self) => {
                if code == Some(0) {
                    self.desired = Desired::Stopped;
                    self.begin_stopping(&mut out, now);
                } else {
                    self.error(&mut out, now);
                }
            }
            (S::Starting, Event::StartupTimedOut { attempt }) if current(attempt, self) => self.error(&mut out, now),
            (S::Starting, Event::Reported(ReportedState::Running)) => self.go(S::Running, &mut out, now),
            (S::Starting | S::Running, Event::Reported(ReportedState::Errored)) => self.error(&mut out, now),
            (S::Stopping, Event::ShutdownDone { attempt }) if current(attempt, self) => {
                self.after_termination(&mut out, now);
            }
            (S::Stopping, Event::ShutdownTimedOut { attempt }) if current(attempt, self) => self.error(&mut out, now),
            (S::Errored, Event::RecoverDone { attempt }) if current(attempt, self) => {
                match self.errored_from.take() {
                    Some(S::Starting | S::Running) => {
                        // Recovery retries unless someone asked it to stop.
                        self.begin_stopping(&mut out, now);
                    }
                    Some(S::New) if self.desired == Desired::Running => {
                        self.go(S::New, &mut out, now);
                        self.begin_install(&mut out);
                    }
                    _ => self.after_termination(&mut out, now),
                }
            }
            _ => out.ignored = Some("event does not apply in this state"),
        }
        out
    }

    fn begin_install(&mut self, out: &mut Outcome) {
        self.attempt += 1;
        out.actions.push(Action::Install { attempt: self.attempt });
    }

    fn begin_stopping(&mut self, out: &mut Outcome, now: Instant) {
        self.attempt += 1;
        self.go(ComponentState::Stopping, out, now);
        out.actions.push(Action::Shutdown { attempt: self.attempt });
    }

    /// The component's processes are gone: go where it is wanted.
    fn after_termination(&mut self, out: &mut Outcome, now: Instant) {
        match self.desired {
            Desired::Running => self.installed(out, now),
            Desired::Stopped => self.go(ComponentState::Finished, out, now),
        }
    }

    fn error(&mut self, out: &mut Outcome, now: Instant) {
        use ComponentState as S;
        let from = self.state;
        if from == S::Starting {
            self.startup_errored = true;
        }
        let counted = matches!(from, S::New | S::Starting | S::Running);
        if counted {
            let times = self.errors.entry(from).or_default();
            if times.last().is_some_and(|last| now.saturating_duration_since(*last) >= ERROR_RESET_TIME) {
                times.clear();
            }
            times.push(now);
            if times.len() >= MAX_CONTINUAL_ERRORS {
                self.attempt += 1;
                self.push(S::Broken, out);
                // The nucleus shuts a BROKEN component down (Shutdown, then kill).
                out.actions.push(Action::Shutdown { attempt: self.attempt });
                return;
            }
        }
        self.attempt += 1;
        self.errored_from = Some(from);
        self.push(S::Errored, out);
        out.actions.push(Action::Recover { attempt: self.attempt });
    }

    /// A non-error transition: resets the error count of the state left.
    fn go(&mut self, to: ComponentState, out: &mut Outcome, _now: Instant) {
        self.errors.remove(&self.state);
        if to == ComponentState::Starting {
            self.startup_errored = false;
        }
        self.push(to, out);
    }

    /// INSTALLED, and on to STARTING once dependencies are ready if it is wanted running.
    fn installed(&mut self, out: &mut Outcome, now: Instant) {
        self.go(ComponentState::Installed, out, now);
        if self.desired == Desired::Running {
            out.actions.push(Action::AwaitDependencies);
        }
    }

    fn push(&mut self, to: ComponentState, out: &mut Outcome) {
        out.transitions.push((self.state, to));
        self.state = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ComponentState as S;

    fn at(secs: u64, base: Instant) -> Instant {
        base + Duration::from_secs(secs)
    }

    /// Drives a machine to RUNNING with a Run step; returns the attempt of the launch.
    fn running(m: &mut Machine, now: Instant) -> u64 {
        let out = m.handle(Event::Start, now);
        let Action::Install { attempt } = out.actions[0] else { panic!("{out:?}") };
        let out = m.handle(Event::InstallDone { attempt, ok: true }, now);
        assert_eq!(out.transitions, [(S::New, S::Installed)]);
        assert_eq!(out.actions, [Action::AwaitDependencies]);
        let out = m.handle(Event::DependenciesReady, now);
        let Action::Launch { attempt } = out.actions[0] else { panic!("{out:?}") };
        m.handle(Event::Launched { attempt, what: Launched::Run }, now);
        assert_eq!(m.state(), S::Running);
        attempt
    }

    fn recover_and_restart(m: &mut Machine, out: &Outcome, now: Instant) -> u64 {
        let Action::Recover { attempt } = out.actions[0] else { panic!("{out:?}") };
        let out = m.handle(Event::RecoverDone { attempt }, now);
        assert_eq!(out.transitions, [(S::Errored, S::Stopping)]);
        let Action::Shutdown { attempt } = out.actions[0] else { panic!("{out:?}") };
        let out = m.handle(Event::ShutdownDone { attempt }, now);
        assert_eq!(out.transitions, [(S::Stopping, S::Installed)]);
        let out = m.handle(Event::DependenciesReady, now);
        let Action::Launch { attempt } = out.actions[0] else { panic!("{out:?}") };
        m.handle(Event::Launched { attempt, what: Launched::Run }, now);
        attempt
    }

    #[test]
    fn run_goes_new_installed_starting_running() {
        let now = Instant::now();
        let mut m = Machine::new();
        let out = m.handle(Event::Start, now);
        assert_eq!(out.actions, [Action::Install { attempt: 1 }]);
        assert!(out.transitions.is_empty());
        m.handle(Event::InstallDone { attempt: 1, ok: true }, now);
        let out = m.handle(Event::DependenciesReady, now);
        assert_eq!(out.transitions, [(S::Installed, S::Starting)]);
        assert_eq!(out.actions, [Action::Launch { attempt: 2 }]);
        let out = m.handle(Event::Launched { attempt: 2, what: Launched::Run }, now);
        assert_eq!(out.transitions, [(S::Starting, S::Running)]);
    }

    #[test]
    fn run_exiting_zero_stops_and_finishes() {
        let now = Instant::now();
        let mut m = Machine::new();
        let attempt = running(&mut m, now);
        let out = m.handle(Event::Exited { attempt, proc: Proc::Run, code: Some(0) }, now);
        assert_eq!(out.transitions, [(S::Running, S::Stopping)]);
        let Action::Shutdown { attempt } = out.actions[0] else { panic!() };
        let out = m.handle(Event::ShutdownDone { attempt }, now);
        assert_eq!(out.transitions, [(S::Stopping, S::Finished)]);
    }

    #[test]
    fn run_exiting_non_zero_errors_recovers_and_restarts() {
        let now = Instant::now();
        let mut m = Machine::new();
        let attempt = running(&mut m, now);
        let out = m.handle(Event::Exited { attempt, proc: Proc::Run, code: Some(3) }, now);
        assert_eq!(out.transitions, [(S::Running, S::Errored)]);
        recover_and_restart(&mut m, &out, now);
        assert_eq!(m.state(), S::Running);
    }

    #[test]
    fn third_error_from_running_within_the_window_is_broken() {
        let base = Instant::now();
        let mut m = Machine::new();
        let mut attempt = running(&mut m, base);
        for i in 0..2 {
            let out = m.handle(Event::Exited { attempt, proc: Proc::Run, code: Some(1) }, at(i, base));
            assert_eq!(out.transitions, [(S::Running, S::Errored)]);
            attempt = recover_and_restart(&mut m, &out, at(i, base));
        }
        let out = m.handle(Event::Exited { attempt, proc: Proc::Run, code: Some(1) }, at(5, base));
        assert_eq!(out.transitions, [(S::Running, S::Broken)]);
        assert!(matches!(out.actions[..], [Action::Shutdown { .. }]));
        assert!(m.handle(Event::Restart, at(6, base)).ignored.is_some());
        assert_eq!(m.state(), S::Broken);
    }

    #[test]
    fn errors_an_hour_apart_do_not_add_up() {
        let base = Instant::now();
        let mut m = Machine::new();
        let mut attempt = running(&mut m, base);
        for i in 0..5 {
            let now = at(i * 3600, base);
            let out = m.handle(Event::Exited { attempt, proc: Proc::Run, code: Some(1) }, now);
            assert_eq!(out.transitions, [(S::Running, S::Errored)], "error {i}");
            attempt = recover_and_restart(&mut m, &out, now);
        }
    }

    #[test]
    fn install_failure_reinstalls_and_three_make_broken() {
        let now = Instant::now();
        let mut m = Machine::new();
        let out = m.handle(Event::Start, now);
        let Action::Install { mut attempt } = out.actions[0] else { panic!() };
        for _ in 0..2 {
            let out = m.handle(Event::InstallDone { attempt, ok: false }, now);
            assert_eq!(out.transitions, [(S::New, S::Errored)]);
            let Action::Recover { attempt: r } = out.actions[0] else { panic!() };
            let out = m.handle(Event::RecoverDone { attempt: r }, now);
            assert_eq!(out.transitions, [(S::Errored, S::New)]);
            let Action::Install { attempt: a } = out.actions[0] else { panic!("{out:?}") };
            attempt = a;
        }
        let out = m.handle(Event::InstallDone { attempt, ok: false }, now);
        assert_eq!(out.transitions, [(S::New, S::Broken)]);
    }

    #[test]
    fn stop_during_a_failed_install_finishes_after_recover() {
        let now = Instant::now();
        let mut m = Machine::new();
        m.handle(Event::Start, now);
        let out = m.handle(Event::InstallDone { attempt: 1, ok: false }, now);
        let Action::Recover { attempt } = out.actions[0] else { panic!() };
        assert!(m.handle(Event::Stop, now).ignored.is_some());
        let out = m.handle(Event::RecoverDone { attempt }, now);
        assert_eq!(out.transitions, [(S::Errored, S::Finished)]);
        assert!(out.actions.is_empty());
    }

    #[test]
    fn startup_exit_zero_is_running_and_non_zero_is_errored() {
        let now = Instant::now();
        for (code, to) in [(Some(0), S::Running), (Some(2), S::Errored), (None, S::Errored)] {
            let mut m = Machine::new();
            m.handle(Event::Start, now);
            m.handle(Event::InstallDone { attempt: 1, ok: true }, now);
            m.handle(Event::DependenciesReady, now);
            let out = m.handle(Event::Launched { attempt: 2, what: Launched::Startup }, now);
            assert!(out.transitions.is_empty(), "Startup stays STARTING until it exits or reports");
            let out = m.handle(Event::Exited { attempt: 2, proc: Proc::Startup, code }, now);
            assert_eq!(out.transitions, [(S::Starting, to)], "{code:?}");
        }
    }

    #[test]
    fn startup_reporting_running_over_ipc_is_running_and_timeout_is_errored() {
        let now = Instant::now();
        let mut m = Machine::new();
        m.handle(Event::Start, now);
        m.handle(Event::InstallDone { attempt: 1, ok: true }, now);
        m.handle(Event::DependenciesReady, now);
        m.handle(Event::Launched { attempt: 2, what: Launched::Startup }, now);
        let out = m.handle(Event::Reported(ReportedState::Running), now);
        assert_eq!(out.transitions, [(S::Starting, S::Running)]);
        // A late timeout of the same attempt no longer applies.
        assert!(m.handle(Event::StartupTimedOut { attempt: 2 }, now).ignored.is_some());

        let mut m = Machine::new();
        m.handle(Event::Start, now);
        m.handle(Event::InstallDone { attempt: 1, ok: true }, now);
        m.handle(Event::DependenciesReady, now);
        m.handle(Event::Launched { attempt: 2, what: Launched::Startup }, now);
        let out = m.handle(Event::StartupTimedOut { attempt: 2 }, now);
        assert_eq!(out.transitions, [(S::Starting, S::Errored)]);
        assert!(!m.ready_for_dependents());
    }

    #[test]
    fn nothing_to_run_finishes() {
        let now = Instant::now();
        let mut m = Machine::new();
        m.handle(Event::Start, now);
        m.handle(Event::InstallDone { attempt: 1, ok: true }, now);
        m.handle(Event::DependenciesReady, now);
        let out = m.handle(Event::Launched { attempt: 2, what: Launched::Nothing }, now);
        assert_eq!(out.transitions, [(S::Starting, S::Finished)]);
        assert!(m.ready_for_dependents());
    }

    #[test]
    fn stop_runs_shutdown_then_finishes() {
        let now = Instant::now();
        let mut m = Machine::new();
        running(&mut m, now);
        let out = m.handle(Event::Stop, now);
        assert_eq!(out.transitions, [(S::Running, S::Stopping)]);
        let Action::Shutdown { attempt } = out.actions[0] else { panic!() };
        assert_eq!(m.handle(Event::ShutdownDone { attempt }, now).transitions, [(S::Stopping, S::Finished)]);
    }

    #[test]
    fn shutdown_timeout_is_an_uncounted_error_then_the_desired_state() {
        let now = Instant::now();
        let mut m = Machine::new();
        running(&mut m, now);
        let out = m.handle(Event::Stop, now);
        let Action::Shutdown { attempt } = out.actions[0] else { panic!() };
        let out = m.handle(Event::ShutdownTimedOut { attempt }, now);
        assert_eq!(out.transitions, [(S::Stopping, S::Errored)]);
        let Action::Recover { attempt } = out.actions[0] else { panic!() };
        let out = m.handle(Event::RecoverDone { attempt }, now);
        assert_eq!(out.transitions, [(S::Errored, S::Finished)]);
    }

    #[test]
    fn restart_goes_through_stopping_and_installed() {
        let now = Instant::now();
        let mut m = Machine::new();
        running(&mut m, now);
        let out = m.handle(Event::Restart, now);
        assert_eq!(out.transitions, [(S::Running, S::Stopping)]);
        let Action::Shutdown { attempt } = out.actions[0] else { panic!() };
        let out = m.handle(Event::ShutdownDone { attempt }, now);
        assert_eq!(out.transitions, [(S::Stopping, S::Installed)]);
        assert_eq!(out.actions, [Action::AwaitDependencies]);
    }

    #[test]
    fn hard_dependencies_gate_the_start_and_restart_a_running_dependent() {
        let now = Instant::now();
        let mut m = Machine::new();
        assert_eq!(m.dependency_event(true), None, "NEW waits for Install");
        m.handle(Event::Start, now);
        m.handle(Event::InstallDone { attempt: 1, ok: true }, now);
        assert_eq!(m.dependency_event(false), None);
        assert_eq!(m.dependency_event(true), Some(Event::DependenciesReady));
        m.handle(Event::DependenciesReady, now);
        assert_eq!(m.dependency_event(false), Some(Event::Restart), "STARTING");
        m.handle(Event::Launched { attempt: 2, what: Launched::Run }, now);
        assert_eq!(m.dependency_event(true), None);
        assert_eq!(m.dependency_event(false), Some(Event::Restart), "RUNNING");
        m.handle(Event::Stop, now);
        assert_eq!(m.dependency_event(false), None, "STOPPING");
    }

    #[test]
    fn readiness_for_dependents_excludes_a_stopping_component_whose_startup_failed() {
        let now = Instant::now();
        let mut m = Machine::new();
        m.handle(Event::Start, now);
        m.handle(Event::InstallDone { attempt: 1, ok: true }, now);
        m.handle(Event::DependenciesReady, now);
        assert!(!m.ready_for_dependents(), "STARTING");
        let out = m.handle(Event::Exited { attempt: 2, proc: Proc::Startup, code: Some(1) }, now);
        let Action::Recover { attempt } = out.actions[0] else { panic!() };
        m.handle(Event::RecoverDone { attempt }, now);
        assert_eq!(m.state(), S::Stopping);
        assert!(!m.ready_for_dependents());
    }

    #[test]
    fn stale_process_events_are_ignored() {
        let now = Instant::now();
        let mut m = Machine::new();
        let old = running(&mut m, now);
        let out = m.handle(Event::Restart, now);
        let Action::Shutdown { attempt } = out.actions[0] else { panic!() };
        m.handle(Event::ShutdownDone { attempt }, now);
        m.handle(Event::DependenciesReady, now);
        let out = m.handle(Event::Exited { attempt: old, proc: Proc::Run, code: Some(1) }, now);
        assert!(out.ignored.is_some());
        assert_eq!(m.state(), S::Starting);
    }

    #[test]
    fn a_success_resets_the_error_count_of_the_state_left() {
        let now = Instant::now();
        let mut m = Machine::new();
        m.handle(Event::Start, now);
        m.handle(Event::InstallDone { attempt: 1, ok: true }, now);
        // Two Startup errors, then a success: the count for STARTING starts over.
        for _ in 0..2 {
            let out = m.handle(Event::DependenciesReady, now);
            let Action::Launch { attempt } = out.actions[0] else { panic!("{out:?}") };
            let out = m.handle(Event::Exited { attempt, proc: Proc::Startup, code: Some(1) }, now);
            let Action::Recover { attempt } = out.actions[0] else { panic!() };
            let out = m.handle(Event::RecoverDone { attempt }, now);
            let Action::Shutdown { attempt } = out.actions[0] else { panic!() };
            m.handle(Event::ShutdownDone { attempt }, now);
        }
        let out = m.handle(Event::DependenciesReady, now);
        let Action::Launch { attempt } = out.actions[0] else { panic!() };
        m.handle(Event::Exited { attempt, proc: Proc::Startup, code: Some(0) }, now);
        assert_eq!(m.state(), S::Running);
        let out = m.handle(Event::Restart, now);
        let Action::Shutdown { attempt } = out.actions[0] else { panic!() };
        m.handle(Event::ShutdownDone { attempt }, now);
        let out = m.handle(Event::DependenciesReady, now);
        let Action::Launch { attempt } = out.actions[0] else { panic!() };
        let out = m.handle(Event::Exited { attempt, proc: Proc::Startup, code: Some(1) }, now);
        assert_eq!(out.transitions, [(S::Starting, S::Errored)]);
    }

    #[test]
    fn ipc_reports_follow_the_nucleus_allowed_transitions() {
        let now = Instant::now();
        let mut m = Machine::new();
        assert!(m.handle(Event::Reported(ReportedState::Running), now).ignored.is_some());
        running(&mut m, now);
        assert!(m.handle(Event::Reported(ReportedState::Running), now).ignored.is_some());
        let out = m.handle(Event::Reported(ReportedState::Errored), now);
        assert_eq!(out.transitions, [(S::Running, S::Errored)]);
    }
}
