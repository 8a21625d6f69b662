//! What the sensor has done: polls, readings, telemetry messages, bytes and billing units.
//! The figures are pure data; [`write_atomically`] puts them in `{work}/stats.json` with a
//! temporary file and a rename, so a reader (the demo) never sees half a file.

use std::io::Write as _;
use std::path::Path;

use kit::batch::Counters;
use serde::Serialize;

/// The stats file's name in the work directory.
pub const STATS_FILE: &str = "stats.json";

/// Modbus polling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollStats {
    /// Polls that produced a reading.
    pub ok: u64,
    /// Polls that produced none (no connection, timeout, exception, bad answer).
    pub failed: u64,
    /// Connections made to the plant.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Whether the sensor is connected to the plant now.
    pub connected: bool,
    /// The last poll failure, if any.
    pub last_error: Option<String>,
}

/// Local pub/sub.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadingStats {
    /// Readings published on `pump/readings`.
    pub published: u64,
    /// Readings the core refused.
    pub publish_failed: u64,
    /// The last reading's `seq`.
    pub last_seq: u64,
    /// Bytes of the last reading's message.
    pub last_bytes: u64,
}

/// Telemetry to IoT Core.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetryStats {
    /// The topic.
    pub topic: String,
    /// Readings given to the batcher.
    pub readings_in: u64,
    /// Readings the deadband dropped.
    pub readings_dropped: u64,
    /// Messages (batches) made.
    pub messages: u64,
    /// Their payload bytes.
    pub payload_bytes: u64,
    /// Their 5 KiB billing units (payload and topic bytes).
    pub billing_units: u64,
    /// Messages handed to the core (PublishToIoTCore answered) and removed from the outbox.
    pub sent: u64,
    /// Failed publish attempts that were retried.
    pub publish_retries: u64,
    /// Messages the core refused for good and that were skipped.
    pub rejected: u64,
    /// Messages waiting in the outbox.
    pub outbox_pending: u64,
    /// Their bytes.
    pub outbox_bytes: u64,
    /// Messages the outbox dropped (oldest first) to stay within its bound.
    pub outbox_dropped: u64,
    /// Messages that could not be stored in the outbox and were lost.
    pub store_failed: u64,
}

/// Everything, as `stats.json` holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// The format version.
    pub v: u8,
    /// When these figures were taken (epoch ms).
    pub ts: u64,
    /// Seconds since the sensor started.
    pub uptime_s: u64,
    /// Polling.
    pub polls: PollStats,
    /// Local readings.
    pub readings: ReadingStats,
    /// Telemetry.
    pub telemetry: TelemetryStats,
}

impl TelemetryStats {
    /// Takes the batcher's counters (summed over every batcher this run has had).
    pub fn set_batch_counters(&mut self, c: Counters) {
        self.readings_in = c.readings_in;
        self.readings_dropped = c.readings_dropped;
        self.messages = c.messages;
        self.payload_bytes = c.payload_bytes;
        self.billing_units = c.billing_units;
    }
}

/// Adds two sets of batch counters.
pub fn add_counters(a: Counters, b: Counters) -> Counters {
    Counters {
        readings_in: a.readings_in + b.readings_in,
        readings_dropped: a.readings_dropped + b.readings_dropped,
        messages: a.messages + b.messages,
        payload_bytes: a.payload_bytes + b.payload_bytes,
        billing_units: a.billing_units + b.billing_units,
    }
}

impl Stats {
    /// The periodic log line.
    pub fn summary(&self) -> String {
        let (p, r, t) = (&self.polls, &self.readings, &self.telemetry);
        let avg = t.payload_bytes.checked_div(t.messages).unwrap_or(0);
        format!(
            "polls ok={} failed={} connected={} | readings published={} last_seq={} | telemetry readings={} \
             dropped_by_deadband={} messages={} payload_bytes={} avg_bytes={} billing_units={} sent={} retries={} \
             pending={} outbox_dropped={}",
            p.ok,
            p.failed,
            p.connected,
            r.published,
            r.last_seq,
            t.readings_in,
            t.readings_dropped,
            t.messages,
            t.payload_bytes,
            avg,
            t.billing_units,
            t.sent,
            t.publish_retries,
            t.outbox_pending,
            t.outbox_dropped,
        )
    }
}

/// Writes `stats` as JSON to `path` through `path.tmp`, fsynced, then renamed over `path`.
pub fn write_atomically(path: &Path, stats: &Stats) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(stats).map_err(std::io::Error::other)?;
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&text)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn sample() -> Stats {
        let mut s = Stats { v: 1, ts: 10, uptime_s: 3, ..Default::default() };
        s.polls.ok = 5;
        s.polls.failed = 2;
        s.telemetry.set_batch_counters(Counters {
            readings_in: 5,
            readings_dropped: 1,
            messages: 2,
            payload_bytes: 3000,
            billing_units: 2,
        });
        s.telemetry.sent = 1;
        s
    }

    #[test]
    fn the_summary_names_every_headline_figure() {
        let line = sample().summary();
        for part in [
            "polls ok=5 failed=2",
            "messages=2",
            "payload_bytes=3000",
            "avg_bytes=1500",
            "billing_units=2",
            "sent=1",
            "dropped_by_deadband=1",
        ] {
            assert!(line.contains(part), "{part:?} missing from {line}");
        }
        assert!(Stats::default().summary().contains("avg_bytes=0"), "no division by zero");
    }

    #[test]
    fn counters_add_member_by_member() {
        let a = Counters { readings_in: 1, readings_dropped: 2, messages: 3, payload_bytes: 4, billing_units: 5 };
        let sum = add_counters(a, a);
        assert_eq!((sum.readings_in, sum.messages, sum.billing_units), (2, 6, 10));
        assert_eq!((sum.readings_dropped, sum.payload_bytes), (4, 8));
    }

    #[test]
    fn the_stats_file_is_replaced_whole_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATS_FILE);
        std::fs::write(&path, "old").unwrap();
        write_atomically(&path, &sample()).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["polls"]["ok"], 5);
        assert_eq!(v["telemetry"]["billingUnits"], 2);
        assert_eq!(v["telemetry"]["payloadBytes"], 3000);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from(STATS_FILE)]);
    }

    #[test]
    fn a_stats_file_in_a_missing_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_atomically(&dir.path().join("nope").join(STATS_FILE), &sample()).is_err());
    }
}
