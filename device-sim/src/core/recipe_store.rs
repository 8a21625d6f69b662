//! The core's recipe store: recipes loaded from a directory into a catalog, the copies the
//! nucleus keeps of what it runs (`packages/recipes/`), and the deployment document's pieces
//! every deployment reads (the Greengrass CLI's configuration update, `accessControl` with
//! `{iot:thingName}` expanded). Used by the start and by local deployments alike; depends on
//! nothing of the core but [`crate::recipe`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::recipe::{
    Catalog, ComponentVersion, ConfigurationUpdate, Recipe, RecipeError, RecipeFormat, RecipeLoader, Resolution,
    SchemaError,
};

/// Why the recipes of a directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RecipeStoreError {
    /// An explicitly named GDK schema could not be loaded.
    #[error("cannot load the recipe schema")]
    Schema(#[source] SchemaError),
    /// The recipe directory could not be read.
    #[error("cannot read the recipe directory {}", path.display())]
    RecipeDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A recipe file is invalid.
    #[error("invalid recipe")]
    Recipe(#[source] RecipeError),
    /// Two recipe files declare the same component version.
    #[error("{component} {version} is declared by both {} and {}", first.display(), second.display())]
    DuplicateRecipe {
        /// Component name.
        component: String,
        /// Component version.
        version: String,
        /// The first file.
        first: PathBuf,
        /// The second file.
        second: PathBuf,
    },
}

/// The configuration a built-in component (no recipe, no defaults) gets from its
/// `--update-config` update; `Null` without one.
pub fn builtin_configuration(update: Option<&ConfigurationUpdate>) -> Result<Value, String> {
    match update {
        Some(u) => Ok(crate::recipe::EffectiveConfiguration::apply(None, &serde_json::Map::new(), u)
            .map_err(|e| e.to_string())?
            .configuration
            .to_value()),
        None => Ok(Value::Null),
    }
}

/// Parses the Greengrass CLI's `--update-config` document:
/// `{"ComponentName": {"MERGE": {…}, "RESET": ["/pointer", …]}, …}` (`merge`/`reset` in any case).
pub fn parse_update_config(doc: &Value) -> Result<HashMap<String, ConfigurationUpdate>, String> {
    let obj = doc.as_object().ok_or("the configuration update must be a JSON object of component names")?;
    let mut out = HashMap::new();
    for (name, update) in obj {
        let update = update.as_object().ok_or(format!("{name}: must be an object with MERGE and/or RESET"))?;
        let mut parsed = ConfigurationUpdate::default();
        for (k, v) in update {
            match k.to_ascii_uppercase().as_str() {
                "MERGE" => {
                    parsed.merge = Some(v.as_object().cloned().ok_or(format!("{name}.MERGE must be a JSON object"))?)
                }
                "RESET" => {
                    let list = v.as_array().ok_or(format!("{name}.RESET must be a list of JSON pointers"))?;
                    parsed.reset = list
                        .iter()
                        .map(|p| p.as_str().map(str::to_owned).ok_or(format!("{name}.RESET must hold strings")))
                        .collect::<Result<_, _>>()?;
                }
                other => return Err(format!("{name}: unknown key {other:?} (expected MERGE or RESET)")),
            }
        }
        out.insert(name.clone(), parsed);
    }
    Ok(out)
}

/// Recipe files directly in `dir`, sorted by path (for deterministic errors).
fn recipe_files(dir: &Path) -> Result<Vec<PathBuf>, RecipeStoreError> {
    let read_err = |source| RecipeStoreError::RecipeDir { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_file() && RecipeFormat::from_path(&path).is_some() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Where each loaded recipe came from: (name, version) → file.
pub(crate) type RecipeOrigins = HashMap<(String, String), PathBuf>;

/// Loads every recipe of `dir` into a catalog that also holds the `builtins` (name, version);
/// returns the warnings to pass on and each recipe's file.
pub(crate) fn load_catalog(
    dir: &Path,
    builtins: &[(&str, &str)],
) -> Result<(Catalog, Vec<String>, RecipeOrigins), RecipeStoreError> {
    let (mut catalog, _, _) = load_catalog_of_builtins(builtins);
    let (recipes, warnings, origin) = load_recipes(dir)?;
    for recipe in recipes {
        catalog.add(recipe);
    }
    Ok((catalog, warnings, origin))
}

/// A catalog of only the `builtins` (name, version), in [`load_catalog`]'s shape.
pub(crate) fn load_catalog_of_builtins(builtins: &[(&str, &str)]) -> (Catalog, Vec<String>, RecipeOrigins) {
    let mut catalog = Catalog::new();
    for &(name, version) in builtins {
        catalog.add_builtin(name, ComponentVersion::parse(version).unwrap_or_else(|_| unreachable!("valid constant")));
    }
    (catalog, Vec::new(), HashMap::new())
}

/// Loads every recipe of `dir`; returns them, the warnings to pass on and each recipe's file.
pub(crate) fn load_recipes(dir: &Path) -> Result<(Vec<Recipe>, Vec<String>, RecipeOrigins), RecipeStoreError> {
    let loader = RecipeLoader::discover(None).map_err(RecipeStoreError::Schema)?;
    let mut warnings = Vec::new();
    if let Some(why) = loader.schema_warning() {
        warnings.push(format!("recipes are not checked against the GDK schema: {why}"));
    }
    let mut recipes = Vec::new();
    let mut origin: RecipeOrigins = HashMap::new();
    for file in recipe_files(dir)? {
        let loaded = loader.load_file(&file).map_err(RecipeStoreError::Recipe)?;
        for w in &loaded.warnings {
            warnings.push(format!("{}: {w}", file.display()));
        }
        let key = (loaded.recipe.name.clone(), loaded.recipe.version.to_string());
        if let Some(first) = origin.get(&key) {
            return Err(RecipeStoreError::DuplicateRecipe {
                component: key.0,
                version: key.1,
                first: first.clone(),
                second: file,
            });
        }
        origin.insert(key, file);
        recipes.push(loaded.recipe);
    }
    Ok((recipes, warnings, origin))
}

/// Keeps a copy of each deployed recipe in `packages/recipes/{Name}-{Version}.recipe.{ext}`, as
/// the nucleus keeps the recipes of what it runs.
pub(crate) fn store_recipes(
    layout_dir: &Path,
    resolution: &Resolution,
    origins: &RecipeOrigins,
) -> std::io::Result<()> {
    std::fs::create_dir_all(layout_dir)?;
    for c in resolution.components.iter().filter(|c| !c.builtin) {
        let key = (c.name.clone(), c.version.to_string());
        if let Some(file) = origins.get(&key) {
            let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("yaml");
            let copy = layout_dir.join(format!("{}-{}.recipe.{ext}", c.name, c.version));
            // A recipe from the cloud is kept there already: copying a file onto itself empties it.
            if *file != copy {
                std::fs::copy(file, copy)?;
            }
        }
    }
    Ok(())
}

/// `accessControl` with `{iot:thingName}` expanded in policy resources (the nucleus expands
/// this one variable there, whatever `interpolateComponentConfiguration` says).
pub(crate) fn access_configuration(configuration: &Value, thing: &str) -> Value {
    let mut out = configuration.clone();
    if let Some(services) = out.get_mut("accessControl").and_then(Value::as_object_mut) {
        for policy in services.values_mut().filter_map(Value::as_object_mut).flat_map(|p| p.values_mut()) {
            if let Some(resources) = policy.get_mut("resources").and_then(Value::as_array_mut) {
                for r in resources.iter_mut() {
                    if let Value::String(s) = r {
                        *s = s.replace("{iot:thingName}", thing);
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thing_name_is_expanded_in_policy_resources_only() {
        let config = json!({
            "topic": "{iot:thingName}/x",
            "accessControl": {"aws.greengrass.ShadowManager": {"p:1": {
                "operations": ["*"],
                "resources": ["$aws/things/{iot:thingName}/shadow", 5]
            }}}
        });
        let out = access_configuration(&config, "core-1");
        assert_eq!(out["topic"], "{iot:thingName}/x");
        assert_eq!(
            out["accessControl"]["aws.greengrass.ShadowManager"]["p:1"]["resources"],
            json!(["$aws/things/core-1/shadow", 5])
        );
    }

    #[test]
    fn update_config_reads_the_greengrass_cli_shape() {
        let doc = json!({"A": {"MERGE": {"x": 1}, "RESET": ["/y"]}, "B": {"merge": {}}});
        let parsed = parse_update_config(&doc).unwrap();
        assert_eq!(parsed["A"].reset, ["/y"]);
        assert_eq!(parsed["A"].merge.as_ref().unwrap()["x"], 1);
        for (bad, says) in [
            (json!([1]), "JSON object of component names"),
            (json!({"A": {"MERGE": [1]}}), "A.MERGE must be a JSON object"),
            (json!({"A": {"RESET": "/x"}}), "A.RESET must be a list"),
            (json!({"A": {"UPDATE": {}}}), "unknown key"),
        ] {
            let err = parse_update_config(&bad).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
