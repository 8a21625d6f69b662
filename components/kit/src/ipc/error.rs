//! The client's errors, sorted by what the caller does next.

use cloud_api::ipc::error::{ErrorCode, ServiceError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a caller should do about an [`IpcError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try again later (a new connection if the old one is closed): the fault is transient.
    Retry,
    /// The request is wrong: change it before trying again.
    FixInput,
    /// Retrying will not help: the component's configuration or deployment is wrong (not
    /// started by a nucleus, refused token, accessControl missing), or the peer is broken.
    GiveUp,
}

/// An IPC failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IpcError {
    /// An environment variable the nucleus sets is missing or empty. Give up: the process
    /// was not started as a Greengrass component.
    #[error("{var} is not set: this process was not started by a Greengrass nucleus (or the simulated core)")]
    MissingEnv {
        /// The variable.
        var: &'static str,
    },
    /// The socket could not be opened. Retry: the nucleus may be starting or restarting.
    #[error("cannot connect to the IPC socket {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// The nucleus answered CONNECT without accepting it. Give up: the `SVCUID` is wrong.
    #[error("the nucleus refused the IPC connection (is SVCUID this component's token?)")]
    Refused,
    /// No answer within the timeout. Retry; a call that changes state may have happened.
    #[error("{operation}: no response within {after:?}")]
    Timeout {
        /// The operation (`aws.greengrass#UpdateState`), or `CONNECT`.
        operation: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The connection is gone (the nucleus closed it, or a read or write failed). Retry
    /// with a new client.
    #[error("the IPC connection is closed: {reason}")]
    ConnectionClosed {
        /// What closed it.
        reason: String,
    },
    /// The peer broke the protocol (a malformed frame, an unexpected message) or reported
    /// that we did; the connection is closed. Give up: this is a bug on one side.
    #[error("IPC protocol error: {0}")]
    Protocol(String),
    /// The service answered with an error; [`IpcError::next_step`] depends on its code.
    #[error("{operation} failed: {error}")]
    Service {
        /// The operation.
        operation: &'static str,
        /// The code and message the nucleus sent (boxed: it is the largest variant).
        error: Box<ServiceError>,
    },
    /// The request cannot be sent as given (too large for a frame). Fix the input.
    #[error("{operation}: cannot send the request: {reason}")]
    InvalidRequest {
        /// The operation.
        operation: &'static str,
        /// Why.
        reason: String,
    },
    /// The answer does not match the operation's model (wrong shape, bad JSON). Give up:
    /// the nucleus and this client disagree on the model.
    #[error("{operation}: unexpected answer: {reason}")]
    UnexpectedResponse {
        /// The operation.
        operation: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A subscription's buffer filled because events were not read fast enough; the
    /// stream was closed. Retry: subscribe again, and read faster.
    #[error("{operation}: more than {capacity} unread events; the subscription was closed")]
    Lagged {
        /// The operation.
        operation: &'static str,
        /// The buffer size.
        capacity: usize,
    },
    /// Every stream id (up to i32::MAX) of this connection is used. Retry with a new client.
    #[error("stream ids exhausted on this connection; reconnect")]
    StreamIdsExhausted,
}

impl IpcError {
    /// What to do about it.
    pub fn next_step(&self) -> NextStep {
        match self {
            IpcError::Connect { .. }
            | IpcError::Timeout { .. }
            | IpcError::ConnectionClosed { .. }
            | IpcError::Lagged { .. }
            | IpcError::StreamIdsExhausted => NextStep::Retry,
            IpcError::InvalidRequest { .. } => NextStep::FixInput,
            IpcError::MissingEnv { .. }
            | IpcError::Refused
            | IpcError::Protocol(_)
            | IpcError::UnexpectedResponse { .. } => NextStep::GiveUp,
            IpcError::Service { error, .. } => next_step_for(&error.code),
        }
    }

    /// The service error, when the nucleus sent one.
    pub fn service_error(&self) -> Option<&ServiceError> {
        match self {
            IpcError::Service { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The service error code, when the nucleus sent one.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.service_error().map(|e| &e.code)
    }

    /// True for `ResourceNotFoundError`: for GetThingShadow this is "no shadow yet".
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(&ErrorCode::ResourceNotFoundError)
    }
}

/// The next step for each service error code.
///
/// - `ServiceError`, unknown codes (the Java server's `InternalServerError`): retry.
/// - `ConflictError`: retry after re-reading (a shadow version moved on).
/// - `UnauthorizedError`, `aws#AccessDenied`: give up; the recipe's accessControl must allow it.
/// - `aws#UnsupportedOperation`: give up; the nucleus does not serve the operation.
/// - everything else (invalid arguments, not found, failed condition): fix the input.
pub fn next_step_for(code: &ErrorCode) -> NextStep {
    match code {
        ErrorCode::ServiceError | ErrorCode::ConflictError | ErrorCode::Other(_) => NextStep::Retry,
        ErrorCode::UnauthorizedError | ErrorCode::AccessDenied | ErrorCode::UnsupportedOperation => NextStep::GiveUp,
        _ => NextStep::FixInput,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn service(code: ErrorCode) -> IpcError {
        IpcError::Service {
            operation: "aws.greengrass#GetThingShadow",
            error: Box::new(ServiceError { code, message: "m".into(), fields: Map::new() }),
        }
    }

    #[test]
    fn service_errors_say_what_to_do_next() {
        assert_eq!(service(ErrorCode::ServiceError).next_step(), NextStep::Retry);
        assert_eq!(service(ErrorCode::ConflictError).next_step(), NextStep::Retry);
        assert_eq!(service(ErrorCode::InvalidArgumentsError).next_step(), NextStep::FixInput);
        assert_eq!(service(ErrorCode::ResourceNotFoundError).next_step(), NextStep::FixInput);
        assert_eq!(service(ErrorCode::UnauthorizedError).next_step(), NextStep::GiveUp);
        assert!(service(ErrorCode::ResourceNotFoundError).is_not_found());
        assert_eq!(IpcError::Refused.next_step(), NextStep::GiveUp);
        assert_eq!(IpcError::MissingEnv { var: "SVCUID" }.next_step(), NextStep::GiveUp);
    }

    #[test]
    fn messages_name_the_operation_and_the_code() {
        let text = service(ErrorCode::UnauthorizedError).to_string();
        assert_eq!(text, "aws.greengrass#GetThingShadow failed: UnauthorizedError: m");
    }
}
