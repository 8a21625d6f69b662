//! An in-memory IoT Core bridge for tests. Compiled twice: into the library's unit tests (as
//! `core::services::fake_bridge`) and into the integration tests (`tests/support/`); each
//! parent module provides the bridge interface as `super::{BoxFuture, BridgeError,
//! IotCoreBridge}`.

use std::sync::{Arc, Mutex};

use cloud_api::ipc::model::{MqttMessage, Qos};
use tokio::sync::mpsc;

use super::{BoxFuture, BridgeError, IotCoreBridge};

/// A publish the fake bridge saw: topic, QoS, payload, retain.
pub type Published = (String, Qos, Vec<u8>, bool);
type FakeSub = (String, mpsc::Sender<MqttMessage>);

/// Records publishes, delivers injected messages to matching subscriptions.
#[derive(Default, Clone)]
pub struct FakeIotCoreBridge {
    published: Arc<Mutex<Vec<Published>>>,
    subs: Arc<Mutex<Vec<FakeSub>>>,
    notify: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for FakeIotCoreBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIotCoreBridge").finish_non_exhaustive()
    }
}

impl FakeIotCoreBridge {
    /// Everything published so far: topic, QoS, payload, retain.
    pub fn published(&self) -> Vec<Published> {
        self.published.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Delivers a message from "the cloud"; returns how many subscriptions got it.
    pub fn inject(&self, topic: &str, payload: &[u8]) -> usize {
        let subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.iter()
            .filter(|(f, _)| cloud_api::topic::matches(f, topic))
            .filter(|(_, tx)| {
                tx.try_send(MqttMessage { topic_name: topic.into(), payload: payload.into(), ..Default::default() })
                    .is_ok()
            })
            .count()
    }
    /// Waits until more than `seen` messages were published; returns the one at index `seen`.
    #[allow(dead_code, reason = "the library's unit tests use it, not every integration test binary")]
    pub async fn published_after(&self, seen: usize) -> Published {
        loop {
            let n = self.notify.notified();
            if let Some(p) = self.published.lock().unwrap_or_else(|e| e.into_inner()).get(seen) {
                return p.clone();
            }
            n.await;
        }
    }
    /// Waits until some subscription exists (so an injected message has a receiver).
    pub async fn wait_for_subscription(&self) {
        loop {
            let n = self.notify.notified();
            if !self.subs.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                return;
            }
            n.await;
        }
    }
}

impl IotCoreBridge for FakeIotCoreBridge {
    fn publish(&self, topic: &str, qos: Qos, payload: Vec<u8>, retain: bool) -> BoxFuture<'_, Result<(), BridgeError>> {
        self.published.lock().unwrap_or_else(|e| e.into_inner()).push((topic.to_owned(), qos, payload, retain));
        self.notify.notify_waiters();
        Box::pin(async { Ok(()) })
    }
    fn subscribe(&self, filter: &str, _qos: Qos) -> BoxFuture<'_, Result<mpsc::Receiver<MqttMessage>, BridgeError>> {
        let (tx, rx) = mpsc::channel(256);
        self.subs.lock().unwrap_or_else(|e| e.into_inner()).push((filter.to_owned(), tx));
        self.notify.notify_waiters();
        Box::pin(async { Ok(rx) })
    }
}
