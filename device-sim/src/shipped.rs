//! The pump station's components as shipped in `components/` (recipes, and the model's files
//! carried in this binary), and their build into the GDK layout with the component binaries
//! of a directory ([`provision::component`]): what the demo and the fleet publish and deploy.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use provision::component::{BuildSpec, BuiltComponent};

/// The version every shipped component is at.
pub const VERSION: &str = "1.0.0";

/// A component of the deployment: its name, its artifact's file name, its recipe.
pub struct Component {
    /// ComponentName.
    pub name: &'static str,
    /// The artifact the recipe runs.
    pub artifact: &'static str,
    /// The recipe, as shipped.
    pub recipe: &'static str,
}

/// The deployment, recipes as shipped in `components/`.
pub const COMPONENTS: &[Component] = &[
    Component {
        name: pump_types::SENSOR_COMPONENT,
        artifact: "pump-sensor",
        recipe: include_str!("../../components/sensor/recipe.yaml"),
    },
    Component {
        name: pump_types::ANALYZER_COMPONENT,
        artifact: "pump-analyzer",
        recipe: include_str!("../../components/analyzer/recipe.yaml"),
    },
    Component {
        name: pump_types::CONTROLLER_COMPONENT,
        artifact: "pump-controller",
        recipe: include_str!("../../components/controller/recipe.yaml"),
    },
];

/// The model component `com.example.pump.Model`: data, not a program. The analyzer depends on
/// it (SOFT), so the core resolves it from the recipes staged with the others.
pub struct ModelComponent {
    /// ComponentName.
    pub name: &'static str,
    /// The recipe, as shipped.
    pub recipe: &'static str,
    /// The artifacts by file name, carried in this binary so it runs from anywhere; the core
    /// checks each against the recipe's `Digest`.
    pub artifacts: &'static [(&'static str, &'static [u8])],
}

/// The model component, as shipped in `components/model`.
pub const MODEL: ModelComponent = ModelComponent {
    name: pump_types::MODEL_COMPONENT,
    recipe: include_str!("../../components/model/recipe.yaml"),
    artifacts: &[
        ("model.onnx", include_bytes!("../../components/model/model.onnx")),
        ("model-card.json", include_bytes!("../../components/model/model-card.json")),
    ],
};

/// Writes the shipped component sources (recipes, the model's files) under `{dir}/components`
/// and builds them with the binaries of `bins` into `{dir}/greengrass-build`.
pub fn build(dir: &Path, bins: &Path) -> anyhow::Result<Vec<BuiltComponent>> {
    let sources = dir.join("components");
    let mut component_dirs = Vec::new();
    for c in COMPONENTS {
        let d = sources.join(c.artifact);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("recipe.yaml"), c.recipe)?;
        component_dirs.push(d);
    }
    component_dirs.push(write_model(&sources, &MODEL)?);
    let spec = BuildSpec { component_dirs, bin_dir: bins.to_owned(), out: dir.to_owned() };
    provision::component::build_components(&spec).context("building the components")
}

/// Writes `model` as a component directory (its recipe and artifacts) under `dir`.
pub fn write_model(dir: &Path, model: &ModelComponent) -> anyhow::Result<PathBuf> {
    let out = dir.join(model.name);
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("recipe.yaml"), model.recipe)?;
    for (name, bytes) in model.artifacts {
        std::fs::write(out.join(name), bytes)?;
    }
    Ok(out)
}
