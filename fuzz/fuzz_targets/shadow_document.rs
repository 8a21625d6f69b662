//! Feeds arbitrary bytes as Device Shadow update payloads to the pure shadow
//! engine (`cloud_api::shadow`), as the shadow service does for a PUBLISH on
//! `…/shadow/update` or an HTTP UpdateThingShadow.
//!
//! Input: `first` [`\0` `second`]. `first` is applied to a shadow that does
//! not exist; if accepted, `second` is applied to the result (the second
//! half exercises merge, delete-by-null, versions and delta on a stored
//! document). Nothing may panic, and an accepted update must keep the
//! contract: version + 1, state within the size limit, JSON-serializable
//! response bodies.

#![no_main]

use cloud_api::shadow::{ShadowLimits, ShadowRecord};
use libfuzzer_sys::fuzz_target;

fn apply(record: &ShadowRecord, payload: &[u8], now: u64) -> Option<ShadowRecord> {
    let result = record.update(payload, now, ShadowLimits::IOT_CORE).ok()?;
    assert_eq!(result.record.version, record.version + 1, "version must grow by one");
    let stored = result.record.document.as_ref().expect("an accepted update leaves a shadow");
    assert!(stored.state_bytes() <= ShadowLimits::IOT_CORE.max_state_bytes, "accepted state over the limit");
    serde_json::to_vec(&result.accepted).expect("update/accepted serializes");
    serde_json::to_vec(&result.documents).expect("update/documents serializes");
    if let Some(delta) = &result.delta {
        serde_json::to_vec(delta).expect("update/delta serializes");
    }
    // A get on the new record must answer.
    result.record.get(b"", now).expect("get after an accepted update");
    Some(result.record)
}

fuzz_target!(|data: &[u8]| {
    let (first, second) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    let Some(record) = apply(&ShadowRecord::default(), first, 0) else { return };
    if let Some(second) = second {
        apply(&record, second, 1);
    }
});
