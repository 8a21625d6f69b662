//! Durable local shadows and sync state, in one SQLite file under the ShadowManager's work
//! directory (`{root}/work/aws.greengrass.ShadowManager/shadows.sqlite`), so a core restart
//! keeps every local shadow and knows what was synced before it went down.
//!
//! Each write is one transaction (WAL, `synchronous=FULL`): a failed write leaves the previous
//! record in place, as [`ShadowPersistence`] requires.

use std::path::Path;
use std::sync::Mutex;

use cloud_api::shadow::ShadowRecord;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::local_shadow::{ShadowKey, ShadowPersistence};

/// What the sync engine remembers about one shadow between syncs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// The state both sides agreed on at the last sync (`None`: never synced, or deleted).
    pub base: Option<Value>,
    /// The cloud shadow's version after the last sync (0: unknown).
    pub cloud_version: u64,
    /// The local shadow's version after the last sync (0: unknown).
    pub local_version: u64,
}

/// The SQLite store.
pub struct SqliteShadowStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteShadowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteShadowStore").finish_non_exhaustive()
    }
}

fn sql_err(context: &str) -> impl Fn(rusqlite::Error) -> String + '_ {
    move |e| format!("{context}: {e}")
}

impl SqliteShadowStore {
    /// Opens (creating) the store. A file that is not a database of ours is an error; it is
    /// never deleted or overwritten.
    pub fn open(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let conn = Connection::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS shadows (
                 thing TEXT NOT NULL, shadow TEXT NOT NULL, record TEXT NOT NULL,
                 PRIMARY KEY (thing, shadow));
             CREATE TABLE IF NOT EXISTS sync (
                 thing TEXT NOT NULL, shadow TEXT NOT NULL, record TEXT NOT NULL,
                 PRIMARY KEY (thing, shadow));",
        )
        .map_err(|e| format!("{} is not a usable shadow store: {e}", path.display()))?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The sync record of a shadow (default when never synced).
    pub fn sync_record(&self, key: &ShadowKey) -> Result<SyncRecord, String> {
        let text: Option<String> = self
            .lock()
            .query_row("SELECT record FROM sync WHERE thing = ?1 AND shadow = ?2", params![key.0, key.1], |r| r.get(0))
            .optional()
            .map_err(sql_err("reading a sync record"))?;
        match text {
            None => Ok(SyncRecord::default()),
            Some(t) => serde_json::from_str(&t).map_err(|e| format!("corrupt sync record for {key:?}: {e}")),
        }
    }

    /// Stores the sync record of a shadow.
    pub fn save_sync_record(&self, key: &ShadowKey, record: &SyncRecord) -> Result<(), String> {
        let text = serde_json::to_string(record).map_err(|e| e.to_string())?;
        self.lock()
            .execute(
                "INSERT INTO sync (thing, shadow, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT (thing, shadow) DO UPDATE SET record = excluded.record",
                params![key.0, key.1, text],
            )
            .map(drop)
            .map_err(sql_err("writing a sync record"))
    }
}

impl ShadowPersistence for SqliteShadowStore {
    fn load_all(&self) -> Result<Vec<(ShadowKey, ShadowRecord)>, String> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT thing, shadow, record FROM shadows").map_err(sql_err("reading shadows"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(sql_err("reading shadows"))?;
        let mut out = Vec::new();
        for row in rows {
            let (thing, shadow, text) = row.map_err(sql_err("reading shadows"))?;
            let record: ShadowRecord =
                serde_json::from_str(&text).map_err(|e| format!("corrupt stored shadow {thing}/{shadow:?}: {e}"))?;
            out.push(((thing, shadow), record));
        }
        Ok(out)
    }

    fn save(&self, key: &ShadowKey, record: &ShadowRecord) -> Result<(), String> {
        let text = serde_json::to_string(record).map_err(|e| e.to_string())?;
        self.lock()
            .execute(
                "INSERT INTO shadows (thing, shadow, record) VALUES (?1, ?2, ?3)
                 ON CONFLICT (thing, shadow) DO UPDATE SET record = excluded.record",
                params![key.0, key.1, text],
            )
            .map(drop)
            .map_err(sql_err("writing a shadow"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shadows_and_sync_records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("work/x/shadows.sqlite");
        let key: ShadowKey = ("core".into(), "pump".into());
        let record = ShadowRecord::default().update(
            br#"{"state":{"desired":{"a":1}}}"#,
            1,
            cloud_api::shadow::ShadowLimits::IOT_CORE,
        );
        let record = record.unwrap().record;
        {
            let store = SqliteShadowStore::open(&path).unwrap();
            store.save(&key, &record).unwrap();
            let sync = SyncRecord { base: Some(json!({"desired": {"a": 1}})), cloud_version: 4, local_version: 1 };
            store.save_sync_record(&key, &sync).unwrap();
        }
        let store = SqliteShadowStore::open(&path).unwrap();
        assert_eq!(store.load_all().unwrap(), vec![(key.clone(), record)]);
        assert_eq!(store.sync_record(&key).unwrap().cloud_version, 4);
        assert_eq!(store.sync_record(&("core".into(), "other".into())).unwrap(), SyncRecord::default());
    }

    #[test]
    fn a_foreign_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shadows.sqlite");
        std::fs::write(&path, b"not a database, but someone's data").unwrap();
        let err = SqliteShadowStore::open(&path).unwrap_err();
        assert!(err.contains("not a usable shadow store"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"not a database, but someone's data");
    }
}
