//! The library every pump-station component uses. Nothing pump-specific.
//!
//! # Layout
//! - [`ipc`]: the async Greengrass IPC client (tokio), on the protocol types of `cloud_api::ipc`.
//! - [`shadow`]: the shadow sync engine, a pure state machine (events in, actions out) for the
//!   device side of a shadow: reconcile, deltas, refusals, versions, coalesced reports.
//! - [`batch`]: telemetry batching, pure: readings in, versioned batches out, sized to IoT
//!   Core's 5 KiB metering unit, with deadband, heartbeat and counters.
//! - [`env_config`]: the environment layer of a component's configuration (site-specific
//!   values a group deployment cannot carry, from the core's environment).
//! - [`outbox`]: a durable outbox on SQLite: append, peek, ack, a bound with drop-oldest, and
//!   an async `drain` that publishes in order and acks after each success.

pub mod batch;
pub mod env_config;
pub mod ipc;
pub mod outbox;
pub mod shadow;
