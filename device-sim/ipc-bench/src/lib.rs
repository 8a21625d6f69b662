//! `ipc-bench`: Greengrass IPC figures for the simulated core — request round trips with our
//! Rust client (`kit::ipc::IpcClient`) and AWS's Python client (`clientv2` of `awsiotsdk`) in the
//! same core and the same run, local pub/sub throughput and latency, and the memory of the core
//! and of its components. See the crate README for what is measured and how to read it.
//!
//! # Layout
//! - [`plan`]: counts and rates of a full or a quick run.
//! - [`recipes`]: the benchmark's components as Greengrass recipes (JSON), and their names.
//! - [`wire`]: the files and messages the driver and the measuring components exchange.
//! - [`report`]: the Markdown section for `docs/benchmarks.md`.
//!
//! The driver (`src/main.rs`) starts `device-sim core` processes with these recipes; the Rust
//! measuring component is `src/bin/ipc-bench-component.rs`, the Python one
//! `python/ipc_bench_component.py`.

pub mod plan;
pub mod recipes;
pub mod report;
pub mod wire;
