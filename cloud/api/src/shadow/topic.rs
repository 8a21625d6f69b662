//! Shadow topic names: `$aws/things/{thing}/shadow[/name/{shadow}]/{op}[/{response}]`.

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

impl ShadowTopic {
    /// Parses a topic; `None` if it is not a shadow topic.
    pub fn parse(_topic: &str) -> Option<Self> {
        todo!("H1")
    }

    /// Builds the topic string.
    pub fn to_topic(&self) -> String {
        todo!("H1")
    }
}
