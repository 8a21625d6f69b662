//! The core's client of the AWS IoT Greengrass V2 data plane (`greengrassDataPlane` in
//! `endpoints.json`; on AWS `greengrass-ats.iot.{region}.amazonaws.com:8443`): the calls a core
//! makes while it deploys from the cloud — ResolveComponentCandidates and
//! GetComponentVersionArtifact (Greengrass V2 API Reference, data plane operations).
//!
//! As the nucleus's `GreengrassServiceClientFactory` does, it is AWS's own SDK
//! (`aws-sdk-greengrassv2`) with an HTTP client that presents the core device's certificate
//! (mutual TLS, the `sdk-mtls` crate) and no request signing: the data plane authorizes each call by the IoT policies
//! of that certificate (`greengrass:ResolveComponentCandidates`,
//! `greengrass:GetComponentVersionArtifact`). The TLS identity is the one the MQTT bridge
//! uses ([`super::bridge::device_tls_config`]).
//!
//! Errors are sorted by what the caller does next ([`ClientError::is_retryable`]); the
//! sorting is [`classify`], a pure function over what came back, with the phrases the
//! nucleus's `ComponentServiceHelper` reads ("claim platform", "no usable version").
//! Requests are not retried here (the SDK's retries are off): the deployment that calls decides.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_greengrassv2::config::http::HttpResponse;
use aws_sdk_greengrassv2::config::retry::RetryConfig;
use aws_sdk_greengrassv2::config::timeout::TimeoutConfig;
use aws_sdk_greengrassv2::config::{BehaviorVersion, Region};
use aws_sdk_greengrassv2::error::DisplayErrorContext;
use aws_sdk_greengrassv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_greengrassv2::types::{ComponentCandidate, ComponentPlatform};
use greengrass_recipe::DevicePlatform;
use sdk_mtls::MtlsHttpClient;

use super::bridge::device_tls_config;
use super::identity::{self, FollowsIdentity, TlsIdentity};
use super::options::CloudOptions;

/// How long one data-plane call may take, connection included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A data-plane operation, and the IoT policy action that authorizes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// ResolveComponentCandidates.
    ResolveComponentCandidates,
    /// GetComponentVersionArtifact.
    GetComponentVersionArtifact,
}

impl Operation {
    /// The policy action the core's certificate needs for it.
    pub fn action(self) -> &'static str {
        match self {
            Operation::ResolveComponentCandidates => "greengrass:ResolveComponentCandidates",
            Operation::GetComponentVersionArtifact => "greengrass:GetComponentVersionArtifact",
        }
    }
}

/// Why a data-plane call failed, sorted by what the caller does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The client cannot be built: unreadable certificate, key or CA, or no data-plane
    /// endpoint (fix the configuration).
    #[error("the Greengrass data-plane client cannot be set up: {0}")]
    Setup(String),
    /// No answer: connection refused or cut, TLS handshake failed, timed out (retry later).
    #[error("the Greengrass data plane did not answer {operation:?}: {reason}")]
    Unreachable {
        /// The call.
        operation: Operation,
        /// What went wrong.
        reason: String,
    },
    /// Throttled (429 or `ThrottlingException`; retry later).
    #[error("the Greengrass data plane throttled {operation:?}: {message}")]
    Throttled {
        /// The call.
        operation: Operation,
        /// The service's message.
        message: String,
    },
    /// A server error (5xx; retry later).
    #[error("the Greengrass data plane failed {operation:?} with HTTP {status}: {message}")]
    ServerError {
        /// The call.
        operation: Operation,
        /// The HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// The core's certificate is not allowed (give up; the device's IoT policy must allow
    /// `action`, and the certificate must be ACTIVE).
    #[error("access denied: the core device's certificate needs the IoT policy action {action} ({message})")]
    AccessDenied {
        /// The missing policy action.
        action: &'static str,
        /// The service's message.
        message: String,
    },
    /// No cloud version of `component` meets the requirements (give up).
    #[error("no usable version of {component} in the cloud for the requirements {requirements:?}: {message}")]
    NoUsableVersion {
        /// The component.
        component: String,
        /// The requirements asked for (by dependent).
        requirements: BTreeMap<String, String>,
        /// The service's message.
        message: String,
    },
    /// Versions meet the requirements but none claims this device's platform (give up).
    #[error(
        "no version of {component} that meets the requirements claims platform compatibility with {platform}: {message}"
    )]
    IncompatiblePlatform {
        /// The component.
        component: String,
        /// The device's platform attributes, as sent.
        platform: String,
        /// The service's message.
        message: String,
    },
    /// The artifact or component version does not exist (give up).
    #[error("not found by {operation:?}: {message}")]
    NotFound {
        /// The call.
        operation: Operation,
        /// The service's message.
        message: String,
    },
    /// The service refused the request as malformed (give up: a bug or a bad recipe).
    #[error("the Greengrass data plane refused {operation:?} ({code}, HTTP {status}): {message}")]
    Rejected {
        /// The call.
        operation: Operation,
        /// The error code.
        code: String,
        /// The HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// An answer that does not make sense (give up).
    #[error("bad answer to {operation:?}: {reason}")]
    BadAnswer {
        /// The call.
        operation: Operation,
        /// What is wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// True when the same call may succeed later (connection, throttling, 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClientError::Unreachable { .. } | ClientError::Throttled { .. } | ClientError::ServerError { .. }
        )
    }
}

/// What the data plane answered with, when it was an error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorAnswer<'a> {
    /// HTTP status.
    pub status: u16,
    /// The error code (`AccessDeniedException`, …), when the body carried one.
    pub code: Option<&'a str>,
    /// The error message.
    pub message: Option<&'a str>,
}

/// The context of a call, for the errors that name it.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    /// The call.
    pub operation: Operation,
    /// The component asked about (ResolveComponentCandidates).
    pub component: &'a str,
    /// Its version requirements.
    pub requirements: &'a BTreeMap<String, String>,
    /// The device platform sent.
    pub platform: &'a DevicePlatform,
}

/// Sorts an error answer of the data plane by what to do next (pure).
pub fn classify(cx: CallContext<'_>, answer: ErrorAnswer<'_>) -> ClientError {
    let operation = cx.operation;
    let message = answer.message.unwrap_or_default().to_string();
    let code = answer.code.unwrap_or_default();
    if answer.status == 429 || code == "ThrottlingException" {
        return ClientError::Throttled { operation, message };
    }
    if answer.status >= 500 {
        return ClientError::ServerError { operation, status: answer.status, message };
    }
    if answer.status == 403 || code == "AccessDeniedException" {
        return ClientError::AccessDenied { action: operation.action(), message };
    }
    if answer.status == 404 || code == "ResourceNotFoundException" {
        return match operation {
            // The nucleus reads the message: "claim platform" means versions exist for other
            // platforms; anything else (usually "no usable version") means none fits.
            Operation::ResolveComponentCandidates if message.contains("claim platform") => {
                ClientError::IncompatiblePlatform {
                    component: cx.component.to_string(),
                    platform: platform_text(cx.platform),
                    message,
                }
            }
            Operation::ResolveComponentCandidates => ClientError::NoUsableVersion {
                component: cx.component.to_string(),
                requirements: cx.requirements.clone(),
                message,
            },
            Operation::GetComponentVersionArtifact => ClientError::NotFound { operation, message },
        };
    }
    ClientError::Rejected { operation, code: code.to_string(), status: answer.status, message }
}

fn platform_text(platform: &DevicePlatform) -> String {
    let pairs: Vec<String> = platform.attributes().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

/// A component version the data plane chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Its version ARN (for GetComponentVersionArtifact).
    pub arn: String,
    /// The component name.
    pub name: String,
    /// The version chosen.
    pub version: String,
    /// Its recipe, as the service stores it (JSON).
    pub recipe_text: String,
}

/// The data-plane endpoint `endpoints.json` names.
fn data_plane(cloud: &CloudOptions) -> Result<&str, ClientError> {
    cloud
        .endpoints
        .greengrass_data_plane
        .as_deref()
        .ok_or_else(|| ClientError::Setup("endpoints.json names no Greengrass data plane (greengrassDataPlane)".into()))
}

/// The core's data-plane client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct GreengrassClient {
    sdk: Arc<FollowsIdentity<aws_sdk_greengrassv2::Client>>,
}

impl GreengrassClient {
    /// The client of a core with `cloud`: its certificate and key, the CA of `endpoints.json`,
    /// and the data-plane endpoint it advertises.
    pub fn from_options(cloud: &CloudOptions) -> Result<Self, ClientError> {
        let endpoint = data_plane(cloud)?;
        let tls = device_tls_config(&cloud.endpoints.ca_file, &cloud.cert_file, &cloud.key)
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Self::new(endpoint, &cloud.endpoints.region, identity::fixed(tls)))
    }

    /// The client of a core with `cloud` that presents whatever `identity` presents now (the
    /// bridge's, so it follows a certificate rotation).
    pub fn following(cloud: &CloudOptions, identity: TlsIdentity) -> Result<Self, ClientError> {
        Ok(Self::new(data_plane(cloud)?, &cloud.endpoints.region, identity))
    }

    /// A client of the data plane at `endpoint` (an `https://` URL) in `region`, presenting the
    /// identity of `tls`.
    pub fn new(endpoint: &str, region: &str, identity: TlsIdentity) -> Self {
        let (endpoint, region) = (endpoint.to_owned(), region.to_owned());
        let sdk = FollowsIdentity::new(identity, move |tls| {
            let conf = aws_sdk_greengrassv2::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new(region.clone()))
                .allow_no_auth()
                .endpoint_url(&endpoint)
                .retry_config(RetryConfig::disabled())
                .timeout_config(TimeoutConfig::builder().operation_timeout(CALL_TIMEOUT).build())
                .http_client(MtlsHttpClient::new(tls))
                .build();
            aws_sdk_greengrassv2::Client::from_conf(conf)
        });
        Self { sdk: Arc::new(sdk) }
    }

    /// The TLS configuration of the core's identity: the artifact downloader uses it too, so
    /// presigned URLs are checked against the same CA.
    pub fn tls(&self) -> Arc<rustls::ClientConfig> {
        self.sdk.tls()
    }

    /// ResolveComponentCandidates for one component, as the nucleus calls it: the device's
    /// platform attributes, the version the core has (if any), and the requirements of its
    /// dependents (dependent name → npm-style range).
    pub async fn resolve(
        &self,
        component: &str,
        local_version: Option<&str>,
        requirements: &BTreeMap<String, String>,
        platform: &DevicePlatform,
    ) -> Result<Resolved, ClientError> {
        let operation = Operation::ResolveComponentCandidates;
        let cx = CallContext { operation, component, requirements, platform };
        let mut attributes = ComponentPlatform::builder();
        for (k, v) in platform.attributes() {
            attributes = attributes.attributes(k, v);
        }
        let candidate = ComponentCandidate::builder()
            .component_name(component)
            .set_component_version(local_version.map(str::to_string))
            .set_version_requirements(Some(requirements.clone().into_iter().collect()))
            .build();
        let out = self
            .sdk
            .client()
            .resolve_component_candidates()
            .platform(attributes.build())
            .component_candidates(candidate)
            .send()
            .await
            .map_err(|e| sdk_error(cx, e))?;
        let bad = |reason: String| ClientError::BadAnswer { operation, reason };
        let [chosen] = out.resolved_component_versions() else {
            return Err(bad(format!(
                "{} resolved versions for one candidate",
                out.resolved_component_versions().len()
            )));
        };
        let name = chosen.component_name().unwrap_or_default();
        if name != component {
            return Err(bad(format!("asked for {component}, answered {name:?}")));
        }
        let (Some(arn), Some(version), Some(recipe)) = (chosen.arn(), chosen.component_version(), chosen.recipe())
        else {
            return Err(bad(format!("{component}: the answer lacks the ARN, version or recipe")));
        };
        let recipe_text = String::from_utf8(recipe.as_ref().to_vec())
            .map_err(|_| bad(format!("{component} {version}: the recipe is not UTF-8")))?;
        Ok(Resolved { arn: arn.to_string(), name: name.to_string(), version: version.to_string(), recipe_text })
    }

    /// GetComponentVersionArtifact: a presigned URL to download `artifact_name` (the
    /// artifact URI without its scheme, `bucket/key` for `s3://bucket/key`) of the version
    /// `version_arn`.
    pub async fn artifact_url(&self, version_arn: &str, artifact_name: &str) -> Result<String, ClientError> {
        let operation = Operation::GetComponentVersionArtifact;
        let none = BTreeMap::new();
        let platform = DevicePlatform::default();
        let cx = CallContext { operation, component: version_arn, requirements: &none, platform: &platform };
        let out = self
            .sdk
            .client()
            .get_component_version_artifact()
            .arn(version_arn)
            .artifact_name(artifact_name)
            .send()
            .await
            .map_err(|e| sdk_error(cx, e))?;
        let url = out.pre_signed_url();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ClientError::BadAnswer { operation, reason: format!("not an HTTP(S) URL: {url:?}") });
        }
        Ok(url.to_string())
    }
}

/// Sorts an SDK error: a service answer through [`classify`], the rest by where it failed.
fn sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    cx: CallContext<'_>,
    e: SdkError<E, HttpResponse>,
) -> ClientError {
    let operation = cx.operation;
    match &e {
        SdkError::ServiceError(service) => classify(
            cx,
            ErrorAnswer {
                status: service.raw().status().as_u16(),
                code: service.err().code(),
                message: service.err().message(),
            },
        ),
        SdkError::ResponseError(r) if r.raw().status().as_u16() >= 500 || r.raw().status().as_u16() == 429 => {
            classify(cx, ErrorAnswer { status: r.raw().status().as_u16(), code: None, message: None })
        }
        SdkError::ResponseError(_) => ClientError::BadAnswer { operation, reason: DisplayErrorContext(&e).to_string() },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            ClientError::Unreachable { operation, reason: DisplayErrorContext(&e).to_string() }
        }
        _ => ClientError::Setup(DisplayErrorContext(&e).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_cx<'a>(requirements: &'a BTreeMap<String, String>, platform: &'a DevicePlatform) -> CallContext<'a> {
        CallContext {
            operation: Operation::ResolveComponentCandidates,
            component: "com.example.A",
            requirements,
            platform,
        }
    }

    fn answer(status: u16, code: &'static str, message: &'static str) -> ErrorAnswer<'static> {
        ErrorAnswer { status, code: Some(code), message: Some(message) }
    }

    #[test]
    fn errors_are_sorted_by_what_the_caller_does_next() {
        let requirements = BTreeMap::from([("com.example.B".to_string(), ">=1.0.0".to_string())]);
        let platform = DevicePlatform::new("linux", "amd64");
        let cx = resolve_cx(&requirements, &platform);
        let table: [(ErrorAnswer<'_>, bool, &str); 9] = [
            (answer(429, "ThrottlingException", "slow down"), true, "Throttled"),
            (answer(400, "ThrottlingException", "slow down"), true, "Throttled"),
            (answer(500, "InternalServerException", "oops"), true, "ServerError"),
            (answer(503, "", ""), true, "ServerError"),
            (answer(403, "AccessDeniedException", "no"), false, "AccessDenied"),
            (
                answer(404, "ResourceNotFoundException", "does not claim platform compatibility"),
                false,
                "IncompatiblePlatform",
            ),
            (answer(404, "ResourceNotFoundException", "no usable version"), false, "NoUsableVersion"),
            (ErrorAnswer { status: 404, code: None, message: None }, false, "NoUsableVersion"),
            (answer(400, "ValidationException", "bad"), false, "Rejected"),
        ];
        for (a, retry, kind) in table {
            let e = classify(cx, a);
            assert_eq!(e.is_retryable(), retry, "{a:?} → {e:?}");
            assert!(format!("{e:?}").starts_with(kind), "{a:?} → {e:?}, expected {kind}");
        }
    }

    #[test]
    fn access_denied_names_the_policy_action_of_the_call() {
        let none = BTreeMap::new();
        let platform = DevicePlatform::default();
        for (operation, action) in [
            (Operation::ResolveComponentCandidates, "greengrass:ResolveComponentCandidates"),
            (Operation::GetComponentVersionArtifact, "greengrass:GetComponentVersionArtifact"),
        ] {
            let cx = CallContext { operation, ..resolve_cx(&none, &platform) };
            let e = classify(cx, answer(403, "AccessDeniedException", "not authorized"));
            assert_eq!(e, ClientError::AccessDenied { action, message: "not authorized".into() });
            assert!(e.to_string().contains(action), "{e}");
        }
    }

    #[test]
    fn a_missing_artifact_is_not_found_not_a_version_problem() {
        let none = BTreeMap::new();
        let platform = DevicePlatform::default();
        let cx = CallContext { operation: Operation::GetComponentVersionArtifact, ..resolve_cx(&none, &platform) };
        let e = classify(cx, answer(404, "ResourceNotFoundException", "no usable version"));
        assert!(matches!(e, ClientError::NotFound { .. }), "{e:?}");
    }

    #[test]
    fn an_incompatible_platform_names_the_platform_sent() {
        let none = BTreeMap::new();
        let platform = DevicePlatform::new("linux", "aarch64");
        let e = classify(resolve_cx(&none, &platform), answer(404, "ResourceNotFoundException", "claim platform"));
        assert!(e.to_string().contains("{architecture=aarch64, os=linux}"), "{e}");
    }

    #[test]
    fn a_core_without_a_data_plane_endpoint_is_a_setup_error() {
        let endpoints: cloud_api::endpoints::Endpoints = serde_json::from_value(serde_json::json!({
            "mqtt": "127.0.0.1:8883", "http": "http://127.0.0.1:4566", "caFile": "/nonexistent/ca.pem",
            "region": "us-east-1", "accountId": "000000000000"
        }))
        .unwrap();
        let cloud = CloudOptions {
            endpoints,
            cert_file: "/nonexistent/c.pem".into(),
            key: crate::core::key_store::DeviceKey::File("/nonexistent/k.pem".into()),
            fleet_status: None,
            telemetry_intervals: None,
            cloud_deployments: true,
            mqtt_version: Default::default(),
            certificate_rotation: None,
        };
        let e = GreengrassClient::from_options(&cloud).unwrap_err();
        assert!(matches!(&e, ClientError::Setup(m) if m.contains("greengrassDataPlane")), "{e:?}");
        assert!(!e.is_retryable());
    }
}
