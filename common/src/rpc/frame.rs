//! The wire format of one frame.
//!
//! On the socket every frame is length-delimited (a 4-byte big-endian length, then the
//! payload; `tokio_util`'s `LengthDelimitedCodec` does the framing and enforces the
//! maximum frame size). The payload is:
//!
//! ```text
//! +-----------------+------------------+-----------------------+---------------------+
//! | version: u16 BE | header_len: u32 BE | header (MessagePack) | body (MessagePack)  |
//! +-----------------+------------------+-----------------------+---------------------+
//! ```
//!
//! The version comes first and raw, so a peer speaking another protocol version is
//! recognised before anything else is decoded. Header and body are encoded with
//! `rmp_serde::to_vec_named` (maps with field names), so adding a field with
//! `#[serde(default)]` stays compatible.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::ids::LeaderSessionId;

/// The version of the frame format and message set. A peer with another version is
/// refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// Bytes before the header: version and header length.
const PREFIX_LEN: usize = 6;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameKind {
    /// A one-way message; no reply.
    Tell,
    /// A request that expects a `Reply` or `Error` with the same correlation id.
    Ask,
    /// The successful answer to an `Ask`.
    Reply,
    /// A failed `Ask` (the body is an encoded [`super::RpcError`]), or a notice to the
    /// peer before its connection is closed.
    Error,
}

/// The header of every frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameHeader {
    pub kind: FrameKind,
    /// Pairs an `Ask` with its `Reply`/`Error`; 0 for tells.
    pub correlation_id: u64,
    /// The endpoint name at the receiving process (e.g. `resourcemanager`).
    pub target: String,
    /// The leader session id the sender believes the target has.
    #[serde(default)]
    pub fencing_token: Option<LeaderSessionId>,
    /// The message type name (`RpcMessage::TYPE_NAME`), empty for replies.
    pub type_name: String,
}

/// A decoded frame: header plus the still-encoded body.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub header: FrameHeader,
    pub body: Bytes,
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is shorter than its {PREFIX_LEN}-byte prefix")]
    Truncated { len: usize },
    #[error("peer speaks protocol version {theirs}, this process speaks {ours}")]
    VersionMismatch { ours: u16, theirs: u16 },
    #[error("header length {header_len} exceeds the frame's {available} remaining bytes")]
    BadHeaderLength { header_len: usize, available: usize },
    #[error("undecodable frame header: {reason}")]
    BadHeader { reason: String },
}

impl Frame {
    pub fn new(header: FrameHeader, body: impl Into<Bytes>) -> Self {
        Self { header, body: body.into() }
    }

    /// The payload of this frame (without the length prefix that the codec adds).
    pub fn encode(&self) -> Bytes {
        let header = rmp_serde::to_vec_named(&self.header).expect("a frame header always serializes");
        let mut buf = BytesMut::with_capacity(PREFIX_LEN + header.len() + self.body.len());
        buf.put_u16(PROTOCOL_VERSION);
        buf.put_u32(header.len() as u32);
        buf.put_slice(&header);
        buf.put_slice(&self.body);
        buf.freeze()
    }

    /// Decodes a payload. Never panics, whatever the bytes.
    pub fn decode(mut payload: Bytes) -> Result<Frame, FrameError> {
        if payload.len() < PREFIX_LEN {
            return Err(FrameError::Truncated { len: payload.len() });
        }
        let version = u16::from_be_bytes([payload[0], payload[1]]);
        if version != PROTOCOL_VERSION {
            return Err(FrameError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version });
        }
        let header_len = u32::from_be_bytes([payload[2], payload[3], payload[4], payload[5]]) as usize;
        let available = payload.len() - PREFIX_LEN;
        if header_len > available {
            return Err(FrameError::BadHeaderLength { header_len, available });
        }
        let _ = payload.split_to(PREFIX_LEN);
        let header_bytes = payload.split_to(header_len);
        let header: FrameHeader =
            rmp_serde::from_slice(&header_bytes).map_err(|e| FrameError::BadHeader { reason: e.to_string() })?;
        Ok(Frame { header, body: payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: FrameKind) -> FrameHeader {
        FrameHeader {
            kind,
            correlation_id: 7,
            target: "resourcemanager".into(),
            fencing_token: Some(LeaderSessionId::from_u128(0xabcdef)),
            type_name: "Ping".into(),
        }
    }

    #[test]
    fn frames_round_trip() {
        for kind in [FrameKind::Tell, FrameKind::Ask, FrameKind::Reply, FrameKind::Error] {
            let frame = Frame::new(header(kind), Bytes::from_static(b"\x81\xa1a\x01"));
            assert_eq!(Frame::decode(frame.encode()).unwrap(), frame);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(Frame::decode(Bytes::from_static(b"\x00")), Err(FrameError::Truncated { len: 1 }));
        let err = Frame::decode(Bytes::from_static(b"\x00\x01\xff\xff\xff\xff")).unwrap_err();
        assert!(matches!(err, FrameError::BadHeaderLength { .. }));
        let err = Frame::decode(Bytes::from_static(b"\x00\x01\x00\x00\x00\x02\xc1\xc1")).unwrap_err();
        assert!(matches!(err, FrameError::BadHeader { .. }));
        let err = Frame::decode(Bytes::from_static(b"\x00\x09\x00\x00\x00\x00")).unwrap_err();
        assert_eq!(err, FrameError::VersionMismatch { ours: PROTOCOL_VERSION, theirs: 9 });
    }

    /// Pins the wire format of a frame: an accidental change fails here.
    #[test]
    fn golden_frame_bytes() {
        let frame = Frame::new(
            FrameHeader {
                kind: FrameKind::Ask,
                correlation_id: 1,
                target: "rm".into(),
                fencing_token: None,
                type_name: "X".into(),
            },
            Bytes::from_static(b"\xc0"),
        );
        let expected: &[u8] = b"\x00\x01\x00\x00\x00\x3f\x85\xa4kind\xa3ask\xaecorrelation_id\x01\xa6target\xa2rm\xadfencing_token\xc0\xa9type_name\xa1X\xc0";
        assert_eq!(frame.encode().as_ref(), expected);
    }
}
