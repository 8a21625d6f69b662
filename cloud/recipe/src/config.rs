//! A component's effective configuration: the recipe's `DefaultConfiguration` with a
//! deployment's `configurationUpdate {merge, reset}` applied, as the nucleus does it
//! (`KernelConfigResolver.resolveConfigurationToApply`), following the developer guide's
//! "Update component configurations":
//!
//! 1. start from the configuration the component has on the device (nothing for a new one);
//! 2. apply `reset`: each JSON pointer removes that node; `""` resets the whole configuration;
//!    a pointer to a list element is ignored (only whole lists can be reset);
//! 3. fill in the recipe's defaults: a default never overwrites a value a deployment set, but
//!    does replace a value that itself came from an (older) default; where one side is an object
//!    and the other a value, the default's shape wins;
//! 4. apply `merge`: objects merge key by key, anything else (lists included) replaces.
//!
//! So "reset" means "back to the default, or gone if there is no default". Keys compare
//! case-insensitively, as in the nucleus' configuration tree; a key keeps the spelling it first
//! had. The nucleus tells defaults from deployment values by timestamp; we keep that one bit of
//! provenance per value instead, so this stays a pure function.

use serde_json::{Map, Value};

/// A deployment's configuration update for one component.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigurationUpdate {
    /// `reset`: JSON pointers of nodes to reset, applied before `merge`.
    pub reset: Vec<String>,
    /// `merge`: the object to merge in.
    pub merge: Option<Map<String, Value>>,
}

impl ConfigurationUpdate {
    /// Builds an update from the deployment API's shapes: `merge` is a serialised JSON object.
    pub fn from_deployment(merge: Option<&str>, reset: Vec<String>) -> Result<Self, ConfigError> {
        let merge = match merge {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => Some(map),
                Ok(_) => return Err(ConfigError::MergeNotObject),
                Err(e) => return Err(ConfigError::MergeNotJson(e.to_string())),
            },
        };
        Ok(Self { reset, merge })
    }
}

/// Why a configuration update cannot be applied: the deployment is wrong, fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `merge` is not JSON.
    #[error("configuration merge is not valid JSON: {0}")]
    MergeNotJson(String),
    /// `merge` is JSON but not an object.
    #[error("configuration merge must be a JSON object")]
    MergeNotObject,
    /// A `reset` entry is not a JSON pointer.
    #[error("configuration reset path {0:?} is not a JSON pointer (use \"\" or a path starting with '/')")]
    BadPointer(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Default,
    Deployment,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf(Value, Origin),
    Object(Vec<(String, Node)>),
}

/// A component's configuration as the device holds it, with which values came from the
/// recipe's defaults (so a later default may replace them) and which from deployments.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveConfiguration {
    root: Vec<(String, Node)>,
}

/// The outcome of [`EffectiveConfiguration::apply`].
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The new configuration.
    pub configuration: EffectiveConfiguration,
    /// Reset paths that were ignored, with why (the nucleus logs these and carries on).
    pub warnings: Vec<String>,
}

impl EffectiveConfiguration {
    /// The configuration of a newly deployed component with no update: its defaults.
    pub fn from_defaults(defaults: &Map<String, Value>) -> Self {
        let mut root = Vec::new();
        merge_into(&mut root, defaults, Origin::Default);
        Self { root }
    }

    /// Applies a deployment: `previous` is what the device has (`None` for a new component),
    /// `defaults` the recipe's `DefaultConfiguration` of the version being deployed.
    pub fn apply(
        previous: Option<&EffectiveConfiguration>,
        defaults: &Map<String, Value>,
        update: &ConfigurationUpdate,
    ) -> Result<Applied, ConfigError> {
        let mut root = previous.map(|p| p.root.clone()).unwrap_or_default();
        let mut warnings = Vec::new();
        for pointer in &update.reset {
            if pointer.is_empty() {
                root.clear();
                break;
            }
            let Some(body) = pointer.strip_prefix('/') else {
                return Err(ConfigError::BadPointer(pointer.clone()));
            };
            let segments: Vec<String> = body.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
            if segments.iter().any(|s| may_be_index(s)) {
                warnings
                    .push(format!("reset path {pointer:?} ignored: a list element cannot be reset, only a whole list"));
                continue;
            }
            remove(&mut root, &segments);
        }
        merge_into(&mut root, defaults, Origin::Default);
        if let Some(merge) = &update.merge {
            merge_into(&mut root, merge, Origin::Deployment);
        }
        Ok(Applied { configuration: Self { root }, warnings })
    }

    /// The configuration as a JSON object.
    pub fn to_value(&self) -> Value {
        object_value(&self.root)
    }

    /// The configuration as it is kept across restarts: `{"defaults": {…}, "deployment": {…}}`,
    /// the values that came from the recipe's defaults and those a deployment set, each as a
    /// JSON object. [`EffectiveConfiguration::from_stored`] reads it back with the provenance.
    pub fn to_stored(&self) -> Value {
        serde_json::json!({
            "defaults": object_value(&only(&self.root, Origin::Default)),
            "deployment": object_value(&only(&self.root, Origin::Deployment)),
        })
    }

    /// Reads what [`EffectiveConfiguration::to_stored`] wrote; `None` when it is not that shape.
    pub fn from_stored(stored: &Value) -> Option<Self> {
        let defaults = stored.get("defaults")?.as_object()?;
        let deployment = stored.get("deployment")?.as_object()?;
        let mut root = Vec::new();
        merge_into(&mut root, defaults, Origin::Default);
        merge_into(&mut root, deployment, Origin::Deployment);
        Some(Self { root })
    }
}

/// The leaves of `children` that have `origin` (objects left empty by that are dropped).
fn only(children: &[(String, Node)], origin: Origin) -> Vec<(String, Node)> {
    children
        .iter()
        .filter_map(|(k, node)| match node {
            Node::Leaf(_, o) if *o == origin => Some((k.clone(), node.clone())),
            Node::Leaf(..) => None,
            Node::Object(c) => {
                let kept = only(c, origin);
                // An empty object holds nothing of either origin: it goes with the defaults.
                (!kept.is_empty() || (c.is_empty() && origin == Origin::Default))
                    .then(|| (k.clone(), Node::Object(kept)))
            }
        })
        .collect()
}

/// Jackson's `JsonPointer.mayMatchElement`: a segment that reads as a list index.
fn may_be_index(segment: &str) -> bool {
    !segment.is_empty()
        && segment.len() <= 10
        && segment.bytes().all(|b| b.is_ascii_digit())
        && (segment == "0" || !segment.starts_with('0'))
        && segment.parse::<i32>().is_ok()
}

fn find(children: &[(String, Node)], key: &str) -> Option<usize> {
    children.iter().position(|(k, _)| k.to_lowercase() == key.to_lowercase())
}

fn remove(children: &mut Vec<(String, Node)>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    let Some(i) = find(children, first) else { return };
    if rest.is_empty() {
        children.remove(i);
    } else if let Node::Object(grandchildren) = &mut children[i].1 {
        remove(grandchildren, rest);
    }
}

fn merge_into(children: &mut Vec<(String, Node)>, incoming: &Map<String, Value>, origin: Origin) {
    for (key, value) in incoming {
        let existing = find(children, key);
        match (value, existing) {
            (Value::Object(map), Some(i)) => {
                if let Node::Object(grandchildren) = &mut children[i].1 {
                    merge_into(grandchildren, map, origin);
                } else {
                    // A value becomes an object: the old node goes, the new one takes its name.
                    let mut fresh = Vec::new();
                    merge_into(&mut fresh, map, origin);
                    children[i] = (key.clone(), Node::Object(fresh));
                }
            }
            (Value::Object(map), None) => {
                let mut fresh = Vec::new();
                merge_into(&mut fresh, map, origin);
                children.push((key.clone(), Node::Object(fresh)));
            }
            (leaf, Some(i)) => match &mut children[i].1 {
                Node::Leaf(current, current_origin) => {
                    // A default never overwrites what a deployment set.
                    if !(origin == Origin::Default && *current_origin == Origin::Deployment) {
                        *current = leaf.clone();
                        *current_origin = origin;
                    }
                }
                Node::Object(_) => children[i] = (key.clone(), Node::Leaf(leaf.clone(), origin)),
            },
            (leaf, None) => children.push((key.clone(), Node::Leaf(leaf.clone(), origin))),
        }
    }
}

fn object_value(children: &[(String, Node)]) -> Value {
    Value::Object(
        children
            .iter()
            .map(|(k, node)| {
                let v = match node {
                    Node::Leaf(v, _) => v.clone(),
                    Node::Object(c) => object_value(c),
                };
                (k.clone(), v)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_stored_configuration_reads_back_with_which_values_defaults_may_replace() {
        let defaults = obj(json!({"a": 1, "nested": {"keep": "d", "set": "d"}, "empty": {}}));
        let update = ConfigurationUpdate { reset: vec![], merge: Some(obj(json!({"nested": {"set": "x"}, "b": [1]}))) };
        let applied = EffectiveConfiguration::apply(None, &defaults, &update).unwrap().configuration;
        let back = EffectiveConfiguration::from_stored(&applied.to_stored()).expect("the stored shape");
        assert_eq!(back.to_value(), applied.to_value());
        // A new default replaces a default but not what the deployment set.
        let newer = obj(json!({"a": 2, "nested": {"keep": "d2", "set": "d2"}, "empty": {}}));
        let next = EffectiveConfiguration::apply(Some(&back), &newer, &ConfigurationUpdate::default()).unwrap();
        assert_eq!(
            next.configuration.to_value(),
            json!({"a": 2, "nested": {"keep": "d2", "set": "x"}, "empty": {}, "b": [1]})
        );
        assert!(EffectiveConfiguration::from_stored(&json!({"defaults": 1})).is_none());
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn dashboard_defaults() -> Map<String, Value> {
        obj(json!({
            "name": null,
            "mode": "REQUEST",
            "network": {"useHttps": true, "port": {"http": 80, "https": 443}},
            "tags": []
        }))
    }

    fn deploy(
        previous: Option<&EffectiveConfiguration>,
        defaults: &Map<String, Value>,
        reset: &[&str],
        merge: Option<Value>,
    ) -> EffectiveConfiguration {
        let update =
            ConfigurationUpdate { reset: reset.iter().map(|s| s.to_string()).collect(), merge: merge.map(obj) };
        EffectiveConfiguration::apply(previous, defaults, &update).unwrap().configuration
    }

    #[test]
    fn merge_update_follows_the_developer_guide_example() {
        let defaults = dashboard_defaults();
        let first = deploy(
            None,
            &defaults,
            &[],
            Some(json!({
                "name": "Factory 2A",
                "network": {"useHttps": false, "port": {"http": 8080}},
                "tags": ["/boiler/1/temperature", "/boiler/1/pressure", "/boiler/2/temperature", "/boiler/2/pressure"]
            })),
        );
        assert_eq!(
            first.to_value(),
            json!({
                "name": "Factory 2A",
                "mode": "REQUEST",
                "network": {"useHttps": false, "port": {"http": 8080, "https": 443}},
                "tags": ["/boiler/1/temperature", "/boiler/1/pressure", "/boiler/2/temperature", "/boiler/2/pressure"]
            })
        );

        let second = deploy(
            Some(&first),
            &defaults,
            &["/network/useHttps", "/tags"],
            Some(json!({
                "tags": ["/boiler/3/temperature", "/boiler/3/pressure", "/boiler/4/temperature", "/boiler/4/pressure"]
            })),
        );
        assert_eq!(
            second.to_value(),
            json!({
                "name": "Factory 2A",
                "mode": "REQUEST",
                "network": {"useHttps": true, "port": {"http": 8080, "https": 443}},
                "tags": ["/boiler/3/temperature", "/boiler/3/pressure", "/boiler/4/temperature", "/boiler/4/pressure"]
            })
        );
    }

    #[test]
    fn config_merge_and_reset_table() {
        let defaults = obj(json!({"a": 1, "obj": {"x": 1, "y": 2}, "list": [1, 2]}));
        let base = deploy(None, &defaults, &[], Some(json!({"a": 5, "extra": "e", "obj": {"x": 9}})));
        let cases: &[(&str, &[&str], Option<Value>, Value)] = &[
            (
                "no update keeps deployed values",
                &[],
                None,
                json!({"a": 5, "obj": {"x": 9, "y": 2}, "list": [1, 2], "extra": "e"}),
            ),
            (
                "reset to a default restores it",
                &["/a"],
                None,
                json!({"a": 1, "obj": {"x": 9, "y": 2}, "list": [1, 2], "extra": "e"}),
            ),
            (
                "reset without a default removes it",
                &["/extra"],
                None,
                json!({"a": 5, "obj": {"x": 9, "y": 2}, "list": [1, 2]}),
            ),
            (
                "reset of an object restores all of it",
                &["/obj"],
                None,
                json!({"a": 5, "obj": {"x": 1, "y": 2}, "list": [1, 2], "extra": "e"}),
            ),
            ("empty pointer resets everything", &[""], None, json!({"a": 1, "obj": {"x": 1, "y": 2}, "list": [1, 2]})),
            (
                "reset of a list element is ignored",
                &["/list/0"],
                None,
                json!({"a": 5, "obj": {"x": 9, "y": 2}, "list": [1, 2], "extra": "e"}),
            ),
            (
                "reset of a missing path does nothing",
                &["/nope/deeper"],
                None,
                json!({"a": 5, "obj": {"x": 9, "y": 2}, "list": [1, 2], "extra": "e"}),
            ),
            (
                "reset runs before merge",
                &["/a"],
                Some(json!({"a": 7})),
                json!({"a": 7, "obj": {"x": 9, "y": 2}, "list": [1, 2], "extra": "e"}),
            ),
            (
                "lists are replaced whole",
                &[],
                Some(json!({"list": [3]})),
                json!({"a": 5, "obj": {"x": 9, "y": 2}, "list": [3], "extra": "e"}),
            ),
            (
                "a value may become an object",
                &[],
                Some(json!({"a": {"deep": true}})),
                json!({"a": {"deep": true}, "obj": {"x": 9, "y": 2}, "list": [1, 2], "extra": "e"}),
            ),
            (
                "an object may become a value",
                &[],
                Some(json!({"obj": "flat"})),
                json!({"a": 5, "obj": "flat", "list": [1, 2], "extra": "e"}),
            ),
            (
                "null and empty values merge",
                &[],
                Some(json!({"a": null, "extra": {}, "new": []})),
                json!({"a": null, "obj": {"x": 9, "y": 2}, "list": [1, 2], "extra": {}, "new": []}),
            ),
            (
                "keys match case-insensitively and keep their spelling",
                &["/OBJ/X"],
                Some(json!({"A": 6})),
                json!({"a": 6, "obj": {"x": 1, "y": 2}, "list": [1, 2], "extra": "e"}),
            ),
        ];
        for (name, reset, merge, expected) in cases {
            let got = deploy(Some(&base), &defaults, reset, merge.clone());
            assert_eq!(&got.to_value(), expected, "{name}");
        }
    }

    #[test]
    fn new_defaults_replace_old_defaults_but_not_deployed_values() {
        let v1 = obj(json!({"interval": 10, "topic": "a"}));
        let v2 = obj(json!({"interval": 20, "topic": "b", "added": true}));
        let on_v1 = deploy(None, &v1, &[], Some(json!({"topic": "custom"})));
        let on_v2 = deploy(Some(&on_v1), &v2, &[], None);
        assert_eq!(on_v2.to_value(), json!({"interval": 20, "topic": "custom", "added": true}));
    }

    #[test]
    fn defaults_alone_give_the_default_configuration() {
        let defaults = dashboard_defaults();
        assert_eq!(EffectiveConfiguration::from_defaults(&defaults).to_value(), Value::Object(defaults.clone()));
        assert_eq!(deploy(None, &defaults, &[], None), EffectiveConfiguration::from_defaults(&defaults));
    }

    #[test]
    fn ignored_resets_are_reported_and_bad_pointers_rejected() {
        let defaults = obj(json!({"list": [1]}));
        let update = ConfigurationUpdate { reset: vec!["/list/0".into()], merge: None };
        let applied = EffectiveConfiguration::apply(None, &defaults, &update).unwrap();
        assert_eq!(applied.warnings.len(), 1);
        assert!(applied.warnings[0].contains("/list/0"));
        let bad = ConfigurationUpdate { reset: vec!["list".into()], merge: None };
        assert_eq!(
            EffectiveConfiguration::apply(None, &defaults, &bad).unwrap_err(),
            ConfigError::BadPointer("list".into())
        );
    }

    #[test]
    fn deployment_merge_must_be_a_json_object() {
        assert!(ConfigurationUpdate::from_deployment(Some(r#"{"a":1}"#), vec![]).is_ok());
        assert_eq!(ConfigurationUpdate::from_deployment(Some("[1]"), vec![]).unwrap_err(), ConfigError::MergeNotObject);
        assert!(matches!(ConfigurationUpdate::from_deployment(Some("{"), vec![]), Err(ConfigError::MergeNotJson(_))));
    }
}
