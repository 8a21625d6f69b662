//! AWS IoT Core policies: documents, resource ARNs, policy variables and
//! evaluation. Follows "AWS IoT Core policies" in the AWS IoT Core Developer
//! Guide (policy actions, action resources, policy variables, evaluation).

pub mod arn;
pub mod audit;
pub mod document;
pub mod eval;
mod pattern;

pub use audit::overly_permissive;
pub use document::{Effect, PolicyDocument, PolicyError, Statement};
pub use eval::{Action, AuthContext, Decision, evaluate, evaluate_action};
