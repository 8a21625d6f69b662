//! The library every pump-station component uses. Nothing pump-specific.
//!
//! # Layout
//! - [`ipc`]: the async Greengrass IPC client (tokio), on the protocol types of `cloud_api::ipc`.

pub mod ipc;
