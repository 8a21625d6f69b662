//! The registry: things, thing types, thing groups, certificates, policies and
//! their attachments, as AWS IoT Core keeps them. State lives in memory for fast
//! authorization and is written through to the [`Store`] on every change.
//!
//! # Layout
//! - this module: things, thing types, policies, certificates, principals and
//!   authorization, the shared state and the [`RegistryEvent`] broadcast.
//! - [`groups`]: thing groups, their hierarchy and membership.
//! - [`provision`]: certificates waiting for fleet provisioning, and applying an evaluated
//!   provisioning template in one transaction.

mod groups;
mod provision;

pub use groups::{ListThingGroupsQuery, MAX_GROUPS_PER_THING, Membership, RemovalCause};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use cloud_api::policy::{Action, AuthContext, Decision, PolicyDocument};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::ca::LocalCa;
use crate::store::{Op, Store};
use crate::time::SharedClock;

/// A registry error, named after the AWS exception it becomes.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `ResourceNotFoundException` (404).
    #[error("{0}")]
    NotFound(String),
    /// `ResourceAlreadyExistsException` (409): the resource exists with different properties.
    #[error("{message}")]
    AlreadyExists {
        /// Message text.
        message: String,
        /// Id of the existing resource.
        resource_id: String,
        /// ARN of the existing resource.
        resource_arn: String,
    },
    /// `InvalidRequestException` (400).
    #[error("{0}")]
    InvalidRequest(String),
    /// `MalformedPolicyException` (400).
    #[error("{0}")]
    MalformedPolicy(String),
    /// `DeleteConflictException` (409): still attached or referenced.
    #[error("{0}")]
    DeleteConflict(String),
    /// `CertificateStateException` (406): the certificate's status forbids the operation.
    #[error("{0}")]
    CertificateState(String),
    /// `CertificateValidationException` (400): a CSR or certificate that cannot be used.
    #[error("{0}")]
    CertificateValidation(String),
    /// `VersionConflictException` (409): `expectedVersion` does not match.
    #[error("{0}")]
    VersionConflict(String),
    /// `InternalFailureException` (500): storage failed; nothing was changed.
    #[error("internal failure: {0}")]
    Internal(String),
}

/// A registered thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thing {
    /// Name.
    pub name: String,
    /// Unique id (a UUID).
    pub id: String,
    /// ARN.
    pub arn: String,
    /// Thing type, if any.
    pub thing_type_name: Option<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Version, starting at 1, bumped by every update.
    pub version: i64,
}

/// Thing type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingType {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// ARN.
    pub arn: String,
    /// Description.
    pub description: Option<String>,
    /// Searchable attribute names.
    pub searchable_attributes: Vec<String>,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
    /// Whether deprecated.
    pub deprecated: bool,
}

/// Thing group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingGroup {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// ARN.
    pub arn: String,
    /// Description.
    pub description: Option<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Parent group.
    pub parent_group_name: Option<String>,
    /// Version.
    pub version: i64,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
}

/// An IoT policy (only its default version is modelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// The document as given.
    pub document: String,
    /// Default version id ("1").
    pub default_version_id: String,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
    /// Last modified, epoch seconds.
    pub last_modified_date: u64,
}

/// Certificate status, as AWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertificateStatus {
    /// May connect.
    Active,
    /// May not connect.
    Inactive,
    /// Revoked.
    Revoked,
    /// Waiting for a transfer.
    PendingTransfer,
    /// Registered, waiting for activation.
    PendingActivation,
    /// Registered with an unregistered CA.
    RegisterInactive,
}

impl CertificateStatus {
    /// AWS's spelling (`ACTIVE`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            CertificateStatus::Active => "ACTIVE",
            CertificateStatus::Inactive => "INACTIVE",
            CertificateStatus::Revoked => "REVOKED",
            CertificateStatus::PendingTransfer => "PENDING_TRANSFER",
            CertificateStatus::PendingActivation => "PENDING_ACTIVATION",
            CertificateStatus::RegisterInactive => "REGISTER_INACTIVE",
        }
    }

    /// Parses AWS's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ACTIVE" => CertificateStatus::Active,
            "INACTIVE" => CertificateStatus::Inactive,
            "REVOKED" => CertificateStatus::Revoked,
            "PENDING_TRANSFER" => CertificateStatus::PendingTransfer,
            "PENDING_ACTIVATION" => CertificateStatus::PendingActivation,
            "REGISTER_INACTIVE" => CertificateStatus::RegisterInactive,
            _ => return None,
        })
    }
}

/// A registered device certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Id: lowercase hex SHA-256 of the DER certificate.
    pub id: String,
    /// ARN.
    pub arn: String,
    /// PEM.
    pub pem: String,
    /// Status.
    pub status: CertificateStatus,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
    /// Last modified, epoch seconds.
    pub last_modified_date: u64,
    /// Validity start, epoch seconds.
    pub not_before: u64,
    /// Validity end, epoch seconds.
    pub not_after: u64,
    /// Subject attributes (`CommonName`, …) for policy variables.
    pub subject: BTreeMap<String, String>,
}

/// A freshly made key pair (CreateKeysAndCertificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// Public key, PEM (SubjectPublicKeyInfo).
    pub public_key_pem: String,
    /// Private key, PEM (PKCS#8).
    pub private_key_pem: String,
}

/// A change other parts of the local cloud react to. Each is sent once, after
/// the change is stored; a request that changes nothing sends nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A certificate's status changed.
    CertificateStatusChanged {
        /// Certificate id.
        certificate_id: String,
        /// New status.
        status: CertificateStatus,
    },
    /// A certificate was deleted.
    CertificateDeleted {
        /// Certificate id.
        certificate_id: String,
    },
    /// A thing became a direct member of a thing group (AddThingToThingGroup).
    ThingAddedToThingGroup {
        /// The thing, the group and the group's ancestors.
        membership: Membership,
    },
    /// A thing stopped being a direct member of a thing group.
    ThingRemovedFromThingGroup {
        /// The thing, the group and the group's ancestors (as they were).
        membership: Membership,
        /// RemoveThingFromThingGroup, DeleteThing or DeleteThingGroup.
        cause: RemovalCause,
    },
}

/// Paging of a list operation (`nextToken`, `maxResults`). Tokens are the
/// last key of the previous page, so a page never repeats or skips an item
/// that was there before and after a concurrent change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// Paging token from a previous page.
    pub next_token: Option<String>,
    /// Page size (default 50, at most 250: the model's `RegistryMaxResults`).
    pub max_results: Option<usize>,
}

/// Filter and paging for ListThings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListThingsQuery {
    /// Only things with this attribute…
    pub attribute_name: Option<String>,
    /// …set to this value.
    pub attribute_value: Option<String>,
    /// Only things of this type.
    pub thing_type_name: Option<String>,
    /// Paging.
    pub page: PageRequest,
}

/// A request to authorize one MQTT operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    /// Certificate id of the connection.
    pub certificate_id: &'a str,
    /// MQTT client id.
    pub client_id: &'a str,
    /// The action.
    pub action: Action,
    /// The resource name without the ARN prefix, e.g. `topic/a/b` or `client/x`.
    pub resource: &'a str,
}

/// The registry.
pub struct Registry {
    store: Store,
    ca: Arc<LocalCa>,
    clock: SharedClock,
    region: String,
    account_id: String,
    state: RwLock<State>,
    events: broadcast::Sender<RegistryEvent>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("region", &self.region)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// In-memory registry; mirrors the store.
#[derive(Default)]
struct State {
    things: BTreeMap<String, Thing>,
    thing_types: BTreeMap<String, ThingType>,
    groups: BTreeMap<String, ThingGroup>,
    policies: BTreeMap<String, (Policy, Arc<PolicyDocument>)>,
    certificates: BTreeMap<String, Certificate>,
    /// target ARN → policy names.
    policy_targets: BTreeMap<String, BTreeSet<String>>,
    /// thing name → principal ARNs.
    thing_principals: BTreeMap<String, BTreeSet<String>>,
    /// thing group → its member things (direct members only).
    group_members: BTreeMap<String, BTreeSet<String>>,
    /// thing → the groups it is a direct member of (the reverse of `group_members`).
    thing_groups: BTreeMap<String, BTreeSet<String>>,
}

const K_THING: &str = "thing";
const K_THING_TYPE: &str = "thing_type";
const K_GROUP: &str = "thing_group";
const K_POLICY: &str = "policy";
const K_CERT: &str = "certificate";
const K_POLICY_TARGET: &str = "policy_target";
const K_THING_PRINCIPAL: &str = "thing_principal";
/// One record per (group, thing) membership, key `group\nthing`.
const K_GROUP_MEMBER: &str = "thing_group_member";

/// How many [`RegistryEvent`]s a receiver may fall behind before it gets
/// `RecvError::Lagged` (and must read the state again instead).
const EVENTS_CAPACITY: usize = 4096;

fn put<T: Serialize>(kind: &'static str, key: &str, value: &T) -> Op {
    Op::Put { kind, key: key.to_string(), value: serde_json::to_string(value).unwrap_or_default() }
}

fn del(kind: &'static str, key: &str) -> Op {
    Op::Delete { kind, key: key.to_string() }
}

fn pair_key(a: &str, b: &str) -> String {
    format!("{a}\n{b}")
}

/// Records the pair `(a, b)` in a kind whose keys are pairs (attachments, memberships).
fn put_pair(kind: &'static str, a: &str, b: &str) -> Op {
    Op::Put { kind, key: pair_key(a, b), value: "1".into() }
}

fn del_pair(kind: &'static str, a: &str, b: &str) -> Op {
    del(kind, &pair_key(a, b))
}

/// Removes `value` from the set under `key`, and the set once empty.
fn remove_from(map: &mut BTreeMap<String, BTreeSet<String>>, key: &str, value: &str) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// The pairs stored in a kind whose keys are pairs.
fn load_pairs(store: &Store, kind: &str) -> Result<Vec<(String, String)>, RegistryError> {
    Ok(store
        .all(kind)
        .map_err(internal)?
        .into_iter()
        .filter_map(|(key, _)| key.split_once('\n').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect())
}

fn internal(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Internal(e.to_string())
}

fn valid_name(name: &str, max: usize, allowed: impl Fn(char) -> bool) -> bool {
    !name.is_empty() && name.len() <= max && name.chars().all(allowed)
}

fn check_thing_name(name: &str) -> Result<(), RegistryError> {
    if valid_name(name, 128, |c| c.is_ascii_alphanumeric() || ":_-".contains(c)) {
        Ok(())
    } else {
        Err(RegistryError::InvalidRequest(format!(
            "1 validation error detected: Value '{name}' at 'thingName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+ and have length between 1 and 128"
        )))
    }
}

fn check_resource_name(name: &str, field: &str) -> Result<(), RegistryError> {
    if valid_name(name, 128, |c| c.is_ascii_alphanumeric() || ":_-".contains(c)) {
        Ok(())
    } else {
        Err(RegistryError::InvalidRequest(format!(
            "1 validation error detected: Value '{name}' at '{field}' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9:_-]+"
        )))
    }
}

fn check_policy_name(name: &str) -> Result<(), RegistryError> {
    if cloud_api::policy::is_valid_policy_name(name) {
        Ok(())
    } else {
        Err(RegistryError::InvalidRequest(format!(
            "1 validation error detected: Value '{name}' at 'policyName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+"
        )))
    }
}

fn check_attributes(attributes: &BTreeMap<String, String>) -> Result<(), RegistryError> {
    for (k, v) in attributes {
        let key_ok = valid_name(k, 128, |c| c.is_ascii_alphanumeric() || "_.,@/:#-".contains(c));
        let value_ok = v.len() <= 800 && v.chars().all(|c| c.is_ascii_alphanumeric() || "_.,@/:#=[]-".contains(c));
        if !key_ok || !value_ok {
            return Err(RegistryError::InvalidRequest(format!("Invalid attribute: {k}={v}")));
        }
    }
    if attributes.len() > 50 {
        return Err(RegistryError::InvalidRequest("A thing can have at most 50 attributes".into()));
    }
    Ok(())
}

impl Registry {
    /// Loads the registry from the store.
    pub fn open(
        store: Store,
        ca: Arc<LocalCa>,
        clock: SharedClock,
        region: &str,
        account_id: &str,
    ) -> Result<Self, RegistryError> {
        let mut state = State::default();
        fn load<T: for<'de> Deserialize<'de>>(store: &Store, kind: &str) -> Result<Vec<(String, T)>, RegistryError> {
            store
                .all(kind)
                .map_err(internal)?
                .into_iter()
                .map(|(k, v)| {
                    serde_json::from_str(&v)
                        .map(|t| (k.clone(), t))
                        .map_err(|e| internal(format!("record {kind}/{k}: {e}")))
                })
                .collect()
        }
        state.things = load(&store, K_THING)?.into_iter().collect();
        state.thing_types = load(&store, K_THING_TYPE)?.into_iter().collect();
        let legacy = groups::load_groups(&mut state, load(&store, K_GROUP)?);
        for (group, thing) in load_pairs(&store, K_GROUP_MEMBER)? {
            state.link(&group, &thing);
        }
        state.certificates = load(&store, K_CERT)?.into_iter().collect();
        for (name, policy) in load::<Policy>(&store, K_POLICY)? {
            let doc =
                PolicyDocument::parse(&policy.document).map_err(|e| internal(format!("stored policy {name}: {e}")))?;
            state.policies.insert(name, (policy, Arc::new(doc)));
        }
        for (target, policy) in load_pairs(&store, K_POLICY_TARGET)? {
            state.policy_targets.entry(target).or_default().insert(policy);
        }
        for (thing, principal) in load_pairs(&store, K_THING_PRINCIPAL)? {
            state.thing_principals.entry(thing).or_default().insert(principal);
        }
        if !legacy.is_empty() {
            store.apply(&legacy).map_err(internal)?;
        }
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        Ok(Registry {
            store,
            ca,
            clock,
            region: region.to_string(),
            account_id: account_id.to_string(),
            state: RwLock::new(state),
            events,
        })
    }

    /// Region of every ARN.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Account id of every ARN.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The local CA that signs device certificates.
    pub fn ca(&self) -> &Arc<LocalCa> {
        &self.ca
    }

    /// Registry changes: the broker drops connections of deactivated
    /// certificates; services that follow thing groups (continuous jobs,
    /// thing-group deployments) see members join and leave. Events arrive in
    /// the order the changes were stored. A receiver more than 4096 events
    /// behind gets `RecvError::Lagged` and must read the state again.
    pub fn events(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    /// Sends an event; having no receiver is fine.
    fn announce(&self, event: RegistryEvent) {
        let _ = self.events.send(event);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self, ops: &[Op]) -> Result<(), RegistryError> {
        self.store.apply(ops).map_err(internal)
    }

    fn arn(&self, resource: &str) -> String {
        format!("arn:aws:iot:{}:{}:{resource}", self.region, self.account_id)
    }

    fn cert_id_from_principal<'a>(&self, principal: &'a str) -> Option<&'a str> {
        principal.rsplit_once(":cert/").map(|(_, id)| id)
    }

    // ---- things ----

    /// CreateThing. Idempotent when the same properties are given; otherwise `AlreadyExists`.
    pub fn create_thing(
        &self,
        name: &str,
        thing_type_name: Option<&str>,
        attributes: BTreeMap<String, String>,
    ) -> Result<Thing, RegistryError> {
        check_thing_name(name)?;
        check_attributes(&attributes)?;
        let mut state = self.write();
        if let Some(t) = thing_type_name {
            match state.thing_types.get(t) {
                None => return Err(RegistryError::NotFound(format!("Thing Type {t} cannot be found"))),
                Some(tt) if tt.deprecated => {
                    return Err(RegistryError::InvalidRequest(format!(
                        "Can not create new thing with deprecated thing type: {t}"
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some(existing) = state.things.get(name) {
            if existing.thing_type_name.as_deref() == thing_type_name && existing.attributes == attributes {
                return Ok(existing.clone());
            }
            return Err(RegistryError::AlreadyExists {
                message: format!("Thing {name} already exists in account with different attributes"),
                resource_id: existing.id.clone(),
                resource_arn: existing.arn.clone(),
            });
        }
        let thing = Thing {
            name: name.to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            arn: self.arn(&format!("thing/{name}")),
            thing_type_name: thing_type_name.map(str::to_string),
            attributes,
            version: 1,
        };
        self.persist(&[put(K_THING, name, &thing)])?;
        state.things.insert(name.to_string(), thing.clone());
        Ok(thing)
    }

    /// DescribeThing.
    pub fn describe_thing(&self, name: &str) -> Result<Thing, RegistryError> {
        self.read().things.get(name).cloned().ok_or_else(|| thing_not_found(name))
    }

    /// ListThings: a page of things and the next token.
    pub fn list_things(&self, query: &ListThingsQuery) -> Result<(Vec<Thing>, Option<String>), RegistryError> {
        let state = self.read();
        let filtered = state.things.values().filter(|t| {
            query.thing_type_name.as_ref().is_none_or(|tt| t.thing_type_name.as_ref() == Some(tt))
                && match (&query.attribute_name, &query.attribute_value) {
                    (Some(n), Some(v)) => t.attributes.get(n) == Some(v),
                    (Some(n), None) => t.attributes.contains_key(n),
                    _ => true,
                }
        });
        paginate(filtered, &query.page, |t| t.name.clone())
    }

    /// UpdateThing. `attributes`: `(attributes, merge)`; an empty value removes the attribute when merging.
    pub fn update_thing(
        &self,
        name: &str,
        thing_type_name: Option<&str>,
        remove_thing_type: bool,
        attributes: Option<(BTreeMap<String, String>, bool)>,
        expected_version: Option<i64>,
    ) -> Result<(), RegistryError> {
        if remove_thing_type && thing_type_name.is_some() {
            return Err(RegistryError::InvalidRequest("Cannot specify both thingTypeName and removeThingType".into()));
        }
        let mut state = self.write();
        let mut thing = state.things.get(name).cloned().ok_or_else(|| thing_not_found(name))?;
        if let Some(v) = expected_version
            && v != thing.version
        {
            return Err(RegistryError::VersionConflict(format!(
                "The version for thing {name} does not match the expected version."
            )));
        }
        if let Some(t) = thing_type_name {
            if !state.thing_types.contains_key(t) {
                return Err(RegistryError::NotFound(format!("Thing Type {t} cannot be found")));
            }
            thing.thing_type_name = Some(t.to_string());
        }
        if remove_thing_type {
            thing.thing_type_name = None;
        }
        if let Some((attrs, merge)) = attributes {
            if merge {
                for (k, v) in attrs {
                    if v.is_empty() {
                        thing.attributes.remove(&k);
                    } else {
                        thing.attributes.insert(k, v);
                    }
                }
            } else {
                thing.attributes = attrs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
            }
            check_attributes(&thing.attributes)?;
        }
        thing.version += 1;
        self.persist(&[put(K_THING, name, &thing)])?;
        state.things.insert(name.to_string(), thing);
        Ok(())
    }

    /// DeleteThing. Deleting a missing thing succeeds, as on AWS; a thing with
    /// attached principals is refused (detach them first, as on AWS).
    pub fn delete_thing(&self, name: &str, expected_version: Option<i64>) -> Result<(), RegistryError> {
        let mut state = self.write();
        let Some(thing) = state.things.get(name).cloned() else {
            return Ok(());
        };
        if let Some(v) = expected_version
            && v != thing.version
        {
            return Err(RegistryError::VersionConflict(format!(
                "The version for thing {name} does not match the expected version."
            )));
        }
        if state.thing_principals.get(name).is_some_and(|p| !p.is_empty()) {
            return Err(RegistryError::InvalidRequest(format!(
                "Cannot delete thing {name}: it has principals attached. Detach them first."
            )));
        }
        let groups: Vec<String> = state.thing_groups.get(name).into_iter().flatten().cloned().collect();
        let mut ops = vec![del(K_THING, name)];
        ops.extend(groups.iter().map(|g| del_pair(K_GROUP_MEMBER, g, name)));
        self.persist(&ops)?;
        state.things.remove(name);
        for group in groups {
            self.leave(&mut state, &group, name, RemovalCause::ThingDeleted);
        }
        Ok(())
    }

    /// CreateThingType.
    pub fn create_thing_type(
        &self,
        name: &str,
        description: Option<&str>,
        searchable_attributes: Vec<String>,
    ) -> Result<ThingType, RegistryError> {
        check_resource_name(name, "thingTypeName")?;
        let mut state = self.write();
        if let Some(existing) = state.thing_types.get(name) {
            if existing.description.as_deref() == description && existing.searchable_attributes == searchable_attributes
            {
                return Ok(existing.clone());
            }
            return Err(RegistryError::AlreadyExists {
                message: format!("Thing Type {name} already exists with different properties"),
                resource_id: existing.id.clone(),
                resource_arn: existing.arn.clone(),
            });
        }
        let tt = ThingType {
            name: name.to_string(),
            id: uuid::Uuid::new_v4().to_string(),
            arn: self.arn(&format!("thingtype/{name}")),
            description: description.map(str::to_string),
            searchable_attributes,
            creation_date: self.clock.now_secs(),
            deprecated: false,
        };
        self.persist(&[put(K_THING_TYPE, name, &tt)])?;
        state.thing_types.insert(name.to_string(), tt.clone());
        Ok(tt)
    }

    /// DescribeThingType.
    pub fn describe_thing_type(&self, name: &str) -> Result<ThingType, RegistryError> {
        self.read()
            .thing_types
            .get(name)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound(format!("Thing Type {name} cannot be found")))
    }

    // ---- policies ----

    /// CreatePolicy: the document is validated (`MalformedPolicy` if not valid).
    pub fn create_policy(&self, name: &str, document: &str) -> Result<Policy, RegistryError> {
        check_policy_name(name)?;
        if document.len() > 2048 {
            return Err(RegistryError::MalformedPolicy(
                "Policy document is larger than the maximum of 2048 characters".into(),
            ));
        }
        let parsed = PolicyDocument::parse(document).map_err(|e| RegistryError::MalformedPolicy(e.to_string()))?;
        let mut state = self.write();
        if let Some((existing, _)) = state.policies.get(name) {
            return Err(RegistryError::AlreadyExists {
                message: format!("Policy cannot be created - name already exists (name={name})"),
                resource_id: existing.name.clone(),
                resource_arn: existing.arn.clone(),
            });
        }
        let now = self.clock.now_secs();
        let policy = Policy {
            name: name.to_string(),
            arn: self.arn(&format!("policy/{name}")),
            document: document.to_string(),
            default_version_id: "1".into(),
            creation_date: now,
            last_modified_date: now,
        };
        self.persist(&[put(K_POLICY, name, &policy)])?;
        state.policies.insert(name.to_string(), (policy.clone(), Arc::new(parsed)));
        Ok(policy)
    }

    /// GetPolicy.
    pub fn get_policy(&self, name: &str) -> Result<Policy, RegistryError> {
        self.read().policies.get(name).map(|(p, _)| p.clone()).ok_or_else(|| policy_not_found(name))
    }

    /// ListPolicies, by name.
    pub fn list_policies(&self) -> Vec<Policy> {
        self.read().policies.values().map(|(p, _)| p.clone()).collect()
    }

    /// DeletePolicy: `DeleteConflict` while attached.
    pub fn delete_policy(&self, name: &str) -> Result<(), RegistryError> {
        let mut state = self.write();
        if !state.policies.contains_key(name) {
            return Err(policy_not_found(name));
        }
        if state.policy_targets.values().any(|ps| ps.contains(name)) {
            return Err(RegistryError::DeleteConflict(format!(
                "The policy cannot be deleted as the policy is attached to one or more principals (name={name})"
            )));
        }
        self.persist(&[del(K_POLICY, name)])?;
        state.policies.remove(name);
        Ok(())
    }

    fn check_target(&self, state: &State, target: &str) -> Result<(), RegistryError> {
        let prefix = self.arn("");
        let rest = target.strip_prefix(&prefix).ok_or_else(|| {
            RegistryError::InvalidRequest(format!("Invalid target: {target} (expected an ARN in {prefix}…)"))
        })?;
        if let Some(id) = rest.strip_prefix("cert/") {
            if !state.certificates.contains_key(id) {
                return Err(RegistryError::NotFound(
                    "The certificate given in the principal does not exist.".to_string(),
                ));
            }
            Ok(())
        } else if let Some(g) = rest.strip_prefix("thinggroup/") {
            if !state.groups.contains_key(g) {
                return Err(group_not_found(g));
            }
            Ok(())
        } else {
            Err(RegistryError::InvalidRequest(format!(
                "Invalid target: {target}; a certificate or thing group ARN is expected"
            )))
        }
    }

    /// AttachPolicy to a target ARN (certificate ARN or thing group ARN).
    pub fn attach_policy(&self, policy_name: &str, target: &str) -> Result<(), RegistryError> {
        let mut state = self.write();
        if !state.policies.contains_key(policy_name) {
            return Err(policy_not_found(policy_name));
        }
        self.check_target(&state, target)?;
        if state.policy_targets.get(target).is_some_and(|p| p.contains(policy_name)) {
            return Ok(());
        }
        if state.policy_targets.get(target).is_some_and(|p| p.len() >= 10) {
            return Err(RegistryError::InvalidRequest("A target can have at most 10 policies attached".into()));
        }
        self.persist(&[put_pair(K_POLICY_TARGET, target, policy_name)])?;
        state.policy_targets.entry(target.to_string()).or_default().insert(policy_name.to_string());
        Ok(())
    }

    /// DetachPolicy.
    pub fn detach_policy(&self, policy_name: &str, target: &str) -> Result<(), RegistryError> {
        let mut state = self.write();
        if !state.policies.contains_key(policy_name) {
            return Err(policy_not_found(policy_name));
        }
        self.check_target(&state, target)?;
        self.persist(&[del_pair(K_POLICY_TARGET, target, policy_name)])?;
        remove_from(&mut state.policy_targets, target, policy_name);
        Ok(())
    }

    /// ListAttachedPolicies of a target ARN.
    pub fn list_attached_policies(&self, target: &str) -> Result<Vec<Policy>, RegistryError> {
        let state = self.read();
        self.check_target(&state, target)?;
        Ok(state
            .policy_targets
            .get(target)
            .into_iter()
            .flatten()
            .filter_map(|name| state.policies.get(name).map(|(p, _)| p.clone()))
            .collect())
    }

    // ---- certificates ----

    fn register(&self, pem: String, der: &[u8], active: bool) -> Result<Certificate, RegistryError> {
        let status = if active { CertificateStatus::Active } else { CertificateStatus::Inactive };
        self.register_with_status(pem, der, status)
    }

    fn register_with_status(
        &self,
        pem: String,
        der: &[u8],
        status: CertificateStatus,
    ) -> Result<Certificate, RegistryError> {
        let info = crate::ca::cert_info(der).map_err(internal)?;
        let id = crate::ca::certificate_id(der);
        let now = self.clock.now_secs();
        let cert = Certificate {
            arn: self.arn(&format!("cert/{id}")),
            id: id.clone(),
            pem,
            status,
            creation_date: now,
            last_modified_date: now,
            not_before: info.not_before,
            not_after: info.not_after,
            subject: info.subject,
        };
        let mut state = self.write();
        self.persist(&[put(K_CERT, &id, &cert)])?;
        state.certificates.insert(id, cert.clone());
        Ok(cert)
    }

    /// CreateKeysAndCertificate: a new EC P-256 key pair and a certificate signed by the local CA.
    pub fn create_keys_and_certificate(&self, set_as_active: bool) -> Result<(Certificate, KeyPair), RegistryError> {
        let (issued, public_key_pem, private_key_pem) =
            self.ca.issue_with_new_key("AWS IoT Certificate").map_err(internal)?;
        let cert = self.register(issued.pem, &issued.der, set_as_active)?;
        Ok((cert, KeyPair { public_key_pem, private_key_pem }))
    }

    /// [`Self::create_keys_and_certificate`] for a certificate valid only until `not_after`
    /// (epoch seconds), as one from a private CA with a short life is: what a certificate that
    /// is about to expire looks like to the audit and the rotation sweep.
    pub fn create_keys_and_certificate_valid_until(
        &self,
        set_as_active: bool,
        not_after: u64,
    ) -> Result<(Certificate, KeyPair), RegistryError> {
        let (issued, public_key_pem, private_key_pem) =
            self.ca.issue_with_new_key_until("AWS IoT Certificate", not_after).map_err(internal)?;
        let cert = self.register(issued.pem, &issued.der, set_as_active)?;
        Ok((cert, KeyPair { public_key_pem, private_key_pem }))
    }

    /// CreateCertificateFromCsr: a certificate for the CSR's own public key, signed by the local CA.
    pub fn create_certificate_from_csr(
        &self,
        csr_pem: &str,
        set_as_active: bool,
    ) -> Result<Certificate, RegistryError> {
        let issued = self.ca.issue_for_csr(csr_pem).map_err(|e| RegistryError::InvalidRequest(e.to_string()))?;
        self.register(issued.pem, &issued.der, set_as_active)
    }

    /// RegisterCertificateWithoutCA: a device certificate from any issuer (not checked against a
    /// registered CA), stored with `status` (the model documents no default; the handler uses
    /// `INACTIVE`, as RegisterCertificate does without `setAsActive`). A PEM that is not a
    /// certificate is `InvalidRequest`; the same certificate twice is `AlreadyExists`.
    pub fn register_certificate_without_ca(
        &self,
        pem: &str,
        status: CertificateStatus,
    ) -> Result<Certificate, RegistryError> {
        let der = crate::ca::pem_to_der(pem)
            .map_err(|e| RegistryError::InvalidRequest(format!("certificatePem is not a PEM certificate: {e}")))?;
        crate::ca::cert_info(&der)
            .map_err(|e| RegistryError::InvalidRequest(format!("certificatePem is not a valid certificate: {e}")))?;
        let id = crate::ca::certificate_id(&der);
        if self.read().certificates.contains_key(&id) {
            return Err(RegistryError::AlreadyExists {
                message: "The certificate is already provisioned or registered".into(),
                resource_arn: self.arn(&format!("cert/{id}")),
                resource_id: id,
            });
        }
        self.register_with_status(pem.to_owned(), &der, status)
    }

    /// DescribeCertificate.
    pub fn describe_certificate(&self, id: &str) -> Result<Certificate, RegistryError> {
        self.read().certificates.get(id).cloned().ok_or_else(|| cert_not_found(id))
    }

    /// ListCertificates, newest first.
    pub fn list_certificates(&self) -> Vec<Certificate> {
        let mut certs: Vec<Certificate> = self.read().certificates.values().cloned().collect();
        certs.sort_by(|a, b| b.creation_date.cmp(&a.creation_date).then_with(|| a.id.cmp(&b.id)));
        certs
    }

    /// UpdateCertificate: a status change is broadcast as a [`RegistryEvent`].
    pub fn update_certificate(&self, id: &str, status: CertificateStatus) -> Result<(), RegistryError> {
        let mut state = self.write();
        let mut cert = state.certificates.get(id).cloned().ok_or_else(|| cert_not_found(id))?;
        match status {
            CertificateStatus::PendingTransfer | CertificateStatus::PendingActivation => {
                return Err(RegistryError::InvalidRequest(format!(
                    "Certificate status cannot be set to {} with UpdateCertificate",
                    status.as_str()
                )));
            }
            _ => {}
        }
        if cert.status == CertificateStatus::Revoked && status != CertificateStatus::Revoked {
            return Err(RegistryError::CertificateState(format!("Certificate {id} is revoked and cannot be changed")));
        }
        if cert.status == status {
            return Ok(());
        }
        cert.status = status;
        cert.last_modified_date = self.clock.now_secs();
        self.persist(&[put(K_CERT, id, &cert)])?;
        state.certificates.insert(id.to_string(), cert);
        drop(state);
        let _ = self.events.send(RegistryEvent::CertificateStatusChanged { certificate_id: id.to_string(), status });
        Ok(())
    }

    /// DeleteCertificate: refused while ACTIVE (`CertificateState`) or attached to a
    /// thing (`DeleteConflict`); attached policies are refused unless `force`, which detaches them.
    pub fn delete_certificate(&self, id: &str, force: bool) -> Result<(), RegistryError> {
        let mut state = self.write();
        let cert = state.certificates.get(id).cloned().ok_or_else(|| cert_not_found(id))?;
        if cert.status == CertificateStatus::Active {
            return Err(RegistryError::CertificateState(
                "Certificate must be deactivated (not ACTIVE) before deletion.".into(),
            ));
        }
        if state.thing_principals.values().any(|ps| ps.contains(&cert.arn)) {
            return Err(RegistryError::DeleteConflict(
                "Things must be detached before deletion (arn: ".to_string() + &cert.arn + ")",
            ));
        }
        let policies: Vec<String> = state.policy_targets.get(&cert.arn).into_iter().flatten().cloned().collect();
        if !policies.is_empty() && !force {
            return Err(RegistryError::DeleteConflict(format!(
                "Certificate policies must be detached before deletion (arn: {})",
                cert.arn
            )));
        }
        let mut ops = vec![del(K_CERT, id)];
        ops.extend(policies.iter().map(|p| del_pair(K_POLICY_TARGET, &cert.arn, p)));
        self.persist(&ops)?;
        state.certificates.remove(id);
        state.policy_targets.remove(&cert.arn);
        drop(state);
        let _ = self.events.send(RegistryEvent::CertificateDeleted { certificate_id: id.to_string() });
        Ok(())
    }

    /// AttachThingPrincipal (principal: a certificate ARN).
    pub fn attach_thing_principal(&self, thing: &str, principal: &str) -> Result<(), RegistryError> {
        let mut state = self.write();
        if !state.things.contains_key(thing) {
            return Err(thing_not_found(thing));
        }
        self.check_principal(&state, principal)?;
        if state.thing_principals.get(thing).is_some_and(|p| p.contains(principal)) {
            return Ok(());
        }
        self.persist(&[put_pair(K_THING_PRINCIPAL, thing, principal)])?;
        state.thing_principals.entry(thing.to_string()).or_default().insert(principal.to_string());
        Ok(())
    }

    fn check_principal(&self, state: &State, principal: &str) -> Result<(), RegistryError> {
        match self.cert_id_from_principal(principal) {
            Some(id) if principal == self.arn(&format!("cert/{id}")) => {
                if state.certificates.contains_key(id) {
                    Ok(())
                } else {
                    Err(RegistryError::NotFound("The certificate given in the principal does not exist.".into()))
                }
            }
            _ => Err(RegistryError::InvalidRequest(format!("Invalid principal: {principal}"))),
        }
    }

    /// DetachThingPrincipal.
    pub fn detach_thing_principal(&self, thing: &str, principal: &str) -> Result<(), RegistryError> {
        let mut state = self.write();
        if !state.things.contains_key(thing) {
            return Err(thing_not_found(thing));
        }
        self.check_principal(&state, principal)?;
        self.persist(&[del_pair(K_THING_PRINCIPAL, thing, principal)])?;
        remove_from(&mut state.thing_principals, thing, principal);
        Ok(())
    }

    /// ListThingPrincipals: the principal ARNs attached to a thing.
    pub fn list_thing_principals(&self, thing: &str) -> Result<Vec<String>, RegistryError> {
        let state = self.read();
        if !state.things.contains_key(thing) {
            return Err(thing_not_found(thing));
        }
        Ok(state.thing_principals.get(thing).into_iter().flatten().cloned().collect())
    }

    /// ListPrincipalThings: the things a principal is attached to.
    pub fn list_principal_things(&self, principal: &str) -> Vec<String> {
        self.read().thing_principals.iter().filter(|(_, ps)| ps.contains(principal)).map(|(t, _)| t.clone()).collect()
    }

    // ---- authorization (broker) ----

    /// Status of a certificate, `None` if not registered.
    pub fn certificate_status(&self, id: &str) -> Option<CertificateStatus> {
        self.read().certificates.get(id).map(|c| c.status)
    }

    /// The policy context of a connection: which thing it speaks for, its
    /// attributes, and the certificate's subject.
    pub fn auth_context(&self, certificate_id: &str, client_id: &str) -> AuthContext {
        let state = self.read();
        self.context_in(&state, certificate_id, client_id)
    }

    fn context_in(&self, state: &State, certificate_id: &str, client_id: &str) -> AuthContext {
        let cert_arn = self.arn(&format!("cert/{certificate_id}"));
        let attached = state.thing_principals.get(client_id).is_some_and(|ps| ps.contains(&cert_arn));
        let thing = if attached { state.things.get(client_id) } else { None };
        AuthContext {
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            client_id: Some(client_id.to_string()),
            thing_name: thing.map(|t| t.name.clone()),
            thing_type_name: thing.and_then(|t| t.thing_type_name.clone()),
            thing_attributes: thing.map(|t| t.attributes.clone()).unwrap_or_default(),
            is_attached: thing.is_some(),
            certificate_id: Some(certificate_id.to_string()),
            certificate_subject: state.certificates.get(certificate_id).map(|c| c.subject.clone()).unwrap_or_default(),
            credentials_iot: None,
        }
    }

    /// The policies that apply to a connection: those attached to its
    /// certificate, plus those of the thing groups (and their parents) of the
    /// thing it speaks for.
    fn policies_in(&self, state: &State, certificate_id: &str, thing: Option<&str>) -> Vec<Arc<PolicyDocument>> {
        let mut names: BTreeSet<&String> = BTreeSet::new();
        let cert_arn = self.arn(&format!("cert/{certificate_id}"));
        names.extend(state.policy_targets.get(&cert_arn).into_iter().flatten());
        if let Some(thing) = thing {
            for group in state.groups_of_thing(thing) {
                names.extend(state.policy_targets.get(&group.arn).into_iter().flatten());
            }
        }
        names.into_iter().filter_map(|n| state.policies.get(n).map(|(_, d)| d.clone())).collect()
    }

    /// Evaluates a Greengrass data-plane action for a certificate (AWS IoT Greengrass V2
    /// Developer Guide, "AWS IoT policies for data plane operations"): the certificate must be
    /// ACTIVE, and only the policies attached to the certificate count (thing-group policies do
    /// not grant data-plane access, thing policy variables are not supported). `resource` is a
    /// full ARN, or `*` for actions without a resource type.
    pub fn authorize_greengrass(
        &self,
        certificate_id: &str,
        action: cloud_api::policy::GreengrassAction,
        resource: &str,
    ) -> Decision {
        let state = self.read();
        match state.certificates.get(certificate_id) {
            Some(c) if c.status == CertificateStatus::Active => {}
            _ => return Decision::ImplicitDeny,
        }
        let docs = self.policies_in(&state, certificate_id, None);
        let ctx = AuthContext {
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            certificate_id: Some(certificate_id.to_string()),
            certificate_subject: state.certificates.get(certificate_id).map(|c| c.subject.clone()).unwrap_or_default(),
            ..AuthContext::default()
        };
        drop(state);
        let docs: Vec<PolicyDocument> = docs.iter().map(|d| (**d).clone()).collect();
        cloud_api::policy::evaluate_greengrass(&docs, action, resource, &ctx)
    }

    /// Evaluates the policies attached to the certificate (and to groups of its thing) for one operation.
    pub fn authorize(&self, req: &AuthRequest<'_>) -> Decision {
        let state = self.read();
        match state.certificates.get(req.certificate_id) {
            // An expired certificate (a provisioning claim after its five minutes) is refused,
            // by the registry's clock.
            Some(c) if c.status == CertificateStatus::Active && c.not_after >= self.clock.now_secs() => {}
            _ => return Decision::ImplicitDeny,
        }
        let ctx = self.context_in(&state, req.certificate_id, req.client_id);
        let docs = self.policies_in(&state, req.certificate_id, ctx.thing_name.as_deref());
        drop(state);
        // Evaluating each document alone and combining is the same as evaluating
        // them together: any explicit Deny wins, then any Allow, else default deny.
        let resource = self.arn(req.resource);
        let mut decision = Decision::ImplicitDeny;
        for doc in &docs {
            match cloud_api::policy::evaluate(std::slice::from_ref(&**doc), req.action, &resource, &ctx) {
                Decision::ExplicitDeny => return Decision::ExplicitDeny,
                Decision::Allow => decision = Decision::Allow,
                Decision::ImplicitDeny => {}
            }
        }
        decision
    }
}

fn thing_not_found(name: &str) -> RegistryError {
    RegistryError::NotFound(format!("Thing {name} cannot be found."))
}

fn group_not_found(name: &str) -> RegistryError {
    RegistryError::NotFound(format!("Thing Group {name} cannot be found."))
}

fn policy_not_found(name: &str) -> RegistryError {
    RegistryError::NotFound(format!("Policy not found (name={name})"))
}

fn cert_not_found(id: &str) -> RegistryError {
    RegistryError::NotFound(format!("The certificate given in the principal does not exist. (id={id})"))
}

/// One page of `items` (already sorted by key) after the request's token, and the next token.
fn paginate<'a, T: Clone + 'a>(
    items: impl Iterator<Item = &'a T>,
    request: &PageRequest,
    key: impl Fn(&T) -> String,
) -> Result<(Vec<T>, Option<String>), RegistryError> {
    let page = request.max_results.unwrap_or(50);
    if page == 0 || page > 250 {
        return Err(RegistryError::InvalidRequest("maxResults must be between 1 and 250".into()));
    }
    let token = request.next_token.as_deref();
    let mut out = Vec::with_capacity(page);
    let mut more = false;
    for item in items {
        if let Some(t) = token
            && key(item).as_str() <= t
        {
            continue;
        }
        if out.len() == page {
            more = true;
            break;
        }
        out.push(item.clone());
    }
    let next = if more { out.last().map(&key) } else { None };
    Ok((out, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn registry() -> (Registry, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
        let store = Store::open(&dir.path().join("state.sqlite")).unwrap();
        (Registry::open(store, ca, crate::time::system(), "us-east-1", "000000000000").unwrap(), dir)
    }

    pub(super) fn reopen(dir: &tempfile::TempDir) -> Registry {
        let ca = Arc::new(LocalCa::load_or_create(&dir.path().join("ca")).unwrap());
        let store = Store::open(&dir.path().join("state.sqlite")).unwrap();
        Registry::open(store, ca, crate::time::system(), "us-east-1", "000000000000").unwrap()
    }

    pub(super) const THING_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"iot:Connect","Resource":"arn:aws:iot:us-east-1:000000000000:client/${iot:Connection.Thing.ThingName}"},
        {"Effect":"Allow","Action":["iot:Publish","iot:Receive"],"Resource":"arn:aws:iot:us-east-1:000000000000:topic/dt/${iot:Connection.Thing.ThingName}/*"}]}"#;

    #[test]
    fn create_thing_is_idempotent_but_refuses_different_attributes() {
        let (r, _d) = registry();
        let a = r.create_thing("pump-1", None, BTreeMap::from([("site".into(), "north".into())])).unwrap();
        let b = r.create_thing("pump-1", None, BTreeMap::from([("site".into(), "north".into())])).unwrap();
        assert_eq!(a, b);
        let err = r.create_thing("pump-1", None, BTreeMap::new()).unwrap_err();
        assert!(
            matches!(err, RegistryError::AlreadyExists { ref resource_arn, .. } if resource_arn == &a.arn),
            "{err:?}"
        );
        assert!(matches!(r.create_thing("bad name", None, BTreeMap::new()), Err(RegistryError::InvalidRequest(_))));
    }

    #[test]
    fn update_thing_merges_attributes_and_checks_expected_version() {
        let (r, _d) = registry();
        r.create_thing("t", None, BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])).unwrap();
        r.update_thing(
            "t",
            None,
            false,
            Some((BTreeMap::from([("a".into(), "".into()), ("c".into(), "3".into())]), true)),
            Some(1),
        )
        .unwrap();
        let t = r.describe_thing("t").unwrap();
        assert_eq!(t.attributes, BTreeMap::from([("b".into(), "2".into()), ("c".into(), "3".into())]));
        assert_eq!(t.version, 2);
        assert!(matches!(r.update_thing("t", None, false, None, Some(1)), Err(RegistryError::VersionConflict(_))));
    }

    #[test]
    fn list_things_pages_and_filters() {
        let (r, _d) = registry();
        for i in 0..5 {
            let site = if i % 2 == 0 { "north" } else { "south" };
            r.create_thing(&format!("t{i}"), None, BTreeMap::from([("site".into(), site.into())])).unwrap();
        }
        let page = |next_token| ListThingsQuery {
            page: PageRequest { next_token, max_results: Some(2) },
            ..Default::default()
        };
        let (page1, token) = r.list_things(&page(None)).unwrap();
        assert_eq!(page1.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["t0", "t1"]);
        let (page2, _) = r.list_things(&page(token)).unwrap();
        assert_eq!(page2.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["t2", "t3"]);
        let (north, none) = r
            .list_things(&ListThingsQuery {
                attribute_name: Some("site".into()),
                attribute_value: Some("north".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(north.len(), 3);
        assert_eq!(none, None);
    }

    #[test]
    fn certificates_of_another_issuer_register_once_keep_their_validity_and_list_their_things() {
        let (r, _d) = registry();
        let mut params = rcgen::CertificateParams::new(vec!["elsewhere".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let pem = params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem();
        let cert = r.register_certificate_without_ca(&pem, CertificateStatus::Active).unwrap();
        assert_eq!((cert.status, cert.not_after), (CertificateStatus::Active, 1_925_078_400));
        assert_eq!(r.describe_certificate(&cert.id).unwrap().pem, pem);
        let again = r.register_certificate_without_ca(&pem, CertificateStatus::Inactive).unwrap_err();
        assert!(matches!(again, RegistryError::AlreadyExists { ref resource_id, .. } if resource_id == &cert.id));
        for bad in ["", "junk", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"] {
            let err = r.register_certificate_without_ca(bad, CertificateStatus::Active).unwrap_err();
            assert!(matches!(err, RegistryError::InvalidRequest(_)), "{bad:?}: {err:?}");
        }
        for thing in ["a", "b"] {
            r.create_thing(thing, None, BTreeMap::new()).unwrap();
            r.attach_thing_principal(thing, &cert.arn).unwrap();
        }
        assert_eq!(r.list_principal_things(&cert.arn), ["a", "b"]);
    }

    #[test]
    fn certificate_lifecycle_follows_aws_rules_and_is_broadcast() {
        let (r, _d) = registry();
        let mut events = r.events();
        let (cert, keys) = r.create_keys_and_certificate(true).unwrap();
        assert!(keys.private_key_pem.contains("PRIVATE KEY"));
        assert_eq!(cert.id, crate::ca::certificate_id(&crate::ca::pem_to_der(&cert.pem).unwrap()));
        assert!(matches!(r.delete_certificate(&cert.id, false), Err(RegistryError::CertificateState(_))));
        r.update_certificate(&cert.id, CertificateStatus::Inactive).unwrap();
        assert_eq!(
            events.try_recv().unwrap(),
            RegistryEvent::CertificateStatusChanged {
                certificate_id: cert.id.clone(),
                status: CertificateStatus::Inactive
            }
        );
        r.create_policy("p", THING_POLICY).unwrap();
        r.attach_policy("p", &cert.arn).unwrap();
        assert!(matches!(r.delete_certificate(&cert.id, false), Err(RegistryError::DeleteConflict(_))));
        r.update_certificate(&cert.id, CertificateStatus::Revoked).unwrap();
        assert!(matches!(
            r.update_certificate(&cert.id, CertificateStatus::Active),
            Err(RegistryError::CertificateState(_))
        ));
        r.delete_certificate(&cert.id, true).unwrap();
        assert!(matches!(r.describe_certificate(&cert.id), Err(RegistryError::NotFound(_))));
        assert!(r.list_attached_policies(&cert.arn).is_err());
        r.delete_policy("p").unwrap();
    }

    #[test]
    fn policies_are_validated_and_protected_while_attached() {
        let (r, _d) = registry();
        assert!(matches!(r.create_policy("bad", "{not json"), Err(RegistryError::MalformedPolicy(_))));
        r.create_policy("p", THING_POLICY).unwrap();
        assert!(matches!(r.create_policy("p", THING_POLICY), Err(RegistryError::AlreadyExists { .. })));
        let (cert, _) = r.create_keys_and_certificate(true).unwrap();
        r.attach_policy("p", &cert.arn).unwrap();
        assert!(matches!(r.delete_policy("p"), Err(RegistryError::DeleteConflict(_))));
        assert_eq!(r.list_attached_policies(&cert.arn).unwrap().len(), 1);
        r.detach_policy("p", &cert.arn).unwrap();
        r.delete_policy("p").unwrap();
        assert!(matches!(r.get_policy("p"), Err(RegistryError::NotFound(_))));
    }

    #[test]
    fn thing_scoped_policy_authorizes_only_the_attached_thing() {
        let (r, _d) = registry();
        r.create_thing("pump-1", None, BTreeMap::new()).unwrap();
        r.create_policy("p", THING_POLICY).unwrap();
        let (cert, _) = r.create_keys_and_certificate(true).unwrap();
        r.attach_policy("p", &cert.arn).unwrap();
        let req = |client_id: &'static str, action, resource: &'static str| AuthRequest {
            certificate_id: Box::leak(cert.id.clone().into_boxed_str()),
            client_id,
            action,
            resource,
        };
        // Not yet attached to the thing: the thing variable does not resolve.
        assert!(!r.authorize(&req("pump-1", Action::Connect, "client/pump-1")).is_allowed());
        r.attach_thing_principal("pump-1", &cert.arn).unwrap();
        assert!(r.authorize(&req("pump-1", Action::Connect, "client/pump-1")).is_allowed());
        assert!(r.authorize(&req("pump-1", Action::Publish, "topic/dt/pump-1/telemetry")).is_allowed());
        assert!(!r.authorize(&req("pump-1", Action::Publish, "topic/dt/pump-2/telemetry")).is_allowed());
        assert!(!r.authorize(&req("pump-2", Action::Connect, "client/pump-2")).is_allowed());
        r.update_certificate(&cert.id, CertificateStatus::Inactive).unwrap();
        assert!(!r.authorize(&req("pump-1", Action::Connect, "client/pump-1")).is_allowed(), "inactive certificate");
    }

    #[test]
    fn group_policies_apply_to_member_things() {
        let (r, _d) = registry();
        r.create_thing("pump-1", None, BTreeMap::new()).unwrap();
        r.create_thing_group("site", None, None, BTreeMap::new()).unwrap();
        r.create_thing_group("line-a", Some("site"), None, BTreeMap::new()).unwrap();
        r.add_thing_to_thing_group("line-a", "pump-1").unwrap();
        r.create_policy("p", THING_POLICY).unwrap();
        let site = r.describe_thing_group("site").unwrap();
        r.attach_policy("p", &site.arn).unwrap();
        let (cert, _) = r.create_keys_and_certificate(true).unwrap();
        r.attach_thing_principal("pump-1", &cert.arn).unwrap();
        let req = AuthRequest {
            certificate_id: &cert.id,
            client_id: "pump-1",
            action: Action::Connect,
            resource: "client/pump-1",
        };
        assert!(r.authorize(&req).is_allowed(), "policy of the parent group applies");
    }

    #[test]
    fn registry_survives_a_restart() {
        let (r, dir) = registry();
        r.create_thing_type("pump", Some("centrifugal"), vec![]).unwrap();
        r.create_thing("pump-1", Some("pump"), BTreeMap::new()).unwrap();
        r.create_policy("p", THING_POLICY).unwrap();
        let (cert, _) = r.create_keys_and_certificate(true).unwrap();
        r.attach_policy("p", &cert.arn).unwrap();
        r.attach_thing_principal("pump-1", &cert.arn).unwrap();
        drop(r);
        let r = reopen(&dir);
        assert_eq!(r.describe_thing("pump-1").unwrap().thing_type_name.as_deref(), Some("pump"));
        assert_eq!(r.list_thing_principals("pump-1").unwrap(), vec![cert.arn.clone()]);
        assert_eq!(r.list_attached_policies(&cert.arn).unwrap()[0].name, "p");
        assert_eq!(r.certificate_status(&cert.id), Some(CertificateStatus::Active));
    }

    #[test]
    fn delete_thing_requires_detached_principals_and_leaves_groups() {
        let (r, _d) = registry();
        r.create_thing("t", None, BTreeMap::new()).unwrap();
        r.create_thing_group("g", None, None, BTreeMap::new()).unwrap();
        r.add_thing_to_thing_group("g", "t").unwrap();
        let (cert, _) = r.create_keys_and_certificate(true).unwrap();
        r.attach_thing_principal("t", &cert.arn).unwrap();
        assert!(matches!(r.delete_thing("t", None), Err(RegistryError::InvalidRequest(_))));
        r.detach_thing_principal("t", &cert.arn).unwrap();
        r.delete_thing("t", None).unwrap();
        r.delete_thing("t", None).unwrap();
        assert!(r.things_in_thing_group("g", false).unwrap().is_empty());
    }
}
