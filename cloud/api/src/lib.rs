//! AWS IoT Core wire contracts as Rust types, shared by the local cloud (the
//! stand-in for AWS) and by the components (the clients), so the two cannot
//! drift apart. Nothing in this crate does I/O or reads a clock: time is passed
//! in as epoch seconds.
//!
//! # Layout
//! - [`endpoints`]: `endpoints.json`, where devices and tools find IoT Core.
//! - [`limits`]: IoT Core's documented quotas as named constants.
//! - [`topic`]: MQTT topic names and filters under IoT Core's rules, and filter matching.
//! - [`shadow`]: Device Shadow topics, documents, and the pure update engine.
//! - [`jobs`]: IoT Jobs topics (default and namespaced), device API payloads, and the pure
//!   job execution engine.
//! - [`policy`]: IoT policy documents and their evaluation.
//! - [`rules`]: AWS IoT SQL (2016-03-23): rule statements, their evaluation on a message, and
//!   the substitution templates of rule actions.
//! - [`ipc`]: the Greengrass IPC wire protocol: event-stream frames, the RPC layer, operation shapes.
//! - [`greengrass`]: Greengrass v2 fleet contracts: deployment requests and documents, fleet
//!   status, and the core-device view built from what cores report.

pub mod endpoints;
pub mod greengrass;
pub mod ipc;
pub mod jobs;
pub mod limits;
pub mod policy;
pub mod rules;
pub mod shadow;
pub mod topic;
