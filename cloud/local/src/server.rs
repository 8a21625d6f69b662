//! The embeddable local cloud: opens the data directory, starts the broker and
//! the HTTP endpoint, and writes `endpoints.json` once both accept connections.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::registry::Registry;
use crate::shadows::ShadowService;

/// Where to listen and keep state.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (CA, database, `endpoints.json`).
    pub data_dir: PathBuf,
    /// MQTT over TLS listener; port 0 picks a free port.
    pub mqtt_addr: SocketAddr,
    /// HTTP listener; port 0 picks a free port.
    pub http_addr: SocketAddr,
    /// Region reported in ARNs and `endpoints.json`.
    pub region: String,
    /// Account id reported in ARNs and `endpoints.json`.
    pub account_id: String,
}

impl Config {
    /// Defaults: MQTT on 127.0.0.1:8883, HTTP on 127.0.0.1:4566, `us-east-1`, `000000000000`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            mqtt_addr: SocketAddr::from(([127, 0, 0, 1], 8883)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 4566)),
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }

    /// Both listeners on ephemeral loopback ports (for tests).
    pub fn ephemeral(data_dir: impl Into<PathBuf>) -> Self {
        let mut c = Config::new(data_dir);
        c.mqtt_addr.set_port(0);
        c.http_addr.set_port(0);
        c
    }
}

/// The contents of `endpoints.json`: where clients find the local cloud.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// MQTT over TLS, `host:port`.
    pub mqtt: String,
    /// HTTP base URL, `http://host:port`.
    pub http: String,
    /// Absolute path of the CA certificate PEM.
    pub ca_file: PathBuf,
    /// Region.
    pub region: String,
    /// Account id.
    pub account_id: String,
}

/// A running local cloud.
pub struct LocalCloud {
    /// Where it listens.
    pub endpoints: Endpoints,
    /// The registry, for in-process use.
    pub registry: Arc<Registry>,
    /// The shadow service, for in-process use.
    pub shadows: ShadowService,
}

impl std::fmt::Debug for LocalCloud {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCloud").field("endpoints", &self.endpoints).finish_non_exhaustive()
    }
}

impl LocalCloud {
    /// Starts everything; returns once both listeners accept connections and `endpoints.json` is written.
    pub async fn start(_config: Config) -> anyhow::Result<Self> {
        todo!()
    }

    /// Stops the listeners, drops connections, and flushes state.
    pub async fn shutdown(self) {
        todo!()
    }
}
