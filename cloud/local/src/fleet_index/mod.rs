//! AWS IoT fleet indexing: the `AWS_Things` index over the registry and the things' connectivity,
//! searched with the query language of [`query`], and fleet metrics published to CloudWatch.
//!
//! Follows the AWS IoT Core Developer Guide, "Fleet indexing" ("Managing thing indexing",
//! "Query syntax", "Querying for aggregate data", "Fleet metrics"), and the operations'
//! members in the service model `iot.json` (2015-05-28).
//!
//! # Layout
//! - [`query`]: the query language, pure, with its tables of tests.
//! - this file: [`FleetIndex`], the indexing configuration, the connectivity record and search.
//! - [`metrics`]: fleet metrics (CreateFleetMetric and the rest) and the task that publishes them.
//! - [`http`]: the operations on the IoT control plane's endpoint (restJson1).
//!
//! The index reaches its sources through narrow interfaces: the registry as a [`ThingSource`],
//! the broker's connection state through its presence events ([`PresenceListener`], a
//! [`crate::bus::ServiceHandler`] that only observes), CloudWatch as a [`metrics::MetricSink`].
//!
//! Connectivity is what the broker's lifecycle events say: connected or not, the time of the last
//! connect or disconnect (epoch milliseconds) and the disconnect reason as those events name it.
//! It is kept for a client id equal to a thing's name, recorded whatever the indexing mode (the
//! index shows it once `thingConnectivityIndexingMode` is `STATUS`), and persisted: a thing still
//! recorded as connected when the local cloud starts was cut off by the stop, so it is
//! disconnected, at the start, with `SERVER_INITIATED_DISCONNECT`.
//!
//! Not served: shadow, named-shadow and Device Defender indexing (refused), custom fields, the
//! `AWS_ThingGroups` index (its configuration is kept and reported, searching it is refused),
//! aggregations other than `Statistics`.

pub mod http;
pub mod metrics;
pub mod query;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::registry::{ListThingsQuery, PageRequest, Registry};
use crate::store::{Store, StoreError};
use crate::time::SharedClock;
use query::{Document, Field, Query, Scalar};

/// The one thing index AWS IoT keeps.
pub const THINGS_INDEX: &str = "AWS_Things";
/// The thing-group index.
pub const THING_GROUPS_INDEX: &str = "AWS_ThingGroups";
/// The disconnect reason recorded for a thing connected when the local cloud stopped.
pub const RESTART_DISCONNECT_REASON: &str = "SERVER_INITIATED_DISCONNECT";

const CONFIG_KIND: &str = "fleet_index_config";
const CONFIG_KEY: &str = "configuration";
const CONNECTIVITY_KIND: &str = "fleet_index_connectivity";

/// Why a fleet-indexing call failed; each variant is one AWS exception.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// `InvalidRequestException`: fix the request.
    #[error("{0}")]
    InvalidRequest(String),
    /// `InvalidQueryException`: the query does not parse or names a field not indexed.
    #[error("{0}")]
    InvalidQuery(String),
    /// `InvalidAggregationException`: the aggregation cannot be computed on that field.
    #[error("{0}")]
    InvalidAggregation(String),
    /// `ResourceNotFoundException`: no such index (indexing is off) or fleet metric.
    #[error("{0}")]
    NotFound(String),
    /// `ResourceAlreadyExistsException`: a fleet metric of that name exists (name, ARN).
    #[error("fleet metric {0} already exists")]
    AlreadyExists(String, String),
    /// `VersionConflictException`: `expectedVersion` is not the current version.
    #[error("{0}")]
    VersionConflict(String),
    /// `InternalFailureException`: storage failed; retry.
    #[error("internal failure: {0}")]
    Internal(String),
}

impl From<StoreError> for IndexError {
    fn from(e: StoreError) -> Self {
        IndexError::Internal(e.to_string())
    }
}

/// `thingIndexingMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ThingIndexingMode {
    /// No thing index.
    #[default]
    #[serde(rename = "OFF")]
    Off,
    /// Registry data indexed.
    #[serde(rename = "REGISTRY")]
    Registry,
    /// Registry and shadow data (refused: shadows are not indexed here).
    #[serde(rename = "REGISTRY_AND_SHADOW")]
    RegistryAndShadow,
}

/// `thingConnectivityIndexingMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ConnectivityIndexingMode {
    /// Connectivity not indexed.
    #[default]
    #[serde(rename = "OFF")]
    Off,
    /// Connected or not, with the last change's time and reason.
    #[serde(rename = "STATUS")]
    Status,
}

/// `thingGroupIndexingMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GroupIndexingMode {
    /// No thing-group index.
    #[default]
    #[serde(rename = "OFF")]
    Off,
    /// Thing groups indexed (kept and reported; the index is not searchable here).
    #[serde(rename = "ON")]
    On,
}

/// `ThingIndexingConfiguration`, the members served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingIndexingConfiguration {
    /// What the thing index holds.
    pub thing_indexing_mode: Option<ThingIndexingMode>,
    /// Whether connectivity is indexed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_connectivity_indexing_mode: Option<ConnectivityIndexingMode>,
    /// `VIOLATIONS` is refused; `OFF` accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_defender_indexing_mode: Option<String>,
    /// `ON` is refused; `OFF` accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_shadow_indexing_mode: Option<String>,
    /// Custom fields are refused when not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<Vec<serde_json::Value>>,
}

/// `ThingGroupIndexingConfiguration`, the members served.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingGroupIndexingConfiguration {
    /// Whether thing groups are indexed.
    pub thing_group_indexing_mode: Option<GroupIndexingMode>,
    /// Custom fields are refused when not empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_fields: Option<Vec<serde_json::Value>>,
}

/// The indexing configuration as stored: what GetIndexingConfiguration answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexingConfiguration {
    /// `thingIndexingMode`.
    pub things: ThingIndexingMode,
    /// `thingConnectivityIndexingMode`.
    pub connectivity: ConnectivityIndexingMode,
    /// `thingGroupIndexingMode`.
    pub groups: GroupIndexingMode,
}

/// A thing as the index reads it from the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedThing {
    /// `thingName`.
    pub name: String,
    /// `thingId`.
    pub id: String,
    /// `thingTypeName`.
    pub type_name: Option<String>,
    /// `thingGroupNames`: the groups it is directly in.
    pub groups: Vec<String>,
    /// `attributes`.
    pub attributes: BTreeMap<String, String>,
    /// `registry.version`.
    pub version: i64,
}

/// Where the index reads things from (the registry).
pub trait ThingSource: Send + Sync {
    /// Every thing, by name.
    fn things(&self) -> Result<Vec<IndexedThing>, String>;
}

impl ThingSource for Registry {
    fn things(&self) -> Result<Vec<IndexedThing>, String> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let query = ListThingsQuery {
                page: PageRequest { next_token: token, max_results: Some(250) },
                ..Default::default()
            };
            let (page, next) = self.list_things(&query).map_err(|e| e.to_string())?;
            for t in page {
                let groups = self.thing_groups_for_thing(&t.name).map_err(|e| e.to_string())?;
                out.push(IndexedThing {
                    groups: groups.into_iter().map(|g| g.name).collect(),
                    name: t.name,
                    id: t.id,
                    type_name: t.thing_type_name,
                    attributes: t.attributes,
                    version: t.version,
                });
            }
            match next {
                Some(n) => token = Some(n),
                None => return Ok(out),
            }
        }
    }
}

/// A client's connectivity, as the broker's lifecycle events tell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connectivity {
    /// Whether a connection with this client id is open.
    pub connected: bool,
    /// Epoch milliseconds of the last connect or disconnect.
    pub timestamp: u64,
    /// The last disconnect's reason (lifecycle events' `disconnectReason`); none while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_reason: Option<String>,
    /// The open connection's `sessionIdentifier`, so a late disconnect of an older session is ignored.
    #[serde(default)]
    pub session: String,
}

/// A thing's document: what SearchIndex returns and queries match.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingDocument {
    /// The registry's part.
    pub thing: IndexedThing,
    /// The connectivity part, when connectivity is indexed.
    pub connectivity: Option<Connectivity>,
}

impl Document for ThingDocument {
    fn values(&self, field: &Field) -> Vec<Scalar> {
        let text = |s: &str| vec![Scalar::Text(s.to_owned())];
        let t = &self.thing;
        let c = self.connectivity.as_ref();
        match field {
            Field::ThingName => text(&t.name),
            Field::ThingId => text(&t.id),
            Field::ThingTypeName => t.type_name.as_deref().map(text).unwrap_or_default(),
            Field::ThingGroupNames => t.groups.iter().map(|g| Scalar::Text(g.clone())).collect(),
            Field::Attribute(a) => t.attributes.get(a).map(|v| text(v)).unwrap_or_default(),
            Field::RegistryVersion => vec![Scalar::Number(t.version as f64)],
            Field::Connected => c.map(|c| vec![Scalar::Bool(c.connected)]).unwrap_or_default(),
            Field::ConnectivityTimestamp => {
                c.filter(|c| c.timestamp > 0).map(|c| vec![Scalar::Number(c.timestamp as f64)]).unwrap_or_default()
            }
            Field::DisconnectReason => c.and_then(|c| c.disconnect_reason.as_deref()).map(text).unwrap_or_default(),
        }
    }
}

impl ThingDocument {
    /// The document as SearchIndex returns it (`ThingDocument` in `iot.json`).
    pub fn to_json(&self) -> serde_json::Value {
        let t = &self.thing;
        let mut doc = serde_json::json!({
            "thingName": t.name,
            "thingId": t.id,
            "thingGroupNames": t.groups,
            "attributes": t.attributes,
        });
        if let Some(ty) = &t.type_name {
            doc["thingTypeName"] = ty.clone().into();
        }
        if let Some(c) = &self.connectivity {
            let mut conn = serde_json::json!({ "connected": c.connected });
            if c.timestamp > 0 {
                conn["timestamp"] = c.timestamp.into();
            }
            if let Some(r) = &c.disconnect_reason {
                conn["disconnectReason"] = r.clone().into();
            }
            doc["connectivity"] = conn;
        }
        doc
    }
}

/// `GetStatistics`' numbers for one aggregation field.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Statistics {
    /// Things matching that have the field.
    pub count: u64,
    /// Sum of a numeric field's values (none for text fields).
    pub sum: Option<f64>,
    /// Least value.
    pub minimum: Option<f64>,
    /// Greatest value.
    pub maximum: Option<f64>,
}

impl Statistics {
    /// The mean of a numeric field.
    pub fn average(&self) -> Option<f64> {
        self.sum.filter(|_| self.count > 0).map(|s| s / self.count as f64)
    }
}

struct State {
    config: IndexingConfiguration,
    connectivity: HashMap<String, Connectivity>,
}

/// The fleet index: configuration, connectivity and search. Cheap to clone.
#[derive(Clone)]
pub struct FleetIndex {
    store: Store,
    things: Arc<dyn ThingSource>,
    clock: SharedClock,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FleetIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetIndex").finish_non_exhaustive()
    }
}

impl FleetIndex {
    /// Loads the configuration and the connectivity record; whatever was recorded connected is
    /// disconnected now, with [`RESTART_DISCONNECT_REASON`].
    pub fn open(store: Store, things: Arc<dyn ThingSource>, clock: SharedClock) -> Result<Self, IndexError> {
        let config = match store.get(CONFIG_KIND, CONFIG_KEY)? {
            Some(json) => serde_json::from_str(&json).map_err(|e| IndexError::Internal(e.to_string()))?,
            None => IndexingConfiguration::default(),
        };
        let now = clock.now_millis();
        let mut connectivity = HashMap::new();
        for (client, json) in store.all(CONNECTIVITY_KIND)? {
            let Ok(mut c) = serde_json::from_str::<Connectivity>(&json) else {
                tracing::warn!(%client, "dropping an unreadable connectivity record");
                continue;
            };
            if c.connected {
                c = Connectivity {
                    connected: false,
                    timestamp: now,
                    disconnect_reason: Some(RESTART_DISCONNECT_REASON.into()),
                    session: String::new(),
                };
                store.put(CONNECTIVITY_KIND, &client, &serde_json::to_string(&c).unwrap_or_default())?;
            }
            connectivity.insert(client, c);
        }
        Ok(FleetIndex { store, things, clock, state: Arc::new(Mutex::new(State { config, connectivity })) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The indexing configuration.
    pub fn configuration(&self) -> IndexingConfiguration {
        self.lock().config
    }

    /// UpdateIndexingConfiguration: sets what is given, keeps the rest.
    pub fn update_configuration(
        &self,
        things: Option<ThingIndexingConfiguration>,
        groups: Option<ThingGroupIndexingConfiguration>,
    ) -> Result<(), IndexError> {
        let mut config = self.configuration();
        if let Some(t) = things {
            let mode = t.thing_indexing_mode.ok_or_else(|| {
                IndexError::InvalidRequest("thingIndexingConfiguration.thingIndexingMode is required".into())
            })?;
            if mode == ThingIndexingMode::RegistryAndShadow {
                return Err(IndexError::InvalidRequest(
                    "thingIndexingMode REGISTRY_AND_SHADOW is not served by the local cloud: shadows are not indexed; use REGISTRY".into(),
                ));
            }
            if t.device_defender_indexing_mode.as_deref().is_some_and(|m| m != "OFF") {
                return Err(IndexError::InvalidRequest(
                    "deviceDefenderIndexingMode other than OFF is not served by the local cloud".into(),
                ));
            }
            if t.named_shadow_indexing_mode.as_deref().is_some_and(|m| m != "OFF") {
                return Err(IndexError::InvalidRequest(
                    "namedShadowIndexingMode other than OFF is not served by the local cloud".into(),
                ));
            }
            if t.custom_fields.as_ref().is_some_and(|f| !f.is_empty()) {
                return Err(IndexError::InvalidRequest("custom fields are not served by the local cloud".into()));
            }
            let connectivity = t.thing_connectivity_indexing_mode.unwrap_or_default();
            if mode == ThingIndexingMode::Off && connectivity != ConnectivityIndexingMode::Off {
                return Err(IndexError::InvalidRequest(
                    "thingConnectivityIndexingMode STATUS needs thingIndexingMode REGISTRY".into(),
                ));
            }
            config.things = mode;
            config.connectivity = connectivity;
        }
        if let Some(g) = groups {
            config.groups = g.thing_group_indexing_mode.ok_or_else(|| {
                IndexError::InvalidRequest("thingGroupIndexingConfiguration.thingGroupIndexingMode is required".into())
            })?;
            if g.custom_fields.as_ref().is_some_and(|f| !f.is_empty()) {
                return Err(IndexError::InvalidRequest("custom fields are not served by the local cloud".into()));
            }
        }
        self.store.put(CONFIG_KIND, CONFIG_KEY, &serde_json::to_string(&config).unwrap_or_default())?;
        self.lock().config = config;
        Ok(())
    }

    /// The indices that exist (ListIndices).
    pub fn indices(&self) -> Vec<&'static str> {
        let config = self.configuration();
        let mut out = Vec::new();
        if config.things != ThingIndexingMode::Off {
            out.push(THINGS_INDEX);
        }
        if config.groups == GroupIndexingMode::On {
            out.push(THING_GROUPS_INDEX);
        }
        out
    }

    /// DescribeIndex's `schema` of an index that exists.
    pub fn schema(&self, index: &str) -> Result<&'static str, IndexError> {
        let config = self.configuration();
        match index {
            THINGS_INDEX if config.things != ThingIndexingMode::Off => {
                Ok(if config.connectivity == ConnectivityIndexingMode::Status {
                    "REGISTRY_AND_CONNECTIVITY_STATUS"
                } else {
                    "REGISTRY"
                })
            }
            THING_GROUPS_INDEX if config.groups == GroupIndexingMode::On => Ok("THING_GROUPS"),
            _ => Err(IndexError::NotFound(format!("index {index} does not exist"))),
        }
    }

    /// Parses `query` for the things index, refusing fields the index does not hold now.
    pub fn parse_query(&self, index: &str, query: &str) -> Result<Query, IndexError> {
        self.check_searchable(index)?;
        let q = query::parse(query).map_err(|e| IndexError::InvalidQuery(e.0))?;
        self.check_fields(q.fields())?;
        Ok(q)
    }

    /// Refuses a field the index does not hold now (connectivity with connectivity indexing off).
    pub fn check_fields<'a>(&self, fields: impl IntoIterator<Item = &'a Field>) -> Result<(), IndexError> {
        if self.configuration().connectivity == ConnectivityIndexingMode::Off
            && let Some(f) = fields.into_iter().find(|f| f.is_connectivity())
        {
            return Err(IndexError::InvalidQuery(format!(
                "{f:?} is not indexed: thingConnectivityIndexingMode is OFF"
            )));
        }
        Ok(())
    }

    fn check_searchable(&self, index: &str) -> Result<(), IndexError> {
        match index {
            THINGS_INDEX => self.schema(index).map(|_| ()),
            THING_GROUPS_INDEX => {
                self.schema(index)?;
                Err(IndexError::InvalidRequest(format!("searching {index} is not served by the local cloud")))
            }
            other => Err(IndexError::NotFound(format!("index {other} does not exist"))),
        }
    }

    /// Every thing's document, by thing name, matching `query`.
    pub fn matching(&self, query: &Query) -> Result<Vec<ThingDocument>, IndexError> {
        let things = self.things.things().map_err(IndexError::Internal)?;
        let state = self.lock();
        let with_connectivity = state.config.connectivity == ConnectivityIndexingMode::Status;
        let mut docs: Vec<ThingDocument> = things
            .into_iter()
            .map(|thing| {
                let connectivity = with_connectivity.then(|| {
                    state.connectivity.get(&thing.name).cloned().unwrap_or(Connectivity {
                        connected: false,
                        timestamp: 0,
                        disconnect_reason: None,
                        session: String::new(),
                    })
                });
                ThingDocument { thing, connectivity }
            })
            .filter(|d| query.matches(d))
            .collect();
        docs.sort_by(|a, b| a.thing.name.cmp(&b.thing.name));
        Ok(docs)
    }

    /// SearchIndex: the documents matching `query` on `index`.
    pub fn search(&self, index: &str, query: &str) -> Result<Vec<ThingDocument>, IndexError> {
        let q = self.parse_query(index, query)?;
        self.matching(&q)
    }

    /// GetStatistics: the statistics of `field` over the things matching `query`.
    pub fn statistics(&self, index: &str, query: &str, field: &str) -> Result<Statistics, IndexError> {
        let field = self.aggregation_field(field)?;
        let docs = self.search(index, query)?;
        Ok(statistics(&docs, &field))
    }

    /// An aggregation field the index holds.
    pub fn aggregation_field(&self, name: &str) -> Result<Field, IndexError> {
        let field = Field::parse(name).map_err(|e| IndexError::InvalidAggregation(e.0))?;
        self.check_fields([&field]).map_err(|e| IndexError::InvalidAggregation(e.to_string()))?;
        Ok(field)
    }

    /// The connectivity recorded for a client id.
    pub fn connectivity(&self, client_id: &str) -> Option<Connectivity> {
        self.lock().connectivity.get(client_id).cloned()
    }

    /// Records a presence event: `connected` or `disconnected` of `client_id`.
    pub fn record(&self, client_id: &str, event: PresenceEvent) {
        let mut state = self.lock();
        let next = match event {
            PresenceEvent::Connected { timestamp, session } => {
                Connectivity { connected: true, timestamp, disconnect_reason: None, session }
            }
            PresenceEvent::Disconnected { timestamp, session, reason } => {
                // A late disconnect of a session already replaced changes nothing.
                if state.connectivity.get(client_id).is_some_and(|c| c.connected && c.session != session) {
                    return;
                }
                Connectivity { connected: false, timestamp, disconnect_reason: Some(reason), session: String::new() }
            }
        };
        if let Err(e) = self.store.put(CONNECTIVITY_KIND, client_id, &serde_json::to_string(&next).unwrap_or_default())
        {
            tracing::warn!(error = %e, %client_id, "recording connectivity");
        }
        state.connectivity.insert(client_id.to_owned(), next);
    }

    /// Milliseconds since the epoch, by the index's clock.
    pub fn now_millis(&self) -> u64 {
        self.clock.now_millis()
    }
}

/// The statistics of `field` over `docs`.
pub fn statistics(docs: &[ThingDocument], field: &Field) -> Statistics {
    let mut stats = Statistics::default();
    for value in docs.iter().flat_map(|d| d.values(field)) {
        stats.count += 1;
        if let Scalar::Number(n) = value {
            stats.sum = Some(stats.sum.unwrap_or(0.0) + n);
            stats.minimum = Some(stats.minimum.map_or(n, |m| m.min(n)));
            stats.maximum = Some(stats.maximum.map_or(n, |m| m.max(n)));
        }
    }
    stats
}

/// A presence event, as the index reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceEvent {
    /// `eventType: connected`.
    Connected {
        /// Epoch milliseconds.
        timestamp: u64,
        /// `sessionIdentifier`.
        session: String,
    },
    /// `eventType: disconnected`.
    Disconnected {
        /// Epoch milliseconds.
        timestamp: u64,
        /// `sessionIdentifier`.
        session: String,
        /// `disconnectReason`.
        reason: String,
    },
}

/// Reads a presence event (AWS IoT Core Developer Guide, "Lifecycle events"): its client id and
/// what happened; `None` for any other topic or an unreadable payload.
pub fn presence_event(topic: &str, payload: &[u8]) -> Option<(String, PresenceEvent)> {
    let rest = topic.strip_prefix("$aws/events/presence/")?;
    let (kind, client) = rest.split_once('/')?;
    let body: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let timestamp = body.get("timestamp")?.as_u64()?;
    let session = body.get("sessionIdentifier").and_then(|s| s.as_str()).unwrap_or_default().to_owned();
    let event = match kind {
        "connected" => PresenceEvent::Connected { timestamp, session },
        "disconnected" => PresenceEvent::Disconnected {
            timestamp,
            session,
            reason: body.get("disconnectReason").and_then(|r| r.as_str()).unwrap_or("UNKNOWN").to_owned(),
        },
        _ => return None,
    };
    Some((client.to_owned(), event))
}

/// The broker's presence events, heard as an observer of what it publishes: the index's only
/// hook into the broker.
#[derive(Debug, Clone)]
pub struct PresenceListener(pub FleetIndex);

impl crate::bus::ServiceHandler for PresenceListener {
    fn wants(&self, _topic: &str) -> bool {
        false
    }

    fn handle(&self, _from: &crate::bus::Publisher, _topic: &str, _payload: bytes::Bytes) {}

    fn observe(&self, from: Option<&crate::bus::Publisher>, topic: &str, payload: &bytes::Bytes) {
        // Only the broker's own events: a client may not fake a presence event.
        if from.is_none()
            && topic.starts_with("$aws/events/presence/")
            && let Some((client, event)) = presence_event(topic, payload)
        {
            self.0.record(&client, event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::SharedClock;

    #[derive(Default)]
    struct Things(Vec<IndexedThing>);

    impl ThingSource for Things {
        fn things(&self) -> Result<Vec<IndexedThing>, String> {
            Ok(self.0.clone())
        }
    }

    fn thing(name: &str) -> IndexedThing {
        IndexedThing {
            name: name.into(),
            id: format!("id-{name}"),
            type_name: None,
            groups: vec!["cores".into()],
            attributes: BTreeMap::from([("site".into(), name.into())]),
            version: 1,
        }
    }

    fn index(store: &Store) -> FleetIndex {
        let things = Arc::new(Things(vec![thing("a"), thing("b")]));
        let clock: SharedClock = crate::time::system();
        FleetIndex::open(store.clone(), things, clock).unwrap()
    }

    fn status() -> ThingIndexingConfiguration {
        ThingIndexingConfiguration {
            thing_indexing_mode: Some(ThingIndexingMode::Registry),
            thing_connectivity_indexing_mode: Some(ConnectivityIndexingMode::Status),
            ..Default::default()
        }
    }

    fn event(topic: &str, body: serde_json::Value) -> (String, PresenceEvent) {
        presence_event(topic, body.to_string().as_bytes()).expect("a presence event")
    }

    #[test]
    fn searching_needs_the_index_and_connectivity_fields_need_status() {
        let store = Store::in_memory().unwrap();
        let idx = index(&store);
        assert!(matches!(idx.search(THINGS_INDEX, "*"), Err(IndexError::NotFound(_))));
        idx.update_configuration(
            Some(ThingIndexingConfiguration {
                thing_indexing_mode: Some(ThingIndexingMode::Registry),
                ..Default::default()
            }),
            None,
        )
        .unwrap();
        assert_eq!(idx.search(THINGS_INDEX, "thingName:*").unwrap().len(), 2);
        assert!(matches!(idx.search(THINGS_INDEX, "connectivity.connected:false"), Err(IndexError::InvalidQuery(_))));
        assert!(matches!(idx.search("other", "*"), Err(IndexError::NotFound(_))));
        idx.update_configuration(Some(status()), None).unwrap();
        assert_eq!(idx.search(THINGS_INDEX, "connectivity.connected:false").unwrap().len(), 2);
    }

    #[test]
    fn shadow_indexing_and_inconsistent_modes_are_refused() {
        let store = Store::in_memory().unwrap();
        let idx = index(&store);
        let shadow = ThingIndexingConfiguration {
            thing_indexing_mode: Some(ThingIndexingMode::RegistryAndShadow),
            ..Default::default()
        };
        let e = idx.update_configuration(Some(shadow), None).unwrap_err();
        assert!(e.to_string().contains("REGISTRY_AND_SHADOW"), "{e}");
        let off_with_status = ThingIndexingConfiguration {
            thing_indexing_mode: Some(ThingIndexingMode::Off),
            thing_connectivity_indexing_mode: Some(ConnectivityIndexingMode::Status),
            ..Default::default()
        };
        assert!(matches!(idx.update_configuration(Some(off_with_status), None), Err(IndexError::InvalidRequest(_))));
        assert_eq!(idx.configuration(), IndexingConfiguration::default(), "a refused update changes nothing");
    }

    #[test]
    fn presence_events_drive_connectivity_and_a_restart_disconnects() {
        let store = Store::in_memory().unwrap();
        let idx = index(&store);
        idx.update_configuration(Some(status()), None).unwrap();
        let (client, connected) =
            event("$aws/events/presence/connected/a", serde_json::json!({"timestamp": 10, "sessionIdentifier": "s1"}));
        idx.record(&client, connected);
        let docs = idx.search(THINGS_INDEX, "connectivity.connected:true").unwrap();
        assert_eq!(docs.iter().map(|d| d.thing.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(docs[0].to_json()["connectivity"], serde_json::json!({"connected": true, "timestamp": 10}));

        // A second session takes over; the first one's late disconnect changes nothing.
        idx.record("a", PresenceEvent::Connected { timestamp: 20, session: "s2".into() });
        idx.record(
            "a",
            PresenceEvent::Disconnected { timestamp: 21, session: "s1".into(), reason: "DUPLICATE_CLIENTID".into() },
        );
        assert!(idx.connectivity("a").unwrap().connected);

        // The local cloud stops with `a` connected: after the restart it is disconnected.
        let reopened = index(&store);
        let c = reopened.connectivity("a").unwrap();
        assert!(!c.connected);
        assert_eq!(c.disconnect_reason.as_deref(), Some(RESTART_DISCONNECT_REASON));
        assert!(c.timestamp >= 21);
        assert_eq!(reopened.configuration().connectivity, ConnectivityIndexingMode::Status, "configuration persists");

        let (client, gone) = event(
            "$aws/events/presence/disconnected/b",
            serde_json::json!({"timestamp": 30, "sessionIdentifier": "x", "disconnectReason": "MQTT_KEEP_ALIVE_TIMEOUT"}),
        );
        reopened.record(&client, gone);
        let docs = reopened.search(THINGS_INDEX, "connectivity.disconnectReason:MQTT_KEEP_ALIVE_TIMEOUT").unwrap();
        assert_eq!(docs[0].thing.name, "b");
    }

    #[test]
    fn presence_listener_ignores_clients_and_other_topics() {
        use crate::bus::ServiceHandler as _;
        let store = Store::in_memory().unwrap();
        let idx = index(&store);
        let listener = PresenceListener(idx.clone());
        let body = bytes::Bytes::from(r#"{"timestamp": 5, "sessionIdentifier": "s"}"#);
        let client = crate::bus::Publisher { client_id: "a".into(), certificate_id: "c".into() };
        listener.observe(Some(&client), "$aws/events/presence/connected/a", &body);
        listener.observe(None, "$aws/events/subscriptions/subscribed/a", &body);
        assert_eq!(idx.connectivity("a"), None);
        listener.observe(None, "$aws/events/presence/connected/a", &body);
        assert!(idx.connectivity("a").unwrap().connected);
        assert!(presence_event("$aws/events/presence/connected/a", b"not json").is_none());
    }

    #[test]
    fn statistics_count_things_with_the_field() {
        let store = Store::in_memory().unwrap();
        let idx = index(&store);
        idx.update_configuration(Some(status()), None).unwrap();
        let s = idx.statistics(THINGS_INDEX, "thingName:*", "registry.version").unwrap();
        assert_eq!((s.count, s.sum, s.average()), (2, Some(2.0), Some(1.0)));
        let s = idx.statistics(THINGS_INDEX, "thingName:a", "thingName").unwrap();
        assert_eq!((s.count, s.sum), (1, None));
        assert!(matches!(idx.statistics(THINGS_INDEX, "*", "shadow.x"), Err(IndexError::InvalidAggregation(_))));
    }
}
