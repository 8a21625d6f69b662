//! The AWS-compatible HTTP endpoint: the IoT control plane (restJson1, as
//! `aws-sdk-iot` speaks it) and the IoT data plane (`aws-sdk-iotdataplane`) on
//! one listener. Every request is authenticated and authorized by [`crate::iam::auth`]
//! (SigV4, then the caller's IAM policy for the matched route).
//!
//! The protocol is AWS restJson1; every route, method, label, query and
//! header binding, member name and status code comes from the service models
//! `iot.json` and `iot-data-plane.json` (API version 2015-05-28) in
//! awslabs/aws-sdk-rust `aws-models/`.
//!
//! # Layout
//! - [`control`]: the IoT control plane (things, types, policies,
//!   certificates, principals, DescribeEndpoint).
//! - [`thing_groups`]: the control plane's thing-group operations.
//! - [`data`]: the IoT data plane (shadows over HTTP, Publish).
//! - Jobs' control plane lives with the Jobs service: [`crate::jobs::http`]; fleet
//!   provisioning's with its service: [`crate::provisioning::http`]; fleet indexing's with its
//!   service: [`crate::fleet_index::http`].
//! - [`error`]: AWS exceptions on the wire.
//! - [`wire`]: request/response shapes and the extractors that read them.
//! - DynamoDB (AWS JSON 1.0 on `POST /`) is a layer inside authentication:
//!   [`crate::dynamodb::http`]; CloudWatch Logs (AWS JSON 1.1, also `POST /`) likewise:
//!   [`crate::logs::http`]; so is CloudWatch (RPC v2 CBOR, AWS JSON 1.0): [`crate::cloudwatch::http`],
//!   and Cognito user pools (AWS JSON 1.1, with each pool's JWKS): [`crate::cognito::http`].
//!
//! Registry and shadow calls are synchronous and touch SQLite, so every call
//! runs on tokio's blocking pool ([`blocking`]): a slow fsync or WAL
//! checkpoint never stalls the async workers serving MQTT, and a panic inside
//! a service becomes a `500 InternalFailureException` instead of a dropped
//! connection.

pub mod control;
pub mod data;
pub mod error;
pub mod thing_groups;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::bus::Bus;
use crate::registry::Registry;
use crate::shadows::ShadowService;
use error::AwsError;

/// Largest request body read. Above the 128 KiB Publish limit (checked
/// per operation) and the model's 404,600-character policy document.
pub const MAX_REQUEST_BYTES: usize = 512 * 1024;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The registry.
    pub registry: Arc<Registry>,
    /// The shadow service.
    pub shadows: ShadowService,
    /// Publishing into the broker (data-plane Publish).
    pub bus: Bus,
    /// MQTT endpoint `host:port` reported by DescribeEndpoint.
    pub mqtt_endpoint: String,
    /// IoT Jobs (its routes are [`crate::jobs::http`]).
    pub jobs: crate::jobs::JobsService,
    /// Fleet provisioning (its routes are [`crate::provisioning::http`]).
    pub provisioning: crate::provisioning::ProvisioningService,
    /// Event configurations (UpdateEventConfigurations, DescribeEventConfigurations).
    pub events: Arc<crate::events::EventSettings>,
    /// Role aliases (their routes are [`crate::iot_credentials::http`]).
    pub iot_credentials: crate::iot_credentials::IotCredentials,
    /// Topic rules (their routes are [`crate::rules::http`]).
    pub rules: crate::rules::TopicRules,
    /// The credentials provider's `host:port`, reported by DescribeEndpoint.
    pub credentials_endpoint: String,
    /// IAM: authorizes each matched route.
    pub iam: crate::iam::Iam,
    /// DynamoDB (its layer is [`crate::dynamodb::http`]).
    pub dynamodb: crate::dynamodb::DynamoDb,
    /// CloudWatch Logs (its layer is [`crate::logs::http`]).
    pub logs: crate::logs::Logs,
    /// CloudWatch metrics and alarms (its layer is [`crate::cloudwatch::http`]).
    pub cloudwatch: crate::cloudwatch::CloudWatch,
    /// Cognito user pools (its layer is [`crate::cognito::http`]).
    pub cognito: crate::cognito::Cognito,
    /// Fleet indexing and fleet metrics (their routes are [`crate::fleet_index::http`]).
    pub fleet_metrics: crate::fleet_index::metrics::FleetMetrics,
    /// Where the data plane's Publish counts its `AWS/IoT` metrics (`Protocol` `HTTP`).
    pub iot_metrics: Arc<crate::iot_metrics::IotMetrics>,
}

/// The router for every operation; a request no route matches is an `UnknownOperationException`.
pub fn router(state: AppState) -> axum::Router {
    router_with_fallback(state, Router::new().fallback(unknown_operation))
}

/// [`router`] with `fallback` answering what no route matches (the local cloud
/// passes S3 there, see [`crate::s3::route`]). Every route is authorized
/// ([`crate::iam::auth::authorize`]) after every request, the fallback's too, is
/// authenticated ([`crate::iam::auth::authenticate`]); a router in `fallback` authorizes its
/// own routes with the same layer.
pub fn router_with_fallback(state: AppState, fallback: Router) -> axum::Router {
    Router::new()
        .merge(control::routes())
        .merge(thing_groups::routes())
        .merge(data::routes())
        .merge(crate::jobs::http::routes())
        .merge(crate::provisioning::http::routes())
        .merge(crate::iot_credentials::http::routes())
        .merge(crate::rules::http::routes())
        .merge(crate::fleet_index::http::routes())
        .route_layer(middleware::from_fn_with_state(state.iam.clone(), crate::iam::auth::authorize))
        .fallback_service(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn_with_state(state.dynamodb.clone(), crate::dynamodb::http::serve))
        .layer(middleware::from_fn_with_state(state.logs.clone(), crate::logs::http::serve))
        .layer(middleware::from_fn_with_state(state.cloudwatch.clone(), crate::cloudwatch::http::serve))
        .layer(middleware::from_fn_with_state(state.cognito.clone(), crate::cognito::http::serve))
        .layer(middleware::from_fn_with_state(state.iam.clone(), crate::iam::auth::authenticate))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// Runs a registry or shadow call on the blocking pool; a panic becomes an
/// `InternalFailureException`.
pub async fn blocking<T, F>(f: F) -> Result<T, AwsError>
where
    F: FnOnce() -> Result<T, AwsError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => Err(AwsError::internal("the service failed while handling the request")),
        Err(_) => Err(AwsError::unavailable("the service is shutting down")),
    }
}

/// The answer to a request no route matches: 404 `UnknownOperationException`.
pub async fn unknown_operation(req: Request) -> Response {
    AwsError::unknown_operation(req.method().as_str(), req.uri().path()).into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    AwsError::method_not_allowed(req.method().as_str(), req.uri().path()).into_response()
}

/// Adds `x-amzn-RequestId`, which the SDKs report as the request id.
async fn request_id(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if let Ok(id) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert("x-amzn-RequestId", id);
    }
    response
}
