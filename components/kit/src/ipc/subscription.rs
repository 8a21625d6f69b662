//! [`Subscription`]: the events of a streaming operation, as a `Stream`.

use super::client::{StreamHandle, decode};
use super::connection::{Delivery, STREAM_BUFFER};
use super::error::IpcError;
use cloud_api::ipc::error::ServiceError;
use cloud_api::ipc::operation::StreamingOperation;
use cloud_api::ipc::rpc::MessageType;
use futures::Stream;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

/// The open stream of a streaming operation `O`: its initial response, then its events.
///
/// Yields `Ok(event)` per event and `Err` for a service error or an event that does not
/// match the model; ends (`None`) when the server closes the stream or the connection
/// fails (after yielding the failure). Dropping it closes the stream with TERMINATE_STREAM.
pub struct Subscription<O: StreamingOperation> {
    response: O::Response,
    stream: StreamHandle,
    finished: bool,
}

impl<O: StreamingOperation> std::fmt::Debug for Subscription<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("operation", &O::NAME)
            .field("stream_id", &self.stream.open.id)
            .field("finished", &self.finished)
            .finish()
    }
}

impl<O: StreamingOperation> Subscription<O> {
    pub(crate) fn new(response: O::Response, stream: StreamHandle) -> Self {
        let finished = stream.ended();
        Self { response, stream, finished }
    }

    /// The operation's initial response.
    pub fn response(&self) -> &O::Response {
        &self.response
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next_event(&mut self) -> Option<Result<O::Event, IpcError>> {
        futures::StreamExt::next(self).await
    }

    /// Closes the stream now (the same as dropping it).
    pub fn close(self) {}

    fn on_delivery(&mut self, delivery: Option<Delivery>) -> Option<Result<O::Event, IpcError>> {
        let message = match delivery {
            Some(Delivery::Message(m)) => m,
            Some(Delivery::Closed(e)) => {
                self.finished = true;
                return Some(Err(e));
            }
            None => {
                self.finished = true;
                if self.stream.open.lagged.load(Ordering::Acquire) {
                    return Some(Err(IpcError::Lagged { operation: O::NAME, capacity: STREAM_BUFFER }));
                }
                if self.stream.ended() {
                    return None;
                }
                return Some(Err(self.stream.closed_reason()));
            }
        };
        self.stream.saw(&message);
        let terminates = message.terminates_stream();
        if terminates {
            self.finished = true;
        }
        match message.message_type {
            MessageType::ApplicationError => {
                Some(Err(IpcError::Service { operation: O::NAME, error: Box::new(ServiceError::from_rpc(&message)) }))
            }
            // The bare close: an empty message with TERMINATE_STREAM and no shape.
            _ if terminates && message.service_model_type.is_none() => None,
            _ => Some(decode::<O::Event>(O::NAME, O::EVENT_TYPE, &message)),
        }
    }
}

// Nothing in a subscription is structurally pinned, so it may move while polled.
impl<O: StreamingOperation> Unpin for Subscription<O> {}

impl<O: StreamingOperation> Stream for Subscription<O> {
    type Item = Result<O::Event, IpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        match this.stream.open.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(delivery) => Poll::Ready(this.on_delivery(delivery)),
        }
    }
}
