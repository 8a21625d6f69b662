//! AWS IoT Core quotas that the broker, the shadow service and the clients
//! honour. Source: "AWS IoT Core endpoints and quotas" (message broker,
//! Device Shadow and registry sections) in the AWS General Reference.

/// Largest MQTT payload IoT Core accepts, in bytes (128 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Longest topic name or filter, in UTF-8 bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most forward slashes in a topic name or filter (reserved `$aws/` topics included).
pub const MAX_TOPIC_SLASHES: usize = 7;
/// Most topic filters in one SUBSCRIBE packet.
pub const MAX_FILTERS_PER_SUBSCRIBE: usize = 8;
/// Most subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 50;
/// Longest MQTT client id, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;
/// Most unacknowledged QoS 1 messages in flight per direction on a connection.
pub const MAX_INFLIGHT_QOS1: usize = 100;
/// Publish requests per second per connection.
pub const MAX_PUBLISHES_PER_SECOND: u32 = 100;
/// Throughput per connection, bytes per second (512 KiB/s).
pub const MAX_BYTES_PER_SECOND: usize = 512 * 1024;
/// Default persistent-session expiry, seconds (1 hour).
pub const PERSISTENT_SESSION_EXPIRY_SECS: u64 = 3600;

/// Largest `desired` + `reported` state of one shadow, in bytes (metadata not counted).
pub const SHADOW_MAX_STATE_BYTES: usize = 8 * 1024;
/// Deepest nesting of a shadow's `desired` or `reported` section.
pub const SHADOW_MAX_DEPTH: usize = 6;
/// Longest shadow `clientToken`, in bytes.
pub const SHADOW_MAX_CLIENT_TOKEN_BYTES: usize = 64;
/// Longest named-shadow name, in bytes.
pub const SHADOW_MAX_NAME_BYTES: usize = 64;
/// Most shadow requests in flight on one MQTT connection.
pub const SHADOW_MAX_INFLIGHT_PER_CONNECTION: usize = 10;
/// How long a deleted shadow's version counter is kept, seconds (48 hours): a
/// shadow re-created within this time continues from the deleted one's version,
/// later it starts again ("Interacting with shadows", Developer Guide).
pub const SHADOW_DELETED_VERSION_RETENTION_SECS: u64 = 48 * 3600;

/// Longest thing name, in bytes.
pub const MAX_THING_NAME_BYTES: usize = 128;

/// Messages are metered in units of this many bytes (5 KiB).
pub const MESSAGE_BILLING_UNIT_BYTES: usize = 5 * 1024;
/// Shadow and registry operations are metered in units of this many bytes (1 KiB).
pub const SHADOW_BILLING_UNIT_BYTES: usize = 1024;

/// Billing units for a message of `payload_len` bytes: a message is metered in
/// 5 KiB steps, and an empty message still counts as one.
pub fn message_billing_units(payload_len: usize) -> u64 {
    payload_len.div_ceil(MESSAGE_BILLING_UNIT_BYTES).max(1) as u64
}

/// Billing units for a Device Shadow request of `len` bytes: shadow operations are metered in
/// 1 KiB steps, and an empty request still counts as one.
pub fn shadow_billing_units(len: usize) -> u64 {
    len.div_ceil(SHADOW_BILLING_UNIT_BYTES).max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_metered_in_5_kib_units() {
        for (len, units) in [(0, 1), (1, 1), (5120, 1), (5121, 2), (8 * 1024, 2), (128 * 1024, 26)] {
            assert_eq!(message_billing_units(len), units, "len {len}");
        }
    }

    #[test]
    fn shadow_operations_are_metered_in_1_kib_units() {
        for (len, units) in [(0, 1), (1, 1), (1024, 1), (1025, 2), (8 * 1024, 8)] {
            assert_eq!(shadow_billing_units(len), units, "len {len}");
        }
    }
}
