//! The pump station's cloud side as AWS Lambda functions, written with AWS's `lambda_runtime`
//! crate so the same binaries run on AWS Lambda (`provided.al2023`) and on the local cloud's
//! Lambda, which serves the same Runtime API.
//!
//! # Layout
//!
//! - [`incidents`] and [`aggregates`]: the decisions, pure and table-tested — what an anomaly
//!   event becomes and when a repeated fault calls for maintenance; how telemetry folds into
//!   hourly aggregates.
//! - [`anomaly`] and [`telemetry`]: the two handlers, which read and write DynamoDB and the
//!   shadow with the AWS SDK for Rust around those decisions.
//! - [`aws`]: the SDK clients, configured from the function's environment.
//! - `src/bin/`: `anomaly-handler` and `telemetry-aggregator`, each a `bootstrap` in its
//!   deployment package (`provision app` builds the packages and deploys them).

pub mod aggregates;
pub mod anomaly;
pub mod aws;
pub mod incidents;
pub mod telemetry;

/// Runs `handler` under the Lambda Runtime API until the runtime stops the process. The
/// handler's `Err` fails the invocation with its message (`errorType` `Runtime.HandlerError`
/// style, as `lambda_runtime` reports it).
pub async fn serve<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    lambda_runtime::tracing::init_default_subscriber();
    let handler = &handler;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| async move {
            handler(event.payload).await.map_err(lambda_runtime::Error::from)
        },
    ))
    .await
}
