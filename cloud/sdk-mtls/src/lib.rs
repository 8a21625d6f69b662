//! An HTTP client for the AWS SDK for Rust that presents a client certificate (mutual TLS).
//!
//! Greengrass cores call the Greengrass V2 data plane (ResolveComponentCandidates,
//! GetComponentVersionArtifact, on port 8443) with AWS's SDK, authenticated by the device
//! certificate instead of SigV4 (the nucleus's `GreengrassServiceClientFactory`). The SDK's own
//! HTTP client (`aws-smithy-http-client`) takes no client identity, so this is hyper's client
//! over rustls, configured by the caller: give it a [`rustls::ClientConfig`] with the roots to
//! trust and the device's certificate chain and key, and hand it to an SDK config's
//! `http_client` (with `allow_no_auth()`).
//!
//! Used by the simulated core (`device-sim`'s `core::greengrass_client`) and by the local
//! cloud's data-plane test, which plays a core with AWS's SDK.

use std::sync::Arc;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;

/// An SDK HTTP client over HTTPS (HTTP/1.1) with the TLS configuration it was built with.
/// Cheap to clone (connections are pooled and shared).
#[derive(Debug, Clone)]
pub struct MtlsHttpClient {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        SdkBody,
    >,
}

impl MtlsHttpClient {
    /// A client presenting the identity of `tls` (if it has one) and trusting its roots.
    /// Plain `http://` URLs are refused.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_only()
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, SdkBody>(https);
        Self { client }
    }

    /// A plain `GET` of `url` with `headers` (outside the SDK: the AWS IoT credentials
    /// provider has no SDK operation): the status and the whole body, at most `limit` bytes.
    pub async fn get(&self, url: &str, headers: &[(&str, &str)], limit: usize) -> Result<(u16, Vec<u8>), GetError> {
        use http_body_util::BodyExt as _;
        let mut request = http::Request::get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(SdkBody::empty()).map_err(|e| GetError::Request(e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| GetError::Connect(format!("{e:?}")))?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(|e| GetError::Body(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok((status, body))
    }
}

/// Why [`MtlsHttpClient::get`] got no answer.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    /// The URL or a header is malformed: fix the input.
    #[error("bad request: {0}")]
    Request(String),
    /// No connection, or the TLS handshake failed (a wrong or revoked certificate, say): retry or fix the identity.
    #[error("cannot reach the server: {0}")]
    Connect(String),
    /// The body broke off or was larger than allowed.
    #[error("reading the answer: {0}")]
    Body(String),
}

impl HttpConnector for MtlsHttpClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let client = self.client.clone();
        HttpConnectorFuture::new(async move {
            let request = request.try_into_http1x().map_err(|e| ConnectorError::other(e.into(), None))?;
            let response = client.request(request).await.map_err(|e| ConnectorError::io(e.into()))?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

impl HttpClient for MtlsHttpClient {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}
