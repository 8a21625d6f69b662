//! Helpers for the provisioning tests: the shared test cloud (`site_testkit::cloud::TestCloud`)
//! with the SDK client the library uses, and an MQTT client that authenticates with a provisioned
//! output directory. Every wait has a deadline.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use aws_credential_types::Credentials;
use cloud_api::endpoints::Endpoints;
use provision::{ClientOptions, CoreDeviceSpec};
use rumqttc::{ConnectionError, Event, Incoming, MqttOptions, Publish, QoS, SubscribeReasonCode};
pub use site_testkit::cloud::TestCloud;
use site_testkit::mqtt::Client;
use site_testkit::tls;

/// How long something that should happen promptly may take.
pub const WAIT: Duration = Duration::from_secs(5);

/// What the provisioning tests ask of the shared test cloud (`site_testkit::cloud::TestCloud`).
// Only this test crate implements it; the futures need not be `Send`-bounded.
#[allow(async_fn_in_trait)]
pub trait Provisioning {
    /// The local cloud's MQTT port.
    fn mqtt_port(&self) -> u16;
    /// The `aws-sdk-iot` client the library is given: the local cloud's endpoint and its
    /// administrator's key pair.
    async fn iot(&self) -> aws_sdk_iot::Client;
    /// A spec for `thing` into `out`, with the local cloud's CA, MQTT port and data plane.
    fn spec(&self, thing: &str, out: &Path) -> CoreDeviceSpec;
}

impl Provisioning for TestCloud {
    fn mqtt_port(&self) -> u16 {
        self.mqtt_addr().1
    }

    async fn iot(&self) -> aws_sdk_iot::Client {
        provision::iot_client(&ClientOptions {
            endpoint_url: Some(self.cloud.endpoints.http.clone()),
            region: Some("us-east-1".into()),
            credentials: Some(admin_credentials(&self.cloud.endpoints)),
        })
        .await
    }

    fn spec(&self, thing: &str, out: &Path) -> CoreDeviceSpec {
        let mut spec = CoreDeviceSpec::new(thing, out, &self.cloud.endpoints.ca_file);
        spec.mqtt_port = self.mqtt_port();
        spec.data_plane_url = Some(self.cloud.endpoints.http.clone());
        spec
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
        let tls = tls::client_config(&self.endpoints.ca_file, &self.cert_pem, &self.key_pem);
        tls::mqtt_options(&host, port, client_id, tls)
    }
}

/// A connected MQTT client driven by the test.
pub struct Mqtt(Client);

impl Mqtt {
    /// Connects and waits for a successful CONNACK.
    pub async fn connect(opts: MqttOptions) -> Result<Mqtt, ConnectionError> {
        Client::connect(opts).await.map(|(client, _)| Mqtt(client))
    }

    /// Subscribes to one filter; whether the broker granted it.
    pub async fn subscribe(&mut self, filter: &str) -> bool {
        let codes = self.0.subscribe(&[(filter, QoS::AtLeastOnce)]).await.expect("SUBACK");
        matches!(codes.as_slice(), [SubscribeReasonCode::Success(_)])
    }

    /// Publishes at QoS 1 and waits for the PUBACK; an error if the broker closes the connection.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) -> Result<(), String> {
        self.0.publish(topic, QoS::AtLeastOnce, false, payload).await
    }

    /// The next message on `topic`.
    pub async fn recv_on(&mut self, topic: &str) -> Result<Publish, String> {
        self.0
            .wait_for(WAIT, |ev| match ev {
                Event::Incoming(Incoming::Publish(p)) if p.topic == topic => Some(p.clone()),
                _ => None,
            })
            .await
    }

    /// Sends DISCONNECT and waits until it is written.
    pub async fn disconnect(self) {
        self.0.disconnect().await;
    }
}

/// An identity that may do anything, registered straight in the local cloud's registry, to
/// watch what the provisioned device publishes.
pub fn observer(cloud: &TestCloud) -> Identity {
    let observer = cloud.allow_all_device("observer");
    Identity { cert_pem: observer.cert_pem, key_pem: observer.key_pem, endpoints: cloud.endpoints().clone() }
}

/// The administrator's key pair of a local cloud (from its `endpoints.json`), as SDK credentials.
pub fn admin_credentials(endpoints: &cloud_api::endpoints::Endpoints) -> Credentials {
    provision::client::local_cloud_credentials(endpoints)
        .expect("the local cloud advertises its administrator's key pair")
}
