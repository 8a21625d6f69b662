//! The built-in ShadowManager service: local shadows kept durably under
//! `{root}/work/aws.greengrass.ShadowManager/shadows.sqlite`, served over IPC and over the
//! local pub/sub shadow topics, and synced with IoT Core ([`ShadowSync`]) when the core has a
//! cloud connection and the ShadowManager configuration (`--update-config`) names shadows.

use std::sync::Arc;

use serde_json::Map;
use tokio::task::JoinHandle;

use super::bridge::MqttBridge;
use super::error::CoreError;
use super::local_shadow::{DEFAULT_MAX_DEPTH, DEFAULT_MAX_DOCUMENT_BYTES, LocalShadows, RateLimits};
use super::options::CoreOptions;
use super::pubsub::PubSub;
use super::services::IotCoreBridge;
use super::shadow_store::SqliteShadowStore;
use super::shadow_sync::{SHADOW_MANAGER, ShadowSync, SyncConfig};
use crate::recipe::EffectiveConfiguration;

/// The running ShadowManager. Dropping it stops serving the pub/sub shadow topics and the sync.
pub struct ShadowManager {
    shadows: LocalShadows,
    requests: JoinHandle<()>,
    _sync: Option<ShadowSync>,
}

impl std::fmt::Debug for ShadowManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowManager").field("syncing", &self._sync.is_some()).finish_non_exhaustive()
    }
}

impl Drop for ShadowManager {
    fn drop(&mut self) {
        self.requests.abort();
    }
}

impl ShadowManager {
    /// Opens the local shadows of the core `options` describes, serves their pub/sub topics on
    /// `pubsub` and, with a `bridge`, starts syncing what the configuration names.
    pub async fn start(
        options: &CoreOptions,
        pubsub: &PubSub,
        bridge: Option<&Arc<MqttBridge>>,
    ) -> Result<Self, CoreError> {
        let sync_config = sync_config(options)?;
        let store_path = options.root.join("work").join(SHADOW_MANAGER).join("shadows.sqlite");
        let store = Arc::new(SqliteShadowStore::open(&store_path).map_err(CoreError::ShadowStore)?);
        let limits = cloud_api::shadow::ShadowLimits {
            max_state_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        };
        let shadows = LocalShadows::with(Some(pubsub.clone()), store.clone(), limits, RateLimits::default())
            .map_err(CoreError::ShadowStore)?;
        let requests = shadows.serve_pubsub_requests(pubsub).map_err(CoreError::ShadowStore)?;
        let sync = match bridge {
            Some(b) if !sync_config.shadows.is_empty() => {
                let bridge = b.clone() as Arc<dyn IotCoreBridge>;
                let started = ShadowSync::start(sync_config, shadows.clone(), store, bridge, b.connection()).await;
                Some(started.map_err(CoreError::ShadowStore)?)
            }
            _ => None,
        };
        Ok(Self { shadows, requests, _sync: sync })
    }

    /// The local shadows.
    pub fn shadows(&self) -> &LocalShadows {
        &self.shadows
    }

    /// Stops serving the pub/sub shadow topics.
    pub fn stop(&self) {
        self.requests.abort();
    }
}

/// The sync settings: the ShadowManager's configuration is only its `--update-config` merge
/// (it has no recipe defaults).
fn sync_config(options: &CoreOptions) -> Result<SyncConfig, CoreError> {
    let invalid = |e: String| CoreError::UpdateConfig(format!("{SHADOW_MANAGER}: {e}"));
    let configuration = match options.update_config.get(SHADOW_MANAGER) {
        Some(update) => Some(
            EffectiveConfiguration::apply(None, &Map::new(), update)
                .map_err(|e| invalid(e.to_string()))?
                .configuration
                .to_value(),
        ),
        None => None,
    };
    let config = SyncConfig::from_shadow_manager(configuration.as_ref(), &options.thing).map_err(invalid)?;
    if !config.shadows.is_empty() && options.cloud.is_none() {
        tracing::warn!("shadow sync is configured but the core has no cloud connection (--cloud)");
    }
    Ok(config)
}
