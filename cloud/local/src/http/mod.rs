//! The AWS-compatible HTTP endpoint: the IoT control plane (restJson1, as
//! `aws-sdk-iot` speaks it) and the IoT data plane (`aws-sdk-iotdataplane`) on
//! one listener. SigV4 headers are accepted without checking the signature.

use std::sync::Arc;

use crate::bus::Bus;
use crate::registry::Registry;
use crate::shadows::ShadowService;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The shadow service.
    pub shadows: ShadowService,
    /// Publishing into the broker (data-plane Publish).
    pub bus: Bus,
    /// MQTT endpoint `host:port` reported by DescribeEndpoint.
    pub mqtt_endpoint: String,
}

/// The router for every operation.
pub fn router(state: AppState) -> axum::Router {
    let _ = state;
    todo!("H4")
}
