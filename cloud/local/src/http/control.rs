//! The IoT control plane (`aws-sdk-iot`, `aws iot …`): things, thing types,
//! policies, certificates (RegisterCertificateWithoutCA included), principals in both
//! directions and DescribeEndpoint (thing groups are
//! in [`super::thing_groups`]).
//! Routes and members follow `iot.json` (service `AWSIotService`, 2015-05-28).

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post, put};

use super::error::AwsError;
use super::wire::*;
use super::{AppState, blocking};
use crate::registry::{Certificate, CertificateStatus, ListThingsQuery, Policy, Registry, Thing};

/// Runs `f` with the registry on the blocking pool (registry calls write SQLite).
pub(super) async fn on_registry<T, F>(st: &AppState, f: F) -> Result<T, AwsError>
where
    F: FnOnce(&Registry) -> Result<T, AwsError> + Send + 'static,
    T: Send + 'static,
{
    let reg = st.registry.clone();
    blocking(move || f(&reg)).await
}

/// Routes of the control plane.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/things", get(list_things))
        .route("/things/{thingName}", post(create_thing).get(describe_thing).delete(delete_thing).patch(update_thing))
        .route(
            "/things/{thingName}/principals",
            put(attach_thing_principal).delete(detach_thing_principal).get(list_thing_principals),
        )
        .route("/thing-types/{thingTypeName}", post(create_thing_type).get(describe_thing_type))
        .route("/policies", get(list_policies))
        .route("/policies/{policyName}", post(create_policy).get(get_policy).delete(delete_policy))
        .route("/target-policies/{policyName}", put(attach_policy).post(detach_policy))
        // The target is an ARN; a catch-all also takes one whose `/` arrived unencoded.
        .route("/attached-policies/{*target}", post(list_attached_policies))
        .route("/keys-and-certificate", post(create_keys_and_certificate))
        .route("/certificates", post(create_certificate_from_csr).get(list_certificates))
        .route(
            "/certificates/{certificateId}",
            get(describe_certificate).put(update_certificate).delete(delete_certificate),
        )
        .route("/certificate/register-no-ca", post(register_certificate_without_ca))
        .route("/principals/things", get(list_principal_things))
        .route("/endpoint", get(describe_endpoint))
        .route("/event-configurations", get(describe_event_configurations).patch(update_event_configurations))
}

/// What every handler answers.
pub(super) type Reply = Result<Response, AwsError>;

// ---- things ----

async fn create_thing(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<CreateThingRequest>,
) -> Reply {
    check_name("thing name", &name)?;
    if let Some(t) = &req.thing_type_name {
        check_name("thing type name", t)?;
    }
    if let Some(group) = &req.billing_group_name {
        return Err(AwsError::not_found(format!("billing group {group} does not exist (the local cloud has none)")));
    }
    let attributes = req.attribute_payload.and_then(|p| p.attributes).unwrap_or_default();
    let thing =
        on_registry(&st, move |reg| Ok(reg.create_thing(&name, req.thing_type_name.as_deref(), attributes)?)).await?;
    Ok(json_ok(&CreateThingResponse { thing_name: thing.name, thing_arn: thing.arn, thing_id: thing.id }))
}

async fn describe_thing(State(st): State<AppState>, Label(name): Label) -> Reply {
    check_name("thing name", &name)?;
    let t = on_registry(&st, move |reg| Ok(reg.describe_thing(&name)?)).await?;
    Ok(json_ok(&DescribeThingResponse {
        default_client_id: t.name.clone(),
        thing_name: t.name,
        thing_id: t.id,
        thing_arn: t.arn,
        thing_type_name: t.thing_type_name,
        attributes: t.attributes,
        version: t.version,
    }))
}

async fn list_things(State(st): State<AppState>, params: Params) -> Reply {
    if params.bool("usePrefixAttributeValue")? == Some(true) {
        return Err(AwsError::invalid_request("usePrefixAttributeValue is not supported by the local cloud"));
    }
    let query = ListThingsQuery {
        attribute_name: params.str("attributeName").map(str::to_owned),
        attribute_value: params.str("attributeValue").map(str::to_owned),
        thing_type_name: params.str("thingTypeName").map(str::to_owned),
        page: params.page()?,
    };
    let (things, next_token) = on_registry(&st, move |reg| Ok(reg.list_things(&query)?)).await?;
    let things = things
        .into_iter()
        .map(|t: Thing| ThingAttribute {
            thing_name: t.name,
            thing_type_name: t.thing_type_name,
            thing_arn: t.arn,
            attributes: t.attributes,
            version: t.version,
        })
        .collect();
    Ok(json_ok(&ListThingsResponse { things, next_token }))
}

async fn delete_thing(State(st): State<AppState>, Label(name): Label, params: Params) -> Reply {
    check_name("thing name", &name)?;
    let expected = params.int("expectedVersion", i64::MIN, i64::MAX)?;
    on_registry(&st, move |reg| Ok(reg.delete_thing(&name, expected)?)).await?;
    Ok(empty_ok())
}

async fn update_thing(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<UpdateThingRequest>,
) -> Reply {
    check_name("thing name", &name)?;
    if let Some(t) = &req.thing_type_name {
        check_name("thing type name", t)?;
    }
    let remove_type = req.remove_thing_type.unwrap_or(false);
    if remove_type && req.thing_type_name.is_some() {
        return Err(AwsError::invalid_request("give either thingTypeName or removeThingType, not both"));
    }
    let attributes = req.attribute_payload.map(|p| (p.attributes.unwrap_or_default(), p.merge.unwrap_or(false)));
    on_registry(&st, move |reg| {
        Ok(reg.update_thing(&name, req.thing_type_name.as_deref(), remove_type, attributes, req.expected_version)?)
    })
    .await?;
    Ok(empty_ok())
}

// ---- thing types ----

async fn create_thing_type(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<CreateThingTypeRequest>,
) -> Reply {
    check_name("thing type name", &name)?;
    let props = req.thing_type_properties.unwrap_or_default();
    let tt = on_registry(&st, move |reg| {
        Ok(reg.create_thing_type(
            &name,
            props.thing_type_description.as_deref(),
            props.searchable_attributes.unwrap_or_default(),
        )?)
    })
    .await?;
    Ok(json_ok(&CreateThingTypeResponse { thing_type_name: tt.name, thing_type_arn: tt.arn, thing_type_id: tt.id }))
}

async fn describe_thing_type(State(st): State<AppState>, Label(name): Label) -> Reply {
    check_name("thing type name", &name)?;
    let tt = on_registry(&st, move |reg| Ok(reg.describe_thing_type(&name)?)).await?;
    Ok(json_ok(&DescribeThingTypeResponse {
        thing_type_name: tt.name,
        thing_type_id: tt.id,
        thing_type_arn: tt.arn,
        thing_type_properties: ThingTypeProperties {
            thing_type_description: tt.description,
            searchable_attributes: Some(tt.searchable_attributes),
            mqtt5_configuration: None,
        },
        thing_type_metadata: ThingTypeMetadata { deprecated: tt.deprecated, creation_date: tt.creation_date },
    }))
}

// ---- policies ----

async fn create_policy(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<CreatePolicyRequest>,
) -> Reply {
    check_policy_name(&name)?;
    let document = req.policy_document.ok_or_else(|| AwsError::invalid_request("policyDocument is required"))?;
    let p = on_registry(&st, move |reg| Ok(reg.create_policy(&name, &document)?)).await?;
    Ok(json_ok(&CreatePolicyResponse {
        policy_name: p.name,
        policy_arn: p.arn,
        policy_document: p.document,
        policy_version_id: p.default_version_id,
    }))
}

async fn get_policy(State(st): State<AppState>, Label(name): Label) -> Reply {
    check_policy_name(&name)?;
    let p = on_registry(&st, move |reg| Ok(reg.get_policy(&name)?)).await?;
    Ok(json_ok(&GetPolicyResponse {
        policy_name: p.name,
        policy_arn: p.arn,
        policy_document: p.document,
        default_version_id: p.default_version_id,
        creation_date: p.creation_date,
        last_modified_date: p.last_modified_date,
    }))
}

fn policy_entries(policies: Vec<Policy>) -> Vec<PolicyEntry> {
    policies.into_iter().map(|p| PolicyEntry { policy_name: p.name, policy_arn: p.arn }).collect()
}

async fn list_policies(State(st): State<AppState>, params: Params) -> Reply {
    let descending = params.bool("isAscendingOrder")? == Some(false);
    let size = params.int("pageSize", 1, 250)?;
    let mut policies = on_registry(&st, move |reg| Ok(reg.list_policies())).await?;
    if descending {
        policies.reverse();
    }
    let (policies, next_marker) = page(policy_entries(policies), params.str("marker"), size, 250)?;
    Ok(json_ok(&ListPoliciesResponse { policies, next_marker }))
}

async fn delete_policy(State(st): State<AppState>, Label(name): Label) -> Reply {
    check_policy_name(&name)?;
    on_registry(&st, move |reg| Ok(reg.delete_policy(&name)?)).await?;
    Ok(empty_ok())
}

fn required_target(req: PolicyTargetRequest) -> Result<String, AwsError> {
    req.target.filter(|t| !t.is_empty()).ok_or_else(|| AwsError::invalid_request("target is required"))
}

async fn attach_policy(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<PolicyTargetRequest>,
) -> Reply {
    check_policy_name(&name)?;
    let target = required_target(req)?;
    on_registry(&st, move |reg| Ok(reg.attach_policy(&name, &target)?)).await?;
    Ok(empty_ok())
}

async fn detach_policy(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<PolicyTargetRequest>,
) -> Reply {
    check_policy_name(&name)?;
    let target = required_target(req)?;
    on_registry(&st, move |reg| Ok(reg.detach_policy(&name, &target)?)).await?;
    Ok(empty_ok())
}

async fn list_attached_policies(State(st): State<AppState>, Label(target): Label, params: Params) -> Reply {
    let recursive = params.bool("recursive")?.unwrap_or(false);
    let size = params.int("pageSize", 1, 250)?;
    let policies = on_registry(&st, move |reg| attached_policies(reg, &target, recursive)).await?;
    let (policies, next_marker) = page(policy_entries(policies), params.str("marker"), size, 250)?;
    Ok(json_ok(&ListPoliciesResponse { policies, next_marker }))
}

/// Policies attached to `target`; with `recursive`, a thing group's ancestors' too.
fn attached_policies(reg: &Registry, target: &str, recursive: bool) -> Result<Vec<Policy>, AwsError> {
    let mut policies = reg.list_attached_policies(target)?;
    if let (true, Some(group)) = (recursive, arn_resource(target, "thinggroup")) {
        // Nearest ancestor first.
        for ancestor in reg.thing_group_ancestors(group)?.iter().rev() {
            for policy in reg.list_attached_policies(&ancestor.arn)? {
                if !policies.iter().any(|q| q.name == policy.name) {
                    policies.push(policy);
                }
            }
        }
    }
    Ok(policies)
}

// ---- certificates ----

async fn create_keys_and_certificate(State(st): State<AppState>, params: Params) -> Reply {
    let active = params.bool("setAsActive")?.unwrap_or(false);
    let (cert, keys) = on_registry(&st, move |reg| Ok(reg.create_keys_and_certificate(active)?)).await?;
    Ok(json_ok(&CreateKeysAndCertificateResponse {
        certificate_arn: cert.arn,
        certificate_id: cert.id,
        certificate_pem: cert.pem,
        key_pair: KeyPairWire { public_key: keys.public_key_pem, private_key: keys.private_key_pem },
    }))
}

async fn create_certificate_from_csr(
    State(st): State<AppState>,
    params: Params,
    JsonBody(req): JsonBody<CreateCertificateFromCsrRequest>,
) -> Reply {
    let active = params.bool("setAsActive")?.unwrap_or(false);
    let csr = req
        .certificate_signing_request
        .filter(|c| !c.is_empty())
        .ok_or_else(|| AwsError::invalid_request("certificateSigningRequest is required"))?;
    let cert = on_registry(&st, move |reg| Ok(reg.create_certificate_from_csr(&csr, active)?)).await?;
    Ok(json_ok(&CreateCertificateFromCsrResponse {
        certificate_arn: cert.arn,
        certificate_id: cert.id,
        certificate_pem: cert.pem,
    }))
}

async fn describe_certificate(State(st): State<AppState>, Label(id): Label) -> Reply {
    check_certificate_id(&id)?;
    let (c, owned_by): (Certificate, String) =
        on_registry(&st, move |reg| Ok((reg.describe_certificate(&id)?, reg.account_id().to_owned()))).await?;
    Ok(json_ok(&DescribeCertificateResponse {
        certificate_description: CertificateDescription {
            certificate_arn: c.arn,
            certificate_id: c.id,
            status: c.status.as_str(),
            certificate_pem: c.pem,
            owned_by,
            creation_date: c.creation_date,
            last_modified_date: c.last_modified_date,
            customer_version: 1,
            validity: CertificateValidity { not_before: c.not_before, not_after: c.not_after },
            certificate_mode: "DEFAULT",
        },
    }))
}

async fn list_certificates(State(st): State<AppState>, params: Params) -> Reply {
    // The registry lists newest first, AWS's default order.
    let ascending = params.bool("isAscendingOrder")?.unwrap_or(false);
    let size = params.int("pageSize", 1, 250)?;
    let mut certs = on_registry(&st, move |reg| Ok(reg.list_certificates())).await?;
    if ascending {
        certs.reverse();
    }
    let entries = certs
        .into_iter()
        .map(|c| CertificateEntry {
            certificate_arn: c.arn,
            certificate_id: c.id,
            status: c.status.as_str(),
            certificate_mode: "DEFAULT",
            creation_date: c.creation_date,
        })
        .collect();
    let (certificates, next_marker) = page(entries, params.str("marker"), size, 250)?;
    Ok(json_ok(&ListCertificatesResponse { certificates, next_marker }))
}

async fn register_certificate_without_ca(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<RegisterCertificateWithoutCaRequest>,
) -> Reply {
    let pem = req
        .certificate_pem
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AwsError::invalid_request("certificatePem is required"))?;
    let status = match req.status.as_deref() {
        None => CertificateStatus::Inactive,
        Some(raw) => CertificateStatus::parse(raw)
            .ok_or_else(|| AwsError::invalid_request(format!("status {raw:?} is not a certificate status")))?,
    };
    let cert = on_registry(&st, move |reg| Ok(reg.register_certificate_without_ca(&pem, status)?)).await?;
    Ok(json_ok(&RegisterCertificateWithoutCaResponse { certificate_arn: cert.arn, certificate_id: cert.id }))
}

async fn update_certificate(State(st): State<AppState>, Label(id): Label, params: Params) -> Reply {
    check_certificate_id(&id)?;
    let raw = params.str("newStatus").ok_or_else(|| AwsError::invalid_request("newStatus is required"))?;
    let status = CertificateStatus::parse(raw)
        .ok_or_else(|| AwsError::invalid_request(format!("newStatus {raw:?} is not a certificate status")))?;
    on_registry(&st, move |reg| Ok(reg.update_certificate(&id, status)?)).await?;
    Ok(empty_ok())
}

async fn delete_certificate(State(st): State<AppState>, Label(id): Label, params: Params) -> Reply {
    check_certificate_id(&id)?;
    let force = params.bool("forceDelete")?.unwrap_or(false);
    on_registry(&st, move |reg| Ok(reg.delete_certificate(&id, force)?)).await?;
    Ok(empty_ok())
}

// ---- thing principals ----

/// The `x-amzn-principal` header (AttachThingPrincipal, DetachThingPrincipal).
fn principal_header(headers: &HeaderMap) -> Result<String, AwsError> {
    headers
        .get("x-amzn-principal")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| AwsError::invalid_request("the x-amzn-principal header is required"))
}

async fn attach_thing_principal(
    State(st): State<AppState>,
    Label(thing): Label,
    params: Params,
    headers: HeaderMap,
) -> Reply {
    check_name("thing name", &thing)?;
    let principal = principal_header(&headers)?;
    match params.str("thingPrincipalType") {
        None | Some("NON_EXCLUSIVE_THING") => {}
        Some("EXCLUSIVE_THING") => {
            return Err(AwsError::invalid_request(
                "thingPrincipalType EXCLUSIVE_THING is not supported by the local cloud",
            ));
        }
        Some(other) => return Err(AwsError::invalid_request(format!("thingPrincipalType {other:?} is not valid"))),
    }
    on_registry(&st, move |reg| Ok(reg.attach_thing_principal(&thing, &principal)?)).await?;
    Ok(empty_ok())
}

async fn detach_thing_principal(State(st): State<AppState>, Label(thing): Label, headers: HeaderMap) -> Reply {
    check_name("thing name", &thing)?;
    let principal = principal_header(&headers)?;
    on_registry(&st, move |reg| Ok(reg.detach_thing_principal(&thing, &principal)?)).await?;
    Ok(empty_ok())
}

async fn list_thing_principals(State(st): State<AppState>, Label(thing): Label, params: Params) -> Reply {
    check_name("thing name", &thing)?;
    let size = params.int("maxResults", 1, 250)?;
    let principals = on_registry(&st, move |reg| Ok(reg.list_thing_principals(&thing)?)).await?;
    let (principals, next_token) = page(principals, params.str("nextToken"), size, 50)?;
    Ok(json_ok(&ListThingPrincipalsResponse { principals, next_token }))
}

async fn list_principal_things(State(st): State<AppState>, params: Params, headers: HeaderMap) -> Reply {
    let principal = principal_header(&headers)?;
    let size = params.int("maxResults", 1, 250)?;
    let things = on_registry(&st, move |reg| Ok(reg.list_principal_things(&principal))).await?;
    let (things, next_token) = page(things, params.str("nextToken"), size, 50)?;
    Ok(json_ok(&ListPrincipalThingsResponse { things, next_token }))
}

// ---- endpoint ----

async fn describe_endpoint(State(st): State<AppState>, params: Params) -> Reply {
    match params.str("endpointType") {
        // No type means the legacy `iot:Data` endpoint; both are the one broker here.
        None | Some("iot:Data-ATS") | Some("iot:Data") => {
            Ok(json_ok(&DescribeEndpointResponse { endpoint_address: endpoint_host(&st.mqtt_endpoint).to_owned() }))
        }
        Some("iot:CredentialProvider") => Ok(json_ok(&DescribeEndpointResponse {
            endpoint_address: endpoint_host(&st.credentials_endpoint).to_owned(),
        })),
        Some(t @ "iot:Jobs") => {
            Err(AwsError::invalid_request(format!("endpoint type {t} is not served by the local cloud")))
        }
        Some(other) => Err(AwsError::invalid_request(format!("endpoint type {other:?} is not valid"))),
    }
}

/// The host of a `host:port` (or `[v6]:port`) endpoint; SDKs want the host
/// alone and take the port from their own configuration.
pub fn endpoint_host(endpoint: &str) -> &str {
    if let Some(rest) = endpoint.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => endpoint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_host_drops_the_port() {
        assert_eq!(endpoint_host("127.0.0.1:8883"), "127.0.0.1");
        assert_eq!(endpoint_host("localhost:1234"), "localhost");
        assert_eq!(endpoint_host("[::1]:8883"), "::1");
        assert_eq!(endpoint_host("example.com"), "example.com");
    }
}

// ---- event configurations ----

/// `Configuration` of the model: `{"Enabled": bool}`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct EventConfiguration {
    #[serde(rename = "Enabled", default)]
    enabled: bool,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateEventConfigurationsRequest {
    #[serde(default)]
    event_configurations: std::collections::BTreeMap<String, EventConfiguration>,
}

async fn update_event_configurations(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<UpdateEventConfigurationsRequest>,
) -> Reply {
    let changes = req.event_configurations.into_iter().map(|(k, v)| (k, v.enabled)).collect();
    let events = st.events.clone();
    blocking(move || {
        events.update(&changes).map_err(|e| match e {
            crate::events::EventConfigError::UnknownType(_) => AwsError::invalid_request(e.to_string()),
            crate::events::EventConfigError::Store(e) => AwsError::internal(e.to_string()),
        })
    })
    .await?;
    Ok(empty_ok())
}

async fn describe_event_configurations(State(st): State<AppState>) -> Reply {
    let current = st.events.describe();
    let configurations: serde_json::Map<String, serde_json::Value> = crate::events::EVENT_TYPES
        .iter()
        .map(|t| {
            let enabled = current.enabled.get(*t).copied().unwrap_or(false);
            ((*t).to_owned(), serde_json::json!({ "Enabled": enabled }))
        })
        .collect();
    let mut body = serde_json::json!({ "eventConfigurations": configurations });
    // restJson1 timestamps: epoch seconds; absent until the first update.
    if current.creation_date_ms > 0
        && let Some(obj) = body.as_object_mut()
    {
        obj.insert("creationDate".into(), serde_json::json!(current.creation_date_ms as f64 / 1000.0));
        obj.insert("lastModifiedDate".into(), serde_json::json!(current.last_modified_date_ms as f64 / 1000.0));
    }
    Ok(json_ok(&body))
}
