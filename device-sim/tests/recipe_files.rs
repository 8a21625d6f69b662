//! The example recipes under `tests/recipes/`: good ones load and pass the real GDK schema,
//! broken ones fail with a message naming the file and the node at fault, and the good ones
//! resolve, select a manifest and expand their variables end to end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use device_sim::recipe::{
    Catalog, ComponentLocations, ComponentVariables, ComponentVersion, ConfigurationUpdate, DevicePlatform,
    EffectiveConfiguration, InterpolationContext, LoadedRecipe, RecipeError, RecipeLoader, RootRequirement, Scope,
    StepKind, resolve,
};
use serde_json::json;

fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recipes")
}

/// The loader with the real GDK schema (`../shared/reference`, or `GDK_RECIPE_SCHEMA`).
fn loader() -> RecipeLoader {
    let loader = RecipeLoader::discover(None).expect("GDK recipe schema loads");
    assert!(loader.schema().is_some(), "GDK recipe schema not found: {:?}", loader.schema_warning());
    loader
}

fn load(name: &str) -> LoadedRecipe {
    let path = recipes_dir().join(name);
    loader().load_file(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn good_recipes_pass_the_schema_and_typed_checks_without_warnings() {
    for name in ["hello.yaml", "hello.json", "app-with-dependency.yaml"] {
        let loaded = load(name);
        assert!(loaded.warnings.is_empty(), "{name}: {:?}", loaded.warnings);
    }
}

#[test]
fn yaml_and_json_hello_recipes_are_the_same_recipe() {
    let yaml = load("hello.yaml").recipe;
    let json = load("hello.json").recipe;
    assert_eq!(format!("{yaml:?}"), format!("{json:?}"));
}

#[test]
fn broken_recipes_fail_naming_the_file_and_the_node() {
    let cases: &[(&str, &str)] = &[
        ("run-and-startup.yaml", "/Manifests/0/Lifecycle/Startup: Run and Startup are mutually exclusive"),
        ("bad-version.yaml", "/ComponentVersion: ComponentVersion: \"1.0\" is not a semantic version"),
        ("bad-dependency.json", "/ComponentDependencies/com.example.Hello/DependencyType: "),
        ("reserved-name.yaml", "/ComponentName: ComponentName \"aws.greengrass.MyComponent\" uses the prefix"),
        ("missing-manifests.yaml", "(document): \"manifests\" is a required property"),
        ("bad-skipif.yaml", "/Manifests/0/Lifecycle/Install"),
        ("step-without-script.yaml", "/Manifests/0/Lifecycle/Run"),
        ("unknown-key.yaml", "(document): Additional properties are not allowed ('componentauthor' was unexpected)"),
    ];
    let loader = loader();
    for (file, expected) in cases {
        let path = recipes_dir().join("broken").join(file);
        let err = loader.load_file(&path).expect_err(file);
        let text = err.to_string();
        assert!(text.starts_with(&format!("recipe {}: ", path.display())), "{text}");
        assert!(text.contains(expected), "{file}: expected {expected:?} in:\n{text}");
    }
}

#[test]
fn syntax_errors_say_where() {
    let path = recipes_dir().join("broken/not-yaml.yaml");
    let err = loader().load_file(&path).unwrap_err();
    assert!(matches!(err, RecipeError::Syntax { .. }), "{err}");
    assert!(err.to_string().contains("line"), "{err}");
}

#[test]
fn unknown_keys_only_warn_without_the_schema() {
    let typed = RecipeLoader::without_schema("not wanted here");
    let loaded = typed.load_file(&recipes_dir().join("broken/unknown-key.yaml")).unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings.contains(&"/ComponentAuthor: unknown recipe key \"ComponentAuthor\" is ignored".to_owned()),
        "{warnings:?}"
    );
}

#[test]
fn missing_file_and_unknown_extension_are_clear_errors() {
    let err = loader().load_file(&recipes_dir().join("nope.yaml")).unwrap_err();
    assert!(matches!(err, RecipeError::Read { .. }), "{err}");
    let err = loader().load_file(&recipes_dir().join("hello.txt")).unwrap_err();
    assert!(err.to_string().contains("unknown recipe format"), "{err}");
}

#[test]
fn app_manifest_depends_on_the_device_platform() {
    let app = load("app-with-dependency.yaml").recipe;
    let amd64 = app.select_manifest(&DevicePlatform::new("linux", "amd64")).unwrap();
    let install = amd64.lifecycle.step(StepKind::Install).unwrap();
    assert_eq!(install.script, "apt-get install -y python3");
    assert!(install.requires_privilege);
    assert_eq!(install.timeout(), Some(Duration::from_secs(300)));
    let skip = install.skip_if.as_ref().unwrap();
    assert!(skip.should_skip(&|exe| exe == "python3", &|_| false));

    let arm = app.select_manifest(&DevicePlatform::new("linux", "arm")).unwrap();
    assert!(arm.lifecycle.step(StepKind::Install).is_none());
    assert_eq!(arm.lifecycle.step(StepKind::Recover).unwrap().timeout(), Some(Duration::from_secs(30)));
    assert_eq!(arm.lifecycle.step(StepKind::Shutdown).unwrap().timeout(), Some(Duration::from_secs(15)));

    assert!(app.select_manifest(&DevicePlatform::new("windows", "amd64")).is_none());
}

#[test]
fn deployment_resolves_orders_configures_and_expands_variables() {
    let hello = load("hello.yaml").recipe;
    let app = load("app-with-dependency.yaml").recipe;
    let mut catalog = Catalog::new();
    catalog.add(hello.clone());
    catalog.add(app.clone());
    catalog.add_builtin("aws.greengrass.Nucleus", ComponentVersion::parse("2.14.0").unwrap());

    let roots = [RootRequirement::parse_merge("com.example.App=1.0.0").unwrap()];
    let resolution = resolve(&catalog, &roots).unwrap();
    assert_eq!(resolution.start_order(), ["com.example.Hello", "aws.greengrass.Nucleus", "com.example.App"]);
    assert!(resolution.hard_dependents("com.example.Hello").is_empty(), "Hello is a SOFT dependency");
    assert_eq!(resolution.hard_dependents("aws.greengrass.Nucleus"), ["com.example.App"]);

    // Hello is deployed with a merge update; App with its defaults.
    let update =
        ConfigurationUpdate::from_deployment(Some(r#"{"Message": "pumps", "Repeat": {"Times": 1}}"#), vec![]).unwrap();
    let hello_config =
        EffectiveConfiguration::apply(None, &hello.default_configuration, &update).unwrap().configuration.to_value();
    assert_eq!(hello_config, json!({"Message": "pumps", "Repeat": {"Times": 1, "IntervalSeconds": "10"}}));
    let app_config = EffectiveConfiguration::from_defaults(&app.default_configuration).to_value();

    let root = Path::new("/greengrass/v2");
    let ctx = InterpolationContext {
        own: ComponentVariables {
            locations: ComponentLocations::under_root(root, "com.example.App", "1.0.0"),
            configuration: app_config.clone(),
        },
        dependencies: BTreeMap::from([(
            "com.example.Hello".to_owned(),
            ComponentVariables {
                locations: ComponentLocations::under_root(root, "com.example.Hello", "1.0.0"),
                configuration: hello_config,
            },
        )]),
        kernel_root_path: root.display().to_string(),
        thing_name: "PumpStation-1".to_owned(),
    };
    let manifest = app.select_manifest(&DevicePlatform::new("linux", "amd64")).unwrap();
    let lifecycle = ctx.expand_lifecycle(&manifest.lifecycle);
    let startup = lifecycle.step(StepKind::Startup).unwrap();
    assert_eq!(
        startup.script,
        "/greengrass/v2/packages/artifacts-unarchived/com.example.App/1.0.0/app/start.sh --port 8080 \
         --greeting 'pumps' --hello-bin /greengrass/v2/packages/artifacts/com.example.Hello/1.0.0/hello"
    );
    assert_eq!(
        lifecycle.environment(startup),
        [("APP_WORK".to_owned(), "/greengrass/v2/work/com.example.App".to_owned())]
    );

    // interpolateComponentConfiguration: system variables only.
    assert_eq!(ctx.expand_configuration(&app_config), json!({"Port": 8080, "Topic": "things/PumpStation-1/app"}));
    assert_eq!(ctx.expand("{configuration:/Port}", Scope::Configuration), "{configuration:/Port}");
}
