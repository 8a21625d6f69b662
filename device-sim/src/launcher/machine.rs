//! What the launcher does about the core it runs: events in, actions out, no I/O (the shell,
//! [`super::run`], waits for the events and carries out the actions).
//!
//! Exit codes follow the nucleus (`KernelLifecycle`, the `loader` script): 100 asks for a
//! restart, 101 for a reboot (which a simulated core cannot do: a restart), 0 is a clean stop.
//! A core on probation (`old` set) that exits any other way, or has not removed `old` by its
//! deadline, is rolled back. Any other crash is retried up to [`Settings::max_crashes`] times in
//! a row, as the loader's three attempts, unless it is a configuration error (64, 78), which a
//! restart will not mend.

use std::time::{Duration, Instant};

/// The exit code with which a core asks to be restarted (the nucleus's `REQUEST_RESTART`).
pub const REQUEST_RESTART: i32 = 100;
/// The exit code with which a core asks for a reboot (the nucleus's `REQUEST_REBOOT`).
pub const REQUEST_REBOOT: i32 = 101;
/// `EX_USAGE`: the core's command line is wrong; restarting will not help.
const EX_USAGE: i32 = 64;
/// `EX_CONFIG`: the core's input is wrong; restarting will not help.
const EX_CONFIG: i32 = 78;

/// How the launcher judges its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long a new version has to prove itself (remove `old`).
    pub health_deadline: Duration,
    /// How many crashes in a row end the launcher (the loader tries three times).
    pub max_crashes: u32,
}

/// How a core process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    /// The exit code a shell would report for it (128 + the signal for a signal).
    pub fn code(self) -> u8 {
        let code = match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        };
        u8::try_from(code).unwrap_or(1)
    }
}

/// What the launcher learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The core process ended.
    CoreExited(Exit),
    /// `old` is gone: the core on probation proved itself.
    OldRemoved,
    /// The probation deadline ([`Launcher::deadline`]) passed.
    DeadlinePassed,
    /// The launcher got SIGTERM or SIGINT.
    StopSignal,
}

/// Why a version is rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackCause {
    /// The core on probation exited.
    Exited(Exit),
    /// The core on probation did not prove itself in time.
    Deadline,
}

/// What the shell does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing; wait for the next event.
    Wait,
    /// Pass the stop on to the core (SIGTERM) and wait for it to end.
    ForwardStop,
    /// Kill the core on probation; its exit then rolls it back.
    Kill,
    /// Roll the alts directory back ([`super::alts::rollback`]), then prepare and launch.
    RollBack(RollbackCause),
    /// Prepare the alts directory ([`super::alts::prepare`]) and launch.
    Launch,
    /// End the launcher with this exit code.
    End(u8),
}

/// Where the launcher is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No core runs: the shell prepares and launches.
    Idle,
    /// A core runs.
    Running {
        /// Its version.
        version: String,
    },
    /// A stop was passed on; waiting for the core to end.
    Stopping,
    /// The core on probation missed its deadline and is being killed.
    Abandoning,
}

/// A version on probation: it must remove `old` by the deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probation {
    version: String,
    previous: String,
    deadline: Instant,
}

/// The launcher's state machine.
#[derive(Debug, Clone)]
pub struct Launcher {
    settings: Settings,
    phase: Phase,
    probation: Option<Probation>,
    crashes: u32,
}

impl Launcher {
    /// A launcher with no core yet.
    pub fn new(settings: Settings) -> Self {
        Self { settings, phase: Phase::Idle, probation: None, crashes: 0 }
    }

    /// Where it is.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// When the core on probation must have proved itself; `None` when none is.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running { .. } => self.probation.as_ref().map(|p| p.deadline),
            _ => None,
        }
    }

    /// Whether the running core is on probation (the shell then watches for `old` to go).
    pub fn on_probation(&self) -> bool {
        self.deadline().is_some()
    }

    /// The shell launched `version`, on probation against `previous` when `old` is set. A
    /// restart of the same version on the same probation (exit 100) keeps the deadline, so
    /// a core that restarts in a loop is still rolled back in time.
    pub fn launched(&mut self, version: &str, previous: Option<&str>, now: Instant) {
        self.probation = previous.map(|previous| match self.probation.take() {
            Some(p) if p.version == version && p.previous == previous => p,
            _ => Probation {
                version: version.to_owned(),
                previous: previous.to_owned(),
                deadline: now + self.settings.health_deadline,
            },
        });
        self.phase = Phase::Running { version: version.to_owned() };
    }

    /// The action for `event`.
    pub fn on(&mut self, event: Event) -> Action {
        match (&self.phase, event) {
            (Phase::Idle, Event::StopSignal) => Action::End(0),
            (Phase::Idle, _) => Action::Wait,
            (Phase::Running { .. }, Event::OldRemoved) => {
                self.probation = None;
                self.crashes = 0;
                Action::Wait
            }
            (Phase::Running { .. }, Event::DeadlinePassed) if self.probation.is_some() => {
                self.phase = Phase::Abandoning;
                Action::Kill
            }
            (Phase::Running { .. }, Event::DeadlinePassed) => Action::Wait,
            (Phase::Running { .. } | Phase::Abandoning, Event::StopSignal) => {
                // Abandoning: the core is being killed already; the rollback waits for the next
                // start, which finds the version still on probation.
                let forward = self.phase != Phase::Abandoning;
                self.phase = Phase::Stopping;
                if forward { Action::ForwardStop } else { Action::Wait }
            }
            (Phase::Running { .. }, Event::CoreExited(exit)) => self.exited(exit),
            (Phase::Abandoning, Event::CoreExited(_)) => self.roll_back(RollbackCause::Deadline),
            (Phase::Abandoning, _) => Action::Wait,
            (Phase::Stopping, Event::CoreExited(exit)) => Action::End(exit.code()),
            (Phase::Stopping, _) => Action::Wait,
        }
    }

    fn exited(&mut self, exit: Exit) -> Action {
        self.phase = Phase::Idle;
        match exit {
            Exit::Code(REQUEST_RESTART | REQUEST_REBOOT) => {
                self.crashes = 0;
                Action::Launch
            }
            _ if self.probation.is_some() => self.roll_back(RollbackCause::Exited(exit)),
            Exit::Code(0) => Action::End(0),
            Exit::Code(EX_USAGE | EX_CONFIG) => Action::End(exit.code()),
            _ => {
                self.crashes += 1;
                if self.crashes >= self.settings.max_crashes { Action::End(exit.code()) } else { Action::Launch }
            }
        }
    }

    fn roll_back(&mut self, cause: RollbackCause) -> Action {
        self.phase = Phase::Idle;
        self.probation = None;
        self.crashes = 0;
        Action::RollBack(cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: Settings = Settings { health_deadline: Duration::from_secs(60), max_crashes: 3 };

    /// A launcher running version "2", on probation against "1" when `probation`.
    fn running(probation: bool) -> Launcher {
        let mut launcher = Launcher::new(SETTINGS);
        launcher.launched("2", probation.then_some("1"), Instant::now());
        launcher
    }

    #[test]
    fn each_event_leads_to_its_action() {
        use Action::*;
        use Event::*;
        let crash = CoreExited(Exit::Code(1));
        let killed = CoreExited(Exit::Signal(9));
        // (on probation, events, the action of the last one)
        let table: &[(bool, &[Event], Action)] = &[
            (false, &[CoreExited(Exit::Code(0))], End(0)),
            (false, &[CoreExited(Exit::Code(100))], Launch),
            (false, &[CoreExited(Exit::Code(101))], Launch),
            (true, &[CoreExited(Exit::Code(100))], Launch),
            (false, &[crash], Launch),
            (false, &[crash, crash], Launch),
            (false, &[crash, crash, killed], End(137)),
            (false, &[CoreExited(Exit::Code(78))], End(78)),
            (false, &[CoreExited(Exit::Code(64))], End(64)),
            (true, &[crash], RollBack(RollbackCause::Exited(Exit::Code(1)))),
            (true, &[CoreExited(Exit::Code(0))], RollBack(RollbackCause::Exited(Exit::Code(0)))),
            (true, &[CoreExited(Exit::Code(78))], RollBack(RollbackCause::Exited(Exit::Code(78)))),
            (true, &[DeadlinePassed], Kill),
            (true, &[DeadlinePassed, killed], RollBack(RollbackCause::Deadline)),
            (true, &[OldRemoved, DeadlinePassed], Wait),
            (true, &[OldRemoved, crash], Launch),
            (true, &[OldRemoved, CoreExited(Exit::Code(0))], End(0)),
            (false, &[StopSignal], ForwardStop),
            (false, &[StopSignal, CoreExited(Exit::Code(0))], End(0)),
            (false, &[StopSignal, CoreExited(Exit::Code(1))], End(1)),
            (true, &[StopSignal, CoreExited(Exit::Code(0))], End(0)),
            (true, &[StopSignal, DeadlinePassed], Wait),
            (true, &[DeadlinePassed, StopSignal], Wait),
            (true, &[DeadlinePassed, StopSignal, killed], End(137)),
        ];
        for (probation, events, last) in table {
            let mut launcher = running(*probation);
            let mut action = Wait;
            for (i, event) in events.iter().enumerate() {
                action = launcher.on(*event);
                // After a relaunch, the shell reports the next launch (same version, same probation).
                if action == Launch && i + 1 < events.len() {
                    let previous = launcher.probation.as_ref().map(|p| p.previous.clone());
                    launcher.launched("2", previous.as_deref(), Instant::now());
                }
            }
            assert_eq!(action, *last, "probation {probation}, events {events:?}");
        }
    }

    #[test]
    fn crashes_in_a_row_end_the_launcher_but_a_restart_request_resets_the_count() {
        let mut launcher = running(false);
        for _ in 0..2 {
            assert_eq!(launcher.on(Event::CoreExited(Exit::Code(1))), Action::Launch);
            launcher.launched("2", None, Instant::now());
        }
        assert_eq!(launcher.on(Event::CoreExited(Exit::Code(100))), Action::Launch);
        launcher.launched("2", None, Instant::now());
        assert_eq!(launcher.on(Event::CoreExited(Exit::Code(1))), Action::Launch, "the count started again");
    }

    #[test]
    fn a_restart_on_probation_keeps_the_deadline_and_a_new_version_gets_its_own() {
        let start = Instant::now();
        let mut launcher = Launcher::new(SETTINGS);
        launcher.launched("2", Some("1"), start);
        assert_eq!(launcher.deadline(), Some(start + SETTINGS.health_deadline));
        assert_eq!(launcher.on(Event::CoreExited(Exit::Code(100))), Action::Launch);
        assert_eq!(launcher.deadline(), None, "no core runs");
        launcher.launched("2", Some("1"), start + Duration::from_secs(30));
        assert_eq!(launcher.deadline(), Some(start + SETTINGS.health_deadline), "same probation");
        assert_eq!(launcher.on(Event::CoreExited(Exit::Code(100))), Action::Launch);
        let later = start + Duration::from_secs(40);
        launcher.launched("3", Some("1"), later);
        assert_eq!(launcher.deadline(), Some(later + SETTINGS.health_deadline), "a new version");
    }

    #[test]
    fn a_rolled_back_version_leaves_no_probation_behind() {
        let mut launcher = running(true);
        assert!(launcher.on_probation());
        assert_eq!(
            launcher.on(Event::CoreExited(Exit::Code(1))),
            Action::RollBack(RollbackCause::Exited(Exit::Code(1)))
        );
        launcher.launched("1", None, Instant::now());
        assert!(!launcher.on_probation());
        assert_eq!(launcher.on(Event::DeadlinePassed), Action::Wait);
    }

    #[test]
    fn a_stop_before_any_core_runs_ends_at_once() {
        assert_eq!(Launcher::new(SETTINGS).on(Event::StopSignal), Action::End(0));
    }

    #[test]
    fn exit_codes_are_what_a_shell_reports() {
        assert_eq!(Exit::Code(3).code(), 3);
        assert_eq!(Exit::Signal(15).code(), 143);
        assert_eq!(Exit::Code(-1).code(), 1);
    }
}
