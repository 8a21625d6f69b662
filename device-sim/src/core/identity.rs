//! The core's TLS identity as its HTTPS clients see it. The core presents one certificate to
//! every AWS IoT endpoint — the MQTT broker, the Greengrass data plane, the credentials provider —
//! and a certificate rotation moves the MQTT connection to a new one
//! ([`super::bridge::MqttBridge::switch_identity`]); the other clients must follow, or they keep
//! presenting a certificate the cloud deletes once the rotation commits.
//!
//! [`FollowsIdentity`] keeps a client built from the identity it was last asked with and builds
//! a new one (a new connection pool, so no connection made with the old certificate is reused)
//! when the identity has changed since.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The TLS client configuration that presents the core's current certificate, and its changes.
pub type TlsIdentity = watch::Receiver<Arc<rustls::ClientConfig>>;

/// An identity that never changes (a core without rotation, or a client made for one call).
pub fn fixed(tls: Arc<rustls::ClientConfig>) -> TlsIdentity {
    watch::channel(tls).1
}

/// A client (cheap to clone) built from the current identity, rebuilt when it changes.
pub struct FollowsIdentity<T> {
    identity: TlsIdentity,
    build: Box<dyn Fn(Arc<rustls::ClientConfig>) -> T + Send + Sync>,
    current: Mutex<(Arc<rustls::ClientConfig>, T)>,
}

impl<T: Clone> FollowsIdentity<T> {
    /// Follows `identity`, building clients with `build`.
    pub fn new(identity: TlsIdentity, build: impl Fn(Arc<rustls::ClientConfig>) -> T + Send + Sync + 'static) -> Self {
        let tls = identity.borrow().clone();
        let client = build(tls.clone());
        Self { identity, build: Box::new(build), current: Mutex::new((tls, client)) }
    }

    /// The client for the identity the core presents now.
    pub fn client(&self) -> T {
        let tls = self.identity.borrow().clone();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&current.0, &tls) {
            *current = (tls.clone(), (self.build)(tls));
        }
        current.1.clone()
    }

    /// The TLS configuration of the identity the core presents now.
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.identity.borrow().clone()
    }
}

impl<T> std::fmt::Debug for FollowsIdentity<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FollowsIdentity").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    }

    #[test]
    fn a_client_is_built_once_per_identity_and_again_after_a_switch() {
        let (tx, rx) = watch::channel(config());
        let builds = Arc::new(AtomicUsize::new(0));
        let counted = builds.clone();
        let follower = FollowsIdentity::new(rx, move |tls| {
            counted.fetch_add(1, Ordering::SeqCst);
            tls
        });
        let first = follower.client();
        assert!(Arc::ptr_eq(&first, &follower.client()), "the same identity, the same client");
        assert_eq!(builds.load(Ordering::SeqCst), 1);

        let switched = config();
        tx.send_replace(switched.clone());
        assert!(Arc::ptr_eq(&follower.client(), &switched), "the client of the new identity");
        assert!(Arc::ptr_eq(&follower.tls(), &switched));
        assert_eq!(builds.load(Ordering::SeqCst), 2);

        // Switching back (a rollback) builds again: no client of a replaced identity is kept.
        tx.send_replace(first.clone());
        assert!(Arc::ptr_eq(&follower.client(), &first));
        assert_eq!(builds.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_fixed_identity_outlives_its_sender() {
        let tls = config();
        let follower = FollowsIdentity::new(fixed(tls.clone()), |tls| tls);
        assert!(Arc::ptr_eq(&follower.client(), &tls));
    }
}
