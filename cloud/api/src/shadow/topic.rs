//! Shadow topic names: `$aws/things/{thing}/shadow[/name/{shadow}]/{op}[/{response}]`.
//!
//! Follows "Device Shadow MQTT topics" in the AWS IoT Core Developer Guide. Name
//! rules come from the IoT data-plane model (`ThingName`: `[a-zA-Z0-9:_-]{1,128}`;
//! `ShadowName`: `[$a-zA-Z0-9:_-]{1,64}`, the `$` being there for AWS's reserved
//! shadows such as `$package`).

use crate::limits::{MAX_THING_NAME_BYTES, SHADOW_MAX_NAME_BYTES};

/// A shadow operation a client requests by publishing to its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowOperation {
    /// `…/get`
    Get,
    /// `…/update`
    Update,
    /// `…/delete`
    Delete,
}

impl ShadowOperation {
    /// Every operation, in topic order.
    pub const ALL: [ShadowOperation; 3] = [ShadowOperation::Get, ShadowOperation::Update, ShadowOperation::Delete];

    /// The topic segment: `get`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowOperation::Get => "get",
            ShadowOperation::Update => "update",
            ShadowOperation::Delete => "delete",
        }
    }

    /// The response topics the service publishes for this operation
    /// (`delta` and `documents` exist only for `update`).
    pub fn responses(self) -> &'static [ShadowResponse] {
        match self {
            ShadowOperation::Update => {
                &[ShadowResponse::Accepted, ShadowResponse::Rejected, ShadowResponse::Delta, ShadowResponse::Documents]
            }
            ShadowOperation::Get | ShadowOperation::Delete => &[ShadowResponse::Accepted, ShadowResponse::Rejected],
        }
    }

    fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "get" => Some(ShadowOperation::Get),
            "update" => Some(ShadowOperation::Update),
            "delete" => Some(ShadowOperation::Delete),
            _ => None,
        }
    }
}

/// A response topic suffix the shadow service publishes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowResponse {
    /// `…/accepted`
    Accepted,
    /// `…/rejected`
    Rejected,
    /// `…/update/delta` (update only)
    Delta,
    /// `…/update/documents` (update only)
    Documents,
}

impl ShadowResponse {
    /// The topic segment: `accepted`, `rejected`, `delta` or `documents`.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowResponse::Accepted => "accepted",
            ShadowResponse::Rejected => "rejected",
            ShadowResponse::Delta => "delta",
            ShadowResponse::Documents => "documents",
        }
    }

    fn from_segment(segment: &str) -> Option<Self> {
        match segment {
            "accepted" => Some(ShadowResponse::Accepted),
            "rejected" => Some(ShadowResponse::Rejected),
            "delta" => Some(ShadowResponse::Delta),
            "documents" => Some(ShadowResponse::Documents),
            _ => None,
        }
    }
}

/// A parsed shadow topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShadowTopic {
    /// The thing name.
    pub thing_name: String,
    /// `None` for the classic shadow, `Some(name)` for a named shadow.
    pub shadow_name: Option<String>,
    /// The operation.
    pub operation: ShadowOperation,
    /// `None` on a request topic, `Some` on a response topic.
    pub response: Option<ShadowResponse>,
}

/// Whether `name` is a valid thing name: `[a-zA-Z0-9:_-]`, 1 to 128 bytes.
pub fn is_valid_thing_name(name: &str) -> bool {
    (1..=MAX_THING_NAME_BYTES).contains(&name.len()) && name.bytes().all(is_name_byte)
}

/// Whether `name` is a valid shadow name: `[$a-zA-Z0-9:_-]`, 1 to 64 bytes.
/// The IoT data-plane model allows `$` so that AWS's reserved shadows (such as
/// `$package`) can be addressed.
pub fn is_valid_shadow_name(name: &str) -> bool {
    (1..=SHADOW_MAX_NAME_BYTES).contains(&name.len()) && name.bytes().all(|b| b == b'$' || is_name_byte(b))
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-')
}

/// The topic prefix of a shadow: `$aws/things/{thing}/shadow` for the classic
/// shadow, `$aws/things/{thing}/shadow/name/{shadow}` for a named one. The names
/// are not checked; see [`ShadowTopic::request`] for a checked constructor.
pub fn shadow_topic_prefix(thing_name: &str, shadow_name: Option<&str>) -> String {
    match shadow_name {
        None => format!("$aws/things/{thing_name}/shadow"),
        Some(shadow) => format!("$aws/things/{thing_name}/shadow/name/{shadow}"),
    }
}

impl ShadowTopic {
    /// Parses a topic; `None` if it is not a shadow topic, names an invalid
    /// thing or shadow, or puts `delta`/`documents` under another operation
    /// than `update`.
    pub fn parse(topic: &str) -> Option<Self> {
        let rest = topic.strip_prefix("$aws/things/")?;
        let mut segments = rest.split('/');
        let thing_name = segments.next()?;
        if segments.next()? != "shadow" {
            return None;
        }
        let mut next = segments.next()?;
        let mut shadow_name = None;
        if next == "name" {
            shadow_name = Some(segments.next()?);
            next = segments.next()?;
        }
        let operation = ShadowOperation::from_segment(next)?;
        let response = match segments.next() {
            None => None,
            Some(segment) => Some(ShadowResponse::from_segment(segment)?),
        };
        if segments.next().is_some() {
            return None;
        }
        let parsed = ShadowTopic {
            thing_name: thing_name.to_owned(),
            shadow_name: shadow_name.map(str::to_owned),
            operation,
            response,
        };
        parsed.is_valid().then_some(parsed)
    }

    /// Builds the topic string. The fields are not re-checked: a value built
    /// by hand with an invalid name gives a topic [`ShadowTopic::parse`] refuses.
    pub fn to_topic(&self) -> String {
        let mut topic = self.prefix();
        topic.push('/');
        topic.push_str(self.operation.as_str());
        if let Some(response) = self.response {
            topic.push('/');
            topic.push_str(response.as_str());
        }
        topic
    }

    /// The request topic of `operation` on a thing's classic (`shadow_name`
    /// `None`) or named shadow; `None` if a name is invalid.
    pub fn request(thing_name: &str, shadow_name: Option<&str>, operation: ShadowOperation) -> Option<Self> {
        let topic = ShadowTopic {
            thing_name: thing_name.to_owned(),
            shadow_name: shadow_name.map(str::to_owned),
            operation,
            response: None,
        };
        topic.is_valid().then_some(topic)
    }

    /// The topic the service answers this request on with `response`; `None`
    /// when the operation has no such response (`delta`/`documents` outside `update`).
    pub fn response_topic(&self, response: ShadowResponse) -> Option<Self> {
        self.operation.responses().contains(&response).then(|| ShadowTopic { response: Some(response), ..self.clone() })
    }

    /// Every response topic of this topic's operation: what a client subscribes
    /// to before it publishes the request, since the service only replies on them.
    pub fn response_topics(&self) -> Vec<Self> {
        self.operation
            .responses()
            .iter()
            .map(|&response| ShadowTopic { response: Some(response), ..self.clone() })
            .collect()
    }

    /// The request topic this response belongs to (or a copy of a request topic).
    pub fn request_topic(&self) -> Self {
        ShadowTopic { response: None, ..self.clone() }
    }

    /// Whether this is a request topic (a client publishes to it).
    pub fn is_request(&self) -> bool {
        self.response.is_none()
    }

    /// This shadow's topic prefix (see [`shadow_topic_prefix`]).
    pub fn prefix(&self) -> String {
        shadow_topic_prefix(&self.thing_name, self.shadow_name.as_deref())
    }

    fn is_valid(&self) -> bool {
        is_valid_thing_name(&self.thing_name)
            && self.shadow_name.as_deref().is_none_or(is_valid_shadow_name)
            && self.response.is_none_or(|r| self.operation.responses().contains(&r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_TOPIC_BYTES, MAX_TOPIC_SLASHES};

    fn topic(thing: &str, shadow: Option<&str>, op: ShadowOperation, resp: Option<ShadowResponse>) -> ShadowTopic {
        ShadowTopic { thing_name: thing.into(), shadow_name: shadow.map(Into::into), operation: op, response: resp }
    }

    #[test]
    fn parses_classic_request_and_response_topics() {
        use ShadowOperation::*;
        use ShadowResponse::*;
        let cases = [
            ("$aws/things/T1/shadow/get", topic("T1", None, Get, None)),
            ("$aws/things/T1/shadow/update", topic("T1", None, Update, None)),
            ("$aws/things/T1/shadow/delete", topic("T1", None, Delete, None)),
            ("$aws/things/T1/shadow/get/accepted", topic("T1", None, Get, Some(Accepted))),
            ("$aws/things/T1/shadow/get/rejected", topic("T1", None, Get, Some(Rejected))),
            ("$aws/things/T1/shadow/update/accepted", topic("T1", None, Update, Some(Accepted))),
            ("$aws/things/T1/shadow/update/rejected", topic("T1", None, Update, Some(Rejected))),
            ("$aws/things/T1/shadow/update/delta", topic("T1", None, Update, Some(Delta))),
            ("$aws/things/T1/shadow/update/documents", topic("T1", None, Update, Some(Documents))),
            ("$aws/things/T1/shadow/delete/accepted", topic("T1", None, Delete, Some(Accepted))),
            ("$aws/things/T1/shadow/delete/rejected", topic("T1", None, Delete, Some(Rejected))),
        ];
        for (text, expected) in cases {
            assert_eq!(ShadowTopic::parse(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn parses_named_shadow_topics() {
        use ShadowOperation::*;
        use ShadowResponse::*;
        let cases = [
            ("$aws/things/T1/shadow/name/cfg/get", topic("T1", Some("cfg"), Get, None)),
            ("$aws/things/T1/shadow/name/cfg/update/delta", topic("T1", Some("cfg"), Update, Some(Delta))),
            ("$aws/things/T1/shadow/name/cfg/update/documents", topic("T1", Some("cfg"), Update, Some(Documents))),
            ("$aws/things/T1/shadow/name/cfg/delete/rejected", topic("T1", Some("cfg"), Delete, Some(Rejected))),
            // "name" is itself a valid shadow name.
            ("$aws/things/T1/shadow/name/name/get", topic("T1", Some("name"), Get, None)),
            // AWS's reserved shadows start with `$`.
            ("$aws/things/T1/shadow/name/$package/get", topic("T1", Some("$package"), Get, None)),
        ];
        for (text, expected) in cases {
            assert_eq!(ShadowTopic::parse(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn delta_and_documents_exist_only_under_update() {
        for text in [
            "$aws/things/T1/shadow/get/delta",
            "$aws/things/T1/shadow/get/documents",
            "$aws/things/T1/shadow/delete/delta",
            "$aws/things/T1/shadow/name/s/delete/documents",
        ] {
            assert_eq!(ShadowTopic::parse(text), None, "{text}");
        }
        let get = ShadowTopic::request("T1", None, ShadowOperation::Get).unwrap();
        assert_eq!(get.response_topic(ShadowResponse::Delta), None);
        assert_eq!(get.response_topic(ShadowResponse::Documents), None);
    }

    #[test]
    fn rejects_invalid_thing_names() {
        let too_long = "a".repeat(129);
        for thing in ["", "a b", "a.b", "a+b", "a#b", "é", "a$b", too_long.as_str()] {
            let text = format!("$aws/things/{thing}/shadow/get");
            assert_eq!(ShadowTopic::parse(&text), None, "{thing:?}");
            assert_eq!(ShadowTopic::request(thing, None, ShadowOperation::Get), None, "{thing:?}");
        }
        let longest = "a".repeat(128);
        assert!(ShadowTopic::parse(&format!("$aws/things/{longest}/shadow/get")).is_some());
        assert!(is_valid_thing_name("Thing:1_a-B"));
    }

    #[test]
    fn rejects_invalid_shadow_names() {
        let too_long = "s".repeat(65);
        for shadow in ["", "a b", "a.b", "a+b", "é", too_long.as_str()] {
            let text = format!("$aws/things/T1/shadow/name/{shadow}/get");
            assert_eq!(ShadowTopic::parse(&text), None, "{shadow:?}");
            assert_eq!(ShadowTopic::request("T1", Some(shadow), ShadowOperation::Get), None, "{shadow:?}");
        }
        let longest = "s".repeat(64);
        assert!(ShadowTopic::parse(&format!("$aws/things/T1/shadow/name/{longest}/get")).is_some());
        assert!(is_valid_shadow_name("Cfg:1_a-B"));
    }

    #[test]
    fn rejects_topics_that_are_not_shadow_topics() {
        for text in [
            "",
            "$aws/things/T1/shadow",
            "$aws/things/T1/shadow/",
            "$aws/things/T1/shadow/get/",
            "$aws/things/T1/shadow/list",
            "$aws/things/T1/shadow/get/accepted/extra",
            "$aws/things/T1/shadow/name/s",
            "$aws/things/T1/shadow/name/s/",
            "$aws/things/T1/shadow/name/s/get/accepted/x",
            "$aws/things/T1/shadows/get",
            "$aws/things/T1/jobs/get",
            "aws/things/T1/shadow/get",
            "$AWS/things/T1/shadow/get",
            "/$aws/things/T1/shadow/get",
            "$aws/things//shadow/get",
            "$aws/things/T1/shadow/update/Accepted",
        ] {
            assert_eq!(ShadowTopic::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn to_topic_round_trips_every_topic() {
        for shadow in [None, Some("cfg")] {
            for op in ShadowOperation::ALL {
                let request = ShadowTopic::request("T1", shadow, op).unwrap();
                let text = request.to_topic();
                assert_eq!(ShadowTopic::parse(&text).as_ref(), Some(&request), "{text}");
                for response in request.response_topics() {
                    let text = response.to_topic();
                    assert_eq!(ShadowTopic::parse(&text).as_ref(), Some(&response), "{text}");
                }
            }
        }
        let named = ShadowTopic::request("T1", Some("cfg"), ShadowOperation::Update).unwrap();
        assert_eq!(named.to_topic(), "$aws/things/T1/shadow/name/cfg/update");
        assert_eq!(
            named.response_topic(ShadowResponse::Documents).unwrap().to_topic(),
            "$aws/things/T1/shadow/name/cfg/update/documents"
        );
    }

    #[test]
    fn response_topics_list_what_a_client_must_subscribe_to() {
        let update = ShadowTopic::request("T1", None, ShadowOperation::Update).unwrap();
        let topics: Vec<String> = update.response_topics().iter().map(ShadowTopic::to_topic).collect();
        assert_eq!(
            topics,
            [
                "$aws/things/T1/shadow/update/accepted",
                "$aws/things/T1/shadow/update/rejected",
                "$aws/things/T1/shadow/update/delta",
                "$aws/things/T1/shadow/update/documents",
            ]
        );
        let get = ShadowTopic::request("T1", None, ShadowOperation::Get).unwrap();
        assert_eq!(get.response_topics().len(), 2);
        let accepted = get.response_topic(ShadowResponse::Accepted).unwrap();
        assert!(!accepted.is_request());
        assert_eq!(accepted.request_topic(), get);
    }

    #[test]
    fn prefix_names_classic_and_named_shadows() {
        assert_eq!(shadow_topic_prefix("T1", None), "$aws/things/T1/shadow");
        assert_eq!(shadow_topic_prefix("T1", Some("cfg")), "$aws/things/T1/shadow/name/cfg");
        assert_eq!(
            ShadowTopic::request("T1", Some("cfg"), ShadowOperation::Get).unwrap().prefix(),
            "$aws/things/T1/shadow/name/cfg"
        );
    }

    #[test]
    fn longest_named_response_topic_fits_the_broker_limits() {
        let thing = "t".repeat(MAX_THING_NAME_BYTES);
        let shadow = "s".repeat(SHADOW_MAX_NAME_BYTES);
        let request = ShadowTopic::request(&thing, Some(&shadow), ShadowOperation::Update).unwrap();
        for response in request.response_topics() {
            let text = response.to_topic();
            assert!(text.len() <= MAX_TOPIC_BYTES, "{} bytes", text.len());
            assert_eq!(text.matches('/').count(), MAX_TOPIC_SLASHES, "{text}");
        }
    }
}
