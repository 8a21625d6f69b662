//! Local publish/subscribe between components, as the nucleus's `PubSubIPCEventStreamAgent`
//! and `SubscriptionTrie` do it (Greengrass developer guide, "Publish/subscribe local
//! messages"):
//! - a published topic may not contain `+`, `#` or `*` ("Publish topic must not contain a
//!   wildcard."); a subscription filter must not be empty;
//! - filters use MQTT wildcards: `+` one whole level, `#` (last level) one or more levels
//!   below its parent — `a/#` matches `a/b` and `a/b/c` but not `a` — and, unlike IoT Core,
//!   a leading wildcard also matches topics starting with `$`;
//! - receive modes: RECEIVE_ALL_MESSAGES delivers the subscriber's own messages too,
//!   RECEIVE_MESSAGES_FROM_OTHERS skips messages whose publisher is the subscribing
//!   component. Without a mode the nucleus picks RECEIVE_MESSAGES_FROM_OTHERS for a filter
//!   with wildcards and RECEIVE_ALL_MESSAGES otherwise;
//! - messages are JSON or binary; the subscriber receives them with `context.topic` set.
//!
//! Back-pressure policy: each subscription has its own bounded queue
//! ([`DEFAULT_QUEUE`] messages). Publishing never waits: a message for a subscription
//! whose queue is full is dropped for that subscription only (newest dropped, counted in
//! [`PublishOutcome::dropped`]), so a flooding publisher neither grows memory nor stalls
//! other subscribers, and a stuck subscriber only loses its own messages.

use cloud_api::ipc::model::{MessageContext, PubSubMessage, ReceiveMode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Default capacity of each subscription's queue.
pub const DEFAULT_QUEUE: usize = 1024;

/// Why a publish or subscribe is refused (`InvalidArgumentsError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PubSubError {
    /// The publish topic has a wildcard.
    #[error("Publish topic must not contain a wildcard.")]
    WildcardInTopic,
    /// Empty publish topic.
    #[error("Publish topic must not be null")]
    EmptyTopic,
    /// Empty subscription filter.
    #[error("Subscribe topic must not be empty")]
    EmptyFilter,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Subscriptions that got the message.
    pub delivered: usize,
    /// Subscriptions whose queue was full.
    pub dropped: usize,
}

struct Sub {
    id: u64,
    filter: String,
    component: String,
    mode: ReceiveMode,
    tx: mpsc::Sender<PubSubMessage>,
}

/// The local message bus. Cheap to clone (shared).
#[derive(Clone)]
pub struct PubSub {
    subs: Arc<Mutex<Vec<Sub>>>,
    next_id: Arc<AtomicU64>,
    queue: usize,
}

impl Default for PubSub {
    fn default() -> Self {
        Self::new(DEFAULT_QUEUE)
    }
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub").field("queue", &self.queue).finish_non_exhaustive()
    }
}

/// A subscription: its messages, in order, until dropped.
#[derive(Debug)]
pub struct Subscription {
    /// The messages (with `context.topic` set).
    pub receiver: mpsc::Receiver<PubSubMessage>,
    /// The receive mode in effect.
    pub mode: ReceiveMode,
}

/// Whether a filter holds MQTT wildcards (the nucleus's `SubscriptionTrie.isWildcard`).
pub fn is_wildcard(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().any(|(i, l)| *l == "+" || (*l == "#" && i + 1 == levels.len()))
}

/// Whether `topic` matches `filter` under the nucleus's local pub/sub rules (module doc).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/').peekable();
    let mut t = topic.split('/');
    while let Some(level) = f.next() {
        if level == "#" && f.peek().is_none() {
            return t.next().is_some();
        }
        match t.next() {
            Some(tl) if level == "+" || level == tl => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

impl PubSub {
    /// A bus whose subscriptions queue up to `queue` messages each.
    pub fn new(queue: usize) -> Self {
        Self { subs: Arc::default(), next_id: Arc::default(), queue: queue.max(1) }
    }

    /// Subscribes `component` to `filter`.
    pub fn subscribe(
        &self,
        component: &str,
        filter: &str,
        mode: Option<ReceiveMode>,
    ) -> Result<Subscription, PubSubError> {
        if filter.is_empty() {
            return Err(PubSubError::EmptyFilter);
        }
        let mode = mode.unwrap_or(if is_wildcard(filter) {
            ReceiveMode::ReceiveMessagesFromOthers
        } else {
            ReceiveMode::ReceiveAllMessages
        });
        let (tx, receiver) = mpsc::channel(self.queue);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| !s.tx.is_closed());
        subs.push(Sub { id, filter: filter.to_owned(), component: component.to_owned(), mode, tx });
        Ok(Subscription { receiver, mode })
    }

    /// Publishes `message` on `topic` as `publisher` (a component name). Never waits.
    pub fn publish(
        &self,
        publisher: &str,
        topic: &str,
        message: &PubSubMessage,
    ) -> Result<PublishOutcome, PubSubError> {
        if topic.is_empty() {
            return Err(PubSubError::EmptyTopic);
        }
        if topic.contains(['+', '#', '*']) {
            return Err(PubSubError::WildcardInTopic);
        }
        let mut delivered_msg = message.clone();
        let context = Some(MessageContext { topic: topic.to_owned() });
        match &mut delivered_msg {
            PubSubMessage::Json(m) => m.context = context,
            PubSubMessage::Binary(m) => m.context = context,
        }
        let mut outcome = PublishOutcome::default();
        let mut closed = Vec::new();
        let subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        for s in subs.iter() {
            if !filter_matches(&s.filter, topic)
                || (s.mode == ReceiveMode::ReceiveMessagesFromOthers && s.component == publisher)
            {
                continue;
            }
            match s.tx.try_send(delivered_msg.clone()) {
                Ok(()) => outcome.delivered += 1,
                Err(mpsc::error::TrySendError::Full(_)) => outcome.dropped += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => closed.push(s.id),
            }
        }
        drop(subs);
        if !closed.is_empty() {
            self.subs.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| !closed.contains(&s.id));
        }
        Ok(outcome)
    }

    /// Live subscriptions (closed ones are pruned lazily).
    pub fn subscription_count(&self) -> usize {
        self.subs.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|s| !s.tx.is_closed()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_match_like_the_nucleus_subscription_trie() {
        let cases: &[(&str, &str, bool)] = &[
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+/c", "a/b/c", true),
            ("a/#", "a/b", true),
            ("a/#", "a/b/c", true),
            ("a/#", "a", false),
            ("#", "a/b", true),
            ("#", "$aws/things/x/shadow/update/delta", true),
            ("+/b", "$x/b", true),
            ("a/b/#", "a/c/d", false),
            ("a", "a/b", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(filter_matches(f, t), *want, "{f} vs {t}");
        }
        assert!(is_wildcard("a/+") && is_wildcard("a/#") && !is_wildcard("a/b") && !is_wildcard("a/b#"));
    }

    #[tokio::test]
    async fn receive_modes_decide_whether_own_messages_come_back() {
        let bus = PubSub::default();
        let mut all = bus.subscribe("A", "t", Some(ReceiveMode::ReceiveAllMessages)).unwrap();
        let mut others = bus.subscribe("A", "t", Some(ReceiveMode::ReceiveMessagesFromOthers)).unwrap();
        // Default for a wildcard filter: from others.
        let wild = bus.subscribe("A", "t/#", None).unwrap();
        assert_eq!(wild.mode, ReceiveMode::ReceiveMessagesFromOthers);
        assert_eq!(bus.subscribe("A", "t", None).unwrap().mode, ReceiveMode::ReceiveAllMessages);

        bus.publish("A", "t", &PubSubMessage::json(json!({"n": 1}))).unwrap();
        bus.publish("B", "t", &PubSubMessage::binary("hi")).unwrap();
        let first = all.receiver.recv().await.unwrap();
        assert_eq!(first.topic(), Some("t"));
        assert!(matches!(first, PubSubMessage::Json(ref m) if m.message == json!({"n": 1})));
        assert!(matches!(all.receiver.recv().await.unwrap(), PubSubMessage::Binary(_)));
        assert!(
            matches!(others.receiver.recv().await.unwrap(), PubSubMessage::Binary(ref m) if m.message.as_bytes() == b"hi")
        );
        assert!(others.receiver.try_recv().is_err());
    }

    #[test]
    fn wildcards_in_published_topics_are_refused() {
        let bus = PubSub::default();
        for t in ["a/+", "a/#", "a*"] {
            assert_eq!(bus.publish("A", t, &PubSubMessage::json(json!({}))), Err(PubSubError::WildcardInTopic));
        }
        assert_eq!(bus.subscribe("A", "", None).err(), Some(PubSubError::EmptyFilter));
    }

    #[test]
    fn a_full_subscriber_loses_messages_without_stalling_others() {
        let bus = PubSub::new(2);
        let _slow = bus.subscribe("S", "t", None).unwrap();
        let mut fast = bus.subscribe("F", "t", None).unwrap();
        for i in 0..5 {
            let out = bus.publish("P", "t", &PubSubMessage::json(json!(i))).unwrap();
            let _ = fast.receiver.try_recv();
            if i >= 2 {
                assert_eq!(out, PublishOutcome { delivered: 1, dropped: 1 });
            }
        }
    }
}
