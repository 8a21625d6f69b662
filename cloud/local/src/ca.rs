//! The local certificate authority: the stand-in for Amazon's root CA. It
//! signs the broker's server certificate and every device certificate the
//! registry issues. Its key and certificate persist in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A CA failure.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the CA files failed.
    #[error("CA files in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Key or certificate generation or parsing failed.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A CSR that cannot be used.
    #[error("invalid CSR: {0}")]
    InvalidCsr(String),
}

/// The local CA.
pub struct LocalCa {
    _dir: PathBuf,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").finish_non_exhaustive()
    }
}

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// PEM.
    pub pem: String,
    /// DER.
    pub der: Vec<u8>,
}

impl LocalCa {
    /// Loads the CA from `dir`, creating it (and the server certificate) on first start.
    pub fn load_or_create(_dir: &Path) -> Result<Self, CaError> {
        todo!()
    }

    /// Absolute path of the CA certificate PEM (what clients trust, like AmazonRootCA1.pem).
    pub fn ca_file(&self) -> PathBuf {
        todo!()
    }

    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> &str {
        todo!()
    }

    /// TLS configuration for the MQTT listener: server certificate for
    /// `localhost`/`127.0.0.1`/`::1`, client certificates required and verified against this CA.
    pub fn server_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, CaError> {
        todo!()
    }

    /// Issues a device certificate for a fresh EC P-256 key; returns the certificate and the key PEMs (public, private).
    pub fn issue_with_new_key(&self, _common_name: &str) -> Result<(Issued, String, String), CaError> {
        todo!()
    }

    /// Issues a device certificate for the public key in a PEM CSR (the CSR's subject is kept).
    pub fn issue_for_csr(&self, _csr_pem: &str) -> Result<Issued, CaError> {
        todo!()
    }
}

/// Certificate id as AWS IoT computes it: lowercase hex SHA-256 of the DER.
pub fn certificate_id(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(der))
}
