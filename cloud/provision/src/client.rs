//! Building the `aws-sdk-iot`, `aws-sdk-greengrassv2`, `aws-sdk-iam`, `aws-sdk-lambda`,
//! `aws-sdk-dynamodb`, `aws-sdk-cognitoidentityprovider` and `aws-sdk-s3` clients the way the AWS CLI would: region and credentials from
//! `aws-config`'s default chain (environment, shared config and credentials files, web identity,
//! ECS and EC2 instance metadata), the endpoint from `AWS_ENDPOINT_URL_IOT` / `AWS_ENDPOINT_URL`
//! or the profile's `endpoint_url` unless overridden. One HTTP client for every target: rustls with
//! the ring provider (the SDK's default client would bring aws-lc, which the workspace forbids).

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_iot::config::SharedHttpClient;

/// How to reach the AWS services (IoT Core's and Greengrass's control planes, S3).
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Overrides every other endpoint setting (`--endpoint-url`); `None` keeps the SDK's resolution.
    pub endpoint_url: Option<String>,
    /// Overrides the region from the environment or profile.
    pub region: Option<String>,
    /// Fixed credentials instead of the default chain (for callers in the same process as the
    /// local cloud, which accepts any).
    pub credentials: Option<Credentials>,
}

impl ClientOptions {
    /// The options for the local cloud an `endpoints.json` describes: its HTTP endpoint, its
    /// Region and the administrator's key pair it wrote there (it verifies every signature).
    pub fn for_local_cloud(
        endpoints: &cloud_api::endpoints::Endpoints,
    ) -> Result<ClientOptions, crate::ProvisionError> {
        Ok(ClientOptions {
            endpoint_url: Some(endpoints.http.clone()),
            region: Some(endpoints.region.clone()),
            credentials: Some(local_cloud_credentials(endpoints)?),
        })
    }
}

/// The command-line flags that choose where the AWS services are, shared by the binaries
/// (`provision`, `audit`); credentials always come from the default chain.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Target {
    /// Endpoint of the AWS services (e.g. the local cloud's `http`), as the AWS CLI's --endpoint-url.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Region (overrides AWS_REGION and the profile).
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
}

impl Target {
    /// The client options these flags give.
    pub fn options(&self) -> ClientOptions {
        ClientOptions { endpoint_url: self.endpoint_url.clone(), region: self.region.clone(), credentials: None }
    }
}

/// The administrator's key pair of the local cloud an `endpoints.json` describes, as SDK
/// credentials.
pub fn local_cloud_credentials(
    endpoints: &cloud_api::endpoints::Endpoints,
) -> Result<Credentials, crate::ProvisionError> {
    let pair = endpoints.credentials.as_ref().ok_or_else(|| {
        crate::ProvisionError::InvalidInput("endpoints.json names no administrator key pair (credentials)".into())
    })?;
    Ok(Credentials::new(&pair.access_key_id, &pair.secret_access_key, None, None, "local-cloud-administrator"))
}

/// The HTTPS client the SDK uses: rustls with ring.
pub fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// The shared SDK configuration: region, credentials and HTTP client from the default chain and
/// `options` (the endpoint is set per service, so the override wins over environment and profile).
async fn shared_config(options: &ClientOptions) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client());
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(credentials) = &options.credentials {
        loader = loader.credentials_provider(credentials.clone());
    }
    loader.load().await
}

/// A client of the SDK crate `$sdk` from the shared configuration, with `options`' endpoint
/// override (it wins over the environment and the profile).
macro_rules! client {
    ($sdk:ident, $options:expr) => {{
        let shared = shared_config($options).await;
        let mut config = $sdk::config::Builder::from(&shared);
        if let Some(url) = &$options.endpoint_url {
            config = config.endpoint_url(url);
        }
        $sdk::Client::from_conf(config.build())
    }};
}

/// An IoT control-plane client configured from the default chain and `options`.
pub async fn iot_client(options: &ClientOptions) -> aws_sdk_iot::Client {
    client!(aws_sdk_iot, options)
}

/// An IoT data-plane client (Publish) configured from the default chain and `options`.
pub async fn iot_data_client(options: &ClientOptions) -> aws_sdk_iotdataplane::Client {
    let shared = shared_config(options).await;
    let mut config = aws_sdk_iotdataplane::config::Builder::from(&shared);
    if let Some(url) = &options.endpoint_url {
        config = config.endpoint_url(url);
    }
    aws_sdk_iotdataplane::Client::from_conf(config.build())
}

/// A Greengrass V2 control-plane client configured from the default chain and `options`.
pub async fn greengrass_client(options: &ClientOptions) -> aws_sdk_greengrassv2::Client {
    client!(aws_sdk_greengrassv2, options)
}

/// An IAM client configured from the default chain and `options` (IAM is global: AWS signs it
/// for `us-east-1` whatever the region; the local cloud serves it on its one endpoint).
pub async fn iam_client(options: &ClientOptions) -> aws_sdk_iam::Client {
    client!(aws_sdk_iam, options)
}

/// A Lambda client configured from the default chain and `options`.
pub async fn lambda_client(options: &ClientOptions) -> aws_sdk_lambda::Client {
    client!(aws_sdk_lambda, options)
}

/// A DynamoDB client configured from the default chain and `options`.
pub async fn dynamodb_client(options: &ClientOptions) -> aws_sdk_dynamodb::Client {
    client!(aws_sdk_dynamodb, options)
}

/// A CloudWatch client configured from the default chain and `options`.
pub async fn cloudwatch_client(options: &ClientOptions) -> aws_sdk_cloudwatch::Client {
    client!(aws_sdk_cloudwatch, options)
}

/// A CloudWatch Logs client configured from the default chain and `options`.
pub async fn cloudwatch_logs_client(options: &ClientOptions) -> aws_sdk_cloudwatchlogs::Client {
    client!(aws_sdk_cloudwatchlogs, options)
}

/// A Cognito user pools client configured from the default chain and `options`.
pub async fn cognito_client(options: &ClientOptions) -> aws_sdk_cognitoidentityprovider::Client {
    client!(aws_sdk_cognitoidentityprovider, options)
}

/// An S3 client configured from the default chain and `options`. With an endpoint override the
/// bucket goes in the path (`http://host/bucket/key`), which the local cloud requires and other
/// S3-compatible endpoints accept; AWS's own endpoint keeps virtual-hosted addressing.
pub async fn s3_client(options: &ClientOptions) -> aws_sdk_s3::Client {
    let shared = shared_config(options).await;
    let mut config = aws_sdk_s3::config::Builder::from(&shared);
    if let Some(url) = &options.endpoint_url {
        config = config.endpoint_url(url).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(config.build())
}
