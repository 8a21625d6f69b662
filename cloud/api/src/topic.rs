//! MQTT topic names and filters under AWS IoT Core's rules ("MQTT topics" in
//! the AWS IoT Core Developer Guide; "AWS IoT Core message broker and protocol
//! limits and quotas" in the AWS General Reference), and filter matching
//! (MQTT 3.1.1 §4.7).
//!
//! Rules applied:
//! - names and filters are non-empty UTF-8 without U+0000 (MQTT 3.1.1 §4.7.3);
//! - a name holds no wildcard; in a filter `+` fills a whole level and `#` fills
//!   the whole last level (MQTT 3.1.1 §4.7.1);
//! - at most [`MAX_TOPIC_BYTES`] bytes and [`MAX_TOPIC_SLASHES`] forward slashes;
//!   the Basic Ingest prefix `$aws/rules/{rule}/` and the shared-subscription prefix
//!   `$share/{group}/` are not counted, as IoT Core's quota table says for Basic
//!   Ingest and as the AWS IoT device SDKs' IoT Core validation does for both;
//! - empty levels (`a//b`, `/a`, `a/`) are valid.

use crate::limits::{MAX_TOPIC_BYTES, MAX_TOPIC_SLASHES};

/// Why a topic name or filter is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Empty topic.
    #[error("topic is empty")]
    Empty,
    /// Longer than [`crate::limits::MAX_TOPIC_BYTES`].
    #[error("topic is {0} bytes, the limit is 256")]
    TooLong(usize),
    /// More than [`crate::limits::MAX_TOPIC_SLASHES`] slashes.
    #[error("topic has {0} forward slashes, the limit is 7")]
    TooManySlashes(usize),
    /// A wildcard in a topic name, or a misplaced wildcard in a filter.
    #[error("invalid wildcard in {0:?}")]
    InvalidWildcard(String),
    /// A NUL character.
    #[error("topic contains a NUL character")]
    Nul,
}

/// Prefix of Basic Ingest topics, `$aws/rules/{rule}/…`: messages go straight to
/// the rule, not through the publish/subscribe broker, and nobody may subscribe.
pub const BASIC_INGEST_PREFIX: &str = "$aws/rules/";

/// Prefix of shared-subscription filters, `$share/{group}/{filter}`.
pub const SHARED_SUBSCRIPTION_PREFIX: &str = "$share/";

/// Checks a topic name a client publishes to.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::InvalidWildcard(topic.to_owned()));
    }
    check_quota(skip_basic_ingest(topic))
}

/// Checks a topic filter a client subscribes to, including a shared
/// subscription `$share/{group}/{filter}` (the group is one non-empty level
/// without wildcards, followed by a valid filter).
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    check_common(filter)?;
    let inner = match split_shared_subscription(filter) {
        Some((_, inner)) => inner,
        None if filter.starts_with(SHARED_SUBSCRIPTION_PREFIX) || filter == "$share" => {
            return Err(TopicError::InvalidWildcard(filter.to_owned()));
        }
        None => filter,
    };
    if inner.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut levels = inner.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        let valid = match level {
            "+" => true,
            "#" => is_last,
            _ => !level.contains(['+', '#']),
        };
        if !valid {
            return Err(TopicError::InvalidWildcard(filter.to_owned()));
        }
    }
    check_quota(skip_basic_ingest(inner))
}

/// Whether `topic` matches `filter` (`+` one level, `#` the rest; a filter
/// starting with a wildcard does not match topics starting with `$`).
///
/// Unlike MQTT 3.1.1, and as IoT Core documents, `sport/#` matches `sport/`
/// and everything below it but not `sport` itself. `filter`
/// should have passed [`validate_topic_filter`]; a misplaced `#` matches
/// nothing. A shared subscription's group prefix must be removed first
/// ([`split_shared_subscription`]).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/').peekable();
    let mut topic_levels = topic.split('/');
    while let Some(f) = filter_levels.next() {
        if f == "#" {
            // IoT Core: `sensor/#` matches `sensor/` and below, but not `sensor` itself.
            return filter_levels.peek().is_none() && topic_levels.next().is_some();
        }
        match topic_levels.next() {
            Some(t) if f == "+" || f == t => {}
            _ => return false,
        }
    }
    topic_levels.next().is_none()
}

/// Splits a shared-subscription filter `$share/{group}/{filter}` into its group
/// and inner filter; `None` when `filter` is not a well-formed shared subscription.
pub fn split_shared_subscription(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix(SHARED_SUBSCRIPTION_PREFIX)?;
    let (group, inner) = rest.split_once('/')?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return None;
    }
    Some((group, inner))
}

/// The rule a Basic Ingest topic `$aws/rules/{rule}/…` addresses, if `topic` is one.
pub fn basic_ingest_rule(topic: &str) -> Option<&str> {
    let rest = strip_prefix_ignore_ascii_case(topic, BASIC_INGEST_PREFIX)?;
    let rule = rest.split('/').next().unwrap_or_default();
    (!rule.is_empty()).then_some(rule)
}

fn check_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

fn check_quota(counted: &str) -> Result<(), TopicError> {
    if counted.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(counted.len()));
    }
    let slashes = counted.bytes().filter(|b| *b == b'/').count();
    if slashes > MAX_TOPIC_SLASHES {
        return Err(TopicError::TooManySlashes(slashes));
    }
    Ok(())
}

/// The part of a topic that counts toward the quotas: after `$aws/rules/{rule}/`.
fn skip_basic_ingest(topic: &str) -> &str {
    let Some(rest) = strip_prefix_ignore_ascii_case(topic, BASIC_INGEST_PREFIX) else {
        return topic;
    };
    match rest.split_once('/') {
        Some((rule, after)) if !rule.is_empty() => after,
        _ => topic,
    }
}

fn strip_prefix_ignore_ascii_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_iot_core_rules() {
        let long = "a".repeat(257);
        let max = "a".repeat(256);
        let cases: &[(&str, Result<(), TopicError>)] = &[
            ("sensor/temperature/room1", Ok(())),
            ("a", Ok(())),
            ("/", Ok(())),
            ("a//b", Ok(())),
            ("/leading", Ok(())),
            ("trailing/", Ok(())),
            ("$aws/things/t1/shadow/update", Ok(())),
            ("1/2/3/4/5/6/7/8", Ok(())),
            ("1/2/3/4/5/6/7/8/9", Err(TopicError::TooManySlashes(8))),
            (&max, Ok(())),
            (&long, Err(TopicError::TooLong(257))),
            ("", Err(TopicError::Empty)),
            ("a/+/b", Err(TopicError::InvalidWildcard("a/+/b".into()))),
            ("a/#", Err(TopicError::InvalidWildcard("a/#".into()))),
            ("a+b", Err(TopicError::InvalidWildcard("a+b".into()))),
            ("a\0b", Err(TopicError::Nul)),
        ];
        for (topic, want) in cases {
            assert_eq!(&validate_topic_name(topic), want, "{topic:?}");
        }
    }

    #[test]
    fn topic_limit_counts_utf8_bytes_not_chars() {
        let topic = "é".repeat(129); // 258 bytes, 129 chars
        assert_eq!(validate_topic_name(&topic), Err(TopicError::TooLong(258)));
    }

    #[test]
    fn basic_ingest_prefix_is_not_counted_toward_quotas() {
        assert_eq!(validate_topic_name("$aws/rules/MyRule/1/2/3/4/5/6/7/8"), Ok(()));
        assert_eq!(validate_topic_name("$AWS/rules/MyRule/1/2/3/4/5/6/7/8"), Ok(()));
        assert_eq!(validate_topic_name("$aws/rules/MyRule/1/2/3/4/5/6/7/8/9"), Err(TopicError::TooManySlashes(8)));
        let long = format!("$aws/rules/MyRule/{}", "a".repeat(256));
        assert_eq!(validate_topic_name(&long), Ok(()));
        // Without the rule's trailing slash the prefix is not a Basic Ingest prefix.
        assert_eq!(basic_ingest_rule("$aws/rules/MyRule/a"), Some("MyRule"));
        assert_eq!(basic_ingest_rule("$aws/rules/"), None);
        assert_eq!(basic_ingest_rule("$aws/things/x"), None);
    }

    #[test]
    fn topic_filters_allow_whole_level_wildcards_only() {
        let cases: &[(&str, bool)] = &[
            ("sensor/+/room1", true),
            ("sensor/#", true),
            ("#", true),
            ("+", true),
            ("+/+/#", true),
            ("/+", true),
            ("a//b", true),
            ("$aws/things/t1/shadow/#", true),
            ("sensor/#/room1", false),
            ("sensor#", false),
            ("sensor/room+", false),
            ("sensor/++", false),
            ("##", false),
            ("1/2/3/4/5/6/7/#", true),
        ];
        for (filter, ok) in cases {
            assert_eq!(validate_topic_filter(filter).is_ok(), *ok, "{filter:?}");
        }
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter("a/\0"), Err(TopicError::Nul));
        assert_eq!(validate_topic_filter("1/2/3/4/5/6/7/8/#"), Err(TopicError::TooManySlashes(8)));
    }

    #[test]
    fn shared_subscription_prefix_is_checked_and_not_counted() {
        assert_eq!(split_shared_subscription("$share/g1/a/+/c"), Some(("g1", "a/+/c")));
        assert_eq!(validate_topic_filter("$share/g1/1/2/3/4/5/6/7/8"), Ok(()));
        assert!(validate_topic_filter("$share/g1/1/2/3/4/5/6/7/8/9").is_err());
        for bad in ["$share/", "$share/g1", "$share/g1/", "$share//a", "$share/g+/a", "$share/g1/a#"] {
            assert!(validate_topic_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_match_like_iot_core() {
        let cases: &[(&str, &str, bool)] = &[
            ("sport/tennis/player1", "sport/tennis/player1", true),
            ("sport/tennis/player1", "sport/tennis/player2", false),
            ("sport/tennis/player1/#", "sport/tennis/player1", false),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking", true),
            ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true),
            ("sport/#", "sport", false),
            ("sport/#", "sport/", true),
            ("sport/#", "sports", false),
            ("#", "anything/at/all", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("+/tennis/#", "sport/tennis/x", true),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("Sensor/#", "sensor/x", false),
            ("sensor/+/room1", "sensor/temperature/room1", true),
            ("sensor/+/room1", "sensor/temperature/room2", false),
        ];
        for (filter, topic, want) in cases {
            assert_eq!(matches(filter, topic), *want, "{filter:?} vs {topic:?}");
        }
    }

    #[test]
    fn wildcard_first_filters_do_not_match_dollar_topics() {
        assert!(!matches("#", "$SYS/broker/uptime"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!matches("+/things/t1/shadow/update", "$aws/things/t1/shadow/update"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$aws/things/+/shadow/update", "$aws/things/t1/shadow/update"));
    }

    #[test]
    fn misplaced_hash_in_an_unvalidated_filter_matches_nothing() {
        assert!(!matches("a/#/c", "a/b/c"));
        assert!(!matches("a/#/c", "a"));
    }
}
