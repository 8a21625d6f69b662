//! Helpers for the provisioning tests: a local cloud on ephemeral loopback ports, the SDK client
//! the library uses, and an MQTT client that authenticates with a provisioned output directory.
//! Every wait has a deadline.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::Credentials;
use cloud_api::endpoints::Endpoints;
use local_cloud::server::{Config, LocalCloud};
use provision::{ClientOptions, CoreDeviceSpec};
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, Publish, QoS};
use rumqttc::{SubscribeReasonCode, TlsConfiguration, Transport};

/// How long something that should happen promptly may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// A local cloud in a temporary data directory.
pub struct TestCloud {
    /// The cloud.
    pub cloud: LocalCloud,
    /// Its data directory.
    pub dir: tempfile::TempDir,
}

impl TestCloud {
    /// Starts a local cloud on ephemeral loopback ports.
    pub async fn start() -> TestCloud {
        let dir = tempfile::tempdir().unwrap();
        let cloud = LocalCloud::start(Config::ephemeral(dir.path())).await.expect("local cloud starts");
        TestCloud { cloud, dir }
    }

    /// The local cloud's MQTT port.
    pub fn mqtt_port(&self) -> u16 {
        self.cloud.endpoints.mqtt_host_port().unwrap().1
    }

    /// The `aws-sdk-iot` client the library is given: the local cloud's endpoint, any credentials.
    pub async fn iot(&self) -> aws_sdk_iot::Client {
        provision::iot_client(&ClientOptions {
            endpoint_url: Some(self.cloud.endpoints.http.clone()),
            region: Some("us-east-1".into()),
            credentials: Some(Credentials::new("AKIDLOCAL", "local-secret", None, None, "test")),
        })
        .await
    }

    /// A spec for `thing` into `out`, with the local cloud's CA, MQTT port and data plane.
    pub fn spec(&self, thing: &str, out: &Path) -> CoreDeviceSpec {
        let mut spec = CoreDeviceSpec::new(thing, out, &self.cloud.endpoints.ca_file);
        spec.mqtt_port = self.mqtt_port();
        spec.data_plane_url = Some(self.cloud.endpoints.http.clone());
        spec
    }

    /// Stops the cloud.
    pub async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(10), self.cloud.shutdown()).await.expect("clean shutdown");
    }
}

/// A certificate and key in PEM, with the endpoints to use them against.
#[derive(Clone)]
pub struct Identity {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
    /// Where to connect and which CA to trust.
    pub endpoints: Endpoints,
}

impl Identity {
    /// The identity a provisioning run left in `dir`, as a device would read it.
    pub fn from_dir(dir: &Path) -> Identity {
        let endpoints: Endpoints =
            serde_json::from_slice(&std::fs::read(dir.join("endpoints.json")).unwrap()).expect("endpoints.json");
        Identity {
            cert_pem: std::fs::read_to_string(dir.join("device.pem.crt")).unwrap(),
            key_pem: std::fs::read_to_string(dir.join("private.pem.key")).unwrap(),
            endpoints,
        }
    }

    /// rumqttc options for `client_id` over mutual TLS (ring).
    pub fn options(&self, client_id: &str) -> MqttOptions {
        let (host, port) = self.endpoints.mqtt_host_port().unwrap();
        let ca = std::fs::read(&self.endpoints.ca_file).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let chain = rustls_pemfile::certs(&mut self.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
        let key = rustls_pemfile::private_key(&mut self.key_pem.as_bytes()).unwrap().unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
        let mut opts = MqttOptions::new(client_id, host, port);
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
        opts.set_keep_alive(Duration::from_secs(30));
        opts
    }
}

/// A connected MQTT client driven by the test.
pub struct Mqtt {
    client: AsyncClient,
    events: EventLoop,
}

impl Mqtt {
    /// Connects and waits for a successful CONNACK.
    pub async fn connect(opts: MqttOptions) -> Result<Mqtt, ConnectionError> {
        let (client, mut events) = AsyncClient::new(opts, 20);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ev =
                tokio::time::timeout_at(deadline, events.poll()).await.map_err(|_| ConnectionError::NetworkTimeout)?;
            if let Event::Incoming(Incoming::ConnAck(_)) = ev? {
                return Ok(Mqtt { client, events });
            }
        }
    }

    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&Event) -> Option<T>) -> Result<T, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.events.poll()).await {
                Err(_) => return Err("timed out".into()),
                Ok(Err(e)) => return Err(format!("connection error: {e}")),
                Ok(Ok(ev)) => {
                    if let Some(t) = pick(&ev) {
                        return Ok(t);
                    }
                }
            }
        }
    }

    /// Subscribes to one filter; whether the broker granted it.
    pub async fn subscribe(&mut self, filter: &str) -> bool {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let codes = self
            .wait_for(|ev| match ev {
                Event::Incoming(Incoming::SubAck(ack)) => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await
            .expect("SUBACK");
        matches!(codes.as_slice(), [SubscribeReasonCode::Success(_)])
    }

    /// Publishes at QoS 1 and waits for the PUBACK; an error if the broker closes the connection.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<(), String> {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.into()).await.map_err(|e| e.to_string())?;
        self.wait_for(|ev| matches!(ev, Event::Incoming(Incoming::PubAck(_))).then_some(())).await
    }

    /// The next message on `topic`.
    pub async fn recv_on(&mut self, topic: &str) -> Result<Publish, String> {
        self.wait_for(|ev| match ev {
            Event::Incoming(Incoming::Publish(p)) if p.topic == topic => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Sends DISCONNECT and waits until it is written.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = self.wait_for(|ev| matches!(ev, Event::Outgoing(Outgoing::Disconnect)).then_some(())).await;
    }
}

/// An identity that may do anything, registered straight in the local cloud's registry, to
/// watch what the provisioned device publishes.
pub fn observer(cloud: &TestCloud) -> Identity {
    let registry = &cloud.cloud.registry;
    registry.create_thing("observer", None, Default::default()).unwrap();
    let (cert, keys) = registry.create_keys_and_certificate(true).unwrap();
    registry
        .create_policy(
            "observer-policy",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#,
        )
        .unwrap();
    registry.attach_policy("observer-policy", &cert.arn).unwrap();
    registry.attach_thing_principal("observer", &cert.arn).unwrap();
    Identity { cert_pem: cert.pem, key_pem: keys.private_key_pem, endpoints: cloud.cloud.endpoints.clone() }
}
