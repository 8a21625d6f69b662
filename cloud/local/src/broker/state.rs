//! State shared by every connection: sessions by client id, the subscription
//! table, retained messages, and live connections by certificate. Every lock
//! here is a short, synchronous critical section; none is held across an
//! `.await`.
//!
//! Lock order (to stay deadlock-free): `sessions` → a session's `inner` →
//! `subs`. Routing takes `subs` (read) alone, releases it, then takes each
//! target session's `inner` in turn.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use std::time::Instant;
use tokio::sync::{OwnedMutexGuard, mpsc};
use tokio_util::sync::CancellationToken;

use super::BrokerConfig;
use super::queue::{BoundedQueue, Delivery, Message};
use super::rules::{OPT_NO_LOCAL, OPT_RETAIN_AS_PUBLISHED};
use super::topic_tree::SubscriptionTree;
use crate::bus::{Publisher, ServiceHandler};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// Why the broker closed a connection from its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum KickReason {
    /// Not kicked.
    None = 0,
    /// Another connection with the same client id arrived (`DUPLICATE_CLIENTID`).
    TakenOver = 1,
    /// The certificate left ACTIVE or was deleted.
    CertificateRevoked = 2,
    /// The broker is stopping.
    Shutdown = 3,
}

/// Control handle of one live connection, used to close it from outside.
#[derive(Debug)]
pub(crate) struct ConnCtl {
    /// Unique per connection.
    pub(crate) id: u64,
    /// Cancelled to close the connection.
    pub(crate) token: CancellationToken,
    reason: AtomicU8,
}

impl ConnCtl {
    /// Closes the connection for `reason` (the first reason wins).
    pub(crate) fn kick(&self, reason: KickReason) {
        let _ = self.reason.compare_exchange(0, reason as u8, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    /// Why it was closed, if it was.
    pub(crate) fn reason(&self) -> KickReason {
        match self.reason.load(Ordering::Acquire) {
            1 => KickReason::TakenOver,
            2 => KickReason::CertificateRevoked,
            3 => KickReason::Shutdown,
            _ if self.token.is_cancelled() => KickReason::Shutdown,
            _ => KickReason::None,
        }
    }
}

/// A session and its key in the subscription table (compared by identity).
#[derive(Debug, Clone)]
pub(crate) struct SessionRef(pub(crate) Arc<Session>);

impl PartialEq for SessionRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// An MQTT session: outlives its connections when persistent.
#[derive(Debug)]
pub(crate) struct Session {
    /// MQTT client id.
    pub(crate) client_id: Box<str>,
    /// Held by the one connection attached to the session; a newcomer waits
    /// for it, so the old connection finishes handing its state back first.
    lease: Arc<tokio::sync::Mutex<()>>,
    /// Whether a connection is attached (read by share groups without taking `inner`).
    online: std::sync::atomic::AtomicBool,
    inner: Mutex<SessionInner>,
}

#[derive(Debug)]
struct SessionInner {
    live: Option<Live>,
    /// How long the session outlives its connection; zero: it ends with it.
    expiry: Duration,
    /// Filters with their subscription options byte (see [`super::rules::plan_subscribe`]).
    subs: Vec<(String, u8)>,
    queue: BoundedQueue<Delivery>,
    offline_since: Option<Instant>,
    removed: bool,
}

#[derive(Debug)]
struct Live {
    conn: Arc<ConnCtl>,
    tx: mpsc::Sender<Delivery>,
}

/// What a connection gets when it attaches to its session.
#[derive(Debug)]
pub(crate) struct Attached {
    /// The session.
    pub(crate) session: Arc<Session>,
    /// Proof of being the session's one connection; dropped after detaching.
    pub(crate) lease: OwnedMutexGuard<()>,
    /// CONNACK session-present flag.
    pub(crate) session_present: bool,
    /// Messages queued while the persistent session was offline, oldest first.
    pub(crate) backlog: VecDeque<Delivery>,
}

/// A QoS 1 delivery that found its live subscriber's outgoing queue full.
#[derive(Debug)]
pub(crate) struct Blocked {
    session: Arc<Session>,
    tx: mpsc::Sender<Delivery>,
    delivery: Delivery,
}

/// How long a publisher waits for a subscriber to make room for one message.
/// Longer than the write timeout, so a subscriber that stopped reading is
/// disconnected (freeing its queue) before this gives up.
pub(crate) const BACKPRESSURE_WAIT: Duration = Duration::from_secs(35);

/// Waits until each blocked delivery has a place in its subscriber's queue
/// (no lock is held while waiting). If the subscriber's connection ends
/// meanwhile, the delivery goes to the session as [`Shared::route`] would
/// (a newer connection's queue, or the offline queue of a persistent
/// session). A delivery still without room after [`BACKPRESSURE_WAIT`] is
/// dropped and counted.
pub(crate) async fn wait_for_room(shared: Arc<Shared>, blocked: Vec<Blocked>) {
    for b in blocked {
        let Blocked { session, mut tx, mut delivery } = b;
        let deadline = tokio::time::Instant::now() + BACKPRESSURE_WAIT;
        loop {
            match tokio::time::timeout_at(deadline, tx.send(delivery)).await {
                Ok(Ok(())) => break,
                Ok(Err(mpsc::error::SendError(d))) => match shared.offer(session.clone(), d) {
                    None => break,
                    Some(again) => (tx, delivery) = (again.tx, again.delivery),
                },
                Err(_) => {
                    shared.dropped_slow.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(client_id = %session.client_id, "subscriber made no room for 35 s; QoS 1 message dropped");
                    break;
                }
            }
        }
    }
}

/// The members of one shared subscription `$share/{group}/{filter}`: each
/// message matching `filter` goes to one of them, in turn, live members first.
#[derive(Debug)]
struct ShareGroup {
    /// The filter without its `$share/{group}/` prefix.
    inner: String,
    members: Vec<(SessionRef, u8)>,
    next: usize,
}

/// The broker's shared state.
pub(crate) struct Shared {
    /// Services owning reserved topics.
    pub(crate) services: Vec<Arc<dyn ServiceHandler>>,
    /// Settings.
    pub(crate) config: BrokerConfig,
    sessions: Mutex<HashMap<Box<str>, Arc<Session>>>,
    subs: RwLock<SubscriptionTree<SessionRef>>,
    /// Shared subscriptions by their full filter.
    groups: Mutex<HashMap<String, ShareGroup>>,
    retained: RwLock<HashMap<String, Arc<Message>>>,
    by_certificate: Mutex<HashMap<Arc<str>, Vec<Arc<ConnCtl>>>>,
    next_conn_id: AtomicU64,
    dropped_slow: AtomicU64,
    /// Lifecycle `versionNumber`s: one counter for every client id (AWS only
    /// promises an increase per client id, gaps allowed), started from the
    /// clock so numbers keep increasing across restarts.
    presence_version: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// How long a new connection waits for the previous one with the same client id to let go.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

impl Shared {
    /// Empty state.
    pub(crate) fn new(services: Vec<Arc<dyn ServiceHandler>>, config: BrokerConfig) -> Self {
        Shared {
            services,
            config,
            sessions: Mutex::new(HashMap::new()),
            subs: RwLock::new(SubscriptionTree::new()),
            groups: Mutex::new(HashMap::new()),
            retained: RwLock::new(HashMap::new()),
            by_certificate: Mutex::new(HashMap::new()),
            next_conn_id: AtomicU64::new(1),
            dropped_slow: AtomicU64::new(0),
            presence_version: AtomicU64::new(crate::events::now_millis()),
        }
    }

    /// The `versionNumber` of a new connection's lifecycle events.
    pub(crate) fn next_presence_version(&self) -> u64 {
        self.presence_version.fetch_add(1, Ordering::Relaxed)
    }

    /// Publishes an event message as the service (no publisher, no publish
    /// authorization; subscribers still need `iot:Receive`), like a message from
    /// the bus: a subscriber with a full queue misses it.
    pub(crate) fn publish_event(&self, event: Option<crate::events::Event>) {
        if let Some(e) = event {
            let blocked = self.publish(Message::new(e.topic, e.payload, 1, false), None);
            self.give_up(blocked);
        }
    }

    /// A control handle for a new connection, closed by `parent` too.
    pub(crate) fn new_conn(&self, parent: &CancellationToken) -> Arc<ConnCtl> {
        Arc::new(ConnCtl {
            id: self.next_conn_id.fetch_add(1, Ordering::Relaxed),
            token: parent.child_token(),
            reason: AtomicU8::new(0),
        })
    }

    // ---- connections by certificate ----

    /// Records a live connection of `certificate_id` so a status change can close it.
    pub(crate) fn register_certificate(&self, certificate_id: &Arc<str>, conn: &Arc<ConnCtl>) {
        lock(&self.by_certificate).entry(certificate_id.clone()).or_default().push(conn.clone());
    }

    /// Forgets a connection recorded with [`Shared::register_certificate`].
    pub(crate) fn unregister_certificate(&self, certificate_id: &str, conn_id: u64) {
        let mut map = lock(&self.by_certificate);
        if let Some(list) = map.get_mut(certificate_id) {
            list.retain(|c| c.id != conn_id);
            if list.is_empty() {
                map.remove(certificate_id);
            }
        }
    }

    /// Closes every live connection of a certificate; returns how many.
    pub(crate) fn kick_certificate(&self, certificate_id: &str) -> usize {
        let conns = lock(&self.by_certificate).get(certificate_id).cloned().unwrap_or_default();
        for c in &conns {
            c.kick(KickReason::CertificateRevoked);
        }
        conns.len()
    }

    /// Certificates with live connections (to re-check after missed registry events).
    pub(crate) fn live_certificates(&self) -> Vec<Arc<str>> {
        lock(&self.by_certificate).keys().cloned().collect()
    }

    // ---- sessions ----

    fn session_for(&self, client_id: &str) -> Arc<Session> {
        let mut sessions = lock(&self.sessions);
        if let Some(s) = sessions.get(client_id)
            && !lock(&s.inner).removed
        {
            return s.clone();
        }
        let s = Arc::new(Session {
            client_id: client_id.into(),
            lease: Arc::new(tokio::sync::Mutex::new(())),
            online: std::sync::atomic::AtomicBool::new(false),
            inner: Mutex::new(SessionInner {
                live: None,
                expiry: Duration::ZERO,
                subs: Vec::new(),
                queue: BoundedQueue::new(self.config.max_queued_per_session),
                offline_since: None,
                removed: false,
            }),
        });
        sessions.insert(client_id.into(), s.clone());
        s
    }

    /// Attaches a connection that passed CONNECT to the session of its client
    /// id: closes any connection holding it (IoT Core drops the older one),
    /// waits for it to hand the session back, then resumes the session
    /// (`clean_start == false` and not expired) or starts a fresh one that
    /// outlives the connection by `expiry` (zero: not at all). MQTT 3.1.1's
    /// clean session is clean start with no expiry; its persistent session is
    /// no clean start with the broker's session expiry.
    /// `None` if the previous connection did not let go in time.
    pub(crate) async fn attach(
        &self,
        client_id: &str,
        clean_start: bool,
        expiry: Duration,
        conn: Arc<ConnCtl>,
        tx: mpsc::Sender<Delivery>,
    ) -> Option<Attached> {
        let started = Instant::now();
        loop {
            let session = self.session_for(client_id);
            if let Some(live) = &lock(&session.inner).live {
                live.conn.kick(KickReason::TakenOver);
            }
            let remaining = TAKEOVER_WAIT.checked_sub(started.elapsed())?;
            let lease = tokio::time::timeout(remaining, session.lease.clone().lock_owned()).await.ok()?;
            let mut inner = lock(&session.inner);
            if inner.removed {
                // Expired and swept while we waited: start over with a new session.
                continue;
            }
            let expired = inner.offline_since.is_some_and(|t| t.elapsed() >= inner.expiry);
            let session_present = !clean_start && !inner.expiry.is_zero() && !expired;
            if !session_present {
                self.drop_subscriptions(&session, &mut inner);
                inner.queue.clear();
            }
            inner.expiry = expiry;
            inner.offline_since = None;
            inner.live = Some(Live { conn, tx });
            session.online.store(true, Ordering::Release);
            let backlog = if session_present { inner.queue.take() } else { VecDeque::new() };
            drop(inner);
            return Some(Attached { session, lease, session_present, backlog });
        }
    }

    fn drop_subscriptions(&self, session: &Arc<Session>, inner: &mut SessionInner) {
        if inner.subs.is_empty() {
            return;
        }
        let key = SessionRef(session.clone());
        let mut subs = write(&self.subs);
        for (filter, _) in inner.subs.drain(..) {
            self.remove_filter(&mut subs, &filter, &key);
        }
    }

    /// Removes one subscription of `key` from the tree or from its share group.
    fn remove_filter(&self, subs: &mut SubscriptionTree<SessionRef>, filter: &str, key: &SessionRef) {
        if cloud_api::topic::split_shared_subscription(filter).is_some() {
            let mut groups = lock(&self.groups);
            if let Some(g) = groups.get_mut(filter) {
                g.members.retain(|(k, _)| k != key);
                if g.members.is_empty() {
                    groups.remove(filter);
                }
            }
        } else {
            subs.remove(filter, key);
        }
    }

    /// Changes how long a session outlives its connection (MQTT 5 DISCONNECT).
    pub(crate) fn set_expiry(&self, session: &Session, expiry: Duration) {
        lock(&session.inner).expiry = expiry;
    }

    /// Detaches the connection holding `attached`'s lease. A persistent session
    /// keeps its subscriptions and takes back `leftovers()` (unacknowledged and
    /// undelivered QoS 1 messages, oldest first) ahead of anything queued since;
    /// a clean session is deleted.
    pub(crate) fn detach(&self, attached: Attached, leftovers: impl FnOnce() -> Vec<Delivery>) {
        let Attached { session, lease, .. } = attached;
        let mut inner = lock(&session.inner);
        inner.live = None;
        session.online.store(false, Ordering::Release);
        if !inner.expiry.is_zero() {
            let older = leftovers();
            inner.queue.prepend(older.into_iter().filter(|d| d.qos == 1));
            inner.offline_since = Some(Instant::now());
            drop(inner);
        } else {
            self.drop_subscriptions(&session, &mut inner);
            inner.queue.clear();
            inner.removed = true;
            drop(inner);
            let mut sessions = lock(&self.sessions);
            if sessions.get(&*session.client_id).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                sessions.remove(&*session.client_id);
            }
        }
        drop(lease);
    }

    /// Deletes persistent sessions offline for longer than the session expiry; returns how many.
    pub(crate) fn sweep_expired(&self, now: Instant) -> usize {
        let mut sessions = lock(&self.sessions);
        let mut expired = Vec::new();
        for (id, s) in sessions.iter() {
            // A session whose lease is taken is (being) attached: not expired.
            let Ok(_lease) = s.lease.try_lock() else { continue };
            let mut inner = lock(&s.inner);
            let expiry = inner.expiry;
            if inner.live.is_none() && inner.offline_since.is_some_and(|t| now.saturating_duration_since(t) >= expiry) {
                self.drop_subscriptions(s, &mut inner);
                inner.queue.clear();
                inner.removed = true;
                expired.push(id.clone());
            }
        }
        for id in &expired {
            sessions.remove(id);
        }
        expired.len()
    }

    /// Number of sessions, live or offline.
    #[cfg(test)]
    pub(crate) fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    // ---- subscriptions ----

    /// The filters a session holds.
    pub(crate) fn subscriptions(&self, session: &Session) -> Vec<String> {
        lock(&session.inner).subs.iter().map(|(f, _)| f.clone()).collect()
    }

    /// Adds or replaces subscriptions of a session: `(filter, options)` with the
    /// QoS in the options' low two bits; a `$share/{group}/{filter}` joins its group.
    pub(crate) fn subscribe(&self, session: &Arc<Session>, accepted: &[(String, u8)]) {
        let key = SessionRef(session.clone());
        let mut inner = lock(&session.inner);
        let mut subs = write(&self.subs);
        for (filter, opts) in accepted {
            if let Some((_, inner_filter)) = cloud_api::topic::split_shared_subscription(filter) {
                let mut groups = lock(&self.groups);
                let g = groups.entry(filter.clone()).or_insert_with(|| ShareGroup {
                    inner: inner_filter.to_owned(),
                    members: Vec::new(),
                    next: 0,
                });
                match g.members.iter_mut().find(|(k, _)| *k == key) {
                    Some(m) => m.1 = *opts,
                    None => g.members.push((key.clone(), *opts)),
                }
            } else {
                subs.insert(filter, key.clone(), *opts);
            }
            match inner.subs.iter_mut().find(|(f, _)| f == filter) {
                Some(entry) => entry.1 = *opts,
                None => inner.subs.push((filter.clone(), *opts)),
            }
        }
    }

    /// Removes subscriptions of a session; returns, per filter, whether it was held.
    pub(crate) fn unsubscribe(&self, session: &Arc<Session>, filters: &[String]) -> Vec<bool> {
        let key = SessionRef(session.clone());
        let mut inner = lock(&session.inner);
        let mut subs = write(&self.subs);
        filters
            .iter()
            .map(|filter| {
                self.remove_filter(&mut subs, filter, &key);
                let before = inner.subs.len();
                inner.subs.retain(|(f, _)| f != filter);
                inner.subs.len() != before
            })
            .collect()
    }

    // ---- messages ----

    /// The retained message of `topic`, if any.
    pub(crate) fn retained(&self, topic: &str) -> Option<Arc<Message>> {
        read(&self.retained).get(topic).cloned()
    }

    /// Publishes a message: hands it to the service owning the topic (if it
    /// came from a client), updates the retained store (if `msg.retain`), and
    /// routes it to subscribers. Authorization of the publisher is the caller's job.
    /// Returns the QoS 1 deliveries that found a subscriber's queue full (see [`Shared::route`]).
    pub(crate) fn publish(&self, msg: Message, from: Option<&Publisher>) -> Vec<Blocked> {
        self.publish_observed(msg, from, true)
    }

    /// [`Shared::publish`]; with `observed` false, the services' [`ServiceHandler::observe`] is
    /// not told (a message the rules engine republished).
    pub(crate) fn publish_observed(&self, msg: Message, from: Option<&Publisher>, observed: bool) -> Vec<Blocked> {
        if let Some(from) = from
            && let Some(service) = self.services.iter().find(|s| s.wants(&msg.topic))
        {
            service.handle(from, &msg.topic, msg.payload.clone());
        }
        if observed {
            for service in &self.services {
                service.observe(from, &msg.topic, &msg.payload);
            }
        }
        let msg = Arc::new(msg);
        if msg.retain {
            let mut retained = write(&self.retained);
            if msg.payload.is_empty() {
                // An empty retained message clears the topic's retained message; it is still delivered.
                retained.remove(&msg.topic);
            } else {
                // Copy the payload so the stored message does not pin a whole read buffer.
                let stored = Message {
                    topic: msg.topic.clone(),
                    payload: bytes::Bytes::copy_from_slice(&msg.payload),
                    qos: msg.qos,
                    retain: true,
                    props: msg.props.clone(),
                };
                retained.insert(msg.topic.clone(), Arc::new(stored));
            }
        }
        self.route(msg, from.map(|p| p.client_id.as_str()))
    }

    /// Delivers `msg` to every session with a matching subscription, once per
    /// session at the highest matching QoS. Live sessions get it through their
    /// bounded outgoing queue; offline persistent sessions queue QoS 1 messages.
    /// When a live session's queue is full, a QoS 0 delivery is dropped
    /// (counted), and a QoS 1 delivery is returned: the caller waits for room
    /// with [`wait_for_room`] (backpressure) or gives up with [`Shared::give_up`].
    ///
    /// Subscription options: a No Local subscription of the publishing client
    /// (`origin`) does not match; Retain As Published keeps the RETAIN flag.
    /// Each matching shared subscription group gets the message once, for one
    /// member in turn (live members first).
    pub(crate) fn route(&self, msg: Arc<Message>, origin: Option<&str>) -> Vec<Blocked> {
        let mut targets: Vec<(Arc<Session>, u8)> = Vec::new();
        read(&self.subs).for_each_match(&msg.topic, |k, opts| {
            if opts & OPT_NO_LOCAL == 0 || origin != Some(&*k.0.client_id) {
                targets.push((k.0.clone(), opts));
            }
        });
        if targets.len() > 1 {
            // One delivery per session: the best QoS, RETAIN kept if any subscription asks for it.
            targets.sort_by_key(|(s, opts)| (Arc::as_ptr(s), std::cmp::Reverse(*opts & 0b11)));
            targets.dedup_by(|b, a| {
                let same = Arc::ptr_eq(&a.0, &b.0);
                if same {
                    a.1 |= b.1 & OPT_RETAIN_AS_PUBLISHED;
                }
                same
            });
        }
        self.pick_shared(&msg.topic, &mut targets);
        let mut blocked = Vec::new();
        for (session, opts) in targets {
            let retain = msg.retain && opts & OPT_RETAIN_AS_PUBLISHED != 0;
            let d = Delivery { msg: msg.clone(), qos: (opts & 0b11).min(msg.qos), retain, dup: false };
            if let Some(b) = self.offer(session, d) {
                blocked.push(b);
            }
        }
        blocked
    }

    /// Adds one member of each share group whose filter matches `topic`.
    fn pick_shared(&self, topic: &str, targets: &mut Vec<(Arc<Session>, u8)>) {
        let mut groups = lock(&self.groups);
        for g in groups.values_mut() {
            if g.members.is_empty() || !cloud_api::topic::matches(&g.inner, topic) {
                continue;
            }
            let n = g.members.len();
            // Not `inner`: routing must not take a session's lock under `groups`.
            let live = |i: usize| g.members[i].0.0.online.load(Ordering::Acquire);
            let start = g.next % n;
            let pick = (0..n).map(|i| (start + i) % n).find(|&i| live(i)).unwrap_or(start);
            g.next = pick + 1;
            let (key, opts) = &g.members[pick];
            targets.push((key.0.clone(), *opts));
        }
    }

    /// Delivers `msg` to the session of `client_id` alone, whatever it
    /// subscribed to (a direct answer); nothing if there is no such session.
    /// `iot:Receive` is still checked when the connection writes it.
    pub(crate) fn deliver_to(&self, client_id: &str, msg: Message) -> Option<Blocked> {
        let session = lock(&self.sessions).get(client_id).cloned()?;
        let qos = msg.qos;
        self.offer(session, Delivery { msg: Arc::new(msg), qos, retain: false, dup: false })
    }

    /// Hands `d` to `session`: its live connection's queue, or its offline
    /// queue. Returns the delivery if it is QoS 1 and the live queue is full.
    fn offer(&self, session: Arc<Session>, d: Delivery) -> Option<Blocked> {
        let mut inner = lock(&session.inner);
        match &inner.live {
            Some(live) => match live.tx.try_send(d) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(d)) if d.qos == 1 => {
                    let tx = live.tx.clone();
                    drop(inner);
                    Some(Blocked { session, tx, delivery: d })
                }
                Err(mpsc::error::TrySendError::Full(d)) => {
                    self.dropped_slow.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(client_id = %session.client_id, topic = %d.msg.topic, "subscriber queue full; QoS 0 message dropped");
                    None
                }
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    // The connection is ending; its own leftovers are put back ahead of this.
                    if !inner.expiry.is_zero() && d.qos == 1 {
                        inner.queue.push(d);
                    }
                    None
                }
            },
            None if !inner.expiry.is_zero() && d.qos == 1 => {
                inner.queue.push(d);
                None
            }
            None => None,
        }
    }

    /// Drops deliveries that will not be waited for (counted as dropped for slow subscribers).
    pub(crate) fn give_up(&self, blocked: Vec<Blocked>) {
        for b in blocked {
            self.dropped_slow.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client_id = %b.session.client_id, topic = %b.delivery.msg.topic, "subscriber queue full; message dropped");
        }
    }

    /// Messages dropped because a subscriber's outgoing queue was full.
    pub(crate) fn dropped_for_slow_subscribers(&self) -> u64 {
        self.dropped_slow.load(Ordering::Relaxed)
    }

    /// Messages waiting in an offline session's queue (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn queued(&self, client_id: &str) -> usize {
        lock(&self.sessions).get(client_id).map(|s| lock(&s.inner).queue.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(max_queued: usize) -> Shared {
        let config = BrokerConfig { max_queued_per_session: max_queued, ..BrokerConfig::default() };
        Shared::new(Vec::new(), config)
    }

    fn msg(topic: &str, qos: u8) -> Message {
        Message::new(topic, bytes::Bytes::from_static(b"x"), qos, false)
    }

    fn expiry_for(s: &Shared, clean: bool) -> Duration {
        if clean { Duration::ZERO } else { Duration::from_secs(s.config.session_expiry_secs) }
    }

    async fn connect(s: &Shared, id: &str, clean: bool) -> (Attached, mpsc::Receiver<Delivery>, Arc<ConnCtl>) {
        let (tx, rx) = mpsc::channel(8);
        let ctl = s.new_conn(&CancellationToken::new());
        let a = s.attach(id, clean, expiry_for(s, clean), ctl.clone(), tx).await.expect("attached");
        (a, rx, ctl)
    }

    #[tokio::test]
    async fn each_session_gets_a_message_once_at_its_best_qos() {
        let s = shared(10);
        let (a, mut rx, _) = connect(&s, "a", true).await;
        s.subscribe(&a.session, &[("t/+".into(), 0), ("t/#".into(), 1), ("t/x".into(), 1)]);
        s.publish(msg("t/x", 1), None);
        let d = rx.try_recv().unwrap();
        assert_eq!((d.qos, d.msg.topic.as_str()), (1, "t/x"));
        assert!(rx.try_recv().is_err());
        s.publish(msg("t/x", 0), None);
        assert_eq!(rx.try_recv().unwrap().qos, 0);
    }

    #[tokio::test]
    async fn a_full_queue_drops_qos0_and_holds_qos1_until_there_is_room() {
        let s = Arc::new(shared(10));
        let (tx, mut rx) = mpsc::channel(1);
        let a =
            s.attach("full", true, Duration::ZERO, s.new_conn(&CancellationToken::new()), tx).await.expect("attached");
        s.subscribe(&a.session, &[("t".into(), 1)]);
        assert!(s.publish(msg("t", 1), None).is_empty(), "room for one");
        assert!(s.publish(msg("t", 0), None).is_empty());
        assert_eq!(s.dropped_for_slow_subscribers(), 1, "QoS 0 dropped when full");
        let blocked = s.publish(msg("t", 1), None);
        assert_eq!(blocked.len(), 1, "QoS 1 held back, not dropped");
        let waiting = tokio::spawn(wait_for_room(s.clone(), blocked));
        assert_eq!(rx.recv().await.unwrap().qos, 1);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("delivered once there is room").unwrap();
        assert_eq!(rx.recv().await.unwrap().qos, 1);
        assert_eq!(s.dropped_for_slow_subscribers(), 1);
    }

    #[tokio::test]
    async fn persistent_session_queues_qos1_while_offline_and_resumes() {
        let s = shared(2);
        let (a, _rx, _) = connect(&s, "p", false).await;
        assert!(!a.session_present);
        s.subscribe(&a.session, &[("t".into(), 1)]);
        s.detach(a, Vec::new);
        for i in 0..3u8 {
            s.publish(Message::new("t", vec![i], 1, false), None);
        }
        s.publish(msg("t", 0), None); // QoS 0 is not kept for offline sessions
        assert_eq!(s.queued("p"), 2);
        let (a, _rx, _) = connect(&s, "p", false).await;
        assert!(a.session_present);
        let payloads: Vec<u8> = a.backlog.iter().map(|d| d.msg.payload[0]).collect();
        assert_eq!(payloads, vec![1, 2], "oldest dropped first");
        assert_eq!(s.subscriptions(&a.session), vec!["t".to_string()]);
    }

    #[tokio::test]
    async fn clean_session_discards_the_previous_one() {
        let s = shared(10);
        let (a, _rx, _) = connect(&s, "c", false).await;
        s.subscribe(&a.session, &[("t".into(), 1)]);
        s.detach(a, Vec::new);
        s.publish(msg("t", 1), None);
        let (a, _rx, _) = connect(&s, "c", true).await;
        assert!(!a.session_present);
        assert!(a.backlog.is_empty());
        assert!(s.subscriptions(&a.session).is_empty());
        s.detach(a, Vec::new);
        assert_eq!(s.session_count(), 0);
    }

    #[tokio::test]
    async fn unacknowledged_messages_go_back_ahead_of_newer_ones() {
        let s = shared(10);
        let (a, _rx, _) = connect(&s, "u", false).await;
        s.subscribe(&a.session, &[("t".into(), 1)]);
        let unacked = Delivery { msg: Arc::new(msg("t", 1)), qos: 1, retain: false, dup: true };
        s.detach(a, || vec![unacked.clone()]);
        s.publish(msg("t", 1), None);
        let (a, _rx, _) = connect(&s, "u", false).await;
        assert_eq!(a.backlog.len(), 2);
        assert!(a.backlog[0].dup && !a.backlog[1].dup);
    }

    #[tokio::test]
    async fn a_second_connection_with_the_same_client_id_closes_the_first() {
        let s = shared(10);
        let (first, _rx1, ctl1) = connect(&s, "dup", true).await;
        let s = Arc::new(s);
        let s2 = s.clone();
        let second = tokio::spawn(async move {
            let (tx, _rx) = mpsc::channel(8);
            let ctl = s2.new_conn(&CancellationToken::new());
            s2.attach("dup", true, Duration::ZERO, ctl, tx).await.map(|a| a.session_present)
        });
        ctl1.token.cancelled().await;
        assert_eq!(ctl1.reason(), KickReason::TakenOver);
        s.detach(first, Vec::new);
        assert_eq!(second.await.unwrap(), Some(false));
    }

    #[tokio::test]
    async fn retained_messages_are_replaced_and_cleared_by_empty_payloads() {
        let s = shared(10);
        s.publish(Message { retain: true, ..msg("r", 1) }, None);
        assert_eq!(s.retained("r").unwrap().qos, 1);
        s.publish(Message::new("r", bytes::Bytes::new(), 0, true), None);
        assert!(s.retained("r").is_none());
    }

    #[tokio::test]
    async fn a_share_group_gets_each_message_once_live_members_in_turn() {
        let s = shared(10);
        let (a, mut rx_a, _) = connect(&s, "sa", true).await;
        let (b, mut rx_b, _) = connect(&s, "sb", true).await;
        let (c, _rx_c, _) = connect(&s, "sc", false).await;
        for x in [&a, &b, &c] {
            s.subscribe(&x.session, &[("$share/g/t/+".into(), 1)]);
        }
        s.detach(c, Vec::new); // offline: skipped while others are live
        for _ in 0..4 {
            s.publish(msg("t/x", 1), None);
        }
        let (mut na, mut nb) = (0, 0);
        while rx_a.try_recv().is_ok() {
            na += 1;
        }
        while rx_b.try_recv().is_ok() {
            nb += 1;
        }
        assert_eq!((na, nb), (2, 2));
        assert_eq!(s.queued("sc"), 0);
        s.unsubscribe(&a.session, &["$share/g/t/+".into()]);
        s.unsubscribe(&b.session, &["$share/g/t/+".into()]);
        s.publish(msg("t/x", 1), None);
        assert_eq!(s.queued("sc"), 1, "the last member gets it even offline");
    }

    #[tokio::test]
    async fn no_local_and_retain_as_published_options_apply_per_subscription() {
        use crate::bus::Publisher;
        let s = shared(10);
        let (a, mut rx, _) = connect(&s, "me", true).await;
        s.subscribe(&a.session, &[("mine".into(), 1 | OPT_NO_LOCAL), ("rap".into(), 1 | OPT_RETAIN_AS_PUBLISHED)]);
        let me = Publisher { client_id: "me".into(), certificate_id: "c".into() };
        s.publish(msg("mine", 1), Some(&me));
        assert!(rx.try_recv().is_err(), "no local: own message not delivered");
        s.publish(msg("mine", 1), None);
        assert!(rx.try_recv().is_ok(), "others' messages are");
        s.publish(Message { retain: true, ..msg("rap", 1) }, None);
        assert!(rx.try_recv().unwrap().retain, "retain as published");
    }

    #[tokio::test]
    async fn session_expiry_is_per_session() {
        let s = shared(10);
        let (tx, _rx) = mpsc::channel(8);
        let a =
            s.attach("short", false, Duration::from_secs(5), s.new_conn(&CancellationToken::new()), tx).await.unwrap();
        s.detach(a, Vec::new);
        assert_eq!(s.sweep_expired(Instant::now() + Duration::from_secs(6)), 1);
    }

    #[tokio::test]
    async fn offline_persistent_sessions_expire() {
        let s = shared(10);
        let (a, _rx, _) = connect(&s, "e", false).await;
        s.subscribe(&a.session, &[("t".into(), 1)]);
        s.detach(a, Vec::new);
        assert_eq!(s.sweep_expired(Instant::now()), 0);
        let later = Instant::now() + Duration::from_secs(s.config.session_expiry_secs + 1);
        assert_eq!(s.sweep_expired(later), 1);
        assert_eq!(s.session_count(), 0);
        let (a, _rx, _) = connect(&s, "e", false).await;
        assert!(!a.session_present);
    }
}
