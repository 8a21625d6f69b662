//! Policy evaluation: explicit Deny beats Allow, default deny.

use std::collections::BTreeMap;

use super::PolicyDocument;

/// An IoT action a principal asks to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `iot:Connect`, resource `client/{clientId}`.
    Connect,
    /// `iot:Publish`, resource `topic/{topic}`.
    Publish,
    /// `iot:Subscribe`, resource `topicfilter/{filter}`.
    Subscribe,
    /// `iot:Receive`, resource `topic/{topic}`.
    Receive,
    /// `iot:RetainPublish`, resource `topic/{topic}`.
    RetainPublish,
    /// `iot:GetThingShadow`, resource `thing/{thing}`.
    GetThingShadow,
    /// `iot:UpdateThingShadow`, resource `thing/{thing}`.
    UpdateThingShadow,
    /// `iot:DeleteThingShadow`, resource `thing/{thing}`.
    DeleteThingShadow,
    /// `iot:ListNamedShadowsForThing`, resource `thing/{thing}`.
    ListNamedShadowsForThing,
    /// `iot:AssumeRoleWithCertificate`, resource `rolealias/{alias}`.
    AssumeRoleWithCertificate,
}

impl Action {
    /// The action's name in policies, e.g. `iot:Publish`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Connect => "iot:Connect",
            Action::Publish => "iot:Publish",
            Action::Subscribe => "iot:Subscribe",
            Action::Receive => "iot:Receive",
            Action::RetainPublish => "iot:RetainPublish",
            Action::GetThingShadow => "iot:GetThingShadow",
            Action::UpdateThingShadow => "iot:UpdateThingShadow",
            Action::DeleteThingShadow => "iot:DeleteThingShadow",
            Action::ListNamedShadowsForThing => "iot:ListNamedShadowsForThing",
            Action::AssumeRoleWithCertificate => "iot:AssumeRoleWithCertificate",
        }
    }
}

/// What is known about the principal and its connection, for policy variables and conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthContext {
    /// Region of the ARNs, e.g. `us-east-1`.
    pub region: String,
    /// Account id of the ARNs.
    pub account_id: String,
    /// The MQTT client id (`${iot:ClientId}`), when connected over MQTT.
    pub client_id: Option<String>,
    /// The thing the connection is evaluated for: the thing attached to the
    /// certificate whose name equals the client id (`${iot:Connection.Thing.ThingName}`).
    pub thing_name: Option<String>,
    /// That thing's type (`${iot:Connection.Thing.ThingTypeName}`).
    pub thing_type_name: Option<String>,
    /// That thing's attributes (`${iot:Connection.Thing.Attributes[name]}`).
    pub thing_attributes: BTreeMap<String, String>,
    /// `iot:Connection.Thing.IsAttached`: a thing named like the client id is attached to the certificate.
    pub is_attached: bool,
    /// The certificate id of the principal.
    pub certificate_id: Option<String>,
    /// Subject attributes of the certificate, by name (`CommonName`, `Organization`, …).
    pub certificate_subject: BTreeMap<String, String>,
}

/// The outcome of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An Allow statement matched and no Deny did.
    Allow,
    /// A Deny statement matched.
    ExplicitDeny,
    /// Nothing matched: denied by default.
    ImplicitDeny,
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Evaluates `action` on `resource` (a full ARN) for a principal with these policies.
pub fn evaluate(_policies: &[PolicyDocument], _action: Action, _resource: &str, _ctx: &AuthContext) -> Decision {
    todo!("H2")
}
