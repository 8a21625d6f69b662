//! Function processes and the Lambda Runtime API they poll ("Using the Lambda runtime API for
//! custom runtimes", "Defined runtime environment variables" in the AWS Lambda Developer Guide).
//!
//! Each function has one worker that runs its invocations in order, one at a time, in one
//! process (`bootstrap` in the code directory, started with the environment Lambda gives a
//! custom runtime and credentials of the execution role). Each process gets its own Runtime API
//! listener on an ephemeral loopback port (`AWS_LAMBDA_RUNTIME_API`):
//! - `GET /2018-06-01/runtime/invocation/next` waits for the next event and answers it with
//!   `Lambda-Runtime-Aws-Request-Id`, `Lambda-Runtime-Deadline-Ms`,
//!   `Lambda-Runtime-Invoked-Function-Arn` and `Lambda-Runtime-Trace-Id`;
//! - `POST /2018-06-01/runtime/invocation/{AwsRequestId}/response` and `…/error` end it (202);
//! - `POST /2018-06-01/runtime/init/error` reports a failed start.
//!
//! An invocation that outlives the function's timeout fails with "Task timed out after N.NN
//! seconds"; a process that exits fails the invocation with `Runtime.ExitError`. Either way the
//! process (its whole process group) is killed and the next invocation starts a new one, as a
//! process is after a code or configuration change. The listener lives and dies with its
//! process, so a dead process's pending poll can never take a later event.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Function, LATEST, LambdaError, MAX_SYNC_PAYLOAD};
use crate::iam::Iam;

/// Invocations a function may have queued before an `Event` is refused with 429.
pub const QUEUE_DEPTH: usize = 1000;
/// A process is restarted when its credentials would expire within this margin.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(300);

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The function's response (the body its runtime posted).
    Response(Bytes),
    /// The function failed (`X-Amz-Function-Error: Unhandled`): the error document.
    Error(Value),
}

/// One invocation on its way to a function's worker.
#[derive(Debug)]
pub struct Job {
    request_id: String,
    function: Function,
    payload: Bytes,
    reply: Option<oneshot::Sender<Outcome>>,
}

impl Job {
    /// An invocation of `function` (as configured when it was invoked); `reply` gets the outcome
    /// (none for `Event`).
    pub fn new(function: Function, payload: Bytes, reply: Option<oneshot::Sender<Outcome>>) -> Self {
        Job { request_id: uuid::Uuid::new_v4().to_string(), function, payload, reply }
    }
}

/// What every function process is started with.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Issues the execution role's credentials.
    pub iam: Iam,
    /// `lambda/` in the data directory.
    pub code_root: PathBuf,
    /// `AWS_ENDPOINT_URL`.
    pub http_url: String,
    /// `AWS_REGION`.
    pub region: String,
    /// Stops every worker and kills its process.
    pub shutdown: CancellationToken,
}

/// The workers, by function name.
#[derive(Debug, Clone)]
pub struct Runtimes {
    launch: Arc<Launch>,
    workers: Arc<Mutex<HashMap<String, mpsc::Sender<Job>>>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Runtimes {
    /// No workers yet; each starts with its function's first invocation.
    pub fn new(launch: Launch) -> Self {
        Runtimes { launch: Arc::new(launch), workers: Arc::default(), tasks: Arc::default() }
    }

    /// Waits until every worker has stopped and killed its process (after the shutdown token
    /// was cancelled, or every function was deleted).
    pub async fn stopped(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    fn worker(&self, name: &str) -> mpsc::Sender<Job> {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = workers.get(name).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(Worker { launch: self.launch.clone(), current: None }.run(rx));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
        workers.insert(name.to_owned(), tx.clone());
        tx
    }

    /// Queues a synchronous invocation, waiting for room in the queue.
    pub async fn submit(&self, job: Job) -> Result<(), LambdaError> {
        let tx = self.worker(&job.function.name);
        tx.send(job).await.map_err(|_| LambdaError::Service("the function's worker stopped; retry".into()))
    }

    /// Queues an asynchronous invocation; a full queue is `TooManyRequestsException`.
    pub fn submit_event(&self, job: Job) -> Result<(), LambdaError> {
        let tx = self.worker(&job.function.name);
        tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LambdaError::TooManyRequests(format!(
                "Rate Exceeded: the function has {QUEUE_DEPTH} invocations queued"
            )),
            mpsc::error::TrySendError::Closed(_) => LambdaError::Service("the function's worker stopped; retry".into()),
        })
    }

    /// The function's code moved to a new directory: the old one goes now when no worker runs
    /// the function, else when the worker replaces the process running from it.
    pub fn code_replaced(&self, name: &str, old_dir: PathBuf) {
        let running =
            self.workers.lock().unwrap_or_else(|e| e.into_inner()).get(name).is_some_and(|tx| !tx.is_closed());
        if !running {
            let _ = std::fs::remove_dir_all(old_dir);
        }
    }

    /// The function was deleted: its worker ends after the invocations already queued, and its
    /// code directory (`dir`) is removed.
    pub fn retire(&self, name: &str, dir: Option<PathBuf>) {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A function's invocations, one at a time, and its process.
struct Worker {
    launch: Arc<Launch>,
    current: Option<Process>,
}

/// A running `bootstrap` with its Runtime API.
struct Process {
    child: tokio::process::Child,
    server: tokio::task::JoinHandle<()>,
    next: mpsc::Sender<Pending>,
    events: mpsc::UnboundedReceiver<Event>,
    revision_id: String,
    code_revision: String,
    credentials_expire_ms: u64,
}

impl Process {
    async fn stop(mut self) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok())
            && let Some(group) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill().await;
        self.server.abort();
    }
}

/// An event handed to the runtime.
#[derive(Debug)]
struct Pending {
    request_id: String,
    payload: Bytes,
    deadline_ms: u64,
    function_arn: String,
}

/// What the runtime reported.
#[derive(Debug)]
enum Event {
    Response { request_id: String, body: Bytes },
    Error { request_id: String, error: Value },
    InitError { error: Value },
}

impl Worker {
    async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let shutdown = self.launch.shutdown.clone();
        loop {
            let job = tokio::select! {
                () = shutdown.cancelled() => break,
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            let name = job.function.name.clone();
            let request_id = job.request_id.clone();
            let outcome = tokio::select! {
                () = shutdown.cancelled() => break,
                outcome = self.invoke(&job) => outcome,
            };
            match job.reply {
                Some(reply) => {
                    let _ = reply.send(outcome);
                }
                None => {
                    if let Outcome::Error(e) = &outcome {
                        tracing::info!(function = %name, request_id = %request_id, error = %e, "asynchronous invocation failed");
                    }
                }
            }
        }
        if let Some(process) = self.current.take() {
            process.stop().await;
        }
    }

    /// Whether the running process can take `function`'s next invocation.
    fn fits(&mut self, function: &Function, now_ms: u64) -> bool {
        let Some(p) = self.current.as_mut() else { return false };
        let alive = matches!(p.child.try_wait(), Ok(None));
        alive
            && p.revision_id == function.revision_id
            && p.code_revision == function.code_revision
            && p.credentials_expire_ms > now_ms + CREDENTIALS_MARGIN.as_millis() as u64
    }

    async fn invoke(&mut self, job: &Job) -> Outcome {
        let f = &job.function;
        let now_ms = now_millis();
        if !self.fits(f, now_ms)
            && let Some(old) = self.current.take()
        {
            let old_code = (old.code_revision != f.code_revision).then(|| old.code_revision.clone());
            old.stop().await;
            // The code it ran from was replaced (UpdateFunctionCode): nothing runs from it now.
            if let Some(revision) = old_code {
                let _ = std::fs::remove_dir_all(self.launch.code_root.join(&f.name).join(revision));
            }
        }
        if self.current.is_none() {
            match start(&self.launch, f).await {
                Ok(p) => self.current = Some(p),
                Err(message) => {
                    return Outcome::Error(json!({
                        "errorType": "Runtime.InvalidEntrypoint",
                        "errorMessage": format!("RequestId: {} Error: {message}", job.request_id),
                    }));
                }
            }
        }
        let Some(p) = self.current.as_mut() else {
            return Outcome::Error(json!({"errorType": "Runtime.Unknown", "errorMessage": "no process"}));
        };
        let timeout = Duration::from_secs(u64::from(f.timeout));
        let pending = Pending {
            request_id: job.request_id.clone(),
            payload: job.payload.clone(),
            deadline_ms: now_ms + timeout.as_millis() as u64,
            function_arn: f.arn.clone(),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome = if p.next.send(pending).await.is_err() {
            Some(Outcome::Error(json!({"errorType": "Runtime.Unknown", "errorMessage": "the Runtime API stopped"})))
        } else {
            None
        };
        let outcome = match outcome {
            Some(o) => o,
            None => loop {
                tokio::select! {
                    event = p.events.recv() => match event {
                        Some(Event::Response { request_id, body }) if request_id == job.request_id => {
                            return Outcome::Response(body);
                        }
                        Some(Event::Error { request_id, error }) if request_id == job.request_id => {
                            return Outcome::Error(error);
                        }
                        Some(Event::InitError { error }) => break Outcome::Error(error),
                        Some(_) => continue,
                        None => break Outcome::Error(json!({
                            "errorType": "Runtime.Unknown",
                            "errorMessage": "the Runtime API stopped",
                        })),
                    },
                    status = p.child.wait() => {
                        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                        break Outcome::Error(json!({
                            "errorType": "Runtime.ExitError",
                            "errorMessage": format!(
                                "RequestId: {} Error: Runtime exited with error: {status}", job.request_id
                            ),
                        }));
                    }
                    () = tokio::time::sleep_until(deadline) => {
                        break Outcome::Error(json!({
                            "errorMessage": timed_out(&job.request_id, timeout),
                        }));
                    }
                }
            },
        };
        // A failure that was not the function's own answer leaves the process unusable.
        if let Some(old) = self.current.take() {
            old.stop().await;
        }
        outcome
    }
}

/// The message of an invocation that ran out of time, as Lambda words it.
pub fn timed_out(request_id: &str, elapsed: Duration) -> String {
    format!("{request_id} Task timed out after {:.2} seconds", elapsed.as_secs_f64())
}

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The environment of a custom runtime, without the credentials and the Runtime API address.
pub fn environment(launch: &Launch, f: &Function, code_dir: &std::path::Path) -> Vec<(String, String)> {
    let stream = format!(
        "{}/[{LATEST}]{}",
        super::last_modified(now_millis()).get(..10).unwrap_or_default().replace('-', "/"),
        uuid::Uuid::new_v4().simple()
    );
    let mut env: Vec<(String, String)> = f.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if !f.environment.contains_key("AWS_ENDPOINT_URL") {
        env.push(("AWS_ENDPOINT_URL".into(), launch.http_url.clone()));
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    env.extend([
        ("PATH".into(), path),
        ("TZ".into(), ":UTC".into()),
        ("AWS_LAMBDA_FUNCTION_NAME".into(), f.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), LATEST.into()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(), f.memory_size.to_string()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "on-demand".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME".into(), format!("/aws/lambda/{}", f.name)),
        ("AWS_LAMBDA_LOG_STREAM_NAME".into(), stream),
        ("AWS_REGION".into(), launch.region.clone()),
        ("AWS_DEFAULT_REGION".into(), launch.region.clone()),
        ("_HANDLER".into(), f.handler.clone().unwrap_or_default()),
        ("LAMBDA_TASK_ROOT".into(), code_dir.display().to_string()),
    ]);
    env
}

/// Starts `f`'s bootstrap with its own Runtime API listener.
async fn start(launch: &Launch, f: &Function) -> Result<Process, String> {
    let code_dir = launch.code_root.join(&f.name).join(&f.code_revision);
    let role = launch.iam.role_by_arn(&f.role).map_err(|e| format!("the execution role cannot be used: {e}"))?;
    let session = launch
        .iam
        .issue_service_session(
            &role,
            crate::iam::roles::LAMBDA_PRINCIPAL,
            &f.name,
            Duration::from_secs(u64::from(role.max_session_duration)),
        )
        .map_err(|e| format!("The role defined for the function cannot be assumed by Lambda: {e}"))?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| format!("cannot open the Runtime API listener: {e}"))?;
    let api_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (next_tx, next_rx) = mpsc::channel(1);
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let api = Arc::new(Api { next: tokio::sync::Mutex::new(next_rx), current: Mutex::new(None), events: events_tx });
    let server = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, api_routes(api)).await {
            tracing::warn!(error = %e, "Lambda Runtime API stopped");
        }
    });
    let mut command = tokio::process::Command::new(code_dir.join(super::code::BOOTSTRAP));
    command
        .current_dir(&code_dir)
        .env_clear()
        .envs(environment(launch, f, &code_dir))
        .env("AWS_LAMBDA_RUNTIME_API", api_addr.to_string())
        .env("AWS_ACCESS_KEY_ID", &session.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &session.secret_access_key)
        .env("AWS_SESSION_TOKEN", &session.session_token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            server.abort();
            return Err(format!("cannot start {}: {e}", super::code::BOOTSTRAP));
        }
    };
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log_lines(f.name.clone(), out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log_lines(f.name.clone(), err));
    }
    Ok(Process {
        child,
        server,
        next: next_tx,
        events: events_rx,
        revision_id: f.revision_id.clone(),
        code_revision: f.code_revision.clone(),
        credentials_expire_ms: session.expiration_ms,
    })
}

/// A function's output goes to the log (on AWS: CloudWatch Logs).
async fn log_lines(function: String, stream: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(function = %function, "{line}");
    }
}

/// One process's Runtime API.
#[derive(Debug)]
struct Api {
    next: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    /// The request id handed out and not yet answered.
    current: Mutex<Option<String>>,
    events: mpsc::UnboundedSender<Event>,
}

fn api_routes(api: Arc<Api>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .layer(DefaultBodyLimit::max(MAX_SYNC_PAYLOAD))
        .with_state(api)
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (status, axum::Json(json!({"errorType": error_type, "errorMessage": message}))).into_response()
}

async fn next(State(api): State<Arc<Api>>) -> Response {
    let pending = api.next.lock().await.recv().await;
    let Some(p) = pending else {
        return api_error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceException", "the function is stopping");
    };
    *api.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.request_id.clone());
    let trace =
        format!("Root=1-{:08x}-{};Sampled=0", now_millis() / 1000, &uuid::Uuid::new_v4().simple().to_string()[..24]);
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = value.parse() {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", &p.request_id);
    put("lambda-runtime-deadline-ms", &p.deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &p.function_arn);
    put("lambda-runtime-trace-id", &trace);
    put("content-type", "application/json");
    (StatusCode::OK, headers, p.payload).into_response()
}

/// Ends the invocation `id` if it is the one in flight.
fn finish(api: &Api, id: &str, event: Event) -> Response {
    let mut current = api.current.lock().unwrap_or_else(|e| e.into_inner());
    if current.as_deref() != Some(id) {
        return api_error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID");
    }
    *current = None;
    let _ = api.events.send(event);
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

async fn response(State(api): State<Arc<Api>>, Path(id): Path<String>, body: Bytes) -> Response {
    let event = Event::Response { request_id: id.clone(), body };
    finish(&api, &id, event)
}

/// The error document a runtime posted, or one made of whatever it posted.
pub fn error_document(headers: &HeaderMap, body: &[u8]) -> Value {
    let header_type = headers.get("lambda-runtime-function-error-type").and_then(|v| v.to_str().ok());
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut doc)) => {
            if !doc.contains_key("errorType")
                && let Some(t) = header_type
            {
                doc.insert("errorType".into(), json!(t));
            }
            Value::Object(doc)
        }
        _ => json!({
            "errorType": header_type.unwrap_or("Runtime.Unknown"),
            "errorMessage": String::from_utf8_lossy(body),
        }),
    }
}

async fn error(State(api): State<Arc<Api>>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let event = Event::Error { request_id: id.clone(), error: error_document(&headers, &body) };
    finish(&api, &id, event)
}

async fn init_error(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let _ = api.events.send(Event::InitError { error: error_document(&headers, &body) });
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// One raw HTTP/1.1 exchange: the status line and the rest of the response.
    async fn exchange(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response).to_string();
        let (status, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
        (status.to_owned(), rest.to_ascii_lowercase())
    }

    #[tokio::test]
    async fn the_runtime_api_hands_out_events_and_takes_only_answers_for_them_whatever_they_hold() {
        let (next_tx, next_rx) = mpsc::channel(1);
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        let api =
            Arc::new(Api { next: tokio::sync::Mutex::new(next_rx), current: Mutex::new(None), events: events_tx });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, api_routes(api)).await });

        let (status, _) = exchange(addr, "POST", "/2018-06-01/runtime/invocation/nobody/response", b"{}").await;
        assert!(status.contains(" 400 "), "{status}");
        let pending = Pending {
            request_id: "req-1".into(),
            payload: Bytes::from_static(b"{\"speed\": 3}"),
            deadline_ms: 1_700_000_003_000,
            function_arn: "arn:aws:lambda:us-east-1:0:function:f".into(),
        };
        next_tx.send(pending).await.unwrap();
        let (status, rest) = exchange(addr, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        assert!(status.contains(" 200 "), "{status}");
        assert!(rest.contains("lambda-runtime-aws-request-id: req-1"), "{rest}");
        assert!(rest.contains("lambda-runtime-deadline-ms: 1700000003000"), "{rest}");
        assert!(rest.contains("lambda-runtime-invoked-function-arn: arn:aws:lambda:us-east-1:0:function:f"), "{rest}");
        assert!(rest.contains("lambda-runtime-trace-id: root=1-"), "{rest}");
        assert!(rest.ends_with("{\"speed\": 3}"), "{rest}");

        let (status, _) =
            exchange(addr, "POST", "/2018-06-01/runtime/invocation/req-1/error", b"\xff\x00 garbage").await;
        assert!(status.contains(" 202 "), "{status}");
        match events_rx.recv().await {
            Some(Event::Error { request_id, error }) => {
                assert_eq!(request_id, "req-1");
                assert_eq!(error["errorType"], "Runtime.Unknown");
            }
            other => panic!("{other:?}"),
        }
        // Answered once: a second answer for the same event is refused.
        let (status, _) = exchange(addr, "POST", "/2018-06-01/runtime/invocation/req-1/response", b"{}").await;
        assert!(status.contains(" 400 "), "{status}");
        let (status, _) = exchange(addr, "POST", "/2018-06-01/runtime/init/error", b"not json").await;
        assert!(status.contains(" 202 "), "{status}");
        assert!(matches!(events_rx.recv().await, Some(Event::InitError { .. })));
        server.abort();
    }

    #[test]
    fn timeouts_are_reported_with_two_decimals() {
        assert_eq!(timed_out("r-1", Duration::from_millis(3004)), "r-1 Task timed out after 3.00 seconds");
        assert_eq!(timed_out("r-1", Duration::from_millis(1256)), "r-1 Task timed out after 1.26 seconds");
    }

    #[test]
    fn whatever_a_runtime_posts_as_an_error_becomes_an_error_document() {
        let mut headers = HeaderMap::new();
        headers.insert("lambda-runtime-function-error-type", "Custom.Boom".parse().unwrap());
        let doc = error_document(&headers, br#"{"errorMessage": "no"}"#);
        assert_eq!(doc, json!({"errorMessage": "no", "errorType": "Custom.Boom"}));
        let doc = error_document(&HeaderMap::new(), b"\xff not json");
        assert_eq!(doc["errorType"], "Runtime.Unknown");
        assert!(doc["errorMessage"].as_str().unwrap().contains("not json"));
        let doc = error_document(&HeaderMap::new(), b"[1,2]");
        assert_eq!(doc["errorType"], "Runtime.Unknown");
    }
}
