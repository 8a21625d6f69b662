//! What the core keeps of its cloud deployments across restarts, as the nucleus keeps its
//! effective configuration (`config/effectiveConfig.yaml`, the `services.DeploymentService`
//! group tables): `{root}/deployments/deployed.json` holds each cloud group's root components
//! and configuration ARN, and the configuration of each component the cloud groups hold (with
//! which values came from defaults). The recipes are the copies in `packages/recipes/`, the
//! artifacts the store's.
//!
//! It is written (temporary file, fsync, rename) after every deployment that ends, with what
//! the core runs then: a core killed while a deployment is under way starts again from the last
//! set that was whole. The cloud then hands it the unfinished deployment again (the job is still
//! IN_PROGRESS, the shadow's `reported` status is not terminal) and it is done over: artifacts
//! already downloaded are kept, a cut download resumes where it stopped.
//!
//! Local deployments are not kept: the core's start (`--merge`, `--update-config`) is the local
//! group's deployment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file under the core's root.
pub const FILE: &str = "deployments/deployed.json";

/// The kept state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    /// Each cloud group's root components and their versions.
    pub groups: BTreeMap<String, BTreeMap<String, String>>,
    /// Each cloud group's configuration ARN.
    pub group_arns: BTreeMap<String, String>,
    /// The configuration of each component the cloud groups hold, in
    /// `EffectiveConfiguration::to_stored`'s shape.
    pub configurations: BTreeMap<String, Value>,
}

/// Why the kept state cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the core's kept deployments {}: {reason}", path.display())]
pub struct KeptError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

/// Reads the kept state under `root`; `None` when nothing was kept.
pub fn load(root: &Path) -> Result<Option<Kept>, KeptError> {
    let path = root.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KeptError { path, reason: e.to_string() }),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| KeptError { path, reason: e.to_string() })
}

/// Keeps `kept` under `root`, durably.
pub fn store(root: &Path, kept: &Kept) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(kept).map_err(std::io::Error::other)?;
    crate::core::layout::write_durably(&root.join(FILE), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_deployments_survive_a_round_trip_and_a_damaged_file_is_an_error_not_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none(), "nothing kept yet");
        let kept = Kept {
            groups: [("thinggroup/pumps".to_owned(), [("A".to_owned(), "1.0.0".to_owned())].into())].into(),
            group_arns: [("thinggroup/pumps".to_owned(), "arn:…:1".to_owned())].into(),
            configurations: [("A".to_owned(), serde_json::json!({"defaults": {}, "deployment": {"x": 1}}))].into(),
        };
        store(dir.path(), &kept).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(kept.clone()));
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("deployed.json"), "{e}");
    }
}
