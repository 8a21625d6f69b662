//! The rotation as the core presents it: the plugin component `com.example.CertificateRotator`.
//!
//! In Greengrass a component that must reach into the nucleus — here, to move the nucleus's
//! one MQTT connection to a new certificate without restarting components — is a plugin
//! (`ComponentType: aws.greengrass.plugin`), loaded into the nucleus's process; a generic
//! component can only write new files and restart the nucleus, which is what AWS's own labs
//! rotator does. This core is a Rust binary, so its plugins are compiled in: with rotation on
//! (`--certificate-rotation`) the core provides `com.example.CertificateRotator` as a built-in
//! component — recipes may depend on it, `--update-config` configures it, fleet status lists it
//! — and runs [`super::service`] as its body.
//!
//! Configuration (all optional; `--update-config '{"com.example.CertificateRotator": {"MERGE":
//! {…}}}'`):
//! - `proofDeadlineSeconds`: how long a new certificate has to prove itself (default 60);
//! - `attachTimeoutSeconds`: how long the cloud has to attach it (default 300).

use std::time::Duration;

use serde_json::Value;

use crate::core::options::RotationOptions;
use crate::recipe::ConfigurationUpdate;

/// The component's name.
pub const CERTIFICATE_ROTATOR: &str = "com.example.CertificateRotator";
/// Its version.
pub const ROTATOR_VERSION: &str = "1.0.0";

/// Applies the component's configuration update (if any) to `options`.
pub fn configure(update: Option<&ConfigurationUpdate>, options: &mut RotationOptions) -> Result<(), String> {
    let config = crate::core::recipe_store::builtin_configuration(update)?;
    if let Some(d) = seconds(&config, "proofDeadlineSeconds")? {
        options.proof_deadline = d;
    }
    if let Some(d) = seconds(&config, "attachTimeoutSeconds")? {
        options.attach_timeout = d;
    }
    Ok(())
}

/// A positive whole number of seconds under `key` (a number or a numeric string, as recipe
/// configuration often carries them).
fn seconds(config: &Value, key: &str) -> Result<Option<Duration>, String> {
    match config.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|n| (1..=86_400).contains(n))
            .map(|n| Some(Duration::from_secs(n)))
            .ok_or_else(|| {
                format!("{CERTIFICATE_ROTATOR}: {key} must be a number of seconds from 1 to 86400, not {v}")
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::key_store::KeyStore;

    fn update(merge: Value) -> ConfigurationUpdate {
        ConfigurationUpdate::from_deployment(Some(&merge.to_string()), Vec::new()).unwrap()
    }

    fn options() -> RotationOptions {
        RotationOptions::new(KeyStore::files(std::env::temp_dir()))
    }

    #[test]
    fn the_deadlines_come_from_the_configuration_and_default_without_it() {
        let mut o = options();
        let (proof, attach) = (o.proof_deadline, o.attach_timeout);
        configure(None, &mut o).unwrap();
        assert_eq!((o.proof_deadline, o.attach_timeout), (proof, attach));
        configure(Some(&update(serde_json::json!({"proofDeadlineSeconds": 5, "attachTimeoutSeconds": "90"}))), &mut o)
            .unwrap();
        assert_eq!((o.proof_deadline, o.attach_timeout), (Duration::from_secs(5), Duration::from_secs(90)));
    }

    #[test]
    fn a_deadline_that_is_not_a_positive_number_of_seconds_is_refused_with_its_key() {
        for bad in [serde_json::json!(0), serde_json::json!(-3), serde_json::json!("soon"), serde_json::json!(86_401)] {
            let err =
                configure(Some(&update(serde_json::json!({"proofDeadlineSeconds": bad}))), &mut options()).unwrap_err();
            assert!(err.contains("proofDeadlineSeconds must be a number of seconds"), "{err}");
        }
    }
}
