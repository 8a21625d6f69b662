//! Message queues of a session, as pure data structures: the outbound QoS 1
//! window (at most 100 unacknowledged PUBLISHes, as IoT Core allows) and the
//! bounded queue of a persistent session that is offline.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

/// A message as the broker routes it; shared by every subscriber it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// Topic name.
    pub(crate) topic: String,
    /// Payload.
    pub(crate) payload: Bytes,
    /// QoS it was published with (0 or 1).
    pub(crate) qos: u8,
    /// RETAIN flag it was published with (forwarded to retain-as-published subscriptions).
    pub(crate) retain: bool,
    /// MQTT 5 properties passed through to MQTT 5 subscribers; `None` for a
    /// message from MQTT 3.1.1 or a service.
    pub(crate) props: Option<Arc<MessageProps>>,
}

impl Message {
    /// A message without MQTT 5 properties.
    pub(crate) fn new(topic: impl Into<String>, payload: impl Into<Bytes>, qos: u8, retain: bool) -> Self {
        Message { topic: topic.into(), payload: payload.into(), qos, retain, props: None }
    }

    /// Whether its Message Expiry Interval has run out at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.props.as_ref().and_then(|p| p.expires_at).is_some_and(|t| t <= now)
    }
}

/// The MQTT 5 PUBLISH properties the broker forwards to subscribers unchanged
/// (the Message Expiry Interval is forwarded as what is left of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MessageProps {
    /// Payload Format Indicator (0 bytes, 1 UTF-8).
    pub(crate) payload_format_indicator: Option<u8>,
    /// When the Message Expiry Interval runs out.
    pub(crate) expires_at: Option<Instant>,
    /// Response Topic.
    pub(crate) response_topic: Option<String>,
    /// Correlation Data.
    pub(crate) correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub(crate) user_properties: Vec<(String, String)>,
    /// Content Type.
    pub(crate) content_type: Option<String>,
}

/// One message on its way to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The message.
    pub(crate) msg: Arc<Message>,
    /// min(publish QoS, subscription QoS).
    pub(crate) qos: u8,
    /// RETAIN flag on the wire: set only when a retained message is sent because of a SUBSCRIBE.
    pub(crate) retain: bool,
    /// DUP flag on the wire: set when a QoS 1 message is sent again after a reconnect.
    pub(crate) dup: bool,
}

/// Outbound QoS 1 messages sent and not yet acknowledged, with their packet ids.
#[derive(Debug)]
pub(crate) struct Inflight<T> {
    slots: VecDeque<(u16, T)>,
    limit: usize,
    next_pkid: u16,
}

impl<T> Inflight<T> {
    /// A window holding at most `limit` messages.
    pub(crate) fn new(limit: usize) -> Self {
        Inflight { slots: VecDeque::new(), limit: limit.clamp(1, 65_535), next_pkid: 1 }
    }

    /// Whether another message may be sent now.
    pub(crate) fn has_room(&self) -> bool {
        self.slots.len() < self.limit
    }

    /// Number of unacknowledged messages.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Records `item` as sent and returns its packet id (never 0, never one in use).
    /// Callers check [`Inflight::has_room`] first.
    pub(crate) fn insert(&mut self, item: T) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            if !self.slots.iter().any(|(p, _)| *p == id) {
                self.slots.push_back((id, item));
                return id;
            }
        }
    }

    /// A PUBACK arrived; returns the acknowledged item, or `None` for an unknown id.
    pub(crate) fn ack(&mut self, pkid: u16) -> Option<T> {
        // Acknowledgements usually come in order: the front is the common case.
        let i = self.slots.iter().position(|(p, _)| *p == pkid)?;
        self.slots.remove(i).map(|(_, t)| t)
    }

    /// Everything unacknowledged, oldest first (for a persistent session going offline).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.slots.drain(..).map(|(_, t)| t)
    }
}

/// A FIFO that keeps at most `max` items by dropping the oldest.
#[derive(Debug, Default)]
pub(crate) struct BoundedQueue<T> {
    items: VecDeque<T>,
    max: usize,
    dropped: u64,
}

impl<T> BoundedQueue<T> {
    /// An empty queue of at most `max` items.
    pub(crate) fn new(max: usize) -> Self {
        BoundedQueue { items: VecDeque::new(), max, dropped: 0 }
    }

    /// Appends, dropping the oldest item if the queue is full.
    pub(crate) fn push(&mut self, item: T) {
        if self.max == 0 {
            self.dropped += 1;
            return;
        }
        if self.items.len() >= self.max {
            self.items.pop_front();
            self.dropped += 1;
        }
        self.items.push_back(item);
    }

    /// Puts `older` (oldest first) in front of what is queued, then trims the
    /// oldest beyond the bound.
    pub(crate) fn prepend(&mut self, older: impl DoubleEndedIterator<Item = T>) {
        for item in older.rev() {
            self.items.push_front(item);
        }
        while self.items.len() > self.max {
            self.items.pop_front();
            self.dropped += 1;
        }
    }

    /// Takes everything, oldest first.
    pub(crate) fn take(&mut self) -> VecDeque<T> {
        std::mem::take(&mut self.items)
    }

    /// Number of queued items.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Items dropped because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Drops everything.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_expires_when_its_interval_has_run_out() {
        let now = Instant::now();
        let plain = Message::new("t", "x", 1, false);
        assert!(!plain.expired(now + std::time::Duration::from_secs(1_000_000)), "no interval: never");
        let props = MessageProps { expires_at: Some(now + std::time::Duration::from_secs(10)), ..Default::default() };
        let timed = Message { props: Some(Arc::new(props)), ..plain };
        assert!(!timed.expired(now));
        assert!(timed.expired(now + std::time::Duration::from_secs(10)));
    }

    #[test]
    fn inflight_window_holds_at_most_its_limit_with_unique_nonzero_ids() {
        let mut w = Inflight::new(100);
        let mut ids = Vec::new();
        while w.has_room() {
            ids.push(w.insert(ids.len()));
        }
        assert_eq!(ids.len(), 100);
        assert!(ids.iter().all(|&i| i != 0));
        let mut sorted = ids.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 100);
        assert_eq!(w.ack(ids[10]), Some(10));
        assert_eq!(w.ack(ids[10]), None);
        assert!(w.has_room());
        assert_eq!(w.len(), 99);
    }

    #[test]
    fn packet_ids_wrap_and_skip_ids_still_in_flight() {
        let mut w = Inflight::new(10);
        let first = w.insert("old");
        assert_eq!(first, 1);
        for _ in 0..65_533 {
            let id = w.insert("x");
            w.ack(id);
        }
        // 65535 is next, then the counter wraps; 1 is still in flight and is skipped.
        assert_eq!(w.insert("a"), 65_535);
        assert_eq!(w.insert("b"), 2);
        assert_eq!(w.drain().collect::<Vec<_>>(), vec!["old", "a", "b"]);
    }

    #[test]
    fn offline_queue_drops_oldest_when_full() {
        let mut q = BoundedQueue::new(3);
        for i in 0..5 {
            q.push(i);
        }
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.take().into_iter().collect::<Vec<_>>(), vec![2, 3, 4]);
    }

    #[test]
    fn requeued_unacknowledged_messages_go_first_and_respect_the_bound() {
        let mut q = BoundedQueue::new(4);
        q.push(10);
        q.push(11);
        q.prepend(vec![7, 8, 9].into_iter());
        assert_eq!(q.len(), 4);
        assert_eq!(q.dropped(), 1);
        assert_eq!(q.take().into_iter().collect::<Vec<_>>(), vec![8, 9, 10, 11]);
    }

    #[test]
    fn a_zero_bound_keeps_nothing() {
        let mut q = BoundedQueue::new(0);
        q.push(1);
        assert_eq!(q.len(), 0);
        assert_eq!(q.dropped(), 1);
    }
}
