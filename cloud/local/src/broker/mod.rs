//! The MQTT 3.1.1 broker over mutual TLS, with AWS IoT Core's behaviour:
//! certificate and policy checks on every CONNECT, PUBLISH, SUBSCRIBE and
//! delivery, IoT Core's limits, QoS 0/1 only, retained messages, last will,
//! keep-alive, persistent sessions. Follows "Device communication protocols /
//! MQTT" in the AWS IoT Core Developer Guide.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bus::{BusReceiver, ServiceHandler};
use crate::registry::Registry;

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Most QoS 1 messages queued for one offline persistent session; older ones are dropped first.
    pub max_queued_per_session: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig { max_queued_per_session: 1000 }
    }
}

/// The broker.
pub struct Broker {
    _registry: Arc<Registry>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

impl Broker {
    /// A broker authorizing against `registry`, routing reserved topics to
    /// `services`, and delivering what services publish on `bus`.
    pub fn new(registry: Arc<Registry>, services: Vec<Arc<dyn ServiceHandler>>, bus: BusReceiver, config: BrokerConfig) -> Arc<Self> {
        let _ = (services, bus, config);
        Arc::new(Broker { _registry: registry })
    }

    /// Accepts TLS connections on `listener` until `shutdown` is cancelled.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Arc<rustls::ServerConfig>, shutdown: CancellationToken) {
        let _ = (listener, tls, shutdown);
        todo!("H3")
    }
}
