//! Helpers for integration tests against the local cloud. The cloud, registered devices and
//! their mTLS MQTT clients come from the workspace's shared fixture (`site_testkit::cloud`);
//! what is only the broker's (a standalone broker with custom settings, hand-made packets) is
//! here. Every wait has a deadline; nothing sleeps and hopes.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use local_cloud::broker::{Broker, BrokerConfig};
use local_cloud::bus::{Bus, ServiceHandler};
use local_cloud::ca::LocalCa;
use local_cloud::registry::Registry;
use local_cloud::store::Store;
use rumqttc::MqttOptions;
// Re-exported for the test files; not every one of them uses each.
#[allow(unused_imports)]
pub use site_testkit::ALLOW_ALL;
#[allow(unused_imports)]
pub use site_testkit::cloud::{Registered as Device, TestCloud, mqtt_options, raw_tls, register_pem as create_device};
#[allow(unused_imports)]
pub use site_testkit::mqtt::{Client, ConnectResult};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// Default wait for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(5);

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

/// The administrator's key pair the local cloud advertises in `endpoints.json`, as SDK
/// credentials: every HTTP API verifies signatures against it.
pub fn admin(endpoints: &local_cloud::server::Endpoints) -> aws_credential_types::Credentials {
    let pair = endpoints.credentials.as_ref().expect("endpoints carry the administrator's key pair");
    aws_credential_types::Credentials::new(&pair.access_key_id, &pair.secret_access_key, None, None, "test")
}

/// One configuration for every AWS SDK client of a test: `us-east-1`, the administrator's
/// credentials, the local cloud's HTTP endpoint and [`sdk_http_client`].
pub fn shared_sdk_config(endpoints: &local_cloud::server::Endpoints) -> aws_config::SdkConfig {
    aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(admin(endpoints)))
        .endpoint_url(&endpoints.http)
        .http_client(sdk_http_client())
        .build()
}

/// The HTTP client the AWS SDKs use in tests: rustls with ring, the workspace's
/// one crypto provider (the SDKs' default client would bring aws-lc).
pub fn sdk_http_client() -> aws_sdk_iot::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// The error code and HTTP status of an SDK call that must fail (any AWS SDK:
/// they share the smithy runtime's error and response types).
pub fn failed<O, E>(
    result: Result<O, aws_sdk_iot::error::SdkError<E, aws_sdk_iot::config::http::HttpResponse>>,
) -> (String, u16)
where
    E: aws_sdk_iot::error::ProvideErrorMetadata + std::fmt::Debug,
    O: std::fmt::Debug,
{
    use aws_sdk_iot::error::ProvideErrorMetadata as _;
    let e = result.expect_err("the call must fail");
    let status = e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
    (e.code().unwrap_or_default().to_string(), status)
}
