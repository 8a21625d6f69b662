//! The local certificate authority: the stand-in for Amazon's root CA. It
//! signs the broker's server certificate and every device certificate the
//! registry issues. Its key and certificates persist in `DIR/ca/`, written
//! atomically (temporary file, fsync, rename), so a restart keeps every issued
//! certificate valid.
//!
//! Device certificates follow what AWS IoT issues: valid until
//! 2049-12-31T23:59:59Z, `clientAuth` extended key usage, EC P-256 keys. (AWS's
//! CreateKeysAndCertificate makes RSA 2048 keys; RSA key generation is not
//! available with the workspace's crypto provider, ring, so keys made here are
//! EC P-256, which IoT Core accepts equally.)

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A CA failure.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing the CA files failed.
    #[error("CA file {path}: {source}")]
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
    dir: PathBuf,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    server_cert_pem: String,
    server_key_pem: String,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa").field("dir", &self.dir).finish_non_exhaustive()
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

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key.pem";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key.pem";

fn cert_err(e: impl std::fmt::Display) -> CaError {
    CaError::Certificate(e.to_string())
}

impl LocalCa {
    /// Loads the CA from `dir`, creating it (and the server certificate) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io { path: dir.to_path_buf(), source })?;
        let dir = std::fs::canonicalize(dir).map_err(|source| CaError::Io { path: dir.to_path_buf(), source })?;
        let ca_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        if !ca_path.exists() || !key_path.exists() {
            let key = KeyPair::generate().map_err(cert_err)?;
            let params = ca_params();
            let cert = params.self_signed(&key).map_err(cert_err)?;
            write_atomic(&key_path, key.serialize_pem().as_bytes(), true)?;
            write_atomic(&ca_path, cert.pem().as_bytes(), false)?;
            // A new CA invalidates any older server certificate.
            let _ = std::fs::remove_file(dir.join(SERVER_CERT));
        }
        let ca_pem = read(&ca_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(cert_err)?;

        let server_cert_path = dir.join(SERVER_CERT);
        let server_key_path = dir.join(SERVER_KEY);
        if !server_cert_path.exists() || !server_key_path.exists() {
            let key = KeyPair::generate().map_err(cert_err)?;
            let cert = server_params()?.signed_by(&key, &issuer).map_err(cert_err)?;
            write_atomic(&server_key_path, key.serialize_pem().as_bytes(), true)?;
            write_atomic(&server_cert_path, cert.pem().as_bytes(), false)?;
        }
        let server_cert_pem = read(&server_cert_path)?;
        let server_key_pem = read(&server_key_path)?;
        Ok(LocalCa { dir, ca_pem, issuer, server_cert_pem, server_key_pem })
    }

    /// Absolute path of the CA certificate PEM (what clients trust, like AmazonRootCA1.pem).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// TLS configuration for the MQTT listener: server certificate for
    /// `localhost`/`127.0.0.1`/`::1`, client certificates required and verified against this CA.
    pub fn server_tls_config(&self) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.map_err(cert_err)?).map_err(cert_err)?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().map_err(cert_err)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(cert_err)?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).map_err(cert_err)?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(cert_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(cert_err)?;
        Ok(Arc::new(config))
    }

    /// Issues a device certificate for a fresh EC P-256 key; returns the
    /// certificate and the key PEMs (public SubjectPublicKeyInfo, private PKCS#8).
    pub fn issue_with_new_key(&self, common_name: &str) -> Result<(Issued, String, String), CaError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        let cert = device_params(dn).signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok((Issued { pem: cert.pem(), der: cert.der().to_vec() }, key.public_key_pem(), key.serialize_pem()))
    }

    /// [`LocalCa::issue_with_new_key`] with a short life: valid until `not_after` (epoch
    /// seconds), as a provisioning claim certificate is.
    pub fn issue_with_new_key_until(
        &self,
        common_name: &str,
        not_after: u64,
    ) -> Result<(Issued, String, String), CaError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        let mut params = device_params(dn);
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after as i64).map_err(cert_err)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok((Issued { pem: cert.pem(), der: cert.der().to_vec() }, key.public_key_pem(), key.serialize_pem()))
    }

    /// Issues a device certificate for the public key in a PEM CSR. The CSR's
    /// signature must verify; its subject is kept, its requested extensions are not.
    pub fn issue_for_csr(&self, csr_pem: &str) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| CaError::InvalidCsr(e.to_string()))?;
        let cert = device_params(csr.params.distinguished_name.clone())
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(cert_err)?;
        Ok(Issued { pem: cert.pem(), der: cert.der().to_vec() })
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, "US");
    dn.push(DnType::OrganizationName, "Local Cloud");
    dn.push(DnType::CommonName, "Local Cloud Root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params.serial_number = Some(random_serial());
    params
}

fn server_params() -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).map_err(cert_err)?;
    params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn device_params(dn: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::macros::datetime!(2049-12-31 23:59:59 UTC);
    params.serial_number = Some(random_serial());
    params
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).ok();
    bytes[0] &= 0x7f; // keep it positive
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Io { path: path.to_path_buf(), source })
}

/// Writes `bytes` to `path` through a temporary file, fsync and rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> Result<(), CaError> {
    let io = |source| CaError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Certificate id as AWS IoT computes it: lowercase hex SHA-256 of the DER.
pub fn certificate_id(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(der))
}

/// Validity and subject of a certificate, read from its DER.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertInfo {
    /// notBefore, epoch seconds.
    pub not_before: u64,
    /// notAfter, epoch seconds.
    pub not_after: u64,
    /// Subject attributes by IoT policy variable name (`CommonName`, `Organization`, …).
    pub subject: std::collections::BTreeMap<String, String>,
}

/// Reads validity and subject from a DER certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, CaError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).map_err(cert_err)?;
    let mut subject = std::collections::BTreeMap::new();
    for attr in cert.subject().iter_attributes() {
        let name = match attr.attr_type().to_id_string().as_str() {
            "2.5.4.3" => "CommonName",
            "2.5.4.6" => "Country",
            "2.5.4.10" => "Organization",
            "2.5.4.11" => "OrganizationalUnit",
            "2.5.4.7" => "Locality",
            "2.5.4.8" => "State",
            "2.5.4.5" => "SerialNumber",
            _ => continue,
        };
        if let Ok(v) = attr.as_str() {
            subject.insert(name.to_string(), v.to_string());
        }
    }
    let validity = cert.validity();
    Ok(CertInfo {
        not_before: validity.not_before.timestamp().max(0) as u64,
        not_after: validity.not_after.timestamp().max(0) as u64,
        subject,
    })
}

/// The DER of the first certificate in a PEM string.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, CaError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map(|c| c.to_vec()).map_err(cert_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_survives_reload_and_issues_verifiable_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let first_pem = ca.ca_pem().to_string();
        let (issued, public_pem, private_pem) = ca.issue_with_new_key("AWS IoT Certificate").unwrap();
        assert!(public_pem.contains("PUBLIC KEY") && private_pem.contains("PRIVATE KEY"));
        let info = cert_info(&issued.der).unwrap();
        assert_eq!(info.subject.get("CommonName").map(String::as_str), Some("AWS IoT Certificate"));
        assert_eq!(info.not_after, 2_524_607_999, "valid until 2049-12-31T23:59:59Z like AWS IoT certificates");
        drop(ca);
        let again = LocalCa::load_or_create(dir.path()).unwrap();
        assert_eq!(again.ca_pem(), first_pem, "a restart keeps the same CA");
        assert!(again.server_tls_config().is_ok());
        assert_eq!(certificate_id(&issued.der).len(), 64);
    }

    #[test]
    fn csr_keeps_its_public_key_and_subject() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "pump-001");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let issued = ca.issue_for_csr(&csr).unwrap();
        let (_, cert) = <x509_parser::certificate::X509Certificate as x509_parser::prelude::FromDer<
            x509_parser::error::X509Error,
        >>::from_der(&issued.der)
        .unwrap();
        assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
        assert_eq!(cert_info(&issued.der).unwrap().subject["CommonName"], "pump-001");
    }

    #[test]
    fn garbage_csr_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        for bad in ["", "not a csr", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"] {
            assert!(matches!(ca.issue_for_csr(bad), Err(CaError::InvalidCsr(_))), "{bad:?}");
        }
    }
}
