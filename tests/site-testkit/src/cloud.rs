//! The local cloud in-process, as a site test sees it: on ephemeral loopback ports, with the core
//! device and an operator's application registered, stopped and restarted on the same ports and
//! data directory, and its shadows read, written and waited on.

use std::path::{Path, PathBuf};

use cloud_api::endpoints::Endpoints;
use device_sim::core::runtime::CloudOptions;
use local_cloud::registry::CertificateStatus;
use local_cloud::server::{Config, LocalCloud};
use serde_json::Value;

use crate::mqtt::Observer;
use crate::{ALLOW_ALL, tls, wait_until};

/// The operator application's thing name and MQTT client id.
pub const OPERATOR: &str = "operator-app";

/// A thing registered in the local cloud, with its certificate and key written to files.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Thing name (also the MQTT client id it connects with).
    pub thing: String,
    /// Id of its ACTIVE certificate.
    pub certificate_id: String,
    /// Certificate PEM file.
    pub cert_file: PathBuf,
    /// Private key PEM file.
    pub key_file: PathBuf,
}

/// The local cloud with the core device and an operator's application registered in it.
pub struct Cloud {
    data_dir: PathBuf,
    endpoints: Endpoints,
    local: Option<LocalCloud>,
    /// The core device: thing `core_thing` with the core's policy.
    pub core: Identity,
    /// The operator's application ([`OPERATOR`]), which may do anything.
    pub operator: Identity,
}

impl Cloud {
    /// Starts a local cloud with its data in `dir/cloud` on ephemeral loopback ports, and
    /// registers the core device (`core_thing`, `core_policy`) and the operator; their
    /// certificates and keys go to `dir`.
    pub async fn start(dir: &Path, core_thing: &str, core_policy: &str) -> Cloud {
        let data_dir = dir.join("cloud");
        let local = LocalCloud::start(Config::ephemeral(&data_dir)).await.expect("the local cloud starts");
        let endpoints = local.endpoints.clone();
        let core = register(&local, dir, core_thing, core_policy);
        let operator = register(&local, dir, OPERATOR, ALLOW_ALL);
        Cloud { data_dir, endpoints, local: Some(local), core, operator }
    }

    /// The running cloud; fails the test while it is stopped.
    pub fn local(&self) -> &LocalCloud {
        self.local.as_ref().expect("the local cloud is running")
    }

    /// Where it listens (the same across a restart).
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Stops it (connections close; the data directory stays).
    pub async fn stop(&mut self) {
        self.local.take().expect("the local cloud is running").shutdown().await;
    }

    /// Starts it again on the same ports and data directory.
    pub async fn restart(&mut self) {
        assert!(self.local.is_none(), "the local cloud is already running");
        let mut config = Config::new(&self.data_dir);
        config.mqtt_addr = self.endpoints.mqtt.parse().expect("the MQTT address");
        config.http_addr = self.endpoints.http.trim_start_matches("http://").parse().expect("the HTTP address");
        self.local = Some(LocalCloud::start(config).await.expect("the local cloud restarts"));
    }

    /// Stops it if it runs.
    pub async fn shutdown(mut self) {
        if let Some(local) = self.local.take() {
            local.shutdown().await;
        }
    }

    /// Sets the core's certificate ACTIVE or INACTIVE (IoT Core lets it in or locks it out).
    pub fn set_core_certificate(&self, status: CertificateStatus) {
        self.local().registry.update_certificate(&self.core.certificate_id, status).expect("update the certificate");
    }

    /// How the simulated core reaches this cloud as the core device.
    pub fn core_options(&self) -> CloudOptions {
        CloudOptions {
            endpoints: self.endpoints.clone(),
            cert_file: self.core.cert_file.clone(),
            key_file: self.core.key_file.clone(),
        }
    }

    /// An MQTT client of the operator's application, subscribed to `filters`.
    pub async fn observer(&self, filters: &[&str]) -> Observer {
        let read = |path: &Path| std::fs::read_to_string(path).expect("the operator's PEM files");
        let tls = tls::client_config(
            &self.endpoints.ca_file,
            &read(&self.operator.cert_file),
            &read(&self.operator.key_file),
        );
        let (host, port) = self.endpoints.mqtt_host_port().expect("the MQTT endpoint");
        Observer::connect(tls::mqtt_options(&host, port, &self.operator.thing, tls), filters).await
    }

    /// The shadow `shadow` of `thing` in the cloud (`null` while there is none).
    pub fn shadow(&self, thing: &str, shadow: &str) -> Value {
        self.local().shadows.get(thing, Some(shadow)).unwrap_or(Value::Null)
    }

    /// An UpdateThingShadow in the cloud, as the data-plane API does it; the accepted document.
    pub fn update_shadow(&self, thing: &str, shadow: &str, doc: &Value) -> Value {
        let payload = serde_json::to_vec(doc).expect("a JSON document");
        self.local().shadows.update(thing, Some(shadow), &payload).expect("the cloud accepts the update")
    }

    /// Waits until the cloud's shadow satisfies `pred`; returns it.
    pub async fn wait_shadow(&self, thing: &str, shadow: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(
            format!("the cloud shadow showing {what}"),
            async || self.shadow(thing, shadow),
            pred,
            |doc| format!("{doc:#}"),
        )
        .await
    }
}

/// Registers `thing` with an ACTIVE certificate that has `policy` (named `{thing}-policy`)
/// attached, and writes its certificate and key to `dir/{thing}.crt` and `dir/{thing}.key`.
pub fn register(cloud: &LocalCloud, dir: &Path, thing: &str, policy: &str) -> Identity {
    let r = &cloud.registry;
    r.create_thing(thing, None, Default::default()).expect("create the thing");
    let (cert, keys) = r.create_keys_and_certificate(true).expect("create keys and a certificate");
    let policy_name = format!("{thing}-policy");
    r.create_policy(&policy_name, policy).expect("create the policy");
    r.attach_policy(&policy_name, &cert.arn).expect("attach the policy");
    r.attach_thing_principal(thing, &cert.arn).expect("attach the certificate to the thing");
    let id = Identity {
        thing: thing.to_owned(),
        certificate_id: cert.id.clone(),
        cert_file: dir.join(format!("{thing}.crt")),
        key_file: dir.join(format!("{thing}.key")),
    };
    std::fs::write(&id.cert_file, cert.pem).expect("write the certificate");
    std::fs::write(&id.key_file, keys.private_key_pem).expect("write the key");
    id
}
