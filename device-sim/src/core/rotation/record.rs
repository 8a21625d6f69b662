//! The rotation's record on disk: `{root}/identity/rotation.json`, written whole (temporary
//! file, fsync, rename) before every step with an effect, never rewritten in place.

use std::path::{Path, PathBuf};

use super::machine::Record;

/// The record's file name in the identity directory.
const RECORD_FILE: &str = "rotation.json";

/// Why the record cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The disk refused (retry once the host is fixed).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the disk said.
        source: std::io::Error,
    },
    /// The record does not parse: the core must not guess which certificate it has.
    #[error("{path} is damaged ({reason}); restore it, or remove it to start on --cert/--key")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Where the record of the core at `root` is kept.
pub fn path(root: &Path) -> PathBuf {
    super::super::claim::identity_dir(root).join(RECORD_FILE)
}

/// The record of the core at `root` (empty when none was written).
pub fn load(root: &Path) -> Result<Record, RecordError> {
    let path = path(root);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Record::default()),
        Err(source) => return Err(RecordError::Io { path, source }),
    };
    serde_json::from_slice(&bytes).map_err(|e| RecordError::Damaged { path, reason: e.to_string() })
}

/// Writes the record of the core at `root` durably.
pub fn store(root: &Path, record: &Record) -> Result<(), RecordError> {
    let path = path(root);
    let bytes = serde_json::to_vec_pretty(record).expect("a record serializes");
    super::super::layout::write_durably(&path, &bytes).map_err(|source| RecordError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::super::machine::{Certificate, Rotation, Stage, Trigger};
    use super::*;

    #[test]
    fn a_record_survives_a_write_and_a_read_and_none_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Record::default());
        let cert = |id: &str| Certificate {
            certificate_id: id.into(),
            cert_file: dir.path().join(format!("{id}.crt")),
            key_file: "pkcs11:object=rotated-j;type=private".into(),
        };
        let record = Record {
            current: Some(cert("a")),
            rotation: Some(Rotation {
                trigger: Trigger::Job { job_id: "j".into() },
                old: cert("a"),
                previous: None,
                stage: Stage::Switched { new: cert("b") },
            }),
        };
        store(dir.path(), &record).unwrap();
        assert_eq!(load(dir.path()).unwrap(), record);
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(text.contains(r#""stage": "switched""#), "{text}");
    }

    #[test]
    fn a_damaged_record_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(path(dir.path()).parent().unwrap()).unwrap();
        std::fs::write(path(dir.path()), "{").unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is damaged") && err.contains("remove it"), "{err}");
    }
}
