//! Reading recipe files: YAML or JSON text → document → typed, checked [`Recipe`].
//!
//! Checks that the GDK schema cannot express are made here, always, whether or not the
//! schema file was found: strict semver `ComponentVersion`, `RecipeFormatVersion`
//! `2020-01-25`, npm-style `VersionRequirement`, `DependencyType` `HARD|SOFT`, `Unarchive`
//! `NONE|ZIP`, the reserved `aws.greengrass.` name prefix, `Run` xor `Startup`, `Skipif` syntax,
//! platform regexes that compile, unique artifact file names within a manifest, and at least one
//! manifest (the nucleus rejects a recipe without manifests).

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde_json::{Map, Value};

use super::doc::{Diagnostics, Fields, kind_of, string};
use super::error::{Fault, RecipeError, join_path};
use super::lifecycle::{Lifecycle, parse_lifecycle};
use super::model::{
    Artifact, ArtifactPermission, ComponentType, Dependency, DependencyType, Manifest, RECIPE_FORMAT_VERSION,
    RESERVED_NAME_PREFIX, Recipe, Unarchive,
};
use super::platform::{ALL_SELECTION, PlatformRequirement, PlatformValue, select_lifecycle_sections};
use super::schema::RecipeSchema;
use super::version::{ComponentVersion, VersionRequirement};

/// Longest component name Greengrass accepts.
pub const MAX_NAME_LEN: usize = 128;

/// The text format of a recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecipeFormat {
    /// YAML (`.yaml`, `.yml`).
    Yaml,
    /// JSON (`.json`).
    Json,
}

impl RecipeFormat {
    /// The format a file name says, by extension (case-insensitive).
    pub fn from_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

impl fmt::Display for RecipeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Yaml => "YAML",
            Self::Json => "JSON",
        })
    }
}

/// A loaded recipe and the warnings the caller should pass on (unknown keys the nucleus
/// ignores, schema validation skipped, …).
#[derive(Debug, Clone)]
pub struct LoadedRecipe {
    /// The recipe.
    pub recipe: Recipe,
    /// Problems that do not stop the recipe from loading.
    pub warnings: Vec<Fault>,
}

/// Loads and checks recipes; holds the GDK schema when one was found.
#[derive(Debug, Default)]
pub struct RecipeLoader {
    schema: Option<RecipeSchema>,
    schema_warning: Option<String>,
    allow_reserved_names: bool,
}

impl RecipeLoader {
    /// A loader that validates against `schema` as well as the typed checks.
    pub fn with_schema(schema: RecipeSchema) -> Self {
        Self { schema: Some(schema), ..Self::default() }
    }

    /// A loader that makes only the typed checks; `reason` says why (it becomes a warning on
    /// every loaded recipe).
    pub fn without_schema(reason: impl Into<String>) -> Self {
        Self { schema_warning: Some(reason.into()), ..Self::default() }
    }

    /// A loader with the schema found by [`RecipeSchema::discover`] (explicit path, then
    /// `GDK_RECIPE_SCHEMA`, then the shared reference directory beside the repository); without
    /// one if none is found. Errors only when an explicitly named schema cannot be loaded.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, super::schema::SchemaError> {
        Ok(match RecipeSchema::discover(explicit)? {
            Ok(schema) => Self::with_schema(schema),
            Err(reason) => Self::without_schema(reason),
        })
    }

    /// Accepts component names under `aws.greengrass.` (a recipe that overrides a public
    /// component on purpose). Off by default: for user components it is almost always a mistake.
    pub fn allow_reserved_names(mut self, allow: bool) -> Self {
        self.allow_reserved_names = allow;
        self
    }

    /// The schema in use, if any.
    pub fn schema(&self) -> Option<&RecipeSchema> {
        self.schema.as_ref()
    }

    /// Why schema validation is skipped, if it is.
    pub fn schema_warning(&self) -> Option<&str> {
        self.schema_warning.as_deref()
    }

    /// Reads, parses and checks a recipe file (format from its extension).
    pub fn load_file(&self, path: &Path) -> Result<LoadedRecipe, RecipeError> {
        let recipe = path.display().to_string();
        let format =
            RecipeFormat::from_path(path).ok_or_else(|| RecipeError::UnknownFormat { recipe: recipe.clone() })?;
        let text =
            std::fs::read_to_string(path).map_err(|source| RecipeError::Read { recipe: recipe.clone(), source })?;
        self.load_str(&text, format, Some(&recipe))
    }

    /// Parses and checks recipe text. `origin` names the recipe in errors (a file path, say);
    /// without it errors use the component name.
    pub fn load_str(
        &self,
        text: &str,
        format: RecipeFormat,
        origin: Option<&str>,
    ) -> Result<LoadedRecipe, RecipeError> {
        let doc = parse_document(text, format, origin.unwrap_or("<recipe text>"))?;
        self.load_document(&doc, origin)
    }

    /// Checks an already parsed recipe document.
    pub fn load_document(&self, doc: &Value, origin: Option<&str>) -> Result<LoadedRecipe, RecipeError> {
        self.load_checked(doc, origin, self.allow_reserved_names)
    }

    /// The same as [`RecipeLoader::load_document`] for a component AWS publishes: names under
    /// `aws.greengrass.` are accepted whatever this loader was built with.
    pub fn load_document_as_aws(&self, doc: &Value, origin: Option<&str>) -> Result<LoadedRecipe, RecipeError> {
        self.load_checked(doc, origin, true)
    }

    fn load_checked(
        &self,
        doc: &Value,
        origin: Option<&str>,
        allow_reserved: bool,
    ) -> Result<LoadedRecipe, RecipeError> {
        let label = origin.map(str::to_owned).unwrap_or_else(|| component_name_of(doc));
        let schema_faults = match &self.schema {
            Some(schema) => schema.validate(doc),
            None => Vec::new(),
        };
        let mut diag = Diagnostics::default();
        let recipe = recipe_from_document(doc, allow_reserved, &mut diag);
        // Where the typed checks found something at or below a node the schema faults, their
        // message is the more precise one ("DependencyType must be HARD or SOFT" rather than
        // "does not match <pattern>", or "not valid under any of the schemas in oneOf"): keep
        // the schema's fault only where the typed checks have nothing to say.
        // A typed fault supersedes a schema fault at the same node or above it. At the document
        // root the schema's faults (missing or unknown top-level keys) are always kept, and
        // typed root faults only appear when the schema has none.
        let schema_root_faults = schema_faults.iter().any(|s| s.path.is_empty());
        let covers =
            |node: &str, typed: &str| !node.is_empty() && (typed == node || typed.starts_with(&format!("{node}/")));
        let mut faults: Vec<Fault> =
            schema_faults.into_iter().filter(|s| !diag.faults.iter().any(|t| covers(&s.path, &t.path))).collect();
        diag.faults.retain(|t| !(schema_root_faults && t.path.is_empty()));
        for fault in diag.faults {
            if !faults.contains(&fault) {
                faults.push(fault);
            }
        }
        match recipe {
            Some(recipe) if faults.is_empty() => {
                let mut warnings = Vec::new();
                if let Some(reason) = &self.schema_warning {
                    warnings.push(Fault::new("", format!("schema validation skipped: {reason}")));
                }
                for w in diag.warnings {
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                }
                Ok(LoadedRecipe { recipe, warnings })
            }
            _ => Err(RecipeError::Invalid { recipe: label, faults }),
        }
    }
}

/// Parses recipe text into a document, without checking it.
pub fn parse_document(text: &str, format: RecipeFormat, recipe: &str) -> Result<Value, RecipeError> {
    let result = match format {
        RecipeFormat::Json => serde_json::from_str::<Value>(text).map_err(|e| e.to_string()),
        RecipeFormat::Yaml => serde_yaml_ng::from_str::<Value>(text).map_err(|e| e.to_string()),
    };
    result.map_err(|message| RecipeError::Syntax { recipe: recipe.to_owned(), format, message })
}

fn component_name_of(doc: &Value) -> String {
    doc.as_object()
        .and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case("componentname")))
        .and_then(|(_, v)| v.as_str())
        .map(|name| format!("for component {name}"))
        .unwrap_or_else(|| "<unnamed recipe>".to_owned())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Builds the typed recipe, recording every fault found; `None` when a required part is
/// missing or unreadable.
pub(crate) fn recipe_from_document(doc: &Value, allow_reserved: bool, diag: &mut Diagnostics) -> Option<Recipe> {
    let mut top = Fields::of(doc, "", "a recipe", diag)?;

    let format_version = match top.get("recipeformatversion") {
        Some((p, v)) => string(v, &p, "RecipeFormatVersion", diag).filter(|s| {
            let ok = s == RECIPE_FORMAT_VERSION;
            if !ok {
                diag.fault(&p, format!("RecipeFormatVersion must be {RECIPE_FORMAT_VERSION:?}, found {s:?}"));
            }
            ok
        }),
        None => {
            diag.fault("", "RecipeFormatVersion is required");
            None
        }
    };

    let name = match top.get("componentname") {
        Some((p, v)) => string(v, &p, "ComponentName", diag).filter(|name| {
            if !valid_name(name) {
                diag.fault(
                    &p,
                    format!("ComponentName {name:?} must be 1 to {MAX_NAME_LEN} characters of letters, digits, '-', '_' and '.'"),
                );
                return false;
            }
            if !allow_reserved && name.to_ascii_lowercase().starts_with(RESERVED_NAME_PREFIX) {
                diag.fault(
                    &p,
                    format!("ComponentName {name:?} uses the prefix {RESERVED_NAME_PREFIX:?}, reserved for AWS-provided components"),
                );
                return false;
            }
            true
        }),
        None => {
            diag.fault("", "ComponentName is required");
            None
        }
    };

    let version = match top.get("componentversion") {
        Some((p, v)) => string(v, &p, "ComponentVersion", diag).and_then(|text| {
            ComponentVersion::parse(&text).map_err(|e| diag.fault(&p, format!("ComponentVersion: {e}"))).ok()
        }),
        None => {
            diag.fault("", "ComponentVersion is required");
            None
        }
    };

    let optional_string = |top: &mut Fields, key: &str, what: &str, diag: &mut Diagnostics| {
        top.get(key).and_then(|(p, v)| if v.is_null() { None } else { string(v, &p, what, diag) })
    };
    let description = optional_string(&mut top, "componentdescription", "ComponentDescription", diag);
    let publisher = optional_string(&mut top, "componentpublisher", "ComponentPublisher", diag);
    let source = optional_string(&mut top, "componentsource", "ComponentSource", diag);
    let component_type = match top.get("componenttype") {
        Some((p, v)) => string(v, &p, "ComponentType", diag)
            .and_then(|t| {
                ComponentType::parse(&t).or_else(|| {
                    diag.fault(
                        &p,
                        format!("ComponentType {t:?} must be one of aws.greengrass.generic, aws.greengrass.lambda, aws.greengrass.plugin, aws.greengrass.nucleus"),
                    );
                    None
                })
            })
            .unwrap_or_default(),
        None => ComponentType::default(),
    };

    let default_configuration = match top.get("componentconfiguration") {
        Some((p, v)) if !v.is_null() => parse_component_configuration(v, &p, diag),
        _ => Map::new(),
    };

    let dependencies = match top.get("componentdependencies") {
        Some((p, v)) if !v.is_null() => parse_dependencies(v, &p, diag),
        _ => Vec::new(),
    };

    let global_lifecycle = match top.get("lifecycle") {
        Some((_, Value::Null)) | None => None,
        Some((p, Value::Object(map))) => Some((p, map)),
        Some((p, other)) => {
            diag.fault(&p, format!("Lifecycle must be an object, found {}", kind_of(other)));
            None
        }
    };

    let manifests = match top.get("manifests") {
        Some((p, Value::Array(items))) if !items.is_empty() => parse_manifests(items, &p, global_lifecycle, diag),
        Some((p, Value::Array(_))) => {
            diag.fault(&p, "Manifests must list at least one manifest");
            Vec::new()
        }
        Some((p, other)) => {
            diag.fault(&p, format!("Manifests must be a list, found {}", kind_of(other)));
            Vec::new()
        }
        None => {
            diag.fault("", "Manifests is required");
            Vec::new()
        }
    };

    top.warn_unused("recipe", diag);
    Some(Recipe {
        format_version: format_version?,
        name: name?,
        version: version?,
        description,
        publisher,
        component_type,
        source,
        default_configuration,
        dependencies,
        manifests,
    })
}

fn parse_component_configuration(value: &Value, path: &str, diag: &mut Diagnostics) -> Map<String, Value> {
    let Some(mut fields) = Fields::of(value, path, "ComponentConfiguration", diag) else {
        return Map::new();
    };
    let config = match fields.get("defaultconfiguration") {
        Some((_, Value::Null)) | None => Map::new(),
        Some((_, Value::Object(map))) => map.clone(),
        Some((p, other)) => {
            diag.fault(&p, format!("DefaultConfiguration must be an object, found {}", kind_of(other)));
            Map::new()
        }
    };
    fields.warn_unused("ComponentConfiguration", diag);
    config
}

fn parse_dependencies(value: &Value, path: &str, diag: &mut Diagnostics) -> Vec<Dependency> {
    let Value::Object(map) = value else {
        diag.fault(path, format!("ComponentDependencies must be an object, found {}", kind_of(value)));
        return Vec::new();
    };
    let mut dependencies = Vec::with_capacity(map.len());
    for (name, spec) in map {
        let p = join_path(path, name);
        if !valid_name(name) {
            diag.fault(&p, format!("dependency name {name:?} must be 1 to {MAX_NAME_LEN} characters of letters, digits, '-', '_' and '.'"));
        }
        let Some(mut fields) = Fields::of(spec, &p, "a dependency", diag) else { continue };
        let requirement = match fields.get("versionrequirement") {
            Some((rp, v)) => string(v, &rp, "VersionRequirement", diag).and_then(|text| {
                VersionRequirement::parse(&text).map_err(|e| diag.fault(&rp, format!("VersionRequirement: {e}"))).ok()
            }),
            None => {
                diag.fault(&p, "VersionRequirement is required");
                None
            }
        };
        let kind = match fields.get("dependencytype") {
            Some((_, Value::Null)) | None => Some(DependencyType::default()),
            Some((tp, v)) => string(v, &tp, "DependencyType", diag).and_then(|t| {
                DependencyType::parse(&t).or_else(|| {
                    diag.fault(&tp, format!("DependencyType must be HARD or SOFT, found {t:?}"));
                    None
                })
            }),
        };
        fields.warn_unused("dependency", diag);
        if let (Some(requirement), Some(kind)) = (requirement, kind) {
            dependencies.push(Dependency { name: name.clone(), requirement, kind });
        }
    }
    dependencies
}

fn parse_manifests(
    items: &[Value],
    path: &str,
    global: Option<(String, &Map<String, Value>)>,
    diag: &mut Diagnostics,
) -> Vec<Manifest> {
    // The nucleus folds every manifest's selections (and `all`) into one keyword set.
    let mut keywords: HashSet<String> = HashSet::from([ALL_SELECTION.to_owned()]);
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}/{i}");
        let Some(mut fields) = Fields::of(item, &p, "a manifest", diag) else {
            parsed.push(None);
            continue;
        };
        let name = fields.get("name").and_then(|(np, v)| if v.is_null() { None } else { string(v, &np, "Name", diag) });
        let platform = match fields.get("platform") {
            Some((pp, v)) if !v.is_null() => parse_platform(v, &pp, diag),
            _ => PlatformRequirement::default(),
        };
        let selections = match fields.get("selections") {
            Some((_, Value::Null)) | None => Vec::new(),
            Some((_, Value::String(s))) => vec![s.clone()],
            Some((sp, Value::Array(list))) => list
                .iter()
                .enumerate()
                .filter_map(|(j, v)| string(v, &format!("{sp}/{j}"), "a selection key", diag))
                .collect(),
            Some((sp, other)) => {
                diag.fault(&sp, format!("Selections must be a list of strings, found {}", kind_of(other)));
                Vec::new()
            }
        };
        keywords.extend(selections.iter().cloned());
        let own_lifecycle = match fields.get("lifecycle") {
            Some((_, Value::Null)) | None => None,
            Some((lp, Value::Object(map))) if !map.is_empty() => Some((lp, item_lifecycle(item))),
            Some((_, Value::Object(_))) => None,
            Some((lp, other)) => {
                diag.fault(&lp, format!("Lifecycle must be an object, found {}", kind_of(other)));
                None
            }
        };
        let artifacts = match fields.get("artifacts") {
            Some((_, Value::Null)) | None => Vec::new(),
            Some((ap, Value::Array(list))) => parse_artifacts(list, &ap, diag),
            Some((ap, other)) => {
                diag.fault(&ap, format!("Artifacts must be a list, found {}", kind_of(other)));
                Vec::new()
            }
        };
        fields.warn_unused("manifest", diag);
        parsed.push(Some((name, platform, selections, own_lifecycle, artifacts)));
    }

    parsed
        .into_iter()
        .flatten()
        .map(|(name, platform, selections, own_lifecycle, artifacts)| {
            let lifecycle = match (own_lifecycle, &global) {
                (Some((lp, Some(value))), _) => parse_lifecycle(value, &lp, diag),
                (_, Some((gp, global))) => match select_lifecycle_sections(global, &keywords, &selections) {
                    Some(value) if value.as_object().is_some_and(|m| !m.is_empty()) => {
                        parse_lifecycle(&value, gp, diag)
                    }
                    _ => Lifecycle::default(),
                },
                _ => Lifecycle::default(),
            };
            Manifest { name, platform, selections, lifecycle, artifacts }
        })
        .collect()
}

/// The manifest's own `Lifecycle` value, whatever the key's case.
fn item_lifecycle(item: &Value) -> Option<&Value> {
    item.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case("lifecycle")).map(|(_, v)| v)
}

fn parse_platform(value: &Value, path: &str, diag: &mut Diagnostics) -> PlatformRequirement {
    let Value::Object(map) = value else {
        diag.fault(path, format!("Platform must be an object, found {}", kind_of(value)));
        return PlatformRequirement::default();
    };
    let mut attributes = Vec::with_capacity(map.len());
    for (key, v) in map {
        let p = join_path(path, key);
        match v {
            // The matcher treats a null template like a missing one: a wildcard.
            Value::Null => attributes.push((key.clone(), PlatformValue::Any)),
            Value::String(text) => match PlatformValue::parse(key, text) {
                Ok(PlatformValue::Reserved(text)) => {
                    diag.warn(
                        &p,
                        format!("platform value {text:?} does not start with a letter or digit: it never matches"),
                    );
                    attributes.push((key.clone(), PlatformValue::Reserved(text)));
                }
                Ok(value) => attributes.push((key.clone(), value)),
                Err(e) => diag.fault(&p, e),
            },
            other => diag.fault(&p, format!("platform attribute must be a string, found {}", kind_of(other))),
        }
    }
    PlatformRequirement { attributes }
}

fn parse_artifacts(list: &[Value], path: &str, diag: &mut Diagnostics) -> Vec<Artifact> {
    let mut artifacts: Vec<Artifact> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let p = format!("{path}/{i}");
        let Some(mut fields) = Fields::of(item, &p, "an artifact", diag) else { continue };
        let before = diag.faults.len();
        let uri = match fields.get("uri") {
            Some((up, v)) => string(v, &up, "URI", diag).unwrap_or_default(),
            None => {
                diag.fault(&p, "URI is required");
                String::new()
            }
        };
        let unarchive = match fields.get("unarchive") {
            Some((_, Value::Null)) | None => Unarchive::default(),
            Some((up, v)) => string(v, &up, "Unarchive", diag)
                .and_then(|t| {
                    Unarchive::parse(&t).or_else(|| {
                        diag.fault(&up, format!("Unarchive must be NONE or ZIP, found {t:?}"));
                        None
                    })
                })
                .unwrap_or_default(),
        };
        let (mut read, mut execute) = (ArtifactPermission::Owner, ArtifactPermission::None);
        if let Some((pp, v)) = fields.get("permission")
            && !v.is_null()
            && let Some(mut perm) = Fields::of(v, &pp, "Permission", diag)
        {
            for (key, slot) in [("read", &mut read), ("execute", &mut execute)] {
                if let Some((kp, v)) = perm.get(key)
                    && let Some(t) = string(v, &kp, "a permission", diag)
                {
                    match ArtifactPermission::parse(&t) {
                        Some(parsed) => *slot = parsed,
                        None => diag.fault(&kp, format!("permission must be NONE, OWNER or ALL, found {t:?}")),
                    }
                }
            }
            perm.warn_unused("Permission", diag);
        }
        let digest = fields.get("digest").and_then(|(dp, v)| string(v, &dp, "Digest", diag));
        let algorithm = fields.get("algorithm").and_then(|(ap, v)| string(v, &ap, "Algorithm", diag));
        fields.warn_unused("artifact", diag);
        if diag.faults.len() != before {
            continue;
        }
        let artifact = Artifact { uri, unarchive, read, execute, digest, algorithm };
        if artifacts.iter().any(|a| a.file_name() == artifact.file_name()) {
            diag.fault(
                &format!("{p}/URI"),
                format!(
                    "artifact file name {:?} is used twice in this manifest (each must be unique)",
                    artifact.file_name()
                ),
            );
            continue;
        }
        artifacts.push(artifact);
    }
    artifacts
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::lifecycle::StepKind;
    use crate::platform::DevicePlatform;
    use crate::schema::default_schema_path;

    /// The GDK schema from `../shared/reference` (or `GDK_RECIPE_SCHEMA`): these tests check our
    /// behaviour against the real file, so its absence is a failure, not a skip.
    fn real_schema() -> RecipeSchema {
        match RecipeSchema::discover(None) {
            Ok(Ok(schema)) => schema,
            Ok(Err(reason)) => panic!("{reason} (expected at {})", default_schema_path().display()),
            Err(e) => panic!("{e}"),
        }
    }

    fn typed() -> RecipeLoader {
        RecipeLoader::without_schema("test: typed checks only")
    }

    fn hello() -> Value {
        json!({
            "RecipeFormatVersion": "2020-01-25",
            "ComponentName": "com.example.Hello",
            "ComponentVersion": "1.0.0",
            "ComponentPublisher": "Example",
            "ComponentConfiguration": {"DefaultConfiguration": {"Message": "world", "CamelCase": {"KeepMe": "As Is"}}},
            "Manifests": [{"Platform": {"os": "linux"}, "Lifecycle": {"Run": "echo {configuration:/Message}"}}]
        })
    }

    fn with(mut doc: Value, pointer: &str, value: Value) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = if parent.is_empty() { &mut doc } else { doc.pointer_mut(parent).unwrap() };
        target.as_object_mut().unwrap().insert(key.to_owned(), value);
        doc
    }

    fn without(mut doc: Value, pointer: &str) -> Value {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let target = if parent.is_empty() { &mut doc } else { doc.pointer_mut(parent).unwrap() };
        target.as_object_mut().unwrap().remove(key);
        doc
    }

    fn faults(loader: &RecipeLoader, doc: &Value) -> Vec<String> {
        match loader.load_document(doc, Some("test.yaml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.faults().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn recipe_keys_are_case_insensitive_and_values_keep_their_case() {
        let yaml = r#"
recipeformatversion: "2020-01-25"
COMPONENTNAME: com.example.Hello
componentVersion: "1.0.0"
componentconfiguration:
  defaultConfiguration:
    Message: World
    Nested: {CamelKey: MixedValue}
componentDependencies:
  com.example.Lib: {versionrequirement: ">=1.0.0 <2.0.0", DEPENDENCYTYPE: soft}
MANIFESTS:
  - PLATFORM: {os: linux}
    lifecycle:
      SETENV: {My_Var: Value}
      run: {SCRIPT: "echo Hi", timeout: 5}
    ARTIFACTS:
      - uri: s3://bucket/App.zip
        UNARCHIVE: zip
        permission: {READ: all, Execute: owner}
"#;
        let loaded = typed().load_str(yaml, RecipeFormat::Yaml, None).unwrap();
        let r = loaded.recipe;
        assert_eq!((r.name.as_str(), r.version.as_str()), ("com.example.Hello", "1.0.0"));
        assert_eq!(
            Value::Object(r.default_configuration),
            json!({"Message": "World", "Nested": {"CamelKey": "MixedValue"}})
        );
        assert_eq!(r.dependencies[0].kind, DependencyType::Soft);
        let m = &r.manifests[0];
        assert_eq!(m.lifecycle.setenv, vec![("My_Var".to_owned(), "Value".to_owned())]);
        assert_eq!(m.lifecycle.step(StepKind::Run).unwrap().script, "echo Hi");
        assert_eq!(m.artifacts[0].unarchive, Unarchive::Zip);
        assert_eq!((m.artifacts[0].read, m.artifacts[0].execute), (ArtifactPermission::All, ArtifactPermission::Owner));
        assert_eq!(m.artifacts[0].file_name(), "App.zip");
        // Only the skipped schema is worth a warning here.
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    }

    #[test]
    fn yaml_and_json_forms_load_the_same_recipe() {
        let json_text = serde_json::to_string(&hello()).unwrap();
        let yaml_text = serde_yaml_ng::to_string(&hello()).unwrap();
        let a = typed().load_str(&json_text, RecipeFormat::Json, None).unwrap().recipe;
        let b = typed().load_str(&yaml_text, RecipeFormat::Yaml, None).unwrap().recipe;
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn typed_checks_catch_what_the_schema_cannot() {
        let cases: Vec<(Value, &str)> = vec![
            (
                with(hello(), "/ComponentVersion", json!("1.0")),
                "/ComponentVersion: ComponentVersion: \"1.0\" is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.0.0)",
            ),
            (
                with(hello(), "/ComponentVersion", json!(1.0)),
                "/ComponentVersion: ComponentVersion must be a string, found a number",
            ),
            (
                with(hello(), "/RecipeFormatVersion", json!("2021-01-01")),
                "/RecipeFormatVersion: RecipeFormatVersion must be \"2020-01-25\", found \"2021-01-01\"",
            ),
            (
                with(hello(), "/ComponentName", json!("aws.greengrass.Mine")),
                "/ComponentName: ComponentName \"aws.greengrass.Mine\" uses the prefix \"aws.greengrass.\", reserved for AWS-provided components",
            ),
            (
                with(hello(), "/ComponentName", json!("has space")),
                "/ComponentName: ComponentName \"has space\" must be 1 to 128 characters of letters, digits, '-', '_' and '.'",
            ),
            (
                with(hello(), "/ComponentDependencies", json!({"Lib": {"VersionRequirement": "not a range"}})),
                "/ComponentDependencies/Lib/VersionRequirement: VersionRequirement: \"not a range\" is not an npm-style version range (e.g. \">=1.0.0 <2.0.0\", \"^1.2.0\", \"~1.2.0\", \"1.0.0\")",
            ),
            (
                with(
                    hello(),
                    "/ComponentDependencies",
                    json!({"Lib": {"VersionRequirement": "^1.0.0", "DependencyType": "MEDIUM"}}),
                ),
                "/ComponentDependencies/Lib/DependencyType: DependencyType must be HARD or SOFT, found \"MEDIUM\"",
            ),
            (
                with(hello(), "/ComponentDependencies", json!({"Lib": {"DependencyType": "SOFT"}})),
                "/ComponentDependencies/Lib: VersionRequirement is required",
            ),
            (
                with(hello(), "/Manifests", json!([{"Artifacts": [{"URI": "s3://b/a.zip", "Unarchive": "TAR"}]}])),
                "/Manifests/0/Artifacts/0/Unarchive: Unarchive must be NONE or ZIP, found \"TAR\"",
            ),
            (
                with(hello(), "/Manifests", json!([{"Artifacts": [{"URI": "s3://b/a.zip"}, {"URI": "s3://c/a.zip"}]}])),
                "/Manifests/0/Artifacts/1/URI: artifact file name \"a.zip\" is used twice in this manifest (each must be unique)",
            ),
            (
                with(hello(), "/Manifests", json!([{"Lifecycle": {"Run": "a", "Startup": "b"}}])),
                "/Manifests/0/Lifecycle/Startup: Run and Startup are mutually exclusive: a lifecycle defines only one of them",
            ),
            (
                with(hello(), "/Manifests", json!([{"Platform": {"os": "/lin(/"}}])),
                "/Manifests/0/Platform/os: platform regular expression \"/lin(/\" does not compile: ",
            ),
            (with(hello(), "/Manifests", json!([])), "/Manifests: Manifests must list at least one manifest"),
            (
                with(hello(), "/componentname", json!("com.example.Other")),
                "/componentname: duplicate key: \"componentname\" and \"ComponentName\" are the same key (recipe keys are case-insensitive)",
            ),
            (
                with(hello(), "/ComponentConfiguration", json!({"DefaultConfiguration": [1]})),
                "/ComponentConfiguration/DefaultConfiguration: DefaultConfiguration must be an object, found a list",
            ),
            (without(hello(), "/ComponentVersion"), "(document): ComponentVersion is required"),
            (json!(["not", "a", "recipe"]), "(document): a recipe must be an object, found a list"),
        ];
        for (doc, expected) in cases {
            let got = faults(&typed(), &doc);
            assert!(got.len() == 1 && got[0].starts_with(expected), "expected {expected:?}, got {got:#?}");
        }
    }

    #[test]
    fn reserved_names_can_be_allowed_on_purpose() {
        let doc = with(hello(), "/ComponentName", json!("aws.greengrass.Override"));
        assert!(typed().allow_reserved_names(true).load_document(&doc, None).is_ok());
    }

    #[test]
    fn errors_name_the_recipe() {
        let doc = without(hello(), "/Manifests");
        let by_component = typed().load_document(&doc, None).unwrap_err().to_string();
        assert_eq!(by_component, "recipe for component com.example.Hello: (document): Manifests is required");
        let by_file = typed().load_document(&doc, Some("recipes/hello.yaml")).unwrap_err().to_string();
        assert_eq!(by_file, "recipe recipes/hello.yaml: (document): Manifests is required");
        let syntax = typed().load_str("a: [", RecipeFormat::Yaml, Some("bad.yaml")).unwrap_err().to_string();
        assert!(syntax.starts_with("recipe bad.yaml: not valid YAML: "), "{syntax}");
        let syntax = typed().load_str("{\"a\": ", RecipeFormat::Json, Some("bad.json")).unwrap_err().to_string();
        assert!(syntax.starts_with("recipe bad.json: not valid JSON: "), "{syntax}");
    }

    #[test]
    fn unknown_keys_are_warnings_without_the_schema() {
        let doc = with(hello(), "/Extra", json!(1));
        let loaded = typed().load_document(&doc, None).unwrap();
        assert!(
            loaded.warnings.iter().any(|w| w.to_string() == "/Extra: unknown recipe key \"Extra\" is ignored"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn schema_violations_give_the_path_in_recipe_spelling() {
        let loader = RecipeLoader::with_schema(real_schema());
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (
                with(hello(), "/Extra", json!(1)),
                vec!["(document): Additional properties are not allowed ('extra' was unexpected)"],
            ),
            (
                with(hello(), "/ComponentSource", json!("not-an-arn")),
                vec![
                    "/ComponentSource: \"not-an-arn\" does not match \"^arn:aws(-(cn|us-gov|iso(-[a-z])?))?:lambda:.*$\"",
                ],
            ),
            (
                with(without(hello(), "/ComponentVersion"), "/Extra", json!(1)),
                vec![
                    "(document): \"componentversion\" is a required property",
                    "(document): Additional properties are not allowed ('extra' was unexpected)",
                ],
            ),
        ];
        for (doc, expected) in cases {
            let mut got = faults(&loader, &doc);
            got.sort();
            let mut expected: Vec<String> = expected.into_iter().map(str::to_owned).collect();
            expected.sort();
            assert_eq!(got, expected, "{doc}");
        }
    }

    #[test]
    fn typed_faults_are_preferred_to_vaguer_schema_faults_at_the_same_node() {
        let loader = RecipeLoader::with_schema(real_schema());
        let cases: Vec<(Value, &str)> = vec![
            (
                with(
                    hello(),
                    "/ComponentDependencies",
                    json!({"Lib": {"VersionRequirement": "^1.0.0", "DependencyType": "OPTIONAL"}}),
                ),
                "/ComponentDependencies/Lib/DependencyType: DependencyType must be HARD or SOFT, found \"OPTIONAL\"",
            ),
            (
                with(hello(), "/Manifests", json!([{"Lifecycle": {"Install": {"Script": "x", "Skipif": "which x"}}}])),
                "/Manifests/0/Lifecycle/Install/Skipif: Skipif \"which x\" must be \"onpath <executable>\" or \"exists <file>\"",
            ),
            (
                with(hello(), "/Manifests", json!([{"Lifecycle": {"Run": {"Timeout": 5}}}])),
                "/Manifests/0/Lifecycle/Run: Run is an object without Script",
            ),
            (
                with(hello(), "/ComponentDescription", json!(5)),
                "/ComponentDescription: ComponentDescription must be a string, found a number",
            ),
            (
                with(hello(), "/Manifests", json!([{"Artifacts": [{"Unarchive": "ZIP"}]}])),
                "/Manifests/0/Artifacts/0: URI is required",
            ),
        ];
        for (doc, expected) in cases {
            assert_eq!(faults(&loader, &doc), vec![expected.to_owned()], "{doc}");
        }
    }

    #[test]
    fn valid_recipe_passes_the_real_schema() {
        let loader = RecipeLoader::with_schema(real_schema());
        let loaded = loader.load_document(&hello(), None).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }

    #[test]
    fn first_matching_manifest_wins() {
        let doc = with(
            hello(),
            "/Manifests",
            json!([
                {"Name": "arm", "Platform": {"os": "linux", "architecture": "/arm|aarch64/"}, "Lifecycle": {"Run": "arm"}},
                {"Name": "linux", "Platform": {"os": "linux"}, "Lifecycle": {"Run": "linux"}},
                {"Name": "any", "Lifecycle": {"Run": "any"}}
            ]),
        );
        let recipe = typed().load_document(&doc, None).unwrap().recipe;
        let cases = [
            (DevicePlatform::new("linux", "aarch64"), "arm"),
            (DevicePlatform::new("linux", "amd64"), "linux"),
            (DevicePlatform::new("windows", "amd64"), "any"),
        ];
        for (device, expected) in cases {
            assert_eq!(recipe.select_manifest(&device).unwrap().name.as_deref(), Some(expected), "{device:?}");
        }
        let strict = with(hello(), "/Manifests", json!([{"Platform": {"os": "windows"}, "Lifecycle": {"Run": "w"}}]));
        let recipe = typed().load_document(&strict, None).unwrap().recipe;
        assert!(recipe.select_manifest(&DevicePlatform::new("linux", "amd64")).is_none());
    }

    #[test]
    fn bottom_level_selection_keys_pick_the_script() {
        // The recipe reference's "global lifecycle with bottom-level selection keys" example.
        let doc = with(
            with(hello(), "/Lifecycle", json!({"Install": {"Script": {"key1": "command1", "all": "command3"}}})),
            "/Manifests",
            json!([
                {"Platform": {"os": "linux"}, "Selections": ["key1"]},
                {}
            ]),
        );
        let recipe = typed().load_document(&doc, None).unwrap().recipe;
        let install = |i: usize| recipe.manifests[i].lifecycle.step(StepKind::Install).unwrap().script.clone();
        assert_eq!((install(0).as_str(), install(1).as_str()), ("command1", "command3"));
        assert_eq!(faults(&RecipeLoader::with_schema(real_schema()), &doc), Vec::<String>::new());
    }

    #[test]
    fn manifests_without_lifecycle_use_the_global_lifecycle_selections() {
        let doc = with(
            with(
                hello(),
                "/Lifecycle",
                json!({
                    "debian": {"Install": "apt-get install -y foo"},
                    "all": {"Install": "echo generic", "Run": "run"}
                }),
            ),
            "/Manifests",
            json!([
                {"Platform": {"os": "linux"}, "Selections": ["debian"]},
                {"Platform": {"os": "darwin"}},
                {"Platform": {"os": "windows"}, "Lifecycle": {"Run": "own"}}
            ]),
        );
        let recipe = typed().load_document(&doc, None).unwrap().recipe;
        let install = |i: usize| recipe.manifests[i].lifecycle.step(StepKind::Install).map(|s| s.script.clone());
        assert_eq!(install(0).as_deref(), Some("apt-get install -y foo"));
        assert_eq!(install(1).as_deref(), Some("echo generic"));
        assert_eq!(install(2), None);
        assert_eq!(recipe.manifests[2].lifecycle.step(StepKind::Run).unwrap().script, "own");
    }
}
