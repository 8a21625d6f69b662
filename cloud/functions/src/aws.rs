//! The AWS clients a function uses, configured as on AWS Lambda: region and credentials from the
//! environment the runtime gives the function (its execution role's session), the endpoint from
//! the SDK's own resolution (which honours `AWS_ENDPOINT_URL`, as the local cloud sets it). One
//! HTTPS client for every service: rustls with ring, the workspace's one crypto provider.

use aws_config::BehaviorVersion;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

/// The shared SDK configuration from the function's environment.
pub async fn config() -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(http).load().await
}

/// A DynamoDB client.
pub fn dynamodb(config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(config)
}

/// An IoT data-plane client. On AWS the data plane is the account's own endpoint
/// (`DescribeEndpoint` `iot:Data-ATS`), which the deployment passes in `IOT_DATA_ENDPOINT`
/// (`https://…-ats.iot.{region}.amazonaws.com`); without it the SDK's resolution applies.
pub fn iot_data(config: &aws_config::SdkConfig, endpoint: Option<&str>) -> aws_sdk_iotdataplane::Client {
    let mut builder = aws_sdk_iotdataplane::config::Builder::from(config);
    if let Some(url) = endpoint {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_iotdataplane::Client::from_conf(builder.build())
}

/// An environment variable, or `default` when unset; `Err` names a value that does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text.trim().parse().map_err(|_| format!("{name}={text:?} is not a valid value")),
    }
}

/// A required environment variable.
pub fn env_required(name: &str) -> Result<String, String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).ok_or_else(|| format!("{name} is not set"))
}

/// The SDK error's code and message, for an error the function reports.
pub fn describe<E, R>(operation: &str, err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    match err.as_service_error() {
        Some(e) => {
            format!("{operation}: {}: {}", e.code().unwrap_or("UnknownError"), e.message().unwrap_or("(no message)"))
        }
        None => format!("{operation}: {err:?}"),
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
