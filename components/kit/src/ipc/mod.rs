//! The async Greengrass IPC client (tokio).
//!
//! Speaks AWS's event-stream RPC protocol to the nucleus over its Unix socket, with the
//! codec, RPC messages and operation shapes of [`cloud_api::ipc`] (AWS-CONTRACTS.md §8):
//! the CONNECT handshake with `SVCUID`, one stream per call, streaming subscriptions,
//! answers to pings, and errors that say what to do next ([`NextStep`]).
//!
//! ```no_run
//! use kit::ipc::{IpcClient, model::*};
//! # async fn run() -> Result<(), kit::ipc::IpcError> {
//! let ipc = IpcClient::connect_from_env().await?;
//! ipc.update_state(&UpdateStateRequest { state: ReportedLifecycleState::Running }).await?;
//! let mut readings = ipc
//!     .subscribe_to_topic(&SubscribeToTopicRequest { topic: "pump/readings".into(), receive_mode: None })
//!     .await?;
//! while let Some(event) = readings.next_event().await {
//!     println!("{:?}", event?);
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `client`: [`IpcClient`], [`IpcSettings`], one method per operation.
//! - `subscription`: [`Subscription`], the events of a streaming operation.
//! - `error`: [`IpcError`] and [`NextStep`].
//! - `connection` (private): the handshake, the reader that routes frames by stream id,
//!   the writer.

mod client;
mod connection;
mod error;
mod subscription;

pub use client::{AUTH_TOKEN_ENV, DEFAULT_TIMEOUT, IpcClient, IpcSettings, SOCKET_PATH_ENV};
pub use cloud_api::ipc::error::{ErrorCode, ServiceError};
pub use cloud_api::ipc::{model, operation};
pub use error::{IpcError, NextStep, next_step_for};
pub use subscription::Subscription;
