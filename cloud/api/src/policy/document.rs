//! IoT policy documents: `{"Version":"2012-10-17","Statement":[…]}`.

/// Why a policy document is refused (CreatePolicy answers `MalformedPolicyException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed policy: {0}")]
pub struct PolicyError(pub String);

/// A parsed, validated IoT policy document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    // H2: statements, effects, actions, resources, conditions.
}

impl PolicyDocument {
    /// Parses and validates a policy document as CreatePolicy does.
    pub fn parse(_json: &str) -> Result<Self, PolicyError> {
        todo!("H2")
    }
}
