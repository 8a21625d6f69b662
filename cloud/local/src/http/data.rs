//! The IoT data plane (`aws-sdk-iotdataplane`, `aws iot-data …`): the Device
//! Shadow over HTTP and Publish. Routes and members follow
//! `iot-data-plane.json` (service `IotMoonrakerService`, 2015-05-28).
//!
//! Shadow documents are blob payloads: the request body goes to the
//! [`ShadowService`](crate::shadows::ShadowService) untouched and its JSON
//! answer is the response body, exactly what the MQTT `…/accepted` topics
//! carry. The shadow service also publishes the usual MQTT responses, so an
//! HTTP update produces the same delta and documents messages as an MQTT one.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;

use super::error::AwsError;
use super::wire::*;
use super::{AppState, blocking};
use crate::bus::{BusMessage, Publisher, ServiceHandler};
use crate::iot_metrics::BrokerMetric;

/// Client id the shadow service sees for requests that come through HTTP Publish.
pub const HTTP_PUBLISHER_CLIENT_ID: &str = "iotdata-http-publish";

/// Routes of the data plane.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/things/{thingName}/shadow",
            get(get_thing_shadow).post(update_thing_shadow).delete(delete_thing_shadow),
        )
        .route("/api/things/shadow/ListNamedShadowsForThing/{thingName}", get(list_named_shadows_for_thing))
        // The model's `{topic}` label is not greedy, so SDKs send `/` as `%2F`;
        // the catch-all also takes a topic whose slashes arrived unencoded.
        .route("/topics/{*topic}", post(publish))
}

type Reply = Result<Response, AwsError>;

/// The thing name label and the optional `name` query parameter, validated.
fn shadow_target(thing: &str, params: &Params) -> Result<Option<String>, AwsError> {
    check_name("thing name", thing)?;
    match params.str("name") {
        None => Ok(None),
        Some(name) => {
            check_shadow_name(name)?;
            Ok(Some(name.to_owned()))
        }
    }
}

fn document(value: &serde_json::Value) -> Reply {
    serde_json::to_vec(value)
        .map(json_bytes)
        .map_err(|e| AwsError::internal(format!("could not encode the shadow document: {e}")))
}

async fn get_thing_shadow(State(st): State<AppState>, Label(thing): Label, params: Params) -> Reply {
    let shadow = shadow_target(&thing, &params)?;
    let shadows = st.shadows.clone();
    let doc = blocking(move || Ok(shadows.get(&thing, shadow.as_deref())?)).await?;
    document(&doc)
}

async fn update_thing_shadow(
    State(st): State<AppState>,
    Label(thing): Label,
    params: Params,
    Body(body): Body,
) -> Reply {
    let shadow = shadow_target(&thing, &params)?;
    let shadows = st.shadows.clone();
    let doc = blocking(move || Ok(shadows.update(&thing, shadow.as_deref(), &body)?)).await?;
    document(&doc)
}

async fn delete_thing_shadow(State(st): State<AppState>, Label(thing): Label, params: Params) -> Reply {
    let shadow = shadow_target(&thing, &params)?;
    let shadows = st.shadows.clone();
    let doc = blocking(move || Ok(shadows.delete(&thing, shadow.as_deref())?)).await?;
    document(&doc)
}

async fn list_named_shadows_for_thing(State(st): State<AppState>, Label(thing): Label, params: Params) -> Reply {
    check_name("thing name", &thing)?;
    let page_size = params.int("pageSize", 1, 100)?.map(|n| n as usize);
    let token = params.str("nextToken").filter(|t| !t.is_empty()).map(str::to_owned);
    let shadows = st.shadows.clone();
    let page = blocking(move || Ok(shadows.list_named(&thing, token.as_deref(), page_size)?)).await?;
    Ok(json_ok(&ListNamedShadowsResponse {
        results: page.results,
        next_token: page.next_token,
        timestamp: page.timestamp,
    }))
}

async fn publish(State(st): State<AppState>, Label(topic): Label, params: Params, Body(payload): Body) -> Reply {
    let metrics = st.iot_metrics.clone();
    let published = publish_checked(st, topic, params, payload).await;
    let metric = match &published {
        Ok(_) => BrokerMetric::PublishInSuccess,
        Err(_) => BrokerMetric::PublishInClientError,
    };
    metrics.count(crate::iot_metrics::Protocol::Http, metric);
    published
}

async fn publish_checked(st: AppState, topic: String, params: Params, payload: Bytes) -> Reply {
    let qos = params.int("qos", 0, 1)?.unwrap_or(0) as u8;
    let retain = params.bool("retain")?.unwrap_or(false);
    if payload.len() > cloud_api::limits::MAX_PAYLOAD_BYTES {
        return Err(AwsError::too_large(format!(
            "payload is {} bytes, the limit is {}",
            payload.len(),
            cloud_api::limits::MAX_PAYLOAD_BYTES
        )));
    }
    blocking(move || deliver(&st, topic, payload, qos, retain)).await?;
    Ok(empty_ok())
}

/// Delivers a Publish like a client's MQTT publish: to subscribers through
/// the bus, and, on a shadow request topic, to the shadow service too.
fn deliver(st: &AppState, topic: String, payload: Bytes, qos: u8, retain: bool) -> Result<(), AwsError> {
    cloud_api::topic::validate_topic_name(&topic)
        .map_err(|e| AwsError::invalid_request(format!("invalid topic {topic:?}: {e}")))?;
    // Subscribers see the request before the service's answer, as over MQTT.
    let wanted = st.shadows.wants(&topic);
    let msg = BusMessage { topic: topic.clone(), payload: payload.clone(), qos, retain, to: None, from_rules: false };
    if !st.bus.publish(msg) {
        return Err(AwsError::unavailable("the message broker has stopped"));
    }
    if wanted {
        let from = Publisher { client_id: HTTP_PUBLISHER_CLIENT_ID.into(), certificate_id: String::new() };
        st.shadows.handle(&from, &topic, payload);
    }
    Ok(())
}
