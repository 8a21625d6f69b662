//! The environment layer of a component's configuration: recipe defaults, then deployment
//! merges (what GetConfiguration returns), then environment variables the core sets for its
//! components, then the command line. A site-specific value that a thing-group deployment
//! cannot carry (every core of the group gets the same merge) comes from the core's
//! environment, as the nucleus's `setenv` configuration gives every component.

use serde_json::Value;

/// `configuration` with the value at each JSON pointer of `overrides` replaced by the
/// environment variable paired with it, when `lookup` finds that variable non-empty. Missing
/// objects on the way are created; a pointer through a non-object is left alone (the
/// component's own validation then reports the configuration as it is).
pub fn overlay(configuration: &Value, overrides: &[(&str, &str)], lookup: impl Fn(&str) -> Option<String>) -> Value {
    let mut out = configuration.clone();
    for (pointer, variable) in overrides {
        let Some(text) = lookup(variable).filter(|t| !t.is_empty()) else { continue };
        let mut keys = pointer.split('/').skip(1).map(|k| k.replace("~1", "/").replace("~0", "~")).peekable();
        let mut node = &mut out;
        while let Some(key) = keys.next() {
            let Some(object) = node.as_object_mut() else { break };
            if keys.peek().is_none() {
                object.insert(key, Value::String(text.clone()));
                break;
            }
            node = object.entry(key).or_insert_with(|| Value::Object(Default::default()));
        }
    }
    out
}

/// [`overlay`] with the process's environment.
pub fn overlay_from_env(configuration: &Value, overrides: &[(&str, &str)]) -> Value {
    overlay(configuration, overrides, |name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_environment_variable_replaces_the_merged_value_and_an_absent_or_empty_one_does_not() {
        let config = json!({"modbus": {"address": "127.0.0.1:5020", "unitId": 1}, "flat": "x"});
        let overrides = [("/modbus/address", "ADDR"), ("/flat", "FLAT"), ("/made/new", "NEW")];
        let cases: [(&[(&str, &str)], Value); 3] = [
            (&[], config.clone()),
            (&[("ADDR", "")], config.clone()),
            (
                &[("ADDR", "127.0.0.1:40000"), ("FLAT", "y"), ("NEW", "z")],
                json!({"modbus": {"address": "127.0.0.1:40000", "unitId": 1}, "flat": "y", "made": {"new": "z"}}),
            ),
        ];
        for (env, wanted) in cases {
            let got =
                overlay(&config, &overrides, |name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()));
            assert_eq!(got, wanted, "environment {env:?}");
        }
    }

    #[test]
    fn a_pointer_through_a_non_object_leaves_the_configuration_as_it_is() {
        let config = json!({"modbus": "not an object"});
        let got = overlay(&config, &[("/modbus/address", "ADDR")], |_| Some("h:1".into()));
        assert_eq!(got, config);
    }
}
