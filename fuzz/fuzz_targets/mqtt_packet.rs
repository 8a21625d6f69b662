//! Feeds arbitrary bytes to the MQTT 3.1.1 decoder the broker uses.
//!
//! The broker's own `broker::codec::decode` is crate-private, so this target
//! drives what it wraps, `rumqttc::mqttbytes::v4::Packet::read`, with the same
//! size limit (`MAX_PAYLOAD_BYTES + 1024`) and the same loop: decode packets
//! from the front of one growing buffer until it runs dry, needs more bytes,
//! or holds garbage (which closes the connection). Nothing may panic, and an
//! incomplete read must leave the buffer as it was, because the broker reads
//! more bytes into the same buffer and tries again.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rumqttc::mqttbytes::Error;
use rumqttc::mqttbytes::v4::Packet;

/// `broker::codec::MAX_REMAINING_LENGTH`.
const MAX_REMAINING_LENGTH: usize = cloud_api::limits::MAX_PAYLOAD_BYTES + 1024;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        if buf.is_empty() {
            break;
        }
        let before = buf.clone();
        match Packet::read(&mut buf, MAX_REMAINING_LENGTH) {
            Ok(_packet) => {
                // A packet was consumed: the buffer must have shrunk.
                assert!(buf.len() < before.len(), "decoded a packet without consuming bytes");
            }
            Err(Error::InsufficientBytes(_)) => {
                assert_eq!(buf, before, "an incomplete read consumed bytes");
                break;
            }
            Err(_) => break,
        }
    }
});
