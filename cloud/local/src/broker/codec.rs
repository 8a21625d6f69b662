//! MQTT 3.1.1 framing around `rumqttc::mqttbytes::v4`: decoding with the checks
//! the codec leaves out (reserved header flags, protocol level of a CONNECT),
//! and encoding of the packets the broker sends. PUBLISH is encoded straight
//! from a shared message so fan-out does not allocate per subscriber.
//!
//! The decoding half ([`decode`], [`classify_first`]) is public for the fuzz checks
//! (`tests/fuzz-checks`), which feed it arbitrary bytes; the encoders stay crate-private.

use bytes::{BufMut, BytesMut};
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::Packet;

/// Largest remaining length the broker reads: a 128 KiB payload plus room for
/// the topic and header. Bigger frames are refused from their fixed header,
/// before their body is buffered.
pub const MAX_REMAINING_LENGTH: usize = cloud_api::limits::MAX_PAYLOAD_BYTES + 1024;

/// Outcome of trying to decode one packet from the front of a buffer.
#[derive(Debug)]
pub enum Decoded {
    /// A packet (consumed from the buffer).
    Packet(Packet),
    /// More bytes are needed.
    Incomplete,
    /// Malformed, oversized, or breaking a MUST of the specification.
    Invalid(&'static str),
}

/// Decodes the next packet. Enforces the fixed-header flag bits MQTT 3.1.1
/// reserves (SUBSCRIBE, UNSUBSCRIBE and PUBREL carry 0b0010, other non-PUBLISH
/// packets 0), which the codec does not check.
pub fn decode(buf: &mut BytesMut) -> Decoded {
    let Some(&byte1) = buf.first() else { return Decoded::Incomplete };
    let flags = byte1 & 0x0F;
    let expected_flags = match byte1 >> 4 {
        3 => None,
        6 | 8 | 10 => Some(0b0010),
        _ => Some(0),
    };
    if expected_flags.is_some_and(|f| f != flags) {
        return Decoded::Invalid("reserved flags in fixed header");
    }
    match Packet::read(buf, MAX_REMAINING_LENGTH) {
        Ok(p) => Decoded::Packet(p),
        Err(CodecError::InsufficientBytes(_)) => Decoded::Incomplete,
        Err(CodecError::PayloadSizeLimitExceeded(_)) => Decoded::Invalid("packet too large"),
        Err(CodecError::TopicNotUtf8) => Decoded::Invalid("string is not UTF-8"),
        Err(_) => Decoded::Invalid("malformed packet"),
    }
}

/// What the first packet of a connection announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPacket {
    /// Not enough bytes yet.
    Incomplete,
    /// A CONNECT for MQTT 3.1.1 (`MQTT`, level 4).
    Mqtt311,
    /// A CONNECT for another protocol version (MQTT 3.1 `MQIsdp`, MQTT 5, …).
    OtherVersion,
    /// Not a CONNECT, or unreadable.
    NotConnect,
}

/// Inspects the first packet before decoding it, so a CONNECT for a version the
/// broker does not speak gets CONNACK "unacceptable protocol version" instead
/// of being misparsed with 3.1.1 rules.
pub fn classify_first(buf: &[u8]) -> FirstPacket {
    let Some(&byte1) = buf.first() else { return FirstPacket::Incomplete };
    if byte1 != 0x10 {
        return FirstPacket::NotConnect;
    }
    // Remaining length: 1..4 bytes, 7 bits each.
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else { return FirstPacket::Incomplete };
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return FirstPacket::NotConnect;
        }
    }
    // Protocol name (u16 length + bytes) then the level byte.
    let (Some(&hi), Some(&lo)) = (buf.get(i), buf.get(i + 1)) else { return FirstPacket::Incomplete };
    let name_len = usize::from(u16::from_be_bytes([hi, lo]));
    if name_len > 6 {
        return FirstPacket::NotConnect;
    }
    let Some(rest) = buf.get(i + 2..i + 2 + name_len + 1) else { return FirstPacket::Incomplete };
    let (name, level) = (&rest[..name_len], rest[name_len]);
    match (name, level) {
        (b"MQTT", 4) => FirstPacket::Mqtt311,
        (b"MQTT", _) | (b"MQIsdp", _) => FirstPacket::OtherVersion,
        _ => FirstPacket::NotConnect,
    }
}

fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            break;
        }
    }
}

/// Appends a PUBLISH. `pkid` is ignored for QoS 0.
pub(crate) fn put_publish(
    out: &mut BytesMut,
    topic: &str,
    payload: &[u8],
    qos: u8,
    pkid: u16,
    retain: bool,
    dup: bool,
) {
    let qos = qos.min(1);
    let remaining = 2 + topic.len() + if qos > 0 { 2 } else { 0 } + payload.len();
    out.reserve(remaining + 5);
    out.put_u8(0x30 | (u8::from(dup && qos > 0) << 3) | (qos << 1) | u8::from(retain));
    put_remaining_length(out, remaining);
    // Topics are at most 256 bytes here; the u16 length cannot overflow.
    out.put_u16(topic.len() as u16);
    out.put_slice(topic.as_bytes());
    if qos > 0 {
        out.put_u16(pkid);
    }
    out.put_slice(payload);
}

/// Appends a CONNACK.
pub(crate) fn put_connack(out: &mut BytesMut, session_present: bool, code: u8) {
    out.put_slice(&[0x20, 0x02, u8::from(session_present), code]);
}

/// Appends a PUBACK.
pub(crate) fn put_puback(out: &mut BytesMut, pkid: u16) {
    out.put_slice(&[0x40, 0x02]);
    out.put_u16(pkid);
}

/// Appends a SUBACK with one return code per filter.
pub(crate) fn put_suback(out: &mut BytesMut, pkid: u16, codes: &[u8]) {
    out.put_u8(0x90);
    put_remaining_length(out, 2 + codes.len());
    out.put_u16(pkid);
    out.put_slice(codes);
}

/// Appends an UNSUBACK.
pub(crate) fn put_unsuback(out: &mut BytesMut, pkid: u16) {
    out.put_slice(&[0xB0, 0x02]);
    out.put_u16(pkid);
}

/// Appends a PINGRESP.
pub(crate) fn put_pingresp(out: &mut BytesMut) {
    out.put_slice(&[0xD0, 0x00]);
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{Connect, Publish, SubAck, SubscribeReasonCode};

    use super::*;

    fn encoded(p: &Packet) -> BytesMut {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).unwrap();
        b
    }

    #[test]
    fn publish_encoding_round_trips_through_the_reference_codec() {
        for (qos, retain, dup, len) in [(0u8, false, false, 0usize), (1, true, true, 200), (1, false, false, 70_000)] {
            let payload = vec![7u8; len];
            let mut out = BytesMut::new();
            put_publish(&mut out, "a/b", &payload, qos, 42, retain, dup);
            let Decoded::Packet(Packet::Publish(p)) = decode(&mut out) else { panic!("not a publish") };
            assert_eq!(p.topic, "a/b");
            assert_eq!(p.payload, Bytes::from(payload));
            assert_eq!(p.qos as u8, qos);
            assert_eq!(p.retain, retain);
            assert_eq!(p.dup, dup && qos > 0);
            assert_eq!(p.pkid, if qos > 0 { 42 } else { 0 });
            assert!(out.is_empty());
        }
    }

    #[test]
    fn acks_match_the_reference_codec() {
        let mut out = BytesMut::new();
        put_suback(&mut out, 9, &[1, 0x80, 0]);
        let reference = SubAck::new(
            9,
            vec![
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure,
                SubscribeReasonCode::Success(QoS::AtMostOnce),
            ],
        );
        assert_eq!(out, encoded(&Packet::SubAck(reference)));
        let mut out = BytesMut::new();
        put_connack(&mut out, true, 0);
        put_puback(&mut out, 300);
        put_unsuback(&mut out, 301);
        put_pingresp(&mut out);
        assert_eq!(&out[..], &[0x20, 2, 1, 0, 0x40, 2, 1, 44, 0xB0, 2, 1, 45, 0xD0, 0][..]);
    }

    #[test]
    fn partial_packets_wait_for_more_bytes() {
        let full = encoded(&Packet::Publish(Publish::new("t", QoS::AtLeastOnce, vec![1, 2, 3]).tap_pkid(5)));
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert!(matches!(decode(&mut part), Decoded::Incomplete), "cut at {cut}");
            assert_eq!(part.len(), cut);
        }
    }

    trait TapPkid {
        fn tap_pkid(self, pkid: u16) -> Self;
    }
    impl TapPkid for Publish {
        fn tap_pkid(mut self, pkid: u16) -> Self {
            self.pkid = pkid;
            self
        }
    }

    #[test]
    fn garbage_and_bad_flags_are_invalid() {
        for bytes in [
            &[0xF0, 0x00][..],                         // reserved packet type 15
            &[0x00, 0x00][..],                         // reserved packet type 0
            &[0x80, 0x05, 0, 1, 0, 1, b'a'][..],       // SUBSCRIBE without the 0b0010 flags
            &[0xA0, 0x05, 0, 1, 0, 1, b'a'][..],       // UNSUBSCRIBE without the 0b0010 flags
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF][..],       // malformed remaining length
            &[0x32, 0x05, 0, 3, b'a', b'/', b'b'][..], // QoS 1 publish with no packet id
            &[0x30, 0x04, 0, 2, 0xC3, 0x28][..],       // topic is not UTF-8
        ] {
            let mut b = BytesMut::from(bytes);
            assert!(matches!(decode(&mut b), Decoded::Invalid(_)), "{bytes:?}");
        }
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header() {
        let mut b = BytesMut::new();
        b.put_u8(0x30);
        put_remaining_length(&mut b, MAX_REMAINING_LENGTH + 1);
        assert!(matches!(decode(&mut b), Decoded::Invalid("packet too large")));
    }

    #[test]
    fn first_packet_tells_mqtt_versions_apart() {
        let v4 = encoded(&Packet::Connect(Connect::new("c")));
        assert_eq!(classify_first(&v4), FirstPacket::Mqtt311);
        assert_eq!(classify_first(&v4[..5]), FirstPacket::Incomplete);
        let mut v5 = v4.clone();
        v5[8] = 5; // protocol level byte
        assert_eq!(classify_first(&v5), FirstPacket::OtherVersion);
        let v31 = [0x10, 0x10, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3];
        assert_eq!(classify_first(&v31), FirstPacket::OtherVersion);
        assert_eq!(classify_first(&[0x30, 0x00]), FirstPacket::NotConnect);
        assert_eq!(classify_first(&[0x10, 0x02, 0x00, 0x09]), FirstPacket::NotConnect);
        assert_eq!(classify_first(&[]), FirstPacket::Incomplete);
    }
}
