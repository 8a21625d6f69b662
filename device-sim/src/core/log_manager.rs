//! The log manager (`aws.greengrass.LogManager`): the core's and its components' log files
//! uploaded to Amazon CloudWatch Logs.
//!
//! Follows the Greengrass V2 Developer Guide ("Log manager", "Monitor AWS IoT Greengrass logs")
//! and the open-source component (aws-greengrass-log-manager: `LogManagerService`,
//! `CloudWatchAttemptLogsProcessor`, `CloudWatchLogsUploader`, `DiskSpaceManagementService`);
//! the API is the CloudWatch Logs API Reference (PutLogEvents, CreateLogGroup, CreateLogStream).
//!
//! - **On when deployed.** The core runs it when its deployment includes
//!   `aws.greengrass.LogManager` (a `--merge` root or a dependency; built in, version
//!   [`LOG_MANAGER_VERSION`]) and the core has a cloud connection. It is configured from that
//!   component's `--update-config`, keys as the component reads them ([`Settings`]):
//!   `periodicUploadIntervalSec` (seconds, any number above 0, default 300) and
//!   `logsUploaderConfiguration { systemLogsConfiguration { uploadToCloudWatch, minimumLogLevel,
//!   diskSpaceLimit, diskSpaceLimitUnit, deleteLogFileAfterCloudUpload },
//!   componentLogsConfigurationMap { <name>: { minimumLogLevel, diskSpaceLimit,
//!   diskSpaceLimitUnit, deleteLogFileAfterCloudUpload } } }` (also the older
//!   `componentLogsConfiguration` list with `componentName`). Only the system log (with
//!   `uploadToCloudWatch: true`) and the components named there are uploaded. A bad value stops
//!   the core's start with its key named (the component logs a warning and falls back).
//! - **Names.** Log group `/aws/greengrass/{GreengrassSystemComponent|UserComponent}/{region}/{name}`,
//!   the nucleus's own log under the name `System`; log stream `/{yyyy}/{MM}/{dd}/thing/{thing}`
//!   with the date (UTC) of each line's own time stamp and every `:` of the thing name made `+`
//!   (stream names may not hold a colon).
//! - **Lines.** A line's time is its leading RFC 3339 stamp (the core stamps every line it
//!   writes) or, for a JSON line, its `timestamp` in milliseconds; else the time it is read.
//!   Its level is a JSON line's `level`, or a `[LEVEL]` word among the first words after the
//!   stamp (`[stdout] Run: [DEBUG] …`, the nucleus's `[INFO] (…)`); a line below
//!   `minimumLogLevel` (default `INFO`) is skipped, a line without a level is always uploaded.
//!   Lines older than 14 days are skipped as CloudWatch would refuse them; empty lines are
//!   skipped; a line longer than an event may be is split.
//! - **Batches** ([`batches`]): at most [`MAX_BATCH_EVENTS`] events and [`MAX_BATCH_BYTES`]
//!   (message bytes plus [`EVENT_OVERHEAD_BYTES`] each), one stream, within 23 hours of the
//!   first (the component's margin under CloudWatch's 24), sent in time order. A missing group
//!   or stream (`ResourceNotFoundException`) is created, then the batch is sent again.
//! - **Positions** ([`Positions`]): how far each file has been uploaded, by file identity
//!   (the inode, which a rotation's rename keeps), written after every accepted batch to
//!   `{root}/work/aws.greengrass.LogManager/positions.json` (temporary file, fsync, rename). A
//!   restart neither loses nor repeats lines; a batch that fails (no network, throttling, a
//!   refused credential) leaves the positions where they were and is tried again at the next
//!   interval. Only whole lines are read, so a line being written waits for its newline.
//! - **Files.** A log's files are `{name}.log` (being written) and its rotated
//!   `{name}_{yyyy_MM_dd_HH}_{n}.log`, oldest first. The core rotates: at each interval a file that reached the
//!   nucleus's `logging.fileSizeKB` (default 1024) is renamed `{name}_{yyyy_MM_dd_HH}_{n}.log`.
//!   `deleteLogFileAfterCloudUpload` deletes rotated files once uploaded whole; `diskSpaceLimit`
//!   (`diskSpaceLimitUnit` `KB` (default), `MB`, `GB`; 1,024 multiples) deletes uploaded rotated
//!   files, oldest first, while the log's files are over it ([`files_to_delete`]). The file
//!   being written is never deleted.
//!
//! Credentials: the token exchange service's role credentials, read in-process as the
//! nucleus's plugins do ([`CoreCredentials`]); the role needs `logs:CreateLogGroup`,
//! `logs:CreateLogStream` and `logs:PutLogEvents` on `/aws/greengrass/*` log groups. Requests go
//! through `aws-sdk-cloudwatchlogs` (the core already speaks to Greengrass through the SDK),
//! signed with SigV4 for `logs`, to `endpoints.json`'s `http` endpoint.
//!
//! Differences from the component: no `logFileRegex`, `logFileDirectoryPath` or
//! `multiLineStartPattern` (every line the core writes starts with its stamp, so each line is
//! one event); the configuration is read at the core's start (a deployment that changes it
//! takes effect at the next start); a crash between an accepted batch and the position write
//! sends that batch again.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{self, ProvideCredentials};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::layout::Layout;
use super::options::CoreOptions;
use super::token_exchange::CoreCredentials;
use crate::recipe::{ConfigurationUpdate, Resolution};

/// The component's name.
pub const LOG_MANAGER: &str = "aws.greengrass.LogManager";
/// The version the simulated core claims for dependency resolution.
pub const LOG_MANAGER_VERSION: &str = "2.3.7";
/// The name under which the nucleus's own log is uploaded.
pub const SYSTEM: &str = "System";
/// The file name stem of the nucleus's own log (`greengrass.log`).
pub const SYSTEM_FILE_STEM: &str = "greengrass";
/// Default `periodicUploadIntervalSec`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// Default rotation size of a log file (the nucleus's `logging.fileSizeKB`), in KB.
pub const DEFAULT_FILE_SIZE_KB: u64 = 1024;
/// Most events in one PutLogEvents batch.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Largest PutLogEvents batch: message bytes plus [`EVENT_OVERHEAD_BYTES`] per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// What CloudWatch Logs counts for each event besides its message.
pub const EVENT_OVERHEAD_BYTES: usize = 26;
/// Largest event (message bytes plus overhead).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// How long one batch may span (the component's margin under CloudWatch's 24 hours).
pub const MAX_BATCH_SPAN_MILLIS: i64 = 23 * HOUR_MILLIS;
/// Lines older than this are skipped (CloudWatch refuses events over 14 days old).
pub const MAX_AGE_MILLIS: i64 = 14 * 24 * HOUR_MILLIS;

/// How long one CloudWatch Logs call (retries included) may take.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

const HOUR_MILLIS: i64 = 60 * 60 * 1000;
const NUCLEUS_KEY: &str = "aws.greengrass.Nucleus: ";
const KEY: &str = "aws.greengrass.LogManager: ";

/// A log line's level, lowest first (SLF4J's levels, as the component compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `TRACE`
    Trace,
    /// `DEBUG`
    Debug,
    /// `INFO`
    Info,
    /// `WARN`
    Warn,
    /// `ERROR`
    Error,
}

impl Level {
    /// The level named `name` (upper case, as the component reads it).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "TRACE" => Self::Trace,
            "DEBUG" => Self::Debug,
            "INFO" => Self::Info,
            "WARN" => Self::Warn,
            "ERROR" => Self::Error,
            _ => return None,
        })
    }
}

/// Whose log it is: the first part of the log group's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentType {
    /// The nucleus's own log.
    GreengrassSystemComponent,
    /// A component's log.
    UserComponent,
}

impl ComponentType {
    /// The name in the log group.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GreengrassSystemComponent => "GreengrassSystemComponent",
            Self::UserComponent => "UserComponent",
        }
    }
}

/// One log to upload and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// The name in the log group ([`SYSTEM`] or the component's).
    pub name: String,
    /// System or component.
    pub kind: ComponentType,
    /// The stem of its files under `{root}/logs` (`greengrass` or the component's name).
    pub file_stem: String,
    /// `minimumLogLevel`.
    pub minimum_level: Level,
    /// `diskSpaceLimit` in bytes.
    pub disk_space_limit: Option<u64>,
    /// `deleteLogFileAfterCloudUpload`.
    pub delete_after_upload: bool,
}

/// The log manager's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `periodicUploadIntervalSec`.
    pub interval: Duration,
    /// What to upload: the system log first, then the components in name order.
    pub targets: Vec<LogTarget>,
    /// The rotation size of the core's log files, in bytes (the nucleus's `logging.fileSizeKB`).
    pub rotate_at: u64,
}

impl Settings {
    /// The settings from the log manager's configuration (its `--update-config`; it has no
    /// recipe defaults) and the nucleus's `logging.fileSizeKB`. A bad value is refused with
    /// its key.
    pub fn from_updates(
        log_manager: Option<&ConfigurationUpdate>,
        nucleus: Option<&ConfigurationUpdate>,
    ) -> Result<Self, String> {
        let config = super::recipe_store::builtin_configuration(log_manager).map_err(|e| format!("{KEY}{e}"))?;
        let nucleus = super::recipe_store::builtin_configuration(nucleus).map_err(|e| format!("{NUCLEUS_KEY}{e}"))?;
        let interval = match config.get("periodicUploadIntervalSec") {
            None | Some(Value::Null) => DEFAULT_INTERVAL,
            Some(v) => number(v)
                .filter(|n| *n > 0.0 && n.is_finite())
                .and_then(|n| Duration::try_from_secs_f64(n).ok())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!("{KEY}periodicUploadIntervalSec must be a number of seconds above 0, not {v}")
                })?,
        };
        let file_size_kb = match nucleus.get("logging").and_then(|l| l.get("fileSizeKB")) {
            None | Some(Value::Null) => DEFAULT_FILE_SIZE_KB,
            Some(v) => number(v).filter(|n| *n >= 1.0 && n.fract() == 0.0).map(|n| n as u64).ok_or_else(|| {
                format!("{NUCLEUS_KEY}logging.fileSizeKB must be a whole number of at least 1, not {v}")
            })?,
        };
        let mut targets = Vec::new();
        let uploader = match config.get("logsUploaderConfiguration") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(other) => return Err(format!("{KEY}logsUploaderConfiguration must be an object, not {other}")),
        };
        let path = "logsUploaderConfiguration.systemLogsConfiguration";
        match uploader.get("systemLogsConfiguration") {
            None | Some(Value::Null) => {}
            Some(Value::Object(system)) => {
                if flag(system, "uploadToCloudWatch", path)? {
                    targets.push(target(
                        system,
                        SYSTEM,
                        ComponentType::GreengrassSystemComponent,
                        SYSTEM_FILE_STEM,
                        path,
                    )?);
                }
            }
            Some(other) => return Err(format!("{KEY}{path} must be an object, not {other}")),
        }
        let mut components: BTreeMap<String, LogTarget> = BTreeMap::new();
        let path = "logsUploaderConfiguration.componentLogsConfigurationMap";
        match uploader.get("componentLogsConfigurationMap") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (name, entry) in map {
                    let at = format!("{path}.{name}");
                    let entry = entry.as_object().ok_or_else(|| format!("{KEY}{at} must be an object, not {entry}"))?;
                    components.insert(name.clone(), target(entry, name, ComponentType::UserComponent, name, &at)?);
                }
            }
            Some(other) => return Err(format!("{KEY}{path} must be an object, not {other}")),
        }
        let path = "logsUploaderConfiguration.componentLogsConfiguration";
        match uploader.get("componentLogsConfiguration") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, entry) in list.iter().enumerate() {
                    let at = format!("{path}[{i}]");
                    let entry = entry.as_object().ok_or_else(|| format!("{KEY}{at} must be an object, not {entry}"))?;
                    let name = entry
                        .get("componentName")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| format!("{KEY}{at}.componentName must be a component name"))?;
                    components.insert(name.to_owned(), target(entry, name, ComponentType::UserComponent, name, &at)?);
                }
            }
            Some(other) => return Err(format!("{KEY}{path} must be a list, not {other}")),
        }
        targets.extend(components.into_values());
        Ok(Self { interval, targets, rotate_at: file_size_kb.saturating_mul(1024) })
    }

    /// The settings of a core whose deployment is `resolution`: `None` when the deployment
    /// does not include [`LOG_MANAGER`].
    pub fn from_options(options: &CoreOptions, resolution: &Resolution) -> Result<Option<Self>, String> {
        if !resolution.components.iter().any(|c| c.name == LOG_MANAGER) {
            return Ok(None);
        }
        Self::from_updates(
            options.update_config.get(LOG_MANAGER),
            options.update_config.get(super::nucleus_update::NUCLEUS),
        )
        .map(Some)
    }
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn flag(entry: &Map<String, Value>, key: &str, path: &str) -> Result<bool, String> {
    match entry.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(format!("{KEY}{path}.{key} must be true or false, not {other}")),
    }
}

fn target(
    entry: &Map<String, Value>,
    name: &str,
    kind: ComponentType,
    file_stem: &str,
    path: &str,
) -> Result<LogTarget, String> {
    let minimum_level = match entry.get("minimumLogLevel") {
        None | Some(Value::Null) => Level::Info,
        Some(v) => v.as_str().and_then(Level::parse).ok_or_else(|| {
            format!("{KEY}{path}.minimumLogLevel must be one of TRACE, DEBUG, INFO, WARN, ERROR, not {v}")
        })?,
    };
    let unit = match entry.get("diskSpaceLimitUnit") {
        None | Some(Value::Null) => 1024,
        Some(Value::String(u)) if u == "KB" => 1024,
        Some(Value::String(u)) if u == "MB" => 1024 * 1024,
        Some(Value::String(u)) if u == "GB" => 1024 * 1024 * 1024,
        Some(other) => return Err(format!("{KEY}{path}.diskSpaceLimitUnit must be KB, MB or GB, not {other}")),
    };
    let disk_space_limit = match entry.get("diskSpaceLimit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            number(v)
                .filter(|n| *n >= 0.0 && n.fract() == 0.0 && n.is_finite())
                .map(|n| (n as u64).saturating_mul(unit))
                .ok_or_else(|| format!("{KEY}{path}.diskSpaceLimit must be a whole number, not {v}"))?,
        ),
    };
    Ok(LogTarget {
        name: name.to_owned(),
        kind,
        file_stem: file_stem.to_owned(),
        minimum_level,
        disk_space_limit,
        delete_after_upload: flag(entry, "deleteLogFileAfterCloudUpload", path)?,
    })
}

/// The log group of `name`: `/aws/greengrass/{type}/{region}/{name}`.
pub fn log_group(kind: ComponentType, region: &str, name: &str) -> String {
    format!("/aws/greengrass/{}/{region}/{name}", kind.as_str())
}

/// The log stream of the lines of the day (UTC) of `timestamp_ms` from `thing`:
/// `/{yyyy}/{MM}/{dd}/thing/{thing}`, every `:` of the thing name made `+`.
pub fn log_stream(timestamp_ms: i64, thing: &str) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("/{:04}/{:02}/{:02}/thing/{}", date.year(), u8::from(date.month()), date.day(), thing.replace(':', "+"))
}

/// What a line says about itself: its time (epoch milliseconds) and level, when it carries them.
pub fn parse_line(line: &str) -> (Option<i64>, Option<Level>) {
    if line.starts_with('{')
        && let Ok(Value::Object(json)) = serde_json::from_str::<Value>(line)
    {
        let level = json.get("level").and_then(Value::as_str).and_then(Level::parse);
        let timestamp = json.get("timestamp").and_then(Value::as_i64);
        return (timestamp, level);
    }
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or_default();
    let stamp = time::OffsetDateTime::parse(first, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
    let rest = if stamp.is_some() { words.take(3).collect::<Vec<_>>() } else { Vec::new() };
    let level = rest.iter().find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')).and_then(Level::parse));
    (stamp, level)
}

/// One whole line read from a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The file's identity ([`Positions`]).
    pub file: u64,
    /// The offset just past the line's newline.
    pub end: u64,
    /// The line, without its newline.
    pub text: String,
}

/// One PutLogEvents call: a stream's events in time order, and how far each file is uploaded
/// once it is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// The log stream.
    pub stream: String,
    /// `(timestamp in epoch milliseconds, message)`, in time order. Empty when every line the
    /// batch covers was skipped: only the positions move.
    pub events: Vec<(i64, String)>,
    /// File identity → offset uploaded up to once the batch is accepted.
    pub ends: BTreeMap<u64, u64>,
}

impl Batch {
    fn bytes(&self) -> usize {
        self.events.iter().map(|(_, m)| m.len() + EVENT_OVERHEAD_BYTES).sum()
    }
}

/// Splits `text` into pieces an event can hold, at character boundaries.
fn pieces(text: &str) -> Vec<&str> {
    let most = MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES;
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > most {
        let mut cut = most;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

/// The batches that upload `lines` (files oldest first, each file's lines in order) from
/// `thing` at `now` (epoch milliseconds) for a log whose minimum level is `minimum`; see the
/// module docs for the rules. Every line is covered by exactly one batch's `ends`.
pub fn batches(lines: &[Line], thing: &str, minimum: Level, now: i64) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    let mut current = Batch::default();
    let mut first_ts: Option<i64> = None;
    let mut last_ts: Option<i64> = None;
    for line in lines {
        let (stamp, level) = parse_line(&line.text);
        let ts = stamp.unwrap_or(now);
        let keep = !line.text.trim().is_empty() && level.is_none_or(|l| l >= minimum) && ts >= now - MAX_AGE_MILLIS;
        if keep {
            let stream = log_stream(ts, thing);
            for piece in pieces(&line.text) {
                let size = piece.len() + EVENT_OVERHEAD_BYTES;
                let span = |a: Option<i64>, b: Option<i64>| {
                    let lo = a.map_or(ts, |f| f.min(ts));
                    let hi = b.map_or(ts, |l| l.max(ts));
                    hi - lo
                };
                let full = !current.events.is_empty()
                    && (current.stream != stream
                        || current.events.len() >= MAX_BATCH_EVENTS
                        || current.bytes() + size > MAX_BATCH_BYTES
                        || span(first_ts, last_ts) > MAX_BATCH_SPAN_MILLIS);
                if full {
                    out.push(std::mem::take(&mut current));
                    first_ts = None;
                    last_ts = None;
                }
                current.stream.clone_from(&stream);
                current.events.push((ts, piece.to_owned()));
                first_ts = Some(first_ts.map_or(ts, |f| f.min(ts)));
                last_ts = Some(last_ts.map_or(ts, |l| l.max(ts)));
            }
        }
        current.ends.insert(line.file, line.end);
    }
    if !current.ends.is_empty() {
        out.push(current);
    }
    for batch in &mut out {
        batch.events.sort_by_key(|(ts, _)| *ts);
    }
    out
}

/// How far each log file has been uploaded: file identity (inode) → offset.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Positions {
    /// File identity → bytes uploaded from the start.
    pub files: BTreeMap<u64, u64>,
}

impl Positions {
    /// The offset to read `file` from, given its current size: 0 for a file not seen before,
    /// or one that is now shorter than what was uploaded (replaced under the same identity).
    pub fn start(&self, file: u64, size: u64) -> u64 {
        self.files.get(&file).copied().filter(|p| *p <= size).unwrap_or(0)
    }

    /// Records an accepted batch.
    pub fn accept(&mut self, batch: &Batch) {
        self.files.extend(batch.ends.iter().map(|(f, e)| (*f, *e)));
    }

    /// Forgets every file not in `present`.
    pub fn retain(&mut self, present: &[u64]) {
        self.files.retain(|f, _| present.contains(f));
    }

    /// Reads the positions in `path` (none when it does not exist).
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the positions to `path` atomically: a temporary file beside it, fsync, rename.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("json.tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// A log file as the disk-space rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// Its path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// Whether it is the file being written (never deleted).
    pub active: bool,
}

/// The files to delete from a log's `files` (oldest first): with `delete_after_upload` every
/// rotated file uploaded whole; then, while the files left are over `limit` bytes, the oldest
/// rotated files uploaded whole.
pub fn files_to_delete(files: &[FileState], limit: Option<u64>, delete_after_upload: bool) -> Vec<PathBuf> {
    let done = |f: &FileState| !f.active && f.uploaded >= f.size;
    let mut deleted: Vec<PathBuf> = Vec::new();
    if delete_after_upload {
        deleted.extend(files.iter().filter(|f| done(f)).map(|f| f.path.clone()));
    }
    if let Some(limit) = limit {
        let mut total: u64 = files.iter().filter(|f| !deleted.contains(&f.path)).map(|f| f.size).sum();
        let candidates: Vec<&FileState> = files.iter().filter(|f| done(f) && !deleted.contains(&f.path)).collect();
        for f in candidates {
            if total <= limit {
                break;
            }
            total -= f.size;
            deleted.push(f.path.clone());
        }
    }
    deleted
}

/// The name a rotated file of `stem` gets at `now` when `taken` names are in use:
/// `{stem}_{yyyy_MM_dd_HH}_{n}.log` with the first free `n`.
pub fn rotated_name(stem: &str, now: SystemTime, taken: &dyn Fn(&str) -> bool) -> String {
    let t = time::OffsetDateTime::from(now);
    let hour = format!("{:04}_{:02}_{:02}_{:02}", t.year(), u8::from(t.month()), t.day(), t.hour());
    (0u32..)
        .map(|n| format!("{stem}_{hour}_{n}.log"))
        .find(|name| !taken(name))
        .unwrap_or_else(|| unreachable!("some index is free"))
}

/// Whether `name` is a rotated file of `stem`, as [`rotated_name`] names them
/// (`{stem}_{yyyy_MM_dd_HH}_{n}.log`): another component whose name starts with `{stem}_` is not.
pub fn is_rotated(name: &str, stem: &str) -> bool {
    let Some(rest) = name.strip_prefix(stem).and_then(|r| r.strip_prefix('_')).and_then(|r| r.strip_suffix(".log"))
    else {
        return false;
    };
    let parts: Vec<&str> = rest.split('_').collect();
    let widths = [4, 2, 2, 2];
    parts.len() == 5
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && parts.iter().zip(widths).all(|(p, w)| p.len() == w)
}

/// A log's files under `dir`, oldest first: the rotated `{stem}_*.log` by modification time
/// (then name), then `{stem}.log`.
fn log_files(dir: &Path, stem: &str) -> Vec<(PathBuf, std::fs::Metadata, bool)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let active = format!("{stem}.log");
    let mut rotated = Vec::new();
    let mut current = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if name == active {
            current = Some((entry.path(), meta, true));
        } else if is_rotated(&name, stem) {
            rotated.push((entry.path(), meta, false));
        }
    }
    rotated.sort_by(|a, b| a.1.modified().ok().cmp(&b.1.modified().ok()).then_with(|| a.0.cmp(&b.0)));
    rotated.extend(current);
    rotated
}

/// The whole lines of `path` (identity `file`) from `from`.
fn read_lines(path: &Path, file: u64, from: u64) -> std::io::Result<Vec<Line>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let mut out = Vec::new();
    let mut at = from;
    let mut rest = bytes.as_slice();
    while let Some(i) = rest.iter().position(|b| *b == b'\n') {
        at += i as u64 + 1;
        out.push(Line { file, end: at, text: String::from_utf8_lossy(&rest[..i]).into_owned() });
        rest = &rest[i + 1..];
    }
    Ok(out)
}

/// The token exchange service's credentials as an SDK credentials provider.
#[derive(Debug, Clone)]
struct TesProvider(CoreCredentials);

impl ProvideCredentials for TesProvider {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            let c = self.0.get().await.map_err(provider::error::CredentialsError::provider_error)?;
            let expiry = c.expiry();
            Ok(Credentials::new(c.access_key_id, c.secret_access_key, Some(c.token), expiry, "TokenExchangeService"))
        })
    }
}

/// The SDK's HTTP client the log manager uses: rustls with ring (the SDK's default client would
/// bring aws-lc, which the workspace does not use).
pub fn http_client() -> aws_sdk_cloudwatchlogs::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// A CloudWatch Logs client at `endpoint` in `region`, signing with the token exchange
/// service's credentials.
pub fn client(endpoint: &str, region: &str, credentials: CoreCredentials) -> aws_sdk_cloudwatchlogs::Client {
    let http = http_client();
    let config = aws_sdk_cloudwatchlogs::Config::builder()
        .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudwatchlogs::config::Region::new(region.to_owned()))
        .credentials_provider(TesProvider(credentials))
        .endpoint_url(endpoint)
        .http_client(http)
        // A cloud that hangs must not hold the loop: the batch waits for the next interval.
        .timeout_config(
            aws_sdk_cloudwatchlogs::config::timeout::TimeoutConfig::builder().operation_timeout(UPLOAD_TIMEOUT).build(),
        )
        .build();
    aws_sdk_cloudwatchlogs::Client::from_conf(config)
}

/// Why an upload stopped; the lines wait for the next interval.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UploadError(String);

fn sdk_error<E>(e: aws_sdk_cloudwatchlogs::error::SdkError<E>) -> UploadError
where
    E: aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    UploadError(aws_sdk_cloudwatchlogs::error::DisplayErrorContext(e).to_string())
}

fn not_found<E: aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata>(
    e: &aws_sdk_cloudwatchlogs::error::SdkError<E>,
) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ResourceNotFoundException")
}

fn already_exists<E: aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata>(
    e: &aws_sdk_cloudwatchlogs::error::SdkError<E>,
) -> bool {
    e.as_service_error().and_then(|s| s.code()) == Some("ResourceAlreadyExistsException")
}

async fn put(client: &aws_sdk_cloudwatchlogs::Client, group: &str, batch: &Batch) -> Result<(), UploadError> {
    let events: Vec<_> = batch
        .events
        .iter()
        .map(|(ts, m)| aws_sdk_cloudwatchlogs::types::InputLogEvent::builder().timestamp(*ts).message(m).build())
        .collect::<Result<_, _>>()
        .map_err(|e| UploadError(e.to_string()))?;
    let send = || {
        client
            .put_log_events()
            .log_group_name(group)
            .log_stream_name(&batch.stream)
            .set_log_events(Some(events.clone()))
            .send()
    };
    let answer = match send().await {
        Err(e) if not_found(&e) => {
            match client.create_log_group().log_group_name(group).send().await {
                Err(e) if !already_exists(&e) => return Err(sdk_error(e)),
                _ => {}
            }
            match client.create_log_stream().log_group_name(group).log_stream_name(&batch.stream).send().await {
                Err(e) if !already_exists(&e) => return Err(sdk_error(e)),
                _ => {}
            }
            send().await
        }
        other => other,
    }
    .map_err(sdk_error)?;
    if let Some(rejected) = answer.rejected_log_events_info() {
        tracing::warn!(group, stream = %batch.stream, ?rejected, "CloudWatch Logs rejected some log events");
    }
    Ok(())
}

/// The log manager's durable state and where it lives.
#[derive(Debug)]
pub struct Uploader {
    settings: Settings,
    thing: String,
    region: String,
    logs_dir: PathBuf,
    positions_file: PathBuf,
    positions: Positions,
}

impl Uploader {
    /// The uploader of the core under `root`, with its positions read back.
    pub fn new(settings: Settings, thing: &str, region: &str, root: &Path) -> std::io::Result<Self> {
        let positions_file = root.join("work").join(LOG_MANAGER).join("positions.json");
        let positions = Positions::load(&positions_file)?;
        Ok(Self {
            settings,
            thing: thing.to_owned(),
            region: region.to_owned(),
            logs_dir: Layout::new(root).logs_dir(),
            positions_file,
            positions,
        })
    }

    /// One interval: rotates, uploads every log's new lines, then frees disk space. A log whose
    /// upload fails keeps its lines for the next interval; the others go on.
    pub async fn upload_once(&mut self, client: &aws_sdk_cloudwatchlogs::Client) -> Result<(), UploadError> {
        let mut first_error = None;
        let mut present = Vec::new();
        for target in self.settings.targets.clone() {
            self.rotate(&target.file_stem);
            let files = log_files(&self.logs_dir, &target.file_stem);
            present.extend(files.iter().map(|(_, m, _)| m.ino()));
            if let Err(e) = self.upload_target(client, &target, &files).await {
                tracing::warn!(log = %target.name, error = %e, "logs not uploaded; trying again next interval");
                first_error.get_or_insert(e);
                continue;
            }
            self.free_space(&target, &files);
        }
        self.positions.retain(&present);
        first_error.map_or(Ok(()), Err)
    }

    fn rotate(&self, stem: &str) {
        let active = self.logs_dir.join(format!("{stem}.log"));
        let big = std::fs::metadata(&active).is_ok_and(|m| m.len() >= self.settings.rotate_at);
        if big {
            let name = rotated_name(stem, SystemTime::now(), &|n| self.logs_dir.join(n).exists());
            if let Err(e) = std::fs::rename(&active, self.logs_dir.join(&name)) {
                tracing::warn!(file = %active.display(), error = %e, "log file not rotated");
            }
        }
    }

    async fn upload_target(
        &mut self,
        client: &aws_sdk_cloudwatchlogs::Client,
        target: &LogTarget,
        files: &[(PathBuf, std::fs::Metadata, bool)],
    ) -> Result<(), UploadError> {
        let mut lines = Vec::new();
        for (path, meta, _) in files {
            let from = self.positions.start(meta.ino(), meta.len());
            let read = read_lines(path, meta.ino(), from)
                .map_err(|e| UploadError(format!("reading {}: {e}", path.display())))?;
            lines.extend(read);
        }
        if lines.is_empty() {
            return Ok(());
        }
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let group = log_group(target.kind, &self.region, &target.name);
        for batch in batches(&lines, &self.thing, target.minimum_level, now) {
            if !batch.events.is_empty() {
                put(client, &group, &batch).await?;
                tracing::debug!(%group, stream = %batch.stream, events = batch.events.len(), "log events uploaded");
            }
            self.positions.accept(&batch);
            self.positions
                .save(&self.positions_file)
                .map_err(|e| UploadError(format!("writing {}: {e}", self.positions_file.display())))?;
        }
        Ok(())
    }

    fn free_space(&mut self, target: &LogTarget, files: &[(PathBuf, std::fs::Metadata, bool)]) {
        let states: Vec<FileState> = files
            .iter()
            .map(|(path, meta, active)| FileState {
                path: path.clone(),
                size: meta.len(),
                uploaded: self.positions.start(meta.ino(), meta.len()),
                active: *active,
            })
            .collect();
        for path in files_to_delete(&states, target.disk_space_limit, target.delete_after_upload) {
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::debug!(file = %path.display(), "uploaded log file deleted"),
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "log file not deleted"),
            }
        }
    }

    /// The positions now.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }
}

/// Runs the log manager: an upload at every interval, the first one interval after the start.
pub async fn run(mut uploader: Uploader, client: aws_sdk_cloudwatchlogs::Client) {
    let period = uploader.settings.interval;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Failures are logged per log in `upload_once`.
        let _ = uploader.upload_once(&client).await;
    }
}

/// Starts the log manager of a core whose deployment is `resolution`, when it includes
/// [`LOG_MANAGER`] and the core has a cloud connection.
pub fn start(
    options: &CoreOptions,
    resolution: &Resolution,
    credentials: CoreCredentials,
) -> Result<Option<tokio::task::JoinHandle<()>>, String> {
    let Some(settings) = Settings::from_options(options, resolution)? else { return Ok(None) };
    let Some(cloud) = &options.cloud else {
        tracing::warn!("{LOG_MANAGER} is deployed but the core has no cloud connection (--cloud): nothing is uploaded");
        return Ok(None);
    };
    let uploader = Uploader::new(settings, &options.thing, &options.region, &options.root)
        .map_err(|e| format!("{KEY}reading its upload positions: {e}"))?;
    let client = client(&cloud.endpoints.http, &options.region, credentials);
    Ok(Some(tokio::spawn(run(uploader, client))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(merge: Value) -> ConfigurationUpdate {
        ConfigurationUpdate::from_deployment(Some(&merge.to_string()), Vec::new()).unwrap()
    }

    fn settings(merge: Value) -> Result<Settings, String> {
        Settings::from_updates(Some(&update(merge)), None)
    }

    const DAY: i64 = 24 * HOUR_MILLIS;
    /// 2026-12-07T10:00:00Z.
    const NOW: i64 = 1_796_637_600_000;

    fn line(file: u64, end: u64, text: &str) -> Line {
        Line { file, end, text: text.to_owned() }
    }

    fn stamped(ms: i64, rest: &str) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        format!("{} {rest}", t.format(&time::format_description::well_known::Rfc3339).unwrap())
    }

    #[test]
    fn the_configuration_reads_the_components_keys_with_their_defaults() {
        let none = Settings::from_updates(None, None).unwrap();
        assert_eq!(none, Settings { interval: DEFAULT_INTERVAL, targets: Vec::new(), rotate_at: 1024 * 1024 });
        let s = settings(json!({
            "periodicUploadIntervalSec": 0.25,
            "logsUploaderConfiguration": {
                "systemLogsConfiguration": {"uploadToCloudWatch": "true", "minimumLogLevel": "WARN",
                    "diskSpaceLimit": 10, "diskSpaceLimitUnit": "MB"},
                "componentLogsConfigurationMap": {
                    "com.example.B": {"deleteLogFileAfterCloudUpload": true, "diskSpaceLimit": "3"},
                    "com.example.A": {}
                },
                "componentLogsConfiguration": [{"componentName": "com.example.C", "minimumLogLevel": "DEBUG"}]
            }
        }))
        .unwrap();
        assert_eq!(s.interval, Duration::from_millis(250), "fractions of a second, as the component takes them");
        let t = |name: &str, kind, stem: &str, minimum_level, disk_space_limit, delete_after_upload| LogTarget {
            name: name.to_owned(),
            kind,
            file_stem: stem.to_owned(),
            minimum_level,
            disk_space_limit,
            delete_after_upload,
        };
        let user = ComponentType::UserComponent;
        assert_eq!(
            s.targets,
            [
                t(SYSTEM, ComponentType::GreengrassSystemComponent, "greengrass", Level::Warn, Some(10 << 20), false),
                t("com.example.A", user, "com.example.A", Level::Info, None, false),
                t("com.example.B", user, "com.example.B", Level::Info, Some(3 << 10), true),
                t("com.example.C", user, "com.example.C", Level::Debug, None, false),
            ]
        );
        let quiet =
            settings(json!({"logsUploaderConfiguration": {"systemLogsConfiguration": {"minimumLogLevel": "INFO"}}}));
        assert!(quiet.unwrap().targets.is_empty(), "the system log is uploaded only when uploadToCloudWatch is true");
        let nucleus = update(json!({"logging": {"fileSizeKB": 2}}));
        assert_eq!(Settings::from_updates(None, Some(&nucleus)).unwrap().rotate_at, 2048);
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let system = |v: Value| json!({"logsUploaderConfiguration": {"systemLogsConfiguration": v}});
        let component =
            |v: Value| json!({"logsUploaderConfiguration": {"componentLogsConfigurationMap": {"com.example.A": v}}});
        let cases = [
            (json!({"periodicUploadIntervalSec": 0}), "periodicUploadIntervalSec must be a number of seconds above 0"),
            (json!({"periodicUploadIntervalSec": "often"}), "periodicUploadIntervalSec"),
            (json!({"logsUploaderConfiguration": []}), "logsUploaderConfiguration must be an object"),
            (
                system(json!({"uploadToCloudWatch": "yes"})),
                "systemLogsConfiguration.uploadToCloudWatch must be true or false",
            ),
            (
                system(json!({"uploadToCloudWatch": true, "minimumLogLevel": "info"})),
                "systemLogsConfiguration.minimumLogLevel must be one of",
            ),
            (
                component(json!({"diskSpaceLimitUnit": "TB", "diskSpaceLimit": 1})),
                "com.example.A.diskSpaceLimitUnit must be KB, MB or GB",
            ),
            (component(json!({"diskSpaceLimit": -5})), "com.example.A.diskSpaceLimit must be a whole number"),
            (component(json!({"deleteLogFileAfterCloudUpload": 1})), "com.example.A.deleteLogFileAfterCloudUpload"),
            (component(json!("all")), "componentLogsConfigurationMap.com.example.A must be an object"),
            (
                json!({"logsUploaderConfiguration": {"componentLogsConfiguration": [{"minimumLogLevel": "INFO"}]}}),
                "componentLogsConfiguration[0].componentName",
            ),
        ];
        for (merge, want) in cases {
            let err = settings(merge.clone()).unwrap_err();
            assert!(err.starts_with("aws.greengrass.LogManager: ") && err.contains(want), "{merge}: {err}");
        }
        let nucleus = update(json!({"logging": {"fileSizeKB": 0}}));
        let err = Settings::from_updates(None, Some(&nucleus)).unwrap_err();
        assert!(err.contains("aws.greengrass.Nucleus: logging.fileSizeKB"), "{err}");
    }

    #[test]
    fn the_log_manager_runs_only_when_the_deployment_includes_it() {
        use crate::recipe::RootRequirement;
        let (catalog, _, _) = crate::core::recipe_store::load_catalog_of_builtins(&[
            (LOG_MANAGER, LOG_MANAGER_VERSION),
            ("aws.greengrass.ShadowManager", "2.3.9"),
        ]);
        let resolve = |merge: &str| {
            let root = RootRequirement::parse_merge(merge).unwrap();
            crate::recipe::resolve(&catalog, &[root]).unwrap()
        };
        let options = CoreOptions {
            root: PathBuf::from("root"),
            thing: "core-1".into(),
            recipe_dir: PathBuf::from("recipes"),
            artifact_dir: PathBuf::from("artifacts"),
            merges: Vec::new(),
            region: "us-east-1".into(),
            root_ca_path: None,
            platform: crate::recipe::DevicePlatform::new("linux", "amd64"),
            update_config: std::collections::HashMap::from([(
                LOG_MANAGER.to_owned(),
                update(json!({"periodicUploadIntervalSec": 60})),
            )]),
            cloud: None,
            nucleus_version: CoreOptions::default_nucleus_version(),
        };
        let deployed = resolve(&format!("{LOG_MANAGER}={LOG_MANAGER_VERSION}"));
        let settings = Settings::from_options(&options, &deployed).unwrap().expect("deployed, so on");
        assert_eq!(settings.interval, Duration::from_secs(60));
        assert_eq!(Settings::from_options(&options, &resolve("aws.greengrass.ShadowManager=2.3.9")).unwrap(), None);
    }

    #[test]
    fn groups_and_streams_are_named_as_aws_names_them() {
        assert_eq!(
            log_group(ComponentType::UserComponent, "eu-west-1", "com.example.Pump"),
            "/aws/greengrass/UserComponent/eu-west-1/com.example.Pump"
        );
        assert_eq!(
            log_group(ComponentType::GreengrassSystemComponent, "us-east-1", SYSTEM),
            "/aws/greengrass/GreengrassSystemComponent/us-east-1/System"
        );
        let cases = [
            (NOW, "core-1", "/2026/12/07/thing/core-1"),
            (NOW + 14 * HOUR_MILLIS - 1, "core-1", "/2026/12/07/thing/core-1"),
            (NOW + 14 * HOUR_MILLIS, "core-1", "/2026/12/08/thing/core-1"),
            (0, "a:b:c", "/1970/01/01/thing/a+b+c"),
        ];
        for (ts, thing, want) in cases {
            assert_eq!(log_stream(ts, thing), want);
        }
    }

    #[test]
    fn a_line_carries_its_stamp_and_level_when_it_has_them() {
        let cases = [
            ("2026-12-07T10:00:00.5Z [stdout] Run: hello", (Some(NOW + 500), None)),
            ("2026-12-07T10:00:00Z [stdout] Run: [DEBUG] detail", (Some(NOW), Some(Level::Debug))),
            ("2026-12-07T11:00:00+01:00 [ERROR] (main) boom", (Some(NOW), Some(Level::Error))),
            ("2026-12-07T10:00:00Z [stdout] Run: a b c [ERROR] late", (Some(NOW), None)),
            (r#"{"level":"WARN","timestamp":1796637600000,"message":"m"}"#, (Some(NOW), Some(Level::Warn))),
            (r#"{"message":"no level"}"#, (None, None)),
            ("no stamp [ERROR] here", (None, None)),
            ("", (None, None)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_line(text), want, "{text}");
        }
    }

    #[test]
    fn batches_skip_lines_below_the_level_and_still_cover_every_line() {
        let lines = [
            line(7, 10, &stamped(NOW, "[stdout] Run: [DEBUG] hidden")),
            line(7, 20, &stamped(NOW + 1, "[stdout] Run: shown")),
            line(7, 25, ""),
            line(7, 40, &stamped(NOW - 15 * DAY, "too old")),
            line(9, 5, &stamped(NOW + 2, "[stderr] Run: [ERROR] shown too")),
            line(9, 9, &stamped(NOW + 3, "[stdout] Run: [TRACE] hidden")),
        ];
        let out = batches(&lines, "core-1", Level::Info, NOW);
        assert_eq!(out.len(), 1);
        let messages: Vec<&str> = out[0].events.iter().map(|(_, m)| m.as_str()).collect();
        assert!(
            messages.len() == 2 && messages[0].ends_with("shown") && messages[1].ends_with("shown too"),
            "{messages:?}"
        );
        assert_eq!(out[0].ends, BTreeMap::from([(7, 40), (9, 9)]));
        assert_eq!(out[0].stream, "/2026/12/07/thing/core-1");

        let skipped = batches(&lines[..1], "core-1", Level::Info, NOW);
        assert_eq!(skipped, vec![Batch { stream: String::new(), events: Vec::new(), ends: BTreeMap::from([(7, 10)]) }]);
        assert!(batches(&[], "core-1", Level::Info, NOW).is_empty());
    }

    #[test]
    fn batches_keep_to_the_put_log_events_limits() {
        let count = |out: &[Batch]| out.iter().map(|b| b.events.len()).collect::<Vec<_>>();
        // Event count.
        let many: Vec<Line> = (0..10_001).map(|i| line(1, i + 1, &stamped(NOW, "x"))).collect();
        let out = batches(&many, "t", Level::Info, NOW);
        assert_eq!(count(&out), [10_000, 1]);
        assert_eq!((out[0].ends[&1], out[1].ends[&1]), (10_000, 10_001));
        // Bytes: message bytes plus 26 each, 1,048,576 at most.
        let prefix = stamped(NOW, "");
        let fill = |n: usize| format!("{prefix}{}", "y".repeat(n - prefix.len()));
        let quarter = MAX_BATCH_BYTES / 4 - EVENT_OVERHEAD_BYTES;
        let exact: Vec<Line> = (1..=4).map(|i| line(1, i, &fill(quarter))).collect();
        assert_eq!(count(&batches(&exact, "t", Level::Info, NOW)), [4], "exactly at the limit fits");
        let mut over = exact.clone();
        over[3] = line(1, 4, &fill(quarter - 1));
        over.push(line(1, 5, &stamped(NOW, "")));
        assert_eq!(count(&batches(&over, "t", Level::Info, NOW)), [4, 1]);
        for b in batches(&over, "t", Level::Info, NOW) {
            assert!(b.bytes() <= MAX_BATCH_BYTES);
        }
        // A day changes the stream; more than 23 hours apart never share a batch.
        let days = [
            line(1, 1, &stamped(NOW, "a")),
            line(1, 2, &stamped(NOW + 13 * HOUR_MILLIS, "b")),
            line(1, 3, &stamped(NOW + 15 * HOUR_MILLIS, "c")),
        ];
        let out = batches(&days, "t", Level::Info, NOW + DAY);
        assert_eq!(count(&out), [2, 1]);
        assert_eq!((out[0].stream.as_str(), out[1].stream.as_str()), ("/2026/12/07/thing/t", "/2026/12/08/thing/t"));
        let mut text = String::from("z");
        text.push_str(&"é".repeat(MAX_EVENT_BYTES));
        let long = batches(&[line(1, 1, &text)], "t", Level::Info, NOW);
        let events: Vec<usize> = long.iter().flat_map(|b| b.events.iter().map(|(_, m)| m.len())).collect();
        assert!(events.len() == 3 && events.iter().all(|n| n + EVENT_OVERHEAD_BYTES <= MAX_EVENT_BYTES), "{events:?}");
        assert_eq!(events.iter().sum::<usize>(), text.len(), "a long line is split, nothing lost");
    }

    #[test]
    fn a_batch_is_sent_in_time_order() {
        let lines = [line(1, 1, &stamped(NOW + 5, "later")), line(2, 1, &stamped(NOW, "earlier"))];
        let out = batches(&lines, "t", Level::Info, NOW);
        let times: Vec<i64> = out[0].events.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [NOW, NOW + 5]);
    }

    #[test]
    fn positions_survive_a_restart_and_a_shorter_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("work").join(LOG_MANAGER).join("positions.json");
        assert_eq!(Positions::load(&path).unwrap(), Positions::default());
        let mut p = Positions::default();
        p.accept(&Batch { ends: BTreeMap::from([(1, 100), (2, 50)]), ..Batch::default() });
        p.save(&path).unwrap();
        assert!(!path.with_extension("json.tmp").exists(), "the temporary file was renamed");
        let back = Positions::load(&path).unwrap();
        assert_eq!(back, p);
        assert_eq!((back.start(1, 120), back.start(1, 99), back.start(3, 10)), (100, 0, 0));
        let mut kept = back.clone();
        kept.retain(&[2]);
        assert_eq!(kept.files, BTreeMap::from([(2, 50)]));
        std::fs::write(&path, "not json").unwrap();
        assert!(Positions::load(&path).is_err(), "a damaged file is an error, not a silent restart from zero");
    }

    #[test]
    fn uploaded_rotated_files_go_first_when_asked_or_over_the_limit() {
        let f = |name: &str, size: u64, uploaded: u64, active: bool| FileState {
            path: PathBuf::from(name),
            size,
            uploaded,
            active,
        };
        let files =
            [f("old", 100, 100, false), f("mid", 100, 40, false), f("new", 100, 100, false), f("cur", 100, 100, true)];
        let names = |v: Vec<PathBuf>| v.into_iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
        let cases: [(Option<u64>, bool, Vec<&str>); 6] = [
            (None, false, vec![]),
            (None, true, vec!["old", "new"]),
            (Some(400), false, vec![]),
            (Some(350), false, vec!["old"]),
            (Some(150), false, vec!["old", "new"]),
            (Some(0), true, vec!["old", "new"]),
        ];
        for (limit, after_upload, want) in cases {
            assert_eq!(names(files_to_delete(&files, limit, after_upload)), want, "{limit:?} {after_upload}");
        }
    }

    #[test]
    fn a_rotated_file_takes_the_first_free_index_of_its_hour() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(NOW as u64);
        assert_eq!(rotated_name("greengrass", now, &|_| false), "greengrass_2026_12_07_10_0.log");
        assert!(is_rotated(&rotated_name("com.example.A", now, &|_| false), "com.example.A"));
        for other in [
            "com.example.A_B.log",
            "com.example.A.log",
            "com.example.A_2026_12_07_10.log",
            "greengrass_2026_12_07_10_0.log",
        ] {
            assert!(!is_rotated(other, "com.example.A"), "{other}");
        }
        let taken = |n: &str| n.ends_with("_0.log") || n.ends_with("_1.log");
        assert_eq!(rotated_name("com.example.A", now, &taken), "com.example.A_2026_12_07_10_2.log");
    }
}
