//! The Device Shadow service: classic and named shadows, persisted in the
//! [`Store`], served over MQTT (as a [`ServiceHandler`] for the request topics)
//! and over HTTP (the data-plane handlers call the methods directly). Every
//! accepted change is published on the response topics whichever way it came.

use bytes::Bytes;
use cloud_api::shadow::ShadowError;
use serde_json::Value;

use crate::bus::{Bus, Publisher, ServiceHandler};
use crate::store::Store;
use crate::time::SharedClock;

/// A page of named shadows (ListNamedShadowsForThing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedShadowPage {
    /// Shadow names.
    pub results: Vec<String>,
    /// Token for the next page.
    pub next_token: Option<String>,
    /// Epoch seconds.
    pub timestamp: u64,
}

/// The shadow service.
#[derive(Debug, Clone)]
pub struct ShadowService {
    _store: Store,
    _bus: Bus,
    _clock: SharedClock,
}

impl ShadowService {
    /// A service over `store` that publishes through `bus`.
    pub fn new(store: Store, bus: Bus, clock: SharedClock) -> Self {
        ShadowService { _store: store, _bus: bus, _clock: clock }
    }

    /// GetThingShadow: the full document.
    pub fn get(&self, _thing: &str, _shadow: Option<&str>) -> Result<Value, ShadowError> {
        todo!()
    }

    /// UpdateThingShadow: the accepted document; publishes accepted, delta and documents.
    pub fn update(&self, _thing: &str, _shadow: Option<&str>, _payload: &[u8]) -> Result<Value, ShadowError> {
        todo!()
    }

    /// DeleteThingShadow: the accepted body; publishes `…/delete/accepted`.
    pub fn delete(&self, _thing: &str, _shadow: Option<&str>) -> Result<Value, ShadowError> {
        todo!()
    }

    /// ListNamedShadowsForThing.
    pub fn list_named(&self, _thing: &str, _next_token: Option<&str>, _page_size: Option<usize>) -> Result<NamedShadowPage, ShadowError> {
        todo!()
    }
}

impl ServiceHandler for ShadowService {
    fn wants(&self, _topic: &str) -> bool {
        todo!()
    }

    fn handle(&self, _from: &Publisher, _topic: &str, _payload: Bytes) {
        todo!()
    }
}
