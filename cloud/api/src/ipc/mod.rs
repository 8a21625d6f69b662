//! The Greengrass IPC wire protocol ("event-stream RPC") as pure types: no sockets, no clock.
//!
//! Greengrass components talk to the nucleus over a Unix socket (path in
//! `AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT`, token in `SVCUID`) with AWS's
//! event-stream RPC protocol. This module is the one source of truth for that protocol in
//! the workspace: the async client in `kit` and the simulated core's server both use it.
//!
//! What it follows (AWS-CONTRACTS.md §8; checked against the sources listed there):
//! - frames: the AWS event-stream message format (`aws-c-event-stream`, encoded and
//!   parsed by `aws-smithy-eventstream`);
//! - the RPC layer: `aws-c-event-stream`'s `event_stream_rpc_{client,server}.c` (message
//!   types, flags, stream ids) and the SDK layers above it (`awsiot/eventstreamrpc.py`,
//!   Java's `event-stream-rpc-server`) for the handshake, `service-model-type`, errors;
//! - operation shapes: `awsiot/greengrasscoreipc/model.py` in aws-iot-device-sdk-python-v2.
//!
//! # Layout
//! - [`frame`]: the incremental frame decoder and the encoder, with typed errors.
//! - [`rpc`]: message types, flags, stream ids, the RPC headers, the CONNECT handshake,
//!   and constructors for every message either side sends.
//! - [`error`]: the service error codes and the error body (`_service`, `_message`, `_errorCode`).
//! - [`model`]: the operation request, response and event shapes (serde, AWS's JSON names).
//! - [`operation`]: one marker type per operation, tying its name to its shapes.

pub mod error;
pub mod frame;
pub mod model;
pub mod operation;
pub mod rpc;

pub use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
