//! `anomaly-handler`: the Lambda function behind the anomalies rule (see `pump_functions::anomaly`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let handler = pump_functions::anomaly::AnomalyHandler::from_env().await.map_err(lambda_runtime::Error::from)?;
    pump_functions::serve(|event| handler.handle(event)).await
}
