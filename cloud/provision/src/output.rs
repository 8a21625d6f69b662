//! The output directory: the device's certificate and private key, `endpoints.json` and the
//! `provisioned.json` record. Every file is written whole or not at all (temporary file, fsync,
//! rename, fsync of the directory); the private key is created with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ProvisionError;

/// The device certificate (PEM).
pub const CERT_FILE: &str = "device.pem.crt";
/// The device private key (PEM, PKCS#8, mode 0600).
pub const KEY_FILE: &str = "private.pem.key";
/// Where the device finds IoT Core (`cloud_api::endpoints::Endpoints`).
pub const ENDPOINTS_FILE: &str = "endpoints.json";
/// What was provisioned ([`Record`]).
pub const RECORD_FILE: &str = "provisioned.json";

/// `provisioned.json`: what a provisioning run left in the cloud for this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Thing name (also the device's MQTT client id).
    pub thing_name: String,
    /// Thing ARN.
    pub thing_arn: String,
    /// Certificate id.
    pub certificate_id: String,
    /// Certificate ARN.
    pub certificate_arn: String,
    /// IoT policy attached to the certificate.
    pub policy_name: String,
    /// The policy's default version when the run ended.
    pub policy_version_id: String,
}

/// The paths of an output directory's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFiles {
    /// The directory.
    pub dir: PathBuf,
    /// [`CERT_FILE`].
    pub certificate: PathBuf,
    /// [`KEY_FILE`].
    pub private_key: PathBuf,
    /// [`ENDPOINTS_FILE`].
    pub endpoints: PathBuf,
    /// [`RECORD_FILE`].
    pub record: PathBuf,
}

impl OutputFiles {
    /// The files of `dir`.
    pub fn new(dir: &Path) -> OutputFiles {
        OutputFiles {
            dir: dir.to_path_buf(),
            certificate: dir.join(CERT_FILE),
            private_key: dir.join(KEY_FILE),
            endpoints: dir.join(ENDPOINTS_FILE),
            record: dir.join(RECORD_FILE),
        }
    }

    /// Creates the directory (and parents) if missing.
    pub fn create_dir(&self) -> Result<(), ProvisionError> {
        fs::create_dir_all(&self.dir).map_err(ProvisionError::file(&self.dir))
    }

    /// The previous run's record, if there is one. A record that exists but cannot be read is an
    /// error rather than something to overwrite: it names cloud resources someone may need.
    pub fn read_record(&self) -> Result<Option<Record>, ProvisionError> {
        let text = match fs::read_to_string(&self.record) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ProvisionError::file(&self.record)(e)),
        };
        serde_json::from_str(&text).map(Some).map_err(|e| ProvisionError::BadFile {
            path: self.record.clone(),
            reason: format!("not a provisioning record ({e}); move it away or use another output directory"),
        })
    }

    /// The certificate and key PEMs, if both files are there.
    pub fn read_identity(&self) -> Option<(String, String)> {
        let cert = fs::read_to_string(&self.certificate).ok()?;
        let key = fs::read_to_string(&self.private_key).ok()?;
        Some((cert, key))
    }
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory created with
/// `mode`, fsynced, renamed over `path`, then the directory fsynced so the rename survives a crash.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), ProvisionError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        // A leftover from a crashed run may have looser permissions: start afresh.
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ProvisionError::file(path)(e)
    })
}

/// Writes `value` as pretty JSON, atomically, mode 0644.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ProvisionError> {
    let mut text = serde_json::to_vec_pretty(value)
        .map_err(|e| ProvisionError::BadFile { path: path.to_path_buf(), reason: e.to_string() })?;
    text.push(b'\n');
    write_atomic(path, &text, 0o644)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn atomic_write_replaces_whole_file_with_the_given_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::write(&path, "old contents that are longer").unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(KEY_FILE)]);
    }

    #[test]
    fn failed_write_reports_the_path() {
        let err = write_atomic(Path::new("/nonexistent-dir/x/key.pem"), b"k", 0o600).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x/key.pem"), "{err}");
    }

    #[test]
    fn corrupt_record_is_an_error_not_a_missing_record() {
        let dir = tempfile::tempdir().unwrap();
        let files = OutputFiles::new(dir.path());
        assert_eq!(files.read_record().unwrap(), None);
        fs::write(&files.record, "{ truncated").unwrap();
        let err = files.read_record().unwrap_err();
        assert!(err.to_string().contains("not a provisioning record"), "{err}");
    }

    #[test]
    fn record_uses_camel_case_keys() {
        let record = Record {
            thing_name: "t".into(),
            thing_arn: "a".into(),
            certificate_id: "c".into(),
            certificate_arn: "ca".into(),
            policy_name: "p".into(),
            policy_version_id: "1".into(),
        };
        let json = serde_json::to_value(&record).unwrap();
        for key in ["thingName", "thingArn", "certificateId", "certificateArn", "policyName", "policyVersionId"] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }
}
