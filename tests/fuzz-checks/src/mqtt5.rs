//! MQTT 5 packets from a client, properties included, through the broker's own decoder.

use bytes::BytesMut;
use local_cloud::broker::codec::{Decoded5, FirstPacket, classify_first, decode5};

use crate::Outcome;

/// Feeds `data` as the bytes an MQTT 5 client sends to the broker's MQTT 5 decoder
/// (`broker::codec::decode5`), packet after packet from one growing buffer, as a
/// connection does after an MQTT 5 CONNECT.
///
/// Checks: a decoded packet consumed bytes; an incomplete read consumed none; a
/// packet refused as too large or invalid ends the loop (the connection is closed
/// with DISCONNECT 0x95 or 0x81); a buffer that is not a CONNECT is classified so.
pub fn mqtt5_packet(data: &[u8]) -> Outcome {
    let first = classify_first(data);
    if data.first().is_some_and(|&b| b != 0x10) {
        assert_eq!(first, FirstPacket::NotConnect, "a first byte other than CONNECT's");
    }
    let mut buf = BytesMut::from(data);
    let mut decoded = 0;
    while !buf.is_empty() {
        let before = buf.clone();
        match decode5(&mut buf) {
            Decoded5::Packet(_) => {
                assert!(buf.len() < before.len(), "decoded a packet without consuming bytes");
                decoded += 1;
            }
            Decoded5::Incomplete => {
                assert_eq!(buf, before, "an incomplete read consumed bytes");
                break;
            }
            Decoded5::TooLarge | Decoded5::Invalid(_) => break,
        }
    }
    Outcome::of(decoded > 0)
}
