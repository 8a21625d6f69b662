//! Provisioning a pump core device in AWS IoT Core through the AWS SDK for Rust (`aws-sdk-iot`):
//! the thing, a key pair made on this machine with a certificate issued from its CSR, and a
//! least-privilege thing-scoped IoT policy shipped as a file. The same code, credentials chain and
//! flags serve real AWS and the local cloud; only the endpoint differs.
//!
//! # Layout
//! - [`device`]: [`provision_core_device`] and [`deprovision`], idempotent.
//! - [`policy`]: the shipped policy, its placeholders, validation and the overly-permissive audit.
//! - [`identity`]: key pair and CSR.
//! - [`output`]: the output directory, written atomically.
//! - [`client`]: the `aws-sdk-iot` client from the default chain, with a rustls/ring HTTP client.
//! - [`error`]: errors sorted by what the caller does next.

pub mod client;
pub mod device;
pub mod error;
pub mod identity;
pub mod output;
pub mod policy;

pub use client::{ClientOptions, iot_client};
pub use device::{
    Change, CoreDeviceSpec, DEFAULT_MQTT_PORT, DEFAULT_POLICY_NAME, Deprovisioned, ProvisionedDevice, deprovision,
    provision_core_device,
};
pub use error::{NextStep, ProvisionError};
pub use policy::PolicySource;
