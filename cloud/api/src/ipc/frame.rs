//! Event-stream frames: an incremental decoder over a byte buffer and an encoder.
//!
//! Wire format (AWS event stream, `aws-c-event-stream`): total length (u32 BE), headers
//! length (u32 BE), CRC32 of those 8 bytes, headers, payload, CRC32 of everything before
//! it. 16 bytes of overhead. Header parsing and all encoding are `aws-smithy-eventstream`'s.
//!
//! Two checks happen here rather than in that crate, for reasons a reader should know:
//! - the prelude CRC and the size limits are checked as soon as the 12-byte prelude has
//!   arrived. `aws-smithy-eventstream`'s streaming decoder waits for the whole declared
//!   length before it checks the prelude, so a corrupt length field would make us buffer up
//!   to 4 GiB before noticing;
//! - the message CRC is checked before the headers are parsed, so that a corrupted frame is
//!   reported as corruption and not as "malformed headers" (its error kinds are private, so
//!   the two could not be told apart afterwards).
//!
//! Limits: frames up to 16 MiB with at most 128 KiB of headers, the limits of
//! `aws-c-event-stream` from 2020 until February 2025 (`AWS_EVENT_STREAM_MAX_MESSAGE_SIZE`,
//! `AWS_EVENT_STREAM_MAX_HEADERS_SIZE`). Newer CRT releases accept 24 MiB frames and headers
//! up to the frame size; [`FrameLimits`] lets a caller choose.
//!
//! After any decode error the byte stream has lost its framing: close the connection.

use aws_smithy_eventstream::frame::{read_message_from, write_headers_to, write_message_to};
use aws_smithy_types::event_stream::Message;
use bytes::BytesMut;

/// Bytes before the headers: total length, headers length, prelude CRC.
pub const PRELUDE_LEN: usize = 12;
/// Bytes of the trailing message CRC.
pub const MESSAGE_CRC_LEN: usize = 4;
/// Smallest possible frame: a prelude and a message CRC, no headers, no payload.
pub const MIN_FRAME_LEN: usize = PRELUDE_LEN + MESSAGE_CRC_LEN;
/// Default largest frame accepted or produced: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// Default largest headers section accepted or produced: 128 KiB.
pub const DEFAULT_MAX_HEADERS_LEN: usize = 128 * 1024;

/// Size limits applied when decoding and encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest whole frame, prelude and CRCs included.
    pub max_frame_len: usize,
    /// Largest headers section.
    pub max_headers_len: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self { max_frame_len: DEFAULT_MAX_FRAME_LEN, max_headers_len: DEFAULT_MAX_HEADERS_LEN }
    }
}

/// Why a frame could not be decoded or encoded.
///
/// Every decode error means the peer sent bytes that are not a valid frame; the connection
/// cannot be resynchronised and must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The CRC32 of the first 8 bytes does not match the prelude CRC field.
    #[error("bad prelude CRC: frame says {actual:#010x}, bytes give {expected:#010x}")]
    PreludeCrc {
        /// CRC computed over the received prelude.
        expected: u32,
        /// CRC field as received.
        actual: u32,
    },
    /// The CRC32 of the frame does not match its trailing CRC field.
    #[error("bad message CRC: frame says {actual:#010x}, bytes give {expected:#010x}")]
    MessageCrc {
        /// CRC computed over the received frame.
        expected: u32,
        /// CRC field as received.
        actual: u32,
    },
    /// The frame is longer than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Length declared (decode) or needed (encode).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The headers section is longer than the limit.
    #[error("headers of {len} bytes exceed the limit of {max} bytes")]
    HeadersTooLarge {
        /// Length declared (decode) or needed (encode).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The lengths in the prelude cannot describe a frame (total below 16 bytes, or headers
    /// longer than the frame has room for).
    #[error("invalid frame lengths: total {total}, headers {headers}")]
    InvalidLength {
        /// Declared total length.
        total: u32,
        /// Declared headers length.
        headers: u32,
    },
    /// The headers section is not a valid sequence of headers (bad name length, unknown
    /// value type, value running past the section, invalid UTF-8).
    #[error("malformed headers: {0}")]
    MalformedHeaders(String),
    /// The message cannot be encoded (a header name over 255 bytes, a string value over
    /// 32767 bytes).
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

/// Decoder and encoder for event-stream frames, with size limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCodec {
    limits: FrameLimits,
}

impl FrameCodec {
    /// A codec with the default limits (16 MiB frames, 128 KiB headers).
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec with the given limits.
    pub fn with_limits(limits: FrameLimits) -> Self {
        Self { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Takes one frame off the front of `buf`.
    ///
    /// Returns `Ok(None)` and leaves `buf` untouched while the frame is incomplete; call
    /// again when more bytes have arrived. On success the frame's bytes are removed from
    /// `buf`. A bad prelude or an oversized frame is reported as soon as the 12-byte prelude
    /// is in, before the rest of the frame is buffered.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        let Some(prelude) = buf.get(..PRELUDE_LEN) else {
            return Ok(None);
        };
        let total = be_u32(&prelude[0..4]);
        let headers = be_u32(&prelude[4..8]);
        let prelude_crc = be_u32(&prelude[8..12]);
        let expected = crc32fast::hash(&prelude[0..8]);
        if expected != prelude_crc {
            return Err(FrameError::PreludeCrc { expected, actual: prelude_crc });
        }
        let total_len = usize::try_from(total).unwrap_or(usize::MAX);
        let headers_len = usize::try_from(headers).unwrap_or(usize::MAX);
        if total_len > self.limits.max_frame_len {
            return Err(FrameError::FrameTooLarge { len: total_len, max: self.limits.max_frame_len });
        }
        if headers_len > self.limits.max_headers_len {
            return Err(FrameError::HeadersTooLarge { len: headers_len, max: self.limits.max_headers_len });
        }
        if total_len < MIN_FRAME_LEN || headers_len > total_len - MIN_FRAME_LEN {
            return Err(FrameError::InvalidLength { total, headers });
        }
        if buf.len() < total_len {
            return Ok(None);
        }

        let frame = buf.split_to(total_len).freeze();
        let body_len = total_len - MESSAGE_CRC_LEN;
        let message_crc = be_u32(&frame[body_len..]);
        let expected = crc32fast::hash(&frame[..body_len]);
        if expected != message_crc {
            return Err(FrameError::MessageCrc { expected, actual: message_crc });
        }
        // Lengths and both CRCs are good; what can still fail is the headers' structure.
        read_message_from(frame).map(Some).map_err(|e| FrameError::MalformedHeaders(e.to_string()))
    }

    /// Appends `message` to `out` as one frame. Nothing is appended on error.
    pub fn encode(&self, message: &Message, out: &mut BytesMut) -> Result<(), FrameError> {
        let mut headers = Vec::new();
        write_headers_to(message.headers(), &mut headers).map_err(|e| FrameError::Encode(e.to_string()))?;
        if headers.len() > self.limits.max_headers_len {
            return Err(FrameError::HeadersTooLarge { len: headers.len(), max: self.limits.max_headers_len });
        }
        let total = MIN_FRAME_LEN.saturating_add(headers.len()).saturating_add(message.payload().len());
        if total > self.limits.max_frame_len {
            return Err(FrameError::FrameTooLarge { len: total, max: self.limits.max_frame_len });
        }
        out.reserve(total);
        let mut staged = BytesMut::with_capacity(total);
        write_message_to(message, &mut staged).map_err(|e| FrameError::Encode(e.to_string()))?;
        out.extend_from_slice(&staged);
        Ok(())
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    bytes.iter().take(4).fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::event_stream::{Header, HeaderValue};
    use bytes::Bytes;

    fn sample() -> Message {
        Message::new_from_parts(
            vec![
                Header::new(":message-type", HeaderValue::Int32(0)),
                Header::new(":message-flags", HeaderValue::Int32(2)),
                Header::new(":stream-id", HeaderValue::Int32(7)),
                Header::new("operation", HeaderValue::String("aws.greengrass#UpdateState".into())),
                Header::new("t", HeaderValue::Bool(true)),
                Header::new("f", HeaderValue::Bool(false)),
                Header::new("b", HeaderValue::Byte(-3)),
                Header::new("s", HeaderValue::Int16(-300)),
                Header::new("l", HeaderValue::Int64(1 << 40)),
                Header::new("bytes", HeaderValue::ByteArray(Bytes::from_static(&[0, 1, 2]))),
                Header::new("u", HeaderValue::Uuid(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
            ],
            Bytes::from_static(br#"{"state":"RUNNING"}"#),
        )
    }

    fn encoded(message: &Message) -> BytesMut {
        let mut out = BytesMut::new();
        FrameCodec::new().encode(message, &mut out).unwrap();
        out
    }

    /// A frame with the given headers section and payload and correct CRCs.
    fn raw_frame(headers: &[u8], payload: &[u8]) -> BytesMut {
        let total = (MIN_FRAME_LEN + headers.len() + payload.len()) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        BytesMut::from(&out[..])
    }

    #[test]
    fn frames_round_trip() {
        let cases = [
            Message::new(Bytes::new()),
            Message::new(Bytes::from_static(b"payload only")),
            Message::new_from_parts(vec![Header::new("k", HeaderValue::String("v".into()))], Bytes::new()),
            sample(),
        ];
        for message in cases {
            let mut buf = encoded(&message);
            let decoded = FrameCodec::new().decode(&mut buf).unwrap();
            assert_eq!(decoded.as_ref(), Some(&message));
            assert!(buf.is_empty(), "the frame's bytes are consumed");
        }
    }

    #[test]
    fn a_crt_reference_frame_decodes() {
        // From aws-c-event-stream's message_deserializer_test.c: no headers, payload {'foo':'bar'}.
        let data: &[u8] = &[
            0x00, 0x00, 0x00, 0x1D, 0x00, 0x00, 0x00, 0x00, 0xfd, 0x52, 0x8c, 0x5a, 0x7b, 0x27, 0x66, 0x6f, 0x6f, 0x27,
            0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0xc3, 0x65, 0x39, 0x36,
        ];
        let mut buf = BytesMut::from(data);
        let message = FrameCodec::new().decode(&mut buf).unwrap().unwrap();
        assert!(message.headers().is_empty());
        assert_eq!(&message.payload()[..], b"{'foo':'bar'}");
        assert_eq!(encoded(&message), data);
    }

    #[test]
    fn a_frame_fed_byte_by_byte_decodes_only_when_complete() {
        let bytes = encoded(&sample());
        let codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = codec.decode(&mut buf).unwrap();
            if i + 1 < bytes.len() {
                assert!(got.is_none(), "partial frame at {} bytes", i + 1);
                assert_eq!(buf.len(), i + 1, "a partial frame is left in the buffer");
            } else {
                assert_eq!(got, Some(sample()));
            }
        }
    }

    #[test]
    fn back_to_back_frames_decode_one_at_a_time() {
        let first = Message::new(Bytes::from_static(b"one"));
        let second = sample();
        let mut buf = encoded(&first);
        buf.extend_from_slice(&encoded(&second));
        buf.extend_from_slice(&encoded(&first)[..5]);
        let codec = FrameCodec::new();
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(first));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(second));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        assert_eq!(buf.len(), 5);
    }

    #[test]
    fn corrupted_frames_are_rejected_with_the_right_error() {
        let good = encoded(&sample());
        let last = good.len() - 1;
        // (byte to flip, true if the prelude CRC must catch it, false for the message CRC)
        let cases = [
            (8, true),     // the prelude CRC field
            (2, true),     // the total length
            (5, true),     // the headers length
            (20, false),   // inside the headers
            (last, false), // the message CRC field
        ];
        for (at, in_prelude) in cases {
            let mut buf = good.clone();
            buf[at] ^= 0x40;
            let err = FrameCodec::new().decode(&mut buf).unwrap_err();
            let caught = if in_prelude {
                matches!(err, FrameError::PreludeCrc { .. })
            } else {
                matches!(err, FrameError::MessageCrc { .. })
            };
            assert!(caught, "flipping byte {at}: got {err:?}");
        }
    }

    #[test]
    fn a_bad_prelude_is_reported_before_the_rest_arrives() {
        let mut buf = encoded(&sample());
        buf[8] ^= 1;
        buf.truncate(PRELUDE_LEN);
        assert!(matches!(FrameCodec::new().decode(&mut buf), Err(FrameError::PreludeCrc { .. })));
    }

    #[test]
    fn oversized_frames_are_rejected_from_the_prelude_alone() {
        let limits = FrameLimits { max_frame_len: 64, max_headers_len: 32 };
        let codec = FrameCodec::with_limits(limits);
        // Only the 12 prelude bytes are present: the decoder must not wait for the rest.
        let mut big = raw_frame(&[], &[0; 100]);
        big.truncate(PRELUDE_LEN);
        assert_eq!(codec.decode(&mut big), Err(FrameError::FrameTooLarge { len: 116, max: 64 }));

        let header = [1, b'h', 6, 0, 30].iter().copied().chain([0u8; 30]).collect::<Vec<_>>();
        let mut big_headers = raw_frame(&header, &[]);
        assert_eq!(codec.decode(&mut big_headers), Err(FrameError::HeadersTooLarge { len: 35, max: 32 }));

        // The default limit: 16 MiB + 1 declared.
        let total = (DEFAULT_MAX_FRAME_LEN + 1) as u32;
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&total.to_be_bytes());
        prelude.extend_from_slice(&0u32.to_be_bytes());
        prelude.extend_from_slice(&crc32fast::hash(&prelude).to_be_bytes());
        let mut buf = BytesMut::from(&prelude[..]);
        assert!(matches!(FrameCodec::new().decode(&mut buf), Err(FrameError::FrameTooLarge { .. })));
    }

    #[test]
    fn oversized_messages_are_not_encoded() {
        let codec = FrameCodec::with_limits(FrameLimits { max_frame_len: 64, max_headers_len: 16 });
        let mut out = BytesMut::new();
        let big_payload = Message::new(vec![0u8; 49]);
        assert_eq!(codec.encode(&big_payload, &mut out), Err(FrameError::FrameTooLarge { len: 65, max: 64 }));
        let big_headers =
            Message::new(Bytes::new()).add_header(Header::new("h", HeaderValue::String("x".repeat(20).into())));
        assert!(matches!(codec.encode(&big_headers, &mut out), Err(FrameError::HeadersTooLarge { .. })));
        let long_name = Message::new(Bytes::new()).add_header(Header::new("n".repeat(256), HeaderValue::Bool(true)));
        assert!(matches!(FrameCodec::new().encode(&long_name, &mut out), Err(FrameError::Encode(_))));
        assert!(out.is_empty(), "nothing is written on error");
        assert!(codec.encode(&Message::new(vec![0u8; 48]), &mut out).is_ok());
        assert_eq!(out.len(), 64);
    }

    #[test]
    fn impossible_lengths_are_rejected() {
        for (total, headers) in [(0u32, 0u32), (15, 0), (16, 1), (20, 5)] {
            let mut prelude = Vec::new();
            prelude.extend_from_slice(&total.to_be_bytes());
            prelude.extend_from_slice(&headers.to_be_bytes());
            prelude.extend_from_slice(&crc32fast::hash(&prelude).to_be_bytes());
            let mut buf = BytesMut::from(&prelude[..]);
            assert_eq!(
                FrameCodec::new().decode(&mut buf),
                Err(FrameError::InvalidLength { total, headers }),
                "total {total}, headers {headers}"
            );
        }
    }

    #[test]
    fn malformed_headers_with_good_crcs_are_rejected() {
        let cases: [(&str, Vec<u8>); 6] = [
            ("unknown value type 0x60", vec![1, b'h', 0x60]),
            ("value type 10 (one past uuid)", vec![1, b'h', 10]),
            ("name longer than the section", vec![9, b'h', 0]),
            ("string value running past the section", vec![1, b'h', 7, 0, 50, b'x']),
            ("int32 value cut short", vec![1, b'h', 4, 0, 0]),
            ("name not UTF-8", vec![1, 0xff, 0]),
        ];
        for (what, headers) in cases {
            let mut buf = raw_frame(&headers, b"");
            let got = FrameCodec::new().decode(&mut buf);
            assert!(matches!(got, Err(FrameError::MalformedHeaders(_))), "{what}: got {got:?}");
        }
    }

    #[test]
    fn arbitrary_corruption_never_panics() {
        // A deterministic xorshift sweep: flip bytes in valid frames and feed garbage.
        let good = encoded(&sample());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let mut buf = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % buf.len();
                buf[at] = next() as u8;
            }
            let cut = (next() as usize) % (buf.len() + 1);
            buf.truncate(cut);
            let _ = FrameCodec::new().decode(&mut buf);
        }
        for len in 0..64 {
            let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = FrameCodec::new().decode(&mut BytesMut::from(&garbage[..]));
            // Garbage headers behind valid lengths and CRCs reach the header parser.
            let payload: Vec<u8> = (0..next() % 8).map(|_| next() as u8).collect();
            let _ = FrameCodec::new().decode(&mut raw_frame(&garbage, &payload));
        }
    }
}
