//! The device's key pair and certificate signing request, made on this machine: the private key
//! never leaves it. EC P-256 (IoT Core accepts EC P-256/P-384 and RSA ≥ 2048 keys for CSRs).

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};

use crate::error::ProvisionError;

/// A fresh key pair and a CSR for it.
pub struct NewIdentity {
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The CSR, PEM.
    pub csr_pem: String,
}

/// Makes an EC P-256 key pair and a CSR whose subject common name is the thing name (IoT Core
/// keeps the CSR's subject in the certificate it issues).
pub fn new_identity(thing_name: &str) -> Result<NewIdentity, ProvisionError> {
    let failed = |e: rcgen::Error| ProvisionError::unexpected("CreateCsr", format!("cannot make a key or CSR: {e}"));
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(failed)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, thing_name);
    params.distinguished_name = subject;
    let csr = params.serialize_request(&key).map_err(failed)?;
    Ok(NewIdentity { key_pem: key.serialize_pem(), csr_pem: csr.pem().map_err(failed)? })
}

/// Whether `key_pem` is the private key of the certificate `cert_pem` (same public key).
pub fn key_matches_certificate(cert_pem: &str, key_pem: &str) -> bool {
    let Ok(key) = KeyPair::from_pem(key_pem) else { return false };
    let Some(Ok(der)) = rustls_pemfile::certs(&mut cert_pem.as_bytes()).next() else { return false };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der) else { return false };
    cert.tbs_certificate.subject_pki.raw == key.subject_public_key_info().as_slice()
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::FromDer;

    use super::*;

    #[test]
    fn csr_carries_the_thing_name_and_the_new_public_key() {
        let id = new_identity("pump-core-1").unwrap();
        assert!(id.key_pem.contains("BEGIN PRIVATE KEY"));
        let der = rustls_pemfile::csr(&mut id.csr_pem.as_bytes()).unwrap().unwrap();
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).unwrap();
        let cn = csr.certification_request_info.subject.iter_common_name().next().unwrap().as_str().unwrap();
        assert_eq!(cn, "pump-core-1");
        let key = KeyPair::from_pem(&id.key_pem).unwrap();
        assert_eq!(csr.certification_request_info.subject_pki.raw, key.subject_public_key_info().as_slice());
    }

    #[test]
    fn key_is_matched_only_to_its_own_certificate() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["x".to_string()]).unwrap().self_signed(&key).unwrap();
        let other = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(key_matches_certificate(&cert.pem(), &key.serialize_pem()));
        assert!(!key_matches_certificate(&cert.pem(), &other.serialize_pem()));
        assert!(!key_matches_certificate("garbage", &key.serialize_pem()));
    }
}
