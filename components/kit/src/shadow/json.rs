//! JSON helpers for shadow sections: merge with the Device Shadow service's rules, leaf
//! paths, value comparison and the difference between two sections.

use serde_json::{Map, Value};

/// A leaf's path from the section root, keys joined with `.` (`limits.maxRpm`).
pub(crate) fn join(path: &[String]) -> String {
    path.join(".")
}

/// Merges `patch` into `target` as the shadow service merges an update into a section:
/// objects merge key by key, `null` removes the key, anything else (arrays included)
/// replaces the old value. An object left empty by removals is dropped.
pub(crate) fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge(existing, inner);
                    if existing.is_empty() && !inner.is_empty() {
                        target.remove(key);
                    }
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Every leaf (a value that is not an object) with its path. Empty objects carry no leaf.
pub(crate) fn leaves(section: &Map<String, Value>) -> Vec<(Vec<String>, &Value)> {
    fn walk<'a>(prefix: &mut Vec<String>, section: &'a Map<String, Value>, out: &mut Vec<(Vec<String>, &'a Value)>) {
        for (key, value) in section {
            prefix.push(key.clone());
            match value {
                Value::Object(inner) => walk(prefix, inner, out),
                leaf => out.push((prefix.clone(), leaf)),
            }
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    walk(&mut Vec::new(), section, &mut out);
    out
}

/// The value at `path`, when every step exists.
pub(crate) fn get<'a>(section: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut node = section;
    for key in parents {
        node = node.get(key)?.as_object()?;
    }
    node.get(last)
}

/// Sets `value` at `path`, creating (or replacing non-object values with) objects on the way.
pub(crate) fn set(section: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = section;
    for key in parents {
        let slot = node.entry(key.clone()).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        node = match slot {
            Value::Object(inner) => inner,
            _ => return,
        };
    }
    node.insert(last.clone(), value);
}

/// Equality as the shadow service compares values: numbers by value (`1` equals `1.0`),
/// arrays element by element, objects key by key.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// What must be merged into `current` to make every leaf of `target` present and equal.
/// Keys only in `current` are left alone (no `null`s are produced).
pub(crate) fn difference(target: &Map<String, Value>, current: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, want) in target {
        match (want, current.get(key)) {
            (Value::Object(want_inner), Some(Value::Object(have_inner))) => {
                let inner = difference(want_inner, have_inner);
                if !inner.is_empty() {
                    out.insert(key.clone(), Value::Object(inner));
                }
            }
            // An empty object adds no leaf: the service would store nothing for it.
            (Value::Object(want_inner), _) if want_inner.is_empty() => {}
            (want, Some(have)) if same(want, have) => {}
            (want, _) => {
                out.insert(key.clone(), want.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn merge_follows_the_shadow_service_rules() {
        let mut target = obj(json!({"a": 1, "limits": {"max": 3000, "min": 100}, "list": [1, 2], "gone": true}));
        merge(&mut target, &obj(json!({"limits": {"max": 2800, "min": null}, "list": [3], "gone": null, "new": "x"})));
        assert_eq!(Value::Object(target), json!({"a": 1, "limits": {"max": 2800}, "list": [3], "new": "x"}));
    }

    #[test]
    fn merge_drops_an_object_emptied_by_removals() {
        let mut target = obj(json!({"refused": {"speedRpm": {"value": 1, "reason": "r"}}}));
        merge(&mut target, &obj(json!({"refused": {"speedRpm": null}})));
        assert_eq!(Value::Object(target), json!({}));
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(same(&json!(1), &json!(1.0)));
        assert!(same(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!same(&json!(1), &json!(1.5)));
        assert!(!same(&json!(1), &json!("1")));
    }

    #[test]
    fn difference_lists_changed_and_missing_leaves_only() {
        let target = obj(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}));
        let current = obj(json!({"a": 1.0, "b": {"c": 2, "d": 4}, "extra": 9}));
        assert_eq!(Value::Object(difference(&target, &current)), json!({"b": {"d": 3}, "e": [1]}));
    }

    #[test]
    fn leaves_keep_their_paths() {
        let section = obj(json!({"mode": "auto", "limits": {"maxRpm": 3000}, "empty": {}}));
        let paths: Vec<String> = leaves(&section).into_iter().map(|(p, _)| join(&p)).collect();
        assert_eq!(paths, vec!["mode", "limits.maxRpm"]);
        assert_eq!(get(&section, &["limits".into(), "maxRpm".into()]), Some(&json!(3000)));
    }
}
