//! One IPC connection: the handshake, a reader task that demultiplexes by stream id, and
//! a writer task that owns the socket's write half.
//!
//! Ordering matters on the wire: the server accepts a new stream only if its id is exactly
//! one more than the last (`aws-c-event-stream`), so a stream id is taken and its first
//! frame queued under one lock, and a single writer drains the queue in order.

use super::error::IpcError;
use bytes::{Bytes, BytesMut};
use cloud_api::ipc::frame::FrameCodec;
use cloud_api::ipc::rpc::{MessageType, RpcMessage, StreamId};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// Unread messages a stream may hold before its subscription is closed as lagging.
pub(crate) const STREAM_BUFFER: usize = 1024;

/// What the reader hands a stream.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A message on the stream.
    Message(RpcMessage),
    /// The connection failed; nothing more will come.
    Closed(IpcError),
}

enum Outgoing {
    Frame(Bytes),
    /// Flush what is queued, then close the write half.
    Shutdown,
}

struct StreamEntry {
    tx: mpsc::Sender<Delivery>,
    lagged: Arc<AtomicBool>,
}

struct State {
    /// The id the next call takes; `None` once i32::MAX has been used.
    next_stream: Option<StreamId>,
    streams: HashMap<StreamId, StreamEntry>,
    /// Set once, when the connection fails; later calls fail with it.
    closed: Option<IpcError>,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    codec: FrameCodec,
}

/// A stream opened by a call: its id, its deliveries, and a flag set if it overflowed.
pub(crate) struct OpenStream {
    pub(crate) id: StreamId,
    pub(crate) rx: mpsc::Receiver<Delivery>,
    pub(crate) lagged: Arc<AtomicBool>,
}

/// The connection; dropping the last handle stops both tasks and closes the socket.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    tasks: [AbortHandle; 2],
}

impl Drop for Connection {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("closed", &self.shared.lock().closed.is_some()).finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters more than losing the connection, so a poisoned lock is still used.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn encode(&self, message: &RpcMessage) -> Result<Bytes, cloud_api::ipc::frame::FrameError> {
        let mut buf = BytesMut::new();
        self.codec.encode(&message.to_message(), &mut buf)?;
        Ok(buf.freeze())
    }

    /// Queues a message the client itself builds (pings, terminates): these always fit.
    fn send(&self, message: &RpcMessage) {
        if let Ok(bytes) = self.encode(message) {
            let _ = self.outgoing.send(Outgoing::Frame(bytes));
        }
    }

    /// Marks the connection closed with `error` and tells every open stream.
    fn fail(&self, error: IpcError) {
        let streams = {
            let mut state = self.lock();
            if state.closed.is_none() {
                state.closed = Some(error.clone());
            }
            std::mem::take(&mut state.streams)
        };
        for (_, entry) in streams {
            // A full buffer cannot take the notice; dropping the sender still ends the
            // stream, and the caller then reads the reason from `closed`.
            let _ = entry.tx.try_send(Delivery::Closed(error.clone()));
        }
    }
}

impl Connection {
    /// Opens the socket, performs the CONNECT handshake, and starts the reader and writer.
    pub(crate) async fn connect(path: &Path, auth_token: &str, timeout: Duration) -> Result<Self, IpcError> {
        let socket = UnixStream::connect(path)
            .await
            .map_err(|e| IpcError::Connect { path: path.to_owned(), source: Arc::new(e) })?;
        let (mut read, mut write) = socket.into_split();
        let codec = FrameCodec::new();

        let mut hello = BytesMut::new();
        codec
            .encode(&RpcMessage::connect(auth_token).to_message(), &mut hello)
            .map_err(|e| IpcError::InvalidRequest { operation: "CONNECT", reason: e.to_string() })?;
        let mut buf = BytesMut::with_capacity(8 * 1024);
        let handshake = async {
            write.write_all(&hello).await.map_err(closed)?;
            let ack = read_message(&codec, &mut read, &mut buf).await?;
            match ack.message_type {
                MessageType::ConnectAck if ack.is_connection_accepted() => Ok(()),
                MessageType::ConnectAck => Err(IpcError::Refused),
                other => Err(IpcError::Protocol(format!("expected CONNECT_ACK, got {other:?}"))),
            }
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| IpcError::Timeout { operation: "CONNECT", after: timeout })??;

        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State { next_stream: Some(StreamId::FIRST), streams: HashMap::new(), closed: None }),
            outgoing,
            codec,
        });
        let reader = tokio::spawn(run_reader(shared.clone(), read, buf)).abort_handle();
        let writer = tokio::spawn(run_writer(shared.clone(), write, outgoing_rx)).abort_handle();
        Ok(Self { shared, tasks: [reader, writer] })
    }

    /// Takes the next stream id, registers it, and queues `request` (built for that id).
    pub(crate) fn open(
        &self,
        operation: &'static str,
        request: impl FnOnce(StreamId) -> RpcMessage,
    ) -> Result<OpenStream, IpcError> {
        let mut state = self.shared.lock();
        if let Some(e) = &state.closed {
            return Err(e.clone());
        }
        let id = state.next_stream.ok_or(IpcError::StreamIdsExhausted)?;
        let bytes = self
            .shared
            .encode(&request(id))
            .map_err(|e| IpcError::InvalidRequest { operation, reason: e.to_string() })?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        state.streams.insert(id, StreamEntry { tx, lagged: lagged.clone() });
        state.next_stream = id.next();
        // Still under the lock, so frames of new streams leave in id order.
        if self.shared.outgoing.send(Outgoing::Frame(bytes)).is_err() {
            state.streams.remove(&id);
            return Err(closed_reason(&state));
        }
        Ok(OpenStream { id, rx, lagged })
    }

    /// Forgets `id` and, unless the server already ended it, sends TERMINATE_STREAM.
    pub(crate) fn close_stream(&self, id: StreamId, send_terminate: bool) {
        let mut state = self.shared.lock();
        state.streams.remove(&id);
        if send_terminate && state.closed.is_none() {
            drop(state);
            self.shared.send(&RpcMessage::terminate_stream(id));
        }
    }

    /// Why the connection is closed, or a generic reason if it is open (a stream ended
    /// without being told why).
    pub(crate) fn closed_reason(&self) -> IpcError {
        closed_reason(&self.shared.lock())
    }

    /// True once the connection has failed or been closed by the peer.
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }
}

fn closed_reason(state: &State) -> IpcError {
    state.closed.clone().unwrap_or_else(|| IpcError::ConnectionClosed { reason: "the stream was closed".into() })
}

fn closed(e: std::io::Error) -> IpcError {
    IpcError::ConnectionClosed { reason: e.to_string() }
}

/// Reads until one whole RPC message is in `buf`.
async fn read_message(
    codec: &FrameCodec,
    read: &mut OwnedReadHalf,
    buf: &mut BytesMut,
) -> Result<RpcMessage, IpcError> {
    loop {
        if let Some(frame) = codec.decode(buf).map_err(|e| IpcError::Protocol(e.to_string()))? {
            return RpcMessage::from_message(frame).map_err(|e| IpcError::Protocol(e.to_string()));
        }
        if read.read_buf(buf).await.map_err(closed)? == 0 {
            return Err(IpcError::ConnectionClosed { reason: "the nucleus closed the connection".into() });
        }
    }
}

async fn run_reader(shared: Arc<Shared>, mut read: OwnedReadHalf, mut buf: BytesMut) {
    let error = loop {
        match read_message(&shared.codec, &mut read, &mut buf).await {
            Ok(message) => {
                if let Err(e) = route(&shared, message) {
                    break e;
                }
            }
            Err(e) => {
                if let IpcError::Protocol(reason) = &e {
                    // Tell the peer why we hang up, as the CRT does, then close.
                    shared.send(&RpcMessage::protocol_error(reason));
                }
                break e;
            }
        }
    };
    tracing::warn!(error = %error, "IPC connection closed");
    shared.fail(error);
    let _ = shared.outgoing.send(Outgoing::Shutdown);
}

/// Hands one message to its stream or handles it on the connection. An error closes the
/// connection.
fn route(shared: &Shared, message: RpcMessage) -> Result<(), IpcError> {
    if message.stream_id.is_connection() {
        return match message.message_type {
            MessageType::Ping => {
                shared.send(&RpcMessage::ping_response(&message));
                Ok(())
            }
            MessageType::PingResponse => Ok(()),
            MessageType::ProtocolError | MessageType::InternalError => Err(IpcError::Protocol(format!(
                "the nucleus reported {:?}: {}",
                message.message_type,
                String::from_utf8_lossy(&message.payload)
            ))),
            other => Err(IpcError::Protocol(format!("unexpected {other:?} after the handshake"))),
        };
    }

    let id = message.stream_id;
    let terminates = message.terminates_stream();
    let mut state = shared.lock();
    let Some(entry) = state.streams.get(&id) else {
        // A late message for a stream we closed is normal; one for a stream we never
        // opened is not (the CRT client treats it the same way).
        return match state.next_stream {
            Some(next) if id >= next => Err(IpcError::Protocol(format!("message on stream {id}, never opened"))),
            _ => Ok(()),
        };
    };
    match entry.tx.try_send(Delivery::Message(message)) {
        Ok(()) if terminates => {
            state.streams.remove(&id);
        }
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            entry.lagged.store(true, Ordering::Release);
            state.streams.remove(&id);
            drop(state);
            if !terminates {
                shared.send(&RpcMessage::terminate_stream(id));
            }
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            // The caller went away between dropping its receiver and unregistering.
            state.streams.remove(&id);
        }
    }
    Ok(())
}

async fn run_writer(shared: Arc<Shared>, mut write: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(out) = rx.recv().await {
        match out {
            Outgoing::Frame(bytes) => {
                if let Err(e) = write.write_all(&bytes).await {
                    shared.fail(closed(e));
                    break;
                }
            }
            Outgoing::Shutdown => break,
        }
    }
    let _ = write.shutdown().await;
}
