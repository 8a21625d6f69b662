//! Component ARNs (Smithy model `greengrassv2`, shapes `ComponentARN` and
//! `ComponentVersionARN`):
//! `arn:{partition}:greengrass:{region}:{account}:components:{name}` and
//! `…:components:{name}:versions:{version}`; the account is digits, or `aws` for public
//! components. A component name never holds `:` in an ARN (the model's `[^:]+`).

/// A parsed component or component-version ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentArn {
    /// Region.
    pub region: String,
    /// Account id, or `aws` for a public component.
    pub account: String,
    /// Component name.
    pub name: String,
    /// Component version; `None` in a component ARN.
    pub version: Option<String>,
}

/// Why a string is not the ARN an operation expects: a `ValidationException` on the `arn` field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{arn:?} is not a component{what} ARN (arn:aws:greengrass:REGION:ACCOUNT:components:NAME{tail})")]
pub struct ArnError {
    arn: String,
    what: &'static str,
    tail: &'static str,
}

impl ComponentArn {
    /// Parses `…:components:NAME:versions:VERSION`.
    pub fn parse_version(arn: &str) -> Result<Self, ArnError> {
        Self::parse_expecting(arn, true)
    }

    /// Parses `…:components:NAME` (no version).
    pub fn parse_component(arn: &str) -> Result<Self, ArnError> {
        Self::parse_expecting(arn, false)
    }

    fn parse_expecting(arn: &str, versioned: bool) -> Result<Self, ArnError> {
        match Self::parse_any(arn) {
            Some(parsed) if parsed.version.is_some() == versioned => Ok(parsed),
            _ => Err(ArnError {
                arn: arn.to_string(),
                what: if versioned { " version" } else { "" },
                tail: if versioned { ":versions:VERSION" } else { "" },
            }),
        }
    }

    fn parse_any(arn: &str) -> Option<Self> {
        let parts: Vec<&str> = arn.split(':').collect();
        let nonempty = |s: &&str| !s.is_empty();
        match parts.as_slice() {
            ["arn", _partition, "greengrass", region, account, "components", name, rest @ ..] => {
                let account_ok =
                    *account == "aws" || (!account.is_empty() && account.bytes().all(|b| b.is_ascii_digit()));
                if !account_ok || !nonempty(name) {
                    return None;
                }
                let version = match rest {
                    [] => None,
                    ["versions", version] if nonempty(version) => Some(version.to_string()),
                    _ => return None,
                };
                Some(ComponentArn {
                    region: region.to_string(),
                    account: account.to_string(),
                    name: name.to_string(),
                    version,
                })
            }
            _ => None,
        }
    }
}

/// `arn:aws:greengrass:{region}:{account}:components:{name}`.
pub fn component_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:aws:greengrass:{region}:{account}:components:{name}")
}

pub use cloud_api::policy::greengrass::component_version_arn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_arns_parse_and_component_arns_do_not() {
        let v = ComponentArn::parse_version(
            "arn:aws:greengrass:us-east-1:000000000000:components:com.example.A:versions:1.0.0",
        )
        .unwrap();
        assert_eq!(
            (v.name.as_str(), v.version.as_deref(), v.account.as_str()),
            ("com.example.A", Some("1.0.0"), "000000000000")
        );
        let public = ComponentArn::parse_version(
            "arn:aws:greengrass:us-east-1:aws:components:aws.greengrass.Nucleus:versions:2.12.0",
        );
        assert_eq!(public.unwrap().account, "aws");
        let c = ComponentArn::parse_component("arn:aws:greengrass:us-east-1:000000000000:components:com.example.A")
            .unwrap();
        assert_eq!((c.name.as_str(), c.version), ("com.example.A", None));
    }

    #[test]
    fn malformed_arns_are_refused_with_the_expected_form() {
        for bad in [
            "",
            "com.example.A",
            "arn:aws:iot:us-east-1:000000000000:thing/x",
            "arn:aws:greengrass:us-east-1:00000000000x:components:A:versions:1.0.0",
            "arn:aws:greengrass:us-east-1:000000000000:components::versions:1.0.0",
            "arn:aws:greengrass:us-east-1:000000000000:components:A:versions:",
            "arn:aws:greengrass:us-east-1:000000000000:components:A:versions",
            "arn:aws:greengrass:us-east-1:000000000000:components:A:revisions:1",
            "arn:aws:greengrass:us-east-1:000000000000:components:A",
            "arn:aws:greengrass:us-east-1:000000000000:components:A:versions:1.0.0:extra",
        ] {
            let e = ComponentArn::parse_version(bad).unwrap_err();
            assert!(e.to_string().contains(":versions:VERSION"), "{bad:?}: {e}");
        }
        assert!(
            ComponentArn::parse_component("arn:aws:greengrass:us-east-1:000000000000:components:A:versions:1.0.0")
                .is_err()
        );
        assert!(ComponentArn::parse_component("arn:aws:greengrass:us-east-1:000000000000:deployments:A").is_err());
    }
}
