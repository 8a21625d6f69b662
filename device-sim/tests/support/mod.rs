//! Test support shared by the integration tests: `mod support;` in a test file.
//!
//! The doubles live here, not in the shipped library, and are included (`#[path]`) by the
//! library's own unit tests too, so one copy serves both without a cargo feature (a feature
//! on for tests only would build `device-sim` and everything above it twice).

pub use device_sim::core::services::{BoxFuture, BridgeError, IotCoreBridge};

pub mod fake_bridge;
