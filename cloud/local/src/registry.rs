//! The registry: things, thing types, thing groups, certificates, policies and
//! their attachments, as AWS IoT Core keeps them. State lives in memory for fast
//! authorization and is written through to the [`Store`] on every change.

use std::collections::BTreeMap;
use std::sync::Arc;

use cloud_api::policy::{Action, Decision};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::ca::LocalCa;
use crate::store::Store;
use crate::time::SharedClock;

/// A registry error, named after the AWS exception it becomes.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `ResourceNotFoundException` (404).
    #[error("{0}")]
    NotFound(String),
    /// `ResourceAlreadyExistsException` (409): the resource exists with different properties.
    #[error("{message}")]
    AlreadyExists {
        /// Message text.
        message: String,
        /// Id of the existing resource.
        resource_id: String,
        /// ARN of the existing resource.
        resource_arn: String,
    },
    /// `InvalidRequestException` (400).
    #[error("{0}")]
    InvalidRequest(String),
    /// `MalformedPolicyException` (400).
    #[error("{0}")]
    MalformedPolicy(String),
    /// `DeleteConflictException` (409): still attached or referenced.
    #[error("{0}")]
    DeleteConflict(String),
    /// `CertificateStateException` (406): the certificate's status forbids the operation.
    #[error("{0}")]
    CertificateState(String),
    /// `CertificateValidationException` (400): a CSR or certificate that cannot be used.
    #[error("{0}")]
    CertificateValidation(String),
    /// `VersionConflictException` (409): `expectedVersion` does not match.
    #[error("{0}")]
    VersionConflict(String),
    /// `InternalFailureException` (500): storage failed; nothing was changed.
    #[error("internal failure: {0}")]
    Internal(String),
}

/// A registered thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thing {
    /// Name.
    pub name: String,
    /// Unique id (a UUID).
    pub id: String,
    /// ARN.
    pub arn: String,
    /// Thing type, if any.
    pub thing_type_name: Option<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Version, starting at 1, bumped by every update.
    pub version: i64,
}

/// Thing type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingType {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// ARN.
    pub arn: String,
    /// Description.
    pub description: Option<String>,
    /// Searchable attribute names.
    pub searchable_attributes: Vec<String>,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
    /// Whether deprecated.
    pub deprecated: bool,
}

/// Thing group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingGroup {
    /// Name.
    pub name: String,
    /// Id.
    pub id: String,
    /// ARN.
    pub arn: String,
    /// Description.
    pub description: Option<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Parent group.
    pub parent_group_name: Option<String>,
    /// Member thing names.
    pub things: Vec<String>,
    /// Version.
    pub version: i64,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
}

/// An IoT policy (only its default version is modelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// The document as given.
    pub document: String,
    /// Default version id ("1").
    pub default_version_id: String,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
    /// Last modified, epoch seconds.
    pub last_modified_date: u64,
}

/// Certificate status, as AWS names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CertificateStatus {
    /// May connect.
    Active,
    /// May not connect.
    Inactive,
    /// Revoked.
    Revoked,
    /// Waiting for a transfer.
    PendingTransfer,
    /// Registered, waiting for activation.
    PendingActivation,
    /// Registered with an unregistered CA.
    RegisterInactive,
}

impl CertificateStatus {
    /// AWS's spelling (`ACTIVE`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            CertificateStatus::Active => "ACTIVE",
            CertificateStatus::Inactive => "INACTIVE",
            CertificateStatus::Revoked => "REVOKED",
            CertificateStatus::PendingTransfer => "PENDING_TRANSFER",
            CertificateStatus::PendingActivation => "PENDING_ACTIVATION",
            CertificateStatus::RegisterInactive => "REGISTER_INACTIVE",
        }
    }

    /// Parses AWS's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ACTIVE" => CertificateStatus::Active,
            "INACTIVE" => CertificateStatus::Inactive,
            "REVOKED" => CertificateStatus::Revoked,
            "PENDING_TRANSFER" => CertificateStatus::PendingTransfer,
            "PENDING_ACTIVATION" => CertificateStatus::PendingActivation,
            "REGISTER_INACTIVE" => CertificateStatus::RegisterInactive,
            _ => return None,
        })
    }
}

/// A registered device certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Id: lowercase hex SHA-256 of the DER certificate.
    pub id: String,
    /// ARN.
    pub arn: String,
    /// PEM.
    pub pem: String,
    /// Status.
    pub status: CertificateStatus,
    /// Creation date, epoch seconds.
    pub creation_date: u64,
    /// Last modified, epoch seconds.
    pub last_modified_date: u64,
    /// Validity start, epoch seconds.
    pub not_before: u64,
    /// Validity end, epoch seconds.
    pub not_after: u64,
    /// Subject attributes (`CommonName`, …) for policy variables.
    pub subject: BTreeMap<String, String>,
}

/// A freshly made key pair (CreateKeysAndCertificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// Public key, PEM (SubjectPublicKeyInfo).
    pub public_key_pem: String,
    /// Private key, PEM (PKCS#8).
    pub private_key_pem: String,
}

/// A change other parts of the local cloud react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// A certificate's status changed.
    CertificateStatusChanged {
        /// Certificate id.
        certificate_id: String,
        /// New status.
        status: CertificateStatus,
    },
    /// A certificate was deleted.
    CertificateDeleted {
        /// Certificate id.
        certificate_id: String,
    },
}

/// Filter and paging for ListThings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListThingsQuery {
    /// Only things with this attribute…
    pub attribute_name: Option<String>,
    /// …set to this value.
    pub attribute_value: Option<String>,
    /// Only things of this type.
    pub thing_type_name: Option<String>,
    /// Paging token from a previous page.
    pub next_token: Option<String>,
    /// Page size (default 50, at most 250).
    pub max_results: Option<usize>,
}

/// A request to authorize one MQTT operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest<'a> {
    /// Certificate id of the connection.
    pub certificate_id: &'a str,
    /// MQTT client id.
    pub client_id: &'a str,
    /// The action.
    pub action: Action,
    /// The resource name without the ARN prefix, e.g. `topic/a/b` or `client/x`.
    pub resource: &'a str,
}

/// The registry.
pub struct Registry {
    _store: Store,
    _ca: Arc<LocalCa>,
    _clock: SharedClock,
    events: broadcast::Sender<RegistryEvent>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    /// Loads the registry from the store.
    pub fn open(store: Store, ca: Arc<LocalCa>, clock: SharedClock, region: &str, account_id: &str) -> Result<Self, RegistryError> {
        let _ = (region, account_id);
        let (events, _) = broadcast::channel(256);
        Ok(Registry { _store: store, _ca: ca, _clock: clock, events })
    }

    /// Region of every ARN.
    pub fn region(&self) -> &str {
        todo!()
    }

    /// Account id of every ARN.
    pub fn account_id(&self) -> &str {
        todo!()
    }

    /// Registry changes, for the broker to drop connections of deactivated certificates.
    pub fn events(&self) -> broadcast::Receiver<RegistryEvent> {
        self.events.subscribe()
    }

    // ---- things ----

    /// CreateThing. Idempotent when the same properties are given; otherwise `AlreadyExists`.
    pub fn create_thing(&self, _name: &str, _thing_type_name: Option<&str>, _attributes: BTreeMap<String, String>) -> Result<Thing, RegistryError> {
        todo!()
    }

    /// DescribeThing.
    pub fn describe_thing(&self, _name: &str) -> Result<Thing, RegistryError> {
        todo!()
    }

    /// ListThings: a page of things and the next token.
    pub fn list_things(&self, _query: &ListThingsQuery) -> Result<(Vec<Thing>, Option<String>), RegistryError> {
        todo!()
    }

    /// UpdateThing. `attributes`: `(attributes, merge)`; an empty value removes the attribute when merging.
    pub fn update_thing(
        &self,
        _name: &str,
        _thing_type_name: Option<&str>,
        _remove_thing_type: bool,
        _attributes: Option<(BTreeMap<String, String>, bool)>,
        _expected_version: Option<i64>,
    ) -> Result<(), RegistryError> {
        todo!()
    }

    /// DeleteThing. Deleting a missing thing succeeds, as on AWS.
    pub fn delete_thing(&self, _name: &str, _expected_version: Option<i64>) -> Result<(), RegistryError> {
        todo!()
    }

    /// CreateThingType.
    pub fn create_thing_type(&self, _name: &str, _description: Option<&str>, _searchable_attributes: Vec<String>) -> Result<ThingType, RegistryError> {
        todo!()
    }

    /// DescribeThingType.
    pub fn describe_thing_type(&self, _name: &str) -> Result<ThingType, RegistryError> {
        todo!()
    }

    /// CreateThingGroup.
    pub fn create_thing_group(&self, _name: &str, _parent: Option<&str>, _description: Option<&str>, _attributes: BTreeMap<String, String>) -> Result<ThingGroup, RegistryError> {
        todo!()
    }

    /// DescribeThingGroup.
    pub fn describe_thing_group(&self, _name: &str) -> Result<ThingGroup, RegistryError> {
        todo!()
    }

    /// AddThingToThingGroup.
    pub fn add_thing_to_thing_group(&self, _group: &str, _thing: &str) -> Result<(), RegistryError> {
        todo!()
    }

    // ---- policies ----

    /// CreatePolicy: the document is validated (`MalformedPolicy` if not valid).
    pub fn create_policy(&self, _name: &str, _document: &str) -> Result<Policy, RegistryError> {
        todo!()
    }

    /// GetPolicy.
    pub fn get_policy(&self, _name: &str) -> Result<Policy, RegistryError> {
        todo!()
    }

    /// ListPolicies, by name.
    pub fn list_policies(&self) -> Vec<Policy> {
        todo!()
    }

    /// DeletePolicy: `DeleteConflict` while attached.
    pub fn delete_policy(&self, _name: &str) -> Result<(), RegistryError> {
        todo!()
    }

    /// AttachPolicy to a target ARN (certificate ARN or thing group ARN).
    pub fn attach_policy(&self, _policy_name: &str, _target: &str) -> Result<(), RegistryError> {
        todo!()
    }

    /// DetachPolicy.
    pub fn detach_policy(&self, _policy_name: &str, _target: &str) -> Result<(), RegistryError> {
        todo!()
    }

    /// ListAttachedPolicies of a target ARN.
    pub fn list_attached_policies(&self, _target: &str) -> Result<Vec<Policy>, RegistryError> {
        todo!()
    }

    // ---- certificates ----

    /// CreateKeysAndCertificate: a new EC P-256 key pair and a certificate signed by the local CA.
    pub fn create_keys_and_certificate(&self, _set_as_active: bool) -> Result<(Certificate, KeyPair), RegistryError> {
        todo!()
    }

    /// CreateCertificateFromCsr: a certificate for the CSR's own public key, signed by the local CA.
    pub fn create_certificate_from_csr(&self, _csr_pem: &str, _set_as_active: bool) -> Result<Certificate, RegistryError> {
        todo!()
    }

    /// DescribeCertificate.
    pub fn describe_certificate(&self, _id: &str) -> Result<Certificate, RegistryError> {
        todo!()
    }

    /// ListCertificates, newest first.
    pub fn list_certificates(&self) -> Vec<Certificate> {
        todo!()
    }

    /// UpdateCertificate: a status change is broadcast as a [`RegistryEvent`].
    pub fn update_certificate(&self, _id: &str, _status: CertificateStatus) -> Result<(), RegistryError> {
        todo!()
    }

    /// DeleteCertificate: refused while ACTIVE (`CertificateState`) or attached (`DeleteConflict`) unless forced.
    pub fn delete_certificate(&self, _id: &str, _force: bool) -> Result<(), RegistryError> {
        todo!()
    }

    /// AttachThingPrincipal (principal: a certificate ARN).
    pub fn attach_thing_principal(&self, _thing: &str, _principal: &str) -> Result<(), RegistryError> {
        todo!()
    }

    /// DetachThingPrincipal.
    pub fn detach_thing_principal(&self, _thing: &str, _principal: &str) -> Result<(), RegistryError> {
        todo!()
    }

    /// ListThingPrincipals: the principal ARNs attached to a thing.
    pub fn list_thing_principals(&self, _thing: &str) -> Result<Vec<String>, RegistryError> {
        todo!()
    }

    // ---- authorization (broker) ----

    /// Status of a certificate, `None` if not registered.
    pub fn certificate_status(&self, _id: &str) -> Option<CertificateStatus> {
        todo!()
    }

    /// Evaluates the policies attached to the certificate (and to groups of its thing) for one operation.
    pub fn authorize(&self, _req: &AuthRequest<'_>) -> Decision {
        todo!()
    }
}
