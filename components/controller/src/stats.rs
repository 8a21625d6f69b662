//! Latency figures and counters, kept in `stats.json` (written atomically: temporary file,
//! fsync, rename), for the demo's report and `docs/benchmarks.md`.
//!
//! Two latencies are recorded, both measured inside this process with a monotonic clock:
//! - `deltaToWrite`: from receiving a shadow `update/delta` (or `update/documents`) message
//!   to the last Modbus write it caused being acknowledged by the plant;
//! - `anomalyToAction`: from receiving an anomaly event to the last Modbus write of the
//!   protective action (or its release) being acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// How many of the most recent samples are kept per latency.
pub const KEPT_SAMPLES: usize = 10_000;

/// One latency's samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    count: u64,
    recent_us: VecDeque<u64>,
}

impl Samples {
    /// Adds one sample.
    pub fn record(&mut self, elapsed: Duration) {
        self.count += 1;
        if self.recent_us.len() == KEPT_SAMPLES {
            self.recent_us.pop_front();
        }
        self.recent_us.push_back(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// `{count, p50Us, p99Us, maxUs, samplesUs}` over the kept samples (nearest rank).
    pub fn to_json(&self) -> Value {
        let mut sorted: Vec<u64> = self.recent_us.iter().copied().collect();
        sorted.sort_unstable();
        json!({
            "count": self.count,
            "p50Us": percentile(&sorted, 50.0),
            "p99Us": percentile(&sorted, 99.0),
            "maxUs": sorted.last(),
            "samplesUs": self.recent_us,
        })
    }
}

/// The nearest-rank percentile of sorted values (`None` when empty).
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Everything `stats.json` holds.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Delta received → Modbus write acknowledged.
    pub delta_to_write: Samples,
    /// Anomaly received → protective action written.
    pub anomaly_to_action: Samples,
    counters: BTreeMap<&'static str, u64>,
    dirty: bool,
}

impl Stats {
    /// Adds one to a counter.
    pub fn count(&mut self, name: &'static str) {
        *self.counters.entry(name).or_default() += 1;
        self.dirty = true;
    }

    /// Adds `n` to a counter.
    pub fn count_by(&mut self, name: &'static str, n: usize) {
        if n > 0 {
            *self.counters.entry(name).or_default() += n as u64;
            self.dirty = true;
        }
    }

    /// Records a delta-to-write latency.
    pub fn delta(&mut self, elapsed: Duration) {
        self.delta_to_write.record(elapsed);
        self.dirty = true;
    }

    /// Records an anomaly-to-action latency.
    pub fn anomaly(&mut self, elapsed: Duration) {
        self.anomaly_to_action.record(elapsed);
        self.dirty = true;
    }

    /// The document written to `stats.json`.
    pub fn to_json(&self, now_ms: u64) -> Value {
        json!({
            "v": 1,
            "updatedMs": now_ms,
            "latency": {
                "deltaToWrite": self.delta_to_write.to_json(),
                "anomalyToAction": self.anomaly_to_action.to_json(),
            },
            "counters": self.counters,
        })
    }

    /// Writes the file if anything changed since the last write.
    pub fn flush(&mut self, path: &Path, now_ms: u64) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = serde_json::to_vec_pretty(&self.to_json(now_ms)).map_err(std::io::Error::other)?;
        write_atomic(path, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one, never a part:
/// a temporary file beside it, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the stats path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename is durable once the directory is synced; a failure here loses nothing.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=200).collect();
        assert_eq!(percentile(&values, 50.0), Some(100));
        assert_eq!(percentile(&values, 99.0), Some(198));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn only_the_most_recent_samples_are_kept_but_all_are_counted() {
        let mut s = Samples::default();
        for us in 0..(KEPT_SAMPLES as u64 + 5) {
            s.record(Duration::from_micros(us));
        }
        let json = s.to_json();
        assert_eq!(json["count"], KEPT_SAMPLES as u64 + 5);
        assert_eq!(json["samplesUs"].as_array().unwrap().len(), KEPT_SAMPLES);
        assert_eq!(json["samplesUs"][0], 5);
        assert_eq!(json["maxUs"], KEPT_SAMPLES as u64 + 4);
    }

    #[test]
    fn flush_writes_atomically_and_only_when_something_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.json");
        let mut stats = Stats::default();
        stats.flush(&path, 1).unwrap();
        assert!(!path.exists(), "nothing recorded, nothing written");
        stats.delta(Duration::from_micros(1500));
        stats.count("deltas");
        stats.flush(&path, 2).unwrap();
        let doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(doc["latency"]["deltaToWrite"]["count"], 1);
        assert_eq!(doc["latency"]["deltaToWrite"]["p50Us"], 1500);
        assert_eq!(doc["latency"]["anomalyToAction"]["p50Us"], Value::Null);
        assert_eq!(doc["counters"]["deltas"], 1);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("stats.json")], "no temporary file left behind");
        // Unchanged: not rewritten.
        std::fs::remove_file(&path).unwrap();
        stats.flush(&path, 3).unwrap();
        assert!(!path.exists());
    }
}
