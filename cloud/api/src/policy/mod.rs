//! AWS IoT Core policies: documents, resource ARNs, policy variables and
//! evaluation. Follows "AWS IoT Core policies" in the AWS IoT Core Developer
//! Guide (policy actions, action resources, policy variables, evaluation).

pub mod arn;
pub mod document;
pub mod eval;

pub use document::{PolicyDocument, PolicyError};
pub use eval::{Action, AuthContext, Decision, evaluate};
