//! Device Shadow update documents, through the pure shadow engine.

use cloud_api::shadow::{ShadowLimits, ShadowRecord};

use crate::{Outcome, split_nul};

/// Feeds `first` [`\0` `second`] as Device Shadow update payloads to the shadow engine
/// (`cloud_api::shadow`), as the shadow service does for a PUBLISH on `…/shadow/update` or an
/// HTTP UpdateThingShadow: `first` to a shadow that does not exist, then, if accepted, `second`
/// to the result (merge, delete-by-null, versions and delta on a stored document).
///
/// Checks: an accepted update adds 1 to the version, keeps the state within 8 KiB, and its
/// response bodies serialize; a get on the new record answers.
pub fn shadow_document(data: &[u8]) -> Outcome {
    let (first, second) = split_nul(data);
    let Some(record) = apply(&ShadowRecord::default(), first, 0) else { return Outcome::Rejected };
    if let Some(second) = second {
        apply(&record, second, 1);
    }
    Outcome::Accepted
}

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
    result.record.get(b"", now).expect("get after an accepted update");
    Some(result.record)
}
