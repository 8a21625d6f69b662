//! AWS IoT Core's rules for CONNECT, PUBLISH and SUBSCRIBE as pure decisions:
//! the connection loop asks, these functions answer, nothing here does I/O.
//! Authorization is passed in as a closure so tables can test every branch.
//!
//! Sources: "MQTT" and "AWS IoT differences from MQTT specifications" in the
//! AWS IoT Core Developer Guide; "AWS IoT Core endpoints and quotas", message
//! broker section, in the AWS General Reference; `cloud_api::limits`.

use std::time::Duration;

use cloud_api::limits;
use cloud_api::policy::Action;
use cloud_api::topic::{TopicError, validate_topic_filter, validate_topic_name};

use crate::iot_metrics::BrokerMetric;

/// Why the broker closes a connection (IoT Core's lifecycle events call most of
/// these `CLIENT_ERROR`; denied publishes are `AUTHORIZATION_FAILURE`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// QoS 2 PUBLISH or SUBSCRIBE: IoT Core sends no PUBACK/SUBACK and drops the client.
    #[error("QoS 2 is not supported")]
    Qos2,
    /// Payload over 128 KiB (`PAYLOAD_LIMIT_EXCEEDED`).
    #[error("payload of {0} bytes exceeds the 128 KiB limit")]
    PayloadTooLarge(usize),
    /// Topic name breaks IoT Core's topic rules.
    #[error("invalid topic: {0}")]
    InvalidTopic(TopicError),
    /// `iot:Publish` denied.
    #[error("not authorized to publish to {0}")]
    PublishDenied(String),
    /// `iot:RetainPublish` denied for a retained publish.
    #[error("not authorized to retain on {0}")]
    RetainDenied(String),
    /// RETAIN on a reserved (`$`) topic, which IoT Core does not allow.
    #[error("retained publish to reserved topic {0}")]
    RetainOnReservedTopic(String),
    /// More than 8 filters in one SUBSCRIBE.
    #[error("{0} filters in one SUBSCRIBE, the limit is 8")]
    TooManyFiltersInSubscribe(usize),
    /// The SUBSCRIBE would take the connection past 50 subscriptions.
    #[error("subscription limit of 50 per connection exceeded")]
    TooManySubscriptions,
    /// A packet that is malformed or not allowed in this state.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// MQTT 5: a malformed packet (DISCONNECT 0x81).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// MQTT 5: a packet over the Maximum Packet Size the broker announced.
    #[error("packet larger than the maximum packet size")]
    PacketTooLarge,
    /// MQTT 5: a Topic Alias of 0, above the Topic Alias Maximum, or unknown.
    #[error("invalid topic alias {0}")]
    TopicAliasInvalid(u16),
    /// MQTT 5: a Subscription Identifier, which IoT Core does not support.
    #[error("subscription identifiers are not supported")]
    SubscriptionIdentifiers,
}

impl Violation {
    /// The reason code of the DISCONNECT an MQTT 5 client gets before the
    /// connection is closed (MQTT 5 §3.14.2.1).
    pub(crate) fn disconnect_reason(&self) -> u8 {
        match self {
            Violation::Malformed(_) => 0x81,
            Violation::Protocol(_) => 0x82,
            Violation::PublishDenied(_) | Violation::RetainDenied(_) => 0x87,
            Violation::RetainOnReservedTopic(_) | Violation::InvalidTopic(_) => 0x90,
            Violation::TopicAliasInvalid(_) => 0x94,
            Violation::PayloadTooLarge(_) | Violation::PacketTooLarge => 0x95,
            Violation::TooManyFiltersInSubscribe(_) | Violation::TooManySubscriptions => 0x97,
            Violation::Qos2 => 0x9B,
            Violation::SubscriptionIdentifiers => 0xA1,
        }
    }
}

/// Keep-alive IoT Core applies when the client asks for 0 (none) and the most it grants.
pub(crate) const MAX_KEEP_ALIVE_SECS: u16 = 1200;
/// Shortest keep-alive IoT Core grants; shorter requests are raised to it.
pub(crate) const MIN_KEEP_ALIVE_SECS: u16 = 30;

/// The keep-alive IoT Core uses for a requested value: 0 means the maximum,
/// other values are clamped to 30..=1200 seconds.
pub(crate) fn granted_keep_alive(requested_secs: u16) -> u16 {
    if requested_secs == 0 {
        MAX_KEEP_ALIVE_SECS
    } else {
        requested_secs.clamp(MIN_KEEP_ALIVE_SECS, MAX_KEEP_ALIVE_SECS)
    }
}

/// How long a connection may stay silent before it is dropped: 1.5 × the granted keep-alive.
pub(crate) fn silence_limit(requested_secs: u16) -> Duration {
    Duration::from_millis(u64::from(granted_keep_alive(requested_secs)) * 1500)
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectRefusal {
    /// Empty, too long, or reserved (`$`) client id: 3.1.1 code 2, MQTT 5 0x85.
    IdentifierRejected,
    /// A policy denies it (also the will's topic): 3.1.1 code 5, MQTT 5 0x87.
    NotAuthorized,
    /// The certificate is not registered or not ACTIVE: answered as [`Self::NotAuthorized`].
    NotAuthenticated,
    /// A will with QoS 2: MQTT 5 0x9B; 3.1.1 closes without CONNACK.
    QosNotSupported,
    /// A will topic that is not valid: MQTT 5 0x90; 3.1.1 closes without CONNACK.
    TopicNameInvalid,
    /// MQTT 5 enhanced authentication (Authentication Method), which IoT Core does not offer: 0x8C.
    BadAuthenticationMethod,
}

impl ConnectRefusal {
    /// CONNACK return code for MQTT 3.1.1; `None`: close without CONNACK (as IoT Core).
    pub(crate) fn code_v4(self) -> Option<u8> {
        match self {
            ConnectRefusal::IdentifierRejected => Some(2),
            ConnectRefusal::NotAuthorized | ConnectRefusal::NotAuthenticated => Some(5),
            _ => None,
        }
    }

    /// CONNACK reason code for MQTT 5.
    pub(crate) fn code_v5(self) -> u8 {
        match self {
            ConnectRefusal::IdentifierRejected => 0x85,
            ConnectRefusal::NotAuthorized | ConnectRefusal::NotAuthenticated => 0x87,
            ConnectRefusal::QosNotSupported => 0x9B,
            ConnectRefusal::TopicNameInvalid => 0x90,
            ConnectRefusal::BadAuthenticationMethod => 0x8C,
        }
    }
}

impl ConnectRefusal {
    /// The `AWS/IoT` metric a refused CONNECT counts in.
    pub(crate) fn metric(self) -> BrokerMetric {
        match self {
            ConnectRefusal::NotAuthenticated => BrokerMetric::ConnectionAuthNError,
            ConnectRefusal::NotAuthorized => BrokerMetric::ConnectAuthError,
            ConnectRefusal::IdentifierRejected
            | ConnectRefusal::QosNotSupported
            | ConnectRefusal::TopicNameInvalid
            | ConnectRefusal::BadAuthenticationMethod => BrokerMetric::ConnectClientError,
        }
    }
}

/// The `AWS/IoT` metric a refused PUBLISH counts in: denied by the policies, or against the rules.
pub(crate) fn publish_refusal_metric(violation: &Violation) -> BrokerMetric {
    match violation {
        Violation::PublishDenied(_) | Violation::RetainDenied(_) => BrokerMetric::PublishInAuthError,
        _ => BrokerMetric::PublishInClientError,
    }
}

/// The `AWS/IoT` metric a SUBSCRIBE counts in: an error if any filter was refused (the
/// policies' refusal first), else a success.
pub(crate) fn subscribe_metric(outcomes: &[FilterOutcome]) -> BrokerMetric {
    if outcomes.contains(&FilterOutcome::Denied) {
        BrokerMetric::SubscribeAuthError
    } else if outcomes.contains(&FilterOutcome::Invalid) {
        BrokerMetric::SubscribeClientError
    } else {
        BrokerMetric::SubscribeSuccess
    }
}

/// Checks a client id: 1..=128 bytes and not starting with `$` (reserved by IoT Core).
pub(crate) fn check_client_id(client_id: &str) -> Result<(), ConnectRefusal> {
    if client_id.is_empty() || client_id.len() > limits::MAX_CLIENT_ID_BYTES || client_id.starts_with('$') {
        Err(ConnectRefusal::IdentifierRejected)
    } else {
        Ok(())
    }
}

/// Writes `prefix` + `name` into `buf` (reused across calls to avoid allocating).
pub(crate) fn resource<'b>(buf: &'b mut String, prefix: &str, name: &str) -> &'b str {
    buf.clear();
    buf.push_str(prefix);
    buf.push_str(name);
    buf
}

/// Decides whether a client's PUBLISH is accepted. `allowed(action, topic)`
/// answers `iot:Publish`/`iot:RetainPublish` on `topic/{topic}`.
pub(crate) fn check_publish(
    topic: &str,
    payload_len: usize,
    qos: u8,
    retain: bool,
    mut allowed: impl FnMut(Action, &str) -> bool,
) -> Result<(), Violation> {
    if qos > 1 {
        return Err(Violation::Qos2);
    }
    if payload_len > limits::MAX_PAYLOAD_BYTES {
        return Err(Violation::PayloadTooLarge(payload_len));
    }
    validate_topic_name(topic).map_err(Violation::InvalidTopic)?;
    if !allowed(Action::Publish, topic) {
        return Err(Violation::PublishDenied(topic.to_owned()));
    }
    if retain {
        if topic.starts_with('$') {
            return Err(Violation::RetainOnReservedTopic(topic.to_owned()));
        }
        if !allowed(Action::RetainPublish, topic) {
            return Err(Violation::RetainDenied(topic.to_owned()));
        }
    }
    Ok(())
}

/// What became of one filter of a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FilterOutcome {
    /// Subscribed at this QoS.
    Granted(u8),
    /// Not a valid (or routable) topic filter.
    Invalid,
    /// `iot:Subscribe` denied.
    Denied,
}

impl FilterOutcome {
    /// SUBACK return code in MQTT 3.1.1: the QoS, or 0x80 for any failure.
    pub(crate) fn code_v4(self) -> u8 {
        match self {
            FilterOutcome::Granted(q) => q,
            FilterOutcome::Invalid | FilterOutcome::Denied => 0x80,
        }
    }

    /// SUBACK reason code in MQTT 5: the QoS, 0x8F Topic Filter invalid, 0x87 Not authorized.
    pub(crate) fn code_v5(self) -> u8 {
        match self {
            FilterOutcome::Granted(q) => q,
            FilterOutcome::Invalid => 0x8F,
            FilterOutcome::Denied => 0x87,
        }
    }
}

/// The answer to a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubscribePlan {
    /// One outcome per requested filter, in order.
    pub(crate) outcomes: Vec<FilterOutcome>,
    /// Filters to add with their subscription options byte (QoS in the low two
    /// bits, MQTT 5's No Local and Retain As Published above), deduplicated
    /// (the last one wins).
    pub(crate) accepted: Vec<(String, u8)>,
}

/// Subscription options bit: No Local (MQTT 5 §3.8.3.1).
pub(crate) const OPT_NO_LOCAL: u8 = 0b0100;
/// Subscription options bit: Retain As Published.
pub(crate) const OPT_RETAIN_AS_PUBLISHED: u8 = 0b1000;

/// Decides a SUBSCRIBE of `(filter, options)` pairs: at most 8 filters, QoS 0/1,
/// valid filters (shared subscriptions `$share/{group}/{filter}` included),
/// `iot:Subscribe` per filter, and at most 50 subscriptions held. `held` is
/// how many the session holds; `already` tells whether it holds a filter.
/// Breaking a limit is an error (the connection is closed).
pub(crate) fn plan_subscribe(
    filters: Vec<(String, u8)>,
    held: usize,
    already: impl Fn(&str) -> bool,
    mut allowed: impl FnMut(&str) -> bool,
) -> Result<SubscribePlan, Violation> {
    if filters.len() > limits::MAX_FILTERS_PER_SUBSCRIBE {
        return Err(Violation::TooManyFiltersInSubscribe(filters.len()));
    }
    if filters.iter().any(|(_, o)| o & 0b11 > 1) {
        return Err(Violation::Qos2);
    }
    if filters.iter().any(|(f, o)| o & OPT_NO_LOCAL != 0 && f.starts_with(cloud_api::topic::SHARED_SUBSCRIPTION_PREFIX))
    {
        // MQTT 5 §3.8.3.1: No Local on a shared subscription is a Protocol Error.
        return Err(Violation::Protocol("No Local on a shared subscription"));
    }
    let mut outcomes = Vec::with_capacity(filters.len());
    let mut accepted: Vec<(String, u8)> = Vec::with_capacity(filters.len());
    let mut added = 0;
    for (filter, opts) in filters {
        if validate_topic_filter(&filter).is_err() || !routable(&filter) {
            outcomes.push(FilterOutcome::Invalid);
            continue;
        }
        if !allowed(&filter) {
            outcomes.push(FilterOutcome::Denied);
            continue;
        }
        outcomes.push(FilterOutcome::Granted(opts & 0b11));
        if let Some(prev) = accepted.iter_mut().find(|(f, _)| *f == filter) {
            prev.1 = opts;
        } else {
            if !already(&filter) {
                added += 1;
            }
            accepted.push((filter, opts));
        }
    }
    if held + added > limits::MAX_SUBSCRIPTIONS_PER_CONNECTION {
        return Err(Violation::TooManySubscriptions);
    }
    Ok(SubscribePlan { outcomes, accepted })
}

/// Basic Ingest topics are only published to; nothing is routed on them.
fn routable(filter: &str) -> bool {
    !filter.starts_with(cloud_api::topic::BASIC_INGEST_PREFIX)
}

/// Whether a subscription with `filter` gets the retained message of a topic on
/// SUBSCRIBE: IoT Core sends retained messages only to filters without wildcards.
/// A shared subscription gets none (MQTT 5 §4.8.2).
pub(crate) fn receives_retained_on_subscribe(filter: &str) -> bool {
    if filter.starts_with(cloud_api::topic::SHARED_SUBSCRIPTION_PREFIX) {
        return false;
    }
    !filter.split('/').any(|l| l == "+" || l == "#")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_is_clamped_to_iot_core_range() {
        for (req, granted) in
            [(0, 1200), (1, 30), (29, 30), (30, 30), (60, 60), (1200, 1200), (1201, 1200), (u16::MAX, 1200)]
        {
            assert_eq!(granted_keep_alive(req), granted, "requested {req}");
        }
        assert_eq!(silence_limit(60), Duration::from_secs(90));
        assert_eq!(silence_limit(0), Duration::from_secs(1800));
    }

    #[test]
    fn client_ids_must_be_1_to_128_bytes_and_not_reserved() {
        assert_eq!(check_client_id("dev-1"), Ok(()));
        assert_eq!(check_client_id(&"x".repeat(128)), Ok(()));
        assert_eq!(check_client_id(""), Err(ConnectRefusal::IdentifierRejected));
        assert_eq!(check_client_id(&"x".repeat(129)), Err(ConnectRefusal::IdentifierRejected));
        assert_eq!(check_client_id("$internal"), Err(ConnectRefusal::IdentifierRejected));
    }

    #[test]
    fn qos2_and_oversize_publishes_are_refused_before_authorization() {
        let mut asked = 0;
        let r = check_publish("a", 1, 2, false, |_, _| {
            asked += 1;
            true
        });
        assert_eq!(r, Err(Violation::Qos2));
        let r = check_publish("a", limits::MAX_PAYLOAD_BYTES + 1, 1, false, |_, _| {
            asked += 1;
            true
        });
        assert_eq!(r, Err(Violation::PayloadTooLarge(limits::MAX_PAYLOAD_BYTES + 1)));
        assert_eq!(asked, 0);
    }

    #[test]
    fn publish_needs_publish_and_retain_needs_retain_publish() {
        assert_eq!(check_publish("a/b", limits::MAX_PAYLOAD_BYTES, 1, false, |_, _| true), Ok(()));
        assert_eq!(check_publish("a/b", 0, 0, false, |_, _| false), Err(Violation::PublishDenied("a/b".into())));
        assert_eq!(
            check_publish("a/b", 3, 0, true, |a, _| a == Action::Publish),
            Err(Violation::RetainDenied("a/b".into()))
        );
        assert_eq!(check_publish("a/b", 3, 0, true, |_, _| true), Ok(()));
        assert_eq!(
            check_publish("$aws/things/t/shadow/update", 3, 0, true, |_, _| true),
            Err(Violation::RetainOnReservedTopic("$aws/things/t/shadow/update".into()))
        );
    }

    #[test]
    fn too_deep_or_wildcard_publish_topics_are_violations() {
        assert!(matches!(
            check_publish("a/b/c/d/e/f/g/h/i", 1, 0, false, |_, _| true),
            Err(Violation::InvalidTopic(_))
        ));
        assert!(matches!(check_publish("a/+", 1, 0, false, |_, _| true), Err(Violation::InvalidTopic(_))));
        assert!(matches!(check_publish(&"a".repeat(257), 1, 0, false, |_, _| true), Err(Violation::InvalidTopic(_))));
    }

    fn f(list: &[(&str, u8)]) -> Vec<(String, u8)> {
        list.iter().map(|(s, q)| (s.to_string(), *q)).collect()
    }

    #[test]
    fn subscribe_grants_allowed_filters_and_refuses_others_with_0x80() {
        let plan = plan_subscribe(
            f(&[("a/#", 1), ("secret/x", 1), ("b/+", 0), ("bad/#/x", 1)]),
            0,
            |_| false,
            |flt| !flt.starts_with("secret"),
        )
        .unwrap();
        let v4: Vec<u8> = plan.outcomes.iter().map(|o| o.code_v4()).collect();
        let v5: Vec<u8> = plan.outcomes.iter().map(|o| o.code_v5()).collect();
        assert_eq!(v4, vec![1, 0x80, 0, 0x80]);
        assert_eq!(v5, vec![1, 0x87, 0, 0x8F], "MQTT 5 tells denied and invalid apart");
        assert_eq!(plan.accepted, f(&[("a/#", 1), ("b/+", 0)]));
    }

    #[test]
    fn shared_subscriptions_are_granted_and_basic_ingest_filters_refused() {
        let plan = plan_subscribe(
            f(&[("$share/g/a", 1), ("$aws/rules/r/x", 0), ("a", 0), ("$share//a", 0)]),
            0,
            |_| false,
            |_| true,
        )
        .unwrap();
        assert_eq!(
            plan.outcomes,
            vec![FilterOutcome::Granted(1), FilterOutcome::Invalid, FilterOutcome::Granted(0), FilterOutcome::Invalid]
        );
    }

    #[test]
    fn subscription_options_are_kept_and_no_local_on_a_shared_subscription_is_an_error() {
        let opts = 1 | OPT_NO_LOCAL | OPT_RETAIN_AS_PUBLISHED;
        let plan = plan_subscribe(f(&[("a", opts)]), 0, |_| false, |_| true).unwrap();
        assert_eq!((plan.outcomes[0], plan.accepted[0].1), (FilterOutcome::Granted(1), opts));
        assert!(matches!(
            plan_subscribe(f(&[("$share/g/a", OPT_NO_LOCAL)]), 0, |_| false, |_| true),
            Err(Violation::Protocol(_))
        ));
    }

    #[test]
    fn subscribe_limits_drop_the_connection() {
        let nine = f(&[("a", 0); 9]);
        assert_eq!(plan_subscribe(nine, 0, |_| false, |_| true), Err(Violation::TooManyFiltersInSubscribe(9)));
        assert_eq!(plan_subscribe(f(&[("a", 1), ("b", 2)]), 0, |_| false, |_| true), Err(Violation::Qos2));
        assert_eq!(
            plan_subscribe(f(&[("a", 1), ("b", 1)]), 49, |_| false, |_| true),
            Err(Violation::TooManySubscriptions)
        );
        // Re-subscribing to held filters does not count against the limit.
        let plan = plan_subscribe(f(&[("a", 1), ("b", 1)]), 50, |_| true, |_| true).unwrap();
        assert_eq!(plan.outcomes, vec![FilterOutcome::Granted(1); 2]);
    }

    #[test]
    fn refusals_count_in_the_aws_iot_metric_of_their_cause() {
        use BrokerMetric as M;
        let connects = [
            (ConnectRefusal::NotAuthenticated, M::ConnectionAuthNError),
            (ConnectRefusal::NotAuthorized, M::ConnectAuthError),
            (ConnectRefusal::IdentifierRejected, M::ConnectClientError),
            (ConnectRefusal::QosNotSupported, M::ConnectClientError),
            (ConnectRefusal::TopicNameInvalid, M::ConnectClientError),
            (ConnectRefusal::BadAuthenticationMethod, M::ConnectClientError),
        ];
        for (refusal, metric) in connects {
            assert_eq!(refusal.metric(), metric, "{refusal:?}");
        }
        assert_eq!(ConnectRefusal::NotAuthenticated.code_v4(), ConnectRefusal::NotAuthorized.code_v4());
        let publishes = [
            (Violation::PublishDenied("t".into()), M::PublishInAuthError),
            (Violation::RetainDenied("t".into()), M::PublishInAuthError),
            (Violation::PayloadTooLarge(200_000), M::PublishInClientError),
            (Violation::Qos2, M::PublishInClientError),
            (Violation::RetainOnReservedTopic("$aws/x".into()), M::PublishInClientError),
        ];
        for (violation, metric) in publishes {
            assert_eq!(publish_refusal_metric(&violation), metric, "{violation:?}");
        }
        use FilterOutcome::{Denied, Granted, Invalid};
        let subscribes: [(&[FilterOutcome], M); 4] = [
            (&[Granted(0), Granted(1)], M::SubscribeSuccess),
            (&[Granted(1), Denied], M::SubscribeAuthError),
            (&[Invalid, Granted(0)], M::SubscribeClientError),
            (&[Invalid, Denied], M::SubscribeAuthError),
        ];
        for (outcomes, metric) in subscribes {
            assert_eq!(subscribe_metric(outcomes), metric, "{outcomes:?}");
        }
    }

    #[test]
    fn violations_map_to_mqtt5_disconnect_reasons() {
        for (v, code) in [
            (Violation::Malformed("x"), 0x81),
            (Violation::Protocol("x"), 0x82),
            (Violation::PublishDenied("t".into()), 0x87),
            (Violation::TopicAliasInvalid(9), 0x94),
            (Violation::PayloadTooLarge(1), 0x95),
            (Violation::TooManySubscriptions, 0x97),
            (Violation::Qos2, 0x9B),
            (Violation::SubscriptionIdentifiers, 0xA1),
        ] {
            assert_eq!(v.disconnect_reason(), code, "{v}");
        }
    }

    #[test]
    fn only_filters_without_wildcards_get_retained_messages() {
        assert!(receives_retained_on_subscribe("a/b"));
        assert!(!receives_retained_on_subscribe("$share/g/a/b"));
        assert!(!receives_retained_on_subscribe("a/+"));
        assert!(!receives_retained_on_subscribe("a/#"));
        assert!(receives_retained_on_subscribe("a+/b#"));
    }
}
