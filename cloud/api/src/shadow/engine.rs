//! The pure shadow engine: applies requests to a stored shadow and produces
//! the exact response documents the Device Shadow service would publish.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Size and depth limits; the cloud uses [`ShadowLimits::IOT_CORE`], a local
/// ShadowManager may allow larger documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowLimits {
    /// Largest `desired` + `reported` JSON, in bytes.
    pub max_state_bytes: usize,
    /// Deepest nesting of `desired` or `reported`.
    pub max_depth: usize,
}

impl ShadowLimits {
    /// AWS IoT Core's limits.
    pub const IOT_CORE: ShadowLimits = ShadowLimits {
        max_state_bytes: crate::limits::SHADOW_MAX_STATE_BYTES,
        max_depth: crate::limits::SHADOW_MAX_DEPTH,
    };
}

/// The stored state of one shadow (what persists between requests).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowRecord {
    /// The document, or `None` when the shadow does not exist (never created, or deleted).
    pub document: Option<StoredShadow>,
    /// The version of the last accepted update; kept across a delete. 0 when never written.
    pub version: u64,
}

/// The parts of a shadow the service stores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredShadow {
    /// `state.desired`, absent when deleted or never set.
    pub desired: Option<Map<String, Value>>,
    /// `state.reported`, absent when deleted or never set.
    pub reported: Option<Map<String, Value>>,
    /// `metadata.desired`: every leaf → `{"timestamp": epoch_s}`.
    pub metadata_desired: Option<Map<String, Value>>,
    /// `metadata.reported`.
    pub metadata_reported: Option<Map<String, Value>>,
}

/// What an accepted update produces.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateResult {
    /// The record to store.
    pub record: ShadowRecord,
    /// Body of `…/update/accepted`.
    pub accepted: Value,
    /// Body of `…/update/delta`, when desired differs from reported.
    pub delta: Option<Value>,
    /// Body of `…/update/documents`.
    pub documents: Value,
}

/// A rejected request, as the service reports it on `…/rejected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ShadowError {
    /// HTTP-style status code (400, 401, 403, 404, 409, 413, 415, 429, 500).
    pub code: u16,
    /// AWS's message text.
    pub message: String,
    /// The request's `clientToken`, echoed when it could be read.
    pub client_token: Option<String>,
}

impl ShadowError {
    /// The `…/rejected` body: `{"code","message","timestamp","clientToken"?}`.
    pub fn to_json(&self, _now: u64) -> Value {
        todo!("H1")
    }
}

impl ShadowRecord {
    /// Applies an `update` request body. `now` is epoch seconds.
    pub fn update(&self, _payload: &[u8], _now: u64, _limits: ShadowLimits) -> Result<UpdateResult, ShadowError> {
        todo!("H1")
    }

    /// Answers a `get` request body (may be empty or carry a `clientToken`):
    /// the `…/get/accepted` body, or 404 when there is no shadow.
    pub fn get(&self, _payload: &[u8], _now: u64) -> Result<Value, ShadowError> {
        todo!("H1")
    }

    /// Applies a `delete` request: the new record (document gone, version kept)
    /// and the `…/delete/accepted` body, or 404 when there is no shadow.
    pub fn delete(&self, _payload: &[u8], _now: u64) -> Result<(ShadowRecord, Value), ShadowError> {
        todo!("H1")
    }
}
