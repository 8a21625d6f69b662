//! Mutual TLS for test clients of the local cloud's broker: the workspace's one crypto provider
//! (ring), the cloud's CA as the only root, the device's certificate and key as the identity.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A rustls client configuration (ring) trusting the CAs in `ca_file` and presenting
/// `cert_pem` with `key_pem`. Panics with the reason on an unreadable or malformed input.
pub fn client_config(ca_file: &Path, cert_pem: &str, key_pem: &str) -> Arc<rustls::ClientConfig> {
    let ca_pem =
        std::fs::read(ca_file).unwrap_or_else(|e| panic!("cannot read the CA file {}: {e}", ca_file.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_slice()) {
        roots.add(cert.expect("PEM of the CA file")).expect("a CA certificate");
    }
    assert!(!roots.is_empty(), "no certificate in the CA file {}", ca_file.display());
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<_, _>>().expect("certificate PEM");
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut key_pem.as_bytes()).expect("key PEM").expect("a private key in the key PEM");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions of the ring provider")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("the certificate and key make a TLS identity");
    Arc::new(config)
}

/// rumqttc options for `client_id` at `host:port` over `tls`, with a 30 s keep-alive.
pub fn mqtt_options(host: &str, port: u16, client_id: &str, tls: Arc<rustls::ClientConfig>) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "no certificate in the CA file")]
    fn a_ca_file_without_a_certificate_is_named_in_the_failure() {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, "not a PEM file\n").unwrap();
        client_config(&ca_file, "", "");
    }

    #[test]
    #[should_panic(expected = "cannot read the CA file")]
    fn a_missing_ca_file_is_named_in_the_failure() {
        let dir = tempfile::tempdir().unwrap();
        client_config(&dir.path().join("absent.pem"), "", "");
    }
}
