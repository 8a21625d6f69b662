//! Amazon CloudWatch Logs, the subset a Greengrass core's log manager and an operator use:
//! log groups, log streams, PutLogEvents, GetLogEvents and FilterLogEvents, kept in
//! `logs.sqlite` in the data directory so they survive a restart.
//!
//! The wire protocol is AWS JSON 1.1 (the `logs` service model, API version 2014-03-28):
//! `POST /` with `X-Amz-Target: Logs_20140328.{Operation}` and a JSON body, answered with
//! `application/x-amz-json-1.1`; an error is HTTP 400 with `{"__type": "{Shape}", "message": …}`
//! (500 for the service's own failures), the shape being what botocore raises. [`http`] serves
//! it on the local cloud's HTTP endpoint; requests are SigV4-signed for `logs` and authorized
//! per operation (`logs:{Operation}` on `arn:aws:logs:{region}:{account}:log-group:{name}` or,
//! for the operations on a stream, `…:log-group:{name}:log-stream:{stream}`, as the Service
//! Authorization Reference lists them).
//!
//! Operations served: CreateLogGroup, DeleteLogGroup, DescribeLogGroups, PutRetentionPolicy,
//! DeleteRetentionPolicy, CreateLogStream, DeleteLogStream, DescribeLogStreams, PutLogEvents,
//! GetLogEvents, FilterLogEvents (filter patterns: [`filter`]). Anything else is an
//! `UnknownOperationException`.
//!
//! # Layout
//! - this file: operations, errors, validation, paging and the batch rules of PutLogEvents
//!   (pure, tested below);
//! - [`store`]: the SQLite tables and the operations on them;
//! - [`filter`]: filter patterns;
//! - [`http`]: the layer on the HTTP endpoint.

pub mod filter;
pub mod http;
pub mod store;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use store::Logs;

/// What every `X-Amz-Target` of this API starts with.
pub const TARGET_PREFIX: &str = "Logs_20140328.";

/// The content type of requests and answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Largest PutLogEvents batch: message bytes (UTF-8) plus [`EVENT_OVERHEAD_BYTES`] per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;

/// What AWS adds to each event's message bytes when it measures a batch.
pub const EVENT_OVERHEAD_BYTES: usize = 26;

/// Most events in one PutLogEvents batch.
pub const MAX_BATCH_EVENTS: usize = 10_000;

/// Largest request body read: a full batch, JSON-escaped (a message of quotes doubles).
pub const MAX_REQUEST_BYTES: usize = 4 * MAX_BATCH_BYTES;

/// Events older than this (before now) are rejected as too old.
pub const MAX_AGE_MILLIS: i64 = 14 * DAY_MILLIS;

/// Events further ahead than this (after now) are rejected as too new.
pub const MAX_AHEAD_MILLIS: i64 = 2 * 60 * 60 * 1000;

/// The accepted events of one batch may span at most this long.
pub const MAX_BATCH_SPAN_MILLIS: i64 = DAY_MILLIS;

/// Most events GetLogEvents and FilterLogEvents return in one answer (and the size they fit in).
pub const MAX_EVENTS_PER_PAGE: usize = 10_000;

/// Most bytes of events (counted as PutLogEvents counts them) in one answer.
pub const MAX_PAGE_BYTES: usize = 1_048_576;

/// Most log groups or streams one Describe answer lists (and the default).
pub const MAX_DESCRIBE_LIMIT: usize = 50;

/// The retention periods PutRetentionPolicy accepts, in days.
pub const RETENTION_DAYS: [i64; 22] =
    [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

const DAY_MILLIS: i64 = 24 * 60 * 60 * 1000;

/// The operations served, by their `X-Amz-Target` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CreateLogGroup.
    CreateLogGroup,
    /// DeleteLogGroup.
    DeleteLogGroup,
    /// DescribeLogGroups.
    DescribeLogGroups,
    /// PutRetentionPolicy.
    PutRetentionPolicy,
    /// DeleteRetentionPolicy.
    DeleteRetentionPolicy,
    /// CreateLogStream.
    CreateLogStream,
    /// DeleteLogStream.
    DeleteLogStream,
    /// DescribeLogStreams.
    DescribeLogStreams,
    /// PutLogEvents.
    PutLogEvents,
    /// GetLogEvents.
    GetLogEvents,
    /// FilterLogEvents.
    FilterLogEvents,
}

impl Operation {
    const ALL: [Operation; 11] = [
        Operation::CreateLogGroup,
        Operation::DeleteLogGroup,
        Operation::DescribeLogGroups,
        Operation::PutRetentionPolicy,
        Operation::DeleteRetentionPolicy,
        Operation::CreateLogStream,
        Operation::DeleteLogStream,
        Operation::DescribeLogStreams,
        Operation::PutLogEvents,
        Operation::GetLogEvents,
        Operation::FilterLogEvents,
    ];

    /// The operation's name, as in `X-Amz-Target` and the IAM action.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateLogGroup => "CreateLogGroup",
            Operation::DeleteLogGroup => "DeleteLogGroup",
            Operation::DescribeLogGroups => "DescribeLogGroups",
            Operation::PutRetentionPolicy => "PutRetentionPolicy",
            Operation::DeleteRetentionPolicy => "DeleteRetentionPolicy",
            Operation::CreateLogStream => "CreateLogStream",
            Operation::DeleteLogStream => "DeleteLogStream",
            Operation::DescribeLogStreams => "DescribeLogStreams",
            Operation::PutLogEvents => "PutLogEvents",
            Operation::GetLogEvents => "GetLogEvents",
            Operation::FilterLogEvents => "FilterLogEvents",
        }
    }

    /// The operation an `X-Amz-Target` names (`Logs_20140328.PutLogEvents`).
    pub fn from_target(target: &str) -> Option<Self> {
        let name = target.strip_prefix(TARGET_PREFIX)?;
        Self::ALL.into_iter().find(|op| op.name() == name)
    }

    /// Whether the operation acts on one log stream (its IAM resource is the stream's ARN).
    fn on_stream(self) -> bool {
        matches!(self, Operation::DeleteLogStream | Operation::PutLogEvents | Operation::GetLogEvents)
    }
}

/// A CloudWatch Logs error, ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct LogsError {
    /// HTTP status: 400, or 500 for the service's own failures.
    pub status: u16,
    /// The shape name (`ResourceNotFoundException`), sent as `__type`.
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

impl LogsError {
    /// An error of shape `kind` with HTTP 400.
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        LogsError { status: 400, kind, message: message.into() }
    }

    /// `InvalidParameterException`: the request breaks a rule of the operation (fix the input).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", message)
    }

    /// `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", message)
    }

    /// `ResourceAlreadyExistsException`.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new("ResourceAlreadyExistsException", message)
    }

    /// `SerializationException`: the body is not the operation's JSON.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new("SerializationException", message)
    }

    /// `AccessDeniedException`: the caller's policies do not allow the operation.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new("AccessDeniedException", message)
    }

    /// `ServiceUnavailableException` with HTTP 500: the local cloud failed (retry, then report).
    pub fn internal(message: impl Into<String>) -> Self {
        LogsError { status: 500, kind: "ServiceUnavailableException", message: message.into() }
    }

    /// The JSON body: `{"__type": kind, "message": message}`.
    pub fn body(&self) -> String {
        serde_json::json!({"__type": self.kind, "message": self.message}).to_string()
    }

    fn group_not_found() -> Self {
        Self::not_found("The specified log group does not exist.")
    }

    fn stream_not_found() -> Self {
        Self::not_found("The specified log stream does not exist.")
    }
}

/// Reads an operation's request from its JSON body.
pub fn parse<R: DeserializeOwned>(body: &Value) -> Result<R, LogsError> {
    R::deserialize(body).map_err(|e| LogsError::serialization(e.to_string()))
}

/// Checks a log group name: 1–512 of `.-_/#`, letters and digits.
pub fn check_group_name(member: &str, name: &str) -> Result<(), LogsError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#');
    check_name(member, name, allowed, r"[\.\-_/#A-Za-z0-9]+")
}

/// Checks a log stream name: 1–512 characters, none of them `:` or `*`.
pub fn check_stream_name(member: &str, name: &str) -> Result<(), LogsError> {
    check_name(member, name, |c| c != ':' && c != '*', "[^:*]*")
}

fn check_name(member: &str, name: &str, allowed: impl Fn(char) -> bool, pattern: &str) -> Result<(), LogsError> {
    let length = name.chars().count();
    if !(1..=512).contains(&length) {
        return Err(LogsError::invalid(format!(
            "1 validation error detected: Value '{name}' at '{member}' failed to satisfy constraint: \
             Member must have length between 1 and 512"
        )));
    }
    if !name.chars().all(allowed) {
        return Err(LogsError::invalid(format!(
            "1 validation error detected: Value '{name}' at '{member}' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: {pattern}"
        )));
    }
    Ok(())
}

/// The log group a request names, by `logGroupName` or `logGroupIdentifier` (a name or the
/// group's ARN, with or without the trailing `:*`), exactly one of them.
pub fn group_of(name: Option<&str>, identifier: Option<&str>) -> Result<String, LogsError> {
    match (name, identifier) {
        (Some(name), None) => {
            check_group_name("logGroupName", name)?;
            Ok(name.to_owned())
        }
        (None, Some(identifier)) => {
            let name = match identifier.strip_prefix("arn:") {
                Some(rest) => {
                    let rest = rest.strip_suffix(":*").unwrap_or(rest);
                    rest.split_once(":log-group:").map(|(_, name)| name).ok_or_else(|| {
                        LogsError::invalid(format!("logGroupIdentifier {identifier:?} is not a log group ARN"))
                    })?
                }
                None => identifier,
            };
            check_group_name("logGroupIdentifier", name)?;
            Ok(name.to_owned())
        }
        (Some(_), Some(_)) => {
            Err(LogsError::invalid("LogGroup name and LogGroup ARN are mutually exclusive parameters."))
        }
        (None, None) => Err(LogsError::invalid("Either logGroupName or logGroupIdentifier must be specified.")),
    }
}

/// The IAM action and resource of a request: `logs:{Operation}` on the log group's ARN, the log
/// stream's for the operations on one stream, `log-group:*` for DescribeLogGroups.
pub fn action_and_resource(op: Operation, request: &Value, region: &str, account: &str) -> (String, String) {
    let action = format!("logs:{}", op.name());
    let base = format!("arn:aws:logs:{region}:{account}:log-group:");
    if op == Operation::DescribeLogGroups {
        return (action, format!("{base}*"));
    }
    let text = |member: &str| request.get(member).and_then(Value::as_str);
    let group = group_of(text("logGroupName"), text("logGroupIdentifier")).unwrap_or_default();
    let resource = if op.on_stream() {
        format!("{base}{group}:log-stream:{}", text("logStreamName").unwrap_or_default())
    } else {
        format!("{base}{group}")
    };
    (action, resource)
}

/// A describe page size: 1–50, 50 when absent.
pub fn describe_limit(limit: Option<i64>) -> Result<usize, LogsError> {
    bounded_limit(limit, MAX_DESCRIBE_LIMIT)
}

/// An event page size: 1–10,000, 10,000 when absent.
pub fn events_limit(limit: Option<i64>) -> Result<usize, LogsError> {
    bounded_limit(limit, MAX_EVENTS_PER_PAGE)
}

fn bounded_limit(limit: Option<i64>, max: usize) -> Result<usize, LogsError> {
    match limit {
        None => Ok(max),
        Some(n) if n >= 1 && n as u64 <= max as u64 => Ok(n as usize),
        Some(n) => Err(LogsError::invalid(format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: \
             Member must have value between 1 and {max}"
        ))),
    }
}

/// One page of `items` from the offset `token` names (as [`page`] issued it); the next token
/// when more remain.
pub fn page<T>(items: Vec<T>, token: Option<&str>, limit: usize) -> Result<(Vec<T>, Option<String>), LogsError> {
    let start = match token {
        None => 0,
        Some(t) => t
            .strip_prefix("o/")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| LogsError::invalid("The specified nextToken is invalid."))?,
    };
    let end = start.saturating_add(limit).min(items.len());
    let next = (end < items.len()).then(|| format!("o/{end}"));
    Ok((items.into_iter().skip(start).take(end - start).collect(), next))
}

/// What PutLogEvents keeps of a batch: the events in `accepted` (indexes into the batch), and
/// the rejected ranges as `rejectedLogEventsInfo` reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The indexes of the events kept.
    pub accepted: std::ops::Range<usize>,
    /// Events before this index are more than 14 days old (exclusive end).
    pub too_old_end: Option<usize>,
    /// Events before this index precede the group's retention period (exclusive end).
    pub expired_end: Option<usize>,
    /// Events from this index on are more than 2 hours ahead (inclusive start).
    pub too_new_start: Option<usize>,
}

/// Sorts a PutLogEvents batch by AWS's rules, given each event's timestamp and message size in
/// bytes: too many events, too many bytes, events out of order, or accepted events spanning
/// more than 24 hours fail the call; events too old, expired or too new are rejected while the
/// rest are kept.
pub fn sort_batch(events: &[(i64, usize)], now: i64, retention_days: Option<i64>) -> Result<Batch, LogsError> {
    if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
        return Err(LogsError::invalid(format!(
            "1 validation error detected: Value at 'logEvents' failed to satisfy constraint: \
             Member must have length between 1 and {MAX_BATCH_EVENTS}"
        )));
    }
    let bytes: usize = events.iter().map(|(_, size)| size + EVENT_OVERHEAD_BYTES).sum();
    if bytes > MAX_BATCH_BYTES {
        return Err(LogsError::invalid(format!("Upload too large: {bytes} bytes exceeds limit of {MAX_BATCH_BYTES}")));
    }
    if let Some((i, _)) = events.iter().enumerate().find(|(_, (_, size))| *size == 0) {
        return Err(LogsError::invalid(format!(
            "1 validation error detected: Value at 'logEvents.{}.member.message' failed to satisfy constraint: \
             Member must have length greater than or equal to 1",
            i + 1
        )));
    }
    if events.windows(2).any(|w| w[1].0 < w[0].0) {
        return Err(LogsError::invalid("Log events in a single PutLogEvents request must be in chronological order."));
    }
    let count_before = |limit: i64| events.iter().take_while(|(ts, _)| *ts < limit).count();
    let too_old = count_before(now - MAX_AGE_MILLIS);
    let expired = retention_days.map_or(0, |days| count_before(now - days * DAY_MILLIS));
    let too_new_start = events.iter().position(|(ts, _)| *ts > now + MAX_AHEAD_MILLIS);
    let start = too_old.max(expired);
    let end = too_new_start.unwrap_or(events.len()).max(start);
    if end > start && events[end - 1].0 - events[start].0 > MAX_BATCH_SPAN_MILLIS {
        return Err(LogsError::invalid(
            "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
        ));
    }
    Ok(Batch {
        accepted: start..end,
        too_old_end: (too_old > 0).then_some(too_old),
        expired_end: (expired > 0).then_some(expired),
        too_new_start,
    })
}

/// A place in a log stream's events, between two events: timestamp, then arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The event's timestamp.
    pub timestamp: i64,
    /// The event's arrival number (unique).
    pub id: i64,
}

impl Position {
    /// Before every event.
    pub const HEAD: Position = Position { timestamp: i64::MIN, id: i64::MIN };
    /// After every event.
    pub const TAIL: Position = Position { timestamp: i64::MAX, id: i64::MAX };

    fn encode(self) -> String {
        format!("{}/{}", self.timestamp, self.id)
    }

    fn decode(text: &str) -> Option<Position> {
        let (timestamp, id) = text.split_once('/')?;
        Some(Position { timestamp: timestamp.parse().ok()?, id: id.parse().ok()? })
    }
}

/// Which way GetLogEvents reads from a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Events after the position, oldest first.
    Forward,
    /// Events before the position, newest first (answered oldest first).
    Backward,
}

/// A GetLogEvents token: `f/{position}` reads forward, `b/{position}` backward.
pub fn stream_token(direction: Direction, at: Position) -> String {
    let d = if direction == Direction::Forward { "f" } else { "b" };
    format!("{d}/{}", at.encode())
}

/// Reads a GetLogEvents token.
pub fn parse_stream_token(token: &str) -> Result<(Direction, Position), LogsError> {
    let invalid = || LogsError::invalid("The specified nextToken is invalid.");
    let (direction, rest) = match token.split_once('/') {
        Some(("f", rest)) => (Direction::Forward, rest),
        Some(("b", rest)) => (Direction::Backward, rest),
        _ => return Err(invalid()),
    };
    Ok((direction, Position::decode(rest).ok_or_else(invalid)?))
}

/// A FilterLogEvents token: the direction of the reading (oldest first: `e/`, newest first:
/// `l/`) and the position of the last event returned.
pub fn filter_token(direction: Direction, at: Position) -> String {
    let d = if direction == Direction::Forward { "e" } else { "l" };
    format!("{d}/{}", at.encode())
}

/// Reads a FilterLogEvents token.
pub fn parse_filter_token(token: &str) -> Result<(Direction, Position), LogsError> {
    let (direction, rest) = match token.split_once('/') {
        Some(("e", rest)) => (Direction::Forward, rest),
        Some(("l", rest)) => (Direction::Backward, rest),
        _ => return Err(LogsError::invalid("The specified nextToken is invalid.")),
    };
    let at = Position::decode(rest).ok_or_else(|| LogsError::invalid("The specified nextToken is invalid."))?;
    Ok((direction, at))
}

/// Reading newest first (`startFromHead: false`) needs a `startTime` on or after this (1 January
/// 2024, UTC), as on AWS.
pub const NEWEST_FIRST_SINCE_MILLIS: i64 = 1_704_067_200_000;

/// The tokens GetLogEvents answers with, given where it read from and the positions of the
/// events it returns (oldest first): forward after the last, backward before the first; at the
/// end of the stream, the token passed in again.
pub fn answer_tokens(from: (Direction, Position), returned: &[Position]) -> (String, String) {
    match (returned.first(), returned.last()) {
        (Some(first), Some(last)) => {
            (stream_token(Direction::Forward, *last), stream_token(Direction::Backward, *first))
        }
        _ => {
            // Nothing there: read again from the same place (a tail read with nothing in range
            // waits at the head, so events that arrive later are found forward).
            let at = if from.1 == Position::TAIL { Position::HEAD } else { from.1 };
            (stream_token(Direction::Forward, at), stream_token(Direction::Backward, at))
        }
    }
}

/// CreateLogGroup's request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateLogGroup {
    /// The group's name.
    pub log_group_name: String,
    /// The group's class (`STANDARD` when absent).
    pub log_group_class: Option<String>,
}

/// A request that names one log group (DeleteLogGroup, DeleteRetentionPolicy).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRequest {
    /// The group's name.
    pub log_group_name: String,
}

/// PutRetentionPolicy's request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutRetentionPolicy {
    /// The group's name.
    pub log_group_name: String,
    /// Days to keep events, one of [`RETENTION_DAYS`].
    pub retention_in_days: i64,
}

/// DescribeLogGroups' request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeLogGroups {
    /// Only groups whose name starts with this.
    pub log_group_name_prefix: Option<String>,
    /// Only groups whose name contains this.
    pub log_group_name_pattern: Option<String>,
    /// Where the previous page ended.
    pub next_token: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
    /// Only groups of this class.
    pub log_group_class: Option<String>,
    /// Only these groups (names or ARNs).
    pub log_group_identifiers: Option<Vec<String>>,
}

/// A request that names one log stream (CreateLogStream, DeleteLogStream).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRequest {
    /// The group's name.
    pub log_group_name: String,
    /// The stream's name.
    pub log_stream_name: String,
}

/// DescribeLogStreams' request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeLogStreams {
    /// The group's name.
    pub log_group_name: Option<String>,
    /// The group's name or ARN.
    pub log_group_identifier: Option<String>,
    /// Only streams whose name starts with this.
    pub log_stream_name_prefix: Option<String>,
    /// `LogStreamName` (default) or `LastEventTime`.
    pub order_by: Option<String>,
    /// Reverse the order.
    pub descending: Option<bool>,
    /// Where the previous page ended.
    pub next_token: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
}

/// One event of a PutLogEvents batch.
#[derive(Debug, Deserialize)]
pub struct InputLogEvent {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The message.
    pub message: String,
}

/// PutLogEvents' request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutLogEvents {
    /// The group's name.
    pub log_group_name: String,
    /// The stream's name.
    pub log_stream_name: String,
    /// The batch, oldest first.
    pub log_events: Vec<InputLogEvent>,
    /// Accepted and ignored, as AWS does.
    pub sequence_token: Option<String>,
}

/// GetLogEvents' request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetLogEvents {
    /// The group's name.
    pub log_group_name: Option<String>,
    /// The group's name or ARN.
    pub log_group_identifier: Option<String>,
    /// The stream's name.
    pub log_stream_name: String,
    /// Events at or after this time.
    pub start_time: Option<i64>,
    /// Events before this time.
    pub end_time: Option<i64>,
    /// A token from a previous answer.
    pub next_token: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
    /// Oldest events first (default: the newest).
    pub start_from_head: Option<bool>,
}

/// FilterLogEvents' request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FilterLogEvents {
    /// The group's name.
    pub log_group_name: Option<String>,
    /// The group's name or ARN.
    pub log_group_identifier: Option<String>,
    /// Only these streams.
    pub log_stream_names: Option<Vec<String>>,
    /// Only streams whose name starts with this.
    pub log_stream_name_prefix: Option<String>,
    /// Events at or after this time.
    pub start_time: Option<i64>,
    /// Events at or before this time.
    pub end_time: Option<i64>,
    /// The filter pattern ([`filter::Pattern`]).
    pub filter_pattern: Option<String>,
    /// Where the previous page ended.
    pub next_token: Option<String>,
    /// Page size.
    pub limit: Option<i64>,
    /// Oldest events first (the default) or newest first.
    pub start_from_head: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn targets_name_only_the_served_operations() {
        assert_eq!(Operation::from_target("Logs_20140328.PutLogEvents"), Some(Operation::PutLogEvents));
        assert_eq!(Operation::from_target("Logs_20140328.StartQuery"), None);
        assert_eq!(Operation::from_target("PutLogEvents"), None);
        for op in Operation::ALL {
            assert_eq!(Operation::from_target(&format!("{TARGET_PREFIX}{}", op.name())), Some(op));
        }
    }

    #[test]
    fn names_follow_the_models_patterns_and_lengths() {
        assert!(check_group_name("logGroupName", "/aws/greengrass/UserComponent/us-east-1/x.y#1_2-3").is_ok());
        for bad in ["", "a:b", "a b", "a*", &"g".repeat(513)] {
            let e = check_group_name("logGroupName", bad).unwrap_err();
            assert_eq!(e.kind, "InvalidParameterException", "{bad}");
        }
        assert!(check_stream_name("logStreamName", "2026/12/07/thing/core-1 é").is_ok());
        for bad in ["", "a:b", "a*", &"s".repeat(513)] {
            assert!(check_stream_name("logStreamName", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_group_is_named_by_name_or_arn_but_not_both() {
        assert_eq!(group_of(Some("/g"), None).unwrap(), "/g");
        assert_eq!(group_of(None, Some("/g")).unwrap(), "/g");
        assert_eq!(group_of(None, Some("arn:aws:logs:us-east-1:000000000000:log-group:/g:*")).unwrap(), "/g");
        assert_eq!(group_of(None, Some("arn:aws:logs:us-east-1:000000000000:log-group:/g")).unwrap(), "/g");
        assert!(group_of(Some("/g"), Some("/g")).is_err());
        assert!(group_of(None, None).is_err());
        assert!(group_of(None, Some("arn:aws:s3:::bucket")).is_err());
    }

    #[test]
    fn requests_name_the_group_or_stream_they_touch() {
        let put = json!({"logGroupName": "/g", "logStreamName": "s1"});
        assert_eq!(
            action_and_resource(Operation::PutLogEvents, &put, "us-east-1", "000000000000"),
            ("logs:PutLogEvents".into(), "arn:aws:logs:us-east-1:000000000000:log-group:/g:log-stream:s1".into())
        );
        assert_eq!(
            action_and_resource(Operation::CreateLogStream, &put, "us-east-1", "000000000000").1,
            "arn:aws:logs:us-east-1:000000000000:log-group:/g"
        );
        let filter = json!({"logGroupIdentifier": "arn:aws:logs:us-east-1:000000000000:log-group:/g:*"});
        assert_eq!(
            action_and_resource(Operation::FilterLogEvents, &filter, "us-east-1", "000000000000").1,
            "arn:aws:logs:us-east-1:000000000000:log-group:/g"
        );
        assert_eq!(
            action_and_resource(Operation::DescribeLogGroups, &json!({}), "us-east-1", "000000000000").1,
            "arn:aws:logs:us-east-1:000000000000:log-group:*"
        );
    }

    #[test]
    fn limits_are_bounded_and_default_to_the_maximum() {
        assert_eq!(describe_limit(None).unwrap(), 50);
        assert_eq!(describe_limit(Some(1)).unwrap(), 1);
        assert!(describe_limit(Some(0)).is_err());
        assert!(describe_limit(Some(51)).is_err());
        assert_eq!(events_limit(None).unwrap(), 10_000);
        assert!(events_limit(Some(10_001)).is_err());
    }

    #[test]
    fn pages_walk_every_item_once_and_refuse_foreign_tokens() {
        let items: Vec<u32> = (0..5).collect();
        let (first, token) = page(items.clone(), None, 2).unwrap();
        assert_eq!((first, token.as_deref()), (vec![0, 1], Some("o/2")));
        let (second, token) = page(items.clone(), token.as_deref(), 2).unwrap();
        assert_eq!((second, token.as_deref()), (vec![2, 3], Some("o/4")));
        let (last, token) = page(items.clone(), token.as_deref(), 2).unwrap();
        assert_eq!((last, token), (vec![4], None));
        let (all, token) = page(items.clone(), None, 5).unwrap();
        assert_eq!((all.len(), token), (5, None));
        for bad in ["2", "o/x", "o/6"] {
            assert_eq!(page(items.clone(), Some(bad), 2).unwrap_err().kind, "InvalidParameterException");
        }
    }

    fn batch(timestamps: &[i64]) -> Vec<(i64, usize)> {
        timestamps.iter().map(|ts| (*ts, 10)).collect()
    }

    #[test]
    fn too_old_and_too_new_events_are_rejected_by_index_and_the_rest_kept() {
        let day = DAY_MILLIS;
        let events = batch(&[NOW - 15 * day, NOW - 14 * day - 1, NOW - 14 * day, NOW, NOW + 2 * 3_600_000 + 1]);
        // The accepted events would span 14 days: narrow to what is kept.
        let events = [&events[..2], &[(NOW - 1000, 10), (NOW, 10)], &events[4..]].concat();
        let b = sort_batch(&events, NOW, None).unwrap();
        assert_eq!(b.accepted, 2..4);
        assert_eq!(b.too_old_end, Some(2), "exclusive: events 0 and 1 are too old");
        assert_eq!(b.too_new_start, Some(4), "inclusive: event 4 is the first too new");
        assert_eq!(b.expired_end, None);
        let fine = sort_batch(&batch(&[NOW - 5, NOW]), NOW, None).unwrap();
        assert_eq!(fine, Batch { accepted: 0..2, ..Batch::default() });
    }

    #[test]
    fn events_before_the_retention_period_are_expired() {
        let b = sort_batch(&batch(&[NOW - 2 * DAY_MILLIS, NOW - 1000, NOW]), NOW, Some(1)).unwrap();
        assert_eq!((b.accepted, b.expired_end, b.too_old_end), (1..3, Some(1), None));
        let all = sort_batch(&batch(&[NOW + 3 * 3_600_000]), NOW, None).unwrap();
        assert_eq!((all.accepted.len(), all.too_new_start), (0, Some(0)), "all rejected is still a success");
    }

    #[test]
    fn batches_that_break_the_rules_fail_the_call() {
        let out_of_order = sort_batch(&batch(&[NOW, NOW - 1]), NOW, None).unwrap_err();
        assert!(out_of_order.message.contains("chronological"), "{out_of_order}");
        let long = sort_batch(&batch(&[NOW - DAY_MILLIS - 1, NOW]), NOW, None).unwrap_err();
        assert!(long.message.contains("24 hours"), "{long}");
        assert!(sort_batch(&[], NOW, None).is_err());
        assert!(sort_batch(&vec![(NOW, 1); MAX_BATCH_EVENTS + 1], NOW, None).is_err());
        assert!(sort_batch(&vec![(NOW, 1); MAX_BATCH_EVENTS], NOW, None).is_ok());
        assert!(sort_batch(&[(NOW, 0)], NOW, None).is_err(), "an empty message");
    }

    #[test]
    fn batch_size_counts_message_bytes_plus_26_per_event() {
        let exact = MAX_BATCH_BYTES - 2 * EVENT_OVERHEAD_BYTES;
        assert!(sort_batch(&[(NOW, exact - 1), (NOW, 1)], NOW, None).is_ok());
        let over = sort_batch(&[(NOW, exact), (NOW, 1)], NOW, None).unwrap_err();
        assert!(over.message.contains("1048577"), "{over}");
    }

    #[test]
    fn stream_tokens_round_trip_and_repeat_at_the_end() {
        let at = Position { timestamp: NOW, id: 7 };
        for d in [Direction::Forward, Direction::Backward] {
            assert_eq!(parse_stream_token(&stream_token(d, at)).unwrap(), (d, at));
        }
        for d in [Direction::Forward, Direction::Backward] {
            assert_eq!(parse_filter_token(&filter_token(d, at)).unwrap(), (d, at));
        }
        for bad in ["x/1/2", "f/1", "f/a/b", "e/1/2"] {
            assert!(parse_stream_token(bad).is_err(), "{bad}");
        }
        assert!(parse_filter_token("f/1/2").is_err());
        let first = Position { timestamp: 1, id: 1 };
        let (f, b) = answer_tokens((Direction::Forward, Position::HEAD), &[first, at]);
        assert_eq!((f, b), (stream_token(Direction::Forward, at), stream_token(Direction::Backward, first)));
        let (f, _) = answer_tokens((Direction::Forward, at), &[]);
        assert_eq!(f, stream_token(Direction::Forward, at), "the end of the stream gives the same token back");
        let (f, _) = answer_tokens((Direction::Backward, Position::TAIL), &[]);
        assert_eq!(parse_stream_token(&f).unwrap().1, Position::HEAD);
    }
}
