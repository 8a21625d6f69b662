//! The operator's settings (`mode`, `speedRpm`, `limits`): validation of desired values and
//! the plant command they lead to, pure.
//!
//! [`decide`] answers one `kit::shadow` `Apply`: which desired values become the settings in
//! effect and which are refused, each with the reason the shadow's `reported.refused` shows.
//! [`command`] turns the settings and the protective actions in force into the plant's three
//! commands (speed setpoint, run coil, bypass coil).
//!
//! Mode `maintenance` holds the pump stopped with the bypass closed until an operator sets
//! another mode. A cloud application sets it through desired, so it is refused while the mode
//! in effect is `manual`: an operator has taken the pump over by hand, and automation does not
//! take it from them ([`MAINTENANCE_OVER_MANUAL`]).

use kit::shadow::{Refusal, Section};
use pump_types::{Mode, ProtectiveAction};

use crate::protection::Actions;
use serde_json::{Value, json};

/// The plant's highest speed setpoint (its holding register's accepted range, `pump-map`).
pub const PLANT_MAX_RPM: u16 = 3000;

/// Why `mode: maintenance` is refused while `manual` is in effect (`reported.refused.mode`).
pub const MAINTENANCE_OVER_MANUAL: &str = "manual mode in effect: an operator has the pump by hand; leave manual first (e.g. mode off) to put it into maintenance";

/// `limits {minRpm, maxRpm}`: the speeds an operator may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lowest allowed `speedRpm`.
    pub min_rpm: u16,
    /// Highest allowed `speedRpm`.
    pub max_rpm: u16,
}

/// The settings in effect: what the pump runs when no protective action holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `auto`, `manual`, `off` or `maintenance`.
    pub mode: Mode,
    /// The operator's speed.
    pub speed_rpm: u16,
    /// The allowed speed range.
    pub limits: Limits,
}

/// The answer to one `Apply`.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The settings after the accepted values.
    pub settings: Settings,
    /// Paths of the desired values accepted (`mode`, `speedRpm`, `limits.minRpm`, ...).
    pub accepted: Vec<String>,
    /// Desired values refused, with reasons.
    pub refusals: Vec<Refusal>,
}

/// The plant commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    /// The speed setpoint register.
    pub speed_rpm: u16,
    /// The run coil.
    pub run: bool,
    /// The bypass valve coil.
    pub bypass_open: bool,
}

impl Settings {
    /// The settings as they appear in `reported` (and `desired`).
    pub fn to_section(self) -> Section {
        let value = json!({
            "mode": mode_name(self.mode),
            "speedRpm": self.speed_rpm,
            "limits": {"minRpm": self.limits.min_rpm, "maxRpm": self.limits.max_rpm},
        });
        value.as_object().cloned().unwrap_or_default()
    }
}

/// `auto`, `manual`, `off`, `maintenance`.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Auto => "auto",
        Mode::Manual => "manual",
        Mode::Off => "off",
        Mode::Maintenance => "maintenance",
    }
}

fn parse_mode(value: &Value) -> Result<Mode, String> {
    match value.as_str() {
        Some("auto") => Ok(Mode::Auto),
        Some("manual") => Ok(Mode::Manual),
        Some("off") => Ok(Mode::Off),
        Some("maintenance") => Ok(Mode::Maintenance),
        Some(other) => Err(format!("unknown mode {other:?}: expected auto, manual, off or maintenance")),
        None => Err("mode must be one of auto, manual, off, maintenance".into()),
    }
}

/// The mode in effect at start: `from_plant` (`auto` when the run coil is on, `off` when it is
/// off), unless the `reported.mode` left by the previous run names the mode the plant cannot
/// tell apart from it — `manual` for a running pump, `maintenance` for a stopped one.
pub fn recover_mode(from_plant: Mode, reported: Option<&Value>) -> Mode {
    match (from_plant, reported.and_then(Value::as_str)) {
        (Mode::Auto, Some("manual")) => Mode::Manual,
        (Mode::Off, Some("maintenance")) => Mode::Maintenance,
        _ => from_plant,
    }
}

/// Whether the mode in effect may change to `next`; the reason when not.
fn mode_change_allowed(current: Mode, next: Mode) -> Result<(), &'static str> {
    match (current, next) {
        (Mode::Manual, Mode::Maintenance) => Err(MAINTENANCE_OVER_MANUAL),
        _ => Ok(()),
    }
}

/// A whole number of rpm, not above the plant's maximum.
fn parse_rpm(path: &str, value: &Value) -> Result<u16, String> {
    let whole = value.as_u64().or_else(|| value.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64));
    match whole {
        None => Err(format!("{path} must be a whole number of rpm")),
        Some(n) if n > u64::from(PLANT_MAX_RPM) => Err(format!("above the plant's maximum {PLANT_MAX_RPM} rpm")),
        Some(n) => Ok(n as u16),
    }
}

/// Every leaf under `value` with its path below `prefix`.
fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                leaves(&format!("{prefix}.{key}"), inner, out);
            }
        }
        other => out.push((prefix.to_owned(), other.clone())),
    }
}

fn refuse_all(prefix: &str, value: &Value, reason: &str, refusals: &mut Vec<Refusal>) {
    let mut found = Vec::new();
    leaves(prefix, value, &mut found);
    refusals.extend(found.into_iter().map(|(path, value)| Refusal::new(path, value, reason)));
}

/// Why a speed lies outside `limits`, if it does.
fn outside(speed: u16, limits: Limits) -> Option<String> {
    if speed > limits.max_rpm {
        Some(format!("above limits.maxRpm {}", limits.max_rpm))
    } else if speed < limits.min_rpm {
        Some(format!("below limits.minRpm {}", limits.min_rpm))
    } else {
        None
    }
}

/// Decides one `Apply`: `changes` holds the desired values that differ from what is in
/// effect (a partial desired section). `speed_hold` is the reason a protective action holds
/// the speed (a new speed is then refused; the speed already in the settings is accepted, as
/// the action only lowers what the pump runs, not what the operator asked for).
///
/// Values are checked together: the speed against the limits that will be in effect, and new
/// limits against the speed that will be in effect. A mode is checked against the mode in
/// effect (`maintenance` is refused over `manual`).
pub fn decide(current: &Settings, changes: &Section, speed_hold: Option<&str>) -> Verdict {
    let mut next = *current;
    let mut accepted = Vec::new();
    let mut refusals = Vec::new();

    // Candidate limits: each changed leaf on its own, then the pair.
    let mut limit_leaves: Vec<(String, Value)> = Vec::new();
    let mut limits = current.limits;
    let mut speed: Option<(Value, u16)> = None;
    for (key, value) in changes {
        match key.as_str() {
            "mode" => match parse_mode(value) {
                Ok(mode) => match mode_change_allowed(current.mode, mode) {
                    Ok(()) => {
                        next.mode = mode;
                        accepted.push("mode".to_owned());
                    }
                    Err(reason) => refusals.push(Refusal::new("mode", value.clone(), reason)),
                },
                Err(reason) => refuse_all("mode", value, &reason, &mut refusals),
            },
            "speedRpm" => match parse_rpm("speedRpm", value) {
                Ok(rpm) => match speed_hold {
                    Some(reason) if rpm != current.speed_rpm => {
                        refusals.push(Refusal::new("speedRpm", value.clone(), format!("protection active: {reason}")))
                    }
                    _ => speed = Some((value.clone(), rpm)),
                },
                Err(reason) => refuse_all("speedRpm", value, &reason, &mut refusals),
            },
            "limits" => match value {
                Value::Object(map) => {
                    for (name, inner) in map {
                        let path = format!("limits.{name}");
                        let slot = match name.as_str() {
                            "minRpm" => &mut limits.min_rpm,
                            "maxRpm" => &mut limits.max_rpm,
                            _ => {
                                refuse_all(&path, inner, "not a setting of this pump", &mut refusals);
                                continue;
                            }
                        };
                        match parse_rpm(&path, inner) {
                            Ok(rpm) => {
                                *slot = rpm;
                                limit_leaves.push((path, inner.clone()));
                            }
                            Err(reason) => refuse_all(&path, inner, &reason, &mut refusals),
                        }
                    }
                }
                other => refuse_all("limits", other, "limits must be an object {minRpm, maxRpm}", &mut refusals),
            },
            _ => refuse_all(key, value, "not a setting of this pump", &mut refusals),
        }
    }
    let mut limits_ok = !limit_leaves.is_empty();
    let mut limits_reason = String::new();
    if limits_ok && limits.min_rpm > limits.max_rpm {
        limits_ok = false;
        limits_reason = format!("limits.minRpm {} above limits.maxRpm {}", limits.min_rpm, limits.max_rpm);
    }

    // The speed against the limits that will be in effect.
    if let Some((value, rpm)) = speed {
        let against = if limits_ok { limits } else { current.limits };
        match outside(rpm, against) {
            None => {
                next.speed_rpm = rpm;
                accepted.push("speedRpm".to_owned());
            }
            Some(reason) => refusals.push(Refusal::new("speedRpm", value, reason)),
        }
    }
    // New limits must hold the speed that will be in effect.
    if limits_ok && outside(next.speed_rpm, limits).is_some() {
        limits_ok = false;
        limits_reason =
            format!("speedRpm {} in effect lies outside {}..{}", next.speed_rpm, limits.min_rpm, limits.max_rpm);
    }
    if limits_ok {
        next.limits = limits;
        accepted.extend(limit_leaves.into_iter().map(|(path, _)| path));
    } else {
        for (path, value) in limit_leaves {
            refusals.push(Refusal::new(path, value, limits_reason.clone()));
        }
    }
    Verdict { settings: next, accepted, refusals }
}

/// The plant commands for `settings` with `actions` in force: `stop` and modes `off` and
/// `maintenance` turn the run coil off; `reduce_speed` lowers the speed to `safe_speed_rpm`
/// (never raises it); `open_bypass` opens the bypass valve, except in `maintenance`.
///
/// The speed setpoint is written in every mode, so a speed set while the pump is stopped is the
/// one it starts at. `maintenance` keeps the bypass closed whatever is asked: the bypass
/// recirculates a *running* pump's flow (`docs/plant.md`), a stopped pump has none, and the
/// valve then stays in the line-up the pump restarts in. (The policy takes no action outside
/// `auto`, so `actions` is empty in `maintenance`; the rule is written here, where the coil is
/// decided, so it holds whatever the policy does.)
pub fn command(settings: &Settings, actions: &Actions, safe_speed_rpm: u16) -> Command {
    let mut speed_rpm = settings.speed_rpm;
    if actions.contains(ProtectiveAction::ReduceSpeed) {
        speed_rpm = speed_rpm.min(safe_speed_rpm);
    }
    let stopped = matches!(settings.mode, Mode::Off | Mode::Maintenance);
    Command {
        speed_rpm,
        run: !stopped && !actions.contains(ProtectiveAction::Stop),
        bypass_open: settings.mode != Mode::Maintenance && actions.contains(ProtectiveAction::OpenBypass),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings { mode: Mode::Auto, speed_rpm: 2900, limits: Limits { min_rpm: 1700, max_rpm: 2950 } }
    }

    fn section(v: Value) -> Section {
        v.as_object().cloned().unwrap()
    }

    fn reasons(v: &Verdict) -> Vec<(String, String)> {
        v.refusals.iter().map(|r| (r.path.clone(), r.reason.clone())).collect()
    }

    fn pair(path: &str, reason: &str) -> (String, String) {
        (path.to_owned(), reason.to_owned())
    }

    #[test]
    fn out_of_range_desired_values_are_refused_with_their_reason() {
        type Row = (&'static str, Value, Vec<(String, String)>);
        let rows: Vec<Row> = vec![
            (
                "above the plant's range",
                json!({"speedRpm": 9000}),
                vec![pair("speedRpm", "above the plant's maximum 3000 rpm")],
            ),
            ("above limits.maxRpm", json!({"speedRpm": 2990}), vec![pair("speedRpm", "above limits.maxRpm 2950")]),
            ("below limits.minRpm", json!({"speedRpm": 1200}), vec![pair("speedRpm", "below limits.minRpm 1700")]),
            (
                "negative speed",
                json!({"speedRpm": -5}),
                vec![pair("speedRpm", "speedRpm must be a whole number of rpm")],
            ),
            (
                "fractional speed",
                json!({"speedRpm": 2000.5}),
                vec![pair("speedRpm", "speedRpm must be a whole number of rpm")],
            ),
            (
                "speed as text",
                json!({"speedRpm": "fast"}),
                vec![pair("speedRpm", "speedRpm must be a whole number of rpm")],
            ),
            (
                "speed as object",
                json!({"speedRpm": {"value": 1}}),
                vec![pair("speedRpm.value", "speedRpm must be a whole number of rpm")],
            ),
            (
                "unknown mode",
                json!({"mode": "turbo"}),
                vec![pair("mode", "unknown mode \"turbo\": expected auto, manual, off or maintenance")],
            ),
            (
                "mode not text",
                json!({"mode": 3}),
                vec![pair("mode", "mode must be one of auto, manual, off, maintenance")],
            ),
            ("unknown setting", json!({"colour": {"r": 1}}), vec![pair("colour.r", "not a setting of this pump")]),
            (
                "unknown limit",
                json!({"limits": {"maxBar": 7}}),
                vec![pair("limits.maxBar", "not a setting of this pump")],
            ),
            (
                "limits not an object",
                json!({"limits": 5}),
                vec![pair("limits", "limits must be an object {minRpm, maxRpm}")],
            ),
            (
                "limit above the plant",
                json!({"limits": {"maxRpm": 3500}}),
                vec![pair("limits.maxRpm", "above the plant's maximum 3000 rpm")],
            ),
            (
                "inverted limits",
                json!({"limits": {"minRpm": 2950, "maxRpm": 2900}}),
                vec![
                    pair("limits.minRpm", "limits.minRpm 2950 above limits.maxRpm 2900"),
                    pair("limits.maxRpm", "limits.minRpm 2950 above limits.maxRpm 2900"),
                ],
            ),
            (
                "limits excluding the running speed",
                json!({"limits": {"maxRpm": 2500}}),
                vec![pair("limits.maxRpm", "speedRpm 2900 in effect lies outside 1700..2500")],
            ),
        ];
        for (name, changes, expected) in rows {
            let verdict = decide(&settings(), &section(changes), None);
            assert_eq!(reasons(&verdict), expected, "{name}");
            assert_eq!(verdict.settings, settings(), "{name}: nothing refused changes the settings");
            assert!(verdict.accepted.is_empty(), "{name}: {:?}", verdict.accepted);
        }
    }

    #[test]
    fn valid_values_are_accepted_together() {
        let changes = section(json!({"mode": "manual", "speedRpm": 2200, "limits": {"minRpm": 2000, "maxRpm": 2500}}));
        let verdict = decide(&settings(), &changes, None);
        assert!(verdict.refusals.is_empty(), "{:?}", verdict.refusals);
        assert_eq!(verdict.accepted, vec!["mode", "speedRpm", "limits.minRpm", "limits.maxRpm"]);
        assert_eq!(
            verdict.settings,
            Settings { mode: Mode::Manual, speed_rpm: 2200, limits: Limits { min_rpm: 2000, max_rpm: 2500 } }
        );
        // Integral floats are whole numbers.
        assert_eq!(decide(&settings(), &section(json!({"speedRpm": 2100.0})), None).settings.speed_rpm, 2100);
    }

    #[test]
    fn a_refused_speed_leaves_new_limits_checked_against_the_speed_in_effect() {
        // The new speed is out of the new limits: refused; the new limits hold the old speed.
        let changes = section(json!({"speedRpm": 1000, "limits": {"minRpm": 2000}}));
        let verdict = decide(&settings(), &changes, None);
        assert_eq!(reasons(&verdict), vec![pair("speedRpm", "below limits.minRpm 2000")]);
        assert_eq!(verdict.settings.limits.min_rpm, 2000);
        assert_eq!(verdict.settings.speed_rpm, 2900);
    }

    #[test]
    fn one_bad_value_does_not_block_the_others() {
        let changes = section(json!({"mode": "off", "speedRpm": 9000}));
        let verdict = decide(&settings(), &changes, None);
        assert_eq!(verdict.accepted, vec!["mode"]);
        assert_eq!(verdict.settings.mode, Mode::Off);
        assert_eq!(reasons(&verdict), vec![pair("speedRpm", "above the plant's maximum 3000 rpm")]);
    }

    #[test]
    fn a_speed_hold_refuses_new_speeds_but_not_the_speed_already_set() {
        let hold = Some("cavitation: reduce_speed");
        let verdict = decide(&settings(), &section(json!({"speedRpm": 2500})), hold);
        assert_eq!(reasons(&verdict), vec![pair("speedRpm", "protection active: cavitation: reduce_speed")]);
        let verdict = decide(&settings(), &section(json!({"speedRpm": 2900})), hold);
        assert!(verdict.refusals.is_empty());
        assert_eq!(verdict.accepted, vec!["speedRpm"]);
        // Other settings are not held.
        let verdict = decide(&settings(), &section(json!({"mode": "manual"})), hold);
        assert_eq!(verdict.accepted, vec!["mode"]);
    }

    #[test]
    fn maintenance_is_refused_while_in_manual() {
        let manual = Settings { mode: Mode::Manual, ..settings() };
        let verdict = decide(&manual, &section(json!({"mode": "maintenance", "speedRpm": 2200})), None);
        assert_eq!(reasons(&verdict), vec![pair("mode", MAINTENANCE_OVER_MANUAL)]);
        assert_eq!(verdict.refusals[0].value, json!("maintenance"));
        assert_eq!(verdict.settings.mode, Mode::Manual, "the operator keeps the pump");
        assert_eq!(verdict.accepted, vec!["speedRpm"], "the other values of the delta still apply");
        assert_eq!(verdict.settings.speed_rpm, 2200);
    }

    #[test]
    fn maintenance_is_accepted_from_every_mode_but_manual_and_left_for_any_mode() {
        type Row = (Mode, Mode, bool);
        let rows: Vec<Row> = vec![
            (Mode::Auto, Mode::Maintenance, true),
            (Mode::Off, Mode::Maintenance, true),
            (Mode::Manual, Mode::Maintenance, false),
            // Leaving maintenance is the operator's act, in any direction.
            (Mode::Maintenance, Mode::Auto, true),
            (Mode::Maintenance, Mode::Manual, true),
            (Mode::Maintenance, Mode::Off, true),
            // Leaving manual first, then maintenance: the operator's way there.
            (Mode::Manual, Mode::Off, true),
            (Mode::Manual, Mode::Auto, true),
        ];
        for (from, to, allowed) in rows {
            let current = Settings { mode: from, ..settings() };
            let verdict = decide(&current, &section(json!({"mode": mode_name(to)})), None);
            let expected = if allowed { to } else { from };
            assert_eq!(verdict.settings.mode, expected, "{from:?} -> {to:?}");
            assert_eq!(verdict.refusals.is_empty(), allowed, "{from:?} -> {to:?}: {:?}", verdict.refusals);
        }
    }

    #[test]
    fn a_restart_keeps_manual_and_maintenance_when_the_run_coil_agrees() {
        let rows: Vec<(Mode, Option<Value>, Mode)> = vec![
            (Mode::Auto, Some(json!("manual")), Mode::Manual),
            (Mode::Off, Some(json!("maintenance")), Mode::Maintenance),
            // What the plant shows wins when the report disagrees with it.
            (Mode::Off, Some(json!("manual")), Mode::Off),
            (Mode::Auto, Some(json!("maintenance")), Mode::Auto),
            (Mode::Auto, Some(json!("off")), Mode::Auto),
            (Mode::Off, Some(json!("auto")), Mode::Off),
            // Nothing reported yet, or nothing readable.
            (Mode::Auto, None, Mode::Auto),
            (Mode::Auto, Some(json!(3)), Mode::Auto),
            (Mode::Off, Some(json!("turbo")), Mode::Off),
        ];
        for (plant, reported, expected) in rows {
            assert_eq!(recover_mode(plant, reported.as_ref()), expected, "{plant:?} {reported:?}");
        }
    }

    #[test]
    fn the_speed_and_limits_may_change_in_maintenance_and_apply_when_it_is_left() {
        let maintenance = Settings { mode: Mode::Maintenance, ..settings() };
        let changes = section(json!({"speedRpm": 2200, "limits": {"minRpm": 2000, "maxRpm": 2500}}));
        let verdict = decide(&maintenance, &changes, None);
        assert!(verdict.refusals.is_empty(), "{:?}", verdict.refusals);
        assert_eq!(verdict.settings.speed_rpm, 2200);
        let none = Actions::default();
        assert_eq!(
            command(&verdict.settings, &none, 1800),
            Command { speed_rpm: 2200, run: false, bypass_open: false }
        );
        let left = decide(&verdict.settings, &section(json!({"mode": "auto"})), None).settings;
        assert_eq!(command(&left, &none, 1800), Command { speed_rpm: 2200, run: true, bypass_open: false });
    }

    #[test]
    fn maintenance_stops_the_pump_and_holds_it_stopped() {
        use ProtectiveAction::*;
        let maintenance = Settings { mode: Mode::Maintenance, ..settings() };
        // Whatever actions are handed in, the run coil is off and the bypass closed.
        let rows: Vec<Vec<ProtectiveAction>> =
            vec![vec![], vec![ReduceSpeed], vec![Stop], vec![OpenBypass], vec![ReduceSpeed, Stop, OpenBypass]];
        for actions in rows {
            let set: Actions = actions.iter().copied().collect();
            let command = command(&maintenance, &set, 1800);
            assert!(!command.run, "{actions:?}");
            assert!(!command.bypass_open, "{actions:?}");
        }
    }

    #[test]
    fn commands_follow_mode_and_protective_actions() {
        use ProtectiveAction::*;
        let s = settings();
        let off = Settings { mode: Mode::Off, ..s };
        let manual = Settings { mode: Mode::Manual, ..s };
        let maintenance = Settings { mode: Mode::Maintenance, ..s };
        let slow = Settings { speed_rpm: 1750, ..s };
        let rows: Vec<(&str, Settings, Vec<ProtectiveAction>, Command)> = vec![
            ("auto, no action", s, vec![], Command { speed_rpm: 2900, run: true, bypass_open: false }),
            ("mode manual", manual, vec![], Command { speed_rpm: 2900, run: true, bypass_open: false }),
            ("mode off", off, vec![], Command { speed_rpm: 2900, run: false, bypass_open: false }),
            ("mode maintenance", maintenance, vec![], Command { speed_rpm: 2900, run: false, bypass_open: false }),
            ("reduce", s, vec![ReduceSpeed], Command { speed_rpm: 1800, run: true, bypass_open: false }),
            (
                "reduce never raises",
                slow,
                vec![ReduceSpeed],
                Command { speed_rpm: 1750, run: true, bypass_open: false },
            ),
            ("stop", s, vec![Stop], Command { speed_rpm: 2900, run: false, bypass_open: false }),
            ("bypass", s, vec![OpenBypass], Command { speed_rpm: 2900, run: true, bypass_open: true }),
            ("all", s, vec![ReduceSpeed, Stop, OpenBypass], Command { speed_rpm: 1800, run: false, bypass_open: true }),
        ];
        for (name, settings, actions, expected) in rows {
            let actions: Actions = actions.into_iter().collect();
            assert_eq!(command(&settings, &actions, 1800), expected, "{name}");
        }
    }

    #[test]
    fn settings_read_as_the_shadow_spells_them() {
        assert_eq!(
            Value::Object(settings().to_section()),
            json!({"mode": "auto", "speedRpm": 2900, "limits": {"minRpm": 1700, "maxRpm": 2950}})
        );
        let maintenance = Settings { mode: Mode::Maintenance, ..settings() };
        assert_eq!(maintenance.to_section()["mode"], "maintenance");
    }
}
