//! A durable outbox on SQLite: messages to publish are appended (committed and fsynced
//! before [`Outbox::append`] returns), read back in order, and deleted once acknowledged.
//! A process killed at any moment loses nothing it was told was appended; on restart the
//! unacknowledged entries are sent again, so a consumer sees each message at least once
//! (duplicates only as MQTT QoS 1 allows them: an entry published but killed before its ack).
//!
//! - **Durability**: WAL journal with `synchronous=FULL`: a commit is on disk when it returns.
//! - **Order**: `seq` is SQLite's `AUTOINCREMENT` key: strictly increasing, never reused, even
//!   after every entry was acknowledged or the process restarted.
//! - **Bound**: [`OutboxConfig::max_rows`] and [`OutboxConfig::max_bytes`] (topic + payload
//!   bytes). When an append would cross a bound, the **oldest** entries are deleted in the
//!   same transaction and counted ([`Outbox::dropped`], persistent). This is the policy for
//!   telemetry: during a long outage the newest readings matter most. It is the wrong policy
//!   for messages that must never be lost; leave the bounds unset for those and watch the disk.
//! - **Ownership**: one process owns an outbox file at a time (the counts behind the bound are
//!   kept in memory). Clones of an [`Outbox`] share one connection.
//! - **Bad files**: a file that is not a SQLite database, a damaged one, or another
//!   application's database is refused with a clear error and left exactly as it was.
//!
//! Calls are synchronous SQLite calls (an fsync per append and per ack); [`Outbox::drain`] is
//! the async helper that publishes in order, acks after each success and backs off on
//! retryable failures.

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

/// `PRAGMA application_id` of an outbox file ("kitO"): tells our files from other databases.
pub const APPLICATION_ID: i32 = 0x6B69_744F;
/// `PRAGMA user_version` of the schema this module writes.
pub const SCHEMA_VERSION: i32 = 1;

/// Bounds of an outbox; `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Most entries kept; the oldest are dropped beyond it.
    pub max_rows: Option<u64>,
    /// Most topic + payload bytes kept; the oldest are dropped beyond it.
    pub max_bytes: Option<u64>,
}

/// An outbox failure, by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The file is not a SQLite database or is damaged. Fix: move the file aside (it was not
    /// changed) and start with a new one; recover what you can from the old one by hand.
    #[error("{}: not a usable outbox database ({detail}); the file was left untouched", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The file is another application's SQLite database. Fix the configured path.
    #[error("{}: a SQLite database that is not an outbox ({detail}); the file was left untouched", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What identifies it as foreign.
        detail: String,
    },
    /// The file was written by a newer schema. Fix: run the newer software, or use another file.
    #[error("{}: outbox schema version {found} is newer than this software's {SCHEMA_VERSION}", path.display())]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: i32,
    },
    /// One entry is larger than `max_bytes`: it can never be kept. Fix the input or the bound.
    #[error("an entry of {bytes} bytes exceeds the outbox bound of {max} bytes")]
    TooLarge {
        /// The entry's topic + payload bytes.
        bytes: u64,
        /// The bound.
        max: u64,
    },
    /// SQLite failed (I/O error, disk full, locked by another process). Retry later; nothing
    /// was half-written (the transaction rolled back).
    #[error("outbox storage failed: {0}")]
    Storage(#[from] rusqlite::Error),
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position: strictly increasing in append order.
    pub seq: u64,
    /// The topic to publish to.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// The durable outbox. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    config: OutboxConfig,
    state: Mutex<State>,
    appended: Notify,
    /// Woken by every acknowledgement.
    removed: Notify,
}

#[derive(Debug)]
struct State {
    conn: Connection,
    rows: u64,
    bytes: u64,
}

const CREATE: &str = "
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    INSERT INTO counters (name, value) VALUES ('dropped', 0);";

/// Bytes an entry counts against `max_bytes`, in SQL.
const ENTRY_BYTES: &str = "LENGTH(CAST(topic AS BLOB)) + LENGTH(payload)";

impl Outbox {
    /// Opens (or creates) the outbox at `path`.
    pub fn open(path: impl AsRef<Path>, config: OutboxConfig) -> Result<Self, OutboxError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path)?;
        let corrupt = |e: rusqlite::Error| classify(&path, e);
        // Read-only checks first: nothing is written to a file that is not ours.
        let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0)).map_err(corrupt)?;
        let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(corrupt)?;
        let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0)).map_err(corrupt)?;
        let fresh = app_id == 0 && tables == 0;
        if !fresh {
            if app_id != APPLICATION_ID {
                let detail = format!("application_id {app_id:#x}, {tables} schema objects");
                return Err(OutboxError::Foreign { path, detail });
            }
            if version > SCHEMA_VERSION {
                return Err(OutboxError::NewerSchema { path, found: version });
            }
            let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(corrupt)?;
            if check != "ok" {
                return Err(OutboxError::Corrupt { path, detail: check });
            }
        }
        conn.busy_timeout(Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(corrupt)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OutboxError::Corrupt { path, detail: format!("cannot use WAL journal (got {mode})") });
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        if fresh {
            conn.execute_batch(&format!(
                "BEGIN IMMEDIATE; {CREATE} PRAGMA application_id = {APPLICATION_ID}; \
                 PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))?;
        }
        let (rows, bytes) = conn
            .query_row(&format!("SELECT COUNT(*), COALESCE(SUM({ENTRY_BYTES}), 0) FROM outbox"), [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| match e {
                // The id matched but the tables are missing or different.
                rusqlite::Error::SqliteFailure(..) => {
                    OutboxError::Corrupt { path: path.clone(), detail: format!("outbox table unreadable: {e}") }
                }
                other => OutboxError::Storage(other),
            })?;
        let state = State { conn, rows: rows as u64, bytes: bytes as u64 };
        let shared = Shared { path, config, state: Mutex::new(state), appended: Notify::new(), removed: Notify::new() };
        Ok(Outbox { shared: Arc::new(shared) })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so the state is still usable.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a message; returns its `seq` once it is committed and on disk. May drop the
    /// oldest entries to stay within the bounds (see the module docs).
    pub fn append(&self, topic: &str, payload: &[u8]) -> Result<u64, OutboxError> {
        let size = (topic.len() + payload.len()) as u64;
        if let Some(max) = self.shared.config.max_bytes
            && size > max
        {
            return Err(OutboxError::TooLarge { bytes: size, max });
        }
        let mut state = self.lock();
        let (mut rows, mut bytes) = (state.rows + 1, state.bytes + size);
        let tx = state.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("INSERT INTO outbox (topic, payload) VALUES (?1, ?2)", params![topic, payload])?;
        let seq = tx.last_insert_rowid() as u64;
        let mut dropped = 0u64;
        let over = |rows: u64, bytes: u64| {
            self.shared.config.max_rows.is_some_and(|m| rows > m)
                || self.shared.config.max_bytes.is_some_and(|m| bytes > m)
        };
        while over(rows, bytes) {
            let oldest: Option<(i64, i64)> = tx
                .query_row(&format!("SELECT seq, {ENTRY_BYTES} FROM outbox ORDER BY seq LIMIT 1"), [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((old_seq, old_bytes)) = oldest else { break };
            tx.execute("DELETE FROM outbox WHERE seq = ?1", [old_seq])?;
            rows -= 1;
            bytes -= old_bytes as u64;
            dropped += 1;
        }
        if dropped > 0 {
            tx.execute("UPDATE counters SET value = value + ?1 WHERE name = 'dropped'", [dropped as i64])?;
        }
        tx.commit()?;
        state.rows = rows;
        state.bytes = bytes;
        drop(state);
        self.shared.appended.notify_waiters();
        Ok(seq)
    }

    /// The oldest `n` entries, in order; none are removed.
    pub fn peek(&self, n: usize) -> Result<Vec<Entry>, OutboxError> {
        let state = self.lock();
        let mut stmt = state.conn.prepare_cached("SELECT seq, topic, payload FROM outbox ORDER BY seq LIMIT ?1")?;
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = stmt.query_map([limit], |r| {
            Ok(Entry { seq: r.get::<_, i64>(0)? as u64, topic: r.get(1)?, payload: r.get(2)? })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes every entry with `seq <= up_to` (they were published); returns how many.
    pub fn ack(&self, up_to: u64) -> Result<u64, OutboxError> {
        let up_to = i64::try_from(up_to).unwrap_or(i64::MAX);
        let mut state = self.lock();
        let tx = state.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (rows, bytes): (i64, i64) = tx.query_row(
            &format!("SELECT COUNT(*), COALESCE(SUM({ENTRY_BYTES}), 0) FROM outbox WHERE seq <= ?1"),
            [up_to],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        tx.execute("DELETE FROM outbox WHERE seq <= ?1", [up_to])?;
        tx.commit()?;
        state.rows -= rows as u64;
        state.bytes -= bytes as u64;
        drop(state);
        self.shared.removed.notify_waiters();
        Ok(rows as u64)
    }

    /// Entries waiting.
    pub fn len(&self) -> u64 {
        self.lock().rows
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Topic + payload bytes waiting.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Entries dropped by the bound since the file was created.
    pub fn dropped(&self) -> Result<u64, OutboxError> {
        let state = self.lock();
        let n: i64 = state.conn.query_row("SELECT value FROM counters WHERE name = 'dropped'", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Returns once every entry has been acknowledged (at once if none waits).
    pub async fn wait_until_empty(&self) {
        loop {
            let notified = self.shared.removed.notified();
            tokio::pin!(notified);
            // Registered before the check, as in `wait_for_entries`.
            notified.as_mut().enable();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Stops `drain` (the task that sends this outbox) at shutdown, after it has sent what waits,
    /// or after `grace` when it cannot (IoT Core unreachable): a clean stop leaves nothing to be
    /// sent twice, and an unclean one keeps what was not acknowledged for the next start.
    pub async fn stop_drain<T>(&self, drain: tokio::task::JoinHandle<T>, grace: std::time::Duration) {
        if !drain.is_finished() {
            let _ = tokio::time::timeout(grace, self.wait_until_empty()).await;
        }
        drain.abort();
    }

    /// Returns once the outbox holds at least one entry (at once if it already does).
    pub async fn wait_for_entries(&self) {
        loop {
            let notified = self.shared.appended.notified();
            tokio::pin!(notified);
            // Registered before the check, so an append between the check and the await
            // still wakes us.
            notified.as_mut().enable();
            if !self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Publishes every waiting entry in `seq` order with `publish`, acknowledging each after
    /// its publish succeeded, and returns when the outbox is empty.
    ///
    /// A [`PublishError::Retryable`] failure is retried (same entry, nothing after it is sent
    /// first) after a pause that doubles from `initial_backoff` up to `max_backoff`. A
    /// [`PublishError::Permanent`] failure stops the drain with [`DrainError::Rejected`] and
    /// leaves the entry in place: the caller decides (log it and `ack(seq)` to skip it, or fix
    /// the cause). Dropping the future is safe: an entry is acknowledged only after its publish
    /// succeeded, so at worst it is published again later.
    pub async fn drain<F, Fut>(&self, config: &DrainConfig, mut publish: F) -> Result<DrainReport, DrainError>
    where
        F: FnMut(Entry) -> Fut,
        Fut: Future<Output = Result<(), PublishError>>,
    {
        let mut report = DrainReport::default();
        loop {
            let entries = self.peek(config.batch.max(1))?;
            if entries.is_empty() {
                return Ok(report);
            }
            for entry in entries {
                let mut pause = config.initial_backoff;
                loop {
                    match publish(entry.clone()).await {
                        Ok(()) => {
                            self.ack(entry.seq)?;
                            report.sent += 1;
                            break;
                        }
                        Err(PublishError::Retryable(_)) => {
                            report.retries += 1;
                            tokio::time::sleep(pause).await;
                            pause = pause.saturating_mul(2).min(config.max_backoff);
                        }
                        Err(PublishError::Permanent(reason)) => {
                            return Err(DrainError::Rejected { seq: entry.seq, topic: entry.topic, reason });
                        }
                    }
                }
            }
        }
    }
}

/// How [`Outbox::drain`] paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainConfig {
    /// Entries read from the database at a time.
    pub batch: usize,
    /// The first pause after a retryable failure.
    pub initial_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
}

impl Default for DrainConfig {
    /// 64 entries a read, pauses from 1 s to 60 s.
    fn default() -> Self {
        DrainConfig { batch: 64, initial_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(60) }
    }
}

/// Why a publish failed, as the publish function sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishError {
    /// Try again later (no connection, throttled, timed out).
    Retryable(String),
    /// Will never succeed as is (not authorized, too large).
    Permanent(String),
}

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Entries published and acknowledged.
    pub sent: u64,
    /// Retryable failures (each followed by a pause).
    pub retries: u64,
}

/// A drain that stopped.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The database failed; retry later.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// A publish failed for good; the entry is still in the outbox.
    #[error("publishing entry {seq} to {topic} failed for good: {reason}")]
    Rejected {
        /// The entry.
        seq: u64,
        /// Its topic.
        topic: String,
        /// The publish function's reason.
        reason: String,
    },
}

/// Sorts an error met while checking a file: a file SQLite cannot read as a database is
/// corrupt; anything else is a storage failure.
fn classify(path: &Path, error: rusqlite::Error) -> OutboxError {
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            OutboxError::Corrupt { path: path.to_path_buf(), detail: error.to_string() }
        }
        _ => OutboxError::Storage(error),
    }
}

#[cfg(test)]
mod tests;
