//! The local cloud: AWS IoT Core and Amazon S3 in one process.
//!
//! # Layout
//! - [`server`]: [`server::LocalCloud`], the embeddable server; starts everything
//!   below and writes `endpoints.json`.
//! - [`ca`]: the local certificate authority (stand-in for Amazon's root CA).
//! - [`store`]: SQLite persistence shared by the registry and the shadows.
//! - [`registry`]: things, types, groups, certificates, policies and their
//!   attachments; authorizes MQTT operations with [`cloud_api::policy`].
//! - [`bus`]: the channel services publish MQTT messages through, and the hook
//!   the broker calls for topics a service owns.
//! - [`shadows`]: the Device Shadow service (MQTT and HTTP share it).
//! - [`broker`]: the MQTT 3.1.1 broker over mutual TLS.
//! - [`http`]: the AWS-compatible HTTP endpoint (control plane and data plane).
//! - [`credentials`]: the administrator's SigV4 key pair.
//! - [`s3`]: Amazon S3 on the same HTTP endpoint (through `s3s`).

pub mod broker;
pub mod bus;
pub mod ca;
pub mod credentials;
pub mod greengrass;
pub mod http;
pub mod registry;
pub mod s3;
pub mod server;
pub mod shadows;
pub mod store;
pub mod time;
