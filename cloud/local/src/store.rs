//! Durable state in one SQLite database (`state.sqlite` in the data directory):
//! the registry's records and the shadows. Every change is one transaction, so
//! a crash never leaves half a change behind.

use std::path::Path;
use std::sync::{Arc, Mutex};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StoreError(#[from] pub rusqlite::Error);

/// One write of a batch (see [`Store::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace `(kind, key) → value`.
    Put {
        /// Record kind (table-like namespace).
        kind: &'static str,
        /// Key within the kind.
        key: String,
        /// JSON value.
        value: String,
    },
    /// Remove `(kind, key)`.
    Delete {
        /// Record kind.
        kind: &'static str,
        /// Key within the kind.
        key: String,
    },
}

/// A handle to the database, cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        Self::init(conn)
    }

    /// An in-memory database, for tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(rusqlite::Connection::open_in_memory()?)
    }

    fn init(conn: rusqlite::Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (
                kind TEXT NOT NULL,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (kind, key)
            );",
        )?;
        Ok(Store { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` on the connection inside one transaction.
    pub fn transaction<T>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, rusqlite::Error>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Applies several writes in one transaction: all or nothing.
    pub fn apply(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.transaction(|tx| {
            for op in ops {
                match op {
                    Op::Put { kind, key, value } => {
                        tx.execute(
                            "INSERT OR REPLACE INTO records (kind, key, value) VALUES (?1, ?2, ?3)",
                            (kind, key, value),
                        )?;
                    }
                    Op::Delete { kind, key } => {
                        tx.execute("DELETE FROM records WHERE kind = ?1 AND key = ?2", (kind, key))?;
                    }
                }
            }
            Ok(())
        })
    }

    /// Folds the write-ahead log into the database file (on clean shutdown).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
        Ok(())
    }

    /// Writes (or replaces) one record.
    pub fn put(&self, kind: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.transaction(|tx| {
            tx.execute("INSERT OR REPLACE INTO records (kind, key, value) VALUES (?1, ?2, ?3)", (kind, key, value))?;
            Ok(())
        })
    }

    /// Deletes one record (no error if absent).
    pub fn delete(&self, kind: &str, key: &str) -> Result<(), StoreError> {
        self.transaction(|tx| {
            tx.execute("DELETE FROM records WHERE kind = ?1 AND key = ?2", (kind, key))?;
            Ok(())
        })
    }

    /// Reads one record.
    pub fn get(&self, kind: &str, key: &str) -> Result<Option<String>, StoreError> {
        self.transaction(|tx| {
            let mut stmt = tx.prepare("SELECT value FROM records WHERE kind = ?1 AND key = ?2")?;
            let mut rows = stmt.query((kind, key))?;
            match rows.next()? {
                Some(row) => Ok(Some(row.get(0)?)),
                None => Ok(None),
            }
        })
    }

    /// Every record of a kind, ordered by key.
    pub fn all(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.transaction(|tx| {
            let mut stmt = tx.prepare("SELECT key, value FROM records WHERE kind = ?1 ORDER BY key")?;
            let rows = stmt.query_map([kind], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Records of a kind whose key starts with `prefix`, ordered by key.
    pub fn with_prefix(&self, kind: &str, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        // A range on the primary key, so only the matching records are read:
        // every key starting with `prefix` sorts between `prefix` and `prefix` + U+10FFFF.
        let upper = format!("{prefix}\u{10FFFF}");
        self.transaction(|tx| {
            let mut stmt =
                tx.prepare("SELECT key, value FROM records WHERE kind = ?1 AND key >= ?2 AND key < ?3 ORDER BY key")?;
            let rows = stmt.query_map((kind, prefix, &upper), |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_reads_exactly_the_keys_that_start_with_it() {
        let store = Store::in_memory().unwrap();
        for key in ["pump\n", "pump\na", "pump\nz\u{FFFF}", "pump-2\na", "pum", "pumq"] {
            store.put("shadow", key, "{}").unwrap();
        }
        store.put("other", "pump\nb", "{}").unwrap();
        let keys: Vec<String> = store.with_prefix("shadow", "pump\n").unwrap().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["pump\n", "pump\na", "pump\nz\u{FFFF}"]);
    }
}
