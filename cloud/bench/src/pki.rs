//! Certificates for Mosquitto (a CA, a server certificate for 127.0.0.1 and
//! localhost, client certificates whose common name is the client's identity)
//! and the TLS client configuration both brokers' clients use. Keys are EC
//! P-256, like the ones the local cloud issues, so both brokers do the same
//! cryptography per handshake.

use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A client certificate and its private key.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: String,
}

/// A throwaway certificate authority.
pub struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams) {
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(2);
}

impl Pki {
    /// A new CA.
    pub fn new() -> anyhow::Result<Pki> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "broker-bench CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut params);
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        let ca_pem = cert.pem();
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).context("loading the CA as issuer")?;
        Ok(Pki { ca_pem, issuer })
    }

    /// The CA certificate PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self) -> anyhow::Result<Identity> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params);
        let cert = params.signed_by(&key, &self.issuer).context("signing the server certificate")?;
        Ok(Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A client certificate whose subject common name is `common_name`
    /// (Mosquitto's `use_identity_as_username` makes it the user name).
    pub fn client(&self, common_name: &str) -> anyhow::Result<Identity> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        validity(&mut params);
        let cert = params.signed_by(&key, &self.issuer).context("signing a client certificate")?;
        Ok(Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

/// A rustls client configuration (ring) trusting `ca_pem` and presenting
/// `identity`. Session resumption is off: every connection does a full handshake.
pub fn client_config(ca_pem: &str, identity: &Identity) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.context("CA PEM")?).context("adding the CA")?;
    }
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut identity.cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("certificate PEM")?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut identity.key_pem.as_bytes())
        .context("key PEM")?
        .context("no private key in the key PEM")?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("client certificate")?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_client_certificates_make_a_client_configuration() {
        let pki = Pki::new().unwrap();
        let id = pki.client("bench-pub-0").unwrap();
        assert!(id.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        client_config(pki.ca_pem(), &id).unwrap();
        assert!(pki.server().unwrap().key_pem.contains("PRIVATE KEY"));
    }
}
