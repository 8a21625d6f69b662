//! Component configuration as the nucleus keeps it: one JSON tree per component, merged
//! by UpdateConfiguration, read by GetConfiguration, watched by SubscribeToConfigurationUpdate.
//!
//! Rules (from the nucleus's `ConfigStoreIPCEventStreamAgent` and the Greengrass
//! developer guide, "Interact with component configuration"):
//! - any component may read or watch any other component's configuration by name (there is
//!   no authorization for these operations); a component may only update its own;
//! - UpdateConfiguration merges `valueToMerge` at `keyPath`: objects merge key by key,
//!   anything else replaces the old value. Every leaf remembers the timestamp (epoch ms) of
//!   its last write; a leaf whose stored timestamp is newer than the request's is left
//!   alone, and when anything under `keyPath` is newer than the request the call fails with
//!   `FailedUpdateConditionCheckError` ("Proposed timestamp is older than the config's
//!   latest modified timestamp") after the newer-or-equal parts were applied, as the
//!   nucleus does;
//! - `accessControl` at the top level cannot be updated over IPC (`InvalidArgumentsError`);
//! - a subscriber of a key path is told about changes at or below it; each event carries
//!   the changed leaf's path relative to the component's configuration, so it can be used
//!   as the key path of a following GetConfiguration. A write that does not change a value
//!   notifies nobody (the nucleus sends no event for a timestamp-only update);
//! - subscribing to, or reading, a key that does not exist fails with `Key not found`.
//!
//! Subscribers get a bounded queue ([`EVENT_QUEUE`]); when a subscriber does not keep up,
//! further events for it are dropped (it can re-read the configuration), so a component
//! that writes in a loop cannot grow the core's memory.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Capacity of each subscriber's event queue.
pub const EVENT_QUEUE: usize = 256;

/// The top-level keys a component cannot update over IPC.
pub const RESTRICTED_KEYS: &[&str] = &["accessControl"];

/// The nucleus's message for a missing component or key.
pub const KEY_NOT_FOUND: &str = "Key not found";

/// A change notification: the changed key path, relative to the component's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// The component whose configuration changed.
    pub component: String,
    /// The changed key path.
    pub key_path: Vec<String>,
}

/// Why a configuration request failed; each maps to one IPC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No such component or key (`ResourceNotFoundError`, "Key not found").
    #[error("Key not found")]
    NotFound,
    /// The request is not valid (`InvalidArgumentsError`).
    #[error("{0}")]
    InvalidArguments(String),
    /// Something under the key path is newer than the request (`FailedUpdateConditionCheckError`).
    #[error("Proposed timestamp is older than the config's latest modified timestamp")]
    Stale,
}

#[derive(Debug, Default)]
struct Entry {
    value: Map<String, Value>,
    /// Last write time (epoch ms) of each leaf, by path.
    modtimes: HashMap<Vec<String>, i64>,
}

struct Watcher {
    component: String,
    key_path: Vec<String>,
    tx: mpsc::Sender<ConfigChange>,
}

#[derive(Default)]
struct Inner {
    components: HashMap<String, Entry>,
    watchers: Vec<Watcher>,
}

/// The configuration of every component on the core. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct ConfigStore {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for ConfigStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigStore").finish_non_exhaustive()
    }
}

impl ConfigStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a component's whole configuration (the supervisor seeds the effective
    /// configuration at start and after a deployment). A non-object value counts as `{}`.
    /// Subscribers are told about every leaf that changed.
    pub fn set_component(&self, name: &str, value: Value) {
        let new = match value {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let now = now_ms();
        let mut inner = self.lock();
        let entry = inner.components.entry(name.to_owned()).or_default();
        let mut changed = Vec::new();
        diff_leaves(&Value::Object(entry.value.clone()), &Value::Object(new.clone()), &mut Vec::new(), &mut changed);
        entry.value = new;
        entry.modtimes.clear();
        let mut leaves = Vec::new();
        collect_leaves(&Value::Object(entry.value.clone()), &mut Vec::new(), &mut leaves);
        for path in leaves {
            entry.modtimes.insert(path, now);
        }
        notify(&mut inner, name, changed);
    }

    /// Removes a component's configuration.
    pub fn remove_component(&self, name: &str) {
        let mut inner = self.lock();
        inner.components.remove(name);
        inner.watchers.retain(|w| w.component != name);
    }

    /// The value at `key_path` of a component's configuration (the whole configuration for
    /// an empty path); `None` when the component or the key does not exist.
    pub fn get(&self, name: &str, key_path: &[String]) -> Option<Value> {
        let inner = self.lock();
        let entry = inner.components.get(name)?;
        match lookup(&entry.value, key_path)? {
            Some(v) => Some(v.clone()),
            None => Some(Value::Object(entry.value.clone())),
        }
    }

    /// UpdateConfiguration: merges `value_to_merge` at `key_path` of `name`'s configuration
    /// with the request's `timestamp_ms` (epoch milliseconds).
    pub fn update(
        &self,
        name: &str,
        key_path: &[String],
        value_to_merge: &Value,
        timestamp_ms: i64,
    ) -> Result<(), ConfigError> {
        let restricted = match key_path.first() {
            Some(first) => RESTRICTED_KEYS.contains(&first.as_str()),
            None => value_to_merge.as_object().is_some_and(|m| m.keys().any(|k| RESTRICTED_KEYS.contains(&k.as_str()))),
        };
        if restricted {
            return Err(ConfigError::InvalidArguments(format!(
                "Config update is not allowed for following fields {RESTRICTED_KEYS:?}"
            )));
        }
        let mut inner = self.lock();
        let Some(entry) = inner.components.get_mut(name) else {
            return Err(ConfigError::InvalidArguments(format!("Component config not found for component {name}")));
        };
        let mut changed = Vec::new();
        let existing_leaf = matches!(lookup(&entry.value, key_path), Some(Some(v)) if !v.is_object());
        if existing_leaf || (!key_path.is_empty() && !value_to_merge.is_object()) {
            // A leaf at the key path: the value replaces it (the nucleus merges `{leaf: value}`
            // into the parent).
            let (parent_path, last) = key_path.split_at(key_path.len() - 1);
            let mut patch = Map::new();
            patch.insert(last[0].clone(), value_to_merge.clone());
            let parent = ensure_object(&mut entry.value, parent_path);
            merge(parent, &patch, &mut parent_path.to_vec(), timestamp_ms, &mut entry.modtimes, &mut changed);
        } else {
            let Some(patch) = value_to_merge.as_object() else {
                return Err(ConfigError::InvalidArguments("valueToMerge must be an object at the root".into()));
            };
            let target = ensure_object(&mut entry.value, key_path);
            merge(target, patch, &mut key_path.to_vec(), timestamp_ms, &mut entry.modtimes, &mut changed);
        }
        let newest =
            entry.modtimes.iter().filter(|(p, _)| p.starts_with(key_path)).map(|(_, t)| *t).max().unwrap_or(i64::MIN);
        notify(&mut inner, name, changed);
        if timestamp_ms < newest {
            return Err(ConfigError::Stale);
        }
        Ok(())
    }

    /// SubscribeToConfigurationUpdate: a queue of changes at or below `key_path` of
    /// `name`'s configuration. Fails with [`ConfigError::NotFound`] when the key does not exist.
    pub fn subscribe(&self, name: &str, key_path: &[String]) -> Result<mpsc::Receiver<ConfigChange>, ConfigError> {
        let mut inner = self.lock();
        let entry = inner.components.get(name).ok_or(ConfigError::NotFound)?;
        lookup(&entry.value, key_path).ok_or(ConfigError::NotFound)?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        inner.watchers.retain(|w| !w.tx.is_closed());
        inner.watchers.push(Watcher { component: name.to_owned(), key_path: key_path.to_vec(), tx });
        Ok(rx)
    }
}

fn notify(inner: &mut Inner, component: &str, changed: Vec<Vec<String>>) {
    if changed.is_empty() {
        return;
    }
    inner.watchers.retain(|w| !w.tx.is_closed());
    for w in inner.watchers.iter().filter(|w| w.component == component) {
        for path in &changed {
            // At or below the watched path; a change above it (a subtree replaced) counts too.
            if path.starts_with(&w.key_path) || w.key_path.starts_with(path) {
                // Full queue: the subscriber is behind; drop (documented in the module).
                let _ = w.tx.try_send(ConfigChange { component: component.to_owned(), key_path: path.clone() });
            }
        }
    }
}

/// The value at a non-empty `path`; `Some(None)` stands for the root (empty path).
fn lookup<'a>(root: &'a Map<String, Value>, path: &[String]) -> Option<Option<&'a Value>> {
    let Some((first, rest)) = path.split_first() else {
        return Some(None);
    };
    let mut node = root.get(first)?;
    for k in rest {
        node = node.as_object()?.get(k)?;
    }
    Some(Some(node))
}

/// The object at `path`, created (replacing leaves on the way) when missing.
fn ensure_object<'a>(root: &'a mut Map<String, Value>, path: &[String]) -> &'a mut Map<String, Value> {
    let mut node = root;
    for k in path {
        let slot = node.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        node = slot.as_object_mut().expect("just made an object");
    }
    node
}

fn merge(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    path: &mut Vec<String>,
    ts: i64,
    modtimes: &mut HashMap<Vec<String>, i64>,
    changed: &mut Vec<Vec<String>>,
) {
    for (k, v) in patch {
        path.push(k.clone());
        match v {
            Value::Object(sub) => {
                let newer_leaf = modtimes.get(path.as_slice()).is_some_and(|t| *t > ts);
                if !newer_leaf {
                    let slot = target.entry(k.clone()).or_insert_with(|| Value::Object(Map::new()));
                    if !slot.is_object() {
                        modtimes.remove(path.as_slice());
                        *slot = Value::Object(Map::new());
                        changed.push(path.clone());
                    }
                    if let Value::Object(m) = slot {
                        merge(m, sub, path, ts, modtimes, changed);
                    }
                }
            }
            leaf => {
                let newer = modtimes.get(path.as_slice()).is_some_and(|t| *t > ts);
                if !newer {
                    let old = target.insert(k.clone(), leaf.clone());
                    if let Some(Value::Object(_)) = &old {
                        modtimes.retain(|p, _| !p.starts_with(path.as_slice()));
                    }
                    modtimes.insert(path.clone(), ts);
                    if old.as_ref() != Some(leaf) {
                        changed.push(path.clone());
                    }
                }
            }
        }
        path.pop();
    }
}

fn collect_leaves(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                path.push(k.clone());
                collect_leaves(c, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn diff_leaves(old: &Value, new: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, bv) in b {
                path.push(k.clone());
                match a.get(k) {
                    Some(av) => diff_leaves(av, bv, path, out),
                    None => collect_leaves(bv, path, out),
                }
                path.pop();
            }
            for (k, av) in a {
                if !b.contains_key(k) {
                    path.push(k.clone());
                    collect_leaves(av, path, out);
                    path.pop();
                }
            }
        }
        (a, b) if a == b => {}
        _ => out.push(path.clone()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn merges_notify_subscribers_at_or_above_the_changed_leaf() {
        let store = ConfigStore::new();
        store.set_component("A", json!({"a": {"b": 1, "c": 2}, "d": 3}));
        let mut root = store.subscribe("A", &[]).unwrap();
        let mut a = store.subscribe("A", &path(&["a"])).unwrap();
        let mut d = store.subscribe("A", &path(&["d"])).unwrap();
        assert_eq!(store.subscribe("A", &path(&["nope"])).err(), Some(ConfigError::NotFound));
        let t = now_ms() + 1000;
        store.update("A", &path(&["a"]), &json!({"b": 10, "c": 2, "e": {"f": true}}), t).unwrap();
        assert_eq!(store.get("A", &[]), Some(json!({"a": {"b": 10, "c": 2, "e": {"f": true}}, "d": 3})));
        for rx in [&mut root, &mut a] {
            assert_eq!(rx.try_recv().unwrap().key_path, path(&["a", "b"]));
            assert_eq!(rx.try_recv().unwrap().key_path, path(&["a", "e", "f"]));
            assert!(rx.try_recv().is_err(), "an unchanged value notifies nobody");
        }
        assert!(d.try_recv().is_err());
        // A leaf at the key path is replaced by the value.
        store.update("A", &path(&["d"]), &json!([1, 2]), t).unwrap();
        assert_eq!(d.try_recv().unwrap().key_path, path(&["d"]));
        assert_eq!(store.get("A", &path(&["d"])), Some(json!([1, 2])));
    }

    #[test]
    fn older_timestamps_lose_and_restricted_keys_are_refused() {
        let store = ConfigStore::new();
        store.set_component("A", json!({"k": 1, "accessControl": {}}));
        let t = now_ms() + 10_000;
        store.update("A", &[], &json!({"k": 2}), t).unwrap();
        assert_eq!(store.update("A", &[], &json!({"k": 3, "new": 1}), t - 1), Err(ConfigError::Stale));
        // The newer leaf is kept; the new one was written (as the nucleus does).
        assert_eq!(store.get("A", &[]), Some(json!({"k": 2, "accessControl": {}, "new": 1})));
        assert!(matches!(
            store.update("A", &[], &json!({"accessControl": {}}), t),
            Err(ConfigError::InvalidArguments(_))
        ));
        assert!(matches!(
            store.update("A", &path(&["accessControl"]), &json!({}), t),
            Err(ConfigError::InvalidArguments(_))
        ));
        assert!(matches!(store.update("B", &[], &json!({}), t), Err(ConfigError::InvalidArguments(_))));
        assert_eq!(store.get("B", &[]), None);
    }
}
