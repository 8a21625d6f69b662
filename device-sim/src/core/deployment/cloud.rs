//! What a cloud deployment fetches before the engine plans it: the component versions the
//! Greengrass data plane resolves for the core, their recipes, and their artifacts.
//!
//! Follows the nucleus's `DependencyResolver` and `ComponentManager` (negotiating versions
//! with the cloud) and `ComponentStore` / `GreengrassRepositoryDownloader` (recipes and
//! artifacts on disk):
//!
//! - every component reachable from a **cloud group's** root components is resolved with
//!   ResolveComponentCandidates, carrying every requirement on it: each group that deploys it
//!   as a root (`thinggroup/NAME`, `thing/NAME`, `LOCAL_DEPLOYMENT` → its version) and each
//!   dependent (its name → its `VersionRequirement`), the version the core runs now, and the
//!   device's platform. A dependency of the chosen version joins the walk; when a later choice
//!   adds a requirement the earlier answer no longer meets, the component is asked again;
//! - components reachable only from local deployments stay with the local recipe store; the
//!   components the core provides itself (`aws.greengrass.Nucleus`, the ShadowManager) are not
//!   asked for;
//! - each recipe the cloud returns is kept in `packages/recipes/` and each `s3://` artifact is
//!   downloaded through GetComponentVersionArtifact's presigned URL into
//!   `packages/artifacts/{Name}/{Version}/`, resumed with `Range` after a cut and checked
//!   against the recipe's digest ([`crate::core::artifact_download`]). All of this happens
//!   before the engine stops anything.
//!
//! Differences from the nucleus: a call that fails for a retryable reason is tried three times
//! here and the deployment then fails (the nucleus retries the whole deployment); the core does
//! not fall back to a local version when the cloud cannot be reached. On AWS a private
//! component's `s3://` artifacts are fetched from S3 with the token exchange role's
//! credentials; the simulated core asks GetComponentVersionArtifact for them, which the local
//! cloud answers for every artifact it stores.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use super::Refusal;
use crate::core::artifact_download::{DownloadError, Downloader, expected_digest};
use crate::core::greengrass_client::{ClientError, GreengrassClient, Resolved};
use crate::core::layout::{Layout, write_durably};
use crate::core::nucleus_update::{CORE_BINARY, NUCLEUS};
use crate::core::recipe_store::RecipeOrigins;
use crate::recipe::{ComponentVersion, DevicePlatform, Recipe, RecipeFormat, RecipeLoader, VersionRequirement};

/// Attempts of one data-plane call that fails for a retryable reason.
const ATTEMPTS: u32 = 3;
/// The pause after the first failed attempt; doubled after each.
const FIRST_PAUSE: Duration = Duration::from_secs(1);

/// The core's way to the cloud's component store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CloudComponents {
    /// The data-plane client.
    pub client: GreengrassClient,
    /// The artifact downloader (trusting the same roots).
    pub downloader: Downloader,
}

impl CloudComponents {
    /// The store reached with `client`.
    pub fn new(client: GreengrassClient) -> Self {
        let downloader = Downloader::new(client.tls());
        Self { client, downloader }
    }
}

/// What a cloud deployment brought to the core.
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    /// A new nucleus version the deployment asks for, and its downloaded core binary.
    pub nucleus: Option<(String, PathBuf)>,
    /// The recipes the cloud chose, one per component.
    pub recipes: Vec<Recipe>,
    /// Where each is kept.
    pub origins: RecipeOrigins,
    /// Bytes received from the network for artifacts.
    pub bytes_downloaded: u64,
    /// Artifacts already in the store with their digest (not downloaded again).
    pub artifacts_kept: u32,
}

/// Requirements on components, by who requires them (a group or a dependent component).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Requirements {
    by_component: BTreeMap<String, BTreeMap<String, String>>,
}

impl Requirements {
    /// `who` requires `component` at `requirement` (an npm-style range or a version).
    pub fn add(&mut self, component: &str, who: &str, requirement: &str) {
        self.by_component.entry(component.to_owned()).or_default().insert(who.to_owned(), requirement.to_owned());
    }

    /// `who` no longer requires anything (a dependent whose chosen version changed).
    pub fn drop_requirer(&mut self, who: &str) {
        for reqs in self.by_component.values_mut() {
            reqs.remove(who);
        }
    }

    /// What is required of `component`.
    pub fn of(&self, component: &str) -> BTreeMap<String, String> {
        self.by_component.get(component).cloned().unwrap_or_default()
    }

    /// True when `version` meets every requirement on `component` (one that does not parse
    /// is not met).
    pub fn met_by(&self, component: &str, version: &str) -> bool {
        let Ok(version) = ComponentVersion::parse(version) else { return false };
        self.of(component).values().all(|r| VersionRequirement::parse(r).is_ok_and(|r| r.matches(&version)))
    }
}

/// Resolves and fetches what the cloud groups' roots need (see the module docs). `groups` maps
/// each group to its roots (name → version), this deployment's group already replaced;
/// `cloud_groups` names the groups whose components come from the cloud; `running` maps each
/// component to the version the core runs; `builtins` are never asked for, except the nucleus
/// when a group requires a version other than `nucleus_version` (the one running): then it is
/// resolved and its core binary downloaded ([`Fetched::nucleus`]).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fetch(
    cloud: &CloudComponents,
    layout: &Layout,
    platform: &DevicePlatform,
    groups: &BTreeMap<String, BTreeMap<String, String>>,
    cloud_groups: &BTreeSet<String>,
    running: &BTreeMap<String, String>,
    builtins: &BTreeSet<String>,
    nucleus_version: &str,
) -> Result<Fetched, Refusal> {
    let mut requirements = Requirements::default();
    let mut queue = VecDeque::new();
    for (group, roots) in groups {
        for (name, version) in roots {
            requirements.add(name, group, version);
            if cloud_groups.contains(group) {
                queue.push_back(name.clone());
            }
        }
    }
    let mut chosen: BTreeMap<String, (Resolved, Recipe)> = BTreeMap::new();
    // The cloud checked them; public components (the nucleus) carry reserved names.
    let loader =
        RecipeLoader::without_schema("recipes from the cloud were checked by the cloud").allow_reserved_names(true);
    // Each answer can only change when a requirement is added: bound the walk generously.
    let mut budget = 64 + 8 * queue.len();
    while let Some(name) = queue.pop_front() {
        let nucleus_update = name == NUCLEUS && !requirements.met_by(&name, nucleus_version);
        if builtins.contains(&name) && !nucleus_update {
            continue;
        }
        if chosen.get(&name).is_some_and(|(r, _)| requirements.met_by(&name, &r.version)) {
            continue;
        }
        budget = budget.checked_sub(1).ok_or_else(|| {
            (format!("the versions of {name} and its dependents do not settle"), "NO_AVAILABLE_COMPONENT_VERSION")
        })?;
        let wanted = requirements.of(&name);
        let resolved =
            with_retries(|| cloud.client.resolve(&name, running.get(&name).map(String::as_str), &wanted, platform))
                .await
                .map_err(|e| (e.to_string(), resolve_error_code(&e)))?;
        let loaded = loader
            .load_str(&resolved.recipe_text, RecipeFormat::Json, Some(&format!("{name} {}", resolved.version)))
            .map_err(|e| {
                (format!("the cloud's recipe of {name} {}: {e}", resolved.version), "COMPONENT_RECIPE_ERROR")
            })?;
        let recipe = loaded.recipe;
        if recipe.name != name || recipe.version.as_str() != resolved.version {
            let why = format!(
                "asked for {name}, the cloud's recipe is {} {} (answered {})",
                recipe.name, recipe.version, resolved.version
            );
            return Err((why, "COMPONENT_RECIPE_ERROR"));
        }
        requirements.drop_requirer(&name);
        for dep in &recipe.dependencies {
            requirements.add(&dep.name, &name, dep.requirement.as_str());
            queue.push_back(dep.name.clone());
        }
        chosen.insert(name, (resolved, recipe));
    }

    let mut fetched = Fetched::default();
    let recipes_dir = layout.recipes_dir();
    for (name, (resolved, recipe)) in chosen {
        fetch_artifacts(cloud, layout, platform, &resolved, &recipe, &mut fetched).await?;
        if name == NUCLEUS {
            // Not a component the core runs: the core binary it restarts into.
            let binary = layout.artifacts_dir(&name, &resolved.version).join(CORE_BINARY);
            if !binary.is_file() {
                let why = format!("{name} {}: no artifact named {CORE_BINARY} (the core binary)", resolved.version);
                return Err((why, "COMPONENT_RECIPE_ERROR"));
            }
            fetched.nucleus = Some((resolved.version.clone(), binary));
            continue;
        }
        let file = recipes_dir.join(format!("{name}-{}.recipe.json", resolved.version));
        write_durably(&file, resolved.recipe_text.as_bytes())
            .map_err(|e| (format!("{}: {e}", file.display()), "IO_ERROR"))?;
        fetched.origins.insert((name, resolved.version.clone()), file);
        fetched.recipes.push(recipe);
    }
    Ok(fetched)
}

/// Downloads the `s3://` artifacts of the manifest `recipe` selects for `platform`.
async fn fetch_artifacts(
    cloud: &CloudComponents,
    layout: &Layout,
    platform: &DevicePlatform,
    resolved: &Resolved,
    recipe: &Recipe,
    fetched: &mut Fetched,
) -> Result<(), Refusal> {
    let Some(manifest) = recipe.select_manifest(platform) else {
        let why = format!("{} {} has no manifest for this device's platform", recipe.name, recipe.version);
        return Err((why, "COMPONENT_RECIPE_ERROR"));
    };
    let dir = layout.artifacts_dir(&recipe.name, recipe.version.as_str());
    for artifact in &manifest.artifacts {
        let Some(name) = artifact.uri.strip_prefix("s3://") else { continue };
        let digest = expected_digest(artifact.digest.as_deref(), artifact.algorithm.as_deref())
            .map_err(|e| (format!("{}: {e}", artifact.uri), "ARTIFACT_CHECKSUM_MISMATCH"))?;
        std::fs::create_dir_all(&dir).map_err(|e| (format!("{}: {e}", dir.display()), "IO_ERROR"))?;
        let url = with_retries(|| cloud.client.artifact_url(&resolved.arn, name))
            .await
            .map_err(|e| (format!("{}: {e}", artifact.uri), "GET_COMPONENT_VERSION_ARTIFACT_ERROR"))?;
        let target = dir.join(artifact.file_name());
        let done = cloud
            .downloader
            .download(&url, &target, digest.as_deref())
            .await
            .map_err(|e| (format!("{} {}: {e}", recipe.name, recipe.version), download_error_code(&e)))?;
        fetched.bytes_downloaded += done.received;
        if done.attempts == 0 {
            fetched.artifacts_kept += 1;
        }
    }
    Ok(())
}

/// Calls `call` until it succeeds, fails for good, or [`ATTEMPTS`] have failed.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut pause = FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_retryable() && attempt < ATTEMPTS => {
                tracing::warn!(attempt, "{e}; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The error code the nucleus puts on the stack for a resolution failure.
fn resolve_error_code(e: &ClientError) -> &'static str {
    match e {
        ClientError::NoUsableVersion { .. } => "NO_AVAILABLE_COMPONENT_VERSION",
        ClientError::IncompatiblePlatform { .. } => "COMPONENT_VERSION_REQUIREMENTS_NOT_MET",
        ClientError::AccessDenied { .. } => "RESOLVE_COMPONENT_CANDIDATES_ACCESS_DENIED",
        _ if e.is_retryable() => "NETWORK_ERROR",
        _ => "CLOUD_SERVICE_ERROR",
    }
}

fn download_error_code(e: &DownloadError) -> &'static str {
    match e {
        DownloadError::DigestMismatch { .. } => "ARTIFACT_CHECKSUM_MISMATCH",
        DownloadError::Io { .. } => "IO_WRITE_ERROR",
        _ => "S3_GET_OBJECT_ERROR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_are_kept_by_requirer_and_a_new_choice_drops_the_old_ones() {
        let mut r = Requirements::default();
        r.add("Lib", "thinggroup/pumps", "1.0.0");
        r.add("Lib", "App", ">=1.0.0 <2.0.0");
        assert!(r.met_by("Lib", "1.0.0"));
        assert!(!r.met_by("Lib", "1.1.0"), "the group pins 1.0.0");
        r.add("Lib", "thinggroup/pumps", "1.1.0");
        assert!(r.met_by("Lib", "1.1.0"), "the group's new root replaces its old one");
        r.add("Lib", "Other", "^2.0.0");
        assert!(!r.met_by("Lib", "1.1.0"));
        r.drop_requirer("Other");
        assert!(r.met_by("Lib", "1.1.0"));
        assert_eq!(r.of("Lib").len(), 2);
        assert!(r.of("Unknown").is_empty());
        assert!(!r.met_by("Lib", "not a version"));
        r.add("Lib", "Broken", "not a range");
        assert!(!r.met_by("Lib", "1.1.0"), "a requirement that does not parse is not met");
    }

    #[test]
    fn resolution_failures_carry_the_nucleus_error_codes() {
        let no_version = ClientError::NoUsableVersion {
            component: "A".into(),
            requirements: BTreeMap::new(),
            message: "none".into(),
        };
        assert_eq!(resolve_error_code(&no_version), "NO_AVAILABLE_COMPONENT_VERSION");
        let down = ClientError::Unreachable {
            operation: crate::core::greengrass_client::Operation::ResolveComponentCandidates,
            reason: "refused".into(),
        };
        assert_eq!(resolve_error_code(&down), "NETWORK_ERROR");
    }
}
