//! A broker under test: where it listens, which process to measure, and the
//! identities (client certificate per client id) that the scenarios use. Both
//! brokers get the same client ids, so the same client code runs against each.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;

use crate::pki::{Identity, client_config};

/// Client ids (and thing names on the local cloud) used by the scenarios.
pub mod names {
    /// The subscriber of the 1→1 and fan-in scenarios.
    pub const SUBSCRIBER: &str = "bench-sub";
    /// The device whose shadow is updated.
    pub const SHADOW_DEVICE: &str = "bench-shadow-device";
    /// The client that publishes desired state to the device's shadow.
    pub const OPERATOR: &str = "bench-operator";
    /// Prefix of the idle connections' client ids (they share one certificate).
    pub const IDLE_PREFIX: &str = "bench-idle-";

    /// The `i`th publisher.
    pub fn publisher(i: usize) -> String {
        format!("bench-pub-{i}")
    }

    /// The topic a publisher sends telemetry on (the project's `dt/pump/{thing}/telemetry` shape).
    pub fn telemetry_topic(thing: &str) -> String {
        format!("dt/bench/{thing}/telemetry")
    }

    /// The filter the subscriber uses for every publisher's telemetry.
    pub const TELEMETRY_FILTER: &str = "dt/bench/+/telemetry";
}

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Mosquitto from Debian's package.
    Mosquitto,
    /// The local cloud (`local-cloud serve`).
    LocalCloud,
}

/// A running broker and how to reach it.
#[derive(Debug)]
pub struct Target {
    /// Which broker.
    pub kind: Kind,
    /// Name in progress messages.
    pub name: String,
    /// MQTT over TLS host (always 127.0.0.1).
    pub host: String,
    /// MQTT over TLS port.
    pub port: u16,
    /// The CA clients trust.
    pub ca_pem: String,
    /// The broker's process, for RSS and CPU time.
    pub pid: u32,
    /// Client certificates by client id.
    pub identities: HashMap<String, Identity>,
    /// The one certificate every idle connection presents.
    pub idle: Identity,
}

impl Target {
    /// The certificate `client_id` connects with.
    pub fn identity(&self, client_id: &str) -> anyhow::Result<&Identity> {
        self.identities.get(client_id).with_context(|| format!("no identity provisioned for {client_id}"))
    }

    /// TLS client configuration for `client_id`.
    pub fn tls(&self, client_id: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        client_config(&self.ca_pem, self.identity(client_id)?)
    }

    /// TLS client configuration for the idle connections.
    pub fn idle_tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        client_config(&self.ca_pem, &self.idle)
    }

    /// The broker's resident memory, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        crate::machine::rss_kib(self.pid)
    }

    /// CPU time the broker has used so far, 10 ms ticks.
    pub fn cpu_ticks(&self) -> Option<u64> {
        crate::machine::cpu_ticks(self.pid)
    }
}
