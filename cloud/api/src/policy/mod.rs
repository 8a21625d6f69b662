//! AWS IoT Core policies: documents, resource ARNs, policy variables and
//! evaluation. Follows "AWS IoT Core policies" in the AWS IoT Core Developer
//! Guide (policy actions, action resources, policy variables, evaluation).

pub mod arn;
pub mod audit;
pub mod document;
pub mod eval;
pub mod greengrass;
mod pattern;

pub use audit::overly_permissive;
pub use document::{Effect, PolicyDocument, PolicyError, Statement};
pub use eval::{Action, AuthContext, CredentialsIot, Decision, evaluate, evaluate_action};
pub use greengrass::{GreengrassAction, evaluate_greengrass};

/// Whether `name` is a valid IoT policy name: `[\w+=,.@-]{1,128}` (ASCII word characters), as
/// CreatePolicy requires.
pub fn is_valid_policy_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'=' | b',' | b'.' | b'@' | b'-'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn policy_names_follow_the_create_policy_pattern() {
        assert!(super::is_valid_policy_name("Greengrass.Policy@v1+=,_-"));
        for bad in ["", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(!super::is_valid_policy_name(bad), "{bad:?}");
        }
    }
}
