//! MQTT 3.1.1 packets from a client, through the broker's own decoder.

use bytes::BytesMut;
use local_cloud::broker::codec::{Decoded, FirstPacket, classify_first, decode};

use crate::Outcome;

/// Feeds `data` as the bytes a client sends on a new connection to the broker's decoder
/// (`broker::codec`): the first-packet classification, then the decode loop of a connection:
/// packets from the front of one growing buffer until it runs dry, needs more bytes, or holds
/// garbage (which closes the connection).
///
/// Checks: a decoded packet consumed bytes; an incomplete read consumed none, because the
/// broker reads more bytes into the same buffer and tries again; a buffer that is not a
/// CONNECT to begin with is classified so.
pub fn mqtt_packet(data: &[u8]) -> Outcome {
    drain(data, |buf| match decode(buf) {
        Decoded::Packet(_) => Step::Packet,
        Decoded::Incomplete => Step::Incomplete,
        Decoded::Invalid(_) => Step::End,
    })
}

/// What one decode from the front of the buffer gave.
pub(crate) enum Step {
    /// A packet (its bytes consumed).
    Packet,
    /// More bytes are needed (nothing consumed).
    Incomplete,
    /// Refused: the connection closes.
    End,
}

/// The first-packet check and the decode loop of a connection, with `decode_one` as the
/// version's decoder; shared by the MQTT 3.1.1 and MQTT 5 checks.
pub(crate) fn drain(data: &[u8], mut decode_one: impl FnMut(&mut BytesMut) -> Step) -> Outcome {
    let first = classify_first(data);
    if data.first().is_some_and(|&b| b != 0x10) {
        assert_eq!(first, FirstPacket::NotConnect, "a first byte other than CONNECT's");
    }
    let mut buf = BytesMut::from(data);
    let mut decoded = 0;
    while !buf.is_empty() {
        let before = buf.clone();
        match decode_one(&mut buf) {
            Step::Packet => {
                assert!(buf.len() < before.len(), "decoded a packet without consuming bytes");
                decoded += 1;
            }
            Step::Incomplete => {
                assert_eq!(buf, before, "an incomplete read consumed bytes");
                break;
            }
            Step::End => break,
        }
    }
    Outcome::of(decoded > 0)
}
