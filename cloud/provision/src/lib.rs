//! Provisioning a pump core device in AWS IoT Core through the AWS SDK for Rust (`aws-sdk-iot`):
//! the thing, a key pair made on this machine with a certificate issued from its CSR, and a
//! least-privilege thing-scoped IoT policy shipped as a file; then building, publishing
//! (`aws-sdk-s3`, `aws-sdk-greengrassv2`) and deploying its Greengrass components. The same code,
//! credentials chain and flags serve real AWS and the local cloud; only the endpoint differs.
//!
//! # Layout
//! - [`device`]: [`provision_core_device`] and [`deprovision`], idempotent.
//! - [`policy`]: the shipped policy, its placeholders, validation and the overly-permissive audit.
//! - [`auditors`]: the dashboard's sign-in: a Cognito user pool, app client and auditor user.
//! - [`audit`]: the security audit of the account (policies, certificates, role aliases), Device Defender style;
//!   and the service-delivery audit (the `audit` binary): checklist, case study, architecture and evidence from the live deployment.
//! - [`component`]: `build` (the GDK layout with digests) and `publish` (S3, CreateComponentVersion).
//! - [`deploy`]: CreateDeployment to a thing group, then following each core to the end.
//! - [`model_release`]: a trained model directory checked, made a new `com.example.pump.Model` version, published and deployed with rollback.
//! - [`fleet`]: fleet provisioning by claim, the operator's part: the provisioning role, a template that registers a core under the thing name it is given, claims.
//! - [`token_exchange`]: the core's token exchange role (scoped to its own S3 prefix), role alias and alias policy.
//! - [`rotate`]: the cloud's part of a certificate rotation (the job, attach, retire).
//! - [`identity`]: key pair and CSR.
//! - [`output`]: the output directory, written atomically.
//! - [`client`]: the `aws-sdk-iot`, `aws-sdk-greengrassv2` and `aws-sdk-s3` clients from the default chain, with a rustls/ring HTTP client.
//! - [`error`]: errors sorted by what the caller does next.

pub mod app;
pub mod audit;
pub mod auditors;
pub mod client;
pub mod component;
pub mod deploy;
pub mod device;
pub mod error;
pub mod fleet;
pub mod identity;
pub mod incidents;
pub mod model_release;
pub mod monitoring;
pub mod output;
pub mod policy;
pub mod rotate;
pub mod token_exchange;

pub use client::{
    ClientOptions, cloudwatch_client, cloudwatch_logs_client, cognito_client, dynamodb_client, greengrass_client,
    iam_client, iot_client, iot_data_client, lambda_client, s3_client,
};
pub use device::{
    Change, CoreDeviceSpec, DEFAULT_DEPLOYMENTS_POLICY_NAME, DEFAULT_MQTT_PORT, DEFAULT_POLICY_NAME,
    DEFAULT_ROTATION_POLICY_NAME, Deprovisioned, ProvisionedDevice, deprovision, provision_core_device, replace_device,
};
pub use error::{NextStep, ProvisionError};
pub use policy::PolicySource;
