//! Certificate rotation, the core's side: a new key made in the core's key store, a certificate
//! for it from CreateCertificateFromCsr over the core's own MQTT connection, the connection
//! moved to it ([`super::bridge::MqttBridge::switch_identity`]), proven, and committed — or
//! rolled back to the old certificate. Follows AWS IoT's documented rotation steps (AWS IoT
//! Developer Guide, "Device provisioning MQTT API" and the Jobs MQTT API); what the cloud does
//! (attach the new certificate to the thing and its policies, retire the old one) is the
//! operator's cloud-side step, because a device may not call UpdateCertificate.
//!
//! Layout: [`machine`] is the pure state machine (events in, the record to persist and the steps
//! to take out); [`record`] keeps its record durably under the core's root, written before every
//! step that has an effect in the cloud or on disk, so a core killed at any step resumes or
//! rolls back at its next start ([`machine::on_start`]); [`service`] is the thin shell that takes
//! rotation jobs and does the steps over the core's one connection; [`plugin`] is how the core
//! presents it, the built-in plugin component `com.example.CertificateRotator`.

pub mod machine;
pub mod plugin;
pub mod record;
pub mod service;
