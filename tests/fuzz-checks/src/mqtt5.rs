//! MQTT 5 packets from a client, properties included, through the broker's own decoder.

use local_cloud::broker::codec::{Decoded5, decode5};

use crate::Outcome;
use crate::mqtt::{Step, drain};

/// Feeds `data` as the bytes an MQTT 5 client sends to the broker's MQTT 5 decoder
/// (`broker::codec::decode5`), packet after packet from one growing buffer, as a
/// connection does after an MQTT 5 CONNECT.
///
/// Checks: a decoded packet consumed bytes; an incomplete read consumed none; a
/// packet refused as too large or invalid ends the loop (the connection is closed
/// with DISCONNECT 0x95 or 0x81); a buffer that is not a CONNECT is classified so.
pub fn mqtt5_packet(data: &[u8]) -> Outcome {
    drain(data, |buf| match decode5(buf) {
        Decoded5::Packet(_) => Step::Packet,
        Decoded5::Incomplete => Step::Incomplete,
        Decoded5::TooLarge | Decoded5::Invalid(_) => Step::End,
    })
}
