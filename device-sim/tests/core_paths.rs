//! The core works from relative paths: recipe variables and a component's working directory
//! always see absolute ones, as on a real nucleus; and it keeps the recipes it deployed.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use device_sim::core::ComponentState;
use device_sim::core::runtime::{Core, CoreOptions};
use device_sim::recipe::DevicePlatform;

const RECIPE: &str = r#"
RecipeFormatVersion: "2020-01-25"
ComponentName: com.example.Paths
ComponentVersion: "1.0.0"
Manifests:
  - Lifecycle:
      Run: >-
        case '{kernel:rootPath}|{work:path}|{artifacts:path}' in
        /*'|'/*'|'/*) test -d '{work:path}' && exit 0 ;;
        esac; exit 3
"#;

/// `target` as seen from the current directory (`../..` up to `/`, then down).
fn relative_to_cwd(target: &Path) -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    let mut rel = PathBuf::new();
    for _ in cwd.components().filter(|c| matches!(c, Component::Normal(_))) {
        rel.push("..");
    }
    rel.join(target.strip_prefix("/").unwrap())
}

#[tokio::test]
async fn a_core_started_with_relative_paths_gives_components_absolute_ones() {
    let dir = tempfile::tempdir().unwrap();
    let recipes = dir.path().join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    std::fs::create_dir_all(dir.path().join("artifacts")).unwrap();
    std::fs::write(recipes.join("paths.yaml"), RECIPE).unwrap();
    let root = relative_to_cwd(&dir.path().join("root"));
    assert!(root.is_relative());
    let core = Core::start(CoreOptions {
        root,
        thing: "core".into(),
        recipe_dir: relative_to_cwd(&recipes),
        artifact_dir: relative_to_cwd(&dir.path().join("artifacts")),
        merges: vec!["com.example.Paths=1.0.0".into()],
        region: "us-east-1".into(),
        root_ca_path: None,
        platform: DevicePlatform::current(),
        update_config: Default::default(),
        cloud: None,
        nucleus_version: CoreOptions::default_nucleus_version(),
    })
    .await
    .unwrap();
    let state = core
        .wait_for_state(
            "com.example.Paths",
            &[ComponentState::Finished, ComponentState::Broken],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(state, Some(ComponentState::Finished), "the component saw a relative path");
    let stored = dir.path().join("root/packages/recipes/com.example.Paths-1.0.0.recipe.yaml");
    assert_eq!(std::fs::read_to_string(stored).unwrap(), RECIPE, "the deployed recipe is kept under packages/recipes");
    core.shutdown(Duration::from_secs(10)).await;
}
