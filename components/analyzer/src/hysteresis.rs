//! Hysteresis: an anomaly is raised after `raise_after` consecutive [`Evidence::Raise`]
//! assessments and cleared after `clear_after` consecutive normal ones, so events do not flap
//! on a noisy threshold. A pure state machine per kind.

use crate::detector::Evidence;

/// What one assessment says about one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The detector returned a finding with this evidence.
    Finding(Evidence),
    /// The detector returned no finding: normal.
    Normal,
}

/// A change of state to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The anomaly is now active.
    Raised,
    /// The anomaly is no longer active.
    Cleared,
}

/// The state of one kind for one detector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Track {
    /// Whether the anomaly is raised.
    pub active: bool,
    /// Consecutive raising observations while inactive.
    pub raise_streak: u32,
    /// Consecutive normal observations while active.
    pub normal_streak: u32,
}

impl Track {
    /// Takes one observation; returns the transition it causes, if any.
    ///
    /// | state | observation | effect |
    /// | --- | --- | --- |
    /// | inactive | Raise | streak + 1; raise at `raise_after` |
    /// | inactive | Sustain, Normal | streak reset |
    /// | active | Raise, Sustain | normal streak reset |
    /// | active | Normal | normal streak + 1; clear at `clear_after` |
    /// | any | Inconclusive | nothing changes |
    pub fn observe(&mut self, observation: Observation, raise_after: u32, clear_after: u32) -> Option<Transition> {
        use Evidence::*;
        match (self.active, observation) {
            (_, Observation::Finding(Inconclusive)) => None,
            (false, Observation::Finding(Raise)) => {
                self.raise_streak += 1;
                if self.raise_streak >= raise_after {
                    *self = Track { active: true, raise_streak: 0, normal_streak: 0 };
                    Some(Transition::Raised)
                } else {
                    None
                }
            }
            (false, Observation::Finding(Sustain) | Observation::Normal) => {
                self.raise_streak = 0;
                None
            }
            (true, Observation::Finding(Raise | Sustain)) => {
                self.normal_streak = 0;
                None
            }
            (true, Observation::Normal) => {
                self.normal_streak += 1;
                if self.normal_streak >= clear_after {
                    *self = Track::default();
                    Some(Transition::Cleared)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Observation = Observation::Finding(Evidence::Raise);
    const S: Observation = Observation::Finding(Evidence::Sustain);
    const I: Observation = Observation::Finding(Evidence::Inconclusive);
    const N: Observation = Observation::Normal;

    /// A case: name, observations, raise_after, clear_after, the transition after each step.
    type Case = (&'static str, &'static [Observation], u32, u32, Vec<Option<Transition>>);

    /// Runs a sequence from a fresh track; returns the transition (if any) after each step.
    fn run(seq: &[Observation], raise_after: u32, clear_after: u32) -> Vec<Option<Transition>> {
        let mut t = Track::default();
        seq.iter().map(|o| t.observe(*o, raise_after, clear_after)).collect()
    }

    #[test]
    fn hysteresis_follows_its_table() {
        use Transition::{Cleared as C, Raised as U};
        let cases: [Case; 9] = [
            ("raises on the k-th consecutive raise", &[R, R, R], 3, 2, vec![None, None, Some(U)]),
            (
                "a normal reading restarts the count",
                &[R, R, N, R, R, R],
                3,
                2,
                vec![None, None, None, None, None, Some(U)],
            ),
            ("sustain alone never raises", &[S, S, S, S], 2, 2, vec![None; 4]),
            ("sustain between raises restarts the count", &[R, S, R], 2, 2, vec![None, None, None]),
            ("inconclusive neither counts nor resets", &[R, I, R], 2, 2, vec![None, None, Some(U)]),
            ("clears on the m-th consecutive normal", &[R, N, N], 1, 2, vec![Some(U), None, Some(C)]),
            ("sustain keeps it raised", &[R, N, S, N, S, N], 1, 2, vec![Some(U), None, None, None, None, None]),
            ("inconclusive does not clear", &[R, N, I, I, N], 1, 2, vec![Some(U), None, None, None, Some(C)]),
            ("raises again after a clear", &[R, N, R], 1, 1, vec![Some(U), Some(C), Some(U)]),
        ];
        for (name, seq, k, m, want) in cases {
            assert_eq!(run(seq, k, m), want, "{name}");
        }
    }

    #[test]
    fn a_flapping_finding_does_not_flap_the_anomaly() {
        // Raise, normal, raise, normal ... with k = 2 never raises.
        let seq: Vec<Observation> = (0..100).map(|i| if i % 2 == 0 { R } else { N }).collect();
        assert!(run(&seq, 2, 3).iter().all(Option::is_none));
        // Once raised, one normal in three never clears it with m = 2.
        let mut seq = vec![R];
        seq.extend((0..99).map(|i| if i % 3 == 2 { N } else { S }));
        assert_eq!(run(&seq, 1, 2).iter().flatten().count(), 1);
    }
}
