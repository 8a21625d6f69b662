//! CloudWatch Logs' state in its own SQLite database (`logs.sqlite`): log groups, log streams
//! and events in tables, so GetLogEvents and FilterLogEvents read ranges of an index instead
//! of whole records. Every operation is one transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use super::filter::Pattern;
use super::{
    CreateLogGroup, DescribeLogGroups, DescribeLogStreams, Direction, EVENT_OVERHEAD_BYTES, FilterLogEvents,
    GetLogEvents, GroupRequest, LogsError, MAX_PAGE_BYTES, NEWEST_FIRST_SINCE_MILLIS, Operation, Position,
    PutLogEvents, PutRetentionPolicy, RETENTION_DAYS, StreamRequest, answer_tokens, check_group_name,
    check_stream_name, describe_limit, events_limit, filter_token, group_of, page, parse, parse_filter_token,
    parse_stream_token, sort_batch,
};
use crate::time::SharedClock;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log_groups (
    name TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    retention_days INTEGER,
    class TEXT NOT NULL,
    stored_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS log_streams (
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    first_event INTEGER,
    last_event INTEGER,
    last_ingestion INTEGER,
    PRIMARY KEY (grp, name)
);
CREATE TABLE IF NOT EXISTS log_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    grp TEXT NOT NULL,
    stream TEXT NOT NULL,
    ts INTEGER NOT NULL,
    ingestion INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_events_by_stream ON log_events (grp, stream, ts, id);
CREATE INDEX IF NOT EXISTS log_events_by_group ON log_events (grp, ts, id);
";

/// The local cloud's CloudWatch Logs, cheap to clone.
#[derive(Clone)]
pub struct Logs {
    conn: Arc<Mutex<rusqlite::Connection>>,
    clock: SharedClock,
    region: String,
    account: String,
}

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logs").field("region", &self.region).field("account", &self.account).finish()
    }
}

impl From<rusqlite::Error> for LogsError {
    fn from(e: rusqlite::Error) -> Self {
        LogsError::internal(format!("storage: {e}"))
    }
}

impl Logs {
    /// Opens (or creates) the database file `path`.
    pub fn open(path: &Path, clock: SharedClock, region: &str, account: &str) -> anyhow::Result<Self> {
        let conn = rusqlite::Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Self::init(conn, clock, region, account)
    }

    /// A database in memory, for tests.
    pub fn memory(clock: SharedClock, region: &str, account: &str) -> anyhow::Result<Self> {
        Self::init(rusqlite::Connection::open_in_memory()?, clock, region, account)
    }

    fn init(conn: rusqlite::Connection, clock: SharedClock, region: &str, account: &str) -> anyhow::Result<Self> {
        conn.execute_batch(SCHEMA)?;
        Ok(Logs { conn: Arc::new(Mutex::new(conn)), clock, region: region.to_owned(), account: account.to_owned() })
    }

    /// The region in the ARNs.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account in the ARNs.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Folds the write-ahead log into the database file (on clean shutdown).
    pub fn checkpoint(&self) -> Result<(), LogsError> {
        let conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        conn.pragma_update(None, "wal_checkpoint", "TRUNCATE")?;
        Ok(())
    }

    /// Runs `op` on its JSON request; the JSON answer. Synchronous (SQLite): call it from the
    /// blocking pool.
    pub fn call(&self, op: Operation, request: &Value) -> Result<Value, LogsError> {
        let now = self.clock.now_millis() as i64;
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let answer = match op {
            Operation::CreateLogGroup => create_group(&tx, parse(request)?, now),
            Operation::DeleteLogGroup => delete_group(&tx, parse(request)?),
            Operation::DescribeLogGroups => self.describe_groups(&tx, parse(request)?),
            Operation::PutRetentionPolicy => put_retention(&tx, parse(request)?, now),
            Operation::DeleteRetentionPolicy => delete_retention(&tx, parse(request)?),
            Operation::CreateLogStream => create_stream(&tx, parse(request)?, now),
            Operation::DeleteLogStream => delete_stream(&tx, parse(request)?),
            Operation::DescribeLogStreams => self.describe_streams(&tx, parse(request)?),
            Operation::PutLogEvents => put_events(&tx, parse(request)?, now),
            Operation::GetLogEvents => get_events(&tx, parse(request)?),
            Operation::FilterLogEvents => filter_events(&tx, parse(request)?),
        }?;
        tx.commit()?;
        Ok(answer)
    }

    fn group_arn(&self, name: &str) -> String {
        format!("arn:aws:logs:{}:{}:log-group:{name}", self.region, self.account)
    }

    fn describe_groups(&self, tx: &rusqlite::Transaction<'_>, r: DescribeLogGroups) -> Result<Value, LogsError> {
        let limit = describe_limit(r.limit)?;
        if let Some(prefix) = &r.log_group_name_prefix {
            check_group_name("logGroupNamePrefix", prefix)?;
            if r.log_group_name_pattern.is_some() {
                return Err(LogsError::invalid(
                    "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
                ));
            }
        }
        let only: Option<Vec<String>> = match &r.log_group_identifiers {
            None => None,
            Some(_) if r.log_group_name_prefix.is_some() || r.log_group_name_pattern.is_some() => {
                return Err(LogsError::invalid(
                    "logGroupIdentifiers cannot be combined with logGroupNamePrefix or logGroupNamePattern.",
                ));
            }
            Some(ids) if ids.is_empty() || ids.len() > 50 => {
                return Err(LogsError::invalid("logGroupIdentifiers must name between 1 and 50 log groups"));
            }
            Some(ids) => Some(ids.iter().map(|id| group_of(None, Some(id))).collect::<Result<_, _>>()?),
        };
        let prefix = r.log_group_name_prefix.unwrap_or_default();
        let mut stmt = tx.prepare(
            "SELECT name, created, retention_days, class, stored_bytes FROM log_groups
             WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name",
        )?;
        let rows = stmt.query_map([&prefix], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<i64>>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
            ))
        })?;
        let mut groups = Vec::new();
        for row in rows {
            let (name, created, retention, class, stored) = row?;
            if r.log_group_name_pattern.as_deref().is_some_and(|p| !name.contains(p))
                || r.log_group_class.as_deref().is_some_and(|c| c != class)
                || only.as_ref().is_some_and(|names| !names.contains(&name))
            {
                continue;
            }
            let arn = self.group_arn(&name);
            if r.log_group_name_pattern.is_some() {
                // AWS answers a pattern search with these three members only.
                groups.push(json!({"logGroupName": name, "creationTime": created, "arn": format!("{arn}:*")}));
                continue;
            }
            let mut group = json!({
                "logGroupName": name, "creationTime": created, "metricFilterCount": 0,
                "arn": format!("{arn}:*"), "logGroupArn": arn, "storedBytes": stored, "logGroupClass": class,
            });
            if let Some(days) = retention {
                group["retentionInDays"] = json!(days);
            }
            groups.push(group);
        }
        let (groups, next) = page(groups, r.next_token.as_deref(), limit)?;
        Ok(with_token(json!({ "logGroups": groups }), "nextToken", next))
    }

    fn describe_streams(&self, tx: &rusqlite::Transaction<'_>, r: DescribeLogStreams) -> Result<Value, LogsError> {
        let group = group_of(r.log_group_name.as_deref(), r.log_group_identifier.as_deref())?;
        let limit = describe_limit(r.limit)?;
        let by_time = match r.order_by.as_deref() {
            None | Some("LogStreamName") => false,
            Some("LastEventTime") => true,
            Some(other) => {
                return Err(LogsError::invalid(format!(
                    "1 validation error detected: Value '{other}' at 'orderBy' failed to satisfy constraint: \
                     Member must satisfy enum value set: [LogStreamName, LastEventTime]"
                )));
            }
        };
        if by_time && r.log_stream_name_prefix.is_some() {
            return Err(LogsError::invalid("Cannot order by LastEventTime with a logStreamNamePrefix."));
        }
        if let Some(prefix) = &r.log_stream_name_prefix {
            check_stream_name("logStreamNamePrefix", prefix)?;
        }
        require_group(tx, &group)?;
        let prefix = r.log_stream_name_prefix.unwrap_or_default();
        let order = match (by_time, r.descending.unwrap_or(false)) {
            (false, false) => "name ASC",
            (false, true) => "name DESC",
            // A stream without events sorts first, as one whose last event is oldest.
            (true, false) => "COALESCE(last_event, -1) ASC, name ASC",
            (true, true) => "COALESCE(last_event, -1) DESC, name DESC",
        };
        let mut stmt = tx.prepare(&format!(
            "SELECT name, created, first_event, last_event, last_ingestion FROM log_streams
             WHERE grp = ?1 AND substr(name, 1, length(?2)) = ?2 ORDER BY {order}"
        ))?;
        let arn = self.group_arn(&group);
        let rows = stmt.query_map(params![group, prefix], |row| {
            let name: String = row.get(0)?;
            let mut stream = json!({
                "logStreamName": name, "creationTime": row.get::<_, i64>(1)?,
                "arn": format!("{arn}:log-stream:{name}"), "storedBytes": 0,
            });
            for (i, member) in [(2, "firstEventTimestamp"), (3, "lastEventTimestamp"), (4, "lastIngestionTime")] {
                if let Some(t) = row.get::<_, Option<i64>>(i)? {
                    stream[member] = json!(t);
                }
            }
            Ok(stream)
        })?;
        let streams = rows.collect::<Result<Vec<_>, _>>()?;
        let (streams, next) = page(streams, r.next_token.as_deref(), limit)?;
        Ok(with_token(json!({ "logStreams": streams }), "nextToken", next))
    }
}

fn with_token(mut answer: Value, member: &str, token: Option<String>) -> Value {
    if let Some(token) = token {
        answer[member] = json!(token);
    }
    answer
}

/// The group's retention, or ResourceNotFoundException.
fn require_group(tx: &rusqlite::Transaction<'_>, group: &str) -> Result<Option<i64>, LogsError> {
    tx.query_row("SELECT retention_days FROM log_groups WHERE name = ?1", [group], |row| row.get(0))
        .optional()?
        .ok_or_else(LogsError::group_not_found)
}

fn require_stream(tx: &rusqlite::Transaction<'_>, group: &str, stream: &str) -> Result<Option<i64>, LogsError> {
    let retention = require_group(tx, group)?;
    let found = tx
        .query_row("SELECT 1 FROM log_streams WHERE grp = ?1 AND name = ?2", [group, stream], |_| Ok(()))
        .optional()?;
    found.map(|()| retention).ok_or_else(LogsError::stream_not_found)
}

fn create_group(tx: &rusqlite::Transaction<'_>, r: CreateLogGroup, now: i64) -> Result<Value, LogsError> {
    check_group_name("logGroupName", &r.log_group_name)?;
    let class = r.log_group_class.unwrap_or_else(|| "STANDARD".into());
    if !matches!(class.as_str(), "STANDARD" | "INFREQUENT_ACCESS") {
        return Err(LogsError::invalid(format!(
            "the local cloud's CloudWatch Logs keeps STANDARD and INFREQUENT_ACCESS log groups, not {class}"
        )));
    }
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO log_groups (name, created, class) VALUES (?1, ?2, ?3)",
        params![r.log_group_name, now, class],
    )?;
    if inserted == 0 {
        return Err(LogsError::already_exists("The specified log group already exists"));
    }
    Ok(json!({}))
}

fn delete_group(tx: &rusqlite::Transaction<'_>, r: GroupRequest) -> Result<Value, LogsError> {
    check_group_name("logGroupName", &r.log_group_name)?;
    require_group(tx, &r.log_group_name)?;
    tx.execute("DELETE FROM log_events WHERE grp = ?1", [&r.log_group_name])?;
    tx.execute("DELETE FROM log_streams WHERE grp = ?1", [&r.log_group_name])?;
    tx.execute("DELETE FROM log_groups WHERE name = ?1", [&r.log_group_name])?;
    Ok(json!({}))
}

fn put_retention(tx: &rusqlite::Transaction<'_>, r: PutRetentionPolicy, now: i64) -> Result<Value, LogsError> {
    check_group_name("logGroupName", &r.log_group_name)?;
    if !RETENTION_DAYS.contains(&r.retention_in_days) {
        return Err(LogsError::invalid(format!(
            "1 validation error detected: Value '{}' at 'retentionInDays' failed to satisfy constraint: \
             Member must satisfy enum value set: {RETENTION_DAYS:?}",
            r.retention_in_days
        )));
    }
    require_group(tx, &r.log_group_name)?;
    tx.execute(
        "UPDATE log_groups SET retention_days = ?2 WHERE name = ?1",
        params![r.log_group_name, r.retention_in_days],
    )?;
    expire(tx, &r.log_group_name, Some(r.retention_in_days), now)?;
    Ok(json!({}))
}

fn delete_retention(tx: &rusqlite::Transaction<'_>, r: GroupRequest) -> Result<Value, LogsError> {
    check_group_name("logGroupName", &r.log_group_name)?;
    require_group(tx, &r.log_group_name)?;
    tx.execute("UPDATE log_groups SET retention_days = NULL WHERE name = ?1", [&r.log_group_name])?;
    Ok(json!({}))
}

/// Deletes a group's events older than its retention period (AWS deletes them some time after).
fn expire(tx: &rusqlite::Transaction<'_>, group: &str, retention_days: Option<i64>, now: i64) -> Result<(), LogsError> {
    let Some(days) = retention_days else { return Ok(()) };
    let before = now - days * super::DAY_MILLIS;
    let freed: i64 = tx.query_row(
        "SELECT COALESCE(SUM(length(CAST(message AS BLOB))), 0) FROM log_events WHERE grp = ?1 AND ts < ?2",
        params![group, before],
        |row| row.get(0),
    )?;
    if freed > 0 {
        tx.execute("DELETE FROM log_events WHERE grp = ?1 AND ts < ?2", params![group, before])?;
        tx.execute(
            "UPDATE log_groups SET stored_bytes = MAX(stored_bytes - ?2, 0) WHERE name = ?1",
            params![group, freed],
        )?;
    }
    Ok(())
}

fn create_stream(tx: &rusqlite::Transaction<'_>, r: StreamRequest, now: i64) -> Result<Value, LogsError> {
    check_group_name("logGroupName", &r.log_group_name)?;
    check_stream_name("logStreamName", &r.log_stream_name)?;
    require_group(tx, &r.log_group_name)?;
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO log_streams (grp, name, created) VALUES (?1, ?2, ?3)",
        params![r.log_group_name, r.log_stream_name, now],
    )?;
    if inserted == 0 {
        return Err(LogsError::already_exists("The specified log stream already exists"));
    }
    Ok(json!({}))
}

fn delete_stream(tx: &rusqlite::Transaction<'_>, r: StreamRequest) -> Result<Value, LogsError> {
    check_group_name("logGroupName", &r.log_group_name)?;
    check_stream_name("logStreamName", &r.log_stream_name)?;
    require_stream(tx, &r.log_group_name, &r.log_stream_name)?;
    let freed: i64 = tx.query_row(
        "SELECT COALESCE(SUM(length(CAST(message AS BLOB))), 0) FROM log_events WHERE grp = ?1 AND stream = ?2",
        [&r.log_group_name, &r.log_stream_name],
        |row| row.get(0),
    )?;
    tx.execute("DELETE FROM log_events WHERE grp = ?1 AND stream = ?2", [&r.log_group_name, &r.log_stream_name])?;
    tx.execute("DELETE FROM log_streams WHERE grp = ?1 AND name = ?2", [&r.log_group_name, &r.log_stream_name])?;
    tx.execute(
        "UPDATE log_groups SET stored_bytes = MAX(stored_bytes - ?2, 0) WHERE name = ?1",
        params![r.log_group_name, freed],
    )?;
    Ok(json!({}))
}

fn put_events(tx: &rusqlite::Transaction<'_>, r: PutLogEvents, now: i64) -> Result<Value, LogsError> {
    check_group_name("logGroupName", &r.log_group_name)?;
    check_stream_name("logStreamName", &r.log_stream_name)?;
    let retention = require_stream(tx, &r.log_group_name, &r.log_stream_name)?;
    let sizes: Vec<(i64, usize)> = r.log_events.iter().map(|e| (e.timestamp, e.message.len())).collect();
    let batch = sort_batch(&sizes, now, retention)?;
    let kept = &r.log_events[batch.accepted.clone()];
    if let (Some(first), Some(last)) = (kept.first(), kept.last()) {
        let mut insert = tx.prepare_cached(
            "INSERT INTO log_events (grp, stream, ts, ingestion, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for event in kept {
            insert.execute(params![r.log_group_name, r.log_stream_name, event.timestamp, now, event.message])?;
        }
        tx.execute(
            "UPDATE log_streams SET first_event = MIN(COALESCE(first_event, ?3), ?3),
                 last_event = MAX(COALESCE(last_event, ?4), ?4), last_ingestion = ?5
             WHERE grp = ?1 AND name = ?2",
            params![r.log_group_name, r.log_stream_name, first.timestamp, last.timestamp, now],
        )?;
        let bytes: usize = kept.iter().map(|e| e.message.len()).sum();
        tx.execute(
            "UPDATE log_groups SET stored_bytes = stored_bytes + ?2 WHERE name = ?1",
            params![r.log_group_name, bytes as i64],
        )?;
    }
    expire(tx, &r.log_group_name, retention, now)?;
    let next_sequence: i64 = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM log_events", [], |row| row.get(0))?;
    let mut answer = json!({ "nextSequenceToken": format!("{next_sequence:056}") });
    let mut rejected = serde_json::Map::new();
    for (member, index) in [
        ("tooNewLogEventStartIndex", batch.too_new_start),
        ("tooOldLogEventEndIndex", batch.too_old_end),
        ("expiredLogEventEndIndex", batch.expired_end),
    ] {
        if let Some(i) = index {
            rejected.insert(member.into(), json!(i));
        }
    }
    if !rejected.is_empty() {
        answer["rejectedLogEventsInfo"] = Value::Object(rejected);
    }
    Ok(answer)
}

struct Row {
    at: Position,
    stream: String,
    ingestion: i64,
    message: String,
}

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        at: Position { id: row.get(0)?, timestamp: row.get(2)? },
        stream: row.get(1)?,
        ingestion: row.get(3)?,
        message: row.get(4)?,
    })
}

/// Whether one more event still fits an answer of `bytes` so far.
fn fits(bytes: &mut usize, message: &str) -> bool {
    let size = message.len() + EVENT_OVERHEAD_BYTES;
    if *bytes + size > MAX_PAGE_BYTES {
        return false;
    }
    *bytes += size;
    true
}

fn get_events(tx: &rusqlite::Transaction<'_>, r: GetLogEvents) -> Result<Value, LogsError> {
    let group = group_of(r.log_group_name.as_deref(), r.log_group_identifier.as_deref())?;
    check_stream_name("logStreamName", &r.log_stream_name)?;
    let limit = events_limit(r.limit)?;
    let from = match r.next_token.as_deref() {
        Some(token) => parse_stream_token(token)?,
        None if r.start_from_head.unwrap_or(false) => (Direction::Forward, Position::HEAD),
        None => (Direction::Backward, Position::TAIL),
    };
    require_stream(tx, &group, &r.log_stream_name)?;
    let (start, end) = (r.start_time.unwrap_or(i64::MIN), r.end_time.unwrap_or(i64::MAX));
    let sql = match from.0 {
        Direction::Forward => {
            "SELECT id, stream, ts, ingestion, message FROM log_events
             WHERE grp = ?1 AND stream = ?2 AND ts >= ?3 AND ts < ?4 AND (ts > ?5 OR (ts = ?5 AND id > ?6))
             ORDER BY ts ASC, id ASC LIMIT ?7"
        }
        Direction::Backward => {
            "SELECT id, stream, ts, ingestion, message FROM log_events
             WHERE grp = ?1 AND stream = ?2 AND ts >= ?3 AND ts < ?4 AND (ts < ?5 OR (ts = ?5 AND id < ?6))
             ORDER BY ts DESC, id DESC LIMIT ?7"
        }
    };
    let mut stmt = tx.prepare(sql)?;
    let rows = stmt.query_map(
        params![group, r.log_stream_name, start, end, from.1.timestamp, from.1.id, limit as i64],
        read_row,
    )?;
    let mut events = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let row = row?;
        if !fits(&mut bytes, &row.message) {
            break;
        }
        events.push(row);
    }
    if from.0 == Direction::Backward {
        events.reverse();
    }
    let positions: Vec<Position> = events.iter().map(|e| e.at).collect();
    let (forward, backward) = answer_tokens(from, &positions);
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| json!({"timestamp": e.at.timestamp, "message": e.message, "ingestionTime": e.ingestion}))
        .collect();
    Ok(json!({"events": events, "nextForwardToken": forward, "nextBackwardToken": backward}))
}

fn filter_events(tx: &rusqlite::Transaction<'_>, r: FilterLogEvents) -> Result<Value, LogsError> {
    let group = group_of(r.log_group_name.as_deref(), r.log_group_identifier.as_deref())?;
    let limit = events_limit(r.limit)?;
    let pattern = r.filter_pattern.as_deref().unwrap_or_default();
    if pattern.len() > 1024 {
        return Err(LogsError::invalid("filterPattern is longer than 1024 characters"));
    }
    let pattern = Pattern::parse(pattern).map_err(|e| LogsError::invalid(e.0))?;
    if r.log_stream_names.is_some() && r.log_stream_name_prefix.is_some() {
        return Err(LogsError::invalid("logStreamNames and logStreamNamePrefix are mutually exclusive parameters."));
    }
    if let Some(names) = &r.log_stream_names {
        if names.is_empty() || names.len() > 100 {
            return Err(LogsError::invalid("logStreamNames must name between 1 and 100 log streams"));
        }
        for name in names {
            check_stream_name("logStreamNames", name)?;
        }
    }
    if let Some(prefix) = &r.log_stream_name_prefix {
        check_stream_name("logStreamNamePrefix", prefix)?;
    }
    let (direction, after) = match r.next_token.as_deref() {
        Some(token) => parse_filter_token(token)?,
        None if r.start_from_head.unwrap_or(true) => (Direction::Forward, Position::HEAD),
        None => {
            if r.start_time.is_some_and(|t| t < NEWEST_FIRST_SINCE_MILLIS) {
                return Err(LogsError::invalid(
                    "startFromHead false is supported only with a startTime on or after Jan 1, 2024 00:00:00 UTC",
                ));
            }
            (Direction::Backward, Position::TAIL)
        }
    };
    require_group(tx, &group)?;
    let wanted = |stream: &str| match (&r.log_stream_names, &r.log_stream_name_prefix) {
        (Some(names), _) => names.iter().any(|n| n == stream),
        (None, Some(prefix)) => stream.starts_with(prefix.as_str()),
        (None, None) => true,
    };
    let mut searched: Vec<String> = {
        let mut stmt = tx.prepare("SELECT name FROM log_streams WHERE grp = ?1 ORDER BY name")?;
        let names = stmt.query_map([&group], |row| row.get::<_, String>(0))?;
        names.collect::<Result<Vec<_>, _>>()?
    };
    searched.retain(|s| wanted(s));
    let (start, end) = (r.start_time.unwrap_or(i64::MIN), r.end_time.unwrap_or(i64::MAX));
    let mut stmt = tx.prepare(match direction {
        Direction::Forward => {
            "SELECT id, stream, ts, ingestion, message FROM log_events
             WHERE grp = ?1 AND ts >= ?2 AND ts <= ?3 AND (ts > ?4 OR (ts = ?4 AND id > ?5))
             ORDER BY ts ASC, id ASC"
        }
        Direction::Backward => {
            "SELECT id, stream, ts, ingestion, message FROM log_events
             WHERE grp = ?1 AND ts >= ?2 AND ts <= ?3 AND (ts < ?4 OR (ts = ?4 AND id < ?5))
             ORDER BY ts DESC, id DESC"
        }
    })?;
    let rows = stmt.query_map(params![group, start, end, after.timestamp, after.id], read_row)?;
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut more = false;
    for row in rows {
        let row = row?;
        if !wanted(&row.stream) || !pattern.matches(&row.message) {
            continue;
        }
        if events.len() == limit || !fits(&mut bytes, &row.message) {
            more = true;
            break;
        }
        events.push(row);
    }
    let next = match events.last() {
        Some(last) if more => Some(filter_token(direction, last.at)),
        _ => None,
    };
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            json!({"logStreamName": e.stream, "timestamp": e.at.timestamp, "message": e.message,
                "ingestionTime": e.ingestion, "eventId": format!("{:056}", e.at.id)})
        })
        .collect();
    let searched: Vec<Value> =
        searched.into_iter().map(|s| json!({"logStreamName": s, "searchedCompletely": next.is_none()})).collect();
    Ok(with_token(json!({"events": events, "searchedLogStreams": searched}), "nextToken", next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    const NOW: u64 = 1_800_000_000_000;

    fn logs() -> Logs {
        let logs = Logs::memory(ManualClock::at(NOW), "us-east-1", "000000000000").unwrap();
        logs.call(Operation::CreateLogGroup, &json!({"logGroupName": "/g"})).unwrap();
        for s in ["a", "b"] {
            logs.call(Operation::CreateLogStream, &json!({"logGroupName": "/g", "logStreamName": s})).unwrap();
        }
        logs
    }

    fn put(logs: &Logs, stream: &str, events: &[(i64, &str)]) -> Value {
        let events: Vec<Value> = events.iter().map(|(t, m)| json!({"timestamp": t, "message": m})).collect();
        logs.call(Operation::PutLogEvents, &json!({"logGroupName": "/g", "logStreamName": stream, "logEvents": events}))
            .unwrap()
    }

    fn messages(answer: &Value) -> Vec<String> {
        answer["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn groups_and_streams_exist_once_and_go_with_their_events() {
        let logs = logs();
        let again = logs.call(Operation::CreateLogGroup, &json!({"logGroupName": "/g"})).unwrap_err();
        assert_eq!(again.kind, "ResourceAlreadyExistsException");
        let again =
            logs.call(Operation::CreateLogStream, &json!({"logGroupName": "/g", "logStreamName": "a"})).unwrap_err();
        assert_eq!(again.kind, "ResourceAlreadyExistsException");
        let orphan =
            logs.call(Operation::CreateLogStream, &json!({"logGroupName": "/x", "logStreamName": "a"})).unwrap_err();
        assert_eq!(orphan.kind, "ResourceNotFoundException");
        put(&logs, "a", &[(NOW as i64, "hello")]);
        logs.call(Operation::DeleteLogGroup, &json!({"logGroupName": "/g"})).unwrap();
        logs.call(Operation::CreateLogGroup, &json!({"logGroupName": "/g"})).unwrap();
        let streams = logs.call(Operation::DescribeLogStreams, &json!({"logGroupName": "/g"})).unwrap();
        assert_eq!(streams["logStreams"], json!([]));
        let none = logs.call(Operation::FilterLogEvents, &json!({"logGroupName": "/g"})).unwrap();
        assert_eq!(none["events"], json!([]));
    }

    #[test]
    fn get_log_events_reads_the_newest_by_default_and_pages_both_ways() {
        let logs = logs();
        let t = NOW as i64;
        put(&logs, "a", &[(t - 4, "1"), (t - 3, "2"), (t - 2, "3"), (t - 1, "4")]);
        let get = |extra: Value| {
            let mut r = json!({"logGroupName": "/g", "logStreamName": "a"});
            r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            logs.call(Operation::GetLogEvents, &r).unwrap()
        };
        let tail = get(json!({"limit": 2}));
        assert_eq!(messages(&tail), ["3", "4"]);
        let before = get(json!({"limit": 2, "nextToken": tail["nextBackwardToken"]}));
        assert_eq!(messages(&before), ["1", "2"]);
        let head = get(json!({"limit": 3, "startFromHead": true}));
        assert_eq!(messages(&head), ["1", "2", "3"]);
        let rest = get(json!({"limit": 3, "nextToken": head["nextForwardToken"], "startFromHead": true}));
        assert_eq!(messages(&rest), ["4"]);
        let end = get(json!({"nextToken": rest["nextForwardToken"], "startFromHead": true}));
        assert_eq!(messages(&end), Vec::<String>::new());
        assert_eq!(end["nextForwardToken"], rest["nextForwardToken"], "the end gives the same token back");
        put(&logs, "a", &[(t, "5")]);
        let later = get(json!({"nextToken": end["nextForwardToken"], "startFromHead": true}));
        assert_eq!(messages(&later), ["5"], "a follower finds new events with the token it has");
        let window = get(json!({"startTime": t - 3, "endTime": t - 1, "startFromHead": true}));
        assert_eq!(messages(&window), ["2", "3"], "startTime inclusive, endTime exclusive");
    }

    #[test]
    fn filter_log_events_interleaves_streams_matches_patterns_and_pages() {
        let logs = logs();
        let t = NOW as i64;
        put(&logs, "a", &[(t - 5, "ERROR pump stalled"), (t - 3, "INFO ok"), (t - 1, "ERROR valve")]);
        put(&logs, "b", &[(t - 4, "ERROR pump again"), (t - 2, "WARN low")]);
        let filter = |extra: Value| {
            let mut r = json!({"logGroupName": "/g"});
            r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            logs.call(Operation::FilterLogEvents, &r)
        };
        let all = filter(json!({})).unwrap();
        assert_eq!(messages(&all).len(), 5);
        assert_eq!(all["events"][1]["logStreamName"], "b", "ordered by time across streams");
        let errors = filter(json!({"filterPattern": "ERROR pump"})).unwrap();
        assert_eq!(messages(&errors), ["ERROR pump stalled", "ERROR pump again"]);
        let only_a = filter(json!({"filterPattern": "ERROR", "logStreamNames": ["a"]})).unwrap();
        assert_eq!(messages(&only_a), ["ERROR pump stalled", "ERROR valve"]);
        let ranged = filter(json!({"startTime": t - 4, "endTime": t - 2, "logStreamNamePrefix": "b"})).unwrap();
        assert_eq!(messages(&ranged), ["ERROR pump again", "WARN low"], "both ends inclusive");
        let first = filter(json!({"limit": 2})).unwrap();
        assert_eq!(messages(&first).len(), 2);
        let second = filter(json!({"limit": 2, "nextToken": first["nextToken"]})).unwrap();
        let third = filter(json!({"limit": 2, "nextToken": second["nextToken"]})).unwrap();
        assert_eq!(messages(&third), ["ERROR valve"]);
        assert!(third.get("nextToken").is_none());
        let newest = filter(json!({"limit": 3, "startFromHead": false})).unwrap();
        assert_eq!(messages(&newest), ["ERROR valve", "WARN low", "INFO ok"], "newest first");
        let older = filter(json!({"limit": 3, "nextToken": newest["nextToken"]})).unwrap();
        assert_eq!(messages(&older), ["ERROR pump again", "ERROR pump stalled"], "the token keeps the direction");
        let early = filter(json!({"startFromHead": false, "startTime": 0})).unwrap_err();
        assert_eq!(early.kind, "InvalidParameterException");
        let json = filter(json!({"filterPattern": "{ $.level = \"error\" }"})).unwrap_err();
        assert_eq!(json.kind, "InvalidParameterException");
        let both = filter(json!({"logStreamNames": ["a"], "logStreamNamePrefix": "a"})).unwrap_err();
        assert_eq!(both.kind, "InvalidParameterException");
    }

    #[test]
    fn describe_orders_streams_by_name_or_last_event_and_pages() {
        let logs = logs();
        let t = NOW as i64;
        put(&logs, "b", &[(t - 9, "old")]);
        put(&logs, "a", &[(t - 1, "new")]);
        let names = |r: Value| -> Vec<String> {
            let answer = logs.call(Operation::DescribeLogStreams, &r).unwrap();
            answer["logStreams"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["logStreamName"].as_str().unwrap().into())
                .collect()
        };
        assert_eq!(names(json!({"logGroupName": "/g"})), ["a", "b"]);
        assert_eq!(names(json!({"logGroupName": "/g", "descending": true})), ["b", "a"]);
        assert_eq!(names(json!({"logGroupName": "/g", "orderBy": "LastEventTime"})), ["b", "a"]);
        assert_eq!(names(json!({"logGroupName": "/g", "orderBy": "LastEventTime", "descending": true})), ["a", "b"]);
        let bad = json!({"logGroupName": "/g", "orderBy": "LastEventTime", "logStreamNamePrefix": "a"});
        assert_eq!(logs.call(Operation::DescribeLogStreams, &bad).unwrap_err().kind, "InvalidParameterException");
        let page = logs.call(Operation::DescribeLogStreams, &json!({"logGroupName": "/g", "limit": 1})).unwrap();
        assert_eq!(page["nextToken"], "o/1");
        let stream = &page["logStreams"][0];
        assert_eq!(stream["lastEventTimestamp"], t - 1);
        assert_eq!(stream["arn"], "arn:aws:logs:us-east-1:000000000000:log-group:/g:log-stream:a");
    }

    #[test]
    fn retention_is_one_of_awss_periods_and_expires_old_events() {
        let logs = logs();
        let t = NOW as i64;
        put(&logs, "a", &[(t - 3 * super::super::DAY_MILLIS, "old")]);
        put(&logs, "a", &[(t, "new")]);
        let bad = logs.call(Operation::PutRetentionPolicy, &json!({"logGroupName": "/g", "retentionInDays": 2}));
        assert_eq!(bad.unwrap_err().kind, "InvalidParameterException");
        logs.call(Operation::PutRetentionPolicy, &json!({"logGroupName": "/g", "retentionInDays": 1})).unwrap();
        let all = logs.call(Operation::FilterLogEvents, &json!({"logGroupName": "/g"})).unwrap();
        assert_eq!(messages(&all), ["new"]);
        let groups = logs.call(Operation::DescribeLogGroups, &json!({"logGroupNamePrefix": "/g"})).unwrap();
        assert_eq!(groups["logGroups"][0]["retentionInDays"], 1);
        let arn = "arn:aws:logs:us-east-1:000000000000:log-group:/g:*";
        let named = logs.call(Operation::DescribeLogGroups, &json!({"logGroupIdentifiers": [arn, "/h"]})).unwrap();
        assert_eq!(named["logGroups"].as_array().unwrap().len(), 1);
        let found = logs.call(Operation::DescribeLogGroups, &json!({"logGroupNamePattern": "g"})).unwrap();
        assert_eq!(found["logGroups"][0], json!({"logGroupName": "/g", "creationTime": NOW, "arn": arn}));
        assert_eq!(groups["logGroups"][0]["storedBytes"], 3);
        let answer = put(&logs, "a", &[(t - 2 * super::super::DAY_MILLIS, "late"), (t, "now")]);
        assert_eq!(answer["rejectedLogEventsInfo"], json!({"expiredLogEventEndIndex": 1}));
    }

    #[test]
    fn events_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs.sqlite");
        {
            let logs = Logs::open(&path, ManualClock::at(NOW), "us-east-1", "000000000000").unwrap();
            logs.call(Operation::CreateLogGroup, &json!({"logGroupName": "/g"})).unwrap();
            logs.call(Operation::CreateLogStream, &json!({"logGroupName": "/g", "logStreamName": "a"})).unwrap();
            put(&logs, "a", &[(NOW as i64, "kept")]);
            logs.checkpoint().unwrap();
        }
        let logs = Logs::open(&path, ManualClock::at(NOW), "us-east-1", "000000000000").unwrap();
        let got = logs.call(Operation::FilterLogEvents, &json!({"logGroupName": "/g"})).unwrap();
        assert_eq!(messages(&got), ["kept"]);
    }
}
