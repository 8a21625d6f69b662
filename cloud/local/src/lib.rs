//! The local cloud: AWS IoT Core, Amazon S3, Amazon DynamoDB, AWS IoT Greengrass V2, AWS Lambda and IAM (the subsets the
//! solution uses) in one process.
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
//! - [`broker`]: the MQTT 3.1.1 and 5 broker over mutual TLS.
//! - [`http`]: the AWS-compatible HTTP endpoint (control plane and data plane).
//! - [`events`]: AWS IoT's event messages (lifecycle, subscription, jobs), pure, and the
//!   event configurations.
//! - [`credentials`]: the administrator's SigV4 key pair.
//! - [`iam`]: IAM roles and inline policies, temporary credentials, and SigV4 verification and
//!   authorization of every HTTP request other than S3's.
//! - [`iot_credentials`]: the AWS IoT credentials provider: role aliases, and certificates
//!   traded for temporary credentials.
//! - [`iot_metrics`]: AWS IoT's own CloudWatch metrics (`AWS/IoT`): the broker's and the rules
//!   engine's counters, flushed to CloudWatch once per interval.
//! - [`mtls`]: the mutual-TLS HTTPS listener (Greengrass data plane, credentials provider).
//! - [`s3`]: Amazon S3 on the same HTTP endpoint (through `s3s`).
//! - [`cloudwatch`]: Amazon CloudWatch metrics and alarms on the same HTTP endpoint (Smithy RPC v2
//!   CBOR and AWS JSON 1.0), and the task that evaluates the alarms.
//! - [`dynamodb`]: Amazon DynamoDB on the same HTTP endpoint (AWS JSON 1.0, through dynoxide).
//! - [`fleet_index`]: AWS IoT fleet indexing (the `AWS_Things` index with connectivity, SearchIndex)
//!   and fleet metrics published to CloudWatch.
//! - [`logs`]: Amazon CloudWatch Logs on the same HTTP endpoint (AWS JSON 1.1).
//! - [`dashboard`]: the auditors' live dashboard at `/dashboard/` (a page and a read-only JSON
//!   API behind Cognito sign-in).
//! - [`cognito`]: Amazon Cognito user pools on the same HTTP endpoint (AWS JSON 1.1): pools, app
//!   clients, users, password sign-in with RS256 JSON Web Tokens and each pool's JWKS.
//! - [`jobs`]: AWS IoT Jobs: control plane over HTTP, device API over MQTT,
//!   timers, continuous jobs; an in-process interface for other services.
//! - [`provisioning`]: fleet provisioning: templates and claims over HTTP, the device
//!   provisioning MQTT API (`$aws/certificates/…`, `$aws/provisioning-templates/…`).
//! - [`rules`]: the rules engine's topic rules (CreateTopicRule and the rest of its control plane).
//! - [`lambda`]: AWS Lambda: functions on the custom runtimes, run as processes that poll the
//!   Lambda Runtime API; the rules engine's `lambda` actions invoke them.
//! - [`greengrass`]: Greengrass V2 components: the control plane on the same HTTP endpoint,
//!   the data plane for cores on its own mutual-TLS listener.

pub mod broker;
pub mod bus;
pub mod ca;
pub mod cloudwatch;
pub mod cognito;
pub mod credentials;
pub mod dashboard;
pub mod dynamodb;
pub mod events;
pub mod fleet_index;
pub mod greengrass;
pub mod http;
pub mod iam;
pub mod iot_credentials;
pub mod iot_metrics;
pub mod jobs;
pub mod lambda;
pub mod logs;
pub mod mtls;
pub mod provisioning;
pub mod registry;
pub mod rules;
pub mod s3;
pub mod server;
pub mod shadows;
pub mod store;
pub mod time;
