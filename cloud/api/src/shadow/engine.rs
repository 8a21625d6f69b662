//! The pure shadow engine: applies requests to a stored shadow and produces
//! the exact response documents the Device Shadow service would publish.
//!
//! Follows "Device Shadow service documents", "Interacting with shadows" and
//! "Device Shadow error messages" in the AWS IoT Core Developer Guide. Where the
//! guide is silent, the engine does what AWS's own local implementation (the
//! Greengrass ShadowManager) does, and says so at the rule.
//!
//! Rules in brief:
//! - `update` merges `state.desired` / `state.reported` into the stored sections:
//!   `null` removes a field, `"desired": null` removes the section, `"state": null`
//!   removes both; arrays are values and are replaced whole. A section left empty
//!   is dropped; a shadow with neither section still exists, with `"state": {}`.
//! - Every written leaf gets `{"timestamp": now}` in `metadata`; an array gets one
//!   such entry per element (objects inside arrays get per-field entries).
//! - `version` is 1 after the first update and grows by one per accepted update;
//!   a delete keeps it, so the next update continues from it.
//! - The delta holds every desired leaf that differs from reported (path kept,
//!   arrays compared whole, numbers compared by value so `1` equals `1.0`);
//!   fields only in reported never appear; empty objects carry no leaf and never appear.

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

// AWS's message texts, from "Device Shadow error messages".
const MSG_INVALID_JSON: &str = "Invalid JSON";
const MSG_MISSING_STATE: &str = "Missing required node: state";
const MSG_STATE_NOT_OBJECT: &str = "State node must be an object";
const MSG_DESIRED_NOT_OBJECT: &str = "Desired node must be an object";
const MSG_REPORTED_NOT_OBJECT: &str = "Reported node must be an object";
const MSG_INVALID_VERSION: &str = "Invalid version";
const MSG_INVALID_CLIENT_TOKEN: &str = "Invalid clientToken";
const MSG_VERSION_CONFLICT: &str = "Version conflict";
const MSG_TOO_LARGE: &str = "The payload exceeds the maximum size allowed";
// Sic: AWS's text says "documented".
const MSG_NOT_UTF8: &str = "Unsupported documented encoding; supported encoding is UTF-8";
const MSG_INTERNAL: &str = "Internal service failure";

impl ShadowError {
    /// An error with the given code and message.
    pub fn new(code: u16, message: impl Into<String>, client_token: Option<String>) -> Self {
        ShadowError { code, message: message.into(), client_token }
    }

    /// 404 for a shadow that does not exist, with AWS's text: `No shadow exists
    /// with name: '{name}'`, where the name is the thing's for the classic shadow
    /// and the shadow's for a named one (as the Developer Guide's examples show).
    pub fn no_shadow(thing_name: &str, shadow_name: Option<&str>, client_token: Option<String>) -> Self {
        let name = shadow_name.unwrap_or(thing_name);
        ShadowError::new(404, format!("No shadow exists with name: '{name}'"), client_token)
    }

    /// 404 `Thing not found`, for a request on a thing the registry does not know.
    pub fn thing_not_found(client_token: Option<String>) -> Self {
        ShadowError::new(404, "Thing not found", client_token)
    }

    /// 401 `Unauthorized`.
    pub fn unauthorized(client_token: Option<String>) -> Self {
        ShadowError::new(401, "Unauthorized", client_token)
    }

    /// 403 `Forbidden`.
    pub fn forbidden(client_token: Option<String>) -> Self {
        ShadowError::new(403, "Forbidden", client_token)
    }

    /// 500 `Internal service failure`: retry later.
    pub fn internal(client_token: Option<String>) -> Self {
        ShadowError::new(500, MSG_INTERNAL, client_token)
    }

    /// Whether the client may retry the same request unchanged (429, 500);
    /// every other code needs a changed request or a changed shadow.
    pub fn is_retryable(&self) -> bool {
        matches!(self.code, 429 | 500)
    }

    /// The `…/rejected` body: `{"code","message","timestamp","clientToken"?}`.
    pub fn to_json(&self, now: u64) -> Value {
        let mut body = Map::new();
        body.insert("code".into(), self.code.into());
        body.insert("message".into(), self.message.clone().into());
        body.insert("timestamp".into(), now.into());
        if let Some(token) = &self.client_token {
            body.insert("clientToken".into(), token.clone().into());
        }
        Value::Object(body)
    }

    fn bad_request(message: impl Into<String>, client_token: &Option<String>) -> Self {
        ShadowError::new(400, message, client_token.clone())
    }
}

impl StoredShadow {
    /// The `state` object: `desired` and `reported` when present.
    pub fn state_json(&self) -> Value {
        sections_json(&self.desired, &self.reported)
    }

    /// The `metadata` object: `desired` and `reported` when present.
    pub fn metadata_json(&self) -> Value {
        sections_json(&self.metadata_desired, &self.metadata_reported)
    }

    /// The `delta` state: every desired leaf that differs from reported. Empty
    /// when desired and reported agree or desired is absent.
    pub fn delta(&self) -> Map<String, Value> {
        match &self.desired {
            Some(desired) => delta_of(desired, self.reported.as_ref()),
            None => Map::new(),
        }
    }

    /// The metadata of [`StoredShadow::delta`]: the desired timestamps of its leaves.
    pub fn delta_metadata(&self, delta: &Map<String, Value>, now: u64) -> Map<String, Value> {
        delta_metadata_of(delta, self.metadata_desired.as_ref(), now)
    }

    /// Bytes that count against [`ShadowLimits::max_state_bytes`]: the compact
    /// JSON of `desired` plus that of `reported` (metadata is not counted).
    pub fn state_bytes(&self) -> usize {
        [&self.desired, &self.reported]
            .into_iter()
            .flatten()
            .map(|section| serde_json::to_vec(section).map_or(usize::MAX, |bytes| bytes.len()))
            .fold(0, usize::saturating_add)
    }

    /// `{"state","metadata","version"}`, as in the `previous`/`current` parts of
    /// `…/update/documents`.
    fn snapshot(&self, version: u64) -> Value {
        let mut doc = Map::new();
        doc.insert("state".into(), self.state_json());
        doc.insert("metadata".into(), self.metadata_json());
        doc.insert("version".into(), version.into());
        Value::Object(doc)
    }
}

impl ShadowRecord {
    /// Whether the shadow exists (created and not deleted since).
    pub fn exists(&self) -> bool {
        self.document.is_some()
    }

    /// Applies an `update` request body. `now` is epoch seconds.
    pub fn update(&self, payload: &[u8], now: u64, limits: ShadowLimits) -> Result<UpdateResult, ShadowError> {
        let request = UpdateRequest::parse(payload, limits)?;
        let token = &request.client_token;
        if let Some(expected) = request.version
            && expected != self.version
        {
            return Err(ShadowError::new(409, MSG_VERSION_CONFLICT, token.clone()));
        }
        let version = self.version.checked_add(1).ok_or_else(|| ShadowError::internal(token.clone()))?;

        let old = self.document.clone().unwrap_or_default();
        let (desired, metadata_desired) =
            apply_section(old.desired.as_ref(), old.metadata_desired.as_ref(), &request.desired, now);
        let (reported, metadata_reported) =
            apply_section(old.reported.as_ref(), old.metadata_reported.as_ref(), &request.reported, now);
        let current = StoredShadow { desired, reported, metadata_desired, metadata_reported };
        if current.state_bytes() > limits.max_state_bytes {
            return Err(ShadowError::new(413, MSG_TOO_LARGE, token.clone()));
        }

        // update/accepted echoes the request's state as sent (nulls included),
        // with a fresh timestamp for every leaf it names.
        let accepted_metadata = metadata_of(&request.state, now);
        let mut accepted = Map::new();
        accepted.insert("state".into(), request.state);
        accepted.insert("metadata".into(), accepted_metadata);
        let accepted = finish(accepted, Some(version), now, token);

        let delta_state = current.delta();
        let delta = (!delta_state.is_empty()).then(|| {
            let delta_metadata = current.delta_metadata(&delta_state, now);
            let mut body = Map::new();
            body.insert("state".into(), Value::Object(delta_state));
            body.insert("metadata".into(), Value::Object(delta_metadata));
            finish(body, Some(version), now, token)
        });

        // A shadow that did not exist has no previous document: AWS sends null.
        let mut documents = Map::new();
        documents.insert("previous".into(), self.document.as_ref().map_or(Value::Null, |d| d.snapshot(self.version)));
        documents.insert("current".into(), current.snapshot(version));
        let documents = finish(documents, None, now, token);

        Ok(UpdateResult { record: ShadowRecord { document: Some(current), version }, accepted, delta, documents })
    }

    /// Answers a `get` request body (may be empty or carry a `clientToken`):
    /// the `…/get/accepted` body, or 404 when there is no shadow. This method
    /// does not know the shadow's name, so its 404 message leaves the name
    /// empty; [`ShadowRecord::get_named`] gives AWS's full text.
    pub fn get(&self, payload: &[u8], now: u64) -> Result<Value, ShadowError> {
        self.get_named("", None, payload, now)
    }

    /// [`ShadowRecord::get`] for a known shadow, so a 404 names it as AWS does.
    pub fn get_named(
        &self,
        thing_name: &str,
        shadow_name: Option<&str>,
        payload: &[u8],
        now: u64,
    ) -> Result<Value, ShadowError> {
        let token = lenient_client_token(payload);
        let Some(doc) = &self.document else {
            return Err(ShadowError::no_shadow(thing_name, shadow_name, token));
        };
        let mut state = as_map(doc.state_json());
        let mut metadata = as_map(doc.metadata_json());
        let delta = doc.delta();
        if !delta.is_empty() {
            metadata.insert("delta".into(), Value::Object(doc.delta_metadata(&delta, now)));
            state.insert("delta".into(), Value::Object(delta));
        }
        let mut body = Map::new();
        body.insert("state".into(), Value::Object(state));
        body.insert("metadata".into(), Value::Object(metadata));
        Ok(finish(body, Some(self.version), now, &token))
    }

    /// Applies a `delete` request: the new record (document gone, version kept)
    /// and the `…/delete/accepted` body, or 404 when there is no shadow. This
    /// method does not know the shadow's name, so its 404 message leaves the name
    /// empty; [`ShadowRecord::delete_named`] gives AWS's full text.
    pub fn delete(&self, payload: &[u8], now: u64) -> Result<(ShadowRecord, Value), ShadowError> {
        self.delete_named("", None, payload, now)
    }

    /// [`ShadowRecord::delete`] for a known shadow, so a 404 names it as AWS does.
    /// The body is ignored except for a `clientToken`, which is echoed.
    pub fn delete_named(
        &self,
        thing_name: &str,
        shadow_name: Option<&str>,
        payload: &[u8],
        now: u64,
    ) -> Result<(ShadowRecord, Value), ShadowError> {
        let token = lenient_client_token(payload);
        if self.document.is_none() {
            return Err(ShadowError::no_shadow(thing_name, shadow_name, token));
        }
        let record = ShadowRecord { document: None, version: self.version };
        Ok((record, finish(Map::new(), Some(self.version), now, &token)))
    }
}

/// A JSON object's fields (a section, or its metadata).
type Fields = Map<String, Value>;

/// What an update does to one section (`desired` or `reported`).
#[derive(Debug, Clone, PartialEq)]
enum SectionUpdate {
    /// Not in the request: unchanged.
    Keep,
    /// `null` (or `"state": null`): removed.
    Remove,
    /// An object: merged in.
    Merge(Map<String, Value>),
}

/// A validated `update` request body.
#[derive(Debug)]
struct UpdateRequest {
    /// `state` as sent, echoed in `…/update/accepted`.
    state: Value,
    desired: SectionUpdate,
    reported: SectionUpdate,
    version: Option<u64>,
    client_token: Option<String>,
}

impl UpdateRequest {
    fn parse(payload: &[u8], limits: ShadowLimits) -> Result<Self, ShadowError> {
        let text = std::str::from_utf8(payload).map_err(|_| ShadowError::new(415, MSG_NOT_UTF8, None))?;
        let body: Value = serde_json::from_str(text).map_err(|_| ShadowError::bad_request(MSG_INVALID_JSON, &None))?;
        let Value::Object(mut body) = body else {
            return Err(ShadowError::bad_request(MSG_INVALID_JSON, &None));
        };
        let client_token = match body.get("clientToken") {
            None | Some(Value::Null) => None,
            Some(Value::String(token)) if token.len() <= crate::limits::SHADOW_MAX_CLIENT_TOKEN_BYTES => {
                Some(token.clone())
            }
            Some(_) => return Err(ShadowError::bad_request(MSG_INVALID_CLIENT_TOKEN, &None)),
        };
        let token = &client_token;
        // Other top-level keys (metadata, timestamp, …) are ignored, as AWS does.
        let state = body.remove("state").ok_or_else(|| ShadowError::bad_request(MSG_MISSING_STATE, token))?;
        let (desired, reported) = match &state {
            Value::Null => (SectionUpdate::Remove, SectionUpdate::Remove),
            Value::Object(sections) => {
                if let Some(key) = sections.keys().find(|k| *k != "desired" && *k != "reported") {
                    return Err(ShadowError::bad_request(format!("State contains an invalid node: '{key}'"), token));
                }
                (
                    section_update(sections.get("desired"), MSG_DESIRED_NOT_OBJECT, token)?,
                    section_update(sections.get("reported"), MSG_REPORTED_NOT_OBJECT, token)?,
                )
            }
            _ => return Err(ShadowError::bad_request(MSG_STATE_NOT_OBJECT, token)),
        };
        let version = match body.get("version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| ShadowError::bad_request(MSG_INVALID_VERSION, token))?),
        };
        for section in [&desired, &reported] {
            let SectionUpdate::Merge(fields) = section else { continue };
            if exceeds_depth(fields, 1, limits.max_depth) {
                let message = format!("JSON contains too many levels of nesting; maximum is {}", limits.max_depth);
                return Err(ShadowError::bad_request(message, token));
            }
            if fields.values().any(array_holds_null) {
                // The guide says such arrays are rejected but gives no text; this
                // is a malformed document, so it gets the generic text.
                return Err(ShadowError::bad_request(MSG_INVALID_JSON, token));
            }
        }
        Ok(UpdateRequest { state, desired, reported, version, client_token })
    }
}

fn section_update(
    value: Option<&Value>,
    not_object: &str,
    token: &Option<String>,
) -> Result<SectionUpdate, ShadowError> {
    match value {
        None => Ok(SectionUpdate::Keep),
        Some(Value::Null) => Ok(SectionUpdate::Remove),
        Some(Value::Object(fields)) => Ok(SectionUpdate::Merge(fields.clone())),
        Some(_) => Err(ShadowError::bad_request(not_object, token)),
    }
}

/// Whether a section nests deeper than `max` levels. The section object is
/// level 1 and every non-empty object or array inside adds one; scalar leaves
/// add none (as the ShadowManager counts).
fn exceeds_depth(fields: &Map<String, Value>, level: usize, max: usize) -> bool {
    if fields.is_empty() {
        return false;
    }
    level > max || fields.values().any(|v| value_exceeds_depth(v, level + 1, max))
}

fn value_exceeds_depth(value: &Value, level: usize, max: usize) -> bool {
    match value {
        Value::Object(fields) => exceeds_depth(fields, level, max),
        Value::Array(items) if !items.is_empty() => {
            level > max || items.iter().any(|v| value_exceeds_depth(v, level + 1, max))
        }
        _ => false,
    }
}

/// Whether any array in `value` (at any depth) has a `null` element.
fn array_holds_null(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|v| v.is_null() || array_holds_null(v)),
        Value::Object(fields) => fields.values().any(array_holds_null),
        _ => false,
    }
}

/// Applies one section's update; returns the new section and its metadata,
/// both `None` when the section ends up empty.
fn apply_section(
    old: Option<&Map<String, Value>>,
    old_metadata: Option<&Map<String, Value>>,
    update: &SectionUpdate,
    now: u64,
) -> (Option<Fields>, Option<Fields>) {
    match update {
        SectionUpdate::Keep => (old.cloned(), old_metadata.cloned()),
        SectionUpdate::Remove => (None, None),
        SectionUpdate::Merge(patch) => {
            let mut section = old.cloned().unwrap_or_default();
            merge(&mut section, patch);
            if section.is_empty() {
                return (None, None);
            }
            let metadata = rebuild_metadata(&section, old_metadata, Some(patch), now);
            (Some(section), Some(metadata))
        }
    }
}

/// Merges `patch` into `target`: `null` removes a field, objects merge field
/// by field, anything else (arrays included) replaces the old value.
fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.shift_remove(key);
            }
            Value::Object(fields) => match target.get_mut(key) {
                Some(Value::Object(existing)) => merge(existing, fields),
                _ => match without_nulls(fields) {
                    Some(fields) => {
                        target.insert(key.clone(), Value::Object(fields));
                    }
                    None => {
                        target.shift_remove(key);
                    }
                },
            },
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// A new object as it is stored: `null` fields dropped, and `None` when only
/// nulls were there (an object written as `{}` is kept, as ShadowManager does).
fn without_nulls(fields: &Map<String, Value>) -> Option<Map<String, Value>> {
    let mut kept = Map::new();
    let mut dropped = false;
    for (key, value) in fields {
        match value {
            Value::Null => dropped = true,
            Value::Object(inner) => match without_nulls(inner) {
                Some(inner) => {
                    kept.insert(key.clone(), Value::Object(inner));
                }
                None => dropped = true,
            },
            other => {
                kept.insert(key.clone(), other.clone());
            }
        }
    }
    (!(dropped && kept.is_empty())).then_some(kept)
}

/// The metadata of a section after an update: it mirrors the section exactly,
/// with `now` for what the patch wrote and the old timestamps for the rest.
fn rebuild_metadata(
    section: &Map<String, Value>,
    old: Option<&Map<String, Value>>,
    patch: Option<&Map<String, Value>>,
    now: u64,
) -> Map<String, Value> {
    let mut metadata = Map::new();
    for (key, value) in section {
        let old_entry = old.and_then(|m| m.get(key));
        let entry = match (patch.and_then(|p| p.get(key)), value) {
            (Some(Value::Object(patch_fields)), Value::Object(fields)) => {
                Value::Object(rebuild_metadata(fields, old_entry.and_then(Value::as_object), Some(patch_fields), now))
            }
            (Some(_), _) => metadata_of(value, now),
            // Untouched; a missing entry would be a corrupt record, so re-stamp it.
            (None, _) => old_entry.cloned().unwrap_or_else(|| metadata_of(value, now)),
        };
        metadata.insert(key.clone(), entry);
    }
    metadata
}

/// Fresh metadata for a value: `{"timestamp": now}` per leaf (a `null` counts
/// as a leaf, as in `…/update/accepted`), objects field by field, arrays
/// element by element.
fn metadata_of(value: &Value, now: u64) -> Value {
    match value {
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), metadata_of(v, now))).collect()),
        Value::Array(items) => Value::Array(items.iter().map(|v| metadata_of(v, now)).collect()),
        _ => timestamp(now),
    }
}

fn timestamp(now: u64) -> Value {
    let mut leaf = Map::new();
    leaf.insert("timestamp".into(), now.into());
    Value::Object(leaf)
}

/// Every desired leaf that differs from `reported`, with its path.
fn delta_of(desired: &Map<String, Value>, reported: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut delta = Map::new();
    for (key, want) in desired {
        let have = reported.and_then(|r| r.get(key));
        match (want, have) {
            (Value::Object(want_fields), _) => {
                let inner = delta_of(want_fields, have.and_then(Value::as_object));
                if !inner.is_empty() {
                    delta.insert(key.clone(), Value::Object(inner));
                }
            }
            (_, Some(have)) if json_eq(want, have) => {}
            _ => {
                delta.insert(key.clone(), want.clone());
            }
        }
    }
    delta
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(x), Some(y), _, _) => x == y,
            (_, _, Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The desired metadata of each delta entry, following the delta's shape.
fn delta_metadata_of(delta: &Map<String, Value>, desired: Option<&Map<String, Value>>, now: u64) -> Map<String, Value> {
    let mut metadata = Map::new();
    for (key, value) in delta {
        let entry = desired.and_then(|m| m.get(key));
        let meta = match value {
            Value::Object(fields) => Value::Object(delta_metadata_of(fields, entry.and_then(Value::as_object), now)),
            _ => entry.cloned().unwrap_or_else(|| metadata_of(value, now)),
        };
        metadata.insert(key.clone(), meta);
    }
    metadata
}

fn sections_json(desired: &Option<Map<String, Value>>, reported: &Option<Map<String, Value>>) -> Value {
    let mut sections = Map::new();
    if let Some(desired) = desired {
        sections.insert("desired".into(), Value::Object(desired.clone()));
    }
    if let Some(reported) = reported {
        sections.insert("reported".into(), Value::Object(reported.clone()));
    }
    Value::Object(sections)
}

fn as_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}

/// Appends `version` (when given), `timestamp` and `clientToken` (when given).
fn finish(mut body: Map<String, Value>, version: Option<u64>, now: u64, token: &Option<String>) -> Value {
    if let Some(version) = version {
        body.insert("version".into(), version.into());
    }
    body.insert("timestamp".into(), now.into());
    if let Some(token) = token {
        body.insert("clientToken".into(), token.clone().into());
    }
    Value::Object(body)
}

/// The `clientToken` of a get or delete body, which AWS otherwise ignores: a
/// body that is not a JSON object, or a token that is not a string within the
/// length limit, is treated as no token.
fn lenient_client_token(payload: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(payload).ok()?;
    match body.get("clientToken")? {
        Value::String(token) if token.len() <= crate::limits::SHADOW_MAX_CLIENT_TOKEN_BYTES => Some(token.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: u64 = 1_000;
    const T1: u64 = 2_000;
    const T2: u64 = 3_000;
    const LIMITS: ShadowLimits = ShadowLimits::IOT_CORE;

    fn update(record: &ShadowRecord, body: Value, now: u64) -> UpdateResult {
        record.update(body.to_string().as_bytes(), now, LIMITS).expect("update accepted")
    }

    fn reject(record: &ShadowRecord, payload: &[u8]) -> ShadowError {
        record.update(payload, T1, LIMITS).expect_err("update rejected")
    }

    /// A record after applying each body in turn, at T0, T1, T2, …
    fn record_after(bodies: &[Value]) -> ShadowRecord {
        bodies.iter().enumerate().fold(ShadowRecord::default(), |record, (i, body)| {
            update(&record, body.clone(), T0 + 1000 * i as u64).record
        })
    }

    fn doc(record: &ShadowRecord) -> &StoredShadow {
        record.document.as_ref().expect("shadow exists")
    }

    #[test]
    fn update_merges_fields_into_desired_and_reported() {
        let record = record_after(&[
            json!({"state": {"desired": {"a": 1, "obj": {"x": 1, "y": 2}}, "reported": {"r": true}}}),
            json!({"state": {"desired": {"b": "two", "obj": {"y": 3, "z": 4}}}}),
        ]);
        let d = doc(&record);
        assert_eq!(
            Value::Object(d.desired.clone().unwrap()),
            json!({"a": 1, "obj": {"x": 1, "y": 3, "z": 4}, "b": "two"})
        );
        assert_eq!(Value::Object(d.reported.clone().unwrap()), json!({"r": true}));
    }

    #[test]
    fn null_deletes_a_field_and_section_null_deletes_the_section() {
        let base = [json!({"state": {"desired": {"a": 1, "b": 2, "o": {"x": 1, "y": 2}}, "reported": {"a": 1}}})];
        let cases: [(Value, Value); 5] = [
            (
                json!({"state": {"desired": {"a": null}}}),
                json!({"desired": {"b": 2, "o": {"x": 1, "y": 2}}, "reported": {"a": 1}}),
            ),
            (
                json!({"state": {"desired": {"o": {"x": null}}}}),
                json!({"desired": {"a": 1, "b": 2, "o": {"y": 2}}, "reported": {"a": 1}}),
            ),
            (json!({"state": {"desired": null}}), json!({"reported": {"a": 1}})),
            (json!({"state": {"desired": null, "reported": null}}), json!({})),
            (json!({"state": null}), json!({})),
        ];
        for (body, expected) in cases {
            let mut bodies = base.to_vec();
            bodies.push(body.clone());
            let record = record_after(&bodies);
            assert_eq!(doc(&record).state_json(), expected, "{body}");
        }
    }

    #[test]
    fn removing_every_field_drops_the_section_and_leaves_an_empty_existing_shadow() {
        let record = record_after(&[
            json!({"state": {"desired": {"a": 1}, "reported": {"b": 2}}}),
            json!({"state": {"desired": {"a": null}, "reported": {"b": null}}}),
        ]);
        let d = doc(&record);
        assert_eq!((d.desired.as_ref(), d.reported.as_ref()), (None, None));
        assert_eq!((d.metadata_desired.as_ref(), d.metadata_reported.as_ref()), (None, None));
        assert_eq!(record.version, 2);
        let got = record.get(b"", T2).unwrap();
        assert_eq!(got, json!({"state": {}, "metadata": {}, "version": 2, "timestamp": T2}));
    }

    #[test]
    fn a_new_object_of_only_nulls_is_not_stored_but_an_empty_object_is() {
        let record = record_after(&[json!({"state": {"desired": {"gone": {"x": null}, "empty": {}, "a": 1}}})]);
        assert_eq!(doc(&record).state_json(), json!({"desired": {"empty": {}, "a": 1}}));
        assert_eq!(doc(&record).metadata_json(), json!({"desired": {"empty": {}, "a": {"timestamp": T0}}}));
    }

    #[test]
    fn arrays_are_replaced_whole() {
        let record = record_after(&[
            json!({"state": {"desired": {"colors": ["RED", "GREEN", "BLUE"]}}}),
            json!({"state": {"desired": {"colors": ["RED"]}}}),
        ]);
        assert_eq!(doc(&record).state_json(), json!({"desired": {"colors": ["RED"]}}));
        assert_eq!(doc(&record).metadata_json(), json!({"desired": {"colors": [{"timestamp": T1}]}}));
    }

    #[test]
    fn arrays_holding_null_are_rejected() {
        for body in [
            json!({"state": {"desired": {"colors": [null, "RED"]}}}),
            json!({"state": {"reported": {"o": {"list": [1, [2, null]]}}}}),
            json!({"state": {"reported": {"list": [{"inner": [null]}]}}}),
        ] {
            let err = reject(&ShadowRecord::default(), body.to_string().as_bytes());
            assert_eq!(err.code, 400, "{body}");
        }
        // A null inside an object inside an array is a value, not an array element.
        assert!(
            ShadowRecord::default()
                .update(json!({"state": {"desired": {"list": [{"a": 1}]}}}).to_string().as_bytes(), T0, LIMITS)
                .is_ok()
        );
    }

    #[test]
    fn metadata_stamps_every_updated_leaf_and_keeps_older_stamps() {
        let record = record_after(&[
            json!({"state": {"reported": {"a": 1, "o": {"x": 1, "y": 2}}}}),
            json!({"state": {"reported": {"o": {"y": 5}, "b": "new"}}}),
        ]);
        assert_eq!(
            doc(&record).metadata_json(),
            json!({"reported": {
                "a": {"timestamp": T0},
                "o": {"x": {"timestamp": T0}, "y": {"timestamp": T1}},
                "b": {"timestamp": T1},
            }})
        );
    }

    #[test]
    fn array_metadata_has_one_stamp_per_element() {
        let result = update(
            &ShadowRecord::default(),
            json!({"state": {"reported": {"ColorRGB": [128, 128, 128], "pts": [{"x": 1}, [2]]}}}),
            T0,
        );
        let stamp = json!({"timestamp": T0});
        let expected = json!({"ColorRGB": [stamp, stamp, stamp], "pts": [{"x": stamp}, [stamp]]});
        assert_eq!(result.accepted["metadata"]["reported"], expected);
        assert_eq!(Value::Object(doc(&result.record).metadata_reported.clone().unwrap()), expected);
    }

    #[test]
    fn metadata_follows_a_value_that_changes_type() {
        let record = record_after(&[
            json!({"state": {"desired": {"v": 1, "w": {"x": 1}}}}),
            json!({"state": {"desired": {"v": {"inner": 2}, "w": [1, 2]}}}),
        ]);
        assert_eq!(
            doc(&record).metadata_json(),
            json!({"desired": {"v": {"inner": {"timestamp": T1}}, "w": [{"timestamp": T1}, {"timestamp": T1}]}})
        );
    }

    #[test]
    fn version_starts_at_one_and_grows_by_one_per_accepted_update() {
        let mut record = ShadowRecord::default();
        assert_eq!(record.version, 0);
        for expected in 1..=3 {
            let result = update(&record, json!({"state": {"reported": {"n": expected}}}), T0);
            assert_eq!(result.record.version, expected);
            assert_eq!(result.accepted["version"], json!(expected));
            record = result.record;
        }
        // A rejected update leaves nothing to store, so the version cannot move.
        assert!(record.update(b"{}", T1, LIMITS).is_err());
    }

    #[test]
    fn delete_keeps_the_version_and_a_new_document_continues_from_it() {
        let record =
            record_after(&[json!({"state": {"reported": {"a": 1}}}), json!({"state": {"reported": {"a": 2}}})]);
        let (deleted, body) = record.delete(b"", T2).unwrap();
        assert_eq!(body, json!({"version": 2, "timestamp": T2}));
        assert_eq!(deleted, ShadowRecord { document: None, version: 2 });
        assert!(!deleted.exists());
        let recreated = update(&deleted, json!({"state": {"reported": {"b": 1}}}), T2);
        assert_eq!(recreated.record.version, 3);
        assert_eq!(doc(&recreated.record).state_json(), json!({"reported": {"b": 1}}), "old fields are gone");
        assert_eq!(recreated.documents["previous"], Value::Null);
    }

    #[test]
    fn a_version_that_differs_from_the_stored_one_is_a_conflict() {
        let record = record_after(&[json!({"state": {"reported": {"a": 1}}})]);
        for version in [0, 2, 7] {
            let body = json!({"state": {"reported": {"a": 2}}, "version": version, "clientToken": "c1"});
            let err = reject(&record, body.to_string().as_bytes());
            assert_eq!(err, ShadowError::new(409, "Version conflict", Some("c1".into())), "version {version}");
        }
        let ok = update(&record, json!({"state": {"reported": {"a": 2}}, "version": 1}), T1);
        assert_eq!(ok.record.version, 2);
        let fresh = update(&ShadowRecord::default(), json!({"state": {"reported": {"a": 2}}, "version": 0}), T1);
        assert_eq!(fresh.record.version, 1, "a never-written shadow is at version 0");
    }

    #[test]
    fn delta_lists_every_differing_desired_field() {
        let record = record_after(&[
            json!({"state": {"reported": {"color": "GREEN", "engine": "ON", "same": 1}}}),
            json!({"state": {"desired": {"color": "RED", "state": "STOP", "same": 1}}}),
            // This update touches neither differing field, yet the delta lists both.
            json!({"state": {"desired": {"same": 1.0}}}),
        ]);
        assert_eq!(Value::Object(doc(&record).delta()), json!({"color": "RED", "state": "STOP"}));
    }

    #[test]
    fn delta_keeps_the_path_to_each_differing_nested_leaf() {
        let record = record_after(&[
            json!({"state": {"reported": {"lights": {"color": {"r": 255, "g": 0, "b": 255}}}}}),
            json!({"state": {"desired": {"lights": {"color": {"r": 255, "g": 255, "b": 255}}}}}),
        ]);
        assert_eq!(Value::Object(doc(&record).delta()), json!({"lights": {"color": {"g": 255}}}));
    }

    #[test]
    fn delta_compares_arrays_whole() {
        let record = record_after(&[
            json!({"state": {"reported": {"a": [1, 2, 3], "b": [1, 2]}}}),
            json!({"state": {"desired": {"a": [1, 2, 4], "b": [1, 2.0]}}}),
        ]);
        assert_eq!(Value::Object(doc(&record).delta()), json!({"a": [1, 2, 4]}));
    }

    #[test]
    fn delta_never_lists_fields_only_in_reported() {
        let record = record_after(&[json!({"state": {"reported": {"temp": 55, "o": {"x": 1}}, "desired": {"o": {}}}})]);
        assert_eq!(doc(&record).delta(), Map::new());
        let update_result = update(&record, json!({"state": {"reported": {"temp": 56}}}), T1);
        assert_eq!(update_result.delta, None);
    }

    #[test]
    fn delta_lists_desired_fields_missing_from_reported() {
        let record = record_after(&[
            json!({"state": {"desired": {"a": 1, "o": {"x": 1}}, "reported": {"a": 1, "o": {"x": 1}}}}),
            json!({"state": {"reported": {"a": null, "o": 5}}}),
        ]);
        assert_eq!(Value::Object(doc(&record).delta()), json!({"a": 1, "o": {"x": 1}}));
    }

    #[test]
    fn delta_message_carries_desired_metadata_version_and_client_token() {
        let record = record_after(&[json!({"state": {"desired": {"a": 1, "list": [1, 2]}}})]);
        let result = update(&record, json!({"state": {"desired": {"b": {"c": true}}}, "clientToken": "tok"}), T1);
        assert_eq!(
            result.delta,
            Some(json!({
                "state": {"a": 1, "list": [1, 2], "b": {"c": true}},
                "metadata": {
                    "a": {"timestamp": T0},
                    "list": [{"timestamp": T0}, {"timestamp": T0}],
                    "b": {"c": {"timestamp": T1}},
                },
                "version": 2,
                "timestamp": T1,
                "clientToken": "tok",
            }))
        );
    }

    #[test]
    fn no_delta_message_when_desired_matches_reported() {
        let record = record_after(&[json!({"state": {"desired": {"a": 1}}})]);
        let result = update(&record, json!({"state": {"reported": {"a": 1}}}), T1);
        assert_eq!(result.delta, None);
        assert!(update(&record, json!({"state": {"reported": {"a": 2}}}), T1).delta.is_some());
    }

    #[test]
    fn accepted_echoes_only_the_fields_sent_with_metadata_version_timestamp_and_token() {
        let record = record_after(&[json!({"state": {"desired": {"old": 1}, "reported": {"keep": 1}}})]);
        let body = json!({
            "state": {"desired": {"color": "red", "old": null}},
            "clientToken": "abc",
            "ignored": {"x": 1},
            "metadata": {"forged": true},
        });
        let result = update(&record, body, T1);
        assert_eq!(
            result.accepted,
            json!({
                "state": {"desired": {"color": "red", "old": null}},
                "metadata": {"desired": {"color": {"timestamp": T1}, "old": {"timestamp": T1}}},
                "version": 2,
                "timestamp": T1,
                "clientToken": "abc",
            })
        );
        let keys: Vec<&String> = result.accepted.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["state", "metadata", "version", "timestamp", "clientToken"]);
        let without_token = update(&record, json!({"state": {"reported": {"x": 1}}}), T1);
        assert!(without_token.accepted.get("clientToken").is_none());
    }

    #[test]
    fn documents_message_holds_previous_and_current() {
        let record = record_after(&[json!({"state": {"desired": {"a": 1}}})]);
        let result = update(&record, json!({"state": {"reported": {"a": 1}}, "clientToken": "t"}), T1);
        assert_eq!(
            result.documents,
            json!({
                "previous": {
                    "state": {"desired": {"a": 1}},
                    "metadata": {"desired": {"a": {"timestamp": T0}}},
                    "version": 1,
                },
                "current": {
                    "state": {"desired": {"a": 1}, "reported": {"a": 1}},
                    "metadata": {"desired": {"a": {"timestamp": T0}}, "reported": {"a": {"timestamp": T1}}},
                    "version": 2,
                },
                "timestamp": T1,
                "clientToken": "t",
            })
        );
    }

    #[test]
    fn documents_previous_is_null_for_a_brand_new_shadow() {
        let result = update(&ShadowRecord::default(), json!({"state": {"reported": {"Color": "green"}}}), T0);
        assert_eq!(
            result.documents,
            json!({
                "previous": null,
                "current": {
                    "state": {"reported": {"Color": "green"}},
                    "metadata": {"reported": {"Color": {"timestamp": T0}}},
                    "version": 1,
                },
                "timestamp": T0,
            })
        );
    }

    #[test]
    fn state_accepts_only_desired_and_reported() {
        for key in ["delta", "metadata", "Desired", "foo"] {
            let body = json!({"state": {"desired": {"a": 1}, key: {}}, "clientToken": "t"});
            let err = reject(&ShadowRecord::default(), body.to_string().as_bytes());
            let expected = ShadowError::new(400, format!("State contains an invalid node: '{key}'"), Some("t".into()));
            assert_eq!(err, expected);
        }
    }

    #[test]
    fn malformed_requests_get_aws_codes_and_messages() {
        let long_token = "x".repeat(65);
        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (b"".to_vec(), 400, "Invalid JSON"),
            (b"{\"state\":".to_vec(), 400, "Invalid JSON"),
            (b"[1]".to_vec(), 400, "Invalid JSON"),
            (b"{}".to_vec(), 400, "Missing required node: state"),
            (b"{\"state\": 5}".to_vec(), 400, "State node must be an object"),
            (b"{\"state\": [{}]}".to_vec(), 400, "State node must be an object"),
            (b"{\"state\": {\"desired\": 1}}".to_vec(), 400, "Desired node must be an object"),
            (b"{\"state\": {\"reported\": [1]}}".to_vec(), 400, "Reported node must be an object"),
            (b"{\"state\": {}, \"version\": \"1\"}".to_vec(), 400, "Invalid version"),
            (b"{\"state\": {}, \"version\": -1}".to_vec(), 400, "Invalid version"),
            (b"{\"state\": {}, \"version\": 1.5}".to_vec(), 400, "Invalid version"),
            (json!({"state": {}, "clientToken": long_token}).to_string().into_bytes(), 400, "Invalid clientToken"),
            (b"{\"state\": {}, \"clientToken\": 7}".to_vec(), 400, "Invalid clientToken"),
            (
                b"{\"state\": {\"desired\": {\"a\": \"\xff\"}}}".to_vec(),
                415,
                "Unsupported documented encoding; supported encoding is UTF-8",
            ),
        ];
        for (payload, code, message) in cases {
            let err = reject(&ShadowRecord::default(), &payload);
            assert_eq!((err.code, err.message.as_str()), (code, message), "{}", String::from_utf8_lossy(&payload));
        }
    }

    #[test]
    fn client_token_of_64_bytes_is_accepted_and_echoed_in_rejections() {
        let token = "t".repeat(64);
        let ok = update(&ShadowRecord::default(), json!({"state": {}, "clientToken": token}), T0);
        assert_eq!(ok.accepted["clientToken"], json!(token));
        let err = reject(&ShadowRecord::default(), json!({"state": 1, "clientToken": "mine"}).to_string().as_bytes());
        assert_eq!(err.client_token.as_deref(), Some("mine"));
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_rejected() {
        // The section object is level 1; six levels are allowed, seven are not.
        let six = json!({"state": {"desired": {"l2": {"l3": {"l4": {"l5": {"l6": {"leaf": 1}}}}}}}});
        assert!(ShadowRecord::default().update(six.to_string().as_bytes(), T0, LIMITS).is_ok());
        let seven = json!({"state": {"reported": {"l2": {"l3": {"l4": {"l5": {"l6": {"l7": {"leaf": 1}}}}}}}}});
        let err = reject(&ShadowRecord::default(), seven.to_string().as_bytes());
        assert_eq!(err, ShadowError::new(400, "JSON contains too many levels of nesting; maximum is 6", None));
        let arrays = json!({"state": {"desired": {"a": [[[[[[1]]]]]]}}});
        assert_eq!(reject(&ShadowRecord::default(), arrays.to_string().as_bytes()).code, 400);
        let tight = ShadowLimits { max_depth: 2, ..LIMITS };
        let three = json!({"state": {"desired": {"l2": {"l3": {"leaf": 1}}}}});
        let err = ShadowRecord::default().update(three.to_string().as_bytes(), T0, tight).unwrap_err();
        assert_eq!(err.message, "JSON contains too many levels of nesting; maximum is 2");
    }

    #[test]
    fn state_larger_than_the_limit_is_rejected_with_413() {
        let limits = ShadowLimits { max_state_bytes: 40, ..LIMITS };
        // {"a":"<n x>"} is n + 8 bytes; desired and reported count together.
        let record = ShadowRecord::default()
            .update(json!({"state": {"desired": {"a": "x".repeat(12)}}}).to_string().as_bytes(), T0, limits)
            .unwrap()
            .record;
        assert_eq!(doc(&record).state_bytes(), 20);
        let fits = json!({"state": {"reported": {"a": "y".repeat(12)}}});
        let full = record.update(fits.to_string().as_bytes(), T1, limits).unwrap().record;
        assert_eq!(doc(&full).state_bytes(), 40);
        let too_big = json!({"state": {"reported": {"a": "y".repeat(13)}}, "clientToken": "t"});
        let err = record.update(too_big.to_string().as_bytes(), T1, limits).unwrap_err();
        assert_eq!(err, ShadowError::new(413, "The payload exceeds the maximum size allowed", Some("t".into())));
        // The accepted 40-byte state carries more metadata than that: metadata is not counted.
        assert!(serde_json::to_vec(&doc(&full).metadata_json()).unwrap().len() > 40);
    }

    #[test]
    fn get_returns_state_delta_metadata_version_and_token() {
        let record = record_after(&[
            json!({"state": {"reported": {"color": "GREEN"}}}),
            json!({"state": {"desired": {"color": "RED"}}}),
        ]);
        let got = record.get(br#"{"clientToken":"g1"}"#, T2).unwrap();
        assert_eq!(
            got,
            json!({
                "state": {"desired": {"color": "RED"}, "reported": {"color": "GREEN"}, "delta": {"color": "RED"}},
                "metadata": {
                    "desired": {"color": {"timestamp": T1}},
                    "reported": {"color": {"timestamp": T0}},
                    "delta": {"color": {"timestamp": T1}},
                },
                "version": 2,
                "timestamp": T2,
                "clientToken": "g1",
            })
        );
    }

    #[test]
    fn get_omits_delta_when_desired_matches_reported() {
        let record = record_after(&[json!({"state": {"desired": {"a": 1}, "reported": {"a": 1}}})]);
        let got = record.get(b"", T1).unwrap();
        assert!(got["state"].get("delta").is_none());
        assert!(got["metadata"].get("delta").is_none());
        assert!(got.get("clientToken").is_none());
    }

    #[test]
    fn get_and_delete_of_a_missing_shadow_are_404() {
        let never = ShadowRecord::default();
        let deleted = record_after(&[json!({"state": {"reported": {"a": 1}}})]).delete(b"", T1).unwrap().0;
        for record in [never, deleted] {
            let err = record.get_named("Thing1", None, br#"{"clientToken":"c"}"#, T2).unwrap_err();
            assert_eq!(err, ShadowError::new(404, "No shadow exists with name: 'Thing1'", Some("c".into())));
            let err = record.delete_named("Thing1", Some("cfg"), b"", T2).unwrap_err();
            assert_eq!(err, ShadowError::new(404, "No shadow exists with name: 'cfg'", None));
            assert_eq!(record.get(b"", T2).unwrap_err().code, 404);
            assert_eq!(record.delete(b"", T2).unwrap_err().code, 404);
        }
    }

    #[test]
    fn delete_ignores_its_body_but_echoes_a_client_token() {
        let record = record_after(&[json!({"state": {"reported": {"a": 1}}})]);
        for (payload, token) in [
            (&b"not json"[..], None),
            (br#"{"clientToken":"d1"}"#, Some("d1")),
            (br#"{"clientToken":5}"#, None),
            (b"\xff", None),
        ] {
            let (_, body) = record.delete(payload, T1).unwrap();
            assert_eq!(body.get("clientToken").and_then(Value::as_str), token);
        }
    }

    #[test]
    fn rejected_body_has_code_message_timestamp_and_optional_token() {
        let err = ShadowError::new(409, "Version conflict", Some("c".into()));
        assert_eq!(
            err.to_json(T0),
            json!({"code": 409, "message": "Version conflict", "timestamp": T0, "clientToken": "c"})
        );
        let err = ShadowError::new(400, "Invalid JSON", None);
        assert_eq!(err.to_json(T0), json!({"code": 400, "message": "Invalid JSON", "timestamp": T0}));
        assert!(ShadowError::internal(None).is_retryable());
        assert!(!err.is_retryable());
    }

    #[test]
    fn empty_state_update_is_accepted_and_creates_the_shadow() {
        let result = update(&ShadowRecord::default(), json!({"state": {}}), T0);
        assert_eq!(result.record.version, 1);
        assert_eq!(doc(&result.record).state_json(), json!({}));
        assert_eq!(result.accepted["state"], json!({}));
        assert_eq!(result.accepted["metadata"], json!({}));
    }
}
