//! Telemetry batching, pure: readings in, versioned JSON batches out, sized to AWS IoT
//! Core's 5 KiB message metering unit. No I/O and no clock: the caller passes `now` (epoch
//! milliseconds, or any monotonic millisecond count) and sends the batches itself.
//!
//! IoT Core meters a PUBLISH by its payload **and topic** bytes in 5 KiB (5120-byte) steps
//! ("AWS IoT Core pricing, additional metering details"): 5120 bytes cost one unit, 5121
//! cost two. So a batch grows until the next reading would make it cost one more unit; then
//! it is sent and the reading starts the next batch. Set
//! [`BatchConfig::metered_extra_bytes`] to the topic's length so the limit is where AWS puts
//! it.
//!
//! # The batch payload (`"v": 1`)
//!
//! ```json
//! {"v":1,"thing":"pump-01","readings":[
//!   {"ts":1700000000000,"speedRpm":1480,"flowM3h":41.2,"dischargeBar":3.12},
//!   {"ts":1700000001000,"speedRpm":1481,"flowM3h":41.3,"dischargeBar":3.13}]}
//! ```
//!
//! - `v`: payload version, 1.
//! - the members of [`BatchConfig::header`] (here `thing`), in their order;
//! - `readings`: oldest first; each is `ts` (the reading's timestamp, epoch ms) followed by
//!   the reading's own members. Compact JSON, no spaces (the example is wrapped for reading).
//!
//! # Rules, in the order they apply to each reading
//!
//! 1. **Max delay**: if the oldest buffered reading arrived `max_delay` ago or more, the
//!    buffer is sent first ([`FlushReason::MaxDelay`]); [`Batcher::poll`] does the same
//!    between readings, and [`Batcher::deadline`] says when to call it.
//! 2. **Deadband**: a reading whose every member moved less than its threshold from the last
//!    *kept* reading is dropped (counted in [`Counters::readings_dropped`]), unless the last
//!    kept one is `heartbeat` old or older. Numeric members with a threshold compare by
//!    absolute difference; every other member (and a member that appears or disappears)
//!    counts as moved when it changed at all.
//! 3. **Unit boundary**: if adding the reading would make the batch cost one more unit, the
//!    buffer is sent first ([`FlushReason::UnitFull`]).
//! 4. A reading that alone costs more than one unit is sent alone at once
//!    ([`FlushReason::Oversize`]).
//! 5. **Max size**: a batch holding `max_readings` readings is sent ([`FlushReason::MaxReadings`]).

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

use cloud_api::limits::{MESSAGE_BILLING_UNIT_BYTES, message_billing_units};

/// The payload version this module writes.
pub const PAYLOAD_VERSION: u64 = 1;
/// The member of each reading that holds its timestamp.
pub const TS_KEY: &str = "ts";

/// How readings become batches.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchConfig {
    /// Most readings in one batch (at least 1).
    pub max_readings: usize,
    /// Longest time a reading waits in the buffer.
    pub max_delay: Duration,
    /// Per-member absolute thresholds; a reading within all of them is dropped.
    pub deadband: BTreeMap<String, f64>,
    /// Keep a reading anyway when the last kept one is this old (`None`: never).
    pub heartbeat: Option<Duration>,
    /// Members written after `"v"` in every payload (e.g. `{"thing": "pump-01"}`).
    pub header: Map<String, Value>,
    /// Bytes IoT Core meters besides the payload: the length of the topic it goes to.
    pub metered_extra_bytes: usize,
}

impl Default for BatchConfig {
    /// 100 readings, 5 s, no deadband, no heartbeat, no header, no topic bytes.
    fn default() -> Self {
        BatchConfig {
            max_readings: 100,
            max_delay: Duration::from_secs(5),
            deadband: BTreeMap::new(),
            heartbeat: None,
            header: Map::new(),
            metered_extra_bytes: 0,
        }
    }
}

/// A [`BatchConfig`] or [`Reading`] that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// `max_readings` is 0.
    #[error("max_readings must be at least 1")]
    ZeroMaxReadings,
    /// A deadband threshold is negative, NaN or infinite.
    #[error("deadband for {field:?} must be a finite number ≥ 0, not {threshold}")]
    BadDeadband {
        /// The member.
        field: String,
        /// The threshold given.
        threshold: f64,
    },
    /// The header uses a member the payload reserves (`v`, `readings`).
    #[error("the header must not contain {0:?}: the payload reserves it")]
    ReservedHeaderKey(String),
    /// The topic bytes alone fill a unit: every batch would cost two.
    #[error("metered_extra_bytes {0} leaves no room in a {MESSAGE_BILLING_UNIT_BYTES}-byte unit")]
    ExtraBytesTooLarge(usize),
    /// A reading has a member named `ts`, which the payload reserves for its timestamp.
    #[error("a reading must not have a member named {TS_KEY:?}; pass the timestamp as Reading::ts")]
    ReservedReadingKey,
}

/// One reading: a timestamp and the measured members.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// When it was measured, epoch milliseconds.
    pub ts: u64,
    /// The members (any JSON), written after `ts`.
    pub values: Map<String, Value>,
}

impl Reading {
    /// A reading from a JSON object; `None` when `values` is not an object.
    pub fn new(ts: u64, values: Value) -> Option<Self> {
        match values {
            Value::Object(values) => Some(Reading { ts, values }),
            _ => None,
        }
    }
}

/// Why a batch was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// It holds `max_readings` readings.
    MaxReadings,
    /// The next reading would have made it cost one more unit.
    UnitFull,
    /// One reading bigger than a unit, sent alone.
    Oversize,
    /// Its oldest reading waited `max_delay`.
    MaxDelay,
    /// [`Batcher::flush`] was called.
    Requested,
}

/// A batch to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The JSON payload.
    pub payload: String,
    /// How many readings it holds.
    pub readings: usize,
    /// Billing units IoT Core meters for it (payload and topic bytes, 5 KiB steps, min 1).
    pub units: u64,
    /// Why it was sent now.
    pub reason: FlushReason,
}

/// What the batcher has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Readings pushed.
    pub readings_in: u64,
    /// Readings dropped by the deadband.
    pub readings_dropped: u64,
    /// Batches emitted (messages to publish).
    pub messages: u64,
    /// Payload bytes of those batches.
    pub payload_bytes: u64,
    /// Billing units of those batches.
    pub billing_units: u64,
}

/// The batcher. See the module docs for the rules.
#[derive(Debug, Clone)]
pub struct Batcher {
    config: BatchConfig,
    /// `{"v":1,<header>,"readings":[`.
    prefix: String,
    /// Serialized readings waiting.
    buffer: Vec<String>,
    /// Their total length.
    buffer_bytes: usize,
    /// When the oldest waiting reading arrived.
    oldest_at: Option<u64>,
    /// The last kept reading and when it arrived (the deadband's reference).
    last_kept: Option<(u64, Map<String, Value>)>,
    counters: Counters,
}

const SUFFIX: &str = "]}";

impl Batcher {
    /// A batcher with this configuration.
    pub fn new(config: BatchConfig) -> Result<Self, BatchError> {
        if config.max_readings == 0 {
            return Err(BatchError::ZeroMaxReadings);
        }
        if let Some((field, &threshold)) = config.deadband.iter().find(|(_, t)| !(t.is_finite() && **t >= 0.0)) {
            return Err(BatchError::BadDeadband { field: field.clone(), threshold });
        }
        if let Some(key) = ["v", "readings"].into_iter().find(|k| config.header.contains_key(*k)) {
            return Err(BatchError::ReservedHeaderKey(key.into()));
        }
        let mut head = Map::new();
        head.insert("v".into(), PAYLOAD_VERSION.into());
        head.extend(config.header.clone());
        let head = Value::Object(head).to_string();
        // `{"v":1,...}` → `{"v":1,...,"readings":[`
        let prefix = format!("{},\"readings\":[", &head[..head.len() - 1]);
        if prefix.len() + SUFFIX.len() + config.metered_extra_bytes >= MESSAGE_BILLING_UNIT_BYTES {
            return Err(BatchError::ExtraBytesTooLarge(config.metered_extra_bytes));
        }
        Ok(Batcher {
            config,
            prefix,
            buffer: Vec::new(),
            buffer_bytes: 0,
            oldest_at: None,
            last_kept: None,
            counters: Counters::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Readings waiting in the buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// When [`Batcher::poll`] will send the buffer if nothing else does (`None`: empty).
    pub fn deadline(&self) -> Option<u64> {
        let delay = u64::try_from(self.config.max_delay.as_millis()).unwrap_or(u64::MAX);
        self.oldest_at.map(|at| at.saturating_add(delay))
    }

    /// Adds a reading that arrived at `now`; returns the batches to send now, in order
    /// (none, one, or two: the buffer and then an oversize reading).
    pub fn push(&mut self, now: u64, reading: Reading) -> Result<Vec<Batch>, BatchError> {
        if reading.values.contains_key(TS_KEY) {
            return Err(BatchError::ReservedReadingKey);
        }
        self.counters.readings_in += 1;
        let mut out: Vec<Batch> = self.poll(now).into_iter().collect();
        if !self.keeps(now, &reading.values) {
            self.counters.readings_dropped += 1;
            return Ok(out);
        }
        let mut row = Map::new();
        row.insert(TS_KEY.into(), reading.ts.into());
        row.extend(reading.values.iter().map(|(k, v)| (k.clone(), v.clone())));
        let row = Value::Object(row).to_string();
        self.last_kept = Some((now, reading.values));

        if !self.buffer.is_empty() {
            let with = self.payload_len(self.buffer.len() + 1, self.buffer_bytes + row.len());
            let without = self.payload_len(self.buffer.len(), self.buffer_bytes);
            if self.units(with) > self.units(without) {
                out.extend(self.take(FlushReason::UnitFull));
            }
        }
        if self.buffer.is_empty() {
            self.oldest_at = Some(now);
        }
        self.buffer_bytes += row.len();
        self.buffer.push(row);
        if self.buffer.len() == 1 && self.units(self.payload_len(1, self.buffer_bytes)) > 1 {
            out.extend(self.take(FlushReason::Oversize));
        } else if self.buffer.len() >= self.config.max_readings {
            out.extend(self.take(FlushReason::MaxReadings));
        }
        Ok(out)
    }

    /// Sends the buffer if its oldest reading has waited `max_delay` at `now`.
    pub fn poll(&mut self, now: u64) -> Option<Batch> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.take(FlushReason::MaxDelay),
            _ => None,
        }
    }

    /// Sends whatever is buffered (at shutdown, say).
    pub fn flush(&mut self) -> Option<Batch> {
        self.take(FlushReason::Requested)
    }

    /// Whether a reading passes the deadband.
    fn keeps(&self, now: u64, values: &Map<String, Value>) -> bool {
        let Some((kept_at, last)) = &self.last_kept else { return true };
        if let Some(heartbeat) = self.config.heartbeat {
            let heartbeat = u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX);
            if now.saturating_sub(*kept_at) >= heartbeat {
                return true;
            }
        }
        let moved = |key: &String| match (values.get(key), last.get(key)) {
            (Some(new), Some(old)) => match (self.config.deadband.get(key), new.as_f64(), old.as_f64()) {
                (Some(threshold), Some(new), Some(old)) => (new - old).abs() >= *threshold,
                _ => new != old,
            },
            _ => true,
        };
        values.keys().chain(last.keys()).any(moved)
    }

    fn payload_len(&self, rows: usize, row_bytes: usize) -> usize {
        self.prefix.len() + row_bytes + rows.saturating_sub(1) + SUFFIX.len()
    }

    fn units(&self, payload_len: usize) -> u64 {
        message_billing_units(payload_len + self.config.metered_extra_bytes)
    }

    fn take(&mut self, reason: FlushReason) -> Option<Batch> {
        if self.buffer.is_empty() {
            return None;
        }
        let mut payload = String::with_capacity(self.payload_len(self.buffer.len(), self.buffer_bytes));
        payload.push_str(&self.prefix);
        payload.push_str(&self.buffer.join(","));
        payload.push_str(SUFFIX);
        let batch = Batch { units: self.units(payload.len()), readings: self.buffer.len(), payload, reason };
        self.buffer.clear();
        self.buffer_bytes = 0;
        self.oldest_at = None;
        self.counters.messages += 1;
        self.counters.payload_bytes += batch.payload.len() as u64;
        self.counters.billing_units += batch.units;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reading(ts: u64, values: Value) -> Reading {
        Reading::new(ts, values).unwrap()
    }

    /// Compact JSON length of a reading row `{"ts":T,"p":"xxx"}` with `pad` x's.
    fn padded(ts: u64, pad: usize) -> Reading {
        reading(ts, json!({"p": "x".repeat(pad)}))
    }

    fn row_len(ts: u64, pad: usize) -> usize {
        format!("{{\"ts\":{ts},\"p\":\"{}\"}}", "x".repeat(pad)).len()
    }

    /// `{"v":1,"readings":[` + `]}`.
    const FRAME: usize = 21;

    fn batcher() -> Batcher {
        Batcher::new(BatchConfig { max_readings: 1000, max_delay: Duration::from_secs(3600), ..Default::default() })
            .unwrap()
    }

    /// A pad that makes a one-reading payload exactly `total` bytes (ts 1).
    fn pad_for(total: usize) -> usize {
        total - FRAME - row_len(1, 0)
    }

    #[test]
    fn payload_is_versioned_json_with_the_header_and_readings_in_order() {
        let mut header = Map::new();
        header.insert("thing".into(), json!("pump-01"));
        let mut b = Batcher::new(BatchConfig { header, max_readings: 2, ..Default::default() }).unwrap();
        assert!(b.push(0, reading(1000, json!({"speedRpm": 1480, "flowM3h": 41.2}))).unwrap().is_empty());
        let batches = b.push(1, reading(2000, json!({"speedRpm": 1481}))).unwrap();
        let [batch] = &batches[..] else { panic!("{batches:?}") };
        assert_eq!(
            batch.payload,
            r#"{"v":1,"thing":"pump-01","readings":[{"ts":1000,"speedRpm":1480,"flowM3h":41.2},{"ts":2000,"speedRpm":1481}]}"#
        );
        let parsed: Value = serde_json::from_str(&batch.payload).unwrap();
        assert_eq!(parsed["v"], 1);
        assert_eq!((batch.readings, batch.units, batch.reason), (2, 1, FlushReason::MaxReadings));
    }

    #[test]
    fn a_payload_of_exactly_5120_bytes_is_one_unit_and_is_not_split() {
        let mut b = batcher();
        // Two readings that fill the unit to the byte.
        let first = row_len(1, 100);
        let pad = 5120 - FRAME - first - 1 - row_len(2, 0);
        assert!(b.push(0, padded(1, 100)).unwrap().is_empty());
        assert!(b.push(0, padded(2, pad)).unwrap().is_empty(), "5120 bytes still fit one unit");
        let batch = b.flush().unwrap();
        assert_eq!((batch.payload.len(), batch.units, batch.readings), (5120, 1, 2));
    }

    #[test]
    fn the_reading_that_would_make_5121_bytes_starts_the_next_batch() {
        let mut b = batcher();
        let first = row_len(1, 100);
        let pad = 5121 - FRAME - first - 1 - row_len(2, 0);
        assert!(b.push(0, padded(1, 100)).unwrap().is_empty());
        let batches = b.push(0, padded(2, pad)).unwrap();
        let [batch] = &batches[..] else { panic!("{batches:?}") };
        assert_eq!((batch.payload.len(), batch.units, batch.readings), (FRAME + first, 1, 1));
        assert_eq!(batch.reason, FlushReason::UnitFull);
        assert_eq!(b.buffered(), 1, "the crossing reading waits in a new batch");
    }

    #[test]
    fn a_single_reading_of_5121_bytes_goes_alone_and_costs_two_units() {
        let mut b = batcher();
        assert!(b.push(0, padded(1, 10)).unwrap().is_empty());
        let batches = b.push(0, padded(1, pad_for(5121))).unwrap();
        let [small, big] = &batches[..] else { panic!("{batches:?}") };
        assert_eq!((small.readings, small.reason), (1, FlushReason::UnitFull));
        assert_eq!((big.payload.len(), big.units, big.reason), (5121, 2, FlushReason::Oversize));
        assert_eq!(b.buffered(), 0, "nothing joins an oversize reading");
    }

    #[test]
    fn a_single_reading_of_exactly_5120_bytes_waits_for_company_it_cannot_take() {
        let mut b = batcher();
        assert!(b.push(0, padded(1, pad_for(5120))).unwrap().is_empty());
        let batches = b.push(0, padded(1, 0)).unwrap();
        let [full] = &batches[..] else { panic!("{batches:?}") };
        assert_eq!((full.payload.len(), full.units, full.reason), (5120, 1, FlushReason::UnitFull));
    }

    #[test]
    fn topic_bytes_count_toward_the_unit() {
        let topic = "dt/pump/pump-01/telemetry";
        let mut b =
            Batcher::new(BatchConfig { metered_extra_bytes: topic.len(), max_readings: 1000, ..Default::default() })
                .unwrap();
        // Payload 5120 - topic bytes: exactly one unit with the topic.
        assert!(b.push(0, padded(1, pad_for(5120 - topic.len()))).unwrap().is_empty());
        let batch = b.flush().unwrap();
        assert_eq!((batch.payload.len() + topic.len(), batch.units), (5120, 1));
        // One byte more is two units.
        assert_eq!(b.push(0, padded(1, pad_for(5121 - topic.len()))).unwrap()[0].units, 2);
        // Two readings whose payload is 5096 bytes: one unit with the 25 topic bytes, so
        // the second joins the first; a third of any size would cross and starts a new batch.
        let first = row_len(1, 100);
        let pad = 5120 - topic.len() - FRAME - first - 1 - row_len(2, 0);
        assert!(b.push(0, padded(1, 100)).unwrap().is_empty());
        assert!(b.push(0, padded(2, pad)).unwrap().is_empty(), "payload + topic = 5120: still one unit");
        let batches = b.push(0, padded(3, 0)).unwrap();
        let [full] = &batches[..] else { panic!("{batches:?}") };
        assert_eq!((full.payload.len() + topic.len(), full.units, full.readings), (5120, 1, 2));
    }

    #[test]
    fn max_readings_sends_a_full_batch() {
        let mut b = Batcher::new(BatchConfig { max_readings: 3, ..Default::default() }).unwrap();
        for ts in 0..2 {
            assert!(b.push(ts, reading(ts, json!({"a": ts}))).unwrap().is_empty());
        }
        let batches = b.push(2, reading(2, json!({"a": 2}))).unwrap();
        assert_eq!(batches.iter().map(|b| (b.readings, b.reason)).collect::<Vec<_>>(), [(3, FlushReason::MaxReadings)]);
        assert_eq!(b.buffered(), 0);
    }

    #[test]
    fn max_delay_sends_the_buffer_when_its_oldest_reading_is_due() {
        let mut b = Batcher::new(BatchConfig { max_delay: Duration::from_millis(500), ..Default::default() }).unwrap();
        assert_eq!(b.deadline(), None);
        b.push(1000, reading(1, json!({"a": 1}))).unwrap();
        b.push(1400, reading(2, json!({"a": 2}))).unwrap();
        assert_eq!(b.deadline(), Some(1500), "measured from the oldest reading");
        assert_eq!(b.poll(1499), None);
        let batch = b.poll(1500).unwrap();
        assert_eq!((batch.readings, batch.reason), (2, FlushReason::MaxDelay));
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn a_reading_after_the_deadline_sends_the_overdue_buffer_first() {
        let mut b = Batcher::new(BatchConfig { max_delay: Duration::from_millis(500), ..Default::default() }).unwrap();
        b.push(1000, reading(1, json!({"a": 1}))).unwrap();
        let batches = b.push(2000, reading(2, json!({"a": 2}))).unwrap();
        assert_eq!(batches.iter().map(|b| (b.readings, b.reason)).collect::<Vec<_>>(), [(1, FlushReason::MaxDelay)]);
        assert_eq!((b.buffered(), b.deadline()), (1, Some(2500)));
    }

    fn deadband_batcher(heartbeat: Option<Duration>) -> Batcher {
        let deadband = BTreeMap::from([("flow".to_string(), 1.0), ("temp".to_string(), 0.5)]);
        let max_delay = Duration::from_secs(3600);
        Batcher::new(BatchConfig { deadband, heartbeat, max_readings: 1000, max_delay, ..Default::default() }).unwrap()
    }

    #[test]
    fn deadband_drops_readings_that_moved_less_than_the_threshold_from_the_last_kept_one() {
        let mut b = deadband_batcher(None);
        // flow drifts 0.4 per reading: compared with the last *kept* reading, the third
        // one has moved 1.2 ≥ 1.0 and is kept, although each step was small.
        for (ts, flow) in [(0, 10.0), (1, 10.4), (2, 10.8), (3, 11.2), (4, 11.6)] {
            b.push(ts, reading(ts, json!({"flow": flow, "temp": 40.0}))).unwrap();
        }
        let batch = b.flush().unwrap();
        let flows: Vec<f64> = serde_json::from_str::<Value>(&batch.payload).unwrap()["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["flow"].as_f64().unwrap())
            .collect();
        assert_eq!(flows, [10.0, 11.2]);
        assert_eq!((b.counters().readings_in, b.counters().readings_dropped), (5, 3));
    }

    #[test]
    fn deadband_keeps_a_reading_when_any_member_moved_enough() {
        let mut b = deadband_batcher(None);
        b.push(0, reading(0, json!({"flow": 10.0, "temp": 40.0}))).unwrap();
        b.push(1, reading(1, json!({"flow": 10.1, "temp": 40.6}))).unwrap();
        assert_eq!(b.buffered(), 2, "temp moved 0.6 ≥ 0.5");
    }

    #[test]
    fn deadband_treats_unlisted_and_changed_shape_members_as_moved_when_they_changed() {
        let mut b = deadband_batcher(None);
        b.push(0, reading(0, json!({"flow": 10.0, "running": true}))).unwrap();
        b.push(1, reading(1, json!({"flow": 10.0, "running": true}))).unwrap();
        assert_eq!(b.buffered(), 1, "nothing changed: dropped");
        b.push(2, reading(2, json!({"flow": 10.0, "running": false}))).unwrap();
        assert_eq!(b.buffered(), 2, "an unlisted member changed");
        b.push(3, reading(3, json!({"flow": 10.0, "running": false, "fault": "x"}))).unwrap();
        assert_eq!(b.buffered(), 3, "a member appeared");
    }

    #[test]
    fn heartbeat_keeps_a_reading_inside_the_deadband_when_the_last_kept_one_is_old() {
        let mut b = deadband_batcher(Some(Duration::from_secs(10)));
        b.push(0, reading(0, json!({"flow": 10.0}))).unwrap();
        b.push(9_999, reading(1, json!({"flow": 10.0}))).unwrap();
        assert_eq!(b.buffered(), 1);
        b.push(10_000, reading(2, json!({"flow": 10.0}))).unwrap();
        assert_eq!(b.buffered(), 2, "heartbeat due");
        b.push(15_000, reading(3, json!({"flow": 10.0}))).unwrap();
        assert_eq!(b.buffered(), 2, "the heartbeat restarted from the kept reading");
    }

    #[test]
    fn counters_add_up_messages_bytes_and_units() {
        let mut b = batcher();
        let mut sent = Vec::new();
        sent.extend(b.push(0, padded(1, 100)).unwrap());
        sent.extend(b.push(0, padded(1, pad_for(6000))).unwrap());
        sent.extend(b.push(0, padded(1, 10)).unwrap());
        sent.extend(b.flush());
        assert_eq!(sent.iter().map(|b| b.units).collect::<Vec<_>>(), [1, 2, 1]);
        let c = b.counters();
        assert_eq!(c.messages, 3);
        assert_eq!(c.payload_bytes, sent.iter().map(|b| b.payload.len() as u64).sum::<u64>());
        assert_eq!(c.billing_units, 4);
        assert_eq!((c.readings_in, c.readings_dropped), (3, 0));
        assert_eq!(b.flush(), None, "an empty buffer sends nothing");
    }

    #[test]
    fn bad_configuration_and_readings_are_refused() {
        let bad = |config: BatchConfig| Batcher::new(config).unwrap_err();
        assert_eq!(bad(BatchConfig { max_readings: 0, ..Default::default() }), BatchError::ZeroMaxReadings);
        let deadband = BTreeMap::from([("flow".to_string(), -1.0)]);
        assert!(matches!(bad(BatchConfig { deadband, ..Default::default() }), BatchError::BadDeadband { .. }));
        let header = json!({"readings": 1}).as_object().cloned().unwrap();
        assert_eq!(bad(BatchConfig { header, ..Default::default() }), BatchError::ReservedHeaderKey("readings".into()));
        assert_eq!(
            bad(BatchConfig { metered_extra_bytes: 5100, ..Default::default() }),
            BatchError::ExtraBytesTooLarge(5100)
        );
        let mut b = batcher();
        assert_eq!(b.push(0, reading(1, json!({"ts": 5}))), Err(BatchError::ReservedReadingKey));
        assert_eq!(b.counters().readings_in, 0);
        assert_eq!(Reading::new(1, json!([1, 2])), None);
    }
}
