//! Platform matching and lifecycle selections.
//!
//! Follows the recipe reference (`Manifests[].Platform`, `Selections`, global `Lifecycle`) and
//! the component model's matcher (aws-greengrass-component-common `PlatformHelper`):
//!
//! - manifests are tried in order and the first whose every platform attribute is satisfied
//!   wins; a manifest without `Platform` (or with an empty one) matches every device;
//! - attribute keys are case-sensitive (`os`, `architecture`, `architecture.detail`, or custom
//!   keys from the nucleus' `platformOverride`); device attributes absent from a manifest are
//!   ignored;
//! - a value `*` matches anything, even an attribute the device does not have;
//! - a value `/regex/` must match the device's whole attribute value; the nucleus uses Java
//!   regexes, we use the `regex` crate (no look-around or back-references);
//! - any other value must start with a letter or digit and equal the device's value exactly
//!   (case-sensitive); a value starting with another character is reserved and never matches;
//! - for `os` and `architecture` only, the legacy values `all` and `any` act as `*`.
//!
//! The device's own values come from the nucleus' detection: `os` is `linux`, `darwin`,
//! `windows`; `architecture` is `amd64`, `x86`, `arm`, `aarch64`; on ARM Linux
//! `architecture.detail` is the `uname -m` value such as `armv7l`.

use std::collections::{BTreeMap, HashSet};

use regex::Regex;
use serde_json::{Map, Value};

/// The `os` platform attribute.
pub const OS: &str = "os";
/// The `architecture` platform attribute.
pub const ARCHITECTURE: &str = "architecture";
/// The `architecture.detail` platform attribute.
pub const ARCHITECTURE_DETAIL: &str = "architecture.detail";
/// The selection key that means "sections without a selection key".
pub const ALL_SELECTION: &str = "all";

/// The attributes of a core device's platform.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DevicePlatform {
    attributes: BTreeMap<String, String>,
}

impl DevicePlatform {
    /// A device with the given `os` and `architecture`.
    pub fn new(os: &str, architecture: &str) -> Self {
        Self::default().with(OS, os).with(ARCHITECTURE, architecture)
    }

    /// The platform this process runs on, named as the nucleus names it (`architecture.detail`
    /// is not detected: add it with [`DevicePlatform::with`] where it matters).
    pub fn current() -> Self {
        let os = match std::env::consts::OS {
            "linux" => "linux",
            "macos" => "darwin",
            "windows" => "windows",
            _ => "unknown",
        };
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "x86",
            "arm" => "arm",
            "aarch64" => "aarch64",
            _ => "unknown",
        };
        Self::new(os, arch)
    }

    /// Sets an attribute (as the nucleus' `platformOverride` does).
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.attributes.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The value of an attribute.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// All attributes, sorted by key.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// What one platform attribute of a manifest accepts.
#[derive(Debug, Clone)]
pub enum PlatformValue {
    /// `*` (or `all`/`any` for `os` and `architecture`): anything, even a missing attribute.
    Any,
    /// An exact, case-sensitive value.
    Exact(String),
    /// `/regex/`: the device's whole value must match.
    Regex {
        /// The value as written, slashes included.
        source: String,
        /// The compiled, anchored expression.
        regex: Regex,
    },
    /// A value starting with a character other than a letter or digit: reserved by Greengrass
    /// for future syntax, never matches.
    Reserved(String),
}

impl PlatformValue {
    /// Reads the value of attribute `key`. Errors on a `/regex/` that does not compile.
    pub fn parse(key: &str, text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        if text.len() >= 2 && text.starts_with('/') && text.ends_with('/') {
            let body = &text[1..text.len() - 1];
            return Regex::new(&format!("^(?:{body})$"))
                .map(|regex| Self::Regex { source: text.to_owned(), regex })
                .map_err(|e| format!("platform regular expression {text:?} does not compile: {e}"));
        }
        if (key == OS || key == ARCHITECTURE) && (text == "all" || text == "any") {
            return Ok(Self::Any);
        }
        if text.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
            Ok(Self::Exact(text.to_owned()))
        } else {
            Ok(Self::Reserved(text.to_owned()))
        }
    }

    /// Whether a device attribute value (`None` when the device lacks it) is accepted.
    pub fn accepts(&self, label: Option<&str>) -> bool {
        if let Self::Any = self {
            return true;
        }
        let Some(label) = label.filter(|l| !l.is_empty()) else {
            return false;
        };
        match self {
            Self::Any => true,
            Self::Exact(value) => value == label,
            Self::Regex { regex, .. } => regex.is_match(label),
            Self::Reserved(_) => false,
        }
    }
}

/// A manifest's `Platform`: every listed attribute must be accepted.
#[derive(Debug, Clone, Default)]
pub struct PlatformRequirement {
    /// The attributes in recipe order.
    pub attributes: Vec<(String, PlatformValue)>,
}

impl PlatformRequirement {
    /// Whether the device meets every attribute (an empty requirement matches all devices).
    pub fn matches(&self, device: &DevicePlatform) -> bool {
        self.attributes.iter().all(|(key, value)| value.accepts(device.get(key)))
    }
}

/// Picks the sections of a global `Lifecycle` for a manifest, as the nucleus does
/// (`PlatformResolver.filterPlatform`).
///
/// `keywords` are all selection keys used by any manifest of the recipe (plus `all`);
/// `selectors` are the manifest's own `Selections` in priority order. At each level of the
/// lifecycle, if any key is a keyword, that level is a choice: the first selector present (else
/// `all`) is taken and the other keys dropped; if none is present the level is dropped.
/// Otherwise every entry is kept and filtered recursively. Null values count as absent.
pub fn select_lifecycle_sections(
    lifecycle: &Map<String, Value>,
    keywords: &HashSet<String>,
    selectors: &[String],
) -> Option<Value> {
    if lifecycle.keys().any(|k| keywords.contains(k)) {
        let chosen = selectors
            .iter()
            .filter_map(|s| lifecycle.get(s))
            .find(|v| !v.is_null())
            .or_else(|| lifecycle.get(ALL_SELECTION).filter(|v| !v.is_null()));
        return chosen.and_then(|v| select_value(v, keywords, selectors));
    }
    let kept: Map<String, Value> =
        lifecycle.iter().filter_map(|(k, v)| select_value(v, keywords, selectors).map(|v| (k.clone(), v))).collect();
    Some(Value::Object(kept))
}

fn select_value(value: &Value, keywords: &HashSet<String>, selectors: &[String]) -> Option<Value> {
    match value {
        Value::Object(map) => select_lifecycle_sections(map, keywords, selectors),
        Value::Null => None,
        other => Some(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn requirement(pairs: &[(&str, &str)]) -> PlatformRequirement {
        PlatformRequirement {
            attributes: pairs.iter().map(|(k, v)| (k.to_string(), PlatformValue::parse(k, v).unwrap())).collect(),
        }
    }

    #[test]
    fn platform_values_match_like_the_greengrass_matcher() {
        let linux_arm = DevicePlatform::new("linux", "arm").with(ARCHITECTURE_DETAIL, "armv7l");
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], true),
            (&[("os", "linux")], true),
            (&[("os", "Linux")], false),
            (&[("os", "windows")], false),
            (&[("os", "linux"), ("architecture", "arm")], true),
            (&[("os", "linux"), ("architecture", "aarch64")], false),
            (&[("os", "*"), ("architecture", "*")], true),
            (&[("os", "all")], true),
            (&[("architecture", "any")], true),
            // `all` is a wildcard only for os and architecture.
            (&[("architecture.detail", "all")], false),
            (&[("os", "/linux|darwin/")], true),
            (&[("os", "/lin/")], false),
            (&[("architecture.detail", "/armv[67]l/")], true),
            (&[("os", "/.+/")], true),
            // A custom attribute the device lacks: `*` matches, anything else does not.
            (&[("com.example.Radio", "*")], true),
            (&[("com.example.Radio", "lora")], false),
            (&[("com.example.Radio", "/.*/")], false),
            // Reserved syntax never matches.
            (&[("os", "!windows")], false),
            (&[("os", "")], false),
        ];
        for (pairs, expected) in cases {
            assert_eq!(requirement(pairs).matches(&linux_arm), *expected, "{pairs:?}");
        }
    }

    #[test]
    fn custom_attributes_match_platform_overrides() {
        let device = DevicePlatform::new("linux", "amd64").with("com.example.Radio", "lora");
        assert!(requirement(&[("com.example.Radio", "lora")]).matches(&device));
        assert!(!requirement(&[("com.example.Radio", "wifi")]).matches(&device));
    }

    #[test]
    fn platform_regex_that_does_not_compile_is_an_error() {
        let err = PlatformValue::parse("os", "/lin(ux/").unwrap_err();
        assert!(err.contains("/lin(ux/"), "{err}");
    }

    #[test]
    fn current_platform_uses_greengrass_names() {
        let current = DevicePlatform::current();
        assert!(["linux", "darwin", "windows", "unknown"].contains(&current.get(OS).unwrap()));
        assert!(["amd64", "x86", "arm", "aarch64", "unknown"].contains(&current.get(ARCHITECTURE).unwrap()));
    }

    fn keywords(extra: &[&str]) -> HashSet<String> {
        extra.iter().map(|s| s.to_string()).chain([ALL_SELECTION.to_owned()]).collect()
    }

    #[test]
    fn top_level_selection_keys_pick_one_section() {
        let lifecycle = json!({
            "key1": {"Install": {"Script": "command1"}},
            "key2": {"Install": {"Script": "command2"}},
            "all": {"Install": {"Script": "command3"}}
        });
        let map = lifecycle.as_object().unwrap();
        let kw = keywords(&["key1", "key2"]);
        let cases: &[(&[&str], &str)] = &[(&["key2"], "command2"), (&["key1", "key2"], "command1"), (&[], "command3")];
        for (selectors, script) in cases {
            let selectors: Vec<String> = selectors.iter().map(|s| s.to_string()).collect();
            let picked = select_lifecycle_sections(map, &kw, &selectors).unwrap();
            assert_eq!(picked, json!({"Install": {"Script": script}}), "{selectors:?}");
        }
    }

    #[test]
    fn bottom_and_multi_level_selection_keys_are_resolved_at_each_level() {
        let lifecycle = json!({
            "key1": {"Install": {"Skipif": "onpath x", "Script": "command1"}},
            "all": {"Install": {"Script": {"key3": "command3", "key4": "command4", "all": "command5"}}}
        });
        let map = lifecycle.as_object().unwrap();
        let kw = keywords(&["key1", "key3", "key4"]);
        let pick = |sel: &[&str]| {
            let sel: Vec<String> = sel.iter().map(|s| s.to_string()).collect();
            select_lifecycle_sections(map, &kw, &sel)
        };
        assert_eq!(pick(&["key4"]), Some(json!({"Install": {"Script": "command4"}})));
        assert_eq!(pick(&[]), Some(json!({"Install": {"Script": "command5"}})));
        assert_eq!(pick(&["key1"]), Some(json!({"Install": {"Skipif": "onpath x", "Script": "command1"}})));
    }

    #[test]
    fn lifecycle_without_selection_keys_is_kept_whole() {
        let lifecycle = json!({"Run": "echo hi", "Setenv": {"A": "1"}, "Gone": null});
        let picked = select_lifecycle_sections(lifecycle.as_object().unwrap(), &keywords(&[]), &[]).unwrap();
        assert_eq!(picked, json!({"Run": "echo hi", "Setenv": {"A": "1"}}));
    }

    #[test]
    fn selection_level_without_a_match_is_dropped() {
        let lifecycle = json!({"key1": {"Run": "a"}});
        let picked = select_lifecycle_sections(
            lifecycle.as_object().unwrap(),
            &keywords(&["key1", "key2"]),
            &["key2".to_owned()],
        );
        assert_eq!(picked, None);
    }
}
