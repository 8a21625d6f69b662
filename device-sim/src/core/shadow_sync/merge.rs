//! The pure rules of shadow sync: how a local shadow and its cloud twin are reconciled.
//! No I/O: the sync task ([`super`]) reads both sides, asks [`plan_full_sync`] what to
//! write, writes it, and stores the returned base.
//!
//! The rules follow the Greengrass developer guide, "Sync local device shadows with AWS IoT
//! Core" → "Shadow merge conflict behavior", and fill in what it leaves open. They are
//! written out for users in `device-sim/README.md` ("Shadow sync rules"); each rule has a
//! test below named after it.
//!
//! A shadow's *state* here is the JSON object `{"desired": {…}, "reported": {…}}` (either
//! section may be missing); `None` means the shadow does not exist on that side. The *base*
//! is the state both sides agreed on at the last sync (for one-way sync, the source side's
//! state at the last sync); a field "changed on a side" when it differs from the base.

use serde_json::{Map, Value};

/// Which way changes flow (ShadowManager's `synchronize.direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways (the default): desired conflicts go to the cloud, reported to the device.
    #[default]
    BetweenDeviceAndCloud,
    /// Device → cloud only: the local shadow is never written by sync.
    DeviceToCloud,
    /// Cloud → device only: the cloud shadow is never written by sync.
    CloudToDevice,
}

impl Direction {
    /// Parses the configuration value (`betweenDeviceAndCloud`, `deviceToCloud`, `cloudToDevice`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "betweenDeviceAndCloud" => Some(Self::BetweenDeviceAndCloud),
            "deviceToCloud" => Some(Self::DeviceToCloud),
            "cloudToDevice" => Some(Self::CloudToDevice),
            _ => None,
        }
    }
    /// Whether local changes go to the cloud.
    pub fn device_to_cloud(self) -> bool {
        self != Self::CloudToDevice
    }
    /// Whether cloud changes come to the device.
    pub fn cloud_to_device(self) -> bool {
        self != Self::DeviceToCloud
    }
}

/// The side whose value is kept when both changed the same field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The local shadow (ShadowManager's store).
    Local,
    /// The cloud shadow (AWS IoT Device Shadow service).
    Cloud,
}

/// What to do to one side.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Leave it.
    Nothing,
    /// Send this update document (`{"state": {…}}`, `null` deletes a field).
    Update(Value),
    /// Delete the shadow.
    Delete,
}

/// The outcome of a full sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// What to write locally.
    pub local: Write,
    /// What to write to the cloud.
    pub cloud: Write,
    /// The base to store once both writes succeeded.
    pub base: Option<Value>,
}

/// The winner of a conflict in `section` (`desired` or `reported`) for `direction`.
pub fn winner(direction: Direction, section: &str) -> Side {
    match direction {
        Direction::DeviceToCloud => Side::Local,
        Direction::CloudToDevice => Side::Cloud,
        Direction::BetweenDeviceAndCloud if section == "desired" => Side::Cloud,
        Direction::BetweenDeviceAndCloud => Side::Local,
    }
}

/// Three-way merge of one value: a side that did not change from `base` takes the other
/// side's value; objects merge key by key; anything else (scalars, arrays — arrays are
/// replaced whole, as in the shadow service) goes to `winner` when both changed.
pub fn merge3(base: Option<&Value>, local: Option<&Value>, cloud: Option<&Value>, winner: Side) -> Option<Value> {
    if local == cloud {
        return local.cloned();
    }
    if local == base {
        return cloud.cloned();
    }
    if cloud == base {
        return local.cloned();
    }
    match (local, cloud) {
        (Some(Value::Object(l)), Some(Value::Object(c))) => {
            let b = base.and_then(Value::as_object);
            let mut out = Map::new();
            for key in l.keys().chain(c.keys().filter(|k| !l.contains_key(*k))) {
                let merged = merge3(b.and_then(|b| b.get(key)), l.get(key), c.get(key), winner);
                if let Some(v) = merged {
                    out.insert(key.clone(), v);
                }
            }
            Some(Value::Object(out))
        }
        _ => match winner {
            Side::Local => local.cloned(),
            Side::Cloud => cloud.cloned(),
        },
    }
}

/// Merges two shadow states section by section, each section with its own winner.
pub fn merge_state(base: Option<&Value>, local: Option<&Value>, cloud: Option<&Value>, direction: Direction) -> Value {
    let mut out = Map::new();
    for section in ["desired", "reported"] {
        let pick = |v: Option<&Value>| v.and_then(|v| section_of(v, section)).cloned();
        let (b, l, c) = (pick(base), pick(local), pick(cloud));
        if let Some(v) = merge3(b.as_ref(), l.as_ref(), c.as_ref(), winner(direction, section)) {
            out.insert(section.to_owned(), v);
        }
    }
    Value::Object(out)
}

/// A state's section, `None` when missing, `null` or empty (the shadow service treats the
/// three alike: an empty section is not stored).
fn section_of<'a>(state: &'a Value, section: &str) -> Option<&'a Value> {
    state.get(section).filter(|v| !v.is_null() && v.as_object().is_none_or(|m| !m.is_empty()))
}

/// The update that turns `from` into `to` (`null` for removed fields), or `None` when they
/// are equal. Objects are diffed key by key, anything else is replaced.
pub fn diff(from: &Value, to: &Value) -> Option<Value> {
    if from == to {
        return None;
    }
    match (from, to) {
        (Value::Object(f), Value::Object(t)) => {
            let mut out = Map::new();
            for (k, tv) in t {
                match f.get(k) {
                    Some(fv) => {
                        if let Some(d) = diff(fv, tv) {
                            out.insert(k.clone(), d);
                        }
                    }
                    None => {
                        out.insert(k.clone(), tv.clone());
                    }
                }
            }
            for k in f.keys().filter(|k| !t.contains_key(*k)) {
                out.insert(k.clone(), Value::Null);
            }
            Some(Value::Object(out))
        }
        _ => Some(to.clone()),
    }
}

/// The update document (`{"state": …}`) that turns state `from` into state `to`.
pub fn update_between(from: Option<&Value>, to: &Value) -> Option<Value> {
    let empty = Value::Object(Map::new());
    let norm = |v: &Value| -> Value {
        let mut m = Map::new();
        for s in ["desired", "reported"] {
            if let Some(x) = section_of(v, s) {
                m.insert(s.to_owned(), x.clone());
            }
        }
        Value::Object(m)
    };
    let from = norm(from.unwrap_or(&empty));
    let to = norm(to);
    diff(&from, &to).map(|state| serde_json::json!({ "state": state }))
}

/// Decides a full sync (at start, after every reconnect, after a version conflict, and on each
/// period with the periodic strategy). See the module docs and the README for the rules.
pub fn plan_full_sync(
    base: Option<&Value>,
    local: Option<&Value>,
    cloud: Option<&Value>,
    direction: Direction,
) -> Plan {
    let update = |from: Option<&Value>, to: &Value| update_between(from, to).map_or(Write::Nothing, Write::Update);
    match direction {
        Direction::BetweenDeviceAndCloud => match (local, cloud) {
            (None, None) => Plan { local: Write::Nothing, cloud: Write::Nothing, base: None },
            // Deleted on one side: the delete wins if the other side did not change since the
            // last sync; otherwise the change wins and the shadow is recreated.
            (None, Some(c)) => {
                if base.is_some() && state_eq(base, Some(c)) {
                    Plan { local: Write::Nothing, cloud: Write::Delete, base: None }
                } else {
                    Plan { local: update(None, c), cloud: Write::Nothing, base: Some(c.clone()) }
                }
            }
            (Some(l), None) => {
                if base.is_some() && state_eq(base, Some(l)) {
                    Plan { local: Write::Delete, cloud: Write::Nothing, base: None }
                } else {
                    Plan { local: Write::Nothing, cloud: update(None, l), base: Some(l.clone()) }
                }
            }
            (Some(l), Some(c)) => {
                let merged = merge_state(base, Some(l), Some(c), direction);
                Plan { local: update(Some(l), &merged), cloud: update(Some(c), &merged), base: Some(merged) }
            }
        },
        Direction::DeviceToCloud => match (local, cloud) {
            (None, None) => Plan { local: Write::Nothing, cloud: Write::Nothing, base: None },
            (None, Some(_)) => Plan { local: Write::Nothing, cloud: Write::Delete, base: None },
            (Some(l), None) => Plan { local: Write::Nothing, cloud: update(None, l), base: Some(l.clone()) },
            (Some(l), Some(c)) => {
                // Fields the device did not change since the last sync keep the cloud's value.
                let merged = merge_state(base, Some(l), Some(c), direction);
                Plan { local: Write::Nothing, cloud: update(Some(c), &merged), base: Some(l.clone()) }
            }
        },
        Direction::CloudToDevice => match (local, cloud) {
            (None, None) => Plan { local: Write::Nothing, cloud: Write::Nothing, base: None },
            (Some(_), None) => Plan { local: Write::Delete, cloud: Write::Nothing, base: None },
            (None, Some(c)) => Plan { local: update(None, c), cloud: Write::Nothing, base: Some(c.clone()) },
            (Some(l), Some(c)) => {
                let merged = merge_state(base, Some(l), Some(c), direction);
                Plan { local: update(Some(l), &merged), cloud: Write::Nothing, base: Some(c.clone()) }
            }
        },
    }
}

/// Two states are the same shadow content (missing and empty sections are equal).
pub fn state_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => update_between(Some(a), b).is_none(),
        (None, None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOTH: Direction = Direction::BetweenDeviceAndCloud;

    fn some(v: Value) -> Option<Value> {
        Some(v)
    }

    #[test]
    fn a_field_changed_on_one_side_only_takes_that_sides_value() {
        let base = json!({"desired": {"speed": 1000, "mode": "auto"}, "reported": {"speed": 1000}});
        let local = json!({"desired": {"speed": 1000, "mode": "auto"}, "reported": {"speed": 1200}});
        let cloud = json!({"desired": {"speed": 1500, "mode": "auto"}, "reported": {"speed": 1000}});
        let plan = plan_full_sync(Some(&base), Some(&local), Some(&cloud), BOTH);
        let merged = json!({"desired": {"speed": 1500, "mode": "auto"}, "reported": {"speed": 1200}});
        assert_eq!(plan.base, some(merged));
        assert_eq!(plan.local, Write::Update(json!({"state": {"desired": {"speed": 1500}}})));
        assert_eq!(plan.cloud, Write::Update(json!({"state": {"reported": {"speed": 1200}}})));
    }

    #[test]
    fn desired_conflicts_go_to_the_cloud_and_reported_conflicts_to_the_device() {
        let base = json!({"desired": {"speed": 1000}, "reported": {"speed": 1000}});
        let local = json!({"desired": {"speed": 1100}, "reported": {"speed": 1100}});
        let cloud = json!({"desired": {"speed": 1500}, "reported": {"speed": 900}});
        let plan = plan_full_sync(Some(&base), Some(&local), Some(&cloud), BOTH);
        assert_eq!(plan.base, some(json!({"desired": {"speed": 1500}, "reported": {"speed": 1100}})));
        assert_eq!(plan.local, Write::Update(json!({"state": {"desired": {"speed": 1500}}})));
        assert_eq!(plan.cloud, Write::Update(json!({"state": {"reported": {"speed": 1100}}})));
    }

    #[test]
    fn nested_objects_merge_field_by_field_and_arrays_are_replaced_whole() {
        let base = json!({"desired": {"limits": {"max": 3000, "min": 0}, "tags": [1, 2]}});
        let local = json!({"desired": {"limits": {"max": 2800, "min": 0}, "tags": [1, 2, 3]}});
        let cloud = json!({"desired": {"limits": {"max": 3000, "min": 500}, "tags": [9]}});
        let plan = plan_full_sync(Some(&base), Some(&local), Some(&cloud), BOTH);
        assert_eq!(plan.base, some(json!({"desired": {"limits": {"max": 2800, "min": 500}, "tags": [9]}})));
    }

    #[test]
    fn a_field_removed_on_one_side_is_removed_on_the_other() {
        let base = json!({"reported": {"a": 1, "b": 2}});
        let local = json!({"reported": {"a": 1}});
        let plan = plan_full_sync(Some(&base), Some(&local), Some(&base), BOTH);
        assert_eq!(plan.cloud, Write::Update(json!({"state": {"reported": {"b": null}}})));
        assert_eq!(plan.local, Write::Nothing);
    }

    #[test]
    fn equal_sides_need_no_write() {
        let s = json!({"desired": {"a": 1}, "reported": {}});
        let same = json!({"desired": {"a": 1}});
        let plan = plan_full_sync(None, Some(&s), Some(&same), BOTH);
        assert_eq!((plan.local, plan.cloud), (Write::Nothing, Write::Nothing));
    }

    #[test]
    fn first_sync_without_base_merges_with_the_conflict_rules() {
        let local = json!({"desired": {"a": 1}, "reported": {"a": 1, "l": true}});
        let cloud = json!({"desired": {"a": 2, "c": true}, "reported": {"a": 0}});
        let plan = plan_full_sync(None, Some(&local), Some(&cloud), BOTH);
        assert_eq!(plan.base, some(json!({"desired": {"a": 2, "c": true}, "reported": {"a": 1, "l": true}})));
    }

    #[test]
    fn a_shadow_on_one_side_only_is_copied_to_the_other() {
        let c = json!({"desired": {"a": 1}});
        let plan = plan_full_sync(None, None, Some(&c), BOTH);
        assert_eq!(plan.local, Write::Update(json!({"state": {"desired": {"a": 1}}})));
        let plan = plan_full_sync(None, Some(&c), None, BOTH);
        assert_eq!(plan.cloud, Write::Update(json!({"state": {"desired": {"a": 1}}})));
    }

    #[test]
    fn a_delete_wins_when_the_other_side_did_not_change() {
        let base = json!({"desired": {"a": 1}});
        let plan = plan_full_sync(Some(&base), None, Some(&base), BOTH);
        assert_eq!((plan.local, plan.cloud, plan.base), (Write::Nothing, Write::Delete, None));
        let plan = plan_full_sync(Some(&base), Some(&base), None, BOTH);
        assert_eq!((plan.local, plan.cloud, plan.base), (Write::Delete, Write::Nothing, None));
    }

    #[test]
    fn a_change_wins_over_a_delete_and_recreates_the_shadow() {
        let base = json!({"desired": {"a": 1}});
        let changed = json!({"desired": {"a": 2}});
        let plan = plan_full_sync(Some(&base), None, Some(&changed), BOTH);
        assert_eq!(plan.local, Write::Update(json!({"state": {"desired": {"a": 2}}})));
        assert_eq!(plan.cloud, Write::Nothing);
        assert_eq!(plan.base, Some(changed));
    }

    #[test]
    fn device_to_cloud_never_writes_locally_and_overrides_conflicts_in_the_cloud() {
        let d = Direction::DeviceToCloud;
        let base = json!({"desired": {"a": 1, "b": 1}});
        let local = json!({"desired": {"a": 2, "b": 1}});
        let cloud = json!({"desired": {"a": 3, "b": 5}});
        let plan = plan_full_sync(Some(&base), Some(&local), Some(&cloud), d);
        assert_eq!(plan.local, Write::Nothing);
        // a: device changed it (wins); b: only the cloud changed it (kept in the cloud).
        assert_eq!(plan.cloud, Write::Update(json!({"state": {"desired": {"a": 2}}})));
        assert_eq!(plan.base, Some(local.clone()), "the base follows the source side");
        assert_eq!(plan_full_sync(None, None, Some(&cloud), d).cloud, Write::Delete);
    }

    #[test]
    fn cloud_to_device_never_writes_the_cloud_and_overrides_conflicts_locally() {
        let d = Direction::CloudToDevice;
        let base = json!({"reported": {"a": 1}});
        let local = json!({"reported": {"a": 2}});
        let cloud = json!({"reported": {"a": 3}});
        let plan = plan_full_sync(Some(&base), Some(&local), Some(&cloud), d);
        assert_eq!(plan.cloud, Write::Nothing);
        assert_eq!(plan.local, Write::Update(json!({"state": {"reported": {"a": 3}}})));
        assert_eq!(plan.base, Some(cloud.clone()));
        assert_eq!(plan_full_sync(None, Some(&local), None, d).local, Write::Delete);
    }

    #[test]
    fn diff_sets_new_fields_and_nulls_removed_ones() {
        assert_eq!(
            diff(&json!({"a": 1, "b": {"c": 1}}), &json!({"b": {"c": 2}, "d": [1]})).unwrap(),
            json!({"b": {"c": 2}, "d": [1], "a": null})
        );
        assert_eq!(diff(&json!({"a": 1}), &json!({"a": 1})), None);
    }

    #[test]
    fn direction_names_parse_as_shadow_manager_spells_them() {
        assert_eq!(Direction::parse("deviceToCloud"), Some(Direction::DeviceToCloud));
        assert_eq!(Direction::parse("cloudToDevice"), Some(Direction::CloudToDevice));
        assert_eq!(Direction::parse("betweenDeviceAndCloud"), Some(Direction::BetweenDeviceAndCloud));
        assert_eq!(Direction::parse("both"), None);
    }
}
