//! Building the `aws-sdk-iot` client the way the AWS CLI would: region and credentials from
//! `aws-config`'s default chain (environment, shared config and credentials files, web identity,
//! ECS and EC2 instance metadata), the endpoint from `AWS_ENDPOINT_URL_IOT` / `AWS_ENDPOINT_URL`
//! or the profile's `endpoint_url` unless overridden. One HTTP client for every target: rustls with
//! the ring provider (the SDK's default client would bring aws-lc, which the workspace forbids).

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use aws_sdk_iot::config::SharedHttpClient;

/// How to reach IoT Core's control plane.
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

/// The HTTPS client the SDK uses: rustls with ring.
pub fn http_client() -> SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// An IoT control-plane client configured from the default chain and `options`.
pub async fn iot_client(options: &ClientOptions) -> aws_sdk_iot::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http_client());
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(credentials) = &options.credentials {
        loader = loader.credentials_provider(credentials.clone());
    }
    let shared = loader.load().await;
    // Set on the service config, the override wins over AWS_ENDPOINT_URL_IOT and profiles.
    let mut config = aws_sdk_iot::config::Builder::from(&shared);
    if let Some(url) = &options.endpoint_url {
        config = config.endpoint_url(url);
    }
    aws_sdk_iot::Client::from_conf(config.build())
}
