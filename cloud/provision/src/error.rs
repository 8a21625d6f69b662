//! Errors, sorted by what the caller does next.

use std::path::PathBuf;

use aws_sdk_iot::error::{ProvideErrorMetadata, SdkError};

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// A passing fault (network, throttling, the service's own trouble): run again later.
    Retry,
    /// The input, the credentials or the account's state is at fault: fix it, then run again.
    FixInput,
    /// Running again will not help (an unsupported operation, an unexpected answer).
    GiveUp,
}

/// A provisioning or deprovisioning failure.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A name, path or option the caller gave is not valid.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The IoT policy file cannot be read, does not parse, or does not fit IoT Core's limits.
    #[error("policy file {path}: {reason}")]
    PolicyFile {
        /// The file (or `shipped` for the policy built into this crate).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The IoT policy would let a device reach other devices' resources; the caller did not opt in.
    #[error(
        "policy file {path} is overly permissive: {}; narrow it, or opt in explicitly (--allow-permissive-policy)",
        findings.join("; ")
    )]
    PermissivePolicy {
        /// The file.
        path: String,
        /// Device Defender-style findings, one per broad grant.
        findings: Vec<String>,
    },
    /// A local file could not be read or written (output directory, root CA, previous record).
    #[error("{}: {source}", path.display())]
    File {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A local file exists but its content is not what it must be.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The service answered with an error.
    #[error("{operation} failed: {code}: {message}")]
    Aws {
        /// The API operation, e.g. `CreateThing`.
        operation: &'static str,
        /// The AWS error code, e.g. `ResourceNotFoundException`.
        code: String,
        /// The service's message.
        message: String,
        /// What to do about it, from the code.
        next: NextStep,
    },
    /// The request never got an answer: connection refused, timeout, TLS failure, unreadable response.
    #[error("{operation} failed: the endpoint could not be reached or did not answer")]
    Transport {
        /// The API operation.
        operation: &'static str,
        /// The underlying error (its chain says why).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The request could not be built or signed (no credentials, no region, bad endpoint URL).
    #[error("{operation} failed: the request could not be built or signed (check credentials, region and endpoint)")]
    Request {
        /// The API operation.
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An artifact a recipe names is not where the build looks for it.
    #[error(
        "component {component}: artifact {artifact} not found (looked at {}); build the binary first (e.g. `cargo build --release`) or fix the recipe's URI",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ArtifactNotFound {
        /// `ComponentName`.
        component: String,
        /// The artifact's file name.
        artifact: String,
        /// Where it was looked for.
        searched: Vec<PathBuf>,
    },
    /// The component version is already published with other content: a new version is needed.
    #[error(
        "component {component} {version} is already published with another {artifact} (stored digest {}, local {local}); publish it under a new version",
        stored.as_deref().unwrap_or("none")
    )]
    DigestMismatch {
        /// `ComponentName`.
        component: String,
        /// `ComponentVersion`.
        version: String,
        /// The artifact's file name.
        artifact: String,
        /// The digest the stored recipe names, if any.
        stored: Option<String>,
        /// The digest of the local file.
        local: String,
    },
    /// The Greengrass service refused the component version (state FAILED).
    #[error(
        "component {component} {version} is FAILED in the service: {message}{}",
        errors.iter().map(|(k, v)| format!("; {k}: {v}")).collect::<String>()
    )]
    ComponentFailed {
        /// `ComponentName`.
        component: String,
        /// `ComponentVersion`.
        version: String,
        /// The status message.
        message: String,
        /// The service's `errors`, by artifact URI.
        errors: std::collections::BTreeMap<String, String>,
    },
    /// The service answered something this code cannot use (a missing member).
    #[error("{operation}: unexpected answer: {reason}")]
    Unexpected {
        /// The API operation.
        operation: &'static str,
        /// What was missing or wrong.
        reason: String,
    },
}

impl ProvisionError {
    /// What the caller should do next.
    pub fn next_step(&self) -> NextStep {
        match self {
            ProvisionError::InvalidInput(_)
            | ProvisionError::PolicyFile { .. }
            | ProvisionError::PermissivePolicy { .. }
            | ProvisionError::File { .. }
            | ProvisionError::BadFile { .. }
            | ProvisionError::ArtifactNotFound { .. }
            | ProvisionError::DigestMismatch { .. }
            | ProvisionError::ComponentFailed { .. }
            | ProvisionError::Request { .. } => NextStep::FixInput,
            ProvisionError::Aws { next, .. } => *next,
            ProvisionError::Transport { .. } => NextStep::Retry,
            ProvisionError::Unexpected { .. } => NextStep::GiveUp,
        }
    }

    /// Whether the fault lies in local input or configuration (names, files, credentials,
    /// region, endpoint URL) rather than in AWS or the network; the binary exits with `EX_CONFIG`.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            ProvisionError::InvalidInput(_)
                | ProvisionError::PolicyFile { .. }
                | ProvisionError::PermissivePolicy { .. }
                | ProvisionError::File { .. }
                | ProvisionError::BadFile { .. }
                | ProvisionError::ArtifactNotFound { .. }
                | ProvisionError::DigestMismatch { .. }
                | ProvisionError::Request { .. }
        )
    }

    /// The AWS error code, when the service answered with one.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            ProvisionError::Aws { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ProvisionError {
        let path = path.into();
        move |source| ProvisionError::File { path, source }
    }

    pub(crate) fn unexpected(operation: &'static str, reason: impl Into<String>) -> ProvisionError {
        ProvisionError::Unexpected { operation, reason: reason.into() }
    }
}

/// What to do about an AWS error code (error shapes of `iot.json`, `greengrassv2.json`, `s3.json`).
pub fn next_step_for_code(code: &str) -> NextStep {
    match code {
        "ThrottlingException"
        | "ServiceUnavailableException"
        | "InternalFailureException"
        | "InternalException"
        | "InternalServerException"
        | "ConflictingResourceUpdateException"
        | "RequestTimeout"
        | "RequestTimeoutException" => NextStep::Retry,
        "InvalidRequestException"
        | "ResourceNotFoundException"
        | "ResourceAlreadyExistsException"
        | "MalformedPolicyException"
        | "VersionsLimitExceededException"
        | "LimitExceededException"
        | "DeleteConflictException"
        | "CertificateStateException"
        | "CertificateValidationException"
        | "UnauthorizedException"
        | "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch" => NextStep::FixInput,
        _ => NextStep::GiveUp,
    }
}

/// Turns an SDK error into a [`ProvisionError`] that keeps the AWS code and message.
pub(crate) fn aws<E>(operation: &'static str) -> impl FnOnce(SdkError<E>) -> ProvisionError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |err| match err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let code = e.code().unwrap_or("UnknownError").to_owned();
            let message = e.message().unwrap_or("(no message)").to_owned();
            ProvisionError::Aws { operation, next: next_step_for_code(&code), code, message }
        }
        SdkError::ConstructionFailure(_) => ProvisionError::Request { operation, source: Box::new(err) },
        // Identity resolution (no credentials in the chain) fails at dispatch too, as an "other"
        // connector error: only I/O and timeouts are the network's fault.
        SdkError::DispatchFailure(ref d) if !(d.is_io() || d.is_timeout()) => {
            ProvisionError::Request { operation, source: Box::new(err) }
        }
        other => ProvisionError::Transport { operation, source: Box::new(other) },
    }
}

/// Whether `result` failed with the AWS error `code`.
pub(crate) fn is_code<T>(result: &Result<T, ProvisionError>, code: &str) -> bool {
    matches!(result, Err(e) if e.aws_code() == Some(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_codes_map_to_what_the_caller_does_next() {
        assert_eq!(next_step_for_code("ThrottlingException"), NextStep::Retry);
        assert_eq!(next_step_for_code("ServiceUnavailableException"), NextStep::Retry);
        assert_eq!(next_step_for_code("UnauthorizedException"), NextStep::FixInput);
        assert_eq!(next_step_for_code("MalformedPolicyException"), NextStep::FixInput);
        assert_eq!(next_step_for_code("UnknownOperationException"), NextStep::GiveUp);
    }

    #[test]
    fn permissive_policy_error_names_every_finding() {
        let e = ProvisionError::PermissivePolicy {
            path: "p.json".into(),
            findings: vec!["allows A".into(), "allows B".into()],
        };
        let text = e.to_string();
        assert!(text.contains("allows A") && text.contains("allows B") && text.contains("--allow-permissive-policy"));
        assert_eq!(e.next_step(), NextStep::FixInput);
        assert!(e.is_configuration());
    }
}
