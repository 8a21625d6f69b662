//! IAM, the subset the solution needs: roles with inline policies, the temporary credentials
//! the AWS IoT credentials provider issues for them, and who a signed request comes from.
//!
//! Every HTTP request to a service other than S3 is authenticated here ([`auth`]): its SigV4
//! signature ([`sigv4`]) is checked against the administrator's key pair or against live
//! temporary credentials (with their session token), and a caller with temporary credentials
//! may only do what its role's policies allow ([`actions`] names the IAM action and resource
//! of each operation; evaluation is `cloud_api::policy`'s, explicit Deny first, default deny).
//! S3 does the same through its own front end (`crate::s3`). The administrator is the
//! account's root: it may do everything.
//!
//! # Layout
//! - [`sigv4`]: signature verification (pure).
//! - [`roles`]: roles, inline policies and sessions, kept in `state.sqlite`.
//! - [`query`]: the IAM API on the wire (awsQuery: form-encoded requests, XML answers).
//! - [`auth`]: the middleware that authenticates and authorizes requests.
//! - [`actions`]: the IAM action and resource of each HTTP operation of the local cloud.
//!
//! What it does not do: users, groups, managed policies, permission boundaries, STS's own API
//! (AssumeRole and friends), resource-based policies other than a role's trust policy, or
//! condition keys other than the `credentials-iot:` variables.

pub mod actions;
pub mod auth;
pub mod query;
pub mod roles;
pub mod sigv4;

pub use roles::{Iam, IamError, Principal, RoleSession, Session};
