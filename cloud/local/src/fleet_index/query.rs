//! The fleet-indexing query language, pure: parsing a query string into a [`Query`] and matching
//! it against a thing's document.
//!
//! Follows the AWS IoT Core Developer Guide, "Fleet indexing" → "Query syntax" and "Example
//! thing queries", for the subset an operator uses:
//! - `field:value`, with `*` (any run of characters) and `?` (one character) in the value, and
//!   `field:*` for "the field is present"; a quoted value (`"a b"`) is literal; `\` escapes the
//!   next character;
//! - `AND`, `OR`, `NOT` and parentheses; terms side by side are joined with `AND`; `NOT` binds
//!   tighter than `AND`, which binds tighter than `OR`;
//! - ranges `field:[a TO b]` (inclusive) and `field:{a TO b}` (exclusive), either end `*`;
//! - comparisons `field>x`, `field>=x`, `field<x`, `field<=x`;
//! - a query of `*` alone matches every thing.
//!
//! Numeric fields compare as numbers, text fields by their characters. A query this module cannot
//! parse, or one on a field the index does not hold, is an error naming what is wrong: it is never
//! guessed at. Not served: free-text terms without a field, fuzzy (`~`) and boost (`^`) operators,
//! and shadow, Device Defender and custom fields.

use std::cmp::Ordering;

/// A field of a thing's document the index holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `thingName`.
    ThingName,
    /// `thingId`.
    ThingId,
    /// `thingTypeName`.
    ThingTypeName,
    /// `thingGroupNames` (many values: the groups the thing is directly in).
    ThingGroupNames,
    /// `attributes.{name}`.
    Attribute(String),
    /// `registry.version`: the thing's version in the registry.
    RegistryVersion,
    /// `connectivity.connected`.
    Connected,
    /// `connectivity.timestamp`: epoch milliseconds of the last connect or disconnect.
    ConnectivityTimestamp,
    /// `connectivity.disconnectReason`.
    DisconnectReason,
}

/// What kind of values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Text, compared character by character.
    Text,
    /// A number.
    Number,
    /// `true` or `false`.
    Bool,
}

impl Field {
    /// The field a query names, if the index holds it.
    pub fn parse(name: &str) -> Result<Field, QueryError> {
        Ok(match name {
            "thingName" => Field::ThingName,
            "thingId" => Field::ThingId,
            "thingTypeName" => Field::ThingTypeName,
            "thingGroupNames" => Field::ThingGroupNames,
            "registry.version" => Field::RegistryVersion,
            "connectivity.connected" => Field::Connected,
            "connectivity.timestamp" => Field::ConnectivityTimestamp,
            "connectivity.disconnectReason" => Field::DisconnectReason,
            _ => match name.strip_prefix("attributes.") {
                Some(attr) if !attr.is_empty() => Field::Attribute(attr.to_owned()),
                _ => return Err(QueryError(format!("the field {name:?} is not indexed"))),
            },
        })
    }

    /// The kind of its values.
    pub fn kind(&self) -> Kind {
        match self {
            Field::RegistryVersion | Field::ConnectivityTimestamp => Kind::Number,
            Field::Connected => Kind::Bool,
            _ => Kind::Text,
        }
    }

    /// Whether the field belongs to connectivity indexing.
    pub fn is_connectivity(&self) -> bool {
        matches!(self, Field::Connected | Field::ConnectivityTimestamp | Field::DisconnectReason)
    }
}

/// A value of a document's field.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// What a query reads from a thing's document.
pub trait Document {
    /// The values of `field` (none when the thing does not have it).
    fn values(&self, field: &Field) -> Vec<Scalar>;
}

/// A query that does not parse, or names a field the index does not hold
/// (`InvalidQueryException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// One piece of a value pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// This character.
    Char(char),
    /// `*`: any run of characters.
    Any,
    /// `?`: one character.
    One,
}

/// One end of a range.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// No limit (`*`).
    Open,
    /// Up to and including this value.
    Inclusive(Value),
    /// Up to but not including this value.
    Exclusive(Value),
}

/// A literal value, typed by its field.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Text(String),
    /// A number.
    Number(f64),
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// `*`: every thing.
    All,
    /// `field:*`: the thing has the field.
    Present(Field),
    /// `field:pattern`.
    Matches(Field, Vec<Piece>),
    /// `field:value` on a numeric or boolean field.
    Equals(Field, Scalar),
    /// A range or a comparison.
    Range(Field, Bound, Bound),
    /// Both.
    And(Box<Query>, Box<Query>),
    /// Either.
    Or(Box<Query>, Box<Query>),
    /// Not.
    Not(Box<Query>),
}

/// Parses a query string.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Err(QueryError("the query is empty".into()));
    }
    let mut p = Parser { tokens, at: 0 };
    let q = p.or()?;
    match p.tokens.get(p.at) {
        None => Ok(q),
        Some(t) => Err(QueryError(format!("unexpected {} in the query", t.describe()))),
    }
}

impl Query {
    /// Whether the document matches.
    pub fn matches(&self, doc: &dyn Document) -> bool {
        match self {
            Query::All => true,
            Query::Present(field) => !doc.values(field).is_empty(),
            Query::Matches(field, pattern) => doc.values(field).iter().any(|v| match v {
                Scalar::Text(t) => wildcard(pattern, &t.chars().collect::<Vec<_>>()),
                _ => false,
            }),
            Query::Equals(field, want) => doc.values(field).iter().any(|v| v == want),
            Query::Range(field, low, high) => doc.values(field).iter().any(|v| in_range(v, low, high)),
            Query::And(a, b) => a.matches(doc) && b.matches(doc),
            Query::Or(a, b) => a.matches(doc) || b.matches(doc),
            Query::Not(a) => !a.matches(doc),
        }
    }

    /// Every field the query reads.
    pub fn fields(&self) -> Vec<&Field> {
        match self {
            Query::All => Vec::new(),
            Query::Present(f) | Query::Matches(f, _) | Query::Equals(f, _) | Query::Range(f, _, _) => vec![f],
            Query::And(a, b) | Query::Or(a, b) => a.fields().into_iter().chain(b.fields()).collect(),
            Query::Not(a) => a.fields(),
        }
    }
}

fn compare(v: &Scalar, bound: &Value) -> Option<Ordering> {
    match (v, bound) {
        (Scalar::Text(a), Value::Text(b)) => Some(a.as_str().cmp(b.as_str())),
        (Scalar::Number(a), Value::Number(b)) => a.partial_cmp(b),
        _ => None,
    }
}

fn in_range(v: &Scalar, low: &Bound, high: &Bound) -> bool {
    let above = match low {
        Bound::Open => true,
        Bound::Inclusive(b) => compare(v, b).is_some_and(|o| o != Ordering::Less),
        Bound::Exclusive(b) => compare(v, b) == Some(Ordering::Greater),
    };
    let below = match high {
        Bound::Open => true,
        Bound::Inclusive(b) => compare(v, b).is_some_and(|o| o != Ordering::Greater),
        Bound::Exclusive(b) => compare(v, b) == Some(Ordering::Less),
    };
    above && below && !matches!(v, Scalar::Bool(_))
}

/// Whether `text` matches `pattern` (`*` any run, `?` one character).
fn wildcard(pattern: &[Piece], text: &[char]) -> bool {
    // Iterative matching with one backtrack point (the last `*`): linear in practice.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Piece::Char(c)) if *c == text[t] => (p, t) = (p + 1, t + 1),
            Some(Piece::One) => (p, t) = (p + 1, t + 1),
            Some(Piece::Any) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    star = Some((sp, st + 1));
                    (p, t) = (sp + 1, st + 1);
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|piece| *piece == Piece::Any)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    /// A term: field, operator and the raw value text (with its quoting), or `*` alone.
    Term(String),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::And => "AND".into(),
            Token::Or => "OR".into(),
            Token::Not => "NOT".into(),
            Token::Term(t) => format!("{t:?}"),
        }
    }
}

/// Splits the query into parentheses, keywords and terms. A term runs to the next whitespace or
/// parenthesis outside quotes and range brackets, so `field:[a TO b]` and `field:"a b"` are one term.
fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '(' || c == ')' {
            tokens.push(if c == '(' { Token::Open } else { Token::Close });
            i += 1;
            continue;
        }
        let start = i;
        let mut quoted = false;
        let mut bracket: Option<usize> = None;
        while i < chars.len() {
            let c = chars[i];
            if c == '\\' {
                i += 2;
                continue;
            }
            if quoted {
                quoted = c != '"';
            } else if let Some(open) = bracket {
                if c == ']' || c == '}' {
                    bracket = None;
                } else if i > open && (c == '[' || c == '{') {
                    return Err(QueryError("a range cannot contain another range".into()));
                }
            } else if c == '"' {
                quoted = true;
            } else if (c == '[' || c == '{') && i > start && chars[i - 1] == ':' {
                bracket = Some(i);
            } else if c.is_whitespace() || c == '(' || c == ')' {
                break;
            }
            i += 1;
        }
        if quoted {
            return Err(QueryError("a quoted value is not closed".into()));
        }
        if bracket.is_some() {
            return Err(QueryError("a range is not closed with ']' or '}'".into()));
        }
        let word: String = chars[start..i.min(chars.len())].iter().collect();
        tokens.push(match word.as_str() {
            "AND" => Token::And,
            "OR" => Token::Or,
            "NOT" => Token::Not,
            _ => Token::Term(word),
        });
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self) -> Result<Query, QueryError> {
        let mut q = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            q = Query::Or(Box::new(q), Box::new(self.and()?));
        }
        Ok(q)
    }

    fn and(&mut self) -> Result<Query, QueryError> {
        let mut q = self.unary()?;
        loop {
            match self.peek() {
                Some(Token::And) => self.at += 1,
                Some(Token::Open | Token::Not | Token::Term(_)) => {}
                _ => return Ok(q),
            }
            q = Query::And(Box::new(q), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Query, QueryError> {
        match self.tokens.get(self.at).cloned() {
            Some(Token::Not) => {
                self.at += 1;
                Ok(Query::Not(Box::new(self.unary()?)))
            }
            Some(Token::Open) => {
                self.at += 1;
                let q = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(QueryError("a '(' is not closed with ')'".into()));
                }
                self.at += 1;
                Ok(q)
            }
            Some(Token::Term(t)) => {
                self.at += 1;
                term(&t)
            }
            Some(other) => Err(QueryError(format!("expected a term, found {}", other.describe()))),
            None => Err(QueryError("the query ends where a term was expected".into())),
        }
    }
}

/// One term: `*`, `field:value`, `field:[a TO b]` or `field>x` (and `>=`, `<`, `<=`).
fn term(t: &str) -> Result<Query, QueryError> {
    if t == "*" {
        return Ok(Query::All);
    }
    let Some(split) = t.find([':', '<', '>']) else {
        return Err(QueryError(format!("{t:?} names no field: write field:value")));
    };
    let field = Field::parse(&t[..split])?;
    let rest = &t[split..];
    let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
        (">=", v)
    } else if let Some(v) = rest.strip_prefix("<=") {
        ("<=", v)
    } else {
        rest.split_at(1)
    };
    if value.is_empty() {
        return Err(QueryError(format!("{t:?} has no value after {op:?}")));
    }
    if op != ":" {
        let v = literal(&field, value, t)?;
        let (low, high) = match op {
            ">" => (Bound::Exclusive(v), Bound::Open),
            ">=" => (Bound::Inclusive(v), Bound::Open),
            "<" => (Bound::Open, Bound::Exclusive(v)),
            _ => (Bound::Open, Bound::Inclusive(v)),
        };
        return ranged(field, low, high);
    }
    if value.starts_with(['[', '{']) {
        return range(field, value, t);
    }
    let pattern = pattern(value)?;
    if pattern == [Piece::Any] {
        // `field:*`: the field is present, whatever its kind.
        return Ok(Query::Present(field));
    }
    match field.kind() {
        Kind::Text => Ok(Query::Matches(field, pattern)),
        Kind::Bool => match unescaped(value)?.as_str() {
            "true" => Ok(Query::Equals(field, Scalar::Bool(true))),
            "false" => Ok(Query::Equals(field, Scalar::Bool(false))),
            other => Err(QueryError(format!("{t:?}: {other:?} is not true or false"))),
        },
        Kind::Number => match literal(&field, value, t)? {
            Value::Number(n) => Ok(Query::Equals(field, Scalar::Number(n))),
            Value::Text(_) => unreachable!("a numeric field's literal is a number"),
        },
    }
}

fn ranged(field: Field, low: Bound, high: Bound) -> Result<Query, QueryError> {
    if field.kind() == Kind::Bool {
        return Err(QueryError("a boolean field has no ranges or comparisons".into()));
    }
    Ok(Query::Range(field, low, high))
}

/// `[a TO b]`, `{a TO b}` or a mix; either end may be `*`.
fn range(field: Field, value: &str, t: &str) -> Result<Query, QueryError> {
    let inclusive_low = value.starts_with('[');
    let inclusive_high = value.ends_with(']');
    if !value.ends_with([']', '}']) {
        return Err(QueryError(format!("{t:?}: a range ends with ']' or '}}'")));
    }
    let inner = &value[1..value.len() - 1];
    let parts: Vec<&str> = inner.split_whitespace().collect();
    let [low, "TO", high] = parts.as_slice() else {
        return Err(QueryError(format!("{t:?}: a range is written [low TO high]")));
    };
    let bound = |text: &str, inclusive: bool| -> Result<Bound, QueryError> {
        if text == "*" {
            return Ok(Bound::Open);
        }
        let v = literal(&field, text, t)?;
        Ok(if inclusive { Bound::Inclusive(v) } else { Bound::Exclusive(v) })
    };
    let (low, high) = (bound(low, inclusive_low)?, bound(high, inclusive_high)?);
    ranged(field, low, high)
}

/// A literal for a comparison or a range, typed by the field.
fn literal(field: &Field, text: &str, t: &str) -> Result<Value, QueryError> {
    let text = unescaped(text)?;
    match field.kind() {
        Kind::Number => text
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Value::Number)
            .ok_or_else(|| QueryError(format!("{t:?}: {text:?} is not a number"))),
        Kind::Text => Ok(Value::Text(text)),
        Kind::Bool => Err(QueryError("a boolean field has no ranges or comparisons".into())),
    }
}

/// The value with its quotes and escapes removed (for literals without wildcards).
fn unescaped(value: &str) -> Result<String, QueryError> {
    Ok(pattern(value)?
        .into_iter()
        .map(|p| match p {
            Piece::Char(c) => c,
            Piece::Any => '*',
            Piece::One => '?',
        })
        .collect())
}

/// A value as a pattern: unquoted `*` and `?` are wildcards; quoted text and escaped characters
/// are literal.
fn pattern(value: &str) -> Result<Vec<Piece>, QueryError> {
    let mut out = Vec::new();
    let mut chars = value.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => out.push(Piece::Char(next)),
                None => return Err(QueryError("a value ends with a lone '\\'".into())),
            },
            '"' => quoted = !quoted,
            '*' if !quoted => out.push(Piece::Any),
            '?' if !quoted => out.push(Piece::One),
            '~' | '^' if !quoted => {
                return Err(QueryError(format!("the operator {c:?} is not served: escape it as \\{c}")));
            }
            c => out.push(Piece::Char(c)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A thing's document for the tables below.
    struct Doc {
        name: &'static str,
        groups: Vec<&'static str>,
        attributes: BTreeMap<&'static str, &'static str>,
        connected: Option<bool>,
        timestamp: Option<f64>,
        reason: Option<&'static str>,
    }

    impl Document for Doc {
        fn values(&self, field: &Field) -> Vec<Scalar> {
            let text = |s: &str| Scalar::Text(s.to_owned());
            match field {
                Field::ThingName => vec![text(self.name)],
                Field::ThingId => vec![text("id-1")],
                Field::ThingTypeName => vec![text("pump")],
                Field::ThingGroupNames => self.groups.iter().map(|g| text(g)).collect(),
                Field::Attribute(a) => self.attributes.get(a.as_str()).map(|v| text(v)).into_iter().collect(),
                Field::RegistryVersion => vec![Scalar::Number(3.0)],
                Field::Connected => self.connected.map(Scalar::Bool).into_iter().collect(),
                Field::ConnectivityTimestamp => self.timestamp.map(Scalar::Number).into_iter().collect(),
                Field::DisconnectReason => self.reason.map(text).into_iter().collect(),
            }
        }
    }

    fn core_7() -> Doc {
        Doc {
            name: "site-7-core",
            groups: vec!["north", "cores"],
            attributes: BTreeMap::from([("site", "7"), ("model", "GG 2.12")]),
            connected: Some(false),
            timestamp: Some(1_700_000_000_000.0),
            reason: Some("CONNECTION_LOST"),
        }
    }

    #[test]
    fn queries_match_what_an_operator_means() {
        let doc = core_7();
        let table: &[(&str, bool)] = &[
            ("*", true),
            ("thingName:site-7-core", true),
            ("thingName:site-8-core", false),
            ("thingName:site-*", true),
            ("thingName:*core", true),
            ("thingName:site-?-core", true),
            ("thingName:site-??-core", false),
            ("thingName:*", true),
            ("thingName:\"site-*\"", false),
            ("thingGroupNames:cores", true),
            ("thingGroupNames:south", false),
            ("thingTypeName:pump", true),
            ("attributes.site:7", true),
            ("attributes.model:\"GG 2.12\"", true),
            ("attributes.model:GG\\ 2.12", true),
            ("attributes.missing:*", false),
            ("NOT attributes.missing:*", true),
            ("connectivity.connected:*", true),
            ("connectivity.connected:false", true),
            ("connectivity.connected:true", false),
            ("connectivity.disconnectReason:CONNECTION_LOST", true),
            ("connectivity.timestamp>1600000000000", true),
            ("connectivity.timestamp<1600000000000", false),
            ("connectivity.timestamp>=1700000000000", true),
            ("connectivity.timestamp<=1699999999999", false),
            ("connectivity.timestamp:[1700000000000 TO *]", true),
            ("connectivity.timestamp:{1700000000000 TO *]", false),
            ("connectivity.timestamp:1700000000000", true),
            ("registry.version:[1 TO 3]", true),
            ("registry.version:[1 TO 3}", false),
            ("thingName:[site-1 TO site-8]", true),
            ("thingName:{site-7-core TO site-8}", false),
            ("thingName:site-* AND connectivity.connected:false", true),
            ("thingName:site-* connectivity.connected:true", false),
            ("thingName:x OR thingGroupNames:north", true),
            ("NOT thingName:x AND (thingGroupNames:south OR attributes.site:7)", true),
            ("NOT (thingName:site-* OR thingName:x)", false),
            ("thingName:x OR thingName:y OR NOT thingName:z", true),
        ];
        for (query, want) in table {
            let q = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(q.matches(&doc), *want, "{query}");
        }
    }

    #[test]
    fn things_without_connectivity_match_no_connectivity_term() {
        let doc = Doc { connected: None, timestamp: None, reason: None, ..core_7() };
        for query in ["connectivity.connected:false", "connectivity.timestamp>0", "connectivity.disconnectReason:*"] {
            assert!(!parse(query).unwrap().matches(&doc), "{query}");
        }
    }

    #[test]
    fn malformed_queries_are_refused_with_a_reason() {
        let table: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("site-7", "names no field"),
            ("thingname:x", "not indexed"),
            ("shadow.reported.mode:auto", "not indexed"),
            ("attributes.:x", "not indexed"),
            ("thingName:", "no value"),
            ("thingName:x AND", "ends where a term"),
            ("(thingName:x", "not closed"),
            ("thingName:x)", "unexpected"),
            ("thingName:\"x", "quoted value is not closed"),
            ("connectivity.connected:yes", "not true or false"),
            ("connectivity.connected>1", "boolean"),
            ("connectivity.timestamp>soon", "not a number"),
            ("connectivity.timestamp:[1 TO", "not closed"),
            ("connectivity.timestamp:[1 2]", "[low TO high]"),
            ("registry.version:x", "not a number"),
            ("thingName:abc~", "not served"),
            ("OR thingName:x", "expected a term"),
            ("thingName:x\\", "lone"),
        ];
        for (query, reason) in table {
            let e = parse(query).expect_err(query);
            assert!(e.0.contains(reason), "{query}: {e}");
        }
    }

    #[test]
    fn wildcards_backtrack() {
        let p = pattern("a*b*c").unwrap();
        for (text, want) in [("abc", true), ("aXXbYYc", true), ("abcb", false), ("ab", false), ("a-b-c-c", true)] {
            assert_eq!(wildcard(&p, &text.chars().collect::<Vec<_>>()), want, "{text}");
        }
    }

    #[test]
    fn fields_lists_what_the_query_reads() {
        let q = parse("thingName:x AND NOT connectivity.connected:true").unwrap();
        assert_eq!(q.fields(), vec![&Field::ThingName, &Field::Connected]);
    }
}
