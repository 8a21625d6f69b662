//! `com.example.pump.Analyzer`: turns pump readings into anomaly events.
//!
//! # Layout
//! - [`features`]: the sliding window and its per-measurement statistics (pure), re-exported
//!   from the `pump-features` crate that the dataset generator uses too.
//! - [`detector`]: the [`detector::Detector`] trait every detector implements, and its
//!   [`detector::Finding`]s.
//! - [`rules`]: the rule-based detector (thresholds from configuration).
//! - [`model`]: the trained classifier (ONNX, run with tract-onnx), its checks before loading,
//!   and the model detector.
//! - [`hysteresis`]: when findings become raised and cleared anomalies (pure state machine).
//! - [`analyzer`]: the pipeline, readings in and [`pump_types::AnomalyEvent`]s out (pure; time
//!   passed in).
//! - [`config`]: the component's configuration schema and its validation.
//! - [`service`]: the I/O shell: Greengrass IPC, local pub/sub, the durable outbox to IoT Core,
//!   loading the model component, and the S3 uploads of anomaly windows.
//! - [`upload`]: the readings around each raised anomaly, recorded as one S3 object under the
//!   thing's prefix (pure: configuration, recorder, object key).
//! - [`verify`]: `pump-analyzer verify-model`: a model directory's checks, parity with its
//!   reference outputs, load time and inference latency.

pub mod analyzer;
pub mod cli;
pub mod config;
pub mod detector;
pub use pump_features as features;
pub mod hysteresis;
pub mod model;
pub mod rules;
pub mod service;
pub mod upload;
pub mod verify;
pub mod watch;

#[cfg(test)]
mod plant_sim;
