//! `telemetry-aggregator`: the Lambda function behind the telemetry rule (see
//! `pump_functions::telemetry`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let aggregator =
        pump_functions::telemetry::TelemetryAggregator::from_env().await.map_err(lambda_runtime::Error::from)?;
    pump_functions::serve(|event| aggregator.handle(event)).await
}
