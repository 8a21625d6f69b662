//! The core's side of a nucleus update (a deployment of a new `aws.greengrass.Nucleus`
//! version), against the launcher's alts directory ([`crate::launcher`]):
//!
//! 1. the deployment installs the downloaded core binary with [`stage`] (`alts/{version}/`,
//!    `new` pointed at it), then asks for a restart ([`super::services::RestartRequest`]): the
//!    core stops its components and exits with code 100;
//! 2. the launcher flips (`old` = the running version, `current` = `new`) and starts the new
//!    core, which finds itself [`Activation::OnProbation`] (the nucleus's `KERNEL_ACTIVATION`
//!    stage: `old` set at start);
//! 3. once its components run, the new core reports the deployment SUCCEEDED and calls
//!    [`activation_succeeded`] (the nucleus's `KernelAlternatives.activationSucceeds`): `old`
//!    is removed, and with it the launcher's deadline;
//! 4. a new core that exits, or has not removed `old` by the launcher's deadline, is rolled back
//!    by the launcher (`broken` = it, `current` = `old`); the previous core then starts
//!    [`Activation::RolledBack`] (the nucleus's `KERNEL_ROLLBACK`: `broken` set at start),
//!    reports the deployment `FAILED_ROLLBACK_COMPLETE`, and calls [`rollback_reported`] (the
//!    nucleus's `rollbackCompletes`).
//!
//! The decisions ([`Activation::from_alts`], [`check_stage`]) do no I/O.

use std::path::{Path, PathBuf};

/// The nucleus component's name: a deployment of another version of it updates the core.
pub const NUCLEUS: &str = "aws.greengrass.Nucleus";
/// The file name of the core binary among a nucleus version's artifacts.
pub const CORE_BINARY: &str = "device-sim";

use crate::launcher::alts::{Alts, Link, LinkName};
use crate::launcher::store::{AltsDir, AltsError, is_version_name};
use crate::recipe::ComponentVersion;

/// Why a core binary cannot be staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The version is not a component version (the deployment's input is at fault).
    #[error("cannot stage nucleus version {version:?}: {reason}")]
    InvalidVersion {
        /// The version asked for.
        version: String,
        /// Why it is not one.
        reason: String,
    },
    /// The version is the one that runs: nothing to update (the deployment's input is at fault).
    #[error("nucleus version {version} is the one running; nothing to stage")]
    SameAsCurrent {
        /// The version.
        version: String,
    },
    /// The running version is still on probation after an update; retry once it has proved
    /// itself.
    #[error("nucleus version {current} is still on probation (previous {previous}); retry once it is activated")]
    UpdateInProgress {
        /// The version on probation.
        current: String,
        /// The version it would go back to.
        previous: String,
    },
    /// The core was not started by `device-sim launcher` (no `alts/current`), so a restart would
    /// not run the staged version; start the core with the launcher.
    #[error("no launcher manages {}: start the core with `device-sim launcher` to update it", alts.display())]
    NotLaunched {
        /// The alts directory.
        alts: PathBuf,
    },
    /// The downloaded core binary is not a readable file (the download is at fault).
    #[error("the core binary {} cannot be staged: {source}", path.display())]
    Artifact {
        /// The artifact.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Installing it failed; retrying may help.
    #[error(transparent)]
    Alts(#[from] AltsError),
}

impl StageError {
    /// Whether the deployment asked for something impossible (a retry will fail the same way).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            StageError::InvalidVersion { .. } | StageError::SameAsCurrent { .. } | StageError::NotLaunched { .. }
        )
    }
}

/// Whether `version` may be staged over the links `alts`.
pub fn check_stage(alts: &Alts, alts_dir: &Path, version: &str) -> Result<(), StageError> {
    let invalid = |reason: String| StageError::InvalidVersion { version: version.to_owned(), reason };
    ComponentVersion::parse(version).map_err(|e| invalid(e.to_string()))?;
    if !is_version_name(version) {
        return Err(invalid("not usable as a directory name".to_owned()));
    }
    let Some(current) = alts.version(LinkName::Current) else {
        return Err(StageError::NotLaunched { alts: alts_dir.to_owned() });
    };
    if current == version {
        return Err(StageError::SameAsCurrent { version: version.to_owned() });
    }
    if let Some(previous) = alts.version(LinkName::Old) {
        return Err(StageError::UpdateInProgress { current: current.to_owned(), previous: previous.to_owned() });
    }
    Ok(())
}

/// Installs the downloaded core binary `artifact` as nucleus `version`
/// (`{root}/alts/{version}/bin/device-sim`, executable, synced) and points `new` at it, so the
/// launcher runs it at the next restart. A version staged before and not yet run is replaced
/// (and its directory removed).
pub fn stage(root: &Path, version: &str, artifact: &Path) -> Result<(), StageError> {
    let alts = AltsDir::new(root);
    let links = alts.observe()?;
    check_stage(&links, alts.path(), version)?;
    let meta =
        std::fs::metadata(artifact).map_err(|source| StageError::Artifact { path: artifact.to_owned(), source })?;
    if !meta.is_file() {
        let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file");
        return Err(StageError::Artifact { path: artifact.to_owned(), source });
    }
    alts.install(version, artifact)?;
    alts.point(LinkName::New, version)?;
    // A version staged before and never run is not needed any more.
    if let Some(replaced) = links.version(LinkName::New).filter(|v| *v != version) {
        alts.remove_unreferenced(replaced)?;
    }
    tracing::info!(%version, "nucleus update staged; it runs after a restart");
    Ok(())
}

/// What the starting core learns from the alts directory (the nucleus's deployment stage at
/// launch, `KernelAlternatives.determineDeploymentStage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// No update under way (`DEFAULT`).
    Normal,
    /// This core is a new version that must prove itself by calling [`activation_succeeded`]
    /// before the launcher's deadline (`KERNEL_ACTIVATION`).
    OnProbation {
        /// The version the launcher goes back to otherwise.
        previous_version: String,
    },
    /// This core runs because the update to `broken_version` was rolled back; it reports that,
    /// then calls [`rollback_reported`] (`KERNEL_ROLLBACK`).
    RolledBack {
        /// The version that failed.
        broken_version: String,
    },
}

impl Activation {
    /// What the links say; `old` wins over `broken`, as in the nucleus.
    pub fn from_alts(alts: &Alts) -> Self {
        match (&alts.old, &alts.broken) {
            (Link::To(previous), _) => Activation::OnProbation { previous_version: previous.clone() },
            (_, Link::To(broken)) => Activation::RolledBack { broken_version: broken.clone() },
            _ => Activation::Normal,
        }
    }

    /// What the alts directory of the core at `root` says now (call it at start). A directory
    /// that cannot be read is logged and taken as [`Activation::Normal`]: a core without a
    /// launcher has no alts directory.
    pub fn at_start(root: &Path) -> Self {
        match AltsDir::new(root).observe() {
            Ok(alts) => Self::from_alts(&alts),
            Err(e) => {
                tracing::warn!("{e}; starting as if no nucleus update were under way");
                Activation::Normal
            }
        }
    }
}

/// The new core proved itself: removes `old` (ending the launcher's probation) and the previous
/// version's directory. Nothing to do when there is no `old`.
pub fn activation_succeeded(root: &Path) -> Result<(), AltsError> {
    settle(root, LinkName::Old)
}

/// The rollback has been reported: removes `broken` and the failed version's directory.
pub fn rollback_reported(root: &Path) -> Result<(), AltsError> {
    settle(root, LinkName::Broken)
}

fn settle(root: &Path, link: LinkName) -> Result<(), AltsError> {
    let alts = AltsDir::new(root);
    let version = match alts.read(link)? {
        Link::Absent => return Ok(()),
        Link::Dangling => None,
        Link::To(version) => Some(version),
    };
    alts.remove(link)?;
    if let Some(version) = version {
        alts.remove_unreferenced(&version)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launched(root: &Path, version: &str) -> AltsDir {
        let alts = AltsDir::new(root);
        let binary = root.join("device-sim");
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        alts.install(version, &binary).unwrap();
        alts.point(LinkName::Current, version).unwrap();
        alts
    }

    #[test]
    fn stage_installs_the_binary_and_points_new_at_it() {
        let dir = tempfile::tempdir().unwrap();
        let alts = launched(dir.path(), "2.14.0");
        let artifact = dir.path().join("download");
        std::fs::write(&artifact, "#!/bin/sh\necho v2\n").unwrap();
        stage(dir.path(), "2.15.0", &artifact).unwrap();
        assert_eq!(alts.read(LinkName::New).unwrap(), Link::To("2.15.0".into()));
        assert_eq!(std::fs::read(alts.binary("2.15.0")).unwrap(), b"#!/bin/sh\necho v2\n");
        // Staged again before a restart: replaced.
        std::fs::write(&artifact, "v3").unwrap();
        stage(dir.path(), "2.16.0", &artifact).unwrap();
        assert_eq!(alts.read(LinkName::New).unwrap(), Link::To("2.16.0".into()));
        assert!(!alts.path().join("2.15.0").exists(), "the replaced version is removed");
        assert!(alts.binary("2.14.0").exists());
        // The same version again: installed over itself.
        stage(dir.path(), "2.16.0", &artifact).unwrap();
        assert_eq!(std::fs::read(alts.binary("2.16.0")).unwrap(), b"v3");
    }

    #[test]
    fn stage_refuses_what_cannot_work_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = dir.path().join("download");
        std::fs::write(&artifact, "x").unwrap();
        let err = stage(dir.path(), "2.15.0", &artifact).unwrap_err();
        assert!(matches!(err, StageError::NotLaunched { .. }) && err.is_configuration(), "{err}");
        let alts = launched(dir.path(), "2.14.0");
        let err = stage(dir.path(), "2.14.0", &artifact).unwrap_err();
        assert!(matches!(err, StageError::SameAsCurrent { .. }) && err.is_configuration(), "{err}");
        for bad in ["2.x", "../2.15.0", ""] {
            let err = stage(dir.path(), bad, &artifact).unwrap_err();
            assert!(matches!(err, StageError::InvalidVersion { .. }), "{bad}: {err}");
        }
        let err = stage(dir.path(), "2.15.0", &dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, StageError::Artifact { .. }) && !err.is_configuration(), "{err}");
        let err = stage(dir.path(), "2.15.0", dir.path()).unwrap_err();
        assert!(matches!(err, StageError::Artifact { .. }), "a directory: {err}");
        alts.install("2.13.0", &artifact).unwrap();
        alts.point(LinkName::Old, "2.13.0").unwrap();
        let err = stage(dir.path(), "2.15.0", &artifact).unwrap_err();
        assert!(matches!(err, StageError::UpdateInProgress { .. }) && !err.is_configuration(), "{err}");
        assert_eq!(alts.read(LinkName::New).unwrap(), Link::Absent, "nothing staged by a refusal");
    }

    #[test]
    fn activation_follows_old_then_broken() {
        let to = |v: &str| Link::To(v.to_owned());
        let table = [
            (Alts { current: to("1"), ..Alts::default() }, Activation::Normal),
            (
                Alts { current: to("2"), old: to("1"), ..Alts::default() },
                Activation::OnProbation { previous_version: "1".into() },
            ),
            (
                Alts { current: to("1"), broken: to("2"), ..Alts::default() },
                Activation::RolledBack { broken_version: "2".into() },
            ),
            (
                Alts { current: to("3"), old: to("1"), broken: to("2"), ..Alts::default() },
                Activation::OnProbation { previous_version: "1".into() },
            ),
            (Alts { current: to("2"), old: Link::Dangling, ..Alts::default() }, Activation::Normal),
        ];
        for (alts, expected) in table {
            assert_eq!(Activation::from_alts(&alts), expected, "{alts:?}");
        }
    }

    #[test]
    fn settling_removes_the_link_and_the_version_it_led_to() {
        let dir = tempfile::tempdir().unwrap();
        let alts = launched(dir.path(), "2.0.0");
        alts.install("1.0.0", &alts.binary("2.0.0")).unwrap();
        alts.point(LinkName::Old, "1.0.0").unwrap();
        assert_eq!(Activation::at_start(dir.path()), Activation::OnProbation { previous_version: "1.0.0".into() });
        activation_succeeded(dir.path()).unwrap();
        assert_eq!(Activation::at_start(dir.path()), Activation::Normal);
        assert!(!alts.path().join("1.0.0").exists());
        assert!(alts.binary("2.0.0").exists());
        activation_succeeded(dir.path()).unwrap();

        alts.install("3.0.0", &alts.binary("2.0.0")).unwrap();
        alts.point(LinkName::Broken, "3.0.0").unwrap();
        assert_eq!(Activation::at_start(dir.path()), Activation::RolledBack { broken_version: "3.0.0".into() });
        rollback_reported(dir.path()).unwrap();
        assert_eq!(Activation::at_start(dir.path()), Activation::Normal);
        assert!(!alts.path().join("3.0.0").exists());
        assert!(alts.binary("2.0.0").exists(), "current stays");
    }

    #[test]
    fn a_core_without_a_launcher_starts_normally() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Activation::at_start(dir.path()), Activation::Normal);
        rollback_reported(dir.path()).unwrap();
        activation_succeeded(dir.path()).unwrap();
    }
}
