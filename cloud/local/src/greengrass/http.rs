//! The Greengrass V2 control plane's component operations over restJson1, as
//! `aws-sdk-greengrassv2` and botocore's `greengrassv2` speak them: routes, labels, query
//! members, member names and statuses from the Smithy model `greengrassv2` (2020-11-30).
//! Blobs (`inlineRecipe`, `recipe`) travel base64 in JSON; timestamps as epoch seconds.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Greengrass;
use super::components::{ComponentPlatform, ComponentVersionRecord};
use super::error::GreengrassError;
use crate::http::wire::{JsonBody, Label, Params};

/// The control-plane routes, with the service as their state.
pub fn routes(service: Greengrass) -> Router {
    Router::new()
        .route("/greengrass/v2/createComponentVersion", post(create_component_version))
        .route("/greengrass/v2/components", get(list_components))
        .route("/greengrass/v2/components/{arn}", get(get_component).delete(delete_component))
        .route("/greengrass/v2/components/{arn}/metadata", get(describe_component))
        .route("/greengrass/v2/components/{arn}/versions", get(list_component_versions))
        .with_state(service)
}

/// `CreateComponentVersionRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateComponentVersionRequest {
    inline_recipe: Option<String>,
    lambda_function: Option<Value>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    client_token: Option<String>,
}

/// Epoch seconds, as restJson1 writes timestamps.
pub(super) fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

pub(super) fn ok_json(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// `clientToken`: 1–64 characters of `[a-zA-Z0-9-]` (the model's `ClientTokenString`).
pub fn check_client_token(token: &str) -> Result<(), GreengrassError> {
    if (1..=64).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        Ok(())
    } else {
        Err(GreengrassError::field("clientToken", "must be 1 to 64 characters of [a-zA-Z0-9-]"))
    }
}

/// Decodes the `inlineRecipe` blob.
pub fn decode_blob(name: &str, b64: &str) -> Result<Vec<u8>, GreengrassError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| GreengrassError::cannot_parse(format!("{name} is not valid base64: {e}")))
}

async fn create_component_version(
    State(gg): State<Greengrass>,
    body: Result<JsonBody<CreateComponentVersionRequest>, crate::http::error::AwsError>,
) -> Result<Response, GreengrassError> {
    let JsonBody(req) = body.map_err(|e| GreengrassError::cannot_parse(e.message))?;
    if req.lambda_function.is_some() {
        return Err(GreengrassError::field(
            "lambdaFunction",
            "components from Lambda functions are not supported by this local cloud; give an inlineRecipe",
        ));
    }
    let Some(b64) = req.inline_recipe else {
        return Err(GreengrassError::field("inlineRecipe", "give an inlineRecipe (the recipe, JSON or YAML)"));
    };
    if let Some(token) = &req.client_token {
        check_client_token(token)?;
    }
    let recipe = decode_blob("inlineRecipe", &b64)?;
    let components = gg.components.clone();
    let created = blocking(move || components.create(&recipe, req.tags, req.client_token.as_deref())).await?;
    Ok(ok_json(
        StatusCode::CREATED,
        json!({
            "arn": created.arn,
            "componentName": created.name,
            "componentVersion": created.version,
            "creationTimestamp": seconds(created.created_ms),
            "status": {"componentState": "REQUESTED", "message": "NONE", "errors": {}},
        }),
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    component_state: super::components::ComponentState,
    message: &'a str,
    errors: &'a BTreeMap<String, String>,
}

fn platforms(p: &[ComponentPlatform]) -> Value {
    serde_json::to_value(p).unwrap_or_default()
}

async fn describe_component(State(gg): State<Greengrass>, Label(arn): Label) -> Result<Response, GreengrassError> {
    let r = gg.components.get(&arn)?.record;
    let status =
        Status { component_state: r.status.component_state, message: &r.status.message, errors: &r.status.errors };
    let mut body = json!({
        "arn": r.arn,
        "componentName": r.name,
        "componentVersion": r.version,
        "creationTimestamp": seconds(r.created_ms),
        "status": status,
        "platforms": platforms(&r.platforms),
        "tags": r.tags,
    });
    if let Some(p) = &r.publisher {
        body["publisher"] = json!(p);
    }
    if let Some(d) = &r.description {
        body["description"] = json!(d);
    }
    Ok(ok_json(StatusCode::OK, body))
}

/// The stored recipe in `JSON` or `YAML`.
pub fn render_recipe(recipe: &Value, format: &str) -> Result<Vec<u8>, GreengrassError> {
    match format {
        "JSON" => serde_json::to_vec(recipe).map_err(|e| GreengrassError::Internal(e.to_string())),
        "YAML" => serde_yaml_ng::to_string(recipe)
            .map(String::into_bytes)
            .map_err(|e| GreengrassError::Internal(e.to_string())),
        other => Err(GreengrassError::field("recipeOutputFormat", format!("must be JSON or YAML, not {other:?}"))),
    }
}

async fn get_component(
    State(gg): State<Greengrass>,
    Label(arn): Label,
    Params(params): Params,
) -> Result<Response, GreengrassError> {
    let format = params.get("recipeOutputFormat").map_or("JSON", String::as_str).to_string();
    let r = gg.components.get(&arn)?.record;
    let recipe = render_recipe(&r.recipe, &format)?;
    Ok(ok_json(
        StatusCode::OK,
        json!({
            "recipeOutputFormat": format,
            "recipe": base64::engine::general_purpose::STANDARD.encode(recipe),
            "tags": r.tags,
        }),
    ))
}

async fn delete_component(State(gg): State<Greengrass>, Label(arn): Label) -> Result<Response, GreengrassError> {
    let components = gg.components.clone();
    blocking(move || components.delete(&arn)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One page of `items`: `maxResults` 1–100 (the model's `DefaultMaxResults`), `nextToken` as the
/// IoT operations page ([`crate::http::wire::page`], an offset).
pub(super) fn page<T>(
    items: Vec<T>,
    params: &BTreeMap<String, String>,
) -> Result<(Vec<T>, Option<String>), GreengrassError> {
    let max = match params.get("maxResults") {
        None => 100,
        Some(raw) => raw.parse::<i64>().ok().filter(|n| (1..=100).contains(n)).ok_or_else(|| {
            GreengrassError::field("maxResults", format!("must be an integer from 1 to 100, not {raw:?}"))
        })?,
    };
    crate::http::wire::page(items, params.get("nextToken").map(String::as_str), Some(max), 100)
        .map_err(|e| GreengrassError::field("nextToken", e.message))
}

/// The answer of a list operation: one page of `items` under `member`, and `nextToken` when
/// more follow.
pub(super) fn page_response(
    member: &str,
    items: Vec<Value>,
    params: &BTreeMap<String, String>,
) -> Result<Response, GreengrassError> {
    let (items, next) = page(items, params)?;
    let mut body = json!({ member: items });
    if let Some(next) = next {
        body["nextToken"] = json!(next);
    }
    Ok(ok_json(StatusCode::OK, body))
}

async fn list_components(State(gg): State<Greengrass>, Params(params): Params) -> Result<Response, GreengrassError> {
    let params: BTreeMap<String, String> = params.into_iter().collect();
    let all = match params.get("scope").map(String::as_str) {
        None | Some("PRIVATE") => gg.components.list(false),
        // AWS's own components (account `aws`), such as the nucleus versions it publishes.
        Some("PUBLIC") => gg.components.list(true),
        Some(other) => {
            return Err(GreengrassError::field("scope", format!("must be PRIVATE or PUBLIC, not {other:?}")));
        }
    };
    let (items, next) = page(all, &params)?;
    let components: Vec<Value> = items
        .into_iter()
        .map(|(arn, name, latest)| json!({"arn": arn, "componentName": name, "latestVersion": latest_version(&latest)}))
        .collect();
    let mut body = json!({"components": components});
    if let Some(n) = next {
        body["nextToken"] = json!(n);
    }
    Ok(ok_json(StatusCode::OK, body))
}

fn latest_version(r: &ComponentVersionRecord) -> Value {
    let mut v = json!({
        "arn": r.arn,
        "componentVersion": r.version,
        "creationTimestamp": seconds(r.created_ms),
        "platforms": platforms(&r.platforms),
    });
    if let Some(p) = &r.publisher {
        v["publisher"] = json!(p);
    }
    if let Some(d) = &r.description {
        v["description"] = json!(d);
    }
    v
}

async fn list_component_versions(
    State(gg): State<Greengrass>,
    Label(arn): Label,
    Params(params): Params,
) -> Result<Response, GreengrassError> {
    let params: BTreeMap<String, String> = params.into_iter().collect();
    let (items, next) = page(gg.components.list_versions(&arn)?, &params)?;
    let versions: Vec<Value> =
        items.iter().map(|r| json!({"componentName": r.name, "componentVersion": r.version, "arn": r.arn})).collect();
    let mut body = json!({"componentVersions": versions});
    if let Some(n) = next {
        body["nextToken"] = json!(n);
    }
    Ok(ok_json(StatusCode::OK, body))
}

/// Runs a store call (SQLite) on the blocking pool ([`crate::http::blocking`]); a panic
/// becomes an `InternalServerException`.
pub async fn blocking<T, F>(f: F) -> Result<T, GreengrassError>
where
    F: FnOnce() -> Result<T, GreengrassError> + Send + 'static,
    T: Send + 'static,
{
    crate::http::blocking(move || Ok(f())).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_blobs_tokens_and_formats_are_validation_errors() {
        assert!(matches!(decode_blob("inlineRecipe", "not base64!"), Err(GreengrassError::Validation { .. })));
        assert_eq!(decode_blob("inlineRecipe", "e30=").unwrap(), b"{}");
        assert!(check_client_token("abc-123").is_ok());
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert!(check_client_token(bad).is_err(), "{bad:?}");
        }
        assert!(render_recipe(&json!({"a": 1}), "TOML").is_err());
        assert_eq!(render_recipe(&json!({"a": 1}), "YAML").unwrap(), b"a: 1\n");
    }

    #[test]
    fn pages_follow_max_results_and_the_token() {
        let params = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let hundred_and_one: Vec<u32> = (0..101).collect();
        assert_eq!(page(hundred_and_one.clone(), &params(&[])).unwrap().0.len(), 100, "100 by default");
        assert_eq!(page(hundred_and_one, &params(&[])).unwrap().1.as_deref(), Some("100"));
        assert_eq!(
            page(vec![1, 2, 3, 4, 5, 6], &params(&[("maxResults", "2"), ("nextToken", "4")])).unwrap(),
            (vec![5, 6], None)
        );
        assert!(page(vec![1], &params(&[("maxResults", "0")])).is_err());
        assert!(page(vec![1], &params(&[("maxResults", "101")])).is_err());
        assert!(page(vec![1], &params(&[("nextToken", "x")])).is_err());
        assert_eq!(page(vec![1, 2, 3], &params(&[("maxResults", "2")])).unwrap(), (vec![1, 2], Some("2".into())));
        assert_eq!(page(vec![1, 2, 3], &params(&[("maxResults", "2"), ("nextToken", "2")])).unwrap(), (vec![3], None));
    }
}
