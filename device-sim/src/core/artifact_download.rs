//! Downloads one component artifact from a (presigned) URL into the core's artifact store, as
//! the nucleus's `ArtifactDownloader` and `GreengrassRepositoryDownloader` do:
//!
//! - into a temporary file next to the target (`.{file}.download`), so the store never holds
//!   a half-written artifact under its real name;
//! - an interrupted download resumes with `Range: bytes={have}-`; a `200` answer (a server that
//!   ignores ranges) restarts from zero, a `206` must start where it was asked to, else the
//!   partial file is dropped and the next attempt starts from zero;
//! - the SHA-256 digest (standard base64, as recipes carry it) is checked **before** the file
//!   is moved into place (fsync, rename, fsync of the directory); a mismatch removes the
//!   temporary file and is refused — once retried from zero when the bytes came partly from an
//!   earlier, interrupted attempt;
//! - transient failures (connection, cut body, 429, 5xx, a stalled body) are retried with
//!   doubling backoff, a bounded number of times; anything else is given up at once.
//!
//! What to ask for and what to do with an answer are pure functions ([`range_header`],
//! [`judge`], [`backoff`], [`expected_digest`]); [`Downloader`] does the I/O. An artifact
//! already in place with the right digest is not downloaded again.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;

/// How often and how patiently a download is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// The wait before the second attempt; it doubles after each failure.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How long the answer's head, or the next piece of its body, may keep us waiting.
    pub idle_timeout: Duration,
}

impl Default for RetryPolicy {
    /// Ours: 5 attempts, 1 s doubling to 30 s, 60 s idle (the nucleus retries every minute,
    /// without end; a deployment here fails instead and may be retried as a whole).
    fn default() -> Self {
        Self {
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Why an artifact was not downloaded.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The recipe names a digest algorithm we cannot check (fix the recipe).
    #[error("unsupported digest algorithm {0:?} (only SHA-256)")]
    UnsupportedAlgorithm(String),
    /// The downloaded bytes do not have the recipe's digest; nothing was stored (give up: the
    /// artifact or the recipe is wrong).
    #[error(
        "digest mismatch for {url_path}: the recipe says {expected}, the download has {actual}; nothing was stored"
    )]
    DigestMismatch {
        /// The URL without its query (presigned URLs carry credentials there).
        url_path: String,
        /// The recipe's digest.
        expected: String,
        /// The download's digest.
        actual: String,
    },
    /// The server refused the download for good (4xx other than 429; an expired presigned URL
    /// is a 403: ask for a new URL).
    #[error("the artifact server answered HTTP {status} for {url_path}")]
    Refused {
        /// The URL without its query.
        url_path: String,
        /// The HTTP status.
        status: u16,
    },
    /// Every attempt failed for a transient reason (retry later; the partial file stays and the
    /// next download resumes from it).
    #[error("gave up on {url_path} after {attempts} attempts: {last}")]
    Exhausted {
        /// The URL without its query.
        url_path: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The URL is not an HTTP(S) URL.
    #[error("not an HTTP(S) URL: {0}")]
    BadUrl(String),
    /// The artifact store cannot be written (a host fault).
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// How a download went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The artifact's size.
    pub size: u64,
    /// Bytes received from the network by this call.
    pub received: u64,
    /// Where the first resumed request started (`None`: never resumed).
    pub resumed_from: Option<u64>,
    /// Requests made (0 when the artifact was already in place).
    pub attempts: u32,
}

/// The digest to check a download against: the recipe's `Digest` when its `Algorithm` is
/// SHA-256 (the default when absent, as the nucleus reads it).
pub fn expected_digest(digest: Option<&str>, algorithm: Option<&str>) -> Result<Option<String>, DownloadError> {
    match algorithm {
        Some(a) if !a.eq_ignore_ascii_case("SHA-256") => Err(DownloadError::UnsupportedAlgorithm(a.to_string())),
        _ => Ok(digest.map(str::to_string)),
    }
}

/// The `Range` header for a download that already has `have` bytes (none from zero).
pub fn range_header(have: u64) -> Option<String> {
    (have > 0).then(|| format!("bytes={have}-"))
}

/// What to do with an answer to a request that asked from `asked_from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Write the body from offset `from` (0: truncate what is there).
    Write {
        /// Where the body starts in the artifact.
        from: u64,
    },
    /// The partial file is of no use (a range not satisfiable, a 206 elsewhere than asked): drop
    /// it and try again from zero.
    Restart(String),
    /// Try again later.
    Transient(String),
    /// Give up.
    Refused(u16),
}

/// Judges an answer's status and `Content-Range` (pure).
pub fn judge(asked_from: u64, status: u16, content_range: Option<&str>) -> Verdict {
    match status {
        200 => Verdict::Write { from: 0 },
        206 => match content_range.and_then(range_start) {
            Some(start) if start == asked_from => Verdict::Write { from: start },
            Some(start) => Verdict::Restart(format!("asked from byte {asked_from}, the server answered from {start}")),
            None => Verdict::Restart(format!("a 206 without a readable Content-Range ({content_range:?})")),
        },
        416 if asked_from > 0 => Verdict::Restart(format!("the range from byte {asked_from} is not satisfiable")),
        429 | 500..=599 => Verdict::Transient(format!("HTTP {status}")),
        s => Verdict::Refused(s),
    }
}

/// The start of `bytes a-b/total` (or `bytes a-b/*`).
fn range_start(content_range: &str) -> Option<u64> {
    let spec = content_range.trim().strip_prefix("bytes ")?;
    let (range, _total) = spec.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end): (u64, u64) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
    (start <= end).then_some(start)
}

/// The wait before attempt `attempt + 1` (after `attempt` failures, from 1).
pub fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    policy.first_backoff.saturating_mul(factor).min(policy.max_backoff)
}

/// The temporary file a download of `target` goes to.
pub fn partial_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.download"))
}

/// The URL without its query string, for messages (presigned URLs carry credentials there).
fn url_path(url: &str) -> String {
    url.split('?').next().unwrap_or_default().to_string()
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<Bytes>,
>;

/// Downloads artifacts over HTTP or HTTPS (the local cloud's presigned URLs are plain HTTP on
/// loopback; AWS's are HTTPS). HTTPS servers are checked against the roots of the TLS
/// configuration it is built with (the core's: the CA of `endpoints.json`, which for AWS is
/// Amazon Root CA 1, the root S3's certificates chain to).
#[derive(Debug, Clone)]
pub struct Downloader {
    client: HttpClient,
    policy: RetryPolicy,
}

/// One attempt's failure.
enum Failed {
    Transient(String),
    Restart(String),
    Refused(u16),
    Io(PathBuf, std::io::Error),
}

impl Downloader {
    /// A downloader trusting the roots of `tls`, with the default [`RetryPolicy`].
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
        Self { client, policy: RetryPolicy::default() }
    }

    /// The same with `policy`.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Downloads `url` to `target` (its directory must exist), checked against `digest` (base64
    /// SHA-256; see [`expected_digest`]) when given.
    pub async fn download(&self, url: &str, target: &Path, digest: Option<&str>) -> Result<Downloaded, DownloadError> {
        let uri: http::Uri = url.parse().map_err(|_| DownloadError::BadUrl(url_path(url)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(DownloadError::BadUrl(url_path(url)));
        }
        if let Some(expected) = digest
            && target.is_file()
            && file_digest(target).map_err(|source| io(target, source))? == expected
        {
            let size = std::fs::metadata(target).map_err(|source| io(target, source))?.len();
            return Ok(Downloaded { size, received: 0, resumed_from: None, attempts: 0 });
        }
        let partial = partial_path(target);
        let mut report = Downloaded { size: 0, received: 0, resumed_from: None, attempts: 0 };
        // A mismatch of a file that was pieced together from an interrupted attempt and its
        // resumption is retried once from zero before it is believed.
        let mut retried_whole = false;
        let mut last = String::new();
        while report.attempts < self.policy.attempts.max(1) {
            if report.attempts > 0 {
                tokio::time::sleep(backoff(&self.policy, report.attempts)).await;
            }
            report.attempts += 1;
            let have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            let pieced = match self.attempt(&uri, &partial, have, &mut report).await {
                Ok(from) => from > 0,
                Err(Failed::Transient(why)) => {
                    tracing::debug!(url = %url_path(url), attempt = report.attempts, "artifact download: {why}");
                    last = why;
                    continue;
                }
                Err(Failed::Restart(why)) => {
                    remove(&partial)?;
                    last = why;
                    continue;
                }
                Err(Failed::Refused(status)) => return Err(DownloadError::Refused { url_path: url_path(url), status }),
                Err(Failed::Io(path, source)) => return Err(DownloadError::Io { path, source }),
            };
            if let Some(expected) = digest {
                let actual = file_digest(&partial).map_err(|source| io(&partial, source))?;
                if actual != expected {
                    remove(&partial)?;
                    if pieced && !std::mem::replace(&mut retried_whole, true) {
                        last = "digest mismatch after a resumed download".into();
                        continue;
                    }
                    return Err(DownloadError::DigestMismatch {
                        url_path: url_path(url),
                        expected: expected.to_string(),
                        actual,
                    });
                }
            }
            commit(&partial, target)?;
            report.size = std::fs::metadata(target).map_err(|source| io(target, source))?.len();
            return Ok(report);
        }
        Err(DownloadError::Exhausted { url_path: url_path(url), attempts: report.attempts, last })
    }

    /// One request: the body is appended to (or replaces) the partial file; answers where
    /// the body started.
    async fn attempt(
        &self,
        uri: &http::Uri,
        partial: &Path,
        have: u64,
        report: &mut Downloaded,
    ) -> Result<u64, Failed> {
        let mut request = http::Request::get(uri.clone());
        if let Some(range) = range_header(have) {
            request = request.header(http::header::RANGE, range);
        }
        let request = request.body(http_body_util::Empty::new()).map_err(|e| Failed::Transient(e.to_string()))?;
        let idle = self.policy.idle_timeout;
        let response = match tokio::time::timeout(idle, self.client.request(request)).await {
            Err(_) => return Err(Failed::Transient("no answer within the idle timeout".into())),
            Ok(Err(e)) => return Err(Failed::Transient(format!("request failed: {e}"))),
            Ok(Ok(r)) => r,
        };
        let content_range = response.headers().get(http::header::CONTENT_RANGE).and_then(|v| v.to_str().ok());
        let from = match judge(have, response.status().as_u16(), content_range) {
            Verdict::Write { from } => from,
            Verdict::Restart(why) => return Err(Failed::Restart(why)),
            Verdict::Transient(why) => return Err(Failed::Transient(why)),
            Verdict::Refused(status) => return Err(Failed::Refused(status)),
        };
        if from > 0 && report.resumed_from.is_none() {
            report.resumed_from = Some(from);
        }
        let fail = |e: std::io::Error| Failed::Io(partial.to_path_buf(), e);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(from > 0)
            .truncate(from == 0)
            .open(partial)
            .map_err(fail)?;
        let mut body = response.into_body();
        let received = loop {
            let frame = match tokio::time::timeout(idle, body.frame()).await {
                Err(_) => break Err(Failed::Transient("the body stalled".into())),
                Ok(None) => break Ok(()),
                Ok(Some(Err(e))) => break Err(Failed::Transient(format!("the body was cut: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                file.write_all(&data).map_err(fail)?;
                report.received += data.len() as u64;
            }
        };
        received.and_then(|()| file.flush().map_err(fail)).map(|()| from)
    }
}

fn io(path: &Path, source: std::io::Error) -> DownloadError {
    DownloadError::Io { path: path.to_path_buf(), source }
}

fn remove(path: &Path) -> Result<(), DownloadError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
        _ => Ok(()),
    }
}

/// fsync the complete file, rename it to `target`, fsync the directory.
fn commit(partial: &Path, target: &Path) -> Result<(), DownloadError> {
    std::fs::File::open(partial).and_then(|f| f.sync_all()).map_err(|e| io(partial, e))?;
    std::fs::rename(partial, target).map_err(|e| io(target, e))?;
    if let Some(dir) = target.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))?;
    }
    Ok(())
}

/// The base64 SHA-256 of a file, read in pieces (the recipe's `Digest`).
pub use super::layout::file_digest;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_download_asks_for_everything_and_a_partial_one_for_the_rest() {
        assert_eq!(range_header(0), None);
        assert_eq!(range_header(1024).as_deref(), Some("bytes=1024-"));
    }

    #[test]
    fn answers_are_judged_by_status_and_where_the_range_starts() {
        let table: [(u64, u16, Option<&str>, Verdict); 11] = [
            (0, 200, None, Verdict::Write { from: 0 }),
            (500, 200, None, Verdict::Write { from: 0 }), // ranges ignored: restart from zero
            (500, 206, Some("bytes 500-999/1000"), Verdict::Write { from: 500 }),
            (500, 206, Some("bytes 500-999/*"), Verdict::Write { from: 500 }),
            (
                500,
                206,
                Some("bytes 0-999/1000"),
                Verdict::Restart("asked from byte 500, the server answered from 0".into()),
            ),
            (500, 206, None, Verdict::Restart("a 206 without a readable Content-Range (None)".into())),
            (1000, 416, None, Verdict::Restart("the range from byte 1000 is not satisfiable".into())),
            (0, 429, None, Verdict::Transient("HTTP 429".into())),
            (0, 503, None, Verdict::Transient("HTTP 503".into())),
            (0, 403, None, Verdict::Refused(403)),
            (0, 416, None, Verdict::Refused(416)),
        ];
        for (from, status, range, want) in table {
            assert_eq!(judge(from, status, range), want, "asked from {from}, got {status} {range:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_limit() {
        let policy = RetryPolicy {
            attempts: 10,
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(1),
        };
        let waits: Vec<u128> = (1..=5).map(|a| backoff(&policy, a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        assert_eq!(backoff(&policy, 200), Duration::from_millis(500), "no overflow");
    }

    #[test]
    fn only_sha256_digests_are_checked_and_others_refused() {
        assert_eq!(expected_digest(Some("abc="), None).unwrap().as_deref(), Some("abc="));
        assert_eq!(expected_digest(Some("abc="), Some("sha-256")).unwrap().as_deref(), Some("abc="));
        assert_eq!(expected_digest(None, None).unwrap(), None);
        assert!(
            matches!(expected_digest(Some("x"), Some("MD5")), Err(DownloadError::UnsupportedAlgorithm(a)) if a == "MD5")
        );
    }

    #[test]
    fn the_partial_file_is_hidden_next_to_the_target() {
        assert_eq!(partial_path(Path::new("/a/C/1.0.0/model.onnx")), Path::new("/a/C/1.0.0/.model.onnx.download"));
    }

    #[test]
    fn messages_never_carry_the_presigned_query() {
        assert_eq!(url_path("http://h/b/k?X-Amz-Signature=secret"), "http://h/b/k");
    }

    /// A loopback HTTP server that answers every request with `status`, `extra` headers and
    /// `body`, and records each request's `Range`.
    async fn serve(
        status: &'static str,
        extra: &'static str,
        body: &'static [u8],
    ) -> (String, Arc<std::sync::Mutex<Vec<Option<String>>>>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/a/b", listener.local_addr().unwrap());
        let ranges = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = ranges.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let range = head.lines().find_map(|l| l.strip_prefix("range: ")).map(str::to_string);
                seen.lock().unwrap().push(range);
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n", body.len());
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.write_all(body).await;
            }
        });
        (url, ranges)
    }

    fn test_tls() -> Arc<rustls::ClientConfig> {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }

    fn digest_of(bytes: &[u8]) -> String {
        crate::core::layout::sha256_digest(bytes)
    }

    #[tokio::test]
    async fn a_server_that_ignores_the_range_restarts_the_download_from_zero() {
        let (url, ranges) = serve("200 OK", "", b"the whole artifact").await;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("artifact");
        std::fs::write(partial_path(&target), b"stale bytes").unwrap();
        let done = Downloader::new(test_tls())
            .download(&url, &target, Some(&digest_of(b"the whole artifact")))
            .await
            .expect("downloaded");
        assert_eq!(ranges.lock().unwrap().clone(), [Some("bytes=11-".to_string())], "it asked for the rest");
        assert_eq!((done.resumed_from, done.size), (None, 18), "the 200 replaced the partial file");
        assert_eq!(std::fs::read(&target).unwrap(), b"the whole artifact");
    }

    #[tokio::test]
    async fn a_206_from_elsewhere_drops_the_partial_file_and_a_mismatch_then_is_refused() {
        let (url, ranges) = serve("206 Partial Content", "content-range: bytes 0-4/5\r\n", b"wrong").await;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("artifact");
        std::fs::write(partial_path(&target), b"abc").unwrap();
        let policy = RetryPolicy { attempts: 3, first_backoff: Duration::from_millis(1), ..RetryPolicy::default() };
        let e = Downloader::new(test_tls())
            .with_policy(policy)
            .download(&url, &target, Some(&digest_of(b"right")))
            .await
            .unwrap_err();
        // First the range from 3 answered from 0: restart; then from zero: written, mismatch.
        assert_eq!(ranges.lock().unwrap().clone(), [Some("bytes=3-".to_string()), None]);
        assert!(matches!(e, DownloadError::DigestMismatch { .. }), "{e:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left behind");
    }

    #[tokio::test]
    async fn server_errors_are_retried_a_bounded_number_of_times_and_the_last_reason_kept() {
        let (url, ranges) = serve("503 Service Unavailable", "", b"").await;
        let dir = tempfile::tempdir().unwrap();
        let policy = RetryPolicy { attempts: 3, first_backoff: Duration::from_millis(1), ..RetryPolicy::default() };
        let e = Downloader::new(test_tls()).with_policy(policy).download(&url, &dir.path().join("a"), None).await;
        assert!(matches!(&e, Err(DownloadError::Exhausted { attempts: 3, last, .. }) if last == "HTTP 503"), "{e:?}");
        assert_eq!(ranges.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_file_digest_is_the_recipes_base64_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(file_digest(&f).unwrap(), "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=");
    }
}
