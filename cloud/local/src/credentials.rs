//! The administrator's SigV4 key pair: the secret the services that verify
//! signatures (S3 today) check requests against.
//!
//! Taken from the configuration when given there; otherwise generated at
//! random on the first start and kept in `credentials.json` in the data
//! directory (mode 0600), so a restart keeps it. `endpoints.json` advertises
//! it, which is how clients on this machine find it.

use std::path::{Path, PathBuf};

pub use cloud_api::endpoints::AccessKeyPair;

/// File name of the generated key pair inside the data directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";

/// Why the key pair could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Reading or writing the file failed (permissions, disk): fix the data directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but is not a key pair: repair or delete it (a new pair is then made).
    #[error("{path} is not a key pair ({{\"accessKeyId\", \"secretAccessKey\"}}): {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// A configured or stored pair is unusable.
    #[error("invalid key pair: {0}")]
    Invalid(String),
    /// The system's random generator failed.
    #[error("no randomness for a new key pair")]
    Random,
}

/// Checks the shape of a key pair: an access key id of 3–128 characters from
/// `[A-Za-z0-9_-]` (it is part of the SigV4 credential scope) and a non-empty secret.
pub fn validate(pair: &AccessKeyPair) -> Result<(), CredentialsError> {
    let id = &pair.access_key_id;
    if !(3..=128).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(CredentialsError::Invalid(format!(
            "access key id {id:?} must be 3 to 128 characters from A-Z, a-z, 0-9, '_' and '-'"
        )));
    }
    if pair.secret_access_key.is_empty() || pair.secret_access_key.contains(char::is_whitespace) {
        return Err(CredentialsError::Invalid("the secret access key must be non-empty, without spaces".into()));
    }
    Ok(())
}

/// The configured pair if any, else the one in `data_dir/credentials.json`,
/// else a new random pair written there (temp file, fsync, rename; mode 0600).
pub fn load_or_create(configured: Option<&AccessKeyPair>, data_dir: &Path) -> Result<AccessKeyPair, CredentialsError> {
    if let Some(pair) = configured {
        validate(pair)?;
        return Ok(pair.clone());
    }
    let path = data_dir.join(CREDENTIALS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let pair: AccessKeyPair = serde_json::from_slice(&bytes)
                .map_err(|source| CredentialsError::Corrupt { path: path.clone(), source })?;
            validate(&pair)?;
            Ok(pair)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pair = generate()?;
            let json = serde_json::to_vec_pretty(&pair).map_err(|e| CredentialsError::Invalid(e.to_string()))?;
            crate::ca::write_atomic(&path, &json, true).map_err(|e| match e {
                crate::ca::CaError::Io { path, source } => CredentialsError::Io { path, source },
                other => CredentialsError::Invalid(other.to_string()),
            })?;
            Ok(pair)
        }
        Err(source) => Err(CredentialsError::Io { path, source }),
    }
}

/// A new random pair shaped like AWS's: `AKIA` + 16 upper-case base-32
/// characters, and 40 characters of base64 for the secret.
pub fn generate() -> Result<AccessKeyPair, CredentialsError> {
    use base64::Engine as _;
    use ring::rand::{SecureRandom, SystemRandom};
    const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let rng = SystemRandom::new();
    let mut id = [0u8; 16];
    let mut secret = [0u8; 30];
    rng.fill(&mut id).map_err(|_| CredentialsError::Random)?;
    rng.fill(&mut secret).map_err(|_| CredentialsError::Random)?;
    let id: String = id.iter().map(|b| BASE32[usize::from(b % 32)] as char).collect();
    Ok(AccessKeyPair {
        access_key_id: format!("AKIA{id}"),
        secret_access_key: base64::engine::general_purpose::STANDARD.encode(secret),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_is_kept_private_and_reused_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(None, dir.path()).unwrap();
        assert!(first.access_key_id.starts_with("AKIA") && first.access_key_id.len() == 20, "{first:?}");
        assert_eq!(first.secret_access_key.len(), 40);
        validate(&first).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CREDENTIALS_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(None, dir.path()).unwrap(), first);
        assert_ne!(generate().unwrap(), first);
    }

    #[test]
    fn a_configured_pair_wins_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pair = AccessKeyPair { access_key_id: "admin".into(), secret_access_key: "secret".into() };
        assert_eq!(load_or_create(Some(&pair), dir.path()).unwrap(), pair);
        assert!(!dir.path().join(CREDENTIALS_FILE).exists());
        for (id, secret) in [("a/b", "s"), ("ab", "s"), ("admin", ""), ("admin", "with space")] {
            let bad = AccessKeyPair { access_key_id: id.into(), secret_access_key: secret.into() };
            assert!(matches!(validate(&bad), Err(CredentialsError::Invalid(_))), "{id:?} {secret:?}");
        }
        std::fs::write(dir.path().join(CREDENTIALS_FILE), b"[]").unwrap();
        assert!(matches!(load_or_create(None, dir.path()), Err(CredentialsError::Corrupt { .. })));
    }
}
