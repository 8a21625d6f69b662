//! MQTT framing for both protocol versions the broker speaks: 3.1.1 around
//! `rumqttc::mqttbytes::v4` and 5 around `rumqttc::v5::mqttbytes::v5`. Decoding
//! adds the checks the codecs leave out (reserved header flags, protocol level
//! of a CONNECT, UTF-8 topics in MQTT 5, the empty DISCONNECT of MQTT 5);
//! encoding covers the packets the broker sends. A 3.1.1 PUBLISH is encoded
//! straight from a shared message so fan-out does not allocate per subscriber.
//!
//! The decoding half ([`decode`], [`classify_first`]) is public for the fuzz checks
//! (`tests/fuzz-checks`), which feed it arbitrary bytes; the encoders stay crate-private.

use bytes::{BufMut, BytesMut};
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::v5::mqttbytes::Error as Error5;
use rumqttc::v5::mqttbytes::v5::{
    self as v5, ConnAck as ConnAck5, ConnAckProperties, ConnectReturnCode as Code5, Packet as Packet5,
};

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

/// The fixed-header flag bits both versions reserve (SUBSCRIBE, UNSUBSCRIBE and
/// PUBREL carry 0b0010, other non-PUBLISH packets 0), which the codecs do not check.
fn reserved_flags_ok(byte1: u8) -> bool {
    let expected = match byte1 >> 4 {
        3 => return true,
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    byte1 & 0x0F == expected
}

/// Decodes the next MQTT 3.1.1 packet, enforcing the reserved fixed-header flags.
pub fn decode(buf: &mut BytesMut) -> Decoded {
    let Some(&byte1) = buf.first() else { return Decoded::Incomplete };
    if !reserved_flags_ok(byte1) {
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

/// Outcome of trying to decode one MQTT 5 packet from the front of a buffer.
#[derive(Debug)]
pub enum Decoded5 {
    /// A packet (consumed from the buffer); boxed, as MQTT 5 packets are large.
    Packet(Box<Packet5>),
    /// More bytes are needed.
    Incomplete,
    /// Too large for the broker's Maximum Packet Size (DISCONNECT 0x95).
    TooLarge,
    /// Malformed (DISCONNECT 0x81).
    Invalid(&'static str),
}

/// Decodes the next MQTT 5 packet. Besides the reserved flags it refuses a
/// PUBLISH topic that is not UTF-8 (the codec keeps it as bytes) and accepts the
/// short DISCONNECTs the codec refuses: no reason code (0x00), or a reason code
/// without a property length (MQTT 5 §3.14.2.2.1).
pub fn decode5(buf: &mut BytesMut) -> Decoded5 {
    let Some(&byte1) = buf.first() else { return Decoded5::Incomplete };
    if !reserved_flags_ok(byte1) {
        return Decoded5::Invalid("reserved flags in fixed header");
    }
    if byte1 == 0xE0 {
        match (buf.get(1), buf.get(2)) {
            (Some(0), _) => {
                let _ = buf.split_to(2);
                let normal = v5::DisconnectReasonCode::NormalDisconnection;
                return Decoded5::Packet(Box::new(Packet5::Disconnect(v5::Disconnect::new(normal))));
            }
            (Some(1), Some(&code)) => {
                let _ = buf.split_to(3);
                return match v5::DisconnectReasonCode::try_from(code) {
                    Ok(reason) => Decoded5::Packet(Box::new(Packet5::Disconnect(v5::Disconnect::new(reason)))),
                    Err(_) => Decoded5::Invalid("unknown DISCONNECT reason code"),
                };
            }
            (Some(1), None) => return Decoded5::Incomplete,
            _ => {}
        }
    }
    let max = u32::try_from(MAX_REMAINING_LENGTH).unwrap_or(u32::MAX);
    let before = buf.len();
    match Packet5::read(buf, Some(max)) {
        // The codec also says "insufficient bytes" for a field cut short inside a
        // whole frame (a property length, say), after taking the frame: that is malformed.
        Err(Error5::InsufficientBytes(_)) if buf.len() != before => Decoded5::Invalid("malformed packet"),
        Ok(Packet5::Publish(p)) if std::str::from_utf8(&p.topic).is_err() => Decoded5::Invalid("string is not UTF-8"),
        Ok(p) => Decoded5::Packet(Box::new(p)),
        Err(Error5::InsufficientBytes(_)) => Decoded5::Incomplete,
        Err(Error5::PayloadSizeLimitExceeded { .. }) => Decoded5::TooLarge,
        Err(Error5::TopicNotUtf8 | Error5::PayloadNotUtf8(_)) => Decoded5::Invalid("string is not UTF-8"),
        Err(_) => Decoded5::Invalid("malformed packet"),
    }
}

/// What the first packet of a connection announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPacket {
    /// Not enough bytes yet.
    Incomplete,
    /// A CONNECT for MQTT 3.1.1 (`MQTT`, level 4).
    Mqtt311,
    /// A CONNECT for MQTT 5 (`MQTT`, level 5).
    Mqtt5,
    /// A CONNECT for MQTT 3.1 (`MQIsdp`) or an older level: answered in 3.1.1's format.
    OtherVersion,
    /// A CONNECT for a level above 5: answered in MQTT 5's format (0x84).
    NewerVersion,
    /// Not a CONNECT, or unreadable.
    NotConnect,
}

/// Inspects the first packet before decoding it, so each CONNECT is decoded by
/// its version's codec and one for a version the broker does not speak gets
/// CONNACK "unacceptable protocol version" (3.1.1) or 0x84 (MQTT 5).
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
        (b"MQTT", 5) => FirstPacket::Mqtt5,
        (b"MQTT", l) if l > 5 => FirstPacket::NewerVersion,
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

// ---- MQTT 5 encoders ----

/// Appends an MQTT 5 CONNACK with a reason code and properties.
pub(crate) fn put_connack5(out: &mut BytesMut, session_present: bool, code: u8, properties: Option<ConnAckProperties>) {
    let code = match code {
        0x00 => Code5::Success,
        0x81 => Code5::MalformedPacket,
        0x82 => Code5::ProtocolError,
        0x84 => Code5::UnsupportedProtocolVersion,
        0x85 => Code5::ClientIdentifierNotValid,
        0x87 => Code5::NotAuthorized,
        0x88 => Code5::ServerUnavailable,
        0x8C => Code5::BadAuthenticationMethod,
        0x90 => Code5::TopicNameInvalid,
        0x95 => Code5::PacketTooLarge,
        0x9A => Code5::RetainNotSupported,
        0x9B => Code5::QoSNotSupported,
        _ => Code5::UnspecifiedError,
    };
    let ack = ConnAck5 { session_present, code, properties };
    // Writing into a growable buffer does not fail.
    let _ = ack.write(out);
}

/// Appends an MQTT 5 PUBLISH with its properties (none for a bare message).
pub(crate) fn put_publish5(out: &mut BytesMut, publish: &v5::Publish) {
    let _ = publish.write(out);
}

/// Appends an MQTT 5 PUBACK; success without properties takes the short form.
pub(crate) fn put_puback5(out: &mut BytesMut, pkid: u16, reason: u8) {
    if reason == 0 {
        out.put_slice(&[0x40, 0x02]);
        out.put_u16(pkid);
    } else {
        out.put_slice(&[0x40, 0x03]);
        out.put_u16(pkid);
        out.put_u8(reason);
    }
}

/// Appends an MQTT 5 SUBACK or UNSUBACK (no properties) with one reason code per filter.
pub(crate) fn put_ack_with_codes5(out: &mut BytesMut, first_byte: u8, pkid: u16, codes: &[u8]) {
    out.put_u8(first_byte);
    put_remaining_length(out, 3 + codes.len());
    out.put_u16(pkid);
    out.put_u8(0);
    out.put_slice(codes);
}

/// Appends an MQTT 5 DISCONNECT with a reason code and an empty property list
/// (spelled out: some clients, rumqttc among them, cannot read the shorter form).
pub(crate) fn put_disconnect5(out: &mut BytesMut, reason: u8) {
    out.put_slice(&[0xE0, 0x02, reason, 0x00]);
}

#[cfg(test)]
mod tests5 {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Filter, Publish, PublishProperties, RetainForwardRule, Subscribe};

    use super::*;

    fn encoded5(p: &Packet5) -> BytesMut {
        let mut b = BytesMut::new();
        p.write(&mut b, None).unwrap();
        b
    }

    #[test]
    fn mqtt5_publish_properties_and_subscription_options_decode() {
        let props = PublishProperties {
            user_properties: vec![("a".into(), "b".into())],
            response_topic: Some("r".into()),
            topic_alias: Some(3),
            ..Default::default()
        };
        let mut p = Publish::new("t/1", QoS::AtLeastOnce, "x", Some(props.clone()));
        p.pkid = 9;
        let mut b = encoded5(&Packet5::Publish(p));
        let Decoded5::Packet(packet) = decode5(&mut b) else { panic!("not decoded") };
        let Packet5::Publish(got) = *packet else { panic!("not a publish") };
        assert_eq!((got.pkid, got.properties), (9, Some(props)));
        let mut f = Filter::new("a/#", QoS::AtLeastOnce);
        (f.nolocal, f.preserve_retain, f.retain_forward_rule) = (true, true, RetainForwardRule::Never);
        let mut s = Subscribe::new(f.clone(), None);
        s.pkid = 2;
        let mut b = encoded5(&Packet5::Subscribe(s));
        let Decoded5::Packet(packet) = decode5(&mut b) else { panic!("not decoded") };
        let Packet5::Subscribe(got) = *packet else { panic!("not a subscribe") };
        assert_eq!(got.filters, vec![f]);
    }

    #[test]
    fn mqtt5_short_disconnects_are_read_and_bad_input_is_refused() {
        for (bytes, expected) in [
            (&[0xE0, 0x00][..], Some(v5::DisconnectReasonCode::NormalDisconnection)),
            (&[0xE0, 0x01, 0x04][..], Some(v5::DisconnectReasonCode::DisconnectWithWillMessage)),
            (&[0xE0, 0x02, 0x8E, 0x00][..], Some(v5::DisconnectReasonCode::SessionTakenOver)),
            (&[0xE0, 0x01, 0x03][..], None),                      // no such reason code
            (&[0xE1, 0x00][..], None),                            // reserved flags
            (&[0x30, 0x06, 0, 2, 0xC3, 0x28, 0, b'x'][..], None), // topic not UTF-8
            (&[0x30, 0x05, 0, 1, b'a', 2, 0x7F][..], None),       // unknown property
            (&[0x82, 0x06, 0, 1, 0, 0, 1, b'a'][..], None),       // filter options without the filter
        ] {
            let mut b = BytesMut::from(bytes);
            match (decode5(&mut b), expected) {
                (Decoded5::Packet(p), Some(code)) => {
                    let Packet5::Disconnect(d) = *p else { panic!("{bytes:?}: not a DISCONNECT") };
                    assert_eq!(d.reason_code, code);
                }
                (Decoded5::Invalid(_), None) => {}
                (other, _) => panic!("{bytes:?}: {other:?}"),
            }
        }
        let mut part = BytesMut::from(&[0xE0, 0x01][..]);
        assert!(matches!(decode5(&mut part), Decoded5::Incomplete));
    }

    #[test]
    fn mqtt5_acks_and_disconnect_read_back_with_the_reference_codec() {
        let mut out = BytesMut::new();
        put_puback5(&mut out, 7, 0x87);
        put_ack_with_codes5(&mut out, 0x90, 8, &[1, 0x87, 0x8F]);
        put_ack_with_codes5(&mut out, 0xB0, 9, &[0, 0x11]);
        put_disconnect5(&mut out, 0x8E);
        put_connack5(&mut out, true, 0x87, None);
        let mut got = Vec::new();
        while !out.is_empty() {
            got.push(Packet5::read(&mut out, None).expect("reference codec reads it"));
        }
        let [
            Packet5::PubAck(pa),
            Packet5::SubAck(sa),
            Packet5::UnsubAck(ua),
            Packet5::Disconnect(d),
            Packet5::ConnAck(ca),
        ] = &got[..]
        else {
            panic!("{got:?}")
        };
        assert_eq!((pa.pkid, pa.reason), (7, v5::PubAckReason::NotAuthorized));
        assert_eq!(sa.return_codes.len(), 3);
        assert_eq!(sa.return_codes[1], v5::SubscribeReasonCode::NotAuthorized);
        assert_eq!(ua.reasons, vec![v5::UnsubAckReason::Success, v5::UnsubAckReason::NoSubscriptionExisted]);
        assert_eq!(d.reason_code, v5::DisconnectReasonCode::SessionTakenOver);
        assert_eq!((ca.session_present, ca.code), (true, Code5::NotAuthorized));
    }
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
        assert_eq!(classify_first(&v5), FirstPacket::Mqtt5);
        v5[8] = 6;
        assert_eq!(classify_first(&v5), FirstPacket::NewerVersion);
        v5[8] = 3;
        assert_eq!(classify_first(&v5), FirstPacket::OtherVersion);
        let v31 = [0x10, 0x10, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3];
        assert_eq!(classify_first(&v31), FirstPacket::OtherVersion);
        assert_eq!(classify_first(&[0x30, 0x00]), FirstPacket::NotConnect);
        assert_eq!(classify_first(&[0x10, 0x02, 0x00, 0x09]), FirstPacket::NotConnect);
        assert_eq!(classify_first(&[]), FirstPacket::Incomplete);
    }
}
