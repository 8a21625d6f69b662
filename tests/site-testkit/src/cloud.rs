//! The local cloud in-process, as an integration test sees it, on ephemeral loopback ports:
//!
//! - [`TestCloud`]: a bare cloud in a temporary directory, with things registered straight in its
//!   registry and mTLS MQTT clients authenticated as them (the local cloud's and provisioning's
//!   own tests);
//! - [`Cloud`] (feature `site`): the core device and an operator's application registered, stopped
//!   and restarted on the same ports and data directory, and its shadows read, written and waited
//!   on (the site tests).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloud_api::endpoints::Endpoints;
#[cfg(feature = "site")]
use device_sim::core::runtime::CloudOptions;
#[cfg(feature = "site")]
use local_cloud::registry::CertificateStatus;
use local_cloud::registry::Registry;
use local_cloud::server::{Config, LocalCloud};
use rumqttc::MqttOptions;
use rustls::pki_types::ServerName;
#[cfg(feature = "site")]
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[cfg(feature = "site")]
use crate::mqtt::Observer;
#[cfg(feature = "site")]
use crate::wait_until;
use crate::{ALLOW_ALL, tls};

/// A thing registered in the local cloud's registry, with its ACTIVE certificate and key in PEM.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Thing name.
    pub thing: String,
    /// Certificate id.
    pub certificate_id: String,
    /// Certificate ARN.
    pub certificate_arn: String,
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
}

/// Creates `thing`, an ACTIVE certificate with a fresh key, and a policy named `{thing}-policy`
/// with `policy_document` attached to the certificate; attaches the certificate to the thing.
pub fn register_pem(registry: &Registry, thing: &str, policy_document: &str) -> Registered {
    registry.create_thing(thing, None, Default::default()).expect("create the thing");
    let (cert, keys) = registry.create_keys_and_certificate(true).expect("create keys and a certificate");
    let policy = format!("{thing}-policy");
    registry.create_policy(&policy, policy_document).expect("create the policy");
    registry.attach_policy(&policy, &cert.arn).expect("attach the policy");
    registry.attach_thing_principal(thing, &cert.arn).expect("attach the certificate to the thing");
    Registered {
        thing: thing.to_owned(),
        certificate_id: cert.id,
        certificate_arn: cert.arn,
        cert_pem: cert.pem,
        key_pem: keys.private_key_pem,
    }
}

/// A running local cloud in its own temporary data directory (deleted on drop).
pub struct TestCloud {
    /// The cloud.
    pub cloud: LocalCloud,
    /// Its data directory.
    pub dir: tempfile::TempDir,
}

impl TestCloud {
    /// Starts a local cloud on ephemeral loopback ports.
    pub async fn start() -> TestCloud {
        Self::start_with(|_| {}).await
    }

    /// [`TestCloud::start`] with the configuration changed by `configure` (shorter intervals).
    pub async fn start_with(configure: impl FnOnce(&mut Config)) -> TestCloud {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = Config::ephemeral(dir.path());
        configure(&mut config);
        let cloud = LocalCloud::start(config).await.expect("the local cloud starts");
        TestCloud { cloud, dir }
    }

    /// Stops it, and fails the test if it does not stop within 10 s.
    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(10), self.cloud.shutdown()).await.expect("a clean shutdown");
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.cloud.registry
    }

    /// Where it listens, and the CA file clients trust.
    pub fn endpoints(&self) -> &Endpoints {
        &self.cloud.endpoints
    }

    /// `host` and `port` of the MQTT listener.
    pub fn mqtt_addr(&self) -> (String, u16) {
        self.cloud.endpoints.mqtt_host_port().expect("the MQTT endpoint")
    }

    /// The CA file clients trust.
    pub fn ca_file(&self) -> &Path {
        &self.cloud.endpoints.ca_file
    }

    /// A full ARN for a resource such as `topic/a/b` or `client/x`.
    pub fn arn(&self, resource: &str) -> String {
        format!("arn:aws:iot:{}:{}:{resource}", self.cloud.endpoints.region, self.cloud.endpoints.account_id)
    }

    /// A thing with an ACTIVE certificate that has `policy_document` attached.
    pub fn device(&self, thing: &str, policy_document: &str) -> Registered {
        register_pem(self.registry(), thing, policy_document)
    }

    /// A thing whose certificate may do anything.
    pub fn allow_all_device(&self, thing: &str) -> Registered {
        self.device(thing, ALLOW_ALL)
    }

    /// rumqttc options for `client_id` authenticating as `device` (see [`mqtt_options`]).
    pub fn options(&self, client_id: &str, device: &Registered) -> MqttOptions {
        let (host, port) = self.mqtt_addr();
        mqtt_options(&host, port, self.ca_file(), client_id, device)
    }

    /// A raw TLS connection authenticated as `device` (for hand-made packets).
    pub async fn raw_tls(&self, device: &Registered) -> std::io::Result<TlsStream<TcpStream>> {
        let (host, port) = self.mqtt_addr();
        raw_tls(&host, port, self.ca_file(), device).await
    }
}

/// A rustls client configuration (ring) trusting `ca_file` and presenting `device`'s certificate.
pub fn client_tls_config(ca_file: &Path, device: &Registered) -> Arc<rustls::ClientConfig> {
    tls::client_config(ca_file, &device.cert_pem, &device.key_pem)
}

/// rumqttc options: mTLS as `device`, keep-alive 30 s, packets up to 1 MiB each way (so the
/// broker, not the client, enforces IoT Core's limits).
pub fn mqtt_options(host: &str, port: u16, ca_file: &Path, client_id: &str, device: &Registered) -> MqttOptions {
    let mut opts = tls::mqtt_options(host, port, client_id, client_tls_config(ca_file, device));
    opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
    opts
}

/// A raw TLS stream to the broker at `host:port`, authenticated as `device`.
pub async fn raw_tls(
    host: &str,
    port: u16,
    ca_file: &Path,
    device: &Registered,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((host, port)).await?;
    let name = ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?;
    TlsConnector::from(client_tls_config(ca_file, device)).connect(name, tcp).await
}

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
#[cfg(feature = "site")]
pub struct Cloud {
    data_dir: PathBuf,
    endpoints: Endpoints,
    /// The HTTP listener's own address (behind a public URL, when one is configured).
    http_addr: std::net::SocketAddr,
    public_http_url: Option<String>,
    local: Option<LocalCloud>,
    /// The core device: thing `core_thing` with the core's policy.
    pub core: Identity,
    /// The operator's application ([`OPERATOR`]), which may do anything.
    pub operator: Identity,
}

#[cfg(feature = "site")]
impl Cloud {
    /// Starts a local cloud with its data in `dir/cloud` on ephemeral loopback ports, and
    /// registers the core device (`core_thing`, `core_policy`) and the operator; their
    /// certificates and keys go to `dir`.
    pub async fn start(dir: &Path, core_thing: &str, core_policy: &str) -> Cloud {
        Self::start_with(dir, core_thing, core_policy, |_| {}).await
    }

    /// The same, with `configure` changing the configuration first (a public HTTP URL: a proxy
    /// in front of the HTTP endpoint).
    pub async fn start_with(
        dir: &Path,
        core_thing: &str,
        core_policy: &str,
        configure: impl FnOnce(&mut Config),
    ) -> Cloud {
        let data_dir = dir.join("cloud");
        let mut config = Config::ephemeral(&data_dir);
        configure(&mut config);
        let public_http_url = config.public_http_url.clone();
        let local = LocalCloud::start(config).await.expect("the local cloud starts");
        let endpoints = local.endpoints.clone();
        let core = register(&local, dir, core_thing, core_policy);
        let operator = register(&local, dir, OPERATOR, ALLOW_ALL);
        let http_addr = local.http_addr;
        Cloud { data_dir, endpoints, local: Some(local), core, operator, http_addr, public_http_url }
    }

    /// The running cloud; fails the test while it is stopped.
    pub fn local(&self) -> &LocalCloud {
        self.local.as_ref().expect("the local cloud is running")
    }

    /// Where it listens (the same across a restart).
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The HTTP listener's own address (what a proxy in front of it connects to).
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.http_addr
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
        config.http_addr = self.http_addr;
        config.public_http_url = self.public_http_url.clone();
        if let Some(gg) = &self.endpoints.greengrass_data_plane {
            config.greengrass_data_plane_addr =
                gg.trim_start_matches("https://").parse().expect("the data-plane address");
        }
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
        self.options_for(&self.core)
    }

    /// How a simulated core reaches this cloud as `identity` (another core device, registered
    /// with [`register`]).
    pub fn options_for(&self, identity: &Identity) -> CloudOptions {
        CloudOptions {
            endpoints: self.endpoints.clone(),
            cert_file: identity.cert_file.clone(),
            key: device_sim::core::key_store::DeviceKey::File(identity.key_file.clone()),
            fleet_status: None,
            telemetry_intervals: None,
            cloud_deployments: false,
            mqtt_version: Default::default(),
            certificate_rotation: None,
        }
    }

    /// An MQTT client of the operator's application, subscribed to `filters`.
    pub async fn observer(&self, filters: &[&str]) -> Observer {
        self.client_as(&self.operator, filters).await
    }

    /// An MQTT client connected as the core device itself (its certificate, client id = its
    /// thing), subscribed to `filters`: for tests that play the core's side of a contract.
    pub async fn as_core(&self, filters: &[&str]) -> Observer {
        self.client_as(&self.core, filters).await
    }

    /// rumqttc MQTT 5 options for the operator's application (mTLS with its certificate, client
    /// id [`OPERATOR`]), for tests that look at MQTT 5 properties.
    pub fn operator_mqtt5_options(&self) -> rumqttc::v5::MqttOptions {
        let read = |path: &Path| std::fs::read_to_string(path).expect("the identity's PEM files");
        let identity = &self.operator;
        let tls = tls::client_config(&self.endpoints.ca_file, &read(&identity.cert_file), &read(&identity.key_file));
        let (host, port) = self.endpoints.mqtt_host_port().expect("the MQTT endpoint");
        let mut opts = rumqttc::v5::MqttOptions::new(identity.thing.clone(), host, port);
        opts.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
        opts.set_keep_alive(std::time::Duration::from_secs(30));
        opts
    }

    async fn client_as(&self, identity: &Identity, filters: &[&str]) -> Observer {
        let read = |path: &Path| std::fs::read_to_string(path).expect("the identity's PEM files");
        let tls = tls::client_config(&self.endpoints.ca_file, &read(&identity.cert_file), &read(&identity.key_file));
        let (host, port) = self.endpoints.mqtt_host_port().expect("the MQTT endpoint");
        Observer::connect(tls::mqtt_options(&host, port, &identity.thing, tls), filters).await
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
    let registered = register_pem(&cloud.registry, thing, policy);
    let id = Identity {
        thing: registered.thing,
        certificate_id: registered.certificate_id,
        cert_file: dir.join(format!("{thing}.crt")),
        key_file: dir.join(format!("{thing}.key")),
    };
    std::fs::write(&id.cert_file, registered.cert_pem).expect("write the certificate");
    std::fs::write(&id.key_file, registered.key_pem).expect("write the key");
    id
}

/// A core's IoT policy for cloud deployments: the shipped `greengrass-core-deployments.json`
/// (deployment jobs and shadow, fleet status, the Greengrass data plane) in the local cloud's
/// partition, Region and account, and a connection under its own thing name.
pub fn cloud_deployments_policy() -> String {
    let shipped = include_str!("../../../cloud/provision/policies/greengrass-core-deployments.json")
        .replace("{{partition}}", "aws")
        .replace("{{region}}", "us-east-1")
        .replace("{{accountId}}", "000000000000");
    let mut policy: serde_json::Value = serde_json::from_str(&shipped).expect("the shipped policy is JSON");
    policy["Statement"].as_array_mut().expect("the policy's statements").push(serde_json::json!({
        "Effect": "Allow", "Action": "iot:Connect",
        "Resource": "arn:aws:iot:*:*:client/${iot:Connection.Thing.ThingName}"}));
    policy.to_string()
}
