//! The token exchange service (`aws.greengrass.TokenExchangeService`): AWS credentials for
//! components, from the AWS IoT credentials provider, as the nucleus's `tes` package serves them
//! (`TokenExchangeService`, `CredentialRequestHandler`, `HttpServerImpl`).
//!
//! - The core serves `GET http://127.0.0.1:{port}/2016-11-01/credentialprovider/` (port: the
//!   service's `port` configuration, 0 for any free port). Components that depend on
//!   `aws.greengrass.TokenExchangeService` get the URL in `AWS_CONTAINER_CREDENTIALS_FULL_URI`
//!   and their IPC token in `AWS_CONTAINER_AUTHORIZATION_TOKEN`, which is what the AWS SDKs'
//!   container credentials providers (`aws-config`'s `ECSCredentialsProvider`, botocore's
//!   `ContainerProvider`) read. The nucleus writes `localhost`; this core writes the loopback
//!   address itself, so no name resolution can send the request to `::1` where nothing listens.
//! - A request must carry a component's IPC token in `Authorization` (else 403, as the nucleus
//!   answers an unknown token); any component may ask (the nucleus's default TES policy allows
//!   every principal). Other methods get 405, other paths 400.
//! - The core asks the credentials provider
//!   (`GET {credentialsProvider}/role-aliases/{iotRoleAlias}/credentials`, over mutual TLS with
//!   the core's certificate and key, `x-amzn-iot-thingname: {thing}`; `iotRoleAlias` is the
//!   nucleus's configuration) and answers in the SDKs' container format
//!   (`AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`).
//! - **Cache**: credentials are kept until five minutes before they expire; one fetch at a time,
//!   concurrent requests wait for it. The provider's errors are kept too, so a broken setup does
//!   not hammer the cloud: 4xx for 120 s, 5xx for 60 s, anything else (no connection, an answer
//!   that does not parse) for 300 s — the nucleus's defaults. A request that waits more than
//!   30 s gets 504.
//!
//! One difference from the nucleus: without `iotRoleAlias` (or without a cloud connection or a
//! `credentialsProvider` in `endpoints.json`) the nucleus's TES goes ERRORED and its hard
//! dependents never start; here it runs and answers 500 with the reason, so a site without a
//! cloud still runs its components.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use sdk_mtls::MtlsHttpClient;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::Tokens;
use super::bridge::device_tls_config;
use super::identity::{FollowsIdentity, TlsIdentity};
use super::options::CoreOptions;
use crate::recipe::ConfigurationUpdate;

/// The service's component name.
pub const TOKEN_EXCHANGE_SERVICE: &str = "aws.greengrass.TokenExchangeService";
/// The version the simulated core claims for dependency resolution.
pub const TES_VERSION: &str = "2.0.3";
/// The path the service answers on (the nucleus's `HttpServerImpl.URL`).
pub const CREDENTIALS_PATH: &str = "/2016-11-01/credentialprovider/";
/// The environment variable that carries the service's URL to components.
pub const FULL_URI_ENV: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";

/// Credentials are served from the cache until this long before they expire.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// How long a 4xx answer of the provider is kept.
pub const CLIENT_ERROR_CACHE: Duration = Duration::from_secs(120);
/// How long a 5xx answer of the provider is kept.
pub const SERVER_ERROR_CACHE: Duration = Duration::from_secs(60);
/// How long any other failure (no connection, an answer that does not parse) is kept.
pub const UNKNOWN_ERROR_CACHE: Duration = Duration::from_secs(300);
/// How long a component's request may wait for the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes of a credentials provider answer read.
const MAX_PROVIDER_BODY: usize = 64 * 1024;

/// What the service needs from the core's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TesSettings {
    /// The nucleus's `iotRoleAlias`.
    pub role_alias: Option<String>,
    /// The service's `port` (0: any free port).
    pub port: u16,
}

impl TesSettings {
    /// The settings from the `--update-config` of `aws.greengrass.Nucleus` (`iotRoleAlias`) and
    /// of `aws.greengrass.TokenExchangeService` (`port`), built-in components without recipe
    /// defaults.
    pub fn from_updates(
        nucleus: Option<&ConfigurationUpdate>,
        tes: Option<&ConfigurationUpdate>,
    ) -> Result<Self, String> {
        let merged = super::recipe_store::builtin_configuration;
        let nucleus = merged(nucleus)?;
        let role_alias = match nucleus.get("iotRoleAlias") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) if s.trim().is_empty() => None,
            Some(serde_json::Value::String(s)) => Some(s.trim().to_owned()),
            Some(other) => return Err(format!("iotRoleAlias must be a string, not {other}")),
        };
        let port = match merged(tes)?.get("port") {
            None | Some(serde_json::Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("port must be a TCP port number (0 for any), not {v}"))?,
        };
        Ok(Self { role_alias, port })
    }

    /// [`TesSettings::from_updates`] for a core's options.
    pub fn from_options(options: &CoreOptions) -> Result<Self, String> {
        Self::from_updates(
            options.update_config.get(super::nucleus_update::NUCLEUS),
            options.update_config.get(TOKEN_EXCHANGE_SERVICE),
        )
    }
}

/// An answer to a component: the status and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON credentials (200) or the reason.
    pub body: Vec<u8>,
}

/// An answer and until when it may be given again without asking the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The answer.
    pub answer: Answer,
    /// Served from the cache while the clock is before this.
    pub until: SystemTime,
}

impl Cached {
    /// Whether the answer may still be served at `now`.
    pub fn fresh(&self, now: SystemTime) -> bool {
        now < self.until
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderCredentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    expiration: String,
}

#[derive(Deserialize)]
struct ProviderAnswer {
    credentials: ProviderCredentials,
}

/// What to answer, and for how long, given the credentials provider's reply at `now`:
/// `Ok((status, body))` for an HTTP answer, `Err(reason)` when there was none.
pub fn translate(reply: Result<(u16, &[u8]), String>, now: SystemTime) -> Cached {
    let failure = |status: u16, reason: String, keep: Duration| Cached {
        answer: Answer { status, body: reason.into_bytes() },
        until: now + keep,
    };
    let (status, body) = match reply {
        Err(reason) => return failure(500, format!("Failed to get connection: {reason}"), UNKNOWN_ERROR_CACHE),
        Ok(reply) => reply,
    };
    if status != 200 {
        let keep = match status {
            400..=499 => CLIENT_ERROR_CACHE,
            500..=599 => SERVER_ERROR_CACHE,
            _ => UNKNOWN_ERROR_CACHE,
        };
        let text = String::from_utf8_lossy(body);
        return failure(status, format!("TES responded with status code: {status}. Caching response. {text}"), keep);
    }
    let parsed: ProviderAnswer = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return failure(500, format!("Bad TES response: {e}"), UNKNOWN_ERROR_CACHE),
    };
    let c = parsed.credentials;
    let expiry = match time::OffsetDateTime::parse(&c.expiration, &time::format_description::well_known::Rfc3339) {
        Ok(t) => SystemTime::from(t),
        Err(e) => {
            return failure(500, format!("Bad TES response: expiration {:?}: {e}", c.expiration), UNKNOWN_ERROR_CACHE);
        }
    };
    if expiry <= now {
        // Not kept: the next request asks again.
        return failure(
            500,
            format!("TES responded with credentials that expired at {}", c.expiration),
            Duration::ZERO,
        );
    }
    let body = serde_json::json!({
        "AccessKeyId": c.access_key_id,
        "SecretAccessKey": c.secret_access_key,
        "Token": c.session_token,
        "Expiration": c.expiration,
    });
    // Credentials that expire within the margin are served once and not kept.
    let until = expiry.checked_sub(REFRESH_BEFORE_EXPIRY).filter(|t| *t > now).unwrap_or(now);
    Cached { answer: Answer { status: 200, body: body.to_string().into_bytes() }, until }
}

/// Where and as whom the core asks the credentials provider.
#[derive(Debug)]
pub struct Provider {
    client: FollowsIdentity<MtlsHttpClient>,
    url: String,
    thing: String,
}

impl Provider {
    /// The provider of a core's options: `None` when the core has no cloud connection. It
    /// presents what `identity` presents now (the bridge's, so it follows a certificate
    /// rotation), else the certificate and key of the options.
    pub fn from_options(
        options: &CoreOptions,
        role_alias: &str,
        identity: Option<TlsIdentity>,
    ) -> Result<Option<Self>, String> {
        let Some(cloud) = &options.cloud else { return Ok(None) };
        let Some(base) = &cloud.endpoints.credentials_provider else {
            return Err("endpoints.json names no credentials provider (credentialsProvider)".into());
        };
        let identity = match identity {
            Some(identity) => identity,
            None => super::identity::fixed(
                device_tls_config(&cloud.endpoints.ca_file, &cloud.cert_file, &cloud.key).map_err(|e| e.to_string())?,
            ),
        };
        let base = if base.contains("://") { base.clone() } else { format!("https://{base}") };
        let url = format!("{}/role-aliases/{role_alias}/credentials", base.trim_end_matches('/'));
        let client = FollowsIdentity::new(identity, MtlsHttpClient::new);
        Ok(Some(Self { client, url, thing: options.thing.clone() }))
    }

    async fn fetch(&self) -> Result<(u16, Vec<u8>), String> {
        self.client
            .client()
            .get(&self.url, &[("x-amzn-iot-thingname", &self.thing)], MAX_PROVIDER_BODY)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Why the service did not start.
#[derive(Debug, thiserror::Error)]
pub enum TesError {
    /// The configuration is not usable.
    #[error("aws.greengrass.TokenExchangeService: {0}")]
    Config(String),
    /// The port could not be bound.
    #[error("aws.greengrass.TokenExchangeService: cannot listen on 127.0.0.1:{port}")]
    Bind {
        /// The configured port.
        port: u16,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

struct Shared {
    tokens: Tokens,
    /// Where credentials come from, or why none can be had (no role alias, no provider).
    provider: Result<Provider, String>,
    cache: Mutex<Option<Cached>>,
    fetches: std::sync::atomic::AtomicU64,
}

/// The running service. Dropping it stops serving.
pub struct TokenExchange {
    uri: String,
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenExchange {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for TokenExchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenExchange").field("uri", &self.uri).finish_non_exhaustive()
    }
}

impl TokenExchange {
    /// Binds the service's port and starts serving (inside a tokio runtime).
    /// With `identity` (the bridge's), the provider is asked with the certificate the core
    /// presents now.
    pub async fn start(options: &CoreOptions, tokens: Tokens, identity: Option<TlsIdentity>) -> Result<Self, TesError> {
        let settings = TesSettings::from_options(options).map_err(TesError::Config)?;
        let provider = match &settings.role_alias {
            None => Err("iotRoleAlias parameter is either empty or not configured for TES".to_owned()),
            Some(alias) => Provider::from_options(options, alias, identity)
                .and_then(|p| p.ok_or_else(|| "the core has no cloud connection (--cloud)".to_owned())),
        };
        if let Err(why) = &provider {
            tracing::info!(reason = %why, "token exchange service: components that ask get 500");
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port))
            .await
            .map_err(|source| TesError::Bind { port: settings.port, source })?;
        let addr = listener.local_addr().map_err(|source| TesError::Bind { port: settings.port, source })?;
        let shared = Arc::new(Shared {
            tokens,
            provider,
            cache: Mutex::new(None),
            fetches: std::sync::atomic::AtomicU64::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "token exchange service stopped");
            }
        });
        let uri = format!("http://{addr}{CREDENTIALS_PATH}");
        tracing::info!(%uri, "token exchange service listening");
        Ok(Self { uri, addr, shared, task })
    }

    /// The URL components get in `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The service's credentials for the core's own services ([`CoreCredentials`]).
    pub fn core_credentials(&self) -> CoreCredentials {
        CoreCredentials { shared: self.shared.clone() }
    }

    /// How many times the service has asked the credentials provider.
    pub fn provider_requests(&self) -> u64 {
        self.shared.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The role credentials the service holds, as the core's own services take them: the nucleus's
/// plugins (the log manager) read the service's cache in-process instead of asking over HTTP.
/// Shares the cache, so a component's request and a plugin's make one provider request.
#[derive(Clone)]
pub struct CoreCredentials {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CoreCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreCredentials").finish_non_exhaustive()
    }
}

/// Credentials in the container format the service answers with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerCredentials {
    /// `AccessKeyId`.
    pub access_key_id: String,
    /// `SecretAccessKey`.
    pub secret_access_key: String,
    /// `Token` (the session token).
    pub token: String,
    /// `Expiration` (RFC 3339).
    pub expiration: String,
}

impl ContainerCredentials {
    /// When they expire (`None` if `Expiration` does not parse).
    pub fn expiry(&self) -> Option<SystemTime> {
        time::OffsetDateTime::parse(&self.expiration, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(SystemTime::from)
    }
}

impl CoreCredentials {
    /// The role's credentials, from the cache or the provider; the service's reason when it has
    /// none to give (no role alias, no cloud, the provider's refusal).
    pub async fn get(&self) -> Result<ContainerCredentials, String> {
        let provider = self.shared.provider.as_ref().map_err(Clone::clone)?;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, credentials(&self.shared, provider))
            .await
            .map_err(|_| "the credentials provider did not answer in time".to_owned())?;
        if answer.status != 200 {
            return Err(String::from_utf8_lossy(&answer.body).into_owned());
        }
        serde_json::from_slice(&answer.body).map_err(|e| format!("credentials that do not parse: {e}"))
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response {
    (status, text.into()).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET is the only supported method");
    }
    if uri.path() != CREDENTIALS_PATH {
        return plain(StatusCode::BAD_REQUEST, format!("unexpected path {}", uri.path()));
    }
    let token = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(component) = shared.tokens.component(token) else {
        return plain(StatusCode::FORBIDDEN, "the authorization token is not a component's");
    };
    let provider = match &shared.provider {
        Ok(provider) => provider,
        Err(why) => return plain(StatusCode::INTERNAL_SERVER_ERROR, why.clone()),
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, credentials(&shared, provider)).await {
        Ok(answer) => {
            tracing::debug!(%component, status = answer.status, "credentials requested");
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let content_type = if answer.status == 200 { "application/json" } else { "text/plain; charset=utf-8" };
            (status, [(axum::http::header::CONTENT_TYPE, content_type)], answer.body).into_response()
        }
        Err(_) => plain(StatusCode::GATEWAY_TIMEOUT, "the credentials provider did not answer in time"),
    }
}

/// The cached answer, or a new one from the provider (one fetch at a time: the lock is held
/// across it, so concurrent requests wait and then read what it cached).
async fn credentials(shared: &Shared, provider: &Provider) -> Answer {
    let mut cache = shared.cache.lock().await;
    if let Some(cached) = cache.as_ref().filter(|c| c.fresh(SystemTime::now())) {
        return cached.answer.clone();
    }
    shared.fetches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let reply = provider.fetch().await;
    let fresh = translate(reply.as_ref().map(|(s, b)| (*s, b.as_slice())).map_err(Clone::clone), SystemTime::now());
    if fresh.answer.status != 200 {
        tracing::warn!(status = fresh.answer.status, reason = %String::from_utf8_lossy(&fresh.answer.body), "credentials provider");
    }
    let answer = fresh.answer.clone();
    *cache = Some(fresh);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn rfc3339(t: SystemTime) -> String {
        time::OffsetDateTime::from(t).format(&time::format_description::well_known::Rfc3339).unwrap()
    }

    fn provider_body(expiration: SystemTime) -> Vec<u8> {
        serde_json::json!({"credentials": {
            "accessKeyId": "ASIAEXAMPLE", "secretAccessKey": "secret", "sessionToken": "token",
            "expiration": rfc3339(expiration),
        }})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn credentials_are_translated_for_the_sdks_and_kept_until_five_minutes_before_expiry() {
        let now = at(1_800_000_000);
        let expiry = now + Duration::from_secs(3600);
        let cached = translate(Ok((200, &provider_body(expiry))), now);
        assert_eq!(cached.answer.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&cached.answer.body).unwrap();
        assert_eq!(body["AccessKeyId"], "ASIAEXAMPLE");
        assert_eq!(body["SecretAccessKey"], "secret");
        assert_eq!(body["Token"], "token");
        assert_eq!(body["Expiration"], rfc3339(expiry));
        assert_eq!(cached.until, expiry - REFRESH_BEFORE_EXPIRY);
        assert!(cached.fresh(expiry - REFRESH_BEFORE_EXPIRY - Duration::from_secs(1)));
        assert!(!cached.fresh(expiry - REFRESH_BEFORE_EXPIRY), "refetched from five minutes before expiry");
    }

    #[test]
    fn credentials_expiring_within_the_margin_are_served_but_not_kept_and_expired_ones_are_refused() {
        let now = at(1_800_000_000);
        let soon = translate(Ok((200, &provider_body(now + Duration::from_secs(120)))), now);
        assert_eq!(soon.answer.status, 200);
        assert!(!soon.fresh(now));
        let expired = translate(Ok((200, &provider_body(now - Duration::from_secs(1)))), now);
        assert_eq!(expired.answer.status, 500);
        assert!(String::from_utf8_lossy(&expired.answer.body).contains("expired"));
        assert!(!expired.fresh(now));
    }

    #[test]
    fn provider_errors_are_kept_by_kind() {
        let now = at(1_800_000_000);
        let forbidden = translate(Ok((403, br#"{"message":"denied"}"#)), now);
        assert_eq!(forbidden.answer.status, 403);
        assert!(String::from_utf8_lossy(&forbidden.answer.body).contains("denied"));
        assert_eq!(forbidden.until, now + CLIENT_ERROR_CACHE);
        let unavailable = translate(Ok((503, b"")), now);
        assert_eq!((unavailable.answer.status, unavailable.until), (503, now + SERVER_ERROR_CACHE));
        let no_connection = translate(Err("connection refused".into()), now);
        assert_eq!((no_connection.answer.status, no_connection.until), (500, now + UNKNOWN_ERROR_CACHE));
    }

    #[test]
    fn malformed_provider_answers_are_errors_not_crashes() {
        let now = at(1_800_000_000);
        for body in [
            &b"not json"[..],
            br#"{"credentials":{}}"#,
            br#"{"credentials":{"accessKeyId":"a","secretAccessKey":"b","sessionToken":"c","expiration":"tomorrow"}}"#,
        ] {
            let cached = translate(Ok((200, body)), now);
            assert_eq!(cached.answer.status, 500, "{}", String::from_utf8_lossy(body));
            assert!(String::from_utf8_lossy(&cached.answer.body).starts_with("Bad TES response"));
            assert_eq!(cached.until, now + UNKNOWN_ERROR_CACHE);
        }
    }

    #[test]
    fn settings_come_from_the_nucleus_and_service_configuration() {
        let update = |json: serde_json::Value| ConfigurationUpdate {
            merge: Some(json.as_object().unwrap().clone()),
            ..ConfigurationUpdate::default()
        };
        let nucleus = update(serde_json::json!({"iotRoleAlias": "PumpCoreTokenExchangeRoleAlias"}));
        let tes = update(serde_json::json!({"port": 2020}));
        let settings = TesSettings::from_updates(Some(&nucleus), Some(&tes)).unwrap();
        assert_eq!(settings, TesSettings { role_alias: Some("PumpCoreTokenExchangeRoleAlias".into()), port: 2020 });
        assert_eq!(TesSettings::from_updates(None, None).unwrap(), TesSettings::default());
        let bad_port = update(serde_json::json!({"port": 70000}));
        assert!(TesSettings::from_updates(None, Some(&bad_port)).unwrap_err().contains("port"));
        let bad_alias = update(serde_json::json!({"iotRoleAlias": 7}));
        assert!(TesSettings::from_updates(Some(&bad_alias), None).unwrap_err().contains("iotRoleAlias"));
    }
}
