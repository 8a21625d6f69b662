//! Recipe variables: `{artifacts:path}`, `{configuration:/json/pointer}`, … expanded as the
//! nucleus expands them (`KernelConfigResolver`), as a pure function of an
//! [`InterpolationContext`].
//!
//! Rules (recipe reference, "Recipe variables", and the nucleus):
//! - a variable is `{namespace:key}` for this component, or `{Component:namespace:key}` for a
//!   *direct* dependency; names and namespaces are letters, digits, `_`, `.` and `-`; the key
//!   runs to the closing brace and contains no `:` or `}`;
//! - namespaces and keys: `artifacts:path`, `artifacts:decompressedPath`, `work:path`,
//!   `configuration:<JSON pointer>`, `kernel:rootPath`, `iot:thingName` (all case-sensitive);
//! - `configuration` renders a string as itself, another scalar as its JSON text (`null` for
//!   null), an object or list as compact JSON with keys sorted (the nucleus serialises with
//!   sorted keys); the JSON pointer is case-sensitive;
//! - anything not resolvable is left exactly as written (the nucleus logs an error and goes
//!   on): an unknown namespace or key, a pointer to nothing, a component that is not a direct
//!   dependency;
//! - in component configuration (only when the nucleus option `interpolateComponentConfiguration`
//!   is true, default false) and in merge updates, every variable except `configuration` is
//!   expanded ([`Scope::Configuration`]).
//!
//! Unlike the nucleus, which makes one pass for this component's variables and then a second
//! for dependencies' (so text inserted by the first pass can be expanded again), we expand in
//! a single left-to-right pass: inserted text is never re-read.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::lifecycle::Lifecycle;

/// Which variables may be expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Lifecycle scripts, `Skipif` and `Setenv`: every variable.
    Lifecycle,
    /// Component configuration values and merge updates: all but `configuration`.
    Configuration,
}

/// Where a component's files live on the core device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentLocations {
    /// `{artifacts:path}`.
    pub artifacts_path: String,
    /// `{artifacts:decompressedPath}`.
    pub artifacts_decompressed_path: String,
    /// `{work:path}`.
    pub work_path: String,
}

impl ComponentLocations {
    /// The nucleus layout under `root`: `packages/artifacts/<name>/<version>`,
    /// `packages/artifacts-unarchived/<name>/<version>`, `work/<name>`.
    pub fn under_root(root: &Path, name: &str, version: &str) -> Self {
        let show = |p: std::path::PathBuf| p.display().to_string();
        Self {
            artifacts_path: show(root.join("packages").join("artifacts").join(name).join(version)),
            artifacts_decompressed_path: show(
                root.join("packages").join("artifacts-unarchived").join(name).join(version),
            ),
            work_path: show(root.join("work").join(name)),
        }
    }
}

/// What one component exposes to recipe variables.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentVariables {
    /// Its file locations.
    pub locations: ComponentLocations,
    /// Its effective configuration (a JSON object).
    pub configuration: Value,
}

/// Everything recipe variables of one component can refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct InterpolationContext {
    /// This component's variables.
    pub own: ComponentVariables,
    /// The component's direct dependencies, by name. Only these can be named in
    /// `{Component:…}` variables; put nothing else here.
    pub dependencies: BTreeMap<String, ComponentVariables>,
    /// `{kernel:rootPath}`.
    pub kernel_root_path: String,
    /// `{iot:thingName}`.
    pub thing_name: String,
}

/// The result of an expansion, with the variables that were left as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded text.
    pub text: String,
    /// Each variable left unexpanded, as written (for a warning).
    pub unresolved: Vec<String>,
}

enum Placeholder<'a> {
    Own { namespace: &'a str, key: &'a str },
    Other { component: &'a str, namespace: &'a str, key: &'a str },
}

impl InterpolationContext {
    /// Expands the variables in `text`.
    pub fn expand(&self, text: &str, scope: Scope) -> String {
        self.expand_reporting(text, scope).text
    }

    /// Expands the variables in `text` and lists those left as written.
    pub fn expand_reporting(&self, text: &str, scope: Scope) -> Expansion {
        let mut out = String::with_capacity(text.len());
        let mut unresolved = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let candidate = &rest[open..];
            match parse_placeholder(candidate) {
                Some((len, placeholder)) => {
                    let written = &candidate[..len];
                    match self.resolve(&placeholder, scope) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str(written);
                            unresolved.push(written.to_owned());
                        }
                    }
                    rest = &candidate[len..];
                }
                None => {
                    out.push('{');
                    rest = &candidate[1..];
                }
            }
        }
        out.push_str(rest);
        Expansion { text: out, unresolved }
    }

    /// The lifecycle with variables expanded in scripts, `Skipif` arguments and `Setenv` values.
    pub fn expand_lifecycle(&self, lifecycle: &Lifecycle) -> Lifecycle {
        lifecycle.map_text(&|text| self.expand(text, Scope::Lifecycle))
    }

    /// A configuration with variables expanded in every string value (keys untouched), for
    /// `interpolateComponentConfiguration`.
    pub fn expand_configuration(&self, configuration: &Value) -> Value {
        match configuration {
            Value::String(s) => Value::String(self.expand(s, Scope::Configuration)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.expand_configuration(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.expand_configuration(v))).collect())
            }
            other => other.clone(),
        }
    }

    fn resolve(&self, placeholder: &Placeholder<'_>, scope: Scope) -> Option<String> {
        let (vars, namespace, key) = match placeholder {
            Placeholder::Own { namespace, key } => (&self.own, *namespace, *key),
            Placeholder::Other { component, namespace, key } => (self.dependencies.get(*component)?, *namespace, *key),
        };
        match (namespace, key) {
            ("configuration", pointer) if scope == Scope::Lifecycle => vars.configuration.pointer(pointer).map(render),
            ("artifacts", "path") => Some(vars.locations.artifacts_path.clone()),
            ("artifacts", "decompressedPath") => Some(vars.locations.artifacts_decompressed_path.clone()),
            ("work", "path") => Some(vars.locations.work_path.clone()),
            ("kernel", "rootPath") => Some(self.kernel_root_path.clone()),
            ("iot", "thingName") => Some(self.thing_name.clone()),
            _ => None,
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Reads `{a:key}` or `{a:b:key}` at the start of `s`; returns its length in bytes.
fn parse_placeholder(s: &str) -> Option<(usize, Placeholder<'_>)> {
    let body = s.strip_prefix('{')?;
    let name_len = body.bytes().take_while(|b| is_name_byte(*b)).count();
    if name_len == 0 || body.as_bytes().get(name_len) != Some(&b':') {
        return None;
    }
    let first = &body[..name_len];
    let after = &body[name_len + 1..];
    let stop = after.find([':', '}'])?;
    if after.as_bytes()[stop] == b'}' {
        let key = &after[..stop];
        return Some((1 + name_len + 1 + stop + 1, Placeholder::Own { namespace: first, key }));
    }
    let namespace = &after[..stop];
    if namespace.is_empty() || !namespace.bytes().all(is_name_byte) {
        return None;
    }
    let tail = &after[stop + 1..];
    let end = tail.find([':', '}'])?;
    if tail.as_bytes()[end] != b'}' {
        return None;
    }
    let key = &tail[..end];
    let len = 1 + name_len + 1 + stop + 1 + end + 1;
    Some((len, Placeholder::Other { component: first, namespace, key }))
}

/// A configuration node as the nucleus puts it into text.
fn render(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => sorted(value).to_string(),
        scalar => scalar.to_string(),
    }
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<&String, Value> = map.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::lifecycle::{SkipCheck, SkipIf, Step, StepKind};

    fn context() -> InterpolationContext {
        let root = Path::new("/greengrass/v2");
        let mut dependencies = BTreeMap::new();
        dependencies.insert(
            "com.example.Broker".to_owned(),
            ComponentVariables {
                locations: ComponentLocations::under_root(root, "com.example.Broker", "2.1.0"),
                configuration: json!({"server": {"port": 1883, "host": "localhost"}}),
            },
        );
        InterpolationContext {
            own: ComponentVariables {
                locations: ComponentLocations::under_root(root, "com.example.Hello", "1.0.0"),
                configuration: json!({
                    "Message": "world",
                    "count": 3,
                    "ratio": 0.5,
                    "enabled": true,
                    "nothing": null,
                    "list": [1, "two"],
                    "nested": {"b": 2, "a": {"z": 1, "y": 2}},
                    "a/b": "slash",
                    "m~n": "tilde"
                }),
            },
            dependencies,
            kernel_root_path: "/greengrass/v2".to_owned(),
            thing_name: "PumpStation-1".to_owned(),
        }
    }

    #[test]
    fn variables_expand_in_lifecycle_scope() {
        let ctx = context();
        let cases = [
            ("{artifacts:path}/hello.py", "/greengrass/v2/packages/artifacts/com.example.Hello/1.0.0/hello.py"),
            (
                "{artifacts:decompressedPath}/app",
                "/greengrass/v2/packages/artifacts-unarchived/com.example.Hello/1.0.0/app",
            ),
            ("cd {work:path}", "cd /greengrass/v2/work/com.example.Hello"),
            ("{kernel:rootPath}", "/greengrass/v2"),
            ("thing={iot:thingName}", "thing=PumpStation-1"),
            ("Hello {configuration:/Message}!", "Hello world!"),
            ("{configuration:/count}", "3"),
            ("{configuration:/ratio}", "0.5"),
            ("{configuration:/enabled}", "true"),
            ("{configuration:/nothing}", "null"),
            ("{configuration:/list}", r#"[1,"two"]"#),
            ("{configuration:/list/1}", "two"),
            ("{configuration:/nested}", r#"{"a":{"y":2,"z":1},"b":2}"#),
            ("{configuration:/a~1b} {configuration:/m~0n}", "slash tilde"),
            ("{com.example.Broker:configuration:/server/port}", "1883"),
            ("{com.example.Broker:artifacts:path}", "/greengrass/v2/packages/artifacts/com.example.Broker/2.1.0"),
            (
                "{com.example.Broker:artifacts:decompressedPath}",
                "/greengrass/v2/packages/artifacts-unarchived/com.example.Broker/2.1.0",
            ),
            ("{com.example.Broker:work:path}", "/greengrass/v2/work/com.example.Broker"),
            (
                "{artifacts:path}{work:path}",
                "/greengrass/v2/packages/artifacts/com.example.Hello/1.0.0/greengrass/v2/work/com.example.Hello",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(ctx.expand(text, Scope::Lifecycle), expected, "{text}");
        }
    }

    #[test]
    fn unresolvable_variables_are_left_as_written() {
        let ctx = context();
        let cases = [
            // A pointer to nothing, or not a pointer.
            "{configuration:/missing}",
            "{configuration:Message}",
            // Case-sensitive pointer, namespace and key.
            "{configuration:/message}",
            "{Artifacts:path}",
            "{artifacts:Path}",
            // Unknown namespace or key.
            "{secrets:password}",
            "{artifacts:size}",
            // Not a direct dependency.
            "{com.example.Other:configuration:/x}",
            "{com.example.Other:artifacts:path}",
            // Not variables at all.
            "{}",
            "{:x}",
            "{a b:c}",
            "{artifacts:path",
            "{a:b:c:d}",
            "${HOME}",
        ];
        for text in cases {
            assert_eq!(ctx.expand(text, Scope::Lifecycle), text, "{text}");
        }
        let report = ctx.expand_reporting(
            "{configuration:/missing} {iot:thingName} {com.example.Other:work:path}",
            Scope::Lifecycle,
        );
        assert_eq!(report.text, "{configuration:/missing} PumpStation-1 {com.example.Other:work:path}");
        assert_eq!(report.unresolved, vec!["{configuration:/missing}", "{com.example.Other:work:path}"]);
    }

    #[test]
    fn shell_braces_around_variables_survive() {
        let ctx = context();
        assert_eq!(
            ctx.expand("for f in {a,b}; do echo {iot:thingName} ${f}; done", Scope::Lifecycle),
            "for f in {a,b}; do echo PumpStation-1 ${f}; done"
        );
        assert_eq!(ctx.expand("{{iot:thingName}}", Scope::Lifecycle), "{PumpStation-1}");
    }

    #[test]
    fn inserted_text_is_not_expanded_again() {
        let mut ctx = context();
        ctx.own.configuration = json!({"tricky": "{iot:thingName}"});
        assert_eq!(ctx.expand("{configuration:/tricky}", Scope::Lifecycle), "{iot:thingName}");
    }

    #[test]
    fn configuration_scope_expands_all_but_configuration() {
        let ctx = context();
        let config = json!({
            "topic": "things/{iot:thingName}/data",
            "self": "{configuration:/Message}",
            "paths": ["{work:path}", 5],
            "{iot:thingName}": {"dep": "{com.example.Broker:configuration:/server/port}", "root": "{kernel:rootPath}"}
        });
        assert_eq!(
            ctx.expand_configuration(&config),
            json!({
                "topic": "things/PumpStation-1/data",
                "self": "{configuration:/Message}",
                "paths": ["/greengrass/v2/work/com.example.Hello", 5],
                "{iot:thingName}": {"dep": "{com.example.Broker:configuration:/server/port}", "root": "/greengrass/v2"}
            })
        );
    }

    #[test]
    fn lifecycle_scripts_skipif_and_setenv_are_expanded() {
        let ctx = context();
        let lifecycle = Lifecycle {
            setenv: vec![("MSG".into(), "{configuration:/Message}".into())],
            steps: vec![Step {
                kind: StepKind::Install,
                script: "cp {artifacts:path}/a {work:path}".into(),
                requires_privilege: false,
                skip_if: Some(SkipIf { check: SkipCheck::Exists("{work:path}/done".into()), negated: false }),
                timeout: None,
                setenv: vec![("THING".into(), "{iot:thingName}".into())],
            }],
        };
        let expanded = ctx.expand_lifecycle(&lifecycle);
        assert_eq!(expanded.setenv, vec![("MSG".to_owned(), "world".to_owned())]);
        let install = expanded.step(StepKind::Install).unwrap();
        assert_eq!(
            install.script,
            "cp /greengrass/v2/packages/artifacts/com.example.Hello/1.0.0/a /greengrass/v2/work/com.example.Hello"
        );
        assert_eq!(
            install.skip_if.as_ref().unwrap().check,
            SkipCheck::Exists("/greengrass/v2/work/com.example.Hello/done".into())
        );
        assert_eq!(install.setenv, vec![("THING".to_owned(), "PumpStation-1".to_owned())]);
    }
}
