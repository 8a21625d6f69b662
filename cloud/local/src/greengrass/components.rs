//! Component versions: what CreateComponentVersion stores, and what the other operations, the
//! data plane and (later) deployments read.
//!
//! A version is checked when it is created, synchronously: the recipe must parse and pass the
//! recipe engine's checks ([`greengrass_recipe::RecipeLoader`], with the GDK schema when one is
//! found), or the request fails with a `ValidationException` and nothing is stored. A valid
//! recipe is stored; each `s3://bucket/key` artifact must then exist in the local S3, or the
//! version is stored FAILED with AWS's status (`errors` maps the artifact URI to the reason).
//! As AWS does, the stored recipe gains each S3 artifact's `Digest` (base64 SHA-256) and
//! `Algorithm` (`SHA-256`) when the recipe gives none. CreateComponentVersion answers
//! `REQUESTED` like AWS; DescribeComponent shows the outcome (DEPLOYABLE or FAILED) at once.
//!
//! State: in memory, written through to the [`Store`] (kinds `gg_component_version` keyed
//! `name\nversion`, JSON of [`ComponentVersionRecord`]; `gg_client_token` keyed by token). The
//! records are re-parsed with the recipe engine when the local cloud starts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use greengrass_recipe::{ComponentVersion, Recipe, RecipeFormat, RecipeLoader};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::arn::{ComponentArn, component_arn, component_version_arn};
use super::error::{GreengrassError, ValidationReason};
use crate::s3::{ObjectStore, ObjectStoreError};
use crate::store::{Op, Store};
use crate::time::SharedClock;

const VERSIONS: &str = "gg_component_version";
const TOKENS: &str = "gg_client_token";
/// How long a `clientToken` answers with the first response (the model: "up to 8 hours").
const TOKEN_LIFETIME_MS: u64 = 8 * 3600 * 1000;
/// Component names AWS keeps for its own components.
const RESERVED_PREFIX: &str = "aws.greengrass";

/// `CloudComponentState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ComponentState {
    /// Accepted, not yet checked (what CreateComponentVersion answers).
    Requested,
    /// Being checked (AWS only; never stored here).
    Initiated,
    /// Checked: cores may deploy it.
    Deployable,
    /// An artifact could not be reached; `errors` says which.
    Failed,
    /// Deprecated (AWS only; never stored here).
    Deprecated,
}

/// `CloudComponentStatus` (without the vendor guidance of public components).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// `componentState`.
    pub component_state: ComponentState,
    /// `message`.
    pub message: String,
    /// `errors`: artifact URI → why it failed.
    pub errors: BTreeMap<String, String>,
}

/// `ComponentPlatform`: a manifest's platform as DescribeComponent shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentPlatform {
    /// `name`: the manifest's `Name`, else made from `os` and `architecture` like AWS does.
    pub name: String,
    /// `attributes`: the manifest's `Platform`, values as written.
    pub attributes: BTreeMap<String, String>,
}

/// An artifact of a stored version, with what S3 said about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredArtifact {
    /// The recipe's `URI`.
    pub uri: String,
    /// Bucket and key of an `s3://` URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<(String, String)>,
    /// Lower-case hex SHA-256 of the object, when it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Size in bytes, when it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

impl StoredArtifact {
    /// The artifact's name for GetComponentVersionArtifact: the URI after its scheme
    /// (`greengrass:Some.zip` → `Some.zip`; `s3://b/k` → `b/k`).
    pub fn name(&self) -> &str {
        let rest = self.uri.split_once(':').map_or(self.uri.as_str(), |(_, rest)| rest);
        rest.trim_start_matches('/')
    }

    /// The last segment of the URI (the file name the core stores it under).
    pub fn file_name(&self) -> &str {
        self.uri.rsplit('/').next().unwrap_or(&self.uri)
    }
}

/// One stored component version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentVersionRecord {
    /// `ComponentName`.
    pub name: String,
    /// `ComponentVersion`.
    pub version: String,
    /// The version ARN.
    pub arn: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// `ComponentPublisher`.
    pub publisher: Option<String>,
    /// `ComponentDescription`.
    pub description: Option<String>,
    /// Status.
    pub status: ComponentStatus,
    /// One entry per manifest.
    pub platforms: Vec<ComponentPlatform>,
    /// The recipe document as stored (keys as written, digests added).
    pub recipe: Value,
    /// Every distinct artifact URI of the manifests.
    pub artifacts: Vec<StoredArtifact>,
    /// `tags`.
    pub tags: BTreeMap<String, String>,
}

impl ComponentVersionRecord {
    /// Whether cores may deploy it.
    pub fn is_deployable(&self) -> bool {
        self.status.component_state == ComponentState::Deployable
    }
}

/// A stored version with its parsed recipe.
#[derive(Debug, Clone)]
pub struct ComponentVersionEntry {
    /// The record.
    pub record: ComponentVersionRecord,
    /// Its recipe, parsed by the recipe engine.
    pub recipe: Recipe,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenRecord {
    /// SHA-256 of the request's recipe and tags: a reused token must come with the same request.
    request_sha256: String,
    name: String,
    version: String,
    created_ms: u64,
}

/// What CreateComponentVersion answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The version ARN.
    pub arn: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Creation time, ms.
    pub created_ms: u64,
}

/// What deployments (and the data plane) need from the component store, and nothing else: the
/// interface below both. Deployments check that every component version they name exists and
/// is DEPLOYABLE, and read its recipe and artifacts.
pub trait ComponentCatalog: Send + Sync + std::fmt::Debug {
    /// One version, by name and version; `None` when it does not exist.
    fn component_version(&self, name: &str, version: &str) -> Option<ComponentVersionEntry>;

    /// Every version of a component, highest first; empty when the component does not exist.
    fn component_versions(&self, name: &str) -> Vec<ComponentVersionEntry>;
}

/// The account of public (AWS-published) component ARNs.
pub const PUBLIC_ACCOUNT: &str = "aws";

/// The component store.
#[derive(Clone)]
pub struct Components {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    objects: Arc<dyn ObjectStore>,
    loader: RecipeLoader,
    clock: SharedClock,
    region: String,
    account: String,
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// name → version → entry.
    versions: BTreeMap<String, BTreeMap<ComponentVersion, ComponentVersionEntry>>,
    tokens: HashMap<String, TokenRecord>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components").field("region", &self.inner.region).finish_non_exhaustive()
    }
}

/// A version's key in the store and its place in memory.
fn record_key(name: &str, version: &str) -> String {
    format!("{name}\n{version}")
}

impl Components {
    /// Opens the store: loads and re-parses every stored version. `loader` checks new recipes
    /// (stored ones are re-read with the typed checks only, so a schema change never loses
    /// them); `objects` is S3, where artifacts must exist.
    pub fn open(
        store: Store,
        objects: Arc<dyn ObjectStore>,
        loader: RecipeLoader,
        clock: SharedClock,
        region: &str,
        account: &str,
    ) -> anyhow::Result<Self> {
        let mut state = State::default();
        let typed =
            RecipeLoader::without_schema("stored recipe, checked when it was created").allow_reserved_names(true);
        for (key, json) in store.all(VERSIONS)? {
            let record: ComponentVersionRecord = serde_json::from_str(&json)
                .map_err(|e| anyhow::anyhow!("stored component version {key:?} is not readable: {e}"))?;
            let recipe = typed
                .load_document(&record.recipe, Some(&key))
                .map_err(|e| anyhow::anyhow!("stored component version {key:?}: {e}"))?
                .recipe;
            state
                .versions
                .entry(record.name.clone())
                .or_default()
                .insert(recipe.version.clone(), ComponentVersionEntry { record, recipe });
        }
        for (token, json) in store.all(TOKENS)? {
            if let Ok(t) = serde_json::from_str::<TokenRecord>(&json) {
                state.tokens.insert(token, t);
            }
        }
        Ok(Components {
            inner: Arc::new(Inner {
                store,
                objects,
                loader,
                clock,
                region: region.to_string(),
                account: account.to_string(),
                state: RwLock::new(state),
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The region of the ARNs.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The account of the ARNs.
    pub fn account(&self) -> &str {
        &self.inner.account
    }

    /// CreateComponentVersion from an inline recipe (the decoded blob).
    pub fn create(
        &self,
        inline_recipe: &[u8],
        tags: BTreeMap<String, String>,
        client_token: Option<&str>,
    ) -> Result<Created, GreengrassError> {
        self.create_as(inline_recipe, tags, client_token, false)
    }

    /// Publishes a **public** component version, as AWS publishes its own (`aws.greengrass.Nucleus`
    /// and the other `aws.greengrass.*` components): the version ARN's account is `aws`, and the
    /// reserved name prefix is accepted. Not an AWS API (AWS publishes these itself); the local
    /// cloud's operator uses it to stand in for AWS's catalog, e.g. to offer a new nucleus
    /// version. Cores resolve public versions like their own account's.
    pub fn create_public(&self, inline_recipe: &[u8]) -> Result<Created, GreengrassError> {
        self.create_as(inline_recipe, BTreeMap::new(), None, true)
    }

    fn create_as(
        &self,
        inline_recipe: &[u8],
        tags: BTreeMap<String, String>,
        client_token: Option<&str>,
        public: bool,
    ) -> Result<Created, GreengrassError> {
        let text = std::str::from_utf8(inline_recipe)
            .map_err(|e| GreengrassError::cannot_parse(format!("inlineRecipe is not UTF-8 text: {e}")))?;
        let format = if text.trim_start().starts_with('{') { RecipeFormat::Json } else { RecipeFormat::Yaml };
        let mut doc = greengrass_recipe::parse::parse_document(text, format, "inlineRecipe")
            .map_err(|e| GreengrassError::cannot_parse(e.to_string()))?;
        if let Some(name) = top_level_string(&doc, "ComponentName")
            && name.to_ascii_lowercase().starts_with(RESERVED_PREFIX)
            && !public
        {
            return Err(GreengrassError::field(
                "ComponentName",
                format!(
                    "component name {name:?} starts with {RESERVED_PREFIX:?}, which is reserved for AWS components"
                ),
            ));
        }
        let loaded = if public {
            self.inner.loader.load_document_as_aws(&doc, Some("inlineRecipe"))
        } else {
            self.inner.loader.load_document(&doc, Some("inlineRecipe"))
        };
        let recipe = loaded.map_err(|e| {
            let fields: Vec<(String, String)> = e
                .faults()
                .iter()
                .map(|f| {
                    (if f.path.is_empty() { "inlineRecipe".to_string() } else { f.path.clone() }, f.message.clone())
                })
                .collect();
            GreengrassError::Validation {
                message: format!("The recipe is not valid: {e}"),
                reason: ValidationReason::FieldValidationFailed,
                fields,
            }
        })?;
        let recipe = recipe.recipe;
        let (name, version) = (recipe.name.clone(), recipe.version.to_string());
        let now = self.inner.clock.now_millis();
        let request_sha256 = request_digest(inline_recipe, &tags);

        if let Some(token) = client_token {
            let state = self.read();
            if let Some(t) = state.tokens.get(token).filter(|t| now.saturating_sub(t.created_ms) < TOKEN_LIFETIME_MS) {
                if t.request_sha256 != request_sha256 {
                    return Err(GreengrassError::Conflict {
                        message: format!("clientToken {token:?} was already used with a different request"),
                        resource_id: token.to_string(),
                        resource_type: "clientToken".into(),
                    });
                }
                if let Some(e) = state.versions.get(&t.name).and_then(|v| v.get(&recipe.version)) {
                    return Ok(created(&e.record));
                }
            }
        }

        let owner = if public { PUBLIC_ACCOUNT } else { self.inner.account.as_str() };
        let arn = component_version_arn(&self.inner.region, owner, &name, &version);
        let (artifacts, errors) = self.check_artifacts(&recipe, &mut doc)?;
        let status = if errors.is_empty() {
            ComponentStatus { component_state: ComponentState::Deployable, message: "NONE".into(), errors }
        } else {
            ComponentStatus {
                component_state: ComponentState::Failed,
                message: format!(
                    "Failed to create component version {name} {version}: {} artifact(s) could not be accessed",
                    errors.len()
                ),
                errors,
            }
        };
        let record = ComponentVersionRecord {
            name: name.clone(),
            version: version.clone(),
            arn,
            created_ms: now,
            publisher: recipe.publisher.clone(),
            description: recipe.description.clone(),
            status,
            platforms: platforms_of(&doc),
            recipe: doc,
            artifacts,
            tags,
        };
        let mut state = self.write();
        if let Some(existing) = state.versions.get(&name).and_then(|v| v.get(&recipe.version)) {
            let shown = serde_json::to_value(existing.record.status.component_state).unwrap_or_default();
            return Err(GreengrassError::Conflict {
                message: format!(
                    "Component [{name} : {version}] for account [{}] already exists with state: [{}]",
                    self.inner.account,
                    shown.as_str().unwrap_or_default()
                ),
                resource_id: existing.record.arn.clone(),
                resource_type: "componentVersion".into(),
            });
        }
        let mut ops = vec![Op::Put { kind: VERSIONS, key: record_key(&name, &version), value: encode(&record)? }];
        let token = client_token.map(|t| {
            (
                t.to_string(),
                TokenRecord { request_sha256, name: name.clone(), version: version.clone(), created_ms: now },
            )
        });
        if let Some((t, rec)) = &token {
            ops.push(Op::Put { kind: TOKENS, key: t.clone(), value: encode(rec)? });
        }
        self.inner.store.apply(&ops).map_err(|e| GreengrassError::Internal(format!("storing the component: {e}")))?;
        let answer = created(&record);
        state
            .versions
            .entry(name)
            .or_default()
            .insert(recipe.version.clone(), ComponentVersionEntry { record, recipe });
        if let Some((t, rec)) = token {
            state.tokens.insert(t, rec);
        }
        Ok(answer)
    }

    /// Checks each `s3://` artifact in S3; returns the artifacts and the errors by URI, and adds
    /// `Digest`/`Algorithm` to the document's artifacts that lack them.
    fn check_artifacts(
        &self,
        recipe: &Recipe,
        doc: &mut Value,
    ) -> Result<(Vec<StoredArtifact>, BTreeMap<String, String>), GreengrassError> {
        let mut artifacts: Vec<StoredArtifact> = Vec::new();
        let mut errors = BTreeMap::new();
        for a in recipe.manifests.iter().flat_map(|m| &m.artifacts) {
            if artifacts.iter().any(|s| s.uri == a.uri) {
                continue;
            }
            let mut stored = StoredArtifact { uri: a.uri.clone(), s3: None, sha256: None, size: None };
            if let Some(rest) = a.uri.strip_prefix("s3://") {
                match rest.split_once('/').filter(|(b, k)| !b.is_empty() && !k.is_empty()) {
                    None => {
                        errors.insert(a.uri.clone(), "The artifact URI is not s3://BUCKET/KEY".to_string());
                    }
                    Some((bucket, key)) => {
                        stored.s3 = Some((bucket.to_string(), key.to_string()));
                        match self.inner.objects.head(bucket, key) {
                            Ok(Some(meta)) => {
                                let want = hex::decode(&meta.sha256)
                                    .map(|d| base64::engine::general_purpose::STANDARD.encode(d));
                                match (&a.digest, want) {
                                    (Some(given), Ok(want)) if *given != want => {
                                        errors.insert(
                                            a.uri.clone(),
                                            format!("The recipe's Digest {given} differs from the object's SHA-256 digest {want}"),
                                        );
                                    }
                                    _ => {}
                                }
                                stored.sha256 = Some(meta.sha256.clone());
                                stored.size = Some(meta.size);
                            }
                            Ok(None) => {
                                errors.insert(
                                    a.uri.clone(),
                                    format!("The artifact {} does not exist in bucket {bucket}", key),
                                );
                            }
                            Err(ObjectStoreError::NoSuchBucket(_)) => {
                                errors.insert(a.uri.clone(), format!("The bucket {bucket} does not exist"));
                            }
                            Err(e) => return Err(GreengrassError::Internal(format!("reading {}: {e}", a.uri))),
                        }
                    }
                }
            }
            artifacts.push(stored);
        }
        for a in &artifacts {
            if let Some(sha) = &a.sha256
                && let Ok(bytes) = hex::decode(sha)
            {
                add_digest(doc, &a.uri, &base64::engine::general_purpose::STANDARD.encode(bytes));
            }
        }
        Ok((artifacts, errors))
    }

    /// The version an ARN names, or `ResourceNotFoundException`.
    pub fn get(&self, arn: &str) -> Result<ComponentVersionEntry, GreengrassError> {
        let parsed = ComponentArn::parse_version(arn).map_err(|e| GreengrassError::field("arn", e.to_string()))?;
        let version = parsed.version.clone().unwrap_or_default();
        self.lookup(&parsed, &version).ok_or_else(|| {
            GreengrassError::not_found(
                format!("Component version {} {version} does not exist (arn {arn})", parsed.name),
                arn,
                "componentVersion",
            )
        })
    }

    fn lookup(&self, arn: &ComponentArn, version: &str) -> Option<ComponentVersionEntry> {
        if arn.region != self.inner.region {
            return None;
        }
        // The version is the one of this account, or a public one (account `aws`).
        self.component_version(&arn.name, version)
            .filter(|e| ComponentArn::parse_version(&e.record.arn).is_ok_and(|stored| stored.account == arn.account))
    }

    /// DeleteComponent: removes the version (the artifacts stay in S3: they are the owner's).
    pub fn delete(&self, arn: &str) -> Result<(), GreengrassError> {
        let entry = self.get(arn)?;
        let (name, version) = (entry.record.name, entry.recipe.version);
        let mut state = self.write();
        self.inner
            .store
            .apply(&[Op::Delete { kind: VERSIONS, key: record_key(&name, version.as_str()) }])
            .map_err(|e| GreengrassError::Internal(format!("deleting the component: {e}")))?;
        if let Some(versions) = state.versions.get_mut(&name) {
            versions.remove(&version);
            if versions.is_empty() {
                state.versions.remove(&name);
            }
        }
        Ok(())
    }

    /// ListComponents: one summary per component, by name: (component ARN, name, its latest
    /// version), of the account's own components (scope PRIVATE, the default) or AWS's (PUBLIC).
    pub fn list(&self, public: bool) -> Vec<(String, String, ComponentVersionRecord)> {
        let owner = if public { PUBLIC_ACCOUNT } else { self.inner.account.as_str() };
        self.read()
            .versions
            .iter()
            .filter_map(|(name, versions)| {
                let latest = versions
                    .values()
                    .rev()
                    .find(|e| ComponentArn::parse_version(&e.record.arn).is_ok_and(|a| a.account == owner))?;
                Some((component_arn(&self.inner.region, owner, name), name.clone(), latest.record.clone()))
            })
            .collect()
    }

    /// ListComponentVersions: the versions of the component an ARN names, highest first.
    pub fn list_versions(&self, arn: &str) -> Result<Vec<ComponentVersionRecord>, GreengrassError> {
        let parsed = ComponentArn::parse_component(arn).map_err(|e| GreengrassError::field("arn", e.to_string()))?;
        let owned = |e: &ComponentVersionEntry| {
            ComponentArn::parse_version(&e.record.arn).is_ok_and(|stored| stored.account == parsed.account)
        };
        let versions = if parsed.region == self.inner.region {
            self.component_versions(&parsed.name).into_iter().filter(owned).collect()
        } else {
            Vec::new()
        };
        if versions.is_empty() {
            return Err(GreengrassError::not_found(
                format!("Component {} does not exist (arn {arn})", parsed.name),
                arn,
                "component",
            ));
        }
        Ok(versions.into_iter().map(|e| e.record).collect())
    }
}

impl ComponentCatalog for Components {
    fn component_version(&self, name: &str, version: &str) -> Option<ComponentVersionEntry> {
        let version = ComponentVersion::parse(version).ok()?;
        self.read().versions.get(name)?.get(&version).cloned()
    }

    fn component_versions(&self, name: &str) -> Vec<ComponentVersionEntry> {
        self.read().versions.get(name).map(|v| v.values().rev().cloned().collect()).unwrap_or_default()
    }
}

fn created(record: &ComponentVersionRecord) -> Created {
    Created {
        arn: record.arn.clone(),
        name: record.name.clone(),
        version: record.version.clone(),
        created_ms: record.created_ms,
    }
}

fn request_digest(recipe: &[u8], tags: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(recipe);
    for (k, v) in tags {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

/// A member of an object, its key matched without regard to case (recipe keys are case-insensitive).
fn member<'v>(obj: &'v Value, key: &str) -> Option<&'v Value> {
    obj.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn top_level_string<'v>(doc: &'v Value, key: &str) -> Option<&'v str> {
    member(doc, key)?.as_str()
}

/// Adds `Digest` and `Algorithm` to every artifact of the document whose URI is `uri` and that
/// has no `Digest` yet.
fn add_digest(doc: &mut Value, uri: &str, digest: &str) {
    let Some(manifests) = array_member_mut(doc, "Manifests") else { return };
    for manifest in manifests {
        let Some(artifacts) = array_member_mut(manifest, "Artifacts") else { continue };
        for artifact in artifacts {
            let same = member(artifact, "URI").and_then(Value::as_str) == Some(uri);
            let Some(obj) = artifact.as_object_mut() else { continue };
            if same && !obj.keys().any(|k| k.eq_ignore_ascii_case("Digest")) {
                obj.insert("Digest".into(), Value::String(digest.to_string()));
                if !obj.keys().any(|k| k.eq_ignore_ascii_case("Algorithm")) {
                    obj.insert("Algorithm".into(), Value::String("SHA-256".into()));
                }
            }
        }
    }
}

/// An array member of an object, its key matched without regard to case.
fn array_member_mut<'v>(obj: &'v mut Value, key: &str) -> Option<&'v mut Vec<Value>> {
    obj.as_object_mut()?.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(key))?.1.as_array_mut()
}

/// One `ComponentPlatform` per manifest: its `Platform` attributes as written, and its `Name`,
/// else a name made from `os` and `architecture` (the model: "IoT Greengrass creates a friendly
/// name from the os and architecture of the platform").
fn platforms_of(doc: &Value) -> Vec<ComponentPlatform> {
    let Some(manifests) = member(doc, "Manifests").and_then(Value::as_array) else { return Vec::new() };
    manifests
        .iter()
        .map(|m| {
            let attributes: BTreeMap<String, String> = member(m, "Platform")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                        .collect()
                })
                .unwrap_or_default();
            let name = member(m, "Name").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| {
                let os = attributes.get("os").map_or("all", String::as_str);
                match attributes.get("architecture") {
                    Some(arch) => format!("{os} {arch}"),
                    None => os.to_string(),
                }
            });
            ComponentPlatform { name, attributes }
        })
        .collect()
}

fn encode<T: Serialize>(value: &T) -> Result<String, GreengrassError> {
    serde_json::to_string(value).map_err(|e| GreengrassError::Internal(format!("encoding a record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digests_are_added_only_where_absent_whatever_the_key_case() {
        let mut doc = json!({"manifests": [
            {"artifacts": [{"uri": "s3://b/a.zip"}, {"URI": "s3://b/c", "Digest": "kept"}]},
            {"Artifacts": [{"Uri": "s3://b/a.zip", "algorithm": "SHA-256"}]}
        ]});
        add_digest(&mut doc, "s3://b/a.zip", "DIGEST");
        add_digest(&mut doc, "s3://b/c", "NEW");
        assert_eq!(
            doc["manifests"][0]["artifacts"][0],
            json!({"uri": "s3://b/a.zip", "Digest": "DIGEST", "Algorithm": "SHA-256"})
        );
        assert_eq!(doc["manifests"][0]["artifacts"][1]["Digest"], "kept");
        assert_eq!(
            doc["manifests"][1]["Artifacts"][0],
            json!({"Uri": "s3://b/a.zip", "algorithm": "SHA-256", "Digest": "DIGEST"})
        );
    }

    #[test]
    fn platforms_take_the_manifest_name_or_one_made_from_os_and_architecture() {
        let doc = json!({"Manifests": [
            {"Name": "Linux x86", "Platform": {"os": "linux", "architecture": "amd64"}},
            {"Platform": {"os": "linux", "architecture": "/aarch64|arm/"}},
            {"Platform": {"os": "windows"}},
            {"Lifecycle": {}}
        ]});
        let names: Vec<String> = platforms_of(&doc).into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["Linux x86", "linux /aarch64|arm/", "windows", "all"]);
        assert_eq!(platforms_of(&doc)[0].attributes["architecture"], "amd64");
    }

    /// S3 as a map of (bucket, key) → SHA-256 hex; one bucket, `b`.
    #[derive(Debug, Default)]
    struct FakeS3(std::sync::Mutex<HashMap<(String, String), String>>);

    impl ObjectStore for FakeS3 {
        fn head(&self, bucket: &str, key: &str) -> Result<Option<crate::s3::ObjectMeta>, ObjectStoreError> {
            if bucket != "b" {
                return Err(ObjectStoreError::NoSuchBucket(bucket.into()));
            }
            let objects = self.0.lock().unwrap();
            Ok(objects.get(&(bucket.to_string(), key.to_string())).map(|sha256| crate::s3::ObjectMeta {
                size: 1,
                etag: String::new(),
                sha256: sha256.clone(),
                content_type: String::new(),
                metadata: BTreeMap::new(),
                last_modified_ms: 0,
                parts_count: None,
                checksums: Default::default(),
            }))
        }

        fn presign_get(&self, _: &str, _: &str, _: std::time::Duration) -> Result<String, ObjectStoreError> {
            unreachable!("not used by the store")
        }

        fn get(&self, _: &str, _: &str) -> Result<Vec<u8>, ObjectStoreError> {
            unreachable!("not used by the store")
        }
    }

    #[derive(Debug)]
    struct At(std::sync::atomic::AtomicU64);

    impl crate::time::Clock for At {
        fn now_millis(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn store_with(objects: &[(&str, &str)]) -> (Components, Arc<At>) {
        let s3 = FakeS3::default();
        for (key, sha) in objects {
            s3.0.lock().unwrap().insert(("b".into(), key.to_string()), sha.to_string());
        }
        let clock = Arc::new(At(std::sync::atomic::AtomicU64::new(1_000)));
        let loader = RecipeLoader::without_schema("unit test: typed checks");
        let c = Components::open(
            Store::in_memory().unwrap(),
            Arc::new(s3),
            loader,
            clock.clone(),
            "us-east-1",
            "000000000000",
        )
        .unwrap();
        (c, clock)
    }

    fn recipe(version: &str, uri: &str) -> String {
        format!(
            r#"{{"RecipeFormatVersion":"2020-01-25","ComponentName":"com.example.A","ComponentVersion":"{version}",
               "Manifests":[{{"Lifecycle":{{"Run":"true"}},"Artifacts":[{{"URI":"{uri}"}}]}}]}}"#
        )
    }

    fn state(c: &Components, version: &str) -> ComponentState {
        c.component_version("com.example.A", version).unwrap().record.status.component_state
    }

    #[test]
    fn aws_publishes_public_versions_under_the_reserved_prefix_listed_in_scope_public_only() {
        let (c, _) = store_with(&[]);
        let nucleus = br#"{"RecipeFormatVersion":"2020-01-25","ComponentName":"aws.greengrass.Nucleus",
            "ComponentVersion":"2.15.0","ComponentType":"aws.greengrass.nucleus","Manifests":[{"Lifecycle":{}}]}"#;
        assert!(c.create(nucleus, BTreeMap::new(), None).is_err(), "an account may not publish it");
        let created = c.create_public(nucleus).expect("AWS may");
        assert_eq!(created.arn, "arn:aws:greengrass:us-east-1:aws:components:aws.greengrass.Nucleus:versions:2.15.0");
        assert_eq!(c.get(&created.arn).unwrap().record.name, "aws.greengrass.Nucleus");
        let own = "arn:aws:greengrass:us-east-1:000000000000:components:aws.greengrass.Nucleus:versions:2.15.0";
        assert!(c.get(own).is_err(), "not the account's own");
        assert!(c.list(false).is_empty(), "ListComponents shows the account's private components only");
        let public = c.list(true);
        let names: Vec<(&str, &str)> = public.iter().map(|(arn, name, _)| (arn.as_str(), name.as_str())).collect();
        assert_eq!(
            names,
            [("arn:aws:greengrass:us-east-1:aws:components:aws.greengrass.Nucleus", "aws.greengrass.Nucleus")],
            "scope PUBLIC shows AWS's"
        );
        let versions = c.list_versions("arn:aws:greengrass:us-east-1:aws:components:aws.greengrass.Nucleus").unwrap();
        assert_eq!(versions.iter().map(|v| v.version.as_str()).collect::<Vec<_>>(), ["2.15.0"]);
        let own = "arn:aws:greengrass:us-east-1:000000000000:components:aws.greengrass.Nucleus";
        assert!(c.list_versions(own).is_err(), "not under the account's own ARN");
    }

    #[test]
    fn malformed_or_invalid_recipes_are_validation_errors_and_store_nothing() {
        let (c, _) = store_with(&[]);
        let table: &[(&str, &[u8], ValidationReason)] = &[
            ("not UTF-8", b"\xff\xfe", ValidationReason::CannotParse),
            ("malformed JSON", b"{\"RecipeFormatVersion\": ", ValidationReason::CannotParse),
            ("malformed YAML", b"ComponentName: [unclosed\n", ValidationReason::CannotParse),
            (
                "no manifests",
                b"RecipeFormatVersion: '2020-01-25'\nComponentName: A\nComponentVersion: 1.0.0\n",
                ValidationReason::FieldValidationFailed,
            ),
            (
                "reserved name",
                b"RecipeFormatVersion: '2020-01-25'\nComponentName: aws.greengrass.X\nComponentVersion: 1.0.0\n",
                ValidationReason::FieldValidationFailed,
            ),
        ];
        for (why, text, want) in table {
            match c.create(text, BTreeMap::new(), None) {
                Err(GreengrassError::Validation { reason, .. }) => assert_eq!(reason, *want, "{why}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        assert!(c.list(false).is_empty());
    }

    #[test]
    fn artifacts_decide_deployable_or_failed_and_versions_conflict() {
        let sha = "ab".repeat(32);
        let (c, _) = store_with(&[("a.zip", &sha)]);
        c.create(recipe("1.0.0", "s3://b/a.zip").as_bytes(), BTreeMap::new(), None).unwrap();
        assert_eq!(state(&c, "1.0.0"), ComponentState::Deployable);
        let stored = &c.component_version("com.example.A", "1.0.0").unwrap().record;
        assert_eq!(stored.recipe["Manifests"][0]["Artifacts"][0]["Algorithm"], "SHA-256");
        for (version, uri) in [("1.0.1", "s3://b/missing"), ("1.0.2", "s3://nobucket/a.zip"), ("1.0.3", "s3://b")] {
            c.create(recipe(version, uri).as_bytes(), BTreeMap::new(), None).unwrap();
            let record = c.component_version("com.example.A", version).unwrap().record;
            assert_eq!(record.status.component_state, ComponentState::Failed, "{uri}");
            assert!(record.status.errors.contains_key(uri), "{uri}: {:?}", record.status.errors);
        }
        let again = c.create(recipe("1.0.0", "s3://b/a.zip").as_bytes(), BTreeMap::new(), None);
        assert!(matches!(again, Err(GreengrassError::Conflict { .. })), "{again:?}");
    }

    #[test]
    fn a_client_token_answers_the_same_request_again_for_eight_hours() {
        let (c, clock) = store_with(&[]);
        let text = recipe("1.0.0", "docker:hello");
        let first = c.create(text.as_bytes(), BTreeMap::new(), Some("t-1")).unwrap();
        assert_eq!(c.create(text.as_bytes(), BTreeMap::new(), Some("t-1")).unwrap(), first);
        let other = recipe("2.0.0", "docker:hello");
        assert!(matches!(
            c.create(other.as_bytes(), BTreeMap::new(), Some("t-1")),
            Err(GreengrassError::Conflict { .. })
        ));
        clock.0.store(1_000 + TOKEN_LIFETIME_MS, std::sync::atomic::Ordering::SeqCst);
        assert!(
            matches!(c.create(text.as_bytes(), BTreeMap::new(), Some("t-1")), Err(GreengrassError::Conflict { .. })),
            "after 8 hours the token is forgotten and the version exists"
        );
    }

    #[test]
    fn artifact_names_are_the_uri_after_the_scheme() {
        let a = |uri: &str| StoredArtifact { uri: uri.into(), s3: None, sha256: None, size: None };
        assert_eq!(a("greengrass:SomeArtifact.zip").name(), "SomeArtifact.zip");
        assert_eq!(a("s3://bucket/dir/file.bin").name(), "bucket/dir/file.bin");
        assert_eq!(a("s3://bucket/dir/file.bin").file_name(), "file.bin");
    }
}
