//! Shared fixtures for the workspace's integration tests, so that each test file holds only what
//! its own scenario needs.
//!
//! # Layout
//!
//! - [`tls`]: a rustls client configuration (ring) from a CA file and a PEM identity, and the
//!   rumqttc options that use it.
//! - [`mqtt`]: a [`mqtt::Client`] the test drives packet by packet, and an [`mqtt::Observer`] that
//!   collects what arrives on its subscriptions in the background and waits on it with a deadline.
//! - With the `cloud` feature: [`cloud`] (the local cloud in-process on ephemeral ports: a bare
//!   [`cloud::TestCloud`] with things registered in it and clients authenticated as them; with
//!   `site`, a [`cloud::Cloud`] with the core device and an operator registered, stopped and
//!   restarted on the same ports).
//! - With the `site` feature: [`site`] (a temporary site directory, components staged from their
//!   recipes and binaries, the simulated core started on it, its connection and local shadow
//!   waited on).
//!
//! Every wait has a deadline and fails the test with what it last saw; nothing sleeps and hopes.

use std::fmt::Display;
use std::time::Duration;

#[cfg(feature = "cloud")]
pub mod cloud;
pub mod mqtt;
#[cfg(feature = "site")]
pub mod site;
pub mod tls;

/// How long a site test waits for something that should happen (a component start, a sync,
/// a message through the cloud) before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often [`wait_until`] looks again.
pub const POLL: Duration = Duration::from_millis(50);

/// An IoT policy that allows every action on every resource (for an operator's application).
pub const ALLOW_ALL: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#;

/// Looks with `look` every [`POLL`] until `done` holds for what it saw, and returns that; after
/// [`WAIT`] fails the test with `what` and `explain` of the last thing seen.
///
/// For state that announces no change (a file rewritten now and then, a document in a store).
pub async fn wait_until<T>(
    what: impl Display,
    look: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
    explain: impl Fn(&T) -> String,
) -> T {
    wait_until_within(WAIT, what, look, done, explain).await
}

/// [`wait_until`] with its own deadline, for what may take longer than [`WAIT`] (a process the
/// wait itself starts, such as a Lambda function's first invocation).
pub async fn wait_until_within<T>(
    within: Duration,
    what: impl Display,
    mut look: impl AsyncFnMut() -> T,
    done: impl Fn(&T) -> bool,
    explain: impl Fn(&T) -> String,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen = look().await;
        if done(&seen) {
            return seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {what} within {within:?}: {}", explain(&seen));
        tokio::time::sleep(POLL).await;
    }
}

/// One HTTP/1.1 request to a loopback `http://` URL: the status and the body.
pub async fn http_request(url: &str, method: &str, authorization: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("an HTTP status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
