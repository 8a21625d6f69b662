//! Greengrass component recipes (YAML and JSON), through the simulated core's recipe loader.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;

use device_sim::recipe::config::EffectiveConfiguration;
use device_sim::recipe::model::{RECIPE_FORMAT_VERSION, RESERVED_NAME_PREFIX};
use device_sim::recipe::parse::{MAX_NAME_LEN, parse_document};
use device_sim::recipe::{
    Catalog, ComponentLocations, ComponentVariables, ComponentVersion, DevicePlatform, InterpolationContext,
    LoadedRecipe, Recipe, RecipeFormat, RecipeLoader, RootRequirement, Scope, VersionRequirement, resolve,
};
use serde_json::Value;

use crate::Outcome;

/// The loader the core uses ([`RecipeLoader::discover`]: with the GDK schema when it is found),
/// built once.
fn loader() -> &'static RecipeLoader {
    static LOADER: OnceLock<RecipeLoader> = OnceLock::new();
    LOADER.get_or_init(|| {
        RecipeLoader::discover(None).unwrap_or_else(|e| RecipeLoader::without_schema(format!("schema unusable: {e}")))
    })
}

/// Feeds `data` as the text of a recipe file to [`RecipeLoader::load_str`], as YAML and as
/// JSON (the core reads a `.yaml`/`.yml`/`.json` file as text and calls the same function), then
/// does with an accepted recipe what the core does next: picks the manifest for the device,
/// expands recipe variables in its lifecycle and default configuration, builds the
/// configuration, and resolves the recipe's dependencies.
///
/// Checks on an accepted recipe: the promises of the typed checks (`RecipeFormatVersion`
/// `2020-01-25`, a valid unreserved name, a version that prints and parses back to itself, at
/// least one manifest, unique artifact file names within a manifest); the recipe does not
/// depend on its text format: its document written as JSON loads to the same recipe; the
/// resolution of the recipe alone starts it last.
pub fn recipe(data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else { return Outcome::Rejected };
    let mut accepted = false;
    for format in [RecipeFormat::Yaml, RecipeFormat::Json] {
        if let Ok(loaded) = loader().load_str(text, format, Some("fuzz-input")) {
            check_loaded(text, format, &loaded);
            accepted = true;
        }
    }
    Outcome::of(accepted)
}

fn check_loaded(text: &str, format: RecipeFormat, loaded: &LoadedRecipe) {
    let recipe = &loaded.recipe;
    assert_eq!(recipe.format_version, RECIPE_FORMAT_VERSION);
    assert!(!recipe.name.is_empty() && recipe.name.len() <= MAX_NAME_LEN, "name {:?}", recipe.name);
    assert!(!recipe.name.to_ascii_lowercase().starts_with(RESERVED_NAME_PREFIX), "reserved name {:?}", recipe.name);
    let printed = recipe.version.to_string();
    let reparsed = ComponentVersion::parse(&printed).expect("an accepted version prints as a valid version");
    assert_eq!(reparsed.to_string(), printed, "the version prints back the same");
    assert!(!recipe.manifests.is_empty(), "an accepted recipe has a manifest");
    for manifest in &recipe.manifests {
        let mut names = HashSet::new();
        for artifact in &manifest.artifacts {
            assert!(names.insert(artifact.file_name()), "artifact file name {:?} twice", artifact.file_name());
        }
    }

    // The same document written as JSON loads to the same recipe.
    let doc = parse_document(text, format, "fuzz-input").expect("an accepted recipe parses");
    let json = serde_json::to_string(&doc).expect("a recipe document serializes");
    let again = loader().load_str(&json, RecipeFormat::Json, Some("fuzz-input")).expect("the JSON form loads");
    assert_eq!(format!("{:?}", again.recipe), format!("{recipe:?}"), "the JSON form is the same recipe");

    use_like_the_core(recipe);
}

/// What the core does with a loaded recipe when it deploys it.
fn use_like_the_core(recipe: &Recipe) {
    let configuration = EffectiveConfiguration::from_defaults(&recipe.default_configuration).to_value();
    assert!(configuration.is_object(), "the configuration is an object");
    let context = InterpolationContext {
        own: ComponentVariables {
            locations: ComponentLocations::under_root(Path::new("/greengrass/v2"), &recipe.name, &printed(recipe)),
            configuration,
        },
        dependencies: BTreeMap::new(),
        kernel_root_path: "/greengrass/v2".to_owned(),
        thing_name: "pump-1".to_owned(),
    };
    context.expand_configuration(&Value::Object(recipe.default_configuration.clone()));
    for device in [DevicePlatform::new("linux", "amd64"), DevicePlatform::new("windows", "aarch64")] {
        if let Some(manifest) = recipe.select_manifest(&device) {
            let lifecycle = context.expand_lifecycle(&manifest.lifecycle);
            for step in &lifecycle.steps {
                lifecycle.environment(step);
                context.expand(&step.script, Scope::Lifecycle);
            }
        }
    }

    let mut catalog = Catalog::new();
    catalog.add(recipe.clone());
    let root = RootRequirement { name: recipe.name.clone(), requirement: VersionRequirement::exact(&recipe.version) };
    if let Ok(resolution) = resolve(&catalog, &[root]) {
        assert_eq!(resolution.start_order().last(), Some(&recipe.name.as_str()), "the root starts last");
    }
}

fn printed(recipe: &Recipe) -> String {
    recipe.version.to_string()
}
