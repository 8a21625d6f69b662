//! Fleet indexing on the IoT control plane (restJson1; URIs, members and errors from `iot.json`):
//! UpdateIndexingConfiguration `POST /indexing/config`, GetIndexingConfiguration
//! `GET /indexing/config`, SearchIndex `POST /indices/search`, GetStatistics
//! `POST /indices/statistics`, ListIndices `GET /indices`, DescribeIndex `GET /indices/{indexName}`,
//! and the fleet metrics: CreateFleetMetric `PUT`, DescribeFleetMetric `GET`, UpdateFleetMetric
//! `PATCH` and DeleteFleetMetric `DELETE /fleet-metric/{metricName}`, ListFleetMetrics
//! `GET /fleet-metrics`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::json;

use super::metrics::{FleetMetricRequest, FleetMetrics};
use super::{
    ConnectivityIndexingMode, GroupIndexingMode, IndexError, THINGS_INDEX, ThingGroupIndexingConfiguration,
    ThingIndexingConfiguration,
};
use crate::http::AppState;
use crate::http::error::AwsError;
use crate::http::wire::{JsonBody, Label, Params, empty_ok, json_ok, page};
use crate::iam::auth::Caller;

type Reply = Result<Response, AwsError>;

/// SearchIndex's largest page (`QueryMaxResults`).
const MAX_SEARCH_RESULTS: i64 = 500;

/// The fleet-indexing routes of the IoT control plane.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/indexing/config", get(get_configuration).post(update_configuration))
        .route("/indices", get(list_indices))
        .route("/indices/search", post(search))
        .route("/indices/statistics", post(get_statistics))
        .route("/indices/{indexName}", get(describe_index))
        .route("/fleet-metrics", get(list_metrics))
        .route(
            "/fleet-metric/{metricName}",
            put(create_metric).get(describe_metric).patch(update_metric).delete(delete_metric),
        )
}

impl From<IndexError> for AwsError {
    fn from(e: IndexError) -> Self {
        let message = e.to_string();
        match e {
            IndexError::InvalidRequest(_) => AwsError::invalid_request(message),
            IndexError::InvalidQuery(_) => AwsError::new(StatusCode::BAD_REQUEST, "InvalidQueryException", message),
            IndexError::InvalidAggregation(_) => {
                AwsError::new(StatusCode::BAD_REQUEST, "InvalidAggregationException", message)
            }
            IndexError::NotFound(_) => AwsError::not_found(message),
            IndexError::AlreadyExists(name, arn) => AwsError {
                existing: Some((name, arn)),
                ..AwsError::new(StatusCode::CONFLICT, "ResourceAlreadyExistsException", message)
            },
            IndexError::VersionConflict(_) => AwsError::new(StatusCode::CONFLICT, "VersionConflictException", message),
            IndexError::Internal(_) => AwsError::internal(message),
        }
    }
}

async fn on<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&FleetMetrics) -> Result<T, IndexError> + Send + 'static,
) -> Result<T, AwsError> {
    let metrics = st.fleet_metrics.clone();
    crate::http::blocking(move || f(&metrics).map_err(AwsError::from)).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateConfigurationRequest {
    thing_indexing_configuration: Option<ThingIndexingConfiguration>,
    thing_group_indexing_configuration: Option<ThingGroupIndexingConfiguration>,
}

async fn update_configuration(
    State(st): State<AppState>,
    JsonBody(req): JsonBody<UpdateConfigurationRequest>,
) -> Reply {
    on(&st, move |m| {
        m.index().update_configuration(req.thing_indexing_configuration, req.thing_group_indexing_configuration)
    })
    .await?;
    Ok(json_ok(&json!({})))
}

async fn get_configuration(State(st): State<AppState>) -> Reply {
    let c = st.fleet_metrics.index().configuration();
    let connectivity = match c.connectivity {
        ConnectivityIndexingMode::Off => "OFF",
        ConnectivityIndexingMode::Status => "STATUS",
    };
    let things = serde_json::to_value(c.things).unwrap_or_default();
    let groups = match c.groups {
        GroupIndexingMode::Off => "OFF",
        GroupIndexingMode::On => "ON",
    };
    Ok(json_ok(&json!({
        "thingIndexingConfiguration": {
            "thingIndexingMode": things,
            "thingConnectivityIndexingMode": connectivity,
            "deviceDefenderIndexingMode": "OFF",
            "namedShadowIndexingMode": "OFF",
        },
        "thingGroupIndexingConfiguration": { "thingGroupIndexingMode": groups },
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchRequest {
    index_name: Option<String>,
    query_string: Option<String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    #[allow(dead_code)]
    query_version: Option<String>,
    aggregation_field: Option<String>,
}

/// The index and query of a SearchIndex or GetStatistics request, once the caller is allowed
/// `action` on the index (`arn:aws:iot:{region}:{account}:index/{indexName}`).
fn index_and_query(
    st: &AppState,
    caller: &Caller,
    action: &str,
    req: &SearchRequest,
) -> Result<(String, String), AwsError> {
    let index = req.index_name.clone().unwrap_or_else(|| THINGS_INDEX.into());
    let arn = format!("arn:aws:iot:{}:{}:index/{index}", st.iam.region(), st.iam.account());
    let principal = caller.0.as_ref().ok_or_else(|| {
        AwsError::new(StatusCode::FORBIDDEN, "MissingAuthenticationTokenException", "Missing Authentication Token")
    })?;
    crate::iam::actions::authorize_named(principal, action, &arn)
        .map_err(|m| AwsError::new(StatusCode::FORBIDDEN, "AccessDeniedException", m))?;
    let query = req.query_string.clone().ok_or_else(|| AwsError::invalid_request("queryString is required"))?;
    Ok((index, query))
}

async fn search(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<SearchRequest>,
) -> Reply {
    let (index, query) = index_and_query(&st, &caller, "iot:SearchIndex", &req)?;
    if let Some(n) = req.max_results
        && !(1..=MAX_SEARCH_RESULTS).contains(&n)
    {
        return Err(AwsError::invalid_request(format!("maxResults must be from 1 to {MAX_SEARCH_RESULTS}, got {n}")));
    }
    let docs = on(&st, move |m| m.index().search(&index, &query)).await?;
    let docs: Vec<_> = docs.iter().map(super::ThingDocument::to_json).collect();
    let (items, next) = page(docs, req.next_token.as_deref(), req.max_results, MAX_SEARCH_RESULTS as usize)?;
    let mut body = json!({ "things": items, "thingGroups": [] });
    if let Some(next) = next {
        body["nextToken"] = json!(next);
    }
    Ok(json_ok(&body))
}

async fn get_statistics(
    State(st): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<SearchRequest>,
) -> Reply {
    let (index, query) = index_and_query(&st, &caller, "iot:GetStatistics", &req)?;
    let field = req.aggregation_field.clone().unwrap_or_else(|| "thingName".into());
    let s = on(&st, move |m| m.index().statistics(&index, &query, &field)).await?;
    let mut stats = json!({ "count": s.count });
    for (name, value) in [("sum", s.sum), ("average", s.average()), ("minimum", s.minimum), ("maximum", s.maximum)] {
        if let Some(v) = value {
            stats[name] = json!(v);
        }
    }
    Ok(json_ok(&json!({ "statistics": stats })))
}

async fn list_indices(State(st): State<AppState>, params: Params) -> Reply {
    let size = params.int("maxResults", 1, 500)?;
    let names = st.fleet_metrics.index().indices();
    let (names, next) = page(names, params.str("nextToken"), size, 500)?;
    let mut body = json!({ "indexNames": names });
    if let Some(next) = next {
        body["nextToken"] = json!(next);
    }
    Ok(json_ok(&body))
}

async fn describe_index(State(st): State<AppState>, Label(name): Label) -> Reply {
    let schema = st.fleet_metrics.index().schema(&name)?;
    Ok(json_ok(&json!({ "indexName": name, "indexStatus": "ACTIVE", "schema": schema })))
}

async fn create_metric(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<FleetMetricRequest>,
) -> Reply {
    let m = on(&st, move |m| m.create(&name, req)).await?;
    Ok(json_ok(&json!({ "metricName": m.metric_name, "metricArn": m.metric_arn })))
}

async fn describe_metric(State(st): State<AppState>, Label(name): Label) -> Reply {
    let m = on(&st, move |m| m.describe(&name)).await?;
    Ok(json_ok(&m))
}

async fn update_metric(
    State(st): State<AppState>,
    Label(name): Label,
    JsonBody(req): JsonBody<FleetMetricRequest>,
) -> Reply {
    on(&st, move |m| m.update(&name, req)).await?;
    Ok(empty_ok())
}

async fn delete_metric(State(st): State<AppState>, Label(name): Label, params: Params) -> Reply {
    let expected = params.int("expectedVersion", i64::MIN, i64::MAX)?;
    on(&st, move |m| m.delete(&name, expected)).await?;
    Ok(empty_ok())
}

async fn list_metrics(State(st): State<AppState>, params: Params) -> Reply {
    let size = params.int("maxResults", 1, 250)?;
    let metrics = on(&st, |m| m.list()).await?;
    let items: Vec<_> =
        metrics.into_iter().map(|m| json!({ "metricName": m.metric_name, "metricArn": m.metric_arn })).collect();
    let (items, next) = page(items, params.str("nextToken"), size, 250)?;
    let mut body = json!({ "fleetMetrics": items });
    if let Some(next) = next {
        body["nextToken"] = json!(next);
    }
    Ok(json_ok(&body))
}
