//! What the driver and the measuring components exchange: the files a component writes in its
//! work directory (`ready.json`, `result.json`), the go file the driver creates, and the pub/sub
//! messages between publisher and subscriber. The Python component
//! (`python/ipc_bench_component.py`) writes the same JSON.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine (Python's
/// `time.monotonic_ns()` reads the same), so a message's send time taken in the publisher
/// is comparable with its receive time in the subscriber.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// What a component reports once it is connected and ready (`ready.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ready {
    /// Which client (`rust` or `python`).
    pub client: String,
    /// Its process id.
    pub pid: u32,
    /// Its `VmRSS`, KiB, when ready.
    pub rss_kib: Option<u64>,
    /// Its `VmHWM`, KiB, when ready.
    pub hwm_kib: Option<u64>,
}

/// What a round-trip component reports (`result.json`): every call's duration, per operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RttResult {
    /// Which client (`rust` or `python`).
    pub client: String,
    /// Operation name (`GetConfiguration`, `PublishToTopic`) → call durations, nanoseconds,
    /// warm-up calls excluded.
    pub calls: BTreeMap<String, Vec<u64>>,
    /// Wall time of each operation's measured calls, nanoseconds (for calls per second).
    pub elapsed_ns: BTreeMap<String, u64>,
    /// Its `VmRSS`, KiB, after the calls.
    pub rss_kib: Option<u64>,
    /// Its `VmHWM`, KiB, after the calls.
    pub hwm_kib: Option<u64>,
    /// Calls that failed, per operation, with the first error.
    #[serde(default)]
    pub errors: BTreeMap<String, String>,
}

/// One pub/sub phase as the subscriber saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseSeen {
    /// Phase number (as in the messages).
    pub phase: u32,
    /// Messages the publisher says it published successfully.
    pub sent: u64,
    /// Distinct messages received.
    pub received: u64,
    /// Messages received twice.
    pub duplicates: u64,
    /// Latency of each received message (send → receive), nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Send time of the earliest message received.
    pub first_sent_ns: Option<u64>,
    /// Receive time of the last message.
    pub last_received_ns: Option<u64>,
}

impl PhaseSeen {
    /// Messages per second from the first send to the last receive; `None` without two points.
    pub fn throughput(&self) -> Option<f64> {
        let span = self.last_received_ns?.checked_sub(self.first_sent_ns?)?;
        (span > 0).then(|| self.received as f64 / (span as f64 / 1e9))
    }
}

/// What the subscriber reports (`result.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubscriberResult {
    /// Each phase, in order.
    pub phases: Vec<PhaseSeen>,
    /// Messages of phases already closed when they arrived.
    pub late: u64,
    /// Messages that could not be read as benchmark messages.
    pub malformed: u64,
}

/// What the publisher reports (`result.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublisherResult {
    /// Per phase: publish calls that succeeded.
    pub sent: Vec<u64>,
    /// Per phase: publish calls that failed, with the first error.
    pub failed: Vec<(u64, Option<String>)>,
}

/// A data message's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataMessage {
    /// Phase number.
    pub phase: u32,
    /// Sequence number within the phase, from 0.
    pub seq: u64,
    /// `monotonic_ns()` just before the publish call.
    pub sent_ns: u64,
}

/// The JSON message for `m`, padded so that its serialized form is `size` bytes (or as small as
/// it can be when `size` is smaller than the fields).
pub fn data_message(m: DataMessage, size: usize) -> Value {
    let bare = json!({"phase": m.phase, "seq": m.seq, "t": m.sent_ns, "pad": ""});
    let len = bare.to_string().len();
    json!({"phase": m.phase, "seq": m.seq, "t": m.sent_ns, "pad": "x".repeat(size.saturating_sub(len))})
}

/// Reads a data message; `None` if `v` is not one.
pub fn parse_data_message(v: &Value) -> Option<DataMessage> {
    Some(DataMessage {
        phase: u32::try_from(v.get("phase")?.as_u64()?).ok()?,
        seq: v.get("seq")?.as_u64()?,
        sent_ns: v.get("t")?.as_u64()?,
    })
}

/// Control message publisher → subscriber: phase `phase` is over, `sent` messages were published.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PhaseEnd {
    /// Phase number.
    pub phase: u32,
    /// Messages published successfully.
    pub sent: u64,
    /// No phase follows: the subscriber writes its result.
    pub last: bool,
}

/// Acknowledgement subscriber → publisher: how many messages of `phase` arrived so far, and
/// whether the subscriber has closed the phase.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    /// Phase number.
    pub phase: u32,
    /// Messages received so far.
    pub received: u64,
    /// The phase is closed (after its `PhaseEnd`).
    pub done: bool,
}

/// Writes `value` as JSON to `path` through a temporary file and a rename, so the driver, which
/// polls for the file, never reads half of it.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// This process's `Ready` record.
pub fn ready_now(client: &str) -> Ready {
    let pid = std::process::id();
    Ready {
        client: client.into(),
        pid,
        rss_kib: bench_common::machine::rss_kib(pid),
        hwm_kib: bench_common::machine::hwm_kib(pid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_messages_have_the_asked_size_and_read_back() {
        let m = DataMessage { phase: 2, seq: 12_345, sent_ns: 987_654_321_000 };
        let v = data_message(m, 256);
        assert_eq!(v.to_string().len(), 256);
        assert_eq!(parse_data_message(&v), Some(m));
        // Too small a size: no padding, still readable.
        let small = data_message(m, 10);
        assert_eq!(parse_data_message(&small), Some(m));
    }

    #[test]
    fn foreign_messages_are_not_data_messages() {
        assert_eq!(parse_data_message(&json!({"hello": 1})), None);
        assert_eq!(parse_data_message(&json!({"phase": "x", "seq": 1, "t": 2})), None);
        assert_eq!(parse_data_message(&json!({"phase": 5_000_000_000u64, "seq": 1, "t": 2})), None);
        assert_eq!(parse_data_message(&json!([1, 2])), None);
    }

    #[test]
    fn throughput_spans_first_send_to_last_receive() {
        let p = PhaseSeen {
            phase: 0,
            sent: 1000,
            received: 1000,
            duplicates: 0,
            latencies_ns: vec![],
            first_sent_ns: Some(1_000_000_000),
            last_received_ns: Some(1_500_000_000),
        };
        assert_eq!(p.throughput(), Some(2000.0));
        let none = PhaseSeen { first_sent_ns: None, ..p.clone() };
        assert_eq!(none.throughput(), None);
        let backwards = PhaseSeen { last_received_ns: Some(1), ..p };
        assert_eq!(backwards.throughput(), None);
    }

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let a = monotonic_ns();
        assert!(monotonic_ns() >= a);
    }

    #[test]
    fn json_files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        write_json_atomic(&path, &ready_now("rust")).unwrap();
        let back: Ready = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.pid, std::process::id());
        assert!(back.rss_kib.unwrap() > 0);
        assert!(!dir.path().join("ready.tmp").exists());
    }
}
