//! ResolveComponentCandidates' choice, as pure logic: one candidate (a component name, the
//! version the core has, its dependents' version requirements), the core's platform, and the
//! component's versions in the cloud → the version to install, or why there is none.
//!
//! Rules (Greengrass V2 API Reference, ResolveComponentCandidates; the nucleus's
//! `ComponentServiceHelper`, which reads the error messages):
//! - every requirement must hold; the map's keys (dependent component names for the Java
//!   nucleus, `requirements` for nucleus lite) do not matter, the values are ANDed;
//! - only DEPLOYABLE versions count;
//! - of those, the highest version whose recipe has a manifest for the platform is chosen (the
//!   first manifest whose `Platform` the device meets, as the core picks it);
//! - none meets the requirements: `ResourceNotFoundException` whose message says "no usable
//!   version" (the nucleus's cue for `NoAvailableComponentVersionException`); some do but none
//!   claims the platform: a message that says "claim platform" (its cue for
//!   `IncompatiblePlatformClaimByComponentException`).
//!
//! Not modelled: AWS's digest comparison with the core's copy of a version (the core's
//! `componentVersion` is only checked for syntax), and a preference for it over a higher one.

use std::collections::BTreeMap;

use greengrass_recipe::{ComponentVersion, DevicePlatform, Recipe, VersionRequirement};

/// One version of the component, as the cloud knows it.
#[derive(Debug, Clone, Copy)]
pub struct Offered<'a> {
    /// Its recipe (version, manifests).
    pub recipe: &'a Recipe,
    /// Whether its state is DEPLOYABLE.
    pub deployable: bool,
}

/// Why no version is chosen. The first two are the caller's input (`ValidationException`); the
/// others are `ResourceNotFoundException`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// A requirement is not an npm-style version range.
    #[error("versionRequirements[{key}]: {requirement:?} is not a valid version requirement")]
    BadRequirement {
        /// The map key.
        key: String,
        /// The value.
        requirement: String,
    },
    /// The core's `componentVersion` is not a semantic version.
    #[error("componentVersion {0:?} is not a semantic version")]
    BadVersion(String),
    /// No DEPLOYABLE version meets every requirement.
    #[error("Component {name} has no usable version satisfying requirements {requirements}")]
    NoUsableVersion {
        /// Component name.
        name: String,
        /// The requirements, as `{key: requirement, …}`.
        requirements: String,
    },
    /// Versions meet the requirements, but none has a manifest for the platform.
    #[error(
        "Component {name} version {version} satisfies requirements {requirements} but does not claim platform \
         compatibility with {platform}; no version that does meets the requirements"
    )]
    NoPlatformClaim {
        /// Component name.
        name: String,
        /// The highest version that met the requirements.
        version: String,
        /// The requirements.
        requirements: String,
        /// The platform's attributes.
        platform: String,
    },
}

/// Chooses the version to install (see the module docs).
pub fn choose<'a>(
    name: &str,
    local_version: Option<&str>,
    requirements: &BTreeMap<String, String>,
    platform: &DevicePlatform,
    offered: &[Offered<'a>],
) -> Result<&'a Recipe, Unresolved> {
    if let Some(v) = local_version {
        ComponentVersion::parse(v).map_err(|_| Unresolved::BadVersion(v.to_string()))?;
    }
    let parsed: Vec<VersionRequirement> = requirements
        .iter()
        .map(|(key, requirement)| {
            VersionRequirement::parse(requirement)
                .map_err(|_| Unresolved::BadRequirement { key: key.clone(), requirement: requirement.clone() })
        })
        .collect::<Result<_, _>>()?;
    let mut meeting: Vec<&'a Recipe> = offered
        .iter()
        .filter(|o| o.deployable && parsed.iter().all(|r| r.matches(&o.recipe.version)))
        .map(|o| o.recipe)
        .collect();
    meeting.sort_by(|a, b| b.version.cmp(&a.version));
    let shown = || format!("{requirements:?}");
    let Some(highest) = meeting.first() else {
        return Err(Unresolved::NoUsableVersion { name: name.to_string(), requirements: shown() });
    };
    meeting.iter().copied().find(|r| r.select_manifest(platform).is_some()).ok_or_else(|| {
        let attrs: Vec<String> = platform.attributes().map(|(k, v)| format!("{k}={v}")).collect();
        Unresolved::NoPlatformClaim {
            name: name.to_string(),
            version: highest.version.to_string(),
            requirements: shown(),
            platform: format!("{{{}}}", attrs.join(", ")),
        }
    })
}

#[cfg(test)]
mod tests {
    use greengrass_recipe::{RecipeFormat, RecipeLoader};

    use super::*;

    fn recipe(version: &str, os: &str) -> Recipe {
        let text = format!(
            r#"{{"RecipeFormatVersion":"2020-01-25","ComponentName":"com.example.A","ComponentVersion":"{version}",
               "Manifests":[{{"Platform":{{"os":"{os}"}},"Lifecycle":{{"Run":"true"}}}}]}}"#
        );
        RecipeLoader::without_schema("test").load_str(&text, RecipeFormat::Json, None).unwrap().recipe
    }

    fn reqs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_highest_deployable_version_meeting_every_requirement_for_the_platform_wins() {
        let linux = DevicePlatform::new("linux", "amd64");
        let (v100, v110, v200, v210w, v300) = (
            recipe("1.0.0", "linux"),
            recipe("1.1.0", "linux"),
            recipe("2.0.0", "linux"),
            recipe("2.1.0", "windows"),
            recipe("3.0.0", "linux"),
        );
        let all = [
            Offered { recipe: &v100, deployable: true },
            Offered { recipe: &v110, deployable: true },
            Offered { recipe: &v200, deployable: true },
            Offered { recipe: &v210w, deployable: true },
            Offered { recipe: &v300, deployable: false },
        ];
        // (why, requirements, the version chosen)
        type Row<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
        let table: &[Row<'_>] = &[
            ("no requirement: highest deployable for linux", &[], Some("2.0.0")),
            ("one range", &[("com.example.B", "^1.0.0")], Some("1.1.0")),
            ("requirements are ANDed", &[("B", ">=1.0.0"), ("C", "<1.1.0")], Some("1.0.0")),
            ("an exact version", &[("requirements", "=1.1.0")], Some("1.1.0")),
            ("nucleus lite's key", &[("requirements", ">=1.0.0 <2.0.0")], Some("1.1.0")),
            ("a version for another platform is skipped", &[("B", ">=2.0.0")], Some("2.0.0")),
            ("a FAILED version is never chosen", &[("B", ">=3.0.0")], None),
        ];
        for (why, r, want) in table {
            let got = choose("com.example.A", None, &reqs(r), &linux, &all).ok().map(|r| r.version.to_string());
            assert_eq!(got.as_deref(), *want, "{why}");
        }
    }

    #[test]
    fn errors_carry_the_phrases_the_nucleus_looks_for() {
        let linux = DevicePlatform::new("linux", "amd64");
        let w = recipe("1.0.0", "windows");
        let l = recipe("1.0.0", "linux");
        let windows_only = [Offered { recipe: &w, deployable: true }];
        let e = choose("com.example.A", None, &reqs(&[]), &linux, &windows_only).unwrap_err();
        assert!(matches!(e, Unresolved::NoPlatformClaim { .. }) && e.to_string().contains("claim platform"), "{e}");
        let e = choose(
            "com.example.A",
            None,
            &reqs(&[("B", "^2.0.0")]),
            &linux,
            &[Offered { recipe: &l, deployable: true }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no usable version"), "{e}");
        let e = choose("com.example.A", None, &reqs(&[]), &linux, &[]).unwrap_err();
        assert!(e.to_string().contains("no usable version"), "unknown component: {e}");
    }

    #[test]
    fn malformed_requirements_and_versions_are_input_errors() {
        let linux = DevicePlatform::new("linux", "amd64");
        let e = choose("A", None, &reqs(&[("B", "not a range!")]), &linux, &[]).unwrap_err();
        assert_eq!(e, Unresolved::BadRequirement { key: "B".into(), requirement: "not a range!".into() });
        let e = choose("A", Some("one"), &reqs(&[]), &linux, &[]).unwrap_err();
        assert_eq!(e, Unresolved::BadVersion("one".into()));
    }
}
