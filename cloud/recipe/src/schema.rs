//! Validation against the GDK recipe schema (JSON Schema draft-07).
//!
//! The schema is the one the Greengrass Development Kit CLI validates with
//! (`gdk/static/recipe_schema.json`); its property names are lower-case because the GDK
//! lower-cases every key of a recipe, at every depth, before validating (`RecipeValidator.
//! _keys_to_lower`). We do the same on a copy, then report each fault at the path spelled as in
//! the recipe (`/Manifests/0/Lifecycle/Run`, not `/manifests/0/lifecycle/run`).
//!
//! The schema file is not part of this repository; it is read at run time from, in order:
//! 1. an explicit path given by the caller;
//! 2. the environment variable `GDK_RECIPE_SCHEMA`;
//! 3. `<repository root>/../shared/reference/gdk-recipe-schema.json`, from the crate's build
//!    location.
//!
//! A path named explicitly (1 or 2) must load, or it is an error; if the default location (3)
//! has no file, validation goes on without the schema and the caller gets a warning.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::{Fault, join_path};

/// The environment variable naming the schema file.
pub const SCHEMA_ENV: &str = "GDK_RECIPE_SCHEMA";

/// Where the schema is looked for when neither a path nor [`SCHEMA_ENV`] names one.
pub fn default_schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/gdk-recipe-schema.json")
}

/// Why the schema could not be loaded. All are configuration problems: fix the path or file.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The file could not be read.
    #[error("recipe schema {path} (from {origin}): cannot read: {source}")]
    Read {
        /// The schema path.
        path: PathBuf,
        /// Where the path came from.
        origin: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("recipe schema {path}: not JSON: {message}")]
    NotJson {
        /// The schema path.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The file is JSON but not a usable draft-07 schema.
    #[error("recipe schema {path}: not a valid JSON Schema: {message}")]
    NotSchema {
        /// The schema path.
        path: PathBuf,
        /// The compiler's message.
        message: String,
    },
}

/// A compiled GDK recipe schema.
#[derive(Debug)]
pub struct RecipeSchema {
    path: PathBuf,
    validator: jsonschema::Validator,
}

impl RecipeSchema {
    /// Loads and compiles the schema at `path`.
    pub fn load(path: &Path) -> Result<Self, SchemaError> {
        Self::load_from(path, "the caller")
    }

    fn load_from(path: &Path, origin: &'static str) -> Result<Self, SchemaError> {
        let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Read {
            path: path.to_owned(),
            origin,
            source,
        })?;
        let mut schema: Value = serde_json::from_str(&text)
            .map_err(|e| SchemaError::NotJson { path: path.to_owned(), message: e.to_string() })?;
        rewrite_inline_case_flags(&mut schema);
        let validator = jsonschema::draft7::new(&schema)
            .map_err(|e| SchemaError::NotSchema { path: path.to_owned(), message: e.to_string() })?;
        Ok(Self { path: path.to_owned(), validator })
    }

    /// Finds and loads the schema: `explicit`, else `GDK_RECIPE_SCHEMA`, else
    /// [`default_schema_path`]. `Ok(Err(reason))` when no schema is found at the default
    /// location (validate without it and warn); `Err` when a named schema fails to load.
    pub fn discover(explicit: Option<&Path>) -> Result<Result<Self, String>, SchemaError> {
        Self::discover_with(explicit, std::env::var_os(SCHEMA_ENV), &default_schema_path())
    }

    pub(crate) fn discover_with(
        explicit: Option<&Path>,
        env: Option<OsString>,
        default: &Path,
    ) -> Result<Result<Self, String>, SchemaError> {
        if let Some(path) = explicit {
            return Self::load_from(path, "the command line").map(Ok);
        }
        if let Some(path) = env.filter(|p| !p.is_empty()) {
            return Self::load_from(Path::new(&path), "GDK_RECIPE_SCHEMA").map(Ok);
        }
        if default.exists() {
            return Self::load_from(default, "the default location").map(Ok);
        }
        Ok(Err(format!("no GDK recipe schema: {SCHEMA_ENV} is not set and {} does not exist", default.display())))
    }

    /// Where the schema was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Validates a recipe document (keys in any case); one fault per schema violation, located
    /// by the recipe's own key spelling.
    pub fn validate(&self, doc: &Value) -> Vec<Fault> {
        let lowered = lowercase_keys(doc);
        let mut faults: Vec<Fault> = self
            .validator
            .iter_errors(&lowered)
            .map(|e| Fault::new(original_path(doc, e.instance_path().as_str()), e.to_string()))
            .collect();
        faults.dedup();
        faults
    }
}

/// The GDK validates with Python's `re`, which accepts a leading inline flag `(?i)`; JSON
/// Schema patterns are ECMA-262 regexes, which have no inline flags, so the `jsonschema` crate
/// rejects the schema. We rewrite such patterns (in memory) to an equivalent without the flag:
/// each ASCII letter outside escapes and character classes becomes `[xX]`.
fn rewrite_inline_case_flags(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(pattern) if key == "pattern" => {
                        if let Some(body) = pattern.strip_prefix("(?i)") {
                            *pattern = case_insensitive_pattern(body);
                        }
                    }
                    other => rewrite_inline_case_flags(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rewrite_inline_case_flags),
        _ => {}
    }
}

fn case_insensitive_pattern(body: &str) -> String {
    let mut out = String::with_capacity(body.len() * 3);
    let mut chars = body.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            c if c.is_ascii_alphabetic() && !in_class => {
                out.push('[');
                out.push(c.to_ascii_lowercase());
                out.push(c.to_ascii_uppercase());
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

/// A copy of `doc` with every object key lower-cased, at every depth (as the GDK does).
pub fn lowercase_keys(doc: &Value) -> Value {
    match doc {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.to_lowercase(), lowercase_keys(v))).collect::<Map<_, _>>())
        }
        Value::Array(items) => Value::Array(items.iter().map(lowercase_keys).collect()),
        other => other.clone(),
    }
}

/// Maps a JSON pointer into the lower-cased copy back to the keys as spelled in `doc`.
fn original_path(doc: &Value, lowered: &str) -> String {
    let mut node = Some(doc);
    let mut out = String::new();
    for raw in lowered.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        let found = match node {
            Some(Value::Object(map)) => map.iter().find(|(k, _)| k.to_lowercase() == segment),
            _ => None,
        };
        match found {
            Some((key, value)) => {
                out = join_path(&out, key);
                node = Some(value);
            }
            None => {
                out = join_path(&out, &segment);
                node = match node {
                    Some(Value::Array(items)) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                    _ => None,
                };
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_lowered_at_every_depth_and_values_kept() {
        let doc = json!({"ComponentName": "X", "Manifests": [{"Lifecycle": {"Run": "Echo Hi"}}]});
        assert_eq!(
            lowercase_keys(&doc),
            json!({"componentname": "X", "manifests": [{"lifecycle": {"run": "Echo Hi"}}]})
        );
    }

    #[test]
    fn inline_case_flags_become_letter_classes() {
        assert_eq!(case_insensitive_pattern("^(SOFT|hard)$"), "^([sS][oO][fF][tT]|[hH][aA][rR][dD])$");
        assert_eq!(case_insensitive_pattern(r"^aws\.g[a-z]\d$"), r"^[aA][wW][sS]\.[gG][a-z]\d$");
        let mut schema = json!({"properties": {"x": {"pattern": "(?i)^(ZIP)$"}, "y": {"pattern": "^A$"}}});
        rewrite_inline_case_flags(&mut schema);
        assert_eq!(schema, json!({"properties": {"x": {"pattern": "^([zZ][iI][pP])$"}, "y": {"pattern": "^A$"}}}));
    }

    #[test]
    fn fault_paths_use_the_recipe_spelling() {
        let doc = json!({"Manifests": [{"Lifecycle": {"Run": 1}}], "a/b": {"C": 1}});
        assert_eq!(original_path(&doc, "/manifests/0/lifecycle/run"), "/Manifests/0/Lifecycle/Run");
        assert_eq!(original_path(&doc, "/a~1b/c"), "/a~1b/C");
        assert_eq!(original_path(&doc, ""), "");
    }

    #[test]
    fn explicit_schema_path_must_exist() {
        let err = RecipeSchema::discover_with(Some(Path::new("/nonexistent/schema.json")), None, Path::new("/nope"))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/schema.json"), "{err}");
    }

    #[test]
    fn env_schema_path_must_exist() {
        let err =
            RecipeSchema::discover_with(None, Some("/nonexistent/env.json".into()), Path::new("/nope")).unwrap_err();
        assert!(err.to_string().contains("GDK_RECIPE_SCHEMA"), "{err}");
    }

    #[test]
    fn missing_default_schema_is_a_warning_not_an_error() {
        let reason =
            RecipeSchema::discover_with(None, None, Path::new("/nonexistent/default.json")).unwrap().unwrap_err();
        assert!(reason.contains("/nonexistent/default.json"), "{reason}");
    }

    #[test]
    fn broken_schema_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schema.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(RecipeSchema::load(&path), Err(SchemaError::NotJson { .. })));
        std::fs::write(&path, r#"{"type": 12}"#).unwrap();
        assert!(matches!(RecipeSchema::load(&path), Err(SchemaError::NotSchema { .. })));
    }
}
