//! `provision model release`: a trained model directory becomes a new `com.example.pump.Model`
//! component version, published and deployed to a thing group over the air.
//!
//! The steps, each usable alone:
//! 1. [`check_model_dir`]: the analyzer's own checks, by running the model checker
//!    (`pump-model-check`, built from the analyzer's loader) on the directory, and the card's
//!    `version` against the component version ([`release_version`]). A model the analyzer would
//!    refuse is refused here, before anything is published.
//! 2. [`stage_release`]: the component's recipe ([`release_recipe`]: the shipped recipe of
//!    `components/model` at the new version, with the checker as a third artifact that its
//!    Install runs before the `current` link moves), the model's files and the checker, built
//!    into the GDK layout with every artifact's digest ([`crate::component::build_components`]).
//! 3. [`crate::component::publish_build`]: S3 and CreateComponentVersion.
//! 4. [`deploy_model_version`]: a revision of the thing group's latest deployment with only the
//!    model's version changed and `failureHandlingPolicy` ROLLBACK, so that a model the device
//!    refuses (its Install fails) rolls every core back to the version it ran.
//!
//! Greengrass V2 API Reference (ListDeployments, GetDeployment, CreateDeployment) and the
//! Greengrass developer guide, "Create deployments" (a thing group has one deployment; a new one
//! revises it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::component::{BuildSpec, BuiltComponent};
use crate::deploy::CreatedDeployment;
use crate::error::ProvisionError;

/// The model component's name.
pub const MODEL_COMPONENT: &str = "com.example.pump.Model";
/// The model checker's file name, in `--bin-dir` and among a released version's artifacts.
pub const CHECKER: &str = "pump-model-check";
/// The model card's file name.
pub const CARD_FILE: &str = "model-card.json";
/// The model component as shipped (`components/model/recipe.yaml`): the template of a release.
pub const SHIPPED_RECIPE: &str = include_str!("../../../components/model/recipe.yaml");

/// What to release.
#[derive(Debug, Clone)]
pub struct ReleaseSpec {
    /// The trained model: `model-card.json` and the files its recipe ships (`model.onnx`).
    pub model_dir: PathBuf,
    /// The component version; `None` takes the card's `version`.
    pub version: Option<String>,
    /// Where `pump-model-check` was built.
    pub bin_dir: PathBuf,
    /// Where the component is staged and built (`{out}/greengrass-build`).
    pub out: PathBuf,
}

/// A model directory that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedModel {
    /// The component version it is released as (the card's `version`).
    pub version: String,
    /// What the checker said (`model ok: NAME VERSION sha256 HEX`).
    pub report: String,
}

/// The version a model is released as: the card's `version`, which `requested` (when given)
/// must equal; a semantic version `MAJOR.MINOR.PATCH`.
pub fn release_version(card_version: &str, requested: Option<&str>) -> Result<String, ProvisionError> {
    if let Some(requested) = requested
        && requested != card_version
    {
        return Err(ProvisionError::InvalidInput(format!(
            "--version {requested} differs from the model card's version {card_version}: the analyzer reports the \
             card's version as the model it runs, so the component version must be the same"
        )));
    }
    let parts: Vec<&str> = card_version.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(ProvisionError::InvalidInput(format!(
            "the model card's version {card_version:?} is not a MAJOR.MINOR.PATCH version"
        )));
    }
    Ok(card_version.to_owned())
}

/// Runs the analyzer's checks on `model_dir` (the checker in `bin_dir`) and checks the card's
/// version against `requested`. Errors name the check that failed.
pub fn check_model_dir(
    model_dir: &Path,
    bin_dir: &Path,
    requested: Option<&str>,
) -> Result<CheckedModel, ProvisionError> {
    let card_path = model_dir.join(CARD_FILE);
    let card = std::fs::read(&card_path).map_err(ProvisionError::file(&card_path))?;
    let card: Value = serde_json::from_slice(&card)
        .map_err(|e| ProvisionError::BadFile { path: card_path.clone(), reason: e.to_string() })?;
    let Some(card_version) = card.get("version").and_then(Value::as_str) else {
        return Err(ProvisionError::BadFile { path: card_path, reason: "no `version`".into() });
    };
    let version = release_version(card_version, requested)?;
    let checker = bin_dir.join(CHECKER);
    if !checker.is_file() {
        return Err(ProvisionError::InvalidInput(format!(
            "the model checker {} is not built (cargo build -p pump-analyzer, then --bin-dir)",
            checker.display()
        )));
    }
    let output = Command::new(&checker).arg(model_dir).output().map_err(ProvisionError::file(&checker))?;
    if !output.status.success() {
        return Err(ProvisionError::InvalidInput(format!(
            "{} fails the analyzer's checks: {}",
            model_dir.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(CheckedModel { version, report: String::from_utf8_lossy(&output.stdout).trim().to_owned() })
}

/// The recipe of model `version`: the shipped recipe (`template`) at `version`, its URIs' version
/// segment changed and their digests left for the build to fill in, plus the checker as an
/// artifact that the Install step runs on the version's artifacts before it moves the link.
pub fn release_recipe(template: &str, version: &str) -> Result<Value, ProvisionError> {
    let bad = |reason: String| ProvisionError::InvalidInput(format!("the shipped model recipe: {reason}"));
    let mut recipe: Value = serde_yaml_ng::from_str(template).map_err(|e| bad(e.to_string()))?;
    let shipped = recipe["ComponentVersion"].as_str().ok_or_else(|| bad("no ComponentVersion".into()))?.to_owned();
    recipe["ComponentVersion"] = json!(version);
    let manifests = recipe["Manifests"].as_array_mut().ok_or_else(|| bad("no Manifests".into()))?;
    for manifest in manifests {
        let artifacts =
            manifest["Artifacts"].as_array_mut().ok_or_else(|| bad("a manifest without Artifacts".into()))?;
        let mut checker_uri = None;
        for artifact in artifacts.iter_mut() {
            let uri = artifact["URI"].as_str().ok_or_else(|| bad("an artifact without URI".into()))?;
            let uri = uri.replace(&format!("/{shipped}/"), &format!("/{version}/"));
            checker_uri = Some(format!("{}/{CHECKER}", uri.rsplit_once('/').map_or("", |(dir, _)| dir)));
            artifact["URI"] = json!(uri);
            if let Some(fields) = artifact.as_object_mut() {
                fields.remove("Digest");
                fields.remove("Algorithm");
            }
        }
        let checker_uri = checker_uri.ok_or_else(|| bad("a manifest without artifacts".into()))?;
        artifacts.push(json!({"URI": checker_uri, "Permission": {"Read": "OWNER", "Execute": "OWNER"}}));
        let install = &mut manifest["Lifecycle"]["Install"];
        let check = format!("'{{artifacts:path}}/{CHECKER}' '{{artifacts:path}}' && ");
        match install {
            Value::String(script) => *script = format!("{check}{script}"),
            Value::Object(step) => {
                let script = step
                    .get("Script")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| bad("Install without Script".into()))?;
                step.insert("Script".into(), json!(format!("{check}{script}")));
            }
            _ => return Err(bad("no Install step".into())),
        }
    }
    Ok(recipe)
}

/// Writes the component's sources (recipe, the artifacts the recipe names from `model_dir`, the
/// checker from `bin_dir`) under `{out}/model-release/{version}` and builds them into
/// `{out}/greengrass-build`. No check is made here: see [`check_model_dir`].
pub fn stage_release(
    model_dir: &Path,
    bin_dir: &Path,
    out: &Path,
    version: &str,
) -> Result<BuiltComponent, ProvisionError> {
    let recipe = release_recipe(SHIPPED_RECIPE, version)?;
    let source = out.join("model-release").join(version);
    std::fs::create_dir_all(&source).map_err(ProvisionError::file(&source))?;
    let yaml = serde_yaml_ng::to_string(&recipe)
        .map_err(|e| ProvisionError::InvalidInput(format!("the release recipe: {e}")))?;
    crate::output::write_atomic(&source.join("recipe.yaml"), yaml.as_bytes(), 0o644)?;
    let checker = bin_dir.join(CHECKER);
    if !checker.is_file() {
        return Err(ProvisionError::InvalidInput(format!("the model checker {} is not built", checker.display())));
    }
    // The build takes every artifact from its bin directory first: the checker only from there,
    // the model's files only from the model directory.
    let spec = BuildSpec { component_dirs: vec![source.clone()], bin_dir: bin_dir.to_owned(), out: out.to_owned() };
    for file in ["model.onnx", CARD_FILE] {
        let from = model_dir.join(file);
        std::fs::copy(&from, source.join(file)).map_err(ProvisionError::file(&from))?;
        if bin_dir.join(file).exists() {
            return Err(ProvisionError::InvalidInput(format!(
                "{} holds a {file} of its own: give a --bin-dir with only the binaries",
                bin_dir.display()
            )));
        }
    }
    let mut built = crate::component::build_components(&spec)?;
    built.pop().ok_or_else(|| ProvisionError::InvalidInput("nothing was built".into()))
}

/// Revises the latest deployment of `thing_group` with the model at `version` and
/// `failureHandlingPolicy` ROLLBACK; every other component, configuration and policy stays.
pub async fn deploy_model_version(
    iot: &aws_sdk_iot::Client,
    gg: &aws_sdk_greengrassv2::Client,
    thing_group: &str,
    version: &str,
) -> Result<CreatedDeployment, ProvisionError> {
    use aws_sdk_greengrassv2::types::{
        ComponentDeploymentSpecification, DeploymentFailureHandlingPolicy, DeploymentPolicies,
    };
    crate::component::component_version_arn(gg, MODEL_COMPONENT, version).await?;
    let target_arn = crate::deploy::thing_group_arn(iot, thing_group, false).await?;
    let Some(mut revision) = crate::deploy::latest_active_deployment(gg, &target_arn).await? else {
        return Err(ProvisionError::InvalidInput(format!(
            "thing group {thing_group} has no deployment to revise: deploy its components first (provision deploy)"
        )));
    };
    let mut components = revision.components.take().unwrap_or_default();
    let spec = match components.remove(MODEL_COMPONENT) {
        Some(previous) => ComponentDeploymentSpecification::builder()
            .component_version(version)
            .set_configuration_update(previous.configuration_update)
            .set_run_with(previous.run_with),
        None => ComponentDeploymentSpecification::builder().component_version(version),
    };
    let spec = spec.build().map_err(|e| ProvisionError::InvalidInput(format!("{MODEL_COMPONENT}: {e}")))?;
    components.insert(MODEL_COMPONENT.to_owned(), spec);
    revision.components = Some(components);
    let policies = revision.deployment_policies.take().unwrap_or_else(|| DeploymentPolicies::builder().build());
    revision.deployment_policies = Some(
        DeploymentPolicies::builder()
            .failure_handling_policy(DeploymentFailureHandlingPolicy::Rollback)
            .set_component_update_policy(policies.component_update_policy)
            .set_configuration_validation_policy(policies.configuration_validation_policy)
            .build(),
    );
    crate::deploy::create_revision(gg, &target_arn, revision).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_version_is_the_cards_and_a_different_one_is_refused() {
        assert_eq!(release_version("3.4.5", None).unwrap(), "3.4.5");
        assert_eq!(release_version("3.4.5", Some("3.4.5")).unwrap(), "3.4.5");
        let err = release_version("3.4.5", Some("3.5.0")).unwrap_err().to_string();
        assert!(err.contains("3.5.0") && err.contains("3.4.5"), "{err}");
        for bad in ["3.4", "3.4.x", "", "3..5"] {
            assert!(release_version(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_release_recipe_runs_the_checker_before_the_link_moves_and_names_the_version_everywhere() {
        let shipped: Value = serde_yaml_ng::from_str(SHIPPED_RECIPE).unwrap();
        let shipped_version = shipped["ComponentVersion"].as_str().unwrap();
        let recipe = release_recipe(SHIPPED_RECIPE, "9.8.7").unwrap();
        assert_eq!(recipe["ComponentName"], MODEL_COMPONENT);
        assert_eq!(recipe["ComponentVersion"], "9.8.7");
        let manifest = &recipe["Manifests"][0];
        let artifacts = manifest["Artifacts"].as_array().unwrap();
        assert_eq!(artifacts.len(), shipped["Manifests"][0]["Artifacts"].as_array().unwrap().len() + 1);
        for artifact in artifacts {
            let uri = artifact["URI"].as_str().unwrap();
            assert!(uri.contains("/9.8.7/") && !uri.contains(&format!("/{shipped_version}/")), "{uri}");
            assert!(artifact.get("Digest").is_none(), "the build sets digests of what it ships: {artifact}");
        }
        let checker = artifacts.last().unwrap();
        assert!(checker["URI"].as_str().unwrap().ends_with("/9.8.7/pump-model-check"));
        assert_eq!(checker["Permission"]["Execute"], "OWNER");
        let install = manifest["Lifecycle"]["Install"]["Script"].as_str().unwrap();
        let shipped_install = shipped["Manifests"][0]["Lifecycle"]["Install"]["Script"].as_str().unwrap();
        assert_eq!(install, format!("'{{artifacts:path}}/pump-model-check' '{{artifacts:path}}' && {shipped_install}"));
    }

    #[test]
    fn a_recipe_that_is_not_a_model_recipe_is_refused_with_its_reason() {
        assert!(release_recipe("ComponentName: x\n", "1.0.0").unwrap_err().to_string().contains("ComponentVersion"));
        let no_install = "ComponentVersion: '1.0.0'\nManifests:\n  - Artifacts:\n      - URI: s3://b/x/1.0.0/m\n";
        assert!(release_recipe(no_install, "1.0.1").unwrap_err().to_string().contains("Install"));
        assert!(release_recipe(": : :", "1.0.0").is_err());
    }
}
