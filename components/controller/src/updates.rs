//! Whether the controller lets a deployment update the components now (pure, time passed in).
//!
//! The nucleus sends a `preUpdateEvent` before a deployment stops or restarts components
//! (SubscribeToComponentUpdates); the controller answers with DeferComponentUpdate. It puts
//! the update off (`recheckAfterMs` = [`UpdatePolicy::recheck`]) while a protective action is
//! active or the pump has not yet reached the speed the controller commanded, so that a
//! restart does not leave the pump half-way; the nucleus asks again after the recheck. It
//! never puts one deployment off for longer than [`UpdatePolicy::max_deferral`] in total,
//! counted from the first notice of that deployment: after that it lets the update go even
//! if it is still busy, so a stuck alarm cannot block every update.

use std::time::Duration;

/// The two knobs: `updateRecheckMs` and `maxUpdateDeferralS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdatePolicy {
    /// How long each deferral asks for.
    pub recheck: Duration,
    /// The longest one deployment is put off, in total.
    pub max_deferral: Duration,
}

/// What the controller is doing that an update would interrupt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Busy {
    /// A protective action (reduce speed, stop, open bypass) is in effect.
    pub protective_action: bool,
    /// The plant does not yet run what the controller commanded.
    pub ramping: bool,
}

/// The answer to a `preUpdateEvent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// DeferComponentUpdate with `recheckAfterMs` > 0 and this message.
    Defer {
        /// How long to put it off.
        recheck: Duration,
        /// Why, for the deployment's logs.
        message: String,
    },
    /// DeferComponentUpdate with `recheckAfterMs` 0: go ahead.
    Go,
}

/// Decides the answer, `deferred` after the first notice of this deployment.
pub fn decide(policy: &UpdatePolicy, busy: Busy, deferred: Duration) -> Answer {
    let reason = match (busy.protective_action, busy.ramping) {
        (false, false) => return Answer::Go,
        (true, _) => "a protective action is in effect",
        (false, true) => "the pump is ramping to a new speed",
    };
    if deferred >= policy.max_deferral {
        return Answer::Go;
    }
    // The last deferral stops at the limit rather than past it.
    let recheck = policy.recheck.min(policy.max_deferral - deferred).max(Duration::from_millis(1));
    Answer::Defer { recheck, message: format!("{reason}; deferring up to {}s in total", policy.max_deferral.as_secs()) }
}

/// The first notice of each deployment, to count the deferral from.
#[derive(Debug, Clone, Default)]
pub struct Notices {
    current: Option<(String, tokio::time::Instant)>,
}

impl Notices {
    /// How long deployment `id` has been put off at `now` (0 at its first notice).
    pub fn deferred(&mut self, id: &str, now: tokio::time::Instant) -> Duration {
        match &self.current {
            Some((current, since)) if current == id => now - *since,
            _ => {
                self.current = Some((id.to_owned(), now));
                Duration::ZERO
            }
        }
    }

    /// The deployment is done (postUpdateEvent): forget it.
    pub fn done(&mut self, id: &str) {
        if self.current.as_ref().is_some_and(|(c, _)| c == id) {
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: UpdatePolicy =
        UpdatePolicy { recheck: Duration::from_secs(5), max_deferral: Duration::from_secs(300) };

    #[test]
    fn an_idle_controller_lets_the_update_go() {
        assert_eq!(decide(&POLICY, Busy::default(), Duration::ZERO), Answer::Go);
    }

    #[test]
    fn a_protective_action_or_a_ramp_defers_by_the_recheck() {
        let protecting = Busy { protective_action: true, ramping: false };
        let Answer::Defer { recheck, message } = decide(&POLICY, protecting, Duration::from_secs(10)) else {
            panic!("defer expected")
        };
        assert_eq!(recheck, Duration::from_secs(5));
        assert!(message.contains("protective action"), "{message}");
        let ramping = Busy { protective_action: false, ramping: true };
        let Answer::Defer { message, .. } = decide(&POLICY, ramping, Duration::ZERO) else { panic!("defer expected") };
        assert!(message.contains("ramping"), "{message}");
    }

    #[test]
    fn the_maximum_total_deferral_lets_the_update_go_even_when_busy() {
        let busy = Busy { protective_action: true, ramping: true };
        let Answer::Defer { recheck, .. } = decide(&POLICY, busy, Duration::from_secs(298)) else { panic!() };
        assert_eq!(recheck, Duration::from_secs(2), "the last deferral stops at the limit");
        assert_eq!(decide(&POLICY, busy, Duration::from_secs(300)), Answer::Go);
        assert_eq!(decide(&POLICY, busy, Duration::from_secs(3600)), Answer::Go);
    }

    #[test]
    fn deferral_is_counted_per_deployment_from_its_first_notice() {
        let t0 = tokio::time::Instant::now();
        let mut notices = Notices::default();
        assert_eq!(notices.deferred("d1", t0), Duration::ZERO);
        assert_eq!(notices.deferred("d1", t0 + Duration::from_secs(7)), Duration::from_secs(7));
        assert_eq!(notices.deferred("d2", t0 + Duration::from_secs(8)), Duration::ZERO, "a new deployment");
        notices.done("d2");
        assert_eq!(notices.deferred("d2", t0 + Duration::from_secs(9)), Duration::ZERO, "forgotten after post");
    }
}
