//! AWS Lambda (the subset the solution uses): functions on the `provided.al2023` and
//! `provided.al2` custom runtimes, created from a .zip holding a `bootstrap` executable, and
//! invoked synchronously (`RequestResponse`) or asynchronously (`Event`). A function runs as a
//! process that polls the Lambda Runtime API ("Using the Lambda runtime API for custom
//! runtimes" in the AWS Lambda Developer Guide), so a function written with the
//! `lambda_runtime` crate runs here and on AWS unchanged.
//!
//! Functions are kept in `state.sqlite` (`lambda_function`); their code is unpacked under
//! `lambda/{function}/{revision}/` in the data directory. A function's resource-based policy
//! (AddPermission) decides whether IoT Core's rules may invoke it.
//!
//! # Layout
//! - this file: functions, their configuration and policy, and invocation;
//! - [`code`]: checking and unpacking deployment packages (pure but for the files it writes);
//! - [`runtime`]: the function processes and the Runtime API each one polls;
//! - [`http`]: the control plane and Invoke over restJson1 (`lambda.json`, API 2015-03-31).

pub mod code;
pub mod http;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::iam::{Iam, roles::LAMBDA_PRINCIPAL, roles::RULES_ENGINE_PRINCIPAL};
use crate::s3::ObjectStore;
use crate::store::{Store, StoreError};
use crate::time::SharedClock;
use runtime::{Job, Outcome, Runtimes};

/// Largest request body Lambda's routes read: a 50 MB package in base64, inside JSON.
pub const MAX_REQUEST_BYTES: usize = 70 * 1024 * 1024;
/// Largest payload of a synchronous invocation (and of its response).
pub const MAX_SYNC_PAYLOAD: usize = 6 * 1024 * 1024;
/// Largest payload of an asynchronous invocation.
pub const MAX_EVENT_PAYLOAD: usize = 1024 * 1024;
/// The runtimes functions may use: the OS-only custom runtimes.
pub const RUNTIMES: [&str; 2] = ["provided.al2023", "provided.al2"];
/// `Timeout` in seconds: allowed range and default.
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<i64> = 1..=900;
/// `Timeout` when CreateFunction names none.
pub const DEFAULT_TIMEOUT: u32 = 3;
/// `MemorySize` in MB: allowed range.
pub const MEMORY_RANGE: std::ops::RangeInclusive<i64> = 128..=10240;
/// `MemorySize` when CreateFunction names none.
pub const DEFAULT_MEMORY: u32 = 128;
/// The only version the local cloud has.
pub const LATEST: &str = "$LATEST";

const K_FUNCTION: &str = "lambda_function";

/// Environment variables Lambda sets itself and refuses in a function's configuration.
const RESERVED_VARIABLES: [&str; 12] = [
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_FUNCTION_NAME",
];

/// Why a Lambda operation failed; each is an exception of `lambda.json`.
#[derive(Debug, thiserror::Error)]
pub enum LambdaError {
    /// `InvalidParameterValueException` (400): fix the request.
    #[error("{0}")]
    InvalidParameter(String),
    /// `InvalidRequestContentException` (400): the payload is not JSON.
    #[error("{0}")]
    InvalidContent(String),
    /// `RequestTooLargeException` (413).
    #[error("{0}")]
    TooLarge(String),
    /// `ResourceNotFoundException` (404).
    #[error("{0}")]
    NotFound(String),
    /// `ResourceConflictException` (409).
    #[error("{0}")]
    Conflict(String),
    /// `TooManyRequestsException` (429): retry later.
    #[error("{0}")]
    TooManyRequests(String),
    /// `ServiceException` (500): state could not be read or written; retry.
    #[error("{0}")]
    Service(String),
}

impl From<StoreError> for LambdaError {
    fn from(e: StoreError) -> Self {
        LambdaError::Service(format!("state: {e}"))
    }
}

impl From<code::CodeError> for LambdaError {
    fn from(e: code::CodeError) -> Self {
        match e {
            code::CodeError::Invalid(m) => LambdaError::InvalidParameter(m),
            code::CodeError::Io(m) => LambdaError::Service(m),
        }
    }
}

/// A function as the local cloud keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Function {
    /// `FunctionName`.
    pub name: String,
    /// `FunctionArn`.
    pub arn: String,
    /// `Runtime`.
    pub runtime: String,
    /// `Role`: the execution role's ARN.
    pub role: String,
    /// `Handler` (given to the runtime as `_HANDLER`).
    pub handler: Option<String>,
    /// `Description`.
    pub description: String,
    /// `Timeout`, seconds.
    pub timeout: u32,
    /// `MemorySize`, MB (reported to the function; not enforced).
    pub memory_size: u32,
    /// `Environment.Variables`.
    pub environment: BTreeMap<String, String>,
    /// `Architectures` (reported; the function runs on this machine's).
    pub architectures: Vec<String>,
    /// `CodeSize`.
    pub code_size: u64,
    /// `CodeSha256`.
    pub code_sha256: String,
    /// `LastModified`, milliseconds since the epoch.
    pub last_modified_ms: u64,
    /// `RevisionId`: changes with every update.
    pub revision_id: String,
    /// The code directory, under `lambda/{name}/` in the data directory.
    pub code_revision: String,
    /// The resource-based policy's statements (AddPermission).
    pub statements: Vec<Value>,
}

impl Function {
    /// `FunctionConfiguration` on the wire.
    pub fn configuration(&self) -> Value {
        let mut c = json!({
            "FunctionName": self.name,
            "FunctionArn": self.arn,
            "Runtime": self.runtime,
            "Role": self.role,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory_size,
            "LastModified": last_modified(self.last_modified_ms),
            "CodeSha256": self.code_sha256,
            "Version": LATEST,
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": self.revision_id,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": self.architectures,
            "EphemeralStorage": {"Size": 512},
        });
        if let Some(handler) = &self.handler {
            c["Handler"] = json!(handler);
        }
        if !self.environment.is_empty() {
            c["Environment"] = json!({ "Variables": self.environment });
        }
        c
    }

    /// The resource-based policy document, as GetPolicy returns it.
    pub fn policy(&self) -> Value {
        json!({"Version": "2012-10-17", "Id": "default", "Statement": self.statements})
    }

    /// Whether the resource-based policy lets the service `principal` invoke the function.
    pub fn allows_service(&self, principal: &str) -> bool {
        self.statements.iter().any(|s| {
            let service = &s["Principal"]["Service"];
            let named = service.as_str() == Some(principal)
                || service.as_array().is_some_and(|a| a.iter().any(|p| p.as_str() == Some(principal)));
            let action = s["Action"].as_str().unwrap_or_default();
            s["Effect"] == "Allow" && named && matches!(action, "lambda:InvokeFunction" | "lambda:*")
        })
    }
}

/// `LastModified` as Lambda writes it: `2024-05-01T12:00:00.000+0000`.
pub fn last_modified(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0000",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Where a function's code comes from (`FunctionCode`, or UpdateFunctionCode's members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    /// `ZipFile`: the package itself.
    Zip(Vec<u8>),
    /// `S3Bucket` and `S3Key`: a package in the local S3.
    S3 {
        /// `S3Bucket`.
        bucket: String,
        /// `S3Key`.
        key: String,
    },
}

/// What CreateFunction asks for, checked by the HTTP layer for shape only.
#[derive(Debug, Clone, Default)]
pub struct NewFunction {
    /// `FunctionName`.
    pub name: String,
    /// `Runtime`.
    pub runtime: Option<String>,
    /// `Role`.
    pub role: String,
    /// `Handler`.
    pub handler: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `Timeout`.
    pub timeout: Option<i64>,
    /// `MemorySize`.
    pub memory_size: Option<i64>,
    /// `Environment.Variables`.
    pub environment: Option<BTreeMap<String, String>>,
    /// `Architectures`.
    pub architectures: Option<Vec<String>>,
    /// `Code`.
    pub code: Option<CodeSource>,
}

/// What UpdateFunctionConfiguration changes; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct ConfigurationUpdate {
    /// `Role`.
    pub role: Option<String>,
    /// `Handler`.
    pub handler: Option<String>,
    /// `Description`.
    pub description: Option<String>,
    /// `Timeout`.
    pub timeout: Option<i64>,
    /// `MemorySize`.
    pub memory_size: Option<i64>,
    /// `Environment.Variables` (replaces all of them).
    pub environment: Option<BTreeMap<String, String>>,
    /// `Runtime`.
    pub runtime: Option<String>,
    /// `RevisionId`: update only that revision.
    pub revision_id: Option<String>,
}

/// How an invocation was asked for (`X-Amz-Invocation-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    /// Wait for the function's response.
    RequestResponse,
    /// Queue it and answer 202 at once.
    Event,
    /// Check the function exists and the caller may invoke it; run nothing.
    DryRun,
}

impl InvocationType {
    /// Parses the header; absent means `RequestResponse`.
    pub fn parse(header: Option<&str>) -> Result<Self, LambdaError> {
        match header {
            None | Some("RequestResponse") => Ok(InvocationType::RequestResponse),
            Some("Event") => Ok(InvocationType::Event),
            Some("DryRun") => Ok(InvocationType::DryRun),
            Some(other) => Err(LambdaError::InvalidParameter(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: \
                 Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            ))),
        }
    }
}

/// The function name in a `FunctionName` parameter: a name, a partial ARN
/// (`{account}:function:{name}`) or a full ARN, with an optional `:$LATEST` qualifier (the only
/// version the local cloud has).
pub fn function_name(param: &str) -> Result<String, LambdaError> {
    let parts: Vec<&str> = param.split(':').collect();
    let (name, qualifier) = match parts.as_slice() {
        [name] => (*name, None),
        [name, q] => (*name, Some(*q)),
        [_, "function", name] => (*name, None),
        [_, "function", name, q] => (*name, Some(*q)),
        ["arn", _, "lambda", _, _, "function", name] => (*name, None),
        ["arn", _, "lambda", _, _, "function", name, q] => (*name, Some(*q)),
        _ => return Err(LambdaError::InvalidParameter(format!("{param:?} is not a function name or ARN"))),
    };
    let valid =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(LambdaError::InvalidParameter(format!(
            "function name {name:?} must be 1 to 64 letters, digits, hyphens or underscores"
        )));
    }
    match qualifier {
        None => Ok(name.to_owned()),
        Some(q) if q == LATEST => Ok(name.to_owned()),
        Some(q) => Err(LambdaError::NotFound(format!(
            "Function not found: {name}:{q} (the local cloud has only {LATEST}: no versions or aliases)"
        ))),
    }
}

fn in_range(
    name: &str,
    value: Option<i64>,
    range: &std::ops::RangeInclusive<i64>,
    default: u32,
) -> Result<u32, LambdaError> {
    match value {
        None => Ok(default),
        Some(v) if range.contains(&v) => Ok(v as u32),
        Some(v) => Err(LambdaError::InvalidParameter(format!(
            "{name} {v} is out of range: it must be from {} to {}",
            range.start(),
            range.end()
        ))),
    }
}

fn check_runtime(runtime: &str) -> Result<(), LambdaError> {
    if RUNTIMES.contains(&runtime) {
        Ok(())
    } else {
        Err(LambdaError::InvalidParameter(format!(
            "The runtime parameter of {runtime} is not supported by the local cloud: it runs only the OS-only \
             custom runtimes ({}), with a bootstrap executable in the package",
            RUNTIMES.join(", ")
        )))
    }
}

fn check_environment(vars: &BTreeMap<String, String>) -> Result<(), LambdaError> {
    let reserved: Vec<&str> = vars.keys().map(String::as_str).filter(|k| RESERVED_VARIABLES.contains(k)).collect();
    if !reserved.is_empty() {
        return Err(LambdaError::InvalidParameter(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have \
             provided contains reserved keys that are currently not supported for modification. Reserved keys used \
             in this request: {}",
            reserved.join(", ")
        )));
    }
    match vars.keys().find(|k| k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')) {
        Some(bad) => Err(LambdaError::InvalidParameter(format!(
            "environment variable name {bad:?} must be letters, digits and underscores"
        ))),
        None => Ok(()),
    }
}

/// The Lambda service.
#[derive(Debug, Clone)]
pub struct Lambda {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    clock: SharedClock,
    iam: Iam,
    objects: Arc<dyn ObjectStore>,
    code_root: PathBuf,
    runtimes: Runtimes,
}

/// What [`Lambda::new`] needs.
#[derive(Debug)]
pub struct LambdaConfig {
    /// Where functions are kept.
    pub store: Store,
    /// The clock (`LastModified`).
    pub clock: SharedClock,
    /// Execution roles and their sessions.
    pub iam: Iam,
    /// The local S3, for code given as `S3Bucket`/`S3Key`.
    pub objects: Arc<dyn ObjectStore>,
    /// The data directory (code goes under `lambda/`).
    pub data_dir: PathBuf,
    /// The HTTP endpoint's URL, given to functions as `AWS_ENDPOINT_URL`.
    pub http_url: String,
    /// Stops every function process.
    pub shutdown: tokio_util::sync::CancellationToken,
}

impl Lambda {
    /// The service.
    pub fn new(config: LambdaConfig) -> Self {
        let code_root = config.data_dir.join("lambda");
        let runtimes = Runtimes::new(runtime::Launch {
            iam: config.iam.clone(),
            code_root: code_root.clone(),
            http_url: config.http_url,
            region: config.iam.region().to_owned(),
            shutdown: config.shutdown,
        });
        Lambda {
            inner: Arc::new(Inner {
                store: config.store,
                clock: config.clock,
                iam: config.iam,
                objects: config.objects,
                code_root,
                runtimes,
            }),
        }
    }

    /// Waits until every function process has been stopped (after the local cloud's shutdown).
    pub async fn stopped(&self) {
        self.inner.runtimes.stopped().await;
    }

    fn arn(&self, name: &str) -> String {
        format!("arn:aws:lambda:{}:{}:function:{name}", self.inner.iam.region(), self.inner.iam.account())
    }

    /// The function named by `param` (a name or ARN).
    pub fn get(&self, param: &str) -> Result<Function, LambdaError> {
        let name = function_name(param)?;
        let text = self
            .inner
            .store
            .get(K_FUNCTION, &name)?
            .ok_or_else(|| LambdaError::NotFound(format!("Function not found: {}", self.arn(&name))))?;
        serde_json::from_str(&text)
            .map_err(|e| LambdaError::Service(format!("stored function {name} is unreadable: {e}")))
    }

    /// ListFunctions: every function, by name.
    pub fn list(&self) -> Result<Vec<Function>, LambdaError> {
        let mut all: Vec<Function> =
            self.inner.store.all(K_FUNCTION)?.into_iter().filter_map(|(_, t)| serde_json::from_str(&t).ok()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    fn save(&self, f: &Function) -> Result<(), LambdaError> {
        let text = serde_json::to_string(f).map_err(|e| LambdaError::Service(e.to_string()))?;
        self.inner.store.put(K_FUNCTION, &f.name, &text)?;
        Ok(())
    }

    /// Checks that the execution role exists and trusts Lambda.
    fn check_role(&self, role_arn: &str) -> Result<(), LambdaError> {
        let cannot = || {
            LambdaError::InvalidParameter(format!(
                "The role defined for the function cannot be assumed by Lambda. ({role_arn} must exist and trust \
                 {LAMBDA_PRINCIPAL})"
            ))
        };
        let role = self.inner.iam.role_by_arn(role_arn).map_err(|_| cannot())?;
        crate::iam::roles::trust_allows(&role.assume_role_policy, LAMBDA_PRINCIPAL).map_err(|_| cannot())
    }

    /// Fetches and unpacks `source` into a new revision directory of `name`.
    fn unpack(&self, name: &str, source: CodeSource) -> Result<(String, code::Unpacked), LambdaError> {
        let package = match source {
            CodeSource::Zip(bytes) => bytes,
            CodeSource::S3 { bucket, key } => {
                let meta = self.inner.objects.head(&bucket, &key).map_err(|e| {
                    LambdaError::InvalidParameter(format!("Error occurred while GetObject. S3 Error Code: {e}"))
                })?;
                let meta = meta.ok_or_else(|| {
                    LambdaError::InvalidParameter(format!(
                        "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: {bucket}/{key} does not exist"
                    ))
                })?;
                if meta.size > code::MAX_ZIPPED_BYTES as u64 {
                    return Err(LambdaError::InvalidParameter(format!(
                        "the deployment package s3://{bucket}/{key} is {} bytes; at most {} are accepted",
                        meta.size,
                        code::MAX_ZIPPED_BYTES
                    )));
                }
                self.inner.objects.get(&bucket, &key).map_err(|e| {
                    LambdaError::InvalidParameter(format!("Error occurred while GetObject. S3 Error Code: {e}"))
                })?
            }
        };
        let revision = uuid::Uuid::new_v4().to_string();
        let unpacked = code::unpack(&package, &self.inner.code_root.join(name).join(&revision))?;
        Ok((revision, unpacked))
    }

    /// CreateFunction.
    pub fn create(&self, new: NewFunction) -> Result<Function, LambdaError> {
        let name = function_name(&new.name)?;
        if name != new.name {
            return Err(LambdaError::InvalidParameter("FunctionName must be a name when creating a function".into()));
        }
        let runtime = new
            .runtime
            .ok_or_else(|| LambdaError::InvalidParameter("Runtime is required for a .zip deployment package".into()))?;
        check_runtime(&runtime)?;
        let timeout = in_range("Timeout", new.timeout, &TIMEOUT_RANGE, DEFAULT_TIMEOUT)?;
        let memory_size = in_range("MemorySize", new.memory_size, &MEMORY_RANGE, DEFAULT_MEMORY)?;
        let environment = new.environment.unwrap_or_default();
        check_environment(&environment)?;
        let architectures = check_architectures(new.architectures)?;
        self.check_role(&new.role)?;
        if self.inner.store.get(K_FUNCTION, &name)?.is_some() {
            return Err(LambdaError::Conflict(format!("Function already exist: {name}")));
        }
        let source = new
            .code
            .ok_or_else(|| LambdaError::InvalidParameter("Code is required: ZipFile, or S3Bucket and S3Key".into()))?;
        let (code_revision, unpacked) = self.unpack(&name, source)?;
        let f = Function {
            arn: self.arn(&name),
            name,
            runtime,
            role: new.role,
            handler: new.handler,
            description: new.description.unwrap_or_default(),
            timeout,
            memory_size,
            environment,
            architectures,
            code_size: unpacked.code_size,
            code_sha256: unpacked.code_sha256,
            last_modified_ms: self.inner.clock.now_millis(),
            revision_id: uuid::Uuid::new_v4().to_string(),
            code_revision,
            statements: Vec::new(),
        };
        self.save(&f)?;
        Ok(f)
    }

    fn check_revision(f: &Function, revision_id: Option<&str>) -> Result<(), LambdaError> {
        match revision_id {
            Some(r) if r != f.revision_id => Err(LambdaError::Conflict(format!(
                "The Revision Id provided does not match the latest Revision Id ({}). Call GetFunction/GetAlias to \
                 retrieve the latest Revision Id",
                f.revision_id
            ))),
            _ => Ok(()),
        }
    }

    /// UpdateFunctionCode: the next invocation runs the new code (in a new process).
    pub fn update_code(
        &self,
        param: &str,
        source: CodeSource,
        revision_id: Option<&str>,
    ) -> Result<Function, LambdaError> {
        let mut f = self.get(param)?;
        Self::check_revision(&f, revision_id)?;
        let (code_revision, unpacked) = self.unpack(&f.name, source)?;
        let old = std::mem::replace(&mut f.code_revision, code_revision);
        f.code_size = unpacked.code_size;
        f.code_sha256 = unpacked.code_sha256;
        f.last_modified_ms = self.inner.clock.now_millis();
        f.revision_id = uuid::Uuid::new_v4().to_string();
        self.save(&f)?;
        self.inner.runtimes.code_replaced(&f.name, self.inner.code_root.join(&f.name).join(old));
        Ok(f)
    }

    /// UpdateFunctionConfiguration: the next invocation runs with the new configuration.
    pub fn update_configuration(&self, param: &str, update: ConfigurationUpdate) -> Result<Function, LambdaError> {
        let mut f = self.get(param)?;
        Self::check_revision(&f, update.revision_id.as_deref())?;
        if let Some(runtime) = update.runtime {
            check_runtime(&runtime)?;
            f.runtime = runtime;
        }
        if let Some(role) = update.role {
            self.check_role(&role)?;
            f.role = role;
        }
        if let Some(vars) = update.environment {
            check_environment(&vars)?;
            f.environment = vars;
        }
        f.timeout = in_range("Timeout", update.timeout, &TIMEOUT_RANGE, f.timeout)?;
        f.memory_size = in_range("MemorySize", update.memory_size, &MEMORY_RANGE, f.memory_size)?;
        if update.handler.is_some() {
            f.handler = update.handler;
        }
        if let Some(d) = update.description {
            f.description = d;
        }
        f.last_modified_ms = self.inner.clock.now_millis();
        f.revision_id = uuid::Uuid::new_v4().to_string();
        self.save(&f)?;
        Ok(f)
    }

    /// DeleteFunction: its process stops once the invocations already queued have run.
    pub fn delete(&self, param: &str) -> Result<(), LambdaError> {
        let f = self.get(param)?;
        self.inner.store.delete(K_FUNCTION, &f.name)?;
        self.inner.runtimes.retire(&f.name, Some(self.inner.code_root.join(&f.name)));
        Ok(())
    }

    /// AddPermission: a statement of the resource-based policy; returns it.
    pub fn add_permission(&self, param: &str, permission: Permission) -> Result<Value, LambdaError> {
        let mut f = self.get(param)?;
        Self::check_revision(&f, permission.revision_id.as_deref())?;
        let valid_sid = (1..=100).contains(&permission.statement_id.len())
            && permission.statement_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_sid {
            return Err(LambdaError::InvalidParameter(format!(
                "StatementId {:?} must be 1 to 100 letters, digits, hyphens or underscores",
                permission.statement_id
            )));
        }
        if !permission.action.starts_with("lambda:") {
            return Err(LambdaError::InvalidParameter(format!(
                "Action {:?} must be a Lambda action such as lambda:InvokeFunction",
                permission.action
            )));
        }
        if f.statements.iter().any(|s| s["Sid"] == permission.statement_id.as_str()) {
            return Err(LambdaError::Conflict(format!(
                "The statement id ({}) provided already exists. Please provide a new statement id, or remove the \
                 existing statement.",
                permission.statement_id
            )));
        }
        let principal = if permission.principal.contains(".amazonaws.com") {
            json!({ "Service": permission.principal })
        } else {
            json!({ "AWS": permission.principal })
        };
        let mut statement = json!({
            "Sid": permission.statement_id,
            "Effect": "Allow",
            "Principal": principal,
            "Action": permission.action,
            "Resource": f.arn,
        });
        let mut condition = serde_json::Map::new();
        if let Some(arn) = permission.source_arn {
            condition.insert("ArnLike".into(), json!({ "AWS:SourceArn": arn }));
        }
        if let Some(account) = permission.source_account {
            condition.insert("StringEquals".into(), json!({ "AWS:SourceAccount": account }));
        }
        if !condition.is_empty() {
            statement["Condition"] = Value::Object(condition);
        }
        f.statements.push(statement.clone());
        f.revision_id = uuid::Uuid::new_v4().to_string();
        self.save(&f)?;
        Ok(statement)
    }

    /// GetPolicy: the policy and the function's revision.
    pub fn get_policy(&self, param: &str) -> Result<(Value, String), LambdaError> {
        let f = self.get(param)?;
        if f.statements.is_empty() {
            return Err(LambdaError::NotFound("The resource you requested does not exist.".into()));
        }
        Ok((f.policy(), f.revision_id))
    }

    /// RemovePermission.
    pub fn remove_permission(
        &self,
        param: &str,
        statement_id: &str,
        revision_id: Option<&str>,
    ) -> Result<(), LambdaError> {
        let mut f = self.get(param)?;
        Self::check_revision(&f, revision_id)?;
        let before = f.statements.len();
        f.statements.retain(|s| s["Sid"] != statement_id);
        if f.statements.len() == before {
            return Err(LambdaError::NotFound(format!("Statement {statement_id} is not found in resource policy.")));
        }
        f.revision_id = uuid::Uuid::new_v4().to_string();
        self.save(&f)
    }

    /// Invokes `function` (already looked up) with `payload`: `RequestResponse` waits for the
    /// outcome; `Event` queues it (`None`); `DryRun` runs nothing (`None`).
    pub async fn invoke(
        &self,
        function: Function,
        kind: InvocationType,
        payload: Bytes,
    ) -> Result<Option<Outcome>, LambdaError> {
        let limit = if kind == InvocationType::Event { MAX_EVENT_PAYLOAD } else { MAX_SYNC_PAYLOAD };
        if payload.len() > limit {
            return Err(LambdaError::TooLarge(format!(
                "Request must be smaller than {limit} bytes for the {kind:?} invocation type"
            )));
        }
        let payload = if payload.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"{}") } else { payload };
        if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
            return Err(LambdaError::InvalidContent("Could not parse request body into json".into()));
        }
        match kind {
            InvocationType::DryRun => Ok(None),
            InvocationType::Event => {
                self.inner.runtimes.submit_event(Job::new(function, payload, None))?;
                Ok(None)
            }
            InvocationType::RequestResponse => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.inner.runtimes.submit(Job::new(function, payload, Some(tx))).await?;
                rx.await.map(Some).map_err(|_| LambdaError::Service("the function's runtime stopped".into()))
            }
        }
    }
}

fn check_architectures(architectures: Option<Vec<String>>) -> Result<Vec<String>, LambdaError> {
    let architectures = architectures.unwrap_or_else(|| vec!["x86_64".into()]);
    match architectures.as_slice() {
        [a] if a == "x86_64" || a == "arm64" => Ok(architectures),
        _ => Err(LambdaError::InvalidParameter("Architectures must be one of [x86_64] or [arm64]".into())),
    }
}

/// What AddPermission asks for.
#[derive(Debug, Clone, Default)]
pub struct Permission {
    /// `StatementId`.
    pub statement_id: String,
    /// `Action`, e.g. `lambda:InvokeFunction`.
    pub action: String,
    /// `Principal`: a service (`iot.amazonaws.com`) or an account.
    pub principal: String,
    /// `SourceArn`.
    pub source_arn: Option<String>,
    /// `SourceAccount`.
    pub source_account: Option<String>,
    /// `RevisionId`.
    pub revision_id: Option<String>,
}

impl crate::rules::engine::FunctionSink for Lambda {
    fn invoke_event(&self, function_arn: &str, payload: Bytes) -> Result<(), String> {
        let f = self.get(function_arn).map_err(|e| match e {
            LambdaError::NotFound(_) | LambdaError::InvalidParameter(_) => {
                format!("Function not found: {function_arn}")
            }
            other => other.to_string(),
        })?;
        if !f.allows_service(RULES_ENGINE_PRINCIPAL) {
            return Err(format!(
                "AWS IoT is not authorized to invoke {function_arn}: its resource-based policy must allow \
                 lambda:InvokeFunction to {RULES_ENGINE_PRINCIPAL} (AddPermission)"
            ));
        }
        if payload.len() > MAX_EVENT_PAYLOAD {
            return Err(format!(
                "the message is larger than {MAX_EVENT_PAYLOAD} bytes, Lambda's limit for Event invocations"
            ));
        }
        self.inner.runtimes.submit_event(Job::new(f, payload, None)).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_arns_and_qualifiers_resolve_to_the_name() {
        assert_eq!(function_name("ingest").unwrap(), "ingest");
        assert_eq!(function_name("ingest:$LATEST").unwrap(), "ingest");
        assert_eq!(function_name("000000000000:function:ingest").unwrap(), "ingest");
        assert_eq!(function_name("arn:aws:lambda:us-east-1:000000000000:function:ingest").unwrap(), "ingest");
        assert!(matches!(function_name("ingest:prod"), Err(LambdaError::NotFound(_))));
        assert!(matches!(function_name("in gest"), Err(LambdaError::InvalidParameter(_))));
        assert!(matches!(function_name(""), Err(LambdaError::InvalidParameter(_))));
        assert!(matches!(function_name("a:b:c:d:e"), Err(LambdaError::InvalidParameter(_))));
    }

    #[test]
    fn reserved_and_malformed_environment_variables_are_refused() {
        let vars = |k: &str| BTreeMap::from([(k.to_owned(), "v".to_owned())]);
        assert!(check_environment(&vars("GREETING")).is_ok());
        assert!(check_environment(&vars("AWS_REGION")).unwrap_err().to_string().contains("reserved keys"));
        assert!(check_environment(&vars("A-B")).is_err());
    }

    #[test]
    fn invocation_types_and_ranges_follow_the_model() {
        assert_eq!(InvocationType::parse(None).unwrap(), InvocationType::RequestResponse);
        assert_eq!(InvocationType::parse(Some("Event")).unwrap(), InvocationType::Event);
        assert!(InvocationType::parse(Some("Later")).is_err());
        assert_eq!(in_range("Timeout", None, &TIMEOUT_RANGE, 3).unwrap(), 3);
        assert_eq!(in_range("Timeout", Some(900), &TIMEOUT_RANGE, 3).unwrap(), 900);
        assert!(in_range("Timeout", Some(0), &TIMEOUT_RANGE, 3).is_err());
        assert!(check_runtime("python3.12").unwrap_err().to_string().contains("provided.al2023"));
    }

    #[test]
    fn last_modified_is_written_as_lambda_writes_it() {
        assert_eq!(last_modified(1_700_000_000_123), "2023-11-14T22:13:20.123+0000");
    }

    #[test]
    fn only_a_statement_for_the_service_allows_it_to_invoke() {
        let mut f = Function {
            name: "f".into(),
            arn: "arn".into(),
            runtime: RUNTIMES[0].into(),
            role: String::new(),
            handler: None,
            description: String::new(),
            timeout: 3,
            memory_size: 128,
            environment: BTreeMap::new(),
            architectures: vec![],
            code_size: 0,
            code_sha256: String::new(),
            last_modified_ms: 0,
            revision_id: String::new(),
            code_revision: String::new(),
            statements: vec![],
        };
        assert!(!f.allows_service("iot.amazonaws.com"));
        f.statements.push(
            json!({"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "lambda:InvokeFunction"}),
        );
        assert!(!f.allows_service("iot.amazonaws.com"));
        f.statements.push(json!({"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "lambda:InvokeFunction"}));
        assert!(f.allows_service("iot.amazonaws.com"));
    }
}
