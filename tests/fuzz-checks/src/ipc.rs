//! Greengrass IPC (event-stream RPC) frames, through the frame decoder and the RPC layer.

use bytes::BytesMut;
use cloud_api::ipc::error::ServiceError;
use cloud_api::ipc::frame::{FrameCodec, MESSAGE_CRC_LEN, PRELUDE_LEN};
use cloud_api::ipc::rpc::{MessageType, RpcMessage, parse_connect};

use crate::Outcome;

/// Feeds `data` as the bytes a component sends on its IPC connection: frames decoded from the
/// front of one buffer by [`FrameCodec::decode`] (as the simulated core's IPC server and the
/// `kit` client do) until it runs dry, needs more bytes or holds garbage; each frame's RPC
/// headers read by [`RpcMessage::from_message`]; a CONNECT's handshake by [`parse_connect`],
/// an APPLICATION_ERROR's body by [`ServiceError::from_rpc`].
///
/// Checks: a decoded frame consumed exactly the length its prelude declares, and re-encodes
/// to exactly the bytes it was decoded from; an incomplete frame consumed nothing; an RPC
/// message goes back to a frame (`to_message`) and through the wire to an equal message; a
/// PING's response echoes its payload; an error forwarded keeps its `service-model-type`.
///
/// Random bytes rarely carry two good CRC32s, so the bytes are decoded twice: as they are, and
/// with the CRCs of each frame the prelude lengths delimit rewritten to match, which lets the
/// fuzzer's mutations reach the header parser and the RPC layer.
pub fn ipc_frame(data: &[u8]) -> Outcome {
    let as_is = decode_all(data);
    let fixed = decode_all(&with_good_crcs(data));
    Outcome::of(as_is || fixed)
}

/// `data` with the prelude and message CRC of each frame rewritten, frame by frame, as long as
/// the declared lengths fit in what is left.
fn with_good_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0;
    while let Some(prelude) = out.get(at..at + PRELUDE_LEN) {
        let total = u32::from_be_bytes([prelude[0], prelude[1], prelude[2], prelude[3]]) as usize;
        if total < PRELUDE_LEN + MESSAGE_CRC_LEN || total > out.len() - at {
            let crc = crc32fast::hash(&out[at..at + 8]);
            out[at + 8..at + PRELUDE_LEN].copy_from_slice(&crc.to_be_bytes());
            break;
        }
        let crc = crc32fast::hash(&out[at..at + 8]);
        out[at + 8..at + PRELUDE_LEN].copy_from_slice(&crc.to_be_bytes());
        let end = at + total - MESSAGE_CRC_LEN;
        let crc = crc32fast::hash(&out[at..end]);
        out[end..at + total].copy_from_slice(&crc.to_be_bytes());
        at += total;
    }
    out
}

/// Decodes frames from the front of `data` until it runs dry, needs more bytes or holds
/// garbage; true when one of them was a valid RPC message.
fn decode_all(data: &[u8]) -> bool {
    let codec = FrameCodec::new();
    let mut buf = BytesMut::from(data);
    let mut accepted = false;
    while !buf.is_empty() {
        let before = buf.clone();
        match codec.decode(&mut buf) {
            Ok(Some(message)) => {
                let consumed = &before[..before.len() - buf.len()];
                let declared = u32::from_be_bytes([consumed[0], consumed[1], consumed[2], consumed[3]]);
                assert_eq!(consumed.len(), declared as usize, "a frame consumes its declared length");
                assert!(consumed.len() >= PRELUDE_LEN + MESSAGE_CRC_LEN);
                let mut again = BytesMut::new();
                codec.encode(&message, &mut again).expect("a decoded frame encodes");
                assert_eq!(&again[..], consumed, "a decoded frame re-encodes to the same bytes");
                accepted |= rpc(&codec, message);
            }
            Ok(None) => {
                assert_eq!(buf, before, "an incomplete frame consumed bytes");
                break;
            }
            Err(_) => break,
        }
    }
    accepted
}

/// The RPC layer on one decoded frame; true when it is a valid RPC message.
fn rpc(codec: &FrameCodec, message: cloud_api::ipc::Message) -> bool {
    let Ok(rpc) = RpcMessage::from_message(message) else { return false };
    let mut wire = BytesMut::new();
    codec.encode(&rpc.to_message(), &mut wire).expect("an RPC message read from a frame encodes");
    let frame = codec.decode(&mut wire).expect("our own frame decodes").expect("our own frame is whole");
    assert!(wire.is_empty(), "our own frame is consumed whole");
    let back = RpcMessage::from_message(frame).expect("our own RPC message reads back");
    assert_eq!(back, rpc, "an RPC message survives the wire");
    match rpc.message_type {
        MessageType::Connect => {
            if let Ok(connect) = parse_connect(&rpc) {
                let again = parse_connect(&RpcMessage::connect(&connect.auth_token)).expect("our CONNECT is valid");
                assert_eq!(again, connect, "the auth token survives a CONNECT of our own");
            }
        }
        MessageType::Ping => {
            let pong = RpcMessage::ping_response(&rpc);
            assert_eq!(pong.payload, rpc.payload, "a PING_RESPONSE echoes the payload");
            assert!(pong.headers.iter().all(|h| !h.name().as_str().starts_with(':')));
        }
        MessageType::ApplicationError => {
            let error = ServiceError::from_rpc(&rpc);
            let stream = rpc.stream_id;
            let resent = ServiceError::from_rpc(&error.to_rpc(stream));
            // `ErrorCode::Other` holds a bare shape name or a whole model type, so the code itself
            // may change spelling; what goes on the wire must not.
            assert_eq!(resent.code.model_type(), error.code.model_type(), "an error forwarded keeps its model type");
        }
        _ => {}
    }
    true
}
