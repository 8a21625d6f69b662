//! Request and response shapes of the restJson1 wire protocol, and the
//! extractors that read URI labels, query strings and bodies without ever
//! answering with anything but an AWS error.
//!
//! Member names, locations and constraints are those of the service models
//! (`iot.json` and `iot-data-plane.json`, API version 2015-05-28). Timestamps
//! in restJson1 bodies are epoch seconds, sent as JSON numbers.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::AwsError;
use crate::registry::{PageRequest, ThingGroup};

// ---------------------------------------------------------------------------
// Extractors
// ---------------------------------------------------------------------------

/// The one URI label of a route (`{thingName}`, `{topic}`…), percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Label {
    type Rejection = AwsError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| AwsError::invalid_request(format!("invalid URI label: {}", e.body_text())))?;
        Ok(Label(value))
    }
}

/// The query string, with typed accessors that answer `InvalidRequestException`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = AwsError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| AwsError::invalid_request(format!("invalid query string: {}", e.body_text())))?;
        Ok(Params(map))
    }
}

impl Params {
    /// A string parameter.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A boolean parameter (`true`/`false`).
    pub fn bool(&self, name: &str) -> Result<Option<bool>, AwsError> {
        match self.str(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(AwsError::invalid_request(format!("{name} must be true or false, got {other:?}"))),
        }
    }

    /// `nextToken` and `maxResults` (1–250, the model's `RegistryMaxResults`);
    /// an empty token means the first page.
    pub fn page(&self) -> Result<PageRequest, AwsError> {
        Ok(PageRequest {
            next_token: self.str("nextToken").filter(|t| !t.is_empty()).map(str::to_owned),
            max_results: self.int("maxResults", 1, 250)?.map(|n| n as usize),
        })
    }

    /// An integer parameter within `min..=max`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, AwsError> {
        let Some(raw) = self.str(name) else { return Ok(None) };
        match raw.parse::<i64>() {
            Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(AwsError::invalid_request(format!("{name} must be an integer from {min} to {max}, got {raw:?}"))),
        }
    }
}

/// The raw request body. A body over the router's limit is a
/// `RequestEntityTooLargeException`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = AwsError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Body(bytes)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(AwsError::too_large(format!("request body too large: {}", e.body_text())))
            }
            Err(e) => Err(AwsError::invalid_request(format!("could not read the request body: {}", e.body_text()))),
        }
    }
}

/// A JSON request body; an empty body reads as `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for JsonBody<T> {
    type Rejection = AwsError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Body(bytes) = Body::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Parses a JSON request body; empty (or blank) means every member absent.
///
/// A restJson1 body is a JSON object, in UTF-8. serde would also read a struct from a JSON array
/// (members by position), so `["pump", null, null]` would pass as a CreateThing body; a body
/// that does not start with `{` is refused before serde sees it. And `serde_json::from_slice`
/// skips the string of an unknown member without checking its UTF-8, so the text is checked
/// first.
pub fn parse_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, AwsError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Ok(T::default()),
        Some(b'{') => {}
        Some(_) => return Err(AwsError::invalid_request("malformed request body: expected a JSON object")),
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| AwsError::invalid_request(format!("malformed request body: not UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| AwsError::invalid_request(format!("malformed request body: {e}")))
}

/// A `200 OK` JSON response.
pub fn json_ok<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(body),
        Err(e) => AwsError::internal(format!("could not encode the response: {e}")).into_response(),
    }
}

/// A `200 OK` response whose body is already JSON (a shadow document).
pub fn json_bytes(body: Vec<u8>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The empty output structure (`{}`).
pub fn empty_ok() -> Response {
    json_bytes(b"{}".to_vec())
}

// ---------------------------------------------------------------------------
// Validation (the models' constraints, which AWS enforces server-side)
// ---------------------------------------------------------------------------

/// Checks a name against `[a-zA-Z0-9:_-]{1,128}` (things, thing types, thing groups).
pub fn check_name(kind: &str, name: &str) -> Result<(), AwsError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AwsError::invalid_request(format!("{kind} {name:?} must match [a-zA-Z0-9:_-]{{1,128}}")))
    }
}

/// Checks a policy name against `[\w+=,.@-]{1,128}`.
pub fn check_policy_name(name: &str) -> Result<(), AwsError> {
    if cloud_api::policy::is_valid_policy_name(name) {
        Ok(())
    } else {
        Err(AwsError::invalid_request(format!("policy name {name:?} must match [\\w+=,.@-]{{1,128}}")))
    }
}

/// Checks a certificate id: 64 hexadecimal characters.
pub fn check_certificate_id(id: &str) -> Result<(), AwsError> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(AwsError::invalid_request(format!("certificate id {id:?} must be 64 hexadecimal characters")))
    }
}

/// Checks a shadow name against `[$a-zA-Z0-9:_-]{1,64}`.
pub fn check_shadow_name(name: &str) -> Result<(), AwsError> {
    let ok = !name.is_empty()
        && name.len() <= cloud_api::limits::SHADOW_MAX_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'$' | b':' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(AwsError::invalid_request(format!("shadow name {name:?} must match [$a-zA-Z0-9:_-]{{1,64}}")))
    }
}

/// The resource name at the end of an IoT ARN of the given type, e.g.
/// `thing` in `arn:aws:iot:us-east-1:000000000000:thing/pump-1`.
pub fn arn_resource<'a>(arn: &'a str, resource_type: &str) -> Option<&'a str> {
    let mut parts = arn.splitn(6, ':');
    let (prefix, partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    let (_region, _account, resource) = (parts.next()?, parts.next()?, parts.next()?);
    if prefix != "arn" || partition.is_empty() || service != "iot" {
        return None;
    }
    let (kind, name) = resource.split_once('/')?;
    (kind == resource_type && !name.is_empty()).then_some(name)
}

/// One page of `items`. The token is the offset of the next item, in decimal;
/// clients treat it as opaque.
pub fn page<T>(
    items: Vec<T>,
    token: Option<&str>,
    size: Option<i64>,
    default_size: usize,
) -> Result<(Vec<T>, Option<String>), AwsError> {
    let start = match token {
        None | Some("") => 0,
        Some(t) => t
            .parse::<usize>()
            .ok()
            .filter(|s| *s <= items.len())
            .ok_or_else(|| AwsError::invalid_request(format!("invalid paging token {t:?}")))?,
    };
    let size = size.map_or(default_size, |s| s as usize);
    let end = start.saturating_add(size).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    Ok((items.into_iter().skip(start).take(end - start).collect(), next))
}

// ---------------------------------------------------------------------------
// Shared structures
// ---------------------------------------------------------------------------

/// `AttributePayload`: attributes and whether they merge with the existing ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttributePayload {
    /// Attribute names to values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    /// Merge (true) or replace (false, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge: Option<bool>,
}

/// `Tag`: accepted and ignored (the local cloud keeps no tags).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Tag {
    /// Key.
    #[serde(rename = "Key", default)]
    pub key: String,
    /// Value.
    #[serde(rename = "Value", default)]
    pub value: Option<String>,
}

// ---------------------------------------------------------------------------
// Things
// ---------------------------------------------------------------------------

/// `CreateThingRequest` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateThingRequest {
    /// Thing type.
    pub thing_type_name: Option<String>,
    /// Attributes.
    pub attribute_payload: Option<AttributePayload>,
    /// Billing group (the local cloud has none).
    pub billing_group_name: Option<String>,
}

/// `CreateThingResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateThingResponse {
    /// Name.
    pub thing_name: String,
    /// ARN.
    pub thing_arn: String,
    /// Id.
    pub thing_id: String,
}

/// `DescribeThingResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeThingResponse {
    /// The default MQTT client id: the thing name.
    pub default_client_id: String,
    /// Name.
    pub thing_name: String,
    /// Id.
    pub thing_id: String,
    /// ARN.
    pub thing_arn: String,
    /// Thing type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing_type_name: Option<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Version.
    pub version: i64,
}

/// `ThingAttribute`: one entry of ListThings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingAttribute {
    /// Name.
    pub thing_name: String,
    /// Thing type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thing_type_name: Option<String>,
    /// ARN.
    pub thing_arn: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Version.
    pub version: i64,
}

/// `ListThingsResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListThingsResponse {
    /// The page.
    pub things: Vec<ThingAttribute>,
    /// Token for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `UpdateThingRequest` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateThingRequest {
    /// New thing type.
    pub thing_type_name: Option<String>,
    /// Attributes to set or merge.
    pub attribute_payload: Option<AttributePayload>,
    /// Optimistic concurrency check.
    pub expected_version: Option<i64>,
    /// Remove the thing type.
    pub remove_thing_type: Option<bool>,
}

/// `ThingTypeProperties`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingTypeProperties {
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_type_description: Option<String>,
    /// Searchable attribute names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searchable_attributes: Option<Vec<String>>,
    /// MQTT 5 propagating attributes: accepted and ignored.
    #[serde(default, skip_serializing)]
    pub mqtt5_configuration: Option<serde_json::Value>,
}

/// `CreateThingTypeRequest` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateThingTypeRequest {
    /// Properties.
    pub thing_type_properties: Option<ThingTypeProperties>,
    /// Tags (ignored).
    pub tags: Option<Vec<Tag>>,
}

/// `CreateThingTypeResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateThingTypeResponse {
    /// Name.
    pub thing_type_name: String,
    /// ARN.
    pub thing_type_arn: String,
    /// Id.
    pub thing_type_id: String,
}

/// `ThingTypeMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingTypeMetadata {
    /// Whether deprecated.
    pub deprecated: bool,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
}

/// `DescribeThingTypeResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeThingTypeResponse {
    /// Name.
    pub thing_type_name: String,
    /// Id.
    pub thing_type_id: String,
    /// ARN.
    pub thing_type_arn: String,
    /// Properties.
    pub thing_type_properties: ThingTypeProperties,
    /// Metadata.
    pub thing_type_metadata: ThingTypeMetadata,
}

// ---------------------------------------------------------------------------
// Thing groups
// ---------------------------------------------------------------------------

/// `ThingGroupProperties`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingGroupProperties {
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_group_description: Option<String>,
    /// Attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute_payload: Option<AttributePayload>,
}

/// `CreateThingGroupRequest` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateThingGroupRequest {
    /// Parent group.
    pub parent_group_name: Option<String>,
    /// Properties.
    pub thing_group_properties: Option<ThingGroupProperties>,
    /// Tags (ignored).
    pub tags: Option<Vec<Tag>>,
}

/// `CreateThingGroupResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateThingGroupResponse {
    /// Name.
    pub thing_group_name: String,
    /// ARN.
    pub thing_group_arn: String,
    /// Id.
    pub thing_group_id: String,
}

/// `GroupNameAndArn`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupNameAndArn {
    /// Group name.
    pub group_name: String,
    /// Group ARN.
    pub group_arn: String,
}

impl From<ThingGroup> for GroupNameAndArn {
    fn from(g: ThingGroup) -> Self {
        GroupNameAndArn { group_name: g.name, group_arn: g.arn }
    }
}

/// `ThingGroupMetadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThingGroupMetadata {
    /// Parent group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_group_name: Option<String>,
    /// Ancestors, root first.
    pub root_to_parent_thing_groups: Vec<GroupNameAndArn>,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
}

/// `DescribeThingGroupResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeThingGroupResponse {
    /// Name.
    pub thing_group_name: String,
    /// Id.
    pub thing_group_id: String,
    /// ARN.
    pub thing_group_arn: String,
    /// Version.
    pub version: i64,
    /// Properties.
    pub thing_group_properties: ThingGroupProperties,
    /// Metadata.
    pub thing_group_metadata: ThingGroupMetadata,
}

/// `AddThingToThingGroupRequest` and `RemoveThingFromThingGroupRequest` body:
/// each side by name or by ARN (the name wins when both are given).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddThingToThingGroupRequest {
    /// Group name.
    pub thing_group_name: Option<String>,
    /// Group ARN.
    pub thing_group_arn: Option<String>,
    /// Thing name.
    pub thing_name: Option<String>,
    /// Thing ARN.
    pub thing_arn: Option<String>,
    /// AddThingToThingGroup only; for dynamic groups, which the local cloud does not have.
    pub override_dynamic_groups: Option<bool>,
}

/// `ListThingsInThingGroupResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListThingsInThingGroupResponse {
    /// Thing names.
    pub things: Vec<String>,
    /// Token for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `ListThingGroupsResponse` and `ListThingGroupsForThingResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListThingGroupsResponse {
    /// The groups.
    pub thing_groups: Vec<GroupNameAndArn>,
    /// Token for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

/// `CreatePolicyRequest` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePolicyRequest {
    /// The JSON document, as a string.
    pub policy_document: Option<String>,
    /// Tags (ignored).
    pub tags: Option<Vec<Tag>>,
}

/// `CreatePolicyResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePolicyResponse {
    /// Name.
    pub policy_name: String,
    /// ARN.
    pub policy_arn: String,
    /// Document.
    pub policy_document: String,
    /// Version id.
    pub policy_version_id: String,
}

/// `GetPolicyResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GetPolicyResponse {
    /// Name.
    pub policy_name: String,
    /// ARN.
    pub policy_arn: String,
    /// Document.
    pub policy_document: String,
    /// Default version id.
    pub default_version_id: String,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
    /// Last modified, epoch seconds.
    pub last_modified_date: u64,
}

/// `Policy`: an entry of ListPolicies / ListAttachedPolicies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEntry {
    /// Name.
    pub policy_name: String,
    /// ARN.
    pub policy_arn: String,
}

/// `ListPoliciesResponse` and `ListAttachedPoliciesResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPoliciesResponse {
    /// The page.
    pub policies: Vec<PolicyEntry>,
    /// Marker of the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// `AttachPolicyRequest` and `DetachPolicyRequest` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetRequest {
    /// Target ARN (certificate or thing group).
    pub target: Option<String>,
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// `KeyPair` (member names are capitalised in the model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyPairWire {
    /// Public key PEM.
    #[serde(rename = "PublicKey")]
    pub public_key: String,
    /// Private key PEM.
    #[serde(rename = "PrivateKey")]
    pub private_key: String,
}

/// `CreateKeysAndCertificateResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateKeysAndCertificateResponse {
    /// ARN.
    pub certificate_arn: String,
    /// Id.
    pub certificate_id: String,
    /// PEM.
    pub certificate_pem: String,
    /// The new key pair.
    pub key_pair: KeyPairWire,
}

/// `CreateCertificateFromCsrRequest` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCertificateFromCsrRequest {
    /// PEM CSR.
    pub certificate_signing_request: Option<String>,
}

/// `CreateCertificateFromCsrResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateCertificateFromCsrResponse {
    /// ARN.
    pub certificate_arn: String,
    /// Id.
    pub certificate_id: String,
    /// PEM.
    pub certificate_pem: String,
}

/// `CertificateValidity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateValidity {
    /// Not valid before, epoch seconds.
    pub not_before: u64,
    /// Not valid after, epoch seconds.
    pub not_after: u64,
}

/// `CertificateDescription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateDescription {
    /// ARN.
    pub certificate_arn: String,
    /// Id.
    pub certificate_id: String,
    /// Status.
    pub status: &'static str,
    /// PEM.
    pub certificate_pem: String,
    /// Owning account.
    pub owned_by: String,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
    /// Last modified, epoch seconds.
    pub last_modified_date: u64,
    /// Always 1.
    pub customer_version: i32,
    /// Validity.
    pub validity: CertificateValidity,
    /// `DEFAULT`.
    pub certificate_mode: &'static str,
}

/// `DescribeCertificateResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeCertificateResponse {
    /// The description.
    pub certificate_description: CertificateDescription,
}

/// `Certificate`: an entry of ListCertificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateEntry {
    /// ARN.
    pub certificate_arn: String,
    /// Id.
    pub certificate_id: String,
    /// Status.
    pub status: &'static str,
    /// `DEFAULT`.
    pub certificate_mode: &'static str,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
}

/// `ListCertificatesResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListCertificatesResponse {
    /// The page.
    pub certificates: Vec<CertificateEntry>,
    /// Marker of the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// `ListThingPrincipalsResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListThingPrincipalsResponse {
    /// Principal ARNs.
    pub principals: Vec<String>,
    /// Token for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `ListPrincipalThingsResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPrincipalThingsResponse {
    /// Thing names.
    pub things: Vec<String>,
    /// Token for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// `RegisterCertificateWithoutCARequest` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterCertificateWithoutCaRequest {
    /// The certificate, PEM.
    pub certificate_pem: Option<String>,
    /// `ACTIVE`, `INACTIVE`, … (default `INACTIVE`).
    pub status: Option<String>,
}

/// `RegisterCertificateWithoutCAResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterCertificateWithoutCaResponse {
    /// ARN.
    pub certificate_arn: String,
    /// Id.
    pub certificate_id: String,
}

/// `DescribeEndpointResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeEndpointResponse {
    /// Host name (no port, no scheme).
    pub endpoint_address: String,
}

// ---------------------------------------------------------------------------
// Data plane
// ---------------------------------------------------------------------------

/// `ListNamedShadowsForThingResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListNamedShadowsResponse {
    /// Shadow names.
    pub results: Vec<String>,
    /// Token for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
    /// Epoch seconds.
    pub timestamp: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_body_reads_as_all_members_absent() {
        let r: CreateThingRequest = parse_json(b"").unwrap();
        assert_eq!(r, CreateThingRequest::default());
        let r: CreateThingRequest = parse_json(b"  \n").unwrap();
        assert_eq!(r, CreateThingRequest::default());
    }

    #[test]
    fn malformed_or_mistyped_json_is_an_invalid_request() {
        // A struct read from an array by position is not a restJson1 body either.
        let by_position = br#"["pump", null, null]"#;
        // Invalid UTF-8 in a member the shape does not have.
        let not_utf8 = b"{\"poDocument\":\"\xff\xfe\"}";
        for body in
            [&b"{not json"[..], b"[]", b"{\"thingTypeName\": 5}", b"\"x\"", by_position, b" [\"pump\"]", not_utf8]
        {
            let e = parse_json::<CreateThingRequest>(body).unwrap_err();
            assert_eq!(e.error_type, "InvalidRequestException", "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn request_members_use_the_model_names() {
        let r: UpdateThingRequest = parse_json(
            br#"{"thingTypeName":"t","attributePayload":{"attributes":{"a":"1"},"merge":true},"expectedVersion":3,"removeThingType":false}"#,
        )
        .unwrap();
        assert_eq!(r.thing_type_name.as_deref(), Some("t"));
        assert_eq!(r.expected_version, Some(3));
        let p = r.attribute_payload.unwrap();
        assert_eq!(p.merge, Some(true));
        assert_eq!(p.attributes.unwrap()["a"], "1");
    }

    #[test]
    fn key_pair_members_are_capitalised() {
        let v = serde_json::to_value(KeyPairWire { public_key: "p".into(), private_key: "k".into() }).unwrap();
        assert_eq!(v, serde_json::json!({"PublicKey": "p", "PrivateKey": "k"}));
    }

    #[test]
    fn names_follow_the_model_patterns() {
        assert!(check_name("thing", "pump-1:a_b").is_ok());
        assert!(check_name("thing", "").is_err());
        assert!(check_name("thing", "a/b").is_err());
        assert!(check_name("thing", &"x".repeat(129)).is_err());
        assert!(check_policy_name("Greengrass.Policy@v1+=,").is_ok());
        assert!(check_policy_name("a b").is_err());
        assert!(check_certificate_id(&"ab".repeat(32)).is_ok());
        assert!(check_certificate_id("abc").is_err());
        assert!(check_shadow_name("pump").is_ok());
        assert!(check_shadow_name(&"s".repeat(65)).is_err());
    }

    #[test]
    fn arn_resource_reads_the_name_of_the_expected_type() {
        let arn = "arn:aws:iot:us-east-1:000000000000:thinggroup/site-a";
        assert_eq!(arn_resource(arn, "thinggroup"), Some("site-a"));
        assert_eq!(arn_resource(arn, "thing"), None);
        assert_eq!(arn_resource("arn:aws:iot:us-east-1:0:cert/abc", "cert"), Some("abc"));
        assert_eq!(arn_resource("not-an-arn", "thing"), None);
    }

    #[test]
    fn pages_walk_the_list_and_reject_bad_tokens() {
        let items: Vec<u32> = (0..5).collect();
        let (p1, t1) = page(items.clone(), None, Some(2), 50).unwrap();
        assert_eq!((p1, t1.as_deref()), (vec![0, 1], Some("2")));
        let (p2, t2) = page(items.clone(), Some("4"), Some(2), 50).unwrap();
        assert_eq!((p2, t2), (vec![4], None));
        assert!(page(items.clone(), Some("x"), None, 50).is_err());
        assert!(page(items, Some("9"), None, 50).is_err());
    }

    #[test]
    fn params_parse_typed_values_or_answer_invalid_request() {
        let p = Params(HashMap::from([
            ("a".to_string(), "true".to_string()),
            ("n".to_string(), "7".to_string()),
            ("bad".to_string(), "yes".to_string()),
        ]));
        assert_eq!(p.bool("a").unwrap(), Some(true));
        assert_eq!(p.bool("missing").unwrap(), None);
        assert!(p.bool("bad").is_err());
        assert_eq!(p.int("n", 1, 250).unwrap(), Some(7));
        assert!(p.int("n", 1, 5).is_err());
    }
}
