//! Helpers for integration tests against the local cloud: start it on
//! ephemeral loopback ports, register devices (thing, keys and certificate,
//! policy), and connect MQTT clients over mutual TLS with rumqttc or with a raw
//! TLS stream. Every wait has a deadline; nothing sleeps and hopes.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use local_cloud::broker::{Broker, BrokerConfig};
use local_cloud::bus::{Bus, ServiceHandler};
use local_cloud::ca::LocalCa;
use local_cloud::registry::Registry;
use local_cloud::server::{Config, LocalCloud};
use local_cloud::store::Store;
use rumqttc::MqttOptions;
use rustls::pki_types::ServerName;
// Re-exported for the test files; not every one of them uses each.
#[allow(unused_imports)]
pub use site_testkit::mqtt::{Client, ConnectResult};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// Default wait for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(5);

/// A running local cloud in its own temporary data directory.
pub struct TestCloud {
    /// The cloud.
    pub cloud: LocalCloud,
    /// Its data directory (deleted on drop).
    pub dir: tempfile::TempDir,
}

impl TestCloud {
    /// Starts a local cloud on ephemeral loopback ports.
    pub async fn start() -> TestCloud {
        let dir = tempfile::tempdir().expect("tempdir");
        let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.expect("local cloud starts");
        TestCloud { cloud, dir }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.cloud.registry
    }

    /// `host` and `port` of the MQTT listener.
    pub fn mqtt_addr(&self) -> (String, u16) {
        split_host_port(&self.cloud.endpoints.mqtt)
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
    pub fn device(&self, thing: &str, policy_document: &str) -> Device {
        create_device(self.registry(), thing, policy_document)
    }

    /// A thing whose certificate may do anything.
    pub fn allow_all_device(&self, thing: &str) -> Device {
        self.device(thing, ALLOW_ALL)
    }

    /// rumqttc options for `client_id` authenticating as `device`.
    pub fn options(&self, client_id: &str, device: &Device) -> MqttOptions {
        let (host, port) = self.mqtt_addr();
        mqtt_options(&host, port, self.ca_file(), client_id, device)
    }

    /// A raw TLS connection authenticated as `device` (for hand-made packets).
    pub async fn raw_tls(&self, device: &Device) -> std::io::Result<TlsStream<TcpStream>> {
        let (host, port) = self.mqtt_addr();
        raw_tls(&host, port, self.ca_file(), device).await
    }
}

/// A policy allowing every action on every resource.
#[allow(unused_imports)]
pub use site_testkit::ALLOW_ALL;

/// A registered device identity.
#[derive(Debug, Clone)]
pub struct Device {
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

/// Creates a thing, an ACTIVE certificate with a fresh key, and a policy named
/// `{thing}-policy` attached to the certificate; attaches the certificate to the thing.
pub fn create_device(registry: &Registry, thing: &str, policy_document: &str) -> Device {
    registry.create_thing(thing, None, Default::default()).expect("create thing");
    let (cert, keys) = registry.create_keys_and_certificate(true).expect("create keys and certificate");
    let policy = format!("{thing}-policy");
    registry.create_policy(&policy, policy_document).expect("create policy");
    registry.attach_policy(&policy, &cert.arn).expect("attach policy");
    registry.attach_thing_principal(thing, &cert.arn).expect("attach thing principal");
    Device {
        thing: thing.to_owned(),
        certificate_id: cert.id,
        certificate_arn: cert.arn,
        cert_pem: cert.pem,
        key_pem: keys.private_key_pem,
    }
}

fn split_host_port(s: &str) -> (String, u16) {
    let (host, port) = s.rsplit_once(':').expect("host:port");
    (host.trim_matches(['[', ']']).to_owned(), port.parse().expect("port"))
}

/// A rustls client configuration (ring provider) trusting `ca_file` and
/// presenting `device`'s certificate.
pub fn client_tls_config(ca_file: &Path, device: &Device) -> Arc<rustls::ClientConfig> {
    site_testkit::tls::client_config(ca_file, &device.cert_pem, &device.key_pem)
}

/// rumqttc options: mTLS as `device`, keep-alive 30 s, packets up to 1 MiB
/// each way (so the broker, not the client, enforces IoT Core's limits).
pub fn mqtt_options(host: &str, port: u16, ca_file: &Path, client_id: &str, device: &Device) -> MqttOptions {
    let mut opts = site_testkit::tls::mqtt_options(host, port, client_id, client_tls_config(ca_file, device));
    opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
    opts
}

/// A raw TLS stream to the broker, authenticated as `device`.
pub async fn raw_tls(host: &str, port: u16, ca_file: &Path, device: &Device) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect((host, port)).await?;
    let name = ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?;
    TlsConnector::from(client_tls_config(ca_file, device)).connect(name, tcp).await
}

/// The bytes of an MQTT 3.1.1 CONNECT.
pub fn connect_packet(client_id: &str, clean_session: bool) -> Vec<u8> {
    let mut connect = rumqttc::Connect::new(client_id);
    connect.clean_session = clean_session;
    connect.keep_alive = 30;
    let mut buf = bytes::BytesMut::new();
    connect.write(&mut buf).expect("encode CONNECT");
    buf.to_vec()
}

/// A broker without the rest of the local cloud, for tests that need custom
/// settings, services or direct use of the bus.
pub struct StandaloneBroker {
    /// The registry it authorizes against.
    pub registry: Arc<Registry>,
    /// Publish into the broker as a service would.
    pub bus: Bus,
    /// The broker.
    pub broker: Arc<Broker>,
    /// Listening address.
    pub addr: std::net::SocketAddr,
    /// CA file clients trust.
    pub ca_file: std::path::PathBuf,
    /// Stops the broker.
    pub shutdown: CancellationToken,
    /// Data directory.
    pub dir: tempfile::TempDir,
}

impl StandaloneBroker {
    /// Starts a broker on an ephemeral loopback port.
    pub async fn start(config: BrokerConfig, services: Vec<Arc<dyn ServiceHandler>>) -> StandaloneBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Arc::new(LocalCa::load_or_create(&dir.path().join("ca")).expect("CA"));
        let store = Store::in_memory().expect("store");
        let registry = Arc::new(
            Registry::open(store, ca.clone(), local_cloud::time::system(), "us-east-1", "000000000000")
                .expect("registry"),
        );
        let (bus, rx) = Bus::channel();
        let broker = Broker::new(registry.clone(), services, rx, config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        tokio::spawn(broker.clone().serve(listener, ca.server_tls_config().expect("TLS config"), shutdown.clone()));
        StandaloneBroker { registry, bus, broker, addr, ca_file: ca.ca_file(), shutdown, dir }
    }

    /// rumqttc options for `client_id` as `device`.
    pub fn options(&self, client_id: &str, device: &Device) -> MqttOptions {
        mqtt_options("127.0.0.1", self.addr.port(), &self.ca_file, client_id, device)
    }

    /// A raw TLS connection as `device`.
    pub async fn raw_tls(&self, device: &Device) -> std::io::Result<TlsStream<TcpStream>> {
        raw_tls("127.0.0.1", self.addr.port(), &self.ca_file, device).await
    }
}

impl Drop for StandaloneBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The HTTP client the AWS SDKs use in tests: rustls with ring, the workspace's
/// one crypto provider (the SDKs' default client would bring aws-lc).
pub fn sdk_http_client() -> aws_sdk_iot::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}
