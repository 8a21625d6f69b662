//! The protective-action policy: anomaly events in, the actions in force and what the shadow
//! reports out. Pure: time comes in as `now_ms`.
//!
//! An *episode* starts when an anomaly whose configured action is not `none` is raised in
//! `auto` mode. Its actions are the union of the actions of every anomaly raised during it;
//! they only grow until the episode ends, so a pump is never half released. The episode ends
//! when the last anomaly with an action clears (`onClear: restore`), or — with `onClear: hold`,
//! the default — when the operator changes a desired value afterwards; leaving `auto` mode
//! ends it at once (`manual` is the operator taking over, `off` and `maintenance` stop the pump
//! anyway). In `manual`, `off` and `maintenance` anomalies are only reported, in
//! `reported.alarms`. A kind raised by two detectors (the analyzer's `detector: both`) clears
//! when both have cleared it.

use std::collections::{BTreeMap, BTreeSet};

use pump_types::{AnomalyKind, Mode, ProtectiveAction};
use serde_json::{Value, json};

use crate::config::{action_name, kind_name};

/// What happens when the anomalies behind a protective action clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnClear {
    /// Keep the action until the operator changes a desired value (the default).
    Hold,
    /// Lift the action and return to the desired state at once.
    Restore,
}

/// The policy's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// The action per anomaly kind (`None`: report only).
    pub actions: BTreeMap<AnomalyKind, Option<ProtectiveAction>>,
    /// What a clear does.
    pub on_clear: OnClear,
    /// The speed `reduce_speed` runs at (at most).
    pub safe_speed_rpm: u16,
}

/// Whether protective actions are taken in `mode`: only in `auto`. In `manual` an operator has
/// the pump; in `off` and `maintenance` it is stopped already.
pub fn acts_in(mode: Mode) -> bool {
    match mode {
        Mode::Auto => true,
        Mode::Manual | Mode::Off | Mode::Maintenance => false,
    }
}

impl PolicyConfig {
    fn action(&self, kind: AnomalyKind) -> Option<ProtectiveAction> {
        self.actions.get(&kind).copied().flatten()
    }
}

/// A set of protective actions (`ProtectiveAction` has no ordering, so no `BTreeSet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    reduce_speed: bool,
    stop: bool,
    open_bypass: bool,
}

impl Actions {
    fn slot(&mut self, action: ProtectiveAction) -> &mut bool {
        match action {
            ProtectiveAction::ReduceSpeed => &mut self.reduce_speed,
            ProtectiveAction::Stop => &mut self.stop,
            ProtectiveAction::OpenBypass => &mut self.open_bypass,
        }
    }

    /// Adds one.
    pub fn insert(&mut self, action: ProtectiveAction) {
        *self.slot(action) = true;
    }

    /// Whether `action` is in the set.
    pub fn contains(&self, action: ProtectiveAction) -> bool {
        match action {
            ProtectiveAction::ReduceSpeed => self.reduce_speed,
            ProtectiveAction::Stop => self.stop,
            ProtectiveAction::OpenBypass => self.open_bypass,
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        *self == Actions::default()
    }

    /// The actions in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = ProtectiveAction> + '_ {
        [ProtectiveAction::ReduceSpeed, ProtectiveAction::Stop, ProtectiveAction::OpenBypass]
            .into_iter()
            .filter(|a| self.contains(*a))
    }
}

impl FromIterator<ProtectiveAction> for Actions {
    fn from_iter<I: IntoIterator<Item = ProtectiveAction>>(iter: I) -> Self {
        let mut set = Actions::default();
        for action in iter {
            set.insert(action);
        }
        set
    }
}

/// A raised anomaly kind.
#[derive(Debug, Clone, PartialEq)]
struct Alarm {
    /// The ids of the anomaly events raising it: one per detector that sees it (the analyzer's
    /// `both` runs the rules and the model, each raising its own).
    ids: BTreeSet<String>,
    /// The cause of the latest raise.
    reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// No action in force; `note` says why (for `protection.reason`).
    Idle { since_ms: u64, note: String },
    /// Anomalies with an action are raised.
    Active { episode: Episode },
    /// Their anomalies cleared; the actions stay until a desired value changes.
    Holding { episode: Episode },
}

#[derive(Debug, Clone, PartialEq)]
struct Episode {
    since_ms: u64,
    actions: Actions,
    /// `kind: reason` of each anomaly that joined the episode.
    causes: BTreeMap<AnomalyKind, String>,
}

/// What an event changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The actions in force changed: the plant must be driven again.
    pub actions_changed: bool,
    /// The episode ended: desired values refused meanwhile must be asked for again.
    pub released: bool,
}

/// The policy's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Protection {
    alarms: BTreeMap<AnomalyKind, Alarm>,
    phase: Phase,
}

impl Protection {
    /// No anomaly, no action, since `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Protection {
            alarms: BTreeMap::new(),
            phase: Phase::Idle { since_ms: now_ms, note: "controller started".into() },
        }
    }

    /// The actions in force.
    pub fn actions(&self) -> Actions {
        match &self.phase {
            Phase::Idle { .. } => Actions::default(),
            Phase::Active { episode } | Phase::Holding { episode } => episode.actions,
        }
    }

    /// True while the actions are held after their anomalies cleared.
    pub fn is_holding(&self) -> bool {
        matches!(self.phase, Phase::Holding { .. })
    }

    /// While anomalies are raised and a `reduce_speed` is in force: why new speeds are refused.
    pub fn speed_hold(&self) -> Option<String> {
        match &self.phase {
            Phase::Active { episode } if episode.actions.contains(ProtectiveAction::ReduceSpeed) => {
                Some(describe(episode))
            }
            _ => None,
        }
    }

    /// `reported.protection`: `{active, reason, since}`, never `null` members (the shadow
    /// engine does not delete reported keys): when inactive, `reason` says why it ended.
    pub fn report(&self) -> Value {
        match &self.phase {
            Phase::Idle { since_ms, note } => json!({"active": false, "reason": note, "since": since_ms}),
            Phase::Active { episode } => {
                json!({"active": true, "reason": describe(episode), "since": episode.since_ms})
            }
            Phase::Holding { episode } => json!({
                "active": true,
                "reason": format!("{}; anomaly cleared, holding until desired changes", describe(episode)),
                "since": episode.since_ms,
            }),
        }
    }

    /// `reported.alarms`: the kinds of the raised anomalies, whatever the mode.
    pub fn alarms_report(&self) -> Value {
        Value::Array(self.alarms.keys().map(|k| Value::String(kind_name(*k).to_owned())).collect())
    }

    /// An anomaly was raised.
    pub fn raise(
        &mut self,
        config: &PolicyConfig,
        mode: Mode,
        kind: AnomalyKind,
        id: &str,
        reason: &str,
        now_ms: u64,
    ) -> Outcome {
        let cause = format!("{}: {reason}", kind_name(kind));
        let alarm = self.alarms.entry(kind).or_insert_with(|| Alarm { ids: BTreeSet::new(), reason: String::new() });
        alarm.ids.insert(id.to_owned());
        alarm.reason.clone_from(&cause);
        let Some(action) = config.action(kind) else { return Outcome::default() };
        if !acts_in(mode) {
            return Outcome::default();
        }
        self.join(action, kind, cause, now_ms)
    }

    /// Adds one anomaly's action to the episode (starting one at `now_ms` if there is none).
    fn join(&mut self, action: ProtectiveAction, kind: AnomalyKind, cause: String, now_ms: u64) -> Outcome {
        let before = self.actions();
        let mut episode = match std::mem::replace(&mut self.phase, Phase::Idle { since_ms: 0, note: String::new() }) {
            Phase::Active { episode } | Phase::Holding { episode } => episode,
            Phase::Idle { .. } => Episode { since_ms: now_ms, actions: Actions::default(), causes: BTreeMap::new() },
        };
        episode.actions.insert(action);
        episode.causes.insert(kind, cause);
        self.phase = Phase::Active { episode };
        Outcome { actions_changed: self.actions() != before, released: false }
    }

    /// The anomaly `id` of `kind` was cleared. The kind stays raised while another anomaly of
    /// that kind (another detector's) is raised; a clear whose id was never raised clears the
    /// kind (each detector raises one anomaly per kind at a time). Returns `None` when no
    /// anomaly of that kind was raised.
    pub fn clear(&mut self, config: &PolicyConfig, kind: AnomalyKind, id: &str, now_ms: u64) -> Option<Outcome> {
        let alarm = self.alarms.get_mut(&kind)?;
        if alarm.ids.remove(id) && !alarm.ids.is_empty() {
            return Some(Outcome::default());
        }
        self.alarms.remove(&kind);
        let Phase::Active { episode } = &self.phase else { return Some(Outcome::default()) };
        if self.alarms.keys().any(|k| config.action(*k).is_some() && episode.causes.contains_key(k)) {
            return Some(Outcome::default());
        }
        Some(match config.on_clear {
            OnClear::Hold => {
                self.phase = Phase::Holding { episode: episode.clone() };
                Outcome::default()
            }
            OnClear::Restore => self.release(now_ms, format!("{} cleared", describe_kinds(episode))),
        })
    }

    /// The ids of the raised anomalies of `kind` (empty when it is not raised).
    pub fn alarm_ids(&self, kind: AnomalyKind) -> Vec<&str> {
        self.alarms.get(&kind).map(|a| a.ids.iter().map(String::as_str).collect()).unwrap_or_default()
    }

    /// The mode in effect changed: leaving `auto` ends the episode (`protection.reason` names
    /// the new mode); entering it starts one for the anomalies already raised.
    pub fn mode_changed(&mut self, config: &PolicyConfig, mode: Mode, now_ms: u64) -> Outcome {
        if !acts_in(mode) {
            return match self.phase {
                Phase::Idle { .. } => Outcome::default(),
                _ => self.release(now_ms, format!("mode {}", crate::settings::mode_name(mode))),
            };
        }
        let mut outcome = Outcome::default();
        let raised: Vec<(AnomalyKind, String)> = self.alarms.iter().map(|(k, a)| (*k, a.reason.clone())).collect();
        for (kind, cause) in raised {
            if let Some(action) = config.action(kind) {
                let o = self.join(action, kind, cause, now_ms);
                outcome.actions_changed |= o.actions_changed;
            }
        }
        outcome
    }

    /// The operator changed a desired value: a held episode ends.
    pub fn desired_changed(&mut self, now_ms: u64) -> Outcome {
        match self.phase {
            Phase::Holding { .. } => self.release(now_ms, "resumed by a desired change".into()),
            _ => Outcome::default(),
        }
    }

    fn release(&mut self, now_ms: u64, note: String) -> Outcome {
        let had = !self.actions().is_empty();
        self.phase = Phase::Idle { since_ms: now_ms, note };
        Outcome { actions_changed: had, released: true }
    }
}

fn describe_kinds(episode: &Episode) -> String {
    episode.causes.keys().map(|k| kind_name(*k)).collect::<Vec<_>>().join(", ")
}

/// `cavitation: suction below 5 kPa; bearing_wear: …; action reduce_speed`.
fn describe(episode: &Episode) -> String {
    let causes: Vec<&str> = episode.causes.values().map(String::as_str).collect();
    let actions: Vec<&str> = episode.actions.iter().map(|a| action_name(Some(a))).collect();
    format!("{}; action {}", causes.join("; "), actions.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use AnomalyKind::*;
    use ProtectiveAction::*;

    fn config(on_clear: OnClear) -> PolicyConfig {
        PolicyConfig {
            actions: BTreeMap::from([
                (BearingWear, Some(ReduceSpeed)),
                (Cavitation, Some(ReduceSpeed)),
                (Overheating, Some(Stop)),
                (StuckSensor, None),
            ]),
            on_clear,
            safe_speed_rpm: 1800,
        }
    }

    fn acts(list: &[ProtectiveAction]) -> Actions {
        list.iter().copied().collect()
    }

    const CHANGED: Outcome = Outcome { actions_changed: true, released: false };
    const RELEASED: Outcome = Outcome { actions_changed: true, released: true };
    const NOTHING: Outcome = Outcome { actions_changed: false, released: false };

    #[test]
    fn an_anomaly_in_auto_takes_the_configured_action_and_reports_it() {
        let cfg = config(OnClear::Hold);
        let mut p = Protection::new(1_000);
        assert_eq!(p.report(), json!({"active": false, "reason": "controller started", "since": 1_000}));
        assert_eq!(p.raise(&cfg, Mode::Auto, Cavitation, "a-1", "suction low", 2_000), CHANGED);
        assert_eq!(p.actions(), acts(&[ReduceSpeed]));
        let report = p.report();
        assert_eq!(report["active"], true);
        assert_eq!(report["since"], 2_000);
        assert_eq!(report["reason"], "cavitation: suction low; action reduce_speed");
        assert_eq!(p.alarms_report(), json!(["cavitation"]));
        assert_eq!(p.speed_hold().as_deref(), Some("cavitation: suction low; action reduce_speed"));
    }

    #[test]
    fn each_kind_maps_to_its_configured_action() {
        let rows = [(BearingWear, acts(&[ReduceSpeed])), (Overheating, acts(&[Stop])), (StuckSensor, acts(&[]))];
        for (kind, expected) in rows {
            let mut p = Protection::new(0);
            p.raise(&config(OnClear::Hold), Mode::Auto, kind, "x", "r", 2_000);
            assert_eq!(p.actions(), expected, "{kind:?}");
            assert_eq!(p.alarms_report(), json!([kind_name(kind)]), "{kind:?}: reported whatever the action");
        }
        let mut cfg = config(OnClear::Hold);
        cfg.actions.insert(Cavitation, Some(OpenBypass));
        let mut p = Protection::new(0);
        p.raise(&cfg, Mode::Auto, Cavitation, "x", "r", 2_000);
        assert_eq!(p.actions(), acts(&[OpenBypass]));
        assert_eq!(p.speed_hold(), None, "a bypass does not hold the speed");
    }

    #[test]
    fn in_manual_off_and_maintenance_anomalies_are_only_reported() {
        for mode in [Mode::Manual, Mode::Off, Mode::Maintenance] {
            let mut p = Protection::new(0);
            assert_eq!(p.raise(&config(OnClear::Hold), mode, Cavitation, "a", "r", 2_000), NOTHING);
            assert!(p.actions().is_empty());
            assert_eq!(p.report()["active"], false);
            assert_eq!(p.alarms_report(), json!(["cavitation"]));
        }
    }

    #[test]
    fn hold_keeps_the_action_after_the_clear_until_desired_changes() {
        let cfg = config(OnClear::Hold);
        let mut p = Protection::new(0);
        p.raise(&cfg, Mode::Auto, Cavitation, "a-1", "suction low", 2_000);
        assert_eq!(p.clear(&cfg, Cavitation, "a-1", 5_000), Some(NOTHING));
        assert!(p.is_holding());
        assert_eq!(p.actions(), acts(&[ReduceSpeed]));
        assert_eq!(p.report()["active"], true);
        assert!(p.report()["reason"].as_str().unwrap().contains("holding until desired changes"));
        assert_eq!(p.speed_hold(), None, "while holding, a new speed is the operator resuming");
        assert_eq!(p.alarms_report(), json!([]));
        assert_eq!(p.desired_changed(9_000), RELEASED);
        assert!(p.actions().is_empty());
        assert_eq!(p.report(), json!({"active": false, "reason": "resumed by a desired change", "since": 9_000}));
    }

    #[test]
    fn restore_lifts_the_action_when_the_last_anomaly_clears() {
        let cfg = config(OnClear::Restore);
        let mut p = Protection::new(0);
        p.raise(&cfg, Mode::Auto, Cavitation, "a-1", "suction low", 2_000);
        assert_eq!(p.raise(&cfg, Mode::Auto, Overheating, "a-2", "motor hot", 2_000), CHANGED);
        assert_eq!(p.actions(), acts(&[ReduceSpeed, Stop]));
        assert_eq!(p.clear(&cfg, Cavitation, "a-1", 4_000), Some(NOTHING), "overheating still raised");
        assert_eq!(p.actions(), acts(&[ReduceSpeed, Stop]), "actions never shrink within an episode");
        assert_eq!(p.clear(&cfg, Overheating, "a-2", 6_000), Some(RELEASED));
        assert!(p.actions().is_empty());
        assert_eq!(p.report(), json!({"active": false, "reason": "cavitation, overheating cleared", "since": 6_000}));
    }

    #[test]
    fn a_report_only_anomaly_does_not_keep_an_episode_going() {
        let cfg = config(OnClear::Restore);
        let mut p = Protection::new(0);
        p.raise(&cfg, Mode::Auto, StuckSensor, "s", "flow frozen", 2_000);
        p.raise(&cfg, Mode::Auto, Cavitation, "c", "suction low", 2_000);
        assert_eq!(p.clear(&cfg, Cavitation, "c", 10), Some(RELEASED));
        assert_eq!(p.alarms_report(), json!(["stuck_sensor"]));
    }

    #[test]
    fn a_kind_raised_by_two_detectors_stays_raised_until_both_clear() {
        let cfg = config(OnClear::Restore);
        let mut p = Protection::new(0);
        assert_eq!(p.raise(&cfg, Mode::Auto, Cavitation, "rules-1", "suction low", 2_000), CHANGED);
        assert_eq!(p.raise(&cfg, Mode::Auto, Cavitation, "model-1", "classifier 0.9", 2_100), NOTHING);
        assert_eq!(p.alarm_ids(Cavitation), vec!["model-1", "rules-1"]);
        assert_eq!(p.clear(&cfg, Cavitation, "rules-1", 3_000), Some(NOTHING), "the model still sees it");
        assert_eq!(p.alarms_report(), json!(["cavitation"]));
        assert_eq!(p.actions(), acts(&[ReduceSpeed]));
        assert_eq!(p.clear(&cfg, Cavitation, "model-1", 4_000), Some(RELEASED));
        assert_eq!(p.alarms_report(), json!([]));
        // A clear naming an id never raised clears the kind, as one detector's would.
        p.raise(&cfg, Mode::Auto, Cavitation, "rules-2", "suction low", 5_000);
        assert_eq!(p.clear(&cfg, Cavitation, "other", 6_000), Some(RELEASED));
    }

    #[test]
    fn clearing_an_unknown_anomaly_changes_nothing() {
        let cfg = config(OnClear::Restore);
        let mut p = Protection::new(0);
        assert_eq!(p.clear(&cfg, Cavitation, "x", 10), None);
        p.raise(&cfg, Mode::Auto, Cavitation, "c", "r", 2_000);
        assert_eq!(p.alarm_ids(Cavitation), vec!["c"]);
        assert_eq!(p.clear(&cfg, BearingWear, "x", 10), None);
        assert_eq!(p.actions(), acts(&[ReduceSpeed]));
    }

    #[test]
    fn a_new_anomaly_while_holding_reactivates_the_episode() {
        let cfg = config(OnClear::Hold);
        let mut p = Protection::new(0);
        p.raise(&cfg, Mode::Auto, Cavitation, "c", "r", 2_000);
        p.clear(&cfg, Cavitation, "c", 10);
        assert_eq!(p.raise(&cfg, Mode::Auto, Overheating, "o", "hot", 2_000), CHANGED);
        assert!(!p.is_holding());
        assert_eq!(p.actions(), acts(&[ReduceSpeed, Stop]));
        assert_eq!(p.desired_changed(20), NOTHING, "an active episode is not resumed by desired");
    }

    #[test]
    fn leaving_auto_ends_the_episode_and_returning_restarts_it_for_raised_anomalies() {
        let cfg = config(OnClear::Hold);
        let mut p = Protection::new(0);
        p.raise(&cfg, Mode::Auto, BearingWear, "b", "vibration", 2_000);
        assert_eq!(p.mode_changed(&cfg, Mode::Manual, 50), RELEASED);
        assert_eq!(p.report(), json!({"active": false, "reason": "mode manual", "since": 50}));
        assert_eq!(p.alarms_report(), json!(["bearing_wear"]));
        assert_eq!(p.mode_changed(&cfg, Mode::Auto, 80), CHANGED);
        assert_eq!(p.report()["since"], 80);
        assert_eq!(p.actions(), acts(&[ReduceSpeed]));
        // Auto again with nothing raised changes nothing.
        let mut q = Protection::new(0);
        assert_eq!(q.mode_changed(&cfg, Mode::Auto, 5), NOTHING);
    }

    #[test]
    fn maintenance_ends_the_episode_and_takes_no_action_until_auto_again() {
        let mut cfg = config(OnClear::Hold);
        cfg.actions.insert(Cavitation, Some(OpenBypass));
        let mut p = Protection::new(0);
        p.raise(&cfg, Mode::Auto, Cavitation, "c", "suction low", 2_000);
        assert_eq!(p.actions(), acts(&[OpenBypass]));
        assert_eq!(p.mode_changed(&cfg, Mode::Maintenance, 3_000), RELEASED);
        assert!(p.actions().is_empty(), "the bypass is no longer asked for");
        assert_eq!(p.report(), json!({"active": false, "reason": "mode maintenance", "since": 3_000}));
        assert_eq!(p.alarms_report(), json!(["cavitation"]), "still reported");
        // A new anomaly in maintenance is only reported.
        assert_eq!(p.raise(&cfg, Mode::Maintenance, Overheating, "o", "motor hot", 4_000), NOTHING);
        assert!(p.actions().is_empty());
        assert_eq!(p.alarms_report(), json!(["cavitation", "overheating"]));
        // Leaving for manual takes none either; back to auto, the raised ones act at once.
        assert_eq!(p.mode_changed(&cfg, Mode::Manual, 5_000), NOTHING);
        assert_eq!(p.mode_changed(&cfg, Mode::Auto, 6_000), CHANGED);
        assert_eq!(p.actions(), acts(&[Stop, OpenBypass]));
        // Entering maintenance from a holding episode ends it too.
        p.clear(&cfg, Cavitation, "c", 7_000);
        p.clear(&cfg, Overheating, "o", 7_000);
        assert!(p.is_holding());
        assert_eq!(p.mode_changed(&cfg, Mode::Maintenance, 8_000), RELEASED);
        assert_eq!(p.report()["active"], false);
    }

    #[test]
    fn only_auto_takes_protective_actions() {
        let rows = [(Mode::Auto, true), (Mode::Manual, false), (Mode::Off, false), (Mode::Maintenance, false)];
        for (mode, acts) in rows {
            assert_eq!(acts_in(mode), acts, "{mode:?}");
        }
    }
}
