//! AWS IoT SQL, version 2016-03-23: the statements of IoT rules ("AWS IoT SQL reference" in
//! the AWS IoT Core Developer Guide: SELECT, FROM and WHERE clauses, data types, operators,
//! functions, literals, case statements, JSON extensions, nested object queries, binary
//! payloads) and the substitution templates of rule actions ("Substitution templates").
//!
//! Pure: [`parse`] turns the text of a rule into a [`Statement`] (or a [`SqlError`] with a
//! position, what CreateTopicRule reports as `SqlParseException`); [`evaluate`] runs it on one
//! [`Message`] and returns what the rule's actions receive, or `None` when the WHERE clause is
//! not true. Routing (which rules see which topic, Basic Ingest) and the actions themselves
//! belong to the caller; [`Statement::matches_topic`] tells whether the FROM filter matches.
//!
//! # Layout
//! - [`value`]: the SQL values and the standard conversions.
//! - `lexer`, [`parser`]: tokens, and the statement and expression trees.
//! - `eval`: evaluation against a message.
//! - [`functions`]: the built-in functions and `cast`.
//! - [`template`]: `${expression}` substitution in action parameters.
//!
//! The crate README lists what is supported and the semantics chosen where AWS's pages are
//! silent.

mod eval;
pub mod functions;
mod lexer;
pub mod parser;
pub mod template;
mod time_format;
pub mod value;

#[cfg(test)]
mod tests;

pub use eval::MAX_EVAL_STEPS;
pub use parser::{Expr, Item, Projection, Statement, parse, parse_expression};
pub use template::{Template, TemplateError, substitute};
pub use value::Value;

/// The SQL version this module implements (`awsIotSqlVersion`, and what `sql_version()` returns).
pub const SQL_VERSION: &str = "2016-03-23";

/// A statement AWS would refuse (CreateTopicRule's `SqlParseException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQL parse error at position {position}: {message}")]
pub struct SqlError {
    /// 1-based position, in characters, where the problem was found.
    pub position: usize,
    /// What is wrong, and where possible how to write it instead.
    pub message: String,
}

impl SqlError {
    pub(crate) fn new(position: usize, message: impl Into<String>) -> Self {
        SqlError { position, message: message.into() }
    }
}

/// Why a statement could not be evaluated on a message (the rule fails, its error action runs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The statement reads a key (or `*` as a value) of a payload that is not JSON.
    #[error(
        "the payload is not JSON, so `{reference}` cannot be read: a binary payload can only be selected as `SELECT *` or through functions such as encode(*, 'base64')"
    )]
    PayloadNotJson {
        /// The key, or `*`, the statement reads.
        reference: String,
    },
    /// The statement needs more than [`MAX_EVAL_STEPS`] steps on this message (nested queries
    /// over large arrays multiply).
    #[error("the statement needs more than {MAX_EVAL_STEPS} evaluation steps on this message")]
    TooComplex,
    /// `SELECT *, …` on a payload that is not a JSON object.
    #[error("`*` with other items needs a JSON object payload; select `*` alone or name the keys")]
    StarWithOtherItems,
}

/// One message as a rule sees it: everything the SQL functions can read. Nothing here reads a
/// clock or a random source: the caller passes the time and a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The topic it was published to (with its Basic Ingest prefix, if any).
    pub topic: &'a str,
    /// The payload, JSON or not.
    pub payload: &'a [u8],
    /// The MQTT client id (`clientid()` says `n/a` without one).
    pub client_id: Option<&'a str>,
    /// The publisher's principal (`principal()`): a certificate id, or an IAM identity.
    pub principal: Option<&'a str>,
    /// When the rules engine received it, in milliseconds since the epoch (`timestamp()`).
    pub timestamp_ms: i64,
    /// The account that owns the rule (`accountid()`).
    pub account_id: Option<&'a str>,
    /// The MQTT message's trace id (`traceid()`).
    pub trace_id: Option<&'a str>,
    /// Seed of `newuuid()` and `rand()` for this message.
    pub random_seed: u64,
}

impl<'a> Message<'a> {
    /// A message on `topic` with `payload`, at time 0, with nothing else known.
    pub fn new(topic: &'a str, payload: &'a [u8]) -> Self {
        Message {
            topic,
            payload,
            client_id: None,
            principal: None,
            timestamp_ms: 0,
            account_id: None,
            trace_id: None,
            random_seed: 0,
        }
    }
}

/// What a matching rule hands its actions.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A JSON document (an object for a SELECT list, any value for `SELECT VALUE`).
    Json(serde_json::Value),
    /// Raw bytes: a non-JSON payload selected with `SELECT *`, or the empty string of a
    /// `SELECT VALUE` that is Undefined.
    Bytes(Vec<u8>),
}

impl Output {
    /// The outgoing payload's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Output::Json(json) => json.to_string().into_bytes(),
            Output::Bytes(bytes) => bytes.clone(),
        }
    }

    /// The JSON document, if this is one.
    pub fn as_json(&self) -> Option<&serde_json::Value> {
        match self {
            Output::Json(json) => Some(json),
            Output::Bytes(_) => None,
        }
    }
}

/// Runs `statement` on `message`: `Ok(None)` when its WHERE clause is not true (false, not a
/// Boolean, or Undefined). The FROM filter is not checked here: see [`Statement::matches_topic`].
pub fn evaluate(statement: &Statement, message: &Message) -> Result<Option<Output>, EvalError> {
    eval::statement(statement, message)
}

impl Statement {
    /// Whether a message published (through the broker) on `topic` reaches this rule: the FROM
    /// filter matches it. A rule without FROM is reached only through Basic Ingest, which the
    /// caller routes by rule name.
    pub fn matches_topic(&self, topic: &str) -> bool {
        self.from.as_deref().is_some_and(|filter| crate::topic::matches(filter, topic))
    }
}
